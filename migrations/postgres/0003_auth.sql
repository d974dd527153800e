-- PostgreSQL twin of migrations/sqlite/0003_auth.sql.
CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('lms', 'admin')),
    key_hash       TEXT NOT NULL UNIQUE,
    label          TEXT NOT NULL DEFAULT '',
    created_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT
);

CREATE TABLE used_launch_tokens (
    nonce          TEXT PRIMARY KEY NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);
