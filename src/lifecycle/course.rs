//! Courses in the lifecycle: putting and deleting profiles, putting a workspace in a course, and what a course
//! changes at a start (the settings the container gets, the culling values copied onto the record, the starter
//! files at the first start in the course).

use std::path::PathBuf;

use super::{Lifecycle, LifecycleError};
use crate::config::WorkspaceSettings;
use crate::course::{CourseBody, CourseProfile, ProfileError};
use crate::domain::{CourseId, Overrides, StudentId};
use crate::store::{AppliedLimits, CourseDeletion, WorkspaceRecord};

/// What a start of one workspace uses: the workspace settings (the service's, or its course's in their place), the
/// course's culling values and, at the first start in the course, its template.
pub(super) struct StartProfile {
    pub workspace: WorkspaceSettings,
    pub cull: Overrides,
    /// The template folder to copy, when the course has one and its files are not in the folder yet.
    pub template: Option<PathBuf>,
}

impl Lifecycle {
    /// Checks a profile against the operator's rules (and that its template exists) and stores it. Returns whether
    /// the course was created. Changes nothing when refused.
    pub async fn set_course_profile(&self, course: &CourseId, body: &CourseBody) -> Result<bool, LifecycleError> {
        let profile = CourseProfile::parse(body, &self.settings.courses, &self.settings.workspace)?;
        if let Some(name) = &profile.template {
            self.template_folder(name).await?;
        }
        let created = self.store.put_course(course, body, self.clock.now()).await?;
        tracing::info!(course = %course, created, "course profile stored");
        Ok(created)
    }

    /// Deletes a course, refused (409) while workspaces of it are busy. Its workspaces leave it; no file is touched.
    pub async fn remove_course(&self, course: &CourseId) -> Result<(), LifecycleError> {
        match self.store.delete_course(course).await? {
            CourseDeletion::Deleted => {
                tracing::info!(course = %course, "course deleted");
                Ok(())
            }
            CourseDeletion::NotFound => Err(LifecycleError::CourseNotFound(course.clone())),
            CourseDeletion::Busy(busy) => Err(LifecycleError::CourseBusy { course: course.clone(), busy }),
        }
    }

    /// Puts the student's workspace in `course` (for a launch link made with a course): 404 for an unknown course,
    /// 409 when the workspace is busy in another course.
    pub async fn assign_course(&self, student: &StudentId, course: &CourseId) -> Result<(), LifecycleError> {
        let _guard = self.locks.lock(student).await;
        let previous = self.store.get(student).await?;
        self.check_course_change(student, previous.as_ref(), course).await?;
        self.store.set_workspace_course(student, course, self.clock.now()).await?;
        Ok(())
    }

    /// 404 for an unknown course; 409 when a busy workspace would change course.
    async fn check_course_change(
        &self,
        student: &StudentId,
        previous: Option<&WorkspaceRecord>,
        course: &CourseId,
    ) -> Result<(), LifecycleError> {
        if self.store.get_course(course).await?.is_none() {
            return Err(LifecycleError::CourseNotFound(course.clone()));
        }
        if let Some(rec) = previous {
            if rec.status.is_busy() && rec.course.as_ref().is_some_and(|c| c != course) {
                return Err(LifecycleError::CourseConflict {
                    student: student.clone(),
                    current: rec.course.clone().expect("checked"),
                });
            }
        }
        Ok(())
    }

    /// Under the student's lock, before anything else of a start: records a course given with the start, and works
    /// out what the start uses. A course the operator's rules no longer allow fails the start (409) and changes
    /// nothing.
    pub(super) async fn start_profile(
        &self,
        student: &StudentId,
        previous: Option<&WorkspaceRecord>,
        requested: Option<&CourseId>,
    ) -> Result<StartProfile, LifecycleError> {
        let current = previous.and_then(|r| r.course.as_ref());
        let course = match requested {
            Some(c) if current != Some(c) => {
                self.check_course_change(student, previous, c).await?;
                Some((c.clone(), true))
            }
            Some(c) => Some((c.clone(), false)),
            None => current.map(|c| (c.clone(), false)),
        };
        let Some((course, changed)) = course else {
            return Ok(StartProfile {
                workspace: self.settings.workspace.clone(),
                cull: Overrides::default(),
                template: None,
            });
        };
        let Some(record) = self.store.get_course(&course).await? else {
            return Err(LifecycleError::CourseNotFound(course));
        };
        let profile = CourseProfile::parse(&record.profile, &self.settings.courses, &self.settings.workspace)
            .map_err(|e| LifecycleError::CourseInvalid { course: course.clone(), detail: e.message })?;
        let set_up = !changed && previous.is_some_and(|r| r.course_setup_at.is_some());
        let template = match (&profile.template, set_up) {
            (Some(name), false) => Some(self.template_folder(name).await?),
            _ => None,
        };
        if changed {
            self.store.set_workspace_course(student, &course, self.clock.now()).await?;
        }
        Ok(StartProfile { workspace: profile.apply(&self.settings.workspace), cull: profile.cull, template })
    }

    /// Copies onto the record what this start uses (the course's culling values, the limits), once it is recorded.
    pub(super) async fn record_start_profile(
        &self,
        student: &StudentId,
        p: &StartProfile,
    ) -> Result<(), LifecycleError> {
        let w = &p.workspace;
        let limits = AppliedLimits {
            image: w.image.clone(),
            cpus: w.cpus,
            memory_bytes: w.memory_bytes,
            pids_limit: w.pids_limit,
        };
        Ok(self.store.set_start_profile(student, &p.cull, &limits).await?)
    }

    /// The folder of a template under `templates_path`: it must be a directory itself, not a link to one.
    async fn template_folder(&self, name: &str) -> Result<PathBuf, LifecycleError> {
        crate::course::check_template_name(name)?;
        let Some(root) = self.settings.courses.templates_path.clone() else {
            return Err(ProfileError {
                code: "templates_disabled",
                message: "the operator has set no templates_path".into(),
            }
            .into());
        };
        let path = root.join(name);
        let p = path.clone();
        let meta = tokio::task::spawn_blocking(move || std::fs::symlink_metadata(&p))
            .await
            .map_err(|e| LifecycleError::Panicked(e.to_string()))?;
        match meta {
            Ok(m) if m.is_dir() => Ok(path),
            _ => Err(ProfileError {
                code: "unknown_template",
                message: format!("no template folder named {name:?} in the operator's templates_path"),
            }
            .into()),
        }
    }
}
