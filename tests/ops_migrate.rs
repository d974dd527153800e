//! Migration between two real base paths with the real binary: every file arrives with its content, mode, owner,
//! mtime and links, and is verified; a run killed half-way is finished by a rerun that copies only what is missing;
//! a dry run copies nothing. (A start waiting for a student's copy is tested against the service in `tests/api`.)

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, PartialEq, Eq)]
enum Node {
    File { content: Vec<u8>, mode: u32, uid: u32, gid: u32, mtime: (i64, i64) },
    Dir { mode: u32, uid: u32, gid: u32, mtime: i64 },
    Link { target: PathBuf, uid: u32 },
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let node = if m.file_type().is_symlink() {
                Node::Link { target: std::fs::read_link(&path).unwrap(), uid: m.uid() }
            } else if m.is_dir() {
                pending.push(path.clone());
                Node::Dir { mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), mtime: m.mtime() }
            } else {
                Node::File {
                    content: std::fs::read(&path).unwrap(),
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                }
            };
            out.insert(rel, node);
        }
    }
    out
}

/// A student folder as the service makes it, with mixed content: small and larger files, odd modes, a read-only
/// folder, links inside and to a missing target, a file owned by another user.
fn populate(base: &Path, student: &str, large_files: usize, large_size: usize) {
    let root = base.join(student);
    std::fs::create_dir_all(root.join("src/deep/er")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(root.join("ro")).unwrap();
    std::fs::write(root.join("src/main.py"), "print('hello')\n").unwrap();
    std::fs::write(root.join("src/deep/er/empty"), "").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(root.join("ro/notes.txt"), "read only").unwrap();
    std::os::unix::fs::symlink("src/main.py", root.join("main-link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    for i in 0..large_files {
        let content: Vec<u8> = (0..large_size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
        std::fs::write(root.join(format!("data/blob-{i:04}.bin")), content).unwrap();
    }
    std::os::unix::fs::chown(root.join("src/main.py"), Some(1234), Some(4321)).unwrap();
    for p in ["", "src", "src/deep", "src/deep/er", "data", "ro", "run.sh", "ro/notes.txt", "main-link", "dangling"] {
        let _ = std::os::unix::fs::lchown(root.join(p), Some(1000), Some(1000));
    }
    std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn cli(from: &Path, to: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_workspaced"));
    cmd.args(["migrate", "--to"]).arg(to).args(extra);
    // No server answers on port 1: the migration runs in the CLI's own process.
    cmd.env("WORKSPACE_BASE_PATH", from).env("WORKSPACED_URL", "http://127.0.0.1:1");
    cmd
}

fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn student_lines(lines: &[serde_json::Value]) -> BTreeMap<String, serde_json::Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "student")
        .map(|l| (l["report"]["student_id"].as_str().unwrap().to_owned(), l["report"].clone()))
        .collect()
}

#[test]
fn every_folder_arrives_verified_with_modes_owners_times_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("local"), tmp.path().join("efs"));
    std::fs::create_dir_all(&from).unwrap();
    std::fs::create_dir_all(&to).unwrap();
    populate(&from, "alice", 3, 100_000);
    populate(&from, "bob", 1, 10);
    std::fs::create_dir(from.join(".import-leftover")).unwrap(); // not a student: ignored

    let dry = cli(&from, &to, &["--dry-run", "--json"]).output().unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let lines = json_lines(&dry.stdout);
    assert_eq!(lines[0]["type"], "plan");
    assert_eq!(lines[0]["students"], 2);
    assert_eq!(student_lines(&lines)["alice"]["outcome"], "would_migrate");
    assert_eq!(std::fs::read_dir(&to).unwrap().count(), 0, "a dry run writes nothing");

    let out = cli(&from, &to, &["--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = json_lines(&out.stdout);
    let students = student_lines(&lines);
    assert_eq!(students["alice"]["outcome"], "migrated");
    assert_eq!(students["alice"]["files"], 7);
    assert_eq!(students["alice"]["verified_files"], 7);
    let done = lines.iter().find(|l| l["type"] == "done").unwrap();
    assert!(done["next_step"].as_str().unwrap().contains("WORKSPACE_BASE_PATH="), "{done}");
    for s in ["alice", "bob"] {
        assert_eq!(snapshot(&from.join(s)), snapshot(&to.join(s)), "{s}");
        let (a, b) = (std::fs::metadata(from.join(s)).unwrap(), std::fs::metadata(to.join(s)).unwrap());
        assert_eq!((b.mode() & 0o7777, b.uid()), (a.mode() & 0o7777, a.uid()));
    }
    assert!(!to.join(".import-leftover").exists());
    assert!(from.join("alice/src/main.py").exists(), "the source is never deleted");

    // A second run finds everything done and copies nothing.
    let again = cli(&from, &to, &["--json"]).output().unwrap();
    assert!(again.status.success());
    assert_eq!(student_lines(&json_lines(&again.stdout))["alice"]["outcome"], "already_done");
    let dry_again = cli(&from, &to, &["--dry-run", "--json"]).output().unwrap();
    assert_eq!(student_lines(&json_lines(&dry_again.stdout))["alice"]["outcome"], "already_done");

    // A change in the source after the copy is migrated again.
    std::fs::write(from.join("bob/new.txt"), "later").unwrap();
    let third = cli(&from, &to, &["--json"]).output().unwrap();
    let students = student_lines(&json_lines(&third.stdout));
    assert_eq!(students["bob"]["outcome"], "migrated");
    assert_eq!(students["bob"]["copied_files"], 1, "only the new file is copied");
    assert_eq!(std::fs::read_to_string(to.join("bob/new.txt")).unwrap(), "later");
}

#[test]
fn a_migration_killed_half_way_is_finished_and_verified_by_a_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let (from, to) = (tmp.path().join("local"), tmp.path().join("efs"));
    std::fs::create_dir_all(&from).unwrap();
    std::fs::create_dir_all(&to).unwrap();
    // Each file is synced before it is renamed into place, so copying 400 files takes long enough to kill it.
    populate(&from, "carol", 400, 256 * 1024);

    let mut child = cli(&from, &to, &["--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let data = to.join("carol/data");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copied = std::fs::read_dir(&data).map(|d| d.count()).unwrap_or(0);
        if copied >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "the copy did not start");
        assert!(child.try_wait().unwrap().is_none(), "the migration finished before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
    let present = std::fs::read_dir(&data).unwrap().count();
    assert!(present >= 20, "killed half-way: {present}");
    assert!(!to.join(".workspaced-migrate/carol.done").exists(), "not marked done");

    let out = cli(&from, &to, &["--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let carol = &student_lines(&json_lines(&out.stdout))["carol"];
    assert_eq!(carol["outcome"], "migrated");
    assert_eq!(carol["verified_files"], 404);
    let copied = carol["copied_files"].as_u64().unwrap();
    assert!(copied < 404, "the rerun copies only what is missing: {copied}");
    assert_eq!(snapshot(&from.join("carol")), snapshot(&to.join("carol")));
    let partial = std::fs::read_dir(&data)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".wsd-partial"))
        .count();
    assert_eq!(partial, 0, "no partial file is left");
}

#[test]
fn a_target_that_is_missing_or_inside_the_source_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let from = tmp.path().join("local");
    std::fs::create_dir_all(from.join("inner")).unwrap();
    populate(&from, "dave", 0, 0);
    let missing = cli(&from, &tmp.path().join("not-mounted"), &[]).output().unwrap();
    assert!(!missing.status.success());
    assert!(!tmp.path().join("not-mounted").exists(), "a missing target is not created");
    let inside = cli(&from, &from.join("inner"), &[]).output().unwrap();
    assert!(!inside.status.success());
    assert!(String::from_utf8_lossy(&inside.stderr).contains("inside"), "{}", String::from_utf8_lossy(&inside.stderr));
}
