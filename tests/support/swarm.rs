//! Swarm pieces shared by the tests that run the Swarm runtime: the check that a swarm is active (scripts/test.sh
//! creates a single-node one on 127.0.0.1 and leaves it afterwards), and the removal of an instance's services.

use std::process::Command;
use std::time::Duration;

/// Panics with what to do when this engine is not an active swarm manager.
pub fn require_swarm() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"])
        .output()
        .expect("docker CLI runs");
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(
        state, "active true",
        "these tests need a swarm: this engine says {state:?}. Run `docker swarm init --advertise-addr 127.0.0.1` \
         (scripts/test.sh does, and leaves it afterwards)"
    );
}

/// Ids of every service of `instance` (by our instance label).
pub fn instance_services(instance: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["service", "ls", "-q", "--filter", &format!("label=workspaced.instance={instance}")])
        .output()
        .expect("docker service ls");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}

/// Removes the services of `instance`, a few at a time, until two looks in a row find none (at most 40 looks).
pub fn remove_instance_services(instance: &str) {
    let mut quiet = 0;
    for _ in 0..40 {
        let ids = instance_services(instance);
        if ids.is_empty() {
            quiet += 1;
            if quiet == 2 {
                return;
            }
        } else {
            quiet = 0;
            for chunk in ids.chunks(8) {
                let _ = Command::new("docker").args(["service", "rm"]).args(chunk).output();
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The container ids of a service's tasks on this node.
pub fn task_containers(service_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=com.docker.swarm.service.id={service_id}")])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}
