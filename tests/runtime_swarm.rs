//! SwarmRuntime against a real single-node swarm on this machine (`docker swarm init --advertise-addr 127.0.0.1`,
//! made and left by scripts/test.sh), with the small `workspaced/tiny:1` image: the runtime contract as
//! tests/runtime_docker.rs checks it for plain Docker, plus what is Swarm's own (the service's spec, the host-mode
//! port, placement, a failed task, the isolated network). Each test has its own instance id and removes its services
//! by that label, even when it fails. No traffic goes to a container address: only to ports on 127.0.0.1.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use support::swarm::{remove_instance_services, require_swarm, task_containers};
use workspaced::domain::{IdeSecret, InstanceId, StudentId};
use workspaced::runtime::egress::Firewall;
use workspaced::runtime::swarm::probe::ProbeRequest;
use workspaced::runtime::swarm::{service_name, SwarmOptions, SwarmRuntime, BRIDGE, GWBRIDGE, NETWORK, NETWORK_CONFIG};
use workspaced::runtime::{
    container_name, ContainerInfo, ContainerSpec, Hardening, Runtime, RuntimeError, SecretEnv, LABEL_INSTANCE,
    LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, LABEL_SECRET_ENV, LABEL_STUDENT,
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
    /// Services made outside the runtime (by name), removed on drop along with the instance's.
    extra: Vec<String>,
}

impl World {
    fn new() -> Self {
        require_swarm();
        let instance = InstanceId::parse(&format!("s{}", hex())).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(1000), Some(1000)).unwrap();
        Self { instance, dir, extra: Vec::new() }
    }

    fn options() -> SwarmOptions {
        SwarmOptions { stop_grace: GRACE, start_wait: Duration::from_secs(60), ..Default::default() }
    }

    fn runtime(&self) -> SwarmRuntime {
        SwarmRuntime::connect_lazy(self.instance.clone(), CALL_TIMEOUT, Self::options()).expect("a usable DOCKER_HOST")
    }

    fn student(&self, prefix: &str) -> StudentId {
        StudentId::parse(&format!("{prefix}-{}", hex())).unwrap()
    }

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
            // Small reservations: the tests run in parallel on one node of two cores.
            nano_cpus: 100_000_000,
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
        for name in &self.extra {
            let _ = Command::new("docker").args(["service", "rm", name]).output();
        }
        remove_instance_services(self.instance.as_str());
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker CLI runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `docker <kind> inspect` of one object as JSON, or None if it does not exist.
fn inspect(kind: &str, name_or_id: &str) -> Option<serde_json::Value> {
    let out = Command::new("docker").args([kind, "inspect", name_or_id]).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let mut all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    all.pop()
}

/// The one container of a running service's task on this node.
fn task_container(service_id: &str) -> String {
    let ids = task_containers(service_id);
    assert_eq!(ids.len(), 1, "one task container for {service_id}: {ids:?}");
    ids[0].clone()
}

fn exec(container: &str, script: &str) -> String {
    docker(&["exec", container, "sh", "-c", script])
}

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
async fn ensure_running_creates_a_labelled_limited_service_with_a_host_mode_port_and_is_idempotent() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("alice");
    let spec = world.spec(&student);

    let first = rt.ensure_running(&spec).await.unwrap();
    assert!(first.running);
    assert_eq!(first.state, "running");
    assert_eq!(first.name, service_name(&world.instance, &student));
    assert_eq!(first.student, student);
    // The swarm was made with `--advertise-addr 127.0.0.1`: the route's host path, with this node's address.
    assert_eq!(first.node_addr.as_deref(), Some("127.0.0.1"), "a task is reached at its node's address");
    let port = first.host_port.expect("a published port");
    let secret = spec.secret.clone().unwrap().value;
    assert_eq!(first.secret.as_ref(), Some(&secret), "the secret is read back from the service");

    let again = world.spec(&student);
    let second = rt.ensure_running(&again).await.unwrap();
    assert_eq!(second.id, first.id, "a running service is returned untouched");
    assert_eq!(second.host_port, Some(port));
    assert_eq!(second.secret.as_ref(), Some(&secret), "the service keeps its own secret");
    assert_eq!(rt.inspect(&student).await.unwrap(), Some(first.clone()));

    let s = inspect("service", &first.id).expect("the service exists");
    let labels = &s["Spec"]["Labels"];
    assert_eq!(labels[LABEL_MANAGED_BY], LABEL_MANAGED_BY_VALUE);
    assert_eq!(labels[LABEL_INSTANCE], world.instance.as_str());
    assert_eq!(labels[LABEL_STUDENT], student.as_str());
    assert_eq!(labels["workspaced.port"], "8080");
    assert_eq!(labels[LABEL_SECRET_ENV], "IDE_SECRET");
    assert_eq!(s["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    let task = &s["Spec"]["TaskTemplate"];
    assert_eq!(task["RestartPolicy"]["Condition"], "none");
    assert_eq!(task["Resources"]["Limits"]["NanoCPUs"], 100_000_000i64);
    assert_eq!(task["Resources"]["Limits"]["MemoryBytes"], MEMORY);
    assert_eq!(task["Resources"]["Limits"]["Pids"], 128);
    // A quarter of the CPU limit (`swarm_cpu_reservation`'s default), the memory whole.
    assert_eq!(task["Resources"]["Reservations"]["NanoCPUs"], 25_000_000i64);
    assert_eq!(task["Resources"]["Reservations"]["MemoryBytes"], MEMORY);
    assert!(!task["Networks"][0]["Target"].as_str().unwrap_or_default().is_empty(), "the task joins a network");
    let ports = &s["Spec"]["EndpointSpec"]["Ports"][0];
    assert_eq!((ports["TargetPort"].as_i64(), ports["PublishMode"].as_str()), (Some(8080), Some("host")));
    let c = &task["ContainerSpec"];
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Labels"][LABEL_STUDENT], student.as_str(), "the task's container carries our labels too");
    let env: Vec<&str> = c["Env"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(env.contains(&format!("IDE_SECRET={}", secret.expose()).as_str()), "{env:?}");

    // What the engine made of it on this node.
    let container = inspect("container", &task_container(&first.id)).unwrap();
    let host = &container["HostConfig"];
    assert_eq!(host["NanoCpus"], 100_000_000i64);
    assert_eq!(host["Memory"], MEMORY);
    assert_eq!(host["PidsLimit"], 128);
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(host["Ulimits"], serde_json::json!([{"Name": "nofile", "Soft": 4096, "Hard": 4096}]));
    assert_eq!(host["Init"], false);
    let bind = host["Mounts"].as_array().unwrap().iter().find(|m| m["Type"] == "bind").expect("the bind mount");
    assert_eq!(bind["Source"], std::fs::canonicalize(&spec.host_dir).unwrap().to_str().unwrap());
    assert_eq!(bind["Target"], MOUNT);
    let networks = container["NetworkSettings"]["Networks"].as_object().unwrap();
    assert_eq!(networks.keys().collect::<Vec<_>>(), vec![NETWORK], "the task is on our network alone");

    assert_eq!(healthz_status(port).await, 200);
    let listed = rt.list_owned().await.unwrap();
    assert_eq!(listed, vec![ContainerInfo { secret: None, ..first }], "a listing has no secrets");

    // The task runs on this node: its container's stats come from this engine, with the service's limit.
    let stats = rt.stats(&student).await.unwrap().expect("stats of a task on this node");
    assert_eq!(stats.memory_limit_bytes, MEMORY as u64);
    assert!(stats.memory_bytes > 0 && stats.memory_bytes < MEMORY as u64, "{stats:?}");
    assert!(stats.pids >= 1 && stats.cpu_percent >= 0.0, "{stats:?}");
    assert_eq!(rt.stats(&world.student("nobody")).await.unwrap(), None, "no service, no stats");
}

#[tokio::test]
async fn stop_removes_the_service_and_its_container_and_keeps_host_files() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("bob");
    let spec = world.spec(&student);
    let info = rt.ensure_running(&spec).await.unwrap();
    let container = task_container(&info.id);
    let out = Command::new("docker")
        .args(["exec", &container, "sh", "-c", &format!("echo hi > {MOUNT}/f")])
        .output()
        .unwrap();
    assert!(out.status.success(), "exec failed: {}", String::from_utf8_lossy(&out.stderr));

    rt.stop(&student, GRACE).await.unwrap();
    assert!(inspect("service", &info.id).is_none(), "the service is gone");
    assert_eq!(rt.stats(&student).await.unwrap(), None, "a stopped workspace has no stats");
    assert!(task_containers(&info.id).is_empty(), "its container is gone once stop returns");
    assert_eq!(rt.inspect(&student).await.unwrap(), None);
    assert!(rt.list_owned().await.unwrap().is_empty());

    let file = spec.host_dir.join("f");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hi\n");
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), 1000);

    rt.stop(&student, GRACE).await.expect("stopping again succeeds");
    rt.stop(&world.student("nobody"), GRACE).await.expect("stopping a student without a service succeeds");
}

#[tokio::test]
async fn two_concurrent_starts_give_one_service() {
    let world = World::new();
    let (a, b) = (world.runtime(), world.runtime());
    let student = world.student("carl");
    let (spec_a, spec_b) = (world.spec(&student), world.spec(&student));
    let (first, second) = tokio::join!(a.ensure_running(&spec_a), b.ensure_running(&spec_b));
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first.id, second.id);
    assert_eq!(first.host_port, second.host_port);
    assert_eq!(first.secret, second.secret, "both report the secret of the one service that runs");
    assert_eq!(support::swarm::instance_services(world.instance.as_str()).len(), 1);
}

#[tokio::test]
async fn a_task_that_failed_is_reported_with_its_reason_and_replaced_by_the_next_start() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("dora");
    let spec = world.spec(&student);
    let old = rt.ensure_running(&spec).await.unwrap();

    docker(&["kill", &task_container(&old.id)]);
    let until = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let info = rt.inspect(&student).await.unwrap().expect("the service is still there");
        if !info.running {
            break info;
        }
        assert!(Instant::now() < until, "the engine never reported the killed task");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failed.state.starts_with("failed: ") && failed.state.contains("exit"), "{}", failed.state);
    assert_eq!(failed.host_port, None);
    let listed = rt.list_owned().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].running, "the engine restarts nothing: restarts are the lifecycle's decision");

    let new = rt.ensure_running(&spec).await.unwrap();
    assert_ne!(new.id, old.id, "a new service");
    assert!(inspect("service", &old.id).is_none(), "the old service was removed");
    assert_eq!(healthz_status(new.host_port.unwrap()).await, 200);
}

#[tokio::test]
async fn services_of_other_instances_and_unlabelled_ones_are_never_listed_or_stopped() {
    let mut world = World::new();
    let rt = world.runtime();

    let other_instance = InstanceId::parse(&format!("o{}", hex())).unwrap();
    let other_student = world.student("eve");
    let other_name = service_name(&other_instance, &other_student);
    world.extra.push(other_name.clone());
    let labelled = [
        format!("{LABEL_MANAGED_BY}={LABEL_MANAGED_BY_VALUE}"),
        format!("{LABEL_INSTANCE}={other_instance}"),
        format!("{LABEL_STUDENT}={other_student}"),
    ];
    let mut args = vec!["service", "create", "-d", "-q", "--restart-condition", "none", "--name", &other_name];
    for l in &labelled {
        args.extend(["--label", l.as_str()]);
    }
    args.push(IMAGE);
    let other_id = docker(&args);
    assert!(!other_id.is_empty(), "docker service create of the other instance's service");

    // An unlabelled service squatting on the name our student would get.
    let squatted = world.student("frank");
    let squat_name = service_name(&world.instance, &squatted);
    world.extra.push(squat_name.clone());
    let squat_id =
        docker(&["service", "create", "-d", "-q", "--restart-condition", "none", "--name", &squat_name, IMAGE]);
    assert!(!squat_id.is_empty(), "docker service create of the unlabelled service");

    let ours = world.student("grace");
    let mine = rt.ensure_running(&world.spec(&ours)).await.unwrap();
    let listed = rt.list_owned().await.unwrap();
    assert_eq!(listed, vec![ContainerInfo { secret: None, ..mine }], "only our instance's service is listed");

    match rt.ensure_running(&world.spec(&squatted)).await {
        Err(RuntimeError::Conflict(name)) => assert_eq!(name, squat_name),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(rt.stop(&squatted, GRACE).await, Err(RuntimeError::Conflict(_))));
    assert!(matches!(rt.inspect(&squatted).await, Err(RuntimeError::Conflict(_))));
    assert!(matches!(rt.remove_by_id(&squat_id, GRACE).await, Err(RuntimeError::Conflict(_))));
    assert!(matches!(rt.remove_by_id(&other_id, GRACE).await, Err(RuntimeError::Conflict(_))));
    for id in [&squat_id, &other_id] {
        assert!(inspect("service", id).is_some(), "a foreign service is still there");
    }
    assert_eq!(rt.inspect(&other_student).await.unwrap(), None);
}

#[tokio::test]
async fn a_missing_image_is_image_missing_and_leaves_no_service() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("heidi");
    let mut spec = world.spec(&student);
    spec.image = format!("workspaced/does-not-exist:{}", hex());
    match rt.ensure_running(&spec).await {
        Err(RuntimeError::ImageMissing(image)) => assert_eq!(image, spec.image),
        other => panic!("expected ImageMissing, got {other:?}"),
    }
    assert!(support::swarm::instance_services(world.instance.as_str()).is_empty());
    assert_eq!(rt.inspect(&student).await.unwrap(), None);
}

#[tokio::test]
async fn a_start_no_node_can_place_fails_with_no_capacity_and_leaves_no_service() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("ivan");
    let mut spec = world.spec(&student);
    // More memory than any node of this swarm has: the scheduler reserves it, so it cannot place the task.
    spec.memory_bytes = 1 << 50;
    spec.memory_swap_bytes = 1 << 50;
    match rt.ensure_running(&spec).await {
        Err(RuntimeError::NoCapacity(why)) => assert!(why.contains("no suitable node"), "{why}"),
        other => panic!("expected NoCapacity, got {other:?}"),
    }
    assert!(support::swarm::instance_services(world.instance.as_str()).is_empty(), "no service is left");

    // A constraint no node meets is the same answer.
    let options =
        SwarmOptions { constraints: vec![format!("node.labels.nowhere-{}==true", hex())], ..World::options() };
    let constrained = SwarmRuntime::connect_lazy(world.instance.clone(), CALL_TIMEOUT, options).unwrap();
    assert!(matches!(constrained.ensure_running(&world.spec(&student)).await, Err(RuntimeError::NoCapacity(_))));
    assert!(support::swarm::instance_services(world.instance.as_str()).is_empty());
}

#[tokio::test]
async fn a_workspace_without_an_ide_secret_is_refused_before_anything_is_created() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("judy");
    let mut spec = world.spec(&student);
    spec.secret = None;
    match rt.ensure_running(&spec).await {
        Err(RuntimeError::Engine(why)) => assert!(why.contains("secret"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(support::swarm::instance_services(world.instance.as_str()).is_empty());
}

#[tokio::test]
async fn a_host_folder_that_does_not_exist_is_refused_before_creating_anything() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("kate");
    let mut spec = world.spec(&student);
    spec.host_dir = world.dir.path().join("missing");
    assert!(matches!(rt.ensure_running(&spec).await, Err(RuntimeError::Engine(_))));
    assert!(support::swarm::instance_services(world.instance.as_str()).is_empty());
}

#[tokio::test]
async fn an_unreachable_engine_is_unavailable_not_a_hang() {
    let world = World::new();
    let socket = PathBuf::from(format!("/tmp/workspaced-nonexistent-{}.sock", hex()));
    let rt = SwarmRuntime::connect_lazy_at(&socket, world.instance.clone(), Duration::from_secs(2), World::options())
        .unwrap();
    assert!(matches!(rt.ping().await, Err(RuntimeError::Unavailable(_))));
    assert!(matches!(rt.list_owned().await, Err(RuntimeError::Unavailable(_))));
    assert!(matches!(rt.stop(&world.student("lee"), GRACE).await, Err(RuntimeError::Unavailable(_))));
}

#[tokio::test]
async fn a_hardened_task_has_no_capabilities_a_file_limit_a_tmpfs_and_optionally_a_read_only_root() {
    let world = World::new();
    let rt = world.runtime();
    let student = world.student("hard");
    let mut spec = world.spec(&student);
    spec.hardening.read_only_root = true;
    let info = rt.ensure_running(&spec).await.unwrap();
    let c = task_container(&info.id);
    let caps = exec(&c, "grep -E '^Cap(Eff|Prm|Bnd):' /proc/self/status");
    assert_eq!(caps.lines().count(), 3, "{caps}");
    assert!(caps.lines().all(|l| l.ends_with("0000000000000000")), "capabilities left: {caps}");
    assert_eq!(exec(&c, "ulimit -n").trim(), "4096");
    let mounts = exec(&c, "grep ' /tmp ' /proc/mounts");
    assert!(mounts.starts_with("tmpfs /tmp tmpfs") && mounts.contains("size=65536k"), "{mounts}");
    assert_eq!(exec(&c, "stat -c %a /tmp").trim(), "1777", "a sticky, world-writable /tmp");
    assert_eq!(exec(&c, "echo x > /tmp/t && cat /tmp/t").trim(), "x", "/tmp is writable");
    assert_eq!(exec(&c, &format!("echo x > {MOUNT}/p && cat {MOUNT}/p")).trim(), "x");
    let root = exec(&c, "touch /etc/nope 2>&1 || echo refused");
    assert!(root.contains("refused") && root.contains("Read-only"), "the root file system is read-only: {root}");
}

/// Lines of `listing` that carry every one of `words`.
fn lines_with<'a>(listing: &'a str, words: &[&str]) -> Vec<&'a str> {
    listing.lines().filter(|l| words.iter().all(|w| l.split_whitespace().any(|x| x == *w))).collect()
}

fn iptables_s(chain: &str) -> String {
    let out = Command::new("iptables").args(["-w", "10", "-S", chain]).output().expect("iptables runs");
    assert!(out.status.success(), "iptables -S {chain}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Checked on the engine's configuration and the firewall, not by sending packets to container addresses.
#[tokio::test]
async fn tasks_cannot_reach_each_other_and_the_egress_rules_cover_the_swarm_bridges() {
    let world = World::new();
    let rt = world.runtime();
    let a = rt.ensure_running(&world.spec(&world.student("net-a"))).await.unwrap();
    let b = rt.ensure_running(&world.spec(&world.student("net-b"))).await.unwrap();
    for id in [&a.id, &b.id] {
        let c = inspect("container", &task_container(id)).unwrap();
        let nets: Vec<&String> = c["NetworkSettings"]["Networks"].as_object().unwrap().keys().collect();
        assert_eq!(nets, vec![NETWORK], "each task is on the isolated network and no other");
    }

    let net = inspect("network", NETWORK).expect("the swarm network exists");
    assert_eq!(net["Scope"], "swarm");
    assert_eq!(net["Driver"], "bridge", "a bridge on each node: tasks on two nodes share no network");
    assert_eq!(net["ConfigFrom"]["Network"], NETWORK_CONFIG);
    let config = inspect("network", NETWORK_CONFIG).expect("the configuration network exists on this node");
    assert_eq!(config["ConfigOnly"], true);
    assert_eq!(config["Options"]["com.docker.network.bridge.enable_icc"], "false");
    assert_eq!(config["Options"]["com.docker.network.bridge.name"], BRIDGE);

    // With inter-container traffic off, Docker drops what enters the bridge for the bridge itself.
    let forward = iptables_s("FORWARD");
    assert!(
        !lines_with(&forward, &["-i", BRIDGE, "-o", BRIDGE, "DROP"]).is_empty(),
        "no rule drops traffic between tasks on {BRIDGE}:\n{forward}"
    );
    let icc_on = format!("-A FORWARD -i {BRIDGE} -o {BRIDGE} -j ACCEPT");
    assert!(!forward.lines().any(|l| l.trim() == icc_on), "a rule lets tasks on {BRIDGE} reach each other:\n{forward}");

    // The egress rules: installed by the first start (egress_rules = install), for our bridge and docker_gwbridge.
    let firewall = Firewall::default();
    for bridge in [BRIDGE, GWBRIDGE] {
        let missing = firewall.missing(bridge).expect("iptables answers");
        assert!(
            missing.is_empty(),
            "rules missing for {bridge}: {:?}",
            missing.iter().map(|r| r.purpose).collect::<Vec<_>>()
        );
    }
    let chain = iptables_s(&firewall.chain);
    for bridge in [BRIDGE, GWBRIDGE] {
        assert_eq!(lines_with(&chain, &["-i", bridge, "169.254.0.0/16", "DROP"]).len(), 1, "{chain}");
        assert_eq!(lines_with(&chain, &["-i", bridge, "2049", "DROP"]).len(), 2, "{chain}");
    }
}

#[tokio::test]
async fn the_node_probe_runs_once_per_node_as_the_workspace_user_and_leaves_no_service() {
    let world = World::new();
    let rt = world.runtime();
    let base = std::fs::canonicalize(world.dir.path()).unwrap();
    let dir = base.join(".probe");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let request = ProbeRequest {
        image: IMAGE,
        user: "1000:1000",
        base: &base,
        dir: &dir,
        constraints: &[],
        wait: Duration::from_secs(60),
    };
    let nodes = rt.probe_nodes(&request).await.unwrap();
    let local = rt.local_node().await.unwrap().to_owned();
    assert_eq!(nodes.len(), 1, "one node in this swarm: {nodes:?}");
    assert_eq!((nodes[0].node_id.as_str(), nodes[0].exit_code), (local.as_str(), Some(0)));
    assert!(nodes[0].state.starts_with("complete"), "{nodes:?}");
    let written = dir.join(&local);
    let fs = std::fs::read_to_string(&written).expect("the probe's file arrived on the shared base path");
    assert!(!fs.trim().is_empty() && fs.trim() != "unknown", "the probe names the file system: {fs:?}");
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), 1000, "written as the workspace user");
    assert!(docker(&["service", "ls", "-q", "--filter", "label=workspaced.probe"]).is_empty(), "no probe service left");

    // A base path the node does not have: the probe cannot even start there, and says why.
    let missing = base.join("not-mounted");
    let request = ProbeRequest { base: &missing, dir: &missing, ..request };
    let nodes = rt.probe_nodes(&request).await.unwrap();
    assert!(nodes[0].state.contains("bind source path does not exist"), "{nodes:?}");
    assert!(docker(&["service", "ls", "-q", "--filter", "label=workspaced.probe"]).is_empty(), "no probe service left");
}
