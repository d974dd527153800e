//! Migration of every student folder to a new base path (local disk to EFS, one EFS to another), verified.
//!
//! For each student, one at a time: copy the tree (files, folders, symlinks as links; owner, mode and mtime kept),
//! then verify it, then write a done marker. A file is copied to `<name>.wsd-partial` and renamed into place only
//! when complete and stamped with the source's mtime, so an interrupted run never leaves a file that looks done.
//! A rerun skips students whose marker matches the source and, for the student that was interrupted, files whose
//! size and mtime already match; verification then reads every file of both trees and compares BLAKE3 hashes, so a
//! skipped file is checked all the same.
//!
//! The caller serializes each student through a [`StudentLocker`] (see `migrate_all`): a start waits until that student's
//! copy is verified. A running workspace is not copied (its IDE writes while we read); it is reported as skipped and
//! the next run picks it up once it is stopped. Nothing is ever deleted from the source.
//!
//! A student's IDE state folder (`<base>/.ide-state/<id>`, when there is one) is copied and verified with the
//! folder, into the same place below the target, and counted in the student's report.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::domain::StudentId;
use crate::fswalk::{Descend, Files, Kind, Node, Stat, Tree, Visit, WalkError};
use crate::storage::{Ownership, Storage};

mod run;
pub use run::{migrate_all, migrate_reporting, MigrateEvent, RunMode, StudentLocker};

/// Folder below the target base holding one done marker per migrated student.
pub const MARKER_DIR: &str = ".workspaced-migrate";
const PARTIAL_SUFFIX: &str = ".wsd-partial";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("verification failed for {student}: {detail}")]
    Verify { student: StudentId, detail: String },
    #[error("the target {0} is the source or inside it")]
    TargetInsideSource(PathBuf),
    #[error("the target {0} does not exist or is not a folder (on EFS: is it mounted?); it is not created")]
    TargetMissing(PathBuf),
    #[error("interrupted")]
    Interrupted,
    #[error("a migration task failed: {0}")]
    Task(String),
}

impl MigrateError {
    fn from_join(e: tokio::task::JoinError) -> Self {
        MigrateError::Task(e.to_string())
    }
}

impl From<WalkError> for MigrateError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { path, source } => MigrateError::Io { path, source },
            WalkError::NotDirectory(path) => {
                MigrateError::Io { path, source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory") }
            }
        }
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MigrateError + '_ {
    move |source| MigrateError::Io { path: path.to_path_buf(), source }
}

/// What happened to one student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Copied (or completed) and verified now.
    Migrated,
    /// A previous run migrated and verified it, and the source has not changed since.
    AlreadyDone,
    /// Running (or about to): not copied this time.
    SkippedRunning,
    /// `--dry-run`: what would be copied.
    WouldMigrate,
}

/// One student's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StudentReport {
    pub student_id: String,
    pub outcome: Outcome,
    /// Regular files in the tree.
    pub files: u64,
    /// Their content, in bytes.
    pub bytes: u64,
    /// Files actually copied now (the rest were already complete from an interrupted run).
    pub copied_files: u64,
    pub copied_bytes: u64,
    /// Files whose content was hashed on both sides.
    pub verified_files: u64,
    /// Entries that cannot be migrated (sockets, devices, fifos), relative paths.
    pub skipped_entries: Vec<String>,
}

impl StudentReport {
    fn new(student: &StudentId, outcome: Outcome) -> Self {
        Self {
            student_id: student.to_string(),
            outcome,
            files: 0,
            bytes: 0,
            copied_files: 0,
            copied_bytes: 0,
            verified_files: 0,
            skipped_entries: Vec::new(),
        }
    }
}

/// Every student folder below `base`, sorted (see [`Storage::student_folders`]).
pub fn student_folders(base: &Path) -> Result<Vec<StudentId>, MigrateError> {
    Storage::with_ownership(base, Ownership::Unchanged).student_folders().map_err(io_at(base))
}

/// Refuses a target that is the source or below it (the copy would copy itself).
pub fn check_paths(from: &Path, to: &Path) -> Result<(), MigrateError> {
    if !to.is_dir() {
        return Err(MigrateError::TargetMissing(to.to_path_buf()));
    }
    let from = fs::canonicalize(from).map_err(io_at(from))?;
    let to_abs = fs::canonicalize(to).map_err(io_at(to))?;
    if to_abs.starts_with(&from) {
        return Err(MigrateError::TargetInsideSource(to.to_path_buf()));
    }
    Ok(())
}

/// The source's IDE state folder of a student, if there is one.
fn state_source(from_base: &Path, student: &StudentId) -> Option<PathBuf> {
    let dir = from_base.join(crate::storage::IDE_STATE_DIR).join(student.as_str());
    fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()).then_some(dir)
}

/// Size summary of a student's source trees (folder, IDE state), written in the done marker: a rerun skips the
/// student only while it matches.
fn student_fingerprint(from_base: &Path, student: &StudentId) -> Result<String, MigrateError> {
    let mut fp = fingerprint(&from_base.join(student.as_str()))?;
    if let Some(state) = state_source(from_base, student) {
        fp.push_str(&format!("ide_state {}", fingerprint(&state)?));
    }
    Ok(fp)
}

/// Size summary of a source tree.
fn fingerprint(dir: &Path) -> Result<String, MigrateError> {
    let (mut files, mut bytes, mut newest) = (0u64, 0u64, 0i64);
    walk(dir, Files::StatOnly, None, &mut |_, stat, _| {
        if stat.kind() == Kind::File {
            files += 1;
            bytes += stat.size;
        }
        newest = newest.max(stat.mtime.secs * 1_000_000_000 + stat.mtime.nanos);
        Ok(())
    })?;
    Ok(format!("files={files} bytes={bytes} newest_mtime_ns={newest}\n"))
}

fn marker_path(to_base: &Path, student: &StudentId) -> PathBuf {
    to_base.join(MARKER_DIR).join(format!("{student}.done"))
}

/// Whether a previous run finished this student and its source has not changed since.
pub fn already_done(from_base: &Path, to_base: &Path, student: &StudentId) -> Result<bool, MigrateError> {
    let marker = marker_path(to_base, student);
    match fs::read_to_string(&marker) {
        Ok(saved) => Ok(saved == student_fingerprint(from_base, student)?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MigrateError::Io { path: marker, source: e }),
    }
}

/// Sizes of a student's tree, for `--dry-run` and progress totals.
pub fn measure(from_base: &Path, student: &StudentId) -> Result<StudentReport, MigrateError> {
    let mut r = StudentReport::new(student, Outcome::WouldMigrate);
    let trees = std::iter::once(from_base.join(student.as_str())).chain(state_source(from_base, student));
    for tree in trees {
        walk(&tree, Files::StatOnly, None, &mut |_, stat, _| {
            if stat.kind() == Kind::File {
                r.files += 1;
                r.bytes += stat.size;
            }
            Ok(())
        })?;
    }
    Ok(r)
}

/// Copies and verifies one student's folder, then writes its done marker. Blocking. `progress` gets the bytes
/// copied or hashed since its last call; `cancel` is checked between files.
pub fn migrate_student(
    from_base: &Path,
    to_base: &Path,
    student: &StudentId,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<StudentReport, MigrateError> {
    let src = from_base.join(student.as_str());
    let dst = to_base.join(student.as_str());
    let mut report = StudentReport::new(student, Outcome::Migrated);
    let fp = student_fingerprint(from_base, student)?;
    copy_tree(&src, &dst, &mut report, cancel, progress)?;
    report.verified_files = verify(&src, &dst, student, cancel, progress)?;
    if let Some(state) = state_source(from_base, student) {
        let parent = to_base.join(crate::storage::IDE_STATE_DIR);
        match fs::create_dir(&parent) {
            Ok(()) => fs::set_permissions(&parent, fs::Permissions::from_mode(0o700)).map_err(io_at(&parent))?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && parent.is_dir() => {}
            Err(e) => return Err(MigrateError::Io { path: parent, source: e }),
        }
        let state_dst = parent.join(student.as_str());
        copy_tree(&state, &state_dst, &mut report, cancel, progress)?;
        report.verified_files += verify(&state, &state_dst, student, cancel, progress)?;
    }

    let marker = marker_path(to_base, student);
    let marker_dir = marker.parent().expect("marker has a folder");
    fs::create_dir_all(marker_dir).map_err(io_at(marker_dir))?;
    fs::write(&marker, fp).map_err(io_at(&marker))?;
    Ok(report)
}

/// Copies the tree `src` to `dst` (created, or completed from an interrupted run), counting into `report`.
fn copy_tree(
    src: &Path,
    dst: &Path,
    report: &mut StudentReport,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<(), MigrateError> {
    let dst = dst.to_path_buf();
    // Copy, top-down; folder modes and times are set afterwards, deepest first (writing into a folder moves its
    // mtime, and a read-only folder could not be filled).
    let root_meta = Stat::from(&fs::symlink_metadata(src).map_err(io_at(src))?);
    match fs::create_dir(&dst) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dst.is_dir() => {}
        Err(e) => return Err(MigrateError::Io { path: dst, source: e }),
    }
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o700)).map_err(io_at(&dst))?;
    let mut dirs: Vec<(PathBuf, Stat)> = vec![(dst.clone(), root_meta)];
    let mut skipped = Vec::new();
    walk(src, Files::Open, Some(&mut skipped), &mut |rel, meta, node| {
        if cancel.load(Ordering::Relaxed) {
            return Err(MigrateError::Interrupted);
        }
        let target = dst.join(rel);
        if let Node::Dir = node {
            match fs::create_dir(&target) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && target.is_dir() => {}
                Err(e) => return Err(MigrateError::Io { path: target, source: e }),
            }
            // Writable for us while we fill it; the real mode comes at the end.
            fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).map_err(io_at(&target))?;
            dirs.push((target, meta));
        } else if let Node::File(Some(file)) = node {
            report.files += 1;
            report.bytes += meta.size;
            if !same_file_done(&target, &meta) {
                copy_file(file, &target, &meta, progress)?;
                report.copied_files += 1;
                report.copied_bytes += meta.size;
            }
        } else if let Node::Symlink(link) = node {
            match fs::read_link(&target) {
                Ok(existing) if existing == link => {}
                Ok(_) => fs::remove_file(&target).map_err(io_at(&target))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => remove_any(&target)?,
            }
            if fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(&link, &target).map_err(io_at(&target))?;
            }
            lchown(&target, Some(meta.uid), Some(meta.gid)).map_err(io_at(&target))?;
            set_times_nofollow(&target, &meta)?;
        } else {
            report.skipped_entries.push(rel.display().to_string());
        }
        Ok(())
    })?;
    report.skipped_entries.extend(skipped);
    for (dir, meta) in dirs.iter().rev() {
        std::os::unix::fs::chown(dir, Some(meta.uid), Some(meta.gid)).map_err(io_at(dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(meta.mode & 0o7777)).map_err(io_at(dir))?;
        set_times_nofollow(dir, meta)?;
    }
    Ok(())
}

/// Compares both trees entry by entry: kinds, owners, modes, link targets, and every file's BLAKE3 hash. Returns
/// how many files were hashed. Extra entries in the target are reported too (a stale copy would hide them).
pub fn verify(
    src: &Path,
    dst: &Path,
    student: &StudentId,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, MigrateError> {
    let bad = |detail: String| MigrateError::Verify { student: student.clone(), detail };
    let mut hashed = 0u64;
    let mut seen = 0u64;
    walk(src, Files::Open, None, &mut |rel, meta, node| {
        if cancel.load(Ordering::Relaxed) {
            return Err(MigrateError::Interrupted);
        }
        let kind = meta.kind();
        if kind == Kind::Other {
            return Ok(());
        }
        seen += 1;
        let target = dst.join(rel);
        let t = fs::symlink_metadata(&target)
            .map(|t| Stat::from(&t))
            .map_err(|e| bad(format!("{}: missing in the copy ({e})", rel.display())))?;
        if t.kind() != kind {
            return Err(bad(format!("{}: different kind of entry", rel.display())));
        }
        if (t.uid, t.gid) != (meta.uid, meta.gid) {
            return Err(bad(format!("{}: owner differs", rel.display())));
        }
        if kind != Kind::Symlink && t.mode & 0o7777 != meta.mode & 0o7777 {
            return Err(bad(format!("{}: mode differs", rel.display())));
        }
        if let Node::Symlink(link) = node {
            if Some(link) != fs::read_link(&target).ok() {
                return Err(bad(format!("{}: link target differs", rel.display())));
            }
        } else if let Node::File(Some(file)) = node {
            let source = src.join(rel);
            // Large files: both sides hashed at once, one core each.
            let (a, b) = if meta.size >= 1024 * 1024 {
                std::thread::scope(|scope| {
                    let other = scope.spawn(|| hash_file(&target, &mut |_| {}));
                    let a = hash_reader(file, &source, progress);
                    (a, other.join().unwrap_or_else(|_| Err(bad("the hashing thread panicked".into()))))
                })
            } else {
                (hash_reader(file, &source, progress), hash_file(&target, &mut |_| {}))
            };
            let (a, b) = (a?, b?);
            if a != b {
                return Err(bad(format!("{}: content differs (BLAKE3)", rel.display())));
            }
            hashed += 1;
        }
        Ok(())
    })?;
    let mut in_copy = 0u64;
    walk(dst, Files::StatOnly, None, &mut |_, meta, _| {
        if meta.kind() != Kind::Other {
            in_copy += 1;
        }
        Ok(())
    })?;
    if in_copy != seen {
        return Err(bad(format!("the copy has {in_copy} entries, the source {seen} (leftovers of an older copy?)")));
    }
    Ok(hashed)
}

fn hash_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<blake3::Hash, MigrateError> {
    hash_reader(File::open(path).map_err(io_at(path))?, path, progress)
}

/// `path` only names the file in errors.
fn hash_reader(mut f: File, path: &Path, progress: &mut dyn FnMut(u64)) -> Result<blake3::Hash, MigrateError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
        progress(n as u64);
    }
}

/// A complete copy from an earlier run: same size and same mtime (set only after the copy finished).
fn same_file_done(target: &Path, meta: &Stat) -> bool {
    fs::symlink_metadata(target).is_ok_and(|t| {
        let t = Stat::from(&t);
        t.kind() == Kind::File && t.size == meta.size && t.mtime == meta.mtime
    })
}

fn copy_file(mut from: File, target: &Path, meta: &Stat, progress: &mut dyn FnMut(u64)) -> Result<(), MigrateError> {
    let mut partial = target.as_os_str().to_owned();
    partial.push(PARTIAL_SUFFIX);
    let partial = PathBuf::from(partial);
    let mut to = File::create(&partial).map_err(io_at(&partial))?;
    // `io::copy` between two files uses copy_file_range: the kernel (or the NFS server) copies, no user buffer.
    let n = io::copy(&mut from, &mut to).map_err(io_at(&partial))?;
    progress(n);
    // On NFS a rename before the data is durable could publish an empty file after a server crash.
    to.sync_all().map_err(io_at(&partial))?;
    drop(to);
    std::os::unix::fs::chown(&partial, Some(meta.uid), Some(meta.gid)).map_err(io_at(&partial))?;
    fs::set_permissions(&partial, fs::Permissions::from_mode(meta.mode & 0o7777)).map_err(io_at(&partial))?;
    set_times_nofollow(&partial, meta)?;
    if fs::symlink_metadata(target).is_ok_and(|t| t.is_dir() || t.file_type().is_symlink()) {
        remove_any(target)?;
    }
    fs::rename(&partial, target).map_err(io_at(target))
}

fn remove_any(path: &Path) -> Result<(), MigrateError> {
    let meta = fs::symlink_metadata(path).map_err(io_at(path))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(io_at(path))
    } else {
        fs::remove_file(path).map_err(io_at(path))
    }
}

fn set_times_nofollow(path: &Path, meta: &Stat) -> Result<(), MigrateError> {
    crate::fswalk::set_times_nofollow(path, Some(meta.atime), meta.mtime).map_err(io_at(path))
}

/// Walks `root` through [`crate::fswalk`] (symlinks never followed, other file systems not entered), calling
/// `f(relative, stat, node)` for every entry below it, in sorted order. Our own `.wsd-partial` files are passed
/// over. Entries the walk skipped go to `skipped` with the reason when it is given.
fn walk(
    root: &Path,
    files: Files,
    mut skipped: Option<&mut Vec<String>>,
    f: &mut dyn FnMut(&Path, Stat, Node) -> Result<(), MigrateError>,
) -> Result<(), MigrateError> {
    Tree::open(root)?.walk(files, |visit| {
        match visit {
            Visit::Skipped { rel, why } => {
                if let Some(list) = skipped.as_deref_mut() {
                    list.push(format!("{} ({})", rel.display(), why.reason()));
                }
            }
            Visit::Entry(entry) => {
                if !entry.rel.as_os_str().to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                    f(entry.rel, entry.stat, entry.node)?;
                }
            }
        }
        Ok::<_, MigrateError>(Descend::Into)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_verified_and_a_changed_byte_is_caught() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("a"), tmp.path().join("b"));
        let s = StudentId::parse("alice").unwrap();
        fs::create_dir_all(from.join("alice/src")).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::write(from.join("alice/src/main.py"), "print(1)\n").unwrap();
        std::os::unix::fs::symlink("src/main.py", from.join("alice/link")).unwrap();
        let cancel = AtomicBool::new(false);
        let r = migrate_student(&from, &to, &s, &cancel, &mut |_| {}).unwrap();
        assert_eq!((r.files, r.copied_files, r.verified_files), (1, 1, 1));
        assert!(already_done(&from, &to, &s).unwrap());
        assert_eq!(fs::read_link(to.join("alice/link")).unwrap(), Path::new("src/main.py"));

        // Same size and mtime but other content: only the hash sees it.
        let copy = to.join("alice/src/main.py");
        let meta = Stat::from(&fs::metadata(&copy).unwrap());
        fs::write(&copy, "print(2)\n").unwrap();
        set_times_nofollow(&copy, &meta).unwrap();
        let err = verify(&from.join("alice"), &to.join("alice"), &s, &cancel, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("content differs"), "{err}");
    }

    #[test]
    fn the_ide_state_folder_is_copied_and_verified_with_the_student() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("a"), tmp.path().join("b"));
        let s = StudentId::parse("bob").unwrap();
        fs::create_dir_all(from.join("bob")).unwrap();
        fs::create_dir_all(from.join(".ide-state/bob/User")).unwrap();
        fs::create_dir_all(&to).unwrap();
        fs::write(from.join("bob/a.txt"), "a").unwrap();
        fs::write(from.join(".ide-state/bob/User/settings.json"), "{}").unwrap();
        assert_eq!(student_folders(&from).unwrap(), vec![s.clone()], ".ide-state is no student");
        let cancel = AtomicBool::new(false);
        let r = migrate_student(&from, &to, &s, &cancel, &mut |_| {}).unwrap();
        assert_eq!((r.files, r.verified_files), (2, 2));
        assert_eq!(fs::read_to_string(to.join(".ide-state/bob/User/settings.json")).unwrap(), "{}");
        assert!(already_done(&from, &to, &s).unwrap());
        // A changed setting makes the student due again.
        fs::write(from.join(".ide-state/bob/User/settings.json"), "{\"x\": 1}").unwrap();
        assert!(!already_done(&from, &to, &s).unwrap());
    }

    #[test]
    fn a_target_inside_the_source_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("new")).unwrap();
        assert!(matches!(check_paths(tmp.path(), &tmp.path().join("new")), Err(MigrateError::TargetInsideSource(_))));
    }
}
