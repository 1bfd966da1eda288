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
//! Each part is staged once (ciphertext, or plaintext without recipients)
//! under `state_dir/archive-stage/` to learn its size and SHA-256 for the
//! signed PUT (a plaintext part's is computed while it is staged). Over
//! https parts are PUT with `UNSIGNED-PAYLOAD` instead (TLS protects them;
//! no SHA-256 pass): an age part's stored blake3 is then taken as it is
//! sent. The index is always signed with its SHA-256. A pool
//! of [`UPLOADERS`] PUTs parts while the next ones are produced: memory
//! stays constant, local disk is at most `UPLOADERS + 1` parts.

pub mod index;
pub mod resume;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
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
    Ok(Bucket::new(
        &a.endpoint,
        &a.bucket,
        &a.region,
        Credentials::load(&a.credentials)?,
    )?
    .with_limits(crate::wire::s3::Limits {
        archive: a.name.clone(),
        timeout: a.request_timeout,
        retries: a.retries,
    }))
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

/// How many part objects are PUT at once. One PUT at a time left the
/// link idle while RGW committed each part (and while the next one was
/// staged); a few in flight keep it busy. Local disk is bounded by
/// `UPLOADERS + 1` staged parts, memory by one buffer per upload.
pub const UPLOADERS: usize = 4;

/// Writes the stream as part objects: each part is staged (through age
/// when encrypting) in a free stage file and handed to the upload pool,
/// which PUTs it while the next parts are produced.
struct PartUploader<'a> {
    recipients: Vec<String>,
    /// Parts are PUT with `UNSIGNED-PAYLOAD` (https only): no SHA-256.
    unsigned: bool,
    /// `UPLOADERS + 1` stage files; `free` holds the unused ones.
    stages: Vec<PathBuf>,
    free: std::sync::mpsc::Receiver<usize>,
    chunk: u64,
    /// The part being written.
    current: Option<Staging>,
    sealed: usize,
    tx: std::sync::mpsc::SyncSender<Job>,
    /// Set by an upload that failed: production stops at the next part.
    failed: &'a std::sync::atomic::AtomicBool,
}

/// A part being staged: its sink and the plaintext's blake3 and size;
/// without encryption the stored bytes are the plaintext, so their
/// SHA-256 (for the signed PUT) is computed here too, saving a read.
struct Staging {
    slot: usize,
    sink: Sink,
    blake3: blake3::Hasher,
    sha256: Option<sha2::Sha256>,
    bytes: u64,
}

/// A staged part for the upload pool.
struct Job {
    /// The stored bytes are the plaintext (no encryption).
    plain: bool,
    i: usize,
    slot: usize,
    path: PathBuf,
    bytes: u64,
    blake3: String,
    /// The stored bytes' SHA-256, when known already (plaintext parts).
    sha256: Option<String>,
}

enum Sink {
    Plain(File),
    Age(Child, ChildStdin),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(f) => f,
            Sink::Age(_, i) => i,
        }
    }
}

fn io_err(m: String) -> std::io::Error {
    std::io::Error::other(m)
}

/// A reader that waits for the bandwidth limit (one bucket shared by the
/// uploads: the limit is the archive's, not each connection's).
struct Limited<'a, R> {
    inner: R,
    bucket: &'a std::sync::Mutex<crate::wire::ratelimit::TokenBucket>,
}

impl<R: Seek> Seek for Limited<'_, R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(256 << 10);
        let k = self.inner.read(&mut buf[..n])?;
        self.bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(k);
        Ok(k)
    }
}

impl PartUploader<'_> {
    fn open_part(&mut self) -> std::io::Result<Staging> {
        let stopped = || io_err("the upload stopped (its error follows)".into());
        // Waits while every stage file is queued or uploading.
        let slot = self.free.recv().map_err(|_| stopped())?;
        if self.failed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stopped());
        }
        let stage = self.stages[slot].clone();
        let _ = std::fs::remove_file(&stage);
        let plain = self.recipients.is_empty();
        let sink = if plain {
            Sink::Plain(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&stage)?,
            )
        } else {
            let mut cmd = Command::new("age");
            cmd.arg("--encrypt");
            for r in &self.recipients {
                cmd.arg("-r").arg(r);
            }
            cmd.arg("-o")
                .arg(&stage)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(|e| io_err(format!("cannot run `age` (package age): {e}")))?;
            let stdin = child.stdin.take().expect("piped");
            Sink::Age(child, stdin)
        };
        Ok(Staging {
            slot,
            sink,
            blake3: blake3::Hasher::new(),
            sha256: (plain && !self.unsigned).then(<sha2::Sha256 as sha2::Digest>::new),
            bytes: 0,
        })
    }

    /// Finish the current part (close age) and queue it for the pool.
    fn seal(&mut self) -> std::io::Result<()> {
        let Some(st) = self.current.take() else {
            return Ok(());
        };
        match st.sink {
            // A scratch file, read back at once: no fsync (a crash
            // restarts the set under a new run id anyway).
            Sink::Plain(f) => drop(f),
            Sink::Age(mut child, stdin) => {
                drop(stdin);
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = (&mut e).take(4096).read_to_string(&mut err);
                }
                let status = child.wait()?;
                if !status.success() {
                    return Err(io_err(format!("age failed ({status}): {}", err.trim())));
                }
            }
        }
        let job = Job {
            plain: self.recipients.is_empty(),
            i: self.sealed,
            slot: st.slot,
            path: self.stages[st.slot].clone(),
            bytes: st.bytes,
            blake3: st.blake3.finalize().to_hex().to_string(),
            sha256: st.sha256.map(hex_digest),
        };
        tracing::debug!(part = job.i, bytes = job.bytes, "part staged");
        self.tx
            .send(job)
            .map_err(|_| io_err("the upload stopped (its error follows)".into()))?;
        self.sealed += 1;
        Ok(())
    }
}

fn hex_digest(s: sha2::Sha256) -> String {
    use sha2::Digest;
    s.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

/// One upload worker: take staged parts off the queue, PUT each (hashing
/// it first when its SHA-256 is not known yet), remove the stage file and
/// give its slot back. The first error stops the pool and production.
#[allow(clippy::too_many_arguments)]
fn upload_parts(
    a: &Archive,
    bucket: &Bucket,
    set_id: &str,
    run: &str,
    jobs: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>,
    free: std::sync::mpsc::Sender<usize>,
    limit: Option<&std::sync::Mutex<crate::wire::ratelimit::TokenBucket>>,
    failed: &std::sync::atomic::AtomicBool,
    resume: &resume::Resume,
) -> Result<Vec<(usize, ArchivePart, bool)>> {
    let mut parts = Vec::new();
    loop {
        let job = match jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return Ok(parts),
        };
        if failed.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = std::fs::remove_file(&job.path);
            continue;
        }
        match upload_one(a, bucket, set_id, run, &job, limit, resume) {
            Ok((p, reused)) => {
                tracing::debug!(part = job.i, reused, "part in the bucket");
                let _ = std::fs::remove_file(&job.path);
                parts.push((job.i, p, reused));
                let _ = free.send(job.slot);
            }
            Err(e) => {
                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = std::fs::remove_file(&job.path);
                // The slot back, so that a producer waiting for one wakes
                // and sees `failed`.
                let _ = free.send(job.slot);
                return Err(e);
            }
        }
    }
}

/// Part `job` into the bucket: the part an interrupted run uploaded when
/// its plaintext is this one and the bucket holds it at the recorded size
/// (`true`: reused), else a PUT under this run's key, recorded in the
/// journal once it returns.
fn upload_one(
    a: &Archive,
    bucket: &Bucket,
    set_id: &str,
    run: &str,
    job: &Job,
    limit: Option<&std::sync::Mutex<crate::wire::ratelimit::TokenBucket>>,
    resume: &resume::Resume,
) -> Result<(ArchivePart, bool)> {
    if let Some(p) = resume.candidate(job.i, job.bytes, &job.blake3)
        && bucket.head(&key(a, &p.key))? == Some(p.stored_bytes)
    {
        return Ok((p.clone(), true));
    }
    let read_err = |e| Error::io(format!("read {}", job.path.display()), e);
    let mut f = File::open(&job.path).map_err(read_err)?;
    // What the PUT is signed with, and the stored bytes' blake3 when it is
    // known before the PUT (`None`: hashed while the body is sent).
    let (stored_bytes, payload, b3) = match (&job.sha256, job.plain) {
        (Some(sha), _) => (
            job.bytes,
            Payload::Sha256(sha.clone()),
            Some(job.blake3.clone()),
        ),
        (None, true) => (job.bytes, Payload::Unsigned, Some(job.blake3.clone())),
        (None, false) if bucket.is_https() => {
            let n = f.metadata().map_err(read_err)?.len();
            (n, Payload::Unsigned, None)
        }
        (None, false) => {
            let (n, sha, b3) = hash_file(&mut f).map_err(read_err)?;
            f.rewind().map_err(read_err)?;
            (n, Payload::Sha256(sha), Some(b3))
        }
    };
    let rel = index::part_key(set_id, run, job.i);
    let k = key(a, &rel);
    let mut body = Blake3Reader::new(std::io::BufReader::with_capacity(1 << 20, f));
    match limit {
        Some(tb) => bucket.put(
            &k,
            &mut Limited {
                inner: &mut body,
                bucket: tb,
            },
            stored_bytes,
            payload,
            true,
        )?,
        None => bucket.put(&k, &mut body, stored_bytes, payload, true)?,
    }
    let b3 = match b3 {
        Some(b3) => b3,
        None => {
            // Hashed as sent: the bytes of the attempt that succeeded.
            let (n, b3) = body.finish();
            if n != stored_bytes {
                return Err(Error::storage(format!(
                    "archive `{}`: {k}: {n} bytes sent, {stored_bytes} staged",
                    a.name
                )));
            }
            b3
        }
    };
    let part = ArchivePart {
        key: rel,
        bytes: job.bytes,
        blake3: job.blake3.clone(),
        stored_bytes,
        stored_blake3: b3,
    };
    // Parts finish out of order (several PUTs at once): stop once two
    // are recorded, whichever they are.
    if resume.record(job.i, &part)? == 2 {
        crate::failpoint!("archive.after_part");
    }
    Ok((part, false))
}

/// A body reader that hashes what passes (blake3), starting over when the
/// body is rewound for another attempt: after the PUT it holds the hash of
/// exactly the bytes of the attempt that succeeded.
struct Blake3Reader<R> {
    inner: R,
    hash: blake3::Hasher,
    n: u64,
}

impl<R> Blake3Reader<R> {
    fn new(inner: R) -> Self {
        Blake3Reader {
            inner,
            hash: blake3::Hasher::new(),
            n: 0,
        }
    }

    fn finish(&self) -> (u64, String) {
        (self.n, self.hash.finalize().to_hex().to_string())
    }
}

impl<R: Read> Read for Blake3Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

impl<R: Seek> Seek for Blake3Reader<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        if at != 0 {
            return Err(std::io::Error::other(
                "a part body is only ever rewound to its start",
            ));
        }
        self.hash = blake3::Hasher::new();
        self.n = 0;
        Ok(at)
    }
}

/// Size, SHA-256 (hex) and blake3 (hex) of a file, in one pass (the
/// seed's copy_hashing, writing into the SHA-256).
fn hash_file(f: &mut File) -> std::io::Result<(u64, String, String)> {
    use sha2::Digest;
    let mut s = sha2::Sha256::new();
    let (n, b3) = crate::primary::seed::copy_hashing(f, &mut s)?;
    Ok((n, hex_digest(s), b3))
}

impl Write for PartUploader<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.as_ref().is_some_and(|c| c.bytes >= self.chunk) {
            self.seal()?;
        }
        if self.current.is_none() {
            self.current = Some(self.open_part()?);
        }
        let st = self.current.as_mut().expect("opened above");
        let room = (self.chunk - st.bytes).min(buf.len() as u64) as usize;
        let k = st.sink.writer().write(&buf[..room])?;
        st.blake3.update(&buf[..k]);
        if let Some(s) = &mut st.sha256 {
            sha2::Digest::update(s, &buf[..k]);
        }
        st.bytes += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.current {
            Some(st) => st.sink.writer().flush(),
            None => Ok(()),
        }
    }
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
    let slots = UPLOADERS + 1;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(slots);
    let (free_tx, free_rx) = std::sync::mpsc::channel::<usize>();
    for i in 0..slots {
        free_tx.send(i).expect("receiver alive");
    }
    let jobs = std::sync::Mutex::new(rx);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let limit = a
        .bwlimit
        .clone()
        .map(|l| std::sync::Mutex::new(crate::wire::ratelimit::TokenBucket::new(l)));
    let up = PartUploader {
        recipients: a.recipients.clone(),
        unsigned: bucket.is_https(),
        stages: (0..slots)
            .map(|i| stage_dir.join(format!("{}.part{i}", a.name)))
            .collect(),
        free: free_rx,
        chunk: a.chunk_size,
        current: None,
        sealed: 0,
        tx,
        failed: &failed,
    };
    let (produced, uploaded) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..UPLOADERS)
            .map(|_| {
                let free = free_tx.clone();
                let (jobs, limit, failed, run, resume) =
                    (&jobs, limit.as_ref(), &failed, &run, &resume);
                s.spawn(move || {
                    upload_parts(a, bucket, &set.id, run, jobs, free, limit, failed, resume)
                })
            })
            .collect();
        drop(free_tx);
        // `up` (and with it the queue's sender) is dropped when this
        // returns, so the workers end either way.
        let produced = produce(cfg, a, stores, set, steps, up);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::SeekFrom;

    #[test]
    fn hash_file_gives_the_size_sha256_and_blake3_of_every_byte() {
        use sha2::Digest;
        let mut empty = tempfile::tempfile().unwrap();
        let (n, sha, _) = hash_file(&mut empty).unwrap();
        assert_eq!(n, 0);
        assert_eq!(
            sha,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // More than one read buffer (1 MiB), and a short last read.
        let data: Vec<u8> = (0..(3u32 << 20) + 7).map(|i| (i * 31) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let (n, sha, b3) = hash_file(&mut f).unwrap();
        assert_eq!(n, data.len() as u64);
        assert_eq!(sha, hex_digest(sha2::Sha256::new_with_prefix(&data)));
        assert_eq!(b3, blake3::hash(&data).to_hex().to_string());
    }
}
