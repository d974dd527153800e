//! Authentication at the edge: every `/api/*` route sits behind [`require_lms`] or [`require_admin`]; the
//! heartbeat also takes the student's own browser session or student token (each credential is checked only
//! under its own purpose). Missing or wrong key: 401; a key of too small a role: 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::AppState;
use crate::auth::{cookie_values, session_cookie_name, KeyIdentity, Purpose, Role, SessionClaims};
use crate::domain::StudentId;

/// Who is calling: a key, or a student's browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Key(KeyIdentity),
    Student(StudentId),
}

pub fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// The bearer key of a request, if it sent one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// The key behind a request's `Authorization` header: `Ok(None)` when it sent none.
pub async fn key_of(state: &AppState, headers: &HeaderMap) -> Result<Option<KeyIdentity>, ApiError> {
    if headers.get(header::AUTHORIZATION).is_none() {
        return Ok(None);
    }
    let Some(key) = bearer(headers) else {
        return Err(unauthorized("the Authorization header must be `Bearer <key>`"));
    };
    if key.starts_with(STUDENT_TOKEN_PREFIX) {
        return Ok(None); // a student token, not a key: see `student_token_of`
    }
    let now = state.lifecycle.clock().now();
    match state.keys.verify(state.lifecycle.reads(), key, now).await.map_err(ApiError::store)? {
        Some(who) => Ok(Some(who)),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "unknown or revoked API key")),
    }
}

/// A student token (for the JS SDK on LMS pages) is `wss_` and a value signed for that purpose alone, sent as a
/// bearer token. It is never a session: sent as a cookie it opens nothing.
pub const STUDENT_TOKEN_PREFIX: &str = "wss_";

/// Whether the request carries a student token (not ambient like a cookie, so no cross-site forgery is possible).
pub fn has_student_token(headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|k| k.starts_with(STUDENT_TOKEN_PREFIX))
}

/// Whether signed claims are still current: not revoked since they were issued.
async fn current(state: &AppState, claims: &SessionClaims) -> Result<bool, ApiError> {
    let now = state.lifecycle.clock().now();
    state.sessions.is_current(state.lifecycle.reads(), claims, now).await.map_err(ApiError::store)
}

/// The student of a valid, unrevoked student token in `Authorization` (`None` without one).
pub async fn student_token_of(state: &AppState, headers: &HeaderMap) -> Result<Option<StudentId>, ApiError> {
    let Some(token) = bearer(headers).and_then(|k| k.strip_prefix(STUDENT_TOKEN_PREFIX)) else { return Ok(None) };
    let now = state.lifecycle.clock().now();
    match state.signer.check_credential(Purpose::StudentToken, token, now) {
        Some(claims) if current(state, &claims).await? => Ok(Some(claims.student)),
        _ => Ok(None),
    }
}

/// The student of a valid, unrevoked session cookie. Every cookie of the session's name is tried: a browser sends
/// several when they differ in path or domain, and one planted with a narrower path would come first.
pub async fn session_of(state: &AppState, headers: &HeaderMap) -> Result<Option<StudentId>, ApiError> {
    let now = state.lifecycle.clock().now();
    let name = session_cookie_name(state.lifecycle.settings().cookie_secure());
    let values =
        headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| cookie_values(v, name));
    for value in values.take(MAX_SESSION_COOKIES) {
        if let Some(claims) = state.signer.check_credential(Purpose::Session, value, now) {
            if current(state, &claims).await? {
                return Ok(Some(claims.student));
            }
        }
    }
    Ok(None)
}

/// At most this many session cookies of a request are checked (each costs an HMAC).
const MAX_SESSION_COOKIES: usize = 8;

async fn require(state: &AppState, needed: Role, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let Some(who) = key_of(state, req.headers()).await? else {
        return Err(unauthorized("an API key is required: send `Authorization: Bearer <key>`"));
    };
    if !who.role.allows(needed) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this route needs a key with role {}; this key has role {}", needed.as_str(), who.role.as_str()),
        ));
    }
    req.extensions_mut().insert(Caller::Key(who));
    Ok(next.run(req).await)
}

/// Lets through requests with an LMS or admin key.
pub async fn require_lms(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Result<Response, ApiError> {
    require(&state, Role::Lms, req, next).await
}

/// Lets through requests with an admin key.
pub async fn require_admin(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Result<Response, ApiError> {
    require(&state, Role::Admin, req, next).await
}

/// For the heartbeat: a key (LMS or admin), else the student's session cookie.
pub async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if let Some(who) = key_of(state, headers).await? {
        return Ok(Caller::Key(who));
    }
    if let Some(student) = student_token_of(state, headers).await? {
        return Ok(Caller::Student(student));
    }
    if has_student_token(headers) {
        return Err(unauthorized("invalid, expired or revoked student token"));
    }
    match session_of(state, headers).await? {
        Some(student) => Ok(Caller::Student(student)),
        None => Err(unauthorized("an API key or a workspace session is required")),
    }
}
