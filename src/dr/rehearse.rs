//! `snapsite rehearse`: prove, on an ordinary day, that failover would work
//! — without touching production. On the standby: writable clones of the
//! set and redolog snapshot failover would use, in a scratch location of
//! each volume's backend (btrfs: `snapshot_dir/.rehearsal`), never the live
//! locations or mountpoints; the replay command run against them
//! (`{mount:ROLE}` is the clone, `SNAPSITE_REHEARSAL=1` in its
//! environment, so plugins keep real services out of it); the verdict,
//! recovery point and durations in a report (`state_dir/reports/`,
//! `state_dir/rehearsal/last.json`, which `status` turns into
//! `snapsite_rehearsal_*` metrics); everything torn down afterwards.
//!
//! Replication goes on meanwhile: the site lock is held only to make and to
//! remove the clones, never during the replay, so a `serve` session commits
//! in parallel. Progress is kept in `state_dir/rehearsal/state.json`: a
//! rehearsal killed (even by SIGKILL) is cleaned up by the next `rehearse`
//! or `prune` — its replay's process group killed, its clones removed —
//! and while one runs, `prune` keeps the sets under its clones.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::backend;
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Context, Error, Result};
use crate::dr::failover::{self, Plan, ProcRecord, procs};

/// Progress of a rehearsal, for cleanup after a kill.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    plan: Option<Plan>,
    started_at: Option<Timestamp>,
    /// Roles whose clone was about to be / has been made.
    clones: Vec<String>,
    /// The rehearse process (leader of its group).
    attempt: Option<ProcRecord>,
    /// The replay (leader of its own group), recorded before it may exec.
    replay_proc: Option<ProcRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub site: String,
    pub plan: Plan,
    /// Replay exit status; `None`: killed by a signal or not started.
    pub replay_exit: Option<i32>,
    /// No replay is configured: nothing of it was proved. Not ok unless
    /// the config says `[replay] none = true`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_replay: bool,
    pub ok: bool,
    /// Data written on the primary after this instant would be lost if
    /// failover ran now (the redolog snapshot's time).
    pub recovery_point: Timestamp,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub seconds_clones: f64,
    pub seconds_replay: f64,
    pub seconds_teardown: f64,
    pub seconds_total: f64,
    /// What was found and cleaned up from an earlier, killed rehearsal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_path: Option<PathBuf>,
}

pub struct Options<'a> {
    pub set: Option<&'a str>,
    /// How long to wait for the site lock (a ship in progress holds it).
    pub lock_wait: Duration,
}

/// The plan a rehearsal would carry out now (`--dry-run`).
pub fn plan(cfg: &Config, set: Option<&str>) -> Result<Plan> {
    failover::plan_with(cfg, set, Some(&scratch))
}

fn scratch(v: &crate::base::config::Volume) -> Result<PathBuf> {
    backend::open(v).rehearsal_copy_path()
}

/// The set ids under the clones of a rehearsal that is still running, for
/// `prune` to keep. (A killed rehearsal's sets are not protected: the
/// caller cleans it up with `cleanup_stale` first.)
pub fn in_use(catalog: &Catalog) -> Result<BTreeSet<String>> {
    let st: Option<State> = catalog.rehearsal_state()?;
    let mut out = BTreeSet::new();
    if let Some(st) = st {
        let running = st.attempt.as_ref().is_none_or(procs::is_alive);
        if running {
            if let Some(p) = &st.plan {
                out.insert(p.set_id.clone());
                out.insert(p.redolog_set_id.clone());
            }
        }
    }
    Ok(out)
}

/// A rehearsal that was killed (its progress file left, its process gone),
/// for `status` and `role`: the next `rehearse` (or `prune`) cleans it up.
pub fn interrupted(catalog: &Catalog) -> Result<Option<crate::base::journal::Interrupted>> {
    let Some(st) = catalog.rehearsal_state::<State>()? else {
        return Ok(None);
    };
    if st.attempt.as_ref().is_none_or(procs::is_alive) {
        return Ok(None);
    }
    Ok(Some(crate::base::journal::Interrupted {
        verb: "rehearse".into(),
        started_at: st.started_at.unwrap_or_else(Timestamp::now),
        last_step: st.clones.last().map(|r| format!("clone:{r}")),
        steps_done: st.clones.len(),
        finish: "snapsite rehearse".into(),
        journal: catalog.root().join("rehearsal/state.json"),
        running: None,
    }))
}

/// Clean up after a rehearsal that was killed: stop what is left of its
/// process groups, remove its clones, forget it. The caller holds the site
/// lock. A rehearsal still running is left alone (`Ok(false)` and a note).
pub fn cleanup_stale(cfg: &Config, catalog: &Catalog, notes: &mut Vec<String>) -> Result<bool> {
    let Some(st) = catalog.rehearsal_state::<State>()? else {
        return Ok(true);
    };
    if let Some(a) = &st.attempt {
        if procs::is_alive(a) && a.pid != std::process::id() as i32 {
            notes.push(format!(
                "a rehearsal is running (pid {}); its clones stay until it ends",
                a.pid
            ));
            return Ok(false);
        }
    }
    for (rec, what) in [
        (st.attempt.as_ref(), "a killed rehearsal"),
        (st.replay_proc.as_ref(), "a killed rehearsal's replay"),
    ] {
        if let Some(rec) = rec {
            if let Some(m) = procs::stop_recorded_group(rec, what)? {
                notes.push(m);
            }
        }
    }
    teardown(cfg, &st)?;
    catalog.remove_rehearsal_state()?;
    notes.push(format!(
        "removed the clones of a rehearsal started at {} that did not finish",
        st.started_at.map(|t| t.to_string()).unwrap_or("?".into())
    ));
    Ok(true)
}

/// Remove every clone the state names (idempotent).
fn teardown(cfg: &Config, st: &State) -> Result<()> {
    for role in st.clones.iter().rev() {
        let Some(vol) = cfg.volume(role) else {
            continue;
        };
        backend::open(vol)
            .remove_rehearsal_copy()
            .ctx("rehearsal teardown")?;
    }
    Ok(())
}

/// Rehearse a failover, printing progress to stderr.
pub fn run(cfg: &Config, opts: &Options) -> Result<Report> {
    let me = failover::lead_process_group();
    let catalog = Catalog::new(&cfg.state_dir);
    let (role, generation) = crate::base::site::current_role(cfg, &catalog)?;
    if role != crate::base::site::Role::Standby {
        return Err(Error::refused(format!(
            "this site ({}) is the primary in generation {generation}: rehearse on its standby",
            cfg.site
        )));
    }
    let started_at = Timestamp::now();
    let t0 = Instant::now();
    let mut notes = Vec::new();
    let mut st;
    {
        let _lock = catalog.lock("rehearse", opts.lock_wait)?;
        if !cleanup_stale(cfg, &catalog, &mut notes)? {
            return Err(Error::refused(notes.join("; ")));
        }
        for n in &notes {
            eprintln!("  note     {n}");
        }
        let plan = plan(cfg, opts.set)?;
        st = State {
            plan: Some(plan.clone()),
            started_at: Some(started_at),
            clones: Vec::new(),
            attempt: me,
            replay_proc: None,
        };
        catalog.write_rehearsal_state(&st)?;
        let made = (|| -> Result<()> {
            for c in &plan.copies {
                let vol = cfg
                    .volume(&c.role)
                    .ok_or_else(|| Error::config(format!("volume `{}` vanished", c.role)))?;
                st.clones.push(c.role.clone());
                catalog.write_rehearsal_state(&st)?;
                backend::open(vol).rehearsal_copy(&c.snapshot)?;
                crate::failpoint!("rehearse.after_clone");
                eprintln!("  clone    {:<10} {} -> {}", c.role, c.snapshot, c.target);
            }
            Ok(())
        })();
        if let Err(e) = made {
            let _ = teardown(cfg, &st);
            let _ = catalog.remove_rehearsal_state();
            return Err(e.context("rehearsal failed; its clones were removed"));
        }
    }
    let plan = st.plan.clone().expect("set");
    let seconds_clones = t0.elapsed().as_secs_f64();

    // The replay, without the site lock: replication goes on.
    let t1 = Instant::now();
    let no_replay = plan.replay_argv.is_none();
    if no_replay && !cfg.replay_none {
        notes.push(
            "no [replay] is configured: the clones came up, but nothing of the replay was proved, and failover would replay nothing after the set".into(),
        );
    }
    let replay_exit = match &plan.replay_argv {
        None => None,
        Some(argv) => {
            eprintln!(
                "  replay   {}",
                crate::base::cmd::display_argv(&argv.iter().map(Into::into).collect::<Vec<_>>())
            );
            let env = [
                ("SNAPSITE_HOOK", "replay".to_string()),
                ("SNAPSITE_REHEARSAL", "1".to_string()),
                ("SNAPSITE_SET_ID", plan.set_id.clone()),
                ("SNAPSITE_REDOLOG_SET_ID", plan.redolog_set_id.clone()),
                ("SNAPSITE_FROM_TIME", plan.from_time_arg.clone()),
                ("SNAPSITE_FROM_TIME_UTC", plan.from_time.to_string()),
            ];
            match procs::spawn_gated(argv, &env) {
                Err(e) => {
                    notes.push(format!("the replay could not start: {e}"));
                    Some(127)
                }
                Ok(child) => {
                    st.replay_proc = Some(procs::record(child.pid()));
                    if let Err(e) = catalog.write_rehearsal_state(&st) {
                        child.cancel();
                        return Err(e);
                    }
                    child.go()?
                }
            }
        }
    };
    let seconds_replay = t1.elapsed().as_secs_f64();
    crate::failpoint!("rehearse.after_replay");

    let t2 = Instant::now();
    {
        let _lock = catalog.lock("rehearse teardown", opts.lock_wait)?;
        if let Some(rec) = &st.replay_proc {
            // Whatever the replay left running in its group (a database
            // started in the background) goes with the clones.
            if let Some(m) = procs::stop_recorded_group(rec, "the rehearsal's replay")? {
                notes.push(m);
            }
        }
        teardown(cfg, &st)?;
        catalog.remove_rehearsal_state()?;
    }
    crate::failpoint!("rehearse.after_teardown");
    let seconds_teardown = t2.elapsed().as_secs_f64();
    let finished_at = Timestamp::now();
    let mut report = Report {
        site: cfg.site.clone(),
        recovery_point: plan.redolog_before,
        plan,
        // Without a replay only `[replay] none = true` makes it a pass.
        ok: if no_replay {
            cfg.replay_none
        } else {
            replay_exit == Some(0)
        },
        replay_exit,
        no_replay,
        started_at,
        finished_at,
        seconds_clones,
        seconds_replay,
        seconds_teardown,
        seconds_total: t0.elapsed().as_secs_f64(),
        notes,
        report_path: None,
    };
    let path = catalog.write_rehearsal_report(finished_at, &report)?;
    report.report_path = Some(path);
    Ok(report)
}

pub fn render_report(r: &Report) -> String {
    let tz = jiff::tz::TimeZone::system();
    let t = |ts: Timestamp| crate::dr::replay::format_zmplayredo(ts, &tz);
    let mut s = String::from("=== snapsite rehearsal report ===\n");
    s.push_str(&format!("site          {}\n", r.site));
    s.push_str(&failover::render_plan(&r.plan));
    for n in &r.notes {
        s.push_str(&format!("note          {n}\n"));
    }
    s.push_str(&format!(
        "recovery point {} (a failover now would lose data written on the primary after it)\n",
        t(r.recovery_point)
    ));
    s.push_str(&format!(
        "replay exit   {}\n",
        match (r.no_replay, r.replay_exit) {
            (true, _) => "- (no replay configured)".to_string(),
            (false, Some(c)) => c.to_string(),
            (false, None) => "killed by a signal".into(),
        }
    ));
    s.push_str(&format!(
        "durations     clones {:.2} s, replay {:.2} s, teardown {:.2} s, total {:.2} s\n",
        r.seconds_clones, r.seconds_replay, r.seconds_teardown, r.seconds_total
    ));
    if let Some(p) = &r.report_path {
        s.push_str(&format!("report        {}\n", p.display()));
    }
    s.push_str(if r.ok && r.no_replay {
        "result        OK without a replay (`[replay] none = true`): failover would bring up this set\n"
    } else if r.ok {
        "result        OK: failover would work with this set\n"
    } else if r.no_replay {
        "result        NOT PROVEN: no [replay] is configured, so nothing of the replay was tested and failover would lose everything written after the set; add [replay] (or `[replay] none = true` if this application needs none)\n"
    } else {
        "result        REPLAY FAILED: failover would not come up cleanly; see the replay's output\n"
    });
    s
}
