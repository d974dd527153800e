//! Starting a workspace: storage, admission, the container, the readiness wait, and the record of each step.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::{readiness, Lifecycle, LifecycleError, StartMode};
use crate::domain::{base_url, substitute, EventKind, IdeSecret, Status, StopReason, StudentId};
use crate::runtime::{self, ContainerInfo, ContainerSpec, RuntimeError};
use crate::store::{NewEvent, WorkspaceRecord};

impl Lifecycle {
    /// Starts the student's workspace and returns once its IDE answers the readiness path. Idempotent: a running
    /// workspace whose container is alive is returned as is. On failure no container is left behind and the
    /// record says `failed` with the reason. Runs in its own task, so a caller that goes away (a closed HTTP
    /// connection) never leaves a start half done.
    pub async fn start(self: &Arc<Self>, student: &StudentId) -> Result<WorkspaceRecord, LifecycleError> {
        self.start_with(student, StartMode::Wait).await
    }

    /// Like [`Lifecycle::start`]; with [`StartMode::Background`] it returns as soon as the start is queued or under
    /// way (the record then says `queued` or `starting`), and the start goes on in the background.
    pub async fn start_with(
        self: &Arc<Self>,
        student: &StudentId,
        mode: StartMode,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        self.start_in(student, mode, None).await
    }

    /// Like [`Lifecycle::start_with`], in `course` when one is given: a first start puts the workspace in it, a
    /// later one must name the same course while the workspace is busy (409 otherwise). Without a course the
    /// workspace's own applies. The course's image, command, limits and culling values apply at each start.
    pub async fn start_in(
        self: &Arc<Self>,
        student: &StudentId,
        mode: StartMode,
        course: Option<crate::domain::CourseId>,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let (accepted_tx, accepted_rx) = tokio::sync::oneshot::channel();
        let (lc, s) = (self.clone(), student.clone());
        let task = tokio::spawn(async move {
            let _guard = lc.locks.lock(&s).await;
            lc.start_locked(&s, course.as_ref(), Some(accepted_tx)).await
        });
        if mode == StartMode::Background && accepted_rx.await.is_ok() {
            return self.status(student).await;
        }
        task.await.map_err(|e| LifecycleError::Panicked(e.to_string()))?
    }

    async fn start_locked(
        &self,
        student: &StudentId,
        course: Option<&crate::domain::CourseId>,
        accepted: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let previous = self.store.get(student).await?;
        let profile = self.start_profile(student, previous.as_ref(), course).await?;
        if let Some(rec) = &previous {
            if rec.status == Status::Running {
                if let Some(info) = self.runtime.inspect(student).await? {
                    if info.running && Some(&info.id) == rec.container_id.as_ref() {
                        return Ok(rec.clone());
                    }
                }
                // The container went away on its own: record that, so the start below begins from a stopped workspace.
                self.mark_lost(student, None).await?;
            }
        }
        // Checks that change nothing when they fail: engine, storage, capacity.
        self.runtime.ping().await?;
        // A stalled mount fails the start within `storage_timeout` (and frees the student's lock).
        let s = student.clone();
        let with_state = profile.workspace.ide_state_path.is_some();
        let host_dir = self
            .storage
            .run("preparing the student's folders", None, move |st, abandoned| {
                let dir = st.ensure_student_dir_unless(&s, abandoned)?;
                if with_state {
                    st.ensure_ide_state_dir_unless(&s, crate::storage::IDE_STATE_SEED, abandoned)?;
                }
                Ok(dir)
            })
            .await?;
        self.check_hard_quota(student).await?;
        if let Some(template) = &profile.template {
            self.copy_starter_files(student, &host_dir, template).await?;
        }

        // Admission: a permit of this process and a start slot shared by every replica, at once when both are
        // free; else a place in this process's queue (the record says `queued`) until both are.
        let n = self.settings.max_concurrent_starts;
        let permit = self.admission.try_admit();
        let slot = match permit {
            Some(_) => self.locks.try_start_slot(n).await,
            None => None,
        };
        let ticket = match (&permit, &slot) {
            (Some(_), Some(_)) => None,
            _ => match self.admission.enqueue(student) {
                Some(ticket) => Some(ticket),
                None => {
                    let wait = self.admission.estimate(self.admission.queued());
                    return Err(LifecycleError::QueueFull { retry_after_secs: wait.as_secs().max(1) });
                }
            },
        };
        self.claim_place(student, ticket.is_some()).await?;
        self.record_start_profile(student, &profile).await?;
        let Some(ticket) = ticket else {
            let result = self.start_admitted(student, previous, host_dir, &profile.workspace, accepted).await;
            drop((permit, slot));
            return result;
        };

        crate::metrics::queue_length(self.admission.queued());
        if let Some(tx) = accepted {
            let _ = tx.send(());
        }
        let held = self.wait_in_queue(student, &ticket, permit, slot).await?;
        drop(ticket);
        crate::metrics::queue_length(self.admission.queued());
        self.store.mark_starting(student, self.clock.now()).await?;
        let result = self.start_admitted(student, previous, host_dir, &profile.workspace, None).await;
        drop(held);
        result
    }

    /// Records the start `starting`, or `queued` when it waits. With `max_running`, a total over every replica, it
    /// counts and claims the place under the installation-wide capacity lock, so two replicas never take the last one.
    async fn claim_place(&self, student: &StudentId, queued: bool) -> Result<(), LifecycleError> {
        let _capacity = match self.settings.max_running {
            Some(cap) => {
                let guard = self.locks.capacity().await;
                if self.store.count_busy_except(student).await? >= cap {
                    return Err(LifecycleError::CapacityReached { cap, retry_after_secs: 60 });
                }
                Some(guard)
            }
            None => None,
        };
        if queued {
            self.store.mark_queued(student, self.clock.now()).await?;
        } else {
            self.store.mark_starting(student, self.clock.now()).await?;
        }
        Ok(())
    }

    /// Waits in the queue for whichever of this process's permit and a shared start slot the start does not hold yet;
    /// a stop calls the wait off.
    async fn wait_in_queue(
        &self,
        student: &StudentId,
        ticket: &super::admission::Ticket<'_>,
        mut permit: Option<tokio::sync::OwnedSemaphorePermit>,
        mut slot: Option<super::LockGuard>,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, super::LockGuard), LifecycleError> {
        if permit.is_none() {
            permit = self.admission.admit(ticket).await;
        }
        let Some(permit) = permit else { return Err(self.start_called_off(student)) };
        let mut pause = std::time::Duration::from_millis(20);
        loop {
            if let Some(slot) = slot.take() {
                return Ok((permit, slot));
            }
            slot = self.locks.try_start_slot(self.settings.max_concurrent_starts).await;
            if slot.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = ticket.cancelled() => return Err(self.start_called_off(student)),
                }
                pause = (pause * 2).min(std::time::Duration::from_millis(500));
            }
        }
    }

    /// A stop called off this queued start while it waited; the stop, next under the lock, records it.
    fn start_called_off(&self, student: &StudentId) -> LifecycleError {
        crate::metrics::queue_length(self.admission.queued());
        tracing::info!(student = %student, "queued start called off by a stop");
        LifecycleError::StartCancelled(student.clone())
    }

    /// The start itself, recorded `starting`, holding the student's lock, an admission permit and a start slot.
    async fn start_admitted(
        &self,
        student: &StudentId,
        previous: Option<WorkspaceRecord>,
        host_dir: std::path::PathBuf,
        w: &crate::config::WorkspaceSettings,
        accepted: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let deadline = Instant::now() + w.start_timeout;
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

        let spec = self.spec(student, host_dir, w);
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
        let host = match upstream_host(&info) {
            Ok(host) => host,
            Err(e) => return Err(self.fail_start(student, started, e.to_string(), e.into()).await),
        };
        // The container that runs may be one that was already running (left by a crash): its secret is the one the
        // IDE checks, whatever the spec said.
        let secret = info.secret.clone();
        if spec.secret.is_some() && secret.is_none() {
            tracing::warn!(student = %student, "the running container carries no IDE secret; proxying without one");
        }
        // The settings this start used (`spec` read the same): in full-path mode the IDE answers under `/w/<id>`.
        let full_path = w.proxy_path.is_full();
        let path = match full_path {
            true => format!("/w/{student}{}", w.readiness_path),
            false => w.readiness_path.clone(),
        };
        let upstream = host.as_deref().unwrap_or(crate::domain::LOOPBACK).to_owned();
        let probe = readiness::Probe { host: &upstream, port, path: &path, auth: &w.ide_auth, secret: secret.as_ref() };
        if let Err(detail) = readiness::wait_ready(&self.probe, &probe, deadline).await {
            let e = self.timeout_error(student, detail);
            return Err(self.fail_start(student, started, e.to_string(), e).await);
        }

        let took = started.elapsed();
        let message = format!("Workspace running (ready in {} ms).", took.as_millis());
        let event = NewEvent { kind: EventKind::Started, reason: None, message: &message };
        let now = self.clock.now();
        let route = crate::store::Route { host, port, secret, full_path, auth: Some(w.ide_auth.clone()) };
        self.store.mark_running(student, &info.id, &route, now, &event).await?;
        self.activity.register(student, now, None);
        self.admission.record_start(took);
        crate::metrics::start_finished("ok", took);
        tracing::info!(
            student = %student, container = %info.id, host = %upstream, port, ms = took.as_millis() as u64,
            "workspace ready"
        );
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

    fn spec(
        &self,
        student: &StudentId,
        host_dir: std::path::PathBuf,
        w: &crate::config::WorkspaceSettings,
    ) -> ContainerSpec {
        let labels = BTreeMap::from([
            (runtime::LABEL_MANAGED_BY.to_owned(), runtime::LABEL_MANAGED_BY_VALUE.to_owned()),
            (runtime::LABEL_STUDENT.to_owned(), student.to_string()),
            (runtime::LABEL_INSTANCE.to_owned(), self.settings.instance.to_string()),
        ]);
        ContainerSpec {
            student: student.clone(),
            name: runtime::container_name(&self.settings.instance, student),
            image: w.image.clone(),
            // `{student_id}` and `{base_url}` filled in from the id alone.
            command: w.command.iter().map(|arg| substitute(arg, student)).collect(),
            env: vec![format!("WORKSPACED_STUDENT={student}"), format!("WORKSPACED_BASE_URL={}", base_url(student))],
            host_dir,
            mount_target: w.mount_target.clone(),
            // Prepared with the student's folder (`ensure_ide_state_dir_unless`) before the start went on.
            state_dir: w.ide_state_path.clone().map(|target| (self.storage.ide_state_dir(student), target)),
            container_port: w.container_port,
            user: format!("{}:{}", w.uid, w.gid),
            nano_cpus: (w.cpus * 1e9).round() as i64,
            memory_bytes: w.memory_bytes,
            memory_swap_bytes: w.memory_bytes,
            pids_limit: w.pids_limit,
            labels,
            hardening: runtime::Hardening {
                cap_drop_all: w.cap_drop_all,
                nofile: w.nofile,
                tmp_size: w.tmp_size,
                read_only_root: w.read_only_root,
            },
            // A new random secret for every start; only the store and the container hold it.
            secret: w.secret_env().map(|name| runtime::SecretEnv {
                name: name.to_owned(),
                value: IdeSecret::from_random(rand::random()),
            }),
        }
    }
}

/// The host the engine says the container's port is published on, checked (`domain::parse_upstream_host`) before
/// anything connects to it or stores it: `None` for this machine's loopback. An address that fails the check is the
/// engine's error (`runtime_error`); the message never repeats it.
pub(super) fn upstream_host(info: &ContainerInfo) -> Result<Option<String>, RuntimeError> {
    let Some(raw) = info.node_addr.as_deref() else { return Ok(None) };
    crate::domain::parse_upstream_host(raw).map(Some).map_err(|e| {
        // Escaped and cut: whatever a node advertised reaches the log only as data.
        let shown: String = raw.chars().take(crate::domain::MAX_HOST_LEN + 1).collect();
        tracing::warn!(container = %info.id, addr = %shown.escape_debug(), error = %e, "unusable node address");
        RuntimeError::Engine(format!("the container's node: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::Settings;
    use crate::culler::testing::FakeRuntime;
    use crate::store::testing::{store, t};

    /// An IDE on 127.0.0.1 that answers 200 to everything, and its port.
    async fn ready_ide() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                });
            }
        });
        port
    }

    fn running(student: &StudentId, port: u16, node_addr: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("svc-{student}"),
            name: format!("ws-{student}"),
            student: student.clone(),
            running: true,
            state: "running".into(),
            host_port: Some(port),
            node_addr: Some(node_addr.to_owned()),
            secret: None,
        }
    }

    /// A start on a node named by the engine is probed there and routed there; the reconciler moves the route when
    /// the engine names the node otherwise; an address that fails the check fails the start (`runtime_error`),
    /// leaves no container and no route. On both stores (PostgreSQL with `WORKSPACED_TEST_POSTGRES`).
    #[tokio::test]
    async fn a_start_is_probed_and_routed_at_the_node_the_engine_names_and_a_bad_address_is_refused() {
        let (store, dir) = store().await;
        let settings = Settings { base_path: dir.path().to_path_buf(), ..Default::default() };
        let runtime = Arc::new(FakeRuntime::default());
        let clock = Arc::new(ManualClock::new(t(0)));
        let lc = Arc::new(Lifecycle::new(Arc::new(settings), store.clone(), runtime.clone(), clock));
        let port = ready_ide().await;

        let ada = StudentId::parse("ada").unwrap();
        *runtime.serving.lock().unwrap() = Some(running(&ada, port, "LocalHost"));
        let rec = lc.start(&ada).await.expect("the IDE answers on localhost");
        assert_eq!(
            (rec.status, rec.host_addr.as_deref(), rec.host_port),
            (Status::Running, Some("localhost"), Some(port))
        );
        let route = store.route(&ada).await.unwrap().expect("a route");
        assert_eq!((route.upstream_host(), route.port), ("localhost", port));

        // The engine now names the node by its address (a record from before hosts were kept is fixed the same way).
        *runtime.serving.lock().unwrap() = Some(running(&ada, port, "127.0.0.1"));
        lc.reconcile_once().await.unwrap();
        assert_eq!(store.route(&ada).await.unwrap().unwrap().host.as_deref(), Some("127.0.0.1"));
        // An address that fails the check leaves the route as it was.
        *runtime.serving.lock().unwrap() = Some(running(&ada, port, "0.0.0.0"));
        lc.reconcile_once().await.unwrap();
        assert_eq!(store.route(&ada).await.unwrap().unwrap().host.as_deref(), Some("127.0.0.1"));

        let bob = StudentId::parse("bob").unwrap();
        *runtime.serving.lock().unwrap() = Some(running(&bob, port, "169.254.169.254"));
        let e = lc.start(&bob).await.expect_err("the metadata service is no node");
        assert!(matches!(e, LifecycleError::Runtime(RuntimeError::Engine(_))), "{e}");
        assert!(!e.to_string().contains("169.254"), "the address is not repeated: {e}");
        let rec = store.get(&bob).await.unwrap().unwrap();
        assert_eq!((rec.status, rec.host_addr, rec.host_port), (Status::Failed, None, None));
        assert_eq!(store.route(&bob).await.unwrap(), None);
        assert!(runtime.stopped.lock().unwrap().contains(&bob), "the container of the failed start is removed");
    }
}
