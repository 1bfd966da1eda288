//! Redolog streaming (issue 17) on real ZFS and LVM thin (ext4 on the LV):
//! ship a set, follow the redolog (appends, a rollover into archive/) into
//! the standby's spool, then `snapsite failover`: the redolog copy must equal
//! the primary's files, and the report must carry the stream's recovery
//! point. File-level, so the same steps as on btrfs (tests/redostream.rs).

use super::*;

use std::collections::BTreeMap;

pub(super) const STREAM: &str =
    "[stream]\nfiles = [\"redo.log\", \"archive/redo-*.log\"]\nflush_interval = \"200ms\"\n";

/// Appends fsynced lines to `root/redo.log`, rolls it over into `archive/`.
pub(super) struct Log {
    root: PathBuf,
    n: u64,
}

impl Log {
    pub(super) fn new(root: &Path) -> Log {
        std::fs::create_dir_all(root.join("archive")).unwrap();
        std::fs::write(root.join("redo.log"), b"").unwrap();
        Log {
            root: root.to_path_buf(),
            n: 0,
        }
    }
    pub(super) fn append(&mut self, k: usize) {
        let mut f = OpenOptions::new()
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
    pub(super) fn rollover(&mut self) {
        std::fs::rename(
            self.root.join("redo.log"),
            self.root.join(format!("archive/redo-{:08}.log", self.n)),
        )
        .unwrap();
        std::fs::write(self.root.join("redo.log"), b"").unwrap();
        File::open(&self.root).unwrap().sync_all().unwrap();
    }
}

pub(super) fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for rel in ["redo.log", "archive"] {
        let p = root.join(rel);
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                let name = format!("archive/{}", e.file_name().to_string_lossy());
                out.insert(name, sha256(&e.path()));
            }
        } else if p.exists() {
            out.insert(rel.to_string(), sha256(&p));
        }
    }
    out
}

pub(super) fn wait_acked(cfg: &snapsite::base::config::Config, after: jiff::Timestamp) {
    wait_for("the follower to catch up", Duration::from_secs(60), || {
        snapsite::primary::follower::follower_record(cfg)
            .is_some_and(|r| r.acked_as_of.is_some_and(|a| a > after) && r.lag_bytes == 0)
    });
}

/// The common steps once both configs exist and `root` is the primary's
/// mounted redolog volume; `copy` is where failover mounts the redolog copy.
fn stream_and_fail_over(pri_cfg: &Path, stb_cfg: &Path, root: &Path, copy: &Path) {
    let cfg = snapsite::base::config::Config::load(pri_cfg).unwrap();
    let mut log = Log::new(root);
    log.append(40);
    snapsite_ok(pri_cfg, &["snapshot"]);
    snapsite_ok(pri_cfg, &["ship"]);
    let follower = snapsite::primary::follower::start_follower(&cfg).expect("[stream] is on");
    log.append(30);
    wait_acked(&cfg, jiff::Timestamp::now());
    log.rollover();
    log.append(20);
    wait_acked(&cfg, jiff::Timestamp::now());
    snapsite_ok(pri_cfg, &["snapshot", "--redolog"]);
    snapsite_ok(pri_cfg, &["ship"]);
    // The standby's checkpoint read the committed snapshot (mounted read-only).
    let stb_state = snapsite::base::config::Config::load(stb_cfg)
        .unwrap()
        .state_dir;
    let serve_log = std::fs::read_to_string(stb_state.join("serve.log")).unwrap();
    assert!(serve_log.contains("spooled events; dropped"), "{serve_log}");
    log.append(15);
    log.rollover();
    log.append(5);
    let last = jiff::Timestamp::now();
    wait_acked(&cfg, last);
    drop(follower);
    let want = tree(root);
    let report = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    assert_eq!(tree(copy), want, "redolog copy = primary's files");
    let stream_rp: jiff::Timestamp = report["stream"]["recovery_point"]
        .as_str()
        .unwrap_or_else(|| panic!("no stream recovery point: {report}"))
        .parse()
        .unwrap();
    assert!(stream_rp > last, "{report}");
    assert!(report["stream"]["events_applied"].as_u64().unwrap() >= 3);
}

/// Issue 22, case 1: the redolog snapshot's `redo.log` is a block device
/// node (here of a loop device over a file of zeros, standing for a disk
/// of the standby) while the spool has appends to `redo.log`. The
/// checkpoint refuses to match it, and failover writes nothing to the
/// device: the report says the spool was not used and why.
fn device_redo_and_fail_over(pri_cfg: &Path, stb_cfg: &Path, root: &Path, copy: &Path) {
    use std::os::unix::fs::MetadataExt;
    let cfg = snapsite::base::config::Config::load(pri_cfg).unwrap();
    let mut log = Log::new(root);
    log.append(20);
    snapsite_ok(pri_cfg, &["snapshot"]);
    snapsite_ok(pri_cfg, &["ship"]);
    let follower = snapsite::primary::follower::start_follower(&cfg).expect("[stream] is on");
    log.append(30);
    wait_acked(&cfg, jiff::Timestamp::now());
    drop(follower);
    let backing = sparse_file(&unique_name("victim"), 4 * MIB);
    let victim = LoopDevice::attach(&backing);
    let rdev = std::fs::metadata(&victim.path).unwrap().rdev();
    std::fs::remove_file(root.join("redo.log")).unwrap();
    nix::sys::stat::mknod(
        &root.join("redo.log"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        rdev,
    )
    .unwrap();
    File::open(root).unwrap().sync_all().unwrap();
    snapsite_ok(pri_cfg, &["snapshot", "--redolog"]);
    snapsite_ok(pri_cfg, &["ship"]);
    let stb_state = snapsite::base::config::Config::load(stb_cfg)
        .unwrap()
        .state_dir;
    assert!(stb_state.join("spool/broken.json").exists());
    let report = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    let not_used = report["stream"]["not_used"].as_str().unwrap_or_default();
    assert!(
        not_used.contains("redo.log") && not_used.contains("unchanged"),
        "{report}"
    );
    let m = std::fs::symlink_metadata(copy.join("redo.log")).unwrap();
    assert_eq!(m.rdev(), rdev, "the copy's redo.log is the snapshot's node");
    let mut dev = vec![0u8; 4 * MIB as usize];
    File::open(&victim.path)
        .unwrap()
        .read_exact(&mut dev)
        .unwrap();
    assert!(
        dev.iter().all(|b| *b == 0),
        "bytes were written to the device"
    );
}

/// Both sites' configs, the primary's redolog files and where failover
/// mounts the copy, handed to `scenario`.
pub(super) type Scenario = fn(&Path, &Path, &Path, &Path);

#[test]
fn zfs_redostream_failover_appends_the_streamed_tail() {
    require_lab!();
    zfs_lab(stream_and_fail_over);
}

#[test]
fn zfs_redostream_failover_writes_nothing_to_a_device_node() {
    require_lab!();
    zfs_lab(device_redo_and_fail_over);
}

pub(super) fn zfs_lab(scenario: Scenario) {
    let lab = ZfsSites::new("rs", 256 * MIB, 512 * MIB);
    let (a, c, dir) = (&lab.a, &lab.c, &lab.dir);
    sh(&["zfs", "create", &a.dataset("redolog")]);
    sh(&["zfs", "create", "-o", "mountpoint=none", &c.dataset("live")]);
    let root = zfs_mountpoint(&a.dataset("redolog"));
    let stb_vol = format!(
        "[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/app/redolog\"\n",
        c.dataset("live/redolog"),
        c.dataset("replica/redolog"),
        dir.display()
    );
    let (pri_cfg, stb_cfg) = site_configs(
        dir,
        &lab.primary_volume("redolog", ""),
        &stb_vol,
        STREAM,
        Standby::Serve,
        &format!("{STREAM}root = \"{}\"\n", root.display()),
    );
    let copy = dir.join("app/redolog");
    scenario(&pri_cfg, &stb_cfg, &root, &copy);
    let _ = run(&["zfs", "destroy", "-r", &c.dataset("live/redolog")]);
}

#[test]
fn lvm_redostream_failover_appends_the_streamed_tail() {
    require_lab!();
    lvm_lab(stream_and_fail_over);
}

#[test]
fn lvm_redostream_failover_writes_nothing_to_a_device_node() {
    require_lab!();
    lvm_lab(device_redo_and_fail_over);
}

pub(super) fn lvm_lab(scenario: Scenario) {
    let lab = LvmSites::new("rs", 1024 * MIB, "512M");
    lab.primary_thin("redolog", "64M");
    let dir = &lab.dir;
    let root = dir.join("pri-redolog");
    mount_ext4(&lab.pri.dev("redolog"), &root);
    let copy = dir.join("app/redolog");
    let _unmount = Unmount(vec![copy.clone(), root.clone()]);
    let (pri_cfg, stb_cfg) = site_configs(
        dir,
        &lab.primary_volume("redolog", ""),
        &lab.standby_volume("redolog", Some(&copy)),
        STREAM,
        Standby::Serve,
        &format!("{STREAM}root = \"{}\"\n", root.display()),
    );
    scenario(&pri_cfg, &stb_cfg, &root, &copy);
}
