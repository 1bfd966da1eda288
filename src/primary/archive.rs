//! `snapsite archive` (issue 30): each set, in order, written to an S3
//! archive (`[[archive]]`) as the seed format's framed, checksummed stream
//! — hello, each member (incremental from the snapshot the archive already
//! holds for its role, as `ship` does against a standby), the commit — cut
//! into part objects, then an index object LAST. A set is in the archive
//! when its index exists and every part matches it.
//!
//! Nothing is ever overwritten or deleted: part keys carry a run id
//! (`sets/SET/RUN/part-NNNNNN`) fresh for each attempt, the index key is
//! the set's and is written once (its existence is checked first). A run
//! killed before its index leaves parts no index names; the next run
//! produces the set's stream again and reuses each part an earlier run
//! recorded in its journal that the bucket still holds ([`resume`]),
//! putting only the others (under its own run id).
//!
//! With `recipients`, every part is piped through `age -r ...` (argv, no
//! shell) as it is produced: the plaintext never touches disk, and the
//! primary cannot read its archive back. ZFS raw sends are stored as sent.
//! Each part is written once to a stage file under
//! `state_dir/archive-stage/`, its size and blake3 taken as it is written
//! (age's output is copied into the stage file by a thread that hashes
//! it). A pool of `uploads` (default 4) PUTs parts: a plaintext part
//! while it is produced, the PUT reading the stage file behind the writer
//! with the part's length (`chunk_size`) declared up front; a last part
//! that ends short is PUT again at its length ([`upload`]). An age part
//! is PUT once sealed. Over http a part's body is signed chunk by chunk
//! (`aws-chunked`, which the server checks as it arrives), over https
//! sent `UNSIGNED-PAYLOAD`; either way the bytes sent are hashed as they
//! go and must be the bytes produced. The index is always signed with its
//! SHA-256. Memory stays constant, local disk is at most `uploads + 1`
//! parts. [`WriteTiming`] says whether the production or the uploads
//! were the limit.

pub mod index;
pub mod resume;
mod upload;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Instant;

use serde::Serialize;

use crate::backend::Stores;
use crate::base::archiveconf::Archive;
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::model::Manifest;
use crate::wire::s3::{Bucket, Credentials, Payload};
use crate::wire::stream::Writer;
use index::{ArchiveIndex, ArchiveMember, ArchivePart};
pub use upload::WriteTiming;
use upload::{Clock, Job, PartUploader, Pool, upload_parts};

/// The archive named `name` (or the only one).
pub fn pick<'a>(cfg: &'a Config, name: Option<&str>) -> Result<&'a Archive> {
    match name {
        Some(n) => cfg.archives.iter().find(|a| a.name == n).ok_or_else(|| {
            Error::config(format!(
                "{}: no [[archive]] named `{}` (configured: {})",
                cfg.path.display(),
                crate::base::model::wire_str(n),
                names(cfg)
            ))
        }),
        None => match cfg.archives.as_slice() {
            [a] => Ok(a),
            [] => Err(Error::config(format!(
                "{}: no [[archive]] is configured",
                cfg.path.display()
            ))
            .with_hint("docs/archive.md shows one")),
            _ => Err(Error::config(format!(
                "{}: several archives ({}): name one",
                cfg.path.display(),
                names(cfg)
            ))),
        },
    }
}

fn names(cfg: &Config) -> String {
    cfg.archives
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Open an archive's bucket with its credentials file.
pub fn open(a: &Archive) -> Result<Bucket> {
    let b = Bucket::new(
        &a.endpoint,
        &a.bucket,
        &a.region,
        Credentials::load(&a.credentials)?,
    )?
    .with_limits(crate::wire::s3::Limits {
        archive: a.name.clone(),
        timeout: a.request_timeout,
        retries: a.retries,
    });
    match &a.ca_file {
        Some(ca) => b.with_ca_file(ca),
        None => Ok(b),
    }
}

/// The full key of `rel` (a key below the archive's prefix).
pub fn key(a: &Archive, rel: &str) -> String {
    format!("{}/{rel}", a.prefix)
}

/// Every set whose index exists, with the index decoded (foreign: a bad
/// index is an error naming its key).
pub fn read_indexes(a: &Archive, bucket: &Bucket) -> Result<BTreeMap<String, ArchiveIndex>> {
    let prefix = key(a, "sets/");
    let mut out = BTreeMap::new();
    for (k, _) in bucket.list(&prefix)? {
        let rel = &k[a.prefix.len() + 1..];
        let Some(set) = index::set_of_index_key(rel) else {
            continue;
        };
        out.insert(set.to_string(), read_index(a, bucket, set)?);
    }
    Ok(out)
}

/// One set's index, decoded and checked.
pub fn read_index(a: &Archive, bucket: &Bucket, set: &str) -> Result<ArchiveIndex> {
    let k = key(a, &index::index_key(set));
    let bytes = bucket
        .get_bounded(&k, index::MAX_INDEX_BYTES)?
        .ok_or_else(|| Error::not_found(format!("archive `{}`: no index {k}", a.name)))?;
    index::decode(&bytes, Some(set))
        .map_err(|e| Error::integrity(format!("archive `{}`: index {k}: {e}", a.name)))
}

/// What one set's archiving did.
#[derive(Debug, Clone, Serialize)]
pub struct ArchivedSet {
    pub set_id: String,
    pub requires: Vec<String>,
    pub parts: usize,
    pub payload_bytes: u64,
    pub stream_bytes: u64,
    pub stored_bytes: u64,
    /// Parts an interrupted run had uploaded, used again (not re-sent).
    pub reused_parts: usize,
    pub seconds: f64,
    /// Where the write spent its time.
    pub timing: WriteTiming,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    pub archive: String,
    pub bucket: String,
    pub encrypted: bool,
    pub written: Vec<ArchivedSet>,
    /// Sets the plan names but `--dry-run` did not write.
    pub planned: Vec<String>,
    pub already: usize,
}

/// Which sets to write: those after the newest archived one (catalog
/// order), complete here, not archived yet; or `only`.
fn plan(
    cfg: &Config,
    catalog: &Catalog,
    archived: &BTreeMap<String, ArchiveIndex>,
    local: &BTreeMap<String, Vec<String>>,
    only: Option<&str>,
) -> Result<Vec<Manifest>> {
    let all = catalog.manifests()?;
    if let Some(id) = only {
        let m = all.into_iter().find(|m| m.id == id).ok_or_else(|| {
            Error::not_found(format!(
                "no set `{}` here",
                crate::base::model::wire_str(id)
            ))
        })?;
        if archived.contains_key(&m.id) {
            return Ok(vec![]);
        }
        if !crate::base::site::complete_locally(cfg, &m, local) {
            return Err(Error::storage(format!(
                "set {} is not complete on this site",
                m.id
            )));
        }
        return Ok(vec![m]);
    }
    let last = all.iter().rposition(|m| archived.contains_key(&m.id));
    Ok(all
        .into_iter()
        .skip(last.map_or(0, |i| i + 1))
        .filter(|m| crate::base::site::complete_locally(cfg, m, local))
        .collect())
}

/// `snapsite archive [--to NAME] [--set ID] [--dry-run]`.
pub fn archive(
    cfg: &Config,
    catalog: &Catalog,
    a: &Archive,
    only: Option<&str>,
    dry_run: bool,
) -> Result<ArchiveReport> {
    let bucket = open(a)?;
    let archived = read_indexes(a, &bucket)?;
    let stores = Stores::open(cfg);
    let local = crate::base::site::local_lists(&stores)?;
    let todo = plan(cfg, catalog, &archived, &local, only)?;
    let mut report = ArchiveReport {
        archive: a.name.clone(),
        bucket: bucket.display(),
        encrypted: !a.recipients.is_empty(),
        written: vec![],
        planned: vec![],
        already: archived.len(),
    };
    if a.recipients.is_empty() {
        tracing::warn!(archive = %a.name, "archive has no recipients: sets are stored unencrypted");
    }
    // What the archive holds per role (snapshot == set id).
    let mut has: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ix in archived.values() {
        for m in &ix.members {
            has.entry(m.role.clone())
                .or_default()
                .insert(m.snapshot.clone());
        }
    }
    if dry_run {
        report.planned = todo.into_iter().map(|m| m.id).collect();
        return Ok(report);
    }
    resume::drop_stale(catalog, a, &|s| archived.contains_key(s))?;
    let stage = cfg.state_dir.join("archive-stage");
    for m in todo {
        let steps = crate::primary::coordinator::plan_set(&m, &has, &local);
        let done = write_set(cfg, catalog, a, &bucket, &stores, &stage, &m, &steps)?;
        for s in &steps {
            has.entry(s.role.clone())
                .or_default()
                .insert(s.snapshot.clone());
        }
        report.written.push(done);
    }
    Ok(report)
}

/// A fresh id for one attempt at writing a set's parts.
fn run_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("r{:x}-{:x}", t.as_nanos(), std::process::id())
}

#[allow(clippy::too_many_arguments)]
fn write_set(
    cfg: &Config,
    catalog: &Catalog,
    a: &Archive,
    bucket: &Bucket,
    stores: &Stores,
    stage_dir: &Path,
    set: &Manifest,
    steps: &[crate::primary::coordinator::PlannedSend],
) -> Result<ArchivedSet> {
    let started = Instant::now();
    crate::base::model::validate_set_id(&set.id)?;
    let index_key = key(a, &index::index_key(&set.id));
    if bucket.head(&index_key)?.is_some() {
        return Err(Error::refused(format!(
            "archive `{}`: {index_key} exists already (written by another run?); nothing overwritten",
            a.name
        )));
    }
    std::fs::create_dir_all(stage_dir)
        .map_err(|e| Error::io(format!("create {}", stage_dir.display()), e))?;
    let resume = resume::Resume::open(catalog, a, &set.id)?;
    let run = run_id();
    let slots = a.uploads + 1;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(slots);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<usize>();
    for i in 0..slots {
        free_tx.send(i).expect("receiver alive");
    }
    let failed = AtomicBool::new(false);
    let clock = Clock::new();
    let pool = Pool {
        a,
        bucket,
        set_id: &set.id,
        run: &run,
        jobs: std::sync::Mutex::new(rx),
        limit: a
            .bwlimit
            .clone()
            .map(|l| std::sync::Mutex::new(crate::wire::ratelimit::TokenBucket::new(l))),
        failed: &failed,
        resume: &resume,
        clock: &clock,
    };
    let up = PartUploader {
        recipients: a.recipients.clone(),
        stages: (0..slots)
            .map(|i| stage_dir.join(format!("{}.part{i}", a.name)))
            .collect(),
        free: free_rx,
        chunk: a.chunk_size,
        current: None,
        opened: 0,
        tx,
        failed: &failed,
        clock: &clock,
    };
    let (produced, uploaded) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.uploads)
            .map(|_| {
                let free = free_tx.clone();
                let pool = &pool;
                s.spawn(move || upload_parts(pool, free))
            })
            .collect();
        drop(free_tx);
        // `up` (and with it the queue's sender) is dropped when this
        // returns, so the workers end either way.
        let produced = produce(cfg, a, stores, set, steps, up);
        clock.produced_ns.store(clock.now(), Relaxed);
        let mut parts = Vec::new();
        let mut first_err = None;
        for w in workers {
            match w.join().expect("an upload thread does not panic") {
                Ok(p) => parts.extend(p),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        parts.sort_by_key(|(i, _, _)| *i);
        let uploaded = match first_err {
            Some(e) => Err(e),
            None => Ok(parts),
        };
        (produced, uploaded)
    });
    // The upload's own error explains a production stopped by it.
    let parts = uploaded.map_err(|e| {
        e.context(format!(
            "archive `{}`: set {} is NOT archived (no index written)",
            a.name, set.id
        ))
    })?;
    let (payload, stream_bytes, members) = produced?;
    let timing = clock.timing(a.uploads);
    tracing::debug!(
        set = %set.id,
        uploads = timing.uploads,
        produce_s = timing.produce_seconds,
        producer_waited_s = timing.producer_waited_seconds,
        uploads_idle_s = timing.uploads_idle_seconds,
        put_s = timing.put_seconds,
        put_waited_s = timing.put_waited_seconds,
        streamed = timing.streamed_parts,
        restarted = timing.restarted_parts,
        tail_s = timing.tail_seconds,
        max_in_flight = timing.max_in_flight,
        "parts written"
    );
    let reused = parts.iter().filter(|(_, _, r)| *r).count();
    let parts = parts.into_iter().map(|(_, p, _)| p).collect();
    crate::failpoint!("archive.before_index");
    let mut done = finish_set(
        cfg,
        a,
        bucket,
        set,
        &index_key,
        parts,
        payload,
        stream_bytes,
        members,
        started,
    )?;
    resume.finish()?;
    done.reused_parts = reused;
    done.timing = timing;
    Ok(done)
}

/// The set's stream into the part uploader: (payload, stream bytes, members).
fn produce(
    cfg: &Config,
    a: &Archive,
    stores: &Stores,
    set: &Manifest,
    steps: &[crate::primary::coordinator::PlannedSend],
    up: PartUploader<'_>,
) -> Result<(u64, u64, Vec<ArchiveMember>)> {
    let mut w = Writer::new(std::io::BufWriter::with_capacity(1 << 20, up));
    let ctx = |e: Error| e.context(format!("archive `{}`: set {}", a.name, set.id));
    crate::primary::seed::write_hello(&mut w, cfg).map_err(ctx)?;
    let dest = format!("archive `{}`: set {}", a.name, set.id);
    let mut payload = 0u64;
    let mut members = Vec::new();
    for step in steps {
        let m = set
            .members
            .iter()
            .find(|m| m.role == step.role)
            .expect("planned from the set");
        payload += crate::primary::seed::write_member(
            &mut w,
            stores,
            set,
            m,
            step.base.as_deref(),
            a.compression,
            &dest,
            &mut |_, _, _, _| {},
        )?;
        members.push(ArchiveMember {
            role: m.role.clone(),
            snapshot: m.snapshot.clone(),
            base: step.base.clone(),
        });
    }
    crate::primary::seed::write_commit(&mut w, set).map_err(ctx)?;
    let stream_bytes = w.bytes_out;
    let mut up = w
        .into_inner()
        .into_inner()
        .map_err(|e| Error::io("writing the archive", e.into_error()))?;
    up.seal()
        .map_err(|e| ctx(Error::storage(format!("writing a part: {e}"))))?;
    Ok((payload, stream_bytes, members))
}

/// The index, written last (once: its absence checked again just before).
#[allow(clippy::too_many_arguments)]
fn finish_set(
    cfg: &Config,
    a: &Archive,
    bucket: &Bucket,
    set: &Manifest,
    index_key: &str,
    parts: Vec<ArchivePart>,
    payload: u64,
    stream_bytes: u64,
    members: Vec<ArchiveMember>,
    started: Instant,
) -> Result<ArchivedSet> {
    let mut requires: Vec<String> = members.iter().filter_map(|m| m.base.clone()).collect();
    requires.sort();
    requires.dedup();
    let ix = ArchiveIndex {
        format: index::FORMAT,
        set_id: set.id.clone(),
        site: cfg.site.clone(),
        kind: set.kind.as_str().into(),
        members,
        requires: requires.clone(),
        compression: a.compression.name(),
        encryption: if a.recipients.is_empty() {
            "none"
        } else {
            "age"
        }
        .into(),
        parts,
        payload_bytes: payload,
        stream_bytes,
        written_at: crate::base::model::now().to_string(),
    };
    let body = serde_json::to_vec_pretty(&ix).expect("serializes");
    // The index is written once: checked again just before.
    if bucket.head(index_key)?.is_some() {
        return Err(Error::refused(format!(
            "archive `{}`: {index_key} appeared while the parts were written; nothing overwritten",
            a.name
        )));
    }
    put_index(a, bucket, index_key, &body)?;
    Ok(ArchivedSet {
        set_id: set.id.clone(),
        requires,
        parts: ix.parts.len(),
        payload_bytes: payload,
        stream_bytes,
        stored_bytes: ix.parts.iter().map(|p| p.stored_bytes).sum(),
        reused_parts: 0,
        seconds: started.elapsed().as_secs_f64(),
        timing: WriteTiming::default(),
    })
}

/// PUT the index once per attempt, never over another: after a failed
/// attempt (a timeout may hide a PUT that landed) the key is read back —
/// our bytes there is success, other bytes a refusal, nothing there lets
/// the next attempt (of `retries`) go.
fn put_index(a: &Archive, bucket: &Bucket, index_key: &str, body: &[u8]) -> Result<()> {
    // The index is small: always signed with its SHA-256.
    let (_, sha) = crate::wire::s3::sha256_hex(body).expect("in memory");
    let attempts = bucket.limits().retries + 1;
    let mut n = 1;
    loop {
        let err = match bucket.put(
            index_key,
            &mut std::io::Cursor::new(body),
            body.len() as u64,
            Payload::Sha256(sha.clone()),
            false,
        ) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        match bucket.get_bounded(index_key, index::MAX_INDEX_BYTES) {
            Ok(Some(got)) if got == body => return Ok(()),
            Ok(Some(_)) => {
                return Err(Error::refused(format!(
                    "archive `{}`: {index_key} appeared with other bytes while this run wrote it; nothing overwritten",
                    a.name
                )));
            }
            Ok(None) if n < attempts => {
                tracing::warn!(archive = %a.name, attempt = n, "{err} (trying again)");
                std::thread::sleep(crate::wire::s3::backoff(n));
                n += 1;
            }
            _ => {
                return Err(err.context(format!(
                    "the set is NOT archived: its index was not written ({n} attempts)"
                )));
            }
        }
    }
}

/// When `run` last archived to each archive (monotonic: the wall clock
/// is a display value).
static LAST_RUN: std::sync::Mutex<BTreeMap<String, Instant>> =
    std::sync::Mutex::new(BTreeMap::new());

/// `run`'s hook after a ship: archive to every `[[archive]]` whose
/// `interval` has passed (each one after every ship without it), under the
/// site lock. A failure is logged and retried after the next ship; it never
/// fails the ship.
pub fn after_ship(cfg: &Config, catalog: &Catalog) {
    for a in &cfg.archives {
        let due = {
            let last = LAST_RUN.lock().unwrap_or_else(|p| p.into_inner());
            match (a.interval, last.get(&a.name)) {
                (Some(iv), Some(t)) => t.elapsed() >= iv,
                _ => true,
            }
        };
        if !due {
            continue;
        }
        let r = catalog
            .lock("run: archive", std::time::Duration::from_secs(600))
            .and_then(|_lock| archive(cfg, catalog, a, None, false));
        match r {
            Ok(rep) => {
                LAST_RUN
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(a.name.clone(), Instant::now());
                tracing::info!(archive = %a.name, sets = rep.written.len(), "archived");
            }
            Err(e) => {
                tracing::warn!(archive = %a.name, "archive failed (retried after the next ship): {e}")
            }
        }
    }
}
