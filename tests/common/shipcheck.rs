//! What the failback cycles (tests/cycle.rs on btrfs, tests/vm/cycle.rs on
//! ZFS and LVM thin, which includes this file by path) require of B's first
//! ship after a failback.

/// B's first ship after the failback carried `payload` bytes for the
/// `changed` bytes written since the base: within 10 % of them, and under a
/// third of a full send (`full`, estimated on LVM).
pub fn assert_ships_only_changed(backend: &str, payload: u64, changed: u64, full: u64) {
    eprintln!(
        "FAILBACK {backend}: shipped {payload} bytes for {changed} bytes changed since the base ({:.3}x); a full send is about {full} bytes ({:.3} of it)",
        payload as f64 / changed as f64,
        payload as f64 / full as f64
    );
    assert!(
        payload as f64 <= 1.1 * changed as f64,
        "{payload} vs {changed}"
    );
    assert!(payload * 3 < full, "{payload} vs full {full}");
}
