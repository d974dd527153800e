//! Wiring: builds the store, runtime, lifecycle and HTTP server from settings. `Application::build` binds the
//! listener (port 0 in tests) so callers know the address before serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::culler::{self, Culler};
use crate::http::{self, AppState};
use crate::lifecycle::Lifecycle;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::swarm::{SwarmOptions, SwarmRuntime};
use crate::runtime::{Runtime, RuntimeKind};
use crate::store::Store;
use crate::supervise;

/// Bound on every call to the container engine (a stop adds its grace period).
pub const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long in-flight HTTP requests get to finish after shutdown is asked for.
pub const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// How long background loops get to finish after shutdown is asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

impl Application {
    /// Builds everything with the runtime the settings name (`runtime`: Docker or Swarm) and the wall clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let runtime: Arc<dyn Runtime> = match settings.runtime {
            RuntimeKind::Docker => {
                let runtime = DockerRuntime::connect_lazy(settings.instance.clone(), ENGINE_CALL_TIMEOUT)
                    .context("cannot set up the Docker client")?
                    .with_egress(settings.egress_rules);
                let runtime = Arc::new(runtime);
                // The network and its egress rules before the first start, without holding up the boot: an engine
                // that is not up yet gets them at the first start instead.
                let early = runtime.clone();
                tokio::spawn(async move {
                    if let Err(e) = early.prepare_network().await {
                        tracing::warn!(error = %e, "the workspaces' network is not ready yet; it is prepared at the first start");
                    }
                });
                runtime
            }
            RuntimeKind::Swarm => {
                let options = SwarmOptions {
                    constraints: settings.swarm_constraints.clone(),
                    spread: settings.swarm_spread.clone(),
                    cpu_reservation: settings.swarm_cpu_reservation,
                    stop_grace: settings.workspace.stop_grace,
                    start_wait: settings.workspace.start_timeout,
                };
                let runtime = SwarmRuntime::connect_lazy(settings.instance.clone(), ENGINE_CALL_TIMEOUT, options)
                    .context("cannot set up the Docker client")?
                    .with_egress(settings.egress_rules);
                let runtime = Arc::new(runtime);
                let early = runtime.clone();
                tokio::spawn(async move {
                    if let Err(e) = early.prepare_network().await {
                        tracing::warn!(error = %e, "the workspaces' swarm network is not ready yet; it is prepared at the first start");
                    }
                });
                runtime
            }
        };
        Self::build_with(settings, runtime, Arc::new(SystemClock)).await
    }

    /// Builds with a given runtime and clock (tests inject them).
    pub async fn build_with(
        settings: Settings,
        runtime: Arc<dyn Runtime>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url).await.with_context(|| {
            format!("cannot open the store at {}", crate::store::redacted_url(&settings.database_url))
        })?;
        Self::build_on(settings, store, runtime, clock).await
    }

    /// Builds on an open store (a test that writes events itself keeps a clone: the event stream's wake-ups are
    /// per store handle).
    pub async fn build_on(
        settings: Settings,
        store: Store,
        runtime: Arc<dyn Runtime>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let mut settings = settings;
        settings.listen = addr.to_string();
        // On PostgreSQL, replicas may share the database: each student's operations are serialized through it.
        let lifecycle = Arc::new(match store.backend() {
            crate::store::Backend::Postgres => {
                let locks = Arc::new(crate::lifecycle::SharedLocks::new(store.clone(), settings.instance.clone()));
                Lifecycle::with_locks(Arc::new(settings), store, runtime, clock, locks)
            }
            crate::store::Backend::Sqlite => Lifecycle::new(Arc::new(settings), store, runtime, clock),
        });
        let running = lifecycle.load_activity().await.context("cannot load running workspaces")?;
        tracing::info!(running, "loaded running workspaces");
        crate::metrics::handle();
        let state = Arc::new(AppState::build(lifecycle).context("cannot set up authentication")?);
        Ok(Self { listener, addr, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.state.lifecycle.clone()
    }

    /// Serves and runs the background loops (activity writer, culler, webhook) until `shutdown` resolves.
    /// Running workspaces are left running.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let lifecycle = self.state.lifecycle.clone();
        let settings = lifecycle.settings().clone();
        // Through the gate: a stalled mount must not keep the service from serving (it says so in `/readyz`).
        let checked = lifecycle.storage().run("the start-up check", None, |st, _| st.check_base()).await;
        if let Err(e) = checked {
            tracing::warn!(error = %e, "workspace base path is not usable yet; starts will fail until it is");
        }
        let token = self.state.shutdown.clone();
        // Settle what a crash left before anything else acts.
        let first = crate::reconciler::startup_pass(&lifecycle).await;
        let mut tasks = tokio::task::JoinSet::new();
        // Every loop is supervised (`supervise`): a failing or panicking pass is logged and counted and the loop goes
        // on; `/readyz` reports a loop without a finished pass for three of its intervals.
        let health = self.state.loops.clone();
        // On PostgreSQL several replicas may share the database: one of them, the lease holder, runs the singleton
        // loops (culler, reconciler, usage, webhook); the others stand by.
        let leadership = match lifecycle.store().backend() {
            crate::store::Backend::Postgres => crate::lease::Leadership::shared(settings.lease_ttl),
            crate::store::Backend::Sqlite => crate::lease::Leadership::solo(),
        };
        health.set_leadership(leadership.clone());
        tasks.spawn(crate::lease::run(
            lifecycle.store().clone(),
            leadership.clone(),
            lifecycle.clock().clone(),
            token.clone(),
        ));
        tasks.spawn(culler::run_activity_flusher(lifecycle.clone(), health.clone(), token.clone()));
        tasks.spawn(Culler::new(lifecycle.clone()).run(health.clone(), token.clone()));
        tasks.spawn(crate::reconciler::run(lifecycle.clone(), first, health.clone(), token.clone()));
        tasks.spawn(crate::usage::run_usage_loop(lifecycle.clone(), health.clone(), token.clone()));
        tasks.spawn(crate::usage::run_stats_sampler(lifecycle.clone(), health.clone(), token.clone()));
        if settings.notify.webhook_url.is_some() {
            let (store, notify, stop) = (lifecycle.store().clone(), settings.notify.clone(), token.clone());
            tasks.spawn(supervise::keep_running(health.clone(), "webhook", token.clone(), move || {
                let (store, notify) = (store.clone(), notify.clone());
                crate::lease::while_leading(leadership.clone(), stop.clone(), move |token| {
                    crate::notify::webhook::run(store.clone(), notify.clone(), token)
                })
            }));
        }

        tracing::info!(addr = %self.addr, base = %settings.base_path.display(), "workspaced listening");
        let stop = token.clone();
        let app = http::router(self.state);
        let server = http::serve::serve(self.listener, app, settings.header_read_timeout, async move {
            shutdown.await;
            stop.cancel();
        });
        // In-flight requests get a bounded time to finish; a start still waiting then is abandoned, and the next
        // start-up reconcile pass settles it (its container removed, its record `failed`).
        let drain = async {
            token.cancelled().await;
            tokio::time::sleep(HTTP_DRAIN).await;
            tracing::warn!("in-flight requests did not finish in time; abandoning them");
        };
        let served = tokio::select! {
            r = server => r,
            _ = drain => Ok(()),
        };
        token.cancel();
        // The loops notice the token at once; give a stuck one a bounded time, then leave it.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
        served?;
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down; running workspaces keep running");
}
