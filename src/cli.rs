//! The command line: `serve`, workspace commands against a running server, and `image build`.
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
            let body = send(reqwest::Client::new().get(&url)).await?;
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
    }
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
    let body = send(reqwest::Client::new().request(method, &url)).await?;
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
