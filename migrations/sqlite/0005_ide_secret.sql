-- The secret between the proxy and a running workspace's IDE (64 hex digits), set with the host port when the
-- workspace runs and cleared with it. NULL for an IDE without one.
ALTER TABLE workspaces ADD COLUMN ide_secret TEXT;
