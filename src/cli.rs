//! The command line: `serve`, workspace commands against a running server, `image build`, and the operator's
//! storage commands (`doctor`, `export`, `import`, `usage`), which work on the base path directly.
//! Errors go to stderr with a non-zero exit code; results go to stdout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::config::{Settings, DEFAULT_IMAGE};

#[derive(Debug, Parser)]
#[command(name = "workspaced", version, about = "One code-server workspace per student, on Docker")]
pub struct Cli {
    /// Configuration file (default: ./workspaced.toml when it exists). Environment variables win over it.
    #[arg(long, global = true, env = "WORKSPACED_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (API, lifecycle) until SIGTERM or Ctrl-C.
    Serve,
    /// Start a student's workspace and wait until it is ready.
    Start(WorkspaceArgs),
    /// Stop a student's workspace (its files are kept).
    Stop(WorkspaceArgs),
    /// Show a student's workspace.
    Status(WorkspaceArgs),
    /// List workspaces.
    List {
        /// Only workspaces with this status (stopped, starting, running, stopping, failed).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Container images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Check this host: base path, file system and NFS options, small-file latency, student folders, Docker,
    /// database. Exits non-zero when a check fails.
    Doctor(DoctorArgs),
    /// Write a student's folder as a tar.gz archive (to a file, or to stdout when it is not a terminal).
    Export(ExportArgs),
    /// Replace a student's folder with the contents of a tar.gz archive, atomically. The workspace must be stopped.
    Import(ImportArgs),
    /// Disk usage of student folders (allocated bytes, like `du -s -B1`).
    Usage(UsageArgs),
    /// Copy every student folder to a new base path (e.g. an EFS mount) and verify each file by checksum.
    /// Runs inside the server when one answers (a start then waits for that student's copy); resumable.
    Migrate(MigrateArgs),
    /// API keys for the LMS backend and operators (works on the database directly; no server needed).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Browser sessions and student tokens (works on the database directly; no server needed).
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// End a student's browser sessions and student tokens now (or everybody's with --all); a new launch link
    /// gives a new session. Takes effect within 2 seconds on every server.
    Revoke {
        /// The student whose sessions end.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        student: Option<crate::domain::StudentId>,
        /// End every student's sessions.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key and print it alone on stdout. It is shown this once; only its hash is stored.
    Create {
        /// `lms` (workspaces, launch links, heartbeats, events) or `admin` (also export, migrate, metrics).
        #[arg(long, value_parser = ["lms", "admin"])]
        role: String,
        /// A note to tell keys apart in `key list` (e.g. "moodle-prod").
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys (id, role, label, created, revoked); never the keys themselves.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by its id (the 8 characters after `wsd_`). Takes effect within 2 seconds.
    Revoke { id: String },
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The new base path (must exist and be writable; on EFS: mounted).
    #[arg(long)]
    pub to: PathBuf,
    /// Only report what would be copied.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Base URL of the running server (default: http://<WORKSPACED_LISTEN>). When none answers, the migration runs
    /// in this process.
    #[arg(long, env = "WORKSPACED_URL")]
    pub server: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Mount table used to find the base path's file system.
    #[arg(long, default_value = "/proc/self/mounts")]
    pub mounts: PathBuf,
    /// Small files created, stat-ed, read and deleted by the latency test.
    #[arg(long, default_value_t = crate::ops::doctor::SMALL_FILES_REFERENCE)]
    pub files: usize,
    /// Files in the git repository generated for the `git status` test.
    #[arg(long, default_value_t = 1000)]
    pub git_files: usize,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The student id.
    pub student_id: String,
    /// Output file, or `-` for stdout. Default: stdout when it is not a terminal, else `<id>-<timestamp>.tar.gz`.
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
    /// Base URL of the running server, asked whether the workspace runs (default: http://<WORKSPACED_LISTEN>).
    #[arg(long, env = "WORKSPACED_URL")]
    pub server: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The student id.
    pub student_id: String,
    /// The tar.gz archive, or `-` for stdin.
    pub file: PathBuf,
    /// Import even while the workspace runs (the running IDE keeps the old folder open and loses what it writes).
    #[arg(long)]
    pub force_running: bool,
    /// Refuse the archive once its content exceeds this size (e.g. 10GiB, 500m).
    #[arg(long, default_value = "10GiB", value_parser = parse_size)]
    pub max_bytes: u64,
    /// Keep the previous contents as `<base>/.previous-<id>-<timestamp>` instead of deleting them.
    #[arg(long)]
    pub keep_previous: bool,
    /// Base URL of the running server, asked whether the workspace runs (default: http://<WORKSPACED_LISTEN>).
    #[arg(long, env = "WORKSPACED_URL")]
    pub server: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only this student (default: every student folder).
    pub student_id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(v: &str) -> Result<u64, String> {
    crate::config::parse_bytes(v).map(|b| b as u64)
}

#[derive(Debug, clap::Args)]
pub struct WorkspaceArgs {
    /// The student id.
    pub student_id: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Base URL of the running server (default: http://<WORKSPACED_LISTEN>).
    #[arg(long, env = "WORKSPACED_URL")]
    pub server: Option<String>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build the code-server image offline (Debian packages and npm only). Skipped when already built.
    Build {
        /// Tag of the image to build.
        #[arg(long, default_value = DEFAULT_IMAGE)]
        tag: String,
        /// Build the tiny test image (busybox httpd) instead.
        #[arg(long)]
        tiny: bool,
    },
}

/// The image build recipe, embedded so the one binary can build its image anywhere.
const BUILD_SCRIPT: &str = include_str!("../scripts/build-image.sh");

/// Runs a client or image command (everything but `serve`).
pub async fn run_command(settings: &Settings, command: Command) -> ExitCode {
    match run(settings, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve => unreachable!("serve is handled by main"),
        Command::Start(a) => workspace_call(settings, &a, reqwest::Method::POST, "start").await,
        Command::Stop(a) => workspace_call(settings, &a, reqwest::Method::POST, "stop").await,
        Command::Status(a) => workspace_call(settings, &a, reqwest::Method::GET, "").await,
        Command::List { status, client } => {
            let mut url = format!("{}/api/workspaces", base_url(settings, &client));
            if let Some(s) = status {
                url = format!("{url}?status={s}");
            }
            let body = send(api_client().get(&url)).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                println!("{:<24} {:<10} {:<26} URL", "STUDENT", "STATUS", "LAST ACTIVITY");
                for w in body["workspaces"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<10} {:<26} {}",
                        w["student_id"].as_str().unwrap_or(""),
                        w["status"].as_str().unwrap_or(""),
                        w["last_activity"].as_str().unwrap_or("-"),
                        w["url"].as_str().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }
        Command::Image { command: ImageCommand::Build { tag, tiny } } => build_image(&tag, tiny),
        Command::Doctor(a) => doctor(settings, a).await,
        Command::Export(a) => export(settings, a).await,
        Command::Import(a) => import(settings, a).await,
        Command::Usage(a) => usage(settings, a).await,
        Command::Migrate(a) => migrate(settings, a).await,
        Command::Key { command } => key(settings, command).await,
        Command::Session { command: SessionCommand::Revoke { student, all: _ } } => {
            let store = crate::store::Store::connect(&settings.database_url)
                .await
                .with_context(|| format!("cannot open the database {}", settings.database_url))?;
            let scope = match &student {
                Some(s) => crate::store::RevokeScope::Student(s.clone()),
                None => crate::store::RevokeScope::All,
            };
            store.revoke_sessions(&scope, chrono::Utc::now()).await?;
            match student {
                Some(s) => eprintln!("revoked every session of {s}"),
                None => eprintln!("revoked every session of every student"),
            }
            Ok(())
        }
    }
}

/// The environment variable the CLI's server calls take their API key from.
pub const API_KEY_ENV: &str = "WORKSPACED_API_KEY";

/// A client for the server's API that sends `WORKSPACED_API_KEY` as its bearer key.
fn api_client_builder() -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty()) {
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")) {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    reqwest::Client::builder().default_headers(headers)
}

fn api_client() -> reqwest::Client {
    api_client_builder().build().unwrap_or_default()
}

async fn key(settings: &Settings, command: KeyCommand) -> anyhow::Result<()> {
    let store = crate::store::Store::connect(&settings.database_url)
        .await
        .with_context(|| format!("cannot open the database {}", settings.database_url))?;
    let now = chrono::Utc::now();
    match command {
        KeyCommand::Create { role, label } => {
            let role: crate::auth::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let k = crate::auth::create_key(&store, role, &label, now).await?;
            eprintln!("created {} key {} (shown once; store it now)", role.as_str(), k.id);
            println!("{}", k.key);
        }
        KeyCommand::List { json } => {
            let keys = store.list_api_keys().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<10} {:<6} {:<26} {:<26} LABEL", "ID", "ROLE", "CREATED", "REVOKED");
                for k in keys {
                    let revoked = k.revoked_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "-".into());
                    println!(
                        "{:<10} {:<6} {:<26} {:<26} {}",
                        k.id,
                        k.role,
                        k.created_at.to_rfc3339(),
                        revoked,
                        k.label
                    );
                }
            }
        }
        KeyCommand::Revoke { id } => {
            if !store.revoke_api_key(&id, now).await? {
                bail!("no active key with id {id:?} (see `workspaced key list`)");
            }
            eprintln!("revoked key {id}");
        }
    }
    Ok(())
}

fn base_url(settings: &Settings, client: &ClientArgs) -> String {
    client.server.clone().unwrap_or_else(|| settings.public_url()).trim_end_matches('/').to_owned()
}

async fn workspace_call(
    settings: &Settings,
    a: &WorkspaceArgs,
    method: reqwest::Method,
    action: &str,
) -> anyhow::Result<()> {
    // The server validates too; checking here gives the same message without a round trip.
    crate::domain::StudentId::parse(&a.student_id)
        .map_err(|e| anyhow::anyhow!("invalid student id {:?}: {e}", a.student_id))?;
    let mut url = format!("{}/api/workspaces/{}", base_url(settings, &a.client), a.student_id);
    if !action.is_empty() {
        url = format!("{url}/{action}");
    }
    let body = send(api_client().request(method, &url)).await?;
    if a.client.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        let field = |k: &str| body[k].as_str().unwrap_or("-").to_owned();
        println!("{}: {}", field("student_id"), field("status"));
        if let Some(url) = body["url"].as_str() {
            println!("  url: {url}");
        }
        if let Some(m) = body["stop_message"].as_str() {
            println!("  {m}");
        }
        if let Some(e) = body["error"].as_str() {
            println!("  error: {e}");
        }
        println!("  last activity: {}", field("last_activity"));
    }
    Ok(())
}

async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let resp = req.send().await.context("cannot reach workspaced (is `workspaced serve` running?)")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let code = body["error"]["code"].as_str().unwrap_or("unknown");
        let message = body["error"]["message"].as_str().unwrap_or("");
        bail!("{status} {code}: {message}");
    }
    Ok(body)
}

fn build_image(tag: &str, tiny: bool) -> anyhow::Result<()> {
    let script = std::env::temp_dir().join(format!("workspaced-build-image-{}.sh", std::process::id()));
    std::fs::write(&script, BUILD_SCRIPT).context("cannot write the build script")?;
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script).arg(if tiny { "tiny" } else { "code-server" });
    if tiny {
        cmd.env("WORKSPACED_TINY_IMAGE", tag);
    } else {
        cmd.env("WORKSPACED_IMAGE", tag);
    }
    let status = cmd.status().context("cannot run bash");
    let _ = std::fs::remove_file(&script);
    if !status?.success() {
        bail!("image build failed");
    }
    Ok(())
}

fn parse_student(raw: &str) -> anyhow::Result<crate::domain::StudentId> {
    crate::domain::StudentId::parse(raw).map_err(|e| anyhow::anyhow!("invalid student id {raw:?}: {e}"))
}

async fn doctor(settings: &Settings, a: DoctorArgs) -> anyhow::Result<()> {
    use crate::ops::doctor::{run_doctor, DoctorOptions};
    let options = DoctorOptions { mounts: a.mounts, files: a.files, git_files: a.git_files, ..Default::default() };
    let report = run_doctor(settings, &options).await;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", report.to_text());
    }
    let failed = report.checks.iter().filter(|c| c.status == crate::ops::doctor::CheckStatus::Fail).count();
    if failed > 0 {
        bail!("{failed} check(s) failed");
    }
    Ok(())
}

/// What the server says about a workspace, for export and import.
enum Running {
    Yes(String),
    No,
    /// Nothing answered: no server runs, so no workspace can be running through it.
    Unreachable(String),
    /// The server answered something unexpected.
    Unclear(String),
}

async fn workspace_running(settings: &Settings, server: Option<&str>, student: &crate::domain::StudentId) -> Running {
    let base = server.map(str::to_owned).unwrap_or_else(|| settings.public_url()).trim_end_matches('/').to_owned();
    let url = format!("{base}/api/workspaces/{student}");
    let client = match api_client_builder().timeout(std::time::Duration::from_secs(5)).build() {
        Ok(c) => c,
        Err(e) => return Running::Unclear(e.to_string()),
    };
    match client.get(&url).send().await {
        Err(_) => Running::Unreachable(base),
        Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Running::No,
        Ok(r) if r.status().is_success() => {
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match body["status"].as_str() {
                Some(s @ ("running" | "starting" | "stopping")) => Running::Yes(s.to_owned()),
                Some(_) => Running::No,
                None => Running::Unclear(format!("{url} answered without a status")),
            }
        }
        Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED || r.status() == reqwest::StatusCode::FORBIDDEN => {
            Running::Unclear(format!("{url} answered {}: set {API_KEY_ENV} to an lms or admin key", r.status()))
        }
        Ok(r) => Running::Unclear(format!("{url} answered {}", r.status())),
    }
}

fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!("{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

async fn export(settings: &Settings, a: ExportArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;

    use crate::ops::archive::{content_size, default_archive_name, export_to_writer};

    let student = parse_student(&a.student_id)?;
    let storage = crate::storage::Storage::new(&settings.base_path, settings.workspace.uid, settings.workspace.gid);
    let dir = storage.student_dir(&student);
    if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        bail!("no folder for {student} at {}", dir.display());
    }
    match workspace_running(settings, a.server.as_deref(), &student).await {
        Running::Yes(s) => eprintln!(
            "warning: the workspace of {student} is {s}: files open in the IDE may be mid-write; stop it first for a \
             consistent copy"
        ),
        Running::Unclear(why) => eprintln!("warning: cannot tell whether the workspace runs: {why}"),
        Running::No | Running::Unreachable(_) => {}
    }
    let to_terminal = std::io::stdout().is_terminal();
    let output = match a.output {
        Some(p) if p.as_os_str() == "-" => {
            if to_terminal {
                bail!("refusing to write an archive to a terminal; redirect stdout or use -o FILE");
            }
            None
        }
        Some(p) => Some(p),
        None if to_terminal => Some(PathBuf::from(default_archive_name(&student, chrono::Utc::now()))),
        None => None,
    };

    let total = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || content_size(&dir).unwrap_or(0)).await?
    };
    let bar = progress_bar(total, "export");
    let (bar2, dir2, output2) = (bar.clone(), dir.clone(), output.clone());
    let stats = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let tick = |p: &crate::ops::archive::Progress| bar2.set_position(p.bytes);
        match output2 {
            None => Ok(export_to_writer(&dir2, std::io::BufWriter::new(std::io::stdout().lock()), tick)?),
            Some(path) => {
                // Written under a temporary name, so a half-written archive never carries the final one.
                let mut part = path.clone().into_os_string();
                part.push(".part");
                let part = PathBuf::from(part);
                let file = std::fs::File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
                let result = (|| -> anyhow::Result<_> {
                    let stats = export_to_writer(&dir2, std::io::BufWriter::with_capacity(256 * 1024, &file), tick)?;
                    file.sync_all()?;
                    std::fs::rename(&part, &path)?;
                    Ok(stats)
                })();
                if result.is_err() {
                    let _ = std::fs::remove_file(&part);
                }
                result
            }
        }
    })
    .await??;
    bar.finish_and_clear();
    let target = output.map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".to_owned());
    eprintln!(
        "exported {student}: {} files, {} folders, {} symlinks, {} hardlinks, {} bytes to {target}",
        stats.files, stats.dirs, stats.symlinks, stats.hardlinks, stats.bytes
    );
    let list = |v: &[String]| {
        let mut s = v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 10 {
            s.push_str(&format!(" and {} more", v.len() - 10));
        }
        s
    };
    if !stats.changed.is_empty() {
        eprintln!("warning: changed while being read (archived as first seen): {}", list(&stats.changed));
    }
    if !stats.skipped.is_empty() {
        eprintln!("note: not archived: {}", list(&stats.skipped));
    }
    if !stats.unsafe_links.is_empty() {
        eprintln!(
            "warning: symlinks pointing outside the folder (an import will refuse this archive): {}",
            list(&stats.unsafe_links)
        );
    }
    Ok(())
}

/// Counts the bytes read from an archive into a progress bar.
struct ProgressReader<R> {
    inner: R,
    bar: indicatif::ProgressBar,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

async fn import(settings: &Settings, a: ImportArgs) -> anyhow::Result<()> {
    use crate::ops::import::{open_archive, prepare_import, ImportOptions};

    let student = parse_student(&a.student_id)?;
    let check_running = |when: &'static str| {
        let (student, server) = (student.clone(), a.server.clone());
        async move {
            match workspace_running(settings, server.as_deref(), &student).await {
                Running::Yes(s) if a.force_running => {
                    eprintln!("warning: the workspace of {student} is {s}; importing anyway (--force-running)");
                    Ok(())
                }
                Running::Yes(s) => Err(anyhow::anyhow!(
                    "the workspace of {student} is {s}{when}; stop it first (workspaced stop {student}) or pass \
                     --force-running"
                )),
                Running::Unclear(why) if !a.force_running => Err(anyhow::anyhow!(
                    "cannot tell whether the workspace of {student} runs: {why}; pass --force-running to import anyway"
                )),
                Running::Unreachable(server) if when.is_empty() => {
                    eprintln!("note: no server answers at {server}; assuming the workspace is not running");
                    Ok(())
                }
                _ => Ok(()),
            }
        }
    };
    check_running("").await?;

    let reader = open_archive(&a.file).with_context(|| format!("cannot open {}", a.file.display()))?;
    let length = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(length, "import");
    let reader = ProgressReader { inner: reader, bar: bar.clone() };
    let options = ImportOptions {
        uid: settings.workspace.uid,
        gid: settings.workspace.gid,
        max_bytes: a.max_bytes,
        keep_previous: a.keep_previous,
    };
    let (base, student2) = (settings.base_path.clone(), student.clone());
    let prepared = tokio::task::spawn_blocking(move || prepare_import(&base, &student2, reader, &options)).await?;
    bar.finish_and_clear();
    let prepared = prepared?;

    // A start may have happened while the archive was extracted; a workspace that started since keeps the old folder
    // open, and what it writes would be lost with it.
    if let Err(e) = check_running(" (it started during the import)").await {
        tokio::task::spawn_blocking(move || drop(prepared)).await?;
        return Err(e);
    }
    let report = tokio::task::spawn_blocking(move || prepared.commit()).await??;
    println!("imported {} entries ({} bytes) into {}", report.entries, report.bytes, report.dir.display());
    match (&report.previous_kept, &report.cleanup_error) {
        (Some(p), Some(e)) => {
            eprintln!("warning: the previous contents could not be deleted ({e}); they are at {}", p.display())
        }
        (Some(p), None) => println!("previous contents kept at {}", p.display()),
        (None, _) => {}
    }
    Ok(())
}

async fn usage(settings: &Settings, a: UsageArgs) -> anyhow::Result<()> {
    use crate::ops::usage::disk_usage;

    let base = settings.base_path.clone();
    let students = match &a.student_id {
        Some(raw) => vec![parse_student(raw)?],
        None => crate::storage::Storage::new(&base, 0, 0)
            .student_folders()
            .with_context(|| format!("cannot list {}", base.display()))?,
    };
    let rows = tokio::task::spawn_blocking(move || {
        students.into_iter().map(|s| (disk_usage(&base.join(s.as_str())), s)).collect::<Vec<_>>()
    })
    .await?;
    let total: u64 = rows.iter().filter_map(|(u, _)| u.as_ref().ok()).map(|u| u.bytes).sum();
    if a.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(u, s)| match u {
                Ok(u) => serde_json::json!({ "student_id": s, "bytes": u.bytes, "files": u.files }),
                Err(e) => serde_json::json!({ "student_id": s, "error": e.to_string() }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "students": list, "total_bytes": total }))?);
    } else {
        println!("{:<24} {:>16} {:>12} {:>10}", "STUDENT", "BYTES", "SIZE", "FILES");
        for (u, s) in &rows {
            match u {
                Ok(u) => println!(
                    "{:<24} {:>16} {:>12} {:>10}",
                    s.as_str(),
                    u.bytes,
                    indicatif::HumanBytes(u.bytes).to_string(),
                    u.files
                ),
                Err(e) => println!("{:<24} error: {e}", s.as_str()),
            }
        }
        println!("{:<24} {:>16} {:>12}", "TOTAL", total, indicatif::HumanBytes(total).to_string());
    }
    if rows.iter().any(|(u, _)| u.is_err()) {
        bail!("some folders could not be measured");
    }
    Ok(())
}

async fn migrate(settings: &Settings, a: MigrateArgs) -> anyhow::Result<()> {
    use crate::ops::migrate::MigrateEvent;

    let to = std::path::absolute(&a.to).with_context(|| format!("bad path {}", a.to.display()))?;
    let base = a.server.clone().unwrap_or_else(|| settings.public_url()).trim_end_matches('/').to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<MigrateEvent>();
    let body = serde_json::json!({ "to": to, "dry_run": a.dry_run });
    match api_client().post(format!("{base}/api/admin/migrate")).json(&body).send().await {
        Ok(resp) => {
            if !resp.status().is_success() {
                let status = resp.status();
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                bail!(
                    "{status} {}: {}",
                    v["error"]["code"].as_str().unwrap_or("unknown"),
                    v["error"]["message"].as_str().unwrap_or("")
                );
            }
            tokio::spawn(async move {
                let mut resp = resp;
                let mut buf = Vec::new();
                while let Ok(Some(chunk)) = resp.chunk().await {
                    buf.extend_from_slice(&chunk);
                    while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        if let Ok(e) = serde_json::from_slice::<MigrateEvent>(&line) {
                            let _ = tx.send(e);
                        }
                    }
                }
            });
        }
        Err(e) if e.is_connect() => {
            eprintln!("note: no server answers at {base}; migrating in this process (start no workspace meanwhile)");
            let (from, dry) = (settings.base_path.clone(), a.dry_run);
            let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let to = to.clone();
            tokio::spawn(async move {
                crate::ops::migrate::migrate_reporting(None, &from, &to, dry, cancel, tx).await;
            });
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot reach workspaced at {base}"))),
    };

    // Events end when the run does (the server closes the stream; the local task drops its sender).
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut outcome: Option<anyhow::Result<()>> = None;
    while let Some(event) = rx.recv().await {
        if a.json {
            println!("{}", serde_json::to_string(&event)?);
        }
        match event {
            MigrateEvent::Plan { students, files, bytes, dry_run } => {
                if !a.json {
                    println!(
                        "{students} student folder(s), {files} files, {bytes} bytes{}",
                        if dry_run { " (dry run)" } else { "" }
                    );
                    if !dry_run {
                        // Every byte is read twice: once to copy, once to verify.
                        bar = Some(progress_bar(bytes * 2, "migrate"));
                    }
                }
            }
            MigrateEvent::Progress { bytes } => {
                if let Some(b) = &bar {
                    b.set_position(bytes);
                }
            }
            MigrateEvent::Student { report } => {
                if !a.json {
                    let line = format!(
                        "{:<24} {:<16} files {:>8}  bytes {:>12}  copied {:>8}  verified {:>8}",
                        report["student_id"].as_str().unwrap_or(""),
                        report["outcome"].as_str().unwrap_or(""),
                        report["files"],
                        report["bytes"],
                        report["copied_files"],
                        report["verified_files"]
                    );
                    match &bar {
                        Some(b) => b.println(line),
                        None => println!("{line}"),
                    }
                }
            }
            MigrateEvent::Done { migrated, already_done, skipped_running, files_verified, next_step } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if !a.json {
                    println!("migrated {migrated}, already done {already_done}, skipped (running) {skipped_running}, files verified {files_verified}");
                    println!("{next_step}");
                }
                outcome = Some(if skipped_running > 0 {
                    Err(anyhow::anyhow!("{skipped_running} workspace(s) not migrated"))
                } else {
                    Ok(())
                });
            }
            MigrateEvent::Error { message } => {
                if let Some(b) = bar.take() {
                    b.abandon();
                }
                outcome =
                    Some(Err(anyhow::anyhow!("migration stopped: {message}; run the same command again to resume")));
            }
        }
    }
    outcome.unwrap_or_else(|| Err(anyhow::anyhow!("the migration ended without a report; run it again to resume")))
}
