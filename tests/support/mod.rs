//! Pieces shared by the test binaries that run the real service: a fresh database on the test PostgreSQL server,
//! and the removal of an instance's containers. Included with `mod support;` (or `#[path]` from a subfolder).
#![allow(dead_code)] // each test binary uses what it needs

pub mod swarm;

use std::process::Command;
use std::time::Duration;

/// Creates an empty database on the test PostgreSQL server (`WORKSPACED_TEST_POSTGRES`, started by
/// `scripts/test.sh`) and returns its URL.
pub async fn fresh_postgres_database(server: &str) -> String {
    use sqlx::Connection;
    let name = format!("t_{:016x}", rand::random::<u64>());
    let mut admin = sqlx::PgConnection::connect(server).await.expect("the test PostgreSQL server answers");
    sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// Ids of every container of `instance` matching the extra label filters, running or not.
pub fn instance_containers(instance: &str, filters: &[String]) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["ps", "-aq", "--filter", &format!("label=workspaced.instance={instance}")]);
    for f in filters {
        cmd.args(["--filter", f]);
    }
    let out = cmd.output().expect("docker ps");
    String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_owned).collect()
}

/// Removes the containers of `instance` until two looks in a row find none (a start a server asked for just before
/// it exited can still be created by the engine afterwards); at most 40 looks.
pub fn remove_instance_containers(instance: &str) {
    let mut quiet = 0;
    for _ in 0..40 {
        let ids = instance_containers(instance, &[]);
        if ids.is_empty() {
            quiet += 1;
            if quiet == 2 {
                return;
            }
        } else {
            quiet = 0;
            // A few at a time: Docker 20.10 (Debian's) once hung for good removing 50 at once while other tests
            // removed theirs.
            for chunk in ids.chunks(8) {
                let _ = Command::new("docker").arg("rm").arg("-f").args(chunk).output();
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Stops a `workspaced serve` process the way a deploy does (SIGTERM, then wait for it) and removes the containers
/// of its instance.
pub fn stop_service(child: &mut std::process::Child, instance: &str) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    remove_instance_containers(instance);
}
