//! `DELETE /api/admin/workspaces/{id}?confirm=<id>`: erases a student (folder and record), for retention rules and
//! erasure requests. The one route that removes files.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;

use super::error::ApiError;
use super::extract::StudentPath;
use super::AppState;
#[allow(unused_imports)] // named by the OpenAPI attribute
use crate::domain::StudentId;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// The student id again: a deletion is never implied.
    confirm: Option<String>,
}

#[utoipa::path(delete, path = "/api/admin/workspaces/{id}", tag = "admin",
    params(("id" = StudentId, Path, description = "The student"),
        ("confirm" = String, Query, description = "The student id again, to confirm")),
    responses(
        (status = 204, description = "Deleted: the folder and the record are gone, the student's sessions ended, a `deleted` event logged"),
        (status = 400, description = "`invalid_student_id`, `invalid_query`, `confirmation_required`", body = crate::api::ErrorBody),
        (status = 404, description = "`workspace_not_found`: no record and no folder", body = crate::api::ErrorBody),
        (status = 409, description = "`workspace_running`: stop it first", body = crate::api::ErrorBody),
        (status = 503, description = "`storage_unavailable`, `store_unavailable`", body = crate::api::ErrorBody),
    ))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
    query: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<StatusCode, ApiError> {
    let Query(q) = query.map_err(ApiError::query)?;
    if q.confirm.as_deref() != Some(id.as_str()) {
        let msg = format!("deleting removes the files of {id} for good; repeat the id as ?confirm={id}");
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "confirmation_required", msg));
    }
    state.lifecycle.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
