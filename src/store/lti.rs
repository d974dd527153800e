//! LTI 1.3: registered platforms, the tool's signing keys, contexts and who launched (see `lti/mod.rs`).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_ms, ms, Reads, Store, StoreError};
use crate::domain::{CourseId, StudentId};
use crate::lti::{NewPlatform, Platform};

/// A platform's context as the latest launch described it.
#[derive(Debug, Clone, PartialEq)]
pub struct LtiContext {
    pub course_id: CourseId,
    pub platform_id: String,
    pub context_id: String,
    pub title: Option<String>,
    pub nrps_url: Option<String>,
}

/// A user who launched in a course.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LtiUser {
    pub user_key: String,
    pub student_id: StudentId,
    pub sub: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub staff: bool,
    pub last_launch: DateTime<Utc>,
}

const PLATFORM_COLUMNS: &str =
    "platform_id, issuer, client_id, deployment_ids, auth_url, token_url, jwks_url, jwks, created_at_ms";

fn platform(r: &sqlx::any::AnyRow) -> Result<Platform, StoreError> {
    let id: String = r.try_get("platform_id")?;
    let corrupt = |message: String| StoreError::Corrupt { student: format!("lti platform {id}"), message };
    let deployments: String = r.try_get("deployment_ids")?;
    let jwks: Option<String> = r.try_get("jwks")?;
    Ok(Platform {
        id: id.clone(),
        issuer: r.try_get("issuer")?,
        client_id: r.try_get("client_id")?,
        deployment_ids: serde_json::from_str(&deployments).map_err(|e| corrupt(e.to_string()))?,
        auth_url: r.try_get("auth_url")?,
        token_url: r.try_get("token_url")?,
        jwks_url: r.try_get("jwks_url")?,
        jwks: jwks.map(|j| serde_json::from_str(&j)).transpose().map_err(|e| corrupt(e.to_string()))?,
        created_at: from_ms(r.try_get("created_at_ms")?),
    })
}

impl Store {
    /// Registers a platform; `None` when one with this issuer and client id exists (nothing changed).
    pub async fn insert_lti_platform(
        &self,
        new: &NewPlatform,
        now: DateTime<Utc>,
    ) -> Result<Option<Platform>, StoreError> {
        let id = hex::encode(rand::random::<[u8; 4]>());
        let done = sqlx::query(&format!(
            "INSERT INTO lti_platforms ({PLATFORM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (issuer, client_id) DO NOTHING"
        ))
        .bind(&id)
        .bind(&new.issuer)
        .bind(&new.client_id)
        .bind(serde_json::to_string(&new.deployment_ids).expect("strings serialize"))
        .bind(&new.auth_url)
        .bind(&new.token_url)
        .bind(new.jwks_url.as_deref())
        .bind(new.jwks.as_ref().map(|j| j.to_string()))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(Platform {
            id,
            issuer: new.issuer.clone(),
            client_id: new.client_id.clone(),
            deployment_ids: new.deployment_ids.clone(),
            auth_url: new.auth_url.clone(),
            token_url: new.token_url.clone(),
            jwks_url: new.jwks_url.clone(),
            jwks: new.jwks.clone(),
            created_at: from_ms(ms(now)),
        }))
    }

    /// Removes a platform's registration; whether it existed. Its contexts and users stay (the courses and the
    /// workspaces are not the registration's).
    pub async fn delete_lti_platform(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM lti_platforms WHERE platform_id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a new tool key unless one exists; returns every key, oldest first (two replicas making the first
    /// key at once both end up with the one stored first).
    pub async fn insert_lti_tool_key(
        &self,
        kid: &str,
        pem: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let any = sqlx::query("SELECT 1 FROM lti_tool_keys").fetch_optional(&mut *tx).await?.is_some();
        if !any {
            sqlx::query("INSERT INTO lti_tool_keys (kid, private_pem, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING")
                .bind(kid)
                .bind(pem)
                .bind(ms(now))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.reads().lti_tool_keys().await
    }

    /// Records a launch: the context (its title and roster URL) and the user.
    pub async fn upsert_lti_launch(
        &self,
        context: &LtiContext,
        user: &LtiUser,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO lti_contexts (course_id, platform_id, context_id, title, nrps_url, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (course_id) DO UPDATE SET title = excluded.title,
               nrps_url = COALESCE(excluded.nrps_url, lti_contexts.nrps_url), updated_at_ms = excluded.updated_at_ms",
        )
        .bind(context.course_id.as_str())
        .bind(&context.platform_id)
        .bind(&context.context_id)
        .bind(context.title.as_deref())
        .bind(context.nrps_url.as_deref())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO lti_users (course_id, user_key, student_id, sub, name, email, staff, last_launch_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (course_id, user_key) DO UPDATE SET student_id = excluded.student_id, name = excluded.name,
               email = excluded.email, staff = excluded.staff, last_launch_ms = excluded.last_launch_ms",
        )
        .bind(context.course_id.as_str())
        .bind(&user.user_key)
        .bind(user.student_id.as_str())
        .bind(&user.sub)
        .bind(user.name.as_deref())
        .bind(user.email.as_deref())
        .bind(user.staff)
        .bind(ms(user.last_launch))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl Reads {
    pub async fn lti_platforms(&self) -> Result<Vec<Platform>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {PLATFORM_COLUMNS} FROM lti_platforms ORDER BY issuer, client_id"))
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(platform).collect()
    }

    pub async fn lti_platform(&self, id: &str) -> Result<Option<Platform>, StoreError> {
        let row = sqlx::query(&format!("SELECT {PLATFORM_COLUMNS} FROM lti_platforms WHERE platform_id = $1"))
            .bind(id)
            .fetch_optional(&self.store.pool)
            .await?;
        row.as_ref().map(platform).transpose()
    }

    /// The platforms with this issuer (one per client id).
    pub async fn lti_platforms_of(&self, issuer: &str) -> Result<Vec<Platform>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {PLATFORM_COLUMNS} FROM lti_platforms WHERE issuer = $1"))
            .bind(issuer)
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(platform).collect()
    }

    /// The tool's keys (kid, PEM), oldest first.
    pub async fn lti_tool_keys(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT kid, private_pem FROM lti_tool_keys ORDER BY created_at_ms, kid")
            .fetch_all(&self.store.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("kid")?, r.try_get("private_pem")?))).collect()
    }

    pub async fn lti_context(&self, course: &CourseId) -> Result<Option<LtiContext>, StoreError> {
        let row = sqlx::query(
            "SELECT course_id, platform_id, context_id, title, nrps_url FROM lti_contexts WHERE course_id = $1",
        )
        .bind(course.as_str())
        .fetch_optional(&self.store.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(LtiContext {
            course_id: course.clone(),
            platform_id: r.try_get("platform_id")?,
            context_id: r.try_get("context_id")?,
            title: r.try_get("title")?,
            nrps_url: r.try_get("nrps_url")?,
        }))
    }

    /// Who launched in a course, by name.
    pub async fn lti_users(&self, course: &CourseId) -> Result<Vec<LtiUser>, StoreError> {
        let rows = sqlx::query(
            // `staff` as a number: sqlx's `Any` driver cannot read SQLite's `BOOLEAN`.
            "SELECT user_key, student_id, sub, name, email, CAST(staff AS INTEGER) AS staff, last_launch_ms FROM lti_users
             WHERE course_id = $1 ORDER BY name, user_key",
        )
        .bind(course.as_str())
        .fetch_all(&self.store.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let raw: String = r.try_get("student_id")?;
            let Ok(student_id) = StudentId::parse(&raw) else { continue };
            out.push(LtiUser {
                user_key: r.try_get("user_key")?,
                student_id,
                sub: r.try_get("sub")?,
                name: r.try_get("name")?,
                email: r.try_get("email")?,
                staff: r.try_get::<i64, _>("staff")? != 0,
                last_launch: from_ms(r.try_get("last_launch_ms")?),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{store, t};
    use super::*;

    /// On both stores (the test script runs the store's tests on SQLite and PostgreSQL): a registration and its
    /// duplicate, the first tool key kept against a second, a launch recorded twice (the second updates), and the
    /// `staff` flag read back (a `BOOLEAN` the `Any` driver cannot read on SQLite without the cast).
    #[tokio::test]
    async fn platforms_keys_and_launches_round_trip() {
        let (s, _dir) = store().await;
        let new = NewPlatform {
            issuer: "https://lms.example.edu".into(),
            client_id: "c-1".into(),
            deployment_ids: vec!["d-1".into(), "d-2".into()],
            auth_url: "https://lms.example.edu/auth".into(),
            token_url: "https://lms.example.edu/token".into(),
            jwks_url: None,
            jwks: Some(serde_json::json!({"keys": []})),
        };
        let p = s.insert_lti_platform(&new, t(0)).await.unwrap().expect("registered");
        assert_eq!(s.insert_lti_platform(&new, t(1)).await.unwrap(), None, "same issuer and client id");
        let r = s.reads();
        assert_eq!(r.lti_platform(&p.id).await.unwrap().as_ref(), Some(&p));
        assert_eq!(r.lti_platforms_of("https://lms.example.edu").await.unwrap(), vec![p.clone()]);

        let keys = s.insert_lti_tool_key("k1", "pem-1", t(0)).await.unwrap();
        assert_eq!(keys, vec![("k1".to_owned(), "pem-1".to_owned())]);
        let keys = s.insert_lti_tool_key("k2", "pem-2", t(1)).await.unwrap();
        assert_eq!(keys, vec![("k1".to_owned(), "pem-1".to_owned())], "a second replica's key is not stored");

        let course = CourseId::parse("lti-abc").unwrap();
        let context = LtiContext {
            course_id: course.clone(),
            platform_id: p.id.clone(),
            context_id: "ctx".into(),
            title: Some("Intro".into()),
            nrps_url: Some("https://lms.example.edu/nrps".into()),
        };
        let mut user = LtiUser {
            user_key: "u1".into(),
            student_id: StudentId::parse("lti-1").unwrap(),
            sub: "sub-1".into(),
            name: Some("Ina".into()),
            email: None,
            staff: true,
            last_launch: t(5),
        };
        s.upsert_lti_launch(&context, &user, t(5)).await.unwrap();
        user.last_launch = t(9);
        user.name = Some("Ina D.".into());
        s.upsert_lti_launch(&LtiContext { nrps_url: None, ..context.clone() }, &user, t(9)).await.unwrap();
        assert_eq!(r.lti_users(&course).await.unwrap(), vec![user]);
        assert_eq!(r.lti_context(&course).await.unwrap(), Some(context), "a launch without a roster URL keeps it");
        assert!(s.delete_lti_platform(&p.id).await.unwrap());
        assert!(!s.delete_lti_platform(&p.id).await.unwrap());
    }
}
