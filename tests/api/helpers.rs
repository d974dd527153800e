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
    pub client: reqwest::Client,
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
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("workspaced=debug").try_init();
    let tmp = tempfile::tempdir().expect("tempdir");
    let instance = format!("t{:08x}", rand::random::<u32>());
    let base = tmp.path().join("workspace-data");
    std::fs::create_dir(&base).unwrap();
    let mut settings = Settings::default();
    settings.base_path = base.clone();
    settings.database_url = format!("sqlite://{}", tmp.path().join("workspaced.db").display());
    settings.listen = "127.0.0.1:0".to_owned();
    settings.instance = InstanceId::parse(&instance).unwrap();
    settings.workspace.image = TINY_IMAGE.to_owned();
    settings.workspace.start_timeout = std::time::Duration::from_secs(30);
    settings.workspace.stop_grace = std::time::Duration::from_secs(2);
    edit(&mut settings);
    let base = settings.base_path.clone();
    let runtime = workspaced::runtime::docker::DockerRuntime::connect_lazy(
        settings.instance.clone(),
        workspaced::app::ENGINE_CALL_TIMEOUT,
    )
    .expect("docker client");
    let app = Application::build_with(settings, Arc::new(runtime), clock).await.expect("app builds");
    let addr = app.addr();
    let lifecycle = app.lifecycle();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp { addr, instance, base, lifecycle, client: reqwest::Client::new(), _tmp: tmp }
}

impl TestApp {
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
        self.lifecycle.store().events(Some(&s), 0, 1000).await.unwrap().into_iter().map(|e| e.kind).collect()
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
pub async fn raw_request(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf);
    let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}
