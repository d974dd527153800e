//! `workspaced migrate --from-volumes` against the real engine and the real binary: named volumes made the way the
//! seeds' system makes them (`docker volume create ws-<student>-data`, files written by a container as another
//! user) arrive byte-identical in `<base>/<student>`, owned by 1000:1000 with the folder at 0700; a second run
//! changes nothing; a volume a running container mounts is skipped until it is free; an ambiguous volume and two
//! volumes for one student are reported and not copied. Names are unique per run; volumes and containers are
//! removed at the end.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

const TINY: &str = "workspaced/tiny:1";

#[derive(Debug, PartialEq, Eq, Clone)]
enum Node {
    File { content: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Link { target: PathBuf },
}

/// Every entry below `root` (not `root` itself) with what the migration must keep.
fn contents(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let node = if m.file_type().is_symlink() {
                Node::Link { target: std::fs::read_link(&path).unwrap() }
            } else if m.is_dir() {
                pending.push(path.clone());
                Node::Dir { mode: m.mode() & 0o777 }
            } else {
                Node::File { content: std::fs::read(&path).unwrap(), mode: m.mode() & 0o777 }
            };
            out.insert(rel, node);
        }
    }
    out
}

/// Owner, mode, inode and mtime of every entry, the root included: what "changes nothing" compares.
fn stat_all(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(path) = pending.pop() {
        let m = std::fs::symlink_metadata(&path).unwrap();
        if m.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                pending.push(e.unwrap().path());
            }
        }
        out.insert(path, (m.uid(), m.gid(), m.mode(), m.ino(), m.mtime(), m.mtime_nsec()));
    }
    out
}

fn docker(args: &[&str]) -> Output {
    let out = Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Removes what a run created, even when an assertion failed.
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for v in &self.volumes {
            let _ = Command::new("docker").args(["volume", "rm", "-f", v]).output();
        }
    }
}

/// A volume filled the way the old system's IDE would have: by a container, owned by another user (4242).
fn volume_with(cleanup: &mut Cleanup, name: &str, source: &Path) {
    cleanup.volumes.push(name.to_owned());
    docker(&["volume", "create", name]);
    let mount_src = format!("{}:/src:ro", source.display());
    let mount_vol = format!("{name}:/v");
    docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "0",
        "-v",
        &mount_src,
        "-v",
        &mount_vol,
        TINY,
        "sh",
        "-c",
        "/bin/busybox cp -a /src/. /v/ && /bin/busybox chown -R 4242:4243 /v",
    ]);
}

/// alice's files: nested folders, a symlink, an empty file, 1 MiB of random bytes, odd names and modes.
fn alice_files(dir: &Path) {
    std::fs::create_dir_all(dir.join("src/deep/er")).unwrap();
    std::fs::write(dir.join("src/main.py"), "print('hello')\n").unwrap();
    std::fs::write(dir.join("src/deep/er/notes.md"), "# notes\n").unwrap();
    std::fs::write(dir.join("empty"), "").unwrap();
    let big: Vec<u8> = (0..1024 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(dir.join("big.bin"), big).unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    for odd in ["name with spaces", "quote'\"s", "-dash", "tab\there", "ünïcödé €", "new\nline"] {
        std::fs::write(dir.join(odd), odd.as_bytes()).unwrap();
    }
    std::os::unix::fs::symlink("src/main.py", dir.join("main-link")).unwrap();
    std::os::unix::fs::symlink("missing", dir.join("dangling")).unwrap();
}

struct Env {
    base: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        std::fs::create_dir(&base).unwrap();
        Env { base, _tmp: tmp }
    }

    /// Runs the real binary; no server answers on port 1, so nothing is asked of one.
    fn migrate(&self, extra: &[&str]) -> (bool, serde_json::Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_workspaced"))
            .args(["migrate", "--from-volumes", "--image", TINY, "--json"])
            .args(extra)
            .env("WORKSPACE_BASE_PATH", &self.base)
            .env("DATABASE_URL", format!("sqlite://{}", self._tmp.path().join("db").display()))
            .env("WORKSPACED_URL", "http://127.0.0.1:1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
        (out.status.success(), json, stderr)
    }
}

fn outcomes(json: &serde_json::Value) -> BTreeMap<String, (String, serde_json::Value)> {
    json["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["volume"].as_str().unwrap().to_owned(), (v["outcome"].as_str().unwrap().to_owned(), v.clone())))
        .collect()
}

fn run_id() -> String {
    format!("t{:08x}", rand::random::<u32>())
}

#[test]
fn volumes_arrive_byte_identical_owned_by_the_workspace_user_and_a_second_run_changes_nothing() {
    let run = run_id();
    let env = Env::new();
    let mut cleanup = Cleanup { containers: Vec::new(), volumes: Vec::new() };
    let sources = tempfile::tempdir().unwrap();
    let (alice_src, bob_src, carol_src) =
        (sources.path().join("alice"), sources.path().join("bob"), sources.path().join("carol"));
    alice_files(&alice_src);
    std::fs::create_dir_all(bob_src.join("lab1")).unwrap();
    std::fs::write(bob_src.join("lab1/answer.txt"), "42\n").unwrap();
    std::fs::create_dir_all(&carol_src).unwrap();
    std::fs::write(carol_src.join("essay.txt"), "in progress\n").unwrap();
    let vol = |s: &str| format!("ws-{run}-{s}-data");
    volume_with(&mut cleanup, &vol("alice"), &alice_src);
    volume_with(&mut cleanup, &vol("bob"), &bob_src);
    volume_with(&mut cleanup, &vol("carol"), &carol_src);
    // The old system still runs carol's IDE.
    let old_ide = format!("{run}-old-carol");
    cleanup.containers.push(old_ide.clone());
    let mount = format!("{}:/home/coder/project", vol("carol"));
    docker(&["run", "-d", "--name", &old_ide, "--network", "none", "-v", &mount, TINY]);

    let pattern = format!("ws-{run}-{{student}}-data");
    let started = Instant::now();
    let (ok, json, stderr) = env.migrate(&["--pattern", &pattern]);
    eprintln!("first run: {:?}", started.elapsed());
    let rows = outcomes(&json);
    assert!(!ok, "a skipped volume makes the run fail: {json}");
    assert_eq!(rows.len(), 3, "{json}\n{stderr}");
    assert_eq!(rows[&vol("alice")].0, "migrated", "{json}\n{stderr}");
    assert_eq!(rows[&vol("bob")].0, "migrated", "{json}");
    assert_eq!(rows[&vol("carol")].0, "skipped_in_use", "{json}");
    assert!(rows[&vol("carol")].1["detail"].as_str().unwrap().contains(&old_ide), "{json}");
    assert!(!env.base.join("carol").exists(), "a volume in use is not copied");
    let alice_row = &rows[&vol("alice")].1;
    let alice_files_count = contents(&alice_src).values().filter(|n| matches!(n, Node::File { .. })).count() as u64;
    assert_eq!(alice_row["files"], alice_files_count, "{json}");
    assert_eq!(alice_row["verified_files"], alice_files_count, "every file is checked against the volume");
    eprintln!("alice: {} files, {} bytes", alice_row["files"], alice_row["bytes"]);

    for (student, src) in [("alice", &alice_src), ("bob", &bob_src)] {
        let dir = env.base.join(student);
        assert_eq!(contents(&dir), contents(src), "{student}'s files, byte for byte, links and modes");
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700, "{student}'s folder is closed to others");
        for (path, (uid, gid, ..)) in stat_all(&dir) {
            assert_eq!((uid, gid), (1000, 1000), "{} is owned by the workspace user", path.display());
        }
    }
    let helpers = docker(&["ps", "-aq", "--filter", &format!("label=workspaced.volume-reader={}", vol("alice"))]);
    assert!(helpers.stdout.is_empty(), "no helper container is left behind");

    // The old IDE is gone: carol is copied now, the others are reported as done and left alone.
    docker(&["rm", "-f", &old_ide]);
    let before = stat_all(&env.base.join("alice"));
    let (ok, json, stderr) = env.migrate(&["--pattern", &pattern]);
    let rows = outcomes(&json);
    assert!(ok, "{json}\n{stderr}");
    assert_eq!(rows[&vol("carol")].0, "migrated", "{json}");
    assert_eq!(rows[&vol("alice")].0, "already_migrated", "{json}");
    assert_eq!(rows[&vol("bob")].0, "already_migrated", "{json}");
    assert_eq!(contents(&env.base.join("carol")), contents(&carol_src));
    assert_eq!(stat_all(&env.base.join("alice")), before, "a second run touches nothing");

    // The base folder's own mtime moves with the writability probe every command makes; everything in it stays.
    let below_base = || {
        let mut all = stat_all(&env.base);
        all.remove(&env.base);
        all
    };
    let everything = below_base();
    let (ok, json, _) = env.migrate(&["--pattern", &pattern]);
    assert!(ok, "{json}");
    assert!(outcomes(&json).values().all(|(o, _)| o == "already_migrated"), "{json}");
    assert_eq!(below_base(), everything, "a third run touches nothing either");
    let remove = json["remove_command"].as_str().unwrap();
    assert!(remove.starts_with("docker volume rm ") && remove.contains(&vol("carol")), "{remove}");
    for v in [vol("alice"), vol("bob"), vol("carol")] {
        docker(&["volume", "inspect", &v]);
    }
}

#[test]
fn an_ambiguous_volume_an_invalid_id_and_two_volumes_for_one_student_are_reported_and_not_copied() {
    let run = run_id();
    let env = Env::new();
    let mut cleanup = Cleanup { containers: Vec::new(), volumes: Vec::new() };
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "x").unwrap();
    // `*` then `{student}`: "a-b-c" splits as a / b-c or a-b / c.
    let ambiguous = format!("ws-{run}-x-a-b-c-data");
    let clear = format!("ws-{run}-x-course1-dave-data");
    let invalid = format!("ws-{run}-x-course1-Eve-data");
    for v in [&ambiguous, &clear, &invalid] {
        volume_with(&mut cleanup, v, src.path());
    }
    let (ok, json, stderr) = env.migrate(&["--pattern", &format!("ws-{run}-x-*-{{student}}-data")]);
    let rows = outcomes(&json);
    assert!(!ok, "{json}");
    assert_eq!(rows[&ambiguous].0, "ambiguous", "{json}\n{stderr}");
    assert!(rows[&ambiguous].1["detail"].as_str().unwrap().contains("b-c"), "{json}");
    assert_eq!(rows[&invalid].0, "invalid_student_id", "{json}");
    assert_eq!(rows[&clear].0, "migrated", "{json}");
    for not_there in ["b-c", "c", "Eve", "eve"] {
        assert!(!env.base.join(not_there).exists(), "{not_there} was created");
    }

    let map = src.path().join("map.csv");
    std::fs::write(&map, format!("volume,student_id\n{ambiguous},zed\n{invalid},zed\n")).unwrap();
    let (ok, json, _) = env.migrate(&["--map", map.to_str().unwrap()]);
    let rows = outcomes(&json);
    assert!(!ok, "{json}");
    assert_eq!(rows[&ambiguous].0, "same_student", "{json}");
    assert_eq!(rows[&invalid].0, "same_student", "{json}");
    assert!(!env.base.join("zed").exists());

    std::fs::write(&map, "only-one-field\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["migrate", "--from-volumes", "--map", map.to_str().unwrap()])
        .env("WORKSPACE_BASE_PATH", &env.base)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid_map"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_dry_run_copies_nothing_a_full_folder_needs_merge_and_an_absolute_link_is_refused() {
    let run = run_id();
    let env = Env::new();
    let mut cleanup = Cleanup { containers: Vec::new(), volumes: Vec::new() };
    let src = tempfile::tempdir().unwrap();
    let (erin_src, frank_src) = (src.path().join("erin"), src.path().join("frank"));
    std::fs::create_dir_all(erin_src.join("lab")).unwrap();
    std::fs::write(erin_src.join("lab/from-volume.txt"), "old system\n").unwrap();
    std::fs::write(erin_src.join("same.txt"), "same\n").unwrap();
    std::fs::create_dir_all(frank_src.join(".venv/bin")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/python3", frank_src.join(".venv/bin/python")).unwrap();
    let vol = |s: &str| format!("ws-{run}-{s}-data");
    volume_with(&mut cleanup, &vol("erin"), &erin_src);
    volume_with(&mut cleanup, &vol("frank"), &frank_src);
    // erin already has a folder with work of her own (she used workspaced before the migration).
    let erin = env.base.join("erin");
    std::fs::create_dir_all(&erin).unwrap();
    std::fs::write(erin.join("mine.txt"), "new system\n").unwrap();
    std::fs::write(erin.join("same.txt"), "same\n").unwrap();
    let pattern = format!("ws-{run}-{{student}}-data");

    // The old system, as doctor sees it: both volumes, not migrated.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let engine = workspaced::runtime::docker::DockerRuntime::connect_lazy(
        workspaced::domain::InstanceId::parse("default").unwrap(),
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let p = workspaced::ops::volumes::mapping::VolumePattern::parse(&pattern).unwrap();
    let old = rt.block_on(workspaced::ops::volumes::find_old_system(&engine, &env.base, &p)).unwrap();
    assert_eq!(old.len(), 2, "{old:?}");
    assert!(old.iter().all(|v| !v.migrated), "{old:?}");

    let (ok, json, _) = env.migrate(&["--pattern", &pattern, "--dry-run"]);
    let rows = outcomes(&json);
    assert!(!ok, "erin's folder is in the way: {json}");
    assert_eq!(rows[&vol("erin")].0, "target_not_empty", "{json}");
    assert_eq!(rows[&vol("frank")].0, "would_migrate", "{json}");
    assert!(!env.base.join("frank").exists(), "a dry run copies nothing");

    let (ok, json, _) = env.migrate(&["--pattern", &pattern]);
    let rows = outcomes(&json);
    assert!(!ok);
    assert_eq!(rows[&vol("erin")].0, "target_not_empty", "{json}");
    assert_eq!(rows[&vol("frank")].0, "refused", "{json}");
    assert!(rows[&vol("frank")].1["detail"].as_str().unwrap().contains("absolute"), "{json}");
    assert!(!env.base.join("frank").exists(), "a refused volume leaves no folder");
    assert_eq!(
        std::fs::read_dir(&env.base)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(".import-"))
            .count(),
        0,
        "no temp folder is left"
    );

    let (_, json, _) = env.migrate(&["--pattern", &pattern, "--merge"]);
    let rows = outcomes(&json);
    assert_eq!(rows[&vol("erin")].0, "merged", "{json}");
    assert_eq!(std::fs::read(erin.join("mine.txt")).unwrap(), b"new system\n", "her own work stays");
    assert_eq!(std::fs::read(erin.join("lab/from-volume.txt")).unwrap(), b"old system\n");
    assert_eq!(std::fs::symlink_metadata(erin.join("lab/from-volume.txt")).unwrap().uid(), 1000);
    assert_eq!(std::fs::metadata(&erin).unwrap().mode() & 0o7777, 0o700);
    let old = rt.block_on(workspaced::ops::volumes::find_old_system(&engine, &env.base, &p)).unwrap();
    assert_eq!(old.iter().filter(|v| v.migrated).count(), 1, "{old:?}");
}
