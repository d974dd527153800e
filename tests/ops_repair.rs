//! `workspaced repair` with the real binary on a real file system: files, folders and symlinks of other owners
//! inside a student's folder end up owned by 1000:1000; a symlink's target outside the folder keeps its owner; a
//! file system mounted inside the folder is not entered; another student is left alone until asked; a second run
//! changes nothing. The doctor's sample sees the wrong owners before and none after, and says when it stopped early.

use std::os::unix::fs::{lchown, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use workspaced::ops::repair::sample_ownership;

fn owners_below(root: &Path) -> Vec<(PathBuf, u32, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let m = std::fs::symlink_metadata(&path).unwrap();
        if m.is_dir() && m.dev() == std::fs::metadata(root).unwrap().dev() {
            for e in std::fs::read_dir(&path).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
        out.push((path, m.uid(), m.gid()));
    }
    out
}

fn repair(base: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .arg("repair")
        .args(args)
        .arg("--json")
        .env("WORKSPACE_BASE_PATH", base)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json, stderr)
}

/// Unmounts the tmpfs even when an assertion failed.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn repair_hands_everything_to_the_workspace_user_without_following_links_or_crossing_mounts() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let alice = base.join("alice");
    let bob = base.join("bob");
    std::fs::create_dir_all(alice.join("src/deep")).unwrap();
    std::fs::create_dir_all(&bob).unwrap();
    std::fs::write(alice.join("src/main.py"), "print(1)\n").unwrap();
    std::fs::write(alice.join("src/deep/data.csv"), "a,b\n").unwrap();
    std::fs::write(alice.join("empty"), "").unwrap();
    std::fs::write(bob.join("notes.txt"), "bob\n").unwrap();
    // Outside the base: a link inside alice's folder points at it; its owner must stay.
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "not alice's").unwrap();
    lchown(&outside, Some(5555), Some(5556)).unwrap();
    std::os::unix::fs::symlink(&outside, alice.join("escape")).unwrap();
    std::os::unix::fs::symlink("src/main.py", alice.join("inside-link")).unwrap();
    for p in owners_below(&alice).into_iter().map(|(p, ..)| p) {
        lchown(&p, Some(4242), Some(4243)).unwrap();
    }
    lchown(alice.join("src/deep"), Some(0), Some(0)).unwrap();
    lchown(bob.join("notes.txt"), Some(4242), Some(4243)).unwrap();
    // Another file system mounted inside alice's folder: not entered.
    let mnt = alice.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&mnt).status().unwrap();
    assert!(status.success(), "mount tmpfs");
    let _unmount = Unmount(mnt.clone());
    std::fs::write(mnt.join("other-fs"), "x").unwrap();
    lchown(mnt.join("other-fs"), Some(7777), Some(7777)).unwrap();

    let before = sample_ownership(&base, 1000, 1000, 10_000).unwrap();
    assert!(before.complete && before.wrong > 0, "{before:?}");
    let partial = sample_ownership(&base, 1000, 1000, 3).unwrap();
    assert_eq!((partial.checked, partial.complete), (3, false), "the sample says when it stopped early");

    let wrong_in_alice = owners_below(&alice).iter().filter(|(p, u, g)| *p != mnt && (*u, *g) != (1000, 1000)).count();
    let (ok, json, stderr) = repair(&base, &["alice"]);
    assert!(ok, "{json}\n{stderr}");
    let row = &json["students"][0];
    assert_eq!(row["student_id"], "alice");
    // The mount point's own inode is the tmpfs root, on the other device: listed as skipped, not changed.
    assert_eq!(row["changed"], wrong_in_alice as u64, "{json}");
    assert!(row["skipped"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().starts_with("mnt")), "{json}");
    for (path, uid, gid) in owners_below(&alice) {
        if path == mnt {
            continue;
        }
        assert_eq!((uid, gid), (1000, 1000), "{}", path.display());
    }
    let target = std::fs::metadata(&outside).unwrap();
    assert_eq!((target.uid(), target.gid()), (5555, 5556), "a symlink's target outside is never changed");
    let other_fs = std::fs::symlink_metadata(mnt.join("other-fs")).unwrap();
    assert_eq!(other_fs.uid(), 7777, "another file system is not entered");
    assert_eq!(std::fs::metadata(&alice).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(std::fs::symlink_metadata(bob.join("notes.txt")).unwrap().uid(), 4242, "bob was not asked for");

    let (ok, json, _) = repair(&base, &[]);
    assert!(ok, "{json}");
    assert_eq!(std::fs::symlink_metadata(bob.join("notes.txt")).unwrap().uid(), 1000);
    let (ok, json, _) = repair(&base, &[]);
    assert!(ok, "{json}");
    for row in json["students"].as_array().unwrap() {
        assert_eq!(row["changed"], 0, "a second run changes nothing: {json}");
    }
    let after = sample_ownership(&base, 1000, 1000, 10_000).unwrap();
    assert_eq!(after.wrong, 0, "{after:?}");

    let (ok, _, stderr) = repair(&base, &["../etc"]);
    assert!(!ok && stderr.contains("invalid student id"), "{stderr}");
    let (ok, json, _) = repair(&base, &["nobody"]);
    assert!(!ok, "a missing folder is an error");
    assert_eq!(json["students"][0]["error"]["code"], "not_found", "{json}");
}
