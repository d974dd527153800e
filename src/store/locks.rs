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
        Ok(self.try_advisory_lock_any(&[key]).await?.map(|(_, lock)| lock))
    }

    /// The first of `keys` that no session holds now, with its index (PostgreSQL only). One pooled connection asks
    /// for each in turn; it leaves the pool only when it holds one, so a miss costs no new connection.
    pub async fn try_advisory_lock_any(&self, keys: &[i64]) -> Result<Option<(usize, AdvisoryLock)>, StoreError> {
        self.expect_postgres()?;
        let mut conn = self.pool.acquire().await?;
        for (i, key) in keys.iter().enumerate() {
            let got = sqlx::query("SELECT CAST(pg_try_advisory_lock($1) AS INTEGER) AS got")
                .bind(key)
                .fetch_one(&mut *conn)
                .await?
                .try_get::<i32, _>("got")?;
            if got == 1 {
                return Ok(Some((i, AdvisoryLock { conn: Some(std::sync::Mutex::new(conn.detach())) })));
            }
        }
        Ok(None)
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
        let (i, _second) = store.try_advisory_lock_any(&[7, 9]).await.unwrap().expect("9 is free");
        assert_eq!(i, 1, "7 is held by `again`, so the second key");
        assert!(store.try_advisory_lock_any(&[7, 9]).await.unwrap().is_none(), "both held");
    }
}

impl Store {
    /// Takes or renews the lease `name` for `holder` until `now + ttl`, if it is free, expired or already
    /// `holder`'s. Returns its fence when `holder` holds it afterwards; the fence grows at every change of holder.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        now: chrono::DateTime<chrono::Utc>,
        ttl: std::time::Duration,
    ) -> Result<Option<i64>, StoreError> {
        let now_ms = super::ms(now);
        let until = now_ms.saturating_add(super::duration_to_ms(ttl));
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, fence, expires_at_ms) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET
               fence = CASE WHEN leases.holder = excluded.holder THEN leases.fence ELSE leases.fence + 1 END,
               holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
             WHERE leases.holder = excluded.holder OR leases.expires_at_ms < $4
             RETURNING fence",
        )
        .bind(name)
        .bind(holder)
        .bind(until)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("fence")).transpose()?)
    }

    /// Gives up `holder`'s lease at once (a replica shutting down), so another takes over without waiting.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE leases SET expires_at_ms = 0 WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod lease_tests {
    use super::super::testing::{store, t};
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_at_a_time_and_the_fence_grows_at_each_change() {
        let (store, _d) = store().await;
        let ttl = Duration::from_secs(10);
        assert_eq!(store.try_lease("l", "a", t(0), ttl).await.unwrap(), Some(1));
        assert_eq!(store.try_lease("l", "b", t(5), ttl).await.unwrap(), None, "a holds it");
        assert_eq!(store.try_lease("l", "a", t(8), ttl).await.unwrap(), Some(1), "a renews");
        assert_eq!(store.try_lease("l", "b", t(17), ttl).await.unwrap(), None, "renewed until 18");
        assert_eq!(store.try_lease("l", "b", t(19), ttl).await.unwrap(), Some(2), "expired: b takes over");
        assert_eq!(store.try_lease("l", "a", t(20), ttl).await.unwrap(), None);
        store.release_lease("l", "b").await.unwrap();
        assert_eq!(store.try_lease("l", "a", t(21), ttl).await.unwrap(), Some(3), "given up: a at once");
    }
}
