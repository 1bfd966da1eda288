//! A standby's ship window (`window = "22:00-06:00"`, issue 29): the hours
//! of the day, in the standby's time zone, in which `run` may *start* a
//! ship to it (a night window for a standby behind a link that is busy by
//! day). The wall clock is a display value here too: the window decides
//! only when a session starts, never which sets are complete or in what
//! order they go. `status` measures such a standby's lag in window time,
//! so the hours it is not allowed to ship do not make it "late".

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

/// Daily hours `from`..`to` (minutes since midnight; `to <= from` wraps
/// past midnight), in `tz`.
#[derive(Debug, Clone)]
pub struct ShipWindow {
    from: u16,
    to: u16,
    tz: TimeZone,
    /// As written (for messages and `check`).
    pub text: String,
}

impl PartialEq for ShipWindow {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

fn parse_hm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl ShipWindow {
    /// `"22:00-06:00"` (this host's time zone) or `"22:00-06:00
    /// Europe/Berlin"` (an IANA zone: the standby's).
    pub fn parse(s: &str) -> Result<ShipWindow, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let (hours, zone) = match words[..] {
            [h] => (h, None),
            [h, z] => (h, Some(z)),
            _ => {
                return Err(format!(
                    "`{}`: expected `HH:MM-HH:MM` with an optional IANA time zone, like \"22:00-06:00\" or \"22:00-06:00 Europe/Berlin\"",
                    s.escape_debug()
                ));
            }
        };
        let (from, to) = hours
            .split_once('-')
            .and_then(|(a, b)| Some((parse_hm(a)?, parse_hm(b)?)))
            .ok_or_else(|| {
                format!(
                    "`{}`: `{}` is not a time range like 22:00-06:00",
                    s.escape_debug(),
                    hours.escape_debug()
                )
            })?;
        if from % (24 * 60) == to % (24 * 60) {
            return Err(format!(
                "`{}`: the window is empty or the whole day; leave `window` out to ship at any hour",
                s.escape_debug()
            ));
        }
        let tz = match zone {
            None => TimeZone::system(),
            Some(z) => TimeZone::get(z).map_err(|e| {
                format!(
                    "`{}`: `{}` is not a known time zone ({e})",
                    s.escape_debug(),
                    z.escape_debug()
                )
            })?,
        };
        Ok(ShipWindow {
            from: from % (24 * 60),
            to: to % (24 * 60),
            tz,
            text: s.to_string(),
        })
    }

    /// The intervals of the window that begin on local day `d`.
    fn spans_of(&self, d: Date) -> Vec<(Timestamp, Timestamp)> {
        let at = |day: Date, min: u16| -> Option<Timestamp> {
            let (day, min) = if min >= 24 * 60 {
                (day.tomorrow().ok()?, min - 24 * 60)
            } else {
                (day, min)
            };
            let t = Time::new((min / 60) as i8, (min % 60) as i8, 0, 0).ok()?;
            self.tz
                .to_ambiguous_timestamp(DateTime::from_parts(day, t))
                .compatible()
                .ok()
        };
        let end = if self.to > self.from {
            self.to
        } else {
            self.to + 24 * 60
        };
        match (at(d, self.from), at(d, end)) {
            (Some(a), Some(b)) if a < b => vec![(a, b)],
            _ => Vec::new(),
        }
    }

    fn local_date(&self, t: Timestamp) -> Date {
        t.to_zoned(self.tz.clone()).date()
    }

    /// Whether a ship may start at `t`.
    pub fn contains(&self, t: Timestamp) -> bool {
        let d = self.local_date(t);
        [d.yesterday().ok(), Some(d)]
            .into_iter()
            .flatten()
            .flat_map(|d| self.spans_of(d))
            .any(|(a, b)| a <= t && t < b)
    }

    /// Seconds of window time in `[since, now]`: how long the standby
    /// could have been shipped to. Bounded to the last 400 days.
    pub fn open_seconds(&self, since: Timestamp, now: Timestamp) -> f64 {
        if since >= now {
            return 0.0;
        }
        let floor = now
            .checked_sub(jiff::SignedDuration::from_hours(400 * 24))
            .unwrap_or(since);
        let since = since.max(floor);
        let mut d = self
            .local_date(since)
            .yesterday()
            .unwrap_or(self.local_date(since));
        let last = self.local_date(now);
        let mut total = 0.0;
        while d <= last {
            for (a, b) in self.spans_of(d) {
                let (a, b) = (a.max(since), b.min(now));
                if a < b {
                    total += b.duration_since(a).as_secs_f64();
                }
            }
            match d.tomorrow() {
                Ok(n) => d = n,
                Err(_) => break,
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> ShipWindow {
        ShipWindow::parse(&format!("{s} UTC")).unwrap()
    }
    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_night_window_wraps_past_midnight() {
        let n = w("22:00-06:00");
        assert!(n.contains(t("2026-03-01T23:30:00Z")));
        assert!(n.contains(t("2026-03-02T05:59:59Z")));
        assert!(n.contains(t("2026-03-02T22:00:00Z")));
        assert!(!n.contains(t("2026-03-02T06:00:00Z")));
        assert!(!n.contains(t("2026-03-02T12:00:00Z")));
        let day = w("08:00-18:00");
        assert!(day.contains(t("2026-03-02T08:00:00Z")));
        assert!(!day.contains(t("2026-03-02T18:00:00Z")));
    }

    #[test]
    fn open_seconds_counts_only_window_time() {
        let n = w("22:00-06:00");
        // shipped at 05:30, asked at 21:00: half an hour of window since
        assert_eq!(
            n.open_seconds(t("2026-03-02T05:30:00Z"), t("2026-03-02T21:00:00Z")),
            1800.0
        );
        // asked at 23:00 the next night: + one hour
        assert_eq!(
            n.open_seconds(t("2026-03-02T05:30:00Z"), t("2026-03-02T23:00:00Z")),
            5400.0
        );
        // a whole day holds 8 hours of window
        assert_eq!(
            n.open_seconds(t("2026-03-01T12:00:00Z"), t("2026-03-02T12:00:00Z")),
            8.0 * 3600.0
        );
        assert_eq!(
            n.open_seconds(t("2026-03-02T12:00:00Z"), t("2026-03-01T12:00:00Z")),
            0.0
        );
    }

    #[test]
    fn a_zone_shifts_the_window() {
        // 22:00-06:00 in Berlin (UTC+1 in March before DST) is 21:00-05:00 UTC
        let b = ShipWindow::parse("22:00-06:00 Europe/Berlin").unwrap();
        assert!(b.contains(t("2026-03-02T21:30:00Z")));
        assert!(!b.contains(t("2026-03-02T05:30:00Z")));
    }

    #[test]
    fn bad_windows_say_what_is_expected() {
        for (s, want) in [
            ("22-06", "not a time range"),
            ("22:00-22:00", "empty or the whole day"),
            ("00:00-24:00", "empty or the whole day"),
            ("22:00-06:00 Mars/Olympus", "not a known time zone"),
            ("22:00 - 06:00", "expected `HH:MM-HH:MM`"),
            ("25:00-06:00", "not a time range"),
        ] {
            let e = ShipWindow::parse(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }
}
