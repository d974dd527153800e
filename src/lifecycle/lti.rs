//! LTI 1.3 in the lifecycle: every write an LTI request makes (registrations, the tool's key, a launch's context,
//! user and course, the audit of staff actions). The protocol itself is `lti/`, the pages `http/lti.rs`.

use super::{Lifecycle, LifecycleError};
use crate::course::CourseBody;
use crate::domain::{CourseId, EventKind, EventReason, StudentId};
use crate::lti::token::ToolKey;
use crate::lti::{NewPlatform, Platform};
use crate::store::{LtiContext, LtiUser, NewEvent};

impl Lifecycle {
    /// Registers a platform (checked by the caller); `None` when one with this issuer and client id exists.
    pub async fn register_lti_platform(&self, new: &NewPlatform) -> Result<Option<Platform>, LifecycleError> {
        let p = self.store.insert_lti_platform(new, self.clock.now()).await?;
        if let Some(p) = &p {
            tracing::info!(platform = %p.id, issuer = ?p.issuer, "LTI platform registered");
        }
        Ok(p)
    }

    /// Removes a platform's registration; whether there was one.
    pub async fn unregister_lti_platform(&self, id: &str) -> Result<bool, LifecycleError> {
        Ok(self.store.delete_lti_platform(id).await?)
    }

    /// The tool's signing keys (kid, PEM), oldest first; the first is made and stored when there is none.
    pub async fn lti_signing_keys(&self) -> Result<Vec<(String, String)>, LifecycleError> {
        let keys = self.reads.lti_tool_keys().await?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        let (kid, pem) = tokio::task::spawn_blocking(ToolKey::generate)
            .await
            .map_err(|e| LifecycleError::Panicked(e.to_string()))?;
        let keys = self.store.insert_lti_tool_key(&kid, &pem, self.clock.now()).await?;
        tracing::info!(kid = %keys.first().map(|k| k.0.as_str()).unwrap_or_default(), "LTI tool key made");
        Ok(keys)
    }

    /// Records a checked launch: the course of the context (made with the context's title on its first launch, an
    /// existing profile untouched), the context and the user; a learner's workspace is put in the course.
    pub async fn record_lti_launch(&self, context: &LtiContext, user: &LtiUser) -> Result<(), LifecycleError> {
        let now = self.clock.now();
        let title = context.title.as_ref().map(|t| t.chars().take(200).collect());
        let body = CourseBody { title, ..CourseBody::default() };
        if self.store.insert_course_if_absent(&context.course_id, &body, now).await? {
            tracing::info!(course = %context.course_id, "course made by an LTI launch");
        }
        self.store.upsert_lti_launch(context, user, now).await?;
        if !user.staff {
            self.assign_course(&user.student_id, &context.course_id).await?;
        }
        Ok(())
    }

    /// Writes a staff member's action on a student's workspace into the audit log (`staff_access`).
    pub async fn audit_staff_access(
        &self,
        student: &StudentId,
        course: &CourseId,
        staff: &str,
        action: &str,
    ) -> Result<(), LifecycleError> {
        let message = format!("{staff} ({action}, staff of {course} through LTI)");
        let event = NewEvent { kind: EventKind::StaffAccess, reason: Some(EventReason::Admin), message: &message };
        self.store.add_event(student, &event, self.clock.now()).await?;
        tracing::info!(student = %student, course = %course, staff = ?staff, action, "staff access");
        Ok(())
    }
}
