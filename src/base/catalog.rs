//! Manifests and other records on disk, under the site's `state_dir`:
//!
//! ```text
//! sets/<id>.json                 manifest (on the standby: the commit record)
//! sets.index                     every manifest again, one line each, with its file's stamp (a cache)
//! pending/<id>.json              a set being taken (primary); leftovers are undone
//! received/<role>/<snap>.json    receipt of a received snapshot (standby)
//! failover/state.json            progress of a failover, for resuming
//! reports/failover-<time>.json   failover reports
//! standby.json                   what the standby holds, as of the last ship (primary)
//! run.json                       what `snapsite run` did last (primary)
//! serve.json                     the `serve` session holding the lock (standby)
//! role.json                      which end this site is, in which generation
//! peer.json                      the peer's role and generation, as last seen
//! divergent/<id>.json            data kept when this site stopped being primary
//! rehearsal/state.json           a rehearsal in progress (for cleanup after a kill)
//! reports/rehearsal-*.json       rehearsal reports
//! lock                           one mutating snapsite at a time
//! run.lock                       one `snapsite run` at a time
//! ```
//!
//! Every file is written temp-file -> fsync -> rename -> fsync(dir).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::error::{Context, Error, ErrorKind, Result};
use crate::base::model::{Manifest, Receipt, parse_set_id, validate_set_id};

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

/// A manifest as this process last read it, with the stamp of its file.
#[derive(Debug)]
struct CachedManifest {
    stamp: FileStamp,
    manifest: Manifest,
}

/// What says a file is still the one that was read: every rewrite
/// (temp file and rename) makes a new inode with new times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    fn of(md: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            len: md.len(),
            ino: md.ino(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
        }
    }
}

/// Per state_dir, the manifests as this process last read them (checked
/// against the files before every use: see [`Catalog::manifests`]).
type ManifestCache = BTreeMap<PathBuf, BTreeMap<String, CachedManifest>>;
static MANIFEST_CACHE: std::sync::Mutex<ManifestCache> = std::sync::Mutex::new(BTreeMap::new());

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
        write_json(&self.root.join("standby.json"), r)
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

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        validate_set_id(&m.id)?;
        write_json(&self.set_path(&m.id), m)
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
        match std::fs::remove_file(self.set_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove manifest {id}"), e)),
        }
    }

    /// All manifests, oldest first. A manifest that does not parse is an
    /// error naming the file: it is never silently skipped.
    ///
    /// Each manifest file is parsed once, ever: `sets.index` (see
    /// [`set_index`]) holds every manifest this site read, each with the
    /// stamp (size, inode, modification and change time) its file had, and
    /// an entry is used only while the file still has that stamp: one
    /// `stat` per set instead of a JSON parse. A file whose stamp differs,
    /// or that the index lacks, is read and checked as ever, and the index
    /// is rewritten (by whichever command first sees the change: commit,
    /// prune and failback change `sets/` and do not need to). Within one
    /// process, what was read is also remembered, checked the same way.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        let dir = self.root.join("sets");
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        let mut old = MANIFEST_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.root)
            .unwrap_or_default();
        // A missing, unreadable or damaged index only costs the parse.
        let index_text = std::fs::read_to_string(self.set_index_path()).unwrap_or_default();
        let index = set_index::parse(&index_text);
        let mut index_current = !index_text.is_empty();
        let mut fresh: BTreeMap<String, CachedManifest> = BTreeMap::new();
        for ent in rd {
            let ent = ent.ctx(format!("read {}", dir.display()))?;
            let name = ent.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if parse_set_id(id).is_none() {
                continue;
            }
            let stamp = ent
                .metadata()
                .ok()
                .filter(|md| md.is_file())
                .map(|md| FileStamp::of(&md));
            let indexed = index.get(id).filter(|e| stamp.as_ref() == Some(&e.stamp));
            index_current &= indexed.is_some();
            let cached = old
                .remove(id)
                .filter(|e| stamp.is_some() && stamp.as_ref() == Some(&e.stamp))
                .or_else(|| {
                    let m = set_index::decode(indexed?.manifest).filter(|m| m.id == id);
                    index_current &= m.is_some();
                    Some(CachedManifest {
                        stamp: stamp.clone()?,
                        manifest: m?,
                    })
                });
            let entry = match cached {
                Some(e) => e,
                None => {
                    let m: Manifest = read_json(&ent.path())?;
                    if m.id != id {
                        return Err(Error::integrity(format!(
                            "{} holds the manifest of set {}",
                            ent.path().display(),
                            m.id
                        )));
                    }
                    CachedManifest {
                        // Stamped before the read: a file replaced while
                        // it was read is read again next time.
                        stamp: stamp.unwrap_or_default(),
                        manifest: m,
                    }
                }
            };
            out.push(entry.manifest.clone());
            fresh.insert(id.to_string(), entry);
        }
        if !index_current || index.len() != fresh.len() {
            self.write_set_index(&fresh, &index);
        }
        MANIFEST_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.root.clone(), fresh);
        // Order by sequence, never by the clock (ids agree for sets taken
        // by this version: they are a logical clock).
        out.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        Ok(out)
    }

    fn set_index_path(&self) -> PathBuf {
        self.root.join("sets.index")
    }

    /// Rewrite `sets.index` from what was just read (lines of the old index
    /// whose stamp still holds are copied as they are). A cache: a failure
    /// to write it is logged, never an error of the command.
    fn write_set_index(
        &self,
        fresh: &BTreeMap<String, CachedManifest>,
        old: &std::collections::HashMap<&str, set_index::Entry<'_>>,
    ) {
        let mut text = String::with_capacity(64 + fresh.len() * 512);
        text.push_str(set_index::MAGIC);
        text.push('\n');
        for (id, e) in fresh {
            if e.stamp == FileStamp::default() {
                continue; // not a regular file when read: never indexed
            }
            match old.get(id.as_str()).filter(|o| o.stamp == e.stamp) {
                Some(o) => set_index::push_line(&mut text, id, &e.stamp, Some(o.manifest), None),
                None => set_index::push_line(&mut text, id, &e.stamp, None, Some(&e.manifest)),
            }
        }
        if let Err(e) = write_atomic(&self.set_index_path(), text.as_bytes()) {
            tracing::debug!(error = %e, "sets.index not written (it is a cache)");
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

/// `state_dir/sets.index`: every manifest of `sets/` in one file, each
/// line `id, the file's stamp, the manifest, $` in tab-separated tokens that
/// parse without JSON or RFC 3339 (strings `=`-prefixed and escaped,
/// `~` for none, times as integer nanoseconds). Written only by this site
/// from manifests it read and checked itself; an entry counts only while
/// its file's stamp is unchanged, and a line that does not decode is
/// ignored (the file is read instead). Nothing from the peer reaches it
/// but through a committed manifest file.
mod set_index {
    use std::collections::HashMap;
    use std::fmt::Write as _;

    use jiff::Timestamp;

    use super::FileStamp;
    use crate::base::model::{Consistency, Manifest, Member, Receipt, SetKind, StandbyOrder};

    pub const MAGIC: &str = "snapsite-sets-index 1";
    const END: &str = "$";

    pub struct Entry<'a> {
        pub stamp: FileStamp,
        /// The manifest's tokens, undecoded until used.
        pub manifest: &'a str,
    }

    /// The entries of an index file by set id; empty when its first line
    /// is not [`MAGIC`]. A line that does not split is left out.
    pub fn parse(text: &str) -> HashMap<&str, Entry<'_>> {
        let mut lines = text.lines();
        if lines.next() != Some(MAGIC) {
            return HashMap::new();
        }
        lines
            .filter_map(|l| {
                let mut f = l.splitn(6, '\t');
                let id = f.next()?;
                let stamp = FileStamp {
                    len: f.next()?.parse().ok()?,
                    ino: f.next()?.parse().ok()?,
                    mtime_ns: f.next()?.parse().ok()?,
                    ctime_ns: f.next()?.parse().ok()?,
                };
                Some((
                    id,
                    Entry {
                        stamp,
                        manifest: f.next()?,
                    },
                ))
            })
            .collect()
    }

    /// One line: the old tokens as they are, or `m` encoded.
    pub fn push_line(
        out: &mut String,
        id: &str,
        s: &FileStamp,
        tokens: Option<&str>,
        m: Option<&Manifest>,
    ) {
        let _ = write!(
            out,
            "{id}\t{}\t{}\t{}\t{}\t",
            s.len, s.ino, s.mtime_ns, s.ctime_ns
        );
        match (tokens, m) {
            (Some(t), _) => out.push_str(t),
            (None, Some(m)) => out.push_str(&encode(m)),
            (None, None) => {}
        }
        out.push('\n');
    }

    struct Enc(String);

    impl Enc {
        fn sep(&mut self) {
            if !self.0.is_empty() {
                self.0.push('\t');
            }
        }
        fn s(&mut self, v: &str) {
            self.sep();
            self.0.push('=');
            for c in v.chars() {
                match c {
                    '\\' => self.0.push_str("\\\\"),
                    '\t' => self.0.push_str("\\t"),
                    '\n' => self.0.push_str("\\n"),
                    '\r' => self.0.push_str("\\r"),
                    c => self.0.push(c),
                }
            }
        }
        fn n(&mut self, v: impl std::fmt::Display) {
            self.sep();
            let _ = write!(self.0, "{v}");
        }
        fn t(&mut self, t: Timestamp) {
            self.n(t.as_nanosecond());
        }
        /// `+` before an option's value, `~` for none.
        fn flag(&mut self, some: bool) {
            self.sep();
            self.0.push(if some { '+' } else { '~' });
        }
        fn os(&mut self, v: Option<&str>) {
            self.flag(v.is_some());
            if let Some(v) = v {
                self.s(v);
            }
        }
    }

    /// Every field, named: a field added to the manifest fails to compile
    /// here until the index carries it.
    pub fn encode(m: &Manifest) -> String {
        let Manifest {
            format,
            id,
            kind,
            site,
            seq,
            generation,
            members,
            safety_margin_ms,
            committed_at,
            standby_order,
        } = m;
        let mut e = Enc(String::with_capacity(512));
        e.n(format);
        e.s(id);
        e.s(kind.as_str());
        e.s(site);
        e.n(seq);
        e.n(generation);
        e.n(safety_margin_ms);
        e.flag(committed_at.is_some());
        if let Some(t) = committed_at {
            e.t(*t);
        }
        e.flag(standby_order.is_some());
        if let Some(StandbyOrder { generation, commit }) = standby_order {
            e.n(generation);
            e.n(commit);
        }
        e.n(members.len());
        for mem in members {
            encode_member(&mut e, mem);
        }
        // The end: a line cut anywhere (even inside a string) never decodes.
        e.n(END);
        e.0
    }

    fn encode_member(e: &mut Enc, m: &Member) {
        let Member {
            role,
            backend,
            source,
            snapshot,
            storage_id,
            before,
            after,
            atomic_group,
            send_options,
            receipt,
            consistency,
        } = m;
        e.s(role);
        e.s(backend);
        e.s(source);
        e.s(snapshot);
        e.os(storage_id.as_deref());
        e.t(*before);
        e.t(*after);
        e.flag(atomic_group.is_some());
        if let Some(g) = atomic_group {
            e.n(g);
        }
        e.n(send_options.len());
        for o in send_options {
            e.s(o);
        }
        e.flag(receipt.is_some());
        if let Some(Receipt {
            base,
            bytes,
            blake3,
            received_at,
            storage_id,
            set_id,
            sender_storage_id,
        }) = receipt
        {
            e.os(base.as_deref());
            e.n(bytes);
            e.s(blake3);
            e.t(*received_at);
            e.os(storage_id.as_deref());
            e.os(set_id.as_deref());
            e.os(sender_storage_id.as_deref());
        }
        match consistency {
            None => e.flag(false),
            Some(Consistency::Quiesced) => e.n("q"),
            Some(Consistency::CrashConsistent { reason }) => {
                e.n("c");
                e.s(reason);
            }
        }
    }

    struct Dec<'a>(std::str::Split<'a, char>);

    impl<'a> Dec<'a> {
        fn tok(&mut self) -> Option<&'a str> {
            self.0.next()
        }
        fn s(&mut self) -> Option<String> {
            let t = self.tok()?.strip_prefix('=')?;
            if !t.contains('\\') {
                return Some(t.to_string());
            }
            let mut out = String::with_capacity(t.len());
            let mut it = t.chars();
            while let Some(c) = it.next() {
                out.push(match c {
                    '\\' => match it.next()? {
                        '\\' => '\\',
                        't' => '\t',
                        'n' => '\n',
                        'r' => '\r',
                        _ => return None,
                    },
                    c => c,
                });
            }
            Some(out)
        }
        fn n<T: std::str::FromStr>(&mut self) -> Option<T> {
            self.tok()?.parse().ok()
        }
        fn t(&mut self) -> Option<Timestamp> {
            Timestamp::from_nanosecond(self.n()?).ok()
        }
        fn flag(&mut self) -> Option<bool> {
            match self.tok()? {
                "+" => Some(true),
                "~" => Some(false),
                _ => None,
            }
        }
        fn os(&mut self) -> Option<Option<String>> {
            if self.flag()? {
                Some(Some(self.s()?))
            } else {
                Some(None)
            }
        }
    }

    /// The manifest of one line's tokens; `None` for anything malformed
    /// (including tokens left over).
    pub fn decode(tokens: &str) -> Option<Manifest> {
        let mut d = Dec(tokens.split('\t'));
        let format = d.n()?;
        let id = d.s()?;
        let kind = match d.s()?.as_str() {
            "full" => SetKind::Full,
            "redolog" => SetKind::Redolog,
            _ => return None,
        };
        let site = d.s()?;
        let seq = d.n()?;
        let generation = d.n()?;
        let safety_margin_ms = d.n()?;
        let committed_at = if d.flag()? { Some(d.t()?) } else { None };
        let standby_order = if d.flag()? {
            Some(StandbyOrder {
                generation: d.n()?,
                commit: d.n()?,
            })
        } else {
            None
        };
        let count: usize = d.n()?;
        let mut members = Vec::with_capacity(count.min(64));
        for _ in 0..count {
            members.push(decode_member(&mut d)?);
        }
        if d.tok() != Some(END) || d.tok().is_some() {
            return None;
        }
        Some(Manifest {
            format,
            id,
            kind,
            site,
            seq,
            generation,
            members,
            safety_margin_ms,
            committed_at,
            standby_order,
        })
    }

    fn decode_member(d: &mut Dec<'_>) -> Option<Member> {
        let role = d.s()?;
        let backend = d.s()?;
        let source = d.s()?;
        let snapshot = d.s()?;
        let storage_id = d.os()?;
        let before = d.t()?;
        let after = d.t()?;
        let atomic_group = if d.flag()? { Some(d.n()?) } else { None };
        let n: usize = d.n()?;
        let mut send_options = Vec::with_capacity(n.min(16));
        for _ in 0..n {
            send_options.push(d.s()?);
        }
        let receipt = if d.flag()? {
            Some(Receipt {
                base: d.os()?,
                bytes: d.n()?,
                blake3: d.s()?,
                received_at: d.t()?,
                storage_id: d.os()?,
                set_id: d.os()?,
                sender_storage_id: d.os()?,
            })
        } else {
            None
        };
        let consistency = match d.tok()? {
            "~" => None,
            "q" => Some(Consistency::Quiesced),
            "c" => Some(Consistency::CrashConsistent { reason: d.s()? }),
            _ => return None,
        };
        Some(Member {
            role,
            backend,
            source,
            snapshot,
            storage_id,
            before,
            after,
            atomic_group,
            send_options,
            receipt,
            consistency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::model::{MANIFEST_FORMAT, Member, SetKind};

    fn manifest(id: &str, seq: u64, snapshot: &str) -> Manifest {
        let t: Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
        Manifest {
            format: MANIFEST_FORMAT,
            id: id.into(),
            kind: SetKind::Full,
            site: "p".into(),
            seq,
            generation: 1,
            members: vec![Member {
                role: "mysql".into(),
                backend: "btrfs".into(),
                source: "/x".into(),
                snapshot: snapshot.into(),
                storage_id: None,
                before: t,
                after: t,
                atomic_group: None,
                send_options: Vec::new(),
                receipt: None,
                consistency: None,
            }],
            safety_margin_ms: 0,
            committed_at: None,
            standby_order: None,
        }
    }

    /// What `manifests` must return: every file read, ignoring the index.
    fn from_files(c: &Catalog) -> Vec<Manifest> {
        let mut v: Vec<Manifest> = std::fs::read_dir(c.root().join("sets"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| read_json(&p).unwrap())
            .collect();
        v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        v
    }

    fn forget_process_cache(c: &Catalog) {
        MANIFEST_CACHE.lock().unwrap().remove(c.root());
    }

    #[test]
    fn manifests_read_again_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::new(dir.path());
        assert!(c.manifests().unwrap().is_empty());
        let ids: Vec<String> = (0..5)
            .map(|i| format!("20261127T08000{i}.000Z-full"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            c.write_manifest(&manifest(id, i as u64 + 1, id)).unwrap();
        }
        assert_eq!(c.manifests().unwrap(), from_files(&c));

        // Changes are seen by this process (what it remembers is checked
        // against the files) and by a new one.
        for fresh_process in [false, true] {
            // rewritten with other content of the same size
            let mut m = manifest(&ids[1], 2, &ids[1]);
            m.site = if fresh_process { "q" } else { "r" }.into();
            c.write_manifest(&m).unwrap();
            c.remove_manifest(&ids[if fresh_process { 2 } else { 3 }])
                .unwrap();
            let new_id = if fresh_process {
                "20261127T090000.000Z-full"
            } else {
                "20261127T090001.000Z-full"
            };
            c.write_manifest(&manifest(new_id, 9, new_id)).unwrap();
            if fresh_process {
                forget_process_cache(&c);
            }
            let got = c.manifests().unwrap();
            assert_eq!(got, from_files(&c));
            assert!(got.iter().any(|x| x.id == ids[1] && x.site == m.site));
        }

        // A manifest file damaged after it was read is still an error
        // naming it.
        let p = c.root().join("sets").join(format!("{}.json", ids[0]));
        let good = std::fs::read(&p).unwrap();
        std::fs::write(&p, b"{ not json").unwrap();
        let e = c.manifests().unwrap_err().to_string();
        assert!(e.contains(&ids[0]), "{e}");
        write_atomic(&p, &good).unwrap();
        assert_eq!(c.manifests().unwrap(), from_files(&c));
    }

    #[test]
    fn set_index_round_trips_every_field() {
        use crate::base::model::{Consistency, Receipt, StandbyOrder};
        let id = "20261127T080000.000Z-full";
        let mut m = manifest(id, 7, id);
        let t: Timestamp = "2026-11-27T08:00:00.123456789Z".parse().unwrap();
        m.committed_at = Some(t);
        m.standby_order = Some(StandbyOrder {
            generation: 3,
            commit: 41,
        });
        m.safety_margin_ms = -5;
        let mut other = m.members[0].clone();
        other.role = "redolog".into();
        other.source = "tank/a b\tc".into();
        other.storage_id = Some("=~+".into());
        other.atomic_group = Some(2);
        other.send_options = vec!["-w".into(), String::new()];
        other.receipt = Some(Receipt {
            base: Some("20261127T070000.000Z-full".into()),
            bytes: u64::MAX,
            blake3: "ab".repeat(32),
            received_at: t,
            storage_id: None,
            set_id: Some(id.into()),
            sender_storage_id: Some("u".into()),
        });
        other.consistency = Some(Consistency::CrashConsistent {
            reason: "hook\tfailed:\n\\ \r\u{e9}".into(),
        });
        m.members[0].consistency = Some(Consistency::Quiesced);
        m.members.push(other);
        let enc = set_index::encode(&m);
        assert!(!enc.contains('\n'), "one line: {enc:?}");
        assert_eq!(set_index::decode(&enc), Some(m.clone()));
        // Cut anywhere or extended: never a manifest.
        for cut in 0..enc.len() {
            if enc.is_char_boundary(cut) {
                assert_eq!(set_index::decode(&enc[..cut]), None, "{cut}");
            }
        }
        assert_eq!(set_index::decode(&format!("{enc}\t1")), None);
    }

    #[test]
    fn set_index_is_used_only_while_the_file_is_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::new(dir.path());
        let ids: Vec<String> = (0..4)
            .map(|i| format!("20261127T08000{i}.000Z-full"))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            c.write_manifest(&manifest(id, i as u64 + 1, id)).unwrap();
        }
        assert_eq!(c.manifests().unwrap(), from_files(&c));
        let index = c.root().join("sets.index");
        let text = std::fs::read_to_string(&index).unwrap();
        assert_eq!(text.lines().count(), 1 + ids.len(), "{text}");

        // The index is what a new process reads: an entry edited here (its
        // stamp left as it is) is believed...
        let mut edited = manifest(&ids[1], 2, &ids[1]);
        edited.site = "from-the-index".into();
        let line = text.lines().find(|l| l.starts_with(&ids[1])).unwrap();
        let stamp: Vec<&str> = line.split('\t').take(5).collect();
        let new_line = format!("{}\t{}", stamp.join("\t"), set_index::encode(&edited));
        std::fs::write(&index, text.replace(line, &new_line)).unwrap();
        forget_process_cache(&c);
        let got = c.manifests().unwrap();
        assert!(got.iter().any(|m| m.site == "from-the-index"));
        // ... until the file changes (rewritten with its own content): then
        // the file is read, and the index rewritten from it.
        let p = c.root().join("sets").join(format!("{}.json", ids[1]));
        write_atomic(&p, &std::fs::read(&p).unwrap()).unwrap();
        forget_process_cache(&c);
        assert_eq!(c.manifests().unwrap(), from_files(&c));
        assert!(
            !std::fs::read_to_string(&index)
                .unwrap()
                .contains("from-the-index")
        );

        // A damaged line or index costs a parse, never a wrong answer; a
        // removed file leaves the index.
        let text = std::fs::read_to_string(&index).unwrap();
        let line = text.lines().find(|l| l.starts_with(&ids[2])).unwrap();
        std::fs::write(&index, text.replace(line, &line[..line.len() / 2])).unwrap();
        c.remove_manifest(&ids[3]).unwrap();
        forget_process_cache(&c);
        assert_eq!(c.manifests().unwrap(), from_files(&c));
        let text = std::fs::read_to_string(&index).unwrap();
        assert_eq!(text.lines().count(), 1 + 3, "{text}");
        std::fs::write(&index, "garbage").unwrap();
        forget_process_cache(&c);
        assert_eq!(c.manifests().unwrap(), from_files(&c));

        // A manifest damaged in place is an error naming it, whatever the
        // index holds.
        let p = c.root().join("sets").join(format!("{}.json", ids[0]));
        std::fs::write(&p, b"{ not json").unwrap();
        forget_process_cache(&c);
        let e = c.manifests().unwrap_err().to_string();
        assert!(e.contains(&ids[0]), "{e}");
    }
}
