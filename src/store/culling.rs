//! What the culler reads and writes: activity times, idle warnings and per-workspace policy overrides.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::events::insert_event;
use super::{duration_to_ms, ms, NewEvent, Store, StoreError};
use crate::domain::{EventKind, StopReason, StudentId};

/// Per-workspace culling overrides; `None` means the service default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyOverrides {
    // Named in JSON as in the body of `PUT /api/workspaces/{id}/policy`, so a client can send back what it read.
    #[serde(default, with = "opt_secs", rename = "idle_timeout_seconds")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "opt_secs", rename = "max_age_seconds")]
    pub max_age: Option<Duration>,
    #[serde(default)]
    pub cull_enabled: Option<bool>,
}

/// Durations as whole seconds in JSON.
mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<u64> = serde::Deserialize::deserialize(d)?;
        Ok(v.map(Duration::from_secs))
    }
}

/// One workspace's activity to write (a row of `Activity::flush`'s batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingActivity {
    pub student: StudentId,
    pub last_activity: DateTime<Utc>,
    pub ide_connected_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Moves `last_activity` forward (never back) for a running workspace. Returns whether a row changed.
    pub async fn touch_activity(&self, student: &StudentId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE workspaces SET last_activity_ms = $1 WHERE student_id = $2 AND status = 'running'
             AND (last_activity_ms IS NULL OR last_activity_ms < $3)",
        )
        .bind(ms(at))
        .bind(student.as_str())
        .bind(ms(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Writes a batch of activity (from `Activity::flush`) in one transaction. Only running workspaces take it, and
    /// times never move back.
    pub async fn write_activity(&self, batch: &[PendingActivity]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for p in batch {
            let last = ms(p.last_activity);
            let ide = p.ide_connected_at.map(ms);
            sqlx::query(
                "UPDATE workspaces SET
                   last_activity_ms = CASE WHEN last_activity_ms IS NULL OR last_activity_ms < $1 THEN $2 ELSE last_activity_ms END,
                   ide_connected_at_ms = CASE WHEN $3 IS NOT NULL AND (ide_connected_at_ms IS NULL OR ide_connected_at_ms < $4)
                                         THEN $5 ELSE ide_connected_at_ms END
                 WHERE student_id = $6 AND status = 'running'",
            )
            .bind(last)
            .bind(last)
            .bind(ide)
            .bind(ide)
            .bind(ide)
            .bind(p.student.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records that the student was warned at `now` (with its event), unless a warning for this window was already
    /// recorded. Returns the event id when it recorded one.
    pub async fn record_warning(
        &self,
        student: &StudentId,
        reason: StopReason,
        message: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("UPDATE workspaces SET warned_at_ms = $1 WHERE student_id = $2 AND status = 'running'")
            .bind(ms(now))
            .bind(student.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        // The reason of the stop that is coming: `idle` or `max_age`.
        let event = NewEvent { kind: EventKind::Warning, reason: Some(reason.into()), message };
        let id = insert_event(&mut tx, student, &event, now).await?;
        tx.commit().await?;
        self.announce_all(id).await;
        Ok(Some(id))
    }

    /// Sets the per-workspace culling overrides. Returns false when the student has no workspace.
    pub async fn set_overrides(
        &self,
        student: &StudentId,
        o: &PolicyOverrides,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let to_ms = |d: Option<Duration>| d.map(duration_to_ms);
        let done = sqlx::query(
            "UPDATE workspaces SET idle_timeout_ms = $1, max_age_ms = $2, cull_enabled = $3, updated_at_ms = $4 WHERE student_id = $5",
        )
        .bind(to_ms(o.idle_timeout))
        .bind(to_ms(o.max_age))
        .bind(o.cull_enabled)
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }
}
