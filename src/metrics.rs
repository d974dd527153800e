//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`. Call sites use the helpers below so
//! metric names live in one place.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::domain::StopReason;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder on first use (several apps in one test process share it) and returns its handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("workspaced_start_duration_seconds".into()), &buckets)
            .expect("valid buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then our handle renders nothing, which is fine.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub fn heartbeat() {
    counter!("workspaced_heartbeats_total").increment(1);
}

pub fn stopped(reason: StopReason) {
    counter!("workspaced_stops_total", "reason" => reason.as_str()).increment(1);
    if matches!(reason, StopReason::Idle | StopReason::MaxAge) {
        counter!("workspaced_culls_total", "reason" => reason.as_str()).increment(1);
    }
}

pub fn warning_sent() {
    counter!("workspaced_warnings_total").increment(1);
}

/// A workspace was started again within 5 minutes of an idle stop: the culler probably stopped someone who was working.
pub fn restart_after_idle_stop() {
    counter!("workspaced_restarts_after_idle_stop_total").increment(1);
}

pub fn start_finished(outcome: &'static str, took: Duration) {
    counter!("workspaced_starts_total", "outcome" => outcome).increment(1);
    if outcome == "ok" {
        histogram!("workspaced_start_duration_seconds", "outcome" => outcome).record(took.as_secs_f64());
    }
}

pub fn running(n: usize) {
    gauge!("workspaced_workspaces_running").set(n as f64);
}

/// Whether this replica runs the singleton loops, and the fence of the lease it last held.
pub fn leadership(leads: bool, fence: i64) {
    gauge!("workspaced_leader").set(if leads { 1.0 } else { 0.0 });
    gauge!("workspaced_lease_fence").set(fence as f64);
}

pub fn queue_length(n: usize) {
    gauge!("workspaced_start_queue_length").set(n as f64);
}

/// A file-system call on the base path, by outcome (`ok`, `error`, `stalled`: past its deadline, `refused`: too
/// many calls already blocked).
pub fn storage_call(outcome: &'static str) {
    counter!("workspaced_storage_calls_total", "outcome" => outcome).increment(1);
}

pub fn reconcile_action(kind: &'static str) {
    counter!("workspaced_reconcile_actions_total", "kind" => kind).increment(1);
}

/// WebSocket connections open through the proxy.
pub fn proxy_websockets(open: i64) {
    gauge!("workspaced_proxy_websockets").set(open as f64);
}

/// A request answered by the proxy, by outcome (`forwarded`, `not_running`, `unauthorized`, `forbidden`,
/// `timeout`, `unreachable`, ...).
pub fn proxy_request(outcome: &'static str) {
    counter!("workspaced_proxy_requests_total", "outcome" => outcome).increment(1);
}

/// A background loop's pass failed or panicked (`loop` = `culler`, `activity_flusher`, `reconciler`, `usage`,
/// `webhook`).
pub fn loop_failure(name: &'static str) {
    counter!("workspaced_loop_failures_total", "loop" => name).increment(1);
}

/// A background loop finished a pass: the pass counter and the time of the last finished pass (unix seconds, by the
/// service's clock).
pub fn loop_pass_finished(name: &'static str, at: chrono::DateTime<chrono::Utc>) {
    counter!("workspaced_loop_passes_total", "loop" => name).increment(1);
    gauge!("workspaced_loop_last_pass_timestamp_seconds", "loop" => name).set(at.timestamp_millis() as f64 / 1000.0);
}
