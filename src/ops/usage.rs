//! Disk usage of a folder, counted the way `du -s --block-size=1 -x` counts it: allocated blocks
//! (`st_blocks * 512`), every hardlinked inode once, symlinks not followed, other file systems not entered.
//! Allocated rather than apparent bytes, because that is what a quota or an EFS bill sees.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use crate::fswalk::{Descend, Files, Kind, Stat, Tree, Visit, WalkError};

/// What a folder occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Allocated bytes, the folder itself included (`du -s -B1`).
    pub bytes: u64,
    /// Non-directory entries (files, symlinks, ...), each hardlinked inode once.
    pub files: u64,
}

/// Walks `dir` through [`crate::fswalk`]: symlinks are not followed, other file systems not entered. Entries that
/// vanish or change during the walk (a running workspace deletes and renames files) are skipped; any other error
/// stops the walk. Blocking: call from `spawn_blocking`.
pub fn disk_usage(dir: &Path) -> io::Result<Usage> {
    let tree = match Tree::open(dir) {
        Ok(t) => t,
        // A file or symlink as the root counts as itself, as with `du`.
        Err(WalkError::NotDirectory(_)) => {
            let mut usage = Usage::default();
            add(&mut usage, &mut HashSet::new(), &Stat::from(&std::fs::symlink_metadata(dir)?));
            return Ok(usage);
        }
        Err(e) => return Err(walk_io(e)),
    };
    let mut usage = Usage::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    add(&mut usage, &mut seen, tree.stat());
    tree.walk(Files::StatOnly, |visit| {
        if let Visit::Entry(entry) = visit {
            add(&mut usage, &mut seen, &entry.stat);
        }
        Ok::<_, WalkError>(Descend::Into)
    })
    .map_err(walk_io)?;
    Ok(usage)
}

fn walk_io(e: WalkError) -> io::Error {
    match e {
        WalkError::Io { path, source } => io::Error::new(source.kind(), format!("{}: {source}", path.display())),
        e @ WalkError::NotDirectory(_) => io::Error::new(io::ErrorKind::NotADirectory, e.to_string()),
    }
}

fn add(usage: &mut Usage, seen: &mut HashSet<(u64, u64)>, stat: &Stat) {
    let is_dir = stat.kind() == Kind::Dir;
    if !is_dir && stat.nlink > 1 && !seen.insert((stat.dev, stat.ino)) {
        return;
    }
    usage.bytes += stat.blocks * 512;
    if !is_dir {
        usage.files += 1;
    }
}

/// The latest measured disk use of each student folder, filled by [`run_usage_loop`] and read by the status API.
#[derive(Default)]
pub struct UsageCache {
    measured: std::sync::Mutex<std::collections::HashMap<crate::domain::StudentId, Measured>>,
}

/// One measurement and when it was taken.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub usage: Usage,
    pub at: chrono::DateTime<chrono::Utc>,
    /// Whether it was above the soft quota (a `quota_exceeded` event is sent when this turns true).
    pub over_quota: bool,
}

impl UsageCache {
    pub fn get(&self, student: &crate::domain::StudentId) -> Option<Measured> {
        self.measured.lock().expect("usage lock").get(student).copied()
    }

    /// Records a measurement; returns whether the folder just went over the quota.
    fn record(
        &self,
        student: &crate::domain::StudentId,
        usage: Usage,
        at: chrono::DateTime<chrono::Utc>,
        quota: Option<u64>,
    ) -> bool {
        let over = quota.is_some_and(|q| usage.bytes > q);
        let mut map = self.measured.lock().expect("usage lock");
        let was_over = map.get(student).is_some_and(|m| m.over_quota);
        map.insert(student.clone(), Measured { usage, at, over_quota: over });
        over && !was_over
    }
}

/// One pass: measures every student folder below the base path (one at a time, so an NFS server is not flooded)
/// and emits a `quota_exceeded` event for each folder that just went over the soft quota. Returns how many folders
/// were measured.
pub async fn measure_all(lc: &crate::lifecycle::Lifecycle) -> anyhow::Result<usize> {
    use anyhow::Context;
    let storage = lc.storage().clone();
    let students = tokio::task::spawn_blocking(move || storage.student_folders())
        .await?
        .with_context(|| format!("cannot list the student folders in {}", lc.storage().base().display()))?;
    let quota = lc.settings().disk_soft_quota;
    for student in &students {
        let dir = lc.storage().student_dir(student);
        let usage = match tokio::task::spawn_blocking(move || disk_usage(&dir)).await? {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(student = %student, error = %e, "cannot measure disk use");
                continue;
            }
        };
        let now = lc.clock().now();
        if lc.usage().record(student, usage, now, quota) {
            let quota = quota.unwrap_or_default();
            let message = format!(
                "Your workspace uses {} MiB, above the soft quota of {} MiB. Please remove files you no longer need.",
                usage.bytes / (1024 * 1024),
                quota / (1024 * 1024)
            );
            let event = crate::store::NewEvent {
                kind: crate::domain::EventKind::QuotaExceeded,
                reason: Some(crate::domain::EventReason::DiskSoftQuota),
                message: &message,
            };
            lc.store().add_event(student, &event, now).await?;
            tracing::warn!(student = %student, bytes = usage.bytes, quota, "disk soft quota exceeded");
        }
    }
    Ok(students.len())
}

/// Measures at start-up and then every `usage_interval` until cancelled, each pass supervised: a pass that fails
/// (the base path is gone) or panics is logged and counted, and the next one runs on time.
pub async fn run_usage_loop(
    lc: std::sync::Arc<crate::lifecycle::Lifecycle>,
    health: std::sync::Arc<crate::supervise::LoopHealth>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let interval = lc.settings().usage_interval;
    let lc = &lc;
    crate::supervise::supervise(health, "usage", interval, shutdown, move || async move {
        let started = std::time::Instant::now();
        let n = measure_all(lc).await?;
        tracing::debug!(folders = n, ms = started.elapsed().as_millis() as u64, "disk use measured");
        Ok(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hardlinked_file_counts_once_and_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        let single = disk_usage(dir.path()).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let linked = disk_usage(dir.path()).unwrap();
        assert_eq!((linked.bytes, linked.files), (single.bytes, 1));
        std::os::unix::fs::symlink("/usr", dir.path().join("l")).unwrap();
        let with_link = disk_usage(dir.path()).unwrap();
        assert_eq!(with_link.files, 2);
        assert!(with_link.bytes < single.bytes + 64 * 1024, "the symlink's target was counted");
    }
}
