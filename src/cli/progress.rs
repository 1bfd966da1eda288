//! The transfer progress display shared by `ship`, `ship --to` and `run`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use snapsite::base::catalog::{Catalog, StandbyRecord};

use super::human_bytes;

/// Transfer progress: bytes, rate and ETA on a terminal (the estimate is
/// the last transfer of the same volume and kind, from the standby record);
/// otherwise a log line every 30 s for long transfers and one per snapshot.
pub(super) struct ProgressDisplay<'a> {
    catalog: &'a Catalog,
    /// Whose transfer estimates to use (the standby being shipped to).
    standby: Option<String>,
    tty: bool,
    /// Print a line per snapshot sent (interactive `ship`); `run` logs instead.
    print_done: bool,
    current: Option<(String, String)>,
    started: Instant,
    last: Instant,
    estimate: Option<u64>,
}

/// The estimate of `role`'s next transfer from standby record `r` (whole
/// or its head: the same answer): the last transfer of the same kind,
/// incremental if the standby holds any snapshot of the volume (the
/// planner's choice, approximately).
fn estimate(r: &StandbyRecord, role: &str) -> Option<u64> {
    let incremental = r.holds.get(role).is_some_and(|h| !h.is_empty());
    r.estimate(role, incremental)
}

impl<'a> ProgressDisplay<'a> {
    /// `standby`: the one being shipped to (its records give the
    /// estimates); `None` for several at once (no estimates).
    pub(super) fn new(catalog: &'a Catalog, standby: Option<&str>, print_done: bool) -> Self {
        ProgressDisplay {
            catalog,
            standby: standby.map(str::to_string),
            tty: std::io::stderr().is_terminal(),
            print_done,
            current: None,
            started: Instant::now(),
            last: Instant::now(),
            estimate: None,
        }
    }

    pub(super) fn update(&mut self, role: &str, snap: &str, bytes: u64, done: bool) {
        let key = (role.to_string(), snap.to_string());
        if self.current.as_ref() != Some(&key) {
            // A new transfer. The record's head (not the record read whole,
            // which lists the whole history) says all the estimate needs:
            // it keeps the newest snapshot per volume and every last_bytes.
            let rec = self
                .standby
                .as_deref()
                .and_then(|n| self.catalog.standby_head_of(n).ok().flatten());
            self.estimate = rec.as_ref().and_then(|r| estimate(r, role));
            self.current = Some(key);
            self.started = Instant::now();
            self.last = Instant::now();
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        if done {
            if self.tty {
                eprint!("\r\x1b[K");
            }
            if self.print_done {
                eprintln!(
                    "  sent {role:<10} {snap}  {} in {secs:.1} s ({}/s)",
                    human_bytes(bytes),
                    human_bytes(rate as u64)
                );
            } else {
                tracing::info!(volume = %role, snapshot = %snap, bytes, seconds = secs, "sent");
            }
            self.current = None;
            return;
        }
        if self.tty && self.last.elapsed() > Duration::from_millis(250) {
            self.last = Instant::now();
            let eta = match self.estimate {
                Some(total) if total > bytes && rate > 0.0 => format!(
                    ", ~{:.0}% ETA {}",
                    100.0 * bytes as f64 / total as f64,
                    humantime::format_duration(Duration::from_secs(
                        ((total - bytes) as f64 / rate) as u64
                    ))
                ),
                _ => String::new(),
            };
            eprint!(
                "\r\x1b[K  sending {role} {snap}: {} ({}/s{eta})",
                human_bytes(bytes),
                human_bytes(rate as u64)
            );
        } else if !self.tty && self.last.elapsed() > Duration::from_secs(30) {
            self.last = Instant::now();
            tracing::info!(volume = %role, snapshot = %snap, bytes, rate_bytes_per_second = rate as u64, estimate_bytes = self.estimate, "sending");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapsite::base::catalog::HeadCache;
    use std::collections::BTreeMap;

    /// The display's estimate, read from the record's head, is the one the
    /// whole record gives, for every kind of volume: one the standby holds
    /// many snapshots of (incremental), one with no snapshot there (full),
    /// one it lists with none held, one without bytes recorded.
    #[test]
    fn estimate_from_the_head_is_the_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::new(dir.path());
        let mut r = StandbyRecord {
            standby: "local".into(),
            ..StandbyRecord::default()
        };
        let set = |i: usize| format!("20261127T{:02}{:02}00.000Z-full", i / 60, i % 60);
        for i in 0..600 {
            r.committed.insert(set(i));
            for role in ["mysql", "redolog", "nobytes"] {
                r.holds.entry(role.into()).or_default().insert(set(i));
            }
        }
        r.holds.insert("empty".into(), Default::default());
        let bytes = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        for (role, b) in [
            ("mysql", bytes(&[("full", 1 << 30), ("incremental", 4096)])),
            ("redolog", bytes(&[("full", 7 << 20)])),
            ("empty", bytes(&[("full", 5 << 20), ("incremental", 12)])),
            ("absent", bytes(&[("full", 9 << 20), ("incremental", 34)])),
        ] {
            r.last_bytes.insert(role.into(), b);
        }
        catalog.write_standby_record_of("standby", &r).unwrap();
        assert!(
            matches!(catalog.standby_head_cached_of("standby"), HeadCache::Fresh(h) if h.holds["mysql"].len() == 1),
            "the head is written and cut"
        );
        let mut display = ProgressDisplay::new(&catalog, Some("standby"), false);
        for (n, (role, want)) in [
            ("mysql", Some(4096)),
            ("redolog", None),
            ("nobytes", None),
            ("empty", Some(5 << 20)),
            ("absent", Some(9 << 20)),
            ("unknown", None),
        ]
        .into_iter()
        .enumerate()
        {
            display.update(role, &set(n), 0, false);
            assert_eq!(display.estimate, want, "{role}");
            assert_eq!(
                display.estimate,
                estimate(&r, role),
                "{role}: the whole record's"
            );
        }
        // No record: no estimate (and no error).
        let mut display = ProgressDisplay::new(&catalog, Some("other"), false);
        display.update("mysql", &set(0), 0, false);
        assert_eq!(display.estimate, None);
    }
}
