-- LTI 1.3 (docs/lti.md). The platforms (LMSs) an operator registered.
CREATE TABLE lti_platforms (
    platform_id     TEXT PRIMARY KEY NOT NULL,
    issuer          TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    -- JSON array of deployment ids.
    deployment_ids  TEXT NOT NULL,
    auth_url        TEXT NOT NULL,
    token_url       TEXT NOT NULL,
    jwks_url        TEXT,
    -- The platform's key set itself (JSON), for closed networks.
    jwks            TEXT,
    created_at_ms   BIGINT NOT NULL,
    UNIQUE (issuer, client_id)
);
-- The tool's own RS256 keys (PKCS#8 PEM): the newest signs, all are published at /lti/jwks.
CREATE TABLE lti_tool_keys (
    kid            TEXT PRIMARY KEY NOT NULL,
    private_pem    TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL
);
-- A platform's context (an LMS course) and the course it became; the roster URL from the latest launch.
CREATE TABLE lti_contexts (
    course_id      TEXT PRIMARY KEY NOT NULL,
    platform_id    TEXT NOT NULL,
    context_id     TEXT NOT NULL,
    title          TEXT,
    nrps_url       TEXT,
    updated_at_ms  BIGINT NOT NULL
);
-- Who launched in a course: the course page lists them; staff names go into the audit log.
CREATE TABLE lti_users (
    course_id       TEXT NOT NULL,
    -- Hash of issuer and sub (a sub is opaque and may hold anything).
    user_key        TEXT NOT NULL,
    student_id      TEXT NOT NULL,
    sub             TEXT NOT NULL,
    name            TEXT,
    email           TEXT,
    staff           BOOLEAN NOT NULL,
    last_launch_ms  BIGINT NOT NULL,
    PRIMARY KEY (course_id, user_key)
);
