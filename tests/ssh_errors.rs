//! What a new user meets when ssh to the standby fails (issue 28 item 3):
//! the error line carries ssh's own reason and a hint that matches it
//! (unaccepted key, unknown host key, a login that prints on stdout, an
//! unreachable host), `ConnectTimeout` bounds the wait, and a SIGKILLed
//! `snapsite check` takes its ssh child with it. Real OpenSSH: an sshd in a
//! network namespace, reached from another one over a veth pair (as
//! tests/ssh.rs); a TCP listener that never speaks for the hanging host.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::sshlab::{SshLab, sshd_prerequisites};
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

/// `check`'s line about the standby, with the hint line after it.
fn standby_problem(o: &Output) -> String {
    let text = stdout(o);
    let start = text
        .find("standby   ")
        .unwrap_or_else(|| panic!("no standby line: {}", both(o)));
    text[start..].to_string()
}

/// A TCP port that accepts connections (the kernel completes the
/// handshake) and never says anything: a host that hangs ssh. `cfg` is a
/// primary config whose standby is that host.
struct SilentHost {
    _listener: std::net::TcpListener,
    cfg: PathBuf,
    _dir: tempfile::TempDir,
}

impl SilentHost {
    /// `None` (the test skips) where ssh is not installed.
    fn new(connect_timeout: &str) -> Option<SilentHost> {
        let missing = Command::new("ssh").arg("-V").output().is_err();
        if skip_because(
            "silent host",
            missing.then(|| "ssh is not installed".into()),
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let d = dir.path().display();
        let cfg = primary_config(
            dir.path(),
            "silent",
            &format!(
                "transport = \"ssh\"\nhost = \"127.0.0.1\"\nport = {port}\nidentity = \"{d}/nokey\"\nconnect_timeout = \"{connect_timeout}\"\nssh_options = [\"UserKnownHostsFile={d}/known_hosts\", \"StrictHostKeyChecking=yes\"]\n"
            ),
        );
        Some(SilentHost {
            _listener: l,
            cfg,
            _dir: dir,
        })
    }
}

#[test]
fn a_silent_host_fails_within_the_connect_timeout_with_an_unreachable_hint() {
    let Some(host) = SilentHost::new("2s") else {
        return;
    };
    let cfg = &host.cfg;
    let t = Instant::now();
    let out = run_snapsite(cfg, &["check"], &[]);
    let took = t.elapsed();
    assert_exit(&out, 1);
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
    let Some(host) = SilentHost::new("5m") else {
        return;
    };
    let cfg = &host.cfg;
    let mut child = spawn_snapsite(cfg, &["check"]);
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

/// Three ways a first `check` over ssh fails, each with ssh's reason in the
/// error line and the hint for that cause.
#[test]
fn ssh_failures_name_their_cause() {
    if skip_because("ssh errors", sshd_prerequisites()) {
        return;
    }
    let dir = var_tmp_dir("snapsite-ssh-errors-");
    // The forced command only prints a greeting; `other_host_key` makes a
    // known_hosts file with the wrong key, `stranger` a key not authorized.
    let lab = SshLab::new(
        dir.path(),
        "e",
        232,
        "echo Welcome to the standby",
        &["other_host_key", "stranger"],
    );
    lab.write_known_hosts("wrong_known_hosts", "other_host_key");
    // `check` with this key and known_hosts file fails: its line about
    // the standby, and its whole output.
    let failed_check = |name: &str, key: &str, known_hosts: &str| {
        let standby = lab.standby(key, known_hosts, &["StrictHostKeyChecking=yes"]);
        let out = lab.run_on_primary(&primary_config(dir.path(), name, &standby), &["check"]);
        assert_exit(&out, 1);
        (standby_problem(&out), both(&out))
    };

    // A key the standby does not know.
    let (line, all) = failed_check("auth", "stranger", "known_hosts");
    assert!(
        line.contains("ssh said:")
            && line.contains("Permission denied")
            && line.contains("authentication failed")
            && !line.contains("does the login print"),
        "{all}"
    );

    // The standby's host key is not the one known_hosts holds.
    let (line, all) = failed_check("hostkey", "id", "wrong_known_hosts");
    assert!(
        line.contains("Host key verification failed") && line.contains("host key:"),
        "{all}"
    );

    // The key is accepted, but what runs there prints a greeting on stdout.
    let (line, all) = failed_check("stdout", "id", "known_hosts");
    assert!(
        line.contains("not speaking snapsite protocol")
            && line.contains("Welcome")
            && line.contains("printed something on stdout before the snapsite handshake"),
        "{all}"
    );
}
