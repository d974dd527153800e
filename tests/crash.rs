//! The real binary, killed with SIGKILL in the middle of a batch of starts, then restarted: within one reconcile
//! interval there are no duplicate containers, no orphans and no workspace left `starting`. Then SIGTERM: it exits
//! promptly and leaves running workspaces running.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Service {
    child: Child,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(dir: &std::path::Path, instance: &str, port: u16) -> Service {
    let child = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .arg("serve")
        .env("WORKSPACE_BASE_PATH", dir.join("base"))
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("ws.db").display()))
        .env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}"))
        .env("WORKSPACED_INSTANCE", instance)
        .env("WORKSPACED_IMAGE", "workspaced/tiny:1")
        .env("WORKSPACED_RECONCILE_INTERVAL", "2s")
        .env("WORKSPACED_MAX_CONCURRENT_STARTS", "3")
        .env("WORKSPACED_STOP_GRACE", "1s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn workspaced");
    Service { child }
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("workspaced did not come up");
}

/// (student, container id, running) of this instance's containers.
fn containers(instance: &str) -> Vec<(String, String, bool)> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--no-trunc", "--filter", &format!("label=workspaced.instance={instance}")])
        .args(["--format", "{{.Label \"workspaced.student\"}} {{.ID}} {{.State}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((p.next()?.to_owned(), p.next()?.to_owned(), p.next()? == "running"))
        })
        .collect()
}

struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids: Vec<String> = containers(&self.0).into_iter().map(|c| c.1).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").arg("rm").arg("-f").args(ids).output();
        }
    }
}

#[tokio::test]
async fn a_sigkill_during_a_batch_of_starts_converges_after_restart_and_sigterm_leaves_workspaces_running() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("base")).unwrap();
    let instance = format!("crash{:06x}", rand::random::<u32>() & 0xffffff);
    let _cleanup = Cleanup(instance.clone());
    let port = free_port();
    // The operator's first step: an admin key, made by the CLI on the database itself (printed alone on stdout).
    let out = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["key", "create", "--role", "admin", "--label", "crash-test"])
        .env("DATABASE_URL", format!("sqlite://{}", dir.path().join("ws.db").display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("wsd_") && !key.contains(char::is_whitespace), "{key:?}");
    let mut svc = serve(dir.path(), &instance, port);
    wait_healthy(port).await;

    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    let client = reqwest::Client::builder().default_headers(auth).build().unwrap();
    let ids: Vec<String> = (0..12).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        let (client, url) = (client.clone(), format!("http://127.0.0.1:{port}/api/workspaces/{id}/start"));
        tokio::spawn(async move {
            let _ = client.post(url).send().await;
        });
    }
    // Kill it while starts are under way (3 at a time, a few hundred ms each): as soon as a `starting` record is
    // seen, so the kill provably lands in the middle of a start.
    let list = format!("http://127.0.0.1:{port}/api/workspaces?status=starting");
    let deadline = Instant::now() + Duration::from_secs(60);
    let in_flight = loop {
        let body: serde_json::Value = match client.get(&list).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let n = body["workspaces"].as_array().map_or(0, Vec::len);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "no start was ever seen in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    svc.child.kill().unwrap(); // SIGKILL
    svc.child.wait().unwrap();
    let at_kill = containers(&instance).len();
    println!("starts in flight at the kill: {in_flight}; containers at kill time: {at_kill}");
    assert!(in_flight >= 1, "the kill landed during a start");

    let port = free_port();
    let mut svc = serve(dir.path(), &instance, port);
    wait_healthy(port).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // one reconcile interval (2 s) and some slack

    let list: serde_json::Value =
        client.get(format!("http://127.0.0.1:{port}/api/workspaces")).send().await.unwrap().json().await.unwrap();
    let records: HashMap<String, serde_json::Value> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["student_id"].as_str().unwrap().to_owned(), w.clone()))
        .collect();
    let found = containers(&instance);
    let mut per_student: HashMap<&str, usize> = HashMap::new();
    for (s, cid, running) in &found {
        *per_student.entry(s).or_default() += 1;
        let rec = records.get(s).unwrap_or_else(|| panic!("orphan container for {s}"));
        assert_eq!(rec["status"], "running", "a container exists only for a running record: {rec}");
        assert_eq!(rec["container_id"].as_str(), Some(cid.as_str()));
        assert!(running);
    }
    assert!(per_student.values().all(|n| *n == 1), "no duplicates: {per_student:?}");
    for (id, rec) in &records {
        let status = rec["status"].as_str().unwrap();
        assert!(["running", "stopped", "failed"].contains(&status), "{id} left {status}");
        if status == "running" {
            assert!(found.iter().any(|c| &c.0 == id), "{id} running without a container");
        }
    }

    // Everyone can start now, and the service restarts cleanly on SIGTERM, leaving workspaces running.
    for id in &ids {
        let r = client.post(format!("http://127.0.0.1:{port}/api/workspaces/{id}/start")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let before: Vec<String> = containers(&instance).into_iter().map(|c| c.1).collect();
    assert_eq!(before.len(), ids.len());
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(svc.child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = svc.child.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let mut after: Vec<String> = containers(&instance).into_iter().filter(|c| c.2).map(|c| c.1).collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "workspaces keep running across a shutdown");
}
