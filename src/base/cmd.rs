//! The one wrapper for external programs. Every `btrfs`, `zfs`, `lvs`, `ssh` ...
//! call goes through here: argv vectors only (never a shell), the argv is
//! logged, and a failure becomes an error carrying argv, exit status and stderr.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::base::error::{Error, ErrorKind, Result};

#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    own_group: bool,
    die_with_parent: bool,
}

/// Render an argv for logs and errors; each word quoted only when needed.
pub fn display_argv(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| quote_word(&a.to_string_lossy(), "%"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Quote one word for a POSIX shell: left as it is when it is not empty and
/// holds only ASCII letters, digits, `-_./=:@,+` and the characters in
/// `also_plain`; otherwise in single quotes, each `'` written `'\''`. The
/// one quoting rule of snapsite: `display_argv` (logs and messages, `%`
/// plain) and the ssh transport's remote command (`transport::shell_quote`,
/// nothing more plain), which the remote shell must split back into the
/// same argv.
pub fn quote_word(w: &str, also_plain: &str) -> String {
    if !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c) || also_plain.contains(c))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            argv: vec![program.as_ref().to_owned()],
            env: Vec::new(),
            own_group: false,
            die_with_parent: false,
        }
    }
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.argv.push(a.as_ref().to_owned());
        self
    }
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.argv
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }
    /// Start the child in a process group of its own: `Running::kill` then
    /// stops it and everything it started (a transfer's whole pipeline).
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }
    /// The kernel kills the child (SIGKILL) when the thread that started it
    /// exits — when snapsite is killed, say. For children with nothing to
    /// clean up (`ssh`) that would otherwise hang on, orphaned, in a process
    /// group of their own. Start it from a thread that outlives the child.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }
    pub fn argv(&self) -> &[OsString] {
        &self.argv
    }
    pub fn display(&self) -> String {
        display_argv(&self.argv)
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]);
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if self.own_group {
            use std::os::unix::process::CommandExt;
            c.process_group(0);
        }
        if self.die_with_parent {
            use std::os::unix::process::CommandExt;
            let parent = std::process::id() as i32;
            // SAFETY: prctl and getppid are async-signal-safe system calls;
            // nothing is allocated between fork and exec.
            unsafe {
                c.pre_exec(move || {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                    // The parent may have died before the prctl took effect.
                    if nix::unistd::getppid().as_raw() != parent {
                        return Err(nix::errno::Errno::ESRCH.into());
                    }
                    Ok(())
                });
            }
        }
        c
    }

    fn spawn_error(&self, e: std::io::Error) -> Error {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            Some(format!(
                "is {} installed and on PATH?",
                self.argv[0].to_string_lossy()
            ))
        } else {
            None
        };
        let err = Error::new(
            ErrorKind::Command,
            format!("could not start `{}`: {e}", self.display()),
        );
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }

    /// Run to completion, capture stdout; a non-zero exit is an error.
    pub fn output(&self) -> Result<String> {
        let out = self.run_raw()?;
        if !out.status.success() {
            return Err(failure(&self.argv, out.status, &out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run to completion and return status, stdout and stderr, whatever the exit.
    pub fn run_raw(&self) -> Result<std::process::Output> {
        let t = Instant::now();
        tracing::debug!(cmd = %self.display(), "run");
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.spawn_error(e))?;
        tracing::debug!(cmd = %self.display(), status = %out.status, ms = t.elapsed().as_millis() as u64, "done");
        Ok(out)
    }

    /// Run to completion; stdout ignored.
    pub fn run(&self) -> Result<()> {
        self.output().map(|_| ())
    }

    /// Start with the given stdio for stdin/stdout; stderr is always captured by
    /// a thread so a chatty child cannot block, and reported on failure.
    pub fn spawn(&self, stdin: Stdio, stdout: Stdio) -> Result<Running> {
        self.spawn_stdio(stdin, stdout, true)
    }

    /// Like `spawn`, the child's stderr relayed line by line (see [`Relay`])
    /// and its last lines kept: in the returned tail while it runs, in the
    /// error of [`Running::wait`] after.
    pub fn spawn_relayed(
        &self,
        stdin: Stdio,
        stdout: Stdio,
        relay: Relay,
    ) -> Result<(Running, StderrTail)> {
        let tail = StderrTail::default();
        let t = tail.clone();
        let running = self.spawn_with(stdin, stdout, Stdio::piped(), move |e| {
            relay_stderr(e, relay, t)
        })?;
        Ok((running, tail))
    }

    /// Like `spawn`; with `capture_stderr` false the child's stderr goes to
    /// ours (a standby's log lines show up live).
    pub fn spawn_stdio(
        &self,
        stdin: Stdio,
        stdout: Stdio,
        capture_stderr: bool,
    ) -> Result<Running> {
        let stderr = if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        self.spawn_with(stdin, stdout, stderr, collect_stderr)
    }

    fn spawn_with(
        &self,
        stdin: Stdio,
        stdout: Stdio,
        stderr: Stdio,
        read_stderr: impl FnOnce(ChildStderr) -> JoinHandle<Vec<u8>>,
    ) -> Result<Running> {
        tracing::debug!(cmd = %self.display(), "spawn");
        let mut child = self
            .command()
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let stderr = child.stderr.take().map(read_stderr);
        if let Some(i) = &child.stdin {
            grow_pipe(i);
        }
        if let Some(o) = &child.stdout {
            grow_pipe(o);
        }
        Ok(Running {
            argv: self.argv.clone(),
            child,
            stderr,
            started: Instant::now(),
            own_group: self.own_group,
        })
    }
}

/// Where the lines a relayed child writes on stderr go (a standby's log
/// lines, ssh's own complaints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// To our stderr as they come; plain (colour codes removed) unless our
    /// stderr is a terminal.
    Show,
    /// Only into the debug log (`-vv`): a peer's refusal we expect.
    Quiet,
}

const TAIL_LINES: usize = 20;

/// The last lines a relayed child wrote on stderr, readable while it runs:
/// the reason a connection failed is usually there (ssh's "Permission
/// denied").
#[derive(Clone, Default)]
pub struct StderrTail(std::sync::Arc<(std::sync::Mutex<TailState>, std::sync::Condvar)>);

#[derive(Default)]
struct TailState {
    lines: std::collections::VecDeque<String>,
    eof: bool,
}

impl StderrTail {
    fn push(&self, line: String) {
        let mut st = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if st.lines.len() == TAIL_LINES {
            st.lines.pop_front();
        }
        st.lines.push_back(line);
    }
    fn end(&self) {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner()).eof = true;
        self.0.1.notify_all();
    }
    /// The lines so far, oldest first.
    pub fn lines(&self) -> Vec<String> {
        let st = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        st.lines.iter().cloned().collect()
    }
    /// Wait until the child closed its stderr (it exited), at most `limit`.
    pub fn wait_closed(&self, limit: std::time::Duration) -> bool {
        let (lock, cv) = &*self.0;
        let st = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (st, _) = cv
            .wait_timeout_while(st, limit, |st| !st.eof)
            .unwrap_or_else(|e| e.into_inner());
        st.eof
    }
}

/// Remove terminal control sequences (colours: `ESC [ ... m`) and other
/// control characters but tabs from one line.
pub fn plain_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // parameters and intermediates, then one final byte
                for f in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&f) {
                        break;
                    }
                }
            }
            continue;
        }
        if c.is_control() && c != '\t' {
            continue;
        }
        out.push(c);
    }
    out
}

fn relay_stderr(s: ChildStderr, relay: Relay, tail: StderrTail) -> JoinHandle<Vec<u8>> {
    use std::io::{BufRead, IsTerminal, Write};
    std::thread::spawn(move || {
        let colour = std::io::stderr().is_terminal();
        let mut r = std::io::BufReader::new(s);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let raw = String::from_utf8_lossy(&buf);
            let raw = raw.trim_end_matches(['\n', '\r']);
            let plain = plain_text(raw);
            match relay {
                Relay::Show => {
                    let shown = if colour { raw } else { plain.as_str() };
                    let _ = writeln!(std::io::stderr().lock(), "{shown}");
                }
                Relay::Quiet => tracing::debug!(line = %plain, "peer"),
            }
            tail.push(plain);
        }
        tail.end();
        tail.lines().join("\n").into_bytes()
    })
}

/// Snapshot streams move gigabytes through these pipes: a 1 MiB pipe buffer
/// instead of 64 KiB lets producer and consumer overlap (best effort).
fn grow_pipe(fd: &impl std::os::fd::AsRawFd) {
    let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
}

fn collect_stderr(mut s: ChildStderr) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
}

pub fn failure(argv: &[OsString], status: ExitStatus, stderr: &[u8]) -> Error {
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr.trim();
    let mut msg = format!("`{}` failed ({status})", display_argv(argv));
    if !stderr.is_empty() {
        // Keep the tail: the reason is usually on the last lines.
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        msg.push_str(":\n    ");
        msg.push_str(&tail.join("\n    "));
    }
    Error::new(ErrorKind::Command, msg)
}

/// A spawned child process whose stdin/stdout the caller streams through.
pub struct Running {
    argv: Vec<OsString>,
    pub child: Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
    own_group: bool,
}

impl Running {
    pub fn display(&self) -> String {
        display_argv(&self.argv)
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// Wait for the exit; non-zero is an error carrying argv, status, stderr.
    pub fn wait(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("waiting for `{}`", self.display()), e))?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        tracing::debug!(cmd = %self.display(), %status, ms = self.started.elapsed().as_millis() as u64, "done");
        if status.success() {
            Ok(())
        } else {
            Err(failure(&self.argv, status, &stderr))
        }
    }
    /// Kill this exact child (by its PID, never by pattern) — and its
    /// process group when it was started in its own — and reap it.
    pub fn kill(mut self) {
        drop(self.child.stdin.take());
        if self.own_group {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_argv_status_and_stderr() {
        let e = Cmd::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .output()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Command);
        assert!(e.message.contains("sh -c 'echo boom >&2; exit 3'"), "{e}");
        assert!(e.message.contains("exit status: 3"), "{e}");
        assert!(e.message.contains("boom"), "{e}");
    }

    #[test]
    fn missing_program_gets_a_hint() {
        let e = Cmd::new("/nonexistent/snapsite-nothing")
            .output()
            .unwrap_err();
        assert!(e.hint.unwrap().contains("installed"));
    }

    #[test]
    fn display_quotes_like_before() {
        let argv: Vec<OsString> = ["btrfs", "send", "-p", "/a b/c", "50%", "it's", "", "x=$y"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(
            display_argv(&argv),
            "btrfs send -p '/a b/c' 50% 'it'\\''s' '' 'x=$y'"
        );
    }

    /// What `quote_word` makes of a word, a shell makes the word again.
    #[test]
    fn quoted_words_come_back_whole_from_a_shell() {
        let words = [
            "plain",
            "",
            "a b",
            "it's",
            "''",
            "$(id)",
            "`x`",
            "*",
            "a\\b",
            "50%",
            "tab\tnl\n",
            "-o",
            "~root",
            "#x",
            "!x",
            "a;b|c&d",
            "é",
        ];
        for also in ["", "%"] {
            let line: Vec<String> = words.iter().map(|w| quote_word(w, also)).collect();
            let script = format!("printf '%s\\0' {}", line.join(" "));
            let out = Cmd::new("sh").args(["-c", &script]).output().unwrap();
            let got: Vec<&str> = out.split('\0').collect();
            assert_eq!(got[..got.len() - 1], words, "{script}");
        }
    }

    #[test]
    fn argv_is_not_interpreted_by_a_shell() {
        let out = Cmd::new("echo").arg("$(id); `x` *").output().unwrap();
        assert_eq!(out, "$(id); `x` *\n");
    }
}
