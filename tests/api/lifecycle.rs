//! Start, stop, status, list and heartbeat with the tiny image.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn two_students_get_two_containers_and_two_private_folders() {
    let app = spawn_app().await;
    let (a, b) = tokio::join!(app.start("alice"), app.start("bob"));
    assert_ne!(a["container_id"], b["container_id"]);
    assert_eq!(app.containers().len(), 2);
    for id in ["alice", "bob"] {
        let meta = std::fs::metadata(app.student_dir(id)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
        assert_eq!(meta.mode() & 0o007, 0, "{id}'s folder is not readable by others");
        assert_eq!(meta.mode() & 0o777, 0o700);
    }
    let c = app.inspect(a["container_id"].as_str().unwrap());
    // Alice's folder is mounted (beside her IDE state; the engine lists mounts in no fixed order).
    let folder = app.student_dir("alice").canonicalize().unwrap();
    let sources: Vec<&str> = c["Mounts"].as_array().unwrap().iter().filter_map(|m| m["Source"].as_str()).collect();
    assert!(sources.contains(&folder.to_str().unwrap()), "{sources:?}");
}

#[tokio::test]
async fn start_is_idempotent_and_stopping_a_stopped_workspace_changes_nothing() {
    let app = spawn_app().await;
    let first = app.start("idem").await;
    let second = app.start("idem").await;
    assert_eq!(first["container_id"], second["container_id"]);
    assert_eq!(first["started_at"], second["started_at"]);
    assert_eq!(app.containers().len(), 1);

    let stopped = app.stop("idem").await;
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["stop_message"], "Workspace stopped on request.");
    let events_before = app.lifecycle.reads().events(None, 0, 1000).await.unwrap().len();
    let again = app.stop("idem").await;
    assert_eq!(again["status"], "stopped");
    assert_eq!(again["stopped_at"], stopped["stopped_at"]);
    assert_eq!(app.lifecycle.reads().events(None, 0, 1000).await.unwrap().len(), events_before);
    assert!(app.containers().is_empty());
}

#[tokio::test]
async fn concurrent_starts_of_one_student_give_one_container() {
    let app = spawn_app().await;
    let (a, b, c) = tokio::join!(app.start("twice"), app.start("twice"), app.start("twice"));
    assert_eq!(a["container_id"], b["container_id"]);
    assert_eq!(b["container_id"], c["container_id"]);
    assert_eq!(app.containers().len(), 1);
}

#[tokio::test]
async fn a_heartbeat_moves_last_activity_of_a_running_workspace() {
    let app = spawn_app().await;
    let ws = app.start("beat").await;
    let before = ws["last_activity"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (code, body) = app.post_json("/api/workspaces/heartbeat", r#"{"student_id":"beat"}"#).await;
    assert_eq!(code, 200, "{body}");
    let after = body["last_activity"].as_str().unwrap();
    assert!(after > before.as_str(), "{after} should be later than {before}");
    let (_, status) = app.get("/api/workspaces/beat").await;
    assert_eq!(status["last_activity"], after);
}

#[tokio::test]
async fn heartbeats_for_unknown_or_stopped_workspaces_are_clear_errors() {
    let app = spawn_app().await;
    let (code, body) = app.post_json("/api/workspaces/heartbeat", r#"{"student_id":"nobody"}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("workspace_not_found")));
    app.start("gone").await;
    app.stop("gone").await;
    let (_, before) = app.get("/api/workspaces/gone").await;
    let (code, body) = app.post_json("/api/workspaces/heartbeat", r#"{"student_id":"gone"}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("workspace_not_running")));
    let (_, after) = app.get("/api/workspaces/gone").await;
    assert_eq!(before, after, "a refused heartbeat changes nothing");
}

#[tokio::test]
async fn list_shows_workspaces_and_filters_by_status() {
    let app = spawn_app().await;
    app.start("l-run").await;
    app.start("l-stop").await;
    app.stop("l-stop").await;
    let (code, all) = app.get("/api/workspaces").await;
    assert_eq!(code, 200);
    assert_eq!(all["workspaces"].as_array().unwrap().len(), 2);
    let (_, running) = app.get("/api/workspaces?status=running").await;
    let ids: Vec<_> = running["workspaces"].as_array().unwrap().iter().map(|w| w["student_id"].clone()).collect();
    assert_eq!(ids, ["l-run"]);
    let (code, bad) = app.get("/api/workspaces?status=sleeping").await;
    assert_eq!((code, bad["error"]["code"].as_str()), (400, Some("invalid_status")));
    let (code, bad) = app.get("/api/workspaces?stauts=running").await;
    assert_eq!((code, bad["error"]["code"].as_str()), (400, Some("invalid_query")), "a misspelt filter is an error");
}

#[tokio::test]
async fn a_start_that_never_gets_ready_times_out_leaves_no_container_and_records_failed() {
    let app = spawn_app_with(|s| {
        s.workspace.readiness_path = "/never-ready".to_owned();
        // Long enough that creating the container fits on a loaded machine, so the wait that runs out is the
        // readiness wait this test is about.
        s.workspace.start_timeout = Duration::from_secs(8);
    })
    .await;
    let (code, body) = app.post("/api/workspaces/slow/start").await;
    assert_eq!((code, body["error"]["code"].as_str()), (504, Some("start_timeout")), "{body}");
    assert!(app.containers().is_empty(), "no container left behind");
    let (_, ws) = app.get("/api/workspaces/slow").await;
    assert_eq!(ws["status"], "failed");
    assert!(ws["error"].as_str().unwrap().contains("/never-ready"), "{ws}");
    let kinds: Vec<String> = app
        .lifecycle
        .reads()
        .events(None, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind.as_str().to_owned())
        .collect();
    assert_eq!(kinds, ["starting", "start_failed"]);
}

#[tokio::test]
async fn another_image_works_by_configuration_alone() {
    // Any IDE works by image, command, port, mount target and readiness path: here busybox httpd on port 9000.
    let app = spawn_app_with(|s| {
        s.workspace.command = ["httpd", "-f", "-p", "9000", "-h", "/www"].map(String::from).to_vec();
        s.workspace.container_port = 9000;
        s.workspace.readiness_path = "/healthz".to_owned();
        s.workspace.mount_target = "/data".to_owned();
    })
    .await;
    let ws = app.start("other-ide").await;
    let c = app.inspect(ws["container_id"].as_str().unwrap());
    assert!(c["HostConfig"]["PortBindings"]["9000/tcp"].is_array());
    // The project folder at the image's mount target (the IDE state is a second mount; the engine lists them in no
    // fixed order).
    let project = c["Mounts"].as_array().unwrap().iter().find(|m| m["Destination"] == "/data");
    assert!(project.is_some(), "no mount at /data: {}", c["Mounts"]);
    docker_exec(ws["container_id"].as_str().unwrap(), "echo hi > /data/x");
    assert!(app.student_dir("other-ide").join("x").exists());
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = spawn_app().await;
    let (code, body) = app.get("/healthz").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));
    let (code, body) = app.get("/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["ready"], true);
}

#[tokio::test]
async fn the_cli_talks_to_a_running_server() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let run = |args: &'static [&'static str]| cli(&server, &app.lms_key, args);
    let out = run(&["start", "cli-1"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cli-1: running"));
    let out = run(&["list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["workspaces"][0]["student_id"], "cli-1");
    let out = run(&["status", "nobody"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("workspace_not_found"));
    let out = run(&["stop", "../x"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid student id"));
    // Without a key the server refuses, and the CLI says why.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
            .args(["status", "cli-1", "--server", &server])
            .env_remove("WORKSPACED_API_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("(unauthorized)"), "{out:?}");
}
