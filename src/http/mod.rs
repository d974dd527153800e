//! The HTTP surface: REST API (JSON, one error shape, keys checked by `auth`), health and readiness, the IDE side
//! (`ide`: launch links, the student's own routes, the proxy), and the embedded pages. It parses input at the edge and
//! delegates to the lifecycle; it reaches the engine only through the runtime trait, for readiness (`ping`) and the
//! dashboard's stats (`stats`).

pub mod auth;
mod error;
pub mod events;
pub mod export;
mod extract;
pub mod ide;
pub mod migrate;
pub mod pages;
pub mod sessions;
mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;
pub use extract::ApiJson;
pub use workspaces::WorkspaceView;

use crate::lifecycle::Lifecycle;

pub struct AppState {
    pub lifecycle: Arc<Lifecycle>,
    /// Cancelled when the service shuts down: endless responses (event streams) end then.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Signs launch links and session cookies.
    pub signer: crate::auth::Signer,
    /// Checks API keys (with a short in-memory cache).
    pub keys: crate::auth::KeyVerifier,
    /// Each student's current session generation (with a short in-memory cache): revoked sessions fail.
    pub sessions: crate::auth::SessionGenerations,
    /// Forwards requests to the IDEs.
    pub proxy: crate::proxy::Proxy,
    /// When each background loop last finished a pass (for `/readyz`).
    pub loops: Arc<crate::supervise::LoopHealth>,
}

impl AppState {
    /// Loads the signing key (creating its file on first run) and sets up the proxy.
    pub fn build(lifecycle: Arc<Lifecycle>) -> anyhow::Result<Self> {
        let signer = crate::auth::Signer::load(lifecycle.settings())?;
        let proxy = crate::proxy::Proxy::new(lifecycle.settings().proxy.clone());
        let loops = Arc::new(crate::supervise::LoopHealth::new(lifecycle.clock().clone()));
        Ok(Self {
            loops,
            lifecycle,
            shutdown: tokio_util::sync::CancellationToken::new(),
            signer,
            keys: Default::default(),
            sessions: Default::default(),
            proxy,
        })
    }
}

/// Every route and the role it needs; `tests/api/auth.rs` walks this list.
pub fn router(state: Arc<AppState>) -> Router {
    use axum::middleware::from_fn_with_state;
    // The LMS backend (and operators).
    let lms = Router::new()
        .route("/api/events", get(events::events))
        .route("/api/workspaces", get(workspaces::list))
        .route("/api/workspaces/{id}", get(workspaces::get))
        .route("/api/workspaces/{id}/start", post(workspaces::start))
        .route("/api/workspaces/{id}/stop", post(workspaces::stop))
        .route("/api/workspaces/{id}/policy", axum::routing::put(workspaces::set_policy))
        .route("/api/workspaces/{id}/launch", post(ide::create_launch))
        .route("/api/workspaces/{id}/token", post(ide::create_student_token))
        .route_layer(from_fn_with_state(state.clone(), auth::require_lms));
    // Operators only: data leaves the service, or the service itself is inspected.
    let admin = Router::new()
        .route("/api/workspaces/{id}/export", get(export::export_handler))
        .route("/api/admin/migrate", post(migrate::migrate_handler))
        .route("/metrics", get(metrics))
        .route("/api/admin/stats", get(admin_stats))
        .route("/api/admin/sessions/revoke", post(sessions::revoke))
        .route_layer(from_fn_with_state(state.clone(), auth::require_admin));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // Static pages; their data comes from the API with a key.
        .route("/admin", get(|| async { axum::response::Html(pages::ADMIN_PAGE) }))
        .route("/sdk/workspaced.js", get(sdk_script))
        // A key, or the student's own session (checked in the handler).
        .route("/api/workspaces/heartbeat", post(workspaces::heartbeat))
        .merge(lms)
        .merge(admin)
        .fallback(not_found)
        // Runs before the routes: `/w/{id}/...` (and host mode) goes to the IDE side.
        .layer(from_fn_with_state(state.clone(), ide::dispatch))
        .layer(from_fn_with_state(state.clone(), ide::cors))
        // The span names the method and path only: a query may hold a launch token, and neither reaches a log.
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
            tracing::debug_span!("request", method = %req.method(), path = ?req.uri().path())
        }))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    // `{id}` never matches an empty segment; say what is wrong instead of "no such route".
    if uri.path().starts_with("/api/workspaces//") {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", "invalid student id: must not be empty");
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// CPU and memory of every running workspace, from the engine (about a second: the engine samples twice).
async fn admin_stats(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    use futures_util::StreamExt;
    let lc = &state.lifecycle;
    let running = lc.activity().running();
    let stats: serde_json::Map<String, serde_json::Value> = futures_util::stream::iter(running)
        .map(|id| async move {
            let s = lc.runtime().stats(&id).await;
            (id, s)
        })
        .buffer_unordered(8)
        .filter_map(|(id, s)| async move {
            match s {
                Ok(Some(s)) => Some((id.to_string(), serde_json::to_value(s).ok()?)),
                Ok(None) => None,
                Err(e) => {
                    tracing::debug!(student = %id, error = %e, "no stats");
                    None
                }
            }
        })
        .collect()
        .await;
    Ok(Json(json!({ "stats": stats })))
}

/// The JS SDK for LMS pages (docs/sdk.md).
async fn sdk_script() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
            (axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        pages::SDK_SCRIPT,
    )
}

/// Prometheus text format.
async fn metrics() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render())
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when the database and the container engine answer and every background loop finished a pass recently.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let db = state.lifecycle.store().ping().await.map_err(|e| e.to_string());
    let engine = match tokio::time::timeout(Duration::from_secs(3), state.lifecycle.runtime().ping()).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    };
    let loops = state.loops.report();
    let loops_ok = loops.values().all(|s| *s == crate::supervise::LoopStatus::Ok);
    let loops: serde_json::Map<String, serde_json::Value> =
        loops.into_iter().map(|(name, status)| (name.to_owned(), status.to_string().into())).collect();
    let ok = db.is_ok() && engine.is_ok() && loops_ok;
    let word = |r: &Result<(), String>| r.as_ref().err().cloned().unwrap_or_else(|| "ok".to_owned());
    let body = Json(json!({ "ready": ok, "database": word(&db), "docker": word(&engine), "loops": loops }));
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, body)
}
