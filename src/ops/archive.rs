//! Export of a student's folder as a gzip-compressed tar stream. Entries are relative to the folder, keep their
//! mode, mtime (seconds) and numeric uid/gid; symlinks are stored as links and never followed; hardlinked files are
//! stored once and then as links; nothing is held in memory beyond a file's read buffer. The writer is any
//! `io::Write` (a file, stdout, a channel to an HTTP body). Import, with its checks, is in `import.rs`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use tar::{EntryType, Header};

use super::import::symlink_target_escapes;
use crate::fswalk::{Descend, Entry, Files, Node, Stat, Tree, Visit, WalkError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the archive: {0}")]
    Write(io::Error),
}

impl From<WalkError> for ExportError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::NotDirectory(path) => ExportError::NotDirectory(path),
            WalkError::Io { path, source } => ExportError::Read { path, source },
        }
    }
}

/// Where an export stands; handed to the progress callback after each entry and during large files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// File content bytes written so far (before compression).
    pub bytes: u64,
    /// Entries written so far.
    pub entries: u64,
}

/// What an export wrote, and what the operator should know about it.
#[derive(Debug, Clone, Default)]
pub struct ExportStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// File content bytes.
    pub bytes: u64,
    /// Sockets, fifos and devices (not archived), and entries that vanished during the walk.
    pub skipped: Vec<String>,
    /// Files whose size changed while they were read (a running workspace): archived with the size first seen.
    pub changed: Vec<String>,
    /// Symlinks with an absolute target or one that leaves the folder: archived, but an import will refuse them.
    pub unsafe_links: Vec<String>,
}

/// The top-level entry of an export that holds the student's IDE state folder (`<base>/.ide-state/<id>`); import
/// puts it back there. A student's own top-level entry of that name is left out of such an export (reported in
/// `skipped`).
pub const IDE_STATE_ENTRY: &str = ".workspaced-ide-state";

/// Writes `dir` as a tar.gz into `writer`, calling `progress` as it goes. Blocking: use `spawn_blocking`.
/// Returns after the gzip trailer is written and the writer flushed. The folder is read through [`crate::fswalk`],
/// so an entry the student swaps for a symlink during the export is reported in `skipped`, never followed.
pub fn export_to_writer<W: Write>(
    dir: &Path,
    writer: W,
    progress: impl FnMut(&Progress),
) -> Result<ExportStats, ExportError> {
    export_student(dir, None, writer, progress)
}

/// [`export_to_writer`], and with `state` (the student's IDE state folder, when it exists) that folder too, under
/// [`IDE_STATE_ENTRY`], read the same way.
pub fn export_student<W: Write>(
    dir: &Path,
    state: Option<&Path>,
    writer: W,
    mut progress: impl FnMut(&Progress),
) -> Result<ExportStats, ExportError> {
    let tree = Tree::open(dir)?;
    let mut builder = tar::Builder::new(GzEncoder::new(writer, Compression::default()));
    let mut walk = Walk { stats: ExportStats::default(), progress: Progress::default(), links: HashMap::new() };
    let reserved = Path::new(IDE_STATE_ENTRY);
    tree.walk(Files::Open, |visit| match visit {
        Visit::Skipped { rel, why } => {
            walk.stats.skipped.push(format!("{} ({})", rel.display(), why.reason()));
            Ok(Descend::Skip)
        }
        Visit::Entry(entry) if state.is_some() && entry.rel == reserved => {
            walk.stats.skipped.push(format!("{IDE_STATE_ENTRY} (the name exports keep for the IDE state)"));
            Ok(Descend::Skip)
        }
        Visit::Entry(entry) => {
            let abs = dir.join(entry.rel);
            walk.add(&mut builder, &abs, None, entry, &mut progress)
        }
    })?;
    if let Some(state) = state {
        walk.add_state(&mut builder, state, &mut progress)?;
    }
    let encoder = builder.into_inner().map_err(ExportError::Write)?;
    let mut writer = encoder.finish().map_err(ExportError::Write)?;
    writer.flush().map_err(ExportError::Write)?;
    Ok(walk.stats)
}

struct Walk {
    stats: ExportStats,
    progress: Progress,
    /// First archived path of each hardlinked inode.
    links: HashMap<(u64, u64), PathBuf>,
}

impl Walk {
    /// Appends the IDE state folder under [`IDE_STATE_ENTRY`]: its own directory entry, then its contents. A
    /// missing folder (a student who never started an IDE with one) adds nothing.
    fn add_state<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        state: &Path,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<(), ExportError> {
        let tree = match Tree::open(state) {
            Ok(tree) => tree,
            Err(WalkError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let root = tree.stat();
        let mut header = Header::new_gnu();
        header.set_uid(u64::from(root.uid));
        header.set_gid(u64::from(root.gid));
        header.set_mode(root.mode & 0o7777);
        header.set_mtime(root.mtime.secs.max(0) as u64);
        header.set_entry_type(EntryType::Directory);
        header.set_size(0);
        builder.append_data(&mut header, IDE_STATE_ENTRY, io::empty()).map_err(ExportError::Write)?;
        self.stats.dirs += 1;
        let prefix = Path::new(IDE_STATE_ENTRY);
        tree.walk(Files::Open, |visit| match visit {
            Visit::Skipped { rel, why } => {
                self.stats.skipped.push(format!("{} ({})", prefix.join(rel).display(), why.reason()));
                Ok(Descend::Skip)
            }
            Visit::Entry(entry) => {
                let abs = state.join(entry.rel);
                self.add(builder, &abs, Some(prefix), entry, progress)
            }
        })?;
        Ok(())
    }

    /// Appends one entry, named in the archive by its path below `prefix` (if any); `abs` only names it in errors. Long because it is one match over the entry kinds, each
    /// writing its own tar header.
    fn add<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        abs: &Path,
        prefix: Option<&Path>,
        entry: Entry<'_>,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<Descend, ExportError> {
        let Entry { rel, stat, node, .. } = entry;
        let prefixed = prefix.map(|p| p.join(rel));
        let rel = prefixed.as_deref().unwrap_or(rel);
        let mut header = header_for(&stat);
        let write = ExportError::Write;
        match node {
            Node::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, rel, io::empty()).map_err(write)?;
                self.stats.dirs += 1;
            }
            Node::Symlink(target) => {
                if symlink_target_escapes(rel, &target) {
                    self.stats.unsafe_links.push(format!("{} -> {}", rel.display(), target.display()));
                }
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, rel, &target).map_err(write)?;
                self.stats.symlinks += 1;
            }
            Node::File(file) => {
                header.set_entry_type(EntryType::Regular);
                if stat.nlink > 1 {
                    let key = (stat.dev, stat.ino);
                    if let Some(first) = self.links.get(&key) {
                        header.set_entry_type(EntryType::Link);
                        header.set_size(0);
                        builder.append_link(&mut header, rel, first).map_err(write)?;
                        self.stats.hardlinks += 1;
                        self.tick(progress);
                        return Ok(Descend::Skip);
                    }
                    self.links.insert(key, rel.to_path_buf());
                }
                let Some(file) = file else {
                    // Files::Open always opens; kept as an error rather than a panic.
                    return Err(ExportError::Read { path: abs.to_path_buf(), source: io::ErrorKind::NotFound.into() });
                };
                let size = stat.size;
                header.set_size(size);
                let mut reader = ExactReader::new(file, size, &mut self.progress, progress);
                let appended = builder.append_data(&mut header, rel, &mut reader);
                let (file, short, read_error) = reader.finish();
                if let Some(source) = read_error {
                    return Err(ExportError::Read { path: abs.to_path_buf(), source });
                }
                appended.map_err(write)?;
                let now = file.metadata().map(|m| m.len()).unwrap_or(size);
                if short || now != size {
                    self.stats.changed.push(rel.display().to_string());
                }
                self.stats.files += 1;
                self.stats.bytes += size;
            }
            Node::Other => {
                self.stats.skipped.push(format!("{} (socket, fifo or device)", rel.display()));
                return Ok(Descend::Skip);
            }
        }
        self.tick(progress);
        Ok(Descend::Into)
    }

    fn tick(&mut self, progress: &mut impl FnMut(&Progress)) {
        self.progress.entries += 1;
        progress(&self.progress);
    }
}

/// A tar header with an entry's owner, permission bits and mtime (whole seconds); type and size are the caller's.
pub(super) fn header_for(stat: &Stat) -> Header {
    let mut header = Header::new_gnu();
    header.set_uid(u64::from(stat.uid));
    header.set_gid(u64::from(stat.gid));
    // Permission bits only, as GNU tar writes them; a pre-1970 mtime becomes 0 rather than a huge number.
    header.set_mode(stat.mode & 0o7777);
    header.set_mtime(stat.mtime.secs.max(0) as u64);
    header
}

/// Yields exactly `remaining` bytes of a file: its content, zero-padded if it shrank meanwhile, cut if it grew, so
/// the tar header's size is always right. Read errors are kept aside so they are reported as read errors.
pub(super) struct ExactReader<'a, F: FnMut(&Progress)> {
    file: std::fs::File,
    remaining: u64,
    short: bool,
    progress: &'a mut Progress,
    callback: &'a mut F,
    error: Option<io::Error>,
}

impl<'a, F: FnMut(&Progress)> ExactReader<'a, F> {
    pub(super) fn new(file: std::fs::File, size: u64, progress: &'a mut Progress, callback: &'a mut F) -> Self {
        ExactReader { file, remaining: size, short: false, progress, callback, error: None }
    }

    /// The file back, whether it was shorter than its size (padded), and the read error kept aside, if any.
    pub(super) fn finish(self) -> (std::fs::File, bool, Option<io::Error>) {
        (self.file, self.short, self.error)
    }
}

impl<F: FnMut(&Progress)> Read for ExactReader<'_, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.remaining.min(usize::MAX as u64) as usize);
        let n = if self.short {
            0
        } else {
            match self.file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let kind = e.kind();
                    self.error = Some(e);
                    return Err(io::Error::new(kind, "read error"));
                }
            }
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.remaining -= n as u64;
        self.progress.bytes += n as u64;
        (self.callback)(self.progress);
        Ok(n)
    }
}

/// Apparent size of the regular files below `dir` (hardlinks once), for a progress bar's length. Symlinks are not
/// followed.
pub fn content_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0u64;
    let mut seen = std::collections::HashSet::new();
    let tree = Tree::open(dir).map_err(walk_io)?;
    tree.walk(Files::StatOnly, |visit| {
        if let Visit::Entry(Entry { stat, node: Node::File(_), .. }) = visit {
            if stat.nlink == 1 || seen.insert((stat.dev, stat.ino)) {
                total += stat.size;
            }
        }
        Ok::<_, WalkError>(Descend::Into)
    })
    .map_err(walk_io)?;
    Ok(total)
}

fn walk_io(e: WalkError) -> io::Error {
    match e {
        WalkError::Io { source, .. } => source,
        e @ WalkError::NotDirectory(_) => io::Error::new(io::ErrorKind::NotADirectory, e.to_string()),
    }
}

/// The default archive name: `<id>-<UTC timestamp>.tar.gz`.
pub fn default_archive_name(student: &crate::domain::StudentId, now: chrono::DateTime<chrono::Utc>) -> String {
    format!("{student}-{}.tar.gz", now.format("%Y%m%dT%H%M%SZ"))
}
