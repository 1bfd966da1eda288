//! A ZFS send stream's first record (DRR_BEGIN): parsed and checked
//! against what the receiving end expects before `zfs receive` sees it.

/// Size of a send stream's records (`dmu_replay_record_t`); the first one
/// is DRR_BEGIN.
pub const BEGIN_RECORD_LEN: usize = 312;
pub(super) const DMU_BACKUP_MAGIC: u64 = 0x2F5B_ACBAC;
pub(super) const DRR_BEGIN: u32 = 0;
pub(super) const DMU_SUBSTREAM: u64 = 1;
pub(super) const DMU_COMPOUNDSTREAM: u64 = 2;
pub(super) const DMU_OST_ZFS: u32 = 2;
pub(super) const DRR_FLAG_CLONE: u32 = 1;

/// The DRR_BEGIN record of a `zfs send` stream (OpenZFS
/// `include/sys/zfs_ioctl.h`: `struct drr_begin` after the record's type and
/// payload length; in the sender's byte order, told by the magic).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamBegin {
    /// DMU_COMPOUNDSTREAM: a package (`-R`, `-p`, `-I`, `-b`, `--holds`)
    /// with an nvlist of datasets/properties and several substreams.
    pub compound: bool,
    /// `drr_versioninfo` feature flags.
    pub features: u64,
    /// `dmu_objset_type_t`: 2 filesystem, 1 volume.
    pub objset_type: u32,
    pub flags: u32,
    pub toguid: u64,
    /// 0 for a full stream, the base snapshot's guid for an incremental.
    pub fromguid: u64,
    /// `pool/fs@snap` on the sender.
    pub toname: String,
    pub payload_len: u32,
}

impl StreamBegin {
    /// The snapshot part of `toname`.
    pub fn snapshot(&self) -> Option<&str> {
        self.toname.split_once('@').map(|(_, s)| s)
    }
}

/// Parse a stream's first record (at least [`BEGIN_RECORD_LEN`] bytes).
pub fn parse_begin(rec: &[u8]) -> std::result::Result<StreamBegin, String> {
    if rec.len() < BEGIN_RECORD_LEN {
        return Err(format!(
            "the stream ended after {} bytes, inside its first record",
            rec.len()
        ));
    }
    let le = u64::from_le_bytes(rec[8..16].try_into().expect("8"));
    let be = u64::from_be_bytes(rec[8..16].try_into().expect("8"));
    let little = if le == DMU_BACKUP_MAGIC {
        true
    } else if be == DMU_BACKUP_MAGIC {
        false
    } else {
        return Err("not a ZFS send stream (no DRR_BEGIN magic)".into());
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = rec[o..o + 4].try_into().expect("4");
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let u64_at = |o: usize| {
        let b: [u8; 8] = rec[o..o + 8].try_into().expect("8");
        if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    };
    if u32_at(0) != DRR_BEGIN {
        return Err(format!(
            "the first record is of type {}, not DRR_BEGIN",
            u32_at(0)
        ));
    }
    let versioninfo = u64_at(16);
    let compound = match versioninfo & 3 {
        DMU_SUBSTREAM => false,
        DMU_COMPOUNDSTREAM => true,
        t => return Err(format!("unknown stream header type {t}")),
    };
    let name = &rec[56..BEGIN_RECORD_LEN];
    let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
    let toname = std::str::from_utf8(name)
        .map_err(|_| "the stream's snapshot name is not UTF-8".to_string())?
        .to_string();
    Ok(StreamBegin {
        compound,
        features: (versioninfo >> 2) & ((1 << 30) - 1),
        objset_type: u32_at(32),
        flags: u32_at(36),
        toguid: u64_at(40),
        fromguid: u64_at(48),
        toname,
        payload_len: u32_at(4),
    })
}

/// What the standby accepts: one filesystem snapshot named `snapshot`, from
/// `fromguid` (the replica's base) or, with `None`, a full stream; with
/// `toguid`, of that snapshot.
pub fn check_begin(
    b: &StreamBegin,
    snapshot: &str,
    fromguid: Option<u64>,
    toguid: Option<u64>,
) -> std::result::Result<(), String> {
    if b.compound {
        return Err(format!(
            "stream of {} is a replication package (zfs send -R, -p, -I, -b or --holds: properties, child datasets or several snapshots); this standby receives one snapshot of one dataset",
            b.toname
        ));
    }
    if b.objset_type != DMU_OST_ZFS {
        return Err(format!(
            "stream of {} is not of a filesystem (object set type {})",
            b.toname, b.objset_type
        ));
    }
    if b.flags & DRR_FLAG_CLONE != 0 {
        return Err(format!("stream of {} is a clone stream", b.toname));
    }
    if b.snapshot() != Some(snapshot) {
        return Err(format!(
            "the stream carries snapshot `{}`, the sender announced {snapshot}",
            b.toname
        ));
    }
    match fromguid {
        None if b.fromguid != 0 => {
            return Err(format!(
                "announced as a full stream, but {} is incremental (from guid {})",
                b.toname, b.fromguid
            ));
        }
        Some(want) if b.fromguid != want => {
            return Err(if b.fromguid == 0 {
                format!(
                    "announced as incremental, but the stream of {} is a full stream",
                    b.toname
                )
            } else {
                format!(
                    "the stream of {} applies to snapshot guid {}, the base here has guid {want}",
                    b.toname, b.fromguid
                )
            });
        }
        _ => {}
    }
    if let Some(want) = toguid {
        if b.toguid != want {
            return Err(format!(
                "the stream of {} has guid {}, the sender announced {want}",
                b.toname, b.toguid
            ));
        }
    }
    Ok(())
}
