//! Accessibility: axe-core (npm, installed at test time by `scripts/axe.sh`, never committed) in real Chromium,
//! with the WCAG 2.0/2.1 A and AA rules, on every page workspaced shows: the launcher (starting, failed), the
//! stopped page, the SDK's modal on the example LMS page, the admin dashboard; the in-IDE stopped overlay is checked
//! in `ide_state.rs`. Each asserts zero violations.

use std::time::Duration;

use fantoccini::Locator;

use crate::browser::Browser;
use crate::helpers::*;

/// axe-core's source, installed once per machine into the cache.
fn axe_source() -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/axe.sh");
    let out = std::process::Command::new("bash").arg(script).output().expect("scripts/axe.sh");
    assert!(out.status.success(), "scripts/axe.sh: {}", String::from_utf8_lossy(&out.stderr));
    let path = String::from_utf8(out.stdout).unwrap();
    std::fs::read_to_string(path.trim()).unwrap_or_else(|e| panic!("{}: {e}", path.trim()))
}

/// Runs axe on the page (or only inside `include`) and fails with every violation's rule, help and elements.
pub async fn assert_no_violations(b: &Browser, include: Option<&str>) {
    let loaded = b.client.execute("return typeof window.axe === 'object'", vec![]).await.unwrap();
    if loaded != serde_json::Value::Bool(true) {
        b.client.execute(&format!("{}\n;return true;", axe_source()), vec![]).await.unwrap();
    }
    let run = "const done = arguments[arguments.length - 1]; \
        const context = arguments[0] ? { include: [[arguments[0]]] } : document; \
        axe.run(context, { runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] } }) \
          .then((r) => done({ passes: r.passes.length, violations: r.violations.map((v) => ({ id: v.id, \
             help: v.help, nodes: v.nodes.map((n) => n.target.join(' ') + ': ' + n.failureSummary) })) })) \
          .catch((e) => done({ error: String(e) }));";
    let arg = include.map_or(serde_json::Value::Null, |s| s.into());
    let result = b.client.execute_async(run, vec![arg]).await.unwrap();
    assert!(result.get("error").is_none(), "axe failed: {result}");
    let violations = result["violations"].as_array().unwrap();
    assert!(result["passes"].as_u64().unwrap() > 0, "axe checked nothing: {result}");
    assert!(
        violations.is_empty(),
        "WCAG 2.1 AA violations on {:?} ({include:?}):\n{}",
        b.client.current_url().await.ok().map(|u| u.to_string()),
        serde_json::to_string_pretty(violations).unwrap()
    );
}

#[tokio::test]
async fn the_launcher_while_starting_and_after_a_failed_start_meets_wcag_aa() {
    let b = Browser::start().await;
    // A readiness path the tiny image never answers: the start stays `starting`, then fails at its deadline.
    let app = spawn_app_with(|s| {
        s.workspace.readiness_path = "/never-ready".to_owned();
        s.workspace.start_timeout = Duration::from_secs(15);
    })
    .await;
    let (code, _) = app.post("/api/workspaces/lia/start?wait=false").await;
    assert_eq!(code, 202);
    b.client.goto(&launch_url(&app, "lia").await).await.unwrap();
    b.wait_for_text("Starting takes longer than usual", Duration::from_secs(20)).await;
    assert_no_violations(&b, None).await;
    b.wait_for_text("could not start", Duration::from_secs(30)).await;
    b.wait_for("#start", Duration::from_secs(5)).await;
    assert_no_violations(&b, None).await;
    b.close().await;
}

#[tokio::test]
async fn the_stopped_page_and_the_dashboard_meet_wcag_aa() {
    let b = Browser::start().await;
    let app = spawn_app().await;
    app.start("ada").await;
    app.start("bea").await;
    // The stopped page: why, when, files safe, "Start again" (a launch link starts the workspace, so the session
    // comes first, the stop after).
    b.client.goto(&launch_url(&app, "ada").await).await.unwrap();
    app.wait_for("ada", Duration::from_secs(30), |w| w["status"] == "running").await;
    app.stop("ada").await;
    b.client.goto(&app.url("/w/ada/")).await.unwrap();
    b.wait_for_text("Workspace stopped on request", Duration::from_secs(20)).await;
    b.wait_for("#start", Duration::from_secs(5)).await;
    assert_no_violations(&b, None).await;

    // The dashboard: the key form, then the table with a running and a stopped workspace and the event log.
    b.client.goto(&app.url("/admin")).await.unwrap();
    b.wait_for("#key", Duration::from_secs(10)).await;
    assert_no_violations(&b, None).await;
    b.client.find(Locator::Css("#key")).await.unwrap().send_keys(&app.admin_key).await.unwrap();
    b.client.find(Locator::Css("#login-form button")).await.unwrap().click().await.unwrap();
    b.wait_for("tr[data-student='bea'] button[data-action='stop']", Duration::from_secs(10)).await;
    b.wait_for_text("2 workspaces, 1 running", Duration::from_secs(10)).await;
    b.wait_for_text("bea started", Duration::from_secs(10)).await;
    assert_no_violations(&b, None).await;
    b.close().await;
    app.stop("bea").await;
}

#[tokio::test]
async fn the_sdk_modal_on_the_example_lms_page_meets_wcag_aa() {
    let b = Browser::start().await;
    let lms = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lms_origin = format!("http://{}", lms.local_addr().unwrap());
    let origin = lms_origin.clone();
    let app = spawn_app_with(move |s| {
        s.auth.cors_origins = vec![origin];
        s.cull.idle_timeout = Duration::from_secs(30);
        s.cull.warning_lead = Duration::from_secs(28);
        s.cull.interval = Duration::from_secs(1);
    })
    .await;
    crate::pages::serve_example(lms).await;
    app.start("sol").await;
    let r = client_with_key(&app.lms_key).post(app.url("/api/workspaces/sol/token")).send().await.unwrap();
    let token = r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let page = format!("{lms_origin}/lms-page.html?server=http://{}&student=sol&token={token}", app.addr);
    b.client.goto(&page).await.unwrap();
    b.wait_for(".workspaced-modal", Duration::from_secs(20)).await;
    assert_no_violations(&b, None).await;
    b.close().await;
    app.stop("sol").await;
}
