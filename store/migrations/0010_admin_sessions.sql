-- Admin page sessions, in the database so that every management instance behind a load
-- balancer knows a sign-in made on another, and a restart signs nobody out. The session id
-- (the cookie's value) is stored only as its SHA-256: a copy of this table signs nobody in.
-- Times are Unix milliseconds.
CREATE TABLE admin_session (
    id_sha256  TEXT PRIMARY KEY,
    label      TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX admin_session_by_expiry ON admin_session (expires_at);
CREATE INDEX admin_session_by_creation ON admin_session (created_at);
