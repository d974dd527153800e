//! The store: workspaces and events in SQL (SQLite embedded by default), with versioned migrations under
//! `migrations/`. It records state; it never talks to Docker or the file system beyond its own database file.
//! Each state change and its event are written in one transaction, so the audit log never disagrees with a record.
//!
//! `mod.rs` opens the database and holds the error type and time conversions; each table group has its own file.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod culling;
mod encoding;
mod events;
mod jobs;
mod keys;
mod reads;
mod routes;
mod schema;
mod sessions;
mod workspaces;

pub use culling::{PendingActivity, PolicyOverrides};
pub use events::{Event, NewEvent};
pub use keys::ApiKeyRecord;
pub use reads::Reads;
pub use routes::Route;
pub use schema::SchemaState;
pub use sessions::RevokeScope;
pub use workspaces::WorkspaceRecord;

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
    #[error("the database file {0} does not exist")]
    Missing(std::path::PathBuf),
    #[error("corrupt row for {student}: {message}")]
    Corrupt { student: String, message: String },
}

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// The id of the newest event, for listeners (SSE, webhook) that wait for new events.
    latest_event: std::sync::Arc<tokio::sync::watch::Sender<i64>>,
    /// Where each running IDE listens, for the proxy: filled on demand, emptied before any change that could
    /// release the port, so a request is never sent to a port that may now belong to another student.
    routes: std::sync::Arc<std::sync::Mutex<routes::Routes>>,
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
        schema::MIGRATOR.run(&pool).await?;
        let latest: i64 =
            sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM events").fetch_one(&pool).await?.try_get("m")?;
        Ok(Self {
            pool,
            latest_event: std::sync::Arc::new(tokio::sync::watch::channel(latest).0),
            routes: Default::default(),
        })
    }

    /// Opens an existing database for reading only: no file is created, no migration runs and no journal mode
    /// is set, so an inspection (`doctor`) never changes a production database, even from a newer binary.
    /// The event subscription starts at 0: a read-only store is for looking, not for following events.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        if !url.starts_with("sqlite:") {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        let opts = SqliteConnectOptions::from_str(url)?.read_only(true).create_if_missing(false);
        let file = opts.get_filename();
        if !file.as_os_str().is_empty() && file.to_str() != Some(":memory:") && !file.exists() {
            return Err(StoreError::Missing(file.to_path_buf()));
        }
        let opts = opts.busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await?;
        Ok(Self {
            pool,
            latest_event: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            routes: Default::default(),
        })
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (Store::connect(&url).await.unwrap(), dir)
    }

    pub fn t(s: i64) -> DateTime<Utc> {
        from_ms(1_800_000_000_000 + s * 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
