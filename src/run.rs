//! `snapsite run`: the unattended primary. It asks the pure planner
//! (`schedule.rs`) what is due, takes full sets and redolog snapshots on
//! their slots, ships after each, retries failed ships with backoff, prunes
//! after shipping, refreshes the metrics file, and sleeps.
//!
//! Locks: `state_dir/run.lock` for its whole life (one `run` per site), and
//! the site lock only around each step, so `snapsite snapshot` / `ship` by
//! hand wait for the current step and then run between two steps.
//!
//! Stopping: SIGTERM or SIGINT sets a flag; the current step (a snapshot,
//! or the transfer under way) finishes, then `run` exits 0. A second signal
//! exits at once: the standby then sees a cut stream and removes the partial
//! receive, as after any broken connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use crate::catalog::Catalog;
use crate::config::{Config, Schedule};
use crate::coordinator::{self, Progress};
use crate::error::{Error, Result};
use crate::model::{SetKind, parse_set_id};
use crate::prune;
use crate::schedule::{self, RunState, Step};
use crate::status;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(sig: nix::libc::c_int) {
    if STOP.swap(true, Ordering::SeqCst) {
        // Second signal: leave now (only async-signal-safe calls here).
        unsafe { nix::libc::_exit(128 + sig) };
    }
}

/// Route SIGTERM and SIGINT to the stop flag. SA_RESTART keeps transfers'
/// reads and writes going; the loop checks the flag between steps.
pub fn install_stop_handler() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        unsafe { sigaction(sig, &action) }
            .map_err(|e| Error::new(crate::ErrorKind::Io, format!("install {sig} handler: {e}")))?;
    }
    Ok(())
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Ask the loop to stop (what the signal handler does).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// The record lives in the catalog with the other records on disk; these
/// names stay here for callers of `run`.
pub use crate::catalog::{RunRecord, StepError};

pub struct Options {
    /// Do what is due now and exit (for a systemd timer).
    pub once: bool,
}

/// Newest set start time per kind, from the catalog (sets taken by hand
/// count too).
fn catalog_times(catalog: &Catalog) -> Result<(Option<Timestamp>, Option<Timestamp>)> {
    let mut full = None;
    let mut redo = None;
    for m in catalog.manifests()? {
        if let Some((t, kind)) = parse_set_id(&m.id) {
            match kind {
                SetKind::Full => full = full.max(Some(t)),
                SetKind::Redolog => redo = redo.max(Some(t)),
            }
        }
    }
    Ok((full, redo))
}

const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Run until stopped (or once). Returns the final record.
pub fn run(cfg: &Config, opts: &Options, progress: Progress) -> Result<RunRecord> {
    let schedule: &Schedule = cfg.schedule.as_ref().ok_or_else(|| {
        Error::config(format!(
            "{}: no [schedule] section: `snapsite run` needs full_set_interval (and usually redolog_interval)",
            cfg.path.display()
        ))
    })?;
    let catalog = Catalog::new(&cfg.state_dir);
    let _run_lock = catalog.run_lock()?;
    let mut rec = RunRecord {
        pid: std::process::id(),
        started_at: Some(Timestamp::now()),
        ..Default::default()
    };
    if let Some(prev) = catalog.run_record()? {
        rec.last_ship_ok_at = prev.last_ship_ok_at;
    }
    let mut st = RunState {
        ship_pending: true,
        ..Default::default()
    };
    tracing::info!(
        full_set_interval = %humantime::format_duration(schedule.full_set_interval),
        redolog_interval = %schedule.redolog_interval.map(|d| humantime::format_duration(d).to_string()).unwrap_or_else(|| "-".into()),
        retention = %cfg.retention.as_ref().map(|r| r.full.to_string()).unwrap_or_else(|| "none".into()),
        once = opts.once,
        "run started"
    );
    catalog.write_run_record(&rec)?;
    // Redolog streaming (issue 17): a thread beside the loop, with its own
    // session to the standby; stopped when `run` returns.
    let _follower = (!opts.once)
        .then(|| crate::redostream::start_follower(cfg))
        .flatten();
    let mut any_failed = false;
    loop {
        if stop_requested() {
            break;
        }
        let (full, redo) = catalog_times(&catalog)?;
        st.last_full = st.last_full.max(full);
        st.last_redolog = st.last_redolog.max(redo);
        let now = Timestamp::now();
        let plan = schedule::plan(schedule, &st, now);
        if plan.steps.is_empty() {
            if opts.once {
                break;
            }
            sleep_until(plan.wake_at);
            continue;
        }
        let mut worked = false;
        for step in plan.steps {
            if stop_requested() {
                break;
            }
            worked = true;
            let started = Timestamp::now();
            let result = match step {
                Step::TakeFull | Step::TakeRedolog => {
                    let kind = if step == Step::TakeFull {
                        SetKind::Full
                    } else {
                        SetKind::Redolog
                    };
                    // The slot counts as served even if the take fails: no
                    // hot loop on a broken volume; the error is reported.
                    match kind {
                        SetKind::Full => st.last_full = Some(started),
                        SetKind::Redolog => st.last_redolog = Some(started),
                    }
                    let r = catalog
                        .lock("run: snapshot", LOCK_WAIT)
                        .and_then(|_lock| coordinator::take_set(cfg, &catalog, kind));
                    match r {
                        Ok(m) => {
                            rec.snapshot_failures = 0;
                            match kind {
                                SetKind::Full => rec.full_sets_taken += 1,
                                SetKind::Redolog => rec.redolog_sets_taken += 1,
                            }
                            st.ship_pending = true;
                            tracing::info!(set = %m.id, kind = kind.as_str(), "set taken");
                            Ok(())
                        }
                        Err(e) => {
                            rec.snapshot_failures += 1;
                            Err(e)
                        }
                    }
                }
                Step::Ship => {
                    st.last_ship_attempt = Some(started);
                    let r = catalog
                        .lock("run: ship", LOCK_WAIT)
                        .and_then(|_lock| coordinator::ship(cfg, &catalog, &mut *progress));
                    match r {
                        Ok(report) => {
                            st.ship_pending = false;
                            st.ship_failures = 0;
                            rec.ship_failures = 0;
                            rec.last_ship_ok_at = Some(Timestamp::now());
                            rec.sets_committed += report.committed.len() as u64;
                            tracing::info!(
                                snapshots = report.snapshots.len(),
                                committed = report.committed.len(),
                                payload_bytes = report.payload_bytes,
                                seconds = report.seconds,
                                "shipped"
                            );
                            Ok(())
                        }
                        Err(e) => {
                            st.ship_pending = true;
                            st.ship_failures += 1;
                            rec.ship_failures = st.ship_failures;
                            rec.last_ship_error_at = Some(started);
                            let retry = schedule::backoff(schedule, st.ship_failures);
                            tracing::warn!(
                                failures = st.ship_failures,
                                retry_in = %humantime::format_duration(retry),
                                "ship failed; will retry"
                            );
                            Err(e)
                        }
                    }
                }
            };
            if let Err(e) = result {
                any_failed = true;
                let name = match step {
                    Step::TakeFull => "snapshot",
                    Step::TakeRedolog => "snapshot --redolog",
                    Step::Ship => "ship",
                };
                tracing::error!(step = name, error = %e, "step failed");
                rec.last_error = Some(StepError {
                    at: started,
                    step: name.into(),
                    message: e.to_string(),
                });
            }
        }
        if worked {
            if let Some(retention) = &cfg.retention {
                let r = catalog.lock("run: prune", LOCK_WAIT).and_then(|_lock| {
                    let plan = prune::plan(cfg, &catalog, retention)?;
                    prune::apply(cfg, &catalog, plan, false)
                });
                match r {
                    Ok(report) => rec.sets_pruned += report.destroyed_sets.len() as u64,
                    Err(e) => {
                        any_failed = true;
                        tracing::error!(error = %e, "prune failed");
                        rec.last_error = Some(StepError {
                            at: Timestamp::now(),
                            step: "prune".into(),
                            message: e.to_string(),
                        });
                    }
                }
            }
            rec.last_cycle_at = Some(Timestamp::now());
            catalog.write_run_record(&rec)?;
            refresh_metrics(cfg);
        }
        if opts.once {
            break;
        }
    }
    rec.stopped_at = Some(Timestamp::now());
    catalog.write_run_record(&rec)?;
    refresh_metrics(cfg);
    tracing::info!(
        full_sets = rec.full_sets_taken,
        redolog_sets = rec.redolog_sets_taken,
        committed = rec.sets_committed,
        pruned = rec.sets_pruned,
        "run stopped"
    );
    if opts.once && any_failed {
        let e = rec.last_error.as_ref().expect("recorded");
        return Err(Error::new(
            crate::ErrorKind::Command,
            format!("{} failed: {}", e.step, e.message),
        ));
    }
    Ok(rec)
}

/// Write `[status] prometheus` if configured; a failure is logged, not fatal.
fn refresh_metrics(cfg: &Config) {
    if let Some(path) = &cfg.status.prometheus {
        let r =
            status::gather(cfg, Timestamp::now()).and_then(|s| status::write_prometheus(&s, path));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "could not write metrics");
        }
    }
}

/// Sleep until `t`, waking every 100 ms to notice a stop request.
fn sleep_until(t: Timestamp) {
    loop {
        if stop_requested() {
            return;
        }
        let left = t.duration_since(Timestamp::now());
        if left <= jiff::SignedDuration::ZERO {
            return;
        }
        let nap = left.unsigned_abs().min(Duration::from_millis(100));
        std::thread::sleep(nap);
    }
}
