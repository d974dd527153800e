//! What a student sees, in real Chromium against real code-server through the proxy, with short timeouts:
//! launch link -> launcher -> IDE; input keeps the workspace alive; the in-IDE warning and "Keep working"; the
//! stopped page and "Start again".

use std::time::Duration;

use fantoccini::Locator;

use crate::browser::Browser;
use crate::helpers::*;

const WORKBENCH: &str = ".monaco-workbench .part.editor";

async fn code_server_app(idle: u64, lead: u64) -> TestApp {
    spawn_app_with(|s| {
        s.workspace.image = CODE_SERVER_IMAGE.to_owned();
        s.workspace.start_timeout = Duration::from_secs(120);
        s.cull.idle_timeout = Duration::from_secs(idle);
        s.cull.warning_lead = Duration::from_secs(lead);
        s.cull.interval = Duration::from_secs(1);
    })
    .await
}

/// Opens a launch link in the browser and waits for the IDE.
async fn open_ide(app: &TestApp, b: &Browser, id: &str, shot: Option<&str>) {
    let url = launch_url(app, id).await;
    b.client.goto(&url).await.unwrap();
    if let Some(name) = shot {
        // The launcher while the workspace starts.
        b.wait_for_text("workspace", Duration::from_secs(10)).await;
        b.screenshot(name).await;
    }
    b.wait_for(WORKBENCH, Duration::from_secs(120)).await;
    let path = b.client.current_url().await.unwrap().path().to_owned();
    assert!(path.starts_with(&format!("/w/{id}/")), "the IDE is served under the prefix: {path}");
}

async fn status(app: &TestApp, id: &str) -> serde_json::Value {
    app.get(&format!("/api/workspaces/{id}")).await.1
}

#[tokio::test]
async fn the_launcher_opens_the_ide_and_typing_keeps_it_alive_past_the_idle_timeout() {
    let b = Browser::start().await;
    let app = code_server_app(20, 8).await;
    open_ide(&app, &b, "kim", Some("launcher")).await;

    // Keep typing (about every 3 s) for longer than the idle timeout: no warning, no stop.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(28) {
        b.client.active_element().await.unwrap().send_keys("a").await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let ws = status(&app, "kim").await;
    assert_eq!(ws["status"], "running", "typing kept it alive: {ws}");
    assert!(ws["seconds_left"].as_i64().unwrap() > 8, "no warning pending: {ws}");
    b.close().await;
}

#[tokio::test]
async fn an_untouched_tab_is_warned_keep_working_saves_it_then_it_stops_and_starts_again() {
    let b = Browser::start().await;
    let app = code_server_app(24, 12).await;
    std::fs::create_dir_all(app.student_dir("lee")).unwrap();
    open_ide(&app, &b, "lee", None).await;
    std::fs::write(app.student_dir("lee").join("notes.txt"), "kept\n").unwrap();

    // No input: the warning appears on top of the IDE, with the seeds' sentence and a live countdown.
    let overlay = b.wait_for("#workspaced-warning", Duration::from_secs(30)).await;
    let text = overlay.text().await.unwrap();
    assert!(text.contains("Workspace will close in") && text.contains("Move your mouse or type"), "{text}");
    let c1 = b.client.find(Locator::Css("#workspaced-countdown")).await.unwrap().text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c2 = b.client.find(Locator::Css("#workspaced-countdown")).await.unwrap().text().await.unwrap();
    assert!(c1.contains(':') && c1 != c2, "the countdown runs: {c1} then {c2}");
    b.screenshot("ide-warning").await;
    let before = status(&app, "lee").await;

    // "Keep working" keeps it: the overlay goes and the stop moves a full idle period away.
    b.client.find(Locator::Css("#workspaced-keep-working")).await.unwrap().click().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while overlay.is_displayed().await.unwrap_or(false) {
        assert!(std::time::Instant::now() < deadline, "the overlay stays after Keep working");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = status(&app, "lee").await;
    assert_eq!(after["status"], "running");
    assert!(after["stop_at"].as_str() > before["stop_at"].as_str(), "stop moved: {before} -> {after}");

    // Then nothing more: warned again, stopped, and the tab shows why instead of a reconnect loop.
    b.wait_for_text("Workspace stopped due to inactivity", Duration::from_secs(60)).await;
    let page = b.text().await;
    assert!(page.contains("files are safe") && page.contains("Stopped at"), "{page}");
    b.screenshot("stopped").await;
    let ws = status(&app, "lee").await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("idle")));

    // "Start again" brings the IDE back, with the files.
    b.client.find(Locator::Css("#start")).await.unwrap().click().await.unwrap();
    b.wait_for(WORKBENCH, Duration::from_secs(120)).await;
    b.wait_for_text("notes.txt", Duration::from_secs(30)).await;
    assert_eq!(std::fs::read_to_string(app.student_dir("lee").join("notes.txt")).unwrap(), "kept\n");
    b.close().await;
}
