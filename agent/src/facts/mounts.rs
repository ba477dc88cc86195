//! `/proc/self/mounts` and filesystem usage (`statvfs`), as Telegraf's `disk` input.
//!
//! Which mounts are reported follows Telegraf's defaults: pseudo and in-memory filesystems are
//! skipped ([`is_pseudo`]), and a device mounted several times (bind mounts, btrfs subvolumes)
//! is reported once, at its shortest mount point (the first one on a tie). Sizes follow Telegraf
//! too: `total = f_blocks * f_frsize`, `free = f_bavail * f_frsize` (what unprivileged users can
//! still use), `used = (f_blocks - f_bfree) * f_frsize`; a filesystem with `total == 0` is skipped.

use super::{slot, ParseError};
use autofact_fbs::Disk;
use std::path::Path;

/// One line of the mount table, octal escapes (`\040` ...) undone.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// The mounted device or source (`/dev/mmcblk0p2`, `tmpfs`, ...).
    pub device: String,
    /// The mount point.
    pub path: String,
    /// The filesystem type.
    pub fstype: String,
    /// Telegraf's `mode` tag: `rw` or `ro` from the mount options, else `unknown`.
    pub mode: &'static str,
}

/// Telegraf's `mode` from the comma-separated mount options (the fourth field).
pub fn mode(options: &str) -> &'static str {
    let has = |o: &str| options.split(',').any(|x| x == o);
    if has("rw") {
        "rw"
    } else if has("ro") {
        "ro"
    } else {
        "unknown"
    }
}

/// Every line of the table.
pub fn parse(s: &str) -> Result<Vec<Mount>, ParseError> {
    let mut out = Vec::new();
    let n = parse_into(s, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Fills `out[..n]` in place and returns `n`; elements past `n` are left as they were.
pub fn parse_into(s: &str, out: &mut Vec<Mount>) -> Result<usize, ParseError> {
    let mut n = 0;
    for (i, line) in s.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        // The kernel separates fields with one space and escapes spaces inside them.
        let mut toks = line.split_ascii_whitespace();
        let (Some(device), Some(path), Some(fstype)) = (toks.next(), toks.next(), toks.next())
        else {
            return Err(ParseError::new(
                lineno,
                "expected device, mount point and filesystem type",
            ));
        };
        let m = slot(out, n);
        unescape_into(device, &mut m.device);
        unescape_into(path, &mut m.path);
        unescape_into(fstype, &mut m.fstype);
        m.mode = mode(toks.next().unwrap_or(""));
        n += 1;
    }
    Ok(n)
}

/// Undoes the kernel's `\ooo` escapes (space, tab, newline, backslash); anything else is copied.
pub fn unescape_into(s: &str, out: &mut String) {
    out.clear();
    if !s.contains('\\') {
        out.push_str(s);
        return;
    }
    let b = s.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && is_octal(&b[i + 1..i + 4]) {
            let v = (u32::from(b[i + 1] - b'0') << 6)
                | (u32::from(b[i + 2] - b'0') << 3)
                | u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                bytes.push(byte);
                i += 4;
                continue;
            }
        }
        bytes.push(b[i]);
        i += 1;
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
}

fn is_octal(b: &[u8]) -> bool {
    b.len() == 3 && b.iter().all(|c| (b'0'..=b'7').contains(c))
}

/// Filesystem types that hold no user data, after Telegraf's `ignore_fs` defaults and the
/// kernel's `nodev` filesystems that gopsutil leaves out.
pub const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nfsd",
    "nsfs",
    "overlay",
    "aufs",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "usbfs",
];

/// True for filesystems the `disk` fact skips.
pub fn is_pseudo(fstype: &str) -> bool {
    PSEUDO_FS.contains(&fstype)
}

/// Writes into `sel` the indices of the mounts to report: real filesystems, one per device,
/// at the shortest mount point (first on a tie), in table order.
pub fn select_into(mounts: &[Mount], sel: &mut Vec<usize>) {
    sel.clear();
    for (i, m) in mounts.iter().enumerate() {
        if is_pseudo(&m.fstype) {
            continue;
        }
        match sel.iter_mut().find(|j| mounts[**j].device == m.device) {
            Some(j) => {
                if m.path.len() < mounts[*j].path.len() {
                    *j = i;
                }
            }
            None => sel.push(i),
        }
    }
}

/// The mounts to report (see [`select_into`]).
pub fn select(mounts: &[Mount]) -> Vec<&Mount> {
    let mut sel = Vec::new();
    select_into(mounts, &mut sel);
    sel.into_iter().filter_map(|i| mounts.get(i)).collect()
}

/// Sizes of one filesystem, from `statvfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// f_blocks * f_frsize
    pub total: u64,
    /// f_bavail * f_frsize
    pub free: u64,
    /// (f_blocks - f_bfree) * f_frsize
    pub used: u64,
    /// f_files
    pub inodes_total: u64,
    /// f_ffree
    pub inodes_free: u64,
}

/// Telegraf's sizes from raw `statvfs` numbers; `None` when the filesystem has no blocks
/// (Telegraf skips those as dummies).
pub fn usage(
    frsize: u64,
    blocks: u64,
    bfree: u64,
    bavail: u64,
    files: u64,
    ffree: u64,
) -> Option<Usage> {
    let total = blocks.saturating_mul(frsize);
    if total == 0 {
        return None;
    }
    Some(Usage {
        total,
        free: bavail.saturating_mul(frsize),
        used: blocks.saturating_sub(bfree).saturating_mul(frsize),
        inodes_total: files,
        inodes_free: ffree,
    })
}

/// `statvfs(path)` through nix; `None` when the call fails (the mount point does not exist on
/// this machine, permission denied, a stale network mount) or the filesystem has no blocks.
pub fn statvfs(path: &Path) -> Option<Usage> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    // The libc field types differ by target (u32 on armv7, u64 elsewhere); widen them all.
    #[allow(clippy::useless_conversion)]
    let (frsize, blocks, bfree, bavail, files, ffree) = (
        u64::from(st.fragment_size()),
        u64::from(st.blocks()),
        u64::from(st.blocks_free()),
        u64::from(st.blocks_available()),
        u64::from(st.files()),
        u64::from(st.files_free()),
    );
    usage(frsize, blocks, bfree, bavail, files, ffree)
}

/// Fills a `disk` fact from a mount and its usage, reusing `out`'s strings. Telegraf strips
/// `/dev/` from the device.
pub fn fill_disk(m: &Mount, u: &Usage, out: &mut Disk) {
    out.path.clone_from(&m.path);
    out.device.clear();
    out.device
        .push_str(m.device.strip_prefix("/dev/").unwrap_or(&m.device));
    out.fstype.clone_from(&m.fstype);
    out.mode.clear();
    out.mode.push_str(m.mode);
    out.total = u.total;
    out.free = u.free;
    out.used = u.used;
    out.inodes_total = u.inodes_total;
    out.inodes_free = u.inodes_free;
    out.inodes_used = u.inodes_total.saturating_sub(u.inodes_free);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_octal() {
        let v = parse("/dev/sdb1 /media/my\\040disk\\134x ext4 rw 0 0\n").expect("parses");
        assert_eq!(v[0].path, "/media/my disk\\x");
        let mut s = String::new();
        unescape_into("a\\04", &mut s);
        assert_eq!(s, "a\\04");
        unescape_into("\\777", &mut s);
        assert_eq!(s, "\\777");
    }

    #[test]
    fn bind_mounts_keep_the_shortest_path() {
        let v = parse(
            "/dev/sda1 /srv/data ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/sda1 /d ext4 rw 0 0\n/dev/sda1 /e ext4 rw 0 0\n/dev/sda2 / ext4 rw 0 0\n",
        )
        .expect("parses");
        let sel = select(&v);
        let paths: Vec<&str> = sel.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(paths, ["/d", "/"]);
    }

    #[test]
    fn mode_is_read_from_the_options_as_telegraf() {
        let v =
            parse("/dev/sda1 / ext4 rw,relatime 0 0\n/dev/sr0 /cd iso9660 ro,nosuid 0 0\nx /y z\n")
                .expect("parses");
        let modes: Vec<&str> = v.iter().map(|m| m.mode).collect();
        assert_eq!(modes, ["rw", "ro", "unknown"]);
        assert_eq!(mode("rwx,noro"), "unknown");
    }

    #[test]
    fn usage_follows_telegraf() {
        let u = usage(4096, 100, 40, 30, 1000, 900).expect("has blocks");
        assert_eq!(u.total, 409600);
        assert_eq!(u.free, 30 * 4096);
        assert_eq!(u.used, 60 * 4096);
        assert!(usage(4096, 0, 0, 0, 0, 0).is_none());
    }
}
