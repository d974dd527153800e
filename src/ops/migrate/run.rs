//! A whole run: every student folder in turn, each under its student's lock when a [`StudentLocker`] is given,
//! busy workspaces skipped, progress and results sent as [`MigrateEvent`]s.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    already_done, check_paths, measure, migrate_student, student_folders, MigrateError, Outcome, StudentReport,
};
use crate::domain::{Status, StudentId};

/// A line of a migration's progress, as the server streams it (NDJSON) and the CLI reads it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MigrateEvent {
    /// Before the first copy: how much there is.
    Plan {
        students: u64,
        files: u64,
        bytes: u64,
        dry_run: bool,
    },
    /// Bytes copied or hashed so far (both count: each file is read twice).
    Progress {
        bytes: u64,
    },
    /// One student finished.
    Student {
        report: serde_json::Value,
    },
    /// The end: what to do next.
    Done {
        migrated: u64,
        already_done: u64,
        skipped_running: u64,
        files_verified: u64,
        next_step: String,
    },
    Error {
        message: String,
    },
}

/// Serializes a student's copy with everything else that acts on the student. Inside the service it is built from
/// the lifecycle's per-student locks (`http::migrate`), so a start waits for the verified copy; the CLI without a
/// server passes none (no start can happen then).
#[async_trait::async_trait]
pub trait StudentLocker: Send + Sync {
    /// Waits for the student's lock; it is held until the returned guard is dropped.
    async fn lock(&self, student: &StudentId) -> Box<dyn Send + '_>;

    /// The workspace's status, read under the lock (`None`: no record).
    async fn status(&self, student: &StudentId) -> Result<Option<Status>, Box<dyn std::error::Error + Send + Sync>>;
}

/// Whether a run copies or only reports what it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    Copy,
    DryRun,
}

/// `true` is a dry run: what the CLI passes today (its flag is `--dry-run`).
impl From<bool> for RunMode {
    fn from(dry_run: bool) -> Self {
        if dry_run {
            RunMode::DryRun
        } else {
            RunMode::Copy
        }
    }
}

/// Whether a student must be left alone: its workspace may be writing (or its status cannot be read, which is
/// treated the same way: the next run picks it up).
async fn is_busy(locker: Option<&dyn StudentLocker>, student: &StudentId) -> bool {
    let Some(locker) = locker else { return false };
    match locker.status(student).await {
        Ok(status) => status.is_some_and(Status::is_busy),
        Err(e) => {
            tracing::warn!(student = %student, error = %e, "cannot read the workspace status; not copied");
            true
        }
    }
}

/// Runs the migration of every student folder from `from` to `to`, one student at a time. With a locker, each
/// student is copied under that student's lock (a start waits), and a busy workspace is skipped.
/// `bytes` counts progress; `events` gets the plan and each student's report.
pub async fn migrate_all(
    locker: Option<&dyn StudentLocker>,
    from: &Path,
    to: &Path,
    mode: RunMode,
    cancel: std::sync::Arc<AtomicBool>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    events: tokio::sync::mpsc::UnboundedSender<MigrateEvent>,
) -> Result<(), MigrateError> {
    let (f, t) = (from.to_path_buf(), to.to_path_buf());
    let plan = tokio::task::spawn_blocking(move || -> Result<_, MigrateError> {
        check_paths(&f, &t)?;
        let students = student_folders(&f)?;
        let mut sizes = Vec::new();
        for s in &students {
            sizes.push(measure(&f, s)?);
        }
        Ok(sizes)
    })
    .await
    .map_err(MigrateError::from_join)??;
    let files = plan.iter().map(|r| r.files).sum();
    let total = plan.iter().map(|r| r.bytes).sum();
    let dry_run = mode == RunMode::DryRun;
    let _ = events.send(MigrateEvent::Plan { students: plan.len() as u64, files, bytes: total, dry_run });

    let (mut migrated, mut done_before, mut skipped, mut verified) = (0, 0, 0, 0);
    for sized in plan {
        if cancel.load(Ordering::Relaxed) {
            return Err(MigrateError::Interrupted);
        }
        let Ok(student) = StudentId::parse(&sized.student_id) else {
            // Built from a parsed id by `measure`; a failure here is a bug, reported instead of a panic.
            return Err(MigrateError::Io {
                path: from.join(&sized.student_id),
                source: io::Error::other("not a student id"),
            });
        };
        let _guard = match locker {
            Some(l) => Some(l.lock(&student).await),
            None => None,
        };
        let report = if is_busy(locker, &student).await {
            StudentReport { outcome: Outcome::SkippedRunning, ..sized }
        } else {
            migrate_one(from, to, &student, sized, mode, &cancel, &bytes).await?
        };
        match report.outcome {
            Outcome::SkippedRunning => skipped += 1,
            Outcome::AlreadyDone => done_before += 1,
            Outcome::Migrated => migrated += 1,
            Outcome::WouldMigrate => {}
        }
        verified += report.verified_files;
        let _ = events.send(MigrateEvent::Student { report: serde_json::to_value(&report).expect("serializable") });
    }
    let next_step = next_step(mode, skipped, from, to);
    let _ = events.send(MigrateEvent::Done {
        migrated,
        already_done: done_before,
        skipped_running: skipped,
        files_verified: verified,
        next_step,
    });
    Ok(())
}

/// One student that is not busy: a dry run only checks for a done marker; a copy copies and verifies unless a
/// previous run already did.
async fn migrate_one(
    from: &Path,
    to: &Path,
    student: &StudentId,
    sized: StudentReport,
    mode: RunMode,
    cancel: &std::sync::Arc<AtomicBool>,
    bytes: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<StudentReport, MigrateError> {
    let (f, t, s, c, b) = (from.to_path_buf(), to.to_path_buf(), student.clone(), cancel.clone(), bytes.clone());
    let report = tokio::task::spawn_blocking(move || -> Result<StudentReport, MigrateError> {
        if already_done(&f, &t, &s)? {
            return Ok(StudentReport { outcome: Outcome::AlreadyDone, ..sized });
        }
        if mode == RunMode::DryRun {
            return Ok(sized);
        }
        let mut add = |n: u64| {
            b.fetch_add(n, Ordering::Relaxed);
        };
        migrate_student(&f, &t, &s, &c, &mut add)
    })
    .await
    .map_err(MigrateError::from_join)??;
    if mode == RunMode::Copy {
        tracing::info!(student = %student, outcome = ?report.outcome, files = report.files, bytes = report.bytes,
                       "migrated");
    }
    Ok(report)
}

/// The sentence that ends a run: what the operator does next.
fn next_step(mode: RunMode, skipped: u64, from: &Path, to: &Path) -> String {
    if mode == RunMode::DryRun {
        "dry run: nothing was copied".to_owned()
    } else if skipped > 0 {
        format!("{skipped} workspace(s) were not stopped and were not copied; stop them and run migrate again")
    } else {
        format!(
            "every folder is copied and verified; stop workspaced, set WORKSPACE_BASE_PATH={} and start it again \
             (the old folders are kept at {} until you remove them)",
            to.display(),
            from.display()
        )
    }
}

/// [`migrate_all`] with its progress reported as `Progress` events about twice a second, and its failure as a last
/// `Error` event: what the server streams and the CLI shows. The events end when this returns.
pub async fn migrate_reporting(
    locker: Option<&dyn StudentLocker>,
    from: &Path,
    to: &Path,
    mode: impl Into<RunMode>,
    cancel: std::sync::Arc<AtomicBool>,
    events: tokio::sync::mpsc::UnboundedSender<MigrateEvent>,
) {
    let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run = migrate_all(locker, from, to, mode.into(), cancel, bytes.clone(), events.clone());
    tokio::pin!(run);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut last = 0;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tick.tick() => {
                let now = bytes.load(Ordering::Relaxed);
                if now != last {
                    last = now;
                    let _ = events.send(MigrateEvent::Progress { bytes: now });
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "migration stopped");
        let _ = events.send(MigrateEvent::Error { message: e.to_string() });
    }
}
