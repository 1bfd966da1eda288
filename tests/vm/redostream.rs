//! Redolog streaming (issues 17 and 22) on real ZFS and LVM thin (ext4 on
//! the LV), file-level, so the same steps as on btrfs (tests/redostream.rs):
//!
//! - `tail`: ship a set, follow the redolog (appends, a rollover into
//!   archive/) into the standby's spool, then `snapsite failover`: the
//!   redolog copy must equal the primary's files, and the report must carry
//!   the stream's recovery point;
//! - `device`, `fifo`, `socket`, `filelink`, `dirlink`: the redolog
//!   snapshot's `redo.log` (or a directory on the way to a spooled file) is
//!   a block device node, a FIFO, a socket or a symbolic link while the
//!   spool continues it. Failover must refuse the spool before reading or
//!   writing through it: the report says which file and why, nothing
//!   outside the copy changes (the device stays zeros, the symlinks'
//!   targets hold the bytes a follower of them would have matched and
//!   extended), and the copy is exactly the snapshot.
//!
//! One lab per backend (the pools or VGs are the costly part under TCG):
//! every case is its own pair of sites (primary volume, standby replica and
//! copy, state directories) on the same pools or volume groups.

use super::redolog::{
    Log, assert_device_zeroed, checkpoint_then_roll, stream_recovery_point, tree_state,
};
use super::*;

use snapsite::base::config::Config;
use snapsite::primary::follower::{self, FollowerHandle};

const STREAM: &str =
    "[stream]\nfiles = [\"redo.log\", \"archive/redo-*.log\"]\nflush_interval = \"200ms\"\n";

pub(super) use super::redolog::wait_acked;

/// The spool's base: the redolog at `root` (`Log::new`) written by
/// `prepare`, a set snapshot shipped; then the follower starts and 30 more
/// lines are streamed and acknowledged. Returns the primary's config, the
/// log and the running follower.
fn base_then_stream(
    pri_cfg: &Path,
    root: &Path,
    prepare: impl FnOnce(&mut Log),
) -> (Config, Log, FollowerHandle) {
    let cfg = Config::load(pri_cfg).unwrap();
    let mut log = Log::new(root);
    prepare(&mut log);
    snapsite_ok(pri_cfg, &["snapshot"]);
    snapsite_ok(pri_cfg, &["ship"]);
    let follower = follower::start_follower(&cfg).expect("[stream] is on");
    log.append(30);
    wait_acked(&cfg, jiff::Timestamp::now());
    (cfg, log, follower)
}

/// The common steps once both configs exist and `root` is the primary's
/// mounted redolog volume; `copy` is where failover mounts the redolog copy.
fn stream_and_fail_over(pri_cfg: &Path, stb_cfg: &Path, root: &Path, copy: &Path) {
    let (cfg, mut log, follower) = base_then_stream(pri_cfg, root, |log| log.append(40));
    log.rollover();
    log.append(20);
    wait_acked(&cfg, jiff::Timestamp::now());
    // The standby's checkpoint reads the committed snapshot (mounted read-only).
    let serve_log = Config::load(stb_cfg).unwrap().state_dir.join("serve.log");
    let ok = |args: &[&str]| snapsite_ok(pri_cfg, args);
    let last = checkpoint_then_roll(&cfg, &ok, &serve_log, &mut log, (15, 5));
    drop(follower);
    let want = tree_state(root);
    let report = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    assert_eq!(tree_state(copy), want, "redolog copy = primary's files");
    stream_recovery_point(&report, last, "failover");
    assert!(report["stream"]["events_applied"].as_u64().unwrap() >= 3);
}

/// Issue 22, case 1: the redolog snapshot's `redo.log` is a block device
/// node (here of a loop device over a file of zeros, standing for a disk
/// of the standby) while the spool has appends to `redo.log`. The
/// checkpoint refuses to match it, and failover writes nothing to the
/// device: the report says the spool was not used and why.
fn device_redo_and_fail_over(pri_cfg: &Path, stb_cfg: &Path, root: &Path, copy: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (_, _, follower) = base_then_stream(pri_cfg, root, |log| log.append(20));
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
    let stb_state = Config::load(stb_cfg).unwrap().state_dir;
    assert!(stb_state.join("spool/broken.json").exists());
    let report = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    let not_used = report["stream"]["not_used"].as_str().unwrap_or_default();
    assert!(
        not_used.contains("redo.log") && not_used.contains("unchanged"),
        "{report}"
    );
    let m = std::fs::symlink_metadata(copy.join("redo.log")).unwrap();
    assert_eq!(m.rdev(), rdev, "the copy's redo.log is the snapshot's node");
    assert_device_zeroed(&victim.path, 4 * MIB as usize);
}

/// `src`'s first half written to `dst`: what a symlink's target holds, so
/// that a spool followed through the link would match it and append.
fn half_copy(src: &Path, dst: &Path) {
    let b = std::fs::read(src).unwrap();
    std::fs::write(dst, &b[..b.len() / 2]).unwrap();
}

/// One case on one pair of sites: the primary's redolog files at `root`
/// (mounted), failover's copy at `copy`, symlink targets in `outside`.
fn special_case(
    case: &str,
    want: &[&str],
    pri_cfg: &Path,
    stb_cfg: &Path,
    root: &Path,
    copy: &Path,
) {
    let outside = pri_cfg.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // The spool's base holds `archive/redo-*.log` and `redo.log`; the
    // stream then appends and rolls over once more.
    let (cfg, mut log, follower) = base_then_stream(pri_cfg, root, |log| {
        log.append(20);
        log.rollover();
        log.append(10);
    });
    log.rollover();
    log.append(5);
    wait_acked(&cfg, jiff::Timestamp::now());
    drop(follower);
    let redo = root.join("redo.log");
    match case {
        "fifo" => {
            std::fs::remove_file(&redo).unwrap();
            nix::unistd::mkfifo(&redo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        "socket" => {
            std::fs::remove_file(&redo).unwrap();
            // The socket file stays when the listener closes.
            drop(std::os::unix::net::UnixListener::bind(&redo).unwrap());
        }
        "filelink" => {
            half_copy(&redo, &outside.join("redo.log"));
            std::fs::remove_file(&redo).unwrap();
            std::os::unix::fs::symlink(outside.join("redo.log"), &redo).unwrap();
        }
        "dirlink" => {
            for e in std::fs::read_dir(root.join("archive")).unwrap().flatten() {
                half_copy(&e.path(), &outside.join(e.file_name()));
            }
            std::fs::rename(root.join("archive"), root.join("archive.real")).unwrap();
            std::os::unix::fs::symlink(&outside, root.join("archive")).unwrap();
        }
        _ => unreachable!("{case}"),
    }
    File::open(root).unwrap().sync_all().unwrap();
    snapsite_ok(pri_cfg, &["snapshot", "--redolog"]);
    snapsite_ok(pri_cfg, &["ship"]);
    let snap = tree_state(root);
    let outside_before = tree_state(&outside);
    let stb_state = Config::load(stb_cfg).unwrap().state_dir;
    // The commit-time checkpoint refused the snapshot too.
    assert!(
        stb_state.join("spool/broken.json").exists(),
        "{case}: no spool/broken.json"
    );
    let t = Instant::now();
    let report = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    eprintln!("{case}: failover {:.1}s", t.elapsed().as_secs_f64());
    let not_used = report["stream"]["not_used"].as_str().unwrap_or_default();
    for w in want {
        assert!(not_used.contains(w), "{case}: want `{w}` in {report}");
    }
    assert_eq!(
        report["stream"]["events_applied"].as_u64(),
        Some(0),
        "{case}: {report}"
    );
    assert_eq!(
        tree_state(&outside),
        outside_before,
        "{case}: outside the copy changed"
    );
    assert_eq!(
        tree_state(copy),
        snap,
        "{case}: the copy is not the snapshot"
    );
}

/// The cases, each on its own pair of sites: `tail` streams and applies the
/// spool; the others are refused, and the report must name these words.
/// The last two run only with `SNAPSITE_VM_FULL=1` ([`vm_full`]): a socket
/// takes the refusal a FIFO and a device node take (not a regular file),
/// a symlinked `redo.log` the one a symlinked directory on the way takes,
/// and tests/redostream.rs runs every class on btrfs on every run.
const CASES: [(&str, &[&str]); 6] = [
    ("tail", &[]),
    ("device", &["redo.log", "unchanged"]),
    ("fifo", &["redo.log", "FIFO", "unchanged"]),
    ("dirlink", &["archive", "symbolic link", "unchanged"]),
    ("socket", &["redo.log", "socket", "unchanged"]),
    ("filelink", &["redo.log", "symbolic link", "unchanged"]),
];

/// [`CASES`] this run takes: all with `SNAPSITE_VM_FULL=1`, else the first four.
fn cases() -> &'static [(&'static str, &'static [&'static str])] {
    if vm_full() { &CASES } else { &CASES[..4] }
}

/// Runs `case` on its pair of sites (configs, the primary's mounted redolog
/// files at `root`, failover's copy at `copy`).
fn run_case(case: &str, want: &[&str], pri_cfg: &Path, stb_cfg: &Path, root: &Path, copy: &Path) {
    let t = Instant::now();
    match case {
        "tail" => stream_and_fail_over(pri_cfg, stb_cfg, root, copy),
        "device" => device_redo_and_fail_over(pri_cfg, stb_cfg, root, copy),
        _ => special_case(case, want, pri_cfg, stb_cfg, root, copy),
    }
    eprintln!("{case}: {:.1}s", t.elapsed().as_secs_f64());
}

/// `dir/standby.toml` and `dir/primary.toml` of one case: the redolog
/// volume `pri_vol` streamed from `root` to the standby's `stb_vol`.
fn case_configs(dir: &Path, pri_vol: &str, stb_vol: &str, root: &Path) -> (PathBuf, PathBuf) {
    site_configs(
        dir,
        pri_vol,
        stb_vol,
        STREAM,
        Standby::Serve,
        &format!("{STREAM}root = \"{}\"\n", root.display()),
    )
}

/// One case of a lab: its name, both sites' configs, the primary's mounted
/// redolog files and where failover mounts the copy.
pub(super) type Case<'a> = &'a dyn Fn(&str, &Path, &Path, &Path, &Path);

/// A ZFS lab ("rs" for the cases, another name for the crash cells) with one
/// pair of sites per name in `names`, each handed to `case`.
pub(super) fn zfs_lab(lab: &str, names: &[&str], case: Case) {
    let lab = ZfsSites::new(lab, 256 * MIB, 512 * MIB);
    let (a, c) = (&lab.a, &lab.c);
    for &name in names {
        let dir = lab.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let src = a.dataset(&format!("redolog-{name}"));
        sh(&["zfs", "create", &src]);
        let live = c.dataset(&format!("live-{name}"));
        sh(&["zfs", "create", "-o", "mountpoint=none", &live]);
        let root = zfs_mountpoint(&src);
        let copy = dir.join("app/redolog");
        let pri_vol =
            format!("[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"{src}\"\n");
        let stb_vol = format!(
            "[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"{live}/redolog\"\nreplica = \"{}\"\nmountpoint = \"{}\"\n",
            c.dataset(&format!("replica/{name}")),
            copy.display()
        );
        let (pri_cfg, stb_cfg) = case_configs(&dir, &pri_vol, &stb_vol, &root);
        case(name, &pri_cfg, &stb_cfg, &root, &copy);
        let _ = run(&["zfs", "destroy", "-r", &live]);
    }
}

/// The LVM thin twin of [`zfs_lab`] (ext4 on each redolog LV).
pub(super) fn lvm_lab(lab: &str, names: &[&str], case: Case) {
    let lab = LvmSites::new(lab, 1024 * MIB, "512M");
    let mut mounts = Unmount(vec![]);
    for &name in names {
        let dir = lab.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let lv = format!("redo{name}");
        lab.primary_thin(&lv, "32M");
        let root = dir.join("pri-redolog");
        mount_ext4(&lab.pri.dev(&lv), &root);
        let copy = dir.join("app/redolog");
        mounts.0.extend([copy.clone(), root.clone()]);
        let pri_vol = format!(
            "[[volume]]\nrole = \"redolog\"\nbackend = \"lvm\"\nsource = \"{}\"\n",
            lab.pri.lv(&lv)
        );
        let stb_vol = format!(
            "[[volume]]\nrole = \"redolog\"\nbackend = \"lvm\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}\"\n",
            lab.stb.lv(&format!("{name}live")),
            lab.stb.lv(name),
            copy.display()
        );
        let (pri_cfg, stb_cfg) = case_configs(&dir, &pri_vol, &stb_vol, &root);
        case(name, &pri_cfg, &stb_cfg, &root, &copy);
    }
    drop(mounts);
}

/// The names of [`cases`], and a runner that looks up each one's `want`.
fn run_cases(lab: fn(&str, &[&str], Case)) {
    let names: Vec<&str> = cases().iter().map(|(c, _)| *c).collect();
    lab("rs", &names, &|case, pri_cfg, stb_cfg, root, copy| {
        let want = cases().iter().find(|(c, _)| *c == case).unwrap().1;
        run_case(case, want, pri_cfg, stb_cfg, root, copy)
    });
}

#[test]
fn zfs_redostream_failover_applies_the_tail_and_refuses_special_redo_files() {
    require_lab!();
    run_cases(zfs_lab);
}

#[test]
fn lvm_redostream_failover_applies_the_tail_and_refuses_special_redo_files() {
    require_lab!();
    run_cases(lvm_lab);
}
