//! Fan-out (issue 29): ship to several standbys independently and at the
//! same time, one thread per standby, so a slow or dead standby never
//! delays the others. Each session takes only its standby's own lock
//! (`Catalog::standby_lock`) and writes only its standby's records; the
//! site lock is held just for the setup (role check, pending sets).
//!
//! `ship_standbys` is the one-shot form (`ship`, `ship --to NAME`): it
//! returns when every session has ended. [`Fanout`] is `run`'s form: a
//! session is started per standby whose slot is due and which has none
//! under way, and its result is collected on a later turn of the loop, so
//! a hanging standby holds only its own thread.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use jiff::Timestamp;

use super::{Progress, ShipReport, recover_pending, refuse_unless_primary, ship_to};
use crate::base::catalog::Catalog;
use crate::base::config::{Config, Standby};
use crate::base::error::{Error, Result};

/// How long a ship waits for its standby's lock (another session to it).
const STANDBY_LOCK_WAIT: Duration = Duration::from_secs(600);
/// How long the setup waits for the site lock.
const SITE_LOCK_WAIT: Duration = Duration::from_secs(600);

/// One standby's outcome.
pub struct StandbyShip {
    pub name: String,
    pub result: Result<ShipReport>,
}

/// The standbys `--to NAME` selects (all of them without it), in config
/// order; an unknown name is an error naming the configured ones.
pub fn select<'a>(cfg: &'a Config, to: Option<&str>) -> Result<Vec<&'a Standby>> {
    if cfg.standbys.is_empty() {
        return Err(Error::config(format!(
            "{}: no [standby] section: nowhere to ship to",
            cfg.path.display()
        )));
    }
    match to {
        None => Ok(cfg.standbys.iter().collect()),
        Some(n) => cfg.standby_named(n).map(|s| vec![s]).ok_or_else(|| {
            Error::config(format!(
                "{}: no standby named `{}` (configured: {})",
                cfg.path.display(),
                n.escape_debug(),
                names(cfg)
            ))
        }),
    }
}

fn names(cfg: &Config) -> String {
    cfg.standbys
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The setup every fan-out ship shares, under the site lock: this site is
/// the primary, and sets a killed `snapshot` left pending are undone.
fn prepare(cfg: &Config, catalog: &Catalog) -> Result<()> {
    let _lock = catalog.lock("ship", SITE_LOCK_WAIT)?;
    refuse_unless_primary(cfg, catalog)?;
    recover_pending(cfg, catalog)?;
    Ok(())
}

/// One session with `standby` under its own lock.
fn ship_locked(
    cfg: &Config,
    catalog: &Catalog,
    standby: &Standby,
    progress: Progress,
) -> Result<ShipReport> {
    let _lock = catalog.standby_lock(&standby.name, STANDBY_LOCK_WAIT)?;
    ship_to(cfg, catalog, standby, progress)
}

/// Ship to each of `targets` at once and wait for all. `progress` is
/// shown for a single target; with several, each logs its own end.
pub fn ship_standbys(
    cfg: &Config,
    catalog: &Catalog,
    targets: &[&Standby],
    progress: Progress,
) -> Result<Vec<StandbyShip>> {
    prepare(cfg, catalog)?;
    if let [one] = targets {
        return Ok(vec![StandbyShip {
            name: one.name.clone(),
            result: ship_locked(cfg, catalog, one, progress),
        }]);
    }
    let out = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|s| {
                let h = scope.spawn(move || ship_locked(cfg, catalog, s, &mut |_, _, _, _| {}));
                (s.name.clone(), h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| StandbyShip {
                result: h.join().unwrap_or_else(|_| {
                    Err(Error::protocol(format!("the ship to `{name}` panicked")))
                }),
                name,
            })
            .collect::<Vec<_>>()
    });
    for s in &out {
        match &s.result {
            Ok(r) => tracing::info!(standby = %s.name, committed = r.committed.len(), "shipped"),
            Err(e) => tracing::warn!(standby = %s.name, error = %e, "ship failed"),
        }
    }
    Ok(out)
}

/// `run`'s fan-out: sessions started per standby, collected later.
pub struct Fanout {
    cfg: Config,
    tx: mpsc::Sender<StandbyShip>,
    rx: mpsc::Receiver<StandbyShip>,
    /// Standbys with a session under way, and since when.
    pub in_flight: BTreeMap<String, Timestamp>,
    /// When each standby's last session started (for `every`).
    last_started: BTreeMap<String, Timestamp>,
}

impl Fanout {
    pub fn new(cfg: &Config) -> Fanout {
        let (tx, rx) = mpsc::channel();
        Fanout {
            cfg: cfg.clone(),
            tx,
            rx,
            in_flight: BTreeMap::new(),
            last_started: BTreeMap::new(),
        }
    }

    /// Whether `s` is due at `now`: no session under way, inside its
    /// `window` (if any), and its `every` slot not yet served (always,
    /// without `every`).
    pub fn due(&self, s: &Standby, now: Timestamp) -> bool {
        if self.in_flight.contains_key(&s.name) {
            return false;
        }
        if s.window.as_ref().is_some_and(|w| !w.contains(now)) {
            return false;
        }
        match (s.every, self.last_started.get(&s.name)) {
            (Some(every), Some(last)) => *last < crate::base::schedule::slot_start(now, every),
            _ => true,
        }
    }

    /// Start a session to every due standby (after the shared setup);
    /// returns their names. A setup failure starts none. `now` is the wall
    /// clock (`model::now`): it decides only when a session starts.
    pub fn dispatch(&mut self, catalog: &Catalog, now: Timestamp) -> Result<Vec<String>> {
        let due: Vec<Standby> = self
            .cfg
            .standbys
            .iter()
            .filter(|s| self.due(s, now))
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        prepare(&self.cfg, catalog)?;
        let mut started = Vec::new();
        for s in due {
            let cfg = self.cfg.clone();
            let tx = self.tx.clone();
            let root = catalog.root().to_owned();
            self.in_flight.insert(s.name.clone(), now);
            self.last_started.insert(s.name.clone(), now);
            started.push(s.name.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("ship-{}", s.name))
                .spawn(move || {
                    let catalog = Catalog::new(&root);
                    let result = ship_locked(&cfg, &catalog, &s, &mut |_, _, _, _| {});
                    let _ = tx.send(StandbyShip {
                        name: s.name.clone(),
                        result,
                    });
                });
            if let Err(e) = spawned {
                let name = started.pop().expect("just pushed");
                self.in_flight.remove(&name);
                return Err(Error::protocol(format!(
                    "cannot start the ship to `{name}`: {e}"
                )));
            }
        }
        Ok(started)
    }

    /// Sessions that ended since the last call; with `wait`, blocks until
    /// every session under way has ended.
    pub fn collect(&mut self, wait: bool) -> Vec<StandbyShip> {
        let mut out = Vec::new();
        loop {
            let next = if wait && !self.in_flight.is_empty() {
                self.rx.recv().ok()
            } else {
                self.rx.try_recv().ok()
            };
            let Some(done) = next else { break };
            self.in_flight.remove(&done.name);
            out.push(done);
        }
        out
    }
}

/// A session with standby `name`, started at `started`, failed: record
/// since when its ships fail (the start of the first failed session, kept
/// until a ship completes). A record that cannot be written is logged: the
/// failure itself is what the caller reports.
pub fn note_failure(catalog: &Catalog, name: &str, started: Timestamp) {
    // Already failing (the head says it while it matches the record):
    // nothing to write, no need to read the record whole.
    if let crate::base::catalog::HeadCache::Fresh(h) = catalog.standby_head_cached_of(name)
        && h.failing_since.is_some()
    {
        return;
    }
    let r = catalog.standby_record_of(name).and_then(|rec| {
        let mut rec = rec.unwrap_or_default();
        if rec.failing_since.is_none() {
            rec.failing_since = Some(started);
            catalog.write_standby_record_of(name, &rec)?;
        }
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!(standby = %name, error = %e, "could not record the failed ship");
    }
}

/// End a failed session. One that stalled (no byte read or written for
/// the standby's `stall_timeout`) is abandoned at once: its transport
/// process is killed by PID, and the error says so. Nothing was
/// half-committed: the standby commits a set only on our commit message,
/// and this site records it only on the standby's answer.
pub fn abandon_if_stalled(
    standby: &Standby,
    conn: crate::wire::transport::Connection,
    e: Error,
) -> Error {
    if !conn.stalled() {
        conn.abort();
        return e;
    }
    let pid = conn.pid();
    conn.abandon();
    let limit = crate::wire::transport::io_timeout(standby);
    e.context(format!(
        "standby `{}` stalled: no progress for {}; the session was abandoned (process {pid} killed)",
        standby.name,
        humantime::format_duration(limit)
    ))
    .with_hint(format!(
        "the next ship retries; check the link to `{}` and its `snapsite serve` (stall_timeout bounds the wait)",
        standby.name
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            r#"
site = "a"
state_dir = "/var/lib/snapsite"
[[volume]]
role = "redolog"
backend = "zfs"
source = "tank/redolog"
[replay]
none = true
[[standby]]
name = "near"
transport = "ssh"
host = "b"
[[standby]]
name = "far"
transport = "ssh"
host = "c"
every = "1h"
"#,
            std::path::Path::new("/etc/snapsite/t.toml"),
        )
        .unwrap()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_limits_a_standby_to_one_session_per_slot() {
        let cfg = cfg();
        let (near, far) = (&cfg.standbys[0], &cfg.standbys[1]);
        let mut f = Fanout::new(&cfg);
        assert!(f.due(near, t("2026-01-01T10:05:00Z")));
        assert!(f.due(far, t("2026-01-01T10:05:00Z")));
        f.last_started
            .insert("far".into(), t("2026-01-01T10:05:00Z"));
        f.last_started
            .insert("near".into(), t("2026-01-01T10:05:00Z"));
        // near (no `every`): after every set; far: once per hour slot
        assert!(f.due(near, t("2026-01-01T10:20:00Z")));
        assert!(!f.due(far, t("2026-01-01T10:59:59Z")));
        assert!(f.due(far, t("2026-01-01T11:00:00Z")));
        // a session under way is never started twice
        f.in_flight.insert("near".into(), t("2026-01-01T10:20:00Z"));
        assert!(!f.due(near, t("2026-01-01T12:00:00Z")));
    }

    #[test]
    fn a_window_starts_ships_only_inside_it() {
        let mut cfg = cfg();
        cfg.standbys[1].window =
            Some(crate::base::shipwindow::ShipWindow::parse("22:00-06:00 UTC").unwrap());
        let (near, far) = (&cfg.standbys[0], &cfg.standbys[1]);
        let f = Fanout::new(&cfg);
        assert!(f.due(near, t("2026-01-01T12:00:00Z")));
        assert!(!f.due(far, t("2026-01-01T12:00:00Z")));
        assert!(f.due(far, t("2026-01-01T23:00:00Z")));
        assert!(f.due(far, t("2026-01-02T05:00:00Z")));
        assert!(!f.due(far, t("2026-01-02T06:00:00Z")));
    }

    #[test]
    fn select_names_the_configured_standbys_on_a_typo() {
        let cfg = cfg();
        assert_eq!(select(&cfg, None).unwrap().len(), 2);
        assert_eq!(select(&cfg, Some("far")).unwrap()[0].name, "far");
        let e = select(&cfg, Some("fra")).err().unwrap().to_string();
        assert!(e.contains("`fra`") && e.contains("near, far"), "{e}");
    }
}
