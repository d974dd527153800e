//! DockerRuntime against the real engine on this machine, with the small `workspaced/tiny:1` image (busybox httpd on
//! 8080 answering /healthz, running as 1000:1000). Each test has its own random instance id, so tests run in
//! parallel without seeing each other, and a guard removes every container of its instance even when it fails.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use workspaced::domain::{IdeSecret, InstanceId, StudentId};
use workspaced::runtime::docker::DockerRuntime;
use workspaced::runtime::{
    container_name, ContainerSpec, Hardening, Runtime, RuntimeError, SecretEnv, LABEL_INSTANCE, LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE, LABEL_SECRET_ENV, LABEL_STUDENT,
};

const IMAGE: &str = "workspaced/tiny:1";
const MOUNT: &str = "/home/coder/project";
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_secs(1);
const MEMORY: i64 = 256 * 1024 * 1024;

fn hex() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// One test's world: an instance id nobody else uses, a host folder owned by 1000:1000, and cleanup on drop.
struct World {
    instance: InstanceId,
    dir: tempfile::TempDir,
    /// Containers made outside the runtime (by name), removed on drop along with the instance's.
    extra: Vec<String>,
}

impl World {
    fn new() -> Self {
        let instance = InstanceId::parse(&format!("t{}", hex())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
        Self { instance, dir, extra: Vec::new() }
    }

    async fn runtime(&self) -> DockerRuntime {
        DockerRuntime::connect(self.instance.clone(), CALL_TIMEOUT).await.expect("the engine is reachable")
    }

    fn student(&self, prefix: &str) -> StudentId {
        StudentId::parse(&format!("{prefix}-{}", hex())).unwrap()
    }

    /// A per-student host folder, owned by the container user.
    fn home(&self, student: &StudentId) -> PathBuf {
        let home = self.dir.path().join(student.as_str());
        std::fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
        home
    }

    fn spec(&self, student: &StudentId) -> ContainerSpec {
        let labels = BTreeMap::from([
            (LABEL_MANAGED_BY.to_owned(), LABEL_MANAGED_BY_VALUE.to_owned()),
            (LABEL_STUDENT.to_owned(), student.to_string()),
            (LABEL_INSTANCE.to_owned(), self.instance.to_string()),
        ]);
        ContainerSpec {
            student: student.clone(),
            name: container_name(&self.instance, student),
            image: IMAGE.to_owned(),
            command: Vec::new(),
            env: vec!["WORKSPACED_TEST=1".to_owned()],
            host_dir: self.home(student),
            mount_target: MOUNT.to_owned(),
            state_dir: None,
            container_port: 8080,
            user: "1000:1000".to_owned(),
            nano_cpus: 1_000_000_000,
            memory_bytes: MEMORY,
            memory_swap_bytes: MEMORY,
            pids_limit: 128,
            labels,
            hardening: Hardening { cap_drop_all: true, nofile: 4096, tmp_size: Some(64 << 20), read_only_root: false },
            secret: Some(SecretEnv { name: "IDE_SECRET".to_owned(), value: IdeSecret::from_random(rand::random()) }),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let filter = format!("label={LABEL_INSTANCE}={}", self.instance);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let mut targets: Vec<String> = ids.split_whitespace().map(str::to_owned).collect();
        targets.extend(self.extra.iter().cloned());
        if !targets.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(targets.iter().map(String::as_str));
            let _ = Command::new("docker").args(&args).output();
        }
    }
}

/// Runs the docker CLI and returns its stdout (empty on failure).
fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker inspect` of one container as JSON, or None if it does not exist.
fn docker_inspect(name_or_id: &str) -> Option<serde_json::Value> {
    let out = Command::new("docker").args(["inspect", name_or_id]).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.pop()
}

fn instance_containers(instance: &InstanceId) -> Vec<String> {
    let filter = format!("label={LABEL_INSTANCE}={instance}");
    docker(&["ps", "-aq", "--filter", &filter]).split_whitespace().map(str::to_owned).collect()
}

/// GET /healthz on the loopback port until it answers, for up to 10 s (httpd needs a moment after start).
async fn healthz_status(port: u16) -> u16 {
    let url = format!("http://127.0.0.1:{port}/healthz");
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match reqwest::get(&url).await {
            Ok(resp) => return resp.status().as_u16(),
            Err(e) if Instant::now() > until => panic!("{url} never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn ensure_running_creates_a_labelled_limited_loopback_container_and_is_idempotent() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("alice");
    let spec = world.spec(&student);

    let first = rt.ensure_running(&spec).await.unwrap();
    assert!(first.running);
    assert_eq!(first.state, "running");
    assert_eq!(first.name, spec.name);
    assert_eq!(first.student, student);
    let port = first.host_port.expect("a published port");
    let secret = spec.secret.clone().unwrap().value;
    assert_eq!(first.secret.as_ref(), Some(&secret), "the secret is read back from the container");

    // Another start's spec has another secret; the container that runs keeps its own, and says which.
    let again = world.spec(&student);
    assert_ne!(again.secret, spec.secret);
    let second = rt.ensure_running(&again).await.unwrap();
    assert_eq!(second.id, first.id, "a running container is returned untouched");
    assert_eq!(second.host_port, Some(port));
    assert_eq!(second.secret.as_ref(), Some(&secret));
    assert_eq!(rt.inspect(&student).await.unwrap(), Some(first.clone()));

    let c = docker_inspect(&first.id).expect("the container exists");
    let host = &c["HostConfig"];
    assert_eq!(host["NanoCpus"], 1_000_000_000i64);
    assert_eq!(host["Memory"], MEMORY);
    assert_eq!(host["MemorySwap"], MEMORY);
    assert_eq!(host["PidsLimit"], 128);
    assert_eq!(host["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(host["RestartPolicy"]["Name"], "no");
    assert_eq!(host["Init"], false);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["Ulimits"], serde_json::json!([{"Name": "nofile", "Soft": 4096, "Hard": 4096}]));
    assert_eq!(host["Tmpfs"]["/tmp"], format!("rw,nosuid,nodev,mode=1777,size={}", 64 << 20));
    assert_eq!(host["ReadonlyRootfs"], false);
    let bind = format!("{}:{MOUNT}:rw", std::fs::canonicalize(&spec.host_dir).unwrap().display());
    assert_eq!(host["Binds"], serde_json::json!([bind]));
    assert_eq!(host["PortBindings"]["8080/tcp"][0]["HostIp"], "127.0.0.1");
    assert_eq!(c["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostIp"], "127.0.0.1");
    assert_eq!(c["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"], port.to_string());
    assert_eq!(c["Config"]["User"], "1000:1000");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels[LABEL_MANAGED_BY], LABEL_MANAGED_BY_VALUE);
    assert_eq!(labels[LABEL_INSTANCE], world.instance.as_str());
    assert_eq!(labels[LABEL_STUDENT], student.as_str());
    assert_eq!(labels["workspaced.port"], "8080");
    assert_eq!(labels[LABEL_SECRET_ENV], "IDE_SECRET");
    let env: Vec<&str> = c["Config"]["Env"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(env.contains(&format!("IDE_SECRET={}", secret.expose()).as_str()), "{env:?}");

    assert_eq!(healthz_status(port).await, 200);

    let listed = rt.list_owned().await.unwrap();
    assert_eq!(listed, vec![workspaced::runtime::ContainerInfo { secret: None, ..first }], "a listing has no secrets");
}

#[tokio::test]
async fn stop_removes_the_container_and_keeps_host_files() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("bob");
    let spec = world.spec(&student);
    let info = rt.ensure_running(&spec).await.unwrap();

    let out =
        Command::new("docker").args(["exec", &info.id, "sh", "-c", &format!("echo hi > {MOUNT}/f")]).output().unwrap();
    assert!(out.status.success(), "exec failed: {}", String::from_utf8_lossy(&out.stderr));

    rt.stop(&student, GRACE).await.unwrap();
    assert!(docker_inspect(&info.id).is_none(), "the container is gone");
    assert_eq!(rt.inspect(&student).await.unwrap(), None);
    assert!(rt.list_owned().await.unwrap().is_empty());

    let file = spec.host_dir.join("f");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi\n");
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 1000);

    rt.stop(&student, GRACE).await.expect("stopping again succeeds");
    rt.stop(&world.student("nobody"), GRACE).await.expect("stopping a student without a container succeeds");
}

#[tokio::test]
async fn a_container_that_is_not_running_is_replaced_by_a_fresh_one() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("carol");
    let spec = world.spec(&student);
    let old = rt.ensure_running(&spec).await.unwrap();

    docker(&["stop", "-t", "1", &old.id]);
    let stopped = rt.inspect(&student).await.unwrap().expect("still there, stopped");
    assert!(!stopped.running);
    assert_eq!(stopped.state, "exited");
    assert_eq!(stopped.host_port, None);
    let listed = rt.list_owned().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].running);

    let new = rt.ensure_running(&spec).await.unwrap();
    assert_ne!(new.id, old.id);
    assert!(new.running);
    assert!(docker_inspect(&old.id).is_none(), "the old container was removed");
    assert_eq!(healthz_status(new.host_port.unwrap()).await, 200);
}

#[tokio::test]
async fn remove_by_id_removes_our_container_whatever_its_student() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("dave");
    let info = rt.ensure_running(&world.spec(&student)).await.unwrap();

    rt.remove_by_id(&info.id, GRACE).await.unwrap();
    assert!(docker_inspect(&info.id).is_none());
    rt.remove_by_id(&info.id, GRACE).await.expect("removing a vanished container succeeds");
}

#[tokio::test]
async fn containers_of_other_instances_and_unlabelled_ones_are_never_listed_or_stopped() {
    let mut world = World::new();
    let rt = world.runtime().await;

    let other_instance = InstanceId::parse(&format!("o{}", hex())).unwrap();
    let other_student = world.student("eve");
    let other_name = container_name(&other_instance, &other_student);
    world.extra.push(other_name.clone());
    let other_id = docker(&[
        "run",
        "-d",
        "--name",
        &other_name,
        "--label",
        &format!("{LABEL_MANAGED_BY}={LABEL_MANAGED_BY_VALUE}"),
        "--label",
        &format!("{LABEL_INSTANCE}={other_instance}"),
        "--label",
        &format!("{LABEL_STUDENT}={other_student}"),
        IMAGE,
    ]);
    assert!(!other_id.is_empty(), "docker run of the other instance's container");

    // An unlabelled container squatting on the name our student would get.
    let squatted = world.student("frank");
    let squat_name = container_name(&world.instance, &squatted);
    world.extra.push(squat_name.clone());
    let squat_id = docker(&["run", "-d", "--name", &squat_name, IMAGE]);
    assert!(!squat_id.is_empty(), "docker run of the unlabelled container");

    let ours = world.student("grace");
    let mine = rt.ensure_running(&world.spec(&ours)).await.unwrap();

    let listed = rt.list_owned().await.unwrap();
    // A listing carries no secrets (only an inspect reads them).
    assert_eq!(
        listed,
        vec![workspaced::runtime::ContainerInfo { secret: None, ..mine }],
        "only our instance's container is listed"
    );

    match rt.ensure_running(&world.spec(&squatted)).await {
        Err(RuntimeError::Conflict(name)) => assert_eq!(name, squat_name),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(rt.stop(&squatted, GRACE).await, Err(RuntimeError::Conflict(_))));
    assert!(matches!(rt.inspect(&squatted).await, Err(RuntimeError::Conflict(_))));
    assert!(matches!(rt.remove_by_id(&squat_id, GRACE).await, Err(RuntimeError::Conflict(_))));
    assert!(matches!(rt.remove_by_id(&other_id, GRACE).await, Err(RuntimeError::Conflict(_))));

    for id in [&squat_id, &other_id] {
        let c = docker_inspect(id).expect("foreign container still exists");
        assert_eq!(c["State"]["Running"], true, "foreign container still running");
    }
    // The other instance's student has no container of *ours*.
    assert_eq!(rt.inspect(&other_student).await.unwrap(), None);
}

#[tokio::test]
async fn a_missing_image_is_reported_as_image_missing_and_leaves_nothing() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("heidi");
    let mut spec = world.spec(&student);
    spec.image = format!("workspaced/does-not-exist:{}", hex());

    match rt.ensure_running(&spec).await {
        Err(RuntimeError::ImageMissing(image)) => assert_eq!(image, spec.image),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    assert!(instance_containers(&world.instance).is_empty());
    assert_eq!(rt.inspect(&student).await.unwrap(), None);
    assert!(!rt.image_present(&spec.image).await.unwrap());
    assert!(rt.image_present(IMAGE).await.unwrap());
}

#[tokio::test]
async fn a_failing_start_leaves_nothing_behind() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("ivan");
    let mut spec = world.spec(&student);
    // Created fine, refused at start: the engine cannot resolve this user in the image.
    spec.user = "nosuchuser".to_owned();

    match rt.ensure_running(&spec).await {
        Err(RuntimeError::Engine(message)) => assert!(message.contains("nosuchuser"), "{message}"),
        other => panic!("expected Engine error, got {other:?}"),
    }
    assert!(instance_containers(&world.instance).is_empty());
}

#[tokio::test]
async fn a_host_folder_that_does_not_exist_is_refused_before_creating_anything() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("judy");
    let mut spec = world.spec(&student);
    spec.host_dir = world.dir.path().join("missing");

    assert!(matches!(rt.ensure_running(&spec).await, Err(RuntimeError::Engine(_))));
    assert!(instance_containers(&world.instance).is_empty());
}

#[tokio::test]
async fn a_lazy_runtime_connects_and_negotiates_on_first_use() {
    let world = World::new();
    let rt = DockerRuntime::connect_lazy(world.instance.clone(), CALL_TIMEOUT).unwrap();
    rt.ping().await.unwrap();
    assert!(rt.list_owned().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable_not_a_hang() {
    let world = World::new();
    let socket = Path::new("/tmp").join(format!("workspaced-nonexistent-{}.sock", hex()));
    let rt = DockerRuntime::connect_lazy_at(&socket, world.instance.clone(), Duration::from_secs(2)).unwrap();

    assert!(matches!(rt.ping().await, Err(RuntimeError::Unavailable(_))));
    assert!(matches!(rt.list_owned().await, Err(RuntimeError::Unavailable(_))));
    assert!(matches!(rt.stop(&world.student("kim"), GRACE).await, Err(RuntimeError::Unavailable(_))));
}

#[tokio::test]
async fn an_engine_that_never_answers_times_out_as_unavailable() {
    let world = World::new();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    // Accepts connections and holds them open without ever answering.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let rt = DockerRuntime::connect_lazy_at(&socket, world.instance.clone(), Duration::from_millis(500)).unwrap();

    // The engine never answers, so only the call's own timeout can end the ping: `Unavailable` proves it fired.
    assert!(matches!(rt.ping().await, Err(RuntimeError::Unavailable(_))));
    silent.abort();
}

/// Runs `sh -c script` in the container as its own user and returns stdout.
fn exec(id: &str, script: &str) -> String {
    docker(&["exec", id, "sh", "-c", script])
}

#[tokio::test]
async fn a_hardened_container_has_no_capabilities_a_file_limit_a_tmpfs_and_optionally_a_read_only_root() {
    let world = World::new();
    let rt = world.runtime().await;
    let student = world.student("hard");
    let mut spec = world.spec(&student);
    spec.hardening.read_only_root = true;
    let info = rt.ensure_running(&spec).await.unwrap();
    // What the student's terminal would see.
    let caps = exec(&info.id, "grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status");
    assert_eq!(caps.lines().count(), 3, "{caps}");
    assert!(caps.lines().all(|l| l.ends_with("0000000000000000")), "capabilities left: {caps}");
    assert_eq!(exec(&info.id, "ulimit -n").trim(), "4096");
    let mounts = exec(&info.id, "grep ' /tmp ' /proc/mounts");
    assert!(mounts.starts_with("tmpfs /tmp tmpfs") && mounts.contains("size=65536k"), "{mounts}");
    assert_eq!(exec(&info.id, "echo x > /tmp/t && cat /tmp/t").trim(), "x", "/tmp is writable");
    assert_eq!(exec(&info.id, "echo x > /home/coder/project/p && cat /home/coder/project/p").trim(), "x");
    let root = exec(&info.id, "touch /etc/nope 2>&1 || echo refused");
    assert!(root.contains("refused") && root.contains("Read-only"), "the root file system is read-only: {root}");
}
