//! The course routes: profiles put, read, listed and deleted with an LMS key. Every check of a profile is the
//! lifecycle's (`Lifecycle::set_course_profile`); handlers parse and answer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::error::ApiError;
use super::extract::{ApiJson, CoursePath};
use super::AppState;
use crate::api::{CourseList, CourseView, ErrorBody};
use crate::course::CourseBody;
use crate::domain::CourseId;
use crate::store::{CourseCounts, CourseRecord};

fn course_view(r: CourseRecord, counts: CourseCounts) -> CourseView {
    CourseView {
        title: r.profile.title.clone().unwrap_or_else(|| r.course_id.to_string()),
        course_id: r.course_id,
        profile: r.profile,
        workspaces: counts.workspaces,
        running: counts.busy,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

async fn counts_of(state: &AppState) -> Result<HashMap<CourseId, CourseCounts>, ApiError> {
    Ok(state.lifecycle.reads().course_counts().await.map_err(ApiError::store)?.into_iter().collect())
}

async fn view_of(state: &AppState, course: &CourseId) -> Result<CourseView, ApiError> {
    let reads = state.lifecycle.reads();
    let Some(record) = reads.get_course(course).await.map_err(ApiError::store)? else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "course_not_found", format!("no course {course}")));
    };
    let counts = counts_of(state).await?.remove(course).unwrap_or_default();
    Ok(course_view(record, counts))
}

/// Creates or replaces a course's profile (every field optional; what is left out follows the service's settings).
#[utoipa::path(put, path = "/api/courses/{course}", tag = "courses",
    params(("course" = crate::domain::CourseId, Path, description = "The course id (student-id rules)")),
    request_body = CourseBody,
    responses(
        (status = 200, description = "Replaced", body = CourseView),
        (status = 201, description = "Created", body = CourseView),
        (status = 400, description = "`invalid_course_id`, `invalid_json`, `invalid_profile`, `image_not_allowed`, `over_operator_limit`, `unknown_template`", body = ErrorBody),
        (status = 409, description = "`templates_disabled`: the operator has set no `templates_path`", body = ErrorBody),
    ))]
pub async fn put_course(
    State(state): State<Arc<AppState>>,
    CoursePath(course): CoursePath,
    ApiJson(body): ApiJson<CourseBody>,
) -> Result<(StatusCode, Json<CourseView>), ApiError> {
    let created = state.lifecycle.set_course_profile(&course, &body).await?;
    let code = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((code, Json(view_of(&state, &course).await?)))
}

/// One course.
#[utoipa::path(get, path = "/api/courses/{course}", tag = "courses",
    params(("course" = crate::domain::CourseId, Path, description = "The course id")),
    responses(
        (status = 200, description = "The course", body = CourseView),
        (status = 400, description = "`invalid_course_id`", body = ErrorBody),
        (status = 404, description = "`course_not_found`", body = ErrorBody),
    ))]
pub async fn get_course(
    State(state): State<Arc<AppState>>,
    CoursePath(course): CoursePath,
) -> Result<Json<CourseView>, ApiError> {
    Ok(Json(view_of(&state, &course).await?))
}

/// Every course, by id, with its workspace counts.
#[utoipa::path(get, path = "/api/courses", tag = "courses",
    responses((status = 200, description = "The courses", body = CourseList)))]
pub async fn list_courses(State(state): State<Arc<AppState>>) -> Result<Json<CourseList>, ApiError> {
    let records = state.lifecycle.reads().list_courses().await.map_err(ApiError::store)?;
    let mut counts = counts_of(&state).await?;
    let courses = records
        .into_iter()
        .map(|r| {
            let c = counts.remove(&r.course_id).unwrap_or_default();
            course_view(r, c)
        })
        .collect();
    Ok(Json(CourseList { courses }))
}

/// Deletes a course; refused while any of its workspaces is busy. Its workspaces leave the course; no file is
/// touched.
#[utoipa::path(delete, path = "/api/courses/{course}", tag = "courses",
    params(("course" = crate::domain::CourseId, Path, description = "The course id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "`invalid_course_id`", body = ErrorBody),
        (status = 404, description = "`course_not_found`", body = ErrorBody),
        (status = 409, description = "`course_in_use`: workspaces of the course are queued, starting, running or stopping", body = ErrorBody),
    ))]
pub async fn delete_course(
    State(state): State<Arc<AppState>>,
    CoursePath(course): CoursePath,
) -> Result<StatusCode, ApiError> {
    state.lifecycle.remove_course(&course).await?;
    Ok(StatusCode::NO_CONTENT)
}
