//! The storage backends behind one trait. Replication logic only sees a
//! `SnapshotSource` (a byte stream out of a snapshot) and a `SnapshotSink`
//! (a byte stream into a new snapshot that is kept only if `commit` is called).

pub mod btrfs;
pub mod lvm;
pub mod mem;
pub mod zfs;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{ChildStdout, Stdio};

use crate::cmd::{Cmd, Running};

use crate::config::{BackendKind, Volume};
use crate::error::{Error, Result};

/// A stream of one snapshot's data, produced by the backend (`btrfs send`...).
pub trait SnapshotSource: Read + Send {
    /// Called after EOF: checks that the producer exited cleanly.
    fn finish(self: Box<Self>) -> Result<()>;
    /// Stop producing (on an error elsewhere).
    fn abort(self: Box<Self>);
}

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
    /// The stream was cut (connection lost): backends that can resume keep
    /// their partial state for `send_resume`; others discard like `abort`.
    fn cut(self: Box<Self>) {
        self.abort()
    }
}

/// A partial receive the standby can resume (ZFS `receive_resume_token`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resumable {
    /// The snapshot whose receive was cut, when the receiver knows it (the
    /// sender checks the token against its snapshot either way).
    pub snapshot: Option<String>,
    pub token: String,
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

    fn send(&self, vol: &Volume, name: &str, base: Option<&str>)
    -> Result<Box<dyn SnapshotSource>>;

    /// Continue a cut send of snapshot `name` from the receiver's resume
    /// token; an error when the token is stale or names another snapshot.
    fn send_resume(
        &self,
        vol: &Volume,
        _name: &str,
        _token: &str,
    ) -> Result<Box<dyn SnapshotSource>> {
        Err(Error::storage(format!(
            "volume `{}`: {} cannot resume a transfer",
            vol.role,
            self.kind().as_str()
        )))
    }

    /// `expect_id`: the sender's storage id, checked against what arrives
    /// where the storage records it (btrfs received uuid, ZFS guid).
    /// `resume`: the stream continues a cut receive of `name`; otherwise
    /// any partial state is discarded first.
    fn receive(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
        expect_id: Option<&str>,
        resume: bool,
    ) -> Result<Box<dyn SnapshotSink>>;

    /// A cut receive this site could resume, if any.
    fn resumable(&self, _vol: &Volume) -> Result<Option<Resumable>> {
        Ok(None)
    }

    /// Find and remove leftovers of interrupted receives. Returns what was removed.
    fn cleanup_partial(&self, vol: &Volume) -> Result<Vec<String>>;

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

    /// Protect snapshot `name` as the common snapshot (ZFS: a hold), so
    /// that no pruning, by snapsite or by hand, can destroy it; release the
    /// protection of every older snapsite snapshot of the volume.
    fn protect_common(&self, _vol: &Volume, _name: &str) -> Result<()> {
        Ok(())
    }
}

pub fn for_volume(vol: &Volume) -> Result<Box<dyn Backend>> {
    match vol.backend {
        BackendKind::Btrfs => Ok(Box::new(btrfs::Btrfs)),
        BackendKind::Zfs => Ok(Box::new(zfs::Zfs)),
        BackendKind::Lvm => Ok(Box::new(lvm::Lvm)),
    }
}

/// The dataset / `vg/lv` a standby receives into: `replica` is required there.
pub fn require_replica<'a>(vol: &'a Volume, what: &str) -> Result<&'a str> {
    vol.replica.as_deref().ok_or_else(|| {
        Error::config(format!(
            "volume `{}`: a {} standby needs `replica` (the {what} received snapshots land in)",
            vol.role,
            vol.backend.as_str()
        ))
    })
}

/// A snapshot stream read from an external program's stdout (`btrfs send`,
/// `zfs send`); `finish` checks its exit status.
pub struct ProcessSource {
    running: Running,
    stdout: ChildStdout,
}

impl ProcessSource {
    pub fn spawn(cmd: Cmd) -> Result<Box<dyn SnapshotSource>> {
        let mut running = cmd.spawn(Stdio::null(), Stdio::piped())?;
        let stdout = running.child.stdout.take().expect("piped");
        Ok(Box::new(ProcessSource { running, stdout }))
    }
}

impl Read for ProcessSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl SnapshotSource for ProcessSource {
    fn finish(self: Box<Self>) -> Result<()> {
        let ProcessSource { running, stdout } = *self;
        drop(stdout);
        running.wait()
    }
    fn abort(self: Box<Self>) {
        let ProcessSource { running, stdout } = *self;
        drop(stdout);
        running.kill();
    }
}
