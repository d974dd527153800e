//! Storage operations through the service: a migration runs under each student's lock, so a start of a student
//! whose folder is being copied waits and finds the copy complete; running workspaces are skipped, not copied
//! half-written; the export route streams an archive.

use std::time::Duration;

use crate::helpers::*;

/// 300 files of 256 KiB, each synced on copy: long enough to start a workspace in the middle of it.
fn big_folder(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..300 {
        std::fs::write(dir.join(format!("f{i:03}.bin")), vec![(i % 251) as u8; 256 * 1024]).unwrap();
    }
}

#[tokio::test]
async fn a_start_during_the_migration_of_that_student_waits_for_the_verified_copy() {
    let app = spawn_app().await;
    let target = tempfile::tempdir().unwrap();
    big_folder(&app.student_dir("mig"));

    let body = serde_json::json!({ "to": target.path() }).to_string();
    let resp = app
        .client
        .post(app.url("/api/admin/migrate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(async move { resp.text().await.unwrap() });

    // Once the copy of `mig` is under way, ask for a start: it must wait for the student's lock.
    let copied = target.path().join("mig");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&copied).map(|d| d.count()).unwrap_or(0) < 5 {
        assert!(std::time::Instant::now() < deadline, "the copy did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let marker = target.path().join(".workspaced-migrate/mig.done");
    assert!(!marker.exists(), "the copy is still running when the start is asked for");
    app.start("mig").await;
    assert!(marker.exists(), "the start got the lock only after the copy was verified");
    let files = std::fs::read_dir(&copied).unwrap().count();
    assert_eq!(files, 300, "the whole folder is there");

    let lines = reader.await.unwrap();
    let lines: Vec<serde_json::Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let student = lines.iter().find(|l| l["type"] == "student").unwrap();
    assert_eq!(student["report"]["outcome"], "migrated");
    assert_eq!(student["report"]["verified_files"], 300);
    assert!(lines.iter().any(|l| l["type"] == "done"));
}

#[tokio::test]
async fn a_running_workspace_is_skipped_and_bad_targets_are_refused() {
    let app = spawn_app().await;
    app.start("runner").await;
    let target = tempfile::tempdir().unwrap();
    let (code, _) = app.post_json("/api/admin/migrate", &serde_json::json!({ "to": target.path() }).to_string()).await;
    assert_eq!(code, 200);
    // The body was read to its end by post_json; the run is over.
    assert!(!target.path().join("runner").exists(), "a running workspace is not copied");

    let (code, body) = app.post_json("/api/admin/migrate", r#"{"to": "relative/path"}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_path")));
    let (code, body) = app.post_json("/api/admin/migrate", r#"{"to": "/nonexistent/efs"}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_target")), "{body}");
    let inside = app.base.join("inner");
    std::fs::create_dir(&inside).unwrap();
    let (code, _) = app.post_json("/api/admin/migrate", &serde_json::json!({ "to": inside }).to_string()).await;
    assert_eq!(code, 400);
    let (code, body) = app.post_json("/api/admin/migrate", "{not json").await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_json")));
    // Like every other body, no content type is required.
    let r = app.client.post(app.url("/api/admin/migrate")).body(r#"{"to": "x"}"#).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_path");
}

#[tokio::test]
async fn the_export_route_streams_a_gzip_archive_of_the_folder() {
    let app = spawn_app().await;
    std::fs::create_dir_all(app.student_dir("exp")).unwrap();
    std::fs::write(app.student_dir("exp").join("a.txt"), "hello").unwrap();
    let resp = app.client.get(app.url("/api/workspaces/exp/export")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let bytes = resp.bytes().await.unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let names: Vec<String> =
        archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.iter().any(|n| n.ends_with("a.txt")), "{names:?}");
    let (code, _) = app.get("/api/workspaces/nobody/export").await;
    assert_eq!(code, 404);
    let (code, _) = app.get("/api/workspaces/..%2Fx/export").await;
    assert_eq!(code, 400);
}
