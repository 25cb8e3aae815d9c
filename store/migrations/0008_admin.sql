-- Administration: extra aliases admins add to a VMR, and the audit log of
-- every admin write. Portable SQL: the same file runs on SQLite and
-- PostgreSQL. Times are Unix milliseconds, ids are uuids (TEXT).

-- Aliases an admin added to a VMR beside its two generated ones (`alias`
-- and `numeric_alias` on `conference`, which nobody may change). Stored in
-- lower case; unique across every integration, as Infinity's aliases are.
CREATE TABLE conference_extra_alias (
    id            TEXT PRIMARY KEY,
    conference_id TEXT NOT NULL REFERENCES conference (id),
    integration   TEXT NOT NULL,
    alias         TEXT NOT NULL,
    description   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    CONSTRAINT conference_extra_alias_unique UNIQUE (alias)
);

CREATE INDEX conference_extra_alias_by_conference ON conference_extra_alias (conference_id);

-- Who changed what, when: `actor` is `schedulingservice` for the service's
-- own writes, otherwise the admin token's label.
CREATE TABLE admin_audit (
    id          TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    detail      TEXT NOT NULL
);

CREATE INDEX admin_audit_by_time ON admin_audit (at);

-- Look-ups the admin API makes: an alias by its text (extra aliases must not
-- collide with generated ones), conferences and operations by time.
CREATE INDEX scheduled_alias_by_alias ON scheduled_alias (alias);
CREATE INDEX conference_by_alias ON conference (alias);
CREATE INDEX conference_by_numeric_alias ON conference (numeric_alias);
CREATE INDEX scheduling_operation_by_creation ON scheduling_operation (creation_time);
