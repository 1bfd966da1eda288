//! One listing per pool / volume group per side per ship, on real OpenZFS
//! and LVM thin: the listing commands (`zfs list`/`zfs get`, `lvs`) a ship
//! runs on each side do not grow with the number of volumes in the same
//! pool/VG (2 vs 4 volumes), and the ship's results are what they were
//! (incrementals from the common snapshot, the same guids/data on both
//! sides). Counted from each side's own trace log: every external program
//! runs through `cmd.rs`, which logs its argv at debug level.

use std::collections::BTreeMap;

use super::*;
use crate::cmdcount::{self, Counted, TRACE};

/// A command's key: program and subcommand for `zfs`, `zpool` and
/// `dmsetup` (e.g. `zfs list`), the program for the others; the transport
/// and snapsite itself are not counted.
fn command_key(words: &[&str]) -> Option<String> {
    let prog = *words.first()?;
    match prog {
        "zfs" | "zpool" | "dmsetup" => Some(format!("{prog} {}", words.get(1).unwrap_or(&""))),
        "sh" | "ssh" | "snapsite" => None,
        p => Some(p.to_string()),
    }
}

/// The listing commands among them: what a ship asks the storage about
/// what is there (not what it does to it).
fn listings(c: &BTreeMap<String, usize>) -> usize {
    c.iter()
        .filter(|(k, _)| ["zfs list", "zfs get", "lvs", "vgs"].contains(&k.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// Configs whose standby `serve` writes its trace log to `stb_log`.
fn write_configs(dir: &Path, pri_vols: &str, stb_vols: &str) -> (PathBuf, PathBuf) {
    let stb_log = dir.join("serve.log");
    let replay = "[replay]\ncommand = [\"/bin/true\"]\n";
    let (pri_cfg, _) = site_configs(
        dir,
        pri_vols,
        stb_vols,
        replay,
        Standby::ServeLogging(&stb_log),
        "",
    );
    (pri_cfg, stb_log)
}

fn counted_ship(pri_cfg: &Path, stb_log: &Path) -> Counted {
    std::fs::write(stb_log, b"").unwrap();
    let mut argv = vec![snapsite_bin(), "--config", pri_cfg.to_str().unwrap()];
    argv.extend(["ship", "--json"]);
    let out = command(&argv).envs(TRACE).output().unwrap();
    cmdcount::counted_ship(&out, stb_log, command_key)
}

fn roles(n: usize) -> Vec<String> {
    let mut r: Vec<String> = (1..n).map(|i| format!("vol{i}")).collect();
    r.push("redolog".into());
    r
}

/// [`cmdcount::three_ships`] of `n` volumes from `pri_cfg`, `fill`ing
/// with seeds 1 and 10.
fn ships(
    n: usize,
    pri_cfg: &Path,
    stb_log: &Path,
    fill: impl Fn(u64),
) -> (Counted, Counted, String) {
    cmdcount::three_ships(
        n,
        |k| fill([1, 10][k]),
        || snapsite_ok(pri_cfg, &["snapshot"]).trim().to_string(),
        || counted_ship(pri_cfg, stb_log),
    )
}

/// Full, no-change and one-set incremental ship of `n` volumes; returns
/// the counted no-change and incremental ships.
fn zfs_ships(n: usize) -> (Counted, Counted) {
    let pool = Zpool::on_file(&unique_name("zl"), 512 * MIB, &[]);
    let dir = scratch().join(unique_name("zlist"));
    std::fs::create_dir_all(&dir).unwrap();
    sh(&["zfs", "create", &pool.dataset("pri")]);
    sh(&[
        "zfs",
        "create",
        "-o",
        "mountpoint=none",
        &pool.dataset("replica"),
    ]);
    let (mut p, mut s) = (String::new(), String::new());
    for r in roles(n) {
        sh(&["zfs", "create", &pool.dataset(&format!("pri/{r}"))]);
        p.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\n",
            pool.dataset(&format!("pri/{r}"))
        ));
        s.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/app/{r}\"\n",
            pool.dataset(&format!("live/{r}")),
            pool.dataset(&format!("replica/{r}")),
            dir.display()
        ));
    }
    let (pri_cfg, stb_log) = write_configs(&dir, &p, &s);
    let fill = |seed: u64| {
        for (i, r) in roles(n).iter().enumerate() {
            let f = zfs_mountpoint(&pool.dataset(&format!("pri/{r}"))).join(format!("f{seed}"));
            write_pattern(&f, 0, seed + i as u64, 256 * 1024);
        }
    };
    let (none, inc, id) = ships(n, &pri_cfg, &stb_log, fill);
    for r in roles(n) {
        assert_eq!(
            zfs_get(
                "guid",
                &format!("{}@{id}", pool.dataset(&format!("replica/{r}")))
            ),
            zfs_get(
                "guid",
                &format!("{}@{id}", pool.dataset(&format!("pri/{r}")))
            ),
            "{r}: the standby holds the primary's snapshot"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    (none, inc)
}

fn lvm_ships(n: usize) -> (Counted, Counted) {
    const SIZE: u64 = 16 * MIB;
    let lab = LvmSites::new("ll", 512 * MIB, "384M");
    let (pri, stb, dir) = (&lab.pri, &lab.stb, &lab.dir);
    let (mut p, mut s) = (String::new(), String::new());
    for r in roles(n) {
        lab.primary_thin(&r, &format!("{SIZE}b"));
        p.push_str(&lab.primary_volume(&r, ""));
        s.push_str(&lab.standby_volume(&r, Some(&dir.join("app").join(&r))));
    }
    let (pri_cfg, stb_log) = write_configs(dir, &p, &s);
    let fill = |seed: u64| {
        for (i, r) in roles(n).iter().enumerate() {
            write_pattern(&pri.dev(r), seed * 65536, seed + i as u64, 65536);
        }
    };
    let (none, inc, id) = ships(n, &pri_cfg, &stb_log, fill);
    for r in roles(n) {
        let lv = format!("{r}.{id}");
        for vg in [&pri, &stb] {
            if vg.lvs_field(&lv, "lv_active") != "active" {
                sh(&["lvchange", "-ay", "-K", &vg.lv(&lv)]);
            }
        }
        assert_eq!(
            sha256(&stb.dev(&lv)),
            sha256(&pri.dev(&lv)),
            "{r}: the standby holds the primary's snapshot"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    (none, inc)
}

fn report(what: &str, n: usize, none: &Counted, inc: &Counted) {
    for (ship, c) in [("no-change", none), ("incremental", inc)] {
        eprintln!(
            "LISTING {what} {n} volumes {ship}: round_trips {} primary {:?} standby {:?}",
            c.report["round_trips"], c.primary, c.standby
        );
    }
}

/// The listing commands of a no-change ship are the same for 2 and 4
/// volumes on each side; an incremental ship's grow only by what each
/// shipped snapshot needs itself (at most `per_snapshot` on a side).
fn check(what: &str, two: &(Counted, Counted), four: &(Counted, Counted), per_snapshot: usize) {
    report(what, 2, &two.0, &two.1);
    report(what, 4, &four.0, &four.1);
    for side in ["primary", "standby"] {
        let get = |c: &Counted| {
            listings(if side == "primary" {
                &c.primary
            } else {
                &c.standby
            })
        };
        assert_eq!(
            get(&two.0),
            get(&four.0),
            "{what} {side}: a no-change ship lists once per pool/VG, whatever the number of volumes"
        );
        assert!(
            get(&two.0) <= 1,
            "{what} {side}: a no-change ship lists at most once ({})",
            get(&two.0)
        );
        let slope = get(&four.1).saturating_sub(get(&two.1));
        assert!(
            slope <= 2 * per_snapshot,
            "{what} {side}: 2 more volumes cost {slope} more listings (at most {} expected)",
            2 * per_snapshot
        );
    }
}

#[test]
fn zfs_one_listing_per_pool_per_side_per_ship() {
    require_lab!();
    let two = zfs_ships(2);
    let four = zfs_ships(4);
    // per shipped snapshot: the standby lists the replica before the
    // receive and reads the new guid after it; the primary lists the
    // volume's snapshots to move the hold.
    check("zfs", &two, &four, 2);
    // The common snapshot's holds move in one batch for every volume.
    for (n, (_, inc)) in [(2, &two), (4, &four)] {
        for side in [&inc.primary, &inc.standby] {
            for c in ["zfs holds", "zfs hold", "zfs release"] {
                assert_eq!(side.get(c), Some(&1), "{c} with {n} volumes: {side:?}");
            }
        }
    }
}

#[test]
fn lvm_one_listing_per_vg_per_side_per_ship() {
    require_lab!();
    let two = lvm_ships(2);
    let four = lvm_ships(4);
    // per shipped snapshot, as measured (issue 27, 2 against 4 volumes):
    // the standby runs 2 `lvs` and 1 `vgs`, the primary 1 `lvs`.
    check("lvm", &two, &four, 3);
}
