-- PostgreSQL twin of migrations/sqlite/0009_route_host.sql.
ALTER TABLE workspaces ADD COLUMN host_addr TEXT;
