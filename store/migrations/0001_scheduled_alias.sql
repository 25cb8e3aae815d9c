-- Aliases handed out to the Outlook pane. A row is never deleted or reused:
-- `state` moves allocated -> bound -> deleted, and the UNIQUE constraint keeps
-- every numeric alias an integration ever issued out of future draws.
-- Portable SQL: the same file runs on SQLite and PostgreSQL.
CREATE TABLE scheduled_alias (
    id              TEXT PRIMARY KEY,
    integration     TEXT NOT NULL,
    numeric_alias   TEXT NOT NULL,
    alias           TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    auth_method     TEXT NOT NULL,
    requester_id    TEXT NOT NULL,
    requester_email TEXT,
    organizer_email TEXT,
    organizer_name  TEXT,
    subject         TEXT,
    meeting_uid     TEXT,
    CONSTRAINT scheduled_alias_unique UNIQUE (integration, numeric_alias)
);

CREATE INDEX scheduled_alias_by_integration ON scheduled_alias (integration, created_at);

-- One secret per integration for meeting-tag MACs, generated on first start
-- unless the config supplies one. Different deployments get different keys,
-- so a tag issued by another deployment is recognised as such.
CREATE TABLE integration_secret (
    integration TEXT PRIMARY KEY,
    tag_key     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
