//! Assignments: `POST /api/courses/{course}/distribute` (an NDJSON report, a line per student as each finishes) and
//! `GET /api/courses/{course}/collect?path=` (a tar.gz stream with a folder per student and a manifest). The file
//! work is `ops::coursework`'s, reached through the lifecycle (each student under their lock) for distribute and
//! read directly for collect (it writes nothing).

use std::io;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::extract::{ApiJson, CoursePath};
use super::AppState;
use crate::api::{DistributeEvent, ErrorBody};
use crate::ops::coursework::{collect, RelPath};

/// Body of `POST /api/courses/{course}/distribute`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DistributeRequest {
    /// A folder under the operator's `templates_path`, e.g. `cs101/assignment-2`.
    #[schema(
        pattern = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}){0,31}$",
        max_length = 1024
    )]
    pub source: String,
    /// Where it goes in each student's folder; default: the source's last name (`assignment-2`).
    #[serde(default)]
    #[schema(
        pattern = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}){0,31}$",
        max_length = 1024
    )]
    pub target: Option<String>,
}

fn rel(raw: &str, what: &str) -> Result<RelPath, ApiError> {
    RelPath::parse(raw).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code(), format!("{what}: {e}")))
}

/// Copies an assignment folder into every student folder of the course, running or not, never over a file a
/// student changed. Streams a JSON line per student as each finishes; killed and run again, each student is done
/// once (`already_done` for those who have this version).
#[utoipa::path(post, path = "/api/courses/{course}/distribute", tag = "courses",
    params(("course" = crate::domain::CourseId, Path, description = "The course id")),
    request_body = DistributeRequest,
    responses(
        (status = 200, description = "One JSON object a line: `plan`, a `student` line per student, then `done`", content_type = "application/x-ndjson", body = String),
        (status = 400, description = "`invalid_course_id`, `invalid_json`, `invalid_path`, `source_too_large`", body = ErrorBody),
        (status = 404, description = "`course_not_found`, `unknown_source`: no such folder under `templates_path`", body = ErrorBody),
        (status = 409, description = "`templates_disabled`: the operator has set no `templates_path`", body = ErrorBody),
    ))]
pub async fn distribute(
    State(state): State<Arc<AppState>>,
    CoursePath(course): CoursePath,
    ApiJson(req): ApiJson<DistributeRequest>,
) -> Result<Response, ApiError> {
    let source = rel(&req.source, "source")?;
    let target = match &req.target {
        Some(t) => rel(t, "target")?,
        None => rel(source.names().last().and_then(|n| n.to_str()).unwrap_or_default(), "target")?,
    };
    let lc = state.lifecycle.clone();
    let (distribution, students) = lc.prepare_distribution(&course, &source, target.clone()).await?;
    tracing::info!(course = %course, source = %source.as_str().escape_debug(), students = students.len(), "distributing");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<DistributeEvent>();
    let _ = tx.send(DistributeEvent::Plan {
        course: course.clone(),
        source: source.as_str().to_owned(),
        target: target.as_str().to_owned(),
        digest: distribution.digest(),
        students: students.len(),
        source_skipped: distribution.source_skipped().to_vec(),
    });
    // In its own task: a client that goes away does not leave a student half done (each finishes, the rest follow).
    tokio::spawn(async move {
        let (mut already, mut kept, mut failed) = (0, 0, 0);
        for student in &students {
            let line = match lc.distribute_to(&course, student, &distribution).await {
                Ok(report) => {
                    already += usize::from(report.already_done);
                    kept += usize::from(!report.kept.is_empty());
                    DistributeEvent::Student { student_id: student.clone(), report: Some(report), error: None }
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(course = %course, student = %student, error = ?e.to_string(), "distribution failed");
                    DistributeEvent::Student { student_id: student.clone(), report: None, error: Some(e.to_string()) }
                }
            };
            let _ = tx.send(line);
        }
        let _ = tx.send(DistributeEvent::Done {
            students: students.len(),
            already_done: already,
            with_kept_files: kept,
            failed,
        });
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let event = rx.recv().await?;
        let mut v = serde_json::to_vec(&event).expect("an event serializes");
        v.push(b'\n');
        Some((Ok::<_, io::Error>(Bytes::from(v)), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectQuery {
    path: String,
}

/// A folder of every student of the course as one tar.gz: `<student>/<path>/...`, then `MANIFEST.json` (size,
/// BLAKE3 and modification time of every file; students without the path listed as missing). Read without
/// following symbolic links.
#[utoipa::path(get, path = "/api/courses/{course}/collect", tag = "courses",
    params(("course" = crate::domain::CourseId, Path, description = "The course id"),
        ("path" = String, Query, description = "The folder in each student's folder, e.g. `assignment-2`",
            pattern = "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}(/[A-Za-z0-9_-][A-Za-z0-9_.-]{0,254}){0,31}$")),
    responses(
        (status = 200, description = "tar.gz, streamed", content_type = "application/gzip", body = Vec<u8>),
        (status = 400, description = "`invalid_course_id`, `invalid_path`, `invalid_query`", body = ErrorBody),
        (status = 404, description = "`course_not_found`", body = ErrorBody),
    ))]
pub async fn collect_handler(
    State(state): State<Arc<AppState>>,
    CoursePath(course): CoursePath,
    query: Result<Query<CollectQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(ApiError::query)?;
    let path = rel(&q.path, "path")?;
    let reads = state.lifecycle.reads();
    if reads.get_course(&course).await.map_err(ApiError::store)?.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "course_not_found", format!("no course {course}")));
    }
    let storage = state.lifecycle.storage().clone();
    let students: Vec<_> = reads
        .list_in_course(&course)
        .await
        .map_err(ApiError::store)?
        .into_iter()
        .map(|r| {
            let dir = storage.student_dir(&r.student_id);
            (r.student_id, dir)
        })
        .collect();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(super::export::CHANNEL_CHUNKS);
    let span = tracing::info_span!("collect", course = %course);
    tokio::task::spawn_blocking(move || {
        let _enter = span.enter();
        let writer =
            io::BufWriter::with_capacity(super::export::CHUNK_BYTES, super::export::ChannelWriter::new(tx.clone()));
        let mut last = 0;
        let progress = |p: &crate::ops::coursework::CollectProgress| {
            if p.students_done != last {
                last = p.students_done;
                tracing::info!(done = p.students_done, of = p.students_total, files = p.files, "collect progress");
            }
        };
        match collect(&students, &path, writer, progress) {
            Ok(s) => tracing::info!(students = s.students.len(), files = s.files, bytes = s.bytes, "collect streamed"),
            Err(e) => {
                tracing::warn!(error = ?e.to_string(), "collect aborted");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{course}-collect.tar.gz\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
