//! One error shape for every HTTP answer: `{"error": {"code": "...", "message": "..."}}`. Codes are stable;
//! clients match on them. 500s hide their details; the cause is logged once, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;
use crate::lifecycle::LifecycleError;
use crate::runtime::RuntimeError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    /// A store error: 503 `store_unavailable` while the database cannot be reached, else internal.
    pub fn store(e: crate::store::StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return ApiError {
                retry_after: Some(5),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the database cannot be reached; try again",
                )
            };
        }
        Self::internal(e)
    }

    /// A query string that does not parse: 400 `invalid_query`.
    pub fn query(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text())
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the service log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody::new(self.code, self.message));
        let mut resp = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        use LifecycleError as L;
        match e {
            L::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "workspace_not_found", e.to_string()),
            L::NotRunning { .. } => ApiError::new(StatusCode::CONFLICT, "workspace_not_running", e.to_string()),
            L::StartTimeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "start_timeout", e.to_string()),
            L::StartCancelled(_) => ApiError::new(StatusCode::CONFLICT, "start_cancelled", e.to_string()),
            L::Storage(ref s) => {
                tracing::error!(error = %s, "workspace storage unavailable");
                let code = if s.is_unavailable() { "storage_unavailable" } else { "storage_error" };
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
            }
            L::Runtime(ref r) => match r {
                RuntimeError::Unavailable(_) => ApiError {
                    retry_after: Some(10),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "runtime_unavailable", e.to_string())
                },
                RuntimeError::ImageMissing(_) => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "image_missing", e.to_string())
                }
                RuntimeError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "container_conflict", e.to_string()),
                RuntimeError::Engine(_) => ApiError::new(StatusCode::BAD_GATEWAY, "runtime_error", e.to_string()),
                RuntimeError::NoCapacity(_) => ApiError {
                    retry_after: Some(30),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_capacity", e.to_string())
                },
            },
            L::QueueFull { retry_after_secs } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "start_queue_full", e.to_string())
            },
            L::CapacityReached { retry_after_secs, .. } => ApiError {
                retry_after: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "capacity_reached", e.to_string())
            },
            L::OverQuota { .. } => ApiError::new(StatusCode::CONFLICT, "quota_exceeded", e.to_string()),
            L::StillRunning(_) => ApiError::new(StatusCode::CONFLICT, "workspace_running", e.to_string()),
            L::CourseNotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "course_not_found", e.to_string()),
            L::CourseBusy { .. } => ApiError::new(StatusCode::CONFLICT, "course_in_use", e.to_string()),
            L::CourseConflict { .. } => ApiError::new(StatusCode::CONFLICT, "course_conflict", e.to_string()),
            L::CourseInvalid { .. } => ApiError::new(StatusCode::CONFLICT, "course_profile_invalid", e.to_string()),
            // A folder that is not there is a missing resource; a service set up without templates is a state of
            // the server, not of the request.
            L::Profile(p) => {
                let status = match p.code {
                    "unknown_source" => StatusCode::NOT_FOUND,
                    "templates_disabled" => StatusCode::CONFLICT,
                    _ => StatusCode::BAD_REQUEST,
                };
                ApiError::new(status, p.code, p.message)
            }
            L::Coursework(ref c) if matches!(c, crate::ops::coursework::CourseworkError::TooManyEntries(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "source_too_large", e.to_string())
            }
            L::Coursework(c) => ApiError::internal(c),
            L::Store(s) => ApiError::store(s),
            L::Panicked(m) => ApiError::internal(m),
        }
    }
}
