//! Fan-out on real ZFS and LVM thin: one primary, standbys `near` (shipped
//! every set) and `far` (lagging). Each standby's base is held on the
//! primary under a tag naming it (`snapsite-common-near`, `-far`: a ZFS
//! user hold, an LVM tag); over rounds of ship-to-near-and-prune, far's
//! base is never pruned (and on ZFS cannot be destroyed by hand), far's
//! next ship is incremental from it, and when far leaves the config prune
//! releases its holds along with the shared tag of older versions. The
//! btrfs twin (no storage holds there) is tests/fanout.rs.

use super::*;

const ROLES: [&str; 2] = ["mysql", "redolog"];
const ROUNDS: u64 = 3;

/// Tries `zfs destroy` of (role, set id) by hand: refused?
type DestroyRefused<'b> = dyn Fn(&str, &str) -> bool + 'b;

/// One backend's side of the story.
struct Shape<'a> {
    backend: &'static str,
    /// The primary and near ([`TwoSites`]).
    lab: &'a dyn TwoSites,
    /// far's `[[volume]]` of a role.
    far: &'a dyn Fn(&str) -> String,
    /// Writes round `i`'s data on the primary.
    write: &'a dyn Fn(u64),
    /// The common holds on the primary: (role, set id, tag).
    holds: &'a dyn Fn() -> Vec<(String, String, String)>,
    /// Puts the tag of older versions (`snapsite-common`) on a snapshot.
    add_shared: &'a dyn Fn(&str, &str),
    /// Tries to destroy a snapshot by hand: did the storage refuse?
    /// (`None`: this storage has no holds.)
    destroy_refused: Option<&'a DestroyRefused<'a>>,
}

fn tagged(holds: &[(String, String, String)], id: &str, tag: &str) -> Vec<String> {
    holds
        .iter()
        .filter(|(_, s, t)| s == id && t == tag)
        .map(|(r, _, _)| r.clone())
        .collect()
}

fn story(sh_: &Shape) {
    let t0 = Instant::now();
    let dir = sh_.lab.dir();
    let [mut pri_vols, mut near_vols, mut far_vols] = [String::new(), String::new(), String::new()];
    for r in ROLES {
        pri_vols.push_str(&sh_.lab.primary_volume(r, ""));
        near_vols.push_str(&sh_.lab.standby_volume(r, None));
        far_vols.push_str(&(sh_.far)(r));
    }
    let site = |name: &str, vols: &str| {
        write_config(
            dir,
            name,
            &format!("{}{vols}{NO_REPLAY}", site_head(dir, name)),
        )
    };
    let near = site("near", &near_vols);
    let far = site("far", &far_vols);
    let head = format!(
        "{}{}{NO_REPLAY}[retention]\ngrid = \"1x1ms\"\n",
        site_head(dir, "a"),
        pri_vols
    );
    let near_standby = local_standby(Some("near"), &near);
    let pri = write_config(
        dir,
        "a",
        &format!("{head}{near_standby}{}", local_standby(Some("far"), &far)),
    );
    let near_only = write_config(dir, "a-near-only", &format!("{head}{near_standby}"));
    let full_roles: Vec<String> = ROLES.iter().map(|r| r.to_string()).collect();

    // Round 0: both standbys get the first set; each holds it.
    (sh_.write)(0);
    let s0 = snapshot_id(&pri);
    snapsite_ok(&pri, &["ship"]);
    let h = (sh_.holds)();
    assert_eq!(tagged(&h, &s0, "snapsite-common-near"), full_roles, "{h:?}");
    assert_eq!(tagged(&h, &s0, "snapsite-common-far"), full_roles, "{h:?}");

    // near moves on every round and prune runs; far lags at s0.
    let mut newest = s0.clone();
    let mut pruned = 0;
    for i in 1..=ROUNDS {
        (sh_.write)(i);
        newest = snapshot_id(&pri);
        snapsite_ok(&pri, &["ship", "--to", "near"]);
        let p = snapsite_json(&pri, &["prune", "--json"]);
        pruned += p["destroyed_sets"].as_array().map_or(0, Vec::len);
        let h = (sh_.holds)();
        assert_eq!(
            tagged(&h, &s0, "snapsite-common-far"),
            full_roles,
            "round {i}: far's base lost its hold: {h:?}"
        );
        assert!(
            tagged(&h, &s0, "snapsite-common-near").is_empty(),
            "round {i}: near's tag stayed on s0: {h:?}"
        );
        assert_eq!(
            tagged(&h, &newest, "snapsite-common-near"),
            full_roles,
            "round {i}: {h:?}"
        );
        let kept: Vec<String> = p["plan"]["sets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["destroy"] == false && d["set_id"] == s0.as_str())
            .map(|d| d["reason"].as_str().unwrap_or("").to_string())
            .collect();
        assert!(
            kept.iter().any(|r| r.contains("`far`")),
            "round {i}: s0 kept for far: {p}"
        );
    }
    assert!(pruned > 0, "the story should prune something");
    if let Some(refused) = sh_.destroy_refused {
        assert!(refused("mysql", &s0), "far's base destroyed by hand");
    }

    // far catches up: incremental from its held base.
    let r = snapsite_json(&pri, &["ship", "--to", "far", "--json"]);
    let snaps = r["standbys"][0]["report"]["snapshots"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!snaps.is_empty(), "{r}");
    assert!(
        snaps
            .iter()
            .all(|s| s["base"].as_str() == Some(s0.as_str())),
        "far's ship not incremental from s0: {r}"
    );
    let h = (sh_.holds)();
    assert_eq!(
        tagged(&h, &newest, "snapsite-common-far"),
        full_roles,
        "{h:?}"
    );
    assert!(tagged(&h, &s0, "snapsite-common-far").is_empty(), "{h:?}");

    // An older version's shared tag, then far leaves the config.
    (sh_.add_shared)("mysql", &newest);
    let before = (sh_.holds)();
    assert_eq!(
        tagged(&before, &newest, "snapsite-common"),
        ["mysql"],
        "{before:?}"
    );
    let dry = snapsite_ok(&near_only, &["prune", "--dry-run"]);
    assert!(dry.contains("`far`"), "{dry}");
    assert_eq!((sh_.holds)(), before, "a dry run changes nothing");
    let done = snapsite_json(&near_only, &["prune", "--json"]);
    assert_eq!(
        done["plan"]["released_standbys"],
        serde_json::json!(["far"])
    );
    let h = (sh_.holds)();
    assert!(
        h.iter().all(|(_, _, t)| t == "snapsite-common-near"),
        "far's and the shared tag should be released: {h:?}"
    );
    assert_eq!(
        tagged(&h, &newest, "snapsite-common-near"),
        full_roles,
        "{h:?}"
    );
    eprintln!(
        "FANOUT {}: {ROUNDS} prune rounds ({pruned} set(s) pruned), far's base always held and never pruned; far's next ship incremental; far's and the shared holds released when far left; {:.1} s",
        sh_.backend,
        t0.elapsed().as_secs_f64()
    );
}

/// `zfs holds` of every snapshot of the primary's datasets.
fn zfs_holds(pool: &Zpool) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for r in ROLES {
        let list = sh(&[
            "zfs",
            "list",
            "-H",
            "-t",
            "snapshot",
            "-o",
            "name",
            "-d",
            "1",
            &pool.dataset(r),
        ]);
        let snaps: Vec<&str> = list.lines().filter(|l| !l.is_empty()).collect();
        if snaps.is_empty() {
            continue;
        }
        let mut argv = vec!["zfs", "holds", "-H"];
        argv.extend(&snaps);
        for l in sh(&argv).lines() {
            let f: Vec<&str> = l.split('\t').collect();
            if let [name, tag, ..] = f[..] {
                let id = name.split_once('@').unwrap().1;
                out.push((r.to_string(), id.to_string(), tag.to_string()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn zfs_each_standby_holds_its_own_base() {
    require_lab!();
    // the primary on pool a, near on pool c (the lab's), far beside it in c
    let lab = ZfsSites::new("fo", 256 * MIB, 256 * MIB);
    sh(&[
        "zfs",
        "create",
        "-o",
        "mountpoint=none",
        &lab.c.dataset("far"),
    ]);
    let mp = |r: &str| lab.dir.join("a").join(r);
    for r in ROLES {
        lab.primary_dataset(r, &mp(r));
    }
    let far = |r: &str| {
        let (live, rep) = (lab.c.dataset(&format!("far-live-{r}")), format!("far/{r}"));
        volume(r, "zfs", &live, Some(&lab.c.dataset(&rep)), None)
    };
    let write = |i: u64| {
        for (k, r) in ROLES.iter().enumerate() {
            std::fs::write(
                mp(r).join(format!("f{i}")),
                pattern(10 * i + k as u64, 256 << 10),
            )
            .unwrap();
        }
        sh(&["sync"]);
    };
    let holds = || zfs_holds(&lab.a);
    let add_shared = |r: &str, id: &str| {
        sh(&[
            "zfs",
            "hold",
            "snapsite-common",
            &format!("{}@{id}", lab.a.dataset(r)),
        ]);
    };
    let refused = |r: &str, id: &str| {
        !run(&["zfs", "destroy", &format!("{}@{id}", lab.a.dataset(r))])
            .status
            .success()
    };
    story(&Shape {
        backend: "zfs",
        lab: &lab,
        far: &far,
        write: &write,
        holds: &holds,
        add_shared: &add_shared,
        destroy_refused: Some(&refused),
    });
}

/// Only with `SNAPSITE_VM_FULL=1` (as the other LVM twins: LVM commands
/// under TCG are slow); the ZFS twin runs every time.
#[test]
fn lvm_each_standby_holds_its_own_base() {
    require_lab!(full: "the LVM fan-out holds test");
    let lab = LvmSites::new("fo", 512 * MIB, "384M");
    for r in ROLES {
        lab.primary_thin(r, "32M");
    }
    let far = |r: &str| {
        let (live, rep) = (lab.stb.lv(&format!("far{r}live")), format!("far{r}"));
        volume(r, "lvm", &live, Some(&lab.stb.lv(&rep)), None)
    };
    let write = |i: u64| {
        for (k, r) in ROLES.iter().enumerate() {
            write_pattern(&lab.pri.dev(r), i * (1 << 20), 10 * i + k as u64, 256 << 10);
        }
    };
    let holds = || lvm_common_tags(&lab.pri.name);
    let add_shared = |r: &str, id: &str| {
        sh(&[
            "lvchange",
            "--addtag",
            "snapsite-common",
            &lab.pri.lv(&format!("{r}.{id}")),
        ]);
    };
    story(&Shape {
        backend: "lvm",
        lab: &lab,
        far: &far,
        write: &write,
        holds: &holds,
        add_shared: &add_shared,
        destroy_refused: None,
    });
}
