//! A stand-in for the mail store's redolog, and a view of a file tree, for
//! the redolog-stream tests on btrfs (tests/redostream.rs) and in the
//! storage VM (tests/vm/redostream.rs, which includes this file by path).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use snapsite::base::config::Config;
use snapsite::primary::follower;

/// Appends fsynced lines to `root/redo.log`, rolls it over into `archive/`.
pub struct Log {
    root: PathBuf,
    pub n: u64,
}

impl Log {
    pub fn new(root: &Path) -> Log {
        std::fs::create_dir_all(root.join("archive")).unwrap();
        std::fs::write(root.join("redo.log"), b"").unwrap();
        Log {
            root: root.to_path_buf(),
            n: 0,
        }
    }

    pub fn append(&mut self, k: usize) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root.join("redo.log"))
            .unwrap();
        for _ in 0..k {
            self.n += 1;
            writeln!(
                f,
                "record {} {}",
                self.n,
                "y".repeat((self.n % 89) as usize)
            )
            .unwrap();
        }
        f.sync_data().unwrap();
    }

    pub fn rollover(&mut self) {
        std::fs::rename(
            self.root.join("redo.log"),
            self.root.join(format!("archive/redo-{:08}.log", self.n)),
        )
        .unwrap();
        std::fs::write(self.root.join("redo.log"), b"").unwrap();
        File::open(&self.root).unwrap().sync_all().unwrap();
    }
}

/// Every entry below `root` (not following symlinks): its type, the hash of
/// a regular file, a symlink's target; special files are never opened.
pub fn tree_state(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::FileTypeExt;
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut ents: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            let v = if t.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if t.is_file() {
                let hash = blake3::hash(&std::fs::read(&p).unwrap());
                format!("file {}", hash.to_hex())
            } else if t.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if t.is_fifo() {
                "fifo".into()
            } else if t.is_socket() {
                "socket".into()
            } else {
                "device".into()
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Wait (at most 60 s) until the primary's follower (config `cfg`) has an
/// acknowledgement newer than `after` and no lag.
pub fn wait_acked(cfg: &Config, after: jiff::Timestamp) {
    let t = std::time::Instant::now();
    loop {
        let rec = follower::follower_record(cfg);
        if let Some(r) = &rec {
            if r.acked_as_of.is_some_and(|a| a > after) && r.lag_bytes == 0 {
                return;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the follower did not catch up: {rec:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redolog snapshot taken and shipped (`ok` runs snapsite with the
/// primary's config): the standby's checkpoint drops what its spool held,
/// as its serve log (`serve_log`) says. Then `log` streams on across a
/// rollover, `before` lines and `after` lines, until the follower
/// (config `cfg`) caught up. Returns the time of the last write.
pub fn checkpoint_then_roll(
    cfg: &Config,
    ok: &dyn Fn(&[&str]) -> String,
    serve_log: &Path,
    log: &mut Log,
    (before, after): (usize, usize),
) -> jiff::Timestamp {
    ok(&["snapshot", "--redolog"]);
    ok(&["ship"]);
    let text = std::fs::read_to_string(serve_log).unwrap();
    assert!(text.contains("spooled events; dropped"), "{text}");
    log.append(before);
    log.rollover();
    log.append(after);
    let last = jiff::Timestamp::now();
    wait_acked(cfg, last);
    last
}

/// The first `len` bytes of device `dev`, read through the device, are all
/// zero: a refused redolog copy wrote nothing to it.
pub fn assert_device_zeroed(dev: &Path, len: usize) {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    File::open(dev).unwrap().read_exact(&mut buf).unwrap();
    assert!(
        buf.iter().all(|b| *b == 0),
        "bytes were written to the device"
    );
}

/// A failover report's stream recovery point (`stream.recovery_point`),
/// which must be later than `after` (the last write the follower had
/// acknowledged); `case` names the case in a failure.
pub fn stream_recovery_point(
    report: &serde_json::Value,
    after: jiff::Timestamp,
    case: &str,
) -> jiff::Timestamp {
    let rp: jiff::Timestamp = report["stream"]["recovery_point"]
        .as_str()
        .unwrap_or_else(|| panic!("{case}: no stream recovery point: {report}"))
        .parse()
        .unwrap();
    assert!(rp > after, "{case}: {report}");
    rp
}
