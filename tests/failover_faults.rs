//! Failover under faults, on real btrfs (loop devices): killed (SIGKILL) at
//! every step, with and without a simulated reboot in between; a standby
//! lock held by a silent `serve` session; something else mounted at a
//! volume's mountpoint; safety margins from both sites.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Mutating calls the shims count (and may crash the failover at).
const SHIMMED: [&str; 2] = ["btrfs", "mount"];

struct Faults {
    lab: Lab,
    /// Scratch: shim state, replay log, outputs.
    d: PathBuf,
    shims: PathBuf,
    set_id: String,
}

fn real_path(tool: &str) -> String {
    sh(&["sh", "-c", &format!("command -v {tool}")])
        .trim()
        .to_string()
}

impl Faults {
    fn new() -> Faults {
        let lab = Lab::new("[\"true\"]");
        let d = lab.dir.path().join("faults");
        let shims = d.join("bin");
        std::fs::create_dir_all(&shims).unwrap();
        // A shim runs the real program, except at the mutating call number
        // `crash-at`: there it SIGKILLs its parent (the failover), either
        // after the real program did its work (`after`) or before, and then
        // it goes on in the background and acts 1.5 s later (`before`: what
        // an orphaned child of a killed failover does). A rerun must have
        // killed it by then.
        for tool in SHIMMED {
            let mutating = if tool == "btrfs" {
                "\"subvolume snapshot \"*"
            } else {
                "\"--bind \"*"
            };
            let script = format!(
                r#"#!/bin/sh
d={d}
real={real}
case "$*" in
  {mutating}) ;;
  *) exec "$real" "$@" ;;
esac
n=$(( $(cat $d/count 2>/dev/null || echo 0) + 1 ))
echo $n > $d/count
echo "$n {tool} $*" >> $d/calls
if [ "$n" = "$(cat $d/crash-at 2>/dev/null)" ]; then
  if [ "$(cat $d/crash-mode)" = after ]; then
    "$real" "$@"; rc=$?
    kill -9 $PPID
    exit $rc
  fi
  kill -9 $PPID
  echo $$ > $d/orphan-pid
  exec >/dev/null 2>&1
  sleep 1.5
  echo "orphan $$ acted: {tool} $*" >> $d/orphans
fi
exec "$real" "$@"
"#,
                d = d.display(),
                real = real_path(tool),
            );
            let p = shims.join(tool);
            write_script(&p, &script);
        }
        lab.fill(900, 128 * 1024);
        let set: serde_json::Value =
            serde_json::from_str(&lab.ok(&lab.pri_cfg, &["snapshot", "--json"])).unwrap();
        let set_id = set["id"].as_str().unwrap().to_string();
        lab.ok(&lab.pri_cfg, &["ship"]);
        let mut f = Faults {
            lab,
            d,
            shims,
            set_id,
        };
        f.write_replay("");
        f
    }

    fn mnt(&self, role: &str) -> PathBuf {
        self.lab.dir.path().join("mnt-app").join(role)
    }

    /// The replay: logs `start PID`, compares every mounted volume with the
    /// primary's snapshot, may crash the failover (`crash-replay`) and keep
    /// running for 3 s, then logs `done PID ok|bad`.
    fn write_replay(&mut self, extra_toml: &str) {
        let mut checks = String::new();
        for r in ROLES {
            checks.push_str(&format!(
                "cmp -s {m}/data {p}/data || ok=bad-{r}\n",
                m = self.mnt(r).display(),
                p = self.lab.primary_snap(r, &self.set_id).display()
            ));
        }
        let script = self.d.join("replay.sh");
        write_script(
            &script,
            &format!(
                "#!/bin/sh\nd={d}\necho \"start $$\" >> $d/replay-log\nok=ok\n{checks}if [ -e $d/crash-replay ]; then\n  rm $d/crash-replay\n  echo $$ > $d/replay-pid\n  kill -9 $PPID\n  sleep 3\nfi\necho \"done $$ $ok $SNAPSITE_SET_ID\" >> $d/replay-log\n",
                d = self.d.display()
            ),
        );
        let toml = self.lab.standby_toml(&format!(
            "[\"{}\", \"--fromTime\", \"{{from_time}}\"]",
            script.display()
        ));
        std::fs::write(&self.lab.stb_cfg, format!("{toml}{extra_toml}")).unwrap();
    }

    /// Run `snapsite failover` with the shims first in PATH; wait for the
    /// process only (a killed failover's orphans may keep its pipes open).
    fn failover(&self, args: &[&str]) -> (ExitStatus, String, String) {
        let out = self.d.join("out");
        let err = self.d.join("err");
        let path = format!(
            "{}:{}",
            self.shims.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut child = Command::new(snapsite_exe())
            .arg("--config")
            .arg(&self.lab.stb_cfg)
            .arg("failover")
            .args(args)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child, Duration::from_secs(120));
        (
            status,
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default(),
        )
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.d.join(name)).unwrap_or_default()
    }

    fn rm(&self, name: &str) {
        let _ = std::fs::remove_file(self.d.join(name));
    }

    /// Kill a process this test started (indirectly), by its recorded pid.
    fn kill_recorded(&self, name: &str) {
        if let Ok(pid) = self.read(name).trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.rm(name);
    }

    /// What a reboot leaves: no processes of the killed attempt, no mounts.
    fn reboot(&self) {
        self.kill_recorded("orphan-pid");
        self.kill_recorded("replay-pid");
        std::thread::sleep(Duration::from_millis(100));
        unmount_below(&self.lab.dir.path().join("mnt-app"));
    }

    /// Back to a standby that has not failed over.
    fn reset(&self) {
        unmount_below(&self.lab.dir.path().join("mnt-app"));
        for r in ROLES {
            let live = self.lab.standby_live(r);
            if live.exists() {
                sh(&["btrfs", "-q", "subvolume", "delete", live.to_str().unwrap()]);
            }
        }
        let state = self.lab.dir.path().join("state-stb");
        let _ = std::fs::remove_dir_all(state.join("failover"));
        let _ = std::fs::remove_dir_all(state.join("reports"));
        for f in [
            "count",
            "calls",
            "crash-at",
            "crash-mode",
            "orphans",
            "replay-log",
            "crash-replay",
        ] {
            self.rm(f);
        }
        self.kill_recorded("orphan-pid");
        self.kill_recorded("replay-pid");
    }

    /// The standby is up exactly once, on the right data.
    fn assert_up_once(&self, what: &str, out: &str) {
        assert!(out.contains("result        OK"), "{what}: {out}");
        let log = self.read("replay-log");
        let done: Vec<&str> = log.lines().filter(|l| l.starts_with("done ")).collect();
        assert_eq!(done.len(), 1, "{what}: one complete replay: {log}");
        assert!(
            done[0].contains(" ok ") && done[0].ends_with(&self.set_id),
            "{what}: the replay saw the set's data: {log}"
        );
        // Orphans of the killed attempt never acted after the rerun started.
        assert_eq!(self.read("orphans"), "", "{what}");
        for r in ROLES {
            let mp = self.mnt(r);
            assert_eq!(
                mounts_at(&mp),
                1,
                "{what}: exactly one mount at {}",
                mp.display()
            );
            // No snapshot nested in a copy, nothing missing: the copy and
            // what is mounted are the primary's snapshot, byte for byte.
            let want = tree_digest(&self.lab.primary_snap(r, &self.set_id));
            assert_eq!(tree_digest(&self.lab.standby_live(r)), want, "{what}: {r}");
            assert_eq!(tree_digest(&mp), want, "{what}: {r} mounted");
        }
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        self.kill_recorded("orphan-pid");
        self.kill_recorded("replay-pid");
    }
}

fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("snapsite did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many mounts sit at `mp` (stacked ones count).
fn mounts_at(mp: &Path) -> usize {
    let want = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
        .count()
}

#[test]
fn failover_killed_at_every_step_comes_up_exactly_once() {
    require_real!();
    let f = Faults::new();

    // Calibration: a clean failover, and how many mutating calls it makes.
    let (st, out, err) = f.failover(&[]);
    assert!(st.success(), "{out}\n{err}");
    f.assert_up_once("clean run", &out);
    let steps: usize = f.read("count").trim().parse().unwrap();
    assert_eq!(steps, 8, "4 snapshots + 4 bind mounts: {}", f.read("calls"));

    let mut cases = 0;
    for reboot in [false, true] {
        for mode in ["before", "after"] {
            for k in 1..=steps {
                f.reset();
                let what = format!("crash {mode} call {k}, reboot {reboot}");
                std::fs::write(f.d.join("crash-at"), k.to_string()).unwrap();
                std::fs::write(f.d.join("crash-mode"), mode).unwrap();
                let (st, out, err) = f.failover(&[]);
                assert!(
                    !st.success(),
                    "{what}: the first failover was killed\n{out}\n{err}"
                );
                let calls = f.read("calls");
                assert_eq!(calls.lines().count(), k, "{what}: {calls}");
                f.rm("crash-at");
                if reboot {
                    f.reboot();
                }
                let (st, out, err) = f.failover(&[]);
                assert!(st.success(), "{what}: rerun failed\n{out}\n{err}");
                assert!(out.contains("(resumed)"), "{what}: {out}");
                if mode == "before" && !reboot {
                    assert!(
                        err.contains("stopped") && err.contains("an interrupted failover"),
                        "{what}: the orphan was stopped and said so: {err}"
                    );
                    // Give an orphan that survived the time to act.
                    std::thread::sleep(Duration::from_millis(2000));
                }
                f.assert_up_once(&what, &out);
                cases += 1;
            }
        }
    }

    // Killed during the replay: the rerun stops the running replay before
    // it starts its own (never two at once).
    for reboot in [false, true] {
        f.reset();
        let what = format!("crash during the replay, reboot {reboot}");
        std::fs::write(f.d.join("crash-replay"), "").unwrap();
        let (st, _, _) = f.failover(&[]);
        assert!(!st.success(), "{what}");
        let first: i32 = f.read("replay-pid").trim().parse().unwrap();
        if reboot {
            f.reboot();
        } else {
            assert!(
                Path::new(&format!("/proc/{first}")).exists(),
                "{what}: still running"
            );
        }
        let (st, out, err) = f.failover(&[]);
        assert!(st.success(), "{what}\n{out}\n{err}");
        if !reboot {
            assert!(err.contains("replay (process group"), "{what}: {err}");
        }
        std::thread::sleep(Duration::from_secs(4)); // the killed replay would be done by now
        let log = f.read("replay-log");
        assert_eq!(
            log.lines().filter(|l| l.starts_with("start ")).count(),
            2,
            "{what}: {log}"
        );
        assert!(!log.contains(&format!("done {first} ")), "{what}: {log}");
        f.assert_up_once(&what, &out);
        f.rm("replay-pid");
        cases += 1;
    }
    assert_eq!(cases, 4 * steps + 2);
}

#[test]
fn a_foreign_mount_is_refused_before_any_copy() {
    require_real!();
    let f = Faults::new();
    let mp = f.mnt("blob");
    std::fs::create_dir_all(&mp).unwrap();
    sh(&["mount", "-t", "tmpfs", "stale-blob", mp.to_str().unwrap()]);
    let (st, out, err) = f.failover(&[]);
    let held = mounts_at(&mp);
    sh(&["umount", mp.to_str().unwrap()]);
    assert_eq!(st.code(), Some(1), "{out}\n{err}");
    assert!(
        err.contains("volume `blob`")
            && err.contains(mp.to_str().unwrap())
            && err.contains("stale-blob"),
        "{err}"
    );
    assert_eq!(held, 1, "its mount was left alone");
    for r in ROLES {
        assert!(!f.lab.standby_live(r).exists(), "no copy of {r} was made");
        assert_eq!(mounts_at(&f.mnt(r)), 0, "nothing mounted for {r}");
    }
    assert_eq!(f.read("calls"), "", "no snapshot, no mount was attempted");
    assert!(
        !f.lab
            .dir
            .path()
            .join("state-stb/failover/state.json")
            .exists(),
        "no failover in progress"
    );
    assert_eq!(f.read("replay-log"), "");
    // With the mountpoint free, failover goes ahead.
    let (st, out, err) = f.failover(&[]);
    assert!(st.success(), "{out}\n{err}");
    f.assert_up_once("after the stale mount was removed", &out);
}

/// A pass-through filter that forwards `at` bytes, then stops forwarding
/// and sleeps with both pipes open: a primary that went silent mid-stream.
fn stall_transport(f: &Faults) -> PathBuf {
    let script = format!(
        "#!/bin/sh\npython3 -c 'import os, sys, time\nopen(sys.argv[1], \"w\").write(str(os.getpid()))\ni, o = sys.stdin.buffer, sys.stdout.buffer\nat, pos = int(sys.argv[2]), 0\nwhile pos < at:\n  c = i.read1(min(65536, at - pos))\n  if not c: break\n  o.write(c); o.flush(); pos += len(c)\ntime.sleep(600)\n' {pidfile} 100000 | exec setsid {exe} serve --stdio --config {cfg}\n",
        pidfile = f.d.join("stall-pid").display(),
        exe = snapsite_exe(),
        cfg = f.lab.stb_cfg.display()
    );
    f.lab.script_transport("stall", &script, "")
}

fn find_serve(cfg: &Path) -> Option<i32> {
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "serve") && args.iter().any(|a| a == cfg.to_str().unwrap()) {
            return Some(pid);
        }
    }
    None
}

fn pgrp_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn a_silent_serve_session_is_aborted_not_waited_for() {
    require_real!();
    let f = Faults::new();
    // A second set, shipped through a primary that goes silent mid-stream.
    for r in ROLES {
        write_file(&f.lab.live(r).join("data2"), &random_bytes(77, 512 * 1024));
    }
    f.lab.ok(&f.lab.pri_cfg, &["snapshot"]);
    let cfg = stall_transport(&f);
    let mut ship = Command::new(snapsite_exe())
        .arg("--config")
        .arg(&cfg)
        .arg("ship")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(f.d.join("ship-err")).unwrap())
        .spawn()
        .unwrap();
    let ship_pid = ship.id();
    let cleanup = |ship: &mut std::process::Child| {
        let _ = ship.kill();
        let _ = ship.wait();
        f.kill_recorded("stall-pid");
    };
    // Wait until the standby is receiving (a marker and a btrfs receive).
    let start = Instant::now();
    let serve_pid = loop {
        let receiving = f
            .lab
            .standby_recv_entries()
            .iter()
            .any(|e| e.contains("/.receiving-"));
        if let (true, Some(pid)) = (receiving, find_serve(&f.lab.stb_cfg)) {
            break pid;
        }
        if start.elapsed() > Duration::from_secs(30) {
            cleanup(&mut ship);
            panic!(
                "the standby never started receiving: {}",
                f.read("ship-err")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let serve_json = f.lab.dir.path().join("state-stb/serve.json");
    if !serve_json.exists() {
        // Until serve writes its own record: what it will write.
        std::fs::write(
            &serve_json,
            format!(
                "{{\"pid\": {serve_pid}, \"pgid\": {}, \"started_at\": \"2026-11-30T05:00:00Z\", \"primary\": \"primary\"}}",
                pgrp_of(serve_pid)
            ),
        )
        .unwrap();
    }
    assert_eq!(pgrp_of(serve_pid), serve_pid, "serve leads its group");
    let members_before: Vec<i32> = group_members(serve_pid);
    assert!(
        members_before.len() >= 2,
        "serve and its btrfs receive: {members_before:?}"
    );

    let t = Instant::now();
    let (st, out, err) = f.failover(&[]);
    let took = t.elapsed();
    cleanup(&mut ship);
    assert!(st.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "aborted receive session pid {serve_pid} from primary (started"
        )),
        "{out}"
    );
    assert!(took < Duration::from_secs(20), "did not wait: {took:?}");
    assert!(
        group_members(serve_pid).is_empty(),
        "serve and its receive are gone"
    );
    assert!(
        f.lab
            .standby_recv_entries()
            .iter()
            .all(|e| !e.contains("/.receiving-")),
        "partial receive discarded: {:?}",
        f.lab.standby_recv_entries()
    );
    assert!(!serve_json.exists());
    assert_ne!(ship_pid, 0);
    f.assert_up_once("after aborting the session", &out);
}

fn group_members(pgid: i32) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest = &s[s.rfind(')').unwrap() + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f[0] != "Z" && f[2].parse::<i32>().ok() == Some(pgid) {
            v.push(pid);
        }
    }
    v
}

#[test]
fn a_lock_held_by_something_else_is_reported_not_killed() {
    require_real!();
    let f = Faults::new();
    let lock = f.lab.dir.path().join("state-stb/lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Even a (stale) serve record naming it does not make it a serve session.
    std::fs::write(
        f.lab.dir.path().join("state-stb/serve.json"),
        format!(
            "{{\"pid\": {}, \"pgid\": {}, \"started_at\": \"2026-11-30T05:00:00Z\"}}",
            holder.id(),
            holder.id()
        ),
    )
    .unwrap();
    let (st, out, err) = f.failover(&[]);
    let alive = holder.try_wait().unwrap().is_none();
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(err.contains("another snapsite holds"), "{err}");
    assert!(alive, "the lock holder was not killed");
    assert!(!f.lab.standby_live("mysql").exists());
}

#[test]
fn the_larger_margin_applies_and_an_absurd_one_is_refused() {
    require_real!();
    let mut f = Faults::new();
    f.write_replay("\n[set]\nsafety_margin = \"5s\"\n");
    let text = f.lab.ok(&f.lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(
        text.contains("margin        standby 5.000 s, manifest 0.000 s: the standby's [set] safety_margin applies"),
        "{text}"
    );
    let plan: serde_json::Value = serde_json::from_str(
        &f.lab
            .ok(&f.lab.stb_cfg, &["failover", "--dry-run", "--json"]),
    )
    .unwrap();
    let earliest = plan["set_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["before"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
        })
        .min()
        .unwrap();
    let from: jiff::Timestamp = plan["from_time"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        earliest.duration_since(from),
        jiff::SignedDuration::from_secs(5)
    );
    assert_eq!(plan["margin"]["applied_ms"], 5000);

    // The primary's margin, when larger, applies; an absurd one is refused.
    let manifest = f
        .lab
        .dir
        .path()
        .join(format!("state-stb/sets/{}.json", f.set_id));
    let orig: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    for (ms, ok) in [(9000i64, true), (-1, false), (86_400_001, false)] {
        let mut m = orig.clone();
        m["safety_margin_ms"] = ms.into();
        std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
        let out = f.lab.run(&f.lab.stb_cfg, &["failover", "--dry-run"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        if ok {
            assert!(out.status.success(), "{err}");
            assert!(
                text.contains("manifest 9.000 s: the manifest's safety_margin_ms applies (9.000 s"),
                "{text}"
            );
        } else {
            assert_eq!(out.status.code(), Some(1), "{ms}: {text}");
            assert!(
                err.contains(&f.set_id)
                    && err.contains("safety_margin_ms")
                    && !err.contains("panick"),
                "{ms}: {err}"
            );
        }
    }
}
