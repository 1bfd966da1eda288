//! The sending end on LVM: which blocks a send reads (the pool's mapping
//! for a full send, `thin_delta` for an incremental), as byte extents of
//! the snapshot device, and the source that encodes them.

use super::*;

/// Turn `thin_delta` output into byte extents: rewritten and new blocks
/// carry data, blocks only the base had are zero now.
pub fn delta_extents(delta: &Delta, size: u64) -> Vec<Extent> {
    let ranges = delta.ranges.iter().filter_map(|(kind, r)| match kind {
        DeltaKind::Same => None,
        DeltaKind::Different | DeltaKind::RightOnly => Some((r, true)),
        DeltaKind::LeftOnly => Some((r, false)),
    });
    let mut out = byte_extents(ranges, delta.block_size, size);
    out.sort_by_key(|e| e.offset);
    out
}

/// The blocks `thin_delta` found mapped in both snapshots to different
/// data (overwritten, not newly mapped), as byte ranges of the device:
/// every one, or an even sample of at most `MAX_OVERWRITTEN_RANGES`.
pub fn overwritten_of(delta: &Delta, size: u64) -> format::Overwritten {
    let different = delta
        .ranges
        .iter()
        .filter(|(kind, _)| *kind == DeltaKind::Different);
    let mut ranges = byte_extents(different.map(|(_, r)| (r, true)), delta.block_size, size);
    ranges.sort_by_key(|e| e.offset);
    let bytes = ranges.iter().map(|e| e.len).sum();
    let n = ranges.len();
    let every = n.div_ceil(format::MAX_OVERWRITTEN_RANGES).max(1);
    format::Overwritten {
        bytes,
        ranges: ranges
            .iter()
            .step_by(every)
            .map(|e| (e.offset, e.len))
            .collect(),
        all: every == 1,
    }
}

/// Mapped blocks of a device as data extents.
pub fn mapping_extents(m: &Mapping, size: u64) -> Vec<Extent> {
    byte_extents(m.ranges.iter().map(|r| (r, true)), m.block_size, size)
}

/// Block ranges of `block_size` blocks, each with or without data, as
/// extents of a device of `size` bytes (saturating: a range past the
/// device is dropped, not wrapped).
fn byte_extents<'a>(
    ranges: impl IntoIterator<Item = (&'a BlockRange, bool)>,
    block_size: u64,
    size: u64,
) -> Vec<Extent> {
    let mut out = Vec::new();
    for (r, data) in ranges {
        push_extent(
            &mut out,
            r.begin.saturating_mul(block_size),
            r.length.saturating_mul(block_size),
            data,
            size,
        );
    }
    out
}

/// Append, clamped to the device and merged with an adjacent extent of the
/// same kind.
pub(super) fn push_extent(out: &mut Vec<Extent>, offset: u64, len: u64, data: bool, size: u64) {
    if offset >= size || len == 0 {
        return;
    }
    let len = len.min(size - offset);
    if let Some(last) = out.last_mut() {
        if last.data == data && last.offset + last.len == offset {
            last.len += len;
            return;
        }
    }
    out.push(Extent { offset, len, data });
}

/// A planned send: the snapshot device, the stream header and the extents.
pub(super) struct Planned {
    pub(super) dev: File,
    pub(super) header: Header,
    pub(super) extents: Vec<Extent>,
    pub(super) classic: Option<(String, String)>,
}

/// What a send of `name` (from `base`) reads: the device, the header and the extents.
pub(super) fn plan_send(vol: &Volume, name: &str, base: Option<&str>) -> Result<Planned> {
    let (vg, _) = split(home(vol)?);
    let all = lvs_of(vol, vg)?;
    let snap_name = snap_of(vol, &all, name)?;
    let snap = find(&all, &snap_name).cloned().ok_or_else(|| {
        Error::storage(format!(
            "volume `{}`: snapshot {vg}/{snap_name} does not exist",
            vol.role
        ))
    })?;
    if snap.is_invalid_snapshot() {
        return Err(Error::storage(format!(
            "volume `{}`: classic snapshot {vg}/{snap_name} is invalid (its copy-on-write space overflowed)",
            vol.role
        )));
    }
    let base_info = match base {
        Some(b) => find(&all, &snap_of(vol, &all, b)?).cloned(),
        None => None,
    };
    if !snap.active {
        activate(vg, &snap_name).ctx(format!("volume `{}`", vol.role))?;
    }
    // The device's size: `lv_size` of a classic snapshot is its
    // copy-on-write space, not the size of the data.
    let dev_p = dev_path(vg, &snap_name);
    let (dev, size) = open_sized(&dev_p, false).ctx(format!("volume `{}`", vol.role))?;
    let (kind, block_size, extents, base_used, overwritten) = if snap.is_thin() {
        let pool = Pool {
            vg: vg.to_string(),
            name: snap.pool.clone().expect("thin LVs have a pool"),
        };
        let id = snap.thin_id.ok_or_else(|| {
            Error::storage(format!("lvs reports no thin id for {vg}/{snap_name}"))
        })?;
        let incremental_base = base_info
            .as_ref()
            .filter(|b| b.is_thin() && b.pool == snap.pool && b.thin_id.is_some());
        let ms = MetadataSnap::reserve(&pool).ctx(format!("volume `{}`", vol.role))?;
        let planned = match incremental_base {
            Some(b) => ms.delta(b.thin_id.expect("filtered"), id).map(|d| {
                (
                    StreamKind::Incremental,
                    d.block_size,
                    delta_extents(&d, size),
                    Some(b.clone()),
                    Some(overwritten_of(&d, size)),
                )
            }),
            None => ms.mapped(id).map(|m| {
                (
                    StreamKind::Full,
                    m.block_size,
                    mapping_extents(&m, size),
                    None,
                    None,
                )
            }),
        };
        // Released before any data moves; an error above releases on drop.
        ms.release()?;
        planned.ctx(format!("volume `{}`", vol.role))?
    } else {
        if base.is_some() {
            tracing::info!(volume = %vol.role, "classic LV: sending a full image");
        }
        let all_of_it = vec![Extent {
            offset: 0,
            len: size,
            data: true,
        }];
        (StreamKind::Full, CLASSIC_UNIT, all_of_it, None, None)
    };
    let header = Header {
        version: format::VERSION,
        kind,
        size,
        block_size,
        snapshot: name.to_string(),
        storage_id: Some(snap.uuid.clone()),
        base: base_used.as_ref().and(base.map(str::to_string)),
        // What the base was received from (the peer's snapshot), else
        // its own uuid: the id both sites know the base by.
        base_storage_id: base_used.as_ref().map(|b| {
            b.tag_value(FROM_TAG)
                .map(str::to_string)
                .unwrap_or_else(|| b.uuid.clone())
        }),
        resume: None,
        overwritten,
    };
    Ok(Planned {
        dev,
        header,
        extents,
        classic: (!snap.is_thin()).then(|| (vg.to_string(), snap_name)),
    })
}

/// The sending end: records from the snapshot device.
pub(super) struct LvmSource {
    pub(super) enc: Encoder,
    /// A classic snapshot (vg, lv): checked again after reading, since it
    /// turns invalid if its copy-on-write space overflows meanwhile.
    pub(super) classic: Option<(String, String)>,
}

impl Read for LvmSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.enc.read(buf)
    }
}

impl SnapshotSource for LvmSource {
    fn finish(self: Box<Self>) -> Result<()> {
        if let Some((vg, lv)) = &self.classic {
            if report::lv_info(vg, lv)?.is_none_or(|i| i.is_invalid_snapshot()) {
                return Err(Error::storage(format!(
                    "classic snapshot {vg}/{lv} became invalid while it was sent"
                )));
            }
        }
        Ok(())
    }
    fn abort(self: Box<Self>) {}
}
