//! The archive write's part machinery (issue 30): each part written once
//! to a stage file under `state_dir/archive-stage/` (its size and blake3
//! taken as it is written), a pool of `uploads` workers PUTting parts —
//! a plaintext part **while it is produced**, its PUT reading the stage
//! file behind the writer ([`Follower`]) — and the clock behind
//! [`WriteTiming`] (does the write wait for its production or its uploads?).
//!
//! A PUT needs the part's length before its body. A plaintext part is
//! `chunk_size` bytes unless it is the stream's last, so its PUT starts
//! with that length once a quarter of it is written; a last part that
//! ends short fails that PUT before its last byte (the server stores
//! nothing of a body shorter than its `Content-Length`) and is PUT again
//! at its length from the stage file. Over http the body is signed
//! chunk by chunk (`aws-chunked`, [`Payload::Chunked`]), over https sent
//! `UNSIGNED-PAYLOAD`; either way the bytes sent are hashed (blake3) as
//! they go and must be the bytes produced. An age part's length is known
//! only once age is done: it is PUT when sealed, the same way.

use super::*;

/// Where one set's write spent its time (issue 30: does the write wait
/// for its production or for its uploads?). In `archive --json` (each
/// written set's `timing`); the debug log (`SNAPSITE_LOG=snapsite=debug`)
/// has each part's timeline: staged, PUT started, PUT ended, with the
/// milliseconds since the set began and the PUTs in flight.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WriteTiming {
    /// The archive's `uploads`: PUTs allowed in flight.
    pub uploads: usize,
    /// From the set's start until its last part was sealed.
    pub produce_seconds: f64,
    /// Of that, how long the production waited for a free stage file:
    /// every stage file queued or uploading (the uploads are the limit).
    pub producer_waited_seconds: f64,
    /// Summed over the upload workers: how long they waited for the next
    /// part to be opened (the production is the limit).
    pub uploads_idle_seconds: f64,
    /// Summed over the parts: from a worker taking the part until its PUT
    /// ended (a PUT that follows its part lasts at least the rest of that
    /// part's production).
    pub put_seconds: f64,
    /// Of that, how long the PUTs waited for bytes not yet produced.
    pub put_waited_seconds: f64,
    /// Parts PUT while they were produced.
    pub streamed_parts: usize,
    /// Streamed parts that ended short of `chunk_size` (the stream's last),
    /// their first PUT cut before its end and made again at their length.
    pub restarted_parts: usize,
    /// From the last part sealed until the last PUT ended.
    pub tail_seconds: f64,
    /// Most PUTs in flight at once.
    pub max_in_flight: usize,
}

/// The clock and counters behind [`WriteTiming`], shared by the producer
/// and the upload workers.
pub(super) struct Clock {
    pub(super) t0: Instant,
    pub(super) in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
    pub(super) waited_ns: AtomicU64,
    pub(super) idle_ns: AtomicU64,
    pub(super) put_ns: AtomicU64,
    pub(super) follow_ns: AtomicU64,
    pub(super) streamed: AtomicUsize,
    pub(super) restarted: AtomicUsize,
    pub(super) produced_ns: AtomicU64,
    pub(super) last_put_end_ns: AtomicU64,
}

impl Clock {
    pub(super) fn new() -> Clock {
        Clock {
            t0: Instant::now(),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            waited_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(0),
            put_ns: AtomicU64::new(0),
            follow_ns: AtomicU64::new(0),
            streamed: AtomicUsize::new(0),
            restarted: AtomicUsize::new(0),
            produced_ns: AtomicU64::new(0),
            last_put_end_ns: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the set began.
    pub(super) fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    pub(super) fn ms(&self) -> u64 {
        self.now() / 1_000_000
    }

    pub(super) fn add(counter: &AtomicU64, since: Instant) {
        counter.fetch_add(since.elapsed().as_nanos() as u64, Relaxed);
    }

    pub(super) fn timing(&self, uploads: usize) -> WriteTiming {
        let s = |n: u64| n as f64 / 1e9;
        let produced = self.produced_ns.load(Relaxed);
        WriteTiming {
            uploads,
            produce_seconds: s(produced),
            producer_waited_seconds: s(self.waited_ns.load(Relaxed)),
            uploads_idle_seconds: s(self.idle_ns.load(Relaxed)),
            put_seconds: s(self.put_ns.load(Relaxed)),
            put_waited_seconds: s(self.follow_ns.load(Relaxed)),
            streamed_parts: self.streamed.load(Relaxed),
            restarted_parts: self.restarted.load(Relaxed),
            tail_seconds: s(self.last_put_end_ns.load(Relaxed).saturating_sub(produced)),
            max_in_flight: self.max_in_flight.load(Relaxed),
        }
    }
}

/// Writes the stream as part objects: each part is written (through age
/// when encrypting) to a free stage file and handed to the upload pool
/// as it is opened; a plaintext part's PUT follows its production.
pub(super) struct PartUploader<'a> {
    pub(super) recipients: Vec<String>,
    /// `uploads + 1` stage files; `free` holds the unused ones.
    pub(super) stages: Vec<PathBuf>,
    pub(super) free: std::sync::mpsc::Receiver<usize>,
    pub(super) chunk: u64,
    /// The part being written.
    pub(super) current: Option<Staging>,
    /// Parts opened so far.
    pub(super) opened: usize,
    pub(super) tx: std::sync::mpsc::SyncSender<Job>,
    /// Set by an upload that failed: production stops at the next part.
    pub(super) failed: &'a AtomicBool,
    pub(super) clock: &'a Clock,
}

/// A part being staged: its sink, the plaintext's blake3 and size, and
/// what its upload sees of it.
pub(super) struct Staging {
    pub(super) i: usize,
    pub(super) sink: Sink,
    pub(super) blake3: blake3::Hasher,
    pub(super) bytes: u64,
    pub(super) progress: Arc<Progress>,
}

/// A part for the upload pool, queued when it is opened.
pub(super) struct Job {
    pub(super) i: usize,
    pub(super) slot: usize,
    pub(super) path: PathBuf,
    /// How much of the stage file is written, and the part once sealed.
    pub(super) progress: Arc<Progress>,
    /// Plaintext: the stage file's bytes are the part's as they are
    /// written, so its PUT may follow the production.
    pub(super) streamable: bool,
}

/// A part once it is sealed.
#[derive(Debug, Clone)]
pub(super) struct Sealed {
    /// The plaintext's size and blake3.
    pub(super) bytes: u64,
    pub(super) blake3: String,
    /// The stored bytes' size and blake3 (the ciphertext's with age).
    pub(super) stored_bytes: u64,
    pub(super) stored_blake3: String,
}

#[derive(Debug, Clone)]
pub(super) enum PartState {
    /// Being written: this many bytes of the stage file are (plaintext
    /// only; an age part stays at 0 until it is sealed).
    Open(u64),
    Sealed(Sealed),
    /// The production stopped before the part was sealed (its error is
    /// the run's).
    Abandoned,
}

/// One part's state, shared by the producer and its upload.
pub(super) struct Progress {
    state: std::sync::Mutex<PartState>,
    changed: std::sync::Condvar,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            state: std::sync::Mutex::new(PartState::Open(0)),
            changed: std::sync::Condvar::new(),
        }
    }

    fn set(&self, f: impl FnOnce(&mut PartState)) {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    pub(super) fn advance(&self, k: u64) {
        self.set(|s| {
            if let PartState::Open(n) = s {
                *n += k
            }
        })
    }

    pub(super) fn seal(&self, sealed: Sealed) {
        self.set(|s| *s = PartState::Sealed(sealed))
    }

    pub(super) fn abandon(&self) {
        self.set(|s| {
            if let PartState::Open(_) = s {
                *s = PartState::Abandoned
            }
        })
    }

    /// The state once `ready` holds for it (or the part ended).
    pub(super) fn wait(&self, ready: impl Fn(&PartState) -> bool) -> PartState {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while matches!(*g, PartState::Open(_)) && !ready(&g) {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.clone()
    }

    /// The sealed part, `None` if it was abandoned.
    pub(super) fn wait_sealed(&self) -> Option<Sealed> {
        match self.wait(|_| false) {
            PartState::Sealed(s) => Some(s),
            _ => None,
        }
    }
}

/// What age wrote for one part: the stage file's size and blake3, hashed
/// on the way to the file.
type Pumped = std::io::Result<(u64, String)>;

pub(super) enum Sink {
    Plain(File),
    /// age, its stdin, and the thread copying its stdout into the stage
    /// file while hashing it.
    Age(Child, ChildStdin, std::thread::JoinHandle<Pumped>),
}

impl Sink {
    pub(super) fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Plain(f) => f,
            Sink::Age(_, i, _) => i,
        }
    }
}

pub(super) fn io_err(m: String) -> std::io::Error {
    std::io::Error::other(m)
}

/// Copy `from` into `to` to its end, hashing the bytes: (size, blake3 hex).
pub(super) fn pump(from: impl Read, mut to: impl Write) -> Pumped {
    let (n, b3) = crate::primary::seed::copy_hashing(from, &mut to)?;
    to.flush()?;
    Ok((n, b3))
}

/// A reader that waits for the bandwidth limit (one bucket shared by the
/// uploads: the limit is the archive's, not each connection's).
pub(super) struct Limited<'a, R> {
    pub(super) inner: R,
    pub(super) bucket: &'a std::sync::Mutex<crate::wire::ratelimit::TokenBucket>,
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
    pub(super) fn open_part(&mut self) -> std::io::Result<Staging> {
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
            let pumping = std::thread::spawn(move || {
                pump(stdout, std::io::BufWriter::with_capacity(1 << 20, file))
            });
            Sink::Age(child, stdin, pumping)
        };
        let progress = Arc::new(Progress::new());
        let i = self.opened;
        // Queued now: the upload of a plaintext part follows its writing.
        self.tx
            .send(Job {
                i,
                slot,
                path: stage,
                progress: progress.clone(),
                streamable: plain,
            })
            .map_err(|_| stopped())?;
        self.opened += 1;
        Ok(Staging {
            i,
            sink,
            blake3: blake3::Hasher::new(),
            bytes: 0,
            progress,
        })
    }

    /// Finish the current part (close age) and tell its upload.
    pub(super) fn seal(&mut self) -> std::io::Result<()> {
        let Some(st) = self.current.take() else {
            return Ok(());
        };
        let (i, progress) = (st.i, st.progress.clone());
        let r = Self::sealed(st);
        match &r {
            Ok(s) => {
                tracing::debug!(
                    part = i,
                    bytes = s.stored_bytes,
                    at_ms = self.clock.ms(),
                    "part staged"
                );
                progress.seal(s.clone())
            }
            Err(_) => progress.abandon(),
        }
        r.map(|_| ())
    }

    fn sealed(st: Staging) -> std::io::Result<Sealed> {
        let blake3 = st.blake3.finalize().to_hex().to_string();
        let (stored_bytes, stored_blake3) = match st.sink {
            // A scratch file: no fsync (a crash restarts the set under a
            // new run id anyway).
            Sink::Plain(f) => {
                drop(f);
                (st.bytes, blake3.clone())
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
        Ok(Sealed {
            bytes: st.bytes,
            blake3,
            stored_bytes,
            stored_blake3,
        })
    }
}

impl Drop for PartUploader<'_> {
    /// A production that stops mid-part (an error) abandons the part: its
    /// upload, which may be following it, stops without a PUT.
    fn drop(&mut self) {
        if let Some(st) = self.current.take() {
            st.progress.abandon();
        }
    }
}

/// What the upload workers share.
pub(super) struct Pool<'a> {
    pub(super) a: &'a Archive,
    pub(super) bucket: &'a Bucket,
    pub(super) set_id: &'a str,
    pub(super) run: &'a str,
    pub(super) jobs: std::sync::Mutex<std::sync::mpsc::Receiver<Job>>,
    pub(super) limit: Option<std::sync::Mutex<crate::wire::ratelimit::TokenBucket>>,
    pub(super) failed: &'a AtomicBool,
    pub(super) resume: &'a resume::Resume,
    pub(super) clock: &'a Clock,
}

/// One upload worker: take parts off the queue, PUT each, remove the
/// stage file and give its slot back. The first error stops the pool and
/// production.
pub(super) fn upload_parts(
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
            // The producer holds its own handle of a part it still writes.
            let _ = std::fs::remove_file(&job.path);
            let _ = free.send(job.slot);
            continue;
        }
        let putting = Instant::now();
        let r = upload_one(pool, &job);
        Clock::add(&pool.clock.put_ns, putting);
        pool.clock
            .last_put_end_ns
            .fetch_max(pool.clock.now(), Relaxed);
        // The part is sealed (or abandoned) once its upload returns: the
        // producer has closed the stage file.
        let _ = std::fs::remove_file(&job.path);
        // The slot back (after a failure too, so that a producer waiting
        // for one wakes and sees `failed`).
        let _ = free.send(job.slot);
        match r {
            Ok(Some((p, reused))) => {
                tracing::debug!(
                    part = job.i,
                    reused,
                    at_ms = pool.clock.ms(),
                    put_ms = putting.elapsed().as_millis() as u64,
                    in_flight = pool.clock.in_flight.load(Relaxed),
                    "part in the bucket"
                );
                parts.push((job.i, p, reused));
            }
            // Abandoned: the production's error is the run's.
            Ok(None) => {}
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
/// journal once it returns. `None`: the production stopped before the
/// part was sealed (nothing was stored).
pub(super) fn upload_one(pool: &Pool<'_>, job: &Job) -> Result<Option<(ArchivePart, bool)>> {
    let (a, bucket) = (pool.a, pool.bucket);
    let chunk = a.chunk_size;
    // A part an earlier run may have stored is judged once sealed.
    let stream = job.streamable && !pool.resume.has(job.i);
    let planned = if stream {
        match job
            .progress
            .wait(|s| matches!(s, PartState::Open(n) if *n >= chunk / 4))
        {
            PartState::Open(_) => chunk,
            PartState::Sealed(s) => s.stored_bytes,
            PartState::Abandoned => return Ok(None),
        }
    } else {
        let Some(s) = job.progress.wait_sealed() else {
            return Ok(None);
        };
        if let Some(p) = pool.resume.candidate(job.i, s.bytes, &s.blake3)
            && bucket.head(&key(a, &p.key))? == Some(p.stored_bytes)
        {
            return Ok(Some((p.clone(), true)));
        }
        s.stored_bytes
    };
    let rel = index::part_key(pool.set_id, pool.run, job.i);
    let k = key(a, &rel);
    let n = pool.clock.in_flight.fetch_add(1, Relaxed) + 1;
    pool.clock.max_in_flight.fetch_max(n, Relaxed);
    let payload = if bucket.is_https() {
        Payload::Unsigned
    } else {
        Payload::Chunked
    };
    tracing::debug!(
        part = job.i,
        at_ms = pool.clock.ms(),
        in_flight = n,
        signed = payload != Payload::Unsigned,
        streamed = stream,
        "part PUT starts"
    );
    let first = put_following(pool, job, &k, planned, &payload);
    let sent = match first {
        Ok(sent) => Ok(sent),
        Err(e) => match job.progress.wait(|_| false) {
            // The stream's last part, shorter than the PUT said: that PUT
            // was cut before its end; again at the part's length.
            PartState::Sealed(s) if s.stored_bytes < planned => {
                pool.clock.restarted.fetch_add(1, Relaxed);
                tracing::debug!(
                    part = job.i,
                    bytes = s.stored_bytes,
                    planned,
                    at_ms = pool.clock.ms(),
                    "part ended short: PUT again at its length"
                );
                put_following(pool, job, &k, s.stored_bytes, &payload)
            }
            _ => Err(e),
        },
    };
    pool.clock.in_flight.fetch_sub(1, Relaxed);
    let (n_sent, sent_b3) = match sent {
        Ok(s) => s,
        Err(_) if matches!(job.progress.wait(|_| false), PartState::Abandoned) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if stream {
        pool.clock.streamed.fetch_add(1, Relaxed);
    }
    let Some(s) = job.progress.wait_sealed() else {
        return Ok(None);
    };
    // The bytes that went out must be the bytes produced: the index's
    // stored blake3 is of what is in the bucket.
    if n_sent != s.stored_bytes || sent_b3 != s.stored_blake3 {
        return Err(Error::integrity(format!(
            "archive `{}`: {k}: the stage file {} changed under its PUT ({n_sent} bytes sent, blake3 {sent_b3}; {} bytes produced, blake3 {})",
            a.name,
            job.path.display(),
            s.stored_bytes,
            s.stored_blake3
        )));
    }
    let part = ArchivePart {
        key: rel,
        bytes: s.bytes,
        blake3: s.blake3,
        stored_bytes: s.stored_bytes,
        stored_blake3: s.stored_blake3,
    };
    // Parts finish out of order (several PUTs at once): stop once two
    // are recorded, whichever they are.
    if pool.resume.record(job.i, &part)? == 2 {
        crate::failpoint!("archive.after_part");
    }
    Ok(Some((part, false)))
}

/// One PUT of `len` bytes of the part's stage file, following its
/// production: (bytes sent, their blake3) of the attempt that succeeded.
fn put_following(
    pool: &Pool<'_>,
    job: &Job,
    k: &str,
    len: u64,
    payload: &Payload,
) -> Result<(u64, String)> {
    let f =
        File::open(&job.path).map_err(|e| Error::io(format!("read {}", job.path.display()), e))?;
    let mut body = Follower::new(f, &job.progress, len, Some(pool.clock));
    match &pool.limit {
        Some(tb) => pool.bucket.put(
            k,
            &mut Limited {
                inner: &mut body,
                bucket: tb,
            },
            len,
            payload.clone(),
            true,
        )?,
        None => pool.bucket.put(k, &mut body, len, payload.clone(), true)?,
    }
    Ok(body.finish())
}

/// A PUT's body: `len` bytes of a stage file read behind its writer
/// (waiting while the bytes are not written yet), hashed with blake3 as
/// they pass, starting over when the body is rewound for another
/// attempt. A part that is sealed shorter than `len`, or abandoned, is a
/// read error: the PUT stops before its end and stores nothing.
pub(super) struct Follower<'a> {
    file: File,
    progress: &'a Progress,
    len: u64,
    pos: u64,
    hash: blake3::Hasher,
    clock: Option<&'a Clock>,
}

impl<'a> Follower<'a> {
    pub(super) fn new(
        file: File,
        progress: &'a Progress,
        len: u64,
        clock: Option<&'a Clock>,
    ) -> Self {
        Follower {
            file,
            progress,
            len,
            pos: 0,
            hash: blake3::Hasher::new(),
            clock,
        }
    }

    /// The bytes read and their blake3 (hex).
    pub(super) fn finish(&self) -> (u64, String) {
        (self.pos, self.hash.finalize().to_hex().to_string())
    }
}

impl Read for Follower<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let pos = self.pos;
        let waiting = Instant::now();
        let state = self
            .progress
            .wait(|s| matches!(s, PartState::Open(n) if *n > pos));
        if let Some(c) = self.clock {
            Clock::add(&c.follow_ns, waiting);
        }
        let avail = match state {
            PartState::Open(n) => n,
            PartState::Sealed(s) if s.stored_bytes > pos => s.stored_bytes,
            PartState::Sealed(s) => {
                return Err(io_err(format!(
                    "the part ended at {} bytes, short of the {} its PUT declared",
                    s.stored_bytes, self.len
                )));
            }
            PartState::Abandoned => {
                return Err(io_err(
                    "the production stopped before the part was complete".into(),
                ));
            }
        };
        let want = (avail.min(self.len) - pos).min(buf.len() as u64) as usize;
        let k = self.file.read_at(&mut buf[..want], pos)?;
        if k == 0 {
            return Err(io_err(format!(
                "the stage file ends at {pos} bytes, {avail} were written"
            )));
        }
        self.hash.update(&buf[..k]);
        self.pos += k as u64;
        Ok(k)
    }
}

impl Seek for Follower<'_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        if pos != std::io::SeekFrom::Start(0) {
            return Err(std::io::Error::other(
                "a part body is only ever rewound to its start",
            ));
        }
        self.hash.reset();
        self.pos = 0;
        Ok(0)
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
        st.bytes += k as u64;
        if let Sink::Plain(_) = st.sink {
            // In the stage file (page cache) now: its PUT may send it.
            st.progress.advance(k as u64);
        }
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.current {
            Some(st) => st.sink.writer().flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::s3::request::tests::Dribble;

    #[test]
    fn pump_copies_every_byte_and_hashes_what_it_wrote() {
        let mut out = Vec::new();
        let (n, b3) = pump(Dribble(&[]), &mut out).unwrap();
        assert_eq!((n, out.len()), (0, 0));
        assert_eq!(b3, blake3::hash(b"").to_hex().to_string());
        // More than one copy buffer (1 MiB), short reads, a short end.
        let data: Vec<u8> = (0..(3u32 << 20) + 7).map(|i| (i * 31) as u8).collect();
        let mut out = Vec::new();
        let (n, b3) = pump(Dribble(&data), &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        assert!(out == data, "the copy differs");
        assert_eq!(b3, blake3::hash(&data).to_hex().to_string());
    }

    fn sealed(data: &[u8]) -> Sealed {
        let b3 = blake3::hash(data).to_hex().to_string();
        Sealed {
            bytes: data.len() as u64,
            blake3: b3.clone(),
            stored_bytes: data.len() as u64,
            stored_blake3: b3,
        }
    }

    /// A writer thread appends to the stage file in steps while the
    /// follower reads behind it: the follower gets every byte, in order,
    /// never one not yet written; rewound, it hashes the attempt again.
    #[test]
    fn the_follower_reads_behind_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage");
        let data: Vec<u8> = (0..(1u32 << 20) + 123).map(|i| (i * 7) as u8).collect();
        let progress = Progress::new();
        let mut w = File::create(&path).unwrap();
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut f = Follower::new(
                    File::open(&path).unwrap(),
                    &progress,
                    data.len() as u64,
                    None,
                );
                let mut got = Vec::new();
                let mut buf = vec![0u8; 50_000];
                loop {
                    let k = f.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    // Never past what the writer said is written.
                    if let PartState::Open(n) = progress.wait(|_| true) {
                        assert!(got.len() + k <= n as usize);
                    }
                    got.extend_from_slice(&buf[..k]);
                }
                assert!(got == data, "the bytes differ");
                assert_eq!(
                    f.finish(),
                    (data.len() as u64, blake3::hash(&data).to_hex().to_string())
                );
                // Rewound: read again from the start, hashed again.
                f.seek(std::io::SeekFrom::Start(0)).unwrap();
                let mut again = Vec::new();
                f.read_to_end(&mut again).unwrap();
                assert_eq!(f.finish().0, data.len() as u64);
                assert!(f.seek(std::io::SeekFrom::Start(3)).is_err());
            });
            for piece in data.chunks(77_777) {
                w.write_all(piece).unwrap();
                progress.advance(piece.len() as u64);
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            progress.seal(sealed(&data));
            reader.join().unwrap();
        });
    }

    /// A part sealed shorter than its PUT's length, or abandoned, fails
    /// the read (the PUT stops short of its Content-Length: nothing is
    /// stored); with the sealed length it reads to the end.
    #[test]
    fn a_short_or_abandoned_part_fails_its_follower() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stage");
        let data = vec![5u8; 1000];
        std::fs::write(&path, &data).unwrap();
        let short = Progress::new();
        short.advance(1000);
        short.seal(sealed(&data));
        let mut f = Follower::new(File::open(&path).unwrap(), &short, 4096, None);
        let mut out = Vec::new();
        let e = f.read_to_end(&mut out).unwrap_err().to_string();
        assert!(e.contains("ended at 1000 bytes, short of the 4096"), "{e}");
        assert_eq!(out.len(), 1000);
        let mut f = Follower::new(File::open(&path).unwrap(), &short, 1000, None);
        let mut out = Vec::new();
        f.read_to_end(&mut out).unwrap();
        assert_eq!(f.finish(), (1000, blake3::hash(&data).to_hex().to_string()));

        let gone = Progress::new();
        gone.advance(10);
        gone.abandon();
        // `abandon` after a seal does not undo it.
        let mut f = Follower::new(File::open(&path).unwrap(), &gone, 4096, None);
        let mut out = Vec::new();
        let e = f.read_to_end(&mut out).unwrap_err().to_string();
        assert!(e.contains("production stopped"), "{e}");
        assert!(gone.wait_sealed().is_none());
        short.abandon();
        assert!(short.wait_sealed().is_some());
    }
}
