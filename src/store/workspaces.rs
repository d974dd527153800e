//! Workspace rows: the records and each state change, written with its event in one transaction.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::culling::PolicyOverrides;
use super::events::insert_event;
use super::{duration_from_ms, from_ms, ms, NewEvent, Store, StoreError};
use crate::domain::{EventKind, EventReason, IdeSecret, Status, StopReason, StudentId};

/// One workspace as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRecord {
    pub student_id: StudentId,
    pub status: Status,
    pub container_id: Option<String>,
    pub host_port: Option<u16>,
    pub last_activity: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<StopReason>,
    /// Why the last start failed, when `status` is `failed`.
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Latest time code-server reported an open connection (an open tab, not necessarily a person).
    pub ide_connected_at: Option<DateTime<Utc>>,
    /// When the current idle warning was sent.
    pub warned_at: Option<DateTime<Utc>>,
    /// Per-workspace culling overrides.
    pub overrides: PolicyOverrides,
}

/// The columns a [`WorkspaceRecord`] is read from. `cull_enabled` is read as a number: sqlx's `Any` driver cannot
/// read a column SQLite declares `BOOLEAN`, and both databases cast a boolean to 0 or 1.
const COLUMNS: &str = "student_id, status, container_id, host_port, last_activity_ms, started_at_ms, stopped_at_ms, \
    stop_reason, error, created_at_ms, updated_at_ms, ide_connected_at_ms, warned_at_ms, idle_timeout_ms, max_age_ms, \
    CAST(cull_enabled AS INTEGER) AS cull_enabled";

impl Store {
    pub async fn get(&self, student: &StudentId) -> Result<Option<WorkspaceRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces WHERE student_id = $1"))
            .bind(student.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record(&r)).transpose()
    }

    /// All workspaces, or those with one status, ordered by student id.
    pub async fn list(&self, status: Option<Status>) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let rows = match status {
            Some(s) => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces WHERE status = $1 ORDER BY student_id"))
                    .bind(s.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces ORDER BY student_id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(record).collect()
    }

    /// `starting`: a start is under way. Creates the record on a student's first start.
    pub async fn mark_starting(&self, student: &StudentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workspaces (student_id, status, created_at_ms, updated_at_ms) VALUES ($1, 'starting', $2, $3)
             ON CONFLICT (student_id) DO UPDATE SET status = 'starting', error = NULL, stop_reason = NULL,
             updated_at_ms = excluded.updated_at_ms",
        )
        .bind(student.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        let id = insert_event(
            &mut tx,
            student,
            &NewEvent { kind: EventKind::Starting, reason: None, message: "Workspace starting." },
            now,
        )
        .await?;
        tx.commit().await?;
        self.announce_all(id).await;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }

    /// `running` in `container_id`, reachable on `host_port` with the IDE's `secret`; the start counts as activity.
    pub async fn mark_running(
        &self,
        student: &StudentId,
        container_id: &str,
        host_port: u16,
        secret: Option<&IdeSecret>,
        now: DateTime<Utc>,
        event: &NewEvent<'_>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE workspaces SET status = 'running', container_id = $1, host_port = $2, ide_secret = $3, started_at_ms = $4,
             last_activity_ms = $5, stop_reason = NULL, error = NULL, warned_at_ms = NULL, updated_at_ms = $6 WHERE student_id = $7",
        )
        .bind(container_id)
        .bind(i64::from(host_port))
        .bind(secret.map(IdeSecret::expose))
        .bind(ms(now))
        .bind(ms(now))
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&mut *tx)
        .await?;
        let id = insert_event(&mut tx, student, event, now).await?;
        tx.commit().await?;
        self.announce_all(id).await;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }

    /// `failed` with the reason; no container remains.
    pub async fn mark_failed(&self, student: &StudentId, error: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE workspaces SET status = 'failed', container_id = NULL, host_port = NULL, ide_secret = NULL, error = $1,
             updated_at_ms = $2 WHERE student_id = $3",
        )
        .bind(error)
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&mut *tx)
        .await?;
        let event = NewEvent { kind: EventKind::StartFailed, reason: Some(EventReason::StartFailed), message: error };
        let id = insert_event(&mut tx, student, &event, now).await?;
        tx.commit().await?;
        self.announce_all(id).await;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }

    /// `stopping` for `reason`: a stop is under way (the reason is kept so a crash mid-stop still ends with it).
    pub async fn mark_stopping(
        &self,
        student: &StudentId,
        reason: StopReason,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        sqlx::query(
            "UPDATE workspaces SET status = 'stopping', stop_reason = $1, updated_at_ms = $2 WHERE student_id = $3",
        )
        .bind(reason.as_str())
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&self.pool)
        .await?;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }

    /// `queued`: a start waits for admission. Creates the record on a student's first start.
    pub async fn mark_queued(&self, student: &StudentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.forget_route(student);
        sqlx::query(
            "INSERT INTO workspaces (student_id, status, created_at_ms, updated_at_ms) VALUES ($1, 'queued', $2, $3)
             ON CONFLICT (student_id) DO UPDATE SET status = 'queued', error = NULL, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(student.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }

    /// Puts the status back after an operation that could not reach the engine, so the record never claims a
    /// change that did not happen.
    pub async fn revert_status(
        &self,
        student: &StudentId,
        status: Status,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        sqlx::query("UPDATE workspaces SET status = $1, updated_at_ms = $2 WHERE student_id = $3")
            .bind(status.as_str())
            .bind(ms(now))
            .bind(student.as_str())
            .execute(&self.pool)
            .await?;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }

    /// `stopped` for `reason`; the container is gone, the files stay.
    pub async fn mark_stopped(
        &self,
        student: &StudentId,
        reason: StopReason,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE workspaces SET status = 'stopped', container_id = NULL, host_port = NULL, ide_secret = NULL, stop_reason = $1,
             stopped_at_ms = $2, updated_at_ms = $3 WHERE student_id = $4",
        )
        .bind(reason.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&mut *tx)
        .await?;
        let event = NewEvent { kind: EventKind::Stopped, reason: Some(reason.into()), message: reason.message() };
        let id = insert_event(&mut tx, student, &event, now).await?;
        tx.commit().await?;
        self.announce_all(id).await;
        // Again (a lookup between the first forget and the write), and on the other replicas.
        self.route_changed(student).await;
        Ok(())
    }
}

fn record(r: &sqlx::any::AnyRow) -> Result<WorkspaceRecord, StoreError> {
    let raw_id: String = r.try_get("student_id")?;
    let corrupt = |message: String| StoreError::Corrupt { student: raw_id.clone(), message };
    let student_id = StudentId::parse(&raw_id).map_err(|e| corrupt(e.to_string()))?;
    let status: String = r.try_get("status")?;
    let stop_reason: Option<String> = r.try_get("stop_reason")?;
    let opt_time = |col: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        Ok(r.try_get::<Option<i64>, _>(col)?.map(from_ms))
    };
    Ok(WorkspaceRecord {
        status: status.parse().map_err(|e| corrupt(format!("{e}")))?,
        container_id: r.try_get("container_id")?,
        host_port: r.try_get::<Option<i64>, _>("host_port")?.and_then(|p| u16::try_from(p).ok()),
        last_activity: opt_time("last_activity_ms")?,
        started_at: opt_time("started_at_ms")?,
        stopped_at: opt_time("stopped_at_ms")?,
        stop_reason: stop_reason.map(|s| s.parse()).transpose().map_err(|e| corrupt(format!("{e}")))?,
        error: r.try_get("error")?,
        created_at: from_ms(r.try_get("created_at_ms")?),
        updated_at: from_ms(r.try_get("updated_at_ms")?),
        ide_connected_at: opt_time("ide_connected_at_ms")?,
        warned_at: opt_time("warned_at_ms")?,
        overrides: PolicyOverrides {
            idle_timeout: r.try_get::<Option<i64>, _>("idle_timeout_ms")?.map(duration_from_ms),
            max_age: r.try_get::<Option<i64>, _>("max_age_ms")?.map(duration_from_ms),
            cull_enabled: r.try_get::<Option<i64>, _>("cull_enabled")?.map(|v| v != 0),
        },
        student_id,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{store, t};
    use super::*;

    #[tokio::test]
    async fn a_workspace_goes_through_its_states_and_each_change_leaves_an_event() {
        let (store, _d) = store().await;
        let s = StudentId::parse("alice").unwrap();
        assert!(store.get(&s).await.unwrap().is_none());
        store.mark_starting(&s, t(0)).await.unwrap();
        assert_eq!(store.get(&s).await.unwrap().unwrap().status, Status::Starting);
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
        store.mark_running(&s, "c1", 40000, None, t(1), &ev).await.unwrap();
        let r = store.get(&s).await.unwrap().unwrap();
        assert_eq!((r.status, r.container_id.as_deref(), r.host_port), (Status::Running, Some("c1"), Some(40000)));
        assert_eq!(r.last_activity, Some(t(1)));
        assert!(store.touch_activity(&s, t(5)).await.unwrap());
        assert!(!store.touch_activity(&s, t(3)).await.unwrap(), "activity never moves back");
        store.mark_stopped(&s, StopReason::Idle, t(10)).await.unwrap();
        let r = store.get(&s).await.unwrap().unwrap();
        assert_eq!((r.status, r.stop_reason, r.container_id), (Status::Stopped, Some(StopReason::Idle), None));
        assert_eq!(r.last_activity, Some(t(5)));
        assert!(!store.touch_activity(&s, t(11)).await.unwrap(), "a stopped workspace takes no activity");
        let kinds: Vec<EventKind> = store.events(Some(&s), 0, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Starting, EventKind::Started, EventKind::Stopped]);
        let last = store.events(None, 0, 100).await.unwrap().pop().unwrap();
        assert_eq!(last.message, "Workspace stopped due to inactivity.");
    }

    #[tokio::test]
    async fn list_filters_by_status() {
        let (store, _d) = store().await;
        for (id, fail) in [("a", false), ("b", true)] {
            let s = StudentId::parse(id).unwrap();
            store.mark_starting(&s, t(0)).await.unwrap();
            if fail {
                store.mark_failed(&s, "boom", t(1)).await.unwrap();
            }
        }
        assert_eq!(store.list(None).await.unwrap().len(), 2);
        let failed = store.list(Some(Status::Failed)).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].error.as_deref(), Some("boom"));
    }
    #[tokio::test]
    async fn overrides_round_trip_through_the_store_at_their_extremes() {
        let (store, _d) = store().await;
        let s = StudentId::parse("alice").unwrap();
        store.mark_starting(&s, t(0)).await.unwrap();
        let o = PolicyOverrides {
            idle_timeout: Some(Duration::from_secs(u64::MAX)),
            max_age: Some(Duration::from_secs(31_536_000)),
            cull_enabled: Some(true),
        };
        assert!(store.set_overrides(&s, &o, t(1)).await.unwrap());
        let back = store.get(&s).await.unwrap().unwrap().overrides;
        assert_eq!(back.idle_timeout, Some(Duration::from_millis(i64::MAX as u64)), "saturated, still huge");
        assert_eq!(back.max_age, Some(Duration::from_secs(31_536_000)));
    }
}
