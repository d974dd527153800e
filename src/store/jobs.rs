//! Saved positions of background jobs (the webhook's delivery cursor).

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// A background job's saved position (0 when never saved).
    pub async fn job_state(&self, name: &str) -> Result<i64, StoreError> {
        let row =
            sqlx::query("SELECT value FROM job_state WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?.unwrap_or(0))
    }

    pub async fn set_job_state(&self, name: &str, value: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_state (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
