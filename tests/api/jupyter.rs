//! A Jupyter course through the proxy, with real JupyterLab (`build-image.sh jupyter`): in both proxy path modes
//! the server's API, its contents and a terminal over WebSocket work under `/w/{id}/`; in full-path mode the page
//! and its assets do too, and in strip mode they cannot (Jupyter's absolute `/static/...` links leave the prefix).
//! And the IDE's cookie names, kept in the store: they survive a restart and a second replica forwards them.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use workspaced::config::Settings;
use workspaced::domain::{IdeAuth, ProxyPath};

use crate::helpers::*;

/// The image `scripts/build-image.sh jupyter` builds (`all` too).
const JUPYTER_IMAGE: &str = "workspaced/jupyter:4.4.10";

/// The settings a Jupyter course uses: the token in `JUPYTER_TOKEN`, presented by the proxy as a header.
fn jupyter(s: &mut Settings, mode: ProxyPath) {
    let w = &mut s.workspace;
    w.image = JUPYTER_IMAGE.to_owned();
    w.container_port = 8888;
    w.readiness_path = "/api".to_owned();
    w.ide_auth = IdeAuth::parse("header:Authorization:token ").unwrap();
    w.ide_secret_env = Some("JUPYTER_TOKEN".to_owned());
    w.start_timeout = Duration::from_secs(120);
    w.proxy_path = mode;
    // code-server's state path would make Docker create `~/.local/share` as root, where Jupyter writes its runtime.
    w.ide_state_path = None;
    if mode == ProxyPath::Full {
        w.command = [
            "jupyter",
            "lab",
            "--ip=0.0.0.0",
            "--port=8888",
            "--no-browser",
            "--ServerApp.root_dir=/home/coder/project",
            "--ServerApp.base_url={base_url}",
        ]
        .map(str::to_owned)
        .to_vec();
    }
}

/// A browser-like client: follows no redirects, sends the session cookie.
fn session_client(cookie: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::COOKIE, cookie.parse().unwrap());
    reqwest::Client::builder().default_headers(h).redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn running_jupyter(mode: ProxyPath, id: &str) -> (TestApp, String, reqwest::Client) {
    let app = spawn_app_with(|s| jupyter(s, mode)).await;
    let cookie = open_launch(&app, id).await;
    let ws = app.wait_for(id, Duration::from_secs(150), |w| w["status"] != "starting" && w["status"] != "queued").await;
    assert_eq!(ws["status"], "running", "{ws}");
    (app, cookie.clone(), session_client(&cookie))
}

/// The server's API, a file written and read through the contents API (and found on the host), and a terminal
/// that runs a command over its WebSocket: all under `/w/{id}/`.
async fn api_contents_and_terminal_work(app: &TestApp, c: &reqwest::Client, cookie: &str, id: &str) {
    let r = c.get(app.url(&format!("/w/{id}/api"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["version"].is_string(), "Jupyter's API answers: {v}");
    // The token comes from the proxy alone: the server says who is logged in.
    let me: Value = c.get(app.url(&format!("/w/{id}/api/me"))).send().await.unwrap().json().await.unwrap();
    assert!(me["identity"]["username"].is_string(), "{me}");

    let file = app.url(&format!("/w/{id}/api/contents/hello.py"));
    let body = json!({"type": "file", "format": "text", "content": "print('hello from jupyter')\n"});
    let r = c.put(&file).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "saving a file: {} {}", r.status(), r.text().await.unwrap());
    let got: Value = c.get(&file).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["content"], "print('hello from jupyter')\n");
    let on_host = app.student_dir(id).join("hello.py");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), "print('hello from jupyter')\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&on_host).unwrap().uid(), 1000, "written by the container's user");

    let r = c.post(app.url(&format!("/w/{id}/api/terminals"))).send().await.unwrap();
    assert!(r.status().is_success(), "a terminal: {}", r.status());
    let term: Value = r.json().await.unwrap();
    let name = term["name"].as_str().expect("the terminal's name").to_owned();
    let url = format!("ws://{}/w/{id}/terminals/websocket/{name}", app.addr);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    req.headers_mut().insert("origin", format!("http://{}", app.addr).parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.expect("the terminal's WebSocket opens");
    assert_eq!(resp.status(), 101);
    // The shell runs in the container: it computes, and sees the student's folder (the file saved above).
    ws.send(Message::text(json!(["stdin", "echo answer-$((6*7)) $(ls /home/coder/project)\r"]).to_string()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen = String::new();
    while !seen.contains("answer-42 hello.py") {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await;
        let Ok(Some(Ok(msg))) = msg else { panic!("no answer from the terminal; saw {seen:?}") };
        if let Message::Text(t) = msg {
            if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(&t) {
                if a.first() == Some(&json!("stdout")) {
                    seen.push_str(a[1].as_str().unwrap_or(""));
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

/// The scripts a page loads from its own origin (`/.../main.<hash>.js?v=<hash>`).
fn scripts_of(html: &str) -> Vec<String> {
    html.split(['"', '\''])
        .filter(|s| s.starts_with('/') && s.split('?').next().is_some_and(|p| p.ends_with(".js")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn jupyterlab_in_full_path_mode_serves_its_page_assets_api_and_terminals_under_the_prefix() {
    let (app, cookie, c) = running_jupyter(ProxyPath::Full, "jane").await;
    // `{base_url}` and `{student_id}` were filled in from the id: the command the container runs says so.
    let container = app.containers().pop().expect("the workspace's container");
    let args = app.inspect(&container)["Args"].clone();
    assert!(args.as_array().unwrap().iter().any(|a| a == "--ServerApp.base_url=/w/jane/"), "{args}");

    // `/w/jane/` redirects to the lab, under the prefix (the server knows it; nothing is added twice).
    let r = c.get(app.url("/w/jane/")).header("accept", "text/html").send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("/w/jane/lab"), "{loc}");
    let r = c.get(app.url(&loc)).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("\"baseUrl\": \"/w/jane/\""), "JupyterLab was told its base URL");
    let assets = scripts_of(&html);
    assert!(!assets.is_empty(), "no scripts in the page");
    for a in &assets {
        assert!(a.starts_with("/w/jane/static/"), "an asset outside the prefix: {a}");
        let r = c.get(app.url(a)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{a}");
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    api_contents_and_terminal_work(&app, &c, &cookie, "jane").await;
    app.stop("jane").await;
}

#[tokio::test]
async fn in_strip_mode_jupyters_api_and_terminals_work_but_its_page_points_outside_the_prefix() {
    let (app, cookie, c) = running_jupyter(ProxyPath::Strip, "stan").await;
    api_contents_and_terminal_work(&app, &c, &cookie, "stan").await;

    // The page is served, but its assets are absolute paths of the server's own root, which the browser asks of
    // the service, outside the workspace: this is why Jupyter needs `proxy_path = full`.
    let r = c.get(app.url("/w/stan/lab")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let assets = scripts_of(&r.text().await.unwrap());
    let outside: Vec<&String> = assets.iter().filter(|a| a.starts_with("/static/")).collect();
    assert!(!outside.is_empty(), "the page's scripts: {assets:?}");
    let r = c.get(app.url(outside[0])).send().await.unwrap();
    assert_eq!(r.status(), 404, "{} is not the workspace's", outside[0]);
    app.stop("stan").await;
}

/// What the tiny image's `cgi-bin/headers` saw of the cookies.
async fn cookies_seen(c: &reqwest::Client, app: &TestApp, cookie: &str) -> String {
    let r = c.get(app.url("/w/cora/cgi-bin/headers")).header("cookie", cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    text.lines().find(|l| l.starts_with("HTTP_COOKIE=")).unwrap_or("").to_owned()
}

#[tokio::test]
async fn the_cookie_names_an_ide_set_survive_a_restart_and_reach_it_through_a_second_replica() {
    let mut app = spawn_app_with(|s| {
        s.workspace.ide_auth = IdeAuth::parse("header:X-IDE-Token:token ").unwrap();
    })
    .await;
    let session = open_launch(&app, "cora").await;
    app.wait_for("cora", Duration::from_secs(60), |w| w["status"] == "running").await;
    let plain = browser();
    let cookies = format!("{session}; ide_pref=light; sso=university");
    assert_eq!(cookies_seen(&plain, &app, &cookies).await, "", "no cookie before the IDE set one");

    let r = plain.get(app.url("/w/cora/cgi-bin/setcookie")).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.headers()["set-cookie"], "ide_pref=dark");
    assert_eq!(cookies_seen(&plain, &app, &cookies).await, "HTTP_COOKIE=ide_pref=light");

    // The process goes away and comes back: the name is read from the database.
    app.restart().await;
    assert_eq!(cookies_seen(&plain, &app, &cookies).await, "HTTP_COOKIE=ide_pref=light", "after a restart");

    // A second replica on the same database and signing key forwards it too.
    let mut settings = app.settings.clone();
    settings.listen = "127.0.0.1:0".to_owned();
    let store = workspaced::store::Store::connect(&settings.database_url).await.unwrap();
    let runtime = std::sync::Arc::new(
        workspaced::runtime::docker::DockerRuntime::connect_lazy(
            settings.instance.clone(),
            workspaced::app::ENGINE_CALL_TIMEOUT,
        )
        .unwrap(),
    );
    let clock = std::sync::Arc::new(workspaced::clock::SystemClock);
    let replica = workspaced::app::Application::build_on(settings, store, runtime, clock).await.unwrap();
    let addr = replica.addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(replica.run_until(async move {
        let _ = stopped.await;
    }));
    let r = plain.get(format!("http://{addr}/w/cora/cgi-bin/headers")).header("cookie", &cookies).send().await;
    let text = r.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l == "HTTP_COOKIE=ide_pref=light"), "the second replica: {text}");
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    app.stop("cora").await;
}
