//! End of term: one verified archive per student folder (`<id>.tar.gz`, the export's format, so `import` restores
//! it) and a `SHA256SUMS` beside them. An archive gets its name only after a second read of it matched the folder
//! entry by entry (content by BLAKE3, modes, links) and counted the same files; nothing is ever overwritten.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::archive::{export_to_writer, ExportError};
use super::volumes::verify::{scan, Tree, VerifyError};
use crate::domain::StudentId;

#[derive(Debug, thiserror::Error)]
pub enum TermError {
    #[error("no folder for {0}")]
    NoFolder(StudentId),
    #[error("{0} exists already; archives are never overwritten")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("files changed while they were archived (is the workspace running?): {0}")]
    Changed(String),
    #[error("the archive does not match the folder: {0}")]
    Verify(#[from] VerifyError),
    #[error("the archive holds {archived} files, the folder {walked}")]
    Count { archived: u64, walked: u64 },
}

/// One archived folder.
#[derive(Debug, Clone)]
pub struct Archived {
    pub file: PathBuf,
    pub files: u64,
    pub bytes: u64,
    /// SHA-256 of the archive file, hex (the `SHA256SUMS` line).
    pub sha256: String,
    /// Entries that cannot be archived (sockets, fifos), left out.
    pub skipped: Vec<String>,
}

/// Archives `<base>/<student>` into `<out>/<student>.tar.gz` and verifies it. Blocking.
pub fn archive_student(base: &Path, student: &StudentId, out: &Path) -> Result<Archived, TermError> {
    let dir = base.join(student.as_str());
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Err(TermError::NoFolder(student.clone()));
    }
    let file = out.join(format!("{student}.tar.gz"));
    if fs::symlink_metadata(&file).is_ok() {
        return Err(TermError::Exists(file));
    }
    let partial = out.join(format!(".{student}.tar.gz.partial"));
    let io_at = |path: &Path| {
        let path = path.to_owned();
        move |source| TermError::Io { path, source }
    };
    let result = write_and_verify(&dir, &partial);
    let archived = match result {
        Ok(a) => a,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    // A hard link keeps an existing name from being replaced (rename would overwrite one made meanwhile).
    fs::hard_link(&partial, &file).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => TermError::Exists(file.clone()),
        _ => TermError::Io { path: file.clone(), source: e },
    })?;
    fs::remove_file(&partial).map_err(io_at(&partial))?;
    Ok(Archived { file, ..archived })
}

fn write_and_verify(dir: &Path, partial: &Path) -> Result<Archived, TermError> {
    let io_at = |source| TermError::Io { path: partial.to_owned(), source };
    let out = OpenOptions::new().write(true).create_new(true).mode(0o600).open(partial).map_err(io_at)?;
    let mut writer = BufWriter::new(out);
    let stats = export_to_writer(dir, &mut writer, |_| {})?;
    let out = writer.into_inner().map_err(|e| io_at(e.into_error()))?;
    out.sync_all().map_err(io_at)?;
    if !stats.changed.is_empty() {
        return Err(TermError::Changed(stats.changed.join(", ")));
    }
    // The second read: the file as written, against the folder.
    let gz = flate2::read::GzDecoder::new(File::open(partial).map_err(io_at)?);
    let scanned = scan(gz, Some(Tree { root: dir, owner: None }))?;
    if scanned.files != stats.files || scanned.verified_files != stats.files {
        return Err(TermError::Count { archived: scanned.files, walked: stats.files });
    }
    let mut hasher = Sha256::new();
    let mut f = File::open(partial).map_err(io_at)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io_at)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Archived {
        file: partial.to_owned(),
        files: stats.files,
        bytes: stats.bytes,
        sha256: hex::encode(hasher.finalize()),
        skipped: stats.skipped,
    })
}

/// Adds `archived`'s line to `<out>/SHA256SUMS` (the format `sha256sum -c` reads).
pub fn record_sum(out: &Path, archived: &Archived) -> Result<(), TermError> {
    let path = out.join("SHA256SUMS");
    let name = archived.file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(|source| TermError::Io { path: path.clone(), source })?;
    writeln!(f, "{}  {name}", archived.sha256).map_err(|source| TermError::Io { path, source })
}
