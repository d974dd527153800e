//! LTI 1.3 launches end to end, in real Chromium, from a platform this project did not write (`lti1p3platform`
//! from PyPI, served by `tests/lti/platform.py` on `localhost`, another site than the tool on `127.0.0.1`): a learner
//! lands in the IDE; an instructor gets the course page with the roster and audited Open IDE and Stop; deep linking
//! returns a link the platform verifies; every bad launch shows its error page and starts nothing; in the LMS's
//! frame, with third-party cookies blocked, the workspace opens in the frame (`lti_embed`) or in a new window.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use serde_json::{json, Value};
use workspaced::domain::{CourseId, StudentId};

use crate::browser::Browser;
use crate::helpers::*;
use crate::ide::WORKBENCH;
use crate::lti_platform::LtiPlatform;

/// The platform's context.
const CONTEXT: &str = "c-101";
/// Until the IDE shows: a code-server start on a loaded machine.
const IDE: Duration = Duration::from_secs(120);
/// Until a page of the tool or the platform shows.
const PAGE: Duration = Duration::from_secs(20);

/// Chromium with third-party cookies blocked (Settings → Privacy → "Block third-party cookies").
fn third_party_cookies_blocked() -> Value {
    json!({"profile": {"cookie_controls_mode": 1}})
}

/// An app (the code-server image or the tiny one), a platform for it, and the platform registered.
async fn setup(code_server: bool, embed: bool) -> (TestApp, LtiPlatform) {
    let app = spawn_app_with(|s| {
        if code_server {
            s.workspace.image = CODE_SERVER_IMAGE.to_owned();
            s.workspace.start_timeout = Duration::from_secs(120);
        }
        s.auth.lti_embed = embed;
    })
    .await;
    let p = LtiPlatform::start(&app.url("")).await;
    let body = json!({
        "issuer": p.issuer, "client_id": p.client_id, "deployment_ids": ["dep-1", "dep-2"],
        "auth_url": p.auth_url, "token_url": p.token_url, "jwks_url": p.jwks_url,
    });
    let (code, answer) = app.post_json("/api/lti/platforms", &body.to_string()).await;
    assert_eq!(code, 201, "register the platform: {answer}");
    (app, p)
}

/// The workspace of a platform user (`u-ada-7f3` …) in the course.
fn student(p: &LtiPlatform, sub: &str) -> StudentId {
    workspaced::lti::student_id_for(&p.issuer, sub, CONTEXT, None)
}

fn course(p: &LtiPlatform) -> CourseId {
    workspaced::lti::course_id_for(&p.issuer, CONTEXT)
}

/// The ids of every workspace the app knows.
async fn workspace_ids(app: &TestApp) -> Vec<String> {
    let (code, body) = app.get("/api/workspaces").await;
    assert_eq!(code, 200, "{body}");
    let mut ids: Vec<String> =
        body["workspaces"].as_array().unwrap().iter().map(|w| w["student_id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    ids
}

/// The current page's path (of the current frame's top-level window: WebDriver's URL is the window's).
async fn path(b: &Browser) -> String {
    b.client.current_url().await.unwrap().path().to_owned()
}

/// The current document's `location.href` (inside a frame too).
async fn href(b: &Browser) -> String {
    b.client.execute("return location.href", vec![]).await.unwrap().as_str().unwrap().to_owned()
}

/// The platform refused nothing the tool sent (auth requests, token requests, deep linking responses).
async fn platform_refused_nothing(p: &LtiPlatform) {
    let failures = p.failures().await;
    assert!(failures.is_empty(), "the platform refused: {failures:?}\n{}", p.stderr());
}

/// Reads the event stream (`GET /api/events?student_id=…`, server-sent events, admin key) until it holds every
/// one of `wanted`; returns what it read.
async fn events_until(app: &TestApp, id: &StudentId, wanted: &[&str]) -> String {
    let mut resp = app.client.get(app.url(&format!("/api/events?student_id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let deadline = Instant::now() + PAGE;
    while !wanted.iter().all(|w| text.contains(w)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("the event stream ended or stalled ({other:?}) without {wanted:?}; read:\n{text}"),
        }
    }
    text
}

#[tokio::test]
async fn a_learner_launch_lands_in_the_ide_and_a_second_launch_reuses_the_workspace() {
    let b = Browser::start().await;
    let (app, p) = setup(true, false).await;
    let ada = student(&p, "u-ada-7f3");

    // Course link → tool login → platform authorize → launch → hand-off → launch link → launcher → IDE.
    b.client.goto(&p.start_url("ada", "resource", "ok")).await.unwrap();
    b.wait_for(WORKBENCH, IDE).await;
    let first = b.client.current_url().await.unwrap();
    assert_eq!(first.host_str(), Some("127.0.0.1"), "the IDE is the tool's: {first}");
    assert!(first.path().starts_with(&format!("/w/{ada}/")), "ada's workspace: {first}");
    assert_eq!(workspace_ids(&app).await, vec![ada.to_string()]);
    let ws = app.get(&format!("/api/workspaces/{ada}")).await.1;
    assert_eq!((ws["status"].as_str(), ws["course"].as_str()), (Some("running"), Some(course(&p).as_str())), "{ws}");
    let users = app.lifecycle.reads().lti_users(&course(&p)).await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!((users[0].name.as_deref(), users[0].staff), (Some("Ada Lovelace"), false));
    let first_launch = users[0].last_launch;

    // Again from the course: the same workspace, still running (not a new one, not restarted).
    let started_at = ws["started_at"].clone();
    b.client.goto("about:blank").await.unwrap();
    b.client.goto(&p.start_url("ada", "resource", "ok")).await.unwrap();
    b.wait_for(WORKBENCH, IDE).await;
    assert!(path(&b).await.starts_with(&format!("/w/{ada}/")), "{}", path(&b).await);
    assert_eq!(workspace_ids(&app).await, vec![ada.to_string()], "no second workspace");
    let ws = app.get(&format!("/api/workspaces/{ada}")).await.1;
    assert_eq!(ws["status"], "running", "{ws}");
    assert_eq!(ws["started_at"], started_at, "the running workspace was reused, not restarted: {ws}");
    let users = app.lifecycle.reads().lti_users(&course(&p)).await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert!(users[0].last_launch > first_launch, "the second launch is recorded: {users:?}");

    let launches = p.log().await.as_array().unwrap().iter().filter(|e| e["kind"] == "launch").count();
    assert_eq!(launches, 2, "two id_tokens issued");
    platform_refused_nothing(&p).await;
    app.stop(ada.as_str()).await;
    b.close().await;
}

#[tokio::test]
async fn an_instructor_sees_the_learners_and_the_roster_and_open_ide_and_stop_are_audited() {
    let b = Browser::start().await;
    let (app, p) = setup(true, false).await;
    let course = course(&p);
    let ada = student(&p, "u-ada-7f3");

    // Ada launches (her workspace starts); then the browser forgets her session.
    b.client.goto(&p.start_url("ada", "resource", "ok")).await.unwrap();
    let ws = app.wait_for(ada.as_str(), IDE, |w| w["status"] == "running").await;
    assert_eq!(ws["status"], "running", "{ws}");
    b.client.goto(&app.url("/healthz")).await.unwrap();
    b.client.delete_all_cookies().await.unwrap();

    // Ina, the instructor: the hand-off goes to the course page (a staff cookie, then the page without the ticket).
    b.client.goto(&p.start_url("ina", "resource", "ok")).await.unwrap();
    b.wait_for("#students", PAGE).await;
    assert_eq!(path(&b).await, format!("/lti/course/{course}"));
    assert!(!href(&b).await.contains("ticket="), "the ticket is not left in the address: {}", href(&b).await);
    b.wait_for_text("Intro to CS", PAGE).await;
    let rows: Vec<String> = serde_json::from_value(
        b.client
            .execute("return [...document.querySelectorAll('#students tr')].map((r) => r.dataset.student)", vec![])
            .await
            .unwrap(),
    )
    .unwrap();
    let mut expected: Vec<String> =
        ["u-ada-7f3", "u-bea-2c9", "u-cy-1e6"].iter().map(|s| student(&p, s).to_string()).collect();
    let mut seen = rows.clone();
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected, "ada (launched) and bea and cy (the NRPS roster's learners); not ina or tom");
    let counts = b.client.find(Locator::Css("#counts")).await.unwrap().text().await.unwrap();
    assert!(counts.starts_with("3 students, 1 running."), "{counts}");
    assert!(counts.contains("enrolled (from the LMS's roster)"), "the roster was read: {counts}");
    let row = |id: &StudentId| format!("#students tr[data-student='{id}']");
    let ada_row = b.client.find(Locator::Css(&row(&ada))).await.unwrap().text().await.unwrap();
    assert!(ada_row.contains("Ada Lovelace") && ada_row.contains("ada@example.edu"), "{ada_row}");
    assert!(ada_row.contains("running"), "{ada_row}");
    let bea_row = b.client.find(Locator::Css(&row(&student(&p, "u-bea-2c9")))).await.unwrap();
    let bea_text = bea_row.text().await.unwrap();
    assert!(bea_text.contains("Bea Hopper") && bea_text.contains("no workspace yet"), "{bea_text}");
    assert!(bea_row.find(Locator::Css("button")).await.is_err(), "no actions without a workspace: {bea_text}");
    b.screenshot("lti-course").await;

    // Open IDE: ada's IDE in the instructor's browser, recorded.
    b.click(&format!("{} button[aria-label='Open IDE of Ada Lovelace']", row(&ada))).await;
    b.wait_for(WORKBENCH, IDE).await;
    assert!(path(&b).await.starts_with(&format!("/w/{ada}/")), "{}", path(&b).await);

    // Back to the course page (the staff cookie holds), then Stop.
    b.client.goto(&app.url(&format!("/lti/course/{course}"))).await.unwrap();
    b.wait_for(&row(&ada), PAGE).await;
    b.click(&format!("{} button[aria-label='Stop of Ada Lovelace']", row(&ada))).await;
    let ws = app.wait_for(ada.as_str(), IDE, |w| w["status"] == "stopped").await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("admin")), "{ws}");
    // Back on the course page, which shows the stop (the page before the click said "1 running").
    b.wait_for_text("3 students, 0 running.", PAGE).await;
    assert_eq!(path(&b).await, format!("/lti/course/{course}"));
    let ada_row = b.client.find(Locator::Css(&row(&ada))).await.unwrap();
    let buttons: Vec<String> = serde_json::from_value(
        b.client
            .execute(
                "return [...arguments[0].querySelectorAll('button')].map((x) => x.textContent)",
                vec![serde_json::to_value(&ada_row).unwrap()],
            )
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(buttons, vec!["Open IDE"], "a stopped workspace can be opened, not stopped again");
    assert!(ada_row.text().await.unwrap().contains("stopped"));

    // Both actions are in the event log, with the instructor's name.
    let events = events_until(
        &app,
        &ada,
        &["Ina Dijkstra (opened the IDE, staff of", "Ina Dijkstra (stopped the workspace, staff of"],
    )
    .await;
    assert_eq!(events.matches("event: staff_access").count(), 2, "{events}");
    platform_refused_nothing(&p).await;
    b.close().await;
}

#[tokio::test]
async fn deep_linking_returns_an_open_workspace_link_the_platform_verifies() {
    let b = Browser::start().await;
    let (app, p) = setup(false, false).await;
    b.client.goto(&p.start_url("ina", "deeplink", "ok")).await.unwrap();
    let add = b.wait_for("form#add button", PAGE).await;
    b.wait_for_text("Add a workspace link", PAGE).await;
    add.click().await.unwrap();
    b.wait_for_text("Deep linking received: 1 item(s)", PAGE).await;
    let at = b.client.current_url().await.unwrap();
    assert_eq!((at.host_str(), at.path()), (Some("localhost"), "/deep_link_return"), "{at}");

    let received = p.received().await;
    let received = received.as_array().unwrap();
    assert_eq!(received.len(), 1, "{received:?}");
    let claims = &received[0];
    assert_eq!(claims["https://purl.imsglobal.org/spec/lti/claim/message_type"], "LtiDeepLinkingResponse");
    let items = claims["https://purl.imsglobal.org/spec/lti-dl/claim/content_items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["type"], "ltiResourceLink");
    assert_eq!(items[0]["title"], "Open workspace");
    assert_eq!(items[0]["url"], app.url("/lti/launch"));
    // Adding a link starts nothing and records nobody.
    assert!(workspace_ids(&app).await.is_empty());
    assert!(app.lifecycle.reads().lti_users(&course(&p)).await.unwrap().is_empty());
    platform_refused_nothing(&p).await;
    b.close().await;
}

#[tokio::test]
async fn every_bad_launch_shows_its_error_page_and_starts_nothing() {
    let b = Browser::start().await;
    let (app, p) = setup(false, false).await;
    let course = course(&p);
    let ada = student(&p, "u-ada-7f3");
    // (user, message, case, the code, where it is refused)
    let cases = [
        ("ada", "resource", "bad_signature", "lti_bad_signature", "/lti/launch"),
        ("ada", "resource", "unknown_kid", "lti_unknown_key", "/lti/launch"),
        ("ada", "resource", "expired", "lti_expired", "/lti/launch"),
        ("ada", "resource", "wrong_aud", "lti_wrong_audience", "/lti/launch"),
        ("ada", "resource", "unknown_deployment", "lti_unknown_deployment", "/lti/login"),
        ("ada", "resource", "unknown_deployment_token", "lti_unknown_deployment", "/lti/launch"),
        ("ada", "resource", "missing_claims", "lti_missing_claims", "/lti/launch"),
        ("ada", "resource", "wrong_nonce", "lti_wrong_nonce", "/lti/launch"),
        ("ina", "resource", "wrong_nonce", "lti_wrong_nonce", "/lti/launch"),
        ("ada", "deeplink", "ok", "lti_not_staff", "/lti/launch"),
    ];
    for (user, message, case, code, at) in cases {
        b.client.goto(&p.start_url(user, message, case)).await.unwrap();
        let shown = b.wait_for("#code", PAGE).await.text().await.unwrap();
        assert_eq!(shown, code, "{user} {message} {case}: {}", b.text().await);
        assert_eq!(path(&b).await, at, "{case}");
        assert!(b.text().await.contains("This LMS launch did not work"), "{case}: {}", b.text().await);
        assert!(workspace_ids(&app).await.is_empty(), "{case} made a workspace");
        assert!(app.lifecycle.reads().lti_users(&course).await.unwrap().is_empty(), "{case} recorded a launch");
        assert!(app.lifecycle.reads().lti_context(&course).await.unwrap().is_none(), "{case} made the course");
    }
    // The refusal at login never reached the platform's authorization endpoint; the others did, with a valid request.
    platform_refused_nothing(&p).await;

    // Replay: a good launch first (its workspace starts, then is stopped), then its id_token and state again.
    b.client.goto(&p.start_url("ada", "resource", "ok")).await.unwrap();
    let ws = app.wait_for(ada.as_str(), PAGE, |w| w["status"] == "running").await;
    assert_eq!(ws["status"], "running", "{ws}");
    b.client.goto("about:blank").await.unwrap();
    app.stop(ada.as_str()).await;
    let before = app.lifecycle.reads().lti_users(&course).await.unwrap();
    assert_eq!(before.len(), 1);
    b.client.goto(&p.start_url("ada", "resource", "replay")).await.unwrap();
    let shown = b.wait_for("#code", PAGE).await.text().await.unwrap();
    assert_eq!(shown, "lti_replayed", "{}", b.text().await);
    let replayed = p.log().await.as_array().unwrap().iter().any(|e| e["kind"] == "launch" && e["replayed"] == true);
    assert!(replayed, "the platform posted the old pair again");
    assert_eq!(workspace_ids(&app).await, vec![ada.to_string()]);
    let ws = app.get(&format!("/api/workspaces/{ada}")).await.1;
    assert_eq!(ws["status"], "stopped", "the replay started nothing: {ws}");
    let after = app.lifecycle.reads().lti_users(&course).await.unwrap();
    assert_eq!(after[0].last_launch, before[0].last_launch, "the replay recorded nothing");
    b.close().await;
}

#[tokio::test]
async fn embedded_with_third_party_cookies_blocked_the_ide_opens_in_the_lms_frame() {
    let b = Browser::start_with(third_party_cookies_blocked()).await;
    let (app, p) = setup(true, true).await;
    let ada = student(&p, "u-ada-7f3");

    b.client.goto(&p.embedded_start_url("ada", "resource", "ok")).await.unwrap();
    let frame = b.wait_for("iframe#tool", PAGE).await;
    frame.enter_frame().await.unwrap();
    b.wait_for(WORKBENCH, IDE).await;
    let inside = reqwest::Url::parse(&href(&b).await).unwrap();
    assert_eq!(inside.host_str(), Some("127.0.0.1"), "{inside}");
    assert!(inside.path().starts_with(&format!("/w/{ada}/")), "ada's IDE in the frame: {inside}");

    // Third-party cookies are blocked here: in the tool's frame an unpartitioned cookie is dropped, a partitioned
    // one is kept (with the pref off, the same script keeps both).
    let probe = "document.cookie = 'probe3p=1; Path=/; SameSite=None; Secure'; \
        document.cookie = 'probechips=1; Path=/; SameSite=None; Secure; Partitioned'; return document.cookie;";
    let jar = b.client.execute(probe, vec![]).await.unwrap();
    let jar = jar.as_str().unwrap();
    assert!(jar.contains("probechips=1"), "a partitioned cookie is kept in the frame: {jar:?}");
    assert!(!jar.contains("probe3p=1"), "third-party cookies are blocked: {jar:?}");

    // The top-level page is still the LMS's.
    b.client.enter_parent_frame().await.unwrap();
    let top = b.client.current_url().await.unwrap();
    assert_eq!((top.host_str(), top.path()), (Some("localhost"), "/start"), "{top}");
    let ws = app.get(&format!("/api/workspaces/{ada}")).await.1;
    assert_eq!(ws["status"], "running", "{ws}");

    // The session is partitioned under the LMS's site: opened directly, the workspace has no session.
    b.client.goto(&app.url(&format!("/w/{ada}/"))).await.unwrap();
    b.wait_for_text("no workspace session", PAGE).await;
    platform_refused_nothing(&p).await;
    app.stop(ada.as_str()).await;
    b.close().await;
}

#[tokio::test]
async fn by_default_a_framed_launch_opens_the_workspace_in_a_new_window() {
    let b = Browser::start_with(third_party_cookies_blocked()).await;
    let (app, p) = setup(true, false).await;
    let ada = student(&p, "u-ada-7f3");

    b.client.goto(&p.embedded_start_url("ada", "resource", "ok")).await.unwrap();
    let lms = b.client.window().await.unwrap();
    b.wait_for("iframe#tool", PAGE).await.enter_frame().await.unwrap();
    let open = b.wait_for("a#open", PAGE).await;
    let label = open.text().await.unwrap();
    assert!(label.ends_with("in a new window"), "{label}");
    // Nothing starts until the link is opened.
    assert!(!matches!(
        app.get(&format!("/api/workspaces/{ada}")).await.1["status"].as_str(),
        Some("running" | "starting" | "queued")
    ));
    open.click().await.unwrap();

    let deadline = Instant::now() + PAGE;
    let new = loop {
        let windows = b.client.windows().await.unwrap();
        if let Some(w) = windows.into_iter().find(|w| *w != lms) {
            break w;
        }
        assert!(Instant::now() < deadline, "no new window opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The frame says so.
    b.wait_for_text("Opened in a new window", PAGE).await;
    b.client.switch_to_window(new).await.unwrap();
    b.wait_for(WORKBENCH, IDE).await;
    let at = b.client.current_url().await.unwrap();
    assert_eq!(at.host_str(), Some("127.0.0.1"), "{at}");
    assert!(at.path().starts_with(&format!("/w/{ada}/")), "ada's IDE in its own window: {at}");
    assert_eq!(app.get(&format!("/api/workspaces/{ada}")).await.1["status"], "running");
    platform_refused_nothing(&p).await;
    app.stop(ada.as_str()).await;
    b.close().await;
}
