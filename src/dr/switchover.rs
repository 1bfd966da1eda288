//! `snapsite switchover`: the planned move of the primary role to the peer,
//! with zero loss by construction.
//!
//! Run on the primary once the application is stopped (by the admin or a
//! pre hook): a final full set is taken and shipped (it must commit on the
//! peer), then this site demotes itself exactly like a failback does — its
//! live data kept as a read-only divergent snapshot (identical to the final
//! set, since nothing was running), its live copies removed, recorded as the
//! standby. Then, on the peer, `snapsite failover --set FINAL` brings the
//! final set up (nothing after it to lose) and makes the peer primary in
//! the next generation; the final set is the common base both ways, so
//! nothing is re-sent afterwards beyond new changes.
//!
//! If the final set does not commit on the peer, nothing is demoted: this
//! site stays primary (exit 1), and switchover can be run again.

use serde::{Deserialize, Serialize};

use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Context, Error, Result};
use crate::base::model::SetKind;
use crate::dr::failback;
use crate::primary::coordinator::{self, ShipReport};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub site: String,
    pub peer: String,
    /// The final set: the common base of both sites from now on.
    pub final_set: String,
    pub ship_payload_bytes: u64,
    pub ship_wire_bytes: u64,
    pub demote: failback::Report,
    pub seconds_final_set: f64,
    pub seconds_ship: f64,
    pub seconds_total: f64,
    /// What to run on the peer to finish the switchover.
    pub next: String,
}

/// What a switchover would do now (`--dry-run`): the peer must be this
/// site's standby.
pub fn check(cfg: &Config) -> Result<String> {
    let catalog = Catalog::new(&cfg.state_dir);
    coordinator::refuse_unless_primary(cfg, &catalog)?;
    failback::require_replicas(cfg, &crate::backend::Stores::open(cfg))?;
    let view = failback::peer_view(cfg)?;
    coordinator::split_brain_guard(cfg, &catalog, &view)?;
    let (_, own) = crate::base::site::current_role(cfg, &catalog)?;
    let seen = crate::base::site::highest_generation_seen(cfg, &catalog)?;
    failback::switchover_verdict(&failback::decode_peer(&view)?, own, seen)?;
    Ok(format!(
        "switchover plan (dry run: nothing is changed)\n\
         this site     {} primary in generation {own}\n\
         peer          {} {} in generation {}\n\
         1. stop the application here (or let the pre hook do it); nothing may write any more\n\
         2. take a final full set and ship it; it must commit on the peer\n\
         3. keep this site's live data as read-only divergent snapshots, remove the live copies, record this site as the standby\n\
         4. on the peer: snapsite failover --set <final set>   (it becomes primary in generation {})\n",
        cfg.site,
        crate::base::model::wire_str(&view.site),
        view.role.as_deref().unwrap_or("?"),
        view.generation.map(|g| g.to_string()).unwrap_or("?".into()),
        own.checked_add(1)
            .map_or("none: the generation counter is exhausted".into(), |g| g
                .to_string())
    ))
}

/// The journal of a switchover: see [`failback::SwitchoverIntent`] (it
/// lives there so failback can finish a switchover's demote without
/// importing this module).
pub use failback::SwitchoverIntent as Intent;

/// A switchover up to its demote: the final set shipped, the plan made.
struct Prepared {
    fin_id: String,
    payload: u64,
    wire: u64,
    plan: failback::Plan,
    seconds_final_set: f64,
    seconds_ship: f64,
}

/// Switch over: final set, ship, demote. Journaled: a rerun after a crash
/// reuses the recorded final set (no second one), does not ship what the
/// peer committed, and finishes a demote from its first step not done.
pub fn run(cfg: &Config) -> Result<Report> {
    let t0 = std::time::Instant::now();
    let catalog = Catalog::new(&cfg.state_dir);
    let _lock = catalog.lock("switchover", std::time::Duration::from_secs(600))?;
    let mut j = match crate::base::journal::load(&catalog, "switchover")? {
        Some(mut j) => {
            tracing::warn!(journal = %j.path().display(), "finishing an interrupted switchover");
            j.adopt()?;
            j
        }
        None => {
            coordinator::refuse_unless_primary(cfg, &catalog)?;
            // As the peer's standby this site receives into `replica` (ZFS,
            // LVM): refused now, before the final set, rather than after it
            // shipped.
            failback::require_replicas(cfg, &crate::backend::Stores::open(cfg))?;
            crate::base::journal::begin(
                &catalog,
                "switchover",
                "snapsite switchover",
                &Intent::default(),
            )?
        }
    };
    let mut intent: Intent = j.intent()?;
    // Until the demote plan is recorded this site is a full primary: a
    // plain error (the peer unreachable, the final set not committed)
    // ends the switchover, and the next one starts afresh with a new final
    // set (the application may have run in between). Only a crash leaves
    // the journal behind for a rerun to resume.
    let before_demote = (|| -> Result<Prepared> {
        let mut recorded = intent
            .final_set
            .clone()
            .filter(|id| catalog.has_manifest(id));
        if recorded.is_none() {
            // A run that died right after its final set was complete,
            // before recording it, left a full set taken since the journal
            // began: that is the final set.
            recorded = catalog
                .manifests()?
                .into_iter()
                .rev()
                .find(|m| {
                    m.kind == SetKind::Full
                        && m.site == cfg.site
                        && m.members.iter().all(|x| x.before >= j.journal.started_at)
                })
                .map(|m| m.id);
            if let Some(id) = &recorded {
                intent.final_set = Some(id.clone());
                j.set_intent(&intent)?;
            }
        }
        let fin_id = match recorded {
            Some(id) => id,
            None => {
                let fin =
                    coordinator::take_set(cfg, &catalog, SetKind::Full).ctx("the final set")?;
                intent.final_set = Some(fin.id.clone());
                j.set_intent(&intent)?;
                crate::failpoint!("switchover.after_final_set");
                fin.id
            }
        };
        let seconds_final_set = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let (mut payload, mut wire) = (0, 0);
        if !j.is_done("shipped") {
            let ship: ShipReport = coordinator::ship(cfg, &catalog, &mut |_, _, _, _| {})
                .ctx("shipping the final set; this site stays primary")?;
            payload = ship.payload_bytes;
            wire = ship.wire_bytes;
            // Committed by this ship, or by an earlier run's.
            let committed = ship.committed.contains(&fin_id)
                || catalog
                    .standby_record_of(&coordinator::first_standby(cfg)?.name)?
                    .is_some_and(|r| r.committed.contains(&fin_id));
            if !committed {
                return Err(Error::storage(format!(
                    "the final set {fin_id} did not commit on the peer; this site stays primary"
                ))
                .with_hint("fix the cause (`snapsite ship` says it) and run switchover again"));
            }
            j.done("shipped")?;
            crate::failpoint!("switchover.after_ship");
        }
        let seconds_ship = t1.elapsed().as_secs_f64();
        let plan = match intent.plan.clone() {
            Some(p) => p,
            None => {
                // The peer's inventory now, with the final set in it.
                // A second handshake: what the peer says now is as hostile
                // as anything from the wire. Only this site's standby, in
                // no newer generation, is handed the role.
                let claim = failback::decode_peer(&failback::peer_view(cfg)?)?;
                let (_, own) = crate::base::site::current_role(cfg, &catalog)?;
                let seen = crate::base::site::highest_generation_seen(cfg, &catalog)?;
                let peer_generation = failback::switchover_verdict(&claim, own, seen)?;
                let plan = failback::demote_plan(cfg, &catalog, &claim, peer_generation)?;
                if plan
                    .base
                    .values()
                    .any(|b| b.as_deref() != Some(fin_id.as_str()))
                {
                    return Err(Error::integrity(format!(
                        "the peer does not hold every member of the final set {fin_id} (bases: {:?}); this site stays primary",
                        plan.base
                    )));
                }
                intent.plan = Some(plan.clone());
                j.set_intent(&intent)?;
                crate::failpoint!("switchover.after_plan");
                plan
            }
        };
        Ok(Prepared {
            fin_id,
            payload,
            wire,
            plan,
            seconds_final_set,
            seconds_ship,
        })
    })();
    let p = match before_demote {
        Ok(x) => x,
        Err(e) => {
            if intent.plan.is_none() {
                j.finish()?;
            }
            return Err(e);
        }
    };
    let demote = failback::demote_steps(cfg, &catalog, &p.plan, "switchover", &mut j)?;
    j.finish()?;
    let peer = p.plan.peer;
    Ok(Report {
        site: cfg.site.clone(),
        next: format!("on {peer}: snapsite failover --set {}", p.fin_id),
        peer,
        final_set: p.fin_id,
        ship_payload_bytes: p.payload,
        ship_wire_bytes: p.wire,
        demote,
        seconds_final_set: p.seconds_final_set,
        seconds_ship: p.seconds_ship,
        seconds_total: t0.elapsed().as_secs_f64(),
    })
}

pub fn render_report(r: &Report) -> String {
    let mut s = String::from("=== snapsite switchover ===\n");
    s.push_str(&format!("site          {} -> standby\n", r.site));
    s.push_str(&format!(
        "final set     {} shipped to {} ({} payload bytes) and committed there\n",
        r.final_set, r.peer, r.ship_payload_bytes
    ));
    for (role, at) in &r.demote.divergent.snapshots {
        s.push_str(&format!("kept          {role:<10} {at} (read-only)\n"));
    }
    s.push_str(&format!(
        "durations     final set {:.2} s, ship {:.2} s, total {:.2} s\n",
        r.seconds_final_set, r.seconds_ship, r.seconds_total
    ));
    s.push_str(&format!("next          {}\n", r.next));
    s
}
