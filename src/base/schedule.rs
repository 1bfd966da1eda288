//! The scheduler of `snapsite run` as a pure planner: given what was done
//! last and the time now, what is due and when to wake up next. The real
//! loop (`run.rs`) only sleeps and executes; tests drive this with a fake
//! clock.
//!
//! Intervals are slots aligned to multiples of the interval since the Unix
//! epoch (UTC): with `1h` and `15m`, full sets at :00, redolog snapshots at
//! :15, :30 and :45 — the guide's timetable — and a restart within a slot
//! does not take the slot's set twice. A full set includes the redolog
//! volume, so it also fills the redolog slot. Every take is followed by a
//! ship; a failed ship is retried with exponential backoff (`retry_min`,
//! doubling up to `retry_max`) while snapshots go on being taken on time.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::base::config::Schedule;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    TakeFull,
    TakeRedolog,
    Ship,
}

/// What the loop remembers between cycles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunState {
    /// Start of the last full set taken or attempted.
    pub last_full: Option<Timestamp>,
    /// Start of the last redolog snapshot taken or attempted (full sets
    /// count: they include the redolog volume).
    pub last_redolog: Option<Timestamp>,
    /// Something may be unshipped (at start, after a take, after a failure).
    pub ship_pending: bool,
    /// Failed ships in a row.
    pub ship_failures: u32,
    pub last_ship_attempt: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// In execution order.
    pub steps: Vec<Step>,
    /// When something is due next (if nothing is due now).
    pub wake_at: Timestamp,
}

/// Start of the slot of length `every` containing `now`.
pub fn slot_start(now: Timestamp, every: Duration) -> Timestamp {
    let ms = every.as_millis().max(1) as i64;
    let t = now.as_millisecond();
    Timestamp::from_millisecond(t.div_euclid(ms) * ms).expect("in range")
}

fn next_slot(now: Timestamp, every: Duration) -> Timestamp {
    slot_start(now, every) + SignedDuration::try_from(every).expect("sane interval")
}

/// Delay before retry number `failures` (1 = the first retry).
pub fn backoff(s: &Schedule, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (failures - 1).min(20);
    s.retry_min.saturating_mul(factor).min(s.retry_max)
}

fn due(last: Option<Timestamp>, now: Timestamp, every: Duration) -> bool {
    last.is_none_or(|t| t < slot_start(now, every))
}

pub fn plan(s: &Schedule, st: &RunState, now: Timestamp) -> Plan {
    let mut steps = Vec::new();
    let full_due = due(st.last_full, now, s.full_set_interval);
    if full_due {
        steps.push(Step::TakeFull);
    } else if let Some(every) = s.redolog_interval {
        let last = st.last_redolog.max(st.last_full);
        if due(last, now, every) {
            steps.push(Step::TakeRedolog);
        }
    }
    let retry_at = st
        .last_ship_attempt
        .map(|t| t + SignedDuration::try_from(backoff(s, st.ship_failures)).expect("sane"));
    let retry_due = st.ship_pending && retry_at.is_none_or(|r| r <= now);
    // A new snapshot is shipped at once, even during backoff: the standby
    // may be back, and the new snapshot is what narrows the recovery point.
    if !steps.is_empty() || retry_due {
        steps.push(Step::Ship);
    }
    let mut wake_at = next_slot(now, s.full_set_interval);
    if let Some(every) = s.redolog_interval {
        wake_at = wake_at.min(next_slot(now, every));
    }
    if st.ship_pending {
        if let Some(r) = retry_at.filter(|r| *r > now) {
            wake_at = wake_at.min(r);
        }
    }
    Plan { steps, wake_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(full: u64, redo: Option<u64>) -> Schedule {
        Schedule {
            full_set_interval: Duration::from_secs(full),
            redolog_interval: redo.map(Duration::from_secs),
            retry_min: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A fake clock: run the planner and "execute" steps, recording what was
    /// taken when; ships fail while `standby_down(now)`.
    fn simulate(
        s: &Schedule,
        start: Timestamp,
        end: Timestamp,
        standby_down: impl Fn(Timestamp) -> bool,
    ) -> (Vec<(Timestamp, Step)>, RunState) {
        let mut st = RunState {
            ship_pending: true,
            ..Default::default()
        };
        let mut now = start;
        let mut log = Vec::new();
        let mut guard = 0;
        while now < end {
            guard += 1;
            assert!(guard < 100_000, "planner does not advance");
            let p = plan(s, &st, now);
            if p.steps.is_empty() {
                assert!(p.wake_at > now, "wake_at {} not after now {now}", p.wake_at);
                now = p.wake_at;
                continue;
            }
            for step in p.steps {
                log.push((now, step));
                match step {
                    Step::TakeFull => {
                        st.last_full = Some(now);
                        st.ship_pending = true;
                    }
                    Step::TakeRedolog => {
                        st.last_redolog = Some(now);
                        st.ship_pending = true;
                    }
                    Step::Ship => {
                        st.last_ship_attempt = Some(now);
                        if standby_down(now) {
                            st.ship_failures += 1;
                        } else {
                            st.ship_failures = 0;
                            st.ship_pending = false;
                        }
                    }
                }
            }
            // each cycle takes a second of work
            now += SignedDuration::from_secs(1);
        }
        (log, st)
    }

    fn count(log: &[(Timestamp, Step)], step: Step) -> usize {
        log.iter().filter(|(_, s)| *s == step).count()
    }

    #[test]
    fn guide_timetable_hourly_full_and_quarter_hour_redolog() {
        let s = sched(3600, Some(900));
        let (log, _) = simulate(
            &s,
            at("2026-11-27T08:00:00Z"),
            at("2026-11-27T10:59:59Z"),
            |_| false,
        );
        let takes: Vec<String> = log
            .iter()
            .filter(|(_, s)| *s != Step::Ship)
            .map(|(t, s)| format!("{} {s:?}", t.strftime("%H:%M:%S")))
            .collect();
        assert_eq!(
            takes,
            [
                "08:00:00 TakeFull",
                "08:15:00 TakeRedolog",
                "08:30:00 TakeRedolog",
                "08:45:00 TakeRedolog",
                "09:00:00 TakeFull",
                "09:15:00 TakeRedolog",
                "09:30:00 TakeRedolog",
                "09:45:00 TakeRedolog",
                "10:00:00 TakeFull",
                "10:15:00 TakeRedolog",
                "10:30:00 TakeRedolog",
                "10:45:00 TakeRedolog",
            ]
        );
        // every take is followed by a ship
        assert_eq!(count(&log, Step::Ship), 12);
    }

    #[test]
    fn starting_mid_slot_takes_a_full_set_at_once_then_aligns() {
        let s = sched(3600, Some(900));
        let p = plan(&s, &RunState::default(), at("2026-11-27T08:07:13Z"));
        assert_eq!(p.steps, [Step::TakeFull, Step::Ship]);
        let st = RunState {
            last_full: Some(at("2026-11-27T08:07:13Z")),
            ..Default::default()
        };
        let p = plan(&s, &st, at("2026-11-27T08:07:14Z"));
        assert!(p.steps.is_empty());
        assert_eq!(p.wake_at, at("2026-11-27T08:15:00Z"));
    }

    #[test]
    fn restart_within_a_slot_does_not_repeat_it() {
        let s = sched(3600, Some(900));
        // run restarted at 08:20; the catalog says full at 08:00, redolog at 08:15
        let st = RunState {
            last_full: Some(at("2026-11-27T08:00:00.5Z")),
            last_redolog: Some(at("2026-11-27T08:15:00.2Z")),
            ship_pending: true,
            ..Default::default()
        };
        let p = plan(&s, &st, at("2026-11-27T08:20:00Z"));
        assert_eq!(p.steps, [Step::Ship], "only ship what may be unshipped");
        let st = RunState {
            ship_pending: false,
            ..st
        };
        let p = plan(&s, &st, at("2026-11-27T08:20:00Z"));
        assert!(p.steps.is_empty());
        assert_eq!(p.wake_at, at("2026-11-27T08:30:00Z"));
    }

    #[test]
    fn without_redolog_interval_only_full_sets() {
        let s = sched(1800, None);
        let (log, _) = simulate(
            &s,
            at("2026-11-27T08:00:00Z"),
            at("2026-11-27T09:59:00Z"),
            |_| false,
        );
        assert_eq!(count(&log, Step::TakeFull), 4);
        assert_eq!(count(&log, Step::TakeRedolog), 0);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = sched(3600, Some(900));
        let b: Vec<u64> = (0..8).map(|n| backoff(&s, n).as_secs()).collect();
        assert_eq!(b, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(&s, 1000).as_secs(), 300);
    }

    #[test]
    fn standby_down_retries_with_backoff_and_keeps_taking() {
        let s = sched(3600, Some(900));
        let start = at("2026-11-27T08:00:00Z");
        let back = at("2026-11-27T08:40:00Z");
        let (log, st) = simulate(&s, start, at("2026-11-27T08:59:00Z"), |t| t < back);
        // snapshots were taken on time regardless
        assert_eq!(count(&log, Step::TakeFull), 1);
        assert_eq!(count(&log, Step::TakeRedolog), 3);
        let ships: Vec<Timestamp> = log
            .iter()
            .filter(|(_, s)| *s == Step::Ship)
            .map(|(t, _)| *t)
            .collect();
        // retries are spaced further and further apart, never beyond retry_max
        // (plus a ship right after each take)
        let gaps: Vec<i64> = ships
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_secs())
            .collect();
        assert!(gaps.iter().all(|g| *g <= 300 + 1), "{gaps:?}");
        assert!(gaps[..4].windows(2).all(|w| w[1] > w[0]), "{gaps:?}");
        // after the standby is back, the next retry succeeds and all is shipped
        assert!(!st.ship_pending, "{st:?}");
        assert_eq!(st.ship_failures, 0);
        let first_ok = ships.iter().find(|t| **t >= back).unwrap();
        assert!(first_ok.duration_since(back).as_secs() <= 300);
        // and nothing was shipped more often than every retry_min
        assert!(ships.len() < 40, "{}", ships.len());
    }

    #[test]
    fn short_intervals_of_the_real_run_test() {
        // the integration test's schedule: 20 s full sets, 5 s redologs, 60 s
        let s = sched(20, Some(5));
        let start = at("2026-11-27T08:00:02Z");
        let (log, _) = simulate(&s, start, start + SignedDuration::from_secs(60), |_| false);
        assert_eq!(count(&log, Step::TakeFull), 4, "{log:?}"); // :02 (start), :20, :40, :00
        assert_eq!(count(&log, Step::TakeRedolog), 9, "{log:?}");
    }
}
