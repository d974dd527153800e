//! The proxy in front of the IDEs: stopped answers, timeouts, streamed bodies and limits (tiny image), and real
//! code-server through it (page, assets, WebSocket, activity).

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// A browser-like client: follows no redirects, sends the session cookie.
fn session_client(cookie: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::COOKIE, cookie.parse().unwrap());
    reqwest::Client::builder().default_headers(h).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn running_with_session(app: &TestApp, id: &str) -> reqwest::Client {
    let cookie = open_launch(app, id).await;
    let ws = app.wait_for(id, Duration::from_secs(120), |w| w["status"] == "running").await;
    assert_eq!(ws["status"], "running", "{ws}");
    assert_eq!(ws["url"], format!("http://{}/w/{id}/", app.addr), "the API gives the proxied URL");
    session_client(&cookie)
}

#[tokio::test]
async fn a_stopped_workspace_answers_with_its_state_and_a_way_to_start_not_a_502() {
    let app = spawn_app().await;
    let c = running_with_session(&app, "sam").await;
    assert_eq!(c.get(app.url("/w/sam/healthz")).send().await.unwrap().status(), 200);
    app.stop("sam").await;

    // A script gets JSON that says why and how to start.
    let r = c.get(app.url("/w/sam/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "workspace_not_running");
    assert!(v["error"]["message"].as_str().unwrap().contains("files are kept"), "{v}");
    assert_eq!(
        (v["workspace"]["status"].as_str(), v["workspace"]["stop_reason"].as_str()),
        (Some("stopped"), Some("user"))
    );
    assert_eq!(v["start"]["path"], "_workspaced/start");
    // A browser gets the launcher page, which follows the state and offers to start.
    let r = c.get(app.url("/w/sam/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 503);
    let page = r.text().await.unwrap();
    assert!(page.contains("_workspaced/") && page.contains("Start again") && page.contains("files are safe"));
    let (code, s) = {
        let r = c.get(app.url("/w/sam/_workspaced/status")).send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!((code, s["status"].as_str()), (200, Some("stopped")), "{s}");

    // The student starts it again from the page, with the session alone.
    let r = c.post(app.url("/w/sam/_workspaced/start")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // A cross-site form cannot: the Origin is checked.
    let r = c.post(app.url("/w/sam/_workspaced/start")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    app.wait_for("sam", Duration::from_secs(30), |w| w["status"] == "running").await;
    assert_eq!(c.get(app.url("/w/sam/healthz")).send().await.unwrap().status(), 200);
    // The container is reached only through its new port: the old route was forgotten.
    assert_eq!(c.get(app.url("/w/sam/healthz")).send().await.unwrap().text().await.unwrap(), "ok\n");
}

#[tokio::test]
async fn a_slow_ide_hits_the_proxy_timeout_cleanly() {
    let app = spawn_app_with(|s| s.proxy.timeout = Duration::from_secs(1)).await;
    let c = running_with_session(&app, "tia").await;
    // The IDE answers after 5 s: a 504 `ide_timeout` can only come from the proxy's 1 s timeout.
    let r = c.get(app.url("/w/tia/cgi-bin/slow?5")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "ide_timeout");
    // A fast answer within the timeout passes.
    let r = c.get(app.url("/w/tia/cgi-bin/slow?0")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (200, "slow\n"));
}

#[tokio::test]
async fn request_bodies_stream_through_and_the_size_limit_holds() {
    let app = spawn_app_with(|s| s.proxy.max_body = 8 << 20).await;
    let c = running_with_session(&app, "uma").await;
    let body: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let digest = format!("{:x}", md5_of(&body));
    let r = c.post(app.url("/w/uma/cgi-bin/md5")).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().starts_with(&digest), "the IDE got the body intact");
    let r = c.post(app.url("/w/uma/cgi-bin/md5")).body(vec![0u8; 9 << 20]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "body_too_large");
}

/// MD5 by shelling out (the tiny image's CGI prints `md5sum` output).
fn md5_of(data: &[u8]) -> Md5Hex {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    Md5Hex(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_owned())
}

struct Md5Hex(String);
impl std::fmt::LowerHex for Md5Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[tokio::test]
async fn page_loads_count_as_activity_and_background_requests_do_not() {
    let app = spawn_app().await;
    let c = running_with_session(&app, "val").await;
    let last = |ws: &Value| ws["last_activity"].as_str().unwrap().to_owned();
    let (_, before) = app.get("/api/workspaces/val").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // An asset or API call the page makes by itself.
    let r = c.get(app.url("/w/val/healthz")).header("sec-fetch-mode", "cors").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, after_bg) = app.get("/api/workspaces/val").await;
    assert_eq!(last(&before), last(&after_bg), "background request counted");
    // A page load by the person.
    let r = c.get(app.url("/w/val/healthz")).header("sec-fetch-mode", "navigate").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (_, after_nav) = app.get("/api/workspaces/val").await;
    assert!(last(&after_nav) > last(&before), "navigation not counted: {after_nav}");
}

#[tokio::test]
async fn real_code_server_loads_and_talks_websocket_through_the_proxy() {
    let app = spawn_app_with(|s| {
        s.workspace.image = CODE_SERVER_IMAGE.to_owned();
        s.workspace.start_timeout = Duration::from_secs(120);
    })
    .await;
    let cookie = open_launch(&app, "cody").await;
    app.wait_for("cody", Duration::from_secs(120), |w| w["status"] == "running").await;
    let c = session_client(&cookie);

    // code-server redirects `/` to its folder, relatively: the redirect stays under the prefix.
    let r = c.get(app.url("/w/cody/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("./") && loc.contains("folder="), "{loc}");
    let page_url = reqwest::Url::parse(&app.url("/w/cody/")).unwrap().join(&loc).unwrap();
    assert!(page_url.path().starts_with("/w/cody/"));
    let r = c.get(page_url.clone()).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("workbench"), "the workbench page");

    // Its static assets load through the prefix.
    let assets: Vec<String> = html
        .split(['"', '\''])
        .filter(|s| (s.ends_with(".js") || s.ends_with(".css")) && !s.starts_with("http") && !s.starts_with("data:"))
        .map(str::to_owned)
        .collect();
    assert!(!assets.is_empty(), "no assets found in the page");
    for a in assets.iter().take(6) {
        let url = page_url.join(a).unwrap();
        assert!(url.path().starts_with("/w/cody/"), "asset outside the prefix: {url}");
        let r = c.get(url.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        assert!(!r.bytes().await.unwrap().is_empty());
    }

    // The IDE's WebSocket: upgrade through the proxy, then a real exchange with code-server.
    let exchanged = crate::ide_protocol::handshake(app.addr, "/w/cody/", &cookie).await;
    assert!(exchanged.contains("sign"), "code-server answered the auth message: {exchanged}");
    // Another student's session cannot open it.
    let forbidden = crate::ide_protocol::try_upgrade(app.addr, "/w/cody/", "workspaced_session=x").await;
    assert_eq!(forbidden, 401);
}
