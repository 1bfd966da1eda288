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
//! under `state_dir/archive-stage/` to learn its size, blake3 and — for a
//! signed PUT — SHA-256, all taken as it is written (age's output is
//! copied into the stage file by a thread that hashes it), so the upload
//! reads each stage file once. Over https parts are PUT with
//! `UNSIGNED-PAYLOAD` (TLS protects them; no SHA-256 pass); such a body is
//! hashed again as it is sent and must be the staged bytes (a signed one
//! the server checks against its SHA-256). The index is
//! always signed with its SHA-256. A pool of `uploads` (default 4) PUTs
//! parts while the next ones are produced: memory stays constant, local
//! disk is at most `uploads + 1` parts. [`WriteTiming`] says whether the
//! production or the uploads were the limit.

pub mod index;
pub mod resume;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
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

/// Where one set's write spent its time (issue 30: does the write wait
/// for its production or for its uploads?). In `archive --json` (each
/// written set's `timing`); the debug log (`SNAPSITE_LOG=snapsite=debug`)
/// has each part's timeline: staged, PUT started, PUT ended, with the
/// milliseconds since the set began and the PUTs in flight.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteTiming {
    /// The archive's `uploads`: PUTs allowed in flight.
    pub uploads: usize,
    /// From the set's start until its last part was staged.
    pub produce_seconds: f64,
    /// Of that, how long the production waited for a free stage file:
    /// every stage file queued or uploading (the uploads are the limit).
    pub producer_waited_seconds: f64,
    /// Summed over the upload workers: how long they waited for the next
    /// staged part (the production is the limit).
    pub uploads_idle_seconds: f64,
    /// Summed over the parts: how long their PUTs took.
    pub put_seconds: f64,
    /// From the last part staged until the last PUT ended.
    pub tail_seconds: f64,
    /// Most PUTs in flight at once.
    pub max_in_flight: usize,
}

/// The clock and counters behind [`WriteTiming`], shared by the producer
/// and the upload workers.
struct Clock {
    t0: Instant,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    waited_ns: AtomicU64,
    idle_ns: AtomicU64,
    put_ns: AtomicU64,
    produced_ns: AtomicU64,
    last_put_end_ns: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            t0: Instant::now(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            waited_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            put_ns: AtomicU64::new(0),
            produced_ns: AtomicU64::new(0),
            last_put_end_ns: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the set began.
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    fn ms(&self) -> u64 {
        self.now() / 1_000_000
    }

    fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
    }

    fn timing(&self, uploads: usize) -> WriteTiming {
        let s = |n: u64| n as f64 / 1e9;
        let produced = self.produced_ns.load(Relaxed);
        WriteTiming {
            uploads,
            produce_seconds: s(produced),
            producer_waited_seconds: s(self.waited_ns.load(Relaxed)),
            uploads_idle_seconds: s(self.idle_ns.load(Relaxed)),
            put_seconds: s(self.put_ns.load(Relaxed)),
            tail_seconds: s(self.last_put_end_ns.load(Relaxed).saturating_sub(produced)),
            max_in_flight: self.max_in_flight.load(Relaxed),
        }
    }
}

/// Writes the stream as part objects: each part is staged (through age
/// when encrypting) in a free stage file and handed to the upload pool,
/// which PUTs it while the next parts are produced.
struct PartUploader<'a> {
    recipients: Vec<String>,
    /// Parts are PUT with `UNSIGNED-PAYLOAD` (https only): no SHA-256.
    unsigned: bool,
    /// `uploads + 1` stage files; `free` holds the unused ones.
    stages: Vec<PathBuf>,
    free: std::sync::mpsc::Receiver<usize>,
    chunk: u64,
    /// The part being written.
    current: Option<Staging>,
    sealed: usize,
    tx: std::sync::mpsc::SyncSender<Job>,
    /// Set by an upload that failed: production stops at the next part.
    failed: &'a AtomicBool,
    clock: &'a Clock,
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
    i: usize,
    slot: usize,
    path: PathBuf,
    /// The plaintext's size and blake3.
    bytes: u64,
    blake3: String,
    /// The stored bytes' size, blake3 and (for a signed PUT) SHA-256, all
    /// taken as the stage file was written: the upload reads it once.
    stored_bytes: u64,
    stored_blake3: String,
    sha256: Option<String>,
}

/// What age wrote for one part: the stage file's size, blake3 and
/// SHA-256 (when the PUT is signed), hashed on the way to the file.
type Pumped = std::io::Result<(u64, String, Option<String>)>;

enum Sink {
    Plain(File),
    /// age, its stdin, and the thread copying its stdout into the stage
    /// file while hashing it.
    Age(Child, ChildStdin, std::thread::JoinHandle<Pumped>),
}

impl Sink {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(f) => f,
            Sink::Age(_, i, _) => i,
        }
    }
}

fn io_err(m: String) -> std::io::Error {
    std::io::Error::other(m)
}

/// Copy `from` into `to` to its end, hashing the bytes (blake3, and
/// SHA-256 when `sha256`): (size, blake3, SHA-256), hex.
fn pump(from: impl Read, to: impl Write, sha256: bool) -> Pumped {
    let mut tee = Sha256Tee {
        inner: to,
        sha: sha256.then(<sha2::Sha256 as sha2::Digest>::new),
    };
    let (n, b3) = crate::primary::seed::copy_hashing(from, &mut tee)?;
    tee.inner.flush()?;
    Ok((n, b3, tee.sha.map(hex_digest)))
}

/// Writes to `inner`, hashing what it took with SHA-256 (when `sha`).
struct Sha256Tee<W> {
    inner: W,
    sha: Option<sha2::Sha256>,
}

impl<W: Write> Write for Sha256Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        if let Some(s) = &mut self.sha {
            sha2::Digest::update(s, &buf[..k]);
        }
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
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
        let waiting = Instant::now();
        let slot = self.free.recv().map_err(|_| stopped())?;
        Clock::add(&self.clock.waited_ns, waiting);
        if self.failed.load(Relaxed) {
            return Err(stopped());
        }
        let stage = self.stages[slot].clone();
        let _ = std::fs::remove_file(&stage);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&stage)?;
        let plain = self.recipients.is_empty();
        let sink = if plain {
            Sink::Plain(file)
        } else {
            let mut cmd = Command::new("age");
            cmd.arg("--encrypt");
            for r in &self.recipients {
                cmd.arg("-r").arg(r);
            }
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd
                .spawn()
                .map_err(|e| io_err(format!("cannot run `age` (package age): {e}")))?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let sha256 = !self.unsigned;
            let pumping = std::thread::spawn(move || {
                pump(
                    stdout,
                    std::io::BufWriter::with_capacity(1 << 20, file),
                    sha256,
                )
            });
            Sink::Age(child, stdin, pumping)
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
        let blake3 = st.blake3.finalize().to_hex().to_string();
        let (stored_bytes, stored_blake3, sha256) = match st.sink {
            // A scratch file, read back at once: no fsync (a crash
            // restarts the set under a new run id anyway).
            Sink::Plain(f) => {
                drop(f);
                (st.bytes, blake3.clone(), st.sha256.map(hex_digest))
            }
            Sink::Age(mut child, stdin, pumping) => {
                drop(stdin);
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = (&mut e).take(4096).read_to_string(&mut err);
                }
                let status = child.wait()?;
                let pumped = pumping
                    .join()
                    .map_err(|_| io_err("the copy of age's output panicked".into()))?;
                if !status.success() {
                    return Err(io_err(format!("age failed ({status}): {}", err.trim())));
                }
                pumped.map_err(|e| io_err(format!("staging age's output: {e}")))?
            }
        };
        let job = Job {
            i: self.sealed,
            slot: st.slot,
            path: self.stages[st.slot].clone(),
            bytes: st.bytes,
            blake3,
            stored_bytes,
            stored_blake3,
            sha256,
        };
        tracing::debug!(
            part = job.i,
            bytes = job.stored_bytes,
            at_ms = self.clock.ms(),
            "part staged"
        );
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

/// What the upload workers share.
struct Pool<'a> {
    a: &'a Archive,
    bucket: &'a Bucket,
    set_id: &'a str,
    run: &'a str,
    jobs: std::sync::Mutex<std::sync::mpsc::Receiver<Job>>,
    limit: Option<std::sync::Mutex<crate::wire::ratelimit::TokenBucket>>,
    failed: &'a AtomicBool,
    resume: &'a resume::Resume,
    clock: &'a Clock,
}

/// One upload worker: take staged parts off the queue, PUT each, remove
/// the stage file and give its slot back. The first error stops the pool
/// and production.
fn upload_parts(
    pool: &Pool<'_>,
    free: std::sync::mpsc::Sender<usize>,
) -> Result<Vec<(usize, ArchivePart, bool)>> {
    let mut parts = Vec::new();
    loop {
        let waiting = Instant::now();
        let job = match pool.jobs.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return Ok(parts),
        };
        // Only a wait that a part ended counts as idle (the last wait,
        // for a queue that closes, is the end of the set).
        Clock::add(&pool.clock.idle_ns, waiting);
        if pool.failed.load(Relaxed) {
            let _ = std::fs::remove_file(&job.path);
            continue;
        }
        let n = pool.clock.in_flight.fetch_add(1, Relaxed) + 1;
        pool.clock.max_in_flight.fetch_max(n, Relaxed);
        tracing::debug!(
            part = job.i,
            at_ms = pool.clock.ms(),
            in_flight = n,
            signed = job.sha256.is_some(),
            "part PUT starts"
        );
        let putting = Instant::now();
        let r = upload_one(pool, &job);
        let n = pool.clock.in_flight.fetch_sub(1, Relaxed) - 1;
        Clock::add(&pool.clock.put_ns, putting);
        pool.clock
            .last_put_end_ns
            .fetch_max(pool.clock.now(), Relaxed);
        let _ = std::fs::remove_file(&job.path);
        // The slot back (after a failure too, so that a producer waiting
        // for one wakes and sees `failed`).
        let _ = free.send(job.slot);
        match r {
            Ok((p, reused)) => {
                tracing::debug!(
                    part = job.i,
                    reused,
                    at_ms = pool.clock.ms(),
                    put_ms = putting.elapsed().as_millis() as u64,
                    in_flight = n,
                    "part in the bucket"
                );
                parts.push((job.i, p, reused));
            }
            Err(e) => {
                pool.failed.store(true, Relaxed);
                return Err(e);
            }
        }
    }
}

/// Part `job` into the bucket: the part an interrupted run uploaded when
/// its plaintext is this one and the bucket holds it at the recorded size
/// (`true`: reused), else a PUT under this run's key, recorded in the
/// journal once it returns.
fn upload_one(pool: &Pool<'_>, job: &Job) -> Result<(ArchivePart, bool)> {
    let (a, bucket) = (pool.a, pool.bucket);
    if let Some(p) = pool.resume.candidate(job.i, job.bytes, &job.blake3)
        && bucket.head(&key(a, &p.key))? == Some(p.stored_bytes)
    {
        return Ok((p.clone(), true));
    }
    let read_err = |e| Error::io(format!("read {}", job.path.display()), e);
    let f = File::open(&job.path).map_err(read_err)?;
    // Signed with the SHA-256 taken while staging; over https unsigned.
    let payload = match &job.sha256 {
        Some(sha) => Payload::Sha256(sha.clone()),
        None => Payload::Unsigned,
    };
    let rel = index::part_key(pool.set_id, pool.run, job.i);
    let k = key(a, &rel);
    // An unsigned body is hashed as it is sent (over again if the PUT is
    // tried again) and must be the staged bytes: the index's stored blake3
    // is of the bytes that went out. A signed body needs no second hash:
    // the server checks it against the SHA-256 taken while staging.
    let unsigned = payload == Payload::Unsigned;
    let mut body = Blake3Reader::new(std::io::BufReader::with_capacity(1 << 20, f), unsigned);
    match &pool.limit {
        Some(tb) => bucket.put(
            &k,
            &mut Limited {
                inner: &mut body,
                bucket: tb,
            },
            job.stored_bytes,
            payload,
            true,
        )?,
        None => bucket.put(&k, &mut body, job.stored_bytes, payload, true)?,
    }
    let (n, sent_b3) = body.finish();
    if n != job.stored_bytes || sent_b3.as_ref().is_some_and(|b| *b != job.stored_blake3) {
        return Err(Error::integrity(format!(
            "archive `{}`: {k}: the stage file {} changed between staging and its PUT ({n} bytes sent, blake3 {}; {} bytes staged, blake3 {})",
            a.name,
            job.path.display(),
            sent_b3.as_deref().unwrap_or("-"),
            job.stored_bytes,
            job.stored_blake3
        )));
    }
    let part = ArchivePart {
        key: rel,
        bytes: job.bytes,
        blake3: job.blake3.clone(),
        stored_bytes: job.stored_bytes,
        stored_blake3: job.stored_blake3.clone(),
    };
    // Parts finish out of order (several PUTs at once): stop once two
    // are recorded, whichever they are.
    if pool.resume.record(job.i, &part)? == 2 {
        crate::failpoint!("archive.after_part");
    }
    Ok((part, false))
}

/// A body reader that counts what passes and (when `hashing`) hashes it
/// with blake3, starting over when the body is rewound for another
/// attempt: after the PUT it holds the size and hash of exactly the bytes
/// of the attempt that succeeded.
struct Blake3Reader<R> {
    inner: R,
    hash: Option<blake3::Hasher>,
    n: u64,
}

impl<R> Blake3Reader<R> {
    fn new(inner: R, hashing: bool) -> Self {
        Blake3Reader {
            inner,
            hash: hashing.then(blake3::Hasher::new),
            n: 0,
        }
    }

    fn finish(&self) -> (u64, Option<String>) {
        (
            self.n,
            self.hash
                .as_ref()
                .map(|h| h.finalize().to_hex().to_string()),
        )
    }
}

impl<R: Read> Read for Blake3Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        if let Some(h) = &mut self.hash {
            h.update(&buf[..k]);
        }
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
        if let Some(h) = &mut self.hash {
            h.reset();
        }
        self.n = 0;
        Ok(at)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most 7000 bytes a read (short reads, as
    /// from age's pipe).
    struct Dribble<'a>(&'a [u8]);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let k = self.0.len().min(buf.len()).min(7000);
            buf[..k].copy_from_slice(&self.0[..k]);
            self.0 = &self.0[k..];
            Ok(k)
        }
    }

    #[test]
    fn pump_copies_every_byte_and_hashes_what_it_wrote() {
        use sha2::Digest;
        let mut out = Vec::new();
        let (n, b3, sha) = pump(Dribble(&[]), &mut out, true).unwrap();
        assert_eq!((n, out.len()), (0, 0));
        assert_eq!(
            sha.as_deref(),
            Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        assert_eq!(b3, blake3::hash(b"").to_hex().to_string());
        // More than one copy buffer (1 MiB), short reads, a short end.
        let data: Vec<u8> = (0..(3u32 << 20) + 7).map(|i| (i * 31) as u8).collect();
        let mut out = Vec::new();
        let (n, b3, sha) = pump(Dribble(&data), &mut out, true).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(out == data, "the copy differs");
        assert_eq!(sha, Some(hex_digest(sha2::Sha256::new_with_prefix(&data))));
        assert_eq!(b3, blake3::hash(&data).to_hex().to_string());
        // Unsigned (https): no SHA-256 pass.
        let (_, b3u, none) = pump(Dribble(&data), std::io::sink(), false).unwrap();
        assert_eq!((b3u, none), (b3, None));
    }

    #[test]
    fn the_blake3_reader_hashes_the_attempt_that_was_sent_last() {
        let data = b"part bytes, sent twice".to_vec();
        for hashing in [true, false] {
            let mut r = Blake3Reader::new(std::io::Cursor::new(data.clone()), hashing);
            let mut half = [0u8; 5];
            r.read_exact(&mut half).unwrap();
            r.seek(std::io::SeekFrom::Start(0)).unwrap();
            let mut all = Vec::new();
            r.read_to_end(&mut all).unwrap();
            assert_eq!(
                r.finish(),
                (
                    data.len() as u64,
                    hashing.then(|| blake3::hash(&data).to_hex().to_string())
                )
            );
            assert!(r.seek(std::io::SeekFrom::Start(3)).is_err());
        }
    }
}
