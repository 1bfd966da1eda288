//! A primary clock that steps back must not lose mail: sets are ordered by
//! their sequence (ids are a logical clock), `ship` still sends what was
//! taken after the step, the standby's failover uses it, and the step is
//! reported. Real btrfs; the clock is stepped with SNAPSITE_TEST_CLOCK_OFFSET.

mod common;

use common::*;

fn snapshot_at(lab: &Lab, offset: &str, redolog: bool) -> (serde_json::Value, String) {
    let mut args = vec!["snapshot", "--json"];
    if redolog {
        args.push("--redolog");
    }
    let out = run_snapsite(
        &lab.pri_cfg,
        &args,
        &[
            ("SNAPSITE_TEST_CLOCK_OFFSET", offset),
            ("SNAPSITE_LOG", "snapsite=warn"),
        ],
    );
    assert!(
        out.status.success(),
        "snapshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clock_stepping_back_keeps_order_and_loses_nothing() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    lab.fill_same(1, 64 * 1024);
    let (f1, _) = snapshot_at(&lab, "", false);
    lab.ship(&lab.pri_cfg);

    // The clock steps back an hour; mail goes on being written.
    write_file(&lab.live("redolog").join("after-step"), b"op 1\n");
    let (f2, warn) = snapshot_at(&lab, "-1h", false);
    assert!(
        warn.contains("clock is behind"),
        "a clock that stepped back is reported: {warn}"
    );
    write_file(&lab.live("redolog").join("after-step"), b"op 1\nop 2\n");
    let (r2, _) = snapshot_at(&lab, "-1h", true);
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().to_string();
    let seq = |v: &serde_json::Value| v["seq"].as_u64().unwrap();
    assert!(
        id(&f2) > id(&f1) && id(&r2) > id(&f2),
        "ids keep the order sets were taken in"
    );
    assert!(seq(&f1) < seq(&f2) && seq(&f2) < seq(&r2));
    // Member times are the (stepped) clock's: from_time stays early, never late.
    let t = |v: &serde_json::Value| {
        v["members"][0]["before"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert!(t(&f2) < t(&f1));

    let rep = lab.ship(&lab.pri_cfg);
    let committed = json_strs(&rep["committed"]);
    assert_eq!(
        committed,
        vec![id(&f2), id(&r2)],
        "sets taken after the step are shipped"
    );

    let plan: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["set_id"], id(&f2), "{plan}");
    assert_eq!(plan["redolog_set_id"], id(&r2), "{plan}");

    // The clock is right again: the next redolog snapshot still comes after.
    write_file(
        &lab.live("redolog").join("after-step"),
        b"op 1\nop 2\nop 3\n",
    );
    let (r3, _) = snapshot_at(&lab, "", true);
    assert!(id(&r3) > id(&r2));
    lab.ship(&lab.pri_cfg);
    let plan: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["redolog_set_id"], id(&r3), "{plan}");
    let rep = lab.ok(&lab.stb_cfg, &["failover", "--json"]);
    let rep: serde_json::Value = serde_json::from_str(&rep).unwrap();
    assert_eq!(rep["plan"]["redolog_set_id"], id(&r3), "{rep}");
    assert_eq!(
        std::fs::read(lab.standby_live("redolog").join("after-step")).unwrap(),
        b"op 1\nop 2\nop 3\n"
    );
}
