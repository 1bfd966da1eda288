//! Mail-like test data for the ransomware tests on btrfs (tests/ransom.rs)
//! and in the storage VM (tests/vm/ransom.rs, which includes this file by
//! path): what attachments and database or index files look like to the
//! standby's signals, so that ordinary traffic is told from noise.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// Writes `data` to a new `path`, synced.
pub fn write_synced(path: &Path, data: &[u8]) {
    let mut f =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// Appends `line` and a newline to `path` (made if missing), synced.
pub fn append_synced(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// A normal week of a mail server's traffic after its first set, two sets
/// a day (on btrfs in tests/ransom.rs, on ZFS and LVM in tests/vm/ransom.rs,
/// each at its own scale). Every half day: new mail (Monday's backlog, a
/// quiet weekend) and deletions; an index merge (the two newest segments
/// rewritten in place, a new one written, the oldest dropped, the list
/// rewritten); MariaDB rewriting tablespace pages in place and a quarter
/// of its circular log; a line in the redo log, and every evening its
/// rollover into `archive/`; Sunday's trash purge of a tenth of the store.
/// The index's segments 0 to 5, the tablespace and its log exist before.
pub struct Week {
    /// New messages a half day: on Monday, Tuesday to Friday, the weekend.
    pub new: [usize; 3],
    /// Messages deleted a half day.
    pub deleted: usize,
    /// A new index segment's bytes (the two rewritten take half of it).
    pub segment: usize,
    /// The tablespace's 16 KiB pages, and how many a half day rewrites.
    pub pages: u64,
    pub pages_rewritten: u64,
    /// A wait before each rollover (on ZFS a rename in the same coarse
    /// clock tick as the log's last write looks like a rewrite: ctime not
    /// after mtime, docs/ransomware.md).
    pub pause_before_rollover: std::time::Duration,
    /// The random bytes of a seed that the [`structured`] data are made of.
    pub random: fn(u64, usize) -> Vec<u8>,
    /// The index's directory (segments `_<g>.cfs`, `segments.gen`).
    pub index: PathBuf,
    /// The tablespace and its log.
    pub ibdata: PathBuf,
    pub iblog: PathBuf,
    /// The redolog volume (the log `log`, rolled into `archive/`).
    pub redolog: PathBuf,
}

/// The mail store's side of a [`Week`].
pub trait MailServer {
    /// `n` new messages of seed `seed` (a quarter with an attachment).
    fn deliver(&mut self, n: usize, seed: u64);
    /// Deletes the store's `at`-th message, oldest first.
    fn delete(&mut self, at: usize);
    /// How many messages the store holds.
    fn messages(&self) -> usize;
    /// Takes a set and ships it; its id.
    fn set(&mut self) -> String;
}

impl Week {
    /// Index segment `g`.
    pub fn segment(&self, g: usize) -> PathBuf {
        self.index.join(format!("_{g}.cfs"))
    }

    /// [`structured`] data of seed `seed`.
    pub fn structured(&self, seed: u64, len: usize) -> Vec<u8> {
        structured((self.random)(seed, len))
    }

    /// The redo log's path.
    pub fn log(&self) -> PathBuf {
        self.redolog.join("log")
    }

    /// The files the week finds: a tablespace of [`Week::pages`] pages, a
    /// 1 MiB log, index segments 0 to 5 and their list; `archive/` for the
    /// redo log's rollovers.
    pub fn prepare(&self) {
        write_synced(
            &self.ibdata,
            &self.structured(1, self.pages as usize * 16384),
        );
        write_synced(&self.iblog, &self.structured(2, 1 << 20));
        for g in 0..6 {
            write_synced(
                &self.segment(g),
                &self.structured(100 + g as u64, self.segment),
            );
        }
        write_synced(&self.index.join("segments.gen"), &self.structured(99, 4096));
        std::fs::create_dir_all(self.redolog.join("archive")).unwrap();
    }

    /// The week's 14 half days, each ending in a set; their ids.
    pub fn run(&self, server: &mut dyn MailServer) -> Vec<String> {
        let mut ids = Vec::new();
        let (mut next_segment, mut oldest_segment, mut page) = (6usize, 0usize, 0u64);
        for day in 0..7u64 {
            for half in 0..2u64 {
                let seed = 1000 * day + 100 * half;
                let new = match day {
                    0 => self.new[0],
                    5 | 6 => self.new[2],
                    _ => self.new[1],
                };
                server.deliver(new, seed);
                for _ in 0..self.deleted {
                    server.delete(3);
                }
                for g in [next_segment - 1, next_segment - 2] {
                    let data = self.structured(seed + g as u64, self.segment / 2);
                    rewrite_at(&self.segment(g), 0, &data);
                }
                let data = self.structured(seed + 7, self.segment);
                write_synced(&self.segment(next_segment), &data);
                std::fs::remove_file(self.segment(oldest_segment)).unwrap();
                next_segment += 1;
                oldest_segment += 1;
                let list = self.structured(seed + 8, 4096);
                rewrite_at(&self.index.join("segments.gen"), 0, &list);
                for p in 0..self.pages_rewritten {
                    page = (page + 37 + p) % self.pages;
                    let data = self.structured(seed + 50 + p, 16384);
                    rewrite_at(&self.ibdata, page * 16384, &data);
                }
                let log = self.structured(seed + 9, 256 << 10);
                rewrite_at(&self.iblog, ((2 * day + half) % 4) * (256 << 10), &log);
                append_synced(
                    &self.log(),
                    &format!("day {day} half {half}: {new} delivered"),
                );
                if half == 1 {
                    std::thread::sleep(self.pause_before_rollover);
                    let archived = self.redolog.join(format!("archive/redo-{day}.log"));
                    std::fs::rename(self.log(), archived).unwrap();
                    append_synced(&self.log(), &format!("day {day}: new log"));
                }
                if day == 6 && half == 1 {
                    for _ in 0..server.messages() / 10 {
                        server.delete(1);
                    }
                }
                ids.push(server.set());
            }
        }
        ids
    }
}
