//! Reconciling the store with the engine, one student at a time under that student's lock (the loop that drives
//! it is `crate::reconciler`): adopt a running container the record names, remove an orphan, mark a record whose
//! container vanished `lost`, finish a `queued`, `starting` or `stopping` record that nobody works on (a crash).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Lifecycle, LifecycleError};
use crate::domain::{EventKind, Status, StopReason, StudentId};
use crate::runtime::{ContainerInfo, RuntimeError};
use crate::store::{NewEvent, WorkspaceRecord};

/// What one pass did, by kind of action.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub adopted: Vec<StudentId>,
    pub orphans_removed: Vec<StudentId>,
    pub lost: Vec<StudentId>,
    pub interrupted: Vec<StudentId>,
    /// Busy with another operation this pass; looked at next time.
    pub skipped: Vec<StudentId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
}

impl Lifecycle {
    /// One pass over every student that has a container or an unfinished record.
    #[tracing::instrument(skip_all)]
    pub async fn reconcile_once(&self) -> Result<ReconcileReport, ReconcileError> {
        let lc = self;
        let containers = lc.runtime.list_owned().await?;
        let mut by_student: BTreeMap<StudentId, Vec<ContainerInfo>> = BTreeMap::new();
        for c in containers {
            by_student.entry(c.student.clone()).or_default().push(c);
        }
        let mut students: BTreeSet<StudentId> = by_student.keys().cloned().collect();
        for s in [Status::Running, Status::Starting, Status::Stopping, Status::Queued] {
            students.extend(lc.store.list(Some(s)).await?.into_iter().map(|r| r.student_id));
        }
        let mut report = ReconcileReport::default();
        for student in students {
            let Some(_guard) = lc.locks.try_lock(&student).await else {
                report.skipped.push(student);
                continue;
            };
            self.reconcile_student(&student, &mut report).await?;
        }
        Ok(report)
    }

    /// Makes one student's record and container agree. The caller holds the student's lock.
    async fn reconcile_student(&self, student: &StudentId, report: &mut ReconcileReport) -> Result<(), ReconcileError> {
        let lc = self;
        let rec = lc.store.get(student).await?;
        // Fresh look under the lock: the list may be older than an operation that just finished.
        let container = lc.runtime.inspect(student).await?;
        let now = lc.clock.now();
        let grace = lc.settings.workspace.stop_grace;
        match (rec.as_ref().map(|r| r.status), container) {
            (Some(Status::Running), Some(c))
                if c.running && rec.as_ref().and_then(|r| r.container_id.as_ref()) == Some(&c.id) =>
            {
                self.adopt_host(student, rec.as_ref().expect("record"), &c).await?;
                if !lc.activity.is_running(student) {
                    let r = rec.as_ref().expect("record");
                    lc.activity.register(student, r.last_activity.or(r.started_at).unwrap_or(now), r.ide_connected_at);
                    // One process (SQLite): a running workspace it did not know of was left by another run of it.
                    // Replicas on one database (PostgreSQL) run each other's workspaces all the time: nothing to say.
                    if lc.store.backend() == crate::store::Backend::Sqlite {
                        let event = NewEvent {
                            kind: EventKind::Adopted,
                            reason: None,
                            message: "Running workspace adopted after a restart.",
                        };
                        lc.store.add_event(student, &event, now).await?;
                        tracing::info!(student = %student, container = %c.id, "adopted running workspace");
                        crate::metrics::reconcile_action("adopted");
                        report.adopted.push(student.clone());
                    }
                }
            }
            (Some(Status::Running), c) => {
                // The record's container is gone, exited, or another one stands in its place: the workspace is lost.
                lc.mark_lost(student, c.as_ref()).await?;
                crate::metrics::reconcile_action("lost");
                report.lost.push(student.clone());
            }
            (Some(status @ (Status::Starting | Status::Queued | Status::Stopping)), c) => {
                // We hold the lock, so no operation is working on this: a crash or a kill left it half done.
                if let Some(c) = c {
                    lc.runtime.remove_by_id(&c.id, Duration::ZERO).await?;
                }
                if status == Status::Stopping {
                    let reason = rec.as_ref().and_then(|r| r.stop_reason).unwrap_or(StopReason::Shutdown);
                    lc.store.mark_stopped(student, reason, now).await?;
                } else {
                    lc.store.mark_failed(student, "start interrupted (workspaced restarted); start again", now).await?;
                }
                lc.activity.unregister(student);
                tracing::warn!(student = %student, status = %status, "finished an interrupted operation");
                crate::metrics::reconcile_action("interrupted");
                report.interrupted.push(student.clone());
            }
            (_, Some(c)) => {
                // No record, or a record that says stopped or failed: nothing explains this container.
                lc.runtime.remove_by_id(&c.id, grace).await?;
                let event = NewEvent {
                    kind: EventKind::Orphan,
                    reason: Some(crate::domain::EventReason::Orphan),
                    message: "A container no record explains was stopped and removed; files are kept.",
                };
                lc.store.add_event(student, &event, now).await?;
                tracing::warn!(student = %student, container = %c.id, "removed orphan container");
                crate::metrics::reconcile_action("orphan_removed");
                report.orphans_removed.push(student.clone());
            }
            (_, None) => {}
        }
        Ok(())
    }

    /// The host a running container is reached at, as the engine reports it now, onto the record when it differs
    /// (a record written before hosts were kept, a node that rejoined under another address). An address that fails
    /// the check leaves the record as it is: the proxy keeps the route it had, and the next pass looks again.
    async fn adopt_host(
        &self,
        student: &StudentId,
        rec: &WorkspaceRecord,
        c: &ContainerInfo,
    ) -> Result<(), ReconcileError> {
        let host = match super::start::upstream_host(c) {
            Ok(host) => host,
            Err(e) => {
                tracing::warn!(student = %student, container = %c.id, error = %e, "keeping the recorded host");
                return Ok(());
            }
        };
        if host != rec.host_addr {
            self.store.set_route_host(student, &c.id, host.as_deref()).await?;
            let to = host.as_deref().unwrap_or(crate::domain::LOOPBACK);
            tracing::info!(student = %student, container = %c.id, host = to, "the running workspace's host recorded");
        }
        Ok(())
    }
}
