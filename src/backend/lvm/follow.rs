//! `follow` on an LVM thin standby: the received snapshots beyond the
//! common base (`replica.<id>`, newer than the base) are renamed
//! `<replica>-divergent-<label>.<id>`: out of the `replica.` namespace, so
//! never listed, shipped or pruned as sets; read-only, tagged
//! [`DIVERGENT_TAG`] (listed with the divergent data), their common tags
//! dropped (they are no one's base any more). Nothing is copied or
//! destroyed. The new primary's incremental from the base then applies as
//! any receive does: the replica is made again from `replica.<base>`.

use super::*;

/// Where snapshot `id` of replica LV `rlv` is set aside.
pub fn set_aside_lv(rlv: &str, label: &str, id: &str) -> String {
    snap_lv(&format!("{rlv}-divergent-{label}"), id)
}

/// Idempotent: a rerun after a crash finds the ones already renamed (and
/// finishes their tags). Returns where each one is now (`vg/lv`).
pub(super) fn set_aside_newer(vol: &Volume, base: &str, label: &str) -> Result<Vec<String>> {
    crate::backend::check_label(label)?;
    if parse_set_id(base).is_none() {
        return Err(Error::refused(format!("`{base}` is not a set id")));
    }
    let (vg, rlv) = split(require_replica(vol)?);
    let ctx = |id: &str| format!("volume `{}`: set {vg}/{} aside", vol.role, snap_lv(rlv, id));
    let all = lvs_of(vol, vg)?;
    let newer: Vec<String> = snapshots_of(&all, rlv)
        .into_iter()
        .filter(|id| id.as_str() > base)
        .collect();
    if !newer.is_empty() && !snapshots_of(&all, rlv).iter().any(|id| id == base) {
        return Err(Error::storage(format!(
            "volume `{}`: {vg}/{} (the base) does not exist; nothing was changed",
            vol.role,
            snap_lv(rlv, base)
        )));
    }
    for id in &newer {
        let to = set_aside_lv(rlv, label, id);
        if find(&all, &to).is_some() {
            return Err(Error::storage(format!(
                "volume `{}`: {vg}/{to} exists already; {vg}/{} was not moved",
                vol.role,
                snap_lv(rlv, id)
            )));
        }
        lvm("lvrename")
            .args([vg, snap_lv(rlv, id).as_str(), to.as_str()])
            .run()
            .ctx(ctx(id))?;
    }
    // Every LV set aside under this label (this run's and an earlier
    // one's): read-only, tagged divergent, no common tag.
    let prefix = format!("{rlv}-divergent-{label}.");
    let all = lvs_of(vol, vg)?;
    let mut out = Vec::new();
    for l in all.iter().filter(|l| l.name.starts_with(&prefix)) {
        let mut c = lvm("lvchange");
        let mut change = false;
        if !l.has_tag(DIVERGENT_TAG) {
            c = c.args(["--addtag", DIVERGENT_TAG]);
            change = true;
        }
        for t in l
            .tags
            .iter()
            .filter(|t| crate::backend::holds::is_common_tag(t))
        {
            c = c.arg("--deltag").arg(t);
            change = true;
        }
        if l.attr.chars().nth(1) != Some('r') {
            c = c.arg("-pr");
            change = true;
        }
        if change {
            c.arg(format!("{vg}/{}", l.name)).run().ctx(format!(
                "volume `{}`: mark {vg}/{} divergent",
                vol.role, l.name
            ))?;
        }
        out.push(format!("{vg}/{}", l.name));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_aside_snapshot_leaves_the_replica_namespace() {
        let id = "20260101T000000.000Z-full";
        let lv = set_aside_lv("rep-mysql", "b-g2", id);
        assert_eq!(lv, format!("rep-mysql-divergent-b-g2.{id}"));
        assert!(!lv.starts_with("rep-mysql."));
    }
}
