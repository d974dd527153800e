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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use tar::EntryType;

use super::archive::{header_for, ExactReader, Progress};
use crate::domain::StudentId;
use crate::fswalk::{Descend, DirFd, Entry, Files, Kind, Made, Node, Skip, Stat, Tree, Visit, WalkError};

/// Longest [`RelPath`], in bytes.
pub const MAX_REL_PATH_LEN: usize = 1024;
/// Most names in a [`RelPath`].
pub const MAX_REL_PATH_DEPTH: usize = 32;
/// Longest name in a [`RelPath`], in bytes (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;
/// Most entries a template or assignment source may hold: its listing is kept in memory.
pub const MAX_SOURCE_ENTRIES: usize = 100_000;
/// The name of the manifest inside a collect archive and beside the archives of `collect_to_dir`.
pub const MANIFEST_NAME: &str = "MANIFEST.json";

/// A relative path from outside (an assignment folder to distribute or collect): names separated by `/`, no
/// absolute path, no `.`, `..` or empty name, no NUL or other control character, at most [`MAX_REL_PATH_LEN`] bytes
/// and [`MAX_REL_PATH_DEPTH`] names of at most 255 bytes. One trailing `/` is accepted (`assignment-2/`) and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

/// Why a [`RelPath`] was refused. Every variant has the stable code `invalid_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path must be relative (no leading /)")]
    Absolute,
    #[error("the path must not contain . or .. names")]
    DotName,
    #[error("the path must not contain an empty name (//)")]
    EmptyName,
    #[error("the path must not contain NUL or control characters")]
    ControlCharacter,
    #[error("the path is longer than {MAX_REL_PATH_LEN} bytes")]
    TooLong,
    #[error("the path has more than {MAX_REL_PATH_DEPTH} names")]
    TooDeep,
    #[error("a name in the path is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
}

impl RelPathError {
    /// The machine-readable code for an API answer.
    pub fn code(&self) -> &'static str {
        "invalid_path"
    }
}

impl RelPath {
    pub fn parse(raw: &str) -> Result<RelPath, RelPathError> {
        if raw.len() > MAX_REL_PATH_LEN {
            return Err(RelPathError::TooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(RelPathError::ControlCharacter);
        }
        if raw.starts_with('/') {
            return Err(RelPathError::Absolute);
        }
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        if trimmed.is_empty() {
            return Err(RelPathError::Empty);
        }
        let mut depth = 0;
        for name in trimmed.split('/') {
            depth += 1;
            match name {
                "" => return Err(RelPathError::EmptyName),
                "." | ".." => return Err(RelPathError::DotName),
                n if n.len() > MAX_NAME_LEN => return Err(RelPathError::NameTooLong),
                _ => {}
            }
        }
        if depth > MAX_REL_PATH_DEPTH {
            return Err(RelPathError::TooDeep);
        }
        Ok(RelPath(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The names, first to last.
    pub fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.0.split('/').map(OsStr::new)
    }
}

impl TryFrom<&str> for RelPath {
    type Error = RelPathError;
    fn try_from(raw: &str) -> Result<Self, Self::Error> {
        RelPath::parse(raw)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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

/// What a distribution did for one student, paths relative to the student folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistributeReport {
    pub student: String,
    /// This version was distributed to this student before: nothing was done.
    pub already_done: bool,
    /// New files and folders (folders with a trailing `/`).
    pub written: Vec<String>,
    /// Files the student had not changed since the last distribution, replaced with the new version.
    pub updated: Vec<String>,
    /// Files already equal to the new version.
    pub unchanged: Vec<String>,
    /// Files the student changed (or had, different, before any distribution): left as they are.
    pub kept: Vec<String>,
    /// Left out, with why: symlinks and other entries in the way, entries swapped during the run.
    pub skipped: Vec<String>,
}

/// What a student was last given, kept outside the student folder.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DistributedManifest {
    student: String,
    target: String,
    /// [`Plan::digest`] of the source, hex.
    source_digest: String,
    /// Path below the target -> BLAKE3 (hex) of the version last distributed there.
    files: BTreeMap<String, String>,
}

/// An assignment folder read once (listing and hashes), to distribute into any number of student folders.
#[derive(Debug)]
pub struct Distribution {
    source: PathBuf,
    target: RelPath,
    plan: Plan,
    digest: blake3::Hash,
}

impl Distribution {
    /// Reads and hashes `source`, to be copied into `<student folder>/<target>`. Blocking.
    pub fn prepare(source: &Path, target: RelPath) -> Result<Distribution, CourseworkError> {
        let plan = Plan::read(source, true)?;
        let digest = plan.digest();
        Ok(Distribution { source: source.to_path_buf(), target, plan, digest })
    }

    /// The digest of the source as read (hex): a changed source is a new version.
    pub fn digest(&self) -> String {
        self.digest.to_hex().to_string()
    }

    /// Source entries left out (symlinks and the like), with why.
    pub fn source_skipped(&self) -> &[String] {
        &self.plan.skipped
    }

    /// Where the manifest of `student` for this target lives in `state_dir`.
    pub fn manifest_path(&self, student: &StudentId, state_dir: &Path) -> PathBuf {
        let target = blake3::hash(self.target.as_str().as_bytes()).to_hex();
        state_dir.join(format!("{student}-{}.json", &target[..16]))
    }

    /// Copies the source into `<student_root>/<target>`, per file: absent -> written; equal to the new version ->
    /// unchanged; equal to the version last distributed to this student -> updated; otherwise kept. Then writes the
    /// student's manifest in `state_dir` (atomically). When that manifest already has this source's digest, does
    /// nothing and reports `already_done`. Blocking. Long because it is the one loop over the source's entries
    /// with the decision for each kind of entry found at the destination.
    pub fn apply(
        &self,
        student: &StudentId,
        student_root: &Path,
        state_dir: &Path,
        owner: (u32, u32),
    ) -> Result<DistributeReport, CourseworkError> {
        let mut report = DistributeReport { student: student.to_string(), ..Default::default() };
        let manifest_path = self.manifest_path(student, state_dir);
        let old = read_manifest(&manifest_path)?;
        if old.as_ref().is_some_and(|m| m.source_digest == self.digest()) {
            report.already_done = true;
            return Ok(report);
        }
        let old_files = old.map(|m| m.files).unwrap_or_default();
        let target = self.target.as_path();
        let shown = |rel: &Path| target.join(rel).display().to_string();

        // The target's own folders, made as needed.
        let mut dir = DirFd::open_root(student_root)?;
        let mut at = PathBuf::new();
        for name in self.target.names() {
            at.push(name);
            let why = match folder(&dir, name, 0o755, owner)? {
                made @ (Folder::Made | Folder::There) => {
                    if matches!(made, Folder::Made) {
                        dir.sync()?;
                        report.written.push(format!("{}/", at.display()));
                    }
                    let stat = dir.stat_at(name)?.filter(|s| s.kind() == Kind::Dir);
                    match stat.map(|s| dir.open_dir(name, &s)).transpose()? {
                        Some(Ok(next)) => {
                            dir = next;
                            continue;
                        }
                        Some(Err(why)) => why.reason(),
                        None => Skip::Changed.reason(),
                    }
                }
                Folder::Occupied(stat) => occupied_reason(&stat),
                Folder::Skipped(why) => why.reason(),
            };
            report.skipped.push(format!("{} ({why})", at.display()));
            return Ok(report);
        }

        let mut source = Cursor::new(DirFd::open_root(&self.source)?);
        let mut dest = Cursor::new(dir);
        let mut blocked = Blocked::default();
        let mut files = BTreeMap::new();
        for e in &self.plan.entries {
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
            let Some(hash) = e.file else {
                match folder(&dir, name, safe_mode(e.mode, true), owner)? {
                    Folder::Made => {
                        dest.dirty = true;
                        report.written.push(format!("{}/", shown(&e.rel)));
                    }
                    Folder::There => {}
                    Folder::Occupied(stat) => {
                        let why = occupied_reason(&stat);
                        if stat.kind() == Kind::File {
                            report.kept.push(shown(&e.rel));
                        } else {
                            report.skipped.push(format!("{} ({why})", shown(&e.rel)));
                        }
                        blocked.0.insert(e.rel.clone());
                    }
                    Folder::Skipped(why) => {
                        report.skipped.push(format!("{} ({})", shown(&e.rel), why.reason()));
                        blocked.0.insert(e.rel.clone());
                    }
                }
                continue;
            };
            let Some(new) = hash else { continue };
            let key = e.rel.to_string_lossy().into_owned();
            let mode = safe_mode(e.mode, false);
            let last = old_files.get(&key);
            // What the manifest records: the new version where the student now has it, else what it recorded.
            let mut record = true;
            match dir.stat_at(name)? {
                None => {
                    let mut content = Checked::new(source.source_file(&e.rel)?, new);
                    let created = dir.create_file(name, mode, owner, &mut content);
                    match checked(&content, &self.source, &e.rel, created)? {
                        Made::New(_) => {
                            dest.dirty = true;
                            report.written.push(shown(&e.rel));
                        }
                        Made::Exists(_) => {
                            report.kept.push(shown(&e.rel));
                            record = false;
                        }
                        Made::Skipped(why) => {
                            report.skipped.push(format!("{} ({})", shown(&e.rel), why.reason()));
                            record = false;
                        }
                    }
                }
                Some(stat) if stat.kind() == Kind::File => match dir.open_file(name, &stat)? {
                    Err(why) => {
                        report.skipped.push(format!("{} ({})", shown(&e.rel), why.reason()));
                        record = false;
                    }
                    Ok((file, stat)) => {
                        let have = hash_reader(file)
                            .map_err(|source| WalkError::Io { path: dir.path().join(name), source })?;
                        if have == new {
                            report.unchanged.push(shown(&e.rel));
                        } else if last.is_some_and(|l| *l == have.to_hex().as_str()) {
                            let mut content = Checked::new(source.source_file(&e.rel)?, new);
                            let replaced = dir.replace_file(name, &stat, mode, owner, &mut content);
                            match checked(&content, &self.source, &e.rel, replaced)? {
                                Made::New(_) => {
                                    dest.dirty = true;
                                    report.updated.push(shown(&e.rel));
                                }
                                // Edited between our read and the rename: the student's edit wins.
                                Made::Exists(_) | Made::Skipped(_) => {
                                    report.kept.push(shown(&e.rel));
                                    record = false;
                                }
                            }
                        } else {
                            report.kept.push(shown(&e.rel));
                            record = false;
                        }
                    }
                },
                Some(stat) => {
                    if stat.kind() == Kind::Dir {
                        report.kept.push(shown(&e.rel));
                    } else {
                        report.skipped.push(format!("{} ({})", shown(&e.rel), occupied_reason(&stat)));
                    }
                    record = false;
                }
            }
            if record {
                files.insert(key, new.to_hex().to_string());
            } else if let Some(last) = last {
                files.insert(key, last.clone());
            }
        }
        dest.sync()?;
        let manifest = DistributedManifest {
            student: student.to_string(),
            target: self.target.to_string(),
            source_digest: self.digest(),
            files,
        };
        write_manifest(&manifest_path, &manifest)?;
        Ok(report)
    }
}

/// Distributes `source` into `<student_root>/<target>` for one student: [`Distribution::prepare`] then
/// [`Distribution::apply`]. For many students, prepare once and apply per student.
pub fn distribute(
    source: &Path,
    target: &RelPath,
    student: &StudentId,
    student_root: &Path,
    state_dir: &Path,
    owner: (u32, u32),
) -> Result<DistributeReport, CourseworkError> {
    Distribution::prepare(source, target.clone())?.apply(student, student_root, state_dir, owner)
}

/// A source file's content that must hash to what the plan read: if the operator changed it since, the copy fails
/// at its end (before anything is published) instead of handing out a version nobody hashed.
struct Checked {
    file: File,
    hasher: blake3::Hasher,
    expected: blake3::Hash,
    mismatch: bool,
}

impl Checked {
    fn new(file: File, expected: blake3::Hash) -> Checked {
        Checked { file, hasher: blake3::Hasher::new(), expected, mismatch: false }
    }
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && self.hasher.finalize() != self.expected {
            self.mismatch = true;
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the source changed while it was copied"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A write's result, with a content mismatch told apart from other failures.
fn checked<T>(
    content: &Checked,
    source: &Path,
    rel: &Path,
    result: Result<Made<T>, WalkError>,
) -> Result<Made<T>, CourseworkError> {
    match result {
        Err(_) if content.mismatch => Err(CourseworkError::SourceChanged(source.join(rel))),
        r => Ok(r?),
    }
}

fn read_manifest(path: &Path) -> Result<Option<DistributedManifest>, CourseworkError> {
    let bad = |source| CourseworkError::Manifest { path: path.to_path_buf(), source };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e)),
    };
    serde_json::from_slice(&text).map(Some).map_err(|e| bad(io::Error::new(io::ErrorKind::InvalidData, e)))
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

fn write_manifest(path: &Path, manifest: &DistributedManifest) -> Result<(), CourseworkError> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(io::Error::other);
    bytes
        .and_then(|b| write_atomically(path, &b))
        .map_err(|source| CourseworkError::Manifest { path: path.to_path_buf(), source })
}

/// One line of a collect manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    pub student: String,
    /// Relative to the student folder (`assignment-2/main.py`); in the archive under `<student>/`.
    pub path: String,
    /// `file` (archived), `missing` (the student has no such path) or `skipped` (a symlink, a device, swapped).
    pub kind: String,
    #[serde(default)]
    pub size: u64,
    /// BLAKE3 (hex) of the bytes archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Modification time, seconds since the epoch (as in the tar header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// The file changed while it was read (archived with the size first seen, and hashed as archived).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The manifest of a collect: the last entry of its archive, `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectManifest {
    pub path: String,
    pub students: Vec<String>,
    pub entries: Vec<ManifestRow>,
}

/// Where a collect stands; handed to the progress callback after each file and each student.
#[derive(Debug, Clone, Default)]
pub struct CollectProgress {
    pub student: String,
    pub students_done: usize,
    pub students_total: usize,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectStatus {
    Collected,
    /// The student has no such path.
    Missing,
    /// `collect_to_dir` found this student's archive complete and verified from an earlier run.
    AlreadyDone,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudentCollect {
    pub student: String,
    pub status: CollectStatus,
    pub files: u64,
    pub bytes: u64,
    /// Left out, with why.
    pub skipped: Vec<String>,
    /// Changed while read.
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectSummary {
    pub students: Vec<StudentCollect>,
    pub files: u64,
    pub bytes: u64,
    pub manifest: CollectManifest,
}

/// Writes `<student>/<path>/...` of every student as one tar.gz into `out`, then `MANIFEST.json` (student, path,
/// size, BLAKE3, mtime of every archived file; students without the path as `missing`). Read through the walker:
/// no symlink followed (symlinks are listed as skipped), no other file system entered, files changed during the
/// read reported. Streams: nothing is held but the manifest's rows. Blocking.
pub fn collect<W: Write>(
    students: &[(StudentId, PathBuf)],
    path: &RelPath,
    out: W,
    mut progress: impl FnMut(&CollectProgress),
) -> Result<CollectSummary, CourseworkError> {
    let mut builder = tar::Builder::new(GzEncoder::new(out, Compression::default()));
    let mut state = Collecting {
        path,
        rows: Vec::new(),
        progress: CollectProgress { students_total: students.len(), ..Default::default() },
    };
    let mut summary = Vec::new();
    for (student, root) in students {
        state.progress.student = student.to_string();
        summary.push(state.student(&mut builder, student, root, &mut progress)?);
        state.progress.students_done += 1;
        progress(&state.progress);
    }
    let manifest = CollectManifest {
        path: path.to_string(),
        students: students.iter().map(|(s, _)| s.to_string()).collect(),
        entries: state.rows,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| CourseworkError::Write(io::Error::other(e)))?;
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(json.len() as u64);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    header.set_mtime(now);
    builder.append_data(&mut header, MANIFEST_NAME, &json[..]).map_err(CourseworkError::Write)?;
    let encoder = builder.into_inner().map_err(CourseworkError::Write)?;
    let mut out = encoder.finish().map_err(CourseworkError::Write)?;
    out.flush().map_err(CourseworkError::Write)?;
    Ok(CollectSummary {
        files: summary.iter().map(|s| s.files).sum(),
        bytes: summary.iter().map(|s| s.bytes).sum(),
        students: summary,
        manifest,
    })
}

struct Collecting<'a> {
    path: &'a RelPath,
    rows: Vec<ManifestRow>,
    progress: CollectProgress,
}

impl Collecting<'_> {
    /// `rel` (below the collected path) relative to the student folder.
    fn under(&self, rel: &Path) -> PathBuf {
        match rel.as_os_str().is_empty() {
            true => self.path.as_path().to_path_buf(),
            false => self.path.as_path().join(rel),
        }
    }

    fn row(&mut self, student: &StudentId, rel: &Path, kind: &str, note: Option<String>) {
        let path = self.under(rel).to_string_lossy().into_owned();
        self.rows.push(ManifestRow {
            student: student.to_string(),
            path,
            kind: kind.to_owned(),
            size: 0,
            blake3: None,
            mtime: None,
            changed: false,
            note,
        });
    }

    /// One student's folder (or file) at `path`. Long because it resolves the path name by name and then archives
    /// whatever kind of entry it found, each with its own header and manifest row.
    fn student<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        student: &StudentId,
        root: &Path,
        progress: &mut impl FnMut(&CollectProgress),
    ) -> Result<StudentCollect, CourseworkError> {
        let mut out = StudentCollect {
            student: student.to_string(),
            status: CollectStatus::Collected,
            files: 0,
            bytes: 0,
            skipped: Vec::new(),
            changed: Vec::new(),
        };
        let missing = |this: &mut Self, out: &mut StudentCollect, note: &str| {
            this.row(student, Path::new(""), "missing", Some(note.to_owned()));
            out.status = CollectStatus::Missing;
        };
        let mut dir = match DirFd::open_root(root) {
            Ok(d) => d,
            Err(WalkError::NotDirectory(_)) => {
                missing(self, &mut out, "no student folder");
                return Ok(out);
            }
            Err(WalkError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                missing(self, &mut out, "no student folder");
                return Ok(out);
            }
            Err(e) => return Err(e.into()),
        };
        let names: Vec<&OsStr> = self.path.names().collect();
        let (last, parents) = names.split_last().expect("a RelPath has a name");
        for name in parents {
            let next = match dir.stat_at(name)? {
                Some(stat) if stat.kind() == Kind::Dir => dir.open_dir(name, &stat)?,
                _ => Err(Skip::Vanished),
            };
            match next {
                Ok(next) => dir = next,
                Err(_) => {
                    missing(self, &mut out, "not found");
                    return Ok(out);
                }
            }
        }
        let top = Path::new(student.as_str()).join(self.path.as_path());
        let Some(stat) = dir.stat_at(last)? else {
            missing(self, &mut out, "not found");
            return Ok(out);
        };
        match stat.kind() {
            Kind::File => match dir.open_file(last, &stat)? {
                Ok((file, stat)) => {
                    self.file(builder, student, &top, Path::new(""), file, &stat, &mut out, progress)?
                }
                Err(why) => self.skip(student, Path::new(""), why.reason(), &mut out),
            },
            Kind::Dir => match dir.open_dir(last, &stat)? {
                Ok(folder) => {
                    let tree = folder.into_tree();
                    self.dir_header(builder, &top, tree.stat())?;
                    tree.walk(Files::Open, |visit| match visit {
                        Visit::Skipped { rel, why } => {
                            self.skip(student, rel, why.reason(), &mut out);
                            Ok(Descend::Skip)
                        }
                        Visit::Entry(Entry { rel, stat, node, .. }) => {
                            match node {
                                Node::Dir => {
                                    self.dir_header(builder, &top.join(rel), &stat)?;
                                    return Ok(Descend::Into);
                                }
                                Node::File(Some(file)) => {
                                    self.file(builder, student, &top.join(rel), rel, file, &stat, &mut out, progress)?
                                }
                                Node::File(None) => self.skip(student, rel, "not opened", &mut out),
                                Node::Symlink(_) => self.skip(student, rel, "a symlink, not followed", &mut out),
                                Node::Other => self.skip(student, rel, "a socket, fifo or device", &mut out),
                            }
                            Ok::<_, CourseworkError>(Descend::Skip)
                        }
                    })?;
                }
                Err(why) => self.skip(student, Path::new(""), why.reason(), &mut out),
            },
            _ => self.skip(student, Path::new(""), occupied_reason(&stat), &mut out),
        }
        Ok(out)
    }

    fn skip(&mut self, student: &StudentId, rel: &Path, why: &str, out: &mut StudentCollect) {
        out.skipped.push(format!("{} ({why})", self.under(rel).display()));
        self.row(student, rel, "skipped", Some(why.to_owned()));
    }

    fn dir_header<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        name: &Path,
        stat: &Stat,
    ) -> Result<(), CourseworkError> {
        let mut header = header_for(stat);
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        builder.append_data(&mut header, name, io::empty()).map_err(CourseworkError::Write)
    }

    /// Archives one opened file as `name`, hashing exactly the bytes written to the archive.
    #[allow(clippy::too_many_arguments)]
    fn file<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        student: &StudentId,
        name: &Path,
        rel: &Path,
        file: File,
        stat: &Stat,
        out: &mut StudentCollect,
        progress: &mut impl FnMut(&CollectProgress),
    ) -> Result<(), CourseworkError> {
        let size = stat.size;
        let mut header = header_for(stat);
        header.set_entry_type(EntryType::Regular);
        header.set_size(size);
        let (mut counted, mut callback) = (Progress::default(), |_: &Progress| {});
        let mut reader =
            Hashing { inner: ExactReader::new(file, size, &mut counted, &mut callback), hasher: blake3::Hasher::new() };
        let appended = builder.append_data(&mut header, name, &mut reader);
        let hash = reader.hasher.finalize();
        let (file, short, read_error) = reader.inner.finish();
        let shown = self.under(rel);
        if let Some(source) = read_error {
            return Err(WalkError::Io { path: shown, source }.into());
        }
        appended.map_err(CourseworkError::Write)?;
        let changed = short || file.metadata().map(|m| m.len()).unwrap_or(size) != size;
        if changed {
            out.changed.push(shown.display().to_string());
        }
        self.rows.push(ManifestRow {
            student: student.to_string(),
            path: shown.to_string_lossy().into_owned(),
            kind: "file".to_owned(),
            size,
            blake3: Some(hash.to_hex().to_string()),
            mtime: Some(stat.mtime.secs),
            changed,
            note: None,
        });
        out.files += 1;
        out.bytes += size;
        self.progress.files += 1;
        self.progress.bytes += size;
        progress(&self.progress);
        Ok(())
    }
}

struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a collect archive to its end, recomputes every file's BLAKE3 and size, and checks them against its
/// `MANIFEST.json`: every `file` row archived with that size and hash, every archived file in a row.
pub fn verify_archive(reader: impl Read) -> Result<CollectManifest, CourseworkError> {
    let mismatch = |m: String| CourseworkError::Mismatch(m);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut files = BTreeMap::new();
    let mut manifest = None;
    for entry in archive.entries().map_err(|e| mismatch(e.to_string()))? {
        let mut entry = entry.map_err(|e| mismatch(e.to_string()))?;
        if entry.header().entry_type() != EntryType::Regular {
            continue;
        }
        let name = entry.path().map_err(|e| mismatch(e.to_string()))?.to_string_lossy().into_owned();
        if name == MANIFEST_NAME {
            let mut json = Vec::new();
            entry.read_to_end(&mut json).map_err(|e| mismatch(e.to_string()))?;
            manifest = Some(serde_json::from_slice::<CollectManifest>(&json).map_err(|e| mismatch(e.to_string()))?);
            continue;
        }
        let size = entry.header().size().map_err(|e| mismatch(e.to_string()))?;
        let hash = hash_reader(&mut entry).map_err(|e| mismatch(e.to_string()))?;
        files.insert(name, (size, hash.to_hex().to_string()));
    }
    let manifest = manifest.ok_or_else(|| mismatch(format!("no {MANIFEST_NAME}")))?;
    for row in manifest.entries.iter().filter(|r| r.kind == "file") {
        let name = format!("{}/{}", row.student, row.path);
        match files.remove(&name) {
            Some((size, hash)) if size == row.size && Some(&hash) == row.blake3.as_ref() => {}
            Some(_) => return Err(mismatch(format!("{name}: size or hash differs"))),
            None => return Err(mismatch(format!("{name}: in the manifest, not in the archive"))),
        }
    }
    if let Some(name) = files.keys().next() {
        return Err(mismatch(format!("{name}: in the archive, not in the manifest")));
    }
    Ok(manifest)
}

/// [`collect`] into `<out_dir>/<student>.tar.gz`, one archive per student, each written beside its name and renamed
/// into place only when complete and synced; an archive already there that verifies ([`verify_archive`]) is kept
/// and its student reported `already_done`, so a killed and re-run collect does each student once. Ends with
/// `<out_dir>/MANIFEST.json`, every student's rows. Blocking.
pub fn collect_to_dir(
    students: &[(StudentId, PathBuf)],
    path: &RelPath,
    out_dir: &Path,
    mut progress: impl FnMut(&CollectProgress),
) -> Result<CollectSummary, CourseworkError> {
    let output = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CourseworkError::Output { path, source }
    };
    std::fs::create_dir_all(out_dir).map_err(output(out_dir))?;
    let mut all = CollectSummary {
        students: Vec::new(),
        files: 0,
        bytes: 0,
        manifest: CollectManifest {
            path: path.to_string(),
            students: students.iter().map(|(s, _)| s.to_string()).collect(),
            entries: Vec::new(),
        },
    };
    for (done, (student, root)) in students.iter().enumerate() {
        let name = out_dir.join(format!("{student}.tar.gz"));
        let finished = File::open(&name).ok().and_then(|f| verify_archive(io::BufReader::new(f)).ok()).filter(|m| {
            // An archive of another path (an earlier collect into the same folder) is not this one.
            m.path == path.as_str() && m.students == [student.to_string()]
        });
        if let Some(manifest) = finished {
            let rows: Vec<ManifestRow> = manifest.entries;
            let files: Vec<&ManifestRow> = rows.iter().filter(|r| r.kind == "file").collect();
            all.students.push(StudentCollect {
                student: student.to_string(),
                status: CollectStatus::AlreadyDone,
                files: files.len() as u64,
                bytes: files.iter().map(|r| r.size).sum(),
                skipped: Vec::new(),
                changed: Vec::new(),
            });
            all.manifest.entries.extend(rows);
        } else {
            let mut partial = name.as_os_str().to_owned();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let file = File::create(&partial).map_err(output(&partial))?;
            let mut writer = io::BufWriter::new(file);
            let one = [(student.clone(), root.clone())];
            let summary = collect(&one, path, &mut writer, |p| {
                progress(&CollectProgress { students_done: done, students_total: students.len(), ..p.clone() })
            })?;
            let file = writer
                .into_inner()
                .map_err(|e| CourseworkError::Output { path: partial.clone(), source: e.into_error() })?;
            file.sync_all().map_err(output(&partial))?;
            std::fs::rename(&partial, &name).map_err(output(&name))?;
            all.students.extend(summary.students);
            all.manifest.entries.extend(summary.manifest.entries);
        }
        let last = all.students.last().expect("pushed above");
        all.files += last.files;
        all.bytes += last.bytes;
        progress(&CollectProgress {
            student: student.to_string(),
            students_done: done + 1,
            students_total: students.len(),
            files: all.files,
            bytes: all.bytes,
        });
    }
    let json = serde_json::to_vec_pretty(&all.manifest).map_err(|e| CourseworkError::Write(io::Error::other(e)))?;
    let manifest_path = out_dir.join(MANIFEST_NAME);
    write_atomically(&manifest_path, &json).map_err(output(&manifest_path))?;
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_of_assignment_folders_parse() {
        for ok in ["assignment-2", "assignment-2/", "a/b/c.txt", "week 3/ü.py", ".hidden", "a..b"] {
            let p = RelPath::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!p.as_str().ends_with('/'), "{ok}");
        }
        assert_eq!(RelPath::parse("a/b/").unwrap().names().count(), 2);
    }

    #[test]
    fn bad_relative_paths_are_refused_by_name_with_one_stable_code() {
        let long_name = "x".repeat(256);
        let deep = vec!["d"; MAX_REL_PATH_DEPTH + 1].join("/");
        let long = vec!["abcdefgh"; 120].join("/");
        let cases: &[(&str, RelPathError)] = &[
            ("", RelPathError::Empty),
            ("/", RelPathError::Absolute),
            ("/etc/passwd", RelPathError::Absolute),
            ("..", RelPathError::DotName),
            ("a/../../b", RelPathError::DotName),
            ("./a", RelPathError::DotName),
            ("a/.", RelPathError::DotName),
            ("a//b", RelPathError::EmptyName),
            ("a//", RelPathError::EmptyName),
            ("a\0b", RelPathError::ControlCharacter),
            ("a\nb", RelPathError::ControlCharacter),
            ("a\u{7f}", RelPathError::ControlCharacter),
            (&long_name, RelPathError::NameTooLong),
            (&deep, RelPathError::TooDeep),
            (&long, RelPathError::TooLong),
        ];
        for (raw, want) in cases {
            let got = RelPath::parse(raw);
            assert_eq!(got.as_ref().err(), Some(want), "{raw:?}");
            assert_eq!(got.unwrap_err().code(), "invalid_path");
        }
    }

    #[test]
    fn written_modes_are_never_group_or_other_writable_nor_set_id() {
        assert_eq!(safe_mode(0o777, false), 0o755);
        assert_eq!(safe_mode(0o4777, true), 0o755);
        assert_eq!(safe_mode(0o000, false), 0o600);
        assert_eq!(safe_mode(0o000, true), 0o700);
        assert_eq!(safe_mode(0o640, false), 0o640);
    }
}
