//! The DR cycle on LVM thin: which LV holds a snapshot, keeping a demoted
//! site's live data as divergent, and making a volume receivable again.

use super::*;

// ---------------------------------------------------------------------
// The DR cycle on LVM thin: which LV holds a snapshot, failback, switchover.
//
// A volume whose config names a `replica` has the received chain
// `replica.<id>` and, once this site is primary, its own sets
// `source.<id>` (thin snapshots of failover's copy `source`, which is a
// thin snapshot of a received one): all in one thin pool, so `thin_delta`
// diffs a received base against a set taken here. The volume's snapshots
// are both, by id. A base is named in streams by the id both sites know
// it by: what it was received from (`snapsite-from-<uuid>`), else its own
// uuid.
//
// Demoting (failback, switchover): the live LV is unmounted and renamed
// `<source>-divergent-<label>`, read-only, tagged `snapsite-divergent`
// (nothing copied, nothing destroyed); then the sets taken here up to the
// base are renamed into the replica chain (`replica.<id>`, tagged with
// their own uuid as `snapsite-from-`), the later ones after the divergent
// LV (`<divergent>.<id>`, out of every listing), so the next incremental
// from the peer applies to `replica.<base>`.
// ---------------------------------------------------------------------

/// Tag of a divergent LV (a demoted site's live data, read-only).
pub const DIVERGENT_TAG: &str = "snapsite-divergent";

/// The LV a new set's snapshot is taken of: `source` when the config names
/// a replica and `source` exists (this site is primary after a failover),
/// else the home LV.
pub(super) fn head(vol: &Volume) -> Result<&LvName> {
    let (lv, replica) = lvm_addr(vol)?;
    if replica.is_some() {
        let (vg, l) = split(lv);
        if vg_lvs(vg)?.is_some_and(|all| find(&all, l).is_some()) {
            return Ok(lv);
        }
    }
    home(vol)
}

/// The LV name of snapshot `name` of the volume among `all`: `source.<id>`
/// when the config names a replica and that LV exists, else the home LV's.
pub(super) fn snap_of(vol: &Volume, all: &[LvInfo], name: &str) -> Result<String> {
    let (lv, replica) = lvm_addr(vol)?;
    if replica.is_some() {
        let own = snap_lv(&lv.lv, name);
        if find(all, &own).is_some() {
            return Ok(own);
        }
    }
    Ok(snap_lv(&home(vol)?.lv, name))
}

/// The volume's snapshots with a replica configured: the replica's and,
/// while `source` exists, the source's, by id.
pub(super) fn chain(vol: &Volume) -> Result<Vec<String>> {
    let (lv, replica) = lvm_addr(vol)?;
    let (vg, rlv) = split(replica.unwrap_or(lv));
    let Some(all) = vg_lvs(vg)? else {
        return Ok(Vec::new());
    };
    Ok(chain_of(&all, rlv, &lv.lv))
}

/// [`chain`] on an `lvs` report: `replica.<id>` and, when the LV `source`
/// is there, `source.<id>`; sorted, without duplicates.
pub fn chain_of(all: &[LvInfo], rlv: &str, slv: &str) -> Vec<String> {
    let mut v = snapshots_of(all, rlv);
    if slv != rlv && find(all, slv).is_some() {
        v.extend(snapshots_of(all, slv));
    }
    v.sort();
    v.dedup();
    v
}

/// Keep the live LV as `<source>-divergent-<label>`: unmounted from the
/// volume's mountpoint, renamed, read-only, tagged [`DIVERGENT_TAG`].
pub(super) fn keep_divergent(vol: &Volume, label: &str) -> Result<String> {
    crate::backend::check_label(label)?;
    let (vg, lv) = split(source_lv(vol)?);
    let dst = format!("{lv}-divergent-{label}");
    let ctx = || format!("volume `{}`: keep {vg}/{lv} as divergent", vol.role);
    let all = lvs_of(vol, vg)?;
    if find(&all, lv).is_none() {
        let Some(kept) = find(&all, &dst) else {
            return Err(Error::storage(format!(
                "volume `{}`: logical volume {vg}/{lv} does not exist; nothing to keep",
                vol.role
            )));
        };
        // Renamed before; a run that died before the read-only tag left
        // it writable and untagged (make_receivable looks for the tag).
        if kept.has_tag(DIVERGENT_TAG) && kept.attr.chars().nth(1) == Some('r') {
            return Ok(format!("{vg}/{dst}"));
        }
        let mut c = lvm("lvchange").args(["--addtag", DIVERGENT_TAG]);
        if kept.attr.chars().nth(1) != Some('r') {
            c = c.arg("-pr");
        }
        c.arg(format!("{vg}/{dst}")).run().ctx(ctx())?;
        return Ok(format!("{vg}/{dst}"));
    }
    if find(&all, &dst).is_some() {
        return Err(Error::refused(format!(
            "volume `{}`: {vg}/{dst} exists already; nothing was changed",
            vol.role
        )));
    }
    if let Some(mp) = &vol.mountpoint {
        if mounted_source(mp).is_some_and(|s| is_device_of(&s, vg, lv)) {
            Cmd::new("umount").arg(mp).run().ctx(ctx())?;
            crate::failpoint!("lvm.keep_divergent.after_umount");
        }
    }
    lvm("lvrename")
        .args([vg, lv, dst.as_str()])
        .run()
        .ctx(ctx())?;
    crate::failpoint!("lvm.keep_divergent.after_rename");
    lvm("lvchange")
        .args(["-pr", "--addtag", DIVERGENT_TAG])
        .arg(format!("{vg}/{dst}"))
        .run()
        .ctx(ctx())?;
    Ok(format!("{vg}/{dst}"))
}

/// Make `replica.<name>` exist: this site's sets up to the base move into
/// the replica chain, later ones after the newest divergent LV.
pub(super) fn make_receivable(vol: &Volume, name: &str) -> Result<()> {
    if parse_set_id(name).is_none() {
        return Err(Error::refused(format!("`{name}` is not a set id")));
    }
    let (vg, rlv) = split(require_replica(vol)?);
    let (svg, slv) = split(source_lv(vol)?);
    if svg != vg {
        return Err(Error::config(format!(
            "volume `{}`: source {} must be in the replica's volume group {vg}",
            vol.role, vol.source
        )));
    }
    let ctx = || format!("volume `{}`: make {name} receivable", vol.role);
    let all = lvs_of(vol, vg)?;
    let divergent = all
        .iter()
        .filter(|l| l.has_tag(DIVERGENT_TAG) && l.name.starts_with(&format!("{slv}-divergent-")))
        .map(|l| l.name.clone())
        .max();
    for id in snapshots_of(&all, slv) {
        let info = find(&all, &snap_lv(slv, &id)).expect("listed");
        let to = if id.as_str() <= name {
            snap_lv(rlv, &id)
        } else if let Some(d) = &divergent {
            snap_lv(d, &id)
        } else {
            continue;
        };
        if find(&all, &to).is_some() {
            return Err(Error::refused(format!(
                "volume `{}`: {vg}/{to} exists already; not renaming {vg}/{} onto it",
                vol.role, info.name
            )));
        }
        lvm("lvrename")
            .args([vg, info.name.as_str(), to.as_str()])
            .run()
            .ctx(ctx())?;
        crate::failpoint!("lvm.make_receivable.after_rename");
    }
    // Each moved snapshot is known by the uuid it had here (what the peer
    // recorded as its base); a run that died after a rename left the tag
    // off, so the pass looks at the chain, not at what this run renamed.
    let all = lvs_of(vol, vg)?;
    for l in &all {
        let moved = [rlv, divergent.as_deref().unwrap_or(rlv)]
            .iter()
            .any(|p| l.name.starts_with(&format!("{p}.")));
        if moved && l.tag_value(SET_TAG).is_some() && l.tag_value(FROM_TAG).is_none() {
            lvm("lvchange")
                .arg("--addtag")
                .arg(format!("{FROM_TAG}{}", l.uuid))
                .arg(format!("{vg}/{}", l.name))
                .run()
                .ctx(ctx())?;
        }
    }
    let all = lvs_of(vol, vg)?;
    if find(&all, &snap_lv(rlv, name)).is_none() {
        return Err(Error::storage(format!(
            "volume `{}`: no LV holds snapshot {name} ({vg}/{} is missing)",
            vol.role,
            snap_lv(rlv, name)
        )));
    }
    Ok(())
}
