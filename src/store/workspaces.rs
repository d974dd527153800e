//! Workspace rows: the records and each state change, written with its event in one transaction.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::culling::{PendingActivity, PolicyOverrides};
use super::events::insert_event;
use super::{duration_from_ms, from_ms, ms, NewEvent, Route, Store, StoreError};
use crate::domain::{CullPolicy, EventKind, EventReason, IdeSecret, Status, StopReason, StudentId};

/// A running workspace's IDE, for the IDE polls and the engine's stats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPort {
    pub student: StudentId,
    pub port: Option<u16>,
    /// `None`: 127.0.0.1.
    pub host: Option<String>,
}

/// One workspace as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRecord {
    pub student_id: StudentId,
    pub status: Status,
    pub container_id: Option<String>,
    pub host_port: Option<u16>,
    /// The host `host_port` is published on, while running (a Swarm task's node); `None`: 127.0.0.1.
    pub host_addr: Option<String>,
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
    /// The course the workspace belongs to, if any.
    pub course: Option<crate::domain::CourseId>,
    /// The course's culling values as of the last start (under the workspace's own overrides).
    pub course_policy: crate::domain::Overrides,
    /// When the course's starter files were copied into the folder; `None`: not yet, for this course.
    pub course_setup_at: Option<DateTime<Utc>>,
    /// The image and limits the last start used.
    pub applied_limits: Option<super::AppliedLimits>,
}

/// The columns a [`WorkspaceRecord`] is read from. `cull_enabled` is read as a number: sqlx's `Any` driver cannot
/// read a column SQLite declares `BOOLEAN`, and both databases cast a boolean to 0 or 1.
const COLUMNS: &str = "student_id, status, container_id, host_port, host_addr, last_activity_ms, started_at_ms, stopped_at_ms, \
    stop_reason, error, created_at_ms, updated_at_ms, ide_connected_at_ms, warned_at_ms, idle_timeout_ms, max_age_ms, \
    CAST(cull_enabled AS INTEGER) AS cull_enabled, course_id, course_setup_ms, course_idle_timeout_ms, \
    course_warning_lead_ms, course_max_age_ms, CAST(course_cull_enabled AS INTEGER) AS course_cull_enabled, applied_limits";

impl Store {
    pub async fn get(&self, student: &StudentId) -> Result<Option<WorkspaceRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces WHERE student_id = $1"))
            .bind(student.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record(&r)).transpose()
    }

    /// The workspaces of one course, ordered by student id.
    pub async fn list_in_course(&self, course: &crate::domain::CourseId) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM workspaces WHERE course_id = $1 ORDER BY student_id"))
            .bind(course.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
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

    /// `running` in `container_id`, reachable by `route` (host and port, secret, and how the proxy forwards: the mode
    /// the start used, kept until the next start); the start counts as activity. The host must have been checked
    /// (`domain::parse_upstream_host`).
    pub async fn mark_running(
        &self,
        student: &StudentId,
        container_id: &str,
        route: &Route,
        now: DateTime<Utc>,
        event: &NewEvent<'_>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE workspaces SET status = 'running', container_id = $1, host_port = $2, ide_secret = $3, started_at_ms = $4,
             last_activity_ms = $5, stop_reason = NULL, error = NULL, warned_at_ms = NULL, updated_at_ms = $6,
             proxy_full_path = $7, ide_auth = $8, host_addr = $9 WHERE student_id = $10",
        )
        .bind(container_id)
        .bind(i64::from(route.port))
        .bind(route.secret.as_ref().map(IdeSecret::expose))
        .bind(ms(now))
        .bind(ms(now))
        .bind(ms(now))
        .bind(route.full_path)
        .bind(route.auth.as_ref().map(ToString::to_string))
        .bind(route.host.as_deref())
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
            "UPDATE workspaces SET status = 'failed', container_id = NULL, host_port = NULL, host_addr = NULL, ide_secret = NULL, error = $1,
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
            "UPDATE workspaces SET status = 'stopped', container_id = NULL, host_port = NULL, host_addr = NULL, ide_secret = NULL, stop_reason = $1,
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

/// Rows per statement of [`Store::write_activity_batch`]: three parameters each, far below both databases' limits
/// (SQLite 32,766, PostgreSQL 65,535).
const ACTIVITY_ROWS_PER_STATEMENT: usize = 500;

impl Store {
    /// How many workspaces are running (through the status index; no row is decoded).
    pub async fn count_running(&self) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM workspaces WHERE status = 'running'")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The running workspaces with the host and port their IDE listens on, ordered by student id: three columns
    /// instead of a whole record, for the IDE polls and the engine's stats.
    pub async fn running_ports(&self) -> Result<Vec<RunningPort>, StoreError> {
        let rows = sqlx::query(
            "SELECT student_id, host_port, host_addr FROM workspaces WHERE status = 'running' ORDER BY student_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let raw: String = r.try_get("student_id")?;
                let student = StudentId::parse(&raw)
                    .map_err(|e| StoreError::Corrupt { student: raw.clone(), message: e.to_string() })?;
                let port = r.try_get::<Option<i64>, _>("host_port")?.and_then(|p| u16::try_from(p).ok());
                Ok(RunningPort { student, port, host: r.try_get("host_addr")? })
            })
            .collect()
    }

    /// Records the host a running workspace's IDE is now reached at (the reconciler, when the engine reports its
    /// node at another address than the record: a record from before hosts were kept, say). Only while it runs in
    /// `container_id`; the route is forgotten here and on the other replicas. The host must have been checked.
    pub async fn set_route_host(
        &self,
        student: &StudentId,
        container_id: &str,
        host: Option<&str>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        sqlx::query(
            "UPDATE workspaces SET host_addr = $1 WHERE student_id = $2 AND status = 'running' AND container_id = $3",
        )
        .bind(host)
        .bind(student.as_str())
        .bind(container_id)
        .execute(&self.pool)
        .await?;
        self.route_changed(student).await;
        Ok(())
    }

    /// The running workspaces that may be due for a warning or a stop by `due_by` under the service's culling
    /// `defaults` and each row's own overrides: every running record whose warning time, computed from the stored
    /// times alone, is not after `due_by`, and perhaps a few more. Ordered by student id.
    ///
    /// Why no due workspace is left out: `decide` says "keep" unless `now` has reached the warning time (which is
    /// never after the stop), and the warning time only grows with the last activity, which the sweep takes as the
    /// stored one or a newer one from memory, never an older one. So a row whose warning time from the stored
    /// times is after `now` is kept whatever memory says. The filter below is that warning time, written so that it
    /// errs towards more rows: the lead is the default one where the policy's may be shorter (for `max_age`), and
    /// the caller gives `due_by` a little after `now` for the rounding of durations to milliseconds. No arithmetic
    /// touches a stored time (a corrupt one must not overflow PostgreSQL's BIGINT and fail the whole sweep); a
    /// negative stored duration reads as zero there as in `duration_from_ms`.
    pub async fn cull_candidates(
        &self,
        due_by: DateTime<Utc>,
        defaults: &CullPolicy,
    ) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let due = ms(due_by);
        let idle = super::duration_to_ms(defaults.idle_timeout);
        let lead = super::duration_to_ms(defaults.warning_lead);
        let max_age = defaults.max_age.map(super::duration_to_ms);
        // Each value in force: the workspace's own override, else its course's (copied at its start), else the
        // default. Stored durations are clamped to [0, one year] (what the API accepts), so a corrupt one can neither
        // overflow the arithmetic nor hide a row.
        // Idle: warn_at = last + idle - min(lead, idle), so due when last <= due - max(idle - lead, 0).
        // Max age: warn_at = started + max_age - lead' with lead' <= lead, so due (at the latest) when
        // started <= due + lead - max_age.
        // $1 enabled by default, $2 due, $3 the default idle timeout, $4 the default lead, $5 the default max age,
        // $6 the longest duration accepted.
        let clamp = |e: &str| format!("(CASE WHEN {e} < 0 THEN 0 WHEN {e} > $6 THEN $6 ELSE {e} END)");
        let idle_eff = clamp("COALESCE(idle_timeout_ms, course_idle_timeout_ms, $3)");
        let lead_eff = clamp("COALESCE(course_warning_lead_ms, $4)");
        let age_eff = clamp("COALESCE(max_age_ms, course_max_age_ms, $5)");
        let sql = format!(
            "SELECT {COLUMNS} FROM workspaces WHERE status = 'running'
               AND COALESCE(CAST(cull_enabled AS INTEGER), CAST(course_cull_enabled AS INTEGER), $1) <> 0
               AND (COALESCE(last_activity_ms, started_at_ms, updated_at_ms)
                      <= $2 - CASE WHEN {idle_eff} > {lead_eff} THEN {idle_eff} - {lead_eff} ELSE 0 END
                    OR COALESCE(started_at_ms, updated_at_ms) <= $2 + {lead_eff} - {age_eff})
             ORDER BY student_id"
        );
        let longest = super::duration_to_ms(crate::domain::MAX_DURATION);
        let rows = sqlx::query(&sql)
            .bind(i64::from(defaults.enabled))
            .bind(due)
            .bind(idle.min(longest))
            .bind(lead.min(longest))
            .bind(max_age.map(|a| a.min(longest)))
            .bind(longest)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    /// Writes a batch of activity (from `Activity::flush`) in one transaction, one statement per
    /// [`ACTIVITY_ROWS_PER_STATEMENT`] rows rather than one per row: on PostgreSQL each statement is a round trip,
    /// and a flush of thousands of rows must stay well under the flush interval. Only running workspaces take it,
    /// and times never move back.
    pub async fn write_activity_batch(&self, batch: &[PendingActivity]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(ACTIVITY_ROWS_PER_STATEMENT) {
            // `VALUES` names its columns column1, column2, ... in both databases.
            let values = (0..chunk.len())
                .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE workspaces SET
                   last_activity_ms = CASE WHEN workspaces.last_activity_ms IS NULL
                     OR workspaces.last_activity_ms < v.column2 THEN v.column2 ELSE workspaces.last_activity_ms END,
                   ide_connected_at_ms = CASE WHEN v.column3 IS NOT NULL AND (workspaces.ide_connected_at_ms IS NULL
                     OR workspaces.ide_connected_at_ms < v.column3) THEN v.column3 ELSE workspaces.ide_connected_at_ms END
                 FROM (VALUES {values}) AS v
                 WHERE workspaces.student_id = v.column1 AND workspaces.status = 'running'"
            );
            let mut q = sqlx::query(&sql);
            for p in chunk {
                q = q.bind(p.student.as_str()).bind(ms(p.last_activity)).bind(p.ide_connected_at.map(ms));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
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
        host_addr: r.try_get("host_addr")?,
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
        course: r
            .try_get::<Option<String>, _>("course_id")?
            .map(|c| crate::domain::CourseId::parse(&c))
            .transpose()
            .map_err(|e| corrupt(format!("course: {e}")))?,
        course_policy: crate::domain::Overrides {
            idle_timeout: r.try_get::<Option<i64>, _>("course_idle_timeout_ms")?.map(duration_from_ms),
            warning_lead: r.try_get::<Option<i64>, _>("course_warning_lead_ms")?.map(duration_from_ms),
            max_age: r.try_get::<Option<i64>, _>("course_max_age_ms")?.map(duration_from_ms),
            enabled: r.try_get::<Option<i64>, _>("course_cull_enabled")?.map(|v| v != 0),
        },
        course_setup_at: opt_time("course_setup_ms")?,
        // Display only: an unreadable value is shown as unknown rather than failing every read of the record.
        applied_limits: r.try_get::<Option<String>, _>("applied_limits")?.and_then(|j| serde_json::from_str(&j).ok()),
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
        store.mark_running(&s, "c1", &crate::store::Route::new(40000, None), t(1), &ev).await.unwrap();
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

    /// The sweep's promise: every running workspace that `decide` would warn or stop at `now`, from its stored times
    /// and overrides, is among the candidates, over a grid of activity, start, warning, override and default
    /// policies and many `now`s. And the filter filters: a fresh workspace is not among them.
    #[tokio::test]
    async fn cull_candidates_hold_every_workspace_decide_would_warn_or_stop() {
        use crate::domain::{cull_input, decide, effective_policy, Decision, Overrides};
        let (store, _d) = store().await;
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
        let secs = |s: u64| Some(Duration::from_secs(s));
        let overrides = [
            PolicyOverrides::default(),
            PolicyOverrides { idle_timeout: secs(60), ..Default::default() },
            PolicyOverrides { idle_timeout: secs(30), ..Default::default() }, // shorter than the lead
            PolicyOverrides { max_age: secs(2000), ..Default::default() },
            PolicyOverrides { max_age: secs(0), ..Default::default() },
            PolicyOverrides { idle_timeout: Some(Duration::MAX), max_age: Some(Duration::MAX), cull_enabled: None },
            PolicyOverrides { cull_enabled: Some(false), ..Default::default() },
            PolicyOverrides { cull_enabled: Some(true), idle_timeout: secs(3000), ..Default::default() },
        ];
        // A course's values, copied at the start, under the workspace's own overrides.
        let courses = [
            Overrides::default(),
            Overrides { idle_timeout: secs(400), warning_lead: secs(300), ..Default::default() },
            Overrides { warning_lead: secs(600), max_age: secs(1800), ..Default::default() },
            Overrides { enabled: Some(false), idle_timeout: secs(100), ..Default::default() },
        ];
        let limits =
            crate::store::AppliedLimits { image: "i".into(), cpus: 1.0, memory_bytes: 1 << 30, pids_limit: 64 };
        let mut n = 0;
        for start in [0, 1000] {
            for idle_for in [0, 500, 1500] {
                for (k, o) in overrides.iter().enumerate() {
                    for (warned, course) in
                        [None, Some(200)].into_iter().flat_map(|w| courses.iter().map(move |c| (w, c)))
                    {
                        n += 1;
                        let s = StudentId::parse(&format!("w{n:03}")).unwrap();
                        store.mark_starting(&s, t(start)).await.unwrap();
                        store
                            .mark_running(&s, "c", &crate::store::Route::new(40000, None), t(start), &ev)
                            .await
                            .unwrap();
                        store.touch_activity(&s, t(start + idle_for)).await.unwrap();
                        if k > 0 {
                            store.set_overrides(&s, o, t(start)).await.unwrap();
                        }
                        if *course != Overrides::default() {
                            store.set_start_profile(&s, course, &limits).await.unwrap();
                        }
                        if let Some(w) = warned {
                            store.record_warning(&s, StopReason::Idle, "w", t(start + idle_for + w)).await.unwrap();
                        }
                    }
                }
            }
        }
        assert!(running_with_course(&store).await > 0, "the grid has workspaces with a course's values");
        let fresh = StudentId::parse("fresh").unwrap();
        store.mark_starting(&fresh, t(5990)).await.unwrap();
        store.mark_running(&fresh, "c", &crate::store::Route::new(40000, None), t(5990), &ev).await.unwrap();
        let running = store.list(Some(Status::Running)).await.unwrap();
        assert_eq!(running.len(), n + 1);
        assert_eq!(store.count_running().await.unwrap(), n + 1);

        let mut due_seen = 0;
        for max_age in [None, secs(2500)] {
            let defaults = CullPolicy {
                idle_timeout: Duration::from_secs(900),
                warning_lead: Duration::from_secs(120),
                max_age,
                enabled: true,
            };
            for now in (0..6000).step_by(37).map(t) {
                let candidates: Vec<StudentId> =
                    store.cull_candidates(now, &defaults).await.unwrap().into_iter().map(|r| r.student_id).collect();
                for r in &running {
                    let o = Overrides {
                        idle_timeout: r.overrides.idle_timeout,
                        max_age: r.overrides.max_age,
                        enabled: r.overrides.cull_enabled,
                        warning_lead: None,
                    };
                    let policy = effective_policy(&defaults, &o.over(&r.course_policy));
                    let input = cull_input(r.last_activity, None, r.started_at, r.updated_at, r.warned_at);
                    if decide(&input, now, &policy) != Decision::Keep {
                        due_seen += 1;
                        assert!(
                            candidates.contains(&r.student_id),
                            "{} is due at {now} but no candidate",
                            r.student_id
                        );
                    }
                }
                assert!(!candidates.contains(&fresh), "a workspace started at 5990 is no candidate at {now}");
            }
        }
        assert!(due_seen > 1000, "the grid has due workspaces to miss: {due_seen}");
    }

    async fn running_with_course(store: &Store) -> usize {
        let all = store.list(Some(Status::Running)).await.unwrap();
        all.iter().filter(|r| r.course_policy != crate::domain::Overrides::default()).count()
    }

    #[tokio::test]
    async fn an_activity_batch_of_many_rows_moves_running_times_forward_only() {
        let (store, _d) = store().await;
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
        let mut batch = Vec::new();
        // More rows than one statement takes, so the batch spans three.
        for i in 0..1001 {
            let s = StudentId::parse(&format!("s{i:04}")).unwrap();
            store.mark_starting(&s, t(0)).await.unwrap();
            store.mark_running(&s, "c", &crate::store::Route::new(40000, None), t(10), &ev).await.unwrap();
            let ide = (i % 2 == 0).then(|| t(20));
            batch.push(PendingActivity { student: s, last_activity: t(30 + i), ide_connected_at: ide });
        }
        let back = StudentId::parse("s0001").unwrap();
        batch[1].last_activity = t(5); // older than the stored start: never moves back
        let stopped = StudentId::parse("s0002").unwrap();
        store.mark_stopped(&stopped, StopReason::User, t(11)).await.unwrap();
        store.write_activity_batch(&batch).await.unwrap();
        store.write_activity_batch(&[]).await.unwrap();
        for (i, p) in batch.iter().enumerate() {
            let r = store.get(&p.student).await.unwrap().unwrap();
            let want = if p.student == back || p.student == stopped { t(10) } else { t(30 + i as i64) };
            assert_eq!(r.last_activity, Some(want), "{}", p.student);
            let ide = if p.student == stopped { None } else { p.ide_connected_at };
            assert_eq!(r.ide_connected_at, ide, "{}", p.student);
        }
        // A batch without an IDE sighting keeps the stored one.
        let s0 = batch[0].student.clone();
        let later = PendingActivity { student: s0.clone(), last_activity: t(5000), ide_connected_at: None };
        store.write_activity_batch(&[later]).await.unwrap();
        let r = store.get(&s0).await.unwrap().unwrap();
        assert_eq!((r.last_activity, r.ide_connected_at), (Some(t(5000)), Some(t(20))));
    }
}
