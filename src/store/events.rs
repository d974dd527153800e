//! The events table: the audit log and the outbox the webhook and the SSE stream read.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_ms, ms, Store, StoreError};
use crate::domain::{EventKind, EventReason, StudentId};

/// One stored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub id: i64,
    pub student_id: String,
    pub kind: EventKind,
    pub reason: Option<EventReason>,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// A new event to record along with a state change.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub reason: Option<EventReason>,
    pub message: &'a str,
}

impl Store {
    /// A receiver that changes whenever an event is recorded (its value: the newest event id).
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<i64> {
        self.latest_event.subscribe()
    }

    pub(super) fn announce(&self, id: i64) {
        self.latest_event.send_if_modified(|v| {
            if id > *v {
                *v = id;
                true
            } else {
                false
            }
        });
    }

    /// Records an event that comes with no state change (a warning, an orphan removed).
    pub async fn add_event(
        &self,
        student: &StudentId,
        event: &NewEvent<'_>,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = insert_event(&mut tx, student, event, now).await?;
        tx.commit().await?;
        self.announce_all(id).await;
        Ok(id)
    }

    /// Events after `after_id`, oldest first, optionally for one student.
    pub async fn events(
        &self,
        student: Option<&StudentId>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = match student {
            Some(s) => {
                sqlx::query("SELECT * FROM events WHERE student_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                    .bind(s.as_str())
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(Event {
                    id: r.try_get("id")?,
                    student_id: r.try_get("student_id")?,
                    kind: r.try_get("kind")?,
                    reason: r.try_get("reason")?,
                    message: r.try_get("message")?,
                    at: from_ms(r.try_get("at_ms")?),
                })
            })
            .collect()
    }
}

pub(super) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    student: &StudentId,
    event: &NewEvent<'_>,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO events (student_id, kind, reason, message, at_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(student.as_str())
    .bind(event.kind)
    .bind(event.reason)
    .bind(event.message)
    .bind(ms(now))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("id")?)
}
