//! Bad input gets a clear error with a stable code and changes nothing: not on disk, not in Docker, not in the store.

use std::process::Command;

use crate::helpers::*;

/// Path segments (already percent-encoded) that must be refused as student ids.
const BAD_SEGMENTS: &[&str] = &[
    "..%2Fetc",   // ../etc
    "a%2Fb",      // a/b
    "%2E%2E",     // ..
    "%2e%2e",     // ..
    "..",         // .. unencoded
    "%2E",        // .
    "%D0%B0lice", // Cyrillic a
    "%EF%BD%81",  // fullwidth a
    "a%00b",      // NUL
    "Alice",      // uppercase
    "a%20b",      // space
    "a%5Cb",      // backslash
];

async fn assert_nothing_created(app: &TestApp) {
    assert!(entries(&app.base).is_empty(), "nothing on disk: {:?}", entries(&app.base));
    assert!(app.containers().is_empty(), "nothing in Docker");
    let (_, list) = app.get("/api/workspaces").await;
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 0, "nothing in the store");
}

#[tokio::test]
async fn invalid_student_ids_are_400_and_create_nothing() {
    let app = spawn_app().await;
    let long = "a".repeat(300);
    let mut segments: Vec<String> = BAD_SEGMENTS.iter().map(|s| s.to_string()).collect();
    segments.push(long);
    for seg in &segments {
        for (method, suffix) in [("POST", "/start"), ("POST", "/stop"), ("GET", "")] {
            let url = format!("/api/workspaces/{seg}{suffix}");
            let (code, body) = raw_request(app.addr, method, &url, &app.auth_header()).await;
            assert_eq!(code, 400, "{method} {url}: {body}");
            assert_eq!(body["error"]["code"], "invalid_student_id", "{method} {url}");
            assert!(body["error"]["message"].as_str().unwrap().contains("student id"));
        }
    }
    // An empty id in the path.
    let (code, body) = raw_request(app.addr, "POST", "/api/workspaces//start", &app.auth_header()).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_student_id")), "{body}");
    // And in heartbeat bodies.
    for id in ["", "../x", "a/b", "Ä", "a\u{0000}b", &"b".repeat(300)] {
        let body = serde_json::json!({ "student_id": id }).to_string();
        let (code, resp) = app.post_json("/api/workspaces/heartbeat", &body).await;
        assert_eq!((code, resp["error"]["code"].as_str()), (400, Some("invalid_student_id")), "{id:?}: {resp}");
    }
    assert_nothing_created(&app).await;
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    for body in ["", "{", "[]", r#"{"student":"a"}"#, r#"{"student_id": 5}"#, "null"] {
        let (code, resp) = app.post_json("/api/workspaces/heartbeat", body).await;
        assert_eq!((code, resp["error"]["code"].as_str()), (400, Some("invalid_json")), "{body:?}: {resp}");
    }
    let (code, resp) = app.get("/api/nope").await;
    assert_eq!((code, resp["error"]["code"].as_str()), (404, Some("not_found")));
    assert_nothing_created(&app).await;
}

#[tokio::test]
async fn unknown_students_are_404() {
    let app = spawn_app().await;
    let (code, body) = app.get("/api/workspaces/nobody").await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("workspace_not_found")));
    let (code, body) = app.post("/api/workspaces/nobody/stop").await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("workspace_not_found")));
    assert_nothing_created(&app).await;
}

#[tokio::test]
async fn a_missing_base_path_is_a_clear_error_and_no_container() {
    let app = spawn_app_with(|s| s.base_path = s.base_path.join("does-not-exist")).await;
    let (code, body) = app.post("/api/workspaces/alice/start").await;
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("storage_unavailable")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("does not exist"));
    assert!(app.containers().is_empty());
    assert!(!app.base.exists(), "a missing base path is not created behind the operator's back");
    let (code, _) = app.get("/api/workspaces/alice").await;
    assert_eq!(code, 404, "no record either");
}

#[tokio::test]
async fn a_read_only_base_path_is_a_clear_error_and_no_container() {
    let app = spawn_app().await;
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"]).arg(&app.base).status().unwrap();
    assert!(ok.success(), "mounting a read-only tmpfs needs root");
    let (code, body) = app.post("/api/workspaces/alice/start").await;
    let _ = Command::new("umount").arg(&app.base).status();
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("storage_unavailable")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("not writable"));
    assert!(app.containers().is_empty());
    let (code, _) = app.get("/api/workspaces/alice").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn policy_durations_above_one_year_are_400_invalid_policy_and_change_nothing() {
    let app = spawn_app().await;
    app.start("long-policy").await;
    let path = "/api/workspaces/long-policy/policy";
    let (code, set) = app.put_json(path, r#"{"idle_timeout_seconds": 3600, "max_age_seconds": 7200}"#).await;
    assert_eq!(code, 200, "{set}");
    let (_, before) = app.get("/api/workspaces/long-policy").await;
    // The first two overflowed the deadline arithmetic once (a panic, and a wrap to "stop now").
    for body in [
        r#"{"idle_timeout_seconds": 10000000000000}"#,
        r#"{"max_age_seconds": 9223372036854776}"#,
        r#"{"idle_timeout_seconds": 31536001}"#,
        r#"{"max_age_seconds": 18446744073709551615, "cull_enabled": false}"#,
        r#"{"idle_timeout_seconds": 60, "max_age_seconds": 31536001}"#,
    ] {
        let (code, err) = app.put_json(path, body).await;
        assert_eq!((code, err["error"]["code"].as_str()), (400, Some("invalid_policy")), "{body}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("at most 31536000"), "the message names the maximum: {message}");
        let (code, after) = app.get("/api/workspaces/long-policy").await;
        assert_eq!(code, 200);
        assert_eq!(after["policy"], before["policy"], "{body} changed the stored policy");
        assert_eq!((&after["status"], &after["stop_at"]), (&before["status"], &before["stop_at"]), "{body}");
    }

    let (code, ws) = app.put_json(path, r#"{"idle_timeout_seconds": 31536000, "max_age_seconds": 31536000}"#).await;
    assert_eq!(code, 200, "exactly one year is allowed: {ws}");
    let (_, read) = app.get("/api/workspaces/long-policy").await;
    assert_eq!(read["policy"]["overrides"]["idle_timeout_seconds"], 31_536_000, "{read}");
    assert_eq!(read["policy"]["overrides"]["max_age_seconds"], 31_536_000, "{read}");
    let left = read["seconds_left"].as_i64().expect("running with culling on has a deadline");
    assert!(left > 31_000_000 && left <= 31_536_000, "a year away, not wrapped into the past: {left}");
    assert_eq!(read["status"], "running");
}

/// Polls `/readyz` until `done` holds for its body or `within` passes; returns the last status and body.
async fn wait_ready(
    app: &TestApp,
    within: std::time::Duration,
    done: impl Fn(u16, &serde_json::Value) -> bool,
) -> (u16, serde_json::Value) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let (code, body) = app.get("/readyz").await;
        if done(code, &body) || std::time::Instant::now() > deadline {
            return (code, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn loop_failures(app: &TestApp, name: &str) -> u64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("workspaced_loop_failures_total{{loop=\"{name}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap_or(0))
}

#[tokio::test]
async fn a_base_path_removed_while_serving_fails_the_usage_loop_and_readyz_reports_it_dead_until_it_is_back() {
    let app = spawn_app_with(|s| s.usage_interval = std::time::Duration::from_secs(1)).await;
    let wait = std::time::Duration::from_secs(60);
    let (code, ready) =
        wait_ready(&app, wait, |_, b| b["loops"]["usage"] == "ok" && b["loops"]["culler"] == "ok").await;
    assert_eq!((code, &ready["loops"]["usage"]), (200, &serde_json::json!("ok")), "{ready}");
    let failures_before = loop_failures(&app, "usage").await;

    let moved = app.base.with_extension("away");
    std::fs::rename(&app.base, &moved).unwrap();
    let dead = |b: &serde_json::Value| b["loops"]["usage"].as_str().is_some_and(|u| u.starts_with("dead"));
    let (code, ready) = wait_ready(&app, wait, |code, b| code == 503 && dead(b)).await;
    let usage = ready["loops"]["usage"].as_str().unwrap_or_default().to_owned();
    std::fs::rename(&moved, &app.base).unwrap();
    assert_eq!((code, ready["ready"].as_bool()), (503, Some(false)), "{ready}");
    assert_eq!(ready["storage"], "unavailable", "the base path itself is reported: {ready}");
    assert!(usage.starts_with("dead: no finished pass since "), "{ready}");
    assert_eq!(ready["loops"]["culler"], "ok", "only the failing loop is reported: {ready}");
    assert_eq!((ready["database"].as_str(), ready["docker"].as_str()), (Some("ok"), Some("ok")), "{ready}");
    assert!(loop_failures(&app, "usage").await > failures_before, "each failed pass is counted in /metrics");

    let (code, ready) = wait_ready(&app, wait, |code, _| code == 200).await;
    assert_eq!((code, &ready["loops"]["usage"]), (200, &serde_json::json!("ok")), "the loop went on: {ready}");
}
