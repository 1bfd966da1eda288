//! `snapsite follow`: three sites. A shipped to standbys B and C; A died
//! and B failed over. Run on C, whose `[standby]` now reaches B: C becomes
//! B's standby without a full resend.
//!
//! It asks B (one handshake, nothing sent, the way failback asks) for its
//! role, generation and inventory, and refuses unless B is a primary in a
//! generation at least C's, one C can believe. It refuses when C is a live
//! primary itself (a recorded primary, or writable copies present): that
//! site fails back instead (`snapsite failback`).
//!
//! Per volume the **base** is the newest snapshot both hold (what B's
//! failover used, or older: A's sets B never got are not in it). What C
//! received beyond the base is history B never had: those snapshots are
//! set aside, never destroyed, under `divergent-<label>` names (out of the
//! set namespace), and A's sets B never committed move to
//! `state_dir/divergent/<label>/sets/`, as failback does; the record
//! `state_dir/divergent/<label>.json` (how = `follow`) names the new
//! upstream. Then each base is made receivable and C records itself as
//! the standby in B's generation: B's next `ship` sends only what changed
//! since the base.
//!
//! Journaled (`state_dir/journal-follow.json`) with a failpoint after each
//! durable step: a rerun after a crash carries out the recorded plan from
//! the first step not done, without asking B again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backend::Stores;
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Context, Error, Result};
use crate::base::site::Role;
use crate::dr::failback::{self, DivergentRecord, PeerClaim, Plan};
use crate::primary::coordinator::StandbyView;

/// What `follow` does: the failback plan's base, sets and role, and per
/// volume the received snapshots beyond the base to set aside.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FollowPlan {
    pub plan: Plan,
    /// Per volume: this site's snapshots newer than the base (set aside).
    pub set_aside: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub plan: FollowPlan,
    pub divergent: DivergentRecord,
    pub seconds: f64,
}

/// May this site follow the peer? `recorded`: this site's recorded role
/// (None: none recorded), `own` its generation, `seen` the highest it has
/// seen, `live` the volumes with a writable copy. Returns the generation
/// this site adopts as the peer's standby.
pub fn follow_verdict(
    claim: &PeerClaim,
    recorded: Option<Role>,
    own: u64,
    seen: u64,
    live: &[String],
) -> Result<u64> {
    let site = crate::base::model::wire_str(&claim.site);
    if recorded == Some(Role::Primary) || !live.is_empty() {
        let why = if live.is_empty() {
            format!("this site is recorded as the primary in generation {own}")
        } else {
            format!(
                "this site has live writable copies of volume(s) {}",
                live.iter()
                    .map(|r| format!("`{r}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        return Err(Error::refused(format!(
            "{why}: it is a live primary, not a standby that can follow `{site}`; nothing was changed"
        ))
        .with_hint("a returning primary becomes the new primary's standby with `snapsite failback` (it keeps its own data as divergent)"));
    }
    if claim.role != Role::Primary {
        return Err(Error::refused(format!(
            "peer `{site}` is {} in generation {}: follow needs a peer that is the primary; nothing was changed",
            claim.role.as_str(),
            claim.generation
        ))
        .with_hint("point [standby] at the site that failed over (`snapsite status` there says `primary`), or fail over there first"));
    }
    if claim.generation < own {
        return Err(Error::refused(format!(
            "peer `{site}` is primary in generation {}, older than this site's generation {own}: it is an old primary; nothing was changed",
            claim.generation
        ))
        .with_hint("follow the primary of the newest generation; the old primary fails back to it (`snapsite failback` there)"));
    }
    crate::base::site::check_claimed_generation(&format!("peer `{site}`"), claim.generation, seen)?;
    Ok(claim.generation)
}

/// The follow plan against the peer's view.
pub fn plan(cfg: &Config, view: &StandbyView) -> Result<FollowPlan> {
    let catalog = Catalog::new(&cfg.state_dir);
    let (_, own) = crate::base::site::current_role(cfg, &catalog)?;
    let recorded = catalog.role_record()?.map(|r| r.role);
    let claim = failback::decode_peer(view)?;
    let seen = crate::base::site::highest_generation_seen(cfg, &catalog)?;
    let stores = Stores::open(cfg);
    let mut live = Vec::new();
    for s in stores.iter() {
        if s.writable_copy_exists()? {
            live.push(s.role().to_string());
        }
    }
    let peer_gen = follow_verdict(&claim, recorded, own, seen, &live)?;
    let plan = failback::demote_plan(cfg, &catalog, &claim, peer_gen)?;
    let mut set_aside = BTreeMap::new();
    for s in stores.iter() {
        let Some(Some(base)) = plan.base.get(s.role()) else {
            continue;
        };
        let newer: Vec<String> = s
            .list()?
            .into_iter()
            .filter(|n| n.as_str() > base.as_str())
            .collect();
        if newer.is_empty() {
            continue;
        }
        if !s.can_set_aside() {
            return Err(crate::backend::set_aside_unsupported(
                s.volume(),
                s.kind(),
                base,
                &newer,
            ));
        }
        set_aside.insert(s.role().to_string(), newer);
    }
    Ok(FollowPlan { plan, set_aside })
}

/// Follow the peer: become its standby. A journal left by a crash is
/// carried out first (the peer is not asked again).
pub fn run(cfg: &Config, dry_run: bool) -> Result<(FollowPlan, Option<Report>)> {
    let catalog = Catalog::new(&cfg.state_dir);
    let _lock = catalog.lock("follow", std::time::Duration::from_secs(600))?;
    if let Some(mut j) = crate::base::journal::load(&catalog, "follow")? {
        let plan = j.intent::<FollowPlan>()?;
        tracing::warn!(journal = %j.path().display(), "finishing an interrupted follow");
        if dry_run {
            return Ok((plan, None));
        }
        j.adopt()?;
        let report = steps(cfg, &catalog, &plan, &mut j)?;
        j.finish()?;
        return Ok((plan, Some(report)));
    }
    let view = failback::peer_view(cfg)?;
    let plan = plan(cfg, &view)?;
    if dry_run {
        return Ok((plan, None));
    }
    let mut j = crate::base::journal::begin(&catalog, "follow", "snapsite follow", &plan)?;
    crate::failpoint!("follow.after_plan");
    let report = steps(cfg, &catalog, &plan, &mut j)?;
    j.finish()?;
    Ok((plan, Some(report)))
}

/// The steps, each recorded in `j` once done and skipped on a rerun;
/// each is safe to redo when the process died inside it.
fn steps(
    cfg: &Config,
    catalog: &Catalog,
    fp: &FollowPlan,
    j: &mut crate::base::journal::Open,
) -> Result<Report> {
    let t = std::time::Instant::now();
    let stores = Stores::open(cfg);
    let plan = &fp.plan;
    let record_path = failback::divergent_record_path(catalog, &plan.label);
    // 1. What this site received beyond the base: set aside, kept.
    let record = if j.is_done("divergent_record") {
        crate::base::catalog::read_json::<DivergentRecord>(&record_path)?
    } else {
        let mut kept = BTreeMap::new();
        for role in fp.set_aside.keys() {
            let step = format!("set_aside:{role}");
            let at = match j.journal.values.get(&step) {
                Some(at) => at.clone(),
                None => {
                    let base = plan.base.get(role).cloned().flatten().ok_or_else(|| {
                        Error::storage(format!("volume `{role}`: the plan names no base"))
                    })?;
                    let at = stores
                        .get(role)?
                        .set_aside_newer(&base, &plan.label)
                        .ctx(format!(
                            "set volume `{role}`'s snapshots newer than {base} aside; nothing was destroyed"
                        ))?
                        .join(", ");
                    j.done_with(&step, &at)?;
                    crate::failpoint!("follow.after_set_aside");
                    at
                }
            };
            kept.insert(role.clone(), at);
        }
        let record = DivergentRecord::of(plan, "follow", kept);
        crate::base::catalog::write_json(&record_path, &record)?;
        j.done("divergent_record")?;
        crate::failpoint!("follow.after_divergent_record");
        record
    };
    // 2. The sets the peer never committed leave the catalog.
    j.step(
        "sets_moved",
        || failback::move_divergent_sets(catalog, plan),
        || crate::failpoint!("follow.after_sets_moved"),
    )?;
    // 3. The sets both hold are committed here.
    j.step(
        "mark_committed",
        || failback::mark_committed(catalog, plan),
        || crate::failpoint!("follow.after_mark_committed"),
    )?;
    // 4. The bases take the peer's incremental streams.
    failback::receivable_steps(&stores, plan, j, &|| {
        crate::failpoint!("follow.after_receivable")
    })?;
    // 5. The standby of the peer's generation: the new upstream.
    failback::standby_role_step(catalog, plan, "follow", j, &|| {
        crate::failpoint!("follow.after_role_record")
    })?;
    Ok(Report {
        plan: fp.clone(),
        divergent: record,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The plan for the operator (`--dry-run` prints only this).
pub fn render_plan(fp: &FollowPlan) -> String {
    let p = &fp.plan;
    let mut s = String::new();
    s.push_str(&format!(
        "upstream      {} is primary in generation {} (this site: standby in generation {})\n",
        p.peer, p.peer_generation, p.generation
    ));
    s.push_str(&crate::dr::failback::render_base(p));
    for (role, names) in &fp.set_aside {
        s.push_str(&format!(
            "set aside     {:<10} {} -> divergent-{}-<id> (kept, read-only, not a set)\n",
            role,
            names.join(", "),
            p.label
        ));
    }
    s.push_str(&crate::dr::failback::render_divergent(p, "new primary"));
    s.push_str(&format!(
        "then          this site is the standby of {} in generation {}; its next `snapsite ship` sends only what changed since the base\n",
        p.peer,
        p.peer_generation.max(p.generation)
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn claim(role: Role, generation: u64) -> PeerClaim {
        PeerClaim {
            site: "b".into(),
            role,
            generation,
            volumes: BTreeMap::new(),
            committed: BTreeSet::new(),
        }
    }

    #[test]
    fn follows_a_primary_one_generation_up() {
        assert_eq!(
            follow_verdict(&claim(Role::Primary, 2), Some(Role::Standby), 1, 1, &[]).unwrap(),
            2
        );
        // A standby with no role recorded (its config got a [standby]).
        assert_eq!(
            follow_verdict(&claim(Role::Primary, 2), None, 1, 1, &[]).unwrap(),
            2
        );
        // Following again in the same generation is harmless.
        assert_eq!(
            follow_verdict(&claim(Role::Primary, 2), Some(Role::Standby), 2, 2, &[]).unwrap(),
            2
        );
    }

    #[test]
    fn refusals_say_why() {
        let e = follow_verdict(&claim(Role::Standby, 2), None, 1, 1, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a peer that is the primary"), "{e}");
        let e = follow_verdict(&claim(Role::Primary, 2), None, 1, 1, &["blob".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("live writable copies of volume(s) `blob`"),
            "{e}"
        );
        assert!(e.contains("live primary"), "{e}");
        let e = follow_verdict(&claim(Role::Primary, 2), Some(Role::Primary), 1, 1, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("recorded as the primary"), "{e}");
        let e = follow_verdict(&claim(Role::Primary, 1), Some(Role::Standby), 2, 2, &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("old primary"), "{e}");
        // Not believable: more than one above what this site has seen.
        assert!(follow_verdict(&claim(Role::Primary, 5), None, 1, 1, &[]).is_err());
        assert!(follow_verdict(&claim(Role::Primary, u64::MAX), None, 1, 1, &[]).is_err());
    }
}
