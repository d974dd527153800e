//! The reconciler: level-triggered, like a Kubernetes controller. At start-up and every interval it lists our
//! containers and the store's records and makes them agree, one student at a time under that student's lock:
//! - a running container whose record says running (same id) is adopted untouched;
//! - a labelled container that no record explains is an orphan: stopped and removed (files are never touched);
//! - a record that says running but has no running container becomes `stopped` with reason `lost`;
//! - a record left `queued`, `starting` or `stopping` with nobody working on it (a crash) is finished: its container
//!   removed, a start recorded `failed`, a stop recorded `stopped` with the reason it had.
//!
//! It is not told why it runs. When the engine cannot be reached it changes nothing and reports the error; the loop
//! backs off and tries again. Containers of other instances or without our labels are never listed, so never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::domain::{EventKind, Status, StopReason, StudentId};
use crate::lifecycle::Lifecycle;
use crate::runtime::{ContainerInfo, RuntimeError};
use crate::store::NewEvent;
use crate::supervise::{run_pass, LoopHealth};

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
    Lifecycle(#[from] crate::lifecycle::LifecycleError),
}

/// One pass over every student that has a container or an unfinished record.
#[tracing::instrument(skip_all)]
pub async fn reconcile_once(lc: &Lifecycle) -> Result<ReconcileReport, ReconcileError> {
    let containers = lc.runtime().list_owned().await?;
    let mut by_student: BTreeMap<StudentId, Vec<ContainerInfo>> = BTreeMap::new();
    for c in containers {
        by_student.entry(c.student.clone()).or_default().push(c);
    }
    let mut students: BTreeSet<StudentId> = by_student.keys().cloned().collect();
    for s in [Status::Running, Status::Starting, Status::Stopping, Status::Queued] {
        students.extend(lc.store().list(Some(s)).await?.into_iter().map(|r| r.student_id));
    }
    let mut report = ReconcileReport::default();
    for student in students {
        let Some(_guard) = lc.locks().try_lock(&student) else {
            report.skipped.push(student);
            continue;
        };
        reconcile_student(lc, &student, &mut report).await?;
    }
    Ok(report)
}

/// Makes one student's record and container agree. The caller holds the student's lock.
async fn reconcile_student(
    lc: &Lifecycle,
    student: &StudentId,
    report: &mut ReconcileReport,
) -> Result<(), ReconcileError> {
    let rec = lc.store().get(student).await?;
    // Fresh look under the lock: the list may be older than an operation that just finished.
    let container = lc.runtime().inspect(student).await?;
    let now = lc.clock().now();
    let grace = lc.settings().workspace.stop_grace;
    match (rec.as_ref().map(|r| r.status), container) {
        (Some(Status::Running), Some(c))
            if c.running && rec.as_ref().and_then(|r| r.container_id.as_ref()) == Some(&c.id) =>
        {
            if !lc.activity().is_running(student) {
                let r = rec.as_ref().expect("record");
                lc.activity().register(student, r.last_activity.or(r.started_at).unwrap_or(now), r.ide_connected_at);
                let event = NewEvent {
                    kind: EventKind::Adopted,
                    reason: None,
                    message: "Running workspace adopted after a restart.",
                };
                lc.store().add_event(student, &event, now).await?;
                tracing::info!(student = %student, container = %c.id, "adopted running workspace");
                crate::metrics::reconcile_action("adopted");
                report.adopted.push(student.clone());
            }
        }
        (Some(Status::Running), c) => {
            // The record's container is gone, exited, or another one stands in its place: the workspace is lost.
            if let Some(c) = c {
                lc.runtime().remove_by_id(&c.id, grace).await?;
            }
            lc.store().mark_stopped(student, StopReason::Lost, now).await?;
            lc.activity().unregister(student);
            tracing::warn!(student = %student, "record said running but its container is gone: marked lost");
            crate::metrics::reconcile_action("lost");
            crate::metrics::stopped(StopReason::Lost);
            report.lost.push(student.clone());
        }
        (Some(status @ (Status::Starting | Status::Queued | Status::Stopping)), c) => {
            // We hold the lock, so no operation is working on this: a crash or a kill left it half done.
            if let Some(c) = c {
                lc.runtime().remove_by_id(&c.id, Duration::ZERO).await?;
            }
            if status == Status::Stopping {
                let reason = rec.as_ref().and_then(|r| r.stop_reason).unwrap_or(StopReason::Shutdown);
                lc.store().mark_stopped(student, reason, now).await?;
            } else {
                lc.store().mark_failed(student, "start interrupted (workspaced restarted); start again", now).await?;
            }
            lc.activity().unregister(student);
            tracing::warn!(student = %student, status = %status, "finished an interrupted operation");
            crate::metrics::reconcile_action("interrupted");
            report.interrupted.push(student.clone());
        }
        (_, Some(c)) => {
            // No record, or a record that says stopped or failed: nothing explains this container.
            lc.runtime().remove_by_id(&c.id, grace).await?;
            let event = NewEvent {
                kind: EventKind::Orphan,
                reason: Some(crate::domain::EventReason::Orphan),
                message: "A container no record explains was stopped and removed; files are kept.",
            };
            lc.store().add_event(student, &event, now).await?;
            tracing::warn!(student = %student, container = %c.id, "removed orphan container");
            crate::metrics::reconcile_action("orphan_removed");
            report.orphans_removed.push(student.clone());
        }
        (_, None) => {}
    }
    Ok(())
}

/// The start-up pass: runs before the service takes requests, so everything a crash left is settled first.
/// Returns whether it succeeded (the loop retries soon when it did not).
pub async fn startup_pass(lc: &Lifecycle) -> bool {
    match reconcile_once(lc).await {
        Ok(r) => {
            tracing::info!(
                adopted = r.adopted.len(),
                orphans = r.orphans_removed.len(),
                lost = r.lost.len(),
                interrupted = r.interrupted.len(),
                "start-up reconcile done"
            );
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "start-up reconcile failed; retrying in the background");
            false
        }
    }
}

/// Reconciles every `reconcile_interval` until cancelled; after a failure (engine unreachable) or a panicking pass
/// it retries sooner, backing off from 1 s up to the interval. `first_ok` says whether the start-up pass succeeded.
/// Each pass is supervised (`supervise::run_pass`): failures are logged with their cause and counted.
pub async fn run(lc: Arc<Lifecycle>, first_ok: bool, health: Arc<LoopHealth>, shutdown: CancellationToken) {
    let interval = lc.settings().reconcile_interval;
    health.register("reconciler", Some(interval));
    if first_ok {
        health.pass_finished("reconciler");
    }
    let mut wait = if first_ok { interval } else { Duration::from_secs(1) };
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let pass = async { reconcile_once(&lc).await.context("reconcile pass failed; nothing changed") };
        match run_pass(&health, "reconciler", pass).await {
            Some(r) => {
                if r != ReconcileReport::default() {
                    tracing::info!(
                        adopted = r.adopted.len(),
                        orphans = r.orphans_removed.len(),
                        lost = r.lost.len(),
                        interrupted = r.interrupted.len(),
                        skipped = r.skipped.len(),
                        "reconciled"
                    );
                }
                wait = interval;
                backoff = Duration::from_secs(1);
            }
            None => {
                tracing::info!(retry_in = ?backoff, "reconciling again after the backoff");
                wait = backoff.min(interval);
                backoff = backoff.saturating_mul(2).min(interval);
            }
        }
    }
}
