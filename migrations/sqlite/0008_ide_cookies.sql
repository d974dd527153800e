-- The names of the cookies each student's IDE set: the only cookies of the browser's that the proxy forwards to it.
-- Kept here, not in one process's memory, so a restart or another replica forwards the same ones. Rows go with the
-- workspace (`delete_workspace`); at most a bounded number per student (store/ide_cookies.rs).
CREATE TABLE ide_cookies (
    student_id  TEXT NOT NULL,
    name        TEXT NOT NULL,
    PRIMARY KEY (student_id, name)
);
-- How the proxy forwards to the running IDE, fixed at its start: 0 strips `/w/<id>`, 1 forwards the full path.
ALTER TABLE workspaces ADD COLUMN proxy_full_path BOOLEAN NOT NULL DEFAULT 0;
