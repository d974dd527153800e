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
