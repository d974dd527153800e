//! Typed configuration: defaults, then an optional `workspaced.toml`, then environment variables (env wins).
//! Every setting has a name, a default, a doc line and an environment variable; docs/configuration.md lists them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::InstanceId;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{name}={value:?}: {message}")]
    Env { name: &'static str, value: String, message: String },
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// All settings of the service. Built by [`Settings::load`]; tests build it with [`Settings::default`] and edit fields.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Host folder holding one sub-folder per student (`WORKSPACE_BASE_PATH`). Local disk or an NFS/EFS mount.
    pub base_path: PathBuf,
    /// Store location (`DATABASE_URL`); `sqlite://file.db` is the embedded default.
    pub database_url: String,
    /// Address the HTTP API and proxy listen on (`WORKSPACED_LISTEN`). Loopback by default; put TLS in front.
    pub listen: String,
    /// Public base URL of this service, used to build links (`WORKSPACED_PUBLIC_URL`); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    /// Instance label, so two installations on one engine never touch each other's containers (`WORKSPACED_INSTANCE`).
    pub instance: InstanceId,
    pub workspace: WorkspaceSettings,
    pub cull: CullSettings,
    pub notify: NotifySettings,
    /// How often the reconciler compares the store with the engine (`WORKSPACED_RECONCILE_INTERVAL`).
    pub reconcile_interval: Duration,
    /// Starts that talk to the engine at once; more wait in a queue (`WORKSPACED_MAX_CONCURRENT_STARTS`).
    pub max_concurrent_starts: usize,
    /// Starts that may wait in the queue; more are refused with 429 (`WORKSPACED_MAX_QUEUED_STARTS`).
    pub max_queued_starts: usize,
    /// How often the disk use of every student folder is measured in the background (`WORKSPACED_USAGE_INTERVAL`).
    pub usage_interval: Duration,
    /// Disk use above which a `quota_exceeded` event is emitted (once, until it falls below); `None` = off
    /// (`WORKSPACED_DISK_SOFT_QUOTA`, e.g. `5g`). Nothing is refused or deleted: it is a warning.
    pub disk_soft_quota: Option<u64>,
    /// Cap on running (and starting) workspaces; `None` = no cap (`WORKSPACED_MAX_RUNNING`, `off`).
    pub max_running: Option<usize>,
    pub auth: AuthSettings,
    pub proxy: ProxySettings,
}

/// API keys, launch links and browser sessions.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Key that signs launch links and session cookies (`WORKSPACED_SECRET_KEY`, at least 32 characters). When unset
    /// it is read from `secret_key_file`, which is created with a random key on first run.
    pub secret_key: Option<String>,
    /// File holding the signing key (`WORKSPACED_SECRET_KEY_FILE`); default: `workspaced.key` beside the database.
    pub secret_key_file: Option<PathBuf>,
    /// How long a launch link is valid (`WORKSPACED_LAUNCH_TTL`). Each link works once.
    pub launch_ttl: Duration,
    /// How long a browser session lasts after a launch (`WORKSPACED_SESSION_TTL`).
    pub session_ttl: Duration,
    /// Whether the session cookie is `Secure`; `None` = when `public_url` is https (`WORKSPACED_COOKIE_SECURE`).
    pub cookie_secure: Option<bool>,
    /// Where a browser without a session is sent (`WORKSPACED_LOGIN_URL`); unset: a 401 page.
    pub login_url: Option<String>,
    /// Origins of LMS pages that may use the JS SDK across origins (`WORKSPACED_CORS_ORIGINS`, comma-separated,
    /// e.g. `https://lms.example.edu`); empty: same origin only.
    pub cors_origins: Vec<String>,
}

/// The reverse proxy to the IDEs (`/w/{student}/...`).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Longest wait for the IDE's response headers (`WORKSPACED_PROXY_TIMEOUT`); a slower IDE gets 504.
    pub timeout: Duration,
    /// Longest wait to connect to the IDE (`WORKSPACED_PROXY_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// Largest request body forwarded, e.g. an upload (`WORKSPACED_PROXY_MAX_BODY`); larger gets 413.
    pub max_body: u64,
    /// Host-based mode: with `ws.example.org`, `alice.ws.example.org` reaches alice's IDE at `/`
    /// (`WORKSPACED_PROXY_HOST_SUFFIX`); unset: path mode only.
    pub host_suffix: Option<String>,
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
        }
    }
}

/// What a workspace container is: image, command, port, limits, user, timeouts.
#[derive(Debug, Clone)]
pub struct WorkspaceSettings {
    /// Image of the IDE (`WORKSPACED_IMAGE`).
    pub image: String,
    /// Command and arguments; empty means the image's own (`WORKSPACED_COMMAND`, a JSON array or space-separated).
    pub command: Vec<String>,
    /// Port the IDE listens on inside the container (`WORKSPACED_CONTAINER_PORT`).
    pub container_port: u16,
    /// Path that answers 2xx once the IDE is ready (`WORKSPACED_READINESS_PATH`).
    pub readiness_path: String,
    /// Where the student's folder is mounted inside the container (`WORKSPACED_MOUNT_TARGET`).
    pub mount_target: String,
    /// CPU limit in cores (`WORKSPACED_CPUS`).
    pub cpus: f64,
    /// Memory limit in bytes; swap is set equal, so the container gets no swap (`WORKSPACED_MEMORY`, e.g. `1g`).
    pub memory_bytes: i64,
    /// Maximum number of processes and threads (`WORKSPACED_PIDS_LIMIT`).
    pub pids_limit: i64,
    /// Owner of the student folders and user of the container (`WORKSPACED_UID`, `WORKSPACED_GID`).
    pub uid: u32,
    pub gid: u32,
    /// Longest a start may take until the readiness path answers (`WORKSPACED_START_TIMEOUT`).
    pub start_timeout: Duration,
    /// Time a container gets between SIGTERM and SIGKILL on stop (`WORKSPACED_STOP_GRACE`).
    pub stop_grace: Duration,
}

/// Idle culling policy (used by the culler; defaults from the seeds).
#[derive(Debug, Clone)]
pub struct CullSettings {
    /// A workspace without activity for this long is stopped (`WORKSPACED_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// How often the culler looks (`WORKSPACED_CULL_INTERVAL`).
    pub interval: Duration,
    /// How long before the stop the student is warned (`WORKSPACED_WARNING_LEAD`).
    pub warning_lead: Duration,
    /// Stop a workspace this long after its start whatever its activity; `None` = off (`WORKSPACED_MAX_AGE`, `off`).
    pub max_age: Option<Duration>,
    /// Whether an open IDE tab alone (code-server's own heartbeat) keeps a workspace alive
    /// (`WORKSPACED_OPEN_TAB_KEEPS_ALIVE`). Off by default: real input must come from a heartbeat.
    pub open_tab_keeps_alive: bool,
    /// How often in-memory activity is written to the store (`WORKSPACED_ACTIVITY_FLUSH_INTERVAL`).
    pub activity_flush_interval: Duration,
}

/// Notifications to the LMS.
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// URL that receives every warning and stop as signed JSON (`WORKSPACED_WEBHOOK_URL`); off when unset.
    pub webhook_url: Option<String>,
    /// HMAC-SHA256 key for the webhook signature (`WORKSPACED_WEBHOOK_SECRET`).
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
            workspace: WorkspaceSettings::default(),
            cull: CullSettings::default(),
            notify: NotifySettings::default(),
            reconcile_interval: Duration::from_secs(60),
            max_concurrent_starts: 4,
            max_queued_starts: 1000,
            max_running: None,
            usage_interval: Duration::from_secs(600),
            disk_soft_quota: None,
            auth: AuthSettings::default(),
            proxy: ProxySettings::default(),
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
            cpus: 1.0,
            memory_bytes: 1 << 30,
            pids_limit: 1024,
            uid: 1000,
            gid: 1000,
            start_timeout: Duration::from_secs(60),
            stop_grace: Duration::from_secs(10),
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
pub const DEFAULT_IMAGE: &str = "workspaced/code-server:4.139.1";

/// The file format of `workspaced.toml`: every key optional, same names as the fields above.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    base_path: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<String>,
    public_url: Option<String>,
    instance: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    container_port: Option<u16>,
    readiness_path: Option<String>,
    mount_target: Option<String>,
    cpus: Option<f64>,
    memory: Option<String>,
    pids_limit: Option<i64>,
    uid: Option<u32>,
    gid: Option<u32>,
    start_timeout: Option<String>,
    stop_grace: Option<String>,
    idle_timeout: Option<String>,
    cull_interval: Option<String>,
    warning_lead: Option<String>,
    reconcile_interval: Option<String>,
    max_age: Option<String>,
    open_tab_keeps_alive: Option<bool>,
    activity_flush_interval: Option<String>,
    webhook_url: Option<String>,
    webhook_secret: Option<String>,
    max_concurrent_starts: Option<usize>,
    max_queued_starts: Option<usize>,
    max_running: Option<usize>,
    usage_interval: Option<String>,
    disk_soft_quota: Option<String>,
    secret_key_file: Option<PathBuf>,
    launch_ttl: Option<String>,
    session_ttl: Option<String>,
    cookie_secure: Option<bool>,
    login_url: Option<String>,
    cors_origins: Option<Vec<String>>,
    proxy_timeout: Option<String>,
    proxy_connect_timeout: Option<String>,
    proxy_max_body: Option<String>,
    proxy_host_suffix: Option<String>,
}

impl Settings {
    /// Loads settings: defaults, then `config_file` (or `./workspaced.toml` when it exists and none is given),
    /// then the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut s = Settings::default();
        let path = match config_file {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("workspaced.toml")).filter(|p| p.exists()),
        };
        if let Some(path) = path {
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            s.apply_file(&text).map_err(|message| ConfigError::Parse { path, message })?;
        }
        s.apply_env(|name| std::env::var(name).ok())?;
        s.check()?;
        Ok(s)
    }

    fn apply_file(&mut self, text: &str) -> Result<(), String> {
        let f: FileSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        let d = |v: Option<String>, name: &str, slot: &mut Duration| -> Result<(), String> {
            if let Some(v) = v {
                *slot = parse_duration(&v).map_err(|e| format!("{name}: {e}"))?;
            }
            Ok(())
        };
        if let Some(v) = f.base_path {
            self.base_path = v;
        }
        if let Some(v) = f.database_url {
            self.database_url = v;
        }
        if let Some(v) = f.listen {
            self.listen = v;
        }
        if let Some(v) = f.public_url {
            self.public_url = Some(v);
        }
        if let Some(v) = f.instance {
            self.instance = InstanceId::parse(&v).map_err(|e| format!("instance: {e}"))?;
        }
        let w = &mut self.workspace;
        if let Some(v) = f.image {
            w.image = v;
        }
        if let Some(v) = f.command {
            w.command = v;
        }
        if let Some(v) = f.container_port {
            w.container_port = v;
        }
        if let Some(v) = f.readiness_path {
            w.readiness_path = v;
        }
        if let Some(v) = f.mount_target {
            w.mount_target = v;
        }
        if let Some(v) = f.cpus {
            w.cpus = v;
        }
        if let Some(v) = f.memory {
            w.memory_bytes = parse_bytes(&v).map_err(|e| format!("memory: {e}"))?;
        }
        if let Some(v) = f.pids_limit {
            w.pids_limit = v;
        }
        if let Some(v) = f.uid {
            w.uid = v;
        }
        if let Some(v) = f.gid {
            w.gid = v;
        }
        d(f.start_timeout, "start_timeout", &mut w.start_timeout)?;
        d(f.stop_grace, "stop_grace", &mut w.stop_grace)?;
        d(f.idle_timeout, "idle_timeout", &mut self.cull.idle_timeout)?;
        d(f.cull_interval, "cull_interval", &mut self.cull.interval)?;
        d(f.warning_lead, "warning_lead", &mut self.cull.warning_lead)?;
        d(f.reconcile_interval, "reconcile_interval", &mut self.reconcile_interval)?;
        d(f.activity_flush_interval, "activity_flush_interval", &mut self.cull.activity_flush_interval)?;
        d(f.usage_interval, "usage_interval", &mut self.usage_interval)?;
        if let Some(v) = f.disk_soft_quota {
            self.disk_soft_quota = parse_optional_bytes(&v).map_err(|e| format!("disk_soft_quota: {e}"))?;
        }
        if let Some(v) = f.max_age {
            self.cull.max_age = parse_optional_duration(&v).map_err(|e| format!("max_age: {e}"))?;
        }
        if let Some(v) = f.open_tab_keeps_alive {
            self.cull.open_tab_keeps_alive = v;
        }
        if let Some(v) = f.max_concurrent_starts {
            self.max_concurrent_starts = v;
        }
        if let Some(v) = f.max_queued_starts {
            self.max_queued_starts = v;
        }
        if let Some(v) = f.max_running {
            self.max_running = Some(v);
        }
        if let Some(v) = f.webhook_url {
            self.notify.webhook_url = Some(v);
        }
        if let Some(v) = f.webhook_secret {
            self.notify.webhook_secret = Some(v);
        }
        if let Some(v) = f.secret_key_file {
            self.auth.secret_key_file = Some(v);
        }
        d(f.launch_ttl, "launch_ttl", &mut self.auth.launch_ttl)?;
        d(f.session_ttl, "session_ttl", &mut self.auth.session_ttl)?;
        if let Some(v) = f.cookie_secure {
            self.auth.cookie_secure = Some(v);
        }
        if let Some(v) = f.login_url {
            self.auth.login_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = f.cors_origins {
            self.auth.cors_origins = v.into_iter().map(|o| o.trim_end_matches('/').to_owned()).collect();
        }
        d(f.proxy_timeout, "proxy_timeout", &mut self.proxy.timeout)?;
        d(f.proxy_connect_timeout, "proxy_connect_timeout", &mut self.proxy.connect_timeout)?;
        if let Some(v) = f.proxy_max_body {
            self.proxy.max_body = parse_bytes(&v).map_err(|e| format!("proxy_max_body: {e}"))? as u64;
        }
        if let Some(v) = f.proxy_host_suffix {
            self.proxy.host_suffix =
                Some(v.trim().trim_start_matches('.').to_ascii_lowercase()).filter(|v| !v.is_empty());
        }
        Ok(())
    }

    /// Applies environment variables, read through `get` so tests need not touch the process environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn set<T>(
            get: &impl Fn(&str) -> Option<String>,
            name: &'static str,
            slot: &mut T,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<(), ConfigError> {
            if let Some(value) = get(name) {
                *slot = parse(&value).map_err(|message| ConfigError::Env { name, value, message })?;
            }
            Ok(())
        }
        let text = |v: &str| Ok(v.to_owned());
        let num = |v: &str| v.trim().parse::<i64>().map_err(|e| e.to_string());
        let id32 = |v: &str| v.trim().parse::<u32>().map_err(|e| e.to_string());
        let dur = |v: &str| parse_duration(v);
        set(&get, "WORKSPACE_BASE_PATH", &mut self.base_path, |v| Ok(PathBuf::from(v)))?;
        set(&get, "DATABASE_URL", &mut self.database_url, text)?;
        set(&get, "WORKSPACED_LISTEN", &mut self.listen, text)?;
        set(&get, "WORKSPACED_PUBLIC_URL", &mut self.public_url, |v| Ok(Some(v.to_owned())))?;
        set(&get, "WORKSPACED_INSTANCE", &mut self.instance, |v| InstanceId::parse(v).map_err(|e| e.to_string()))?;
        let w = &mut self.workspace;
        set(&get, "WORKSPACED_IMAGE", &mut w.image, text)?;
        set(&get, "WORKSPACED_COMMAND", &mut w.command, parse_command)?;
        set(&get, "WORKSPACED_CONTAINER_PORT", &mut w.container_port, |v| {
            v.trim().parse().map_err(|e| format!("{e}"))
        })?;
        set(&get, "WORKSPACED_READINESS_PATH", &mut w.readiness_path, text)?;
        set(&get, "WORKSPACED_MOUNT_TARGET", &mut w.mount_target, text)?;
        set(&get, "WORKSPACED_CPUS", &mut w.cpus, |v| v.trim().parse().map_err(|e| format!("{e}")))?;
        set(&get, "WORKSPACED_MEMORY", &mut w.memory_bytes, parse_bytes)?;
        set(&get, "WORKSPACED_PIDS_LIMIT", &mut w.pids_limit, num)?;
        set(&get, "WORKSPACED_UID", &mut w.uid, id32)?;
        set(&get, "WORKSPACED_GID", &mut w.gid, id32)?;
        set(&get, "WORKSPACED_START_TIMEOUT", &mut w.start_timeout, dur)?;
        set(&get, "WORKSPACED_STOP_GRACE", &mut w.stop_grace, dur)?;
        set(&get, "WORKSPACED_IDLE_TIMEOUT", &mut self.cull.idle_timeout, dur)?;
        set(&get, "WORKSPACED_CULL_INTERVAL", &mut self.cull.interval, dur)?;
        set(&get, "WORKSPACED_WARNING_LEAD", &mut self.cull.warning_lead, dur)?;
        set(&get, "WORKSPACED_RECONCILE_INTERVAL", &mut self.reconcile_interval, dur)?;
        let count = |v: &str| v.trim().parse::<usize>().map_err(|e| e.to_string());
        set(&get, "WORKSPACED_MAX_CONCURRENT_STARTS", &mut self.max_concurrent_starts, count)?;
        set(&get, "WORKSPACED_MAX_QUEUED_STARTS", &mut self.max_queued_starts, count)?;
        set(&get, "WORKSPACED_MAX_RUNNING", &mut self.max_running, |v| match v.trim() {
            "" | "off" | "none" => Ok(None),
            n => n.parse::<usize>().map(Some).map_err(|e| e.to_string()),
        })?;
        set(&get, "WORKSPACED_MAX_AGE", &mut self.cull.max_age, parse_optional_duration)?;
        set(&get, "WORKSPACED_OPEN_TAB_KEEPS_ALIVE", &mut self.cull.open_tab_keeps_alive, parse_bool)?;
        set(&get, "WORKSPACED_ACTIVITY_FLUSH_INTERVAL", &mut self.cull.activity_flush_interval, dur)?;
        set(&get, "WORKSPACED_USAGE_INTERVAL", &mut self.usage_interval, dur)?;
        set(&get, "WORKSPACED_DISK_SOFT_QUOTA", &mut self.disk_soft_quota, parse_optional_bytes)?;
        set(&get, "WORKSPACED_WEBHOOK_URL", &mut self.notify.webhook_url, |v| {
            Ok(Some(v.to_owned()).filter(|v| !v.is_empty()))
        })?;
        set(&get, "WORKSPACED_WEBHOOK_SECRET", &mut self.notify.webhook_secret, |v| {
            Ok(Some(v.to_owned()).filter(|v| !v.is_empty()))
        })?;
        let opt_text = |v: &str| Ok(Some(v.to_owned()).filter(|v| !v.is_empty()));
        set(&get, "WORKSPACED_SECRET_KEY", &mut self.auth.secret_key, opt_text)?;
        set(&get, "WORKSPACED_SECRET_KEY_FILE", &mut self.auth.secret_key_file, |v| {
            Ok(Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()))
        })?;
        set(&get, "WORKSPACED_LAUNCH_TTL", &mut self.auth.launch_ttl, dur)?;
        set(&get, "WORKSPACED_SESSION_TTL", &mut self.auth.session_ttl, dur)?;
        set(&get, "WORKSPACED_COOKIE_SECURE", &mut self.auth.cookie_secure, |v| match v.trim() {
            "" | "auto" => Ok(None),
            other => parse_bool(other).map(Some),
        })?;
        set(&get, "WORKSPACED_LOGIN_URL", &mut self.auth.login_url, opt_text)?;
        set(&get, "WORKSPACED_CORS_ORIGINS", &mut self.auth.cors_origins, |v| {
            Ok(v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).filter(|o| !o.is_empty()).collect())
        })?;
        set(&get, "WORKSPACED_PROXY_TIMEOUT", &mut self.proxy.timeout, dur)?;
        set(&get, "WORKSPACED_PROXY_CONNECT_TIMEOUT", &mut self.proxy.connect_timeout, dur)?;
        set(&get, "WORKSPACED_PROXY_MAX_BODY", &mut self.proxy.max_body, |v| parse_bytes(v).map(|b| b as u64))?;
        set(&get, "WORKSPACED_PROXY_HOST_SUFFIX", &mut self.proxy.host_suffix, |v| {
            Ok(Some(v.trim().trim_start_matches('.').to_ascii_lowercase()).filter(|v| !v.is_empty()))
        })?;
        Ok(())
    }

    /// Rejects values that cannot work, with the setting's name in the message.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |name, message: &str| Err(ConfigError::Invalid { name, message: message.to_owned() });
        let w = &self.workspace;
        if !(w.cpus > 0.0 && w.cpus <= 1024.0) {
            return bad("cpus", "must be between 0 and 1024");
        }
        if w.memory_bytes < 6 * 1024 * 1024 {
            return bad("memory", "must be at least 6 MiB (Docker's minimum)");
        }
        if w.pids_limit < 1 {
            return bad("pids_limit", "must be at least 1");
        }
        if !w.readiness_path.starts_with('/') {
            return bad("readiness_path", "must start with '/'");
        }
        if !w.mount_target.starts_with('/') {
            return bad("mount_target", "must be an absolute path");
        }
        if w.start_timeout.is_zero() {
            return bad("start_timeout", "must be more than zero");
        }
        if self.cull.warning_lead >= self.cull.idle_timeout {
            return bad("warning_lead", "must be shorter than idle_timeout");
        }
        if self.cull.interval.is_zero()
            || self.reconcile_interval.is_zero()
            || self.cull.activity_flush_interval.is_zero()
        {
            return bad("cull_interval", "intervals must be more than zero");
        }
        if self.usage_interval.is_zero() {
            return bad("usage_interval", "must be more than zero");
        }
        if self.max_concurrent_starts == 0 {
            return bad("max_concurrent_starts", "must be at least 1");
        }
        if self.auth.secret_key.as_ref().is_some_and(|k| k.len() < 32) {
            return bad("secret_key", "must be at least 32 characters (e.g. `openssl rand -hex 32`)");
        }
        if self.auth.launch_ttl.is_zero() {
            return bad("launch_ttl", "must be more than zero");
        }
        if self.auth.session_ttl.is_zero() {
            return bad("session_ttl", "must be more than zero");
        }
        if self.proxy.timeout.is_zero() {
            return bad("proxy_timeout", "must be more than zero");
        }
        if self.proxy.connect_timeout.is_zero() {
            return bad("proxy_connect_timeout", "must be more than zero");
        }
        // Every duration goes into deadline and timer arithmetic; one year is far beyond any sensible value and far
        // inside the range of that arithmetic.
        let durations = [
            ("start_timeout", Some(w.start_timeout)),
            ("stop_grace", Some(w.stop_grace)),
            ("idle_timeout", Some(self.cull.idle_timeout)),
            ("cull_interval", Some(self.cull.interval)),
            ("warning_lead", Some(self.cull.warning_lead)),
            ("max_age", self.cull.max_age),
            ("activity_flush_interval", Some(self.cull.activity_flush_interval)),
            ("reconcile_interval", Some(self.reconcile_interval)),
            ("usage_interval", Some(self.usage_interval)),
            ("launch_ttl", Some(self.auth.launch_ttl)),
            ("session_ttl", Some(self.auth.session_ttl)),
            ("proxy_timeout", Some(self.proxy.timeout)),
            ("proxy_connect_timeout", Some(self.proxy.connect_timeout)),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_some_and(|d| d > crate::domain::MAX_DURATION)) {
            return bad(*name, "must be at most one year (365d)");
        }
        if self.notify.webhook_url.is_some() && self.notify.webhook_secret.is_none() {
            return bad("webhook_secret", "is required when webhook_url is set (the LMS verifies the signature)");
        }
        Ok(())
    }

    /// Whether the session cookie gets `Secure`.
    pub fn cookie_secure(&self) -> bool {
        self.auth.cookie_secure.unwrap_or_else(|| self.public_url().starts_with("https://"))
    }

    /// Where the signing key lives when it is not given directly: `workspaced.key` beside an SQLite database.
    pub fn secret_key_file(&self) -> PathBuf {
        if let Some(p) = &self.auth.secret_key_file {
            return p.clone();
        }
        let db = self.database_url.strip_prefix("sqlite://").unwrap_or("workspaced.db");
        let db = db.split('?').next().unwrap_or(db);
        Path::new(db).parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join("workspaced.key")
    }

    /// Base URL for links to this service.
    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.listen)).trim_end_matches('/').to_owned()
    }
}

/// Parses `15m`, `90s`, `2s`, `1h 30m`, `500ms`; a bare number means seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).map_err(|e| format!("not a duration ({e}); use e.g. 15m, 90s, 2s"))
}

/// Parses a byte size the way Docker does: `1g`, `512m`, `1GiB`, `2048k`, or plain bytes.
pub fn parse_bytes(v: &str) -> Result<i64, String> {
    let t = v.trim().to_ascii_lowercase();
    let digits_end = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let num: f64 = num.parse().map_err(|_| format!("not a size: {v:?}; use e.g. 1g or 512m"))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?}; use k, m or g")),
    };
    let bytes = num * mult;
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(format!("size out of range: {v:?}"));
    }
    Ok(bytes as i64)
}

/// A duration, or `off`/`none`/`0` for none.
pub fn parse_optional_duration(v: &str) -> Result<Option<Duration>, String> {
    match v.trim() {
        "" | "off" | "none" | "0" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// A size, or `off`/`none`/`0`/empty for none.
pub fn parse_optional_bytes(v: &str) -> Result<Option<u64>, String> {
    match v.trim() {
        "" | "off" | "none" | "0" => Ok(None),
        other => parse_bytes(other).map(|b| Some(b.max(0) as u64)),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("not a boolean: {other:?}; use true or false")),
    }
}

fn parse_command(v: &str) -> Result<Vec<String>, String> {
    let v = v.trim();
    if v.starts_with('[') {
        serde_json::from_str(v).map_err(|e| format!("not a JSON array of strings: {e}"))
    } else {
        Ok(v.split_whitespace().map(str::to_owned).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_follow_the_seeds() {
        let s = Settings::default();
        assert_eq!(s.workspace.cpus, 1.0);
        assert_eq!(s.workspace.memory_bytes, 1 << 30);
        assert_eq!(s.cull.idle_timeout, Duration::from_secs(900));
        assert_eq!(s.cull.warning_lead, Duration::from_secs(120));
        assert_eq!(s.cull.interval, Duration::from_secs(60));
        assert_eq!(s.workspace.uid, 1000);
        assert!(s.listen.starts_with("127.0.0.1:"));
        s.check().unwrap();
    }

    #[test]
    fn env_wins_over_file() {
        let mut s = Settings::default();
        s.apply_file("base_path = \"/from/file\"\nmemory = \"2g\"\nidle_timeout = \"10m\"\n").unwrap();
        let env: HashMap<&str, &str> =
            [("WORKSPACE_BASE_PATH", "/mnt/efs/workspace-data"), ("WORKSPACED_IDLE_TIMEOUT", "4s")].into();
        s.apply_env(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.base_path, PathBuf::from("/mnt/efs/workspace-data"));
        assert_eq!(s.workspace.memory_bytes, 2 << 30);
        assert_eq!(s.cull.idle_timeout, Duration::from_secs(4));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let mut s = Settings::default();
        let err = s.apply_env(|k| (k == "WORKSPACED_MEMORY").then(|| "lots".to_owned())).unwrap_err();
        assert!(err.to_string().contains("WORKSPACED_MEMORY"), "{err}");
        assert!(s.apply_file("no_such_key = 1").is_err());
        let err = s.apply_env(|k| (k == "WORKSPACED_INSTANCE").then(|| "../x".to_owned())).unwrap_err();
        assert!(err.to_string().contains("WORKSPACED_INSTANCE"));
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert!(parse_bytes("0").is_err());
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_command("[\"a\", \"b c\"]").unwrap(), vec!["a", "b c"]);
        assert_eq!(parse_command("jupyter lab --ip 0.0.0.0").unwrap().len(), 4);
    }

    #[test]
    fn a_duration_above_one_year_is_refused_with_its_name() {
        let mut s = Settings::default();
        s.apply_env(|k| (k == "WORKSPACED_RECONCILE_INTERVAL").then(|| "366d".to_owned())).unwrap();
        let err = s.check().unwrap_err().to_string();
        assert!(err.contains("reconcile_interval") && err.contains("one year"), "{err}");
        let mut s = Settings::default();
        s.apply_env(|k| (k == "WORKSPACED_MAX_AGE").then(|| "18446744073709551615".to_owned())).unwrap();
        assert!(s.check().unwrap_err().to_string().contains("max_age"));
        let mut s = Settings::default();
        s.apply_env(|k| (k == "WORKSPACED_SESSION_TTL").then(|| "365d".to_owned())).unwrap();
        s.check().expect("exactly one year is allowed");
    }
}
