//! `--merge`: moves an extracted, verified tree into a student folder that already has files. Every entry is
//! checked first; a name that exists on both sides with other content or of another kind is a conflict, and any
//! conflict refuses the merge with nothing changed. Entries identical on both sides stay as they are; the rest are
//! renamed into place without replacing anything (`RENAME_NOREPLACE`).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{count} name(s) exist in the folder with other content, e.g. {examples}; nothing was merged")]
    Conflicts { count: usize, examples: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> MergeError + '_ {
    move |source| MergeError::Io { path: path.to_path_buf(), source }
}

/// Entries moved and entries that were already there, identical.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    pub moved: u64,
    pub identical: u64,
}

/// Merges `from` (the extracted tree) into `to`. Blocking.
pub fn merge_into(from: &Path, to: &Path) -> Result<Merged, MergeError> {
    let mut moves = Vec::new();
    let mut conflicts = Vec::new();
    let mut merged = Merged::default();
    plan(from, to, Path::new(""), &mut moves, &mut conflicts, &mut merged)?;
    if !conflicts.is_empty() {
        let examples = conflicts.iter().take(5).map(|p| format!("{:?}", p.display().to_string())).collect::<Vec<_>>();
        return Err(MergeError::Conflicts { count: conflicts.len(), examples: examples.join(", ") });
    }
    for rel in &moves {
        let (src, dst) = (from.join(rel), to.join(rel));
        renameat2(AT_FDCWD, &src, AT_FDCWD, &dst, RenameFlags::RENAME_NOREPLACE)
            .map_err(|e| MergeError::Io { path: dst.clone(), source: io::Error::from(e) })?;
        merged.moved += 1;
    }
    Ok(merged)
}

fn plan(
    from: &Path,
    to: &Path,
    rel: &Path,
    moves: &mut Vec<PathBuf>,
    conflicts: &mut Vec<PathBuf>,
    merged: &mut Merged,
) -> Result<(), MergeError> {
    let dir = from.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(io_at(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_at(&dir))?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let (src, dst) = (from.join(&rel), to.join(&rel));
        let s = fs::symlink_metadata(&src).map_err(io_at(&src))?;
        let d = match fs::symlink_metadata(&dst) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                moves.push(rel);
                continue;
            }
            Err(e) => return Err(MergeError::Io { path: dst, source: e }),
        };
        if s.is_dir() && d.is_dir() {
            plan(from, to, &rel, moves, conflicts, merged)?;
        } else if s.file_type().is_symlink() && d.file_type().is_symlink() {
            if fs::read_link(&src).map_err(io_at(&src))? == fs::read_link(&dst).map_err(io_at(&dst))? {
                merged.identical += 1;
            } else {
                conflicts.push(rel);
            }
        } else if s.is_file() && d.is_file() && s.len() == d.len() && hash(&src)? == hash(&dst)? {
            merged.identical += 1;
        } else {
            conflicts.push(rel);
        }
    }
    Ok(())
}

fn hash(path: &Path) -> Result<blake3::Hash, MergeError> {
    let mut f = File::open(path).map_err(io_at(path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            return Ok(hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_adds_new_names_keeps_identical_ones_and_refuses_a_conflict() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("from"), tmp.path().join("to"));
        fs::create_dir_all(from.join("d")).unwrap();
        fs::create_dir_all(to.join("d")).unwrap();
        fs::write(from.join("d/same"), "x").unwrap();
        fs::write(to.join("d/same"), "x").unwrap();
        fs::write(from.join("d/new"), "n").unwrap();
        fs::write(to.join("mine"), "m").unwrap();
        assert_eq!(merge_into(&from, &to).unwrap(), Merged { moved: 1, identical: 1 });
        assert_eq!(fs::read(to.join("d/new")).unwrap(), b"n");
        assert_eq!(fs::read(to.join("mine")).unwrap(), b"m");

        fs::write(from.join("mine"), "other").unwrap();
        fs::write(from.join("d/new2"), "n2").unwrap();
        let err = merge_into(&from, &to).unwrap_err();
        assert!(matches!(err, MergeError::Conflicts { count: 1, .. }), "{err}");
        assert!(!to.join("d/new2").exists(), "a refused merge moves nothing");
    }
}
