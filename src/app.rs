//! Wiring: builds the store, runtime, lifecycle and HTTP server from settings. `Application::build` binds the
//! listener (port 0 in tests) so callers know the address before serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::lifecycle::Lifecycle;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::Runtime;
use crate::store::Store;

/// Bound on every call to the container engine (a stop adds its grace period).
pub const ENGINE_CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

impl Application {
    /// Builds everything with the real Docker runtime and the wall clock.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let runtime = DockerRuntime::connect_lazy(settings.instance.clone(), ENGINE_CALL_TIMEOUT)
            .context("cannot set up the Docker client")?;
        Self::build_with(settings, Arc::new(runtime), Arc::new(SystemClock)).await
    }

    /// Builds with a given runtime and clock (tests inject them).
    pub async fn build_with(
        settings: Settings,
        runtime: Arc<dyn Runtime>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let store = Store::connect(&settings.database_url)
            .await
            .with_context(|| format!("cannot open the store at {}", settings.database_url))?;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let addr = listener.local_addr()?;
        let mut settings = settings;
        settings.listen = addr.to_string();
        let lifecycle = Arc::new(Lifecycle::new(Arc::new(settings), store, runtime, clock));
        let state = Arc::new(AppState { lifecycle });
        Ok(Self { listener, addr, state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        self.state.lifecycle.clone()
    }

    /// Serves until `shutdown` resolves. Running workspaces are left running.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let base = self.state.lifecycle.settings().base_path.clone();
        if let Err(e) = self.state.lifecycle.storage().check_base() {
            tracing::warn!(error = %e, "workspace base path is not usable yet; starts will fail until it is");
        }
        tracing::info!(addr = %self.addr, base = %base.display(), "workspaced listening");
        axum::serve(self.listener, http::router(self.state)).with_graceful_shutdown(shutdown).await?;
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
