//! The workspace routes of the REST API.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, OptionalJson, StudentPath};
use super::AppState;
use crate::domain::{CourseId, InvalidId, Status, StopReason, StudentId};
use crate::lifecycle::StartMode;
use crate::store::{PolicyOverrides, WorkspaceRecord};

use crate::api::ErrorBody;
pub use crate::api::{HeartbeatView, Limits, ListView, PolicyView, WorkspaceView};

/// The API's view of a record: the record with live activity, deadlines, queue place and disk use added.
pub fn workspace_view(state: &AppState, r: WorkspaceRecord) -> WorkspaceView {
    let lc = &state.lifecycle;
    let w = &lc.settings().workspace;
    let now = lc.clock().now();
    let live = lc.live(&r);
    let (deadlines, p, usage, queue_position) = (live.deadlines, live.policy, live.usage, live.queue_position);
    let policy = PolicyView {
        cull_enabled: p.enabled,
        idle_timeout_seconds: p.idle_timeout.as_secs(),
        warning_lead_seconds: p.warning_lead.as_secs(),
        max_age_seconds: p.max_age.map(|d| d.as_secs()),
        overrides: r.overrides,
    };
    let (last_activity, ide_connected_at) = (live.last_activity, live.ide_connected_at);
    let url = (r.status == Status::Running).then(|| super::ide::workspace_url(lc.settings(), &r.student_id));
    let host_port = r.host_port.filter(|_| r.status == Status::Running);
    let host_addr = r.host_addr.filter(|_| r.status == Status::Running);
    let stopped = r.status == Status::Stopped;
    let limits = match &r.applied_limits {
        Some(a) => Limits { cpus: a.cpus, memory_bytes: a.memory_bytes, pids_limit: a.pids_limit },
        None => Limits { cpus: w.cpus, memory_bytes: w.memory_bytes, pids_limit: w.pids_limit },
    };
    WorkspaceView {
        student_id: r.student_id,
        status: r.status,
        course: r.course,
        container_id: r.container_id,
        last_activity,
        started_at: r.started_at,
        stopped_at: r.stopped_at,
        stop_reason: r.stop_reason.filter(|_| stopped),
        stop_message: r.stop_reason.filter(|_| stopped).map(|s| s.message().to_owned()),
        error: r.error,
        url,
        host_port,
        host_addr,
        limits,
        ide_connected_at,
        warn_at: deadlines.map(|d| d.warn_at),
        stop_at: deadlines.map(|d| d.stop_at),
        seconds_left: deadlines.map(|d| (d.stop_at - now).num_milliseconds().max(0).saturating_add(999) / 1000),
        stop_at_reason: deadlines.map(|d| d.reason),
        policy,
        queue_position,
        queue_estimate_seconds: live.queue_estimate_seconds,
        disk_usage_bytes: usage.map(|u| u.usage.bytes),
        disk_usage_measured_at: usage.map(|u| u.at),
        over_soft_quota: usage.map(|u| u.over_quota),
    }
}

/// The optional body of a start or a launch: `{"course": "cs101"}`.
#[derive(Debug, Default)]
pub struct CourseChoice {
    pub course: Option<CourseId>,
}

/// [`CourseChoice`] as sent: the id stays a string until parsed, so a bad one is `invalid_course_id`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseChoiceRequest {
    /// The course the workspace belongs to (first start), or must belong to while busy.
    #[serde(default)]
    #[schema(value_type = Option<CourseId>)]
    pub course: Option<String>,
}

impl super::extract::JsonBody for CourseChoice {
    type Raw = CourseChoiceRequest;
}

impl TryFrom<CourseChoiceRequest> for CourseChoice {
    type Error = super::extract::InvalidBody;
    fn try_from(raw: CourseChoiceRequest) -> Result<Self, Self::Error> {
        let course =
            raw.course.map(|c| CourseId::parse(&c)).transpose().map_err(super::extract::InvalidBody::CourseId)?;
        Ok(Self { course })
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct StartQuery {
    /// `false`: answer 202 as soon as the start is queued or under way, and go on in the background.
    wait: Option<bool>,
}

/// Waits for readiness by default (200 with the running workspace); with `?wait=false` answers at once with 202 and
/// the `queued` or `starting` workspace (200 when it already runs), so a launcher page can show queue positions.
#[utoipa::path(post, path = "/api/workspaces/{id}/start", tag = "workspaces",
    params(("id" = StudentId, Path, description = "The student"),
        ("wait" = Option<bool>, Query, description = "`false`: answer 202 once the start is queued or under way")),
    request_body(content = Option<CourseChoiceRequest>, description = "Optional: the course (an empty body keeps the workspace's own)"),
    responses(
        (status = 200, description = "Running (ready)", body = WorkspaceView),
        (status = 202, description = "`?wait=false`: queued or starting", body = WorkspaceView),
        (status = 400, description = "`invalid_student_id`, `invalid_query`, `invalid_json`, `invalid_course_id`, `unknown_template`", body = ErrorBody),
        (status = 404, description = "`course_not_found`", body = ErrorBody),
        (status = 409, description = "`start_cancelled`: a stop called this queued start off; `container_conflict`; `quota_exceeded`: the folder is over `disk_hard_quota`; `course_conflict`: busy in another course; `course_profile_invalid`: the course no longer meets the operator's rules", body = ErrorBody),
        (status = 429, description = "`capacity_reached`, `start_queue_full` (with `Retry-After`)", body = ErrorBody),
        (status = 502, description = "`runtime_error`: the engine refused the request", body = ErrorBody),
        (status = 503, description = "`runtime_unavailable`, `image_missing`, `no_capacity`, `storage_unavailable`, `storage_error`, `store_unavailable`", body = ErrorBody),
        (status = 504, description = "`start_timeout`: the IDE did not become ready in time", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
    query: Result<axum::extract::Query<StartQuery>, axum::extract::rejection::QueryRejection>,
    OptionalJson(body): OptionalJson<CourseChoice>,
) -> Result<(StatusCode, Json<WorkspaceView>), ApiError> {
    let wait = query.map_err(ApiError::query)?.wait.unwrap_or(true);
    let mode = if wait { StartMode::Wait } else { StartMode::Background };
    let course = body.and_then(|b| b.course);
    let rec = state.lifecycle.start_in(&id, mode, course).await?;
    let code = if rec.status == Status::Running { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((code, Json(workspace_view(&state, rec))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopQuery {
    /// `user` (default: the student asked, through the LMS) or `admin` (staff stopped it).
    reason: Option<String>,
}

#[utoipa::path(post, path = "/api/workspaces/{id}/stop", tag = "workspaces",
    params(("id" = StudentId, Path, description = "The student"),
        ("reason" = Option<super::openapi::StopAs>, Query, description = "Recorded as the stop reason")),
    responses(
        (status = 200, description = "Stopped (files kept); stopping a stopped workspace changes nothing", body = WorkspaceView),
        (status = 400, description = "`invalid_student_id`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 502, description = "`runtime_error`", body = ErrorBody),
        (status = 503, description = "`runtime_unavailable`", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
    query: Result<Query<StopQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let Query(q) = query.map_err(ApiError::query)?;
    let reason = match q.reason.as_deref() {
        None | Some("user") => StopReason::User,
        Some("admin") => StopReason::Admin,
        Some(other) => {
            let msg = format!("unknown stop reason {other:?}; use user or admin");
            return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", msg));
        }
    };
    let rec = state.lifecycle.stop(&id, reason).await?;
    Ok(Json(workspace_view(&state, rec)))
}

/// One workspace.
#[utoipa::path(get, path = "/api/workspaces/{id}", tag = "workspaces",
    params(("id" = StudentId, Path, description = "The student")),
    responses(
        (status = 200, description = "The workspace", body = WorkspaceView),
        (status = 400, description = "`invalid_student_id`", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`: never started", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
) -> Result<Json<WorkspaceView>, ApiError> {
    let rec = state.lifecycle.status(&id).await?;
    Ok(Json(workspace_view(&state, rec)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    course: Option<String>,
}

/// Every workspace, optionally with one status.
#[utoipa::path(get, path = "/api/workspaces", tag = "workspaces",
    params(("status" = Option<Status>, Query, description = "Only workspaces with this status"),
        ("course" = Option<String>, Query, description = "Only workspaces of this course")),
    responses(
        (status = 200, description = "The workspaces", body = ListView),
        (status = 400, description = "`invalid_status`, `invalid_course_id`, `invalid_query` (an unknown parameter)", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ListView>, ApiError> {
    // A misspelt filter (`?stauts=`) must not silently list everything.
    let Query(q) = query.map_err(ApiError::query)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<Status>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_status",
                format!("unknown status {s:?}; use one of stopped, queued, starting, running, stopping, failed"),
            )
        })?),
    };
    let course = match q.course.as_deref() {
        None | Some("") => None,
        Some(c) => Some(CourseId::parse(c).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_course_id", format!("invalid course id: {e}"))
        })?),
    };
    let reads = state.lifecycle.reads();
    let records = match &course {
        Some(c) => {
            let all = reads.list_in_course(c).await.map_err(ApiError::store)?;
            all.into_iter().filter(|r| status.is_none_or(|s| r.status == s)).collect()
        }
        None => reads.list(status).await.map_err(ApiError::store)?,
    };
    Ok(Json(ListView { workspaces: records.into_iter().map(|r| workspace_view(&state, r)).collect() }))
}

/// Body of `POST /api/workspaces/heartbeat`, parsed.
#[derive(Debug)]
pub struct HeartbeatBody {
    pub student_id: StudentId,
}

/// The heartbeat body as sent: the id stays a string until [`HeartbeatBody::try_from`] parses it, so a bad id is
/// `invalid_student_id` and malformed JSON `invalid_json`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatRequest {
    #[schema(value_type = StudentId)]
    pub student_id: String,
}

impl TryFrom<HeartbeatRequest> for HeartbeatBody {
    type Error = InvalidId;
    fn try_from(raw: HeartbeatRequest) -> Result<Self, InvalidId> {
        Ok(Self { student_id: StudentId::parse(&raw.student_id)? })
    }
}

impl super::extract::JsonBody for HeartbeatBody {
    type Raw = HeartbeatRequest;
}

/// Records activity of a running workspace: the idle stop moves a full `idle_timeout` away.
#[utoipa::path(post, path = "/api/workspaces/heartbeat", tag = "workspaces",
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "Recorded", body = HeartbeatView),
        (status = 400, description = "`invalid_student_id`, `invalid_json`, `invalid_body`", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 409, description = "`workspace_not_running`", body = ErrorBody),
    ))]
pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
) -> Result<Json<HeartbeatView>, ApiError> {
    // Who is asking comes first: without a key or a session, the body is not even read.
    let caller = super::auth::caller(&state, req.headers()).await?;
    // A cookie is ambient: refuse it from another site's page (a token is not, and may come from one).
    let cross_site = !super::auth::has_student_token(req.headers()) && !super::ide::same_origin(req.headers());
    let ApiJson(body) = <ApiJson<HeartbeatBody> as axum::extract::FromRequest<()>>::from_request(req, &()).await?;
    if let super::auth::Caller::Student(own) = caller {
        if cross_site {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "cross_origin", "cross-origin request refused"));
        }
        if own != body.student_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a session may send heartbeats for its own workspace only",
            ));
        }
    }
    let last = state.lifecycle.heartbeat(&body.student_id).await?;
    Ok(Json(HeartbeatView { student_id: body.student_id, last_activity: Some(last) }))
}

/// Body of `PUT /api/workspaces/{id}/policy`: seconds, `null` for the service default.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31536000)]
    pub idle_timeout_seconds: Option<u64>,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31536000)]
    pub max_age_seconds: Option<u64>,
    #[serde(default)]
    pub cull_enabled: Option<bool>,
}

/// Sets per-workspace culling overrides: an instructor gives a student longer, an exam session no culling.
#[utoipa::path(put, path = "/api/workspaces/{id}/policy", tag = "workspaces",
    params(("id" = StudentId, Path, description = "The student")),
    request_body = PolicyBody,
    responses(
        (status = 200, description = "The workspace with its new policy", body = WorkspaceView),
        (status = 400, description = "`invalid_student_id`, `invalid_json`, `invalid_body`, `invalid_policy`", body = ErrorBody),
        (status = 404, description = "`workspace_not_found`: never started", body = ErrorBody),
    ))]
pub async fn set_policy(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_policy", m);
    let max = crate::domain::MAX_DURATION.as_secs();
    if body.idle_timeout_seconds == Some(0) {
        return Err(
            bad("idle_timeout_seconds must be at least 1; use cull_enabled=false to switch culling off".into()),
        );
    }
    if body.max_age_seconds == Some(0) {
        return Err(bad("max_age_seconds must be at least 1, or null for the service default".into()));
    }
    // Checked before anything is stored: a huge value once overflowed the deadline arithmetic.
    for (name, value) in
        [("idle_timeout_seconds", body.idle_timeout_seconds), ("max_age_seconds", body.max_age_seconds)]
    {
        if let Some(v) = value.filter(|v| *v > max) {
            return Err(bad(format!("{name} must be at most {max} (one year), got {v}")));
        }
    }
    let overrides = PolicyOverrides {
        idle_timeout: body.idle_timeout_seconds.map(std::time::Duration::from_secs),
        max_age: body.max_age_seconds.map(std::time::Duration::from_secs),
        cull_enabled: body.cull_enabled,
    };
    let lc = &state.lifecycle;
    lc.set_policy(&id, overrides).await?;
    tracing::info!(student = %id, ?overrides, "culling policy changed");
    let rec = lc.status(&id).await?;
    Ok(Json(workspace_view(&state, rec)))
}
