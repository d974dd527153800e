//! Docker implementation of [`Runtime`] over bollard (see `runtime/mod.rs` for the contract).
//!
//! Every daemon call runs under `tokio::time::timeout`, so a stuck engine turns into
//! [`RuntimeError::Unavailable`] instead of a hung request. Ownership is decided by labels, checked by the engine
//! (list filters) and again here, and destructive calls address containers by the id we inspected, so a name that
//! changed hands in between is never touched.

pub mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ContainerSummaryStateEnum, HostConfig,
    PortBinding, PortMap, ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
};
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::egress::{self, EgressMode};
use super::{
    container_name, ContainerInfo, ContainerSpec, Runtime, RuntimeError, LABEL_INSTANCE, LABEL_MANAGED_BY,
    LABEL_MANAGED_BY_VALUE, LABEL_SECRET_ENV, LABEL_STUDENT,
};
use crate::domain::{IdeSecret, InstanceId, StudentId};

/// Label holding the container port, so `list_owned` can find the published port without knowing the spec.
pub const LABEL_PORT: &str = "workspaced.port";

/// Socket used when `DOCKER_HOST` is unset, as the Docker CLI does.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// bollard's own per-request timeout. Ours (`call_timeout`, plus the grace on stop) is the one that counts; this is
/// only a backstop, long enough never to cut a stop with a long grace short (bollard's default is 120 s).
const TRANSPORT_TIMEOUT_SECS: u64 = 24 * 3600;

/// How long to re-inspect after start until the engine reports the published port.
const PORT_WAIT: Duration = Duration::from_secs(1);

/// How long to wait for a removal that someone else started to finish.
const REMOVAL_WAIT: Duration = Duration::from_secs(3);

/// Pause between polls of the two waits above.
const POLL: Duration = Duration::from_millis(100);

/// Where the engine listens. Kept so a lazily created runtime can open the client on first use.
#[derive(Debug, Clone)]
enum Endpoint {
    Unix(String),
    Http(String),
}

impl Endpoint {
    /// Honours `DOCKER_HOST` (`unix://` or plain `tcp://`/`http://`), else the default socket.
    fn from_env() -> Result<Self, RuntimeError> {
        match std::env::var("DOCKER_HOST") {
            Err(_) => Ok(Self::Unix(DEFAULT_SOCKET.to_owned())),
            Ok(host) if host.is_empty() => Ok(Self::Unix(DEFAULT_SOCKET.to_owned())),
            Ok(host) if host.starts_with("unix://") => Ok(Self::Unix(host)),
            Ok(host) if host.starts_with("tcp://") || host.starts_with("http://") => {
                if std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty()) {
                    return Err(RuntimeError::Engine(format!(
                        "DOCKER_HOST={host} with DOCKER_TLS_VERIFY: TLS connections to the engine are not supported"
                    )));
                }
                Ok(Self::Http(host))
            }
            Ok(host) => Err(RuntimeError::Engine(format!("unsupported DOCKER_HOST {host}; use unix:// or tcp://"))),
        }
    }

    /// Builds a client speaking `version`. Fails fast (`SocketNotFoundError`) when the socket file is missing.
    fn open(&self, version: &ClientVersion) -> Result<Docker, BollardError> {
        match self {
            Self::Unix(path) => Docker::connect_with_unix(path, TRANSPORT_TIMEOUT_SECS, version),
            Self::Http(addr) => Docker::connect_with_http(addr, TRANSPORT_TIMEOUT_SECS, version),
        }
    }

    /// Opens a client and settles on an API version both sides speak.
    ///
    /// bollard's `negotiate_version` asks `/v1.53/version`, which an older engine (Docker 20.10, API 1.41) rejects
    /// with 400 "client version 1.53 is too new. Maximum supported API version is 1.41" instead of answering. So on
    /// such a 400 we reopen at the version the engine names and negotiate again.
    async fn open_negotiated(&self) -> Result<Docker, BollardError> {
        let docker = self.negotiate().await?;
        tracing::info!(api_version = %docker.client_version(), "connected to the container engine");
        Ok(docker)
    }

    async fn negotiate(&self) -> Result<Docker, BollardError> {
        match self.open(API_DEFAULT_VERSION)?.negotiate_version().await {
            Err(BollardError::DockerResponseServerError { status_code: 400, message }) => {
                match version_named_in(&message) {
                    Some(version) => self.open(&version)?.negotiate_version().await,
                    None => Err(BollardError::DockerResponseServerError { status_code: 400, message }),
                }
            }
            other => other,
        }
    }
}

/// The API version an engine names in its "too new"/"too old" refusal ("... supported API version is 1.41").
fn version_named_in(message: &str) -> Option<ClientVersion> {
    let rest = message.split("API version is ").nth(1)?;
    let word: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let (major, minor) = word.trim_end_matches('.').split_once('.')?;
    Some(ClientVersion { major_version: major.parse().ok()?, minor_version: minor.parse().ok()? })
}

/// Talks to the local Docker engine over its Unix socket (or `DOCKER_HOST`), API version negotiated.
///
/// The client is opened on first use and kept; until the engine has answered once, every call retries opening it,
/// so the service can boot while Docker is down and work as soon as it is back.
pub struct DockerRuntime {
    instance: InstanceId,
    call_timeout: Duration,
    endpoint: Endpoint,
    client: OnceCell<Docker>,
    /// Set once the workspaces' network (shared by every instance on the engine) exists (see [`NETWORK`]).
    network: OnceCell<()>,
    /// What to do about the egress rules of the network's bridge ([`egress`]), and set once it was done.
    egress: EgressMode,
    egress_done: OnceCell<()>,
}

/// The bridge network of all workspaces, created with inter-container traffic off
/// (`com.docker.network.bridge.enable_icc=false`), so a student's terminal cannot reach another student's IDE by its
/// container address. Published ports on 127.0.0.1 and outbound traffic work as on the default bridge. One network
/// for every instance on the engine: isolation holds between any two containers on it, and networks (a limited
/// pool of address ranges) do not pile up.
pub const NETWORK: &str = "workspaced-isolated";

impl DockerRuntime {
    /// CPU, memory and process count of a container on this engine, by name or id (`None`: no such container).
    /// The caller has checked it is ours and running (`stats`; the Swarm runtime for its task's container).
    pub(super) async fn container_stats(&self, name: &str) -> Result<Option<super::ContainerStats>, RuntimeError> {
        use futures_util::StreamExt;
        // Not one-shot: the engine samples twice, a second apart, so the CPU delta is meaningful.
        let options = bollard::query_parameters::StatsOptionsBuilder::new().stream(false).one_shot(false).build();
        let first = self
            .call("container stats", self.call_timeout, |d| async move {
                d.stats(name, Some(options)).next().await.transpose()
            })
            .await?;
        let s = match first {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(None),
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let cpu = |c: &Option<bollard::models::ContainerCpuStats>| {
            let c = c.as_ref();
            let total = c.and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0);
            (total, c.and_then(|c| c.system_cpu_usage).unwrap_or(0), c.and_then(|c| c.online_cpus).unwrap_or(1))
        };
        let (total, system, cpus) = cpu(&s.cpu_stats);
        let (pre_total, pre_system, _) = cpu(&s.precpu_stats);
        let (d_cpu, d_sys) = (total.saturating_sub(pre_total), system.saturating_sub(pre_system));
        let cpu_percent = if d_sys > 0 { d_cpu as f64 / d_sys as f64 * f64::from(cpus) * 100.0 } else { 0.0 };
        let mem = s.memory_stats.as_ref();
        // The page cache the kernel can drop: `inactive_file` on cgroup v2, `total_inactive_file` on v1.
        let cache = mem
            .and_then(|m| m.stats.as_ref())
            .and_then(|st| st.get("inactive_file").or_else(|| st.get("total_inactive_file")).copied())
            .unwrap_or(0);
        Ok(Some(super::ContainerStats {
            cpu_percent: (cpu_percent * 10.0).round() / 10.0,
            memory_bytes: mem.and_then(|m| m.usage).unwrap_or(0).saturating_sub(cache),
            memory_limit_bytes: mem.and_then(|m| m.limit).unwrap_or(0),
            pids: s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        }))
    }

    /// Connects and negotiates the API version with the engine. `call_timeout` bounds every daemon call.
    /// An engine that cannot be reached is [`RuntimeError::Unavailable`]; use [`Self::connect_lazy`] to boot anyway.
    pub async fn connect(instance: InstanceId, call_timeout: Duration) -> Result<Self, RuntimeError> {
        let runtime = Self::connect_lazy(instance, call_timeout)?;
        runtime.client(Instant::now() + call_timeout).await?;
        Ok(runtime)
    }

    /// Prepares a runtime without contacting the engine; the first call (e.g. `ping`) connects and negotiates.
    /// Fails only on a `DOCKER_HOST` we cannot use.
    pub fn connect_lazy(instance: InstanceId, call_timeout: Duration) -> Result<Self, RuntimeError> {
        Ok(Self::with_endpoint(Endpoint::from_env()?, instance, call_timeout))
    }

    /// Like [`Self::connect_lazy`], for an explicit Unix socket path (tests, or an engine on a non-default socket).
    pub fn connect_lazy_at(
        socket_path: impl AsRef<Path>,
        instance: InstanceId,
        call_timeout: Duration,
    ) -> Result<Self, RuntimeError> {
        let path = socket_path.as_ref();
        let path = path
            .to_str()
            .ok_or_else(|| RuntimeError::Engine(format!("socket path {} is not UTF-8", path.display())))?;
        Ok(Self::with_endpoint(Endpoint::Unix(path.to_owned()), instance, call_timeout))
    }

    fn with_endpoint(endpoint: Endpoint, instance: InstanceId, call_timeout: Duration) -> Self {
        let (network, egress_done) = (OnceCell::new(), OnceCell::new());
        Self {
            instance,
            call_timeout,
            endpoint,
            client: OnceCell::new(),
            network,
            egress: EgressMode::default(),
            egress_done,
        }
    }

    /// Sets what happens to the egress rules when the network is first used (default: install).
    pub fn with_egress(mut self, mode: EgressMode) -> Self {
        self.egress = mode;
        self
    }

    /// Makes sure the workspaces' network exists and, once per process, applies the egress mode to its bridge
    /// (installing the rules, or checking them). A firewall failure is logged, not returned: starts go on.
    pub async fn prepare_network(&self) -> Result<(), RuntimeError> {
        self.ensure_network().await?;
        self.egress_done
            .get_or_try_init(|| async {
                if self.egress != EgressMode::Off {
                    let bridge = self.network_bridge().await?.unwrap_or_else(|| egress::BRIDGE.to_owned());
                    egress::apply(self.egress, &bridge).await;
                }
                Ok::<(), RuntimeError>(())
            })
            .await
            .map(|_| ())
    }

    /// The engine's answer about the workspaces' network (a 404 is in the inner `Err`).
    async fn inspect_network(&self) -> Result<Result<bollard::models::NetworkInspect, BollardError>, RuntimeError> {
        self.call("inspect network", self.call_timeout, |d| async move {
            d.inspect_network(NETWORK, None::<bollard::query_parameters::InspectNetworkOptions>).await
        })
        .await
    }

    /// The bridge interface of the workspaces' network (see [`egress::bridge_interface`]); `None` while it does
    /// not exist.
    pub async fn network_bridge(&self) -> Result<Option<String>, RuntimeError> {
        let found = self.inspect_network().await?;
        match found {
            Ok(net) => {
                let id = net.id.unwrap_or_default();
                let named = net.options.as_ref().and_then(|o| o.get(egress::BRIDGE_NAME_OPTION)).map(String::as_str);
                Ok(Some(egress::bridge_interface(&id, named)))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Is `image` present locally? We never pull, so a start needs it here (404 is `false`, not an error).
    pub async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.call("inspect image", self.call_timeout, |d| async move { d.inspect_image(image).await }).await? {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    /// The negotiated client, opening it if no call has succeeded yet. Bounded by `deadline`.
    async fn client(&self, deadline: Instant) -> Result<&Docker, RuntimeError> {
        if let Some(docker) = self.client.get() {
            return Ok(docker);
        }
        let open = self.client.get_or_try_init(|| async { self.endpoint.open_negotiated().await.map_err(classify) });
        match tokio::time::timeout_at(deadline, open).await {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::Unavailable(format!(
                "connecting to the engine took longer than {:?}",
                self.call_timeout
            ))),
        }
    }

    /// Runs one daemon call within `budget` (connecting included). The outer error is "could not talk to the
    /// engine in time"; the inner result is the engine's answer, left raw so callers can treat 404/409 specially.
    pub(super) async fn call<'a, T, F, Fut>(
        &'a self,
        what: &str,
        budget: Duration,
        f: F,
    ) -> Result<Result<T, BollardError>, RuntimeError>
    where
        F: FnOnce(&'a Docker) -> Fut,
        Fut: Future<Output = Result<T, BollardError>> + 'a,
    {
        let deadline = Instant::now() + budget;
        let docker = self.client(deadline).await?;
        tokio::time::timeout_at(deadline, f(docker))
            .await
            .map_err(|_| RuntimeError::Unavailable(format!("{what} took longer than {budget:?}")))
    }

    /// Inspects a container by name or id; `None` when the engine does not know it.
    async fn inspect_raw(&self, name_or_id: &str) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        let answer = self
            .call("inspect container", self.call_timeout, |d| async move {
                d.inspect_container(name_or_id, None::<InspectContainerOptions>).await
            })
            .await?;
        match answer {
            Ok(c) => Ok(Some(c)),
            Err(e) if status_of(&e) == Some(404) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Do these labels say "workspaced, this instance"? The only test of ownership.
    pub(super) fn is_ours(&self, labels: Option<&HashMap<String, String>>) -> bool {
        labels.is_some_and(|l| {
            l.get(LABEL_MANAGED_BY).map(String::as_str) == Some(LABEL_MANAGED_BY_VALUE)
                && l.get(LABEL_INSTANCE).map(String::as_str) == Some(self.instance.as_str())
        })
    }

    /// The info of a container found under `student`'s name, or `Conflict` if it is not ours for that student.
    fn owned_info(&self, c: &ContainerInspectResponse, student: &StudentId) -> Result<ContainerInfo, RuntimeError> {
        let name = inspect_name(c);
        let labels = c.config.as_ref().and_then(|cfg| cfg.labels.as_ref());
        let student_label = labels.and_then(|l| l.get(LABEL_STUDENT)).map(String::as_str);
        if !self.is_ours(labels) || student_label != Some(student.as_str()) {
            return Err(RuntimeError::Conflict(name));
        }
        Ok(info_from_inspect(c, student.clone()))
    }

    /// After a start: re-inspects until the engine reports the container running with its port published.
    async fn wait_for_port(&self, id: &str, student: &StudentId) -> Result<ContainerInfo, RuntimeError> {
        let until = Instant::now() + PORT_WAIT;
        loop {
            let Some(c) = self.inspect_raw(id).await? else {
                return Err(RuntimeError::Engine(format!("container {id} disappeared right after it started")));
            };
            let info = self.owned_info(&c, student)?;
            if !info.running {
                let state = c.state.as_ref();
                let code = state.and_then(|s| s.exit_code).unwrap_or_default();
                let error = state.and_then(|s| s.error.clone()).unwrap_or_default();
                return Err(RuntimeError::Engine(format!(
                    "container {} is {} right after start (exit code {code}) {error}",
                    info.name, info.state
                )));
            }
            if info.host_port.is_some() {
                return Ok(info);
            }
            if Instant::now() >= until {
                return Err(RuntimeError::Engine(format!(
                    "container {} is running but the engine reports no published port",
                    info.name
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops (SIGTERM, SIGKILL after `grace`) then removes the container with this id. A vanished container is
    /// success. Volumes are never removed (`v=false`): a student's files must survive.
    async fn stop_and_remove(&self, id: &str, name: &str, student: &str, grace: Duration) -> Result<(), RuntimeError> {
        let secs = (grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).min(i32::MAX as u64);
        let budget = self.call_timeout + Duration::from_secs(secs);
        tracing::info!(student, container = name, grace_secs = secs, "stopping container");
        let options = StopContainerOptionsBuilder::new().t(secs as i32).build();
        let answer =
            self.call("stop container", budget, |d| async move { d.stop_container(id, Some(options)).await }).await?;
        match answer {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {
                tracing::debug!(student, container = name, "container already gone");
                return Ok(());
            }
            // The engine could not stop it cleanly (or a removal is under way): the forced removal below kills it,
            // which is what stop promises after the grace anyway.
            Err(e) => {
                tracing::warn!(student, container = name, error = %e, "stop failed; removing by force")
            }
        }
        self.remove_forced(id, name, student).await
    }

    /// Force-removes a container (kills it if running), keeping volumes. 404 and "removal already in progress" are
    /// success, the latter once the container is gone (or after a short wait).
    async fn remove_forced(&self, id: &str, name: &str, student: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).v(false).build();
        let answer = self
            .call("remove container", self.call_timeout, |d| async move { d.remove_container(id, Some(options)).await })
            .await?;
        match answer {
            Ok(()) => {
                tracing::info!(student, container = name, "container removed");
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) if status_of(&e) == Some(409) => {
                tracing::debug!(student, container = name, error = %e, "removal already in progress; waiting");
                let until = Instant::now() + REMOVAL_WAIT;
                while Instant::now() < until && self.inspect_raw(id).await?.is_some() {
                    tokio::time::sleep(POLL).await;
                }
                Ok(())
            }
            Err(e) => Err(classify(e)),
        }
    }

    /// The create request for `spec`: limits, loopback-only ephemeral port, bind mount, no new privileges, no
    /// restart policy (the lifecycle decides what runs), our labels forced to their true values.
    fn create_body(&self, spec: &ContainerSpec, host_dir: &str, state_dir: Option<&str>) -> ContainerCreateBody {
        let port_key = format!("{}/tcp", spec.container_port);
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(LABEL_MANAGED_BY.to_owned(), LABEL_MANAGED_BY_VALUE.to_owned());
        labels.insert(LABEL_INSTANCE.to_owned(), self.instance.to_string());
        labels.insert(LABEL_STUDENT.to_owned(), spec.student.to_string());
        labels.insert(LABEL_PORT.to_owned(), spec.container_port.to_string());
        let mut env = spec.env.clone();
        if let Some(secret) = &spec.secret {
            labels.insert(LABEL_SECRET_ENV.to_owned(), secret.name.clone());
            env.push(format!("{}={}", secret.name, secret.value.expose()));
        }
        let port_bindings: PortMap = HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding { host_ip: Some("127.0.0.1".to_owned()), host_port: Some(String::new()) }]),
        )]);
        let positive = |v: i64| (v > 0).then_some(v);
        let mut binds = vec![format!("{host_dir}:{}:rw", spec.mount_target)];
        if let (Some(dir), Some((_, target))) = (state_dir, &spec.state_dir) {
            binds.push(format!("{dir}:{target}:rw"));
        }
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(env),
            user: (!spec.user.is_empty()).then(|| spec.user.clone()),
            labels: Some(labels),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(HostConfig {
                binds: Some(binds),
                port_bindings: Some(port_bindings),
                nano_cpus: positive(spec.nano_cpus),
                memory: positive(spec.memory_bytes),
                memory_swap: (spec.memory_swap_bytes != 0).then_some(spec.memory_swap_bytes),
                pids_limit: positive(spec.pids_limit),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                cap_drop: spec.hardening.cap_drop_all.then(|| vec!["ALL".to_owned()]),
                ulimits: Some(vec![ResourcesUlimits {
                    name: Some("nofile".to_owned()),
                    soft: i64::try_from(spec.hardening.nofile).ok(),
                    hard: i64::try_from(spec.hardening.nofile).ok(),
                }]),
                tmpfs: spec.hardening.tmp_size.map(|size| {
                    // Sticky and world-writable like any /tmp; noexec-free so build tools can run from it.
                    HashMap::from([("/tmp".to_owned(), format!("rw,nosuid,nodev,mode=1777,size={size}"))])
                }),
                readonly_rootfs: Some(spec.hardening.read_only_root),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                init: Some(false),
                network_mode: Some(NETWORK.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the instance's network when missing (once per process).
    async fn ensure_network(&self) -> Result<(), RuntimeError> {
        self.network
            .get_or_try_init(|| async {
                // Engines before API 1.44 accept two networks of one name: look first, and create under a
                // process-wide lock (a second instance starting at the same moment on one engine is not covered).
                static CREATING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
                let _one = CREATING.lock().await;
                let found = self.inspect_network().await?;
                match found {
                    Ok(net) => {
                        let icc = net.options.as_ref().and_then(|o| o.get("com.docker.network.bridge.enable_icc"));
                        if icc.map(String::as_str) != Some("false") {
                            tracing::error!(network = NETWORK, "this network lets containers reach each other; \
                                remove it (docker network rm) so workspaced recreates it with enable_icc=false");
                        }
                        return Ok(());
                    }
                    Err(e) if status_of(&e) == Some(404) => {}
                    Err(e) => return Err(classify(e)),
                }
                let name = NETWORK.to_owned();
                let request = bollard::models::NetworkCreateRequest {
                    name: name.clone(),
                    driver: Some("bridge".to_owned()),
                    // A bridge name of our own, so the egress rules can name it before the network exists.
                    options: Some(HashMap::from([
                        ("com.docker.network.bridge.enable_icc".to_owned(), "false".to_owned()),
                        (egress::BRIDGE_NAME_OPTION.to_owned(), egress::BRIDGE.to_owned()),
                    ])),
                    labels: Some(HashMap::from([(LABEL_MANAGED_BY.to_owned(), LABEL_MANAGED_BY_VALUE.to_owned())])),
                    ..Default::default()
                };
                let answer = self
                    .call("create network", self.call_timeout, |d| async move { d.create_network(request).await })
                    .await?;
                match answer {
                    Ok(_) => {
                        tracing::info!(network = %name, "created the workspaces' network (no traffic between containers)");
                        Ok(())
                    }
                    Err(e) if status_of(&e) == Some(409) => Ok(()),
                    Err(e) => Err(classify(e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Starts a freshly created container; on failure removes it so nothing is left behind.
    async fn start_or_discard(&self, id: &str, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let answer = self
            .call("start container", self.call_timeout, |d| async move {
                d.start_container(id, None::<StartContainerOptions>).await
            })
            .await;
        let error = match answer {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => classify(e),
            Err(e) => e,
        };
        tracing::warn!(student = %spec.student, container = %spec.name, error = %error, "start failed; removing");
        if let Err(e) = self.remove_forced(id, &spec.name, spec.student.as_str()).await {
            tracing::warn!(student = %spec.student, container = %spec.name, error = %e, "could not remove failed container");
        }
        Err(error)
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.call("ping", self.call_timeout, |d| async move { d.ping().await }).await?.map(drop).map_err(classify)
    }

    async fn ensure_running(&self, spec: &ContainerSpec) -> Result<ContainerInfo, RuntimeError> {
        let expected = container_name(&self.instance, &spec.student);
        if spec.name != expected {
            return Err(RuntimeError::Engine(format!(
                "spec names the container {} but student {} of this instance is {expected}",
                spec.name, spec.student
            )));
        }
        let student = spec.student.as_str();
        if let Some(c) = self.inspect_raw(&spec.name).await? {
            let info = self.owned_info(&c, &spec.student)?;
            if info.running {
                return self.wait_for_port(&info.id, &spec.student).await;
            }
            tracing::info!(student, container = %spec.name, state = %info.state, "replacing a container that is not running");
            self.remove_forced(&info.id, &spec.name, student).await?;
        }

        let host_dir = absolute_dir(&spec.host_dir)?;
        let state_dir = spec.state_dir.as_ref().map(|(dir, _)| absolute_dir(dir)).transpose()?;
        self.prepare_network().await?;
        let body = self.create_body(spec, &host_dir, state_dir.as_deref());
        let options = CreateContainerOptionsBuilder::new().name(&spec.name).build();
        tracing::info!(student, container = %spec.name, image = %spec.image, "creating container");
        let answer =
            self.call("create container", self.call_timeout, |d| async move {
                d.create_container(Some(options), body).await
            })
            .await?;
        let created = match answer {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(404) => return Err(RuntimeError::ImageMissing(spec.image.clone())),
            Err(e) if status_of(&e) == Some(409) => {
                // Someone created it between our inspect and our create.
                tracing::debug!(student, container = %spec.name, error = %e, "name taken while creating");
                return match self.inspect_raw(&spec.name).await? {
                    Some(c) => match self.owned_info(&c, &spec.student)? {
                        info if info.running => self.wait_for_port(&info.id, &spec.student).await,
                        _ => Err(RuntimeError::Conflict(spec.name.clone())),
                    },
                    None => Err(RuntimeError::Conflict(spec.name.clone())),
                };
            }
            Err(e) => return Err(classify(e)),
        };
        for warning in &created.warnings {
            tracing::warn!(student, container = %spec.name, warning = %warning, "engine warning on create");
        }
        self.start_or_discard(&created.id, spec).await?;
        tracing::info!(student, container = %spec.name, id = %created.id, "container started");
        self.wait_for_port(&created.id, &spec.student).await
    }

    async fn stop(&self, student: &StudentId, grace: Duration) -> Result<(), RuntimeError> {
        let name = container_name(&self.instance, student);
        let Some(c) = self.inspect_raw(&name).await? else {
            tracing::debug!(student = %student, container = %name, "no container to stop");
            return Ok(());
        };
        let info = self.owned_info(&c, student)?;
        self.stop_and_remove(&info.id, &info.name, student.as_str(), grace).await
    }

    async fn remove_by_id(&self, container_id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(c) = self.inspect_raw(container_id).await? else {
            return Ok(());
        };
        let name = inspect_name(&c);
        let labels = c.config.as_ref().and_then(|cfg| cfg.labels.as_ref());
        if !self.is_ours(labels) {
            return Err(RuntimeError::Conflict(name));
        }
        let student = labels.and_then(|l| l.get(LABEL_STUDENT)).cloned().unwrap_or_default();
        let id = c.id.as_deref().unwrap_or(container_id);
        self.stop_and_remove(id, &name, &student, grace).await
    }

    async fn inspect(&self, student: &StudentId) -> Result<Option<ContainerInfo>, RuntimeError> {
        let name = container_name(&self.instance, student);
        match self.inspect_raw(&name).await? {
            Some(c) => self.owned_info(&c, student).map(Some),
            None => Ok(None),
        }
    }

    async fn stats(&self, student: &StudentId) -> Result<Option<super::ContainerStats>, RuntimeError> {
        if !self.inspect(student).await?.is_some_and(|c| c.running) {
            return Ok(None);
        }
        self.container_stats(&container_name(&self.instance, student)).await
    }

    async fn list_owned(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters = HashMap::from([(
            "label",
            vec![format!("{LABEL_MANAGED_BY}={LABEL_MANAGED_BY_VALUE}"), format!("{LABEL_INSTANCE}={}", self.instance)],
        )]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let summaries = self
            .call("list containers", self.call_timeout, |d| async move { d.list_containers(Some(options)).await })
            .await?
            .map_err(classify)?;
        Ok(summaries.iter().filter_map(|s| self.info_from_summary(s)).collect())
    }
}

impl DockerRuntime {
    /// A listed container as info, if it is ours (checked again here) and its student label is a valid id.
    fn info_from_summary(&self, s: &ContainerSummary) -> Option<ContainerInfo> {
        let labels = s.labels.as_ref();
        if !self.is_ours(labels) {
            return None;
        }
        let id = s.id.clone().unwrap_or_default();
        let raw_student = labels.and_then(|l| l.get(LABEL_STUDENT)).map(String::as_str).unwrap_or_default();
        let student = match StudentId::parse(raw_student) {
            Ok(student) => student,
            Err(e) => {
                tracing::warn!(container = %id, student = raw_student, error = %e, "skipping a container of ours with an invalid student label");
                return None;
            }
        };
        let name =
            s.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_owned()).unwrap_or_default();
        let state = s.state.as_ref().map(ToString::to_string).unwrap_or_default();
        let running = s.state == Some(ContainerSummaryStateEnum::RUNNING);
        let port = labels.and_then(|l| l.get(LABEL_PORT)).and_then(|p| p.parse::<u16>().ok());
        let host_port = match (running, port) {
            (true, Some(port)) => {
                let published: Vec<_> = s
                    .ports
                    .iter()
                    .flatten()
                    .filter(|p| p.private_port == port && p.public_port.is_some())
                    .filter(|p| p.typ.as_ref().is_none_or(|t| t.to_string() == "tcp"))
                    .collect();
                published
                    .iter()
                    .find(|p| p.ip.as_deref() == Some("127.0.0.1"))
                    .or(published.first())
                    .and_then(|p| p.public_port)
            }
            _ => None,
        };
        Some(ContainerInfo { id, name, student, running, state, host_port, node_addr: None, secret: None })
    }
}

/// The container's name without Docker's leading '/'.
fn inspect_name(c: &ContainerInspectResponse) -> String {
    c.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned()
}

/// Info from an inspect whose ownership the caller has checked. The host port is the one published for the port
/// recorded in our label (or, for a container without it, the first published TCP port).
fn info_from_inspect(c: &ContainerInspectResponse, student: StudentId) -> ContainerInfo {
    let state = c.state.as_ref();
    let running = state.and_then(|s| s.running).unwrap_or(false);
    let port = c
        .config
        .as_ref()
        .and_then(|cfg| cfg.labels.as_ref())
        .and_then(|l| l.get(LABEL_PORT))
        .and_then(|p| p.parse::<u16>().ok());
    let ports = c.network_settings.as_ref().and_then(|n| n.ports.as_ref());
    let config = c.config.as_ref();
    let secret_env = config.and_then(|cfg| cfg.labels.as_ref()).and_then(|l| l.get(LABEL_SECRET_ENV));
    let secret = secret_env.and_then(|name| {
        let prefix = format!("{name}=");
        config?.env.as_ref()?.iter().find_map(|kv| IdeSecret::parse(kv.strip_prefix(&prefix)?))
    });
    ContainerInfo {
        id: c.id.clone().unwrap_or_default(),
        name: inspect_name(c),
        student,
        running,
        state: state.and_then(|s| s.status.as_ref()).map(ToString::to_string).unwrap_or_default(),
        host_port: if running { published_port(ports, port) } else { None },
        node_addr: None,
        secret,
    }
}

/// The loopback host port bound to `port/tcp` (any binding if none is on 127.0.0.1).
fn published_port(ports: Option<&PortMap>, port: Option<u16>) -> Option<u16> {
    let ports = ports?;
    let bindings = match port {
        Some(port) => ports.get(&format!("{port}/tcp"))?.as_ref()?,
        None => ports.iter().filter(|(k, _)| k.ends_with("/tcp")).find_map(|(_, b)| b.as_ref())?,
    };
    bindings
        .iter()
        .find(|b| b.host_ip.as_deref() == Some("127.0.0.1"))
        .or(bindings.first())?
        .host_port
        .as_deref()?
        .parse()
        .ok()
}

/// The host folder as an absolute, resolved path usable in a `Binds` entry (which splits on ':').
/// The engine resolves relative binds as named volumes, which would silently put the files elsewhere.
pub(super) fn absolute_dir(dir: &Path) -> Result<String, RuntimeError> {
    let bad = |why: String| RuntimeError::Engine(format!("host folder {}: {why}", dir.display()));
    let resolved: PathBuf = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
    if !resolved.is_dir() {
        return Err(bad("not a directory".to_owned()));
    }
    let text = resolved.to_str().ok_or_else(|| bad("path is not UTF-8".to_owned()))?;
    if text.contains(':') {
        return Err(bad("path contains ':', which a bind mount cannot express".to_owned()));
    }
    Ok(text.to_owned())
}

/// The HTTP status of an engine refusal, if this is one.
pub(super) fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Engine refusals become `Engine` with the engine's message; anything that means "could not talk to it"
/// (socket missing, connection refused or reset, transport timeout) becomes `Unavailable`.
pub(super) fn classify(e: BollardError) -> RuntimeError {
    match e {
        BollardError::DockerResponseServerError { status_code, message } => {
            RuntimeError::Engine(format!("{message} (HTTP {status_code})"))
        }
        BollardError::SocketNotFoundError(_)
        | BollardError::RequestTimeoutError
        | BollardError::IOError { .. }
        | BollardError::HyperResponseError { .. }
        | BollardError::HyperLegacyError { .. } => RuntimeError::Unavailable(error_chain(&e)),
        other => RuntimeError::Engine(error_chain(&other)),
    }
}

/// An error with its causes ("client error (Connect): Connection refused"), since hyper's top message alone
/// rarely says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_an_engine_names_in_its_refusal_is_read() {
        let v = version_named_in("client version 1.53 is too new. Maximum supported API version is 1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        let v = version_named_in(
            "client version 1.24 is too old. Minimum supported API version is 1.44, please upgrade your client",
        )
        .unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 44));
        assert!(version_named_in("something else").is_none());
    }

    #[test]
    fn the_loopback_binding_of_our_port_is_the_host_port() {
        let ports: PortMap = HashMap::from([(
            "8080/tcp".to_owned(),
            Some(vec![
                PortBinding { host_ip: Some("::1".into()), host_port: Some("1".into()) },
                PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some("49153".into()) },
            ]),
        )]);
        assert_eq!(published_port(Some(&ports), Some(8080)), Some(49153));
        assert_eq!(published_port(Some(&ports), Some(9090)), None);
        assert_eq!(published_port(Some(&ports), None), Some(49153));
    }
}
