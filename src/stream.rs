//! The wire format between `ship` and `serve`: a versioned handshake, JSON
//! control messages and length-prefixed data frames. Each snapshot's payload
//! is followed by a trailer with its byte count and blake3; the standby
//! acknowledges only when both match and the backend's receive succeeded.
//!
//! Frame: 1 byte tag (`M` message, `D` data), 4 bytes big-endian length,
//! then the payload. Frames are bounded, so a corrupted length cannot make
//! either side allocate or wait for gigabytes.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Manifest, Receipt};

pub const PROTOCOL_VERSION: u32 = 1;
/// Magic first bytes, so a wrong program on the other end is recognised.
pub const MAGIC: &[u8; 8] = b"SNAPSIT1";
pub const MAX_DATA_FRAME: usize = 1 << 20;
pub const MAX_MESSAGE_FRAME: usize = 16 << 20;

const TAG_MESSAGE: u8 = b'M';
const TAG_DATA: u8 = b'D';

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
    },
    Welcome {
        protocol: u32,
        site: String,
        volumes: Vec<VolumeInventory>,
        committed: Vec<String>,
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
}

#[derive(Debug)]
pub enum Frame {
    Msg(Msg),
    Data(Vec<u8>),
}

pub struct Writer<W: Write> {
    inner: W,
    pub bytes_out: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            bytes_out: 0,
        }
    }
    pub fn magic(&mut self) -> Result<()> {
        self.inner.write_all(MAGIC).map_err(io_err)?;
        self.bytes_out += MAGIC.len() as u64;
        Ok(())
    }
    fn frame(&mut self, tag: u8, payload: &[u8]) -> Result<()> {
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        self.inner.write_all(&head).map_err(io_err)?;
        self.inner.write_all(payload).map_err(io_err)?;
        self.bytes_out += 5 + payload.len() as u64;
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
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush().map_err(io_err)
    }
}

fn io_err(e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Error::protocol("the other side closed the connection")
    } else {
        Error::protocol(format!("connection error: {e}"))
    }
}

pub struct Reader<R: Read> {
    inner: R,
    pub bytes_in: u64,
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, bytes_in: 0 }
    }
    pub fn magic(&mut self) -> Result<()> {
        let mut m = [0u8; 8];
        self.inner.read_exact(&mut m).map_err(|e| {
            Error::protocol(format!("no snapsite handshake from the other side ({e})"))
                .with_hint("is the remote command `snapsite serve --stdio`, and does the login print nothing to stdout?")
        })?;
        if &m != MAGIC {
            return Err(Error::protocol(format!(
                "the other side is not speaking snapsite protocol {PROTOCOL_VERSION} (got {:?})",
                String::from_utf8_lossy(&m)
            ))
            .with_hint("check that both sites run a compatible snapsite, and that the ssh login prints nothing"));
        }
        self.bytes_in += 8;
        Ok(())
    }

    /// Next frame; `Ok(None)` on a clean EOF at a frame boundary.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let mut head = [0u8; 5];
        match read_full(&mut self.inner, &mut head)? {
            0 => return Ok(None),
            5 => {}
            n => {
                return Err(Error::protocol(format!(
                    "stream cut inside a frame header ({n} of 5 bytes)"
                )));
            }
        }
        let len = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
        let max = match head[0] {
            TAG_MESSAGE => MAX_MESSAGE_FRAME,
            TAG_DATA => MAX_DATA_FRAME,
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
        self.bytes_in += 5 + len as u64;
        Ok(Some(if head[0] == TAG_MESSAGE {
            let m: Msg = serde_json::from_slice(&buf)
                .map_err(|e| Error::protocol(format!("corrupt control message: {e}")))?;
            Frame::Msg(m)
        } else {
            Frame::Data(buf)
        }))
    }

    /// Next frame, which must be a message.
    pub fn msg(&mut self) -> Result<Msg> {
        match self.next_frame()? {
            Some(Frame::Msg(Msg::Error { message })) => Err(Error::protocol(format!(
                "the other side reported: {message}"
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
        w.inner
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

    #[test]
    fn every_truncation_is_an_error_or_clean_eof_at_boundary() {
        let bytes = encode(&[Frame::Msg(Msg::Bye), Frame::Data(vec![7; 100])]);
        let boundaries = [8, 8 + 5 + 12];
        for cut in 8..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            r.magic().unwrap();
            let mut res = Ok(());
            loop {
                match r.next_frame() {
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            assert_eq!(res.is_ok(), boundaries.contains(&cut), "cut at {cut}");
        }
    }

    #[test]
    fn corrupt_header_is_detected() {
        let mut bytes = encode(&[Frame::Data(vec![7; 100])]);
        bytes[8] = b'X';
        let mut r = Reader::new(&bytes[..]);
        r.magic().unwrap();
        assert!(
            r.next_frame()
                .unwrap_err()
                .message
                .contains("unknown frame tag")
        );
        let mut bytes = encode(&[Frame::Data(vec![7; 100])]);
        bytes[9] = 0xff;
        let mut r = Reader::new(&bytes[..]);
        r.magic().unwrap();
        assert!(r.next_frame().unwrap_err().message.contains("exceeds"));
        let mut r = Reader::new(&b"SSH-2.0-OpenSSH"[..]);
        assert!(r.magic().is_err());
    }
}
