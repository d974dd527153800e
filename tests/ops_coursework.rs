//! Starter files, distribution and collection of coursework on real file systems, run as root and checked for the
//! workspace user's ownership (uid 1000): nothing the student has is overwritten, an edited file survives a new
//! version, a re-run does nothing twice, a folder swapped for a symlink mid-run sends nothing outside the student
//! folder, and a collect archive holds exactly the expected files, matching its manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use workspaced::domain::StudentId;
use workspaced::ops::coursework::{
    collect, collect_to_dir, copy_template, distribute, verify_archive, CollectManifest, CollectStatus,
    CourseworkError, Distribution, RelPath, MANIFEST_NAME,
};

const OWNER: (u32, u32) = (1000, 1000);
const MARKER: &str = "TOPSECRET-77c1";

fn id(s: &str) -> StudentId {
    StudentId::parse(s).unwrap()
}

/// `<base>/<id>` as storage makes it: uid 1000, mode 0700.
fn student_folder(base: &Path, student: &str) -> PathBuf {
    let dir = base.join(student);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(OWNER.0), Some(OWNER.1)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Every path below `dir`, relative, folders with a trailing `/` (symlinks not followed).
fn listing(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                out.insert(format!("{rel}/"));
                pending.push(p);
            } else {
                out.insert(rel);
            }
        }
    }
    out
}

/// Owned by the workspace user, and neither group- nor other-writable.
fn assert_owned_and_safe(path: &Path) {
    let m = std::fs::symlink_metadata(path).unwrap();
    assert_eq!((m.uid(), m.gid()), OWNER, "{}", path.display());
    assert_eq!(m.mode() & 0o7022, 0, "{} has mode {:o}", path.display(), m.mode());
}

fn sorted(v: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = v.iter().map(String::as_str).collect();
    v.sort();
    v
}

#[test]
fn a_template_fills_an_empty_folder_with_files_owned_by_the_student_and_never_writable_by_others() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("templates/cs101");
    write(&template.join("README.md"), "# Welcome");
    write(&template.join("src/main.py"), "print('hi')");
    write(&template.join("src/lib/util.py"), "def f(): pass");
    std::fs::set_permissions(template.join("src/main.py"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(template.join("src"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir_all(template.join("empty")).unwrap();
    write(&tmp.path().join("secret"), MARKER);
    std::os::unix::fs::symlink(tmp.path().join("secret"), template.join("link")).unwrap();
    let alice = student_folder(&tmp.path().join("base"), "alice");

    let report = copy_template(&template, &alice, OWNER).unwrap();

    assert_eq!(
        listing(&alice),
        ["README.md", "empty/", "src/", "src/lib/", "src/lib/util.py", "src/main.py"].map(String::from).into()
    );
    assert_eq!(sorted(&report.written), ["README.md", "empty/", "src/", "src/lib/", "src/lib/util.py", "src/main.py"]);
    assert!(report.existing.is_empty(), "{report:?}");
    assert_eq!(report.skipped, ["template: link (a symlink, not copied)"]);
    assert_eq!(read(&alice.join("src/main.py")), "print('hi')");
    for p in listing(&alice) {
        assert_owned_and_safe(&alice.join(p.trim_end_matches('/')));
    }
    // The template's executable bit survives; its group and other write bits do not.
    let mode = |p: &str| std::fs::metadata(alice.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("src/main.py"), 0o755);
    assert_eq!(mode("src"), 0o755);
    assert_eq!(mode("README.md") & 0o700, 0o600);
    // No temporary file left behind.
    assert!(!listing(&alice).iter().any(|p| p.contains("partial")));
}

#[test]
fn a_template_never_overwrites_anything_the_student_has_and_fills_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    write(&template.join("README.md"), "# Welcome");
    write(&template.join("src/main.py"), "print('template')");
    write(&template.join("notes/todo.txt"), "1. read");
    write(&template.join("data/a.csv"), "a");
    let alice = student_folder(&tmp.path().join("base"), "alice");
    write(&alice.join("README.md"), "my own readme");
    // A file where the template has a folder, a symlink where it has a file: both win, neither is followed.
    write(&alice.join("src"), "not a folder");
    write(&alice.join("notes/mine.txt"), "mine");
    write(&tmp.path().join("outside/a.csv"), MARKER);
    std::os::unix::fs::symlink(tmp.path().join("outside"), alice.join("data")).unwrap();

    let report = copy_template(&template, &alice, OWNER).unwrap();

    assert_eq!(read(&alice.join("README.md")), "my own readme");
    assert_eq!(read(&alice.join("src")), "not a folder");
    assert_eq!(read(&alice.join("notes/mine.txt")), "mine");
    assert_eq!(read(&alice.join("notes/todo.txt")), "1. read");
    assert_eq!(read(&tmp.path().join("outside/a.csv")), MARKER);
    assert_eq!(listing(&tmp.path().join("outside")), ["a.csv".to_owned()].into());
    assert_eq!(sorted(&report.written), ["notes/todo.txt"]);
    assert_eq!(sorted(&report.existing), ["README.md", "data", "src"]);
    assert_owned_and_safe(&alice.join("notes/todo.txt"));

    // A second copy (the next start) finds everything there and writes nothing.
    let before = listing(&alice);
    let again = copy_template(&template, &alice, OWNER).unwrap();
    assert!(again.written.is_empty(), "{again:?}");
    assert_eq!(listing(&alice), before);
}

#[test]
fn a_distribution_keeps_the_edited_file_updates_the_untouched_ones_and_runs_once_per_version() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let state = base.join(".courses/cs101/distributed");
    let (alice, bob) = (student_folder(&base, "alice"), student_folder(&base, "bob"));
    // Bob had his own hw/b.py before any distribution: different content and no manifest, so it is his.
    write(&bob.join("hw/b.py"), "bob's own b");
    let v1 = tmp.path().join("assignments/v1");
    write(&v1.join("a.py"), "a v1");
    write(&v1.join("b.py"), "b v1");
    write(&v1.join("data/x.csv"), "x");
    let target = RelPath::parse("hw/").unwrap();

    let first = distribute(&v1, &target, &id("alice"), &alice, &state, OWNER).unwrap();
    assert!(!first.already_done);
    assert_eq!(sorted(&first.written), ["hw/", "hw/a.py", "hw/b.py", "hw/data/", "hw/data/x.csv"]);
    for p in ["hw", "hw/a.py", "hw/data", "hw/data/x.csv"] {
        assert_owned_and_safe(&alice.join(p));
    }
    let bob_first = distribute(&v1, &target, &id("bob"), &bob, &state, OWNER).unwrap();
    assert_eq!(bob_first.kept, ["hw/b.py"]);
    assert_eq!(read(&bob.join("hw/b.py")), "bob's own b");

    // The manifests live outside the student folders.
    let manifests = listing(&state);
    assert_eq!(manifests.len(), 2, "{manifests:?}");
    assert!(manifests.iter().all(|m| m.ends_with(".json")), "{manifests:?}");
    assert!(!listing(&alice).iter().any(|p| p.contains("json") || p.contains("partial")));

    // Alice edits a.py; version 2 changes a.py and b.py and adds c.py.
    write(&alice.join("hw/a.py"), "alice's answer");
    let v2 = tmp.path().join("assignments/v2");
    write(&v2.join("a.py"), "a v2");
    write(&v2.join("b.py"), "b v2");
    write(&v2.join("c.py"), "c v2");
    write(&v2.join("data/x.csv"), "x");
    let second = Distribution::prepare(&v2, target.clone()).unwrap();
    let report = second.apply(&id("alice"), &alice, &state, OWNER).unwrap();
    assert!(!report.already_done);
    assert_eq!(report.kept, ["hw/a.py"]);
    assert_eq!(report.updated, ["hw/b.py"]);
    assert_eq!(report.written, ["hw/c.py"]);
    assert_eq!(report.unchanged, ["hw/data/x.csv"]);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(read(&alice.join("hw/a.py")), "alice's answer");
    assert_eq!(read(&alice.join("hw/b.py")), "b v2");
    assert_eq!(read(&alice.join("hw/c.py")), "c v2");
    assert_owned_and_safe(&alice.join("hw/b.py"));
    assert_owned_and_safe(&alice.join("hw/c.py"));
    // Bob's own b.py is still his under version 2 (it never was a distributed version).
    let bob_second = second.apply(&id("bob"), &bob, &state, OWNER).unwrap();
    assert_eq!(bob_second.kept, ["hw/b.py"]);
    assert_eq!(bob_second.updated, ["hw/a.py"]);
    assert_eq!(read(&bob.join("hw/b.py")), "bob's own b");

    // A re-run of the same version (a killed distribute run again) does nothing for either student.
    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = (mtime(&alice.join("hw/b.py")), listing(&alice));
    std::fs::remove_file(alice.join("hw/c.py")).unwrap();
    let rerun = distribute(&v2, &target, &id("alice"), &alice, &state, OWNER).unwrap();
    assert!(rerun.already_done, "{rerun:?}");
    assert!(rerun.written.is_empty() && rerun.updated.is_empty());
    assert!(!alice.join("hw/c.py").exists(), "a re-run wrote again");
    assert_eq!(mtime(&alice.join("hw/b.py")), before.0);
    assert!(second.apply(&id("bob"), &bob, &state, OWNER).unwrap().already_done);
}

#[test]
fn a_distribution_into_a_target_the_student_filled_with_a_file_or_a_symlink_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let state = tmp.path().join("state");
    let src = tmp.path().join("src");
    write(&src.join("a.py"), "a");
    std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
    let alice = student_folder(&base, "alice");
    std::os::unix::fs::symlink(tmp.path().join("outside"), alice.join("hw")).unwrap();
    let bob = student_folder(&base, "bob");
    write(&bob.join("hw"), "a file");
    let target = RelPath::parse("hw/part1").unwrap();

    let a = distribute(&src, &target, &id("alice"), &alice, &state, OWNER).unwrap();
    let b = distribute(&src, &target, &id("bob"), &bob, &state, OWNER).unwrap();

    assert_eq!(a.skipped, ["hw (a symlink, not followed)"]);
    assert_eq!(b.skipped, ["hw (a file is there)"]);
    assert!(listing(&tmp.path().join("outside")).is_empty());
    assert_eq!(read(&bob.join("hw")), "a file");
    // Not done, so not recorded: a later run tries again.
    assert!(!state.exists() || listing(&state).is_empty());
}

#[test]
fn a_distribution_stopped_half_way_finishes_on_the_next_run_without_doing_anything_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let alice = student_folder(&tmp.path().join("base"), "alice");
    let src = tmp.path().join("src");
    for i in 0..20 {
        write(&src.join(format!("f{i:02}")), &format!("version 1 of {i}"));
    }
    let target = RelPath::parse("hw").unwrap();
    let plan = Distribution::prepare(&src, target.clone()).unwrap();
    // The operator edits a file after it was hashed: the run stops there, before publishing a version nobody hashed.
    write(&src.join("f10"), "edited after the hash");

    let stopped = plan.apply(&id("alice"), &alice, &state, OWNER);

    assert!(matches!(stopped, Err(CourseworkError::SourceChanged(ref p)) if p.ends_with("f10")), "{stopped:?}");
    let written: Vec<String> = listing(&alice.join("hw")).into_iter().collect();
    assert_eq!(written, (0..10).map(|i| format!("f{i:02}")).collect::<Vec<_>>(), "no partial or unhashed file");
    assert!(!plan.manifest_path(&id("alice"), &state).exists(), "a manifest before the copy finished");

    let again = distribute(&src, &target, &id("alice"), &alice, &state, OWNER).unwrap();
    assert_eq!(again.unchanged.len(), 10, "{again:?}");
    assert_eq!(again.written.len(), 10, "{again:?}");
    assert!(again.kept.is_empty() && again.updated.is_empty(), "{again:?}");
    assert_eq!(read(&alice.join("hw/f10")), "edited after the hash");
    assert!(distribute(&src, &target, &id("alice"), &alice, &state, OWNER).unwrap().already_done);
}

/// Keeps swapping until told to stop; counts its rounds.
fn swapper(stop: &AtomicBool, rounds: &AtomicU64, mut round: impl FnMut()) {
    while !stop.load(Ordering::Relaxed) {
        round();
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// Swaps two names in `dir` in one step (`renameat2(RENAME_EXCHANGE)`).
fn exchange(dir: &Path, a: &str, b: &str) {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, &dir.join(a), AT_FDCWD, &dir.join(b), RenameFlags::RENAME_EXCHANGE)
        .unwrap_or_else(|e| panic!("exchanging {a} and {b}: {e}"));
}

#[test]
fn a_distribution_racing_a_folder_swapped_for_a_symlink_writes_nothing_outside_the_student_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let state = tmp.path().join("state");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let bob = student_folder(&base, "bob");
    write(&bob.join("notes.txt"), "bob's");
    let alice = student_folder(&base, "alice");
    let src = tmp.path().join("src");
    // Siblings of `d` handled after its own entry and before its files: the window a folder swap aims at.
    for i in 0..300 {
        write(&src.join(format!("e{i:03}")), "e");
    }
    write(&src.join("d/first"), "first");
    let target = RelPath::parse("hw").unwrap();
    distribute(&src, &target, &id("alice"), &alice, &state, OWNER).unwrap();
    let hw = alice.join("hw");
    // `hw/d` and `hw/d.lnk -> <outside>` trade places atomically: each name is a folder half the time.
    std::os::unix::fs::symlink(&outside, hw.join("d.lnk")).unwrap();
    let around = || (listing(&base.join("bob")), std::fs::read_dir(tmp.path()).unwrap().count(), listing(&state));

    // The control, before the race: a new version writes into d/ while it is a folder, so a run that met the link
    // there would have written through it had the walker followed it. (Under load a fast swapper can land inside
    // every raced run, and then no raced run writes into d/ at all.)
    for i in 0..10 {
        write(&src.join(format!("d/control-{i}")), "new");
    }
    let control = distribute(&src, &target, &id("alice"), &alice, &state, OWNER).unwrap();
    let written = control.written.iter().filter(|s| s.starts_with("hw/d/")).count() as u64;
    assert!(written >= 10, "the control run wrote {written} files into d/: {:?}", control.written);
    let before = around();

    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let (mut runs, mut landed, mut raced_writes) = (0u64, 0u64, 0u64);
    std::thread::scope(|scope| {
        scope.spawn(|| swapper(&stop, &swaps, || exchange(&hw, "d", "d.lnk")));
        let started = Instant::now();
        // Bounded either way; ends early once swaps were seen to land inside the runs several times.
        while runs < 100 && started.elapsed() < Duration::from_secs(15) && landed < 10 {
            // A new version each run: ten more files in d/, so every run writes into d/ when it can.
            for i in 0..10 {
                write(&src.join(format!("d/r{runs:03}-{i}")), "new");
            }
            let report = distribute(&src, &target, &id("alice"), &alice, &state, OWNER);
            let report = report.unwrap_or_else(|e| {
                stop.store(true, Ordering::Relaxed);
                panic!("run {runs} failed: {e}")
            });
            runs += 1;
            landed += report.skipped.iter().filter(|s| s.starts_with("hw/d (")).count() as u64;
            raced_writes += report.written.iter().filter(|s| s.starts_with("hw/d/")).count() as u64;
        }
        stop.store(true, Ordering::Relaxed);
    });
    eprintln!(
        "{runs} distributions, {} swaps; the swap seen by {landed} runs; {raced_writes} files written into d/ while \
         racing, {written} by the control run",
        swaps.load(Ordering::Relaxed)
    );
    assert!(listing(&outside).is_empty(), "written outside: {:?}", listing(&outside));
    assert_eq!(around(), before, "something changed outside alice's folder");
    // Without a swap landing inside a run, the assertions above proved nothing.
    assert!(landed >= 1, "no swap landed inside any of {runs} distributions");
}

/// A collect archive's files (path -> BLAKE3 hex), recomputed from the archive, and its manifest.
fn unpack(archive: &[u8]) -> (BTreeMap<String, String>, CollectManifest, Vec<u8>) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(archive).read_to_end(&mut raw).unwrap();
    let mut files = BTreeMap::new();
    let mut manifest = None;
    for entry in tar::Archive::new(&raw[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        let kind = entry.header().entry_type();
        assert!(kind.is_file() || kind.is_dir(), "{path}: {kind:?}");
        if !kind.is_file() {
            continue;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        if path == MANIFEST_NAME {
            manifest = Some(serde_json::from_slice(&content).unwrap());
        } else {
            files.insert(path, blake3::hash(&content).to_hex().to_string());
        }
    }
    (files, manifest.expect("a manifest"), raw)
}

#[test]
fn a_collect_archives_exactly_each_students_folder_and_its_manifest_matches_the_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write(&tmp.path().join("secret"), MARKER);
    let alice = student_folder(&base, "alice");
    write(&alice.join("hw/a.py"), "alice a");
    write(&alice.join("hw/sub/b.txt"), "alice b");
    write(&alice.join("other.txt"), "not collected");
    std::os::unix::fs::symlink(tmp.path().join("secret"), alice.join("hw/leak")).unwrap();
    nix::unistd::mkfifo(&alice.join("hw/pipe\nINFO forged"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let bob = student_folder(&base, "bob");
    write(&bob.join("hw/a.py"), "bob a");
    let carol = student_folder(&base, "carol");
    write(&carol.join("elsewhere.txt"), "no hw");
    let students = [(id("alice"), alice), (id("bob"), bob), (id("carol"), carol), (id("dave"), base.join("dave"))];
    let mut archive = Vec::new();
    let mut seen = Vec::new();

    let summary =
        collect(&students, &RelPath::parse("hw").unwrap(), &mut archive, |p| seen.push(p.students_done)).unwrap();

    let (files, manifest, raw) = unpack(&archive);
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        ["alice/hw/a.py", "alice/hw/sub/b.txt", "bob/hw/a.py"]
    );
    assert!(!String::from_utf8_lossy(&raw).contains(MARKER), "the symlink was followed");
    // The manifest names exactly the archived files, with the hashes recomputed from the archive.
    let rows: BTreeMap<String, String> = manifest
        .entries
        .iter()
        .filter(|r| r.kind == "file")
        .map(|r| (format!("{}/{}", r.student, r.path), r.blake3.clone().unwrap()))
        .collect();
    assert_eq!(rows, files);
    assert_eq!(files["alice/hw/a.py"], blake3::hash(b"alice a").to_hex().to_string());
    let other: Vec<(&str, &str, &str)> = manifest
        .entries
        .iter()
        .filter(|r| r.kind != "file")
        .map(|r| (r.student.as_str(), r.path.as_str(), r.kind.as_str()))
        .collect();
    assert_eq!(
        other,
        [
            ("alice", "hw/leak", "skipped"),
            ("alice", "hw/pipe\nINFO forged", "skipped"),
            ("carol", "hw", "missing"),
            ("dave", "hw", "missing")
        ]
    );
    // What the summary says may reach a log line: the student's newline is escaped there.
    assert_eq!(
        summary.students[0].skipped,
        ["hw/leak (a symlink, not followed)", "hw/pipe\\nINFO forged (a socket, fifo or device)"]
    );
    let mtime = std::fs::metadata(students[0].1.join("hw/a.py")).unwrap().mtime();
    assert!(manifest.entries.iter().any(|r| r.path == "hw/a.py" && r.mtime == Some(mtime) && r.size == 7));
    let status: Vec<CollectStatus> = summary.students.iter().map(|s| s.status).collect();
    assert_eq!(
        status,
        [CollectStatus::Collected, CollectStatus::Collected, CollectStatus::Missing, CollectStatus::Missing]
    );
    assert_eq!((summary.files, summary.bytes), (3, 19));
    assert_eq!(verify_archive(&archive[..]).unwrap(), manifest);
    assert_eq!(seen.last(), Some(&4), "progress ends with every student done");
}

#[test]
fn a_collect_to_a_folder_interrupted_mid_student_does_each_student_once_when_run_again() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let out = tmp.path().join("out");
    let mut students = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let dir = student_folder(&base, name);
        for i in 0..5 {
            write(&dir.join(format!("hw/f{i}.txt")), &format!("{name} {i}"));
        }
        students.push((id(name), dir));
    }
    let path = RelPath::parse("hw").unwrap();

    // Interrupted in the middle of bob's archive (a panic from the progress callback stands in for a kill: what
    // matters is what is on disk when the process stops writing).
    let interrupted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        collect_to_dir(&students, &path, &out, |p| {
            if p.student == "bob" && p.files >= 2 {
                panic!("killed");
            }
        })
    }));
    assert!(interrupted.is_err(), "the run was not interrupted");
    assert!(out.join("alice.tar.gz").exists());
    assert!(!out.join("bob.tar.gz").exists(), "an incomplete archive was published");
    assert!(!out.join(MANIFEST_NAME).exists());
    let alice_before = std::fs::metadata(out.join("alice.tar.gz")).unwrap();

    let summary = collect_to_dir(&students, &path, &out, |_| {}).unwrap();

    let status: Vec<(&str, CollectStatus)> = summary.students.iter().map(|s| (s.student.as_str(), s.status)).collect();
    assert_eq!(
        status,
        [("alice", CollectStatus::AlreadyDone), ("bob", CollectStatus::Collected), ("carol", CollectStatus::Collected)]
    );
    let alice_after = std::fs::metadata(out.join("alice.tar.gz")).unwrap();
    assert_eq!((alice_after.ino(), alice_after.mtime_nsec()), (alice_before.ino(), alice_before.mtime_nsec()));
    for (student, _) in &students {
        let bytes = std::fs::read(out.join(format!("{student}.tar.gz"))).unwrap();
        let (files, manifest, _) = unpack(&bytes);
        assert_eq!(files.len(), 5, "{student}");
        assert!(files.keys().all(|f| f.starts_with(&format!("{student}/hw/"))), "{files:?}");
        verify_archive(&bytes[..]).unwrap();
        assert_eq!(manifest.students, [student.to_string()]);
    }
    let all: CollectManifest = serde_json::from_slice(&std::fs::read(out.join(MANIFEST_NAME)).unwrap()).unwrap();
    assert_eq!(all.entries.len(), 15);
    assert_eq!((summary.files, summary.bytes), (15, all.entries.iter().map(|r| r.size).sum()));
    // A corrupt archive does not count as done: it is written again.
    std::fs::write(out.join("carol.tar.gz"), b"not gzip").unwrap();
    let third = collect_to_dir(&students, &path, &out, |_| {}).unwrap();
    let status: Vec<CollectStatus> = third.students.iter().map(|s| s.status).collect();
    assert_eq!(status, [CollectStatus::AlreadyDone, CollectStatus::AlreadyDone, CollectStatus::Collected]);
    verify_archive(&std::fs::read(out.join("carol.tar.gz")).unwrap()[..]).unwrap();
    let leftovers: Vec<String> =
        listing(&out).into_iter().filter(|p| !p.ends_with(".tar.gz") && p != MANIFEST_NAME).collect();
    assert!(leftovers.iter().all(|p| p.ends_with(".partial")), "{leftovers:?}");
}

mod rel_path_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever comes in, a parsed path has only plain names, stays below any folder it is joined to, is within
        /// its bounds, and parses to itself again; a refused one always has the code `invalid_path`.
        #[test]
        fn a_parsed_relative_path_never_leaves_its_folder(raw in "([a./\\\\\\x00\\n ü-]{0,6}/?){0,8}|\\PC{0,40}") {
            match RelPath::parse(&raw) {
                Ok(p) => {
                    let joined = Path::new("/base/alice").join(p.as_path());
                    prop_assert!(joined.starts_with("/base/alice"));
                    prop_assert!(p.as_path().components().all(|c| matches!(c, std::path::Component::Normal(_))));
                    prop_assert_eq!(p.as_path().components().count(), p.names().count());
                    prop_assert!(p.as_str().len() <= 1024 && p.names().count() <= 32);
                    prop_assert!(!p.as_str().chars().any(char::is_control));
                    prop_assert_eq!(RelPath::parse(p.as_str()), Ok(p.clone()));
                }
                Err(e) => prop_assert_eq!(e.code(), "invalid_path"),
            }
        }
    }
}
