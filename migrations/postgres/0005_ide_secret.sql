-- PostgreSQL twin of migrations/sqlite/0005_ide_secret.sql.
ALTER TABLE workspaces ADD COLUMN ide_secret TEXT;
