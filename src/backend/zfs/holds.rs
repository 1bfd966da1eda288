//! The common snapshot's user holds on ZFS, one tag per holder (see
//! `backend::holds`): `zfs destroy` refuses a held snapshot, by snapsite or
//! by hand, so one standby's base survives another standby moving on.

use super::*;
use crate::backend::holds::is_common_tag;

/// The volume's snapsite snapshots (full names), from one listing.
fn chain_names(vol: &Volume) -> Result<Vec<String>> {
    let l = list_datasets(&datasets_of(vol))?;
    Ok(chain_in(vol, &l)
        .into_iter()
        .map(|(_, full, _)| full)
        .collect())
}

/// `zfs holds -H` of `snaps` (none: no call).
fn holds_of(snaps: &[String]) -> Result<Vec<(String, String)>> {
    if snaps.is_empty() {
        return Ok(Vec::new());
    }
    Ok(parse_holds(
        &zfs().args(["holds", "-H"]).args(snaps).output()?,
    ))
}

/// One listing, one `zfs holds`, one `zfs hold` and one `zfs release`
/// for every volume, however many.
pub(super) fn protect_batch(items: &[(&Volume, &str)], tag: &str) -> Result<()> {
    let mut dss: Vec<String> = Vec::new();
    for (v, _) in items {
        for d in datasets_of(v) {
            if !dss.contains(&d) {
                dss.push(d);
            }
        }
    }
    let l = list_datasets(&dss)?;
    let mut want: Vec<String> = Vec::new();
    let mut snaps: Vec<String> = Vec::new();
    for (vol, name) in items {
        // as `snap_of`: on the live source when it is there
        let live = format!("{}@{name}", vol.source);
        want.push(
            if vol.replica().is_some() && l.has_snap(&vol.source, name) {
                live
            } else {
                snap(vol, name)
            },
        );
        snaps.extend(chain_in(vol, &l).into_iter().map(|(_, full, _)| full));
    }
    let held: Vec<String> = holds_of(&snaps)?
        .into_iter()
        .filter(|(_, t)| t == tag)
        .map(|(n, _)| n)
        .collect();
    let roles = || {
        items
            .iter()
            .map(|(v, _)| format!("`{}`", v.role))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Hold the new ones first: the chain is never unprotected.
    let hold: Vec<&String> = want.iter().filter(|s| !held.contains(s)).collect();
    let release: Vec<&String> = held.iter().filter(|h| !want.contains(h)).collect();
    for (verb, names) in [("hold", hold), ("release", release)] {
        if !names.is_empty() {
            zfs()
                .args([verb, tag])
                .args(&names)
                .run()
                .ctx(format!("volume {}", roles()))?;
        }
    }
    Ok(())
}

pub(super) fn common_holds(vol: &Volume) -> Result<Vec<(String, String)>> {
    Ok(holds_of(&chain_names(vol)?)?
        .into_iter()
        .filter(|(_, t)| is_common_tag(t))
        .collect())
}

pub(super) fn release(vol: &Volume, tag: &str) -> Result<Vec<String>> {
    let held: Vec<String> = common_holds(vol)?
        .into_iter()
        .filter(|(_, t)| t == tag)
        .map(|(n, _)| n)
        .collect();
    if !held.is_empty() {
        zfs()
            .args(["release", tag])
            .args(&held)
            .run()
            .ctx(format!("volume `{}`: releasing hold {tag}", vol.role))?;
    }
    Ok(held)
}
