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
