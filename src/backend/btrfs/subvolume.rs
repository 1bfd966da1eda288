//! What a subvolume is, as `btrfs subvolume show` prints it (parsed) and
//! as the kernel answers `BTRFS_IOC_GET_SUBVOL_INFO` (no process).

use super::*;

/// The fields of `btrfs subvolume show` we rely on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubvolumeInfo {
    pub name: String,
    pub uuid: String,
    pub parent_uuid: Option<String>,
    pub received_uuid: Option<String>,
    pub readonly: bool,
}

/// Parse `btrfs subvolume show PATH` (btrfs-progs 5.x/6.x text output).
pub fn parse_subvolume_show(text: &str) -> Result<SubvolumeInfo> {
    let mut info = SubvolumeInfo::default();
    let opt = |v: &str| {
        if v == "-" || v.is_empty() {
            None
        } else {
            Some(v.to_string())
        }
    };
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Name" => info.name = v.to_string(),
            "UUID" => info.uuid = v.to_string(),
            "Parent UUID" => info.parent_uuid = opt(v),
            "Received UUID" => info.received_uuid = opt(v),
            "Flags" => info.readonly = v.split([',', ' ']).any(|f| f == "readonly"),
            _ => {}
        }
    }
    if info.uuid.is_empty() {
        return Err(Error::storage(format!(
            "unexpected `btrfs subvolume show` output (no UUID line): {}",
            text.lines().take(3).collect::<Vec<_>>().join(" | ")
        )));
    }
    Ok(info)
}

/// What `btrfs subvolume show PATH` says of these fields: asked of the
/// kernel ([`subvolume_info`], no process), or of the command where the
/// kernel cannot answer (before Linux 4.18) — its error is the one reported.
pub fn subvolume_show(path: &Path) -> Result<SubvolumeInfo> {
    if let Ok(info) = subvolume_info(path) {
        return Ok(info);
    }
    let out = Cmd::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()?;
    parse_subvolume_show(&out)
}

/// `BTRFS_IOC_GET_SUBVOL_INFO` on the subvolume root `path` (unprivileged,
/// Linux >= 4.18): the fields of `btrfs subvolume show` without spawning it
/// (a receive verifies every snapshot it makes with these: one process per
/// snapshot was a visible share of a no-change ship).
pub fn subvolume_info(path: &Path) -> Result<SubvolumeInfo> {
    use std::os::fd::AsRawFd;
    // struct btrfs_ioctl_get_subvol_info_args (504 bytes): treeid u64,
    // name[256], parent_id, dirid, generation, flags (u64 each), uuid[16],
    // parent_uuid[16], received_uuid[16], 4 transids, 4 timespecs {u64,
    // u32, pad}, reserved u64[8].
    const SIZE: usize = 504;
    const REQ: u64 = (2 << 30) | ((SIZE as u64) << 16) | (0x94 << 8) | 60;
    // the root item's flags (not the SUBVOL_GETFLAGS ioctl's bits)
    const BTRFS_ROOT_SUBVOL_RDONLY: u64 = 1 << 0;
    let f = std::fs::File::open(path).ctx(format!("open {}", path.display()))?;
    // The ioctl answers for the subvolume *containing* any inode: only a
    // subvolume root (a directory with inode 256) is asked, as `btrfs
    // subvolume show` refuses anything else.
    let meta = f.metadata().ctx(format!("inspect {}", path.display()))?;
    {
        use std::os::unix::fs::MetadataExt;
        if !meta.is_dir() || meta.ino() != 256 {
            return Err(Error::storage(format!(
                "{} is not a btrfs subvolume",
                path.display()
            )));
        }
    }
    let mut args = [0u8; SIZE];
    // SAFETY: `args` is the 504-byte struct the ioctl fills.
    let rc = unsafe { nix::libc::ioctl(f.as_raw_fd(), REQ as _, args.as_mut_ptr()) };
    // Success can be 1 (the kernel passes on its tree search's "not an
    // exact match"); libbtrfsutil checks for -1 too.
    if rc < 0 {
        return Err(Error::io(
            format!("subvolume info of {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    let name = &args[8..264];
    let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
    let flags = u64::from_ne_bytes(args[288..296].try_into().expect("8 bytes"));
    let uuid = |at: usize| -> Option<String> {
        let u = &args[at..at + 16];
        if u.iter().all(|b| *b == 0) {
            return None;
        }
        let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
        Some(format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        ))
    };
    Ok(SubvolumeInfo {
        name: String::from_utf8_lossy(name).into_owned(),
        uuid: uuid(296).ok_or_else(|| {
            Error::storage(format!(
                "{}: the kernel reports no subvolume uuid",
                path.display()
            ))
        })?,
        parent_uuid: uuid(312),
        received_uuid: uuid(328),
        readonly: flags & BTRFS_ROOT_SUBVOL_RDONLY != 0,
    })
}
