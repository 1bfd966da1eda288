//! snapsite's LVM stream, counted for the signals as it passes: the `W`
//! records are the thin blocks that changed since the base (`thin_delta`
//! on the primary). Its header says which of them were mapped in the base
//! already (`Overwritten`): those are *overwritten*, the rest *newly
//! mapped*. An encryptor overwrites the blocks of the files it encrypts
//! with noise; ordinary mail mostly maps new blocks (a filesystem reuses
//! freed ones too, which is why the noise share decides, not the count).
//!
//! Counted: bytes written (`data_bytes`), of which into previously mapped
//! blocks (`rewrite_bytes`), and the noise share of each (zstd samples of
//! 4 KiB blocks, [`super::dense`]). The split comes from the sender's header: an old
//! sender (or a full stream) does not give it, and the note says so. When
//! the header lists only a sample of the ranges (more than it holds), the
//! overwritten bytes are the header's total and their noise share is
//! sampled in the listed ranges.
//!
//! The header is the primary's word: a compromised primary could list no
//! overwrites at all. So the standby reads its own thin map of the base
//! (`thin_dump`, [`LvmMeter::know_base_map`]) and splits the data by it:
//! data into blocks the base maps is overwritten, whatever the header
//! says. The header's total is kept beside (`rewrite_bytes_claimed`) and
//! the verdict calls a header that hid overwrites suspect. When the
//! standby's pool blocks are coarser than the primary's (a block mapped
//! here may be half new there), or the map could not be read, the
//! header's list is used as before, and the note says so.
//!
//! Hostile input: decoded by the same bounded push decoder the receive
//! uses (`backend::lvm::Decoder`); the ranges are checked (in order, within
//! the device) before use. A stream this cannot decode is counted as bytes
//! from there on and marked incomplete — never refused.

use super::dense::Dense;
use crate::backend::ThinMap;
use crate::backend::lvm::{Decoder, Event, Header, Overwritten};
use crate::base::catalog::signals::VolumeSignals;

#[derive(Default)]
pub struct LvmMeter {
    dec: Decoder,
    stopped: Option<String>,
    ended: bool,
    /// Overwritten ranges (offset, end), checked; `None`: not given.
    ranges: Option<Vec<(u64, u64)>>,
    /// The header's total, when it lists only a sample.
    sampled_total: Option<u64>,
    /// Where in `ranges` the records (which come in order) are.
    at: usize,
    bad_ranges: bool,
    all: Dense,
    rewrites: Dense,
    data_bytes: u64,
    listed_bytes: u64,
    zero_bytes: u64,
    /// The standby's own map of the base: pool block size, byte ranges.
    own: Option<(u64, Vec<(u64, u64)>)>,
    /// The ranges are the standby's own map (not the header's).
    own_used: bool,
    /// The header's overwritten total, when the own map is used.
    claimed: Option<u64>,
    /// Why the standby's own map is not used.
    own_note: Option<String>,
    /// The header's ranges, checked, when the own map is used (to count
    /// the claim), and where the records are in them.
    header_ranges: Option<Vec<(u64, u64)>>,
    header_at: usize,
}

/// Bytes of `[offset, offset + len)` inside the ordered `ranges`; `at`:
/// the first range not wholly before the data (the records come in order).
fn overlap(ranges: &[(u64, u64)], at: &mut usize, offset: u64, len: u64) -> u64 {
    let end = offset.saturating_add(len);
    while *at < ranges.len() && ranges[*at].1 <= offset {
        *at += 1;
    }
    let mut n = 0;
    let mut i = *at;
    while i < ranges.len() && ranges[i].0 < end {
        n += ranges[i].1.min(end) - ranges[i].0.max(offset);
        i += 1;
    }
    n
}

/// `(offset, end)` pairs if the ranges are in order, disjoint and within
/// the device.
fn checked(o: &Overwritten, size: u64) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::with_capacity(o.ranges.len());
    let mut prev = 0u64;
    for &(off, len) in &o.ranges {
        let end = off.checked_add(len)?;
        if off < prev || len == 0 || end > size {
            return None;
        }
        out.push((off, end));
        prev = end;
    }
    Some(out)
}

impl LvmMeter {
    /// The standby's own thin map of the base (pool block size, byte
    /// ranges), read before the stream; `Err`: why it could not be.
    pub fn know_base_map(&mut self, map: Result<Option<ThinMap>, String>) {
        match map {
            Ok(Some(ThinMap {
                block_size: bs,
                mut ranges,
            })) if bs > 0 => {
                // In order and disjoint, as `split` needs them.
                ranges.sort_unstable();
                let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
                for (off, len) in ranges {
                    let end = off.saturating_add(len);
                    match merged.last_mut() {
                        Some(last) if off <= last.1 => last.1 = last.1.max(end),
                        _ if len > 0 => merged.push((off, end)),
                        _ => {}
                    }
                }
                self.own = Some((bs, merged));
            }
            Ok(_) => {}
            Err(e) => {
                self.own_note = Some(format!(
                    "the standby could not read its own thin map of the base ({e}): the primary's overwritten list is used unchecked"
                ))
            }
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        // After the end record the decoder still sees what follows (and
        // stops on it), however the stream was cut: bytes after the end in
        // the same piece or in the next one read the same.
        if self.stopped.is_some() {
            return;
        }
        let mut dec = std::mem::take(&mut self.dec);
        let r = dec.feed(data, &mut |ev| {
            self.event(ev);
            Ok(())
        });
        self.dec = dec;
        if let Err(e) = r {
            self.stopped = Some(e.to_string());
        }
    }

    fn header(&mut self, h: &Header) {
        if let Some((bs, own)) = self.own.take() {
            if h.block_size > 0 && h.block_size % bs == 0 {
                self.ranges = Some(own);
                self.own_used = true;
                // The claim, comparable with the measure: the data inside
                // the header's ranges when it lists them all, else its total.
                self.claimed = h.overwritten.as_ref().map(|o| o.bytes);
                if let Some(o) = h.overwritten.as_ref().filter(|o| o.all) {
                    if let Some(r) = checked(o, h.size) {
                        self.header_ranges = Some(r);
                        self.claimed = Some(0);
                    }
                }
                return;
            }
            self.own_note = Some(format!(
                "the standby's thin blocks ({bs} bytes) do not divide the primary's ({}): the primary's overwritten list is used unchecked",
                h.block_size
            ));
        }
        let Some(o) = &h.overwritten else { return };
        match checked(o, h.size) {
            Some(r) => {
                self.ranges = Some(r);
                if !o.all {
                    self.sampled_total = Some(o.bytes);
                }
            }
            None => self.bad_ranges = true,
        }
    }

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Header(h) => self.header(&h),
            Event::Write { .. } => {}
            Event::Data { offset, data } => {
                self.data_bytes += data.len() as u64;
                self.all.take(data);
                self.split(offset, data);
                if let (Some(r), Some(c)) = (&self.header_ranges, &mut self.claimed) {
                    *c += overlap(r, &mut self.header_at, offset, data.len() as u64);
                }
            }
            Event::Zero { len, .. } => self.zero_bytes = self.zero_bytes.saturating_add(len),
            Event::End { .. } => self.ended = true,
        }
    }

    /// The parts of a piece of data that fall in overwritten ranges.
    fn split(&mut self, offset: u64, data: &[u8]) {
        let Some(ranges) = &self.ranges else { return };
        let end = offset + data.len() as u64;
        let mut i = self.at;
        while i < ranges.len() && ranges[i].1 <= offset {
            i += 1;
        }
        self.at = i;
        while i < ranges.len() && ranges[i].0 < end {
            let (a, b) = (ranges[i].0.max(offset), ranges[i].1.min(end));
            let piece = &data[(a - offset) as usize..(b - offset) as usize];
            self.listed_bytes += piece.len() as u64;
            self.rewrites.take(piece);
            if ranges[i].1 > end {
                break;
            }
            i += 1;
        }
    }

    pub fn finish(mut self, sig: &mut VolumeSignals) {
        self.all.flush();
        self.rewrites.flush();
        sig.data_bytes = self.data_bytes;
        sig.rewrite_bytes = if self.own_used {
            sig.rewrite_bytes_claimed = self.claimed;
            self.listed_bytes
        } else {
            self.sampled_total
                .unwrap_or(self.listed_bytes)
                .min(self.data_bytes)
        };
        sig.sampled_blocks = self.all.sampled;
        sig.incompressible_blocks = self.all.incompressible;
        sig.rewrite_sampled_blocks = self.rewrites.sampled;
        sig.rewrite_incompressible_blocks = self.rewrites.incompressible;
        let incremental = sig.incremental;
        super::mark_incomplete(sig, self.stopped, self.ended, "end record", || {
            if self.bad_ranges {
                Some(
                    "the header's overwritten ranges are out of order or beyond the device: ignored"
                        .into(),
                )
            } else if let Some(n) = self.own_note {
                Some(n)
            } else if incremental && self.ranges.is_none() {
                Some(
                    "the sender did not say which blocks were mapped before: no overwrite signal"
                        .into(),
                )
            } else {
                None
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::lvm::{Encoder, Extent, StreamKind, VERSION};
    use crate::standby::signals::tests::noise;
    use std::io::{Read, Write};

    const MIB: u64 = 1 << 20;

    /// The header of an incremental stream of a `size`-byte device.
    fn incremental(size: u64, overwritten: Option<Overwritten>) -> Header {
        Header {
            version: VERSION,
            kind: StreamKind::Incremental,
            size,
            block_size: 65536,
            snapshot: "20261130T110000.000Z-full".into(),
            storage_id: None,
            base: Some("20261130T100000.000Z-full".into()),
            base_storage_id: None,
            resume: None,
            overwritten,
        }
    }

    /// A 4 MiB device: 1 MiB of text newly mapped at 0, 1 MiB of noise
    /// overwritten at 2 MiB; a stream of both from `overwritten`.
    fn stream(overwritten: Option<Overwritten>) -> Vec<u8> {
        let mut dev = tempfile::tempfile().unwrap();
        let text = b"Subject: lunch\r\nSee you at noon.\r\n".repeat(40_000);
        dev.write_all(&text[..MIB as usize]).unwrap();
        dev.write_all(&vec![0; MIB as usize]).unwrap();
        dev.write_all(&noise(MIB as usize, 3)).unwrap();
        dev.write_all(&vec![0; MIB as usize]).unwrap();
        let header = incremental(4 * MIB, overwritten);
        let extents = vec![
            Extent {
                offset: 0,
                len: MIB,
                data: true,
            },
            Extent {
                offset: 2 * MIB,
                len: MIB,
                data: true,
            },
            Extent {
                offset: 3 * MIB,
                len: MIB,
                data: false,
            },
        ];
        let mut enc = Encoder::new(dev, &header, extents);
        let mut out = Vec::new();
        enc.read_to_end(&mut out).unwrap();
        out
    }

    fn measure(s: &[u8], step: usize) -> VolumeSignals {
        measure_by(LvmMeter::default(), s, step)
    }

    /// Feed `s` to `m` in pieces of `step` bytes and finish an incremental.
    fn measure_by(mut m: LvmMeter, s: &[u8], step: usize) -> VolumeSignals {
        for piece in s.chunks(step) {
            m.feed(piece);
        }
        let mut sig = VolumeSignals {
            incremental: true,
            complete: true,
            ..Default::default()
        };
        m.finish(&mut sig);
        sig
    }

    #[test]
    fn overwritten_blocks_are_told_from_newly_mapped_ones() {
        let s = stream(Some(Overwritten {
            bytes: MIB,
            ranges: vec![(2 * MIB, MIB)],
            all: true,
        }));
        for step in [s.len(), 4096, 777] {
            let sig = measure(&s, step);
            assert!(sig.complete, "{:?}", sig.note);
            assert_eq!((sig.data_bytes, sig.rewrite_bytes), (2 * MIB, MIB));
            // Blocks represented: every one of the first 64, then one in 64.
            assert_eq!(sig.sampled_blocks, 512);
            assert_eq!(sig.incompressible_blocks, 256);
            assert_eq!(
                (
                    sig.rewrite_sampled_blocks,
                    sig.rewrite_incompressible_blocks
                ),
                (256, 256),
                "step {step}"
            );
        }
        // A sample of the ranges: the total is the header's.
        let s = stream(Some(Overwritten {
            bytes: MIB + 4096,
            ranges: vec![(2 * MIB, 4096 * 64)],
            all: false,
        }));
        let sig = measure(&s, 1000);
        assert_eq!(sig.rewrite_bytes, MIB + 4096);
        assert_eq!(sig.rewrite_sampled_blocks, 64);
    }

    fn measure_with_map(s: &[u8], map: Result<Option<ThinMap>, String>) -> VolumeSignals {
        let mut m = LvmMeter::default();
        m.know_base_map(map);
        measure_by(m, s, 3000)
    }

    /// A header that lists no overwrites (a lying primary) hides nothing
    /// from the standby's own map of the base: the noise at 2 MiB was
    /// written into blocks the base maps. Where the map cannot be used,
    /// the header's word is, and the note says so.
    #[test]
    fn the_standbys_own_map_decides_what_was_overwritten() {
        let lie = stream(Some(Overwritten {
            bytes: 0,
            ranges: vec![],
            all: true,
        }));
        // The base maps 2-3 MiB (and 3.5 MiB on, out of the data), in 64 KiB blocks.
        let map = vec![(3 * MIB + MIB / 2, MIB / 2), (2 * MIB, MIB)];
        let sig = measure_with_map(
            &lie,
            Ok(Some(ThinMap {
                block_size: 65536,
                ranges: map.clone(),
            })),
        );
        assert!(sig.complete, "{:?}", sig.note);
        assert_eq!(
            (sig.rewrite_bytes, sig.rewrite_bytes_claimed),
            (MIB, Some(0))
        );
        assert_eq!(
            (
                sig.rewrite_sampled_blocks,
                sig.rewrite_incompressible_blocks
            ),
            (256, 256)
        );
        // An honest header: the claim and the measure agree.
        let honest = stream(Some(Overwritten {
            bytes: MIB,
            ranges: vec![(2 * MIB, MIB)],
            all: true,
        }));
        let sig = measure_with_map(
            &honest,
            Ok(Some(ThinMap {
                block_size: 65536,
                ranges: map.clone(),
            })),
        );
        assert_eq!(
            (sig.rewrite_bytes, sig.rewrite_bytes_claimed),
            (MIB, Some(MIB))
        );
        // Standby blocks that do not divide the primary's: the header's word.
        let sig = measure_with_map(
            &lie,
            Ok(Some(ThinMap {
                block_size: 3 * 65536,
                ranges: map,
            })),
        );
        assert_eq!((sig.rewrite_bytes, sig.rewrite_bytes_claimed), (0, None));
        assert!(sig.note.unwrap().contains("do not divide"));
        let sig = measure_with_map(&lie, Err("thin_dump: no such device".into()));
        assert_eq!(sig.rewrite_bytes, 0);
        assert!(sig.note.unwrap().contains("no such device"));
        // Not a thin snapshot here: the header's word, nothing to say.
        let sig = measure_with_map(&honest, Ok(None));
        assert!(sig.complete, "{:?}", sig.note);
        assert_eq!((sig.rewrite_bytes, sig.rewrite_bytes_claimed), (MIB, None));
    }

    #[test]
    fn without_or_with_bad_ranges_there_is_no_overwrite_signal() {
        let sig = measure(&stream(None), 5000);
        assert_eq!(sig.rewrite_bytes, 0);
        assert!(sig.note.unwrap().contains("did not say"));
        for ranges in [
            vec![(3 * MIB, MIB), (0, MIB)],
            vec![(4 * MIB, 1)],
            vec![(u64::MAX, 2)],
        ] {
            let sig = measure(
                &stream(Some(Overwritten {
                    bytes: 1,
                    ranges,
                    all: true,
                })),
                5000,
            );
            assert_eq!(sig.rewrite_bytes, 0);
            assert!(sig.note.unwrap().contains("ignored"));
        }
        let sig = measure(b"SSLVM01\n\0\0\0\x05garbage", 3);
        assert!(sig.note.unwrap().contains("decoding stopped"));
    }

    /// The meter's speed on a 64 MiB device image, a quarter overwritten
    /// in 4 096 ranges, against blake3 over the same stream: `cargo test
    /// --lib lvm_meter_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn lvm_meter_cost() {
        let size = 64 * MIB;
        let mut dev = tempfile::tempfile().unwrap();
        dev.write_all(&noise(size as usize, 11)).unwrap();
        let ranges: Vec<(u64, u64)> = (0..4096u64).map(|i| (i * 4 * 4096, 4096)).collect();
        let overwritten = Overwritten {
            bytes: 4096 * 4096,
            ranges,
            all: true,
        };
        let header = incremental(size, Some(overwritten));
        let extents = vec![Extent {
            offset: 0,
            len: size,
            data: true,
        }];
        let mut s = Vec::new();
        Encoder::new(dev, &header, extents)
            .read_to_end(&mut s)
            .unwrap();
        let t = std::time::Instant::now();
        let sig = measure(&s, 1 << 20);
        let meter = t.elapsed();
        let t = std::time::Instant::now();
        let mut h = blake3::Hasher::new();
        for piece in s.chunks(1 << 20) {
            h.update(piece);
        }
        std::hint::black_box(h.finalize());
        let hash = t.elapsed();
        assert_eq!(sig.rewrite_bytes, 4096 * 4096);
        eprintln!(
            "lvm meter: {} MiB in {:.1} ms ({:.0} MiB/s); blake3 {:.1} ms",
            s.len() >> 20,
            meter.as_secs_f64() * 1e3,
            s.len() as f64 / (1 << 20) as f64 / meter.as_secs_f64(),
            hash.as_secs_f64() * 1e3
        );
    }
}
