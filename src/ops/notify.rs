//! Push notifications: `[notify] command`, an argv (never a shell) whose
//! words may hold `{event}`, `{severity}`, `{site}` and `{message}`, run when
//! a watched state changes:
//!
//! | event | states (severity) |
//! |---|---|
//! | `ship` | `failing` (critical) once ship has failed for longer than `ship_failing_after`; `ok` when a ship works again |
//! | `recovery_point` | `status`'s level: `warning`, `critical`, back to `ok` |
//! | `snapshot` | `failed` (critical), `ok` again |
//! | `prune` | `failed` (warning), `ok` again |
//! | `failover`, `rehearsal` | `finished` (ok) or `failed` (critical); every run, not deduplicated |
//!
//! Deduplicated by state: one message per change, not one per cycle. The
//! last state sent per event is kept in `state_dir/notify.json`, so a
//! restarted `run` does not repeat itself. A state nobody was told about
//! before counts as `ok`: the first `ok` is silent.
//!
//! The command gets the same values in its environment
//! (`SNAPSITE_EVENT`, `SNAPSITE_SEVERITY`, `SNAPSITE_SITE`,
//! `SNAPSITE_MESSAGE`). It must finish within `timeout` (default 30 s) or
//! is killed; a failing command is logged, never fails what it reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::base::cmd::Cmd;

const PLACEHOLDERS: [&str; 4] = ["event", "severity", "site", "message"];

/// `[notify]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub command: Vec<String>,
    pub ship_failing_after: Option<String>,
    pub timeout: Option<String>,
}

/// Validated `[notify]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub command: Vec<String>,
    /// Ship failures are reported once they last this long.
    pub ship_failing_after: Duration,
    pub timeout: Duration,
}

fn duration(key: &str, v: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(v).map_err(|e| format!("{key}: `{v}`: {e} (e.g. \"30m\")"))?;
    if d < min || d > max {
        return Err(format!(
            "{key}: `{v}` must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// Validate `[notify]`; errors name their key (`notify.command: ...`).
pub fn validate(raw: &RawNotify) -> Result<Notify, String> {
    let Some(p) = raw.command.first() else {
        return Err("notify.command: must be a non-empty argv list".into());
    };
    if p.is_empty() || (p.contains('/') && !p.starts_with('/')) {
        return Err(format!(
            "notify.command: `{p}`: give an absolute path, or a bare name found on PATH"
        ));
    }
    if p.contains('{') {
        return Err("notify.command: the program itself cannot be a placeholder".into());
    }
    for w in &raw.command {
        let mut rest = w.as_str();
        while let Some(i) = rest.find('{') {
            let after = &rest[i + 1..];
            let Some(j) = after.find('}') else {
                return Err(format!("notify.command: `{w}`: `{{` without `}}`"));
            };
            let name = &after[..j];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "notify.command: `{w}`: unknown placeholder `{{{name}}}` (known: {{event}}, {{severity}}, {{site}}, {{message}})"
                ));
            }
            rest = &after[j + 1..];
        }
    }
    let minute = Duration::from_secs(60);
    Ok(Notify {
        command: raw.command.clone(),
        ship_failing_after: match &raw.ship_failing_after {
            Some(v) => duration(
                "notify.ship_failing_after",
                v,
                Duration::ZERO,
                30 * 24 * 60 * minute,
            )?,
            None => 30 * minute,
        },
        timeout: match &raw.timeout {
            Some(v) => duration("notify.timeout", v, Duration::from_secs(1), 10 * minute)?,
            None => Duration::from_secs(30),
        },
    })
}

/// Severity of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Replace the placeholders of one argv word.
pub fn render_word(w: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = w;
    while let Some(i) = rest.find('{') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match after.find('}') {
            Some(j) => {
                let name = &after[..j];
                match vars.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&rest[i..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Run the command once for this event (no deduplication).
pub fn send(n: &Notify, site: &str, event: &str, severity: Severity, message: &str) {
    let vars = [
        ("event", event),
        ("severity", severity.as_str()),
        ("site", site),
        ("message", message),
    ];
    let argv: Vec<String> = n.command.iter().map(|w| render_word(w, &vars)).collect();
    let cmd = Cmd::new(&argv[0])
        .args(&argv[1..])
        .env("SNAPSITE_EVENT", event)
        .env("SNAPSITE_SEVERITY", severity.as_str())
        .env("SNAPSITE_SITE", site)
        .env("SNAPSITE_MESSAGE", message)
        .own_process_group();
    tracing::info!(event, severity = severity.as_str(), %message, "notify");
    let res = cmd
        .spawn_stdio(Stdio::null(), Stdio::null(), true)
        .and_then(|mut r| {
            let deadline = Instant::now() + n.timeout;
            loop {
                match r.child.try_wait() {
                    Ok(Some(_)) => return r.wait(),
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => {
                        r.kill();
                        return Err(crate::Error::new(
                            crate::ErrorKind::Command,
                            format!(
                                "notify.command did not finish within {} (killed)",
                                humantime::format_duration(n.timeout)
                            ),
                        ));
                    }
                }
            }
        });
    if let Err(e) = res {
        tracing::warn!(event, error = %e, "notify command failed");
    }
}

/// A one-off event (failover, rehearsal): sent every time, if configured
/// (`cfg.notify.as_ref()`, `cfg.site`).
pub fn event(n: Option<&Notify>, site: &str, event: &str, severity: Severity, message: &str) {
    if let Some(n) = n {
        send(n, site, event, severity, message);
    }
}

/// The last state told per event, persisted in `state_dir/notify.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct Told {
    #[serde(default)]
    states: BTreeMap<String, String>,
}

/// Deduplicates state changes: `observe` runs the command only when an
/// event's state differs from the last one told.
pub struct Notifier {
    notify: Option<Notify>,
    site: String,
    path: PathBuf,
    told: Told,
}

impl Notifier {
    /// `[notify]` of a site whose records live in `state_dir`.
    pub fn new(notify: Option<Notify>, site: &str, state_dir: &Path) -> Notifier {
        Self::at(notify, site, &state_dir.join("notify.json"))
    }

    pub fn at(notify: Option<Notify>, site: &str, path: &Path) -> Notifier {
        let told = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Notifier {
            notify,
            site: site.to_string(),
            path: path.to_path_buf(),
            told,
        }
    }

    pub fn ship_failing_after(&self) -> Option<Duration> {
        self.notify.as_ref().map(|n| n.ship_failing_after)
    }

    /// `state` of `event` now; told (and remembered) only if it changed.
    /// Returns whether the command ran.
    pub fn observe(&mut self, event: &str, state: &str, severity: Severity, message: &str) -> bool {
        let Some(n) = &self.notify else {
            return false;
        };
        let last = self
            .told
            .states
            .get(event)
            .map(String::as_str)
            .unwrap_or("ok");
        if last == state {
            return false;
        }
        send(n, &self.site, event, severity, message);
        self.told
            .states
            .insert(event.to_string(), state.to_string());
        let bytes = serde_json::to_vec_pretty(&self.told).expect("serializable");
        let tmp = self.path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, &bytes).and_then(|_| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "could not record the notification state");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(cmd: &[&str]) -> RawNotify {
        RawNotify {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            ship_failing_after: None,
            timeout: None,
        }
    }

    #[test]
    fn placeholders_are_checked_and_rendered() {
        let e = validate(&raw(&["/bin/echo", "{evnt}"])).unwrap_err();
        assert!(
            e.starts_with("notify.command:") && e.contains("{evnt}"),
            "{e}"
        );
        assert!(
            validate(&raw(&[]))
                .unwrap_err()
                .starts_with("notify.command")
        );
        assert!(validate(&raw(&["bin/x"])).is_err());
        let mut r = raw(&["/bin/echo", "[{severity}] {site}: {message}"]);
        r.ship_failing_after = Some("soon".into());
        assert!(
            validate(&r)
                .unwrap_err()
                .starts_with("notify.ship_failing_after:")
        );
        r.ship_failing_after = Some("5m".into());
        let n = validate(&r).unwrap();
        assert_eq!(n.ship_failing_after, Duration::from_secs(300));
        let w = render_word(
            &n.command[1],
            &[
                ("severity", "critical"),
                ("site", "a"),
                ("message", "{site} x"),
            ],
        );
        // Values are not expanded again.
        assert_eq!(w, "[critical] a: {site} x");
    }

    #[test]
    fn one_message_per_change_and_remembered_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let n = validate(&raw(&[
            "sh",
            "-c",
            &format!("echo \"$0 $1\" >> {}", log.display()),
            "{event}",
            "{severity}",
        ]))
        .unwrap();
        let state = dir.path().join("notify.json");
        let mut a = Notifier::at(Some(n.clone()), "s", &state);
        assert!(!a.observe("ship", "ok", Severity::Ok, "fine"));
        assert!(a.observe("ship", "failing", Severity::Critical, "bad"));
        assert!(!a.observe("ship", "failing", Severity::Critical, "bad"));
        let mut b = Notifier::at(Some(n), "s", &state);
        assert!(!b.observe("ship", "failing", Severity::Critical, "still bad"));
        assert!(b.observe("ship", "ok", Severity::Ok, "fine"));
        let got = std::fs::read_to_string(&log).unwrap();
        assert_eq!(got, "ship critical\nship ok\n");
    }
}
