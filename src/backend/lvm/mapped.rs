//! What the base of a receive maps in the standby's own thin pool
//! (`thin_dump` of the pool's metadata snapshot), for the ransomware
//! signals: the sender's header says which changed blocks were mapped in
//! the base already (overwritten); the standby holds the base and checks
//! that word against its own map (`standby::signals::lvm`).

use super::mapping_extents;
use super::thin::{MetadataSnap, Pool};
use crate::backend::ThinMap;
use crate::base::error::{Context, Error, Result};

/// The byte ranges thin device `id` of `vg`/`pool` maps (the device is
/// `size` bytes), and the pool's block size.
pub(super) fn thin_map(role: &str, vg: &str, pool: String, id: u64, size: u64) -> Result<ThinMap> {
    let what = format!("volume `{role}`: thin map of the base (device {id} in {vg}/{pool})");
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
            "volume `{role}`: thin pool block size 0"
        )));
    }
    let ranges = mapping_extents(&m, size.max(1))
        .into_iter()
        .map(|e| (e.offset, e.len))
        .collect();
    Ok(ThinMap {
        block_size: m.block_size,
        ranges,
    })
}
