//! What a student's browser reaches: `/w/{id}/...` (or `{id}.<host suffix>/...` in host mode).
//!
//! - `/_workspaced/launch?token=` under the prefix turns a launch link into a session cookie;
//! - `/_workspaced/{status,start,heartbeat}` are the student's own API (session only, same origin);
//! - everything else is the IDE, forwarded by [`crate::proxy`] once the session names this student;
//! - a workspace that is not running answers with the launcher page (a browser) or JSON (anything else),
//!   never a raw 502.
//!
//! The decision is made once, on the normalized path, before the router sees the request (see [`dispatch`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use serde_json::json;

use super::auth;
use super::error::ApiError;
use super::AppState;
use crate::api::{LaunchLink, StudentToken};
use crate::auth::{session_cookie_name, Purpose, SECURE_SESSION_COOKIE, SESSION_COOKIE};
use crate::domain::{Status, StudentId};
use crate::lifecycle::StartMode;
use crate::proxy::path::{host_target, path_target, Target};
use crate::proxy::{Forwarded, ProxyError};

/// The reserved sub-path under each workspace prefix.
pub const RESERVED: &str = "/_workspaced/";

/// Runs before routing: requests for a workspace go to the IDE side, the rest to the API router.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let settings = state.lifecycle.settings();
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_ascii_lowercase);
    let on_admin_host = settings.admin_host.is_some() && host == settings.admin_host;
    if settings.admin_host.is_some() && !on_admin_host && admin_only(req.uri().path()) {
        // The dashboard and the API live on their own origin; elsewhere they do not exist.
        return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route").into_response();
    }
    let target = match &settings.proxy.host_suffix {
        Some(suffix) => req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| host_target(h, suffix, req.uri().path())),
        None => None,
    }
    .or_else(|| path_target(req.uri().path()));
    match target {
        // Nothing a student serves runs on the dashboard's origin.
        Some(_) if on_admin_host => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no workspace is served on this host").into_response()
        }
        Some(t) if settings.auth.lti_embed => {
            // Embedded LTI launches: only the registered platforms (and this origin) may frame a workspace.
            let st = state.clone();
            let mut resp = ide_request(state, t, req).await;
            super::lti::refresh_origins(&st).await;
            if let Ok(v) = HeaderValue::from_str(&super::lti::frame_ancestors(&st)) {
                resp.headers_mut().append(header::CONTENT_SECURITY_POLICY, v);
            }
            resp
        }
        Some(t) => ide_request(state, t, req).await,
        None => next.run(req).await,
    }
}

/// What only the admin host serves when one is set: the dashboard, the API (but the heartbeat the SDK sends from
/// LMS pages, with a student token) and the metrics.
fn admin_only(path: &str) -> bool {
    path == "/admin"
        || path.starts_with("/admin/")
        || path == "/metrics"
        || (path.starts_with("/api/") && path != "/api/workspaces/heartbeat")
}

fn wants_html(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

/// An error for a browser page (`html`) or a script, in the shape each expects.
fn refuse(html: bool, e: ApiError) -> Response {
    if html {
        let page = super::pages::message_page(e.status, e.code, &e.message);
        return (e.status, Html(page)).into_response();
    }
    e.into_response()
}

/// A request for a student's IDE: session, own routes, route lookup, activity, forwarding. Long because it is the
/// one path every IDE request takes, in order, and splitting it would hide that order.
async fn ide_request(state: Arc<AppState>, t: Target, mut req: Request) -> Response {
    let Some(rest) = t.rest.clone() else {
        // `/w/alice` -> `/w/alice/`: the IDE's relative links need the slash.
        let q = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
        return Redirect::permanent(&format!("{}/{q}", t.prefix)).into_response();
    };
    // Only what an error answer needs survives the request: whether a browser page is wanted.
    let html = wants_html(req.headers());
    if rest.strip_prefix(RESERVED) == Some("launch") {
        let query = req.uri().query().unwrap_or("").to_owned();
        return launch_landing(&state, &t, &query, req.headers(), html).await;
    }
    let student = match owner(&state, &t, &rest, req.headers(), html).await {
        Ok(student) => student,
        Err(refused) => return refused,
    };
    if let Some(sub) = rest.strip_prefix(RESERVED) {
        return own_api(&state, &student, sub, req).await.unwrap_or_else(|e| e.into_response());
    }
    // Host mode: each student's IDE is its own origin, so a WebSocket or a request that changes something must come
    // from that origin. A page on another student's host (or anywhere else) that the browser lets send our cookie
    // (same site, another host) is refused before it reaches the IDE.
    let sends = req.headers().contains_key(header::UPGRADE)
        || !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if t.prefix.is_empty() && sends && !same_origin(req.headers()) {
        crate::metrics::proxy_request("cross_origin");
        return refuse(html, ApiError::new(StatusCode::FORBIDDEN, "cross_origin", "cross-origin request refused"));
    }
    let route = match state.lifecycle.reads().route(&student).await {
        Ok(Some(route)) => route,
        Ok(None) => return not_running(&state, &student, &t.prefix, html).await,
        Err(e) => return refuse(html, ApiError::store(e)),
    };
    if counts_as_activity(req.method(), req.headers()) {
        state.lifecycle.touch(&student);
    }
    // The IDE's page (code-server serves the workbench at `/`) gets our script; ask for it uncompressed.
    let workbench = req.method() == Method::GET && rest == "/" && !req.headers().contains_key(header::UPGRADE);
    if workbench {
        req.headers_mut().remove(header::ACCEPT_ENCODING);
    }
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let client_addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let https = state.lifecycle.settings().public_url.as_deref().is_some_and(|u| u.starts_with("https://"));
    let proto = if https { "https" } else { "http" };
    let Some(slot) = state.ide_connections.try_acquire(&student) else {
        crate::metrics::proxy_request("too_many_connections");
        let max = state.lifecycle.settings().proxy.max_connections_per_student;
        let msg = format!("more than {max} requests and WebSockets open to this workspace; close some tabs");
        return refuse(html, ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_connections", msg));
    };
    // Full-path mode (fixed at the workspace's start) forwards `/w/<id>/...` whole, the prefix spelt from the id
    // the session named; in host mode there is no prefix to keep and the path goes as it came in both modes.
    let full_path = route.full_path && !t.prefix.is_empty();
    let prefix = if full_path { format!("/w/{student}") } else { t.prefix.clone() };
    let path_and_query = if full_path { format!("{prefix}{rest}{query}") } else { format!("{rest}{query}") };
    let fwd = Forwarded {
        prefix: &prefix,
        path_and_query,
        full_path,
        client_addr,
        proto,
        strip_cookies: &[SESSION_COOKIE, SECURE_SESSION_COOKIE],
        hold: Some(Box::new(slot)),
        owner: student.as_str(),
        credential: route
            .secret
            .as_ref()
            .and_then(|s| route.auth.as_ref().unwrap_or(&state.lifecycle.settings().workspace.ide_auth).credential(s)),
    };
    match state.proxy.forward(route.upstream_host(), route.port, req, fwd).await {
        Ok(resp) => {
            crate::metrics::proxy_request("forwarded");
            if workbench {
                return inject_ide_script(resp, &t.prefix).await;
            }
            resp
        }
        Err(e) => proxy_failed(&state, &student, &t.prefix, html, e).await,
    }
}

/// The answer when the IDE could not be reached, was too slow, or the request was refused by the proxy.
async fn proxy_failed(state: &AppState, student: &StudentId, prefix: &str, html: bool, e: ProxyError) -> Response {
    match e {
        ProxyError::Unreachable(detail) => {
            // The container may have gone since the route was learnt: ask the store again.
            crate::metrics::proxy_request("unreachable");
            match state.lifecycle.route_unreachable(student).await {
                Ok(Some(_)) => {
                    tracing::warn!(student = %student, detail = ?detail, "IDE does not answer");
                    refuse(
                        html,
                        ApiError::new(
                            StatusCode::BAD_GATEWAY,
                            "ide_unreachable",
                            "the workspace is running but its IDE does not answer; try again in a moment",
                        ),
                    )
                }
                _ => not_running(state, student, prefix, html).await,
            }
        }
        ProxyError::Timeout(d) => {
            crate::metrics::proxy_request("timeout");
            let msg = format!("the IDE did not answer within {} s", d.as_secs_f64());
            refuse(html, ApiError::new(StatusCode::GATEWAY_TIMEOUT, "ide_timeout", msg))
        }
        ProxyError::TooLarge(max) => {
            crate::metrics::proxy_request("too_large");
            let msg = format!("request body larger than {max} bytes");
            refuse(html, ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", msg))
        }
        ProxyError::BadRequest(m) => refuse(html, ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m)),
    }
}

/// The student a request may act for: its session (or, for status and heartbeat only, its student token) must name
/// the workspace in the path or host. Otherwise the answer to send: 401, a redirect to the login page, or 403.
async fn owner(state: &AppState, t: &Target, rest: &str, h: &HeaderMap, html: bool) -> Result<StudentId, Response> {
    // The id the path asks for, if it is one a student can have. A raw id is never logged: it may hold anything.
    let asked = StudentId::parse(&t.student).ok();
    // A student token (the SDK on an LMS page) reads status and sends heartbeats; it opens neither the IDE nor a
    // start: those need the session cookie from a launch link. The token is checked only as a token and the
    // cookie only as a session, so neither passes for the other.
    let by_token = auth::has_student_token(h);
    let who = if by_token { auth::student_token_of(state, h).await } else { auth::session_of(state, h).await };
    let student = match who {
        Ok(Some(student)) => student,
        Ok(None) => {
            crate::metrics::proxy_request("unauthorized");
            if let (Some(login), true, false) = (&state.lifecycle.settings().auth.login_url, html, by_token) {
                return Err(Redirect::to(login).into_response());
            }
            let why = if by_token {
                "invalid, expired or revoked student token"
            } else {
                "no workspace session: open the workspace from the course page (a launch link)"
            };
            return Err(refuse(html, auth::unauthorized(why)));
        }
        Err(e) => return Err(refuse(html, e)),
    };
    if by_token && !matches!(rest.strip_prefix(RESERVED), Some("status" | "heartbeat")) {
        return Err(refuse(html, auth::unauthorized("a student token opens only status and heartbeat")));
    }
    if asked.as_ref() != Some(&student) {
        crate::metrics::proxy_request("forbidden");
        tracing::warn!(session = %student, asked = ?asked.as_ref().map(StudentId::as_str), "session used for another workspace");
        return Err(refuse(html, ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this is not your workspace")));
    }
    Ok(student)
}

/// Largest IDE page the proxy rewrites (code-server's is about 4 KB); a bigger one is answered with 502.
const MAX_PAGE: usize = 4 << 20;

/// Adds `<script src=".../_workspaced/ide.js">` to the IDE's HTML page, before `</head>`: the in-IDE warning,
/// countdown and stopped page, and heartbeats from real input (see ARCHITECTURE.md). Anything that is not an
/// uncompressed HTML page with a `</head>` passes through unchanged.
async fn inject_ide_script(resp: Response, prefix: &str) -> Response {
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if resp.status() != StatusCode::OK || !is_html || resp.headers().contains_key(header::CONTENT_ENCODING) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_PAGE).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "IDE page too large or cut off; served without the workspace script");
            return (StatusCode::BAD_GATEWAY, "the IDE page could not be read").into_response();
        }
    };
    let html = String::from_utf8_lossy(&bytes);
    let Some(at) = html.find("</head>") else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let tag = format!(r#"<script src="{prefix}{RESERVED}ide.js" defer></script>"#);
    let page = format!("{}{tag}{}", &html[..at], &html[at..]);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Response::from_parts(parts, axum::body::Body::from(page))
}

/// Which proxied requests a person caused: loading or reloading the IDE page (`Sec-Fetch-Mode: navigate`) and
/// requests that send something (POST, PUT, PATCH, DELETE: uploads, forms). Not counted: the assets and API calls
/// the page makes by itself, and WebSocket traffic, which an open tab keeps up on its own (keep-alives every few
/// seconds). Typing and clicking inside the IDE count through the IDE page's heartbeat instead.
pub fn counts_as_activity(method: &Method, h: &HeaderMap) -> bool {
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        return true;
    }
    *method == Method::GET
        && h.get("sec-fetch-mode").is_some_and(|v| v == "navigate")
        && !h.contains_key(header::UPGRADE)
}

/// `.../_workspaced/launch?token=...`: checks the link, sets the session cookie, redirects to the IDE.
async fn launch_landing(state: &AppState, t: &Target, query: &str, headers: &HeaderMap, html: bool) -> Response {
    let token = query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(crate::proxy::path::percent_decode);
    // Only a valid id is logged: the raw segment may hold anything, line breaks included.
    let asked = StudentId::parse(&t.student).ok();
    let refused = |why: &str| {
        crate::metrics::proxy_request("launch_refused");
        tracing::info!(asked = ?asked.as_ref().map(StudentId::as_str), why, "launch link refused");
        refuse(
            html,
            auth::unauthorized(
                "this launch link is invalid, expired or already used: open the workspace again from the course page",
            ),
        )
    };
    let Some(token) = token else { return refused("no token") };
    if asked.is_none() {
        return refused("not a student id");
    }
    let lc = &state.lifecycle;
    let now = lc.clock().now();
    let claims = match state.signer.check_launch(&token, now) {
        Ok(c) => c,
        Err(e) => return refused(&e.to_string()),
    };
    if asked.as_ref() != Some(&claims.student) {
        return refused("token for another workspace");
    }
    // This browser holds another student's valid session (a classmate's laptop, an instructor helping): say so and
    // ask, instead of replacing it silently. The link is not used up until the person confirms.
    if !query.split('&').any(|kv| kv == "confirm=1") {
        match auth::session_of(state, headers).await {
            Ok(Some(current)) if current != claims.student => {
                return other_session(state, t, &current, &claims.student, &token, html);
            }
            Ok(_) => {}
            Err(e) => return refuse(html, e),
        }
    }
    match lc.redeem_launch_nonce(&claims.nonce, claims.expires_at).await {
        Ok(true) => {}
        Ok(false) => return refused("already used"),
        Err(e) => return refuse(html, e.into()),
    }
    let settings = lc.settings();
    let ttl = settings.auth.session_ttl;
    let generation = match state.sessions.current(lc.reads(), &claims.student, now).await {
        Ok(g) => g,
        Err(e) => return refuse(html, ApiError::store(e)),
    };
    let (value, _) = state.signer.credential(Purpose::Session, &claims.student, generation, now, ttl);
    let secure = settings.cookie_secure();
    let name = session_cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    // An LTI launch embedded in the LMS's frame (`lti_embed`): a partitioned cookie, the only kind a browser that
    // blocks third-party cookies keeps in a frame; `SameSite=None` so the frame sends it.
    let embedded = settings.auth.lti_embed && query.split('&').any(|kv| kv == "embed=1");
    let cookie = if embedded {
        format!("{name}={value}; Path=/; HttpOnly; SameSite=None; Secure; Partitioned; Max-Age={}", ttl.as_secs())
    } else {
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}", ttl.as_secs())
    };
    tracing::info!(student = %claims.student, "launch link used; session started");
    // Opening a link means "open my workspace": start it (queued, in the background) if it is not running. The
    // launcher page it lands on follows the start. A start that cannot begin shows there, with a button to retry.
    if lc.reads().route(&claims.student).await.ok().flatten().is_none() {
        if let Err(e) = lc.start_with(&claims.student, StartMode::Background).await {
            tracing::warn!(student = %claims.student, error = %e, "start from a launch link failed");
        }
    }
    crate::metrics::proxy_request("launch");
    let mut resp = Redirect::to(&format!("{}/", t.prefix)).into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("cookie is ASCII"));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub use crate::api::OwnStatus;

/// The answer to a launch link opened in a browser that holds another student's session: a page that names both
/// and offers to switch (the same link with `confirm=1`) or to go back; for a script, 409 `other_session`.
fn other_session(
    state: &AppState,
    t: &Target,
    current: &StudentId,
    asked: &StudentId,
    token: &str,
    html: bool,
) -> Response {
    crate::metrics::proxy_request("launch_other_session");
    // The token is `<id>.<digits>.<hex>.<hex>`: nothing in it needs escaping in a query.
    let confirm = format!("{}{RESERVED}launch?token={token}&confirm=1", t.prefix);
    let keep = workspace_url(state.lifecycle.settings(), current);
    if !html {
        let message = format!(
            "this browser is signed in to {current}'s workspace; add confirm=1 to the link to switch to {asked}'s (the link still works)"
        );
        return ApiError::new(StatusCode::CONFLICT, "other_session", message).into_response();
    }
    let page = super::pages::other_session_page(current, asked, &confirm, &keep);
    let mut resp = (StatusCode::OK, Html(page)).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A heartbeat every 30 s while there is input, more often when the idle timeout is short (a quarter of it),
/// so input always lands well inside the timeout; status polls four times as often, at most every 5 s.
fn intervals(idle_timeout: std::time::Duration) -> (u64, u64) {
    let heartbeat = (idle_timeout.as_secs() / 4).clamp(1, 30);
    let poll = (idle_timeout.as_secs() / 16).clamp(1, 5);
    (heartbeat, poll)
}

async fn own_status(state: &AppState, student: &StudentId) -> Result<OwnStatus, ApiError> {
    let lc = &state.lifecycle;
    let view =
        lc.reads().get(student).await.map_err(ApiError::store)?.map(|r| super::workspaces::workspace_view(state, r));
    let now = lc.clock().now();
    let (idle, lead) = match &view {
        Some(v) => (std::time::Duration::from_secs(v.policy.idle_timeout_seconds), v.policy.warning_lead_seconds),
        None => (lc.settings().cull.idle_timeout, lc.settings().cull.warning_lead.as_secs()),
    };
    let (heartbeat_interval_seconds, poll_interval_seconds) = intervals(idle);
    let course_title = match view.as_ref().and_then(|v| v.course.as_ref()) {
        Some(c) => {
            let course = lc.reads().get_course(c).await.map_err(ApiError::store)?;
            Some(course.and_then(|r| r.profile.title).unwrap_or_else(|| c.to_string()))
        }
        None => None,
    };
    Ok(match view {
        Some(v) => OwnStatus {
            course_title,
            warning_lead_seconds: lead,
            heartbeat_interval_seconds,
            poll_interval_seconds,
            warning: v.warn_at.is_some_and(|w| now >= w),
            student_id: v.student_id,
            status: v.status,
            queue_position: v.queue_position,
            queue_estimate_seconds: v.queue_estimate_seconds,
            started_at: v.started_at,
            stopped_at: v.stopped_at,
            stop_reason: v.stop_reason,
            stop_message: v.stop_message,
            // The stored error is for operators (it may name host paths or engine addresses); the student learns
            // that the start failed and what to do.
            error: v.error.map(|_| STUDENT_START_ERROR.to_owned()),
            warn_at: v.warn_at,
            stop_at: v.stop_at,
            seconds_left: v.seconds_left,
            now,
        },
        None => OwnStatus {
            student_id: student.clone(),
            status: Status::Stopped,
            course_title: None,
            queue_position: None,
            queue_estimate_seconds: None,
            started_at: None,
            stopped_at: None,
            stop_reason: None,
            stop_message: None,
            error: None,
            warn_at: None,
            stop_at: None,
            seconds_left: None,
            warning: false,
            warning_lead_seconds: lead,
            heartbeat_interval_seconds,
            poll_interval_seconds,
            now,
        },
    })
}

/// The student's own API under `.../_workspaced/`.
async fn own_api(state: &AppState, student: &StudentId, sub: &str, req: Request) -> Result<Response, ApiError> {
    let method = req.method().clone();
    if method != Method::GET && !auth::has_student_token(req.headers()) && !same_origin(req.headers()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_origin", "cross-origin request refused"));
    }
    let lc = &state.lifecycle;
    match (method, sub) {
        (Method::GET, "ide.js") => Ok((
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")],
            super::pages::IDE_SCRIPT,
        )
            .into_response()),
        (Method::GET, "status") => Ok(Json(own_status(state, student).await?).into_response()),
        (Method::POST, "start") => {
            lc.start_with(student, StartMode::Background).await?;
            Ok((StatusCode::ACCEPTED, Json(own_status(state, student).await?)).into_response())
        }
        (Method::POST, "heartbeat") => {
            let last = lc.heartbeat(student).await?;
            Ok(Json(json!({ "student_id": student, "last_activity": last })).into_response())
        }
        (_, "status" | "start" | "heartbeat") => {
            Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed"))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")),
    }
}

/// A state-changing request from a page must come from our own origin (SameSite=Lax already keeps the cookie off
/// cross-site POSTs; this is the second lock).
/// `Host` only: `X-Forwarded-Host` comes from the client unless a proxy in front overwrites it, so it proves nothing.
pub(super) fn same_origin(h: &HeaderMap) -> bool {
    let Some(origin) = h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

/// What a student is told about a failed start; the details are in the status API and the log.
const STUDENT_START_ERROR: &str =
    "the workspace could not start. Try again; if it keeps failing, tell your course staff (the details are in the service's log)";

/// The answer for a workspace that is not running: the launcher page for a browser, JSON otherwise.
async fn not_running(state: &AppState, student: &StudentId, prefix: &str, html: bool) -> Response {
    crate::metrics::proxy_request("not_running");
    let status = match own_status(state, student).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if html {
        let page = super::pages::launcher_page(student, &format!("{prefix}/"));
        let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Html(page)).into_response();
        resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    let message = match (status.status, status.stop_message.as_deref()) {
        (Status::Stopped, Some(m)) => format!("{m} Your files are kept. Start it again to continue."),
        (Status::Stopped, None) => "The workspace is not running. Your files are kept. Start it to continue.".into(),
        (Status::Queued | Status::Starting, _) => "The workspace is starting; try again in a moment.".into(),
        (Status::Failed, _) => format!(
            "The workspace failed to start: {}. Start it again to retry.",
            status.error.as_deref().unwrap_or("unknown error")
        ),
        (s, _) => format!("The workspace is {s}."),
    };
    let body = json!({
        "error": { "code": "workspace_not_running", "message": message },
        "workspace": status,
        "start": { "method": "POST", "path": "_workspaced/start" },
    });
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// `POST /api/workspaces/{id}/launch` (LMS key): a single-use, short-lived link that opens the student's workspace.
pub async fn create_launch(
    State(state): State<Arc<AppState>>,
    super::extract::StudentPath(id): super::extract::StudentPath,
    super::extract::OptionalJson(body): super::extract::OptionalJson<super::workspaces::CourseChoice>,
) -> Result<Json<LaunchLink>, ApiError> {
    let lc = &state.lifecycle;
    // A course given with the link puts the workspace in it now (404 unknown, 409 busy in another), so the start the
    // link makes uses the course.
    if let Some(course) = body.and_then(|b| b.course) {
        lc.assign_course(&id, &course).await?;
    }
    let settings = lc.settings();
    let (token, expires_at) = state.signer.launch_token(&id, lc.clock().now(), settings.auth.launch_ttl);
    let url = format!("{}{RESERVED}launch?token={token}", workspace_url(settings, &id).trim_end_matches('/'));
    Ok(Json(LaunchLink { student_id: id, url, expires_at }))
}

/// `POST /api/workspaces/{id}/token` (LMS key): a student token for the JS SDK on an LMS page. It lets the page
/// read that student's status and send heartbeats, nothing else; it lasts `session_ttl`.
pub async fn create_student_token(
    State(state): State<Arc<AppState>>,
    super::extract::StudentPath(id): super::extract::StudentPath,
) -> Result<Json<StudentToken>, ApiError> {
    let lc = &state.lifecycle;
    let (now, ttl) = (lc.clock().now(), lc.settings().auth.session_ttl);
    let generation = state.sessions.current(lc.reads(), &id, now).await.map_err(ApiError::store)?;
    let (value, expires_at) = state.signer.credential(Purpose::StudentToken, &id, generation, now, ttl);
    let token = format!("{}{value}", auth::STUDENT_TOKEN_PREFIX);
    Ok(Json(StudentToken { student_id: id, token, expires_at }))
}

/// Lets LMS pages on the configured origins call the SDK's routes (student status, heartbeats) with a student
/// token: answers preflights and adds `Access-Control-Allow-Origin`. No cookies cross origins.
pub async fn cors(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let allowed = origin.filter(|o| state.lifecycle.settings().auth.cors_origins.iter().any(|a| a == o));
    let path = req.uri().path();
    // Exactly the SDK's routes: never a proxied IDE path that happens to contain `/_workspaced/`.
    let sdk_route = path == "/api/workspaces/heartbeat"
        || path_target(path)
            .and_then(|t| t.rest)
            .is_some_and(|rest| matches!(rest.strip_prefix(RESERVED), Some("status" | "heartbeat")));
    let Some(origin) = allowed.filter(|_| sdk_route) else { return next.run(req).await };
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("authorization, content-type"));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        r
    } else {
        next.run(req).await
    };
    if let Ok(v) = HeaderValue::from_str(&origin) {
        resp.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        resp.headers_mut().append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

/// Where a student's IDE is reached from a browser (always ends with `/`).
pub fn workspace_url(settings: &crate::config::Settings, id: &StudentId) -> String {
    let public = settings.public_url();
    match &settings.proxy.host_suffix {
        Some(suffix) => {
            let scheme = if public.starts_with("https://") { "https" } else { "http" };
            format!("{scheme}://{id}.{suffix}/")
        }
        None => format!("{public}/w/{id}/"),
    }
}
