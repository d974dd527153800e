//! Locks shared by every replica on one PostgreSQL database: session-level advisory locks, each held on a
//! connection of its own for as long as the lock is held.

use sqlx::{Connection, Row};

use super::{Backend, Store, StoreError};

/// A held advisory lock. Dropping it closes its connection, which releases the lock in the server even when the
/// process dies first (the server ends the session when the connection goes).
pub struct AdvisoryLock {
    conn: Option<std::sync::Mutex<sqlx::AnyConnection>>,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        let conn = conn.into_inner().unwrap_or_else(|e| e.into_inner());
        match tokio::runtime::Handle::try_current() {
            // A polite close, off the caller's path; dropping the connection would release the lock all the same.
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = conn.close().await;
                });
            }
            Err(_) => drop(conn),
        }
    }
}

impl Store {
    /// Waits for the advisory lock `key` (PostgreSQL only).
    pub async fn advisory_lock(&self, key: i64) -> Result<AdvisoryLock, StoreError> {
        self.expect_postgres()?;
        let mut conn = self.pool.acquire().await?.detach();
        // The function returns `void`, which the `Any` driver cannot read: select a number instead.
        sqlx::query("SELECT 1 AS held FROM (SELECT pg_advisory_lock($1)) AS l").bind(key).execute(&mut conn).await?;
        Ok(AdvisoryLock { conn: Some(std::sync::Mutex::new(conn)) })
    }

    /// The advisory lock `key` if no session holds it now (PostgreSQL only).
    pub async fn try_advisory_lock(&self, key: i64) -> Result<Option<AdvisoryLock>, StoreError> {
        self.expect_postgres()?;
        let mut conn = self.pool.acquire().await?.detach();
        let got = sqlx::query("SELECT CAST(pg_try_advisory_lock($1) AS INTEGER) AS got")
            .bind(key)
            .fetch_one(&mut conn)
            .await?
            .try_get::<i32, _>("got")?;
        Ok((got == 1).then(|| AdvisoryLock { conn: Some(std::sync::Mutex::new(conn)) }))
    }

    fn expect_postgres(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Postgres => Ok(()),
            Backend::Sqlite => Err(StoreError::UnsupportedUrl("advisory locks need PostgreSQL".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::store;

    #[tokio::test]
    async fn an_advisory_lock_excludes_others_until_dropped() {
        let (store, _d) = store().await;
        if store.backend() != super::Backend::Postgres {
            assert!(store.advisory_lock(1).await.is_err(), "SQLite has no shared locks");
            return;
        }
        let held = store.advisory_lock(7).await.unwrap();
        assert!(store.try_advisory_lock(7).await.unwrap().is_none(), "held elsewhere");
        assert!(store.try_advisory_lock(8).await.unwrap().is_some(), "another key is free");
        drop(held);
        let mut again = None;
        for _ in 0..100 {
            again = store.try_advisory_lock(7).await.unwrap();
            if again.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(again.is_some(), "a dropped lock is released");
    }
}
