//! Coursework in the lifecycle: a course's starter files at the first start in the course, and assignments
//! distributed into the folders of a course's workspaces, each student under their lock and through the storage
//! gate. The file work itself is `ops::coursework`'s (through the fd-based walker; nothing followed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Lifecycle, LifecycleError};
use crate::course::ProfileError;
use crate::domain::{CourseId, StudentId};
use crate::ops::coursework::{copy_template, DistributeReport, Distribution, RelPath};

/// Longest one student's starter files or share of a distribution may keep the base path busy before the call
/// counts as stalled (the default storage deadline is for a single folder check, too short for a copy on EFS).
const COPY_TIMEOUT: Duration = Duration::from_secs(120);

impl Lifecycle {
    /// Copies the course's starter files into the student's folder (never over anything the student has) and records
    /// that they are there, so a later start does not bring back a file the student deleted. A template that cannot
    /// be copied is logged and the start goes on without it (it is tried again at the next start); a stalled base
    /// path fails the start like any other storage call.
    pub(super) async fn copy_starter_files(
        &self,
        student: &StudentId,
        host_dir: &Path,
        template: &Path,
    ) -> Result<(), LifecycleError> {
        let (t, d) = (template.to_path_buf(), host_dir.to_path_buf());
        let owner = (self.settings.workspace.uid, self.settings.workspace.gid);
        let copied = self
            .storage
            .run("copying a course's starter files", Some(COPY_TIMEOUT), move |_, abandoned| {
                Ok((!abandoned.is_set()).then(|| copy_template(&t, &d, owner)))
            })
            .await?;
        match copied {
            Some(Ok(report)) => {
                tracing::info!(
                    student = %student,
                    written = report.written.len(),
                    existing = report.existing.len(),
                    skipped = report.skipped.len(),
                    "starter files copied"
                );
                self.store.mark_course_setup(student, self.clock.now()).await?;
            }
            Some(Err(e)) => {
                tracing::warn!(student = %student, error = ?e.to_string(), "starter files not copied; tried again next start")
            }
            None => {}
        }
        Ok(())
    }

    /// Reads an assignment folder (`source`, under `templates_path`) once, for [`Lifecycle::distribute_to`], and
    /// lists the course's workspaces. 404 for an unknown course, 400 for a source that is not a folder there.
    pub async fn prepare_distribution(
        &self,
        course: &CourseId,
        source: &RelPath,
        target: RelPath,
    ) -> Result<(Arc<Distribution>, Vec<StudentId>), LifecycleError> {
        if self.store.get_course(course).await?.is_none() {
            return Err(LifecycleError::CourseNotFound(course.clone()));
        }
        let Some(root) = self.settings.courses.templates_path.clone() else {
            return Err(ProfileError {
                code: "templates_disabled",
                message: "the operator has set no templates_path, so there is nothing to distribute from".into(),
            }
            .into());
        };
        let path = root.join(source.as_path());
        let (p, shown) = (path.clone(), source.as_str().to_owned());
        let prepared = tokio::task::spawn_blocking(move || {
            if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                return Ok(None);
            }
            Distribution::prepare(&p, target).map(Some)
        })
        .await
        .map_err(|e| LifecycleError::Panicked(e.to_string()))??;
        let Some(distribution) = prepared else {
            return Err(ProfileError {
                code: "unknown_source",
                message: format!("no folder {shown:?} in the operator's templates_path"),
            }
            .into());
        };
        let students = self.store.list_in_course(course).await?.into_iter().map(|r| r.student_id).collect();
        Ok((Arc::new(distribution), students))
    }

    /// One student's share of a distribution, under the student's lock (no start, stop or deletion meanwhile) and
    /// through the storage gate. The student's folder is made if the workspace never started.
    pub async fn distribute_to(
        &self,
        course: &CourseId,
        student: &StudentId,
        distribution: &Arc<Distribution>,
    ) -> Result<DistributeReport, LifecycleError> {
        let _guard = self.locks.lock(student).await;
        let state_dir = self.course_state_dir(course).join("distributed");
        let owner = (self.settings.workspace.uid, self.settings.workspace.gid);
        let (d, s) = (distribution.clone(), student.clone());
        let done = self
            .storage
            .run("distributing an assignment", Some(COPY_TIMEOUT), move |st, abandoned| {
                let root = st.ensure_student_dir_unless(&s, abandoned)?;
                if abandoned.is_set() {
                    return Ok(None);
                }
                private_dir(&state_dir).map_err(crate::storage::StorageError::at(&state_dir))?;
                Ok(Some(d.apply(&s, &root, &state_dir, owner)))
            })
            .await?;
        match done {
            Some(report) => Ok(report?),
            None => Err(LifecycleError::Panicked("the distribution was abandoned".into())),
        }
    }

    /// `<base>/.courses/<course>`: what the service keeps of a course beside the student folders (a name no student
    /// id can have).
    fn course_state_dir(&self, course: &CourseId) -> PathBuf {
        self.storage.base().join(".courses").join(course.as_str())
    }
}

/// Creates a folder and its missing parents, readable by the service's user only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
