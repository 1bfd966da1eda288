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

use crate::catalog::Catalog;
use crate::config::Config;
use crate::coordinator::{self, ShipReport};
use crate::error::{Context, Error, Result};
use crate::failback;
use crate::model::SetKind;

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
    let (_, own) = crate::site::current_role(cfg, &catalog)?;
    Ok(format!(
        "switchover plan (dry run: nothing is changed)\n\
         this site     {} primary in generation {own}\n\
         peer          {} {} in generation {}\n\
         1. stop the application here (or let the pre hook do it); nothing may write any more\n\
         2. take a final full set and ship it; it must commit on the peer\n\
         3. keep this site's live data as read-only divergent snapshots, remove the live copies, record this site as the standby\n\
         4. on the peer: snapsite failover --set <final set>   (it becomes primary in generation {})\n",
        cfg.site,
        crate::model::wire_str(&view.site),
        view.role.as_deref().unwrap_or("?"),
        view.generation.map(|g| g.to_string()).unwrap_or("?".into()),
        own.checked_add(1)
            .map_or("none: the generation counter is exhausted".into(), |g| g
                .to_string())
    ))
}

/// Switch over: final set, ship, demote.
pub fn run(cfg: &Config) -> Result<Report> {
    let t0 = std::time::Instant::now();
    let catalog = Catalog::new(&cfg.state_dir);
    let _lock = catalog.lock("switchover", std::time::Duration::from_secs(600))?;
    coordinator::refuse_unless_primary(cfg, &catalog)?;
    // As the peer's standby this site receives into `replica` (ZFS, LVM):
    // refused now, before the final set, rather than after it shipped.
    failback::require_replicas(cfg, &crate::backend::Stores::open(cfg))?;
    let fin = coordinator::take_set(cfg, &catalog, SetKind::Full).ctx("the final set")?;
    let seconds_final_set = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let ship: ShipReport = coordinator::ship(cfg, &catalog, &mut |_, _, _, _| {})
        .ctx("shipping the final set; this site stays primary")?;
    if !ship.committed.contains(&fin.id) {
        return Err(Error::storage(format!(
            "the final set {} did not commit on the peer; this site stays primary",
            fin.id
        ))
        .with_hint("fix the cause (`snapsite ship` says it) and run switchover again"));
    }
    let seconds_ship = t1.elapsed().as_secs_f64();
    // The peer's inventory now, with the final set in it.
    let view = failback::peer_view(cfg)?;
    let theirs = view
        .volumes
        .iter()
        .map(|v| (v.role.clone(), v.snapshots.iter().cloned().collect()))
        .collect();
    let peer = crate::model::wire_str(&view.site);
    let (_, own) = crate::site::current_role(cfg, &catalog)?;
    let plan = failback::demote_plan(
        cfg,
        &catalog,
        &peer,
        view.generation.unwrap_or(own).min(own),
        &theirs,
        &view.committed,
    )?;
    if plan
        .base
        .values()
        .any(|b| b.as_deref() != Some(fin.id.as_str()))
    {
        return Err(Error::integrity(format!(
            "the peer does not hold every member of the final set {} (bases: {:?}); this site stays primary",
            fin.id, plan.base
        )));
    }
    let demote = failback::demote(cfg, &catalog, &plan, "switchover")?;
    Ok(Report {
        site: cfg.site.clone(),
        next: format!("on {peer}: snapsite failover --set {}", fin.id),
        peer,
        final_set: fin.id,
        ship_payload_bytes: ship.payload_bytes,
        ship_wire_bytes: ship.wire_bytes,
        demote,
        seconds_final_set,
        seconds_ship,
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
