//! The DR cycle on real btrfs (loop devices): roles as recorded state with
//! generations, the split-brain guard, failback without a full resend, the
//! divergent data of the old primary kept, switchover with zero loss.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Site B's config with a peer: the same volumes as the standby's, and a
/// `[standby]` section reaching site A (the lab's primary) through the
/// local transport.
fn b_with_peer(lab: &Lab) -> PathBuf {
    let p = lab.dir.path().join("standby-peer.toml");
    let base = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    std::fs::write(
        &p,
        format!(
            "{base}\n[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            lab.pri_cfg.display()
        ),
    )
    .unwrap();
    p
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn status(cfg: &Path) -> (i32, serde_json::Value) {
    let o = run_snapsite(cfg, &["status", "--json"], &[]);
    (o.status.code().unwrap_or(-1), json(&stdout(&o)))
}

#[test]
fn failover_starts_a_generation_and_the_old_primary_refuses_to_ship() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    write_file(&lab.live("blob").join("m1"), &random_bytes(1, 4096));
    let s1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);

    // Before: the config decides (A has a [standby]), generation 1 on both.
    let (_, a) = status(&lab.pri_cfg);
    assert_eq!(
        (a["role"].as_str(), a["generation"].as_u64()),
        (Some("primary"), Some(1))
    );
    let (_, b) = status(&lab.stb_cfg);
    assert_eq!(
        (b["role"].as_str(), b["generation"].as_u64()),
        (Some("standby"), Some(1))
    );
    // Welcome carried B's role and generation: A recorded its peer.
    assert_eq!(a["peer"]["generation"].as_u64(), Some(1), "{a}");
    assert_eq!(a["peer"]["role"].as_str(), Some("standby"), "{a}");

    // A set taken on A carries generation 1.
    let m = lab.snapshot(true);
    assert_eq!(m["generation"].as_u64(), Some(1));

    let rep = json(&lab.ok(&lab.stb_cfg, &["failover", "--json"]));
    assert_eq!(rep["plan"]["set_id"].as_str(), Some(s1.as_str()));
    assert_eq!(rep["generation"].as_u64(), Some(2), "{rep}");
    let (_, b) = status(&lab.stb_cfg);
    assert_eq!(
        (b["role"].as_str(), b["generation"].as_u64()),
        (Some("primary"), Some(2)),
        "{b}"
    );
    assert_eq!(b["role_record"]["how"].as_str(), Some("failover"));
    let role = lab.ok(&lab.stb_cfg, &["role"]);
    assert!(role.contains("primary in generation 2"), "{role}");

    // A comes back and ships: refused by the guard, nothing reaches B.
    let before = lab.standby_manifests();
    let o = lab.run(&lab.pri_cfg, &["ship"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("split-brain guard") && e.contains("generation 2"),
        "{e}"
    );
    assert_eq!(lab.standby_manifests(), before, "B received nothing");
    let o = lab.run(&lab.pri_cfg, &["ship", "--dry-run"]);
    assert!(!o.status.success());
    // A's status is critical and says why.
    let (code, a) = status(&lab.pri_cfg);
    assert_eq!(code, 2, "{a}");
    let msgs = a["findings"].to_string();
    assert!(msgs.contains("split-brain guard"), "{msgs}");
    assert_eq!(a["peer"]["generation"].as_u64(), Some(2));
    let text = stdout(&lab.run(&lab.pri_cfg, &["status"]));
    assert!(
        text.contains("role             primary in generation 1"),
        "{text}"
    );
    assert!(text.contains("said primary in generation 2"), "{text}");

    // B, now primary with A as its peer, takes sets in generation 2.
    let b_cfg = b_with_peer(&lab);
    let m = json(&lab.ok(&b_cfg, &["snapshot", "--json"]));
    assert_eq!(m["generation"].as_u64(), Some(2), "{m}");
    // A role, once recorded, is not re-initialised.
    let o = lab.run(&b_cfg, &["role", "--init", "standby"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("already has a recorded role"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_site_recorded_as_standby_neither_ships_nor_is_shipped_to_as_primary() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    // B names A as its peer; recorded as standby, it does not ship.
    let b_cfg = b_with_peer(&lab);
    lab.ok(&b_cfg, &["role", "--init", "standby"]);
    let o = lab.run(&b_cfg, &["ship"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is a standby in generation 1"),
        "{}",
        stderr(&o)
    );
    // And it still receives from A.
    lab.snapshot(false);
    let r = lab.ship(&lab.pri_cfg);
    assert_eq!(r["committed"].as_array().map(|a| a.len()), Some(1), "{r}");
    // A site recorded as primary receives nothing: serve refuses.
    let a2 = lab.primary_variant(
        "a-to-b",
        &format!("transport = \"local\"\nconfig = \"{}\"", b_cfg.display()),
    );
    let st = lab.dir.path().join("state-stb/role.json");
    let mut rec = json(&std::fs::read_to_string(&st).unwrap());
    rec["role"] = "primary".into();
    std::fs::write(&st, rec.to_string()).unwrap();
    lab.snapshot(true);
    let o = lab.run(&a2, &["ship"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("split-brain guard") && e.contains("primary"),
        "{e}"
    );
    let log = std::fs::read_to_string(lab.dir.path().join("state-stb/serve.log")).unwrap();
    assert!(log.contains("session refused"), "{log}");
}
