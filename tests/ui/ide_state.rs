//! The IDE state a student sets up survives a stop, and a stop never stands between a student and their work: in
//! real Chromium against real code-server. A colour theme and an extension installed from a `.vsix` (built here,
//! offline) come back after a stop and a start; a cull with a terminal open and an editor unsaved shows the stopped
//! overlay over the IDE with no "Leave site?" dialog, and "Start again" brings the unsaved text back.

use std::path::Path;
use std::time::Duration;

use fantoccini::Locator;

use crate::browser::Browser;
use crate::helpers::TestApp;
use crate::ide::{code_server_app, open_ide, status, ACTIVE_IS, READY_JS, WORKBENCH};

const T: Duration = Duration::from_secs(60);

/// Runs a command from the palette (F1, its title, then its row), as a student would.
async fn run_command(b: &Browser, title: &str) {
    b.type_keys("\u{E031}").await; // F1
    b.wait_js("command palette", ACTIVE_IS, vec![".quick-input-widget input".into()], T).await;
    b.type_keys(title).await;
    pick_row(b, title).await;
}

/// Picks the row of the open quick pick whose label starts with `label`: Enter when it is the focused one, else a
/// click on it.
async fn pick_row(b: &Browser, label: &str) {
    if !pick_row_within(b, label, T).await {
        b.screenshot("pick-failure").await;
        panic!("no row {label:?} in the quick pick");
    }
}

/// [`pick_row`], giving up (`false`) after `within`.
async fn pick_row_within(b: &Browser, label: &str, within: Duration) -> bool {
    let rows = "return [...document.querySelectorAll('.quick-input-list .monaco-list-row')] \
        .map((r) => (r.classList.contains('focused') ? '*' : '') + (r.getAttribute('aria-label') || ''));";
    let deadline = std::time::Instant::now() + within;
    loop {
        let seen: Vec<String> = serde_json::from_value(b.client.execute(rows, vec![]).await.unwrap()).unwrap();
        if seen.iter().any(|r| r.starts_with(&format!("*{label}"))) {
            b.type_keys("\u{E007}").await; // Enter
            return true;
        }
        if seen.iter().any(|r| r.starts_with(label)) {
            let css = format!(".quick-input-list .monaco-list-row[aria-label^=\"{label}\"]");
            b.click(&css).await;
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const IS_LIGHT: &str = "const w = document.querySelector('.monaco-workbench'); \
    return !!w && w.classList.contains('vs') && !w.classList.contains('vs-dark');";
const IS_DARK: &str = "const w = document.querySelector('.monaco-workbench'); \
    return !!w && w.classList.contains('vs-dark');";

/// The workbench is usable (explorer and status bar restored).
async fn ready(b: &Browser) {
    b.wait_js("workbench ready", READY_JS, vec![], Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// After "Start again": the workspace runs, the page was loaded anew (the old one, with its overlay, is gone), and
/// the new workbench is usable.
async fn started_and_reloaded(app: &TestApp, b: &Browser, id: &str) {
    app.wait_for(id, Duration::from_secs(120), |w| w["status"] == "running").await;
    let fresh = "return !document.getElementById('workspaced-stopped') && !!window.__workspaced \
        && !window.__workspaced.stopped;";
    b.wait_js("a fresh page after the start", fresh, vec![], Duration::from_secs(30)).await;
    b.wait_for(WORKBENCH, Duration::from_secs(120)).await;
    ready(b).await;
    assert_eq!(status(app, id).await["status"], "running");
}

/// Whether a browser dialog (alert, confirm, "Leave site?") is open now.
async fn dialog_open(b: &Browser) -> Option<String> {
    b.client.get_alert_text().await.ok()
}

/// Dispatches a cancelable `beforeunload` at the window, as the browser does before leaving: `true` when some
/// listener asked to stay (what makes the browser show "Leave site?").
const WOULD_ASK: &str = "const e = new Event('beforeunload', { cancelable: true }); window.dispatchEvent(e); \
    return e.defaultPrevented || (typeof e.returnValue === 'string' && e.returnValue !== '') || e.returnValue === false;";

/// A file whose text in the editor, lines joined with `\n`, contains `arguments[0]`.
const SOME_EDITOR_HAS: &str = "return [...document.querySelectorAll('.monaco-editor .view-lines')].some((v) => \
    [...v.querySelectorAll('.view-line')].map((l) => l.textContent.replace(/\\u00a0/g, ' ')).join('\\n') \
    .includes(arguments[0]));";

#[tokio::test]
async fn a_colour_theme_and_an_extension_from_a_vsix_survive_a_stop_and_a_start() {
    let b = Browser::start().await;
    let app = code_server_app(3600, 60).await;
    let id = "theo";
    std::fs::create_dir_all(app.student_dir(id)).unwrap();
    std::fs::write(app.student_dir(id).join("hello.vsix"), vsix()).unwrap();
    open_ide(&app, &b, id, None).await;
    ready(&b).await;
    let state = app.base.join(".ide-state").join(id);
    let meta = std::fs::metadata(&state).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1000, 1000, 0o700), "state folder owner and mode");
    assert!(!app.student_dir(id).join(".local").exists(), "the state stays out of the project folder");

    // Another theme, picked from the palette: the light one when the default is dark, a dark one otherwise. The
    // picker lists the themes known when it opens, which is only once the extensions are registered (a while
    // after the workbench shows on a busy machine): opened again until it lists them.
    let was_light = b.client.execute(IS_LIGHT, vec![]).await.unwrap() == serde_json::Value::Bool(true);
    let want = if was_light { "Dark Modern" } else { "Light Modern" };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        run_command(&b, "Preferences: Color Theme").await;
        b.wait_js("the theme list", ACTIVE_IS, vec![".quick-input-widget input".into()], T).await;
        b.type_keys(want).await;
        if pick_row_within(&b, want, Duration::from_secs(3)).await {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the theme picker never listed {want}");
        b.type_keys("\u{E00C}").await; // Escape
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let changed = if was_light { IS_DARK } else { IS_LIGHT };
    b.wait_js("the other theme applied", changed, vec![], T).await;
    let settings = state.join("User/settings.json");
    wait_file_contains(&settings, "workbench.colorTheme").await;

    // The extension, from the .vsix in the project folder, through "Install from VSIX..." and its file box.
    run_command(&b, "Extensions: Install from VSIX...").await;
    b.wait_js("the file box", ACTIVE_IS, vec![".quick-input-widget input".into()], T).await;
    // The box opens with a folder filled in: once it is there, select it all and type the path over it.
    let filled = "const i = document.querySelector('.quick-input-widget input'); return !!i && i.value.endsWith('/');";
    b.wait_js("the file box filled in", filled, vec![], T).await;
    let path = "/home/coder/project/hello.vsix";
    let typed =
        "const i = document.querySelector('.quick-input-widget input'); return !!i && i.value === arguments[0];";
    for _ in 0..3 {
        b.type_keys("\u{E009}a\u{E009}").await; // Ctrl+A
        b.type_keys(path).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The box completes names as they are typed; on a loaded machine keys can land in between.
        if b.client.execute(typed, vec![path.into()]).await.unwrap() == serde_json::Value::Bool(true) {
            break;
        }
    }
    b.wait_js("the path in the file box", typed, vec![path.into()], Duration::from_secs(5)).await;
    b.type_keys("\u{E007}").await;
    let installed = state.join("extensions");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !entries_of(&installed).iter().any(|e| e.starts_with("workspaced-test.wsd-hello-0.0.1")) {
        if std::time::Instant::now() > deadline {
            b.screenshot("vsix-failure").await;
            panic!("the extension was not installed into {}: {:?}", installed.display(), entries_of(&installed));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Stop (the overlay shows over the IDE), start again from it: both are still there.
    app.stop(id).await;
    b.wait_for("#workspaced-stopped", T).await;
    b.wait_for_text("Workspace stopped on request.", T).await;
    assert_eq!(dialog_open(&b).await, None);
    b.click("#workspaced-start").await;
    started_and_reloaded(&app, &b, id).await;
    b.wait_js("the theme kept after the restart", changed, vec![], T).await;
    // Like the themes, an extension's commands are listed once the extensions are registered: asked again until.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        b.type_keys("\u{E031}").await; // F1
        b.wait_js("command palette", ACTIVE_IS, vec![".quick-input-widget input".into()], T).await;
        b.type_keys("Workspaced Hello: Say hello").await;
        if pick_row_within(&b, "Workspaced Hello: Say hello", Duration::from_secs(3)).await {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the extension's command never appeared after the restart");
        b.type_keys("\u{E00C}").await; // Escape
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    b.wait_for_text("Hello from a vsix", T).await;
    assert_eq!(dialog_open(&b).await, None);
    b.close().await;
    app.stop(id).await;
}

#[tokio::test]
async fn a_cull_with_a_terminal_and_an_unsaved_editor_shows_the_overlay_without_a_dialog_and_keeps_the_text() {
    let b = Browser::start().await;
    let app = code_server_app(30, 10).await;
    let id = "uma";
    std::fs::create_dir_all(app.student_dir(id)).unwrap();
    std::fs::write(app.student_dir(id).join("notes.txt"), "first line\n").unwrap();
    open_ide(&app, &b, id, None).await;
    ready(&b).await;

    // A terminal, as a student opens one.
    run_command(&b, "Terminal: Create New Terminal").await;
    b.wait_for(".terminal-wrapper .xterm", T).await;
    // notes.txt opened and changed, not saved.
    b.type_keys("\u{E009}p\u{E009}").await; // Ctrl+P
    b.wait_js("quick open", ACTIVE_IS, vec![".quick-input-widget input".into()], T).await;
    b.type_keys("notes.txt").await;
    let row = "const r = document.querySelector('.quick-input-list .monaco-list-row.focused'); \
        return !!r && (r.getAttribute('aria-label') || '').includes('notes.txt');";
    b.wait_js("notes.txt in the list", row, vec![], T).await;
    b.type_keys("\u{E007}").await;
    let in_editor = "const a = document.activeElement; return !!a && !!a.closest('.monaco-editor') \
        && !!document.querySelector('.tab.active[aria-label^=\"notes.txt\"]');";
    b.wait_js("notes.txt in the editor", in_editor, vec![], T).await;
    let typed = "unsaved words from before the cull";
    b.type_keys(&format!("{typed}\u{E007}")).await;
    b.wait_js("the typed text", SOME_EDITOR_HAS, vec![typed.into()], T).await;
    b.wait_for(".tab.active.dirty", T).await;
    assert_eq!(std::fs::read_to_string(app.student_dir(id).join("notes.txt")).unwrap(), "first line\n", "unsaved");
    // What a browser would do when the tab leaves now: the IDE asks ("Leave site?").
    let asks = b.client.execute(WOULD_ASK, vec![]).await.unwrap();
    assert_eq!(asks, serde_json::Value::Bool(true), "the IDE asks before leaving (terminal open, editor dirty)");

    // No more input: culled for inactivity; the overlay shows over the IDE, the tab stays, no dialog.
    b.wait_for("#workspaced-stopped", Duration::from_secs(90)).await;
    b.wait_for_text("Workspace stopped due to inactivity", T).await;
    let ws = status(&app, id).await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("idle")), "{ws}");
    assert_eq!(dialog_open(&b).await, None, "no browser dialog");
    let url = b.client.current_url().await.unwrap();
    assert_eq!(url.path(), format!("/w/{id}/"), "the tab did not navigate");
    assert!(b.client.find(Locator::Css(".monaco-workbench")).await.is_ok(), "the IDE is still underneath");
    let asks = b.client.execute(WOULD_ASK, vec![]).await.unwrap();
    assert_eq!(asks, serde_json::Value::Bool(false), "once stopped, leaving asks nothing");
    b.wait_js("the overlay has the focus", ACTIVE_IS, vec!["#workspaced-start".into()], Duration::from_secs(5)).await;
    crate::a11y::assert_no_violations(&b, Some("#workspaced-stopped")).await;
    b.screenshot("stopped").await;

    // "Start again": started, reloaded without a dialog, and the unsaved text is back (still unsaved).
    b.click("#workspaced-start").await;
    started_and_reloaded(&app, &b, id).await;
    assert_eq!(dialog_open(&b).await, None, "no dialog on the reload");
    let back = b.client.execute(SOME_EDITOR_HAS, vec![typed.into()]).await.unwrap();
    if back != serde_json::Value::Bool(true) {
        // The editor may be restored closed: open it again.
        b.type_keys("\u{E009}p\u{E009}").await;
        b.wait_js("quick open", ACTIVE_IS, vec![".quick-input-widget input".into()], T).await;
        b.type_keys("notes.txt").await;
        b.wait_js("notes.txt in the list", row, vec![], T).await;
        b.type_keys("\u{E007}").await;
    }
    b.wait_js("the unsaved text after the start", SOME_EDITOR_HAS, vec![typed.into()], T).await;
    // From code-server's backup in the IDE state, not from a save: the file on disk is as it was.
    assert_eq!(std::fs::read_to_string(app.student_dir(id).join("notes.txt")).unwrap(), "first line\n");
    let backups = app.base.join(".ide-state").join(id).join("User/Backups");
    assert!(backups.is_dir(), "code-server keeps its backups in the state folder");
    b.close().await;
    app.stop(id).await;
}

async fn wait_file_contains(path: &Path, text: &str) {
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(path).is_ok_and(|t| t.contains(text)) {
        assert!(std::time::Instant::now() < deadline, "{} never held {text:?}", path.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn entries_of(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// A minimal extension in the `.vsix` layout (a zip: manifest, content types, `extension/`), made here so the test
/// needs no marketplace and no network. Its command shows a message, so the test sees it loaded after a restart.
fn vsix() -> Vec<u8> {
    let package = r#"{"name": "wsd-hello", "displayName": "Workspaced Hello", "publisher": "workspaced-test",
        "version": "0.0.1", "engines": {"vscode": "^1.60.0"}, "main": "./extension.js",
        "activationEvents": ["onCommand:wsdHello.say"],
        "contributes": {"commands": [{"command": "wsdHello.say", "title": "Workspaced Hello: Say hello"}]}}"#;
    let script = "const vscode = require('vscode');\n\
        exports.activate = (context) => context.subscriptions.push(vscode.commands.registerCommand('wsdHello.say', \
        () => vscode.window.showInformationMessage('Hello from a vsix')));\n\
        exports.deactivate = () => {};\n";
    let manifest = r#"<?xml version="1.0" encoding="utf-8"?>
<PackageManifest Version="2.0.0" xmlns="http://schemas.microsoft.com/developer/vsx-schema/2011">
  <Metadata>
    <Identity Language="en-US" Id="wsd-hello" Version="0.0.1" Publisher="workspaced-test" />
    <DisplayName>Workspaced Hello</DisplayName>
    <Description xml:space="preserve">A test extension.</Description>
    <Categories>Other</Categories>
    <Properties><Property Id="Microsoft.VisualStudio.Code.Engine" Value="^1.60.0" /></Properties>
  </Metadata>
  <Installation><InstallationTarget Id="Microsoft.VisualStudio.Code"/></Installation>
  <Dependencies/>
  <Assets><Asset Type="Microsoft.VisualStudio.Code.Manifest" Path="extension/package.json" Addressable="true" /></Assets>
</PackageManifest>
"#;
    let types = r#"<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension=".json" ContentType="application/json"/><Default Extension=".js" ContentType="application/javascript"/><Default Extension=".vsixmanifest" ContentType="text/xml"/></Types>
"#;
    stored_zip(&[
        ("extension.vsixmanifest", manifest.as_bytes()),
        ("[Content_Types].xml", types.as_bytes()),
        ("extension/package.json", package.as_bytes()),
        ("extension/extension.js", script.as_bytes()),
    ])
}

/// A zip with its files stored (not compressed): local headers, the central directory, its end record.
fn stored_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in files {
        let (crc, size, offset) = (crc32(data), data.len() as u32, out.len() as u32);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // stored
            v.extend_from_slice(&0u32.to_le_bytes()); // time, date
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        common(&mut central);
        central.extend_from_slice(&[0; 6]); // comment length, disk, internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let (start, len) = (out.len() as u32, central.len() as u32);
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn the_vsix_is_a_zip_that_unzip_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("x.vsix");
    std::fs::write(&file, vsix()).unwrap();
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the CRC-32 check value");
    // Python's zipfile checks the CRCs and the directory (python3 is on every machine the tests run on).
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; \
                print(' '.join(z.namelist()))",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("extension/package.json"));
}
