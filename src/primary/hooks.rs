//! Quiesce hooks around a snapshot set and around each member's snapshot
//! (`[hooks.set]`, `[hooks.volume.ROLE]`).
//!
//! A hook is an argv (never a shell) with a `pre` and an optional `post`
//! command. `pre` either runs to completion (exit 0 = quiesced), or, with
//! `ready = true`, holds something open while the snapshot is taken: snapsite
//! starts it, waits for the line `ready` on its stdout, takes the snapshot(s),
//! then closes its stdin; the hook releases and exits 0 (non-zero: it could
//! not hold until the end, e.g. its own bound on how long writes may block
//! expired). Every wait has the hook's `timeout`; a hook that overruns it is
//! killed with its whole process group.
//!
//! Failure rules (the lessons of sanoid #358 and zrepl #392):
//! - `post` always runs once `pre` was started, whatever happened after
//!   (pre failed, timed out, the snapshot failed); a `post` failure is
//!   logged, never fails the set.
//! - A failed `pre` (or a held hook that did not hold to the end) either
//!   aborts the set (`on_failure = "abort"`, the default: the set's
//!   snapshots are removed) or lets it be taken crash-consistent
//!   (`on_failure = "crash-consistent"`), which the manifest records per
//!   member (`consistency`).
//!
//! Environment of every hook: `SNAPSITE_HOOK` (`pre`/`post`),
//! `SNAPSITE_HOOK_SCOPE` (`set`/`volume`), `SNAPSITE_SITE`,
//! `SNAPSITE_SET_ID`, `SNAPSITE_SET_KIND`, and for volume hooks
//! `SNAPSITE_VOLUME` (the role) and `SNAPSITE_SOURCE`; `post` also gets
//! `SNAPSITE_RESULT` (`ok`/`failed`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::base::cmd::{Cmd, Running};
use crate::base::error::{Error, ErrorKind};

/// What happens to the set when a hook's `pre` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Fail the set; its snapshots are removed.
    #[default]
    Abort,
    /// Take the snapshot anyway and mark the member crash-consistent.
    CrashConsistent,
}

/// One `[hooks.set]` or `[hooks.volume.ROLE]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHook {
    pub pre: Vec<String>,
    #[serde(default)]
    pub post: Vec<String>,
    #[serde(default)]
    pub ready: bool,
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// `[hooks]` as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    pub set: Option<RawHook>,
    #[serde(default)]
    pub volume: BTreeMap<String, RawHook>,
}

/// A validated hook.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// `hooks.set` or `hooks.volume.ROLE`: for messages.
    pub key: String,
    pub pre: Vec<String>,
    pub post: Vec<String>,
    pub ready: bool,
    pub timeout: Duration,
    pub on_failure: OnFailure,
}

/// Validated `[hooks]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    pub set: Option<Hook>,
    pub volume: BTreeMap<String, Hook>,
}

impl Hooks {
    pub fn for_volume(&self, role: &str) -> Option<&Hook> {
        self.volume.get(role)
    }
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.volume.is_empty()
    }
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

fn check_argv(key: &str, argv: &[String]) -> std::result::Result<(), String> {
    let Some(p) = argv.first() else {
        return Err(format!("{key}: must be a non-empty argv list"));
    };
    if p.is_empty() {
        return Err(format!("{key}: the program is empty"));
    }
    if p.contains('/') && !p.starts_with('/') {
        return Err(format!(
            "{key}: `{p}` is a relative path: give an absolute path, or a bare name found on PATH"
        ));
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(format!("{key}: an argument holds a NUL byte"));
    }
    Ok(())
}

fn validate_one(key: &str, h: &RawHook) -> std::result::Result<Hook, String> {
    check_argv(&format!("{key}.pre"), &h.pre)?;
    if !h.post.is_empty() {
        check_argv(&format!("{key}.post"), &h.post)?;
    }
    let timeout = match &h.timeout {
        None => DEFAULT_TIMEOUT,
        Some(v) => {
            let d = humantime::parse_duration(v)
                .map_err(|e| format!("{key}.timeout: `{v}`: {e} (e.g. \"30s\")"))?;
            if d < Duration::from_millis(100) || d > MAX_TIMEOUT {
                return Err(format!("{key}.timeout: `{v}` must be between 100ms and 1h"));
            }
            d
        }
    };
    Ok(Hook {
        key: key.to_string(),
        pre: h.pre.clone(),
        post: h.post.clone(),
        ready: h.ready,
        timeout,
        on_failure: h.on_failure,
    })
}

/// Validate `[hooks]` against the configured roles. Each error names its
/// key (`hooks.volume.mysql.timeout: ...`); the caller adds the file.
pub fn validate(raw: &RawHooks, roles: &[&str]) -> std::result::Result<Hooks, String> {
    let set = raw
        .set
        .as_ref()
        .map(|h| validate_one("hooks.set", h))
        .transpose()?;
    let mut volume = BTreeMap::new();
    for (role, h) in &raw.volume {
        let key = format!("hooks.volume.{role}");
        if !roles.contains(&role.as_str()) {
            return Err(format!(
                "{key}: no [[volume]] has role `{role}` (roles: {})",
                roles.join(", ")
            ));
        }
        volume.insert(role.clone(), validate_one(&key, h)?);
    }
    Ok(Hooks { set, volume })
}

/// Where a hook runs: its environment.
#[derive(Debug, Clone)]
pub struct HookEnv {
    pub site: String,
    pub set_id: String,
    pub set_kind: String,
    /// Volume hooks: (role, source).
    pub volume: Option<(String, String)>,
}

impl HookEnv {
    fn apply(&self, cmd: Cmd, phase: &str) -> Cmd {
        let mut cmd = cmd
            .env("SNAPSITE_HOOK", phase)
            .env(
                "SNAPSITE_HOOK_SCOPE",
                if self.volume.is_some() {
                    "volume"
                } else {
                    "set"
                },
            )
            .env("SNAPSITE_SITE", &self.site)
            .env("SNAPSITE_SET_ID", &self.set_id)
            .env("SNAPSITE_SET_KIND", &self.set_kind);
        if let Some((role, source)) = &self.volume {
            cmd = cmd
                .env("SNAPSITE_VOLUME", role)
                .env("SNAPSITE_SOURCE", source);
        }
        cmd
    }
}

fn hook_error(hook: &Hook, phase: &str, msg: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Command,
        format!("{}.{phase} hook: {msg}", hook.key),
    )
}

/// Wait for `r` to exit within `deadline`; past it, kill its process group.
fn wait_until(r: &mut Running, deadline: Instant) -> std::result::Result<i32, String> {
    loop {
        match r.child.try_wait() {
            Ok(Some(st)) => {
                use std::os::unix::process::ExitStatusExt;
                return Ok(st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0)));
            }
            Ok(None) => {}
            Err(e) => return Err(format!("waiting: {e}")),
        }
        if Instant::now() >= deadline {
            return Err("timed out".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A started `pre` hook: held (waiting for its stdin to close) or done.
pub struct Started {
    hook: Hook,
    env: HookEnv,
    /// A held hook, still running.
    held: Option<Running>,
    /// Did pre succeed (so far)?
    pub ok: bool,
    /// Why not, if not.
    pub failure: Option<String>,
}

/// Start `pre`. `Ok(None)` never happens: a hook that could not even be
/// spawned is a failed pre whose post still runs (it may clean up after a
/// partial start by an earlier attempt). The returned `Started` says
/// whether pre succeeded; the caller decides by `on_failure`.
pub fn start_pre(hook: &Hook, env: &HookEnv) -> Started {
    let mut st = Started {
        hook: hook.clone(),
        env: env.clone(),
        held: None,
        ok: false,
        failure: None,
    };
    let cmd = env.apply(Cmd::new(&hook.pre[0]).args(&hook.pre[1..]), "pre");
    let deadline = Instant::now() + hook.timeout;
    tracing::info!(hook = %hook.key, cmd = %cmd.display(), ready = hook.ready, "pre hook");
    let stdin = if hook.ready {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut r = match cmd
        .own_process_group()
        .spawn_stdio(stdin, Stdio::piped(), false)
    {
        Ok(r) => r,
        Err(e) => {
            st.failure = Some(e.to_string());
            return st;
        }
    };
    // Lines of the hook's stdout, read by a thread so every wait has a deadline.
    let (tx, rx) = mpsc::channel::<String>();
    let out = r.child.stdout.take().expect("piped");
    let key = hook.key.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if line.trim() != "ready" {
                tracing::info!(hook = %key, "{line}");
            }
            if tx.send(line).is_err() {
                // Nobody listens any more: keep draining so the hook never
                // blocks on a full pipe.
                continue;
            }
        }
    });
    if hook.ready {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => {
                    st.ok = true;
                    st.held = Some(r);
                    return st;
                }
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    r.kill();
                    st.failure = Some(format!(
                        "no `ready` line within {} (killed)",
                        humantime::format_duration(hook.timeout)
                    ));
                    return st;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stdout closed without `ready`: it exited or will.
                    let code = wait_until(&mut r, deadline);
                    r.kill();
                    st.failure = Some(match code {
                        Ok(c) => format!("exited ({c}) without printing `ready`"),
                        Err(e) => format!("closed its stdout without `ready` and {e} (killed)"),
                    });
                    return st;
                }
            }
        }
    }
    match wait_until(&mut r, deadline) {
        Ok(0) => {
            st.ok = true;
            let _ = r.wait();
        }
        Ok(c) => {
            let _ = r.wait();
            st.failure = Some(format!("exited with status {c}"));
        }
        Err(e) => {
            r.kill();
            st.failure = Some(format!(
                "{e} after {} (killed)",
                humantime::format_duration(hook.timeout)
            ));
        }
    }
    st
}

impl Started {
    pub fn on_failure(&self) -> OnFailure {
        self.hook.on_failure
    }
    pub fn key(&self) -> &str {
        &self.hook.key
    }

    /// The error for a failed pre.
    pub fn error(&self) -> Error {
        hook_error(
            &self.hook,
            "pre",
            self.failure.as_deref().unwrap_or("failed"),
        )
    }

    /// Let a held hook go: close its stdin and wait for it to exit 0
    /// within its timeout. A non-zero exit means it did not hold until
    /// now: `self.ok` becomes false.
    pub fn release(&mut self) {
        let Some(mut r) = self.held.take() else {
            return;
        };
        drop(r.child.stdin.take());
        let deadline = Instant::now() + self.hook.timeout;
        match wait_until(&mut r, deadline) {
            Ok(0) => {
                let _ = r.wait();
            }
            Ok(c) => {
                let _ = r.wait();
                self.ok = false;
                self.failure = Some(format!(
                    "exited with status {c} after the snapshot: it did not hold until the end"
                ));
            }
            Err(e) => {
                r.kill();
                self.ok = false;
                self.failure = Some(format!("did not exit after its stdin closed: {e} (killed)"));
            }
        }
        if let Some(f) = &self.failure {
            tracing::warn!(hook = %self.hook.key, "{f}");
        }
    }

    /// Release (if held), then run `post` if there is one; `snapshot_ok`
    /// becomes `SNAPSITE_RESULT`. A failing post is logged, not returned.
    pub fn finish(mut self, snapshot_ok: bool) -> Self {
        self.release();
        if self.hook.post.is_empty() {
            return self;
        }
        let cmd = self
            .env
            .apply(
                Cmd::new(&self.hook.post[0]).args(&self.hook.post[1..]),
                "post",
            )
            .env("SNAPSITE_RESULT", if snapshot_ok { "ok" } else { "failed" })
            .own_process_group();
        tracing::info!(hook = %self.hook.key, cmd = %cmd.display(), "post hook");
        let deadline = Instant::now() + self.hook.timeout;
        let res = cmd
            .spawn_stdio(Stdio::null(), Stdio::inherit(), false)
            .map_err(|e| e.to_string())
            .and_then(|mut r| match wait_until(&mut r, deadline) {
                Ok(c) => {
                    let _ = r.wait();
                    if c == 0 {
                        Ok(())
                    } else {
                        Err(format!("exited with status {c}"))
                    }
                }
                Err(e) => {
                    r.kill();
                    Err(format!("{e} (killed)"))
                }
            });
        if let Err(e) = res {
            tracing::warn!(hook = %self.hook.key, error = %e, "post hook failed (the set is not affected)");
        }
        self
    }
}

/// Drop of a still-held hook (a panic or an early return): close its stdin
/// and kill it, so nothing stays locked.
impl Drop for Started {
    fn drop(&mut self) {
        if let Some(r) = self.held.take() {
            r.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pre: &[&str]) -> RawHook {
        RawHook {
            pre: pre.iter().map(|s| s.to_string()).collect(),
            post: Vec::new(),
            ready: false,
            timeout: None,
            on_failure: OnFailure::Abort,
        }
    }

    #[test]
    fn validation_names_the_key() {
        let mut r = RawHooks::default();
        r.volume.insert("nosuch".into(), raw(&["/bin/true"]));
        let e = validate(&r, &["mysql"]).unwrap_err();
        assert!(e.starts_with("hooks.volume.nosuch:"), "{e}");
        let mut r = RawHooks::default();
        r.volume.insert("mysql".into(), raw(&[]));
        let e = validate(&r, &["mysql"]).unwrap_err();
        assert!(e.starts_with("hooks.volume.mysql.pre:"), "{e}");
        let mut h = raw(&["bin/x"]);
        let e = validate_one("hooks.set", &h).unwrap_err();
        assert!(e.contains("relative"), "{e}");
        h.pre = vec!["/bin/true".into()];
        h.timeout = Some("2 fortnights".into());
        let e = validate_one("hooks.set", &h).unwrap_err();
        assert!(e.starts_with("hooks.set.timeout:"), "{e}");
        h.timeout = Some("2h".into());
        assert!(validate_one("hooks.set", &h).is_err());
        h.timeout = Some("5s".into());
        assert_eq!(
            validate_one("hooks.set", &h).unwrap().timeout,
            Duration::from_secs(5)
        );
    }

    fn env() -> HookEnv {
        HookEnv {
            site: "a".into(),
            set_id: "S".into(),
            set_kind: "full".into(),
            volume: None,
        }
    }

    fn hook(pre: &[&str], ready: bool, timeout_ms: u64) -> Hook {
        Hook {
            key: "hooks.set".into(),
            pre: pre.iter().map(|s| s.to_string()).collect(),
            post: Vec::new(),
            ready,
            timeout: Duration::from_millis(timeout_ms),
            on_failure: OnFailure::Abort,
        }
    }

    #[test]
    fn held_hook_waits_for_ready_and_exits_after_stdin_closes() {
        // Prints ready, then holds until stdin closes, then exits 0.
        let h = hook(
            &["sh", "-c", "echo hello; echo ready; cat >/dev/null"],
            true,
            5000,
        );
        let mut s = start_pre(&h, &env());
        assert!(s.ok, "{:?}", s.failure);
        assert!(s.held.is_some());
        s.release();
        assert!(s.ok, "{:?}", s.failure);
    }

    #[test]
    fn hanging_hook_is_killed_at_its_timeout() {
        let t = Instant::now();
        let h = hook(&["sh", "-c", "sleep 30"], true, 300);
        let s = start_pre(&h, &env());
        assert!(!s.ok);
        assert!(
            s.failure.as_deref().unwrap().contains("no `ready`"),
            "{:?}",
            s.failure
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        let h = hook(&["sh", "-c", "sleep 30"], false, 300);
        let s = start_pre(&h, &env());
        assert!(!s.ok);
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_held_hook_that_gives_up_early_is_not_ok() {
        let h = hook(
            &["sh", "-c", "echo ready; cat >/dev/null; exit 3"],
            true,
            5000,
        );
        let mut s = start_pre(&h, &env());
        assert!(s.ok);
        s.release();
        assert!(!s.ok);
        assert!(s.failure.as_deref().unwrap().contains("status 3"));
    }

    #[test]
    fn pre_exit_status_counts() {
        assert!(start_pre(&hook(&["/bin/true"], false, 5000), &env()).ok);
        let s = start_pre(&hook(&["/bin/false"], false, 5000), &env());
        assert!(!s.ok);
        let s = start_pre(&hook(&["/nonexistent/hook"], false, 5000), &env());
        assert!(!s.ok);
        assert!(s.error().to_string().contains("hooks.set.pre hook"));
    }
}
