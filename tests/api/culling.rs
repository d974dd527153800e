//! Idle culling with seconds-level timeouts against the real engine: one warning, then a stop for `idle`; heartbeats
//! keep a workspace alive; a heartbeat between the decision and the stop wins; an open tab alone counts only when
//! configured; per-workspace overrides; notifications reach a local webhook receiver.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use chrono::{DateTime, Utc};
use workspaced::clock::{Clock, ManualClock};
use workspaced::culler::Culler;
use workspaced::domain::StudentId;

use crate::helpers::*;

fn fast_culling(s: &mut workspaced::config::Settings) {
    s.cull.idle_timeout = Duration::from_secs(4);
    s.cull.warning_lead = Duration::from_secs(2);
    s.cull.interval = Duration::from_secs(1);
    // busybox httpd as PID 1 ignores SIGTERM, so every stop of the tiny image takes the whole grace period.
    s.workspace.stop_grace = Duration::from_secs(1);
}

/// A webhook receiver on 127.0.0.1 that keeps every body it gets.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_idle_workspace_is_warned_once_then_stopped_for_idle_with_files_intact() {
    let (hook, received) = webhook_receiver().await;
    let app = spawn_app_with(|s| {
        fast_culling(s);
        s.notify.webhook_url = Some(hook);
        s.notify.webhook_secret = Some("s3cret".into());
    })
    .await;
    let ws = app.start("idle-1").await;
    assert!(ws["seconds_left"].as_i64().unwrap() <= 4);
    assert!(ws["warn_at"].is_string() && ws["stop_at"].is_string());
    docker_exec(ws["container_id"].as_str().unwrap(), "echo keep > /home/coder/project/work.txt");

    let done = app.wait_for("idle-1", Duration::from_secs(12), |w| w["status"] == "stopped").await;
    assert_eq!(done["status"], "stopped", "{done}");
    assert_eq!(done["stop_reason"], "idle");
    assert_eq!(done["stop_message"], "Workspace stopped due to inactivity.");
    let idle_for = time(&done["stopped_at"]) - time(&done["last_activity"]);
    assert!(idle_for >= chrono::Duration::seconds(4), "not before the timeout: {idle_for}");
    assert!(app.containers().is_empty());
    assert_eq!(std::fs::read_to_string(app.student_dir("idle-1").join("work.txt")).unwrap(), "keep\n");

    let kinds = app.event_kinds("idle-1").await;
    assert_eq!(kinds.iter().filter(|k| *k == "warning").count(), 1, "exactly one warning: {kinds:?}");
    assert_eq!(kinds[kinds.len() - 2..], ["warning", "stopped"], "{kinds:?}");

    // The LMS hears about it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !received.lock().unwrap().iter().any(|e| e["type"] == "stopped") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = received.lock().unwrap().clone();
    let stop = got.iter().find(|e| e["type"] == "stopped").expect("stop notification delivered");
    assert_eq!(stop["student_id"], "idle-1");
    assert_eq!(stop["message"], "Workspace stopped due to inactivity.");
    assert!(got.iter().any(|e| e["type"] == "warning"));

    // Coming back right after an idle stop is the wrong-cull signal.
    app.start("idle-1").await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("workspaced_culls_total{reason=\"idle\"}"), "{metrics}");
    assert!(metrics.contains("workspaced_restarts_after_idle_stop_total"), "{metrics}");
    assert!(metrics.contains("workspaced_warnings_total"));
}

#[tokio::test]
async fn a_workspace_that_heartbeats_every_second_is_never_warned_or_stopped() {
    let app = spawn_app_with(fast_culling).await;
    app.start("busy").await;
    for _ in 0..10 {
        let (code, body) = app.heartbeat("busy").await;
        assert_eq!(code, 200, "{body}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (_, ws) = app.get("/api/workspaces/busy").await;
    assert_eq!(ws["status"], "running");
    assert!(!app.event_kinds("busy").await.contains(&"warning".to_owned()));
    assert_eq!(app.containers().len(), 1);
}

#[tokio::test]
async fn a_heartbeat_between_the_decision_and_the_stop_keeps_the_workspace() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = spawn_app_with_clock(
        |s| {
            s.cull.idle_timeout = Duration::from_secs(60);
            s.cull.warning_lead = Duration::from_secs(10);
            s.cull.interval = Duration::from_secs(3600); // only the sweeps this test runs
        },
        clock.clone(),
    )
    .await;
    app.start("race").await;
    let student = StudentId::parse("race").unwrap();
    clock.advance(Duration::from_secs(61));

    // Hold the student's lock, as a concurrent operation would, so the sweep decides "stop" and then waits.
    let guard = app.lifecycle.lock(&student).await;
    let culler = Culler::new(app.lifecycle.clone());
    let sweep = tokio::spawn(async move { culler.sweep().await.unwrap() });
    while app.lifecycle.lock_contenders(&student) < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, _) = app.heartbeat("race").await;
    assert_eq!(code, 200);
    drop(guard);
    let report = sweep.await.unwrap();
    assert_eq!(report.reprieved, std::slice::from_ref(&student), "{report:?}");
    assert!(report.stopped.is_empty());
    let (_, ws) = app.get("/api/workspaces/race").await;
    assert_eq!(ws["status"], "running");
    assert_eq!(app.containers().len(), 1);

    // Without the heartbeat, the next sweep stops it.
    clock.advance(Duration::from_secs(61));
    let report = Culler::new(app.lifecycle.clone()).sweep().await.unwrap();
    assert_eq!(report.stopped, [student]);
    assert!(app.containers().is_empty());
}

#[tokio::test]
async fn the_status_api_shows_the_deadlines_and_overrides_can_switch_culling_off() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = spawn_app_with_clock(|s| s.cull.interval = Duration::from_secs(3600), clock.clone()).await;
    let ws = app.start("exam").await;
    assert_eq!(ws["seconds_left"], 900);
    assert_eq!(time(&ws["stop_at"]) - time(&ws["warn_at"]), chrono::Duration::seconds(120));
    assert_eq!(ws["stop_at_reason"], "idle");

    let (code, ws) = app.put_json("/api/workspaces/exam/policy", r#"{"idle_timeout_seconds": 3600}"#).await;
    assert_eq!(code, 200, "{ws}");
    assert_eq!(ws["seconds_left"], 3600);
    assert_eq!(ws["policy"]["idle_timeout_seconds"], 3600);
    // What the status shows as overrides is a valid body for the PUT: a client can read, edit and send it back.
    assert_eq!(ws["policy"]["overrides"]["idle_timeout_seconds"], 3600, "{ws}");
    let (code, again) = app.put_json("/api/workspaces/exam/policy", &ws["policy"]["overrides"].to_string()).await;
    assert_eq!((code, &again["policy"]["overrides"]), (200, &ws["policy"]["overrides"]));

    let (code, ws) = app.put_json("/api/workspaces/exam/policy", r#"{"cull_enabled": false}"#).await;
    assert_eq!(code, 200);
    assert!(ws["stop_at"].is_null() && ws["seconds_left"].is_null(), "{ws}");
    clock.advance(Duration::from_secs(24 * 3600));
    let report = Culler::new(app.lifecycle.clone()).sweep().await.unwrap();
    assert!(report.stopped.is_empty() && report.warned.is_empty());

    let (code, body) = app.put_json("/api/workspaces/exam/policy", r#"{"idle_timeout_seconds": 0}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_policy")));
    let (code, body) = app.put_json("/api/workspaces/exam/policy", r#"{"idle": 5}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_json")));
    let (code, body) = app.put_json("/api/workspaces/nobody/policy", r#"{}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("workspace_not_found")));
}

#[tokio::test]
async fn max_age_stops_even_an_active_workspace() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = spawn_app_with_clock(
        |s| {
            s.cull.interval = Duration::from_secs(3600);
            s.cull.max_age = Some(Duration::from_secs(3600));
        },
        clock.clone(),
    )
    .await;
    app.start("marathon").await;
    for _ in 0..7 {
        clock.advance(Duration::from_secs(600));
        app.heartbeat("marathon").await;
    }
    let report = Culler::new(app.lifecycle.clone()).sweep().await.unwrap();
    assert_eq!(report.stopped, [StudentId::parse("marathon").unwrap()]);
    let (_, ws) = app.get("/api/workspaces/marathon").await;
    assert_eq!(ws["stop_reason"], "max_age");
}

/// Opens a keep-alive connection to the IDE, makes one request on it and leaves it open, like a browser tab.
async fn open_tab(port: u16) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(n > 0);
    s
}

fn port_of(ws: &serde_json::Value) -> u16 {
    ws["host_port"].as_u64().expect("running workspace has a port") as u16
}

#[tokio::test]
async fn an_open_tab_alone_does_not_keep_a_workspace_alive_by_default() {
    let app = spawn_app_with(|s| {
        fast_culling(s);
        s.workspace.image = CODE_SERVER_IMAGE.to_owned();
    })
    .await;
    let ws = app.start("tab-only").await;
    let _tab = open_tab(port_of(&ws)).await;
    let seen = app.wait_for("tab-only", Duration::from_secs(3), |w| w["ide_connected_at"].is_string()).await;
    assert!(seen["ide_connected_at"].is_string(), "the open tab is noticed: {seen}");
    let done = app.wait_for("tab-only", Duration::from_secs(12), |w| w["status"] == "stopped").await;
    assert_eq!(done["stop_reason"], "idle", "{done}");
}

#[tokio::test]
async fn an_open_tab_keeps_a_workspace_alive_when_configured() {
    let app = spawn_app_with(|s| {
        fast_culling(s);
        s.cull.open_tab_keeps_alive = true;
        s.workspace.image = CODE_SERVER_IMAGE.to_owned();
    })
    .await;
    let ws = app.start("tab-alive").await;
    let _tab = open_tab(port_of(&ws)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let (_, ws) = app.get("/api/workspaces/tab-alive").await;
    assert_eq!(ws["status"], "running", "{ws}");
    assert!(ws["ide_connected_at"].is_string());
}

#[test]
fn manual_clock_moves_only_when_told() {
    let c = ManualClock::new(Utc::now());
    let t0 = c.now();
    c.advance(Duration::from_secs(5));
    assert_eq!(c.now() - t0, chrono::Duration::seconds(5));
}
