//! The node probe behind `workspaced doctor --nodes`: a global one-shot service (`global-job` mode, API 1.41) that
//! runs one short task on every node that may run a workspace (the same constraints), as the workspace user, with
//! the base path bind-mounted at the same path and the workspaces' network attached. Each task writes the file
//! system type it sees into `<probe dir>/<node id>`; the doctor, on its own host, then reads those files: a file
//! that arrived proves the node mounts the same shared file system and that the workspace user can write to it.
//! The service is removed afterwards, whatever happened.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::models::{
    Mount, MountType, NetworkAttachmentConfig, ServiceSpec, ServiceSpecMode, TaskSpec, TaskSpecContainerSpec,
    TaskSpecPlacement, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use tokio::time::Instant;

use super::{tasks, SwarmRuntime, NETWORK};
use crate::runtime::docker::{classify, status_of};
use crate::runtime::{RuntimeError, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE};

/// Label that marks the probe service (it has no student).
pub const LABEL_PROBE: &str = "workspaced.probe";

/// Exit code of a probe that could not write as the workspace user.
pub const EXIT_NOT_WRITABLE: i64 = 4;
/// Exit code of a probe that found no base path inside the container.
pub const EXIT_NOT_MOUNTED: i64 = 3;

/// Runs in the probe's container (busybox `sh` or any POSIX shell; no other program needed). The file system type
/// is the one `/proc/self/mounts` gives for the bind mount, which is the type of its source on the node.
const SCRIPT: &str = r#"base="$PROBE_BASE"; dir="$PROBE_DIR"
[ -d "$base" ] || exit 3
fs=unknown
while read -r dev mnt type rest; do [ "$mnt" = "$base" ] && fs="$type"; done < /proc/self/mounts
printf '%s\n' "$fs" > "$dir/$PROBE_NODE" || exit 4
"#;

/// What a node's probe task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeProbe {
    pub node_id: String,
    /// `hostname (address)`.
    pub node: String,
    /// The task's final state (`complete`, `failed: ...`, `rejected: ...`), or `pending` when it did not finish.
    pub state: String,
    pub exit_code: Option<i64>,
    /// The node is ready and active, so the probe should have run there.
    pub eligible: bool,
}

/// What to probe with.
#[derive(Debug, Clone)]
pub struct ProbeRequest<'a> {
    pub image: &'a str,
    /// `uid:gid` of the workspaces.
    pub user: &'a str,
    /// The base path, mounted at the same path.
    pub base: &'a Path,
    /// The folder inside `base` the tasks write into (made by the caller, owned by the workspace user).
    pub dir: &'a Path,
    pub constraints: &'a [String],
    /// Longest wait for every task to finish.
    pub wait: Duration,
}

impl SwarmRuntime {
    /// Runs the probe service and reports per node; removes the service before returning.
    pub async fn probe_nodes(&self, req: &ProbeRequest<'_>) -> Result<Vec<NodeProbe>, RuntimeError> {
        self.local_node().await?;
        self.prepare_network().await?;
        let text = |p: &Path| {
            p.to_str().map(str::to_owned).ok_or_else(|| RuntimeError::Engine(format!("{} is not UTF-8", p.display())))
        };
        let (base, dir) = (text(req.base)?, text(req.dir)?);
        let name = format!("wsd-probe-{:08x}", rand::random::<u32>());
        let labels = HashMap::from([
            (LABEL_MANAGED_BY.to_owned(), LABEL_MANAGED_BY_VALUE.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.instance.to_string()),
            (LABEL_PROBE.to_owned(), "nodes".to_owned()),
        ]);
        let spec = ServiceSpec {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(req.image.to_owned()),
                    labels: Some(labels),
                    command: Some(vec!["sh".to_owned(), "-c".to_owned(), SCRIPT.to_owned()]),
                    env: Some(vec![
                        format!("PROBE_BASE={base}"),
                        format!("PROBE_DIR={dir}"),
                        // A Swarm template: each task gets its own node's id.
                        "PROBE_NODE={{.Node.ID}}".to_owned(),
                    ]),
                    user: Some(req.user.to_owned()),
                    mounts: Some(vec![Mount {
                        target: Some(base.clone()),
                        source: Some(base.clone()),
                        typ: Some(MountType::BIND),
                        ..Default::default()
                    }]),
                    capability_drop: Some(vec!["ALL".to_owned()]),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: (!req.constraints.is_empty()).then(|| req.constraints.to_vec()),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(NETWORK.to_owned()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode { global_job: Some(HashMap::new()), ..Default::default() }),
            ..Default::default()
        };
        let created = self
            .docker
            .call("create service", self.call_timeout, |d| async move { d.create_service(spec, None).await })
            .await?
            .map_err(classify)?;
        let id = created.id.unwrap_or_default();
        let outcome = self.await_probe(&id, req.wait).await;
        let removed =
            self.docker.call("remove service", self.call_timeout, |d| async move { d.delete_service(&id).await }).await;
        match removed {
            Ok(Ok(())) => {}
            Ok(Err(e)) if status_of(&e) == Some(404) => {}
            Ok(Err(e)) => tracing::warn!(service = %name, error = %e, "could not remove the probe service"),
            Err(e) => tracing::warn!(service = %name, error = %e, "could not remove the probe service"),
        }
        outcome
    }

    /// Waits until every task of the probe finished (or `wait` passed), then reports every node.
    async fn await_probe(&self, id: &str, wait: Duration) -> Result<Vec<NodeProbe>, RuntimeError> {
        let until = Instant::now() + wait;
        loop {
            let tasks = self.tasks_of(&[id.to_owned()]).await?;
            let nodes = self.nodes().await?;
            let eligible = |n: &bollard::models::Node| {
                let ready = n.status.as_ref().and_then(|s| s.state.as_ref()).map(|s| s.to_string());
                let active = n.spec.as_ref().and_then(|s| s.availability.as_ref()).map(|a| a.to_string());
                ready.as_deref() == Some("ready") && active.as_deref() == Some("active")
            };
            let done = |t: &bollard::models::Task| matches!(tasks::phase(t, &nodes, None), tasks::Phase::Ended { .. });
            let placed: Vec<&str> = tasks.iter().filter_map(|t| t.node_id.as_deref()).collect();
            // Done when every task ended and every eligible node has one (a node the constraints exclude has none).
            let all_ended = !tasks.is_empty() && tasks.iter().all(done);
            if all_ended || Instant::now() >= until {
                let mut report: Vec<NodeProbe> = Vec::new();
                for (node_id, n) in &nodes {
                    let task = tasks.iter().filter(|t| t.node_id.as_deref() == Some(node_id.as_str()));
                    let task = tasks::newest(&task.cloned().collect::<Vec<_>>()).cloned();
                    let (state, exit_code) = match &task {
                        Some(t) => (
                            tasks::state_text(&tasks::phase(t, &nodes, None)),
                            t.status.as_ref().and_then(|s| s.container_status.as_ref()).and_then(|c| c.exit_code),
                        ),
                        None if placed.contains(&node_id.as_str()) => ("pending".to_owned(), None),
                        None => ("no task (excluded by the constraints, or not ready)".to_owned(), None),
                    };
                    report.push(NodeProbe {
                        node_id: node_id.clone(),
                        node: tasks::node_name(n),
                        state,
                        exit_code,
                        eligible: eligible(n),
                    });
                }
                report.sort_by(|a, b| a.node.cmp(&b.node));
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
