//! `follow` on a btrfs standby: the received snapshots beyond the common
//! base are renamed in place, `snapshot_dir/divergent-<label>-<id>` (the
//! directory a received snapshot lives in moves whole; a read-only
//! subvolume can be renamed): no longer a set id, so never listed, shipped
//! or pruned as a set; listed with the divergent snapshots. btrfs receive
//! finds the base of the new primary's incremental by its Received UUID,
//! whatever else the directory holds.

use super::*;

/// Set aside the snapshots of `listed` (the volume's listing) newer than
/// `base`; idempotent (a rerun after a crash finds the ones already
/// moved). Returns where each one is now.
pub(super) fn set_aside_newer(
    vol: &Volume,
    listed: &[String],
    base: &str,
    label: &str,
) -> Result<Vec<String>> {
    validate_label(label)?;
    let dir = snapshot_dir(vol)?;
    let mut out = Vec::new();
    for name in listed.iter().filter(|n| n.as_str() > base) {
        let from = dir.join(name);
        let to = dir.join(format!("{DIVERGENT_PREFIX}{label}-{name}"));
        if std::fs::symlink_metadata(&to).is_ok() {
            return Err(Error::storage(format!(
                "volume `{}`: {} exists already; {} was not moved",
                vol.role,
                to.display(),
                from.display()
            )));
        }
        std::fs::rename(&from, &to).ctx(format!(
            "volume `{}`: set {} aside as {}",
            vol.role,
            from.display(),
            to.display()
        ))?;
        fsync_dir(dir)?;
        out.push(to.display().to_string());
    }
    let prefix = format!("{DIVERGENT_PREFIX}{label}-");
    for n in dir_entries(dir) {
        if n.starts_with(&prefix) {
            let p = dir.join(&n).display().to_string();
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}
