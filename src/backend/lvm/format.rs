//! snapsite's LVM stream: what travels inside one snapshot's payload (the
//! protocol frames and checksums it around it).
//!
//! ```text
//! "SSLVM01\n"                      magic
//! u32 BE length, JSON Header       size, block size, snapshot, storage ids, base
//! records:
//!   'W' u64 offset  u32 len  data  write these bytes at offset
//!   'Z' u64 offset  u64 len        these bytes are zero now (discarded)
//!   'E' u64 data_bytes  [32] blake3 end: sum of W lengths, hash of records
//! ```
//!
//! A *full* stream describes a device that starts all zero: ranges the pool
//! has not mapped, and mapped blocks that read as zeros, are skipped. An
//! *incremental* stream applies on top of the base snapshot: changed blocks
//! are `W`, blocks discarded since the base (or rewritten with zeros) are `Z`.
//! The end hash covers every record (`W`: tag, offset, length and data; `Z`:
//! tag, offset, length) in order, so the receiver can verify what it wrote by
//! reading it back from the device.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"SSLVM01\n";
pub const VERSION: u32 = 1;
/// Largest `W` record: one read of the snapshot device.
pub const MAX_WRITE: u64 = 1 << 20;
const MAX_HEADER: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    Full,
    Incremental,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub kind: StreamKind,
    /// Size of the device in bytes.
    pub size: u64,
    /// The sender's pool data block size (or the zero-detection unit of a
    /// classic LV), in bytes.
    pub block_size: u64,
    pub snapshot: String,
    /// The sender's LV uuid of the snapshot.
    pub storage_id: Option<String>,
    /// Incremental only: the base snapshot and its LV uuid on the sender.
    pub base: Option<String>,
    pub base_storage_id: Option<String>,
    /// This stream continues a cut receive (`resume.rs`): its records start
    /// at the offset the standby verified, after the segments it names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeFrom>,
    /// Incremental only: which changed blocks were mapped in the base
    /// already (overwritten, not newly mapped), for the standby's
    /// ransomware signals; not used to apply the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwritten: Option<Overwritten>,
}

/// The changed blocks `thin_delta` found mapped in both snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overwritten {
    /// Bytes of them in all.
    pub bytes: u64,
    /// Their byte ranges (offset, length), in order; when there are more
    /// than [`MAX_OVERWRITTEN_RANGES`], an even sample of them.
    pub ranges: Vec<(u64, u64)>,
    /// `ranges` lists every one.
    pub all: bool,
}

/// Ranges listed in a header at most (it stays far below its 64 KiB).
pub const MAX_OVERWRITTEN_RANGES: usize = 1024;

/// Where a resumed stream continues: the token's segment ends and chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeFrom {
    pub bounds: Vec<u64>,
    /// Hex of the chain over the segments (see `resume.rs`).
    pub chain: String,
}

/// A byte range of the device and what the stream says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    /// `false`: the range reads as zeros now (a `Z` record).
    pub data: bool,
}

/// The running hash of the records, the same on both ends.
#[derive(Default, Clone)]
pub struct RecordHash {
    h: blake3::Hasher,
    pub data_bytes: u64,
}

impl RecordHash {
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.h.update(b"W");
        self.h.update(&offset.to_be_bytes());
        self.h.update(&(data.len() as u32).to_be_bytes());
        self.h.update(data);
        self.data_bytes += data.len() as u64;
    }
    /// Data of a `W` record arriving in pieces: `begin_write` then `more`.
    pub fn begin_write(&mut self, offset: u64, len: u32) {
        self.h.update(b"W");
        self.h.update(&offset.to_be_bytes());
        self.h.update(&len.to_be_bytes());
        self.data_bytes += len as u64;
    }
    pub fn more(&mut self, data: &[u8]) {
        self.h.update(data);
    }
    pub fn zero(&mut self, offset: u64, len: u64) {
        self.h.update(b"Z");
        self.h.update(&offset.to_be_bytes());
        self.h.update(&len.to_be_bytes());
    }
    pub fn finish(&self) -> [u8; 32] {
        *self.h.finalize().as_bytes()
    }
}

/// The extents restricted to `[from, to)`.
pub fn clip(extents: &[Extent], from: u64, to: u64) -> Vec<Extent> {
    extents
        .iter()
        .filter_map(|e| {
            let a = e.offset.max(from);
            let b = (e.offset + e.len).min(to);
            (a < b).then(|| Extent {
                offset: a,
                len: b - a,
                data: e.data,
            })
        })
        .collect()
}

/// The data bytes and record hash of the stream `header` and `extents`
/// make (what its end record carries), reading the device.
pub fn records_hash(
    dev: File,
    header: &Header,
    extents: Vec<Extent>,
) -> io::Result<(u64, [u8; 32])> {
    let mut enc = Encoder::new(dev, header, extents);
    let mut dec = Decoder::default();
    let mut end = None;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = enc.read(&mut buf)?;
        if n == 0 {
            break;
        }
        dec.feed(&buf[..n], &mut |ev| {
            if let Event::End { data_bytes, hash } = ev {
                end = Some((data_bytes, hash));
            }
            Ok(())
        })?;
    }
    end.ok_or_else(|| bad("the encoder did not end with an end record"))
}

/// Bytes of the device one read asks for (several `W` records' worth): large
/// reads keep the device busy with few system calls.
const READ_BATCH: u64 = 4 * MAX_WRITE;
/// Reads (and encoded batches) queued ahead of the consumer: with the
/// buffers in use, memory stays under 8 batches whatever the device's size.
const READ_AHEAD: usize = 2;

/// Bytes in front of a `W` record's data: tag, offset, length.
const W_HEAD: usize = 13;

/// One read of the device, or a `Z` extent, in the order of the extents.
enum Batch {
    /// `len` bytes at `offset`, laid out as the `W` records of its pieces
    /// would be: each piece's data follows `W_HEAD` bytes left for its
    /// record head, so a batch without zeros is sent as it was read.
    Data {
        offset: u64,
        len: u64,
        buf: Vec<u8>,
    },
    Zero(Extent),
}

/// The pieces (`MAX_WRITE` each, the last one shorter) of a batch of `len`
/// bytes: (offset in the batch's data, length, where its record starts in
/// the buffer).
fn pieces(len: u64) -> impl Iterator<Item = (u64, usize, usize)> {
    (0..len.div_ceil(MAX_WRITE)).map(move |k| {
        let at = k * MAX_WRITE;
        (
            at,
            (len - at).min(MAX_WRITE) as usize,
            k as usize * (W_HEAD + MAX_WRITE as usize),
        )
    })
}

/// Produces the stream of one snapshot from its device and the extents to
/// ship (sorted, non-overlapping).
///
/// The work runs on two threads of its own, over bounded queues, so the
/// consumer (the send pipeline: its own hash and the wire) only copies
/// bytes: a *reader* reads the device in `READ_BATCH` reads ahead of need,
/// and an *encoder* detects zeros, builds the records and hashes them. The
/// records are exactly those of reading the extents one `MAX_WRITE` piece
/// at a time (pieces start at the extent's offset), whatever the batching.
pub struct Encoder {
    /// Until the first read: what the threads need.
    start: Option<Start>,
    /// Encoded bytes, in order; an error ends the stream.
    rx: Option<Receiver<io::Result<Vec<u8>>>>,
    /// Spent output buffers, back to the encoder.
    spent: Option<SyncSender<Vec<u8>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    out: Vec<u8>,
    pos: usize,
}

struct Start {
    dev: File,
    header: Vec<u8>,
    extents: Vec<Extent>,
    kind: StreamKind,
    /// Unit of zero detection inside data extents.
    unit: u64,
}

impl Encoder {
    pub fn new(dev: File, header: &Header, extents: Vec<Extent>) -> Encoder {
        let json = serde_json::to_vec(header).expect("header serializes");
        let mut h = Vec::with_capacity(MAGIC.len() + 4 + json.len());
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&(json.len() as u32).to_be_bytes());
        h.extend_from_slice(&json);
        let unit = header.block_size.clamp(4096, MAX_WRITE);
        Encoder {
            start: Some(Start {
                dev,
                header: h,
                extents,
                kind: header.kind,
                unit,
            }),
            rx: None,
            spent: None,
            threads: Vec::new(),
            out: Vec::new(),
            pos: 0,
        }
    }

    fn spawn(&mut self, s: Start) -> io::Result<()> {
        let Start {
            dev,
            header,
            extents,
            kind,
            unit,
        } = s;
        // The kernel's read-ahead of the device doubles; a hint only.
        unsafe {
            nix::libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&dev),
                0,
                0,
                nix::libc::POSIX_FADV_SEQUENTIAL,
            );
        }
        let (batch_tx, batch_rx) = sync_channel::<io::Result<Batch>>(READ_AHEAD);
        // Buffers back to the reader: from the encoder (a batch it copied
        // from) and from the consumer (bytes it has passed on).
        let (free_tx, free_rx) = sync_channel::<Vec<u8>>(2 * READ_AHEAD + 2);
        let (out_tx, out_rx) = sync_channel::<io::Result<Vec<u8>>>(READ_AHEAD);
        let reader = std::thread::Builder::new()
            .name("lvm-read".into())
            .spawn(move || read_batches(&dev, extents, &batch_tx, &free_rx))?;
        self.threads.push(reader);
        let spent_tx = free_tx.clone();
        let encoder = std::thread::Builder::new()
            .name("lvm-encode".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut e = Records {
                    kind,
                    unit: unit as usize,
                    hash: RecordHash::default(),
                    out: header,
                    hashing: Duration::ZERO,
                };
                let mut spent = Spent::default();
                let send = |v: Vec<u8>, blocked: &mut Duration| {
                    let t = Instant::now();
                    let ok = out_tx.send(Ok(v)).is_ok();
                    *blocked += t.elapsed();
                    ok
                };
                for batch in batch_rx {
                    let t = Instant::now();
                    let mut ready = None;
                    match batch {
                        Ok(Batch::Zero(ext)) => e.push_zero(ext.offset, ext.len),
                        Ok(Batch::Data {
                            offset,
                            len,
                            mut buf,
                        }) => {
                            spent.bytes += len;
                            if e.in_place(offset, len, &mut buf) {
                                ready = Some(buf);
                            } else {
                                for (at, n, rec) in pieces(len) {
                                    let data = &buf[rec + W_HEAD..rec + W_HEAD + n];
                                    e.piece(offset + at, data);
                                }
                                let _ = free_tx.try_send(buf);
                            }
                        }
                        Err(err) => {
                            let _ = out_tx.send(Err(err));
                            return;
                        }
                    }
                    spent.work += t.elapsed();
                    let flush = ready.is_some() || e.out.len() >= MAX_WRITE as usize;
                    if flush && !e.out.is_empty() && !send(e.take(), &mut spent.blocked) {
                        return; // the consumer went away
                    }
                    if let Some(buf) = ready {
                        if !send(buf, &mut spent.blocked) {
                            return;
                        }
                    }
                }
                e.end();
                let _ = out_tx.send(Ok(e.take()));
                tracing::debug!(
                    encode_s = spent.work.as_secs_f64(),
                    of_which_hash_s = e.hashing.as_secs_f64(),
                    queue_full_s = spent.blocked.as_secs_f64(),
                    total_s = t0.elapsed().as_secs_f64(),
                    bytes = spent.bytes,
                    "sender phases: zero detection, records, record hash"
                );
            })?;
        self.threads.push(encoder);
        self.rx = Some(out_rx);
        self.spent = Some(spent_tx);
        Ok(())
    }

    /// Next encoded bytes into `out`; false at the end of the stream.
    fn refill(&mut self) -> io::Result<bool> {
        if let Some(s) = self.start.take() {
            self.spawn(s)?;
        }
        let Some(rx) = &self.rx else {
            return Ok(false);
        };
        match rx.recv() {
            Ok(Ok(next)) => {
                let spent = std::mem::replace(&mut self.out, next);
                self.pos = 0;
                if let Some(tx) = &self.spent {
                    let _ = tx.try_send(spent);
                }
                Ok(true)
            }
            Ok(Err(e)) => {
                self.stop();
                Err(e)
            }
            Err(_) => {
                // The encoder sent its last bytes (or died: a panic there
                // is a bug, and the end record is then missing).
                self.stop();
                Ok(false)
            }
        }
    }

    /// Stop the threads and wait for them: dropping the channels makes
    /// every blocked send and receive return.
    fn stop(&mut self) {
        self.rx = None;
        self.spent = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Time spent by a thread of the encoder, for the debug log.
#[derive(Default)]
struct Spent {
    work: Duration,
    blocked: Duration,
    bytes: u64,
}

/// The reader thread: the extents' data in batches of up to `READ_BATCH`
/// bytes that start on a piece boundary, and the `Z` extents, in order.
fn read_batches(
    dev: &File,
    extents: Vec<Extent>,
    tx: &SyncSender<io::Result<Batch>>,
    free: &Receiver<Vec<u8>>,
) {
    let t0 = Instant::now();
    let mut spent = Spent::default();
    read_extents(dev, extents, tx, free, &mut spent);
    tracing::debug!(
        read_s = spent.work.as_secs_f64(),
        queue_full_s = spent.blocked.as_secs_f64(),
        total_s = t0.elapsed().as_secs_f64(),
        bytes = spent.bytes,
        "sender phases: device reads"
    );
}

fn read_extents(
    dev: &File,
    extents: Vec<Extent>,
    tx: &SyncSender<io::Result<Batch>>,
    free: &Receiver<Vec<u8>>,
    spent: &mut Spent,
) {
    for ext in extents {
        if !ext.data {
            if tx.send(Ok(Batch::Zero(ext))).is_err() {
                return;
            }
            continue;
        }
        let mut at = 0u64;
        while at < ext.len {
            let len = (ext.len - at).min(READ_BATCH);
            let n = len as usize;
            let mut buf = free.try_recv().unwrap_or_default();
            // A recycled buffer is overwritten by the reads: no need to
            // clear it (only growth is zeroed).
            buf.resize(
                pieces(len).last().map_or(0, |(_, n, rec)| rec + W_HEAD + n),
                0,
            );
            let offset = ext.offset + at;
            let t = Instant::now();
            let batch = pieces(len)
                .try_for_each(|(p, n, rec)| {
                    dev.read_exact_at(&mut buf[rec + W_HEAD..rec + W_HEAD + n], offset + p)
                })
                .map(|()| Batch::Data { offset, len, buf });
            let t1 = Instant::now();
            spent.work += t1 - t;
            spent.bytes += n as u64;
            let failed = batch.is_err();
            let gone = tx.send(batch).is_err();
            spent.blocked += t1.elapsed();
            if gone || failed {
                return;
            }
            at += n as u64;
        }
    }
}

/// True when every byte is zero; vectorizes (an OR over blocks) and stops
/// at the first block with data.
fn is_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(256);
    for c in &mut blocks {
        if c.iter().fold(0u8, |a, x| a | x) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|x| *x == 0)
}

/// The encoder thread's state: the records so far and their hash.
struct Records {
    kind: StreamKind,
    unit: usize,
    hash: RecordHash,
    out: Vec<u8>,
    /// Time in the record hash (debug log).
    hashing: Duration,
}

impl Records {
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// A batch whose units all hold data: its pieces are whole `W` records.
    /// Writes their heads into the gaps the reader left and hashes them;
    /// false (nothing changed) when a unit reads as zeros.
    fn in_place(&mut self, offset: u64, len: u64, buf: &mut [u8]) -> bool {
        let unit = self.unit;
        let all_data = pieces(len).all(|(_, n, rec)| {
            let data = &buf[rec + W_HEAD..rec + W_HEAD + n];
            data.chunks(unit).all(|u| !is_zero(u))
        });
        if !all_data {
            return false;
        }
        let t = Instant::now();
        for (at, n, rec) in pieces(len) {
            let head = &mut buf[rec..rec + W_HEAD];
            head[0] = b'W';
            head[1..9].copy_from_slice(&(offset + at).to_be_bytes());
            head[9..].copy_from_slice(&(n as u32).to_be_bytes());
            // The record hash of a `W` record is the hash of its bytes.
            self.hash.h.update(&buf[rec..rec + W_HEAD + n]);
            self.hash.data_bytes += n as u64;
        }
        self.hashing += t.elapsed();
        true
    }

    fn push_write(&mut self, offset: u64, data: &[u8]) {
        self.out.push(b'W');
        self.out.extend_from_slice(&offset.to_be_bytes());
        self.out
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.out.extend_from_slice(data);
        let t = Instant::now();
        self.hash.write(offset, data);
        self.hashing += t.elapsed();
    }

    fn push_zero(&mut self, offset: u64, len: u64) {
        self.out.push(b'Z');
        self.out.extend_from_slice(&offset.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.hash.zero(offset, len);
    }

    /// One piece (up to `MAX_WRITE` bytes) of a data extent at `offset`:
    /// runs of zero and non-zero units.
    fn piece(&mut self, offset: u64, chunk: &[u8]) {
        let unit = self.unit;
        let zero_at = |at: usize| is_zero(&chunk[at..(at + unit).min(chunk.len())]);
        let len = chunk.len();
        let mut i = 0usize;
        let mut zero = len > 0 && zero_at(0);
        while i < len {
            // Extend the run while the units agree; `next` is the first
            // unit of the other kind (or the end).
            let mut j = (i + unit).min(len);
            let mut next = zero;
            while j < len {
                next = zero_at(j);
                if next != zero {
                    break;
                }
                j = (j + unit).min(len);
            }
            let off = offset + i as u64;
            match (zero, self.kind) {
                (true, StreamKind::Full) => {} // the receiver starts from zeros
                (true, StreamKind::Incremental) => self.push_zero(off, (j - i) as u64),
                (false, _) => self.push_write(off, &chunk[i..j]),
            }
            i = j;
            zero = next;
        }
    }

    fn end(&mut self) {
        self.out.push(b'E');
        self.out
            .extend_from_slice(&self.hash.data_bytes.to_be_bytes());
        let h = self.hash.finish();
        self.out.extend_from_slice(&h);
    }
}

impl Read for Encoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if !self.refill()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the decoder found in the stream.
#[derive(Debug, PartialEq)]
pub enum Event<'a> {
    Header(Header),
    /// A `W` record starts; its data follows in `Data` pieces.
    Write {
        offset: u64,
        len: u32,
    },
    /// A piece of a `W` record's data (a record may arrive in several).
    Data {
        offset: u64,
        data: &'a [u8],
    },
    Zero {
        offset: u64,
        len: u64,
    },
    End {
        data_bytes: u64,
        hash: [u8; 32],
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Magic,
    HeaderLen,
    Header(usize),
    Tag,
    WriteHead,
    ZeroHead,
    EndBody,
    Data { offset: u64, left: u64 },
    Done,
}

/// A push decoder: feed it the payload as it arrives, in any pieces.
pub struct Decoder {
    state: State,
    buf: Vec<u8>,
    size: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Magic,
            buf: Vec::new(),
            size: 0,
        }
    }
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().expect("8 bytes"))
}

impl Decoder {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    fn need(&self) -> usize {
        match self.state {
            State::Magic => MAGIC.len(),
            State::HeaderLen => 4,
            State::Header(n) => n,
            State::Tag => 1,
            State::WriteHead => 12,
            State::ZeroHead => 16,
            State::EndBody => 40,
            State::Data { .. } | State::Done => 0,
        }
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(bad(format!(
                "record {offset}+{len} lies beyond the device size {}",
                self.size
            )));
        }
        Ok(())
    }

    pub fn feed(
        &mut self,
        mut input: &[u8],
        f: &mut dyn FnMut(Event) -> io::Result<()>,
    ) -> io::Result<()> {
        while !input.is_empty() {
            if let State::Data { offset, left } = self.state {
                let n = (left as usize).min(input.len());
                f(Event::Data {
                    offset,
                    data: &input[..n],
                })?;
                input = &input[n..];
                self.state = if left == n as u64 {
                    State::Tag
                } else {
                    State::Data {
                        offset: offset + n as u64,
                        left: left - n as u64,
                    }
                };
                continue;
            }
            if self.state == State::Done {
                // No count: how much follows depends on how the stream was cut.
                return Err(bad("data after the end record"));
            }
            let want = self.need() - self.buf.len();
            let n = want.min(input.len());
            self.buf.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.buf.len() < self.need() {
                continue;
            }
            let b = std::mem::take(&mut self.buf);
            self.state = match self.state {
                State::Magic => {
                    if b != MAGIC {
                        return Err(bad("not a snapsite LVM stream (bad magic)"));
                    }
                    State::HeaderLen
                }
                State::HeaderLen => {
                    let n = u32::from_be_bytes(b[..4].try_into().expect("4")) as usize;
                    if n == 0 || n > MAX_HEADER {
                        return Err(bad(format!("header length {n}")));
                    }
                    State::Header(n)
                }
                State::Header(_) => {
                    let h: Header = serde_json::from_slice(&b)
                        .map_err(|e| bad(format!("stream header: {e}")))?;
                    if h.version != VERSION {
                        return Err(bad(format!(
                            "LVM stream version {} (this build reads {VERSION})",
                            h.version
                        )));
                    }
                    self.size = h.size;
                    f(Event::Header(h))?;
                    State::Tag
                }
                State::Tag => match b[0] {
                    b'W' => State::WriteHead,
                    b'Z' => State::ZeroHead,
                    b'E' => State::EndBody,
                    t => return Err(bad(format!("unknown record tag {t:#04x}"))),
                },
                State::WriteHead => {
                    let offset = be64(&b);
                    let len = u32::from_be_bytes(b[8..12].try_into().expect("4")) as u64;
                    if len == 0 || len > MAX_WRITE {
                        return Err(bad(format!("write record of {len} bytes")));
                    }
                    self.check_range(offset, len)?;
                    f(Event::Write {
                        offset,
                        len: len as u32,
                    })?;
                    State::Data { offset, left: len }
                }
                State::ZeroHead => {
                    let (offset, len) = (be64(&b), be64(&b[8..]));
                    self.check_range(offset, len)?;
                    f(Event::Zero { offset, len })?;
                    State::Tag
                }
                State::EndBody => {
                    f(Event::End {
                        data_bytes: be64(&b),
                        hash: b[8..40].try_into().expect("32"),
                    })?;
                    State::Done
                }
                State::Data { .. } | State::Done => unreachable!("handled above"),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
