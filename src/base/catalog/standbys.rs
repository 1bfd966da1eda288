//! Per-standby records (issue 29): each standby of a `[[standby]]` list has
//! its own ship state (`StandbyRecord`: what it holds, its common snapshots,
//! its transfer estimates) and its own split-brain record (`PeerRecord`).
//!
//! ```text
//! standby.json, peer.json                   the standby named `standby` (a single [standby])
//! standbys/<name>/standby.json, peer.json   every other standby
//! ```
//!
//! A single `[standby]` is named `standby`, so its files keep the names they
//! had before the list existed: nothing to migrate. Records of a standby no
//! longer in the config stay (and keep holding back prune) until `prune`
//! or `run` releases them (see `ops::prune`).

use std::path::PathBuf;

use super::{Catalog, PeerRecord, StandbyRecord, read_optional, write_json};
use crate::base::config::{DEFAULT_STANDBY_NAME, validate_standby_name};
use crate::base::error::{Context, Result};

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
        write_json(&self.standby_dir(name).join("standby.json"), r)
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
        let mut out = Vec::new();
        for name in self.recorded_standbys()? {
            if let Some(r) = self.standby_record_of(&name)? {
                out.push((name, r));
            }
        }
        Ok(out)
    }

    /// Every standby's peer record, by name.
    pub fn peer_records(&self) -> Result<Vec<(String, PeerRecord)>> {
        let mut out = Vec::new();
        for name in self.recorded_standbys()? {
            if let Some(r) = self.peer_record_of(&name)? {
                out.push((name, r));
            }
        }
        Ok(out)
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
        for f in ["standby.json", "peer.json"].iter().chain(lock) {
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
