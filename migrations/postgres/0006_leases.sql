-- PostgreSQL twin of migrations/sqlite/0006_leases.sql.
CREATE TABLE leases (
    name           TEXT PRIMARY KEY NOT NULL,
    holder         TEXT NOT NULL,
    fence          BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);
