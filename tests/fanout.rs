//! Fan-out (issue 29) on real btrfs: one primary, two standbys (`near` and
//! `far`) on loop devices of their own. A stalled standby does not delay
//! the other; each standby's common snapshot survives the primary's prune
//! over a long history, and its next ship stays incremental.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const ROLES2: [&str; 2] = ["mysql", "redolog"];

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// A second standby site on its own filesystem, beside the lab's.
struct Far {
    fs: BtrfsFs,
    cfg: PathBuf,
    state: PathBuf,
}

/// The lab of these tests: two volumes on 300 MB filesystems.
fn fanout_lab() -> Lab {
    Lab::with_roles(&ROLES2, "300M", "[\"/bin/true\"]")
}

/// A fanout lab whose far site is reached through the local transport:
/// the lab, far, the primary's config (with `extra`) and its state directory.
fn local_fanout(extra: &str) -> (Lab, Far, PathBuf, PathBuf) {
    let lab = fanout_lab();
    let far = far_site(&lab);
    let pri = fanout_primary(&lab, &local_body(&far), extra);
    let state = lab.dir.path().join("state-pri");
    (lab, far, pri, state)
}

fn far_site(lab: &Lab) -> Far {
    let fs = BtrfsFs::new(lab.dir.path(), "far", "300M");
    let state = lab.dir.path().join("state-far");
    let mut t = format!("site = \"far\"\nstate_dir = \"{}\"\n", state.display());
    for r in &lab.roles {
        t.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{}\"\nsnapshot_dir = \"{}\"\n",
            fs.path(&format!("live/{r}")).display(),
            fs.path(&format!("recv/{r}")).display()
        ));
    }
    t.push_str("[replay]\nnone = true\n");
    let cfg = lab.dir.path().join("far.toml");
    std::fs::write(&cfg, t).unwrap();
    Far { fs, cfg, state }
}

/// The primary's config with `[[standby]]` near (the lab's standby) and
/// far (`far_body`), plus `extra` sections.
fn fanout_primary(lab: &Lab, far_body: &str, extra: &str) -> PathBuf {
    let near = format!(
        "name = \"near\"\ntransport = \"local\"\nconfig = \"{}\"",
        lab.stb_cfg.display()
    );
    let text = lab
        .primary_toml(&near)
        .replace("[standby]\n", "[[standby]]\n");
    let p = lab.dir.path().join("fanout.toml");
    std::fs::write(
        &p,
        format!("{text}\n[[standby]]\nname = \"far\"\n{far_body}\n{extra}"),
    )
    .unwrap();
    p
}

fn local_body(far: &Far) -> String {
    format!("transport = \"local\"\nconfig = \"{}\"", far.cfg.display())
}

/// A transport that connects and never answers: its pid goes to `pidfile`.
fn stalled_body(pidfile: &Path) -> String {
    format!(
        "transport = \"command\"\ncommand = [\"sh\", \"-c\", \"echo $$ > \\\"$0\\\"; exec sleep 300\", \"{}\"]",
        pidfile.display()
    )
}

fn committed(state: &Path) -> Vec<String> {
    sorted_names(&state.join("sets"))
        .into_iter()
        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
        .collect()
}

/// The pids written to `pidfile` (one per line), in order.
fn pids_in(pidfile: &Path) -> Vec<i32> {
    std::fs::read_to_string(pidfile)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` is still the stalled transport's `sleep 300`.
fn is_stalled_sleep(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\x00300\x00"))
}

/// Kill each process whose pid is in `pidfile` and is still the stalled
/// transport (never a reused pid).
fn kill_pidfile(pidfile: &Path) {
    for pid in pids_in(pidfile) {
        if is_stalled_sleep(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[test]
fn ship_sends_to_every_standby_each_with_its_own_record() {
    require_real!();
    let (lab, far, pri, state) = local_fanout("");
    lab.fill(1, 256 * 1024);
    let f1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let out = json(&lab.ok(&pri, &["ship", "--json"]));
    let names: Vec<&str> = out["standbys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["ok"], true, "{s}");
            s["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(names, ["near", "far"]);
    assert_eq!(
        committed(&lab.dir.path().join("state-stb")),
        vec![f1.clone()]
    );
    assert_eq!(committed(&far.state), vec![f1.clone()]);
    for n in ["near", "far"] {
        let rec = json(
            &std::fs::read_to_string(state.join(format!("standbys/{n}/standby.json"))).unwrap(),
        );
        assert!(
            rec["committed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == &f1),
            "{n}: {rec}"
        );
    }
    assert!(
        !state.join("standby.json").exists(),
        "no standby is named `standby`"
    );

    // --to NAME ships to that one only; an unknown name is refused by name.
    lab.fill(2, 256 * 1024);
    let f2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let r = json(&lab.ok(&pri, &["ship", "--to", "far", "--json"]));
    assert_eq!(r["standbys"][0]["name"], "far");
    assert_eq!(committed(&far.state), [f1.clone(), f2.clone()]);
    assert_eq!(
        committed(&lab.dir.path().join("state-stb")),
        vec![f1.clone()]
    );
    let dry = lab.ok(&pri, &["ship", "--to", "near", "--dry-run"]);
    assert!(dry.contains(&f2) && dry.contains("incremental"), "{dry}");
    let bad = lab.run(&pri, &["ship", "--to", "nowhere"]);
    assert!(!bad.status.success());
    let msg = both(&bad);
    assert!(
        msg.contains("nowhere") && msg.contains("near, far"),
        "{msg}"
    );
    // check: each standby's settings and handshake, by name
    let chk = lab.ok(&pri, &["check"]);
    for n in ["near", "far"] {
        assert!(
            chk.contains(&format!("compress  `{n}`: "))
                && chk.contains(&format!("every     `{n}`: "))
                && chk.contains(&format!("standby   `{n}`: ")),
            "{chk}"
        );
    }
    assert!(
        chk.contains("ok: standby `far` holds 2 committed set(s)"),
        "{chk}"
    );
}

#[test]
fn a_stalled_standby_does_not_delay_the_other() {
    require_real!();
    let lab = fanout_lab();
    let pidfile = lab.dir.path().join("stalled.pid");
    let pri = fanout_primary(&lab, &stalled_body(&pidfile), "");
    lab.fill(1, 256 * 1024);
    lab.snapshot(false);

    // Normal: near alone, nothing stalled.
    let t = Instant::now();
    lab.ok(&pri, &["ship", "--to", "near"]);
    let normal = t.elapsed();

    // far hangs in its handshake for the rest of the test.
    let mut hung = Command::new(snapsite_exe())
        .args(["--config", pri.to_str().unwrap(), "ship", "--to", "far"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pidfile.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stalled = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        lab.fill(10 + i, 256 * 1024);
        ids.push(lab.snapshot(false)["id"].as_str().unwrap().to_string());
        let t = Instant::now();
        lab.ok(&pri, &["ship", "--to", "near"]);
        stalled.push(t.elapsed());
    }
    let still_hung = hung.try_wait().unwrap().is_none();
    let _ = hung.kill();
    let _ = hung.wait();
    kill_pidfile(&pidfile);
    assert!(still_hung, "the stalled ship should still be waiting");
    let near = committed(&lab.dir.path().join("state-stb"));
    for id in &ids {
        assert!(near.contains(id), "{id} not on near: {near:?}");
    }
    let worst = stalled.iter().max().unwrap();
    eprintln!(
        "MEASURE fanout: ship to near {:.2} s alone, {:.2} s worst of 3 with far stalled",
        normal.as_secs_f64(),
        worst.as_secs_f64()
    );
    assert!(
        *worst < normal * 5 + Duration::from_secs(5),
        "near's ship took {worst:?} with far stalled (normal {normal:?})"
    );
}

/// far's transport serves far until `flag` exists, then connects and
/// never answers (each such session's pid is appended to `pidfile`).
fn hang_on_flag_body(far: &Far, flag: &Path, pidfile: &Path) -> String {
    format!(
        "transport = \"command\"\ncommand = [\"sh\", \"-c\", \"if [ -e \\\"$1\\\" ]; then echo $$ >> \\\"$2\\\"; exec sleep 300; fi; exec \\\"$0\\\" serve --stdio --config \\\"$3\\\"\", \"{}\", \"{}\", \"{}\", \"{}\"]",
        snapsite_exe(),
        flag.display(),
        pidfile.display(),
        far.cfg.display()
    )
}

/// (near's, far's) recovery point age in `status --json`, seconds.
fn ages(st: &serde_json::Value) -> (f64, f64) {
    let age = |name: &str| {
        st["standbys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .and_then(|s| s["recovery_point"]["age_seconds"].as_f64())
            .unwrap_or_else(|| panic!("no recovery point for {name}: {st}"))
    };
    (age("near"), age("far"))
}

#[test]
fn run_keeps_shipping_to_near_while_far_hangs() {
    require_real!();
    let lab = fanout_lab();
    let far = far_site(&lab);
    let flag = lab.dir.path().join("hang");
    let pidfile = lab.dir.path().join("stalled.pid");
    let interval = 2.0;
    let told = lab.dir.path().join("notified");
    let pri = fanout_primary(
        &lab,
        &format!(
            "{}\nstall_timeout = \"2s\"",
            hang_on_flag_body(&far, &flag, &pidfile)
        ),
        &format!(
            "[schedule]\nfull_set_interval = \"2s\"\n[status]\nrecovery_point_warning = \"6s\"\nrecovery_point_critical = \"1h\"\n[notify]\ncommand = [\"sh\", \"-c\", \"echo \\\"$1 $2\\\" >> \\\"$0\\\"\", \"{}\", \"{{event}}\", \"{{severity}}\"]\nship_failing_after = \"0s\"\n",
            told.display()
        ),
    );
    // Both standbys hold a set; then far's link hangs for good.
    lab.fill(1, 64 * 1024);
    lab.snapshot(false);
    lab.ok(&pri, &["ship"]);
    std::fs::write(&flag, "").unwrap();
    let mut run = Command::new(snapsite_exe())
        .args(["--config", pri.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // status every second: near's recovery point age, far's
    let t = Instant::now();
    let mut worst_near: f64 = 0.0;
    let mut last = serde_json::Value::Null;
    while t.elapsed() < Duration::from_secs(12) {
        std::thread::sleep(Duration::from_secs(1));
        let st = json(&stdout(&lab.run(&pri, &["status", "--json"])));
        if t.elapsed() > Duration::from_secs(4) {
            // after run's first set and ship
            worst_near = worst_near.max(ages(&st).0);
        }
        last = st;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let exited = run.try_wait().unwrap();
    let _ = run.kill();
    let _ = run.wait();
    // far's sessions stalled and were abandoned after its stall_timeout
    // (2 s): each one's process was killed by snapsite, by its pid, and the
    // next set started a new one.
    let sessions = pids_in(&pidfile);
    let alive: Vec<i32> = sessions
        .iter()
        .copied()
        .filter(|p| is_stalled_sleep(*p))
        .collect();
    kill_pidfile(&pidfile);
    assert!(exited.is_some(), "run did not stop on SIGTERM");
    assert!(
        sessions.len() >= 2,
        "far's stalled session was never abandoned and retried: {sessions:?}"
    );
    assert!(
        alive.is_empty(),
        "stalled transports left running: {alive:?} of {sessions:?}"
    );
    let taken = committed(&lab.dir.path().join("state-pri"));
    let near = committed(&lab.dir.path().join("state-stb"));
    let far_age = ages(&last).1;
    eprintln!(
        "MEASURE fanout run: {} set(s) taken in 12 s, {} committed on near with far hung; near's recovery point at most {worst_near:.1} s old (sets every {interval} s), far's {far_age:.1} s",
        taken.len(),
        near.len()
    );
    assert!(taken.len() >= 4, "sets were not taken on time: {taken:?}");
    // near is at most one set behind (the one taken as run was stopped)
    assert!(
        near.len() + 1 >= taken.len(),
        "near lags: {near:?} of {taken:?}"
    );
    // near's normal bound: one interval, plus the ship and the status's
    // sampling; far's link hangs and status says so
    assert!(
        worst_near <= 3.0 * interval + 2.0,
        "near's recovery point fell {worst_near:.1} s behind while far hung"
    );
    assert!(far_age >= 10.0, "far's recovery point should age: {last}");
    let findings = last["findings"].to_string();
    assert!(
        findings.contains("standby `far`: recovery point"),
        "status should flag far: {findings}"
    );
    assert!(
        !findings.contains("standby `near`"),
        "near is not behind: {findings}"
    );
    // far is failing (since its first stalled session), near is not: in
    // the JSON, the text, the metrics, and one notification for far.
    let per = |name: &str| json_entry(&last["standbys"], "name", name).clone();
    assert!(per("far")["failing_since"].is_string(), "{last}");
    assert!(per("near")["failing_since"].is_null(), "{last}");
    assert!(
        findings.contains("standby `far`: ships failing since"),
        "{findings}"
    );
    let text = stdout(&lab.run(&pri, &["status"]));
    assert!(
        text.contains("standby far") && text.contains("failing since"),
        "{text}"
    );
    let prom = lab.dir.path().join("metrics.prom");
    lab.run(&pri, &["status", "--prometheus", prom.to_str().unwrap()]);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(
        m.contains("snapsite_standby_failing{site=\"primary\",standby=\"far\"} 1")
            && m.contains("snapsite_standby_failing{site=\"primary\",standby=\"near\"} 0")
            && m.contains(
                "snapsite_standby_failing_since_timestamp_seconds{site=\"primary\",standby=\"far\"}"
            ),
        "{m}"
    );
    let notes = std::fs::read_to_string(&told).unwrap_or_default();
    let far_failing = notes
        .lines()
        .filter(|l| *l == "ship to far critical")
        .count();
    assert_eq!(far_failing, 1, "far's failure is told once: {notes}");
    assert!(!notes.contains("ship to near"), "{notes}");

    // far's link works again: nothing of the abandoned sessions holds its
    // lock, the next ship completes and far is no longer failing.
    std::fs::remove_file(&flag).unwrap();
    let t = Instant::now();
    lab.ok(&pri, &["ship", "--to", "far"]);
    assert!(t.elapsed() < Duration::from_secs(60));
    let st = json(&stdout(&lab.run(&pri, &["status", "--json"])));
    assert!(
        !st["findings"].to_string().contains("failing since"),
        "{st}"
    );
    assert_eq!(
        committed(&far.state).last(),
        committed(&lab.dir.path().join("state-pri")).last()
    );
    eprintln!(
        "MEASURE fanout stall: {} stalled session(s) of far abandoned after 2 s each, none left running",
        sessions.len()
    );
    drop(far.fs);
}

#[test]
fn prune_keeps_each_standbys_base_over_a_long_history() {
    require_real!();
    let (lab, far, pri, state) = local_fanout("\n[retention]\ngrid = \"1x1ms\"\n");
    let mut far_shipped = 0;
    for i in 0..12u64 {
        lab.fill(100 + i, 64 * 1024);
        lab.snapshot(false);
        lab.ok(&pri, &["ship", "--to", "near"]);
        // far ships every fourth set only: its base lags far behind
        if i % 4 == 3 {
            let r = json(&lab.ok(&pri, &["ship", "--to", "far", "--json"]));
            let snaps = r["standbys"][0]["report"]["snapshots"]
                .as_array()
                .unwrap()
                .clone();
            assert!(!snaps.is_empty());
            for s in &snaps {
                assert!(
                    s["base"].is_string(),
                    "far's ship after prune was not incremental: {s}"
                );
            }
            far_shipped += 1;
        } else if i == 0 {
            lab.ok(&pri, &["ship", "--to", "far"]);
        }
        let p = json(&lab.ok(&pri, &["prune", "--json"]));
        let kept: Vec<String> = p["plan"]["sets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["destroy"] == false)
            .map(|d| d["reason"].as_str().unwrap().to_string())
            .collect();
        // far's common snapshot is held back, and the reason names far
        let far_rec =
            json(&std::fs::read_to_string(state.join("standbys/far/standby.json")).unwrap());
        let base = far_rec["holds"]["mysql"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            lab.primary_snap("mysql", &base).exists(),
            "round {i}: far's base {base} was pruned"
        );
        if i % 4 != 3 {
            assert!(
                kept.iter().any(|r| r.contains("standby `far`")),
                "round {i}: {kept:?}"
            );
        }
    }
    assert_eq!(far_shipped, 3);
    // far and near end with the same newest set, and far holds it whole
    let far_sets = committed(&far.state);
    assert_eq!(
        far_sets.last(),
        committed(&lab.dir.path().join("state-stb")).last()
    );
    drop(far.fs);
}

#[test]
fn status_shows_each_standby_and_a_removed_one_is_released_by_prune() {
    require_real!();
    let (lab, far, pri, state) = local_fanout("\n[retention]\ngrid = \"1x1ms\"\n");
    lab.fill(1, 64 * 1024);
    let f1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ok(&pri, &["ship"]);
    lab.fill(2, 64 * 1024);
    let f2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ok(&pri, &["ship", "--to", "near"]);

    // status: one entry per standby, far one set behind
    let st = json(&stdout(&lab.run(&pri, &["status", "--json"])));
    let per: Vec<(String, String)> = st["standbys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["recovery_point"]["set_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        per,
        [("near".into(), f2.clone()), ("far".into(), f1.clone())]
    );
    assert!(
        st["standbys"][1]["lag_seconds"].as_f64().unwrap() > 0.0,
        "{st}"
    );
    let text = stdout(&lab.run(&pri, &["status"]));
    assert!(text.contains("standby far") && text.contains(&f1), "{text}");
    let prom = lab.dir.path().join("metrics.prom");
    lab.run(&pri, &["status", "--prometheus", prom.to_str().unwrap()]);
    let m = std::fs::read_to_string(&prom).unwrap();
    assert!(
        m.contains("snapsite_standby_lag_seconds{site=\"primary\",standby=\"far\"}"),
        "{m}"
    );

    // far leaves the config: prune's dry run names it and changes nothing;
    // killed after its intent, the rerun releases far's records and its base
    let near_only = lab.dir.path().join("near-only.toml");
    let text = std::fs::read_to_string(&pri).unwrap();
    let cut = text.find("[[standby]]\nname = \"far\"").unwrap();
    let rest = &text[cut..];
    let end = rest.find("\n[retention]").unwrap();
    std::fs::write(&near_only, format!("{}{}", &text[..cut], &rest[end..])).unwrap();
    let st = json(&stdout(&lab.run(&near_only, &["status", "--json"])));
    let findings = st["findings"].to_string();
    assert!(findings.contains("no longer in the config"), "{findings}");
    let dry = lab.ok(&near_only, &["prune", "--dry-run"]);
    assert!(dry.contains("RELEASE?") && dry.contains("`far`"), "{dry}");
    assert!(state.join("standbys/far/standby.json").exists());
    assert!(lab.primary_snap("mysql", &f1).exists());
    let killed = run_snapsite(
        &near_only,
        &["prune"],
        &[("SNAPSITE_FAILPOINT", "prune.after_intent")],
    );
    assert_eq!(killed.status.code(), Some(86), "{}", both(&killed));
    assert!(state.join("standbys/far/standby.json").exists());
    let done = lab.ok(&near_only, &["prune", "--json"]);
    let done = json(&done);
    assert_eq!(
        done["plan"]["released_standbys"],
        serde_json::json!(["far"])
    );
    assert!(!state.join("standbys/far").exists());
    assert!(
        !lab.primary_snap("mysql", &f1).exists(),
        "far's base should go with its hold"
    );
    assert!(lab.primary_snap("mysql", &f2).exists());
    assert!(!state.join("journal-prune.json").exists());
    drop(far.fs);
}

/// `window = "HH:MM-HH:MM UTC"` two hours after now, two hours long:
/// the wall clock is outside it now and inside it 2½ hours from now.
fn window_two_hours_ahead() -> String {
    let h = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .hour() as u32;
    format!("{:02}:00-{:02}:00 UTC", (h + 2) % 24, (h + 4) % 24)
}

#[test]
fn a_night_window_starts_ships_only_inside_it_and_is_not_late_outside() {
    require_real!();
    let lab = fanout_lab();
    let far = far_site(&lab);
    let window = window_two_hours_ahead();
    let pri = fanout_primary(
        &lab,
        &format!("{}\nwindow = \"{window}\"", local_body(&far)),
        "[schedule]\nfull_set_interval = \"1s\"\n[status]\nrecovery_point_warning = \"30m\"\nrecovery_point_critical = \"3h\"\n",
    );
    // `status` exits non-zero with findings (near's own recovery point
    // ages on the shifted clock too): only `run` must succeed.
    let at = |offset: &str, args: &[&str]| {
        let out = run_snapsite(&pri, args, &[("SNAPSITE_TEST_CLOCK_OFFSET", offset)]);
        assert!(
            out.status.success() || args[0] == "status",
            "{args:?} at {offset}: {}",
            both(&out)
        );
        stdout(&out)
    };
    let stb = lab.dir.path().join("state-stb");
    // `ship` is the operator's: it ignores the window.
    lab.fill(1, 64 * 1024);
    let f1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ok(&pri, &["ship"]);
    assert_eq!(committed(&far.state), std::slice::from_ref(&f1));

    // `run` outside far's window: a set, shipped to near only.
    lab.fill(2, 64 * 1024);
    std::thread::sleep(Duration::from_millis(1100));
    at("", &["run", "--once"]);
    let near = committed(&stb);
    assert_eq!(near.len(), 2, "{near:?}");
    assert_eq!(
        committed(&far.state),
        std::slice::from_ref(&f1),
        "far shipped outside its window"
    );

    // An hour later, still outside: far's recovery point is an hour old by
    // the wall clock, but no window time has passed: not late.
    let st = json(&at("+1h", &["status", "--json"]));
    let far_st = json_entry(&st["standbys"], "name", "far");
    assert_eq!(far_st["window"], window.as_str(), "{far_st}");
    assert!(
        far_st["recovery_point"]["age_seconds"].as_f64().unwrap() >= 3600.0,
        "{far_st}"
    );
    assert_eq!(far_st["window_age_seconds"].as_f64(), Some(0.0), "{far_st}");
    assert!(
        !st["findings"]
            .to_string()
            .contains("standby `far`: recovery point"),
        "far is called late outside its window: {}",
        st["findings"]
    );

    // Inside the window, `run` ships to far (the set taken then as well).
    lab.fill(3, 64 * 1024);
    std::thread::sleep(Duration::from_millis(1100));
    at("+2h30m", &["run", "--once"]);
    let near = committed(&stb);
    assert_eq!(
        committed(&far.state),
        near,
        "far not shipped inside its window"
    );
    assert_eq!(near.len(), 3);

    // After the window closed with no ship since: late by the window time
    // that passed unused (1½ h of the 30 min allowed), not by the 2½ h
    // wall-clock hours.
    let st = json(&at("+5h", &["status", "--json"]));
    let findings = st["findings"].to_string();
    assert!(
        findings.contains("standby `far`: recovery point") && findings.contains("in its window"),
        "{findings}"
    );
    drop(far.fs);
}

#[test]
fn every_verb_that_talks_to_one_standby_names_it() {
    require_real!();
    let (lab, far, pri, _) = local_fanout("");
    lab.fill(1, 64 * 1024);
    lab.snapshot(false);
    lab.ok(&pri, &["ship"]);

    // role: what each standby last said about itself, by name
    let role = lab.ok(&pri, &["role"]);
    assert!(
        role.contains("standby near     standby said standby")
            && role.contains("standby far      far said standby"),
        "{role}"
    );
    let rj = json(&lab.ok(&pri, &["role", "--json"]));
    let peers: Vec<&str> = rj["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["standby"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["near", "far"], "{rj}");

    // Where the choice matters, none is taken silently: refused, naming
    // the standbys and the flag; nothing changed.
    for (verb, flag) in [
        ("switchover", "--to"),
        ("failback", "--standby"),
        ("follow", "--standby"),
    ] {
        let out = lab.run(&pri, &[verb, "--dry-run"]);
        assert!(!out.status.success(), "{verb}");
        let msg = both(&out);
        assert!(
            msg.contains("(near, far)") && msg.contains(&format!("snapsite {verb} {flag} NAME")),
            "{verb}: {msg}"
        );
        let bad = both(&lab.run(&pri, &[verb, flag, "nowhere", "--dry-run"]));
        assert!(bad.contains("no standby named `nowhere`"), "{bad}");
    }
    // [stream] must say which standby the redolog tail streams to
    let text = std::fs::read_to_string(&pri).unwrap();
    let streaming = lab.dir.path().join("streaming.toml");
    std::fs::write(
        &streaming,
        format!("{text}\n[stream]\nfiles = [\"redo.log\"]\n"),
    )
    .unwrap();
    let msg = both(&lab.run(&streaming, &["check"]));
    assert!(
        msg.contains("stream.to") && msg.contains("(near, far)"),
        "{msg}"
    );
    std::fs::write(
        &streaming,
        format!("{text}\n[stream]\nfiles = [\"redo.log\"]\nto = \"far\"\n"),
    )
    .unwrap();
    let st = lab.run(&streaming, &["status", "--json"]);
    assert!(!both(&st).contains("stream.to"), "{}", both(&st));

    // switchover --to far hands the role to far, not to the first standby
    let dry = lab.ok(&pri, &["switchover", "--to", "far", "--dry-run"]);
    assert!(dry.contains("peer          far standby"), "{dry}");
    lab.fill(2, 64 * 1024);
    let so = json(&lab.ok(&pri, &["switchover", "--to", "far", "--json"]));
    let fin = so["final_set"].as_str().unwrap().to_string();
    assert!(committed(&far.state).contains(&fin), "{so}");
    assert!(
        !committed(&lab.dir.path().join("state-stb")).contains(&fin),
        "the final set went to near"
    );
    let role = json(&lab.ok(&pri, &["role", "--json"]));
    assert_eq!(role["role"], "standby", "{role}");
    drop(far.fs);
}

/// A single `[standby]` with a `window`: its figures are the top-level
/// ones, so the top-level recovery-point check counts window time too
/// (an hour outside the window is not late; after the window passed
/// unused, it is, and says so).
#[test]
fn a_single_standby_with_a_window_is_late_only_in_window_time() {
    require_real!();
    let lab = fanout_lab();
    let window = window_two_hours_ahead();
    let body = format!(
        "transport = \"local\"\nconfig = \"{}\"\nwindow = \"{window}\"",
        lab.stb_cfg.display()
    );
    let pri = lab.dir.path().join("windowed.toml");
    std::fs::write(
        &pri,
        lab.primary_toml(&body)
            + "[status]\nrecovery_point_warning = \"30m\"\nrecovery_point_critical = \"3h\"\n",
    )
    .unwrap();
    lab.fill(1, 64 * 1024);
    lab.snapshot(false);
    lab.ok(&pri, &["ship"]);
    let findings = |offset: &str| {
        let out = run_snapsite(
            &pri,
            &["status", "--json"],
            &[("SNAPSITE_TEST_CLOCK_OFFSET", offset)],
        );
        json(&stdout(&out))["findings"].to_string()
    };
    let outside = findings("+1h");
    assert!(
        !outside.contains("recovery point: the newest redolog snapshot"),
        "called late an hour outside its window: {outside}"
    );
    let after = findings("+5h");
    assert!(
        after.contains("recovery point: the newest redolog snapshot")
            && after.contains("in its window"),
        "not late after its window passed unused: {after}"
    );
}
