//! The lifecycle: the only place that changes a workspace. Each student's operations run one at a time under that
//! student's lock; the store records the desired and reached state, the runtime is made to match it.
//! It never builds a container name, label or path from anything but a `StudentId`.

mod admission;
mod locks;
mod readiness;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

pub use admission::Admission;
pub use locks::{StudentGuard, StudentLocks};

use crate::activity::{Activity, Touch};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::{EventKind, Status, StopReason, StudentId};
use crate::runtime::{self, ContainerSpec, Runtime, RuntimeError};
use crate::storage::{Storage, StorageError};
use crate::store::{NewEvent, Store, StoreError, WorkspaceRecord};

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
}

pub struct Lifecycle {
    settings: Arc<Settings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    storage: Storage,
    clock: Arc<dyn Clock>,
    locks: StudentLocks,
    activity: Arc<Activity>,
    admission: Admission,
    probe: reqwest::Client,
    usage: crate::usage::UsageCache,
}

impl Lifecycle {
    pub fn new(settings: Arc<Settings>, store: Store, runtime: Arc<dyn Runtime>, clock: Arc<dyn Clock>) -> Self {
        let w = &settings.workspace;
        let storage = Storage::new(settings.base_path.clone(), w.uid, w.gid);
        let probe = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http client");
        let activity = Arc::new(Activity::default());
        let admission = Admission::new(settings.max_concurrent_starts, settings.max_queued_starts);
        let usage = crate::usage::UsageCache::default();
        Self {
            settings,
            store,
            runtime,
            storage,
            clock,
            locks: StudentLocks::default(),
            activity,
            admission,
            probe,
            usage,
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

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }

    /// Latest measured disk use per student (filled in the background).
    pub fn usage(&self) -> &crate::usage::UsageCache {
        &self.usage
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn locks(&self) -> &StudentLocks {
        &self.locks
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Takes the student's lock; other components (culler, reconciler) use it to act on one student safely.
    pub async fn lock(&self, student: &StudentId) -> StudentGuard<'_> {
        self.locks.lock(student).await
    }

    /// The stored state of a student's workspace.
    pub async fn status(&self, student: &StudentId) -> Result<WorkspaceRecord, LifecycleError> {
        self.store.get(student).await?.ok_or_else(|| LifecycleError::NotFound(student.clone()))
    }

    /// Starts the student's workspace and returns once its IDE answers the readiness path. Idempotent: a running
    /// workspace whose container is alive is returned as is. On failure no container is left behind and the
    /// record says `failed` with the reason. Runs in its own task, so a caller that goes away (a closed HTTP
    /// connection) never leaves a start half done.
    pub async fn start(self: &Arc<Self>, student: &StudentId) -> Result<WorkspaceRecord, LifecycleError> {
        self.start_with(student, true).await
    }

    /// Like [`Lifecycle::start`]; with `wait == false` it returns as soon as the start is queued or under way
    /// (the record then says `queued` or `starting`), and the start goes on in the background.
    pub async fn start_with(
        self: &Arc<Self>,
        student: &StudentId,
        wait: bool,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
        let (lc, s) = (self.clone(), student.clone());
        let task = tokio::spawn(async move {
            let _guard = lc.locks.lock(&s).await;
            lc.start_locked(&s, Some(accepted_tx)).await
        });
        if !wait && accepted_rx.await.is_ok() {
            return self.status(student).await;
        }
        task.await.expect("start task panicked")
    }

    async fn start_locked(
        &self,
        student: &StudentId,
        accepted: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let previous = self.store.get(student).await?;
        if let Some(rec) = &previous {
            if rec.status == Status::Running {
                if let Some(info) = self.runtime.inspect(student).await? {
                    if info.running && Some(&info.id) == rec.container_id.as_ref() {
                        return Ok(rec.clone());
                    }
                }
                tracing::warn!(student = %student, "record says running but its container is gone; starting anew");
            }
        }
        // Checks that change nothing when they fail: engine, storage, capacity.
        self.runtime.ping().await?;
        let storage = self.storage.clone();
        let s = student.clone();
        let host_dir =
            tokio::task::spawn_blocking(move || storage.ensure_student_dir(&s)).await.expect("storage task")?;
        if let Some(cap) = self.settings.max_running {
            if self.activity.running().len() + self.admission.in_flight() + self.admission.queued() >= cap {
                return Err(LifecycleError::CapacityReached { cap, retry_after_secs: 60 });
            }
        }

        // Admission: at once when a permit is free, else wait in the queue (the record says `queued`).
        let permit = match self.admission.try_admit() {
            Some(p) => p,
            None => {
                let Some(ticket) = self.admission.enqueue(student) else {
                    let wait = self.admission.estimate(self.admission.queued());
                    return Err(LifecycleError::QueueFull { retry_after_secs: wait.as_secs().max(1) });
                };
                self.store.mark_queued(student, self.clock.now()).await?;
                crate::metrics::queue_length(self.admission.queued());
                if let Some(tx) = accepted {
                    let _ = tx.send(());
                }
                let permit = self.admission.admit(ticket).await;
                crate::metrics::queue_length(self.admission.queued());
                let Some(permit) = permit else {
                    // A stop called this start off while it waited; the stop, next under the lock, records it.
                    tracing::info!(student = %student, "queued start called off by a stop");
                    return Err(LifecycleError::StartCancelled(student.clone()));
                };
                let result = self.start_admitted(student, previous, host_dir, None).await;
                drop(permit);
                return result;
            }
        };
        let result = self.start_admitted(student, previous, host_dir, accepted).await;
        drop(permit);
        result
    }

    /// The start itself, holding the student's lock and an admission permit.
    async fn start_admitted(
        &self,
        student: &StudentId,
        previous: Option<WorkspaceRecord>,
        host_dir: std::path::PathBuf,
        accepted: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let deadline = Instant::now() + self.settings.workspace.start_timeout;
        self.store.mark_starting(student, self.clock.now()).await?;
        if let Some(tx) = accepted {
            let _ = tx.send(());
        }
        if let Some(p) = previous {
            // The wrong-cull signal: a student who comes back right after an idle stop was not idle.
            let recent = p.stopped_at.is_some_and(|t| self.clock.now() - t <= chrono::Duration::minutes(5));
            if p.status == Status::Stopped && p.stop_reason == Some(StopReason::Idle) && recent {
                crate::metrics::restart_after_idle_stop();
            }
        }
        tracing::info!(student = %student, "starting workspace");
        let started = Instant::now();

        let spec = self.spec(student, host_dir);
        let info = match tokio::time::timeout_at(deadline, self.runtime.ensure_running(&spec)).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => return Err(self.fail_start(student, started, e.to_string(), e.into()).await),
            Err(_) => {
                let e = self.timeout_error(student, "the container engine did not finish creating it".into());
                return Err(self.fail_start(student, started, e.to_string(), e).await);
            }
        };
        let Some(port) = info.host_port else {
            let e = LifecycleError::Runtime(RuntimeError::Engine("container has no published port".into()));
            return Err(self.fail_start(student, started, e.to_string(), e).await);
        };
        let path = &self.settings.workspace.readiness_path;
        if let Err(detail) = readiness::wait_ready(&self.probe, port, path, deadline).await {
            let e = self.timeout_error(student, detail);
            return Err(self.fail_start(student, started, e.to_string(), e).await);
        }

        let took = started.elapsed();
        let message = format!("Workspace running (ready in {} ms).", took.as_millis());
        let event = NewEvent { kind: EventKind::Started, reason: None, message: &message };
        let now = self.clock.now();
        self.store.mark_running(student, &info.id, port, now, &event).await?;
        self.activity.register(student, now, None);
        self.admission.record_start(took);
        crate::metrics::start_finished("ok", took);
        tracing::info!(student = %student, container = %info.id, port, ms = took.as_millis() as u64, "workspace ready");
        self.status(student).await
    }

    fn timeout_error(&self, student: &StudentId, detail: String) -> LifecycleError {
        LifecycleError::StartTimeout {
            student: student.clone(),
            seconds: self.settings.workspace.start_timeout.as_secs(),
            detail,
        }
    }

    /// Cleans up after a failed start: removes whatever container exists and records `failed`.
    async fn fail_start(
        &self,
        student: &StudentId,
        started: Instant,
        message: String,
        err: LifecycleError,
    ) -> LifecycleError {
        tracing::warn!(student = %student, error = %message, "start failed; removing what was created");
        if let Err(e) = self.runtime.stop(student, std::time::Duration::ZERO).await {
            tracing::error!(student = %student, error = %e, "could not remove the container of a failed start");
        }
        crate::metrics::start_finished("error", started.elapsed());
        if let Err(e) = self.store.mark_failed(student, &message, self.clock.now()).await {
            tracing::error!(student = %student, error = %e, "could not record a failed start");
        }
        err
    }

    /// Stops the student's workspace for `reason`: the container is stopped and removed, the files stay.
    /// Stopping a workspace that is not running succeeds and changes nothing. Runs in its own task, like a start.
    pub async fn stop(
        self: &Arc<Self>,
        student: &StudentId,
        reason: StopReason,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        // A start waiting in the queue holds the student's lock; call it off rather than wait through the queue.
        self.admission.cancel(student);
        let (lc, s) = (self.clone(), student.clone());
        tokio::spawn(async move {
            let _guard = lc.locks.lock(&s).await;
            lc.stop_locked(&s, reason).await
        })
        .await
        .expect("stop task panicked")
    }

    /// [`Lifecycle::stop`] for a caller that already holds the student's lock. When the engine cannot be reached
    /// the record is left as it was and the error returned: nothing is marked stopped that may still run.
    pub async fn stop_locked(
        &self,
        student: &StudentId,
        reason: StopReason,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let rec = self.status(student).await?;
        if matches!(rec.status, Status::Stopped | Status::Failed) {
            return Ok(rec);
        }
        self.runtime.ping().await?;
        // Activity that arrived since the last batch is still worth keeping in the record.
        if let Some(last) = self.activity.last(student) {
            self.store.touch_activity(student, last).await?;
        }
        self.store.mark_stopping(student, reason, self.clock.now()).await?;
        if let Err(e) = self.runtime.stop(student, self.settings.workspace.stop_grace).await {
            self.store.revert_status(student, rec.status, self.clock.now()).await?;
            return Err(e.into());
        }
        self.store.mark_stopped(student, reason, self.clock.now()).await?;
        self.activity.unregister(student);
        crate::metrics::stopped(reason);
        tracing::info!(student = %student, reason = %reason, "workspace stopped");
        self.status(student).await
    }

    /// Records activity for a running workspace (the seeds' heartbeat). In memory only: the batch writer puts it in
    /// the store. Returns the workspace's latest activity.
    pub async fn heartbeat(&self, student: &StudentId) -> Result<chrono::DateTime<chrono::Utc>, LifecycleError> {
        crate::metrics::heartbeat();
        match self.activity.touch(student, self.clock.now()) {
            Touch::Recorded(last) => Ok(last),
            // Not running: the store says whether the student is unknown (404) or stopped (409).
            Touch::NotRunning => {
                let rec = self.status(student).await?;
                Err(LifecycleError::NotRunning { student: student.clone(), status: rec.status })
            }
        }
    }

    fn spec(&self, student: &StudentId, host_dir: std::path::PathBuf) -> ContainerSpec {
        let w = &self.settings.workspace;
        let labels = BTreeMap::from([
            (runtime::LABEL_MANAGED_BY.to_owned(), runtime::LABEL_MANAGED_BY_VALUE.to_owned()),
            (runtime::LABEL_STUDENT.to_owned(), student.to_string()),
            (runtime::LABEL_INSTANCE.to_owned(), self.settings.instance.to_string()),
        ]);
        ContainerSpec {
            student: student.clone(),
            name: runtime::container_name(&self.settings.instance, student),
            image: w.image.clone(),
            command: w.command.clone(),
            env: vec![format!("WORKSPACED_STUDENT={student}")],
            host_dir,
            mount_target: w.mount_target.clone(),
            container_port: w.container_port,
            user: format!("{}:{}", w.uid, w.gid),
            nano_cpus: (w.cpus * 1e9).round() as i64,
            memory_bytes: w.memory_bytes,
            memory_swap_bytes: w.memory_bytes,
            pids_limit: w.pids_limit,
            labels,
        }
    }
}
