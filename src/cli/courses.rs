//! `course set|get|list|delete`: course profiles through a running server (LMS or admin key).

use std::path::PathBuf;

use clap::Subcommand;

use super::client::{server_base, ApiClient};
use super::ClientArgs;
use crate::api::{CourseList, CourseView};
use crate::config::Settings;
use crate::course::CourseBody;
use crate::domain::CourseId;

#[derive(Debug, Subcommand)]
pub enum CourseCommand {
    /// Create or replace a course's profile. The options given make the whole profile (what is left out follows the
    /// service's settings); or `--file profile.json` with the API's JSON body.
    Set {
        course: CourseId,
        #[command(flatten)]
        profile: ProfileArgs,
        /// The whole profile as JSON (the body of `PUT /api/courses/{course}`), instead of the options.
        #[arg(long, conflicts_with_all = ["title", "image", "command", "cpus", "memory", "pids_limit", "idle_timeout", "warning_lead", "max_age", "cull", "template"])]
        file: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a course: its profile and how many workspaces it has.
    Get {
        course: CourseId,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List the courses.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a course (refused while workspaces of it run). Its workspaces leave it; no file is touched.
    Delete {
        course: CourseId,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// Shown to students on the launcher.
    #[arg(long)]
    title: Option<String>,
    /// One of the operator's allowed images.
    #[arg(long)]
    image: Option<String>,
    /// Command and arguments (replaces the image's command; `{student_id}` and `{base_url}` are substituted).
    #[arg(long, num_args = 1.., allow_hyphen_values = true)]
    command: Option<Vec<String>>,
    #[arg(long)]
    cpus: Option<f64>,
    /// e.g. 512m, 2g.
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Seconds without activity before the stop.
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
    /// Seconds of warning before an idle stop.
    #[arg(long, value_name = "SECONDS")]
    warning_lead: Option<u64>,
    /// Seconds after the start when the workspace stops whatever its activity.
    #[arg(long, value_name = "SECONDS")]
    max_age: Option<u64>,
    /// `true` or `false`: whether idle workspaces of the course are stopped.
    #[arg(long)]
    cull: Option<bool>,
    /// A folder under the operator's templates path (starter files).
    #[arg(long)]
    template: Option<String>,
}

impl From<ProfileArgs> for CourseBody {
    fn from(a: ProfileArgs) -> Self {
        CourseBody {
            title: a.title,
            image: a.image,
            command: a.command,
            cpus: a.cpus,
            memory: a.memory,
            pids_limit: a.pids_limit,
            idle_timeout_seconds: a.idle_timeout,
            warning_lead_seconds: a.warning_lead,
            max_age_seconds: a.max_age,
            cull_enabled: a.cull,
            template: a.template,
        }
    }
}

pub async fn course(settings: &Settings, command: CourseCommand) -> anyhow::Result<()> {
    let client_of = |c: &ClientArgs| ApiClient::new(server_base(settings, c.server.as_deref()));
    match command {
        CourseCommand::Set { course, profile, file, client } => {
            let body: CourseBody = match file {
                Some(f) => {
                    let text = std::fs::read_to_string(&f)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
                    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                }
                None => profile.into(),
            };
            let view: CourseView = client_of(&client)?.put(&format!("/api/courses/{course}"), &body).await?;
            print_course(&view, client.json)
        }
        CourseCommand::Get { course, client } => {
            let view: CourseView = client_of(&client)?.get(&format!("/api/courses/{course}"), &[]).await?;
            print_course(&view, client.json)
        }
        CourseCommand::List { client } => {
            let list: CourseList = client_of(&client)?.get("/api/courses", &[]).await?;
            if client.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!("{:<24} {:>10} {:>8}  TITLE", "COURSE", "WORKSPACES", "RUNNING");
            for c in &list.courses {
                println!("{:<24} {:>10} {:>8}  {}", c.course_id, c.workspaces, c.running, c.title);
            }
            Ok(())
        }
        CourseCommand::Delete { course, client } => {
            client_of(&client)?.delete(&format!("/api/courses/{course}"), &[]).await?;
            println!("{course}: deleted (its workspaces keep their files)");
            Ok(())
        }
    }
}

fn print_course(view: &CourseView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
        return Ok(());
    }
    println!("{}: {} ({} workspaces, {} running)", view.course_id, view.title, view.workspaces, view.running);
    println!("{}", serde_json::to_string_pretty(&view.profile)?);
    Ok(())
}
