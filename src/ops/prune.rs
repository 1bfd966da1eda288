//! Retention: which sets to destroy. The keep rule is a zrepl-style grid
//! (`1x1h(keep=all) | 24x1h | 30x1d | 11x30d`, see `retention` for its exact
//! semantics), applied per kind (full sets with
//! `retention.grid`, redolog sets with `retention.redolog_grid`) as a pure
//! function with table tests; on top of it, sets holding a protected
//! snapshot are never destroyed:
//!
//! - primary: per volume the **common snapshot** (the newest snapshot the
//!   standby holds, recorded after every ship in `state_dir/standby.json`;
//!   with `[[standby]]`, each standby's, under `state_dir/standbys/<name>/`),
//!   and every member of the newest complete full set;
//! - standby: per volume the newest received snapshot (the base of the next
//!   incremental, even if its set is not committed yet), the newest complete
//!   full set and the redolog set failover would use with it; within
//!   `keep_min_age` every full set and the last redolog set before each
//!   (`protect_recent`). `max_snapshots_per_volume` bounds the count.
//!
//! Sets are pruned whole: every member snapshot, then (standby) the
//! receipts, then the manifest — see `apply` for why in that order. While
//! it prunes, `state_dir/journal-prune.json` shows the prune as under way
//! (`status`, `role`: killed, it is finished by `snapsite prune`).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use crate::backend;

mod holds;
use crate::base::catalog::{Catalog, StandbyRecord};
use crate::base::config::{Config, Retention};
use crate::base::error::{Context, Result};
use crate::base::model::{Manifest, SetKind, parse_set_id};
/// The grid itself lives in `retention` (pure, imports nothing of snapsite);
/// re-exported so `prune::Grid` keeps working for callers.
pub use crate::base::retention::{Grid, Interval, Keep, grid_destroy};

/// What prune decided for one set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetDecision {
    pub set_id: String,
    pub kind: SetKind,
    pub destroy: bool,
    /// Why (protected by what, outside the grid, incomplete...).
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrunePlan {
    /// Oldest first.
    pub sets: Vec<SetDecision>,
    /// Standby only: snapshots without a manifest that can never be
    /// committed (older than the newest committed set) and are not protected.
    pub orphans: Vec<(String, String)>,
    /// Primary: standbys gone from the config whose records this prune
    /// releases (their common snapshots are no longer kept), see
    /// [`split_standby_records`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released_standbys: Vec<String>,
}

impl PrunePlan {
    pub fn to_destroy(&self) -> impl Iterator<Item = &SetDecision> {
        self.sets.iter().filter(|d| d.destroy)
    }
}

/// Pure: decide every set. `protected` maps set ids to the reason they must
/// stay. Incomplete sets (members gone, e.g. a prune interrupted between
/// destroying snapshots and removing the manifest) are finished off unless
/// protected; the grid sees the complete ones.
pub fn plan_sets(
    manifests: &[Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    protected: &BTreeMap<String, String>,
    retention: &Retention,
) -> Vec<SetDecision> {
    plan_sets_by(manifests, complete, protected, retention, &set_time)
}

/// `plan_sets` with the grid placing each set at `time_of(set)`: the
/// standby uses the time it committed the set (its own clock), so sets from
/// a primary — honest or not — cannot claim a place in the grid's past.
pub fn plan_sets_by(
    manifests: &[Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    protected: &BTreeMap<String, String>,
    retention: &Retention,
    time_of: &dyn Fn(&Manifest) -> Timestamp,
) -> Vec<SetDecision> {
    let mut decided: BTreeMap<String, SetDecision> = BTreeMap::new();
    for kind in [SetKind::Full, SetKind::Redolog] {
        let grid = match kind {
            SetKind::Full => &retention.full,
            SetKind::Redolog => &retention.redolog,
        };
        let of_kind: Vec<&Manifest> = manifests.iter().filter(|m| m.kind == kind).collect();
        let (done, partial): (Vec<&Manifest>, Vec<&Manifest>) =
            of_kind.into_iter().partition(|m| complete(m));
        let times: Vec<Timestamp> = done.iter().map(|m| time_of(m)).collect();
        let by_grid = grid_destroy(grid, &times);
        let complete_sets = done.iter().enumerate().map(|(i, m)| {
            let (destroy, reason) = if let Some(why) = protected.get(&m.id) {
                (false, format!("protected: {why}"))
            } else if by_grid.contains(&i) {
                (true, format!("not kept by the grid `{grid}`"))
            } else {
                (false, format!("kept by the grid `{grid}`"))
            };
            (*m, destroy, reason)
        });
        let incomplete_sets = partial.iter().map(|m| match protected.get(&m.id) {
            Some(why) => (*m, false, format!("incomplete but protected: {why}")),
            None => (*m, true, "incomplete: members are missing".to_string()),
        });
        for (m, destroy, reason) in complete_sets.chain(incomplete_sets) {
            decided.insert(
                m.id.clone(),
                SetDecision {
                    set_id: m.id.clone(),
                    kind,
                    destroy,
                    reason,
                },
            );
        }
    }
    decided.into_values().collect()
}

/// The time a set stands for in the grid: its id's time (when it was started).
fn set_time(m: &Manifest) -> Timestamp {
    parse_set_id(&m.id)
        .map(|(t, _)| t)
        .unwrap_or_else(|| m.completed_time())
}

/// Primary: per role the common snapshot with the standby (newest snapshot
/// the standby is recorded to hold that is also here), and the newest
/// complete full set.
pub fn protect_primary(
    manifests: &[Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    local: &BTreeMap<String, Vec<String>>,
    record: Option<&StandbyRecord>,
) -> BTreeMap<String, String> {
    let records: Vec<(String, StandbyRecord)> = record
        .map(|r| {
            (
                crate::base::config::DEFAULT_STANDBY_NAME.to_string(),
                r.clone(),
            )
        })
        .into_iter()
        .collect();
    protect_primary_all(manifests, complete, local, &records)
}

/// [`protect_primary`] with every standby's record (`[[standby]]`, and any
/// standby still recorded here though gone from the config): each one's
/// common snapshot per role is kept, and the reason names the standby.
pub fn protect_primary_all(
    manifests: &[Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    local: &BTreeMap<String, Vec<String>>,
    records: &[(String, StandbyRecord)],
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    if let Some(s) = newest_complete(manifests, complete, SetKind::Full) {
        p.insert(s.id.clone(), "the newest complete full set".to_string());
    }
    for (name, rec) in records {
        let whom = if name == crate::base::config::DEFAULT_STANDBY_NAME {
            "the standby".to_string()
        } else {
            format!("standby `{name}`")
        };
        for (role, common) in rec.common_snapshots(local) {
            add_reason(
                &mut p,
                &common,
                format!("common snapshot of `{role}` with {whom}"),
            );
        }
    }
    p
}

/// Standby: per role the newest received snapshot, the newest complete full
/// set S and the redolog set failover would replay with it.
pub fn protect_standby(
    manifests: &[Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    local: &BTreeMap<String, Vec<String>>,
    redolog_role: &str,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    if let Ok((s, r)) = crate::base::site::select(manifests, complete, redolog_role, None) {
        p.insert(s.id.clone(), "the newest complete full set".to_string());
        add_reason(
            &mut p,
            &r.id,
            "the redolog snapshot failover would use".into(),
        );
    }
    for (role, snaps) in local {
        if let Some(newest) = snaps.last() {
            add_reason(
                &mut p,
                newest,
                format!("newest received `{role}` (base of the next incremental)"),
            );
        }
    }
    p
}

/// Standby: what `keep_min_age` protects, by this site's own clock — a
/// burst of sets from a compromised primary cannot push good history out of
/// the grid, and the count stays bounded whatever the redolog cadence:
///
/// - every **full set** committed less than `keep_min_age` ago;
/// - of the redolog sets committed less than `keep_min_age` ago, only the
///   **last complete one before each later full set**: a failover to the
///   full set before it (`failover --set`) replays up to there. The other
///   redolog sets are left to `redolog_grid` (whose `keep=all` tier is the
///   short window in which every one stays).
pub fn protect_recent(
    p: &mut BTreeMap<String, String>,
    manifests: &[Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    redolog_role: &str,
    retention: &Retention,
    now: Timestamp,
) {
    if retention.keep_min_age.is_zero() {
        return;
    }
    let min_age =
        jiff::SignedDuration::try_from(retention.keep_min_age).unwrap_or(jiff::SignedDuration::MAX);
    let Some(cutoff) = now.checked_sub(min_age).ok() else {
        return;
    };
    let recent = |m: &Manifest| m.committed_at.is_some_and(|c| c >= cutoff);
    let age = humantime::format_duration(retention.keep_min_age);
    let mut ordered: Vec<&Manifest> = manifests.iter().collect();
    ordered.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    // The newest complete redolog set since the last full set.
    let mut last_redolog: Option<&Manifest> = None;
    for m in ordered {
        match m.kind {
            SetKind::Redolog => {
                if complete(m) && m.member(redolog_role).is_some() {
                    last_redolog = Some(m);
                }
            }
            SetKind::Full => {
                if let Some(r) = last_redolog.take().filter(|r| recent(r)) {
                    add_reason(
                        p,
                        &r.id,
                        format!(
                            "the last redolog set before full set {}, committed less than keep_min_age ({age}) ago",
                            m.id
                        ),
                    );
                }
                if recent(m) {
                    add_reason(
                        p,
                        &m.id,
                        format!("full set committed less than keep_min_age ({age}) ago"),
                    );
                }
            }
        }
    }
}

/// At most how many snapshots one volume holds under `schedule` and
/// `retention` (`snapsite check` prints it), assuming sets are taken on the
/// schedule (one per slot) and shipped as they are taken. The redolog
/// volume holds both kinds; the others only full sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBound {
    pub primary: u64,
    pub standby: u64,
}

pub fn max_snapshots_per_volume(
    schedule: &crate::base::config::Schedule,
    retention: &Retention,
) -> CountBound {
    let f = schedule.full_set_interval;
    let full = retention.full.max_kept(f);
    let redolog = schedule
        .redolog_interval
        .map_or(0, |r| retention.redolog.max_kept(r));
    // keep_min_age: the full sets committed in it (one per slot, plus one
    // more for a late ship) and one redolog set before each of them.
    let recent_full = if retention.keep_min_age.is_zero() {
        0
    } else {
        u64::try_from(
            retention
                .keep_min_age
                .as_nanos()
                .div_ceil(f.as_nanos().max(1)),
        )
        .unwrap_or(u64::MAX / 4)
        .saturating_add(2)
    };
    let partners = if schedule.redolog_interval.is_some() {
        recent_full
    } else {
        0
    };
    // Protected outside the grid: primary the common snapshot and the newest
    // complete full set; standby the newest received snapshot and the failover pair.
    let protected = 2;
    CountBound {
        primary: full + redolog + protected,
        standby: full
            .saturating_add(redolog)
            .saturating_add(recent_full)
            .saturating_add(partners)
            .saturating_add(protected),
    }
}

fn add_reason(p: &mut BTreeMap<String, String>, id: &str, why: String) {
    p.entry(id.to_string())
        .and_modify(|r| {
            r.push_str("; ");
            r.push_str(&why);
        })
        .or_insert(why);
}

fn newest_complete<'a>(
    manifests: &'a [Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    kind: SetKind,
) -> Option<&'a Manifest> {
    manifests
        .iter()
        .rev()
        .find(|m| m.kind == kind && complete(m))
}

/// Pure: standby snapshots without a manifest that are older than the newest
/// committed set (ship goes oldest first and never goes back, so they can
/// never be committed) and hold nothing protected.
pub fn plan_orphans(
    manifests: &[Manifest],
    local: &BTreeMap<String, Vec<String>>,
    protected: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let Some(newest) = manifests.iter().map(|m| m.id.as_str()).max() else {
        return Vec::new();
    };
    let known: BTreeSet<&str> = manifests.iter().map(|m| m.id.as_str()).collect();
    let mut out = Vec::new();
    for (role, snaps) in local {
        for s in snaps {
            if !known.contains(s.as_str())
                && s.as_str() < newest
                && !protected.contains_key(s)
                && snaps.last() != Some(s)
            {
                out.push((role.clone(), s.clone()));
            }
        }
    }
    out
}

/// Decide what to prune on this site (reads the catalog and the storage).
pub fn plan(cfg: &Config, catalog: &Catalog, retention: &Retention) -> Result<PrunePlan> {
    let site = crate::base::site::Site::open(cfg)?;
    let manifests = site.manifests();
    let local = site.local();
    let primary = site.role == crate::base::site::Role::Primary;
    let complete = |m: &Manifest| site.is_usable(m);
    let mut released_standbys = Vec::new();
    let (protected, orphans) = if primary {
        let (records, released) = split_standby_records(cfg, catalog, local)?;
        released_standbys = released;
        (
            protect_primary_all(manifests, &complete, local, &records),
            Vec::new(),
        )
    } else {
        let mut p = protect_standby(manifests, &complete, local, &cfg.redolog_role);
        protect_recent(
            &mut p,
            manifests,
            &complete,
            &cfg.redolog_role,
            retention,
            crate::base::model::now(),
        );
        crate::ops::suspect::protect(&mut p, catalog, manifests, &complete, &cfg.redolog_role)?;
        for id in crate::dr::rehearse::in_use(catalog)? {
            p.entry(id)
                .or_insert_with(|| "under a running rehearsal's clone".into());
        }
        let o = plan_orphans(manifests, local, &p);
        (p, o)
    };
    let sets = if primary {
        plan_sets(manifests, &complete, &protected, retention)
    } else {
        plan_sets_by(manifests, &complete, &protected, retention, &|m| {
            m.committed_at.unwrap_or_else(|| set_time(m))
        })
    };
    Ok(PrunePlan {
        sets,
        orphans,
        released_standbys,
    })
}

/// Each standby's record, by its name.
pub type NamedRecords = Vec<(String, StandbyRecord)>;

/// Primary: the standbys' records prune honours, and the names of the
/// standbys gone from the config, whose records it releases. Nothing is
/// released while a configured standby has no committed set recorded yet: it may be a
/// renamed one (`[standby]` given a `name`), whose old record still holds
/// its incremental base until its first ship under the new name.
///
/// Each record as far as [`protect_primary_all`] reads it: its head
/// (`standby.head.json`, the newest held snapshot per volume) when each
/// of those is still here (then it is the common snapshot, as the whole
/// record would say), else the whole record (an older one is).
pub fn split_standby_records(
    cfg: &Config,
    catalog: &Catalog,
    local: &BTreeMap<String, Vec<String>>,
) -> Result<(NamedRecords, Vec<String>)> {
    let recorded = catalog.recorded_standbys()?;
    let mut records = catalog.standby_heads()?;
    for (name, r) in &mut records {
        let newest_here = r.holds.iter().all(|(role, held)| {
            held.iter()
                .next_back()
                .is_none_or(|n| local.get(role).is_some_and(|l| l.contains(n)))
        });
        if !newest_here {
            if let Some(whole) = catalog.standby_record_of(name)? {
                *r = whole;
            }
        }
    }
    let every_configured_recorded = cfg.standbys.iter().all(|s| {
        records
            .iter()
            .any(|(n, r)| *n == s.name && !r.committed.is_empty())
    });
    if !every_configured_recorded {
        return Ok((records, Vec::new()));
    }
    let released: Vec<String> = recorded
        .into_iter()
        .filter(|n| cfg.standby_named(n).is_none())
        .collect();
    let kept = records
        .into_iter()
        .filter(|(n, _)| !released.contains(n))
        .collect();
    Ok((kept, released))
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub plan: PrunePlan,
    pub destroyed_sets: Vec<String>,
    pub destroyed_snapshots: usize,
    pub kept_sets: usize,
}

/// Carry out a plan. The caller holds the site lock.
///
/// Order per set: destroy every member snapshot, remove its receipts
/// (standby), and only then remove the manifest. A crash in between leaves a
/// manifest whose members are partly gone: every reader (`sets`, `ship`,
/// `failover`, `status`) checks members with `complete_locally` and treats
/// it as incomplete — never as a usable set — and the next prune finishes
/// it (incomplete sets are destroyed unless protected). The other order
/// would leave snapshots without a manifest: invisible, never cleaned up on
/// the primary, and on the standby indistinguishable from a set still in
/// transit. `Backend::destroy` is idempotent, so re-running is safe.
pub fn apply(
    cfg: &Config,
    catalog: &Catalog,
    plan: PrunePlan,
    dry_run: bool,
) -> Result<PruneReport> {
    let mut report = PruneReport {
        dry_run,
        kept_sets: plan.sets.iter().filter(|d| !d.destroy).count(),
        ..Default::default()
    };
    // The recorded role (failover, failback and switchover change it), not
    // the config's: a standby deletes receipts with its snapshots.
    let standby =
        crate::base::site::current_role(cfg, catalog)?.0 == crate::base::site::Role::Standby;
    if !dry_run {
        // A rehearsal that was killed leaves clones: remove them first.
        let mut notes = Vec::new();
        if let Err(e) = crate::dr::rehearse::cleanup_stale(cfg, catalog, &mut notes) {
            tracing::warn!(error = %e, "could not clean up after a killed rehearsal");
        }
        for n in notes {
            tracing::warn!("{n}");
        }
        // The journal says a prune is under way (for `status` and `role`)
        // until it is done; a rerun plans again — the sets a killed run left
        // incomplete are finished off by the new plan — so the journal's
        // intent is only a record of what the killed run meant to do.
        let journal = if plan.to_destroy().next().is_none()
            && plan.orphans.is_empty()
            && plan.released_standbys.is_empty()
        {
            crate::base::journal::load(catalog, "prune")?
        } else {
            let intent = serde_json::json!({
                "sets": plan.to_destroy().map(|d| d.set_id.as_str()).collect::<Vec<_>>(),
                "orphans": &plan.orphans,
                "released_standbys": &plan.released_standbys,
            });
            let j = crate::base::journal::begin(catalog, "prune", "snapsite prune", &intent)?;
            crate::failpoint!("prune.after_intent");
            Some(j)
        };
        // Storage holds, then records, then snapshots: killed in between,
        // the rerun plans again (the records still name a standby whose
        // holds are not all released yet).
        let stores = backend::Stores::open(cfg);
        if !standby {
            holds::release_holds(cfg, catalog, &stores, &plan.released_standbys)?;
        }
        for name in &plan.released_standbys {
            catalog.remove_standby_records(name)?;
            tracing::info!(standby = %name, "released the holds of a standby no longer configured");
        }
        let manifests: BTreeMap<String, Manifest> = catalog
            .manifests()?
            .into_iter()
            .map(|m| (m.id.clone(), m))
            .collect();
        for d in plan.to_destroy() {
            let Some(m) = manifests.get(&d.set_id) else {
                continue; // removed by someone else meanwhile
            };
            for mem in &m.members {
                let Some(store) = stores.find(&mem.role) else {
                    continue;
                };
                store
                    .destroy(&mem.snapshot)
                    .ctx(format!("pruning set {}", m.id))?;
                report.destroyed_snapshots += 1;
                if standby {
                    catalog.remove_receipt(&mem.role, &mem.snapshot)?;
                }
                crate::failpoint!("prune.after_member");
            }
            crate::failpoint!("prune.after_members");
            catalog.remove_manifest(&m.id)?;
            crate::failpoint!("prune.after_manifest");
            tracing::info!(set = %m.id, kind = m.kind.as_str(), reason = %d.reason, "pruned");
            report.destroyed_sets.push(m.id.clone());
        }
        for (role, snap) in &plan.orphans {
            if let Some(store) = stores.find(role) {
                // The receipt first: killed in between, the snapshot is
                // still an orphan for the next prune; the other order would
                // leak the receipt of a snapshot that is gone.
                catalog.remove_receipt(role, snap)?;
                store
                    .destroy(snap)
                    .ctx(format!("pruning orphan snapshot {role} {snap}"))?;
                tracing::info!(%role, snapshot = %snap, "pruned a snapshot that can never be committed");
                report.destroyed_snapshots += 1;
            }
        }
        if standby {
            // The verdicts of the sets gone (this run's or a killed run's),
            // but never a suspect one (catalog::Catalog::prune_verdicts).
            match catalog.prune_verdicts() {
                Ok(0) => {}
                Ok(n) => tracing::info!(verdicts = n, "removed the verdicts of pruned sets"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove the verdicts of pruned sets")
                }
            }
        }
        if let Some(j) = journal {
            j.finish()?;
        }
    }
    report.plan = plan;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::model::{Member, new_set_id};

    /// Prune reads each standby's record head (`standby.head.json`) where
    /// it says the common snapshot: its protections are exactly those of
    /// the whole records — when the standby's newest snapshot is here, and
    /// when it is not (then the whole record finds an older common one).
    #[test]
    fn the_records_heads_protect_what_the_whole_records_protect() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(
            &format!(
                "site = \"a\"\nstate_dir = \"{}\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"/x/live\"\nsnapshot_dir = \"/x/snap\"\n[replay]\nnone = true\n[[standby]]\nname = \"near\"\ntransport = \"local\"\nconfig = \"/x/b.toml\"\n",
                dir.path().display()
            ),
            std::path::Path::new("/etc/snapsite/t.toml"),
        )
        .unwrap();
        let catalog = Catalog::new(dir.path());
        let ids: Vec<String> = (0..40)
            .map(|i| new_set_id(h(40 - i), SetKind::Full))
            .collect();
        let mut r = StandbyRecord::default();
        for id in &ids {
            r.holds
                .entry("redolog".into())
                .or_default()
                .insert(id.clone());
            r.committed.insert(id.clone());
        }
        catalog.write_standby_record_of("near", &r).unwrap();
        let ms: Vec<Manifest> = ids
            .iter()
            .map(|id| {
                manifest(
                    crate::base::model::parse_set_id(id).unwrap().0,
                    SetKind::Full,
                    &["redolog"],
                )
            })
            .collect();
        for here in [ids.len(), ids.len() - 3, 0] {
            let local: BTreeMap<String, Vec<String>> =
                [("redolog".to_string(), ids[..here].to_vec())].into();
            let (records, released) = split_standby_records(&cfg, &catalog, &local).unwrap();
            assert!(released.is_empty());
            let whole = catalog.standby_records().unwrap();
            let complete = |_: &Manifest| true;
            assert_eq!(
                protect_primary_all(&ms, &complete, &local, &records),
                protect_primary_all(&ms, &complete, &local, &whole),
                "{here} of {} here",
                ids.len()
            );
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// `n` hours before the tests' noon.
    fn h(n: i64) -> Timestamp {
        t("2026-11-27T12:00:00Z") - jiff::SignedDuration::from_hours(n)
    }

    fn manifest(at: Timestamp, kind: SetKind, roles: &[&str]) -> Manifest {
        let id = new_set_id(at, kind);
        let members = roles.iter().map(|r| Member::plain(r, &id, at)).collect();
        Manifest {
            committed_at: Some(at),
            ..Manifest::plain(&id, kind, "a", members)
        }
    }

    fn retention(g: &str) -> Retention {
        Retention {
            full: Grid::parse(g).unwrap(),
            redolog: Grid::parse(g).unwrap(),
            keep_min_age: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn protected_and_incomplete_sets() {
        let ms = vec![
            manifest(h(5), SetKind::Full, &["mysql", "redolog"]),
            manifest(h(4), SetKind::Full, &["mysql", "redolog"]),
            manifest(h(3), SetKind::Full, &["mysql", "redolog"]),
            manifest(h(2), SetKind::Redolog, &["redolog"]),
            manifest(h(0), SetKind::Full, &["mysql", "redolog"]),
        ];
        let incomplete = ms[2].id.clone();
        let complete = |m: &Manifest| m.id != incomplete;
        let mut protected = BTreeMap::new();
        protected.insert(ms[0].id.clone(), "common snapshot".to_string());
        let d = plan_sets(&ms, &complete, &protected, &retention("1x1h"));
        let destroyed: Vec<&str> = d
            .iter()
            .filter(|d| d.destroy)
            .map(|d| d.set_id.as_str())
            .collect();
        // h(5) protected; h(4) outside the grid; h(3) incomplete;
        // the redolog set is its own kind: youngest of its kind, kept.
        assert_eq!(destroyed, vec![ms[1].id.as_str(), ms[2].id.as_str()]);
        assert!(d[0].reason.contains("protected"));
        assert!(d[2].reason.contains("incomplete"));
        assert!(!d[3].destroy && !d[4].destroy);
    }

    #[test]
    fn standby_protects_newest_received_and_failover_pair() {
        let ms = vec![
            manifest(h(3), SetKind::Full, &["mysql", "redolog"]),
            manifest(h(2), SetKind::Redolog, &["redolog"]),
            manifest(h(1), SetKind::Redolog, &["redolog"]),
        ];
        let uncommitted = new_set_id(h(0), SetKind::Full);
        let orphan = new_set_id(h(4), SetKind::Full);
        let mut local = BTreeMap::new();
        local.insert(
            "mysql".to_string(),
            vec![orphan.clone(), ms[0].id.clone(), uncommitted.clone()],
        );
        local.insert(
            "redolog".to_string(),
            ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        );
        let p = protect_standby(&ms, &|_| true, &local, "redolog");
        assert!(p[&ms[0].id].contains("newest complete full set"));
        assert!(p[&ms[2].id].contains("failover would use"));
        assert!(p[&ms[2].id].contains("newest received `redolog`"));
        assert!(p[&uncommitted].contains("newest received `mysql`"));
        assert!(!p.contains_key(&ms[1].id));
        let orphans = plan_orphans(&ms, &local, &p);
        assert_eq!(orphans, vec![("mysql".to_string(), orphan)]);
    }

    #[test]
    fn standby_keeps_recent_commits_whatever_the_primary_claims() {
        let now = t("2026-11-30T12:00:00Z");
        // An old good set, then a burst of 50 sets claiming times in the
        // past, all committed just now.
        let mut ms = vec![manifest(
            t("2026-11-20T08:00:00Z"),
            SetKind::Full,
            &["mysql"],
        )];
        ms[0].committed_at = Some(t("2026-11-29T08:00:00Z"));
        for i in 0..50 {
            let mut m = manifest(
                t("2026-11-20T08:00:00Z") + jiff::SignedDuration::from_mins(i + 1),
                SetKind::Full,
                &["mysql"],
            );
            m.committed_at = Some(now);
            ms.push(m);
        }
        let mut r = retention("1x1h(keep=all) | 1x30d(keep=1)");
        r.keep_min_age = std::time::Duration::from_secs(7 * 86400);
        let mut p = BTreeMap::new();
        protect_recent(&mut p, &ms, &|_| true, "redolog", &r, now);
        assert!(p.contains_key(&ms[0].id), "the good set is protected");
        assert_eq!(p.len(), 51);
        // By the standby's clock the burst is recent and the good set is
        // older: the grid keeps the good one in its own bucket.
        let d = plan_sets_by(&ms, &|_| true, &BTreeMap::new(), &r, &|m| {
            m.committed_at.unwrap()
        });
        let good = d.iter().find(|x| x.set_id == ms[0].id).unwrap();
        assert!(!good.destroy, "{}", good.reason);
        // keep_min_age = 0 turns it off.
        r.keep_min_age = std::time::Duration::ZERO;
        let mut p = BTreeMap::new();
        protect_recent(&mut p, &ms, &|_| true, "redolog", &r, now);
        assert!(p.is_empty());
    }

    /// A flood of redolog sets from a compromised primary (one a second for
    /// an hour, all committed now) neither pushes the good history out nor
    /// stays beyond the redolog grid: the good full sets and the last good
    /// redolog set before each are kept, and of the flood only what
    /// `redolog_grid` keeps.
    #[test]
    fn a_flood_of_redolog_sets_keeps_good_history_and_stays_bounded() {
        let now = t("2026-11-30T12:00:00Z");
        let mut ms = Vec::new();
        // Three good days: a full set every hour, a redolog set every 15 min.
        let start = t("2026-11-27T12:00:00Z");
        for q in 0..(3 * 24 * 4) {
            let at = start + jiff::SignedDuration::from_mins(15 * q);
            let kind = if q % 4 == 0 {
                SetKind::Full
            } else {
                SetKind::Redolog
            };
            let roles: &[&str] = match kind {
                SetKind::Full => &["mysql", "redolog"],
                SetKind::Redolog => &["redolog"],
            };
            ms.push(manifest(at, kind, roles));
        }
        let good = ms.len();
        for s in 0..3600 {
            let mut m = manifest(
                t("2026-11-30T11:00:00Z") + jiff::SignedDuration::from_secs(s),
                SetKind::Redolog,
                &["redolog"],
            );
            m.committed_at = Some(now - jiff::SignedDuration::from_secs(3600 - s));
            ms.push(m);
        }
        let r = Retention {
            full: Grid::parse("1x1h(keep=all) | 24x1h | 30x1d | 11x30d").unwrap(),
            redolog: Grid::parse("1x1h(keep=all) | 6x1h").unwrap(),
            keep_min_age: std::time::Duration::from_secs(7 * 86400),
        };
        let mut p = BTreeMap::new();
        protect_recent(&mut p, &ms, &|_| true, "redolog", &r, now);
        let d = plan_sets_by(&ms, &|_| true, &p, &r, &|m| m.committed_at.unwrap());
        let kept: BTreeSet<&str> = d
            .iter()
            .filter(|x| !x.destroy)
            .map(|x| x.set_id.as_str())
            .collect();
        for (i, m) in ms[..good].iter().enumerate() {
            if m.kind == SetKind::Full {
                assert!(kept.contains(m.id.as_str()), "good full set {} lost", m.id);
                if i > 0 {
                    let before = &ms[i - 1];
                    assert!(
                        kept.contains(before.id.as_str()),
                        "its redolog partner {} lost",
                        before.id
                    );
                }
            }
        }
        let flood_kept = ms[good..]
            .iter()
            .filter(|m| kept.contains(m.id.as_str()))
            .count();
        // keep=all for the hour: the flood is an hour long, so all of it
        // stays for now (the bound at a 1 s cadence), and the next prunes
        // thin it to one per clock hour as it ages.
        assert_eq!(flood_kept, 3600);
        let later = now + jiff::SignedDuration::from_hours(2);
        let mut ms2: Vec<Manifest> = ms
            .into_iter()
            .filter(|m| kept.contains(m.id.as_str()))
            .collect();
        let mut newest = manifest(later, SetKind::Redolog, &["redolog"]);
        newest.committed_at = Some(later);
        ms2.push(newest);
        let mut p = BTreeMap::new();
        protect_recent(&mut p, &ms2, &|_| true, "redolog", &r, later);
        let d = plan_sets_by(&ms2, &|_| true, &p, &r, &|m| m.committed_at.unwrap());
        let flood_left = d
            .iter()
            .filter(|x| !x.destroy && x.set_id.as_str() >= "20261130T110000")
            .count();
        // one per clock hour of commit time (11:00-12:00 and 12:00) plus the newest
        assert!(flood_left <= 3, "{flood_left} of the flood left");
    }
}
