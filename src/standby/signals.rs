//! Ransomware signals measured on receive (issue 31): the standby sees
//! every changed byte of every set, out of the attacker's reach. While a
//! stream passes to the backend, a [`Meter`] counts what it changes —
//! bytes, the share of sampled 4 KiB blocks that zstd cannot shrink, and
//! for btrfs the stream's own commands: writes into files that existed
//! before (rewrites in place), renames that change a file's extension and
//! unlinks, against new files; for ZFS (`zfs.rs`) data written into files
//! created before the base vs new files; for LVM (`lvm.rs`) blocks mapped
//! before and overwritten vs newly mapped. A resumed receive is measured
//! as bytes (`raw`): its size against the baseline and its entropy.
//!
//! At commit, [`verdict`] judges the set against the thresholds of
//! `[detect]` and a rolling baseline (the median of the volume's recent
//! transfers of the same kind) and records a clean or suspect verdict.
//! Everything here is best effort: a failure to measure or record never
//! fails a receive; it is logged.

mod btrfs;
mod dense;
mod lvm;
pub mod verdict;
mod zfs;

use std::time::{Duration, Instant};

use crate::base::catalog::signals::VolumeSignals;
use crate::wire::compress::FrameCompressor;

/// Ends every decoder's `finish`: the first reason its counts are
/// incomplete, if any, goes on `sig`. Decoding stopped, or the stream ended
/// without its `end` marker (the format's name for it), come first; then
/// the decoder's `own` reasons.
pub(super) fn mark_incomplete(
    sig: &mut VolumeSignals,
    stopped: Option<String>,
    ended: bool,
    end: &str,
    own: impl FnOnce() -> Option<String>,
) {
    let why = if let Some(w) = stopped {
        Some(format!("decoding stopped: {w}"))
    } else if !ended && sig.complete {
        Some(format!("the stream ended without its {end}"))
    } else {
        own()
    };
    if let Some(w) = why {
        sig.incomplete(w);
    }
}

/// Bytes of a sampled block.
pub const BLOCK: usize = 4096;
/// One block in this many is compressed.
pub const SAMPLE_EVERY: u64 = 64;
/// A block zstd leaves at this share of its size or more is incompressible.
const INCOMPRESSIBLE: f64 = 0.97;

/// Tells noise from data by compressing it with zstd level 1 through one
/// reused context ([`FrameCompressor::probe`], the helper the sender's
/// pipeline compresses frames with): a context made per block cost more
/// than the compression itself. Made on the first sampled block, so a
/// stream too small to sample costs nothing.
#[derive(Default)]
pub(crate) struct NoiseProbe {
    zstd: Option<FrameCompressor>,
}

impl std::fmt::Debug for NoiseProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseProbe")
    }
}

impl NoiseProbe {
    /// Is this block (up to 4 KiB) incompressible: does zstd leave it at
    /// [`INCOMPRESSIBLE`] of its size or more? Under 512 bytes: no.
    pub fn incompressible(&mut self, block: &[u8]) -> bool {
        if block.len() < 512 {
            return false;
        }
        if self.zstd.is_none() {
            self.zstd = FrameCompressor::probe(1).ok();
        }
        let Some(z) = self.zstd.as_mut() else {
            return false;
        };
        // Anything that does not fit below the line is noise.
        let room = (block.len() as f64 * INCOMPRESSIBLE).ceil() as usize - 1;
        z.compress_within(block, room).is_none()
    }
}

/// Completes a sampled block that the end of the previous piece cut, from
/// the start of `data`: how many bytes of `data` it took, and whether the
/// block is now whole (nothing is taken when no block is open).
pub(super) fn complete_partial(partial: &mut Vec<u8>, data: &[u8]) -> (usize, bool) {
    if partial.is_empty() {
        return (0, false);
    }
    let n = (BLOCK - partial.len()).min(data.len());
    partial.extend_from_slice(&data[..n]);
    (n, partial.len() == BLOCK)
}

/// Samples every [`SAMPLE_EVERY`]th block of a sequence of data (a block
/// cut by the end of one piece is completed from the next).
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    /// Bytes seen so far (the block clock).
    pos: u64,
    /// A sampled block still being filled.
    partial: Vec<u8>,
    probe: NoiseProbe,
    pub sampled: u64,
    pub incompressible: u64,
}

impl Sampler {
    pub fn take(&mut self, data: &[u8]) {
        let period = BLOCK as u64 * SAMPLE_EVERY;
        let (mut i, whole) = complete_partial(&mut self.partial, data);
        if whole {
            self.classify_partial();
        }
        while i < data.len() {
            let at = self.pos + i as u64;
            let into = at % period;
            if into == 0 {
                if data.len() - i >= BLOCK {
                    let noise = self.probe.incompressible(&data[i..i + BLOCK]);
                    self.count(noise);
                } else {
                    self.partial.extend_from_slice(&data[i..]);
                }
            }
            i = i.saturating_add((period - into) as usize);
        }
        self.pos += data.len() as u64;
    }

    fn count(&mut self, noise: bool) {
        self.sampled += 1;
        if noise {
            self.incompressible += 1;
        }
    }

    fn classify_partial(&mut self) {
        let noise = self.probe.incompressible(&self.partial);
        self.count(noise);
        self.partial.clear();
    }

    /// The end of the data: a short last block counts as it is.
    pub fn flush(&mut self) {
        if self.partial.len() >= 512 {
            self.classify_partial();
        }
        self.partial.clear();
    }
}

enum Parser {
    Btrfs(Box<btrfs::BtrfsMeter>),
    Zfs(Box<zfs::ZfsMeter>),
    Lvm(Box<lvm::LvmMeter>),
    Raw(Sampler),
}

/// One stream's measurement, fed what `serve` passes to the backend.
pub struct Meter {
    parser: Parser,
    sig: VolumeSignals,
    spent: Duration,
}

impl Meter {
    /// `backend`: the volume's backend (`btrfs` decodes the stream);
    /// `resume`: the stream continues one cut earlier (so it is partial).
    pub fn new(backend: &str, incremental: bool, resume: bool) -> Meter {
        let parser = if backend == "btrfs" && !resume {
            Parser::Btrfs(Box::default())
        } else if backend == "zfs" && !resume {
            Parser::Zfs(Box::new(zfs::ZfsMeter::new(incremental, None)))
        } else if backend == "lvm" && !resume {
            Parser::Lvm(Box::default())
        } else {
            Parser::Raw(Sampler::default())
        };
        let sig = VolumeSignals {
            parser: match parser {
                Parser::Btrfs(_) => "btrfs",
                Parser::Zfs(_) => "zfs",
                Parser::Lvm(_) => "lvm",
                Parser::Raw(_) => "raw",
            }
            .into(),
            incremental,
            complete: !resume,
            note: resume.then(|| "a resumed receive: only its last part was measured".into()),
            ..VolumeSignals::default()
        };
        Meter {
            parser,
            sig,
            spent: Duration::ZERO,
        }
    }

    /// What was recorded when the base was received (ZFS: its snapshot's
    /// time tells old files from new ones).
    pub fn know_base(&mut self, base: Option<&VolumeSignals>) {
        if let Parser::Zfs(z) = &mut self.parser {
            **z = zfs::ZfsMeter::new(self.sig.incremental, base.and_then(|b| b.snapshot_time));
        }
    }

    /// An LVM incremental: the standby's own thin map of the base is
    /// wanted (to check the sender's overwritten list against).
    pub fn wants_base_map(&self) -> bool {
        matches!(self.parser, Parser::Lvm(_)) && self.sig.incremental
    }

    /// Read the base's thin map (`read`, timed as the meter's cost).
    pub fn know_base_map(
        &mut self,
        read: impl FnOnce() -> Result<Option<crate::backend::ThinMap>, String>,
    ) {
        let t = Instant::now();
        if let Parser::Lvm(l) = &mut self.parser {
            l.know_base_map(read());
        }
        self.spent += t.elapsed();
    }

    pub fn feed(&mut self, data: &[u8]) {
        let t = Instant::now();
        self.sig.stream_bytes += data.len() as u64;
        match &mut self.parser {
            Parser::Btrfs(b) => b.feed(data),
            Parser::Zfs(z) => z.feed(data),
            Parser::Lvm(l) => l.feed(data),
            Parser::Raw(s) => s.take(data),
        }
        self.spent += t.elapsed();
    }

    pub fn finish(self) -> VolumeSignals {
        let mut sig = self.sig;
        match self.parser {
            Parser::Btrfs(b) => b.finish(&mut sig),
            Parser::Zfs(z) => z.finish(&mut sig),
            Parser::Lvm(l) => l.finish(&mut sig),
            Parser::Raw(mut s) => {
                s.flush();
                sig.data_bytes = sig.stream_bytes;
                sig.sampled_blocks = s.sampled;
                sig.incompressible_blocks = s.incompressible;
            }
        }
        sig.cpu_us = u64::try_from(self.spent.as_micros()).unwrap_or(u64::MAX);
        sig
    }
}

/// Record a received snapshot's signals (best effort: logged, never fatal).
pub fn record(
    catalog: &crate::base::catalog::Catalog,
    log: &dyn Fn(tracing::Level, &str),
    role: &str,
    snapshot: &str,
    meter: Meter,
) {
    let sig = meter.finish();
    if let Err(e) = catalog.write_signals(role, snapshot, &sig) {
        log(
            tracing::Level::WARN,
            &format!("volume `{role}` {snapshot}: signals not recorded: {e}"),
        );
    }
}

/// Judge a set just committed (once: a retried commit keeps its verdict).
pub fn judge_committed(
    cfg: &crate::base::config::Config,
    catalog: &crate::base::catalog::Catalog,
    log: &dyn Fn(tracing::Level, &str),
    m: &crate::base::model::Manifest,
) {
    let id = &m.id;
    let judged = (|| -> crate::base::error::Result<Option<_>> {
        if catalog.judged_suspect(id)?.is_some() {
            return Ok(None);
        }
        verdict::judge_set(&cfg.detect, catalog, m).map(Some)
    })();
    match judged {
        Ok(Some(v)) if v.is_suspect() => log(
            tracing::Level::ERROR,
            &format!(
                "set {id} is SUSPECT (score {:.2}): {}",
                v.score,
                v.reason_lines().join(" | ")
            ),
        ),
        Ok(_) => {}
        Err(e) => log(
            tracing::Level::WARN,
            &format!("set {id}: no verdict recorded: {e}"),
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic incompressible bytes (xorshift), for the signal
    /// decoders' tests here and in the submodules.
    pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn random_blocks_are_incompressible_text_is_not() {
        let mut p = NoiseProbe::default();
        assert!(p.incompressible(&noise(4096, 7)));
        let text = b"Subject: lunch\r\nFrom: a@example.org\r\n\r\nSee you at noon.\r\n".repeat(80);
        assert!(!p.incompressible(&text[..4096]));
        // The context is reused: the same answers again, in any order.
        assert!(p.incompressible(&noise(4096, 9)));
        assert!(!p.incompressible(&text[100..4096]));
        assert!(!p.incompressible(&noise(300, 9)), "too short to judge");
    }

    #[test]
    fn the_sampler_takes_one_block_in_64_however_the_data_is_cut() {
        let data = noise(BLOCK * SAMPLE_EVERY as usize * 10, 3);
        let mut whole = Sampler::default();
        whole.take(&data);
        let mut cut = Sampler::default();
        for piece in data.chunks(1000) {
            cut.take(piece);
        }
        assert_eq!(whole.sampled, 10);
        assert_eq!(whole.incompressible, 10);
        assert_eq!(cut.sampled, 10);
        assert_eq!(cut.incompressible, 10);
    }

    #[test]
    fn a_raw_meter_counts_bytes_and_entropy() {
        let mut m = Meter::new("mem", true, false);
        m.feed(&noise(BLOCK * 64 * 4, 5));
        let s = m.finish();
        assert_eq!(s.parser, "raw");
        assert_eq!(s.stream_bytes, (BLOCK * 64 * 4) as u64);
        assert_eq!(s.sampled_blocks, 4);
        assert_eq!(s.incompressible_blocks, 4);
        assert!(s.complete);
    }
}
