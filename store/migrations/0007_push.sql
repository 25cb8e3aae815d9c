-- Push mode (sites that keep VMRs in Pexip Infinity) and VMR lifetime.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are Unix
-- milliseconds (BIGINT), ids are uuids (TEXT).

-- Conferences whose VMR in Infinity must be brought in line with ours
-- (created, updated or deleted: the pusher reads the conference's current
-- state). One row per conference; each scheduling commit that touches the
-- conference bumps `version`, so a push that ran on an older version leaves
-- the row for another pass. `next_attempt_at` orders the work and carries the
-- back-off (and a short claim while one instance pushes it).
CREATE TABLE push_queue (
    conference_id   TEXT PRIMARY KEY REFERENCES conference (id),
    integration     TEXT NOT NULL,
    version         BIGINT NOT NULL,
    attempts        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE INDEX push_queue_by_due ON push_queue (next_attempt_at);

-- The lifetime sweeper and the reconcile pass list an integration's live
-- (not deleted) conferences.
CREATE INDEX conference_by_integration_live ON conference (integration, deletion_time);
