//! How `ship` reaches the standby's `snapsite serve --stdio`: a local child
//! process, OpenSSH, or any configured argv. One protocol, three pipes.

use std::io::{BufReader, BufWriter};
use std::process::{ChildStdin, ChildStdout, Stdio};

use crate::base::cmd::{Cmd, Relay, Running, StderrTail};
use crate::base::config::{Standby, Transport};
use crate::base::error::{Error, Result};
use crate::wire::stream::{Deadline, Reader, Writer};

/// How long `ship` waits for standby `s` to answer or accept data before it
/// abandons the session: its `stall_timeout` (the standby may verify a
/// large snapshot before it acks). `SNAPSITE_IO_TIMEOUT` (e.g. `30s`)
/// overrides it for every standby.
pub fn io_timeout(s: &Standby) -> std::time::Duration {
    std::env::var("SNAPSITE_IO_TIMEOUT")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(s.stall_timeout)
}

/// The transport processes of the sessions open in this process (their
/// PIDs, not yet reaped: a PID here cannot have been reused).
static LIVE: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn forget(pid: u32) {
    if let Ok(mut l) = LIVE.lock() {
        l.retain(|p| *p != pid);
    }
}

/// Set once [`kill_live_sessions`] cut the sessions: their failures are
/// the cut's, not the standbys'.
static CUT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process cut its sessions ([`kill_live_sessions`]): a
/// session failing now says nothing about its standby.
pub fn sessions_cut() -> bool {
    CUT.load(std::sync::atomic::Ordering::SeqCst)
}

/// Kill the transport of every session still open (by PID, and its process
/// group): a stopping `run` does not leave a hung standby's transport
/// behind. The sessions then fail at once ([`sessions_cut`] says why).
pub fn kill_live_sessions() -> usize {
    CUT.store(true, std::sync::atomic::Ordering::SeqCst);
    let pids: Vec<u32> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for pid in &pids {
        tracing::warn!(pid, "stopping: killing an open session's transport");
        let p = nix::unistd::Pid::from_raw(*pid as i32);
        let _ = nix::sys::signal::killpg(p, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
    }
    pids.len()
}

pub struct Connection {
    running: Running,
    stderr: StderrTail,
    ssh: bool,
    /// Raised when a read or write found no progress for the stall timeout.
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub reader: Reader<BufReader<Deadline<ChildStdout>>>,
    pub writer: Writer<BufWriter<Deadline<ChildStdin>>>,
}

/// Quote one word for the remote shell that sshd runs the command with.
pub fn shell_quote(w: &str) -> String {
    crate::base::cmd::quote_word(w, "")
}

pub fn command(s: &Standby) -> Result<Cmd> {
    Ok(match &s.transport {
        Transport::Local { config } => {
            let mut exe = std::env::current_exe()
                .map_err(|e| Error::io("cannot find the snapsite executable", e))?;
            // A long-running `snapsite run` outlives an upgrade of its binary:
            // Linux then reports the path as "... (deleted)". Run this very
            // binary (same protocol) through /proc/self/exe instead.
            if !exe.exists() && std::path::Path::new("/proc/self/exe").exists() {
                exe = "/proc/self/exe".into();
            }
            Cmd::new(exe)
                .args(["serve", "--stdio", "--config"])
                .arg(config)
        }
        Transport::Ssh(s) => {
            let mut c = Cmd::new("ssh").args([
                "-o",
                "BatchMode=yes",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=4",
            ]);
            if let Some(f) = &s.ssh_config {
                c = c.arg("-F").arg(f);
            }
            if let Some(p) = s.port {
                c = c.arg("-p").arg(p.to_string());
            }
            if let Some(i) = &s.identity {
                c = c.arg("-i").arg(i);
            }
            if let Some(u) = &s.user {
                c = c.arg("-l").arg(u);
            }
            for o in &s.ssh_options {
                c = c.arg("-o").arg(o);
            }
            // ssh takes the first value it is given: an explicit
            // ConnectTimeout in ssh_options wins over the default.
            let has = |k: &str| {
                s.ssh_options.iter().any(|o| {
                    o.split('=')
                        .next()
                        .is_some_and(|x| x.trim().eq_ignore_ascii_case(k))
                })
            };
            if !has("ConnectTimeout") {
                let secs = s.connect_timeout.as_secs().max(1);
                c = c.arg("-o").arg(format!("ConnectTimeout={secs}"));
            }
            c = c.arg("--").arg(&s.host);
            let remote: Vec<String> = if s.remote_command.is_empty() {
                vec!["snapsite".into(), "serve".into(), "--stdio".into()]
            } else {
                s.remote_command.clone()
            };
            // sshd hands the command to the remote user's shell as one string:
            // quote every word so it arrives as the same argv.
            c.args(remote.iter().map(|w| shell_quote(w)))
        }
        Transport::Command { argv } => Cmd::new(&argv[0]).args(&argv[1..]),
    })
}

pub fn connect(s: &Standby) -> Result<Connection> {
    connect_with(s, Relay::Show)
}

/// `connect` for a session whose refusal is an expected answer (failback
/// asking a primary peer who it is): the peer's log lines go only to the
/// debug log, not to the operator's terminal as errors.
pub fn connect_quiet(s: &Standby) -> Result<Connection> {
    connect_with(s, Relay::Quiet)
}

fn connect_with(s: &Standby, relay: Relay) -> Result<Connection> {
    let ssh = matches!(s.transport, Transport::Ssh(_));
    let mut cmd = command(s)?.own_process_group();
    if ssh {
        // ssh has nothing to clean up, and in its own process group a
        // killed snapsite would leave it hanging on an unreachable host.
        cmd = cmd.die_with_parent();
    }
    tracing::info!(cmd = %cmd.display(), "connecting to standby");
    let (mut running, stderr) = cmd.spawn_relayed(Stdio::piped(), Stdio::piped(), relay)?;
    let stdin = running.child.stdin.take().expect("piped");
    let stdout = running.child.stdout.take().expect("piped");
    if let Ok(mut l) = LIVE.lock() {
        l.push(running.child.id());
    }
    let t = Some(io_timeout(s));
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    Ok(Connection {
        running,
        stderr,
        ssh,
        reader: Reader::new(BufReader::with_capacity(
            1 << 20,
            Deadline::new(stdout, t, "the standby").flag_stall(stalled.clone()),
        )),
        writer: Writer::new(BufWriter::with_capacity(
            1 << 20,
            Deadline::new(stdin, t, "the standby").flag_stall(stalled.clone()),
        )),
        stalled,
    })
}

impl Connection {
    pub fn display(&self) -> String {
        self.running.display()
    }

    /// The error of a handshake that did not come: with what the transport
    /// said on stderr (ssh's own reason, once it has exited) in the message,
    /// and a hint that matches the cause.
    pub fn explain_no_handshake(&mut self, e: Error) -> Error {
        // ssh exits at once after an auth or host key failure; give its
        // last words a moment to arrive.
        let _ = self.stderr.wait_closed(std::time::Duration::from_secs(3));
        let lines = self.stderr.lines();
        explain(e, &lines, self.ssh, &self.display())
    }
    /// Close our end and wait for the standby process.
    pub fn close(self) -> Result<()> {
        let running = self.hang_up();
        let pid = running.child.id();
        let r = running.wait();
        forget(pid);
        r
    }
    /// Close our end (the writer first, flushing it), keeping the
    /// standby's process to wait for or kill.
    fn hang_up(self) -> Running {
        let Connection {
            running,
            reader,
            writer,
            ..
        } = self;
        drop(writer);
        drop(reader);
        running
    }
    /// Whether the session stalled: a read or write saw no progress for
    /// the stall timeout.
    pub fn stalled(&self) -> bool {
        self.stalled.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// The transport's process id (what [`Connection::abandon`] kills).
    pub fn pid(&self) -> u32 {
        self.running.child.id()
    }
    /// Give up on a stalled standby: kill the transport's process (by its
    /// PID, and its process group) at once, without waiting for it.
    pub fn abandon(self) {
        let Connection {
            running,
            reader,
            writer,
            ..
        } = self;
        tracing::warn!(pid = running.child.id(), cmd = %running.display(), "abandoning the stalled session: killing its process");
        // Killed first: dropping the writer flushes what it buffered, which
        // would wait the stall timeout again on a pipe nobody reads.
        let pid = running.child.id();
        running.kill();
        forget(pid);
        drop(writer);
        drop(reader);
    }
    /// Tear down after an error: close our end, give the standby a moment
    /// to clean up and exit, then kill it (by PID). A stalled session is
    /// abandoned at once.
    pub fn abort(self) {
        if self.stalled() {
            return self.abandon();
        }
        let mut running = self.hang_up();
        let pid = running.child.id();
        for _ in 0..300 {
            if let Ok(Some(_)) = running.child.try_wait() {
                let _ = running.wait();
                forget(pid);
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        running.kill();
        forget(pid);
    }
}

/// What a failed handshake means, from the transport's stderr lines.
fn explain(e: Error, stderr: &[String], ssh: bool, cmd: &str) -> Error {
    // The transport's own words, without the standby's ordinary log lines.
    let said: Vec<&str> = stderr
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let text = said.join("\n").to_ascii_lowercase();
    let got_garbage = e.message.contains("not speaking snapsite protocol");
    let hint = if text.contains("permission denied") {
        "authentication failed: the standby did not accept this site's key. Check standby.identity and standby.user, and that the standby's authorized_keys holds this key's public half (with the forced command `snapsite serve --stdio`)".to_string()
    } else if text.contains("host key verification failed")
        || text.contains("remote host identification has changed")
        || text.contains("no matching host key")
    {
        "ssh does not know (or no longer trusts) the standby's host key: compare its fingerprint with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the standby, then add it to known_hosts (`ssh-keyscan HOST >> ~/.ssh/known_hosts`) as the user snapsite runs as".to_string()
    } else if [
        "timed out",
        "no route to host",
        "connection refused",
        "network is unreachable",
        "could not resolve hostname",
        "name or service not known",
        "temporary failure in name resolution",
        "connection closed by",
        "connection reset",
    ]
    .iter()
    .any(|p| text.contains(p))
    {
        "the standby is unreachable: check standby.host and standby.port, that sshd runs there, and the network between the sites (standby.connect_timeout bounds the wait)".to_string()
    } else if got_garbage {
        "the other side printed something on stdout before the snapsite handshake: the remote command must be `snapsite serve --stdio` (the authorized_keys forced command), and the login must print nothing (no echo in .bashrc/.profile, no banner on stdout)".to_string()
    } else if ssh {
        "ssh connected but the remote command did not answer: is the remote command `snapsite serve --stdio` (installed on the standby, on its PATH, or given by path in standby.remote_command)?".to_string()
    } else {
        "is the standby's command `snapsite serve --stdio`, and does it start (run it by hand to see)?".to_string()
    };
    let mut msg = e.message.clone();
    if !said.is_empty() {
        msg.push_str(&format!(
            "; {} said: {}",
            if ssh { "ssh" } else { "the standby command" },
            said.join(" | ")
        ));
    }
    msg.push_str(&format!(" (via `{cmd}`)"));
    Error::new(e.kind, msg).with_hint(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_words_intact() {
        assert_eq!(shell_quote("serve"), "serve");
        assert_eq!(shell_quote("/etc/snap site.toml"), "'/etc/snap site.toml'");
        assert_eq!(shell_quote("a'b;$(x)"), "'a'\\''b;$(x)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn ssh_argv() {
        let s = Standby::from_toml(
            r#"transport = "ssh"
host = "stb"
user = "root"
port = 2222
remote_command = ["/usr/local/bin/snapsite", "serve", "--stdio", "--config", "/etc/s s.toml"]"#,
        )
        .unwrap();
        let c = command(&s).unwrap();
        let argv: Vec<String> = c
            .argv()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let host = argv.iter().position(|a| a == "stb").unwrap();
        assert_eq!(argv[0], "ssh");
        assert!(argv[..host].windows(2).any(|w| w == ["-p", "2222"]));
        assert!(argv[..host].windows(2).any(|w| w == ["-l", "root"]));
        assert!(
            argv[..host]
                .windows(2)
                .any(|w| w == ["-o", "BatchMode=yes"])
        );
        assert_eq!(argv[host - 1], "--");
        assert_eq!(
            argv[host + 1..],
            [
                "/usr/local/bin/snapsite",
                "serve",
                "--stdio",
                "--config",
                "'/etc/s s.toml'"
            ]
        );
    }
}
