//! The settings as the rest of the service reads them, with their defaults. Names, variables, parsing and checks
//! of each field are declared once, in `table.rs`.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::{IdeAuth, InstanceId, ProxyPath};
use crate::runtime::egress::EgressMode;
use crate::runtime::RuntimeKind;

/// All settings of the service. Built by [`Settings::load`]; tests build it with [`Settings::default`] and edit fields.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Host folder holding one sub-folder per student. Local disk or an NFS/EFS mount.
    pub base_path: PathBuf,
    /// Store location; `sqlite://file.db` is the embedded default.
    pub database_url: String,
    /// Address the HTTP API and proxy listen on. Loopback by default; put TLS in front.
    pub listen: String,
    /// Public base URL of this service, used to build links; defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Instance label, so two installations on one engine never touch each other's containers.
    pub instance: InstanceId,
    /// Whether the workspaces' network gets its egress rules (no link-local, no NFS) installed, checked, or neither.
    pub egress_rules: EgressMode,
    /// Which engine runs the workspaces: plain Docker or Docker Swarm.
    pub runtime: RuntimeKind,
    /// Swarm placement constraints (`node.labels.workspaced==true`), all of which a node must meet.
    pub swarm_constraints: Vec<String>,
    /// Swarm spread preference (`node.labels.zone`): workspaces spread evenly over the values of this label.
    pub swarm_spread: Option<String>,
    /// The share of a workspace's CPU limit its Swarm service reserves (what the scheduler places by).
    pub swarm_cpu_reservation: f64,
    pub workspace: WorkspaceSettings,
    pub cull: CullSettings,
    pub notify: NotifySettings,
    /// How often the reconciler compares the store with the engine.
    pub reconcile_interval: Duration,
    /// Starts that talk to the engine at once; more wait in a queue.
    pub max_concurrent_starts: usize,
    /// Starts that may wait in the queue; more are refused with 429.
    pub max_queued_starts: usize,
    /// How often the disk use of every student folder is measured in the background.
    pub usage_interval: Duration,
    /// How often the engine's CPU and memory numbers for the admin dashboard are sampled while someone asks.
    pub stats_interval: Duration,
    /// Disk use above which a `quota_exceeded` event is emitted (once, until it falls below); `None` = off.
    /// Nothing is refused or deleted: it is a warning.
    pub disk_soft_quota: Option<u64>,
    /// Disk use above which a running workspace is warned, then stopped (reason `quota`) at the next measurement
    /// that still finds it over, and a start is refused; `None` = off.
    pub disk_hard_quota: Option<u64>,
    /// Cap on running (and starting) workspaces; `None` = no cap.
    pub max_running: Option<usize>,
    pub auth: AuthSettings,
    pub proxy: ProxySettings,
    /// Longest a client may take to send a request's headers; slower connections are closed (slowloris).
    pub header_read_timeout: Duration,
    /// Time to live of the lease that says which replica runs the singleton loops (PostgreSQL only).
    pub lease_ttl: Duration,
    /// Deadline of one file-system call on the base path (a stalled NFS/EFS mount fails it instead of hanging).
    pub storage_timeout: Duration,
    /// File-system calls on the base path that may hang at once before more are refused at once.
    pub storage_max_blocked: usize,
    /// Host that alone serves the admin dashboard and the API (e.g. `admin.ide.example.edu`); no IDE is served on
    /// it. `None`: every host serves everything.
    pub admin_host: Option<String>,
    pub courses: CourseSettings,
}

/// The operator's rules for course profiles (`PUT /api/courses/{course}`): an LMS key sets a course's image, limits
/// and template only within them.
#[derive(Debug, Clone)]
pub struct CourseSettings {
    /// Folder holding the templates (starter files) and assignment folders courses may name; `None`: none.
    pub templates_path: Option<PathBuf>,
    /// Images a course may name; empty: only the configured `image`.
    pub allowed_images: Vec<String>,
    /// Largest CPU limit a course may set.
    pub max_cpus: f64,
    /// Largest memory limit a course may set, in bytes.
    pub max_memory_bytes: i64,
    /// Largest process limit a course may set.
    pub max_pids_limit: i64,
}

impl Default for CourseSettings {
    fn default() -> Self {
        Self {
            templates_path: None,
            allowed_images: Vec::new(),
            max_cpus: 4.0,
            max_memory_bytes: 8 << 30,
            max_pids_limit: 4096,
        }
    }
}

/// API keys, launch links and browser sessions.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Key that signs launch links and session cookies. When unset it is read
    /// from `secret_key_file`, which is created with a random key on first run.
    pub secret_key: Option<String>,
    /// File holding the signing key; default: `workspaced.key` beside the database.
    pub secret_key_file: Option<PathBuf>,
    /// How long a launch link is valid. Each link works once.
    pub launch_ttl: Duration,
    /// How long a browser session lasts after a launch.
    pub session_ttl: Duration,
    /// Whether the session cookie is `Secure`; `None` = when `public_url` is https.
    pub cookie_secure: Option<bool>,
    /// Where a browser without a session is sent; unset: a 401 page.
    pub login_url: Option<String>,
    /// Origins of LMS pages that may use the JS SDK across origins; empty: same origin only.
    pub cors_origins: Vec<String>,
    /// LTI launches in an iframe stay in the frame (partitioned cookie) instead of opening a new window.
    pub lti_embed: bool,
    /// The id_token claim holding the LMS login id used in workspace ids; `None`: a hash.
    pub lti_login_claim: Option<String>,
}

/// The reverse proxy to the IDEs (`/w/{student}/...`).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Longest wait for the IDE's response headers; a slower IDE gets 504.
    pub timeout: Duration,
    /// Longest wait to connect to the IDE.
    pub connect_timeout: Duration,
    /// Largest request body forwarded, e.g. an upload; larger gets 413.
    pub max_body: u64,
    /// Host-based mode: with `ws.example.org`, `alice.ws.example.org` reaches alice's IDE at `/`;
    /// unset: path mode only.
    pub host_suffix: Option<String>,
    /// Proxied requests and WebSockets one student may have open at once; more get 429.
    pub max_connections_per_student: usize,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            secret_key: None,
            secret_key_file: None,
            launch_ttl: Duration::from_secs(60),
            session_ttl: Duration::from_secs(12 * 3600),
            cookie_secure: None,
            login_url: None,
            cors_origins: Vec::new(),
            lti_embed: false,
            lti_login_claim: None,
        }
    }
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            max_body: 1 << 30,
            host_suffix: None,
            max_connections_per_student: 64,
        }
    }
}

/// What a workspace container is: image, command, port, limits, user, timeouts.
#[derive(Debug, Clone)]
pub struct WorkspaceSettings {
    /// Image of the IDE.
    pub image: String,
    /// Command and arguments; empty means the image's own.
    pub command: Vec<String>,
    /// Port the IDE listens on inside the container.
    pub container_port: u16,
    /// Path that answers 2xx once the IDE is ready.
    pub readiness_path: String,
    /// Where the student's folder is mounted inside the container.
    pub mount_target: String,
    /// Where the student's IDE state folder is mounted inside the container; `None`: no state folder.
    pub ide_state_path: Option<String>,
    /// CPU limit in cores.
    pub cpus: f64,
    /// Memory limit in bytes; swap is set equal, so the container gets no swap.
    pub memory_bytes: i64,
    /// Maximum number of processes and threads.
    pub pids_limit: i64,
    /// Owner of the student folders and user of the container.
    pub uid: u32,
    pub gid: u32,
    /// Longest a start may take until the readiness path answers.
    pub start_timeout: Duration,
    /// Time a container gets between SIGTERM and SIGKILL on stop.
    pub stop_grace: Duration,
    /// Drop every Linux capability (the IDE runs as an unprivileged user and needs none).
    pub cap_drop_all: bool,
    /// Open files per process (`nofile`, soft and hard).
    pub nofile: u64,
    /// Size of the `/tmp` tmpfs in bytes; `None` leaves `/tmp` on the container's own file system.
    pub tmp_size: Option<u64>,
    /// Mount the container's root file system read-only (the project folder and `/tmp` stay writable).
    pub read_only_root: bool,
    /// How the IDE is given its per-workspace secret and how the proxy presents it.
    pub ide_auth: IdeAuth,
    /// Environment variable that carries the secret into the container; `None`: the mode's own
    /// ([`IdeAuth::default_env`]).
    pub ide_secret_env: Option<String>,
    /// What the IDE sees of `/w/<id>/...`: the path stripped, or forwarded whole.
    pub proxy_path: ProxyPath,
}

impl WorkspaceSettings {
    /// The variable that carries the secret into the container, if the mode has a secret.
    pub fn secret_env(&self) -> Option<&str> {
        match (&self.ide_auth, &self.ide_secret_env) {
            (IdeAuth::None, _) => None,
            (_, Some(name)) => Some(name),
            (mode, None) => mode.default_env(),
        }
    }
}

/// Idle culling policy (used by the culler; defaults from the seeds).
#[derive(Debug, Clone)]
pub struct CullSettings {
    /// A workspace without activity for this long is stopped.
    pub idle_timeout: Duration,
    /// How often the culler looks.
    pub interval: Duration,
    /// How long before the stop the student is warned.
    pub warning_lead: Duration,
    /// Stop a workspace this long after its start whatever its activity; `None` = off.
    pub max_age: Option<Duration>,
    /// Whether an open IDE tab alone (code-server's own heartbeat) keeps a workspace alive
    ///. Off by default: real input must come from a heartbeat.
    pub open_tab_keeps_alive: bool,
    /// How often in-memory activity is written to the store.
    pub activity_flush_interval: Duration,
}

/// Notifications to the LMS.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// URL that receives every warning and stop as signed JSON; off when unset.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the webhook signature.
    pub webhook_secret: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_path: PathBuf::from("./workspace-data"),
            database_url: "sqlite://workspaced.db".to_owned(),
            listen: "127.0.0.1:7878".to_owned(),
            public_url: None,
            instance: InstanceId::parse("default").expect("valid"),
            egress_rules: EgressMode::Install,
            runtime: RuntimeKind::Docker,
            swarm_constraints: Vec::new(),
            swarm_spread: None,
            swarm_cpu_reservation: crate::runtime::swarm::DEFAULT_CPU_RESERVATION,
            workspace: WorkspaceSettings::default(),
            cull: CullSettings::default(),
            notify: NotifySettings::default(),
            reconcile_interval: Duration::from_secs(60),
            max_concurrent_starts: 4,
            max_queued_starts: 1000,
            max_running: None,
            usage_interval: Duration::from_secs(600),
            stats_interval: Duration::from_secs(10),
            disk_soft_quota: None,
            disk_hard_quota: None,
            auth: AuthSettings::default(),
            proxy: ProxySettings::default(),
            header_read_timeout: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(10),
            storage_timeout: Duration::from_secs(10),
            storage_max_blocked: 16,
            admin_host: None,
            courses: CourseSettings::default(),
        }
    }
}

impl Default for WorkspaceSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.to_owned(),
            command: Vec::new(),
            container_port: 8080,
            readiness_path: "/healthz".to_owned(),
            mount_target: "/home/coder/project".to_owned(),
            ide_state_path: Some(DEFAULT_IDE_STATE_PATH.to_owned()),
            cpus: 1.0,
            memory_bytes: 1 << 30,
            pids_limit: 1024,
            uid: 1000,
            gid: 1000,
            start_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
            cap_drop_all: true,
            nofile: 4096,
            tmp_size: Some(256 << 20),
            read_only_root: false,
            ide_auth: IdeAuth::CodeServer,
            ide_secret_env: None,
            proxy_path: ProxyPath::Strip,
        }
    }
}

impl Default for CullSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(60),
            warning_lead: Duration::from_secs(2 * 60),
            max_age: None,
            open_tab_keeps_alive: false,
            activity_flush_interval: Duration::from_secs(1),
        }
    }
}

/// The code-server image that `workspaced image build` produces.
/// Where code-server keeps its user data (settings, extensions, backups): the default `ide_state_path`.
pub const DEFAULT_IDE_STATE_PATH: &str = "/home/coder/.local/share/code-server";
pub const DEFAULT_IMAGE: &str = "workspaced/code-server:4.139.1";
