//! Redolog streaming (issue 17): a recovery point of seconds, not one
//! redolog interval.
//!
//! * **Follower** (primary, a thread of `snapsite run`): every
//!   `[stream] flush_interval` it looks at the redolog volume's files
//!   (`[stream] files` globs), and sends what changed since the last
//!   acknowledged batch — appended ranges, truncations, renames (rollover into
//!   `archive/`), removals — as one [`Msg::SpoolBatch`] over its own
//!   long-lived session (`SpoolHello` to the same `snapsite serve --stdio`).
//!   It only reads (`pread` on a descriptor it keeps open, so a renamed file
//!   is followed to its end): no fsync, no write on the primary.
//! * **Spool** (standby, [`serve_spool`]): each batch is checked (names
//!   against the standby's own globs, offsets continuing the spool exactly,
//!   sizes, the batch checksum, the disk cap), appended to
//!   `state_dir/spool/journal` as one self-checking record, fsynced, and
//!   only then acknowledged. On restart only complete records count (a torn
//!   tail is cut off).
//! * **Checkpoint** ([`checkpoint_after_commit`]): when a set holding the
//!   redolog volume is committed, the spool is matched against the
//!   snapshot's files: the newest prefix of the spool's events the snapshot
//!   already contains (every spooled byte it holds must be equal) is
//!   dropped. No match is an error: logged, recorded in `spool/broken.json`
//!   (status shows it), and the spool is not used until a snapshot matches.
//! * **Failover** ([`apply_at_failover`]): after the redolog copy is made,
//!   the same match against the copy (the snapshot's content); the files the
//!   rest of the spool changes are built in a scratch directory inside the
//!   copy, verified against every spooled byte, and only then renamed into
//!   place: all or nothing (see [`apply_dir`]). The report gives the
//!   stream's recovery point (the primary's clock when it looked at the files
//!   for the last batch applied) next to the snapshot-only one.
//!
//! Everything read from a snapshot or the copy is opened through
//! [`crate::base::safefile`]: regular files only, no symlink on the way, refused
//! before a byte is read or written. Matching is linear in the spool's
//! events and bytes (`find_cut`), bounded in work and time.
//!
//! The model: the spool is a base state (files and sizes, with up to 4 KiB
//! of known tail each) plus events in the primary's order. Replaying the
//! first `j` events gives a *virtual state*: which names exist, their
//! sizes, and the bytes the spool knows of them. A snapshot "is at" cut `j`
//! when every name of that state exists in it, at least as long, with equal
//! bytes where the spool knows them, and every name the spool saw removed
//! is absent. The largest such `j` is where the snapshot stands in the
//! stream; everything after it is what the snapshot lacks.

pub(crate) use std::collections::{BTreeMap, BTreeSet, HashMap};
pub(crate) use std::fs::File;
pub(crate) use std::io::{Read, Write};
pub(crate) use std::os::unix::fs::FileExt;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::sync::Arc;
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use jiff::Timestamp;
pub(crate) use serde::{Deserialize, Serialize};

pub(crate) use crate::backend::Stores;
pub(crate) use crate::base::catalog::Catalog;
pub(crate) use crate::base::config::{Config, VolumeAddr};
pub(crate) use crate::base::error::{Context, Error, Result};
pub(crate) use crate::base::model::{wire_str, wire_text};
pub(crate) use crate::base::safefile::{Access, Root};
pub(crate) use crate::base::streamconf::{StreamSettings, check_name, glob_match};
pub(crate) use crate::wire::stream::{
    Frame, Msg, PROTOCOL_VERSION, Reader, SpoolEvent, SpoolFileState, Writer,
};

/// Most bytes one batch carries (the follower cuts larger changes).
pub const MAX_BATCH_BYTES: u64 = 8 << 20;
/// Most events in one batch.
pub const MAX_BATCH_EVENTS: usize = 4096;
/// Most events the spool holds (beyond them batches are refused as for a
/// full spool, until a checkpoint drops what a snapshot covers): bounds
/// matching at failover to a few seconds whatever the primary sends.
pub const MAX_SPOOL_EVENTS: usize = 1 << 21;
/// Known tail kept per file across a checkpoint (resume check).
pub(crate) const TAIL: usize = 4096;
pub(crate) const JOURNAL: &str = "journal";
/// Longest a commit-time checkpoint matches (serve holds the site lock).
pub(crate) const CHECKPOINT_TIME: Duration = Duration::from_secs(20);
/// Longest failover's apply matches before it uses the snapshot alone.
pub(crate) const APPLY_MATCH_TIME: Duration = Duration::from_secs(20);
/// Cuts failover's apply tries, largest first.
pub(crate) const APPLY_TRIES: usize = 4;

/// `[stream]` if configured and enabled.
pub fn settings(cfg: &Config) -> Option<&StreamSettings> {
    cfg.stream.as_ref().filter(|s| s.enabled)
}

/// Where the redolog volume's files are on this site: `[stream] root`, the
/// volume's mountpoint, or its btrfs subvolume.
pub fn live_root(cfg: &Config) -> Result<PathBuf> {
    let s = settings(cfg).ok_or_else(|| Error::config("no enabled [stream] section"))?;
    if let Some(r) = &s.root {
        return Ok(r.clone());
    }
    let v = cfg.redolog();
    if let Some(m) = &v.mountpoint {
        return Ok(m.clone());
    }
    match &v.addr {
        VolumeAddr::Btrfs { subvolume, .. } => Ok(subvolume.clone()),
        _ => Err(Error::config(format!(
            "{}: stream.root: the redolog volume `{}` has no mountpoint; set stream.root to where its files are",
            cfg.path.display(),
            v.role
        ))),
    }
}

pub(crate) fn spool_dir(catalog: &Catalog) -> PathBuf {
    catalog.root().join("spool")
}

// ---------------------------------------------------------------------------
// Files below a root: what came from the primary (a snapshot, failover's
// copy) is opened through `safefile` only; `open_nofollow` is for the
// primary's own live files.

pub(crate) fn open_nofollow(p: &Path, write: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(p)
}

/// The regular files below `root` matching `globs`, with (dev, ino, size).
pub fn scan(root: &Path, globs: &[String]) -> Result<BTreeMap<String, (u64, u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for g in globs {
        let comps: Vec<&str> = g.split('/').collect();
        let mut dirs: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
        for (i, c) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            let mut next = Vec::new();
            for (d, rel) in &dirs {
                let names: Vec<String> = if c.contains(['*', '?']) {
                    match std::fs::read_dir(d) {
                        Ok(rd) => rd
                            .filter_map(|e| e.ok())
                            .filter_map(|e| e.file_name().into_string().ok())
                            .filter(|n| crate::base::streamconf::component_match(c, n))
                            .collect(),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io(format!("read {}", d.display()), e)),
                    }
                } else {
                    vec![c.to_string()]
                };
                for n in names {
                    let p = d.join(&n);
                    let rel = if rel.is_empty() {
                        n.clone()
                    } else {
                        format!("{rel}/{n}")
                    };
                    let Ok(m) = std::fs::symlink_metadata(&p) else {
                        continue;
                    };
                    if last && m.is_file() && check_name(&rel).is_ok() {
                        out.insert(rel, (m.dev(), m.ino(), m.len()));
                    } else if !last && m.is_dir() {
                        next.push((p, rel));
                    }
                }
            }
            dirs = next;
        }
    }
    Ok(out)
}

/// Where spooled bytes come from: a base file's tail or an item's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Src {
    Base(usize),
    Item(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Range {
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) src: Src,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Inst {
    pub(crate) size: u64,
    pub(crate) ranges: Vec<Range>,
}

/// The virtual state after some prefix of the spool.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sim {
    pub(crate) names: BTreeMap<String, usize>,
    pub(crate) insts: Vec<Inst>,
    /// Every name the spool has seen (a name seen but not in `names` was
    /// removed or renamed away).
    pub(crate) known: BTreeSet<String>,
}

impl Sim {
    pub(crate) fn apply(&mut self, ev: &SpoolEvent, src: Src) -> std::result::Result<(), String> {
        match ev {
            SpoolEvent::Base { file, size } => {
                self.insts.push(Inst {
                    size: *size,
                    ranges: vec![],
                });
                self.names.insert(file.clone(), self.insts.len() - 1);
                self.known.insert(file.clone());
            }
            SpoolEvent::Append { file, offset, len } => {
                let i = match self.names.get(file) {
                    Some(i) => *i,
                    None if *offset == 0 => {
                        self.insts.push(Inst::default());
                        self.names.insert(file.clone(), self.insts.len() - 1);
                        self.known.insert(file.clone());
                        self.insts.len() - 1
                    }
                    None => {
                        return Err(format!(
                            "append to `{}` at offset {offset}: the spool does not hold that file",
                            wire_str(file)
                        ));
                    }
                };
                let inst = &mut self.insts[i];
                if *offset != inst.size {
                    return Err(format!(
                        "append to `{}` at offset {offset}: the spool holds it up to {} (no gaps, no overlaps)",
                        wire_str(file),
                        inst.size
                    ));
                }
                if *len > 0 {
                    inst.ranges.push(Range {
                        offset: *offset,
                        len: *len,
                        src,
                    });
                }
                inst.size += len;
            }
            SpoolEvent::Truncate { file, size } => {
                let i = *self
                    .names
                    .get(file)
                    .ok_or_else(|| format!("truncate of unknown file `{}`", wire_str(file)))?;
                let inst = &mut self.insts[i];
                if *size > inst.size {
                    return Err(format!(
                        "truncate of `{}` to {size} bytes would grow it (spool holds {})",
                        wire_str(file),
                        inst.size
                    ));
                }
                inst.size = *size;
                // Ranges are sorted and disjoint (appends continue the
                // size): only the top ones are cut.
                while inst.ranges.last().is_some_and(|r| r.offset >= *size) {
                    inst.ranges.pop();
                }
                if let Some(r) = inst.ranges.last_mut() {
                    r.len = r.len.min(size - r.offset);
                }
            }
            SpoolEvent::Rename { from, to } => {
                if from == to {
                    return Err(format!("rename of `{}` onto itself", wire_str(from)));
                }
                let i = self
                    .names
                    .remove(from)
                    .ok_or_else(|| format!("rename of unknown file `{}`", wire_str(from)))?;
                self.names.insert(to.clone(), i);
                self.known.insert(to.clone());
            }
            SpoolEvent::Remove { file } => {
                self.names
                    .remove(file)
                    .ok_or_else(|| format!("removal of unknown file `{}`", wire_str(file)))?;
            }
        }
        Ok(())
    }
}

pub(crate) fn fill_at(f: &File, buf: &mut [u8], mut off: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                off += k as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
