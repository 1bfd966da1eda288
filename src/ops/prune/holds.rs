//! Prune on a primary releases the storage holds (ZFS holds, LVM tags; see
//! `backend::holds`) of standbys that left the config, and moves the one
//! tag every standby of an older version shared over to each standby's
//! own. Each configured standby's recorded base is held under its own tag
//! first, so no base is ever left without one. Idempotent: a prune killed
//! half-way (the journal says so) does it again on its rerun.

use crate::backend::Stores;
use crate::backend::holds::{COMMON_TAG, Hold, common_tag};
use crate::base::catalog::Catalog;
use crate::base::config::{Config, DEFAULT_STANDBY_NAME};
use crate::base::error::Result;

/// Release the holds of the standbys `released` (gone from the config) and,
/// with every configured standby named and recorded, the shared tag.
/// Returns what was released.
pub(super) fn release_holds(
    cfg: &Config,
    catalog: &Catalog,
    stores: &Stores,
    released: &[String],
) -> Result<Vec<Hold>> {
    let mut tags: Vec<String> = released.iter().map(|n| common_tag(n)).collect();
    let shared_unowned = !cfg.standbys.is_empty()
        && cfg.standby_named(DEFAULT_STANDBY_NAME).is_none()
        && !tags.iter().any(|t| t == COMMON_TAG);
    if shared_unowned
        && every_configured_committed(cfg, catalog)?
        && stores.common_holds()?.iter().any(|h| h.tag == COMMON_TAG)
    {
        tags.push(COMMON_TAG.to_string());
    }
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    let own_bases_held = hold_each_base(cfg, catalog, stores);
    let mut out = Vec::new();
    for tag in &tags {
        if tag == COMMON_TAG && !own_bases_held {
            tracing::warn!(
                "keeping the shared hold {COMMON_TAG}: not every standby's base could be held under its own tag"
            );
            continue;
        }
        let done = stores.release_common(tag)?;
        for h in &done {
            tracing::info!(role = %h.role, snapshot = %h.snapshot, tag = %h.tag, "released the hold");
        }
        out.extend(done);
    }
    Ok(out)
}

fn every_configured_committed(cfg: &Config, catalog: &Catalog) -> Result<bool> {
    let records = catalog.standby_records()?;
    Ok(cfg.standbys.iter().all(|s| {
        records
            .iter()
            .any(|(n, r)| *n == s.name && !r.committed.is_empty())
    }))
}

/// Hold each configured standby's newest committed set under its own tag
/// (as its next ship would). False when one could not be held.
fn hold_each_base(cfg: &Config, catalog: &Catalog, stores: &Stores) -> bool {
    let manifests = match catalog.manifests() {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the sets to hold each standby's base");
            return false;
        }
    };
    let mut ok = true;
    for s in &cfg.standbys {
        let rec = match catalog.standby_record_of(&s.name) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(standby = %s.name, error = %e, "cannot read the standby's record");
                ok = false;
                continue;
            }
        };
        let Some(base) = manifests
            .iter()
            .rev()
            .find(|m| rec.committed.contains(&m.id))
        else {
            continue;
        };
        if let Err(e) = stores.protect_common_tagged(&base.member_snapshots(), &common_tag(&s.name))
        {
            tracing::warn!(standby = %s.name, set = %base.id, error = %e, "cannot hold the standby's base");
            ok = false;
        }
    }
    ok
}
