//! Export and import of student folders on the real file system: a round trip reproduces every byte, mode, mtime
//! and link; every kind of malicious archive is refused with the target folder untouched and nothing written
//! outside; the HTTP handler streams the same archive; the CLI commands work end to end.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flate2::write::GzEncoder;
use tar::{EntryType, Header};
use workspaced::domain::StudentId;
use workspaced::ops::archive::export_to_writer;
use workspaced::ops::import::{import_archive, ImportError, ImportOptions};

const UID: u32 = 1000;
const GID: u32 = 1000;

fn options() -> ImportOptions {
    ImportOptions { uid: UID, gid: GID, max_bytes: 64 * 1024 * 1024, max_entries: 100_000, keep_previous: false }
}

fn id(s: &str) -> StudentId {
    StudentId::parse(s).unwrap()
}

/// Everything observable about a tree, keyed by relative path (the root itself excluded).
#[derive(Debug, PartialEq, Eq)]
enum Node {
    File { content: Vec<u8>, mode: u32, mtime: i64 },
    Dir { mode: u32, mtime: i64 },
    Link { target: PathBuf, mtime: i64 },
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let node = if meta.file_type().is_symlink() {
                Node::Link { target: std::fs::read_link(&path).unwrap(), mtime: meta.mtime() }
            } else if meta.is_dir() {
                pending.push(path.clone());
                Node::Dir { mode: meta.mode() & 0o7777, mtime: meta.mtime() }
            } else {
                Node::File { content: std::fs::read(&path).unwrap(), mode: meta.mode() & 0o7777, mtime: meta.mtime() }
            };
            out.insert(rel, node);
        }
    }
    out
}

fn set_mtime(path: &Path, secs: u64) {
    let f = std::fs::File::open(path).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).unwrap();
}

fn set_link_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, path, &t, &t, nix::sys::stat::UtimensatFlags::NoFollowSymlink)
        .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A workspace with what students produce: text and binary files of awkward sizes, modes from 0400 to 0755, nested
/// and read-only folders, relative and dangling symlinks, a hardlink pair, long and non-ASCII names.
fn populate(root: &Path) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(root.join("src/pkg/deep/deeper")).unwrap();
    std::fs::create_dir_all(root.join("read-only")).unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    std::fs::write(root.join("one.txt"), b"1").unwrap();
    std::fs::write(root.join("src/main.py"), b"print('hello')\n").unwrap();
    let binary: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(root.join("src/pkg/blob.bin"), &binary).unwrap();
    std::fs::write(root.join("src/pkg/deep/deeper/block.dat"), vec![7u8; 4096]).unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho run\n").unwrap();
    std::fs::write(root.join("secret.key"), b"k").unwrap();
    std::fs::write(root.join("read-only/frozen.txt"), b"frozen").unwrap();
    let long = format!("src/{}.txt", "very-long-file-name-".repeat(8));
    std::fs::write(root.join(&long), b"long name").unwrap();
    std::fs::write(root.join("src/résumé with spaces.md"), "é".repeat(100)).unwrap();
    std::fs::hard_link(root.join("src/main.py"), root.join("src/main-hardlink.py")).unwrap();
    symlink("pkg/blob.bin", root.join("src/blob-link")).unwrap();
    symlink("../src", root.join("read-only/src-link")).unwrap();
    symlink("does-not-exist", root.join("dangling")).unwrap();
    symlink("src/x", root.join("nested-target")).unwrap();
    chmod(&root.join("run.sh"), 0o755);
    chmod(&root.join("secret.key"), 0o600);
    chmod(&root.join("read-only/frozen.txt"), 0o400);
    chmod(&root.join("src/pkg"), 0o750);
    // Times: files and links first, folders last (writing in a folder moves its mtime).
    let mut t = 1_600_000_000u64;
    for rel in ["empty.txt", "one.txt", "src/main.py", "src/pkg/blob.bin", "run.sh", "secret.key", &long] {
        t += 3600;
        set_mtime(&root.join(rel), t);
    }
    set_link_mtime(&root.join("src/blob-link"), 1_500_000_000);
    set_link_mtime(&root.join("dangling"), 1_500_000_100);
    chmod(&root.join("read-only"), 0o555);
    for (rel, secs) in
        [("src/pkg/deep/deeper", 1_400_000_000), ("src/pkg", 1_400_000_100), ("read-only", 1_400_000_200)]
    {
        set_link_mtime(&root.join(rel), secs);
    }
}

fn export_to_file(dir: &Path, file: &Path) -> workspaced::ops::archive::ExportStats {
    let out = std::fs::File::create(file).unwrap();
    let mut calls = 0u64;
    let stats = export_to_writer(dir, std::io::BufWriter::new(out), |_| calls += 1).unwrap();
    assert!(calls > 0, "progress was reported");
    stats
}

fn leftovers(base: &Path) -> Vec<String> {
    std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn an_export_imported_into_another_student_reproduces_every_file_mode_mtime_and_link() {
    let base = tempfile::tempdir().unwrap();
    let alice = base.path().join("alice");
    std::fs::create_dir(&alice).unwrap();
    populate(&alice);
    // An owner that is not the workspace user, to see that the archive records it.
    std::os::unix::fs::chown(alice.join("one.txt"), Some(1234), Some(5678)).unwrap();
    // bob has old contents, which the import replaces.
    let bob = base.path().join("bob");
    std::fs::create_dir(&bob).unwrap();
    std::fs::write(bob.join("old.txt"), b"old").unwrap();

    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("alice.tar.gz");
    let stats = export_to_file(&alice, &archive);
    assert_eq!((stats.symlinks, stats.hardlinks), (4, 1), "{stats:?}");
    assert!(stats.skipped.is_empty() && stats.changed.is_empty(), "{stats:?}");

    // Entries are relative and carry numeric owners, mode and mtime.
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&archive).unwrap()));
    let mut seen_owner = false;
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        assert!(path.is_relative() && !path.starts_with(".."), "{path:?}");
        if path == Path::new("one.txt") {
            assert_eq!((entry.header().uid().unwrap(), entry.header().gid().unwrap()), (1234, 5678));
            seen_owner = true;
        }
    }
    assert!(seen_owner);

    let report = import_archive(base.path(), &id("bob"), std::fs::File::open(&archive).unwrap(), &options()).unwrap();
    assert_eq!(report.dir, std::fs::canonicalize(&bob).unwrap());
    assert!(report.previous_kept.is_none());

    assert_eq!(snapshot(&alice), snapshot(&bob), "bob's folder differs from alice's");
    assert!(!bob.join("old.txt").exists(), "the previous contents are gone");
    let root = std::fs::metadata(&bob).unwrap();
    assert_eq!((root.uid(), root.gid(), root.mode() & 0o7777), (UID, GID, 0o700));
    for (rel, _) in snapshot(&bob) {
        let m = std::fs::symlink_metadata(bob.join(&rel)).unwrap();
        assert_eq!((m.uid(), m.gid()), (UID, GID), "{rel:?} is not owned by the workspace user");
    }
    let a = std::fs::metadata(bob.join("src/main.py")).unwrap();
    let b = std::fs::metadata(bob.join("src/main-hardlink.py")).unwrap();
    assert_eq!(a.ino(), b.ino(), "the hardlink pair stays one inode");
    assert!(leftovers(base.path()).is_empty(), "temp or previous folders left: {:?}", leftovers(base.path()));
}

#[test]
fn an_import_into_a_student_without_a_folder_creates_it_and_keep_previous_keeps_the_old_one() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"new").unwrap();
    let out = tempfile::tempdir().unwrap();
    let archive = out.path().join("a.tar.gz");
    export_to_file(&src, &archive);

    import_archive(base.path(), &id("carol"), std::fs::File::open(&archive).unwrap(), &options()).unwrap();
    assert_eq!(std::fs::read(base.path().join("carol/a.txt")).unwrap(), b"new");

    std::fs::write(base.path().join("carol/a.txt"), b"changed").unwrap();
    let keep = ImportOptions { keep_previous: true, ..options() };
    let report = import_archive(base.path(), &id("carol"), std::fs::File::open(&archive).unwrap(), &keep).unwrap();
    let previous = report.previous_kept.expect("kept");
    assert!(previous.file_name().unwrap().to_string_lossy().starts_with(".previous-carol-"));
    assert_eq!(std::fs::read(previous.join("a.txt")).unwrap(), b"changed");
    assert_eq!(std::fs::read(base.path().join("carol/a.txt")).unwrap(), b"new");
}

// ---- malicious archives -------------------------------------------------------------------------------------

/// One raw entry, written with the low-level header API so that nothing sanitises the name or the link.
struct Raw {
    path: String,
    kind: EntryType,
    link: Option<String>,
    data: Vec<u8>,
}

fn raw(path: &str, kind: EntryType) -> Raw {
    Raw { path: path.to_owned(), kind, link: None, data: Vec::new() }
}

fn file(path: &str, data: &[u8]) -> Raw {
    Raw { path: path.to_owned(), kind: EntryType::Regular, link: None, data: data.to_vec() }
}

fn link(path: &str, kind: EntryType, target: &str) -> Raw {
    Raw { path: path.to_owned(), kind, link: Some(target.to_owned()), data: Vec::new() }
}

fn build(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for e in entries {
        let mut h = Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
            if let Some(l) = &e.link {
                old.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_entry_type(e.kind);
        h.set_mode(if e.kind == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        builder.append(&h, e.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A base with a populated `bob` and an `outside` folder beside the base, to see that nothing changes.
struct Scene {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    outside: PathBuf,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(base.join("bob/src")).unwrap();
        std::fs::write(base.join("bob/src/keep.py"), b"print('keep')\n").unwrap();
        std::fs::write(base.join("bob/notes.txt"), b"notes").unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("target.txt"), b"outside").unwrap();
        Self { _tmp: tmp, base, outside }
    }

    /// Imports `archive` into bob with `opts`, expects a refusal, and checks that nothing changed anywhere.
    fn assert_refused(&self, what: &str, archive: Vec<u8>, opts: &ImportOptions) -> ImportError {
        let before_bob = snapshot(&self.base.join("bob"));
        let before_outside = snapshot(&self.outside);
        let parent = self.base.parent().unwrap();
        let before_parent: Vec<_> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        let err = import_archive(&self.base, &id("bob"), archive.as_slice(), opts)
            .err()
            .unwrap_or_else(|| panic!("{what}: the archive was accepted"));
        assert!(
            matches!(
                err,
                ImportError::Refused { .. } | ImportError::TooLarge { .. } | ImportError::TooManyEntries { .. }
            ),
            "{what}: refused for the wrong reason: {err}"
        );
        assert_eq!(snapshot(&self.base.join("bob")), before_bob, "{what}: bob's folder changed");
        assert_eq!(snapshot(&self.outside), before_outside, "{what}: something was written outside the base");
        assert_eq!(std::fs::metadata(self.outside.join("target.txt")).unwrap().nlink(), 1, "{what}: hardlinked");
        let after_parent: Vec<_> = std::fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(before_parent, after_parent, "{what}: a file appeared beside the base");
        assert!(!Path::new("/tmp/workspaced-pwned").exists(), "{what}: wrote to an absolute path");
        assert!(leftovers(&self.base).is_empty(), "{what}: left {:?}", leftovers(&self.base));
        err
    }
}

#[test]
fn archives_with_absolute_or_parent_paths_are_refused_and_change_nothing() {
    let scene = Scene::new();
    let cases = [
        ("absolute path", build(&[file("ok.txt", b"x"), file("/tmp/workspaced-pwned", b"x")])),
        ("leading ..", build(&[file("../outside/new.txt", b"x")])),
        ("inner ..", build(&[raw("a", EntryType::Directory), file("a/../../outside/new.txt", b"x")])),
        ("dot-dot overwrite", build(&[file("../outside/target.txt", b"changed")])),
    ];
    for (what, archive) in cases {
        let err = scene.assert_refused(what, archive, &options());
        let msg = err.to_string();
        assert!(msg.contains("absolute") || msg.contains(".."), "{what}: {msg}");
    }
}

#[test]
fn symlinks_that_escape_are_refused_before_anything_is_written_through_them() {
    let scene = Scene::new();
    let outside = scene.outside.to_str().unwrap().to_owned();
    let cases = [
        (
            "relative escape then write through it",
            build(&[link("escape", EntryType::Symlink, "../../outside"), file("escape/pwned.txt", b"x")]),
        ),
        (
            "absolute target then write through it",
            build(&[link("abs", EntryType::Symlink, &outside), file("abs/pwned.txt", b"x")]),
        ),
        (
            "escape from a subfolder",
            build(&[raw("d", EntryType::Directory), link("d/up", EntryType::Symlink, "../../x")]),
        ),
        (
            "chain through an inside link",
            build(&[
                raw("d", EntryType::Directory),
                link("d/up", EntryType::Symlink, ".."),
                link("d/up2", EntryType::Symlink, "up/.."),
                file("d/up2/outside/pwned.txt", b"x"),
            ]),
        ),
        (
            // Lexically fine when it arrives; the link it goes through comes later.
            "chain completed by a later link",
            build(&[
                raw("d", EntryType::Directory),
                link("d/l2", EntryType::Symlink, "up/.."),
                link("d/up", EntryType::Symlink, ".."),
            ]),
        ),
        (
            "write through an inside symlink",
            build(&[
                raw("real", EntryType::Directory),
                link("alias", EntryType::Symlink, "real"),
                file("alias/f", b"x"),
            ]),
        ),
    ];
    for (what, archive) in cases {
        scene.assert_refused(what, archive, &options());
    }
}

#[test]
fn hardlinks_that_escape_devices_and_fifos_are_refused() {
    let scene = Scene::new();
    let target = scene.outside.join("target.txt");
    let abs = target.to_str().unwrap().to_owned();
    let cases = [
        ("hardlink to ..", build(&[link("h", EntryType::Link, "../outside/target.txt")])),
        ("hardlink to an absolute path", build(&[link("h", EntryType::Link, &abs)])),
        ("hardlink to /etc/passwd", build(&[link("h", EntryType::Link, "/etc/passwd")])),
        ("hardlink to a missing entry", build(&[link("h", EntryType::Link, "nope")])),
        ("character device", build(&[file("ok", b"x"), raw("null", EntryType::Char)])),
        ("block device", build(&[raw("disk", EntryType::Block)])),
        ("fifo", build(&[raw("pipe", EntryType::Fifo)])),
    ];
    for (what, archive) in cases {
        scene.assert_refused(what, archive, &options());
    }
}

#[test]
fn archives_larger_than_the_limit_are_refused_while_extracting() {
    let scene = Scene::new();
    let limit = ImportOptions { max_bytes: 1024 * 1024, ..options() };
    let big = vec![0u8; 2 * 1024 * 1024];
    let err = scene.assert_refused("one big file", build(&[file("big", &big)]), &limit);
    assert!(matches!(err, ImportError::TooLarge { limit: 1048576 }), "{err}");
    let chunk = vec![1u8; 300 * 1024];
    let many: Vec<Raw> = (0..5).map(|i| file(&format!("part{i}"), &chunk)).collect();
    let err = scene.assert_refused("many files adding up", build(&many), &limit);
    assert!(matches!(err, ImportError::TooLarge { .. }), "{err}");
}

#[test]
fn archives_with_more_entries_than_the_limit_are_refused_and_repeated_directories_are_cheap() {
    let scene = Scene::new();
    let limit = ImportOptions { max_entries: 10, ..options() };
    let many: Vec<Raw> = (0..11).map(|i| file(&format!("f{i}"), b"x")).collect();
    let err = scene.assert_refused("eleven entries", build(&many), &limit);
    assert!(matches!(err, ImportError::TooManyEntries { limit: 10 }), "{err}");
    // The same directory listed many times keeps one record (it used to be a list searched per entry).
    let repeated: Vec<Raw> = (0..5_000).map(|_| raw("d/", EntryType::Directory)).collect();
    let report = import_archive(&scene.base, &id("bob"), build(&repeated).as_slice(), &options()).unwrap();
    assert_eq!(report.entries, 5_000);
    assert!(report.dir.join("d").is_dir());
}

// ---- HTTP and CLI -------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_http_export_streams_an_archive_that_imports_identically() {
    use workspaced::http::AppState;
    use workspaced::lifecycle::Lifecycle;

    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(base.join("alice")).unwrap();
    populate(&base.join("alice"));
    let settings = workspaced::config::Settings {
        base_path: base.clone(),
        database_url: format!("sqlite://{}", tmp.path().join("w.db").display()),
        ..Default::default()
    };
    let store = workspaced::store::Store::connect(&settings.database_url).await.unwrap();
    let runtime =
        workspaced::runtime::docker::DockerRuntime::connect_lazy(settings.instance.clone(), Duration::from_secs(5))
            .unwrap();
    let lifecycle =
        Lifecycle::new(Arc::new(settings), store, Arc::new(runtime), Arc::new(workspaced::clock::SystemClock));
    let state = Arc::new(AppState::build(Arc::new(lifecycle)).unwrap());
    let app = axum::Router::new()
        .route("/api/workspaces/{id}/export", axum::routing::get(workspaced::http::export::export_handler))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let resp = client.get(format!("http://{addr}/api/workspaces/alice/export")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/gzip");
    let disposition = resp.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=\"alice-") && disposition.ends_with(".tar.gz\""));
    let body = resp.bytes().await.unwrap();
    assert!(body.len() > 1000);

    let report = tokio::task::spawn_blocking({
        let base = base.clone();
        move || import_archive(&base, &id("dave"), body.as_ref(), &options())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(snapshot(&base.join("alice")), snapshot(&report.dir));

    let missing = client.get(format!("http://{addr}/api/workspaces/nobody/export")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let bad = client.get(format!("http://{addr}/api/workspaces/..%2Fetc/export")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_student_id");
    server.abort();
}

fn cli(base: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(args)
        .env("WORKSPACE_BASE_PATH", base)
        // Nothing listens there: the commands proceed as with a stopped server.
        .env("WORKSPACED_URL", "http://127.0.0.1:9")
        .env_remove("WORKSPACED_CONFIG")
        .current_dir(base)
        .output()
        .unwrap()
}

#[test]
fn the_cli_exports_to_a_file_and_to_a_pipe_and_imports_either() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(base.join("alice")).unwrap();
    populate(&base.join("alice"));
    let file = tmp.path().join("alice.tar.gz");

    let out = cli(&base, &["export", "alice", "-o", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported alice"));
    assert!(!tmp.path().join("alice.tar.gz.part").exists());

    // stdout is a pipe here, so without -o the archive goes there.
    let piped = cli(&base, &["export", "alice"]);
    assert!(piped.status.success());
    assert_eq!(&piped.stdout[..2], &[0x1f, 0x8b], "gzip magic on stdout");

    let out = cli(&base, &["import", "erin", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&base.join("alice")), snapshot(&base.join("erin")));

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["import", "frank", "-"])
        .env("WORKSPACE_BASE_PATH", &base)
        .env("WORKSPACED_URL", "http://127.0.0.1:9")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&piped.stdout).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&base.join("alice")), snapshot(&base.join("frank")));

    let refused = cli(&base, &["import", "erin", file.to_str().unwrap(), "--max-bytes", "1m"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("more than 1048576 bytes"));
    assert_eq!(snapshot(&base.join("alice")), snapshot(&base.join("erin")), "a refused import changes nothing");
}

#[test]
fn the_end_of_term_archive_is_verified_checksummed_restorable_and_never_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    for s in ["alice", "bob"] {
        populate(&base.join(s));
    }
    let out = tmp.path().join("term-2026");
    let run = cli(&base, &["archive", "-o", out.to_str().unwrap(), "--all"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(text.contains("alice:") && text.contains("bob:") && text.contains("verified"), "{text}");
    // SHA256SUMS in the format sha256sum reads, and it agrees.
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 2, "{sums}");
    let check = std::process::Command::new("sha256sum").arg("-c").arg("SHA256SUMS").current_dir(&out).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    // An archive is an export: import restores the folder exactly.
    let restored = cli(&base, &["import", "carol", out.join("alice.tar.gz").to_str().unwrap()]);
    assert!(restored.status.success(), "{}", String::from_utf8_lossy(&restored.stderr));
    assert_eq!(snapshot(&base.join("alice")), snapshot(&base.join("carol")));
    // Never overwritten; an unknown student is reported; both make the exit code non-zero.
    let before = std::fs::read(out.join("alice.tar.gz")).unwrap();
    let again = cli(&base, &["archive", "-o", out.to_str().unwrap(), "alice", "nobody"]);
    assert!(!again.status.success());
    let text = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(text.contains("never overwritten") && text.contains("no folder for nobody"), "{text}");
    assert_eq!(std::fs::read(out.join("alice.tar.gz")).unwrap(), before);
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".partial")));
    // Neither students nor --all, both, or a bad id: refused before anything is written.
    for args in [vec![], vec!["--all", "alice"], vec!["../etc"]] {
        let refused = cli(&base, &[&["archive", "-o", out.to_str().unwrap()][..], &args[..]].concat());
        assert!(!refused.status.success(), "{args:?} was accepted");
    }
    assert_eq!(std::fs::read_to_string(out.join("SHA256SUMS")).unwrap(), sums, "nothing added by refusals");
}

#[test]
fn an_export_carries_the_ide_state_and_an_import_puts_it_back_in_the_state_folder() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    std::fs::create_dir_all(base.join("alice/src")).unwrap();
    std::fs::write(base.join("alice/src/main.py"), "print(1)\n").unwrap();
    // A student's own entry with the reserved name is left out, not taken for the state.
    std::fs::create_dir(base.join("alice/.workspaced-ide-state")).unwrap();
    std::fs::write(base.join("alice/.workspaced-ide-state/fake.json"), "fake").unwrap();
    std::fs::create_dir_all(base.join(".ide-state/alice/User")).unwrap();
    std::fs::write(base.join(".ide-state/alice/User/settings.json"), "{\"theme\": \"light\"}").unwrap();
    std::fs::create_dir_all(base.join(".ide-state/carol")).unwrap();
    std::fs::write(base.join(".ide-state/carol/old.json"), "old").unwrap();

    let archive = base.parent().unwrap().join("alice.tar.gz");
    let out = std::fs::File::create(&archive).unwrap();
    let state = base.join(".ide-state/alice");
    let stats = workspaced::ops::archive::export_student(&base.join("alice"), Some(&state), out, |_| {}).unwrap();
    assert!(stats.skipped.iter().any(|s| s.starts_with(".workspaced-ide-state")), "{:?}", stats.skipped);

    let report = import_archive(base, &id("carol"), std::fs::File::open(&archive).unwrap(), &options()).unwrap();
    assert!(report.dir.ends_with("carol"));
    assert_eq!(std::fs::read_to_string(base.join("carol/src/main.py")).unwrap(), "print(1)\n");
    assert!(!base.join("carol/.workspaced-ide-state").exists(), "the state stays out of the project folder");
    let settings = base.join(".ide-state/carol/User/settings.json");
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), "{\"theme\": \"light\"}");
    assert!(!base.join(".ide-state/carol/old.json").exists(), "the state was replaced, not merged");
    let meta = std::fs::metadata(base.join(".ide-state/carol")).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (UID, GID, 0o700));
    assert_eq!(std::fs::metadata(&settings).unwrap().uid(), UID);
    let state_leftovers: Vec<_> = std::fs::read_dir(base.join(".ide-state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(state_leftovers.is_empty(), "{state_leftovers:?}");
    assert_eq!(leftovers(base), vec![".ide-state".to_owned()]);
}

#[test]
fn an_export_without_ide_state_imports_and_leaves_the_state_folder_alone() {
    let s = Scene::new();
    std::fs::create_dir_all(s.base.join(".ide-state/bob")).unwrap();
    std::fs::write(s.base.join(".ide-state/bob/settings.json"), "mine").unwrap();
    let archive = build(&[raw("src/", EntryType::Directory), file("src/new.py", b"new")]);
    import_archive(&s.base, &id("bob"), archive.as_slice(), &options()).unwrap();
    assert_eq!(std::fs::read_to_string(s.base.join("bob/src/new.py")).unwrap(), "new");
    assert_eq!(std::fs::read_to_string(s.base.join(".ide-state/bob/settings.json")).unwrap(), "mine");
}

#[test]
fn a_symlink_from_the_ide_state_into_the_project_folder_is_refused() {
    let s = Scene::new();
    let archive = build(&[
        raw("src/", EntryType::Directory),
        file("src/a.py", b"a"),
        raw(".workspaced-ide-state/", EntryType::Directory),
        link(".workspaced-ide-state/l", EntryType::Symlink, "../src/a.py"),
    ]);
    let err = s.assert_refused("a state link into the folder", archive, &options());
    assert!(err.to_string().contains("IDE state"), "{err}");
    assert!(!s.base.join(".ide-state").exists(), "no state folder was made");
}
