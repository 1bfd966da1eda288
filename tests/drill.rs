//! The failover drill (scripts/demo), shorter: two btrfs sites on loop
//! devices, sshd in a network namespace, MariaDB and the reference mail
//! store's writer on the primary, snapsite at a compressed cadence, the
//! primary killed, failover with the mailstore replay plugin, and the
//! verdict: nothing acknowledged before the last shipped redolog snapshot
//! may be lost, and the three stores must agree with the redolog.
//! Runs in a non-UTC zone so `--fromTime` really is local time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::drillcheck::{assert_zero_loss, is_zmplayredo_time};
use common::*;

fn drill_prerequisites() -> Option<String> {
    for p in [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadb-install-db",
        "/usr/bin/mariadb",
        "/usr/sbin/sshd",
        "/usr/bin/ssh",
    ] {
        if !Path::new(p).exists() {
            return Some(format!(
                "{p} is missing (apt-get install mariadb-server openssh-server openssh-client)"
            ));
        }
    }
    if !Path::new("/usr/share/zoneinfo/America/New_York").exists() {
        return Some("tzdata is missing (apt-get install tzdata)".into());
    }
    None
}

#[test]
fn failover_drill_loses_nothing_before_the_last_shipped_redolog_snapshot() {
    require_real!();
    if skip_because("drill", drill_prerequisites()) {
        return;
    }
    let dir = var_tmp_dir("snapsite-drill-");
    let demo = dir.path().join("drill");
    let verdict_path = dir.path().join("verdict.json");
    let n = std::process::id() % 10000;
    let name = format!("sdt{n}");
    let net = format!("10.233.{}", std::process::id() % 250 + 1);
    let t0 = Instant::now();
    // A hung drill is stopped after 4 minutes.
    let (status, out, err) = run_demo(
        demo_command(&demo, &name, &net).env("VERDICT_JSON", &verdict_path),
        Duration::from_secs(240),
    );
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("drill took {secs:.1} s\n{out}");
    assert!(status.success(), "drill failed ({status}):\n{out}\n{err}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&verdict_path).unwrap()).unwrap();
    assert_zero_loss(&v);
    // The replay got snapsite's --fromTime in zmplayredo's format, local
    // time (`check` prints the configured template, `{from_time}`, first).
    let args: Vec<&str> = out
        .split("--fromTime '")
        .skip(1)
        .filter_map(|s| s.split('\'').next())
        .filter(|a| !a.contains('{'))
        .collect();
    assert!(!args.is_empty(), "no replay --fromTime in:\n{out}");
    for arg in args {
        assert!(is_zmplayredo_time(arg), "--fromTime `{arg}` in:\n{out}");
    }
    assert!(out.contains("=== snapsite failover report ==="), "{out}");
    assert!(out.contains("verdict: ZERO LOSS"), "{out}");
    // Cleaned up: no namespace, no mount, no files.
    let netns = sh(&["ip", "netns", "list"]);
    assert!(!netns.contains(&name), "namespaces left behind: {netns}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&demo.display().to_string()),
        "mounts left behind"
    );
    assert!(!demo.exists(), "{} left behind", demo.display());
    assert!(
        secs < 120.0,
        "the CI drill must stay under 2 minutes: {secs:.1} s"
    );
}
