-- Culling: when code-server last reported an open tab (kept apart from activity), when the current warning was
-- sent, and per-workspace policy overrides (NULL = the service default).
ALTER TABLE workspaces ADD COLUMN ide_connected_at_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN warned_at_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN idle_timeout_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN max_age_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN cull_enabled BOOLEAN;

-- Key-value state of background jobs (the webhook's delivery cursor).
CREATE TABLE job_state (
    name   TEXT PRIMARY KEY NOT NULL,
    value  BIGINT NOT NULL
);
