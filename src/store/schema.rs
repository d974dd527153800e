//! The schema's position against this binary's migrations, read without changing anything, for `doctor`.

use sqlx::migrate::Migrator;
use sqlx::Row;

use super::{Store, StoreError};

/// The migrations this binary applies at `connect`, one directory per backend with the same versions. A database
/// that a newer release already migrated further is fine (`ignore_missing`): during a rolling deploy the replicas of
/// the previous release keep starting on the new schema, which only ever adds (expand, then contract a release
/// later: docs/deploy/README.md).
static SQLITE: Migrator = Migrator { ignore_missing: true, ..sqlx::migrate!("./migrations/sqlite") };
static POSTGRES: Migrator = Migrator { ignore_missing: true, ..sqlx::migrate!("./migrations/postgres") };

pub(super) fn migrator(backend: super::Backend) -> &'static Migrator {
    match backend {
        super::Backend::Sqlite => &SQLITE,
        super::Backend::Postgres => &POSTGRES,
    }
}

/// Where a database's schema stands against this binary's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaState {
    /// This binary's migrations the database has, by version.
    pub applied: Vec<i64>,
    /// This binary's migrations the database lacks (`version_description`): `serve` would apply them.
    pub pending: Vec<String>,
    /// Versions the database has and this binary does not know: written by a newer workspaced.
    pub unknown: Vec<i64>,
    /// Versions recorded as failed, or whose file changed since they were applied.
    pub broken: Vec<i64>,
}

impl SchemaState {
    /// The database has exactly this binary's migrations.
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.unknown.is_empty() && self.broken.is_empty()
    }
}

impl Store {
    /// Compares the migrations recorded in the database with this binary's. Only reads.
    pub async fn schema_state(&self) -> Result<SchemaState, StoreError> {
        let exists = match self.backend {
            super::Backend::Sqlite => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            super::Backend::Postgres => {
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() \
                 AND table_name = '_sqlx_migrations'"
            }
        };
        let table = sqlx::query(exists).fetch_optional(&self.pool).await?;
        let recorded = match table {
            Some(_) => {
                sqlx::query(
                    // `success` as a number: sqlx's `Any` driver cannot read SQLite's `BOOLEAN`.
                    "SELECT version, checksum, CAST(success AS INTEGER) AS success FROM _sqlx_migrations ORDER BY version",
                )
                    .fetch_all(&self.pool)
                    .await?
            }
            None => Vec::new(),
        };
        let mut state = SchemaState::default();
        let known: Vec<_> = migrator(self.backend).iter().filter(|m| !m.migration_type.is_down_migration()).collect();
        for row in &recorded {
            let version: i64 = row.try_get("version")?;
            let checksum: Vec<u8> = row.try_get("checksum")?;
            let success = row.try_get::<i64, _>("success")? != 0;
            match known.iter().find(|m| m.version == version) {
                None => state.unknown.push(version),
                Some(m) if !success || *m.checksum != *checksum => state.broken.push(version),
                Some(_) => state.applied.push(version),
            }
        }
        for m in known {
            if !recorded.iter().any(|r| r.try_get::<i64, _>("version").ok() == Some(m.version)) {
                state.pending.push(format!("{:04}_{}", m.version, m.description.replace(' ', "_")));
            }
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_a_newer_release_migrated_further_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let url = match std::env::var("WORKSPACED_TEST_POSTGRES") {
            Ok(server) => super::super::testing::fresh_postgres_database(&server).await,
            Err(_) => format!("sqlite://{}", dir.path().join("t.db").display()),
        };
        let store = Store::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(9_999_i64)
        .bind("added by the next release")
        .bind(true)
        .bind(vec![0u8; 48])
        .bind(0_i64)
        .execute(&store.pool)
        .await
        .unwrap();
        drop(store);
        // What an older replica does when it restarts in the middle of a rolling deploy.
        let again = Store::connect(&url).await.expect("the previous release opens the newer schema");
        assert_eq!(again.schema_state().await.unwrap().unknown, vec![9_999]);
        drop(dir);
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let list = |m: &Migrator| m.iter().map(|m| (m.version, m.description.to_string())).collect::<Vec<_>>();
        assert_eq!(list(&SQLITE), list(&POSTGRES), "migrations/sqlite and migrations/postgres differ");
        assert!(!list(&SQLITE).is_empty());
    }
}
