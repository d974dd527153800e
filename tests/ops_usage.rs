//! `disk_usage` against `du -s -B1` on a real tree: files of awkward sizes, a sparse file, hardlinks, symlinks
//! (not followed), nested folders; and the `usage` command's numbers.

use std::path::Path;

use workspaced::ops::usage::disk_usage;

fn du(dir: &Path) -> u64 {
    let out = std::process::Command::new("du").args(["-s", "-B1"]).arg(dir).output().expect("du");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// A tree of mixed entries; returns the number of distinct non-directory inodes.
fn generate(root: &Path) -> u64 {
    use std::os::unix::fs::symlink;
    let mut files = 0;
    for (i, size) in [0usize, 1, 511, 4095, 4096, 4097, 65_537, 1 << 20].iter().enumerate() {
        std::fs::write(root.join(format!("f{i}")), vec![b'a'; *size]).unwrap();
        files += 1;
    }
    for d in 0..5 {
        let dir = root.join(format!("node_modules/pkg{d}/lib"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..40 {
            std::fs::write(dir.join(format!("m{i}.js")), format!("module.exports = {i};\n").repeat(i + 1)).unwrap();
            files += 1;
        }
    }
    // Sparse: 64 MiB apparent, a few KiB allocated.
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(64 << 20).unwrap();
    files += 1;
    // Hardlinks count once, wherever they are.
    std::fs::hard_link(root.join("f7"), root.join("f7-link")).unwrap();
    std::fs::hard_link(root.join("f7"), root.join("node_modules/f7-link")).unwrap();
    // Symlinks count as themselves; a long target needs a block on some file systems.
    symlink("/usr", root.join("usr-link")).unwrap();
    symlink("x".repeat(200), root.join("long-link")).unwrap();
    files += 2;
    std::fs::create_dir(root.join("empty-dir")).unwrap();
    files
}

#[test]
fn usage_matches_du_on_a_mixed_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate(tmp.path());
    let usage = disk_usage(tmp.path()).unwrap();
    assert_eq!(usage.bytes, du(tmp.path()), "{usage:?}");
    assert_eq!(usage.files, files);
    assert!(usage.bytes < 16 << 20, "the sparse file counts its allocated blocks only: {usage:?}");
    // A single file too.
    assert_eq!(disk_usage(&tmp.path().join("f7")).unwrap().bytes, du(&tmp.path().join("f7")));
}

#[test]
fn the_usage_command_prints_each_student_like_du() {
    let base = tempfile::tempdir().unwrap();
    for s in ["alice", "bob"] {
        std::fs::create_dir(base.path().join(s)).unwrap();
    }
    generate(&base.path().join("alice"));
    std::fs::write(base.path().join("bob/a.txt"), "hello").unwrap();
    std::fs::create_dir(base.path().join(".import-x-1")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["usage", "--json"])
        .env("WORKSPACE_BASE_PATH", base.path())
        .current_dir(base.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let students = body["students"].as_array().unwrap();
    assert_eq!(students.len(), 2, "dot folders are not students: {body}");
    for s in students {
        let id = s["student_id"].as_str().unwrap();
        assert_eq!(s["bytes"].as_u64().unwrap(), du(&base.path().join(id)), "{id}");
    }
    let one = std::process::Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["usage", "bob"])
        .env("WORKSPACE_BASE_PATH", base.path())
        .current_dir(base.path())
        .output()
        .unwrap();
    let text = String::from_utf8(one.stdout).unwrap();
    assert!(text.contains("bob") && !text.contains("alice"), "{text}");
}

#[tokio::test]
async fn the_service_measures_usage_in_the_background_and_warns_once_above_the_soft_quota() {
    use workspaced::domain::StudentId;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(base.join("big")).unwrap();
    generate(&base.join("big"));
    std::fs::create_dir_all(base.join("small")).unwrap();
    std::fs::write(base.join("small/a.txt"), "x").unwrap();
    let settings = workspaced::config::Settings {
        base_path: base.clone(),
        database_url: format!("sqlite://{}", tmp.path().join("db.sqlite").display()),
        disk_soft_quota: Some(64 * 1024),
        ..Default::default()
    };
    let store = workspaced::store::Store::connect(&settings.database_url).await.unwrap();
    let instance = settings.instance.clone();
    let runtime = std::sync::Arc::new(
        workspaced::runtime::docker::DockerRuntime::connect_lazy(instance, std::time::Duration::from_secs(5)).unwrap(),
    );
    let lc = workspaced::lifecycle::Lifecycle::new(
        std::sync::Arc::new(settings),
        store.clone(),
        runtime,
        std::sync::Arc::new(workspaced::clock::SystemClock),
    );
    assert_eq!(workspaced::usage::measure_all(&lc).await.unwrap(), 2);
    let big = StudentId::parse("big").unwrap();
    let measured = lc.usage().get(&big).unwrap();
    assert_eq!(measured.usage.bytes, du(&base.join("big")), "same as du");
    assert!(measured.over_quota);
    assert!(!lc.usage().get(&StudentId::parse("small").unwrap()).unwrap().over_quota);
    // A second pass while still over the quota does not warn again.
    workspaced::usage::measure_all(&lc).await.unwrap();
    let events = store.events(Some(&big), 0, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["quota_exceeded"]);
    assert!(events[0].message.contains("soft quota"), "{}", events[0].message);
}
