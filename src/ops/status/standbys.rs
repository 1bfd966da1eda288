//! Status per standby (issue 29): with `[[standby]]`, each standby's
//! recovery point, lag, last ship and failing-since, from its own record
//! (`state_dir/standbys/NAME/standby.json`); findings that name the standby
//! (its recovery point, history it pins beyond `[retention]`, records of a
//! standby gone from the config); text lines and metrics with a `standby`
//! label. The top-level figures stay the first standby's.

use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;

use super::{Finding, Level, SetAt, Status, id_time, redolog_time, secs};
use crate::base::catalog::StandbyRecord;
use crate::base::config::Config;
use crate::base::error::Result;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StandbyStatus {
    pub name: String,
    /// In the config now (a removed standby's records stay until `prune`
    /// releases them).
    pub configured: bool,
    /// The newest set committed there: data written after its redolog
    /// time would be lost in a failover to it now.
    pub recovery_point: Option<SetAt>,
    /// How far it trails this site's newest set (seconds).
    pub lag_seconds: Option<f64>,
    pub last_ship_ok_at: Option<Timestamp>,
    /// Since when ships to it fail (absent: the last one completed).
    pub failing_since: Option<Timestamp>,
    /// Its `window` (`run` starts ships to it only in these hours).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// With a `window`: the recovery point's age counted in window time
    /// only (what `status` judges: the hours it may not ship are not late).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_age_seconds: Option<f64>,
    /// The oldest of its common snapshots here: prune keeps it for this
    /// standby (set id; `age_seconds` counts from this site's newest set,
    /// as the retention grid does).
    pub pins: Option<SetAt>,
}

/// Every recorded or configured standby, configured ones first.
pub(super) fn gather(
    cfg: &Config,
    site: &crate::base::site::Site,
    now: Timestamp,
) -> Result<Vec<StandbyStatus>> {
    let mut records: Vec<(String, Option<StandbyRecord>)> = Vec::new();
    for s in &cfg.standbys {
        records.push((s.name.clone(), site.catalog.standby_head_of(&s.name)?));
    }
    // Each record's newest entries (`standby.head.json`), not every
    // snapshot it holds: see `Catalog::standby_head_of`.
    for (name, r) in site.catalog.standby_heads()? {
        if !records.iter().any(|(n, _)| *n == name) {
            records.push((name, Some(r)));
        }
    }
    let newest_local = site
        .manifests()
        .iter()
        .rev()
        .find(|m| site.is_usable(m))
        .and_then(|m| id_time(&m.id));
    let set_at = |id: &str, time: Timestamp| SetAt {
        set_id: id.to_string(),
        time,
        age_seconds: secs(now, time),
    };
    let mut out = Vec::new();
    for (name, rec) in records {
        let configured = cfg.standby_named(&name).is_some();
        let window = cfg.standby_named(&name).and_then(|s| s.window.clone());
        let rec = rec.unwrap_or_default();
        let recovery_point = rec.committed.iter().next_back().and_then(|id| {
            redolog_time(site.manifest_any(id).as_deref(), id, &cfg.redolog_role)
                .map(|t| set_at(id, t))
        });
        let lag_seconds = match (newest_local, &recovery_point) {
            (Some(l), Some(r)) => Some(secs(l, r.time).max(0.0)),
            _ => None,
        };
        // measured from this site's newest set, as the grid measures
        // The head holds each role's newest held snapshot: the common
        // one while it is still here; else an older one is, and the
        // record is read whole to find it.
        let mut common = site.common_snapshots(&rec)?;
        if common.len() < rec.holds.values().filter(|h| !h.is_empty()).count() {
            if let Some(whole) = site.catalog.standby_record_of(&name)? {
                common = site.common_snapshots(&whole)?;
            }
        }
        let pins = common
            .into_iter()
            .filter_map(|(_, s)| id_time(&s).map(|t| (s, t)))
            .min_by_key(|(_, t)| *t)
            .map(|(s, t)| SetAt {
                set_id: s,
                time: t,
                age_seconds: newest_local.map_or(0.0, |l| secs(l, t).max(0.0)),
            });
        out.push(StandbyStatus {
            name,
            configured,
            lag_seconds,
            last_ship_ok_at: rec.last_ship_ok,
            failing_since: rec.failing_since,
            window_age_seconds: window
                .as_ref()
                .and_then(|w| recovery_point.as_ref().map(|r| w.open_seconds(r.time, now))),
            window: window.map(|w| w.text),
            recovery_point,
            pins,
        });
    }
    Ok(out)
}

/// Findings naming a standby. The first configured standby's recovery
/// point is the top-level one (judged there); the others are judged here.
pub(super) fn findings(cfg: &Config, s: &Status) -> Vec<Finding> {
    let mut out = Vec::new();
    let first = cfg.standbys.first().map(|f| f.name.as_str());
    let t = &cfg.status;
    for st in &s.standbys {
        if !st.configured {
            out.push(Finding {
                level: Level::Warning,
                message: format!(
                    "standby `{}` is no longer in the config, but its records still hold back prune; `snapsite prune` releases them",
                    st.name
                ),
            });
            continue;
        }
        if let (Some(f), true) = (st.failing_since, s.standbys.len() > 1) {
            out.push(Finding {
                level: Level::Warning,
                message: format!(
                    "standby `{}`: ships failing since {f} (a stalled session counts: stall_timeout)",
                    st.name
                ),
            });
        }
        if Some(st.name.as_str()) != first {
            match &st.recovery_point {
                None => out.push(Finding {
                    level: Level::Critical,
                    message: format!("standby `{}`: no committed set recorded", st.name),
                }),
                Some(rp) => {
                    // A standby with a window is late only in window time.
                    let age = std::time::Duration::from_secs_f64(
                        st.window_age_seconds.unwrap_or(rp.age_seconds).max(0.0),
                    );
                    let level = if age >= t.recovery_point_critical {
                        Some(Level::Critical)
                    } else if age >= t.recovery_point_warning {
                        Some(Level::Warning)
                    } else {
                        None
                    };
                    if let Some(level) = level {
                        out.push(Finding {
                            level,
                            message: format!(
                                "standby `{}`: recovery point {} is {} old{}{}",
                                st.name,
                                rp.set_id,
                                humantime::format_duration(std::time::Duration::from_secs(
                                    age.as_secs()
                                )),
                                st.window
                                    .as_ref()
                                    .map(|w| format!(" in its window {w}"))
                                    .unwrap_or_default(),
                                st.failing_since
                                    .map(|f| format!(" (ships failing since {f})"))
                                    .unwrap_or_default()
                            ),
                        });
                    }
                }
            }
        }
        if let (Some(pin), Some(r)) = (&st.pins, &cfg.retention) {
            let span = r.full.span();
            if pin.age_seconds > span.as_secs_f64() {
                out.push(Finding {
                    level: Level::Warning,
                    message: format!(
                        "standby `{}` pins history: its base {} is older than [retention] keeps ({}); prune keeps it until `{}` catches up or leaves the config",
                        st.name,
                        pin.set_id,
                        humantime::format_duration(span),
                        st.name
                    ),
                });
            }
        }
    }
    out
}

/// One line per standby (only with more than one, or a removed one).
pub(super) fn render_text(s: &Status, o: &mut String, local: &dyn Fn(Timestamp) -> String) {
    if s.standbys.len() < 2 && s.standbys.iter().all(|x| x.configured) {
        return;
    }
    for st in &s.standbys {
        let _ = writeln!(
            o,
            "standby {:<8} recovery point {}, lag {}, last ship {}{}{}",
            st.name,
            st.recovery_point
                .as_ref()
                .map(|r| format!("{} ({})", local(r.time), r.set_id))
                .unwrap_or_else(|| "none".into()),
            st.lag_seconds
                .map(|l| format!("{l:.0} s"))
                .unwrap_or_else(|| "-".into()),
            st.last_ship_ok_at
                .map(local)
                .unwrap_or_else(|| "never".into()),
            st.failing_since
                .map(|f| format!(", failing since {}", local(f)))
                .unwrap_or_default(),
            if st.configured {
                ""
            } else {
                " (no longer configured)"
            }
        );
    }
}

/// Metrics with a `standby` label.
pub(super) fn render_prometheus(s: &Status, o: &mut String) {
    if s.standbys.is_empty() {
        return;
    }
    let site = super::esc(&s.site);
    let mut metric = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(o, "# HELP snapsite_{name} {help}");
        let _ = writeln!(o, "# TYPE snapsite_{name} gauge");
        for (standby, v) in samples {
            let _ = writeln!(
                o,
                "snapsite_{name}{{site=\"{site}\",standby=\"{}\"}} {v}",
                super::esc(&standby)
            );
        }
    };
    let ts = |t: Timestamp| t.as_millisecond() as f64 / 1000.0;
    let per = |f: &dyn Fn(&StandbyStatus) -> Option<f64>| {
        s.standbys
            .iter()
            .filter_map(|st| f(st).map(|v| (st.name.clone(), v)))
            .collect::<Vec<_>>()
    };
    metric(
        "standby_recovery_point_timestamp_seconds",
        "Per standby: redolog time of the newest set committed there",
        per(&|st| st.recovery_point.as_ref().map(|r| ts(r.time))),
    );
    metric(
        "standby_lag_seconds",
        "Per standby: how far its newest committed set trails this site's",
        per(&|st| st.lag_seconds),
    );
    metric(
        "standby_last_ship_ok_timestamp_seconds",
        "Per standby: end of the last ship that completed",
        per(&|st| st.last_ship_ok_at.map(ts)),
    );
    metric(
        "standby_failing_since_timestamp_seconds",
        "Per standby: start of the first of the ships failing now (absent: the last one completed)",
        per(&|st| st.failing_since.map(ts)),
    );
    metric(
        "standby_failing",
        "Per standby: 1 while its ships fail",
        per(&|st| Some(if st.failing_since.is_some() { 1.0 } else { 0.0 })),
    );
}
