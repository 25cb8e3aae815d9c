-- Deferred requests (TOK statements) accepted by management: each nonce is
-- accepted for one meeting only, so a TOK copied into another meeting, or
-- replayed after its meeting was handled, is refused.
CREATE TABLE deferral_nonce (
    nonce TEXT PRIMARY KEY,
    integration TEXT NOT NULL,
    meeting_uid TEXT NOT NULL,
    requester_id TEXT NOT NULL,
    accepted_at BIGINT NOT NULL
);
