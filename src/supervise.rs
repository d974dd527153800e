//! Supervision of the background loops (culler, activity flusher, reconciler, disk usage, webhook): one pass that
//! panics or fails is logged with its cause and counted, and the loop goes on with its next pass. [`LoopHealth`]
//! remembers when each loop last finished a pass (by the injected clock), so `/readyz` can report a loop that has
//! not finished one in [`DEAD_AFTER_INTERVALS`] of its intervals as dead. The loops' own logic stays in their
//! modules; only the wrapping lives here.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

/// A loop is dead when this many of its intervals pass without a finished pass: one slow pass or one failure is
/// not enough, a loop that keeps failing or hangs is.
pub const DEAD_AFTER_INTERVALS: u32 = 3;

/// How long a long-lived task (the webhook deliverer) waits before it is started again after a panic, so a task
/// that panics at once does not spin.
pub const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// Per loop: its interval and its last finished pass.
pub struct LoopHealth {
    clock: Arc<dyn Clock>,
    /// Whether this replica runs the singleton loops (unset: it does, alone).
    leadership: std::sync::OnceLock<Arc<crate::lease::Leadership>>,
    loops: Mutex<BTreeMap<&'static str, LoopState>>,
}

#[derive(Debug, Clone, Copy)]
struct LoopState {
    /// `None`: a long-lived task with no passes (only restarts are counted), never reported dead for staleness.
    interval: Option<Duration>,
    registered_at: DateTime<Utc>,
    last_finished: Option<DateTime<Utc>>,
    passes: u64,
    failures: u64,
}

/// What `/readyz` says about one loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopStatus {
    Ok,
    /// No finished pass since this time (the last finished pass, or the loop's start when none finished).
    Dead {
        since: DateTime<Utc>,
    },
}

impl std::fmt::Display for LoopStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoopStatus::Ok => f.write_str("ok"),
            LoopStatus::Dead { since } => write!(f, "dead: no finished pass since {}", since.to_rfc3339()),
        }
    }
}

impl LoopHealth {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, loops: Mutex::new(BTreeMap::new()), leadership: std::sync::OnceLock::new() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<&'static str, LoopState>) -> T) -> T {
        // A panic elsewhere while the map was held leaves it consistent (every update is one assignment).
        let mut map = self.loops.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut map)
    }

    /// Starts watching a loop that should finish a pass every `interval` (`None`: a long-lived task).
    /// Makes the singleton loops run only while `leadership` leads.
    pub fn set_leadership(&self, leadership: Arc<crate::lease::Leadership>) {
        let _ = self.leadership.set(leadership);
    }

    /// Whether this replica runs the singleton loops now.
    pub fn leads(&self) -> bool {
        self.leadership.get().is_none_or(|l| l.leads())
    }

    /// The fence of the lease this replica last held (0 on a single replica).
    pub fn fence(&self) -> i64 {
        self.leadership.get().map_or(0, |l| l.fence())
    }

    pub fn register(&self, name: &'static str, interval: Option<Duration>) {
        let now = self.clock.now();
        self.with(|m| m.insert(name, LoopState::new(interval, now)));
    }

    /// Records a pass that finished without error.
    pub fn pass_finished(&self, name: &'static str) {
        let now = self.clock.now();
        self.with(|m| {
            let s = m.entry(name).or_insert(LoopState::new(None, now));
            s.last_finished = Some(now);
            s.passes = s.passes.saturating_add(1);
        });
        crate::metrics::loop_pass_finished(name, now);
    }

    /// Records a pass that failed or panicked.
    pub fn pass_failed(&self, name: &'static str) {
        let now = self.clock.now();
        self.with(|m| {
            let s = m.entry(name).or_insert(LoopState::new(None, now));
            s.failures = s.failures.saturating_add(1);
        });
        crate::metrics::loop_failure(name);
    }

    /// Finished passes and failures of a loop so far.
    pub fn counts(&self, name: &str) -> (u64, u64) {
        self.with(|m| m.get(name).map_or((0, 0), |s| (s.passes, s.failures)))
    }

    /// Each registered loop and whether it is alive now.
    pub fn report(&self) -> BTreeMap<&'static str, LoopStatus> {
        let now = self.clock.now();
        self.with(|m| m.iter().map(|(name, s)| (*name, s.status(now))).collect())
    }
}

impl LoopState {
    fn new(interval: Option<Duration>, now: DateTime<Utc>) -> Self {
        Self { interval, registered_at: now, last_finished: None, passes: 0, failures: 0 }
    }

    fn status(&self, now: DateTime<Utc>) -> LoopStatus {
        let Some(interval) = self.interval else { return LoopStatus::Ok };
        let since = self.last_finished.unwrap_or(self.registered_at);
        // Saturating all the way: an interval too long for chrono simply means "never dead".
        let allowed =
            chrono::Duration::from_std(interval.saturating_mul(DEAD_AFTER_INTERVALS)).unwrap_or(chrono::Duration::MAX);
        match since.checked_add_signed(allowed) {
            Some(deadline) if now > deadline => LoopStatus::Dead { since },
            _ => LoopStatus::Ok,
        }
    }
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs one pass of loop `name`, catching a panic. Records the outcome in `health` (and the metrics), logs a
/// failure with its cause, and returns the pass's value when it finished without error.
pub async fn run_pass<T>(
    health: &LoopHealth,
    name: &'static str,
    pass: impl Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    // Unwind safety: a pass shares only the lifecycle, whose state is behind locks and written in single steps;
    // the alternative, a loop that silently ends, is worse.
    match AssertUnwindSafe(pass).catch_unwind().await {
        Ok(Ok(value)) => {
            health.pass_finished(name);
            Some(value)
        }
        Ok(Err(e)) => {
            health.pass_failed(name);
            tracing::warn!(r#loop = name, error = format!("{e:#}"), "background pass failed; the loop goes on");
            None
        }
        Err(payload) => {
            health.pass_failed(name);
            let cause = panic_message(payload.as_ref());
            tracing::error!(r#loop = name, panic = %cause, "background pass panicked; the loop goes on");
            None
        }
    }
}

/// Runs `pass` every `interval` (the first at once) until `shutdown`, each pass under [`run_pass`].
pub async fn supervise<F, Fut>(
    health: Arc<LoopHealth>,
    name: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    health.register(name, Some(interval));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        run_pass(&health, name, pass()).await;
    }
}

/// Like [`supervise`], for a loop only one replica may run: while another replica leads, each pass is skipped
/// (and counts as finished: a replica on standby is healthy).
pub async fn supervise_singleton<F, Fut>(
    health: Arc<LoopHealth>,
    name: &'static str,
    interval: Duration,
    shutdown: CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let standby = health.clone();
    supervise(health, name, interval, shutdown, move || {
        let leads = standby.leads();
        let run = leads.then(&mut pass);
        async move {
            match run {
                Some(run) => run.await,
                None => Ok(()),
            }
        }
    })
    .await;
}

/// Runs a long-lived task (one with its own inner loop and retries) and starts it again after a panic, until it
/// returns or `shutdown`. Registered without an interval: it has no passes to be late with.
pub async fn keep_running<F, Fut>(health: Arc<LoopHealth>, name: &'static str, shutdown: CancellationToken, mut task: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    health.register(name, None);
    loop {
        match AssertUnwindSafe(task()).catch_unwind().await {
            Ok(()) => return,
            Err(payload) => {
                health.pass_failed(name);
                let cause = panic_message(payload.as_ref());
                tracing::error!(r#loop = name, panic = %cause, "background task panicked; starting it again");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RESTART_PAUSE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap().with_timezone(&Utc)))
    }

    fn metric_line(name: &str, loop_name: &str) -> Option<String> {
        let prefix = format!("{name}{{loop=\"{loop_name}\"}} ");
        crate::metrics::handle().render().lines().find(|l| l.starts_with(&prefix)).map(str::to_owned)
    }

    #[tokio::test]
    async fn a_pass_that_panics_is_counted_and_the_next_passes_still_run() {
        crate::metrics::handle();
        let clock = clock();
        let health = Arc::new(LoopHealth::new(clock.clone()));
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let (r, stop) = (runs.clone(), shutdown.clone());
        let task = tokio::spawn(supervise(
            health.clone(),
            "test_panics_on_second",
            Duration::from_millis(10),
            shutdown.clone(),
            move || {
                let (r, stop) = (r.clone(), stop.clone());
                async move {
                    let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                    match n {
                        2 => panic!("injected failure in pass {n}"),
                        3 => anyhow::bail!("injected error in pass {n}"),
                        5 => stop.cancel(),
                        _ => {}
                    }
                    Ok(())
                }
            },
        ));
        task.await.expect("the supervising loop itself never panics");
        assert_eq!(runs.load(Ordering::SeqCst), 5, "passes 4 and 5 ran after the panic and the error");
        assert_eq!(health.counts("test_panics_on_second"), (3, 2), "(finished, failed)");
        assert_eq!(
            metric_line("workspaced_loop_failures_total", "test_panics_on_second").as_deref(),
            Some("workspaced_loop_failures_total{loop=\"test_panics_on_second\"} 2")
        );
        assert_eq!(
            metric_line("workspaced_loop_passes_total", "test_panics_on_second").as_deref(),
            Some("workspaced_loop_passes_total{loop=\"test_panics_on_second\"} 3")
        );
        assert!(metric_line("workspaced_loop_last_pass_timestamp_seconds", "test_panics_on_second").is_some());
    }

    #[tokio::test]
    async fn a_loop_without_a_finished_pass_for_three_intervals_is_dead_until_its_next_pass() {
        let clock = clock();
        let health = LoopHealth::new(clock.clone());
        let interval = Duration::from_secs(60);
        health.register("culler", Some(interval));
        let started = clock.now();
        assert_eq!(health.report()["culler"], LoopStatus::Ok, "a loop gets three intervals for its first pass");
        assert_eq!(run_pass(&health, "culler", async { Ok(1) }).await, Some(1));
        let finished = clock.now();

        clock.advance(Duration::from_secs(180));
        assert_eq!(health.report()["culler"], LoopStatus::Ok, "exactly three intervals is still alive");
        assert_eq!(run_pass(&health, "culler", async { Err::<(), _>(anyhow::anyhow!("store down")) }).await, None);
        let panicking = async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok(())
        };
        assert_eq!(run_pass(&health, "culler", panicking).await, None);
        clock.advance(Duration::from_secs(1));
        let dead = health.report()["culler"].clone();
        assert_eq!(dead, LoopStatus::Dead { since: finished }, "failed passes do not count as finished");
        assert!(dead.to_string().starts_with("dead: no finished pass since 2026-03-01T10:00:00"), "{dead}");

        assert_eq!(run_pass(&health, "culler", async { Ok(()) }).await, Some(()));
        assert_eq!(health.report()["culler"], LoopStatus::Ok, "one finished pass makes it ok again");
        assert_eq!(health.counts("culler"), (2, 2));
        assert!(started <= finished);
    }

    #[tokio::test]
    async fn a_loop_that_never_finishes_a_pass_is_dead_three_intervals_after_it_started() {
        let clock = clock();
        let health = LoopHealth::new(clock.clone());
        health.register("reconciler", Some(Duration::from_secs(10)));
        let started = clock.now();
        clock.advance(Duration::from_secs(31));
        assert_eq!(health.report()["reconciler"], LoopStatus::Dead { since: started });
    }

    #[tokio::test]
    async fn extreme_intervals_and_clocks_never_panic() {
        let clock = clock();
        let health = LoopHealth::new(clock.clone());
        health.register("forever", Some(Duration::MAX));
        clock.set(DateTime::<Utc>::MAX_UTC);
        assert_eq!(health.report()["forever"], LoopStatus::Ok, "an interval beyond chrono's range is never late");
        health.register("late", Some(Duration::from_secs(1)));
        assert_eq!(health.report()["late"], LoopStatus::Ok);
    }

    #[tokio::test]
    async fn a_long_lived_task_is_started_again_after_a_panic_and_never_reported_dead() {
        let clock = clock();
        let health = Arc::new(LoopHealth::new(clock.clone()));
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        keep_running(health.clone(), "test_long_lived", CancellationToken::new(), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected failure on the first run");
                }
            }
        })
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 2, "started again once, then it returned");
        assert_eq!(health.counts("test_long_lived"), (0, 1));
        clock.advance(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(health.report()["test_long_lived"], LoopStatus::Ok);
    }
}
