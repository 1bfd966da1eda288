//! Per-standby records (issue 29): each standby of a `[[standby]]` list has
//! its own ship state (`StandbyRecord`: what it holds, its common snapshots,
//! its transfer estimates) and its own split-brain record (`PeerRecord`).
//!
//! ```text
//! standby.json, peer.json                   the standby named `standby` (a single [standby])
//! standbys/<name>/standby.json, peer.json   every other standby
//! ```
//!
//! Next to each `standby.json`, `standby.head.json` holds the part of it
//! `status` reads ([`Catalog::standby_head_of`]): the record with `holds`
//! and `committed` cut to their newest entries, and the stamp (size,
//! inode, times) of the `standby.json` it was cut from. `standby.json`
//! lists every snapshot the standby holds and every set committed there,
//! so it grows with the history; the head does not. It is a cache: used
//! only while `standby.json` keeps the stamp recorded, else the record is
//! read whole. The writer removes it before it writes `standby.json`
//! (whose directory fsync makes the removal durable too) and writes it
//! after, by rename without fsync: a kill or power loss leaves none, or
//! one of the record before, whose stamp no longer matches; never one
//! that passes for the new record. A `standby.json` written by an older
//! snapsite has a new inode: its head is stale.
//!
//! A single `[standby]` is named `standby`, so its files keep the names they
//! had before the list existed: nothing to migrate. Records of a standby no
//! longer in the config stay (and keep holding back prune) until `prune`
//! or `run` releases them (see `ops::prune`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::index::FileStamp;
use super::summary::{stamp_text, write_cache};
use super::{Catalog, PeerRecord, StandbyRecord, read_optional, write_json};
use crate::base::config::{DEFAULT_STANDBY_NAME, validate_standby_name};
use crate::base::error::{Context, Result};
use crate::base::model::{SetKind, parse_set_id};

/// The head's file, next to `standby.json`.
const HEAD: &str = "standby.head.json";

/// `standby.head.json`: the cut record and the stamp of the `standby.json`
/// it was cut from.
#[derive(Serialize, Deserialize)]
struct Head {
    of: String,
    record: StandbyRecord,
}

/// What [`Catalog::standby_head_cached_of`] found.
#[derive(Debug, PartialEq)]
pub enum HeadCache {
    /// The head, matching `standby.json` (see [`StandbyRecord::head`]).
    Fresh(StandbyRecord),
    /// No `standby.json`: no record of this standby.
    NoRecord,
    /// A `standby.json` whose head is missing, unreadable or stale: only
    /// the record read whole says.
    Stale,
}

impl StandbyRecord {
    /// This record with `holds` cut to the newest snapshot per role and
    /// `committed` to the newest set and the newest full set: what
    /// `status` reads of it (its [`StandbyRecord::newest`] and
    /// [`StandbyRecord::common_snapshots`] when the newest held snapshot
    /// is still here; the newest committed and committed full set).
    pub fn head(&self) -> StandbyRecord {
        let newest_full = self
            .committed
            .iter()
            .rev()
            .find(|id| parse_set_id(id).is_some_and(|(_, k)| k == SetKind::Full));
        StandbyRecord {
            standby: self.standby.clone(),
            updated_at: self.updated_at,
            last_ship_ok: self.last_ship_ok,
            holds: self
                .holds
                .iter()
                .map(|(role, h)| {
                    (
                        role.clone(),
                        h.iter().next_back().cloned().into_iter().collect(),
                    )
                })
                .collect(),
            committed: self
                .committed
                .iter()
                .next_back()
                .into_iter()
                .chain(newest_full)
                .cloned()
                .collect(),
            last_bytes: self.last_bytes.clone(),
            failing_since: self.failing_since,
        }
    }
}

impl Catalog {
    /// Where standby `name`'s records live (validated name).
    fn standby_dir(&self, name: &str) -> PathBuf {
        debug_assert!(validate_standby_name(name).is_ok());
        if name == DEFAULT_STANDBY_NAME {
            self.root().to_owned()
        } else {
            self.root().join("standbys").join(name)
        }
    }

    /// What standby `name` held as of its last ship.
    pub fn standby_record_of(&self, name: &str) -> Result<Option<StandbyRecord>> {
        read_optional(&self.standby_dir(name).join("standby.json"))
    }

    pub fn write_standby_record_of(&self, name: &str, r: &StandbyRecord) -> Result<()> {
        let dir = self.standby_dir(name);
        let head = dir.join(HEAD);
        match std::fs::remove_file(&head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Left: its stamp will not match the new record's.
            Err(e) => tracing::debug!(error = %e, "remove {}", head.display()),
        }
        // What a writer killed midway left here (its temp files).
        super::summary::remove_stale_temps(
            &dir,
            &[HEAD, "standby.json"],
            std::time::SystemTime::now(),
        );
        let path = dir.join("standby.json");
        write_json(&path, r)?;
        if let Ok(md) = std::fs::symlink_metadata(&path) {
            let h = Head {
                of: stamp_text(&FileStamp::of(&md)),
                record: r.head(),
            };
            write_cache(&head, &serde_json::to_vec(&h).expect("serializable"));
        }
        Ok(())
    }

    /// What `status` needs of standby `name`'s record, without reading
    /// every snapshot it holds: the record with `holds` cut to the newest
    /// snapshot per role and `committed` to the newest set and the newest
    /// full set ([`StandbyRecord::head`]), from `standby.head.json` while
    /// it matches `standby.json` (see the module's doc), else cut from
    /// the record read whole. Not for ship or prune: they need it all.
    pub fn standby_head_of(&self, name: &str) -> Result<Option<StandbyRecord>> {
        match self.standby_head_cached_of(name) {
            HeadCache::Fresh(h) => Ok(Some(h)),
            HeadCache::NoRecord => Ok(None),
            HeadCache::Stale => Ok(self.standby_record_of(name)?.map(|r| r.head())),
        }
    }

    /// [`Self::standby_head_of`] without its fallback: the head from
    /// `standby.head.json` while it matches `standby.json`, or what
    /// stands instead (no `standby.json`; a head missing, unreadable or
    /// stale). For a caller that reads the record whole anyway when the
    /// head cannot say (`ship`: one whole read serves both).
    pub fn standby_head_cached_of(&self, name: &str) -> HeadCache {
        let dir = self.standby_dir(name);
        match std::fs::symlink_metadata(dir.join("standby.json")) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HeadCache::NoRecord,
            Err(_) => HeadCache::Stale,
            Ok(md) => {
                let now = stamp_text(&FileStamp::of(&md));
                std::fs::read(dir.join(HEAD))
                    .ok()
                    .and_then(|t| serde_json::from_slice::<Head>(&t).ok())
                    .filter(|h| h.of == now)
                    .map_or(HeadCache::Stale, |h| HeadCache::Fresh(h.record))
            }
        }
    }

    /// [`Self::standby_head_of`] of every standby with records here.
    pub fn standby_heads(&self) -> Result<Vec<(String, StandbyRecord)>> {
        self.each_recorded(|name| self.standby_head_of(name))
    }

    /// Standby `name` as last seen in a handshake.
    pub fn peer_record_of(&self, name: &str) -> Result<Option<PeerRecord>> {
        read_optional(&self.standby_dir(name).join("peer.json"))
    }

    pub fn write_peer_record_of(&self, name: &str, r: &PeerRecord) -> Result<()> {
        write_json(&self.standby_dir(name).join("peer.json"), r)
    }

    /// The names of every standby with records here, configured or not:
    /// `standby` when `standby.json` or `peer.json` exists, then each
    /// valid directory name under `standbys/`, sorted.
    pub fn recorded_standbys(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if self.root().join("standby.json").exists() || self.root().join("peer.json").exists() {
            out.push(DEFAULT_STANDBY_NAME.to_string());
        }
        let dir = self.root().join("standbys");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).ctx(format!("read {}", dir.display())),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.ctx(format!("read {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == DEFAULT_STANDBY_NAME || validate_standby_name(&name).is_err() {
                tracing::warn!(entry = %e.path().display(), "not a standby's records: ignored");
                continue;
            }
            names.push(name);
        }
        names.sort();
        out.extend(names);
        Ok(out)
    }

    /// Every standby's ship record, by name (see [`Self::recorded_standbys`]).
    pub fn standby_records(&self) -> Result<Vec<(String, StandbyRecord)>> {
        self.each_recorded(|name| self.standby_record_of(name))
    }

    /// `read` of every standby with records here, by name (those it finds
    /// nothing for left out).
    fn each_recorded<T>(
        &self,
        read: impl Fn(&str) -> Result<Option<T>>,
    ) -> Result<Vec<(String, T)>> {
        let mut out = Vec::new();
        for name in self.recorded_standbys()? {
            if let Some(r) = read(&name)? {
                out.push((name, r));
            }
        }
        Ok(out)
    }

    /// Every standby's peer record, by name.
    pub fn peer_records(&self) -> Result<Vec<(String, PeerRecord)>> {
        self.each_recorded(|name| self.peer_record_of(name))
    }

    /// Forget standby `name` (removed from the config): its ship and peer
    /// records go, so nothing it held holds back prune any more.
    pub fn remove_standby_records(&self, name: &str) -> Result<()> {
        let dir = self.standby_dir(name);
        let lock: &[&str] = if name == DEFAULT_STANDBY_NAME {
            &[]
        } else {
            // no ship uses it: the standby is gone from the config
            &["ship.lock"]
        };
        for f in [HEAD, "standby.json", "peer.json"].iter().chain(lock) {
            let p = dir.join(f);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(format!("remove {}", p.display())),
            }
        }
        if name != DEFAULT_STANDBY_NAME {
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }
}

impl Catalog {
    /// Standby `name`'s ship lock (`standbys/<name>/ship.lock`, or
    /// `ship.lock` for `standby`): one session per standby at a time, while
    /// sessions to different standbys run side by side.
    pub fn standby_lock(&self, name: &str, wait: std::time::Duration) -> Result<super::Lock> {
        let dir = self.standby_dir(name);
        std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
        let path = dir.join("ship.lock");
        match super::flock_exclusive(&path, wait, std::time::Duration::from_millis(100))? {
            Ok(l) => Ok(super::Lock { _f: l }),
            Err(e) => Err(crate::base::error::Error::refused(format!(
                "standby `{name}`: another ship to it holds {} ({e})",
                path.display()
            ))
            .with_hint("wait for it to finish; `snapsite status` shows each standby's last ship")),
        }
    }
}
