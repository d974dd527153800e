//! `GET /api/events?student_id=<id>&after=<event id>`: the event log as server-sent events, replayed from a position
//! and then followed live. Each message has `id: <event id>`, `event: <kind>` and as `data` the same JSON as the
//! webhook body ([`crate::notify::webhook::Notification`]). Every kind is streamed, `starting` included.
//!
//! The position is the `Last-Event-ID` header when present (a reconnecting `EventSource` sends it), else `after`,
//! else 0 (the whole log). `student_id` limits the stream to one student; without it, every student's events come.
//! The stream reads the store only by event id (replay and live are the same query "after the last id sent"), so
//! nothing is lost between replay and live and a reconnect neither loses nor repeats an event. It holds no database
//! connection while it waits for the next change.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;

use super::{ApiError, AppState};
use crate::domain::StudentId;
use crate::notify::webhook;
use crate::store::{Event, Reads};

/// Events read from the store at a time, during replay and live.
const PAGE: i64 = 500;
/// A comment line this often keeps proxies from closing an idle stream and reveals a gone client.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The parsed query and `Last-Event-ID` header.
pub struct EventsQuery {
    pub student: Option<StudentId>,
    /// Stream the events with an id above this one.
    pub after: i64,
    /// `tail=N`: start N event ids before the newest instead (a dashboard's recent past); a `Last-Event-ID` wins.
    pub tail: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for EventsQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bad_query = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", m);
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| bad_query(format!("invalid query string: {e}")))?;
        let mut student = None;
        let mut after = None;
        let mut tail = None;
        for (key, value) in pairs {
            let slot = match key.as_str() {
                "student_id" => &mut student,
                "after" => &mut after,
                "tail" => &mut tail,
                // A misspelt filter must not silently widen the stream to every student.
                other => return Err(bad_query(format!("unknown query parameter {other:?}"))),
            };
            if slot.replace(value).is_some() {
                return Err(bad_query(format!("query parameter {key:?} given twice")));
            }
        }
        let student = student.map(|raw| StudentId::parse(&raw)).transpose().map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_student_id", format!("invalid student id: {e}"))
        })?;
        let position = |what: &str, raw: &str| {
            raw.trim()
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 0)
                .ok_or_else(|| bad_query(format!("{what} must be a non-negative integer, got {raw:?}")))
        };
        let last_event_id = match parts.headers.get("last-event-id") {
            Some(v) => Some(v.to_str().map_err(|_| bad_query("Last-Event-ID is not ASCII".to_owned()))?),
            None => None,
        };
        // An empty Last-Event-ID means "no id received yet" to an EventSource, so `after` applies then.
        let after = match (last_event_id.filter(|v| !v.trim().is_empty()), after) {
            (Some(header), _) => position("Last-Event-ID", header)?,
            (None, Some(raw)) => position("after", &raw)?,
            (None, None) => 0,
        };
        if tail.is_some() && after > 0 && last_event_id.is_none() {
            return Err(bad_query("give either after or tail, not both".to_owned()));
        }
        let tail = match (tail, last_event_id.filter(|v| !v.trim().is_empty())) {
            (Some(raw), None) => Some(position("tail", &raw)?),
            _ => None,
        };
        Ok(Self { student, after, tail })
    }
}

/// The event log as server-sent events: the stored events after the position, then new ones live. The stream does
/// not end by itself.
#[utoipa::path(get, path = "/api/events", tag = "workspaces",
    params(
        ("student_id" = Option<StudentId>, Query, description = "Only this student's events"),
        ("after" = Option<u64>, Query, description = "Start after this event id (default 0: the whole log)"),
        ("tail" = Option<u64>, Query, description = "Start this many event ids before the newest instead"),
        ("Last-Event-ID" = Option<String>, Header, description = "A reconnecting client's last id; wins over `after` and `tail`"),
    ),
    responses(
        (status = 200, description = "The event stream; each event's `data` is the webhook body", content_type = "text/event-stream", body = super::openapi::SseEvent),
        (status = 400, description = "`invalid_query`, `invalid_student_id`", body = crate::api::ErrorBody),
    ))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    query: EventsQuery,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let store = state.lifecycle.reads().clone();
    // Subscribe before the first read: an event committed after that read still signals a change.
    let changes = store.subscribe_events();
    let query = match query.tail {
        Some(n) => EventsQuery { after: (*changes.borrow() - n).max(0), ..query },
        None => query,
    };
    // The first page is read here so that a broken database is a 500, not an empty stream.
    let first = store.events(query.student.as_ref(), query.after, PAGE).await.map_err(ApiError::store)?;
    tracing::debug!(student = ?query.student.as_ref().map(StudentId::as_str), after = query.after, "event stream opened");
    let read = (first.len() as i64) < PAGE;
    let follower = Follower { store, student: query.student, last: query.after, pending: first.into(), changes, read };
    let stream = futures_util::stream::unfold(follower, |mut f| async move {
        let event = f.next().await?;
        Some((Ok(to_sse(&event)), f))
    });
    // An event stream never finishes by itself: end it when the service shuts down, or shutdown would wait forever.
    let stream = futures_util::StreamExt::take_until(stream, state.shutdown.clone().cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn to_sse(event: &Event) -> SseEvent {
    SseEvent::default().id(event.id.to_string()).event(event.kind.as_str()).data(webhook::to_json(event))
}

/// Walks the event log after `last`, waiting for changes once it has caught up.
struct Follower {
    store: Reads,
    student: Option<StudentId>,
    /// The id of the last event handed out (or the starting position).
    last: i64,
    pending: VecDeque<Event>,
    changes: watch::Receiver<i64>,
    /// Whether `pending` came from a read made since the last change signal (so waiting is safe once it is empty).
    read: bool,
}

impl Drop for Follower {
    fn drop(&mut self) {
        tracing::debug!(student = ?self.student.as_ref().map(StudentId::as_str), last = self.last, "event stream closed");
    }
}

impl Follower {
    /// The next event, or `None` to end the stream (the store failed; the client reconnects with `Last-Event-ID`).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = event.id;
                return Some(event);
            }
            if self.read {
                // Caught up with what the last read saw; wait for a commit. No connection is held meanwhile.
                self.changes.changed().await.ok()?;
            }
            match self.store.events(self.student.as_ref(), self.last, PAGE).await {
                Ok(page) => {
                    // A full page may have more behind it: read again before waiting.
                    self.read = (page.len() as i64) < PAGE;
                    self.pending = page.into();
                }
                Err(e) => {
                    tracing::error!(error = %e, after = self.last, "cannot read events; ending the event stream");
                    return None;
                }
            }
        }
    }
}
