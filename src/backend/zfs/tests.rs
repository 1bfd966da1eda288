use super::*;

/// Output captured from OpenZFS 2.1.11 and 2.3.2 by
/// tests/fixtures/capture-zfs.sh (run in the storage VM).
fn fixture(version: &str, name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("zfs-{version}"))
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn parses_captured_zfs_2_1_and_2_3_output() {
    for v in ["2.1", "2.3"] {
        assert!(
            fixture(v, "version.txt").starts_with(&format!("zfs-{v}.")),
            "{v}"
        );
        assert_eq!(
            parse_snapshot_list("cap/mysql", &fixture(v, "list-snapshots.txt")),
            vec!["20261127T080000.000Z-full", "20261127T081500.000Z-redolog"],
            "{v}: the manual snapshot is not ours"
        );
        let guid = parse_value(&fixture(v, "get-guid.txt")).unwrap();
        assert!(
            guid.len() > 10 && guid.chars().all(|c| c.is_ascii_digit()),
            "{v}: {guid}"
        );
        assert_eq!(parse_value(&fixture(v, "get-token-none.txt")), None, "{v}");
        assert_eq!(
            parse_value(&fixture(v, "get-token-after-abort.txt")),
            None,
            "{v}"
        );
        let token = parse_value(&fixture(v, "get-token.txt")).unwrap();
        assert!(check_token(&token).is_ok(), "{v}");
        assert_eq!(
            parse_token_toname(&fixture(v, "send-nv-token.txt")).as_deref(),
            Some("cap/mysql@20261127T090000.000Z-full"),
            "{v}"
        );
        assert_eq!(
            parse_holds(&fixture(v, "holds.txt")),
            vec![(
                "cap/mysql@20261127T080000.000Z-full".to_string(),
                HOLD_TAG.to_string()
            )],
            "{v}"
        );
    }
}

fn begin_fixture(name: &str) -> Vec<u8> {
    let hex = fixture("2.3", name);
    let hex = hex.trim();
    assert_eq!(hex.len(), 2 * BEGIN_RECORD_LEN, "{name}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn captured_guids() -> (u64, u64) {
    let text = fixture("2.3", "guids.txt");
    let g = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    (g("S1 "), g("S2 "))
}

const S1: &str = "20261127T080000.000Z-full";
const S2: &str = "20261127T090000.000Z-full";

/// First records of real `zfs send` streams from OpenZFS 2.3.2
/// (tests/fixtures/capture-zfs-send.sh in the storage VM).
#[test]
fn begin_record_of_captured_streams() {
    let (g1, g2) = captured_guids();
    let full = parse_begin(&begin_fixture("send-full.hex")).unwrap();
    assert!(!full.compound);
    assert_eq!(full.toname, format!("caps/mysql@{S1}"));
    assert_eq!((full.toguid, full.fromguid), (g1, 0));
    assert_eq!(full.objset_type, DMU_OST_ZFS);
    assert!(check_begin(&full, S1, None, Some(g1)).is_ok());

    let inc = parse_begin(&begin_fixture("send-incremental.hex")).unwrap();
    assert!(!inc.compound);
    assert_eq!((inc.toguid, inc.fromguid), (g2, g1));
    assert!(check_begin(&inc, S2, Some(g1), Some(g2)).is_ok());
    // the wrong name, base, guid or kind is refused
    let e = check_begin(&inc, "20261127T100000.000Z-full", Some(g1), None).unwrap_err();
    assert!(e.contains("carries snapshot"), "{e}");
    let e = check_begin(&inc, S2, Some(g1 ^ 1), None).unwrap_err();
    assert!(e.contains("the base here has guid"), "{e}");
    let e = check_begin(&inc, S2, None, None).unwrap_err();
    assert!(e.contains("announced as a full stream"), "{e}");
    let e = check_begin(&full, S1, Some(g1), None).unwrap_err();
    assert!(e.contains("is a full stream"), "{e}");
    assert!(check_begin(&inc, S2, Some(g1), Some(g1)).is_err());

    // the resumed incremental is a substream of the same snapshot
    let res = parse_begin(&begin_fixture("send-resume.hex")).unwrap();
    assert!(!res.compound);
    assert!(res.payload_len > 0, "resume nvlist");
    assert!(check_begin(&res, S2, Some(g1), Some(g2)).is_ok());

    // -p, -R and -I make compound streams: refused
    for (f, snap) in [
        ("send-props-incremental.hex", S2),
        ("send-replicate-full.hex", S1),
        ("send-intermediates.hex", S2),
    ] {
        let b = parse_begin(&begin_fixture(f)).unwrap();
        assert!(b.compound, "{f}");
        let e = check_begin(&b, snap, None, None).unwrap_err();
        assert!(e.contains("replication package"), "{f}: {e}");
    }
}

#[test]
fn begin_record_garbage_and_byte_order() {
    let rec = begin_fixture("send-full.hex");
    assert!(
        parse_begin(&rec[..100])
            .unwrap_err()
            .contains("ended after 100")
    );
    let mut bad = rec.clone();
    bad[8] ^= 0xff;
    assert!(parse_begin(&bad).unwrap_err().contains("magic"));
    // Parsed, then refused: a clone's stream (flag), a zvol's (type 1).
    let flag_clone = |r: &mut Vec<u8>| r[36] |= DRR_FLAG_CLONE as u8;
    let zvol = |r: &mut Vec<u8>| r[32] = 1;
    for (change, refusal) in [
        (&flag_clone as &dyn Fn(&mut Vec<u8>), "clone"),
        (&zvol, "filesystem"),
    ] {
        let mut r = rec.clone();
        change(&mut r);
        let e = check_begin(&parse_begin(&r).unwrap(), S1, None, None).unwrap_err();
        assert!(e.contains(refusal), "{refusal}: {e}");
    }
    // A big-endian sender's record: every field swapped.
    let mut be = rec.clone();
    for (o, n) in [
        (0, 4),
        (4, 4),
        (8, 8),
        (16, 8),
        (24, 8),
        (32, 4),
        (36, 4),
        (40, 8),
        (48, 8),
    ] {
        be[o..o + n].reverse();
    }
    assert_eq!(parse_begin(&be).unwrap(), parse_begin(&rec).unwrap());
}

#[test]
fn copy_check_names_an_unloaded_key() {
    let never = || -> Result<Option<String>> { panic!("not asked for a plain dataset") };
    let c = copy_check("mysql", "p/r/mysql", Some("off"), &never, &never).unwrap();
    assert_eq!(c.problem, None);
    assert!(c.checked.contains("not encrypted"), "{c:?}");
    let loaded = || Ok(Some("available".to_string()));
    let c = copy_check("mysql", "p/r/mysql", Some("aes-256-gcm"), &loaded, &never).unwrap();
    assert_eq!(c.problem, None);
    assert!(c.checked.contains("key is loaded"), "{c:?}");
    let unloaded = || Ok(Some("unavailable".to_string()));
    let root = || Ok(Some("p/r/mysql".to_string()));
    let c = copy_check("mysql", "p/r/mysql", Some("aes-256-gcm"), &unloaded, &root).unwrap();
    let p = c.problem.expect("a problem");
    assert!(
        p.contains("volume `mysql`") && p.contains("zfs load-key p/r/mysql"),
        "{p}"
    );
}

#[test]
fn pool_capacity() {
    assert_eq!(pool_capacity_problem("tank", "4\n"), None);
    let p = pool_capacity_problem("tank", "93\n").unwrap();
    assert!(p.contains("tank is 93% full"), "{p}");
    assert_eq!(pool_capacity_problem("tank", "garbage"), None);
}

#[test]
fn one_listing_of_several_datasets() {
    let dss = vec!["tank/rep".to_string(), "tank/live".to_string()];
    // name, guid, receive_resume_token; -d 1 also shows a child dataset
    let text = "tank/rep\t111\t1-abc-def\n\
tank/rep@20261127T080000.000Z-full\t201\t-\n\
tank/rep/child\t112\t-\n\
tank/rep@manual\t202\t-\n\
tank/live\t113\t-\n\
tank/live@20261127T080000.000Z-full\t301\t-\n\
tank/live@20261127T090000.000Z-full\t302\t-\n\
tank/other@20261127T090000.000Z-full\t401\t-\n";
    let l = parse_dataset_listing(&dss, text);
    assert_eq!(
        l.exists.iter().collect::<Vec<_>>(),
        ["tank/live", "tank/rep"]
    );
    assert_eq!(
        l.tokens.get("tank/rep").map(String::as_str),
        Some("1-abc-def")
    );
    assert!(!l.tokens.contains_key("tank/live"));
    assert!(l.has_snap("tank/rep", "manual"));
    assert!(!l.has_snap("tank/other", "20261127T090000.000Z-full"));
    assert_eq!(
        l.guid("tank/live", "20261127T090000.000Z-full"),
        Some("302")
    );

    // a volume with a replica: both datasets, creation order, set ids
    // only; the live source's guid where both have the snapshot
    let cfg = crate::base::config::Config::parse(
        "site = \"s\"\nstate_dir = \"/var/lib/snapsite-zfs-test\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"zfs\"\nsource = \"tank/live\"\nreplica = \"tank/rep\"\n",
        std::path::Path::new("/x.toml"),
    )
    .unwrap();
    let vol = cfg.volume("redolog").unwrap().clone();
    let v = volume_listing(&vol, &l);
    assert_eq!(
        v.snapshots,
        [
            "20261127T080000.000Z-full",
            "20261127T080000.000Z-full",
            "20261127T090000.000Z-full"
        ]
    );
    assert_eq!(v.ids["20261127T080000.000Z-full"], "301");
    assert_eq!(v.resumable.unwrap().token, "1-abc-def");

    // only missing datasets may fail a listing
    let missing = "cannot open 'tank/live': dataset does not exist\n";
    assert!(only_missing_datasets(&dss, missing));
    assert!(!only_missing_datasets(
        &dss,
        "cannot open 'tank/x': dataset does not exist\n"
    ));
    assert!(!only_missing_datasets(
        &dss,
        "internal error: out of memory\n"
    ));
}

#[test]
fn snapshot_list_keeps_only_our_names() {
    let text = "tank/mysql@20261127T080000.000Z-full\ntank/mysql@manual\ntank/mysql@20261127T081500.000Z-redolog\ntank/mysqlx@20261127T080000.000Z-full\n";
    assert_eq!(
        parse_snapshot_list("tank/mysql", text),
        vec!["20261127T080000.000Z-full", "20261127T081500.000Z-redolog"]
    );
}

#[test]
fn chain_lists_both_datasets_in_creation_order() {
    let dss = vec!["tank/rep".to_string(), "tank/live".to_string()];
    let text = "tank/rep@20261127T080000.000Z-full\ntank/live@20261127T090000.000Z-full\ntank/live@manual\ntank/live-divergent-x@20261127T093000.000Z-full\ntank/rep2@20261127T100000.000Z-full\ntank/live@20261127T085000.000Z-redolog\n";
    assert_eq!(
        parse_chain(&dss, text),
        vec![
            (
                "20261127T080000.000Z-full".to_string(),
                "tank/rep@20261127T080000.000Z-full".to_string()
            ),
            (
                "20261127T090000.000Z-full".to_string(),
                "tank/live@20261127T090000.000Z-full".to_string()
            ),
            (
                "20261127T085000.000Z-redolog".to_string(),
                "tank/live@20261127T085000.000Z-redolog".to_string()
            ),
        ]
    );
    assert_eq!(
        divergent_dataset("tank/live", "L1"),
        "tank/live-divergent-L1"
    );
    assert!(crate::backend::check_label("20261130T091500.123Z").is_ok());
    for bad in ["", "-x", ".x", "a/b", "a@b", "a b"] {
        assert!(crate::backend::check_label(bad).is_err(), "{bad}");
    }
}

#[test]
fn values_and_tokens() {
    assert_eq!(parse_value("-\n"), None);
    assert_eq!(parse_value("1234\n").as_deref(), Some("1234"));
    assert!(check_token("1-c740b4e5e-e0-789c636064000310a5").is_ok());
    assert!(check_token("1-x; rm -rf /").is_err());
    assert_eq!(
        parse_holds("tank/a@s1\tsnapsite-common\tWed Nov 27 2026\n"),
        vec![("tank/a@s1".to_string(), "snapsite-common".to_string())]
    );
}

#[test]
fn clones_get_the_protective_receive_overrides() {
    // A reordered RECEIVE_OVERRIDES must not change what a clone gets.
    let want = [
        "readonly=on",
        "canmount=noauto",
        "mountpoint=none",
        "exec=off",
        "setuid=off",
        "devices=off",
    ];
    let got: Vec<&str> = CLONE_OVERRIDES
        .chunks(2)
        .map(|p| {
            assert_eq!(p[0], "-o", "{CLONE_OVERRIDES:?}");
            p[1]
        })
        .collect();
    assert_eq!(got, want);
}
