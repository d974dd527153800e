//! The staff and LMS sides in real Chromium: the admin dashboard, and the SDK on an example LMS page served from
//! another origin.

use std::time::Duration;

use fantoccini::Locator;

use crate::browser::Browser;
use crate::helpers::*;

#[tokio::test]
async fn the_admin_dashboard_lists_workspaces_live_and_its_stop_button_works() {
    let b = Browser::start().await;
    let app = spawn_app().await;
    assert_eq!(app.put_json("/api/courses/cs101", r#"{"title":"Intro to CS"}"#).await.0, 201);
    assert_eq!(app.post_json("/api/workspaces/ada/start", r#"{"course":"cs101"}"#).await.0, 200);
    app.start("bea").await;
    b.client.goto(&app.url("/admin")).await.unwrap();
    // Without a key it asks for one; a wrong key is refused.
    b.wait_for("#key", Duration::from_secs(10)).await.send_keys(&app.lms_key).await.unwrap();
    b.client.find(Locator::Css("#login-form button")).await.unwrap().click().await.unwrap();
    b.wait_for_text("not an admin key", Duration::from_secs(10)).await;
    b.client.find(Locator::Css("#key")).await.unwrap().clear().await.unwrap();
    b.client.find(Locator::Css("#key")).await.unwrap().send_keys(&app.admin_key).await.unwrap();
    b.client.find(Locator::Css("#login-form button")).await.unwrap().click().await.unwrap();

    b.wait_for("tr[data-student='ada'] button[data-action='stop']", Duration::from_secs(10)).await;
    b.wait_for_text("2 workspaces, 2 running", Duration::from_secs(10)).await;
    // Engine stats arrive (CPU and memory columns), and the event log streams.
    b.wait_for_text(" / 1.0 GiB", Duration::from_secs(20)).await;
    b.wait_for_text("ada started", Duration::from_secs(10)).await;
    // The LTI values an LMS administrator pastes into the LMS.
    b.wait_for_text(&format!("{}/lti/jwks", app.url("")), Duration::from_secs(10)).await;
    // The courses, with their counts; "Show workspaces" filters the list to one course.
    b.wait_for_text("Intro to CS", Duration::from_secs(10)).await;
    b.screenshot("dashboard").await;
    b.click("#courses button[data-action='filter']").await;
    b.wait_for_text("1 workspaces, 1 running in cs101", Duration::from_secs(10)).await;
    let shown = b
        .client
        .execute("return [...document.querySelectorAll('#rows tr')].map((r) => r.dataset.student)", vec![])
        .await
        .unwrap();
    assert_eq!(shown, serde_json::json!(["ada"]), "only cs101's workspaces are listed");
    // The select shows the choice, and "All courses" lists everyone again.
    b.client
        .execute(
            "const s = document.getElementById('course-filter'); s.value = ''; s.dispatchEvent(new Event('change'))",
            vec![],
        )
        .await
        .unwrap();
    b.wait_for_text("2 workspaces, 2 running", Duration::from_secs(10)).await;

    b.click("tr[data-student='ada'] button[data-action='stop']").await;
    let ws = app.wait_for("ada", Duration::from_secs(20), |w| w["status"] == "stopped").await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("admin")));
    // The page follows by itself (the event stream triggers a refresh).
    b.wait_for_text("stopped (admin)", Duration::from_secs(10)).await;
    b.wait_for_text("ada stopped", Duration::from_secs(10)).await;
    assert_eq!(app.get("/api/workspaces/bea").await.1["status"], "running", "only ada was stopped");

    // Phone width: rows become cards, nothing scrolls sideways.
    b.client.set_window_size(390, 800).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fits = b
        .client
        .execute(
            "return [getComputedStyle(document.querySelector('thead')).display, \
             document.documentElement.scrollWidth <= window.innerWidth + 1]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fits, serde_json::json!(["none", true]), "phone layout");
    b.screenshot("dashboard-phone").await;
    b.close().await;
    app.stop("bea").await;
}

/// Serves `examples/lms-page.html` on its own port: another origin than workspaced, as an LMS would be.
pub async fn serve_example(listener: tokio::net::TcpListener) {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/lms-page.html")).unwrap();
    let app = axum::Router::new()
        .route("/lms-page.html", axum::routing::get(move || async move { axum::response::Html(page) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
}

#[tokio::test]
async fn the_sdk_on_an_lms_page_shows_its_modal_on_warning_keeps_the_workspace_and_reports_the_stop() {
    let b = Browser::start().await;
    let lms = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lms_origin = format!("http://{}", lms.local_addr().unwrap());
    let origin = lms_origin.clone();
    let app = spawn_app_with(move |s| {
        s.auth.cors_origins = vec![origin];
        s.cull.idle_timeout = Duration::from_secs(12);
        s.cull.warning_lead = Duration::from_secs(8);
        s.cull.interval = Duration::from_secs(1);
    })
    .await;
    serve_example(lms).await;
    app.start("sid").await;
    // The LMS backend asks for a student token with its key; the page gets only that token.
    let r = client_with_key(&app.lms_key).post(app.url("/api/workspaces/sid/token")).send().await.unwrap();
    let token = r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wss_"));
    // The token opens no LMS route.
    let r = reqwest::Client::new().get(app.url("/api/workspaces/sid")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let page = format!("{lms_origin}/lms-page.html?server=http://{}&student=sid&token={token}", app.addr);
    b.client.goto(&page).await.unwrap();
    b.wait_for_text("Workspace: running", Duration::from_secs(10)).await;
    let modal = b.wait_for(".workspaced-modal", Duration::from_secs(20)).await;
    let text = modal.text().await.unwrap();
    assert!(text.contains("Workspace will close in") && text.contains("Keep working"), "{text}");
    b.screenshot("sdk-warning").await;
    let before = app.get("/api/workspaces/sid").await.1;
    b.client.find(Locator::Css(".workspaced-modal-button")).await.unwrap().click().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while modal.is_displayed().await.unwrap_or(false) {
        assert!(std::time::Instant::now() < deadline, "modal stays after Keep working");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = app.get("/api/workspaces/sid").await.1;
    assert!(after["stop_at"].as_str() > before["stop_at"].as_str(), "the heartbeat moved the stop");

    // The page hears about the stop.
    app.stop("sid").await;
    b.wait_for_text("Workspace stopped on request. Your files are safe", Duration::from_secs(15)).await;
    b.close().await;
}
