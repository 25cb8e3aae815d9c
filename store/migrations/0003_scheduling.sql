-- Mailbox processing (names after Pexip's VMR Scheduling for Exchange).
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are Unix
-- milliseconds (BIGINT), ids are uuids (TEXT), booleans are BIGINT 0/1.

-- An alias's state moves allocated -> bound (meeting_uid set) -> deleted
-- (conference_deletion_time set: when its conference was deleted).
ALTER TABLE scheduled_alias ADD COLUMN conference_deletion_time BIGINT;

-- The VMR created for a bound alias: at most one per alias, its name unique
-- within the integration (the platform requires unique VMR names).
CREATE TABLE conference (
    id                           TEXT PRIMARY KEY,
    integration                  TEXT NOT NULL,
    alias_id                     TEXT NOT NULL REFERENCES scheduled_alias (id),
    name                         TEXT NOT NULL,
    description                  TEXT NOT NULL,
    alias                        TEXT NOT NULL,
    numeric_alias                TEXT NOT NULL,
    theme                        TEXT,
    host_identity_provider_group TEXT,
    non_idp_participants         TEXT NOT NULL,
    created_at                   BIGINT NOT NULL,
    deletion_time                BIGINT,
    CONSTRAINT conference_alias_unique UNIQUE (alias_id),
    CONSTRAINT conference_name_unique UNIQUE (integration, name)
);

-- One calendar item (single meeting or series) as last processed. `revision`
-- counts the changes answered; a commit with a lower revision changes nothing.
-- `schedule_json` is opaque to the store.
CREATE TABLE meeting (
    integration     TEXT NOT NULL,
    uid             TEXT NOT NULL,
    alias_id        TEXT,
    conference_id   TEXT,
    state           TEXT NOT NULL,
    is_series       BIGINT NOT NULL,
    sequence        BIGINT NOT NULL,
    revision        BIGINT NOT NULL,
    schedule_json   TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    organizer_email TEXT NOT NULL,
    subject         TEXT NOT NULL,
    item_id         TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (integration, uid),
    CONSTRAINT meeting_state_known CHECK (state IN ('accepted', 'declined', 'cancelled', 'deferred')),
    CONSTRAINT meeting_is_series_boolean CHECK (is_series IN (0, 1))
);

CREATE INDEX meeting_by_state ON meeting (integration, state);

-- A series' recurrence as a whole: one row per series meeting.
CREATE TABLE recurring_conference (
    id            TEXT PRIMARY KEY,
    integration   TEXT NOT NULL,
    conference_id TEXT NOT NULL REFERENCES conference (id),
    meeting_uid   TEXT NOT NULL,
    current_index BIGINT NOT NULL,
    is_depleted   BIGINT NOT NULL,
    subject       TEXT NOT NULL,
    CONSTRAINT recurring_conference_meeting_unique UNIQUE (integration, meeting_uid),
    CONSTRAINT recurring_conference_is_depleted_boolean CHECK (is_depleted IN (0, 1))
);

-- When a conference may be used: one window per single meeting or per
-- occurrence of a series, keyed by the occurrence's original start.
CREATE TABLE scheduled_conference (
    id                      TEXT PRIMARY KEY,
    integration             TEXT NOT NULL,
    conference_id           TEXT NOT NULL REFERENCES conference (id),
    meeting_uid             TEXT NOT NULL,
    recurring_conference_id TEXT REFERENCES recurring_conference (id),
    occurrence_index        BIGINT NOT NULL,
    original_start          BIGINT NOT NULL,
    start_time              BIGINT NOT NULL,
    end_time                BIGINT NOT NULL,
    subject                 TEXT NOT NULL,
    CONSTRAINT scheduled_conference_occurrence_unique UNIQUE (integration, meeting_uid, original_start)
);

CREATE INDEX scheduled_conference_by_conference ON scheduled_conference (conference_id, start_time);
CREATE INDEX scheduled_conference_by_start ON scheduled_conference (start_time);

-- The processing log: one row per processed item (success or the error).
CREATE TABLE scheduling_operation (
    transaction_uuid  TEXT PRIMARY KEY,
    integration       TEXT NOT NULL,
    creation_time     BIGINT NOT NULL,
    success           BIGINT NOT NULL,
    error_code        VARCHAR(50) NOT NULL,
    error_description VARCHAR(250) NOT NULL,
    resource_id       TEXT NOT NULL,
    item_id           TEXT NOT NULL,
    CONSTRAINT scheduling_operation_success_boolean CHECK (success IN (0, 1))
);

CREATE INDEX scheduling_operation_by_time ON scheduling_operation (integration, creation_time);

-- Meeting responses to send, exactly one per answered change (revision).
CREATE TABLE reply_outbox (
    id          TEXT PRIMARY KEY,
    integration TEXT NOT NULL,
    meeting_uid TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    item_id     TEXT NOT NULL,
    change_key  TEXT NOT NULL,
    response    TEXT NOT NULL,
    body_html   TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    sent_at     BIGINT,
    CONSTRAINT reply_outbox_change_unique UNIQUE (integration, meeting_uid, revision),
    CONSTRAINT reply_outbox_response_known CHECK (response IN ('accept', 'decline', 'remove')),
    CONSTRAINT reply_outbox_state_known CHECK (state IN ('pending', 'sent', 'failed'))
);

CREATE INDEX reply_outbox_by_state ON reply_outbox (integration, state, created_at);

-- EWS SyncFolderItems states, one per integration and folder.
CREATE TABLE sync_state (
    integration TEXT NOT NULL,
    folder      TEXT NOT NULL,
    state       TEXT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (integration, folder)
);

-- Per integration: when an item was last processed successfully. Its row is
-- also what serialises the integration's scheduling commits.
CREATE TABLE integration_status (
    integration       TEXT PRIMARY KEY,
    last_processed_at BIGINT
);
