//! Authentication at the edge: every `/api/*` route sits behind [`require_lms`] or [`require_admin`]; the
//! heartbeat also takes the student's own browser session. Missing or wrong key: 401; a key of too small a role: 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::ApiError;
use super::AppState;
use crate::auth::{cookie_value, KeyIdentity, Role, SESSION_COOKIE};
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
        return Ok(None); // a student token, not a key: see `session_of`
    }
    match state.keys.verify(state.lifecycle.store(), key).await.map_err(ApiError::internal)? {
        Some(who) => Ok(Some(who)),
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_api_key", "unknown or revoked API key")),
    }
}

/// A student token (for the JS SDK on LMS pages) is `wss_` and a session value, sent as a bearer token.
pub const STUDENT_TOKEN_PREFIX: &str = "wss_";

/// Whether the request carries a student token (not ambient like a cookie, so no cross-site forgery is possible).
pub fn has_student_token(headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|k| k.starts_with(STUDENT_TOKEN_PREFIX))
}

/// The student of a valid session: a student token in `Authorization`, else the session cookie.
pub fn session_of(state: &AppState, headers: &HeaderMap) -> Option<StudentId> {
    let now = state.lifecycle.clock().now();
    if let Some(token) = bearer(headers).and_then(|k| k.strip_prefix(STUDENT_TOKEN_PREFIX)) {
        return state.signer.check_session(token, now);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| cookie_value(v, SESSION_COOKIE))
        .find_map(|v| state.signer.check_session(v, now))
}

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
    match session_of(state, headers) {
        Some(student) => Ok(Caller::Student(student)),
        None => Err(unauthorized("an API key or a workspace session is required")),
    }
}
