//! Courses: one profile per course (stored as the JSON body it was put with), and which course each workspace
//! belongs to, with the course's values copied at its start.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{duration_to_ms, from_ms, ms, Store, StoreError};
use crate::course::CourseBody;
use crate::domain::{CourseId, Overrides, StudentId};

/// A course as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CourseRecord {
    pub course_id: CourseId,
    pub profile: CourseBody,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How many workspaces a course has, and how many of them are busy (queued, starting, running or stopping).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CourseCounts {
    pub workspaces: u64,
    pub busy: u64,
}

/// The limits a workspace's last start used (shown in its view), as JSON in `applied_limits`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AppliedLimits {
    pub image: String,
    pub cpus: f64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
}

/// What a `DELETE` of a course found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CourseDeletion {
    Deleted,
    NotFound,
    /// Workspaces of the course are busy; nothing was changed.
    Busy(u64),
}

const BUSY: &str = "status IN ('queued', 'starting', 'running', 'stopping')";

fn course_record(r: &sqlx::any::AnyRow) -> Result<CourseRecord, StoreError> {
    let raw: String = r.try_get("course_id")?;
    let corrupt = |message: String| StoreError::Corrupt { student: format!("course {raw}"), message };
    let course_id = CourseId::parse(&raw).map_err(|e| corrupt(e.to_string()))?;
    let profile: String = r.try_get("profile")?;
    let profile = serde_json::from_str(&profile).map_err(|e| corrupt(format!("profile: {e}")))?;
    Ok(CourseRecord {
        course_id,
        profile,
        created_at: from_ms(r.try_get("created_at_ms")?),
        updated_at: from_ms(r.try_get("updated_at_ms")?),
    })
}

impl Store {
    /// Creates or replaces a course's profile. Returns whether it was created.
    pub async fn put_course(
        &self,
        course: &CourseId,
        profile: &CourseBody,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(profile).expect("a profile serializes");
        let mut tx = self.pool.begin().await?;
        let existed = sqlx::query("SELECT 1 FROM courses WHERE course_id = $1")
            .bind(course.as_str())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        sqlx::query(
            "INSERT INTO courses (course_id, profile, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (course_id) DO UPDATE SET profile = excluded.profile, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(course.as_str())
        .bind(json)
        .bind(ms(now))
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(!existed)
    }

    /// Creates a course with `profile` unless it exists (an LTI context's first launch); whether it was created.
    /// An existing profile, perhaps the operator's, is never replaced.
    pub async fn insert_course_if_absent(
        &self,
        course: &CourseId,
        profile: &CourseBody,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(profile).expect("a profile serializes");
        let done = sqlx::query(
            "INSERT INTO courses (course_id, profile, created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (course_id) DO NOTHING",
        )
        .bind(course.as_str())
        .bind(json)
        .bind(ms(now))
        .bind(ms(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn get_course(&self, course: &CourseId) -> Result<Option<CourseRecord>, StoreError> {
        let row =
            sqlx::query("SELECT course_id, profile, created_at_ms, updated_at_ms FROM courses WHERE course_id = $1")
                .bind(course.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(course_record).transpose()
    }

    /// Every course, by id.
    pub async fn list_courses(&self) -> Result<Vec<CourseRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT course_id, profile, created_at_ms, updated_at_ms FROM courses ORDER BY course_id")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(course_record).collect()
    }

    /// Workspaces per course, and the busy ones among them.
    pub async fn course_counts(&self) -> Result<Vec<(CourseId, CourseCounts)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT course_id, COUNT(*) AS n, SUM(CASE WHEN {BUSY} THEN 1 ELSE 0 END) AS busy FROM workspaces
             WHERE course_id IS NOT NULL GROUP BY course_id ORDER BY course_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let raw: String = r.try_get("course_id")?;
            let Ok(id) = CourseId::parse(&raw) else { continue };
            let n: i64 = r.try_get("n")?;
            let busy: i64 = r.try_get("busy")?;
            out.push((id, CourseCounts { workspaces: n.max(0) as u64, busy: busy.max(0) as u64 }));
        }
        Ok(out)
    }

    /// Deletes a course unless workspaces of it are busy. Its workspaces leave it (their files stay; their next start
    /// uses the service's settings).
    pub async fn delete_course(&self, course: &CourseId) -> Result<CourseDeletion, StoreError> {
        let mut tx = self.pool.begin().await?;
        let busy: i64 = sqlx::query(&format!("SELECT COUNT(*) FROM workspaces WHERE course_id = $1 AND {BUSY}"))
            .bind(course.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if busy > 0 {
            return Ok(CourseDeletion::Busy(busy as u64));
        }
        let gone =
            sqlx::query("DELETE FROM courses WHERE course_id = $1").bind(course.as_str()).execute(&mut *tx).await?;
        if gone.rows_affected() == 0 {
            return Ok(CourseDeletion::NotFound);
        }
        sqlx::query("UPDATE workspaces SET course_id = NULL, course_setup_ms = NULL WHERE course_id = $1")
            .bind(course.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(CourseDeletion::Deleted)
    }

    /// Puts a workspace in a course (creating a stopped record for a student who never started), forgetting that
    /// the starter files were copied when the course changes. The lifecycle calls it under the student's lock.
    pub async fn set_workspace_course(
        &self,
        student: &StudentId,
        course: &CourseId,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO workspaces (student_id, status, created_at_ms, updated_at_ms, course_id)
             VALUES ($1, 'stopped', $2, $3, $4)
             ON CONFLICT (student_id) DO UPDATE SET
               course_setup_ms = CASE WHEN workspaces.course_id = excluded.course_id
                 THEN workspaces.course_setup_ms ELSE NULL END,
               course_id = excluded.course_id",
        )
        .bind(student.as_str())
        .bind(ms(now))
        .bind(ms(now))
        .bind(course.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// At a start: the course's culling values and the limits this start uses, copied onto the record.
    pub async fn set_start_profile(
        &self,
        student: &StudentId,
        cull: &Overrides,
        limits: &AppliedLimits,
    ) -> Result<(), StoreError> {
        let d = |v: Option<std::time::Duration>| v.map(duration_to_ms);
        sqlx::query(
            "UPDATE workspaces SET course_idle_timeout_ms = $1, course_warning_lead_ms = $2, course_max_age_ms = $3,
             course_cull_enabled = $4, applied_limits = $5 WHERE student_id = $6",
        )
        .bind(d(cull.idle_timeout))
        .bind(d(cull.warning_lead))
        .bind(d(cull.max_age))
        .bind(cull.enabled)
        .bind(serde_json::to_string(limits).expect("limits serialize"))
        .bind(student.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The course's starter files are in the student's folder.
    pub async fn mark_course_setup(&self, student: &StudentId, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("UPDATE workspaces SET course_setup_ms = $1 WHERE student_id = $2")
            .bind(ms(now))
            .bind(student.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
