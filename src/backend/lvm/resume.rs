//! Resuming a cut LVM receive: the standby's *verified progress*.
//!
//! Records of an LVM stream arrive in increasing device offsets, so "every
//! record that ends at or before `P` was written, fsynced and read back"
//! describes the progress of a receive with one offset. The standby keeps it
//! as a tag on the replica LV (so it lives and dies with the partial data:
//! recreating the replica for a fresh receive drops it), and hands it to the
//! sender as the resume token:
//!
//! ```text
//! snapsite-resume:1:<header digest>:<chain>:<high>:<b1>+<b2>+…+<P>:<base>:<snapshot>
//! ```
//!
//! - `b1 … P`: the ends of the *segments* received so far, one per session
//!   (a resumed session starts where the previous one was verified up to).
//! - `chain`: blake3 over the segments in order, each as its start, end,
//!   data bytes and the record hash of the records that session received in
//!   it. The sender recomputes it from its own snapshot — the records of
//!   segment `[a, b)` are exactly what an encoder started at `a` produces
//!   below `b` — so a prefix that differs from the sender's in any byte
//!   (a bit flipped on the wire before the cut, another snapshot) makes the
//!   token stale and the send starts over.
//! - `high`: no byte at or beyond `high` was written by the cut sessions. A
//!   full stream skips zero ranges (the receiver starts from zeros), so a
//!   resumed full receive zeroes `[P, high)` first: a record cut halfway,
//!   whose bytes may be wrong, cannot survive in a range the rest of the
//!   stream leaves out. (An incremental stream covers every changed byte
//!   with a `W` or `Z` record, so the continuation rewrites that range.)
//! - `base`: the incremental's base snapshot, empty for a full stream.
//! - `header digest`: the stream header without its resume part; the
//!   continuation must be of the same snapshot, base, size and kind.

use super::format::Header;
use crate::base::error::{Error, Result};

pub const RESUME_TAG: &str = "snapsite-resume:";
/// Segments a token may hold (one per resumed session); LVM tags are
/// limited to 1024 characters. A receive cut more often than this keeps
/// its last token, so later progress is only lost, never wrong.
pub const MAX_SEGMENTS: usize = 24;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub header: [u8; 16],
    pub chain: [u8; 32],
    pub high: u64,
    /// Ends of the segments, strictly increasing; the last is the offset
    /// the receive continues from.
    pub bounds: Vec<u64>,
    /// The incremental's base snapshot.
    pub base: Option<String>,
    pub snapshot: String,
}

impl Token {
    pub fn offset(&self) -> u64 {
        self.bounds.last().copied().unwrap_or(0)
    }

    /// The segments as `[start, end)` pairs.
    pub fn segments(&self) -> Vec<(u64, u64)> {
        let mut start = 0;
        self.bounds
            .iter()
            .map(|&b| {
                let s = (start, b);
                start = b;
                s
            })
            .collect()
    }

    pub fn to_tag(&self) -> String {
        let bounds: Vec<String> = self.bounds.iter().map(u64::to_string).collect();
        format!(
            "{RESUME_TAG}1:{}:{}:{}:{}:{}:{}",
            hex(&self.header),
            hex(&self.chain),
            self.high,
            bounds.join("+"),
            self.base.as_deref().unwrap_or(""),
            self.snapshot
        )
    }

    /// Parse a token (from a tag here, or from the standby on the sender).
    /// Bounds are checked against `size` where the caller knows it.
    pub fn parse(s: &str) -> Result<Token> {
        let bad = |why: &str| Error::protocol(format!("LVM resume token: {why}"));
        let rest = s.strip_prefix(RESUME_TAG).ok_or_else(|| bad("no prefix"))?;
        let parts: Vec<&str> = rest.splitn(7, ':').collect();
        let [version, header, chain, high, bounds, base, snapshot] = parts[..] else {
            return Err(bad("wrong number of fields"));
        };
        if version != "1" {
            return Err(bad(&format!("version {version:?}")));
        }
        let header: [u8; 16] = unhex(header).ok_or_else(|| bad("header digest"))?;
        let chain: [u8; 32] = unhex(chain).ok_or_else(|| bad("chain"))?;
        let high: u64 = high.parse().map_err(|_| bad("high"))?;
        let bounds: Vec<u64> = bounds
            .split('+')
            .map(|b| b.parse::<u64>().map_err(|_| bad("bounds")))
            .collect::<Result<_>>()?;
        if bounds.is_empty() || bounds.len() > MAX_SEGMENTS {
            return Err(bad("segment count"));
        }
        let mut prev = 0u64;
        for &b in &bounds {
            if b <= prev || b % 512 != 0 {
                return Err(bad("bounds must increase in 512-byte units"));
            }
            prev = b;
        }
        if high < prev {
            return Err(bad("high below the offset"));
        }
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 120
                && n.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"+_.-".contains(&c))
        };
        if !name_ok(snapshot) {
            return Err(bad("snapshot name"));
        }
        if !base.is_empty() && !name_ok(base) {
            return Err(bad("base name"));
        }
        Ok(Token {
            header,
            chain,
            high,
            bounds,
            base: (!base.is_empty()).then(|| base.to_string()),
            snapshot: snapshot.to_string(),
        })
    }
}

/// The digest of a stream header without its resume part.
pub fn header_digest(h: &Header) -> [u8; 16] {
    let mut h = h.clone();
    h.resume = None;
    let json = serde_json::to_vec(&h).expect("header serializes");
    let mut d = blake3::Hasher::new();
    d.update(b"snapsite lvm header");
    d.update(&json);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d.finalize().as_bytes()[..16]);
    out
}

/// One more segment onto the chain.
pub fn chain_step(
    prev: &[u8; 32],
    start: u64,
    end: u64,
    data_bytes: u64,
    records: &[u8; 32],
) -> [u8; 32] {
    let mut d = blake3::Hasher::new();
    d.update(b"snapsite lvm resume chain");
    d.update(prev);
    d.update(&start.to_be_bytes());
    d.update(&end.to_be_bytes());
    d.update(&data_bytes.to_be_bytes());
    d.update(records);
    *d.finalize().as_bytes()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::format::{
        Decoder, Encoder, Event, Extent, Header, RecordHash, StreamKind, VERSION, clip,
        records_hash,
    };
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::unix::fs::FileExt;

    const SIZE: u64 = 8 << 20;

    fn device() -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.set_len(SIZE).unwrap();
        // data, a zero hole inside an extent, data again, unaligned runs
        for (off, len, seed) in [
            (0u64, 1_600_000usize, 1u8),
            (2 << 20, 3 << 20, 2),
            (6 << 20, 70_000, 3),
        ] {
            let v: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed | 1)
                .collect();
            f.write_all_at(&v, off).unwrap();
        }
        f.flush().unwrap();
        f
    }

    fn header(kind: StreamKind) -> Header {
        Header {
            version: VERSION,
            kind,
            size: SIZE,
            block_size: 65536,
            snapshot: "20261130T110000.000Z-full".into(),
            storage_id: None,
            base: None,
            base_storage_id: None,
            resume: None,
            overwritten: None,
        }
    }

    /// (offset, len, data?) of each record, and the hash after each one.
    fn records(stream: &[u8]) -> Vec<(u64, u64, [u8; 32])> {
        let mut out = Vec::new();
        let mut h = RecordHash::default();
        let mut cur: Option<(u64, u64, u64)> = None;
        let mut d = Decoder::default();
        d.feed(stream, &mut |ev| {
            match ev {
                Event::Write { offset, len } => {
                    h.begin_write(offset, len);
                    cur = Some((offset, len as u64, len as u64));
                }
                Event::Data { data, .. } => {
                    h.more(data);
                    let (o, l, left) = cur.unwrap();
                    let left = left - data.len() as u64;
                    cur = Some((o, l, left));
                    if left == 0 {
                        out.push((o, l, h.finish()));
                    }
                }
                Event::Zero { offset, len } => {
                    h.zero(offset, len);
                    out.push((offset, len, h.finish()));
                }
                _ => {}
            }
            Ok(())
        })
        .unwrap();
        out
    }

    fn encode(dev: &File, h: &Header, ext: Vec<Extent>) -> Vec<u8> {
        let mut v = Vec::new();
        Encoder::new(dev.try_clone().unwrap(), h, ext)
            .read_to_end(&mut v)
            .unwrap();
        v
    }

    /// The property resuming rests on: the records an encoder started at a
    /// record end `a` makes below the next record end `b` are what
    /// `records_hash(clip(a, b))` hashes, and prefix + continuation write
    /// the whole device — for full and incremental streams.
    #[test]
    fn a_stream_resumed_at_any_record_end_writes_the_same_device() {
        let dev = device();
        let ext = vec![
            Extent {
                offset: 0,
                len: 2 << 20,
                data: true,
            },
            Extent {
                offset: 2 << 20,
                len: 1 << 20,
                data: false,
            },
            Extent {
                offset: 3 << 20,
                len: 5 << 20,
                data: true,
            },
        ];
        let mut src = vec![0u8; SIZE as usize];
        dev.read_exact_at(&mut src, 0).unwrap();
        src[2 << 20..3 << 20].fill(0);
        for kind in [StreamKind::Full, StreamKind::Incremental] {
            let h = header(kind);
            let whole = records(&encode(&dev, &h, ext.clone()));
            assert!(whole.len() > 5);
            for (i, &(o, l, hash_at)) in whole.iter().enumerate() {
                let p = o + l;
                let (_, ph) = records_hash(dev.try_clone().unwrap(), &h, clip(&ext, 0, p)).unwrap();
                assert_eq!(ph, hash_at, "{kind:?}: prefix hash at record {i} (end {p})");
                // Apply prefix records + the continuation to a device of 0xAA
                // bytes past p (a cut record's garbage), zeroed like the sink.
                let mut target = vec![0u8; SIZE as usize];
                target[..p as usize].copy_from_slice(&src[..p as usize]);
                let cont = encode(&dev, &h, clip(&ext, p, SIZE));
                let mut d = Decoder::default();
                d.feed(&cont, &mut |ev| {
                    match ev {
                        Event::Data { offset, data } => {
                            assert!(offset >= p);
                            target[offset as usize..offset as usize + data.len()]
                                .copy_from_slice(data);
                        }
                        Event::Zero { offset, len } => {
                            target[offset as usize..(offset + len) as usize].fill(0)
                        }
                        _ => {}
                    }
                    Ok(())
                })
                .unwrap();
                assert!(
                    target == src,
                    "{kind:?}: resumed at {p}, the device differs"
                );
            }
        }
    }

    fn token() -> Token {
        Token {
            header: [7; 16],
            chain: [9; 32],
            high: 4 << 20,
            bounds: vec![1 << 20, 3 << 20],
            base: Some("20261130T100000.000Z-full".into()),
            snapshot: "20261130T110000.000Z-full".into(),
        }
    }

    #[test]
    fn a_token_round_trips_through_its_tag() {
        let t = token();
        let tag = t.to_tag();
        assert!(tag.len() < 1024, "{}", tag.len());
        // LVM tag characters: [A-Za-z0-9_+.-/=!:&#]
        assert!(
            tag.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_+.-/=!:&#".contains(&c)),
            "{tag}"
        );
        assert_eq!(Token::parse(&tag).unwrap(), t);
        let full = Token {
            base: None,
            ..t.clone()
        };
        assert_eq!(Token::parse(&full.to_tag()).unwrap(), full);
        assert_eq!(t.offset(), 3 << 20);
        assert_eq!(t.segments(), vec![(0, 1 << 20), (1 << 20, 3 << 20)]);
    }

    #[test]
    fn the_longest_token_fits_a_tag() {
        let mut t = token();
        t.bounds = (1..=MAX_SEGMENTS as u64).map(|i| i << 40).collect();
        t.high = u64::MAX;
        t.snapshot = "x".repeat(120);
        t.base = Some("y".repeat(120));
        assert!(t.to_tag().len() <= 1024, "{}", t.to_tag().len());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = token().to_tag();
        let cases = [
            good.replace(":1:", ":2:"),
            good.replace("1048576+", "1048575+"),
            good.replace("1048576+3145728", "3145728+1048576"),
            good.replace(":4194304:", ":1024:"),
            good.replace("-full", "-full/../x"),
            good.replace(&hex(&[9; 32]), "zz"),
            good[RESUME_TAG.len()..].to_string(),
            format!("{good}:extra").replace("-full:extra", "-full:ex tra"),
            good.replace("1048576+3145728", ""),
        ];
        for c in cases {
            assert!(Token::parse(&c).is_err(), "accepted {c}");
        }
    }

    #[test]
    fn the_chain_depends_on_every_field() {
        let base = chain_step(&[0; 32], 0, 512, 1, &[1; 32]);
        assert_ne!(base, chain_step(&[1; 32], 0, 512, 1, &[1; 32]));
        assert_ne!(base, chain_step(&[0; 32], 512, 1024, 1, &[1; 32]));
        assert_ne!(base, chain_step(&[0; 32], 0, 512, 2, &[1; 32]));
        assert_ne!(base, chain_step(&[0; 32], 0, 512, 1, &[2; 32]));
    }
}
