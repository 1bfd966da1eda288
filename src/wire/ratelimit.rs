//! The bandwidth limit on the sender: `[standby] bwlimit = "20MiB/s"`,
//! optionally `bwlimit_schedule = ["Mon-Fri 08:00-18:00 5MiB/s"]` (local
//! time of the primary; the first matching window wins, outside every window
//! `bwlimit` applies). A token bucket counts the bytes that go on the wire —
//! after compression, frame headers included — so the link, not the
//! payload, is what the limit holds. Progress and ETA follow from it: they
//! measure the rate the transfer actually gets.

use std::time::{Duration, Instant};

/// A rate in bytes per second: `"20MiB/s"`, `"500KiB/s"`, `"100Mbit/s"`
/// (`kbit`, `Mbit`, `Gbit`: decimal bits), `"none"` for no limit (`None`).
pub fn parse_rate(s: &str) -> std::result::Result<Option<u64>, String> {
    let t = s.trim();
    if t == "none" || t == "unlimited" {
        return Ok(None);
    }
    let body = t
        .strip_suffix("/s")
        .ok_or_else(|| format!("`{s}`: a rate ends in `/s`, like \"20MiB/s\" or \"100Mbit/s\""))?;
    let bits = [
        ("kbit", 1_000u64),
        ("Mbit", 1_000_000),
        ("Gbit", 1_000_000_000),
    ];
    for (unit, mul) in bits {
        if let Some(n) = body.strip_suffix(unit) {
            let n: u64 = n
                .trim()
                .parse()
                .map_err(|_| format!("`{s}`: `{}` is not a number", n.trim()))?;
            let r = n
                .checked_mul(mul)
                .ok_or_else(|| format!("`{s}` is too large"))?
                / 8;
            if r == 0 {
                return Err(format!("`{s}`: the rate must be more than zero"));
            }
            return Ok(Some(r));
        }
    }
    let split = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a rate like \"20MiB/s\" or \"100Mbit/s\""))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}` (B, KiB, MiB, GiB per second, or kbit, Mbit, Gbit)"
            ));
        }
    };
    match n.checked_mul(1u64 << shift) {
        Some(0) => Err(format!("`{s}`: the rate must be more than zero")),
        Some(r) => Ok(Some(r)),
        None => Err(format!("`{s}` is too large")),
    }
}

/// One window of the schedule.
#[derive(Debug, Clone, PartialEq)]
struct Window {
    /// Monday = 0.
    days: [bool; 7],
    /// Minutes since midnight, `from < to`.
    from: u16,
    to: u16,
    rate: Option<u64>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn parse_day(d: &str) -> Option<usize> {
    let d = d.to_ascii_lowercase();
    DAYS.iter()
        .position(|x| d.len() >= 3 && x.starts_with(&d[..3]))
}

fn parse_hm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
}

impl Window {
    /// `"Mon-Fri 08:00-18:00 5MiB/s"`, `"Sat,Sun 00:00-24:00 none"`,
    /// `"* 22:00-24:00 100MiB/s"`.
    fn parse(s: &str) -> std::result::Result<Window, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let [days, hours, rate] = words[..] else {
            return Err(format!(
                "`{s}`: expected `DAYS HH:MM-HH:MM RATE`, like \"Mon-Fri 08:00-18:00 5MiB/s\""
            ));
        };
        let mut set = [false; 7];
        if days == "*" {
            set = [true; 7];
        } else {
            for part in days.split(',') {
                let bad = || {
                    format!("`{s}`: `{part}` is not a day or range of days (Mon-Fri, Sat,Sun, *)")
                };
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (parse_day(a).ok_or_else(bad)?, parse_day(b).ok_or_else(bad)?);
                        let mut d = a;
                        loop {
                            set[d] = true;
                            if d == b {
                                break;
                            }
                            d = (d + 1) % 7;
                        }
                    }
                    None => set[parse_day(part).ok_or_else(bad)?] = true,
                }
            }
        }
        let (from, to) = hours
            .split_once('-')
            .and_then(|(a, b)| Some((parse_hm(a)?, parse_hm(b)?)))
            .ok_or_else(|| format!("`{s}`: `{hours}` is not a time range like 08:00-18:00"))?;
        if from >= to {
            return Err(format!(
                "`{s}`: the window must end after it starts (split one across midnight in two: 22:00-24:00 and 00:00-06:00)"
            ));
        }
        Ok(Window {
            days: set,
            from,
            to,
            rate: parse_rate(rate).map_err(|e| format!("`{s}`: {e}"))?,
        })
    }
}

/// The configured limit: a default and an optional weekly schedule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bwlimit {
    default: Option<u64>,
    schedule: Vec<Window>,
}

impl Bwlimit {
    /// Errors name the entry; the caller adds the config key.
    pub fn parse(
        limit: Option<&str>,
        schedule: &[String],
    ) -> std::result::Result<Bwlimit, (usize, String)> {
        let default = match limit {
            Some(l) => parse_rate(l).map_err(|e| (usize::MAX, e))?,
            None => None,
        };
        let schedule = schedule
            .iter()
            .enumerate()
            .map(|(i, w)| Window::parse(w).map_err(|e| (i, e)))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Bwlimit { default, schedule })
    }

    pub fn unlimited() -> Bwlimit {
        Bwlimit::default()
    }

    /// The rate outside every window (`None`: unlimited).
    pub fn default_rate(&self) -> Option<u64> {
        self.default
    }

    /// How many windows `bwlimit_schedule` has.
    pub fn window_count(&self) -> usize {
        self.schedule.len()
    }

    pub fn is_unlimited(&self) -> bool {
        self.default.is_none() && self.schedule.iter().all(|w| w.rate.is_none())
    }

    /// The rate at a local time (`None`: unlimited).
    pub fn rate_at(&self, t: &jiff::civil::DateTime) -> Option<u64> {
        let day = t.weekday().to_monday_zero_offset() as usize;
        let min = t.hour() as u16 * 60 + t.minute() as u16;
        self.schedule
            .iter()
            .find(|w| w.days[day] && w.from <= min && min < w.to)
            .map_or(self.default, |w| w.rate)
    }

    /// The rate now, in this host's time zone.
    pub fn rate_now(&self) -> Option<u64> {
        if self.schedule.is_empty() {
            return self.default;
        }
        self.rate_at(&jiff::Zoned::now().datetime())
    }
}

/// A token bucket over the bytes written; sleeps when they run ahead of the
/// rate. The rate is re-read from the schedule every few seconds.
pub struct TokenBucket {
    limit: Bwlimit,
    rate: Option<u64>,
    /// May go negative: a frame larger than the burst is let through and
    /// paid for by waiting afterwards, so the average holds exactly.
    tokens: f64,
    last: Instant,
    rate_checked: Instant,
    /// Time spent waiting (reported with the transfer).
    pub waited: Duration,
}

/// How often a schedule is looked at during a transfer.
const RECHECK: Duration = Duration::from_secs(5);

impl TokenBucket {
    pub fn new(limit: Bwlimit) -> TokenBucket {
        let rate = limit.rate_now();
        TokenBucket {
            limit,
            rate,
            tokens: 0.0,
            last: Instant::now(),
            rate_checked: Instant::now(),
            waited: Duration::ZERO,
        }
    }

    pub fn rate(&self) -> Option<u64> {
        self.rate
    }

    fn burst(rate: u64) -> f64 {
        // 50 ms worth, at least 64 KiB: smooth on the wire, cheap in syscalls.
        (rate as f64 / 20.0).max(65536.0)
    }

    /// Account for `n` bytes about to be written; sleep as needed.
    pub fn take(&mut self, n: usize) {
        if self.rate_checked.elapsed() >= RECHECK {
            self.rate_checked = Instant::now();
            self.rate = self.limit.rate_now();
        }
        let Some(rate) = self.rate else {
            self.last = Instant::now();
            return;
        };
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate as f64).min(Self::burst(rate));
        self.tokens -= n as f64;
        if self.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-self.tokens / rate as f64);
            std::thread::sleep(wait);
            self.waited += wait;
            // The deficit is paid at `now + wait`. A sleep that ran late
            // (a loaded host) is credited at the next take, up to the
            // burst, instead of being lost: the average holds under load.
            self.tokens = 0.0;
            self.last = now + wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("20MiB/s"), Ok(Some(20 << 20)));
        assert_eq!(parse_rate("100Mbit/s"), Ok(Some(12_500_000)));
        assert_eq!(parse_rate("none"), Ok(None));
        for bad in ["20MiB", "fast/s", "0MiB/s", "0Mbit/s", "x Mbit/s", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    fn at(s: &str) -> jiff::civil::DateTime {
        s.parse().unwrap()
    }

    #[test]
    fn the_schedule_picks_the_first_window_then_the_default() {
        let l = Bwlimit::parse(
            Some("50MiB/s"),
            &[
                "Mon-Fri 08:00-18:00 5MiB/s".into(),
                "Sat,Sun 00:00-24:00 none".into(),
                "Fri-Mon 07:00-09:00 1MiB/s".into(),
            ],
        )
        .unwrap();
        // 2026-11-30 is a Monday.
        assert_eq!(l.rate_at(&at("2026-11-30T09:00")), Some(5 << 20));
        assert_eq!(l.rate_at(&at("2026-11-30T07:30")), Some(1 << 20));
        assert_eq!(l.rate_at(&at("2026-11-30T18:00")), Some(50 << 20));
        assert_eq!(l.rate_at(&at("2026-12-05T12:00")), None); // Saturday
        assert_eq!(l.rate_at(&at("2026-12-04T17:59")), Some(5 << 20)); // Friday
        assert!(!l.is_unlimited());
        assert!(Bwlimit::unlimited().is_unlimited());
    }

    #[test]
    fn schedule_errors_name_the_entry() {
        for (bad, want) in [
            ("Mon-Fri 18:00-08:00 5MiB/s", "across midnight"),
            ("Mon-Fri 08:00-18:00", "expected `DAYS"),
            ("Mo-Xy 08:00-18:00 5MiB/s", "not a day"),
            ("* 8-18 5MiB/s", "time range"),
            ("* 08:00-25:00 5MiB/s", "time range"),
            ("* 08:00-18:00 5MiB", "ends in `/s`"),
        ] {
            let (i, e) =
                Bwlimit::parse(None, &["* 00:00-01:00 1MiB/s".into(), bad.into()]).unwrap_err();
            assert_eq!(i, 1);
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn the_bucket_holds_the_rate() {
        let rate = 4u64 << 20;
        let mut b = TokenBucket::new(Bwlimit::parse(Some("4MiB/s"), &[]).unwrap());
        let t = Instant::now();
        let total = 2 * rate as usize; // two seconds' worth in 64 KiB writes
        for _ in 0..total / 65536 {
            b.take(65536);
        }
        let secs = t.elapsed().as_secs_f64();
        let got = total as f64 / secs;
        // Never faster than the limit; slower only by scheduling delays
        // (the precise figure is scripts/bench-wan's, on a shaped link).
        assert!(
            got <= rate as f64 * 1.02,
            "{got:.0} B/s for a limit of {rate}"
        );
        assert!(
            got >= rate as f64 * 0.5,
            "{got:.0} B/s for a limit of {rate}"
        );
    }
}
