//! `snapsite run` under conditions an admin wants to hear about, for real
//! (btrfs volumes, the standby reached through a `command` transport whose
//! behaviour the test switches: refuse, serve, hang):
//! - `[notify]`: one message per state change, not per failed cycle;
//! - under systemd: journal priorities on stderr, sd_notify READY and
//!   WATCHDOG pings that stop when the loop is stuck in a hung transfer;
//! - the double signal (signal-hook) exits at once with 128 + SIGTERM.

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Setup {
    lab: Lab,
    cfg: PathBuf,
    mode: PathBuf,
    hang_pid: PathBuf,
    notes: PathBuf,
}

/// A primary whose standby is a script: `fail` exits 1, `ok` runs the
/// standby's `serve --stdio`, `hang` records its PID and sleeps.
fn setup(extra: &str) -> Setup {
    let lab = Lab::new("[\"/bin/true\"]");
    let d = lab.dir.path().to_path_buf();
    let mode = d.join("mode");
    let hang_pid = d.join("hang.pid");
    let notes = d.join("notes.log");
    std::fs::write(&mode, "fail").unwrap();
    let script = format!(
        "#!/bin/sh\ncase \"$(cat '{mode}')\" in\n  ok) exec '{exe}' --config '{stb}' serve --stdio ;;\n  hang) echo $$ > '{pid}'; exec sleep 600 ;;\n  *) echo 'standby: refused' >&2; exit 1 ;;\nesac\n",
        mode = mode.display(),
        exe = snapsite_exe(),
        stb = lab.stb_cfg.display(),
        pid = hang_pid.display()
    );
    let recorder = d.join("record.sh");
    write_script(
        &recorder,
        &format!(
            "#!/bin/sh\nprintf '%s %s %s | %s\\n' \"$1\" \"$2\" \"$3\" \"$4\" >> '{}'\n",
            notes.display()
        ),
    );
    let cfg = lab.script_transport("primary-cmd", &script, "");
    let mut f = std::fs::OpenOptions::new().append(true).open(&cfg).unwrap();
    write!(
        f,
        "\n[schedule]\nfull_set_interval = \"1h\"\nretry_min = \"1s\"\nretry_max = \"1s\"\n[notify]\ncommand = [\"{}\", \"{{event}}\", \"{{severity}}\", \"{{site}}\", \"{{message}}\"]\nship_failing_after = \"2s\"\n{extra}",
        recorder.display()
    )
    .unwrap();
    Setup {
        lab,
        cfg,
        mode,
        hang_pid,
        notes,
    }
}

impl Setup {
    fn notes(&self) -> Vec<String> {
        std::fs::read_to_string(&self.notes)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
    fn count(&self, prefix: &str) -> usize {
        self.notes()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

/// Kill by exact PID (the test's own children).
fn kill(pid: i32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn_run(cfg: &Path, log: &Path, env: &[(&str, String)]) -> Child {
    let stderr = std::fs::File::create(log).unwrap();
    let mut c = Command::new(snapsite_exe());
    c.arg("--config")
        .arg(cfg)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.stderr(stderr).spawn().unwrap()
}

fn stop(child: &mut Child) -> std::process::ExitStatus {
    kill(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > Duration::from_secs(30) {
            kill(child.id() as i32, nix::sys::signal::Signal::SIGKILL);
            return child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn one_notification_per_state_change_not_per_failed_cycle() {
    require_real!();
    let s = setup("");
    write_file(&s.lab.live("mysql").join("data"), &random_bytes(1, 4096));
    let log = s.lab.dir.path().join("run.log");
    let mut child = spawn_run(&s.cfg, &log, &[]);
    // Ship fails every second; after 2 s of failing: one `ship critical`.
    wait_for(
        "the ship-failing notification",
        Duration::from_secs(30),
        || s.count("ship critical") == 1,
    );
    // Several more failed cycles: still one.
    let failures = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("ship failed; will retry")
            .count()
    };
    let before = failures(&log);
    wait_for("three more failed ships", Duration::from_secs(30), || {
        failures(&log) >= before + 3
    });
    assert_eq!(s.count("ship critical"), 1, "{:?}", s.notes());
    // The standby answers again: one `ship ok`.
    std::fs::write(&s.mode, "ok").unwrap();
    wait_for("the ship-ok notification", Duration::from_secs(30), || {
        s.count("ship ok") == 1
    });
    std::thread::sleep(Duration::from_secs(3));
    let st = stop(&mut child);
    assert!(st.success(), "{st}");
    let notes = s.notes();
    assert_eq!(s.count("ship critical"), 1, "{notes:?}");
    assert_eq!(s.count("ship ok"), 1, "{notes:?}");
    let crit = notes
        .iter()
        .position(|l| l.starts_with("ship critical"))
        .unwrap();
    let ok = notes.iter().position(|l| l.starts_with("ship ok")).unwrap();
    assert!(crit < ok, "{notes:?}");
    assert!(
        notes[crit].contains(" primary | ship has failed since"),
        "site and message placeholders: {}",
        notes[crit]
    );
    // The recovery point was critical while nothing was shipped, and went
    // back to ok once a ship worked (status level, told once each).
    assert!(s.count("recovery_point critical") <= 1, "{notes:?}");
    assert!(s.count("recovery_point ok") <= 1, "{notes:?}");
    // A second run remembers what was told: nothing new to say at start.
    let n = notes.len();
    let mut child = spawn_run(&s.cfg, &log, &[]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(stop(&mut child).success());
    let again = s.notes();
    assert!(
        again[n..].iter().all(|l| !l.starts_with("ship ")),
        "a restart repeated itself: {again:?}"
    );
}

#[test]
fn under_systemd_errors_have_priority_3_and_the_watchdog_stops_when_the_loop_hangs() {
    require_real!();
    let s = setup("");
    let dir = s.lab.dir.path();
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log = dir.join("journal.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut child = Command::new(snapsite_exe())
        .arg("--config")
        .arg(&s.cfg)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut got: Vec<(Instant, String)> = Vec::new();
    let recv = |got: &mut Vec<(Instant, String)>, for_: Duration| {
        let t = Instant::now();
        let mut buf = [0u8; 4096];
        while t.elapsed() < for_ {
            if let Ok(n) = sock.recv(&mut buf) {
                got.push((
                    Instant::now(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                ));
            }
        }
    };
    // Failing ships with 1 s backoff: the loop sleeps and pings.
    recv(&mut got, Duration::from_secs(5));
    assert!(
        got.first().is_some_and(|(_, m)| m.starts_with("READY=1")),
        "{got:?}"
    );
    let pings_while_alive = got.iter().filter(|(_, m)| m == "WATCHDOG=1").count();
    assert!(
        pings_while_alive >= 4,
        "expected pings every <= 250 ms while the loop runs: {got:?}"
    );
    // Now the standby hangs: the next ship blocks in the handshake.
    std::fs::write(&s.mode, "hang").unwrap();
    wait_for("the hung transfer", Duration::from_secs(10), || {
        s.hang_pid.exists()
    });
    // What was sent before the transfer began is still queued: drain it.
    std::thread::sleep(Duration::from_millis(300));
    let mut queued = Vec::new();
    recv(&mut queued, Duration::from_millis(300));
    let mut stuck = Vec::new();
    recv(&mut stuck, Duration::from_secs(3));
    let hang_pid: i32 = std::fs::read_to_string(&s.hang_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Two signals: the first asks for a stop after the step (which hangs),
    // the second exits at once with 128 + 15.
    kill(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    kill(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    kill(hang_pid, nix::sys::signal::Signal::SIGKILL);
    if status.is_none() {
        kill(child.id() as i32, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let pings_while_stuck: Vec<_> = stuck.iter().filter(|(_, m)| m == "WATCHDOG=1").collect();
    assert!(
        pings_while_stuck.is_empty(),
        "the watchdog was pinged while the loop hung: {stuck:?}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(128 + 15),
        "a second SIGTERM exits at once with 143"
    );

    // Journal priorities: every line has one; errors are <3>, warnings <4>.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut errors = 0;
    for line in text.lines() {
        if line.starts_with("standby: ") {
            continue; // the transport child's own stderr, passed through
        }
        assert!(
            line.starts_with('<') && line.as_bytes().get(2) == Some(&b'>'),
            "line without a priority: {line}"
        );
        if line.contains("step failed") {
            assert!(line.starts_with("<3>"), "{line}");
            errors += 1;
        }
        if line.contains("ship failed; will retry") {
            assert!(line.starts_with("<4>"), "{line}");
        }
        if line.contains("run started") {
            assert!(line.starts_with("<6>"), "{line}");
        }
    }
    assert!(errors >= 2, "{text}");
}

#[test]
fn without_journal_stream_stderr_has_no_priority_prefixes() {
    require_real!();
    let s = setup("");
    let out = run_snapsite(
        &s.cfg,
        &["run", "--once"],
        // An inherited variable that names another stream does not count.
        &[("JOURNAL_STREAM", "1:1")],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("step failed"), "{err}");
    assert!(!err.lines().any(|l| l.starts_with("<3>")), "{err}");
}
