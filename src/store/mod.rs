//! The store: workspaces and events in SQL, SQLite embedded by default or PostgreSQL (`DATABASE_URL` picks), with
//! versioned migrations under `migrations/<backend>/` kept in step. One set of queries serves both: they go through
//! sqlx's `Any` driver, with `$N` parameters (which SQLite reads as numbered ones) and SQL both databases share.
//! It records state; it never talks to Docker or the file system beyond its own database file.
//! Each state change and its event are written in one transaction, so the audit log never disagrees with a record.
//!
//! `mod.rs` opens the database and holds the error type and time conversions; each table group has its own file.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::AnyPool;
use sqlx::Row;

mod admission;
mod courses;
mod culling;
mod encoding;
mod erase;
mod events;
mod ide_cookies;
mod jobs;
mod keys;
mod locks;
mod lti;
mod notify;
mod reads;
mod routes;
mod schema;
mod sessions;
mod workspaces;

pub use courses::{AppliedLimits, CourseCounts, CourseDeletion, CourseRecord};
pub use culling::{PendingActivity, PolicyOverrides};
pub use events::{Event, NewEvent};
pub use ide_cookies::{MAX_IDE_COOKIES, MAX_IDE_COOKIE_NAME};
pub use keys::ApiKeyRecord;
pub use locks::AdvisoryLock;
pub use lti::{LtiContext, LtiUser};
pub use reads::Reads;
pub use routes::Route;
pub use schema::SchemaState;
pub use sessions::RevokeScope;
pub use workspaces::{RunningPort, WorkspaceRecord};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported DATABASE_URL {0:?}: use sqlite://<file> or postgres://<user>@<host>/<database>")]
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

impl StoreError {
    /// Whether the database could not be reached (down, restarting, the network, every connection busy): the
    /// request may succeed later unchanged, and the HTTP layer answers 503 `store_unavailable`.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Db(e) = self else { return false };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // PostgreSQL's classes 08 (connection exception) and 57P (operator intervention: shutdown, cannot
            // connect now); SQLite's busy and locked.
            sqlx::Error::Database(d) => d
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "5" || c == "6" || c == "517"),
            _ => false,
        }
    }
}

/// How long a query waits for a connection (or for the server to accept one) before it fails as unavailable: a
/// request during a database outage gets its 503 in this time.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a `DATABASE_URL` names.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }
}

/// A database URL fit for a message or a log: without its password.
pub fn redacted_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Per connection on SQLite: wait for a writer instead of failing at once, keep foreign keys, and the durability
/// WAL mode gives with `NORMAL` (the journal mode itself is set once, when the store is opened for writing).
const SQLITE_SESSION: &str = "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";

/// Applies [`SQLITE_SESSION`] to a new connection. A named function: a closure's future would have to be `Send` for
/// every borrow of the connection, which the compiler cannot prove.
async fn sqlite_session(conn: &mut sqlx::AnyConnection) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    conn.execute(SQLITE_SESSION).await?;
    Ok(())
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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
        let backend = Backend::of_url(url)?;
        if backend == Backend::Sqlite {
            let opts = SqliteConnectOptions::from_str(url)?;
            create_owner_only(opts.get_filename())?;
        }
        let pool = Self::pool(url, backend, 8).await?;
        if backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        schema::migrator(backend).run(&pool).await?;
        let latest: i64 =
            sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM events").fetch_one(&pool).await?.try_get("m")?;
        let store = Self {
            pool,
            backend,
            latest_event: std::sync::Arc::new(tokio::sync::watch::channel(latest).0),
            routes: Default::default(),
        };
        if backend == Backend::Postgres {
            // Other replicas' changes: their route changes and events, as they commit.
            store.listen(url).await?;
        }
        Ok(store)
    }

    /// A pool of `max` connections; on SQLite each connection gets [`SQLITE_SESSION`].
    async fn pool(url: &str, backend: Backend, max: u32) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        let options = AnyPoolOptions::new().max_connections(max).acquire_timeout(ACQUIRE_TIMEOUT);
        let options = options.after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    sqlite_session(conn).await?;
                }
                Ok(())
            })
        });
        Ok(options.connect(url).await?)
    }

    /// Opens an existing database for reading only: no file is created, no migration runs and no journal mode
    /// is set, so an inspection (`doctor`) never changes a production database, even from a newer binary.
    /// The event subscription starts at 0: a read-only store is for looking, not for following events.
    pub async fn open_read_only(url: &str) -> Result<Self, StoreError> {
        let backend = Backend::of_url(url)?;
        let url = match backend {
            Backend::Sqlite => {
                let file = SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf();
                if !file.as_os_str().is_empty() && file.to_str() != Some(":memory:") && !file.exists() {
                    return Err(StoreError::Missing(file));
                }
                // `mode=ro`: SQLite itself refuses writes, and creates nothing.
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=ro")
            }
            Backend::Postgres => url.to_owned(),
        };
        let pool = Self::pool(&url, backend, 1).await?;
        if backend == Backend::Postgres {
            // Every transaction of this pool's one connection is read-only.
            sqlx::raw_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").execute(&pool).await?;
        }
        Ok(Self {
            pool,
            backend,
            latest_event: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            routes: Default::default(),
        })
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
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

    /// A new empty store: SQLite in a temporary folder, or a new database on the PostgreSQL server of
    /// `WORKSPACED_TEST_POSTGRES` when it is set (`scripts/test.sh` runs the store's tests on both).
    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = match std::env::var("WORKSPACED_TEST_POSTGRES") {
            Ok(server) => fresh_postgres_database(&server).await,
            Err(_) => format!("sqlite://{}", dir.path().join("t.db").display()),
        };
        (Store::connect(&url).await.unwrap(), dir)
    }

    /// Creates an empty database on the server and returns its URL.
    pub async fn fresh_postgres_database(server: &str) -> String {
        use sqlx::Connection;
        let name = format!("t_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(server).await.expect("the test PostgreSQL server answers");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        let (base, _) = server.rsplit_once('/').expect("a URL with a database");
        format!("{base}/{name}")
    }

    pub fn t(s: i64) -> DateTime<Utc> {
        from_ms(1_800_000_000_000 + s * 1000)
    }
}

#[cfg(test)]
mod tls_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_in_a_message_has_no_password() {
        assert_eq!(redacted_url("postgres://ws:s3cret@db:5432/ws"), "postgres://ws:***@db:5432/ws");
        assert_eq!(redacted_url("sqlite:///var/lib/w.db"), "sqlite:///var/lib/w.db");
    }

    #[tokio::test]
    async fn only_sqlite_and_postgres_urls_are_accepted() {
        assert!(matches!(Store::connect("mysql://x").await, Err(StoreError::UnsupportedUrl(_))));
        assert_eq!(Backend::of_url("postgresql://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("sqlite://w.db").unwrap(), Backend::Sqlite);
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
