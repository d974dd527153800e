//! The hard disk limit and the deletion of a student, through the real service and engine: a workspace over the
//! limit is warned, then stopped with reason `quota`, and cannot start until under it; a deletion needs the admin key,
//! a stopped workspace and the id twice, and leaves nothing but its line in the event log.

use std::time::Duration;

use crate::helpers::*;

async fn events(app: &TestApp, id: &str) -> Vec<(String, Option<String>)> {
    let s = workspaced::domain::StudentId::parse(id).unwrap();
    let all = app.lifecycle.reads().events(Some(&s), 0, 1000).await.unwrap();
    all.into_iter().map(|e| (e.kind.as_str().to_owned(), e.reason.map(|r| r.as_str().to_owned()))).collect()
}

#[tokio::test]
async fn a_workspace_over_the_hard_limit_is_warned_then_stopped_and_cannot_start_until_under_it() {
    let app = spawn_app_with(|s| {
        s.disk_hard_quota = Some(1024 * 1024);
        s.usage_interval = Duration::from_secs(1);
    })
    .await;
    app.start("big-1").await;
    let file = app.student_dir("big-1").join("data.bin");
    std::fs::write(&file, vec![7u8; 3 * 1024 * 1024]).unwrap();
    let ws = app.wait_for("big-1", Duration::from_secs(60), |w| w["status"] == "stopped").await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("quota")), "{ws}");
    let log = events(&app, "big-1").await;
    let warned = log.iter().position(|e| e.0 == "warning" && e.1.as_deref() == Some("quota"));
    let stopped = log.iter().position(|e| e.0 == "stopped" && e.1.as_deref() == Some("quota"));
    assert!(warned.is_some() && warned < stopped, "a warning first: {log:?}");
    assert!(file.exists(), "the files are never touched");
    assert!(app.containers().is_empty());

    let (code, body) = app.post("/api/workspaces/big-1/start").await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("quota_exceeded")), "{body}");
    assert!(app.containers().is_empty(), "no container for a refused start");

    std::fs::remove_file(&file).unwrap();
    let (code, body) = app.post("/api/workspaces/big-1/start").await;
    assert_eq!((code, body["status"].as_str()), (200, Some("running")), "under the limit again: {body}");
    app.stop("big-1").await;
}

#[tokio::test]
async fn a_deletion_needs_the_admin_key_a_stopped_workspace_and_the_id_twice_and_leaves_only_its_log() {
    let app = spawn_app().await;
    app.start("gone-1").await;
    let dir = app.student_dir("gone-1");
    std::fs::write(dir.join("thesis.txt"), "draft").unwrap();
    let delete = |query: &'static str| {
        let client = app.client.clone();
        let url = app.url(&format!("/api/admin/workspaces/gone-1{query}"));
        async move {
            let r = client.delete(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    let (code, body) = delete("?confirm=gone-1").await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("workspace_running")), "{body}");
    app.stop("gone-1").await;
    for (query, want) in
        [("", "confirmation_required"), ("?confirm=gone-2", "confirmation_required"), ("?yes=1", "invalid_query")]
    {
        let (code, body) = delete(query).await;
        assert_eq!((code, body["error"]["code"].as_str()), (400, Some(want)), "{query}: {body}");
    }
    let lms = client_with_key(&app.lms_key).delete(app.url("/api/admin/workspaces/gone-1?confirm=gone-1"));
    assert_eq!(lms.send().await.unwrap().status(), 403, "the LMS key cannot delete");
    assert!(dir.join("thesis.txt").exists(), "nothing removed by a refused deletion");

    let (code, _) = delete("?confirm=gone-1").await;
    assert_eq!(code, 204);
    assert!(!dir.exists(), "the folder is gone");
    assert_eq!(app.get("/api/workspaces/gone-1").await.0, 404, "the record is gone");
    assert_eq!(events(&app, "gone-1").await.last().map(|e| e.0.clone()), Some("deleted".to_owned()));
    assert_eq!(delete("?confirm=gone-1").await.0, 404, "nothing left to delete");

    // The CLI: a folder without a record (never started), refused without --confirm.
    let other = app.student_dir("gone-3");
    std::fs::create_dir_all(&other).unwrap();
    let server = format!("http://{}", app.addr);
    let out = cli(&server, &app.admin_key, &["delete", "gone-3"]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--confirm"));
    assert!(other.exists());
    let out = cli(&server, &app.admin_key, &["delete", "gone-3", "--confirm"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!other.exists());
}
