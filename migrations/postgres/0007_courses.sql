-- PostgreSQL twin of migrations/sqlite/0007_courses.sql.
CREATE TABLE courses (
    course_id      TEXT PRIMARY KEY NOT NULL,
    profile        TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
-- A workspace belongs to at most one course, given at its first start. The course's culling values and limits are
-- copied at each start (a later change of the profile applies from the next start). `course_setup_ms`: when the
-- course's starter files were copied into the folder (NULL: not yet, for this course).
ALTER TABLE workspaces ADD COLUMN course_id TEXT;
ALTER TABLE workspaces ADD COLUMN course_setup_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN course_idle_timeout_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN course_warning_lead_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN course_max_age_ms BIGINT;
ALTER TABLE workspaces ADD COLUMN course_cull_enabled BOOLEAN;
ALTER TABLE workspaces ADD COLUMN applied_limits TEXT;
-- How the proxy presents the IDE's secret for this start (`ide_auth`, a course may set it); NULL: the service's.
ALTER TABLE workspaces ADD COLUMN ide_auth TEXT;
CREATE INDEX workspaces_course ON workspaces (course_id);
