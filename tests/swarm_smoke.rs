//! One end-to-end run of the real binary with `runtime = swarm` on a real single-node swarm (made and left by
//! scripts/test.sh) and the real code-server image: a start through a launch link, the IDE through the proxy, its
//! WebSocket, the published port refusing a request without the secret, a restart of workspaced that adopts the
//! running service and removes an orphan one, the idle cull, and an explicit stop. The route holds the node's
//! address as its host (the swarm advertises 127.0.0.1), so the proxy goes the way it goes to another node. Only
//! 127.0.0.1 is reached.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[allow(dead_code)] // try_upgrade is the API tests'
#[path = "api/ide_protocol.rs"]
mod ide_protocol;
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_workspaced");
const CODE_SERVER: &str = "workspaced/code-server:4.139.1";
const IDLE: &str = "60s";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The dir, port and instance of one workspaced, and its services removed on drop.
struct World {
    dir: tempfile::TempDir,
    port: u16,
    instance: String,
    child: Option<Child>,
}

impl World {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("log")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .env("WORKSPACE_BASE_PATH", self.dir.path().join("base"))
            .env("DATABASE_URL", format!("sqlite://{}", self.dir.path().join("ws.db").display()))
            .env("WORKSPACED_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("WORKSPACED_INSTANCE", &self.instance)
            .env("WORKSPACED_RUNTIME", "swarm")
            .env("WORKSPACED_IMAGE", CODE_SERVER)
            .env("WORKSPACED_START_TIMEOUT", "120s")
            .env("WORKSPACED_STOP_GRACE", "2s")
            .env("WORKSPACED_IDLE_TIMEOUT", IDLE)
            .env("WORKSPACED_WARNING_LEAD", "10s")
            .env("WORKSPACED_CULL_INTERVAL", "1s")
            .env("RUST_LOG", "info")
            .env_remove("WORKSPACED_SECRET_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn workspaced");
        self.child = Some(child);
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_healthy(&self) {
        let healthy = eventually(Duration::from_secs(30), async || {
            reqwest::get(self.url("/healthz")).await.is_ok_and(|r| r.status() == 200)
        });
        assert!(healthy.await, "workspaced did not come up: {}", self.log());
    }

    /// SIGTERM, then wait: running workspaces stay.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.terminate();
        support::swarm::remove_instance_services(&self.instance);
    }
}

fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("ws.db").display()))
        .env_remove("WORKSPACED_CONFIG")
        .output()
        .unwrap()
}

async fn eventually(within: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn docker_json(args: &[&str]) -> Value {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let mut all: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.pop().unwrap()
}

#[tokio::test]
async fn a_workspace_on_swarm_starts_is_proxied_with_its_websocket_survives_a_restart_is_culled_and_stops() {
    support::swarm::require_swarm();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("base")).unwrap();
    let instance = format!("sw{:06x}", rand::random::<u32>() & 0xffffff);
    let mut w = World { dir, port: free_port(), instance, child: None };
    let out = cli(w.dir.path(), &["key", "create", "--role", "admin"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    let admin = reqwest::Client::builder().default_headers(auth).build().unwrap();
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    w.spawn();
    w.wait_healthy().await;

    // Start through a launch link, as a browser does.
    let r = admin.post(w.url("/api/workspaces/ada/launch")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let link = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let r = plain.get(link).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let view_url = w.url("/api/workspaces/ada");
    let mut view = Value::Null;
    let up = eventually(Duration::from_secs(150), async || {
        view = admin.get(&view_url).send().await.unwrap().json().await.unwrap_or_default();
        view["status"] == "running"
    });
    assert!(up.await, "never ran: {view}\n{}", w.log());
    let service_id = view["container_id"].as_str().unwrap().to_owned();
    // The route holds the node's address (the swarm advertises 127.0.0.1): the proxy below goes through it.
    assert_eq!(view["host_addr"], "127.0.0.1", "{view}");
    let service = docker_json(&["service", "inspect", &service_id]);
    assert_eq!(service["Spec"]["Labels"]["workspaced.instance"], w.instance.as_str(), "a service of ours");

    // The IDE through the proxy, and its WebSocket.
    let r = plain.get(w.url("/w/ada/?folder=/home/coder/project")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("workbench"), "code-server's page through the proxy");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", w.port).parse().unwrap();
    let answer = ide_protocol::handshake(addr, "/w/ada/", &cookie).await;
    assert!(answer.contains("sign"), "code-server answered over the WebSocket: {answer}");

    // The published port is open on every interface (Swarm's host mode), so the IDE's secret is what guards it.
    let containers = support::swarm::task_containers(&service_id);
    let c = docker_json(&["inspect", &containers[0]]);
    let binding = &c["NetworkSettings"]["Ports"]["8080/tcp"][0];
    assert_eq!(binding["HostIp"], "0.0.0.0", "host mode binds every interface");
    let port = binding["HostPort"].as_str().unwrap();
    let direct = format!("http://127.0.0.1:{port}/");
    let r = plain.get(&direct).send().await.unwrap();
    assert_eq!(r.status(), 302, "no IDE without the secret");
    assert!(r.headers()["location"].to_str().unwrap().contains("login"));
    let prefix = "HASHED_PASSWORD=";
    let env = c["Config"]["Env"].as_array().unwrap();
    let secret = env.iter().find_map(|v| v.as_str()?.strip_prefix(prefix)).expect("the task has its secret");
    let r = plain.get(&direct).header("cookie", format!("code-server-session={secret}")).send().await.unwrap();
    let to = r.headers()["location"].to_str().unwrap();
    assert!(to.contains("folder=/home/coder/project"), "the control: with the secret it is the IDE: {to}");

    // A restart of workspaced: the running service is adopted, an orphan service of this instance is removed.
    w.terminate();
    // Named as the runtime names a service of this instance: the reconciler looks each student up by that name.
    let instance = workspaced::domain::InstanceId::parse(&w.instance).unwrap();
    let nobody = workspaced::domain::StudentId::parse("nobody").unwrap();
    let orphan_name = workspaced::runtime::swarm::service_name(&instance, &nobody);
    let orphan = Command::new("docker")
        .args(["service", "create", "-d", "-q", "--restart-condition", "none", "--name", &orphan_name])
        .args([
            "--label",
            "workspaced.managed-by=workspaced",
            "--label",
            &format!("workspaced.instance={}", w.instance),
        ])
        .args(["--label", "workspaced.student=nobody", "workspaced/tiny:1"])
        .output()
        .unwrap();
    assert!(orphan.status.success(), "{}", String::from_utf8_lossy(&orphan.stderr));
    let orphan_id = String::from_utf8(orphan.stdout).unwrap().trim().to_owned();
    w.spawn();
    w.wait_healthy().await;
    let gone = eventually(Duration::from_secs(30), async || {
        Command::new("docker").args(["service", "inspect", &orphan_id]).output().is_ok_and(|o| !o.status.success())
    });
    assert!(gone.await, "the orphan service was not removed: {}", w.log());
    let v: Value = admin.get(&view_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "running", "adopted after the restart: {v}");
    assert_eq!(v["container_id"], service_id.as_str(), "the same service");
    let r = plain.get(w.url("/w/ada/healthz")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 200, "the proxy reaches it after the restart");

    // Left alone, it is culled: stopped for idleness, its service removed.
    let culled = eventually(Duration::from_secs(180), async || {
        view = admin.get(&view_url).send().await.unwrap().json().await.unwrap_or_default();
        view["status"] == "stopped"
    });
    assert!(culled.await, "never culled: {view}\n{}", w.log());
    assert_eq!(view["stop_reason"], "idle", "{view}");
    assert!(support::swarm::instance_services(&w.instance).is_empty(), "the culled service is gone");

    // Started again and stopped by the API: the service goes, the student's folder stays.
    let r = admin.post(w.url("/api/workspaces/ada/start")).send().await.unwrap();
    assert!(r.status().is_success(), "{}: {}", r.status(), r.text().await.unwrap());
    let up = eventually(Duration::from_secs(150), async || {
        view = admin.get(&view_url).send().await.unwrap().json().await.unwrap_or_default();
        view["status"] == "running"
    });
    assert!(up.await, "never ran again: {view}");
    let r = admin.post(w.url("/api/workspaces/ada/stop")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v: Value = admin.get(&view_url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["status"], "stopped", "{v}");
    assert!(support::swarm::instance_services(&w.instance).is_empty(), "the stopped service is gone");
    assert!(w.dir.path().join("base/ada").is_dir(), "the student's folder stays");
}
