//! Failover on the standby: pick the newest complete full set S and the
//! newest redolog snapshot R not older than S; make writable copies (the
//! received snapshots stay pristine), mount them, run the replay with
//! `{from_time}` = S's earliest member time minus the safety margin, and
//! report the truth: which set, which redolog snapshot, the data-loss bound,
//! replay status, durations.
//!
//! Crash safety. Progress is kept in `state_dir/failover/state.json`. A
//! failover leads its own process group (so the `btrfs` and `mount` it starts
//! are in it) and the replay runs in a process group of its own; both are
//! recorded there (the replay's before it may exec). A rerun first kills what
//! is left of the recorded groups of an earlier attempt, then checks the
//! progress file against reality (copies present and made from the planned
//! snapshot, mounts present and of the right copy) and redoes the steps
//! reality disagrees with. A failed step rolls back what this failover
//! created.
//!
//! The failover never waits for the thing that failed: a `serve` session
//! holding the site lock (a half-dead primary) is killed, its partial receive
//! discarded.

mod plan;
mod render;
mod suspect;
pub use plan::{
    MAX_MANIFEST_MARGIN_MS, Margin, MemberTime, Plan, PlannedCopy, Scratch, plan, plan_choosing,
    plan_with, refuse_problems,
};
pub use render::{render_plan, render_report};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
pub use suspect::{SuspectChoice, SuspectSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend;
use crate::base::catalog::{Catalog, Lock};
use crate::base::cmd::Cmd;
use crate::base::config::{BackendKind, Config, Volume};
use crate::base::error::{Context, Error, Result};
use crate::base::model::Manifest;
pub(crate) use crate::base::procs;
use crate::dr::replay::{TimeFormat, format_zmplayredo};

pub use crate::base::procs::ProcRecord;
/// The pure selection lives with `Site` (which failover asks); the name
/// stays here for callers.
pub use crate::base::site::select;

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
struct State {
    plan: Option<Plan>,
    started_at: Option<Timestamp>,
    /// Roles whose copy was about to be / has been made.
    copies_started: Vec<String>,
    copies_done: Vec<String>,
    mounts_done: Vec<String>,
    replay_exit: Option<i32>,
    completed_at: Option<Timestamp>,
    report: Option<PathBuf>,
    /// The failover process of the latest attempt (leader of its group).
    #[serde(default)]
    attempt: Option<ProcRecord>,
    /// The replay of the latest attempt (leader of its own group), recorded
    /// before it may exec.
    #[serde(default)]
    replay_proc: Option<ProcRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplayOutcome {
    pub argv: Vec<String>,
    pub exit_code: Option<i32>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub plan: Plan,
    /// Recovery point: data written on the primary after this instant (the
    /// redolog snapshot's before-time) is not on the standby.
    pub recovery_point: Timestamp,
    /// How old the recovery point was when failover started.
    pub data_loss_bound_seconds: f64,
    pub replay: Option<ReplayOutcome>,
    pub replay_skipped: bool,
    pub resumed: bool,
    /// Redolog streaming (issue 17): the spooled tail appended to the
    /// redolog copy and the stream's recovery point (primary's clock), next
    /// to the snapshot-only `recovery_point`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::dr::stream_apply::StreamRecovery>,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub seconds_copies: f64,
    pub seconds_mounts: f64,
    pub seconds_total: f64,
    pub report_path: Option<PathBuf>,
    /// "aborted receive session pid N from PRIMARY (started ...)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted_session: Option<String>,
    /// What this run found and did beyond the plan: an earlier attempt's
    /// processes stopped, steps redone because reality disagreed, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The generation this site became primary in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.replay_skipped || self.replay.as_ref().is_none_or(|r| r.exit_code == Some(0))
    }
}

pub struct Options<'a> {
    pub set: Option<&'a str>,
    pub no_replay: bool,
    /// Ignore the redolog spool (issue 17): the snapshot alone.
    pub no_stream: bool,
    /// Use the newest sets even if this standby judged them suspect.
    pub accept_suspect: bool,
}

/// Progress of a failover, for the caller to show (`run` prints each to
/// stderr, one line each).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Something found or done beyond the plan (also kept in the report).
    Note(String),
    /// A writable copy is in place; `earlier`: made by an interrupted attempt.
    Copy {
        role: String,
        snapshot: String,
        target: String,
        earlier: bool,
    },
    /// A copy is mounted; `earlier`: mounted by an interrupted attempt.
    Mount {
        role: String,
        data: PathBuf,
        mountpoint: PathBuf,
        earlier: bool,
    },
    Replay {
        argv: Vec<String>,
    },
    ReplayNotStarted {
        error: String,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let earlier = |e: &bool, what: &str| {
            if *e {
                format!(" ({what} by the interrupted attempt)")
            } else {
                String::new()
            }
        };
        match self {
            Event::Note(s) => write!(f, "  note     {s}"),
            Event::Copy {
                role,
                snapshot,
                target,
                earlier: e,
            } => write!(
                f,
                "  copy     {role:<10} {snapshot} -> {target}{}",
                earlier(e, "made")
            ),
            Event::Mount {
                role,
                data,
                mountpoint,
                earlier: e,
            } => write!(
                f,
                "  mount    {role:<10} {} at {}{}",
                data.display(),
                mountpoint.display(),
                earlier(e, "mounted")
            ),
            Event::Replay { argv } => write!(
                f,
                "  replay   {}",
                crate::base::cmd::display_argv(&argv.iter().map(Into::into).collect::<Vec<_>>())
            ),
            Event::ReplayNotStarted { error } => write!(f, "  replay could not start: {error}"),
        }
    }
}

/// The plan a (possibly resumed) failover would carry out, and whether it resumes.
pub fn current_plan(cfg: &Config, opts: &Options) -> Result<(Plan, bool)> {
    let catalog = Catalog::new(&cfg.state_dir);
    if let Some(st) = catalog.failover_state::<State>()? {
        if let Some(p) = st.plan {
            if st.completed_at.is_none() {
                if let Some(want) = opts.set {
                    if want != p.set_id {
                        return Err(Error::refused(format!(
                            "an interrupted failover with set {} is in progress; it must finish first", p.set_id
                        )).with_hint(format!("run `snapsite failover` without --set to resume it, or remove {} after undoing its copies", catalog.failover_state_path().display())));
                    }
                }
                return Ok((p, true));
            }
        }
    }
    Ok((
        plan_choosing(cfg, opts.set, None, opts.accept_suspect)?,
        false,
    ))
}

/// Fail over, printing progress to stderr.
pub fn run(cfg: &Config, opts: &Options) -> Result<Report> {
    run_with(cfg, opts, &mut |e: &Event| eprintln!("{e}"))
}

/// What one run carries between its steps.
struct Ctx<'p> {
    catalog: Catalog,
    st: State,
    notes: Vec<String>,
    progress: &'p mut dyn FnMut(&Event),
}

impl Ctx<'_> {
    fn note(&mut self, s: String) {
        (self.progress)(&Event::Note(s.clone()));
        self.notes.push(s);
    }
    fn save(&self) -> Result<()> {
        self.catalog.write_failover_state(&self.st)
    }
}

/// Fail over, reporting progress through `progress`.
pub fn run_with(cfg: &Config, opts: &Options, progress: &mut dyn FnMut(&Event)) -> Result<Report> {
    // Before any child is started: the btrfs/mount children of this
    // attempt share its group, which a rerun kills if this one dies.
    let me = lead_process_group();
    let catalog = Catalog::new(&cfg.state_dir);
    let mut notes = Vec::new();
    let (_lock, aborted_session) = take_site_lock(cfg, &catalog, &mut notes, progress)?;
    let previous: Option<State> = catalog.failover_state()?;
    refuse_if_completed(previous.as_ref(), &catalog.failover_state_path())?;
    let mut ctx = Ctx {
        catalog: Catalog::new(&cfg.state_dir),
        st: State::default(),
        notes,
        progress,
    };
    if let Some(prev) = &previous {
        stop_earlier_attempt(prev, &mut ctx)?;
    }
    // The act checks every verdict file against verdicts.summary (one
    // `stat` each; a mismatch drops it, and the plan reads the files); the
    // dry run checks only the files of the sets it uses.
    ctx.catalog.check_verdict_summary();
    let (plan, resumed) = current_plan(cfg, opts)?;
    ctx.st = match previous {
        Some(prev) if resumed => prev,
        _ => State {
            plan: Some(plan.clone()),
            started_at: Some(Timestamp::now()),
            ..Default::default()
        },
    };
    ctx.st.attempt = me;
    let started_at = Timestamp::now();
    let t0 = Instant::now();
    if resumed {
        ctx.save()?;
        reconcile(cfg, &plan, &mut ctx)?;
        ctx.save()?;
    }
    // Nothing is created (not even the progress file of a new failover)
    // before every mountpoint is known to be free and every copy usable.
    if !resumed {
        refuse_problems(&plan)?;
    }
    check_mountpoints(cfg, &plan, &ctx.st)?;
    ctx.save()?;
    // A receive parked for the primary that failed holds pool space the
    // copies are about to write into: it goes first.
    for v in &cfg.volumes {
        if let Some(n) = backend::open(v).release_parked()? {
            ctx.note(format!("volume `{}`: {n}", v.role));
        }
    }

    if let Err(e) = make_copies(cfg, &plan, &mut ctx) {
        rollback(cfg, &mut ctx.st, &ctx.catalog);
        return Err(e.context("failover failed; what it created was rolled back"));
    }
    let seconds_copies = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    if let Err(e) = mount_copies(cfg, &plan, &mut ctx) {
        rollback(cfg, &mut ctx.st, &ctx.catalog);
        return Err(e.context("failover failed; what it created was rolled back"));
    }
    let seconds_mounts = t1.elapsed().as_secs_f64();
    // From here the copies are the live data: this site is the primary.
    let generation = promote(cfg, &plan, &mut ctx)?;
    crate::failpoint!("failover.after_promote");

    // Redolog streaming: the spooled tail onto the redolog copy, before replay.
    let stream = if opts.no_stream {
        None
    } else {
        let copy = backend::open(cfg.redolog()).writable_copy_path();
        copy.ok().and_then(|root| {
            crate::dr::stream_apply::apply_at_failover(cfg, &root, plan.redolog_before)
        })
    };
    if let Some(n) = stream.as_ref().and_then(|s| s.not_used.clone()) {
        ctx.note(format!("redolog spool not used: {n}"));
    }

    let replay_skipped = opts.no_replay || plan.replay_argv.is_none();
    let replay = if replay_skipped {
        None
    } else if resumed && ctx.st.replay_exit == Some(0) {
        // The interrupted attempt's replay ran to its end: running it
        // again would apply its operations twice.
        ctx.note("the replay finished in the interrupted attempt (exit 0): not run again".into());
        Some(ReplayOutcome {
            argv: plan.replay_argv.clone().unwrap_or_default(),
            exit_code: Some(0),
            seconds: 0.0,
        })
    } else {
        verify_mounts(cfg, &plan)?;
        Some(run_replay(&plan, &mut ctx)?)
    };
    crate::failpoint!("failover.after_replay");

    let finished_at = Timestamp::now();
    let mut report = Report {
        recovery_point: plan.redolog_before,
        data_loss_bound_seconds: started_at.duration_since(plan.redolog_before).as_secs_f64(),
        plan,
        replay,
        replay_skipped,
        resumed,
        stream,
        started_at,
        finished_at,
        seconds_copies,
        seconds_mounts,
        seconds_total: t0.elapsed().as_secs_f64(),
        report_path: None,
        aborted_session,
        notes: std::mem::take(&mut ctx.notes),
        generation: Some(generation),
    };
    save_report(&mut report, &mut ctx)?;
    Ok(report)
}

/// Record this site as the primary, in a generation one more than any it
/// has seen (its own, any set's, its peer's): every set it takes from now on
/// carries it, and a returning old primary learns from it that it must not
/// ship. A resumed failover keeps the generation its first attempt recorded.
fn promote(cfg: &Config, plan: &Plan, ctx: &mut Ctx) -> Result<u64> {
    if let Some(r) = ctx.catalog.role_record()? {
        if r.role == crate::base::catalog::Role::Primary
            && r.how == "failover"
            && r.set_id.as_deref() == Some(plan.set_id.as_str())
        {
            return Ok(r.generation);
        }
    }
    let generation = next_generation(cfg, &ctx.catalog)?;
    ctx.catalog
        .write_role_record(&crate::base::catalog::RoleRecord {
            role: crate::base::catalog::Role::Primary,
            generation,
            since: Timestamp::now(),
            how: "failover".into(),
            set_id: Some(plan.set_id.clone()),
        })
        .ctx("record this site as the primary")?;
    ctx.note(format!(
        "this site is now the primary in generation {generation} (state_dir/role.json)"
    ));
    Ok(generation)
}

/// A failover that stopped before its end (its progress file without
/// `completed_at`, its process gone), for `status` and `role`.
pub fn interrupted(catalog: &Catalog) -> Result<Option<crate::base::journal::Interrupted>> {
    let Some(st) = catalog.failover_state::<State>()? else {
        return Ok(None);
    };
    if st.completed_at.is_some() || st.attempt.as_ref().is_some_and(procs::is_alive) {
        return Ok(None);
    }
    let last = if st.replay_exit.is_some() {
        Some("replay".to_string())
    } else if let Some(r) = st.mounts_done.last() {
        Some(format!("mount:{r}"))
    } else {
        st.copies_done.last().map(|r| format!("copy:{r}"))
    };
    Ok(Some(crate::base::journal::Interrupted {
        verb: "failover".into(),
        started_at: st.started_at.unwrap_or_else(Timestamp::now),
        last_step: last,
        steps_done: st.copies_done.len() + st.mounts_done.len(),
        finish: "snapsite failover".into(),
        journal: catalog.failover_state_path(),
        running: None,
    }))
}

/// One more than any generation this site has seen: its own, any set's,
/// its peer's. Refused rather than wrapped or stuck at the top of the range.
pub fn next_generation(cfg: &Config, catalog: &Catalog) -> Result<u64> {
    let seen = crate::base::site::highest_generation_seen(cfg, catalog)?;
    seen.checked_add(1).ok_or_else(|| {
        Error::refused(format!(
            "this site has seen generation {seen}: there is no next one; nothing was changed"
        ))
        .with_hint("a generation this high was never made by snapsite: check role.json, peer.json and the sets' manifests under state_dir")
    })
}

fn refuse_if_completed(previous: Option<&State>, sp: &Path) -> Result<()> {
    let Some(done) = previous.and_then(|st| st.completed_at) else {
        return Ok(());
    };
    let prev = previous
        .and_then(|st| st.report.as_deref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    Err(Error::refused(format!(
        "failover already completed at {done} (report: {prev})"
    ))
    .with_hint(format!(
        "the standby is live; to fail over again, unmount and remove the copies and delete {}",
        sp.display()
    )))
}

fn volume<'c>(cfg: &'c Config, role: &str) -> Result<&'c Volume> {
    cfg.volume(role)
        .ok_or_else(|| Error::config(format!("volume `{role}` vanished from the config")))
}

/// Kill what is left of an earlier, interrupted attempt: its own process
/// group (the `btrfs`, `mount` it had started) and its replay's.
fn stop_earlier_attempt(prev: &State, ctx: &mut Ctx) -> Result<()> {
    let groups = [
        (prev.attempt.as_ref(), "an interrupted failover"),
        (
            prev.replay_proc.as_ref(),
            "the interrupted failover's replay",
        ),
    ];
    for (rec, what) in groups {
        if let Some(rec) = rec {
            if let Some(msg) = procs::stop_recorded_group(rec, what)? {
                ctx.note(msg);
            }
        }
    }
    Ok(())
}

/// Check the progress file of an interrupted attempt against reality and
/// forget the steps reality does not confirm, so they are redone.
fn reconcile(cfg: &Config, plan: &Plan, ctx: &mut Ctx) -> Result<()> {
    for c in &plan.copies {
        let vol = volume(cfg, &c.role)?;
        let b = backend::open(vol);
        if ctx.st.copies_started.contains(&c.role) {
            if !b.writable_copy_exists()? {
                if ctx.st.copies_done.contains(&c.role) {
                    ctx.note(format!(
                        "volume `{}`: the interrupted attempt made a copy at {} but it is gone: making it again",
                        c.role, c.target
                    ));
                }
                ctx.st.copies_started.retain(|r| r != &c.role);
                ctx.st.copies_done.retain(|r| r != &c.role);
                ctx.st.mounts_done.retain(|r| r != &c.role);
                continue;
            }
            check_copy_origin(vol, c)?;
        }
        if let Some(mp) = &c.mountpoint {
            if ctx.st.mounts_done.contains(&c.role) && !our_copy_mounted(vol, mp) {
                ctx.note(format!(
                    "volume `{}`: recorded as mounted at {} but it is not (after a reboot?): mounting it again",
                    c.role,
                    mp.display()
                ));
                ctx.st.mounts_done.retain(|r| r != &c.role);
            }
        }
    }
    Ok(())
}

/// A btrfs copy found in place must be a snapshot of the planned received
/// snapshot, nothing else that happens to sit there.
fn check_copy_origin(vol: &Volume, c: &PlannedCopy) -> Result<()> {
    if vol.backend() != BackendKind::Btrfs {
        return Ok(()); // ZFS/LVM check the origin when they remove a copy
    }
    let copy =
        backend::btrfs::subvolume_show(Path::new(&c.target)).ctx(format!("volume `{}`", c.role))?;
    let snap = backend::btrfs::snapshot_path(vol, &c.snapshot)
        .and_then(|p| backend::btrfs::subvolume_show(&p))
        .ctx(format!("volume `{}`", c.role))?;
    if copy.parent_uuid.as_deref() != Some(snap.uuid.as_str()) {
        return Err(Error::refused(format!(
            "volume `{}`: {} is not a copy of snapshot {} (its parent uuid is {}, the snapshot's uuid {}); not using it",
            c.role,
            c.target,
            c.snapshot,
            copy.parent_uuid.as_deref().unwrap_or("-"),
            snap.uuid
        ))
        .with_hint("move it away (it may be live data) and run failover again"));
    }
    Ok(())
}

/// Refuse a mountpoint that has something mounted on it other than this
/// failover's own copy — before any copy is made.
fn check_mountpoints(cfg: &Config, plan: &Plan, st: &State) -> Result<()> {
    for c in &plan.copies {
        let Some(mp) = &c.mountpoint else { continue };
        let vol = volume(cfg, &c.role)?;
        let Some(top) = mount::top(mp) else { continue };
        if st.copies_started.contains(&c.role) && our_copy_mounted(vol, mp) {
            continue;
        }
        return Err(foreign_mount(&c.role, mp, &top));
    }
    Ok(())
}

fn foreign_mount(role: &str, mp: &Path, top: &mount::Entry) -> Error {
    Error::refused(format!(
        "volume `{role}`: {} already has {} ({}) mounted on it, which is not this failover's copy; nothing was changed",
        mp.display(),
        top.source,
        top.fstype
    ))
    .with_hint("unmount it (it may be stale or live data) and run failover again")
}

/// Is this volume's live copy what is mounted (on top) at `mp`? (failback)
pub(crate) fn live_copy_mounted(vol: &Volume, mp: &Path) -> bool {
    our_copy_mounted(vol, mp)
}

/// Is this volume's writable copy what is mounted (on top) at `mp`?
fn our_copy_mounted(vol: &Volume, mp: &Path) -> bool {
    let Some(top) = mount::top(mp) else {
        return false;
    };
    match vol.backend() {
        BackendKind::Btrfs => mount::same_file(mp, Path::new(&vol.source)),
        BackendKind::Zfs => top.fstype == "zfs" && top.source == vol.source,
        BackendKind::Lvm => {
            // The same block device, whichever of its names mount recorded.
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let dev = PathBuf::from("/dev").join(&vol.source);
            match (std::fs::metadata(&top.source), std::fs::metadata(&dev)) {
                (Ok(a), Ok(b)) => a.file_type().is_block_device() && a.rdev() == b.rdev(),
                _ => false,
            }
        }
    }
}

/// Does the volume's copy need a mount of ours at `mp` (rather than being
/// there already: a btrfs copy made at its mountpoint)?
fn needs_mount(vol: &Volume, mp: &Path) -> bool {
    !(vol.backend() == BackendKind::Btrfs && Path::new(&vol.source) == mp)
}

fn make_copies(cfg: &Config, plan: &Plan, ctx: &mut Ctx) -> Result<()> {
    for c in &plan.copies {
        if ctx.st.copies_done.contains(&c.role) {
            continue;
        }
        let vol = volume(cfg, &c.role)?;
        let b = backend::open(vol);
        let earlier = ctx.st.copies_started.contains(&c.role) && b.writable_copy_exists()?;
        if earlier {
            // Made by this failover before it was interrupted.
            check_copy_origin(vol, c)?;
        } else {
            if b.writable_copy_exists()? {
                return Err(Error::refused(format!(
                    "volume `{}`: {} already exists and was not made by this failover",
                    c.role, c.target
                ))
                .with_hint("move it away (it may be live data) and run failover again"));
            }
            ctx.st.copies_started.push(c.role.clone());
            ctx.save()?;
            b.writable_copy(&c.snapshot)?;
            crate::failpoint!("failover.after_copy");
        }
        ctx.st.copies_done.push(c.role.clone());
        ctx.save()?;
        (ctx.progress)(&Event::Copy {
            role: c.role.clone(),
            snapshot: c.snapshot.clone(),
            target: c.target.clone(),
            earlier,
        });
    }
    Ok(())
}

fn mount_copies(cfg: &Config, plan: &Plan, ctx: &mut Ctx) -> Result<()> {
    for c in &plan.copies {
        let Some(mp) = &c.mountpoint else { continue };
        if ctx.st.mounts_done.contains(&c.role) {
            continue;
        }
        let vol = volume(cfg, &c.role)?;
        let data = backend::open(vol).writable_copy_path()?;
        if data == *mp {
            continue; // the backend mounted it there itself (ZFS clone, LVM)
        }
        let earlier = our_copy_mounted(vol, mp);
        if !earlier {
            if let Some(top) = mount::top(mp) {
                return Err(foreign_mount(&c.role, mp, &top));
            }
            std::fs::create_dir_all(mp).ctx(format!("create mountpoint {}", mp.display()))?;
            // Nothing privileged from the other site works here: no
            // set-uid, set-gid or device file on the copy the application
            // sees (docs/security.md; `allow_privileged_files` opts out).
            let mut mount = Cmd::new("mount").arg("--bind");
            if !vol.allow_privileged_files {
                mount = mount.args(["-o", "nosuid,nodev"]);
            }
            mount
                .arg(&data)
                .arg(mp)
                .run()
                .ctx(format!("volume `{}`", c.role))?;
            crate::failpoint!("failover.after_mount");
        }
        ctx.st.mounts_done.push(c.role.clone());
        ctx.save()?;
        (ctx.progress)(&Event::Mount {
            role: c.role.clone(),
            data,
            mountpoint: mp.clone(),
            earlier,
        });
    }
    Ok(())
}

/// Right before the replay: every mountpoint holds its copy.
fn verify_mounts(cfg: &Config, plan: &Plan) -> Result<()> {
    for c in &plan.copies {
        let Some(mp) = &c.mountpoint else { continue };
        let vol = volume(cfg, &c.role)?;
        if needs_mount(vol, mp) && !our_copy_mounted(vol, mp) {
            return Err(Error::storage(format!(
                "volume `{}`: its copy {} is not what is mounted at {}; not replaying on it",
                c.role,
                c.target,
                mp.display()
            ))
            .with_hint("run failover again: it checks and redoes the mounts"));
        }
    }
    Ok(())
}

fn run_replay(plan: &Plan, ctx: &mut Ctx) -> Result<ReplayOutcome> {
    let argv = plan.replay_argv.clone().expect("checked");
    (ctx.progress)(&Event::Replay { argv: argv.clone() });
    let env = [
        ("SNAPSITE_HOOK", "replay".to_string()),
        ("SNAPSITE_SET_ID", plan.set_id.clone()),
        ("SNAPSITE_REDOLOG_SET_ID", plan.redolog_set_id.clone()),
        ("SNAPSITE_FROM_TIME", plan.from_time_arg.clone()),
        ("SNAPSITE_FROM_TIME_UTC", plan.from_time.to_string()),
    ];
    let t = Instant::now();
    let exit_code = match procs::spawn_gated(&argv, &env) {
        Err(e) => {
            (ctx.progress)(&Event::ReplayNotStarted {
                error: e.to_string(),
            });
            Some(127)
        }
        Ok(child) => {
            // Recorded before the replay may exec: a rerun after a crash
            // from here on finds and stops it.
            ctx.st.replay_proc = Some(procs::record(child.pid()));
            if let Err(e) = ctx.save() {
                child.cancel();
                return Err(e);
            }
            child.go()?
        }
    };
    ctx.st.replay_exit = exit_code;
    // Recorded at once: a rerun after a crash from here on does not replay
    // again what this replay applied.
    ctx.save()?;
    Ok(ReplayOutcome {
        argv,
        exit_code,
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn save_report(report: &mut Report, ctx: &mut Ctx) -> Result<()> {
    let path = ctx
        .catalog
        .write_failover_report(report.finished_at, report, |r, p| r.report_path = Some(p))?;
    ctx.st.report = Some(path);
    if report.ok() {
        ctx.st.completed_at = Some(report.finished_at);
    }
    ctx.save()?;
    if report.ok() {
        // This site is the primary now: the old primary's spool is done with.
        if let Err(e) = crate::dr::stream_apply::clear_after_failover(&ctx.catalog) {
            tracing::warn!(error = %e, "failover completed; the redolog spool could not be cleared");
        }
    }
    Ok(())
}

/// Undo what this failover made: unmount, remove copies, forget the state.
fn rollback(cfg: &Config, st: &mut State, catalog: &Catalog) {
    let Some(plan) = st.plan.clone() else { return };
    for c in plan.copies.iter().rev() {
        if st.mounts_done.contains(&c.role) {
            if let Some(mp) = &c.mountpoint {
                if let Err(e) = Cmd::new("umount").arg(mp).run() {
                    tracing::error!(volume = %c.role, error = %e, "rollback: unmount failed");
                }
            }
        }
        if st.copies_started.contains(&c.role) {
            if let Some(vol) = cfg.volume(&c.role) {
                if let Err(e) = backend::open(vol).remove_writable_copy() {
                    tracing::error!(volume = %c.role, error = %e, "rollback: could not remove writable copy");
                    return; // keep the state: a re-run must see what is left
                }
            }
        }
    }
    catalog.remove_failover_state();
}

/// Make this process the leader of its own process group (unless it is one
/// already, as under an interactive shell or a service manager) and return
/// its record; `None` when that is impossible (then nothing is recorded, so
/// a rerun can never kill a group that is not ours).
pub(crate) fn lead_process_group() -> Option<ProcRecord> {
    use nix::unistd::{Pid, getpgrp, getpid, setpgid};
    if getpgrp() != getpid() {
        if let Err(e) = setpgid(Pid::from_raw(0), Pid::from_raw(0)) {
            tracing::warn!(error = %e, "cannot lead a process group; an interrupted failover's children cannot be stopped by a rerun");
        }
    }
    (getpgrp() == getpid()).then(|| procs::record(getpid().as_raw() as u32))
}

/// Take the site lock. If a `serve` session holds it (a primary that went
/// silent, or one still sending), stop that session: kill its process group,
/// wait (bounded) for the lock, discard its partial receives. Anything else
/// holding the lock (another failover, a prune) is waited for a little,
/// then reported.
fn take_site_lock(
    cfg: &Config,
    catalog: &Catalog,
    notes: &mut Vec<String>,
    progress: &mut dyn FnMut(&Event),
) -> Result<(Lock, Option<String>)> {
    if let Ok(l) = catalog.lock("failover", Duration::ZERO) {
        return Ok((l, None));
    }
    let rec = match catalog.serve_record() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable serve record");
            None
        }
    };
    let Some(rec) = rec.filter(|r| procs::is_live_serve(r.pid)) else {
        return Ok((catalog.lock("failover", Duration::from_secs(5))?, None));
    };
    let whole_group = procs::stat(rec.pid).is_some_and(|s| s.pgrp == rec.pgid)
        && rec.pgid > 1
        && rec.pgid != nix::unistd::getpgrp().as_raw();
    let killed = if whole_group {
        procs::kill_group_and_wait(rec.pgid, "the serve session")?
    } else {
        // Not its own group leader: the session alone.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(rec.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        vec![rec.pid]
    };
    tracing::warn!(
        pid = rec.pid,
        pgid = rec.pgid,
        ?killed,
        "killed the serve session holding the site lock"
    );
    let lock = catalog
        .lock("failover", Duration::from_secs(10))
        .map_err(|e| e.context(format!("killed serve session pid {}, but", rec.pid)))?;
    catalog.remove_serve_record();
    let tz = jiff::tz::TimeZone::system();
    let msg = format!(
        "aborted receive session pid {} from {} (started {})",
        rec.pid,
        // As the primary sent it: shown, never trusted; printable and short.
        rec.primary
            .as_deref()
            .map(|p| p
                .chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "an unnamed primary".into()),
        format_zmplayredo(rec.started_at, &tz)
    );
    progress(&Event::Note(msg.clone()));
    for vol in &cfg.volumes {
        match backend::open(vol).cleanup_partial() {
            Ok(removed) => {
                for r in removed {
                    let n = format!("volume `{}`: discarded the partial receive {r}", vol.role);
                    progress(&Event::Note(n.clone()));
                    notes.push(n);
                }
            }
            // A leftover never blocks the failover: sets without a
            // manifest are not used anyway.
            Err(e) => {
                let n = format!(
                    "volume `{}`: could not discard a partial receive: {e}",
                    vol.role
                );
                progress(&Event::Note(n.clone()));
                notes.push(n);
            }
        }
    }
    Ok((lock, Some(msg)))
}

/// What is mounted where (through `mountinfo`, the one parser).
mod mount {
    use std::path::Path;

    use crate::base::mountinfo;

    pub type Entry = mountinfo::Mount;

    /// The visible mount at `mp` (its canonical path).
    pub fn top(mp: &Path) -> Option<Entry> {
        let want = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
        mountinfo::top_at(&mountinfo::read(), &want).cloned()
    }

    /// Same inode on the same device (a bind mount of `b` at `a`).
    pub fn same_file(a: &Path, b: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
