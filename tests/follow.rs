//! Three sites on real btrfs (loop devices): A ships to standbys B and C;
//! A dies, B fails over, C follows B (`snapsite follow`), and B's first
//! ship to C is incremental from the newest set both held. What C had
//! received from A beyond that set is kept, set aside, never destroyed.
//! Then the crash cells: `follow` stopped dead at each of its failpoints
//! (`SNAPSITE_FAILPOINT`, exit 86), rerun, and the same invariants checked
//! after every cell (the style of tests/crash_matrix.rs).

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use snapsite::base::failpoint;

const MIB: usize = 1 << 20;

/// A, B (the lab's primary and standby) and C, a second standby of A.
struct ThreeSites {
    // Fields drop in order: C's filesystem before the lab's temp dir.
    c: BtrfsFs,
    /// C's config once its [standby] reaches B (the runbook's edit).
    c_follow_cfg: PathBuf,
    /// A's config shipping to C.
    a_to_c: PathBuf,
    /// B's config shipping to C (after its failover).
    b_to_c: PathBuf,
    lab: Lab,
}

fn local(cfg: &Path) -> String {
    format!("transport = \"local\"\nconfig = \"{}\"", cfg.display())
}

impl ThreeSites {
    fn new() -> ThreeSites {
        let lab = Lab::with_roles(&ROLES, "600M", "[\"true\"]");
        let c = BtrfsFs::new(lab.dir.path(), "c", "600M");
        let d = lab.dir.path();
        // C: the standby's config with its own site name, state and storage.
        let mut c_toml = String::from("site = \"c\"\n");
        c_toml.push_str(&format!(
            "state_dir = \"{}\"\n",
            d.join("state-c").display()
        ));
        for r in ROLES {
            c_toml.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{}\"\nsnapshot_dir = \"{}\"\nmountpoint = \"{}\"\n",
                c.path(&format!("live/{r}")).display(),
                c.path(&format!("recv/{r}")).display(),
                d.join("mnt-c").join(r).display()
            ));
        }
        c_toml.push_str("\n[replay]\ncommand = [\"true\"]\n");
        let c_cfg = d.join("c.toml");
        std::fs::write(&c_cfg, &c_toml).unwrap();
        let c_follow_cfg = d.join("c-follow.toml");
        std::fs::write(
            &c_follow_cfg,
            format!("{c_toml}\n[standby]\n{}\n", local(&lab.stb_cfg)),
        )
        .unwrap();
        let a_to_c = lab.primary_variant("a-to-c", &local(&c_cfg));
        let b_to_c = d.join("b-to-c.toml");
        let b_toml = std::fs::read_to_string(&lab.stb_cfg).unwrap();
        std::fs::write(&b_to_c, format!("{b_toml}\n[standby]\n{}\n", local(&c_cfg))).unwrap();
        ThreeSites {
            c,
            c_follow_cfg,
            a_to_c,
            b_to_c,
            lab,
        }
    }

    fn c_recv(&self, role: &str) -> PathBuf {
        self.c.path(&format!("recv/{role}"))
    }
}

/// What the scenario leaves for the checks.
struct Story {
    /// The full set and the redolog set both B and C hold.
    s: String,
    r: String,
    /// A's set only C received.
    a1: String,
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// B's first ship to C: one set, committed alone, every volume `role`
/// incremental from `base(role)`, C's copy of the blob store what B holds.
/// Returns (the set, the ship report).
fn b_ships_to_c(t: &ThreeSites, base: &dyn Fn(&str) -> String) -> (String, serde_json::Value) {
    let lab = &t.lab;
    let b2 = json(&lab.ok(&t.b_to_c, &["snapshot", "--json"]))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shipped = json(&lab.ok(&t.b_to_c, &["ship", "--json"]));
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for sn in shipped["snapshots"].as_array().unwrap() {
        let want = base(sn["role"].as_str().unwrap());
        assert_eq!(sn["base"].as_str(), Some(want.as_str()), "{sn}");
    }
    let got = t.c_recv("blob").join(&b2).join(&b2);
    assert_eq!(tree_digest(&got), tree_digest(&lab.standby_live("blob")));
    (b2, shipped)
}

/// A writes and ships to B and C; then one more set to C alone; A dies,
/// B fails over. Returns the set ids.
fn story(t: &ThreeSites) -> Story {
    let lab = &t.lab;
    let (s, r) = lab.base_shipped(8 * MIB);
    lab.ship(&t.a_to_c);
    // The link to B is down; C still gets one more set.
    write_file(
        &lab.live("blob").join("a-late"),
        &random_bytes(5, 256 << 10),
    );
    let a1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&t.a_to_c);
    // A dies; B fails over to generation 2.
    let rep = json(&lab.ok(&lab.stb_cfg, &["failover", "--json"]));
    assert_eq!(rep["generation"].as_u64(), Some(2), "{rep}");
    Story { s, r, a1 }
}

/// B writes this much after its failover; returns the bytes changed.
fn b_writes(t: &ThreeSites) -> u64 {
    let changed: [(&str, &str, usize, u64); 3] = [
        ("blob", "b1", 3 * MIB, 11),
        ("mysql", "b-db", MIB, 12),
        ("redolog", "log-b", 64 << 10, 13),
    ];
    for (role, f, len, seed) in changed {
        write_file(&t.lab.standby_live(role).join(f), &random_bytes(seed, len));
    }
    changed.iter().map(|x| x.2 as u64).sum()
}

fn role_of(cfg: &Path) -> (String, u64) {
    let o = run_snapsite(cfg, &["role", "--json"], &[]);
    let v = json(&String::from_utf8_lossy(&o.stdout));
    (
        v["role"].as_str().unwrap_or("?").to_string(),
        v["generation"].as_u64().unwrap_or(0),
    )
}

/// After `follow` (run through, or rerun after a crash): C is B's standby
/// in generation 2, A's set C alone held is kept aside (data intact) and
/// out of C's catalog, nothing half done is left, and B's next ship to C
/// is incremental from the common base. Returns (payload, changed, full).
fn check_followed(t: &ThreeSites, st: &Story, changed: u64) -> (u64, u64, u64) {
    let lab = &t.lab;
    assert_eq!(role_of(&t.c_follow_cfg), ("standby".into(), 2));
    let state = lab.dir.path().join("state-c");
    assert!(!state.join("journal-follow.json").exists(), "journal left");
    assert!(!state.join(format!("sets/{}.json", st.a1)).exists());
    let labels: Vec<String> = sorted_names(&state.join("divergent"))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect();
    assert_eq!(labels.len(), 1, "one record: {labels:?}");
    let label = labels[0].trim_end_matches(".json").to_string();
    let rec = json(&std::fs::read_to_string(state.join("divergent").join(&labels[0])).unwrap());
    assert_eq!(rec["how"].as_str(), Some("follow"));
    assert_eq!(rec["peer"].as_str(), Some("standby"));
    assert_eq!(rec["sets"], serde_json::json!([st.a1]));
    assert!(
        state
            .join(format!("divergent/{label}/sets/{}.json", st.a1))
            .exists()
    );
    // Kept, with A's late data, no longer a set.
    let kept = t
        .c_recv("blob")
        .join(format!("divergent-{label}-{}", st.a1))
        .join(&st.a1);
    assert_eq!(
        std::fs::read(kept.join("a-late")).unwrap(),
        random_bytes(5, 256 << 10)
    );
    for r in ROLES {
        let names = sorted_names(&t.c_recv(r));
        assert!(!names.contains(&st.a1), "{r}: {names:?}");
        assert!(names.iter().all(|n| !n.starts_with(".orig-")), "{names:?}");
    }
    // B's first ship to C: only what changed since the base.
    let (b2, shipped) = b_ships_to_c(t, &|role| {
        if role == "redolog" { &st.r } else { &st.s }.clone()
    });
    let payload = shipped["payload_bytes"].as_u64().unwrap();
    let full: u64 = ROLES
        .iter()
        .map(|r| btrfs_send(&t.c_recv(r).join(&b2).join(&b2), &[]).len() as u64)
        .sum();
    assert!(
        payload as f64 <= 1.1 * changed as f64,
        "{payload} vs {changed}"
    );
    assert!(payload * 3 < full, "{payload} vs full {full}");
    (payload, changed, full)
}

#[test]
fn after_a_failover_the_other_standby_follows_without_a_full_resend() {
    require_real!();
    let t0 = Instant::now();
    let t = ThreeSites::new();
    let lab = &t.lab;
    // Before any failover, B is a standby: nothing to follow.
    write_file(&lab.live("blob").join("m0"), &random_bytes(9, 4096));
    lab.snapshot(false);
    lab.ship(&lab.pri_cfg);
    lab.ship(&t.a_to_c);
    let o = run_snapsite(&t.c_follow_cfg, &["follow"], &[]);
    assert!(!o.status.success());
    let err = both(&o);
    assert!(err.contains("needs a peer that is the primary"), "{err}");

    let st = story(&t);
    // A, a live primary, cannot follow: it fails back.
    let o = run_snapsite(&lab.pri_cfg, &["follow", "--dry-run"], &[]);
    assert!(!o.status.success());
    let err = both(&o);
    assert!(
        err.contains("live primary") && err.contains("snapsite failback"),
        "{err}"
    );
    let changed = b_writes(&t);

    // On C: the plan first; it changes nothing.
    let dry = lab.ok(&t.c_follow_cfg, &["follow", "--dry-run"]);
    assert!(dry.contains("set aside") && dry.contains(&st.a1), "{dry}");
    let plan = json(&lab.ok(&t.c_follow_cfg, &["follow", "--dry-run", "--json"]));
    for r in ROLES {
        let want = if r == "redolog" { &st.r } else { &st.s };
        assert_eq!(
            plan["plan"]["base"][r].as_str(),
            Some(want.as_str()),
            "{plan}"
        );
    }
    assert_eq!(plan["plan"]["divergent_sets"], serde_json::json!([st.a1]));
    assert_eq!(plan["set_aside"]["blob"], serde_json::json!([st.a1]));
    assert!(
        t.c_recv("blob").join(&st.a1).exists(),
        "a dry run changes nothing"
    );

    let rep = json(&lab.ok(&t.c_follow_cfg, &["follow", "--json"]));
    assert_eq!(rep["divergent"]["how"].as_str(), Some("follow"));
    let (payload, changed, full) = check_followed(&t, &st, changed);
    eprintln!(
        "FOLLOW btrfs: C's first ship from B {payload} bytes for {changed} bytes changed since the common set ({:.3}x); a full send is {full} bytes ({:.3} of it); {:.1} s",
        payload as f64 / changed as f64,
        payload as f64 / full as f64,
        t0.elapsed().as_secs_f64()
    );
    // Following again is harmless: nothing newer than the base to set aside.
    let again = json(&lab.ok(&t.c_follow_cfg, &["follow", "--dry-run", "--json"]));
    assert_eq!(again["set_aside"], serde_json::json!({}), "{again}");
}

/// C lags (shipped less often): A's last sets reached B only. After the
/// failover C follows B from the set both hold, and B's first ship skips
/// A's generation-1 sets C lacks (C, now in generation 2, would refuse
/// them): its new set goes incrementally from the base, carrying A's late
/// changes and B's.
#[test]
fn a_lagging_standby_follows_and_gets_the_new_generation_incrementally() {
    require_real!();
    let t = ThreeSites::new();
    let lab = &t.lab;
    write_file(&lab.live("blob").join("m1"), &random_bytes(1, 4 * MIB));
    write_file(&lab.live("mysql").join("db"), &random_bytes(2, MIB));
    let s = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    lab.ship(&t.a_to_c);
    // C's link is slow: A's next full set and a redolog reach B only.
    write_file(&lab.live("blob").join("a-late"), &random_bytes(5, MIB));
    lab.snapshot(false);
    write_file(
        &lab.live("redolog").join("log-a"),
        &random_bytes(6, 64 << 10),
    );
    lab.snapshot(true);
    lab.ship(&lab.pri_cfg);
    let rep = json(&lab.ok(&lab.stb_cfg, &["failover", "--json"]));
    assert_eq!(rep["generation"].as_u64(), Some(2), "{rep}");
    let changed = b_writes(&t) + MIB as u64 + (64 << 10);
    let plan = json(&lab.ok(&t.c_follow_cfg, &["follow", "--dry-run", "--json"]));
    for r in ROLES {
        assert_eq!(plan["plan"]["base"][r].as_str(), Some(s.as_str()), "{plan}");
    }
    lab.ok(&t.c_follow_cfg, &["follow"]);
    let (_, shipped) = b_ships_to_c(&t, &|_| s.clone());
    let payload = shipped["payload_bytes"].as_u64().unwrap();
    eprintln!(
        "FOLLOW btrfs (C lagging): C's first ship from B {payload} bytes for {changed} bytes changed since the common set ({:.3}x)",
        payload as f64 / changed as f64
    );
    assert!(
        payload as f64 <= 1.1 * changed as f64,
        "{payload} vs {changed}"
    );
}

/// C shares no snapshot with B: refused, nothing changed.
#[test]
fn follow_refuses_without_a_common_set() {
    require_real!();
    let t = ThreeSites::new();
    let lab = &t.lab;
    write_file(&lab.live("blob").join("m1"), &random_bytes(1, 4096));
    lab.snapshot(false);
    lab.ship(&lab.pri_cfg);
    // C never got anything from A; B fails over.
    json(&lab.ok(&lab.stb_cfg, &["failover", "--json"]));
    let o = run_snapsite(&t.c_follow_cfg, &["follow"], &[]);
    assert!(!o.status.success());
    let err = both(&o);
    assert!(
        err.contains("is held by both sites") && err.contains("re-seed"),
        "{err}"
    );
    assert!(!lab.dir.path().join("state-c/role.json").exists());
    assert!(!lab.dir.path().join("state-c/journal-follow.json").exists());
}

/// `follow` stopped dead at its failpoints, then rerun: the invariants of
/// [`check_followed`] hold after every cell.
#[test]
fn follow_crash_cells() {
    require_real!();
    let points: Vec<&str> = failpoint::ALL
        .iter()
        .filter(|f| f.verbs.contains(&"follow"))
        .map(|f| f.name)
        .collect();
    assert!(points.len() >= 6, "{points:?}");
    // By default three cells (the plan recorded, a volume set aside, the
    // role recorded: ~20 s); `SNAPSITE_CRASH_MATRIX=full` runs every
    // point (~50 s), `SNAPSITE_FOLLOW_CELL=<failpoint>` one.
    let full = std::env::var("SNAPSITE_CRASH_MATRIX").is_ok_and(|v| v == "full");
    let default = [
        "follow.after_plan",
        "follow.after_set_aside",
        "follow.after_role_record",
    ];
    let only = std::env::var("SNAPSITE_FOLLOW_CELL").ok();
    let t0 = Instant::now();
    for fp in points {
        let wanted = match only.as_deref() {
            Some(o) => o == fp,
            None => full || default.contains(&fp),
        };
        if !wanted {
            continue;
        }
        let tc = Instant::now();
        let t = ThreeSites::new();
        let st = story(&t);
        let changed = b_writes(&t);
        let o = run_snapsite(&t.c_follow_cfg, &["follow"], &[(failpoint::ENV, fp)]);
        assert_eq!(
            o.status.code(),
            Some(failpoint::EXIT_CODE),
            "{fp} not reached: {}",
            both(&o)
        );
        assert!(
            t.lab
                .dir
                .path()
                .join("state-c/journal-follow.json")
                .exists(),
            "{fp}: no journal"
        );
        // While interrupted, `role` names the verb and what finishes it.
        let o = run_snapsite(&t.c_follow_cfg, &["role", "--json"], &[]);
        let v = json(&String::from_utf8_lossy(&o.stdout));
        let i = &v["interrupted"][0];
        assert_eq!(i["verb"].as_str(), Some("follow"), "{fp}: {v}");
        assert_eq!(i["finish"].as_str(), Some("snapsite follow"), "{fp}: {v}");
        // Nothing was destroyed by the crash: A's set is somewhere on C.
        let a1_somewhere = sorted_names(&t.c_recv("blob"))
            .iter()
            .any(|n| n.ends_with(&st.a1));
        assert!(a1_somewhere, "{fp}: A's set lost");
        t.lab.ok(&t.c_follow_cfg, &["follow"]);
        check_followed(&t, &st, changed);
        eprintln!("cell {fp}: ok ({:.1} s)", tc.elapsed().as_secs_f64());
        drop(t);
    }
    eprintln!("follow crash cells: {:.1} s", t0.elapsed().as_secs_f64());
}
