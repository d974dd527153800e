//! The one directory walker for reading a student's folder (export, content size, disk usage, migration).
//!
//! A student changes their folder while we read it, so no path component below the root is ever resolved by
//! name from the root again: the root is opened with `O_DIRECTORY|O_NOFOLLOW`, every entry is `fstatat`-ed with
//! `AT_SYMLINK_NOFOLLOW` relative to its parent's descriptor, and what is then opened (a directory to descend, a
//! file to read) is opened relative to that descriptor with `O_NOFOLLOW` and must have the device and inode that
//! were listed. An entry that fails that check was swapped during the walk and is skipped and reported, never
//! followed. Symlinks are read with `readlinkat` and handed out as links. Other file systems mounted below the
//! root are not entered. Order is deterministic: names sorted bytewise, depth first.
//!
//! The write side is [`DirFd`]: a folder reached the same way (opened relative to its parent's descriptor with
//! `O_NOFOLLOW`, identity checked), in which folders and files are created or a file replaced by names relative to
//! that descriptor only. Templates and distributed assignments are written into student folders through it.
//!
//! Also here: [`set_times_nofollow`], the one place that stamps times on something we wrote.

use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl WalkError {
    fn at(path: PathBuf, errno: Errno) -> Self {
        WalkError::Io { path, source: errno.into() }
    }
}

/// What kind of entry the listing saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Socket, fifo or device: reported with its stat, never opened.
    Other,
}

/// A point in time as the file system stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: i64,
}

/// The parts of `struct stat` the ops need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    /// Apparent size in bytes.
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
}

impl Stat {
    pub fn kind(&self) -> Kind {
        match SFlag::from_bits_truncate(self.mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// Whether both name the same inode.
    fn same_inode(&self, other: &Stat) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)] // field widths differ between targets
impl From<FileStat> for Stat {
    fn from(s: FileStat) -> Self {
        Stat {
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            mode: s.st_mode as u32,
            nlink: s.st_nlink as u64,
            uid: s.st_uid,
            gid: s.st_gid,
            size: s.st_size.max(0) as u64,
            blocks: s.st_blocks.max(0) as u64,
            atime: Timestamp { secs: s.st_atime as i64, nanos: s.st_atime_nsec as i64 },
            mtime: Timestamp { secs: s.st_mtime as i64, nanos: s.st_mtime_nsec as i64 },
        }
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(m: &std::fs::Metadata) -> Self {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            mode: m.mode(),
            nlink: m.nlink(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            blocks: m.blocks(),
            atime: Timestamp { secs: m.atime(), nanos: m.atime_nsec() },
            mtime: Timestamp { secs: m.mtime(), nanos: m.mtime_nsec() },
        }
    }
}

/// What a listed entry turned out to be, with what the walk opened or read for it.
#[derive(Debug)]
pub enum Node {
    /// Return [`Descend::Into`] to have the walk list it (later, depth first).
    Dir,
    /// Open for reading, verified to be the listed inode; `None` when the walk was asked not to open files.
    File(Option<File>),
    /// The link's target, as stored; never followed.
    Symlink(PathBuf),
    Other,
}

/// One entry below the root.
#[derive(Debug)]
pub struct Entry<'a> {
    /// Relative to the root.
    pub rel: &'a Path,
    /// Of the opened file for a file, of the listed entry otherwise.
    pub stat: Stat,
    pub node: Node,
    /// The parent folder's descriptor and the entry's name there, for [`Entry::lchown`].
    parent: &'a Dir,
    name: &'a OsStr,
}

impl Entry<'_> {
    /// Changes the owner of the entry itself, by its name relative to the parent's descriptor the walk listed it
    /// in, never following a symlink (`fchownat` with `AT_SYMLINK_NOFOLLOW`): a symlink gets a new owner, its
    /// target does not. For an opened file, `fchown` on that file is exact; this is for folders, links and the rest.
    pub fn lchown(&self, uid: u32, gid: u32) -> io::Result<()> {
        use nix::unistd::{fchownat, Gid, Uid};
        fchownat(
            self.parent,
            self.name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io::Error::from)
    }
}

/// Why an entry was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Gone between listing and use (a running workspace deletes files).
    Vanished,
    /// Something else (another inode, a symlink) stood under the name when it was opened: a student's swap,
    /// never followed.
    Changed,
    /// Another file system is mounted there (like `du -x`, `tar --one-file-system`).
    OtherFileSystem,
}

impl Skip {
    /// How export and migration name it in their reports.
    pub fn reason(self) -> &'static str {
        match self {
            Skip::Vanished => "vanished",
            Skip::Changed => "changed during the walk, not followed",
            Skip::OtherFileSystem => "another file system is mounted there",
        }
    }
}

/// What the visitor is told.
#[derive(Debug)]
pub enum Visit<'a> {
    Entry(Entry<'a>),
    Skipped { rel: &'a Path, why: Skip },
}

/// The visitor's answer for a directory (ignored for anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descend {
    Into,
    Skip,
}

/// Whether regular files are opened for the visitor. Measuring needs only their stat, and an open per file is a
/// round trip on NFS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Files {
    Open,
    StatOnly,
}

/// An opened root folder.
#[derive(Debug)]
pub struct Tree {
    path: PathBuf,
    fd: OwnedFd,
    stat: Stat,
}

impl Tree {
    /// Opens `path` as a directory; a symlink there is refused like any other non-directory.
    pub fn open(path: &Path) -> Result<Tree, WalkError> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOTDIR | Errno::ELOOP) => return Err(WalkError::NotDirectory(path.to_path_buf())),
            Err(e) => return Err(WalkError::at(path.to_path_buf(), e)),
        };
        let stat = fstat(&fd).map_err(|e| WalkError::at(path.to_path_buf(), e))?.into();
        Ok(Tree { path: path.to_path_buf(), fd, stat })
    }

    /// The root's own stat.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Visits every entry below the root (not the root itself). A visitor's error stops the walk.
    pub fn walk<E: From<WalkError>>(
        self,
        files: Files,
        visit: impl FnMut(Visit<'_>) -> Result<Descend, E>,
    ) -> Result<(), E> {
        self.walk_with_hook(files, &mut |_| {}, visit)
    }

    /// [`Tree::walk`] with `between` called after an entry is listed and before it is opened, so tests can swap it
    /// at exactly that moment. Long because the list, the stat, the open and the identity check of one entry must
    /// stay in one place to be seen to use the same descriptor.
    fn walk_with_hook<E: From<WalkError>>(
        self,
        files: Files,
        between: &mut dyn FnMut(&Path),
        mut visit: impl FnMut(Visit<'_>) -> Result<Descend, E>,
    ) -> Result<(), E> {
        let root_dev = self.stat.dev;
        // A directory still to list: its parent's descriptor, its name there, and the inode the listing saw.
        // Directories are opened only when their turn comes, so open descriptors stay bounded by the depth.
        struct Pending {
            parent: Rc<Dir>,
            name: OsString,
            rel: PathBuf,
            listed: Stat,
        }
        let mut stack: Vec<Pending> = Vec::new();
        let root = Dir::from_fd(self.fd).map_err(|e| WalkError::at(self.path.clone(), e))?;
        let mut current = Some((root, PathBuf::new()));
        loop {
            let (mut dir, rel_dir) = match current.take() {
                Some(c) => c,
                None => {
                    let Some(p) = stack.pop() else { return Ok(()) };
                    between(&p.rel);
                    match open_dir_at(&p.parent, &p.name, &p.listed) {
                        Ok(dir) => (dir, p.rel),
                        Err(Opened::Skip(why)) => {
                            visit(Visit::Skipped { rel: &p.rel, why })?;
                            continue;
                        }
                        Err(Opened::Fail(e)) => return Err(WalkError::at(self.path.join(&p.rel), e).into()),
                    }
                }
            };
            let abs = |rel: &Path| self.path.join(rel);
            let mut names = list(&mut dir).map_err(|e| WalkError::at(abs(&rel_dir), e))?;
            let dir_fd = Rc::new(dir);
            names.sort();
            let mut subdirs = Vec::new();
            for name in names {
                let rel = rel_dir.join(&name);
                let listed: Stat = match fstatat(&*dir_fd, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(s) => s.into(),
                    Err(Errno::ENOENT) => {
                        visit(Visit::Skipped { rel: &rel, why: Skip::Vanished })?;
                        continue;
                    }
                    Err(e) => return Err(WalkError::at(abs(&rel), e).into()),
                };
                if listed.dev != root_dev {
                    visit(Visit::Skipped { rel: &rel, why: Skip::OtherFileSystem })?;
                    continue;
                }
                let kind = listed.kind();
                if matches!(kind, Kind::File | Kind::Symlink) {
                    between(&rel);
                }
                let opened = match (kind, files) {
                    (Kind::Dir, _) => Ok((Node::Dir, listed)),
                    (Kind::Other, _) => Ok((Node::Other, listed)),
                    (Kind::File, Files::StatOnly) => Ok((Node::File(None), listed)),
                    (Kind::File, Files::Open) => {
                        open_file_at(&dir_fd, &name, &listed).map(|(f, s)| (Node::File(Some(f)), s))
                    }
                    (Kind::Symlink, _) => read_link_at(&dir_fd, &name).map(|t| (Node::Symlink(t), listed)),
                };
                let (node, stat) = match opened {
                    Ok(o) => o,
                    Err(Opened::Skip(why)) => {
                        visit(Visit::Skipped { rel: &rel, why })?;
                        continue;
                    }
                    Err(Opened::Fail(e)) => return Err(WalkError::at(abs(&rel), e).into()),
                };
                let descend = visit(Visit::Entry(Entry { rel: &rel, stat, node, parent: &dir_fd, name: &name }))?;
                if kind == Kind::Dir && descend == Descend::Into {
                    subdirs.push(Pending { parent: dir_fd.clone(), name, rel, listed });
                }
            }
            // Reversed, so the stack pops them in name order.
            stack.extend(subdirs.into_iter().rev());
        }
    }
}

/// Why opening a listed entry gave nothing to visit.
enum Opened {
    Skip(Skip),
    Fail(Errno),
}

/// The names in a directory, without `.` and `..`.
fn list(dir: &mut Dir) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        let bytes = name.to_bytes();
        if bytes != b"." && bytes != b".." {
            names.push(OsStr::from_bytes(bytes).to_owned());
        }
    }
    Ok(names)
}

fn open_dir_at(parent: &impl AsFd, name: &OsStr, listed: &Stat) -> Result<Dir, Opened> {
    let (fd, _) = open_verified_dir(parent, name, listed)?;
    Dir::from_fd(fd).map_err(Opened::Fail)
}

/// Opens a listed directory relative to `parent` without following a symlink, and checks it is the listed inode.
fn open_verified_dir(parent: &impl AsFd, name: &OsStr, listed: &Stat) -> Result<(OwnedFd, Stat), Opened> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(parent, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => Opened::Skip(Skip::Vanished),
        // A symlink (ELOOP with O_NOFOLLOW) or a file now stands under the name.
        Errno::ELOOP | Errno::ENOTDIR => Opened::Skip(Skip::Changed),
        e => Opened::Fail(e),
    })?;
    let now: Stat = fstat(&fd).map_err(Opened::Fail)?.into();
    if !now.same_inode(listed) {
        return Err(Opened::Skip(Skip::Changed));
    }
    Ok((fd, now))
}

/// Opens a listed regular file for reading. First as `O_PATH`, which opens nothing on the device side: a student
/// can swap in a device node (containers keep `CAP_MKNOD`), and opening one for real can have effects (a watchdog
/// arms, a tape rewinds). Only once the descriptor is known to be the listed regular file is it reopened for
/// reading, through `/proc/self/fd`, which names that inode and no path the student controls.
fn open_file_at(dir: &impl AsFd, name: &OsStr, listed: &Stat) -> Result<(File, Stat), Opened> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let path_fd = openat(dir, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => Opened::Skip(Skip::Vanished),
        e => Opened::Fail(e),
    })?;
    let seen: Stat = fstat(&path_fd).map_err(Opened::Fail)?.into();
    if seen.kind() != Kind::File || !seen.same_inode(listed) {
        return Err(Opened::Skip(Skip::Changed));
    }
    // No O_NOFOLLOW here: the magic link is the point, and it resolves to the verified inode itself.
    let magic = format!("/proc/self/fd/{}", path_fd.as_fd().as_raw_fd());
    let fd = nix::fcntl::open(magic.as_str(), OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())
        .map_err(Opened::Fail)?;
    let stat: Stat = fstat(&fd).map_err(Opened::Fail)?.into();
    if !stat.same_inode(listed) {
        return Err(Opened::Skip(Skip::Changed));
    }
    Ok((File::from(fd), stat))
}

fn read_link_at(dir: &impl AsFd, name: &OsStr) -> Result<PathBuf, Opened> {
    nix::fcntl::readlinkat(dir, name).map(PathBuf::from).map_err(|e| match e {
        Errno::ENOENT => Opened::Skip(Skip::Vanished),
        // No longer a symlink.
        Errno::EINVAL => Opened::Skip(Skip::Changed),
        e => Opened::Fail(e),
    })
}

/// The outcome of a write by name inside a [`DirFd`] that did not fail.
#[derive(Debug)]
pub enum Made<T> {
    /// Done: the new folder, or the bytes written.
    New(T),
    /// Something already stands under the name (its stat, not followed): nothing was written.
    Exists(Stat),
    /// Not done, and reported: the name was swapped or vanished during the run, or is another file system.
    Skipped(Skip),
}

/// A folder of a tree, reached without following any name, for writing into it (and reading from it) by names
/// relative to its descriptor. Each one below a root is opened from its parent's descriptor with `O_NOFOLLOW` and
/// checked to be the inode that was listed (or, for one just made, a folder we own) on the root's file system, so a
/// student who swaps a folder for a symlink mid-run gets a skip, and nothing is ever written outside the root.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    stat: Stat,
    /// For messages only: never resolved again.
    path: PathBuf,
    /// The root's device: another file system mounted below is never entered.
    root_dev: u64,
}

impl DirFd {
    /// Opens `path` as the root of the writes; a symlink there is refused like any other non-directory.
    pub fn open_root(path: &Path) -> Result<DirFd, WalkError> {
        let Tree { path, fd, stat } = Tree::open(path)?;
        Ok(DirFd { fd, stat, path, root_dev: stat.dev })
    }

    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// Where it is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the names written in this folder durable (`fsync` on the folder), before a record says they are there.
    pub fn sync(&self) -> Result<(), WalkError> {
        nix::unistd::fsync(&self.fd).map_err(|e| WalkError::at(self.path.clone(), e))
    }

    /// Walks this folder with [`Tree::walk`] (its root check done: this descriptor is the verified folder).
    pub fn into_tree(self) -> Tree {
        Tree { path: self.path, fd: self.fd, stat: self.stat }
    }

    fn error(&self, name: &OsStr, errno: Errno) -> WalkError {
        WalkError::at(self.path.join(name), errno)
    }

    /// What stands under `name`, not followed; `None` when nothing does.
    pub fn stat_at(&self, name: &OsStr) -> Result<Option<Stat>, WalkError> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => Ok(Some(s.into())),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Opens the folder `listed` under `name`: skipped when it is on another file system or no longer that folder.
    pub fn open_dir(&self, name: &OsStr, listed: &Stat) -> Result<Result<DirFd, Skip>, WalkError> {
        if listed.dev != self.root_dev {
            return Ok(Err(Skip::OtherFileSystem));
        }
        match open_verified_dir(&self.fd, name, listed) {
            Ok((fd, stat)) => Ok(Ok(self.child(fd, stat, name))),
            Err(Opened::Skip(why)) => Ok(Err(why)),
            Err(Opened::Fail(e)) => Err(self.error(name, e)),
        }
    }

    fn child(&self, fd: OwnedFd, stat: Stat, name: &OsStr) -> DirFd {
        DirFd { fd, stat, path: self.path.join(name), root_dev: self.root_dev }
    }

    /// Opens the regular file `listed` under `name` for reading, the way the walk does (never a device, never a
    /// link, only the listed inode).
    pub fn open_file(&self, name: &OsStr, listed: &Stat) -> Result<Result<(File, Stat), Skip>, WalkError> {
        if listed.dev != self.root_dev {
            return Ok(Err(Skip::OtherFileSystem));
        }
        match open_file_at(&self.fd, name, listed) {
            Ok(opened) => Ok(Ok(opened)),
            Err(Opened::Skip(why)) => Ok(Err(why)),
            Err(Opened::Fail(e)) => Err(self.error(name, e)),
        }
    }

    /// Makes the folder `name` (`mkdirat`), opens it without following and checks it is a folder on the root's file
    /// system that we own (the one just made, not one a student swapped in), then hands it to `owner` with `mode`.
    pub fn create_dir(&self, name: &OsStr, mode: u32, owner: (u32, u32)) -> Result<Made<DirFd>, WalkError> {
        match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            Err(Errno::EEXIST) => return self.existing(name),
            Err(e) => return Err(self.error(name, e)),
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Made::Skipped(Skip::Vanished)),
            Err(Errno::ELOOP | Errno::ENOTDIR) => return Ok(Made::Skipped(Skip::Changed)),
            Err(e) => return Err(self.error(name, e)),
        };
        let stat: Stat = fstat(&fd).map_err(|e| self.error(name, e))?.into();
        if stat.dev != self.root_dev {
            return Ok(Made::Skipped(Skip::OtherFileSystem));
        }
        if stat.uid != nix::unistd::geteuid().as_raw() {
            return Ok(Made::Skipped(Skip::Changed));
        }
        self.hand_over(&fd, name, mode, owner)?;
        let stat = fstat(&fd).map_err(|e| self.error(name, e))?.into();
        Ok(Made::New(self.child(fd, stat, name)))
    }

    fn existing<T>(&self, name: &OsStr) -> Result<Made<T>, WalkError> {
        Ok(match self.stat_at(name)? {
            Some(stat) => Made::Exists(stat),
            None => Made::Skipped(Skip::Vanished),
        })
    }

    fn hand_over(&self, fd: &impl AsFd, name: &OsStr, mode: u32, (uid, gid): (u32, u32)) -> Result<(), WalkError> {
        use nix::unistd::{fchown, Gid, Uid};
        fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| self.error(name, e))?;
        // After the chown, which clears set-id bits.
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(mode & 0o7777)).map_err(|e| self.error(name, e))
    }

    /// Writes `content` as a new file `name`, owned by `owner` with `mode`, and never replaces anything: the data
    /// goes to a temporary name first (`O_CREAT|O_EXCL|O_NOFOLLOW`), is synced, and is then linked under `name`
    /// (`linkat` fails on any existing entry, on every file system, NFS included), so `name` appears complete or
    /// not at all. A read error of `content` is an error and leaves nothing behind. Returns the bytes written.
    pub fn create_file(
        &self,
        name: &OsStr,
        mode: u32,
        owner: (u32, u32),
        content: &mut dyn io::Read,
    ) -> Result<Made<u64>, WalkError> {
        if self.stat_at(name)?.is_some() {
            return self.existing(name);
        }
        let (temp, bytes) = self.write_temp(name, mode, owner, content)?;
        let linked = nix::unistd::linkat(&self.fd, temp.as_os_str(), &self.fd, name, AtFlags::empty());
        self.remove_temp(&temp);
        match linked {
            Ok(()) => Ok(Made::New(bytes)),
            Err(Errno::EEXIST) => self.existing(name),
            Err(e) => Err(self.error(name, e)),
        }
    }

    /// Replaces the regular file `name` with `content` atomically (a synced temporary file renamed over it), but
    /// only if `name` is still the file `expected` describes (same inode, size and mtime: the one the caller read);
    /// otherwise nothing changes and it is skipped as changed.
    pub fn replace_file(
        &self,
        name: &OsStr,
        expected: &Stat,
        mode: u32,
        owner: (u32, u32),
        content: &mut dyn io::Read,
    ) -> Result<Made<u64>, WalkError> {
        let (temp, bytes) = self.write_temp(name, mode, owner, content)?;
        let same = |now: &Stat| {
            now.kind() == Kind::File
                && now.same_inode(expected)
                && now.size == expected.size
                && now.mtime == expected.mtime
        };
        match self.stat_at(name) {
            Ok(Some(now)) if same(&now) => {}
            Ok(_) => {
                self.remove_temp(&temp);
                return Ok(Made::Skipped(Skip::Changed));
            }
            Err(e) => {
                self.remove_temp(&temp);
                return Err(e);
            }
        }
        // renameat replaces the name itself, whatever stands there now: it never follows a link.
        match nix::fcntl::renameat(&self.fd, temp.as_os_str(), &self.fd, name) {
            Ok(()) => Ok(Made::New(bytes)),
            Err(e) => {
                self.remove_temp(&temp);
                Err(self.error(name, e))
            }
        }
    }

    /// A new file under a fresh temporary name, filled, handed over and synced (on NFS a rename or link before the
    /// data is durable could publish an empty file after a server crash).
    fn write_temp(
        &self,
        name: &OsStr,
        mode: u32,
        owner: (u32, u32),
        content: &mut dyn io::Read,
    ) -> Result<(OsString, u64), WalkError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let (temp, fd) = loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let temp = OsString::from(format!(".workspaced-{}-{n}.partial", std::process::id()));
            match openat(&self.fd, temp.as_os_str(), flags, Mode::from_bits_truncate(0o600)) {
                Ok(fd) => break (temp, fd),
                // Left by a killed run of another process with our pid: take the next name.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(self.error(name, e)),
            }
        };
        let mut file = File::from(fd);
        let written = (|| {
            let bytes = io::copy(content, &mut file)?;
            self.hand_over(&file, name, mode, owner).map_err(|e| match e {
                WalkError::Io { source, .. } => source,
                e => io::Error::other(e.to_string()),
            })?;
            file.sync_all()?;
            Ok::<_, io::Error>(bytes)
        })();
        match written {
            Ok(bytes) => Ok((temp, bytes)),
            Err(source) => {
                self.remove_temp(&temp);
                Err(WalkError::Io { path: self.path.join(name), source })
            }
        }
    }

    /// Best effort: a temporary file left behind (a failed unlink) is only clutter, never a published name.
    fn remove_temp(&self, temp: &OsStr) {
        let _ = nix::unistd::unlinkat(&self.fd, temp, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

/// Sets the modification time, and the access time when given, of `path` itself (a symlink's own times, never
/// its target's). The only times setter of the ops: import stamps whole seconds, migration copies both times.
pub fn set_times_nofollow(path: &Path, atime: Option<Timestamp>, mtime: Timestamp) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let atime = atime.map_or(TimeSpec::UTIME_OMIT, |t| TimeSpec::new(t.secs, t.nanos));
    let mtime = TimeSpec::new(mtime.secs, mtime.nanos);
    utimensat(nix::fcntl::AT_FDCWD, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What a walk saw, one line per visit: `path kind` or `path skipped: reason`, plus file contents read.
    fn walk_log(root: &Path, between: &mut dyn FnMut(&Path)) -> (Vec<String>, Vec<u8>) {
        let mut log = Vec::new();
        let mut read = Vec::new();
        let tree = Tree::open(root).unwrap();
        tree.walk_with_hook(Files::Open, between, |visit| {
            match visit {
                Visit::Skipped { rel, why } => log.push(format!("{} skipped: {}", rel.display(), why.reason())),
                Visit::Entry(Entry { rel, node, .. }) => {
                    let what = match node {
                        Node::Dir => "dir".to_owned(),
                        Node::File(Some(mut f)) => {
                            f.read_to_end(&mut read).unwrap();
                            "file".to_owned()
                        }
                        Node::File(None) => "unopened file".to_owned(),
                        Node::Symlink(t) => format!("-> {}", t.display()),
                        Node::Other => "other".to_owned(),
                    };
                    log.push(format!("{} {what}", rel.display()));
                }
            }
            Ok::<_, WalkError>(Descend::Into)
        })
        .unwrap();
        (log, read)
    }

    fn folder() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("alice");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::write(root.join("d/e/x"), "x").unwrap();
        std::fs::write(root.join("f"), "mine").unwrap();
        std::fs::write(root.join("a"), "a").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("l")).unwrap();
        std::fs::write(tmp.path().join("secret.key"), "SECRET").unwrap();
        (tmp, root)
    }

    #[test]
    fn entries_come_sorted_depth_first_and_links_are_reported_not_followed() {
        let (_tmp, root) = folder();
        let (log, read) = walk_log(&root, &mut |_| {});
        assert_eq!(log, ["a file", "d dir", "f file", "l -> /etc", "d/e dir", "d/e/x file"]);
        assert_eq!(read, b"aminex");
    }

    #[test]
    fn a_file_replaced_by_another_inode_between_listing_and_opening_is_skipped_as_changed() {
        let (tmp, root) = folder();
        let secret = tmp.path().join("secret.key");
        let mut swap = |rel: &Path| {
            if rel == Path::new("f") {
                // Same name, same kind, another inode: only the inode comparison can tell. Renamed over the old
                // file so both inodes exist at once (a freed inode number is reused at once on ext4, and reading
                // the student's own new file under the old number would be harmless anyway).
                std::fs::copy(&secret, root.join("f.new")).unwrap();
                std::fs::rename(root.join("f.new"), root.join("f")).unwrap();
            }
        };
        let (log, read) = walk_log(&root, &mut swap);
        assert!(log.contains(&"f skipped: changed during the walk, not followed".to_owned()), "{log:?}");
        assert!(!String::from_utf8_lossy(&read).contains("SECRET"));
    }

    #[test]
    fn a_file_replaced_by_a_symlink_or_a_fifo_is_skipped_without_opening_it() {
        let (tmp, root) = folder();
        let secret = tmp.path().join("secret.key");
        let mut swap = |rel: &Path| {
            if rel == Path::new("f") {
                std::fs::remove_file(root.join("f")).unwrap();
                std::os::unix::fs::symlink(&secret, root.join("f")).unwrap();
            } else if rel == Path::new("a") {
                // Opening a fifo for reading would block until a writer came: the walk must not hang.
                std::fs::remove_file(root.join("a")).unwrap();
                nix::unistd::mkfifo(&root.join("a"), Mode::from_bits_truncate(0o600)).unwrap();
            }
        };
        let (log, read) = walk_log(&root, &mut swap);
        assert!(log.contains(&"f skipped: changed during the walk, not followed".to_owned()), "{log:?}");
        assert!(log.contains(&"a skipped: changed during the walk, not followed".to_owned()), "{log:?}");
        assert!(!String::from_utf8_lossy(&read).contains("SECRET"));
    }

    #[test]
    fn a_directory_replaced_by_a_symlink_or_another_directory_before_descending_is_not_entered() {
        for replacement in ["symlink to ..", "another directory"] {
            let (tmp, root) = folder();
            std::fs::write(tmp.path().join("SECRET"), "SECRET").unwrap();
            let mut swap = |rel: &Path| {
                if rel == Path::new("d") {
                    std::fs::rename(root.join("d"), root.join("d.bak")).unwrap();
                    if replacement == "another directory" {
                        std::fs::create_dir(root.join("d")).unwrap();
                        std::fs::write(root.join("d/SECRET"), "SECRET").unwrap();
                    } else {
                        std::os::unix::fs::symlink("..", root.join("d")).unwrap();
                    }
                }
            };
            let (log, read) = walk_log(&root, &mut swap);
            assert!(
                log.contains(&"d skipped: changed during the walk, not followed".to_owned()),
                "{replacement}: {log:?}"
            );
            assert!(!log.iter().any(|l| l.starts_with("d/")), "{replacement}: {log:?}");
            assert!(!String::from_utf8_lossy(&read).contains("SECRET"), "{replacement}");
        }
    }

    #[test]
    fn a_new_file_never_replaces_nor_follows_what_stands_under_its_name() {
        let (tmp, root) = folder();
        let secret = tmp.path().join("secret.key");
        std::os::unix::fs::symlink(&secret, root.join("x")).unwrap();
        let dir = DirFd::open_root(&root).unwrap();
        let made = dir.create_file(OsStr::new("x"), 0o644, (1000, 1000), &mut &b"evil"[..]).unwrap();
        assert!(matches!(made, Made::Exists(s) if s.kind() == Kind::Symlink), "{made:?}");
        let made = dir.create_file(OsStr::new("f"), 0o644, (1000, 1000), &mut &b"evil"[..]).unwrap();
        assert!(matches!(made, Made::Exists(s) if s.kind() == Kind::File), "{made:?}");
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "SECRET");
        assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "mine");

        let sub = match dir.create_dir(OsStr::new("new"), 0o755, (1000, 1000)).unwrap() {
            Made::New(sub) => sub,
            other => panic!("{other:?}"),
        };
        assert!(matches!(
            sub.create_file(OsStr::new("g"), 0o640, (1000, 1000), &mut &b"hi"[..]).unwrap(),
            Made::New(2)
        ));
        let meta = std::fs::metadata(root.join("new/g")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (1000, 1000, 0o640));
        assert_eq!(std::fs::metadata(root.join("new")).unwrap().uid(), 1000);
        assert_eq!(std::fs::read_dir(root.join("new")).unwrap().count(), 1, "a temporary file was left behind");
        assert!(matches!(dir.create_dir(OsStr::new("l"), 0o755, (1000, 1000)).unwrap(), Made::Exists(_)));
    }

    #[test]
    fn a_replacement_happens_only_while_the_file_is_the_one_that_was_read() {
        let (_tmp, root) = folder();
        let dir = DirFd::open_root(&root).unwrap();
        let read = dir.stat_at(OsStr::new("f")).unwrap().unwrap();
        std::fs::write(root.join("f"), "edited by the student").unwrap();
        let made = dir.replace_file(OsStr::new("f"), &read, 0o644, (1000, 1000), &mut &b"v2"[..]).unwrap();
        assert!(matches!(made, Made::Skipped(Skip::Changed)), "{made:?}");
        assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "edited by the student");

        let read = dir.stat_at(OsStr::new("f")).unwrap().unwrap();
        let made = dir.replace_file(OsStr::new("f"), &read, 0o644, (1000, 1000), &mut &b"v2"[..]).unwrap();
        assert!(matches!(made, Made::New(2)), "{made:?}");
        assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "v2");
        assert_eq!(std::fs::metadata(root.join("f")).unwrap().uid(), 1000);
    }

    #[test]
    fn a_root_that_is_a_symlink_is_not_a_directory() {
        let (tmp, root) = folder();
        let link = tmp.path().join("bob");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert!(matches!(Tree::open(&link), Err(WalkError::NotDirectory(_))));
    }
}
