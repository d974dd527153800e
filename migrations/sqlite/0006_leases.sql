-- Leases: which replica runs the singleton loops. `fence` grows by one at every change of holder.
CREATE TABLE leases (
    name           TEXT PRIMARY KEY NOT NULL,
    holder         TEXT NOT NULL,
    fence          BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);
