//! `/proc/self/mountinfo`: what is mounted where. The one parser for
//! failover (is the mountpoint free, is that our copy), the LVM backend (is
//! the copy mounted) and `check` (is a standby mountpoint occupied).
//!
//! A line (proc(5)):
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! id par dev root  mount point options  optional.. - fstype source super-options
//! ```
//!
//! The kernel escapes space, tab, newline and backslash in paths as octal
//! `\040`, `\011`, `\012`, `\134`; fields are decoded left to right, so a
//! literal `\040` in a name (printed `\134040`) stays `\040`. Stacked mounts
//! at one point appear in mount order: the last one is the visible one.
//! Imports nothing of snapsite.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One mount, its paths decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the filesystem that is mounted (a bind mount of a
    /// subdirectory, a btrfs subvolume: not `/`).
    pub root: String,
    pub mount_point: PathBuf,
    pub fstype: String,
    /// The device or other source (`/dev/loop3`, `tank/x`, `tmpfs`).
    pub source: String,
}

impl Mount {
    /// `SOURCE (FSTYPE)`, or `SOURCE[ROOT] (FSTYPE)` when only a part of the
    /// filesystem is mounted: for messages.
    pub fn describe(&self) -> String {
        if self.root == "/" {
            format!("{} ({})", self.source, self.fstype)
        } else {
            format!("{}[{}] ({})", self.source, self.root, self.fstype)
        }
    }
}

/// Decode the kernel's octal escapes (`\NNN`, three octal digits); any other
/// backslash is kept as it is.
pub fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unescape_string(field: &str) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

/// One line; `None` if it is not a mountinfo line.
pub fn parse_line(line: &str) -> Option<Mount> {
    // Fields never contain a raw space (the kernel escapes it), so the
    // separator ` - ` between the optional fields and the fstype is unique.
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let root = unescape_string(l.nth(3)?);
    let mount_point = PathBuf::from(OsString::from_vec(unescape(l.next()?)));
    let mut r = right.split(' ');
    let fstype = r.next()?.to_string();
    let source = unescape_string(r.next()?);
    Some(Mount {
        root,
        mount_point,
        fstype,
        source,
    })
}

/// Every mount in `text`, in mount order; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// This process's mounts; none if `/proc/self/mountinfo` cannot be read.
pub fn read() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The mounts at exactly `at`, in mount order (the last one is visible).
/// `at` is compared as given: canonicalize it first if it may hold a
/// symlink.
pub fn mounted_at<'a>(mounts: &'a [Mount], at: &Path) -> Vec<&'a Mount> {
    mounts.iter().filter(|m| m.mount_point == at).collect()
}

/// The visible (topmost) mount at exactly `at`.
pub fn top_at<'a>(mounts: &'a [Mount], at: &Path) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mount_point == at)
}

/// Is something mounted at exactly `p`?
pub fn is_mount_point(mounts: &[Mount], p: &Path) -> bool {
    top_at(mounts, p).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on this project's test host with tmpfs mounts at names
    /// holding a space, a tab and a backslash, and a bind mount stacked
    /// on `/tmp/arch-mi/stack`.
    const HOST: &str = include_str!("../../tests/fixtures/mountinfo/host.txt");

    #[test]
    fn unescapes_octal_left_to_right() {
        assert_eq!(unescape(r"a\040b\011c\012d\134e"), b"a b\tc\nd\\e");
        // an escaped backslash followed by digits is a backslash and digits
        assert_eq!(unescape(r"x\134040"), br"x\040");
        // not an escape: kept as written
        assert_eq!(unescape(r"x\09y\"), br"x\09y\");
        assert_eq!(unescape(r"\400"), br"\400");
        assert_eq!(unescape(r"\377"), [0xff]);
        assert_eq!(unescape(r"\04"), br"\04");
    }

    #[test]
    fn parses_the_captured_host() {
        let m = parse(HOST);
        assert_eq!(m.len(), HOST.lines().count(), "every line parses");
        let root = top_at(&m, Path::new("/")).unwrap();
        assert_eq!(
            (root.fstype.as_str(), root.source.as_str()),
            ("ext4", "/dev/vda")
        );
        // optional fields (`shared:1`) and a root other than `/`
        let netns = top_at(&m, Path::new("/run/netns")).unwrap();
        assert_eq!(netns.root, "/run/netns");
        assert_eq!(netns.describe(), "/dev/vda[/run/netns] (ext4)");
        let bt = top_at(&m, Path::new("/var/tmp/bt/m")).unwrap();
        assert_eq!(bt.describe(), "/dev/loop0 (btrfs)");
        // escaped names
        for (at, src) in [
            ("/tmp/arch-mi/with space", "arch-mi-1"),
            ("/tmp/arch-mi/tab\tx", "arch-mi-2"),
            ("/tmp/arch-mi/back\\slash", "arch-mi-3"),
        ] {
            assert_eq!(
                top_at(&m, Path::new(at)).map(|e| e.source.as_str()),
                Some(src),
                "{at}"
            );
            assert!(is_mount_point(&m, Path::new(at)));
        }
        assert!(!is_mount_point(
            &m,
            Path::new("/tmp/arch-mi/with\\040space")
        ));
        assert!(!is_mount_point(&m, Path::new("/tmp/arch-mi")));
        assert!(!is_mount_point(&m, Path::new("/tmp")));
    }

    #[test]
    fn stacked_mounts_in_mount_order_the_last_visible() {
        let m = parse(HOST);
        let at = Path::new("/tmp/arch-mi/stack");
        let all = mounted_at(&m, at);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].root, "/");
        assert_eq!(all[1].root, "/sub");
        assert_eq!(
            top_at(&m, at).unwrap().describe(),
            "arch-mi-4[/sub] (tmpfs)"
        );
        // without the bind mount the tmpfs itself is on top
        let below: String = HOST
            .lines()
            .filter(|l| !l.starts_with("48 "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            top_at(&parse(&below), at).unwrap().describe(),
            "arch-mi-4 (tmpfs)"
        );
    }

    #[test]
    fn junk_lines_are_skipped() {
        let m = parse("garbage\n1 2 3\n\n22 1 0:21 / / rw - ext4 /dev/sda1 rw\n");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, Path::new("/"));
    }

    #[test]
    fn reads_this_process_mounts() {
        // Linux always has a root mount.
        assert!(is_mount_point(&read(), Path::new("/")));
    }
}
