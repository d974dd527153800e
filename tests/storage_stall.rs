//! A base path that stops answering, like a `hard` NFS or EFS mount: the real binary serves on a FUSE file system
//! (`tests/fixtures/stallfs.py`, Debian's python3-fusepy) that blocks every call while a control file exists. This
//! machine's kernel has no NFS client, but a FUSE call blocks in the kernel the same way (state D, deaf to SIGTERM).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_workspaced");

/// The FUSE file system, the stall switch, and the service on it; all undone when dropped.
struct Stalled {
    dir: tempfile::TempDir,
    fs: Child,
    serve: Option<Child>,
    port: u16,
    instance: String,
}

impl Stalled {
    fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }
    fn mount(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    fn control(&self) -> PathBuf {
        self.dir.path().join("stall")
    }
    fn stall(&self) {
        std::fs::write(self.control(), b"").unwrap();
    }
    fn unstall(&self) {
        let _ = std::fs::remove_file(self.control());
    }
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.unstall();
        if let Some(s) = &mut self.serve {
            let _ = s.kill();
            let _ = s.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(self.mount()).status();
        let _ = self.fs.kill();
        let _ = self.fs.wait();
        support::remove_instance_containers(&self.instance);
    }
}

fn mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts").unwrap().lines().any(|l| l.split(' ').nth(1) == path.to_str())
}

async fn metric(client: &reqwest::Client, url: &str, outcome: &str) -> f64 {
    let text = client.get(url).send().await.unwrap().text().await.unwrap();
    let prefix = format!("workspaced_storage_calls_total{{outcome=\"{outcome}\"}}");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0.0, |v| v.trim().parse().unwrap_or(0.0))
}

#[tokio::test]
async fn a_stalled_base_path_fails_starts_fast_and_frees_the_lock_and_the_service_keeps_answering() {
    let python = Path::new("/usr/bin/python3");
    let fusepy = Command::new(python).args(["-c", "import fusepy"]).status().is_ok_and(|s| s.success());
    assert!(fusepy, "needs Debian's python3-fusepy (scripts/test.sh installs it)");
    let dir = tempfile::tempdir().unwrap();
    for d in ["backing", "mnt"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stallfs.py");
    let fs = Command::new(python)
        .arg(script)
        .arg(dir.path().join("backing"))
        .arg(dir.path().join("mnt"))
        .arg(dir.path().join("stall"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("fuse.log")).unwrap())
        .spawn()
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let instance = format!("stall{:06x}", rand::random::<u32>() & 0xffffff);
    let mut t = Stalled { dir, fs, serve: None, port, instance };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mounted(&t.mount()) {
        assert!(Instant::now() < deadline, "the FUSE file system did not mount");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The mount hangs before the service even starts.
    t.stall();
    let env = |cmd: &mut Command| {
        cmd.env("DATABASE_URL", format!("sqlite://{}", t.dir.path().join("w.db").display()))
            .env("WORKSPACE_BASE_PATH", t.mount())
            .env("WORKSPACED_INSTANCE", &t.instance)
            .env("WORKSPACED_IMAGE", "workspaced/tiny:1")
            .env("WORKSPACED_STORAGE_TIMEOUT", "2s")
            .env("WORKSPACED_STORAGE_MAX_BLOCKED", "4")
            .env("WORKSPACED_STOP_GRACE", "1s")
            .env("RUST_LOG", "info")
            .env_remove("WORKSPACED_CONFIG")
            .env_remove("WORKSPACED_TEST_POSTGRES");
    };
    let mut key = Command::new(BIN);
    key.args(["key", "create", "--role", "admin"]);
    env(&mut key);
    let out = key.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut serve = Command::new(BIN);
    serve.arg("serve").env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}"));
    env(&mut serve);
    let log = std::fs::File::create(t.dir.path().join("serve.log")).unwrap();
    t.serve = Some(serve.stdout(Stdio::null()).stderr(log).spawn().unwrap());

    // It serves anyway, and says what is wrong.
    let plain = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if plain.get(t.url("/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not answer /healthz on a stalled base path:\n{}", t.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = plain.get(t.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["storage"], "stalled", "{ready}");

    // A start fails with storage_unavailable, and frees the student's lock: the next start is not stuck behind it.
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    let client = reqwest::Client::builder().default_headers(auth).timeout(Duration::from_secs(60)).build().unwrap();
    let mut messages = Vec::new();
    for student in ["alice", "alice", "bob", "carol", "dave"] {
        let r = client.post(t.url(&format!("/api/workspaces/{student}/start"))).send().await.unwrap();
        let code = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!((code, v["error"]["code"].as_str()), (503, Some("storage_unavailable")), "{student}: {v}");
        messages.push(v["error"]["message"].as_str().unwrap_or_default().to_owned());
    }
    // Each stalled call holds a thread until the mount answers; past the bound, calls fail at once.
    let metrics = t.url("/metrics");
    assert!(metrics_ok(&client, &metrics).await);
    let (stalled, refused) = (metric(&client, &metrics, "stalled").await, metric(&client, &metrics, "refused").await);
    assert!(stalled >= 1.0 && refused >= 1.0, "stalled {stalled}, refused {refused}: {messages:?}");
    assert!(messages.iter().any(|m| m.contains("already wait")), "{messages:?}");
    let alice: serde_json::Value =
        client.get(t.url("/api/workspaces/alice")).send().await.unwrap().json().await.unwrap();
    assert_ne!(alice["status"], "running", "{alice}");

    // The mount answers again: everything recovers by itself, and the calls that finished late changed nothing.
    t.unstall();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = plain.get(t.url("/readyz")).send().await.unwrap().json().await.unwrap();
        if v["storage"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "storage never came back: {v}\n{}", t.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for late in ["bob", "carol", "dave"] {
        assert!(!t.backing().join(late).exists(), "{late}'s folder was made by a call its start gave up on");
    }
    let r = client.post(t.url("/api/workspaces/alice/start")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", t.log());
    let meta = std::fs::metadata(t.backing().join("alice")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1000, 1000, 0o700));
    let r = client.post(t.url("/api/workspaces/alice/stop")).send().await.unwrap();
    assert!(r.status().is_success());
}

async fn metrics_ok(client: &reqwest::Client, url: &str) -> bool {
    client.get(url).send().await.is_ok_and(|r| r.status() == 200)
}
