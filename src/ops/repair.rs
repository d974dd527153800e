//! `workspaced repair [<id>]`: hands everything inside a student's folder to the workspace user (uid:gid), and the
//! doctor's check of content ownership. Files copied in with their old owners (rsync `--numeric-ids`, tar
//! `--numeric-owner`, a restore) pass a check of the top folder and then fail inside the IDE, which runs as uid 1000.
//!
//! Walks with [`crate::fswalk`]: symlinks are never followed (a link gets a new owner, never its target), other
//! file systems mounted inside are not entered, and each change is made relative to the descriptor the entry was
//! listed in (`fchownat(AT_SYMLINK_NOFOLLOW)`; `fchown` on the verified open file for regular files), so a student
//! swapping names meanwhile cannot steer a chown outside the folder.

use std::path::Path;

use crate::domain::StudentId;
use crate::fswalk::{Descend, Files, Node, Tree, Visit, WalkError};
use crate::ops::check::Check;
use crate::storage::Storage;

/// Entries the doctor looks at, at most, over all folders.
pub const OWNERSHIP_SAMPLE: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("no folder for {0}")]
    NoFolder(StudentId),
}

impl RepairError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RepairError::Walk(_) => "walk_failed",
            RepairError::Storage(_) => "storage_error",
            RepairError::NoFolder(_) => "not_found",
        }
    }
}

/// What a repair of one folder did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RepairReport {
    pub student_id: String,
    /// Entries looked at (the folder itself included).
    pub entries: u64,
    /// Entries whose owner or group was changed.
    pub changed: u64,
    /// Entries left out: another file system mounted there, or gone or swapped during the walk (relative paths).
    pub skipped: Vec<String>,
    /// Entries whose chown failed, with why.
    pub errors: Vec<String>,
}

/// Repairs one student's folder. Blocking.
pub fn repair_student(base: &Path, student: &StudentId, uid: u32, gid: u32) -> Result<RepairReport, RepairError> {
    let storage = Storage::new(base, uid, gid);
    let dir = storage.student_dir(student);
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(RepairError::NoFolder(student.clone()));
    }
    let mut report = RepairReport { student_id: student.to_string(), ..Default::default() };
    let before = Tree::open(&dir)?.stat().to_owned();
    // The folder itself: owner and mode 0700, as a start makes it.
    storage.ensure_student_dir(student)?;
    report.entries += 1;
    if (before.uid, before.gid) != (uid, gid) {
        report.changed += 1;
    }
    Tree::open(&dir)?.walk(Files::Open, |visit| {
        match visit {
            Visit::Skipped { rel, why } => report.skipped.push(format!("{} ({})", rel.display(), why.reason())),
            Visit::Entry(entry) => {
                report.entries += 1;
                if (entry.stat.uid, entry.stat.gid) != (uid, gid) {
                    let done = match &entry.node {
                        Node::File(Some(file)) => std::os::unix::fs::fchown(file, Some(uid), Some(gid)),
                        _ => entry.lchown(uid, gid),
                    };
                    match done {
                        Ok(()) => report.changed += 1,
                        Err(e) => report.errors.push(format!("{}: {e}", entry.rel.display())),
                    }
                }
            }
        }
        Ok::<_, RepairError>(Descend::Into)
    })?;
    tracing::info!(student = %student, entries = report.entries, changed = report.changed,
                   skipped = report.skipped.len(), errors = report.errors.len(), "repaired ownership");
    Ok(report)
}

/// What the doctor's sample found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OwnershipSample {
    pub checked: u64,
    /// Every entry of every folder was checked (the sample did not stop at its limit).
    pub complete: bool,
    pub wrong: u64,
    /// A few wrong ones, `<id>/<path> uid:gid`.
    pub examples: Vec<String>,
}

/// Looks at the owner of up to `limit` entries inside the student folders (in name order). Blocking.
pub fn sample_ownership(base: &Path, uid: u32, gid: u32, limit: u64) -> Result<OwnershipSample, WalkError> {
    let mut out = OwnershipSample { complete: true, ..Default::default() };
    let students = Storage::new(base, uid, gid)
        .student_folders()
        .map_err(|source| WalkError::Io { path: base.to_path_buf(), source })?;
    'students: for student in students {
        let dir = base.join(student.as_str());
        let result = Tree::open(&dir)?.walk(Files::StatOnly, |visit| {
            if let Visit::Entry(e) = visit {
                if out.checked >= limit {
                    return Err(Stop::Full);
                }
                out.checked += 1;
                if (e.stat.uid, e.stat.gid) != (uid, gid) {
                    out.wrong += 1;
                    if out.examples.len() < 5 {
                        out.examples.push(format!("{student}/{} {}:{}", e.rel.display(), e.stat.uid, e.stat.gid));
                    }
                }
            }
            Ok(Descend::Into)
        });
        match result {
            Ok(()) => {}
            Err(Stop::Full) => {
                out.complete = false;
                break 'students;
            }
            Err(Stop::Walk(e)) => return Err(e),
        }
    }
    Ok(out)
}

/// The doctor's `content_ownership` check: WARN when any sampled entry has another owner, saying whether the
/// sample covered everything. Blocking.
pub fn content_ownership_check(base: &Path, uid: u32, gid: u32) -> Check {
    const NAME: &str = "content_ownership";
    match sample_ownership(base, uid, gid, OWNERSHIP_SAMPLE) {
        Err(e) => Check::warn(NAME, format!("cannot walk the student folders: {e}"), ""),
        Ok(s) => {
            let scope = if s.complete {
                format!("all {} entries checked", s.checked)
            } else {
                format!("the first {} entries checked, not all", s.checked)
            };
            let details = serde_json::to_value(&s).unwrap_or_default();
            if s.wrong == 0 {
                Check::pass(NAME, format!("every entry is owned by {uid}:{gid} ({scope})")).with_details(details)
            } else {
                Check::warn(
                    NAME,
                    format!(
                        "{} entries are not owned by {uid}:{gid} ({scope}), e.g. {}",
                        s.wrong,
                        s.examples.join(", ")
                    ),
                    "run `workspaced repair` (all folders) or `workspaced repair <id>`",
                )
                .with_details(details)
            }
        }
    }
}

/// Why the sample's walk ended early: the limit, or an error.
enum Stop {
    Full,
    Walk(WalkError),
}

impl From<WalkError> for Stop {
    fn from(e: WalkError) -> Self {
        Stop::Walk(e)
    }
}
