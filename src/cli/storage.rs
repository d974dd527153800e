//! `doctor`, `export`, `import` and `usage`: operator commands that work on the base path directly (export and import
//! ask the server whether the workspace runs).

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::workspaces::{workspace_running, Running};
use super::{parse_student, DoctorArgs, ExportArgs, ImportArgs, UsageArgs};
use crate::config::Settings;
use crate::domain::StudentId;

pub async fn doctor(settings: &Settings, a: DoctorArgs) -> anyhow::Result<()> {
    use crate::ops::doctor::{run_doctor, DoctorOptions};
    let options = DoctorOptions {
        mounts: a.mounts,
        files: a.files,
        git_files: a.git_files,
        nodes: a.nodes,
        ..Default::default()
    };
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

pub fn progress_bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let template = format!("{what} {{bar:40}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

pub async fn export(settings: &Settings, a: ExportArgs) -> anyhow::Result<()> {
    use crate::ops::archive::content_size;

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
    let output = export_target(a.output, &student)?;
    let total = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || content_size(&dir).unwrap_or(0)).await?
    };
    let bar = progress_bar(total, "export");
    let (bar2, output2) = (bar.clone(), output.clone());
    let state = storage.ide_state_dir(&student);
    let stats = tokio::task::spawn_blocking(move || write_archive(&dir, &state, output2, &bar2)).await??;
    bar.finish_and_clear();
    let target = output.map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".to_owned());
    report_export(&student, &stats, &target);
    Ok(())
}

/// Where the archive goes: a file, or `None` for stdout (never a terminal).
fn export_target(output: Option<PathBuf>, student: &StudentId) -> anyhow::Result<Option<PathBuf>> {
    use std::io::IsTerminal;

    let to_terminal = std::io::stdout().is_terminal();
    Ok(match output {
        Some(p) if p.as_os_str() == "-" => {
            if to_terminal {
                bail!("refusing to write an archive to a terminal; redirect stdout or use -o FILE");
            }
            None
        }
        Some(p) => Some(p),
        None if to_terminal => {
            Some(PathBuf::from(crate::ops::archive::default_archive_name(student, chrono::Utc::now())))
        }
        None => None,
    })
}

fn write_archive(
    dir: &std::path::Path,
    state: &std::path::Path,
    output: Option<PathBuf>,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<crate::ops::archive::ExportStats> {
    use crate::ops::archive::export_student;

    let tick = |p: &crate::ops::archive::Progress| bar.set_position(p.bytes);
    let Some(path) = output else {
        return Ok(export_student(dir, Some(state), std::io::BufWriter::new(std::io::stdout().lock()), tick)?);
    };
    // Written under a temporary name, so a half-written archive never carries the final one.
    let mut part = path.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let file = std::fs::File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let result = (|| -> anyhow::Result<_> {
        let stats = export_student(dir, Some(state), std::io::BufWriter::with_capacity(256 * 1024, &file), tick)?;
        file.sync_all()?;
        std::fs::rename(&part, &path)?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

fn report_export(student: &StudentId, stats: &crate::ops::archive::ExportStats, target: &str) {
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

/// When import asks whether the workspace runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    BeforeExtracting,
    /// A start may have happened while the archive was extracted.
    BeforeSwapping,
}

/// Refuses an import into a running workspace unless `--force-running`.
async fn check_running(settings: &Settings, a: &ImportArgs, student: &StudentId, check: Check) -> anyhow::Result<()> {
    let when = match check {
        Check::BeforeExtracting => "",
        Check::BeforeSwapping => " (it started during the import)",
    };
    match workspace_running(settings, a.server.as_deref(), student).await {
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
        Running::Unreachable(server) if check == Check::BeforeExtracting => {
            eprintln!("note: no server answers at {server}; assuming the workspace is not running");
            Ok(())
        }
        _ => Ok(()),
    }
}

pub async fn import(settings: &Settings, a: ImportArgs) -> anyhow::Result<()> {
    use crate::ops::import::{open_archive, prepare_import, ImportOptions};

    let student = parse_student(&a.student_id)?;
    check_running(settings, &a, &student, Check::BeforeExtracting).await?;

    let reader = open_archive(&a.file).with_context(|| format!("cannot open {}", a.file.display()))?;
    let length = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(length, "import");
    let reader = ProgressReader { inner: reader, bar: bar.clone() };
    let options = ImportOptions {
        uid: settings.workspace.uid,
        gid: settings.workspace.gid,
        max_bytes: a.max_bytes,
        max_entries: a.max_entries,
        keep_previous: a.keep_previous,
    };
    let (base, student2) = (settings.base_path.clone(), student.clone());
    let prepared = tokio::task::spawn_blocking(move || prepare_import(&base, &student2, reader, &options)).await?;
    bar.finish_and_clear();
    let prepared = prepared?;

    // A workspace that started since keeps the old folder open, and what it writes would be lost with it.
    if let Err(e) = check_running(settings, &a, &student, Check::BeforeSwapping).await {
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

pub async fn usage(settings: &Settings, a: UsageArgs) -> anyhow::Result<()> {
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
        let list: Vec<serde_json::Value> = rows
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

#[derive(Debug, clap::Args)]
pub struct ArchiveArgs {
    /// Students to archive (or --all).
    pub students: Vec<String>,
    /// Every student folder below the base path.
    #[arg(long, conflicts_with_all = ["students", "course"])]
    pub all: bool,
    /// Every workspace of this course (asked of the running server).
    #[arg(long, conflicts_with = "students")]
    pub course: Option<crate::domain::CourseId>,
    /// Folder for the archives (created owner-only if missing); existing archives are never overwritten.
    #[arg(short = 'o', long)]
    pub output: PathBuf,
    /// Base URL of the running server, asked whether each workspace runs (default: http://<WORKSPACED_LISTEN>).
    #[arg(long, env = "WORKSPACED_URL")]
    pub server: Option<String>,
}

/// `archive`: one verified archive per student; a running workspace is skipped (its files may be mid-write). Exits
/// non-zero when any student could not be archived.
pub async fn archive(settings: &Settings, a: ArchiveArgs) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let storage = crate::storage::Storage::new(&settings.base_path, settings.workspace.uid, settings.workspace.gid);
    let students: Vec<StudentId> = if a.all {
        storage.student_folders().with_context(|| format!("cannot list {}", settings.base_path.display()))?
    } else if let Some(course) = &a.course {
        let client = super::client::ApiClient::new(super::client::server_base(settings, a.server.as_deref()))?;
        let list: crate::api::ListView = client.get("/api/workspaces", &[("course", course.as_str())]).await?;
        list.workspaces.into_iter().map(|w| w.student_id).collect()
    } else if a.students.is_empty() {
        bail!("name the students to archive, or --all, or --course <course>");
    } else {
        a.students.iter().map(|s| parse_student(s)).collect::<Result<_, _>>()?
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    let mut failed = 0;
    for student in &students {
        match workspace_running(settings, a.server.as_deref(), student).await {
            Running::Yes(s) => {
                println!("{student}: skipped: the workspace is {s}; stop it for a consistent archive");
                failed += 1;
                continue;
            }
            Running::Unclear(why) => eprintln!("warning: cannot tell whether {student}'s workspace runs: {why}"),
            Running::No | Running::Unreachable(_) => {}
        }
        let (base, out, s) = (settings.base_path.clone(), a.output.clone(), student.clone());
        let done = tokio::task::spawn_blocking(move || {
            let archived = crate::ops::term::archive_student(&base, &s, &out)?;
            crate::ops::term::record_sum(&out, &archived)?;
            Ok::<_, crate::ops::term::TermError>(archived)
        })
        .await?;
        match done {
            Ok(x) => {
                let skipped =
                    if x.skipped.is_empty() { String::new() } else { format!(", left out: {}", x.skipped.join(", ")) };
                println!("{student}: {} ({} files, {} bytes, verified{skipped})", x.file.display(), x.files, x.bytes);
            }
            Err(e) => {
                println!("{student}: failed: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} students not archived", students.len());
    }
    Ok(())
}
