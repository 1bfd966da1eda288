//! The spool-apply points (`spool_apply.*`) on real ZFS and LVM thin: the
//! `[stream]` lab of tests/vm/redostream.rs (one redolog volume, the
//! follower spooling its appends and a rollover to the standby), then the
//! standby's `failover` stopped dead inside the apply and rerun. The
//! redolog copy must equal the primary's files, with no scratch directory
//! left in it.

use super::*;
use std::sync::Mutex;

/// The failpoint of the cell running now (the lab takes a plain `fn`).
static POINT: Mutex<&'static str> = Mutex::new("");

pub(super) fn spool_apply_cell(kind: Kind, fp: &'static str) {
    *POINT.lock().unwrap() = fp;
    match kind {
        Kind::Zfs => crate::redostream::zfs_lab("sp", &["cell"], &crash_the_apply),
        Kind::Lvm => crate::redostream::lvm_lab("sp", &["cell"], &crash_the_apply),
    }
}

fn crash_the_apply(_case: &str, pri_cfg: &Path, stb_cfg: &Path, root: &Path, copy: &Path) {
    use crate::redolog::{Log, tree_state as tree};
    use crate::redostream::wait_acked;
    let fp = *POINT.lock().unwrap();
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
    // A redolog set: the standby's checkpoint ties the spool to it.
    snapsite_ok(pri_cfg, &["snapshot", "--redolog"]);
    snapsite_ok(pri_cfg, &["ship"]);
    log.append(15);
    log.rollover();
    log.append(5);
    let last = jiff::Timestamp::now();
    wait_acked(&cfg, last);
    drop(follower);
    let want = tree(root);
    crash(stb_cfg, &["failover", "--no-replay"], fp);
    let report = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    assert_eq!(tree(copy), want, "{fp}: redolog copy = primary's files");
    assert!(
        !copy.join(".snapsite-spool-apply").exists(),
        "{fp}: the apply's scratch directory is left"
    );
    crate::redolog::stream_recovery_point(&report, last, fp);
    let (role, generation) = role_of(stb_cfg);
    assert_eq!((role.as_str(), generation), ("primary", 2), "{fp}");
    let st = snapsite::base::config::Config::load(stb_cfg)
        .unwrap()
        .state_dir;
    for e in std::fs::read_dir(&st).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !n.starts_with("journal-") && !n.contains(".tmp"),
            "{fp}: left {n}"
        );
    }
}
