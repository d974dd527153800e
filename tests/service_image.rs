//! workspaced's own image, as the ECS deployment runs it: `workspaced image build --service` puts this build's
//! binary on the Debian base (built once, offline), and two replicas run as containers the way the task definition
//! runs them: host network, the Docker socket and the base path (at the same path) mounted, one PostgreSQL database
//! and one signing key, each replica on its own port. Needs the real engine and the PostgreSQL server
//! `scripts/test.sh` starts (`WORKSPACED_TEST_POSTGRES`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_workspaced");
const TINY: &str = "workspaced/tiny:1";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args))
}

/// `docker args...`, which must succeed; its stdout, trimmed.
fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(out.status.success(), "docker {args:?} failed: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `workspaced image build ...` with its scratch folder in `build_dir`.
fn image_build(build_dir: &Path, args: &[&str]) -> Output {
    run(Command::new(BIN).args(["image", "build"]).args(args).env("WORKSPACED_BUILD_DIR", build_dir))
}

/// Polls `f` until it gives `Some`, for at most `within` (a bound on waiting, not an assertion on speed).
async fn eventually<T>(within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The service image and two replica containers of one test, removed with everything they made when dropped (also
/// on a panic): the containers, the IDE containers of the instance, the image, the folders.
struct Deployment {
    image: String,
    containers: Vec<String>,
    ports: Vec<u16>,
    instance: String,
    /// The students' base path, mounted at the same path inside the containers.
    base: PathBuf,
    dir: tempfile::TempDir,
    /// Sends the admin key once there is one.
    admin: reqwest::Client,
    /// No key, no redirects: what a browser sends.
    browser: reqwest::Client,
}

impl Deployment {
    fn new() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        let instance = format!("img{:06x}", rand::random::<u32>() & 0xffffff);
        let browser = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Deployment {
            image: format!("workspaced/workspaced-test:{instance}"),
            containers: Vec::new(),
            ports: Vec::new(),
            instance,
            base,
            dir,
            admin: reqwest::Client::new(),
            browser,
        }
    }

    /// Runs replica `i` as the ECS task does, on its own loopback port.
    fn run_replica(&mut self, db: &str, secret: &str) {
        let i = self.containers.len();
        let port = free_port();
        let name = format!("wsd-{}-{i}", self.instance);
        let base = self.base.display().to_string();
        let env = [
            format!("DATABASE_URL={db}"),
            format!("WORKSPACE_BASE_PATH={base}"),
            format!("WORKSPACED_SECRET_KEY={secret}"),
            format!("WORKSPACED_INSTANCE={}", self.instance),
            format!("WORKSPACED_IMAGE={TINY}"),
            format!("WORKSPACED_LISTEN=127.0.0.1:{port}"),
            // The image has no iptables (as in compose.yaml and the ECS task: the host installs the rules).
            "WORKSPACED_EGRESS_RULES=off".to_owned(),
            "WORKSPACED_STOP_GRACE=1s".to_owned(),
        ];
        let mut args = vec!["run", "-d", "--name", name.as_str(), "--network", "host", "--stop-timeout", "60"];
        let (sock, data) = ("/var/run/docker.sock:/var/run/docker.sock".to_owned(), format!("{base}:{base}"));
        args.extend(["-v", sock.as_str(), "-v", data.as_str()]);
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        args.push(&self.image);
        docker_ok(&args);
        self.containers.push(name);
        self.ports.push(port);
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[i])
    }

    fn logs(&self) -> String {
        let each = self.containers.iter().map(|c| format!("--- {c}:\n{}", text(&docker(&["logs", "--tail", "60", c]))));
        each.collect::<Vec<_>>().join("\n")
    }

    /// Replica `i`'s `/readyz` JSON; `None` when it does not answer.
    async fn readyz(&self, i: usize) -> Option<Value> {
        reqwest::get(self.url(i, "/readyz")).await.ok()?.json().await.ok()
    }

    /// The student's record on replica `i`, once `done` holds for it.
    async fn wait_for(&self, i: usize, student: &str, done: impl Fn(&Value) -> bool) -> Value {
        let url = self.url(i, &format!("/api/workspaces/{student}"));
        let mut last = Value::Null;
        let found = eventually(Duration::from_secs(90), async || {
            last = self.admin.get(&url).send().await.ok()?.json().await.ok()?;
            done(&last).then(|| last.clone())
        })
        .await;
        found.unwrap_or_else(|| panic!("{student} on replica {i}: last {last}\n{}", self.logs()))
    }

    /// The one container of the instance for `student` (panics unless there is exactly one).
    fn ide_container(&self, student: &str) -> String {
        let ids = support::instance_containers(&self.instance, &[format!("label=workspaced.student={student}")]);
        assert_eq!(ids.len(), 1, "one IDE container for {student}: {ids:?}\n{}", self.logs());
        ids[0].clone()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.containers.iter().map(String::as_str));
            let _ = docker(&args);
        }
        support::remove_instance_containers(&self.instance);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

/// Which replica leads, once both answer and exactly one says so, and its fence; never two at once.
async fn single_leader(d: &Deployment) -> (usize, i64) {
    let mut seen = None;
    let mut samples = 0;
    let found = eventually(Duration::from_secs(90), async || {
        let (a, b) = (d.readyz(0).await?, d.readyz(1).await?);
        let (la, lb) = (a["leader"].as_bool()?, b["leader"].as_bool()?);
        assert!(!(la && lb), "two replicas lead at once: {a} {b}");
        seen = match (la, lb) {
            (true, false) => Some((0, a["lease_fence"].as_i64()?)),
            (false, true) => Some((1, b["lease_fence"].as_i64()?)),
            _ => None,
        };
        samples += usize::from(seen.is_some());
        // Several looks, a few renewals apart, all with one leader.
        (samples >= 5).then_some(seen)
    })
    .await;
    found.flatten().unwrap_or_else(|| panic!("never exactly one leader\n{}", d.logs()))
}

#[tokio::test]
async fn two_replicas_in_containers_of_the_service_image_share_students_sessions_and_the_lease() {
    let server = std::env::var("WORKSPACED_TEST_POSTGRES")
        .expect("WORKSPACED_TEST_POSTGRES names the test PostgreSQL server: run ./scripts/test.sh");
    let info = docker(&["info"]);
    assert!(info.status.success(), "no Docker engine answers (scripts/ensure-docker.sh): {}", text(&info));
    let mut d = Deployment::new();

    // The images: the tiny IDE and the service, both through the CLI; the Debian base is built once (cached by its
    // label), the service image from this build's binary.
    let build_dir = d.dir.path().join("image-build");
    let out = image_build(&build_dir, &["--tiny"]);
    assert!(out.status.success(), "image build --tiny: {}", text(&out));
    let out = image_build(&build_dir, &["--service", "--binary", BIN, "--tag", &d.image.clone()]);
    assert!(out.status.success(), "image build --service: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), d.image, "prints the tag it built");
    let scratch: Vec<_> =
        std::fs::read_dir(&build_dir).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(scratch.is_empty(), "the build leaves nothing in its scratch folder: {scratch:?}");
    let config = docker_ok(&["image", "inspect", "-f", "{{json .Config}}", &d.image]);
    let config: Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["Entrypoint"], serde_json::json!(["/usr/local/bin/workspaced"]), "{config}");
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]), "{config}");
    let env = config["Env"].to_string();
    assert!(env.contains("WORKSPACED_LISTEN=127.0.0.1:7878") && env.contains("WORKSPACE_BASE_PATH="), "{env}");

    // Two replicas, one database, one signing key.
    let db = support::fresh_postgres_database(&server).await;
    let secret = hex(32);
    d.run_replica(&db, &secret);
    d.run_replica(&db, &secret);
    for i in 0..2 {
        // Ready: the database and the engine (through the mounted socket) answer from inside the container.
        let ready = eventually(Duration::from_secs(90), async || {
            let healthy = reqwest::get(d.url(i, "/healthz")).await.ok()?.status() == 200;
            let r = d.readyz(i).await?;
            (healthy && r["ready"] == true && r["docker"] == "ok" && r["database"] == "ok").then_some(())
        })
        .await;
        assert!(ready.is_some(), "replica {i} never became ready: {:?}\n{}", d.readyz(i).await, d.logs());
    }
    let (leader, fence) = single_leader(&d).await;
    assert!(fence >= 1, "the leader holds the lease with a fence: {fence}");

    // An admin key made inside one container works on both replicas.
    let key = docker_ok(&["exec", &d.containers[0], "workspaced", "key", "create", "--role", "admin", "--label", "t"]);
    assert!(key.starts_with("wsd_"), "a key: {key}");
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    d.admin =
        reqwest::Client::builder().default_headers(auth).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for i in 0..2 {
        assert_eq!(d.admin.get(d.url(i, "/api/workspaces")).send().await.unwrap().status(), 200, "key on replica {i}");
        assert_eq!(reqwest::get(d.url(i, "/api/workspaces")).await.unwrap().status(), 401, "no key on replica {i}");
    }

    // A start through replica 0 runs the IDE with the student's host folder mounted; a file written in the IDE
    // lands on the host, survives a stop through replica 1, and is there again after another start.
    let student = "ecs-alice";
    let r = d.admin.post(d.url(0, &format!("/api/workspaces/{student}/start"))).send().await.unwrap();
    assert!(r.status().is_success(), "start on replica 0: {}", r.status());
    d.wait_for(1, student, |w| w["status"] == "running").await;
    let ide = d.ide_container(student);
    docker_ok(&["exec", "-u", "1000:1000", &ide, "sh", "-c", "echo kept > /home/coder/project/notes.txt"]);
    let on_host = d.base.join(student).join("notes.txt");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap_or_default(), "kept\n", "the IDE wrote into the host folder");

    let r = d.admin.post(d.url(1, &format!("/api/workspaces/{student}/stop"))).send().await.unwrap();
    assert!(r.status().is_success(), "stop on replica 1: {}", r.status());
    d.wait_for(0, student, |w| w["status"] == "stopped").await;
    let gone = eventually(Duration::from_secs(60), async || {
        support::instance_containers(&d.instance, &[format!("label=workspaced.student={student}")])
            .is_empty()
            .then_some(())
    });
    assert!(gone.await.is_some(), "the stop removed the IDE container\n{}", d.logs());
    assert_eq!(std::fs::read_to_string(&on_host).unwrap_or_default(), "kept\n", "the stop kept the file");

    let r = d.admin.post(d.url(1, &format!("/api/workspaces/{student}/start"))).send().await.unwrap();
    assert!(r.status().is_success(), "start again on replica 1: {}", r.status());
    d.wait_for(0, student, |w| w["status"] == "running").await;
    let ide = d.ide_container(student);
    assert_eq!(docker_ok(&["exec", &ide, "cat", "/home/coder/project/notes.txt"]), "kept", "the file after a start");

    // A launch link made on one replica, opened on the other: the session cookie it sets works on both, and the
    // IDE answers through either proxy.
    let r = d.admin.post(d.url(0, &format!("/api/workspaces/{student}/launch"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let link = r.json::<Value>().await.unwrap()["url"].as_str().unwrap().to_owned();
    let on_1 = link.replace(&format!("127.0.0.1:{}", d.ports[0]), &format!("127.0.0.1:{}", d.ports[1]));
    assert_ne!(on_1, link, "the link names replica 0's address: {link}");
    let r = d.browser.get(&on_1).send().await.unwrap();
    assert_eq!(r.status(), 303, "replica 1 redeems replica 0's launch link");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    assert!(cookie.starts_with("workspaced_session="), "{cookie}");
    for i in [1, 0] {
        let r =
            d.browser.get(d.url(i, &format!("/w/{student}/healthz"))).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(r.status(), 200, "the IDE through replica {i}'s proxy");
        assert_eq!(r.text().await.unwrap(), "ok\n");
    }
    // The link was used once, on replica 1; replica 0 knows it too.
    let r = d.browser.get(&link).send().await.unwrap();
    assert_ne!(r.status(), 303, "a launch link works once, across replicas");

    // SIGTERM to the leader's container (docker stop, as ECS stops a task): it exits by itself and gives up the
    // lease; the other replica leads with a higher fence.
    let survivor = 1 - leader;
    let stopped = Instant::now();
    docker_ok(&["stop", "-t", "60", &d.containers[leader]]);
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &d.containers[leader]]);
    assert_eq!(code, "0", "the leader exited on SIGTERM by itself, not killed\n{}", d.logs());
    let mut last = None;
    let taken = eventually(Duration::from_secs(120), async || {
        last = d.readyz(survivor).await;
        let r = last.as_ref()?;
        (r["leader"] == true).then(|| r["lease_fence"].as_i64()).flatten()
    })
    .await;
    let new_fence = taken.unwrap_or_else(|| panic!("replica {survivor} never took over: {last:?}\n{}", d.logs()));
    assert!(new_fence > fence, "a new holder has a higher fence: {new_fence} after {fence}");
    println!(
        "replica {survivor} leads {:?} after docker stop of replica {leader} (fence {fence} -> {new_fence})",
        stopped.elapsed()
    );
    // The survivor still serves the running workspace.
    let r = d.browser.get(d.url(survivor, &format!("/w/{student}/healthz"))).header("cookie", &cookie).send().await;
    assert_eq!(r.unwrap().status(), 200, "the IDE through the survivor");
}

#[test]
fn image_build_service_refuses_a_binary_that_is_missing_or_not_executable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-binary");
    let out = image_build(dir.path(), &["--service", "--binary", missing.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --binary ") && err.contains("no-such-binary"), "{err}");

    let plain = dir.path().join("plain");
    std::fs::write(&plain, "not a program").unwrap();
    let out = image_build(dir.path(), &["--service", "--binary", plain.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: --binary ") && err.contains("not executable"), "{err}");

    let out = image_build(dir.path(), &["--service", "--binary", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a file"), "{}", text(&out));

    let out = image_build(dir.path(), &["--service", "--tag", ""]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: --tag is empty"), "{}", text(&out));

    // --binary belongs to --service; --tiny and --service exclude each other.
    let out = image_build(dir.path(), &["--binary", BIN]);
    assert!(!out.status.success(), "{}", text(&out));
    let out = image_build(dir.path(), &["--service", "--tiny"]);
    assert!(!out.status.success(), "{}", text(&out));
}
