//! The workspace routes of the REST API.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{ApiJson, StudentPath};
use super::AppState;
use crate::domain::{Status, StopReason, StudentId};
use crate::store::WorkspaceRecord;

/// The status of a workspace as the API shows it.
#[derive(Debug, Serialize)]
pub struct WorkspaceView {
    pub student_id: StudentId,
    pub status: Status,
    pub container_id: Option<String>,
    pub last_activity: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<StopReason>,
    /// The sentence for the student, e.g. "Workspace stopped due to inactivity."
    pub stop_message: Option<&'static str>,
    pub error: Option<String>,
    /// Where the IDE is reached while running.
    pub url: Option<String>,
    pub limits: Limits,
}

#[derive(Debug, Serialize)]
pub struct Limits {
    pub cpus: f64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
}

impl WorkspaceView {
    pub fn new(state: &AppState, r: WorkspaceRecord) -> Self {
        let w = &state.lifecycle.settings().workspace;
        let url = match (r.status, r.host_port) {
            (Status::Running, Some(port)) => Some(format!("http://127.0.0.1:{port}/")),
            _ => None,
        };
        let stopped = r.status == Status::Stopped;
        Self {
            student_id: r.student_id,
            status: r.status,
            container_id: r.container_id,
            last_activity: r.last_activity,
            started_at: r.started_at,
            stopped_at: r.stopped_at,
            stop_reason: r.stop_reason.filter(|_| stopped),
            stop_message: r.stop_reason.filter(|_| stopped).map(StopReason::message),
            error: r.error,
            url,
            limits: Limits { cpus: w.cpus, memory_bytes: w.memory_bytes, pids_limit: w.pids_limit },
        }
    }
}

pub async fn start(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
) -> Result<Json<WorkspaceView>, ApiError> {
    let rec = state.lifecycle.start(&id).await?;
    Ok(Json(WorkspaceView::new(&state, rec)))
}

pub async fn stop(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
) -> Result<Json<WorkspaceView>, ApiError> {
    let rec = state.lifecycle.stop(&id, StopReason::User).await?;
    Ok(Json(WorkspaceView::new(&state, rec)))
}

pub async fn get(
    State(state): State<Arc<AppState>>,
    StudentPath(id): StudentPath,
) -> Result<Json<WorkspaceView>, ApiError> {
    let rec = state.lifecycle.status(&id).await?;
    Ok(Json(WorkspaceView::new(&state, rec)))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ListView {
    pub workspaces: Vec<WorkspaceView>,
}

pub async fn list(State(state): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Result<Json<ListView>, ApiError> {
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
    let records = state.lifecycle.store().list(status).await.map_err(ApiError::internal)?;
    Ok(Json(ListView { workspaces: records.into_iter().map(|r| WorkspaceView::new(&state, r)).collect() }))
}

#[derive(Debug, Deserialize)]
pub struct HeartbeatBody {
    pub student_id: StudentId,
}

#[derive(Debug, Serialize)]
pub struct HeartbeatView {
    pub student_id: StudentId,
    pub last_activity: Option<DateTime<Utc>>,
}

pub async fn heartbeat(
    State(state): State<Arc<AppState>>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<HeartbeatView>, ApiError> {
    let rec = state.lifecycle.heartbeat(&body.student_id).await?;
    Ok(Json(HeartbeatView { student_id: rec.student_id, last_activity: rec.last_activity }))
}
