//! The idle warning and the cull: one sweep over the running workspaces asks the pure `decide(workspace, now,
//! policy)` what to do with each, records each warning once, and stops a workspace only after re-reading its record
//! and activity under the student's lock, so a heartbeat that arrives in between wins. Every decision other than
//! "keep" is logged with its reason.

use super::{Lifecycle, LifecycleError};
use crate::domain::{decide, Decision, Status, StopReason, StudentId};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub running: usize,
    pub warned: Vec<StudentId>,
    pub stopped: Vec<StudentId>,
    /// Decided to stop, but activity arrived before the stop.
    pub reprieved: Vec<StudentId>,
}

impl Lifecycle {
    /// One pass over all running workspaces: warn those entering the warning window, stop those past their
    /// deadline. One student's failed stop (engine unreachable) is logged and retried next sweep.
    #[tracing::instrument(skip_all)]
    pub async fn cull_sweep(&self) -> Result<SweepReport, LifecycleError> {
        let running = self.store.list(Some(Status::Running)).await?;
        crate::metrics::running(running.len());
        let now = self.clock.now();
        let mut report = SweepReport { running: running.len(), ..Default::default() };
        for rec in &running {
            let student = &rec.student_id;
            match decide(&self.cull_input_of(rec), now, &self.policy_of(rec)) {
                Decision::Keep => {}
                Decision::Warn { stop_at, reason } => {
                    let secs = (stop_at - now).num_seconds().max(0);
                    let message = warning_message(secs, reason);
                    if self.store.record_warning(student, reason, &message, now).await?.is_some() {
                        tracing::info!(student = %student, %stop_at, reason = %reason, "warned: stop is near");
                        crate::metrics::warning_sent();
                        report.warned.push(student.clone());
                    }
                }
                Decision::Stop(reason) => {
                    tracing::info!(student = %student, reason = %reason, "decided to stop; re-checking under the lock");
                    match self.cull_if_still_due(student).await {
                        Ok(true) => report.stopped.push(student.clone()),
                        Ok(false) => report.reprieved.push(student.clone()),
                        Err(e) => tracing::warn!(student = %student, error = %e, "stop failed; retrying next sweep"),
                    }
                }
            }
        }
        Ok(report)
    }

    /// Takes the student's lock, reads the record and the activity again, and stops only if the decision still is
    /// to stop. Returns whether it stopped.
    async fn cull_if_still_due(&self, student: &StudentId) -> Result<bool, LifecycleError> {
        let _guard = self.locks.lock(student).await;
        let Some(rec) = self.store.get(student).await? else { return Ok(false) };
        if rec.status != Status::Running {
            tracing::info!(student = %student, status = %rec.status, "no longer running; nothing to stop");
            return Ok(false);
        }
        match decide(&self.cull_input_of(&rec), self.clock.now(), &self.policy_of(&rec)) {
            Decision::Stop(reason) => {
                self.stop_locked(student, reason).await?;
                tracing::info!(student = %student, reason = %reason, "culled");
                Ok(true)
            }
            _ => {
                tracing::info!(student = %student, "activity arrived before the stop; keeping the workspace");
                Ok(false)
            }
        }
    }
}

/// The warning's sentence, as the seeds word it.
fn warning_message(secs: i64, reason: StopReason) -> String {
    let why = if reason == StopReason::MaxAge { "its maximum lifetime" } else { "inactivity" };
    format!("Workspace will close in {} due to {why}. Move your mouse or type to keep it alive.", human(secs))
}

fn human(secs: i64) -> String {
    match secs {
        s if s >= 120 => format!("{} minutes", s.saturating_add(30) / 60),
        s if s >= 60 => "1 minute".to_owned(),
        s => format!("{s} seconds"),
    }
}
