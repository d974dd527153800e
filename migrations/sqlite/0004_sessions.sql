-- Session generations: a browser session or student token is valid only while the generations it was signed with
-- are current. `scope` is a student id, or '*' for every student (`session revoke --all`).
CREATE TABLE session_generations (
    scope          TEXT PRIMARY KEY NOT NULL,
    generation     BIGINT NOT NULL,
    revoked_at_ms  BIGINT NOT NULL
);
