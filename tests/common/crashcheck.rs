//! What the crash matrices (tests/crash_matrix.rs on btrfs,
//! tests/vm/crash.rs on ZFS and LVM thin, which includes this file by
//! path) require of a command stopped at a failpoint, and of a failover's
//! copies: each mounted once where the application looks.

use std::path::Path;
use std::process::Output;

/// `what` (the command that ran, `o` its output) was stopped dead at
/// failpoint `fp`: it failed, and its stderr says where it stopped.
#[track_caller]
pub fn assert_stopped_at(o: &Output, what: &str, fp: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "{what} went through although stopped at {fp}:\n{err}"
    );
    assert!(
        err.contains(&format!("stopped at failpoint {fp}")),
        "{what} did not stop at {fp} ({}):\n{err}",
        o.status
    );
}

/// Each of `roles` is mounted exactly once at `mnt/<role>` in `mounts`
/// (the mount points the caller listed below `mnt`).
#[track_caller]
pub fn assert_mounted_once(mounts: &[String], mnt: &Path, roles: &[&str]) {
    for r in roles {
        let at = mnt.join(r).display().to_string();
        assert_eq!(
            mounts.iter().filter(|m| **m == at).count(),
            1,
            "{r} mounted once: {mounts:?}"
        );
    }
}

/// After a prune cell: of A's four sets `f` (`f[0]` and `f[2]` shipped),
/// with a grid keeping only the newest, A's committed sets `a` are the
/// common one and the newest, B's `b` the newest it holds.
#[track_caller]
pub fn assert_pruned_to_newest(f: &[String], a: Vec<String>, b: Vec<String>) {
    assert_eq!(
        a,
        vec![f[2].clone(), f[3].clone()],
        "A keeps the common and the newest set"
    );
    assert_eq!(b, vec![f[2].clone()], "B keeps the newest set");
}
