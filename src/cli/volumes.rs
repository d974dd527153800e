//! `migrate --from-volumes`: copies the old system's named volumes into student folders (see `ops::volumes`). Runs
//! in this process (the engine does the reading); a running server is asked, before each copy and again before the
//! folder is put in place, whether the student's workspace runs, and the folder only ever appears by a rename that
//! replaces nothing, so a start meanwhile never sees half a copy.

use anyhow::Context;

use super::workspaces::{workspace_running, Running};
use super::MigrateArgs;
use crate::config::Settings;
use crate::domain::StudentId;
use crate::ops::migrate::RunMode;
use crate::ops::volumes::mapping::{parse_map, Source, VolumePattern};
use crate::ops::volumes::{migrate_volumes, VolumeMigration, WorkspaceGuard};
use crate::runtime::docker::DockerRuntime;

/// The running server's view of each student; no server means no start can happen.
struct ServerGuard<'a> {
    settings: &'a Settings,
    server: Option<String>,
    noted: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl WorkspaceGuard for ServerGuard<'_> {
    async fn busy(&self, student: &StudentId) -> Option<String> {
        match workspace_running(self.settings, self.server.as_deref(), student).await {
            Running::Yes(s) => Some(format!("the workspace is {s}; stop it and run again")),
            Running::Unclear(why) => Some(format!("cannot tell whether the workspace runs: {why}")),
            Running::Unreachable(base) => {
                if !self.noted.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    eprintln!("note: no server answers at {base}; start no workspace while this runs");
                }
                None
            }
            Running::No => None,
        }
    }
}

pub async fn migrate_from_volumes(settings: &Settings, a: MigrateArgs) -> anyhow::Result<()> {
    let source = match &a.map {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            Source::Map(parse_map(&text).map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?)
        }
        None => Source::Pattern(VolumePattern::parse(&a.pattern).map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?),
    };
    let runtime = DockerRuntime::connect_lazy(settings.instance.clone(), crate::app::ENGINE_CALL_TIMEOUT)
        .context("cannot set up the Docker client")?;
    let guard = ServerGuard { settings, server: a.server.clone(), noted: Default::default() };
    let run = VolumeMigration {
        runtime: &runtime,
        base: settings.base_path.clone(),
        uid: settings.workspace.uid,
        gid: settings.workspace.gid,
        image: a.image.clone().unwrap_or_else(|| settings.workspace.image.clone()),
        source,
        mode: RunMode::from(a.dry_run),
        merge: a.merge,
        guard: &guard,
    };
    let summary = migrate_volumes(&run).await.map_err(|e| anyhow::anyhow!("{e} ({})", e.code()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{:<32} {:<24} {:<24} {:>8} {:>12}", "VOLUME", "STUDENT", "OUTCOME", "FILES", "BYTES");
        for v in &summary.volumes {
            let outcome = serde_json::to_value(v.outcome)?.as_str().unwrap_or_default().to_owned();
            println!(
                "{:<32} {:<24} {:<24} {:>8} {:>12}",
                v.volume,
                v.student_id.as_deref().unwrap_or("-"),
                outcome,
                v.files,
                v.bytes
            );
            if let Some(d) = &v.detail {
                println!("    {d}");
            }
        }
        if summary.volumes.is_empty() {
            println!("no volume matches");
        }
        if let Some(cmd) = &summary.remove_command {
            println!("the volumes above are copied and verified; once you have checked the folders, remove them with:");
            println!("  {cmd}");
        }
    }
    if !summary.all_done() {
        anyhow::bail!("some volumes were not migrated (see above); run again once they are dealt with");
    }
    Ok(())
}
