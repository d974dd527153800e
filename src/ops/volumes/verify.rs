//! Reads a volume's tar stream (from a second, independent read through the engine) and, when given the
//! extracted tree, checks every entry against it: kind, content (BLAKE3), link target, mode, owner. The digest
//! over every entry is what the done marker keeps, so a later run can tell an unchanged volume from a changed one.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("the volume's archive cannot be read: {0}")]
    Archive(io::Error),
    #[error("{path}: {detail}")]
    Differs { path: String, detail: String },
}

/// What a scan found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    /// Regular files (hardlinks counted once, as their first name).
    pub files: u64,
    pub bytes: u64,
    /// Entries of every kind, the root folder excluded.
    pub entries: u64,
    /// Files whose content was hashed on both sides (0 without a tree).
    pub verified_files: u64,
    /// BLAKE3 over every entry's kind, path, mode and content hash or link target, hex.
    pub digest: String,
}

/// Where the tree to compare lives and who must own it (`None`: whoever owns it now).
#[derive(Debug, Clone, Copy)]
pub struct Tree<'a> {
    pub root: &'a Path,
    pub owner: Option<(u32, u32)>,
}

/// Scans `tar`; with `tree`, every entry must be there, identical and owned by uid:gid. Blocking. Long because it
/// is one match over the entry kinds (folder, file, symlink, hardlink): each arm's check reads best next to what it
/// adds to the digest.
pub fn scan<R: Read>(tar: R, tree: Option<Tree<'_>>) -> Result<Scan, VerifyError> {
    let mut out = Scan::default();
    let mut digest = blake3::Hasher::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(VerifyError::Archive)? {
        let mut entry = entry.map_err(VerifyError::Archive)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw = entry.path().map_err(VerifyError::Archive)?.into_owned();
        let rel = normal(&raw);
        let shown = rel.display().to_string();
        let differs = |detail: String| VerifyError::Differs { path: shown.clone(), detail };
        let mode = entry.header().mode().map_err(VerifyError::Archive)? & 0o777;
        let on_disk = match tree {
            Some(t) => Some(
                fs::symlink_metadata(t.root.join(&rel)).map_err(|e| differs(format!("missing in the copy ({e})")))?,
            ),
            None => None,
        };
        if let (Some(Tree { owner: Some((uid, gid)), .. }), Some(m)) = (tree, &on_disk) {
            if (m.uid(), m.gid()) != (uid, gid) {
                return Err(differs(format!("owned by {}:{}, not {uid}:{gid}", m.uid(), m.gid())));
            }
        }
        let is_root = rel.as_os_str().is_empty();
        if !is_root {
            out.entries += 1;
        }
        let (tag, detail): (u8, Vec<u8>) = match kind {
            EntryType::Directory => {
                if let Some(m) = &on_disk {
                    if !m.is_dir() {
                        return Err(differs("not a folder in the copy".to_owned()));
                    }
                    if !is_root && m.mode() & 0o777 != mode {
                        return Err(differs(format!(
                            "mode {:o} in the copy, {mode:o} in the volume",
                            m.mode() & 0o777
                        )));
                    }
                }
                (b'd', Vec::new())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                out.files += 1;
                out.bytes += entry.size();
                let hash = hash_reader(&mut entry).map_err(VerifyError::Archive)?;
                if let (Some(t), Some(m)) = (tree, &on_disk) {
                    if !m.is_file() {
                        return Err(differs("not a file in the copy".to_owned()));
                    }
                    if m.mode() & 0o777 != mode {
                        return Err(differs(format!(
                            "mode {:o} in the copy, {mode:o} in the volume",
                            m.mode() & 0o777
                        )));
                    }
                    let path = t.root.join(&rel);
                    let copy =
                        File::open(&path).and_then(|mut f| hash_reader(&mut f)).map_err(|e| differs(e.to_string()))?;
                    if copy != hash {
                        return Err(differs("content differs (BLAKE3)".to_owned()));
                    }
                    out.verified_files += 1;
                }
                (b'f', hash.as_bytes().to_vec())
            }
            EntryType::Symlink => {
                let target = entry.link_name().map_err(VerifyError::Archive)?.unwrap_or_default().into_owned();
                if let (Some(t), Some(m)) = (tree, &on_disk) {
                    if !m.file_type().is_symlink() || fs::read_link(t.root.join(&rel)).ok().as_ref() != Some(&target) {
                        return Err(differs(format!("not a symlink to {} in the copy", target.display())));
                    }
                }
                (b'l', target.as_os_str().as_encoded_bytes().to_vec())
            }
            EntryType::Link => {
                let target = normal(&entry.link_name().map_err(VerifyError::Archive)?.unwrap_or_default());
                if let (Some(t), Some(m)) = (tree, &on_disk) {
                    let first = fs::symlink_metadata(t.root.join(&target)).map_err(|e| differs(e.to_string()))?;
                    if (first.dev(), first.ino()) != (m.dev(), m.ino()) {
                        return Err(differs(format!("not a hardlink of {} in the copy", target.display())));
                    }
                }
                (b'h', target.as_os_str().as_encoded_bytes().to_vec())
            }
            other => {
                return Err(differs(format!("entry type {other:?} cannot be in a workspace")));
            }
        };
        digest.update(&[tag]);
        digest.update(rel.as_os_str().as_encoded_bytes());
        digest.update(&[0]);
        digest.update(format!("{mode:o}").as_bytes());
        digest.update(&[0]);
        digest.update(&detail);
        digest.update(&[0]);
    }
    out.digest = digest.finalize().to_hex().to_string();
    Ok(out)
}

/// The entry path without `./` (the engine names the volume's root `./`).
fn normal(path: &Path) -> PathBuf {
    path.components().filter(|c| matches!(c, Component::Normal(_))).collect()
}

fn hash_reader(r: &mut dyn Read) -> io::Result<blake3::Hash> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        b.append_data(&mut dir, "./", io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(5);
        b.append_data(&mut file, "./a.txt", &b"hello"[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(EntryType::Symlink);
        link.set_size(0);
        link.set_mode(0o777);
        b.append_link(&mut link, "./l", "a.txt").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_tree_that_differs_in_content_target_or_owner_fails_and_the_digest_follows_the_content() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("a.txt"), "hello").unwrap();
        fs::set_permissions(root.join("a.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("l")).unwrap();
        let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
        let tree = Tree { root, owner: Some((uid, gid)) };
        let ok = scan(&archive()[..], Some(tree)).unwrap();
        assert_eq!((ok.files, ok.bytes, ok.entries, ok.verified_files), (1, 5, 2, 1));
        assert_eq!(scan(&archive()[..], None).unwrap().digest, ok.digest, "the digest needs no tree");

        fs::write(root.join("a.txt"), "hellO").unwrap();
        assert!(matches!(scan(&archive()[..], Some(tree)), Err(VerifyError::Differs { .. })));
        fs::write(root.join("a.txt"), "hello").unwrap();
        fs::remove_file(root.join("l")).unwrap();
        std::os::unix::fs::symlink("elsewhere", root.join("l")).unwrap();
        assert!(matches!(scan(&archive()[..], Some(tree)), Err(VerifyError::Differs { .. })));
        assert!(matches!(
            scan(&archive()[..], Some(Tree { root, owner: Some((uid + 1, gid)) })),
            Err(VerifyError::Differs { .. })
        ));
    }
}
