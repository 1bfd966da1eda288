//! The DR cycle on ZFS: which dataset holds a snapshot, keeping a demoted
//! site's live dataset as divergent, and making a volume receivable again.

use super::*;

// ---------------------------------------------------------------------
// The DR cycle on ZFS: which dataset holds a snapshot, failback, switchover.
//
// A volume whose config names a `replica` has two datasets: `replica`
// (received snapshots, while this site is a standby) and `source` (the live
// data: failover's clone of a replica snapshot). A clone's incremental from
// its origin is a *clone stream* (DRR_FLAG_CLONE, also from a bookmark of
// the origin), which `zfs receive` only accepts as a NEW dataset; so the
// first set taken on the live clone promotes it (`zfs promote`): the
// snapshots up to the origin move to `source`, the replica becomes an empty
// clone of it, and every later send is a plain incremental within `source`.
// The volume's snapshots are those of both datasets, in creation order.
//
// Demoting (failback, switchover) keeps the live dataset, renamed
// `<source>-divergent-<label>`, read-only, mounted under
// /run/snapsite/divergent/; then `replica` is remade as a clone of its base
// snapshot and promoted, so the base (and every older snapshot) belongs to
// the replica and the next incremental from the peer applies to it. Nothing
// after the base is destroyed: it stays with the divergent dataset.
// ---------------------------------------------------------------------

/// Where divergent datasets are mounted (read-only).
pub(super) const DIVERGENT_MOUNT_DIR: &str = "/run/snapsite/divergent";

/// Parse `zfs list -H -o name -t snapshot -s createtxg -d 1 DS...`: the
/// snapsite snapshots of the datasets `dss`, in the listed order, as
/// (name, full name).
pub fn parse_chain(dss: &[String], text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let full = l.trim_end();
            let (ds, name) = full.split_once('@')?;
            (dss.iter().any(|d| d == ds) && parse_set_id(name).is_some())
                .then(|| (name.to_string(), full.to_string()))
        })
        .collect()
}

/// The full name of snapshot `name` of the volume: on the live `source`
/// when it is there (this site took it as primary), else on the replica.
pub(super) fn snap_of(vol: &Volume, name: &str) -> Result<String> {
    if vol.replica().is_some() {
        let live = format!("{}@{name}", vol.source);
        if exists(&live)? {
            return Ok(live);
        }
    }
    Ok(snap(vol, name))
}

/// The dataset a new set's snapshot of the volume is taken of: `source`.
/// When `source` is failover's clone of the replica, it is promoted first
/// (see above), so its incrementals are plain ones.
pub(super) fn snapshot_head(vol: &Volume) -> Result<String> {
    let Some(r) = vol.replica() else {
        return Ok(dataset(vol).to_string());
    };
    if !exists(&vol.source)? {
        // A standby takes no sets; keep the old behaviour for its errors.
        return Ok(r);
    }
    let origin = get("origin", &vol.source)?.unwrap_or_default();
    if origin.starts_with(&format!("{r}@")) {
        tracing::info!(volume = %vol.role, source = %vol.source, %origin, "first set on failover's clone: promoting it");
        zfs()
            .args(["promote", &vol.source])
            .run()
            .ctx(format!("volume `{}`: promote the live clone", vol.role))?;
    }
    Ok(vol.source.clone())
}

/// `<source>-divergent-<label>`.
pub fn divergent_dataset(source: &str, label: &str) -> String {
    format!("{source}-divergent-{label}")
}

/// Keep the live dataset as `<source>-divergent-<label>`: renamed (with
/// every snapshot it holds), `readonly=on`, `canmount=noauto`, mounted
/// under /run/snapsite/divergent/. `source` is free afterwards.
pub(super) fn keep_divergent(vol: &Volume, label: &str) -> Result<String> {
    crate::backend::check_label(label)?;
    let src = &vol.source;
    let ctx = || format!("volume `{}`: keep {src} as divergent", vol.role);
    if !src.contains('/') {
        return Err(Error::refused(format!(
            "volume `{}`: source {src} is a pool's root dataset, which cannot be renamed; nothing was changed",
            vol.role
        )));
    }
    let dst = divergent_dataset(src, label);
    if !exists(src)? {
        if !exists(&dst)? {
            return Err(Error::storage(format!(
                "volume `{}`: dataset {src} does not exist; nothing to keep",
                vol.role
            )));
        }
        // Renamed before (a run that died after it): finish the steps
        // below, each safe to redo.
    } else if exists(&dst)? {
        return Err(Error::refused(format!(
            "volume `{}`: {dst} exists already; nothing was changed",
            vol.role
        )));
    } else {
        zfs().args(["rename", src, &dst]).run().ctx(ctx())?;
        crate::failpoint!("zfs.keep_divergent.after_rename");
    }
    let mp = PathBuf::from(DIVERGENT_MOUNT_DIR).join(dst.replace('/', "_"));
    zfs()
        .args(["set", "readonly=on", "canmount=noauto"])
        .arg(format!("mountpoint={}", mp.display()))
        .arg(&dst)
        .run()
        .ctx(ctx())?;
    crate::failpoint!("zfs.keep_divergent.after_readonly");
    if get("mounted", &dst)?.as_deref() != Some("yes") {
        zfs().args(["mount", &dst]).run().ctx(ctx())?;
    }
    Ok(dst)
}

/// Mounts divergent dataset `dst` (kept by [`keep_divergent`]) again when
/// it exists and is not mounted: its mountpoint is under /run, and
/// `canmount=noauto` keeps a boot from mounting it, so after a reboot a
/// demote's rerun (which skips the kept step) would leave it unmounted.
pub(super) fn remount_divergent(vol: &Volume, dst: &str) -> Result<()> {
    if !exists(dst)? || get("mounted", dst)?.as_deref() == Some("yes") {
        return Ok(());
    }
    zfs().args(["mount", dst]).run().ctx(format!(
        "volume `{}`: mount the divergent dataset {dst} again",
        vol.role
    ))
}

/// Whether divergent dataset `dst` is mounted, and its mountpoint;
/// `None` when it is gone (destroyed by hand) or never mounted (follow's
/// set-aside replica: `mountpoint=none`).
pub(super) fn divergent_mount(dst: &str) -> Result<Option<(bool, String)>> {
    if !exists(dst)? {
        return Ok(None);
    }
    let mp = get("mountpoint", dst)?.unwrap_or_default();
    if !mp.starts_with('/') {
        return Ok(None);
    }
    let mounted = get("mounted", dst)?.as_deref() == Some("yes");
    Ok(Some((mounted, mp)))
}

/// The divergent datasets of the volume, oldest first.
pub(super) fn divergent(vol: &Volume) -> Result<Vec<String>> {
    let Some((parent, _)) = vol.source.rsplit_once('/') else {
        return Ok(Vec::new());
    };
    if !exists(parent)? {
        return Ok(Vec::new());
    }
    let text = names_below(parent, "filesystem", &[])?;
    let prefix = divergent_dataset(&vol.source, "");
    let mut v: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    v.sort();
    Ok(v)
}

/// Make `replica` a receive target whose newest snapshot is `name`, the
/// base this site took as primary (now in `source` or a divergent
/// dataset): a clone of it, promoted, never mounted. A replica that exists
/// already must hold `name` as its newest snapshot, or be an empty clone
/// (what a promoted live dataset leaves behind), which is replaced.
pub(super) fn make_receivable(vol: &Volume, name: &str) -> Result<()> {
    if parse_set_id(name).is_none() {
        return Err(Error::refused(format!("`{name}` is not a set id")));
    }
    let r = require_replica(vol, "dataset")?;
    let ctx = || format!("volume `{}`: make {name} receivable in {r}", vol.role);
    if exists(&r)? {
        let own = own_snapshots(&r)?;
        let own: Vec<&str> = own.lines().map(str::trim_end).collect();
        let want = format!("{r}@{name}");
        if own.contains(&want.as_str()) {
            let newest = parse_snapshot_list(&r, &own.join("\n"));
            if newest.last().map(String::as_str) != Some(name) {
                return Err(Error::refused(format!(
                    "volume `{}`: {want} exists but is not the newest snapshot of {r}; not changing it",
                    vol.role
                )));
            }
            return Ok(());
        }
        let origin = get("origin", &r)?;
        if !own.is_empty() || origin.is_none() {
            return Err(Error::refused(format!(
                "volume `{}`: replica {r} exists with snapshots of its own (or is not a clone) and lacks {name}; not replacing it",
                vol.role
            ))
            .with_hint(format!("move {r} away by hand, then run this again")));
        }
        zfs().args(["destroy", &r]).run().ctx(ctx())?;
        crate::failpoint!("zfs.make_receivable.after_destroy");
    }
    let mut holders = vec![vol.source.clone()];
    holders.extend(divergent(vol)?.into_iter().rev());
    let mut from = None;
    for h in holders {
        let s = format!("{h}@{name}");
        if exists(&s)? {
            from = Some(s);
            break;
        }
    }
    let from = from.ok_or_else(|| {
        Error::storage(format!(
            "volume `{}`: no dataset of this volume holds snapshot {name}",
            vol.role
        ))
    })?;
    if let Some((parent, _)) = r.rsplit_once('/') {
        if !exists(parent)? {
            zfs()
                .args(["create", "-p", "-o", "mountpoint=none", parent])
                .run()
                .ctx(ctx())?;
        }
    }
    clone_inert(&from, &r).ctx(ctx())?;
    // A rerun finds the clone without snapshots of its own, destroys it
    // and clones again.
    crate::failpoint!("zfs.make_receivable.after_clone");
    zfs().args(["promote", &r]).run().ctx(ctx())
}

/// Clone snapshot `from` as `to` with the first of the receive overrides
/// (read-only, not mounted, no exec, setuid or devices): a replica that
/// takes incrementals from the sender again, as inert as a received one.
pub(super) fn clone_inert(from: &str, to: &str) -> Result<()> {
    zfs()
        .arg("clone")
        .args(CLONE_OVERRIDES)
        .args([from, to])
        .run()
}

/// `zfs list` of `ds`'s own snapshots, oldest first (by createtxg), one
/// full name a line: what failback's `make_receivable` and follow's
/// set-aside read before they touch a replica.
pub(super) fn own_snapshots(ds: &str) -> Result<String> {
    names_below(ds, "snapshot", &["-s", "createtxg"])
}

/// `zfs list` of the datasets of `kind` directly below `ds` (and `ds`
/// itself when of that kind), one full name a line, in `sort` order.
fn names_below(ds: &str, kind: &str, sort: &[&str]) -> Result<String> {
    zfs()
        .args(["list", "-H", "-o", "name", "-t", kind])
        .args(sort)
        .args(["-d", "1", ds])
        .output()
}
