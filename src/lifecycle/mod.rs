//! The lifecycle: the one facade that changes a workspace. Start, stop, heartbeat, the idle warning and the cull,
//! the reconciler's adopt / lost / interrupted / orphan, policy overrides, launch-link redemption and session
//! revocation all go through it; the loops (culler, reconciler, flusher, usage) and the HTTP handlers are thin
//! drivers that call it. Each student's operations run one at a time under that student's lock ([`StudentLocker`]);
//! the store records the desired and reached state, the runtime is made to match it. Everything else gets a
//! read-only view ([`Lifecycle::reads`]). It never builds a container name, label or path from anything but a
//! `StudentId`.

mod admission;
mod course;
mod coursework;
mod cull;
mod locks;
mod lti;
mod quota;
mod readiness;
mod reconcile;
mod start;
mod stop;
mod view;

use std::sync::Arc;

pub use admission::Admission;
pub use cull::SweepReport;
pub use locks::{LockGuard, SharedLocks, StudentLocker, StudentLocks};
pub use quota::QuotaAction;
pub use reconcile::{ReconcileError, ReconcileReport};
pub use view::Live;

use crate::activity::Activity;
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{Status, StudentId};
use crate::runtime::{Runtime, RuntimeError};
use crate::storage::{Storage, StorageError};
use crate::store::{PolicyOverrides, Reads, RevokeScope, Store, StoreError, WorkspaceRecord};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no workspace for student {0}")]
    NotFound(StudentId),
    #[error("workspace of {student} is {status}, not running")]
    NotRunning { student: StudentId, status: Status },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("workspace of {student} did not become ready within {seconds} s: {detail}")]
    StartTimeout { student: StudentId, seconds: u64, detail: String },
    #[error("the start of {0}'s workspace was called off by a stop while it waited in the queue")]
    StartCancelled(StudentId),
    #[error("the start queue is full; try again in {retry_after_secs} s")]
    QueueFull { retry_after_secs: u64 },
    #[error("the maximum of {cap} running workspaces is reached; try again later")]
    CapacityReached { cap: usize, retry_after_secs: u64 },
    #[error("the files of {student} use {bytes} bytes, over the disk limit of {quota} bytes; remove files first")]
    OverQuota { student: StudentId, bytes: u64, quota: u64 },
    #[error("the workspace of {0} is not stopped; stop it first")]
    StillRunning(StudentId),
    #[error("no course {0}")]
    CourseNotFound(crate::domain::CourseId),
    #[error("course {course} has {busy} busy workspaces; stop them first")]
    CourseBusy { course: crate::domain::CourseId, busy: u64 },
    #[error("the workspace of {student} is busy in course {current}; stop it before changing its course")]
    CourseConflict { student: StudentId, current: crate::domain::CourseId },
    #[error("course {course}'s profile no longer meets the operator's rules: {detail}")]
    CourseInvalid { course: crate::domain::CourseId, detail: String },
    #[error(transparent)]
    Profile(#[from] crate::course::ProfileError),
    #[error(transparent)]
    Coursework(#[from] crate::ops::coursework::CourseworkError),
    #[error("an operation's task failed: {0}")]
    Panicked(String),
}

/// Whether a start call waits for the IDE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Return once the IDE answers (or the start failed).
    Wait,
    /// Return as soon as the start is queued or under way; it goes on in the background.
    Background,
}

pub struct Lifecycle {
    settings: Arc<Settings>,
    store: Store,
    /// The read-only view handed out, made once: the proxy and key checks ask for it on every request.
    reads: Reads,
    runtime: Arc<dyn Runtime>,
    storage: Storage,
    clock: Arc<dyn Clock>,
    locks: Arc<dyn StudentLocker>,
    activity: Arc<Activity>,
    admission: Admission,
    probe: reqwest::Client,
    usage: crate::usage::UsageCache,
}

impl Lifecycle {
    /// A lifecycle with in-process student locks (one replica).
    pub fn new(settings: Arc<Settings>, store: Store, runtime: Arc<dyn Runtime>, clock: Arc<dyn Clock>) -> Self {
        Self::with_locks(settings, store, runtime, clock, Arc::new(StudentLocks::default()))
    }

    /// A lifecycle whose per-student serialization is `locks` (e.g. a lock shared through a database).
    pub fn with_locks(
        settings: Arc<Settings>,
        store: Store,
        runtime: Arc<dyn Runtime>,
        clock: Arc<dyn Clock>,
        locks: Arc<dyn StudentLocker>,
    ) -> Self {
        let w = &settings.workspace;
        let gate = crate::storage::Gate::new(settings.storage_timeout, settings.storage_max_blocked);
        let storage = Storage::new(settings.base_path.clone(), w.uid, w.gid).with_gate(gate);
        // No pooled connections: a kept-alive connection from us would itself look like an open tab.
        let probe = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap_or_default();
        let admission = Admission::new(settings.max_concurrent_starts, settings.max_queued_starts);
        Self {
            settings,
            reads: store.reads(),
            store,
            runtime,
            storage,
            clock,
            locks,
            activity: Arc::new(Activity::default()),
            admission,
            probe,
            usage: crate::usage::UsageCache::default(),
        }
    }

    /// Loads the running workspaces' activity from the store (at start-up, before serving).
    pub async fn load_activity(&self) -> Result<usize, LifecycleError> {
        let running = self.store.list(Some(Status::Running)).await?;
        for r in &running {
            let last = r.last_activity.or(r.started_at).unwrap_or(r.updated_at);
            self.activity.register(&r.student_id, last, r.ide_connected_at);
        }
        Ok(running.len())
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store, read-only: the only view of it anything outside the lifecycle gets.
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// Where the proxy keeps the names of the cookies each IDE set: the store, which writes only when a name is new.
    pub fn cookie_jar(&self) -> Arc<dyn crate::proxy::CookieJar> {
        Arc::new(self.store.clone())
    }

    /// The store itself, for the lifecycle's own helpers in this crate that write events (usage, migrate). Writes
    /// of workspace rows stay in `lifecycle/`: `tests/architecture.rs` checks that.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Student folders (create, check, measure): files, never workspace state.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Latest measured disk use per student (filled in the background).
    pub fn usage(&self) -> &crate::usage::UsageCache {
        &self.usage
    }

    /// Takes the student's lock: operations outside the lifecycle that must not overlap a start or a stop
    /// (a migration's copy of that student) hold it.
    pub async fn lock(&self, student: &StudentId) -> LockGuard {
        self.locks.lock(student).await
    }

    /// How many operations hold or wait for the student's lock (for tests and metrics).
    pub fn lock_contenders(&self, student: &StudentId) -> usize {
        self.locks.contenders(student)
    }

    /// The stored state of a student's workspace.
    pub async fn status(&self, student: &StudentId) -> Result<WorkspaceRecord, LifecycleError> {
        self.store.get(student).await?.ok_or_else(|| LifecycleError::NotFound(student.clone()))
    }

    /// Records activity for a running workspace (the seeds' heartbeat). In memory only: the batch writer puts it in
    /// the store. Returns the workspace's latest activity.
    ///
    /// Whether the workspace runs is the route on record (cached, and forgotten at once when any replica changes the
    /// workspace), not this process's memory: another replica may have started or stopped it. While the database is
    /// away a cached route still takes the heartbeat, and the flush writes it once the database is back.
    pub async fn heartbeat(&self, student: &StudentId) -> Result<chrono::DateTime<chrono::Utc>, LifecycleError> {
        crate::metrics::heartbeat();
        if self.store.route(student).await?.is_some() {
            return Ok(self.activity.touch_running(student, self.clock.now()));
        }
        // Not running: forget any entry left from when it ran, and say whether the student is unknown (404) or its
        // workspace not running (409).
        self.activity.unregister(student);
        let rec = self.status(student).await?;
        Err(LifecycleError::NotRunning { student: student.clone(), status: rec.status })
    }

    /// Activity seen by the proxy (a page load, a request that sends something) for a workspace whose route it
    /// just found: like a heartbeat.
    pub fn touch(&self, student: &StudentId) {
        self.activity.touch_running(student, self.clock.now());
    }

    /// The IDE reported an open tab (counted as activity only when `open_tab_keeps_alive` is set).
    pub fn ide_seen(&self, student: &StudentId) {
        let now = self.clock.now();
        self.activity.ide_seen(student, now);
        if self.settings.cull.open_tab_keeps_alive {
            self.activity.touch(student, now);
        }
    }

    /// Writes the activity gathered in memory since the last batch. Returns how many workspaces it wrote.
    pub async fn flush_activity(&self) -> Result<usize, LifecycleError> {
        Ok(self.activity.flush(&self.store).await?)
    }

    /// Replaces a workspace's culling overrides, under the student's lock so a cull in progress sees either the old
    /// or the new policy, never half of each. 404 for a student without a workspace.
    pub async fn set_policy(&self, student: &StudentId, overrides: PolicyOverrides) -> Result<(), LifecycleError> {
        let _guard = self.locks.lock(student).await;
        if !self.store.set_overrides(student, &overrides, self.clock.now()).await? {
            return Err(LifecycleError::NotFound(student.clone()));
        }
        Ok(())
    }

    /// Marks a launch link's nonce used. False when it was used before (a replay).
    pub async fn redeem_launch_nonce(
        &self,
        nonce: &str,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, LifecycleError> {
        Ok(self.store.use_launch_nonce(nonce, expires_at, self.clock.now()).await?)
    }

    /// Ends the sessions and student tokens of `scope` issued so far; returns the new generation.
    pub async fn end_sessions(&self, scope: &RevokeScope) -> Result<i64, LifecycleError> {
        Ok(self.store.revoke_sessions(scope, self.clock.now()).await?)
    }

    /// The proxy could not reach the IDE at its route: forget the route and ask the store again (the container
    /// may be gone since the route was learnt). Returns the route now on record, if any.
    pub async fn route_unreachable(&self, student: &StudentId) -> Result<Option<crate::store::Route>, LifecycleError> {
        self.store.forget_route(student);
        Ok(self.store.route(student).await?)
    }

    /// Whether the container engine answers.
    pub async fn ping_engine(&self) -> Result<(), RuntimeError> {
        self.runtime.ping().await
    }

    /// CPU and memory of every running workspace on record (from the store, so those started on other replicas
    /// too), from the engine: about a second each, 8 at a time. Slow by nature, so nothing answers a request with
    /// it directly: the background sample (`usage::run_stats_sampler`) calls it and `GET /api/admin/stats` reads that.
    pub async fn engine_stats(&self) -> Result<Vec<(StudentId, crate::runtime::ContainerStats)>, LifecycleError> {
        use futures_util::StreamExt;
        let running = self.store.running_ports().await?;
        Ok(futures_util::stream::iter(running)
            .map(|crate::store::RunningPort { student: id, .. }| async move {
                let s = self.runtime.stats(&id).await;
                (id, s)
            })
            .buffer_unordered(8)
            .filter_map(|(id, s)| async move {
                match s {
                    Ok(Some(s)) => Some((id, s)),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::debug!(student = %id, error = %e, "no stats");
                        None
                    }
                }
            })
            .collect()
            .await)
    }
}
