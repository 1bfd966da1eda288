//! What a new user meets when ssh to the standby fails (issue 28 item 3):
//! the error line carries ssh's own reason and a hint that matches it
//! (unaccepted key, unknown host key, a login that prints on stdout, an
//! unreachable host), `ConnectTimeout` bounds the wait, and a SIGKILLed
//! `snapsite check` takes its ssh child with it. Real OpenSSH: an sshd in a
//! network namespace, reached from another one over a veth pair (as
//! tests/ssh.rs); a TCP listener that never speaks for the hanging host.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A primary config whose four volumes are plain directories (nothing of
/// them is needed before the handshake) and the given `[standby]`.
fn primary_config(dir: &Path, name: &str, standby: &str) -> PathBuf {
    let mut s = format!(
        "site = \"primary\"\nstate_dir = \"{}\"\n",
        dir.join("state").display()
    );
    for r in ROLES {
        for sub in ["live", "snap"] {
            std::fs::create_dir_all(dir.join(sub).join(r)).unwrap();
        }
        s.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{d}/live/{r}\"\nsnapshot_dir = \"{d}/snap/{r}\"\n",
            d = dir.display()
        ));
    }
    s.push_str("[replay]\nnone = true\n");
    s.push_str(&format!("[standby]\n{standby}\n"));
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, s).unwrap();
    p
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn both(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `check`'s line about the standby, with the hint line after it.
fn standby_problem(o: &Output) -> String {
    let text = stdout(o);
    let start = text
        .find("standby   ")
        .unwrap_or_else(|| panic!("no standby line: {}", both(o)));
    text[start..].to_string()
}

/// A TCP port that accepts connections (the kernel completes the
/// handshake) and never says anything: a host that hangs ssh.
fn silent_listener() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

#[test]
fn a_silent_host_fails_within_the_connect_timeout_with_an_unreachable_hint() {
    if Command::new("ssh").arg("-V").output().is_err() {
        assert!(!must_be_real(), "ssh is not installed");
        eprintln!("SKIP: ssh is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_l, port) = silent_listener();
    let d = dir.path().display();
    let cfg = primary_config(
        dir.path(),
        "silent",
        &format!(
            "transport = \"ssh\"\nhost = \"127.0.0.1\"\nport = {port}\nidentity = \"{d}/nokey\"\nconnect_timeout = \"2s\"\nssh_options = [\"UserKnownHostsFile={d}/known_hosts\", \"StrictHostKeyChecking=yes\"]\n"
        ),
    );
    let t = Instant::now();
    let out = run_snapsite(&cfg, &["check"], &[]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    // 2 s of ConnectTimeout (banner exchange), plus the rest of check.
    assert!(took < Duration::from_secs(8), "check took {took:?}");
    let line = standby_problem(&out);
    assert!(
        line.contains("ConnectTimeout=2")
            && line.contains("PROBLEM")
            && line.contains("ssh said:")
            && line.contains("timed out")
            && line.contains("the standby is unreachable"),
        "{}",
        both(&out)
    );
}

/// The children of `pid` (from /proc/PID/task/*/children).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Gone: no such process, or a zombie waiting for its new parent.
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn a_killed_check_takes_its_hanging_ssh_child_with_it() {
    if Command::new("ssh").arg("-V").output().is_err() {
        assert!(!must_be_real(), "ssh is not installed");
        eprintln!("SKIP: ssh is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_l, port) = silent_listener();
    let d = dir.path().display();
    let cfg = primary_config(
        dir.path(),
        "hang",
        &format!(
            "transport = \"ssh\"\nhost = \"127.0.0.1\"\nport = {port}\nidentity = \"{d}/nokey\"\nconnect_timeout = \"5m\"\nssh_options = [\"UserKnownHostsFile={d}/known_hosts\", \"StrictHostKeyChecking=yes\"]\n"
        ),
    );
    let mut child = Command::new(snapsite_exe())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ssh = loop {
        let ssh = children(pid).into_iter().find(|c| {
            std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|s| s.trim() == "ssh")
        });
        if let Some(s) = ssh {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no ssh child of snapsite check appeared");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Hanging on the silent host: in its own process group.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!gone(ssh), "ssh should still be waiting for the banner");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    while !gone(ssh) && t.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let survived = !gone(ssh);
    if survived {
        // Clean up what we found, by its exact PID, before failing.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(ssh as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        !survived,
        "ssh (pid {ssh}) outlived the SIGKILLed snapsite by more than a second"
    );
}

/// An sshd in one namespace, the client in another; one authorized key
/// whose forced command only prints a greeting on stdout.
struct SshLab {
    ns_pri: String,
    ns_stb: String,
    ip_stb: String,
    dir: PathBuf,
    sshd_pid: Option<i32>,
}

impl SshLab {
    fn new(dir: &Path) -> SshLab {
        let n = std::process::id() % 10000;
        let octet = (std::process::id() + 97) % 250 + 1;
        let mut lab = SshLab {
            ns_pri: format!("snapsite-e{n}-p"),
            ns_stb: format!("snapsite-e{n}-s"),
            ip_stb: format!("10.232.{octet}.2"),
            dir: dir.join("ssh"),
            sshd_pid: None,
        };
        std::fs::create_dir_all(&lab.dir).unwrap();
        let (vp, vs) = (format!("sev{n}p"), format!("sev{n}s"));
        sh(&["ip", "netns", "add", &lab.ns_pri]);
        sh(&["ip", "netns", "add", &lab.ns_stb]);
        sh(&[
            "ip", "link", "add", &vp, "type", "veth", "peer", "name", &vs,
        ]);
        sh(&["ip", "link", "set", &vp, "netns", &lab.ns_pri]);
        sh(&["ip", "link", "set", &vs, "netns", &lab.ns_stb]);
        let pri_addr = format!("10.232.{octet}.1/24");
        let stb_addr = format!("{}/24", lab.ip_stb);
        for (ns, dev, addr) in [(&lab.ns_pri, &vp, &pri_addr), (&lab.ns_stb, &vs, &stb_addr)] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        let d = lab.dir.display().to_string();
        for key in ["host_key", "other_host_key", "id", "stranger"] {
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
            format!("command=\"echo Welcome to the standby\",restrict {pubkey}"),
        )
        .unwrap();
        // known_hosts: the real host key, and another file with a wrong one.
        let host_pub = std::fs::read_to_string(format!("{d}/host_key.pub")).unwrap();
        let other_pub = std::fs::read_to_string(format!("{d}/other_host_key.pub")).unwrap();
        std::fs::write(
            format!("{d}/known_hosts"),
            format!("{} {}", lab.ip_stb, host_pub),
        )
        .unwrap();
        std::fs::write(
            format!("{d}/wrong_known_hosts"),
            format!("{} {}", lab.ip_stb, other_pub),
        )
        .unwrap();
        std::fs::write(
            format!("{d}/sshd_config"),
            format!(
                "ListenAddress {}:22\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
                lab.ip_stb
            ),
        )
        .unwrap();
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
        assert!(lab.sshd_pid.is_some(), "sshd did not start");
        lab
    }

    fn standby(&self, key: &str, known_hosts: &str) -> String {
        let d = self.dir.display();
        format!(
            "transport = \"ssh\"\nhost = \"{}\"\nuser = \"root\"\nidentity = \"{d}/{key}\"\nssh_options = [\"UserKnownHostsFile={d}/{known_hosts}\", \"StrictHostKeyChecking=yes\"]\n",
            self.ip_stb
        )
    }

    fn check(&self, cfg: &Path) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns_pri, snapsite_exe(), "--config"])
            .arg(cfg)
            .arg("check")
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

fn sshd_prerequisites() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces".into());
    }
    for p in ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing"));
        }
    }
    if Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("`ip netns` is not available".into());
    }
    None
}

/// Three ways a first `check` over ssh fails, each with ssh's reason in the
/// error line and the hint for that cause.
#[test]
fn ssh_failures_name_their_cause() {
    if let Some(reason) = sshd_prerequisites() {
        assert!(!must_be_real(), "cannot run under CI: {reason}");
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("snapsite-ssh-errors-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let lab = SshLab::new(dir.path());

    // A key the standby does not know.
    let cfg = primary_config(dir.path(), "auth", &lab.standby("stranger", "known_hosts"));
    let out = lab.check(&cfg);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let line = standby_problem(&out);
    assert!(
        line.contains("ssh said:")
            && line.contains("Permission denied")
            && line.contains("authentication failed")
            && !line.contains("does the login print"),
        "{}",
        both(&out)
    );

    // The standby's host key is not the one known_hosts holds.
    let cfg = primary_config(
        dir.path(),
        "hostkey",
        &lab.standby("id", "wrong_known_hosts"),
    );
    let out = lab.check(&cfg);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let line = standby_problem(&out);
    assert!(
        line.contains("Host key verification failed") && line.contains("host key:"),
        "{}",
        both(&out)
    );

    // The key is accepted, but what runs there prints a greeting on stdout.
    let cfg = primary_config(dir.path(), "stdout", &lab.standby("id", "known_hosts"));
    let out = lab.check(&cfg);
    assert_eq!(out.status.code(), Some(1), "{}", both(&out));
    let line = standby_problem(&out);
    assert!(
        line.contains("not speaking snapsite protocol")
            && line.contains("Welcome")
            && line.contains("printed something on stdout before the snapsite handshake"),
        "{}",
        both(&out)
    );
}
