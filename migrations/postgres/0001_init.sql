-- PostgreSQL twin of migrations/sqlite/0001_init.sql (same versions, same columns; a test keeps them in step).
-- Every integer is BIGINT, so both stores read the same Rust types; times are epoch milliseconds (UTC).
CREATE TABLE workspaces (
    student_id        TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL,
    container_id      TEXT,
    host_port         BIGINT,
    last_activity_ms  BIGINT,
    started_at_ms     BIGINT,
    stopped_at_ms     BIGINT,
    stop_reason       TEXT,
    error             TEXT,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE INDEX workspaces_status ON workspaces (status);

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    student_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT,
    message     TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX events_student ON events (student_id, id);
