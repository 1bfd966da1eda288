//! What `ship` would send: the pure planner of one set's sends and the sets
//! a standby lacks, and the dry run that asks a standby for its inventory.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// One step of the ship plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedSend {
    pub role: String,
    pub snapshot: String,
    /// The common snapshot to send incrementally from.
    pub base: Option<String>,
}

/// Pure planner: which members of `set` to send, and from which base, given
/// what the standby holds per role and what this site holds per role.
pub fn plan_set(
    set: &Manifest,
    standby_has: &BTreeMap<String, BTreeSet<String>>,
    local_has: &BTreeMap<String, Vec<String>>,
) -> Vec<PlannedSend> {
    let mut out = Vec::new();
    for m in &set.members {
        let remote = standby_has.get(&m.role);
        if remote.is_some_and(|r| r.contains(&m.snapshot)) {
            continue;
        }
        let local = local_has.get(&m.role);
        // Set ids sort by time: the newest snapshot both sites hold that is
        // older than this one is the common snapshot.
        let base = remote.and_then(|r| {
            r.iter()
                .rev()
                .find(|s| s.as_str() < m.snapshot.as_str() && local.is_some_and(|l| l.contains(s)))
                .cloned()
        });
        out.push(PlannedSend {
            role: m.role.clone(),
            snapshot: m.snapshot.clone(),
            base,
        });
    }
    out
}

/// The local sets the standby lacks, oldest first.
pub fn sets_to_ship(
    cfg: &Config,
    catalog: &Catalog,
    committed: &BTreeSet<String>,
    local_has: &BTreeMap<String, Vec<String>>,
) -> Result<Vec<Manifest>> {
    sets_to_ship_for(cfg, catalog, committed, local_has, None)
}

/// [`sets_to_ship`] to a standby in generation `standby_generation` (from
/// its welcome; None: an older build that does not say).
pub fn sets_to_ship_for(
    cfg: &Config,
    catalog: &Catalog,
    committed: &BTreeSet<String>,
    local_has: &BTreeMap<String, Vec<String>>,
    standby_generation: Option<u64>,
) -> Result<Vec<Manifest>> {
    let heads = catalog.set_heads()?;
    sets_to_ship_from(
        cfg,
        catalog,
        &heads,
        committed,
        local_has,
        standby_generation,
    )
}

/// [`sets_to_ship_for`] from the catalog's heads (`heads`, in its order,
/// as [`Catalog::set_heads`] gives them): which sets to send is decided
/// from the heads; only those are read whole.
pub(super) fn sets_to_ship_from(
    cfg: &Config,
    catalog: &Catalog,
    heads: &[crate::base::catalog::SetHead],
    committed: &BTreeSet<String>,
    local_has: &BTreeMap<String, Vec<String>>,
    standby_generation: Option<u64>,
) -> Result<Vec<Manifest>> {
    // Sets are shipped oldest first and committed in that order, so a set
    // older than the newest committed one was pruned on the standby or
    // skipped as incomplete: sending it again would only resurrect it.
    // Only sets this site knows count: a set the standby holds that this
    // site never had (committed there by whoever else held the key, dated
    // ahead) must not keep this site's own sets from shipping.
    let known: BTreeSet<&str> = heads.iter().map(|m| m.id.as_str()).collect();
    // (canonical ids are compared as text, see `cmp_set_ids`)
    let newest_committed = committed
        .iter()
        .filter(|c| known.contains(c.as_str()) && crate::base::model::is_set_id(c))
        .max_by(|a, b| crate::base::model::cmp_set_ids(a, b).unwrap_or(std::cmp::Ordering::Equal))
        .cloned();
    let mut out = Vec::new();
    for head in heads {
        if committed.contains(&head.id) {
            continue;
        }
        if newest_committed
            .as_ref()
            .is_some_and(|n| crate::base::model::older_set(&head.id, n))
        {
            tracing::debug!(set = %head.id, "not shipped: older than the newest set on the standby");
            continue;
        }
        // A standby that follows this site (`follow`) is in this site's
        // generation and refuses the sets of an older one, which it may
        // lack (it was shipped less often): the next set of this
        // generation goes incrementally from the common base instead.
        if standby_generation.is_some_and(|g| head.generation < g) {
            tracing::debug!(set = %head.id, generation = head.generation, "not shipped: the standby is in a newer generation and would refuse it");
            continue;
        }
        // A set to send: read whole (gone since the heads were read: not sent).
        let Some(set) = catalog.manifest(&head.id)? else {
            continue;
        };
        if set.id != head.id {
            return Err(Error::integrity(format!(
                "the manifest of set {} holds set {}",
                head.id, set.id
            )));
        }
        if !complete_locally(cfg, &set, local_has) {
            tracing::warn!(set = %set.id, "not shipped: some member snapshots are gone on this site");
            continue;
        }
        out.push(set);
    }
    Ok(out)
}

/// What `ship` would do now.
pub struct ShipPlan {
    pub standby: StandbyView,
    /// Per set, oldest first: the snapshots to send.
    pub sets: Vec<(String, Vec<PlannedSend>)>,
}

/// What `ship` would send now to the first standby.
pub fn ship_plan(cfg: &Config, catalog: &Catalog) -> Result<ShipPlan> {
    ship_plan_to(cfg, catalog, first_standby(cfg)?)
}

/// What `ship` would send now to `standby`: asks it for its inventory,
/// sends nothing.
pub fn ship_plan_to(cfg: &Config, catalog: &Catalog, standby: &Standby) -> Result<ShipPlan> {
    refuse_unless_primary(cfg, catalog)?;
    let mut conn = transport::connect(standby)?;
    let res = (|| -> Result<ShipPlan> {
        // the whole inventory: the dry run reports what the standby holds
        send_hello(cfg, &mut conn, None)?;
        // our listing while the standby makes its own
        let local_has = local_lists(&Stores::open(cfg))?;
        let view = read_welcome(&mut conn)?;
        split_brain_guard_of(cfg, catalog, &standby.name, &view)?;
        check_volumes_match(cfg, &view)?;
        let mut standby_has: BTreeMap<String, BTreeSet<String>> = view
            .volumes
            .iter()
            .map(|v| (v.role.clone(), v.snapshots.iter().cloned().collect()))
            .collect();
        let mut plan = Vec::new();
        for set in sets_to_ship_for(cfg, catalog, &view.committed, &local_has, view.generation)? {
            let steps = plan_set(&set, &standby_has, &local_has);
            for st in &steps {
                standby_has
                    .entry(st.role.clone())
                    .or_default()
                    .insert(st.snapshot.clone());
            }
            plan.push((set.id, steps));
        }
        conn.writer.msg(&Msg::Bye)?;
        Ok(ShipPlan {
            standby: view,
            sets: plan,
        })
    })();
    match res {
        Ok(p) => {
            conn.close()?;
            Ok(p)
        }
        Err(e) => {
            conn.abort();
            Err(e)
        }
    }
}
