//! Import of a tar.gz into a student's folder, atomically and defensively.
//!
//! The archive is extracted into a sibling temp folder `<base>/.import-<id>-<rand>`; every entry is checked before
//! anything is written for it: no absolute paths, no `..`, no symlink or hardlink whose target is absolute or leaves
//! the folder, no devices or fifos, no write through a symlink, and at most `max_bytes` of content in total. Once
//! the whole archive is in, every symlink is resolved again against the finished tree (a later link can change
//! where an earlier one leads). Only then is the old folder renamed to `<base>/.previous-<id>-<timestamp>` and the
//! new one renamed into place; the previous folder is deleted after that succeeded. A refusal or an error leaves the
//! student's folder as it was and removes the temp folder.
//!
//! A top-level `.workspaced-ide-state/` (what an export writes for the IDE state) goes to the student's IDE state
//! folder instead, `<base>/.ide-state/<id>`, swapped in the same way right after the folder; an archive without it
//! (an older export) leaves the IDE state as it is.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::domain::StudentId;
use crate::storage::{Storage, StorageError, STUDENT_DIR_MODE};

/// Default limit on the unpacked content of one archive.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// Default limit on the entries of one archive: far above a real student folder (a `node_modules` has tens of
/// thousands), far below what would exhaust inodes or memory.
pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

/// Symlinks followed while resolving one link, before it counts as a loop.
const MAX_LINK_HOPS: usize = 40;

/// Mode of a directory the archive implies but does not list.
const IMPLIED_DIR_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive is unsafe or unsupported; nothing was changed.
    #[error("archive refused: entry {entry:?}: {reason}")]
    Refused { entry: String, reason: String },
    #[error("archive refused: it unpacks to more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("archive refused: it has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("the archive cannot be read: {0}")]
    Archive(io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The swap failed half-way; the old contents are kept at `previous`.
    #[error("could not put the new folder in place ({source}); the previous contents are at {previous}")]
    Swap { previous: PathBuf, source: io::Error },
}

/// Why an entry's path or link target is refused.
#[derive(Debug, thiserror::Error)]
enum UnsafePath {
    #[error("absolute path")]
    Absolute,
    #[error("path contains `..`")]
    ParentDir,
    #[error("leads to the absolute path {0}")]
    AbsoluteTarget(PathBuf),
    #[error("leaves the workspace folder")]
    Escapes,
    #[error("loops")]
    Loops,
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn refused(entry: &Path, reason: impl Into<String>) -> ImportError {
    ImportError::Refused { entry: entry.display().to_string(), reason: reason.into() }
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Owner of everything extracted (the workspace user).
    pub uid: u32,
    pub gid: u32,
    /// Refuse the archive once its content exceeds this many bytes.
    pub max_bytes: u64,
    /// Refuse the archive once it has more entries than this.
    pub max_entries: u64,
    /// Keep `.previous-<id>-<timestamp>` after a successful swap instead of deleting it.
    pub keep_previous: bool,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub dir: PathBuf,
    pub entries: u64,
    pub bytes: u64,
    /// Where the old contents are, when they were kept (on request, or because deleting them failed).
    pub previous_kept: Option<PathBuf>,
    /// Why deleting the previous contents failed, if it did.
    pub cleanup_error: Option<String>,
}

/// An archive fully extracted and checked in its temp folder, waiting to be swapped in. Dropping it without
/// `commit` removes the temp folder and changes nothing else.
#[derive(Debug)]
pub struct PreparedImport {
    base: PathBuf,
    student: StudentId,
    temp: Option<PathBuf>,
    /// The archive's IDE state, moved out of `temp` into `<base>/.ide-state/.import-<id>-<rand>`.
    state_temp: Option<PathBuf>,
    entries: u64,
    bytes: u64,
    keep_previous: bool,
}

impl Drop for PreparedImport {
    fn drop(&mut self) {
        for temp in [self.temp.take(), self.state_temp.take()].into_iter().flatten() {
            if let Err(e) = fs::remove_dir_all(&temp) {
                tracing::warn!(path = %temp.display(), error = %e, "cannot remove the import temp folder");
            }
        }
    }
}

/// Extracts and checks, then swaps in. See the module doc. Blocking.
pub fn import_archive<R: Read>(
    base: &Path,
    student: &StudentId,
    archive: R,
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    prepare_import(base, student, archive, options)?.commit()
}

/// Extracts `archive` (tar.gz) into a temp folder beside the student's folder and checks it. Nothing visible
/// changes until [`PreparedImport::commit`]. Blocking.
pub fn prepare_import<R: Read>(
    base: &Path,
    student: &StudentId,
    archive: R,
    options: &ImportOptions,
) -> Result<PreparedImport, ImportError> {
    prepare_import_tar(base, student, GzDecoder::new(archive), options)
}

/// [`prepare_import`] for an uncompressed tar stream (what the engine's archive endpoint sends).
pub fn prepare_import_tar<R: Read>(
    base: &Path,
    student: &StudentId,
    tar: R,
    options: &ImportOptions,
) -> Result<PreparedImport, ImportError> {
    let base = Storage::new(base, options.uid, options.gid).check_base()?;
    let suffix: u64 = rand::random();
    let temp = base.join(format!(".import-{student}-{suffix:016x}"));
    fs::DirBuilder::new().mode(0o700).create(&temp).map_err(|source| ImportError::Io { path: temp.clone(), source })?;
    let mut prepared = PreparedImport {
        base,
        student: student.clone(),
        temp: Some(temp.clone()),
        state_temp: None,
        entries: 0,
        bytes: 0,
        keep_previous: options.keep_previous,
    };
    let mut x =
        Extractor { root: temp.clone(), options: options.clone(), bytes: 0, dirs: HashMap::new(), links: Vec::new() };
    let mut tar = tar::Archive::new(tar);
    let entries = tar.entries().map_err(ImportError::Archive)?;
    for entry in entries {
        let entry = entry.map_err(ImportError::Archive)?;
        if prepared.entries >= options.max_entries {
            return Err(ImportError::TooManyEntries { limit: options.max_entries });
        }
        x.entry(entry)?;
        prepared.entries += 1;
    }
    x.finish()?;
    prepared.bytes = x.bytes;
    prepared.state_temp = take_state(&prepared.base, student, &temp, options, suffix)?;
    Ok(prepared)
}

/// Moves the archive's IDE state (`<temp>/.workspaced-ide-state`), if any, out of the extracted tree to a temp
/// folder inside `<base>/.ide-state`, owned by uid:gid, mode 0700.
fn take_state(
    base: &Path,
    student: &StudentId,
    temp: &Path,
    options: &ImportOptions,
    suffix: u64,
) -> Result<Option<PathBuf>, ImportError> {
    let extracted = temp.join(crate::ops::archive::IDE_STATE_ENTRY);
    match fs::symlink_metadata(&extracted) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ImportError::Io { path: extracted, source }),
        Ok(m) if !m.is_dir() => {
            return Err(refused(Path::new(crate::ops::archive::IDE_STATE_ENTRY), "the IDE state is not a directory"))
        }
        Ok(_) => {}
    }
    let parent = base.join(crate::storage::IDE_STATE_DIR);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImportError::Io { path, source }
    };
    match fs::DirBuilder::new().mode(STUDENT_DIR_MODE).create(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&parent)(e)),
    }
    if !fs::symlink_metadata(&parent).map_err(io(&parent))?.is_dir() {
        return Err(io(&parent)(io::Error::other("exists and is not a directory")));
    }
    let target = parent.join(format!(".import-{student}-{suffix:016x}"));
    fs::rename(&extracted, &target).map_err(io(&target))?;
    std::os::unix::fs::chown(&target, Some(options.uid), Some(options.gid)).map_err(io(&target))?;
    fs::set_permissions(&target, fs::Permissions::from_mode(STUDENT_DIR_MODE)).map_err(io(&target))?;
    Ok(Some(target))
}

impl PreparedImport {
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The temp folder holding the extracted tree (beside the student's folder, on the same file system).
    pub fn path(&self) -> &Path {
        self.temp.as_deref().unwrap_or(&self.base)
    }

    /// Puts the extracted tree in place only if the student has no folder at all: the rename refuses to replace
    /// anything (`RENAME_NOREPLACE`), so a folder that appeared meanwhile (a start) is never swapped away under
    /// a running IDE. Then nothing changes and the error says so.
    pub fn commit_new(mut self) -> Result<ImportReport, ImportError> {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        let Some(temp) = self.temp.clone() else {
            return Err(ImportError::Io { path: self.base.clone(), source: io::Error::other("already committed") });
        };
        let target = self.base.join(self.student.as_str());
        renameat2(AT_FDCWD, &temp, AT_FDCWD, &target, RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| ImportError::Io { path: target.clone(), source: io::Error::from(e) })?;
        self.temp = None;
        Ok(ImportReport {
            dir: target,
            entries: self.entries,
            bytes: self.bytes,
            previous_kept: None,
            cleanup_error: None,
        })
    }

    /// Renames the current folder (if any) to `.previous-<id>-<timestamp>`, the temp folder into place, then deletes
    /// the previous folder (unless asked to keep it). If the second rename fails the first is undone.
    pub fn commit(mut self) -> Result<ImportReport, ImportError> {
        let temp = self.temp.clone().expect("an uncommitted import has its temp folder");
        let target = self.base.join(self.student.as_str());
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
        let previous = self.base.join(format!(".previous-{}-{stamp}", self.student));
        let had_previous = match fs::symlink_metadata(&target) {
            Ok(_) => {
                fs::rename(&target, &previous).map_err(|source| ImportError::Io { path: target.clone(), source })?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => return Err(ImportError::Io { path: target, source }),
        };
        if let Err(source) = fs::rename(&temp, &target) {
            if had_previous && fs::rename(&previous, &target).is_err() {
                return Err(ImportError::Swap { previous, source });
            }
            return Err(ImportError::Io { path: target, source });
        }
        self.temp = None;
        self.commit_state(&stamp.to_string())?;
        let mut report = ImportReport {
            dir: target,
            entries: self.entries,
            bytes: self.bytes,
            previous_kept: None,
            cleanup_error: None,
        };
        if had_previous {
            if self.keep_previous {
                report.previous_kept = Some(previous);
            } else if let Err(e) = fs::remove_dir_all(&previous) {
                report.cleanup_error = Some(e.to_string());
                report.previous_kept = Some(previous);
            }
        }
        Ok(report)
    }
}

impl PreparedImport {
    /// Puts the archive's IDE state (if it had one) in place of the student's, the same way as the folder: the old
    /// one renamed aside, the new one renamed in, the old one deleted (kept with `keep_previous`).
    fn commit_state(&mut self, stamp: &str) -> Result<(), ImportError> {
        let Some(temp) = self.state_temp.clone() else { return Ok(()) };
        let parent = self.base.join(crate::storage::IDE_STATE_DIR);
        let target = parent.join(self.student.as_str());
        let previous = parent.join(format!(".previous-{}-{stamp}", self.student));
        let had_previous = match fs::symlink_metadata(&target) {
            Ok(_) => {
                fs::rename(&target, &previous).map_err(|source| ImportError::Io { path: target.clone(), source })?;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => return Err(ImportError::Io { path: target, source }),
        };
        if let Err(source) = fs::rename(&temp, &target) {
            if had_previous && fs::rename(&previous, &target).is_err() {
                return Err(ImportError::Swap { previous, source });
            }
            return Err(ImportError::Io { path: target, source });
        }
        self.state_temp = None;
        if had_previous && !self.keep_previous {
            if let Err(e) = fs::remove_dir_all(&previous) {
                tracing::warn!(path = %previous.display(), error = %e, "cannot remove the previous IDE state");
            }
        }
        Ok(())
    }
}

/// Extraction state: the temp root, bytes so far, and what is finished at the end (directory modes and times,
/// the final symlink check).
struct Extractor {
    root: PathBuf,
    options: ImportOptions,
    bytes: u64,
    /// Directories to give their final mode and mtime, after their contents are written.
    /// Each directory's mode and mtime, applied at the end; a later entry for the same directory replaces them.
    dirs: HashMap<PathBuf, (u32, Option<u64>)>,
    /// Every symlink created (relative paths), re-resolved at the end.
    links: Vec<PathBuf>,
}

impl Extractor {
    /// Checks and writes one archive entry. Long because it is one match over the entry kinds (file, directory,
    /// symlink, hardlink, refused): each arm's checks read best next to what it writes.
    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ImportError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let raw = entry.path().map_err(ImportError::Archive)?.into_owned();
        let rel = safe_relative(&raw).map_err(|reason| refused(&raw, reason.to_string()))?;
        let mode = entry.header().mode().map_err(ImportError::Archive)? & 0o777;
        let mtime = entry.header().mtime().ok();
        if rel.as_os_str().is_empty() {
            // `./`: the student folder itself, whose owner and mode are fixed.
            return if kind.is_dir() { Ok(()) } else { Err(refused(&raw, "a non-directory entry names the root")) };
        }
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let declared = entry.size();
                if self.bytes.saturating_add(declared) > self.options.max_bytes {
                    return Err(ImportError::TooLarge { limit: self.options.max_bytes });
                }
                let dst = self.prepare_path(&rel, &raw, false)?;
                self.write_file(&mut entry, &dst, mode, mtime)
            }
            EntryType::Directory => {
                let dst = self.prepare_path(&rel, &raw, true)?;
                match fs::symlink_metadata(&dst) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(refused(&raw, "a directory would replace a file")),
                    Err(_) => self.create_dir(&dst)?,
                }
                self.dirs.insert(dst, (mode, mtime));
                Ok(())
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(ImportError::Archive)?
                    .ok_or_else(|| refused(&raw, "symlink without a target"))?
                    .into_owned();
                if target.as_os_str().is_empty() {
                    return Err(refused(&raw, "symlink with an empty target"));
                }
                if target.is_absolute() {
                    return Err(refused(&raw, format!("symlink to an absolute path {}", target.display())));
                }
                if let Err(why) = resolve_inside(&self.root, &rel, &target) {
                    return Err(refused(&raw, format!("symlink to {} {why}", target.display())));
                }
                let dst = self.prepare_path(&rel, &raw, false)?;
                let io = |source| ImportError::Io { path: dst.clone(), source };
                std::os::unix::fs::symlink(&target, &dst).map_err(io)?;
                std::os::unix::fs::lchown(&dst, Some(self.options.uid), Some(self.options.gid)).map_err(io)?;
                if let Some(t) = mtime {
                    set_mtime_nofollow(&dst, t).map_err(io)?;
                }
                self.links.push(rel);
                Ok(())
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(ImportError::Archive)?
                    .ok_or_else(|| refused(&raw, "hardlink without a target"))?
                    .into_owned();
                // A hardlink names another entry of the archive, relative to the archive's root.
                let target_rel = safe_relative(&target)
                    .map_err(|why| refused(&raw, format!("hardlink to {}: {why}", target.display())))?;
                let src = self.existing_path(&target_rel).ok_or_else(|| {
                    refused(
                        &raw,
                        format!("hardlink to {}, which is not an earlier file of the archive", target.display()),
                    )
                })?;
                let src_meta =
                    fs::symlink_metadata(&src).map_err(|source| ImportError::Io { path: src.clone(), source })?;
                if src_meta.is_dir() {
                    return Err(refused(&raw, "hardlink to a directory"));
                }
                let dst = self.prepare_path(&rel, &raw, false)?;
                if dst == src {
                    return Ok(());
                }
                fs::hard_link(&src, &dst).map_err(|source| ImportError::Io { path: dst.clone(), source })?;
                if src_meta.file_type().is_symlink() {
                    self.links.push(rel);
                }
                Ok(())
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                Err(refused(&raw, "device files and fifos are not allowed in a workspace"))
            }
            other => Err(refused(&raw, format!("unsupported entry type {other:?}"))),
        }
    }

    /// Creates the missing parents of `rel` inside the root without ever passing through a symlink, and clears the
    /// way for the entry itself (an earlier file or link of the same name is replaced; a directory only by a
    /// directory). Returns the absolute destination.
    fn prepare_path(&mut self, rel: &Path, raw: &Path, is_dir: bool) -> Result<PathBuf, ImportError> {
        let mut current = self.root.clone();
        let components: Vec<_> = rel.components().collect();
        for (i, c) in components.iter().enumerate() {
            current.push(c.as_os_str());
            let last = i + 1 == components.len();
            match fs::symlink_metadata(&current) {
                Ok(m) if last => {
                    if m.is_dir() && !is_dir {
                        return Err(refused(raw, "would replace a directory"));
                    }
                    if !m.is_dir() {
                        fs::remove_file(&current)
                            .map_err(|source| ImportError::Io { path: current.clone(), source })?;
                    }
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(refused(raw, "its path passes through a symlink or a file")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !last {
                        self.create_dir(&current)?;
                        self.dirs.entry(current.clone()).or_insert((IMPLIED_DIR_MODE, None));
                    }
                }
                Err(source) => return Err(ImportError::Io { path: current, source }),
            }
        }
        Ok(current)
    }

    /// The absolute path of an already extracted entry, if it exists and is reached through directories only.
    fn existing_path(&self, rel: &Path) -> Option<PathBuf> {
        let mut current = self.root.clone();
        let components: Vec<_> = rel.components().collect();
        for (i, c) in components.iter().enumerate() {
            current.push(c.as_os_str());
            let meta = fs::symlink_metadata(&current).ok()?;
            if i + 1 < components.len() && !meta.is_dir() {
                return None;
            }
        }
        (!components.is_empty()).then_some(current)
    }

    fn create_dir(&self, path: &Path) -> Result<(), ImportError> {
        let io = |source| ImportError::Io { path: path.to_path_buf(), source };
        // Owner-only while we fill it; the archived mode is applied at the end.
        fs::DirBuilder::new().mode(0o700).create(path).map_err(io)?;
        std::os::unix::fs::chown(path, Some(self.options.uid), Some(self.options.gid)).map_err(io)
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dst: &Path,
        mode: u32,
        mtime: Option<u64>,
    ) -> Result<(), ImportError> {
        let io = |source| ImportError::Io { path: dst.to_path_buf(), source };
        // create_new: never opens an existing file or follows a symlink planted at this name.
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(dst).map_err(io)?;
        let budget = self.options.max_bytes - self.bytes;
        let written = io::copy(&mut entry.take(budget.saturating_add(1)), &mut file).map_err(ImportError::Archive)?;
        self.bytes += written;
        if self.bytes > self.options.max_bytes {
            return Err(ImportError::TooLarge { limit: self.options.max_bytes });
        }
        std::os::unix::fs::fchown(&file, Some(self.options.uid), Some(self.options.gid)).map_err(io)?;
        file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io)?;
        // An mtime beyond what `SystemTime` holds (the field takes up to 2^95 in base-256) is not applied: `+` would
        // panic on it.
        if let Some(when) = mtime.and_then(|t| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(t))) {
            file.set_modified(when).map_err(io)?;
        }
        Ok(())
    }

    /// Applies directory modes and times (deepest first, so writing a child no longer moves a parent's mtime),
    /// re-checks every symlink against the finished tree, and hands the root to the workspace user.
    fn finish(&mut self) -> Result<(), ImportError> {
        for rel in &self.links {
            // A later entry of the same name may have replaced the link.
            let Ok(target) = fs::read_link(self.root.join(rel)) else { continue };
            if let Err(why) = resolve_inside(&self.root, rel, &target) {
                return Err(refused(rel, format!("symlink to {} {why}", target.display())));
            }
            // The IDE state goes to a folder of its own: its links must stay inside it.
            if let Ok(inner) = rel.strip_prefix(crate::ops::archive::IDE_STATE_ENTRY) {
                let state_root = self.root.join(crate::ops::archive::IDE_STATE_ENTRY);
                if let Err(why) = resolve_inside(&state_root, inner, &target) {
                    return Err(refused(rel, format!("symlink to {} {why} (the IDE state)", target.display())));
                }
            }
        }
        let mut dirs: Vec<(&PathBuf, &(u32, Option<u64>))> = self.dirs.iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, (mode, mtime)) in dirs {
            let io = |source| ImportError::Io { path: path.clone(), source };
            fs::set_permissions(path, fs::Permissions::from_mode(*mode)).map_err(io)?;
            if let Some(t) = mtime {
                set_mtime_nofollow(path, *t).map_err(io)?;
            }
        }
        let io = |source| ImportError::Io { path: self.root.clone(), source };
        std::os::unix::fs::chown(&self.root, Some(self.options.uid), Some(self.options.gid)).map_err(io)?;
        fs::set_permissions(&self.root, fs::Permissions::from_mode(STUDENT_DIR_MODE)).map_err(io)?;
        Ok(())
    }
}

fn set_mtime_nofollow(path: &Path, secs: u64) -> io::Result<()> {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    crate::fswalk::set_times_nofollow(path, None, crate::fswalk::Timestamp { secs, nanos: 0 })
}

/// The entry path as normal components only: `./` prefixes dropped; absolute paths and `..` refused.
fn safe_relative(path: &Path) -> Result<PathBuf, UnsafePath> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(UnsafePath::Absolute),
            Component::ParentDir => return Err(UnsafePath::ParentDir),
        }
    }
    Ok(out)
}

/// Does a symlink at `link` (relative to the root) with `target` point outside the root? Purely lexical: used by
/// export to warn about links an import will refuse.
pub fn symlink_target_escapes(link: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return true;
    }
    let mut depth: usize = link.parent().map(|p| p.components().count()).unwrap_or(0);
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Resolves a symlink at `link` (relative to `root`) pointing at `target` the way the kernel would, component by
/// component, following symlinks that already exist inside `root` (relative to their own folder). Errors when the
/// resolution leaves `root`, meets an absolute target, or loops. Missing components resolve lexically.
fn resolve_inside(root: &Path, link: &Path, target: &Path) -> Result<(), UnsafePath> {
    let mut current: Vec<OsString> =
        link.parent().map(|p| p.components().map(|c| c.as_os_str().to_owned()).collect()).unwrap_or_default();
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let mut hops = 0usize;
    let push_target = |pending: &mut VecDeque<OsString>, t: &Path| -> Result<(), UnsafePath> {
        if t.is_absolute() {
            return Err(UnsafePath::AbsoluteTarget(t.to_path_buf()));
        }
        for c in t.components().rev() {
            pending.push_front(c.as_os_str().to_owned());
        }
        Ok(())
    };
    push_target(&mut pending, target)?;
    while let Some(c) = pending.pop_front() {
        if c == "." {
            continue;
        }
        if c == ".." {
            if current.pop().is_none() {
                return Err(UnsafePath::Escapes);
            }
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&current);
        candidate.push(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err(UnsafePath::Loops);
                }
                let next = fs::read_link(&candidate)?;
                push_target(&mut pending, &next)?;
            }
            _ => current.push(c),
        }
    }
    Ok(())
}

/// Reads an archive file, or standard input for `-`.
pub fn open_archive(path: &Path) -> io::Result<Box<dyn Read + Send>> {
    if path.as_os_str() == "-" {
        Ok(Box::new(io::stdin()))
    } else {
        Ok(Box::new(File::open(path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_escape_is_measured_from_the_links_folder() {
        assert!(!symlink_target_escapes(Path::new("a/b/l"), Path::new("../x")));
        assert!(!symlink_target_escapes(Path::new("a/l"), Path::new("../x")));
        assert!(symlink_target_escapes(Path::new("l"), Path::new("../x")));
        assert!(symlink_target_escapes(Path::new("a/l"), Path::new("/etc")));
        assert!(symlink_target_escapes(Path::new("a/l"), Path::new("x/../../..")));
    }

    #[test]
    fn a_chain_of_links_that_leaves_the_root_is_caught() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        std::os::unix::fs::symlink("..", root.path().join("d/up")).unwrap();
        // Lexically `d/up/..` is `d`; through the link it is the root's parent.
        assert!(resolve_inside(root.path(), Path::new("d/l2"), Path::new("up/..")).is_err());
        assert!(resolve_inside(root.path(), Path::new("d/l3"), Path::new("up/d")).is_ok());
        std::os::unix::fs::symlink("loop", root.path().join("loop")).unwrap();
        assert!(resolve_inside(root.path(), Path::new("l4"), Path::new("loop")).is_err());
    }
}
