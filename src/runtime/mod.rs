//! The container runtime: a small trait with a written contract, and its two implementations: `docker.rs` (one
//! container per workspace on one engine) and `swarm.rs` (one Docker Swarm service per workspace, placed on any
//! node), chosen by the setting `runtime` ([`RuntimeKind`]). Nothing outside this module imports the Docker client.
//!
//! # Contract of [`Runtime`]
//! - Every call is bounded by a timeout; a call that times out or cannot reach the engine returns
//!   [`RuntimeError::Unavailable`], never hangs.
//! - Only containers carrying our labels (`workspaced.managed-by=workspaced` and our `workspaced.instance`) are ever
//!   stopped, removed or reported. A container with our name but other labels is a [`RuntimeError::Conflict`].
//! - `ensure_running` is idempotent: if our container for the student is running it is returned untouched; if it
//!   exists but is not running, it is removed and created anew from the spec (so a changed image or limit applies);
//!   otherwise it is created and started. It returns once the engine reports it running with its port published.
//!   It does not wait for the IDE inside to be ready (the lifecycle does that, at `node_addr`:`host_port`). The info it returns carries the
//!   secret of the container that runs (a container already running keeps its own, not the spec's).
//! - `stop` sends SIGTERM, waits up to `grace`, kills, then removes the container. Stopping a student that has no
//!   container succeeds. It never touches the student's files (bind mounts are not volumes; nothing is deleted).
//! - `inspect` returns `Ok(None)` for a student without a container of ours (a 404 is not an error).
//! - `list_owned` returns every container of this instance, running or not.
//! - All calls are safe before any start, and safe to repeat.

pub mod docker;
pub mod egress;
pub mod swarm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use crate::domain::{IdeSecret, InstanceId, StudentId};

/// Which engine runs the workspaces (setting `runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// One container per workspace on the local engine ([`docker::DockerRuntime`]).
    #[default]
    Docker,
    /// One Swarm service per workspace ([`swarm::SwarmRuntime`]); the engine must be a swarm manager.
    Swarm,
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "docker" => Ok(Self::Docker),
            "swarm" => Ok(Self::Swarm),
            other => Err(format!("not a runtime: {other:?}; use docker or swarm")),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Docker => "docker",
            Self::Swarm => "swarm",
        })
    }
}

/// Label keys on every container we create.
pub const LABEL_MANAGED_BY: &str = "workspaced.managed-by";
pub const LABEL_MANAGED_BY_VALUE: &str = "workspaced";
pub const LABEL_STUDENT: &str = "workspaced.student";
pub const LABEL_INSTANCE: &str = "workspaced.instance";
/// Names the environment variable that holds the IDE's secret, so the secret of a running container can be read back.
pub const LABEL_SECRET_ENV: &str = "workspaced.secret-env";

/// The container name of a student's workspace: `ws-<id>` for the `default` instance, `ws-<id>.<instance>` otherwise
/// (`.` cannot occur in ids, so two instances can never produce the same name).
pub fn container_name(instance: &InstanceId, student: &StudentId) -> String {
    if instance.as_str() == "default" {
        format!("ws-{student}")
    } else {
        format!("ws-{student}.{instance}")
    }
}

/// Everything needed to create a student's container. Built by the lifecycle from settings and a `StudentId`.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub student: StudentId,
    pub name: String,
    pub image: String,
    /// Command and arguments; empty keeps the image's own.
    pub command: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Host folder bind-mounted read-write at `mount_target`.
    pub host_dir: PathBuf,
    pub mount_target: String,
    /// The student's IDE state folder on the host and where it is bind-mounted read-write in the container
    /// (settings, extensions: kept apart from the project folder); `None`: none.
    pub state_dir: Option<(PathBuf, String)>,
    /// Port inside the container, published on 127.0.0.1 with an ephemeral host port.
    pub container_port: u16,
    /// `uid:gid` the container runs as.
    pub user: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    /// Memory plus swap; equal to `memory_bytes` means no swap.
    pub memory_swap_bytes: i64,
    pub pids_limit: i64,
    /// Our labels (managed-by, student, instance) and any extra ones.
    pub labels: BTreeMap<String, String>,
    pub hardening: Hardening,
    /// The IDE's secret and the variable that carries it (see `domain::IdeAuth`); `None`: no secret.
    pub secret: Option<SecretEnv>,
}

/// The IDE's per-workspace secret, given to the container in the environment variable `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    pub name: String,
    pub value: IdeSecret,
}

/// What a workspace container may not do, beyond the resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// Drop every Linux capability.
    pub cap_drop_all: bool,
    /// Open files per process (soft and hard).
    pub nofile: u64,
    /// Size of a tmpfs at `/tmp`, if any.
    pub tmp_size: Option<u64>,
    pub read_only_root: bool,
}

/// Resource use of a running container.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ContainerStats {
    /// CPU use over the engine's sampling second, in percent of one core (100 = one full core).
    pub cpu_percent: f64,
    /// Memory in use (without the page cache) and the limit, in bytes.
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
}

/// What the engine says about one of our containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// From the student label.
    pub student: StudentId,
    pub running: bool,
    /// The engine's state word: created, running, exited, ...
    pub state: String,
    /// Host port that reaches `container_port`, when running: on 127.0.0.1, or on `node_addr`.
    pub host_port: Option<u16>,
    /// The address of the node `host_port` is published on, as the engine reports it (Swarm: the node's advertised
    /// address, for every running task); `None`: 127.0.0.1 (plain Docker). Outside input: the lifecycle checks it
    /// (`domain::parse_upstream_host`) before the route holds it or anything connects to it.
    pub node_addr: Option<String>,
    /// The IDE's secret, read back from the container (only from an inspect; a listing leaves it `None`).
    pub secret: Option<IdeSecret>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine cannot be reached or did not answer in time. Callers answer 503 and retry later.
    #[error("container engine unavailable: {0}")]
    Unavailable(String),
    /// The image does not exist locally (no registry is reachable, so we never pull).
    #[error("image {0} not found; build it with `workspaced image build`")]
    ImageMissing(String),
    /// A container with our name exists but is not ours.
    #[error("container name {0} is taken by a container workspaced does not own")]
    Conflict(String),
    /// The engine refused the request.
    #[error("container engine error: {0}")]
    Engine(String),
    /// No node can take the workspace (Swarm: no node meets the constraints with the reserved CPU and memory free).
    /// Nothing is left behind.
    #[error("no node has room for this workspace: {0}")]
    NoCapacity(String),
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Is the engine reachable?
    async fn ping(&self) -> Result<(), RuntimeError>;
    /// Creates and starts the student's container, or returns the running one. See the module contract.
    async fn ensure_running(&self, spec: &ContainerSpec) -> Result<ContainerInfo, RuntimeError>;
    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes the student's container, if any.
    async fn stop(&self, student: &StudentId, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes the container with this id, if it is ours, whatever its student label says.
    async fn remove_by_id(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Our container for this student, if any.
    async fn inspect(&self, student: &StudentId) -> Result<Option<ContainerInfo>, RuntimeError>;
    /// All containers of this instance.
    async fn list_owned(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// CPU and memory use of the student's container, from the engine (`None` when it does not run, or when this
    /// engine cannot see it: a Swarm task on another node).
    async fn stats(&self, _student: &StudentId) -> Result<Option<ContainerStats>, RuntimeError> {
        Ok(None)
    }
}
