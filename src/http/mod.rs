//! The HTTP surface: REST API (JSON, one error shape, keys checked by `auth`), health and readiness, the IDE side
//! (`ide`: launch links, the student's own routes, the proxy), and the embedded pages. It parses input at the edge and
//! delegates to the lifecycle; it reaches the engine only through the runtime trait, for readiness (`ping`) and the
//! dashboard's stats (`stats`).

pub mod auth;
mod courses;
mod coursework;
mod erase;
mod error;
pub mod events;
pub mod export;
mod extract;
pub mod ide;
pub mod limits;
pub mod lti;
pub mod migrate;
pub mod openapi;
pub mod pages;
pub mod serve;
pub mod sessions;
mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};

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
    /// Open proxied exchanges per student.
    pub ide_connections: Arc<limits::ConnectionLimits>,
    /// When each background loop last finished a pass (for `/readyz`).
    pub loops: Arc<crate::supervise::LoopHealth>,
    /// LTI: the platforms' key sets and the tool's keys.
    pub lti: lti::LtiState,
    /// The registered LTI platforms' origins (for `frame-ancestors`) and when they were read.
    pub lti_origins: std::sync::Mutex<(Option<std::time::Instant>, Vec<String>)>,
}

impl AppState {
    /// Loads the signing key (creating its file on first run) and sets up the proxy.
    pub fn build(lifecycle: Arc<Lifecycle>) -> anyhow::Result<Self> {
        let signer = crate::auth::Signer::load(lifecycle.settings())?;
        let proxy = crate::proxy::Proxy::new(lifecycle.settings().proxy.clone(), lifecycle.cookie_jar());
        let loops = Arc::new(crate::supervise::LoopHealth::new(lifecycle.clock().clone()));
        let ide_connections = limits::ConnectionLimits::new(lifecycle.settings().proxy.max_connections_per_student);
        Ok(Self {
            loops,
            lifecycle,
            shutdown: tokio_util::sync::CancellationToken::new(),
            signer,
            keys: Default::default(),
            sessions: Default::default(),
            proxy,
            ide_connections,
            lti: Default::default(),
            lti_origins: Default::default(),
        })
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credential: health, readiness, the static pages (their data comes from the API with a key).
    Open,
    /// A key (LMS or admin), or the student's own session or student token, checked in the handler.
    KeyOrSession,
    /// The LMS backend (and operators).
    Lms,
    /// Operators only: data leaves the service, or the service itself is inspected.
    Admin,
}

/// One API route as `route_table` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: axum::http::Method,
    pub path: &'static str,
    pub access: Access,
}

/// Every route, the access it needs and its handler: the one list. The router is built from it, and
/// `tests/api/auth.rs` walks it (through [`route_table`]). The IDE side (`/w/{id}/...`) is not here: `ide::dispatch`
/// takes it before routing.
fn routes() -> Vec<(Route, MethodRouter<Arc<AppState>>)> {
    use axum::http::Method as M;
    use Access::*;
    let r = |method: M, path: &'static str, access: Access, handler| (Route { method, path, access }, handler);
    vec![
        r(M::GET, "/healthz", Open, get(healthz)),
        r(M::GET, "/readyz", Open, get(readyz)),
        r(M::GET, "/admin", Open, get(admin_page)),
        r(M::GET, "/sdk/workspaced.js", Open, get(sdk_script)),
        r(M::GET, "/api/openapi.json", Open, get(openapi::openapi_json)),
        r(M::POST, "/api/workspaces/heartbeat", KeyOrSession, post(workspaces::heartbeat)),
        r(M::GET, "/api/events", Lms, get(events::events)),
        r(M::GET, "/api/workspaces", Lms, get(workspaces::list)),
        r(M::GET, "/api/workspaces/{id}", Lms, get(workspaces::get)),
        r(M::POST, "/api/workspaces/{id}/start", Lms, post(workspaces::start)),
        r(M::POST, "/api/workspaces/{id}/stop", Lms, post(workspaces::stop)),
        r(M::PUT, "/api/workspaces/{id}/policy", Lms, put(workspaces::set_policy)),
        r(M::POST, "/api/workspaces/{id}/launch", Lms, post(ide::create_launch)),
        r(M::POST, "/api/workspaces/{id}/token", Lms, post(ide::create_student_token)),
        r(M::GET, "/api/workspaces/{id}/export", Admin, get(export::export_handler)),
        r(M::POST, "/api/admin/migrate", Admin, post(migrate::migrate_handler)),
        r(M::GET, "/metrics", Admin, get(metrics)),
        r(M::GET, "/api/admin/stats", Admin, get(admin_stats)),
        r(M::POST, "/api/admin/sessions/revoke", Admin, post(sessions::revoke)),
        r(M::DELETE, "/api/admin/workspaces/{id}", Admin, delete(erase::delete)),
        r(M::GET, "/api/courses", Lms, get(courses::list_courses)),
        r(M::GET, "/api/courses/{course}", Lms, get(courses::get_course)),
        r(M::PUT, "/api/courses/{course}", Lms, put(courses::put_course)),
        r(M::DELETE, "/api/courses/{course}", Lms, delete(courses::delete_course)),
        r(M::POST, "/api/courses/{course}/distribute", Lms, post(coursework::distribute)),
        r(M::GET, "/api/courses/{course}/collect", Lms, get(coursework::collect_handler)),
        r(M::GET, "/api/lti/platforms", Admin, get(lti::list_platforms)),
        r(M::POST, "/api/lti/platforms", Admin, post(lti::add_platform)),
        r(M::DELETE, "/api/lti/platforms/{platform}", Admin, delete(lti::remove_platform)),
        r(M::GET, "/api/lti/info", Admin, get(lti::info)),
    ]
}

/// Every API route and the access it needs, from the same list the router is built from.
pub fn route_table() -> Vec<Route> {
    routes().into_iter().map(|(route, _)| route).collect()
}

pub fn router(state: Arc<AppState>) -> Router {
    use axum::middleware::from_fn_with_state;
    // A static path such as `/api/workspaces/heartbeat` also has the shape of `/api/workspaces/{id}`, and the router
    // prefers it: without more, GET on it would be 405 and a student called `heartbeat` unreadable. The methods the
    // static route lacks go to a router without it, where the path is an id like any other.
    let table = route_table();
    let shadowing: Vec<&str> = table
        .iter()
        .filter(|s| {
            !s.path.contains(PARAM) && table.iter().any(|p| p.path.contains(PARAM) && same_shape(p.path, s.path))
        })
        .map(|r| r.path)
        .collect();
    let by_id = api_routes(&state, routes().into_iter().filter(|(r, _)| !shadowing.contains(&r.path)))
        .fallback(not_found)
        .with_state(state.clone());
    let all = routes().into_iter().map(|(route, handler)| {
        let handler = if shadowing.contains(&route.path) { handler.fallback_service(by_id.clone()) } else { handler };
        (route, handler)
    });
    api_routes(&state, all)
        .merge(lti::router())
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

/// The routes, each behind the key check its access needs.
fn api_routes(
    state: &Arc<AppState>,
    routes: impl IntoIterator<Item = (Route, MethodRouter<Arc<AppState>>)>,
) -> Router<Arc<AppState>> {
    use axum::middleware::from_fn_with_state;
    let (mut open, mut lms, mut admin) = (Router::new(), Router::new(), Router::new());
    for (route, handler) in routes {
        match route.access {
            Access::Open | Access::KeyOrSession => open = open.route(route.path, handler),
            Access::Lms => lms = lms.route(route.path, handler),
            Access::Admin => admin = admin.route(route.path, handler),
        }
    }
    open.merge(lms.route_layer(from_fn_with_state(state.clone(), auth::require_lms)))
        .merge(admin.route_layer(from_fn_with_state(state.clone(), auth::require_admin)))
}

/// How a path parameter starts (`{id}`); a constant, as tests/architecture.rs measures functions by counting braces.
const PARAM: char = '{';

/// Whether the concrete `path` has the shape of `pattern`: as many segments, equal except where `pattern` has a
/// `{param}`.
fn same_shape(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len() && p.iter().zip(&q).all(|(a, b)| a == b || (a.starts_with(PARAM) && !b.is_empty()))
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    // `{id}` never matches an empty segment; say what is wrong instead of "no such route".
    if uri.path().starts_with("/api/workspaces//") {
        return ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", "invalid student id: must not be empty");
    }
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// CPU and memory of every running workspace on record, from the latest background sample (`usage`): no engine
/// call per request. Asking keeps the sampler going for a while; the answer says when its sample was taken.
#[utoipa::path(get, path = "/api/admin/stats", tag = "admin",
    responses((status = 200, description = "The latest sample: one entry per running workspace the engine gave numbers for, and when it was taken", body = crate::api::StatsView)))]
async fn admin_stats(State(state): State<Arc<AppState>>) -> Json<crate::api::StatsView> {
    let now = state.lifecycle.clock().now();
    let sample = state.lifecycle.usage().engine_sample(now);
    // A number JSON cannot hold (NaN) would be written as null: such a workspace is left out, like one without numbers.
    let stats = sample
        .iter()
        .flat_map(|s| s.stats.iter())
        .filter(|(_, s)| s.cpu_percent.is_finite())
        .map(|(id, s)| (id.to_string(), s.clone()))
        .collect();
    let sampled_at = sample.as_ref().map(|s| s.sampled_at);
    let age_seconds = sampled_at.map(|at| (now - at).num_seconds().max(0));
    Json(crate::api::StatsView { sampled_at, age_seconds, stats })
}

/// The admin dashboard: a static page; its data comes from the API with the key the operator pastes.
#[utoipa::path(get, path = "/admin", tag = "service",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
async fn admin_page() -> axum::response::Html<&'static str> {
    axum::response::Html(pages::ADMIN_PAGE)
}

/// The JS SDK for LMS pages (docs/sdk.md).
#[utoipa::path(get, path = "/sdk/workspaced.js", tag = "service",
    responses((status = 200, description = "The SDK script", content_type = "text/javascript", body = String)))]
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
#[utoipa::path(get, path = "/metrics", tag = "admin",
    responses((status = 200, description = "The metrics (docs/api.md, Metrics)", content_type = "text/plain", body = String)))]
async fn metrics() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::handle().render())
}

/// 200 while the process is up.
#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "Up", body = crate::api::Health)))]
async fn healthz() -> Json<crate::api::Health> {
    Json(crate::api::Health { status: "ok".to_owned() })
}

/// Ready when the database, the container engine and the base path answer and every background loop finished a pass
/// recently.
#[utoipa::path(get, path = "/readyz", tag = "service",
    responses(
        (status = 200, description = "Ready", body = crate::api::Readiness),
        (status = 503, description = "Not ready: the fields say what is down", body = crate::api::Readiness),
    ))]
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // Anyone may ask (load balancers send no key), so the answer says what is down, never why: the cause (paths,
    // addresses) goes to the log.
    let db = state.lifecycle.reads().ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness: the database does not answer");
        "unavailable".to_owned()
    });
    let engine = match tokio::time::timeout(Duration::from_secs(3), state.lifecycle.ping_engine()).await {
        Ok(r) => r.map_err(|e| {
            tracing::warn!(error = %e, "readiness: the container engine does not answer");
            "unavailable".to_owned()
        }),
        Err(_) => Err("timed out".to_owned()),
    };
    let storage = state
        .lifecycle
        .storage()
        .run("the readiness check", Some(Duration::from_secs(2)), |st, _| st.check_base().map(drop))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "readiness: the base path is not usable");
            match e {
                crate::storage::StorageError::Stalled { .. } | crate::storage::StorageError::TooManyBlocked { .. } => {
                    "stalled".to_owned()
                }
                _ => "unavailable".to_owned(),
            }
        });
    let loops = state.loops.report();
    let loops_ok = loops.values().all(|s| *s == crate::supervise::LoopStatus::Ok);
    let loops = loops.into_iter().map(|(name, status)| (name.to_owned(), status.to_string())).collect();
    let ok = db.is_ok() && engine.is_ok() && storage.is_ok() && loops_ok;
    let word = |r: &Result<(), String>| r.as_ref().err().cloned().unwrap_or_else(|| "ok".to_owned());
    let (leader, lease_fence) = (state.loops.leads(), state.loops.fence());
    let body = Json(crate::api::Readiness {
        ready: ok,
        database: word(&db),
        docker: word(&engine),
        storage: word(&storage),
        loops,
        leader,
        lease_fence,
    });
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, body)
}
