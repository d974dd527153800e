//! `workspaced migrate --from-volumes`: the seeds' system keeps each student's files in a Docker named volume
//! (`ws-<student>-data`); this copies each volume into `<base>/<student>`, verified, and never deletes a volume.
//!
//! Per volume: map it to a student (`mapping`), skip it while a running container mounts it or the student's
//! workspace runs, read it through the engine with a helper container (`runtime::docker::volumes`), extract the
//! stream through the import's checks into a temp folder beside the target (`ops::import`, owner uid:gid), read the
//! volume a second time and compare every entry with the extracted tree (`verify`), then rename the tree into place
//! only if the student still has no folder (`RENAME_NOREPLACE`: a start that created the folder meanwhile is never
//! swapped away), or merge it into a non-empty folder on request (`merge`). A done marker
//! (`<base>/.workspaced-migrate/<student>.volume`) keeps the volume's name and digest: a later run reads the
//! volume again and reports it as already migrated when nothing changed, and changes nothing.

pub mod mapping;
pub mod merge;
pub mod verify;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::domain::StudentId;
use crate::ops::import::{prepare_import_tar, ImportError, ImportOptions, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};
use crate::ops::migrate::{RunMode, MARKER_DIR};
use crate::runtime::docker::volumes::{VolumeReader, VolumeUser};
use crate::runtime::docker::DockerRuntime;
use crate::runtime::RuntimeError;
use mapping::{Mapped, Source};
use verify::{Scan, Tree, VerifyError};

/// What happened to one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeOutcome {
    /// Copied into a new folder and verified now.
    Migrated,
    /// Merged into a folder that had files (`--merge`) and verified now.
    Merged,
    /// A previous run migrated it, and the volume has not changed since.
    AlreadyMigrated,
    /// `--dry-run`: would be copied.
    WouldMigrate,
    /// A running container mounts the volume (the old system still uses it).
    SkippedInUse,
    /// The student's workspace runs in workspaced (or its state cannot be read).
    SkippedRunning,
    /// The volume could belong to more than one student.
    Ambiguous,
    /// The name does not give a valid student id.
    InvalidStudentId,
    /// Another volume maps to the same student.
    SameStudent,
    /// The map names a volume the engine does not have.
    VolumeMissing,
    /// The student's folder has files (pass `--merge`), or was migrated from another volume.
    TargetNotEmpty,
    /// Migrated before, but the volume has changed since.
    ChangedSinceMigration,
    /// The import refused an entry (absolute or escaping symlink, device, ...); nothing was copied.
    Refused,
    /// An error; nothing was put in place.
    Failed,
}

impl VolumeOutcome {
    /// Finished: the student's files are in their folder.
    pub fn is_done(self) -> bool {
        matches!(self, Self::Migrated | Self::Merged | Self::AlreadyMigrated)
    }
}

/// One volume's result.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VolumeReport {
    pub volume: String,
    pub student_id: Option<String>,
    pub outcome: VolumeOutcome,
    pub files: u64,
    pub bytes: u64,
    pub verified_files: u64,
    /// Why, for anything but a plain success.
    pub detail: Option<String>,
}

impl VolumeReport {
    fn new(volume: &str, student: Option<&StudentId>, outcome: VolumeOutcome, detail: Option<String>) -> Self {
        Self {
            volume: volume.to_owned(),
            student_id: student.map(ToString::to_string),
            outcome,
            files: 0,
            bytes: 0,
            verified_files: 0,
            detail,
        }
    }

    fn with_scan(mut self, scan: &Scan) -> Self {
        self.files = scan.files;
        self.bytes = scan.bytes;
        self.verified_files = scan.verified_files;
        self
    }
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VolumesSummary {
    pub volumes: Vec<VolumeReport>,
    pub dry_run: bool,
    /// Volumes whose files are in place: the operator removes them once checked (we never do).
    pub remove_command: Option<String>,
}

impl VolumesSummary {
    /// Every volume mapped and done (or, in a dry run, nothing in the way).
    pub fn all_done(&self) -> bool {
        self.volumes.iter().all(|v| v.outcome.is_done() || (self.dry_run && v.outcome == VolumeOutcome::WouldMigrate))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VolumesError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("helper image {0} is not on the engine; pass --image with an image that is (it is never pulled)")]
    ImageMissing(String),
    #[error("base path: {0}")]
    Base(String),
}

impl VolumesError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            VolumesError::Runtime(RuntimeError::Unavailable(_)) => "runtime_unavailable",
            VolumesError::Runtime(_) => "runtime_error",
            VolumesError::ImageMissing(_) => "image_missing",
            VolumesError::Base(_) => "storage_unavailable",
        }
    }
}

/// Asks whether a student's workspace is active in workspaced (the CLI asks the running server). `Some(why)`:
/// leave the student alone this time.
#[async_trait::async_trait]
pub trait WorkspaceGuard: Send + Sync {
    async fn busy(&self, student: &StudentId) -> Option<String>;
}

/// Everything a run needs.
pub struct VolumeMigration<'a> {
    pub runtime: &'a DockerRuntime,
    pub base: PathBuf,
    pub uid: u32,
    pub gid: u32,
    /// Image of the helper container (created, never started).
    pub image: String,
    pub source: Source,
    pub mode: RunMode,
    pub merge: bool,
    pub guard: &'a dyn WorkspaceGuard,
}

/// Kept in `<base>/.workspaced-migrate/<student>.volume`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Marker {
    volume: String,
    digest: String,
    files: u64,
    bytes: u64,
}

fn marker_path(base: &Path, student: &StudentId) -> PathBuf {
    base.join(MARKER_DIR).join(format!("{student}.volume"))
}

fn read_marker(base: &Path, student: &StudentId) -> Result<Option<Marker>, String> {
    let path = marker_path(base, student);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_marker(base: &Path, student: &StudentId, marker: &Marker) -> io::Result<()> {
    let path = marker_path(base, student);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut part = path.clone().into_os_string();
    part.push(".part");
    fs::write(&part, serde_json::to_vec(marker).map_err(io::Error::other)?)?;
    fs::rename(&part, &path)
}

/// The student's folder as the migration sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Absent,
    Empty,
    HasFiles,
}

fn target_state(dir: &Path) -> io::Result<Target> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target::Absent),
        Err(e) => Err(e),
        Ok(m) if !m.is_dir() => Err(io::Error::other("exists and is not a folder")),
        Ok(_) => Ok(if fs::read_dir(dir)?.next().is_none() { Target::Empty } else { Target::HasFiles }),
    }
}

/// Runs the migration of every mapped volume, one at a time. An error that concerns one volume is reported in
/// its row and the run goes on; only a failure to list the volumes, a missing helper image or an unusable base
/// path end the run (nothing changed then).
pub async fn migrate_volumes(m: &VolumeMigration<'_>) -> Result<VolumesSummary, VolumesError> {
    let (base, uid, gid) = (m.base.clone(), m.uid, m.gid);
    tokio::task::spawn_blocking(move || crate::storage::Storage::new(&base, uid, gid).check_base())
        .await
        .map_err(|e| VolumesError::Base(e.to_string()))?
        .map_err(|e| VolumesError::Base(e.to_string()))?;
    if m.mode == RunMode::Copy && !m.runtime.image_present(&m.image).await? {
        return Err(VolumesError::ImageMissing(m.image.clone()));
    }
    let names = m.runtime.volume_names().await?;
    let mut reports = Vec::new();
    for (volume, mapped) in mapping::plan(&names, &m.source) {
        let report = match mapped {
            Mapped::Student(student) => one_volume(m, &volume, &student).await,
            Mapped::Ambiguous(readings) => VolumeReport::new(
                &volume,
                None,
                VolumeOutcome::Ambiguous,
                Some(format!("could belong to {}; map it with --map", readings.join(" or "))),
            ),
            Mapped::InvalidId { raw, why } => VolumeReport::new(
                &volume,
                None,
                VolumeOutcome::InvalidStudentId,
                Some(format!("{raw:?} is not a valid student id: {why}")),
            ),
            Mapped::SameStudent { student, others } => VolumeReport::new(
                &volume,
                Some(&student),
                VolumeOutcome::SameStudent,
                Some(format!("also mapped to this student: {}; map one with --map", others.join(", "))),
            ),
            Mapped::Missing => {
                VolumeReport::new(&volume, None, VolumeOutcome::VolumeMissing, Some("not on the engine".to_owned()))
            }
        };
        tracing::info!(volume = ?report.volume, student = ?report.student_id, outcome = ?report.outcome,
                       files = report.files, bytes = report.bytes, "volume");
        reports.push(report);
    }
    let done: Vec<&str> = reports.iter().filter(|r| r.outcome.is_done()).map(|r| r.volume.as_str()).collect();
    let remove_command =
        (!done.is_empty() && m.mode == RunMode::Copy).then(|| format!("docker volume rm {}", done.join(" ")));
    Ok(VolumesSummary { volumes: reports, dry_run: m.mode == RunMode::DryRun, remove_command })
}

async fn one_volume(m: &VolumeMigration<'_>, volume: &str, student: &StudentId) -> VolumeReport {
    let row = |outcome, detail: Option<String>| VolumeReport::new(volume, Some(student), outcome, detail);
    let users = match m.runtime.volume_users(volume).await {
        Ok(u) => u,
        Err(e) => return row(VolumeOutcome::Failed, Some(e.to_string())),
    };
    let running: Vec<&VolumeUser> = users.iter().filter(|u| u.running).collect();
    if !running.is_empty() {
        let names: Vec<&str> = running.iter().map(|u| u.name.as_str()).collect();
        return row(VolumeOutcome::SkippedInUse, Some(format!("mounted by running container(s) {}", names.join(", "))));
    }
    let marker = match read_marker(&m.base, student) {
        Ok(marker) => marker,
        Err(e) => return row(VolumeOutcome::Failed, Some(e)),
    };
    if let Some(marker) = marker {
        if marker.volume != volume {
            return row(
                VolumeOutcome::TargetNotEmpty,
                Some(format!("the folder was migrated from volume {:?} before", marker.volume)),
            );
        }
        if m.mode == RunMode::DryRun {
            let mut r = row(VolumeOutcome::AlreadyMigrated, Some("marker found (not re-read in a dry run)".to_owned()));
            (r.files, r.bytes) = (marker.files, marker.bytes);
            return r;
        }
        return match read_and(m, volume, |tar| verify::scan(tar, None).map_err(|e| e.to_string())).await {
            Ok(scan) if scan.digest == marker.digest => row(VolumeOutcome::AlreadyMigrated, None).with_scan(&scan),
            Ok(scan) => row(
                VolumeOutcome::ChangedSinceMigration,
                Some("the volume changed since it was migrated; its folder was left as it is".to_owned()),
            )
            .with_scan(&scan),
            Err(e) => row(VolumeOutcome::Failed, Some(e)),
        };
    }
    if let Some(why) = m.guard.busy(student).await {
        return row(VolumeOutcome::SkippedRunning, Some(why));
    }
    let dir = m.base.join(student.as_str());
    let target = match target_state(&dir) {
        Ok(t) => t,
        Err(e) => return row(VolumeOutcome::Failed, Some(format!("{}: {e}", dir.display()))),
    };
    if target == Target::HasFiles && !m.merge {
        return row(
            VolumeOutcome::TargetNotEmpty,
            Some(format!("{} has files; pass --merge to add the volume's", dir.display())),
        );
    }
    if m.mode == RunMode::DryRun {
        return row(VolumeOutcome::WouldMigrate, None);
    }
    match copy_volume(m, volume, student, target).await {
        Ok(r) => r,
        Err(r) => r,
    }
}

/// Extract, verify by a second read, check the workspace again, put in place, write the marker.
async fn copy_volume(
    m: &VolumeMigration<'_>,
    volume: &str,
    student: &StudentId,
    target: Target,
) -> Result<VolumeReport, VolumeReport> {
    let row = |outcome, detail: Option<String>| VolumeReport::new(volume, Some(student), outcome, detail);
    let options = ImportOptions {
        uid: m.uid,
        gid: m.gid,
        max_bytes: DEFAULT_MAX_BYTES,
        max_entries: DEFAULT_MAX_ENTRIES,
        keep_previous: false,
    };
    let (base, s) = (m.base.clone(), student.clone());
    let prepared = read_and(m, volume, move |tar| {
        prepare_import_tar(&base, &s, tar, &options).map_err(|e| match e {
            ImportError::Refused { .. } | ImportError::TooLarge { .. } | ImportError::TooManyEntries { .. } => {
                Failure { outcome: VolumeOutcome::Refused, detail: e.to_string() }
            }
            e => Failure::from(e.to_string()),
        })
    })
    .await
    .map_err(|f| row(f.outcome, Some(f.detail)))?;
    let temp = prepared.path().to_path_buf();
    let (uid, gid) = (m.uid, m.gid);
    let scan = read_and(m, volume, move |tar| {
        verify::scan(tar, Some(Tree { root: &temp, owner: Some((uid, gid)) })).map_err(|e| match e {
            VerifyError::Differs { .. } => format!("verification failed: {e}"),
            e => e.to_string(),
        })
    })
    .await;
    let scan = match scan {
        Ok(scan) => scan,
        Err(e) => {
            drop_blocking(prepared).await;
            return Err(row(VolumeOutcome::Failed, Some(e)));
        }
    };
    // A start may have come in while we read.
    if let Some(why) = m.guard.busy(student).await {
        drop_blocking(prepared).await;
        return Err(row(VolumeOutcome::SkippedRunning, Some(why)));
    }
    let (base, s, volume_name) = (m.base.clone(), student.clone(), volume.to_owned());
    let marker = Marker { volume: volume_name, digest: scan.digest.clone(), files: scan.files, bytes: scan.bytes };
    let placed = tokio::task::spawn_blocking(move || -> Result<VolumeOutcome, String> {
        let outcome = match target {
            Target::Absent => {
                prepared.commit_new().map_err(|e| format!("{e} (the folder appeared meanwhile? run again)"))?;
                VolumeOutcome::Migrated
            }
            Target::Empty | Target::HasFiles => {
                let dir = base.join(s.as_str());
                merge::merge_into(prepared.path(), &dir).map_err(|e| e.to_string())?;
                // The folder's own owner and mode, as a start would set them.
                crate::storage::Storage::new(&base, uid, gid).ensure_student_dir(&s).map_err(|e| e.to_string())?;
                drop(prepared);
                if target == Target::Empty {
                    VolumeOutcome::Migrated
                } else {
                    VolumeOutcome::Merged
                }
            }
        };
        write_marker(&base, &s, &marker).map_err(|e| format!("the files are in place, but the marker: {e}"))?;
        Ok(outcome)
    })
    .await
    .map_err(|e| row(VolumeOutcome::Failed, Some(e.to_string())))?
    .map_err(|e| row(VolumeOutcome::Failed, Some(e)))?;
    Ok(row(placed, None).with_scan(&scan))
}

/// Why a volume was not copied, from inside a blocking step.
struct Failure {
    outcome: VolumeOutcome,
    detail: String,
}

impl From<String> for Failure {
    fn from(detail: String) -> Self {
        Failure { outcome: VolumeOutcome::Failed, detail }
    }
}

async fn drop_blocking<T: Send + 'static>(value: T) {
    let _ = tokio::task::spawn_blocking(move || drop(value)).await;
}

/// Opens a helper container for `volume`, feeds its tar stream to `f` on a blocking thread, and removes the
/// helper again whatever happened.
async fn read_and<T, E>(
    m: &VolumeMigration<'_>,
    volume: &str,
    f: impl FnOnce(ChannelReader) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<String> + Send + 'static,
{
    let reader = m.runtime.open_volume(volume, &m.image).await.map_err(|e| E::from(e.to_string()))?;
    let result = pump(m.runtime, &reader, f).await;
    if let Err(e) = m.runtime.close_volume(reader).await {
        tracing::warn!(volume = ?volume, error = %e, "could not remove the helper container");
    }
    result
}

async fn pump<T, E>(
    runtime: &DockerRuntime,
    reader: &VolumeReader,
    f: impl FnOnce(ChannelReader) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    T: Send + 'static,
    E: From<String> + Send + 'static,
{
    let mut stream = runtime.read_volume(reader).await.map_err(|e| E::from(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Bytes, String>>(16);
    let consumer = tokio::task::spawn_blocking(move || f(ChannelReader { rx, current: hyper::body::Bytes::new() }));
    let feed = async move {
        while let Some(chunk) = stream.next_chunk().await {
            let failed = chunk.is_err();
            if tx.send(chunk.map_err(|e| e.to_string())).await.is_err() || failed {
                break;
            }
        }
    };
    let ((), joined) = tokio::join!(feed, consumer);
    joined.map_err(|e| E::from(e.to_string()))?
}

/// The engine's tar stream as a blocking `Read`; an engine error becomes an IO error of the reader.
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Result<hyper::body::Bytes, String>>,
    current: hyper::body::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// For doctor: the old system's volumes (by `pattern`) and the containers that mount them without our label.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OldVolume {
    pub volume: String,
    pub student_id: Option<String>,
    /// Containers mounting it that workspaced did not create (the old system's).
    pub foreign_users: Vec<VolumeUser>,
    pub migrated: bool,
}

/// Lists the volumes `pattern` matches, who mounts them, and whether a migration marker names them. For a doctor
/// check ("the old system is still here"): WARN when any is unmigrated or still mounted by a foreign container.
pub async fn find_old_system(
    runtime: &DockerRuntime,
    base: &Path,
    pattern: &mapping::VolumePattern,
) -> Result<Vec<OldVolume>, RuntimeError> {
    let names = runtime.volume_names().await?;
    let mut out = Vec::new();
    for (volume, mapped) in mapping::plan(&names, &Source::Pattern(pattern.clone())) {
        let student = match &mapped {
            Mapped::Student(s) => Some(s.clone()),
            _ => None,
        };
        let foreign_users = runtime.volume_users(&volume).await?.into_iter().filter(|u| !u.workspaced).collect();
        let migrated =
            student.as_ref().is_some_and(|s| read_marker(base, s).ok().flatten().is_some_and(|mk| mk.volume == volume));
        out.push(OldVolume { volume, student_id: student.map(|s| s.to_string()), foreign_users, migrated });
    }
    Ok(out)
}

/// The doctor's `old_volumes` check: the seeds' system's volumes (default pattern) that are not migrated yet, and
/// containers workspaced did not create that still mount one. PASS when there are none; WARN otherwise, naming them.
pub async fn old_system_check(runtime: &DockerRuntime, base: &Path) -> crate::ops::check::Check {
    use crate::ops::check::Check;
    const NAME: &str = "old_volumes";
    let pattern = match mapping::VolumePattern::parse(mapping::DEFAULT_PATTERN) {
        Ok(p) => p,
        Err(e) => return Check::warn(NAME, e.to_string(), ""),
    };
    let found = match find_old_system(runtime, base, &pattern).await {
        Ok(f) => f,
        Err(e) => return Check::warn(NAME, format!("cannot list the engine's volumes: {e}"), ""),
    };
    let details = serde_json::to_value(&found).unwrap_or_default();
    let pending: Vec<&str> = found.iter().filter(|v| !v.migrated).map(|v| v.volume.as_str()).collect();
    let mounted: Vec<String> =
        found.iter().flat_map(|v| v.foreign_users.iter().map(move |u| format!("{} ({})", u.name, v.volume))).collect();
    if pending.is_empty() && mounted.is_empty() {
        let reason = if found.is_empty() {
            format!("no volume named like {}", mapping::DEFAULT_PATTERN)
        } else {
            format!("{} old volume(s), all migrated; remove them once checked (docker volume rm)", found.len())
        };
        return Check::pass(NAME, reason).with_details(details);
    }
    let mut reason = Vec::new();
    if !pending.is_empty() {
        reason.push(format!("{} volume(s) not migrated: {}", pending.len(), pending.join(", ")));
    }
    if !mounted.is_empty() {
        reason.push(format!("old system's containers still mount them: {}", mounted.join(", ")));
    }
    Check::warn(
        NAME,
        reason.join("; "),
        "stop the old system's containers, then `workspaced migrate --from-volumes` (see docs/operations.md)",
    )
    .with_details(details)
}
