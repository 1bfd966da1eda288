//! Crash cells that need more of the DR cycle than one verb: switchover's
//! other recovery (the peer fails over to the final set, then this site
//! runs `failback`), and a switch back (the site that failed over and took
//! sets switches over again, so its replica is the empty clone its
//! promoted live dataset left behind).

use super::*;

/// A switchover stopped dead at `fp`, recovered the other way: B fails
/// over to the final set named in A's switchover journal, then A runs
/// `failback`. Then: A standby, B primary of generation 2; A's sets are
/// what they were plus the final set; no journal on either site; A's
/// storage holds nothing half-made; B's next ship to A is incremental from
/// the final set with the data equal on both sites.
pub(super) fn peer_failover_cell(kind: Kind, fp: &str) {
    let (s, before) = switchover_stopped_at(kind, fp);
    let j: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.state('a').join("journal-switchover.json")).unwrap(),
    )
    .unwrap();
    let fin = j["intent"]["final_set"].as_str().unwrap().to_string();
    let f = snapsite_json(&s.b_cfg, &["failover", "--set", &fin, "--json"]);
    assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
    snapsite_json(&s.a_cfg, &["failback", "--json"]);
    // A demote plan recorded before the peer failed over keeps A in its
    // own generation; a failback's plan puts it in the peer's.
    let (ra, ga) = role_of(&s.a_cfg);
    assert!(ra == "standby" && (ga == 1 || ga == 2), "A: {ra} in {ga}");
    assert_eq!(role_of(&s.b_cfg), ("primary".to_string(), 2));
    no_journal(&s, 'a');
    no_journal(&s, 'b');
    check_sets_and_storage(&s, &before, &fin);
    ship_back(&s, &fin);
}

/// A switchover that ran through, B failed over and shipped its first set
/// back (so B's live dataset is promoted and its replica is an empty
/// clone); then B switches over back to A, stopped dead at `fp`, and is
/// rerun; A fails over to B's final set. Then: A primary of generation 3,
/// B its standby; no journal; B's replica is a promoted dataset (no
/// origin) whose newest snapshot is the final set; A's next ship to B is
/// incremental from it and commits.
pub(super) fn switchback_cell(kind: Kind, fp: &str) {
    let s = Sites::new(kind, false);
    counting_replay(&s);
    one_shipped(&s);
    name_replicas(&s);
    let so = snapsite_json(&s.a_cfg, &["switchover", "--json"]);
    let fin = so["final_set"].as_str().unwrap().to_string();
    snapsite_json(&s.b_cfg, &["failover", "--set", &fin, "--json"]);
    ship_back(&s, &fin);
    let b_peer = s.dir.join("b-peer.toml");
    for (i, r) in ROLES.iter().enumerate() {
        write_pattern(
            &s.dir.join("b").join(r).join("b-last"),
            0,
            40 + i as u64,
            64 << 10,
        );
    }
    let before = snapshot_of_both(&s);
    crash(&b_peer, &["switchover"], fp);
    let so = snapsite_json(&b_peer, &["switchover", "--json"]);
    let fin2 = so["final_set"].as_str().unwrap().to_string();
    let f = snapsite_json(
        &s.a_cfg,
        &["failover", "--set", &fin2, "--no-replay", "--json"],
    );
    assert_eq!(f["generation"].as_u64(), Some(3), "{f}");
    assert_eq!(role_of(&s.a_cfg), ("primary".to_string(), 3));
    assert_eq!(role_of(&s.b_cfg), ("standby".to_string(), 2));
    no_journal(&s, 'a');
    no_journal(&s, 'b');
    for site in ['a', 'b'] {
        let now = sets_kept(&s, site, &before);
        assert!(now.contains_key(&fin2), "site {site}: final set {fin2}");
    }
    if kind == Kind::Zfs {
        for r in ROLES {
            let rep = format!("{}/replica/{r}", s.b_name);
            assert_eq!(zfs_get("origin", &rep), "-", "{rep}: promoted");
            let newest = sh(&[
                "zfs",
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "snapshot",
                "-s",
                "createtxg",
                "-d",
                "1",
                &rep,
            ]);
            assert_eq!(
                newest.lines().last().map(str::trim),
                Some(format!("{rep}@{fin2}").as_str()),
                "{rep}: newest snapshot"
            );
            for o in s.objects('b') {
                assert!(
                    !o.contains("tmp") && !o.contains("orig"),
                    "site b: {o} half-made"
                );
            }
        }
    }
    // A ships to B: incremental from the final set, committed.
    s.write("mysql", "a-again", 50, 64 << 10);
    let a3 = s.snapshot();
    let shipped = snapsite_json(&s.a_cfg, &["ship", "--json"]);
    assert_eq!(shipped["committed"], serde_json::json!([a3]), "{shipped}");
    for x in shipped["snapshots"].as_array().unwrap() {
        assert_eq!(
            x["base"].as_str(),
            Some(fin2.as_str()),
            "incremental: {shipped}"
        );
    }
}
