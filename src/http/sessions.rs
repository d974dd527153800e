//! `POST /api/admin/sessions/revoke` (admin key): ends a student's browser sessions and student tokens, or
//! everybody's, before they expire. A revoked cookie then gets 401 on every replica within
//! [`crate::auth::GENERATION_CACHE_TTL`], and at once on this one.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::ApiJson;
use super::AppState;
use crate::domain::{InvalidId, StudentId};
use crate::store::RevokeScope;

/// Exactly one of the two: `{"student_id": "alice"}` or `{"all": true}`.
#[derive(Debug)]
pub struct RevokeBody {
    pub student_id: Option<StudentId>,
    pub all: bool,
}

/// The revoke body as sent; the id is parsed by [`RevokeBody::try_from`]. Its schema (exactly one of the two
/// forms) is written in `openapi.rs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[serde(default)]
    pub student_id: Option<String>,
    #[serde(default)]
    pub all: bool,
}

impl TryFrom<RevokeRequest> for RevokeBody {
    type Error = InvalidId;
    fn try_from(raw: RevokeRequest) -> Result<Self, InvalidId> {
        Ok(Self { student_id: raw.student_id.as_deref().map(StudentId::parse).transpose()?, all: raw.all })
    }
}

impl super::extract::JsonBody for RevokeBody {
    type Raw = RevokeRequest;
}

pub use crate::api::RevokeView;

/// Ends a student's sessions and student tokens, or everybody's (`{"all": true}`), now.
#[utoipa::path(post, path = "/api/admin/sessions/revoke", tag = "admin",
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "Revoked", body = RevokeView),
        (status = 400, description = "`invalid_scope`, `invalid_student_id`, `invalid_json`, `invalid_body`", body = crate::api::ErrorBody),
    ))]
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<RevokeBody>,
) -> Result<Json<RevokeView>, ApiError> {
    let scope = match (body.student_id, body.all) {
        (Some(s), false) => RevokeScope::Student(s),
        (None, true) => RevokeScope::All,
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "send either {\"student_id\": \"<id>\"} or {\"all\": true}",
            ))
        }
    };
    let lc = &state.lifecycle;
    let generation = lc.end_sessions(&scope).await?;
    let student = match scope {
        RevokeScope::Student(s) => Some(s),
        RevokeScope::All => None,
    };
    state.sessions.forget(student.as_ref());
    tracing::info!(student = ?student.as_ref().map(StudentId::as_str), generation, "sessions revoked");
    Ok(Json(RevokeView { all: student.is_none(), student_id: student, generation }))
}
