//! The ZFS send stream's records, counted for the signals as they pass
//! (the record layout of OpenZFS `include/sys/zfs_ioctl.h`, decoded here
//! from the bytes; only what the signals need):
//!
//! - `DRR_BEGIN` gives the snapshot's creation time (recorded, so that the
//!   next incremental can tell old files from new ones) and the feature
//!   flags: a raw (`-w`, encrypted) send carries no readable data, so it
//!   gets no file signals, only the stream's bytes and their entropy.
//! - `DRR_OBJECT` of a plain file carries its znode (the bonus buffer): a
//!   file whose creation time (`crtime`) is before the base snapshot was
//!   taken existed before, so data written into it is a *rewrite*; a file
//!   created since is *new*. The base's time comes from the signals
//!   recorded when the base was received; without them the two are not
//!   told apart (said in the note).
//! - `DRR_WRITE` into a plain file: its bytes, and their noise share
//!   (zstd samples of 4 KiB blocks, [`super::dense`]). A block the sender
//!   compressed (`send -c`) is compressible by definition (ZFS keeps a
//!   block compressed only when it saves 1/8 at least) and counts as such
//!   without being read.
//! - `DRR_FREEOBJECTS`: the freed object slots (an upper bound on deleted
//!   files: it also counts slots never used in the dnode blocks sent).
//! - Renames: the stream does not say a file was renamed, nor its old
//!   name (a removed ZAP entry is zeroed). It carries the changed blocks
//!   of each directory (`DRR_WRITE` of its ZAP, read by [`zap`]) with the
//!   new names, and the znode of every file whose dnode changed. A rename
//!   sets the file's `ctime` and not its `mtime` (`zfs_link_create` with
//!   `ZRENAMING`); a write sets both to the same instant. So an existing
//!   file named in a directory block of the stream whose `ctime` is after
//!   the base and after its `mtime` was renamed since the base (or had
//!   its mode, owner or links changed: counted the same). Its new
//!   extension counts as *new* when no other file named in the blocks of
//!   that directory — new ones, or existing ones not renamed — has it: an
//!   encryptor's `x.msg` → `x.msg.locked` among `y.msg`s. A directory
//!   whose every file sent was renamed gives no comparison (renames
//!   counted, extensions not). Directory blocks sent compressed
//!   (`send -c`) are not read (said in the note), nor those of a tiny
//!   directory embedded in the block pointer.
//!
//! Hostile input: each record header is 312 bytes and only it (and up to
//! [`MAX_BONUS`] of a bonus buffer) is buffered; payloads stream through.
//! Sizes beyond what ZFS writes stop the decoding (marked incomplete),
//! never the receive, and nothing here panics or grows without bound.
//! Checksums and the stream's validity are `zfs receive`'s business.

mod zap;

use std::collections::{HashMap, HashSet};

use super::dense::Dense;
use super::{BLOCK, Sampler};
use crate::base::catalog::signals::VolumeSignals;

const RECORD: usize = 312;
const MAGIC: u64 = 0x2_F5BA_CBAC;
const FEATURE_RAW: u64 = 1 << 24;
/// `DMU_COMPOUNDSTREAM` (`send -R`): snapsite sends one snapshot a stream.
const COMPOUND: u64 = 2;

const DRR_BEGIN: u32 = 0;
const DRR_OBJECT: u32 = 1;
const DRR_FREEOBJECTS: u32 = 2;
const DRR_WRITE: u32 = 3;
const DRR_FREE: u32 = 4;
const DRR_END: u32 = 5;
const DRR_WRITE_BYREF: u32 = 6;
const DRR_SPILL: u32 = 7;
const DRR_WRITE_EMBEDDED: u32 = 8;
const DRR_OBJECT_RANGE: u32 = 9;
const DRR_REDACT: u32 = 10;

/// `DMU_OT_PLAIN_FILE_CONTENTS`, `DMU_OT_ZNODE`, `DMU_OT_SA`.
const OT_FILE: u32 = 19;
const OT_ZNODE: u32 = 17;
const OT_SA: u32 = 44;
/// `DMU_OT_DIRECTORY_CONTENTS`: a directory's ZAP.
const OT_DIR: u32 = 20;
/// Larger than any ZAP block ZFS writes (128 KiB).
const MAX_DIR_BLOCK: u64 = 1 << 20;
const SA_MAGIC: u32 = 0x2F505A;
const S_IFMT: u64 = 0o170000;
const S_IFREG: u64 = 0o100000;

/// Larger than any block ZFS writes (16 MiB) or any BEGIN nvlist it sends.
const MAX_PAYLOAD: u64 = 16 << 20;
const MAX_BEGIN_PAYLOAD: u64 = 1 << 20;
/// Of a bonus buffer, only the start is read (the znode's fixed part).
const MAX_BONUS: usize = 1024;
/// Objects remembered; beyond, the file counts are marked a floor.
const MAX_OBJECTS: usize = 1 << 20;

/// What is known of an object from its `DRR_OBJECT` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Age {
    New,
    Existing,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Object {
    age: Age,
    written: bool,
    /// Existing, and its `ctime` is after the base and after its `mtime`:
    /// renamed (or its attributes changed) since the base.
    renamed: bool,
}

/// A file entry of a directory block the stream carries.
#[derive(Debug, Clone, Copy)]
struct Named {
    dir: u64,
    object: u64,
    /// The name's extension, hashed (only compared).
    extension: u64,
}

/// Where the current record's payload goes.
#[derive(Debug)]
enum Payload {
    /// Bytes to pass over.
    Skip(u64),
    /// File data to sample (`rewrite`: into a file that existed before).
    Data { left: u64, rewrite: bool },
    /// A directory's ZAP block, kept whole to read its entries.
    Dir { left: u64, dir: u64, buf: Vec<u8> },
    /// A bonus buffer: the first bytes are kept, then the rest skipped.
    Bonus {
        left: u64,
        object: u64,
        file: bool,
        bonus_type: u32,
        buf: Vec<u8>,
    },
}

#[derive(Debug, Default)]
pub struct ZfsMeter {
    header: Vec<u8>,
    payload: Option<Payload>,
    begun: bool,
    ended: bool,
    stopped: Option<String>,
    /// A raw send: the rest of the stream is sampled as bytes.
    raw: Option<Sampler>,
    /// The base snapshot's creation time (seconds, the primary's clock).
    base_time: Option<u64>,
    incremental: bool,
    snapshot_time: Option<u64>,
    objects: HashMap<u64, Object>,
    overflow: bool,
    named: Vec<Named>,
    /// Directory objects (their embedded blocks are not file data).
    dirs: HashSet<u64>,
    /// Directory blocks not read (sent compressed, or larger than ZFS
    /// writes).
    dirs_unread: u64,
    all: Dense,
    rewrites: Dense,
    /// Bytes of sender-compressed blocks (counted as compressible samples
    /// on the same clock as the sampler).
    all_compressed: u64,
    rewrite_compressed: u64,
    data_bytes: u64,
    rewrite_bytes: u64,
    files_new: u64,
    objects_freed: u64,
    unknown_age_bytes: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn round8(n: u64) -> u64 {
    n.div_ceil(8).saturating_mul(8)
}

/// What the signals read of a znode: its mode, and its modification,
/// change and creation times (seconds, nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Znode {
    mode: u64,
    mtime: (u64, u64),
    ctime: (u64, u64),
    crtime: u64,
}

/// A znode from the start of its bonus buffer: system attributes
/// (`DMU_OT_SA`, laid out by `zfs_mknode` as MODE, SIZE, GEN, UID, GID,
/// PARENT, FLAGS, ATIME, MTIME, CTIME, CRTIME; the times two u64s) or the
/// old `znode_phys_t` (ATIME, MTIME, CTIME, CRTIME, GEN, MODE).
fn znode(bonus_type: u32, b: &[u8]) -> Option<Znode> {
    let get = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    let time = |at: usize| -> Option<(u64, u64)> { Some((get(at)?, get(at + 8)?)) };
    let (mode, times) = match bonus_type {
        OT_SA => {
            if u32::from_le_bytes(b.get(..4)?.try_into().ok()?) != SA_MAGIC {
                return None;
            }
            let info = u16::from_le_bytes(b.get(4..6)?.try_into().ok()?);
            let hdr = usize::from((info >> 10) & 0x3f) * 8;
            if hdr < 8 {
                return None;
            }
            (get(hdr)?, hdr + 72)
        }
        OT_ZNODE => (get(72)?, 16),
        _ => return None,
    };
    Some(Znode {
        mode,
        mtime: time(times)?,
        ctime: time(times + 16)?,
        crtime: get(times + 32)?,
    })
}

impl ZfsMeter {
    /// `base_time`: the base snapshot's creation time, as recorded when
    /// the base was received (`None`: not known).
    pub fn new(incremental: bool, base_time: Option<u64>) -> ZfsMeter {
        ZfsMeter {
            incremental,
            base_time,
            ..ZfsMeter::default()
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        if let Some(s) = &mut self.raw {
            s.take(data);
            return;
        }
        while !data.is_empty() && self.stopped.is_none() && !self.ended {
            if let Some(p) = &mut self.payload {
                let n = match p {
                    Payload::Skip(left) => {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        n
                    }
                    Payload::Data { left, rewrite } => {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        self.all.take(&data[..n]);
                        if *rewrite {
                            self.rewrites.take(&data[..n]);
                        }
                        n
                    }
                    Payload::Bonus { left, buf, .. } => {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        let keep = n.min(MAX_BONUS.saturating_sub(buf.len()));
                        buf.extend_from_slice(&data[..keep]);
                        n
                    }
                    Payload::Dir { left, buf, .. } => {
                        let n = (*left).min(data.len() as u64) as usize;
                        *left -= n as u64;
                        buf.extend_from_slice(&data[..n]);
                        n
                    }
                };
                data = &data[n..];
                let done = match p {
                    Payload::Skip(l)
                    | Payload::Data { left: l, .. }
                    | Payload::Bonus { left: l, .. }
                    | Payload::Dir { left: l, .. } => *l == 0,
                };
                if done {
                    match self.payload.take() {
                        Some(Payload::Bonus {
                            object,
                            file,
                            bonus_type,
                            buf,
                            ..
                        }) => self.object(object, file, bonus_type, &buf),
                        Some(Payload::Dir { dir, buf, .. }) => self.directory(dir, &buf),
                        _ => {}
                    }
                }
                continue;
            }
            let n = (RECORD - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.header.len() == RECORD {
                let h = std::mem::take(&mut self.header);
                if let Err(why) = self.record(&h) {
                    self.stop(why);
                    return;
                }
                if self.raw.is_some() {
                    // The rest of the stream is encrypted: bytes only.
                    self.feed(data);
                    return;
                }
            }
        }
    }

    fn stop(&mut self, why: &str) {
        self.stopped = Some(why.to_string());
        self.payload = None;
        self.header = Vec::new();
    }

    /// One record header; sets up its payload.
    fn record(&mut self, h: &[u8]) -> Result<(), &'static str> {
        let kind = u32_at(h, 0);
        if !self.begun {
            if kind != DRR_BEGIN {
                return Err(
                    if kind.swap_bytes() == DRR_BEGIN && u64_at(h, 8).swap_bytes() == MAGIC {
                        "a byte-swapped (big-endian) stream"
                    } else {
                        "not a ZFS send stream"
                    },
                );
            }
            if u64_at(h, 8) != MAGIC {
                return Err("not a ZFS send stream (bad magic)");
            }
            self.begun = true;
            let vi = u64_at(h, 16);
            if vi & 3 == COMPOUND {
                return Err("a compound (send -R) stream");
            }
            self.snapshot_time = Some(u64_at(h, 24));
            let len = u64::from(u32_at(h, 4));
            if len > MAX_BEGIN_PAYLOAD {
                return Err("a BEGIN record larger than ZFS sends");
            }
            if (vi >> 2) & FEATURE_RAW != 0 {
                let mut s = Sampler::default();
                s.take(h);
                self.raw = Some(s);
                return Ok(());
            }
            self.skip(len);
            return Ok(());
        }
        match kind {
            DRR_BEGIN => return Err("a second BEGIN record"),
            DRR_END => self.ended = true,
            DRR_OBJECT => {
                let object = u64_at(h, 8);
                let ot = u32_at(h, 16);
                let bonus_type = u32_at(h, 20);
                let bonus_len = u64::from(u32_at(h, 28));
                let raw_len = u64::from(u32_at(h, 36));
                if ot == OT_DIR {
                    if self.dirs.len() < MAX_OBJECTS {
                        self.dirs.insert(object);
                    }
                } else {
                    self.dirs.remove(&object);
                }
                let len = if raw_len != 0 {
                    raw_len
                } else {
                    round8(bonus_len)
                };
                if len > MAX_PAYLOAD {
                    return Err("a bonus buffer larger than ZFS sends");
                }
                if len == 0 {
                    self.object(object, ot == OT_FILE, bonus_type, &[]);
                } else {
                    self.payload = Some(Payload::Bonus {
                        left: len,
                        object,
                        file: ot == OT_FILE,
                        bonus_type,
                        buf: Vec::new(),
                    });
                }
            }
            DRR_FREEOBJECTS => {
                // The last one of a stream frees everything past the
                // highest object (2^64 - first): not files.
                let n = u64_at(h, 16);
                if n < 1 << 32 {
                    self.objects_freed = self.objects_freed.saturating_add(n);
                }
            }
            DRR_WRITE => {
                let object = u64_at(h, 8);
                let ot = u32_at(h, 16);
                let logical = u64_at(h, 32);
                let compressed = h[50] != 0;
                let psize = if compressed { u64_at(h, 96) } else { logical };
                if logical > MAX_PAYLOAD || psize > MAX_PAYLOAD {
                    return Err("a WRITE record larger than ZFS sends");
                }
                if ot == OT_DIR {
                    if compressed || psize > MAX_DIR_BLOCK {
                        self.dirs_unread += 1;
                        self.skip(psize);
                    } else if psize > 0 {
                        self.payload = Some(Payload::Dir {
                            left: psize,
                            dir: object,
                            buf: Vec::with_capacity(psize as usize),
                        });
                    }
                    return Ok(());
                }
                if ot != OT_FILE {
                    self.skip(psize);
                    return Ok(());
                }
                let rewrite = self.written(object, logical);
                if compressed {
                    self.all_compressed += logical;
                    if rewrite {
                        self.rewrite_compressed += logical;
                    }
                    self.skip(psize);
                } else if psize > 0 {
                    self.payload = Some(Payload::Data {
                        left: psize,
                        rewrite,
                    });
                }
            }
            DRR_WRITE_BYREF => {
                let (object, len) = (u64_at(h, 8), u64_at(h, 24));
                if len > MAX_PAYLOAD {
                    return Err("a WRITE_BYREF record larger than ZFS sends");
                }
                self.written(object, len);
            }
            DRR_WRITE_EMBEDDED => {
                let (object, len) = (u64_at(h, 8), u64_at(h, 24));
                let psize = u64::from(u32_at(h, 52));
                if len > MAX_PAYLOAD || psize > MAX_PAYLOAD {
                    return Err("a WRITE_EMBEDDED record larger than ZFS sends");
                }
                // Tiny blocks stored in the block pointer, compressed:
                // counted, not sampled (a directory's, a few entries at
                // most: not read).
                if !self.dirs.contains(&object) {
                    self.written(object, len);
                }
                self.skip(round8(psize));
            }
            DRR_SPILL => {
                let len = u64_at(h, 16);
                let comp = u64_at(h, 40);
                let len = if comp != 0 { comp } else { len };
                if len > MAX_PAYLOAD {
                    return Err("a SPILL record larger than ZFS sends");
                }
                self.skip(len);
            }
            DRR_FREE | DRR_OBJECT_RANGE | DRR_REDACT => {}
            _ => return Err("an unknown record type"),
        }
        Ok(())
    }

    fn skip(&mut self, n: u64) {
        if n > 0 {
            self.payload = Some(Payload::Skip(n));
        }
    }

    /// A file object's record: new or existing, by its creation time.
    fn object(&mut self, object: u64, file: bool, bonus_type: u32, bonus: &[u8]) {
        if !file {
            self.objects.remove(&object);
            return;
        }
        let z = znode(bonus_type, bonus);
        let age = match (self.incremental, self.base_time, z) {
            (false, _, _) => Age::New,
            (true, Some(base), Some(z)) if z.mode & S_IFMT == S_IFREG => {
                if z.crtime >= base {
                    Age::New
                } else {
                    Age::Existing
                }
            }
            _ => Age::Unknown,
        };
        let renamed = age == Age::Existing
            && z.is_some_and(|z| {
                self.base_time.is_some_and(|b| z.ctime.0 >= b) && z.ctime > z.mtime
            });
        if self.objects.len() >= MAX_OBJECTS && !self.objects.contains_key(&object) {
            self.overflow = true;
            return;
        }
        let prev = self.objects.insert(
            object,
            Object {
                age,
                written: false,
                renamed,
            },
        );
        if age == Age::New && prev.is_none_or(|p| p.age != Age::New) {
            self.files_new += 1;
        }
    }

    /// A directory's ZAP block: remember its file entries.
    fn directory(&mut self, dir: u64, block: &[u8]) {
        let (named, overflow) = (&mut self.named, &mut self.overflow);
        zap::entries(block, &mut |name, value| {
            let (object, kind) = zap::dirent(value);
            if kind != zap::DT_REG {
                return;
            }
            if named.len() >= MAX_OBJECTS {
                *overflow = true;
                return;
            }
            let mut h = std::hash::DefaultHasher::new();
            std::hash::Hash::hash(super::btrfs::extension(name), &mut h);
            named.push(Named {
                dir,
                object,
                extension: std::hash::Hasher::finish(&h),
            });
        });
    }

    /// Renamed existing files named in the stream's directory blocks, and
    /// of those the ones whose extension no other file named in the same
    /// directory has.
    fn renames(&self) -> (u64, u64) {
        let renamed = |o: u64| self.objects.get(&o).is_some_and(|x| x.renamed);
        let mut usual: HashMap<u64, HashSet<u64>> = HashMap::new();
        for n in self.named.iter().filter(|n| !renamed(n.object)) {
            usual.entry(n.dir).or_default().insert(n.extension);
        }
        let mut seen = HashSet::new();
        let (mut renames, mut new_extension) = (0, 0);
        for n in self.named.iter().filter(|n| renamed(n.object)) {
            if !seen.insert(n.object) {
                continue;
            }
            renames += 1;
            if usual.get(&n.dir).is_some_and(|u| !u.contains(&n.extension)) {
                new_extension += 1;
            }
        }
        (renames, new_extension)
    }

    /// `len` bytes written into file `object`: is it a rewrite?
    fn written(&mut self, object: u64, len: u64) -> bool {
        self.data_bytes = self.data_bytes.saturating_add(len);
        let Some(o) = self.objects.get_mut(&object) else {
            self.unknown_age_bytes = self.unknown_age_bytes.saturating_add(len);
            return false;
        };
        o.written = true;
        match o.age {
            Age::Existing => {
                self.rewrite_bytes = self.rewrite_bytes.saturating_add(len);
                true
            }
            Age::New => false,
            Age::Unknown => {
                self.unknown_age_bytes = self.unknown_age_bytes.saturating_add(len);
                false
            }
        }
    }

    pub fn finish(mut self, sig: &mut VolumeSignals) {
        sig.snapshot_time = self.snapshot_time;
        if let Some(mut s) = self.raw.take() {
            s.flush();
            sig.data_bytes = sig.stream_bytes;
            sig.sampled_blocks = s.sampled;
            sig.incompressible_blocks = s.incompressible;
            sig.incomplete("a raw (encrypted) send: no file signals, the stream's bytes only");
            return;
        }
        self.all.flush();
        self.rewrites.flush();
        sig.data_bytes = self.data_bytes;
        sig.rewrite_bytes = self.rewrite_bytes;
        sig.files_new = self.files_new;
        sig.files_rewritten = self
            .objects
            .values()
            .filter(|o| o.written && o.age == Age::Existing)
            .count() as u64;
        sig.objects_freed = self.objects_freed;
        (sig.renames, sig.renames_new_extension) = self.renames();
        sig.sampled_blocks = self.all.sampled + self.all_compressed / BLOCK as u64;
        sig.incompressible_blocks = self.all.incompressible;
        sig.rewrite_sampled_blocks = self.rewrites.sampled + self.rewrite_compressed / BLOCK as u64;
        sig.rewrite_incompressible_blocks = self.rewrites.incompressible;
        super::mark_incomplete(sig, self.stopped, self.ended, "END record", || {
            if self.overflow {
                Some(format!(
                    "more than {MAX_OBJECTS} objects: file counts are a floor"
                ))
            } else if self.incremental && self.unknown_age_bytes > 0 {
                Some(format!(
                    "{} bytes written into files of unknown age ({}): not counted as rewrites",
                    self.unknown_age_bytes,
                    if self.base_time.is_none() {
                        "the base's snapshot time was not recorded"
                    } else {
                        "no readable znode"
                    }
                ))
            } else if self.incremental && self.dirs_unread > 0 {
                Some(format!(
                    "{} directory blocks sent compressed (send -c): renames in them not counted",
                    self.dirs_unread
                ))
            } else {
                None
            }
        });
    }
}

#[cfg(test)]
mod tests;
