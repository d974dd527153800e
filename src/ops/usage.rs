//! Disk usage of a folder, counted the way `du -s --block-size=1 -x` counts it: allocated blocks
//! (`st_blocks * 512`), every hardlinked inode once, symlinks not followed, other file systems not entered.
//! Allocated rather than apparent bytes, because that is what a quota or an EFS bill sees.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use crate::fswalk::{Descend, Files, Kind, Stat, Tree, Visit, WalkError};

/// What a folder occupies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Allocated bytes, the folder itself included (`du -s -B1`).
    pub bytes: u64,
    /// Non-directory entries (files, symlinks, ...), each hardlinked inode once.
    pub files: u64,
}

/// Walks `dir` through [`crate::fswalk`]: symlinks are not followed, other file systems not entered. Entries that
/// vanish or change during the walk (a running workspace deletes and renames files) are skipped; any other error
/// stops the walk. Blocking: call from `spawn_blocking`.
pub fn disk_usage(dir: &Path) -> io::Result<Usage> {
    let tree = match Tree::open(dir) {
        Ok(t) => t,
        // A file or symlink as the root counts as itself, as with `du`.
        Err(WalkError::NotDirectory(_)) => {
            let mut usage = Usage::default();
            add(&mut usage, &mut HashSet::new(), &Stat::from(&std::fs::symlink_metadata(dir)?));
            return Ok(usage);
        }
        Err(e) => return Err(walk_io(e)),
    };
    let mut usage = Usage::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    add(&mut usage, &mut seen, tree.stat());
    tree.walk(Files::StatOnly, |visit| {
        if let Visit::Entry(entry) = visit {
            add(&mut usage, &mut seen, &entry.stat);
        }
        Ok::<_, WalkError>(Descend::Into)
    })
    .map_err(walk_io)?;
    Ok(usage)
}

fn walk_io(e: WalkError) -> io::Error {
    match e {
        WalkError::Io { path, source } => io::Error::new(source.kind(), format!("{}: {source}", path.display())),
        e @ WalkError::NotDirectory(_) => io::Error::new(io::ErrorKind::NotADirectory, e.to_string()),
    }
}

fn add(usage: &mut Usage, seen: &mut HashSet<(u64, u64)>, stat: &Stat) {
    let is_dir = stat.kind() == Kind::Dir;
    if !is_dir && stat.nlink > 1 && !seen.insert((stat.dev, stat.ino)) {
        return;
    }
    usage.bytes += stat.blocks * 512;
    if !is_dir {
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
