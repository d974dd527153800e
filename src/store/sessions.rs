//! Session generations: how sessions are revoked before they expire. Sessions themselves are stateless signed
//! values (see `auth`); what is stored is one counter per student and one for everybody.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{ms, Store, StoreError};
use crate::auth::Generation;
use crate::domain::StudentId;

/// The scope row that every session depends on.
const ALL: &str = "*";

/// Whose sessions a revocation ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeScope {
    Student(StudentId),
    All,
}

impl Store {
    /// The generations a valid session of `student` must carry now (0 and 0 before any revocation).
    pub async fn session_generation(&self, student: &StudentId) -> Result<Generation, StoreError> {
        let rows = sqlx::query("SELECT scope, generation FROM session_generations WHERE scope IN ($1, $2)")
            .bind(ALL)
            .bind(student.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut g = Generation::default();
        for r in rows {
            let scope: String = r.try_get("scope")?;
            let value: i64 = r.try_get("generation")?;
            if scope == ALL {
                g.all = value;
            } else {
                g.own = value;
            }
        }
        Ok(g)
    }

    /// Ends every session (and student token) of the scope issued so far; returns the new generation.
    pub async fn revoke_sessions(&self, scope: &RevokeScope, now: DateTime<Utc>) -> Result<i64, StoreError> {
        let key = match scope {
            RevokeScope::Student(s) => s.as_str(),
            RevokeScope::All => ALL,
        };
        let row = sqlx::query(
            "INSERT INTO session_generations (scope, generation, revoked_at_ms) VALUES ($1, 1, $2) \
             ON CONFLICT (scope) DO UPDATE SET generation = session_generations.generation + 1, \
             revoked_at_ms = excluded.revoked_at_ms RETURNING generation",
        )
        .bind(key)
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("generation")?)
    }
}
