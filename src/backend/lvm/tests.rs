use super::*;

fn r(begin: u64, length: u64) -> BlockRange {
    BlockRange { begin, length }
}

#[test]
fn delta_becomes_byte_extents() {
    let d = Delta {
        block_size: 65536,
        ranges: vec![
            (DeltaKind::Same, r(0, 16)),
            (DeltaKind::Different, r(16, 16)),
            (DeltaKind::RightOnly, r(32, 2)),
            (DeltaKind::LeftOnly, r(48, 4)),
            (DeltaKind::RightOnly, r(1023, 4)), // past the end: clamped
        ],
    };
    let e = delta_extents(&d, 64 << 20);
    assert_eq!(
        e,
        vec![
            Extent {
                offset: 1 << 20,
                len: (1 << 20) + 2 * 65536,
                data: true
            },
            Extent {
                offset: 3 << 20,
                len: 4 * 65536,
                data: false
            },
            Extent {
                offset: 1023 * 65536,
                len: 65536,
                data: true
            },
        ]
    );
}

#[test]
fn overwritten_blocks_are_the_different_ones_sampled_evenly_beyond_the_cap() {
    let d = Delta {
        block_size: 65536,
        ranges: vec![
            (DeltaKind::Different, r(16, 16)),
            (DeltaKind::RightOnly, r(32, 2)),
            (DeltaKind::Different, r(40, 1)),
            (DeltaKind::Different, r(1023, 4)), // past the end: clamped
        ],
    };
    let o = overwritten_of(&d, 64 << 20);
    assert!(o.all);
    assert_eq!(o.bytes, (16 + 1 + 1) * 65536);
    assert_eq!(
        o.ranges,
        vec![
            (1 << 20, 1 << 20),
            (40 * 65536, 65536),
            (1023 * 65536, 65536)
        ]
    );
    // Three times the cap of ranges, every other block: a third listed,
    // spread over the device, the total exact.
    let n = 3 * format::MAX_OVERWRITTEN_RANGES as u64;
    let d = Delta {
        block_size: 65536,
        ranges: (0..n)
            .map(|i| (DeltaKind::Different, r(2 * i, 1)))
            .collect(),
    };
    let o = overwritten_of(&d, 1 << 40);
    assert!(!o.all);
    assert_eq!(o.bytes, n * 65536);
    assert_eq!(o.ranges.len(), format::MAX_OVERWRITTEN_RANGES);
    assert_eq!(o.ranges[1], (6 * 65536, 65536));
    let h = serde_json::to_vec(&o).unwrap();
    assert!(h.len() < 40 << 10, "{} bytes of header", h.len());
}

#[test]
fn snapshots_are_named_and_tagged() {
    let mk = |name: &str, tags: &[&str]| LvInfo {
        name: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    let all = vec![
        mk(
            "data.20261127T090000.456Z-full",
            &["snapsite", "snapsite-set-20261127T090000.456Z-full"],
        ),
        mk(
            "data.20261127T080000.123Z-full",
            &["snapsite", "snapsite-set-20261127T080000.123Z-full"],
        ),
        // not tagged: someone's LV with a lookalike name
        mk("data.20261127T070000.000Z-full", &[]),
        mk("data", &["snapsite", "snapsite-replica"]),
        mk(
            "data2.20261127T080000.123Z-full",
            &["snapsite-set-20261127T080000.123Z-full"],
        ),
    ];
    assert_eq!(
        snapshots_of(&all, "data"),
        vec!["20261127T080000.123Z-full", "20261127T090000.456Z-full"]
    );
    assert!(check_uuid("aWuivk-zyKd-8Tko-IYJJ-eeA3-f2gg-z1NQXu").is_ok());
    assert!(check_uuid("x,snapsite-replica").is_err());
}

#[test]
fn chain_is_the_replica_and_the_live_source() {
    let mk = |name: &str| {
        let id = name.split_once('.').map(|x| x.1).unwrap_or("");
        LvInfo {
            name: name.into(),
            tags: vec!["snapsite".into(), format!("{SET_TAG}{id}")],
            ..Default::default()
        }
    };
    let s1 = "20261127T080000.000Z-full";
    let s2 = "20261127T090000.000Z-full";
    let s3 = "20261127T100000.000Z-full";
    let mut all = vec![
        mk(&format!("rep.{s1}")),
        mk(&format!("rep.{s2}")),
        mk(&format!("live.{s3}")),
        // a divergent LV's sets are nobody's
        mk(&format!("live-divergent-x.{s3}")),
    ];
    // no live LV: only the replica's (a set of a removed LV is not listed)
    assert_eq!(chain_of(&all, "rep", "live"), vec![s1, s2]);
    all.push(mk("live"));
    assert_eq!(chain_of(&all, "rep", "live"), vec![s1, s2, s3]);
    // a primary without replica: home == source
    assert_eq!(chain_of(&all, "live", "live"), vec![s3]);
}

#[test]
fn only_suspended_lvm_devices_of_the_vg() {
    // the shape of `dmsetup info -c --noheadings --separator '\t'
    // -o name,suspended,uuid`; the real output is exercised by the VM
    // test lvm::lvm_a_snapshot_killed_mid_lvcreate_...
    let out = "vg--a-mysql\tSuspended\tLVM-abc\n\
               vg--a-pool-tpool\tSuspended\tLVM-abc-tpool\n\
               vg--a-blob\tActive\tLVM-abd\n\
               vg--ab-x\tSuspended\tLVM-zzz\n\
               vg--a-crypt\tSuspended\tCRYPT-LUKS2-1\n";
    assert_eq!(
        parse_suspended(out, "vg-a"),
        ["vg--a-mysql", "vg--a-pool-tpool"]
    );
    assert_eq!(dm_prefix("vg-a"), "vg--a-");
    assert!(parse_suspended(out, "other").is_empty());
}
