-- Workspaces: one row per student that ever had a workspace. Times are epoch milliseconds (UTC), which keeps the
-- SQL portable to PostgreSQL (BIGINT) and makes cull queries plain integer comparisons.
-- The seeds' students.workspace_status maps to `status`, students.workspace_last_activity to `last_activity_ms`.
CREATE TABLE workspaces (
    student_id        TEXT PRIMARY KEY NOT NULL,
    status            TEXT NOT NULL,
    container_id      TEXT,
    host_port         INTEGER,
    last_activity_ms  BIGINT,
    started_at_ms     BIGINT,
    stopped_at_ms     BIGINT,
    stop_reason       TEXT,
    error             TEXT,
    created_at_ms     BIGINT NOT NULL,
    updated_at_ms     BIGINT NOT NULL
);
CREATE INDEX workspaces_status ON workspaces (status);

-- Events: every start, stop, failure and warning, with its reason. The audit log and the notification source.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    student_id  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    reason      TEXT,
    message     TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX events_student ON events (student_id, id);
