//! How `ship` reaches the standby's `snapsite serve --stdio`: a local child
//! process, OpenSSH, or any configured argv. One protocol, three pipes.

use std::io::{BufReader, BufWriter};
use std::process::{ChildStdin, ChildStdout, Stdio};

use crate::base::cmd::{Cmd, Running};
use crate::base::config::{Standby, Transport};
use crate::base::error::{Error, Result};
use crate::wire::stream::{Deadline, Reader, Writer};

/// How long `ship` waits for the standby to answer or accept data before it
/// gives up (the standby may verify a large snapshot before it acks).
/// `SNAPSITE_IO_TIMEOUT` (e.g. `30s`) overrides it.
pub fn io_timeout() -> std::time::Duration {
    std::env::var("SNAPSITE_IO_TIMEOUT")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(std::time::Duration::from_secs(600))
}

pub struct Connection {
    running: Running,
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
    let cmd = command(s)?.own_process_group();
    tracing::info!(cmd = %cmd.display(), "connecting to standby");
    let mut running = cmd.spawn_stdio(Stdio::piped(), Stdio::piped(), false)?;
    let stdin = running.child.stdin.take().expect("piped");
    let stdout = running.child.stdout.take().expect("piped");
    let t = Some(io_timeout());
    Ok(Connection {
        running,
        reader: Reader::new(BufReader::with_capacity(
            1 << 20,
            Deadline::new(stdout, t, "the standby"),
        )),
        writer: Writer::new(BufWriter::with_capacity(
            1 << 20,
            Deadline::new(stdin, t, "the standby"),
        )),
    })
}

impl Connection {
    pub fn display(&self) -> String {
        self.running.display()
    }
    /// Close our end and wait for the standby process.
    pub fn close(self) -> Result<()> {
        let Connection {
            running,
            reader,
            writer,
        } = self;
        drop(writer);
        drop(reader);
        running.wait()
    }
    /// Tear down after an error: close our end, give the standby a moment
    /// to clean up and exit, then kill it (by PID).
    pub fn abort(self) {
        let Connection {
            mut running,
            reader,
            writer,
        } = self;
        drop(writer);
        drop(reader);
        for _ in 0..300 {
            if let Ok(Some(_)) = running.child.try_wait() {
                let _ = running.wait();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        running.kill();
    }
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
