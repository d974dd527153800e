//! The lifecycle: the only place that changes a workspace. Each student's operations run one at a time under that
//! student's lock; the store records the desired and reached state, the runtime is made to match it.
//! It never builds a container name, label or path from anything but a `StudentId`.

mod locks;
mod readiness;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

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
}

pub struct Lifecycle {
    settings: Arc<Settings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    storage: Storage,
    clock: Arc<dyn Clock>,
    locks: StudentLocks,
    activity: Arc<Activity>,
    probe: reqwest::Client,
}

impl Lifecycle {
    pub fn new(settings: Arc<Settings>, store: Store, runtime: Arc<dyn Runtime>, clock: Arc<dyn Clock>) -> Self {
        let w = &settings.workspace;
        let storage = Storage::new(settings.base_path.clone(), w.uid, w.gid);
        let probe = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http client");
        let activity = Arc::new(Activity::default());
        Self { settings, store, runtime, storage, clock, locks: StudentLocks::default(), activity, probe }
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
    /// record says `failed` with the reason.
    pub async fn start(&self, student: &StudentId) -> Result<WorkspaceRecord, LifecycleError> {
        let _guard = self.locks.lock(student).await;
        self.start_locked(student).await
    }

    async fn start_locked(&self, student: &StudentId) -> Result<WorkspaceRecord, LifecycleError> {
        let deadline = Instant::now() + self.settings.workspace.start_timeout;
        if let Some(rec) = self.store.get(student).await? {
            if rec.status == Status::Running {
                if let Some(info) = self.runtime.inspect(student).await? {
                    if info.running && Some(&info.id) == rec.container_id.as_ref() {
                        return Ok(rec);
                    }
                }
                tracing::warn!(student = %student, "record says running but its container is gone; starting anew");
            }
        }

        // Storage first: a bad base path must change nothing, not even the record.
        let storage = self.storage.clone();
        let s = student.clone();
        let host_dir =
            tokio::task::spawn_blocking(move || storage.ensure_student_dir(&s)).await.expect("storage task")?;

        let previous = self.store.get(student).await?;
        self.store.mark_starting(student, self.clock.now()).await?;
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
            Ok(Err(e)) => return Err(self.fail_start(student, e.to_string(), e.into()).await),
            Err(_) => {
                let e = self.timeout_error(student, "the container engine did not finish creating it".into());
                return Err(self.fail_start(student, e.to_string(), e).await);
            }
        };
        let Some(port) = info.host_port else {
            let e = LifecycleError::Runtime(RuntimeError::Engine("container has no published port".into()));
            return Err(self.fail_start(student, e.to_string(), e).await);
        };
        let path = &self.settings.workspace.readiness_path;
        if let Err(detail) = readiness::wait_ready(&self.probe, port, path, deadline).await {
            let e = self.timeout_error(student, detail);
            return Err(self.fail_start(student, e.to_string(), e).await);
        }

        let message = format!("Workspace running (ready in {} ms).", started.elapsed().as_millis());
        let event = NewEvent { kind: EventKind::Started, reason: None, message: &message };
        let now = self.clock.now();
        self.store.mark_running(student, &info.id, port, now, &event).await?;
        self.activity.register(student, now, None);
        crate::metrics::start_finished("ok", started.elapsed());
        tracing::info!(student = %student, container = %info.id, port, ms = started.elapsed().as_millis() as u64, "workspace ready");
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
    async fn fail_start(&self, student: &StudentId, message: String, err: LifecycleError) -> LifecycleError {
        tracing::warn!(student = %student, error = %message, "start failed; removing what was created");
        if let Err(e) = self.runtime.stop(student, std::time::Duration::ZERO).await {
            tracing::error!(student = %student, error = %e, "could not remove the container of a failed start");
        }
        crate::metrics::start_finished("error", std::time::Duration::ZERO);
        if let Err(e) = self.store.mark_failed(student, &message, self.clock.now()).await {
            tracing::error!(student = %student, error = %e, "could not record a failed start");
        }
        err
    }

    /// Stops the student's workspace for `reason`: the container is stopped and removed, the files stay.
    /// Stopping a workspace that is not running succeeds and changes nothing.
    pub async fn stop(&self, student: &StudentId, reason: StopReason) -> Result<WorkspaceRecord, LifecycleError> {
        let _guard = self.locks.lock(student).await;
        self.stop_locked(student, reason).await
    }

    /// [`Lifecycle::stop`] for a caller that already holds the student's lock.
    pub async fn stop_locked(
        &self,
        student: &StudentId,
        reason: StopReason,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let rec = self.status(student).await?;
        if matches!(rec.status, Status::Stopped | Status::Failed) {
            return Ok(rec);
        }
        // Activity that arrived since the last batch is still worth keeping in the record.
        if let Some(last) = self.activity.last(student) {
            self.store.touch_activity(student, last).await?;
        }
        self.store.mark_stopping(student, self.clock.now()).await?;
        self.runtime.stop(student, self.settings.workspace.stop_grace).await?;
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
