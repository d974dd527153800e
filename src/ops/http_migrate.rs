//! `POST /api/admin/migrate` with `{"to": "/mnt/efs/workspace-data", "dry_run": false}`: runs the migration inside
//! the service, where the per-student locks live, so a start of a student being copied waits for the copy. The
//! answer streams NDJSON lines ([`MigrateEvent`]): a plan, progress about twice a second, one line per student, and
//! a final `done` or `error`. A client that goes away cancels the run between two files; a rerun resumes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::migrate::{migrate_all, MigrateEvent};
use crate::http::{ApiError, AppState};
use crate::storage::Storage;

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The new base path; must exist and be writable (on EFS: mounted).
    pub to: PathBuf,
    #[serde(default)]
    pub dry_run: bool,
}

/// Cancels the run when the response body is dropped (the client went away).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub async fn migrate_handler(
    State(state): State<Arc<AppState>>,
    crate::http::ApiJson(req): crate::http::ApiJson<MigrateRequest>,
) -> Result<Response, ApiError> {
    if !req.to.is_absolute() {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", "`to` must be an absolute path"));
    }
    let lc = state.lifecycle.clone();
    let target = Storage::new(req.to.clone(), 0, 0);
    let from = lc.storage().base().to_path_buf();
    let checked = tokio::task::spawn_blocking(move || {
        target.check_base()?;
        super::migrate::check_paths(&from, target.base()).map_err(|e| crate::storage::StorageError::Io {
            path: target.base().to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    })
    .await
    .map_err(ApiError::internal)?;
    if let Err(e) = checked {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_target", e.to_string()));
    }

    let cancel = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let (lines_tx, lines_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let (c, b) = (cancel.clone(), bytes.clone());
    let from = lc.storage().base().to_path_buf();
    let span = tracing::info_span!("migrate", to = %req.to.display());
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let run = migrate_all(Some(&lc), &from, &req.to, req.dry_run, c, b.clone(), events_tx);
            tokio::pin!(run);
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            let mut last = 0;
            let result = loop {
                tokio::select! {
                    r = &mut run => break r,
                    Some(e) = events_rx.recv() => { let _ = lines_tx.send(Ok(line(&e))).await; }
                    _ = tick.tick() => {
                        let now = b.load(Ordering::Relaxed);
                        if now != last {
                            last = now;
                            // Progress may be dropped when the client reads slowly; the next tick says more.
                            let _ = lines_tx.try_send(Ok(line(&MigrateEvent::Progress { bytes: now })));
                        }
                    }
                }
            };
            while let Ok(e) = events_rx.try_recv() {
                let _ = lines_tx.send(Ok(line(&e))).await;
            }
            if let Err(e) = result {
                tracing::warn!(error = %e, "migration stopped");
                let _ = lines_tx.send(Ok(line(&MigrateEvent::Error { message: e.to_string() }))).await;
            }
        },
        span,
    ));
    let guard = CancelOnDrop(cancel);
    let stream = futures_util::stream::unfold((lines_rx, guard), |(mut rx, g)| async move {
        rx.recv().await.map(|item| (item, (rx, g)))
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
