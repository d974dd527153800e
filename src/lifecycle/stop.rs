//! Stopping a workspace, for every reason: the container is stopped and removed, the files stay.

use std::sync::Arc;

use super::{Lifecycle, LifecycleError};
use crate::domain::{Status, StopReason, StudentId};
use crate::runtime::ContainerInfo;
use crate::store::WorkspaceRecord;

impl Lifecycle {
    /// Stops the student's workspace for `reason`: the container is stopped and removed, the files stay.
    /// Stopping a workspace that is not running succeeds and changes nothing. Runs in its own task, like a start.
    pub async fn stop(
        self: &Arc<Self>,
        student: &StudentId,
        reason: StopReason,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        // A start waiting in the queue holds the student's lock; call it off rather than wait through the queue.
        self.admission.cancel(student);
        let (lc, s) = (self.clone(), student.clone());
        tokio::spawn(async move {
            let _guard = lc.locks.lock(&s).await;
            lc.stop_locked(&s, reason).await
        })
        .await
        .map_err(|e| LifecycleError::Panicked(e.to_string()))?
    }

    /// [`Lifecycle::stop`] for a caller that already holds the student's lock. When the engine cannot be reached
    /// the record is left as it was and the error returned: nothing is marked stopped that may still run.
    pub async fn stop_locked(
        &self,
        student: &StudentId,
        reason: StopReason,
    ) -> Result<WorkspaceRecord, LifecycleError> {
        let rec = self.status(student).await?;
        if matches!(rec.status, Status::Stopped | Status::Failed) {
            return Ok(rec);
        }
        self.runtime.ping().await?;
        // Activity that arrived since the last batch is still worth keeping in the record.
        if let Some(last) = self.activity.last(student) {
            self.store.touch_activity(student, last).await?;
        }
        self.store.mark_stopping(student, reason, self.clock.now()).await?;
        if let Err(e) = self.runtime.stop(student, self.settings.workspace.stop_grace).await {
            self.store.revert_status(student, rec.status, self.clock.now()).await?;
            return Err(e.into());
        }
        self.store.mark_stopped(student, reason, self.clock.now()).await?;
        self.activity.unregister(student);
        crate::metrics::stopped(reason);
        tracing::info!(student = %student, reason = %reason, "workspace stopped");
        self.status(student).await
    }

    /// Records that a running workspace's container is gone (exited, removed, or another stands in its place):
    /// removes whatever container is left and marks the record `stopped` with reason `lost`. The one place this
    /// bookkeeping is written, for the reconciler and for a start that finds its container gone.
    pub(super) async fn mark_lost(
        &self,
        student: &StudentId,
        leftover: Option<&ContainerInfo>,
    ) -> Result<(), LifecycleError> {
        if let Some(c) = leftover {
            self.runtime.remove_by_id(&c.id, self.settings.workspace.stop_grace).await?;
        }
        self.store.mark_stopped(student, StopReason::Lost, self.clock.now()).await?;
        self.activity.unregister(student);
        tracing::warn!(student = %student, "record said running but its container is gone: marked lost");
        crate::metrics::stopped(StopReason::Lost);
        Ok(())
    }
}
