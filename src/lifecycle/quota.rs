//! The hard disk limit and the erasure of a student: the two places where a folder's size or existence changes what
//! a workspace may do.

use super::{Lifecycle, LifecycleError};
use crate::domain::{EventKind, EventReason, Status, StopReason, StudentId};
use crate::storage::StorageError;
use crate::store::{NewEvent, RevokeScope};

/// What the hard limit did after a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaAction {
    None,
    Warned,
    Stopped,
}

impl Lifecycle {
    /// After a measurement found `student`'s folder at `bytes`, over `disk_hard_quota`: a running workspace is warned
    /// the first time, and stopped (reason `quota`) when the next measurement still finds it over. Files are never
    /// touched.
    pub async fn over_hard_quota(&self, student: &StudentId, bytes: u64) -> Result<QuotaAction, LifecycleError> {
        let Some(quota) = self.settings.disk_hard_quota else { return Ok(QuotaAction::None) };
        if bytes <= quota {
            self.usage.set_hard_warned(student, None);
            return Ok(QuotaAction::None);
        }
        let _guard = self.locks.lock(student).await;
        let running = self.store.get(student).await?.is_some_and(|r| r.status == Status::Running);
        if !running {
            return Ok(QuotaAction::None);
        }
        let now = self.clock.now();
        if self.usage.hard_warned(student).is_none() {
            let message = format!(
                "Your workspace uses {} MiB, over its limit of {} MiB. Remove files, or it stops at the next check \
                 (in about {} minutes).",
                bytes / (1024 * 1024),
                quota / (1024 * 1024),
                self.settings.usage_interval.as_secs().div_ceil(60)
            );
            let event = NewEvent { kind: EventKind::Warning, reason: Some(EventReason::Quota), message: &message };
            self.store.add_event(student, &event, now).await?;
            self.usage.set_hard_warned(student, Some(now));
            tracing::warn!(student = %student, bytes, quota, "over the hard disk limit: warned");
            return Ok(QuotaAction::Warned);
        }
        self.stop_locked(student, StopReason::Quota).await?;
        self.usage.set_hard_warned(student, None);
        tracing::warn!(student = %student, bytes, quota, "over the hard disk limit: stopped");
        Ok(QuotaAction::Stopped)
    }

    /// Refuses a start while the folder is over the hard limit. Only a folder last measured over it is measured
    /// again (a walk, through the storage gate), so a start of a folder under the limit costs nothing.
    pub(super) async fn check_hard_quota(&self, student: &StudentId) -> Result<(), LifecycleError> {
        let Some(quota) = self.settings.disk_hard_quota else { return Ok(()) };
        if self.usage.get(student).is_none_or(|m| m.usage.bytes <= quota) {
            return Ok(());
        }
        let usage = self.measure_folder(student).await?;
        self.usage.remember(student, usage, self.clock.now());
        if usage.bytes > quota {
            return Err(LifecycleError::OverQuota { student: student.clone(), bytes: usage.bytes, quota });
        }
        Ok(())
    }

    /// The disk use of the student's folder and IDE state folder together, walked through the storage gate (the
    /// walk may take up to `usage_interval` on EFS).
    pub async fn measure_folder(&self, student: &StudentId) -> Result<crate::ops::usage::Usage, StorageError> {
        let dir = self.storage.student_dir(student);
        let state = self.storage.ide_state_dir(student);
        let walk = Some(self.settings.usage_interval);
        let measure = move |_: &crate::storage::Storage, _: &_| {
            let mut usage = crate::ops::usage::disk_usage(&dir).map_err(StorageError::at(dir.clone()))?;
            match crate::ops::usage::disk_usage(&state) {
                Ok(more) => {
                    usage.bytes = usage.bytes.saturating_add(more.bytes);
                    usage.files = usage.files.saturating_add(more.files);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::at(state)(e)),
            }
            Ok(usage)
        };
        self.storage.run("measuring a folder", walk, measure).await
    }

    /// Erases a student: the folder, the IDE state folder and the record, for retention rules and erasure requests. Refused unless the
    /// workspace is stopped (or failed, or never started); the student's sessions end; the event log keeps its
    /// events and a `deleted` one. The one code path that removes a student's folder.
    pub async fn delete(&self, student: &StudentId) -> Result<(), LifecycleError> {
        let _guard = self.locks.lock(student).await;
        let rec = self.store.get(student).await?;
        if rec.as_ref().is_some_and(|r| r.status.is_busy()) {
            return Err(LifecycleError::StillRunning(student.clone()));
        }
        // The folder and the IDE state folder; whether there were any files at all.
        let dirs = [self.storage.student_dir(student), self.storage.ide_state_dir(student)];
        let had_files = self
            .storage
            .run("deleting a student's folders", Some(self.settings.usage_interval), move |_, _| {
                let mut had = false;
                for dir in dirs {
                    match std::fs::symlink_metadata(&dir) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(StorageError::at(dir)(e)),
                        Ok(_) => {
                            std::fs::remove_dir_all(&dir).map_err(StorageError::at(&dir))?;
                            had = true;
                        }
                    }
                }
                Ok(had)
            })
            .await?;
        if rec.is_none() && !had_files {
            return Err(LifecycleError::NotFound(student.clone()));
        }
        let now = self.clock.now();
        self.store.revoke_sessions(&RevokeScope::Student(student.clone()), now).await?;
        let message = "Workspace and files deleted by an administrator.";
        let event = NewEvent { kind: EventKind::Deleted, reason: Some(EventReason::Admin), message };
        if !self.store.delete_workspace(student, &event, now).await? {
            // No record (files only): the deletion is still written to the log.
            self.store.add_event(student, &event, now).await?;
        }
        self.usage.forget(student);
        tracing::warn!(student = %student, "student deleted: folder and record removed");
        Ok(())
    }
}
