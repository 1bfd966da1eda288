//! A site opened for the everyday commands (`status`, `failover
//! --dry-run`): only the newest sets, from `sets.summary`, back to the
//! newest usable full set — the sets those commands act on — and only
//! their snapshots looked up on the storage ([`crate::backend::Store::present`]:
//! on btrfs a `stat` per named subvolume, not a listing). What it costs
//! does not grow with the history.
//!
//! Truthful where it matters: every set it answers with (the failover
//! pair, each volume's newest snapshot) has had its manifest checked
//! against its file's stamp and its members looked up on the storage
//! right now; a member gone makes the set unusable, as in a full open, and
//! the search goes on to older sets. Counts (`usable_count`,
//! `snapshot_count`) are the catalog's recorded counts from the summary,
//! not a count of the storage: `sets` and `prune` list every set against
//! a whole listing. Whenever the summary cannot answer — stale, missing,
//! a tail manifest changed on disk, no usable full set among the newest
//! [`crate::base::catalog::summary::TAIL`] — the site is opened whole
//! ([`Site::open`]) and the summary rebuilt.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::base::catalog::summary::Summary;

/// The summary's counts, kept by a site opened from it.
#[derive(Debug, Clone)]
pub(super) struct Counts {
    pub(super) summary: Summary,
}

impl<'a> Site<'a> {
    /// The site as the everyday commands need it: see the module's doc.
    pub fn open_newest(cfg: &'a Config) -> Result<Site<'a>> {
        let catalog = Catalog::new(&cfg.state_dir);
        let (role, generation) = current_role(cfg, &catalog)?;
        if let Some(summary) = catalog.summary() {
            let stores = Stores::open(cfg);
            if let Some((manifests, local)) = newest_sets(cfg, &catalog, &stores, &summary, role)? {
                let mut site = Site::from_parts(cfg, catalog, stores, manifests, local);
                site.role = role;
                site.generation = generation;
                site.partial = Some(Counts { summary });
                return Ok(site);
            }
        }
        let before = catalog.sets_dir_stamp();
        let site = Site::open(cfg)?;
        site.catalog.summary_rebuilt(before, site.manifests());
        Ok(site)
    }

    /// Opened from the summary: `manifests()` holds the newest sets only.
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }
}

/// The newest sets back to the newest usable full set, oldest first, and
/// per role which of their snapshots are here; `None` when the summary
/// cannot say (the caller opens the site whole).
#[allow(clippy::type_complexity)]
fn newest_sets(
    cfg: &Config,
    catalog: &Catalog,
    stores: &Stores,
    summary: &Summary,
    role: Role,
) -> Result<Option<(Vec<Manifest>, BTreeMap<String, Vec<String>>)>> {
    let mut loaded: Vec<Manifest> = Vec::new();
    let mut checked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut here: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut newest = summary.newest(catalog);
    loop {
        // Up to the next full set that would be usable if present.
        loop {
            let m = match newest.next() {
                None | Some(Err(_)) => return Ok(None),
                Some(Ok(m)) => m,
            };
            let candidate =
                m.kind == SetKind::Full && (role == Role::Primary || m.committed_at.is_some());
            loaded.push(m);
            if candidate {
                break;
            }
        }
        // Look up the members not looked up yet, one call per volume.
        let mut ask: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for m in &loaded {
            for mem in &m.members {
                if stores.find(&mem.role).is_some()
                    && !checked
                        .get(&mem.role)
                        .is_some_and(|c| c.contains(&mem.snapshot))
                {
                    let names = ask.entry(mem.role.as_str()).or_default();
                    if !names.contains(&mem.snapshot.as_str()) {
                        names.push(mem.snapshot.as_str());
                    }
                }
            }
        }
        // (one listing per pool / volume group where the backend lists to
        // answer, as a whole read lists)
        let answers = stores.present_all(&ask)?;
        for (r, names) in &ask {
            let found = answers.get(*r).cloned().unwrap_or_default();
            for (n, yes) in names.iter().zip(found) {
                checked
                    .entry(r.to_string())
                    .or_default()
                    .insert(n.to_string());
                if yes {
                    here.entry(r.to_string()).or_default().insert(n.to_string());
                }
            }
        }
        let full = loaded.last().expect("a candidate was loaded");
        if complete_in(cfg, full, &|r, s| {
            here.get(r).is_some_and(|h| h.contains(s))
        }) {
            break;
        }
    }
    loaded.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    let local = here
        .into_iter()
        .map(|(r, h)| (r, h.into_iter().collect()))
        .collect();
    Ok(Some((loaded, local)))
}

impl Site<'_> {
    /// The set recorded under `id`: this site's copy when it was read,
    /// else (opened with [`Site::open_newest`]) its manifest file.
    pub fn manifest_any(&self, id: &str) -> Option<std::borrow::Cow<'_, Manifest>> {
        match self.manifest(id) {
            Some(m) => Some(std::borrow::Cow::Borrowed(m)),
            None if self.is_partial() => self
                .catalog
                .manifest(id)
                .ok()
                .flatten()
                .map(std::borrow::Cow::Owned),
            None => None,
        }
    }

    /// Per role, the newest snapshot `rec` says the standby holds that is
    /// also here (see `StandbyRecord::common_snapshots`); opened with
    /// [`Site::open_newest`], the ones not looked up yet are looked up on
    /// the storage by name, newest first, until one is here.
    pub fn common_snapshots(
        &self,
        rec: &crate::base::catalog::StandbyRecord,
    ) -> Result<Vec<(String, String)>> {
        if !self.is_partial() {
            return Ok(rec.common_snapshots(&self.local));
        }
        let mut out = Vec::new();
        for (role, held) in &rec.holds {
            let Some(store) = self.stores.find(role) else {
                continue;
            };
            let known = self.local.get(role);
            for s in held.iter().rev() {
                let here = known.is_some_and(|l| l.iter().any(|x| x == s))
                    || store.present(&[s.as_str()])?.first() == Some(&true);
                if here {
                    out.push((role.clone(), s.clone()));
                    break;
                }
            }
        }
        Ok(out)
    }
}
