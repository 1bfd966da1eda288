//! `snapsite failback`: after an unplanned failover, the old primary (A)
//! returns and becomes the standby of the new primary (B) — without a
//! full resend.
//!
//! Run on A. It asks B (through A's `[standby]` transport, one handshake,
//! nothing sent) for B's role, generation and inventory, and refuses unless
//! B is the primary of a newer generation. Per volume, the **base** is the
//! newest snapshot both sites hold (the set and redolog snapshot B's
//! failover used, or newer): B's next `ship` sends only what changed since
//! it — on btrfs from the received snapshot B's copy was made from.
//!
//! A's data written after the base is **not destroyed**: each volume's live
//! data is kept as a read-only snapshot `divergent-<label>` (outside the set
//! namespace: never listed as a set, shipped or pruned), A's sets the peer
//! never committed are moved to `state_dir/divergent/<label>/sets/`, and a
//! record `state_dir/divergent/<label>.json` says what is where; `sets`
//! lists it. Then A's live copies are unmounted and removed (a later
//! failover or switchover makes new ones there), the sets both hold are
//! marked committed (usable for failover here), and A is recorded as the
//! standby in B's generation.
//!
//! The same "demote" step ends a switchover on the old primary (there the
//! divergent snapshot holds nothing the final set lacks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend::Stores;
use crate::base::catalog::{Catalog, RoleRecord};
use crate::base::cmd::Cmd;
use crate::base::config::Config;
use crate::base::error::{Context, Error, Result};
use crate::base::site::Role;
use crate::primary::coordinator::{self, StandbyView};
use crate::wire::stream::Msg;
use crate::wire::transport;

/// `state_dir/divergent/<label>.json`: what a site kept when it stopped
/// being primary.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DivergentRecord {
    pub label: String,
    pub at: Timestamp,
    /// `failback` or `switchover`.
    pub how: String,
    pub peer: String,
    pub peer_generation: u64,
    /// This site's generation while it was primary.
    pub generation: u64,
    /// Per volume: the common base snapshot.
    pub base: BTreeMap<String, Option<String>>,
    /// Per volume: where the read-only snapshot of the live data is.
    pub snapshots: BTreeMap<String, String>,
    /// This site's sets the peer never committed (manifests moved to
    /// `divergent/<label>/sets/`; their snapshots stay until prune).
    pub sets: Vec<String>,
    /// The recovery point of the peer's failover: this site's data written
    /// after it is only in the divergent snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point: Option<Timestamp>,
}

/// What a failback (or the demote step of a switchover) does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub site: String,
    pub peer: String,
    pub peer_generation: u64,
    pub generation: u64,
    pub label: String,
    /// Per volume: the newest snapshot both sites hold (None: there is none).
    pub base: BTreeMap<String, Option<String>>,
    /// The newest full set both hold (committed on the peer).
    pub base_set: Option<String>,
    /// This site's sets after the base that the peer never committed.
    pub divergent_sets: Vec<String>,
    /// Per volume: the live data to keep as divergent and remove.
    pub live: BTreeMap<String, String>,
    /// Mountpoints to unmount (the live copy is mounted there).
    pub unmount: Vec<PathBuf>,
    /// This site's sets the peer holds committed, marked committed here.
    pub mark_committed: Vec<String>,
    /// The newest redolog snapshot both hold: what the peer's failover
    /// recovered up to (data written here after it is only in the
    /// divergent snapshots).
    pub recovery_point: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub plan: Plan,
    pub divergent: DivergentRecord,
    pub seconds: f64,
}

/// At most this many volumes in a peer's welcome (a config names a few).
pub const MAX_PEER_VOLUMES: usize = 256;
/// At most this many names in all of a peer's lists together (its
/// volumes' snapshots and its committed sets).
pub const MAX_PEER_NAMES: usize = 200_000;
/// A site name from the peer: the config's rule, at most this long.
pub const MAX_PEER_SITE_LEN: usize = 64;

/// The peer as the DR verbs believe it: its welcome decoded, every claim
/// checked for shape (a role that is one, a generation, bounded lists of
/// valid names). Whether the generation is believable is decided against
/// this site's records ([`failback_verdict`], [`switchover_verdict`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PeerClaim {
    /// A valid site name (the config's rule).
    pub site: String,
    pub role: Role,
    pub generation: u64,
    /// Per volume role: the snapshots the peer holds (set ids).
    pub volumes: BTreeMap<String, BTreeSet<String>>,
    /// The sets the peer holds committed (set ids).
    pub committed: BTreeSet<String>,
}

fn peer_refused(site: &str, what: String) -> Error {
    Error::refused(format!("peer `{site}`: {what}; nothing was changed")).with_hint(
        "the peer's welcome is not what a snapsite site sends: check that [standby] reaches the other site's `snapsite serve --stdio` (the same version), and whether someone else answers in its name",
    )
}

/// Decode what a DR verb needs from the peer's welcome (already read, its
/// protocol checked): hostile input, so every claim is checked for shape
/// and bounded; a refusal names the claim.
pub fn decode_peer(view: &StandbyView) -> Result<PeerClaim> {
    let shown = crate::base::model::wire_str(&view.site);
    let site_ok = !view.site.is_empty()
        && view.site.len() <= MAX_PEER_SITE_LEN
        && view
            .site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !site_ok {
        return Err(peer_refused(
            &shown,
            format!(
                "its site name is not one (1-{MAX_PEER_SITE_LEN} characters of a-z, A-Z, 0-9, `-`, `_`, `.`)"
            ),
        ));
    }
    let role = match view.role.as_deref() {
        Some("primary") => Role::Primary,
        Some("standby") => Role::Standby,
        Some(other) => {
            return Err(peer_refused(
                &shown,
                format!(
                    "it claims the role `{}`, which is neither `primary` nor `standby`",
                    crate::base::model::wire_str(other)
                ),
            ));
        }
        None => {
            return Err(peer_refused(
                &shown,
                "its welcome names no role (a snapsite older than roles, or not snapsite)".into(),
            ));
        }
    };
    let Some(generation) = view.generation else {
        return Err(peer_refused(
            &shown,
            "its welcome names no generation (a snapsite older than generations, or not snapsite)"
                .into(),
        ));
    };
    if view.volumes.len() > MAX_PEER_VOLUMES {
        return Err(peer_refused(
            &shown,
            format!(
                "it lists {} volumes, more than {MAX_PEER_VOLUMES}",
                view.volumes.len()
            ),
        ));
    }
    let names = view
        .volumes
        .iter()
        .map(|v| v.snapshots.len())
        .fold(view.committed.len(), usize::saturating_add);
    if names > MAX_PEER_NAMES {
        return Err(peer_refused(
            &shown,
            format!("it lists {names} snapshots and sets, more than {MAX_PEER_NAMES}"),
        ));
    }
    // A name the peer listed where a set id belongs; `what` says where.
    let set_id = |n: &String, what: &str| match crate::base::model::parse_set_id(n) {
        Some(_) => Ok(()),
        None => Err(peer_refused(
            &shown,
            format!(
                "{what} `{}` that is not a set id",
                crate::base::model::wire_str(n)
            ),
        )),
    };
    let mut volumes = BTreeMap::new();
    for v in &view.volumes {
        let r = crate::base::model::wire_str(&v.role);
        if crate::base::model::validate_role(&v.role).is_err() {
            return Err(peer_refused(
                &shown,
                format!("it lists a volume `{r}` whose name is not a role"),
            ));
        }
        let mut snaps = BTreeSet::new();
        for n in &v.snapshots {
            set_id(n, &format!("its volume `{r}` lists a snapshot"))?;
            snaps.insert(n.clone());
        }
        if volumes.insert(v.role.clone(), snaps).is_some() {
            return Err(peer_refused(&shown, format!("it lists volume `{r}` twice")));
        }
    }
    for id in &view.committed {
        set_id(id, "it lists a committed set")?;
    }
    Ok(PeerClaim {
        site: view.site.clone(),
        role,
        generation,
        volumes,
        committed: view.committed.clone(),
    })
}

/// [`decode_peer`] of a welcome message as it arrives (the fuzz target's
/// way in): anything else, or another protocol version, is refused.
pub fn decode_welcome(msg: &Msg) -> Result<PeerClaim> {
    match msg {
        Msg::Welcome {
            protocol,
            site,
            volumes,
            committed,
            compress,
            role,
            generation,
        } => {
            if *protocol != crate::wire::stream::PROTOCOL_VERSION {
                return Err(Error::protocol(format!(
                    "peer `{}` speaks protocol {protocol}, this site {}",
                    crate::base::model::wire_str(site),
                    crate::wire::stream::PROTOCOL_VERSION
                )));
            }
            // Bounded as it came, before duplicates collapse.
            if committed.len() > MAX_PEER_NAMES {
                return Err(peer_refused(
                    &crate::base::model::wire_str(site),
                    format!(
                        "it lists {} committed sets, more than {MAX_PEER_NAMES}",
                        committed.len()
                    ),
                ));
            }
            decode_peer(&StandbyView {
                site: site.clone(),
                volumes: volumes.clone(),
                committed: committed.iter().cloned().collect(),
                compress: compress.clone(),
                role: role.clone(),
                generation: *generation,
            })
        }
        other => Err(Error::protocol(format!(
            "expected the peer's welcome, got {}",
            crate::base::model::wire_str(&format!("{other:?}"))
        ))),
    }
}

/// May this site (in role `own_role`, generation `own`, having seen
/// generations up to `seen`) fail back to the peer? Only to a primary of a
/// newer generation that is believable (at most one above `seen`, with no
/// wrap): a peer claiming 2^64-1 demotes nobody. Returns the generation
/// this site adopts as the peer's standby.
pub fn failback_verdict(claim: &PeerClaim, own_role: Role, own: u64, seen: u64) -> Result<u64> {
    let site = crate::base::model::wire_str(&claim.site);
    if claim.role != Role::Primary || claim.generation <= own {
        return Err(Error::refused(format!(
            "peer `{site}` is {} in generation {} (this site: {} in generation {own}): failback needs a peer that is primary in a newer generation",
            claim.role.as_str(),
            claim.generation,
            own_role.as_str(),
        ))
        .with_hint("fail over on the peer first (`snapsite failover` there), or use `snapsite switchover` for a planned move"));
    }
    // This site becomes the standby in the peer's generation: a claim it
    // must be able to believe (a failover there made it one more than any
    // generation both sites knew).
    crate::base::site::check_claimed_generation(&format!("peer `{site}`"), claim.generation, seen)?;
    Ok(claim.generation)
}

/// May this primary (generation `own`, having seen up to `seen`) demote
/// itself to the peer's standby at the end of a switchover? Only when the
/// peer still says it is this site's standby, in no newer generation: a
/// peer that claims to be primary, or a generation above this site's (a
/// failover there, or a lie), is not handed the role; this site stays
/// primary. Returns the peer's generation for the demote plan (<= `own`).
pub fn switchover_verdict(claim: &PeerClaim, own: u64, seen: u64) -> Result<u64> {
    let site = crate::base::model::wire_str(&claim.site);
    // (Only a claim above `seen` is checked: at the top of the range the
    // check refuses everything, even a generation this site holds.)
    if claim.generation > seen {
        crate::base::site::check_claimed_generation(
            &format!("peer `{site}`"),
            claim.generation,
            seen,
        )?;
    }
    if claim.role != Role::Standby || claim.generation > own {
        return Err(Error::refused(format!(
            "peer `{site}` now says it is {} in generation {} (this site: primary in generation {own}): a switchover hands the role only to this site's standby; this site stays primary",
            claim.role.as_str(),
            claim.generation,
        ))
        .with_hint("find out what happened on the peer (`snapsite status` there) before anything else; if it failed over, run `snapsite failback` here"));
    }
    Ok(claim.generation)
}

/// Ask the peer (handshake only; nothing is sent) who it is.
pub fn peer_view(cfg: &Config) -> Result<StandbyView> {
    let standby = cfg.standby.as_ref().ok_or_else(|| {
        Error::config(format!(
            "{}: no [standby] section: the peer is needed (the new primary to fail back to)",
            cfg.path.display()
        ))
    })?;
    let mut conn = transport::connect_quiet(standby)?;
    match coordinator::handshake(cfg, &mut conn) {
        Ok(v) => {
            // A primary peer refuses the session after its welcome; that is
            // expected here: we only asked.
            let _ = conn.writer.msg(&Msg::Bye);
            let _ = conn.writer.flush();
            conn.abort();
            Ok(v)
        }
        Err(e) => {
            conn.abort();
            Err(e)
        }
    }
}

/// The failback plan: the peer must be primary in a newer generation, one
/// this site can believe.
pub fn plan(cfg: &Config, view: &StandbyView) -> Result<Plan> {
    let catalog = Catalog::new(&cfg.state_dir);
    let (role, own) = crate::base::site::current_role(cfg, &catalog)?;
    let claim = decode_peer(view)?;
    let seen = crate::base::site::highest_generation_seen(cfg, &catalog)?;
    let peer_gen = failback_verdict(&claim, role, own, seen)?;
    demote_plan(cfg, &catalog, &claim, peer_gen)
}

/// ZFS and LVM receive into `replica`: a site without one cannot be the
/// peer's standby. Checked before anything changes; the error names the
/// volumes and what to add.
pub fn require_replicas(cfg: &Config, stores: &Stores) -> Result<()> {
    let no_replica: Vec<String> = stores
        .iter()
        .filter(|s| s.kind() != crate::base::config::BackendKind::Btrfs)
        .filter(|s| s.volume().replica().is_none())
        .map(|s| format!("`{}` ({})", s.role(), s.volume().source))
        .collect();
    if no_replica.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
            "{}: volume(s) {} have no `replica`: as the peer's standby this site receives into it",
            cfg.path.display(),
            no_replica.join(", ")
        ))
        .with_hint("nothing was changed; add `replica = \"<pool>/<dataset>\"` (ZFS: a dataset that need not exist yet, in the pool of `source`) or `replica = \"<vg>/<lv>\"` (LVM) to each such volume, and `mountpoint` where failover should mount it, then run this again"))
}

/// What demoting this site to the peer's standby involves.
pub fn demote_plan(
    cfg: &Config,
    catalog: &Catalog,
    claim: &PeerClaim,
    peer_generation: u64,
) -> Result<Plan> {
    let (peer, theirs, committed) = (&claim.site, &claim.volumes, &claim.committed);
    let (_, own) = crate::base::site::current_role(cfg, catalog)?;
    let stores = Stores::open(cfg);
    require_replicas(cfg, &stores)?;
    let mut base = BTreeMap::new();
    let mut live = BTreeMap::new();
    let mut unmount = Vec::new();
    for s in stores.iter() {
        let here = s.list()?;
        let common = theirs
            .get(s.role())
            .and_then(|t| here.iter().rev().find(|x| t.contains(*x)).cloned());
        base.insert(s.role().to_string(), common);
        let vol = s.volume();
        if s.writable_copy_exists()? {
            live.insert(
                vol.role.clone(),
                s.writable_copy_path()?.display().to_string(),
            );
        }
        if let Some(mp) = &vol.mountpoint {
            if crate::dr::failover::live_copy_mounted(vol, mp) && mp != Path::new(&vol.source) {
                unmount.push(mp.clone());
            }
        }
    }
    let missing: Vec<&String> = base
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(r, _)| r)
        .collect();
    if !missing.is_empty() {
        return Err(Error::refused(format!(
            "no snapshot of volume(s) {} is held by both sites: becoming the peer's standby without a full resend is impossible",
            missing.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
        ))
        .with_hint("nothing was changed; re-seed this site as a new standby instead"));
    }
    let manifests = catalog.manifests()?;
    let base_set = manifests
        .iter()
        .rev()
        .filter(|m| m.kind == crate::base::model::SetKind::Full && committed.contains(&m.id))
        .find(|m| {
            m.members.iter().all(|x| {
                base.get(&x.role)
                    .and_then(|b| b.as_deref())
                    .is_some_and(|b| b >= x.snapshot.as_str())
            })
        })
        .map(|m| m.id.clone());
    // This site's sets after the newest one the peer holds: written here
    // after the peer's history forked off. (Older ones the peer lacks were
    // pruned there; they stay, uncommitted, for prune here.)
    let newest_common = manifests
        .iter()
        .filter(|m| committed.contains(&m.id))
        .map(|m| m.id.clone())
        .max();
    let divergent_sets = manifests
        .iter()
        .filter(|m| !committed.contains(&m.id))
        .filter(|m| newest_common.as_ref().is_none_or(|c| &m.id > c))
        .map(|m| m.id.clone())
        .collect();
    // The peer's failover could use nothing newer than this: data written
    // here after it is only in the divergent snapshots.
    let recovery_point = manifests
        .iter()
        .filter(|m| committed.contains(&m.id))
        .filter_map(|m| m.member(&cfg.redolog_role).map(|x| x.before))
        .max();
    let mark_committed = manifests
        .iter()
        .filter(|m| committed.contains(&m.id) && m.committed_at.is_none())
        .map(|m| m.id.clone())
        .collect();
    Ok(Plan {
        site: cfg.site.clone(),
        peer: peer.to_string(),
        peer_generation,
        generation: own,
        label: Timestamp::now().strftime("%Y%m%dT%H%M%S%.3fZ").to_string(),
        base,
        base_set,
        divergent_sets,
        live,
        unmount,
        mark_committed,
        recovery_point,
    })
}

/// Fail back: make this site the peer's standby.
///
/// Journaled (`state_dir/journal-failback.json`): a rerun after a crash
/// carries out the recorded plan from the first step not done, without
/// asking the peer again. A switchover interrupted in its demote is
/// finished the same way (the documented recovery after such a crash is
/// `failover --set FINAL` on the peer, then `failback` here).
pub fn run(cfg: &Config, dry_run: bool) -> Result<(Plan, Option<Report>)> {
    let catalog = Catalog::new(&cfg.state_dir);
    let _lock = catalog.lock("failback", std::time::Duration::from_secs(600))?;
    for verb in ["failback", "switchover"] {
        let Some(mut j) = crate::base::journal::load(&catalog, verb)? else {
            continue;
        };
        let plan = if verb == "failback" {
            j.intent::<Plan>()?
        } else {
            match j.intent::<SwitchoverIntent>()?.plan {
                Some(p) => p,
                // Not demoting yet: this site is still a full primary.
                None => continue,
            }
        };
        tracing::warn!(journal = %j.path().display(), "finishing an interrupted {verb}");
        if dry_run {
            return Ok((plan, None));
        }
        j.adopt()?;
        let report = demote_steps(cfg, &catalog, &plan, verb, &mut j)?;
        j.finish()?;
        return Ok((plan, Some(report)));
    }
    let view = peer_view(cfg)?;
    let plan = plan(cfg, &view)?;
    if dry_run {
        return Ok((plan, None));
    }
    let mut j = crate::base::journal::begin(&catalog, "failback", "snapsite failback", &plan)?;
    crate::failpoint!("failback.after_plan");
    let report = demote_steps(cfg, &catalog, &plan, "failback", &mut j)?;
    j.finish()?;
    // A switchover that stopped before its demote is superseded.
    if let Some(so) = crate::base::journal::load(&catalog, "switchover")? {
        so.finish()?;
    }
    Ok((plan, Some(report)))
}

/// Carry out a demote plan, journaled from its first step. The caller
/// holds the site lock.
pub fn demote(cfg: &Config, catalog: &Catalog, plan: &Plan, how: &str) -> Result<Report> {
    let mut j = crate::base::journal::begin(catalog, how, &format!("snapsite {how}"), plan)?;
    let report = demote_steps(cfg, catalog, plan, how, &mut j)?;
    j.finish()?;
    Ok(report)
}

/// The demote's steps, each recorded in `j` once done; steps already
/// recorded are skipped, and each is safe to redo when the process died
/// inside it. The caller holds the site lock and finishes the journal.
pub fn demote_steps(
    cfg: &Config,
    catalog: &Catalog,
    plan: &Plan,
    how: &str,
    j: &mut crate::base::journal::Open,
) -> Result<Report> {
    let t = std::time::Instant::now();
    let stores = Stores::open(cfg);
    let record_path = divergent_record_path(catalog, &plan.label);
    // 1. Keep the live data, read-only, before anything is removed.
    let record = if j.is_done("divergent_record") {
        crate::base::catalog::read_json::<DivergentRecord>(&record_path)?
    } else {
        let mut snapshots = BTreeMap::new();
        for role in plan.live.keys() {
            let step = format!("keep:{role}");
            let s = stores.get(role)?;
            let at = match j.journal.values.get(&step) {
                Some(at) => at.clone(),
                None => {
                    let at = s.keep_divergent(&plan.label).ctx(format!(
                        "keep volume `{role}`'s live data; nothing was removed"
                    ))?;
                    j.done_with(&step, &at)?;
                    crate::failpoint!("demote.after_keep_divergent");
                    at
                }
            };
            snapshots.insert(role.clone(), at);
        }
        let record = DivergentRecord::of(plan, how, snapshots);
        crate::base::catalog::write_json(&record_path, &record)?;
        j.done("divergent_record")?;
        crate::failpoint!("demote.after_divergent_record");
        record
    };
    // A rerun after a reboot skips the kept steps, whose mounts are gone.
    for (role, at) in &record.snapshots {
        stores.get(role)?.remount_divergent(at)?;
    }
    // 2. This site's sets the peer never committed: out of the catalog
    // (copied first, then removed: a rerun finds either both or the copy).
    j.step(
        "sets_moved",
        || move_divergent_sets(catalog, plan),
        || crate::failpoint!("demote.after_sets_moved"),
    )?;
    // 3. The sets both hold are committed here (usable for failover).
    j.step(
        "mark_committed",
        || mark_committed(catalog, plan),
        || crate::failpoint!("demote.after_mark_committed"),
    )?;
    // 4. The live copies go (their data is in the divergent snapshots).
    for mp in &plan.unmount {
        let step = format!("unmount:{}", mp.display());
        if j.is_done(&step) {
            continue;
        }
        // Keeping the divergent data may have moved the mount (ZFS
        // renames the live dataset and mounts it elsewhere), and a run
        // that died right after its umount left nothing to unmount.
        let gone = stores.iter().any(|s| {
            s.volume().mountpoint.as_deref() == Some(mp.as_path())
                && !crate::dr::failover::live_copy_mounted(s.volume(), mp)
        });
        if !gone {
            Cmd::new("umount")
                .arg(mp)
                .run()
                .ctx("unmount the live copy")?;
        }
        j.done(&step)?;
        crate::failpoint!("demote.after_unmount");
    }
    for role in plan.live.keys() {
        let step = format!("remove_copy:{role}");
        if j.is_done(&step) {
            continue;
        }
        stores.get(role)?.remove_writable_copy()?;
        j.done(&step)?;
        crate::failpoint!("demote.after_remove_copy");
    }
    // 5. The bases, taken here, become receivable from the peer.
    receivable_steps(&stores, plan, j, &|| {
        crate::failpoint!("demote.after_receivable")
    })?;
    // 6. A completed failover's record would block the next failover here.
    if !j.is_done("failover_state") {
        let fs = catalog.failover_state_path();
        if fs.exists() {
            let to = fs.with_file_name(format!("state-until-{}.json", plan.label));
            std::fs::rename(&fs, &to).ctx(format!("move {} aside", fs.display()))?;
        }
        j.done("failover_state")?;
        crate::failpoint!("demote.after_failover_state");
    }
    // 7. The standby of the peer's generation.
    standby_role_step(catalog, plan, how, j, &|| {
        crate::failpoint!("demote.after_role_record")
    })?;
    Ok(Report {
        plan: plan.clone(),
        divergent: record,
        seconds: t.elapsed().as_secs_f64(),
    })
}

impl DivergentRecord {
    /// The record of `plan` carried out by `how`, keeping `snapshots`.
    pub fn of(plan: &Plan, how: &str, snapshots: BTreeMap<String, String>) -> DivergentRecord {
        DivergentRecord {
            label: plan.label.clone(),
            at: Timestamp::now(),
            how: how.to_string(),
            peer: plan.peer.clone(),
            peer_generation: plan.peer_generation,
            generation: plan.generation,
            base: plan.base.clone(),
            snapshots,
            sets: plan.divergent_sets.clone(),
            recovery_point: plan.recovery_point,
        }
    }
}

/// `state_dir/divergent/<label>.json`.
pub fn divergent_record_path(catalog: &Catalog, label: &str) -> PathBuf {
    catalog
        .root()
        .join("divergent")
        .join(format!("{label}.json"))
}

/// The plan's divergent sets (this site's sets the peer never committed)
/// out of the catalog into `divergent/<label>/sets/`: copied first, then
/// removed, so a rerun finds either both or the copy.
pub fn move_divergent_sets(catalog: &Catalog, plan: &Plan) -> Result<()> {
    let dir = catalog
        .root()
        .join("divergent")
        .join(&plan.label)
        .join("sets");
    for id in &plan.divergent_sets {
        if let Some(m) = catalog.manifest(id)? {
            crate::base::catalog::write_json(&dir.join(format!("{id}.json")), &m)?;
            catalog.remove_manifest(id)?;
        }
    }
    Ok(())
}

/// The sets both sites hold are committed here (usable for failover).
pub fn mark_committed(catalog: &Catalog, plan: &Plan) -> Result<()> {
    for id in &plan.mark_committed {
        if let Some(mut m) = catalog.manifest(id)? {
            if m.committed_at.is_none() {
                m.committed_at = Some(Timestamp::now());
                catalog.write_manifest(&m)?;
            }
        }
    }
    Ok(())
}

/// Each volume's base becomes receivable from the peer (journal steps
/// `receivable:<role>`; `after` runs after each step is recorded: the
/// caller's failpoint).
pub fn receivable_steps(
    stores: &Stores,
    plan: &Plan,
    j: &mut crate::base::journal::Open,
    after: &dyn Fn(),
) -> Result<()> {
    for (role, base) in &plan.base {
        let receivable = || match base {
            Some(b) => stores.get(role)?.make_receivable(b),
            None => Ok(()),
        };
        j.step(&format!("receivable:{role}"), receivable, after)?;
    }
    Ok(())
}

/// The last step of a demote and of a follow (journal step `role`): this
/// site is the standby in the peer's generation, since `how`; `after`
/// runs once the step is recorded (the caller's failpoint).
pub fn standby_role_step(
    catalog: &Catalog,
    plan: &Plan,
    how: &str,
    j: &mut crate::base::journal::Open,
    after: &dyn Fn(),
) -> Result<()> {
    let record = || {
        catalog.write_role_record(&RoleRecord {
            role: Role::Standby,
            generation: plan.peer_generation.max(plan.generation),
            since: Timestamp::now(),
            how: how.to_string(),
            set_id: plan.base_set.clone(),
        })
    };
    j.step("role", record, after)
}

/// The divergent records kept on this site, oldest first.
pub fn divergent_records(catalog: &Catalog) -> Result<Vec<DivergentRecord>> {
    let dir = catalog.root().join("divergent");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        out.push(crate::base::catalog::read_json(&p)?);
    }
    Ok(out)
}

/// The plan's base set and each volume's common snapshot (failback's and
/// follow's plans print them alike).
pub(crate) fn render_base(p: &Plan) -> String {
    let mut s = format!(
        "base set      {}\n",
        p.base_set
            .as_deref()
            .unwrap_or("(no full set both hold; per volume below)")
    );
    for (role, b) in &p.base {
        s.push_str(&format!(
            "  {:<10} common snapshot {}\n",
            role,
            b.as_deref().unwrap_or("NONE")
        ));
    }
    s
}

/// The plan's line about this site's sets that `peer` (how the plan
/// names the other site) never committed; empty when there are none.
pub fn render_divergent(p: &Plan, peer: &str) -> String {
    if p.divergent_sets.is_empty() {
        return String::new();
    }
    format!(
        "divergent     {} set(s) the {peer} never committed: {}\n",
        p.divergent_sets.len(),
        p.divergent_sets.join(", ")
    )
}

pub fn render_plan(p: &Plan) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "peer          {} is primary in generation {} (this site: generation {})\n",
        p.peer, p.peer_generation, p.generation
    ));
    s.push_str(&render_base(p));
    for (role, at) in &p.live {
        s.push_str(&format!(
            "keep          {:<10} {} -> read-only divergent-{}, then removed\n",
            role, at, p.label
        ));
    }
    for mp in &p.unmount {
        s.push_str(&format!("unmount       {}\n", mp.display()));
    }
    s.push_str(&render_divergent(p, "peer"));
    s.push_str(&format!(
        "then          this site is the standby in generation {}; the peer's next `snapsite ship` sends only what changed since the base\n",
        p.peer_generation.max(p.generation)
    ));
    s
}

/// The journal of a switchover (`state_dir/journal-switchover.json`): the
/// final set once taken, the demote plan once made. The steps recorded
/// as done: `shipped` (the final set is committed on the peer), then the
/// demote's own steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SwitchoverIntent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_set: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
}
