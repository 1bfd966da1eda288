//! Streaming in `status` and the metrics: the follower's lag and record,
//! the standby's spool.

use crate::primary::follower::*;
use crate::standby::spool::*;
use crate::wire::redostream::*;

/// Streaming as `status` shows it: the primary's follower (lag) and the
/// standby's spool.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamStatus {
    /// Primary: seconds since the primary looked at the files for the last
    /// acknowledged batch (the stream's recovery point, primary's clock).
    pub lag_seconds: Option<f64>,
    /// Primary: bytes written to the followed files not yet acknowledged.
    pub lag_bytes: Option<u64>,
    pub follower: Option<FollowerRecord>,
    pub spool: Option<SpoolStatus>,
}

pub fn stream_status(cfg: &Config, now: Timestamp) -> Option<StreamStatus> {
    settings(cfg)?;
    let follower = follower_record(cfg);
    Some(StreamStatus {
        lag_seconds: follower
            .as_ref()
            .and_then(|f| f.acked_as_of)
            .map(|t| now.duration_since(t).as_secs_f64()),
        lag_bytes: follower.as_ref().map(|f| f.lag_bytes),
        follower,
        spool: spool_status(cfg),
    })
}

/// `status` lines.
pub fn render_status(s: &StreamStatus) -> String {
    let mut o = String::new();
    if let Some(f) = &s.follower {
        o.push_str(&format!(
            "stream        lag {} s, {} bytes; {} batches, {} bytes shipped, {} resets; {} sessions resumed, {} restarted{}\n",
            s.lag_seconds
                .map(|x| format!("{x:.1}"))
                .unwrap_or_else(|| "-".into()),
            f.lag_bytes,
            f.batches,
            f.bytes_shipped,
            f.resets,
            f.resumes,
            f.restarts,
            f.last_error
                .as_ref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ));
    } else if s.spool.is_none() {
        o.push_str("stream        enabled, nothing followed or spooled yet\n");
    }
    if let Some(sp) = &s.spool {
        o.push_str(&format!(
            "spool         {} events, {} bytes beyond the newest redolog snapshot, {} bytes on disk; last batch as of {} (primary's clock)\n",
            sp.events,
            sp.bytes,
            sp.disk_bytes,
            sp.last_as_of.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
        ));
        if let Some(b) = &sp.broken {
            o.push_str(&format!(
                "spool         NOT USABLE since set {}: {}\n",
                b.set_id, b.reason
            ));
        }
    }
    o
}

/// Metrics lines (`site` already escaped).
pub fn render_metrics(s: &StreamStatus, site: &str) -> String {
    let mut o = String::new();
    let mut m = |name: &str, help: &str, v: f64| {
        o.push_str(&format!(
            "# HELP snapsite_{name} {help}\n# TYPE snapsite_{name} gauge\nsnapsite_{name}{{site=\"{site}\"}} {v}\n"
        ));
    };
    if let Some(x) = s.lag_seconds {
        m(
            "stream_lag_seconds",
            "Seconds since the primary's files were last looked at for an acknowledged spool batch.",
            x,
        );
    }
    if let Some(x) = s.lag_bytes {
        m(
            "stream_lag_bytes",
            "Bytes of the followed redolog files not yet acknowledged by the standby.",
            x as f64,
        );
    }
    if let Some(sp) = &s.spool {
        m(
            "spool_bytes",
            "Bytes spooled on the standby beyond the newest redolog snapshot.",
            sp.bytes as f64,
        );
        m(
            "spool_usable",
            "1 if the spool matched the newest redolog snapshot.",
            if sp.broken.is_none() { 1.0 } else { 0.0 },
        );
    }
    if let Some(f) = &s.follower {
        for (name, help, v) in [
            (
                "stream_resumes_total",
                "Spool sessions that continued the standby's spool where it stood.",
                f.resumes,
            ),
            (
                "stream_restarts_total",
                "Times the spool started over from the primary's current files although the standby held one.",
                f.restarts,
            ),
        ] {
            o.push_str(&format!(
                "# HELP snapsite_{name} {help}\n# TYPE snapsite_{name} counter\nsnapsite_{name}{{site=\"{site}\"}} {v}\n"
            ));
        }
    }
    o
}

/// The standby's spool, for `status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpoolStatus {
    pub last_as_of: Option<Timestamp>,
    pub events: usize,
    pub bytes: u64,
    pub disk_bytes: u64,
    pub broken: Option<Broken>,
}

pub fn spool_status(cfg: &Config) -> Option<SpoolStatus> {
    settings(cfg)?;
    let dir = spool_dir(&Catalog::new(&cfg.state_dir));
    if !dir.join(JOURNAL).exists() {
        return None;
    }
    let sp = Spool::load(&dir, false).ok()?;
    Some(SpoolStatus {
        last_as_of: sp.last_as_of,
        events: sp.items.len(),
        bytes: sp.pending_bytes(),
        disk_bytes: sp.disk_bytes,
        broken: crate::base::catalog::read_json(&dir.join("broken.json")).ok(),
    })
}
