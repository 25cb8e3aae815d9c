-- The policy server (Pexip Infinity's external policy) answers from an
-- in-memory index that follows the database incrementally: every second it
-- reads the meetings written since it last looked (each scheduling commit
-- rewrites its meeting row, windows and conference in one transaction, with
-- `updated_at`) and the aliases issued since. These indexes make both reads
-- range scans instead of table scans. Portable SQL (SQLite and PostgreSQL).
CREATE INDEX meeting_by_updated_at ON meeting (updated_at);
CREATE INDEX scheduled_alias_by_created_at ON scheduled_alias (created_at);
