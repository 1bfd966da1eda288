//! Issue 22 on ZFS and LVM thin: the redolog snapshot's `redo.log` (or a
//! directory on the way to a spooled file) is a FIFO, a socket or a
//! symbolic link, while the standby's spool continues it. Failover must
//! refuse the spool before reading or writing through it: the report says
//! which file and why, nothing outside the copy changes (the symlinks'
//! targets hold the bytes a follower of them would have matched and
//! extended), and the copy is exactly the snapshot. The device-node case
//! is in `redostream.rs`; the same classes on btrfs are in
//! tests/redostream.rs.
//!
//! One lab per backend: every case is its own pair of sites (primary
//! volume, standby replica and copy, state directories) on the same pools
//! or volume groups.

use super::redostream::{Log, STREAM, wait_acked};
use super::*;

use std::collections::BTreeMap;

/// The cases: (name, what the report must name).
const CASES: [(&str, &[&str]); 4] = [
    ("fifo", &["redo.log", "FIFO", "unchanged"]),
    ("socket", &["redo.log", "socket", "unchanged"]),
    ("filelink", &["redo.log", "symbolic link", "unchanged"]),
    ("dirlink", &["archive", "symbolic link", "unchanged"]),
];

/// Every entry below `root` (not following symlinks): its type, the hash of
/// a regular file, a symlink's target; special files are never opened.
fn tree_state(root: &Path) -> BTreeMap<String, String> {
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
                format!("file {}", sha256(&p))
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
    let cfg = snapsite::base::config::Config::load(pri_cfg).unwrap();
    let outside = pri_cfg.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    // The spool's base holds `archive/redo-*.log` and `redo.log`; the
    // stream then appends and rolls over once more.
    let mut log = Log::new(root);
    log.append(20);
    log.rollover();
    log.append(10);
    snapsite_ok(pri_cfg, &["snapshot"]);
    snapsite_ok(pri_cfg, &["ship"]);
    let follower = snapsite::primary::follower::start_follower(&cfg).expect("[stream] is on");
    log.append(30);
    wait_acked(&cfg, jiff::Timestamp::now());
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
    let stb_state = snapsite::base::config::Config::load(stb_cfg)
        .unwrap()
        .state_dir;
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

#[test]
fn zfs_failover_refuses_special_redo_files() {
    require_lab!();
    let lab = ZfsSites::new("sp", 256 * MIB, 512 * MIB);
    let (a, c) = (&lab.a, &lab.c);
    for (case, want) in CASES {
        let dir = lab.dir.join(case);
        std::fs::create_dir_all(&dir).unwrap();
        let src = a.dataset(&format!("redolog-{case}"));
        sh(&["zfs", "create", &src]);
        let live = c.dataset(&format!("live-{case}"));
        sh(&["zfs", "create", "-o", "mountpoint=none", &live]);
        let root = zfs_mountpoint(&src);
        let copy = dir.join("app/redolog");
        let pri_vol =
            format!("[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"{src}\"\n");
        let stb_vol = format!(
            "[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"{live}/redolog\"\nreplica = \"{}\"\nmountpoint = \"{}\"\n",
            c.dataset(&format!("replica/{case}")),
            copy.display()
        );
        let (pri_cfg, stb_cfg) = site_configs(
            &dir,
            &pri_vol,
            &stb_vol,
            STREAM,
            Standby::Serve,
            &format!("{STREAM}root = \"{}\"\n", root.display()),
        );
        special_case(case, want, &pri_cfg, &stb_cfg, &root, &copy);
        let _ = run(&["zfs", "destroy", "-r", &live]);
    }
}

#[test]
fn lvm_failover_refuses_special_redo_files() {
    require_lab!();
    let lab = LvmSites::new("sp", 1024 * MIB, "512M");
    let mut mounts = Unmount(vec![]);
    for (case, want) in CASES {
        let dir = lab.dir.join(case);
        std::fs::create_dir_all(&dir).unwrap();
        let lv = format!("redo{case}");
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
            lab.stb.lv(&format!("{case}live")),
            lab.stb.lv(case),
            copy.display()
        );
        let (pri_cfg, stb_cfg) = site_configs(
            &dir,
            &pri_vol,
            &stb_vol,
            STREAM,
            Standby::Serve,
            &format!("{STREAM}root = \"{}\"\n", root.display()),
        );
        special_case(case, want, &pri_cfg, &stb_cfg, &root, &copy);
    }
    drop(mounts);
}
