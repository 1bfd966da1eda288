//! The primary's work: take snapshot sets in the configured order, and ship
//! every snapshot the standby lacks, oldest first, incremental from the
//! common snapshot where one exists.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use jiff::Timestamp;
use serde::Serialize;

use crate::backend::{self, Store, Stores};
use crate::base::catalog::{Catalog, HeadCache, StandbyRecord};
use crate::base::config::{Config, Standby, Volume};
use crate::base::error::{Context, Error, Result};
use crate::base::model::{Consistency, MANIFEST_FORMAT, Manifest, Member, SetKind};
use crate::primary::hooks::{self, OnFailure};
use crate::wire::stream::{Msg, PROTOCOL_VERSION};
use crate::wire::transport;

pub mod fanout;
mod handshake;
mod plan;
pub use handshake::{
    StandbyView, complete_local_listing, handshake, local_listing_from, read_welcome, send_hello,
    welcome_since,
};
use handshake::{WholeRecord, recorded_committed};
pub use plan::{
    PlannedSend, ShipPlan, plan_set, sets_to_ship, sets_to_ship_for, ship_plan, ship_plan_to,
};

/// Undo sets whose taking was interrupted (crash between the first snapshot
/// and the manifest): their snapshots are destroyed, never presented as a set.
pub fn recover_pending(cfg: &Config, catalog: &Catalog) -> Result<Vec<String>> {
    let mut undone = Vec::new();
    let stores = Stores::open(cfg);
    for p in catalog.pending()? {
        if catalog.has_manifest(&p.id) {
            catalog.remove_pending(&p.id)?;
            continue;
        }
        for m in &p.members {
            if let Some(store) = stores.find(&m.role) {
                for note in store
                    .recover_interrupted()
                    .ctx(format!("undoing interrupted set {}", p.id))?
                {
                    tracing::warn!(set = %p.id, volume = %m.role, "{note}");
                }
                store
                    .destroy(&p.id)
                    .ctx(format!("undoing interrupted set {}", p.id))?;
            }
        }
        catalog.remove_pending(&p.id)?;
        tracing::warn!(set = %p.id, "removed the snapshots of an interrupted set");
        undone.push(p.id);
    }
    Ok(undone)
}

/// Group consecutive volumes that one backend call can snapshot atomically.
fn atomic_groups<'a>(stores: &[&'a Store]) -> Vec<Vec<&'a Store>> {
    let mut groups: Vec<(Option<String>, Vec<&Store>)> = Vec::new();
    for s in stores {
        let key = s.atomic_key();
        match groups.last_mut() {
            Some((Some(k), g)) if key.as_ref() == Some(k) => g.push(s),
            _ => groups.push((key, vec![s])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Snapshot one atomic group under `id`, with its members'
/// `[hooks.volume.ROLE]` held around exactly this snapshot call. When the
/// snapshot succeeds its members join `manifest` (with the consistency their
/// hooks earned) and `done` (what a failure of the set must destroy).
fn snapshot_group<'s>(
    cfg: &Config,
    id: &str,
    kind: SetKind,
    gi: usize,
    group: &[&'s Store],
    manifest: &mut Manifest,
    done: &mut Vec<&'s Store>,
) -> Result<()> {
    // `[hooks.volume.ROLE]` of this group's members, held around
    // exactly this snapshot call.
    let mut held: Vec<(String, hooks::Started)> = Vec::new();
    for st in group {
        let v = st.volume();
        let Some(h) = cfg.hooks.for_volume(&v.role) else {
            continue;
        };
        let s = hooks::start_pre(h, &hook_env(cfg, id, kind, Some(v)));
        if !s.ok && s.on_failure() == OnFailure::Abort {
            let e = s.error();
            held.push((v.role.clone(), s));
            for (_, s) in held {
                s.finish(false);
            }
            return Err(e.context(format!("volume `{}`", v.role)));
        }
        held.push((v.role.clone(), s));
    }
    let before = crate::base::model::now();
    let snap = backend::snapshot_together(group, id);
    let after = crate::base::model::now();
    if snap.is_ok() {
        for s in group {
            done.push(s);
            manifest.members.push(Member {
                before,
                after,
                atomic_group: (group.len() > 1).then_some(gi as u32),
                ..placeholder_member(s.volume(), id)
            });
        }
    }
    let mut hook_abort = None;
    for (role, s) in held {
        let s = s.finish(snap.is_ok());
        if !s.ok && s.on_failure() == OnFailure::Abort && hook_abort.is_none() {
            hook_abort = Some(s.error().context(format!("volume `{role}`")));
        }
        if let Some(m) = manifest.members.iter_mut().find(|m| m.role == role) {
            m.consistency = Some(consistency_of(&s));
        }
    }
    snap?;
    if let Some(e) = hook_abort {
        return Err(e);
    }
    Ok(())
}

/// Take a set: every volume (full) or the redolog volume alone, in order.
/// Each member records the time just before and just after its snapshot.
pub fn take_set(cfg: &Config, catalog: &Catalog, kind: SetKind) -> Result<Manifest> {
    recover_pending(cfg, catalog)?;
    let stores = Stores::open(cfg);
    let chosen: Vec<&Store> = match kind {
        SetKind::Full => stores.iter().collect(),
        SetKind::Redolog => vec![stores.get(&cfg.redolog_role)?],
    };
    let now = crate::base::model::now();
    let next = catalog.next_sequence(now, kind)?;
    if let Some(step) = next.clock_step {
        tracing::warn!(
            set = %next.id,
            behind_ms = step.as_millis() as i64,
            "the clock is behind the previous set's time (stepped back?): the set id continues the sequence; its member times are the clock's, so replay from_time stays early (safe); raise set.safety_margin by at least {}s if this clock cannot be trusted",
            (step.as_secs_f64().ceil()) as i64
        );
    }
    let id = next.id.clone();
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        id: id.clone(),
        kind,
        site: cfg.site.clone(),
        seq: next.seq,
        generation: catalog.generation()?,
        members: Vec::new(),
        safety_margin_ms: cfg.safety_margin.as_millis() as i64,
        committed_at: None,
        standby_order: None,
    };
    // The intent, so a crash mid-set is undone on the next run.
    let intent = Manifest {
        members: chosen
            .iter()
            .map(|s| placeholder_member(s.volume(), &id))
            .collect(),
        ..manifest.clone()
    };
    catalog.write_pending(&intent)?;
    crate::failpoint!("take_set.after_intent");

    let mut done: Vec<&Store> = Vec::new();
    // `[hooks.set]`: started before the first snapshot, released after the
    // last; its post runs whatever happens (below, if the closure left early).
    let mut set_hook = cfg
        .hooks
        .set
        .as_ref()
        .map(|h| hooks::start_pre(h, &hook_env(cfg, &id, kind, None)));
    let result = (|| -> Result<()> {
        if let Some(s) = &set_hook {
            if !s.ok && s.on_failure() == OnFailure::Abort {
                return Err(s.error());
            }
        }
        for (gi, group) in atomic_groups(&chosen).into_iter().enumerate() {
            snapshot_group(cfg, &id, kind, gi, &group, &mut manifest, &mut done)?;
            crate::failpoint!("take_set.after_snapshot");
        }
        if let Some(s) = set_hook.take() {
            let s = s.finish(true);
            for m in &mut manifest.members {
                if !matches!(m.consistency, Some(Consistency::CrashConsistent { .. })) {
                    m.consistency = Some(consistency_of(&s));
                }
            }
            if !s.ok && s.on_failure() == OnFailure::Abort {
                return Err(s.error());
            }
        }
        for m in &manifest.members {
            if let Some(Consistency::CrashConsistent { reason }) = &m.consistency {
                tracing::warn!(set = %id, volume = %m.role, %reason, "snapshot taken crash-consistent: its quiesce hook failed");
            }
        }
        // One listing shows the storage ids of several members at once
        // (ZFS guids, LVM uuids); what it does not show is asked alone.
        let listing = match manifest.members.len() {
            0 | 1 => None,
            _ => Some(stores.listing()?),
        };
        for m in &mut manifest.members {
            m.storage_id = match listing.as_ref().and_then(|l| l.storage_id(&m.role, &id)) {
                Some(sid) => Some(sid.to_string()),
                None => stores.get(&m.role)?.storage_id(&id)?,
            };
        }
        catalog.write_manifest(&manifest)
    })();
    if let Some(s) = set_hook.take() {
        s.finish(false);
    }
    match result {
        Ok(()) => {
            crate::failpoint!("take_set.after_manifest");
            catalog.remove_pending(&id)?;
            tracing::info!(set = %id, kind = kind.as_str(), skew_ms = manifest.skew().as_millis() as i64, "set taken");
            Ok(manifest)
        }
        Err(e) => {
            for s in done {
                if let Err(de) = s.destroy(&id) {
                    tracing::error!(volume = %s.role(), error = %de, "could not remove snapshot of failed set");
                    return Err(e.context(format!("set {id} failed and snapshot cleanup failed too ({de}); run `snapsite snapshot` again to retry the cleanup")));
                }
            }
            let _ = catalog.remove_pending(&id);
            Err(e.context(format!("set {id} not taken (its snapshots were removed)")))
        }
    }
}

/// The environment of a hook for set `id` (and volume `v`).
fn hook_env(cfg: &Config, id: &str, kind: SetKind, v: Option<&Volume>) -> hooks::HookEnv {
    hooks::HookEnv {
        site: cfg.site.clone(),
        set_id: id.to_string(),
        set_kind: kind.as_str().to_string(),
        volume: v.map(|v| (v.role.clone(), v.source.clone())),
    }
}

fn consistency_of(s: &hooks::Started) -> Consistency {
    if s.ok {
        Consistency::Quiesced
    } else {
        Consistency::CrashConsistent {
            reason: s.error().to_string(),
        }
    }
}

fn placeholder_member(v: &Volume, id: &str) -> Member {
    Member {
        role: v.role.clone(),
        backend: v.backend().as_str().into(),
        source: v.source.clone(),
        snapshot: id.to_string(),
        storage_id: None,
        before: Timestamp::UNIX_EPOCH,
        after: Timestamp::UNIX_EPOCH,
        atomic_group: None,
        send_options: v.zfs_options().names(),
        receipt: None,
        consistency: None,
    }
}

pub use crate::base::site::{complete_locally, local_lists};

#[derive(Debug, Clone, Serialize)]
pub struct ShippedSnapshot {
    pub set_id: String,
    pub role: String,
    pub snapshot: String,
    pub base: Option<String>,
    pub bytes: u64,
    pub seconds: f64,
    /// Bytes on the wire for this snapshot (frames, after compression).
    pub wire_bytes: u64,
    /// `none`, or the zstd level its data frames were compressed with.
    pub compression: String,
    /// This transfer continued a cut one (`bytes` is only the rest).
    pub resumed: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ShipReport {
    pub standby: String,
    pub committed: Vec<String>,
    pub snapshots: Vec<ShippedSnapshot>,
    pub payload_bytes: u64,
    pub wire_bytes: u64,
    pub seconds: f64,
    /// Compression used on the wire (`none`, `zstd:3`), as negotiated.
    pub compression: String,
    /// Seconds the transfer waited for the bandwidth limit.
    pub bwlimit_wait_seconds: f64,
    /// How many times the sender waited for the standby's answer (the
    /// handshake, then one per set: snapshots and commit are pipelined).
    pub round_trips: u32,
}

/// Progress callback: (role, snapshot, bytes so far, done).
pub type Progress<'a> = &'a mut dyn FnMut(&str, &str, u64, bool);

/// Ship to the first (or only) standby; `fanout::ship_all` ships to each.
pub fn ship(cfg: &Config, catalog: &Catalog, progress: Progress) -> Result<ShipReport> {
    let standby = first_standby(cfg)?;
    refuse_unless_primary(cfg, catalog)?;
    recover_pending(cfg, catalog)?;
    ship_to(cfg, catalog, standby, progress)
}

/// The first standby, or the error that there is none.
pub fn first_standby(cfg: &Config) -> Result<&Standby> {
    cfg.standby.as_ref().ok_or_else(|| {
        Error::config(format!(
            "{}: no [standby] section: nowhere to ship to",
            cfg.path.display()
        ))
    })
}

/// One session with `standby`: everything it lacks, its own records
/// (the caller checked the role and recovered pending sets).
pub fn ship_to(
    cfg: &Config,
    catalog: &Catalog,
    standby: &Standby,
    progress: Progress,
) -> Result<ShipReport> {
    let started = Instant::now();
    let started_at = Timestamp::now();
    let mut conn = transport::connect(standby).inspect_err(|_| {
        fanout::note_failure(catalog, &standby.name, started_at);
    })?;
    let desc = conn.display();
    let result = ship_session(cfg, catalog, standby, &mut conn, progress);
    match result {
        Ok(mut report) => {
            report.wire_bytes = conn.writer.bytes_out;
            report.bwlimit_wait_seconds = conn.writer.limit_waited().as_secs_f64();
            report.standby = desc;
            report.seconds = started.elapsed().as_secs_f64();
            conn.close().ctx("standby session")?;
            Ok(report)
        }
        Err(e) => {
            let e = fanout::abandon_if_stalled(standby, conn, e);
            // A session cut by a stopping `run` (its transport killed on
            // SIGTERM) says nothing about the standby: a restart of `run`
            // must not leave it flagged as failing.
            if !transport::sessions_cut() {
                fanout::note_failure(catalog, &standby.name, started_at);
            }
            Err(e)
        }
    }
}

/// This site ships only while it is the primary by its recorded role.
pub fn refuse_unless_primary(cfg: &Config, catalog: &Catalog) -> Result<()> {
    let (role, generation) = crate::base::site::current_role(cfg, catalog)?;
    if role != crate::base::site::Role::Primary {
        return Err(Error::refused(format!(
            "this site ({}) is a standby in generation {generation} (state_dir/role.json): it does not ship",
            cfg.site
        ))
        .with_hint("`snapsite status` says who is primary; `snapsite switchover` or `failover` changes it"));
    }
    Ok(())
}

/// The split-brain guard, shipping end: a primary whose peer says it is
/// primary too, or holds a newer generation, refuses to ship (a returning
/// old primary must not overwrite the new one). What the peer said is
/// recorded in `peer.json`, so `status` turns critical.
pub fn split_brain_guard(cfg: &Config, catalog: &Catalog, view: &StandbyView) -> Result<()> {
    let name = cfg
        .standby
        .as_ref()
        .map_or(crate::base::config::DEFAULT_STANDBY_NAME, |s| {
            s.name.as_str()
        });
    split_brain_guard_of(cfg, catalog, name, view)
}

/// [`split_brain_guard`] for standby `name`, recording in its own peer record.
pub fn split_brain_guard_of(
    cfg: &Config,
    catalog: &Catalog,
    name: &str,
    view: &StandbyView,
) -> Result<()> {
    split_brain_guard_in(cfg, catalog, name, view, &catalog.set_heads()?)
}

/// [`split_brain_guard_of`] with the catalog's heads already read (`heads`).
fn split_brain_guard_in(
    cfg: &Config,
    catalog: &Catalog,
    name: &str,
    view: &StandbyView,
    heads: &[crate::base::catalog::SetHead],
) -> Result<()> {
    let (_, own) = crate::base::site::current_role(cfg, catalog)?;
    let peer_role = match view.role.as_deref() {
        Some("primary") => Some(crate::base::site::Role::Primary),
        Some("standby") => Some(crate::base::site::Role::Standby),
        _ => None,
    };
    let site = crate::base::model::wire_str(&view.site);
    // A generation more than one above any this site has seen is no
    // peer's honest claim: it is not recorded (it would become the base
    // of this site's next generation), and this site does not ship.
    let seen = crate::base::site::highest_generation_seen_in(cfg, catalog, heads)?;
    let unbelievable = view.generation.and_then(|g| {
        crate::base::site::check_claimed_generation(&format!("peer `{site}`"), g, seen)
            .err()
            .map(|e| e.to_string())
    });
    let generation = view.generation.filter(|_| unbelievable.is_none());
    let refused = match (peer_role, view.generation) {
        _ if unbelievable.is_some() => {
            unbelievable.map(|e| format!("split-brain guard: {e}; this site refuses to ship"))
        }
        (Some(crate::base::site::Role::Primary), g) => Some(format!(
            "split-brain guard: peer `{site}` is the primary{} (this site: generation {own}); this site refuses to ship",
            g.map(|g| format!(" in generation {g}")).unwrap_or_default()
        )),
        (_, Some(g)) if g > own => Some(format!(
            "split-brain guard: peer `{site}` holds generation {g}, newer than this site's {own}: a failover happened there; this site refuses to ship"
        )),
        _ => None,
    };
    let record = crate::base::catalog::PeerRecord {
        site,
        role: peer_role,
        generation,
        seen_at: Timestamp::now(),
        refused: refused.clone(),
    };
    let recorded = catalog.peer_record_of(name).ok().flatten();
    if !peer_record_current(recorded.as_ref(), &record) {
        if let Err(e) = catalog.write_peer_record_of(name, &record) {
            tracing::warn!(error = %e, "could not record the peer's generation");
        }
    }
    match refused {
        Some(m) => Err(Error::refused(m).with_hint(
            "this site is no longer the primary: stop its application, fence it, and run `snapsite failback` here to become the new primary's standby",
        )),
        None => Ok(()),
    }
}

/// How old the recorded `seen_at` may get while the peer keeps saying the
/// same: `peer.json` (two syncs) is then not rewritten on every ship.
pub const PEER_RECORD_REFRESH: std::time::Duration = std::time::Duration::from_secs(3600);

/// Does the recorded peer (`recorded`) already say what `new` says (site,
/// role, generation, refusal), seen less than [`PEER_RECORD_REFRESH`] ago?
/// `seen_at` is a display value (the wall clock): a record from the future
/// or an unreadable one is rewritten.
fn peer_record_current(
    recorded: Option<&crate::base::catalog::PeerRecord>,
    new: &crate::base::catalog::PeerRecord,
) -> bool {
    let Some(r) = recorded else { return false };
    let age = new.seen_at.duration_since(r.seen_at);
    r.site == new.site
        && r.role == new.role
        && r.generation == new.generation
        && r.refused == new.refused
        && !age.is_negative()
        && age.unsigned_abs() < PEER_RECORD_REFRESH
}

/// The primary and the standby must name the same volumes with the same
/// backends: a standby with a volume the primary does not ship would get
/// "complete" sets that failover cannot use.
pub fn check_volumes_match(cfg: &Config, view: &StandbyView) -> Result<()> {
    let site = crate::base::model::wire_str(&view.site);
    let theirs: Vec<(String, String)> = view
        .volumes
        .iter()
        .map(|v| {
            (
                crate::base::model::wire_str(&v.role),
                crate::base::model::wire_str(&v.backend),
            )
        })
        .collect();
    let theirs: Vec<(&str, &str)> = theirs
        .iter()
        .map(|(r, b)| (r.as_str(), b.as_str()))
        .collect();
    let problems = cfg.volume_mismatches(&site, &theirs);
    if !problems.is_empty() {
        return Err(Error::config(format!(
            "the volumes differ: {}",
            problems.join("; ")
        ))
        .with_hint("both sites' configs must list the same roles with the same backends; nothing was sent"));
    }
    Ok(())
}

fn ship_session(
    cfg: &Config,
    catalog: &Catalog,
    standby: &Standby,
    conn: &mut transport::Connection,
    progress: Progress,
) -> Result<ShipReport> {
    let mut report = ShipReport::default();
    // One listing of this site's storage (from the set the welcome starts
    // from, see `welcome_since`); every step below reuses it. It is made
    // before the hello, which names that set only if this site holds it.
    let stores = Stores::open(cfg);
    // What the standby holds, kept for retention (the common snapshot) and
    // status; updated in memory after every acknowledged snapshot and
    // committed set, written once per committed set (see `Acks`).
    // Its head (`standby.head.json`: the newest entries) has every field
    // this session keeps; the whole record is read (once: `whole`) only
    // when the head is missing or stale, or below where the head cannot
    // say. Nothing writes it before the last of those reads.
    let mut whole = WholeRecord::new(catalog, &standby.name);
    let previous = match catalog.standby_head_cached_of(&standby.name) {
        HeadCache::Fresh(head) => head,
        HeadCache::NoRecord => StandbyRecord::default(),
        HeadCache::Stale => whole.get()?.map(StandbyRecord::head).unwrap_or_default(),
    };
    let heads = catalog.set_heads()?;
    let (mut local, since) =
        local_listing_from(&stores, welcome_since(catalog, &previous, &heads)?)?;
    send_hello(cfg, conn, since.as_ref().map(|m| m.id.as_str()))?;
    let view = read_welcome(conn)?;
    if let Some(since) = &since {
        complete_local_listing(&stores, &mut local, since, &view.committed, &view.volumes)?;
    }
    let local_has = local.snapshots();
    report.round_trips = 1;
    split_brain_guard_in(cfg, catalog, &standby.name, &view, &heads)?;
    check_volumes_match(cfg, &view)?;
    let standby_generation = view.generation;
    let StandbyView {
        volumes,
        committed,
        compress,
        ..
    } = view;
    let compression = standby.compression.negotiate(&compress);
    conn.writer.set_limit(standby.bwlimit.clone());
    tracing::debug!(compression = %compression.name(), "wire");
    report.compression = compression.name();
    let mut resumable: BTreeMap<String, crate::backend::Resumable> = volumes
        .iter()
        .filter_map(|v| v.resumable.clone().map(|r| (v.role.clone(), r)))
        .collect();
    let standby_has: BTreeMap<String, BTreeSet<String>> = volumes
        .into_iter()
        .map(|v| (v.role, v.snapshots.into_iter().collect()))
        .collect();
    // Each standby's base is held under a tag naming it: one standby
    // moving on never releases another's.
    let hold_tag = crate::backend::holds::common_tag(&standby.name);
    // A ship that died after the standby committed a set but before this
    // site recorded it left the set's members unprotected here (ZFS: no
    // hold on the common snapshot); protect the newest committed set now.
    // (Decided from the heads; that set alone is read whole.)
    if let Some(newest) = heads.iter().rev().find(|m| committed.contains(&m.id)) {
        // The head holds the newest committed set recorded: in it, it was
        // recorded; not in it, the whole record says.
        let recorded = previous.committed.contains(&newest.id)
            || whole
                .get()?
                .is_some_and(|r| r.committed.contains(&newest.id));
        if !recorded {
            if let Some(m) = catalog.manifest(&newest.id)? {
                stores.protect_common_tagged(&m.member_snapshots(), &hold_tag)?;
            }
        }
    }
    let record = StandbyRecord {
        standby: conn.display(),
        updated_at: Some(Timestamp::now()),
        last_ship_ok: previous.last_ship_ok,
        holds: standby_has.clone(),
        committed: recorded_committed(whole, since.as_ref(), &heads, &committed)?,
        last_bytes: previous.last_bytes,
        failing_since: previous.failing_since,
    };
    let to_ship = plan::sets_to_ship_from(
        cfg,
        catalog,
        &heads,
        &committed,
        &local_has,
        standby_generation,
    )?;
    // Not written here: the record is a cache of what the standby holds
    // (its welcome and receipts are the truth) and is written once per
    // committed set, the last one with the session's end (see `Acks`).
    let sets = to_ship.len();
    let mut acks = Acks {
        record,
        standby_has,
        report,
        in_flight: VecDeque::new(),
    };
    for (n, set) in to_ship.into_iter().enumerate() {
        // Every snapshot of the set, then its commit, without waiting: the
        // standby answers in order (an ack or a nack per snapshot, then the
        // commit's answer), read once the commit is sent.
        for step in plan_set(&set, &acks.standby_has, &local_has) {
            let store = stores.get(&step.role)?;
            let member = set.member(&step.role).expect("planned from members");
            let t = Instant::now();
            let token = resumable
                .remove(&step.role)
                .filter(|r| r.snapshot.as_ref().is_none_or(|s| s == &step.snapshot))
                .map(|r| r.token);
            let out = Outgoing {
                set_id: &set.id,
                step: &step,
                storage_id: member.storage_id.as_deref(),
                compression: stream_compression(compression, &member.send_options),
            };
            let wire_before = conn.writer.bytes_out;
            let (bytes, resumed) =
                send_one(conn, store, &out, token.as_deref(), progress, &mut acks)?;
            acks.in_flight.push_back(ShippedSnapshot {
                set_id: set.id.clone(),
                role: step.role.clone(),
                snapshot: step.snapshot.clone(),
                base: step.base.clone(),
                bytes,
                seconds: t.elapsed().as_secs_f64(),
                wire_bytes: conn.writer.bytes_out - wire_before,
                compression: out.compression.name(),
                resumed,
            });
        }
        conn.writer.msg(&Msg::Commit {
            manifest: set.clone(),
        })?;
        acks.report.round_trips += 1;
        acks.read_all(conn)?;
        match conn.reader.msg()? {
            Msg::Committed { set_id } if set_id == set.id => {
                crate::failpoint!("ship.after_committed");
                // The set's members are now the common snapshots: protect
                // them here (the standby protects its side on commit),
                // before the record says the set is committed: a record
                // that says so is never left with its members unprotected
                // (the next ship protects only a set the record lacks).
                stores.protect_common_tagged(&set.member_snapshots(), &hold_tag)?;
                acks.record.committed.insert(set_id.clone());
                acks.record.updated_at = Some(Timestamp::now());
                // A backlog is recorded set by set; the last set's record
                // is the session's end's (one write, below).
                if n + 1 < sets {
                    catalog.write_standby_record_of(&standby.name, &acks.record)?;
                }
                acks.report.committed.push(set_id)
            }
            other => {
                return Err(Error::protocol(format!(
                    "set {}: expected committed, got {other:?}",
                    set.id
                )));
            }
        }
        tracing::info!(set = %set.id, "committed on standby");
    }
    conn.writer.msg(&Msg::Bye)?;
    let Acks {
        mut record, report, ..
    } = acks;
    record.last_ship_ok = Some(Timestamp::now());
    record.failing_since = None;
    crate::failpoint!("ship.before_record");
    catalog.write_standby_record_of(&standby.name, &record)?;
    Ok(report)
}

/// Snapshots sent whose answers the sender has not read yet, and what an
/// ack updates: the standby record in memory (written once its set is
/// committed, not at every ack: a record behind the standby only keeps
/// more here, see docs/crash-recovery.md "Syncs of a ship"), the
/// planner's view and the report.
struct Acks {
    record: StandbyRecord,
    standby_has: BTreeMap<String, BTreeSet<String>>,
    report: ShipReport,
    in_flight: VecDeque<ShippedSnapshot>,
}

impl Acks {
    /// Read the answers to every snapshot in flight, in the order sent: an
    /// ack records it; a nack (or anything else) is the error.
    fn read_all(&mut self, conn: &mut transport::Connection) -> Result<()> {
        while let Some(s) = self.in_flight.pop_front() {
            match conn.reader.msg()? {
                Msg::Ack { role, snapshot, .. } if role == s.role && snapshot == s.snapshot => {}
                Msg::Nack { error, .. } => {
                    return Err(Error::integrity(format!(
                        "standby rejected {} {}: {}",
                        s.role,
                        s.snapshot,
                        crate::base::model::wire_text(&error)
                    ))
                    .with_hint(
                        "nothing was committed for this set; run `snapsite ship` again to retry",
                    ));
                }
                other => {
                    return Err(Error::protocol(format!(
                        "expected ack of {} {}, got {other:?}",
                        s.role, s.snapshot
                    )));
                }
            }
            self.standby_has
                .entry(s.role.clone())
                .or_default()
                .insert(s.snapshot.clone());
            self.record
                .note_received(&s.role, &s.snapshot, s.base.is_some(), s.bytes);
            crate::failpoint!("ship.after_ack");
            self.report.payload_bytes += s.bytes;
            self.report.snapshots.push(s);
        }
        Ok(())
    }
}

/// What one snapshot's transfer needs besides the connection.
struct Outgoing<'a> {
    set_id: &'a str,
    step: &'a PlannedSend,
    storage_id: Option<&'a str>,
    compression: crate::wire::compress::Compression,
}

/// No zstd over a stream ZFS already compressed (`-c`) or encrypted (`-w`):
/// it would spend CPU for nothing.
fn stream_compression(
    negotiated: crate::wire::compress::Compression,
    send_options: &[String],
) -> crate::wire::compress::Compression {
    if send_options.iter().any(|o| o == "compressed" || o == "raw") {
        crate::wire::compress::Compression::None
    } else {
        negotiated
    }
}

/// Send one snapshot; with a resume token, first try to continue the cut
/// receive, and fall back to a fresh send when the token is stale.
fn send_one(
    conn: &mut transport::Connection,
    store: &Store,
    out: &Outgoing,
    token: Option<&str>,
    progress: Progress,
    acks: &mut Acks,
) -> Result<(u64, bool)> {
    let step = out.step;
    if let Some(tok) = token {
        match send_stream(conn, store, out, Some(tok), progress, acks) {
            Ok(Sent::Done(bytes)) => return Ok((bytes, true)),
            Ok(Sent::Stale(why)) => {
                tracing::warn!(volume = %step.role, snapshot = %step.snapshot, reason = %why, "resume token is stale; sending the snapshot again");
            }
            Err(e) => return Err(e),
        }
    }
    match send_stream(conn, store, out, None, progress, acks)? {
        Sent::Done(bytes) => Ok((bytes, false)),
        Sent::Stale(why) => Err(Error::storage(why)),
    }
}

enum Sent {
    Done(u64),
    /// Resuming failed before any data was sent; the standby discarded its
    /// partial state.
    Stale(String),
}

/// Send one snapshot: `Begin`, its data, `End`. Its answer is read later
/// (`Acks::read_all`); only an `Abort` waits, for the nack that ends it.
fn send_stream(
    conn: &mut transport::Connection,
    store: &Store,
    out: &Outgoing,
    token: Option<&str>,
    progress: Progress,
    acks: &mut Acks,
) -> Result<Sent> {
    let step = out.step;
    // A resume is checked against the standby's verified prefix before
    // anything is said (reading a large prefix back must not hold the
    // standby's session idle): a stale token falls back to a fresh send.
    let early = match token {
        Some(t) => match store.send_resume(&step.snapshot, t) {
            Ok(src) => Some(src),
            Err(e) => return Ok(Sent::Stale(e.to_string())),
        },
        None => None,
    };
    conn.writer.msg(&Msg::Begin {
        set_id: out.set_id.into(),
        role: step.role.clone(),
        snapshot: step.snapshot.clone(),
        base: step.base.clone(),
        storage_id: out.storage_id.map(str::to_string),
        resume: token.is_some(),
    })?;
    // Tell the standby to drop its half of the transfer, and read its
    // answer (after those to the snapshots still in flight).
    let abort = |conn: &mut transport::Connection, acks: &mut Acks, reason: String| -> Result<()> {
        conn.writer.msg(&Msg::Abort { reason })?;
        acks.report.round_trips += 1;
        acks.read_all(conn)?;
        match conn.reader.msg()? {
            Msg::Nack { .. } => Ok(()),
            other => Err(Error::protocol(format!(
                "expected nack after abort, got {other:?}"
            ))),
        }
    };
    let opened = match early {
        Some(src) => Ok(src),
        None => store.send(&step.snapshot, step.base.as_deref()),
    };
    let mut src = match opened {
        Ok(s) => s,
        Err(e) => {
            abort(conn, acks, e.to_string())?;
            return Err(e.context(format!("volume `{}`", step.role)));
        }
    };
    let mut sent = 0u64;
    let writer = &mut conn.writer;
    let piped = crate::wire::pipeline::run(&mut *src, out.compression, &mut |chunk| {
        sent += chunk.raw_len() as u64;
        match &chunk {
            crate::wire::pipeline::Chunk::Plain(d) => writer.data(d)?,
            crate::wire::pipeline::Chunk::Compressed { z, .. } => writer.data_compressed(z)?,
        }
        progress(&step.role, &step.snapshot, sent, false);
        Ok(())
    });
    let summary = match piped {
        Ok(s) => s,
        Err(crate::wire::pipeline::Failed::Read(e)) => {
            src.abort();
            abort(conn, acks, e.to_string())?;
            return Err(Error::storage(format!(
                "volume `{}`: reading the send stream: {e}",
                step.role
            )));
        }
        Err(crate::wire::pipeline::Failed::Emit(e)) => {
            src.abort();
            return Err(e.context(format!("sending {} {}", step.role, step.snapshot)));
        }
    };
    let bytes = summary.bytes;
    if let Err(e) = src.finish() {
        abort(conn, acks, e.to_string())?;
        if token.is_some() && bytes == 0 {
            return Ok(Sent::Stale(e.to_string()));
        }
        return Err(e.context(format!("volume `{}`", step.role)));
    }
    conn.writer.msg(&Msg::End {
        bytes,
        blake3: summary.blake3,
    })?;
    progress(&step.role, &step.snapshot, bytes, true);
    Ok(Sent::Done(bytes))
}

#[cfg(test)]
mod tests;
