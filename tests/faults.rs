//! Integrity under a faulty network, on real btrfs: `ship` over the
//! `command` transport through a filter that records the bytes of both
//! directions, or flips one byte in one of them. One small session is
//! captured once and its control frames are located with the library's
//! Reader; then the bytes of every control frame (header and body, both
//! directions, sampled) are flipped one run at a time. Each run must end
//! (bounded: a hang is a failure), ship must fail — or, where the byte did
//! not matter, succeed with the same committed data — nothing wrongly
//! committed (a committed manifest always equals the primary's, member
//! times included), and the next clean ship must succeed.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use snapsite::wire::stream::{Frame, Reader};

/// Two volumes keep each run short; the protocol is the same for four.
const VOLS: [&str; 2] = ["mysql", "redolog"];
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// A pass-through filter: `filter.py DIR SPECFILE CAPFILE`. It forwards its
/// input as it arrives, appends it to CAPFILE when the spec says
/// `capture`, and XORs one byte when the spec is `flip DIR OFFSET MASK`
/// for its direction.
const FILTER: &str = r#"import os, select, sys
direction, spec_file, cap = sys.argv[1], sys.argv[2], sys.argv[3]
spec = open(spec_file).read().split()
flip = None
if spec and spec[0] == "flip" and spec[1] == direction:
    flip = (int(spec[2]), int(spec[3]))
capture = open(cap, "ab") if spec and spec[0] == "capture" else None
# Exit as soon as the reader of our output is gone (POLLERR on a pipe's
# write end), as ssh does when the remote command ends: a shell pipeline
# must not keep the primary waiting on a session that is over.
p = select.poll()
p.register(0, select.POLLIN)
p.register(1, 0)
pos = 0
while True:
    events = dict(p.poll())
    if events.get(1, 0) & (select.POLLERR | select.POLLHUP):
        sys.exit(0)
    if not events.get(0):
        continue
    c = os.read(0, 65536)
    if not c:
        break
    if flip and pos <= flip[0] < pos + len(c):
        c = bytearray(c)
        c[flip[0] - pos] ^= flip[1]
        c = bytes(c)
    if capture:
        capture.write(c)
        capture.flush()
    try:
        view = memoryview(c)
        while view:
            view = view[os.write(1, view):]
    except BrokenPipeError:
        sys.exit(0)
    pos += len(c)
"#;

struct Rig {
    lab: Lab,
    pri: PathBuf,
    spec: PathBuf,
    id: String,
}

impl Rig {
    fn new() -> Rig {
        let lab = Lab::with_roles(&VOLS, "1G", "[\"/bin/true\"]");
        let d = lab.dir.path();
        let filter = d.join("filter.py");
        std::fs::write(&filter, FILTER).unwrap();
        let spec = d.join("fault-spec");
        std::fs::write(&spec, "none").unwrap();
        let f = |dir: &str| {
            format!(
                "python3 {} {dir} {} {}",
                filter.display(),
                spec.display(),
                d.join(format!("cap-{dir}")).display()
            )
        };
        let script = format!(
            "#!/bin/bash\nset -o pipefail\n{} | {} --config {} serve --stdio --idle-timeout 10s 2>>{} | {}\n",
            f("up"),
            snapsite_exe(),
            lab.stb_cfg.display(),
            d.join("transport-stderr.log").display(),
            f("down")
        );
        let pri = lab.script_transport("faults-primary", &script, "");
        lab.fill(0, 16 * 1024);
        let out = lab.ok(&pri, &["snapshot", "--json"]);
        let set: serde_json::Value = serde_json::from_str(&out).unwrap();
        let id = set["id"].as_str().unwrap().to_string();
        Rig { lab, pri, spec, id }
    }

    /// `ship` with the given fault spec, bounded by RUN_LIMIT; `None` = hung.
    fn ship(&self, spec: &str) -> Option<std::process::Output> {
        use std::os::unix::process::CommandExt;
        std::fs::write(&self.spec, spec).unwrap();
        let mut child = Command::new(snapsite_exe())
            .arg("--config")
            .arg(&self.pri)
            .arg("ship")
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return Some(child.wait_with_output().unwrap());
            }
            if start.elapsed() > RUN_LIMIT {
                if std::env::var("FAULTS_ONLY").is_ok() {
                    eprintln!("{}", sh(&["ps", "-eo", "pid,pgid,ppid,stat,wchan:20,cmd"]));
                    eprintln!(
                        "{}",
                        std::fs::read_to_string(self.lab.dir.path().join("transport-stderr.log"))
                            .unwrap_or_default()
                    );
                }
                use nix::sys::signal::{Signal, kill};
                use nix::unistd::Pid;
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
                let _ = child.wait();
                self.stop_serve();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// After a killed run: stop the serve session it left (by the pid and
    /// process group serve records), so the next run gets the lock.
    fn stop_serve(&self) {
        let p = self.lab.dir.path().join("state-stb/serve.json");
        if let Ok(b) = std::fs::read(&p) {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            use nix::sys::signal::{Signal, kill};
            use nix::unistd::Pid;
            if let Some(g) = v["pgid"].as_i64().filter(|g| *g > 1) {
                let _ = kill(Pid::from_raw(-(g as i32)), Signal::SIGKILL);
            }
            if let Some(pid) = v["pid"].as_i64().filter(|p| *p > 1) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// What must be true whenever the standby holds a commit record: it is
    /// the primary's manifest (member times included) and the data is the
    /// primary's.
    fn committed_is_right(&self) -> Result<bool, String> {
        let Some(m) = self.lab.standby_manifest(&self.id) else {
            return Ok(false);
        };
        let p = self.lab.primary_manifest(&self.id);
        for k in ["id", "kind", "site", "safety_margin_ms", "seq"] {
            if m[k] != p[k] {
                return Err(format!("{k}: standby {} primary {}", m[k], p[k]));
            }
        }
        let (ms, ps) = (m["members"].as_array(), p["members"].as_array());
        if ms.map(Vec::len) != ps.map(Vec::len) {
            return Err("members differ".into());
        }
        for (a, b) in ms.unwrap().iter().zip(ps.unwrap()) {
            for k in [
                "role",
                "backend",
                "source",
                "snapshot",
                "storage_id",
                "before",
                "after",
            ] {
                if a[k] != b[k] {
                    return Err(format!("member {} {k}: {} vs {}", b["role"], a[k], b[k]));
                }
            }
        }
        for r in VOLS {
            let got = self.lab.standby_snap(r, &self.id);
            if !got.exists()
                || tree_digest(&got) != tree_digest(&self.lab.primary_snap(r, &self.id))
            {
                return Err(format!("{r}: data differs from the primary's"));
            }
        }
        Ok(true)
    }

    /// Back to a standby that has never seen the set.
    fn reset_standby(&self) {
        for r in VOLS {
            let dir = self.lab.standby_recv(r);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                for sub in [p.join(e.file_name()), p.clone()] {
                    if snapsite::backend::btrfs::is_subvolume(&sub) {
                        sh(&["btrfs", "-q", "subvolume", "delete", sub.to_str().unwrap()]);
                    }
                }
                if p.is_dir() {
                    let _ = std::fs::remove_dir_all(&p);
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
        let _ = std::fs::remove_dir_all(self.lab.dir.path().join("state-stb"));
        // and what the primary recorded of it: with a record, the hello
        // names the set the welcome may start from (`since`), and the
        // captured session started without one
        for f in ["standby.json", "standby.head.json"] {
            let _ = std::fs::remove_file(self.lab.dir.path().join("state-pri").join(f));
        }
    }
}

/// Control frames of a captured direction: (start, end, what).
/// A control frame's byte range in a capture, and its message kind.
type MsgSpan = (usize, usize, String);

fn control_frames(bytes: &[u8]) -> (Vec<MsgSpan>, Vec<(usize, usize)>) {
    let mut r = Reader::new(bytes);
    r.magic().expect("captured stream starts with the magic");
    let mut msgs = Vec::new();
    let mut data = Vec::new();
    loop {
        let start = r.bytes_in as usize;
        match r.next_frame().expect("the clean capture parses") {
            None => break,
            Some(Frame::Msg(m)) => {
                let what = format!("{m:?}");
                let what = what.split([' ', '{']).next().unwrap().to_string();
                msgs.push((start, r.bytes_in as usize, what));
            }
            Some(Frame::Data(_)) => data.push((start, r.bytes_in as usize)),
        }
    }
    assert_eq!(r.bytes_in as usize, bytes.len(), "whole capture parsed");
    (msgs, data)
}

struct Capture {
    up: Vec<u8>,
    up_msgs: Vec<MsgSpan>,
    up_data: Vec<(usize, usize)>,
    down_msgs: Vec<MsgSpan>,
}

/// Ship once through the recording filters; locate the frames.
fn capture(rig: &Rig) -> Capture {
    let d = rig.lab.dir.path().to_path_buf();
    // The clean session, captured in both directions.
    let out = rig.ship("capture").expect("clean ship ends");
    common::output::success("ship", &out);
    assert_eq!(rig.committed_is_right(), Ok(true));
    let up = std::fs::read(d.join("cap-up")).unwrap();
    let down = std::fs::read(d.join("cap-down")).unwrap();
    let (up_msgs, up_data) = control_frames(&up);
    let (down_msgs, _) = control_frames(&down);
    eprintln!(
        "captured: up {} bytes, {} control frames {:?}, {} data frames; down {} bytes, {} control frames {:?}",
        up.len(),
        up_msgs.len(),
        up_msgs.iter().map(|m| &m.2).collect::<Vec<_>>(),
        up_data.len(),
        down.len(),
        down_msgs.len(),
        down_msgs.iter().map(|m| &m.2).collect::<Vec<_>>()
    );
    assert!(up_msgs.iter().any(|m| m.2 == "Commit"));
    assert!(down_msgs.iter().any(|m| m.2 == "Committed"));

    // The offsets are only right if a session from the same state sends
    // the same bytes: capture a second time and compare. (The standby's
    // acks carry a receive time whose length may vary by a digit.)
    rig.reset_standby();
    std::fs::remove_file(d.join("cap-up")).unwrap();
    std::fs::remove_file(d.join("cap-down")).unwrap();
    let out = rig.ship("capture").expect("clean ship ends");
    assert!(out.status.success());
    assert!(
        std::fs::read(d.join("cap-up")).unwrap() == up,
        "the primary sends the same bytes each time"
    );
    let (again, _) = control_frames(&std::fs::read(d.join("cap-down")).unwrap());
    assert_eq!(again.len(), down_msgs.len());
    for (a, b) in again.iter().zip(&down_msgs) {
        assert!(a.2 == b.2 && a.0.abs_diff(b.0) <= 8, "{a:?} vs {b:?}");
    }
    rig.reset_standby();
    Capture {
        up,
        up_msgs,
        up_data,
        down_msgs,
    }
}

type Run = (String, &'static str, usize, u8);

/// A rig with its clean session captured, and when the test started.
fn captured_rig() -> (Instant, Rig, Capture) {
    let started = Instant::now();
    let rig = Rig::new();
    let cap = capture(&rig);
    (started, rig, cap)
}

/// [`run_all`], and none may fail.
fn assert_all_hold(rig: &Rig, runs: &[Run], started: Instant) {
    let failures = run_all(rig, runs, started);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every run from a standby that never saw the set; each one bounded, its
/// outcome checked, then a clean ship that must complete the set.
fn run_all(rig: &Rig, runs: &[Run], started: Instant) -> Vec<String> {
    let mut runs = runs;
    let mut failures = Vec::new();
    let mut hangs = 0;
    let mut succeeded = 0;
    // FAULTS_ONLY=<text>: only the runs whose name contains it (debugging).
    let only: Vec<Run>;
    if let Ok(w) = std::env::var("FAULTS_ONLY") {
        only = runs.iter().filter(|r| r.0.contains(&w)).cloned().collect();
        runs = &only;
    }
    eprintln!("{} runs", runs.len());
    for (what, dir, off, mask) in runs {
        rig.reset_standby();
        let t = Instant::now();
        let res = rig.ship(&format!("flip {dir} {off} {mask}"));
        let took = t.elapsed();
        let Some(out) = res else {
            hangs += 1;
            failures.push(format!("{what} (byte {off}): HANG, killed after {took:?}"));
            if hangs >= 3 {
                failures.push("stopped after 3 hangs".into());
                break;
            }
            continue;
        };
        let ok = out.status.success();
        match rig.committed_is_right() {
            Err(e) => failures.push(format!("{what} (byte {off}): WRONG COMMIT: {e}")),
            Ok(committed) => {
                if ok && !committed {
                    failures.push(format!(
                        "{what} (byte {off}): ship succeeded, nothing committed"
                    ));
                }
            }
        }
        if ok {
            succeeded += 1;
        }
        let next = rig.ship("none");
        match next {
            Some(o) if o.status.success() && rig.committed_is_right() == Ok(true) => {}
            Some(o) => failures.push(format!(
                "{what} (byte {off}): after the next clean ship (exit {}): committed {:?}; {}",
                o.status,
                rig.committed_is_right(),
                String::from_utf8_lossy(&o.stderr)
            )),
            None => failures.push(format!("{what} (byte {off}): the next clean ship hung")),
        }
        eprintln!(
            "{what:<40} byte {off:>6} ^{mask:#04x}: ship {} in {:.1}s",
            if ok { "ok" } else { "failed" },
            took.as_secs_f64()
        );
    }
    eprintln!(
        "{} runs ({succeeded} succeeded with the right data) in {:?}",
        runs.len(),
        started.elapsed()
    );
    failures
}

#[test]
fn flipped_control_bytes_never_commit_wrong_data_nor_hang() {
    require_real!();
    let (started, rig, cap) = captured_rig();
    // Which bytes to flip (bounded: about 60 sessions). In every control
    // frame: its tag, one byte of its length and one of its header check
    // (rotating over the frames, so that each header offset is flipped in
    // some frame of each direction), a byte in the middle of its body and
    // its last byte (the body check). In the Commit frame, which carries
    // the manifest: every byte of its 9-byte header. Then a digit of a
    // member time in the manifest.
    let mut runs: Vec<Run> = Vec::new();
    for (dir, msgs) in [("up", &cap.up_msgs), ("down", &cap.down_msgs)] {
        for (i, (s, e, what)) in msgs.iter().enumerate() {
            let len = e - s;
            let mut offs: Vec<usize> = if what == "Commit" {
                (0..9).collect()
            } else {
                vec![0, 1 + i % 4, 5 + (i + 1) % 4]
            };
            offs.extend([9 + len.saturating_sub(9 + 16) / 2, len - 1]);
            offs.sort();
            offs.dedup();
            for o in offs.into_iter().filter(|o| *o < len) {
                runs.push((format!("{dir} {what}#{i} +{o}"), dir, s + o, 0x04));
            }
        }
    }
    let (cs, ce, _) = cap.up_msgs.iter().find(|m| m.2 == "Commit").unwrap();
    let body = &cap.up[*cs..*ce];
    let needle = b"\"before\":\"";
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the manifest carries member times");
    // The last digit of the year: a member time a year off.
    runs.push((
        "up Commit member time".into(),
        "up",
        cs + at + needle.len() + 3,
        0x01,
    ));
    assert_all_hold(&rig, &runs, started);
}

/// A corrupted length field in the End frame of each snapshot and in the
/// last data frame before it (protocol 1 waited for bytes that never came,
/// on both sides): the session ends at once, nothing is committed.
#[test]
fn corrupted_length_fields_never_hang() {
    require_real!();
    let (started, rig, cap) = captured_rig();
    let mut runs: Vec<Run> = Vec::new();
    for (s, _, _) in cap.up_msgs.iter().filter(|m| m.2 == "End") {
        runs.push(("up End length".into(), "up", s + 4, 0x10));
        runs.push(("up End length high".into(), "up", s + 3, 0x01));
        if let Some((ds, _)) = cap.up_data.iter().rev().find(|(ds, _)| ds < s) {
            runs.push(("up last data frame length".into(), "up", ds + 4, 0x10));
            runs.push(("up last data frame length high".into(), "up", ds + 3, 0x01));
        }
    }
    for (s, _, what) in cap.down_msgs.iter().filter(|m| m.2 == "Ack") {
        runs.push((format!("down {what} length"), "down", s + 4, 0x10));
    }
    assert_all_hold(&rig, &runs, started);
}
