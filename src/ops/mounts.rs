//! The mount table (`/proc/self/mounts` format): which file system holds a path, what kind it is (local, NFS,
//! EFS), and how an NFS mount's options compare with the recommended EFS line. Pure functions over text, so the
//! doctor's tests feed it fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::check::Check;

/// Options the EFS documentation (and our seeds) recommend, in fstab order.
pub const RECOMMENDED_NFS_OPTIONS: &str = "nfsvers=4.1,rsize=1048576,wsize=1048576,hard,timeo=600,retrans=2,noresvport";

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub options: Vec<String>,
}

impl MountEntry {
    /// `key=value` options as a map; flags (`hard`, `ro`) map to an empty string.
    pub fn option_map(&self) -> BTreeMap<&str, &str> {
        self.options.iter().map(|o| o.split_once('=').unwrap_or((o.as_str(), ""))).collect()
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.options.iter().any(|o| o == flag)
    }

    /// The fstab line that mounts this device at this mount point with the recommended options.
    pub fn recommended_fstab_line(&self) -> String {
        format!("{} {} nfs4 {RECOMMENDED_NFS_OPTIONS},_netdev 0 0", self.device, self.mount_point.display())
    }
}

/// What kind of file system holds the base path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// A local disk file system (ext4, xfs, btrfs, zfs, ...).
    Local,
    /// Memory only: gone at reboot.
    Tmpfs,
    /// A container's own layered root: sibling containers cannot bind-mount it.
    Overlay,
    Nfs,
    Nfs4,
    /// NFS 4 to Amazon EFS (by the DNS name, or efs-utils' TLS tunnel on 127.0.0.1).
    Efs,
    /// FUSE, SMB and anything else: works perhaps, but untested for workspaces.
    Other,
}

impl FsKind {
    pub fn is_nfs(self) -> bool {
        matches!(self, FsKind::Nfs | FsKind::Nfs4 | FsKind::Efs)
    }

    pub fn label(self) -> &'static str {
        match self {
            FsKind::Local => "local",
            FsKind::Tmpfs => "tmpfs",
            FsKind::Overlay => "overlay",
            FsKind::Nfs => "nfs",
            FsKind::Nfs4 => "nfs4",
            FsKind::Efs => "EFS",
            FsKind::Other => "other",
        }
    }
}

/// Parses the mount table. Fields are separated by spaces; spaces, tabs, newlines and backslashes inside a field
/// are octal escapes (`\040`). Malformed lines are skipped.
pub fn parse_mount_table(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let device = unescape(fields.next()?);
            let mount_point = PathBuf::from(unescape(fields.next()?));
            let fstype = unescape(fields.next()?);
            let options = fields.next().unwrap_or("").split(',').filter(|o| !o.is_empty()).map(unescape).collect();
            Some(MountEntry { device, mount_point, fstype, options })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount that holds `path` (absolute, symlinks resolved): the longest mount point that is a prefix of it,
/// and of several mounts on the same point the last one (it is on top).
pub fn find_mount<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for entry in table {
        if !path.starts_with(&entry.mount_point) {
            continue;
        }
        let longer = best.is_none_or(|b| entry.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if longer {
            best = Some(entry);
        }
    }
    best
}

/// Classifies a mount. `efs_utils_present` is a hint from the host (efs-utils' state folder exists), used for the
/// TLS tunnel form `127.0.0.1:/` that hides the EFS name.
pub fn classify(entry: &MountEntry, efs_utils_present: bool) -> FsKind {
    let fstype = entry.fstype.as_str();
    match fstype {
        "nfs" | "nfs4" => {
            let dev = entry.device.to_ascii_lowercase();
            let host = dev.split(':').next().unwrap_or("");
            let efs_name = host.contains(".efs.") && host.ends_with(".amazonaws.com")
                || host.starts_with("fs-") && host.contains(".efs.");
            // efs-utils with TLS mounts through a local stunnel: `127.0.0.1:/` on a port of its own (20049+).
            let tunnel = host == "127.0.0.1"
                && fstype == "nfs4"
                && (efs_utils_present || entry.option_map().get("port").is_some_and(|p| *p != "2049"));
            if efs_name || tunnel {
                FsKind::Efs
            } else if fstype == "nfs4" || nfs_version(entry).is_some_and(|v| v.starts_with('4')) {
                FsKind::Nfs4
            } else {
                FsKind::Nfs
            }
        }
        "tmpfs" | "ramfs" => FsKind::Tmpfs,
        "overlay" | "overlayfs" | "aufs" => FsKind::Overlay,
        "ext2" | "ext3" | "ext4" | "xfs" | "btrfs" | "zfs" | "f2fs" | "jfs" | "reiserfs" | "bcachefs" => FsKind::Local,
        _ => FsKind::Other,
    }
}

/// The NFS protocol version from `vers=` or `nfsvers=` (the kernel shows `vers=`).
pub fn nfs_version(entry: &MountEntry) -> Option<String> {
    let map = entry.option_map();
    map.get("vers").or_else(|| map.get("nfsvers")).map(|v| (*v).to_owned())
}

/// Compares an NFS mount's options with the recommended ones: one check per option.
pub fn nfs_option_checks(entry: &MountEntry) -> Vec<Check> {
    let line = entry.recommended_fstab_line();
    let fix = |what: &str| format!("{what}; mount with: {line}");
    let map = entry.option_map();
    let mut checks = Vec::new();

    checks.push(match nfs_version(entry).as_deref() {
        Some("4.1") | Some("4.2") => Check::pass("nfs_version", format!("NFS version {}", nfs_version(entry).unwrap())),
        Some(v @ ("4" | "4.0")) => Check::warn(
            "nfs_version",
            format!("NFS version {v}: no sessions, weaker recovery and slower than 4.1"),
            fix("use nfsvers=4.1 (what EFS recommends)"),
        ),
        Some(v) if v.starts_with('3') || v.starts_with('2') => Check::fail(
            "nfs_version",
            format!("NFS version {v}: EFS does not support it and its locking (NLM) is unreliable for workspaces"),
            fix("use nfsvers=4.1"),
        ),
        Some(v) => Check::warn("nfs_version", format!("unusual NFS version {v}"), fix("use nfsvers=4.1")),
        None if entry.fstype == "nfs4" => Check::warn(
            "nfs_version",
            "NFS 4 without an explicit minor version (the kernel may choose 4.0)".to_owned(),
            fix("pin nfsvers=4.1"),
        ),
        None => Check::warn("nfs_version", "NFS version not shown".to_owned(), fix("pin nfsvers=4.1")),
    });

    checks.push(if entry.has_flag("soft") || entry.has_flag("softerr") {
        Check::fail(
            "nfs_hard",
            "mounted soft: a slow or interrupted server makes writes fail half-way, silently corrupting files"
                .to_owned(),
            fix("mount hard"),
        )
    } else if entry.has_flag("hard") {
        Check::pass("nfs_hard", "mounted hard".to_owned())
    } else {
        Check::warn(
            "nfs_hard",
            "`hard` is not among the options (the default is hard, but say so explicitly)".to_owned(),
            fix("add hard"),
        )
    });

    for (key, want, why) in [
        ("timeo", "600", "60 s before a retry, so a busy server is not flooded with retransmissions"),
        ("retrans", "2", "two retries before reporting a timeout"),
        ("rsize", "1048576", "1 MiB reads"),
        ("wsize", "1048576", "1 MiB writes"),
    ] {
        let name = format!("nfs_{key}");
        checks.push(match map.get(key) {
            Some(v) if *v == want => Check::pass(&name, format!("{key}={v}")),
            Some(v) => Check::warn(
                &name,
                format!("{key}={v}, recommended {key}={want} ({why})"),
                fix(&format!("set {key}={want}")),
            ),
            None => Check::warn(
                &name,
                format!("{key} not set, recommended {key}={want} ({why})"),
                fix(&format!("set {key}={want}")),
            ),
        });
    }

    checks.push(if entry.has_flag("noresvport") {
        Check::pass("nfs_noresvport", "noresvport".to_owned())
    } else {
        Check::warn(
            "nfs_noresvport",
            "noresvport missing: after a network blip the client may reuse a reserved port and hang on reconnect"
                .to_owned(),
            fix("add noresvport"),
        )
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid 0 0
fs-0123abcd.efs.eu-west-1.amazonaws.com:/ /mnt/efs nfs4 rw,relatime,vers=4.1,rsize=1048576,wsize=1048576,namlen=255,hard,noresvport,proto=tcp,timeo=600,retrans=2,sec=sys 0 0
127.0.0.1:/ /mnt/tls nfs4 rw,vers=4.1,port=20059,hard 0 0
nas:/export /mnt/old nfs rw,vers=3,soft 0 0
/dev/sdb /mnt/with\\040space xfs rw 0 0
";

    #[test]
    fn the_longest_mount_point_wins_and_escapes_are_decoded() {
        let t = parse_mount_table(TABLE);
        assert_eq!(find_mount(&t, Path::new("/mnt/efs/workspace-data")).unwrap().fstype, "nfs4");
        assert_eq!(find_mount(&t, Path::new("/mnt/efsx")).unwrap().fstype, "ext4", "prefix by component");
        assert_eq!(find_mount(&t, Path::new("/mnt/with space/a")).unwrap().fstype, "xfs");
    }

    #[test]
    fn efs_is_recognised_by_name_or_tunnel_and_old_nfs_is_flagged() {
        let t = parse_mount_table(TABLE);
        let kind = |p: &str| classify(find_mount(&t, Path::new(p)).unwrap(), false);
        assert_eq!(kind("/mnt/efs/x"), FsKind::Efs);
        assert_eq!(kind("/mnt/tls/x"), FsKind::Efs);
        assert_eq!(kind("/mnt/old/x"), FsKind::Nfs);
        assert_eq!(kind("/home"), FsKind::Local);
        assert_eq!(kind("/run/x"), FsKind::Tmpfs);
        let efs = nfs_option_checks(find_mount(&t, Path::new("/mnt/efs")).unwrap());
        assert!(efs.iter().all(|c| c.status == super::super::check::CheckStatus::Pass), "{efs:?}");
        let old = nfs_option_checks(find_mount(&t, Path::new("/mnt/old")).unwrap());
        let status = |n: &str| old.iter().find(|c| c.name == n).unwrap().status;
        assert_eq!(status("nfs_version"), super::super::check::CheckStatus::Fail);
        assert_eq!(status("nfs_hard"), super::super::check::CheckStatus::Fail);
        assert_eq!(status("nfs_timeo"), super::super::check::CheckStatus::Warn);
    }
}
