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
}

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
    struct Tail(Vec<u8>);
    impl io::Write for Tail {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            let keep = self.0.len().saturating_sub(41);
            self.0.drain(..keep);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut tail = Tail(Vec::new());
    io::copy(&mut Encoder::new(dev, header, extents), &mut tail)?;
    let t = &tail.0;
    if t.len() < 41 || t[t.len() - 41] != b'E' {
        return Err(bad("the encoder did not end with an end record"));
    }
    let e = &t[t.len() - 40..];
    Ok((be64(e), e[8..40].try_into().expect("32")))
}

/// Produces the stream of one snapshot from its device and the extents to
/// ship (sorted, non-overlapping).
pub struct Encoder {
    dev: File,
    header: Option<Vec<u8>>,
    extents: std::vec::IntoIter<Extent>,
    current: Option<Extent>,
    kind: StreamKind,
    /// Unit of zero detection inside data extents.
    unit: u64,
    hash: RecordHash,
    ended: bool,
    chunk: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
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
            dev,
            header: Some(h),
            extents: extents.into_iter(),
            current: None,
            kind: header.kind,
            unit,
            hash: RecordHash::default(),
            ended: false,
            chunk: Vec::new(),
            out: Vec::new(),
            pos: 0,
        }
    }

    fn push_write(&mut self, offset: u64, data_at: std::ops::Range<usize>) {
        let data = &self.chunk[data_at];
        self.out.push(b'W');
        self.out.extend_from_slice(&offset.to_be_bytes());
        self.out
            .extend_from_slice(&(data.len() as u32).to_be_bytes());
        self.out.extend_from_slice(data);
        self.hash.write(offset, data);
    }

    fn push_zero(&mut self, offset: u64, len: u64) {
        self.out.push(b'Z');
        self.out.extend_from_slice(&offset.to_be_bytes());
        self.out.extend_from_slice(&len.to_be_bytes());
        self.hash.zero(offset, len);
    }

    /// Fill `out` with the next records; false at the end of the stream.
    fn refill(&mut self) -> io::Result<bool> {
        self.out.clear();
        self.pos = 0;
        if let Some(h) = self.header.take() {
            self.out = h;
            return Ok(true);
        }
        loop {
            let ext = match self.current.take() {
                Some(e) if e.len > 0 => e,
                _ => match self.extents.next() {
                    Some(e) => e,
                    None => {
                        if self.ended {
                            return Ok(false);
                        }
                        self.ended = true;
                        self.out.push(b'E');
                        self.out
                            .extend_from_slice(&self.hash.data_bytes.to_be_bytes());
                        let h = self.hash.finish();
                        self.out.extend_from_slice(&h);
                        return Ok(true);
                    }
                },
            };
            if !ext.data {
                self.push_zero(ext.offset, ext.len);
                return Ok(true);
            }
            let n = ext.len.min(MAX_WRITE);
            self.chunk.resize(n as usize, 0);
            self.dev.read_exact_at(&mut self.chunk, ext.offset)?;
            self.current = Some(Extent {
                offset: ext.offset + n,
                len: ext.len - n,
                data: true,
            });
            // Split into runs of zero and non-zero units.
            let unit = self.unit as usize;
            let mut i = 0usize;
            let len = self.chunk.len();
            while i < len {
                let zero_at =
                    |c: &[u8], at: usize| c[at..(at + unit).min(c.len())].iter().all(|b| *b == 0);
                let zero = zero_at(&self.chunk, i);
                let mut j = i;
                while j < len && zero_at(&self.chunk, j) == zero {
                    j = (j + unit).min(len);
                }
                let off = ext.offset + i as u64;
                match (zero, self.kind) {
                    (true, StreamKind::Full) => {} // the receiver starts from zeros
                    (true, StreamKind::Incremental) => self.push_zero(off, (j - i) as u64),
                    (false, _) => self.push_write(off, i..j),
                }
                i = j;
            }
            if !self.out.is_empty() {
                return Ok(true);
            }
        }
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
                return Err(bad(format!("{} bytes after the end record", input.len())));
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
mod tests {
    use super::*;
    use std::io::Write;

    fn header(kind: StreamKind, size: u64) -> Header {
        Header {
            version: VERSION,
            kind,
            size,
            block_size: 65536,
            snapshot: "20261127T080000.123Z-full".into(),
            storage_id: Some("aWuivk-zyKd-8Tko-IYJJ-eeA3-f2gg-z1NQXu".into()),
            base: None,
            base_storage_id: None,
            resume: None,
        }
    }

    fn device(size: u64, fill: &[(u64, u8, usize)]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(size).unwrap();
        for (off, byte, len) in fill {
            f.write_all_at(&vec![*byte; *len], *off).unwrap();
        }
        f.flush().unwrap();
        f
    }

    fn read_all(f: &File, size: u64) -> Vec<u8> {
        let mut v = vec![0; size as usize];
        f.read_exact_at(&mut v, 0).unwrap();
        v
    }

    #[test]
    fn full_stream_skips_zeros_and_round_trips() {
        let size = 8 << 20;
        let src = device(size, &[(0, 7, 100_000), (3 << 20, 9, 1 << 20)]);
        let ext = vec![Extent {
            offset: 0,
            len: size,
            data: true,
        }];
        let mut stream = Vec::new();
        Encoder::new(
            src.try_clone().unwrap(),
            &header(StreamKind::Full, size),
            ext,
        )
        .read_to_end(&mut stream)
        .unwrap();
        // 100_000 bytes round up to two 64 KiB units, plus 1 MiB
        assert!(
            stream.len() < (1 << 20) + 2 * 65536 + 4096,
            "{}",
            stream.len()
        );
        let dst = device(size, &[]);
        assert!(decode_into(&stream, &dst, 7), "end record verifies");
        assert_eq!(read_all(&src, size), read_all(&dst, size));
    }

    /// The sink's logic in small: hash the records, write, zero; returns
    /// whether the end record matched.
    fn decode_into(stream: &[u8], dev: &File, piece: usize) -> bool {
        let mut d = Decoder::default();
        let mut h = RecordHash::default();
        let mut ok = false;
        for p in stream.chunks(piece) {
            d.feed(p, &mut |ev| {
                match ev {
                    Event::Header(_) => {}
                    Event::Write { offset, len } => h.begin_write(offset, len),
                    Event::Data { offset, data } => {
                        h.more(data);
                        dev.write_all_at(data, offset).unwrap();
                    }
                    Event::Zero { offset, len } => {
                        h.zero(offset, len);
                        dev.write_all_at(&vec![0; len as usize], offset).unwrap();
                    }
                    Event::End { data_bytes, hash } => {
                        ok = data_bytes == h.data_bytes && hash == h.finish();
                    }
                }
                Ok(())
            })
            .unwrap();
        }
        assert!(d.done());
        ok
    }

    #[test]
    fn incremental_stream_writes_and_zeroes() {
        let size = 4 << 20;
        let new = device(size, &[(0, 1, 4 << 20), (65536, 2, 65536)]);
        new.write_all_at(&vec![0; 131072], 2 << 20).unwrap();
        let ext = vec![
            Extent {
                offset: 65536,
                len: 65536,
                data: true,
            },
            Extent {
                offset: 2 << 20,
                len: 131072,
                data: true, // rewritten with zeros: becomes a Z record
            },
            Extent {
                offset: 3 << 20,
                len: 65536,
                data: false,
            },
        ];
        new.write_all_at(&vec![0; 65536], 3 << 20).unwrap();
        let mut stream = Vec::new();
        Encoder::new(
            new.try_clone().unwrap(),
            &header(StreamKind::Incremental, size),
            ext,
        )
        .read_to_end(&mut stream)
        .unwrap();
        assert!(stream.len() < 65536 + 1024, "{}", stream.len());
        for piece in [1, 13, 4096, 1 << 20] {
            let dst = device(size, &[(0, 1, 4 << 20)]);
            assert!(decode_into(&stream, &dst, piece), "end record verifies");
            assert_eq!(read_all(&new, size), read_all(&dst, size), "piece {piece}");
        }
    }

    #[test]
    fn decoder_rejects_garbage() {
        let mut d = Decoder::default();
        assert!(d.feed(b"NOTLVM!!", &mut |_| Ok(())).is_err());
        // a write beyond the device
        let h = serde_json::to_vec(&header(StreamKind::Full, 4096)).unwrap();
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&(h.len() as u32).to_be_bytes());
        s.extend_from_slice(&h);
        s.push(b'W');
        s.extend_from_slice(&4000u64.to_be_bytes());
        s.extend_from_slice(&200u32.to_be_bytes());
        let mut d = Decoder::default();
        let e = d.feed(&s, &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("beyond"), "{e}");
        // bytes after the end
        let mut s2 = MAGIC.to_vec();
        s2.extend_from_slice(&(h.len() as u32).to_be_bytes());
        s2.extend_from_slice(&h);
        s2.push(b'E');
        s2.extend_from_slice(&[0u8; 40]);
        s2.push(b'W');
        let mut d = Decoder::default();
        assert!(d.feed(&s2, &mut |_| Ok(())).is_err());
    }
}
