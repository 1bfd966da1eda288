//! The common snapshot's tags on LVM thin, one per holder (see
//! `backend::holds`): `snapsite-common-NAME` on the snapshot LV that is
//! standby NAME's base. LVM has no holds: the tag makes the base visible
//! to `lvs -o+lv_tags` and to the admin; snapsite's own prune keeps each
//! standby's base through its records either way.

use super::*;
use crate::backend::holds::is_common_tag;

/// The volume's snapsite snapshot LVs (the chain `home.<id>` and, with a
/// replica, the live source's `source.<id>`), from one `lvs` of its VG.
fn chain_lvs(vol: &Volume) -> Result<(String, Vec<LvInfo>, Vec<String>)> {
    let (lv, replica) = lvm_addr(vol)?;
    let (vg, _) = split(replica.unwrap_or(lv));
    let Some(all) = vg_lvs(vg)? else {
        return Ok((vg.to_string(), Vec::new(), Vec::new()));
    };
    let names = chain_in(vol, &all)?;
    Ok((vg.to_string(), all, names))
}

/// The volume's snapsite snapshot LVs in `all` (a listing of its VG).
fn chain_in(vol: &Volume, all: &[LvInfo]) -> Result<Vec<String>> {
    let (lv, replica) = lvm_addr(vol)?;
    let (_, hlv) = split(replica.unwrap_or(lv));
    let mut names: Vec<String> = snapshots_of(all, hlv)
        .iter()
        .map(|id| snap_lv(hlv, id))
        .collect();
    if replica.is_some() && lv.lv != hlv {
        names.extend(
            snapshots_of(all, &lv.lv)
                .iter()
                .map(|id| snap_lv(&lv.lv, id)),
        );
    }
    Ok(names)
}

/// `lvchange --addtag|--deltag TAG vg/lv...` (none: no call).
fn change_tag(flag: &str, tag: &str, vg: &str, lvs: &[&String], vol: &Volume) -> Result<()> {
    if lvs.is_empty() {
        return Ok(());
    }
    let mut c = lvm("lvchange").arg(flag).arg(tag);
    for l in lvs {
        c = c.arg(format!("{vg}/{l}"));
    }
    c.run().ctx(format!("volume `{}`: {flag} {tag}", vol.role))
}

pub(super) fn protect(vol: &Volume, name: &str, tag: &str) -> Result<()> {
    let (vg, all, chain) = chain_lvs(vol)?;
    let want = snap_of(vol, &all, name)?;
    if find(&all, &want).is_none() {
        return Err(Error::storage(format!(
            "volume `{}`: common snapshot {vg}/{want} does not exist",
            vol.role
        )));
    }
    let tagged: Vec<&String> = chain
        .iter()
        .filter(|l| find(&all, l).is_some_and(|i| i.tags.iter().any(|t| t == tag)))
        .collect();
    // Tag the new base first: the chain is never without one.
    if !tagged.contains(&&want) {
        change_tag("--addtag", tag, &vg, &[&want], vol)?;
    }
    let old: Vec<&String> = tagged.into_iter().filter(|l| **l != want).collect();
    change_tag("--deltag", tag, &vg, &old, vol)
}

pub(super) fn common_holds(vol: &Volume) -> Result<Vec<(String, String)>> {
    let (vg, all, chain) = chain_lvs(vol)?;
    let mut out = Vec::new();
    for l in &chain {
        if let Some(i) = find(&all, l) {
            for t in i.tags.iter().filter(|t| is_common_tag(t)) {
                out.push((format!("{vg}/{l}"), t.clone()));
            }
        }
    }
    Ok(out)
}

pub(super) fn release(vol: &Volume, tag: &str) -> Result<Vec<String>> {
    let (vg, all, chain) = chain_lvs(vol)?;
    let tagged: Vec<&String> = chain
        .iter()
        .filter(|l| find(&all, l).is_some_and(|i| i.tags.iter().any(|t| t == tag)))
        .collect();
    change_tag("--deltag", tag, &vg, &tagged, vol)?;
    Ok(tagged.into_iter().map(|l| format!("{vg}/{l}")).collect())
}

/// `protect` of several volumes of one VG (equal `listing_key`s) from one
/// `lvs`: the new bases are tagged in one `lvchange`, then the old ones
/// untagged in another (each volume's chain is never without a base).
/// One listing per batch, not one per volume: a ship's listings stay
/// flat in the number of volumes (tests/vm/listing.rs).
pub(super) fn protect_batch(items: &[(&Volume, &str)], tag: &str) -> Result<()> {
    let Some((first, _)) = items.first() else {
        return Ok(());
    };
    let (vg, all, _) = chain_lvs(first)?;
    let mut add: Vec<String> = Vec::new();
    let mut old: Vec<String> = Vec::new();
    for (vol, name) in items {
        let chain = chain_in(vol, &all)?;
        let want = snap_of(vol, &all, name)?;
        if find(&all, &want).is_none() {
            return Err(Error::storage(format!(
                "volume `{}`: common snapshot {vg}/{want} does not exist",
                vol.role
            )));
        }
        for l in chain {
            let has = find(&all, &l).is_some_and(|i| i.tags.iter().any(|t| t == tag));
            if has && l != want {
                old.push(l);
            }
        }
        let tagged = find(&all, &want).is_some_and(|i| i.tags.iter().any(|t| t == tag));
        if !tagged {
            add.push(want);
        }
    }
    change_tag("--addtag", tag, &vg, &add.iter().collect::<Vec<_>>(), first)?;
    change_tag("--deltag", tag, &vg, &old.iter().collect::<Vec<_>>(), first)
}
