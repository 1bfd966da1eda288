//! Issue 23 item 3: `status` and `failover --dry-run` answer from
//! `sets.summary` (the newest sets, looked up on the storage by name) and
//! say what a whole read of the catalog and the storage says — including
//! when a snapshot of the newest set is gone from the storage.

mod common;

use common::*;
use snapsite::base::catalog::Catalog;

/// What `status --json` says that the summary could change: ids and counts
/// (no ages: the clock moves between the runs).
fn figures(lab: &Lab, cfg: &std::path::Path) -> serde_json::Value {
    let out = lab.run(cfg, &["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let vols: Vec<serde_json::Value> = s["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            serde_json::json!([
                v["role"],
                v["newest_local"]["set_id"],
                v["newest_shipped"]["set_id"],
                v["snapshots_local"]
            ])
        })
        .collect();
    let standbys: Vec<serde_json::Value> = s["standbys"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| {
            serde_json::json!([
                v["name"],
                v["recovery_point"]["set_id"],
                v["pins"]["set_id"]
            ])
        })
        .collect();
    serde_json::json!({
        "level": s["level"],
        "recovery_point": s["recovery_point"]["set_id"],
        "newest_full": s["newest_complete_full_set"]["set_id"],
        "sets": s["sets"],
        "volumes": vols,
        "standbys": standbys,
    })
}

#[test]
fn everyday_commands_answer_from_the_newest_sets_and_still_see_the_storage() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill(1, 64 * 1024);
    let mut fulls = Vec::new();
    let mut redologs = Vec::new();
    for i in 0..3 {
        lab.append_redolog(&format!("op {i}"));
        fulls.push(lab.snapshot(false)["id"].as_str().unwrap().to_string());
        lab.append_redolog(&format!("op {i}b"));
        redologs.push(lab.snapshot(true)["id"].as_str().unwrap().to_string());
    }
    lab.ship(&lab.pri_cfg);
    let state = |s: &str| lab.dir.path().join(format!("state-{s}"));
    let sites = [(&lab.pri_cfg, state("pri")), (&lab.stb_cfg, state("stb"))];

    // Without a summary these read everything (and may write one, if
    // the catalog has been quiet long enough by then).
    let unsummarized = |st: &std::path::Path| {
        let _ = std::fs::remove_file(st.join("sets.summary"));
    };
    let whole: Vec<serde_json::Value> = sites
        .iter()
        .map(|(c, st)| {
            unsummarized(st);
            figures(&lab, c)
        })
        .collect();
    unsummarized(&sites[1].1);
    let whole_plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert_eq!(whole[1]["newest_full"], fulls[2].as_str());
    assert_eq!(whole[1]["recovery_point"], redologs[2].as_str());
    std::thread::sleep(
        snapsite::base::catalog::summary::SETTLED + std::time::Duration::from_millis(300),
    );
    // The first command after the catalog settled writes it...
    for (i, (c, st)) in sites.iter().enumerate() {
        assert_eq!(figures(&lab, c), whole[i]);
        assert!(Catalog::new(st).summary().is_some(), "{}", st.display());
    }
    // ...and the next ones answer from it, the same.
    for (i, (c, _)) in sites.iter().enumerate() {
        assert_eq!(figures(&lab, c), whole[i]);
    }
    assert_eq!(lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]), whole_plan);

    // A set taken and shipped: the writers (snapshot, serve's commit) keep
    // the summary valid, and it knows the new set.
    lab.append_redolog("op new");
    let newest = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    for (c, st) in &sites {
        let s = Catalog::new(st).summary().expect("kept by the writers");
        assert_eq!(s.tail.last().map(|e| e.id.as_str()), Some(newest.as_str()));
        assert_eq!(s.count(snapsite::base::model::SetKind::Redolog).recorded, 4);
        let f = figures(&lab, c);
        assert_eq!(f["sets"]["redolog"], 4, "{f}");
    }
    assert_eq!(
        figures(&lab, &lab.stb_cfg)["recovery_point"],
        newest.as_str()
    );
    // The primary's status reads `standby.head.json` (written by the
    // ship), not every snapshot `standby.json` lists: the same figures as
    // the record read whole.
    let head = sites[0].1.join("standby.head.json");
    assert!(head.exists(), "written by the ship");
    let from_head = figures(&lab, &lab.pri_cfg);
    assert_eq!(from_head["recovery_point"], newest.as_str(), "{from_head}");
    std::fs::remove_file(&head).unwrap();
    assert_eq!(figures(&lab, &lab.pri_cfg), from_head);

    // The storage is the truth: the newest full set's mysql snapshot
    // destroyed by hand on the standby (the catalog does not change, the
    // summary stays valid) — status and failover go back to the full set
    // before it, whose redolog sets after it are still there.
    sh(&[
        "btrfs",
        "subvolume",
        "delete",
        lab.standby_snap("mysql", &fulls[2]).to_str().unwrap(),
    ]);
    assert!(Catalog::new(&sites[1].1).summary().is_some());
    let f = figures(&lab, &lab.stb_cfg);
    assert_eq!(f["newest_full"], fulls[1].as_str(), "{f}");
    assert_eq!(f["recovery_point"], newest.as_str(), "{f}");
    // (answered from the summary: its counts are of the recorded sets,
    // where a whole read counts the usable ones)
    assert_eq!(f["sets"]["full"], 3, "{f}");
    let plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(plan.contains(&fulls[1]), "{plan}");
    assert!(!plan.contains(&fulls[2]), "{plan}");
    // what reading everything says (the summary gone)
    std::fs::remove_file(sites[1].1.join("sets.summary")).unwrap();
    assert_eq!(lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]), plan);
    let f = figures(&lab, &lab.stb_cfg);
    assert_eq!(f["newest_full"], fulls[1].as_str());
    assert_eq!(f["sets"]["full"], 2, "{f}");
}

/// Issue 23 item 3, second part: `ship` plans from the catalog's heads
/// (ids and order, no members; only the sets it sends read whole), and on
/// the standby `prune --dry-run` and `sets` take the verdicts from
/// `verdicts.summary` once it is checked against the files (names and
/// stamps), reading only the suspect sets' files. Each says what the files
/// say: the same output with the summary as without it; a verdict
/// rewritten as suspect behind the summary's back is seen by both; a ship
/// without any index sends exactly the new set.
#[test]
fn ship_prune_and_sets_say_what_the_files_say() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill(1, 64 * 1024);
    let mut ids = Vec::new();
    for i in 0..4 {
        lab.append_redolog(&format!("op {i}"));
        ids.push(lab.snapshot(i % 2 == 1)["id"].as_str().unwrap().to_string());
    }
    lab.ship(&lab.pri_cfg);
    let keep_all =
        "\n[retention]\ngrid = \"1x100000d(keep=all)\"\nredolog_grid = \"1x100000d(keep=all)\"\n";
    append_to(&lab.pri_cfg, keep_all);
    append_to(&lab.stb_cfg, keep_all);
    let stb = lab.dir.path().join("state-stb");
    let summary = stb.join("verdicts.summary");
    for id in &ids {
        assert!(
            stb.join(format!("verdicts/{id}.json")).exists(),
            "{id} judged"
        );
    }
    let settle = || {
        std::thread::sleep(
            snapsite::base::catalog::summary::SETTLED + std::time::Duration::from_millis(300),
        );
        // (critical once a set is suspect: its exit status is not the point)
        lab.run(&lab.stb_cfg, &["status"]);
        assert!(summary.exists(), "written by status once settled");
    };
    let listings = || {
        (
            lab.ok(&lab.stb_cfg, &["sets"]),
            lab.ok(&lab.stb_cfg, &["prune", "--dry-run"]),
        )
    };
    settle();
    let from_summary = listings();
    assert!(summary.exists(), "checked and kept");
    std::fs::remove_file(&summary).unwrap();
    assert_eq!(listings(), from_summary, "the same from the files");
    assert!(!from_summary.0.contains("SUSPECT"), "{}", from_summary.0);

    // A clean verdict rewritten as suspect by something else (temp file
    // and rename: a new inode), the summary otherwise as it was.
    settle();
    let vpath = stb.join(format!("verdicts/{}.json", ids[2]));
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&vpath).unwrap()).unwrap();
    assert_eq!(v["verdict"], "clean");
    v["verdict"] = "suspect".into();
    let tmp = vpath.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::rename(&tmp, &vpath).unwrap();
    let (sets, prune) = listings();
    assert!(sets.contains("SUSPECT"), "{sets}");
    assert!(
        prune.contains(&format!("before suspect set {}", ids[2])),
        "{prune}"
    );
    let _ = std::fs::remove_file(&summary);
    assert_eq!(listings(), (sets, prune), "the same from the files");

    // `sets --last N`: the newest N of what `sets` lists, from the summary
    // (valid here) and read whole (without it); a member destroyed by hand
    // makes its set incomplete in both.
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["sets", "--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &a)).unwrap()
    };
    let last_of_all = |n: usize| {
        let all = json(&[]);
        all[all.len() - n..].to_vec()
    };
    for destroyed in [false, true] {
        if destroyed {
            sh(&[
                "btrfs",
                "subvolume",
                "delete",
                // (a redolog set: its one member)
                lab.standby_snap("redolog", &ids[3]).to_str().unwrap(),
            ]);
        }
        settle();
        assert!(stb.join("sets.summary").exists());
        let from_summary = json(&["--last", "2"]);
        assert_eq!(from_summary.len(), 2);
        assert_eq!(from_summary[1]["id"], ids[3].as_str());
        assert_eq!(from_summary[1]["complete"], !destroyed);
        assert_eq!(from_summary, last_of_all(2), "destroyed {destroyed}");
        std::fs::remove_file(stb.join("sets.summary")).unwrap();
        assert_eq!(json(&["--last", "2"]), from_summary, "read whole");
        assert_eq!(json(&["--last", "99"]), json(&[]), "more than there are");
    }
    assert_exit(&lab.run(&lab.stb_cfg, &["sets", "--last", "0"]), 1);

    // Ship: nothing new sends nothing; without either site's index (every
    // manifest read again) a new set is sent, alone.
    let r = lab.ship(&lab.pri_cfg);
    assert_eq!(r["committed"], serde_json::json!([]), "{r}");
    for s in ["state-pri", "state-stb"] {
        std::fs::remove_file(lab.dir.path().join(s).join("sets.index")).unwrap();
    }
    lab.append_redolog("op new");
    let new = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let r = lab.ship(&lab.pri_cfg);
    assert_eq!(r["committed"], serde_json::json!([new]), "{r}");
    assert_eq!(lab.standby_manifests().len(), ids.len() + 1);
}

/// The ship's welcome starts from the newest full set the primary's
/// record says is committed (the hello's `since`): the record's held
/// snapshots are then that set's and the newer ones, not the whole
/// history (its committed sets still name every set this site holds that
/// the standby took); the ship sends from the same bases the whole
/// inventory gives (`ship --dry-run` asks for it whole); without a record
/// the welcome, and so the record, is whole again; a standby that lost
/// its catalog is sent every set again.
#[test]
fn ship_plans_from_the_welcomes_tail_as_from_the_whole_inventory() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let keep_all =
        "\n[retention]\ngrid = \"1x100000d(keep=all)\"\nredolog_grid = \"1x100000d(keep=all)\"\n";
    append_to(&lab.pri_cfg, keep_all);
    append_to(&lab.stb_cfg, keep_all);
    let mut ids: Vec<String> = Vec::new();
    let take = |ids: &mut Vec<String>, redolog: bool| {
        let i = ids.len();
        lab.fill_same(60 + i as u64, 16 * 1024);
        lab.append_redolog(&format!("op {i}"));
        ids.push(lab.snapshot(redolog)["id"].as_str().unwrap().to_string());
        ids[i].clone()
    };
    // F0 R0 F1 R1, shipped with no record yet: the whole inventory
    for i in 0..4 {
        take(&mut ids, i % 2 == 1);
    }
    lab.ship(&lab.pri_cfg);
    let pri = lab.dir.path().join("state-pri");
    let record = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(pri.join("standby.json")).unwrap()).unwrap()
    };
    let committed = |r: &serde_json::Value| -> Vec<String> {
        r["committed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let first = record();
    assert_eq!(committed(&first).len(), 4, "{first}");

    // F2 R2: the welcome starts from F1 (the newest committed full set)
    let f2 = take(&mut ids, false);
    let r2 = take(&mut ids, true);
    let dry = lab.ok(&lab.pri_cfg, &["ship", "--dry-run"]);
    assert!(dry.contains("holds 4 committed set(s)"), "whole: {dry}");
    let rep = lab.ship(&lab.pri_cfg);
    assert_eq!(rep["committed"], serde_json::json!([f2, r2]), "{rep}");
    let snaps = rep["snapshots"].as_array().unwrap();
    assert!(!snaps.is_empty());
    for s in snaps {
        let (role, base) = (s["role"].as_str().unwrap(), &s["base"]);
        let base = base.as_str().unwrap_or_else(|| panic!("incremental: {s}"));
        // the dry run (whole inventory) planned the same base
        assert!(
            dry.lines()
                .any(|l| l.contains(role) && l.ends_with(&format!("incremental from {base}"))),
            "{role} from {base}: {dry}"
        );
    }
    // F2's members go from F1's, R2's redolog from F2's
    let base_of = |set: &str, role: &str| {
        snaps
            .iter()
            .find(|s| s["set_id"] == set && s["role"] == role)
            .map(|s| s["base"].as_str().unwrap().to_string())
    };
    assert_eq!(base_of(&f2, "mysql").as_deref(), Some(ids[2].as_str()));
    assert_eq!(base_of(&r2, "redolog").as_deref(), Some(f2.as_str()));
    // the record: held from F1 on; committed: F0 and R0 as recorded
    // before (this site holds them), F1 and what is newer from the welcome
    let tail = record();
    assert_eq!(committed(&tail), ids, "{tail}");
    let held_from = |r: &serde_json::Value| -> String {
        let mut oldest = String::from("~");
        for (_, held) in r["holds"].as_object().unwrap() {
            for s in held.as_array().unwrap() {
                oldest = oldest.min(s.as_str().unwrap().to_string());
            }
        }
        oldest
    };
    assert_eq!(held_from(&first), ids[0], "{first}");
    assert_eq!(held_from(&tail), ids[2], "{tail}");
    // what status and the standby's failover say is unchanged by it
    let st: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.pri_cfg, &["status", "--json"])).unwrap();
    assert_eq!(st["recovery_point"]["set_id"], r2.as_str(), "{st}");
    let plan: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["set_id"], f2.as_str(), "{plan}");
    assert_eq!(plan["redolog_set_id"], r2.as_str(), "{plan}");

    // Nothing new: nothing sent, the record still the tail.
    let rep = lab.ship(&lab.pri_cfg);
    assert_eq!(rep["committed"], serde_json::json!([]), "{rep}");
    assert_eq!(committed(&record()), ids);
    assert_eq!(held_from(&record()), f2, "from the newest full set now");

    // The head lost (a kill between the record and its head): the record
    // read whole (once) says what the head said; the welcome is still the
    // tail, the record the same, and the head written again.
    std::fs::remove_file(pri.join("standby.head.json")).unwrap();
    let rep = lab.ship(&lab.pri_cfg);
    assert_eq!(rep["committed"], serde_json::json!([]), "{rep}");
    assert_eq!(committed(&record()), ids, "without the head");
    assert_eq!(held_from(&record()), f2, "the tail without the head");
    assert!(pri.join("standby.head.json").exists(), "written again");

    // No record (a new primary state, an older build's): the welcome, and
    // so the record, is whole again; the new set still goes incrementally.
    for f in ["standby.json", "standby.head.json"] {
        let _ = std::fs::remove_file(pri.join(f));
    }
    let f3 = take(&mut ids, false);
    let rep = lab.ship(&lab.pri_cfg);
    assert_eq!(rep["committed"], serde_json::json!([f3]), "{rep}");
    for s in rep["snapshots"].as_array().unwrap() {
        let want = if s["role"] == "redolog" { &r2 } else { &f2 };
        assert_eq!(s["base"].as_str(), Some(want.as_str()), "{rep}");
    }
    assert_eq!(committed(&record()), ids, "whole again");
    assert_eq!(held_from(&record()), ids[0], "whole again");

    // A standby that lost its catalog (every set's manifest; its snapshots
    // stay): it holds the hello's `since` committed no more, so its welcome
    // is whole, this site lists whole too and every set is committed again
    // (its members already there: commit only), not just the newest.
    let stb = lab.dir.path().join("state-stb");
    for f in std::fs::read_dir(stb.join("sets")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    for f in ["sets.index", "sets.summary"] {
        let _ = std::fs::remove_file(stb.join(f));
    }
    let rep = lab.ship(&lab.pri_cfg);
    assert_eq!(rep["committed"], serde_json::json!(ids), "{rep}");
    assert_eq!(lab.standby_manifests().len(), ids.len());
}
