//! The retention grid, zrepl style: `1x1h(keep=all) | 24x1h | 14x1d`.
//!
//! Pure: it parses the grid and answers which of a list of times it does not
//! keep. It knows nothing of sets, snapshots or storage — `config` parses a
//! `Grid` into the schema and `prune` applies it; this module imports nothing
//! of snapsite (std, jiff and humantime only), so the schema does not depend
//! on the code that destroys snapshots.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// How many snapshots one bucket keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    All,
    Newest(u32),
}

/// `COUNTxLENGTH(keep=K)`: COUNT adjacent buckets of LENGTH, each keeping
/// the newest K snapshots (default 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub count: u32,
    pub length: Duration,
    pub keep: Keep,
    /// The length as written (`1h`), for display.
    pub length_text: String,
}

/// A retention grid: intervals laid end to end into the past, starting at
/// the youngest snapshot. Snapshots older than the whole grid are destroyed.
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
                    "`{part}`: {why} (expected e.g. `1x1h(keep=all) | 24x1h | 14x1d`: COUNTxLENGTH, optional (keep=N|all))"
                )
            };
            if part.is_empty() {
                return Err(bad("empty interval"));
            }
            let (head, keep) = match part.split_once('(') {
                None => (part, Keep::Newest(1)),
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
                            Ok(n) if n > 0 => Keep::Newest(n),
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

    /// The buckets, youngest first: (start age, end age, keep).
    fn buckets(&self) -> Vec<(Duration, Duration, Keep)> {
        let mut out = Vec::new();
        let mut start = Duration::ZERO;
        for i in &self.intervals {
            for _ in 0..i.count {
                let end = start.saturating_add(i.length);
                out.push((start, end, i.keep));
                start = end;
            }
        }
        out
    }

    /// How far back the grid reaches from the youngest snapshot.
    pub fn span(&self) -> Duration {
        self.buckets().last().map(|b| b.1).unwrap_or_default()
    }
}

impl fmt::Display for Grid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .intervals
            .iter()
            .map(|i| {
                let keep = match i.keep {
                    Keep::All => "(keep=all)".to_string(),
                    Keep::Newest(1) => String::new(),
                    Keep::Newest(n) => format!("(keep={n})"),
                };
                format!("{}x{}{keep}", i.count, i.length_text)
            })
            .collect();
        write!(f, "{}", parts.join(" | "))
    }
}

/// The grid as a pure keep rule: returns the indexes of `times` to destroy.
/// Buckets start at the youngest time; within a bucket the newest `keep`
/// survive; anything older than the grid is destroyed.
pub fn grid_destroy(grid: &Grid, times: &[Timestamp]) -> BTreeSet<usize> {
    let mut destroy = BTreeSet::new();
    let Some(youngest) = times.iter().max().copied() else {
        return destroy;
    };
    let buckets = grid.buckets();
    let mut in_bucket: Vec<Vec<usize>> = vec![Vec::new(); buckets.len()];
    for (i, t) in times.iter().enumerate() {
        let age = youngest.duration_since(*t).unsigned_abs();
        match buckets.iter().position(|(s, e, _)| age >= *s && age < *e) {
            Some(b) => in_bucket[b].push(i),
            None => {
                destroy.insert(i);
            }
        }
    }
    for (b, members) in in_bucket.iter_mut().enumerate() {
        let keep = match buckets[b].2 {
            Keep::All => continue,
            Keep::Newest(n) => n as usize,
        };
        // Newest first; ties broken by index so the result is deterministic.
        members.sort_by(|a, b| times[*b].cmp(&times[*a]).then(a.cmp(b)));
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
    /// minutes ago, indexes destroyed).
    #[test]
    fn grid_table() {
        let base = t("2026-11-27T12:00:00Z");
        let cases: &[(&str, &[i64], &[usize])] = &[
            // keep=all keeps everything inside the interval
            ("1x1h(keep=all)", &[0, 10, 59], &[]),
            // ... and nothing beyond the grid
            ("1x1h(keep=all)", &[0, 60, 120], &[1, 2]),
            // keep=1 per bucket: the newest in each hour
            ("3x1h", &[0, 30, 61, 90, 119, 150], &[1, 3, 4]),
            // keep=2
            ("1x1h(keep=2)", &[0, 10, 20, 30], &[2, 3]),
            // an empty bucket in between changes nothing
            ("1x1h(keep=all) | 4x1h", &[0, 5, 200, 230], &[3]),
            // mixed grid, 15-minute history over 3 hours
            (
                "1x30m(keep=all) | 2x1h",
                &[0, 15, 30, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180],
                &[3, 4, 5, 7, 8, 9, 10, 11, 12],
            ),
            // order of input does not matter
            ("2x1h", &[90, 0, 30], &[2]),
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
}
