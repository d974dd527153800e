//! The settings table: each setting declared once, with its TOML key, environment variable, default as the docs
//! show it, doc line, parser and limits. Loading, checking and docs/configuration.md all read this table.

use super::check::{self as c, Bounded};
use super::parse as p;
use super::Settings;

/// One setting: where its value comes from, how its text is parsed into [`Settings`], and what it must satisfy.
pub struct Setting {
    /// Key in `workspaced.toml`; `None` for a setting that must not sit in a file (the signing key).
    pub key: Option<&'static str>,
    pub env: &'static str,
    /// Markdown, as docs/configuration.md shows it.
    pub default: &'static str,
    /// Markdown: meaning, accepted forms and limits.
    pub doc: &'static str,
    /// Parses the text (from the environment, or a TOML value turned into text) into its field.
    pub(super) apply: fn(&mut Settings, &str) -> Result<(), String>,
    /// The field's limits: its row's own and those of its type ([`Bounded`]).
    pub(super) check: fn(&Settings) -> Result<(), String>,
}

impl Setting {
    /// How messages name the setting: by both its names, so it is found whichever way it was given.
    pub fn name(&self) -> String {
        match self.key {
            Some(key) => format!("{key} ({})", self.env),
            None => self.env.to_owned(),
        }
    }
}

/// Both paths of one row assign the same field with the same parser, so a TOML key and its variable cannot disagree.
macro_rules! setting {
    (_, $env:literal, $($rest:tt)*) => { setting!(@ None, $env, $($rest)*) };
    ($key:literal, $env:literal, $($rest:tt)*) => { setting!(@ Some($key), $env, $($rest)*) };
    (@ $key:expr, $env:literal, $($field:ident).+: $parse:path, $check:path, $default:literal, $doc:literal) => {
        Setting {
            key: $key,
            env: $env,
            default: $default,
            doc: $doc,
            apply: |s, v| {
                s.$($field).+ = $parse(v)?;
                Ok(())
            },
            check: |s| {
                s.$($field).+.bounded()?;
                $check(&s.$($field).+)
            },
        }
    };
}

/// Every setting, in the order docs/configuration.md lists them.
pub static SETTINGS: &[Setting] = &[
    setting!("base_path", "WORKSPACE_BASE_PATH",
        base_path: p::path, c::any, "`./workspace-data`",
        "Host folder with one folder per student (`<base>/<student-id>`, owner uid:gid, mode 0700). Must exist \
        and be writable; it is never created by `serve` (on EFS a missing folder means a missing mount)."),
    setting!("database_url", "DATABASE_URL",
        database_url: p::text, c::any, "`sqlite://workspaced.db`",
        "The store. `sqlite://<file>`: embedded, the file is created (0600) on first run. \
        `postgres://<user>:<password>@<host>:<port>/<database>`: a PostgreSQL server (the database must exist). \
        Either is migrated at start."),
    setting!("listen", "WORKSPACED_LISTEN",
        listen: p::text, c::any, "`127.0.0.1:7878`",
        "Address of the HTTP API and of the proxy to the IDEs. Loopback by default; browsers reach it through a \
        TLS proxy in front ([proxy-and-auth.md](proxy-and-auth.md))."),
    setting!("public_url", "WORKSPACED_PUBLIC_URL",
        public_url: p::optional_text, c::any, "`http://<listen>`",
        "Base URL of this service as browsers see it, e.g. `https://ide.example.edu` (a trailing `/` is dropped). \
        Launch links and the workspace `url` are built from it; `https://` makes the session cookie `Secure` \
        (see `cookie_secure`) and sets `X-Forwarded-Proto: https` towards the IDE. The CLI also uses it to reach \
        the server. Empty means unset."),
    setting!("instance", "WORKSPACED_INSTANCE",
        instance: p::instance, c::any, "`default`",
        "Instance label on every container; two installations on one engine must differ. Same alphabet as student \
        ids, at most 32 characters."),
    setting!("egress_rules", "WORKSPACED_EGRESS_RULES",
        egress_rules: p::egress_mode, c::any, "`install`",
        "Firewall rules that stop workspaces from reaching link-local addresses (`169.254.0.0/16`: the cloud's \
        instance metadata and its credentials) and NFS (port 2049: EFS). `install`: the first start puts them in \
        the `WORKSPACED-EGRESS` chain, jumped to from Docker's `DOCKER-USER` (needs root or `CAP_NET_ADMIN`; a \
        failure is logged as an error, not fatal). `check`: only log what is missing. `off`: leave the firewall \
        alone, e.g. for a remote engine or a firewall managed elsewhere. `workspaced doctor` checks the rules \
        ([deploy/aws-efs.md](deploy/aws-efs.md#egress-instance-metadata-and-nfs))."),
    setting!("runtime", "WORKSPACED_RUNTIME",
        runtime: p::runtime_kind, c::any, "`docker`",
        "What runs the workspaces. `docker`: one container per workspace on the local engine, its IDE port \
        published on 127.0.0.1. `swarm`: one Docker Swarm service per workspace, placed by the swarm's scheduler \
        on any node (the engine must be a swarm manager; [deploy/swarm.md](deploy/swarm.md)). Swarm publishes \
        the IDE port on every interface of the node, so `swarm` needs an `ide_auth` with a secret (not `none`)."),
    setting!("swarm_constraints", "WORKSPACED_SWARM_CONSTRAINTS",
        swarm_constraints: p::comma_list, c::swarm_constraints, "none",
        "Swarm placement constraints, comma-separated, all of which a node must meet to run a workspace, e.g. \
        `node.labels.workspaced==true,node.role==worker`. At most 32. Only with `runtime = swarm`."),
    setting!("swarm_spread", "WORKSPACED_SWARM_SPREAD",
        swarm_spread: p::optional_text, c::swarm_spread, "none",
        "Swarm spread preference: workspaces are spread evenly over the values of this node label, e.g. \
        `node.labels.zone` for availability zones (`node.labels.<label>`). Only with `runtime = swarm`."),
    setting!("swarm_cpu_reservation", "WORKSPACED_SWARM_CPU_RESERVATION",
        swarm_cpu_reservation: p::number, c::reservation_ratio, "`0.25`",
        "The share of a workspace's CPU limit (`cpus`) its Swarm service reserves. The scheduler places by \
        reservations alone and never lets a node's reservations pass its cores, so this decides how many \
        workspaces a node takes by CPU: an IDE idles most of the time, and with `0.25` a 4-core node takes 16 \
        one-core workspaces, each still limited to its `cpus` when busy. `1`: no sharing at all. The memory \
        reservation always equals the limit (memory is not overcommitted). More than 0, at most 1. Only with \
        `runtime = swarm`."),
    setting!("image", "WORKSPACED_IMAGE",
        workspace.image: p::text, c::any, "`workspaced/code-server:4.139.1`",
        "IDE image. Never pulled: it must exist locally (`workspaced image build`)."),
    setting!("command", "WORKSPACED_COMMAND",
        workspace.command: p::command, c::any, "image's own",
        "Command and arguments: a list (a TOML array or a JSON array of strings), or space-separated words. Empty: \
        the image's own. It replaces the image's command (`CMD`) and keeps its entrypoint (`ENTRYPOINT`, e.g. \
        `dumb-init`). In each element `{student_id}` becomes the student's id and `{base_url}` the path the IDE \
        is served under, `/w/<id>/`."),
    setting!("container_port", "WORKSPACED_CONTAINER_PORT",
        workspace.container_port: p::number, c::any, "`8080`",
        "Port the IDE listens on inside the container; published on 127.0.0.1 with an ephemeral host port."),
    setting!("readiness_path", "WORKSPACED_READINESS_PATH",
        workspace.readiness_path: p::text, c::absolute, "`/healthz`",
        "A start is done when this path answers 2xx. The culler also polls it for an open tab (see \
        `open_tab_keeps_alive`). Must start with `/`."),
    setting!("mount_target", "WORKSPACED_MOUNT_TARGET",
        workspace.mount_target: p::text, c::absolute, "`/home/coder/project`",
        "Where the student's folder appears in the container. Must be an absolute path."),
    setting!("ide_state_path", "WORKSPACED_IDE_STATE_PATH",
        workspace.ide_state_path: p::optional_text, c::mount_path, "`/home/coder/.local/share/code-server`",
        "Where the student's IDE state folder (`<base>/.ide-state/<id>`: settings, extensions, backups of unsaved \
        editors) appears in the container, so it survives a stop. code-server keeps it in \
        `~/.local/share/code-server`; for Jupyter e.g. `/home/jovyan/.local/share/jupyter`. Empty: no state \
        folder. An absolute path without `:`, at most 1024 bytes ([ide-state.md](ide-state.md))."),
    setting!("cpus", "WORKSPACED_CPUS",
        workspace.cpus: p::number, c::cpus, "`1.0`",
        "CPU limit in cores (`NanoCpus`). More than 0, at most 1024."),
    setting!("memory", "WORKSPACED_MEMORY",
        workspace.memory_bytes: p::parse_bytes, c::docker_memory, "`1g`",
        "Memory limit; swap is set equal, so no swap. At least 6 MiB (Docker's minimum)."),
    setting!("pids_limit", "WORKSPACED_PIDS_LIMIT",
        workspace.pids_limit: p::number, c::at_least_one, "`1024`",
        "Processes and threads per container (fork-bomb guard; code-server uses a few hundred threads). At least \
        1."),
    setting!("uid", "WORKSPACED_UID",
        workspace.uid: p::number, c::any, "`1000`",
        "Owner of student folders; the container runs as this user."),
    setting!("gid", "WORKSPACED_GID",
        workspace.gid: p::number, c::any, "`1000`",
        "Group of student folders and of the container's user."),
    setting!("cap_drop_all", "WORKSPACED_CAP_DROP_ALL",
        workspace.cap_drop_all: p::bool, c::any, "`true`",
        "Drop every Linux capability in workspace containers (the IDE runs as an unprivileged user; with them a \
        student could, e.g., create device nodes)."),
    setting!("nofile", "WORKSPACED_NOFILE",
        workspace.nofile: p::number, c::at_least_one, "`4096`",
        "Open files per process in workspace containers (soft and hard `nofile` limit). At least 1."),
    setting!("tmp_size", "WORKSPACED_TMP_SIZE",
        workspace.tmp_size: p::parse_optional_bytes, c::any, "`256m`",
        "Size of the tmpfs mounted at `/tmp` in workspace containers (counts against the memory limit); `off` \
        leaves `/tmp` on the container's file system."),
    setting!("read_only_root", "WORKSPACED_READ_ONLY_ROOT",
        workspace.read_only_root: p::bool, c::any, "`false`",
        "Mount the container's root file system read-only; the project folder and `/tmp` stay writable. Off by \
        default: code-server keeps its settings and extensions under the user's home."),
    setting!("ide_auth", "WORKSPACED_IDE_AUTH",
        workspace.ide_auth: p::ide_auth, c::any, "`code-server`",
        "How each workspace's IDE gets its random per-start secret, so that only the proxy reaches it. \
        `code-server`: `--auth password` with the secret in `HASHED_PASSWORD`, presented as code-server's session \
        cookie. `header:<Name>[:<prefix>]`: the header `<Name>: <prefix><secret>` on every request (Jupyter: \
        `header:Authorization:token `). `query:<param>`: `?<param>=<secret>` added to every request. `none`: no \
        secret; anyone who reaches the container's port reaches the IDE."),
    setting!("ide_secret_env", "WORKSPACED_IDE_SECRET_ENV",
        workspace.ide_secret_env: p::optional_text, c::env_name, "unset: `HASHED_PASSWORD` for code-server, else \
        `WORKSPACED_IDE_SECRET`",
        "Environment variable that carries the secret into the container (Jupyter: `JUPYTER_TOKEN`)."),
    setting!("proxy_path", "WORKSPACED_PROXY_PATH",
        workspace.proxy_path: p::proxy_path, c::any, "`strip`",
        "What the IDE sees of `/w/<id>/...`. `strip`: the proxy takes `/w/<id>` off and the IDE is served at its \
        own `/` (code-server). `full`: the path is forwarded whole, as JupyterHub's proxy does, for an IDE told its \
        base URL in `command` (`--ServerApp.base_url={base_url}`); its `readiness_path` is then asked under \
        `/w/<id>` too. Fixed for a workspace at its start. Host mode (`<id>.<suffix>`) forwards the path as it \
        came in both modes."),
    setting!("start_timeout", "WORKSPACED_START_TIMEOUT",
        workspace.start_timeout: p::parse_duration, c::positive, "`60s`",
        "Longest a start may take once admitted (time in the queue does not count); after it the container is \
        removed and the workspace is `failed`. More than zero."),
    setting!("stop_grace", "WORKSPACED_STOP_GRACE",
        workspace.stop_grace: p::parse_duration, c::any, "`10s`",
        "Time between SIGTERM and SIGKILL on stop."),
    setting!("idle_timeout", "WORKSPACED_IDLE_TIMEOUT",
        cull.idle_timeout: p::parse_duration, c::any, "`15m`",
        "Culling: a workspace without activity this long is stopped (reason `idle`)."),
    setting!("cull_interval", "WORKSPACED_CULL_INTERVAL",
        cull.interval: p::parse_duration, c::positive, "`1m`",
        "Culling: how often idle workspaces are looked for. More than zero."),
    setting!("warning_lead", "WORKSPACED_WARNING_LEAD",
        cull.warning_lead: p::parse_duration, c::any, "`2m`",
        "Culling: how long before the stop the student is warned. Must be shorter than `idle_timeout`."),
    setting!("max_age", "WORKSPACED_MAX_AGE",
        cull.max_age: p::parse_optional_duration, c::any, "off",
        "Culling: stop a workspace this long after its start, whatever its activity (reason `max_age`). `off`, \
        `none`, `0` or empty switch it off."),
    setting!("open_tab_keeps_alive", "WORKSPACED_OPEN_TAB_KEEPS_ALIVE",
        cull.open_tab_keeps_alive: p::bool, c::any, "`false`",
        "Culling: whether an open IDE tab alone counts as activity. Each sweep polls `readiness_path`; \
        code-server answers `{\"status\": \"alive\"}` while a tab is open. Off: only heartbeats count, and the open \
        tab is only shown (`ide_connected_at`). A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`."),
    setting!("activity_flush_interval", "WORKSPACED_ACTIVITY_FLUSH_INTERVAL",
        cull.activity_flush_interval: p::parse_duration, c::positive, "`1s`",
        "Heartbeats are kept in memory and written to the store this often (and once more on shutdown). More than \
        zero."),
    setting!("reconcile_interval", "WORKSPACED_RECONCILE_INTERVAL",
        reconcile_interval: p::parse_duration, c::positive, "`1m`",
        "How often store and engine are compared. More than zero."),
    setting!("max_concurrent_starts", "WORKSPACED_MAX_CONCURRENT_STARTS",
        max_concurrent_starts: p::number, c::at_least_one, "`4`",
        "Starts that talk to the engine at once, in total over every replica on one database; more wait in a \
        first-in first-out queue of their replica (status `queued`). At least 1."),
    setting!("max_queued_starts", "WORKSPACED_MAX_QUEUED_STARTS",
        max_queued_starts: p::number, c::any, "`1000`",
        "Starts that may wait in the queue; one more is refused with 429 `start_queue_full`. `0` means no queue: \
        a start that cannot begin at once is refused."),
    setting!("max_running", "WORKSPACED_MAX_RUNNING",
        max_running: p::optional_count, c::any, "off",
        "Cap on queued, starting, running and stopping workspaces together, in total over every replica on one \
        database; a start beyond it is refused with 429 `capacity_reached`. A number, or `off`, `none` or empty for no cap. `0` refuses every start."),
    setting!("usage_interval", "WORKSPACED_USAGE_INTERVAL",
        usage_interval: p::parse_duration, c::positive, "`10m`",
        "How often `serve` measures the disk use of every student folder (allocated bytes, like `du -s`), one \
        folder at a time; the first pass runs at start-up. Shown in the status API. More than zero."),
    setting!("stats_interval", "WORKSPACED_STATS_INTERVAL",
        stats_interval: p::parse_duration, c::positive, "`10s`",
        "How often `serve` samples the CPU and memory of every running workspace from the engine for \
        `GET /api/admin/stats`, which answers from the latest sample and says when it was taken. Sampling runs only \
        while someone asked within the last three intervals (the first answer after a quiet time has no sample or an \
        old one); each replica samples for its own answers. More than zero."),
    setting!("disk_soft_quota", "WORKSPACED_DISK_SOFT_QUOTA",
        disk_soft_quota: p::parse_optional_bytes, c::any, "off",
        "Disk use above which a `quota_exceeded` event is recorded, once until the folder falls below again. A \
        warning only: nothing is refused or deleted. A size, or `off`, `none`, `0` or empty for none."),
    setting!("disk_hard_quota", "WORKSPACED_DISK_HARD_QUOTA",
        disk_hard_quota: p::parse_optional_bytes, c::any, "off",
        "Disk use above which a running workspace is warned (a `warning` event, reason `quota`) and, when the next \
        measurement (every `usage_interval`) still finds it over, stopped with reason `quota`; a start is refused \
        with 409 `quota_exceeded` while the folder is over it. Files are never deleted. Enforced by measuring, not \
        by the kernel (see docs/operations.md). A size, or `off`, `none`, `0` or empty for none."),
    setting!("webhook_url", "WORKSPACED_WEBHOOK_URL",
        notify.webhook_url: p::optional_text, c::any, "unset (off)",
        "URL that receives events as signed JSON: `warning`, `stopped`, `started`, `start_failed`, \
        `orphan_removed` (format in [api.md](api.md#webhook)). Empty means unset."),
    setting!("webhook_secret", "WORKSPACED_WEBHOOK_SECRET",
        notify.webhook_secret: p::optional_text, c::any, "unset",
        "HMAC-SHA256 key of the webhook signature. Required when `webhook_url` is set (the LMS verifies the \
        signature). Empty means unset."),
    setting!(_, "WORKSPACED_SECRET_KEY",
        auth.secret_key: p::optional_text, c::signing_key, "unset",
        "Key that signs launch links and session cookies (HMAC-SHA256), at least 32 characters (`openssl rand \
        -hex 32`). Environment only: there is no TOML key, so it never sits in the config file. Unset or empty: \
        the key is read from `secret_key_file`. Changing the key ends every session and voids unused launch \
        links; nothing else."),
    setting!("secret_key_file", "WORKSPACED_SECRET_KEY_FILE",
        auth.secret_key_file: p::optional_path, c::any, "`workspaced.key` beside the database",
        "File holding the signing key when `WORKSPACED_SECRET_KEY` is not set. `serve` creates it on first run \
        with 32 random bytes in hex, mode 0600; a file with fewer than 32 characters stops the service. The key \
        is never logged. The default follows `DATABASE_URL`: `sqlite:///var/lib/workspaced/workspaced.db` gives \
        `/var/lib/workspaced/workspaced.key`, the default database `./workspaced.key`. Empty means unset."),
    setting!("launch_ttl", "WORKSPACED_LAUNCH_TTL",
        auth.launch_ttl: p::parse_duration, c::positive, "`60s`",
        "How long a launch link is valid. Each link works once. More than zero."),
    setting!("session_ttl", "WORKSPACED_SESSION_TTL",
        auth.session_ttl: p::parse_duration, c::positive, "`12h`",
        "How long a browser session lasts after a launch (the cookie's `Max-Age` and its signed expiry); also the \
        life of a student token. Use does not extend it: afterwards the student opens the workspace again from \
        the course page. More than zero."),
    setting!("cookie_secure", "WORKSPACED_COOKIE_SECURE",
        auth.cookie_secure: p::optional_bool, c::any, "auto",
        "Whether the session cookie is `Secure`. Auto: when `public_url` starts with `https://`. `auto` or empty \
        for auto, else a boolean as for `open_tab_keeps_alive`."),
    setting!("login_url", "WORKSPACED_LOGIN_URL",
        auth.login_url: p::optional_text, c::any, "unset",
        "Where a browser without a session is sent (303) when it asks for a workspace page (`Accept: text/html`), \
        e.g. the course page. Unset: a 401 page. Scripts always get 401 JSON. Empty means unset."),
    setting!("cors_origins", "WORKSPACED_CORS_ORIGINS",
        auth.cors_origins: p::origins, c::any, "none",
        "Origins of LMS pages whose scripts may use the JS SDK (`/sdk/workspaced.js`, [sdk.md](sdk.md)) from \
        another origin: preflights are answered and `Access-Control-Allow-Origin` is set on `POST \
        /api/workspaces/heartbeat` and the routes under `/_workspaced/`, of which a student token opens `status` \
        and `heartbeat`. An origin is scheme, host and port, e.g. `https://lms.example.edu`; exact match, a \
        trailing `/` is dropped. A list: comma-separated, or a TOML or JSON array of strings; spaces around an \
        origin are dropped. No cookies cross origins."),
    setting!("lti_embed", "WORKSPACED_LTI_EMBED",
        auth.lti_embed: p::bool, c::any, "`false`",
        "LTI launches shown in the LMS's iframe open the workspace in that frame (the session cookie then is \
        `SameSite=None; Secure; Partitioned`, and the workspace's pages allow framing by the registered platforms \
        only), instead of the default: a button that opens it in a new window, which works in every browser. See \
        [lti.md](lti.md) for its limits."),
    setting!("lti_login_claim", "WORKSPACED_LTI_LOGIN_CLAIM",
        auth.lti_login_claim: p::optional_text, c::any, "unset",
        "An id_token claim holding the LMS's login id (e.g. \
        `https://purl.imsglobal.org/spec/lti/claim/lis#person_sourcedid`: `#` reads a field of an object claim). \
        When its value is a valid id, an LTI user's workspace is `<login>-<6 hex of the course>`; else, and when \
        unset, `lti-` and a hash. Empty means unset."),
    setting!("proxy_timeout", "WORKSPACED_PROXY_TIMEOUT",
        proxy.timeout: p::parse_duration, c::positive, "`60s`",
        "Longest wait for an IDE's response headers (for a WebSocket: its `101`); a slower IDE gets 504 \
        `ide_timeout`. A response that has begun streams on without a limit. More than zero."),
    setting!("proxy_connect_timeout", "WORKSPACED_PROXY_CONNECT_TIMEOUT",
        proxy.connect_timeout: p::parse_duration, c::positive, "`5s`",
        "Longest wait to connect to an IDE's port. More than zero."),
    setting!("proxy_max_body", "WORKSPACED_PROXY_MAX_BODY",
        proxy.max_body: p::size, c::any, "`1GiB`",
        "Largest request body forwarded to an IDE (uploads). A request whose `Content-Length` is larger gets 413 \
        `body_too_large` before anything is forwarded; a body sent without a length (chunked) is cut off at the \
        limit and answered 413 when the IDE is still reading it. A size."),
    setting!("proxy_max_connections_per_student", "WORKSPACED_PROXY_MAX_CONNECTIONS_PER_STUDENT",
        proxy.max_connections_per_student: p::number, c::at_least_one, "`64`",
        "Proxied requests and open WebSockets one student may have at once (a browser opens a handful; thousands \
        would be one student exhausting the service); more get 429 `too_many_connections`. At least 1."),
    setting!("header_read_timeout", "WORKSPACED_HEADER_READ_TIMEOUT",
        header_read_timeout: p::parse_duration, c::header_timeout, "`10s`",
        "Longest a client may take to send a request's headers (on a new or kept-alive connection); a slower one \
        is disconnected, so slow clients cannot hold every connection (slowloris). More than zero, at most 5m."),
    setting!("lease_ttl", "WORKSPACED_LEASE_TTL",
        lease_ttl: p::parse_duration, c::lease_ttl, "`10s`",
        "PostgreSQL with several replicas: time to live of the lease that picks the one replica running the culler, \
        reconciler, usage and webhook loops. The holder renews it every third and stops acting after two thirds \
        without a renewal; another replica takes over at most one time to live after the holder died. 1s to 5m."),
    setting!("storage_timeout", "WORKSPACED_STORAGE_TIMEOUT",
        storage_timeout: p::parse_duration, c::storage_timeout, "`10s`",
        "Deadline of one file-system call on the base path (preparing a student's folder at a start, the start-up \
        and readiness checks). A mount that stops answering (a `hard` NFS or EFS mount) then fails the start with \
        503 `storage_unavailable` instead of hanging it; the blocked thread is left to finish. More than zero, at \
        most 10m."),
    setting!("storage_max_blocked", "WORKSPACED_STORAGE_MAX_BLOCKED",
        storage_max_blocked: p::number, c::storage_max_blocked, "`16`",
        "File-system calls on the base path that may hang at once; with that many unanswered, further ones fail \
        at once with `storage_unavailable` rather than tie up more threads. 1 to 1024."),
    setting!("admin_host", "WORKSPACED_ADMIN_HOST",
        admin_host: p::host, c::any, "unset",
        "Serve the admin dashboard and the API only for this `Host` (e.g. `admin.ide.example.edu`, a port may \
        follow), and no IDE on it: then nothing a student serves runs on the dashboard's origin. Other hosts answer \
        404 `not_found` for `/admin` and the API (but the student's heartbeat, which the SDK sends). Recommended in \
        production; see docs/security.md. Empty means unset."),
    setting!("templates_path", "WORKSPACED_TEMPLATES_PATH",
        courses.templates_path: p::optional_path, c::any, "unset",
        "Folder of the operator's course templates: a course's `template` names a folder directly in it (starter \
        files copied into a student's folder at the first start), and `distribute` copies folders from it. Unset: \
        courses cannot name templates. Read without following symbolic links. Empty means unset."),
    setting!("allowed_images", "WORKSPACED_ALLOWED_IMAGES",
        courses.allowed_images: p::comma_list, c::any, "empty: only `image`",
        "Images a course profile may name (comma-separated, or a TOML array). Empty: only the configured `image`. \
        A profile with another image is refused with 400 `image_not_allowed`."),
    setting!("course_max_cpus", "WORKSPACED_COURSE_MAX_CPUS",
        courses.max_cpus: p::number, c::cpus, "`4`",
        "Largest CPU limit a course profile may set; above it: 400 `over_operator_limit`. More than 0, at most 1024."),
    setting!("course_max_memory", "WORKSPACED_COURSE_MAX_MEMORY",
        courses.max_memory_bytes: p::parse_bytes, c::docker_memory, "`8g`",
        "Largest memory limit a course profile may set; above it: 400 `over_operator_limit`."),
    setting!("course_max_pids_limit", "WORKSPACED_COURSE_MAX_PIDS_LIMIT",
        courses.max_pids_limit: p::number, c::at_least_one, "`4096`",
        "Largest process limit a course profile may set; above it: 400 `over_operator_limit`."),
    setting!("proxy_host_suffix", "WORKSPACED_PROXY_HOST_SUFFIX",
        proxy.host_suffix: p::host_suffix, c::any, "unset (path mode only)",
        "Host mode: with `ws.example.org`, a request for `alice.ws.example.org` goes to alice's IDE at `/`, and \
        launch links and the workspace `url` use that host. Needs wildcard DNS and a wildcard certificate. \
        `/w/{id}/` on other hosts keeps working. The value is lowercased and a leading `.` dropped. Empty means \
        unset."),
];

/// The markdown table of every setting, as docs/configuration.md holds it between its `settings:` markers.
pub fn docs_table() -> String {
    let mut out = String::from("| TOML key | environment variable | default | meaning |\n| --- | --- | --- | --- |\n");
    for s in SETTINGS {
        let key = s.key.map_or_else(|| "(none)".to_owned(), |k| format!("`{k}`"));
        let cells = [key, format!("`{}`", s.env), s.default.to_owned(), s.doc.to_owned()];
        // A `|` inside a cell would end it early.
        let cells: Vec<String> = cells.iter().map(|c| c.replace('|', "\\|")).collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}
