//! Retention: property tests of the pure keep rules on random histories
//! (the common snapshot, the newest complete set and the failover pair are
//! never lost; pruning is whole-set and stable), and `snapsite prune` on
//! real btrfs: what it destroys on disk, and that shipping stays incremental
//! from the common snapshot afterwards.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use common::*;
use snapsite::base::catalog::StandbyRecord;
use snapsite::base::config::Retention;
use snapsite::base::model::{Manifest, Member, SetKind, new_set_id};
use snapsite::dr::failover;
use snapsite::ops::prune::{Grid, plan_sets, protect_primary, protect_standby};

const VOLS: [&str; 3] = ["mysql", "blob", "redolog"];

fn manifest(at: Timestamp, kind: SetKind) -> Manifest {
    let id = new_set_id(at, kind);
    let roles: &[&str] = match kind {
        SetKind::Full => &VOLS,
        SetKind::Redolog => &["redolog"],
    };
    let members = roles.iter().map(|r| Member::plain(r, &id, at)).collect();
    Manifest {
        committed_at: Some(at),
        ..Manifest::plain(&id, kind, "p", members)
    }
}

/// A random history: sets at increasing times (gaps of 1 s .. 3 h), some
/// members lost (incomplete sets), what the standby holds.
#[derive(Debug, Clone)]
struct History {
    manifests: Vec<Manifest>,
    local: BTreeMap<String, Vec<String>>,
    standby_holds: BTreeMap<String, BTreeSet<String>>,
    grid: String,
    redolog_grid: String,
}

fn grid_strategy() -> impl Strategy<Value = String> {
    let interval = (
        1u32..5,
        prop::sample::select(vec!["30s", "5m", "15m", "1h", "6h", "1d"]),
        prop::option::of(prop_oneof![Just(0u32), 1u32..4]),
    )
        .prop_map(|(n, len, keep)| match keep {
            None => format!("{n}x{len}"),
            Some(0) => format!("{n}x{len}(keep=all)"),
            Some(k) => format!("{n}x{len}(keep={k})"),
        });
    prop::collection::vec(interval, 1..4).prop_map(|v| v.join(" | "))
}

fn history_strategy() -> impl Strategy<Value = History> {
    (
        prop::collection::vec(
            (
                1i64..10_800,
                prop::bool::weighted(0.3),
                prop::bool::weighted(0.1),
                prop::bool::weighted(0.6),
            ),
            1..60,
        ),
        grid_strategy(),
        grid_strategy(),
    )
        .prop_map(|(steps, grid, redolog_grid)| {
            let mut t: Timestamp = "2026-11-27T00:00:00Z".parse().unwrap();
            let mut manifests = Vec::new();
            let mut local: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut standby_holds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (gap, full, lose_member, shipped) in steps {
                t += SignedDuration::from_secs(gap);
                let kind = if full {
                    SetKind::Full
                } else {
                    SetKind::Redolog
                };
                let m = manifest(t, kind);
                for (i, mem) in m.members.iter().enumerate() {
                    // an interrupted prune or a hand-deleted snapshot: the first member gone
                    if !(lose_member && i == 0) {
                        local
                            .entry(mem.role.clone())
                            .or_default()
                            .push(m.id.clone());
                    }
                    if shipped {
                        standby_holds
                            .entry(mem.role.clone())
                            .or_default()
                            .insert(m.id.clone());
                    }
                }
                manifests.push(m);
            }
            History {
                manifests,
                local,
                standby_holds,
                grid,
                redolog_grid,
            }
        })
}

fn retention(h: &History) -> Retention {
    Retention {
        full: Grid::parse(&h.grid).unwrap(),
        redolog: Grid::parse(&h.redolog_grid).unwrap(),
        keep_min_age: std::time::Duration::ZERO,
    }
}

/// The ids of the sets in `sets` holding a member of each role, by role
/// (in the order of `sets`).
fn ids_by_role(sets: &[Manifest]) -> BTreeMap<String, Vec<String>> {
    let mut local: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in sets {
        for mem in &m.members {
            local
                .entry(mem.role.clone())
                .or_default()
                .push(m.id.clone());
        }
    }
    local
}

fn complete_in(local: &BTreeMap<String, Vec<String>>) -> impl Fn(&Manifest) -> bool + '_ {
    move |m: &Manifest| {
        m.members
            .iter()
            .all(|x| local.get(&x.role).is_some_and(|l| l.contains(&x.snapshot)))
    }
}

/// Remove the destroyed sets (whole) from a history's manifests and lists.
fn after_prune(
    manifests: &[Manifest],
    local: &BTreeMap<String, Vec<String>>,
    destroyed: &BTreeSet<String>,
) -> (Vec<Manifest>, BTreeMap<String, Vec<String>>) {
    let ms = manifests
        .iter()
        .filter(|m| !destroyed.contains(&m.id))
        .cloned()
        .collect();
    let l = local
        .iter()
        .map(|(r, v)| {
            (
                r.clone(),
                v.iter()
                    .filter(|s| !destroyed.contains(*s))
                    .cloned()
                    .collect(),
            )
        })
        .collect();
    (ms, l)
}

fn newest_complete_full(ms: &[Manifest], complete: &dyn Fn(&Manifest) -> bool) -> Option<String> {
    ms.iter()
        .rev()
        .find(|m| m.kind == SetKind::Full && complete(m))
        .map(|m| m.id.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn primary_never_loses_the_common_snapshot_or_newest_complete_set(h in history_strategy()) {
        let record = StandbyRecord { holds: h.standby_holds.clone(), ..Default::default() };
        let complete = complete_in(&h.local);
        let protected = protect_primary(&h.manifests, &complete, &h.local, Some(&record));
        let decisions = plan_sets(&h.manifests, &complete, &protected, &retention(&h));
        prop_assert_eq!(decisions.len(), h.manifests.len(), "one decision per set");
        let destroyed: BTreeSet<String> = decisions.iter().filter(|d| d.destroy).map(|d| d.set_id.clone()).collect();

        // the common snapshot per volume, computed independently
        for (role, held) in &h.standby_holds {
            let here = h.local.get(role).cloned().unwrap_or_default();
            if let Some(common) = held.iter().rev().find(|s| here.contains(s)) {
                prop_assert!(!destroyed.contains(common), "common snapshot {} of {} destroyed", common, role);
            }
        }
        let newest = newest_complete_full(&h.manifests, &complete);
        if let Some(n) = &newest {
            prop_assert!(!destroyed.contains(n), "newest complete set {} destroyed", n);
        }
        // after pruning the newest complete set is the same, and still complete
        let (ms, local) = after_prune(&h.manifests, &h.local, &destroyed);
        let complete2 = complete_in(&local);
        prop_assert_eq!(newest_complete_full(&ms, &complete2), newest);
        // incomplete sets are gone unless protected
        for m in &ms {
            prop_assert!(complete2(m) || protected.contains_key(&m.id));
        }
        // stable: a second prune of the survivors destroys nothing more
        let protected2 = protect_primary(&ms, &complete2, &local, Some(&record));
        let again = plan_sets(&ms, &complete2, &protected2, &retention(&h));
        let more: Vec<&str> = again.iter().filter(|d| d.destroy).map(|d| d.set_id.as_str()).collect();
        let incomplete_left: Vec<&str> = ms.iter().filter(|m| !complete2(m)).map(|m| m.id.as_str()).collect();
        prop_assert!(more.iter().all(|id| incomplete_left.contains(id)), "second prune destroyed {:?}", more);
    }

    #[test]
    fn standby_keeps_newest_received_and_the_failover_pair(h in history_strategy()) {
        let complete = complete_in(&h.local);
        let protected = protect_standby(&h.manifests, &complete, &h.local, "redolog");
        let decisions = plan_sets(&h.manifests, &complete, &protected, &retention(&h));
        let destroyed: BTreeSet<String> = decisions.iter().filter(|d| d.destroy).map(|d| d.set_id.clone()).collect();
        for (role, snaps) in &h.local {
            if let Some(newest) = snaps.last() {
                prop_assert!(!destroyed.contains(newest), "newest received {} of {} destroyed", newest, role);
            }
        }
        let before = failover::select(&h.manifests, &complete, "redolog", None)
            .ok()
            .map(|(s, r)| (s.id.clone(), r.id.clone()));
        let (ms, local) = after_prune(&h.manifests, &h.local, &destroyed);
        let complete2 = complete_in(&local);
        let after = failover::select(&ms, &complete2, "redolog", None)
            .ok()
            .map(|(s, r)| (s.id.clone(), r.id.clone()));
        prop_assert_eq!(before, after, "failover would use other sets after pruning");
    }

    #[test]
    fn first_interval_keep_all_keeps_everything_in_it(h in history_strategy()) {
        let grid = format!("1x2h(keep=all) | {}", h.grid);
        let r = Retention { full: Grid::parse(&grid).unwrap(), redolog: Grid::parse(&grid).unwrap(), keep_min_age: std::time::Duration::ZERO };
        let complete = |_: &Manifest| true;
        let decisions = plan_sets(&h.manifests, &complete, &BTreeMap::new(), &r);
        for kind in [SetKind::Full, SetKind::Redolog] {
            let of_kind: Vec<&Manifest> = h.manifests.iter().filter(|m| m.kind == kind).collect();
            let Some(youngest) = of_kind.last() else { continue };
            let t0 = youngest.members[0].before;
            for m in of_kind {
                let young = t0.duration_since(m.members[0].before) < SignedDuration::from_hours(2);
                let d = decisions.iter().find(|d| d.set_id == m.id).unwrap();
                if young {
                    prop_assert!(!d.destroy, "{} is within the keep=all interval", m.id);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// `snapsite prune` on real btrfs.

fn append(lab: &Lab, role: &str, line: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.live(role).join("log"))
        .unwrap();
    writeln!(f, "{line}").unwrap();
    f.sync_all().unwrap();
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn prune_on_btrfs_keeps_the_common_snapshot_and_shipping_stays_incremental() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    // Keep only the newest set of each kind by the grid: everything else
    // goes unless protected.
    let retention = "\n[retention]\ngrid = \"1x1ms\"\n";
    append_to(&lab.pri_cfg, retention);
    let mut stb = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    // The standby's default keep_min_age (7 days) would keep every set
    // committed in this test: checked below, then turned off.
    let stb_default_age = lab.dir.path().join("standby-default-age.toml");
    std::fs::write(&stb_default_age, format!("{stb}{retention}")).unwrap();
    stb.push_str(retention);
    stb.push_str("keep_min_age = \"0s\"\n");
    std::fs::write(&lab.stb_cfg, stb).unwrap();
    lab.fill_same(7, 512 * 1024);

    // F1 R1 shipped; then F2 R2 R3 taken but not shipped.
    let f1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    append(&lab, "redolog", "1");
    let r1 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    append(&lab, "redolog", "2");
    let f2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    append(&lab, "redolog", "3");
    let r2 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    append(&lab, "redolog", "4");
    let r3 = lab.snapshot(true)["id"].as_str().unwrap().to_string();

    // The dry run names every set and changes nothing.
    let dry = json(&lab.ok(&lab.pri_cfg, &["prune", "--dry-run", "--json"]));
    assert_eq!(dry["dry_run"], true);
    assert!(dry["destroyed_sets"].as_array().unwrap().is_empty());
    let decisions: BTreeMap<String, (bool, String)> = dry["plan"]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["set_id"].as_str().unwrap().to_string(),
                (
                    d["destroy"].as_bool().unwrap(),
                    d["reason"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    // Primary: F1 holds the common snapshot of mysql/blob/index, R1 of
    // redolog; F2 is the newest complete full set; R3 the newest redolog.
    assert!(
        !decisions[&f1].0 && decisions[&f1].1.contains("common snapshot"),
        "{decisions:?}"
    );
    assert!(
        !decisions[&r1].0 && decisions[&r1].1.contains("common snapshot of `redolog`"),
        "{decisions:?}"
    );
    assert!(
        !decisions[&f2].0 && decisions[&f2].1.contains("newest complete full set"),
        "{decisions:?}"
    );
    assert!(decisions[&r2].0, "{decisions:?}");
    assert!(!decisions[&r3].0, "{decisions:?}");
    assert!(lab.primary_snap("redolog", &r2).exists());

    // `prune` with `cfg` destroys `n` sets and leaves `left`.
    let prune = |cfg: &std::path::Path, n: usize, left: &[&String]| {
        let text = lab.ok(cfg, &["prune"]);
        assert!(text.contains(&format!("destroyed {n} set(s)")), "{text}");
        let sets = ids(&json(&lab.ok(cfg, &["sets", "--json"])));
        assert_eq!(sets.iter().collect::<Vec<_>>(), left);
    };
    prune(&lab.pri_cfg, 1, &[&f1, &r1, &f2, &r3]);
    assert!(
        !lab.primary_snap("redolog", &r2).exists(),
        "snapshot destroyed"
    );
    assert!(
        !lab.dir
            .path()
            .join(format!("state-pri/sets/{r2}.json"))
            .exists(),
        "manifest removed"
    );

    // Shipping goes on incrementally from the common snapshots.
    let rep = lab.ship(&lab.pri_cfg);
    let bases: BTreeMap<(String, String), Option<String>> = rep["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                (
                    s["set_id"].as_str().unwrap().to_string(),
                    s["role"].as_str().unwrap().to_string(),
                ),
                s["base"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        bases[&(f2.clone(), "mysql".to_string())].as_deref(),
        Some(f1.as_str())
    );
    assert_eq!(
        bases[&(f2.clone(), "redolog".to_string())].as_deref(),
        Some(r1.as_str())
    );
    assert_eq!(
        bases[&(r3.clone(), "redolog".to_string())].as_deref(),
        Some(f2.as_str())
    );
    assert!(
        bases.values().all(|b| b.is_some()),
        "all incremental: {bases:?}"
    );

    // Now the common snapshots moved to F2 / R3: the primary may drop F1, R1.
    prune(&lab.pri_cfg, 2, &[&f2, &r3]);

    // The standby keeps the failover pair (F2, R3) and its newest received
    // snapshots; F1 and R1 go, with their receipts.
    let plan_before = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    let young = lab.ok(&stb_default_age, &["prune", "--dry-run"]);
    assert!(young.contains("keep_min_age"), "{young}");
    assert!(
        young.contains("would destroy 0 set(s)"),
        "nothing is destroyed while young: {young}"
    );
    prune(&lab.stb_cfg, 2, &[&f2, &r3]);
    assert!(!lab.standby_recv("mysql").join(&f1).exists());
    assert!(
        !lab.dir
            .path()
            .join(format!("state-stb/received/mysql/{f1}.json"))
            .exists()
    );
    assert_eq!(
        lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]),
        plan_before
    );

    // The next set still ships incrementally on both sides of the prune, and
    // the pruned sets are not sent again.
    append(&lab, "redolog", "5");
    let r4 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    let rep = lab.ship(&lab.pri_cfg);
    let snaps = rep["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 1, "{rep}");
    assert_eq!(snaps[0]["set_id"], r4.as_str());
    assert_eq!(snaps[0]["base"], r3.as_str());
    assert_eq!(rep["committed"].as_array().unwrap().len(), 1);
}

#[test]
fn prune_refuses_without_retention_and_names_the_file() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let out = lab.run(&lab.pri_cfg, &["prune", "--dry-run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no [retention] section") && err.contains("primary.toml"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Long histories (issue 23): thousands of prunes at random cadences, each
// checked against an independent model of the rule the README documents,
// and the grid's promise (every bucket that received a set holds one).

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// A tier as the test sees it: COUNT x LEN (ms), keep N oldest (None: all).
#[derive(Debug, Clone)]
struct ModelTier {
    count: i64,
    len: i64,
    keep: Option<usize>,
}

fn unit(len: i64) -> String {
    match len {
        l if l % DAY == 0 => format!("{}d", l / DAY),
        l if l % HOUR == 0 => format!("{}h", l / HOUR),
        l if l % MIN == 0 => format!("{}m", l / MIN),
        l => format!("{l}ms"),
    }
}

fn grid_text(tiers: &[ModelTier]) -> String {
    tiers
        .iter()
        .map(|t| {
            let keep = match t.keep {
                None => "(keep=all)".to_string(),
                Some(1) => String::new(),
                Some(k) => format!("(keep={k})"),
            };
            format!("{}x{}{keep}", t.count, unit(t.len))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The documented rule, written from the README: the youngest set is kept;
/// tiers laid end to end by age from it; in a tier, the bucket of a set is
/// floor(t / LEN) in UTC milliseconds since the epoch; each (tier, bucket)
/// keeps its N oldest (equal times: the earlier listed); older than the grid
/// goes. Returns the kept indexes.
fn model_keep(tiers: &[ModelTier], times: &[i64]) -> BTreeSet<usize> {
    let mut kept = BTreeSet::new();
    let Some(&y) = times.iter().max() else {
        return kept;
    };
    let anchor = times.iter().position(|&t| t == y).unwrap();
    kept.insert(anchor);
    let place = |i: usize| -> Option<(usize, i64)> {
        let age = y - times[i];
        let mut start = 0;
        for (n, t) in tiers.iter().enumerate() {
            let end = start + t.count * t.len;
            if age >= start && age < end {
                return Some((n, times[i].div_euclid(t.len)));
            }
            start = end;
        }
        None
    };
    let places: Vec<Option<(usize, i64)>> = (0..times.len()).map(place).collect();
    for i in 0..times.len() {
        if i == anchor {
            continue;
        }
        let Some((n, b)) = places[i] else { continue };
        let keep = match tiers[n].keep {
            None => usize::MAX,
            Some(k) => k,
        };
        let older = (0..times.len())
            .filter(|&j| j != anchor && j != i && places[j] == Some((n, b)))
            .filter(|&j| times[j] < times[i] || (times[j] == times[i] && j < i))
            .count();
        if older < keep {
            kept.insert(i);
        }
    }
    kept
}

/// Every bucket lying wholly inside a tier that ever received a set holds
/// one now. `created` and `times` ascending.
fn check_occupancy(tiers: &[ModelTier], created: &[i64], times: &[i64]) -> Result<(), String> {
    let Some(&y) = times.last() else {
        return Ok(());
    };
    let mut start = 0;
    for (n, t) in tiers.iter().enumerate() {
        let end = start + t.count * t.len;
        // ages in [start, end) are times in (y - end, y - start]
        let first = (y - end).div_euclid(t.len) + 1;
        let last = (y - start + 1).div_euclid(t.len) - 1;
        for b in first..=last {
            let (lo, hi) = (b * t.len, (b + 1) * t.len);
            let had = created.partition_point(|&c| c < lo) < created.partition_point(|&c| c < hi);
            let holds = times.partition_point(|&c| c < lo) < times.partition_point(|&c| c < hi);
            if had && !holds {
                return Err(format!(
                    "tier {n} ({}x{}) bucket {} is empty though it received a set (youngest {})",
                    t.count,
                    unit(t.len),
                    ts(lo),
                    ts(y)
                ));
            }
        }
        start = end;
    }
    Ok(())
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap()
}

/// splitmix64: a seeded generator, so a failing history can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Tiers whose lengths grow and divide each other (1m | 5m | 15m | 1h |
/// 6h | 1d | 30d), optionally `keep=all` first.
fn nested_tiers(rng: &mut Rng) -> Vec<ModelTier> {
    let lens = [MIN, 5 * MIN, 15 * MIN, HOUR, 6 * HOUR, DAY, 30 * DAY];
    let mut out = Vec::new();
    let mut i = rng.below(4) as usize;
    if rng.chance(0.5) {
        out.push(ModelTier {
            count: 1 + rng.below(3) as i64,
            len: lens[i],
            keep: None,
        });
    }
    for _ in 0..1 + rng.below(3) {
        out.push(ModelTier {
            count: 1 + rng.below(8) as i64,
            len: lens[i],
            keep: Some(1 + rng.below(3) as usize),
        });
        i = (i + rng.below(3) as usize).min(lens.len() - 1);
    }
    out
}

/// Any tiers at all (lengths need not nest or grow): only the model is
/// checked on these.
fn any_tiers(rng: &mut Rng) -> Vec<ModelTier> {
    let lens = [7_000, MIN, 45 * MIN, HOUR, 5 * HOUR, DAY];
    (0..1 + rng.below(4))
        .map(|_| ModelTier {
            count: 1 + rng.below(5) as i64,
            len: lens[rng.below(lens.len() as u64) as usize],
            keep: if rng.chance(0.2) {
                None
            } else {
                Some(1 + rng.below(3) as usize)
            },
        })
        .collect()
}

/// One long history: sets at a cadence (on slots with lateness of
/// milliseconds to seconds, or at random gaps), bursts and outages, a prune
/// at random moments; after every prune production equals the model, and
/// (nested tiers) every bucket that received a set holds one.
fn long_history(seed: u64, steps: usize, nested: bool) {
    let mut rng = Rng(seed);
    let tiers = if nested {
        nested_tiers(&mut rng)
    } else {
        any_tiers(&mut rng)
    };
    let text = grid_text(&tiers);
    let grid = Grid::parse(&text).unwrap();
    let cadence = [MIN, 5 * MIN, 15 * MIN, HOUR][rng.below(4) as usize];
    let prune_p = [1.0, 0.3, 0.05][rng.below(3) as usize];
    let on_slots = rng.chance(0.6);
    let mut t: i64 = 1_790_000_000_000 + rng.below(DAY as u64) as i64;
    let mut created: Vec<i64> = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    let mut prunes = 0;
    for step in 0..steps {
        let next = if rng.chance(0.01) {
            t + 1 + rng.below(3) as i64 // a burst
        } else if rng.chance(0.005) {
            t + rng.below(3 * DAY as u64) as i64 // an outage
        } else if on_slots {
            // the next slot, taken late by milliseconds (sometimes seconds)
            let slot = (t.div_euclid(cadence) + 1) * cadence;
            slot + if rng.chance(0.1) {
                rng.below(30_000) as i64
            } else {
                rng.below(50) as i64
            }
        } else {
            t + 1 + rng.below(2 * cadence as u64) as i64
        };
        t = next.max(t + 1);
        created.push(t);
        times.push(t);
        if !rng.chance(prune_p) && step + 1 < steps {
            continue;
        }
        prunes += 1;
        let stamps: Vec<Timestamp> = times.iter().map(|&x| ts(x)).collect();
        let destroy = snapsite::ops::prune::grid_destroy(&grid, &stamps);
        let kept = model_keep(&tiers, &times);
        let want: BTreeSet<usize> = (0..times.len()).filter(|i| !kept.contains(i)).collect();
        assert_eq!(
            destroy, want,
            "seed {seed} grid `{text}` step {step}: production and model differ"
        );
        times = times
            .iter()
            .enumerate()
            .filter(|(i, _)| !destroy.contains(i))
            .map(|(_, &x)| x)
            .collect();
        // A prune of the survivors destroys nothing more.
        let stamps: Vec<Timestamp> = times.iter().map(|&x| ts(x)).collect();
        assert!(
            snapsite::ops::prune::grid_destroy(&grid, &stamps).is_empty(),
            "seed {seed} grid `{text}` step {step}: a second prune destroys more"
        );
        if nested {
            if let Err(e) = check_occupancy(&tiers, &created, &times) {
                panic!("seed {seed} grid `{text}` step {step}: {e}");
            }
        }
    }
    assert!(prunes > 0);
}

#[test]
fn long_histories_equal_the_model_and_fill_every_bucket() {
    // 24 histories of 2 000 sets each (about 30 000 prunes), nested grids.
    for seed in 0..24 {
        long_history(0x5eed_0000 + seed, 2_000, true);
    }
}

#[test]
fn long_histories_with_any_grid_equal_the_model() {
    for seed in 0..16 {
        long_history(0xa11_0000 + seed, 1_500, false);
    }
}

fn example_tiers() -> Vec<ModelTier> {
    let t = |count, len, keep| ModelTier { count, len, keep };
    vec![
        t(1, HOUR, None),
        t(24, HOUR, Some(1)),
        t(30, DAY, Some(1)),
        t(11, 30 * DAY, Some(1)),
    ]
}

fn example_redolog_tiers() -> Vec<ModelTier> {
    let t = |count, len, keep| ModelTier { count, len, keep };
    vec![t(1, HOUR, None), t(6, HOUR, Some(1))]
}

/// How many of `times` (ascending) lie in each tier, by age from the youngest.
fn per_tier(tiers: &[ModelTier], times: &[i64]) -> Vec<usize> {
    let mut out = vec![0; tiers.len()];
    let Some(&y) = times.last() else { return out };
    for &t in times {
        let mut start = 0;
        for (n, tr) in tiers.iter().enumerate() {
            let end = start + tr.count * tr.len;
            if y - t >= start && y - t < end {
                out[n] += 1;
                break;
            }
            start = end;
        }
    }
    out
}

/// The rule before issue 23, for the transition: buckets laid from the
/// youngest set by age, each keeping its newest set.
fn old_rule_keep(tiers: &[ModelTier], times: &[i64]) -> BTreeSet<usize> {
    let Some(&y) = times.iter().max() else {
        return BTreeSet::new();
    };
    let mut best: BTreeMap<i64, usize> = BTreeMap::new(); // bucket start age -> index
    let mut keep_all = BTreeSet::new();
    for (i, &t) in times.iter().enumerate() {
        let age = y - t;
        let mut start = 0;
        for tr in tiers {
            if age >= start && age < start + tr.count * tr.len {
                let b = start + (age - start) / tr.len * tr.len;
                if tr.keep.is_none() {
                    keep_all.insert(i);
                } else {
                    let e = best.entry(b).or_insert(i);
                    if times[*e] < t {
                        *e = i;
                    }
                }
                break;
            }
            start += tr.count * tr.len;
        }
    }
    keep_all.extend(best.values());
    keep_all
}

/// A year of hourly sets, taken on the hour and late by up to 50 ms
/// (sometimes 30 s), the example grid, a prune after each: production
/// equals the model at every prune and every bucket that received a set
/// holds one. The same year under the old rule ends as issue 23 found it,
/// and the first prune under the new rule loses no bucket's only set.
#[test]
fn a_year_of_hourly_sets_fills_every_tier_of_the_example_grid() {
    let tiers = example_tiers();
    let grid = Grid::parse(&grid_text(&tiers)).unwrap();
    assert_eq!(grid.to_string(), "1x1h(keep=all) | 24x1h | 30x1d | 11x30d");
    let mut rng = Rng(23);
    let start: i64 = "2026-01-01T00:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_millisecond();
    let mut created = Vec::new();
    let mut times: Vec<i64> = Vec::new();
    let mut old: Vec<i64> = Vec::new();
    for h in 0..365 * 24 {
        let late = if rng.chance(0.1) {
            rng.below(30_000)
        } else {
            rng.below(50)
        };
        let t = start + h * HOUR + late as i64;
        created.push(t);
        times.push(t);
        old.push(t);
        let stamps: Vec<Timestamp> = times.iter().map(|&x| ts(x)).collect();
        let destroy = snapsite::ops::prune::grid_destroy(&grid, &stamps);
        let kept = model_keep(&tiers, &times);
        assert_eq!(destroy.len() + kept.len(), times.len(), "hour {h}");
        assert!(destroy.iter().all(|i| !kept.contains(i)), "hour {h}");
        times = kept.iter().map(|&i| times[i]).collect();
        check_occupancy(&tiers, &created, &times).unwrap_or_else(|e| panic!("hour {h}: {e}"));
        let k = old_rule_keep(&tiers, &old);
        old = k.iter().map(|&i| old[i]).collect();
    }
    let new_tiers = per_tier(&tiers, &times);
    let old_tiers = per_tier(&tiers, &old);
    eprintln!("after a year, sets per tier: new rule {new_tiers:?}, old rule {old_tiers:?}");
    // Every full bucket of each tier holds its set; the edges of a tier hold
    // one more or one less depending on the minute.
    assert!((1..=2).contains(&new_tiers[0]), "{new_tiers:?}");
    assert!((23..=25).contains(&new_tiers[1]), "{new_tiers:?}");
    assert!((29..=31).contains(&new_tiers[2]), "{new_tiers:?}");
    assert!((10..=12).contains(&new_tiers[3]), "{new_tiers:?}");
    // The defect the issue found: nothing reaches the daily tiers.
    assert!(old_tiers[2] <= 1 && old_tiers[3] == 0, "{old_tiers:?}");

    // The first prune under the new rule of what the old rule kept: every
    // tier and every bucket of it that held a set still holds one.
    let stamps: Vec<Timestamp> = old.iter().map(|&x| ts(x)).collect();
    let destroy = snapsite::ops::prune::grid_destroy(&grid, &stamps);
    let after: Vec<i64> = (0..old.len())
        .filter(|i| !destroy.contains(i))
        .map(|i| old[i])
        .collect();
    let y = *old.last().unwrap();
    assert_eq!(after.last(), Some(&y), "the youngest stays");
    let bucket_of = |t: i64| -> Option<(usize, i64)> {
        let mut s = 0;
        for (n, tr) in tiers.iter().enumerate() {
            if y - t >= s && y - t < s + tr.count * tr.len {
                return Some((n, t.div_euclid(tr.len)));
            }
            s += tr.count * tr.len;
        }
        None
    };
    let before: BTreeSet<_> = old.iter().filter_map(|&t| bucket_of(t)).collect();
    let now: BTreeSet<_> = after.iter().filter_map(|&t| bucket_of(t)).collect();
    assert_eq!(before, now, "a bucket lost its only set in the transition");
    assert_eq!(
        per_tier(&tiers, &after).iter().filter(|&&n| n > 0).count(),
        old_tiers.iter().filter(|&&n| n > 0).count()
    );
}

/// A simulated standby: full sets every `full` ms and redolog sets every
/// `redo` ms on their slots, each committed 1 s .. `max_delay` after it was
/// taken (by the standby's clock), the whole prune planner
/// (`protect_standby`, `protect_recent`, `plan_sets_by` on commit times) at
/// random moments. Returns the per-volume count of the redolog volume
/// (it holds both kinds) after each prune, and the final manifests.
struct StandbySim {
    counts: Vec<(i64, usize)>,
    manifests: Vec<Manifest>,
    committed_full: Vec<i64>,
    primary_counts: Vec<(i64, usize)>,
}

#[allow(clippy::too_many_arguments)]
fn simulate_sites(
    days: i64,
    full: i64,
    redo: i64,
    retention: &Retention,
    model: Option<(&[ModelTier], &[ModelTier])>,
    max_delay: i64,
    prune_every: u64,
    seed: u64,
) -> StandbySim {
    use snapsite::ops::prune::{plan_sets_by, protect_recent};
    let mut rng = Rng(seed);
    let start: i64 = "2026-03-01T00:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_millisecond();
    let mut stb: Vec<Manifest> = Vec::new();
    let mut pri: Vec<Manifest> = Vec::new();
    let mut out = StandbySim {
        counts: Vec::new(),
        manifests: Vec::new(),
        committed_full: Vec::new(),
        primary_counts: Vec::new(),
    };
    let k = SignedDuration::try_from(retention.keep_min_age)
        .unwrap()
        .as_millis() as i64;
    let slots = days * DAY / redo;
    for slot in 0..slots {
        let at = start + slot * redo + rng.below(50) as i64;
        let kind = if (slot * redo) % full == 0 {
            SetKind::Full
        } else {
            SetKind::Redolog
        };
        let mut m = manifest(ts(at), kind);
        // commits follow each other: a ship ends before the next set is taken
        let commit = (at + 1_000 + rng.below(max_delay as u64) as i64)
            .min(start + (slot + 1) * redo - 1)
            .max(
                stb.last()
                    .and_then(|m| m.committed_at)
                    .map_or(0, |c| c.as_millisecond() + 1),
            );
        m.committed_at = Some(ts(commit));
        if kind == SetKind::Full {
            out.committed_full.push(commit);
        }
        pri.push(m.clone());
        stb.push(m);
        if rng.below(prune_every) != 0 && slot + 1 < slots {
            continue;
        }
        let now = ts(commit + rng.below(1_000) as i64);
        // the standby
        let all = |_: &Manifest| true;
        let local = ids_by_role(&stb);
        let mut p = protect_standby(&stb, &all, &local, "redolog");
        protect_recent(&mut p, &stb, &all, "redolog", retention, now);
        let d = plan_sets_by(&stb, &all, &p, retention, &|m| m.committed_at.unwrap());
        let destroyed: BTreeSet<&str> = d
            .iter()
            .filter(|x| x.destroy)
            .map(|x| x.set_id.as_str())
            .collect();
        if let Some((ft, rt)) = model {
            // The documented standby rule, independently: the grids on commit
            // times, the newest full set and the newest redolog set after it,
            // every full set committed within keep_min_age, and the last
            // redolog set before each full set when committed within it.
            let c = |m: &Manifest| m.committed_at.unwrap().as_millisecond();
            let recent = |m: &Manifest| now.as_millisecond() - c(m) <= k;
            let mut kept: BTreeSet<String> = BTreeSet::new();
            for (kind, tiers) in [(SetKind::Full, ft), (SetKind::Redolog, rt)] {
                let of: Vec<&Manifest> = stb.iter().filter(|m| m.kind == kind).collect();
                let t: Vec<i64> = of.iter().map(|m| c(m)).collect();
                kept.extend(model_keep(tiers, &t).into_iter().map(|i| of[i].id.clone()));
            }
            let newest_full = stb.iter().rposition(|m| m.kind == SetKind::Full);
            if let Some(f) = newest_full {
                kept.insert(stb[f].id.clone());
            }
            kept.insert(stb.last().unwrap().id.clone());
            for (i, m) in stb.iter().enumerate() {
                if m.kind == SetKind::Full {
                    if recent(m) {
                        kept.insert(m.id.clone());
                    }
                    if i > 0 && stb[i - 1].kind == SetKind::Redolog && recent(&stb[i - 1]) {
                        kept.insert(stb[i - 1].id.clone());
                    }
                }
            }
            let got: BTreeSet<String> = stb
                .iter()
                .filter(|m| !destroyed.contains(m.id.as_str()))
                .map(|m| m.id.clone())
                .collect();
            assert_eq!(
                got, kept,
                "slot {slot}: the planner differs from the documented rule"
            );
        }
        stb.retain(|m| !destroyed.contains(m.id.as_str()));
        out.counts.push((commit - start, stb.len()));
        // the primary: the standby holds everything shipped
        let local = ids_by_role(&pri);
        let holds: BTreeMap<String, BTreeSet<String>> = local
            .iter()
            .map(|(r, v)| {
                (
                    r.clone(),
                    v.iter()
                        .filter(|id| stb.iter().any(|m| &m.id == *id))
                        .cloned()
                        .collect(),
                )
            })
            .collect();
        let record = StandbyRecord {
            holds,
            ..Default::default()
        };
        let p = protect_primary(&pri, &all, &local, Some(&record));
        let d = plan_sets(&pri, &all, &p, retention);
        let destroyed: BTreeSet<&str> = d
            .iter()
            .filter(|x| x.destroy)
            .map(|x| x.set_id.as_str())
            .collect();
        pri.retain(|m| !destroyed.contains(m.id.as_str()));
        out.primary_counts.push((commit - start, pri.len()));
    }
    out.manifests = stb;
    out
}

fn example_retention(keep_min_age_days: u64) -> Retention {
    Retention {
        full: Grid::parse(&grid_text(&example_tiers())).unwrap(),
        redolog: Grid::parse(&grid_text(&example_redolog_tiers())).unwrap(),
        keep_min_age: std::time::Duration::from_secs(keep_min_age_days * 86_400),
    }
}

/// The standby over 60 days (hourly full sets, 15-minute redolog sets,
/// keep_min_age 7 days, the whole planner checked against the documented
/// rule at every prune): every bucket of the full grid that received a
/// committed set holds one. `SNAPSITE_LONG=1` runs a whole year.
#[test]
fn the_standby_planner_keeps_the_documented_sets_and_fills_the_grid() {
    let days = if std::env::var_os("SNAPSITE_LONG").is_some() {
        365
    } else {
        60
    };
    let r = example_retention(7);
    let sim = simulate_sites(
        days,
        HOUR,
        15 * MIN,
        &r,
        Some((&example_tiers(), &example_redolog_tiers())),
        120_000,
        6,
        7,
    );
    let full: Vec<i64> = sim
        .manifests
        .iter()
        .filter(|m| m.kind == SetKind::Full)
        .map(|m| m.committed_at.unwrap().as_millisecond())
        .collect();
    check_occupancy(&example_tiers(), &sim.committed_full, &full).unwrap();
    let tiers = per_tier(&example_tiers(), &full);
    eprintln!(
        "standby after {days} days: full sets per tier {tiers:?}, {} sets in all; primary {} sets",
        sim.manifests.len(),
        sim.primary_counts.last().unwrap().1
    );
    // the tiers the run reached are full (the 11x30d one from day 31 on);
    // the daily tier also holds the hourly sets keep_min_age protects
    assert!((23..=25).contains(&tiers[1]) && tiers[2] >= 29, "{tiers:?}");
    assert!(tiers[3] as i64 >= (days - 31) / 30, "{tiers:?}");
}

/// Issue 23 item 1: with a 1-minute redolog cadence (hourly full sets, the
/// example retention, keep_min_age 7 days) the count per volume on both
/// sites stays within what `snapsite check` prints, over 10 simulated days
/// of the standby's commit times (`SNAPSITE_LONG=1`: 30 days).
#[test]
fn counts_stay_within_the_printed_bound_at_a_one_minute_cadence() {
    use snapsite::base::config::Schedule;
    let days = if std::env::var_os("SNAPSITE_LONG").is_some() {
        30
    } else {
        10
    };
    let r = example_retention(7);
    let schedule = Schedule {
        full_set_interval: std::time::Duration::from_secs(3600),
        redolog_interval: Some(std::time::Duration::from_secs(60)),
        retry_min: std::time::Duration::from_secs(10),
        retry_max: std::time::Duration::from_secs(900),
    };
    let bound = snapsite::ops::prune::max_snapshots_per_volume(&schedule, &r);
    let sim = simulate_sites(days, HOUR, MIN, &r, None, 50_000, 20, 11);
    let max_stb = sim.counts.iter().map(|c| c.1).max().unwrap();
    let max_pri = sim.primary_counts.iter().map(|c| c.1).max().unwrap();
    // steady state: after keep_min_age has passed
    let steady = |v: &[(i64, usize)]| {
        v.iter()
            .filter(|c| c.0 > 8 * DAY)
            .map(|c| c.1)
            .max()
            .unwrap()
    };
    eprintln!(
        "1-minute redolog cadence, {days} days: at most {max_stb} snapshots per volume on the standby (steady state {}), {max_pri} on the primary (steady {}); bound printed by check: {bound:?}",
        steady(&sim.counts),
        steady(&sim.primary_counts)
    );
    assert!(
        max_stb as u64 <= bound.standby,
        "standby {max_stb} > {bound:?}"
    );
    assert!(
        max_pri as u64 <= bound.primary,
        "primary {max_pri} > {bound:?}"
    );
    // and it is close to what is really held (the monthly and most of the
    // daily tier are still empty after 10 days: up to 41 + 12 sets)
    assert!(bound.standby <= max_stb as u64 + 100, "{bound:?}");
    // Without the thinning, keep_min_age alone would have kept every redolog
    // set of the last 7 days.
    assert!(max_stb < 7 * 24 * 60 / 10);
}

// ---------------------------------------------------------------------------
// Issue 23 item 4: `snapsite run --once` stepped through a faked clock
// (libfaketime, frozen at each step's time, TZ Europe/Vienna across the
// March DST change) on real btrfs, the standby pruning after each step:
// after every step, the sets on both sites
// are what the documented rules predict (computed here from the times the
// test chose), no snapshot is left without a set, and at the end a
// rehearsal from an old full set and a failover to the newest one both
// replay the data of their sets.

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// What the test knows of one set: id, kind, the time in its id, and the
/// step time at which the standby committed it.
#[derive(Debug, Clone)]
struct Known {
    id: String,
    kind: SetKind,
    taken: i64,
    committed: i64,
}

fn ids_in(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn entries(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The documented keep rule of one site for the sets the model holds
/// (`time` places a set in the grids), plus what is never pruned there.
fn predict(
    sets: &[Known],
    time: &dyn Fn(&Known) -> i64,
    standby_now: Option<(i64, i64)>,
) -> BTreeSet<String> {
    let mut kept = BTreeSet::new();
    for (kind, tiers) in [
        (SetKind::Full, example_tiers()),
        (SetKind::Redolog, example_redolog_tiers()),
    ] {
        let of: Vec<&Known> = sets.iter().filter(|k| k.kind == kind).collect();
        let t: Vec<i64> = of.iter().map(|k| time(k)).collect();
        kept.extend(model_keep(&tiers, &t).into_iter().map(|i| of[i].id.clone()));
    }
    // Both sites: the newest set holding each volume (the common snapshot
    // on the primary, the newest received on the standby) and the newest
    // full set; the standby also the newest redolog set after it.
    if let Some(f) = sets.iter().rev().find(|k| k.kind == SetKind::Full) {
        kept.insert(f.id.clone());
    }
    if let Some(last) = sets.last() {
        kept.insert(last.id.clone());
    }
    if let Some((now, min_age)) = standby_now {
        for (i, k) in sets.iter().enumerate() {
            if k.kind == SetKind::Full {
                if now - k.committed <= min_age {
                    kept.insert(k.id.clone());
                }
                if i > 0
                    && sets[i - 1].kind == SetKind::Redolog
                    && now - sets[i - 1].committed <= min_age
                {
                    kept.insert(sets[i - 1].id.clone());
                }
            }
        }
    }
    kept
}

#[test]
fn a_month_of_run_once_through_a_faked_clock() {
    require_real!();
    if !std::path::Path::new(FAKETIME_LIB).exists() {
        let why =
            "libfaketime is not installed (apt-get install faketime; scripts/test installs it)";
        assert!(!must_be_real(), "{why}");
        eprintln!("SKIP a_month_of_run_once_through_a_faked_clock: {why}");
        return;
    }
    let long = std::env::var_os("SNAPSITE_LONG").is_some();
    let t_start = std::time::Instant::now();
    let out_dir = tempfile::tempdir().unwrap();
    let replayed = out_dir.path().join("replayed");
    std::fs::create_dir_all(&replayed).unwrap();
    let lab = Lab::new(&format!(
        "[\"/usr/bin/cp\", \"{{mount:mysql}}/state\", \"{{mount:redolog}}/log\", \"{}/\"]",
        replayed.display()
    ));
    let retention = "\n[retention]\ngrid = \"1x1h(keep=all) | 24x1h | 30x1d | 11x30d\"\nredolog_grid = \"1x1h(keep=all) | 6x1h\"\nkeep_min_age = \"7d\"\n";
    let mut pri = std::fs::read_to_string(&lab.pri_cfg).unwrap();
    pri.push_str(&format!(
        "\n[schedule]\nfull_set_interval = \"15m\"\nredolog_interval = \"1m\"\n{retention}"
    ));
    std::fs::write(&lab.pri_cfg, pri).unwrap();
    let mut stb = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    stb.push_str(retention);
    std::fs::write(&lab.stb_cfg, stb).unwrap();

    let vienna = jiff::tz::TimeZone::get("Europe/Vienna").unwrap();
    let faked = |at: i64, cfg: &std::path::Path, args: &[&str]| -> String {
        // libfaketime reads an absolute time as local time (TZ).
        let local = ts(at)
            .to_zoned(vienna.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        let out = run_snapsite(
            cfg,
            args,
            &[
                ("LD_PRELOAD", FAKETIME_LIB),
                ("FAKETIME", &local),
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
                ("TZ", "Europe/Vienna"),
                ("SNAPSITE_LOG", "snapsite=warn"),
            ],
        );
        common::output::success(&format!("snapsite {args:?} at {}", ts(at)), &out)
    };

    // The step times: whole seconds (libfaketime's format), across the DST
    // change of 2026-03-29. Sparse for four weeks, then dense for two days
    // so the hourly tiers fill (SNAPSITE_LONG=1: dense throughout).
    let mut rng = Rng(4);
    let start: i64 = "2026-03-01T00:00:07Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_millisecond();
    let end = start + 30 * DAY;
    let dense_from = if long { start } else { end - DAY };
    let mut steps = vec![start];
    loop {
        let t = *steps.last().unwrap();
        let gap = if t < dense_from {
            10 * HOUR + rng.below(26 * HOUR as u64) as i64
        } else if rng.chance(0.5) {
            // within the full set's 15-minute slot: a redolog snapshot
            MIN + rng.below(13 * MIN as u64) as i64
        } else if long {
            15 * MIN + rng.below(3 * HOUR as u64) as i64
        } else {
            20 * MIN + rng.below(80 * MIN as u64) as i64
        };
        let next = (t + gap) / 1000 * 1000;
        if next > end {
            break;
        }
        steps.push(next);
    }

    let pri_sets = lab.dir.path().join("state-pri/sets");
    let stb_sets = lab.dir.path().join("state-stb/sets");
    let mut pri_model: Vec<Known> = Vec::new();
    let mut stb_model: Vec<Known> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut state_at: BTreeMap<String, u64> = BTreeMap::new(); // set id -> step number
    let mut max_pri = 0;
    let mut max_stb = 0;
    for (n, &at) in steps.iter().enumerate() {
        let n = n as u64 + 1;
        // The application writes between steps.
        write_file(
            &lab.live("mysql").join("state"),
            format!("{n}\n").as_bytes(),
        );
        append(&lab, "redolog", &format!("step {n}"));
        if n % 5 == 0 {
            write_file(
                &lab.live("blob").join(format!("m{n}")),
                &random_bytes(n, 4096),
            );
        }
        faked(at, &lab.pri_cfg, &["run", "--once"]);
        // The standby prunes on its own (a timer in production), here
        // right after each step, by its own (faked) clock.
        faked(at, &lab.stb_cfg, &["prune"]);

        // What this step took: the sets the test has not seen yet.
        let here = ids_in(&pri_sets);
        let mut new: Vec<String> = here.difference(&seen).cloned().collect();
        new.sort();
        assert!(!new.is_empty(), "step {n} at {} took nothing", ts(at));
        for id in new {
            let (t, kind) = snapsite::base::model::parse_set_id(&id).unwrap();
            // The faked clock is frozen at the step's time: ids are that
            // time (or 1 ms after the previous id).
            let taken = t.as_millisecond();
            assert!(
                (at..at + 10).contains(&taken),
                "{id} not taken at {}",
                ts(at)
            );
            let k = Known {
                id: id.clone(),
                kind,
                taken,
                committed: at,
            };
            seen.insert(id.clone());
            state_at.insert(id, n);
            pri_model.push(k.clone());
            stb_model.push(k);
        }
        let want_pri = predict(&pri_model, &|k| k.taken, None);
        let want_stb = predict(&stb_model, &|k| k.committed, Some((at, 7 * DAY)));
        pri_model.retain(|k| want_pri.contains(&k.id));
        stb_model.retain(|k| want_stb.contains(&k.id));
        assert_eq!(here, want_pri, "primary after step {n} at {}", ts(at));
        assert_eq!(
            ids_in(&stb_sets),
            want_stb,
            "standby after step {n} at {}",
            ts(at)
        );
        // No snapshot leaked: on disk exactly the members of the sets.
        for role in ROLES {
            let members = |sets: &BTreeSet<String>| -> BTreeSet<String> {
                sets.iter()
                    .filter(|id| role == "redolog" || id.ends_with("-full"))
                    .cloned()
                    .collect()
            };
            assert_eq!(
                entries(&lab.pri.path(&format!("snap/{role}"))),
                members(&want_pri),
                "primary {role} step {n}"
            );
            assert_eq!(
                entries(&lab.standby_recv(role)),
                members(&want_stb),
                "standby {role} step {n}"
            );
        }
        max_pri = max_pri.max(want_pri.len());
        max_stb = max_stb.max(want_stb.len());
    }
    let last = *steps.last().unwrap();
    let fulls: Vec<&Known> = stb_model
        .iter()
        .filter(|k| k.kind == SetKind::Full)
        .collect();
    let tiers = per_tier(
        &example_tiers(),
        &fulls.iter().map(|k| k.committed).collect::<Vec<_>>(),
    );
    eprintln!(
        "{} steps over 30 days in {:.1}s: primary {} sets (max {max_pri}), standby {} (max {max_stb}); standby full sets per tier {tiers:?}",
        steps.len(),
        t_start.elapsed().as_secs_f64(),
        pri_model.len(),
        stb_model.len()
    );
    // The daily tier reached back 30 days: a full set for (almost) every day.
    assert!(tiers[2] >= 20, "{tiers:?}");

    // A rehearsal from the oldest full set replays its data ...
    let oldest = fulls.first().unwrap().id.clone();
    let newest_full = fulls.last().unwrap().id.clone();
    // failover pairs a full set with the newest redolog set after it (or
    // the full set's own redolog snapshot when there is none)
    let redolog_step = stb_model
        .iter()
        .rev()
        .find(|k| k.kind == SetKind::Redolog)
        .map(|k| state_at[&k.id])
        .unwrap_or(state_at[&oldest]);
    assert!(
        stb_model.iter().any(|k| k.kind == SetKind::Redolog),
        "no redolog set was kept"
    );
    // What the replay found: the state, and how many redolog lines.
    let replay_saw = || {
        let state = std::fs::read_to_string(replayed.join("state")).unwrap();
        let log = std::fs::read_to_string(replayed.join("log")).unwrap();
        (state.trim().to_string(), log.lines().count() as u64)
    };
    faked(last + MIN, &lab.stb_cfg, &["rehearse", "--set", &oldest]);
    let (state, lines) = replay_saw();
    assert_eq!(
        state,
        state_at[&oldest].to_string(),
        "rehearsal of {oldest}"
    );
    assert_eq!(lines, redolog_step, "rehearsal's redolog");
    // ... and a failover to the newest full set too.
    std::fs::remove_dir_all(&replayed).unwrap();
    std::fs::create_dir_all(&replayed).unwrap();
    faked(last + 2 * MIN, &lab.stb_cfg, &["failover"]);
    let (state, lines) = replay_saw();
    assert_eq!(
        state,
        state_at[&newest_full].to_string(),
        "failover to {newest_full}"
    );
    assert_eq!(
        lines,
        steps.len() as u64,
        "failover replays every step's log"
    );
}
