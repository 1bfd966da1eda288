//! The DR cycle on real btrfs (loop devices): roles as recorded state with
//! generations, the split-brain guard, failback without a full resend, the
//! divergent data of the old primary kept, switchover with zero loss.

mod common;

use std::path::Path;

use common::shipcheck::assert_ships_only_changed;
use common::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `o`'s stderr says `needle` (else a panic showing the stderr).
#[track_caller]
fn assert_stderr_has(o: &std::process::Output, needle: &str) {
    assert!(stderr(o).contains(needle), "{}", stderr(o));
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
    let b_cfg = lab.standby_with_peer("standby-peer.toml");
    let m = json(&lab.ok(&b_cfg, &["snapshot", "--json"]));
    assert_eq!(m["generation"].as_u64(), Some(2), "{m}");
    // A role, once recorded, is not re-initialised.
    let o = lab.run(&b_cfg, &["role", "--init", "standby"]);
    assert!(!o.status.success());
    assert_stderr_has(&o, "already has a recorded role");
}

#[test]
fn a_site_recorded_as_standby_neither_ships_nor_is_shipped_to_as_primary() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    // B names A as its peer; recorded as standby, it does not ship.
    let b_cfg = lab.standby_with_peer("standby-peer.toml");
    lab.ok(&b_cfg, &["role", "--init", "standby"]);
    let o = lab.run(&b_cfg, &["ship"]);
    assert_eq!(o.status.code(), Some(1));
    assert_stderr_has(&o, "is a standby in generation 1");
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

fn send_size(path: &Path) -> u64 {
    btrfs_send(path, &[]).len() as u64
}

fn readonly(path: &Path) -> bool {
    sh(&[
        "btrfs",
        "property",
        "get",
        "-ts",
        path.to_str().unwrap(),
        "ro",
    ])
    .trim()
        == "ro=true"
}

const MIB: usize = 1 << 20;

#[test]
fn failback_ships_only_what_changed_and_switchover_back_loses_nothing() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    let b_cfg = lab.standby_with_peer("standby-peer.toml");
    // A, primary: a 16 MiB blob store, a database, a redolog; a set and a
    // redolog snapshot shipped.
    let (s, r) = lab.base_shipped(16 * MIB);
    // A goes on writing, cut off from B: a redolog snapshot B never gets.
    write_file(
        &lab.live("blob").join("a-late"),
        &random_bytes(5, 256 << 10),
    );
    write_file(
        &lab.live("redolog").join("log-a"),
        &random_bytes(6, 64 << 10),
    );
    let a1 = lab.snapshot(true)["id"].as_str().unwrap().to_string();

    // B fails over (generation 2); the writer goes on on B.
    let rep = json(&lab.ok(&lab.stb_cfg, &["failover", "--json"]));
    assert_eq!(rep["plan"]["redolog_set_id"].as_str(), Some(r.as_str()));
    let b_changed: [(&str, &str, usize, u64); 3] = [
        ("blob", "b1", 4 * MIB, 11),
        ("mysql", "b-db", MIB, 12),
        ("redolog", "log-b", 64 << 10, 13),
    ];
    for (role, f, len, seed) in b_changed {
        write_file(&lab.standby_live(role).join(f), &random_bytes(seed, len));
    }
    let changed: u64 = b_changed.iter().map(|x| x.2 as u64).sum();

    // A returns: the guard stops its ship; failback, dry run first.
    let shipped = lab.run(&lab.pri_cfg, &["ship"]);
    assert!(!shipped.status.success());
    let ship_err = String::from_utf8_lossy(&shipped.stderr).into_owned();
    assert!(ship_err.contains("refused"), "{ship_err}");
    // Failback asks the same peer who it is, and the peer (a primary now)
    // refuses that session too: expected there, so it is no error line on
    // the operator's terminal, and the plan says what the peer is.
    let dry = lab.run(&lab.pri_cfg, &["failback", "--dry-run"]);
    let dry_err = String::from_utf8_lossy(&dry.stderr).into_owned();
    let dry_out = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(dry.status.success(), "{dry_out}\n{dry_err}");
    assert!(
        !dry_err.contains("ERROR") && !dry_err.contains("refused"),
        "failback shows the peer's expected refusal as an error:\n{dry_err}"
    );
    assert!(dry_out.contains("primary"), "{dry_out}");
    let plan = json(&lab.ok(&lab.pri_cfg, &["failback", "--dry-run", "--json"]));
    for role in ROLES {
        let want = if role == "redolog" { &r } else { &s };
        assert_eq!(plan["base"][role].as_str(), Some(want.as_str()), "{plan}");
    }
    assert_eq!(plan["base_set"].as_str(), Some(s.as_str()));
    assert_eq!(plan["divergent_sets"], serde_json::json!([a1]));
    assert!(lab.live("blob").exists(), "a dry run changes nothing");
    let (_, a) = status(&lab.pri_cfg);
    assert_eq!(a["role"].as_str(), Some("primary"));

    let fb = json(&lab.ok(&lab.pri_cfg, &["failback", "--json"]));
    let label = fb["divergent"]["label"].as_str().unwrap().to_string();
    let (_, a) = status(&lab.pri_cfg);
    assert_eq!(
        (a["role"].as_str(), a["generation"].as_u64()),
        (Some("standby"), Some(2)),
        "{a}"
    );
    // A's data written after the base is kept, read-only, and listed.
    let kept = lab.pri.path(&format!("snap/blob/divergent-{label}"));
    assert!(readonly(&kept));
    assert_eq!(
        std::fs::read(kept.join("a-late")).unwrap(),
        random_bytes(5, 256 << 10)
    );
    assert!(
        lab.pri
            .path(&format!("snap/redolog/divergent-{label}/log-a"))
            .exists()
    );
    assert!(!lab.live("blob").exists(), "the live copy is removed");
    let sets = lab.ok(&lab.pri_cfg, &["sets"]);
    assert!(
        sets.contains(&format!("divergent-{label}")) && sets.contains(&a1),
        "{sets}"
    );

    // B ships its first set of generation 2: only what changed since the base.
    let b2 = json(&lab.ok(&b_cfg, &["snapshot", "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shipped = json(&lab.ok(&b_cfg, &["ship", "--json"]));
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for sn in shipped["snapshots"].as_array().unwrap() {
        assert!(sn["base"].is_string(), "every volume incremental: {sn}");
    }
    let payload = shipped["payload_bytes"].as_u64().unwrap();
    let full: u64 = ROLES
        .iter()
        .map(|r| send_size(&lab.stb.path(&format!("recv/{r}/{b2}"))))
        .sum();
    assert_ships_only_changed("btrfs", payload, changed, full);
    let got = lab.pri.path(&format!("snap/blob/{b2}/{b2}"));
    assert_eq!(tree_digest(&got), tree_digest(&lab.standby_live("blob")));

    // Switchover back to A: mail written just before it must not be lost.
    write_file(
        &lab.standby_live("blob").join("b-last"),
        &random_bytes(14, 128 << 10),
    );
    let b_final = tree_digest(&lab.standby_live("blob"));
    let t = std::time::Instant::now();
    let so = json(&lab.ok(&b_cfg, &["switchover", "--json"]));
    let fin = so["final_set"].as_str().unwrap().to_string();
    let rep = json(&lab.ok(&lab.pri_cfg, &["failover", "--set", &fin, "--json"]));
    let downtime = t.elapsed();
    assert_eq!(rep["generation"].as_u64(), Some(3));
    eprintln!(
        "SWITCHOVER btrfs: {:.2} s from the stopped application on B to the copies up on A (final set shipped {} bytes)",
        downtime.as_secs_f64(),
        so["ship_payload_bytes"]
    );
    assert_eq!(tree_digest(&lab.live("blob")), b_final, "zero loss");
    let (_, b) = status(&b_cfg);
    assert_eq!(
        (b["role"].as_str(), b["generation"].as_u64()),
        (Some("standby"), Some(2)),
        "{b}"
    );
    assert!(!lab.standby_live("blob").exists());
    assert!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .all(|l| !l.contains(&lab.dir.path().join("mnt-app").display().to_string())),
        "B's live mounts are gone"
    );
    // A ships to B again: only the new change, from the final set.
    write_file(
        &lab.live("blob").join("a-new"),
        &random_bytes(15, 512 << 10),
    );
    let a3 = lab.snapshot(false);
    assert_eq!(a3["generation"].as_u64(), Some(3));
    let shipped = lab.ship(&lab.pri_cfg);
    let p = shipped["payload_bytes"].as_u64().unwrap();
    assert!(p < 2 * (512 << 10), "{p}");
    for sn in shipped["snapshots"].as_array().unwrap() {
        assert_eq!(sn["base"].as_str(), Some(fin.as_str()), "{sn}");
    }
}

/// `scripts/demo --cycle`, short: the reference mail store on two btrfs
/// sites over ssh, through failover, failback and switchover back, every
/// message accounted for (see scripts/demo-cycle).
#[test]
fn cycle_drill_accounts_for_every_message() {
    require_real!();
    let missing = ["/usr/sbin/mariadbd", "/usr/sbin/sshd", "/usr/bin/ssh"]
        .into_iter()
        .find(|p| !Path::new(p).exists());
    if skip_because("cycle drill", missing.map(|p| format!("{p} is missing"))) {
        return;
    }
    let dir = var_tmp_dir("snapsite-cycle-");
    let demo = dir.path().join("cycle");
    let out_json = dir.path().join("cycle.json");
    let name = format!("sct{}", std::process::id() % 10000);
    let net = format!("10.234.{}", std::process::id() % 250 + 1);
    let (status, out, err) = run_demo(
        demo_command(&demo, &name, &net)
            .arg("--cycle")
            .env("B_SECONDS", "8")
            .env("CYCLE_JSON", &out_json),
        std::time::Duration::from_secs(360),
    );
    eprintln!("{out}");
    assert!(
        status.success(),
        "cycle drill failed ({status}):\n{out}\n{err}"
    );
    let v = json(&std::fs::read_to_string(&out_json).unwrap());
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(v["b_lost"].as_u64(), Some(0), "{v:#}");
    assert!(v["b_written"].as_u64().unwrap() >= 20, "{v:#}");
    assert_eq!(
        v["a_lost_kept_divergent"], v["a_lost_found_in_divergent"],
        "{v:#}"
    );
    let (p, c) = (
        v["failback_payload_bytes"].as_f64().unwrap(),
        v["changed_bytes"].as_f64().unwrap(),
    );
    assert!(p <= 1.1 * c + 65536.0, "{v:#}");
    assert!(p < v["full_send_bytes"].as_f64().unwrap(), "{v:#}");
    assert_has_all(
        &out,
        &[
            "split-brain guard",
            "failback",
            "switchover",
            "cycle timeline",
        ],
    );
    // Cleaned up.
    assert!(!sh(&["ip", "netns", "list"]).contains(&name));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&demo.display().to_string()),
        "mounts left behind"
    );
    assert!(!demo.exists());
}

#[test]
fn a_standby_never_commits_a_set_of_an_older_generation() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    // A set taken in generation 1, not shipped yet.
    let old = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    assert_eq!(lab.snapshot(true)["generation"].as_u64(), Some(1));
    // Both sites have since moved on to generation 3 (recorded roles).
    let now = "2026-11-30T00:00:00Z";
    for (state, role) in [("state-pri", "primary"), ("state-stb", "standby")] {
        std::fs::create_dir_all(lab.dir.path().join(state)).unwrap();
        std::fs::write(
            lab.dir.path().join(state).join("role.json"),
            format!(
                "{{\"role\":\"{role}\",\"generation\":3,\"since\":\"{now}\",\"how\":\"test\"}}"
            ),
        )
        .unwrap();
    }
    // The guard lets the ship start (3 is not older than 3); the primary
    // does not send the generation-1 sets, which the standby (in
    // generation 3, as a standby that followed a new primary is) would
    // refuse to commit. serve's own refusal of such a commit stays, for a
    // forged session.
    let o = lab.run(&lab.pri_cfg, &["ship", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!lab.standby_manifests().contains(&format!("{old}.json")));
    // A set of generation 3 ships and commits.
    let new = lab.snapshot(false);
    assert_eq!(new["generation"].as_u64(), Some(3));
    let new = new["id"].as_str().unwrap().to_string();
    lab.ok(&lab.pri_cfg, &["ship"]);
    assert!(lab.standby_manifests().contains(&format!("{new}.json")));
    assert!(!lab.standby_manifests().contains(&format!("{old}.json")));
}
