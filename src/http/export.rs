//! `GET /api/workspaces/{id}/export`: streams a student's folder as tar.gz. The archive is written by a blocking
//! task into a bounded channel that feeds the response body, so memory stays at a few chunks whatever the size, and
//! a client that goes away stops the export. A failure half-way aborts the body (the client sees a broken transfer,
//! never a short archive that looks complete).

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::domain::StudentId;
use crate::http::{ApiError, AppState};
use crate::ops::archive::{default_archive_name, export_student};

/// Chunks in flight between the archiver and the client.
pub(super) const CHANNEL_CHUNKS: usize = 8;
/// Size of one chunk.
pub(super) const CHUNK_BYTES: usize = 64 * 1024;

/// Header set when the workspace was running at the start of the export: open files may be mid-write.
pub const RUNNING_WARNING_HEADER: &str = "x-workspaced-warning";

#[utoipa::path(get, path = "/api/workspaces/{id}/export", tag = "admin",
    params(("id" = StudentId, Path, description = "The student")),
    responses(
        (status = 200, description = "The folder as tar.gz, streamed", content_type = "application/gzip", body = Vec<u8>),
        (status = 400, description = "`invalid_student_id`", body = crate::api::ErrorBody),
        (status = 404, description = "`workspace_not_found`: no folder", body = crate::api::ErrorBody),
        (status = 503, description = "`storage_unavailable`", body = crate::api::ErrorBody),
    ))]
/// The handler. 400 for an invalid id, 404 when the student has no folder, 503 when the base path is unusable.
pub async fn export_handler(State(state): State<Arc<AppState>>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let student = StudentId::parse(&raw).map_err(|e| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", format!("invalid student id: {e}"))
    })?;
    let storage = state.lifecycle.storage().clone();
    let dir = storage.student_dir(&student);
    let state_dir = storage.ide_state_dir(&student);
    let check = {
        let (storage, dir) = (storage.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            storage.check_base()?;
            Ok::<_, crate::storage::StorageError>(std::fs::symlink_metadata(&dir).map(|m| m.is_dir()).unwrap_or(false))
        })
        .await
        .map_err(ApiError::internal)?
    };
    match check {
        Ok(true) => {}
        Ok(false) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "workspace_not_found",
                format!("no files for student {student}"),
            ))
        }
        Err(e) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", e.to_string())),
    }
    let running = match state.lifecycle.reads().get(&student).await {
        Ok(Some(r)) => r.status.is_busy(),
        Ok(None) => false,
        Err(e) => return Err(ApiError::store(e)),
    };

    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(CHANNEL_CHUNKS);
    let span = tracing::info_span!("export", student = %student);
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        let writer = io::BufWriter::with_capacity(CHUNK_BYTES, ChannelWriter { tx: tx.clone() });
        match export_student(&dir, Some(&state_dir), writer, |_| {}) {
            Ok(stats) => tracing::info!(
                files = stats.files,
                bytes = stats.bytes,
                changed = stats.changed.len(),
                skipped = stats.skipped.len(),
                "export streamed"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "export aborted");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });

    let filename = default_archive_name(&student, chrono::Utc::now());
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The name is built from a validated id and digits only, so it is a valid header value.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if running {
        headers.insert(
            RUNNING_WARNING_HEADER,
            HeaderValue::from_static("workspace running: files open in the IDE may be mid-write"),
        );
    }
    Ok(response)
}

/// A blocking `Write` that sends each buffer to the response body; fails with `BrokenPipe` once the client is gone.
pub(super) struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
}

impl ChannelWriter {
    pub(super) fn new(tx: mpsc::Sender<Result<Bytes, io::Error>>) -> Self {
        Self { tx }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
