//! `spawn_app()`: a real workspaced on an ephemeral loopback port, with a private base path, database and instance
//! label, so tests run in parallel without seeing each other. Dropping the app removes its containers by label.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use workspaced::app::Application;
use workspaced::config::Settings;
use workspaced::domain::InstanceId;
use workspaced::lifecycle::Lifecycle;

/// The tiny image (busybox httpd): fast, for the many lifecycle cases.
pub const TINY_IMAGE: &str = "workspaced/tiny:1";
/// The real code-server image.
pub const CODE_SERVER_IMAGE: &str = workspaced::config::DEFAULT_IMAGE;

pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub instance: String,
    pub base: PathBuf,
    pub lifecycle: Arc<Lifecycle>,
    /// The app's database, for tests that set up a state directly (what a crash leaves behind).
    pub store: workspaced::store::Store,
    /// Sends the admin key on every request.
    pub client: reqwest::Client,
    /// An admin key and an LMS key of this app.
    pub admin_key: String,
    pub lms_key: String,
    pub settings: Settings,
    clock: Arc<dyn workspaced::clock::Clock>,
    runtime: Arc<dyn workspaced::runtime::Runtime>,
    server: Option<(tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
    _tmp: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns an app after letting the test edit the settings (image, timeouts, base path...).
pub async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_clock(edit, Arc::new(workspaced::clock::SystemClock)).await
}

/// Spawns an app with the given clock (a `ManualClock` moves time without sleeping).
pub async fn spawn_app_with_clock(
    edit: impl FnOnce(&mut Settings),
    clock: Arc<dyn workspaced::clock::Clock>,
) -> TestApp {
    spawn_app_full(edit, clock, None).await
}

/// Spawns an app whose runtime talks to the engine through `socket` (a proxy the test can cut).
pub async fn spawn_app_with_socket(edit: impl FnOnce(&mut Settings), socket: &Path) -> TestApp {
    spawn_app_full(edit, Arc::new(workspaced::clock::SystemClock), Some(socket)).await
}

pub async fn spawn_app_full(
    edit: impl FnOnce(&mut Settings),
    clock: Arc<dyn workspaced::clock::Clock>,
    socket: Option<&Path>,
) -> TestApp {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("workspaced=debug").try_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let instance = format!("t{:08x}", rand::random::<u32>());
    let base = tmp.path().join("workspace-data");
    std::fs::create_dir(&base).unwrap();
    // The suite runs on PostgreSQL when scripts/test.sh provides a server (a new database per app), else on SQLite.
    let database_url = match std::env::var("WORKSPACED_TEST_POSTGRES") {
        Ok(server) => crate::support::fresh_postgres_database(&server).await,
        Err(_) => format!("sqlite://{}", tmp.path().join("workspaced.db").display()),
    };
    let mut settings = Settings { base_path: base.clone(), database_url, ..Settings::default() };
    settings.auth.secret_key_file = Some(tmp.path().join("workspaced.key"));
    settings.listen = "127.0.0.1:0".to_owned();
    settings.instance = InstanceId::parse(&instance).unwrap();
    settings.workspace.image = TINY_IMAGE.to_owned();
    settings.workspace.start_timeout = std::time::Duration::from_secs(30);
    settings.workspace.stop_grace = std::time::Duration::from_secs(2);
    edit(&mut settings);
    let base = settings.base_path.clone();
    let runtime: Arc<dyn workspaced::runtime::Runtime> = Arc::new(
        match socket {
            // A cut engine refuses at once (the proxy closes), so the timeout only bounds a slow engine: long enough
            // for a container start on a loaded machine.
            Some(path) => {
                DockerRuntime::connect_lazy_at(path, settings.instance.clone(), std::time::Duration::from_secs(20))
            }
            None => DockerRuntime::connect_lazy(settings.instance.clone(), workspaced::app::ENGINE_CALL_TIMEOUT),
        }
        .expect("docker client"),
    );
    let store = workspaced::store::Store::connect(&settings.database_url).await.expect("store");
    let lifecycle = Arc::new(Lifecycle::new(Arc::new(settings.clone()), store.clone(), runtime.clone(), clock.clone()));
    let now = chrono::Utc::now();
    let admin_key = create_key(&store, Role::Admin, "tests", now).await.expect("admin key").key;
    let lms_key = create_key(&store, Role::Lms, "tests", now).await.expect("lms key").key;
    let mut app = TestApp {
        addr: "127.0.0.1:0".parse().unwrap(),
        instance,
        base,
        lifecycle,
        store,
        client: client_with_key(&admin_key),
        admin_key,
        lms_key,
        settings,
        clock,
        runtime,
        server: None,
        _tmp: tmp,
    };
    app.boot().await;
    app
}

use workspaced::auth::{create_key, Role};
use workspaced::runtime::docker::DockerRuntime;

/// A client that sends `key` as its bearer key.
pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    reqwest::Client::builder().default_headers(h).build().unwrap()
}

impl TestApp {
    /// Builds and serves the application from `self.settings` (same database, base path and instance).
    async fn boot(&mut self) {
        let mut settings = self.settings.clone();
        settings.listen = "127.0.0.1:0".to_owned();
        let app = Application::build_on(settings, self.store.clone(), self.runtime.clone(), self.clock.clone())
            .await
            .expect("app builds");
        self.addr = app.addr();
        self.lifecycle = app.lifecycle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        self.server = Some((tx, handle));
        // The listener is bound before the start-up reconcile pass and served after it: the first answer means the
        // pass is over, so a test's own containers cannot race it.
        let health = format!("http://{}/healthz", self.addr);
        self.client.get(&health).send().await.expect("the app serves");
    }

    /// Shuts the service down gracefully (workspaces keep running) and starts it again on the same state.
    pub async fn restart(&mut self) {
        if let Some((tx, handle)) = self.server.take() {
            let _ = tx.send(());
            handle.await.expect("server task").expect("clean shutdown");
        }
        self.boot().await;
    }
}

impl TestApp {
    /// The admin key as a raw header line, for [`raw_request`].
    pub fn auth_header(&self) -> String {
        format!("Authorization: Bearer {}\r\n", self.admin_key)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: &str) -> (u16, Value) {
        let r = self.client.post(self.url(path)).send().await.expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put_json(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn heartbeat(&self, id: &str) -> (u16, Value) {
        self.post_json("/api/workspaces/heartbeat", &format!(r#"{{"student_id":"{id}"}}"#)).await
    }

    /// Polls the status until `done` says so or `within` passes; returns the last status.
    pub async fn wait_for(&self, id: &str, within: std::time::Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let (_, ws) = self.get(&format!("/api/workspaces/{id}")).await;
            if done(&ws) || std::time::Instant::now() > deadline {
                return ws;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Kinds of the stored events of one student, oldest first.
    pub async fn event_kinds(&self, id: &str) -> Vec<String> {
        let s = workspaced::domain::StudentId::parse(id).unwrap();
        self.lifecycle
            .reads()
            .events(Some(&s), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind.as_str().to_owned())
            .collect()
    }

    pub async fn post_json(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn start(&self, id: &str) -> Value {
        let (code, body) = self.post(&format!("/api/workspaces/{id}/start")).await;
        assert_eq!(code, 200, "start {id}: {body}");
        body
    }

    pub async fn stop(&self, id: &str) -> Value {
        let (code, body) = self.post(&format!("/api/workspaces/{id}/stop")).await;
        assert_eq!(code, 200, "stop {id}: {body}");
        body
    }

    /// Ids of this app's containers (running or not), by instance label.
    pub fn containers(&self) -> Vec<String> {
        containers_with_label(&format!("workspaced.instance={}", self.instance))
    }

    /// `docker inspect` of one container, as JSON.
    pub fn inspect(&self, id: &str) -> Value {
        let out = Command::new("docker").args(["inspect", id]).output().expect("docker inspect");
        assert!(out.status.success(), "docker inspect {id}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0].clone()
    }

    pub fn student_dir(&self, id: &str) -> PathBuf {
        self.base.join(id)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        remove_containers(&format!("workspaced.instance={}", self.instance));
    }
}

pub fn containers_with_label(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter", &format!("label={label}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

pub fn remove_containers(label: &str) {
    let ids = containers_with_label(label);
    if !ids.is_empty() {
        let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
    }
}

/// Runs a shell command in a container as uid 1000.
pub fn docker_exec(container: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", "-u", "1000:1000", container, "sh", "-c", script])
        .output()
        .expect("docker exec");
    assert!(out.status.success(), "docker exec failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Entries directly below a folder.
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Sends one HTTP/1.1 request with the path exactly as given (no client-side normalization of `..` or `%2E`),
/// and returns the status and the JSON body.
pub async fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str, headers: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A Unix-socket proxy in front of the Docker engine that a test can cut (as if the engine stopped) and restore.
pub struct EngineProxy {
    pub path: PathBuf,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    _dir: tempfile::TempDir,
}

impl EngineProxy {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (c, k) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if c.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the engine "is not there"
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut engine).await;
                    }
                });
                k.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { path, cut, conns, _dir: dir }
    }

    /// The engine goes away: open connections are dropped and new ones closed at once.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Our containers, grouped by student label: (student, container id, running).
pub fn containers_by_student(instance: &str) -> Vec<(String, String, bool)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            &format!("label=workspaced.instance={instance}"),
            "--format",
            "{{.Label \"workspaced.student\"}} {{.ID}} {{.State}}",
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((p.next()?.to_owned(), p.next()?.to_owned(), p.next()? == "running"))
        })
        .collect()
}

/// A client that follows no redirects and sends no key.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Asks for a launch link with the LMS key.
pub async fn launch_url(app: &TestApp, id: &str) -> String {
    let r = client_with_key(&app.lms_key).post(app.url(&format!("/api/workspaces/{id}/launch"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["student_id"], id);
    assert!(v["expires_at"].is_string());
    v["url"].as_str().unwrap().to_owned()
}

/// Opens a launch link like a browser; returns the `Cookie` header value to send afterwards.
pub async fn open_launch(app: &TestApp, id: &str) -> String {
    let url = launch_url(app, id).await;
    let r = browser().get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "launch answers with a redirect");
    assert_eq!(r.headers()["location"], format!("/w/{id}/"));
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    set.split(';').next().unwrap().to_owned()
}

/// Runs the CLI against a server with `key`, off the async workers (it blocks until the command exits).
pub async fn cli(server: &str, key: &str, args: &[&str]) -> std::process::Output {
    let (server, key) = (server.to_owned(), key.to_owned());
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
            .args(&args)
            .arg("--server")
            .arg(server)
            .env("WORKSPACED_API_KEY", key)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}
