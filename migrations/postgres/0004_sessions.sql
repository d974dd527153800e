-- PostgreSQL twin of migrations/sqlite/0004_sessions.sql.
CREATE TABLE session_generations (
    scope          TEXT PRIMARY KEY NOT NULL,
    generation     BIGINT NOT NULL,
    revoked_at_ms  BIGINT NOT NULL
);
