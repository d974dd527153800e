//! `migrate`: asks the server to copy every student folder to a new base path (under each student's lock) and shows
//! its NDJSON progress; migrates in this process when no server answers.

use anyhow::Context;

use super::client::{server_base, ApiClient, ClientError};
use super::MigrateArgs;
use crate::api::{MigrateEvent, MigratedStudent};
use crate::config::Settings;

pub async fn migrate(settings: &Settings, a: MigrateArgs) -> anyhow::Result<()> {
    if a.from_volumes {
        return super::volumes::migrate_from_volumes(settings, a).await;
    }
    let Some(to) = a.to.as_ref() else { anyhow::bail!("--to PATH or --from-volumes is required") };
    let to = std::path::absolute(to).with_context(|| format!("bad path {}", to.display()))?;
    let client = ApiClient::new(server_base(settings, a.server.as_deref()))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<MigrateEvent>();
    let body = serde_json::json!({ "to": to, "dry_run": a.dry_run });
    match client.post_json("/api/admin/migrate", &body).await {
        Ok(resp) => {
            tokio::spawn(read_events(resp, tx));
        }
        Err(ClientError::Unreachable { base, source }) if source.is_connect() => {
            eprintln!("note: no server answers at {base}; migrating in this process (start no workspace meanwhile)");
            let (from, dry) = (settings.base_path.clone(), a.dry_run);
            let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            tokio::spawn(async move {
                crate::ops::migrate::migrate_reporting(None, &from, &to, dry, cancel, tx).await;
            });
        }
        Err(ClientError::Unreachable { base, source }) => {
            return Err(anyhow::Error::new(source).context(format!("cannot reach workspaced at {base}")))
        }
        Err(e) => return Err(e.into()),
    };
    show_events(rx, a.json).await
}

/// Forwards the server's NDJSON lines as events until it closes the stream.
async fn read_events(mut resp: reqwest::Response, tx: tokio::sync::mpsc::UnboundedSender<MigrateEvent>) {
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
}

/// Whether the events are printed as JSON lines or as a summary with a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Text,
}

/// Shows the events until the run ends (the server closes the stream; the local task drops its sender), and
/// turns the last one into the command's outcome.
async fn show_events(mut rx: tokio::sync::mpsc::UnboundedReceiver<MigrateEvent>, json: bool) -> anyhow::Result<()> {
    let output = if json { Output::Json } else { Output::Text };
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut outcome: Option<anyhow::Result<()>> = None;
    while let Some(event) = rx.recv().await {
        if output == Output::Json {
            println!("{}", serde_json::to_string(&event)?);
        }
        match event {
            MigrateEvent::Plan { students, files, bytes, dry_run } if output == Output::Text => {
                println!(
                    "{students} student folder(s), {files} files, {bytes} bytes{}",
                    if dry_run { " (dry run)" } else { "" }
                );
                if !dry_run {
                    // Every byte is read twice: once to copy, once to verify.
                    bar = Some(super::storage::progress_bar(bytes * 2, "migrate"));
                }
            }
            MigrateEvent::Plan { .. } => {}
            MigrateEvent::Progress { bytes } => {
                if let Some(b) = &bar {
                    b.set_position(bytes);
                }
            }
            MigrateEvent::Student { report } if output == Output::Text => {
                let line = student_line(report);
                match &bar {
                    Some(b) => b.println(line),
                    None => println!("{line}"),
                }
            }
            MigrateEvent::Student { .. } => {}
            MigrateEvent::Done { migrated, already_done, skipped_running, files_verified, next_step } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                if output == Output::Text {
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

/// One student's row; a report this client cannot read (another server version) is shown as it came.
fn student_line(report: serde_json::Value) -> String {
    match serde_json::from_value::<MigratedStudent>(report.clone()) {
        Ok(r) => format!(
            "{:<24} {:<16} files {:>8}  bytes {:>12}  copied {:>8}  verified {:>8}",
            r.student_id, r.outcome, r.files, r.bytes, r.copied_files, r.verified_files
        ),
        Err(_) => report.to_string(),
    }
}
