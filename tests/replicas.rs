//! Two real `workspaced serve` replicas on one PostgreSQL database, one base path, one Docker engine and one
//! signing key: starts of one student sent to both at once give exactly one container, because each student's
//! operations are serialized through the database. Needs the PostgreSQL server `scripts/test.sh` starts
//! (`WORKSPACED_TEST_POSTGRES`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_workspaced");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn fresh_database() -> String {
    let server = std::env::var("WORKSPACED_TEST_POSTGRES")
        .expect("WORKSPACED_TEST_POSTGRES names the test PostgreSQL server: run ./scripts/test.sh");
    support::fresh_postgres_database(&server).await
}

struct Replicas {
    children: Vec<Child>,
    ports: Vec<u16>,
    instance: String,
    dir: tempfile::TempDir,
}

impl Replicas {
    async fn start(n: usize) -> (Replicas, reqwest::Client) {
        Self::start_with(n, &[]).await
    }

    async fn start_with(n: usize, extra: &[(&str, &str)]) -> (Replicas, reqwest::Client) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        let db = fresh_database().await;
        let instance = format!("rep{:06x}", rand::random::<u32>() & 0xffffff);
        let secret = hex(32);
        let env = |cmd: &mut Command| {
            cmd.env("DATABASE_URL", &db)
                .env("WORKSPACE_BASE_PATH", dir.path().join("base"))
                .env("WORKSPACED_INSTANCE", &instance)
                .env("WORKSPACED_SECRET_KEY", &secret)
                .env("WORKSPACED_IMAGE", "workspaced/tiny:1")
                .env("WORKSPACED_STOP_GRACE", "1s")
                .env("RUST_LOG", "info")
                .env_remove("WORKSPACED_CONFIG");
            for (k, v) in extra {
                cmd.env(k, v);
            }
        };
        let mut key = Command::new(BIN);
        key.args(["key", "create", "--role", "admin"]);
        env(&mut key);
        let out = key.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let mut children = Vec::new();
        let mut ports = Vec::new();
        for i in 0..n {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join(format!("replica-{i}.log"))).unwrap();
            let mut cmd = Command::new(BIN);
            cmd.arg("serve").env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}")).stdout(Stdio::null()).stderr(log);
            env(&mut cmd);
            children.push(cmd.spawn().unwrap());
            ports.push(port);
        }
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        let client = reqwest::Client::builder().default_headers(auth).build().unwrap();
        let replicas = Replicas { children, ports, instance, dir };
        for port in &replicas.ports {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let up =
                    reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.is_ok_and(|r| r.status() == 200);
                if up {
                    break;
                }
                assert!(Instant::now() < deadline, "replica on {port} did not come up: {}", replicas.logs());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        (replicas, client)
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    fn logs(&self) -> String {
        (0..self.ports.len())
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("replica-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Every container of this instance for `student`, running or not.
    fn containers(&self, student: &str) -> Vec<String> {
        support::instance_containers(&self.instance, &[format!("label=workspaced.student={student}")])
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        support::remove_instance_containers(&self.instance);
    }
}

fn hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

#[tokio::test]
async fn starts_of_one_student_on_two_replicas_at_once_give_one_container() {
    let (replicas, client) = Replicas::start(2).await;
    const ROUNDS: usize = 20;
    let mut overlapped = 0;
    let mut duplicates = Vec::new();
    for round in 0..ROUNDS {
        let student = format!("race-{round}");
        let path = format!("/api/workspaces/{student}/start");
        // Both requests leave together; each records when it was sent and when it was answered.
        let send = |i: usize| {
            let (client, url) = (client.clone(), replicas.url(i, &path));
            async move {
                let sent = Instant::now();
                let r = client.post(url).send().await.unwrap();
                (r.status().as_u16(), sent, Instant::now())
            }
        };
        let ((a, a_sent, a_done), (b, b_sent, b_done)) = tokio::join!(send(0), send(1));
        assert!(matches!(a, 200 | 202) && matches!(b, 200 | 202), "round {round}: {a} {b}\n{}", replicas.logs());
        // The race happened when both requests were in flight at once: each sent before the other was answered.
        if a_sent.max(b_sent) < a_done.min(b_done) {
            overlapped += 1;
        }
        // Whatever each replica answered, the student ends with one container and a running record on both.
        for i in 0..2 {
            let url = replicas.url(i, &format!("/api/workspaces/{student}"));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let v: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
                if v["status"] == "running" {
                    break;
                }
                assert!(Instant::now() < deadline, "round {round}: {v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let containers = replicas.containers(&student);
        if containers.len() != 1 {
            duplicates.push((round, containers));
        }
    }
    assert_eq!(overlapped, ROUNDS, "every round raced the two replicas");
    assert!(duplicates.is_empty(), "rounds with other than one container: {duplicates:?}");
}

/// The student's settled record status (not `queued`, `starting` or `stopping`), as replica `i` reports it.
async fn settled(replicas: &Replicas, client: &reqwest::Client, i: usize, student: &str) -> String {
    let url = replicas.url(i, &format!("/api/workspaces/{student}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        let status = v["status"].as_str().unwrap_or_default().to_owned();
        if !matches!(status.as_str(), "queued" | "starting" | "stopping") {
            return status;
        }
        assert!(Instant::now() < deadline, "{student} never settled: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_stop_on_one_replica_during_a_start_on_the_other_leaves_record_and_engine_in_agreement() {
    let (replicas, client) = Replicas::start(2).await;
    const ROUNDS: usize = 15;
    let mut overlapped = 0;
    let mut disagreements = Vec::new();
    for round in 0..ROUNDS {
        let student = format!("flip-{round}");
        let r = client.post(replicas.url(0, &format!("/api/workspaces/{student}/start"))).send().await.unwrap();
        assert!(r.status().is_success());
        assert_eq!(settled(&replicas, &client, 0, &student).await, "running");
        // A start on replica 0 (of a running workspace: it checks the container) and a stop on replica 1, at once.
        let call = |i: usize, verb: &'static str| {
            let (client, url) = (client.clone(), replicas.url(i, &format!("/api/workspaces/{student}/{verb}")));
            async move {
                let sent = Instant::now();
                let r = client.post(url).send().await.unwrap();
                (r.status().as_u16(), sent, Instant::now())
            }
        };
        // The stop first, then the start: a start that finds the workspace stopping must wait for the stop.
        let ((stop, s_sent, s_done), (start, t_sent, t_done)) = tokio::join!(call(1, "stop"), call(0, "start"));
        assert!(stop < 500 && start < 500, "round {round}: stop {stop}, start {start}\n{}", replicas.logs());
        if s_sent.max(t_sent) < s_done.min(t_done) {
            overlapped += 1;
        }
        let status = settled(&replicas, &client, 0, &student).await;
        let on_1 = settled(&replicas, &client, 1, &student).await;
        let containers = replicas.containers(&student);
        let agree = status == on_1
            && match status.as_str() {
                "running" => containers.len() == 1,
                _ => containers.is_empty(),
            };
        if !agree {
            disagreements.push((round, status, on_1, containers));
        }
    }
    assert_eq!(overlapped, ROUNDS, "every round raced the two replicas");
    assert!(disagreements.is_empty(), "record and engine disagree: {disagreements:?}");
}

/// Replica `i`'s view of the lease from `/readyz`: (leads, fence); `None` when it does not answer.
async fn lease_of(replicas: &Replicas, i: usize) -> Option<(bool, i64)> {
    let r = reqwest::get(replicas.url(i, "/readyz")).await.ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    Some((v["leader"].as_bool()?, v["lease_fence"].as_i64()?))
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_after_kill_9_with_a_higher_fence() {
    let (mut replicas, _client) = Replicas::start_with(2, &[("WORKSPACED_LEASE_TTL", "2s")]).await;
    // Exactly one leader, seen from both, over several renewals.
    let mut leader = None;
    let mut samples = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while samples < 20 {
        assert!(Instant::now() < deadline, "no single leader: {}", replicas.logs());
        let (a, b) = (lease_of(&replicas, 0).await.unwrap(), lease_of(&replicas, 1).await.unwrap());
        assert!(!(a.0 && b.0), "two replicas lead at once: {a:?} {b:?}");
        match (a.0, b.0) {
            (true, false) => leader = Some((0, a.1)),
            (false, true) => leader = Some((1, b.1)),
            _ => {}
        }
        if leader.is_some() {
            samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (dead, fence) = leader.unwrap();
    let survivor = 1 - dead;
    assert!(fence >= 1);

    // The leader dies without a word; the survivor takes the lease once it runs out.
    replicas.children[dead].kill().unwrap();
    let killed = Instant::now();
    let mut taken = None;
    while Instant::now() < killed + Duration::from_secs(60) {
        if let Some((true, f)) = lease_of(&replicas, survivor).await {
            taken = Some(f);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_fence = taken.unwrap_or_else(|| panic!("no takeover: {}", replicas.logs()));
    assert!(new_fence > fence, "a new holder has a higher fence: {new_fence} after {fence}");
    println!("takeover after {:?} (lease 2 s), fence {fence} -> {new_fence}", killed.elapsed());
}
