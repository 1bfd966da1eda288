//! The wire format between `ship` and `serve`: a versioned handshake, JSON
//! control messages and length-prefixed data frames. Each snapshot's payload
//! is followed by a trailer with its byte count and blake3; the standby
//! acknowledges only when both match and the backend's receive succeeded.
//!
//! Frame (protocol 2): 1 byte tag (`M` message, `D` data, `Z` zstd-compressed
//! data, only to a standby whose `Welcome` lists `zstd`: see `compress`), 4 bytes
//! big-endian length, 4 bytes header check, the payload, and for messages a
//! 16-byte body check. The header check is blake3(frame number, tag, length)
//! so a flipped tag or length byte — or a lost, repeated or reordered frame —
//! is caught before the length is trusted: never a wait for bytes that will
//! not come. The body check covers every control message (manifests
//! included) end to end; data frames are covered by the snapshot trailer's
//! blake3. Frames are bounded, so no input can make either side allocate
//! more than `MAX_MESSAGE_FRAME`.
//!
//! Every read and write can be given a deadline (`Deadline`): a peer that
//! goes silent is an error after `timeout`, not a session held forever.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::error::{Error, Result};
use crate::base::model::{Manifest, Receipt};

pub const PROTOCOL_VERSION: u32 = 2;
/// Magic first bytes, so a wrong program on the other end is recognised.
pub const MAGIC: &[u8; 8] = b"SNAPSIT2";
pub const MAX_DATA_FRAME: usize = 1 << 20;
pub const MAX_MESSAGE_FRAME: usize = 4 << 20;

const TAG_MESSAGE: u8 = b'M';
const TAG_DATA: u8 = b'D';
const TAG_ZDATA: u8 = b'Z';
const HEAD_LEN: usize = 9;
const BODY_CHECK_LEN: usize = 16;

/// blake3 over the frame number, tag and length: the header check.
pub(crate) fn head_check(frame_no: u64, tag: u8, len: u32) -> [u8; 4] {
    let mut h = blake3::Hasher::new();
    h.update(b"snapsite frame head");
    h.update(&frame_no.to_le_bytes());
    h.update(&[tag]);
    h.update(&len.to_be_bytes());
    let mut out = [0u8; 4];
    out.copy_from_slice(&h.finalize().as_bytes()[..4]);
    out
}

/// blake3 over the frame number and a message body: the body check.
pub(crate) fn body_check(frame_no: u64, body: &[u8]) -> [u8; BODY_CHECK_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(b"snapsite message");
    h.update(&frame_no.to_le_bytes());
    h.update(body);
    let mut out = [0u8; BODY_CHECK_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..BODY_CHECK_LEN]);
    out
}

/// A file descriptor whose reads and writes fail with `TimedOut` when the
/// other side makes no progress for `timeout` (poll before each call).
pub struct Deadline<T> {
    inner: T,
    timeout: Option<Duration>,
    what: &'static str,
    /// Set when the deadline fired (the owner abandons the peer at once).
    stalled: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<T: AsFd> Deadline<T> {
    /// `timeout`: `None` waits forever. `what` names the peer in errors.
    pub fn new(inner: T, timeout: Option<Duration>, what: &'static str) -> Self {
        Deadline {
            inner,
            timeout,
            what,
            stalled: None,
        }
    }

    /// Raise `flag` when the deadline fires.
    pub fn flag_stall(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stalled = Some(flag);
        self
    }

    fn wait(&self, flags: nix::poll::PollFlags) -> std::io::Result<()> {
        let Some(t) = self.timeout else {
            return Ok(());
        };
        let start = std::time::Instant::now();
        loop {
            let left = t.saturating_sub(start.elapsed());
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let mut fds = [nix::poll::PollFd::new(self.inner.as_fd(), flags)];
            match nix::poll::poll(
                &mut fds,
                nix::poll::PollTimeout::try_from(ms).unwrap_or(nix::poll::PollTimeout::MAX),
            ) {
                Ok(0) => {
                    if start.elapsed() >= t {
                        if let Some(f) = &self.stalled {
                            f.store(true, std::sync::atomic::Ordering::SeqCst);
                        }
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no progress from {} for {}s",
                                self.what,
                                t.as_secs_f64().round()
                            ),
                        ));
                    }
                }
                // Readable, writable, hung up or in error: the call itself says which.
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(std::io::Error::from(e)),
            }
        }
    }
}

impl<T: AsFd + Read> Read for Deadline<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.wait(nix::poll::PollFlags::POLLIN)?;
        self.inner.read(buf)
    }
}

impl<T: AsFd + Write> Write for Deadline<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.wait(nix::poll::PollFlags::POLLOUT)?;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeInventory {
    pub role: String,
    pub backend: String,
    /// Snapshots the standby holds completely, oldest first.
    pub snapshots: Vec<String>,
    /// A cut receive the standby can resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumable: Option<crate::backend::Resumable>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Msg {
    Hello {
        protocol: u32,
        site: String,
        version: String,
        /// The newest full set this primary records as committed on the
        /// standby and still holds (issue 23): the standby's welcome may
        /// then list only that set and the newer ones (committed ids, and
        /// per volume the snapshots from that set's member on), when it
        /// holds that set committed and, per volume, that member; else the
        /// whole inventory. Absent (older builds, dry runs, the DR verbs):
        /// the whole inventory. A standby that predates it ignores it and
        /// sends the whole inventory, which the primary handles alike.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    Welcome {
        protocol: u32,
        site: String,
        volumes: Vec<VolumeInventory>,
        committed: Vec<String>,
        /// The codecs this standby decodes in data frames (`zstd`); empty
        /// from a standby that predates compression.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        compress: Vec<String>,
        /// The standby's recorded role (`primary` / `standby`; absent from
        /// older builds): a primary whose peer is primary does not ship.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// The standby's generation: a primary whose peer holds a newer
        /// one does not ship (split-brain guard).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<u64>,
    },
    /// A snapshot's data follows in `D` frames, then `End`.
    Begin {
        set_id: String,
        role: String,
        snapshot: String,
        base: Option<String>,
        storage_id: Option<String>,
        /// The data continues a cut receive (sent with the standby's token).
        #[serde(default)]
        resume: bool,
    },
    End {
        bytes: u64,
        blake3: String,
    },
    /// The sender could not finish the snapshot's data: discard it.
    Abort {
        reason: String,
    },
    Ack {
        role: String,
        snapshot: String,
        receipt: Receipt,
    },
    Nack {
        role: String,
        snapshot: String,
        error: String,
    },
    Commit {
        manifest: Manifest,
    },
    Committed {
        set_id: String,
    },
    Error {
        message: String,
    },
    Bye,
    /// Redolog streaming (issue 17, `redostream`): opens a spool session
    /// instead of a ship session (no site lock; the spool has its own).
    SpoolHello {
        protocol: u32,
        site: String,
        version: String,
    },
    /// The spool as the standby holds it (fsynced and recorded), for resuming.
    SpoolWelcome {
        site: String,
        last_seq: u64,
        last_as_of: Option<jiff::Timestamp>,
        files: Vec<SpoolFileState>,
    },
    /// One flush: `events` in the primary's order; the appended bytes follow
    /// in `D` frames, `bytes` in all, covered by `blake3`. `as_of`: the
    /// primary's clock just before it looked at the files (display only).
    /// `reset`: drop the spool first (the follower cannot continue it).
    SpoolBatch {
        seq: u64,
        as_of: jiff::Timestamp,
        #[serde(default)]
        reset: bool,
        events: Vec<SpoolEvent>,
        bytes: u64,
        blake3: String,
    },
    /// The batch is written and fsynced on the standby.
    SpoolAck {
        seq: u64,
    },
    /// The batch was refused (nothing of it was kept).
    SpoolRefused {
        seq: u64,
        error: String,
        /// The spool is full (`stream.spool_max`): retry the same changes later.
        #[serde(default)]
        full: bool,
    },
}

/// One change to the followed redolog files (names relative to the redolog
/// volume's root).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "ev", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpoolEvent {
    /// The primary holds `file` with at least `size` bytes; none shipped.
    Base { file: String, size: u64 },
    /// `len` bytes appended at `offset` (which continues the file exactly).
    Append { file: String, offset: u64, len: u64 },
    /// The file was cut to `size` bytes (a torn record removed).
    Truncate { file: String, size: u64 },
    /// The file was renamed (rollover into the archive).
    Rename { from: String, to: String },
    /// The file is gone (deleted or replaced).
    Remove { file: String },
}

/// A followed file as the spool knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpoolFileState {
    pub file: String,
    pub size: u64,
    /// blake3 of the last `tail_len` bytes before `size` the spool holds.
    pub tail_len: u64,
    pub tail_blake3: String,
}

#[derive(Debug)]
pub enum Frame {
    Msg(Msg),
    Data(Vec<u8>),
}

pub struct Writer<W: Write> {
    inner: W,
    pub bytes_out: u64,
    frames: u64,
    limit: Option<crate::wire::ratelimit::TokenBucket>,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            bytes_out: 0,
            frames: 0,
            limit: None,
        }
    }
    /// Hold the bytes written (frames, headers included) to a bandwidth limit.
    pub fn set_limit(&mut self, limit: crate::wire::ratelimit::Bwlimit) {
        self.limit =
            (!limit.is_unlimited()).then(|| crate::wire::ratelimit::TokenBucket::new(limit));
    }
    /// Time spent waiting for the bandwidth limit so far.
    pub fn limit_waited(&self) -> std::time::Duration {
        self.limit
            .as_ref()
            .map_or(std::time::Duration::ZERO, |l| l.waited)
    }
    pub fn magic(&mut self) -> Result<()> {
        self.inner.write_all(MAGIC).map_err(io_err)?;
        self.bytes_out += MAGIC.len() as u64;
        Ok(())
    }
    fn frame(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let len = payload.len() as u32;
        if let Some(l) = &mut self.limit {
            let check = if tag == TAG_MESSAGE {
                BODY_CHECK_LEN
            } else {
                0
            };
            l.take(HEAD_LEN + payload.len() + check);
        }
        let mut head = [0u8; HEAD_LEN];
        head[0] = tag;
        head[1..5].copy_from_slice(&len.to_be_bytes());
        head[5..].copy_from_slice(&head_check(self.frames, tag, len));
        self.inner.write_all(&head).map_err(io_err)?;
        self.inner.write_all(payload).map_err(io_err)?;
        self.bytes_out += (HEAD_LEN + payload.len()) as u64;
        if tag == TAG_MESSAGE {
            let check = body_check(self.frames, payload);
            self.inner.write_all(&check).map_err(io_err)?;
            self.bytes_out += BODY_CHECK_LEN as u64;
        }
        self.frames += 1;
        Ok(())
    }
    pub fn msg(&mut self, m: &Msg) -> Result<()> {
        let body = serde_json::to_vec(m).expect("messages serialize");
        self.frame(TAG_MESSAGE, &body)?;
        self.flush()
    }
    pub fn data(&mut self, chunk: &[u8]) -> Result<()> {
        debug_assert!(chunk.len() <= MAX_DATA_FRAME);
        self.frame(TAG_DATA, chunk)
    }
    /// A data frame compressed with zstd (`compress::FrameCompressor`):
    /// only to a standby that listed `zstd` in its welcome.
    pub fn data_compressed(&mut self, z: &[u8]) -> Result<()> {
        debug_assert!(z.len() <= MAX_DATA_FRAME);
        self.frame(TAG_ZDATA, z)
    }
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(io_err)
    }
    /// The underlying writer (tests: the encoded bytes).
    pub fn into_inner(self) -> W {
        self.inner
    }
}

fn io_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::protocol("the other side closed the connection")
    } else if e.kind() == std::io::ErrorKind::TimedOut {
        Error::protocol(format!("connection timed out: {e}"))
    } else {
        Error::protocol(format!("connection error: {e}"))
    }
}

pub struct Reader<R: Read> {
    inner: R,
    pub bytes_in: u64,
    frames: u64,
    /// Set once compressed frames are acceptable (serve, after its welcome).
    decompressor: Option<crate::wire::compress::FrameDecompressor>,
    /// Bytes of data frames after decompression.
    pub data_bytes: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            bytes_in: 0,
            frames: 0,
            decompressor: None,
            data_bytes: 0,
        }
    }
    /// Accept `Z` frames from now on (the welcome listed `zstd`).
    pub fn accept_compressed(&mut self) -> Result<()> {
        if self.decompressor.is_none() {
            self.decompressor = Some(crate::wire::compress::FrameDecompressor::new()?);
        }
        Ok(())
    }
    pub fn magic(&mut self) -> Result<()> {
        let mut m = [0u8; 8];
        self.inner.read_exact(&mut m).map_err(|e| {
            Error::protocol(format!("no snapsite handshake from the other side ({e})"))
                .with_hint("is the remote command `snapsite serve --stdio`, and does the login print nothing to stdout?")
        })?;
        if &m != MAGIC {
            return Err(Error::protocol(format!(
                "the other side is not speaking snapsite protocol {PROTOCOL_VERSION} (got {})",
                crate::base::model::wire_str(&String::from_utf8_lossy(&m))
            ))
            .with_hint("check that both sites run a compatible snapsite, and that the ssh login prints nothing"));
        }
        self.bytes_in += 8;
        Ok(())
    }

    /// Next frame; `Ok(None)` on a clean EOF at a frame boundary.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let mut head = [0u8; HEAD_LEN];
        match read_full(&mut self.inner, &mut head)? {
            0 => return Ok(None),
            HEAD_LEN => {}
            n => {
                return Err(Error::protocol(format!(
                    "stream cut inside a frame header ({n} of {HEAD_LEN} bytes)"
                )));
            }
        }
        let len32 = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes"));
        if head[5..] != head_check(self.frames, head[0], len32) {
            return Err(Error::integrity(format!(
                "corrupt stream: header check of frame {} failed (tag 0x{:02x}, length {len32})",
                self.frames, head[0]
            )));
        }
        let len = len32 as usize;
        let max = match head[0] {
            TAG_MESSAGE => MAX_MESSAGE_FRAME,
            TAG_DATA => MAX_DATA_FRAME,
            TAG_ZDATA if self.decompressor.is_some() => MAX_DATA_FRAME,
            t => {
                return Err(Error::protocol(format!(
                    "corrupt stream: unknown frame tag 0x{t:02x}"
                )));
            }
        };
        if len > max {
            return Err(Error::protocol(format!(
                "corrupt stream: frame of {len} bytes exceeds {max}"
            )));
        }
        let mut buf = vec![0u8; len];
        let got = read_full(&mut self.inner, &mut buf)?;
        if got != len {
            return Err(Error::protocol(format!(
                "stream cut inside a frame ({got} of {len} bytes)"
            )));
        }
        self.bytes_in += (HEAD_LEN + len) as u64;
        let frame_no = self.frames;
        self.frames += 1;
        Ok(Some(if head[0] == TAG_ZDATA {
            let d = self
                .decompressor
                .as_mut()
                .expect("checked with the tag")
                .decompress(&buf, MAX_DATA_FRAME, frame_no)?;
            self.data_bytes += d.len() as u64;
            Frame::Data(d)
        } else if head[0] == TAG_MESSAGE {
            let mut check = [0u8; BODY_CHECK_LEN];
            let got = read_full(&mut self.inner, &mut check)?;
            if got != BODY_CHECK_LEN {
                return Err(Error::protocol("stream cut inside a message check"));
            }
            self.bytes_in += BODY_CHECK_LEN as u64;
            if check != body_check(frame_no, &buf) {
                return Err(Error::integrity(format!(
                    "corrupt stream: checksum of control message {frame_no} does not match"
                )));
            }
            let m: Msg = serde_json::from_slice(&buf)
                .map_err(|e| Error::protocol(format!("invalid control message: {e}")))?;
            Frame::Msg(m)
        } else {
            self.data_bytes += buf.len() as u64;
            Frame::Data(buf)
        }))
    }

    /// Next frame, which must be a message.
    pub fn msg(&mut self) -> Result<Msg> {
        match self.next_frame()? {
            Some(Frame::Msg(Msg::Error { message })) => Err(Error::protocol(format!(
                "the other side reported: {}",
                crate::base::model::wire_text(&message)
            ))),
            Some(Frame::Msg(m)) => Ok(m),
            Some(Frame::Data(_)) => Err(Error::protocol("unexpected data frame")),
            None => Err(Error::protocol("the other side closed the connection")),
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    fill(r, buf).map_err(io_err)
}

/// Read until `buf` is full or EOF; returns how much was read (short only
/// at EOF).
pub fn fill(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.magic().unwrap();
        for f in frames {
            match f {
                Frame::Msg(m) => w.msg(m).unwrap(),
                Frame::Data(d) => w.data(d).unwrap(),
            }
        }
        w.into_inner()
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&[Frame::Msg(Msg::Bye), Frame::Data(vec![1, 2, 3])]);
        let mut r = Reader::new(&bytes[..]);
        r.magic().unwrap();
        assert_eq!(r.msg().unwrap(), Msg::Bye);
        match r.next_frame().unwrap() {
            Some(Frame::Data(d)) => assert_eq!(d, vec![1, 2, 3]),
            _ => panic!("expected data"),
        }
        assert!(r.next_frame().unwrap().is_none());
        assert_eq!(r.bytes_in, bytes.len() as u64);
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<Frame>> {
        read_frames(bytes, false)
    }

    /// Every frame of `bytes` after the magic (with `compressed`, a reader
    /// that accepts compressed data frames), or the first error.
    fn read_frames(bytes: &[u8], compressed: bool) -> Result<Vec<Frame>> {
        let mut r = Reader::new(bytes);
        r.magic()?;
        if compressed {
            r.accept_compressed()?;
        }
        let mut out = Vec::new();
        while let Some(f) = r.next_frame()? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn every_truncation_is_an_error_or_clean_eof_at_boundary() {
        let bytes = encode(&[Frame::Msg(Msg::Bye), Frame::Data(vec![7; 100])]);
        let boundaries = [8, 8 + HEAD_LEN + 12 + BODY_CHECK_LEN];
        for cut in 8..bytes.len() {
            let res = read_all(&bytes[..cut]);
            assert_eq!(res.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_bit_outside_data_payload_is_an_error() {
        let frames = [
            Frame::Msg(Msg::Hello {
                protocol: PROTOCOL_VERSION,
                site: "a".into(),
                version: "0".into(),
                since: None,
            }),
            Frame::Data(vec![7; 100]),
            Frame::Msg(Msg::End {
                bytes: 100,
                blake3: "00".into(),
            }),
        ];
        let bytes = encode(&frames);
        // The data payload: after magic, the hello frame and the data header.
        let hello_len = HEAD_LEN
            + serde_json::to_vec(match &frames[0] {
                Frame::Msg(m) => m,
                _ => unreachable!(),
            })
            .unwrap()
            .len()
            + BODY_CHECK_LEN;
        let data = 8 + hello_len + HEAD_LEN..8 + hello_len + HEAD_LEN + 100;
        for i in 0..bytes.len() {
            if data.contains(&i) {
                continue; // covered by the snapshot trailer's blake3 (serve)
            }
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(
                    read_all(&b).is_err(),
                    "flip of bit {bit} at byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn reordered_or_repeated_frames_are_errors() {
        let one = encode(&[Frame::Msg(Msg::Bye)]);
        let frame = &one[8..];
        let mut twice = one.clone();
        twice.extend_from_slice(frame);
        assert!(read_all(&twice).is_err(), "a repeated frame must not pass");
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let mut r = Reader::new(Deadline::new(
            std::fs::File::from(rd),
            Some(Duration::from_millis(200)),
            "the test",
        ));
        let t = std::time::Instant::now();
        let e = r.magic().unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(e.message.contains("no snapsite handshake"), "{e}");
        drop(wr);
    }

    fn compressed_stream(raw: &[u8]) -> Vec<u8> {
        let mut c = crate::wire::compress::FrameCompressor::new(3).unwrap();
        let mut w = Writer::new(Vec::new());
        w.magic().unwrap();
        w.data_compressed(c.compress(raw).expect("compressible"))
            .unwrap();
        w.msg(&Msg::Bye).unwrap();
        w.into_inner()
    }

    fn read_all_compressed(bytes: &[u8]) -> Result<Vec<Frame>> {
        read_frames(bytes, true)
    }

    #[test]
    fn compressed_frames_round_trip_only_where_accepted() {
        let raw = b"Subject: hello\r\n\r\nmail body text, mail body text\r\n".repeat(2000);
        let bytes = compressed_stream(&raw);
        assert!(bytes.len() * 10 < raw.len());
        let frames = read_all_compressed(&bytes).unwrap();
        assert!(matches!(&frames[0], Frame::Data(d) if d == &raw));
        assert!(matches!(&frames[1], Frame::Msg(Msg::Bye)));
        // A reader that never offered zstd refuses the frame.
        let e = read_all(&bytes).unwrap_err();
        assert!(e.message.contains("unknown frame tag 0x5a"), "{e}");
    }

    #[test]
    fn every_flipped_bit_of_a_compressed_frame_is_caught_or_changes_nothing() {
        let raw = b"From: a@example.org\r\nQUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\r\n".repeat(300);
        let bytes = compressed_stream(&raw);
        let mut caught = 0;
        for i in 8..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            match read_all_compressed(&b) {
                Err(_) => caught += 1,
                // What zstd and the frame checks let through is data the
                // snapshot trailer's blake3 covers; it must be bounded.
                Ok(f) => assert!(f.iter().all(|f| match f {
                    Frame::Data(d) => d.len() <= MAX_DATA_FRAME,
                    _ => true,
                })),
            }
        }
        assert!(
            caught * 10 > (bytes.len() - 8) * 9,
            "{caught} of {}",
            bytes.len() - 8
        );
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        assert!(bomb.len() <= MAX_DATA_FRAME);
        let mut w = Writer::new(Vec::new());
        w.magic().unwrap();
        w.data_compressed(&bomb).unwrap();
        let e = read_all_compressed(&w.into_inner()).unwrap_err();
        assert!(e.message.contains("does not decompress"), "{e}");
    }

    #[test]
    fn corrupt_header_is_detected() {
        let mut bytes = encode(&[Frame::Data(vec![7; 100])]);
        bytes[8] = b'X';
        assert!(
            read_all(&bytes)
                .unwrap_err()
                .message
                .contains("header check")
        );
        let mut bytes = encode(&[Frame::Data(vec![7; 100])]);
        bytes[9] = 0xff;
        assert!(
            read_all(&bytes)
                .unwrap_err()
                .message
                .contains("header check")
        );
        let mut r = Reader::new(&b"SSH-2.0-OpenSSH"[..]);
        assert!(r.magic().is_err());
    }
}
