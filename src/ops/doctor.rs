//! `workspaced doctor`: checks a host before (and after) it serves workspaces. Each check says pass, warn or fail,
//! why, and what to do. Storage checks run on the real base path (probe writes, a chown, a small-file latency test
//! and a `git status` in scratch folders that are always removed); the file system is looked up in a mount table
//! that tests replace with a fixture. Nothing here touches a student's files.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use super::mounts::{self, FsKind};
use crate::config::Settings;
use crate::domain::StudentId;
use crate::runtime::docker::DockerRuntime;
use crate::runtime::egress::{self, EgressError, EgressMode, Firewall};
use crate::runtime::Runtime;
use crate::store::{SchemaState, Store, StoreError};

/// Creating, stat-ing, reading and deleting this many small files may take `SMALL_FILES_BUDGET` before we warn.
pub const SMALL_FILES_REFERENCE: usize = 2000;
pub const SMALL_FILES_BUDGET: Duration = Duration::from_secs(5);
/// A `git status` on the generated repository may take this long before we warn.
pub const GIT_STATUS_BUDGET: Duration = Duration::from_secs(2);
/// Student folders named in a warning, at most.
const LISTED_FOLDERS: usize = 10;
/// Advice when small-file operations are slow. Never Max I/O: it adds latency to every operation, which is what a
/// workspace of many small files waits on, and it cannot be combined with Elastic throughput.
const SLOW_SMALL_FILES_ADVICE: &str = "small-file operations are slow here: on EFS use General Purpose performance \
     mode with Elastic throughput (not Max I/O: it adds latency to every operation); keep node_modules, virtualenvs \
     and caches off the shared file system (docs/deploy/aws-efs.md, sections 1 and 6)";
const SLOW_GIT_STATUS_ADVICE: &str = "git status is slow here, and the IDE runs it constantly: on EFS use General \
     Purpose performance mode with Elastic throughput (not Max I/O), and keep node_modules and build output out of \
     repositories on EFS (docs/deploy/aws-efs.md, sections 1 and 6)";

pub use super::check::{Check, CheckStatus};

mod nodes;

/// What `run_doctor` found, in the order the checks ran.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    /// True when no check failed (warnings allowed).
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != CheckStatus::Fail)
    }

    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({ "checks": self.checks, "ok": self.ok() })
    }

    /// One line per check (`PASS name: reason`), advice indented below, and a count.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!("{} {}: {}\n", c.status.word(), c.name, c.reason));
            if !c.advice.is_empty() {
                out.push_str(&format!("     {}\n", c.advice));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "doctor: {} pass, {} warn, {} fail\n",
            count(CheckStatus::Pass),
            count(CheckStatus::Warn),
            count(CheckStatus::Fail)
        ));
        out
    }
}

#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Mount table to read (`/proc/self/mounts`; tests pass a fixture).
    pub mounts: PathBuf,
    /// Small files created, stat-ed, read and deleted by the latency test.
    pub files: usize,
    /// Files in the generated git repository.
    pub git_files: usize,
    /// Bound on each call to the container engine.
    pub engine_timeout: Duration,
    /// Where the egress rules are looked for (tests name chains of their own).
    pub firewall: Firewall,
    /// Account database in which the workspace uid is looked up (`/etc/passwd`; tests pass a fixture).
    pub passwd: PathBuf,
    /// Also probe every swarm node that may run a workspace (`--nodes`).
    pub nodes: bool,
    /// Longest wait for the node probes to finish.
    pub nodes_wait: Duration,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            mounts: PathBuf::from("/proc/self/mounts"),
            files: SMALL_FILES_REFERENCE,
            git_files: 1000,
            engine_timeout: Duration::from_secs(5),
            firewall: Firewall::default(),
            passwd: PathBuf::from("/etc/passwd"),
            nodes: false,
            nodes_wait: Duration::from_secs(60),
        }
    }
}

/// Runs every check and returns the report; never fails itself (a check that cannot run says so).
pub async fn run_doctor(settings: &Settings, options: &DoctorOptions) -> Report {
    let (s, o) = (settings.clone(), options.clone());
    let mut checks = tokio::task::spawn_blocking(move || storage_checks(&s, &o))
        .await
        .unwrap_or_else(|e| vec![Check::fail("storage", format!("the storage checks crashed: {e}"), "")]);
    checks.extend(engine_checks(settings, options).await);
    checks.push(database_check(settings).await);
    if options.nodes {
        checks.extend(nodes::node_checks(settings, options).await);
    }
    Report { checks }
}

/// Removes a scratch folder when dropped, whatever happened in between.
struct Scratch(PathBuf);

impl Scratch {
    fn create(path: PathBuf) -> io::Result<Self> {
        std::fs::create_dir(&path)?;
        Ok(Self(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove the doctor's scratch folder");
            }
        }
    }
}

fn scratch_path(base: &Path, what: &str) -> PathBuf {
    base.join(format!(".workspaced-doctor-{}{what}", std::process::id()))
}

/// The base path's checks in the order an operator reads them. Long because it is a list of independent checks, each
/// a few lines; splitting it would only move the list elsewhere.
fn storage_checks(settings: &Settings, o: &DoctorOptions) -> Vec<Check> {
    let base = settings.base_path.as_path();
    let (uid, gid) = (settings.workspace.uid, settings.workspace.gid);
    let mut checks = Vec::new();

    let is_dir = match std::fs::metadata(base) {
        Ok(m) if m.is_dir() => {
            let canonical = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
            checks.push(Check::pass("base_path", format!("{} is a directory", canonical.display())));
            true
        }
        Ok(_) => {
            checks.push(Check::fail(
                "base_path",
                format!("{} is not a directory", base.display()),
                "point WORKSPACE_BASE_PATH at a folder",
            ));
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            checks.push(Check::fail(
                "base_path",
                format!("{} does not exist (other storage checks skipped)", base.display()),
                format!(
                    "if it lives on EFS/NFS, check the mount first (findmnt; see docs/deploy/aws-efs.md); then \
                     mkdir -p {0} && chown {uid}:{gid} {0} (serve never creates it)",
                    base.display()
                ),
            ));
            false
        }
        Err(e) => {
            checks.push(Check::fail(
                "base_path",
                format!("cannot read {}: {e}", base.display()),
                "check the permissions of its parent folders",
            ));
            false
        }
    };

    let mut writable = false;
    if is_dir {
        let probe = scratch_path(base, "-probe");
        let result = std::fs::File::create(&probe).and_then(|mut f| {
            f.write_all(b"probe")?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        match result {
            Ok(()) => {
                writable = true;
                checks.push(Check::pass("base_writable", "a probe file was written, synced and removed"))
            }
            Err(e) => checks.push(Check::fail(
                "base_writable",
                format!("cannot write in {}: {e} (latency tests skipped)", base.display()),
                if e.raw_os_error() == Some(nix::libc::EROFS) {
                    "the file system is mounted read-only: remount it read-write (check the fstab line)".to_owned()
                } else {
                    format!(
                        "run workspaced as root, or give its user write access: chown {uid}:{gid} {}",
                        base.display()
                    )
                },
            )),
        }
    }
    if writable {
        checks.push(chown_check(base, uid, gid));
    }

    checks.extend(filesystem_checks(base, &o.mounts));

    if writable {
        checks.push(small_files_check(base, o.files));
        checks.push(git_status_check(base, o.git_files));
    }
    if is_dir {
        checks.push(student_folders_check(base, uid, gid));
        // The owners inside the folders too: files copied with other owners fail in the IDE, not here.
        checks.push(crate::ops::repair::content_ownership_check(base, uid, gid));
    }
    checks.push(host_user_check(&o.passwd, uid, gid));
    checks
}

/// Who the workspace uid is on this host. Every student's files belong to it, so a login account with that uid
/// reads and changes all of them; uid 1000 is the first login user of common images (`ec2-user` on Amazon Linux,
/// `admin` on Debian, `ubuntu` on Ubuntu). A warning, never a failure: whether anyone logs in as that user is the
/// operator's call (docs/deploy/aws-efs.md, "Who is uid 1000 on the host").
fn host_user_check(passwd: &Path, uid: u32, gid: u32) -> Check {
    match std::fs::read_to_string(passwd) {
        Ok(text) => host_user(&text, &passwd.display().to_string(), uid, gid),
        Err(e) => Check::warn(
            "host_user",
            format!("cannot read {}: {e}", passwd.display()),
            format!("look it up by hand: getent passwd {uid}"),
        ),
    }
}

/// The decision of [`host_user_check`] on the text of a passwd file (`name:x:uid:gid:gecos:home:shell` lines).
fn host_user(passwd: &str, source: &str, uid: u32, gid: u32) -> Check {
    let accounts: Vec<(&str, &str)> = passwd
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(':').collect();
            (fields.len() >= 7 && fields[2].parse::<u32>() == Ok(uid)).then(|| (fields[0], fields[6]))
        })
        .collect();
    // An empty shell field means /bin/sh.
    let can_log_in = |shell: &str| !(shell.ends_with("/nologin") || shell.ends_with("/false"));
    let login: Vec<&str> = accounts.iter().filter(|(_, shell)| can_log_in(shell)).map(|(name, _)| *name).collect();
    let names = |list: &[&str]| list.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let details = json!({ "uid": uid, "accounts": accounts.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                          "login": login, "source": source });
    if !login.is_empty() {
        return Check::warn(
            "host_user",
            format!(
                "uid {uid} is {} in {source}, with a login shell: whoever logs in as it reads and changes every \
                 student's files on this host",
                names(&login)
            ),
            format!(
                "keep operators off that account (SSM Session Manager instead of SSH as it), give it another uid, or \
                 run workspaces as a dedicated uid/gid (WORKSPACED_UID/WORKSPACED_GID, not {uid}:{gid}) with an IDE \
                 image whose user has them, then `workspaced repair`; see docs/deploy/aws-efs.md"
            ),
        )
        .with_details(details);
    }
    let reason = if accounts.is_empty() {
        format!(
            "no account in {source} has uid {uid} (in a container this is the container's file: on the host, check \
             `getent passwd {uid}`)"
        )
    } else {
        let all: Vec<&str> = accounts.iter().map(|(n, _)| *n).collect();
        format!("uid {uid} is {} in {source}, without a login shell", names(&all))
    };
    Check::pass("host_user", reason).with_details(details)
}

fn chown_check(base: &Path, uid: u32, gid: u32) -> Check {
    let result = (|| -> io::Result<(u32, u32)> {
        let scratch = Scratch::create(scratch_path(base, ""))?;
        std::os::unix::fs::chown(&scratch.0, Some(uid), Some(gid))?;
        let meta = std::fs::symlink_metadata(&scratch.0)?;
        Ok((meta.uid(), meta.gid()))
    })();
    let advice = format!(
        "run workspaced as root (or as {uid}:{gid}); on NFS turn off root squashing; an EFS access point must not \
         force another POSIX user (use uid/gid {uid}/{gid}), and the IAM policy must allow ClientRootAccess"
    );
    match result {
        Ok((u, g)) if (u, g) == (uid, gid) => Check::pass("chown", format!("a new folder was handed to {uid}:{gid}")),
        Ok((u, g)) => Check::fail(
            "chown",
            format!("a folder chowned to {uid}:{gid} ended up owned by {u}:{g} (squashed or forced by the server)"),
            advice,
        ),
        Err(e) => Check::fail("chown", format!("cannot give a new folder to {uid}:{gid}: {e}"), advice),
    }
}

/// The path itself if it exists, else its nearest existing ancestor, symlinks resolved, with the rest appended.
fn resolve_for_mount_lookup(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(path)).unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(c, |p: PathBuf, name: &&std::ffi::OsStr| p.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return abs,
        }
    }
}

fn filesystem_checks(base: &Path, mount_table: &Path) -> Vec<Check> {
    let text = match std::fs::read_to_string(mount_table) {
        Ok(t) => t,
        Err(e) => {
            return vec![Check::warn(
                "filesystem",
                format!("cannot read the mount table {}: {e}", mount_table.display()),
                "run on Linux, or pass --mounts with a mount table",
            )]
        }
    };
    let table = mounts::parse_mount_table(&text);
    let resolved = resolve_for_mount_lookup(base);
    let Some(mount) = mounts::find_mount(&table, &resolved) else {
        return vec![Check::warn(
            "filesystem",
            format!("no mount in {} holds {}", mount_table.display(), resolved.display()),
            "check the mount table",
        )];
    };
    let kind = mounts::classify(mount, Path::new("/var/run/efs").is_dir());
    let what =
        format!("{} ({} on {}, mounted at {})", kind.label(), mount.fstype, mount.device, mount.mount_point.display());
    let details = json!({
        "kind": kind.label(), "fstype": mount.fstype, "device": mount.device,
        "mount_point": mount.mount_point, "options": mount.options.join(","),
    });
    let looks_like_efs = resolved.to_string_lossy().to_ascii_lowercase().contains("efs");
    let check = match kind {
        FsKind::Local if looks_like_efs => Check::warn(
            "filesystem",
            format!("{} looks like an EFS path but is on {what}", resolved.display()),
            "is EFS mounted? Files written now stay on this machine and are hidden once EFS is mounted over them; \
             mount it first (docs/deploy/aws-efs.md)",
        ),
        FsKind::Local => Check::pass("filesystem", format!("{what}: local disk")),
        FsKind::Tmpfs => Check::warn(
            "filesystem",
            format!("{what}: held in memory, every student's files are lost at reboot"),
            "use a local disk or EFS for WORKSPACE_BASE_PATH",
        ),
        FsKind::Overlay => Check::warn(
            "filesystem",
            format!("{what}: a container's own file system; the engine cannot bind-mount it into workspaces"),
            "mount the host folder into the workspaced container at the same path (see docs/deploy/compose.yaml)",
        ),
        FsKind::Nfs | FsKind::Nfs4 | FsKind::Efs => Check::pass("filesystem", what),
        FsKind::Other => Check::warn(
            "filesystem",
            format!("{what}: not tested with workspaces"),
            "prefer a local disk, or NFS 4.1/EFS with the recommended options",
        ),
    }
    .with_details(details);
    let mut checks = vec![check];
    if kind.is_nfs() {
        checks.extend(mounts::nfs_option_checks(mount));
    }
    checks
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn small_files_check(base: &Path, n: usize) -> Check {
    let n = n.max(1);
    let run = || -> io::Result<[Duration; 4]> {
        let scratch = Scratch::create(scratch_path(base, "-files"))?;
        let paths: Vec<PathBuf> = (0..n).map(|i| scratch.0.join(format!("f{i:05}.txt"))).collect();
        let content = [b'x'; 200];
        let t = Instant::now();
        for p in &paths {
            std::fs::write(p, content)?;
        }
        let create = t.elapsed();
        let t = Instant::now();
        for p in &paths {
            std::fs::symlink_metadata(p)?;
        }
        let stat = t.elapsed();
        let t = Instant::now();
        for p in &paths {
            std::fs::read(p)?;
        }
        let read = t.elapsed();
        let t = Instant::now();
        for p in &paths {
            std::fs::remove_file(p)?;
        }
        Ok([create, stat, read, t.elapsed()])
    };
    match run() {
        Ok([create, stat, read, delete]) => {
            let total = create + stat + read + delete;
            let budget = SMALL_FILES_BUDGET.mul_f64(n as f64 / SMALL_FILES_REFERENCE as f64);
            let reason = format!(
                "{n} small files: create {} ms, stat {} ms, read {} ms, delete {} ms, total {} ms (limit {} ms)",
                ms(create),
                ms(stat),
                ms(read),
                ms(delete),
                ms(total),
                ms(budget)
            );
            let details = json!({
                "files": n, "create_ms": ms(create), "stat_ms": ms(stat), "read_ms": ms(read),
                "delete_ms": ms(delete), "total_ms": ms(total), "limit_ms": ms(budget),
            });
            let check = if total > budget {
                Check::warn("small_files", reason, SLOW_SMALL_FILES_ADVICE)
            } else {
                Check::pass("small_files", reason)
            };
            check.with_details(details)
        }
        Err(e) => Check::fail(
            "small_files",
            format!("the small-file test failed: {e}"),
            "check free space and inodes (df -h, df -i) on the base path",
        ),
    }
}

fn git_available() -> bool {
    Command::new("git").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn git(dir: &Path, args: &[&str]) -> io::Result<Duration> {
    let t = Instant::now();
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=workspaced doctor",
            "-c",
            "user.email=doctor@localhost",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "safe.directory=*",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!("git {}: {}", args.join(" "), stderr.trim())));
    }
    Ok(t.elapsed())
}

fn git_status_check(base: &Path, n: usize) -> Check {
    if !git_available() {
        return Check::warn(
            "git_status",
            "git is not installed here, so git status latency was not measured",
            "install git (apt-get install git) and run doctor again",
        );
    }
    let n = n.max(1);
    let run = || -> io::Result<(Duration, Duration)> {
        let scratch = Scratch::create(scratch_path(base, "-git"))?;
        // A project-like tree: folders of 25 files each.
        for i in 0..n {
            let dir = scratch.0.join(format!("src/m{:03}", i / 25));
            if i % 25 == 0 {
                std::fs::create_dir_all(&dir)?;
            }
            std::fs::write(dir.join(format!("file{i:05}.py")), format!("def f{i}():\n    return {i}\n"))?;
        }
        git(&scratch.0, &["init", "-q"])?;
        git(&scratch.0, &["add", "-A"])?;
        git(&scratch.0, &["commit", "-q", "-m", "doctor"])?;
        // The first status may re-read files written in the same second as the index; the second is steady state.
        let first = git(&scratch.0, &["status", "--porcelain"])?;
        let second = git(&scratch.0, &["status", "--porcelain"])?;
        Ok((first, second))
    };
    match run() {
        Ok((first, second)) => {
            let reason = format!(
                "git status on {n} files: {} ms, then {} ms (limit {} ms)",
                ms(first),
                ms(second),
                ms(GIT_STATUS_BUDGET)
            );
            let details = json!({ "files": n, "first_ms": ms(first), "second_ms": ms(second),
                "limit_ms": ms(GIT_STATUS_BUDGET) });
            let check = if second > GIT_STATUS_BUDGET {
                Check::warn("git_status", reason, SLOW_GIT_STATUS_ADVICE)
            } else {
                Check::pass("git_status", reason)
            };
            check.with_details(details)
        }
        Err(e) => Check::warn("git_status", format!("the git status test could not run: {e}"), ""),
    }
}

fn student_folders_check(base: &Path, uid: u32, gid: u32) -> Check {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) => return Check::fail("student_folders", format!("cannot list {}: {e}", base.display()), ""),
    };
    let mut total = 0usize;
    let mut bad: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Our scratch and import folders start with a dot, which no student id does.
        if StudentId::parse(&name).is_err() {
            continue;
        }
        total += 1;
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() {
            bad.push(format!("{name} (not a directory)"));
        } else if (meta.uid(), meta.gid()) != (uid, gid) {
            bad.push(format!("{name} (owner {}:{})", meta.uid(), meta.gid()));
        } else if meta.mode() & 0o007 != 0 {
            bad.push(format!("{name} (mode {:o})", meta.mode() & 0o7777));
        }
    }
    bad.sort();
    if bad.is_empty() {
        return Check::pass(
            "student_folders",
            format!("{total} student folder(s), all owned by {uid}:{gid} and closed to others"),
        );
    }
    let count = bad.len();
    let mut listed = bad.iter().take(LISTED_FOLDERS).cloned().collect::<Vec<_>>().join(", ");
    if count > LISTED_FOLDERS {
        listed.push_str(&format!(" and {} more", count - LISTED_FOLDERS));
    }
    Check::warn(
        "student_folders",
        format!("{count} of {total} student folder(s) have a wrong owner or mode: {listed}"),
        format!(
            "start the workspace (it fixes the owner) or chown {uid}:{gid} {0}/<id> && chmod 700 {0}/<id>",
            base.display()
        ),
    )
    .with_details(json!({ "checked": total, "wrong": bad }))
}

async fn engine_checks(settings: &Settings, o: &DoctorOptions) -> Vec<Check> {
    let advice = "start the engine (systemctl start docker) and make sure workspaced can reach /var/run/docker.sock \
                  (or DOCKER_HOST)";
    let runtime = match DockerRuntime::connect_lazy(settings.instance.clone(), o.engine_timeout) {
        Ok(r) => r,
        Err(e) => return vec![Check::fail("docker", format!("cannot set up the Docker client: {e}"), advice)],
    };
    let bound = o.engine_timeout + Duration::from_secs(1);
    match tokio::time::timeout(bound, runtime.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return vec![Check::fail("docker", format!("{e} (image not checked)"), advice)],
        Err(_) => {
            return vec![Check::fail("docker", format!("no answer within {bound:?} (image not checked)"), advice)]
        }
    }
    let mut checks = vec![Check::pass("docker", "the engine answers")];
    let image = &settings.workspace.image;
    checks.push(match tokio::time::timeout(bound, runtime.image_present(image)).await {
        Ok(Ok(true)) => Check::pass("image", format!("{image} is present")),
        Ok(Ok(false)) => Check::fail(
            "image",
            format!("{image} is not present (images are never pulled)"),
            format!("build it: workspaced image build --tag {image}"),
        ),
        Ok(Err(e)) => Check::fail("image", format!("cannot inspect {image}: {e}"), advice),
        Err(_) => Check::fail("image", format!("no answer within {bound:?}"), advice),
    });
    if settings.runtime == crate::runtime::RuntimeKind::Swarm {
        checks.extend(swarm_egress_checks(settings, &o.firewall).await);
    } else {
        checks.push(egress_check(settings, &runtime, &o.firewall, bound).await);
    }
    // The system the seeds describe: named volumes not migrated yet, or still mounted by its containers.
    checks.push(
        match tokio::time::timeout(bound, crate::ops::volumes::old_system_check(&runtime, &settings.base_path)).await {
            Ok(check) => check,
            Err(_) => Check::warn("old_volumes", format!("no answer within {bound:?}"), ""),
        },
    );
    checks
}

/// Are the rules that keep workspaces from instance metadata and NFS in place for the network's bridge?
async fn egress_check(settings: &Settings, runtime: &DockerRuntime, firewall: &Firewall, bound: Duration) -> Check {
    if settings.egress_rules == EgressMode::Off {
        return Check::pass(
            "egress",
            "not checked: egress_rules = off (the operator's firewall must drop 169.254.0.0/16 and port 2049 from \
             the workspaces' network; docs/deploy/aws-efs.md)",
        );
    }
    let (bridge, exists) = match tokio::time::timeout(bound, runtime.network_bridge()).await {
        Ok(Ok(Some(bridge))) => (bridge, true),
        Ok(Ok(None)) => (egress::BRIDGE.to_owned(), false),
        Ok(Err(e)) => return Check::fail("egress", format!("cannot inspect the workspaces' network: {e}"), ""),
        Err(_) => return Check::fail("egress", format!("no answer within {bound:?} about the network"), ""),
    };
    bridge_rules_check("egress", bridge, exists, firewall).await
}

/// With `runtime = swarm`: the rules for the swarm network's bridge and for `docker_gwbridge` on this node (each
/// node needs them; `workspaced serve` installs them only where it runs).
async fn swarm_egress_checks(settings: &Settings, firewall: &Firewall) -> Vec<Check> {
    use crate::runtime::swarm::{SwarmRuntime, BRIDGE};
    let mut checks = Vec::new();
    if settings.egress_rules == EgressMode::Off {
        checks.push(Check::pass(
            "egress",
            "not checked: egress_rules = off (the operator's firewall must drop 169.254.0.0/16 and port 2049 from \
             wsd-swarm and docker_gwbridge on every node; docs/deploy/swarm.md)",
        ));
        return checks;
    }
    for bridge in SwarmRuntime::bridges() {
        let exists = Path::new("/sys/class/net").join(bridge).exists();
        let name = if bridge == BRIDGE { "egress_swarm" } else { "egress_gwbridge" };
        checks.push(bridge_rules_check(name, bridge.to_owned(), exists, firewall).await);
    }
    checks
}

/// Are the egress rules for `bridge` in place? `exists`: whether the bridge is there yet (missing rules for a
/// bridge that does not exist are a warning, not a failure).
async fn bridge_rules_check(name: &'static str, bridge: String, exists: bool, firewall: &Firewall) -> Check {
    let (fw, b) = (firewall.clone(), bridge.clone());
    let found = tokio::task::spawn_blocking(move || fw.missing(&b))
        .await
        .unwrap_or_else(|e| Err(EgressError::Lock(io::Error::other(e.to_string()))));
    let chain = &firewall.chain;
    let missing = match found {
        Ok(missing) if missing.is_empty() => {
            return Check::pass(
                name,
                format!(
                    "{chain} drops link-local (169.254.0.0/16) and NFS (2049) traffic from {bridge}, jumped to \
                         from {}",
                    firewall.parent
                ),
            )
            .with_details(json!({ "bridge": bridge, "chain": chain }))
        }
        Ok(missing) => missing,
        Err(EgressError::NotPermitted(e)) => {
            return Check::warn(name, format!("cannot read the firewall: {e}"), "run `workspaced doctor` as root")
        }
        Err(e) => {
            return Check::fail(
                name,
                format!("cannot check the egress rules: {e}"),
                "install iptables (Docker needs it too) and run Docker with its iptables rules on",
            )
        }
    };
    let what: Vec<&str> = missing.iter().map(|r| r.purpose).collect();
    let mut commands = Vec::new();
    if missing.iter().any(|r| r.chain == *chain) {
        commands.push(format!("iptables -w -N {chain} 2>/dev/null"));
    }
    commands.extend(missing.iter().map(|r| r.command(r.chain == firewall.parent)));
    let advice = format!(
        "start a workspace with `workspaced serve` running as root (egress_rules = install puts them in), or add \
         them: {}",
        commands.join("; ")
    );
    let details = json!({ "bridge": bridge, "chain": chain, "missing": commands });
    if exists {
        let reason = format!("workspaces on {bridge} can reach what these would stop: {}", what.join("; "));
        Check::fail(name, reason, advice).with_details(details)
    } else {
        let reason = format!(
            "the workspaces' network does not exist yet; rules for its bridge {bridge} are missing: {}",
            what.join("; ")
        );
        Check::warn(name, reason, advice).with_details(details)
    }
}

/// Opens the database read-only and compares its schema with this binary's migrations, without applying any:
/// a newer `doctor` run against production must not migrate it behind the operator's back.
async fn database_check(settings: &Settings) -> Check {
    // What the report shows: never a password.
    let url = &crate::store::redacted_url(&settings.database_url);
    let opened = match tokio::time::timeout(Duration::from_secs(15), Store::open_read_only(&settings.database_url))
        .await
    {
        Ok(opened) => opened,
        Err(_) => {
            return Check::fail("database", format!("{url}: no answer within 15 s"), "is another process locking it?")
        }
    };
    let store = match opened {
        Ok(store) => store,
        Err(StoreError::Missing(path)) if path.parent().is_some_and(|p| p.as_os_str().is_empty() || p.is_dir()) => {
            return Check::pass("database", format!("{} does not exist yet; `serve` creates it", path.display()))
        }
        Err(e) => return Check::fail("database", format!("{url}: {e}"), "check DATABASE_URL: its folder must exist"),
    };
    match store.schema_state().await {
        Ok(state) => schema_check(url, &state),
        Err(e) => Check::fail("database", format!("{url}: {e}"), "check DATABASE_URL"),
    }
}

fn schema_check(url: &str, state: &SchemaState) -> Check {
    let details = json!({ "applied": state.applied, "pending": state.pending, "unknown": state.unknown,
                          "broken": state.broken });
    let check = if !state.unknown.is_empty() {
        Check::fail(
            "database",
            format!("{url}: its schema is ahead of this binary (unknown migrations {:?})", state.unknown),
            "a newer workspaced migrated this database: run that version, not this one",
        )
    } else if !state.broken.is_empty() {
        Check::fail(
            "database",
            format!("{url}: migrations {:?} failed or changed since they were applied", state.broken),
            "restore the database from a backup",
        )
    } else if !state.pending.is_empty() {
        Check::warn(
            "database",
            format!("{url}: its schema is behind this binary; pending migrations: {}", state.pending.join(", ")),
            "`workspaced serve` applies them at start; back up the database file first",
        )
    } else {
        Check::pass("database", format!("{url} opens read-only and has this binary's migrations"))
    };
    check.with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMAZON_LINUX: &str = "root:x:0:0:root:/root:/bin/bash\n\
        sshd:x:74:74:Privilege-separated SSH:/usr/share/empty.sshd:/sbin/nologin\n\
        ec2-user:x:1000:1000:EC2 Default User:/home/ec2-user:/bin/bash\n";

    #[test]
    fn the_default_login_user_holding_the_workspace_uid_is_a_warning_that_names_it_and_the_ways_out() {
        let check = host_user(AMAZON_LINUX, "/etc/passwd", 1000, 1000);
        assert_eq!(check.status, CheckStatus::Warn, "{}", check.reason);
        assert!(check.reason.contains("`ec2-user`") && check.reason.contains("every"), "{}", check.reason);
        for way in ["Session Manager", "another uid", "WORKSPACED_UID", "workspaced repair"] {
            assert!(check.advice.contains(way), "{way} missing: {}", check.advice);
        }
    }

    #[test]
    fn an_account_without_a_login_shell_or_no_account_at_all_passes() {
        let service = "root:x:0:0:root:/root:/bin/bash\nstudents:x:2001:2001::/nonexistent:/usr/sbin/nologin\n";
        let check = host_user(service, "/etc/passwd", 2001, 2001);
        assert_eq!(check.status, CheckStatus::Pass, "{}", check.reason);
        assert!(check.reason.contains("`students`") && check.reason.contains("without a login shell"));

        let check = host_user(AMAZON_LINUX, "/etc/passwd", 2001, 2001);
        assert_eq!(check.status, CheckStatus::Pass, "{}", check.reason);
        assert!(check.reason.contains("no account") && check.reason.contains("getent passwd 2001"));
    }

    #[test]
    fn an_empty_shell_field_counts_as_a_login_shell() {
        let check = host_user("admin:x:1000:1000:Debian:/home/admin:\n", "/etc/passwd", 1000, 1000);
        assert_eq!(check.status, CheckStatus::Warn, "{}", check.reason);
    }

    #[test]
    fn the_advice_for_slow_storage_recommends_general_purpose_with_elastic_and_never_max_io_alone() {
        for advice in [SLOW_SMALL_FILES_ADVICE, SLOW_GIT_STATUS_ADVICE] {
            assert!(advice.contains("General Purpose") && advice.contains("Elastic"), "{advice}");
            assert!(advice.contains("not Max I/O"), "Max I/O is only named to rule it out: {advice}");
            assert!(!advice.contains("PercentIOLimit") && !advice.contains("maxIO"), "{advice}");
        }
    }
}
