//! What a received snapshot maps in the standby's own thin pool
//! (`thin_dump` of the pool's metadata snapshot), for the ransomware
//! signals: the sender's header says which changed blocks were mapped in
//! the base already (overwritten); the standby holds the base and checks
//! that word against its own map (`standby::signals::lvm`).

use super::thin::{MetadataSnap, Pool};
use super::{find, lvs_of, mapping_extents, require_replica, snap_lv, split};
use crate::backend::ThinMap;
use crate::base::config::Volume;
use crate::base::error::{Context, Error, Result};

/// The byte ranges (offset, length) snapshot `name` of the replica maps,
/// and the pool's block size; `None`: not a thin snapshot here.
pub(super) fn replica_mapped(vol: &Volume, name: &str) -> Result<Option<ThinMap>> {
    let (vg, rlv) = split(require_replica(vol)?);
    let all = lvs_of(vol, vg)?;
    let lv_name = snap_lv(rlv, name);
    let Some(lv) = find(&all, &lv_name) else {
        return Ok(None);
    };
    let (Some(pool), Some(id)) = (lv.pool.clone(), lv.thin_id) else {
        return Ok(None);
    };
    let what = format!("volume `{}`: thin map of {vg}/{lv_name}", vol.role);
    let ms = MetadataSnap::reserve(&Pool {
        vg: vg.to_string(),
        name: pool,
    })
    .ctx(what.clone())?;
    let mapped = ms.mapped(id);
    // Released before the receive's data moves; an error releases on drop.
    ms.release().ctx(what.clone())?;
    let m = mapped.ctx(what)?;
    if m.block_size == 0 {
        return Err(Error::storage(format!(
            "volume `{}`: thin pool block size 0",
            vol.role
        )));
    }
    let ranges = mapping_extents(&m, lv.size.max(1))
        .into_iter()
        .map(|e| (e.offset, e.len))
        .collect();
    Ok(Some(ThinMap {
        block_size: m.block_size,
        ranges,
    }))
}
