//! What a student sees, in real Chromium against real code-server through the proxy, with short timeouts:
//! launch link -> launcher -> IDE; input keeps the workspace alive; the in-IDE warning and "Keep working"; the
//! stopped overlay and "Start again".

use std::time::Duration;

use fantoccini::Locator;

use crate::browser::Browser;
use crate::helpers::*;

pub const WORKBENCH: &str = ".monaco-workbench .part.editor";

/// The workbench is usable: folder opened in the explorer, status bar restored (see docs/testing notes).
pub const READY_JS: &str = "const q = (s) => document.querySelector(s); \
    return !!(q('.monaco-workbench') && q('.explorer-folders-view .monaco-list[role=tree]') && q('#status\\\\.problems'));";
pub const ACTIVE_IS: &str = "const a = document.activeElement; return !!a && a.matches(arguments[0]);";
pub const EDITOR_FOCUSED: &str = "const a = document.activeElement; if (!a) return false; \
    if (!a.closest('.monaco-editor') || !a.closest('.editor-group-container.active')) return false; \
    const tab = document.querySelector('.editor-group-container.active .tab.active'); \
    return !!tab && tab.getAttribute('aria-label').startsWith(arguments[0]);";
pub const EDITOR_TEXT_IS: &str =
    "const ed = document.activeElement && document.activeElement.closest('.monaco-editor'); \
    if (!ed) return false; \
    const t = [...ed.querySelectorAll('.view-lines .view-line')] \
      .sort((x, y) => parseFloat(x.style.top) - parseFloat(y.style.top)) \
      .map((l) => l.textContent.replace(/\\u00a0/g, ' ')).join('\\n'); \
    return t === arguments[0];";

/// In the IDE: command palette, "File: New File...", a name, then text, then Ctrl+S; as a student would.
async fn new_file_by_keyboard(b: &Browser, name: &str, text: &str) {
    let t = Duration::from_secs(30);
    b.wait_js("workbench ready", READY_JS, vec![], Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.type_keys("\u{E031}").await; // F1
    b.wait_js("command palette", ACTIVE_IS, vec![".quick-input-widget input".into()], t).await;
    b.type_keys("File: New File...").await;
    let row = "const r = document.querySelector('.quick-input-list .monaco-list-row.focused'); \
        return !!r && (r.getAttribute('aria-label') || '').startsWith('File: New File...');";
    b.wait_js("the command in the list", row, vec![], t).await;
    b.type_keys("\u{E007}").await; // Enter
    b.wait_js("the explorer's name box", ACTIVE_IS, vec![".explorer-folders-view input".into()], t).await;
    b.type_keys(&format!("{name}\u{E007}")).await;
    b.wait_js("the new file's editor", EDITOR_FOCUSED, vec![name.into()], t).await;
    b.type_keys(text).await;
    b.wait_js("the typed text", EDITOR_TEXT_IS, vec![text.into()], t).await;
    b.type_keys("\u{E009}s\u{E009}").await; // Ctrl+S (the second Control releases it)
}

pub async fn code_server_app(idle: u64, lead: u64) -> TestApp {
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
pub async fn open_ide(app: &TestApp, b: &Browser, id: &str, shot: Option<&str>) {
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

pub async fn status(app: &TestApp, id: &str) -> serde_json::Value {
    app.get(&format!("/api/workspaces/{id}")).await.1
}

#[tokio::test]
async fn the_launcher_opens_the_ide_and_typing_keeps_it_alive_past_the_idle_timeout() {
    let b = Browser::start().await;
    let app = code_server_app(20, 8).await;
    open_ide(&app, &b, "kim", Some("launcher")).await;

    // Typing into a new file in the editor saves it to the student's folder on the host.
    let text = "print hello from the browser";
    new_file_by_keyboard(&b, "hello.txt", text).await;
    let file = app.student_dir("kim").join("hello.txt");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::fs::read_to_string(&file).ok().as_deref() != Some(text) {
        assert!(std::time::Instant::now() < deadline, "not saved: {:?}", std::fs::read_to_string(&file));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 1000, "written by the student's uid");

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

    // Then nothing more: warned again, stopped, and the tab shows why over the IDE instead of a reconnect loop.
    b.wait_for("#workspaced-stopped", Duration::from_secs(60)).await;
    b.wait_for_text("Workspace stopped due to inactivity", Duration::from_secs(10)).await;
    let page = b.text().await;
    assert!(page.contains("files are safe") && page.contains("Stopped at"), "{page}");
    b.screenshot("stopped").await;
    let ws = status(&app, "lee").await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("idle")));

    // "Start again" brings the IDE back, with the files.
    b.click("#workspaced-start").await;
    app.wait_for("lee", Duration::from_secs(120), |w| w["status"] == "running").await;
    // A fresh page: the old one, with its overlay, stays in the DOM until the reload.
    let fresh = "return !document.getElementById('workspaced-stopped') && !!window.__workspaced \
        && !window.__workspaced.stopped;";
    b.wait_js("a fresh page after the start", fresh, vec![], Duration::from_secs(30)).await;
    b.wait_for(WORKBENCH, Duration::from_secs(120)).await;
    b.wait_for_text("notes.txt", Duration::from_secs(30)).await;
    assert_eq!(std::fs::read_to_string(app.student_dir("lee").join("notes.txt")).unwrap(), "kept\n");
    b.close().await;
}
