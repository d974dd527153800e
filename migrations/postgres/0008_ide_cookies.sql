-- PostgreSQL twin of migrations/sqlite/0008_ide_cookies.sql.
CREATE TABLE ide_cookies (
    student_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    PRIMARY KEY (student_id, name)
);
ALTER TABLE workspaces ADD COLUMN proxy_full_path BOOLEAN NOT NULL DEFAULT FALSE;
