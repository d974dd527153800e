//! `start`, `stop`, `status` and `list`: calls to a running server, printed as a summary or as the server's JSON;
//! and the question export and import ask the server: does this workspace run?

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::StatusCode;

use super::client::{server_base, ApiClient, ClientError, API_KEY_ENV};
use super::{parse_student, ClientArgs, WorkspaceArgs};
use crate::api::{ListView, WorkspaceView};
use crate::config::Settings;
use crate::domain::{Status, StudentId};

/// What a workspace command asks of the server.
#[derive(Debug, Clone, Copy)]
pub enum WorkspaceAction {
    Start,
    Stop,
    Status,
}

pub async fn workspace(settings: &Settings, a: &WorkspaceArgs, action: WorkspaceAction) -> anyhow::Result<()> {
    // The server validates too; checking here gives the same message without a round trip.
    let student = parse_student(&a.student_id)?;
    let client = ApiClient::new(server_base(settings, a.client.server.as_deref()))?;
    let path = format!("/api/workspaces/{student}");
    let view: WorkspaceView = match action {
        WorkspaceAction::Start => client.post(&format!("{path}/start")).await?,
        WorkspaceAction::Stop => client.post(&format!("{path}/stop")).await?,
        WorkspaceAction::Status => client.get(&path, &[]).await?,
    };
    if a.client.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print_summary(&view);
    }
    Ok(())
}

/// `delete <id> --confirm`: through the server, which holds the student's lock and refuses a running workspace.
pub async fn delete(settings: &Settings, a: &WorkspaceArgs, confirm: bool) -> anyhow::Result<()> {
    let student = parse_student(&a.student_id)?;
    if !confirm {
        anyhow::bail!("this removes every file of {student} for good; add --confirm to go ahead");
    }
    let client = ApiClient::new(server_base(settings, a.client.server.as_deref()))?;
    client.delete(&format!("/api/admin/workspaces/{student}"), &[("confirm", student.as_str())]).await?;
    println!("{student}: deleted (folder and record; the event log keeps a `deleted` entry)");
    Ok(())
}

fn print_summary(view: &WorkspaceView) {
    println!("{}: {}", view.student_id, view.status);
    if let Some(url) = &view.url {
        println!("  url: {url}");
    }
    if let Some(m) = &view.stop_message {
        println!("  {m}");
    }
    if let Some(e) = &view.error {
        println!("  error: {e}");
    }
    println!("  last activity: {}", time_or_dash(view.last_activity));
}

/// A time as the API writes it (RFC 3339, `Z`, milliseconds when there are any), or `-`.
fn time_or_dash(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)).unwrap_or_else(|| "-".to_owned())
}

pub async fn list(settings: &Settings, status: Option<&str>, client_args: &ClientArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(server_base(settings, client_args.server.as_deref()))?;
    let query: Vec<(&str, &str)> = status.map(|s| vec![("status", s)]).unwrap_or_default();
    let list: ListView = client.get("/api/workspaces", &query).await?;
    if client_args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!("{:<24} {:<10} {:<26} URL", "STUDENT", "STATUS", "LAST ACTIVITY");
    for w in &list.workspaces {
        println!(
            "{:<24} {:<10} {:<26} {}",
            w.student_id.as_str(),
            w.status.as_str(),
            time_or_dash(w.last_activity),
            w.url.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// What the server says about a workspace, for export and import.
pub enum Running {
    Yes(Status),
    No,
    /// Nothing answered: no server runs, so no workspace can be running through it.
    Unreachable(String),
    /// The server answered something unexpected.
    Unclear(String),
}

pub async fn workspace_running(settings: &Settings, server: Option<&str>, student: &StudentId) -> Running {
    let client = match ApiClient::with_timeout(server_base(settings, server), std::time::Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => return Running::Unclear(e.to_string()),
    };
    let path = format!("/api/workspaces/{student}");
    let url = client.url(&path);
    match client.get::<WorkspaceView>(&path, &[]).await {
        Ok(view) => match view.status {
            s @ (Status::Running | Status::Starting | Status::Stopping) => Running::Yes(s),
            _ => Running::No,
        },
        Err(ClientError::Unreachable { base, .. }) => Running::Unreachable(base),
        Err(ClientError::Api { status: StatusCode::NOT_FOUND, .. }) => Running::No,
        Err(ClientError::Api { status: s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN), .. }) => {
            Running::Unclear(format!("{url} answered {s}: set {API_KEY_ENV} to an lms or admin key"))
        }
        Err(ClientError::Api { status, .. }) => Running::Unclear(format!("{url} answered {status}")),
        Err(e @ (ClientError::Unexpected { .. } | ClientError::Build(_))) => {
            Running::Unclear(format!("{:#}", anyhow::Error::new(e)))
        }
    }
}
