//! The archive write's part machinery (issue 30): each part staged once
//! under `state_dir/archive-stage/` (size, blake3 and the SHA-256 of a
//! signed PUT taken as it is written), a pool of `uploads` workers PUTting
//! staged parts while the next ones are produced, and the clock behind
//! [`WriteTiming`] (does the write wait for its production or its uploads?).

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
pub(super) struct Clock {
    pub(super) t0: Instant,
    pub(super) in_flight: AtomicUsize,
    pub(super) max_in_flight: AtomicUsize,
    pub(super) waited_ns: AtomicU64,
    pub(super) idle_ns: AtomicU64,
    pub(super) put_ns: AtomicU64,
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
            tail_seconds: s(self.last_put_end_ns.load(Relaxed).saturating_sub(produced)),
            max_in_flight: self.max_in_flight.load(Relaxed),
        }
    }
}

/// Writes the stream as part objects: each part is staged (through age
/// when encrypting) in a free stage file and handed to the upload pool,
/// which PUTs it while the next parts are produced.
pub(super) struct PartUploader<'a> {
    pub(super) recipients: Vec<String>,
    /// Parts are PUT with `UNSIGNED-PAYLOAD` (https only): no SHA-256.
    pub(super) unsigned: bool,
    /// `uploads + 1` stage files; `free` holds the unused ones.
    pub(super) stages: Vec<PathBuf>,
    pub(super) free: std::sync::mpsc::Receiver<usize>,
    pub(super) chunk: u64,
    /// The part being written.
    pub(super) current: Option<Staging>,
    pub(super) sealed: usize,
    pub(super) tx: std::sync::mpsc::SyncSender<Job>,
    /// Set by an upload that failed: production stops at the next part.
    pub(super) failed: &'a AtomicBool,
    pub(super) clock: &'a Clock,
}

/// A part being staged: its sink and the plaintext's blake3 and size;
/// without encryption the stored bytes are the plaintext, so their
/// SHA-256 (for the signed PUT) is computed here too, saving a read.
pub(super) struct Staging {
    pub(super) slot: usize,
    pub(super) sink: Sink,
    pub(super) blake3: blake3::Hasher,
    pub(super) sha256: Option<sha2::Sha256>,
    pub(super) bytes: u64,
}

/// A staged part for the upload pool.
pub(super) struct Job {
    pub(super) i: usize,
    pub(super) slot: usize,
    pub(super) path: PathBuf,
    /// The plaintext's size and blake3.
    pub(super) bytes: u64,
    pub(super) blake3: String,
    /// The stored bytes' size, blake3 and (for a signed PUT) SHA-256, all
    /// taken as the stage file was written: the upload reads it once.
    pub(super) stored_bytes: u64,
    pub(super) stored_blake3: String,
    pub(super) sha256: Option<String>,
}

/// What age wrote for one part: the stage file's size, blake3 and
/// SHA-256 (when the PUT is signed), hashed on the way to the file.
type Pumped = std::io::Result<(u64, String, Option<String>)>;

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

/// Copy `from` into `to` to its end, hashing the bytes (blake3, and
/// SHA-256 when `sha256`): (size, blake3, SHA-256), hex.
pub(super) fn pump(from: impl Read, to: impl Write, sha256: bool) -> Pumped {
    let mut tee = Sha256Tee {
        inner: to,
        sha: sha256.then(<sha2::Sha256 as sha2::Digest>::new),
    };
    let (n, b3) = crate::primary::seed::copy_hashing(from, &mut tee)?;
    tee.inner.flush()?;
    Ok((n, b3, tee.sha.map(hex_digest)))
}

/// Writes to `inner`, hashing what it took with SHA-256 (when `sha`).
pub(super) struct Sha256Tee<W> {
    pub(super) inner: W,
    pub(super) sha: Option<sha2::Sha256>,
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
    pub(super) fn seal(&mut self) -> std::io::Result<()> {
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

pub(super) fn hex_digest(s: sha2::Sha256) -> String {
    use sha2::Digest;
    s.finalize().iter().map(|x| format!("{x:02x}")).collect()
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

/// One upload worker: take staged parts off the queue, PUT each, remove
/// the stage file and give its slot back. The first error stops the pool
/// and production.
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
pub(super) fn upload_one(pool: &Pool<'_>, job: &Job) -> Result<(ArchivePart, bool)> {
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
pub(super) struct Blake3Reader<R> {
    pub(super) inner: R,
    pub(super) hash: Option<blake3::Hasher>,
    pub(super) n: u64,
}

impl<R> Blake3Reader<R> {
    pub(super) fn new(inner: R, hashing: bool) -> Self {
        Blake3Reader {
            inner,
            hash: hashing.then(blake3::Hasher::new),
            n: 0,
        }
    }

    pub(super) fn finish(&self) -> (u64, Option<String>) {
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
