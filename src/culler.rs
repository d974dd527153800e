//! The culler: every interval, polls the IDEs of running workspaces for an open tab, asks the pure
//! `decide(workspace, now, policy)` what to do with each, sends each warning once, and stops idle workspaces after
//! re-checking their activity under the student's lock, so a heartbeat that arrives in between wins.
//! Every decision other than "keep" is logged with its reason.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::domain::{deadlines, decide, CullInput, CullPolicy, Deadlines, Decision, Status, StudentId};
use crate::lifecycle::Lifecycle;
use crate::store::WorkspaceRecord;
use crate::supervise::{run_pass, supervise, LoopHealth};

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub running: usize,
    pub warned: Vec<StudentId>,
    pub stopped: Vec<StudentId>,
    /// Decided to stop, but activity arrived before the stop.
    pub reprieved: Vec<StudentId>,
}

/// The policy for one workspace: the service's, with the workspace's overrides.
pub fn effective_policy(lifecycle: &Lifecycle, rec: &WorkspaceRecord) -> CullPolicy {
    let c = &lifecycle.settings().cull;
    let o = &rec.overrides;
    let idle_timeout = o.idle_timeout.unwrap_or(c.idle_timeout);
    CullPolicy {
        idle_timeout,
        warning_lead: c.warning_lead.min(idle_timeout),
        max_age: o.max_age.or(c.max_age),
        enabled: o.cull_enabled.unwrap_or(true),
    }
}

/// The inputs of the decision, with the freshest activity (memory wins over the last written batch).
pub fn cull_input(lifecycle: &Lifecycle, rec: &WorkspaceRecord) -> CullInput {
    let stored = rec.last_activity.or(rec.started_at).unwrap_or(rec.updated_at);
    let last_activity = lifecycle.activity().last(&rec.student_id).map_or(stored, |m| m.max(stored));
    CullInput { last_activity, started_at: rec.started_at.unwrap_or(rec.updated_at), warned_at: rec.warned_at }
}

/// Deadlines of a running workspace, for the status API.
pub fn workspace_deadlines(lifecycle: &Lifecycle, rec: &WorkspaceRecord) -> Option<Deadlines> {
    (rec.status == Status::Running)
        .then(|| deadlines(&cull_input(lifecycle, rec), &effective_policy(lifecycle, rec)))
        .flatten()
}

pub struct Culler {
    lifecycle: Arc<Lifecycle>,
    probe: reqwest::Client,
}

/// code-server's `/healthz` answer.
#[derive(serde::Deserialize)]
struct Health {
    status: String,
}

impl Culler {
    pub fn new(lifecycle: Arc<Lifecycle>) -> Self {
        // No pooling: a kept-alive connection from us would itself keep code-server "alive".
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        Self { lifecycle, probe }
    }

    /// Sweeps every `cull.interval` until cancelled, each sweep supervised: a failed or panicking sweep is logged
    /// and counted, and the next one runs on time.
    pub async fn run(self, health: Arc<LoopHealth>, shutdown: CancellationToken) {
        let interval = self.lifecycle.settings().cull.interval;
        let this = &self;
        supervise(health, "culler", interval, shutdown, move || async move {
            // IDE polls run beside the sweep, not before it: 500 code-servers answering slowly must not delay the
            // decisions. The sweep sees the previous round's polls, fine for a signal that moves once a minute.
            let (_, swept) = tokio::join!(this.poll_ides_now(), this.sweep());
            swept.map(|_| ())
        })
        .await;
    }

    /// One pass over all running workspaces.
    #[tracing::instrument(skip_all)]
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let lc = &self.lifecycle;
        let running = lc.store().list(Some(Status::Running)).await?;
        crate::metrics::running(running.len());
        let now = lc.clock().now();
        let mut report = SweepReport { running: running.len(), ..Default::default() };
        for rec in &running {
            let policy = effective_policy(lc, rec);
            match decide(&cull_input(lc, rec), now, &policy) {
                Decision::Keep => {}
                Decision::Warn { stop_at, reason } => {
                    let secs = (stop_at - now).num_seconds().max(0);
                    let message = format!(
                        "Workspace will close in {} due to {}. Move your mouse or type to keep it alive.",
                        human(secs),
                        if reason == crate::domain::StopReason::MaxAge { "its maximum lifetime" } else { "inactivity" }
                    );
                    if lc.store().record_warning(&rec.student_id, reason, &message, now).await?.is_some() {
                        tracing::info!(student = %rec.student_id, %stop_at, reason = %reason, "warned: stop is near");
                        crate::metrics::warning_sent();
                        report.warned.push(rec.student_id.clone());
                    }
                }
                Decision::Stop(reason) => {
                    tracing::info!(student = %rec.student_id, reason = %reason, "decided to stop; re-checking under the lock");
                    match self.stop_if_still_due(&rec.student_id).await {
                        Ok(true) => report.stopped.push(rec.student_id.clone()),
                        Ok(false) => report.reprieved.push(rec.student_id.clone()),
                        // One student's failure (engine unreachable) must not hold up the others.
                        Err(e) => {
                            tracing::warn!(student = %rec.student_id, error = %e, "stop failed; retrying next sweep")
                        }
                    }
                }
            }
        }
        Ok(report)
    }

    /// Takes the student's lock, reads the record and the activity again, and stops only if the decision still is
    /// to stop. Returns whether it stopped.
    async fn stop_if_still_due(&self, student: &StudentId) -> anyhow::Result<bool> {
        let lc = &self.lifecycle;
        let _guard = lc.lock(student).await;
        let Some(rec) = lc.store().get(student).await? else { return Ok(false) };
        if rec.status != Status::Running {
            tracing::info!(student = %student, status = %rec.status, "no longer running; nothing to stop");
            return Ok(false);
        }
        match decide(&cull_input(lc, &rec), lc.clock().now(), &effective_policy(lc, &rec)) {
            Decision::Stop(reason) => {
                lc.stop_locked(student, reason).await?;
                tracing::info!(student = %student, reason = %reason, "culled");
                Ok(true)
            }
            _ => {
                tracing::info!(student = %student, "activity arrived before the stop; keeping the workspace");
                Ok(false)
            }
        }
    }

    /// Asks each running IDE whether a tab is open (code-server's `/healthz` says `alive` while a connection is
    /// open or a request came within its 60 s heartbeat). Recorded apart from activity; it only counts as activity
    /// when `open_tab_keeps_alive` is set. IDEs without such an endpoint are simply never "connected".
    /// Polls the IDE of every running workspace once (code-server's `lastHeartbeat`: an open tab).
    pub async fn poll_ides_now(&self) {
        match self.lifecycle.store().list(Some(Status::Running)).await {
            Ok(running) => self.poll_ides(&running).await,
            Err(e) => tracing::warn!(error = %e, "cannot list running workspaces for IDE polls"),
        }
    }

    async fn poll_ides(&self, running: &[WorkspaceRecord]) {
        let lc = &self.lifecycle;
        let path = lc.settings().workspace.readiness_path.clone();
        let now: DateTime<Utc> = lc.clock().now();
        let keeps_alive = lc.settings().cull.open_tab_keeps_alive;
        let mut probes = Vec::with_capacity(running.len());
        for r in running {
            let Some(port) = r.host_port else { continue };
            let (id, probe, url) = (r.student_id.clone(), self.probe.clone(), format!("http://127.0.0.1:{port}{path}"));
            probes.push(async move {
                let alive = match probe.get(&url).header(reqwest::header::CONNECTION, "close").send().await {
                    Ok(r) => r.json::<Health>().await.is_ok_and(|h| h.status == "alive"),
                    Err(_) => false,
                };
                (id, alive)
            });
        }
        let results: Vec<(StudentId, bool)> = futures_util::stream::iter(probes).buffer_unordered(32).collect().await;
        for (id, alive) in results.into_iter().filter(|(_, alive)| *alive) {
            let _ = alive;
            lc.activity().ide_seen(&id, now);
            if keeps_alive {
                lc.activity().touch(&id, now);
            }
        }
    }
}

fn human(secs: i64) -> String {
    match secs {
        s if s >= 120 => format!("{} minutes", s.saturating_add(30) / 60),
        s if s >= 60 => "1 minute".to_owned(),
        s => format!("{s} seconds"),
    }
}

/// Writes in-memory activity to the store every `activity_flush_interval` until cancelled, then once more.
pub async fn run_activity_flusher(lifecycle: Arc<Lifecycle>, health: Arc<LoopHealth>, shutdown: CancellationToken) {
    let interval = lifecycle.settings().cull.activity_flush_interval;
    let lc = &lifecycle;
    let flush = move || async move { lc.activity().flush(lc.store()).await.map(drop).context("cannot write activity") };
    supervise(health.clone(), "activity_flusher", interval, shutdown, flush).await;
    // Heartbeats since the last tick would otherwise be lost with the process.
    run_pass(&health, "activity_flusher", flush()).await;
}
