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

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;

use super::{
    Backend, CopyCheck, ProcessSink, ProcessSource, ReceiveSteps, Resumable, SnapshotSink,
    SnapshotSource, VolumeListing, require_replica,
};
use crate::base::cmd::{Cmd, Running};
use crate::base::config::{BackendKind, Volume, VolumeAddr};
use crate::base::error::{Context, Error, Result};
use crate::base::model::parse_set_id;

pub struct Zfs;

/// The user hold tag on the common snapshot.
pub const HOLD_TAG: &str = "snapsite-common";

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

/// Size of a send stream's records (`dmu_replay_record_t`); the first one
/// is DRR_BEGIN.
pub const BEGIN_RECORD_LEN: usize = 312;
const DMU_BACKUP_MAGIC: u64 = 0x2F5B_ACBAC;
const DRR_BEGIN: u32 = 0;
const DMU_SUBSTREAM: u64 = 1;
const DMU_COMPOUNDSTREAM: u64 = 2;
const DMU_OST_ZFS: u32 = 2;
const DRR_FLAG_CLONE: u32 = 1;

/// The DRR_BEGIN record of a `zfs send` stream (OpenZFS
/// `include/sys/zfs_ioctl.h`: `struct drr_begin` after the record's type and
/// payload length; in the sender's byte order, told by the magic).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamBegin {
    /// DMU_COMPOUNDSTREAM: a package (`-R`, `-p`, `-I`, `-b`, `--holds`)
    /// with an nvlist of datasets/properties and several substreams.
    pub compound: bool,
    /// `drr_versioninfo` feature flags.
    pub features: u64,
    /// `dmu_objset_type_t`: 2 filesystem, 1 volume.
    pub objset_type: u32,
    pub flags: u32,
    pub toguid: u64,
    /// 0 for a full stream, the base snapshot's guid for an incremental.
    pub fromguid: u64,
    /// `pool/fs@snap` on the sender.
    pub toname: String,
    pub payload_len: u32,
}

impl StreamBegin {
    /// The snapshot part of `toname`.
    pub fn snapshot(&self) -> Option<&str> {
        self.toname.split_once('@').map(|(_, s)| s)
    }
}

/// Parse a stream's first record (at least [`BEGIN_RECORD_LEN`] bytes).
pub fn parse_begin(rec: &[u8]) -> std::result::Result<StreamBegin, String> {
    if rec.len() < BEGIN_RECORD_LEN {
        return Err(format!(
            "the stream ended after {} bytes, inside its first record",
            rec.len()
        ));
    }
    let le = u64::from_le_bytes(rec[8..16].try_into().expect("8"));
    let be = u64::from_be_bytes(rec[8..16].try_into().expect("8"));
    let little = if le == DMU_BACKUP_MAGIC {
        true
    } else if be == DMU_BACKUP_MAGIC {
        false
    } else {
        return Err("not a ZFS send stream (no DRR_BEGIN magic)".into());
    };
    let u32_at = |o: usize| {
        let b: [u8; 4] = rec[o..o + 4].try_into().expect("4");
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let u64_at = |o: usize| {
        let b: [u8; 8] = rec[o..o + 8].try_into().expect("8");
        if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        }
    };
    if u32_at(0) != DRR_BEGIN {
        return Err(format!(
            "the first record is of type {}, not DRR_BEGIN",
            u32_at(0)
        ));
    }
    let versioninfo = u64_at(16);
    let compound = match versioninfo & 3 {
        DMU_SUBSTREAM => false,
        DMU_COMPOUNDSTREAM => true,
        t => return Err(format!("unknown stream header type {t}")),
    };
    let name = &rec[56..BEGIN_RECORD_LEN];
    let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
    let toname = std::str::from_utf8(name)
        .map_err(|_| "the stream's snapshot name is not UTF-8".to_string())?
        .to_string();
    Ok(StreamBegin {
        compound,
        features: (versioninfo >> 2) & ((1 << 30) - 1),
        objset_type: u32_at(32),
        flags: u32_at(36),
        toguid: u64_at(40),
        fromguid: u64_at(48),
        toname,
        payload_len: u32_at(4),
    })
}

/// What the standby accepts: one filesystem snapshot named `snapshot`, from
/// `fromguid` (the replica's base) or, with `None`, a full stream; with
/// `toguid`, of that snapshot.
pub fn check_begin(
    b: &StreamBegin,
    snapshot: &str,
    fromguid: Option<u64>,
    toguid: Option<u64>,
) -> std::result::Result<(), String> {
    if b.compound {
        return Err(format!(
            "stream of {} is a replication package (zfs send -R, -p, -I, -b or --holds: properties, child datasets or several snapshots); this standby receives one snapshot of one dataset",
            b.toname
        ));
    }
    if b.objset_type != DMU_OST_ZFS {
        return Err(format!(
            "stream of {} is not of a filesystem (object set type {})",
            b.toname, b.objset_type
        ));
    }
    if b.flags & DRR_FLAG_CLONE != 0 {
        return Err(format!("stream of {} is a clone stream", b.toname));
    }
    if b.snapshot() != Some(snapshot) {
        return Err(format!(
            "the stream carries snapshot `{}`, the sender announced {snapshot}",
            b.toname
        ));
    }
    match fromguid {
        None if b.fromguid != 0 => {
            return Err(format!(
                "announced as a full stream, but {} is incremental (from guid {})",
                b.toname, b.fromguid
            ));
        }
        Some(want) if b.fromguid != want => {
            return Err(if b.fromguid == 0 {
                format!(
                    "announced as incremental, but the stream of {} is a full stream",
                    b.toname
                )
            } else {
                format!(
                    "the stream of {} applies to snapshot guid {}, the base here has guid {want}",
                    b.toname, b.fromguid
                )
            });
        }
        _ => {}
    }
    if let Some(want) = toguid {
        if b.toguid != want {
            return Err(format!(
                "the stream of {} has guid {}, the sender announced {want}",
                b.toname, b.toguid
            ));
        }
    }
    Ok(())
}

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

/// Parse `zfs list -H -p -o name -t snapshot -s createtxg -d 1 DS`: the
/// snapsite snapshot names of `ds`, oldest first.
pub fn parse_snapshot_list(ds: &str, text: &str) -> Vec<String> {
    let prefix = format!("{ds}@");
    text.lines()
        .filter_map(|l| l.trim_end().strip_prefix(&prefix))
        .filter(|n| parse_set_id(n).is_some())
        .map(str::to_string)
        .collect()
}

/// What one `zfs list` says of some datasets and their snapshots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetListing {
    /// The listed datasets that exist.
    pub exists: BTreeSet<String>,
    /// `receive_resume_token` of the datasets that have one.
    pub tokens: BTreeMap<String, String>,
    /// Their snapshots in creation order: (dataset, name, guid).
    pub snaps: Vec<(String, String, Option<String>)>,
}

impl DatasetListing {
    pub fn has_snap(&self, ds: &str, name: &str) -> bool {
        self.snaps.iter().any(|(d, n, _)| d == ds && n == name)
    }
    pub fn guid(&self, ds: &str, name: &str) -> Option<&str> {
        self.snaps
            .iter()
            .find(|(d, n, _)| d == ds && n == name)
            .and_then(|(_, _, g)| g.as_deref())
    }
}

/// The columns [`list_datasets`] asks for.
const LISTING_ARGS: [&str; 11] = [
    "list",
    "-H",
    "-p",
    "-o",
    "name,guid,receive_resume_token",
    "-t",
    "filesystem,volume,snapshot",
    "-s",
    "createtxg",
    "-d",
    "1",
];

/// Parse `zfs list -H -p -o name,guid,receive_resume_token -t
/// filesystem,volume,snapshot -s createtxg -d 1 DS...`: only lines of the
/// datasets `dss` and of their snapshots count (`-d 1` also shows child
/// datasets).
pub fn parse_dataset_listing(dss: &[String], text: &str) -> DatasetListing {
    let mut out = DatasetListing::default();
    for l in text.lines() {
        let mut f = l.trim_end_matches(['\n', '\r']).split('\t');
        let (Some(name), Some(guid), token) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        match name.split_once('@') {
            Some((ds, snap)) if dss.iter().any(|d| d == ds) => {
                out.snaps
                    .push((ds.to_string(), snap.to_string(), parse_value(guid)))
            }
            None if dss.iter().any(|d| d == name) => {
                out.exists.insert(name.to_string());
                if let Some(t) = token.and_then(parse_value) {
                    out.tokens.insert(name.to_string(), t);
                }
            }
            _ => {}
        }
    }
    out
}

/// Is every line of `zfs list`'s stderr a dataset of `dss` that does not
/// exist (the one failure a listing of several datasets may have)?
pub fn only_missing_datasets(dss: &[String], stderr: &str) -> bool {
    stderr.lines().filter(|l| !l.trim().is_empty()).all(|l| {
        l.trim()
            .strip_prefix("cannot open '")
            .and_then(|r| r.strip_suffix("': dataset does not exist"))
            .is_some_and(|n| dss.iter().any(|d| d == n))
    })
}

/// One `zfs list` of the datasets `dss` (any number, any pools) and their
/// snapshots: which exist, their resume tokens, their snapshots' guids.
/// A dataset that does not exist is simply absent.
pub fn list_datasets(dss: &[String]) -> Result<DatasetListing> {
    if dss.is_empty() {
        return Ok(DatasetListing::default());
    }
    let out = zfs().args(LISTING_ARGS).args(dss).run_raw()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !only_missing_datasets(dss, &stderr) {
        let mut argv: Vec<std::ffi::OsString> = vec!["zfs".into()];
        argv.extend(LISTING_ARGS.iter().map(Into::into));
        argv.extend(dss.iter().map(Into::into));
        return Err(crate::base::cmd::failure(&argv, out.status, &out.stderr));
    }
    Ok(parse_dataset_listing(
        dss,
        &String::from_utf8_lossy(&out.stdout),
    ))
}

/// The datasets a volume's snapshots can be in: `replica` and `source`
/// with a replica configured (see [`chain_in`]), else `source`.
fn datasets_of(vol: &Volume) -> Vec<String> {
    match vol.replica() {
        Some(r) if r != vol.source => vec![r, vol.source.clone()],
        Some(r) => vec![r],
        None => vec![dataset(vol).to_string()],
    }
}

/// The volume's part of a listing: its snapsite snapshots, oldest first
/// (creation order), with the full name of each: `replica`'s and, when it
/// exists, the live `source`'s.
fn chain_in(vol: &Volume, l: &DatasetListing) -> Vec<(String, String, Option<String>)> {
    let dss: Vec<String> = datasets_of(vol)
        .into_iter()
        .filter(|d| l.exists.contains(d))
        .collect();
    l.snaps
        .iter()
        .filter(|(ds, name, _)| dss.contains(ds) && parse_set_id(name).is_some())
        .map(|(ds, name, g)| (name.clone(), format!("{ds}@{name}"), g.clone()))
        .collect()
}

/// A volume's [`VolumeListing`] from a listing that covered its datasets.
fn volume_listing(vol: &Volume, l: &DatasetListing) -> VolumeListing {
    let mut snapshots = Vec::new();
    let mut ids = BTreeMap::new();
    for (name, full, guid) in chain_in(vol, l) {
        // as `snap_of`: the live source's snapshot when both have one
        let live = full.starts_with(&format!("{}@", vol.source));
        if let Some(g) = guid {
            if live || !ids.contains_key(&name) {
                ids.insert(name.clone(), g);
            }
        }
        snapshots.push(name);
    }
    let resumable = vol
        .replica()
        .and_then(|r| l.tokens.get(&r).cloned())
        .map(|token| Resumable {
            snapshot: None,
            token,
        });
    VolumeListing {
        snapshots,
        ids,
        resumable,
    }
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

    fn send(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn SnapshotSource>> {
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

    fn send_resume(
        &self,
        vol: &Volume,
        name: &str,
        token: &str,
    ) -> Result<Box<dyn SnapshotSource>> {
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

    fn receive(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
        expect_id: Option<&str>,
        resume: bool,
    ) -> Result<Box<dyn SnapshotSink>> {
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
            Some(mp) if mp.starts_with('/') => Ok(PathBuf::from(mp)),
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
        let target = &vol.source;
        if !exists(target)? {
            return Ok(());
        }
        // Only ever destroy a clone of our own replica.
        let origin = get("origin", target)?.unwrap_or_default();
        if !origin.starts_with(&format!("{}@", dataset(vol))) {
            return Err(Error::refused(format!(
                "volume `{}`: {target} is not a clone of {} (origin {origin:?}); not destroying it",
                vol.role,
                dataset(vol)
            )));
        }
        zfs()
            .args(["destroy", target])
            .run()
            .ctx(format!("volume `{}`", vol.role))
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
        if get("mounted", &ds)?.as_deref() != Some("yes") {
            zfs()
                .args(["mount", &ds])
                .run()
                .ctx(format!("volume `{}`: mount rehearsal clone", vol.role))?;
        }
        Ok(mp)
    }

    fn remove_rehearsal_copy(&self, vol: &Volume) -> Result<()> {
        let ds = rehearsal_dataset(vol);
        if !exists(&ds)? {
            return Ok(());
        }
        let origin = get("origin", &ds)?.unwrap_or_default();
        if !origin.starts_with(&format!("{}@", dataset(vol))) {
            return Err(Error::refused(format!(
                "volume `{}`: {ds} is not a clone of {} (origin {origin:?}); not destroying it",
                vol.role,
                dataset(vol)
            )));
        }
        zfs()
            .args(["destroy", "-f", &ds])
            .run()
            .ctx(format!("volume `{}`: remove rehearsal clone", vol.role))
    }

    fn keep_divergent(&self, vol: &Volume, label: &str) -> Result<String> {
        keep_divergent(vol, label)
    }

    fn make_receivable(&self, vol: &Volume, name: &str) -> Result<()> {
        make_receivable(vol, name)
    }

    fn divergent(&self, vol: &Volume) -> Result<Vec<String>> {
        divergent(vol)
    }

    fn protect_common(&self, vol: &Volume, name: &str) -> Result<()> {
        self.protect_common_batch(&[(vol, name)])
    }

    /// One listing, one `zfs holds`, one `zfs hold` and one `zfs release`
    /// for every volume, however many.
    fn protect_common_batch(&self, items: &[(&Volume, &str)]) -> Result<()> {
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
        let held: Vec<String> = if snaps.is_empty() {
            Vec::new()
        } else {
            parse_holds(&zfs().args(["holds", "-H"]).args(&snaps).output()?)
                .into_iter()
                .filter(|(_, tag)| tag == HOLD_TAG)
                .map(|(n, _)| n)
                .collect()
        };
        let roles = || {
            items
                .iter()
                .map(|(v, _)| format!("`{}`", v.role))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Hold the new ones first: the chain is never unprotected.
        let hold: Vec<&String> = want.iter().filter(|s| !held.contains(s)).collect();
        if !hold.is_empty() {
            zfs()
                .args(["hold", HOLD_TAG])
                .args(&hold)
                .run()
                .ctx(format!("volume {}", roles()))?;
        }
        let release: Vec<&String> = held.iter().filter(|h| !want.contains(h)).collect();
        if !release.is_empty() {
            zfs()
                .args(["release", HOLD_TAG])
                .args(&release)
                .run()
                .ctx(format!("volume {}", roles()))?;
        }
        Ok(())
    }
}

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
const DIVERGENT_MOUNT_DIR: &str = "/run/snapsite/divergent";

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
fn snap_of(vol: &Volume, name: &str) -> Result<String> {
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
fn snapshot_head(vol: &Volume) -> Result<String> {
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

/// A divergent label becomes part of a dataset name: plain characters only.
fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        && !label.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::refused(format!(
            "`{label}` is not a valid divergent label"
        )))
    }
}

/// Keep the live dataset as `<source>-divergent-<label>`: renamed (with
/// every snapshot it holds), `readonly=on`, `canmount=noauto`, mounted
/// under /run/snapsite/divergent/. `source` is free afterwards.
fn keep_divergent(vol: &Volume, label: &str) -> Result<String> {
    check_label(label)?;
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
    if get("mounted", &dst)?.as_deref() != Some("yes") {
        zfs().args(["mount", &dst]).run().ctx(ctx())?;
    }
    Ok(dst)
}

/// The divergent datasets of the volume, oldest first.
fn divergent(vol: &Volume) -> Result<Vec<String>> {
    let Some((parent, _)) = vol.source.rsplit_once('/') else {
        return Ok(Vec::new());
    };
    if !exists(parent)? {
        return Ok(Vec::new());
    }
    let text = zfs()
        .args([
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "filesystem",
            "-d",
            "1",
            parent,
        ])
        .output()?;
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
fn make_receivable(vol: &Volume, name: &str) -> Result<()> {
    if parse_set_id(name).is_none() {
        return Err(Error::refused(format!("`{name}` is not a set id")));
    }
    let r = require_replica(vol, "dataset")?;
    let ctx = || format!("volume `{}`: make {name} receivable in {r}", vol.role);
    if exists(&r)? {
        let own = zfs()
            .args([
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "snapshot",
                "-s",
                "createtxg",
            ])
            .args(["-d", "1", &r])
            .output()?;
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
    zfs()
        .arg("clone")
        .args([
            "-o",
            "readonly=on",
            "-o",
            "canmount=noauto",
            "-o",
            "mountpoint=none",
        ])
        .args(["-o", "exec=off", "-o", "setuid=off", "-o", "devices=off"])
        .arg(&from)
        .arg(&r)
        .run()
        .ctx(ctx())?;
    // A rerun finds the clone without snapshots of its own, destroys it
    // and clones again.
    crate::failpoint!("zfs.make_receivable.after_clone");
    zfs().args(["promote", &r]).run().ctx(ctx())
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

/// Tokens go on the command line: allow only what OpenZFS produces.
fn check_token(t: &str) -> Result<()> {
    if t.is_empty()
        || t.len() > 1 << 16
        || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::refused("malformed ZFS resume token"));
    }
    Ok(())
}

/// The ZFS part of a receive (a gated [`ProcessSink`] over `zfs receive`).
struct ZfsReceive {
    /// The base's guid (incremental), `None` for a full stream.
    fromguid: Option<u64>,
    toguid: Option<u64>,
    ds: String,
    name: String,
    /// This receive creates the replica dataset (first full receive).
    created_ds: bool,
    expect_id: Option<String>,
    role: String,
}

impl ZfsReceive {
    fn snap(&self) -> String {
        format!("{}@{}", self.ds, self.name)
    }
}

impl ReceiveSteps for ZfsReceive {
    /// Check the first record; only then start `zfs receive`.
    fn start(&mut self, head: &[u8]) -> Result<Running> {
        let begin = parse_begin(head)
            .and_then(|b| {
                check_begin(&b, &self.name, self.fromguid, self.toguid)?;
                Ok(b)
            })
            .map_err(|m| {
                Error::refused(format!(
                    "volume `{}`: refused before zfs receive: {m}",
                    self.role
                ))
            })?;
        tracing::debug!(volume = %self.role, toname = %begin.toname, features = begin.features, "stream header accepted");
        zfs()
            .args(["receive", "-s", "-u"])
            .args(RECEIVE_OVERRIDES)
            .arg(&self.ds)
            .spawn(Stdio::piped(), Stdio::null())
            .ctx(format!("volume `{}`", self.role))
    }

    fn not_started(&mut self, head: &[u8]) -> Error {
        let m = parse_begin(head).err().unwrap_or_default();
        Error::refused(format!(
            "volume `{}`: not a ZFS send stream: {m}",
            self.role
        ))
    }

    /// `zfs receive` exited 0: the snapshot exists with the sender's guid.
    fn verify(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        let s = self.snap();
        let guid = get("guid", &s).ctx(format!(
            "volume `{}`: zfs receive did not create {s}",
            self.role
        ))?;
        if let Some(want) = &self.expect_id {
            if guid.as_deref() != Some(want.as_str()) {
                return Err(Error::integrity(format!(
                    "volume `{}`: received {s} has guid {guid:?}, the sender's is {want}",
                    self.role
                )));
            }
        }
        record(guid.clone())?;
        Ok(guid)
    }

    /// Remove everything this receive made: the partial state, the snapshot
    /// if it completed, and the replica dataset if this (full) receive
    /// created it. Committed snapshots are never touched: the stream could
    /// only name `name` (checked before `zfs receive` started), which did
    /// not exist before.
    fn discard(&mut self) {
        let s = self.snap();
        let res = (|| -> Result<()> {
            if get("receive_resume_token", &self.ds)
                .ok()
                .flatten()
                .is_some()
            {
                zfs().args(["receive", "-A", &self.ds]).run()?;
            }
            if self.created_ds {
                if exists(&self.ds)? {
                    zfs().args(["destroy", "-r", &self.ds]).run()?;
                }
            } else if exists(&s)? {
                zfs().args(["destroy", &s]).run()?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            tracing::error!(volume = %self.role, error = %e, "could not remove a rejected receive");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output captured from OpenZFS 2.1.11 and 2.3.2 by
    /// tests/fixtures/capture-zfs.sh (run in the storage VM).
    fn fixture(version: &str, name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("zfs-{version}"))
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn parses_captured_zfs_2_1_and_2_3_output() {
        for v in ["2.1", "2.3"] {
            assert!(
                fixture(v, "version.txt").starts_with(&format!("zfs-{v}.")),
                "{v}"
            );
            assert_eq!(
                parse_snapshot_list("cap/mysql", &fixture(v, "list-snapshots.txt")),
                vec!["20261127T080000.000Z-full", "20261127T081500.000Z-redolog"],
                "{v}: the manual snapshot is not ours"
            );
            let guid = parse_value(&fixture(v, "get-guid.txt")).unwrap();
            assert!(
                guid.len() > 10 && guid.chars().all(|c| c.is_ascii_digit()),
                "{v}: {guid}"
            );
            assert_eq!(parse_value(&fixture(v, "get-token-none.txt")), None, "{v}");
            assert_eq!(
                parse_value(&fixture(v, "get-token-after-abort.txt")),
                None,
                "{v}"
            );
            let token = parse_value(&fixture(v, "get-token.txt")).unwrap();
            assert!(check_token(&token).is_ok(), "{v}");
            assert_eq!(
                parse_token_toname(&fixture(v, "send-nv-token.txt")).as_deref(),
                Some("cap/mysql@20261127T090000.000Z-full"),
                "{v}"
            );
            assert_eq!(
                parse_holds(&fixture(v, "holds.txt")),
                vec![(
                    "cap/mysql@20261127T080000.000Z-full".to_string(),
                    HOLD_TAG.to_string()
                )],
                "{v}"
            );
        }
    }

    fn begin_fixture(name: &str) -> Vec<u8> {
        let hex = fixture("2.3", name);
        let hex = hex.trim();
        assert_eq!(hex.len(), 2 * BEGIN_RECORD_LEN, "{name}");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    fn captured_guids() -> (u64, u64) {
        let text = fixture("2.3", "guids.txt");
        let g = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap()
        };
        (g("S1 "), g("S2 "))
    }

    const S1: &str = "20261127T080000.000Z-full";
    const S2: &str = "20261127T090000.000Z-full";

    /// First records of real `zfs send` streams from OpenZFS 2.3.2
    /// (tests/fixtures/capture-zfs-send.sh in the storage VM).
    #[test]
    fn begin_record_of_captured_streams() {
        let (g1, g2) = captured_guids();
        let full = parse_begin(&begin_fixture("send-full.hex")).unwrap();
        assert!(!full.compound);
        assert_eq!(full.toname, format!("caps/mysql@{S1}"));
        assert_eq!((full.toguid, full.fromguid), (g1, 0));
        assert_eq!(full.objset_type, DMU_OST_ZFS);
        assert!(check_begin(&full, S1, None, Some(g1)).is_ok());

        let inc = parse_begin(&begin_fixture("send-incremental.hex")).unwrap();
        assert!(!inc.compound);
        assert_eq!((inc.toguid, inc.fromguid), (g2, g1));
        assert!(check_begin(&inc, S2, Some(g1), Some(g2)).is_ok());
        // the wrong name, base, guid or kind is refused
        let e = check_begin(&inc, "20261127T100000.000Z-full", Some(g1), None).unwrap_err();
        assert!(e.contains("carries snapshot"), "{e}");
        let e = check_begin(&inc, S2, Some(g1 ^ 1), None).unwrap_err();
        assert!(e.contains("the base here has guid"), "{e}");
        let e = check_begin(&inc, S2, None, None).unwrap_err();
        assert!(e.contains("announced as a full stream"), "{e}");
        let e = check_begin(&full, S1, Some(g1), None).unwrap_err();
        assert!(e.contains("is a full stream"), "{e}");
        assert!(check_begin(&inc, S2, Some(g1), Some(g1)).is_err());

        // the resumed incremental is a substream of the same snapshot
        let res = parse_begin(&begin_fixture("send-resume.hex")).unwrap();
        assert!(!res.compound);
        assert!(res.payload_len > 0, "resume nvlist");
        assert!(check_begin(&res, S2, Some(g1), Some(g2)).is_ok());

        // -p, -R and -I make compound streams: refused
        for (f, snap) in [
            ("send-props-incremental.hex", S2),
            ("send-replicate-full.hex", S1),
            ("send-intermediates.hex", S2),
        ] {
            let b = parse_begin(&begin_fixture(f)).unwrap();
            assert!(b.compound, "{f}");
            let e = check_begin(&b, snap, None, None).unwrap_err();
            assert!(e.contains("replication package"), "{f}: {e}");
        }
    }

    #[test]
    fn begin_record_garbage_and_byte_order() {
        let rec = begin_fixture("send-full.hex");
        assert!(
            parse_begin(&rec[..100])
                .unwrap_err()
                .contains("ended after 100")
        );
        let mut bad = rec.clone();
        bad[8] ^= 0xff;
        assert!(parse_begin(&bad).unwrap_err().contains("magic"));
        let mut clone = rec.clone();
        clone[36] |= DRR_FLAG_CLONE as u8;
        let b = parse_begin(&clone).unwrap();
        assert!(
            check_begin(&b, S1, None, None)
                .unwrap_err()
                .contains("clone")
        );
        let mut zvol = rec.clone();
        zvol[32] = 1;
        let b = parse_begin(&zvol).unwrap();
        assert!(
            check_begin(&b, S1, None, None)
                .unwrap_err()
                .contains("filesystem")
        );
        // A big-endian sender's record: every field swapped.
        let mut be = rec.clone();
        for (o, n) in [
            (0, 4),
            (4, 4),
            (8, 8),
            (16, 8),
            (24, 8),
            (32, 4),
            (36, 4),
            (40, 8),
            (48, 8),
        ] {
            be[o..o + n].reverse();
        }
        assert_eq!(parse_begin(&be).unwrap(), parse_begin(&rec).unwrap());
    }

    #[test]
    fn copy_check_names_an_unloaded_key() {
        let never = || -> Result<Option<String>> { panic!("not asked for a plain dataset") };
        let c = copy_check("mysql", "p/r/mysql", Some("off"), &never, &never).unwrap();
        assert_eq!(c.problem, None);
        assert!(c.checked.contains("not encrypted"), "{c:?}");
        let loaded = || Ok(Some("available".to_string()));
        let c = copy_check("mysql", "p/r/mysql", Some("aes-256-gcm"), &loaded, &never).unwrap();
        assert_eq!(c.problem, None);
        assert!(c.checked.contains("key is loaded"), "{c:?}");
        let unloaded = || Ok(Some("unavailable".to_string()));
        let root = || Ok(Some("p/r/mysql".to_string()));
        let c = copy_check("mysql", "p/r/mysql", Some("aes-256-gcm"), &unloaded, &root).unwrap();
        let p = c.problem.expect("a problem");
        assert!(
            p.contains("volume `mysql`") && p.contains("zfs load-key p/r/mysql"),
            "{p}"
        );
    }

    #[test]
    fn pool_capacity() {
        assert_eq!(pool_capacity_problem("tank", "4\n"), None);
        let p = pool_capacity_problem("tank", "93\n").unwrap();
        assert!(p.contains("tank is 93% full"), "{p}");
        assert_eq!(pool_capacity_problem("tank", "garbage"), None);
    }

    #[test]
    fn one_listing_of_several_datasets() {
        let dss = vec!["tank/rep".to_string(), "tank/live".to_string()];
        // name, guid, receive_resume_token; -d 1 also shows a child dataset
        let text = "tank/rep\t111\t1-abc-def\n\
tank/rep@20261127T080000.000Z-full\t201\t-\n\
tank/rep/child\t112\t-\n\
tank/rep@manual\t202\t-\n\
tank/live\t113\t-\n\
tank/live@20261127T080000.000Z-full\t301\t-\n\
tank/live@20261127T090000.000Z-full\t302\t-\n\
tank/other@20261127T090000.000Z-full\t401\t-\n";
        let l = parse_dataset_listing(&dss, text);
        assert_eq!(
            l.exists.iter().collect::<Vec<_>>(),
            ["tank/live", "tank/rep"]
        );
        assert_eq!(
            l.tokens.get("tank/rep").map(String::as_str),
            Some("1-abc-def")
        );
        assert!(!l.tokens.contains_key("tank/live"));
        assert!(l.has_snap("tank/rep", "manual"));
        assert!(!l.has_snap("tank/other", "20261127T090000.000Z-full"));
        assert_eq!(
            l.guid("tank/live", "20261127T090000.000Z-full"),
            Some("302")
        );

        // a volume with a replica: both datasets, creation order, set ids
        // only; the live source's guid where both have the snapshot
        let cfg = crate::base::config::Config::parse(
            "site = \"s\"\nstate_dir = \"/var/lib/snapsite-zfs-test\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"tank/live\"\nreplica = \"tank/rep\"\n",
            std::path::Path::new("/x.toml"),
        )
        .unwrap();
        let vol = cfg.volume("redolog").unwrap().clone();
        let v = volume_listing(&vol, &l);
        assert_eq!(
            v.snapshots,
            [
                "20261127T080000.000Z-full",
                "20261127T080000.000Z-full",
                "20261127T090000.000Z-full"
            ]
        );
        assert_eq!(v.ids["20261127T080000.000Z-full"], "301");
        assert_eq!(v.resumable.unwrap().token, "1-abc-def");

        // only missing datasets may fail a listing
        let missing = "cannot open 'tank/live': dataset does not exist\n";
        assert!(only_missing_datasets(&dss, missing));
        assert!(!only_missing_datasets(
            &dss,
            "cannot open 'tank/x': dataset does not exist\n"
        ));
        assert!(!only_missing_datasets(
            &dss,
            "internal error: out of memory\n"
        ));
    }

    #[test]
    fn snapshot_list_keeps_only_our_names() {
        let text = "tank/mysql@20261127T080000.000Z-full\ntank/mysql@manual\ntank/mysql@20261127T081500.000Z-redolog\ntank/mysqlx@20261127T080000.000Z-full\n";
        assert_eq!(
            parse_snapshot_list("tank/mysql", text),
            vec!["20261127T080000.000Z-full", "20261127T081500.000Z-redolog"]
        );
    }

    #[test]
    fn chain_lists_both_datasets_in_creation_order() {
        let dss = vec!["tank/rep".to_string(), "tank/live".to_string()];
        let text = "tank/rep@20261127T080000.000Z-full\ntank/live@20261127T090000.000Z-full\ntank/live@manual\ntank/live-divergent-x@20261127T093000.000Z-full\ntank/rep2@20261127T100000.000Z-full\ntank/live@20261127T085000.000Z-redolog\n";
        assert_eq!(
            parse_chain(&dss, text),
            vec![
                (
                    "20261127T080000.000Z-full".to_string(),
                    "tank/rep@20261127T080000.000Z-full".to_string()
                ),
                (
                    "20261127T090000.000Z-full".to_string(),
                    "tank/live@20261127T090000.000Z-full".to_string()
                ),
                (
                    "20261127T085000.000Z-redolog".to_string(),
                    "tank/live@20261127T085000.000Z-redolog".to_string()
                ),
            ]
        );
        assert_eq!(
            divergent_dataset("tank/live", "L1"),
            "tank/live-divergent-L1"
        );
        assert!(check_label("20261130T091500.123Z").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a@b", "a b"] {
            assert!(check_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_and_tokens() {
        assert_eq!(parse_value("-\n"), None);
        assert_eq!(parse_value("1234\n").as_deref(), Some("1234"));
        assert!(check_token("1-c740b4e5e-e0-789c636064000310a5").is_ok());
        assert!(check_token("1-x; rm -rf /").is_err());
        assert_eq!(
            parse_holds("tank/a@s1\tsnapsite-common\tWed Nov 27 2026\n"),
            vec![("tank/a@s1".to_string(), "snapsite-common".to_string())]
        );
    }
}
