//! Manifests and other records on disk, under the site's `state_dir`:
//!
//! ```text
//! sets/<id>.json                 manifest (on the standby: the commit record)
//! sets.index                     every manifest again, one line each, with its file's stamp (a cache)
//! sets.summary                   counts and the newest sets, for the everyday commands (a cache; see [`summary`])
//! verdicts.summary               every verdict's id, clean/suspect/cleared and score (a cache; see [`verdict_summary`])
//! pending/<id>.json              a set being taken (primary); leftovers are undone
//! received/<role>/<snap>.json    receipt of a received snapshot (standby)
//! failover/state.json            progress of a failover, for resuming
//! reports/failover-<time>.json   failover reports
//! standby.json                   what the standby holds, as of the last ship (primary)
//! standby.head.json              its newest entries, for `status` (a cache; see `standbys.rs`)
//! run.json                       what `snapsite run` did last (primary)
//! serve.json                     the `serve` session holding the lock (standby)
//! role.json                      which end this site is, in which generation
//! peer.json                      the peer's role and generation, as last seen
//! standbys/<name>/                 the same two records of each other standby (see `standbys.rs`)
//! divergent/<id>.json            data kept when this site stopped being primary
//! rehearsal/state.json           a rehearsal in progress (for cleanup after a kill)
//! reports/rehearsal-*.json       rehearsal reports
//! signals/, verdicts/            ransomware signals and set verdicts (standby; see [`signals`])
//! lock                           one mutating snapsite at a time
//! run.lock                       one `snapsite run` at a time
//! ```
//!
//! Every file is written temp-file -> fsync -> rename -> fsync(dir), but
//! `sets.index`, a cache appended to (see [`index`]).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::error::{Context, Error, ErrorKind, Result};
use crate::base::model::{Manifest, Receipt, parse_set_id, validate_set_id};

mod index;
pub use index::SetHead;
pub mod signals;
mod standbys;
pub use standbys::HeadCache;
pub mod summary;
#[cfg(test)]
mod tests;
pub mod verdict_summary;

pub struct Catalog {
    root: PathBuf,
}

/// The primary's knowledge of the standby, updated during every ship (from
/// the standby's inventory at the start of a session and after every
/// acknowledged snapshot and committed set). The standby never prunes its
/// newest received snapshot of a volume, so the newest entry per role here
/// stays valid until the next ship replaces it: that is the common snapshot
/// retention must keep.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StandbyRecord {
    /// How the standby is reached (the transport's command line).
    pub standby: String,
    pub updated_at: Option<Timestamp>,
    /// End of the last ship that completed without error.
    pub last_ship_ok: Option<Timestamp>,
    /// Snapshots the standby holds, per role (it may have pruned older ones since).
    pub holds: BTreeMap<String, BTreeSet<String>>,
    /// Sets committed on the standby.
    pub committed: BTreeSet<String>,
    /// Payload bytes of the last transfer per role: `full` and `incremental`
    /// (an estimate for the next one's ETA).
    #[serde(default)]
    pub last_bytes: BTreeMap<String, BTreeMap<String, u64>>,
    /// When the ships to this standby began failing (cleared by one that
    /// completes); `status` shows it per standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Timestamp>,
}

impl StandbyRecord {
    /// Per role, the newest snapshot the standby holds that is also in
    /// `local` (this site's snapshots): the common snapshot.
    pub fn common_snapshots(&self, local: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (role, held) in &self.holds {
            let here = local.get(role);
            if let Some(s) = held
                .iter()
                .rev()
                .find(|s| here.is_some_and(|l| l.contains(s)))
            {
                out.push((role.clone(), s.clone()));
            }
        }
        out
    }

    /// A snapshot was received and verified by the standby.
    ///
    /// `last_bytes` is keyed by [`TransferKind::as_str`].
    pub fn note_received(&mut self, role: &str, snapshot: &str, incremental: bool, bytes: u64) {
        self.holds
            .entry(role.to_string())
            .or_default()
            .insert(snapshot.to_string());
        self.last_bytes
            .entry(role.to_string())
            .or_default()
            .insert(TransferKind::of(incremental).as_str().to_string(), bytes);
        self.updated_at = Some(Timestamp::now());
    }

    /// Payload bytes of the last transfer of `role` of the same kind.
    pub fn estimate(&self, role: &str, incremental: bool) -> Option<u64> {
        self.last_bytes
            .get(role)?
            .get(TransferKind::of(incremental).as_str())
            .copied()
    }

    /// The newest snapshot of `role` the standby holds.
    pub fn newest(&self, role: &str) -> Option<&String> {
        self.holds.get(role).and_then(|h| h.iter().next_back())
    }
}

/// Written by `serve` (standby) once it holds the site lock, removed when it
/// ends: the session `failover` stops instead of waiting for it. The serve
/// process leads its own process group, so killing `-pgid` also stops the
/// `btrfs receive` / `zfs receive` it started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServeRecord {
    pub pid: i32,
    pub pgid: i32,
    pub started_at: Timestamp,
    /// The primary's site name from its hello (as sent; for display only).
    #[serde(default)]
    pub primary: Option<String>,
    /// The session as a process group leader (start time, boot), when it
    /// leads its own group: what the next session stops of it if it died
    /// with a receive program still running. Absent in older records.
    #[serde(default)]
    pub group: Option<crate::base::procs::ProcRecord>,
}

/// What `snapsite run` failed at last.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepError {
    pub at: Timestamp,
    pub step: String,
    pub message: String,
}

/// `state_dir/run.json`: what `run` did, for `status` and the admin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub pid: u32,
    /// The `run` process as it started (pid, start time, boot): `status`
    /// tells a running `run` from one killed without recording its stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<crate::base::procs::ProcRecord>,
    pub started_at: Option<Timestamp>,
    pub stopped_at: Option<Timestamp>,
    pub last_cycle_at: Option<Timestamp>,
    pub last_ship_ok_at: Option<Timestamp>,
    /// Failed ships in a row (0 when the last one succeeded).
    pub ship_failures: u32,
    /// When the last failed ship started.
    #[serde(default)]
    pub last_ship_error_at: Option<Timestamp>,
    /// Failed snapshots in a row.
    #[serde(default)]
    pub snapshot_failures: u32,
    pub last_error: Option<StepError>,
    /// Counters since `started_at`.
    pub full_sets_taken: u64,
    pub redolog_sets_taken: u64,
    pub sets_committed: u64,
    pub sets_pruned: u64,
}

/// `state_dir/sequence.json`: the last set sequence number and id handed
/// out on this site. Written (fsynced) before the set's first snapshot, so
/// a number is never reused, whatever happens to the clock or the process.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SequenceRecord {
    pub seq: u64,
    pub last_id: Option<String>,
    /// The latest member time seen (for detecting a clock that steps back).
    #[serde(default)]
    pub last_time: Option<Timestamp>,
}

/// What `next_sequence` hands out.
#[derive(Debug, Clone)]
pub struct NextSet {
    pub seq: u64,
    pub id: String,
    /// How far the clock is behind the newest set taken before, if it is.
    pub clock_step: Option<std::time::Duration>,
}

/// Which end of replication a site is. Recorded state (`role.json`), not
/// config: failover, failback and switchover change it. A site without a
/// record is what its config says (a `[standby]` section: primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes sets and ships them to its peer.
    Primary,
    /// Receives (`serve`) and fails over.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

/// `state_dir/role.json`: this site's role and generation. The generation
/// counts primaries: every failover makes the new primary's generation one
/// more than any it has seen, and every set carries the generation of the
/// site that took it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RoleRecord {
    pub role: Role,
    pub generation: u64,
    pub since: Timestamp,
    /// What made it so: `failover`, `failback`, `switchover`, `init`.
    pub how: String,
    /// The set the change was based on (failover: the set used; failback:
    /// the common base; switchover: the final set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
}

/// `state_dir/peer.json`: the peer's role and generation as it said in the
/// last handshake (display and the split-brain guard; never trusted for
/// anything that destroys data).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerRecord {
    /// The peer's site name as it sent it (escaped).
    pub site: String,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub generation: Option<u64>,
    pub seen_at: Timestamp,
    /// Set when this site refused to ship because of what the peer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Holds `state_dir/lock` (flock) until dropped.
pub struct Lock {
    _f: nix::fcntl::Flock<File>,
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("path has a parent");
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> Result<()> {
        let mut f = File::create(&tmp).ctx(format!("create {}", tmp.display()))?;
        f.write_all(bytes).ctx(format!("write {}", tmp.display()))?;
        f.sync_all().ctx(format!("fsync {}", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, path).ctx(format!("rename {} -> {}", tmp.display(), path.display()))
    })();
    if let Err(e) = written {
        // A full disk must not keep the space of a half-written temp file.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(format!("fsync {}", dir.display()))?;
    Ok(())
}

/// A record that may not exist yet: `None` when the file is absent.
fn read_optional<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::metadata(path) {
        Ok(_) => read_json(path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("serializable");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).ctx(format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::Integrity,
            format!("{} is not valid: {e}", path.display()),
        )
    })
}

impl Catalog {
    pub fn new(state_dir: &Path) -> Catalog {
        Catalog {
            root: state_dir.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Take the site lock, waiting up to `wait` for another snapsite to finish.
    pub fn lock(&self, what: &str, wait: std::time::Duration) -> Result<Lock> {
        std::fs::create_dir_all(&self.root)
            .ctx(format!("create state_dir {}", self.root.display()))?;
        let path = self.root.join("lock");
        match flock_exclusive(&path, wait, std::time::Duration::from_millis(100))? {
            Ok(l) => Ok(Lock { _f: l }),
            Err(e) => Err(Error::refused(format!(
                "{what}: another snapsite holds {} ({e})",
                path.display()
            ))
            .with_hint("wait for it to finish; it may be a running `snapsite run` or `serve`")),
        }
    }

    /// Take `state_dir/run.lock` without waiting: one `snapsite run` per site.
    /// (The site lock, `lock`, is taken per step so that `snapshot` and
    /// `ship` by hand can interleave with a running `run`.)
    pub fn run_lock(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.root)
            .ctx(format!("create state_dir {}", self.root.display()))?;
        let path = self.root.join("run.lock");
        match flock_exclusive(&path, std::time::Duration::ZERO, std::time::Duration::ZERO)? {
            Ok(l) => Ok(Lock { _f: l }),
            Err(e) => Err(Error::refused(format!(
                "another `snapsite run` holds {} ({e})",
                path.display()
            ))
            .with_hint(
                "only one `snapsite run` per site; stop the other one (systemctl stop snapsite)",
            )),
        }
    }

    pub fn standby_record(&self) -> Result<Option<StandbyRecord>> {
        read_optional(&self.root.join("standby.json"))
    }

    pub fn write_standby_record(&self, r: &StandbyRecord) -> Result<()> {
        self.write_standby_record_of(crate::base::config::DEFAULT_STANDBY_NAME, r)
    }

    /// The next set's sequence number and id, persisted before it is used.
    /// The id's time is a hybrid logical clock: the wall clock, or 1 ms
    /// after the previous id when the clock is behind it, so ids keep
    /// sorting in the order sets were taken even after the clock steps back.
    pub fn next_sequence(
        &self,
        now: Timestamp,
        kind: crate::base::model::SetKind,
    ) -> Result<NextSet> {
        let path = self.root.join("sequence.json");
        let mut rec: SequenceRecord = read_optional(&path)?.unwrap_or_default();
        // A lost or older sequence file must not make numbers go back.
        let mut known: Vec<Manifest> = self.manifests()?;
        known.extend(self.pending()?);
        for m in &known {
            rec.seq = rec.seq.max(m.seq);
            if rec
                .last_id
                .as_ref()
                .is_none_or(|l| crate::base::model::older_set(l, &m.id))
            {
                rec.last_id = Some(m.id.clone());
            }
            let t = m.completed_time();
            if crate::base::model::plausible_time(t) && rec.last_time.is_none_or(|l| t > l) {
                rec.last_time = Some(t);
            }
        }
        let last_id_time = rec
            .last_id
            .as_deref()
            .and_then(parse_set_id)
            .map(|(t, _)| t);
        let mut at = now;
        if let Some(l) = last_id_time {
            let floor = l + jiff::SignedDuration::from_millis(1);
            if at < floor {
                at = floor;
            }
        }
        let mut id = crate::base::model::new_set_id(at, kind);
        while self.has_manifest(&id) || rec.last_id.as_ref().is_some_and(|l| &id <= l) {
            at += jiff::SignedDuration::from_millis(1);
            id = crate::base::model::new_set_id(at, kind);
        }
        let clock_step = rec.last_time.and_then(|l| {
            (now < l)
                .then(|| std::time::Duration::try_from(l.duration_since(now)).unwrap_or_default())
        });
        rec.seq = rec.seq.checked_add(1).ok_or_else(|| {
            Error::refused(format!(
                "the set sequence number is at its limit ({}); no set was taken",
                rec.seq
            ))
            .with_hint("a sequence number this high was never handed out by snapsite: check sequence.json and the sets' manifests under state_dir")
        })?;
        rec.last_id = Some(id.clone());
        rec.last_time = Some(rec.last_time.map_or(now, |l| l.max(now)));
        write_json(&path, &rec)?;
        Ok(NextSet {
            seq: rec.seq,
            id,
            clock_step,
        })
    }

    /// `role.json`, if a failover, failback or switchover wrote one.
    pub fn role_record(&self) -> Result<Option<RoleRecord>> {
        read_optional(&self.root.join("role.json"))
    }

    pub fn write_role_record(&self, r: &RoleRecord) -> Result<()> {
        write_json(&self.root.join("role.json"), r)
    }

    /// `peer.json`: the peer as last seen in a handshake.
    pub fn peer_record(&self) -> Result<Option<PeerRecord>> {
        read_optional(&self.root.join("peer.json"))
    }

    pub fn write_peer_record(&self, r: &PeerRecord) -> Result<()> {
        write_json(&self.root.join("peer.json"), r)
    }

    /// This site's generation: `role.json`'s, else the older `generation`
    /// file's, else 1.
    pub fn generation(&self) -> Result<u64> {
        if let Some(r) = self.role_record()? {
            return Ok(r.generation);
        }
        let p = self.root.join("generation");
        match std::fs::read_to_string(&p) {
            Ok(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|e| Error::integrity(format!("{} is not a number: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(1),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    pub fn write_serve_record(&self, r: &ServeRecord) -> Result<()> {
        write_json(&self.root.join("serve.json"), r)
    }

    /// The serve session that holds (or held, if it was killed) the lock.
    pub fn serve_record(&self) -> Result<Option<ServeRecord>> {
        read_optional(&self.root.join("serve.json"))
    }

    pub fn remove_serve_record(&self) {
        let _ = std::fs::remove_file(self.root.join("serve.json"));
    }

    /// `run.json`: what `snapsite run` did last (primary).
    pub fn run_record(&self) -> Result<Option<RunRecord>> {
        read_optional(&self.root.join("run.json"))
    }

    pub fn write_run_record(&self, r: &RunRecord) -> Result<()> {
        write_json(&self.root.join("run.json"), r)
    }

    /// `failover/state.json`: the progress of a failover on this site, for
    /// resuming it (and, once completed, the mark of a live site).
    pub fn failover_state_path(&self) -> PathBuf {
        self.root.join("failover").join("state.json")
    }

    pub fn has_failover_state(&self) -> bool {
        self.failover_state_path().exists()
    }

    /// The failover progress record, if there is one. Generic over the
    /// record type so the catalog need not know failover's types.
    pub fn failover_state<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        read_optional(&self.failover_state_path())
    }

    pub fn write_failover_state<T: Serialize>(&self, st: &T) -> Result<()> {
        write_json(&self.failover_state_path(), st)
    }

    /// Forget the failover progress (best effort: rollback has nothing
    /// better to do with an error here).
    pub fn remove_failover_state(&self) {
        let _ = std::fs::remove_file(self.failover_state_path());
    }

    /// Write a failover report as `reports/failover-<finished_at>.json`.
    /// `record_path` puts the path into the report before it is written
    /// (the report names its own file); the path is returned too.
    pub fn write_failover_report<T: Serialize>(
        &self,
        finished_at: Timestamp,
        report: &mut T,
        record_path: impl FnOnce(&mut T, PathBuf),
    ) -> Result<PathBuf> {
        let path = self.root.join("reports").join(format!(
            "failover-{}.json",
            finished_at.strftime("%Y%m%dT%H%M%S%.3fZ")
        ));
        record_path(report, path.clone());
        write_json(&path, &*report)?;
        Ok(path)
    }

    /// `rehearsal/state.json`: a rehearsal in progress (or killed).
    pub fn rehearsal_state<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        read_optional(&self.root.join("rehearsal").join("state.json"))
    }

    pub fn write_rehearsal_state<T: Serialize>(&self, st: &T) -> Result<()> {
        write_json(&self.root.join("rehearsal").join("state.json"), st)
    }

    pub fn remove_rehearsal_state(&self) -> Result<()> {
        let p = self.root.join("rehearsal").join("state.json");
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove {}", p.display()), e)),
        }
    }

    /// `rehearsal/last.json`: the last rehearsal's report (status, metrics).
    pub fn last_rehearsal<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        read_optional(&self.root.join("rehearsal").join("last.json"))
    }

    /// Write a rehearsal report as `reports/rehearsal-<finished_at>.json`
    /// and as `rehearsal/last.json`; returns the first path.
    pub fn write_rehearsal_report<T: Serialize>(
        &self,
        finished_at: Timestamp,
        report: &T,
    ) -> Result<PathBuf> {
        let path = self.root.join("reports").join(format!(
            "rehearsal-{}.json",
            finished_at.strftime("%Y%m%dT%H%M%S%.3fZ")
        ));
        write_json(&path, report)?;
        write_json(&self.root.join("rehearsal").join("last.json"), report)?;
        Ok(path)
    }

    fn set_path(&self, id: &str) -> PathBuf {
        self.root.join("sets").join(format!("{id}.json"))
    }

    /// Write a manifest (and its line at the end of `sets.index`).
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        validate_set_id(&m.id)?;
        let path = self.set_path(&m.id);
        let summary = self.summary_before_change(&m.id);
        write_json(&path, m)?;
        self.index_written(&path, m);
        // Killed here: sets.summary describes the directory before the
        // write, so it is stale (the next command rebuilds it).
        crate::failpoint!("catalog.before_summary");
        self.summary_after_change(summary, &m.id, Some(m));
        Ok(())
    }

    /// One committed manifest, if there is one with this id.
    pub fn manifest(&self, id: &str) -> Result<Option<Manifest>> {
        validate_set_id(id)?;
        read_optional(&self.set_path(id))
    }

    pub fn has_manifest(&self, id: &str) -> bool {
        self.set_path(id).exists()
    }

    pub fn remove_manifest(&self, id: &str) -> Result<()> {
        validate_set_id(id)?;
        let summary = self.summary_before_change(id);
        match std::fs::remove_file(self.set_path(id)) {
            Ok(()) => {
                self.summary_after_change(summary, id, None);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove manifest {id}"), e)),
        }
    }

    // --- pending sets (primary) ---

    pub fn write_pending(&self, m: &Manifest) -> Result<()> {
        write_json(&self.root.join("pending").join(format!("{}.json", m.id)), m)
    }
    pub fn remove_pending(&self, id: &str) -> Result<()> {
        let p = self.root.join("pending").join(format!("{id}.json"));
        std::fs::remove_file(&p).ctx(format!("remove {}", p.display()))
    }
    pub fn pending(&self) -> Result<Vec<Manifest>> {
        let dir = self.root.join("pending");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().ends_with(".json") {
                    out.push(read_json(&ent.path())?);
                }
            }
        }
        Ok(out)
    }

    // --- receipts (standby) ---

    fn receipt_path(&self, role: &str, snap: &str) -> PathBuf {
        self.root
            .join("received")
            .join(role)
            .join(format!("{snap}.json"))
    }
    pub fn write_receipt(&self, role: &str, snap: &str, r: &Receipt) -> Result<()> {
        validate_set_id(snap)?;
        write_json(&self.receipt_path(role, snap), r)
    }
    pub fn receipt(&self, role: &str, snap: &str) -> Result<Option<Receipt>> {
        read_optional(&self.receipt_path(role, snap))
    }
    pub fn remove_receipt(&self, role: &str, snap: &str) -> Result<()> {
        let _ = std::fs::remove_file(self.receipt_path(role, snap));
        // What was measured on its receive goes with it (the set's verdict stays).
        self.remove_signals(role, snap);
        Ok(())
    }
}

/// How a snapshot travelled: the whole snapshot, or the changes since a base
/// the standby holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    Full,
    Incremental,
}

impl TransferKind {
    pub fn of(incremental: bool) -> TransferKind {
        if incremental {
            TransferKind::Incremental
        } else {
            TransferKind::Full
        }
    }
    /// The key in the standby record's `last_bytes`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Full => "full",
            TransferKind::Incremental => "incremental",
        }
    }
}

/// An exclusive `flock` on `path` (created if missing), retried every
/// `poll` until `wait` has passed. The outer error: the file could not be
/// opened; the inner one: someone else still holds the lock.
pub fn flock_exclusive(
    path: &Path,
    wait: std::time::Duration,
    poll: std::time::Duration,
) -> Result<std::result::Result<nix::fcntl::Flock<File>, nix::errno::Errno>> {
    let start = std::time::Instant::now();
    loop {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx(format!("open {}", path.display()))?;
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(Ok(l)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < wait => {
                std::thread::sleep(poll);
            }
            Err((_, e)) => return Ok(Err(e)),
        }
    }
}
