//! The ZFS backend on real OpenZFS, driven through the `snapsite` binary:
//! atomic sets across two pools, set -> ship -> failover, holds on the
//! common snapshot, a transfer cut at a random offset and resumed, a stale
//! resume token, send options recorded in the manifest.

use super::*;
use crate::output::sent;

const ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];

/// Primary: mysql + blob on pool A, index + redolog on pool B (two atomic
/// groups). Standby: replicas under C/replica, failover clones under C/live.
type ZfsLab = Lab<ZfsSites, PoolB>;

/// What [`ZfsLab`] adds to its pools A and C: failover's clones
/// `C/live/<role>` (destroyed first: fields drop in order), and pool B.
struct PoolB {
    _clones: ZfsDestroy,
    b: Zpool,
}

impl ZfsLab {
    fn new(extra_volume_keys: &str) -> ZfsLab {
        let sites = ZfsSites::new("z", 512 * MIB, 1024 * MIB);
        let b = Zpool::on_file(&unique_name("zb"), 512 * MIB, &[]);
        let (a, dir) = (&sites.a, &sites.dir);
        sites.live_container();
        let (mut pri, mut stb) = (String::new(), String::new());
        for (i, r) in ROLES.iter().enumerate() {
            let pool = if i < 2 { a } else { &b };
            sh(&["zfs", "create", &pool.dataset(r)]);
            pri.push_str(&volume(r, "zfs", &pool.dataset(r), None, None));
            pri.push_str(&format!("{extra_volume_keys}\n"));
            let mp = dir.join("app").join(r);
            stb.push_str(&sites.standby_volume_live_at(r, &format!("live/{r}"), Some(&mp)));
        }
        let clones = ZfsDestroy(
            ROLES
                .map(|r| sites.c.dataset(&format!("live/{r}")))
                .to_vec(),
        );
        let replay = replay_args(dir);
        Lab::local(sites, PoolB { _clones: clones, b }, &pri, &stb, &replay)
    }

    fn pool(&self, role: &str) -> &Zpool {
        if role == "mysql" || role == "blob" {
            &self.a
        } else {
            &self.added.b
        }
    }
    fn source(&self, role: &str) -> String {
        self.pool(role).dataset(role)
    }
    fn replica(&self, role: &str) -> String {
        self.c.dataset(&format!("replica/{role}"))
    }
    fn live(&self, role: &str) -> String {
        self.c.dataset(&format!("live/{role}"))
    }
    fn file(&self, role: &str, name: &str) -> PathBuf {
        zfs_mountpoint(&self.source(role)).join(name)
    }
}

fn digest(path: &Path) -> String {
    sha256(path)
}

#[test]
fn zfs_atomic_sets_across_two_pools_ship_and_failover() {
    require_lab!();
    let lab = ZfsLab::new("zfs = { compressed = true }");
    for (i, r) in ROLES.iter().enumerate() {
        write_pattern(&lab.file(r, "data"), 0, i as u64, 4 * MIB as usize);
    }
    let full = lab.json(&lab.pri_cfg, &["snapshot", "--json"]);
    let members = full["members"].as_array().unwrap();
    // One `zfs snapshot` per pool: members of a pool share group and times.
    assert_eq!(members[0]["atomic_group"], members[1]["atomic_group"]);
    assert_eq!(members[2]["atomic_group"], members[3]["atomic_group"]);
    assert_ne!(members[0]["atomic_group"], members[2]["atomic_group"]);
    assert_eq!(members[0]["before"], members[1]["before"]);
    assert_eq!(
        members[0]["send_options"],
        serde_json::json!(["compressed"])
    );
    let id = full["id"].as_str().unwrap().to_string();
    for (m, r) in members.iter().zip(ROLES) {
        assert_eq!(
            m["storage_id"].as_str().unwrap(),
            zfs_get("guid", &format!("{}@{id}", lab.source(r)))
        );
    }

    write_pattern(&lab.file("redolog", "more"), 0, 99, MIB as usize);
    let redo = lab.json(&lab.pri_cfg, &["snapshot", "--redolog", "--json"]);
    let rid = redo["id"].as_str().unwrap().to_string();
    write_pattern(&lab.file("redolog", "lost"), 0, 100, MIB as usize);

    let report = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(report["committed"].as_array().unwrap().len(), 2);
    let redo_send = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["snapshot"] == rid.as_str())
        .unwrap();
    assert_eq!(
        redo_send["base"],
        id.as_str(),
        "redolog snapshot shipped incrementally"
    );
    for r in ROLES {
        // Same guid on both sites: the same snapshot.
        assert_eq!(
            zfs_get("guid", &format!("{}@{id}", lab.source(r))),
            zfs_get("guid", &format!("{}@{id}", lab.replica(r)))
        );
        assert_eq!(zfs_get("readonly", &lab.replica(r)), "on");
    }

    // The common snapshot is held on both sites: destroying it is refused.
    let common = format!("{}@{rid}", lab.source("redolog"));
    assert!(sh(&["zfs", "holds", "-H", &common]).contains("snapsite-common"));
    assert!(
        sh(&[
            "zfs",
            "holds",
            "-H",
            &format!("{}@{rid}", lab.replica("redolog"))
        ])
        .contains("snapsite-common")
    );
    assert!(
        !sh(&[
            "zfs",
            "holds",
            "-H",
            &format!("{}@{id}", lab.source("redolog"))
        ])
        .contains("snapsite-common"),
        "older hold released"
    );
    let out = run(&["zfs", "destroy", &common]);
    assert!(
        !out.status.success(),
        "destroying the held common snapshot must fail"
    );
    assert!(zfs_exists(&common));

    lab.fail_over_to(&id, &rid);
    for (i, r) in ROLES.iter().enumerate() {
        let mp = lab.dir.join("app").join(r);
        assert_eq!(
            zfs_mountpoint(&lab.live(r)),
            mp,
            "{r} clone mounted at the mountpoint"
        );
        assert_eq!(
            zfs_get("origin", &lab.live(r)),
            format!(
                "{}@{}",
                lab.replica(r),
                if *r == "redolog" { &rid } else { &id }
            )
        );
        assert_pattern(&mp.join("data"), 0, i as u64, 4 * MIB as usize);
    }
    assert_eq!(
        digest(&lab.dir.join("app/redolog/more")),
        digest(&lab.file("redolog", "more"))
    );
    assert!(!lab.dir.join("app/redolog/lost").exists());
    // The clone is writable; the received snapshots stay as they were.
    std::fs::write(lab.dir.join("app/mysql/new"), b"written after failover").unwrap();
    assert_eq!(zfs_get("readonly", &lab.replica("mysql")), "on");
}

#[test]
fn zfs_cut_transfer_resumes_and_stale_token_is_discarded() {
    require_lab!();
    let lab = ZfsLab::new("");
    for (i, r) in ROLES.iter().enumerate() {
        write_pattern(&lab.file(r, "data"), 0, 10 + i as u64, MIB as usize);
    }
    lab.ok(&lab.pri_cfg, &["snapshot"]);
    lab.ok(&lab.pri_cfg, &["ship"]);
    assert_eq!(lab.standby_manifests(), 1);

    // A 24 MiB incremental on blob, cut at a random offset inside it.
    write_pattern(&lab.file("blob", "big"), 0, 42, 24 * MIB as usize);
    let set2 = lab.json(&lab.pri_cfg, &["snapshot", "--json"]);
    let id2 = set2["id"].as_str().unwrap().to_string();
    // mysql's small incremental goes first; cut 4..20 MB into the stream.
    let at = random_between(4_000_000, 20_000_000);
    eprintln!("cutting the transfer at byte {at}");
    let cut = lab.cutting_config(at);
    let out = lab.snapsite(&cut, &["ship"]);
    assert!(!out.status.success(), "a cut ship must fail");
    assert_eq!(lab.standby_manifests(), 1, "no manifest for the cut set");
    let token = zfs_get("receive_resume_token", &lab.replica("blob"));
    assert_ne!(token, "-", "the cut receive left a resume token");
    assert!(!zfs_exists(&format!("{}@{id2}", lab.replica("blob"))));

    // The next ship resumes: only the rest of blob's stream crosses.
    let report = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(report["committed"][0], id2.as_str());
    let blob = sent(&report, "blob");
    let resumed_bytes = blob["bytes"].as_u64().unwrap();
    eprintln!("resumed blob transfer carried {resumed_bytes} bytes");
    assert!(
        resumed_bytes < 24 * MIB,
        "resumed, not restarted: {resumed_bytes}"
    );
    assert_eq!(zfs_get("receive_resume_token", &lab.replica("blob")), "-");
    assert_eq!(
        zfs_get("guid", &format!("{}@{id2}", lab.replica("blob"))),
        zfs_get("guid", &format!("{}@{id2}", lab.source("blob")))
    );

    // Stale token: cut set 3, then the primary loses set 3's blob snapshot;
    // the next ship (set 4) must discard the partial receive and go on.
    write_pattern(&lab.file("blob", "big"), 0, 43, 24 * MIB as usize);
    let id3 = lab.snapshot();
    let out = lab.snapsite(&lab.cutting_config(6_000_000), &["ship"]);
    assert!(!out.status.success());
    assert_ne!(zfs_get("receive_resume_token", &lab.replica("blob")), "-");
    sh(&["zfs", "destroy", &format!("{}@{id3}", lab.source("blob"))]);
    write_pattern(&lab.file("blob", "big"), 0, 44, 4 * MIB as usize);
    let id4 = lab.snapshot();
    let report = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(
        report["committed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![id4.as_str()]
    );
    assert_eq!(zfs_get("receive_resume_token", &lab.replica("blob")), "-");
    assert!(!zfs_exists(&format!("{}@{id3}", lab.replica("blob"))));
    assert_eq!(
        zfs_get("guid", &format!("{}@{id4}", lab.replica("blob"))),
        zfs_get("guid", &format!("{}@{id4}", lab.source("blob")))
    );
}

#[test]
fn zfs_prune_keeps_the_held_common_snapshot_and_incrementals_go_on() {
    require_lab!();
    let lab = ZfsLab::new("");
    let mut ids = Vec::new();
    for i in 0..3u64 {
        write_pattern(&lab.file("mysql", "data"), 0, 200 + i, MIB as usize);
        ids.push(lab.snapshot());
        std::thread::sleep(Duration::from_millis(1500));
    }
    lab.ok(&lab.pri_cfg, &["ship"]);
    // A grid of one 1 s bucket: everything but the newest is prunable
    // (keep_min_age off: the standby's default would keep these young sets).
    for cfg in [&lab.pri_cfg, &lab.stb_cfg] {
        let mut text = std::fs::read_to_string(cfg).unwrap();
        text.push_str("\n[retention]\ngrid = \"1x1s\"\nkeep_min_age = \"0s\"\n");
        std::fs::write(cfg, text).unwrap();
    }
    let plan = lab.ok(&lab.pri_cfg, &["prune", "--dry-run"]);
    eprintln!("{plan}");
    for id in &ids {
        assert!(
            zfs_exists(&format!("{}@{id}", lab.source("mysql"))),
            "dry run destroyed {id}"
        );
    }
    lab.ok(&lab.pri_cfg, &["prune"]);
    lab.ok(&lab.stb_cfg, &["prune"]);
    for (site_ds, label) in [
        (lab.source("mysql"), "primary"),
        (lab.replica("mysql"), "standby"),
    ] {
        assert!(
            !zfs_exists(&format!("{site_ds}@{}", ids[0])),
            "{label}: oldest set pruned"
        );
        assert!(
            zfs_exists(&format!("{site_ds}@{}", ids[2])),
            "{label}: the common snapshot stays"
        );
        assert!(
            sh(&["zfs", "holds", "-H", &format!("{site_ds}@{}", ids[2])])
                .contains("snapsite-common")
        );
    }
    // The chain is intact: the next ship is incremental from the kept one.
    write_pattern(&lab.file("mysql", "data"), 0, 300, MIB as usize);
    let id4 = lab.snapshot();
    let report = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    let mysql = sent(&report, "mysql");
    assert_eq!(mysql["snapshot"], id4.as_str());
    assert_eq!(mysql["base"], ids[2].as_str());
}
