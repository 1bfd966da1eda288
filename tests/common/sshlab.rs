//! A real OpenSSH between two network namespaces: an sshd in the standby's
//! namespace, reached from the primary's over a veth pair, with keys and
//! files under `<dir>/ssh`. Used by tests/ssh.rs (a whole cycle over ssh)
//! and tests/ssh_errors.rs (what a failing ssh tells the user).
//! Namespaces and the sshd are removed by exact name and PID on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use super::{sh, snapsite_exe};

/// Why this machine cannot run sshd in namespaces, if it cannot.
pub fn sshd_prerequisites() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces".into());
    }
    for p in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        if !Path::new(p).exists() {
            return Some(format!(
                "{p} is missing (apt-get install openssh-server openssh-client)"
            ));
        }
    }
    if Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("`ip netns` is not available (apt-get install iproute2)".into());
    }
    None
}

pub struct SshLab {
    pub ns_pri: String,
    pub ns_stb: String,
    pub ip_stb: String,
    /// Keys, sshd_config, sshd.log, known_hosts.
    pub dir: PathBuf,
    sshd_pid: Option<i32>,
}

impl SshLab {
    /// `tag` and `subnet` keep labs of different test binaries apart
    /// (namespaces `snapsite-<tag><pid>-p/-s`, addresses `10.<subnet>.x.1/2`).
    /// Keys `host_key` and `id` always, and `extra_keys`; `id` is authorized
    /// with `forced_command`; `known_hosts` holds the real host key.
    pub fn new(
        dir: &Path,
        tag: &str,
        subnet: u8,
        forced_command: &str,
        extra_keys: &[&str],
    ) -> SshLab {
        let n = std::process::id() % 10000;
        let octet = (std::process::id() + u32::from(subnet)) % 250 + 1;
        let mut lab = SshLab {
            ns_pri: format!("snapsite-{tag}{n}-p"),
            ns_stb: format!("snapsite-{tag}{n}-s"),
            ip_stb: format!("10.{subnet}.{octet}.2"),
            dir: dir.join("ssh"),
            sshd_pid: None,
        };
        std::fs::create_dir_all(&lab.dir).unwrap();
        let (vp, vs) = (format!("s{tag}v{n}p"), format!("s{tag}v{n}s"));
        sh(&["ip", "netns", "add", &lab.ns_pri]);
        sh(&["ip", "netns", "add", &lab.ns_stb]);
        sh(&[
            "ip", "link", "add", &vp, "type", "veth", "peer", "name", &vs,
        ]);
        sh(&["ip", "link", "set", &vp, "netns", &lab.ns_pri]);
        sh(&["ip", "link", "set", &vs, "netns", &lab.ns_stb]);
        let pri_addr = format!("10.{subnet}.{octet}.1/24");
        let stb_addr = format!("{}/24", lab.ip_stb);
        for (ns, dev, addr) in [(&lab.ns_pri, &vp, &pri_addr), (&lab.ns_stb, &vs, &stb_addr)] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let d = lab.dir.display().to_string();
        for key in ["host_key", "id"].iter().chain(extra_keys) {
            sh(&[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                &format!("{d}/{key}"),
            ]);
        }
        let pubkey = std::fs::read_to_string(format!("{d}/id.pub")).unwrap();
        std::fs::write(
            format!("{d}/authorized_keys"),
            format!("command=\"{forced_command}\",restrict {pubkey}"),
        )
        .unwrap();
        lab.write_known_hosts("known_hosts", "host_key");
        std::fs::write(
            format!("{d}/sshd_config"),
            format!(
                "ListenAddress {}:22\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
                lab.ip_stb
            ),
        )
        .unwrap();
        // sshd's privilege separation directory; harmless to leave in place.
        std::fs::create_dir_all("/run/sshd").unwrap();
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.ns_stb,
            "/usr/sbin/sshd",
            "-f",
            &format!("{d}/sshd_config"),
            "-E",
            &format!("{d}/sshd.log"),
        ]);
        for _ in 0..100 {
            if let Ok(p) = std::fs::read_to_string(format!("{d}/sshd.pid")) {
                if let Ok(pid) = p.trim().parse() {
                    lab.sshd_pid = Some(pid);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            lab.sshd_pid.is_some(),
            "sshd did not start: {}",
            std::fs::read_to_string(format!("{d}/sshd.log")).unwrap_or_default()
        );
        lab
    }

    /// A known_hosts file `name` (in the lab's dir) naming the standby with
    /// the public half of `key`.
    pub fn write_known_hosts(&self, name: &str, key: &str) {
        let public = std::fs::read_to_string(self.dir.join(format!("{key}.pub"))).unwrap();
        std::fs::write(self.dir.join(name), format!("{} {public}", self.ip_stb)).unwrap();
    }

    /// A `[standby]` body: ssh as root with `key` and the known_hosts file
    /// `known_hosts`, then `options` (each `"Name=value"`).
    pub fn standby(&self, key: &str, known_hosts: &str, options: &[&str]) -> String {
        let d = self.dir.display();
        let mut opts = format!("\"UserKnownHostsFile={d}/{known_hosts}\"");
        for o in options {
            opts.push_str(&format!(", \"{o}\""));
        }
        format!(
            "transport = \"ssh\"\nhost = \"{}\"\nuser = \"root\"\nidentity = \"{d}/{key}\"\nssh_options = [{opts}]\n",
            self.ip_stb
        )
    }

    /// `snapsite --config cfg args…` inside the primary's namespace.
    pub fn run_on_primary(&self, cfg: &Path, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns_pri, snapsite_exe(), "--config"])
            .arg(cfg)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for SshLab {
    fn drop(&mut self) {
        if let Some(pid) = self.sshd_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for ns in [&self.ns_pri, &self.ns_stb] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
