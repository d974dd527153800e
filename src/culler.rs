//! The culler: every interval, polls the IDEs of running workspaces for an open tab, asks the pure
//! `decide(workspace, now, policy)` what to do with each, sends each warning once, and stops idle workspaces after
//! re-checking their activity under the student's lock, so a heartbeat that arrives in between wins.
//! Every decision other than "keep" is logged with its reason.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::domain::{deadlines, decide, CullInput, CullPolicy, Deadlines, Decision, Status, StudentId};
use crate::lifecycle::Lifecycle;
use crate::store::WorkspaceRecord;

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

    /// Sweeps every `cull.interval` until cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.lifecycle.settings().cull.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            // IDE polls run beside the sweep, not before it: 500 code-servers answering slowly must not delay the
            // decisions. The sweep sees the previous round's polls, fine for a signal that moves once a minute.
            let (_, swept) = tokio::join!(self.poll_ides_now(), self.sweep());
            if let Err(e) = swept {
                tracing::warn!(error = %e, "cull sweep failed; trying again next interval");
            }
        }
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
        s if s >= 120 => format!("{} minutes", (s + 30) / 60),
        s if s >= 60 => "1 minute".to_owned(),
        s => format!("{s} seconds"),
    }
}

/// Writes in-memory activity to the store every `activity_flush_interval` until cancelled, then once more.
pub async fn run_activity_flusher(lifecycle: Arc<Lifecycle>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(lifecycle.settings().cull.activity_flush_interval);
    loop {
        let stop = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        if let Err(e) = lifecycle.activity().flush(lifecycle.store()).await {
            tracing::warn!(error = %e, "could not write activity; will retry");
        }
        if stop {
            return;
        }
    }
}
