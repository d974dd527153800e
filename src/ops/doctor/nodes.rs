//! `workspaced doctor --nodes`: does every swarm node that may run a workspace see the same base path? A one-shot
//! probe task per node (`runtime::swarm::probe`) writes, as the workspace user, the file system type it sees into a
//! scratch folder of the base path; this host then reads what arrived. One check per node: the base path mounted
//! there, writable by uid:gid, the same files as here, on the same file system type as here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Check, DoctorOptions};
use crate::config::Settings;
use crate::runtime::swarm::probe::{NodeProbe, ProbeRequest, EXIT_NOT_MOUNTED, EXIT_NOT_WRITABLE};
use crate::runtime::swarm::{SwarmOptions, SwarmRuntime};

/// Probes every node and reports one check per node (`node <hostname>`), or one `nodes` check when the probe
/// cannot run. The scratch folder is removed afterwards.
pub(super) async fn node_checks(settings: &Settings, o: &DoctorOptions) -> Vec<Check> {
    let advice = "point workspaced at a swarm manager (DOCKER_HOST) and see docs/deploy/swarm.md";
    let runtime = match SwarmRuntime::connect_lazy(settings.instance.clone(), o.engine_timeout, SwarmOptions::default())
    {
        Ok(r) => r.with_egress(settings.egress_rules),
        Err(e) => return vec![Check::fail("nodes", format!("cannot set up the Docker client: {e}"), advice)],
    };
    let local = match runtime.local_node().await {
        Ok(id) => id.to_owned(),
        Err(e) => return vec![Check::fail("nodes", e.to_string(), advice)],
    };
    let (uid, gid) = (settings.workspace.uid, settings.workspace.gid);
    let dir = settings.base_path.join(format!(".workspaced-probe-{:08x}", rand::random::<u32>()));
    let made = dir.clone();
    let prepared = tokio::task::spawn_blocking(move || prepare(&made, uid, gid)).await;
    if let Err(e) = prepared.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
        return vec![Check::fail(
            "nodes",
            format!("cannot make the probe folder {} here: {e}", dir.display()),
            "run the doctor as root on a host with the base path mounted",
        )];
    }
    let base = std::fs::canonicalize(&settings.base_path).unwrap_or_else(|_| settings.base_path.clone());
    let dir = base.join(dir.file_name().expect("a file name"));
    let user = format!("{uid}:{gid}");
    let request = ProbeRequest {
        image: &settings.workspace.image,
        user: &user,
        base: &base,
        dir: &dir,
        constraints: &settings.swarm_constraints,
        wait: o.nodes_wait,
    };
    let probed = runtime.probe_nodes(&request).await;
    let read = dir.clone();
    let seen = tokio::task::spawn_blocking(move || {
        let found = written(&read);
        if let Err(e) = std::fs::remove_dir_all(&read) {
            tracing::warn!(path = %read.display(), error = %e, "cannot remove the probe folder");
        }
        found
    })
    .await
    .unwrap_or_default();
    match probed {
        Ok(nodes) => judge(&nodes, &seen, &local, &user),
        Err(e) => vec![Check::fail("nodes", format!("the probe service did not run: {e}"), advice)],
    }
}

/// The probe folder, owned by the workspace user like a student folder (mode 0700).
fn prepare(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::fs::create_dir(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
}

/// Node id to the file system type its probe wrote.
fn written(dir: &PathBuf) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fs = std::fs::read_to_string(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), fs.trim().to_owned()))
        })
        .collect()
}

/// One check per node from its probe's end and the file it left here (pure).
pub(super) fn judge(nodes: &[NodeProbe], seen: &[(String, String)], local: &str, user: &str) -> Vec<Check> {
    let fs_of = |id: &str| seen.iter().find(|(n, _)| n == id).map(|(_, fs)| fs.as_str());
    let here = fs_of(local);
    nodes
        .iter()
        .map(|n| {
            let name = format!("node {}", n.node);
            let details =
                json!({ "node_id": n.node_id, "state": n.state, "exit_code": n.exit_code, "fs": fs_of(&n.node_id) });
            let check = match (fs_of(&n.node_id), n.exit_code) {
                (Some(fs), _) if here.is_some_and(|h| h != fs) => Check::warn(
                    name,
                    format!(
                        "base path mounted and writable by {user}, but on {fs} where this host has {}",
                        here.unwrap_or("?")
                    ),
                    "mount the same file system (EFS) at the base path on every node",
                ),
                (Some(fs), _) => Check::pass(
                    name,
                    format!("base path mounted ({fs}), writable by {user}, the same files as this host"),
                ),
                (None, Some(EXIT_NOT_WRITABLE)) => Check::fail(
                    name,
                    format!("the base path is there but {user} cannot write to a folder of theirs: {}", n.state),
                    "check the mount's options (root squash, access point uid) on that node",
                ),
                (None, Some(EXIT_NOT_MOUNTED)) => {
                    Check::fail(name, "the base path is not there", "mount it on that node")
                }
                (None, Some(0)) => Check::fail(
                    name,
                    "the probe wrote its file on that node, but it did not arrive here: the node's base path is not \
                     the shared file system",
                    "mount the shared file system (EFS) at the base path on that node",
                ),
                (None, _) if n.state.contains("bind source path does not exist") => Check::fail(
                    name,
                    "the base path does not exist on that node",
                    "mount the shared file system (EFS) at the base path on that node",
                ),
                (None, _) if !n.eligible => {
                    Check::warn(name, format!("not probed: {}", n.state), "the node is down or drained")
                }
                (None, _) => Check::fail(
                    name,
                    format!("the probe did not finish there: {}", n.state),
                    "docs/deploy/swarm.md: the image and the workspaced-swarm-config network must exist on every node",
                ),
            };
            check.with_details(details)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::CheckStatus;

    fn probe(id: &str, state: &str, exit: Option<i64>, eligible: bool) -> NodeProbe {
        NodeProbe {
            node_id: id.into(),
            node: format!("{id}-host (10.0.0.{})", id.len()),
            state: state.into(),
            exit_code: exit,
            eligible,
        }
    }

    #[test]
    fn each_node_is_judged_by_what_arrived_here_and_how_its_probe_ended() {
        let nodes = [
            probe("a", "complete", Some(0), true),
            probe("b", "complete", Some(0), true),
            probe("c", "complete", Some(0), true),
            probe("d", "failed: task: non-zero exit (4)", Some(4), true),
            probe("e", "rejected: invalid mount config for type \"bind\": bind source path does not exist", None, true),
            probe("f", "no task (excluded by the constraints, or not ready)", None, false),
            probe("g", "pending", None, true),
        ];
        let seen = vec![("a".to_owned(), "nfs4".to_owned()), ("b".to_owned(), "ext4".to_owned())];
        let checks = judge(&nodes, &seen, "a", "1000:1000");
        let status: Vec<CheckStatus> = checks.iter().map(|c| c.status).collect();
        use CheckStatus::*;
        assert_eq!(status, vec![Pass, Warn, Fail, Fail, Fail, Warn, Fail]);
        assert!(checks[0].reason.contains("nfs4") && checks[0].name == "node a-host (10.0.0.1)");
        assert!(checks[1].reason.contains("ext4") && checks[1].reason.contains("nfs4"));
        assert!(checks[2].reason.contains("not the shared file system"));
        assert!(checks[3].reason.contains("cannot write"));
        assert!(checks[4].reason.contains("does not exist"));
    }
}
