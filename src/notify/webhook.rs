//! Webhook delivery to the LMS. The events table is a transactional outbox: a state change and its event commit
//! together (see `store`), and this loop sends the events in id order, one at a time, each until the receiver
//! answers 2xx. Only then does the delivery cursor (`job_state` row [`CURSOR_KEY`]) move past it, so delivery is
//! ordered and at-least-once; an event keeps its id across attempts and restarts, so the LMS deduplicates by id.
//! One exception: an event the receiver refuses with a 4xx (not 408/429) [`REFUSED_ATTEMPTS`] times is given up
//! (logged as an error, counted as `dropped`), so one bad event cannot hold back all later ones.
//!
//! # Request
//!
//! `POST <webhook_url>` with `content-type: application/json` and the body of [`Notification`]:
//!
//! ```json
//! {"id": 42, "type": "stopped", "student_id": "alice", "reason": "idle",
//!  "message": "Workspace stopped due to inactivity.", "at": "2026-03-01T10:15:00.123Z"}
//! ```
//!
//! Headers: `X-Workspaced-Event-Id: <id>`, `X-Workspaced-Timestamp: <unix seconds of this attempt>` and
//! `X-Workspaced-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`. The timestamp is inside the
//! signed string, so a captured request cannot be replayed later with a fresh timestamp.
//!
//! # Verifying (receiver side)
//!
//! Recompute the HMAC over the exact bytes received, compare in constant time, reject timestamps more than a few
//! minutes from now, then deduplicate by `id` and answer 2xx quickly (anything else, a redirect included, is retried).
//!
//! ```
//! use hmac::{Hmac, Mac};
//! use sha2::Sha256;
//!
//! fn verify(secret: &[u8], timestamp: &str, signature: &str, body: &[u8], now_unix: i64) -> bool {
//!     let fresh = timestamp.parse::<i64>().is_ok_and(|t| (now_unix - t).abs() <= 300);
//!     let Some(sig) = signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else { return false };
//!     let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
//!     mac.update(format!("{timestamp}.").as_bytes());
//!     mac.update(body);
//!     fresh && mac.verify_slice(&sig).is_ok() // verify_slice compares in constant time
//! }
//!
//! let body = br#"{"id":42,"type":"stopped"}"#;
//! let signature = workspaced::notify::webhook::sign(b"s3cret", 1_767_225_600, body);
//! assert!(verify(b"s3cret", "1767225600", &signature, body, 1_767_225_610));
//! assert!(!verify(b"s3cret", "1767225600", &signature, body, 1_767_229_999), "too old: a replay");
//! assert!(!verify(b"other", "1767225600", &signature, body, 1_767_225_610));
//! ```
//!
//! In Python: `hmac.compare_digest(sig, "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, "sha256").hexdigest())`.
//!
//! # Where delivery starts
//!
//! When no cursor was ever saved (`job_state` answers 0), delivery starts after the newest event that exists when
//! the loop starts, and that position is saved at once: turning the webhook on does not flood the LMS with history.
//! A cursor saved as 0 (the events table was empty at the first start) cannot be told apart from "never saved", so
//! if the process stops before the first event is delivered, the events recorded meanwhile are not sent. Later
//! positions are always above 0, so this only concerns the very first events of a fresh installation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::config::NotifySettings;
use crate::domain::{EventKind, EventReason};
use crate::store::{Event, Store};

/// The `job_state` row holding the id of the last event the receiver acknowledged (or skipped).
pub const CURSOR_KEY: &str = "webhook_cursor";

/// Event kinds sent to the LMS; others (`starting`, `adopted`) are skipped.
pub const DELIVERED_KINDS: &[EventKind] = &[
    EventKind::Warning,
    EventKind::Stopped,
    EventKind::Started,
    EventKind::StartFailed,
    EventKind::Orphan,
    EventKind::QuotaExceeded,
];

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts of an event the receiver refuses with a 4xx (not 408 or 429) before it is given up. Network errors
/// and 5xx are retried without end: the receiver is down, and order is kept until it is back.
pub const REFUSED_ATTEMPTS: u64 = 3;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Wake-up even without a change signal, as a safety net (an event written by another process, a missed signal).
const RESYNC: Duration = Duration::from_secs(5);
const PAGE: i64 = 100;

/// The JSON body of a webhook request and the `data` of a server-sent event. Field order is the wire order.
#[derive(Debug, serde::Serialize)]
pub struct Notification<'a> {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub student_id: &'a str,
    pub reason: Option<&'a str>,
    pub message: &'a str,
    pub at: DateTime<Utc>,
}

impl<'a> From<&'a Event> for Notification<'a> {
    fn from(e: &'a Event) -> Self {
        Self {
            id: e.id,
            kind: e.kind.as_str(),
            student_id: &e.student_id,
            reason: e.reason.map(EventReason::as_str),
            message: &e.message,
            at: e.at,
        }
    }
}

/// The JSON text of an event, as sent to the webhook and in server-sent events.
pub fn to_json(event: &Event) -> String {
    serde_json::to_string(&Notification::from(event)).expect("a notification always serializes")
}

/// Whether events of this kind go to the webhook.
pub fn is_delivered(kind: EventKind) -> bool {
    DELIVERED_KINDS.contains(&kind)
}

/// A 4xx answer other than 408 (timeout) and 429 (slow down): the receiver will not take this event.
fn is_refusal(code: reqwest::StatusCode) -> bool {
    code.is_client_error()
        && code != reqwest::StatusCode::REQUEST_TIMEOUT
        && code != reqwest::StatusCode::TOO_MANY_REQUESTS
}

/// The `X-Workspaced-Signature` value: `sha256=` and the hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("request failed: {0}")]
    Request(reqwest::Error),
    #[error("receiver answered {0}")]
    Status(reqwest::StatusCode),
}

/// Delivers events to the configured webhook until `shutdown` is cancelled. Returns at once when no URL is set.
pub async fn run(store: Store, settings: NotifySettings, shutdown: CancellationToken) {
    let Some(url) = settings.webhook_url else { return };
    let origin = match reqwest::Url::parse(&url) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(e) => {
            tracing::error!(error = %e, "webhook_url is not a URL; no notifications will be sent");
            return;
        }
    };
    let Some(secret) = settings.webhook_secret else {
        // `Settings::check` refuses this; an unsigned notification could not be trusted by the LMS anyway.
        tracing::error!("webhook_url is set without webhook_secret; no notifications will be sent");
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        // A redirected POST turns into a GET without body; its 2xx would acknowledge an event never received.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; no notifications will be sent");
            return;
        }
    };
    let deliverer = Deliverer { store, client, url, origin, secret: secret.into_bytes(), shutdown };
    deliverer.run().await;
}

struct Deliverer {
    store: Store,
    client: reqwest::Client,
    url: String,
    /// Scheme, host and port of `url`, for logs.
    origin: String,
    secret: Vec<u8>,
    shutdown: CancellationToken,
}

impl Deliverer {
    async fn run(&self) {
        // Subscribe before the first read, so an event committed in between still wakes the loop.
        let mut changes = self.store.subscribe_events();
        let newest = *changes.borrow_and_update();
        let Some(mut cursor) = self.starting_cursor(newest).await else { return };
        tracing::info!(cursor, receiver = %self.origin, "webhook delivery running");
        let mut read_retry = FIRST_RETRY;
        loop {
            let page = match self.store.events(None, cursor, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, cursor, "cannot read events for the webhook; retrying");
                    if !self.sleep(read_retry).await {
                        return;
                    }
                    read_retry = (read_retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            read_retry = FIRST_RETRY;
            if page.is_empty() {
                let changed = async {
                    if changes.changed().await.is_err() {
                        // The store is gone; only the periodic wake-up is left.
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = changed => {}
                    _ = tokio::time::sleep(RESYNC) => {}
                }
                continue;
            }
            for event in page {
                if is_delivered(event.kind) {
                    if !self.deliver(&event).await {
                        return;
                    }
                } else {
                    tracing::trace!(event_id = event.id, kind = %event.kind, "event not sent to the webhook");
                }
                cursor = event.id;
                // A lost write only means this event is sent again after a restart, which at-least-once allows.
                if let Err(e) = self.store.set_job_state(CURSOR_KEY, cursor).await {
                    tracing::warn!(error = %e, cursor, "cannot save the webhook cursor");
                }
            }
        }
    }

    /// The saved cursor, or on a first run the newest event id (saved at once). `None` on shutdown.
    async fn starting_cursor(&self, newest: i64) -> Option<i64> {
        let mut retry = FIRST_RETRY;
        loop {
            let result = async {
                let saved = self.store.job_state(CURSOR_KEY).await?;
                if saved > 0 {
                    return Ok(saved);
                }
                if newest > 0 {
                    self.store.set_job_state(CURSOR_KEY, newest).await?;
                    tracing::info!(cursor = newest, "first webhook run: events up to the newest one are not sent");
                }
                Ok::<_, crate::store::StoreError>(newest)
            }
            .await;
            match result {
                Ok(cursor) => return Some(cursor),
                Err(e) => tracing::warn!(error = %e, "cannot read the webhook cursor; retrying"),
            }
            if !self.sleep(retry).await {
                return None;
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
    }

    /// Sends one event until the receiver answers 2xx. Returns false when shut down first.
    async fn deliver(&self, event: &Event) -> bool {
        let body = to_json(event);
        let mut retry = FIRST_RETRY;
        for attempt in 1u64.. {
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                r = self.send(event.id, &body) => r,
            };
            match result {
                Ok(()) => {
                    metrics::counter!("workspaced_webhook_deliveries_total", "outcome" => "ok").increment(1);
                    tracing::info!(event_id = event.id, student = %event.student_id, kind = %event.kind, attempt,
                        "webhook delivered");
                    return true;
                }
                Err(DeliveryError::Status(code)) if is_refusal(code) && attempt >= REFUSED_ATTEMPTS => {
                    // The receiver read it and says it will never take it (a 4xx): retrying forever would hold
                    // back every later event, so this one is given up, loudly.
                    metrics::counter!("workspaced_webhook_deliveries_total", "outcome" => "dropped").increment(1);
                    tracing::error!(event_id = event.id, student = %event.student_id, kind = %event.kind, attempt,
                        status = %code, "webhook receiver refused the event every time; giving it up");
                    return true;
                }
                Err(e) => {
                    metrics::counter!("workspaced_webhook_deliveries_total", "outcome" => "error").increment(1);
                    tracing::warn!(event_id = event.id, student = %event.student_id, kind = %event.kind, attempt,
                        retry_in_ms = retry.as_millis() as u64, error = %e, "webhook delivery failed; will retry");
                }
            }
            if !self.sleep(retry).await {
                return false;
            }
            retry = (retry * 2).min(MAX_RETRY);
        }
        unreachable!("the attempt counter does not run out")
    }

    async fn send(&self, id: i64, body: &str) -> Result<(), DeliveryError> {
        // Wall time, not the injected clock: the receiver compares it with its own wall clock to refuse replays.
        let timestamp = Utc::now().timestamp();
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Workspaced-Event-Id", id.to_string())
            .header("X-Workspaced-Timestamp", timestamp.to_string())
            .header("X-Workspaced-Signature", sign(&self.secret, timestamp, body.as_bytes()))
            .body(body.to_owned())
            .send()
            .await
            // The URL may carry a token; it stays out of the log.
            .map_err(|e| DeliveryError::Request(e.without_url()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(response.status()))
        }
    }

    /// Sleeps unless shut down first; returns whether to go on.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Reference value from Python: hmac.new(b"key", b"1700000000.{}", "sha256").hexdigest()
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn the_body_has_the_documented_fields_in_order() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:15:00.123Z").unwrap().with_timezone(&Utc);
        let e = Event {
            id: 42,
            student_id: "alice".into(),
            kind: EventKind::Stopped,
            reason: Some(EventReason::Idle),
            message: "Workspace stopped due to inactivity.".into(),
            at,
        };
        assert_eq!(
            to_json(&e),
            r#"{"id":42,"type":"stopped","student_id":"alice","reason":"idle","message":"Workspace stopped due to inactivity.","at":"2026-03-01T10:15:00.123Z"}"#
        );
    }

    #[test]
    fn only_the_announced_kinds_are_delivered() {
        let delivered: Vec<&str> = EventKind::ALL.iter().filter(|k| is_delivered(**k)).map(|k| k.as_str()).collect();
        assert_eq!(delivered, ["started", "start_failed", "stopped", "warning", "orphan_removed", "quota_exceeded"]);
    }
}
