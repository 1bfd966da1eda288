//! ZFS over the `zfs` CLI (no libzfs: it has no stable ABI). Output is read
//! with `-H -p -o`, which OpenZFS 2.1 and 2.3 print alike.
//!
//! - Atomic sets: the volumes of one pool share an atomic key, and the
//!   coordinator hands them to ONE `zfs snapshot a@x b@x ...` call.
//! - Snapshots of a volume live on `source` on the primary and on `replica`
//!   on the standby, so the replica is never modified and every incremental
//!   applies without `-F`.
//! - The standby trusts nothing in a stream: before `zfs receive` sees a
//!   byte, the stream's first record (DRR_BEGIN) must describe ONE snapshot
//!   of ONE filesystem (a substream: no `-R`/`-p`/`-I`/`-b`/`--holds`
//!   package, which could carry child datasets and properties), named as
//!   announced, from the base this replica holds (by guid) or from nothing
//!   for a full stream ([`check_begin`]). Every receive, full or
//!   incremental, overrides what could mount, execute, share or reserve
//!   space ([`RECEIVE_OVERRIDES`]): replicas stay `readonly=on`,
//!   `canmount=noauto`, `mountpoint=none`, `exec=off`, `setuid=off`,
//!   `devices=off`. Failover's clone takes its properties from its own
//!   parent (plus `readonly=off`, `canmount=on`, the configured
//!   mountpoint), never from the replica.
//! - A cut receive keeps its state (`receive_resume_token`); the sender
//!   resumes with `zfs send -t`, after checking that the token names the
//!   snapshot it means to send. A stale token is discarded with `receive -A`.
//! - The common snapshot carries a hold (`snapsite-common`): `zfs destroy`
//!   refuses it, whoever tries.
//! - Failover clones the received snapshot to `source` (mounted at the
//!   volume's mountpoint); the received snapshot stays pristine.

mod begin;
mod demote;
mod follow;
mod holds;
mod listing;
mod receive;
pub use begin::{BEGIN_RECORD_LEN, StreamBegin, check_begin, parse_begin};
#[cfg(test)]
use begin::{DMU_OST_ZFS, DRR_FLAG_CLONE};
use demote::{divergent, keep_divergent, make_receivable, snap_of, snapshot_head};
pub use demote::{divergent_dataset, parse_chain};
pub use listing::{
    DatasetListing, list_datasets, only_missing_datasets, parse_dataset_listing,
    parse_snapshot_list,
};
use listing::{chain_in, datasets_of, volume_listing};
use receive::{ZfsReceive, check_token};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;

use super::{
    Backend, BoxedSink, BoxedSource, CopyCheck, ProcessSink, ProcessSource, Receive, ReceiveSteps,
    Resumable, VolumeListing, require_replica,
};
use crate::base::cmd::{Cmd, Running};
use crate::base::config::{BackendKind, Volume, VolumeAddr};
use crate::base::error::{Context, Error, Result};
use crate::base::model::{is_set_id, parse_set_id};

pub struct Zfs;

/// The user hold tag on the common snapshot.
pub const HOLD_TAG: &str = super::holds::COMMON_TAG;

/// `zfs receive` options on EVERY receive (full, incremental, resumed):
/// whatever the stream says, the replica is never mounted, executable,
/// shared, or reserving space. `-o` sets a local value, which wins over a
/// received one: measured on OpenZFS 2.3, `-x mountpoint` and `-x
/// refreservation` did NOT keep a `zfs send -p -i` stream's values, so
/// everything that protects the standby is an `-o`; `-x` only for what has
/// no safe fixed value (the standby's inherited one is kept). The stream
/// header check refuses property-carrying streams before this anyway.
pub const RECEIVE_OVERRIDES: &[&str] = &[
    "-o",
    "readonly=on",
    "-o",
    "canmount=noauto",
    "-o",
    "mountpoint=none",
    "-o",
    "exec=off",
    "-o",
    "setuid=off",
    "-o",
    "devices=off",
    "-o",
    "sharenfs=off",
    "-o",
    "sharesmb=off",
    "-o",
    "refreservation=none",
    "-o",
    "reservation=none",
    "-o",
    "quota=none",
    "-o",
    "refquota=none",
    "-x",
    "copies",
    "-x",
    "special_small_blocks",
    "-x",
    "zoned",
    "-x",
    "overlay",
];

/// The first six of [`RECEIVE_OVERRIDES`] (readonly, canmount, mountpoint,
/// exec, setuid, devices): what a replica cloned from a snapshot gets, so it
/// is as inert as a received one.
const CLONE_OVERRIDES: &[&str] = RECEIVE_OVERRIDES.split_at(12).0;

fn zfs() -> Cmd {
    Cmd::new("zfs")
}

/// The dataset holding this site's snapshots of the volume.
pub fn dataset(vol: &Volume) -> &str {
    match &vol.addr {
        VolumeAddr::Zfs {
            replica: Some(r), ..
        } => r,
        _ => &vol.source,
    }
}

/// A rehearsal's clone: next to the replica, never the live `source`.
fn rehearsal_dataset(vol: &Volume) -> String {
    format!("{}-rehearsal", dataset(vol))
}

fn snap(vol: &Volume, name: &str) -> String {
    format!("{}@{name}", dataset(vol))
}

pub fn pool_of(ds: &str) -> &str {
    ds.split('/').next().unwrap_or(ds)
}

fn exists(name: &str) -> Result<bool> {
    let out = zfs()
        .args(["list", "-H", "-t", "all", "-o", "name"])
        .arg(name)
        .run_raw()?;
    Ok(out.status.success())
}

/// Parse one value of `zfs get -H -p -o value PROP NAME`; `-` means unset.
pub fn parse_value(text: &str) -> Option<String> {
    let v = text.trim();
    if v.is_empty() || v == "-" {
        None
    } else {
        Some(v.to_string())
    }
}

fn get(prop: &str, name: &str) -> Result<Option<String>> {
    Ok(parse_value(
        &zfs()
            .args(["get", "-H", "-p", "-o", "value", prop])
            .arg(name)
            .output()?,
    ))
}

/// Parse `zfs send -nv -t TOKEN` (stderr or stdout, by version): the
/// `toname = pool/ds@snap` line of the token contents.
pub fn parse_token_toname(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let l = l.trim();
        l.strip_prefix("toname = ").map(|v| v.trim().to_string())
    })
}

/// Parse `zfs holds -H NAME...`: (snapshot, tag) pairs.
pub fn parse_holds(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

fn send_flags(vol: &Volume) -> Vec<&'static str> {
    let mut f = Vec::new();
    let o = vol.zfs_options();
    if o.raw {
        f.push("-w");
    }
    if o.compressed {
        f.push("-c");
    }
    if o.large_blocks {
        f.push("-L");
    }
    f
}

/// The key check of `copy_prerequisites`, from the values `zfs get`
/// reports (`encryption` of the snapshot; the dataset's `keystatus` and
/// `encryptionroot` asked only when it is encrypted).
pub fn copy_check(
    role: &str,
    ds: &str,
    encryption: Option<&str>,
    keystatus: &dyn Fn() -> Result<Option<String>>,
    encryption_root: &dyn Fn() -> Result<Option<String>>,
) -> Result<CopyCheck> {
    let enc = match encryption {
        None | Some("off") => {
            return Ok(CopyCheck {
                checked: format!("volume `{role}`: {ds} is not encrypted"),
                problem: None,
            });
        }
        Some(e) => e,
    };
    let status = keystatus()?.unwrap_or_else(|| "-".to_string());
    if status == "available" {
        return Ok(CopyCheck {
            checked: format!("volume `{role}`: {ds} is encrypted ({enc}), its key is loaded"),
            problem: None,
        });
    }
    let root = encryption_root()?.unwrap_or_else(|| ds.to_string());
    Ok(CopyCheck {
        checked: format!("volume `{role}`: {ds} is encrypted ({enc}), key status {status}"),
        problem: Some(format!(
            "volume `{role}`: {ds} was received encrypted (a raw stream) and its key is not loaded (keystatus {status}): failover's clone could not be mounted; load it first: `zfs load-key {root}`"
        )),
    })
}

/// Failover's and a rehearsal's clones: set-uid files and device nodes
/// from the other site do not work there (docs/security.md), unless the
/// volume says `allow_privileged_files = true`.
fn unprivileged(vol: &Volume) -> &'static [&'static str] {
    if vol.allow_privileged_files {
        &[]
    } else {
        &["-o", "setuid=off", "-o", "devices=off"]
    }
}

impl Backend for Zfs {
    fn kind(&self) -> BackendKind {
        BackendKind::Zfs
    }

    fn probe(&self, vol: &Volume, primary: bool) -> Result<Vec<String>> {
        let version = zfs().arg("version").output()?;
        let mut notes = vec![version.lines().collect::<Vec<_>>().join(", ")];
        let ds = dataset(vol);
        if primary {
            // A primary's live data is `source`; with a `replica` too (a
            // site of a DR cycle), either one (`check` tells the roles by
            // the [standby] section, which both such sites have).
            let ds = vol.source.as_str();
            let replica_there = match vol.replica() {
                Some(r) => exists(&r)?,
                None => false,
            };
            if !replica_there && !exists(ds)? {
                return Err(Error::storage(format!(
                    "volume `{}`: ZFS dataset {ds} does not exist",
                    vol.role
                )));
            }
        } else {
            require_replica(vol, "dataset")?;
            if !exists(ds)? {
                let parent = ds.rsplit_once('/').map(|(p, _)| p).unwrap_or(ds);
                if !exists(parent)? {
                    return Err(Error::storage(format!(
                        "volume `{}`: parent dataset {parent} of replica {ds} does not exist",
                        vol.role
                    ))
                    .with_hint(format!("zfs create -p -o mountpoint=none {parent}")));
                }
                notes.push(format!(
                    "replica {ds} will be created by the first full receive"
                ));
            }
            if let Some(r) = self.resumable(vol)? {
                notes.push(format!(
                    "a cut receive of {} can be resumed",
                    r.snapshot.as_deref().unwrap_or("a snapshot")
                ));
            }
            if let Some(p) = self.capacity_problem(vol)? {
                notes.push(format!("warning: {p}"));
            }
        }
        Ok(notes)
    }

    fn capacity_problem(&self, vol: &Volume) -> Result<Option<String>> {
        let pool = pool_of(dataset(vol));
        let out = Cmd::new("zpool")
            .args(["get", "-H", "-p", "-o", "value", "capacity"])
            .arg(pool)
            .output()?;
        Ok(pool_capacity_problem(pool, &out))
    }

    /// The dataset is rolled back to the snapshot before it (`zfs rollback`
    /// destroys `name` with it): an incremental receive needs the dataset
    /// unchanged since its base. Without an earlier snapshot the dataset
    /// was made by that receive and goes with it.
    fn discard_unverified(&self, vol: &Volume, name: &str) -> Result<()> {
        let ds = require_replica(vol, "dataset")?;
        let l = list_datasets(std::slice::from_ref(&ds))?;
        let chain: Vec<String> = chain_in(vol, &l)
            .into_iter()
            .filter(|(_, full, _)| full.starts_with(&format!("{ds}@")))
            .map(|(n, _, _)| n)
            .collect();
        if chain.last().map(String::as_str) != Some(name) {
            return Err(Error::storage(format!(
                "volume `{}`: {ds}@{name} is not the replica's newest snapshot; not removed",
                vol.role
            )));
        }
        let ctx = format!("volume `{}`: remove unverified {ds}@{name}", vol.role);
        match chain.len().checked_sub(2).map(|i| &chain[i]) {
            Some(prev) => zfs()
                .args(["rollback", "-r"])
                .arg(format!("{ds}@{prev}"))
                .run()
                .ctx(ctx),
            None => zfs().args(["destroy", "-r", &ds]).run().ctx(ctx),
        }
    }

    fn parked_receive(&self, vol: &Volume) -> Result<Option<String>> {
        let Some(ds) = vol.replica() else {
            return Ok(None);
        };
        let l = list_datasets(std::slice::from_ref(&ds))?;
        Ok(l.tokens.contains_key(&ds).then(|| {
            format!("a cut receive into {ds} is parked for resuming (receive_resume_token set): its partial data stays allocated in pool {} until the primary resumes it; failover releases it", pool_of(&ds))
        }))
    }

    fn release_parked(&self, vol: &Volume) -> Result<Option<String>> {
        let Some(what) = self.parked_receive(vol)? else {
            return Ok(None);
        };
        let ds = vol.replica().unwrap_or_default();
        zfs()
            .args(["receive", "-A", &ds])
            .run()
            .ctx(format!("volume `{}`: release the parked receive", vol.role))?;
        Ok(Some(format!("released {what}")))
    }

    /// A raw (encrypted) stream arrives with its key unloaded: the clone
    /// would exist but could not be mounted. Checked on the replica (the
    /// snapshot's key is its dataset's), by what ZFS reports, not by what
    /// the set announced.
    fn copy_prerequisites(&self, vol: &Volume, name: &str) -> Result<Option<CopyCheck>> {
        let s = snap_of(vol, name)?;
        let ds = s.split('@').next().unwrap_or_default().to_string();
        let enc = get("encryption", &s).ctx(format!("volume `{}`", vol.role))?;
        Ok(Some(copy_check(
            &vol.role,
            &ds,
            enc.as_deref(),
            &|| get("keystatus", &ds),
            &|| get("encryptionroot", &ds),
        )?))
    }

    fn atomic_key(&self, vol: &Volume) -> Option<String> {
        Some(pool_of(dataset(vol)).to_string())
    }

    fn snapshot(&self, vols: &[&Volume], name: &str) -> Result<()> {
        // One call: atomic across datasets of the same pool.
        let names: Vec<String> = vols
            .iter()
            .map(|v| Ok(format!("{}@{name}", snapshot_head(v)?)))
            .collect::<Result<_>>()?;
        zfs().arg("snapshot").args(&names).run().ctx(format!(
            "volumes {}",
            vols.iter()
                .map(|v| v.role.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn storage_id(&self, vol: &Volume, name: &str) -> Result<Option<String>> {
        Ok(volume_listing(vol, &list_datasets(&datasets_of(vol))?)
            .ids
            .remove(name))
    }

    fn list(&self, vol: &Volume) -> Result<Vec<String>> {
        Ok(volume_listing(vol, &list_datasets(&datasets_of(vol))?).snapshots)
    }

    /// Every ZFS volume of the site in one `zfs list`, whatever its pool.
    fn listing_key(&self, _vol: &Volume) -> Option<String> {
        Some("zfs".into())
    }

    fn list_batch(&self, vols: &[&Volume]) -> Result<Vec<VolumeListing>> {
        let mut dss: Vec<String> = Vec::new();
        for v in vols {
            for d in datasets_of(v) {
                if !dss.contains(&d) {
                    dss.push(d);
                }
            }
        }
        let l = list_datasets(&dss)?;
        Ok(vols.iter().map(|v| volume_listing(v, &l)).collect())
    }

    fn send(&self, vol: &Volume, name: &str, base: Option<&str>) -> Result<BoxedSource> {
        let mut cmd = zfs().arg("send").args(send_flags(vol));
        // Where the snapshots are: one listing for both (see `snap_of`).
        let live = match vol.replica() {
            Some(_) => Some(list_datasets(std::slice::from_ref(&vol.source))?),
            None => None,
        };
        let full_name = |n: &str| match &live {
            Some(l) if l.has_snap(&vol.source, n) => format!("{}@{n}", vol.source),
            _ => snap(vol, n),
        };
        if let Some(b) = base {
            cmd = cmd
                .arg(if vol.zfs_options().intermediates {
                    "-I"
                } else {
                    "-i"
                })
                .arg(full_name(b));
        }
        cmd = cmd.arg(full_name(name));
        ProcessSource::spawn(cmd)
    }

    fn send_resume(&self, vol: &Volume, name: &str, token: &str) -> Result<BoxedSource> {
        check_token(token)?;
        let dry = zfs().args(["send", "-nv", "-t", token]).run_raw()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&dry.stdout),
            String::from_utf8_lossy(&dry.stderr)
        );
        if !dry.status.success() {
            return Err(Error::storage(format!(
                "volume `{}`: resume token is not usable here: {}",
                vol.role,
                text.trim()
            )));
        }
        let want = snap_of(vol, name)?;
        match parse_token_toname(&text) {
            Some(t) if t == want => {}
            other => {
                return Err(Error::storage(format!(
                    "volume `{}`: resume token is for {}, not {want}",
                    vol.role,
                    other.unwrap_or_else(|| "an unknown snapshot".into())
                )));
            }
        }
        ProcessSource::spawn(zfs().args(["send", "-t", token]))
    }

    fn receive(&self, vol: &Volume, r: Receive<'_>) -> Result<BoxedSink> {
        let Receive {
            name,
            base,
            expect_id,
            resume,
        } = r;
        let ds = &require_replica(vol, "dataset")?;
        // One listing answers every question below: the partial state, the
        // snapshot and the dataset, the base and its guid.
        let mut l = list_datasets(std::slice::from_ref(ds))?;
        let partial = l.tokens.contains_key(ds);
        if !resume && partial {
            tracing::warn!(volume = %vol.role, "discarding a cut receive that is not being resumed");
            zfs()
                .args(["receive", "-A", ds])
                .run()
                .ctx(format!("volume `{}`", vol.role))?;
            // a cut first receive took its dataset with it
            l = list_datasets(std::slice::from_ref(ds))?;
        }
        if resume && !partial {
            return Err(Error::storage(format!(
                "volume `{}`: no cut receive to resume on {ds}",
                vol.role
            )));
        }
        if l.has_snap(ds, name) {
            return Err(Error::storage(format!(
                "volume `{}`: {} already exists",
                vol.role,
                snap(vol, name)
            )));
        }
        let full = base.is_none() && !resume;
        if full && l.exists.contains(ds) {
            return Err(Error::refused(format!(
                "volume `{}`: replica {ds} exists but holds no snapshot in common with the primary; a full receive would overwrite it",
                vol.role
            ))
            .with_hint(format!("if {ds} is disposable, `zfs destroy -r {ds}` and ship again")));
        }
        let fromguid = match base {
            None => None,
            Some(b) => {
                let missing = || {
                    Error::storage(format!(
                        "volume `{}`: base snapshot {b} is missing on {ds}",
                        vol.role
                    ))
                };
                let g = l.guid(ds, b).ok_or_else(missing)?;
                Some(g.parse::<u64>().map_err(|_| {
                    Error::storage(format!("volume `{}`: guid `{g}` of {b}", vol.role))
                })?)
            }
        };
        // The sender's storage id is the snapshot's guid: a number, or nothing.
        let toguid = match expect_id {
            None => None,
            Some(id) => Some(id.parse::<u64>().map_err(|_| {
                Error::refused(format!(
                    "volume `{}`: `{id}` is not a ZFS guid (storage id)",
                    vol.role
                ))
            })?),
        };
        // Nothing reaches `zfs receive` before the stream's first record
        // passed `check_begin`; a cut keeps `zfs receive -s`'s resume state.
        Ok(Box::new(
            ProcessSink::gated(
                &vol.role,
                BEGIN_RECORD_LEN,
                ZfsReceive {
                    fromguid,
                    toguid,
                    ds: ds.to_string(),
                    name: name.to_string(),
                    created_ds: full,
                    expect_id: expect_id.map(str::to_string),
                    role: vol.role.clone(),
                },
            )
            .resumable(),
        ))
    }

    fn resumable(&self, vol: &Volume) -> Result<Option<Resumable>> {
        let Some(ds) = vol.replica() else {
            return Ok(None);
        };
        // One call (each `zfs` exec counts on slow hosts): a missing
        // dataset has nothing to resume.
        let l = list_datasets(std::slice::from_ref(&ds))?;
        Ok(l.tokens.get(&ds).map(|token| Resumable {
            snapshot: None,
            token: token.clone(),
        }))
    }

    fn cleanup_partial(&self, _vol: &Volume) -> Result<Vec<String>> {
        // A cut receive is kept for resuming; `receive` discards it when the
        // sender does not resume it.
        Ok(Vec::new())
    }

    fn destroy(&self, vol: &Volume, name: &str) -> Result<()> {
        let s = snap_of(vol, name)?;
        if !exists(&s)? {
            return Ok(());
        }
        zfs().args(["destroy"]).arg(&s).run().map_err(|e| {
            if e.message.contains("dataset is busy") || e.message.contains("has holds") {
                Error::refused(format!(
                    "volume `{}`: {s} is protected (held as the common snapshot, or cloned)",
                    vol.role
                ))
            } else {
                e.context(format!("volume `{}`", vol.role))
            }
        })
    }

    fn writable_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf> {
        let origin = snap(vol, name);
        let target = &vol.source;
        if exists(target)? {
            return Err(Error::refused(format!(
                "volume `{}`: dataset {target} already exists; refusing to overwrite it",
                vol.role
            ))
            .with_hint("rename or destroy it (it may be live data) and run failover again"));
        }
        let mut cmd = zfs()
            .arg("clone")
            .args(["-o", "readonly=off", "-o", "canmount=on"])
            .args(unprivileged(vol));
        if let Some(mp) = &vol.mountpoint {
            cmd = cmd.arg("-o").arg(format!("mountpoint={}", mp.display()));
        }
        cmd.arg(&origin)
            .arg(target)
            .run()
            .ctx(format!("volume `{}`", vol.role))?;
        crate::failpoint!("zfs.writable_copy.after_clone");
        // A clone is mounted on creation when its pool is imported here.
        let mounted = get("mounted", target)?;
        let mp = get("mountpoint", target)?.unwrap_or_default();
        if mounted.as_deref() != Some("yes") && mp.starts_with('/') {
            zfs()
                .args(["mount", target])
                .run()
                .ctx(format!("volume `{}`: mount clone", vol.role))?;
        }
        Ok(PathBuf::from(mp))
    }

    fn writable_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        match get("mountpoint", &vol.source)? {
            Some(mp) if mp.starts_with('/') => {
                // A failover interrupted between the clone and its mount
                // (or a clone its pool did not mount): mount it now.
                if get("mounted", &vol.source)?.as_deref() != Some("yes") {
                    zfs()
                        .args(["mount", &vol.source])
                        .run()
                        .ctx(format!("volume `{}`: mount clone", vol.role))?;
                }
                Ok(PathBuf::from(mp))
            }
            other => Err(Error::storage(format!(
                "volume `{}`: clone {} is not mounted (mountpoint {other:?})",
                vol.role, vol.source
            ))),
        }
    }

    fn writable_copy_exists(&self, vol: &Volume) -> Result<bool> {
        exists(&vol.source)
    }

    fn remove_writable_copy(&self, vol: &Volume) -> Result<()> {
        let ctx = format!("volume `{}`", vol.role);
        destroy_own_clone(vol, &vol.source, &[], ctx)
    }

    /// `/run/snapsite/rehearsal/<dataset, / as _>`: the rehearsal clone's
    /// mountpoint, never the live one.
    fn rehearsal_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        Ok(PathBuf::from("/run/snapsite/rehearsal").join(rehearsal_dataset(vol).replace('/', "_")))
    }

    /// A clone `<replica>-rehearsal` of the received snapshot, mounted at
    /// the scratch path; the snapshot stays pristine.
    fn rehearsal_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf> {
        let ds = rehearsal_dataset(vol);
        if exists(&ds)? {
            return Err(Error::refused(format!(
                "volume `{}`: {ds} already exists (a rehearsal's leftover?)",
                vol.role
            )));
        }
        let mp = self.rehearsal_copy_path(vol)?;
        std::fs::create_dir_all(&mp).ctx(format!("create {}", mp.display()))?;
        zfs()
            .arg("clone")
            .args(["-o", "readonly=off", "-o", "canmount=on"])
            .args(["-o", "sharenfs=off", "-o", "sharesmb=off"])
            .args(unprivileged(vol))
            .arg("-o")
            .arg(format!("mountpoint={}", mp.display()))
            .arg(snap(vol, name))
            .arg(&ds)
            .run()
            .ctx(format!("volume `{}`: rehearsal clone", vol.role))?;
        crate::failpoint!("zfs.rehearsal_copy.after_clone");
        if get("mounted", &ds)?.as_deref() != Some("yes") {
            zfs()
                .args(["mount", &ds])
                .run()
                .ctx(format!("volume `{}`: mount rehearsal clone", vol.role))?;
        }
        Ok(mp)
    }

    fn remove_rehearsal_copy(&self, vol: &Volume) -> Result<()> {
        let ctx = format!("volume `{}`: remove rehearsal clone", vol.role);
        destroy_own_clone(vol, &rehearsal_dataset(vol), &["-f"], ctx)
    }

    fn keep_divergent(&self, vol: &Volume, label: &str) -> Result<String> {
        keep_divergent(vol, label)
    }

    fn make_receivable(&self, vol: &Volume, name: &str) -> Result<()> {
        make_receivable(vol, name)
    }

    fn remount_divergent(&self, vol: &Volume, at: &str) -> Result<()> {
        demote::remount_divergent(vol, at)
    }

    fn divergent_mount(&self, _vol: &Volume, at: &str) -> Result<Option<(bool, String)>> {
        demote::divergent_mount(at)
    }

    fn divergent(&self, vol: &Volume) -> Result<Vec<String>> {
        divergent(vol)
    }

    fn can_set_aside(&self) -> bool {
        true
    }

    fn set_aside_newer(&self, vol: &Volume, base: &str, label: &str) -> Result<Vec<String>> {
        follow::set_aside_newer(vol, base, label)
    }

    fn protect_common(&self, vol: &Volume, name: &str, tag: &str) -> Result<()> {
        holds::protect_batch(&[(vol, name)], tag)
    }

    fn protect_common_batch(&self, items: &[(&Volume, &str)], tag: &str) -> Result<()> {
        holds::protect_batch(items, tag)
    }

    fn common_holds(&self, vol: &Volume) -> Result<Vec<(String, String)>> {
        holds::common_holds(vol)
    }

    fn release_common(&self, vol: &Volume, tag: &str) -> Result<Vec<String>> {
        holds::release(vol, tag)
    }
}

/// `zfs destroy FLAGS target`, only when `target` is a clone of `vol`'s
/// replica (never anything else); absent, there is nothing to do. `ctx`
/// names the step in a failure.
fn destroy_own_clone(vol: &Volume, target: &str, flags: &[&str], ctx: String) -> Result<()> {
    if !exists(target)? {
        return Ok(());
    }
    let origin = get("origin", target)?.unwrap_or_default();
    if !origin.starts_with(&format!("{}@", dataset(vol))) {
        return Err(Error::refused(format!(
            "volume `{}`: {target} is not a clone of {} (origin {origin:?}); not destroying it",
            vol.role,
            dataset(vol)
        )));
    }
    zfs().arg("destroy").args(flags).arg(target).run().ctx(ctx)
}

/// Above this share of its size a ZFS pool slows down and may soon refuse
/// writes: failover's clones would start on a pool about to fill.
pub const POOL_FULL_PERCENT: u64 = 90;

/// `zpool get -H -p -o value capacity POOL` (a percentage) -> a problem
/// when the pool is at least [`POOL_FULL_PERCENT`] full.
pub fn pool_capacity_problem(pool: &str, text: &str) -> Option<String> {
    let pct: u64 = text.trim().trim_end_matches('%').parse().ok()?;
    (pct >= POOL_FULL_PERCENT).then(|| {
        format!(
            "ZFS pool {pool} is {pct}% full (limit {POOL_FULL_PERCENT}%): failover's clones would have almost no room to write"
        )
    })
}

#[cfg(test)]
mod tests;
