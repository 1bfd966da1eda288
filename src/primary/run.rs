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

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;

use crate::base::catalog::{Catalog, Lock};
use crate::base::config::{Config, Schedule};
use crate::base::error::{Error, Result};
use crate::base::model::{SetKind, parse_set_id};
use crate::base::schedule::{self, RunState, Step};
use crate::ops::notify::{Notifier, Severity};
use crate::ops::prune;
use crate::ops::status;
use crate::ops::systemd;
use crate::primary::coordinator::{self, Progress};

mod fanout;

static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

/// Route SIGTERM and SIGINT to the stop flag (signal-hook: no `unsafe`
/// here). The first signal sets the flag, which the loop checks between
/// steps; a second one exits at once with 128 + the signal number. The
/// handlers restart interrupted system calls, so transfers keep going.
pub fn install_stop_handler() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGTERM, SIGINT] {
        // Registered first, so it sees the flag as it was before this signal.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&STOP))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&STOP)))
            .map_err(|e| {
                Error::new(
                    crate::ErrorKind::Io,
                    format!("install signal {sig} handler: {e}"),
                )
            })?;
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
pub use crate::base::catalog::{RunRecord, StepError};

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

fn step_name(step: Step) -> &'static str {
    match step {
        Step::TakeFull => "snapshot",
        Step::TakeRedolog => "snapshot --redolog",
        Step::Ship => "ship",
    }
}

/// The loop's state between steps.
struct Runner<'a> {
    cfg: &'a Config,
    schedule: &'a Schedule,
    catalog: Catalog,
    _run_lock: Lock,
    rec: RunRecord,
    st: RunState,
    any_failed: bool,
    /// When the current run of failed ships began (for `[notify]`).
    ship_failing_since: Option<Timestamp>,
    notifier: Notifier,
    sd: systemd::Notifier,
    /// `[[standby]]` with more than one: a session per standby (`run/fanout.rs`).
    fanout: Option<fanout::RunFanout>,
}

/// Run until stopped (or once). Returns the final record.
pub fn run(cfg: &Config, opts: &Options, progress: Progress) -> Result<RunRecord> {
    let mut r = Runner::start(cfg, opts)?;
    r.sd.ready("waiting for the first step");
    // Redolog streaming (issue 17): a thread beside the loop, with its own
    // session to the standby; stopped when `run` returns.
    let _follower = (!opts.once)
        .then(|| crate::primary::follower::start_follower(cfg))
        .flatten();
    loop {
        if stop_requested() {
            break;
        }
        r.sd.progress();
        let plan = r.plan()?;
        if plan.steps.is_empty() {
            if opts.once {
                break;
            }
            r.sd.status(&format!("idle until {}", plan.wake_at));
            r.sleep_until(plan.wake_at);
            continue;
        }
        let mut worked = false;
        for step in plan.steps {
            if stop_requested() {
                break;
            }
            worked = true;
            r.step(step, &mut *progress);
        }
        if worked {
            r.prune();
            r.end_cycle()?;
        }
        if opts.once {
            break;
        }
    }
    r.finish(opts)
}

impl<'a> Runner<'a> {
    /// Lock, read the previous record, log the schedule.
    fn start(cfg: &'a Config, opts: &Options) -> Result<Runner<'a>> {
        let schedule: &Schedule = cfg.schedule.as_ref().ok_or_else(|| {
            Error::config(format!(
                "{}: no [schedule] section: `snapsite run` needs full_set_interval (and usually redolog_interval)",
                cfg.path.display()
            ))
        })?;
        let catalog = Catalog::new(&cfg.state_dir);
        let run_lock = catalog.run_lock()?;
        let mut rec = RunRecord {
            pid: std::process::id(),
            process: Some(crate::base::procs::record(std::process::id())),
            started_at: Some(Timestamp::now()),
            ..Default::default()
        };
        let mut ship_failing_since = None;
        if let Some(prev) = catalog.run_record()? {
            rec.last_ship_ok_at = prev.last_ship_ok_at;
            // A restart does not reset how long ship has been failing.
            if prev.ship_failures > 0 {
                ship_failing_since = prev.last_ship_ok_at.or(prev.started_at);
            }
        }
        tracing::info!(
            full_set_interval = %humantime::format_duration(schedule.full_set_interval),
            redolog_interval = %schedule.redolog_interval.map(|d| humantime::format_duration(d).to_string()).unwrap_or_else(|| "-".into()),
            retention = %cfg.retention.as_ref().map(|r| r.full.to_string()).unwrap_or_else(|| "none".into()),
            once = opts.once,
            "run started"
        );
        catalog.write_run_record(&rec)?;
        Ok(Runner {
            cfg,
            schedule,
            catalog,
            _run_lock: run_lock,
            rec,
            st: RunState {
                ship_pending: true,
                ..Default::default()
            },
            any_failed: false,
            ship_failing_since,
            notifier: Notifier::new(cfg.notify.clone(), &cfg.site, &cfg.state_dir),
            sd: systemd::Notifier::from_env(),
            fanout: fanout::RunFanout::wanted(cfg).then(|| fanout::RunFanout::new(cfg)),
        })
    }

    /// What is due now (sets taken by hand count).
    fn plan(&mut self) -> Result<schedule::Plan> {
        self.collect_ships(false);
        let (full, redo) = catalog_times(&self.catalog)?;
        self.st.last_full = self.st.last_full.max(full);
        self.st.last_redolog = self.st.last_redolog.max(redo);
        Ok(schedule::plan(self.schedule, &self.st, Timestamp::now()))
    }

    /// Run one step; a failure is recorded and logged, not returned.
    fn step(&mut self, step: Step, progress: Progress) {
        let started = Timestamp::now();
        let name = step_name(step);
        self.sd.status(&format!("{name} since {started}"));
        let result = match step {
            Step::TakeFull => self.take(SetKind::Full, started),
            Step::TakeRedolog => self.take(SetKind::Redolog, started),
            Step::Ship => self.ship(started, progress),
        };
        if let Err(e) = result {
            self.any_failed = true;
            tracing::error!(step = name, error = %e, "step failed");
            self.rec.last_error = Some(StepError {
                at: started,
                step: name.into(),
                message: e.to_string(),
            });
        }
        self.sd.progress();
    }

    fn take(&mut self, kind: SetKind, started: Timestamp) -> Result<()> {
        // The slot counts as served even if the take fails: no hot loop on
        // a broken volume; the error is reported.
        match kind {
            SetKind::Full => self.st.last_full = Some(started),
            SetKind::Redolog => self.st.last_redolog = Some(started),
        }
        let (cfg, catalog) = (self.cfg, &self.catalog);
        let r = catalog
            .lock("run: snapshot", LOCK_WAIT)
            .and_then(|_lock| coordinator::take_set(cfg, catalog, kind));
        match r {
            Ok(m) => {
                self.rec.snapshot_failures = 0;
                match kind {
                    SetKind::Full => self.rec.full_sets_taken += 1,
                    SetKind::Redolog => self.rec.redolog_sets_taken += 1,
                }
                self.st.ship_pending = true;
                // take_set logged it ("set taken"): one line per set.
                self.notifier.observe(
                    "snapshot",
                    "ok",
                    Severity::Ok,
                    &format!("set {} taken", m.id),
                );
                Ok(())
            }
            Err(e) => {
                self.rec.snapshot_failures += 1;
                self.notifier.observe(
                    "snapshot",
                    "failed",
                    Severity::Critical,
                    &format!("snapshot {} failed: {e}", kind.as_str()),
                );
                Err(e)
            }
        }
    }

    fn ship(&mut self, started: Timestamp, progress: Progress) -> Result<()> {
        if self.fanout.is_some() {
            return self.ship_fanout(started);
        }
        self.st.last_ship_attempt = Some(started);
        let (cfg, catalog) = (self.cfg, &self.catalog);
        let sd = &mut self.sd;
        // Bytes moving are progress: the watchdog is pinged from here, so
        // a transfer that hangs stops the pings.
        let mut pinging = |role: &str, snap: &str, bytes: u64, done: bool| {
            sd.progress();
            progress(role, snap, bytes, done)
        };
        let r = catalog
            .lock("run: ship", LOCK_WAIT)
            .and_then(|_lock| coordinator::ship(cfg, catalog, &mut pinging));
        match r {
            Ok(report) => {
                self.st.ship_pending = false;
                self.st.ship_failures = 0;
                self.rec.ship_failures = 0;
                self.rec.last_ship_ok_at = Some(Timestamp::now());
                self.rec.sets_committed += report.committed.len() as u64;
                self.ship_failing_since = None;
                tracing::info!(
                    snapshots = report.snapshots.len(),
                    committed = report.committed.len(),
                    payload_bytes = report.payload_bytes,
                    seconds = report.seconds,
                    "shipped"
                );
                crate::primary::archive::after_ship(cfg, catalog);
                self.notifier.observe(
                    "ship",
                    "ok",
                    Severity::Ok,
                    &format!(
                        "ship works again ({} set(s) committed)",
                        report.committed.len()
                    ),
                );
                Ok(())
            }
            Err(e) => {
                self.ship_failed(started);
                let since = *self.ship_failing_since.get_or_insert(started);
                let retry = schedule::backoff(self.schedule, self.st.ship_failures);
                tracing::warn!(
                    failures = self.st.ship_failures,
                    retry_in = %humantime::format_duration(retry),
                    "ship failed; will retry"
                );
                let failing_for = Timestamp::now().duration_since(since).unsigned_abs();
                if self
                    .notifier
                    .ship_failing_after()
                    .is_some_and(|after| failing_for >= after)
                {
                    self.notifier.observe(
                        "ship",
                        "failing",
                        Severity::Critical,
                        &format!(
                            "ship has failed since {since} ({} attempt(s)): {e}",
                            self.st.ship_failures
                        ),
                    );
                }
                Err(e)
            }
        }
    }

    /// Apply `[retention]` after a cycle that did something.
    /// A ship (or one standby's session) failed at `at`: ship again, and
    /// count it in the state and the run record.
    fn ship_failed(&mut self, at: Timestamp) {
        self.st.ship_pending = true;
        self.st.ship_failures += 1;
        self.rec.ship_failures = self.st.ship_failures;
        self.rec.last_ship_error_at = Some(at);
    }

    fn prune(&mut self) {
        let Some(retention) = &self.cfg.retention else {
            return;
        };
        let (cfg, catalog) = (self.cfg, &self.catalog);
        let r = catalog.lock("run: prune", LOCK_WAIT).and_then(|_lock| {
            let plan = prune::plan(cfg, catalog, retention)?;
            prune::apply(cfg, catalog, plan, false)
        });
        match r {
            Ok(report) => {
                self.rec.sets_pruned += report.destroyed_sets.len() as u64;
                self.notifier
                    .observe("prune", "ok", Severity::Ok, "prune works again");
            }
            Err(e) => {
                self.any_failed = true;
                tracing::error!(error = %e, "prune failed");
                self.notifier.observe(
                    "prune",
                    "failed",
                    Severity::Warning,
                    &format!("prune failed: {e}"),
                );
                self.rec.last_error = Some(StepError {
                    at: Timestamp::now(),
                    step: "prune".into(),
                    message: e.to_string(),
                });
            }
        }
        self.sd.progress();
    }

    /// Record the cycle, refresh the metrics, tell a changed status.
    fn end_cycle(&mut self) -> Result<()> {
        self.rec.last_cycle_at = Some(Timestamp::now());
        self.catalog.write_run_record(&self.rec)?;
        refresh_metrics(self.cfg);
        if self.cfg.notify.is_some() {
            match status::gather(self.cfg, Timestamp::now()) {
                Ok(s) => {
                    let message = if s.findings.is_empty() {
                        "recovery point OK".to_string()
                    } else {
                        s.findings
                            .iter()
                            .map(|f| f.message.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    };
                    let sev = match s.level {
                        status::Level::Ok => Severity::Ok,
                        status::Level::Warning => Severity::Warning,
                        status::Level::Critical => Severity::Critical,
                    };
                    self.notifier
                        .observe("recovery_point", sev.as_str(), sev, &message);
                }
                Err(e) => tracing::warn!(error = %e, "could not gather the status for [notify]"),
            }
        }
        Ok(())
    }

    /// Final record; with `--once`, an error if any step failed.
    fn finish(mut self, opts: &Options) -> Result<RunRecord> {
        // `--once` waits for the sessions it started; a stopping `run`
        // leaves them to be cut (each standby discards its partial receive).
        self.collect_ships(opts.once && !stop_requested());
        self.cut_ships();
        self.sd.stopping();
        self.rec.stopped_at = Some(Timestamp::now());
        self.catalog.write_run_record(&self.rec)?;
        refresh_metrics(self.cfg);
        let rec = &self.rec;
        tracing::info!(
            full_sets = rec.full_sets_taken,
            redolog_sets = rec.redolog_sets_taken,
            committed = rec.sets_committed,
            pruned = rec.sets_pruned,
            "run stopped"
        );
        if opts.once && self.any_failed {
            let e = rec.last_error.as_ref().expect("recorded");
            return Err(Error::new(
                crate::ErrorKind::Command,
                format!("{} failed: {}", e.step, e.message),
            ));
        }
        Ok(self.rec.clone())
    }

    /// Sleep until `t`, waking every 100 ms to notice a stop request and
    /// to ping the watchdog.
    fn sleep_until(&mut self, t: Timestamp) {
        loop {
            if stop_requested() {
                return;
            }
            self.sd.progress();
            let left = t.duration_since(Timestamp::now());
            if left <= jiff::SignedDuration::ZERO {
                return;
            }
            let nap = left.unsigned_abs().min(Duration::from_millis(100));
            std::thread::sleep(nap);
        }
    }
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
