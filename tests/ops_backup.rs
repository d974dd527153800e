//! `workspaced backup` and the restore of `docs/operations.md`, with the real binary, a real SQLite file and the real
//! engine: keys and workspaces are made through the CLI and the API, a backup is taken while the service runs, the
//! database and the signing key are lost, the files are put back, and after a restart every workspace record and
//! key is back: the old API keys and a student token signed before the backup still work. A PostgreSQL URL gets
//! the pg_dump command and nothing is written.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Paths {
    state: PathBuf,
    base: PathBuf,
    db_url: String,
}

impl Paths {
    fn new(root: &Path) -> Self {
        let (state, base) = (root.join("state"), root.join("base"));
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&base).unwrap();
        let db_url = format!("sqlite://{}", state.join("workspaced.db").display());
        Paths { state, base, db_url }
    }

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_workspaced"))
            .args(args)
            .env("DATABASE_URL", &self.db_url)
            .env("WORKSPACE_BASE_PATH", &self.base)
            .output()
            .unwrap()
    }
}

struct Service(Child);

impl Service {
    fn start(p: &Paths, instance: &str, port: u16) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_workspaced"))
            .arg("serve")
            .env("WORKSPACE_BASE_PATH", &p.base)
            .env("DATABASE_URL", &p.db_url)
            .env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}"))
            .env("WORKSPACED_INSTANCE", instance)
            .env("WORKSPACED_IMAGE", "workspaced/tiny:1")
            .env("WORKSPACED_STOP_GRACE", "1s")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn workspaced");
        Service(child)
    }

    /// SIGTERM, then wait for the process to end.
    fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the instance's containers, even when an assertion failed.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=workspaced.instance={}", self.0)])
            .output()
            .unwrap();
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").arg("rm").arg("-f").args(ids).output();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("workspaced did not come up");
}

fn client(key: &str) -> reqwest::Client {
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    reqwest::Client::builder().default_headers(auth).build().unwrap()
}

fn new_key(p: &Paths, role: &str) -> String {
    let out = p.cli(&["key", "create", "--role", role, "--label", "backup-test"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn workspaces(port: u16, key: &str) -> Vec<(String, String)> {
    let body: serde_json::Value = client(key)
        .get(format!("http://127.0.0.1:{port}/api/workspaces"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut list: Vec<(String, String)> = body["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["student_id"].as_str().unwrap().to_owned(), w["status"].as_str().unwrap().to_owned()))
        .collect();
    list.sort();
    list
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn a_backup_taken_while_serving_restores_every_workspace_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Paths::new(tmp.path());
    let instance = format!("bkp{:06x}", rand::random::<u32>() & 0xffffff);
    let _cleanup = Cleanup(instance.clone());
    let admin = new_key(&p, "admin");
    let lms = new_key(&p, "lms");
    let port = free_port();
    let svc = Service::start(&p, &instance, port);
    wait_healthy(port).await;
    let api = client(&lms);
    for id in ["alice", "bob"] {
        let r = api.post(format!("http://127.0.0.1:{port}/api/workspaces/{id}/start")).send().await.unwrap();
        assert!(r.status().is_success(), "start {id}: {}", r.text().await.unwrap());
    }
    let r = api.post(format!("http://127.0.0.1:{port}/api/workspaces/bob/stop")).send().await.unwrap();
    assert!(r.status().is_success(), "stop bob: {}", r.text().await.unwrap());
    let token: serde_json::Value = api
        .post(format!("http://127.0.0.1:{port}/api/workspaces/alice/token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let before = workspaces(port, &admin).await;
    assert_eq!(before, vec![("alice".into(), "running".into()), ("bob".into(), "stopped".into())]);
    let keys_before = p.cli(&["key", "list", "--json"]).stdout;

    // While the service runs.
    let archive = tmp.path().join("backup.tar.gz");
    let out = p.cli(&["backup", "-o", archive.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((manifest["workspaces"].as_i64(), manifest["api_keys"].as_i64()), (Some(2), Some(2)), "{manifest}");
    assert_eq!(manifest["key_included"], true);
    assert_eq!(mode(&archive), 0o600, "the archive holds the signing key: owner only");
    let folder = tmp.path().join("backup-folder");
    let out = p.cli(&["backup", "-o", folder.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&folder), 0o700);
    for f in ["workspaced.db", "workspaced.key", "backup.json"] {
        assert_eq!(mode(&folder.join(f)), 0o600, "{f}");
    }
    let again = p.cli(&["backup", "-o", archive.to_str().unwrap()]);
    assert!(!again.status.success(), "a backup never overwrites");
    assert!(String::from_utf8_lossy(&again.stderr).contains("output_exists"));

    // Lose the database and the key.
    svc.stop();
    for entry in std::fs::read_dir(&p.state).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    // The restore of docs/operations.md: put the files back (service stopped).
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()));
    tar.unpack(tmp.path().join("restored")).unwrap();
    for f in ["workspaced.db", "workspaced.key"] {
        std::fs::copy(tmp.path().join("restored").join(f), p.state.join(f)).unwrap();
        std::fs::set_permissions(p.state.join(f), std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let port = free_port();
    let svc = Service::start(&p, &instance, port);
    wait_healthy(port).await;
    assert_eq!(workspaces(port, &admin).await, before, "every workspace record is back (alice's container adopted)");
    assert_eq!(workspaces(port, &lms).await, before, "the old lms key works");
    assert_eq!(p.cli(&["key", "list", "--json"]).stdout, keys_before, "every key is back");
    let status = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/w/alice/_workspaced/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 200, "a student token signed before the backup verifies: the signing key is back");
    svc.stop();
}

#[test]
fn a_postgres_database_gets_the_pg_dump_command_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out_path = tmp.path().join("b.tar.gz");
    let out = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["backup", "-o", out_path.to_str().unwrap()])
        .env("DATABASE_URL", "postgres://ws:s3cret@db.example/ws")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("pg_dump ") && stdout.contains("\"$DATABASE_URL\""), "{stdout}");
    assert!(!stdout.contains("s3cret") && !String::from_utf8_lossy(&out.stderr).contains("s3cret"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use_pg_dump"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing was written");
}
