//! btrfs: read-only snapshots in `snapshot_dir`, `btrfs send [-p]` and
//! `btrfs receive`.
//!
//! Snapshots taken here live at `snapshot_dir/<id>`. A received snapshot
//! lives at `snapshot_dir/<id>/<id>`: the stream comes from the primary, which
//! may be in an intruder's hands, and btrfs-progs does not sanitize the paths
//! in a send stream (`../`, absolute symlinks, several subvolumes, any
//! names). So serve makes an empty directory `snapshot_dir/<id>/` and runs
//! `btrfs receive -e --chroot` inside it: whatever the stream says, it can
//! only create things in that directory. Afterwards the directory must hold
//! exactly one read-only subvolume named `<id>` whose Received UUID is the
//! sender's uuid; anything else is discarded whole. (The received subvolume
//! cannot be moved out: it is read-only, and a move into another directory
//! would rewrite its `..`.)
//!
//! Before a receive starts, serve writes (and fsyncs) the marker
//! `snapshot_dir/.receiving-<id>`, out of the stream's reach; it is removed
//! only after the stream verified, the filesystem was synced (`syncfs`: the
//! received data on disk) and the caller recorded its receipt. A
//! directory whose marker is still there was cut and is removed; a marker is
//! only ever written for a name that did not exist, so cleanup can never
//! touch a committed snapshot. Snapshots of several subvolumes are not atomic
//! together: every volume is its own atomic group.
//!
//! Nothing privileged arrives: the stream is vetted on its way to `btrfs
//! receive` (`btrfs_vet`) and refused if it would make a device node, a
//! set-uid or set-gid file, or give a file capabilities — unless the volume
//! says `allow_privileged_files = true`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::btrfs_vet::StreamVet;

mod follow;
mod subvolume;
use super::{
    Backend, BoxedSink, BoxedSource, ProcessSink, ProcessSource, Receive, ReceiveSteps,
    SnapshotSink,
};
use crate::base::cmd::Cmd;
use crate::base::config::{BackendKind, Volume, VolumeAddr};
use crate::base::error::{Context, Error, Result};
use crate::base::model::{is_set_id, parse_set_id};
pub use subvolume::{SubvolumeInfo, parse_subvolume_show, subvolume_info, subvolume_show};

pub struct Btrfs;

const MARKER_PREFIX: &str = ".receiving-";
/// Divergent data kept when this site stopped being primary, in `snapshot_dir`.
const DIVERGENT_PREFIX: &str = "divergent-";
/// A rehearsal's writable clone, in `snapshot_dir`.
const REHEARSAL_NAME: &str = ".rehearsal";

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

/// The volume's snapshot directory, or an error for a volume of another
/// backend (a caller's mistake: stores are opened by backend kind).
fn snapshot_dir(vol: &Volume) -> Result<&Path> {
    match &vol.addr {
        VolumeAddr::Btrfs { snapshot_dir, .. } => Ok(snapshot_dir),
        _ => Err(Error::config(format!(
            "volume `{}` is a {} volume, not btrfs",
            vol.role,
            vol.backend().as_str()
        ))),
    }
}

/// Where snapshot `name` is: `snapshot_dir/<name>` when taken here,
/// `snapshot_dir/<name>/<name>` when received.
pub fn snapshot_path(vol: &Volume, name: &str) -> Result<PathBuf> {
    snap_path(vol, name)
}

/// `btrfs subvolume snapshot <snapshot name of vol> <target>`: a writable copy.
fn writable_snapshot(vol: &Volume, name: &str, target: &Path) -> Result<()> {
    Cmd::new("btrfs")
        .args(["subvolume", "snapshot"])
        .arg(snap_path(vol, name)?)
        .arg(target)
        .run()
        .ctx(format!("volume `{}`", vol.role))?;
    Ok(())
}

fn snap_path(vol: &Volume, name: &str) -> Result<PathBuf> {
    let dir = snapshot_dir(vol)?.join(name);
    let nested = dir.join(name);
    Ok(if !is_subvolume(&dir) && is_subvolume(&nested) {
        nested
    } else {
        dir
    })
}

/// Remove `path` and everything below it without following symlinks:
/// subvolumes with `btrfs subvolume delete`, the rest as files/directories.
fn purge(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
    };
    if meta.is_dir() {
        if is_subvolume(path) {
            return delete_subvolume(path);
        }
        let rd = std::fs::read_dir(path).ctx(format!("read {}", path.display()))?;
        for ent in rd {
            let ent = ent.ctx(format!("read {}", path.display()))?;
            purge(&ent.path())?;
        }
        std::fs::remove_dir(path).ctx(format!("remove {}", path.display()))
    } else {
        std::fs::remove_file(path).ctx(format!("remove {}", path.display()))
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx(format!("fsync {}", dir.display()))
}

/// `vol`'s source is not a subvolume (`tail` ends the message).
/// Write back and commit everything of the filesystem holding `path`
/// (`syncfs(2)`).
fn syncfs(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).ctx(format!("open {}", path.display()))?;
    nix::unistd::syncfs(f.as_raw_fd())
        .map_err(std::io::Error::from)
        .ctx(format!("syncfs {}", path.display()))
}

fn not_a_subvolume(vol: &Volume, tail: &str) -> Error {
    Error::storage(format!(
        "volume `{}`: {} is not a btrfs subvolume{tail}",
        vol.role, vol.source
    ))
}

impl Backend for Btrfs {
    fn kind(&self) -> BackendKind {
        BackendKind::Btrfs
    }

    fn probe(&self, vol: &Volume, primary: bool) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        Cmd::new("btrfs").arg("--version").run()?;
        let dir = snapshot_dir(vol)?;
        if primary {
            let src = Path::new(&vol.source);
            if !is_subvolume(src) {
                return Err(not_a_subvolume(vol, "").with_hint(format!(
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
            let stale = self.leftovers(vol)?;
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
            let dir = snapshot_dir(vol)?;
            std::fs::create_dir_all(dir).ctx(format!(
                "volume `{}`: create {}",
                vol.role,
                dir.display()
            ))?;
            let dst = snap_path(vol, name)?;
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
        Ok(Some(subvolume_show(&snap_path(vol, name)?)?.uuid))
    }

    /// As `list`, for the named snapshots only: a `stat` of each
    /// subvolume (and of its receive marker), no directory read.
    fn present(&self, vol: &Volume, names: &[&str]) -> Result<Vec<bool>> {
        let dir = snapshot_dir(vol)?;
        Ok(names
            .iter()
            .map(|name| complete(dir, name, || marked(dir, name)))
            .collect())
    }

    fn list(&self, vol: &Volume) -> Result<Vec<String>> {
        self.list_from(vol, None)
    }

    fn present_by_listing(&self) -> bool {
        false
    }

    /// Only the names from `from[i]` on are parsed and looked at (a
    /// `stat` each); the directory is read once, the receive markers with
    /// the names.
    fn list_batch_from(
        &self,
        vols: &[&Volume],
        from: &[Option<&str>],
    ) -> Result<Vec<super::VolumeListing>> {
        vols.iter()
            .enumerate()
            .map(|(i, v)| {
                Ok(super::VolumeListing {
                    snapshots: self.list_from(v, from.get(i).copied().flatten())?,
                    ids: std::collections::BTreeMap::new(),
                    resumable: self.resumable(v)?,
                })
            })
            .collect()
    }

    fn send(&self, vol: &Volume, name: &str, base: Option<&str>) -> Result<BoxedSource> {
        let mut cmd = Cmd::new("btrfs").args(["send", "-q"]);
        if let Some(b) = base {
            cmd = cmd.arg("-p").arg(snap_path(vol, b)?);
        }
        ProcessSource::spawn(cmd.arg(snap_path(vol, name)?))
    }

    fn receive(&self, vol: &Volume, r: Receive<'_>) -> Result<BoxedSink> {
        let Receive {
            name,
            base,
            expect_id,
            resume: _,
        } = r;
        if expect_id.is_none() {
            return Err(Error::refused(format!(
                "volume `{}`: no sender uuid announced for {name}; refused",
                vol.role
            )));
        }
        // Names come from the wire: only set ids ever become paths here.
        if parse_set_id(name).is_none() || base.is_some_and(|b| parse_set_id(b).is_none()) {
            return Err(Error::refused(format!(
                "volume `{}`: not a snapsite set id",
                vol.role
            )));
        }
        self.cleanup_partial(vol)?;
        let dir = snapshot_dir(vol)?.to_path_buf();
        let jail = dir.join(name);
        if std::fs::symlink_metadata(&jail).is_ok() {
            return Err(Error::storage(format!(
                "volume `{}`: {} already exists",
                vol.role,
                jail.display()
            )));
        }
        // The base alone is looked at (`present`: the rule `list` counts
        // by), not the whole history.
        if let Some(b) = base {
            if !self.present(vol, &[b])?[0] {
                return Err(Error::storage(format!(
                    "volume `{}`: base snapshot {b} for incremental receive is missing",
                    vol.role
                )));
            }
        }
        std::fs::create_dir_all(&dir).ctx(format!("create {}", dir.display()))?;
        let marker = dir.join(format!("{MARKER_PREFIX}{name}"));
        std::fs::write(&marker, b"").ctx(format!("create {}", marker.display()))?;
        std::fs::create_dir(&jail).ctx(format!("create {}", jail.display()))?;
        fsync_dir(&dir)?;
        // -e: stop at the first end marker (one stream, not several);
        // --chroot: every path of the stream resolves inside `jail`.
        let running = Cmd::new("btrfs")
            .args(["receive", "-e", "--chroot"])
            .arg(&jail)
            .spawn(Stdio::piped(), Stdio::null());
        let running = match running {
            Ok(r) => r,
            Err(e) => {
                let _ = purge(&jail);
                let _ = std::fs::remove_file(&marker);
                return Err(e);
            }
        };
        let sink = Box::new(ProcessSink::new(
            &vol.role,
            running,
            BtrfsReceive {
                dir,
                jail,
                marker,
                name: name.to_string(),
                expect_id: expect_id.map(str::to_string),
                role: vol.role.clone(),
            },
        ));
        if vol.allow_privileged_files {
            return Ok(sink);
        }
        Ok(Box::new(Vetted {
            inner: sink,
            vet: StreamVet::new(),
            role: vol.role.clone(),
            refused: None,
        }))
    }

    fn cleanup_partial(&self, vol: &Volume) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let dir = snapshot_dir(vol)?;
        for name in self.leftovers(vol)? {
            let marker = dir.join(format!("{MARKER_PREFIX}{name}"));
            if is_set_id(&name) {
                let p = dir.join(&name);
                if std::fs::symlink_metadata(&p).is_ok() {
                    tracing::warn!(volume = %vol.role, path = %p.display(), "deleting interrupted receive");
                    purge(&p).ctx(format!("volume `{}`", vol.role))?;
                    removed.push(p.display().to_string());
                }
            }
            std::fs::remove_file(&marker).ctx(format!("remove {}", marker.display()))?;
        }
        if !removed.is_empty() {
            fsync_dir(dir)?;
        }
        Ok(removed)
    }

    /// A marker whose directory holds exactly the read-only subvolume
    /// `<id>`, with the uuid and Received UUID its receipt recorded: the
    /// receive verified (the receipt is written only then) and was killed
    /// before its marker was removed. The marker goes; the snapshot stays.
    fn adopt_verified(
        &self,
        vol: &Volume,
        receipt: &dyn Fn(&str) -> Option<crate::base::model::Receipt>,
    ) -> Result<Vec<String>> {
        let dir = snapshot_dir(vol)?;
        let mut kept = Vec::new();
        for name in self.leftovers(vol)? {
            if !is_set_id(&name) {
                continue;
            }
            let Some(r) = receipt(&name) else {
                continue;
            };
            let jail = dir.join(&name);
            let got = jail.join(&name);
            if dir_entries(&jail) != [name.clone()] || !is_subvolume(&got) {
                continue;
            }
            let Ok(info) = subvolume_show(&got) else {
                continue;
            };
            let matches = info.readonly
                && r.storage_id.as_deref() == Some(info.uuid.as_str())
                && info.received_uuid.is_some()
                && r.sender_storage_id.as_deref() == info.received_uuid.as_deref();
            if !matches {
                continue;
            }
            let marker = dir.join(format!("{MARKER_PREFIX}{name}"));
            std::fs::remove_file(&marker).ctx(format!("remove {}", marker.display()))?;
            kept.push(name);
        }
        if !kept.is_empty() {
            fsync_dir(dir)?;
        }
        Ok(kept)
    }

    fn destroy(&self, vol: &Volume, name: &str) -> Result<()> {
        if parse_set_id(name).is_none() {
            return Err(Error::refused(format!(
                "volume `{}`: `{name}` is not a snapsite set id",
                vol.role
            )));
        }
        let p = snapshot_dir(vol)?.join(name);
        if is_subvolume(&p) {
            return delete_subvolume(&p).ctx(format!("volume `{}`", vol.role));
        }
        if std::fs::symlink_metadata(&p).is_err() {
            return Ok(()); // idempotent: already gone
        }
        // A received snapshot: the subvolume inside its directory, then it.
        purge(&p).ctx(format!("volume `{}`", vol.role))
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
        writable_snapshot(vol, name, &target)?;
        Ok(target)
    }

    fn writable_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        Ok(PathBuf::from(&vol.source))
    }

    fn writable_copy_exists(&self, vol: &Volume) -> Result<bool> {
        Ok(Path::new(&vol.source).exists())
    }

    /// `snapshot_dir/.rehearsal`: on the snapshots' filesystem, a name no
    /// set id can take (listing, receives and prune never see it).
    fn rehearsal_copy_path(&self, vol: &Volume) -> Result<PathBuf> {
        Ok(snapshot_dir(vol)?.join(REHEARSAL_NAME))
    }

    fn rehearsal_copy(&self, vol: &Volume, name: &str) -> Result<PathBuf> {
        let target = self.rehearsal_copy_path(vol)?;
        if std::fs::symlink_metadata(&target).is_ok() {
            return Err(Error::refused(format!(
                "volume `{}`: {} already exists (a rehearsal's leftover?)",
                vol.role,
                target.display()
            )));
        }
        writable_snapshot(vol, name, &target)?;
        Ok(target)
    }

    /// `snapshot_dir/divergent-<label>`: a read-only snapshot of `source`.
    fn keep_divergent(&self, vol: &Volume, label: &str) -> Result<String> {
        validate_label(label)?;
        let src = Path::new(&vol.source);
        if !is_subvolume(src) {
            return Err(not_a_subvolume(vol, "; nothing to keep"));
        }
        let dir = snapshot_dir(vol)?;
        std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
        let dst = dir.join(format!("{DIVERGENT_PREFIX}{label}"));
        if std::fs::symlink_metadata(&dst).is_err() {
            Cmd::new("btrfs")
                .args(["subvolume", "snapshot", "-r"])
                .arg(src)
                .arg(&dst)
                .run()
                .ctx(format!("volume `{}`", vol.role))?;
        } else if !is_subvolume(&dst) || !subvolume_show(&dst)?.readonly {
            return Err(Error::storage(format!(
                "volume `{}`: {} exists and is not a read-only snapshot",
                vol.role,
                dst.display()
            )));
        }
        Ok(dst.display().to_string())
    }

    /// A snapshot taken here has no Received UUID; the peer's streams name
    /// their parent and clone sources by the peer's Received UUID, which is
    /// this snapshot's uuid. btrfs-progs finds a parent by uuid too, but
    /// (before 6.10) a clone source only by Received UUID: "clone: did not
    /// find source subvol". So the snapshot is put into the received form:
    /// `snapshot_dir/<id>/<id>`, a snapshot of it whose Received UUID is the
    /// original's uuid (BTRFS_IOC_SET_RECEIVED_SUBVOL), read-only; then the
    /// original goes. Idempotent, and safe to redo after a crash at any
    /// point: `.orig-<id>` holds the data until the received form is
    /// complete (a rerun completes it from there), and a received form
    /// that is already read-only is checked, not written again.
    fn make_receivable(&self, vol: &Volume, name: &str) -> Result<()> {
        if parse_set_id(name).is_none() {
            return Err(Error::refused(format!("`{name}` is not a set id")));
        }
        let dir = snapshot_dir(vol)?;
        let flat = dir.join(name);
        let nested = flat.join(name);
        let orig = dir.join(format!(".orig-{name}"));
        let ctx = || format!("volume `{}`: make {name} receivable", vol.role);
        if is_subvolume(&flat) {
            let info = subvolume_show(&flat)?;
            if info.received_uuid.is_some() {
                return Ok(());
            }
            std::fs::rename(&flat, &orig).ctx(ctx())?;
            fsync_dir(dir)?;
            crate::failpoint!("btrfs.make_receivable.after_rename");
        }
        if !is_subvolume(&orig) {
            return Ok(()); // already in the received form (or not here)
        }
        let info = subvolume_show(&orig)?;
        std::fs::create_dir_all(&flat).ctx(ctx())?;
        let done = if is_subvolume(&nested) {
            let n = subvolume_show(&nested)?;
            if n.received_uuid.as_deref() == Some(info.uuid.as_str()) && n.readonly {
                true
            } else if n.readonly {
                // Not ours to fix: something else made it read-only.
                return Err(Error::storage(format!(
                    "volume `{}`: {} is read-only without the Received UUID {} of {}",
                    vol.role,
                    nested.display(),
                    info.uuid,
                    orig.display()
                ))
                .with_hint(format!(
                    "{} still holds the data; delete {} (`btrfs subvolume delete`) and run this again",
                    orig.display(),
                    nested.display()
                )));
            } else {
                false
            }
        } else {
            Cmd::new("btrfs")
                .args(["subvolume", "snapshot"])
                .arg(&orig)
                .arg(&nested)
                .run()
                .ctx(ctx())?;
            crate::failpoint!("btrfs.make_receivable.after_copy");
            false
        };
        if !done {
            set_received_uuid(&nested, &info.uuid).ctx(ctx())?;
            crate::failpoint!("btrfs.make_receivable.after_received_uuid");
            Cmd::new("btrfs")
                .args(["property", "set", "-ts"])
                .arg(&nested)
                .args(["ro", "true"])
                .run()
                .ctx(ctx())?;
            crate::failpoint!("btrfs.make_receivable.after_readonly");
        }
        delete_subvolume(&orig).ctx(ctx())?;
        fsync_dir(dir)
    }

    /// See [`follow::set_aside_newer`].
    fn set_aside_newer(&self, vol: &Volume, base: &str, label: &str) -> Result<Vec<String>> {
        follow::set_aside_newer(vol, &self.list(vol)?, base, label)
    }

    fn can_set_aside(&self) -> bool {
        true
    }

    fn divergent(&self, vol: &Volume) -> Result<Vec<String>> {
        Ok(dir_entries(snapshot_dir(vol)?)
            .into_iter()
            .filter(|n| n.starts_with(DIVERGENT_PREFIX))
            .collect())
    }

    fn remove_rehearsal_copy(&self, vol: &Volume) -> Result<()> {
        purge(&self.rehearsal_copy_path(vol)?).ctx(format!("volume `{}`", vol.role))
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
    /// Complete snapshots of the volume (as [`Backend::list`] says), only
    /// those named `from` or later when given: one directory read, which
    /// also gives the receive markers (a snapshot with one is being
    /// received, not complete); each name from `from` on is parsed and its
    /// subvolume looked at.
    fn list_from(&self, vol: &Volume, from: Option<&str>) -> Result<Vec<String>> {
        let dir = snapshot_dir(vol)?;
        let mut names = Vec::new();
        let mut receiving = std::collections::BTreeSet::new();
        // Only the markers and the set-id names from `from` on become
        // `String`s; every other name is looked at borrowed and dropped.
        let scan = scan_dir(dir, |name| {
            if let Some(n) = name.strip_prefix(MARKER_PREFIX.as_bytes()) {
                receiving.insert(String::from_utf8_lossy(n).into_owned());
            } else if let Ok(name) = std::str::from_utf8(name) {
                if from.is_none_or(|f| name >= f) && is_set_id(name) {
                    names.push(name.to_string());
                }
            }
        });
        match scan {
            Ok(()) => {}
            Err(ScanError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            Err(ScanError::Open(e)) => {
                return Err(Error::io(
                    format!("volume `{}`: read {}", vol.role, dir.display()),
                    e,
                ));
            }
            Err(ScanError::Read(e)) => return Err(Error::io(format!("read {}", dir.display()), e)),
        }
        names.retain(|name| complete(dir, name, || receiving.contains(name)));
        names.sort();
        Ok(names)
    }

    /// Names whose receive marker is still present: cut receives, sorted.
    /// One pass over the directory; only the markers' names are kept.
    fn leftovers(&self, vol: &Volume) -> Result<Vec<String>> {
        let mut markers = Vec::new();
        // As before this read: a directory that cannot be read (or stops
        // being readable) has no (more) markers to show.
        let _ = scan_dir(snapshot_dir(vol)?, |name| {
            if let Some(n) = name.strip_prefix(MARKER_PREFIX.as_bytes()) {
                markers.push(String::from_utf8_lossy(n).into_owned());
            }
        });
        markers.sort();
        Ok(markers)
    }
}

/// Whether `dir` holds snapshot `name` complete: the one rule of
/// [`Backend::list`], [`Backend::present`] and so of the incremental
/// receive's base check. A set id, no receive marker (`receiving` says
/// whether there is one: from a listing, or [`marked`]), and its
/// subvolume at `dir/<id>` (taken here) or `dir/<id>/<id>` (received).
fn complete(dir: &Path, name: &str, receiving: impl FnOnce() -> bool) -> bool {
    is_set_id(name) && !receiving() && {
        let path = dir.join(name);
        is_subvolume(&path) || is_subvolume(&path.join(name))
    }
}

/// Whether `dir` holds the receive marker of `name` (one `stat`).
fn marked(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(format!("{MARKER_PREFIX}{name}"))).is_ok()
}

/// Why [`scan_dir`] stopped.
enum ScanError {
    /// The directory could not be opened (`NotFound`: it does not exist).
    Open(std::io::Error),
    /// Reading it failed part way; the names before were seen.
    Read(std::io::Error),
}

/// Call `each` with the name of every entry of `dir` but `.` and `..`,
/// borrowed: no allocation per entry (std's `read_dir` makes two per name,
/// its own copy and `file_name()`'s), no `stat`. The snapshot directory
/// holds every snapshot of the volume, and a receive only wants its
/// markers out of it.
fn scan_dir(dir: &Path, mut each: impl FnMut(&[u8])) -> std::result::Result<(), ScanError> {
    use nix::fcntl::OFlag;
    let mut d = nix::dir::Dir::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| ScanError::Open(e.into()))?;
    for ent in d.iter() {
        let ent = ent.map_err(|e| ScanError::Read(e.into()))?;
        let name = ent.file_name().to_bytes();
        if name != b"." && name != b".." {
            each(name);
        }
    }
    Ok(())
}

/// BTRFS_IOC_SET_RECEIVED_SUBVOL on a writable subvolume: its Received
/// UUID becomes `uuid` (what `btrfs receive` sets on what it made).
fn set_received_uuid(path: &Path, uuid: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return Err(Error::storage(format!("`{uuid}` is not a uuid")));
    }
    // struct btrfs_ioctl_received_subvol_args: uuid[16], stransid, rtransid,
    // stime {u64, u32, pad}, rtime {u64, u32, pad}, flags, reserved[16].
    let mut args = [0u8; 200];
    for i in 0..16 {
        args[i] = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| Error::storage(format!("`{uuid}` is not a uuid")))?;
    }
    args[16..24].copy_from_slice(&1u64.to_le_bytes()); // stransid
    let f = std::fs::File::open(path).ctx(format!("open {}", path.display()))?;
    const REQ: u64 = (3 << 30) | (200 << 16) | (0x94 << 8) | 37;
    // SAFETY: `args` is the 200-byte struct the ioctl reads and writes.
    let rc = unsafe { nix::libc::ioctl(f.as_raw_fd(), REQ as _, args.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(
            format!("set the received uuid of {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A divergent label becomes a path component: plain characters only.
fn validate_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 64
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        && !label.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::refused(format!(
            "`{label}` is not a valid divergent label"
        )))
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

/// A receive whose stream is vetted before `btrfs receive` sees it
/// ([`StreamVet`]: no device nodes, set-uid/set-gid files or file
/// capabilities from the wire). A refused stream never reaches the end of
/// the offending command; the receive is discarded and `commit` says why.
struct Vetted {
    inner: Box<dyn SnapshotSink>,
    vet: StreamVet,
    role: String,
    refused: Option<Error>,
}

impl Vetted {
    fn refuse(&mut self, why: String) {
        self.refused = Some(
            Error::refused(format!(
                "volume `{}`: {why}; the stream is refused (nothing privileged is received from the other site)",
                self.role
            ))
            .with_hint("if the application needs it, set `allow_privileged_files = true` on this volume in the standby's config (docs/security.md)"),
        );
    }
}

impl std::io::Write for Vetted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.refused.is_some() {
            return Err(std::io::Error::other("refused by the stream check"));
        }
        match self.vet.feed(buf) {
            Ok(n) => {
                self.inner.write_all(&self.vet.pending()[..n])?;
                self.vet.consume(n);
                Ok(buf.len())
            }
            Err(why) => {
                self.refuse(why);
                Err(std::io::Error::other("refused by the stream check"))
            }
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl SnapshotSink for Vetted {
    fn commit(
        mut self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        if self.refused.is_none() {
            if let Err(why) = self.vet.finish() {
                self.refuse(why);
            }
        }
        if let Some(e) = self.refused.take() {
            self.inner.abort();
            return Err(e);
        }
        // An incomplete last command: `btrfs receive` refuses it whole.
        let rest = self.vet.pending().to_vec();
        let _ = self.inner.write_all(&rest);
        self.inner.commit(record)
    }
    fn abort(self: Box<Self>) {
        self.inner.abort();
    }
    fn cut(self: Box<Self>) {
        self.inner.cut();
    }
}

/// The btrfs part of a receive (a [`ProcessSink`] over `btrfs receive`).
struct BtrfsReceive {
    /// `snapshot_dir`
    dir: PathBuf,
    /// `snapshot_dir/<name>`: the receive's chroot, made empty by us.
    jail: PathBuf,
    marker: PathBuf,
    name: String,
    expect_id: Option<String>,
    role: String,
}

impl ReceiveSteps for BtrfsReceive {
    /// Remove whatever this receive created (its whole chroot), then the marker.
    fn discard(&mut self) {
        if let Err(e) = purge(&self.jail) {
            tracing::error!(volume = %self.role, path = %self.jail.display(), error = %e, "could not remove partial receive; the marker stays so the next serve retries");
            return;
        }
        let _ = std::fs::remove_file(&self.marker);
        let _ = fsync_dir(&self.dir);
    }

    /// `btrfs receive` exited 0: exactly the announced subvolume, read-only,
    /// with the sender's uuid as its received uuid.
    fn verify(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        let got = self.jail.join(&self.name);
        let made = dir_entries(&self.jail);
        if made != [self.name.clone()] {
            return Err(Error::integrity(format!(
                "volume `{}`: the stream created {} instead of exactly the subvolume {}",
                self.role,
                made.iter()
                    .map(|n| crate::base::model::wire_str(n))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.name
            )));
        }
        if !is_subvolume(&got) {
            return Err(Error::integrity(format!(
                "volume `{}`: btrfs receive did not create the subvolume {}",
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
                    "volume `{}`: received uuid {:?} does not match the sender's snapshot uuid {}",
                    self.role,
                    info.received_uuid,
                    crate::base::model::wire_str(want)
                )));
            }
        }
        // What `btrfs receive` wrote sits in the page cache until written
        // back; the receipt (`record`) must never vouch for a snapshot a
        // power cut can still take. One syncfs of the receiving filesystem
        // (btrfs waits for the data and commits the transaction); a failure
        // discards the receive. (Measured before this: 80 MiB received,
        // `sync -f` right after the ship took 0.5 s: it was not on disk.)
        syncfs(&self.jail).map_err(|e| e.context(format!("volume `{}`", self.role)))?;
        record(Some(info.uuid.clone()))?;
        // No fsync of the directory for the marker's removal: `btrfs
        // receive` committed the subvolume and `record` made the receipt
        // durable, so a marker a power cut brings back is adopted by the next
        // serve (`adopt_verified`), not taken for a cut receive.
        std::fs::remove_file(&self.marker).ctx(format!("remove {}", self.marker.display()))?;
        Ok(Some(info.uuid))
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

    fn btrfs_volume(snapshot_dir: &Path) -> Volume {
        Volume {
            role: "mysql".into(),
            source: "/nonexistent/live".into(),
            addr: VolumeAddr::Btrfs {
                subvolume: "/nonexistent/live".into(),
                snapshot_dir: snapshot_dir.to_path_buf(),
            },
            mountpoint: None,
            allow_privileged_files: false,
        }
    }

    /// The old way: every name read, as a sorted `String` each, filtered.
    fn markers_by_listing_every_name(dir: &Path) -> Vec<String> {
        dir_entries(dir)
            .into_iter()
            .filter_map(|n| n.strip_prefix(MARKER_PREFIX).map(str::to_string))
            .collect()
    }

    /// A snapshot directory of thousands of names, a few of them receive
    /// markers (as files and as a directory, of set ids and not, one not
    /// UTF-8): `leftovers` finds exactly the markers, sorted, as reading
    /// every name did. No btrfs needed: markers are names.
    #[test]
    fn leftovers_are_exactly_the_markers_among_many_names() {
        use std::os::unix::ffi::OsStrExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("snap");
        std::fs::create_dir(&dir).unwrap();
        let vol = btrfs_volume(&dir);
        assert_eq!(Btrfs.leftovers(&vol).unwrap(), Vec::<String>::new());
        for i in 0..3000 {
            let id = format!("20261208T{:06}.000Z-full", i % 240000);
            std::fs::create_dir(dir.join(&id)).unwrap();
            std::fs::write(dir.join(format!("x-{i}")), b"").unwrap();
        }
        std::fs::create_dir(dir.join(".rehearsal")).unwrap();
        std::fs::create_dir(dir.join("divergent-a")).unwrap();
        // Near misses: not the prefix.
        std::fs::write(dir.join(".receiving"), b"").unwrap();
        std::fs::write(dir.join("receiving-20261208T000001.000Z-full"), b"").unwrap();
        std::fs::write(dir.join("x.receiving-20261208T000001.000Z-full"), b"").unwrap();
        // The markers.
        std::fs::write(dir.join(".receiving-20261208T000002.000Z-full"), b"").unwrap();
        std::fs::write(dir.join(".receiving-20261207T235959.000Z-redolog"), b"").unwrap();
        std::fs::create_dir(dir.join(".receiving-junk")).unwrap();
        std::fs::write(dir.join(".receiving-"), b"").unwrap();
        let bad = std::ffi::OsStr::from_bytes(b".receiving-\xffz");
        std::fs::write(dir.join(bad), b"").unwrap();
        let got = Btrfs.leftovers(&vol).unwrap();
        assert_eq!(
            got,
            [
                "",
                "20261207T235959.000Z-redolog",
                "20261208T000002.000Z-full",
                "junk",
                "\u{fffd}z",
            ]
        );
        assert_eq!(got, markers_by_listing_every_name(&dir));
        // None of these is a subvolume: nothing is complete, whatever the
        // names, and `from` changes nothing of that.
        assert_eq!(Btrfs.list(&vol).unwrap(), Vec::<String>::new());
        assert_eq!(
            Btrfs
                .list_from(&vol, Some("20261208T000100.000Z-full"))
                .unwrap(),
            Vec::<String>::new()
        );
        // A missing directory has no markers and no snapshots; one that is
        // a file is an error for the listing, naming the volume.
        let gone = btrfs_volume(&tmp.path().join("none"));
        assert!(Btrfs.leftovers(&gone).unwrap().is_empty());
        assert!(Btrfs.list(&gone).unwrap().is_empty());
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let not_dir = btrfs_volume(&file);
        assert!(Btrfs.leftovers(&not_dir).unwrap().is_empty());
        let e = Btrfs.list(&not_dir).unwrap_err().to_string();
        assert!(
            e.contains("volume `mysql`: read ") && e.contains("file"),
            "{e}"
        );
    }
}
