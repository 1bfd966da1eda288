//! Manifests and other records on disk, under the site's `state_dir`:
//!
//! ```text
//! sets/<id>.json                 manifest (on the standby: the commit record)
//! pending/<id>.json              a set being taken (primary); leftovers are undone
//! received/<role>/<snap>.json    receipt of a received snapshot (standby)
//! failover/state.json            progress of a failover, for resuming
//! reports/failover-<time>.json   failover reports
//! lock                           one mutating snapsite at a time
//! ```
//!
//! Every file is written temp-file -> fsync -> rename -> fsync(dir).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Context, Error, ErrorKind, Result};
use crate::model::{Manifest, Receipt, parse_set_id, validate_set_id};

pub struct Catalog {
    root: PathBuf,
}

/// Holds `state_dir/lock` (flock) until dropped.
pub struct Lock {
    _f: nix::fcntl::Flock<File>,
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("path has a parent");
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let mut f = File::create(&tmp).ctx(format!("create {}", tmp.display()))?;
    f.write_all(bytes).ctx(format!("write {}", tmp.display()))?;
    f.sync_all().ctx(format!("fsync {}", tmp.display()))?;
    drop(f);
    std::fs::rename(&tmp, path).ctx(format!("rename {} -> {}", tmp.display(), path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(format!("fsync {}", dir.display()))?;
    Ok(())
}

pub fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(v).expect("serializable");
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).ctx(format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        Error::new(
            ErrorKind::Integrity,
            format!("{} is not valid: {e}", path.display()),
        )
    })
}

impl Catalog {
    pub fn new(state_dir: &Path) -> Catalog {
        Catalog {
            root: state_dir.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Take the site lock, waiting up to `wait` for another snapsite to finish.
    pub fn lock(&self, what: &str, wait: std::time::Duration) -> Result<Lock> {
        std::fs::create_dir_all(&self.root)
            .ctx(format!("create state_dir {}", self.root.display()))?;
        let path = self.root.join("lock");
        let start = std::time::Instant::now();
        loop {
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .ctx(format!("open {}", path.display()))?;
            match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(l) => return Ok(Lock { _f: l }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err((_, e)) => {
                    return Err(Error::refused(format!(
                        "{what}: another snapsite holds {} ({e})",
                        path.display()
                    ))
                    .with_hint(
                        "wait for it to finish; it may be a running `snapsite run` or `serve`",
                    ));
                }
            }
        }
    }

    fn set_path(&self, id: &str) -> PathBuf {
        self.root.join("sets").join(format!("{id}.json"))
    }

    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        validate_set_id(&m.id)?;
        write_json(&self.set_path(&m.id), m)
    }

    pub fn has_manifest(&self, id: &str) -> bool {
        self.set_path(id).exists()
    }

    pub fn remove_manifest(&self, id: &str) -> Result<()> {
        validate_set_id(id)?;
        match std::fs::remove_file(self.set_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("remove manifest {id}"), e)),
        }
    }

    /// All manifests, oldest first. A manifest that does not parse is an
    /// error naming the file: it is never silently skipped.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        let dir = self.root.join("sets");
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        for ent in rd {
            let ent = ent.ctx(format!("read {}", dir.display()))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if parse_set_id(id).is_none() {
                continue;
            }
            let m: Manifest = read_json(&ent.path())?;
            if m.id != id {
                return Err(Error::integrity(format!(
                    "{} holds the manifest of set {}",
                    ent.path().display(),
                    m.id
                )));
            }
            out.push(m);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    // --- pending sets (primary) ---

    pub fn write_pending(&self, m: &Manifest) -> Result<()> {
        write_json(&self.root.join("pending").join(format!("{}.json", m.id)), m)
    }
    pub fn remove_pending(&self, id: &str) -> Result<()> {
        let p = self.root.join("pending").join(format!("{id}.json"));
        std::fs::remove_file(&p).ctx(format!("remove {}", p.display()))
    }
    pub fn pending(&self) -> Result<Vec<Manifest>> {
        let dir = self.root.join("pending");
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().ends_with(".json") {
                    out.push(read_json(&ent.path())?);
                }
            }
        }
        Ok(out)
    }

    // --- receipts (standby) ---

    fn receipt_path(&self, role: &str, snap: &str) -> PathBuf {
        self.root
            .join("received")
            .join(role)
            .join(format!("{snap}.json"))
    }
    pub fn write_receipt(&self, role: &str, snap: &str, r: &Receipt) -> Result<()> {
        validate_set_id(snap)?;
        write_json(&self.receipt_path(role, snap), r)
    }
    pub fn receipt(&self, role: &str, snap: &str) -> Result<Option<Receipt>> {
        let p = self.receipt_path(role, snap);
        if p.exists() {
            read_json(&p).map(Some)
        } else {
            Ok(None)
        }
    }
    pub fn remove_receipt(&self, role: &str, snap: &str) -> Result<()> {
        let _ = std::fs::remove_file(self.receipt_path(role, snap));
        Ok(())
    }
}
