//! The retention grid, zrepl style: `1x1h(keep=all) | 24x1h | 30x1d | 11x30d`.
//!
//! Pure: it parses the grid and answers which of a list of times it does not
//! keep. It knows nothing of sets, snapshots or storage — `config` parses a
//! `Grid` into the schema and `prune` applies it; this module imports nothing
//! of snapsite (std, jiff and humantime only), so the schema does not depend
//! on the code that destroys snapshots.
//!
//! # The rule (exactly)
//!
//! Given the times of the sets of one kind (`grid_destroy`):
//!
//! 1. **Anchor.** `Y` is the youngest time. The youngest set is always kept.
//!    A set's *age* is `Y - t`. The grid never looks at the clock: a site
//!    that stops receiving sets keeps its history.
//! 2. **Tiers.** The intervals are laid end to end into the past: interval
//!    `i` (`COUNTxLEN`) is the tier of ages `[S_i, S_i + COUNT×LEN)`, with
//!    `S_0 = 0` and `S_{i+1}` the end of tier `i`. An age exactly on a
//!    boundary belongs to the older tier. A set older than the last tier is
//!    destroyed.
//! 3. **Buckets are fixed in time, not in age.** In tier `i` a set at `t`
//!    falls in bucket `floor(t / LEN)`, counted from the Unix epoch (UTC):
//!    `1h` buckets are UTC clock hours, `1d` buckets are UTC days of exactly
//!    86 400 s (a day is a fixed 24 h duration, never a calendar day: DST
//!    does not exist for the grid, and in Europe/Vienna a `1d` bucket runs
//!    from 01:00 CET / 02:00 CEST), `30d` buckets are 30-day blocks from
//!    1970-01-01 (not months). A bucket is half-open: a set at exactly
//!    11:00:00.000 is in the 11:00 bucket, one at 10:59:59.999 in the 10:00
//!    bucket.
//! 4. **The oldest stay.** Within one tier and one bucket, `keep=N` keeps the
//!    `N` oldest sets there (default 1; equal times: the earlier listed),
//!    `keep=all` keeps all of them; the rest are destroyed.
//!
//! Why this makes sets age through the tiers: a set kept in its bucket stays
//! the oldest there while it is in the tier (later sets are younger, and
//! nothing older can enter a bucket), so one prune never undoes another
//! (pruning the survivors again destroys nothing), and when it crosses into
//! the next tier it is, if the longer buckets are multiples of the shorter
//! ones (`1h`, `1d`, `7d`, `30d`), also the oldest of its longer bucket:
//! the first set of every UTC day that survived the hourly tier becomes that
//! day's set, the first of every 30-day block that block's. So every bucket
//! lying wholly inside a tier that ever received a set holds one (`keep=N`:
//! `N`, or as many as it received), however often or rarely prune runs.
//! The scheduler takes sets just after the starts of slots aligned the same
//! way (`schedule.rs`), so the lateness of a set (milliseconds to minutes)
//! never moves it into another bucket; a set taken early by hand lands in
//! the previous bucket, where the older set is the one kept. Lengths that do
//! not divide each other still work, but a longer bucket then holds the
//! oldest of the sets the shorter tier left in it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// How many snapshots one bucket keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    All,
    /// The N oldest sets of each bucket.
    Oldest(u32),
}

/// `COUNTxLENGTH(keep=K)`: a tier COUNT×LENGTH long of buckets LENGTH long,
/// each keeping its oldest K sets (default 1); see the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub count: u32,
    pub length: Duration,
    pub keep: Keep,
    /// The length as written (`1h`), for display.
    pub length_text: String,
}

/// A retention grid: tiers laid end to end into the past, starting at the
/// youngest set. Sets older than the whole grid are destroyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub intervals: Vec<Interval>,
}

impl Grid {
    pub fn parse(text: &str) -> std::result::Result<Grid, String> {
        let mut intervals = Vec::new();
        for part in text.split('|') {
            let part = part.trim();
            let bad = |why: &str| {
                format!(
                    "`{part}`: {why} (expected e.g. `1x1h(keep=all) | 24x1h | 30x1d | 11x30d`: COUNTxLENGTH, optional (keep=N|all))"
                )
            };
            if part.is_empty() {
                return Err(bad("empty interval"));
            }
            let (head, keep) = match part.split_once('(') {
                None => (part, Keep::Oldest(1)),
                Some((h, rest)) => {
                    let inner = rest.strip_suffix(')').ok_or_else(|| bad("missing `)`"))?;
                    let v = inner
                        .trim()
                        .strip_prefix("keep")
                        .map(str::trim_start)
                        .and_then(|s| s.strip_prefix('='))
                        .map(str::trim)
                        .ok_or_else(|| bad("only `(keep=N)` or `(keep=all)` is understood"))?;
                    let keep = if v == "all" {
                        Keep::All
                    } else {
                        match v.parse::<u32>() {
                            Ok(n) if n > 0 => Keep::Oldest(n),
                            _ => return Err(bad("keep must be `all` or a positive number")),
                        }
                    };
                    (h.trim(), keep)
                }
            };
            let (count, length_text) = head
                .split_once('x')
                .ok_or_else(|| bad("missing `x` between count and length"))?;
            let count: u32 = match count.trim().parse() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad("the count must be a positive number")),
            };
            let length_text = length_text.trim().to_string();
            let length = humantime::parse_duration(&length_text)
                .map_err(|e| bad(&format!("length `{length_text}`: {e}")))?;
            if length.is_zero() {
                return Err(bad("the length must not be zero"));
            }
            intervals.push(Interval {
                count,
                length,
                keep,
                length_text,
            });
        }
        Ok(Grid { intervals })
    }

    /// The tiers, youngest first.
    fn tiers(&self) -> Vec<Tier> {
        let mut out = Vec::new();
        let mut start = Duration::ZERO;
        for i in &self.intervals {
            let end = start.saturating_add(i.length.saturating_mul(i.count));
            out.push(Tier {
                start,
                end,
                length: i.length,
                count: i.count,
                keep: i.keep,
            });
            start = end;
        }
        out
    }

    /// How far back the grid reaches from the youngest set.
    pub fn span(&self) -> Duration {
        self.tiers().last().map(|t| t.end).unwrap_or_default()
    }

    /// Where the tiers do not nest (a longer length that is not a multiple
    /// of the one before it), sets may not age through as the module doc
    /// says: one note per such pair, for `check`.
    pub fn nesting_notes(&self) -> Vec<String> {
        self.intervals
            .windows(2)
            .filter(|w| w[1].length.as_nanos() % w[0].length.as_nanos().max(1) != 0)
            .map(|w| {
                format!(
                    "`{}` is not a multiple of `{}`: a `{}` bucket keeps the oldest set the `{}` tier left in it, which need not be its first",
                    w[1].length_text, w[0].length_text, w[1].length_text, w[0].length_text
                )
            })
            .collect()
    }

    /// At most how many sets the grid keeps of a history with at most one
    /// set per `cadence`-long slot (sets taken on a schedule): per tier the
    /// fewer of what its buckets keep (a tier COUNT buckets long overlaps at
    /// most COUNT+1 of them) and how many slots it overlaps (plus one: a
    /// set shipped late may be committed in the next slot), plus the
    /// youngest set, which is always kept.
    pub fn max_kept(&self, cadence: Duration) -> u64 {
        let c = cadence.as_nanos().max(1);
        let mut total: u64 = 1;
        for t in self.tiers() {
            let fit = u64::try_from((t.end - t.start).as_nanos().div_ceil(c))
                .unwrap_or(u64::MAX / 4)
                .saturating_add(2);
            let n = match t.keep {
                Keep::All => fit,
                Keep::Oldest(k) => fit.min((u64::from(t.count) + 1).saturating_mul(u64::from(k))),
            };
            total = total.saturating_add(n);
        }
        total
    }
}

/// One interval of a grid placed in ages: `[start, end)`.
#[derive(Debug, Clone, Copy)]
struct Tier {
    start: Duration,
    end: Duration,
    length: Duration,
    count: u32,
    keep: Keep,
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .intervals
            .iter()
            .map(|i| {
                let keep = match i.keep {
                    Keep::All => "(keep=all)".to_string(),
                    Keep::Oldest(1) => String::new(),
                    Keep::Oldest(n) => format!("(keep={n})"),
                };
                format!("{}x{}{keep}", i.count, i.length_text)
            })
            .collect();
        write!(f, "{}", parts.join(" | "))
    }
}

/// The grid as a pure keep rule (the module doc): returns the indexes of
/// `times` to destroy. The youngest time is the anchor and is kept; in each
/// tier, each bucket fixed in UTC time keeps its oldest sets; anything
/// older than the grid is destroyed.
pub fn grid_destroy(grid: &Grid, times: &[Timestamp]) -> BTreeSet<usize> {
    let mut destroy = BTreeSet::new();
    let Some(youngest) = times.iter().max().copied() else {
        return destroy;
    };
    let anchor = times
        .iter()
        .position(|t| *t == youngest)
        .expect("the max is in the list");
    let tiers = grid.tiers();
    // (tier, bucket) -> members
    let mut in_bucket: BTreeMap<(usize, i128), Vec<usize>> = BTreeMap::new();
    for (i, t) in times.iter().enumerate() {
        if i == anchor {
            continue;
        }
        let age = youngest.duration_since(*t).unsigned_abs();
        match tiers.iter().position(|x| age >= x.start && age < x.end) {
            Some(tier) => {
                let len = tiers[tier].length.as_nanos().max(1) as i128;
                let bucket = t.as_nanosecond().div_euclid(len);
                in_bucket.entry((tier, bucket)).or_default().push(i);
            }
            None => {
                destroy.insert(i);
            }
        }
    }
    for ((tier, _), members) in in_bucket.iter_mut() {
        let keep = match tiers[*tier].keep {
            Keep::All => continue,
            Keep::Oldest(n) => n as usize,
        };
        // Oldest first; ties broken by index so the result is deterministic.
        members.sort_by(|a, b| times[*a].cmp(&times[*b]).then(a.cmp(b)));
        destroy.extend(members.iter().skip(keep).copied());
    }
    destroy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn grid_parses_and_prints() {
        let g = Grid::parse("1x1h(keep=all) | 24x1h | 14x1d").unwrap();
        assert_eq!(g.intervals.len(), 3);
        assert_eq!(g.intervals[0].keep, Keep::All);
        assert_eq!(g.intervals[1].count, 24);
        assert_eq!(g.intervals[2].length, Duration::from_secs(86400));
        assert_eq!(g.to_string(), "1x1h(keep=all) | 24x1h | 14x1d");
        assert_eq!(g.span(), Duration::from_secs(3600 + 24 * 3600 + 14 * 86400));
        let g = Grid::parse("2x15m(keep=3)|1x1w").unwrap();
        assert_eq!(g.to_string(), "2x15m(keep=3) | 1x1w");
        for bad in [
            "",
            "1h",
            "0x1h",
            "1x0s",
            "1xsoon",
            "1x1h(keep=0)",
            "1x1h(keep=2",
            "1x1h(hold=2)",
            "1x1h ||",
        ] {
            assert!(Grid::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// Table tests: (grid, snapshot times relative to the youngest in
    /// minutes ago, indexes destroyed). The youngest is 12:00 UTC, so the
    /// hour buckets start at the full hours.
    #[test]
    fn grid_table() {
        let base = t("2026-11-27T12:00:00Z");
        let cases: &[(&str, &[i64], &[usize])] = &[
            // keep=all keeps everything inside the interval
            ("1x1h(keep=all)", &[0, 10, 59], &[]),
            // ... and nothing beyond the grid
            ("1x1h(keep=all)", &[0, 60, 120], &[1, 2]),
            // keep=1 per bucket: the oldest in each UTC hour (11:30 alone;
            // 10:59, 10:30, 10:01 -> 10:01; 09:30 alone)
            ("3x1h", &[0, 30, 61, 90, 119, 150], &[2, 3]),
            // keep=2: the two oldest of 11:50, 11:40, 11:30
            ("1x1h(keep=2)", &[0, 10, 20, 30], &[1]),
            // an empty bucket in between changes nothing; 08:40 and 08:10
            // share a bucket: the older stays
            ("1x1h(keep=all) | 4x1h", &[0, 5, 200, 230], &[2]),
            // mixed grid, 15-minute history over 3 hours: keep=all for the
            // last 30 minutes, then the first set of each hour (11:00,
            // 10:00, 09:45 is alone in its hour), nothing beyond 2.5 h
            (
                "1x30m(keep=all) | 2x1h",
                &[0, 15, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180],
                &[2, 3, 5, 6, 7, 10, 11, 12],
            ),
            // order of input does not matter
            ("2x1h", &[90, 0, 30], &[]),
            ("2x1h", &[90, 0, 30, 80], &[3]),
            // the youngest is always kept, even where an older set shares its bucket
            ("1x1d", &[0, 60, 120], &[1]),
        ];
        for (grid, ago, want) in cases {
            let g = Grid::parse(grid).unwrap();
            let times: Vec<Timestamp> = ago
                .iter()
                .map(|m| base - jiff::SignedDuration::from_mins(*m))
                .collect();
            let got: Vec<usize> = grid_destroy(&g, &times).into_iter().collect();
            assert_eq!(&got, want, "grid {grid} on {ago:?}");
        }
        assert!(grid_destroy(&Grid::parse("1x1h").unwrap(), &[]).is_empty());
    }

    /// Bucket boundaries to the millisecond: a set at 10:59:59.999 is in
    /// the 10:00 bucket, one at 11:00:00.000 in the 11:00 bucket.
    #[test]
    fn bucket_boundaries_are_fixed_utc_times() {
        let cases: [(&str, &[&str], &[usize]); 2] = [
            (
                "1x1h(keep=all) | 24x1h",
                &[
                    "2026-11-27T10:00:00.001Z",
                    "2026-11-27T10:59:59.999Z",
                    "2026-11-27T11:00:00.000Z",
                    "2026-11-27T11:00:00.002Z",
                    "2026-11-27T15:00:00Z",
                ],
                &[1, 3],
            ),
            // A day is 86 400 s from the epoch, DST or not: in Vienna the
            // bucket of 2026-10-25 (25 h long locally) runs 01:00 to 01:00 CET.
            (
                "1x1h(keep=all) | 3x1d",
                &[
                    "2026-10-24T23:59:59.999Z",
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T23:00:00Z",
                    "2026-10-27T12:00:00Z",
                ],
                &[2],
            ),
        ];
        for (grid, times, want) in cases {
            let g = Grid::parse(grid).unwrap();
            let times: Vec<Timestamp> = times.iter().map(|s| t(s)).collect();
            let got: Vec<usize> = grid_destroy(&g, &times).into_iter().collect();
            assert_eq!(got, want, "{grid}");
        }
    }

    #[test]
    fn tiers_that_do_not_nest_are_noted() {
        let g = Grid::parse("1x1h(keep=all) | 24x1h | 30x1d | 11x30d | 2x1w").unwrap();
        assert!(
            Grid::parse("1x15m | 4x1h | 7x1d | 4x1w")
                .unwrap()
                .nesting_notes()
                .is_empty()
        );
        let notes = g.nesting_notes();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].starts_with("`1w` is not a multiple of `30d`"),
            "{notes:?}"
        );
        assert_eq!(
            Grid::parse("1x1d | 1x1month")
                .unwrap()
                .nesting_notes()
                .len(),
            1
        );
    }

    #[test]
    fn the_bound_counts_buckets_and_slots() {
        let g = Grid::parse("1x1h(keep=all) | 24x1h | 30x1d | 11x30d").unwrap();
        let h = Duration::from_secs(3600);
        // 1 (youngest) + keep=all: 1 h at 1 h + 2 = 3; 24x1h: min(26, 25);
        // 30x1d: min(722, 31); 11x30d: min(7922, 12)
        assert_eq!(g.max_kept(h), 1 + 3 + 25 + 31 + 12);
        let g = Grid::parse("1x1h(keep=all) | 6x1h").unwrap();
        assert_eq!(g.max_kept(Duration::from_secs(60)), 1 + 62 + 7);
    }
}
