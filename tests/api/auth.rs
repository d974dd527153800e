//! API keys, roles, launch links, sessions and isolation between students, through the real service.

use std::time::Duration;

use serde_json::Value;

use workspaced::http::{route_table, Access, Route};

use crate::helpers::*;

/// A request for `route` that passes validation only after authentication: `{id}` becomes `NOPE`, an invalid student
/// id, so a request that gets past authentication answers 400 and nothing is changed.
fn sample(route: &Route) -> (String, String) {
    let path = route.path.replace("{id}", "NOPE");
    let body = if route.method == "GET" { String::new() } else { "{}".to_owned() };
    (path, body)
}

async fn call(app: &TestApp, key: Option<&str>, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut r = reqwest::Client::new()
        .request(method.parse().unwrap(), app.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    let resp = r.send().await.unwrap();
    let code = resp.status().as_u16();
    // The event stream never ends: read a body only from answers that are not a stream.
    let body = if code == 200 && path.starts_with("/api/events") {
        Value::Null
    } else {
        resp.json().await.unwrap_or(Value::Null)
    };
    (code, body)
}

#[tokio::test]
async fn every_api_route_needs_a_key_of_the_right_role() {
    let app = spawn_app().await;
    let routes = route_table();
    assert!(routes.iter().filter(|r| r.access == Access::Admin).count() >= 5, "the table is the router's");
    for route in &routes {
        let (path, body) = sample(route);
        let (method, path, body, needed) = (route.method.as_str(), path.as_str(), body.as_str(), route.access);
        if needed == Access::Open {
            let (code, _) = call(&app, None, method, path, body).await;
            assert!(code != 401 && code != 403, "{method} {path} is open, yet answered {code}");
            continue;
        }
        let (code, b) = call(&app, None, method, path, body).await;
        assert_eq!((code, b["error"]["code"].as_str()), (401, Some("unauthorized")), "{method} {path} without a key");
        let (code, b) = call(&app, Some("wsd_00000000_nonsense"), method, path, body).await;
        assert_eq!((code, b["error"]["code"].as_str()), (401, Some("invalid_api_key")), "{method} {path} bad key");
        let (code, b) = call(&app, Some(&app.lms_key), method, path, body).await;
        if needed == Access::Admin {
            assert_eq!((code, b["error"]["code"].as_str()), (403, Some("forbidden")), "{method} {path} with lms");
        } else {
            assert!(code != 401 && code != 403, "{method} {path} refused an lms key: {code} {b}");
        }
        let (code, b) = call(&app, Some(&app.admin_key), method, path, body).await;
        assert!(code != 401 && code != 403, "{method} {path} refused an admin key: {code} {b}");
    }
    // A malformed Authorization header is a 401 too, in the same shape.
    let r = reqwest::Client::new().get(app.url("/api/workspaces")).header("authorization", "Basic abc").send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    // Health endpoints stay open for load balancers.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(reqwest::get(app.url(path)).await.unwrap().status(), 200, "{path}");
    }
}

fn cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(args)
        .env("DATABASE_URL", &app.settings.database_url)
        .env_remove("WORKSPACED_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_key_made_by_the_cli_works_is_listed_without_its_secret_and_stops_working_when_revoked() {
    let app = spawn_app().await;
    let out = cli(&app, &["key", "create", "--role", "lms", "--label", "moodle"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1, "the key alone on stdout");
    let key = key.trim().to_owned();
    let (code, _) = call(&app, Some(&key), "GET", "/api/workspaces", "").await;
    assert_eq!(code, 200);

    let out = cli(&app, &["key", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = key.split('_').nth(1).unwrap();
    let entry = listed.as_array().unwrap().iter().find(|k| k["id"] == id).expect("listed").clone();
    assert_eq!((entry["role"].as_str(), entry["label"].as_str()), (Some("lms"), Some("moodle")));
    let secret = key.rsplit('_').next().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(secret), "list shows no secret");
    // Only a hash is stored: the secret appears nowhere in the database files.
    let db = app.settings.database_url.trim_start_matches("sqlite://").to_owned();
    for file in [db.clone(), format!("{db}-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(!String::from_utf8_lossy(&bytes).contains(secret), "{file} holds the key");
        }
    }

    let out = cli(&app, &["key", "revoke", id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(&app, &["key", "revoke", id]);
    assert!(!out.status.success(), "revoking twice is an error");
    // Revocation takes effect within the cache time (2 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = call(&app, Some(&key), "GET", "/api/workspaces", "").await;
        if code == 401 {
            assert_eq!(body["error"]["code"], "invalid_api_key");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "revoked key still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = cli(&app, &["key", "create", "--role", "root"]);
    assert!(!out.status.success(), "unknown role refused");
}

#[tokio::test]
async fn a_launch_link_works_once_and_sets_a_session_for_that_student_only() {
    let app = spawn_app_with(|s| s.auth.launch_ttl = Duration::from_secs(2)).await;
    let url = launch_url(&app, "alice").await;
    assert!(url.starts_with(&format!("http://{}/w/alice/_workspaced/launch?token=", app.addr)), "{url}");

    // A tampered link (one character of the signature changed) and a link replayed on another workspace: 401.
    let mut tampered = url.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    assert_eq!(browser().get(&tampered).send().await.unwrap().status(), 401);
    let elsewhere = url.replace("/w/alice/", "/w/bob/");
    assert_eq!(browser().get(&elsewhere).send().await.unwrap().status(), 401);

    let r = browser().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["workspaced_session=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    assert!(!set.contains("Secure"), "plain http: no Secure flag ({set})");
    // Used once: the same link again is refused.
    let again = browser().get(&url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(again.status(), 401);
    assert!(again.text().await.unwrap().contains("launch link"), "a page that says what to do");

    // Expired: the TTL here is 2 s.
    let late = launch_url(&app, "alice").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = browser().get(&late).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");

    // The link started the workspace (a launch means "open my workspace"); wait for it.
    app.wait_for("alice", Duration::from_secs(30), |w| w["status"] == "running").await;
    let _ = app.stop("alice").await;
}

#[tokio::test]
async fn a_session_reaches_its_own_workspace_and_no_other_whatever_the_spelling() {
    let app = spawn_app().await;
    let _ = app.start("bob").await;
    let alice = open_launch(&app, "alice").await;
    app.wait_for("alice", Duration::from_secs(30), |w| w["status"] == "running").await;
    let cookie = format!("Cookie: {alice}\r\n");

    // Alice's own IDE (the tiny image serves /healthz).
    let (code, _) = raw_request(app.addr, "GET", "/w/alice/healthz", &cookie).await;
    assert_eq!(code, 200);
    let r = browser().get(app.url("/w/alice/healthz")).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok\n");
    // `/w/alice` gets its slash.
    let r = browser().get(app.url("/w/alice")).header("cookie", &alice).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (308, "/w/alice/"));

    for path in [
        "/w/bob/",
        "/w/bob/healthz",
        "/w/Bob/healthz",
        "/w/BOB/",
        "/w/%62ob/healthz",
        "/w/alice%2F..%2Fbob/healthz",
        "/w/alice/../bob/healthz",
        "/w/alice/%2e%2e/bob/healthz",
        "/w/alice/%2E%2E/bob/healthz",
        "//w//bob/healthz",
        "/w//bob/healthz",
        "/w/./bob/healthz",
        "/w/alice/./../bob/",
        "/w/bob/_workspaced/status",
    ] {
        let (code, body) = raw_request(app.addr, "GET", path, &cookie).await;
        assert_eq!(code, 403, "alice's session on {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{path}");
    }
    // Alice's session on Bob's heartbeat: refused; on her own: counted.
    let hb = |id: &str| {
        let body = format!(r#"{{"student_id":"{id}"}}"#);
        browser()
            .post(app.url("/api/workspaces/heartbeat"))
            .header("cookie", &alice)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(hb("bob").await.unwrap().status(), 403);
    assert_eq!(hb("alice").await.unwrap().status(), 200);
    // A cookie heartbeat from another site's page is refused.
    let r = browser()
        .post(app.url("/api/workspaces/heartbeat"))
        .header("cookie", &alice)
        .header("origin", "https://evil.example")
        .header("content-type", "application/json")
        .body(r#"{"student_id":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A student token (for the SDK) reads status and sends heartbeats, and opens nothing else.
    let r = client_with_key(&app.lms_key).post(app.url("/api/workspaces/alice/token")).send().await.unwrap();
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let with_token = |path: &str| browser().get(app.url(path)).bearer_auth(&token).send();
    assert_eq!(with_token("/w/alice/_workspaced/status").await.unwrap().status(), 200);
    assert_eq!(with_token("/w/alice/healthz").await.unwrap().status(), 401, "the token does not open the IDE");
    assert_eq!(with_token("/w/bob/_workspaced/status").await.unwrap().status(), 403);
    let r = browser().post(app.url("/w/alice/_workspaced/start")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 401, "nor starts");
    // A session is not a key: the LMS API stays closed to it.
    let r = browser().get(app.url("/api/workspaces/alice")).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // No session at all: 401 (JSON for scripts, a page for browsers).
    let (code, body) = raw_request(app.addr, "GET", "/w/bob/healthz", "").await;
    assert_eq!((code, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let forged = format!("Cookie: workspaced_session=bob.99999999999999.{}\r\n", "0".repeat(64));
    let (code, _) = raw_request(app.addr, "GET", "/w/bob/healthz", &forged).await;
    assert_eq!(code, 401, "a forged session is no session");
}

#[tokio::test]
async fn without_a_session_a_browser_is_sent_to_the_configured_login_page() {
    let app = spawn_app_with(|s| s.auth.login_url = Some("https://lms.example/login".into())).await;
    let r = browser().get(app.url("/w/alice/")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "https://lms.example/login");
    // A script still gets the JSON 401.
    let r = browser().get(app.url("/w/alice/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn host_mode_serves_each_workspace_on_its_own_subdomain() {
    let app = spawn_app_with(|s| s.proxy.host_suffix = Some("ws.test".into())).await;
    let url = launch_url(&app, "alice").await;
    let path = url.strip_prefix("http://alice.ws.test").expect("a link on the student's host");
    assert!(path.starts_with("/_workspaced/launch?token="), "{url}");
    // Requests reach this service on 127.0.0.1 with the subdomain in Host, as they would through DNS.
    let get = |host: &str, path: &str, cookie: Option<&str>| {
        let mut r = browser().get(app.url(path)).header("host", host);
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.send()
    };
    let r = get("alice.ws.test", path, None).await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (303, "/"));
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    app.wait_for("alice", Duration::from_secs(30), |w| w["status"] == "running").await;
    let r = get("alice.ws.test", "/healthz", Some(&cookie)).await.unwrap();
    assert_eq!((r.status().as_u16(), r.text().await.unwrap().as_str()), (200, "ok\n"), "the IDE at the root");
    assert_eq!(get("bob.ws.test", "/healthz", Some(&cookie)).await.unwrap().status(), 403);
    assert_eq!(get("alice.ws.test", "/healthz", None).await.unwrap().status(), 401);
    // The service's own host still serves the API.
    assert_eq!(app.get("/api/workspaces/alice").await.0, 200);
    app.stop("alice").await;
}
