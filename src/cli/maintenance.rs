//! `repair` (ownership inside student folders) and `backup` (database and signing key): host maintenance that
//! works on the files directly, no server needed.

use anyhow::Context;

use std::path::PathBuf;

use super::parse_student;
use crate::config::Settings;
use crate::ops::repair::{repair_student, RepairReport};
use crate::storage::Storage;

#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// Only this student (default: every student folder).
    pub student_id: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// Where to write: `NAME.tar.gz` or `NAME.tgz` for an archive, anything else for a new folder. Never overwritten.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn repair(settings: &Settings, a: RepairArgs) -> anyhow::Result<()> {
    let base = settings.base_path.clone();
    let (uid, gid) = (settings.workspace.uid, settings.workspace.gid);
    let students = match &a.student_id {
        Some(raw) => vec![parse_student(raw)?],
        None => Storage::new(&base, uid, gid)
            .student_folders()
            .with_context(|| format!("cannot list {}", base.display()))?,
    };
    let results = tokio::task::spawn_blocking(move || {
        students.into_iter().map(|s| (s.to_string(), repair_student(&base, &s, uid, gid))).collect::<Vec<_>>()
    })
    .await?;
    let mut failed = 0;
    let mut rows = Vec::new();
    for (student, result) in results {
        match result {
            Ok(r) => {
                failed += usize::from(!r.errors.is_empty());
                rows.push(serde_json::to_value(&r)?);
                if !a.json {
                    print_row(&r);
                }
            }
            Err(e) => {
                failed += 1;
                rows.push(serde_json::json!({ "student_id": student, "error": { "code": e.code(), "message": e.to_string() } }));
                if !a.json {
                    println!("{student:<24} error: {e} ({})", e.code());
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "students": rows, "uid": uid, "gid": gid }))?);
    }
    if failed > 0 {
        anyhow::bail!("{failed} folder(s) not fully repaired");
    }
    Ok(())
}

fn print_row(r: &RepairReport) {
    println!(
        "{:<24} entries {:>8}  changed {:>8}  skipped {:>4}  errors {:>4}",
        r.student_id,
        r.entries,
        r.changed,
        r.skipped.len(),
        r.errors.len()
    );
    for line in r.skipped.iter().chain(&r.errors).take(10) {
        println!("    {line}");
    }
}

pub async fn backup(settings: &Settings, a: BackupArgs) -> anyhow::Result<()> {
    use crate::ops::backup::{backup, BackupError};
    match backup(settings, &a.output).await {
        Ok(m) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else {
                println!(
                    "backed up {} workspaces, {} API keys, {} events{} to {}",
                    m.workspaces,
                    m.api_keys,
                    m.events,
                    if m.key_included { " and the signing key" } else { "" },
                    a.output.display()
                );
                if !m.key_included {
                    println!("note: the signing key is not in the backup (WORKSPACED_SECRET_KEY, or no key file yet); keep it where you keep that secret");
                }
            }
            Ok(())
        }
        Err(e @ BackupError::Postgres(_)) => {
            if let BackupError::Postgres(cmd) = &e {
                println!("{cmd}");
            }
            Err(anyhow::anyhow!("{e} ({})", e.code()))
        }
        Err(e) => Err(anyhow::anyhow!("{e} ({})", e.code())),
    }
}
