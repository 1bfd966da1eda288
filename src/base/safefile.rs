//! Opening files that came from elsewhere: a received snapshot, failover's
//! copy of one, a seed directory. Every such file is opened relative to a
//! directory descriptor this process holds ([`Root`]), without following a
//! symlink in any component of its path (`openat2` with
//! `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`; where the kernel lacks
//! `openat2`, a walk of `O_NOFOLLOW | O_DIRECTORY` opens), and checked on
//! the descriptor (`fstat`) to be a regular file before a byte is read or
//! written. The object is first opened `O_PATH` (no driver is opened, a
//! FIFO cannot block), checked, then opened for I/O with `O_NONBLOCK` and
//! checked again to be the same regular file. Reads are bounded by the size
//! the caller expects.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use nix::libc;

use crate::base::error::{Error, Result};

/// A directory held open; names below it are resolved beneath it only.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// Read or read-write access to a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    ReadWrite,
}

/// What a non-regular object is, for messages.
pub fn kind_of(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "regular file"
    }
}

/// 0 unknown, 1 openat2 works, 2 it does not (ENOSYS): walk.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

fn components(rel: &str) -> std::io::Result<Vec<&str>> {
    let bad = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a plain relative path (empty, absolute, `.` or `..` component)",
        )
    };
    if rel.is_empty() || rel.starts_with('/') || rel.contains('\0') {
        return Err(bad());
    }
    let comps: Vec<&str> = rel.split('/').collect();
    if comps
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        return Err(bad());
    }
    Ok(comps)
}

fn cstr(s: &str) -> std::io::Result<CString> {
    CString::new(s).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn raw_openat(dir: BorrowedFd, name: &str, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: a valid descriptor and a NUL-terminated name; the result is
    // owned on success.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn try_openat2(
    dir: BorrowedFd,
    rel: &str,
    flags: i32,
    mode: u32,
) -> Option<std::io::Result<OwnedFd>> {
    if OPENAT2.load(Ordering::Relaxed) == 2 {
        return None;
    }
    let c = match cstr(rel) {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: open_how is plain data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC | libc::O_NOFOLLOW) as u64;
    how.mode = if flags & libc::O_CREAT != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: the arguments are a valid dirfd, a NUL-terminated path, and a
    // pointer to an open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            OPENAT2.store(2, Ordering::Relaxed);
            return None;
        }
        return Some(Err(e));
    }
    OPENAT2.store(1, Ordering::Relaxed);
    // SAFETY: r is a descriptor just returned by openat2.
    Some(Ok(unsafe { OwnedFd::from_raw_fd(r as i32) }))
}

/// Open `rel` below `dir`: no symlink in any component, never outside.
fn open_beneath(dir: BorrowedFd, rel: &str, flags: i32, mode: u32) -> std::io::Result<OwnedFd> {
    let comps = components(rel)?;
    if let Some(r) = try_openat2(dir, rel, flags, mode) {
        return r;
    }
    let (last, parents) = comps.split_last().expect("at least one component");
    let mut cur: Option<OwnedFd> = None;
    for c in parents {
        let at = cur.as_ref().map_or(dir, |f| f.as_fd());
        cur = Some(raw_openat(at, c, libc::O_PATH | libc::O_DIRECTORY, 0)?);
    }
    let at = cur.as_ref().map_or(dir, |f| f.as_fd());
    raw_openat(at, last, flags, mode)
}

fn fstat(fd: &OwnedFd) -> std::io::Result<Metadata> {
    // A File borrowed for its metadata only (not closed twice).
    // SAFETY: fd is a valid open descriptor for the borrow's duration; the
    // ManuallyDrop never closes it.
    let f = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd.as_raw_fd()) });
    f.metadata()
}

fn explain(path: &Path, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => format!(
            "{}: refused: it is, or its path goes through, a symbolic link",
            path.display()
        ),
        Some(libc::EXDEV) => format!(
            "{}: refused: it leads outside its directory",
            path.display()
        ),
        Some(libc::ENOTDIR) => format!(
            "{}: refused: a component of its path is not a directory (or is a symbolic link)",
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    }
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl Root {
    /// Hold the directory `path` (itself trusted: it is this site's own
    /// path; only what is below it is not).
    pub fn open(path: &Path) -> Result<Root> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::config(format!("{}: NUL in path", path.display())))?;
        // SAFETY: NUL-terminated path; result owned on success.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io(
                format!("open directory {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Root {
            // SAFETY: fd was just returned by open.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `root/rel`, for messages.
    pub fn display(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The object at `rel` without opening it for I/O (`lstat` beneath the
    /// root); `None` if it (or a directory on the way) does not exist.
    pub fn stat(&self, rel: &str) -> std::result::Result<Option<Metadata>, String> {
        match open_beneath(self.fd.as_fd(), rel, libc::O_PATH, 0) {
            Ok(fd) => fstat(&fd)
                .map(Some)
                .map_err(|e| explain(&self.display(rel), &e)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(explain(&self.display(rel), &e)),
        }
    }

    /// The size of the regular file `rel`; `None` if absent; an error naming
    /// it for anything else there.
    pub fn regular_size(&self, rel: &str) -> std::result::Result<Option<u64>, String> {
        match self.stat(rel)? {
            None => Ok(None),
            Some(m) if m.file_type().is_file() => Ok(Some(m.len())),
            Some(m) => Err(format!(
                "{} is not a regular file (a {}); refused",
                self.display(rel).display(),
                kind_of(&m)
            )),
        }
    }

    /// Open the regular file `rel` for I/O. Refused, naming it, if it is
    /// anything else or reached through a symlink; `Ok(None)` if absent.
    pub fn open_regular(
        &self,
        rel: &str,
        access: Access,
    ) -> std::result::Result<Option<File>, String> {
        let path = self.display(rel);
        let Some(before) = self.stat(rel)? else {
            return Ok(None);
        };
        if !before.file_type().is_file() {
            return Err(format!(
                "{} is not a regular file (a {}); refused",
                path.display(),
                kind_of(&before)
            ));
        }
        let flags = match access {
            Access::Read => libc::O_RDONLY,
            Access::ReadWrite => libc::O_RDWR,
        } | libc::O_NONBLOCK
            | libc::O_NOCTTY;
        let fd = match open_beneath(self.fd.as_fd(), rel, flags, 0) {
            Ok(fd) => fd,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(explain(&path, &e)),
        };
        let f = File::from(fd);
        let m = f.metadata().map_err(|e| explain(&path, &e))?;
        if !m.file_type().is_file() || m.dev() != before.dev() || m.ino() != before.ino() {
            return Err(format!(
                "{} changed while it was opened (now a {}); refused",
                path.display(),
                kind_of(&m)
            ));
        }
        Ok(Some(f))
    }

    /// Like [`Root::open_regular`], absent being an error too.
    pub fn open_existing(&self, rel: &str, access: Access) -> std::result::Result<File, String> {
        self.open_regular(rel, access)?
            .ok_or_else(|| format!("{}: no such file", self.display(rel).display()))
    }

    /// A new regular file `rel` (its directory must exist); refused if
    /// anything is there already.
    pub fn create_new(&self, rel: &str) -> std::result::Result<File, String> {
        let fd = open_beneath(
            self.fd.as_fd(),
            rel,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NONBLOCK,
            0o644,
        )
        .map_err(|e| explain(&self.display(rel), &e))?;
        Ok(File::from(fd))
    }

    /// The whole regular file `rel`, refused if it holds more than `max`
    /// bytes (checked on the descriptor, and again while reading).
    pub fn read_bounded(&self, rel: &str, max: u64) -> std::result::Result<Vec<u8>, String> {
        let path = self.display(rel);
        let f = self.open_existing(rel, Access::Read)?;
        let len = f.metadata().map_err(|e| explain(&path, &e))?.len();
        if len > max {
            return Err(format!(
                "{} has {len} bytes, more than the {max} expected; refused",
                path.display()
            ));
        }
        let mut out = Vec::with_capacity(len as usize);
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| explain(&path, &e))?;
        if out.len() as u64 > max {
            return Err(format!(
                "{} grew beyond the {max} bytes expected while read; refused",
                path.display()
            ));
        }
        Ok(out)
    }

    /// The directory `rel` below the root, held open.
    pub fn subdir(&self, rel: &str) -> std::result::Result<Root, String> {
        let fd = open_beneath(self.fd.as_fd(), rel, libc::O_PATH | libc::O_DIRECTORY, 0)
            .map_err(|e| explain(&self.display(rel), &e))?;
        Ok(Root {
            fd,
            path: self.display(rel),
        })
    }

    /// Create the directories of `rel` below the root (each a real
    /// directory, no symlink); returns the ones created, outermost first.
    pub fn create_dirs(&self, rel: &str) -> std::result::Result<Vec<String>, String> {
        let comps = components(rel).map_err(|e| explain(&self.display(rel), &e))?;
        let mut created = Vec::new();
        let mut cur: Option<OwnedFd> = None;
        let mut so_far = String::new();
        for c in comps {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(c);
            let at = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            let name = cstr(c).map_err(|e| explain(&self.display(&so_far), &e))?;
            // SAFETY: valid dirfd and NUL-terminated name.
            let r = unsafe { libc::mkdirat(at.as_raw_fd(), name.as_ptr(), 0o755) };
            if r == 0 {
                created.push(so_far.clone());
            } else {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(explain(&self.display(&so_far), &e));
                }
            }
            cur = Some(
                raw_openat(at, c, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| explain(&self.display(&so_far), &e))?,
            );
        }
        Ok(created)
    }

    fn parent_of<'a>(
        &self,
        rel: &'a str,
    ) -> std::result::Result<(Option<OwnedFd>, &'a str), String> {
        components(rel).map_err(|e| explain(&self.display(rel), &e))?;
        match rel.rsplit_once('/') {
            None => Ok((None, rel)),
            Some((dir, base)) => {
                let fd = open_beneath(self.fd.as_fd(), dir, libc::O_PATH | libc::O_DIRECTORY, 0)
                    .map_err(|e| explain(&self.display(dir), &e))?;
                Ok((Some(fd), base))
            }
        }
    }

    /// Rename `from` to `to`, both below the root (their directories
    /// reached without symlinks; the names themselves are not followed).
    pub fn rename(&self, from: &str, to: &str) -> std::result::Result<(), String> {
        // SAFETY: valid dirfds and NUL-terminated names.
        self.two_names("rename", from, to, |da, a, db, b| unsafe {
            libc::renameat(da, a, db, b)
        })
    }

    /// A second name `to` for the regular file `from` (a hard link; the
    /// name `from` itself is not followed).
    pub fn link(&self, from: &str, to: &str) -> std::result::Result<(), String> {
        // SAFETY: valid dirfds and NUL-terminated names; flags 0 does not
        // follow a symlink at `from`.
        self.two_names("link", from, to, |da, a, db, b| unsafe {
            libc::linkat(da, a, db, b, 0)
        })
    }

    /// Run `call` (a `renameat`-shaped system call) on `from` and `to`,
    /// each given as its directory's descriptor (reached without symlinks)
    /// and its last name; a non-zero return is an error naming both.
    fn two_names(
        &self,
        what: &str,
        from: &str,
        to: &str,
        call: impl FnOnce(
            std::os::fd::RawFd,
            *const libc::c_char,
            std::os::fd::RawFd,
            *const libc::c_char,
        ) -> libc::c_int,
    ) -> std::result::Result<(), String> {
        let (fa, a) = self.parent_of(from)?;
        let (fb, b) = self.parent_of(to)?;
        let ca = cstr(a).map_err(|e| explain(&self.display(from), &e))?;
        let cb = cstr(b).map_err(|e| explain(&self.display(to), &e))?;
        let da = fa.as_ref().map_or(self.fd.as_raw_fd(), |f| f.as_raw_fd());
        let db = fb.as_ref().map_or(self.fd.as_raw_fd(), |f| f.as_raw_fd());
        if call(da, ca.as_ptr(), db, cb.as_ptr()) != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!(
                "{what} {} to {}: {e}",
                self.display(from).display(),
                self.display(to).display()
            ));
        }
        Ok(())
    }

    /// The names in the directory `rel` below the root, which must be a
    /// real directory reached without symlinks (the names are only listed:
    /// whatever is done with them goes through this root again).
    pub fn list(&self, rel: &str) -> std::result::Result<Vec<String>, String> {
        match self.stat(rel)? {
            Some(m) if m.file_type().is_dir() => {}
            Some(m) => {
                return Err(format!(
                    "{} is not a directory (a {})",
                    self.display(rel).display(),
                    kind_of(&m)
                ));
            }
            None => return Ok(Vec::new()),
        }
        let p = self.display(rel);
        let rd = std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect())
    }

    /// Remove the file (or, with `dir`, the empty directory) `rel`.
    pub fn remove(&self, rel: &str, dir: bool) -> std::result::Result<(), String> {
        let (fa, a) = self.parent_of(rel)?;
        let ca = cstr(a).map_err(|e| explain(&self.display(rel), &e))?;
        let da = fa.as_ref().map_or(self.fd.as_raw_fd(), |f| f.as_raw_fd());
        let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: valid dirfd and NUL-terminated name.
        if unsafe { libc::unlinkat(da, ca.as_ptr(), flags) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(format!("remove {}: {e}", self.display(rel).display()));
        }
        Ok(())
    }

    /// fsync the root directory and the directory of each of `names`.
    pub fn sync_dirs<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut dirs = std::collections::BTreeSet::new();
        for n in names {
            if let Some((d, _)) = n.rsplit_once('/') {
                dirs.insert(d.to_string());
            }
        }
        let sync = |fd: BorrowedFd| {
            // O_PATH descriptors cannot be fsynced: reopen for reading.
            if let Ok(d) = raw_openat(fd, ".", libc::O_RDONLY | libc::O_DIRECTORY, 0) {
                let _ = File::from(d).sync_all();
            }
        };
        sync(self.fd.as_fd());
        for d in dirs {
            if let Ok(fd) = open_beneath(self.fd.as_fd(), &d, libc::O_PATH | libc::O_DIRECTORY, 0) {
                sync(fd.as_fd());
            }
        }
    }
}

/// [`Root::read_bounded`] for callers with a `Result`: the file `name` in
/// directory `dir`, at most `max` bytes, a regular file reached without
/// symlinks.
pub fn read_in(dir: &Path, name: &str, max: u64) -> Result<Vec<u8>> {
    Root::open(dir)?
        .read_bounded(name, max)
        .map_err(Error::integrity)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory holding `sub/f` (with `content`) and `link` -> `sub`.
    fn tree(content: &[u8]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("sub")).unwrap();
        std::fs::write(p.join("sub/f"), content).unwrap();
        std::os::unix::fs::symlink("sub", p.join("link")).unwrap();
        d
    }

    #[test]
    fn specials_and_symlinks_are_refused_by_name() {
        let d = tree(b"hello");
        let p = d.path();
        std::os::unix::fs::symlink("f", p.join("sub/lf")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("abs")).unwrap();
        nix::unistd::mkfifo(
            &p.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let r = Root::open(p).unwrap();
        assert_eq!(r.read_bounded("sub/f", 5).unwrap(), b"hello");
        assert!(
            r.read_bounded("sub/f", 4)
                .unwrap_err()
                .contains("more than")
        );
        for (rel, want) in [
            ("link/f", "symbolic link"),
            ("sub/lf", "symbolic link"),
            ("abs", "symbolic link"),
            ("fifo", "FIFO"),
            ("sub", "directory"),
            ("../x", "relative"),
            ("/etc/passwd", "relative"),
            ("sub/./f", "relative"),
        ] {
            let t = std::time::Instant::now();
            let e = r.open_regular(rel, Access::Read).unwrap_err();
            assert!(e.contains(want), "{rel}: {e}");
            assert!(t.elapsed() < std::time::Duration::from_secs(1));
        }
        assert!(r.open_regular("nope", Access::Read).unwrap().is_none());
        assert_eq!(r.regular_size("sub/f").unwrap(), Some(5));
        assert!(r.regular_size("fifo").is_err());
        assert_eq!(r.regular_size("missing/x").unwrap(), None);
        let made = r.create_dirs("a/b").unwrap();
        assert_eq!(made, ["a", "a/b"]);
        r.create_new("a/b/n").unwrap();
        assert!(r.create_new("a/b/n").is_err());
        assert!(r.create_dirs("link/x").is_err());
        r.rename("a/b/n", "a/m").unwrap();
        assert!(p.join("a/m").is_file());
        r.remove("a/m", false).unwrap();
        r.remove("a/b", true).unwrap();
    }

    #[test]
    fn the_walk_refuses_what_openat2_refuses() {
        // Force the fallback for this process's later opens in this test
        // only by calling the walk directly.
        let d = tree(b"x");
        let p = d.path();
        let r = Root::open(p).unwrap();
        let walk = |rel: &str| -> std::io::Result<OwnedFd> {
            let comps = components(rel)?;
            let (last, parents) = comps.split_last().unwrap();
            let mut cur: Option<OwnedFd> = None;
            for c in parents {
                let at = cur.as_ref().map_or(r.fd.as_fd(), |f| f.as_fd());
                cur = Some(raw_openat(at, c, libc::O_PATH | libc::O_DIRECTORY, 0)?);
            }
            let at = cur.as_ref().map_or(r.fd.as_fd(), |f| f.as_fd());
            raw_openat(at, last, libc::O_RDONLY, 0)
        };
        assert!(walk("sub/f").is_ok());
        assert!(walk("link/f").is_err());
        assert!(walk("link").is_err());
    }
}
