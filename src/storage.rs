//! Student folders on the host: `<base>/<student-id>`, owned by the workspace uid/gid, mode 0700. Works the same on
//! local disk and on an NFS/EFS mount. Beside them, each student's IDE state (settings, extensions, backups of
//! unsaved editors) in `<base>/.ide-state/<student-id>`, kept apart so the project folder stays the student's own.
//! Nothing here ever deletes a student's files.

use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::domain::StudentId;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("WORKSPACE_BASE_PATH {0} does not exist; create it (on EFS: is the file system mounted?)")]
    BaseMissing(PathBuf),
    #[error("WORKSPACE_BASE_PATH {0} is not a directory")]
    BaseNotDirectory(PathBuf),
    #[error("WORKSPACE_BASE_PATH {path} is not writable: {source}")]
    BaseNotWritable { path: PathBuf, source: io::Error },
    #[error("cannot prepare {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("WORKSPACE_BASE_PATH {path} did not answer ({what}) within {seconds} s: is the mount stalled?")]
    Stalled { path: PathBuf, what: &'static str, seconds: u64 },
    #[error("WORKSPACE_BASE_PATH {path} is not answering: {blocked} file-system calls already wait on it")]
    TooManyBlocked { path: PathBuf, blocked: usize },
}

impl StorageError {
    /// The I/O error of a call on `path`, for `map_err`.
    pub fn at(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StorageError {
        let path = path.into();
        move |source| StorageError::Io { path, source }
    }

    /// Whether the base path as a whole is unusable now (missing, read-only, stalled), rather than one folder.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, StorageError::Io { .. })
    }
}

/// How blocking file-system calls on the base path are run: off the async threads, each with a deadline, and at most
/// `max_blocked` at once. A mount that stops answering (`hard` NFS, EFS) blocks a thread in the kernel until it
/// answers, and nothing can cancel that: the caller gets `Stalled` at the deadline, the thread stays counted until its
/// call returns, and once `max_blocked` threads hang, further calls fail at once instead of piling up.
#[derive(Debug, Clone)]
pub struct Gate {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    max_blocked: usize,
    /// The deadline of one call.
    pub timeout: std::time::Duration,
}

impl Gate {
    pub fn new(timeout: std::time::Duration, max_blocked: usize) -> Self {
        let max_blocked = max_blocked.max(1);
        Self { permits: std::sync::Arc::new(tokio::sync::Semaphore::new(max_blocked)), max_blocked, timeout }
    }

    /// Calls on the base path that have not returned yet (for `/readyz` and metrics).
    pub fn blocked(&self) -> usize {
        self.max_blocked - self.permits.available_permits()
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(10), 16)
    }
}

/// Tells a call that finished after its caller gave up to change nothing more.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Abandoned {
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst)
    }
}

/// Mode of a student folder: owner only. Never world-readable.
pub const STUDENT_DIR_MODE: u32 = 0o700;

/// The folder below the base that holds every student's IDE state folder. It starts with a dot, which no student id
/// does, so no listing of the base ever takes it for a student. Mode 0700, owned by whoever runs the service: the
/// engine (root) resolves the bind mount, the container sees only the student's own folder.
pub const IDE_STATE_DIR: &str = ".ide-state";

/// What a new IDE state folder starts with (never written into an existing one). Empty: code-server's own defaults
/// keep unsaved editors (see docs/ide-state.md).
pub const IDE_STATE_SEED: &[(&str, &str)] = &[];

/// Who must own the student folders `ensure_student_dir` prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// The workspace user: folders are handed to uid:gid (what the service does before a start).
    Workspace { uid: u32, gid: u32 },
    /// Whoever owns them now: for tools that only list, probe or read (migrate, a target check), never chown.
    Unchanged,
}

#[derive(Debug, Clone)]
pub struct Storage {
    base: PathBuf,
    ownership: Ownership,
    gate: Gate,
}

impl Storage {
    /// Folders owned by the workspace user `uid:gid`.
    pub fn new(base: impl Into<PathBuf>, uid: u32, gid: u32) -> Self {
        Self::with_ownership(base, Ownership::Workspace { uid, gid })
    }

    pub fn with_ownership(base: impl Into<PathBuf>, ownership: Ownership) -> Self {
        Self { base: base.into(), ownership, gate: Gate::default() }
    }

    /// The same folders, with calls through `gate` (the service's, from its settings).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = gate;
        self
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Runs the blocking `call` through the gate with its deadline (`timeout` instead, for a call that is not one
    /// quick file-system operation: a walk, a probe that must answer sooner). `call` gets an
    /// [`Abandoned`] flag, set when the caller gave up: it must change nothing after seeing it set.
    pub async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        timeout: Option<std::time::Duration>,
        call: impl FnOnce(&Storage, &Abandoned) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        let Ok(permit) = self.gate.permits.clone().try_acquire_owned() else {
            crate::metrics::storage_call("refused");
            return Err(StorageError::TooManyBlocked { path: self.base.clone(), blocked: self.gate.blocked() });
        };
        let timeout = timeout.unwrap_or(self.gate.timeout);
        let abandoned = Abandoned::default();
        let (this, flag) = (self.clone(), abandoned.clone());
        let task = tokio::task::spawn_blocking(move || {
            let result = call(&this, &flag);
            drop(permit);
            result
        });
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => {
                crate::metrics::storage_call(if result.is_ok() { "ok" } else { "error" });
                result
            }
            Ok(Err(join)) => {
                Err(StorageError::Io { path: self.base.clone(), source: io::Error::other(join.to_string()) })
            }
            Err(_) => {
                abandoned.set();
                crate::metrics::storage_call("stalled");
                tracing::warn!(base = %self.base.display(), what, seconds = timeout.as_secs(), "file-system call on the base path stalled");
                Err(StorageError::Stalled { path: self.base.clone(), what, seconds: timeout.as_secs().max(1) })
            }
        }
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The folder of a student. Built only from a validated `StudentId`, so it is always directly below the base.
    pub fn student_dir(&self, student: &StudentId) -> PathBuf {
        self.base.join(student.as_str())
    }

    /// The IDE state folder of a student: `<base>/.ide-state/<id>`.
    pub fn ide_state_dir(&self, student: &StudentId) -> PathBuf {
        self.base.join(IDE_STATE_DIR).join(student.as_str())
    }

    /// Makes sure `<base>/.ide-state` (mode 0700) and the student's state folder in it (owned by uid:gid, mode
    /// 0700) exist, fixing the owner and mode of an existing one. A new folder gets `seed`'s files (relative path,
    /// content), owned by uid:gid too; an existing one is never written into. Returns the absolute path and whether
    /// the folder was new. Blocking, like [`Storage::ensure_student_dir_unless`], and stops before each change once
    /// `abandoned` is set.
    pub fn ensure_ide_state_dir_unless(
        &self,
        student: &StudentId,
        seed: &[(&str, &str)],
        abandoned: &Abandoned,
    ) -> Result<(PathBuf, bool), StorageError> {
        let base = self.check_base()?;
        let parent = base.join(IDE_STATE_DIR);
        let dir = parent.join(student.as_str());
        let gave_up =
            || StorageError::Io { path: dir.clone(), source: io::Error::other("abandoned after its deadline") };
        if abandoned.is_set() {
            return Err(gave_up());
        }
        create_private_dir(&parent, None)?;
        if abandoned.is_set() {
            return Err(gave_up());
        }
        let owner = match self.ownership {
            Ownership::Workspace { uid, gid } => Some((uid, gid)),
            Ownership::Unchanged => None,
        };
        let created = create_private_dir(&dir, owner)?;
        if created {
            for (relative, content) in seed {
                write_seed(&dir, relative, content, owner).map_err(StorageError::at(dir.join(relative)))?;
            }
        }
        Ok((dir, created))
    }

    /// The student folders below the base: directories named by a valid student id, sorted. Scratch, import and
    /// migration folders start with a dot, which no student id does, so they are never listed.
    pub fn student_folders(&self) -> io::Result<Vec<StudentId>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.base)? {
            let entry = entry?;
            let Ok(student) = StudentId::parse(&entry.file_name().to_string_lossy()) else { continue };
            if entry.file_type()?.is_dir() {
                out.push(student);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Checks that the base path exists, is a directory and is writable (by writing and removing a probe file:
    /// permission bits say little on NFS or for root). Returns the absolute base path.
    pub fn check_base(&self) -> Result<PathBuf, StorageError> {
        let meta = match std::fs::metadata(&self.base) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StorageError::BaseMissing(self.base.clone())),
            Err(source) => return Err(StorageError::Io { path: self.base.clone(), source }),
        };
        if !meta.is_dir() {
            return Err(StorageError::BaseNotDirectory(self.base.clone()));
        }
        // Unique per call: concurrent starts probe at the same time.
        static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let probe = self.base.join(format!(".workspaced-probe-{}-{n}", std::process::id()));
        std::fs::write(&probe, b"probe")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|source| StorageError::BaseNotWritable { path: self.base.clone(), source })?;
        std::fs::canonicalize(&self.base).map_err(|source| StorageError::Io { path: self.base.clone(), source })
    }

    /// Makes sure `<base>/<student>` exists, is owned by uid:gid and is not readable by others; fixes an existing
    /// folder whose owner (with `Ownership::Workspace`) or mode is wrong (the folder itself, not its contents). Returns its absolute path.
    /// Blocking: call from `spawn_blocking` (NFS can take its time).
    pub fn ensure_student_dir(&self, student: &StudentId) -> Result<PathBuf, StorageError> {
        self.ensure_student_dir_unless(student, &Abandoned::default())
    }

    /// [`Storage::ensure_student_dir`] that stops before each change once `abandoned` is set (its caller gave up).
    pub fn ensure_student_dir_unless(
        &self,
        student: &StudentId,
        abandoned: &Abandoned,
    ) -> Result<PathBuf, StorageError> {
        let base = self.check_base()?;
        let dir = base.join(student.as_str());
        let io_err = |source| StorageError::Io { path: dir.clone(), source };
        let gave_up =
            || StorageError::Io { path: dir.clone(), source: io::Error::other("abandoned after its deadline") };
        if abandoned.is_set() {
            return Err(gave_up());
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_err(e)),
        }
        let meta = std::fs::symlink_metadata(&dir).map_err(io_err)?;
        if !meta.is_dir() {
            return Err(io_err(io::Error::other("exists and is not a directory")));
        }
        if abandoned.is_set() {
            return Err(gave_up());
        }
        if let Ownership::Workspace { uid, gid } = self.ownership {
            if meta.uid() != uid || meta.gid() != gid {
                tracing::info!(student = %student, uid = meta.uid(), gid = meta.gid(), "fixing owner of student folder");
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io_err)?;
            }
        }
        if meta.mode() & 0o7777 != STUDENT_DIR_MODE {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(STUDENT_DIR_MODE)).map_err(io_err)?;
        }
        Ok(dir)
    }
}

/// Creates `dir` (mode 0700) or checks the one there: a directory, not a symlink; fixes its owner (when `owner` is
/// given) and mode. Returns whether it was created.
fn create_private_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<bool, StorageError> {
    let io_err = StorageError::at(dir);
    let created = match std::fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(io_err(e)),
    };
    let meta = std::fs::symlink_metadata(dir).map_err(StorageError::at(dir))?;
    if !meta.is_dir() {
        return Err(StorageError::at(dir)(io::Error::other("exists and is not a directory")));
    }
    if let Some((uid, gid)) = owner {
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(StorageError::at(dir))?;
        }
    }
    if meta.mode() & 0o7777 != STUDENT_DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(STUDENT_DIR_MODE))
            .map_err(StorageError::at(dir))?;
    }
    Ok(created)
}

/// Writes one seed file into a state folder that was just created (so nothing of the student's is there yet), with
/// its parent folders, each owned by `owner`.
fn write_seed(dir: &Path, relative: &str, content: &str, owner: Option<(u32, u32)>) -> io::Result<()> {
    let chown = |p: &Path| owner.map_or(Ok(()), |(uid, gid)| std::os::unix::fs::lchown(p, Some(uid), Some(gid)));
    let mut at = dir.to_path_buf();
    let parts: Vec<&str> = relative.split('/').filter(|p| !p.is_empty()).collect();
    let Some((file, folders)) = parts.split_last() else { return Ok(()) };
    for folder in folders {
        at.push(folder);
        std::fs::create_dir(&at)?;
        chown(&at)?;
    }
    at.push(file);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&at)?;
    std::io::Write::write_all(&mut f, content.as_bytes())?;
    chown(&at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_student_folder_is_created_private_and_owned() {
        let base = tempfile::tempdir().unwrap();
        let storage = Storage::new(base.path(), 1000, 1000);
        let s = StudentId::parse("alice").unwrap();
        let dir = storage.ensure_student_dir(&s).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1000, 1000, 0o700));
    }

    #[test]
    fn a_wrong_owner_and_mode_are_fixed_and_files_kept() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("bob");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "data").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let storage = Storage::new(base.path(), 1000, 1000);
        storage.ensure_student_dir(&StudentId::parse("bob").unwrap()).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o777), (1000, 0o700));
        assert_eq!(std::fs::read_to_string(dir.join("keep.txt")).unwrap(), "data");
    }

    #[test]
    fn a_missing_base_or_a_file_as_base_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = StudentId::parse("a").unwrap();
        let missing = Storage::new(tmp.path().join("nope"), 1000, 1000);
        assert!(matches!(missing.ensure_student_dir(&s), Err(StorageError::BaseMissing(_))));
        assert!(!tmp.path().join("nope").exists(), "a missing base is not created");
        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(Storage::new(&file, 1000, 1000).check_base(), Err(StorageError::BaseNotDirectory(_))));
    }

    #[test]
    fn an_ide_state_folder_is_private_owned_seeded_once_and_never_listed_as_a_student() {
        let base = tempfile::tempdir().unwrap();
        let storage = Storage::new(base.path(), 1000, 1000);
        let s = StudentId::parse("alice").unwrap();
        storage.ensure_student_dir(&s).unwrap();
        let seed = [("User/settings.json", "{}\n")];
        let (dir, created) = storage.ensure_ide_state_dir_unless(&s, &seed, &Abandoned::default()).unwrap();
        assert!(created);
        assert_eq!(dir, base.path().canonicalize().unwrap().join(".ide-state/alice"));
        let meta = std::fs::metadata(&dir).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (1000, 1000, 0o700));
        let parent = std::fs::metadata(base.path().join(IDE_STATE_DIR)).unwrap();
        assert_eq!(parent.mode() & 0o777, 0o700, "the parent is closed to others");
        let file = dir.join("User/settings.json");
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 1000);
        assert_eq!(std::fs::metadata(dir.join("User")).unwrap().uid(), 1000);

        // The student's own settings are never overwritten by a later start.
        std::fs::write(&file, "{\"mine\": true}").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (_, created) = storage.ensure_ide_state_dir_unless(&s, &seed, &Abandoned::default()).unwrap();
        assert!(!created);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{\"mine\": true}");
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700, "a wrong mode is fixed");

        assert_eq!(storage.student_folders().unwrap(), vec![s], ".ide-state is not a student");
    }

    #[test]
    fn a_symlink_in_place_of_the_state_folder_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(base.path().join(IDE_STATE_DIR)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), base.path().join(IDE_STATE_DIR).join("eve")).unwrap();
        let storage = Storage::new(base.path(), 1000, 1000);
        let s = StudentId::parse("eve").unwrap();
        assert!(storage.ensure_ide_state_dir_unless(&s, &[], &Abandoned::default()).is_err());
        assert_ne!(std::fs::metadata(elsewhere.path()).unwrap().uid(), 1000, "the link's target is untouched");
    }
}
