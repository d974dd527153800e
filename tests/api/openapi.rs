//! The OpenAPI document as served, and a student id that is also the name of a static route.

use crate::helpers::*;

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_one_and_needs_no_key() {
    let app = spawn_app().await;
    let r = reqwest::get(app.url("/api/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let served = r.text().await.unwrap();
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert!(
        served == checked_in,
        "docs/openapi.json is not what the server serves; run UPDATE_DOCS=1 cargo test --lib openapi"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

/// `POST /api/workspaces/heartbeat` is a route of its own; a student called `heartbeat` still has every route of
/// `/api/workspaces/{id}` (GET once answered 405).
#[tokio::test]
async fn a_student_called_heartbeat_has_every_workspace_route() {
    let app = spawn_app().await;
    let (code, body) = app.get("/api/workspaces/heartbeat").await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("workspace_not_found")), "{body}");

    let started = app.start("heartbeat").await;
    assert_eq!(started["student_id"], "heartbeat");
    let (code, body) = app.get("/api/workspaces/heartbeat").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("running")), "{body}");
    let r = app.client.head(app.url("/api/workspaces/heartbeat")).send().await.unwrap();
    assert_eq!(r.status(), 200, "HEAD follows GET");
    let (code, body) = app.put_json("/api/workspaces/heartbeat/policy", r#"{"idle_timeout_seconds": 3600}"#).await;
    assert_eq!((code, body["policy"]["idle_timeout_seconds"].as_u64()), (200, Some(3600)), "{body}");
    let (code, body) = app.post("/api/workspaces/heartbeat/launch").await;
    assert_eq!((code, body["student_id"].as_str()), (200, Some("heartbeat")), "{body}");
    let (code, body) = app.post("/api/workspaces/heartbeat/token").await;
    assert_eq!((code, body["student_id"].as_str()), (200, Some("heartbeat")), "{body}");
    let r = app.client.get(app.url("/api/workspaces/heartbeat/export")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/gzip");

    // The heartbeat route itself is unchanged, also for this student.
    let (code, body) = app.heartbeat("heartbeat").await;
    assert_eq!((code, body["student_id"].as_str()), (200, Some("heartbeat")), "{body}");

    // The shadowed GET keeps its access: a key is needed, and a student's session is not one.
    let r = reqwest::get(app.url("/api/workspaces/heartbeat")).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = reqwest::Client::new()
        .get(app.url("/api/workspaces/heartbeat"))
        .header("cookie", open_launch(&app, "heartbeat").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a session reads no workspace through the API");
    // A method no route has is still 405.
    let r = app.client.delete(app.url("/api/workspaces/heartbeat")).send().await.unwrap();
    assert_eq!(r.status(), 405);

    let stopped = app.stop("heartbeat").await;
    assert_eq!(stopped["status"], "stopped");
    let (code, body) = app.heartbeat("heartbeat").await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("workspace_not_running")), "{body}");
    assert!(app.containers().is_empty(), "the stop removed the container");
}
