//! LVM over the LVM command line (`LC_ALL=C`, `lvs --reportformat json`),
//! with thin LVs as the main mode. LVM has snapshots but no send/receive, so
//! snapsite ships blocks itself, in its own stream (`lvm/format.rs`):
//!
//! - A snapshot of `vg/lv` is the thin snapshot `vg/lv.<set id>`, read-only,
//!   tagged `snapsite` and `snapsite-set-<set id>` (LV names allow
//!   `[a-zA-Z0-9+_.-]`, tags also `/=!:&#`, so set ids fit both as they are).
//!   Thin snapshots skip activation; they are activated (`-K`) to be read.
//! - Full send: the blocks the pool has mapped for the snapshot (`thin_dump
//!   --dev-id`); incremental send: the blocks `thin_delta` reports between the
//!   common snapshot and the new one. Both read the pool's metadata
//!   snapshot, reserved for as long as the tool runs and released always
//!   (`lvm/thin.rs`). Pool blocks become byte ranges of the device.
//! - Classic (non-thin) LVs get classic snapshots (`-l 100%ORIGIN`, so they
//!   cannot overflow) and a full image on every send; `check` warns.
//! - The standby receives into `replica`, a thin LV of the same size, then
//!   takes the thin snapshot `replica.<set id>` — the same chain as the
//!   primary's. Written ranges are fsynced, read back and checked against
//!   the stream's end hash before the snapshot is taken. The received
//!   snapshot carries `snapsite-from-<sender's LV uuid>`: the storage id,
//!   which the next incremental's header is checked against.
//! - Failover: a writable thin snapshot of the received one at `source`
//!   (same VG as the replica), activated and mounted at `mountpoint`.

mod demote;
mod follow;
mod format;
mod holds;
mod mapped;
mod readback;
mod receive;
mod report;
mod resume;
mod send;
mod space;
mod thin;

pub use demote::{DIVERGENT_TAG, chain_of};
use demote::{chain, head, keep_divergent, make_receivable, snap_of};
pub use format::{
    Decoder, Encoder, Event, Extent, Header, MAGIC, Overwritten, RecordHash, StreamKind, VERSION,
};
use receive::{LvmSink, Progress, open_sized, parked, pool_percent};
pub use report::{LvInfo, dm_name, lvm, parse_lvs, vg_lvs, vg_size};
/// The resume token, for the fuzz targets (`crate::testing::fuzzing`).
#[doc(hidden)]
pub use resume::Token as ResumeToken;
use send::{LvmSource, plan_send};
pub use send::{delta_extents, mapping_extents, overwritten_of};
pub use space::{VgMda, mda_problem, parse_vg_mda};
pub use thin::{
    BlockRange, Delta, DeltaKind, Mapping, MetadataSnap, Pool, PoolUsage, parse_held_root,
    parse_pool_block_size, parse_pool_usage, parse_thin_delta, parse_thin_dump,
    parse_thin_dump_devs,
};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Backend, BoxedSink, BoxedSource, Receive, SnapshotSink, SnapshotSource};
use crate::base::cmd::Cmd;
use crate::base::config::{BackendKind, LvName, Volume, VolumeAddr};
use crate::base::error::{Context, Error, Result};
use crate::base::model::{is_set_id, parse_set_id};
use crate::base::mountinfo;

pub struct Lvm;

pub const TAG: &str = "snapsite";
/// `snapsite-set-<set id>` on every snapshot snapsite takes or receives.
pub const SET_TAG: &str = "snapsite-set-";
/// `snapsite-from-<LV uuid>` on a received snapshot: the sender's snapshot.
pub const FROM_TAG: &str = "snapsite-from-";
/// On the standby's replica LV (scratch between receives).
pub const REPLICA_TAG: &str = "snapsite-replica";
/// On failover's writable snapshot.
pub const FAILOVER_TAG: &str = "snapsite-failover";
/// Tag of a rehearsal's writable snapshot.
pub const REHEARSAL_TAG: &str = "snapsite-rehearsal";

/// A rehearsal's writable snapshot: `<replica lv>-rehearsal` in the
/// replica's VG (never a name a set snapshot `<lv>.<id>` can take).
fn rehearsal_lv(vol: &Volume) -> Result<(String, String)> {
    let (vg, rlv) = split(require_replica(vol)?);
    Ok((vg.to_string(), format!("{rlv}-rehearsal")))
}

/// Zero-detection unit of classic LVs (thin LVs use the pool's block size).
const CLASSIC_UNIT: u64 = 64 << 10;

/// A receive never fills the standby's thin pool past this share (data or
/// metadata): the rest is for failover's writable snapshots, and a thin pool
/// at 100% stops every thin LV in it.
pub const POOL_LIMIT_PERCENT: u64 = 90;

/// At most this much may be written between two looks at the pool.
const WATCH_STEP: u64 = 64 << 20;

/// A logical volume's parts: (vg, lv).
fn split(addr: &LvName) -> (&str, &str) {
    (&addr.vg, &addr.lv)
}

/// The volume's own LVM address, or an error for a volume of another
/// backend (a caller's mistake: stores are opened by backend kind).
fn lvm_addr(vol: &Volume) -> Result<(&LvName, Option<&LvName>)> {
    match &vol.addr {
        VolumeAddr::Lvm { lv, replica, .. } => Ok((lv, replica.as_ref())),
        _ => Err(Error::config(format!(
            "volume `{}` is a {} volume, not LVM",
            vol.role,
            vol.backend().as_str()
        ))),
    }
}

/// The live LV (`source`): on the standby, where failover makes its copy.
fn source_lv(vol: &Volume) -> Result<&LvName> {
    Ok(lvm_addr(vol)?.0)
}

/// The LV whose snapshots this site holds: `replica` on the standby,
/// `source` on the primary.
fn home(vol: &Volume) -> Result<&LvName> {
    let (lv, replica) = lvm_addr(vol)?;
    Ok(replica.unwrap_or(lv))
}

/// The thin LV a standby receives into: `replica` is required there.
fn require_replica(vol: &Volume) -> Result<&LvName> {
    lvm_addr(vol)?.1.ok_or_else(|| {
        Error::config(format!(
            "volume `{}`: an lvm standby needs `replica` (the thin vg/lv received snapshots land in)",
            vol.role
        ))
    })
}

/// The snapshot LV of `lv` for set `name`.
pub fn snap_lv(lv: &str, name: &str) -> String {
    format!("{lv}.{name}")
}

/// The cut receive replica `rlv` holds, from a listing of its VG.
fn resumable_in(all: &[LvInfo], rlv: &str) -> Option<super::Resumable> {
    find(all, rlv)
        .filter(|r| r.has_tag(REPLICA_TAG))
        .and_then(resume_tag)
        .map(|(tag, t)| super::Resumable {
            snapshot: Some(t.snapshot),
            token: tag,
        })
}

/// The replica's resume tag and its token, if it has a valid one.
fn resume_tag(r: &LvInfo) -> Option<(String, resume::Token)> {
    let tag = r.tags.iter().find(|t| t.starts_with(resume::RESUME_TAG))?;
    match resume::Token::parse(tag) {
        Ok(t) => Some((tag.clone(), t)),
        Err(e) => {
            tracing::warn!(lv = %r.name, error = %e, "ignoring a malformed resume tag");
            None
        }
    }
}

fn dev_path(vg: &str, lv: &str) -> PathBuf {
    PathBuf::from("/dev").join(vg).join(lv)
}

/// `lv`: a writable, active thin snapshot of the received snapshot `name`
/// of replica `rlv` in `vg` (whose LVs are `all`), tagged ours and `tag`
/// (failover's copy, the rehearsal's); a failing `lvcreate` is reported
/// with `what`. The received snapshot stays as it is.
fn writable_snapshot(
    vol: &Volume,
    all: &[LvInfo],
    (vg, rlv): (&str, &str),
    name: &str,
    (lv, tag): (&str, &str),
    what: &str,
) -> Result<()> {
    let origin = snap_lv(rlv, name);
    if find(all, &origin).is_none() {
        return Err(Error::storage(format!(
            "volume `{}`: received snapshot {vg}/{origin} does not exist",
            vol.role
        )));
    }
    lvm("lvcreate")
        .args(["-y", "-s", "-kn", "-ay", "-prw", "-n", lv])
        .args(["--addtag", TAG, "--addtag", tag])
        .arg(format!("{vg}/{origin}"))
        .run()
        .ctx(what)
}

fn find<'a>(all: &'a [LvInfo], name: &str) -> Option<&'a LvInfo> {
    all.iter().find(|l| l.name == name)
}

fn lvs_of(vol: &Volume, vg: &str) -> Result<Vec<LvInfo>> {
    vg_lvs(vg)?.ok_or_else(|| {
        Error::storage(format!(
            "volume `{}`: volume group {vg} does not exist",
            vol.role
        ))
    })
}

fn activate(vg: &str, lv: &str) -> Result<()> {
    lvm("lvchange")
        .args(["-ay", "-K"])
        .arg(format!("{vg}/{lv}"))
        .run()
}

fn remove_lv(vg: &str, lv: &str) -> Result<()> {
    lvm("lvremove")
        .args(["-y", "--"])
        .arg(format!("{vg}/{lv}"))
        .run()
}

/// The snapsite snapshots of `lv` among `all`, oldest first.
pub fn snapshots_of(all: &[LvInfo], lv: &str) -> Vec<String> {
    let prefix = format!("{lv}.");
    let mut names: Vec<String> = all
        .iter()
        .filter_map(|l| {
            let id = l.name.strip_prefix(&prefix)?;
            (is_set_id(id) && l.tag_value(SET_TAG) == Some(id)).then(|| id.to_string())
        })
        .collect();
    names.sort();
    names
}

/// The pool a replica lives in: the existing replica's, else the only thin
/// pool of the VG.
fn replica_pool(vol: &Volume, all: &[LvInfo], rlv: &str) -> Result<String> {
    if let Some(r) = find(all, rlv) {
        if let Some(p) = &r.pool {
            return Ok(p.clone());
        }
    }
    let pools: Vec<&LvInfo> = all
        .iter()
        .filter(|l| l.is_thin_pool() && !l.is_hidden())
        .collect();
    let vg = split(home(vol)?).0;
    match pools.as_slice() {
        [one] => Ok(one.name.clone()),
        [] => Err(Error::storage(format!(
            "volume `{}`: volume group {vg} has no thin pool for the replica",
            vol.role
        ))
        .with_hint(format!("lvcreate --type thin-pool -L SIZE -n pool {vg}"))),
        many => Err(Error::storage(format!(
            "volume `{}`: volume group {vg} has {} thin pools ({}); snapsite cannot tell which one the replica belongs in",
            vol.role,
            many.len(),
            many.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
        ))
        .with_hint(format!(
            "create the replica in the pool you want, tagged for snapsite: lvcreate -V SIZE -T {vg}/POOL -n {rlv} --addtag {REPLICA_TAG}"
        ))),
    }
}

/// A thin pool at or past [`POOL_LIMIT_PERCENT`], described.
pub fn pool_problem(pool: &Pool, u: &PoolUsage) -> Option<String> {
    let (d, m) = u.percents();
    (d >= POOL_LIMIT_PERCENT || m >= POOL_LIMIT_PERCENT).then(|| {
        format!(
            "thin pool {}/{} is {d}% full (metadata {m}%, limit {POOL_LIMIT_PERCENT}%): failover's writable snapshots would have no room to write, and receives into it are refused",
            pool.vg, pool.name
        )
    })
}

/// Storage ids go into tags and come from the other site: LV uuids only.
fn check_uuid(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::refused(format!(
            "`{id}` is not an LVM uuid (storage id)"
        )));
    }
    Ok(())
}

/// The source device of the mount at `mp`, if something is mounted there.
fn mounted_source(mp: &Path) -> Option<String> {
    mountinfo::top_at(&mountinfo::read(), mp).map(|m| m.source.clone())
}

/// Does `source` (from mountinfo) name the LV `vg/lv`?
fn is_device_of(source: &str, vg: &str, lv: &str) -> bool {
    let dm = format!("/dev/mapper/{}", dm_name(vg, lv, None));
    let canon = |p: &str| std::fs::canonicalize(p).ok();
    source == dm
        || source == dev_path(vg, lv).to_string_lossy()
        || (canon(source).is_some() && canon(source) == canon(&dm))
}

fn mount_copy(vol: &Volume, vg: &str, lv: &str, mp: &Path) -> Result<()> {
    std::fs::create_dir_all(mp).ctx(format!("create mountpoint {}", mp.display()))?;
    let dev = dev_path(vg, lv);
    let fstype = Cmd::new("blkid")
        .args(["-o", "value", "-s", "TYPE"])
        .arg(&dev)
        .output()
        .unwrap_or_default();
    let mut opts = Vec::new();
    if fstype.trim() == "xfs" {
        // the received snapshots share the filesystem uuid
        opts.push("nouuid");
    }
    if !vol.allow_privileged_files {
        // Nothing privileged from the other site works (docs/security.md).
        opts.extend(["nosuid", "nodev"]);
    }
    let mut cmd = Cmd::new("mount");
    if !opts.is_empty() {
        cmd = cmd.arg("-o").arg(opts.join(","));
    }
    cmd.arg(&dev).arg(mp).run().ctx(format!(
        "volume `{}`: mount the writable snapshot",
        vol.role
    ))
}

impl Backend for Lvm {
    fn protect_common(&self, vol: &Volume, name: &str, tag: &str) -> Result<()> {
        holds::protect(vol, name, tag)
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

    fn kind(&self) -> BackendKind {
        BackendKind::Lvm
    }

    fn probe(&self, vol: &Volume, primary: bool) -> Result<Vec<String>> {
        let version = lvm("lvm").arg("version").output()?;
        let mut notes: Vec<String> = version
            .lines()
            .take(1)
            .map(|l| l.trim().to_string())
            .collect();
        if primary {
            let (vg, lv) = split(source_lv(vol)?);
            let all = lvs_of(vol, vg)?;
            let info = find(&all, lv).ok_or_else(|| {
                Error::storage(format!(
                    "volume `{}`: logical volume {} does not exist",
                    vol.role, vol.source
                ))
            })?;
            if info.is_thin() {
                for tool in ["thin_delta", "thin_dump"] {
                    Cmd::new(tool).arg("-V").run().map_err(|e| {
                        e.with_hint("install thin-provisioning-tools: incremental sends need thin_delta and thin_dump")
                    })?;
                }
                lvm("dmsetup").arg("version").run()?;
                notes.push(format!(
                    "thin LV in pool {vg}/{}: incremental sends of changed blocks",
                    info.pool.as_deref().unwrap_or("?")
                ));
                if let Some(p) = info
                    .pool
                    .as_deref()
                    .and_then(|p| space::primary_pool_problem(vol, vg, p))
                {
                    notes.push(format!("warning: {p}"));
                }
            } else {
                notes.push(format!(
                    "warning: {} is a classic (non-thin) LV: every ship sends a full image and each snapshot reserves the LV's size; incremental shipping needs thin LVs",
                    vol.source
                ));
            }
            if let Some(p) = space::vg_mda(vg)?.and_then(|m| space::mda_problem(vg, &m)) {
                notes.push(format!("warning: {p}"));
            }
        } else {
            let replica = require_replica(vol)?;
            let (vg, rlv) = split(replica);
            if split(source_lv(vol)?).0 != vg {
                return Err(Error::config(format!(
                    "volume `{}`: source {} must be in the replica's volume group {vg} (failover makes a thin snapshot of the replica there)",
                    vol.role, vol.source
                )));
            }
            let all = lvs_of(vol, vg)?;
            let pool = replica_pool(vol, &all, rlv)?;
            match find(&all, rlv) {
                Some(r) if !r.has_tag(REPLICA_TAG) => {
                    return Err(Error::refused(format!(
                        "volume `{}`: {replica} exists and is not a snapsite replica (no tag {REPLICA_TAG}); receiving would overwrite it",
                        vol.role
                    ))
                    .with_hint(format!("if it is meant to be the replica: lvchange --addtag {REPLICA_TAG} {replica}")));
                }
                Some(_) => notes.push(format!(
                    "replica {replica} in pool {vg}/{pool}, {} snapshot(s) received",
                    snapshots_of(&all, rlv).len()
                )),
                None => notes.push(format!(
                    "replica {replica} will be created in pool {vg}/{pool} by the first full receive"
                )),
            }
            if let Some(p) = self.capacity_problem(vol)? {
                notes.push(format!("warning: {p}"));
            }
            if let Some(p) = parked(vol)? {
                notes.push(format!("warning: {}", p.describe()));
            }
        }
        Ok(notes)
    }

    fn capacity_problem(&self, vol: &Volume) -> Result<Option<String>> {
        let Some(replica) = lvm_addr(vol)?.1 else {
            return Ok(None);
        };
        let (vg, rlv) = split(replica);
        let Some(all) = vg_lvs(vg)? else {
            return Ok(None);
        };
        // No (single) pool: `probe` and `receive` say so themselves.
        let Ok(name) = replica_pool(vol, &all, rlv) else {
            return Ok(None);
        };
        let pool = Pool {
            vg: vg.to_string(),
            name,
        };
        let full = match pool.usage() {
            Ok(u) => pool_problem(&pool, &u),
            Err(e) => {
                tracing::warn!(volume = %vol.role, error = %e, "cannot read the thin pool's fill level (inactive?)");
                None
            }
        };
        // Failover's writable snapshots are new LVs: a full metadata area
        // stops them as surely as a full pool.
        let mda = space::vg_mda(vg)?.and_then(|m| space::mda_problem(vg, &m));
        Ok(match (full, mda) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.or(b),
        })
    }

    fn parked_receive(&self, vol: &Volume) -> Result<Option<String>> {
        Ok(parked(vol)?.map(|p| p.describe()))
    }

    /// The replica is put back as its newest snapshot (a thin snapshot:
    /// metadata only), which frees every block the cut receive allocated;
    /// without a snapshot it held only a cut first receive and goes.
    fn release_parked(&self, vol: &Volume) -> Result<Option<String>> {
        let Some(p) = parked(vol)? else {
            return Ok(None);
        };
        let ctx = || format!("volume `{}`: release the parked receive", vol.role);
        remove_lv(&p.vg, &p.rlv).ctx(ctx())?;
        if let Some(newest) = &p.newest {
            lvm("lvcreate")
                .args(["-y", "-s", "-kn", "-prw", "-n", &p.rlv])
                .args(["--addtag", TAG, "--addtag", REPLICA_TAG])
                .arg(format!("{}/{}", p.vg, snap_lv(&p.rlv, newest)))
                .run()
                .ctx(ctx())?;
        }
        let after = p
            .pool
            .as_ref()
            .and_then(|name| pool_percent(&p.vg, name))
            .map(|(d, _)| format!("; pool now {d}% used"))
            .unwrap_or_default();
        Ok(Some(format!("released {}{after}", p.describe())))
    }

    fn snapshot(&self, vols: &[&Volume], name: &str) -> Result<()> {
        let mut taken: Vec<(String, String)> = Vec::new();
        for vol in vols {
            let (vg, lv) = split(head(vol)?);
            let r = (|| -> Result<()> {
                let info = find(&lvs_of(vol, vg)?, lv).cloned().ok_or_else(|| {
                    Error::storage(format!("logical volume {vg}/{lv} does not exist"))
                })?;
                let mut cmd = lvm("lvcreate").args(["-y", "-s", "-pr"]);
                if !info.is_thin() {
                    cmd = cmd.args(["-l", "100%ORIGIN"]);
                }
                cmd.arg("-n")
                    .arg(snap_lv(lv, name))
                    .args(["--addtag", TAG, "--addtag"])
                    .arg(format!("{SET_TAG}{name}"))
                    .arg(format!("{vg}/{lv}"))
                    .run()
            })();
            if let Err(e) = r {
                for (vg, s) in taken {
                    let _ = remove_lv(&vg, &s);
                }
                return Err(e.context(format!("volume `{}`", vol.role)));
            }
            taken.push((vg.to_string(), snap_lv(lv, name)));
        }
        Ok(())
    }

    fn storage_id(&self, vol: &Volume, name: &str) -> Result<Option<String>> {
        let (vg, _) = split(home(vol)?);
        let all = lvs_of(vol, vg)?;
        Ok(find(&all, &snap_of(vol, &all, name)?).map(|s| {
            s.tag_value(FROM_TAG)
                .map(str::to_string)
                .unwrap_or_else(|| s.uuid.clone())
        }))
    }

    fn list(&self, vol: &Volume) -> Result<Vec<String>> {
        if vol.replica().is_some() {
            return chain(vol);
        }
        let (vg, lv) = split(home(vol)?);
        Ok(vg_lvs(vg)?
            .map(|all| snapshots_of(&all, lv))
            .unwrap_or_default())
    }

    /// Volumes of one VG are listed by one `lvs`.
    fn listing_key(&self, vol: &Volume) -> Option<String> {
        home(vol).ok().map(|h| h.vg.clone())
    }

    fn list_batch(&self, vols: &[&Volume]) -> Result<Vec<super::VolumeListing>> {
        use std::collections::BTreeMap;
        let mut reports: BTreeMap<String, Option<Vec<LvInfo>>> = BTreeMap::new();
        vols.iter()
            .map(|vol| {
                let (lv, replica) = lvm_addr(vol)?;
                let (vg, hlv) = split(home(vol)?);
                if !reports.contains_key(vg) {
                    reports.insert(vg.to_string(), vg_lvs(vg)?);
                }
                let Some(all) = reports[vg].as_deref() else {
                    return Ok(super::VolumeListing::default());
                };
                // as `list`: the chain with a replica, else home's snapshots
                let snapshots = match replica {
                    Some(_) => chain_of(all, hlv, &lv.lv),
                    None => snapshots_of(all, hlv),
                };
                let mut ids = BTreeMap::new();
                for name in &snapshots {
                    // as `storage_id`: the sender's uuid it was received
                    // from, else its own
                    if let Some(s) = find(all, &snap_of(vol, all, name)?) {
                        let id = s.tag_value(FROM_TAG).unwrap_or(&s.uuid);
                        ids.insert(name.clone(), id.to_string());
                    }
                }
                Ok(super::VolumeListing {
                    snapshots,
                    ids,
                    // the replica is home on a standby: in the same report
                    resumable: replica.and_then(|r| resumable_in(all, &r.lv)),
                })
            })
            .collect()
    }

    fn send(&self, vol: &Volume, name: &str, base: Option<&str>) -> Result<BoxedSource> {
        let p = plan_send(vol, name, base)?;
        tracing::info!(
            volume = %vol.role,
            snapshot = name,
            kind = ?p.header.kind,
            bytes = p.extents.iter().filter(|e| e.data).map(|e| e.len).sum::<u64>(),
            "sending changed blocks"
        );
        Ok(Box::new(LvmSource {
            enc: Encoder::new(p.dev, &p.header, p.extents),
            classic: p.classic,
        }))
    }

    fn send_resume(&self, vol: &Volume, name: &str, token: &str) -> Result<BoxedSource> {
        let tok = resume::Token::parse(token)?;
        if tok.snapshot != name {
            return Err(Error::storage(format!(
                "volume `{}`: the resume token is for {}, not {name}",
                vol.role, tok.snapshot
            )));
        }
        let mut p = plan_send(vol, name, tok.base.as_deref())?;
        if resume::header_digest(&p.header) != tok.header {
            return Err(Error::storage(format!(
                "volume `{}`: the resume token is for another stream of {name} (its header differs)",
                vol.role
            )));
        }
        if tok.high > p.header.size {
            return Err(Error::storage(format!(
                "volume `{}`: the resume token lies beyond the device ({} > {})",
                vol.role, tok.high, p.header.size
            )));
        }
        // Recompute the chain over the standby's segments from this
        // snapshot: any byte that differs makes the token stale.
        let mut chain = [0u8; 32];
        for (a, b) in tok.segments() {
            let dev = p.dev.try_clone().ctx("reopen the snapshot device")?;
            let (bytes, h) = format::records_hash(dev, &p.header, format::clip(&p.extents, a, b))
                .ctx(format!("volume `{}`: read the verified prefix", vol.role))?;
            chain = resume::chain_step(&chain, a, b, bytes, &h);
        }
        if chain != tok.chain {
            return Err(Error::storage(format!(
                "volume `{}`: the standby's partial receive of {name} does not match this snapshot",
                vol.role
            )));
        }
        let from = tok.offset();
        p.header.resume = Some(format::ResumeFrom {
            bounds: tok.bounds.clone(),
            chain: resume::hex(&chain),
        });
        let rest = format::clip(&p.extents, from, p.header.size);
        tracing::info!(
            volume = %vol.role,
            snapshot = name,
            from,
            bytes = rest.iter().filter(|e| e.data).map(|e| e.len).sum::<u64>(),
            "resuming a cut transfer"
        );
        Ok(Box::new(LvmSource {
            enc: Encoder::new(p.dev, &p.header, rest),
            classic: p.classic,
        }))
    }

    fn receive(&self, vol: &Volume, r: Receive<'_>) -> Result<BoxedSink> {
        let Receive {
            name,
            base,
            expect_id,
            resume,
        } = r;
        let replica = require_replica(vol)?;
        let (vg, rlv) = split(replica);
        let all = lvs_of(vol, vg)?;
        if find(&all, &snap_lv(rlv, name)).is_some() {
            return Err(Error::storage(format!(
                "volume `{}`: {vg}/{} already exists",
                vol.role,
                snap_lv(rlv, name)
            )));
        }
        if let Some(b) = base {
            if find(&all, &snap_lv(rlv, b)).is_none() {
                return Err(Error::storage(format!(
                    "volume `{}`: base snapshot {b} is missing on {replica}",
                    vol.role
                )));
            }
        }
        if let Some(id) = expect_id {
            check_uuid(id)?;
        }
        // The base's thin device, and the other replicas' newest snapshots
        // in its pool (read in the same dump), from the listing above (no
        // other `lvs`).
        let base_thin = base.and_then(|b| mapped::base_thin(&all, rlv, &snap_lv(rlv, b)));
        Ok(Box::new(LvmSink {
            base_thin,
            vol: vol.clone(),
            vg: vg.to_string(),
            rlv: rlv.to_string(),
            name: name.to_string(),
            base: base.map(str::to_string),
            expect_id: expect_id.map(str::to_string),
            decoder: Decoder::default(),
            header: None,
            dev: None,
            hash: RecordHash::default(),
            records: Vec::new(),
            end: None,
            failed: None,
            touched: false,
            before: None,
            watch: None,
            resume_req: resume,
            progress: Progress::default(),
            behind: None,
        }))
    }

    fn resumable(&self, vol: &Volume) -> Result<Option<super::Resumable>> {
        let Some(replica) = lvm_addr(vol)?.1 else {
            return Ok(None);
        };
        let (vg, rlv) = split(replica);
        Ok(vg_lvs(vg)?.and_then(|all| resumable_in(&all, rlv)))
    }

    fn recover_interrupted(&self, vol: &Volume) -> Result<Vec<String>> {
        // `dmsetup`, not `lvs`: LVM's scan could itself block on a
        // suspended device. Only this volume's VG is touched, and only
        // because an interrupted set of ours names it.
        let vg = &source_lv(vol)?.vg;
        let mut notes = Vec::new();
        for name in suspended_devices(vg)? {
            lvm("dmsetup")
                .args(["resume", "--"])
                .arg(&name)
                .run()
                .ctx(format!("volume `{}`: resume {name}", vol.role))?;
            notes.push(format!(
                "device {name} was left suspended by an interrupted snapshot: resumed"
            ));
        }
        if let Some(left) = suspended_devices(vg)?.first() {
            return Err(Error::storage(format!(
                "volume `{}`: device {left} is still suspended after `dmsetup resume`",
                vol.role
            )));
        }
        Ok(notes)
    }

    fn cleanup_partial(&self, _vol: &Volume) -> Result<Vec<String>> {
        // A cut receive leaves only writes in the replica, which the next
        // receive recreates anyway (see `LvmSink::prepare`); no snapshot is
        // made before the data verified.
        Ok(Vec::new())
    }

    fn destroy(&self, vol: &Volume, name: &str) -> Result<()> {
        let (vg, _) = split(home(vol)?);
        match vg_lvs(vg)? {
            Some(all) if find(&all, &snap_of(vol, &all, name)?).is_some() => {
                let s = snap_of(vol, &all, name)?;
                remove_lv(vg, &s).ctx(format!("volume `{}`", vol.role))
            }
            _ => Ok(()), // idempotent
        }
    }

    fn writable_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf> {
        let replica = require_replica(vol)?;
        let (rvg, rlv) = split(replica);
        let (vg, lv) = split(source_lv(vol)?);
        if vg != rvg {
            return Err(Error::config(format!(
                "volume `{}`: source {} must be in the replica's volume group {rvg}",
                vol.role, vol.source
            )));
        }
        let all = lvs_of(vol, vg)?;
        if find(&all, lv).is_some() {
            return Err(Error::refused(format!(
                "volume `{}`: logical volume {} already exists; refusing to overwrite it",
                vol.role, vol.source
            ))
            .with_hint("rename or remove it (it may be live data) and run failover again"));
        }
        let what = format!("volume `{}`", vol.role);
        writable_snapshot(vol, &all, (vg, rlv), name, (lv, FAILOVER_TAG), &what)?;
        crate::failpoint!("lvm.writable_copy.after_snapshot");
        match &vol.mountpoint {
            None => Ok(dev_path(vg, lv)),
            Some(mp) => {
                if let Err(e) = mount_copy(vol, vg, lv, mp) {
                    let _ = remove_lv(vg, lv);
                    return Err(e);
                }
                Ok(mp.clone())
            }
        }
    }

    fn writable_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        let (vg, lv) = split(source_lv(vol)?);
        match &vol.mountpoint {
            None => Ok(dev_path(vg, lv)),
            Some(mp) => {
                match mounted_source(mp) {
                    Some(src) if is_device_of(&src, vg, lv) => {}
                    Some(other) => {
                        return Err(Error::storage(format!(
                            "volume `{}`: {} is mounted at {}, not {}",
                            vol.role,
                            other,
                            mp.display(),
                            vol.source
                        )));
                    }
                    // a failover interrupted between snapshot and mount
                    None => mount_copy(vol, vg, lv, mp)?,
                }
                Ok(mp.clone())
            }
        }
    }

    fn writable_copy_exists(&self, vol: &Volume) -> Result<bool> {
        let (vg, lv) = split(source_lv(vol)?);
        Ok(vg_lvs(vg)?.is_some_and(|all| find(&all, lv).is_some()))
    }

    /// `/run/snapsite/rehearsal/<vg>_<lv>`: never the live mountpoint.
    fn rehearsal_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        let (vg, lv) = rehearsal_lv(vol)?;
        Ok(PathBuf::from("/run/snapsite/rehearsal").join(format!("{vg}_{lv}")))
    }

    /// A writable thin snapshot of the received snapshot, mounted at the
    /// scratch path (the received snapshot stays pristine).
    fn rehearsal_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf> {
        let (vg, lv) = rehearsal_lv(vol)?;
        let (_, rlv) = split(require_replica(vol)?);
        let all = lvs_of(vol, &vg)?;
        if find(&all, &lv).is_some() {
            return Err(Error::refused(format!(
                "volume `{}`: {vg}/{lv} already exists (a rehearsal's leftover?)",
                vol.role
            )));
        }
        let what = format!("volume `{}`: rehearsal snapshot", vol.role);
        writable_snapshot(vol, &all, (&vg, rlv), name, (&lv, REHEARSAL_TAG), &what)?;
        crate::failpoint!("lvm.rehearsal_copy.after_snapshot");
        let mp = self.rehearsal_copy_path(vol)?;
        if let Err(e) = mount_copy(vol, &vg, &lv, &mp) {
            let _ = remove_lv(&vg, &lv);
            return Err(e);
        }
        Ok(mp)
    }

    fn remove_rehearsal_copy(&self, vol: &Volume) -> Result<()> {
        let (vg, lv) = rehearsal_lv(vol)?;
        let (_, rlv) = split(require_replica(vol)?);
        let Some(all) = vg_lvs(&vg)? else {
            return Ok(());
        };
        let Some(info) = find(&all, &lv) else {
            return Ok(());
        };
        let ours = info.has_tag(REHEARSAL_TAG)
            && info
                .origin
                .as_deref()
                .is_some_and(|o| o.starts_with(&format!("{rlv}.")));
        if !ours {
            return Err(Error::refused(format!(
                "volume `{}`: {vg}/{lv} is not a rehearsal snapshot of {rlv} (origin {:?}); not removing it",
                vol.role, info.origin
            )));
        }
        let mp = self.rehearsal_copy_path(vol)?;
        if mounted_source(&mp).is_some_and(|s| is_device_of(&s, &vg, &lv)) {
            Cmd::new("umount").arg(&mp).run().ctx(format!(
                "volume `{}`: unmount the rehearsal snapshot",
                vol.role
            ))?;
        }
        remove_lv(&vg, &lv).ctx(format!("volume `{}`", vol.role))
    }

    fn keep_divergent(&self, vol: &Volume, label: &str) -> Result<String> {
        keep_divergent(vol, label)
    }

    fn can_set_aside(&self) -> bool {
        true
    }

    /// See [`follow::set_aside_newer`].
    fn set_aside_newer(&self, vol: &Volume, base: &str, label: &str) -> Result<Vec<String>> {
        follow::set_aside_newer(vol, base, label)
    }

    fn make_receivable(&self, vol: &Volume, name: &str) -> Result<()> {
        make_receivable(vol, name)
    }

    fn divergent(&self, vol: &Volume) -> Result<Vec<String>> {
        let (vg, _) = split(source_lv(vol)?);
        let mut v: Vec<String> = vg_lvs(vg)?
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.has_tag(DIVERGENT_TAG))
            .map(|l| format!("{vg}/{}", l.name))
            .collect();
        v.sort();
        Ok(v)
    }

    fn remove_writable_copy(&self, vol: &Volume) -> Result<()> {
        let (vg, lv) = split(source_lv(vol)?);
        let Some(all) = vg_lvs(vg)? else {
            return Ok(());
        };
        let Some(info) = find(&all, lv) else {
            return Ok(());
        };
        // Only ever remove a writable snapshot of our own replica.
        let rlv = lvm_addr(vol)?.1.map(|r| r.lv.as_str()).unwrap_or("");
        let ours = info.has_tag(FAILOVER_TAG)
            && info
                .origin
                .as_deref()
                .is_some_and(|o| !rlv.is_empty() && o.starts_with(&format!("{rlv}.")));
        if !ours {
            return Err(Error::refused(format!(
                "volume `{}`: {} is not a failover snapshot of {} (origin {:?}); not removing it",
                vol.role,
                vol.source,
                vol.replica().unwrap_or_else(|| "-".into()),
                info.origin
            )));
        }
        if let Some(mp) = &vol.mountpoint {
            if mounted_source(mp).is_some_and(|s| is_device_of(&s, vg, lv)) {
                Cmd::new("umount")
                    .arg(mp)
                    .run()
                    .ctx(format!("volume `{}`", vol.role))?;
            }
        }
        remove_lv(vg, lv).ctx(format!("volume `{}`", vol.role))
    }
}

#[cfg(test)]
mod tests;

/// The device-mapper name prefix of a volume group's LVs (`-` doubled).
fn dm_prefix(vg: &str) -> String {
    format!("{}-", vg.replace('-', "--"))
}

/// Suspended device-mapper devices of LVM volumes in `vg`, from
/// `dmsetup info -c` (name, suspended state, uuid).
fn suspended_devices(vg: &str) -> Result<Vec<String>> {
    let out = lvm("dmsetup")
        .args([
            "info",
            "-c",
            "--noheadings",
            "--separator",
            "\t",
            "-o",
            "name,suspended,uuid",
        ])
        .output()?;
    Ok(parse_suspended(&out, vg))
}

fn parse_suspended(out: &str, vg: &str) -> Vec<String> {
    let prefix = dm_prefix(vg);
    out.lines()
        .filter_map(|l| {
            let mut f = l.trim().split('\t');
            let (name, state, uuid) = (f.next()?, f.next()?, f.next()?);
            (name.starts_with(&prefix) && state == "Suspended" && uuid.starts_with("LVM-"))
                .then(|| name.to_string())
        })
        .collect()
}
