//! The idle warning and the cull: one sweep over the running workspaces asks the pure `decide(workspace, now,
//! policy)` what to do with each, records each warning once, and stops a workspace only after re-reading its record
//! and activity under the student's lock, so a heartbeat that arrives in between wins. Every decision other than
//! "keep" is logged with its reason.
//!
//! The sweep reads from the store only the running records that could be due (`Store::cull_candidates`: a filter
//! on the stored times that can only let too many through, never too few) and a count of the running ones, so its
//! cost does not grow with the running workspaces that are active. The store stays the one source: a workspace
//! another replica started, or whose activity another replica flushed, is seen at the next sweep as before, and
//! no second copy of the running set has to be kept in step.

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
        // One `now` for the filter and the decisions: the filter's promise holds for the time it was given.
        let now = self.clock.now();
        let running = self.store.count_running().await?;
        crate::metrics::running(running);
        let candidates = self.store.cull_candidates(now + CANDIDATE_SLACK, &self.default_policy()).await?;
        let mut report = SweepReport { running, ..Default::default() };
        for rec in &candidates {
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

/// How far past `now` the candidate filter looks: durations are compared in whole milliseconds there and to the
/// nanosecond in `decide`, so a little margin keeps every due workspace in; a row let through early is simply kept.
const CANDIDATE_SLACK: chrono::Duration = chrono::Duration::seconds(1);

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::config::Settings;
    use crate::culler::testing::FakeRuntime;
    use crate::domain::EventKind;
    use crate::store::testing::{store, t};
    use crate::store::{NewEvent, PolicyOverrides, Store};

    /// A lifecycle on the test store (SQLite, or PostgreSQL with `WORKSPACED_TEST_POSTGRES`), a fake engine and a
    /// clock at `t(0)`: idle timeout 900 s, warning 120 s before.
    async fn lifecycle() -> (Arc<Lifecycle>, Store, Arc<FakeRuntime>, Arc<ManualClock>, tempfile::TempDir) {
        let (store, dir) = store().await;
        let mut settings = Settings { base_path: dir.path().to_path_buf(), ..Default::default() };
        settings.cull.idle_timeout = Duration::from_secs(900);
        settings.cull.warning_lead = Duration::from_secs(120);
        settings.cull.max_age = None;
        let runtime = Arc::new(FakeRuntime::default());
        let clock = Arc::new(ManualClock::new(t(0)));
        let lc = Lifecycle::new(Arc::new(settings), store.clone(), runtime.clone(), clock.clone());
        (Arc::new(lc), store, runtime, clock, dir)
    }

    /// What another replica does when it starts a workspace: it writes the store; this one's memory knows nothing.
    async fn started_elsewhere(store: &Store, id: &str, at: i64) -> StudentId {
        let s = StudentId::parse(id).unwrap();
        store.mark_starting(&s, t(at)).await.unwrap();
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
        store.mark_running(&s, &format!("c-{id}"), &crate::store::Route::new(40000, None), t(at), &ev).await.unwrap();
        s
    }

    fn ids(v: &[&str]) -> Vec<StudentId> {
        v.iter().map(|s| StudentId::parse(s).unwrap()).collect()
    }

    #[tokio::test]
    async fn workspaces_only_the_store_knows_are_still_warned_and_stopped_and_fresh_memory_still_keeps_one() {
        let (lc, store, runtime, clock, _d) = lifecycle().await;
        // Known in this replica's memory from the start (as after a restart), then active only in memory.
        let mine = started_elsewhere(&store, "mine", 0).await;
        lc.load_activity().await.unwrap();
        // Started on another replica after this one loaded its memory.
        let other = started_elsewhere(&store, "other", 0).await;
        let busy = started_elsewhere(&store, "busy", 0).await;
        let short = started_elsewhere(&store, "short", 0).await;
        let exempt = started_elsewhere(&store, "exempt", 0).await;
        // The other replica flushed busy's activity at 700 s; short has a 5-minute timeout, exempt no culling.
        store.touch_activity(&busy, t(700)).await.unwrap();
        let o = PolicyOverrides { idle_timeout: Some(Duration::from_secs(300)), ..Default::default() };
        store.set_overrides(&short, &o, t(0)).await.unwrap();
        let o = PolicyOverrides { cull_enabled: Some(false), ..Default::default() };
        store.set_overrides(&exempt, &o, t(0)).await.unwrap();

        clock.set(t(400));
        let r = lc.cull_sweep().await.unwrap();
        assert_eq!((r.running, r.warned.clone(), r.stopped.clone()), (5, vec![], ids(&["short"])));

        // Activity in this replica's memory only: the stored time stays 0.
        clock.set(t(790));
        lc.heartbeat(&mine).await.unwrap();
        let r = lc.cull_sweep().await.unwrap();
        assert_eq!((r.running, r.warned.clone(), r.stopped.clone()), (4, ids(&["other"]), vec![]));
        let again = lc.cull_sweep().await.unwrap();
        assert!(again.warned.is_empty(), "one warning per window: {again:?}");

        clock.set(t(905));
        let r = lc.cull_sweep().await.unwrap();
        assert_eq!((r.warned.clone(), r.stopped.clone(), r.reprieved.clone()), (vec![], ids(&["other"]), vec![]));
        assert_eq!(*runtime.stopped.lock().unwrap(), ids(&["short", "other"]));
        for (s, status) in [(&mine, Status::Running), (&busy, Status::Running), (&exempt, Status::Running)] {
            assert_eq!(store.get(s).await.unwrap().unwrap().status, status, "{s}");
        }
        let rec = store.get(&other).await.unwrap().unwrap();
        assert_eq!((rec.status, rec.stop_reason), (Status::Stopped, Some(StopReason::Idle)));

        // busy's stored 700 and mine's 790 in memory: warned at 1480 and 1570, stopped at 1600 and 1690.
        clock.set(t(1570));
        assert_eq!(lc.cull_sweep().await.unwrap().warned, ids(&["busy", "mine"]));
        clock.set(t(1689));
        assert_eq!(lc.cull_sweep().await.unwrap().stopped, ids(&["busy"]));
        clock.set(t(1690));
        assert_eq!(lc.cull_sweep().await.unwrap().stopped, ids(&["mine"]));
    }

    #[tokio::test]
    async fn a_max_age_stop_comes_through_the_fast_path_whatever_the_activity() {
        let (store, dir) = store().await;
        let mut settings = Settings { base_path: dir.path().to_path_buf(), ..Default::default() };
        settings.cull.max_age = Some(Duration::from_secs(3600));
        let clock = Arc::new(ManualClock::new(t(0)));
        let lc = Lifecycle::new(Arc::new(settings), store.clone(), Arc::new(FakeRuntime::default()), clock.clone());
        let s = started_elsewhere(&store, "old", 0).await;
        store.touch_activity(&s, t(3595)).await.unwrap();
        clock.set(t(3600));
        let r = lc.cull_sweep().await.unwrap();
        assert_eq!(r.stopped, ids(&["old"]));
        assert_eq!(store.get(&s).await.unwrap().unwrap().stop_reason, Some(StopReason::MaxAge));
    }

    #[tokio::test]
    async fn the_engine_sample_covers_workspaces_started_on_other_replicas_and_only_when_asked() {
        let (lc, store, _runtime, clock, _d) = lifecycle().await;
        started_elsewhere(&store, "a", 0).await;
        started_elsewhere(&store, "bb", 0).await;
        assert!(!crate::usage::sample_engine_if_wanted(&lc).await.unwrap(), "nobody asked");
        assert!(lc.usage().engine_sample(clock.now()).is_none(), "no sample before the first");
        assert!(crate::usage::sample_engine_if_wanted(&lc).await.unwrap());
        let sample = lc.usage().engine_sample(clock.now()).unwrap();
        assert_eq!(sample.sampled_at, t(0));
        let pids: Vec<(String, u64)> = sample.stats.iter().map(|(id, s)| (id.to_string(), s.pids)).collect();
        let mut pids = pids;
        pids.sort();
        assert_eq!(pids, [("a".to_owned(), 1), ("bb".to_owned(), 2)]);
        assert!(!crate::usage::sample_engine_if_wanted(&lc).await.unwrap(), "fresh enough");
        clock.set(t(10));
        assert!(crate::usage::sample_engine_if_wanted(&lc).await.unwrap(), "an interval later, still asked for");
        clock.set(t(41));
        assert!(!crate::usage::sample_engine_if_wanted(&lc).await.unwrap(), "nobody asked for three intervals");
    }
}
