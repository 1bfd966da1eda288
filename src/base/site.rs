//! One site as this process sees it: its config, its catalog, its role and
//! what its storage holds. The ONE place that answers "which sets are usable
//! here" and "what would failover use": `sets`, `status`, `prune` and
//! `failover` all ask it, so they cannot disagree.
//!
//! A set is usable on a site when every member's snapshot is present on
//! this site's storage for a volume this site's config names — and, on a
//! standby, when the set was committed here (its manifest validated against
//! the standby's own config and receipts). Sets are ordered by generation
//! and sequence, never by the clock.

use std::collections::{BTreeMap, HashSet};

use crate::backend::{Store, Stores};
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::model::{Manifest, SetKind};

mod newest;

/// Which end of replication this site is (recorded state; see `catalog::Role`).
pub use crate::base::catalog::Role;

/// The role a site's config implies when nothing is recorded: a
/// `[standby]` section makes it the primary.
pub fn configured_role(cfg: &Config) -> Role {
    if cfg.standby.is_some() {
        Role::Primary
    } else {
        Role::Standby
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// This site's role and generation: `role.json` when a failover, failback
/// or switchover wrote one, else what the config implies (generation from
/// the catalog, 1 on a new site).
pub fn current_role(cfg: &Config, catalog: &Catalog) -> Result<(Role, u64)> {
    match catalog.role_record()? {
        Some(r) => Ok((r.role, r.generation)),
        None => Ok((configured_role(cfg), catalog.generation()?)),
    }
}

/// The highest generation this site has seen: its own, any set's in its
/// catalog, its peer's as recorded. Whatever the other site claims is
/// checked against it ([`check_claimed_generation`]).
pub fn highest_generation_seen(cfg: &Config, catalog: &Catalog) -> Result<u64> {
    highest_generation_seen_in(cfg, catalog, &catalog.set_heads()?)
}

/// [`highest_generation_seen`] with the catalog's heads (`heads`, as
/// [`Catalog::set_heads`] gives them) already read by the caller.
pub fn highest_generation_seen_in(
    cfg: &Config,
    catalog: &Catalog,
    heads: &[crate::base::catalog::SetHead],
) -> Result<u64> {
    let (_, own) = current_role(cfg, catalog)?;
    let sets = heads.iter().map(|m| m.generation).max().unwrap_or(0);
    // every standby's: a failover on any of them raises the bar
    let peer = catalog
        .peer_records()?
        .iter()
        .filter_map(|(_, p)| p.generation)
        .max()
        .unwrap_or(0);
    Ok(own.max(sets).max(peer))
}

/// A generation claimed by the other site (a manifest, a peer's welcome)
/// may be at most one above the highest this site has seen: a failover
/// makes the new primary's generation exactly one more than any it has
/// seen, so anything higher is a claim no honest peer makes. `what` names
/// the claim in the refusal. Never wraps: at the top of the range nothing
/// is above.
pub fn check_claimed_generation(what: &str, claimed: u64, seen: u64) -> Result<()> {
    // `seen + 1` without wrapping: at u64::MAX only what was seen passes.
    if claimed <= seen {
        return Ok(());
    }
    match seen.checked_add(1) {
        Some(bound) if claimed <= bound => Ok(()),
        _ => Err(Error::refused(format!(
            "{what} claims generation {claimed}, more than one above the highest this site has seen ({seen}); refused"
        ))
        .with_hint(
            "a failover raises the generation by exactly one: a higher one is not believed (if the peer really went through several failovers since this site last saw it, re-seed this site as its new standby)",
        )),
    }
}

/// Record this site's role for the first time (`snapsite role --init`):
/// sites whose configs both name a peer say here which one is primary.
/// Refused once a role is recorded: failover, failback and switchover
/// change it from then on.
pub fn init_role(catalog: &Catalog, role: Role) -> Result<crate::base::catalog::RoleRecord> {
    let _lock = catalog.lock("role --init", std::time::Duration::from_secs(10))?;
    if let Some(r) = catalog.role_record()? {
        return Err(Error::refused(format!(
            "this site already has a recorded role: {} in generation {} (by {} at {})",
            r.role.as_str(),
            r.generation,
            r.how,
            r.since
        ))
        .with_hint("failover, failback and switchover change roles; nothing was changed"));
    }
    let rec = crate::base::catalog::RoleRecord {
        role,
        generation: catalog.generation()?,
        since: jiff::Timestamp::now(),
        how: "init".into(),
        set_id: None,
    };
    catalog.write_role_record(&rec)?;
    Ok(rec)
}

/// Is every member of the set present in `lists` (this site's snapshots per
/// role), for volumes this site's config names? A set without members is
/// never present.
pub fn complete_locally(cfg: &Config, m: &Manifest, lists: &BTreeMap<String, Vec<String>>) -> bool {
    complete_in(cfg, m, &|role, snap| {
        lists.get(role).is_some_and(|l| l.iter().any(|s| s == snap))
    })
}

/// Per role, the snapshots in `lists` as a set: [`complete_in`] looks each
/// member up in constant time, so checking every set is linear in the
/// history, not quadratic.
pub fn presence(lists: &BTreeMap<String, Vec<String>>) -> BTreeMap<&str, HashSet<&str>> {
    lists
        .iter()
        .map(|(r, l)| (r.as_str(), l.iter().map(String::as_str).collect()))
        .collect()
}

/// [`complete_locally`] against a [`presence`] index.
pub fn complete_with(cfg: &Config, m: &Manifest, present: &BTreeMap<&str, HashSet<&str>>) -> bool {
    complete_in(cfg, m, &|role, snap| {
        present.get(role).is_some_and(|l| l.contains(snap))
    })
}

fn complete_in(cfg: &Config, m: &Manifest, has: &dyn Fn(&str, &str) -> bool) -> bool {
    !m.members.is_empty()
        && m.members
            .iter()
            .all(|mem| cfg.volume(&mem.role).is_some() && has(&mem.role, &mem.snapshot))
}

/// Per role, the snapsite snapshots on this site's storage, oldest first:
/// one listing per pool / volume group / filesystem ([`Stores::listing`]).
pub fn local_lists(stores: &Stores) -> Result<BTreeMap<String, Vec<String>>> {
    Ok(stores.listing()?.snapshots())
}

pub struct Site<'a> {
    pub cfg: &'a Config,
    pub catalog: Catalog,
    pub role: Role,
    /// This site's generation (see `current_role`).
    pub generation: u64,
    /// Every configured volume's storage, opened once.
    pub stores: Stores,
    manifests: Vec<Manifest>,
    /// Per role, the snapsite snapshots present here, oldest first.
    local: BTreeMap<String, Vec<String>>,
    /// `manifests[i]` is present (every member here): worked out once,
    /// with a hash lookup per member.
    present: Vec<bool>,
    /// Set id -> index in `manifests`.
    index: std::collections::HashMap<String, usize>,
    /// Opened from `sets.summary` ([`Site::open_newest`]): `manifests` are
    /// the newest sets only and the counts are the summary's.
    partial: Option<newest::Counts>,
}

impl<'a> Site<'a> {
    /// Read the catalog and list every volume's snapshots once.
    pub fn open(cfg: &'a Config) -> Result<Site<'a>> {
        let catalog = Catalog::new(&cfg.state_dir);
        let manifests = catalog.manifests()?;
        let stores = Stores::open(cfg);
        let local = local_lists(&stores)?;
        let (role, generation) = current_role(cfg, &catalog)?;
        let mut site = Site::from_parts(cfg, catalog, stores, manifests, local);
        site.role = role;
        site.generation = generation;
        Ok(site)
    }

    /// A site from what was already read (tests, or a caller that listed).
    pub fn from_parts(
        cfg: &'a Config,
        catalog: Catalog,
        stores: Stores,
        manifests: Vec<Manifest>,
        local: BTreeMap<String, Vec<String>>,
    ) -> Site<'a> {
        let present = {
            let p = presence(&local);
            manifests
                .iter()
                .map(|m| complete_with(cfg, m, &p))
                .collect()
        };
        let index = manifests
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        Site {
            cfg,
            catalog,
            role: configured_role(cfg),
            generation: 1,
            stores,
            manifests,
            local,
            present,
            index,
            partial: None,
        }
    }

    /// The store of a configured role.
    pub fn store(&self, role: &str) -> Result<&Store> {
        self.stores.get(role)
    }

    /// Every set recorded here, in order (generation, sequence).
    pub fn manifests(&self) -> &[Manifest] {
        &self.manifests
    }

    /// The set recorded here under `id`.
    pub fn manifest(&self, id: &str) -> Option<&Manifest> {
        self.index.get(id).map(|&i| &self.manifests[i])
    }

    /// Per role, the snapshots present on this site's storage.
    pub fn local(&self) -> &BTreeMap<String, Vec<String>> {
        &self.local
    }

    /// Are all of the set's snapshots here, for volumes this site names?
    pub fn present(&self, m: &Manifest) -> bool {
        match self.index.get(&m.id) {
            // One of this site's manifests (the same one, not a copy that
            // may differ): the answer worked out at open.
            Some(&i) if std::ptr::eq(&self.manifests[i], m) || self.manifests[i] == *m => {
                self.present[i]
            }
            _ => complete_locally(self.cfg, m, &self.local),
        }
    }

    /// THE definition of a usable set on this site.
    pub fn is_usable(&self, m: &Manifest) -> bool {
        self.present(m) && (self.role == Role::Primary || m.committed_at.is_some())
    }

    /// The usable sets, in order.
    pub fn usable(&self) -> impl Iterator<Item = &Manifest> {
        self.manifests.iter().filter(|m| self.is_usable(m))
    }

    /// How many usable sets of each kind (opened with
    /// [`Site::open_newest`]: how many are recorded — on a standby,
    /// committed — as the summary counts them).
    pub fn usable_count(&self, kind: SetKind) -> usize {
        match &self.partial {
            Some(c) if self.role == Role::Primary => c.summary.count(kind).recorded,
            Some(c) => c.summary.count(kind).committed,
            None => self.usable().filter(|m| m.kind == kind).count(),
        }
    }

    /// How many snapshots of `role` this site holds (opened with
    /// [`Site::open_newest`]: how many its recorded sets name).
    pub fn snapshot_count(&self, role: &str) -> usize {
        match &self.partial {
            Some(c) => c.summary.roles.get(role).copied().unwrap_or(0),
            None => self.local.get(role).map_or(0, Vec::len),
        }
    }

    /// The newest usable full set.
    pub fn newest_full(&self) -> Option<&Manifest> {
        self.usable().filter(|m| m.kind == SetKind::Full).last()
    }

    /// What failover would use: S (the requested or newest usable full set)
    /// and R (the newest usable redolog-bearing set taken after S, or S).
    pub fn failover_pair(&self, requested: Option<&str>) -> Result<(&Manifest, &Manifest)> {
        select(
            &self.manifests,
            &|m| self.is_usable(m),
            &self.cfg.redolog_role,
            requested,
        )
    }
}

/// Pure selection: S = the requested or newest full set among `complete`,
/// R = the newest redolog-bearing set not older than S.
pub fn select<'a>(
    manifests: &'a [Manifest],
    complete: &dyn Fn(&Manifest) -> bool,
    redolog_role: &str,
    requested: Option<&str>,
) -> Result<(&'a Manifest, &'a Manifest)> {
    let fulls: Vec<&Manifest> = manifests
        .iter()
        .filter(|m| m.kind == SetKind::Full)
        .collect();
    let s = match requested {
        Some(id) => {
            let m = fulls.iter().find(|m| m.id == id).ok_or_else(|| {
                Error::not_found(format!("no full set `{id}` on this site"))
                    .with_hint("`snapsite sets` lists them")
            })?;
            if !complete(m) {
                return Err(Error::not_found(format!(
                    "set {id} is not complete on this site"
                )));
            }
            *m
        }
        None => fulls
            .iter()
            .rev()
            .find(|m| complete(m))
            .copied()
            .ok_or_else(|| {
                Error::not_found("no complete full set on this standby").with_hint(
                    "ship one first: `snapsite snapshot && snapsite ship` on the primary",
                )
            })?,
    };
    s.member(redolog_role)
        .ok_or_else(|| Error::storage(format!("set {} has no `{redolog_role}` member", s.id)))?;
    // Order by sequence, never by the clock: a redolog snapshot taken after
    // S counts even when the primary's clock stepped back in between.
    let r = manifests
        .iter()
        .filter(|m| m.kind == SetKind::Redolog && complete(m))
        .filter(|m| m.member(redolog_role).is_some())
        .filter(|m| m.order_key() > s.order_key())
        .max_by_key(|m| m.order_key())
        .unwrap_or(s);
    Ok((s, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::model::Member;

    fn cfg(standby: bool) -> Config {
        let mut t = String::from("site = \"s\"\nstate_dir = \"/var/lib/snapsite-site-test\"\n");
        for r in ["mysql", "redolog"] {
            t.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"/srv/live/{r}\"\nsnapshot_dir = \"/srv/snap/{r}\"\n"
            ));
        }
        if !standby {
            t.push_str("[standby]\ntransport = \"ssh\"\nhost = \"b.example\"\n");
        }
        Config::parse(&t, std::path::Path::new("/x.toml")).unwrap()
    }

    fn m(id: &str, seq: u64, roles: &[&str], committed: bool) -> Manifest {
        let kind = if id.ends_with("-full") {
            SetKind::Full
        } else {
            SetKind::Redolog
        };
        let t: jiff::Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
        let members = roles.iter().map(|r| Member::plain(r, id, t)).collect();
        Manifest {
            seq,
            committed_at: committed.then_some(t),
            ..Manifest::plain(id, kind, "p", members)
        }
    }

    /// The site of config `c` from these records (no storage is read).
    fn site<'a>(c: &'a Config, ms: &[Manifest], local: &BTreeMap<String, Vec<String>>) -> Site<'a> {
        let catalog = Catalog::new(&c.state_dir);
        Site::from_parts(c, catalog, Stores::open(c), ms.to_vec(), local.clone())
    }

    const F1: &str = "20261127T080000.000Z-full";
    const R1: &str = "20261127T081500.000Z-redolog";
    const F2: &str = "20261127T090000.000Z-full";

    #[test]
    fn one_definition_of_usable_on_each_role() {
        let all = ["mysql", "redolog"];
        let ms = vec![
            m(F1, 1, &all, true),
            m(R1, 2, &["redolog"], true),
            m(F2, 3, &all, false), // received, not committed
        ];
        let local: BTreeMap<String, Vec<String>> = [
            ("mysql".to_string(), vec![F1.to_string(), F2.to_string()]),
            (
                "redolog".to_string(),
                vec![F1.to_string(), R1.to_string(), F2.to_string()],
            ),
        ]
        .into();
        let c = cfg(true);
        let stb = site(&c, &ms, &local);
        assert_eq!(stb.role, Role::Standby);
        let ids: Vec<&str> = stb.usable().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            [F1, R1],
            "an uncommitted set is not usable on a standby"
        );
        let (s, r) = stb.failover_pair(None).unwrap();
        assert_eq!((s.id.as_str(), r.id.as_str()), (F1, R1));

        let p = cfg(false);
        let pri = site(&p, &ms, &local);
        assert_eq!(pri.role, Role::Primary);
        assert_eq!(
            pri.usable().count(),
            3,
            "the primary's own sets need no commit"
        );
        assert_eq!(pri.newest_full().unwrap().id, F2);

        // A member gone from storage makes the set unusable on both.
        let mut gone = local.clone();
        gone.get_mut("mysql").unwrap().retain(|s| s != F1);
        let stb = site(&c, &ms, &gone);
        assert!(stb.failover_pair(None).is_err());
        assert_eq!(stb.usable_count(SetKind::Full), 0);
    }
}
