//! `snapsite rehearse` on real btrfs (loop devices): the replay runs on
//! scratch clones of the newest set (never the live locations or the
//! mountpoints), with SNAPSITE_REHEARSAL=1; everything is removed after;
//! replication and prune go on meanwhile; a rehearsal killed with SIGKILL
//! is cleaned up by the next rehearse or prune.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A lab whose replay script logs its environment and arguments, checks
/// that the clone holds the shipped data, writes into it, and (when the
/// file `slow` exists) sleeps until killed.
fn lab() -> (Lab, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("snapsite-rehearse-")
        .tempdir_in("/var/tmp")
        .unwrap()
        .keep();
    let script = dir.join("replay");
    write_script(
        &script,
        &format!(
            r#"#!/bin/sh
d={d}
echo "rehearsal=$SNAPSITE_REHEARSAL from=$SNAPSITE_FROM_TIME blob=$1 redolog=$2" >> $d/calls
echo $$ > $d/replay-pid
test -f "$1/m1" || exit 5
test -f $d/fail && exit 7
echo rehearsal > "$1/written-by-rehearsal"
if [ -f $d/slow ]; then
  touch $d/started
  sleep 120
fi
exit 0
"#,
            d = dir.display()
        ),
    );
    let lab = Lab::new(&format!(
        "[\"{}\", \"{{mount:blob}}\", \"{{mount:redolog}}\"]",
        script.display()
    ));
    (lab, dir)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

fn clones(lab: &Lab) -> Vec<PathBuf> {
    ROLES
        .iter()
        .map(|r| lab.standby_recv(r).join(".rehearsal"))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn a_rehearsal_replays_on_scratch_clones_and_leaves_production_alone() {
    require_real!();
    let (lab, d) = lab();
    // `[notify]` on the standby: the rehearsal's verdict is pushed.
    let notified = d.join("notified");
    let mut stb = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    stb.push_str(&format!(
        "\n[notify]\ncommand = [\"/bin/sh\", \"-c\", \"echo \\\"$1 $2 $4\\\" >> {}\", \"notify\", \"{{event}}\", \"{{severity}}\", \"{{site}}\", \"{{message}}\"]\n",
        notified.display()
    ));
    std::fs::write(&lab.stb_cfg, stb).unwrap();
    write_file(&lab.live("blob").join("m1"), &random_bytes(7, 8192));
    let s = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let r = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    let received = tree_digest(&lab.standby_snap("blob", &s));

    // The plan: clones in the snapshot dirs, nothing mounted.
    let plan = json(&lab.ok(&lab.stb_cfg, &["rehearse", "--dry-run", "--json"]));
    assert_eq!(plan["set_id"].as_str(), Some(s.as_str()));
    assert_eq!(plan["redolog_set_id"].as_str(), Some(r.as_str()));
    for c in plan["copies"].as_array().unwrap() {
        let role = c["role"].as_str().unwrap();
        assert_eq!(
            c["target"].as_str().map(PathBuf::from),
            Some(lab.standby_recv(role).join(".rehearsal"))
        );
        assert!(c["mountpoint"].is_null(), "{c}");
    }
    assert!(clones(&lab).is_empty(), "a dry run changes nothing");

    let t = Instant::now();
    let rep = json(&lab.ok(&lab.stb_cfg, &["rehearse", "--json"]));
    let took = t.elapsed();
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(rep["replay_exit"].as_i64(), Some(0));
    let told = std::fs::read_to_string(&notified).unwrap_or_default();
    assert!(
        told.starts_with("rehearsal ok rehearsal passed in "),
        "the rehearsal's verdict goes to [notify]: {told:?}"
    );
    let calls = std::fs::read_to_string(d.join("calls")).unwrap();
    let blob = lab.standby_recv("blob").join(".rehearsal");
    let redo = lab.standby_recv("redolog").join(".rehearsal");
    assert!(
        calls.contains(&format!(
            "rehearsal=1 from={} blob={} redolog={}",
            rep["plan"]["from_time_arg"].as_str().unwrap(),
            blob.display(),
            redo.display()
        )),
        "{calls}"
    );
    eprintln!(
        "rehearsal of a 4-volume set: {:.2} s (report: {} s)",
        took.as_secs_f64(),
        rep["seconds_total"]
    );
    // Torn down; the received snapshot, the live locations, the mountpoints untouched.
    assert!(clones(&lab).is_empty(), "{:?}", clones(&lab));
    assert_eq!(tree_digest(&lab.standby_snap("blob", &s)), received);
    assert!(
        !lab.standby_live("blob").exists(),
        "no copy at the live location"
    );
    assert!(mounts_below(&lab.dir.path().join("mnt-app")).is_empty());
    assert!(
        !lab.dir
            .path()
            .join("state-stb/failover/state.json")
            .exists()
    );
    assert!(
        !lab.dir
            .path()
            .join("state-stb/rehearsal/state.json")
            .exists()
    );
    // Still the standby; the report is in status and the metrics.
    let prom = lab.dir.path().join("metrics.prom");
    let o = run_snapsite(
        &lab.stb_cfg,
        &["status", "--json", "--prometheus", prom.to_str().unwrap()],
        &[],
    );
    let st = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(st["role"].as_str(), Some("standby"));
    assert_eq!(st["rehearsal"]["ok"], true, "{st}");
    assert_eq!(st["rehearsal"]["set_id"].as_str(), Some(s.as_str()));
    let m = std::fs::read_to_string(&prom).unwrap();
    assert_has_all(
        &m,
        &[
            "snapsite_rehearsal_ok{site=\"standby\"} 1",
            "snapsite_rehearsal_seconds{site=\"standby\"}",
            "snapsite_rehearsal_recovery_point_timestamp_seconds",
        ],
    );

    // A failing replay: exit 3, verdict in the report and status, still torn down.
    std::fs::write(d.join("fail"), "").unwrap();
    let o = lab.run(&lab.stb_cfg, &["rehearse"]);
    assert_exit(&o, 3);
    assert!(String::from_utf8_lossy(&o.stdout).contains("REPLAY FAILED"));
    assert!(clones(&lab).is_empty());
    let o = run_snapsite(&lab.stb_cfg, &["status", "--json"], &[]);
    let st = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(st["rehearsal"]["ok"], false);
    assert!(
        st["findings"].to_string().contains("last rehearsal"),
        "{st}"
    );

    // The primary refuses to rehearse.
    let o = lab.run(&lab.pri_cfg, &["rehearse"]);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&d);
}

fn start_slow(lab: &Lab, d: &Path, cfg: &Path) -> std::process::Child {
    let _ = std::fs::remove_file(d.join("started"));
    std::fs::write(d.join("slow"), "").unwrap();
    let log = std::fs::File::create(d.join("rehearse.log")).unwrap();
    let child = Command::new(snapsite_exe())
        .arg("--config")
        .arg(cfg)
        .arg("rehearse")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !d.join("started").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the rehearsal's replay never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = lab;
    child
}

fn replay_pid(d: &Path) -> i32 {
    std::fs::read_to_string(d.join("replay-pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn replication_and_prune_go_on_and_a_killed_rehearsal_is_cleaned_up() {
    require_real!();
    let (lab, d) = lab();
    // The standby with a retention that would prune every older set.
    let stb = lab.dir.path().join("standby-retention.toml");
    std::fs::write(
        &stb,
        format!(
            "{}\n[retention]\ngrid = \"1x1s\"\nkeep_min_age = \"0s\"\n",
            std::fs::read_to_string(&lab.stb_cfg).unwrap()
        ),
    )
    .unwrap();
    write_file(&lab.live("blob").join("m1"), &random_bytes(8, 8192));
    let s1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);

    let mut child = start_slow(&lab, &d, &stb);
    // A ship in parallel commits (the rehearsal holds no lock during the replay).
    std::thread::sleep(Duration::from_millis(1100));
    let s2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let r = lab.ship(&lab.pri_cfg);
    assert_eq!(r["committed"].as_array().map(|a| a.len()), Some(1), "{r}");
    assert!(lab.standby_manifests().contains(&format!("{s2}.json")));
    // Prune keeps the set under the clones, and says why.
    std::thread::sleep(Duration::from_millis(1100));
    let p = json(&lab.ok(&stb, &["prune", "--json"]));
    let d1 = p["plan"]["sets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["set_id"] == s1.as_str())
        .unwrap()
        .clone();
    assert_eq!(d1["destroy"], false, "{p}");
    assert!(d1["reason"].as_str().unwrap().contains("rehearsal"), "{d1}");
    assert!(lab.standby_snap("blob", &s1).exists());

    // SIGKILL the rehearsal: its replay and clones are left behind...
    let replay = replay_pid(&d);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive(replay), "the replay outlives a killed rehearsal");
    assert_eq!(clones(&lab).len(), 4);
    // ...until the next prune: replay stopped, clones removed; then the
    // old set is no longer protected and goes.
    let p = json(&lab.ok(&stb, &["prune", "--json"]));
    assert!(
        !alive(replay),
        "prune stopped the killed rehearsal's replay"
    );
    assert!(clones(&lab).is_empty(), "{:?}", clones(&lab));
    assert!(
        !lab.dir
            .path()
            .join("state-stb/rehearsal/state.json")
            .exists()
    );
    assert!(p["destroyed_sets"].to_string().contains(&s1), "{p}");

    // Killed again; this time the next rehearse cleans up and runs.
    let mut child = start_slow(&lab, &d, &stb);
    let replay = replay_pid(&d);
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(d.join("slow")).unwrap();
    let rep = json(&lab.ok(&stb, &["rehearse", "--json"]));
    assert_eq!(rep["ok"], true, "{rep}");
    assert!(!alive(replay));
    let notes = rep["notes"].to_string();
    assert!(
        notes.contains("removed the clones of a rehearsal"),
        "{notes}"
    );
    assert!(notes.contains("stopped"), "{notes}");
    assert!(clones(&lab).is_empty());
    let _ = std::fs::remove_dir_all(&d);
}
