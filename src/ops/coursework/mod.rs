//! Coursework files: a course's starter files copied into a student's folder at the first start
//! ([`copy_template`]), an assignment folder distributed into student folders without overwriting what students
//! changed ([`Distribution`]), and a folder collected from many students as one tar.gz with a manifest of hashes
//! ([`collect`], [`collect_to_dir`]).
//!
//! Every read and write inside a student folder goes through [`crate::fswalk`]: names are resolved relative to
//! verified descriptors and never followed, so a student who swaps a folder for a symlink mid-run gets a skip in the
//! report and nothing is read or written outside their folder. The template and assignment sources are the
//! operator's, read the same way (a symlink in them is reported, never copied or followed).
//!
//! Re-runs: a distribution records per student what it last wrote (path -> BLAKE3) in a manifest outside the student
//! folder, written only after that student's copy finished, with the digest of the source; a run that finds its own
//! digest there does nothing for that student (`already_done`). `collect_to_dir` renames each student's archive into
//! place only when complete and skips one that is there and verifies.

mod collect;
mod distribute;
mod relpath;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::fswalk::{Descend, DirFd, Entry, Files, Kind, Made, Node, Skip, Stat, Tree, Visit, WalkError};

pub use collect::{
    collect, collect_to_dir, verify_archive, CollectManifest, CollectProgress, CollectStatus, CollectSummary,
    ManifestRow, StudentCollect, MANIFEST_NAME,
};
pub use distribute::{distribute, DistributeReport, Distribution};
pub use relpath::{RelPath, RelPathError, MAX_REL_PATH_DEPTH, MAX_REL_PATH_LEN};

/// Most entries a template or assignment source may hold: its listing is kept in memory.
pub const MAX_SOURCE_ENTRIES: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum CourseworkError {
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error("{0} has more than {MAX_SOURCE_ENTRIES} entries")]
    TooManyEntries(PathBuf),
    #[error("{0} changed while it was copied; run again")]
    SourceChanged(PathBuf),
    #[error("the manifest {path}: {source}")]
    Manifest { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("cannot write the archive: {0}")]
    Write(io::Error),
    #[error("the archive does not match its manifest: {0}")]
    Mismatch(String),
}

/// The mode of something we write: the source's permission bits, never set-id, never group- or other-writable,
/// always readable and writable (and for a folder searchable) by its owner.
fn safe_mode(mode: u32, dir: bool) -> u32 {
    let owner = if dir { 0o700 } else { 0o600 };
    (mode & 0o755) | owner
}

/// One entry of a source (template or assignment), in walk order: a folder comes before what it holds.
#[derive(Debug)]
struct Planned {
    rel: PathBuf,
    mode: u32,
    /// `None` for a folder; for a file its BLAKE3 when the plan was hashed.
    file: Option<Option<blake3::Hash>>,
}

/// A source's listing, read once through the walker.
#[derive(Debug)]
struct Plan {
    entries: Vec<Planned>,
    /// Symlinks and other entries that are not copied, with why.
    skipped: Vec<String>,
}

impl Plan {
    fn read(source: &Path, hashed: bool) -> Result<Plan, CourseworkError> {
        let tree = Tree::open(source)?;
        let mut plan = Plan { entries: Vec::new(), skipped: Vec::new() };
        let files = if hashed { Files::Open } else { Files::StatOnly };
        tree.walk(files, |visit| {
            let Visit::Entry(Entry { rel, stat, node, .. }) = visit else {
                if let Visit::Skipped { rel, why } = visit {
                    plan.skipped.push(format!("{} ({})", rel.display(), why.reason()));
                }
                return Ok(Descend::Skip);
            };
            if rel.to_str().is_none() {
                plan.skipped.push(format!("{} (name is not UTF-8, not copied)", rel.to_string_lossy()));
                return Ok(Descend::Skip);
            }
            if plan.entries.len() >= MAX_SOURCE_ENTRIES {
                return Err(CourseworkError::TooManyEntries(source.to_path_buf()));
            }
            let file = match node {
                Node::Dir => None,
                Node::File(None) => Some(None),
                Node::File(Some(f)) => {
                    Some(Some(hash_reader(f).map_err(|e| WalkError::Io { path: source.join(rel), source: e })?))
                }
                Node::Symlink(_) => {
                    plan.skipped.push(format!("{} (a symlink, not copied)", rel.display()));
                    return Ok(Descend::Skip);
                }
                Node::Other => {
                    plan.skipped.push(format!("{} (not a file or folder, not copied)", rel.display()));
                    return Ok(Descend::Skip);
                }
            };
            plan.entries.push(Planned { rel: rel.to_path_buf(), mode: stat.mode, file });
            Ok(Descend::Into)
        })?;
        Ok(plan)
    }

    /// Names every entry, its kind, mode and content: equal digests, equal sources.
    fn digest(&self) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        for e in &self.entries {
            h.update(if e.file.is_some() { b"f" } else { b"d" });
            h.update(e.rel.as_os_str().as_encoded_bytes());
            h.update(&[0]);
            h.update(&safe_mode(e.mode, e.file.is_none()).to_le_bytes());
            if let Some(Some(hash)) = e.file {
                h.update(hash.as_bytes());
            }
        }
        h.finalize()
    }
}

fn hash_reader(mut r: impl Read) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

/// Opens folders below a root by relative path, one verified name at a time, keeping the last one open (a walk's
/// entries come grouped by folder, so each folder is opened about once).
struct Cursor {
    root: Rc<DirFd>,
    at: Option<(PathBuf, Rc<DirFd>)>,
    /// Something was written in the folder at `at` (or in the root): synced when the cursor moves on.
    dirty: bool,
}

impl Cursor {
    fn new(root: DirFd) -> Cursor {
        Cursor { root: Rc::new(root), at: None, dirty: false }
    }

    /// Syncs the folder written in, so a manifest written afterwards never records a name a crash could lose.
    fn sync(&mut self) -> Result<(), WalkError> {
        if std::mem::take(&mut self.dirty) {
            self.at.as_ref().map_or(&self.root, |(_, dir)| dir).sync()?;
        }
        Ok(())
    }

    fn dir(&mut self, rel: &Path) -> Result<Result<Rc<DirFd>, Skip>, WalkError> {
        if let Some((at, dir)) = &self.at {
            if at == rel {
                return Ok(Ok(dir.clone()));
            }
        }
        self.sync()?;
        let mut dir = self.root.clone();
        if rel.as_os_str().is_empty() {
            self.at = None;
            return Ok(Ok(dir));
        }
        for name in rel.iter() {
            let Some(stat) = dir.stat_at(name)? else { return Ok(Err(Skip::Vanished)) };
            if stat.kind() != Kind::Dir {
                return Ok(Err(Skip::Changed));
            }
            match dir.open_dir(name, &stat)? {
                Ok(next) => dir = Rc::new(next),
                Err(why) => return Ok(Err(why)),
            }
        }
        self.at = Some((rel.to_path_buf(), dir.clone()));
        Ok(Ok(dir))
    }

    /// A source file for copying, which must still be the regular file it was.
    fn source_file(&mut self, rel: &Path) -> Result<File, CourseworkError> {
        let whole = self.root.path().join(rel);
        let changed = || CourseworkError::SourceChanged(whole.clone());
        let (parent, name) = split(rel);
        let Ok(dir) = self.dir(parent)? else { return Err(changed()) };
        let Some(stat) = dir.stat_at(name)? else { return Err(changed()) };
        match dir.open_file(name, &stat)? {
            Ok((file, _)) => Ok(file),
            Err(_) => Err(changed()),
        }
    }
}

fn split(rel: &Path) -> (&Path, &OsStr) {
    (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default())
}

/// Folders of the destination that were not entered (something else stands there, or it was swapped): what is
/// below them is left out with them.
#[derive(Default)]
struct Blocked(BTreeSet<PathBuf>);

impl Blocked {
    fn covers(&self, rel: &Path) -> bool {
        rel.ancestors().skip(1).any(|a| self.0.contains(a))
    }
}

/// What [`folder`] found or made under a name.
enum Folder {
    Made,
    There,
    /// Something that is not a folder stands there (its stat); not followed.
    Occupied(Stat),
    Skipped(Skip),
}

/// Makes sure `name` in `dir` is a folder we can enter, making it (owned by `owner`) when nothing is there.
fn folder(dir: &DirFd, name: &OsStr, mode: u32, owner: (u32, u32)) -> Result<Folder, WalkError> {
    let stat = match dir.stat_at(name)? {
        None => match dir.create_dir(name, mode, owner)? {
            Made::New(_) => return Ok(Folder::Made),
            Made::Exists(stat) => stat,
            Made::Skipped(why) => return Ok(Folder::Skipped(why)),
        },
        Some(stat) => stat,
    };
    if stat.kind() != Kind::Dir {
        return Ok(Folder::Occupied(stat));
    }
    Ok(match dir.open_dir(name, &stat)? {
        Ok(_) => Folder::There,
        Err(why) => Folder::Skipped(why),
    })
}

/// How a report names what stands in the way.
fn occupied_reason(stat: &Stat) -> &'static str {
    match stat.kind() {
        Kind::Symlink => "a symlink, not followed",
        Kind::Dir => "a folder is there",
        Kind::File => "a file is there",
        Kind::Other => "a socket, fifo or device is there",
    }
}

/// Writes `bytes` at `path` through a synced temporary file beside it and a rename: all or nothing.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut f = File::create(&partial)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&partial, path)
}

/// What [`copy_template`] did, paths relative to the student folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyReport {
    /// Files and folders (with a trailing `/`) written.
    pub written: Vec<String>,
    /// Paths the student already had: left as they are (and nothing copied below them unless a folder).
    pub existing: Vec<String>,
    /// Not copied, with why: swapped during the run, or symlinks and the like in the template.
    pub skipped: Vec<String>,
}

/// Copies the starter files in `template` into `student_root`: every file and folder the student does not have,
/// owned by `owner`, with the template's modes but never group- or other-writable. Nothing the student has is ever
/// overwritten: a path that exists, of any kind, wins (an existing folder is filled with what it lacks). Blocking.
pub fn copy_template(template: &Path, student_root: &Path, owner: (u32, u32)) -> Result<CopyReport, CourseworkError> {
    let plan = Plan::read(template, false)?;
    let mut source = Cursor::new(DirFd::open_root(template)?);
    let mut dest = Cursor::new(DirFd::open_root(student_root)?);
    let mut report =
        CopyReport { skipped: plan.skipped.iter().map(|s| format!("template: {s}")).collect(), ..Default::default() };
    let mut blocked = Blocked::default();
    let shown = |rel: &Path| rel.display().to_string();
    for e in &plan.entries {
        if blocked.covers(&e.rel) {
            continue;
        }
        let (parent, name) = split(&e.rel);
        let dir = match dest.dir(parent)? {
            Ok(dir) => dir,
            Err(why) => {
                report.skipped.push(format!("{} ({})", shown(parent), why.reason()));
                blocked.0.insert(parent.to_path_buf());
                continue;
            }
        };
        match e.file {
            None => match folder(&dir, name, safe_mode(e.mode, true), owner)? {
                Folder::Made => {
                    dest.dirty = true;
                    report.written.push(format!("{}/", shown(&e.rel)));
                }
                Folder::There => {}
                Folder::Occupied(_) => {
                    report.existing.push(shown(&e.rel));
                    blocked.0.insert(e.rel.clone());
                }
                Folder::Skipped(why) => {
                    report.skipped.push(format!("{} ({})", shown(&e.rel), why.reason()));
                    blocked.0.insert(e.rel.clone());
                }
            },
            Some(_) => {
                if dir.stat_at(name)?.is_some() {
                    report.existing.push(shown(&e.rel));
                    continue;
                }
                let mut file = source.source_file(&e.rel)?;
                match dir.create_file(name, safe_mode(e.mode, false), owner, &mut file)? {
                    Made::New(_) => {
                        dest.dirty = true;
                        report.written.push(shown(&e.rel));
                    }
                    Made::Exists(_) => report.existing.push(shown(&e.rel)),
                    Made::Skipped(why) => report.skipped.push(format!("{} ({})", shown(&e.rel), why.reason())),
                }
            }
        }
    }
    dest.sync()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_modes_are_never_group_or_other_writable_nor_set_id() {
        assert_eq!(safe_mode(0o777, false), 0o755);
        assert_eq!(safe_mode(0o4777, true), 0o755);
        assert_eq!(safe_mode(0o000, false), 0o600);
        assert_eq!(safe_mode(0o000, true), 0o700);
        assert_eq!(safe_mode(0o640, false), 0o640);
    }
}
