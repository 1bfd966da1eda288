//! btrfs: read-only snapshots in `snapshot_dir`, `btrfs send [-p]` and
//! `btrfs receive`. Before a receive starts, a marker `.receiving-<name>` is
//! written (and fsynced) next to where the subvolume will appear; it is
//! removed only after the stream verified, the received subvolume is
//! read-only with the sender's uuid as Received UUID, and the caller recorded
//! its receipt. A subvolume whose marker is still there was cut and is
//! deleted. (A received subvolume cannot be renamed into another directory:
//! it is read-only, and a move would rewrite its `..`.) Snapshots of several
//! subvolumes are not atomic together: every volume is its own atomic group.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};

use super::{Backend, ProcessSource, SnapshotSink, SnapshotSource};
use crate::cmd::{Cmd, Running};
use crate::config::{BackendKind, Volume};
use crate::error::{Context, Error, Result};
use crate::model::parse_set_id;

pub struct Btrfs;

const MARKER_PREFIX: &str = ".receiving-";

/// The fields of `btrfs subvolume show` we rely on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubvolumeInfo {
    pub name: String,
    pub uuid: String,
    pub parent_uuid: Option<String>,
    pub received_uuid: Option<String>,
    pub readonly: bool,
}

/// Parse `btrfs subvolume show PATH` (btrfs-progs 5.x/6.x text output).
pub fn parse_subvolume_show(text: &str) -> Result<SubvolumeInfo> {
    let mut info = SubvolumeInfo::default();
    let opt = |v: &str| {
        if v == "-" || v.is_empty() {
            None
        } else {
            Some(v.to_string())
        }
    };
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Name" => info.name = v.to_string(),
            "UUID" => info.uuid = v.to_string(),
            "Parent UUID" => info.parent_uuid = opt(v),
            "Received UUID" => info.received_uuid = opt(v),
            "Flags" => info.readonly = v.split([',', ' ']).any(|f| f == "readonly"),
            _ => {}
        }
    }
    if info.uuid.is_empty() {
        return Err(Error::storage(format!(
            "unexpected `btrfs subvolume show` output (no UUID line): {}",
            text.lines().take(3).collect::<Vec<_>>().join(" | ")
        )));
    }
    Ok(info)
}

pub fn subvolume_show(path: &Path) -> Result<SubvolumeInfo> {
    let out = Cmd::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()?;
    parse_subvolume_show(&out)
}

pub fn is_subvolume(path: &Path) -> bool {
    // A btrfs subvolume root has inode number 256.
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.is_dir() && m.ino() == 256)
        .unwrap_or(false)
}

fn delete_subvolume(path: &Path) -> Result<()> {
    Cmd::new("btrfs")
        .args(["subvolume", "delete"])
        .arg(path)
        .run()
}

fn snapshot_dir(vol: &Volume) -> &Path {
    vol.snapshot_dir
        .as_deref()
        .expect("validated: btrfs volumes have a snapshot_dir")
}

fn snap_path(vol: &Volume, name: &str) -> PathBuf {
    snapshot_dir(vol).join(name)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx(format!("fsync {}", dir.display()))
}

impl Backend for Btrfs {
    fn kind(&self) -> BackendKind {
        BackendKind::Btrfs
    }

    fn probe(&self, vol: &Volume, primary: bool) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        Cmd::new("btrfs").arg("--version").run()?;
        let dir = snapshot_dir(vol);
        if primary {
            let src = Path::new(&vol.source);
            if !is_subvolume(src) {
                return Err(Error::storage(format!(
                    "volume `{}`: {} is not a btrfs subvolume",
                    vol.role,
                    src.display()
                ))
                .with_hint(format!(
                    "create it with `btrfs subvolume create {}`",
                    src.display()
                )));
            }
        }
        if !dir.is_dir() {
            notes.push(format!(
                "snapshot_dir {} does not exist yet; it will be created",
                dir.display()
            ));
        } else {
            let stale = self.leftovers(vol);
            if !stale.is_empty() {
                notes.push(format!(
                    "{} interrupted receive(s) will be cleaned up",
                    stale.len()
                ));
            }
        }
        Ok(notes)
    }

    fn snapshot(&self, vols: &[&Volume], name: &str) -> Result<()> {
        let mut taken: Vec<PathBuf> = Vec::new();
        for vol in vols {
            let dir = snapshot_dir(vol);
            std::fs::create_dir_all(dir).ctx(format!(
                "volume `{}`: create {}",
                vol.role,
                dir.display()
            ))?;
            let dst = snap_path(vol, name);
            let r = Cmd::new("btrfs")
                .args(["subvolume", "snapshot", "-r"])
                .arg(&vol.source)
                .arg(&dst)
                .run();
            if let Err(e) = r {
                for t in taken {
                    let _ = delete_subvolume(&t);
                }
                return Err(e.context(format!("volume `{}`", vol.role)));
            }
            taken.push(dst);
        }
        Ok(())
    }

    fn storage_id(&self, vol: &Volume, name: &str) -> Result<Option<String>> {
        Ok(Some(subvolume_show(&snap_path(vol, name))?.uuid))
    }

    fn list(&self, vol: &Volume) -> Result<Vec<String>> {
        let dir = snapshot_dir(vol);
        let mut names = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => {
                return Err(Error::io(
                    format!("volume `{}`: read {}", vol.role, dir.display()),
                    e,
                ));
            }
        };
        let receiving = self.leftovers(vol);
        for ent in rd {
            let ent = ent.ctx(format!("read {}", dir.display()))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if parse_set_id(&name).is_some()
                && !receiving.contains(&name)
                && is_subvolume(&ent.path())
            {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn send(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
    ) -> Result<Box<dyn SnapshotSource>> {
        let mut cmd = Cmd::new("btrfs").args(["send", "-q"]);
        if let Some(b) = base {
            cmd = cmd.arg("-p").arg(snap_path(vol, b));
        }
        ProcessSource::spawn(cmd.arg(snap_path(vol, name)))
    }

    fn receive(
        &self,
        vol: &Volume,
        name: &str,
        base: Option<&str>,
        expect_id: Option<&str>,
        _resume: bool,
    ) -> Result<Box<dyn SnapshotSink>> {
        let final_path = snap_path(vol, name);
        if final_path.exists() {
            return Err(Error::storage(format!(
                "volume `{}`: {} already exists",
                vol.role,
                final_path.display()
            )));
        }
        if let Some(b) = base {
            if !is_subvolume(&snap_path(vol, b)) {
                return Err(Error::storage(format!(
                    "volume `{}`: base snapshot {b} for incremental receive is missing",
                    vol.role
                )));
            }
        }
        self.cleanup_partial(vol)?;
        let dir = snapshot_dir(vol).to_path_buf();
        std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
        let marker = dir.join(format!("{MARKER_PREFIX}{name}"));
        std::fs::write(&marker, b"").ctx(format!("create {}", marker.display()))?;
        fsync_dir(&dir)?;
        let before: Vec<String> = dir_entries(&dir);
        let mut running = Cmd::new("btrfs")
            .arg("receive")
            .arg(&dir)
            .spawn(Stdio::piped(), Stdio::null())?;
        let stdin = running.child.stdin.take().expect("piped");
        Ok(Box::new(BtrfsSink {
            running: Some(running),
            stdin: Some(stdin),
            dir,
            before,
            marker,
            name: name.to_string(),
            expect_id: expect_id.map(str::to_string),
            role: vol.role.clone(),
        }))
    }

    fn cleanup_partial(&self, vol: &Volume) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let dir = snapshot_dir(vol);
        for name in self.leftovers(vol) {
            let p = dir.join(&name);
            if is_subvolume(&p) {
                tracing::warn!(volume = %vol.role, path = %p.display(), "deleting interrupted receive");
                delete_subvolume(&p).ctx(format!("volume `{}`", vol.role))?;
                removed.push(p.display().to_string());
            }
            let marker = dir.join(format!("{MARKER_PREFIX}{name}"));
            std::fs::remove_file(&marker).ctx(format!("remove {}", marker.display()))?;
        }
        if !removed.is_empty() {
            fsync_dir(dir)?;
        }
        Ok(removed)
    }

    fn destroy(&self, vol: &Volume, name: &str) -> Result<()> {
        let p = snap_path(vol, name);
        if !is_subvolume(&p) {
            return Ok(()); // idempotent: already gone
        }
        delete_subvolume(&p).ctx(format!("volume `{}`", vol.role))
    }

    fn writable_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf> {
        let target = PathBuf::from(&vol.source);
        if target.exists() {
            return Err(Error::refused(format!(
                "volume `{}`: {} already exists; refusing to overwrite it",
                vol.role,
                target.display()
            ))
            .with_hint("move it away (it may be live data) and run failover again"));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).ctx(format!("create {}", parent.display()))?;
        }
        Cmd::new("btrfs")
            .args(["subvolume", "snapshot"])
            .arg(snap_path(vol, name))
            .arg(&target)
            .run()
            .ctx(format!("volume `{}`", vol.role))?;
        Ok(target)
    }

    fn writable_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        Ok(PathBuf::from(&vol.source))
    }

    fn writable_copy_exists(&self, vol: &Volume) -> Result<bool> {
        Ok(Path::new(&vol.source).exists())
    }

    fn remove_writable_copy(&self, vol: &Volume) -> Result<()> {
        let p = Path::new(&vol.source);
        if is_subvolume(p) {
            delete_subvolume(p).ctx(format!("volume `{}`", vol.role))?;
        }
        Ok(())
    }
}

impl Btrfs {
    /// Names whose receive marker is still present: cut receives.
    fn leftovers(&self, vol: &Volume) -> Vec<String> {
        dir_entries(snapshot_dir(vol))
            .into_iter()
            .filter_map(|n| n.strip_prefix(MARKER_PREFIX).map(str::to_string))
            .collect()
    }
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

struct BtrfsSink {
    running: Option<Running>,
    stdin: Option<ChildStdin>,
    dir: PathBuf,
    /// Entries of `dir` before the receive: anything else new is ours to remove.
    before: Vec<String>,
    marker: PathBuf,
    name: String,
    expect_id: Option<String>,
    role: String,
}

impl Write for BtrfsSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stdin
            .as_mut()
            .expect("open until commit/abort")
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.stdin.as_mut().expect("open").flush()
    }
}

impl BtrfsSink {
    /// Remove whatever this receive created, then the marker.
    fn discard(&mut self) {
        drop(self.stdin.take());
        if let Some(r) = self.running.take() {
            r.kill();
        }
        for n in dir_entries(&self.dir) {
            if self.before.contains(&n) || n.starts_with(MARKER_PREFIX) {
                continue;
            }
            let p = self.dir.join(&n);
            if is_subvolume(&p) {
                if let Err(e) = delete_subvolume(&p) {
                    tracing::error!(volume = %self.role, path = %p.display(), error = %e, "could not remove partial receive; the marker stays so the next serve retries");
                    return;
                }
            }
        }
        let _ = std::fs::remove_file(&self.marker);
        let _ = fsync_dir(&self.dir);
    }

    fn finish(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        drop(self.stdin.take());
        self.running
            .take()
            .expect("running")
            .wait()
            .ctx(format!("volume `{}`", self.role))?;
        let got = self.dir.join(&self.name);
        let unexpected: Vec<String> = dir_entries(&self.dir)
            .into_iter()
            .filter(|n| {
                !self.before.contains(n) && *n != self.name && !n.starts_with(MARKER_PREFIX)
            })
            .collect();
        if !unexpected.is_empty() {
            return Err(Error::integrity(format!(
                "volume `{}`: the stream created {unexpected:?} instead of {}",
                self.role, self.name
            )));
        }
        if !is_subvolume(&got) {
            return Err(Error::integrity(format!(
                "volume `{}`: btrfs receive did not create {}",
                self.role,
                got.display()
            )));
        }
        let info = subvolume_show(&got)?;
        if !info.readonly || info.received_uuid.is_none() {
            return Err(Error::integrity(format!(
                "volume `{}`: {} is incomplete (read-only: {}, received uuid: {:?})",
                self.role,
                got.display(),
                info.readonly,
                info.received_uuid
            )));
        }
        if let Some(want) = &self.expect_id {
            if info.received_uuid.as_deref() != Some(want.as_str()) {
                return Err(Error::integrity(format!(
                    "volume `{}`: received uuid {:?} does not match the sender's snapshot uuid {want}",
                    self.role, info.received_uuid
                )));
            }
        }
        record(Some(info.uuid.clone()))?;
        std::fs::remove_file(&self.marker).ctx(format!("remove {}", self.marker.display()))?;
        fsync_dir(&self.dir)?;
        Ok(Some(info.uuid))
    }
}

impl SnapshotSink for BtrfsSink {
    fn commit(
        mut self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        match self.finish(record) {
            Ok(id) => Ok(id),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }
    fn abort(mut self: Box<Self>) {
        self.discard();
    }
}

impl Drop for BtrfsSink {
    fn drop(&mut self) {
        if self.running.is_some() {
            self.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/btrfs-progs-6.2")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn parses_snapshot_received_writable_and_partial() {
        let s = parse_subvolume_show(&fixture("subvolume-show-snapshot.txt")).unwrap();
        assert_eq!(s.name, "s1");
        assert_eq!(s.uuid, "1f57439e-be11-7749-ba31-de27bc93fe73");
        assert!(s.readonly);
        assert_eq!(s.received_uuid, None);

        let r = parse_subvolume_show(&fixture("subvolume-show-received.txt")).unwrap();
        assert!(r.readonly);
        assert_eq!(
            r.received_uuid.as_deref(),
            Some("1f57439e-be11-7749-ba31-de27bc93fe73")
        );

        let w = parse_subvolume_show(&fixture("subvolume-show-writable.txt")).unwrap();
        assert!(!w.readonly);
        assert_eq!(w.parent_uuid.as_deref(), Some(r.uuid.as_str()));

        // A cut stream leaves a writable subvolume without a Received UUID.
        let p = parse_subvolume_show(&fixture("subvolume-show-partial.txt")).unwrap();
        assert!(!p.readonly);
        assert_eq!(p.received_uuid, None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_subvolume_show("ERROR: not a subvolume").is_err());
    }
}
