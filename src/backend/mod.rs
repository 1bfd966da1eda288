//! The storage backends behind one trait. Replication logic only sees a
//! `SnapshotSource` (a byte stream out of a snapshot) and a `SnapshotSink`
//! (a byte stream into a new snapshot that is kept only if `commit` is called).

pub mod btrfs;
pub mod btrfs_vet;
pub mod holds;
pub mod lvm;
pub mod mem;
mod process;
pub mod zfs;
pub use process::{ProcessSink, ProcessSource, ReceiveSteps};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Stdio};

use crate::base::cmd::{Cmd, Running};

use crate::base::config::{BackendKind, Volume};
use crate::base::error::{Context, Error, Result};

/// A stream of one snapshot's data, produced by the backend (`btrfs send`...).
pub trait SnapshotSource: Read + Send {
    /// Called after EOF: checks that the producer exited cleanly.
    fn finish(self: Box<Self>) -> Result<()>;
    /// Stop producing (on an error elsewhere).
    fn abort(self: Box<Self>);
}

/// What [`Backend::send`] and its kin return.
pub type BoxedSource = Box<dyn SnapshotSource>;

/// What [`Backend::receive`] returns.
pub type BoxedSink = Box<dyn SnapshotSink>;

/// Consumes one snapshot's data. Nothing it wrote may survive unless
/// `commit` returns Ok.
pub trait SnapshotSink: Write + Send {
    /// End of data: wait for the backend and verify what it made; then
    /// `record` (the caller's receipt, given the storage id) runs, and only
    /// if it succeeds is the snapshot marked complete. On any error nothing
    /// remains. Returns the storage id of the received snapshot.
    fn commit(
        self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>>;
    /// Throw away everything this receive created.
    fn abort(self: Box<Self>);
    /// What the base of an incremental maps in this site's thin pool
    /// (LVM thin; `None` elsewhere): the ransomware signals check the
    /// sender's "overwritten" list against it (issue 31).
    fn base_map(&self) -> Option<Result<ThinMap>> {
        None
    }
    /// The stream was cut (connection lost): backends that can resume keep
    /// their partial state for `send_resume`; others discard like `abort`.
    fn cut(self: Box<Self>) {
        self.abort()
    }
}

/// What a stream about to be received is: the four facts every backend's
/// [`Backend::receive`] checks before it writes a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receive<'a> {
    /// The snapshot the stream makes.
    pub name: &'a str,
    /// The snapshot it is incremental on (`None`: a full stream).
    pub base: Option<&'a str>,
    /// The sender's storage id, checked against what arrives where the
    /// storage records it (btrfs received uuid, ZFS guid).
    pub expect_id: Option<&'a str>,
    /// The stream continues a cut receive of `name`; otherwise any partial
    /// state is discarded first.
    pub resume: bool,
}

/// A partial receive the standby can resume (ZFS `receive_resume_token`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resumable {
    /// The snapshot whose receive was cut, when the receiver knows it (the
    /// sender checks the token against its snapshot either way).
    pub snapshot: Option<String>,
    pub token: String,
}

/// One volume's part of a [`Listing`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VolumeListing {
    /// Complete snapsite snapshots, oldest first (what `list` says).
    pub snapshots: Vec<String>,
    /// Storage ids (ZFS guid, LVM sender uuid) of snapshots, where the
    /// listing shows them; a snapshot missing here is asked for alone.
    pub ids: BTreeMap<String, String>,
    /// A cut receive this site could resume.
    pub resumable: Option<Resumable>,
}

/// What this site's storage holds, per role, from one listing per pool /
/// volume group / filesystem ([`Stores::listing`]). A ship takes one per
/// side and every step reuses it: the local lists, the standby's
/// inventory, storage ids, resume tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listing {
    pub volumes: BTreeMap<String, VolumeListing>,
}

impl Listing {
    /// Per role, the snapshots, oldest first.
    pub fn snapshots(&self) -> BTreeMap<String, Vec<String>> {
        self.volumes
            .iter()
            .map(|(r, v)| (r.clone(), v.snapshots.clone()))
            .collect()
    }
    pub fn get(&self, role: &str) -> Option<&VolumeListing> {
        self.volumes.get(role)
    }
    /// The storage id of `name` of `role`, when the listing showed it.
    pub fn storage_id(&self, role: &str, name: &str) -> Option<&str> {
        self.get(role)?.ids.get(name).map(String::as_str)
    }
}

/// What `copy_prerequisites` found: what it checked (for the plan) and,
/// when the copy could not be made or used, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCheck {
    pub checked: String,
    pub problem: Option<String>,
}

/// The byte ranges (offset, length) a thin device maps, in order, and its
/// pool's block size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinMap {
    pub block_size: u64,
    pub ranges: Vec<(u64, u64)>,
}

pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Check tools and the volume; returns notes (warnings) for `check`.
    fn probe(&self, vol: &Volume, primary: bool) -> Result<Vec<String>>;

    /// A storage condition under which failover could not make its writable
    /// copy of this volume, or a receive would be refused (a thin pool or a
    /// ZFS pool nearly full). `None` when there is room. `check` reports it;
    /// `failover --dry-run` should too.
    fn capacity_problem(&self, _vol: &Volume) -> Result<Option<String>> {
        Ok(None)
    }

    /// A receive cut and kept for resuming ("parked"): what it holds and
    /// how full its pool is, for `check` and `failover --dry-run`. `None`
    /// when there is none.
    fn parked_receive(&self, _vol: &Volume) -> Result<Option<String>> {
        Ok(None)
    }

    /// Discard a parked receive, returning the space it holds to the pool
    /// (failover does so before its own writes: the primary it waited for
    /// is gone). What was released, for the report; `None`: nothing parked.
    fn release_parked(&self, _vol: &Volume) -> Result<Option<String>> {
        Ok(None)
    }

    /// Remove snapshot `name`, the replica's newest, that a receive
    /// completed after its session died (never verified, no receipt), so
    /// that the replica is as it was before that receive. Default: destroy
    /// it (LVM recreates the replica on every receive anyway).
    fn discard_unverified(&self, vol: &Volume, name: &str) -> Result<()> {
        self.destroy(vol, name)
    }

    /// What a writable copy of snapshot `name` needs beyond the snapshot
    /// itself, checked without changing anything (ZFS: an encrypted
    /// replica's key loaded). `None`: nothing to check for this backend.
    /// `failover --dry-run` shows it and refuses on a problem.
    fn copy_prerequisites(&self, _vol: &Volume, _name: &str) -> Result<Option<CopyCheck>> {
        Ok(None)
    }

    /// Volumes with equal keys can be snapshotted together atomically in one
    /// `snapshot` call. `None`: one at a time.
    fn atomic_key(&self, _vol: &Volume) -> Option<String> {
        None
    }

    /// Snapshot every volume in `vols` under `name`; atomically across them
    /// when they share an atomic key. On error nothing new remains.
    fn snapshot(&self, vols: &[&Volume], name: &str) -> Result<()>;

    /// The storage's own id of a snapshot (btrfs uuid, ZFS guid).
    fn storage_id(&self, vol: &Volume, name: &str) -> Result<Option<String>>;

    /// Complete snapsite snapshots of the volume on this site, oldest first.
    fn list(&self, vol: &Volume) -> Result<Vec<String>>;

    /// Which of `names` are complete snapsite snapshots of the volume here
    /// (each as `list` would say): a listing filtered to the names a
    /// command acts on. The default lists the whole volume (ZFS and LVM
    /// thin, for now); btrfs looks at the named subvolumes only.
    fn present(&self, vol: &Volume, names: &[&str]) -> Result<Vec<bool>> {
        let all = self.list(vol)?;
        Ok(names.iter().map(|n| all.iter().any(|s| s == n)).collect())
    }

    /// Whether [`Backend::present`] lists the volume to answer (the
    /// default's way): then volumes sharing a [`Backend::listing_key`] are
    /// better answered from one listing of them all
    /// ([`Stores::present_all`]). btrfs looks at the named ones only.
    fn present_by_listing(&self) -> bool {
        true
    }

    /// Volumes whose listings one storage command gives share a key (ZFS:
    /// every dataset, one `zfs list` takes them all; LVM: the volume
    /// group). `None`: the volume is listed on its own.
    fn listing_key(&self, _vol: &Volume) -> Option<String> {
        None
    }

    /// What this site holds of each of `vols` (all of this backend, with
    /// equal [`Backend::listing_key`]s), in as few storage commands as the
    /// storage allows: the snapshots (as `list`), the storage ids the
    /// listing shows, and a cut receive to resume (as `resumable`).
    fn list_batch(&self, vols: &[&Volume]) -> Result<Vec<VolumeListing>> {
        vols.iter()
            .map(|v| {
                Ok(VolumeListing {
                    snapshots: self.list(v)?,
                    ids: BTreeMap::new(),
                    resumable: self.resumable(v)?,
                })
            })
            .collect()
    }

    /// As [`Backend::list_batch`], each volume's snapshots (and storage
    /// ids) only from `from` on (by name; its entry per volume, None: all):
    /// a listing filtered to the names a command needs. The default
    /// filters the whole listing (ZFS and LVM thin, for now); btrfs looks
    /// only at the names from there on.
    fn list_batch_from(
        &self,
        vols: &[&Volume],
        from: &[Option<&str>],
    ) -> Result<Vec<VolumeListing>> {
        let mut out = self.list_batch(vols)?;
        for (l, f) in out.iter_mut().zip(from) {
            if let Some(f) = f {
                l.snapshots.retain(|s| s.as_str() >= *f);
                l.ids.retain(|s, _| s.as_str() >= *f);
            }
        }
        Ok(out)
    }

    fn send(&self, vol: &Volume, name: &str, base: Option<&str>) -> Result<BoxedSource>;

    /// Continue a cut send of snapshot `name` from the receiver's resume
    /// token; an error when the token is stale or names another snapshot.
    fn send_resume(&self, vol: &Volume, _name: &str, _token: &str) -> Result<BoxedSource> {
        Err(Error::storage(format!(
            "volume `{}`: {} cannot resume a transfer",
            vol.role,
            self.kind().as_str()
        )))
    }

    /// Receive the stream `r` describes into `vol` (see [`Receive`]).
    fn receive(&self, vol: &Volume, r: Receive<'_>) -> Result<BoxedSink>;

    /// A cut receive this site could resume, if any.
    fn resumable(&self, _vol: &Volume) -> Result<Option<Resumable>> {
        Ok(None)
    }

    /// Find and remove leftovers of interrupted receives. Returns what was removed.
    fn cleanup_partial(&self, vol: &Volume) -> Result<Vec<String>>;

    /// Receives killed after they were verified and their receipt written
    /// but before the backend marked them complete: keep each one that is
    /// exactly what its receipt (`receipt(name)`) says, rather than remove
    /// it and receive it again. Returns the names kept. Serve calls this
    /// before [`Backend::cleanup_partial`].
    fn adopt_verified(
        &self,
        _vol: &Volume,
        _receipt: &dyn Fn(&str) -> Option<crate::base::model::Receipt>,
    ) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Undo what a snapshot interrupted on this site left behind besides
    /// the snapshot itself (LVM: devices a killed `lvcreate` left
    /// suspended, which would block the application's I/O). Called before
    /// an interrupted set's snapshots are destroyed. Returns what it did.
    fn recover_interrupted(&self, _vol: &Volume) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn destroy(&self, vol: &Volume, name: &str) -> Result<()>;

    /// Make a writable copy of snapshot `name` (the snapshot stays pristine)
    /// at the volume's live location; returns the path holding the data.
    fn writable_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf>;

    /// Where the data of the writable copy is reachable as a directory.
    fn writable_copy_path(&self, vol: &Volume) -> Result<PathBuf>;

    /// Does a writable copy already exist at the live location?
    fn writable_copy_exists(&self, vol: &Volume) -> Result<bool>;

    /// Remove a writable copy made by `writable_copy` (failover rollback).
    fn remove_writable_copy(&self, vol: &Volume) -> Result<()>;

    /// Where a rehearsal's writable clone of this volume lives (scratch,
    /// never the live location or mountpoint); a directory once made.
    fn rehearsal_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        Err(Error::storage(format!(
            "volume `{}`: rehearsal is not supported on {} yet",
            vol.role,
            self.kind().as_str()
        )))
    }

    /// Make the rehearsal's writable clone of snapshot `name` (the snapshot
    /// stays pristine); returns the directory holding its data.
    fn rehearsal_copy(&self, vol: &Volume, _name: &str) -> Result<PathBuf> {
        self.rehearsal_copy_path(vol)
    }

    /// Remove the rehearsal's clone (idempotent: nothing there is fine).
    fn remove_rehearsal_copy(&self, _vol: &Volume) -> Result<()> {
        Ok(())
    }

    /// Keep this site's live data (`source`) as a read-only "divergent"
    /// snapshot named `divergent-<label>`, outside the set namespace (never
    /// listed, shipped or pruned); returns where it is. Used when this site
    /// stops being primary: what it wrote after the common base is kept.
    fn keep_divergent(&self, vol: &Volume, _label: &str) -> Result<String> {
        Err(Error::storage(format!(
            "volume `{}`: keeping divergent data is not supported on {} yet",
            vol.role,
            self.kind().as_str()
        )))
    }

    /// Mount the divergent data kept at `at` (what [`Self::keep_divergent`]
    /// returned) again when it is meant to be mounted and is not: after a
    /// reboot, a demote's rerun finds the mount gone (/run is empty).
    /// Backends whose divergent data is never mounted have nothing to do.
    fn remount_divergent(&self, _vol: &Volume, _at: &str) -> Result<()> {
        Ok(())
    }

    /// Where the divergent data kept at `at` is mounted: `Some((mounted,
    /// mountpoint))` for backends that mount it (ZFS: read-only at a
    /// mountpoint under /run, which a reboot leaves unmounted), `None`
    /// for those whose divergent data is a snapshot or LV never mounted.
    fn divergent_mount(&self, _vol: &Volume, _at: &str) -> Result<Option<(bool, String)>> {
        Ok(None)
    }

    /// Prepare snapshot `name`, taken on this site, to be the base of
    /// incremental receives from the peer (after a failback or switchover
    /// turns the direction around). btrfs: see `Btrfs::make_receivable`.
    fn make_receivable(&self, _vol: &Volume, _name: &str) -> Result<()> {
        Ok(())
    }

    /// The divergent snapshots kept here, oldest first.
    fn divergent(&self, _vol: &Volume) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// `follow`: this standby's received snapshots newer than `base` are
    /// history its new upstream never had. Keep them, never destroyed, out
    /// of the set namespace (not listed, shipped or pruned as sets) under a
    /// name with `divergent-<label>`, so that the upstream's next ship is
    /// incremental from `base`. Idempotent (a rerun finds what it moved);
    /// returns where each one is now.
    fn set_aside_newer(&self, vol: &Volume, base: &str, _label: &str) -> Result<Vec<String>> {
        let newer: Vec<String> = self
            .list(vol)?
            .into_iter()
            .filter(|n| n.as_str() > base)
            .collect();
        if newer.is_empty() {
            return Ok(newer);
        }
        Err(set_aside_unsupported(vol, self.kind(), base, &newer))
    }

    /// Does [`Backend::set_aside_newer`] keep snapshots aside here (or
    /// only accept a volume with nothing beyond the base)? `follow` asks
    /// before it records its plan.
    fn can_set_aside(&self) -> bool {
        false
    }

    /// Protect snapshot `name` as the common snapshot of one holder (ZFS:
    /// a hold named `tag`, which no `zfs destroy`, by snapsite or by hand,
    /// gets past; LVM: an LV tag `tag`, shown by `lvs -o+lv_tags`); move
    /// `tag` off every other snapsite snapshot of the volume. Tags are
    /// [`holds::common_tag`]s: one per standby on a primary.
    fn protect_common(&self, _vol: &Volume, _name: &str, _tag: &str) -> Result<()> {
        Ok(())
    }

    /// `protect_common` of several volumes (with equal
    /// [`Backend::listing_key`]s), in as few commands as the storage allows.
    fn protect_common_batch(&self, items: &[(&Volume, &str)], tag: &str) -> Result<()> {
        for (v, name) in items {
            self.protect_common(v, name, tag)?;
        }
        Ok(())
    }

    /// The common-snapshot holds / tags on the volume's snapshots:
    /// (storage name of the snapshot, tag), tags of [`holds::is_common_tag`].
    fn common_holds(&self, _vol: &Volume) -> Result<Vec<(String, String)>> {
        Ok(Vec::new())
    }

    /// Release `tag` from every snapshot of the volume (a standby removed
    /// from the config, or the shared tag of an older version); returns the
    /// storage names released. Idempotent.
    fn release_common(&self, _vol: &Volume, _tag: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// The backend implementation for a volume's kind.
pub fn implementation(vol: &Volume) -> Box<dyn Backend> {
    match vol.backend() {
        BackendKind::Btrfs => Box::new(btrfs::Btrfs),
        BackendKind::Zfs => Box::new(zfs::Zfs),
        BackendKind::Lvm => Box::new(lvm::Lvm),
    }
}

/// Open a volume's storage: its backend, bound to its address.
pub fn open(vol: &Volume) -> Store {
    Store::bind(vol.clone(), implementation(vol))
}

/// One volume's storage: a backend bound to the volume's address. Every
/// storage operation of replication, prune, status and failover goes
/// through a `Store`; none of them names the volume again.
pub struct Store {
    vol: Volume,
    imp: Box<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("role", &self.vol.role)
            .field("kind", &self.imp.kind())
            .finish()
    }
}

impl Store {
    /// Bind an implementation (a real backend, or [`mem::MemStore`]'s in
    /// tests) to a volume.
    pub fn bind(vol: Volume, imp: Box<dyn Backend>) -> Store {
        Store { vol, imp }
    }
    pub fn volume(&self) -> &Volume {
        &self.vol
    }
    pub fn role(&self) -> &str {
        &self.vol.role
    }
    pub fn kind(&self) -> BackendKind {
        self.imp.kind()
    }
    pub fn probe(&self, primary: bool) -> Result<Vec<String>> {
        self.imp.probe(&self.vol, primary)
    }
    pub fn capacity_problem(&self) -> Result<Option<String>> {
        self.imp.capacity_problem(&self.vol)
    }
    /// Stores with equal keys can be snapshotted together atomically by
    /// [`snapshot_together`]. `None`: one at a time.
    pub fn discard_unverified(&self, name: &str) -> Result<()> {
        self.imp.discard_unverified(&self.vol, name)
    }
    pub fn parked_receive(&self) -> Result<Option<String>> {
        self.imp.parked_receive(&self.vol)
    }
    pub fn release_parked(&self) -> Result<Option<String>> {
        self.imp.release_parked(&self.vol)
    }
    pub fn copy_prerequisites(&self, name: &str) -> Result<Option<CopyCheck>> {
        self.imp.copy_prerequisites(&self.vol, name)
    }
    pub fn atomic_key(&self) -> Option<String> {
        self.imp
            .atomic_key(&self.vol)
            .map(|k| format!("{}:{k}", self.kind().as_str()))
    }
    pub fn snapshot(&self, name: &str) -> Result<()> {
        self.imp.snapshot(&[&self.vol], name)
    }
    pub fn storage_id(&self, name: &str) -> Result<Option<String>> {
        self.imp.storage_id(&self.vol, name)
    }
    /// Which of `names` are here (see [`Backend::present`]).
    pub fn present(&self, names: &[&str]) -> Result<Vec<bool>> {
        self.imp.present(&self.vol, names)
    }
    pub fn list(&self) -> Result<Vec<String>> {
        self.imp.list(&self.vol)
    }
    /// This volume alone: what [`Stores::listing`] says of it.
    pub fn listing(&self) -> Result<VolumeListing> {
        let mut v = self.imp.list_batch(&[&self.vol])?;
        v.pop()
            .ok_or_else(|| Error::storage(format!("volume `{}`: empty listing", self.role())))
    }
    pub fn send(&self, name: &str, base: Option<&str>) -> Result<BoxedSource> {
        self.imp.send(&self.vol, name, base)
    }
    pub fn send_resume(&self, name: &str, token: &str) -> Result<BoxedSource> {
        self.imp.send_resume(&self.vol, name, token)
    }
    pub fn receive(&self, r: Receive<'_>) -> Result<BoxedSink> {
        self.imp.receive(&self.vol, r)
    }
    pub fn resumable(&self) -> Result<Option<Resumable>> {
        self.imp.resumable(&self.vol)
    }
    pub fn cleanup_partial(&self) -> Result<Vec<String>> {
        self.imp.cleanup_partial(&self.vol)
    }
    pub fn adopt_verified(
        &self,
        receipt: &dyn Fn(&str) -> Option<crate::base::model::Receipt>,
    ) -> Result<Vec<String>> {
        self.imp.adopt_verified(&self.vol, receipt)
    }
    pub fn recover_interrupted(&self) -> Result<Vec<String>> {
        self.imp.recover_interrupted(&self.vol)
    }
    pub fn destroy(&self, name: &str) -> Result<()> {
        self.imp.destroy(&self.vol, name)
    }
    pub fn writable_copy(&self, name: &str) -> Result<PathBuf> {
        self.imp.writable_copy(&self.vol, name)
    }
    pub fn writable_copy_path(&self) -> Result<PathBuf> {
        self.imp.writable_copy_path(&self.vol)
    }
    pub fn writable_copy_exists(&self) -> Result<bool> {
        self.imp.writable_copy_exists(&self.vol)
    }
    pub fn remove_writable_copy(&self) -> Result<()> {
        self.imp.remove_writable_copy(&self.vol)
    }
    pub fn rehearsal_copy_path(&self) -> Result<PathBuf> {
        self.imp.rehearsal_copy_path(&self.vol)
    }
    pub fn rehearsal_copy(&self, name: &str) -> Result<PathBuf> {
        self.imp.rehearsal_copy(&self.vol, name)
    }
    pub fn remove_rehearsal_copy(&self) -> Result<()> {
        self.imp.remove_rehearsal_copy(&self.vol)
    }
    pub fn keep_divergent(&self, label: &str) -> Result<String> {
        self.imp.keep_divergent(&self.vol, label)
    }
    pub fn make_receivable(&self, name: &str) -> Result<()> {
        self.imp.make_receivable(&self.vol, name)
    }
    pub fn remount_divergent(&self, at: &str) -> Result<()> {
        self.imp.remount_divergent(&self.vol, at)
    }
    pub fn divergent_mount(&self, at: &str) -> Result<Option<(bool, String)>> {
        self.imp.divergent_mount(&self.vol, at)
    }
    pub fn divergent(&self) -> Result<Vec<String>> {
        self.imp.divergent(&self.vol)
    }
    pub fn set_aside_newer(&self, base: &str, label: &str) -> Result<Vec<String>> {
        self.imp.set_aside_newer(&self.vol, base, label)
    }
    pub fn can_set_aside(&self) -> bool {
        self.imp.can_set_aside()
    }
}

/// Snapshot every store under `name` in one backend call, atomically when
/// they share an [`Store::atomic_key`]; on error nothing new remains.
pub fn snapshot_together(stores: &[&Store], name: &str) -> Result<()> {
    let Some(first) = stores.first() else {
        return Ok(());
    };
    if let Some(other) = stores.iter().find(|s| s.kind() != first.kind()) {
        return Err(Error::config(format!(
            "volumes `{}` ({}) and `{}` ({}) cannot be snapshotted in one call",
            first.role(),
            first.kind().as_str(),
            other.role(),
            other.kind().as_str()
        )));
    }
    let vols: Vec<&Volume> = stores.iter().map(|s| &s.vol).collect();
    first.imp.snapshot(&vols, name)
}

/// A batch listing of `asked` volumes by `first`'s backend, checked to
/// hold one listing per volume (they are zipped with the volumes).
fn one_per_volume(
    first: &Store,
    asked: usize,
    got: Vec<VolumeListing>,
) -> Result<Vec<VolumeListing>> {
    if got.len() != asked {
        return Err(Error::storage(format!(
            "{} listing of {asked} volumes returned {}",
            first.kind().as_str(),
            got.len()
        )));
    }
    Ok(got)
}

/// Every configured volume's store, opened once, in snapshot order.
#[derive(Debug)]
pub struct Stores {
    stores: Vec<Store>,
}

impl Stores {
    pub fn open(cfg: &crate::base::config::Config) -> Stores {
        Stores {
            stores: cfg.volumes.iter().map(open).collect(),
        }
    }
    /// Stores bound to other implementations (tests: in-memory backends).
    pub fn from_stores(stores: Vec<Store>) -> Stores {
        Stores { stores }
    }
    /// The store of a configured role; an error names an unknown role.
    pub fn get(&self, role: &str) -> Result<&Store> {
        self.find(role)
            .ok_or_else(|| Error::config(format!("no volume has role `{role}` in this config")))
    }
    pub fn find(&self, role: &str) -> Option<&Store> {
        self.stores.iter().find(|s| s.role() == role)
    }
    pub fn iter(&self) -> impl Iterator<Item = &Store> {
        self.stores.iter()
    }

    /// `stores` in batches one backend call can serve: volumes of the same
    /// backend with equal [`Backend::listing_key`]s together, in order of
    /// first appearance; a volume without a key alone.
    fn batches<T>(items: Vec<(&Store, T)>) -> Vec<Vec<(&Store, T)>> {
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut groups: Vec<Vec<(&Store, T)>> = Vec::new();
        for (s, t) in items {
            let key = s
                .imp
                .listing_key(&s.vol)
                .map(|k| format!("{}:{k}", s.kind().as_str()));
            match keys.iter().position(|k| key.is_some() && *k == key) {
                Some(i) => groups[i].push((s, t)),
                None => {
                    keys.push(key);
                    groups.push(vec![(s, t)]);
                }
            }
        }
        groups
    }

    /// Which of the named snapshots of each role (`ask`) are complete
    /// snapshots here, each as [`Store::present`] says, in as few storage
    /// commands as [`Stores::listing`]: volumes that share a listing key
    /// and whose backend answers by listing
    /// ([`Backend::present_by_listing`]: ZFS, LVM thin) are answered from
    /// one listing of them all, the others volume by volume.
    pub fn present_all(
        &self,
        ask: &BTreeMap<&str, Vec<&str>>,
    ) -> Result<BTreeMap<String, Vec<bool>>> {
        let items = ask
            .iter()
            .map(|(role, names)| Ok((self.get(role)?, names)))
            .collect::<Result<Vec<_>>>()?;
        let mut out = BTreeMap::new();
        for g in Self::batches(items) {
            if g.len() > 1 && g[0].0.imp.present_by_listing() {
                let vols: Vec<&Volume> = g.iter().map(|(s, _)| &s.vol).collect();
                let got = one_per_volume(g[0].0, g.len(), g[0].0.imp.list_batch(&vols)?)?;
                for ((s, names), l) in g.iter().zip(got) {
                    let found = names
                        .iter()
                        .map(|n| l.snapshots.iter().any(|x| x == n))
                        .collect();
                    out.insert(s.role().to_string(), found);
                }
            } else {
                for (s, names) in g {
                    out.insert(s.role().to_string(), s.present(names)?);
                }
            }
        }
        Ok(out)
    }

    /// `protect_common` of snapshot `name` of each role in `items` under
    /// this site's own tag ([`holds::COMMON_TAG`]: a standby's side, and a
    /// primary's single unnamed `[standby]`).
    pub fn protect_common(&self, items: &[(&str, &str)]) -> Result<()> {
        self.protect_common_tagged(items, holds::COMMON_TAG)
    }

    /// `protect_common` of snapshot `name` of each role in `items` under
    /// `tag`, one batch per pool / volume group (as [`Stores::listing`]
    /// groups them).
    pub fn protect_common_tagged(&self, items: &[(&str, &str)], tag: &str) -> Result<()> {
        let items = items
            .iter()
            .map(|(role, name)| Ok((self.get(role)?, *name)))
            .collect::<Result<Vec<_>>>()?;
        for g in Self::batches(items) {
            let batch: Vec<(&Volume, &str)> = g.iter().map(|(s, n)| (&s.vol, *n)).collect();
            g[0].0.imp.protect_common_batch(&batch, tag)?;
        }
        Ok(())
    }

    /// What every volume's storage holds, from one listing per pool /
    /// volume group (volumes of the same backend with equal
    /// [`Backend::listing_key`]s are listed by one call of the first one's
    /// implementation); the others one by one.
    pub fn listing(&self) -> Result<Listing> {
        self.listing_from(&BTreeMap::new())
    }

    /// [`Stores::listing`] with each volume's snapshots only from its
    /// entry in `from` (role to snapshot name) on, by name (see
    /// [`Backend::list_batch_from`]); a volume without one whole.
    pub fn listing_from(&self, from: &BTreeMap<String, String>) -> Result<Listing> {
        let mut out = Listing::default();
        for g in Self::batches(self.stores.iter().map(|s| (s, ())).collect()) {
            let vols: Vec<&Volume> = g.iter().map(|(s, _)| &s.vol).collect();
            let starts: Vec<Option<&str>> = g
                .iter()
                .map(|(s, _)| from.get(s.role()).map(String::as_str))
                .collect();
            let got = if starts.iter().all(Option::is_none) {
                g[0].0.imp.list_batch(&vols)?
            } else {
                g[0].0.imp.list_batch_from(&vols, &starts)?
            };
            let got = one_per_volume(g[0].0, g.len(), got)?;
            for ((s, _), l) in g.iter().zip(got) {
                out.volumes.insert(s.role().to_string(), l);
            }
        }
        Ok(out)
    }
}

/// A divergent label (ZFS, LVM) becomes part of a dataset or LV name:
/// plain characters only, not starting with `.` or `-`.
pub(crate) fn check_label(label: &str) -> Result<()> {
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

/// The dataset / `vg/lv` a standby receives into: `replica` is required there.
/// `follow` on a backend that cannot set received snapshots aside, for a
/// volume holding `newer` beyond the common `base`.
pub fn set_aside_unsupported(
    vol: &Volume,
    kind: BackendKind,
    base: &str,
    newer: &[String],
) -> Error {
    Error::refused(format!(
        "volume `{}`: it holds {} snapshot(s) newer than the common base {base} ({}); setting them aside is not supported on {} yet; nothing was changed",
        vol.role,
        newer.len(),
        newer.join(", "),
        kind.as_str()
    ))
    .with_hint("re-seed this volume from the new primary, or move those snapshots away by hand and run this again")
}

pub fn require_replica(vol: &Volume, what: &str) -> Result<String> {
    vol.replica().ok_or_else(|| {
        Error::config(format!(
            "volume `{}`: a {} standby needs `replica` (the {what} received snapshots land in)",
            vol.role,
            vol.backend().as_str()
        ))
    })
}

#[cfg(test)]
mod tests;
