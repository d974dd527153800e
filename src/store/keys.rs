//! API keys (hashes only) and the launch nonces already used.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_ms, ms, Store, StoreError};
use crate::domain::Role;

/// An API key as listed (never the key itself).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub role: Role,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Stores a new API key's hash. `id` is the key's public part, shown in lists.
    pub async fn insert_api_key(
        &self,
        id: &str,
        role: Role,
        key_hash: &str,
        label: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO api_keys (id, role, key_hash, label, created_at_ms) VALUES ($1, $2, $3, $4, $5)")
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
    pub async fn find_api_key(&self, key_hash: &str) -> Result<Option<(String, Role)>, StoreError> {
        let row = sqlx::query("SELECT id, role FROM api_keys WHERE key_hash = $1 AND revoked_at_ms IS NULL")
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
        let done = sqlx::query("UPDATE api_keys SET revoked_at_ms = $1 WHERE id = $2 AND revoked_at_ms IS NULL")
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
        sqlx::query("DELETE FROM used_launch_tokens WHERE expires_at_ms < $1")
            .bind(ms(now))
            .execute(&self.pool)
            .await?;
        let done =
            sqlx::query("INSERT INTO used_launch_tokens (nonce, expires_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(nonce)
                .bind(ms(expires_at))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }
}
