//! Compression on the wire: zstd per data frame, negotiated in the handshake.
//!
//! The standby's `Welcome` lists the codecs it decodes (`compress: ["zstd"]`);
//! a standby that predates compression lists none, and the primary then
//! sends plain frames as before. Each data frame (at most `MAX_DATA_FRAME`
//! bytes of payload) is compressed on its own and sent as a `Z` frame only
//! when that makes it smaller — incompressible data (ZFS `-c`/`-w` streams,
//! encrypted or already-compressed files) costs one attempt and a plain `D`
//! frame. The snapshot trailer's blake3 covers the uncompressed bytes, and a
//! compressed frame carries zstd's own content checksum besides; a frame
//! that does not decompress, or decompresses to more than `MAX_DATA_FRAME`
//! (a decompression bomb), is an integrity error before a byte reaches the
//! storage backend.

use crate::base::error::{Error, Result};

/// The codec name in the handshake.
pub const ZSTD: &str = "zstd";

/// The codecs this build decodes (sent in `Welcome`).
pub fn supported() -> Vec<String> {
    vec![ZSTD.to_string()]
}

/// A standby's `compress` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    /// zstd at this level (negative: zstd's fast levels).
    Zstd { level: i32 },
}

impl Compression {
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// `"none"`, `"zstd"` (level 3) or `"zstd:LEVEL"` (-7..=19).
    pub fn parse(s: &str) -> std::result::Result<Compression, String> {
        let s = s.trim();
        if s == "none" {
            return Ok(Compression::None);
        }
        let level = match s.strip_prefix(ZSTD) {
            Some("") => Self::DEFAULT_ZSTD_LEVEL,
            Some(rest) => {
                let n = rest.strip_prefix(':').ok_or_else(|| {
                    format!("`{s}`: expected `none`, `zstd` or `zstd:LEVEL` (e.g. `zstd:3`)")
                })?;
                n.parse::<i32>()
                    .map_err(|_| format!("`{s}`: the zstd level `{n}` is not a number"))?
            }
            None => {
                return Err(format!(
                    "`{s}`: expected `none`, `zstd` or `zstd:LEVEL` (e.g. `zstd:3`)"
                ));
            }
        };
        if !(-7..=19).contains(&level) || level == 0 {
            return Err(format!(
                "`{s}`: the zstd level must be 1..=19 (or -7..=-1 for the fast levels)"
            ));
        }
        Ok(Compression::Zstd { level })
    }

    pub fn name(&self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Zstd { level } => format!("zstd:{level}"),
        }
    }

    /// What to use with a standby that decodes `theirs`.
    pub fn negotiate(self, theirs: &[String]) -> Compression {
        match self {
            Compression::Zstd { .. } if theirs.iter().any(|c| c == ZSTD) => self,
            _ => Compression::None,
        }
    }
}

/// Compresses data frames one by one (one per worker thread).
pub struct FrameCompressor {
    inner: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

impl FrameCompressor {
    pub fn new(level: i32) -> Result<FrameCompressor> {
        let mut inner = zstd::bulk::Compressor::new(level)
            .map_err(|e| Error::protocol(format!("zstd: {e}")))?;
        inner
            .include_checksum(true)
            .map_err(|e| Error::protocol(format!("zstd: {e}")))?;
        Ok(FrameCompressor {
            inner,
            out: Vec::new(),
        })
    }

    /// Without zstd's content checksum: for measuring how well data
    /// compresses (the standby's ransomware signals sample blocks with
    /// this), not for frames sent on the wire.
    pub fn probe(level: i32) -> Result<FrameCompressor> {
        Ok(FrameCompressor {
            inner: zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::protocol(format!("zstd: {e}")))?,
            out: Vec::new(),
        })
    }

    /// The compressed frame, or `None` when it would not be smaller than
    /// `raw` (send `raw` as it is).
    pub fn compress(&mut self, raw: &[u8]) -> Option<&[u8]> {
        // Room for one byte less than the input: a result that does not fit
        // would not save anything, and zstd reports it as an error.
        let n = self.compress_within(raw, raw.len().saturating_sub(1))?;
        Some(&self.out[..n])
    }

    /// `raw`'s compressed size if it is at most `room` bytes, else `None`
    /// (zstd stops as soon as the output would not fit). The context and
    /// the output buffer are reused from call to call.
    pub fn compress_within(&mut self, raw: &[u8], room: usize) -> Option<usize> {
        self.out.clear();
        self.out.reserve(room);
        match self.inner.compress_to_buffer(raw, &mut self.out) {
            Ok(n) if n <= room && self.out.len() <= room => Some(n),
            _ => None,
        }
    }
}

/// Decompresses `Z` frames, bounded to `max` bytes each.
pub struct FrameDecompressor {
    inner: zstd::bulk::Decompressor<'static>,
}

impl FrameDecompressor {
    pub fn new() -> Result<FrameDecompressor> {
        // One-shot decoding writes straight into the bounded output buffer
        // and keeps no window of its own: whatever window size a frame
        // declares, it cannot make this allocate more than `max`.
        Ok(FrameDecompressor {
            inner: zstd::bulk::Decompressor::new()
                .map_err(|e| Error::protocol(format!("zstd: {e}")))?,
        })
    }

    /// Never allocates more than `max` bytes, whatever the frame claims.
    pub fn decompress(&mut self, z: &[u8], max: usize, frame_no: u64) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(max);
        match self.inner.decompress_to_buffer(z, &mut out) {
            Ok(n) if n > 0 => {
                out.truncate(n);
                Ok(out)
            }
            Ok(_) => Err(Error::integrity(format!(
                "corrupt stream: compressed frame {frame_no} holds no data"
            ))),
            Err(e) => Err(Error::integrity(format!(
                "corrupt stream: compressed frame {frame_no} does not decompress ({e}; at most {max} bytes allowed)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_errors_say_what_is_wrong() {
        assert_eq!(Compression::parse("none"), Ok(Compression::None));
        assert_eq!(
            Compression::parse("zstd"),
            Ok(Compression::Zstd { level: 3 })
        );
        assert_eq!(
            Compression::parse("zstd:19"),
            Ok(Compression::Zstd { level: 19 })
        );
        assert_eq!(
            Compression::parse("zstd:-3"),
            Ok(Compression::Zstd { level: -3 })
        );
        for bad in ["gzip", "zstd:", "zstd:x", "zstd:20", "zstd:0", "zstd3", ""] {
            assert!(Compression::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Compression::parse("zstd:99")
                .unwrap_err()
                .contains("1..=19")
        );
    }

    #[test]
    fn negotiation_falls_back_to_none() {
        let z = Compression::Zstd { level: 3 };
        assert_eq!(z.negotiate(&supported()), z);
        assert_eq!(z.negotiate(&[]), Compression::None);
        assert_eq!(z.negotiate(&["lz4".into()]), Compression::None);
        assert_eq!(Compression::None.negotiate(&supported()), Compression::None);
    }

    #[test]
    fn round_trip_and_incompressible_data_stays_plain() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("line {} of a mail body\n", i % 977).into_bytes())
            .take(1 << 20)
            .collect();
        let mut c = FrameCompressor::new(3).unwrap();
        let z = c.compress(&text).unwrap().to_vec();
        assert!(z.len() * 4 < text.len(), "{} of {}", z.len(), text.len());
        let mut d = FrameDecompressor::new().unwrap();
        assert_eq!(d.decompress(&z, 1 << 20, 0).unwrap(), text);
        // Random bytes do not shrink: sent plain.
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(c.compress(&noise).is_none());
    }

    #[test]
    fn a_frame_asking_for_a_large_window_decodes_within_the_bound() {
        // A hand-made frame: no content size, a window descriptor asking
        // for 2^27 bytes, then one raw block of 4 bytes.
        let z = [
            0x28,
            0xb5,
            0x2f,
            0xfd,
            0x00,
            17 << 3,
            0x21,
            0x00,
            0x00,
            1,
            2,
            3,
            4,
        ];
        let mut d = FrameDecompressor::new().unwrap();
        assert_eq!(d.decompress(&z, 1 << 20, 3).unwrap(), [1, 2, 3, 4]);
        // Declaring 1 MiB of content in a frame that holds 4 bytes, or
        // more content than the bound, is refused.
        let mut big = z.to_vec();
        big[4] = 0x80; // FCS field: 4 bytes
        big.splice(6..6, (2u32 << 20).to_le_bytes());
        assert!(d.decompress(&big, 1 << 20, 3).is_err());
        // An honest frame of 1 MiB passes.
        let mut ours = FrameCompressor::new(19).unwrap();
        let raw: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let z = ours.compress(&raw).unwrap().to_vec();
        assert_eq!(d.decompress(&z, 1 << 20, 0).unwrap(), raw);
    }

    #[test]
    fn bombs_and_corruption_are_integrity_errors() {
        let zeros = vec![0u8; 8 << 20];
        let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
        assert!(bomb.len() < 4096);
        let mut d = FrameDecompressor::new().unwrap();
        let e = d.decompress(&bomb, 1 << 20, 7).unwrap_err();
        assert!(e.message.contains("frame 7"), "{e}");
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        let mut c = FrameCompressor::new(3).unwrap();
        let z = c.compress(&text).unwrap().to_vec();
        let mut detected = 0;
        for i in 0..z.len() {
            let mut b = z.clone();
            b[i] ^= 0x10;
            match d.decompress(&b, 1 << 20, 0) {
                Err(_) => detected += 1,
                // A flip zstd does not notice (a window size that still
                // fits, or 32 bits of xxhash passed) is caught by the
                // snapshot trailer's blake3 when the bytes differ.
                Ok(out) => assert!(out.len() <= 1 << 20),
            }
        }
        assert!(detected * 2 > z.len(), "{detected} of {}", z.len());
    }
}
