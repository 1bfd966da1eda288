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

mod format;
mod readback;
mod report;
mod resume;
mod thin;

pub use format::{Decoder, Encoder, Event, Extent, Header, MAGIC, RecordHash, StreamKind, VERSION};
pub use report::{LvInfo, dm_name, lvm, parse_lvs, vg_lvs, vg_size};
/// The resume token, for the fuzz targets (`crate::testing::fuzzing`).
#[doc(hidden)]
pub use resume::Token as ResumeToken;
pub use thin::{
    BlockRange, Delta, DeltaKind, Mapping, MetadataSnap, Pool, PoolUsage, parse_held_root,
    parse_pool_block_size, parse_pool_usage, parse_thin_delta, parse_thin_dump,
};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Backend, SnapshotSink, SnapshotSource};
use crate::base::cmd::Cmd;
use crate::base::config::{BackendKind, LvName, Volume, VolumeAddr};
use crate::base::error::{Context, Error, Result};
use crate::base::model::parse_set_id;
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

/// A cut receive kept for resuming in a replica (its resume tag).
struct Parked {
    vg: String,
    rlv: String,
    pool: Option<String>,
    snapshot: String,
    /// Where in the stream the receive would continue.
    offset: u64,
    /// The replica's newest received snapshot (what it is put back to).
    newest: Option<String>,
    /// The pool's data and metadata use, in percent.
    usage: Option<(u64, u64)>,
}

impl Parked {
    fn describe(&self) -> String {
        let pool = match (&self.pool, self.usage) {
            (Some(p), Some((d, m))) => {
                format!(" in thin pool {}/{p} ({d}% used, metadata {m}%)", self.vg)
            }
            (Some(p), None) => format!(" in thin pool {}/{p}", self.vg),
            _ => String::new(),
        };
        format!(
            "a cut receive of snapshot {} is parked for resuming in {}/{}: {} bytes of its stream arrived and stay allocated{pool} until the primary resumes it; failover releases it",
            self.snapshot, self.vg, self.rlv, self.offset
        )
    }
}

/// The pool's data and metadata use in percent, if it can be read.
fn pool_percent(vg: &str, name: &str) -> Option<(u64, u64)> {
    Pool {
        vg: vg.to_string(),
        name: name.to_string(),
    }
    .usage()
    .ok()
    .map(|u| u.percents())
}

/// The volume's parked receive, if its replica holds one.
fn parked(vol: &Volume) -> Result<Option<Parked>> {
    let Some(replica) = lvm_addr(vol)?.1 else {
        return Ok(None);
    };
    let (vg, rlv) = split(replica);
    let Some(all) = vg_lvs(vg)? else {
        return Ok(None);
    };
    let Some(r) = find(&all, rlv).filter(|r| r.has_tag(REPLICA_TAG)) else {
        return Ok(None);
    };
    let Some((_, token)) = resume_tag(r) else {
        return Ok(None);
    };
    Ok(Some(Parked {
        vg: vg.to_string(),
        rlv: rlv.to_string(),
        usage: r.pool.as_deref().and_then(|p| pool_percent(vg, p)),
        pool: r.pool.clone(),
        offset: token.offset(),
        snapshot: token.snapshot,
        newest: snapshots_of(&all, rlv).last().cloned(),
    }))
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
            (parse_set_id(id).is_some() && l.tag_value(SET_TAG) == Some(id)).then(|| id.to_string())
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

/// Turn `thin_delta` output into byte extents: rewritten and new blocks
/// carry data, blocks only the base had are zero now.
pub fn delta_extents(delta: &Delta, size: u64) -> Vec<Extent> {
    let bs = delta.block_size;
    let mut out: Vec<Extent> = Vec::new();
    for (kind, r) in &delta.ranges {
        let data = match kind {
            DeltaKind::Same => continue,
            DeltaKind::Different | DeltaKind::RightOnly => true,
            DeltaKind::LeftOnly => false,
        };
        // Saturating: a range past the device is dropped, not wrapped.
        push_extent(
            &mut out,
            r.begin.saturating_mul(bs),
            r.length.saturating_mul(bs),
            data,
            size,
        );
    }
    out.sort_by_key(|e| e.offset);
    out
}

/// Mapped blocks of a device as data extents.
pub fn mapping_extents(m: &Mapping, size: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    for r in &m.ranges {
        push_extent(
            &mut out,
            r.begin.saturating_mul(m.block_size),
            r.length.saturating_mul(m.block_size),
            true,
            size,
        );
    }
    out
}

/// Append, clamped to the device and merged with an adjacent extent of the
/// same kind.
fn push_extent(out: &mut Vec<Extent>, offset: u64, len: u64, data: bool, size: u64) {
    if offset >= size || len == 0 {
        return;
    }
    let len = len.min(size - offset);
    if let Some(last) = out.last_mut() {
        if last.data == data && last.offset + last.len == offset {
            last.len += len;
            return;
        }
    }
    out.push(Extent { offset, len, data });
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

/// Watches the thin pool while a receive writes: every write is charged
/// with the pool blocks it can allocate (an upper bound); when the charges
/// reach what the pool had room for at the last look, the replica is
/// fsynced (buffered writes allocate only at writeback) and the pool asked
/// again. A receive that would pass [`POOL_LIMIT_PERCENT`] fails there.
struct PoolWatch {
    pool: Pool,
    block_size: u64,
    /// Bytes that may still be charged before the next look.
    budget: u64,
}

impl PoolWatch {
    fn open(pool: Pool) -> Result<PoolWatch> {
        let block_size = pool.block_size()?;
        let mut w = PoolWatch {
            pool,
            block_size,
            budget: 0,
        };
        w.look(None, 0)?;
        Ok(w)
    }

    /// Ask the pool; fail unless `need` more bytes fit under the limit.
    fn look(&mut self, dev: Option<&File>, need: u64) -> Result<()> {
        if let Some(d) = dev {
            d.sync_data().ctx("fsync the replica")?;
        }
        let u = self.pool.usage()?;
        let room = u.data_headroom(POOL_LIMIT_PERCENT) * self.block_size;
        if !u.meta_ok(POOL_LIMIT_PERCENT) || room < need.max(1) {
            let (d, m) = u.percents();
            return Err(Error::refused(format!(
                "thin pool {}/{} would pass {POOL_LIMIT_PERCENT}% ({d}% of its data and {m}% of its metadata in use): the receive stops so that failover's writable snapshots keep room",
                self.pool.vg, self.pool.name
            )));
        }
        self.budget = room.min(WATCH_STEP.max(need));
        Ok(())
    }

    /// A write of `len` bytes at `offset` is about to happen.
    fn charge(&mut self, dev: Option<&File>, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let bs = self.block_size;
        let bytes = ((offset + len - 1) / bs - offset / bs + 1) * bs;
        if bytes > self.budget {
            self.look(dev, bytes)?;
        }
        self.budget -= bytes;
        Ok(())
    }
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
            } else {
                notes.push(format!(
                    "warning: {} is a classic (non-thin) LV: every ship sends a full image and each snapshot reserves the LV's size; incremental shipping needs thin LVs",
                    vol.source
                ));
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
        match pool.usage() {
            Ok(u) => Ok(pool_problem(&pool, &u)),
            Err(e) => {
                tracing::warn!(volume = %vol.role, error = %e, "cannot read the thin pool's fill level (inactive?)");
                Ok(None)
            }
        }
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

    fn send(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn SnapshotSource>> {
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

    fn send_resume(
        &self,
        vol: &Volume,
        name: &str,
        token: &str,
    ) -> Result<Box<dyn SnapshotSource>> {
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

    fn receive(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
        expect_id: Option<&str>,
        resume: bool,
    ) -> Result<Box<dyn SnapshotSink>> {
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
        Ok(Box::new(LvmSink {
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
        let origin = snap_lv(rlv, name);
        if find(&all, &origin).is_none() {
            return Err(Error::storage(format!(
                "volume `{}`: received snapshot {vg}/{origin} does not exist",
                vol.role
            )));
        }
        lvm("lvcreate")
            .args(["-y", "-s", "-kn", "-ay", "-prw", "-n", lv])
            .args(["--addtag", TAG, "--addtag", FAILOVER_TAG])
            .arg(format!("{vg}/{origin}"))
            .run()
            .ctx(format!("volume `{}`", vol.role))?;
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
        let origin = snap_lv(rlv, name);
        if find(&all, &origin).is_none() {
            return Err(Error::storage(format!(
                "volume `{}`: received snapshot {vg}/{origin} does not exist",
                vol.role
            )));
        }
        lvm("lvcreate")
            .args(["-y", "-s", "-kn", "-ay", "-prw", "-n", &lv])
            .args(["--addtag", TAG, "--addtag", REHEARSAL_TAG])
            .arg(format!("{vg}/{origin}"))
            .run()
            .ctx(format!("volume `{}`: rehearsal snapshot", vol.role))?;
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
fn head(vol: &Volume) -> Result<&LvName> {
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
fn snap_of(vol: &Volume, all: &[LvInfo], name: &str) -> Result<String> {
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
fn chain(vol: &Volume) -> Result<Vec<String>> {
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

/// Keep the live LV as `<source>-divergent-<label>`: unmounted from the
/// volume's mountpoint, renamed, read-only, tagged [`DIVERGENT_TAG`].
fn keep_divergent(vol: &Volume, label: &str) -> Result<String> {
    check_label(label)?;
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
fn make_receivable(vol: &Volume, name: &str) -> Result<()> {
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

/// A planned send: the snapshot device, the stream header and the extents.
struct Planned {
    dev: File,
    header: Header,
    extents: Vec<Extent>,
    classic: Option<(String, String)>,
}

/// What a send of `name` (from `base`) reads: the device, the header and the extents.
fn plan_send(vol: &Volume, name: &str, base: Option<&str>) -> Result<Planned> {
    let (vg, _) = split(home(vol)?);
    let all = lvs_of(vol, vg)?;
    let snap_name = snap_of(vol, &all, name)?;
    let snap = find(&all, &snap_name).cloned().ok_or_else(|| {
        Error::storage(format!(
            "volume `{}`: snapshot {vg}/{snap_name} does not exist",
            vol.role
        ))
    })?;
    if snap.is_invalid_snapshot() {
        return Err(Error::storage(format!(
            "volume `{}`: classic snapshot {vg}/{snap_name} is invalid (its copy-on-write space overflowed)",
            vol.role
        )));
    }
    let base_info = match base {
        Some(b) => find(&all, &snap_of(vol, &all, b)?).cloned(),
        None => None,
    };
    if !snap.active {
        activate(vg, &snap_name).ctx(format!("volume `{}`", vol.role))?;
    }
    // The device's size: `lv_size` of a classic snapshot is its
    // copy-on-write space, not the size of the data.
    let dev_p = dev_path(vg, &snap_name);
    let (dev, size) = open_sized(&dev_p, false).ctx(format!("volume `{}`", vol.role))?;
    let (kind, block_size, extents, base_used) = if snap.is_thin() {
        let pool = Pool {
            vg: vg.to_string(),
            name: snap.pool.clone().expect("thin LVs have a pool"),
        };
        let id = snap.thin_id.ok_or_else(|| {
            Error::storage(format!("lvs reports no thin id for {vg}/{snap_name}"))
        })?;
        let incremental_base = base_info
            .as_ref()
            .filter(|b| b.is_thin() && b.pool == snap.pool && b.thin_id.is_some());
        let ms = MetadataSnap::reserve(&pool).ctx(format!("volume `{}`", vol.role))?;
        let planned = match incremental_base {
            Some(b) => ms.delta(b.thin_id.expect("filtered"), id).map(|d| {
                (
                    StreamKind::Incremental,
                    d.block_size,
                    delta_extents(&d, size),
                    Some(b.clone()),
                )
            }),
            None => ms.mapped(id).map(|m| {
                (
                    StreamKind::Full,
                    m.block_size,
                    mapping_extents(&m, size),
                    None,
                )
            }),
        };
        // Released before any data moves; an error above releases on drop.
        ms.release()?;
        planned.ctx(format!("volume `{}`", vol.role))?
    } else {
        if base.is_some() {
            tracing::info!(volume = %vol.role, "classic LV: sending a full image");
        }
        let all_of_it = vec![Extent {
            offset: 0,
            len: size,
            data: true,
        }];
        (StreamKind::Full, CLASSIC_UNIT, all_of_it, None)
    };
    let header = Header {
        version: format::VERSION,
        kind,
        size,
        block_size,
        snapshot: name.to_string(),
        storage_id: Some(snap.uuid.clone()),
        base: base_used.as_ref().and(base.map(str::to_string)),
        // What the base was received from (the peer's snapshot), else
        // its own uuid: the id both sites know the base by.
        base_storage_id: base_used.as_ref().map(|b| {
            b.tag_value(FROM_TAG)
                .map(str::to_string)
                .unwrap_or_else(|| b.uuid.clone())
        }),
        resume: None,
    };
    Ok(Planned {
        dev,
        header,
        extents,
        classic: (!snap.is_thin()).then(|| (vg.to_string(), snap_name)),
    })
}

/// The sending end: records from the snapshot device.
struct LvmSource {
    enc: Encoder,
    /// A classic snapshot (vg, lv): checked again after reading, since it
    /// turns invalid if its copy-on-write space overflows meanwhile.
    classic: Option<(String, String)>,
}

impl Read for LvmSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.enc.read(buf)
    }
}

impl SnapshotSource for LvmSource {
    fn finish(self: Box<Self>) -> Result<()> {
        if let Some((vg, lv)) = &self.classic {
            if report::lv_info(vg, lv)?.is_none_or(|i| i.is_invalid_snapshot()) {
                return Err(Error::storage(format!(
                    "classic snapshot {vg}/{lv} became invalid while it was sent"
                )));
            }
        }
        Ok(())
    }
    fn abort(self: Box<Self>) {}
}

/// One record of a received stream, for reading back.
#[derive(Debug, Clone, Copy)]
struct Written {
    offset: u64,
    len: u64,
    data: bool,
}

/// The receiving end: writes the ranges into the replica LV, and on commit
/// verifies them and takes the snapshot.
struct LvmSink {
    vol: Volume,
    vg: String,
    rlv: String,
    name: String,
    base: Option<String>,
    expect_id: Option<String>,
    decoder: Decoder,
    header: Option<Header>,
    dev: Option<File>,
    hash: RecordHash,
    records: Vec<Written>,
    end: Option<(u64, [u8; 32])>,
    /// The first error; `commit` returns it.
    failed: Option<Error>,
    /// `prepare` changed the replica: until the snapshot is taken, any
    /// failure puts it back (`release`), so a refused stream keeps nothing.
    touched: bool,
    /// The replica before this receive when it had no snapshot to be
    /// recreated from (a replica made by hand): (size, pool).
    before: Option<(u64, String)>,
    watch: Option<PoolWatch>,
    /// The sender announced a resumed stream (`Begin { resume }`).
    resume_req: bool,
    /// Verified progress, for resuming a cut receive (`lvm/resume.rs`).
    progress: Progress,
    /// Reading back complete records behind the stream (`lvm/readback.rs`).
    behind: Option<readback::ReadBehind>,
}

/// What a receive has verified so far, and the resume tag that says so.
#[derive(Default)]
struct Progress {
    /// Where this session's records start (0, or the offset resumed from).
    start: u64,
    /// The chain and segment ends of the sessions before this one.
    prev_chain: [u8; 32],
    prev_bounds: Vec<u64>,
    /// End of the last complete record, and the record hash there.
    done_upto: u64,
    boundary: RecordHash,
    /// Bytes still to come of the `W` record being received.
    pending: u64,
    /// Highest offset written (or begun to be written) up to, by this
    /// session or the cut ones it continues.
    high: u64,
    /// Writes must stay below this until the next checkpoint: the `high`
    /// the tag on the replica promises.
    limit: u64,
    /// The resume tag on the replica now.
    tag: Option<String>,
    /// Records read back and checked so far, as a hash.
    readback: RecordHash,
    header: [u8; 16],
}

/// Bytes received between two checkpoints of a long receive (fsync, read
/// back, tag): what a killed `serve` or a reboot can lose at most.
/// `SNAPSITE_LVM_CHECKPOINT_BYTES` overrides it (tests).
fn checkpoint_every() -> u64 {
    std::env::var("SNAPSITE_LVM_CHECKPOINT_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v >= 1 << 20)
        .unwrap_or(1 << 30)
}

fn io_of(e: &Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl LvmSink {
    fn ctx(&self) -> String {
        format!("volume `{}`", self.vol.role)
    }

    fn replica(&self) -> String {
        format!("{}/{}", self.vg, self.rlv)
    }

    /// Make the replica hold what the stream applies to, and open it.
    ///
    /// The replica is recreated for every receive: empty for a full stream,
    /// a thin snapshot of the base snapshot for an incremental one. So a cut
    /// or rejected receive, which leaves partial writes in the replica, can
    /// never leak into the next one: the chain stays exact without tracking
    /// whether the replica was touched. For thin LVs both are metadata
    /// operations (two LVM commands), whatever the size.
    fn prepare(&mut self, h: &Header) -> Result<()> {
        self.check_header(h)?;
        let all = vg_lvs(&self.vg)?.unwrap_or_default();
        let existing = find(&all, &self.rlv).cloned();
        if let Some(r) = &existing {
            if !r.has_tag(REPLICA_TAG) {
                return Err(Error::refused(format!(
                    "{} exists and is not a snapsite replica (no tag {REPLICA_TAG}); not overwriting it",
                    self.replica()
                )));
            }
        }
        let (pool, base_lv) = self.pool_and_base(h, &all)?;
        self.check_resume_announced(h)?;
        self.progress.header = resume::header_digest(h);
        self.progress.limit = checkpoint_every();
        let watch = PoolWatch::open(Pool {
            vg: self.vg.clone(),
            name: pool.clone(),
        })?;
        if snapshots_of(&all, &self.rlv).is_empty() {
            self.before = existing
                .as_ref()
                .and_then(|r| Some((r.size, r.pool.clone()?)));
        }
        if let Some(from) = &h.resume {
            return self.prepare_resumed(h, from, existing.as_ref(), watch);
        }
        self.recreate_replica(h, &pool, base_lv, existing.is_some())?;
        self.watch = Some(watch);
        self.open_replica(h)
    }

    /// The stream's header against what the sender announced: its
    /// snapshot, its LV's uuid, a sane device size.
    fn check_header(&self, h: &Header) -> Result<()> {
        if h.snapshot != self.name {
            return Err(Error::integrity(format!(
                "the stream carries snapshot {}, expected {}",
                h.snapshot, self.name
            )));
        }
        if let Some(id) = &h.storage_id {
            check_uuid(id)?;
        }
        if let (Some(want), Some(got)) = (&self.expect_id, &h.storage_id) {
            if want != got {
                return Err(Error::integrity(format!(
                    "the stream is of LV {got}, the sender announced {want}"
                )));
            }
        }
        if h.size == 0 || h.size % 512 != 0 {
            return Err(Error::protocol(format!(
                "device size {} in the stream",
                h.size
            )));
        }
        Ok(())
    }

    /// The largest device a stream may declare: the standby's own limit
    /// (`max_size`, else the VG's size), never the stream's word; with
    /// where the limit comes from, for the refusal.
    fn size_limit(&self) -> Result<(u64, String)> {
        Ok(match self.vol.max_size_bytes() {
            Some(l) => (l, "max_size".to_string()),
            None => (
                vg_size(&self.vg)?,
                format!("the default max_size, the size of volume group {}", self.vg),
            ),
        })
    }

    /// The thin pool the replica lives in and, for an incremental stream,
    /// the base snapshot LV (with its size) it is a snapshot of; checks the
    /// base and the declared size.
    fn pool_and_base(&self, h: &Header, all: &[LvInfo]) -> Result<(String, Option<(String, u64)>)> {
        let (limit, limit_from) = self.size_limit()?;
        let too_big = |size: u64| {
            Error::refused(format!(
                "the stream declares a device of {size} bytes, more than {limit} bytes ({limit_from}); nothing was created"
            ))
            .with_hint(format!(
                "if the primary's LV really is that large, set max_size on volume `{}` in the standby's config",
                self.vol.role
            ))
        };
        match h.kind {
            StreamKind::Full => {
                if h.size > limit {
                    return Err(too_big(h.size));
                }
                Ok((replica_pool(&self.vol, all, &self.rlv)?, None))
            }
            StreamKind::Incremental => {
                let base = match (&h.base, &self.base) {
                    (Some(hb), Some(b)) if hb == b => b.clone(),
                    (hb, b) => {
                        return Err(Error::protocol(format!(
                            "incremental stream from base {hb:?}, but the sender announced base {b:?}"
                        )));
                    }
                };
                let base_lv = snap_lv(&self.rlv, &base);
                let bi = find(all, &base_lv).ok_or_else(|| {
                    Error::storage(format!("base snapshot {}/{base_lv} is missing", self.vg))
                })?;
                if let (Some(want), Some(got)) = (&h.base_storage_id, bi.tag_value(FROM_TAG)) {
                    if want != got {
                        return Err(Error::integrity(format!(
                            "base {base} here was received from LV {got}, the sender's base is {want}"
                        )));
                    }
                }
                if bi.size > h.size {
                    return Err(Error::storage(format!(
                        "the source shrank from {} to {} bytes; ship a full snapshot",
                        bi.size, h.size
                    )));
                }
                if h.size > bi.size && h.size > limit {
                    return Err(too_big(h.size));
                }
                let pool = bi.pool.clone().ok_or_else(|| {
                    Error::storage(format!("base snapshot {}/{base_lv} is not thin", self.vg))
                })?;
                Ok((pool, Some((base_lv, bi.size))))
            }
        }
    }

    /// A resumed stream exactly when the sender announced a resume.
    fn check_resume_announced(&self, h: &Header) -> Result<()> {
        if h.resume.is_some() != self.resume_req {
            return Err(Error::protocol(format!(
                "the stream {} a resumed one, the sender announced {}",
                if h.resume.is_some() { "is" } else { "is not" },
                if self.resume_req {
                    "a resume"
                } else {
                    "a fresh send"
                }
            )));
        }
        Ok(())
    }

    /// Remove the replica (when it exists) and create it again: empty in
    /// `pool` for a full stream, a thin snapshot of the base otherwise
    /// (grown to the stream's size). From here on the replica changes: a
    /// failure puts it back (`release`).
    fn recreate_replica(
        &mut self,
        h: &Header,
        pool: &str,
        base_lv: Option<(String, u64)>,
        exists: bool,
    ) -> Result<()> {
        self.touched = true;
        if exists {
            remove_lv(&self.vg, &self.rlv)?;
        }
        match base_lv {
            None => {
                lvm("lvcreate")
                    .args(["-y", "-V"])
                    .arg(format!("{}b", h.size))
                    .arg("-T")
                    .arg(format!("{}/{pool}", self.vg))
                    .args(["-n", &self.rlv, "--addtag", TAG, "--addtag", REPLICA_TAG])
                    .run()?;
            }
            Some((base_lv, base_size)) => {
                lvm("lvcreate")
                    .args(["-y", "-s", "-kn", "-ay", "-prw", "-n", &self.rlv])
                    .args(["--addtag", TAG, "--addtag", REPLICA_TAG])
                    .arg(format!("{}/{base_lv}", self.vg))
                    .run()?;
                if base_size < h.size {
                    lvm("lvextend")
                        .args(["-y", "-L"])
                        .arg(format!("{}b", h.size))
                        .arg(self.replica())
                        .run()?;
                }
            }
        }
        Ok(())
    }

    fn open_replica(&mut self, h: &Header) -> Result<()> {
        let p = dev_path(&self.vg, &self.rlv);
        let (dev, n) = open_sized(&p, true)?;
        if n < h.size {
            return Err(Error::storage(format!(
                "{} has {n} bytes, the stream needs {}",
                p.display(),
                h.size
            )));
        }
        self.dev = Some(dev);
        self.header = Some(h.clone());
        Ok(())
    }

    /// Continue a cut receive: the replica must carry the resume tag this
    /// stream continues (same header, same segments, same chain); a full
    /// stream's range a cut record may have touched is zeroed first.
    fn prepare_resumed(
        &mut self,
        h: &Header,
        from: &format::ResumeFrom,
        existing: Option<&LvInfo>,
        watch: PoolWatch,
    ) -> Result<()> {
        let (tag, tok) = existing.and_then(resume_tag).ok_or_else(|| {
            Error::protocol(format!("{} holds no cut receive to resume", self.replica()))
        })?;
        if tok.snapshot != h.snapshot
            || tok.base != h.base
            || tok.header != self.progress.header
            || tok.bounds != from.bounds
            || resume::hex(&tok.chain) != from.chain
        {
            return Err(Error::protocol(format!(
                "the resumed stream does not continue the cut receive on {} ({})",
                self.replica(),
                tok.snapshot
            )));
        }
        let start = tok.offset();
        if tok.high > h.size {
            return Err(Error::protocol(format!(
                "the cut receive on {} reaches beyond the device",
                self.replica()
            )));
        }
        self.touched = true;
        self.watch = Some(watch);
        self.open_replica(h)?;
        if h.kind == StreamKind::Full && tok.high > start {
            let dev = self.dev.as_ref().expect("opened");
            let watch = self.watch.as_mut().expect("opened");
            zero_range(dev, start, tok.high - start, &mut |o, l| {
                watch.charge(Some(dev), o, l)
            })?;
        }
        let pr = &mut self.progress;
        pr.start = start;
        pr.done_upto = start;
        pr.prev_chain = tok.chain;
        pr.prev_bounds = tok.bounds.clone();
        pr.high = tok.high;
        pr.limit = tok.high;
        pr.tag = Some(tag);
        tracing::info!(volume = %self.vol.role, snapshot = %h.snapshot, from = start, "resuming a cut receive");
        Ok(())
    }

    /// Writes up to `end` are about to start: past the tag's promise, take
    /// a checkpoint first (the previous records are complete here).
    fn before_write(&mut self, end: u64) -> Result<()> {
        if end > self.progress.limit {
            self.checkpoint(Some(end))?;
        }
        self.progress.high = self.progress.high.max(end);
        Ok(())
    }

    /// Records come in increasing offsets (what makes one offset describe
    /// the verified progress), and a resumed stream's after its start.
    fn in_order(&self, offset: u64) -> Result<()> {
        if offset < self.progress.done_upto {
            return Err(Error::protocol(format!(
                "record at {offset} comes after one ending at {}: records must increase",
                self.progress.done_upto
            )));
        }
        Ok(())
    }

    /// A record is complete: the verified prefix may end here.
    fn record_done(&mut self, end: u64) {
        self.progress.done_upto = end;
        self.progress.boundary = self.hash.clone();
    }

    /// Read back the complete records not yet checked, into `readback`.
    fn read_back(&mut self, complete: usize) -> Result<()> {
        // What the thread behind the stream read back comes first.
        if let Some(b) = self.behind.take() {
            self.progress.readback = b.finish()?;
        }
        let dev = self.dev.as_ref().expect("header seen");
        dev.sync_all().ctx("fsync the replica")?;
        if complete == 0 {
            return Ok(());
        }
        let (first, last) = (self.records[0], self.records[complete - 1]);
        // Read back from the device, not the page cache.
        unsafe {
            nix::libc::posix_fadvise(
                dev.as_raw_fd(),
                first.offset as i64,
                (last.offset + last.len - first.offset) as i64,
                nix::libc::POSIX_FADV_DONTNEED,
            );
        }
        let records: Vec<Extent> = self
            .records
            .drain(..complete)
            .map(|w| Extent {
                offset: w.offset,
                len: w.len,
                data: w.data,
            })
            .collect();
        readback::read_records(
            dev,
            &records,
            &mut self.progress.readback,
            &mut Vec::new(),
            &std::sync::atomic::AtomicBool::new(false),
        )
    }

    /// Make what was received so far verified progress: fsync, read back
    /// the complete records and check them against what arrived, then tag
    /// the replica with the token. `next`: the end of the record about to
    /// be written (a periodic checkpoint); `None`: the stream was cut.
    /// Returns false when there is nothing to keep.
    fn checkpoint(&mut self, next: Option<u64>) -> Result<bool> {
        let complete = self.records.len() - usize::from(self.progress.pending > 0);
        self.read_back(complete)?;
        let pr = &mut self.progress;
        if pr.readback.data_bytes != pr.boundary.data_bytes
            || pr.readback.finish() != pr.boundary.finish()
        {
            return Err(Error::integrity(format!(
                "{}/{}: what was written does not read back as what was received",
                self.vg, self.rlv
            )));
        }
        let high = pr.high;
        let (bounds, chain) =
            if pr.done_upto > pr.start && pr.prev_bounds.len() < resume::MAX_SEGMENTS {
                let chain = resume::chain_step(
                    &pr.prev_chain,
                    pr.start,
                    pr.done_upto,
                    pr.boundary.data_bytes,
                    &pr.boundary.finish(),
                );
                let mut b = pr.prev_bounds.clone();
                b.push(pr.done_upto);
                (b, chain)
            } else if !pr.prev_bounds.is_empty() {
                // Nothing new verified (or no room for a segment): the old
                // token, with the new high.
                (pr.prev_bounds.clone(), pr.prev_chain)
            } else {
                // Nothing verified at all: no tag (writes stay untracked: the
                // next receive recreates the replica).
                pr.limit = next.map_or(u64::MAX, |n| n.max(pr.done_upto + checkpoint_every()));
                return Ok(false);
            };
        let h = self.header.as_ref().expect("header seen");
        let limit = match next {
            None => high,
            Some(n) => high
                .max(n)
                .max(pr.done_upto + checkpoint_every())
                .min(h.size),
        };
        let tok = resume::Token {
            header: pr.header,
            chain,
            high: limit,
            bounds,
            base: h.base.clone(),
            snapshot: h.snapshot.clone(),
        };
        let tag = tok.to_tag();
        if pr.tag.as_deref() != Some(tag.as_str()) {
            let mut cmd = lvm("lvchange").arg("--addtag").arg(&tag);
            if let Some(old) = &pr.tag {
                cmd = cmd.arg("--deltag").arg(old);
            }
            cmd.arg(format!("{}/{}", self.vg, self.rlv))
                .run()
                .ctx("record the verified progress")?;
            pr.tag = Some(tag);
        }
        pr.limit = limit;
        tracing::debug!(volume = %self.vol.role, verified = pr.done_upto, high = limit, "checkpoint");
        Ok(true)
    }

    fn on_event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Header(h) => self.prepare(&h)?,
            Event::Write { offset, len } => {
                self.in_order(offset)?;
                self.before_write(offset + len as u64)?;
                self.watch.as_mut().expect("opened on the header").charge(
                    self.dev.as_ref(),
                    offset,
                    len as u64,
                )?;
                self.hash.begin_write(offset, len);
                self.records.push(Written {
                    offset,
                    len: len as u64,
                    data: true,
                });
                self.progress.pending = len as u64;
            }
            Event::Data { offset, data } => {
                self.hash.more(data);
                self.dev
                    .as_ref()
                    .expect("opened on the header")
                    .write_all_at(data, offset)
                    .ctx(format!("write the replica at {offset}"))?;
                self.progress.pending -= data.len() as u64;
                if self.progress.pending == 0 {
                    self.record_done(offset + data.len() as u64);
                }
            }
            Event::Zero { offset, len } => {
                self.in_order(offset)?;
                self.before_write(offset + len)?;
                self.hash.zero(offset, len);
                self.records.push(Written {
                    offset,
                    len,
                    data: false,
                });
                let dev = self.dev.as_ref().expect("opened");
                let watch = self.watch.as_mut().expect("opened");
                zero_range(dev, offset, len, &mut |o, l| watch.charge(Some(dev), o, l))?;
                self.record_done(offset + len);
            }
            Event::End { data_bytes, hash } => self.end = Some((data_bytes, hash)),
        }
        // A batch of complete records: read back behind the stream, on the
        // read-back thread, while the next ones arrive.
        let complete = self.records.len() - usize::from(self.progress.pending > 0);
        let bytes: u64 = self.records[..complete].iter().map(|w| w.len).sum();
        if readback::batch().is_some_and(|b| bytes >= b) {
            if self.behind.is_none() {
                let dev = self.dev.as_ref().expect("opened on the header");
                let dev = dev.try_clone().ctx("open the replica again")?;
                let hash = std::mem::take(&mut self.progress.readback);
                self.behind = Some(readback::ReadBehind::start(dev, hash)?);
            }
            let batch = self
                .records
                .drain(..complete)
                .map(|w| Extent {
                    offset: w.offset,
                    len: w.len,
                    data: w.data,
                })
                .collect();
            self.behind.as_ref().expect("started").push(batch);
        }
        Ok(())
    }

    fn finish(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let (data_bytes, hash) = self
            .end
            .ok_or_else(|| Error::protocol("the LVM stream ended before its end record"))?;
        if data_bytes != self.hash.data_bytes || hash != self.hash.finish() {
            return Err(Error::integrity(format!(
                "LVM stream end record does not match its records ({data_bytes} bytes announced, {} received)",
                self.hash.data_bytes
            )));
        }
        self.read_back(self.records.len())?;
        if self.progress.readback.finish() != hash {
            return Err(Error::integrity(format!(
                "{}: what was written does not read back as the stream's data",
                self.replica()
            )));
        }
        self.dev = None;
        // The resume tag goes before the snapshot is taken: a snapshot
        // never carries it.
        if let Some(tag) = self.progress.tag.take() {
            lvm("lvchange")
                .arg("--deltag")
                .arg(&tag)
                .arg(self.replica())
                .run()?;
        }
        let h = self.header.as_ref().expect("header seen");
        let id = h.storage_id.clone();
        record(id.clone())?;
        let mut cmd = lvm("lvcreate")
            .args(["-y", "-s", "-pr", "-n"])
            .arg(snap_lv(&self.rlv, &self.name))
            .args(["--addtag", TAG, "--addtag"])
            .arg(format!("{SET_TAG}{}", self.name));
        if let Some(id) = &id {
            cmd = cmd.arg("--addtag").arg(format!("{FROM_TAG}{id}"));
        }
        cmd.arg(self.replica()).run()?;
        self.touched = false;
        Ok(id)
    }

    /// Put the replica back as it was before this receive, releasing every
    /// pool block the receive allocated: remove it, then recreate it from
    /// its newest snapshot (a thin snapshot: no data moves), or as the empty
    /// LV it was when it had none.
    fn release(&mut self) {
        if !self.touched {
            return;
        }
        self.touched = false;
        self.behind = None;
        self.dev = None;
        let res = (|| -> Result<()> {
            let all = vg_lvs(&self.vg)?.unwrap_or_default();
            if find(&all, &self.rlv).is_some_and(|r| r.has_tag(REPLICA_TAG)) {
                remove_lv(&self.vg, &self.rlv)?;
            }
            let tags = ["--addtag", TAG, "--addtag", REPLICA_TAG];
            match (snapshots_of(&all, &self.rlv).last(), &self.before) {
                (Some(newest), _) => lvm("lvcreate")
                    .args(["-y", "-s", "-kn", "-prw", "-n", &self.rlv])
                    .args(tags)
                    .arg(format!("{}/{}", self.vg, snap_lv(&self.rlv, newest)))
                    .run(),
                (None, Some((size, pool))) => lvm("lvcreate")
                    .args(["-y", "-V"])
                    .arg(format!("{size}b"))
                    .arg("-T")
                    .arg(format!("{}/{pool}", self.vg))
                    .args(["-n", &self.rlv])
                    .args(tags)
                    .run(),
                (None, None) => Ok(()),
            }
        })();
        match res {
            Ok(()) => tracing::info!(volume = %self.vol.role, "rejected receive released"),
            Err(e) => {
                tracing::error!(volume = %self.vol.role, error = %e, "could not release a rejected receive")
            }
        }
    }
}

/// Open a block device; returns it with its size in bytes.
fn open_sized(p: &Path, write: bool) -> Result<(File, u64)> {
    use std::io::Seek;
    let mut f = OpenOptions::new()
        .read(true)
        .write(write)
        .open(p)
        .ctx(format!("open {}", p.display()))?;
    let n = f
        .seek(io::SeekFrom::End(0))
        .ctx(format!("size of {}", p.display()))?;
    Ok((f, n))
}

/// Make `len` bytes at `offset` read as zeros: discard (thin unmaps whole
/// blocks), then check, and write zeros where the discard did not take.
fn zero_range(
    dev: &File,
    offset: u64,
    len: u64,
    charge: &mut dyn FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let range: [u64; 2] = [offset, len];
    // BLKDISCARD = _IO(0x12, 119); a failure just means "write zeros".
    let _ = unsafe { nix::libc::ioctl(dev.as_raw_fd(), 0x1277 as _, range.as_ptr()) };
    let mut buf = Vec::new();
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(format::MAX_WRITE);
        buf.resize(n as usize, 0);
        dev.read_exact_at(&mut buf, at).ctx("read the replica")?;
        if buf.iter().any(|b| *b != 0) {
            charge(at, n)?;
            buf.fill(0);
            dev.write_all_at(&buf, at).ctx("zero the replica")?;
        }
        at += n;
    }
    Ok(())
}

impl Write for LvmSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io_of(e));
        }
        let mut dec = std::mem::take(&mut self.decoder);
        let mut err: Option<Error> = None;
        let r = dec.feed(buf, &mut |ev| {
            self.on_event(ev).map_err(|e| {
                let io = io_of(&e);
                err = Some(e);
                io
            })
        });
        self.decoder = dec;
        match r {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                // `commit` names the volume.
                self.failed =
                    Some(err.unwrap_or_else(|| Error::protocol(format!("bad LVM stream: {e}"))));
                Err(e)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for LvmSink {
    fn commit(
        mut self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        let ctx = self.ctx();
        let r = self.finish(record).ctx(ctx);
        if r.is_err() {
            self.release();
        }
        r
    }
    fn abort(mut self: Box<Self>) {
        self.release();
    }
    /// A cut stream: what arrived complete and reads back right stays, as
    /// verified progress the next ship continues from (`resumable`).
    fn cut(mut self: Box<Self>) {
        if self.failed.is_some() || self.header.is_none() || !self.touched || self.dev.is_none() {
            return self.release();
        }
        match self.checkpoint(None) {
            Ok(true) => {
                self.touched = false;
                self.dev = None;
                tracing::info!(
                    volume = %self.vol.role,
                    verified = self.progress.done_upto,
                    "cut receive kept for resuming"
                );
            }
            Ok(false) => self.release(),
            Err(e) => {
                tracing::warn!(volume = %self.vol.role, error = %e, "cut receive not kept");
                self.release()
            }
        }
    }
}

impl Drop for LvmSink {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(begin: u64, length: u64) -> BlockRange {
        BlockRange { begin, length }
    }

    #[test]
    fn delta_becomes_byte_extents() {
        let d = Delta {
            block_size: 65536,
            ranges: vec![
                (DeltaKind::Same, r(0, 16)),
                (DeltaKind::Different, r(16, 16)),
                (DeltaKind::RightOnly, r(32, 2)),
                (DeltaKind::LeftOnly, r(48, 4)),
                (DeltaKind::RightOnly, r(1023, 4)), // past the end: clamped
            ],
        };
        let e = delta_extents(&d, 64 << 20);
        assert_eq!(
            e,
            vec![
                Extent {
                    offset: 1 << 20,
                    len: (1 << 20) + 2 * 65536,
                    data: true
                },
                Extent {
                    offset: 3 << 20,
                    len: 4 * 65536,
                    data: false
                },
                Extent {
                    offset: 1023 * 65536,
                    len: 65536,
                    data: true
                },
            ]
        );
    }

    #[test]
    fn snapshots_are_named_and_tagged() {
        let mk = |name: &str, tags: &[&str]| LvInfo {
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        };
        let all = vec![
            mk(
                "data.20261127T090000.456Z-full",
                &["snapsite", "snapsite-set-20261127T090000.456Z-full"],
            ),
            mk(
                "data.20261127T080000.123Z-full",
                &["snapsite", "snapsite-set-20261127T080000.123Z-full"],
            ),
            // not tagged: someone's LV with a lookalike name
            mk("data.20261127T070000.000Z-full", &[]),
            mk("data", &["snapsite", "snapsite-replica"]),
            mk(
                "data2.20261127T080000.123Z-full",
                &["snapsite-set-20261127T080000.123Z-full"],
            ),
        ];
        assert_eq!(
            snapshots_of(&all, "data"),
            vec!["20261127T080000.123Z-full", "20261127T090000.456Z-full"]
        );
        assert!(check_uuid("aWuivk-zyKd-8Tko-IYJJ-eeA3-f2gg-z1NQXu").is_ok());
        assert!(check_uuid("x,snapsite-replica").is_err());
    }

    #[test]
    fn chain_is_the_replica_and_the_live_source() {
        let mk = |name: &str| {
            let id = name.split_once('.').map(|x| x.1).unwrap_or("");
            LvInfo {
                name: name.into(),
                tags: vec!["snapsite".into(), format!("{SET_TAG}{id}")],
                ..Default::default()
            }
        };
        let s1 = "20261127T080000.000Z-full";
        let s2 = "20261127T090000.000Z-full";
        let s3 = "20261127T100000.000Z-full";
        let mut all = vec![
            mk(&format!("rep.{s1}")),
            mk(&format!("rep.{s2}")),
            mk(&format!("live.{s3}")),
            // a divergent LV's sets are nobody's
            mk(&format!("live-divergent-x.{s3}")),
        ];
        // no live LV: only the replica's (a set of a removed LV is not listed)
        assert_eq!(chain_of(&all, "rep", "live"), vec![s1, s2]);
        all.push(mk("live"));
        assert_eq!(chain_of(&all, "rep", "live"), vec![s1, s2, s3]);
        // a primary without replica: home == source
        assert_eq!(chain_of(&all, "live", "live"), vec![s3]);
    }
}

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

#[cfg(test)]
mod suspended_tests {
    use super::*;

    #[test]
    fn only_suspended_lvm_devices_of_the_vg() {
        // the shape of `dmsetup info -c --noheadings --separator '\t'
        // -o name,suspended,uuid`; the real output is exercised by the VM
        // test lvm::lvm_a_snapshot_killed_mid_lvcreate_...
        let out = "vg--a-mysql\tSuspended\tLVM-abc\n\
                   vg--a-pool-tpool\tSuspended\tLVM-abc-tpool\n\
                   vg--a-blob\tActive\tLVM-abd\n\
                   vg--ab-x\tSuspended\tLVM-zzz\n\
                   vg--a-crypt\tSuspended\tCRYPT-LUKS2-1\n";
        assert_eq!(
            parse_suspended(out, "vg-a"),
            ["vg--a-mysql", "vg--a-pool-tpool"]
        );
        assert_eq!(dm_prefix("vg-a"), "vg--a-");
        assert!(parse_suspended(out, "other").is_empty());
    }
}
