//! What the failover drills (tests/drill.rs, `scripts/demo` on btrfs;
//! tests/vm/drill.rs on ZFS and LVM thin, which includes this file by
//! path) require of the drill's verdict and of the replay's arguments.

/// The verdict `v` (the drill's `VERDICT_JSON`) says nothing was lost:
/// the stores agree, replay exited 0, every mail acknowledged before the
/// recovery point (at least 20 of them) was recovered, and recovered plus
/// lost is what was written. Returns how many were written.
#[track_caller]
pub fn assert_zero_loss(v: &serde_json::Value) -> u64 {
    assert_eq!(v["zero_loss"], true, "{v:#}");
    assert_eq!(v["stores_agree"], true, "{v:#}");
    assert_eq!(v["replay_exit"], 0, "{v:#}");
    assert_eq!(
        v["lost_older_than_recovery_point"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "{v:#}"
    );
    let written = v["written"].as_u64().unwrap();
    let before = v["before_recovery_point"].as_u64().unwrap();
    assert!(
        before >= 20,
        "the drill should have acknowledged mail before the recovery point: {v:#}"
    );
    assert_eq!(v["before_recovery_point_recovered"].as_u64(), Some(before));
    assert_eq!(
        v["recovered"].as_u64().unwrap() + v["lost"].as_u64().unwrap(),
        written
    );
    written
}

/// `s` is a time in zmplayredo's `--fromTime` format,
/// `yyyy/MM/dd HH:mm:ss.SSS`.
pub fn is_zmplayredo_time(s: &str) -> bool {
    let shape = "dddd/dd/dd dd:dd:dd.ddd";
    s.len() == shape.len()
        && s.chars().zip(shape.chars()).all(|(c, p)| match p {
            'd' => c.is_ascii_digit(),
            lit => c == lit,
        })
}
