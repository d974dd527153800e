//! Docker Swarm implementation of [`Runtime`] (see `runtime/mod.rs` for the contract): one service per workspace,
//! placed by the swarm's scheduler on any node that meets the constraints and has the reserved CPU and memory free.
//!
//! It talks to a manager through the same connection machinery as `docker.rs` (bollard, API version negotiated,
//! every call under a timeout, the same `classify`). Ownership is decided by the labels on the service, as on
//! Docker by the labels on the container; a service's id is what `ContainerInfo::id` carries, so the store, the
//! reconciler and `remove_by_id` work unchanged.
//!
//! - Name: [`spec::service_name`] (Swarm names are DNS labels; the container name's form does not fit).
//! - Network: the swarm-scope bridge network [`NETWORK`], made from the node-local configuration network
//!   [`NETWORK_CONFIG`] with inter-container traffic off and the bridge named [`BRIDGE`], so tasks on one node cannot
//!   reach each other and tasks on two nodes share no network at all. The egress rules cover that bridge and
//!   `docker_gwbridge` (the bridge of any overlay network on the node).
//! - Port: published in host mode on a port the engine picks, read back from the task's status. Host mode publishes
//!   on every interface: a workspace without its IDE secret is refused.
//! - Routing: a running task's `ContainerInfo::node_addr` is the address its node advertised to the swarm (this
//!   node's too), and the lifecycle checks it and keeps it with the route: the proxy, the readiness probe and the
//!   IDE polls reach `<node address>:<port>`, so the scheduler may put a workspace on any node. The workspaced hosts
//!   must reach the published port range of every node (`docs/deploy/swarm.md`).
//! - Stats: read from the engine for a task on the node of the manager this runtime talks to; a task on another
//!   node has none (only its own node's engine has its container).

pub mod probe;
pub mod spec;
mod tasks;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{Node, Service, Task};
use bollard::query_parameters::{
    InspectServiceOptions, ListNodesOptions, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    StopContainerOptionsBuilder,
};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::docker::{absolute_dir, classify, status_of, DockerRuntime, LABEL_PORT};
use super::egress::{self, EgressMode};
use super::{
    ContainerInfo, ContainerSpec, Runtime, RuntimeError, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE,
    LABEL_SECRET_ENV, LABEL_STUDENT,
};
use crate::domain::{IdeSecret, InstanceId, StudentId};
use tasks::Phase;

pub use spec::service_name;

/// The swarm-scope network of every workspace task (all instances on the swarm share it, as on Docker).
pub const NETWORK: &str = "workspaced-swarm";
/// The node-local configuration [`NETWORK`] is made from: options are only honoured this way for a swarm-scope
/// bridge. It must exist on every node (the runtime makes it on the manager it talks to; `docs/deploy/swarm.md`
/// has the command for the others).
pub const NETWORK_CONFIG: &str = "workspaced-swarm-config";
/// The bridge interface of [`NETWORK`] on every node, named so the egress rules can name it before it exists.
pub const BRIDGE: &str = "wsd-swarm";
/// Docker's bridge for the containers of overlay networks; the egress rules cover it too.
pub const GWBRIDGE: &str = "docker_gwbridge";

/// The share of a workspace's CPU limit its service reserves, unless set (`swarm_cpu_reservation`).
pub const DEFAULT_CPU_RESERVATION: f64 = 0.25;

/// Pause between polls of a task's state.
const POLL: Duration = Duration::from_millis(100);

/// How the workspaces are placed and stopped.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// Placement constraints (`node.labels.workspaced==true`), all of which a node must meet.
    pub constraints: Vec<String>,
    /// Spread over the values of this node attribute (`node.labels.zone`).
    pub spread: Option<String>,
    /// The share of the CPU limit reserved (more than 0, at most 1): what the scheduler places by. Memory is
    /// always reserved whole.
    pub cpu_reservation: f64,
    /// The service's stop grace period (SIGTERM, then SIGKILL): a task on another node gets this one, whatever
    /// `stop` is asked for, since only its own node's engine can stop its container.
    pub stop_grace: Duration,
    /// Longest `ensure_running` waits for the task to run (the lifecycle's start deadline usually ends it first).
    pub start_wait: Duration,
}

impl Default for SwarmOptions {
    fn default() -> Self {
        Self {
            constraints: Vec::new(),
            spread: None,
            cpu_reservation: DEFAULT_CPU_RESERVATION,
            stop_grace: Duration::from_secs(10),
            start_wait: Duration::from_secs(60),
        }
    }
}

/// Runs each workspace as a Swarm service, through a manager's API.
pub struct SwarmRuntime {
    /// The connection (and its timeouts); never asked to create a container.
    docker: DockerRuntime,
    instance: InstanceId,
    call_timeout: Duration,
    options: SwarmOptions,
    /// This engine's node id, once it answered as an active manager.
    node: OnceCell<String>,
    network: OnceCell<()>,
    egress: EgressMode,
    egress_done: OnceCell<()>,
}

/// How waiting for a task ended, when not with a running task.
enum NotRunning {
    Runtime(RuntimeError),
    /// The task ended or was refused: why.
    Ended(String),
}

impl From<RuntimeError> for NotRunning {
    fn from(e: RuntimeError) -> Self {
        Self::Runtime(e)
    }
}

impl SwarmRuntime {
    /// Prepares a runtime without contacting the engine (`DOCKER_HOST` or the default socket); the first call
    /// connects. Fails only on a `DOCKER_HOST` that cannot be used.
    pub fn connect_lazy(
        instance: InstanceId,
        call_timeout: Duration,
        options: SwarmOptions,
    ) -> Result<Self, RuntimeError> {
        let docker = DockerRuntime::connect_lazy(instance.clone(), call_timeout)?.with_egress(EgressMode::Off);
        Ok(Self::on(docker, instance, call_timeout, options))
    }

    /// Like [`Self::connect_lazy`], for an explicit Unix socket (tests).
    pub fn connect_lazy_at(
        socket_path: impl AsRef<std::path::Path>,
        instance: InstanceId,
        call_timeout: Duration,
        options: SwarmOptions,
    ) -> Result<Self, RuntimeError> {
        let docker = DockerRuntime::connect_lazy_at(socket_path, instance.clone(), call_timeout)?;
        Ok(Self::on(docker.with_egress(EgressMode::Off), instance, call_timeout, options))
    }

    fn on(docker: DockerRuntime, instance: InstanceId, call_timeout: Duration, options: SwarmOptions) -> Self {
        Self {
            docker,
            instance,
            call_timeout,
            options,
            node: OnceCell::new(),
            network: OnceCell::new(),
            egress: EgressMode::default(),
            egress_done: OnceCell::new(),
        }
    }

    /// Sets what happens to the egress rules when the network is first used (default: install).
    pub fn with_egress(mut self, mode: EgressMode) -> Self {
        self.egress = mode;
        self
    }

    /// The bridges the egress rules must cover on every node: ours and `docker_gwbridge`.
    pub fn bridges() -> [&'static str; 2] {
        [BRIDGE, GWBRIDGE]
    }

    /// This engine's node id, after checking that it is an active swarm manager (only a manager can create
    /// services). Asked once; an engine that is not one yet is asked again next time.
    pub async fn local_node(&self) -> Result<&str, RuntimeError> {
        let id = self
            .node
            .get_or_try_init(|| async {
                let info = self
                    .docker
                    .call("engine info", self.call_timeout, |d| async move { d.info().await })
                    .await?
                    .map_err(classify)?;
                let swarm = info.swarm.unwrap_or_default();
                let state = swarm.local_node_state.map(|s| s.to_string()).unwrap_or_else(|| "inactive".to_owned());
                match (state.as_str(), swarm.control_available, swarm.node_id) {
                    ("active", Some(true), Some(id)) if !id.is_empty() => Ok(id),
                    ("active", _, _) => Err(RuntimeError::Engine(
                        "this engine is a swarm worker: runtime = swarm needs a manager (DOCKER_HOST)".to_owned(),
                    )),
                    (state, _, _) => Err(RuntimeError::Engine(format!(
                        "this engine is not in a swarm (state {state}): runtime = swarm needs a swarm manager; \
                         run `docker swarm init` (docs/deploy/swarm.md)"
                    ))),
                }
            })
            .await?;
        Ok(id.as_str())
    }

    /// Makes sure the workspaces' network exists and, once per process, applies the egress mode to its bridge and to
    /// `docker_gwbridge` on this node. A firewall failure is logged, not returned: starts go on.
    pub async fn prepare_network(&self) -> Result<(), RuntimeError> {
        self.network.get_or_try_init(|| self.ensure_network()).await?;
        self.egress_done
            .get_or_init(|| async {
                if self.egress != EgressMode::Off {
                    for bridge in Self::bridges() {
                        egress::apply(self.egress, bridge).await;
                    }
                }
            })
            .await;
        Ok(())
    }

    /// The local configuration network, then the swarm-scope network made from it.
    async fn ensure_network(&self) -> Result<(), RuntimeError> {
        let found = self.inspect_network(NETWORK).await?;
        if let Some(net) = found {
            let from = net.config_from.as_ref().and_then(|c| c.network.as_deref());
            if net.scope.as_deref() != Some("swarm") || from != Some(NETWORK_CONFIG) {
                tracing::error!(
                    network = NETWORK,
                    "this network is not the swarm-scope bridge made from {NETWORK_CONFIG}: \
                    tasks may reach each other; remove it (docker network rm) so workspaced recreates it"
                );
            }
            // Only on this node: another node without it fails the task (`workspaced doctor --nodes` shows which).
            self.ensure_config_network().await?;
            return Ok(());
        }
        self.ensure_config_network().await?;
        let request = bollard::models::NetworkCreateRequest {
            name: NETWORK.to_owned(),
            driver: Some("bridge".to_owned()),
            scope: Some("swarm".to_owned()),
            config_from: Some(bollard::models::ConfigReference { network: Some(NETWORK_CONFIG.to_owned()) }),
            // No labels: the engine refuses any setting of its own on a network made from a configuration network.
            ..Default::default()
        };
        self.create_network(request).await?;
        tracing::info!(
            network = NETWORK,
            bridge = BRIDGE,
            "created the workspaces' swarm network (no traffic between tasks)"
        );
        Ok(())
    }

    async fn ensure_config_network(&self) -> Result<(), RuntimeError> {
        if self.inspect_network(NETWORK_CONFIG).await?.is_some() {
            return Ok(());
        }
        let request = bollard::models::NetworkCreateRequest {
            name: NETWORK_CONFIG.to_owned(),
            config_only: Some(true),
            options: Some(config_network_options()),
            labels: Some(HashMap::from([(LABEL_MANAGED_BY.to_owned(), LABEL_MANAGED_BY_VALUE.to_owned())])),
            ..Default::default()
        };
        self.create_network(request).await
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<bollard::models::NetworkInspect>, RuntimeError> {
        let answer = self
            .docker
            .call("inspect network", self.call_timeout, |d| async move {
                d.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await
            })
            .await?;
        match answer {
            Ok(net) => Ok(Some(net)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Creates a network; one that appeared meanwhile (409) is fine. Engines before API 1.44 accept two networks
    /// of one name, so creation is serialized within the process.
    async fn create_network(&self, request: bollard::models::NetworkCreateRequest) -> Result<(), RuntimeError> {
        static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _one = CREATING.lock().await;
        if self.inspect_network(&request.name).await?.is_some() {
            return Ok(());
        }
        let answer = self
            .docker
            .call("create network", self.call_timeout, |d| async move { d.create_network(request).await })
            .await?;
        match answer {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// A service by name or id; `None` when the swarm does not know it.
    async fn service(&self, name_or_id: &str) -> Result<Option<Service>, RuntimeError> {
        let answer = self
            .docker
            .call("inspect service", self.call_timeout, |d| async move {
                d.inspect_service(name_or_id, None::<InspectServiceOptions>).await
            })
            .await?;
        match answer {
            Ok(s) => Ok(Some(s)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// The tasks of these services (one call per 100 services).
    async fn tasks_of(&self, service_ids: &[String]) -> Result<Vec<Task>, RuntimeError> {
        let mut all = Vec::new();
        for chunk in service_ids.chunks(100) {
            let filters = HashMap::from([("service", chunk.to_vec())]);
            let options = ListTasksOptionsBuilder::new().filters(&filters).build();
            let tasks = self
                .docker
                .call("list tasks", self.call_timeout, |d| async move { d.list_tasks(Some(options)).await })
                .await?
                .map_err(classify)?;
            all.extend(tasks);
        }
        Ok(all)
    }

    /// Every node of the swarm by id.
    async fn nodes(&self) -> Result<HashMap<String, Node>, RuntimeError> {
        let nodes = self
            .docker
            .call("list nodes", self.call_timeout, |d| async move { d.list_nodes(None::<ListNodesOptions>).await })
            .await?
            .map_err(classify)?;
        Ok(nodes.into_iter().filter_map(|n| Some((n.id.clone()?, n))).collect())
    }

    fn labels_of(s: &Service) -> Option<&HashMap<String, String>> {
        s.spec.as_ref().and_then(|spec| spec.labels.as_ref())
    }

    /// The service's id, or `Conflict` if it is not ours for that student.
    fn owned_id(&self, s: &Service, student: &StudentId) -> Result<String, RuntimeError> {
        let labels = Self::labels_of(s);
        let name = s.spec.as_ref().and_then(|spec| spec.name.clone()).unwrap_or_default();
        let student_label = labels.and_then(|l| l.get(LABEL_STUDENT)).map(String::as_str);
        if !self.docker.is_ours(labels) || student_label != Some(student.as_str()) {
            return Err(RuntimeError::Conflict(name));
        }
        Ok(s.id.clone().unwrap_or_default())
    }

    /// The info of one of our services from its newest task. The secret only when asked (inspect).
    fn info(
        &self,
        s: &Service,
        student: StudentId,
        tasks: &[Task],
        nodes: &HashMap<String, Node>,
        with_secret: bool,
    ) -> ContainerInfo {
        let id = s.id.clone().unwrap_or_default();
        let spec = s.spec.as_ref();
        let labels = Self::labels_of(s);
        let port = labels.and_then(|l| l.get(LABEL_PORT)).and_then(|p| p.parse::<u16>().ok());
        let mine: Vec<Task> = tasks.iter().filter(|t| t.service_id.as_deref() == Some(id.as_str())).cloned().collect();
        let phase = tasks::newest(&mine).map(|t| tasks::phase(t, nodes, port));
        let (running, host_port, node_addr) = match &phase {
            // Every node by its address, this one too: the manager may not be the host workspaced runs on.
            Some(Phase::Running { port, node, .. }) => (true, *port, nodes.get(node).and_then(tasks::node_addr)),
            _ => (false, None, None),
        };
        let secret = with_secret.then(|| secret_of(s)).flatten();
        ContainerInfo {
            id,
            name: spec.and_then(|sp| sp.name.clone()).unwrap_or_default(),
            student,
            running,
            state: phase.as_ref().map(tasks::state_text).unwrap_or_else(|| "new".to_owned()),
            host_port,
            node_addr,
            secret,
        }
    }

    /// Inspect with tasks and nodes: the full info of one of our services.
    async fn info_of(&self, s: &Service, student: &StudentId) -> Result<ContainerInfo, RuntimeError> {
        let id = s.id.clone().unwrap_or_default();
        let tasks = self.tasks_of(std::slice::from_ref(&id)).await?;
        let nodes = self.nodes().await?;
        Ok(self.info(s, student.clone(), &tasks, &nodes, true))
    }

    /// Waits until the service's task runs with its port published, or ends, or cannot be placed.
    async fn await_running(
        &self,
        service_id: &str,
        student: &StudentId,
        image: &str,
    ) -> Result<ContainerInfo, NotRunning> {
        let until = Instant::now() + self.options.start_wait;
        loop {
            let Some(s) = self.service(service_id).await? else {
                return Err(NotRunning::Ended("the service was removed while it started".to_owned()));
            };
            let labels = Self::labels_of(&s);
            let port = labels.and_then(|l| l.get(LABEL_PORT)).and_then(|p| p.parse::<u16>().ok());
            let tasks = self.tasks_of(&[service_id.to_owned()]).await?;
            let nodes = self.nodes().await?;
            let phase = tasks::newest(&tasks).map(|t| tasks::phase(t, &nodes, port));
            match phase {
                // On whichever node the scheduler chose: the route holds that node's address.
                Some(Phase::Running { port: Some(_), .. }) => {
                    return Ok(self.info(&s, student.clone(), &tasks, &nodes, true));
                }
                Some(Phase::Waiting { unplaceable: Some(why), .. }) => {
                    return Err(NotRunning::Runtime(RuntimeError::NoCapacity(why)));
                }
                Some(Phase::Ended { why, .. }) if why.contains("No such image") => {
                    return Err(NotRunning::Runtime(RuntimeError::ImageMissing(image.to_owned())));
                }
                Some(Phase::Ended { state, why }) => return Err(NotRunning::Ended(format!("task {state}: {why}"))),
                _ => {}
            }
            if Instant::now() >= until {
                return Err(NotRunning::Runtime(RuntimeError::Engine(format!(
                    "the task did not run within {:?}",
                    self.options.start_wait
                ))));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates the service for `spec`. `Ok(None)`: the name was taken meanwhile (another start).
    async fn create(&self, spec: &ContainerSpec, name: &str) -> Result<Option<String>, RuntimeError> {
        let host_dir = absolute_dir(&spec.host_dir)?;
        self.prepare_network().await?;
        let state_dir = spec.state_dir.as_ref().map(|(d, _)| absolute_dir(d)).transpose()?;
        let body = spec::service_spec(&self.instance, spec, &host_dir, state_dir.as_deref(), &self.options);
        tracing::info!(student = %spec.student, service = name, image = %spec.image, "creating service");
        let answer = self
            .docker
            .call("create service", self.call_timeout, |d| async move { d.create_service(body, None).await })
            .await?;
        match answer {
            Ok(created) => {
                for warning in created.warnings.iter().flatten() {
                    // Every local-only image draws "could not be accessed on a registry to record its digest".
                    tracing::debug!(student = %spec.student, service = name, warning = %warning, "engine warning on create");
                }
                Ok(Some(created.id.unwrap_or_default()))
            }
            Err(e) if status_of(&e) == Some(409) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Stops the service's task (its container directly when it runs on this node, so `grace` holds; elsewhere
    /// with the service's own grace period), removes the service, and waits a bounded time for its task to go.
    /// Bind mounts are not volumes: nothing of the student's is deleted.
    async fn remove_service(&self, id: &str, name: &str, student: &str, grace: Duration) -> Result<(), RuntimeError> {
        let secs = (grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).min(i32::MAX as u64);
        let tasks = self.tasks_of(&[id.to_owned()]).await?;
        let local = self.local_node().await.ok().map(str::to_owned);
        let nodes = self.nodes().await?;
        let phase = tasks::newest(&tasks).map(|t| tasks::phase(t, &nodes, None));
        // A task on a node that is down never reports its end: waiting for it would only hold the caller up.
        let lost = matches!(&phase, Some(Phase::Ended { state, .. }) if state == "lost");
        if let Some(Phase::Running { node, container: Some(container), .. }) = phase {
            if Some(&node) == local.as_ref() {
                tracing::info!(student, service = name, grace_secs = secs, "stopping the task's container");
                let budget = self.call_timeout + Duration::from_secs(secs);
                let options = StopContainerOptionsBuilder::new().t(secs as i32).build();
                let container = container.as_str();
                let answer = self
                    .docker
                    .call("stop container", budget, |d| async move { d.stop_container(container, Some(options)).await })
                    .await?;
                if let Err(e) = answer {
                    tracing::debug!(student, service = name, error = %e, "stopping the task's container failed; removing the service");
                }
            }
        }
        let answer = self
            .docker
            .call("remove service", self.call_timeout, |d| async move { d.delete_service(id).await })
            .await?;
        match answer {
            Ok(()) => tracing::info!(student, service = name, "service removed"),
            Err(e) if status_of(&e) == Some(404) => return Ok(()),
            Err(e) => return Err(classify(e)),
        }
        if lost {
            return Ok(());
        }
        self.await_tasks_gone(id, name, student).await
    }

    /// After a removal: until the engine has no task of the service left and no container of it is left on this
    /// node, for at most the service's grace period plus one call timeout. A task still there then is logged and left to the engine.
    async fn await_tasks_gone(&self, id: &str, name: &str, student: &str) -> Result<(), RuntimeError> {
        let until = Instant::now() + self.options.stop_grace + self.call_timeout;
        // A removed service cannot be named in a task filter; its tasks all want `remove`.
        let filters = HashMap::from([("desired-state", vec!["remove"])]);
        loop {
            let options = ListTasksOptionsBuilder::new().filters(&filters).build();
            let left = self
                .docker
                .call("list tasks", self.call_timeout, |d| async move { d.list_tasks(Some(options)).await })
                .await?
                .map_err(classify)?;
            if !left.iter().any(|t| t.service_id.as_deref() == Some(id)) && !self.local_container_left(id).await? {
                return Ok(());
            }
            if Instant::now() >= until {
                tracing::warn!(
                    student,
                    service = name,
                    "the removed service's task has not stopped yet; the engine finishes it"
                );
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl SwarmRuntime {
    /// Is a container of the service still on this node (stopped, not yet removed by the engine)?
    async fn local_container_left(&self, service_id: &str) -> Result<bool, RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("com.docker.swarm.service.id={service_id}")])]);
        let options =
            bollard::query_parameters::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let left = self
            .docker
            .call("list containers", self.call_timeout, |d| async move { d.list_containers(Some(options)).await })
            .await?
            .map_err(classify)?;
        Ok(!left.is_empty())
    }
}

/// The options of the configuration network: inter-container traffic off, and the bridge named [`BRIDGE`].
pub fn config_network_options() -> HashMap<String, String> {
    HashMap::from([
        ("com.docker.network.bridge.enable_icc".to_owned(), "false".to_owned()),
        (egress::BRIDGE_NAME_OPTION.to_owned(), BRIDGE.to_owned()),
    ])
}

/// The IDE's secret, read back from the service's environment through the variable our label names.
fn secret_of(s: &Service) -> Option<IdeSecret> {
    let spec = s.spec.as_ref()?;
    let name = spec.labels.as_ref()?.get(LABEL_SECRET_ENV)?;
    let prefix = format!("{name}=");
    let env = spec.task_template.as_ref()?.container_spec.as_ref()?.env.as_ref()?;
    env.iter().find_map(|kv| IdeSecret::parse(kv.strip_prefix(&prefix)?))
}

#[async_trait]
impl Runtime for SwarmRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker.ping().await?;
        self.local_node().await.map(drop)
    }

    async fn ensure_running(&self, spec: &ContainerSpec) -> Result<ContainerInfo, RuntimeError> {
        if spec.secret.is_none() {
            return Err(RuntimeError::Engine(
                "the swarm runtime publishes the IDE's port on every interface of the node: it starts no \
                 workspace without a per-workspace secret (ide_auth must not be none)"
                    .to_owned(),
            ));
        }
        self.local_node().await?;
        let name = service_name(&self.instance, &spec.student);
        let student = spec.student.as_str();
        // At most twice: an existing service that ended is replaced once; a second end is the start's failure.
        for _ in 0..2 {
            let existing = match self.service(&name).await? {
                Some(s) => Some(self.owned_id(&s, &spec.student)?),
                None => match self.create(spec, &name).await? {
                    Some(id) => {
                        return match self.await_running(&id, &spec.student, &spec.image).await {
                            Ok(info) => Ok(info),
                            Err(why) => Err(self.discard(&id, &name, student, why).await),
                        };
                    }
                    // Created by another start meanwhile: wait for that one.
                    None => match self.service(&name).await? {
                        Some(s) => Some(self.owned_id(&s, &spec.student)?),
                        None => return Err(RuntimeError::Conflict(name)),
                    },
                },
            };
            let Some(id) = existing else { continue };
            match self.await_running(&id, &spec.student, &spec.image).await {
                Ok(info) => return Ok(info),
                Err(NotRunning::Ended(why)) => {
                    tracing::info!(student, service = %name, why = %why, "replacing a service whose task ended");
                    self.remove_service(&id, &name, student, Duration::ZERO).await?;
                }
                Err(why) => return Err(self.discard(&id, &name, student, why).await),
            }
        }
        Err(RuntimeError::Engine(format!("service {name} kept ending right after it was created")))
    }

    async fn stop(&self, student: &StudentId, grace: Duration) -> Result<(), RuntimeError> {
        let name = service_name(&self.instance, student);
        let Some(s) = self.service(&name).await? else {
            tracing::debug!(student = %student, service = %name, "no service to stop");
            return Ok(());
        };
        let id = self.owned_id(&s, student)?;
        self.remove_service(&id, &name, student.as_str(), grace).await
    }

    async fn remove_by_id(&self, service_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(s) = self.service(service_id).await? else {
            return Ok(());
        };
        let labels = Self::labels_of(&s);
        let name = s.spec.as_ref().and_then(|spec| spec.name.clone()).unwrap_or_default();
        if !self.docker.is_ours(labels) {
            return Err(RuntimeError::Conflict(name));
        }
        let student = labels.and_then(|l| l.get(LABEL_STUDENT)).cloned().unwrap_or_default();
        let id = s.id.clone().unwrap_or_else(|| service_id.to_owned());
        self.remove_service(&id, &name, &student, grace).await
    }

    async fn inspect(&self, student: &StudentId) -> Result<Option<ContainerInfo>, RuntimeError> {
        let name = service_name(&self.instance, student);
        let Some(s) = self.service(&name).await? else {
            return Ok(None);
        };
        self.owned_id(&s, student)?;
        self.info_of(&s, student).await.map(Some)
    }

    async fn list_owned(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_MANAGED_BY}={LABEL_MANAGED_BY_VALUE}"), format!("{LABEL_INSTANCE}={}", self.instance)],
        )]);
        let options = ListServicesOptionsBuilder::new().filters(&filters).build();
        let services = self
            .docker
            .call("list services", self.call_timeout, |d| async move { d.list_services(Some(options)).await })
            .await?
            .map_err(classify)?;
        let ours: Vec<(Service, StudentId)> = services
            .into_iter()
            .filter(|s| self.docker.is_ours(Self::labels_of(s)))
            .filter_map(|s| {
                let raw = Self::labels_of(&s).and_then(|l| l.get(LABEL_STUDENT)).cloned().unwrap_or_default();
                match StudentId::parse(&raw) {
                    Ok(student) => Some((s, student)),
                    Err(e) => {
                        tracing::warn!(service = ?s.id, student = %raw.escape_debug(), error = %e, "skipping a service of ours with an invalid student label");
                        None
                    }
                }
            })
            .collect();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ours.iter().filter_map(|(s, _)| s.id.clone()).collect();
        let tasks = self.tasks_of(&ids).await?;
        let nodes = self.nodes().await?;
        Ok(ours.into_iter().map(|(s, student)| self.info(&s, student, &tasks, &nodes, false)).collect())
    }

    /// The stats of the service's running task, read from this engine when the task runs on this node (the task's
    /// status names its container). A task on another node has none here (`Ok(None)`): only its node's engine
    /// has its container, and workspaced talks to one manager.
    async fn stats(&self, student: &StudentId) -> Result<Option<super::ContainerStats>, RuntimeError> {
        let name = service_name(&self.instance, student);
        let Some(s) = self.service(&name).await? else {
            return Ok(None);
        };
        let id = self.owned_id(&s, student)?;
        let local = self.local_node().await?.to_owned();
        let tasks = self.tasks_of(&[id]).await?;
        match tasks::newest(&tasks).and_then(|t| tasks::running_container_on(t, &local)) {
            Some(container) => self.docker.container_stats(&container).await,
            None => Ok(None),
        }
    }
}

impl SwarmRuntime {
    /// After a failed start: removes the service so nothing is left, and returns the error to report.
    async fn discard(&self, id: &str, name: &str, student: &str, why: NotRunning) -> RuntimeError {
        let error = match why {
            NotRunning::Runtime(e) => e,
            NotRunning::Ended(why) => RuntimeError::Engine(why),
        };
        tracing::warn!(student, service = name, error = %error, "start failed; removing the service");
        if let Err(e) = self.remove_service(id, name, student, Duration::ZERO).await {
            tracing::warn!(student, service = name, error = %e, "could not remove the service of a failed start");
        }
        error
    }
}
