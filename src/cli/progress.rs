//! The transfer progress display shared by `ship`, `ship --to` and `run`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use snapsite::base::catalog::Catalog;

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
            // A new transfer: incremental if the standby holds any snapshot
            // of the volume (the planner's choice, approximately).
            let rec = self
                .standby
                .as_deref()
                .and_then(|n| self.catalog.standby_record_of(n).ok().flatten());
            self.estimate = rec.as_ref().and_then(|r| {
                let incremental = r.holds.get(role).is_some_and(|h| !h.is_empty());
                r.estimate(role, incremental)
            });
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
