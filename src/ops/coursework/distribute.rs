//! Distribution of an assignment folder into student folders, per file: written, updated, unchanged or kept.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    folder, hash_reader, occupied_reason, safe_mode, split, write_atomically, Blocked, CourseworkError, Cursor, Folder,
    Plan, RelPath,
};
use crate::domain::StudentId;
use crate::fswalk::{DirFd, Kind, Made, Skip, WalkError};

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

fn write_manifest(path: &Path, manifest: &DistributedManifest) -> Result<(), CourseworkError> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(io::Error::other);
    bytes
        .and_then(|b| write_atomically(path, &b))
        .map_err(|source| CourseworkError::Manifest { path: path.to_path_buf(), source })
}
