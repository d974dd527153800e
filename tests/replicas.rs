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
    /// The database URL every replica uses.
    db: String,
    /// The environment every replica gets (but its own `WORKSPACED_LISTEN`).
    env: Vec<(String, String)>,
    /// Processes started so far, for each a log file of its own.
    spawned: usize,
}

impl Replicas {
    async fn start(n: usize) -> (Replicas, reqwest::Client) {
        Self::start_with(n, &[]).await
    }

    async fn start_with(n: usize, extra: &[(&str, &str)]) -> (Replicas, reqwest::Client) {
        Self::start_on(fresh_database().await, n, extra).await
    }

    /// `n` replicas on the database `db`.
    async fn start_on(db: String, n: usize, extra: &[(&str, &str)]) -> (Replicas, reqwest::Client) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        let instance = format!("rep{:06x}", rand::random::<u32>() & 0xffffff);
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", db.as_str()),
            ("WORKSPACE_BASE_PATH", &dir.path().join("base").display().to_string()),
            ("WORKSPACED_INSTANCE", &instance),
            ("WORKSPACED_SECRET_KEY", &hex(32)),
            ("WORKSPACED_IMAGE", "workspaced/tiny:1"),
            ("WORKSPACED_STOP_GRACE", "1s"),
            ("RUST_LOG", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut replicas = Replicas { children: Vec::new(), ports: Vec::new(), instance, dir, db, env, spawned: 0 };
        let out = replicas.command().args(["key", "create", "--role", "admin"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        for _ in 0..n {
            replicas.ports.push(free_port());
            let child = replicas.spawn(replicas.ports.len() - 1);
            replicas.children.push(child);
        }
        let mut auth = reqwest::header::HeaderMap::new();
        auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
        let client = reqwest::Client::builder().default_headers(auth).build().unwrap();
        for i in 0..n {
            replicas.wait_up(i).await;
        }
        (replicas, client)
    }

    /// The binary with every replica's environment.
    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("WORKSPACED_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts a `serve` process listening on replica `i`'s port.
    fn spawn(&mut self, i: usize) -> Child {
        let log = std::fs::File::create(self.dir.path().join(format!("replica-{}.log", self.spawned))).unwrap();
        self.spawned += 1;
        let mut cmd = self.command();
        cmd.arg("serve").env("WORKSPACED_LISTEN", format!("127.0.0.1:{}", self.ports[i]));
        cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
    }

    /// Replaces replica `i` by a new process on the same port (after it stopped), as a rolling deploy does.
    async fn respawn(&mut self, i: usize) {
        let _ = self.children[i].wait();
        self.children[i] = self.spawn(i);
        self.wait_up(i).await;
    }

    async fn wait_up(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = reqwest::get(self.url(i, "/healthz")).await.is_ok_and(|r| r.status() == 200);
            if up {
                return;
            }
            assert!(Instant::now() < deadline, "replica {i} did not come up: {}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    fn logs(&self) -> String {
        (0..self.spawned)
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("replica-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// Every container of this instance for `student`, running or not.
    fn containers(&self, student: &str) -> Vec<String> {
        support::instance_containers(&self.instance, &[format!("label=workspaced.student={student}")])
    }

    /// Sends SIGTERM to replica `i` (what a rolling deploy or `docker stop` does).
    fn terminate(&self, i: usize) {
        let pid = nix::unistd::Pid::from_raw(self.children[i].id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }

    /// `(student, kind, reason, at_ms)` of every event on record, oldest first.
    async fn events(&self) -> Vec<(String, String, Option<String>, i64)> {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::PgConnection::connect(&self.db).await.unwrap();
        sqlx::query("SELECT student_id, kind, reason, at_ms FROM events ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.terminate(i);
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
    const ROUNDS: usize = 50;
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
        // Stopped before the next round, so containers do not pile up on the engine.
        let r = client.post(replicas.url(round % 2, &format!("/api/workspaces/{student}/stop"))).send().await.unwrap();
        assert!(r.status().is_success(), "round {round}: stop {}", r.status());
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

/// Waits until every student in `students` has the settled status `want` on replica `i`.
async fn all_settled(replicas: &Replicas, client: &reqwest::Client, i: usize, students: &[String], want: &str) {
    for s in students {
        let got = settled(replicas, client, i, s).await;
        assert_eq!(got, want, "{s} on replica {i}\n{}", replicas.logs());
    }
}

/// Opens a launch link made on replica `made_on` at replica `opened_on`, like a browser; returns the cookie.
async fn session_via(
    replicas: &Replicas,
    client: &reqwest::Client,
    student: &str,
    made_on: usize,
    opened_on: usize,
) -> String {
    let r = client.post(replicas.url(made_on, &format!("/api/workspaces/{student}/launch"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let url: String = r.json::<serde_json::Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let (_, path) = url.split_once(&format!("127.0.0.1:{}", replicas.ports[made_on])).expect("a link to its replica");
    let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser.get(replicas.url(opened_on, path)).send().await.unwrap();
    assert_eq!(r.status(), 303, "the link opens on the other replica");
    r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned()
}

async fn heartbeat(replicas: &Replicas, client: &reqwest::Client, i: usize, student: &str) -> u16 {
    let body = serde_json::json!({ "student_id": student });
    client.post(replicas.url(i, "/api/workspaces/heartbeat")).json(&body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn heartbeats_and_the_ide_reach_a_workspace_through_either_replica_until_any_replica_stops_it() {
    let (replicas, client) = Replicas::start(2).await;
    let s = "either-1".to_owned();
    let r = client.post(replicas.url(0, &format!("/api/workspaces/{s}/start"))).send().await.unwrap();
    assert!(r.status().is_success());
    all_settled(&replicas, &client, 0, std::slice::from_ref(&s), "running").await;
    let started: serde_json::Value =
        client.get(replicas.url(0, &format!("/api/workspaces/{s}"))).send().await.unwrap().json().await.unwrap();
    // Started on 0; replica 1 takes its heartbeats and serves its IDE with a session made on 0.
    assert_eq!(heartbeat(&replicas, &client, 1, &s).await, 200, "{}", replicas.logs());
    let cookie = session_via(&replicas, &client, &s, 0, 1).await;
    for i in 0..2 {
        let r = reqwest::Client::new()
            .get(replicas.url(i, &format!("/w/{s}/healthz")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the IDE through replica {i}");
    }
    // Replica 1's heartbeat reached the record (its batch), though replica 0 started the workspace.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: serde_json::Value =
            client.get(replicas.url(0, &format!("/api/workspaces/{s}"))).send().await.unwrap().json().await.unwrap();
        if v["last_activity"].as_str() > started["last_activity"].as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "replica 1's heartbeat never reached the record: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stopped through replica 0: replica 1 refuses heartbeats at once and shows the launcher, not the IDE.
    let r = client.post(replicas.url(0, &format!("/api/workspaces/{s}/stop"))).send().await.unwrap();
    assert!(r.status().is_success());
    assert_eq!(heartbeat(&replicas, &client, 1, &s).await, 409, "{}", replicas.logs());
    let r = reqwest::Client::new()
        .get(replicas.url(1, &format!("/w/{s}/healthz")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200, "no IDE behind a stopped workspace");
}

#[tokio::test]
async fn max_running_and_max_concurrent_starts_are_totals_over_the_replicas() {
    let extra = [("WORKSPACED_MAX_RUNNING", "3"), ("WORKSPACED_MAX_CONCURRENT_STARTS", "1")];
    let (replicas, client) = Replicas::start_with(2, &extra).await;
    let students: Vec<String> = (0..6).map(|i| format!("cap-{i}")).collect();
    // Six starts at once, three to each replica.
    let sends = students.iter().enumerate().map(|(i, s)| {
        let (client, url) = (client.clone(), replicas.url(i % 2, &format!("/api/workspaces/{s}/start")));
        async move {
            let sent = Instant::now();
            let r = client.post(url).send().await.unwrap();
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body["error"]["code"].as_str().unwrap_or_default().to_owned(), sent, Instant::now())
        }
    });
    let results = futures_util::future::join_all(sends).await;
    // The race happened: requests sent before the first answer came all competed for the three places.
    let first_answer = results.iter().map(|r| r.3).min().unwrap();
    let competing = results.iter().filter(|r| r.2 < first_answer).count();
    assert!(competing >= 4, "only {competing} starts were in flight together");
    let admitted: Vec<&String> =
        students.iter().zip(&results).filter(|(_, r)| matches!(r.0, 200 | 202)).map(|(s, _)| s).collect();
    let refused = results.iter().filter(|r| r.0 == 429 && r.1 == "capacity_reached").count();
    assert_eq!((admitted.len(), refused), (3, 3), "{results:?}\n{}", replicas.logs());
    let admitted: Vec<String> = admitted.into_iter().cloned().collect();
    all_settled(&replicas, &client, 1, &admitted, "running").await;
    let running: usize = students.iter().map(|s| replicas.containers(s).len()).sum();
    assert_eq!(running, 3, "three containers in all");
    // One start at a time over both replicas: no two starting..started windows overlap.
    let events = replicas.events().await;
    let mut windows: Vec<(i64, i64)> = admitted
        .iter()
        .map(|s| {
            let at = |kind: &str| events.iter().find(|e| &e.0 == s && e.1 == kind).map(|e| e.3).unwrap();
            (at("starting"), at("started"))
        })
        .collect();
    windows.sort();
    for w in windows.windows(2) {
        assert!(w[0].1 <= w[1].0, "two starts at once across replicas: {windows:?}");
    }
}

/// What one replica's share of a load did.
#[derive(Default)]
struct Tally {
    /// Answers as expected.
    ok: std::sync::atomic::AtomicUsize,
    /// No answer at all (refused, reset): a replica that is stopping or not yet up.
    unanswered: std::sync::atomic::AtomicUsize,
    /// Answers that are errors, with what was asked.
    bad: std::sync::Mutex<Vec<String>>,
    /// Students started by this load.
    started: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn ok(&self) -> usize {
        self.ok.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn unanswered(&self) -> usize {
        self.unanswered.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn record(&self, what: String, answer: Result<u16, reqwest::Error>) {
        use std::sync::atomic::Ordering::SeqCst;
        match answer {
            Ok(200) => {
                self.ok.fetch_add(1, SeqCst);
            }
            Ok(code) => self.bad.lock().unwrap().push(format!("{what}: {code}")),
            Err(_) => {
                self.unanswered.fetch_add(1, SeqCst);
            }
        }
    }
}

/// Heartbeats, proxied requests and a new start now and then, to replica `i`, until `stop`.
async fn load(
    base: String,
    client: reqwest::Client,
    sessions: Vec<(String, String)>,
    tag: usize,
    tally: std::sync::Arc<Tally>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let browser = reqwest::Client::new();
    let mut round = 0;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        for (s, cookie) in &sessions {
            let body = serde_json::json!({ "student_id": s });
            let r = client.post(format!("{base}/api/workspaces/heartbeat")).json(&body).send().await;
            tally.record(format!("heartbeat {s}"), r.map(|r| r.status().as_u16()));
            let r = browser.get(format!("{base}/w/{s}/healthz")).header("cookie", cookie).send().await;
            tally.record(format!("proxy {s}"), r.map(|r| r.status().as_u16()));
        }
        if round % 20 == 0 {
            let s = format!("roll-{tag}-{round}");
            let r = client.post(format!("{base}/api/workspaces/{s}/start")).send().await;
            let answer = r.map(|r| r.status().as_u16());
            if answer.as_ref().is_ok_and(|c| *c == 200) {
                tally.started.lock().unwrap().push(s.clone());
            }
            tally.record(format!("start {s}"), answer);
        }
        round += 1;
    }
}

/// Waits until `tally` has `more` answers beyond what it had when called.
async fn served(tally: &Tally, more: usize, replicas: &Replicas) {
    let target = tally.ok() + more;
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.ok() < target {
        assert!(Instant::now() < deadline, "the load stalled at {} answers\n{}", tally.ok(), replicas.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rolling_restart_under_load_loses_no_workspace_and_fails_no_request_to_the_other_replica() {
    let (mut replicas, client) = Replicas::start(2).await;
    let students: Vec<String> = (0..3).map(|i| format!("roll-{i}")).collect();
    for (i, s) in students.iter().enumerate() {
        let r = client.post(replicas.url(i % 2, &format!("/api/workspaces/{s}/start"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut sessions = Vec::new();
    for (i, s) in students.iter().enumerate() {
        sessions.push((s.clone(), session_via(&replicas, &client, s, i % 2, 1 - i % 2).await));
    }
    let tallies = [std::sync::Arc::new(Tally::default()), std::sync::Arc::new(Tally::default())];
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = (0..2)
        .map(|i| {
            let base = replicas.url(i, "");
            tokio::spawn(load(base, client.clone(), sessions.clone(), i, tallies[i].clone(), stop.clone()))
        })
        .collect();
    // A rolling deploy: each replica in turn gets SIGTERM and is replaced, while both take the load.
    for restarting in [0, 1] {
        let other = 1 - restarting;
        served(&tallies[restarting], 100, &replicas).await;
        served(&tallies[other], 100, &replicas).await;
        replicas.terminate(restarting);
        // The other replica goes on answering while this one drains, exits and comes back.
        served(&tallies[other], 200, &replicas).await;
        replicas.respawn(restarting).await;
        served(&tallies[restarting], 100, &replicas).await;
        served(&tallies[other], 100, &replicas).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for l in loads {
        l.await.unwrap();
    }
    // The restarts happened under the load: each replica had requests that found it gone.
    for (i, t) in tallies.iter().enumerate() {
        assert!(t.unanswered() > 0, "replica {i} was never found down: the restart did not overlap the load");
        let bad = t.bad.lock().unwrap();
        assert!(bad.is_empty(), "replica {i} answered errors: {:?}\n{}", &bad[..bad.len().min(20)], replicas.logs());
    }
    // No workspace lost: every one started before or during the deploy runs, with one container.
    let mut all = students.clone();
    for t in &tallies {
        all.extend(t.started.lock().unwrap().iter().cloned());
    }
    assert!(all.len() > students.len(), "starts went on during the deploy");
    for s in &all {
        assert_eq!(settled(&replicas, &client, 0, s).await, "running", "{s}\n{}", replicas.logs());
        assert_eq!(replicas.containers(s).len(), 1, "{s}");
    }
}

/// A PostgreSQL server of this test's own (it is stopped and started again), removed when dropped.
struct OwnServer {
    url: String,
}

impl OwnServer {
    fn script(args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-postgres.sh");
        let out = Command::new(script).args(args).output().unwrap();
        assert!(out.status.success(), "ensure-postgres.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn start() -> Self {
        OwnServer { url: Self::script(&[]) }
    }

    /// The server goes away (a fast shutdown: every connection is cut, as in a failover; committed data stays).
    fn pause(&self) {
        Self::script(&["pause", &self.url]);
    }

    fn resume(&self) {
        Self::script(&["resume", &self.url]);
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ensure-postgres.sh");
        let _ = Command::new(script).args(["stop", &self.url]).output();
    }
}

#[tokio::test]
async fn a_database_outage_of_10_s_stops_no_workspace_and_everything_recovers_by_itself() {
    let server = OwnServer::start();
    let db = support::fresh_postgres_database(&server.url).await;
    let extra = [
        ("WORKSPACED_IDLE_TIMEOUT", "25s"),
        ("WORKSPACED_WARNING_LEAD", "3s"),
        ("WORKSPACED_CULL_INTERVAL", "1s"),
        ("WORKSPACED_LEASE_TTL", "3s"),
    ];
    let (replicas, client) = Replicas::start_on(db, 2, &extra).await;
    // Two workspaces kept alive by heartbeats through both replicas; one left idle, which must still be culled.
    let kept = ["outage-kept-0".to_owned(), "outage-kept-1".to_owned()];
    let idle = "outage-idle".to_owned();
    for (i, s) in kept.iter().chain([&idle]).enumerate() {
        let r = client.post(replicas.url(i % 2, &format!("/api/workspaces/{s}/start"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut sessions = Vec::new();
    for (i, s) in kept.iter().enumerate() {
        sessions.push(session_via(&replicas, &client, s, i % 2, 1 - i % 2).await);
    }
    let browser = reqwest::Client::new();
    // One round of what students do, through both replicas: heartbeats and IDE requests. Returns the failures.
    let round = || async {
        let mut failed = Vec::new();
        for i in 0..2 {
            for (s, cookie) in kept.iter().zip(&sessions) {
                let hb = heartbeat(&replicas, &client, i, s).await;
                let ide = browser.get(replicas.url(i, &format!("/w/{s}/healthz"))).header("cookie", cookie).send();
                let ide = ide.await.map(|r| r.status().as_u16()).unwrap_or(0);
                if hb != 200 || ide != 200 {
                    failed.push(format!("replica {i} {s}: heartbeat {hb}, IDE {ide}"));
                }
            }
        }
        failed
    };
    assert_eq!(round().await, Vec::<String>::new(), "before the outage");

    server.pause();
    let down = Instant::now();
    // Students notice nothing: heartbeats are taken (kept in memory) and the IDEs served from the cached routes.
    // For 10 s, and at least three rounds however slow the machine.
    let mut rounds = 0;
    while down.elapsed() < Duration::from_secs(10) || rounds < 3 {
        let failed = round().await;
        assert!(failed.is_empty(), "during the outage: {failed:?}\n{}", replicas.logs());
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Routes that need the store say so, with a code and a Retry-After.
    let r = client.get(replicas.url(0, "/api/workspaces/outage-kept-0")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    println!(
        "{rounds} rounds of heartbeats and IDE requests through both replicas in {:?} without the database",
        down.elapsed()
    );
    server.resume();

    // Everything comes back by itself: the store answers through both replicas again, one replica leads again.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..2 {
        loop {
            let r = client.get(replicas.url(i, "/api/workspaces/outage-kept-0")).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "replica {i} did not recover: {}", replicas.logs());
            assert!(round().await.is_empty());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The idle workspace is culled after the outage (the culler works again), the kept ones are not.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let failed = round().await;
        assert!(failed.is_empty(), "after the outage: {failed:?}\n{}", replicas.logs());
        let v: serde_json::Value =
            client.get(replicas.url(1, &format!("/api/workspaces/{idle}"))).send().await.unwrap().json().await.unwrap();
        if v["status"] == "stopped" {
            assert_eq!(v["stop_reason"], "idle", "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "the idle workspace was never culled: {v}\n{}", replicas.logs());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for s in &kept {
        assert_eq!(settled(&replicas, &client, 0, s).await, "running", "{s}\n{}", replicas.logs());
        assert_eq!(replicas.containers(s).len(), 1);
    }
    let stops: Vec<_> = replicas.events().await.into_iter().filter(|e| e.1 == "stopped" || e.1 == "warning").collect();
    assert!(stops.iter().all(|e| e.0 == idle), "only the idle workspace was warned or stopped: {stops:?}");
    let r = client.post(replicas.url(1, "/api/workspaces/outage-after/start")).send().await.unwrap();
    assert_eq!(r.status(), 200, "starts work again");
}

/// `(student, status)` of every workspace on record.
async fn statuses(db: &str) -> Vec<(String, String)> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(db).await.unwrap();
    let rows = sqlx::query("SELECT student_id, status FROM workspaces ORDER BY student_id").fetch_all(&mut conn).await;
    rows.unwrap().iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn kill_9_of_the_leader_during_a_sweep_leaves_no_workspace_half_stopped() {
    let extra = [
        ("WORKSPACED_IDLE_TIMEOUT", "6s"),
        ("WORKSPACED_WARNING_LEAD", "2s"),
        ("WORKSPACED_CULL_INTERVAL", "1s"),
        ("WORKSPACED_LEASE_TTL", "2s"),
        // busybox as PID 1 ignores SIGTERM: each stop takes the whole grace, so the sweep is long enough to hit.
        ("WORKSPACED_STOP_GRACE", "3s"),
        ("WORKSPACED_RECONCILE_INTERVAL", "2s"),
    ];
    let (mut replicas, client) = Replicas::start_with(2, &extra).await;
    let students: Vec<String> = (0..5).map(|i| format!("sweep-{i}")).collect();
    for (i, s) in students.iter().enumerate() {
        let r = client.post(replicas.url(i % 2, &format!("/api/workspaces/{s}/start"))).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // Nobody is active: the leader's sweep stops them one after the other. Kill it while one is being stopped.
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let stopping = statuses(&replicas.db).await.iter().any(|(_, st)| st == "stopping");
        if stopping {
            let mut leader = None;
            for i in 0..2 {
                if lease_of(&replicas, i).await.is_some_and(|(leads, _)| leads) {
                    leader = Some(i);
                }
            }
            if let Some(i) = leader {
                replicas.children[i].kill().unwrap();
                break i;
            }
        }
        assert!(Instant::now() < deadline, "no sweep began: {}", replicas.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = replicas.children[leader].wait();
    // The interleaving was hit: with the leader dead, a workspace is left half stopped.
    let half: Vec<String> =
        statuses(&replicas.db).await.into_iter().filter(|(_, st)| st == "stopping").map(|(s, _)| s).collect();
    assert!(!half.is_empty(), "the kill came between two stops; nothing was left half done");
    // The survivor takes over and finishes: every workspace stopped once, for being idle, with no container left.
    let survivor = 1 - leader;
    let deadline = Instant::now() + Duration::from_secs(90);
    for s in &students {
        while settled(&replicas, &client, survivor, s).await != "stopped" {
            assert!(Instant::now() < deadline, "{s} was never stopped\n{}", replicas.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while students.iter().any(|s| !replicas.containers(s).is_empty()) {
        assert!(Instant::now() < deadline, "containers left: {}", replicas.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events = replicas.events().await;
    for s in &students {
        let stops: Vec<_> = events.iter().filter(|e| &e.0 == s && e.1 == "stopped").collect();
        assert_eq!(stops.len(), 1, "{s} stopped once: {stops:?}");
        assert_eq!(stops[0].2.as_deref(), Some("idle"), "{s}: {stops:?}");
        let warnings = events.iter().filter(|e| &e.0 == s && e.1 == "warning").count();
        assert!(warnings <= 1, "{s} warned {warnings} times");
    }
    println!("half stopped at the kill: {half:?}");
}
