//! The noise share of ZFS and LVM data, sampled densely at first: every
//! 4 KiB block of a stream's first [`DENSE`] blocks, then one in
//! [`SAMPLE_EVERY`]. A small set (a few files rewritten) is judged on all
//! of its blocks rather than on the one block the sparse clock would
//! pick; a large one costs what the sparse clock costs, plus 64 blocks.
//! Each sample counts for the blocks it stands for (1, then 64), so the
//! counts are blocks represented and the share stays a share of bytes.

use super::{BLOCK, NoiseProbe, SAMPLE_EVERY, complete_partial};

/// Blocks sampled one by one at the start of a stream.
pub const DENSE: u64 = 64;

fn sampled(k: u64) -> bool {
    k < DENSE || k % SAMPLE_EVERY == 0
}

fn weight(k: u64) -> u64 {
    if k < DENSE { 1 } else { SAMPLE_EVERY }
}

/// The first sampled block at or after block `k`.
fn next_sampled(k: u64) -> u64 {
    if sampled(k) {
        k
    } else {
        k.div_ceil(SAMPLE_EVERY).saturating_mul(SAMPLE_EVERY)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Dense {
    pos: u64,
    partial: Vec<u8>,
    partial_weight: u64,
    /// One zstd context for the stream's samples.
    probe: NoiseProbe,
    /// Blocks represented by the samples, and of those the noise.
    pub sampled: u64,
    pub incompressible: u64,
}

impl Dense {
    pub fn take(&mut self, data: &[u8]) {
        let bs = BLOCK as u64;
        let (mut i, whole) = complete_partial(&mut self.partial, data);
        if whole {
            self.classify_partial();
        }
        while i < data.len() {
            let at = self.pos + i as u64;
            let k = if at % bs == 0 {
                next_sampled(at / bs)
            } else {
                next_sampled(at / bs + 1)
            };
            let Some(start) = k
                .checked_mul(bs)
                .and_then(|s| s.checked_sub(self.pos))
                .filter(|s| *s < data.len() as u64)
            else {
                break;
            };
            let s = start as usize;
            if data.len() - s >= BLOCK {
                let w = weight(k);
                let noise = self.probe.incompressible(&data[s..s + BLOCK]);
                self.count(noise, w);
                i = s + BLOCK;
            } else {
                self.partial.extend_from_slice(&data[s..]);
                self.partial_weight = weight(k);
                i = data.len();
            }
        }
        self.pos += data.len() as u64;
    }

    fn count(&mut self, noise: bool, w: u64) {
        self.sampled += w;
        if noise {
            self.incompressible += w;
        }
    }

    fn classify_partial(&mut self) {
        let noise = self.probe.incompressible(&self.partial);
        self.count(noise, self.partial_weight);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_block_at_first_then_one_in_64_weighted_however_cut() {
        // 64 blocks of noise, then 192 of zeros: 64 one by one, then
        // blocks 64, 128, 192 standing for 64 each.
        let mut data: Vec<u8> = Vec::new();
        let mut x = 7u64;
        for _ in 0..64 * BLOCK {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push(x as u8);
        }
        data.resize(256 * BLOCK, 0);
        for step in [data.len(), 1000, 4096, 5000] {
            let mut d = Dense::default();
            for p in data.chunks(step) {
                d.take(p);
            }
            d.flush();
            assert_eq!(
                (d.sampled, d.incompressible),
                (64 + 3 * 64, 64),
                "step {step}"
            );
        }
        assert_eq!(next_sampled(65), 128);
        assert_eq!(next_sampled(63), 63);
    }
}
