//! The security issue's properties, each against the real binary (`workspaced serve` in a child process, real
//! SQLite file, real Docker engine for the starts a launch link makes): credentials have one purpose each, logs
//! cannot be forged from a request, key and database files are owner-only, and sessions can be revoked.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_workspaced");

/// A `workspaced serve` of its own: private folder, database, port and instance label; its stderr goes to a file.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    instance: String,
    /// Sends the admin key.
    admin: reqwest::Client,
    /// No key, no redirects: what a browser or a student's curl sends.
    plain: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Service {
    async fn start(env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        let instance = format!("sec{:06x}", rand::random::<u32>() & 0xffffff);
        let out = cli(dir.path(), &["key", "create", "--role", "admin"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let port = free_port();
        let child = spawn(dir.path(), &instance, port, env);
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        let admin = reqwest::Client::builder().default_headers(auth).build().unwrap();
        let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let svc = Service { child, dir, port, instance, admin, plain };
        svc.wait_healthy().await;
        svc
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::get(self.url("/healthz")).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("workspaced did not come up: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("ws.db")
    }

    /// A launch link's session cookie value for `student` (the link is opened like a browser would).
    async fn session(&self, student: &str) -> String {
        let r = self.admin.post(self.url(&format!("/api/workspaces/{student}/launch"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let link = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
        let r = self.plain.get(link).send().await.unwrap();
        assert_eq!(r.status(), 303, "a launch link redirects into the IDE");
        let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let value = cookie.strip_prefix("workspaced_session=").expect("session cookie").split(';').next().unwrap();
        value.to_owned()
    }

    /// The status code of the student's own status route with these request headers.
    async fn own_status(&self, student: &str, header: (&str, String)) -> u16 {
        let r = self.plain.get(self.url(&format!("/w/{student}/_workspaced/status"))).header(header.0, header.1);
        r.send().await.unwrap().status().as_u16()
    }

    /// Stops the server (SIGTERM, then wait) and removes this instance's containers.
    fn stop(&mut self) {
        support::stop_service(&mut self.child, &self.instance);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(dir: &Path, instance: &str, port: u16, env: &[(&str, &str)]) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("stderr.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .env("WORKSPACE_BASE_PATH", dir.join("base"))
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("ws.db").display()))
        .env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}"))
        .env("WORKSPACED_INSTANCE", instance)
        .env("WORKSPACED_IMAGE", "workspaced/tiny:1")
        .env("WORKSPACED_STOP_GRACE", "1s")
        .env("RUST_LOG", "info")
        .env_remove("WORKSPACED_SECRET_KEY")
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn workspaced")
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("ws.db").display()))
        .env_remove("WORKSPACED_CONFIG")
        .output()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Polls `f` until it returns true, for at most `within` (a bound on waiting, not an assertion on speed).
async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_student_token_opens_only_status_and_heartbeat_and_is_never_a_session() {
    let svc = Service::start(&[]).await;
    let r = svc.admin.post(svc.url("/api/workspaces/alice/token")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let value = token.strip_prefix("wss_").expect("wss_ prefix").to_owned();

    // As the SDK sends it: status and heartbeat work.
    assert_eq!(svc.own_status("alice", ("authorization", format!("Bearer {token}"))).await, 200);
    let hb =
        svc.plain.post(svc.url("/api/workspaces/heartbeat")).bearer_auth(&token).json(&json!({"student_id": "alice"}));
    assert_ne!(hb.send().await.unwrap().status(), 401);

    // Its value sent as the session cookie opens nothing: not the IDE, not a start, not even the status.
    let cookie = format!("workspaced_session={value}");
    let ide = svc.plain.get(svc.url("/w/alice/")).header("cookie", &cookie).header("accept", "text/html");
    assert_eq!(ide.send().await.unwrap().status(), 401, "a student token is not a session");
    let start = svc.plain.post(svc.url("/w/alice/_workspaced/start")).header("cookie", &cookie);
    assert_eq!(start.send().await.unwrap().status(), 401);
    assert_eq!(svc.own_status("alice", ("cookie", cookie.clone())).await, 401);
    let r = svc.admin.get(svc.url("/api/workspaces/alice")).send().await.unwrap();
    assert_eq!(r.status(), 404, "nothing was started");

    // And the reverse: a session value sent as a student token opens nothing either.
    let session = svc.session("alice").await;
    assert_eq!(svc.own_status("alice", ("cookie", format!("workspaced_session={session}"))).await, 200);
    assert_eq!(svc.own_status("alice", ("authorization", format!("Bearer wss_{session}"))).await, 401);
    let hb = svc.plain.post(svc.url("/api/workspaces/heartbeat")).bearer_auth(format!("wss_{session}"));
    assert_eq!(hb.json(&json!({"student_id": "alice"})).send().await.unwrap().status(), 401);

    // A planted cookie of the same name (a narrower path, a parent domain) does not shadow the real session.
    let shadowed = format!("workspaced_session=planted.0-0.99999999999999.00; workspaced_session={session}");
    assert_eq!(svc.own_status("alice", ("cookie", shadowed)).await, 200);
}

#[tokio::test]
async fn nothing_from_a_request_forges_a_log_line_and_a_log_file_has_no_colour_codes() {
    let svc = Service::start(&[("RUST_LOG", "debug")]).await;
    let forged = [
        "/w/x%0aINFO%20forged%20line/_workspaced/launch?token=a.b.c.d",
        "/w/alice/_workspaced/launch?token=a%0aINFO%20forged%20line.b.c.d",
        "/w/x%0d%0aINFO%20forged%20line/",
        "/api/workspaces/x%0aINFO%20forged%20line",
    ];
    for path in forged {
        let r = svc.plain.get(svc.url(path)).header("accept", "text/html").send().await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
    }
    // The refusals were logged (so the check below looks at lines that saw the request), on one line each.
    let found = eventually(Duration::from_secs(10), async || svc.log().contains("launch link refused")).await;
    let log = svc.log();
    assert!(found, "the refused launch was logged:\n{log}");
    for line in log.lines() {
        let bare = line.trim_start();
        assert!(!bare.starts_with("INFO forged") && !bare.contains(" forged line"), "forged line: {line:?}");
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a log file:\n{log}");
    assert!(!log.contains("a.b.c.d"), "a launch token reached the log");
}

#[tokio::test]
async fn key_and_database_files_are_owner_only_and_an_open_key_file_is_refused() {
    let mut svc = Service::start(&[]).await;
    let key_file = svc.dir.path().join("workspaced.key");
    assert_eq!(mode(&svc.db()), 0o600, "database file");
    assert_eq!(mode(&key_file), 0o600, "signing key file");
    svc.stop();

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut child = spawn(svc.dir.path(), &svc.instance, free_port(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "a server with a world-readable key file kept running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let log = svc.log();
    assert!(log.contains("chmod 600"), "the error says how to fix it:\n{log}");
    assert_eq!(mode(&key_file), 0o644, "the file was left as it was");
}

#[tokio::test]
async fn a_revoked_session_gets_401_from_the_cli_the_admin_route_and_for_everyone() {
    let svc = Service::start(&[]).await;
    let cookie = |v: &str| ("cookie", format!("workspaced_session={v}"));

    // The CLI works on the database; the server notices within its cache time (2 s).
    let s1 = svc.session("alice").await;
    let bob = svc.session("bob").await;
    assert_eq!(svc.own_status("alice", cookie(&s1)).await, 200);
    let out = cli(svc.dir.path(), &["session", "revoke", "alice"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(Duration::from_secs(10), async || svc.own_status("alice", cookie(&s1)).await == 401).await);
    assert_eq!(svc.own_status("bob", cookie(&bob)).await, 200, "only alice's sessions ended");

    // A new launch link gives a new session; the admin route ends it at once.
    let s2 = svc.session("alice").await;
    assert_eq!(svc.own_status("alice", cookie(&s2)).await, 200);
    let r = svc.admin.post(svc.url("/api/admin/sessions/revoke")).json(&json!({"student_id": "alice"})).send();
    assert_eq!(r.await.unwrap().status(), 200);
    assert_eq!(svc.own_status("alice", cookie(&s2)).await, 401);

    // Bad bodies change nothing.
    for body in [json!({}), json!({"student_id": "bob", "all": true}), json!({"student_id": "Bob"})] {
        let r = svc.admin.post(svc.url("/api/admin/sessions/revoke")).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    assert_eq!(svc.own_status("bob", cookie(&bob)).await, 200);
    let lms = svc.plain.post(svc.url("/api/admin/sessions/revoke")).json(&json!({"all": true}));
    assert_eq!(lms.send().await.unwrap().status(), 401, "no key, no revocation");

    // --all ends everybody's, student tokens included.
    let r = svc.admin.post(svc.url("/api/workspaces/bob/token")).send().await.unwrap();
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    assert_eq!(svc.own_status("bob", ("authorization", format!("Bearer {token}"))).await, 200);
    let out = cli(svc.dir.path(), &["session", "revoke", "--all"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(eventually(Duration::from_secs(10), async || svc.own_status("bob", cookie(&bob)).await == 401).await);
    assert_eq!(svc.own_status("bob", ("authorization", format!("Bearer {token}"))).await, 401);
}

/// Polls the workspace until it is running; its container id.
async fn running(svc: &Service, student: &str) -> String {
    let url = svc.url(&format!("/api/workspaces/{student}"));
    let mut last = Value::Null;
    let up = eventually(Duration::from_secs(120), async || {
        last = svc.admin.get(&url).send().await.unwrap().json().await.unwrap_or_default();
        last["status"] == "running"
    })
    .await;
    assert!(up, "{student} never ran: {last}");
    last["container_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_web_server_a_student_runs_cannot_plant_cookies_service_workers_or_cors_grants_on_the_origin() {
    let svc = Service::start(&[("WORKSPACED_IMAGE", "workspaced/code-server:4.139.1")]).await;
    let session = svc.session("alice").await;
    let container = running(&svc, "alice").await;
    // What a student can run in the IDE's terminal: a server that answers with headers acting on the whole origin,
    // reached through code-server's own /proxy/<port>/.
    let server = r#"require('http').createServer((q, r) => {
        r.setHeader('Set-Cookie', ['workspaced_session=planted; Path=/', 'theirs=1; Path=/', 'wide=1; Domain=localhost',
            'own=1; Path=/w/alice/']);
        r.setHeader('Service-Worker-Allowed', '/');
        r.setHeader('Clear-Site-Data', '"*"');
        r.setHeader('Access-Control-Allow-Origin', '*');
        r.setHeader('Access-Control-Allow-Credentials', 'true');
        r.end('served by the student');
    }).listen(9000, '127.0.0.1')"#;
    let spawned = Command::new("docker")
        .args(["exec", "-d", &container, "/usr/lib/code-server/lib/node", "-e", server])
        .status()
        .unwrap();
    assert!(spawned.success());
    let cookie = format!("workspaced_session={session}");
    let mut answer = None;
    let served = eventually(Duration::from_secs(30), async || {
        let r = svc.plain.get(svc.url("/w/alice/proxy/9000/")).header("cookie", &cookie).send().await.unwrap();
        let ok = r.status() == 200;
        answer = Some(r);
        ok
    })
    .await;
    let r = answer.unwrap();
    assert!(served, "the student's server was not reached: {}", r.status());
    let h = r.headers().clone();
    for gone in
        ["service-worker-allowed", "clear-site-data", "access-control-allow-origin", "access-control-allow-credentials"]
    {
        assert!(!h.contains_key(gone), "{gone} reached the browser");
    }
    let cookies: Vec<&str> = h.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["own=1; Path=/w/alice/"], "only the IDE's own cookie under its own prefix");
    assert_eq!(r.text().await.unwrap(), "served by the student");
}

#[tokio::test]
async fn in_host_mode_a_page_on_another_host_cannot_send_to_or_open_a_websocket_on_a_students_ide() {
    let svc = Service::start(&[("WORKSPACED_PROXY_HOST_SUFFIX", "ws.test")]).await;
    let r = svc.admin.post(svc.url("/api/workspaces/alice/launch")).send().await.unwrap();
    let link = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let path = link.strip_prefix("http://alice.ws.test").expect("a link on the student's host").to_owned();
    let r = svc.plain.get(svc.url(&path)).header("host", "alice.ws.test").send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let send = |origin: &'static str, upgrade: bool| {
        let mut req = if upgrade { svc.plain.get(svc.url("/socket")) } else { svc.plain.post(svc.url("/files")) };
        req = req.header("host", "alice.ws.test").header("cookie", &cookie).header("origin", origin);
        if upgrade {
            req = req.header("connection", "upgrade").header("upgrade", "websocket");
        }
        req.send()
    };
    for upgrade in [false, true] {
        let r = send("http://bob.ws.test", upgrade).await.unwrap();
        assert_eq!(r.status(), 403, "another student's host (upgrade: {upgrade})");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "cross_origin");
        // From its own origin the request goes on to the IDE side (the workspace is starting or running: not 403).
        let r = send("http://alice.ws.test", upgrade).await.unwrap();
        assert_ne!(r.status(), 403, "its own origin (upgrade: {upgrade})");
    }
}

#[tokio::test]
async fn readiness_and_a_students_view_of_a_failed_start_reveal_no_host_details() {
    let svc = Service::start(&[("WORKSPACED_IMAGE", "workspaced/missing-image:0")]).await;
    let session = svc.session("alice").await;
    let cookie = format!("workspaced_session={session}");
    let mut own = Value::Null;
    let failed = eventually(Duration::from_secs(30), async || {
        let r = svc.plain.get(svc.url("/w/alice/_workspaced/status")).header("cookie", &cookie).send().await.unwrap();
        own = r.json().await.unwrap_or_default();
        own["status"] == "failed"
    })
    .await;
    assert!(failed, "{own}");
    let shown = own["error"].as_str().unwrap_or_default().to_owned();
    assert!(!shown.is_empty() && !shown.contains("missing-image") && !shown.contains('/'), "{shown}");
    // The operator's view keeps the cause.
    let ws: Value = svc.admin.get(svc.url("/api/workspaces/alice")).send().await.unwrap().json().await.unwrap();
    assert!(ws["error"].as_str().unwrap().contains("missing-image"), "{ws}");
    // Readiness, open to anyone, names what is down but not why (here: an engine socket path).
    let socket = format!("unix://{}/no-engine.sock", svc.dir.path().display());
    let down = Service::start(&[("DOCKER_HOST", &socket)]).await;
    let r = reqwest::get(down.url("/readyz")).await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((body["database"].as_str(), body["docker"].as_str()), (Some("ok"), Some("unavailable")), "{text}");
    assert!(!text.contains("no-engine.sock"), "{text}");
    assert!(down.log().contains("the container engine does not answer"), "the cause is in the log");
}

#[tokio::test]
async fn one_student_cannot_hold_more_than_the_configured_connections_through_the_proxy() {
    let svc = Service::start(&[("WORKSPACED_PROXY_MAX_CONNECTIONS_PER_STUDENT", "3")]).await;
    let session = svc.session("alice").await;
    running(&svc, "alice").await;
    let cookie = format!("workspaced_session={session}");
    // Six slow requests at once (the tiny image's CGI sleeps 4 s): three take alice's slots, the others arrive
    // while those are open and are refused.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let req = svc.plain.get(svc.url("/w/alice/cgi-bin/slow?4")).header("cookie", &cookie);
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut codes = Vec::new();
    for s in slow {
        codes.push(s.await.unwrap().unwrap());
    }
    codes.sort();
    assert_eq!(codes, [200, 200, 200, 429, 429, 429], "three at a time, whatever the order");
    let fast = || svc.plain.get(svc.url("/w/alice/healthz")).header("cookie", &cookie).send();
    // Their slots are free again.
    assert_eq!(fast().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_launch_link_for_another_student_asks_before_replacing_the_session_this_browser_holds() {
    let svc = Service::start(&[]).await;
    let alice = format!("workspaced_session={}", svc.session("alice").await);
    let r = svc.admin.post(svc.url("/api/workspaces/bob/launch")).send().await.unwrap();
    let link = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    // Opened in alice's browser: a page that asks, no new cookie, and alice's session still works.
    let r = svc.plain.get(&link).header("cookie", &alice).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none(), "the session was replaced without asking");
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"other-session\"") && page.contains("alice") && page.contains("bob"), "{page}");
    assert_eq!(svc.own_status("alice", ("cookie", alice.clone())).await, 200);
    // A script gets 409 with a stable code.
    let r = svc.plain.get(&link).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "other_session");
    // Confirming switches: the link was not used up by asking.
    let confirm = page.split("id=\"switch\" href=\"").nth(1).unwrap().split('"').next().unwrap().replace("&amp;", "&");
    let r = svc.plain.get(svc.url(&confirm)).header("cookie", &alice).send().await.unwrap();
    assert_eq!(r.status(), 303, "{confirm}");
    let bob = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(svc.own_status("bob", ("cookie", bob)).await, 200);
    // Without another session in the browser, a link is used at once, as before.
    let r = svc.admin.post(svc.url("/api/workspaces/carol/launch")).send().await.unwrap();
    let link = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    assert_eq!(svc.plain.get(&link).send().await.unwrap().status(), 303);
}

/// The container's environment variable `name` and its published IDE port, from the engine.
fn container_env_and_port(container: &str, name: &str) -> (Option<String>, u16) {
    let out = Command::new("docker").args(["inspect", container]).output().unwrap();
    let c: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &c[0];
    let prefix = format!("{name}=");
    let env = c["Config"]["Env"].as_array().unwrap().iter().filter_map(|v| v.as_str()?.strip_prefix(&prefix)).next();
    let port = c["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"].as_str().unwrap().parse().unwrap();
    (env.map(str::to_owned), port)
}

#[tokio::test]
async fn an_ides_port_reached_without_the_proxy_gets_no_ide_and_its_secret_never_leaves_the_service() {
    let svc = Service::start(&[("WORKSPACED_IMAGE", "workspaced/code-server:4.139.1")]).await;
    let session = svc.session("alice").await;
    let container = running(&svc, "alice").await;
    let (secret, port) = container_env_and_port(&container, "HASHED_PASSWORD");
    let secret = secret.expect("the container was given a secret");
    assert_eq!(secret.len(), 64, "32 random bytes in hex");

    // Anyone on the host (or the network of a multi-host engine) who reaches the port: no IDE, with or without a
    // guessed cookie. code-server sends them to its login page.
    let direct = format!("http://127.0.0.1:{port}/");
    for cookie in ["", "code-server-session=guess", &format!("code-server-session={}", "0".repeat(64))] {
        let r = svc.plain.get(&direct).header("cookie", cookie).send().await.unwrap();
        assert_eq!(r.status(), 302, "cookie {cookie:?}: the IDE must refuse");
        assert!(r.headers()["location"].to_str().unwrap().contains("login"));
    }
    // The control: the same request with the secret, as the proxy sends it, is the IDE. So the refusal above is the
    // secret's doing.
    let r = svc.plain.get(&direct).header("cookie", format!("code-server-session={secret}")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.contains("folder=/home/coder/project"), "with the secret, the IDE opens the project: {to}");

    // Through the proxy with the student's session: the IDE, and nothing of the secret in what the browser gets.
    let page = svc.url("/w/alice/?folder=/home/coder/project");
    let r = svc.plain.get(page).header("cookie", format!("workspaced_session={session}")).send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), 200);
    let headers = format!("{:?}", r.headers());
    let body = r.text().await.unwrap();
    assert!(body.contains("workbench"), "the IDE's page");
    assert!(!headers.contains(&secret) && !body.contains(&secret), "the secret reached the browser");
    let view = svc.admin.get(svc.url("/api/workspaces/alice")).send().await.unwrap().text().await.unwrap();
    assert!(!view.contains(&secret), "the API shows the secret: {view}");
    assert!(!svc.log().contains(&secret), "the log holds the secret");

    // A new start is a new secret.
    let r = svc.admin.post(svc.url("/api/workspaces/alice/stop")).send().await.unwrap();
    assert!(r.status().is_success());
    let r = svc.admin.post(svc.url("/api/workspaces/alice/start")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let again = running(&svc, "alice").await;
    let (next, _) = container_env_and_port(&again, "HASHED_PASSWORD");
    assert_ne!(next.as_deref(), Some(secret.as_str()), "each start gets its own secret");
}

#[tokio::test]
async fn the_ide_gets_its_secret_from_the_proxy_alone_and_only_the_cookies_it_set_itself() {
    // The tiny image's CGI scripts show what the IDE received; a Jupyter-like IDE takes its token in a header.
    let svc = Service::start(&[("WORKSPACED_IDE_AUTH", "header:X-Ide-Token:token ")]).await;
    let session = svc.session("bob").await;
    let container = running(&svc, "bob").await;
    let (secret, _) = container_env_and_port(&container, "WORKSPACED_IDE_SECRET");
    let secret = secret.expect("the container was given a secret");
    // The browser holds the university's single sign-on cookie (parent domain), a cookie a classmate's page planted,
    // and a forged token header.
    let cookies = format!("workspaced_session={session}; sso=university; ide_pref=planted; code-server-session=x");
    let seen = async || {
        let r = svc.plain.get(svc.url("/w/bob/cgi-bin/headers")).header("cookie", &cookies);
        let r = r.header("x-ide-token", "token forged").send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let before = seen().await;
    assert!(before.contains(&format!("HTTP_X_IDE_TOKEN=token {secret}\n")), "{before}");
    assert!(!before.contains("forged"), "{before}");
    assert!(!before.contains("HTTP_COOKIE"), "no cookie the IDE did not set reaches it: {before}");

    // Once the IDE sets a cookie, the browser's cookie of that name reaches it; the others still do not.
    let r = svc.plain.get(svc.url("/w/bob/cgi-bin/setcookie")).header("cookie", &cookies).send().await.unwrap();
    assert_eq!(r.headers()["set-cookie"], "ide_pref=dark");
    let after = seen().await;
    assert!(after.contains("HTTP_COOKIE=ide_pref=planted\n"), "{after}");
    assert!(!after.contains("sso") && !after.contains("workspaced_session"), "{after}");
}

#[tokio::test]
async fn a_client_that_sends_its_headers_too_slowly_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let svc = Service::start(&[("WORKSPACED_HEADER_READ_TIMEOUT", "1s")]).await;
    let addr = format!("127.0.0.1:{}", svc.port);

    // Headers begun and never finished (slowloris).
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n").await.unwrap();
    let mut got = Vec::new();
    // A bound on waiting only: a server without the timeout keeps the connection and this read never ends.
    let read = tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept a connection whose headers never came");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "it was answered as if complete");

    // A kept-alive connection that sends nothing after its first answer is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), idle.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "an idle kept-alive connection was kept");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"), "the complete request was answered");

    // Everyone else is served.
    assert_eq!(reqwest::get(svc.url("/healthz")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn with_an_admin_host_the_dashboard_and_api_live_only_there_and_no_ide_is_served_there() {
    let svc = Service::start(&[("WORKSPACED_ADMIN_HOST", "admin.localhost")]).await;
    let on = |host: &str, path: &str| svc.admin.get(svc.url(path)).header("host", host.to_owned()).send();
    let status = async |host: &str, path: &str| on(host, path).await.unwrap().status().as_u16();
    let ide_host = format!("127.0.0.1:{}", svc.port);
    for path in ["/admin", "/api/workspaces", "/metrics", "/api/admin/stats"] {
        assert_eq!(status(&ide_host, path).await, 404, "{path} on the IDE host");
        assert_eq!(status("admin.localhost", path).await, 200, "{path} on the admin host");
    }
    // The SDK's heartbeat (from LMS pages, with a student token) works on any host; health for load balancers too.
    let beat = svc.plain.post(svc.url("/api/workspaces/heartbeat")).header("host", &ide_host).send().await.unwrap();
    assert_eq!(beat.status(), 401, "the heartbeat is there, and wants a credential");
    assert_eq!(status(&ide_host, "/healthz").await, 200);
    // A workspace's pages and a launch link: never on the admin host.
    assert_eq!(status("admin.localhost", "/w/alice/").await, 404);
    assert_eq!(status("admin.localhost", "/w/alice/_workspaced/launch?token=x").await, 404);
    assert_ne!(status(&ide_host, "/w/alice/").await, 404);
}
