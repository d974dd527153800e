//! `workspaced backup -o FILE`: a consistent copy of the SQLite database (`VACUUM INTO`, SQLite's online copy: a
//! snapshot of one read transaction, taken while the service keeps writing) and the signing key file, with a
//! manifest, into a tar.gz (`.tar.gz`/`.tgz`) or a new folder; everything owner-only (0600, folders 0700). The copy
//! is checked (`PRAGMA integrity_check`, row counts) before it is published under its name. For PostgreSQL the
//! answer is the `pg_dump` command to run instead. Restoring is putting the files back with the service stopped
//! (`docs/operations.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row};

use crate::config::Settings;

/// File names inside a backup.
pub const DATABASE_FILE: &str = "workspaced.db";
pub const KEY_FILE: &str = "workspaced.key";
pub const MANIFEST_FILE: &str = "backup.json";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the database is PostgreSQL: back it up with `{0}` (nothing was written)")]
    Postgres(String),
    #[error("unsupported DATABASE_URL (sqlite:// or postgres://)")]
    UnsupportedUrl,
    #[error("{0} exists; choose a new name (a backup never overwrites)")]
    OutputExists(PathBuf),
    #[error("the database: {0}")]
    Database(String),
    #[error("the copy failed its check: {0}")]
    Check(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl BackupError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::Postgres(_) => "use_pg_dump",
            BackupError::UnsupportedUrl => "unsupported_database",
            BackupError::OutputExists(_) => "output_exists",
            BackupError::Database(_) => "database_error",
            BackupError::Check(_) => "backup_check_failed",
            BackupError::Io { .. } => "io_error",
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.to_path_buf(), source }
}

/// What a backup holds; also written into it as `backup.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupManifest {
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub workspaced_version: String,
    /// Rows in the copy.
    pub workspaces: i64,
    pub api_keys: i64,
    pub events: i64,
    /// Whether the signing key file is in the backup (not when the key comes from `WORKSPACED_SECRET_KEY`).
    pub key_included: bool,
    /// Where the originals live, for the restore.
    pub database_path: PathBuf,
    pub key_path: Option<PathBuf>,
}

/// The `pg_dump` command for a PostgreSQL URL; the URL itself (it may hold a password) is not repeated.
pub fn pg_dump_command(output: &Path) -> String {
    format!("pg_dump --format=custom --no-owner --file={} \"$DATABASE_URL\"", output.display())
}

fn is_archive(output: &Path) -> bool {
    let name = output.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz")
}

/// Writes the backup to `output` (a `.tar.gz`/`.tgz` archive, else a new folder). Nothing appears under that
/// name unless the whole backup was written and checked.
pub async fn backup(settings: &Settings, output: &Path) -> Result<BackupManifest, BackupError> {
    let url = settings.database_url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres(pg_dump_command(&output.with_extension("dump"))));
    }
    if !url.starts_with("sqlite:") {
        return Err(BackupError::UnsupportedUrl);
    }
    if fs::symlink_metadata(output).is_ok() {
        return Err(BackupError::OutputExists(output.to_path_buf()));
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let suffix: u64 = rand::random();
    let staging = parent.join(format!(".workspaced-backup-{suffix:016x}"));
    fs::DirBuilder::new().mode(0o700).create(&staging).map_err(io_at(&staging))?;
    let result = write_staged(settings, url, &staging, output).await;
    if result.is_err() || is_archive(output) {
        let _ = fs::remove_dir_all(&staging);
    }
    result
}

async fn write_staged(
    settings: &Settings,
    url: &str,
    staging: &Path,
    output: &Path,
) -> Result<BackupManifest, BackupError> {
    let db_err = |e: sqlx::Error| BackupError::Database(e.to_string());
    let options = SqliteConnectOptions::from_str(url).map_err(db_err)?.create_if_missing(false);
    let database_path = options.get_filename().to_path_buf();
    let copy = staging.join(DATABASE_FILE);
    // VACUUM INTO needs a new or empty file: an empty one made owner-only first keeps the copy 0600.
    owner_only_file(&copy)?;
    let mut conn = options.connect().await.map_err(db_err)?;
    sqlx::query("VACUUM INTO ?").bind(copy.to_string_lossy().to_string()).execute(&mut conn).await.map_err(db_err)?;
    conn.close().await.map_err(db_err)?;

    // Check the copy on its own before anything is published.
    let check = SqliteConnectOptions::new().filename(&copy).read_only(true);
    let mut c = check.connect().await.map_err(db_err)?;
    let verdict: String = sqlx::query("PRAGMA integrity_check").fetch_one(&mut c).await.map_err(db_err)?.get(0);
    if verdict != "ok" {
        return Err(BackupError::Check(verdict));
    }
    let (workspaces, api_keys, events) = {
        let w: i64 = sqlx::query("SELECT COUNT(*) FROM workspaces").fetch_one(&mut c).await.map_err(db_err)?.get(0);
        let k: i64 = sqlx::query("SELECT COUNT(*) FROM api_keys").fetch_one(&mut c).await.map_err(db_err)?.get(0);
        let e: i64 = sqlx::query("SELECT COUNT(*) FROM events").fetch_one(&mut c).await.map_err(db_err)?.get(0);
        (w, k, e)
    };
    c.close().await.map_err(db_err)?;

    let key_path = settings.auth.secret_key.is_none().then(|| settings.secret_key_file());
    let mut key_included = false;
    if let Some(path) = &key_path {
        match fs::read(path) {
            Ok(key) => {
                write_owner_only(&staging.join(KEY_FILE), &key)?;
                key_included = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(BackupError::Io { path: path.clone(), source }),
        }
    }
    let manifest = BackupManifest {
        created_at: chrono::Utc::now(),
        workspaced_version: env!("CARGO_PKG_VERSION").to_owned(),
        workspaces,
        api_keys,
        events,
        key_included,
        database_path: std::path::absolute(&database_path).unwrap_or(database_path),
        key_path: key_path.map(|p| std::path::absolute(&p).unwrap_or(p)),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Check(e.to_string()))?;
    write_owner_only(&staging.join(MANIFEST_FILE), &json)?;

    if is_archive(output) {
        write_archive(staging, output, key_included)?;
    } else {
        fs::rename(staging, output).map_err(io_at(output))?;
    }
    Ok(manifest)
}

fn owner_only_file(path: &Path) -> Result<File, BackupError> {
    OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io_at(path))
}

fn write_owner_only(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut f = owner_only_file(path)?;
    f.write_all(bytes).map_err(io_at(path))?;
    f.sync_all().map_err(io_at(path))
}

/// The staged files as `<output>` (tar.gz, 0600), written under a temporary name and renamed when complete.
fn write_archive(staging: &Path, output: &Path, key_included: bool) -> Result<(), BackupError> {
    let mut part = output.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let result = (|| -> Result<(), BackupError> {
        let file = owner_only_file(&part)?;
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let mut names = vec![DATABASE_FILE, MANIFEST_FILE];
        if key_included {
            names.push(KEY_FILE);
        }
        for name in names {
            let path = staging.join(name);
            tar.append_path_with_name(&path, name).map_err(io_at(&path))?;
        }
        let gz = tar.into_inner().map_err(io_at(&part))?;
        let file = gz.finish().map_err(io_at(&part))?;
        file.sync_all().map_err(io_at(&part))?;
        fs::rename(&part, output).map_err(io_at(output))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result
}
