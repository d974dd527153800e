//! The store: workspaces and events in SQL (SQLite embedded by default), with versioned migrations under
//! `migrations/`. It records state; it never talks to Docker or the file system beyond its own database file.
//! Each state change and its event are written in one transaction, so the audit log never disagrees with a record.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::domain::{EventKind, Status, StopReason, StudentId};

mod reads;
mod sessions;
pub use reads::Reads;
pub use sessions::RevokeScope;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://<file>")]
    UnsupportedUrl(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create the database file {0}: {1}")]
    CreateFile(std::path::PathBuf, std::io::Error),
    #[error("corrupt row for {student}: {message}")]
    Corrupt { student: String, message: String },
}

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

/// One stored event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub id: i64,
    pub student_id: String,
    pub kind: String,
    pub reason: Option<String>,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// A new event to record along with a state change.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub reason: Option<&'a str>,
    pub message: &'a str,
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The id of the newest event, for listeners (SSE, webhook) that wait for new events.
    latest_event: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    /// Where each running IDE listens, for the proxy: filled on demand, emptied before any change that could
    /// release the port, so a request is never sent to a port that may now belong to another student.
    routes: std::sync::Arc<std::sync::Mutex<Routes>>,
}

#[derive(Debug, Default)]
struct Routes {
    ports: std::collections::HashMap<StudentId, u16>,
    /// Bumped on every removal; a lookup that read the database before a removal does not cache its answer.
    generation: u64,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub role: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time; a value outside chrono's range (a corrupt or hand-edited row) saturates at the nearer end instead
/// of jumping to 1970, which would make every deadline look long past.
pub(crate) fn from_ms(v: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(v).single().unwrap_or(if v < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// A stored duration in milliseconds, saturating: a cast would wrap a long one into a negative number.
pub(crate) fn duration_to_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A stored duration; a negative value (never written by us) reads as zero.
pub(crate) fn duration_from_ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

/// Creates a missing database file empty and owner-only (0600) before SQLite opens it: it holds key hashes and
/// every student's state, and SQLite gives its `-wal` and `-shm` files the main file's mode.
fn create_owner_only(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
        return Ok(());
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::CreateFile(path.to_path_buf(), e)),
    }
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let opts = SqliteConnectOptions::from_str(url)?;
        create_owner_only(opts.get_filename())?;
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(8).connect_with(opts).await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let latest: i64 =
            sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM events").fetch_one(&pool).await?.try_get("m")?;
        Ok(Self {
            pool,
            latest_event: std::sync::Arc::new(tokio::sync::watch::channel(latest).0),
            routes: Default::default(),
        })
    }

    /// The host port of the student's IDE while it runs (`None` otherwise). Answers from memory after the first
    /// lookup; every state change that can release the port forgets the answer first.
    pub async fn route(&self, student: &StudentId) -> Result<Option<u16>, StoreError> {
        let generation = {
            let routes = self.routes.lock().expect("routes lock");
            if let Some(port) = routes.ports.get(student) {
                return Ok(Some(*port));
            }
            routes.generation
        };
        let row = sqlx::query("SELECT host_port FROM workspaces WHERE student_id = ? AND status = 'running'")
            .bind(student.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let port = row
            .map(|r| r.try_get::<Option<i64>, _>("host_port"))
            .transpose()?
            .flatten()
            .and_then(|p| u16::try_from(p).ok());
        if let Some(port) = port {
            let mut routes = self.routes.lock().expect("routes lock");
            if routes.generation == generation {
                routes.ports.insert(student.clone(), port);
            }
        }
        Ok(port)
    }

    /// Forgets the student's route (before a stop, a failure, or any status change).
    pub fn forget_route(&self, student: &StudentId) {
        let mut routes = self.routes.lock().expect("routes lock");
        routes.ports.remove(student);
        routes.generation += 1;
    }

    /// Stores a new API key's hash. `id` is the key's public part, shown in lists.
    pub async fn insert_api_key(
        &self,
        id: &str,
        role: &str,
        key_hash: &str,
        label: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (id, role, key_hash, label, created_at_ms) VALUES (?, ?, ?, ?, ?)")
            .bind(id)
            .bind(role)
            .bind(key_hash)
            .bind(label)
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The id and role of the unrevoked key with this hash.
    pub async fn find_api_key(&self, key_hash: &str) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT id, role FROM api_keys WHERE key_hash = ? AND revoked_at_ms IS NULL")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some((r.try_get("id")?, r.try_get("role")?)),
            None => None,
        })
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, role, label, created_at_ms, revoked_at_ms FROM api_keys ORDER BY created_at_ms, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(ApiKeyRecord {
                    id: r.try_get("id")?,
                    role: r.try_get("role")?,
                    label: r.try_get("label")?,
                    created_at: from_ms(r.try_get("created_at_ms")?),
                    revoked_at: r.try_get::<Option<i64>, _>("revoked_at_ms")?.map(from_ms),
                })
            })
            .collect()
    }

    /// Revokes a key; returns whether an unrevoked key by that id existed.
    pub async fn revoke_api_key(&self, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE api_keys SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL")
            .bind(ms(now))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a launch token's nonce used. Returns false when it was already used (a replay).
    pub async fn use_launch_nonce(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        sqlx::query("DELETE FROM used_launch_tokens WHERE expires_at_ms < ?").bind(ms(now)).execute(&self.pool).await?;
        let done =
            sqlx::query("INSERT INTO used_launch_tokens (nonce, expires_at_ms) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(nonce)
                .bind(ms(expires_at))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A receiver that changes whenever an event is recorded (its value: the newest event id).
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<i64> {
        self.latest_event.subscribe()
    }

    fn announce(&self, id: i64) {
        self.latest_event.send_if_modified(|v| {
            if id > *v {
                *v = id;
                true
            } else {
                false
            }
        });
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn get(&self, student: &StudentId) -> Result<Option<WorkspaceRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM workspaces WHERE student_id = ?")
            .bind(student.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| record(&r)).transpose()
    }

    /// All workspaces, or those with one status, ordered by student id.
    pub async fn list(&self, status: Option<Status>) -> Result<Vec<WorkspaceRecord>, StoreError> {
        let rows = match status {
            Some(s) => {
                sqlx::query("SELECT * FROM workspaces WHERE status = ? ORDER BY student_id")
                    .bind(s.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query("SELECT * FROM workspaces ORDER BY student_id").fetch_all(&self.pool).await?,
        };
        rows.iter().map(record).collect()
    }

    /// `starting`: a start is under way. Creates the record on a student's first start.
    pub async fn mark_starting(&self, student: &StudentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workspaces (student_id, status, created_at_ms, updated_at_ms) VALUES (?, 'starting', ?, ?)
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
        self.announce(id);
        self.forget_route(student); // again: a lookup between the first forget and the write
        Ok(())
    }

    /// `running` in `container_id`, reachable on `host_port`; the start counts as activity.
    pub async fn mark_running(
        &self,
        student: &StudentId,
        container_id: &str,
        host_port: u16,
        now: DateTime<Utc>,
        event: &NewEvent<'_>,
    ) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE workspaces SET status = 'running', container_id = ?, host_port = ?, started_at_ms = ?,
             last_activity_ms = ?, stop_reason = NULL, error = NULL, warned_at_ms = NULL, updated_at_ms = ? WHERE student_id = ?",
        )
        .bind(container_id)
        .bind(i64::from(host_port))
        .bind(ms(now))
        .bind(ms(now))
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&mut *tx)
        .await?;
        let id = insert_event(&mut tx, student, event, now).await?;
        tx.commit().await?;
        self.announce(id);
        self.forget_route(student); // again: a lookup between the first forget and the write
        Ok(())
    }

    /// `failed` with the reason; no container remains.
    pub async fn mark_failed(&self, student: &StudentId, error: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE workspaces SET status = 'failed', container_id = NULL, host_port = NULL, error = ?,
             updated_at_ms = ? WHERE student_id = ?",
        )
        .bind(error)
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&mut *tx)
        .await?;
        let event = NewEvent { kind: EventKind::StartFailed, reason: Some("start_failed"), message: error };
        let id = insert_event(&mut tx, student, &event, now).await?;
        tx.commit().await?;
        self.announce(id);
        self.forget_route(student); // again: a lookup between the first forget and the write
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
            "UPDATE workspaces SET status = 'stopping', stop_reason = ?, updated_at_ms = ? WHERE student_id = ?",
        )
        .bind(reason.as_str())
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&self.pool)
        .await?;
        self.forget_route(student); // again: a lookup between the first forget and the write
        Ok(())
    }

    /// `queued`: a start waits for admission. Creates the record on a student's first start.
    pub async fn mark_queued(&self, student: &StudentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.forget_route(student);
        sqlx::query(
            "INSERT INTO workspaces (student_id, status, created_at_ms, updated_at_ms) VALUES (?, 'queued', ?, ?)
             ON CONFLICT (student_id) DO UPDATE SET status = 'queued', error = NULL, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(student.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        self.forget_route(student); // again: a lookup between the first forget and the write
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
        sqlx::query("UPDATE workspaces SET status = ?, updated_at_ms = ? WHERE student_id = ?")
            .bind(status.as_str())
            .bind(ms(now))
            .bind(student.as_str())
            .execute(&self.pool)
            .await?;
        self.forget_route(student); // again: a lookup between the first forget and the write
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
            "UPDATE workspaces SET status = 'stopped', container_id = NULL, host_port = NULL, stop_reason = ?,
             stopped_at_ms = ?, updated_at_ms = ? WHERE student_id = ?",
        )
        .bind(reason.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .bind(student.as_str())
        .execute(&mut *tx)
        .await?;
        let event = NewEvent { kind: EventKind::Stopped, reason: Some(reason.as_str()), message: reason.message() };
        let id = insert_event(&mut tx, student, &event, now).await?;
        tx.commit().await?;
        self.announce(id);
        self.forget_route(student); // again: a lookup between the first forget and the write
        Ok(())
    }

    /// Moves `last_activity` forward (never back) for a running workspace. Returns whether a row changed.
    pub async fn touch_activity(&self, student: &StudentId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE workspaces SET last_activity_ms = ? WHERE student_id = ? AND status = 'running'
             AND (last_activity_ms IS NULL OR last_activity_ms < ?)",
        )
        .bind(ms(at))
        .bind(student.as_str())
        .bind(ms(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
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
        self.announce(id);
        Ok(id)
    }

    /// Writes a batch of activity (from `Activity::flush`) in one transaction. Only running workspaces take it, and
    /// times never move back.
    pub async fn write_activity(&self, batch: &[crate::activity::Pending]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for p in batch {
            let last = ms(p.last_activity);
            let ide = p.ide_connected_at.map(ms);
            sqlx::query(
                "UPDATE workspaces SET
                   last_activity_ms = CASE WHEN last_activity_ms IS NULL OR last_activity_ms < ? THEN ? ELSE last_activity_ms END,
                   ide_connected_at_ms = CASE WHEN ? IS NOT NULL AND (ide_connected_at_ms IS NULL OR ide_connected_at_ms < ?)
                                         THEN ? ELSE ide_connected_at_ms END
                 WHERE student_id = ? AND status = 'running'",
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
        let done = sqlx::query("UPDATE workspaces SET warned_at_ms = ? WHERE student_id = ? AND status = 'running'")
            .bind(ms(now))
            .bind(student.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        // The reason of the stop that is coming: `idle` or `max_age`.
        let event = NewEvent { kind: EventKind::Warning, reason: Some(reason.as_str()), message };
        let id = insert_event(&mut tx, student, &event, now).await?;
        tx.commit().await?;
        self.announce(id);
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
            "UPDATE workspaces SET idle_timeout_ms = ?, max_age_ms = ?, cull_enabled = ?, updated_at_ms = ? WHERE student_id = ?",
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

    /// A background job's saved position (0 when never saved).
    pub async fn job_state(&self, name: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT value FROM job_state WHERE name = ?").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?.unwrap_or(0))
    }

    pub async fn set_job_state(&self, name: &str, value: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
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
                sqlx::query("SELECT * FROM events WHERE student_id = ? AND id > ? ORDER BY id LIMIT ?")
                    .bind(s.as_str())
                    .bind(after_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT * FROM events WHERE id > ? ORDER BY id LIMIT ?")
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

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    student: &StudentId,
    event: &NewEvent<'_>,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "INSERT INTO events (student_id, kind, reason, message, at_ms) VALUES (?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(student.as_str())
    .bind(event.kind.as_str())
    .bind(event.reason)
    .bind(event.message)
    .bind(ms(now))
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("id")?)
}

fn record(r: &sqlx::sqlite::SqliteRow) -> Result<WorkspaceRecord, StoreError> {
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
            cull_enabled: r.try_get("cull_enabled")?,
        },
        student_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    fn t(s: i64) -> DateTime<Utc> {
        from_ms(1_800_000_000_000 + s * 1000)
    }

    #[tokio::test]
    async fn a_workspace_goes_through_its_states_and_each_change_leaves_an_event() {
        let (store, _d) = store().await;
        let s = StudentId::parse("alice").unwrap();
        assert!(store.get(&s).await.unwrap().is_none());
        store.mark_starting(&s, t(0)).await.unwrap();
        assert_eq!(store.get(&s).await.unwrap().unwrap().status, Status::Starting);
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
        store.mark_running(&s, "c1", 40000, t(1), &ev).await.unwrap();
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
        let kinds: Vec<String> = store.events(Some(&s), 0, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["starting", "started", "stopped"]);
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
    async fn only_sqlite_urls_are_accepted_for_now() {
        assert!(matches!(Store::connect("postgres://x").await, Err(StoreError::UnsupportedUrl(_))));
    }

    #[test]
    fn times_outside_chronos_range_saturate_at_its_ends() {
        assert_eq!(from_ms(i64::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(from_ms(i64::MIN), DateTime::<Utc>::MIN_UTC);
        let max = ms(DateTime::<Utc>::MAX_UTC);
        assert_eq!(ms(from_ms(max)), max, "the ends round-trip (to the millisecond)");
        assert_eq!(from_ms(max + 1), DateTime::<Utc>::MAX_UTC, "just past the end saturates");
        assert_eq!(from_ms(ms(DateTime::<Utc>::MIN_UTC)), DateTime::<Utc>::MIN_UTC);
        assert_eq!(from_ms(-1), DateTime::<Utc>::UNIX_EPOCH - chrono::Duration::milliseconds(1));
    }

    #[test]
    fn long_durations_saturate_instead_of_wrapping_negative() {
        assert_eq!(duration_to_ms(Duration::from_secs(9_223_372_036_854_776)), i64::MAX);
        assert_eq!(duration_to_ms(Duration::MAX), i64::MAX);
        assert_eq!(duration_to_ms(Duration::from_secs(31_536_000)), 31_536_000_000);
        assert_eq!(duration_from_ms(i64::MAX), Duration::from_millis(i64::MAX as u64));
        assert_eq!(duration_from_ms(-5), Duration::ZERO);
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
