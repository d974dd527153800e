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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::Lifecycle;
use crate::supervise::{run_pass, LoopHealth};

pub use crate::lifecycle::{ReconcileError, ReconcileReport};

/// One pass over every student that has a container or an unfinished record (see `Lifecycle::reconcile_once`).
pub async fn reconcile_once(lc: &Lifecycle) -> Result<ReconcileReport, ReconcileError> {
    lc.reconcile_once().await
}

/// How the start-up pass went: the loop's first pass comes a full interval later after a success, soon after a
/// failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPass {
    Succeeded,
    Failed,
}

/// The start-up pass: runs before the service takes requests, so everything a crash left is settled first.
pub async fn startup_pass(lc: &Lifecycle) -> FirstPass {
    match reconcile_once(lc).await {
        Ok(r) => {
            tracing::info!(
                adopted = r.adopted.len(),
                orphans = r.orphans_removed.len(),
                lost = r.lost.len(),
                interrupted = r.interrupted.len(),
                "start-up reconcile done"
            );
            FirstPass::Succeeded
        }
        Err(e) => {
            tracing::warn!(error = %e, "start-up reconcile failed; retrying in the background");
            FirstPass::Failed
        }
    }
}

/// Reconciles every `reconcile_interval` until cancelled; after a failure (engine unreachable) or a panicking pass
/// it retries sooner, backing off from 1 s up to the interval. `first` is how the start-up pass went.
/// Each pass is supervised (`supervise::run_pass`): failures are logged with their cause and counted.
pub async fn run(lc: Arc<Lifecycle>, first: FirstPass, health: Arc<LoopHealth>, shutdown: CancellationToken) {
    let first_ok = first == FirstPass::Succeeded;
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
        if !health.leads() {
            // Another replica reconciles; this one stands by (a healthy state).
            health.pass_finished("reconciler");
            wait = interval;
            continue;
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
