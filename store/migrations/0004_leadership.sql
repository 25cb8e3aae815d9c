-- Leadership of the integrations' mailboxes among management instances.
-- Portable SQL: the same file runs on SQLite and PostgreSQL. Times are Unix
-- milliseconds. On PostgreSQL the lease itself is a session advisory lock;
-- these tables only say who is there and who leads what (for spreading the
-- work and for people looking).

-- Every management instance that ever started, with its liveness heartbeat.
CREATE TABLE management_instance (
    instance_id  TEXT PRIMARY KEY,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- The instance leading each integration's mailbox (the last one that took
-- its lease; a row naming a dead instance is replaced by the next leader).
CREATE TABLE integration_leader (
    integration  TEXT PRIMARY KEY,
    instance_id  TEXT NOT NULL,
    since        BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
