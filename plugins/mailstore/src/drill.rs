//! The failover drill's verdict: what the writer had acknowledged on the
//! primary against what the standby holds after failover, judged by the
//! times in snapsite's failover report.
//!
//! The promise under test: every operation acknowledged before the recovery
//! point (the last shipped redolog snapshot's before-time) is back. An
//! acknowledged operation's log record was fsynced before it was
//! acknowledged, so if that happened before the redolog snapshot was taken,
//! the record is in the snapshot and replay must have brought it back.
//! Messages acknowledged later may be lost — that is the recovery point.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

/// One line of the writer's acknowledgement file.
#[derive(Debug, Clone, PartialEq)]
pub struct Ack {
    pub id: u64,
    pub seq: u64,
    pub logged_at: Timestamp,
    pub acked_at: Timestamp,
}

pub fn ack_line(a: &Ack) -> String {
    format!("{}\t{}\t{}\t{}\n", a.id, a.seq, a.logged_at, a.acked_at)
}

/// Read the acknowledgements; a torn last line (the writer was killed
/// mid-write) is not an acknowledgement.
pub fn read_acks(path: &Path) -> Result<Vec<Ack>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        let Some(line) = line.strip_suffix('\n') else {
            break;
        };
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (|| -> Option<Ack> {
            Some(Ack {
                id: f.first()?.parse().ok()?,
                seq: f.get(1)?.parse().ok()?,
                logged_at: f.get(2)?.parse().ok()?,
                acked_at: f.get(3)?.parse().ok()?,
            })
        })();
        out.push(parsed.with_context(|| format!("{}: bad line `{line}`", path.display()))?);
    }
    Ok(out)
}

#[derive(Debug, Serialize)]
pub struct Verdict {
    pub written: usize,
    pub recovered: usize,
    pub lost: usize,
    /// Acknowledged before the recovery point.
    pub before_recovery_point: usize,
    pub before_recovery_point_recovered: usize,
    /// Acknowledged at or after the recovery point: these may be lost.
    pub after_recovery_point: usize,
    pub after_recovery_point_lost: usize,
    /// Lost although acknowledged before the recovery point: must be 0.
    pub lost_older_than_recovery_point: Vec<u64>,
    /// Logged on the primary but killed before acknowledging; recovered anyway.
    pub in_flight_recovered: usize,
    /// The recovery point judged against: the stream's (redolog spool,
    /// snapsite issue 17) when the failover applied one, else the snapshot's.
    pub recovery_point: Timestamp,
    /// The last shipped redolog snapshot's time (snapshot-only recovery point).
    pub snapshot_recovery_point: Timestamp,
    /// Whether the failover appended a streamed redolog tail.
    pub streamed: bool,
    /// Last acknowledgement minus the recovery point: the window of
    /// acknowledged messages at risk (0 if nothing was acknowledged after it).
    pub window_seconds: f64,
    /// Last acknowledgement minus the first lost one's (0 if none was lost).
    pub lost_window_seconds: f64,
    pub from_time: Timestamp,
    pub set_id: String,
    pub redolog_set_id: String,
    pub replay_exit: Option<i64>,
    pub failover_seconds: Option<f64>,
    pub replay_seconds: Option<f64>,
    /// Longest log-to-acknowledge time; the safety margin must exceed it.
    pub max_op_seconds: f64,
    pub safety_margin_seconds: f64,
    pub stores_agree: bool,
    pub zero_loss: bool,
}

fn ts(v: &serde_json::Value, what: &str) -> Result<Timestamp> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("failover report: `{what}` is not a timestamp"))
}

/// `report` is `snapsite failover --json` output; `present` the message ids
/// the standby's verified stores hold; `command_at` when the failover
/// command was given.
pub fn judge(
    acks: &[Ack],
    report: &serde_json::Value,
    present: &BTreeSet<u64>,
    stores_agree: bool,
    command_at: Option<Timestamp>,
) -> Result<Verdict> {
    let snapshot_recovery_point = ts(&report["recovery_point"], "recovery_point")?;
    let stream_point = report["stream"]["recovery_point"]
        .as_str()
        .and_then(|s| s.parse::<Timestamp>().ok());
    let recovery_point = stream_point.unwrap_or(snapshot_recovery_point);
    let from_time = ts(&report["plan"]["from_time"], "plan.from_time")?;
    let finished = ts(&report["finished_at"], "finished_at")?;
    let set_members = report["plan"]["set_members"].as_array();
    let first_member = set_members
        .and_then(|m| m.first())
        .map(|m| ts(&m["before"], "plan.set_members[0].before"))
        .transpose()?;
    let safety_margin_seconds =
        first_member.map_or(0.0, |b| b.duration_since(from_time).as_secs_f64());
    let acked: BTreeSet<u64> = acks.iter().map(|a| a.id).collect();
    let lost: Vec<&Ack> = acks.iter().filter(|a| !present.contains(&a.id)).collect();
    let older: Vec<&Ack> = acks
        .iter()
        .filter(|a| a.acked_at < recovery_point)
        .collect();
    let lost_older: Vec<u64> = lost
        .iter()
        .filter(|a| a.acked_at < recovery_point)
        .map(|a| a.id)
        .collect();
    let replay_exit = report["replay"]["exit_code"].as_i64();
    let max_op_seconds = acks
        .iter()
        .map(|a| a.acked_at.duration_since(a.logged_at).as_secs_f64())
        .fold(0.0, f64::max);
    let zero_loss = lost_older.is_empty() && stores_agree && replay_exit == Some(0);
    let last_ack = acks.iter().map(|a| a.acked_at).max();
    let window_seconds = last_ack.map_or(0.0, |l| {
        l.duration_since(recovery_point).as_secs_f64().max(0.0)
    });
    let lost_window_seconds = match (last_ack, lost.iter().map(|a| a.acked_at).min()) {
        (Some(l), Some(f)) => l.duration_since(f).as_secs_f64().max(0.0),
        _ => 0.0,
    };
    Ok(Verdict {
        written: acks.len(),
        recovered: acks.len() - lost.len(),
        lost: lost.len(),
        before_recovery_point: older.len(),
        before_recovery_point_recovered: older.len() - lost_older.len(),
        after_recovery_point: acks.len() - older.len(),
        after_recovery_point_lost: lost.len() - lost_older.len(),
        lost_older_than_recovery_point: lost_older,
        in_flight_recovered: present.iter().filter(|id| !acked.contains(id)).count(),
        recovery_point,
        snapshot_recovery_point,
        streamed: stream_point.is_some(),
        window_seconds,
        lost_window_seconds,
        from_time,
        set_id: report["plan"]["set_id"].as_str().unwrap_or_default().into(),
        redolog_set_id: report["plan"]["redolog_set_id"]
            .as_str()
            .unwrap_or_default()
            .into(),
        replay_exit,
        failover_seconds: command_at.map(|c| finished.duration_since(c).as_secs_f64()),
        replay_seconds: report["replay"]["seconds"].as_f64(),
        max_op_seconds,
        safety_margin_seconds,
        stores_agree,
        zero_loss,
    })
}

pub fn local(t: Timestamp) -> String {
    t.to_zoned(TimeZone::system())
        .strftime("%H:%M:%S%.3f")
        .to_string()
}

pub fn render_verdict(v: &Verdict, acks: &[Ack]) -> String {
    let first_after = acks
        .iter()
        .filter(|a| a.acked_at >= v.recovery_point)
        .map(|a| a.acked_at)
        .min();
    let mut s = String::from("=== drill verdict ===\n");
    s.push_str(&format!(
        "messages written (acknowledged on the primary)  {}\n",
        v.written
    ));
    s.push_str(&format!(
        "messages recovered on the standby               {}{}\n",
        v.recovered,
        if v.in_flight_recovered > 0 {
            format!(
                " (+{} logged but not yet acknowledged when the primary died)",
                v.in_flight_recovered
            )
        } else {
            String::new()
        }
    ));
    s.push_str(&format!(
        "messages lost                                   {}\n",
        v.lost
    ));
    s.push_str(&format!(
        "recovery point                                  {} (redolog snapshot {})\n",
        local(v.recovery_point),
        v.redolog_set_id
    ));
    if v.streamed {
        s.push_str(&format!(
            "  (streamed redolog tail; the snapshot alone: {}, {:.1} s earlier)\n",
            local(v.snapshot_recovery_point),
            v.recovery_point
                .duration_since(v.snapshot_recovery_point)
                .as_secs_f64()
        ));
    }
    s.push_str(&format!(
        "  window at risk (last acknowledged - recovery point) {:.1} s; lost {:.1} s of acknowledged mail\n",
        v.window_seconds, v.lost_window_seconds
    ));
    s.push_str(&format!(
        "  acknowledged before it: {}, recovered {}\n",
        v.before_recovery_point, v.before_recovery_point_recovered
    ));
    s.push_str(&format!(
        "  acknowledged after it:  {}, recovered {}, lost {}{}\n",
        v.after_recovery_point,
        v.after_recovery_point - v.after_recovery_point_lost,
        v.after_recovery_point_lost,
        match first_after {
            Some(a) if v.after_recovery_point_lost > 0 => {
                format!(" (from {} on)", local(a))
            }
            _ => String::new(),
        }
    ));
    s.push_str(&format!(
        "replay from                                     {} (set {}), exit {}\n",
        local(v.from_time),
        v.set_id,
        v.replay_exit.map_or("-".into(), |c| c.to_string())
    ));
    if let Some(f) = v.failover_seconds {
        s.push_str(&format!(
            "failover time, command to replay finished       {f:.2} s{}\n",
            v.replay_seconds
                .map_or(String::new(), |r| format!(" (replay plugin {r:.2} s)"))
        ));
    }
    s.push_str(&format!(
        "longest operation (logged -> acknowledged)      {:.3} s (safety margin {:.1} s)\n",
        v.max_op_seconds, v.safety_margin_seconds
    ));
    s.push_str(&format!(
        "stores agree with each other and the redolog    {}\n",
        if v.stores_agree { "yes" } else { "NO" }
    ));
    if v.zero_loss {
        s.push_str(if v.streamed {
            "verdict: ZERO LOSS — every message acknowledged before the stream's recovery point (last acknowledged spool batch) is back"
        } else {
            "verdict: ZERO LOSS — every message acknowledged before the last shipped redolog snapshot is back"
        });
        if v.lost > 0 {
            s.push_str("; only messages younger than it were lost");
        }
        s.push('\n');
    } else {
        s.push_str("verdict: FAILED — ");
        let mut why = Vec::new();
        if !v.lost_older_than_recovery_point.is_empty() {
            why.push(format!(
                "{} message(s) older than the recovery point lost: {:?}",
                v.lost_older_than_recovery_point.len(),
                v.lost_older_than_recovery_point
                    .iter()
                    .take(10)
                    .collect::<Vec<_>>()
            ));
        }
        if !v.stores_agree {
            why.push("the stores disagree (see verify)".into());
        }
        if v.replay_exit != Some(0) {
            why.push(format!("replay exit {:?}", v.replay_exit));
        }
        s.push_str(&why.join("; "));
        s.push('\n');
    }
    s
}

/// The drill's timeline in the guide's style: `HH:MM:SS.mmm what`, local
/// time. `events`: lines `<RFC 3339>\t<text>` written by the drill;
/// `manifests`: `snapsite snapshot --json` outputs; `report`: the failover
/// report; `acks`: the writer's acknowledgements.
pub fn timeline(
    events: &Path,
    manifests: &Path,
    report: Option<&serde_json::Value>,
    acks: &[Ack],
) -> Result<String> {
    let mut lines: Vec<(Timestamp, String)> = Vec::new();
    if let Some(first) = acks.first() {
        lines.push((
            first.acked_at,
            format!("writer: message {} acknowledged (the first)", first.id),
        ));
    }
    if let Some(r) = report {
        let rp = ts(&r["recovery_point"], "recovery_point")?;
        lines.push((
            rp,
            format!(
                "  ^ recovery point: redolog snapshot {} (the last one on the standby)",
                r["plan"]["redolog_set_id"].as_str().unwrap_or("?")
            ),
        ));
        if let Some(last) = acks.iter().rfind(|a| a.acked_at < rp) {
            lines.push((
                last.acked_at,
                format!(
                    "writer: message {} acknowledged (the last before the recovery point)",
                    last.id
                ),
            ));
        }
        lines.push((
            ts(&r["finished_at"], "finished_at")?,
            format!(
                "standby: failover finished, replay exit {}",
                r["replay"]["exit_code"]
            ),
        ));
    }
    if let Some(last) = acks.last() {
        lines.push((
            last.acked_at,
            format!("writer: message {} acknowledged (the last)", last.id),
        ));
    }
    if let Ok(text) = std::fs::read_to_string(events) {
        for l in text.lines() {
            if let Some((t, what)) = l.split_once('\t')
                && let Ok(t) = t.parse::<Timestamp>()
            {
                lines.push((t, what.to_string()));
            }
        }
    }
    if manifests.is_dir() {
        for e in std::fs::read_dir(manifests)? {
            let p = e?.path();
            let Ok(m) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p)?) else {
                continue;
            };
            let kind = m["kind"].as_str().unwrap_or("?");
            for mem in m["members"].as_array().into_iter().flatten() {
                if let Ok(t) = ts(&mem["before"], "before") {
                    let role = mem["role"].as_str().unwrap_or("?");
                    let what = if kind == "full" {
                        format!("snapshot {role:<8} (full set)")
                    } else {
                        format!("snapshot {role:<8} (redolog snapshot)")
                    };
                    lines.push((t, what));
                }
            }
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    Ok(lines
        .into_iter()
        .map(|(t, w)| format!("{} {w}\n", local(t)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ack(id: u64, at: &str) -> Ack {
        Ack {
            id,
            seq: id,
            logged_at: t(at) - jiff::SignedDuration::from_millis(20),
            acked_at: t(at),
        }
    }

    fn report(rp: &str, exit: i64) -> serde_json::Value {
        serde_json::json!({
            "recovery_point": rp,
            "finished_at": "2026-11-27T08:36:10Z",
            "plan": {"from_time": "2026-11-27T07:59:55Z", "set_id": "S", "redolog_set_id": "R",
                     "set_members": [{"before": "2026-11-27T08:00:00Z"}]},
            "replay": {"exit_code": exit, "seconds": 2.5}
        })
    }

    #[test]
    fn losses_after_the_recovery_point_only_are_zero_loss() {
        let acks = vec![
            ack(1, "2026-11-27T08:10:00Z"),
            ack(2, "2026-11-27T08:29:59Z"),
            ack(3, "2026-11-27T08:30:01Z"),
            ack(4, "2026-11-27T08:34:00Z"),
        ];
        let present: BTreeSet<u64> = [1, 2, 3, 5].into();
        let v = judge(
            &acks,
            &report("2026-11-27T08:30:00Z", 0),
            &present,
            true,
            Some(t("2026-11-27T08:36:00Z")),
        )
        .unwrap();
        assert!(v.zero_loss);
        assert_eq!((v.written, v.recovered, v.lost), (4, 3, 1));
        assert_eq!(v.before_recovery_point, 2);
        assert_eq!(v.in_flight_recovered, 1);
        assert_eq!(v.failover_seconds, Some(10.0));
        assert_eq!(v.safety_margin_seconds, 5.0);
        let text = render_verdict(&v, &acks);
        assert!(text.contains("ZERO LOSS"), "{text}");
    }

    #[test]
    fn an_older_loss_or_disagreeing_stores_fail() {
        let acks = vec![
            ack(1, "2026-11-27T08:10:00Z"),
            ack(2, "2026-11-27T08:20:00Z"),
        ];
        let present: BTreeSet<u64> = [2].into();
        let v = judge(
            &acks,
            &report("2026-11-27T08:30:00Z", 0),
            &present,
            true,
            None,
        )
        .unwrap();
        assert!(!v.zero_loss);
        assert_eq!(v.lost_older_than_recovery_point, vec![1]);
        assert!(render_verdict(&v, &acks).contains("FAILED"));
        let all: BTreeSet<u64> = [1, 2].into();
        assert!(
            !judge(&acks, &report("2026-11-27T08:30:00Z", 0), &all, false, None)
                .unwrap()
                .zero_loss
        );
        assert!(
            !judge(&acks, &report("2026-11-27T08:30:00Z", 3), &all, true, None)
                .unwrap()
                .zero_loss
        );
    }

    #[test]
    fn acks_file_ignores_a_torn_last_line() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("acks");
        let a = ack(7, "2026-11-27T08:10:00Z");
        std::fs::write(&p, format!("{}8\t8\t2026-11", ack_line(&a))).unwrap();
        assert_eq!(read_acks(&p).unwrap(), vec![a]);
    }
}
