//! Disk usage of a folder, counted the way `du -s --block-size=1 -x` counts it: allocated blocks
//! (`st_blocks * 512`), every hardlinked inode once, symlinks not followed, other file systems not entered.
//! Allocated rather than apparent bytes, because that is what a quota or an EFS bill sees.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What a folder occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Allocated bytes, the folder itself included (`du -s -B1`).
    pub bytes: u64,
    /// Non-directory entries (files, symlinks, ...), each hardlinked inode once.
    pub files: u64,
}

/// Walks `dir` without following symlinks or leaving its file system. Entries that vanish during the walk (a
/// running workspace deletes files) are skipped; any other error stops the walk. Blocking: call from
/// `spawn_blocking`.
pub fn disk_usage(dir: &Path) -> io::Result<Usage> {
    let root = std::fs::symlink_metadata(dir)?;
    let device = root.dev();
    let mut usage = Usage::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    add(&mut usage, &mut seen, &root);
    if !root.is_dir() {
        return Ok(usage);
    }
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = match std::fs::read_dir(&current) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", current.display()))),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // `DirEntry::metadata` is an lstat: a symlink counts as itself.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", entry.path().display()))),
            };
            if meta.dev() != device {
                // Like `du -x`: a mount point below the folder is neither counted nor entered.
                continue;
            }
            add(&mut usage, &mut seen, &meta);
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(usage)
}

fn add(usage: &mut Usage, seen: &mut HashSet<(u64, u64)>, meta: &std::fs::Metadata) {
    if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
        return;
    }
    usage.bytes += meta.blocks() * 512;
    if !meta.is_dir() {
        usage.files += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hardlinked_file_counts_once_and_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        let single = disk_usage(dir.path()).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        let linked = disk_usage(dir.path()).unwrap();
        assert_eq!((linked.bytes, linked.files), (single.bytes, 1));
        std::os::unix::fs::symlink("/usr", dir.path().join("l")).unwrap();
        let with_link = disk_usage(dir.path()).unwrap();
        assert_eq!(with_link.files, 2);
        assert!(with_link.bytes < single.bytes + 64 * 1024, "the symlink's target was counted");
    }
}
