//! `follow` on a ZFS standby: the received snapshots beyond the common
//! base are kept, never destroyed, so that the new primary's incremental
//! from the base applies to `replica`.
//!
//! `zfs receive` of an incremental needs the base to be the newest
//! snapshot of the target (or `-F`, which would destroy the newer ones).
//! So the whole `replica` is renamed `<replica>-divergent-<label>` (with
//! every snapshot it holds, read-only, never mounted), `replica` is made
//! again as a clone of the divergent dataset's base snapshot and promoted:
//! it owns the base and every older snapshot; the divergent dataset keeps
//! the newer ones (as a clone of `replica@<base>`, so the base cannot be
//! destroyed under it). Nothing is copied.

use super::*;

/// The divergent dataset `follow` keeps `replica`'s newer snapshots in.
pub fn set_aside_dataset(replica: &str, label: &str) -> String {
    format!("{replica}-divergent-{label}")
}

/// Idempotent: a rerun after a crash finds `replica` renamed (clones it),
/// or cloned but not promoted (promotes it), or done (nothing to do).
pub(super) fn set_aside_newer(vol: &Volume, base: &str, label: &str) -> Result<Vec<String>> {
    crate::backend::check_label(label)?;
    if parse_set_id(base).is_none() {
        return Err(Error::refused(format!("`{base}` is not a set id")));
    }
    let r = require_replica(vol, "dataset")?;
    let d = set_aside_dataset(&r, label);
    let ctx = || {
        format!(
            "volume `{}`: set {r}'s snapshots after {base} aside",
            vol.role
        )
    };
    if exists(&r)? {
        let text = super::demote::own_snapshots(&r)?;
        let own = parse_snapshot_list(&r, &text);
        let origin = get("origin", &r)?;
        let cloned = origin.as_deref() == Some(format!("{d}@{base}").as_str());
        if cloned {
            if own.is_empty() {
                // Cloned, not yet promoted.
                zfs().args(["promote", &r]).run().ctx(ctx())?;
            }
            return Ok(vec![d]);
        }
        if own.last().map(String::as_str) == Some(base) {
            // Nothing newer (or done by a run that promoted already).
            return Ok(if exists(&d)? { vec![d] } else { Vec::new() });
        }
        if !own.iter().any(|n| n == base) {
            return Err(Error::storage(format!(
                "volume `{}`: {r} does not hold the base {r}@{base}; nothing was changed",
                vol.role
            )));
        }
        if exists(&d)? {
            return Err(Error::refused(format!(
                "volume `{}`: {d} exists already; nothing was changed",
                vol.role
            )));
        }
        zfs().args(["rename", &r, &d]).run().ctx(ctx())?;
        crate::failpoint!("zfs.set_aside.after_rename");
    } else if !exists(&d)? {
        return Err(Error::storage(format!(
            "volume `{}`: neither {r} nor {d} exists; nothing to set aside",
            vol.role
        )));
    }
    zfs()
        .args(["set", "readonly=on", "canmount=noauto", "mountpoint=none"])
        .arg(&d)
        .run()
        .ctx(ctx())?;
    super::demote::clone_inert(&format!("{d}@{base}"), &r).ctx(ctx())?;
    crate::failpoint!("zfs.set_aside.after_clone");
    zfs().args(["promote", &r]).run().ctx(ctx())?;
    Ok(vec![d])
}
