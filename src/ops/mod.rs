//! Storage operations for operators, beside the service: `doctor` checks a host (base path, file system and NFS
//! options, small-file latency, student folders, Docker, database); `archive` exports a student's folder as tar.gz
//! (also streamed over HTTP by `http::export`); `import` puts an archive in place atomically after checking every
//! entry; `usage` measures folders like `du`; `migrate` copies every folder to a new base path and verifies it by
//! checksum (run inside the service by `http::migrate`, under each student's lock); `coursework` copies a course's
//! starter files, distributes assignments without overwriting students' edits, and collects them as tar.gz. Paths
//! come only from a `StudentId`. Only `import` replaces a student's files, and only on an operator's explicit
//! command (`coursework` replaces only a file still as it was last distributed); nothing here deletes a source
//! folder.

pub mod archive;
pub mod backup;
pub mod check;
pub mod coursework;
pub mod doctor;
pub mod import;
pub mod migrate;
pub mod mounts;
pub mod repair;
pub mod term;
pub mod usage;
pub mod volumes;
