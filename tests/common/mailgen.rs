//! Mail-like test data for the ransomware tests on btrfs (tests/ransom.rs)
//! and in the storage VM (tests/vm/ransom.rs, which includes this file by
//! path): what attachments and database or index files look like to the
//! standby's signals, so that ordinary traffic is told from noise.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// An ordinary message `i` of `len` bytes: `head`, then a text of
/// `words` (picked by an xorshift seeded from `i`, a line break now and
/// then), cut at `len`.
pub fn message(head: String, i: usize, words: &[&str], len: usize) -> Vec<u8> {
    let mut s = head;
    let mut x = i as u64 * 2654435761 + 1;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(words[(x % words.len() as u64) as usize]);
        s.push(if x % 11 == 0 { '\n' } else { ' ' });
    }
    s.truncate(len);
    s.into_bytes()
}

/// MIME's base64 (an attachment as it sits in a message file): 6 bits of
/// every byte carry data, so even a compressed attachment compresses to
/// about three quarters — mail, not noise.
pub fn base64(data: &[u8]) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
    for (n, c) in data.chunks(3).enumerate() {
        let v = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            out.push(A[(v >> (18 - 6 * k) & 63) as usize]);
        }
        if n % 19 == 18 {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

/// Binary but structured data (index postings, database rows) made of
/// `random` bytes: small values from a skewed distribution (three bytes
/// in four keep only their low nibble) that zstd shrinks to about half.
pub fn structured(random: Vec<u8>) -> Vec<u8> {
    random
        .into_iter()
        .enumerate()
        .map(|(i, b)| if i % 4 == 0 { b } else { b & 0x0f })
        .collect()
}

/// Rewrites `data` into `path` at `at`, in place (same inode), synced.
pub fn rewrite_at(path: &Path, at: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}
