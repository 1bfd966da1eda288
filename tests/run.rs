//! `snapsite run` for real on btrfs (loop devices): about a minute with
//! short intervals, then SIGTERM; and `snapsite status` after a known
//! sequence of events.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn status(cfg: &Path) -> (i32, serde_json::Value) {
    let out = run_snapsite(cfg, &["status", "--json"], &[]);
    let code = out.status.code().unwrap();
    (code, json(&String::from_utf8_lossy(&out.stdout)))
}

fn count_kind(sets: &serde_json::Value, kind: &str) -> usize {
    sets.as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == kind && s["complete"] == true)
        .count()
}

#[test]
fn one_minute_run_takes_ships_prunes_and_stops_cleanly_on_sigterm() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let metrics = lab.dir.path().join("metrics/snapsite.prom");
    append_to(
        &lab.pri_cfg,
        &format!(
            r#"
[schedule]
full_set_interval = "20s"
redolog_interval = "5s"
retry_min = "1s"
retry_max = "4s"
[retention]
grid = "1x40s(keep=all) | 1x1m"
redolog_grid = "1x15s(keep=all)"
[status]
recovery_point_warning = "20s"
recovery_point_critical = "1m"
full_set_warning = "90s"
full_set_critical = "2m"
prometheus = "{}"
"#,
            metrics.display()
        ),
    );
    append_to(
        &lab.stb_cfg,
        "\n[retention]\ngrid = \"1x1m(keep=all)\"\nredolog_grid = \"1x10s(keep=all)\"\n[status]\nrecovery_point_warning = \"20s\"\nrecovery_point_critical = \"1m\"\nfull_set_warning = \"90s\"\n",
    );
    lab.fill_same(1, 256 * 1024);

    let log = lab.dir.path().join("run.log");
    let t0 = Instant::now();
    let mut child = Command::new(snapsite_exe())
        .arg("--config")
        .arg(&lab.pri_cfg)
        .args(["--log-format", "json", "run"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Whatever happens below, never leave the daemon running.
    struct Reap(nix::unistd::Pid);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGKILL);
        }
    }
    let reap = Reap(pid);

    // The application keeps writing while run works.
    let mut n = 0u64;
    let mut second_run_refused = false;
    let mut manual_done = false;
    while t0.elapsed() < Duration::from_secs(60) {
        n += 1;
        write_file(
            &lab.live("blob").join(format!("msg-{n}")),
            &random_bytes(n, 16 * 1024),
        );
        lab.append_redolog(&format!("op {n}"));
        if !second_run_refused && t0.elapsed() > Duration::from_secs(8) {
            // A second `run` on the same site is refused at once.
            let out = lab.run(&lab.pri_cfg, &["run", "--once"]);
            assert_eq!(out.status.code(), Some(1));
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("another `snapsite run`"), "{err}");
            second_run_refused = true;
        }
        if !manual_done && t0.elapsed() > Duration::from_secs(27) {
            // snapshot and ship by hand interleave with run under the site lock.
            lab.snapshot(true);
            lab.ship(&lab.pri_cfg);
            manual_done = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stop = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            stop.elapsed() < Duration::from_secs(60),
            "run did not stop within 60 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(reap);
    let logtext = std::fs::read_to_string(&log).unwrap();
    assert!(code.success(), "run exited {code}:\n{logtext}");
    eprintln!(
        "run stopped {:.1} s after SIGTERM",
        stop.elapsed().as_secs_f64()
    );

    // Structured logs: every line is JSON.
    let lines: Vec<serde_json::Value> = logtext.lines().map(json).collect();
    let msg = |m: &str| lines.iter().filter(|l| l["fields"]["message"] == m).count();
    assert_eq!(msg("run started"), 1, "{logtext}");
    assert_eq!(msg("run stopped"), 1, "{logtext}");
    assert!(msg("shipped") >= 10, "{logtext}");
    assert_eq!(msg("step failed"), 0, "{logtext}");

    let rec = json(&std::fs::read_to_string(lab.dir.path().join("state-pri/run.json")).unwrap());
    let full = rec["full_sets_taken"].as_u64().unwrap();
    let redo = rec["redolog_sets_taken"].as_u64().unwrap();
    let committed = rec["sets_committed"].as_u64().unwrap();
    let pruned = rec["sets_pruned"].as_u64().unwrap();
    eprintln!(
        "one-minute run: {full} full sets, {redo} redolog snapshots taken; {committed} sets committed by run (+1 manual); {pruned} pruned on the primary"
    );
    // 60 s with 20 s / 5 s slots: one full set at the start (mid-slot), then
    // one per 20 s boundary crossed before SIGTERM (the last perhaps not yet
    // taken): 3-4 full sets, or 5 when the run started just before a
    // boundary and stopped just after one; 8-9 redolog snapshots.
    let at = |k: &str| -> jiff::Timestamp { rec[k].as_str().unwrap().parse().unwrap() };
    let boundaries = |t: jiff::Timestamp| t.as_millisecond().div_euclid(20_000);
    let crossed = (boundaries(at("stopped_at")) - boundaries(at("started_at"))) as u64;
    assert!(
        (crossed..=crossed + 1).contains(&full) && (3..=5).contains(&full),
        "{full} full sets, {crossed} 20 s boundaries crossed: {rec}"
    );
    assert!((7..=10).contains(&redo), "{rec}");
    // Everything taken was committed on the standby (the manual ship may
    // have carried some of it), except perhaps a set taken just before SIGTERM.
    let stb_sets = json(&lab.ok(&lab.stb_cfg, &["sets", "--json"]));
    let stb_full = count_kind(&stb_sets, "full") as u64;
    let stb_redo = count_kind(&stb_sets, "redolog") as u64;
    eprintln!("standby holds {stb_full} full and {stb_redo} redolog sets, all complete");
    assert!(
        stb_sets
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["complete"] == true)
    );
    assert!(stb_full + stb_redo >= full + redo, "{stb_sets}");
    assert!(
        stb_full >= full.saturating_sub(1) && stb_full <= full,
        "{stb_sets}"
    );
    // The primary pruned by its grid: redologs older than 15 s are gone.
    let pri_sets = json(&lab.ok(&lab.pri_cfg, &["sets", "--json"]));
    let pri_redo = count_kind(&pri_sets, "redolog");
    assert!(pruned >= 3, "{rec}");
    assert!(pri_redo <= 5, "{pri_sets}");

    // status on the primary right after the stop: current.
    let (code, st) = status(&lab.pri_cfg);
    println!("{}", lab.ok(&lab.pri_cfg, &["status"]));
    assert_eq!(code, 0, "{st:#}");
    assert_eq!(st["level"], "ok");
    let rp = &st["recovery_point"];
    assert!(rp["age_seconds"].as_f64().unwrap() < 20.0, "{st:#}");
    for v in st["volumes"].as_array().unwrap() {
        // a set taken just before SIGTERM stays unshipped: up to one full interval
        assert!(v["lag_seconds"].as_f64().unwrap() <= 25.0, "{st:#}");
    }
    assert_eq!(st["run"]["ship_failures"], 0);
    assert!(st["run"]["stopped_at"].is_string());
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert_has_all(
        &prom,
        &[
            "snapsite_status{site=\"primary\",role=\"primary\"} 0",
            "snapsite_recovery_point_age_seconds{site=\"primary\"}",
        ],
    );

    // The standby agrees on the recovery point and the newest full set.
    let (code, sst) = status(&lab.stb_cfg);
    println!("{}", lab.ok(&lab.stb_cfg, &["status"]));
    assert_eq!(code, 0, "{sst:#}");
    assert_eq!(sst["recovery_point"]["set_id"], rp["set_id"]);
    assert_eq!(
        sst["newest_complete_full_set"]["set_id"],
        st["newest_complete_full_set"]["set_id"]
    );
    // Standby pruning keeps the failover pair.
    let plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    lab.ok(&lab.stb_cfg, &["prune"]);
    assert_eq!(lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]), plan);
}

fn set_id(v: &serde_json::Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn status_after_a_known_sequence() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let metrics: PathBuf = lab.dir.path().join("m.prom");
    let status_cfg = "\n[status]\nrecovery_point_warning = \"3s\"\nrecovery_point_critical = \"1h\"\nfull_set_warning = \"1h\"\nfull_set_critical = \"2h\"\n";
    append_to(&lab.pri_cfg, status_cfg);
    append_to(&lab.stb_cfg, status_cfg);

    // A status that cannot be read is UNKNOWN for monitoring.
    let out = run_snapsite(&lab.dir.path().join("missing.toml"), &["status"], &[]);
    assert_eq!(out.status.code(), Some(3));

    // Nothing shipped yet: critical, and the figures say so.
    let (code, st) = status(&lab.pri_cfg);
    assert_eq!(code, 2, "{st:#}");
    assert!(st["recovery_point"].is_null());
    let (code, _) = status(&lab.stb_cfg);
    assert_eq!(code, 2);

    // F (full) and R1 (redolog) shipped; R2 taken, not shipped.
    let f = set_id(&lab.snapshot(false));
    let r1 = lab.snapshot(true);
    lab.ship(&lab.pri_cfg);
    std::thread::sleep(Duration::from_millis(1500));
    let r2 = lab.snapshot(true);
    let (code, st) = status(&lab.pri_cfg);
    assert_eq!(code, 0, "{st:#}");
    assert_eq!(st["recovery_point"]["set_id"], r1["id"]);
    assert_eq!(st["newest_complete_full_set"]["set_id"], f.as_str());
    let redo_before = r1["members"][0]["before"].as_str().unwrap();
    assert_eq!(st["recovery_point"]["time"], redo_before);
    let vol = |st: &serde_json::Value, role: &str| {
        st["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["role"] == role)
            .unwrap()
            .clone()
    };
    let redolog = vol(&st, "redolog");
    assert_eq!(redolog["newest_local"]["snapshot"], r2["id"]);
    assert_eq!(redolog["newest_shipped"]["snapshot"], r1["id"]);
    // lag = time between the ids of R2 and R1
    let lag = redolog["lag_seconds"].as_f64().unwrap();
    assert!((1.4..5.0).contains(&lag), "lag {lag}");
    let mysql = vol(&st, "mysql");
    assert_eq!(mysql["newest_shipped"]["snapshot"], f.as_str());
    assert_eq!(mysql["lag_seconds"], 0.0);
    assert_eq!(st["sets"]["full"], 1);
    assert_eq!(st["sets"]["redolog"], 2);

    // The recovery point ages past the 3 s warning: exit 1.
    std::thread::sleep(Duration::from_secs(3));
    let out = run_snapsite(
        &lab.pri_cfg,
        &["status", "--prometheus", metrics.to_str().unwrap()],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("snapsite WARNING - primary (primary): recovery point"),
        "{text}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("snapsite_status{site=\"primary\",role=\"primary\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("snapsite_snapshot_newest_timestamp_seconds{site=\"primary\",volume=\"redolog\",where=\"standby\"}"), "{prom}");

    // The standby sees the same recovery point.
    let (code, sst) = status(&lab.stb_cfg);
    assert_eq!(code, 1, "{sst:#}");
    assert_eq!(sst["recovery_point"]["set_id"], r1["id"]);
    assert_eq!(sst["recovery_point"]["time"], redo_before);

    // A run --once against an unreachable standby: it takes what is due,
    // the ship fails, run.json and status report it.
    let broken = lab.primary_variant(
        "broken",
        "transport = \"command\"\ncommand = [\"/bin/false\"]",
    );
    append_to(
        &broken,
        &format!("{status_cfg}[schedule]\nfull_set_interval = \"1h\"\nredolog_interval = \"1s\"\n"),
    );
    let out = lab.run(&broken, &["run", "--once"]);
    assert_exit(&out, 1);
    let (_, st) = status(&broken);
    assert_eq!(st["run"]["ship_failures"], 1, "{st:#}");
    assert!(
        st["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["message"].as_str().unwrap().contains("ship(s) failed")),
        "{st:#}"
    );

    // Shipping catches up: R2 and the run's snapshot are committed, the
    // recovery point moves to the newest.
    let rep = lab.ship(&lab.pri_cfg);
    assert_eq!(rep["committed"].as_array().unwrap().len(), 2, "{rep}");
    let (code, st) = status(&lab.pri_cfg);
    assert_eq!(code, 0, "{st:#}");
    assert_eq!(
        st["recovery_point"]["set_id"],
        rep["committed"].as_array().unwrap().last().unwrap().clone()
    );
}
