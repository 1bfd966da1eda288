//! `snapsite status`: how far behind the standby is, from local records only
//! (no connection to the other site, so a monitoring check is fast and
//! never takes a lock). On the primary: this site's snapshots and what the
//! standby held after the last ship (`state_dir/standby.json`), plus what
//! `snapsite run` reported (`state_dir/run.json`). On the standby: its
//! received snapshots and committed sets, as failover would see them.
//!
//! The level is the worst finding: 0 ok, 1 warning, 2 critical (the exit
//! status, Nagios-style); `--prometheus FILE` writes the same figures for
//! node_exporter's textfile collector.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::base::catalog::{RunRecord, write_atomic};
use crate::base::config::Config;
use crate::base::error::Result;
use crate::base::model::{Manifest, SetKind, parse_set_id};
use crate::base::site::Role;

mod standbys;
pub use standbys::StandbyStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok = 0,
    Warning = 1,
    Critical = 2,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnapshotAt {
    pub snapshot: String,
    pub time: Timestamp,
    pub age_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VolumeStatus {
    pub role: String,
    /// Newest snapshot on this site (primary: taken; standby: received).
    pub newest_local: Option<SnapshotAt>,
    /// Primary: newest snapshot the standby holds. Standby: newest snapshot
    /// of this volume in a committed set.
    pub newest_shipped: Option<SnapshotAt>,
    /// How far the shipped snapshot trails the local one (seconds; 0 when
    /// in sync; absent when nothing was shipped).
    pub lag_seconds: Option<f64>,
    pub snapshots_local: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SetAt {
    pub set_id: String,
    pub time: Timestamp,
    pub age_seconds: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub site: String,
    /// `primary` or `standby`: the recorded role (`role.json`), or what
    /// the config implies (a `[standby]` section: primary).
    pub role: Role,
    /// This site's generation (failover makes it one more than any seen).
    pub generation: u64,
    /// Since when, and how, the role is recorded (absent: from the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_record: Option<crate::base::catalog::RoleRecord>,
    /// The peer's role and generation as seen in the last handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<crate::base::catalog::PeerRecord>,
    /// The last rehearsal (`snapsite rehearse`) on this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rehearsal: Option<RehearsalStatus>,
    /// Verbs that stopped before their end (their journals in state_dir),
    /// with the command that finishes each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupted: Vec<crate::base::journal::Interrupted>,
    pub now: Timestamp,
    pub level: Level,
    pub findings: Vec<Finding>,
    pub volumes: Vec<VolumeStatus>,
    /// The newest committed redolog snapshot on the standby: data written
    /// on the primary after `time` would be lost in a failover now.
    pub recovery_point: Option<SetAt>,
    /// The newest complete full set on the standby.
    pub newest_complete_full_set: Option<SetAt>,
    /// Sets on this site by kind (complete ones).
    pub sets: BTreeMap<String, usize>,
    /// Primary: when the standby's inventory was last recorded.
    pub standby_record_updated_at: Option<Timestamp>,
    pub last_ship_ok_at: Option<Timestamp>,
    pub run: Option<RunRecord>,
    /// Redolog streaming (issue 17): lag and spool, when `[stream]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::ops::stream_status::StreamStatus>,
    /// Standby: receives left half-done for resuming (ZFS resume state, an
    /// LVM replica holding a cut stream's blocks), one line per volume.
    /// They hold pool space until the next ship resumes them or failover
    /// releases them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<String>,
    /// Primary: each standby's figures (`[[standby]]`, issue 29).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standbys: Vec<StandbyStatus>,
    /// Standby: sets judged suspect of ransomware (issue 31).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspect: Option<crate::ops::suspect::SuspectStatus>,
}

/// The last rehearsal, from its report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RehearsalStatus {
    pub finished_at: Timestamp,
    pub ok: bool,
    pub set_id: String,
    pub recovery_point: Timestamp,
    pub seconds_total: f64,
    pub seconds_replay: f64,
}

fn rehearsal_status(catalog: &crate::base::catalog::Catalog) -> Result<Option<RehearsalStatus>> {
    let r: Option<crate::dr::rehearse::Report> = catalog.last_rehearsal()?;
    Ok(r.map(|r| RehearsalStatus {
        finished_at: r.finished_at,
        ok: r.ok,
        set_id: r.plan.set_id,
        recovery_point: r.recovery_point,
        seconds_total: r.seconds_total,
        seconds_replay: r.seconds_replay,
    }))
}

fn at(snapshot: &str, time: Timestamp, now: Timestamp) -> SnapshotAt {
    SnapshotAt {
        snapshot: snapshot.to_string(),
        time,
        age_seconds: secs(now, time),
    }
}

fn secs(now: Timestamp, t: Timestamp) -> f64 {
    now.duration_since(t).as_secs_f64()
}

fn id_time(id: &str) -> Option<Timestamp> {
    parse_set_id(id).map(|(t, _)| t)
}

/// Snapshot time of the redolog member of a set (its before-time: data
/// written after it is not in the snapshot), or the id's time.
fn redolog_time(m: Option<&Manifest>, id: &str, redolog_role: &str) -> Option<Timestamp> {
    m.and_then(|m| m.member(redolog_role))
        .map(|m| m.before)
        .or_else(|| id_time(id))
}

/// Every verb that stopped before its end on this site: the journaled
/// ones, an unfinished failover, a killed rehearsal.
pub fn interrupted(
    catalog: &crate::base::catalog::Catalog,
) -> Result<Vec<crate::base::journal::Interrupted>> {
    let mut out = crate::base::journal::interrupted(catalog)?;
    out.extend(crate::dr::failover::interrupted(catalog)?);
    out.extend(crate::dr::rehearse::interrupted(catalog)?);
    Ok(out)
}

/// Gather the figures (reads the catalog and lists the snapshots): the
/// sets by kind, each volume's newest snapshots, what failover would use,
/// the records of this site's verbs; then the findings.
pub fn gather(cfg: &Config, now: Timestamp) -> Result<Status> {
    let site = crate::base::site::Site::open_newest(cfg)?;
    let catalog = &site.catalog;
    let primary = site.role == Role::Primary;
    let run = if primary { catalog.run_record()? } else { None };
    // the first standby's: the top-level figures are its
    let first = cfg
        .standby
        .as_ref()
        .map_or(crate::base::config::DEFAULT_STANDBY_NAME, |s| {
            s.name.as_str()
        });
    // Its newest entries (`standby.head.json`): what the figures below use.
    let record = if primary {
        catalog.standby_head_of(first)?
    } else {
        None
    };
    let (recovery_point, newest_full) = match &record {
        _ if !primary => standby_failover_view(&site),
        None => (None, None),
        Some(r) => primary_failover_view(cfg, &site, r),
    };
    let set_at = |x: Option<(String, Timestamp)>| {
        x.map(|(set_id, time)| SetAt {
            set_id,
            time,
            age_seconds: secs(now, time),
        })
    };
    let mut status = Status {
        site: cfg.site.clone(),
        role: site.role,
        generation: site.generation,
        role_record: catalog.role_record()?,
        peer: catalog.peer_record_of(first)?,
        rehearsal: rehearsal_status(catalog)?,
        interrupted: interrupted(catalog)?,
        now,
        level: Level::Ok,
        findings: Vec::new(),
        volumes: volume_statuses(&site, record.as_ref(), now),
        recovery_point: set_at(recovery_point),
        newest_complete_full_set: set_at(newest_full),
        sets: usable_counts(&site),
        standby_record_updated_at: record.as_ref().and_then(|r| r.updated_at),
        last_ship_ok_at: record.as_ref().and_then(|r| r.last_ship_ok),
        run,
        stream: crate::ops::stream_status::stream_status(cfg, now),
        parked: if site.role == Role::Primary {
            Vec::new()
        } else {
            parked_receives(cfg)
        },
        standbys: if primary {
            standbys::gather(cfg, &site, now)?
        } else {
            Vec::new()
        },
        suspect: crate::ops::suspect::status(catalog)?,
    };
    status.findings = evaluate(cfg, &status);
    status.level = status
        .findings
        .iter()
        .map(|f| f.level)
        .max()
        .unwrap_or(Level::Ok);
    Ok(status)
}

/// Receives parked for resuming on this standby, per volume (a check that
/// fails is reported the same way: it is worth a look either way).
fn parked_receives(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for v in &cfg.volumes {
        match crate::backend::open(v).parked_receive() {
            Ok(Some(p)) => out.push(format!("volume `{}`: {p}", v.role)),
            Ok(None) => {}
            Err(e) => out.push(format!(
                "volume `{}`: parked receives could not be checked: {e}",
                v.role
            )),
        }
    }
    out
}

/// Usable sets on this site, by kind.
fn usable_counts(site: &crate::base::site::Site) -> BTreeMap<String, usize> {
    [SetKind::Full, SetKind::Redolog]
        .into_iter()
        .map(|kind| (kind.as_str().to_string(), site.usable_count(kind)))
        .collect()
}

/// Per configured volume: the newest snapshot here and the newest the
/// other end has of it (primary: as `standby.json` recorded; standby: in
/// a usable set), and the lag between them.
fn volume_statuses(
    site: &crate::base::site::Site,
    record: Option<&crate::base::catalog::StandbyRecord>,
    now: Timestamp,
) -> Vec<VolumeStatus> {
    let local = site.local();
    let mut volumes = Vec::new();
    for v in &site.cfg.volumes {
        let snaps = local.get(&v.role).map(Vec::as_slice).unwrap_or_default();
        let newest_local = snaps.last().and_then(|s| id_time(s).map(|t| at(s, t, now)));
        let shipped_id: Option<String> = if site.role == Role::Primary {
            record.and_then(|r| r.newest(&v.role).cloned())
        } else {
            site.manifests()
                .iter()
                .rev()
                .filter(|m| site.is_usable(m))
                .find_map(|m| m.member(&v.role).map(|x| x.snapshot.clone()))
        };
        let newest_shipped = shipped_id
            .as_deref()
            .and_then(|s| id_time(s).map(|t| at(s, t, now)));
        let lag_seconds = match (&newest_local, &newest_shipped) {
            (Some(l), Some(s)) => Some(secs(l.time, s.time).max(0.0)),
            (None, Some(_)) => Some(0.0),
            _ => None,
        };
        volumes.push(VolumeStatus {
            role: v.role.clone(),
            newest_local,
            newest_shipped,
            lag_seconds,
            snapshots_local: site.snapshot_count(&v.role),
        });
    }
    volumes
}

/// What the standby would fail over to, as the primary last saw it: the
/// recovery point (the newest committed set's redolog time) and the newest
/// committed full set.
type FailoverView = (Option<(String, Timestamp)>, Option<(String, Timestamp)>);

fn primary_failover_view(
    cfg: &Config,
    site: &crate::base::site::Site,
    r: &crate::base::catalog::StandbyRecord,
) -> FailoverView {
    let rp = r.committed.iter().next_back().and_then(|id| {
        redolog_time(site.manifest_any(id).as_deref(), id, &cfg.redolog_role)
            .map(|t| (id.clone(), t))
    });
    let full = r
        .committed
        .iter()
        .rev()
        .find(|id| parse_set_id(id).is_some_and(|(_, k)| k == SetKind::Full))
        .and_then(|id| id_time(id).map(|t| (id.clone(), t)));
    (rp, full)
}

/// What this standby would fail over to: the pair failover picks.
fn standby_failover_view(site: &crate::base::site::Site) -> FailoverView {
    // A set's times are the sender's claims: no newer than when this
    // standby committed it (its own clock), so a set dated ahead never
    // makes the standby look current.
    let checked = |m: &Manifest, t: Timestamp| m.committed_at.map_or(t, |c| t.min(c));
    match site.failover_pair(None) {
        Ok((s, r)) => (
            r.member(&site.cfg.redolog_role)
                .map(|m| (r.id.clone(), checked(r, m.before))),
            // The set's time (in its id), as on the primary; not
            // from_time, which is earlier by the margin.
            Some((
                s.id.clone(),
                checked(s, id_time(&s.id).unwrap_or_else(|| s.from_time())),
            )),
        ),
        Err(_) => (None, None),
    }
}

fn dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn age(s: f64) -> String {
    dur(Duration::from_secs_f64(s.max(0.0)))
}

/// Pure: the findings for a status against the configured thresholds.
pub fn evaluate(cfg: &Config, s: &Status) -> Vec<Finding> {
    let t = &cfg.status;
    let mut out = Vec::new();
    if let Some(m) = s.suspect.as_ref().and_then(crate::ops::suspect::message) {
        out.push(Finding {
            level: Level::Critical,
            message: m,
        });
    }
    for p in &s.parked {
        out.push(Finding {
            level: Level::Warning,
            message: format!(
                "{p}: a receive is parked for resuming and holds its space in the pool until the next ship resumes it (failover releases it first)"
            ),
        });
    }
    for i in &s.interrupted {
        out.push(Finding {
            // A verb still running (its recorded process alive) is no fault.
            level: if i.running.is_some() {
                Level::Ok
            } else {
                Level::Critical
            },
            message: crate::base::journal::render(i),
        });
    }
    // The split-brain guard: a primary whose peer is primary too, or holds
    // a newer generation, must not ship (and `ship` refuses).
    if s.role == Role::Primary {
        if let Some(p) = &s.peer {
            let newer = p.generation.is_some_and(|g| g > s.generation);
            let also_primary = p.role == Some(crate::base::catalog::Role::Primary);
            if newer || also_primary || p.refused.is_some() {
                out.push(Finding {
                    level: Level::Critical,
                    message: format!(
                        "split-brain guard: peer `{}` said it is {}{} (this site: primary in generation {}); this site refuses to ship: stop its application and run `snapsite failback` here",
                        p.site,
                        p.role.map(|r| r.as_str()).unwrap_or("of unknown role"),
                        p.generation
                            .map(|g| format!(" in generation {g}"))
                            .unwrap_or_default(),
                        s.generation
                    ),
                });
            }
        }
    }
    // The first standby's figures are the top-level ones: with a `window`,
    // its recovery point is late only in window time (as the others').
    let first_window_age = cfg
        .standbys
        .first()
        .and_then(|f| s.standbys.iter().find(|st| st.name == f.name))
        .and_then(|st| st.window_age_seconds);
    let mut check =
        |what: &str, x: &Option<SetAt>, in_window: Option<f64>, warn: Duration, crit: Duration| {
            match x {
                None => out.push(Finding {
                    level: Level::Critical,
                    message: format!("no {what} on the standby"),
                }),
                Some(x) => {
                    let a = Duration::from_secs_f64(in_window.unwrap_or(x.age_seconds).max(0.0));
                    let level = if a > crit {
                        Level::Critical
                    } else if a > warn {
                        Level::Warning
                    } else {
                        return;
                    };
                    out.push(Finding {
                        level,
                        message: format!(
                            "{what} {} is {} old{} (warning over {}, critical over {})",
                            x.set_id,
                            age(a.as_secs_f64()),
                            if in_window.is_some() {
                                " in its window"
                            } else {
                                ""
                            },
                            dur(warn),
                            dur(crit)
                        ),
                    });
                }
            }
        };
    check(
        "recovery point: the newest redolog snapshot",
        &s.recovery_point,
        first_window_age,
        t.recovery_point_warning,
        t.recovery_point_critical,
    );
    check(
        "complete full set",
        &s.newest_complete_full_set,
        None,
        t.full_set_warning,
        t.full_set_critical,
    );
    if let Some(r) = &s.rehearsal {
        if !r.ok {
            out.push(Finding {
                level: Level::Warning,
                message: format!(
                    "the last rehearsal (set {}) failed: failover may not come up cleanly",
                    r.set_id
                ),
            });
        }
    }
    if let Some(r) = &s.run {
        // A ship by hand that succeeded since (the standby record says so)
        // clears run's failures.
        let shipped_since = match (s.last_ship_ok_at, r.last_ship_error_at) {
            (Some(ok), Some(err)) => ok > err,
            _ => false,
        };
        if r.ship_failures > 0 && !shipped_since {
            let msg = r
                .last_error
                .as_ref()
                .map(|e| e.message.lines().next().unwrap_or("").to_string())
                .unwrap_or_default();
            out.push(Finding {
                level: Level::Warning,
                message: format!(
                    "the last {} ship(s) failed; snapsite run keeps retrying: {msg}",
                    r.ship_failures
                ),
            });
        }
        if r.snapshot_failures > 0 {
            out.push(Finding {
                level: Level::Warning,
                message: format!(
                    "the last {} snapshot(s) failed: {}",
                    r.snapshot_failures,
                    r.last_error
                        .as_ref()
                        .map(|e| e.message.lines().next().unwrap_or(""))
                        .unwrap_or("")
                ),
            });
        }
    }
    out.extend(standbys::findings(cfg, s));
    out
}

pub fn render_text(s: &Status, tz: &jiff::tz::TimeZone) -> String {
    let local = |t: Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut o = String::new();
    let headline = match s.findings.iter().find(|f| f.level == s.level) {
        Some(f) => f.message.clone(),
        None => "the standby is current".into(),
    };
    let _ = writeln!(
        o,
        "snapsite {} - {} ({}): {headline}",
        s.level.as_str(),
        s.site,
        s.role
    );
    let _ = writeln!(
        o,
        "role             {} in generation {}{}",
        s.role,
        s.generation,
        match &s.role_record {
            Some(r) => format!(
                " (since {}, by {}{})",
                local(r.since),
                r.how,
                r.set_id
                    .as_ref()
                    .map(|x| format!(" from set {x}"))
                    .unwrap_or_default()
            ),
            None => " (from the config: no role recorded)".into(),
        }
    );
    if let Some(p) = &s.peer {
        let _ = writeln!(
            o,
            "peer             {} said {}{} at {}",
            p.site,
            p.role.map(|r| r.as_str()).unwrap_or("(no role)"),
            p.generation
                .map(|g| format!(" in generation {g}"))
                .unwrap_or_default(),
            local(p.seen_at)
        );
    }
    match &s.recovery_point {
        Some(r) => {
            let _ = writeln!(
                o,
                "recovery point   {} ({} ago, set {})",
                local(r.time),
                age(r.age_seconds),
                r.set_id
            );
        }
        None => {
            let _ = writeln!(o, "recovery point   none: nothing committed on the standby");
        }
    }
    match &s.newest_complete_full_set {
        Some(r) => {
            let _ = writeln!(
                o,
                "newest full set  {} ({} ago)",
                r.set_id,
                age(r.age_seconds)
            );
        }
        None => {
            let _ = writeln!(o, "newest full set  none complete on the standby");
        }
    }
    let shipped = if s.role == Role::Primary {
        "STANDBY HAS"
    } else {
        "COMMITTED"
    };
    let _ = writeln!(
        o,
        "{:<10} {:<30} {:<30} {:>8}",
        "VOLUME",
        if s.role == Role::Primary {
            "NEWEST HERE"
        } else {
            "NEWEST RECEIVED"
        },
        shipped,
        "LAG"
    );
    for v in &s.volumes {
        let _ = writeln!(
            o,
            "{:<10} {:<30} {:<30} {:>8}",
            v.role,
            v.newest_local
                .as_ref()
                .map(|x| x.snapshot.as_str())
                .unwrap_or("-"),
            v.newest_shipped
                .as_ref()
                .map(|x| x.snapshot.as_str())
                .unwrap_or("-"),
            v.lag_seconds.map(age).unwrap_or_else(|| "-".into())
        );
    }
    let _ = writeln!(
        o,
        "sets here        {} full, {} redolog (complete)",
        s.sets.get("full").unwrap_or(&0),
        s.sets.get("redolog").unwrap_or(&0)
    );
    if let Some(t) = s.last_ship_ok_at {
        let _ = writeln!(o, "last ship ok     {}", local(t));
    }
    if let Some(r) = &s.run {
        let state = match &r.process {
            _ if r.stopped_at.is_some() => "stopped",
            Some(p) if crate::base::procs::is_alive(p) => "running",
            Some(_) => "not running (killed or crashed: it recorded no stop)",
            None => "running or killed (recorded by an older snapsite)",
        };
        let _ = writeln!(
            o,
            "snapsite run     pid {} {state}; since start: {} full, {} redolog taken, {} committed, {} pruned",
            r.pid, r.full_sets_taken, r.redolog_sets_taken, r.sets_committed, r.sets_pruned
        );
    }
    if let Some(r) = &s.rehearsal {
        let _ = writeln!(
            o,
            "last rehearsal   {} {} (set {}, {:.1} s)",
            local(r.finished_at),
            if r.ok { "OK" } else { "FAILED" },
            r.set_id,
            r.seconds_total
        );
    }
    if let Some(st) = &s.stream {
        o.push_str(&crate::ops::stream_status::render_status(st));
    }
    standbys::render_text(s, &mut o, &local);
    for f in &s.findings {
        let _ = writeln!(o, "{:<8} {}", f.level.as_str(), f.message);
    }
    o
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text format (for node_exporter's textfile collector).
pub fn render_prometheus(s: &Status) -> String {
    let site = esc(&s.site);
    let mut o = String::new();
    let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP snapsite_{name} {help}");
        let _ = writeln!(o, "# TYPE snapsite_{name} gauge");
        for (labels, v) in samples {
            let sep = if labels.is_empty() { "" } else { "," };
            let _ = writeln!(o, "snapsite_{name}{{site=\"{site}\"{sep}{labels}}} {v}");
        }
    };
    let ts = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    metric(
        "status",
        "0 ok, 1 warning, 2 critical (as the exit status of snapsite status)",
        vec![(format!("role=\"{}\"", s.role), s.level as i32 as f64)],
    );
    metric(
        "generation",
        "This site's generation (failover makes it one more than any seen)",
        vec![(format!("role=\"{}\"", s.role), s.generation as f64)],
    );
    if let Some(g) = s.peer.as_ref().and_then(|p| p.generation) {
        metric(
            "peer_generation",
            "The peer's generation as seen in the last handshake",
            vec![(String::new(), g as f64)],
        );
    }
    let mut newest = Vec::new();
    let mut lag = Vec::new();
    let mut count = Vec::new();
    for v in &s.volumes {
        let r = esc(&v.role);
        if let Some(x) = &v.newest_local {
            newest.push((format!("volume=\"{r}\",where=\"local\""), ts(x.time)));
        }
        if let Some(x) = &v.newest_shipped {
            newest.push((format!("volume=\"{r}\",where=\"standby\""), ts(x.time)));
        }
        if let Some(l) = v.lag_seconds {
            lag.push((format!("volume=\"{r}\""), l));
        }
        count.push((format!("volume=\"{r}\""), v.snapshots_local as f64));
    }
    metric(
        "snapshot_newest_timestamp_seconds",
        "Time of the newest snapshot per volume, on this site and on the standby",
        newest,
    );
    metric(
        "volume_lag_seconds",
        "How far the standby's newest snapshot trails this site's",
        lag,
    );
    metric("snapshots", "Snapshots per volume on this site", count);
    metric(
        "sets",
        "Complete sets on this site",
        s.sets
            .iter()
            .map(|(k, n)| (format!("kind=\"{k}\""), *n as f64))
            .collect(),
    );
    if let Some(r) = &s.recovery_point {
        metric(
            "recovery_point_timestamp_seconds",
            "Snapshot time of the newest committed redolog snapshot on the standby",
            vec![(String::new(), ts(r.time))],
        );
        metric(
            "recovery_point_age_seconds",
            "Data written on the primary in this window would be lost in a failover now",
            vec![(String::new(), r.age_seconds)],
        );
    }
    if let Some(r) = &s.newest_complete_full_set {
        metric(
            "full_set_timestamp_seconds",
            "Time of the newest complete full set on the standby (the set's time, the same on both sites)",
            vec![(String::new(), ts(r.time))],
        );
    }
    if let Some(t) = s.last_ship_ok_at {
        metric(
            "last_ship_ok_timestamp_seconds",
            "End of the last ship that completed",
            vec![(String::new(), ts(t))],
        );
    }
    if let Some(r) = &s.rehearsal {
        metric(
            "rehearsal_ok",
            "1 when the last rehearsal's replay succeeded",
            vec![(String::new(), if r.ok { 1.0 } else { 0.0 })],
        );
        metric(
            "rehearsal_timestamp_seconds",
            "When the last rehearsal finished",
            vec![(String::new(), ts(r.finished_at))],
        );
        metric(
            "rehearsal_seconds",
            "How long the last rehearsal took (clones, replay, teardown)",
            vec![(String::new(), r.seconds_total)],
        );
        metric(
            "rehearsal_replay_seconds",
            "How long the last rehearsal's replay took",
            vec![(String::new(), r.seconds_replay)],
        );
        metric(
            "rehearsal_recovery_point_timestamp_seconds",
            "The recovery point the last rehearsal proved",
            vec![(String::new(), ts(r.recovery_point))],
        );
    }
    if let Some(r) = &s.run {
        metric(
            "run_ship_failures",
            "Failed ships in a row in snapsite run",
            vec![(String::new(), r.ship_failures as f64)],
        );
    }
    if let Some(st) = &s.stream {
        o.push_str(&crate::ops::stream_status::render_metrics(st, &site));
    }
    standbys::render_prometheus(s, &mut o);
    if let Some(x) = &s.suspect {
        o.push_str(&crate::ops::suspect::render_metrics(x, &site));
    }
    o
}

/// Write the metrics atomically (the textfile collector must never read a
/// half-written file).
pub fn write_prometheus(s: &Status, path: &Path) -> Result<()> {
    write_atomic(path, render_prometheus(s).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CFG: &str = r#"
site = "a"
state_dir = "/var/lib/snapsite"
[[volume]]
role = "redolog"
backend = "btrfs"
source = "/srv/redolog"
snapshot_dir = "/srv/.snap/redolog"
[standby]
transport = "local"
config = "/etc/snapsite/b.toml"
[status]
recovery_point_warning = "20m"
recovery_point_critical = "1h"
"#;

    #[test]
    fn a_parked_receive_is_a_warning() {
        let cfg = Config::parse(
            "site = \"a\"\nstate_dir = \"/var/lib/s\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"/srv/r\"\nsnapshot_dir = \"/srv/.s/r\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut s = status(Some(1.0), Some(1.0));
        assert!(evaluate(&cfg, &s).iter().all(|f| f.level == Level::Ok));
        s.parked =
            vec!["volume `blob`: vg/blob holds 3.0 GiB of a cut stream (pool 88% full)".into()];
        let f = evaluate(&cfg, &s);
        let w: Vec<_> = f.iter().filter(|f| f.level == Level::Warning).collect();
        assert_eq!(w.len(), 1, "{f:?}");
        assert!(
            w[0].message.contains("parked for resuming"),
            "{}",
            w[0].message
        );
    }

    fn status(rp_age: Option<f64>, full_age: Option<f64>) -> Status {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let mk = |a: f64| SetAt {
            set_id: "x".into(),
            time: now - jiff::SignedDuration::from_secs_f64(a),
            age_seconds: a,
        };
        Status {
            site: "a".into(),
            role: Role::Primary,
            generation: 1,
            role_record: None,
            peer: None,
            rehearsal: None,
            interrupted: vec![],
            now,
            level: Level::Ok,
            findings: vec![],
            volumes: vec![VolumeStatus {
                role: "redolog".into(),
                newest_local: None,
                newest_shipped: None,
                lag_seconds: Some(12.5),
                snapshots_local: 3,
            }],
            recovery_point: rp_age.map(mk),
            newest_complete_full_set: full_age.map(mk),
            sets: BTreeMap::new(),
            standby_record_updated_at: None,
            standbys: Vec::new(),
            last_ship_ok_at: None,
            run: None,
            stream: None,
            parked: vec![],
            suspect: None,
        }
    }

    #[test]
    fn thresholds() {
        let cfg = Config::parse(CFG, Path::new("/t.toml")).unwrap();
        let levels = |s: &Status| {
            evaluate(&cfg, s)
                .iter()
                .map(|f| f.level)
                .collect::<Vec<_>>()
        };
        assert!(levels(&status(Some(60.0), Some(60.0))).is_empty());
        assert_eq!(levels(&status(Some(1300.0), Some(60.0))), [Level::Warning]);
        assert_eq!(levels(&status(Some(3700.0), Some(60.0))), [Level::Critical]);
        assert_eq!(
            levels(&status(None, Some(3.0 * 3600.0))),
            [Level::Critical, Level::Warning]
        );
        let mut s = status(Some(1.0), Some(1.0));
        s.run = Some(RunRecord {
            ship_failures: 2,
            ..Default::default()
        });
        assert_eq!(levels(&s), [Level::Warning]);
    }

    #[test]
    fn prometheus_text() {
        let mut s = status(Some(90.0), Some(100.0));
        s.level = Level::Warning;
        let p = render_prometheus(&s);
        assert!(
            p.contains(
                "# TYPE snapsite_status gauge\nsnapsite_status{site=\"a\",role=\"primary\"} 1\n"
            ),
            "{p}"
        );
        assert!(
            p.contains("snapsite_recovery_point_age_seconds{site=\"a\"} 90\n"),
            "{p}"
        );
        assert!(
            p.contains("snapsite_volume_lag_seconds{site=\"a\",volume=\"redolog\"} 12.5\n"),
            "{p}"
        );
        // every sample line is `name{labels} value`
        for l in p.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }
}
