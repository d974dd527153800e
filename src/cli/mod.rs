//! The command line: `serve` (wired in `main.rs`), workspace commands against a running server (`workspaces`),
//! operator commands on the file system (`storage`, `migrate`), keys and sessions on the database (`keys`), and
//! `image build`. Errors go to stderr as `error: ...` with a non-zero exit code; results go to stdout.

mod client;
mod courses;
mod image;
mod keys;
mod lti;
mod maintenance;
mod migrate;
mod storage;
mod volumes;
mod workspaces;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use client::{ClientError, API_KEY_ENV};
use workspaces::WorkspaceAction;

use crate::config::Settings;

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
    /// Delete a student for good: the folder and the record (for retention rules and erasure requests). The
    /// workspace must be stopped; the deletion is written to the event log. Needs --confirm.
    Delete {
        #[command(flatten)]
        workspace: WorkspaceArgs,
        /// Yes, remove this student's files for good.
        #[arg(long)]
        confirm: bool,
    },
    /// List workspaces.
    List {
        /// Only workspaces with this status (stopped, starting, running, stopping, failed).
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Course profiles: image, limits, culling and starter files per course (through a running server).
    Course {
        #[command(subcommand)]
        command: courses::CourseCommand,
    },
    /// LTI 1.3: register LMSs and show the URLs to paste into them (through a running server).
    Lti {
        #[command(subcommand)]
        command: lti::LtiCommand,
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
    /// End of term: a verified `<id>.tar.gz` per student folder (the export's format) and a SHA256SUMS, in a folder.
    Archive(storage::ArchiveArgs),
    /// Disk usage of student folders (allocated bytes, like `du -s -B1`).
    Usage(UsageArgs),
    /// Copy every student folder to a new base path (e.g. an EFS mount) and verify each file by checksum.
    /// Runs inside the server when one answers (a start then waits for that student's copy); resumable.
    Migrate(MigrateArgs),
    /// Hand everything inside a student's folder (or every folder) to the workspace uid:gid, without following
    /// symlinks or entering other file systems.
    Repair(maintenance::RepairArgs),
    /// Write a consistent copy of the database and the signing key to a tar.gz (`-o x.tar.gz`) or a new folder,
    /// owner-only; safe while the service runs. For PostgreSQL it prints the pg_dump command instead.
    Backup(maintenance::BackupArgs),
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
    #[arg(long, required_unless_present = "from_volumes", conflicts_with = "from_volumes")]
    pub to: Option<PathBuf>,
    /// Copy the old system's Docker named volumes into student folders below the base path instead (read through
    /// the engine; never deletes a volume).
    #[arg(long)]
    pub from_volumes: bool,
    /// With --from-volumes: volume name pattern; `{student}` is the student id, `*` any run of characters.
    #[arg(long, default_value = crate::ops::volumes::mapping::DEFAULT_PATTERN, requires = "from_volumes")]
    pub pattern: String,
    /// With --from-volumes: a CSV file of `volume,student_id` lines, instead of the pattern.
    #[arg(long, requires = "from_volumes", conflicts_with = "pattern")]
    pub map: Option<PathBuf>,
    /// With --from-volumes: add a volume's files to a student folder that already has files (a name that exists
    /// with other content refuses that volume, nothing changed).
    #[arg(long, requires = "from_volumes")]
    pub merge: bool,
    /// With --from-volumes: image of the helper container that mounts each volume read-only (created, never
    /// started or pulled; default: the workspace image).
    #[arg(long, requires = "from_volumes")]
    pub image: Option<String>,
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
    /// Also run a one-shot probe on every swarm node that may run a workspace: base path mounted, writable by the
    /// workspace user, the same files and file system as here (needs a swarm manager).
    #[arg(long)]
    pub nodes: bool,
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
    /// Refuse the archive once it has more entries than this.
    #[arg(long, default_value_t = crate::ops::import::DEFAULT_MAX_ENTRIES)]
    pub max_entries: u64,
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
    /// Build an image offline (Debian packages and npm only): the code-server image (default), the tiny test image,
    /// or workspaced's own image for a container deployment. The Debian bases are built once; skipped when already
    /// built, but for `--service`, whose binary may have changed.
    Build {
        /// Tag of the image to build (default: workspaced/code-server:4.139.1; with --tiny workspaced/tiny:1; with
        /// --jupyter workspaced/jupyter:4.4.10; with --service workspaced/workspaced:<this version>).
        #[arg(long)]
        tag: Option<String>,
        /// Build the tiny test image (busybox httpd) instead.
        #[arg(long, conflicts_with = "service")]
        tiny: bool,
        /// Build the JupyterLab image (workspaced/jupyter:<version>; docs/configuration.md) instead.
        #[arg(long, conflicts_with_all = ["service", "tiny"])]
        jupyter: bool,
        /// Build the image of workspaced itself (compose, ECS): a workspaced binary on a Debian bookworm base with
        /// ca-certificates and git; ENTRYPOINT workspaced, CMD serve.
        #[arg(long)]
        service: bool,
        /// With --service: the workspaced binary to put in the image (default: this executable). It must run on
        /// Debian bookworm's glibc.
        #[arg(long, requires = "service")]
        binary: Option<PathBuf>,
    },
}

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
        Command::Serve => anyhow::bail!("serve is run by main, not as a client command"),
        Command::Start(a) => workspaces::workspace(settings, &a, WorkspaceAction::Start).await,
        Command::Stop(a) => workspaces::workspace(settings, &a, WorkspaceAction::Stop).await,
        Command::Status(a) => workspaces::workspace(settings, &a, WorkspaceAction::Status).await,
        Command::Delete { workspace, confirm } => workspaces::delete(settings, &workspace, confirm).await,
        Command::List { status, client } => workspaces::list(settings, status.as_deref(), &client).await,
        Command::Image { command: ImageCommand::Build { tag, tiny, jupyter, service, binary } } => {
            let kind = match (tiny, jupyter, service) {
                (_, _, true) => image::ImageKind::Service { binary },
                (true, _, false) => image::ImageKind::Tiny,
                (false, true, false) => image::ImageKind::Jupyter,
                (false, false, false) => image::ImageKind::CodeServer,
            };
            image::build(tag.as_deref(), kind)
        }
        Command::Course { command } => courses::course(settings, command).await,
        Command::Lti { command } => lti::lti(settings, command).await,
        Command::Doctor(a) => storage::doctor(settings, a).await,
        Command::Export(a) => storage::export(settings, a).await,
        Command::Import(a) => storage::import(settings, a).await,
        Command::Archive(a) => storage::archive(settings, a).await,
        Command::Usage(a) => storage::usage(settings, a).await,
        Command::Migrate(a) => migrate::migrate(settings, a).await,
        Command::Repair(a) => maintenance::repair(settings, a).await,
        Command::Backup(a) => maintenance::backup(settings, a).await,
        Command::Key { command } => keys::key(settings, command).await,
        Command::Session { command: SessionCommand::Revoke { student, all: _ } } => {
            keys::revoke_sessions(settings, student).await
        }
    }
}

fn parse_student(raw: &str) -> anyhow::Result<crate::domain::StudentId> {
    crate::domain::StudentId::parse(raw).map_err(|e| anyhow::anyhow!("invalid student id {raw:?}: {e}"))
}
