//! The culler: a thin driver. Every `cull.interval` it polls the IDEs of running workspaces for an open tab and
//! runs the lifecycle's sweep (`Lifecycle::cull_sweep`: the pure decision, the warning, the re-checked stop), and
//! every `activity_flush_interval` it has the lifecycle write the activity gathered in memory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::domain::StudentId;
use crate::lifecycle::Lifecycle;
use crate::store::RunningPort;
use crate::supervise::{run_pass, supervise, LoopHealth};

pub use crate::lifecycle::SweepReport;

pub struct Culler {
    lifecycle: Arc<Lifecycle>,
    probe: reqwest::Client,
}

/// code-server's `/healthz` answer.
#[derive(serde::Deserialize)]
struct Health {
    status: String,
}

impl Culler {
    pub fn new(lifecycle: Arc<Lifecycle>) -> Self {
        // No pooling: a kept-alive connection from us would itself keep code-server "alive".
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        Self { lifecycle, probe }
    }

    /// Sweeps every `cull.interval` until cancelled, each sweep supervised: a failed or panicking sweep is logged
    /// and counted, and the next one runs on time.
    pub async fn run(self, health: Arc<LoopHealth>, shutdown: CancellationToken) {
        let interval = self.lifecycle.settings().cull.interval;
        let this = &self;
        crate::supervise::supervise_singleton(health, "culler", interval, shutdown, move || async move {
            // IDE polls run beside the sweep, not before it: 500 code-servers answering slowly must not delay the
            // decisions. The sweep sees the previous round's polls, fine for a signal that moves once a minute.
            let (_, swept) = tokio::join!(this.poll_ides_now(), this.sweep());
            swept.map(|_| ()).map_err(anyhow::Error::from)
        })
        .await;
    }

    /// One sweep: warn and cull (see `Lifecycle::cull_sweep`).
    pub async fn sweep(&self) -> Result<SweepReport, crate::lifecycle::LifecycleError> {
        self.lifecycle.cull_sweep().await
    }

    /// Asks each running IDE whether a tab is open (code-server's `/healthz` says `alive` while a connection is
    /// open or a request came within its 60 s heartbeat). Recorded apart from activity; it only counts as activity
    /// when `open_tab_keeps_alive` is set. IDEs without such an endpoint are simply never "connected".
    /// Polls the IDE of every running workspace once (code-server's `lastHeartbeat`: an open tab).
    pub async fn poll_ides_now(&self) {
        match self.lifecycle.running_ports().await {
            Ok(running) => self.poll_ides(&running).await,
            Err(e) => tracing::warn!(error = %e, "cannot list running workspaces for IDE polls"),
        }
    }

    async fn poll_ides(&self, running: &[RunningPort]) {
        let lc = &self.lifecycle;
        let path = lc.settings().workspace.readiness_path.clone();
        let mut probes = Vec::with_capacity(running.len());
        for r in running {
            let Some(port) = r.port else { continue };
            // The route's host (a Swarm task's node, checked when it was stored), or this machine's loopback.
            let host = r.host.as_deref().unwrap_or(crate::domain::LOOPBACK);
            let url = format!("http://{}{path}", crate::domain::authority(host, port));
            let (id, probe) = (r.student.clone(), self.probe.clone());
            probes.push(async move {
                let alive = match probe.get(&url).header(reqwest::header::CONNECTION, "close").send().await {
                    Ok(r) => r.json::<Health>().await.is_ok_and(|h| h.status == "alive"),
                    Err(_) => false,
                };
                (id, alive)
            });
        }
        let results: Vec<(StudentId, bool)> = futures_util::stream::iter(probes).buffer_unordered(32).collect().await;
        for (id, _) in results.into_iter().filter(|(_, alive)| *alive) {
            lc.ide_seen(&id);
        }
    }
}

/// Writes in-memory activity to the store every `activity_flush_interval` until cancelled, then once more.
pub async fn run_activity_flusher(lifecycle: Arc<Lifecycle>, health: Arc<LoopHealth>, shutdown: CancellationToken) {
    let interval = lifecycle.settings().cull.activity_flush_interval;
    let lc = &lifecycle;
    let flush = move || async move { lc.flush_activity().await.map(drop).context("cannot write activity") };
    supervise(health.clone(), "activity_flusher", interval, shutdown, flush).await;
    // Heartbeats since the last tick would otherwise be lost with the process.
    run_pass(&health, "activity_flusher", flush()).await;
}

/// A runtime that runs nothing, for the lifecycle's tests of the sweep and the engine sample: every container it
/// is asked about "runs", a stop is recorded, and each student's stats are fixed numbers. With `serving` set, a
/// start of that student "runs" the container it describes (an IDE the test serves on a port of its own).
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;
    use std::time::Duration;

    use crate::domain::StudentId;
    use crate::runtime::{ContainerInfo, ContainerSpec, ContainerStats, Runtime, RuntimeError};

    #[derive(Default)]
    pub struct FakeRuntime {
        pub stopped: Mutex<Vec<StudentId>>,
        pub serving: Mutex<Option<ContainerInfo>>,
    }

    impl FakeRuntime {
        fn served(&self, student: &StudentId) -> Option<ContainerInfo> {
            self.serving.lock().unwrap().clone().filter(|c| &c.student == student)
        }
    }

    #[async_trait::async_trait]
    impl Runtime for FakeRuntime {
        async fn ping(&self) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn ensure_running(&self, spec: &ContainerSpec) -> Result<ContainerInfo, RuntimeError> {
            self.served(&spec.student).ok_or_else(|| RuntimeError::Engine("the fake runtime starts nothing".into()))
        }
        async fn stop(&self, student: &StudentId, _grace: Duration) -> Result<(), RuntimeError> {
            self.stopped.lock().unwrap().push(student.clone());
            Ok(())
        }
        async fn remove_by_id(&self, _container_id: &str, _grace: Duration) -> Result<(), RuntimeError> {
            Ok(())
        }
        async fn inspect(&self, student: &StudentId) -> Result<Option<ContainerInfo>, RuntimeError> {
            Ok(self.served(student))
        }
        async fn list_owned(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
            Ok(self.serving.lock().unwrap().clone().into_iter().collect())
        }
        async fn stats(&self, student: &StudentId) -> Result<Option<ContainerStats>, RuntimeError> {
            let pids = student.as_str().len() as u64;
            Ok(Some(ContainerStats { cpu_percent: 1.5, memory_bytes: 1 << 20, memory_limit_bytes: 1 << 30, pids }))
        }
    }
}
