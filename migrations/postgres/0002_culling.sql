-- PostgreSQL twin of migrations/sqlite/0002_culling.sql.
ALTER TABLE workspaces ADD COLUMN ide_connected_at_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN warned_at_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN idle_timeout_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN max_age_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN cull_enabled BOOLEAN;

CREATE TABLE job_state (
    name   TEXT PRIMARY KEY NOT NULL,
    value  BIGINT NOT NULL
);
