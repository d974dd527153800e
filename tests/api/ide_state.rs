//! The IDE state folder through the API against the real engine: made private and owned at the first start,
//! mounted at `ide_state_path`, kept by a stop, counted in the disk use, in the export, removed only by the erasure;
//! and no folder nor mount when the setting is empty.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use crate::helpers::*;

const TARGET: &str = "/home/coder/.local/share/code-server";

/// The container's bind mounts as (source, destination, read-write).
fn mounts(app: &TestApp) -> Vec<(String, String, bool)> {
    let container = app.containers().into_iter().next().expect("a container");
    let info = app.inspect(&container);
    info["Mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("Source"), s("Destination"), m["RW"].as_bool().unwrap_or(false))
        })
        .collect()
}

#[tokio::test]
async fn the_ide_state_folder_is_mounted_kept_by_a_stop_counted_exported_and_erased_with_the_student() {
    let app = spawn_app_with(|s| s.usage_interval = Duration::from_secs(1)).await;
    app.start("ivy").await;
    let state = app.base.join(".ide-state/ivy");
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1000, 1000, 0o700));
    assert_eq!(std::fs::metadata(app.base.join(".ide-state")).unwrap().mode() & 0o777, 0o700);
    let source = state.canonicalize().unwrap().display().to_string();
    assert!(mounts(&app).contains(&(source, TARGET.to_owned(), true)), "{:?}", mounts(&app));

    // What the IDE writes there lands in the state folder, as the container's user.
    let container = app.containers().into_iter().next().unwrap();
    docker_exec(&container, &format!("mkdir -p {TARGET}/User && echo '{{}}' > {TARGET}/User/settings.json"));
    let settings = state.join("User/settings.json");
    assert_eq!(std::fs::metadata(&settings).unwrap().uid(), 1000);
    assert!(!app.student_dir("ivy").join(".local").exists(), "the project folder stays clean");

    // Counted in the student's disk use.
    std::fs::write(state.join("big.bin"), vec![1u8; 2 * 1024 * 1024]).unwrap();
    let ws = app
        .wait_for("ivy", Duration::from_secs(30), |w| w["disk_usage_bytes"].as_u64().is_some_and(|b| b >= 2 << 20))
        .await;
    assert!(ws["disk_usage_bytes"].as_u64().unwrap() >= 2 << 20, "{ws}");

    // A stop keeps it; the export carries it under its reserved name.
    app.stop("ivy").await;
    assert!(settings.exists());
    let r = app.client.get(app.url("/api/workspaces/ivy/export")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let mut names = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(body.as_ref()));
    for e in tar.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    assert!(names.iter().any(|n| n == ".workspaced-ide-state/User/settings.json"), "{names:?}");

    // The erasure removes it with the folder.
    let r = app.client.delete(app.url("/api/admin/workspaces/ivy?confirm=ivy")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(!state.exists() && !app.student_dir("ivy").exists(), "both folders are gone");
}

#[tokio::test]
async fn an_empty_ide_state_path_makes_no_state_folder_and_no_mount() {
    let app = spawn_app_with(|s| s.workspace.ide_state_path = None).await;
    app.start("noor").await;
    assert!(!app.base.join(".ide-state").exists());
    let m = mounts(&app);
    assert_eq!(m.len(), 1, "only the project folder: {m:?}");
    app.stop("noor").await;
}
