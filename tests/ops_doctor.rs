//! `run_doctor` against real folders: a good local base passes its storage checks; a read-only, a missing base and
//! a student folder with the wrong owner are reported with the right reason; NFS options from a mount-table fixture
//! are compared with the recommended line; a host login user holding the workspace uid is a warning. The database
//! is only read: an older schema is reported, not migrated.
//! The Docker checks may pass or fail here; only named checks are asserted. The egress check is run against the
//! real firewall: the rules workspaced installs, and chains of the test's own for what is missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use workspaced::config::Settings;
use workspaced::domain::InstanceId;
use workspaced::ops::doctor::{run_doctor, CheckStatus, DoctorOptions, Report};
use workspaced::runtime::docker::DockerRuntime;
use workspaced::runtime::egress::{EgressMode, Firewall};

struct Fixture {
    tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("workspace-data");
        std::fs::create_dir(&base).unwrap();
        Self { tmp, base }
    }

    fn settings(&self) -> Settings {
        let mut s = Settings {
            base_path: self.base.clone(),
            database_url: format!("sqlite://{}", self.tmp.path().join("workspaced.db").display()),
            ..Default::default()
        };
        s.workspace.uid = 1000;
        s.workspace.gid = 1000;
        s
    }

    /// A mount table in which the base path is its own mount of `fstype` from `device` with `options`.
    fn mounts(&self, device: &str, fstype: &str, options: &str) -> PathBuf {
        let mount_point = std::fs::canonicalize(&self.base).unwrap_or_else(|_| self.base.clone());
        let table = format!(
            "/dev/vda / ext4 rw,relatime 0 0\nproc /proc proc rw 0 0\n{device} {} {fstype} {options} 0 0\n",
            mount_point.display()
        );
        let path = self.tmp.path().join(format!("mounts-{fstype}"));
        std::fs::write(&path, table).unwrap();
        path
    }

    fn options(&self, mounts: PathBuf) -> DoctorOptions {
        DoctorOptions { mounts, files: 200, git_files: 100, passwd: self.passwd(""), ..Default::default() }
    }

    /// A passwd file with root and `lines`.
    fn passwd(&self, lines: &str) -> PathBuf {
        let path = self.tmp.path().join(format!("passwd-{:08x}", rand::random::<u32>()));
        std::fs::write(&path, format!("root:x:0:0:root:/root:/bin/bash\n{lines}")).unwrap();
        path
    }
}

fn status(report: &Report, name: &str) -> CheckStatus {
    report.get(name).unwrap_or_else(|| panic!("no check {name} in {}", report.to_text())).status
}

fn reason<'a>(report: &'a Report, name: &str) -> &'a str {
    &report.get(name).unwrap().reason
}

fn student(base: &Path, name: &str, uid: u32, gid: u32, mode: u32) {
    let dir = base.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn scratch_left(base: &Path) -> Vec<String> {
    std::fs::read_dir(base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".workspaced-doctor"))
        .collect()
}

#[tokio::test]
async fn a_good_local_base_passes_every_storage_check_and_leaves_nothing_behind() {
    let f = Fixture::new();
    student(&f.base, "alice", 1000, 1000, 0o700);
    let opts = f.options(f.mounts("/dev/sdb1", "ext4", "rw,relatime"));
    let report = run_doctor(&f.settings(), &opts).await;
    eprintln!("{}", report.to_text());
    for name in ["base_path", "base_writable", "chown", "filesystem", "small_files", "git_status", "student_folders"] {
        assert_eq!(status(&report, name), CheckStatus::Pass, "{name}: {}", reason(&report, name));
    }
    assert!(reason(&report, "filesystem").contains("ext4"), "{}", reason(&report, "filesystem"));
    assert!(report.get("nfs_hard").is_none(), "no NFS checks on a local disk");
    assert_eq!(status(&report, "database"), CheckStatus::Pass, "{}", reason(&report, "database"));
    assert!(report.get("docker").is_some(), "the engine is always checked");
    let small = report.get("small_files").unwrap().details.as_ref().unwrap();
    assert_eq!(small["files"], 200);
    assert!(small["total_ms"].is_u64());
    assert!(scratch_left(&f.base).is_empty(), "scratch folders left: {:?}", scratch_left(&f.base));
    assert_eq!(std::fs::read_dir(&f.base).unwrap().count(), 1, "only alice remains");

    let json = report.to_json();
    assert!(json["ok"].is_boolean());
    let first = &json["checks"][0];
    for key in ["name", "status", "reason", "advice"] {
        assert!(!first[key].is_null(), "{key} missing in {first}");
    }
    assert_eq!(first["status"], "pass");
}

/// Mounts a read-only tmpfs over a folder for the life of the guard.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(dir: &Path) -> Self {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mount -t tmpfs -o ro failed (the tests run as root)");
        Self(dir.to_path_buf())
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_read_only_base_fails_the_write_check_with_the_reason() {
    let f = Fixture::new();
    let _mount = ReadOnlyMount::new(&f.base);
    let report = run_doctor(&f.settings(), &f.options("/proc/self/mounts".into())).await;
    eprintln!("{}", report.to_text());
    assert_eq!(status(&report, "base_path"), CheckStatus::Pass);
    assert_eq!(status(&report, "base_writable"), CheckStatus::Fail);
    assert!(reason(&report, "base_writable").contains("Read-only file system"), "{}", reason(&report, "base_writable"));
    assert!(report.get("base_writable").unwrap().advice.contains("read-only"));
    assert!(report.get("small_files").is_none(), "no latency test without writing");
    // The real mount table shows what holds the base: the tmpfs we mounted.
    assert!(reason(&report, "filesystem").contains("tmpfs"), "{}", reason(&report, "filesystem"));
    assert!(!report.ok());
}

#[tokio::test]
async fn a_missing_base_fails_and_is_not_created() {
    let f = Fixture::new();
    let mut settings = f.settings();
    settings.base_path = f.tmp.path().join("not-mounted/workspace-data");
    let opts = f.options(f.mounts("/dev/sdb1", "ext4", "rw"));
    let report = run_doctor(&settings, &opts).await;
    eprintln!("{}", report.to_text());
    assert_eq!(status(&report, "base_path"), CheckStatus::Fail);
    assert!(reason(&report, "base_path").contains("does not exist"));
    assert!(report.get("base_path").unwrap().advice.contains("mkdir -p"));
    assert!(report.get("base_writable").is_none() && report.get("student_folders").is_none());
    // The file system of the nearest existing folder is still reported: it tells whether EFS is mounted.
    assert!(report.get("filesystem").is_some());
    assert!(!settings.base_path.exists(), "doctor never creates the base path");
    assert!(!report.ok());
}

#[tokio::test]
async fn student_folders_with_a_wrong_owner_or_open_mode_are_a_warning_naming_them() {
    let f = Fixture::new();
    student(&f.base, "alice", 1000, 1000, 0o700);
    student(&f.base, "bob", 0, 0, 0o700);
    student(&f.base, "carol", 1000, 1000, 0o755);
    std::fs::create_dir(f.base.join("lost+found")).unwrap();
    let report = run_doctor(&f.settings(), &f.options(f.mounts("/dev/sdb1", "ext4", "rw"))).await;
    let check = report.get("student_folders").unwrap();
    assert_eq!(check.status, CheckStatus::Warn, "{}", check.reason);
    assert!(check.reason.contains("2 of 3"), "{}", check.reason);
    assert!(check.reason.contains("bob (owner 0:0)") && check.reason.contains("carol (mode 755)"), "{}", check.reason);
    assert!(!check.reason.contains("alice") && !check.reason.contains("lost+found"));
    assert!(check.advice.contains("chown 1000:1000"), "{}", check.advice);
    assert_eq!(status(&report, "base_writable"), CheckStatus::Pass);
}

#[tokio::test]
async fn the_host_login_user_with_the_workspace_uid_is_a_warning_not_a_failure() {
    let f = Fixture::new();
    student(&f.base, "alice", 1000, 1000, 0o700);
    let mounts = f.mounts("/dev/sdb1", "ext4", "rw");
    let ec2 = f.passwd("ec2-user:x:1000:1000:EC2 Default User:/home/ec2-user:/bin/bash\n");
    let report = run_doctor(&f.settings(), &DoctorOptions { passwd: ec2, ..f.options(mounts.clone()) }).await;
    let check = report.get("host_user").unwrap();
    assert_eq!(check.status, CheckStatus::Warn, "{}", check.reason);
    assert!(check.reason.contains("uid 1000 is `ec2-user`"), "{}", check.reason);
    assert!(check.advice.contains("WORKSPACED_UID") && check.advice.contains("Session Manager"), "{}", check.advice);
    assert!(report.to_text().contains("WARN host_user"), "{}", report.to_text());

    // A dedicated uid that no login account holds.
    let mut settings = f.settings();
    (settings.workspace.uid, settings.workspace.gid) = (2001, 2001);
    let dedicated = f.passwd("ec2-user:x:1000:1000::/home/ec2-user:/bin/bash\nstudents:x:2001:2001::/:/sbin/nologin\n");
    let report = run_doctor(&settings, &DoctorOptions { passwd: dedicated, ..f.options(mounts) }).await;
    assert_eq!(status(&report, "host_user"), CheckStatus::Pass, "{}", reason(&report, "host_user"));
}

#[tokio::test]
async fn nfs_mounts_without_hard_or_with_version_3_are_flagged_with_the_fstab_line() {
    let f = Fixture::new();
    let old =
        f.mounts("nas.internal:/export", "nfs", "rw,relatime,vers=3,rsize=65536,wsize=65536,soft,proto=tcp,timeo=14");
    let report = run_doctor(&f.settings(), &f.options(old)).await;
    eprintln!("{}", report.to_text());
    assert!(reason(&report, "filesystem").starts_with("nfs "), "{}", reason(&report, "filesystem"));
    assert_eq!(status(&report, "nfs_version"), CheckStatus::Fail);
    assert_eq!(status(&report, "nfs_hard"), CheckStatus::Fail);
    assert!(reason(&report, "nfs_hard").contains("corrupt"));
    for name in ["nfs_timeo", "nfs_retrans", "nfs_rsize", "nfs_wsize", "nfs_noresvport"] {
        assert_eq!(status(&report, name), CheckStatus::Warn, "{name}");
    }
    let advice = &report.get("nfs_rsize").unwrap().advice;
    assert!(
        advice.contains("nas.internal:/export")
            && advice.contains("nfs4 nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport"),
        "{advice}"
    );
    assert!(!report.ok());

    // EFS by name, everything recommended but `hard` spelled out: only that is a warning.
    let efs = f.mounts(
        "fs-0123abcd.efs.eu-west-1.amazonaws.com:/",
        "nfs4",
        "rw,relatime,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,noresvport,proto=tcp,timeo=600,retrans=2,sec=sys",
    );
    let report = run_doctor(&f.settings(), &f.options(efs)).await;
    assert!(reason(&report, "filesystem").starts_with("EFS"), "{}", reason(&report, "filesystem"));
    assert_eq!(status(&report, "nfs_hard"), CheckStatus::Warn);
    for name in ["nfs_version", "nfs_timeo", "nfs_retrans", "nfs_rsize", "nfs_wsize", "nfs_noresvport"] {
        assert_eq!(status(&report, name), CheckStatus::Pass, "{name}: {}", reason(&report, name));
    }

    // NFS 4.0 is a warning, not a failure.
    let v40 =
        f.mounts("10.0.0.5:/", "nfs4", "rw,vers=4.0,rsize=1048576,wsize=1048576,hard,noresvport,timeo=600,retrans=2");
    let report = run_doctor(&f.settings(), &f.options(v40)).await;
    assert_eq!(status(&report, "nfs_version"), CheckStatus::Warn);
    assert_eq!(status(&report, "nfs_hard"), CheckStatus::Pass);
}

/// A WAL database like production's, with only the first `n` of this binary's migrations applied.
async fn database_with_first_migrations(tmp: &Path, db: &Path, n: usize) {
    let older = tmp.join("older-migrations");
    std::fs::create_dir(&older).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files[..n] {
        std::fs::copy(f, older.join(f.file_name().unwrap())).unwrap();
    }
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    sqlx::migrate::Migrator::new(older.as_path()).await.unwrap().run(&pool).await.unwrap();
    pool.close().await;
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

#[tokio::test]
async fn a_database_with_an_older_schema_is_reported_behind_and_left_byte_identical() {
    let f = Fixture::new();
    let db = f.tmp.path().join("workspaced.db");
    database_with_first_migrations(f.tmp.path(), &db, 2).await;
    let before = sha256(&db);

    let report = run_doctor(&f.settings(), &f.options(f.mounts("/dev/sdb1", "ext4", "rw"))).await;

    assert_eq!(sha256(&db), before, "doctor changed the database file");
    assert_eq!(status(&report, "database"), CheckStatus::Warn, "{}", reason(&report, "database"));
    let why = reason(&report, "database");
    assert!(why.contains("behind") && why.contains("0003_auth") && why.contains("0004_sessions"), "{why}");
    assert!(!why.contains("0002"), "applied migrations are not pending: {why}");
    let pending = &report.get("database").unwrap().details.as_ref().unwrap()["pending"];
    let all = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite")).unwrap().count();
    assert_eq!(pending.as_array().map(Vec::len), Some(all - 2), "every migration after the first two: {pending}");
}

#[tokio::test]
async fn a_missing_database_is_not_created_by_doctor() {
    let f = Fixture::new();
    let report = run_doctor(&f.settings(), &f.options(f.mounts("/dev/sdb1", "ext4", "rw"))).await;
    assert_eq!(status(&report, "database"), CheckStatus::Pass, "{}", reason(&report, "database"));
    assert!(reason(&report, "database").contains("does not exist yet"));
    assert!(!f.tmp.path().join("workspaced.db").exists());
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_binary_fails_the_check_and_is_not_touched() {
    let f = Fixture::new();
    let db = f.tmp.path().join("workspaced.db");
    workspaced::store::Store::connect(&f.settings().database_url).await.unwrap();
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let before = sha256(&db);

    let report = run_doctor(&f.settings(), &f.options(f.mounts("/dev/sdb1", "ext4", "rw"))).await;

    assert_eq!(sha256(&db), before);
    assert_eq!(status(&report, "database"), CheckStatus::Fail, "{}", reason(&report, "database"));
    assert!(reason(&report, "database").contains("ahead"), "{}", reason(&report, "database"));
}

/// Parent and rule chains of the test's own, removed on drop: the real `WORKSPACED-EGRESS` is shared by every
/// workspaced on this engine, so the "missing" case is shown on chains nothing else uses.
struct TestChains(Firewall);

impl Drop for TestChains {
    fn drop(&mut self) {
        let _ = self.0.remove();
        let _ = std::process::Command::new("iptables").args(["-w", "10", "-X", &self.0.parent]).status();
    }
}

#[tokio::test]
async fn the_egress_check_passes_with_the_rules_in_place_and_names_the_missing_ones_with_their_commands() {
    let f = Fixture::new();
    let instance = InstanceId::parse(&format!("t{:08x}", rand::random::<u32>())).unwrap();
    let runtime = DockerRuntime::connect(instance, Duration::from_secs(20)).await.expect("the engine is reachable");
    runtime.prepare_network().await.expect("the network and its rules are ready");
    let bridge = runtime.network_bridge().await.unwrap().unwrap();
    let mounts = f.mounts("/dev/sdb1", "ext4", "rw");

    let report = run_doctor(&f.settings(), &f.options(mounts.clone())).await;
    assert_eq!(status(&report, "egress"), CheckStatus::Pass, "{}", reason(&report, "egress"));
    assert!(reason(&report, "egress").contains(&bridge), "{}", reason(&report, "egress"));

    let id = format!("{:08x}", rand::random::<u32>());
    let chains = TestChains(Firewall { parent: format!("WSDT-{id}-P"), chain: format!("WSDT-{id}-E") });
    let made = std::process::Command::new("iptables").args(["-w", "10", "-N", &chains.0.parent]).status().unwrap();
    assert!(made.success());
    let opts = DoctorOptions { firewall: chains.0.clone(), ..f.options(mounts.clone()) };
    let report = run_doctor(&f.settings(), &opts).await;
    let check = report.get("egress").unwrap();
    assert_eq!(check.status, CheckStatus::Fail, "{}", check.reason);
    assert!(check.reason.contains("169.254.0.0/16") && check.reason.contains("2049"), "{}", check.reason);
    let fix = format!("iptables -w -I {} 1", chains.0.parent);
    assert!(check.advice.contains(&fix) && check.advice.contains(&format!("-i {bridge}")), "{}", check.advice);
    assert!(!report.ok(), "a missing rule fails the doctor");

    // The advice is what an operator runs: after it, the check passes.
    let advice = check.advice.split_once("add them: ").unwrap().1.to_owned();
    let ran = std::process::Command::new("sh").args(["-c", &advice]).status().unwrap();
    assert!(ran.success(), "{advice}");
    let report = run_doctor(&f.settings(), &opts).await;
    assert_eq!(status(&report, "egress"), CheckStatus::Pass, "{}", reason(&report, "egress"));

    let mut off = f.settings();
    off.egress_rules = EgressMode::Off;
    let report = run_doctor(&off, &opts).await;
    assert_eq!(status(&report, "egress"), CheckStatus::Pass);
    assert!(reason(&report, "egress").starts_with("not checked"), "{}", reason(&report, "egress"));
}
