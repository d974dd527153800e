//! `POST /api/admin/migrate` with `{"to": "/mnt/efs/workspace-data", "dry_run": false}`: runs the migration inside
//! the service, where the per-student locks live, so a start of a student being copied waits for the copy. The
//! answer streams NDJSON lines ([`MigrateEvent`]): a plan, progress about twice a second, one line per student, and
//! a final `done` or `error`. A client that goes away cancels the run between two files; a rerun resumes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::{Status, StudentId};
use crate::http::{ApiError, ApiJson, AppState};
use crate::lifecycle::Lifecycle;
use crate::ops::migrate::{check_paths, migrate_reporting, MigrateEvent, RunMode, StudentLocker};
use crate::storage::{Ownership, Storage};

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The new base path; must exist and be writable (on EFS: mounted).
    #[schema(value_type = String)]
    pub to: PathBuf,
    #[serde(default)]
    pub dry_run: bool,
}

/// The lifecycle's per-student locks and records, for `ops::migrate`, which knows neither.
struct LifecycleLocker(Arc<Lifecycle>);

#[async_trait::async_trait]
impl StudentLocker for LifecycleLocker {
    async fn lock(&self, student: &StudentId) -> Box<dyn Send + '_> {
        Box::new(self.0.lock(student).await)
    }

    async fn status(&self, student: &StudentId) -> Result<Option<Status>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.0.reads().get(student).await?.map(|r| r.status))
    }
}

/// Cancels the run when the response body is dropped (the client went away).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Copies every student folder to a new base path and verifies it, streaming NDJSON progress (docs/api.md, Migrate).
#[utoipa::path(post, path = "/api/admin/migrate", tag = "admin",
    request_body = MigrateRequest,
    responses(
        (status = 200, description = "One JSON object a line: `plan`, `progress`, `student`, then `done` or `error`", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "`invalid_path`, `invalid_target`, `invalid_json`, `invalid_body`", body = crate::api::ErrorBody),
    ))]
pub async fn migrate_handler(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<MigrateRequest>,
) -> Result<Response, ApiError> {
    if !req.to.is_absolute() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", "`to` must be an absolute path"));
    }
    let lc = state.lifecycle.clone();
    let (from, to) = (lc.storage().base().to_path_buf(), req.to.clone());
    let checked = tokio::task::spawn_blocking(move || {
        check_paths(&from, &to).map_err(|e| e.to_string())?;
        // Writable, by a probe file (permission bits say little on NFS).
        Storage::with_ownership(&to, Ownership::Unchanged).check_base().map(drop).map_err(|e| e.to_string())
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(message) = checked {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_target", message));
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let (c, from) = (cancel.clone(), lc.storage().base().to_path_buf());
    let span = tracing::info_span!("migrate", to = %req.to.display());
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mode = if req.dry_run { RunMode::DryRun } else { RunMode::Copy };
            migrate_reporting(Some(&LifecycleLocker(lc)), &from, &req.to, mode, c, events_tx).await
        },
        span,
    ));
    let stream = futures_util::stream::unfold((events_rx, CancelOnDrop(cancel)), |(mut rx, guard)| async move {
        let event = rx.recv().await?;
        Some((Ok::<_, std::io::Error>(line(&event)), (rx, guard)))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

fn line(e: &MigrateEvent) -> Bytes {
    let mut v = serde_json::to_vec(e).expect("a migrate event serializes");
    v.push(b'\n');
    Bytes::from(v)
}
