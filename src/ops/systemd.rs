//! Life under systemd, without libsystemd:
//!
//! - **Journal priorities.** When stderr is the journal (`JOURNAL_STREAM`
//!   names stderr's device and inode, as systemd sets it for a service),
//!   every log line starts with `<N>`, the syslog priority journald reads in
//!   stream mode (`SyslogLevelPrefix=`, on by default): errors are `<3>`,
//!   warnings `<4>`, info `<6>`, debug `<7>`. `journalctl -p err` finds them.
//! - **sd_notify.** `READY=1`, `STATUS=...`, `STOPPING=1` and `WATCHDOG=1`
//!   are datagrams to `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//!   namespace). The watchdog is pinged from the `run` loop's progress (its
//!   sleeps, and the bytes of a transfer), never from a timer thread: a loop
//!   stuck in a hung transfer stops pinging and systemd restarts it
//!   (`WatchdogSec=` in the unit).

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// Is stderr connected to the journal? (`JOURNAL_STREAM=<dev>:<inode>` of
/// stderr; a mere inherited variable with another stderr does not count.)
pub fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match nix::sys::stat::fstat(2) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefix every line of `text` with `<prio>`.
pub fn prefix_lines(prio: u8, text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    for line in text.split_inclusive(|b| *b == b'\n') {
        out.extend_from_slice(format!("<{prio}>").as_bytes());
        out.extend_from_slice(line);
    }
    out
}

/// A `MakeWriter` for tracing-subscriber: stderr with `<N>` line prefixes.
#[derive(Clone, Copy, Default)]
pub struct JournalStderr;

/// Collects one event and writes it, prefixed, in one write when dropped.
pub struct PrefixedEvent {
    prio: u8,
    buf: Vec<u8>,
}

impl Write for PrefixedEvent {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PrefixedEvent {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = std::io::stderr().write_all(&prefix_lines(self.prio, &self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for JournalStderr {
    type Writer = PrefixedEvent;
    fn make_writer(&'a self) -> PrefixedEvent {
        PrefixedEvent {
            prio: 6,
            buf: Vec::new(),
        }
    }
    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> PrefixedEvent {
        PrefixedEvent {
            prio: priority(meta.level()),
            buf: Vec::new(),
        }
    }
}

/// The service manager's notification socket, if there is one.
pub struct Notifier {
    sock: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = p.as_bytes();
            let addr = if let Some(name) = bytes.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            } else {
                std::os::unix::net::SocketAddr::from_pathname(std::path::Path::new(&p)).ok()?
            };
            let s = UnixDatagram::unbound().ok()?;
            Some((s, addr))
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier {
            sock,
            watchdog,
            last_ping: None,
        }
    }

    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Send one state string; errors are logged at debug level only (a
    /// vanished socket must not stop the work).
    pub fn send(&self, state: &str) {
        if let Some((s, addr)) = &self.sock {
            if let Err(e) = s.send_to_addr(state.as_bytes(), addr) {
                tracing::debug!(error = %e, "sd_notify failed");
            }
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// The loop made progress: ping the watchdog (at most four times per
    /// watchdog interval).
    pub fn progress(&mut self) {
        let Some(wd) = self.watchdog else {
            return;
        };
        if self.last_ping.is_some_and(|t| t.elapsed() < wd / 4) {
            return;
        }
        self.last_ping = Some(Instant::now());
        self.send("WATCHDOG=1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_gets_the_priority() {
        assert_eq!(prefix_lines(3, b"a\nb\n"), b"<3>a\n<3>b\n");
        assert_eq!(prefix_lines(6, b"x"), b"<6>x");
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::DEBUG), 7);
    }
}
