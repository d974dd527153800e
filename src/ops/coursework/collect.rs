//! Collection of one path from many student folders as tar.gz, with a manifest of hashes checked against it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use tar::EntryType;

use super::{hash_reader, occupied_reason, write_atomically, CourseworkError, RelPath};
use crate::domain::StudentId;
use crate::fswalk::{Descend, DirFd, Entry, Files, Kind, Node, Skip, Stat, Visit, WalkError};
use crate::ops::archive::{header_for, ExactReader, Progress};

/// The name of the manifest inside a collect archive and beside the archives of `collect_to_dir`.
pub const MANIFEST_NAME: &str = "MANIFEST.json";

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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
        out.skipped.push(format!("{} ({why})", printable(&self.under(rel))));
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
            out.changed.push(printable(&shown));
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

/// A name the student chose, for a report that may reach a log line: control characters (a newline in a file
/// name) escaped. The manifest keeps names as they are (JSON escapes them).
fn printable(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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
