//! What a new user hit in the issue 28 trial, on a real two-site btrfs lab:
//! `check` on a standby without a replay or with the redolog not last,
//! `rehearse` without a replay, `run`'s log on a pipe (plain, one line per
//! set), `status` about a killed `run`, the full-set metric on both sites,
//! `sets`' FROM_TIME with its offset, the one Prometheus path rule.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::output::text;
use common::*;

#[test]
fn check_refuses_a_standby_without_replay_and_a_redolog_not_last() {
    require_real!();
    let dir = tempfile::tempdir().unwrap();
    let none = standby_config(dir.path(), "none", "");
    let out = run_snapsite(&none, &["check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("replay    PROBLEM: no [replay]")),
        "{}",
        text(&out)
    );

    let meant = standby_config(dir.path(), "meant", "[replay]\nnone = true\n");
    let out = run_snapsite(&meant, &["check"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("needs no replay"),
        "{}",
        text(&out)
    );

    let first = standby_config(
        dir.path(),
        "first",
        "[replay]\nnone = true\n[set]\norder = [\"redolog\", \"mysql\", \"blob\", \"index\"]\n",
    );
    let out = run_snapsite(&first, &["check"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("put `redolog` last"),
        "{}",
        text(&out)
    );
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// `status` text's line about `run`.
fn run_line(cfg: &Path) -> String {
    let out = run_snapsite(cfg, &["status"], &[]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("snapsite run"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_first_run_as_a_new_user_sees_it() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let mut pri = std::fs::read_to_string(&lab.pri_cfg).unwrap();
    pri.push_str("\n[schedule]\nfull_set_interval = \"1h\"\n");
    pri = pri.replacen(
        "[[volume]]",
        "[set]\nsafety_margin = \"30s\"\n[[volume]]",
        1,
    );
    std::fs::write(&lab.pri_cfg, pri).unwrap();

    // `run` with stderr on a pipe: plain lines, one "set taken" per set.
    let out = lab.run(&lab.pri_cfg, &["run", "--once"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\x1b'), "colour codes in a piped log:\n{err}");
    let sets = json(&lab.run(&lab.pri_cfg, &["sets", "--json"]));
    let n = sets.as_array().unwrap().len();
    assert!(n >= 1, "{sets}");
    assert_eq!(err.matches("set taken").count(), n, "{err}");

    // The full-set metric means the set's time on both sites.
    let p = json(&lab.run(&lab.pri_cfg, &["status", "--json"]));
    let s = json(&lab.run(&lab.stb_cfg, &["status", "--json"]));
    let (pt, st) = (
        &p["newest_complete_full_set"],
        &s["newest_complete_full_set"],
    );
    assert!(
        !pt.is_null() && pt["set_id"] == st["set_id"] && pt["time"] == st["time"],
        "primary {pt}, standby {st}"
    );
    let prom = lab.dir.path().join("p.prom");
    let sprom = lab.dir.path().join("s.prom");
    lab.ok(
        &lab.pri_cfg,
        &["status", "--prometheus", prom.to_str().unwrap()],
    );
    lab.ok(
        &lab.stb_cfg,
        &["status", "--prometheus", sprom.to_str().unwrap()],
    );
    let metric = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("snapsite_full_set_timestamp_seconds"))
            .and_then(|l| l.split_whitespace().last().map(str::to_string))
    };
    assert!(
        metric(&prom).is_some() && metric(&prom) == metric(&sprom),
        "{:?} {:?}",
        metric(&prom),
        metric(&sprom)
    );

    // One path rule: a relative --prometheus is refused, as in the config.
    let out = lab.run(&lab.pri_cfg, &["status", "--prometheus", "rel.prom"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prometheus"));

    // `sets` gives FROM_TIME with its UTC offset.
    let out = lab.ok(&lab.pri_cfg, &["sets"]);
    let row = out.lines().nth(1).unwrap_or_default();
    let re_ok = row.split_whitespace().nth(5).is_some_and(|w| {
        w.len() == 6 && (w.starts_with('+') || w.starts_with('-')) && w.as_bytes()[3] == b':'
    });
    assert!(re_ok, "{out}");

    // A standby without a replay: the rehearsal proves nothing, and says so.
    let stb = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    let cut = stb.find("[replay]").unwrap();
    let bare = lab.dir.path().join("standby-bare.toml");
    std::fs::write(&bare, &stb[..cut]).unwrap();
    let out = lab.run(&bare, &["rehearse"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOT PROVEN"),
        "{}",
        text(&out)
    );

    // `status` tells a running `run` from a killed one.
    let mut child = Command::new(snapsite_exe())
        .arg("--config")
        .arg(&lab.pri_cfg)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let t = Instant::now();
    let mut line = String::new();
    while t.elapsed() < Duration::from_secs(30) {
        line = run_line(&lab.pri_cfg);
        if line.contains(&format!("pid {pid} ")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let running = line.contains(&format!("pid {pid} running"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert!(running, "{line}");
    let line = run_line(&lab.pri_cfg);
    assert!(
        line.contains(&format!("pid {pid} not running (killed or crashed")),
        "{line}"
    );
}
