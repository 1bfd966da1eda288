//! The crash matrix on real btrfs (loop devices): every DR verb is stopped
//! dead at each of its failpoints (`SNAPSITE_FAILPOINT`, src/base/failpoint.rs:
//! `_exit` without cleanup, the same as SIGKILL for what is on disk), then
//! the verb is rerun (or the documented recovery is run) and the same
//! invariants are checked after every cell:
//!
//! - no committed set lost or changed on either site (manifests equal,
//!   except `committed_at` that the demote sets on sets both hold);
//! - the data on both sites equal to what was written (the kept divergent
//!   snapshots, the peer's copies, and what the new primary ships back);
//! - nothing left mounted, no `.orig-`, temp file, receive marker, journal
//!   or second divergent snapshot left over;
//! - no resend: the new primary's next ship is incremental from the
//!   intended base and carries only what changed;
//! - roles and generations consistent on both sites;
//! - while interrupted, `role` and `status` name the verb and the command
//!   that finishes it.
//!
//! The default run covers every failpoint (each must be reached: the
//! process must stop there with exit 86). `SNAPSITE_CRASH_MATRIX=full`
//! adds the "reboot" variant (the live mounts are gone before the rerun)
//! and, for a switchover stopped in its demote, the peer-side recovery
//! (`failover --set FINAL` on the peer, then `failback` here).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use common::*;
use snapsite::base::failpoint;

const KIB: usize = 1 << 10;

/// replay.command: succeed at once.
const TRUE: &str = "[\"true\"]";
/// replay.command: count the replays in `$SNAPSITE_TEST_REPLAY_LOG`.
const COUNTING: &str = "[\"sh\", \"-c\", \"echo replay >> \\\"$SNAPSITE_TEST_REPLAY_LOG\\\"\"]";
const REPLAY_LOG: &str = "SNAPSITE_TEST_REPLAY_LOG";

/// After these nothing is left to finish (nothing interrupted to show).
const NOTHING_TO_FINISH: &[&str] = &["rehearse.after_teardown"];

fn ok_env(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let o = run_snapsite(cfg, args, env);
    assert!(
        o.status.success(),
        "snapsite {args:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    json(&o.stdout)
}

fn json(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
}

fn ok(cfg: &Path, args: &[&str]) -> serde_json::Value {
    ok_env(cfg, args, &[])
}

fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// How a cell recovers after the crash.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Recovery {
    /// Run the same verb again.
    Rerun,
    /// Switchover only: `failover --set FINAL` on the peer, then
    /// `failback` here.
    PeerFailoverThenFailback,
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    verb: &'static str,
    /// None: the verb runs through (the baseline every cell is held to).
    failpoint: Option<&'static str>,
    recovery: Recovery,
    /// The machine "reboots" after the crash: the live mounts are gone.
    reboot: bool,
    /// Failback only: the sites hold one common set (not two), so a
    /// rerun that re-planned would find no common base at all.
    one_common: bool,
}

/// The two sites: A (the lab's primary, its live volumes bind-mounted at
/// their mountpoints like an application's) and B (the lab's standby, with
/// A as its peer).
struct Sites {
    a_mnt: PathBuf,
    b_cfg: PathBuf,
    lab: Lab,
}

impl Drop for Sites {
    fn drop(&mut self) {
        // A's bind mounts would keep its filesystem busy.
        unmount_below(&self.a_mnt);
    }
}

impl Sites {
    fn new(replay: &str) -> Sites {
        let lab = Lab::new(replay);
        let a_mnt = lab.dir.path().join("mnt-a");
        let mut cfg = std::fs::read_to_string(&lab.pri_cfg).unwrap();
        for r in ROLES {
            let line = format!(
                "snapshot_dir = \"{}\"\n",
                lab.pri.path(&format!("snap/{r}")).display()
            );
            assert!(cfg.contains(&line), "{cfg}");
            cfg = cfg.replace(
                &line,
                &format!("{line}mountpoint = \"{}\"\n", a_mnt.join(r).display()),
            );
            std::fs::create_dir_all(a_mnt.join(r)).unwrap();
            sh(&[
                "mount",
                "--bind",
                lab.live(r).to_str().unwrap(),
                a_mnt.join(r).to_str().unwrap(),
            ]);
        }
        std::fs::write(&lab.pri_cfg, cfg).unwrap();
        let b_cfg = lab.standby_with_peer("b.toml");
        Sites { a_mnt, b_cfg, lab }
    }

    fn a(&self) -> &Path {
        &self.lab.pri_cfg
    }
    fn state(&self, site: char) -> PathBuf {
        self.lab.dir.path().join(if site == 'a' {
            "state-pri"
        } else {
            "state-stb"
        })
    }
    fn a_live_digests(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        ROLES
            .iter()
            .map(|r| (r.to_string(), tree_digest(&self.lab.live(r))))
            .collect()
    }
    fn b_live_digests(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        ROLES
            .iter()
            .map(|r| (r.to_string(), tree_digest(&self.lab.standby_live(r))))
            .collect()
    }
}

/// Manifests in `state_dir/sets`, by id, with `committed_at` left out
/// (the demote sets it on sets both sites hold).
fn manifests(state: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(state.join("sets")) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json") {
            let mut v = json(&std::fs::read(e.path()).unwrap());
            v.as_object_mut().unwrap().remove("committed_at");
            out.insert(id.to_string(), v);
        }
    }
    out
}

fn role(cfg: &Path) -> (String, u64, serde_json::Value) {
    let v = ok(cfg, &["role", "--json"]);
    (
        v["role"].as_str().unwrap().to_string(),
        v["generation"].as_u64().unwrap(),
        v,
    )
}

/// Every path below `dir` (files and directories), relative.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                go(root, &p, out);
            }
        }
    }
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// Nothing half-made on either site: no journal, temp file, `.orig-`,
/// receive marker; nothing mounted on A; exactly one divergent snapshot
/// per volume on A, holding `kept` (A's live data when it stopped being
/// primary). Returns the divergent label.
fn check_clean(s: &Sites, kept: &BTreeMap<String, BTreeMap<String, String>>) -> String {
    check_state_clean(s);
    let mut labels = BTreeSet::new();
    for r in ROLES {
        for (fs, dir) in [(&s.lab.pri, "snap"), (&s.lab.stb, "recv")] {
            let d = fs.path(&format!("{dir}/{r}"));
            let names = dir_names(&d);
            let bad: Vec<&String> = names
                .iter()
                .filter(|n| n.starts_with(".orig-") || n.starts_with(".receiving-"))
                .collect();
            assert!(bad.is_empty(), "{}: {bad:?}", d.display());
        }
        let d = s.lab.pri.path(&format!("snap/{r}"));
        let div: Vec<String> = dir_names(&d)
            .into_iter()
            .filter(|n| n.starts_with("divergent-"))
            .collect();
        assert_eq!(div.len(), 1, "{r}: one divergent snapshot: {div:?}");
        assert_eq!(
            &tree_digest(&d.join(&div[0])),
            &kept[r],
            "{r}: the divergent snapshot holds A's data"
        );
        labels.insert(div[0].trim_start_matches("divergent-").to_string());
        assert!(!s.lab.live(r).exists(), "{r}: A's live copy is removed");
    }
    assert_eq!(labels.len(), 1, "one label for all volumes: {labels:?}");
    let m = mounts_below(&s.a_mnt);
    assert!(m.is_empty(), "A's live copies are unmounted: {m:?}");
    let m = mounts_below(&s.lab.pri.mnt);
    assert!(m.is_empty(), "nothing mounted in A's filesystem: {m:?}");
    labels.into_iter().next().unwrap()
}

/// The new primary B ships a new full set to A: every volume incremental
/// from `base` (per volume), the payload about what B changed since, and
/// A's received copy equal to B's live data.
fn check_ship_back(s: &Sites, base: &BTreeMap<String, String>, changed: u64) {
    let b2 = id(&ok(&s.b_cfg, &["snapshot", "--json"]));
    let shipped = ok(&s.b_cfg, &["ship", "--json"]);
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for sn in shipped["snapshots"].as_array().unwrap() {
        let r = sn["role"]
            .as_str()
            .or(sn["volume"].as_str())
            .unwrap_or_else(|| panic!("no role in {sn}"));
        assert_eq!(
            sn["base"].as_str(),
            Some(base[r].as_str()),
            "no resend from another base: {sn}"
        );
    }
    let payload = shipped["payload_bytes"].as_u64().unwrap();
    assert!(
        payload <= changed + changed / 10 + 64 * KIB as u64,
        "shipped {payload} bytes for {changed} changed"
    );
    for r in ROLES {
        assert_eq!(
            tree_digest(&s.lab.pri.path(&format!("snap/{r}/{b2}/{b2}"))),
            tree_digest(&s.lab.standby_live(r)),
            "{r}: A received what B holds"
        );
    }
}

/// Run the verb on `cfg` with the failpoint set: it must stop there, and
/// `role` and `status` must then name the verb and the command that
/// finishes it.
fn crash(s: &Sites, cfg: &Path, cell: &Cell, env: &[(&str, &str)]) {
    let fp = cell.failpoint.unwrap();
    let mut env = env.to_vec();
    env.push((failpoint::ENV, fp));
    let o = run_snapsite(cfg, &[cell.verb, "--json"], &env);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(failpoint::EXIT_CODE),
        "{} did not stop at {fp}:\n{err}",
        cell.verb
    );
    assert!(err.contains(&format!("stopped at failpoint {fp}")), "{err}");
    let (_, _, r) = role(cfg);
    let finish = format!("snapsite {}", cell.verb);
    // take_set and ship are undone or finished by the next snapshot, ship
    // or run on their own: nothing is shown as interrupted (unless they ran
    // inside a switchover, whose journal says so).
    let automatic = cell.verb != "switchover"
        && (fp.starts_with("take_set.") || fp.starts_with("ship.") || fp.starts_with("catalog."));
    if NOTHING_TO_FINISH.contains(&fp) || automatic {
        assert_eq!(r["interrupted"], serde_json::json!([]), "{r}");
    } else {
        assert_eq!(
            r["interrupted"][0]["finish"].as_str(),
            Some(finish.as_str()),
            "role names the interrupted verb: {r}"
        );
        let st = run_snapsite(cfg, &["status", "--json"], &[]);
        let st = json(&st.stdout);
        assert!(
            st["findings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["message"].as_str().unwrap().contains(&finish)),
            "status names the command that finishes it: {st}"
        );
    }
    if cell.reboot {
        // The mounts are gone after a reboot (the filesystems themselves
        // come back: they stand for the disks).
        unmount_below(&s.a_mnt);
        unmount_below(&s.lab.dir.path().join("mnt-app"));
    }
}

/// No journal or temp file left in either site's state_dir.
fn check_state_clean(s: &Sites) {
    for site in ['a', 'b'] {
        let leftovers: Vec<String> = walk(&s.state(site))
            .into_iter()
            .filter(|p| {
                let n = p.rsplit('/').next().unwrap();
                n.starts_with("journal-") || n.contains(".tmp.")
            })
            .collect();
        assert!(leftovers.is_empty(), "site {site}: {leftovers:?}");
    }
    for cfg in [&s.lab.pri_cfg, &s.b_cfg] {
        let (_, _, r) = role(cfg);
        assert_eq!(r["interrupted"], serde_json::json!([]), "{r}");
    }
}

/// A set S and a redolog snapshot R on A, shipped to B; returns (S, R).
fn shipped_pair(s: &Sites) -> (String, String) {
    let lab = &s.lab;
    write_file(&lab.live("blob").join("m1"), &random_bytes(4, 512 * KIB));
    write_file(&lab.live("mysql").join("db"), &random_bytes(5, 128 * KIB));
    write_file(&lab.live("index").join("ix"), &random_bytes(6, 64 * KIB));
    write_file(
        &lab.live("redolog").join("log1"),
        &random_bytes(7, 16 * KIB),
    );
    let set = id(&lab.snapshot(false));
    write_file(
        &lab.live("redolog").join("log2"),
        &random_bytes(8, 16 * KIB),
    );
    let redo = id(&lab.snapshot(true));
    lab.ship(s.a());
    (set, redo)
}

fn replays(s: &Sites) -> usize {
    std::fs::read_to_string(s.lab.dir.path().join("replays.log"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Failover: B fails over to A's shipped set and redolog snapshot.
fn failover_cell(cell: &Cell) {
    let s = Sites::new(COUNTING);
    let log = s.lab.dir.path().join("replays.log");
    let env = [(REPLAY_LOG, log.to_str().unwrap())];
    let (set, redo) = shipped_pair(&s);
    let want: BTreeMap<String, BTreeMap<String, String>> = ROLES
        .iter()
        .map(|r| {
            let snap = if *r == "redolog" { &redo } else { &set };
            (r.to_string(), tree_digest(&s.lab.primary_snap(r, snap)))
        })
        .collect();
    let a_before = manifests(&s.state('a'));
    let b_before = manifests(&s.state('b'));
    if cell.failpoint.is_some() {
        crash(&s, &s.lab.stb_cfg, cell, &env);
    }
    let f = ok_env(&s.lab.stb_cfg, &["failover", "--json"], &env);
    assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
    assert_eq!(f["plan"]["set_id"].as_str(), Some(set.as_str()), "{f}");
    assert_eq!(f["plan"]["redolog_set_id"].as_str(), Some(redo.as_str()));
    assert_eq!(replays(&s), 1, "the replay ran exactly once");
    check_state_clean(&s);
    let (ra, ga, _) = role(s.a());
    let (rb, gb, _) = role(&s.b_cfg);
    assert_eq!(
        (ra.as_str(), ga, rb.as_str(), gb),
        ("primary", 1, "primary", 2)
    );
    assert_eq!(s.b_live_digests(), want, "B's copies hold what A shipped");
    let mnt = s.lab.dir.path().join("mnt-app");
    common::crashcheck::assert_mounted_once(&mounts_below(&mnt), &mnt, &ROLES);
    for r in ROLES {
        assert_eq!(tree_digest(&mnt.join(r)), want[r]);
    }
    assert_eq!(manifests(&s.state('a')), a_before, "A's sets");
    assert_eq!(manifests(&s.state('b')), b_before, "B's sets");
}

/// The standby's spool (redolog streaming) for the spool cells.
const STREAM: &str = "\n[stream]\nfiles = [\"log*\"]\nflush_interval = \"100ms\"\n";

/// A spool session of the test's follower with `snapsite serve --stdio`
/// on B (a child: a failpoint there stops only it).
struct SpoolConn {
    child: std::process::Child,
    r: snapsite::wire::stream::Reader<std::process::ChildStdout>,
    w: snapsite::wire::stream::Writer<std::process::ChildStdin>,
}

impl SpoolConn {
    fn open(
        s: &Sites,
        env: &[(&str, &str)],
    ) -> (SpoolConn, u64, Vec<snapsite::wire::stream::SpoolFileState>) {
        let mut c = std::process::Command::new(snapsite_exe());
        c.args(["serve", "--stdio", "--config"])
            .arg(&s.lab.stb_cfg)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().unwrap();
        let mut conn = SpoolConn {
            w: snapsite::wire::stream::Writer::new(child.stdin.take().unwrap()),
            r: snapsite::wire::stream::Reader::new(child.stdout.take().unwrap()),
            child,
        };
        let cfg = snapsite::base::config::Config::load(s.a()).unwrap();
        let (seq, files) =
            snapsite::primary::follower::spool_handshake(&cfg, &mut conn.r, &mut conn.w).unwrap();
        (conn, seq, files)
    }
    fn close(mut self) -> std::process::Output {
        let _ = self.w.msg(&snapsite::wire::stream::Msg::Bye);
        drop(self.w);
        drop(self.r);
        self.child.wait_with_output().unwrap()
    }
}

/// A set and a redolog snapshot shipped to B, streaming on B, and a spool
/// continuing the redolog snapshot (A's follower in the test: a reset at the
/// snapshot's sizes, then appends and a new file).
fn spool_sites() -> (Sites, snapsite::primary::follower::Follower, String, String) {
    let s = Sites::new(COUNTING);
    for cfg in [&s.lab.stb_cfg, &s.b_cfg] {
        let mut t = std::fs::read_to_string(cfg).unwrap();
        t.push_str(STREAM);
        std::fs::write(cfg, t).unwrap();
    }
    let (set, redo) = shipped_pair(&s);
    let mut f =
        snapsite::primary::follower::Follower::new(s.lab.live("redolog"), vec!["log*".into()]);
    let (mut c, seq, files) = SpoolConn::open(&s, &[]);
    f.resume(seq, &files).unwrap();
    let mut rec = Default::default();
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    spool_write(&s, 1);
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    assert!(c.close().status.success());
    (s, f, set, redo)
}

/// New redo on A: appended to log2, and a new file.
fn spool_write(s: &Sites, k: u64) {
    use std::io::Write;
    let live = s.lab.live("redolog");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(live.join("log2"))
        .unwrap();
    f.write_all(&random_bytes(100 + k, 3 * KIB)).unwrap();
    write_file(&live.join(format!("log3-{k}")), &random_bytes(200 + k, KIB));
}

/// Failover with a spool, stopped in the spool's apply and rerun: B's
/// redolog copy then holds A's redolog files exactly (the snapshot plus the
/// spool, nothing applied twice, nothing lost), the other copies the set,
/// the replay ran once, no scratch directory left.
fn spool_failover_cell(cell: &Cell) {
    let (s, _f, set, _redo) = spool_sites();
    let log = s.lab.dir.path().join("replays.log");
    let env = [(REPLAY_LOG, log.to_str().unwrap())];
    let mut want: BTreeMap<String, BTreeMap<String, String>> = ROLES
        .iter()
        .map(|r| (r.to_string(), tree_digest(&s.lab.primary_snap(r, &set))))
        .collect();
    want.insert("redolog".into(), tree_digest(&s.lab.live("redolog")));
    crash(&s, &s.lab.stb_cfg, cell, &env);
    let f = ok_env(&s.lab.stb_cfg, &["failover", "--json"], &env);
    assert!(f["stream"]["not_used"].is_null(), "{f}");
    assert_eq!(replays(&s), 1, "the replay ran exactly once");
    check_state_clean(&s);
    let mnt = s.lab.dir.path().join("mnt-app");
    for r in ROLES {
        assert_eq!(tree_digest(&mnt.join(r)), want[r], "{r}: {f}");
    }
    assert!(!mnt.join("redolog/.snapsite-spool-apply").exists());
}

/// The standby's spool stopped at its durable steps (serve on B is killed
/// there), then the follower reconnects: it must continue the spool, which
/// stays exact (failover's copy = A's redolog files).
fn spool_cell(cell: &Cell) {
    let (s, mut f, _set, _redo) = spool_sites();
    let fp = cell.failpoint.unwrap();
    let mut rec = snapsite::primary::follower::FollowerRecord::default();
    let stopped = |o: std::process::Output| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(failpoint::EXIT_CODE), "{err}");
        assert!(err.contains(&format!("stopped at failpoint {fp}")), "{err}");
    };
    let fpenv = [(failpoint::ENV, fp)];
    match fp {
        "spool.after_append" => {
            spool_write(&s, 2);
            let (mut c, seq, files) = SpoolConn::open(&s, &fpenv);
            f.resume(seq, &files).unwrap();
            assert!(f.flush(&mut c.r, &mut c.w, &mut rec).is_err(), "no ack");
            stopped(c.close());
            let (_, _, r) = role(&s.lab.stb_cfg);
            assert_eq!(r["interrupted"], serde_json::json!([]), "{r}");
            let (c, seq2, files) = SpoolConn::open(&s, &[]);
            assert_eq!(seq2, seq + 1, "the batch is in the journal");
            assert!(
                f.resume_recorded(seq2, &files, &mut rec).unwrap(),
                "resumed"
            );
            assert!(c.close().status.success());
        }
        _ => {
            // A redolog set's commit on B runs the checkpoint.
            s.lab.snapshot(true);
            let o = run_snapsite(s.a(), &["ship", "--json"], &fpenv);
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(&format!("stopped at failpoint {fp}")),
                "serve did not stop at {fp}:\n{err}"
            );
            s.lab.ship(s.a());
            check_sets_shipped(&s);
        }
    }
    // More redo, streamed in a resumed session.
    spool_write(&s, 3);
    let (mut c, seq, files) = SpoolConn::open(&s, &[]);
    assert!(f.resume_recorded(seq, &files, &mut rec).unwrap(), "resumed");
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    assert!(c.close().status.success());
    assert_eq!(rec.resets, 0, "{rec:?}");
    let state = s.state('b').join("spool");
    assert!(!state.join("broken.json").exists());
    let want = tree_digest(&s.lab.live("redolog"));
    let log = s.lab.dir.path().join("replays.log");
    let env = [(REPLAY_LOG, log.to_str().unwrap())];
    let rep = ok_env(&s.lab.stb_cfg, &["failover", "--json"], &env);
    assert!(rep["stream"]["not_used"].is_null(), "{rep}");
    assert!(
        rep["stream"]["events_applied"].as_u64().unwrap() > 0,
        "{rep}"
    );
    let mnt = s.lab.dir.path().join("mnt-app");
    assert_eq!(tree_digest(&mnt.join("redolog")), want, "{rep}");
}

/// Rehearse: B rehearses a failover on scratch clones.
fn rehearse_cell(cell: &Cell) {
    let s = Sites::new(COUNTING);
    let log = s.lab.dir.path().join("replays.log");
    let env = [(REPLAY_LOG, log.to_str().unwrap())];
    let (set, redo) = shipped_pair(&s);
    let recv = |r: &str| {
        let snap = if r == "redolog" { &redo } else { &set };
        tree_digest(&s.lab.standby_snap(r, snap))
    };
    let before: Vec<_> = ROLES.iter().map(|r| recv(r)).collect();
    let a_before = manifests(&s.state('a'));
    let b_before = manifests(&s.state('b'));
    if cell.failpoint.is_some() {
        crash(&s, &s.lab.stb_cfg, cell, &env);
    }
    let r = ok_env(&s.lab.stb_cfg, &["rehearse", "--json"], &env);
    assert_eq!(r["ok"].as_bool(), Some(true), "{r}");
    assert_eq!(r["plan"]["set_id"].as_str(), Some(set.as_str()), "{r}");
    let ran_before = matches!(
        cell.failpoint,
        Some("rehearse.after_replay" | "rehearse.after_teardown")
    );
    assert_eq!(replays(&s), 1 + usize::from(ran_before));
    check_state_clean(&s);
    assert!(!s.state('b').join("rehearsal/state.json").exists());
    for rl in ROLES {
        let d = s.lab.standby_recv(rl);
        let names: Vec<String> = dir_names(&d)
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{}: {names:?}", d.display());
    }
    let m = mounts_below(&s.lab.stb.mnt);
    assert!(m.is_empty(), "nothing mounted in B's filesystem: {m:?}");
    let m = mounts_below(&s.lab.dir.path().join("mnt-app"));
    assert!(m.is_empty(), "nothing mounted at B's mountpoints: {m:?}");
    let (ra, ga, _) = role(s.a());
    let (rb, gb, _) = role(&s.lab.stb_cfg);
    assert_eq!(
        (ra.as_str(), ga, rb.as_str(), gb),
        ("primary", 1, "standby", 1)
    );
    assert_eq!(manifests(&s.state('a')), a_before, "A's sets");
    assert_eq!(manifests(&s.state('b')), b_before, "B's sets");
    let after: Vec<_> = ROLES.iter().map(|r| recv(r)).collect();
    assert_eq!(after, before, "B's received snapshots unchanged");
}

/// A file in one of A's live volumes: (volume, name, seed, length).
type LiveFile = (&'static str, &'static str, u64, usize);

/// Writes `files` into A's live volumes.
fn write_live(lab: &Lab, files: &[LiveFile]) {
    for &(r, name, seed, len) in files {
        write_file(&lab.live(r).join(name), &random_bytes(seed, len));
    }
}

/// A's first data on each of its three volumes (blob, mysql, redolog).
const FIRST_DATA: &[LiveFile] = &[
    ("blob", "m0", 1, 256 * KIB),
    ("mysql", "db0", 2, 64 * KIB),
    ("redolog", "log0", 3, 16 * KIB),
];

/// What A's application writes after the shipped set, before the
/// switchover.
const SWITCHOVER_LAST_WRITES: &[LiveFile] = &[
    ("blob", "last", 4, 128 * KIB),
    ("redolog", "log1", 5, 16 * KIB),
];

/// What A writes after its shipped set, before the snapshot cell's set.
const SNAPSHOT_CELL_WRITES: &[LiveFile] = &[
    ("blob", "m1", 2, 128 * KIB),
    ("redolog", "log1", 3, 16 * KIB),
];

/// A writes `first`, takes a set and ships it, then writes `then` (in no
/// set yet).
fn ship_then_write(s: &Sites, first: &[LiveFile], then: &[LiveFile]) {
    write_live(&s.lab, first);
    s.lab.snapshot(false);
    s.lab.ship(s.a());
    write_live(&s.lab, then);
}

/// Failback: A was primary (two full sets and a redolog snapshot shipped,
/// then a redolog snapshot B never got); B failed over and wrote more; A
/// fails back.
fn failback_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    write_live(lab, FIRST_DATA);
    if !cell.one_common {
        lab.snapshot(false);
        lab.ship(s.a());
    }
    let (set, redo) = shipped_pair(&s);
    // A goes on alone: data B never gets.
    write_file(&lab.live("blob").join("a-late"), &random_bytes(9, 64 * KIB));
    write_file(
        &lab.live("redolog").join("log-a"),
        &random_bytes(10, 16 * KIB),
    );
    let a1 = id(&lab.snapshot(true));
    // B fails over and writes.
    let f = ok(&lab.stb_cfg, &["failover", "--json"]);
    assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
    let b_changed = [
        ("blob", "b1", 256 * KIB, 11),
        ("mysql", "b-db", 64 * KIB, 12),
        ("redolog", "log-b", 16 * KIB, 13),
    ];
    for (r, name, len, seed) in b_changed {
        write_file(&lab.standby_live(r).join(name), &random_bytes(seed, len));
    }
    let changed: u64 = b_changed.iter().map(|x| x.2 as u64).sum();
    let kept = s.a_live_digests();
    let a_before = manifests(&s.state('a'));
    let b_before = manifests(&s.state('b'));

    if cell.failpoint.is_some() {
        crash(&s, s.a(), cell, &[]);
    }
    let fb = ok(s.a(), &["failback", "--json"]);

    let label = check_clean(&s, &kept);
    assert_eq!(fb["divergent"]["label"].as_str(), Some(label.as_str()));
    let (ra, ga, _) = role(s.a());
    let (rb, gb, _) = role(&s.b_cfg);
    assert_eq!(
        (ra.as_str(), ga, rb.as_str(), gb),
        ("standby", 2, "primary", 2)
    );
    // No committed set lost or changed; A's divergent set moved aside, intact.
    let a_after = manifests(&s.state('a'));
    let mut want = a_before.clone();
    let moved = want.remove(&a1).unwrap();
    assert_eq!(a_after, want, "A's sets");
    let kept_set = s
        .state('a')
        .join(format!("divergent/{label}/sets/{a1}.json"));
    let mut got = json(&std::fs::read(&kept_set).unwrap());
    got.as_object_mut().unwrap().remove("committed_at");
    assert_eq!(got, moved, "A's divergent set kept as it was");
    assert_eq!(manifests(&s.state('b')), b_before, "B's sets");
    let base: BTreeMap<String, String> = ROLES
        .iter()
        .map(|r| {
            let b = if *r == "redolog" { &redo } else { &set };
            (r.to_string(), b.clone())
        })
        .collect();
    check_ship_back(&s, &base, changed);
}

/// Switchover: A is primary with B its standby (one set shipped); A's
/// application stops after writing more; A switches over to B.
fn switchover_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    ship_then_write(&s, FIRST_DATA, SWITCHOVER_LAST_WRITES);
    let kept = s.a_live_digests();
    let a_before = manifests(&s.state('a'));
    let b_before = manifests(&s.state('b'));

    if cell.failpoint.is_some() {
        crash(&s, s.a(), cell, &[]);
    }
    let fin = match cell.recovery {
        Recovery::Rerun => {
            let so = ok(s.a(), &["switchover", "--json"]);
            let fin = so["final_set"].as_str().unwrap().to_string();
            let f = ok(&lab.stb_cfg, &["failover", "--set", &fin, "--json"]);
            assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
            fin
        }
        Recovery::PeerFailoverThenFailback => {
            let j = json(&std::fs::read(s.state('a').join("journal-switchover.json")).unwrap());
            let fin = j["intent"]["final_set"].as_str().unwrap().to_string();
            let f = ok(&lab.stb_cfg, &["failover", "--set", &fin, "--json"]);
            assert_eq!(f["generation"].as_u64(), Some(2), "{f}");
            ok(s.a(), &["failback", "--json"]);
            fin
        }
    };

    check_clean(&s, &kept);
    let (ra, ga, _) = role(s.a());
    let (rb, gb, _) = role(&s.b_cfg);
    // A switchover's demote records A as the standby of its own
    // generation; a failback after the peer's failover (when no demote
    // plan was recorded yet) as the standby of the peer's.
    let a_gen_ok = ga == 1 || (cell.recovery == Recovery::PeerFailoverThenFailback && ga == 2);
    assert!(
        ra == "standby" && a_gen_ok && rb == "primary" && gb == 2,
        "roles: A {ra} in {ga}, B {rb} in {gb}"
    );
    // One final set, no second one; nothing else changed.
    let a_after = manifests(&s.state('a'));
    let mut want: BTreeSet<String> = a_before.keys().cloned().collect();
    want.insert(fin.clone());
    assert_eq!(a_after.keys().cloned().collect::<BTreeSet<_>>(), want);
    for (k, v) in &a_before {
        assert_eq!(&a_after[k], v, "A's set {k}");
    }
    let b_after = manifests(&s.state('b'));
    for (k, v) in &b_before {
        assert_eq!(&b_after[k], v, "B's set {k}");
    }
    // The final set, as A took it (the standby records its own storage
    // ids and receive details; the set's identity and times are A's).
    let key = |m: &serde_json::Value| {
        let members: Vec<_> = m["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["role"].clone(),
                    x["snapshot"].clone(),
                    x["before"].clone(),
                )
            })
            .collect();
        (
            m["id"].clone(),
            m["kind"].clone(),
            m["seq"].clone(),
            members,
        )
    };
    assert_eq!(key(&b_after[&fin]), key(&a_after[&fin]), "the final set");
    // Zero loss: B's copies hold what A's application wrote last.
    assert_eq!(s.b_live_digests(), kept, "B holds A's last data");
    // B writes; its ship to A is incremental from the final set.
    write_file(
        &lab.standby_live("blob").join("b1"),
        &random_bytes(20, 128 * KIB),
    );
    let base = ROLES.iter().map(|r| (r.to_string(), fin.clone())).collect();
    check_ship_back(&s, &base, 128 * KIB as u64);
}

/// Set ids (snapshot names) in A's snapshot directory of each volume.
fn a_snapshots(s: &Sites) -> BTreeMap<String, BTreeSet<String>> {
    ROLES
        .iter()
        .map(|r| {
            let names = std::fs::read_dir(s.lab.pri.path(&format!("snap/{r}")))
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && !n.starts_with("divergent-"))
                .collect();
            (r.to_string(), names)
        })
        .collect()
}

/// A's snapshots are exactly its sets' members; every set is committed on
/// B with the same members, and B's received data equals A's snapshots.
fn check_sets_shipped(s: &Sites) {
    let a = manifests(&s.state('a'));
    let mut want: BTreeMap<String, BTreeSet<String>> = ROLES
        .iter()
        .map(|r| (r.to_string(), BTreeSet::new()))
        .collect();
    for (id, m) in &a {
        for x in m["members"].as_array().unwrap() {
            want.get_mut(x["role"].as_str().unwrap())
                .unwrap()
                .insert(id.clone());
        }
    }
    assert_eq!(
        a_snapshots(s),
        want,
        "A's snapshots are its sets' members, no more"
    );
    let b = manifests(&s.state('b'));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "every set of A committed on B"
    );
    for (r, ids) in &want {
        for id in ids {
            assert_eq!(
                tree_digest(&s.lab.standby_snap(r, id)),
                tree_digest(&s.lab.primary_snap(r, id)),
                "{r} {id}: B holds what A took"
            );
        }
    }
    assert!(
        std::fs::read_dir(s.state('a').join("pending"))
            .map(|rd| rd.count() == 0)
            .unwrap_or(true),
        "no pending set on A"
    );
    let entries = s.lab.standby_recv_entries();
    assert!(
        entries.iter().all(|e| !e.contains("/.")),
        "no marker or hidden entry on B: {entries:?}"
    );
    let rec = json(&std::fs::read(s.state('a').join("standby.json")).unwrap());
    let recorded: BTreeSet<String> = json_strs(&rec["committed"]).into_iter().collect();
    for id in a.keys() {
        assert!(recorded.contains(id), "A recorded {id} as committed: {rec}");
    }
    check_receipts(s);
    let (ra, ga, _) = role(s.a());
    let (rb, gb, _) = role(&s.lab.stb_cfg);
    assert_eq!(
        (ra.as_str(), ga, rb.as_str(), gb),
        ("primary", 1, "standby", 1)
    );
}

/// Snapshot: A takes a set (one already shipped before).
fn snapshot_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    ship_then_write(&s, &[("blob", "m0", 1, 128 * KIB)], SNAPSHOT_CELL_WRITES);
    let before = manifests(&s.state('a'));
    // Killed between a manifest's write and the sets.summary update: the
    // summary must be valid before (else there is nothing to update).
    let summary_cell = cell.failpoint == Some("catalog.before_summary");
    let summary = s.state('a').join("sets.summary");
    if summary_cell {
        let text = settled_summary(s.a(), &summary);
        crash(&s, s.a(), cell, &[]);
        assert_eq!(
            std::fs::read_to_string(&summary).ok().as_deref(),
            Some(text.as_str()),
            "the kill came before the summary's update"
        );
        // status (from the stale summary: it must notice) agrees with a
        // whole read, and counts the set whose manifest was written.
        let got = status_sets(s.a());
        assert_eq!(got, whole_status_sets(s.a(), &summary));
        let full = manifests(&s.state('a')).len();
        assert_eq!(got["sets"]["full"].as_u64(), Some(full as u64), "{got}");
        assert_eq!(full, before.len() + 1, "the set's manifest was written");
    } else if cell.failpoint.is_some() {
        crash(&s, s.a(), cell, &[]);
    }
    let new = id(&ok(s.a(), &["snapshot", "--json"]));
    lab.ship(s.a());
    let after = manifests(&s.state('a'));
    assert!(after.contains_key(&new));
    let extra: Vec<&String> = after
        .keys()
        .filter(|k| !before.contains_key(*k) && **k != new)
        .collect();
    if summary_cell {
        settled_summary(s.a(), &summary);
        let got = status_sets(s.a());
        assert_eq!(got, whole_status_sets(s.a(), &summary));
        assert_eq!(
            got["sets"]["full"].as_u64(),
            Some(after.len() as u64),
            "{got}"
        );
    }
    let complete_before_crash = matches!(
        cell.failpoint,
        Some("take_set.after_manifest" | "catalog.before_summary")
    );
    assert_eq!(
        extra.len(),
        usize::from(complete_before_crash),
        "only a set completed before the crash stays: {extra:?}"
    );
    check_state_clean(&s);
    check_sets_shipped(&s);
}

/// Once `sets/` has settled, a `status` writes `sets.summary` (as in
/// service): returns its text.
fn settled_summary(cfg: &Path, summary: &Path) -> String {
    std::thread::sleep(
        snapsite::base::catalog::summary::SETTLED + std::time::Duration::from_millis(500),
    );
    run_snapsite(cfg, &["status", "--json"], &[]);
    std::fs::read_to_string(summary)
        .unwrap_or_else(|e| panic!("no {} after status: {e}", summary.display()))
}

/// What `status` says of the sets (counts, newest full set, recovery
/// point; ages left out: they move).
fn status_sets(cfg: &Path) -> serde_json::Value {
    let o = run_snapsite(cfg, &["status", "--json"], &[]);
    let v = json(&o.stdout);
    let at = |x: &serde_json::Value| x.get("set_id").cloned();
    serde_json::json!({
        "sets": v["sets"],
        "newest_complete_full_set": at(&v["newest_complete_full_set"]),
        "recovery_point": at(&v["recovery_point"]),
    })
}

/// [`status_sets`] with every manifest read (no `sets.summary`); the
/// summary is left removed (the next command rebuilds it).
fn whole_status_sets(cfg: &Path, summary: &Path) -> serde_json::Value {
    let _ = std::fs::remove_file(summary);
    status_sets(cfg)
}

/// Ship: A ships two sets (one already shipped before).
fn ship_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    one_shipped_two_pending(&s);
    if cell.failpoint.is_some() {
        crash(&s, s.a(), cell, &[]);
        // A's record of B may be behind after the crash, never ahead.
        check_standby_record(&s, false);
    }
    // What B holds now is not sent again.
    let held: BTreeSet<String> = lab.standby_recv_entries().into_iter().collect();
    reship_none_of(&s, &held);
    check_standby_record(&s, true);
}

/// A's record of B (`standby.json`, what prune's common snapshot and
/// `status` read) claims nothing B does not hold: every set it says is
/// committed has its manifest on B, every snapshot it says B holds is
/// there with its receipt. `settled` (after a ship that ran through): it
/// says all of it, B's committed sets and each volume's newest snapshot.
fn check_standby_record(s: &Sites, settled: bool) {
    let text = std::fs::read_to_string(s.state('a').join("standby.json")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b_sets: BTreeSet<String> = manifests(&s.state('b')).into_keys().collect();
    let committed: BTreeSet<String> = rec["committed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        committed.is_subset(&b_sets),
        "A's record says committed {committed:?}, B committed {b_sets:?}"
    );
    let b_entries: BTreeSet<String> = s.lab.standby_recv_entries().into_iter().collect();
    for r in ROLES {
        let held: Vec<String> = rec["holds"][r]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        for id in &held {
            assert!(
                b_entries.contains(&format!("{r}/{id}"))
                    && s.state('b')
                        .join(format!("received/{r}/{id}.json"))
                        .exists(),
                "A's record says B holds {r} {id}; B: {b_entries:?}"
            );
        }
        if settled {
            let newest_b = b_entries
                .iter()
                .filter_map(|e| e.strip_prefix(&format!("{r}/")))
                .filter(|n| !n.starts_with('.'))
                .max()
                .map(str::to_string);
            assert_eq!(
                held.last().cloned(),
                newest_b,
                "{r}: A's record of B's newest"
            );
        }
    }
    if settled {
        assert_eq!(committed, b_sets, "A's record of B's committed sets");
        assert!(rec["last_ship_ok"].is_string(), "{rec}");
    }
}

/// A's next ship sends none of `held` (what B already holds), and leaves
/// both sites clean with every set shipped.
fn reship_none_of(s: &Sites, held: &BTreeSet<String>) {
    let rep = ok(s.a(), &["ship", "--json"]);
    for sn in rep["snapshots"].as_array().unwrap() {
        let e = format!(
            "{}/{}",
            sn["role"].as_str().unwrap(),
            sn["snapshot"].as_str().unwrap()
        );
        assert!(!held.contains(&e), "resent {e}: {rep}");
    }
    check_state_clean(s);
    check_sets_shipped(s);
}

/// Does snapshot `id` of volume `r` exist on `site` ('a' or 'b')?
fn snap_exists(s: &Sites, site: char, r: &str, id: &str) -> bool {
    if site == 'a' {
        s.lab.primary_snap(r, id).exists()
    } else {
        s.lab.standby_snap(r, id).exists()
    }
}

/// `sets` on `site` shows a set complete exactly when all its members are
/// there: never a set whose snapshots are (partly) gone or not yet received
/// as usable.
fn check_listed_sets(s: &Sites, cfg: &Path, site: char) {
    let v = ok(cfg, &["sets", "--json"]);
    for x in v.as_array().unwrap() {
        if x["kind"] == "divergent" {
            continue;
        }
        let id = x["id"].as_str().unwrap();
        let members = x["manifest"]["members"].as_array().unwrap();
        let all_there = members
            .iter()
            .all(|m| snap_exists(s, site, m["role"].as_str().unwrap(), id));
        assert_eq!(
            x["complete"].as_bool(),
            Some(all_there),
            "site {site}: set {id} shown complete={} with members there={all_there}",
            x["complete"]
        );
    }
}

/// B's receipts name exactly the members of its committed sets.
fn check_receipts(s: &Sites) {
    let mut want = BTreeSet::new();
    for (id, m) in manifests(&s.state('b')) {
        for x in m["members"].as_array().unwrap() {
            want.insert(format!("{}/{id}.json", x["role"].as_str().unwrap()));
        }
    }
    let got: BTreeSet<String> = walk(&s.state('b').join("received"))
        .into_iter()
        .filter(|p| p.ends_with(".json"))
        .collect();
    assert_eq!(got, want, "B's receipts are its sets' members'");
}

/// The ship_cell setup: one set shipped, two more taken.
fn one_shipped_two_pending(s: &Sites) {
    let lab = &s.lab;
    ship_then_write(
        s,
        &[("blob", "m0", 1, 128 * KIB)],
        &[("blob", "m1", 2, 256 * KIB)],
    );
    lab.snapshot(false);
    write_live(
        lab,
        &[
            ("blob", "m2", 3, 256 * KIB),
            ("redolog", "log2", 4, 16 * KIB),
        ],
    );
    lab.snapshot(false);
}

/// Serve: A ships two sets and B's receiving end is stopped dead (the
/// local transport's `serve` child inherits `SNAPSITE_FAILPOINT` from the
/// `ship` that starts it); A's ship fails. Nothing half-received is shown
/// as committed on B, and the next ship finishes without sending again
/// what B finished receiving.
fn serve_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    one_shipped_two_pending(&s);
    let fp = cell.failpoint.unwrap();
    let o = run_snapsite(s.a(), &["ship", "--json"], &[(failpoint::ENV, fp)]);
    common::crashcheck::assert_stopped_at(&o, "serve (under ship)", fp);
    check_listed_sets(&s, &lab.stb_cfg, 'b');
    check_standby_record(&s, false);
    // B's received snapshots: only one whose receive was still running
    // (its marker there, no receipt) may be sent again; one verified and
    // recorded is kept even though its marker is still there.
    let entries = lab.standby_recv_entries();
    let held: BTreeSet<String> = entries
        .iter()
        .filter(|e| {
            let (r, n) = e.split_once('/').unwrap();
            let running = entries.contains(&format!("{r}/.receiving-{n}"))
                && !s.state('b').join(format!("received/{e}.json")).exists();
            !n.starts_with('.') && !running
        })
        .cloned()
        .collect();
    if fp == "serve.after_receipt" {
        assert!(
            entries.iter().any(|e| e.contains("/.receiving-")),
            "a verified receive with its marker: {entries:?}"
        );
    }
    reship_none_of(&s, &held);
    check_standby_record(&s, true);
}

/// Prune: A holds four sets (three shipped), B three; a grid that keeps
/// only the newest makes each site prune its two oldest. Each site's
/// prune is stopped at the failpoint and rerun.
fn prune_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    let retention = "\n[retention]\ngrid = \"1x1ms\"\n";
    for (cfg, extra) in [
        (s.a(), ""),
        (lab.stb_cfg.as_path(), "keep_min_age = \"0s\"\n"),
    ] {
        let text = std::fs::read_to_string(cfg).unwrap();
        std::fs::write(cfg, format!("{text}{retention}{extra}")).unwrap();
    }
    let mut f = Vec::new();
    for i in 0..4u64 {
        write_file(
            &lab.live("blob").join(format!("m{i}")),
            &random_bytes(10 + i, 64 * KIB),
        );
        f.push(id(&lab.snapshot(false)));
        if i == 0 || i == 2 {
            lab.ship(s.a());
        }
    }
    for (cfg, site) in [(s.a(), 'a'), (lab.stb_cfg.as_path(), 'b')] {
        if cell.failpoint.is_some() {
            crash(&s, cfg, cell, &[]);
            check_listed_sets(&s, cfg, site);
        }
        let rep = ok(cfg, &["prune", "--json"]);
        assert!(rep["dry_run"] == false, "{rep}");
        check_listed_sets(&s, cfg, site);
    }
    let keys = |site| manifests(&s.state(site)).into_keys().collect::<Vec<_>>();
    common::crashcheck::assert_pruned_to_newest(&f, keys('a'), keys('b'));
    for r in ROLES {
        for (i, id) in f.iter().enumerate() {
            assert_eq!(snap_exists(&s, 'a', r, id), i >= 2, "A {r} {id}");
            assert_eq!(snap_exists(&s, 'b', r, id), i == 2, "B {r} {id}");
        }
    }
    check_receipts(&s);
    check_state_clean(&s);
    // Shipping goes on from the kept common set: only the newest is sent.
    let rep = ok(s.a(), &["ship", "--json"]);
    for sn in rep["snapshots"].as_array().unwrap() {
        assert_eq!(sn["snapshot"].as_str(), Some(f[3].as_str()), "{rep}");
        assert_eq!(sn["base"].as_str(), Some(f[2].as_str()), "{rep}");
    }
    check_sets_shipped(&s);
}

/// Seeding: A writes a seed of its newest set to a directory (`ship --to`)
/// and B imports it (`serve --from`); the writer (`seed.*`) or the
/// importing serve (`serve.*`, full run) is stopped dead and rerun. Then
/// the network ship goes on from the seeded set without sending it again.
fn seed_cell(cell: &Cell) {
    let s = Sites::new(TRUE);
    let lab = &s.lab;
    write_file(&lab.live("blob").join("m0"), &random_bytes(1, 256 * KIB));
    write_file(&lab.live("redolog").join("log"), &random_bytes(2, 16 * KIB));
    let set = id(&lab.snapshot(false));
    let usb = lab.dir.path().join("usb");
    std::fs::create_dir_all(&usb).unwrap();
    let write = ["ship", "--to", usb.to_str().unwrap(), "--json"];
    let seed = usb.join(format!("{set}.seed"));
    let import = ["serve", "--from", seed.to_str().unwrap()];
    let stop = |cfg: &Path, args: &[&str], fp: &str| {
        let o = run_snapsite(cfg, args, &[(failpoint::ENV, fp)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(failpoint::EXIT_CODE),
            "{args:?} did not stop at {fp}:\n{err}"
        );
        assert!(err.contains(&format!("stopped at failpoint {fp}")), "{err}");
    };
    if let Some(fp) = cell.failpoint.filter(|f| f.starts_with("seed.")) {
        stop(s.a(), &write, fp);
        assert!(
            !seed.join("index.json").exists(),
            "a half-written seed has no index"
        );
    }
    let rep = ok(s.a(), &write);
    assert_eq!(rep["set_id"].as_str(), Some(set.as_str()), "{rep}");
    let names: Vec<String> = walk(&seed);
    assert!(
        names
            .iter()
            .all(|n| n == "index.json" || n.starts_with("part-")),
        "nothing but parts and the index in the seed: {names:?}"
    );
    if let Some(fp) = cell.failpoint.filter(|f| f.starts_with("serve.")) {
        stop(&lab.stb_cfg, &import, fp);
        check_listed_sets(&s, &lab.stb_cfg, 'b');
    }
    let o = run_snapsite(&lab.stb_cfg, &import, &[]);
    assert!(
        o.status.success(),
        "serve --from failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(lab.standby_manifests(), [format!("{set}.json")]);
    // The network ship finds the set committed: nothing of it is sent.
    let rep = ok(s.a(), &["ship", "--json"]);
    assert!(rep["snapshots"].as_array().unwrap().is_empty(), "{rep}");
    check_state_clean(&s);
    check_sets_shipped(&s);
}

fn cells(full: bool) -> Vec<Cell> {
    let mut v = Vec::new();
    for verb in [
        "snapshot",
        "ship",
        "failback",
        "switchover",
        "failover",
        "rehearse",
        "serve",
        "spool",
        "prune",
        "seed",
    ] {
        // serve runs under ship: ship's own cell is its baseline; each
        // prune cell's rerun is one (its run-through only in the full run).
        if !matches!(verb, "serve" | "spool") && (!matches!(verb, "prune" | "seed") || full) {
            v.push(Cell {
                verb,
                failpoint: None,
                recovery: Recovery::Rerun,
                reboot: false,
                one_common: false,
            });
        }
        for f in failpoint::ALL
            .iter()
            .filter(|f| f.verbs.contains(&verb) && !other_backend(f.name))
        {
            // The demote's points are reached by both verbs: by default
            // each point runs once (under failback), the full matrix runs
            // them under switchover too.
            // (and the two windows issue 25 found by hand by default).
            let shared = f.verbs.len() > 1;
            let representative = matches!(
                f.name,
                "btrfs.make_receivable.after_rename" | "btrfs.make_receivable.after_readonly"
            );
            if verb == "switchover" && shared && !representative && !full {
                continue;
            }
            // serve's points under `serve --from` too, in the full run.
            if verb == "seed" && f.name.starts_with("serve.") && !full {
                continue;
            }
            v.push(Cell {
                verb,
                failpoint: Some(f.name),
                recovery: Recovery::Rerun,
                reboot: false,
                one_common: false,
            });
            if verb == "failback" && f.name == "btrfs.make_receivable.after_rename" {
                // Issue 25's first window with one common set: the rerun
                // must finish from `.orig-<id>`, not ask for a re-seed.
                v.push(Cell {
                    verb,
                    failpoint: Some(f.name),
                    recovery: Recovery::Rerun,
                    reboot: false,
                    one_common: true,
                });
            }
            // No mount of serve or prune survives them: no reboot variant.
            if !full
                || matches!(verb, "serve" | "spool" | "prune" | "seed")
                || f.name.starts_with("spool_apply.")
            {
                continue;
            }
            v.push(Cell {
                verb,
                failpoint: Some(f.name),
                recovery: Recovery::Rerun,
                reboot: true,
                one_common: false,
            });
            // The peer can fail over to the final set once it is committed
            // there and no session of this run is left on it.
            let committed_on_peer = !(f.name.starts_with("take_set.")
                || f.name.starts_with("ship.")
                || f.name == "switchover.after_final_set");
            if verb == "switchover" && committed_on_peer {
                v.push(Cell {
                    verb,
                    failpoint: Some(f.name),
                    recovery: Recovery::PeerFailoverThenFailback,
                    reboot: false,
                    one_common: false,
                });
            }
        }
    }
    v
}

fn panic_message(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

#[test]
fn every_verb_survives_a_crash_at_every_failpoint() {
    require_real!();
    if !failpoint::ENABLED {
        // A release build without `--features failpoints`: the binary has none.
        eprintln!(
            "SKIP crash matrix: this build has no failpoints (build with --features failpoints)"
        );
        return;
    }
    let full = std::env::var("SNAPSITE_CRASH_MATRIX").is_ok_and(|v| v == "full");
    let t0 = Instant::now();
    let mut rows = Vec::new();
    let mut reached = BTreeSet::new();
    // SNAPSITE_CRASH_ONLY=<text>: only the cells whose verb or failpoint
    // contains it (while working on one verb).
    let only = std::env::var("SNAPSITE_CRASH_ONLY").ok();
    for cell in cells(full) {
        let name = format!("{} {}", cell.verb, cell.failpoint.unwrap_or(""));
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| match cell.verb {
            "failback" => failback_cell(&cell),
            "switchover" => switchover_cell(&cell),
            "failover"
                if cell
                    .failpoint
                    .is_some_and(|f| f.starts_with("spool_apply.")) =>
            {
                spool_failover_cell(&cell)
            }
            "failover" => failover_cell(&cell),
            "spool" => spool_cell(&cell),
            "snapshot" => snapshot_cell(&cell),
            "ship" => ship_cell(&cell),
            "serve" => serve_cell(&cell),
            "prune" => prune_cell(&cell),
            "seed" => seed_cell(&cell),
            _ => rehearse_cell(&cell),
        });
        let outcome = match r {
            Ok(()) => match cell.failpoint {
                Some(fp) => {
                    reached.insert(fp);
                    "ok: stopped there, recovered, invariants hold".to_string()
                }
                None => "ok: ran through, invariants hold".to_string(),
            },
            Err(e) => {
                let m = panic_message(&*e);
                let first = m.lines().next().unwrap_or_default();
                let last = m
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default();
                if first == last {
                    format!("BAD: {first}")
                } else {
                    format!("BAD: {first} ... {}", last.trim())
                }
            }
        };
        rows.push((cell, outcome, t.elapsed().as_secs_f64()));
    }
    let mut out = String::from("CRASH MATRIX (btrfs)\n");
    out.push_str(&format!(
        "{:<10} {:<42} {:<28} {:>6}  outcome\n",
        "verb", "failpoint", "recovery", "secs"
    ));
    for (c, o, secs) in &rows {
        let mut rec = match (c.recovery, c.reboot) {
            (Recovery::Rerun, false) => "rerun".to_string(),
            (Recovery::Rerun, true) => "reboot, rerun".to_string(),
            (Recovery::PeerFailoverThenFailback, _) => "peer failover, failback".to_string(),
        };
        if c.one_common {
            rec.push_str(" (1 common set)");
        }
        out.push_str(&format!(
            "{:<10} {:<42} {:<28} {:>6.1}  {o}\n",
            c.verb,
            c.failpoint.unwrap_or("(none: runs through)"),
            rec,
            secs
        ));
    }
    let bad = rows.iter().filter(|r| r.1.starts_with("BAD")).count();
    out.push_str(&format!(
        "{} cells, {} bad, {} of {} failpoints reached, {:.1} s\n",
        rows.len(),
        bad,
        reached.len(),
        failpoint::ALL.len(),
        t0.elapsed().as_secs_f64()
    ));
    eprintln!("{out}");
    assert_eq!(bad, 0, "{out}");
    let missed: Vec<&str> = failpoint::ALL
        .iter()
        .map(|f| f.name)
        .filter(|n| !reached.contains(n) && !other_backend(n) && !three_sites(n) && !needs_rgw(n))
        .collect();
    assert!(
        only.is_some() || missed.is_empty(),
        "failpoints never reached: {missed:?}"
    );
}

/// The failpoints inside the ZFS and LVM backends: never reached on
/// btrfs; their cells are in the VM matrix (tests/vm/crash.rs).
fn other_backend(name: &str) -> bool {
    name.starts_with("zfs.") || name.starts_with("lvm.")
}

/// `archive` and `restore` need the RGW lab: their cells are in
/// tests/archive.rs (`archive_and_restore_resume_after_a_crash`).
fn needs_rgw(name: &str) -> bool {
    name.starts_with("archive.") || name.starts_with("restore.")
}

/// `follow` needs three sites: its cells are in tests/follow.rs.
fn three_sites(name: &str) -> bool {
    name.starts_with("follow.")
}

/// Every failpoint listed is in the source, and every `failpoint!` call
/// names a listed one (the macro checks that at compile time too).
#[test]
fn the_failpoint_list_and_the_source_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut used = BTreeSet::new();
    for rel in walk(&root) {
        if !rel.ends_with(".rs") || rel == "failpoint.rs" {
            continue;
        }
        let text = std::fs::read_to_string(root.join(&rel)).unwrap();
        for part in text.split("failpoint!(\"").skip(1) {
            used.insert(part.split('"').next().unwrap().to_string());
        }
    }
    let listed: BTreeSet<String> = failpoint::ALL.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(used, listed);
}

/// The ZFS and LVM backends' failpoints have their cells in the VM
/// matrix (tests/vm/crash.rs, run in the storage VM).
#[test]
fn the_vm_matrix_has_a_cell_for_each_zfs_and_lvm_failpoint() {
    let vm =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm/crash.rs"))
            .unwrap();
    let missing: Vec<&str> = failpoint::ALL
        .iter()
        .map(|f| f.name)
        .filter(|n| {
            other_backend(n)
                && !vm.contains(&format!(":{n}\""))
                && !vm.contains(&format!("\"{n}\""))
        })
        .collect();
    assert!(missing.is_empty(), "no VM crash cell for {missing:?}");
}

/// docs/crash-recovery.md is generated from the list
/// (`SNAPSITE_BLESS=1 cargo test --test crash_matrix` rewrites it).
#[test]
fn the_runbook_is_generated_from_the_failpoint_list() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/crash-recovery.md");
    let want = failpoint::runbook();
    if std::env::var("SNAPSITE_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&p, &want).unwrap();
    }
    let got = std::fs::read_to_string(&p).unwrap_or_default();
    assert_eq!(
        got,
        want,
        "{} is stale: run SNAPSITE_BLESS=1 cargo test --test crash_matrix",
        p.display()
    );
}

/// A serve session that died may leave its receive program running (it
/// reads what was left in its pipe and can finish a snapshot with no
/// receipt after the next session checked for leftovers: the ZFS cell
/// `serve.mid_receive@first` caught that in the VM). The next session
/// stops what is left of the dead session's process group before it lists
/// anything. Here the leftover is a `sleep` in a group whose leader exited,
/// recorded in B's `serve.json` as a dead session's group would be.
#[test]
fn the_next_serve_stops_what_a_dead_session_left_running() {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    let s = Sites::new(TRUE);
    one_shipped_two_pending(&s);
    // The leader prints its background child's pid and waits on stdin, so
    // that its start time can be read before it exits.
    let mut leader = std::process::Command::new("sh")
        .args(["-c", "sleep 300 & echo $!; read x"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(leader.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let left: i32 = line.trim().parse().unwrap();
    let lpid = leader.id() as i32;
    let stat = std::fs::read_to_string(format!("/proc/{lpid}/stat")).unwrap();
    let start_ticks: u64 = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    writeln!(leader.stdin.take().unwrap(), "go").unwrap();
    assert!(leader.wait().unwrap().success());
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|st| !matches!(st[st.rfind(')').unwrap() + 2..].chars().next(), Some('Z')))
    };
    assert!(
        alive(left),
        "the leftover sleep {left} runs before the ship"
    );
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let record = serde_json::json!({
        "pid": lpid,
        "pgid": lpid,
        "started_at": "2026-12-07T08:00:00Z",
        "group": {"pid": lpid, "pgid": lpid, "start_ticks": start_ticks, "boot_id": boot.trim()},
    });
    std::fs::write(s.state('b').join("serve.json"), record.to_string()).unwrap();
    let shipped = std::panic::catch_unwind(|| ok(s.a(), &["ship", "--json"]));
    let still = alive(left);
    if still {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &left.to_string()])
            .status();
    }
    shipped.unwrap();
    assert!(
        !still,
        "the dead session's leftover process {left} still runs after the next session"
    );
    let log = std::fs::read_to_string(s.state('b').join("serve.log")).unwrap();
    assert!(
        log.contains(&format!(
            "left by the serve session pid {lpid} that died (process group {lpid}: pids [{left}])"
        )),
        "{log}"
    );
    check_state_clean(&s);
    check_sets_shipped(&s);
}
