//! The disk-use loop of the service: measures every student folder each `usage_interval` (with
//! `ops::usage::disk_usage`), keeps the latest numbers for the status API and records a `quota_exceeded` event
//! when a folder goes over the soft quota. It lives beside the lifecycle, not in `ops`, because it reads the
//! lifecycle's storage, store and clock; `ops::usage` stays the measuring code the CLI uses too.

use crate::domain::StudentId;
use crate::ops::usage::{disk_usage, Usage};

/// The latest measured disk use of each student folder, filled by [`run_usage_loop`] and read by the status API.
#[derive(Default)]
pub struct UsageCache {
    measured: std::sync::Mutex<std::collections::HashMap<StudentId, Measured>>,
    /// When each running workspace over the hard limit was warned (it stops at the next measurement still over).
    hard_warned: std::sync::Mutex<std::collections::HashMap<StudentId, chrono::DateTime<chrono::Utc>>>,
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
    pub fn get(&self, student: &StudentId) -> Option<Measured> {
        self.measured.lock().expect("usage lock").get(student).copied()
    }

    /// A measurement taken outside the loop (a start re-measuring a folder that was over the hard limit).
    pub fn remember(&self, student: &StudentId, usage: Usage, at: chrono::DateTime<chrono::Utc>) {
        let mut map = self.measured.lock().expect("usage lock");
        let over_quota = map.get(student).is_some_and(|m| m.over_quota);
        map.insert(student.clone(), Measured { usage, at, over_quota });
    }

    /// Forgets a deleted student.
    pub fn forget(&self, student: &StudentId) {
        self.measured.lock().expect("usage lock").remove(student);
        self.hard_warned.lock().expect("usage lock").remove(student);
    }

    pub fn hard_warned(&self, student: &StudentId) -> Option<chrono::DateTime<chrono::Utc>> {
        self.hard_warned.lock().expect("usage lock").get(student).copied()
    }

    pub fn set_hard_warned(&self, student: &StudentId, at: Option<chrono::DateTime<chrono::Utc>>) {
        let mut map = self.hard_warned.lock().expect("usage lock");
        match at {
            Some(at) => map.insert(student.clone(), at),
            None => map.remove(student),
        };
    }

    /// Records a measurement; returns whether the folder just went over the quota.
    fn record(&self, student: &StudentId, usage: Usage, at: chrono::DateTime<chrono::Utc>, quota: Option<u64>) -> bool {
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
    // Through the storage gate: a stalled mount fails the pass instead of hanging the loop.
    let students = lc
        .storage()
        .run("listing the student folders", None, |st, _| {
            st.student_folders().map_err(|e| crate::storage::StorageError::Io { path: st.base().to_owned(), source: e })
        })
        .await
        .with_context(|| format!("cannot list the student folders in {}", lc.storage().base().display()))?;
    let quota = lc.settings().disk_soft_quota;
    // A walk of one folder may take long on EFS; the interval bounds it.
    let walk = Some(lc.settings().usage_interval);
    for student in &students {
        let dir = lc.storage().student_dir(student);
        let measured = lc.storage().run("measuring a folder", walk, move |_, _| {
            disk_usage(&dir).map_err(|source| crate::storage::StorageError::Io { path: dir.clone(), source })
        });
        let usage = match measured.await {
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
        if lc.settings().disk_hard_quota.is_some() {
            lc.over_hard_quota(student, usage.bytes).await?;
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
    crate::supervise::supervise_singleton(health, "usage", interval, shutdown, move || async move {
        let started = std::time::Instant::now();
        let n = measure_all(lc).await?;
        tracing::debug!(folders = n, ms = started.elapsed().as_millis() as u64, "disk use measured");
        Ok(())
    })
    .await;
}
