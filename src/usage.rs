//! Resource use, measured in the background. The disk-use loop measures every student folder each
//! `usage_interval` (with `ops::usage::disk_usage`), keeps the latest numbers for the status API and records a
//! `quota_exceeded` event when a folder goes over the soft quota. The engine sample keeps the CPU and memory of
//! every running workspace on record for `GET /api/admin/stats`, taken again every `stats_interval` while someone
//! asks for it, so a request never waits for the engine (a second per container). It lives beside the lifecycle,
//! not in `ops`, because it reads the lifecycle's storage, store, runtime and clock; `ops::usage` stays the
//! measuring code the CLI uses too.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::StudentId;
use crate::ops::usage::Usage;

/// The latest measured disk use of each student folder, filled by [`run_usage_loop`] and read by the status API.
#[derive(Default)]
pub struct UsageCache {
    measured: std::sync::Mutex<std::collections::HashMap<StudentId, Measured>>,
    /// When each running workspace over the hard limit was warned (it stops at the next measurement still over).
    hard_warned: std::sync::Mutex<std::collections::HashMap<StudentId, chrono::DateTime<chrono::Utc>>>,
    /// The engine's CPU and memory numbers (in this cache because the lifecycle owns it and every replica has one).
    engine: EngineCache,
}

/// One sample of the engine's numbers for every running workspace on record.
#[derive(Debug, Clone)]
pub struct EngineSample {
    /// When the sample began: every number in it was taken after this.
    pub sampled_at: DateTime<Utc>,
    pub stats: Vec<(StudentId, crate::runtime::ContainerStats)>,
}

/// The latest engine sample, and when someone last asked for one.
#[derive(Default)]
struct EngineCache {
    latest: std::sync::Mutex<Option<Arc<EngineSample>>>,
    asked_at: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Wakes the sampler when someone asks, so the first answer after a quiet time is not an interval late.
    wake: tokio::sync::Notify,
}

/// How many `stats_interval`s the sampler goes on after the last request: the dashboard asks every 10 s, so it
/// keeps getting fresh samples, and nobody asking costs the engine nothing.
pub const STATS_DEMAND_INTERVALS: i32 = 3;

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

    /// The latest engine sample (`None` before the first), noting that it was asked for at `now`: the sampler
    /// keeps it fresh for a while after (`STATS_DEMAND_INTERVALS`).
    pub fn engine_sample(&self, now: DateTime<Utc>) -> Option<Arc<EngineSample>> {
        *self.engine.asked_at.lock().expect("stats lock") = Some(now);
        self.engine.wake.notify_one();
        self.engine.latest.lock().expect("stats lock").clone()
    }

    /// Whether the sampler should sample at `now`: someone asked within the last `STATS_DEMAND_INTERVALS`
    /// intervals, and there is no sample yet or the latest began at least an interval ago.
    pub fn engine_sample_wanted(&self, now: DateTime<Utc>, interval: std::time::Duration) -> bool {
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX);
        let window = interval.checked_mul(STATS_DEMAND_INTERVALS).unwrap_or(chrono::Duration::MAX);
        let asked = self
            .engine
            .asked_at
            .lock()
            .expect("stats lock")
            .is_some_and(|at| now <= at.checked_add_signed(window).unwrap_or(DateTime::<Utc>::MAX_UTC));
        let latest = self.engine.latest.lock().expect("stats lock").as_ref().map(|s| s.sampled_at);
        asked && latest.is_none_or(|at| now >= at.checked_add_signed(interval).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    fn set_engine_sample(&self, sample: EngineSample) {
        *self.engine.latest.lock().expect("stats lock") = Some(Arc::new(sample));
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
            st.student_folders().map_err(crate::storage::StorageError::at(st.base()))
        })
        .await
        .with_context(|| format!("cannot list the student folders in {}", lc.storage().base().display()))?;
    let quota = lc.settings().disk_soft_quota;
    for student in &students {
        let usage = match lc.measure_folder(student).await {
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

/// Takes one engine sample (`Lifecycle::engine_stats`) into the cache if one is wanted at this moment
/// (`UsageCache::engine_sample_wanted`). Returns whether it sampled.
pub async fn sample_engine_if_wanted(lc: &crate::lifecycle::Lifecycle) -> anyhow::Result<bool> {
    let began = lc.clock().now();
    if !lc.usage().engine_sample_wanted(began, lc.settings().stats_interval) {
        return Ok(false);
    }
    let stats = lc.engine_stats().await?;
    lc.usage().set_engine_sample(EngineSample { sampled_at: began, stats });
    Ok(true)
}

/// Measures disk use at start-up and then every `usage_interval` until cancelled, on the replica that leads, each
/// pass supervised: a pass that fails (the base path is gone) or panics is logged and counted, and the next one runs
/// on time.
pub async fn run_usage_loop(
    lc: Arc<crate::lifecycle::Lifecycle>,
    health: Arc<crate::supervise::LoopHealth>,
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

/// The engine sampler, on every replica (each answers `GET /api/admin/stats` from its own cache): a long-lived task,
/// started again after a panic, that samples every `stats_interval` while someone asks. It is not a loop with passes
/// that `/readyz` could call late: one sample of 500 containers takes about a minute.
pub async fn run_stats_sampler(
    lc: Arc<crate::lifecycle::Lifecycle>,
    health: Arc<crate::supervise::LoopHealth>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let (lc, h, stop) = (&lc, health.clone(), shutdown.clone());
    crate::supervise::keep_running(health, "stats", shutdown, || run_engine_sampler(lc, &h, &stop)).await;
}

async fn run_engine_sampler(
    lc: &crate::lifecycle::Lifecycle,
    health: &crate::supervise::LoopHealth,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let interval = lc.settings().stats_interval;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = lc.usage().engine.wake.notified() => {}
        }
        match sample_engine_if_wanted(lc).await {
            Ok(true) => health.pass_finished("stats"),
            Ok(false) => {}
            Err(e) => {
                health.pass_failed("stats");
                tracing::warn!(
                    error = format!("{e:#}"),
                    "cannot sample the engine's stats; trying again next interval"
                );
            }
        }
    }
}
