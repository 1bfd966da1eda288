//! `run` with several standbys (issue 29): the ship step starts a session
//! to each standby that is due and has none under way
//! (`coordinator::fanout::Fanout`), and returns at once; the results are
//! collected at the top of every turn of the loop. A standby that hangs
//! holds only its own session: sets keep being taken on time and shipped to
//! the others. Failures and notifications are per standby (`ship to NAME`).

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{Runner, StepError};
use crate::base::config::Config;
use crate::base::error::Result;
use crate::base::schedule;
use crate::ops::notify::Severity;
use crate::primary::coordinator::fanout::Fanout;

pub(super) struct RunFanout {
    sessions: Fanout,
    /// Standbys whose last session failed, and since when.
    failing_since: BTreeMap<String, Timestamp>,
}

impl RunFanout {
    /// Whether `run` ships through sessions per standby: with several
    /// standbys, or one with its own schedule (`every`, `window`).
    pub(super) fn wanted(cfg: &Config) -> bool {
        cfg.standbys.len() > 1
            || cfg
                .standbys
                .iter()
                .any(|s| s.every.is_some() || s.window.is_some())
    }

    pub(super) fn new(cfg: &Config) -> RunFanout {
        RunFanout {
            sessions: Fanout::new(cfg),
            failing_since: BTreeMap::new(),
        }
    }
}

impl Runner<'_> {
    /// The ship step with several standbys: start the due sessions.
    pub(super) fn ship_fanout(&mut self, started: Timestamp) -> Result<()> {
        self.st.last_ship_attempt = Some(started);
        let fan = self.fanout.as_mut().expect("fan-out configured");
        let in_flight: Vec<String> = fan.sessions.in_flight.keys().cloned().collect();
        // The wall clock decides only when a session starts (`window`,
        // `every`), never what is shipped.
        match fan
            .sessions
            .dispatch(&self.catalog, crate::base::model::now())
        {
            Ok(names) => {
                self.st.ship_pending = false;
                tracing::info!(started = ?names, still_running = ?in_flight, "ship sessions");
                Ok(())
            }
            Err(e) => {
                self.ship_failed(started);
                Err(e)
            }
        }
    }

    /// A stopping `run`: the sessions still under way are cut, their
    /// transports killed by PID (a hung standby's would outlive us).
    pub(super) fn cut_ships(&mut self) {
        let Some(fan) = self.fanout.as_ref() else {
            return;
        };
        if !fan.sessions.in_flight.is_empty() {
            let n = crate::wire::transport::kill_live_sessions();
            tracing::warn!(sessions = ?fan.sessions.in_flight.keys().collect::<Vec<_>>(), killed = n, "stopping: cut the ship sessions under way");
        }
    }

    /// Take in the sessions that ended (with `wait`, every one under way).
    pub(super) fn collect_ships(&mut self, wait: bool) {
        let Some(fan) = self.fanout.as_mut() else {
            return;
        };
        let done = fan.sessions.collect(wait);
        let now = Timestamp::now();
        let mut shipped = false;
        for s in done {
            let event = format!("ship to {}", s.name);
            let fan = self.fanout.as_mut().expect("fan-out configured");
            match s.result {
                Ok(report) => {
                    shipped = true;
                    self.rec.sets_committed += report.committed.len() as u64;
                    fan.failing_since.remove(&s.name);
                    tracing::info!(
                        standby = %s.name,
                        snapshots = report.snapshots.len(),
                        committed = report.committed.len(),
                        payload_bytes = report.payload_bytes,
                        seconds = report.seconds,
                        "shipped"
                    );
                    if fan.failing_since.is_empty() {
                        self.st.ship_failures = 0;
                        self.rec.ship_failures = 0;
                        self.ship_failing_since = None;
                    }
                    self.rec.last_ship_ok_at = Some(now);
                    self.notifier.observe(
                        &event,
                        "ok",
                        Severity::Ok,
                        &format!(
                            "standby `{}`: ship works again ({} set(s) committed)",
                            s.name,
                            report.committed.len()
                        ),
                    );
                }
                Err(e) => {
                    // A stalled session failed at its start, not when it
                    // was given up (the standby record says when; its
                    // head carries it).
                    let recorded = self
                        .catalog
                        .standby_head_of(&s.name)
                        .ok()
                        .flatten()
                        .and_then(|r| r.failing_since);
                    let since = *fan
                        .failing_since
                        .entry(s.name.clone())
                        .or_insert(recorded.unwrap_or(now).min(now));
                    self.ship_failing_since.get_or_insert(since);
                    self.ship_failed(now);
                    self.any_failed = true;
                    self.rec.last_error = Some(StepError {
                        at: now,
                        step: event.clone(),
                        message: e.to_string(),
                    });
                    let retry = schedule::backoff(self.schedule, self.st.ship_failures);
                    tracing::warn!(
                        standby = %s.name,
                        error = %e,
                        retry_in = %humantime::format_duration(retry),
                        "ship failed; will retry"
                    );
                    let failing_for = now.duration_since(since).unsigned_abs();
                    if self
                        .notifier
                        .ship_failing_after()
                        .is_some_and(|after| failing_for >= after)
                    {
                        self.notifier.observe(
                            &event,
                            "failing",
                            Severity::Critical,
                            &format!("standby `{}`: ship has failed since {since}: {e}", s.name),
                        );
                    }
                }
            }
        }
        // The archive follows a good ship, as on the single-standby path
        // (a standby with `every` or `window` ships through here too).
        if shipped {
            crate::primary::archive::after_ship(self.cfg, &self.catalog);
        }
    }
}
