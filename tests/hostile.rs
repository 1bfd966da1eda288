//! The hostile primary on real btrfs: an intruder holding the primary's ssh
//! key talks to `snapsite serve --stdio` directly (through the library's
//! Writer/Reader) and sends what `ship` never would: send streams that write
//! through symlinks and `../`, that name their subvolume `.receiving-<id of a
//! committed set>`, that carry a second stream, that name another subvolume;
//! bogus manifests; a flood of commits; a session that goes silent. After all
//! of it the standby must hold exactly what the real primary committed,
//! byte-identical, nothing may have been written outside its snapshot dirs,
//! and replication and failover must go on.
//!
//! The btrfs send-stream writer these tests use (tests/common/btrfs_stream.rs)
//! is itself proven first against real `btrfs send` and `btrfs receive`.

mod common;

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::btrfs_stream::{self, StreamWriter, cmd, parse, uuid_from_seed, uuid_string};
use common::*;
use jiff::{SignedDuration, Timestamp};
use snapsite::base::model::{Manifest, SetKind, new_set_id};
use snapsite::wire::stream::{Frame, MAX_DATA_FRAME, Msg, PROTOCOL_VERSION, Reader, Writer};

// ---------------------------------------------------------------------------
// The stream writer against the real btrfs tools
// ---------------------------------------------------------------------------

/// Capture a real `btrfs send`, check every command's crc with our crc32c,
/// and re-encode the parsed commands with our writer: byte-identical.
#[test]
fn stream_writer_encodes_like_btrfs_send() {
    require_real!();
    let fs = BtrfsFs::scratch("w");
    let src = fs.subvolume("src");
    std::fs::create_dir(src.join("d")).unwrap();
    write_file(&src.join("d/f"), &random_bytes(1, 100_000));
    write_file(&src.join("small"), b"hello\n");
    std::os::unix::fs::symlink("d/f", src.join("sym")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("hard")).unwrap();
    let snap = fs.path("snap1");
    snapshot_readonly(&src, &snap);
    let real = btrfs_send(&snap, &["--proto", "1"]);
    let cmds = parse(&real).expect("our crc32c and parser accept a real btrfs send stream");
    let kinds: Vec<u16> = cmds.iter().map(|c| c.cmd).collect();
    assert_eq!(kinds[0], cmd::SUBVOL);
    assert_eq!(*kinds.last().unwrap(), cmd::END);
    for k in [cmd::MKDIR, cmd::MKFILE, cmd::WRITE, cmd::SYMLINK, cmd::LINK] {
        assert!(kinds.contains(&k), "command {k} in {kinds:?}");
    }
    assert_eq!(
        uuid_string(
            cmds[0]
                .attr(btrfs_stream::attr::UUID)
                .unwrap()
                .try_into()
                .unwrap()
        ),
        show_field(&subvolume_show(&snap), "UUID"),
        "SUBVOL carries the snapshot's uuid"
    );
    let written: usize = cmds
        .iter()
        .filter(|c| c.cmd == cmd::WRITE)
        .map(|c| c.attr(btrfs_stream::attr::DATA).unwrap().len())
        .sum();
    assert_eq!(written, 100_000 + 6, "file data in WRITE commands");
    assert_eq!(
        btrfs_stream::reencode(&cmds),
        real,
        "our encoding of the same commands equals btrfs send's bytes"
    );
    // A flipped byte is caught by the crc check.
    let mut bad = real.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x20;
    assert!(parse(&bad).is_err());
}

/// A stream written by hand is received by real `btrfs receive`: files,
/// directories, symlinks, hard links, renames, unlinks, truncation, modes,
/// owners, times, and an incremental stream (SNAPSHOT) on top of it.
#[test]
fn stream_writer_is_received_by_btrfs_receive() {
    require_real!();
    let fs = BtrfsFs::scratch("r");
    let recv = fs.path("recv");
    std::fs::create_dir(&recv).unwrap();
    let u1 = uuid_from_seed(1);
    let big = random_bytes(7, 200_000);
    let mut w = StreamWriter::new();
    w.subvol("s1", u1, 10)
        .mkdir("o257")
        .rename("o257", "d")
        .file("d/big", &big)
        .file("gone", b"x")
        .unlink("gone")
        .file("short", b"0123456789")
        .truncate("short", 4)
        .chmod("short", 0o600)
        .chown("short", 1234, 5678)
        .utimes(
            "short",
            (1_000_000, 5),
            (1_500_000_000, 123),
            (1_600_000_000, 0),
        )
        .symlink("ln", "d/big")
        .link("d/big2", "d/big")
        .end();
    assert!(btrfs_receive(&recv, w.bytes()));
    let s1 = recv.join("s1");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::read(s1.join("d/big")).unwrap(), big);
    assert_eq!(std::fs::read(s1.join("short")).unwrap(), b"0123");
    assert!(!s1.join("gone").exists());
    assert!(!s1.join("o257").exists());
    let m = std::fs::metadata(s1.join("short")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o600);
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 123));
    assert_eq!(
        std::fs::read_link(s1.join("ln")).unwrap(),
        PathBuf::from("d/big")
    );
    assert_eq!(std::fs::metadata(s1.join("d/big2")).unwrap().nlink(), 2);
    let show = subvolume_show(&s1);
    assert_eq!(show_field(&show, "Received UUID"), uuid_string(&u1));
    assert!(show_field(&show, "Flags").contains("readonly"), "{show}");

    // Incremental: a snapshot of s1 (found by its Received UUID) plus changes.
    let u2 = uuid_from_seed(2);
    let mut w = StreamWriter::new();
    w.snapshot("s2", u2, 11, u1, 10)
        .write("d/big", 1000, b"CHANGED")
        .file("new", b"new file")
        .unlink("ln")
        .end();
    assert!(btrfs_receive(&recv, w.bytes()));
    let s2 = recv.join("s2");
    let mut want = big.clone();
    want[1000..1007].copy_from_slice(b"CHANGED");
    assert_eq!(std::fs::read(s2.join("d/big")).unwrap(), want);
    assert_eq!(std::fs::read(s2.join("new")).unwrap(), b"new file");
    assert!(!s2.join("ln").exists());
    assert_eq!(
        std::fs::read(s1.join("d/big")).unwrap(),
        big,
        "s1 untouched"
    );
    let show = subvolume_show(&s2);
    assert_eq!(show_field(&show, "Received UUID"), uuid_string(&u2));
    assert_eq!(
        show_field(&show, "Parent UUID"),
        show_field(&subvolume_show(&s1), "UUID")
    );
}

// ---------------------------------------------------------------------------
// A hostile session, spoken through the library
// ---------------------------------------------------------------------------

/// `snapsite serve --stdio` spawned directly, bounded by a watchdog that
/// kills it (by PID) after `limit`.
struct Session {
    child: Child,
    w: Option<Writer<BufWriter<ChildStdin>>>,
    r: Reader<BufReader<ChildStdout>>,
    watchdog: Option<mpsc::Sender<()>>,
}

/// SIGKILL a serve we spawned: its process group (serve leads one, with
/// its `btrfs receive`) and the process itself, by id.
fn kill_serve(pid: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(-(pid as i32)), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

#[derive(Debug)]
enum Reply {
    Msg(Msg),
    /// The session ended or broke: the error as the library reported it.
    Gone(String),
}

impl Reply {
    fn is_ack(&self) -> bool {
        matches!(self, Reply::Msg(Msg::Ack { .. }))
    }
    fn is_committed(&self) -> bool {
        matches!(self, Reply::Msg(Msg::Committed { .. }))
    }
}

impl Session {
    fn spawn(lab: &Lab, extra: &[&str], limit: Duration) -> Session {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab.dir.path().join("serve-stderr.log"))
            .unwrap();
        let mut child = Command::new(snapsite_exe())
            .arg("--config")
            .arg(&lab.stb_cfg)
            .args(["serve", "--stdio"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let pid = child.id();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                kill_serve(pid);
            }
        });
        let w = Writer::new(BufWriter::new(child.stdin.take().unwrap()));
        let r = Reader::new(BufReader::new(child.stdout.take().unwrap()));
        Session {
            child,
            w: Some(w),
            r,
            watchdog: Some(tx),
        }
    }

    /// Spawn and shake hands as the primary would (site name chosen by the intruder).
    fn open(lab: &Lab, site: &str, extra: &[&str]) -> Result<Session, String> {
        let mut s = Session::spawn(lab, extra, Duration::from_secs(90));
        let w = s.w.as_mut().unwrap();
        let hello = w.magic().and_then(|_| {
            w.msg(&Msg::Hello {
                protocol: PROTOCOL_VERSION,
                site: site.into(),
                version: "6.6.6".into(),
                since: None,
            })
        });
        let welcome = hello.and_then(|_| s.r.magic()).and_then(|_| s.r.msg());
        match welcome {
            Ok(Msg::Welcome { .. }) => Ok(s),
            Ok(other) => {
                let st = s.close();
                Err(format!("expected welcome, got {other:?} (serve {st})"))
            }
            Err(e) => {
                let st = s.close();
                Err(format!("handshake failed: {e} (serve {st})"))
            }
        }
    }

    fn reply(&mut self) -> Reply {
        match self.r.next_frame() {
            Ok(Some(Frame::Msg(m))) => Reply::Msg(m),
            Ok(Some(Frame::Data(_))) => Reply::Gone("unexpected data frame".into()),
            Ok(None) => Reply::Gone("serve closed the session".into()),
            Err(e) => Reply::Gone(e.to_string()),
        }
    }

    fn begin(
        &mut self,
        set_id: &str,
        role: &str,
        snapshot: &str,
        storage_id: Option<&str>,
    ) -> Result<(), String> {
        self.w
            .as_mut()
            .unwrap()
            .msg(&Msg::Begin {
                set_id: set_id.into(),
                role: role.into(),
                snapshot: snapshot.into(),
                base: None,
                storage_id: storage_id.map(str::to_string),
                resume: false,
            })
            .map_err(|e| e.to_string())
    }

    fn data(&mut self, bytes: &[u8]) -> Result<(), String> {
        let w = self.w.as_mut().unwrap();
        for chunk in bytes.chunks(MAX_DATA_FRAME) {
            w.data(chunk).map_err(|e| e.to_string())?;
        }
        w.flush().map_err(|e| e.to_string())
    }

    /// One snapshot: Begin, the bytes in data frames, End with a correct
    /// checksum (the intruder computes it like any primary), then the reply.
    fn send(&mut self, set_id: &str, role: &str, storage_id: Option<&str>, bytes: &[u8]) -> Reply {
        let r = self.begin(set_id, role, set_id, storage_id).and_then(|_| {
            self.data(bytes)?;
            self.w
                .as_mut()
                .unwrap()
                .msg(&Msg::End {
                    bytes: bytes.len() as u64,
                    blake3: blake3::hash(bytes).to_hex().to_string(),
                })
                .map_err(|e| e.to_string())
        });
        match r {
            Ok(()) => self.reply(),
            Err(e) => Reply::Gone(e),
        }
    }

    /// Send a snapshot that must be refused (`what` names it in `f`).
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        f: &mut Findings,
        case: &str,
        what: &str,
        set: &str,
        role: &str,
        storage_id: Option<&str>,
        stream: &[u8],
    ) {
        let rep = self.send(set, role, storage_id, stream);
        f.check(case, !rep.is_ack(), format!("{what} refused: {rep:?}"));
    }

    fn commit(&mut self, manifest: Manifest) -> Reply {
        match self.w.as_mut().unwrap().msg(&Msg::Commit { manifest }) {
            Ok(()) => self.reply(),
            Err(e) => Reply::Gone(e.to_string()),
        }
    }

    /// Bye, close our end, wait for serve (bounded by the watchdog).
    fn close(mut self) -> std::process::ExitStatus {
        if let Some(mut w) = self.w.take() {
            let _ = w.msg(&Msg::Bye);
        }
        let st = self.child.wait().unwrap();
        if let Some(tx) = self.watchdog.take() {
            let _ = tx.send(());
        }
        st
    }

    /// Wait up to `limit` for serve to exit on its own (our end stays open).
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn kill(mut self) {
        if self.child.try_wait().unwrap().is_none() {
            kill_serve(self.child.id());
        }
        let _ = self.child.wait();
        if let Some(tx) = self.watchdog.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// The drill
// ---------------------------------------------------------------------------

/// Soft assertions: every hostile case is tried and reported, then the test
/// fails listing all that went wrong.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, case: &str, ok: bool, what: impl std::fmt::Display) {
        if ok {
            eprintln!("ok   [{case}] {what}");
        } else {
            eprintln!("FAIL [{case}] {what}");
            self.0.push(format!("[{case}] {what}"));
        }
    }

    /// `stream`, as snapshot `set` of `role` with uuid `u`, alone in a
    /// session of its own: it must be refused (`what` names it). Whether
    /// the session ran (a failed handshake is a finding).
    #[allow(clippy::too_many_arguments)]
    fn refused(
        &mut self,
        lab: &Lab,
        case: &str,
        what: &str,
        set: &str,
        role: &str,
        u: [u8; 16],
        stream: &[u8],
    ) -> bool {
        match Session::open(lab, "primary", &[]) {
            Ok(mut s) => {
                s.refuse(self, case, what, set, role, Some(&uuid_string(&u)), stream);
                s.close();
                true
            }
            Err(e) => {
                self.check(case, false, e);
                false
            }
        }
    }

    /// Nothing whose name contains `needle` anywhere in the lab (`what`
    /// says so in the report).
    fn nothing_named(&mut self, lab: &Lab, case: &str, needle: &str, what: &str) {
        let found = find_named(lab.dir.path(), needle);
        self.check(case, found.is_empty(), format!("{what}: {found:?}"));
    }
}

/// Received snapshot of `id` on the standby: `<snapshot_dir>/<id>/<id>`
/// (confined receive) or `<snapshot_dir>/<id>` (before it).
/// A defect of a manifest: edits its JSON.
type Defect = Box<dyn Fn(&mut serde_json::Value)>;

fn defect(f: impl Fn(&mut serde_json::Value) + 'static) -> Defect {
    Box::new(f)
}

/// The ransomware drill's bogus redolog sets (case f), in order: one
/// defect each, `now` the case's start.
fn redo_defects(now: Timestamp) -> Vec<(&'static str, Defect)> {
    use serde_json::json;
    let t = move |ms: i64| json!((now + SignedDuration::from_millis(ms)).to_string());
    vec![
        (
            "redolog set margin i64::MAX",
            defect(|v| v["safety_margin_ms"] = json!(i64::MAX)),
        ),
        (
            "redolog set margin i64::MIN",
            defect(|v| v["safety_margin_ms"] = json!(i64::MIN)),
        ),
        (
            "member times in year 9999",
            defect(|v| {
                v["members"][0]["before"] = json!("9999-06-01T00:00:00Z");
                v["members"][0]["after"] = json!("9999-06-01T00:00:01Z");
            }),
        ),
        (
            "member time in year 1",
            defect(|v| v["members"][0]["before"] = json!("0001-01-01T00:00:00Z")),
        ),
        (
            "member before after its after",
            defect(move |v| {
                v["members"][0]["before"] = t(60_000);
                v["members"][0]["after"] = t(0);
            }),
        ),
        (
            "unknown role",
            defect(|v| v["members"][0]["role"] = json!("evil")),
        ),
        (
            "unknown role besides redolog",
            defect(|v| {
                let mut m = v["members"][0].clone();
                m["role"] = json!("evil");
                v["members"].as_array_mut().unwrap().push(m);
            }),
        ),
        (
            "redolog member twice",
            defect(|v| {
                let m = v["members"][0].clone();
                v["members"].as_array_mut().unwrap().push(m);
            }),
        ),
        (
            "member storage id is not the announced one",
            defect(|v| {
                v["members"][0]["storage_id"] = json!(uuid_string(&uuid_from_seed(0xf9)));
            }),
        ),
        (
            "id says redolog, kind full",
            defect(|v| v["kind"] = json!("full")),
        ),
    ]
}

fn received(lab: &Lab, role: &str, id: &str) -> PathBuf {
    let nested = lab.standby_recv(role).join(id).join(id);
    if nested.exists() {
        nested
    } else {
        lab.standby_recv(role).join(id)
    }
}

/// Every path under `root` (not following symlinks) whose name contains `needle`.
fn find_named(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A manifest in whatever shape this build's `Manifest` has: a legitimate
/// one from the primary, edited by the intruder.
fn forge(template: &serde_json::Value, edit: impl FnOnce(&mut serde_json::Value)) -> Manifest {
    let mut v = template.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("committed_at");
        if o.contains_key("seq") {
            o.insert("seq".into(), serde_json::json!(1000));
        }
    }
    edit(&mut v);
    serde_json::from_value(v).expect("forged manifest deserializes")
}

/// Hostile set ids: valid-looking, unique, around now.
struct Ids(i64);
impl Ids {
    fn next(&mut self, kind: SetKind) -> String {
        self.0 += 1;
        new_set_id(Timestamp::now() + SignedDuration::from_millis(self.0), kind)
    }
}

/// A small, well-formed stream of a subvolume named `name` with one file.
fn plain_stream(name: &str, uuid: [u8; 16], content: &[u8]) -> Vec<u8> {
    let mut w = StreamWriter::new();
    w.subvol(name, uuid, 100).file("log", content).end();
    w.into_bytes()
}

/// A reply, without the long parts.
fn short(r: &Reply) -> String {
    let s = format!("{r:?}");
    if s.chars().count() > 200 {
        format!("{}...", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn not_panicked(out: &std::process::Output) -> bool {
    out.status.code().is_some_and(|c| c != 101)
        && !String::from_utf8_lossy(&out.stderr).contains("panicked")
}

/// Where a case left the standby wedged (a `.receiving-` subvolume that
/// serve cannot remove as a marker), undo it by hand so the later cases are
/// still tried on their own; the case itself has already been reported.
fn repair_fake_markers(lab: &Lab) {
    for p in find_named(&lab.stb.mnt, ".receiving-") {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            eprintln!("repair: deleting {}", p.display());
            sh(&["btrfs", "-q", "subvolume", "delete", p.to_str().unwrap()]);
        }
    }
}

#[test]
fn ransomware_drill() {
    require_real!();
    let started = Instant::now();
    let lab = Lab::with_replay_recorder();
    let mut f = Findings::default();
    let outside = lab.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let outside_rel = outside
        .to_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();

    // --- The legitimate history: a full set and a redolog set, shipped. ---
    lab.fill(0, 64 * 1024);
    lab.append_redolog("op 1");
    let full = lab.snapshot(false);
    lab.append_redolog("op 2");
    let redo = lab.snapshot(true);
    let full_id = full["id"].as_str().unwrap().to_string();
    let redo_id = redo["id"].as_str().unwrap().to_string();
    let shipped = lab.ship(&lab.pri_cfg);
    assert_eq!(shipped["committed"].as_array().unwrap().len(), 2);
    let legit: Vec<(String, &str)> = ROLES
        .iter()
        .map(|r| (full_id.clone(), *r))
        .chain([(redo_id.clone(), "redolog")])
        .collect();
    let digests: Vec<_> = legit
        .iter()
        .map(|(id, r)| tree_digest(&lab.primary_snap(r, id)))
        .collect();
    let committed_before = lab.standby_manifests();
    assert_eq!(
        committed_before,
        [format!("{full_id}.json"), format!("{redo_id}.json")]
    );
    let full_tpl = lab.primary_manifest(&full_id);
    let redo_tpl = lab.primary_manifest(&redo_id);
    let mut ids = Ids(0);
    let mut refused_sessions = 0usize;
    // Snapshots and sets that must be refused; each is named in serve.log.
    let mut refused_ids: Vec<String> = Vec::new();

    // --- (a) symlinks out of the subvolume, then writes through them ---
    {
        let case = "a symlink escape";
        let h = ids.next(SetKind::Full);
        let u = uuid_from_seed(0xa);
        let mut w = StreamWriter::new();
        w.subvol(&h, u, 100)
            .symlink("esc", outside.to_str().unwrap())
            .mkfile("esc/pwned-a")
            .write("esc/pwned-a", 0, b"written through a symlink\n")
            .symlink("root", "/")
            .mkfile(&format!("root/{outside_rel}/pwned-a-root"))
            .write(&format!("root/{outside_rel}/pwned-a-root"), 0, b"via /\n")
            .end();
        if f.refused(&lab, case, "stream", &h, "blob", u, w.bytes()) {
            refused_ids.push(h.clone());
            refused_sessions += 1;
        }
        f.nothing_named(&lab, case, "pwned-a", "no file written");
        f.check(case, !received(&lab, "blob", &h).exists(), "nothing kept");
    }

    // --- (b) writes through ../ paths ---
    {
        let case = "b dotdot";
        let h = ids.next(SetKind::Full);
        let u = uuid_from_seed(0xb);
        let deep = format!("{}{outside_rel}/pwned-b", "../".repeat(16));
        let mut w = StreamWriter::new();
        w.subvol(&h, u, 100)
            .file("innocent", b"x")
            .mkfile(&deep)
            .write(&deep, 0, b"written through ../\n")
            .mkfile("../pwned-b-sibling")
            .mkfile("../../pwned-b-up2")
            .end();
        if f.refused(&lab, case, "stream", &h, "mysql", u, w.bytes()) {
            refused_ids.push(h.clone());
            refused_sessions += 1;
        }
        f.nothing_named(&lab, case, "pwned-b", "no file written");
        // A subvolume name with ../ in the stream itself.
        let h = ids.next(SetKind::Full);
        let u = uuid_from_seed(0xb2);
        let mut w = StreamWriter::new();
        w.subvol("../../pwned-b-subvol", u, 100)
            .file("x", b"x")
            .end();
        if f.refused(&lab, case, "../ subvolume", &h, "mysql", u, w.bytes()) {
            refused_ids.push(h.clone());
            refused_sessions += 1;
        }
        f.check(
            case,
            find_named(lab.dir.path(), "pwned-b-subvol").is_empty(),
            "no subvolume created outside",
        );
    }

    // --- (c) a subvolume named .receiving-<committed id> ---
    {
        let case = "c fake marker";
        let h = ids.next(SetKind::Full);
        let u = uuid_from_seed(0xc);
        let stream = plain_stream(&format!(".receiving-{full_id}"), u, b"x");
        match Session::open(&lab, "primary", &[]) {
            Ok(mut s) => {
                let uuid = uuid_string(&u);
                s.refuse(&mut f, case, "stream", &h, "blob", Some(&uuid), &stream);
                refused_ids.push(h.clone());
                // The same, announced as the committed snapshot itself.
                let what = "re-sending a committed snapshot";
                s.refuse(&mut f, case, what, &full_id, "index", Some(&uuid), &stream);
                s.close();
                refused_sessions += 1;
            }
            Err(e) => f.check(case, false, e),
        }
        // The next session (its cleanup of interrupted receives) must not
        // take the fake marker for a real one.
        match Session::open(&lab, "primary", &[]) {
            Ok(s) => {
                s.close();
            }
            Err(e) => f.check(case, false, format!("next session: {e}")),
        }
        for r in ["blob", "index"] {
            f.check(
                case,
                received(&lab, r, &full_id).exists(),
                format!("committed {r} {full_id} still there"),
            );
        }
        let fake = find_named(&lab.stb.mnt, ".receiving-");
        f.check(
            case,
            fake.is_empty(),
            format!("no marker-named subvolume left: {fake:?}"),
        );
        repair_fake_markers(&lab);
    }

    // --- (d) a valid stream with a second stream appended ---
    {
        let case = "d appended stream";
        let h = ids.next(SetKind::Full);
        let u = uuid_from_seed(0xd);
        let first = plain_stream(&h, u, b"legit looking\n");
        let mut w = StreamWriter::appended_to(first);
        w.subvol(&format!(".receiving-{redo_id}"), uuid_from_seed(0xd2), 100)
            .file("x", b"x")
            .end();
        let mut w2 = StreamWriter::appended_to(w.into_bytes());
        let deep = format!("{}{outside_rel}/pwned-d", "../".repeat(16));
        w2.subvol("pwned-d-subvol", uuid_from_seed(0xd3), 100)
            .mkfile(&deep)
            .end();
        match Session::open(&lab, "primary", &[]) {
            Ok(mut s) => {
                let rep = s.send(&h, "redolog", Some(&uuid_string(&u)), w2.bytes());
                // Acking the first stream is tolerable (with `receive -e` the
                // rest is never read); what the rest says must not happen.
                eprintln!("[{case}] reply: {}", short(&rep));
                if rep.is_ack() {
                    let p = received(&lab, "redolog", &h);
                    let files: Vec<String> = tree_digest(&p).into_keys().collect();
                    f.check(
                        case,
                        show_field(&subvolume_show(&p), "Received UUID") == uuid_string(&u)
                            && files == ["log"],
                        format!("what was acked is the first stream only: {files:?}"),
                    );
                }
                s.close();
                refused_sessions += 1;
            }
            Err(e) => f.check(case, false, e),
        }
        if let Ok(s) = Session::open(&lab, "primary", &[]) {
            s.close();
        }
        f.nothing_named(&lab, case, "pwned-d", "second stream had no effect");
        f.check(
            case,
            find_named(&lab.stb.mnt, &format!(".receiving-{redo_id}")).is_empty(),
            "no fake marker subvolume",
        );
        f.check(
            case,
            received(&lab, "redolog", &redo_id).exists(),
            "committed redolog snapshot still there",
        );
        repair_fake_markers(&lab);
    }

    // --- (e) the stream's subvolume is not the announced snapshot ---
    {
        let case = "e other name / uuid";
        let h = ids.next(SetKind::Full);
        let other = ids.next(SetKind::Full);
        let u = uuid_from_seed(0xe);
        match Session::open(&lab, "primary", &[]) {
            Ok(mut s) => {
                let uuid = uuid_string(&u);
                let stream = plain_stream(&other, u, b"x");
                s.refuse(
                    &mut f,
                    case,
                    "other subvolume name",
                    &h,
                    "index",
                    Some(&uuid),
                    &stream,
                );
                let stream = plain_stream("pwned-e", u, b"x");
                s.refuse(
                    &mut f,
                    case,
                    "non-id subvolume name",
                    &h,
                    "index",
                    Some(&uuid),
                    &stream,
                );
                let h2 = ids.next(SetKind::Full);
                let stream = plain_stream(&h2, u, b"x");
                let wrong = uuid_string(&uuid_from_seed(0xe1));
                s.refuse(
                    &mut f,
                    case,
                    "wrong uuid",
                    &h2,
                    "index",
                    Some(&wrong),
                    &stream,
                );
                s.refuse(
                    &mut f,
                    case,
                    "no announced uuid",
                    &h2,
                    "index",
                    None,
                    &stream,
                );
                s.close();
                refused_sessions += 1;
            }
            Err(e) => f.check(case, false, e),
        }
        f.check(
            case,
            find_named(&lab.stb.mnt, &other).is_empty()
                && find_named(lab.dir.path(), "pwned-e").is_empty(),
            "nothing of it kept",
        );
    }

    // --- (f) bogus manifests ---
    // Each manifest gets its own ids, and the intruder first ships
    // well-formed snapshots for them, so that only the manifest is wrong:
    // one defect per manifest, each against a set the standby would
    // otherwise accept.
    {
        let case = "f bogus manifests";
        match Session::open(&lab, "primary", &[]) {
            Ok(mut s) => {
                let mut seed = 0xf000u64;
                // Setup receives that were not acked, or not kept as announced.
                let mut bad_setup: Vec<String> = Vec::new();
                // Receive a snapshot `id` of `role`; returns the announced uuid.
                let mut recv = |s: &mut Session, id: &str, role: &str| -> String {
                    seed += 1;
                    let u = uuid_from_seed(seed);
                    let rep = s.send(id, role, Some(&uuid_string(&u)), &plain_stream(id, u, b"r"));
                    let p = received(&lab, role, id);
                    let kept = p.exists() && {
                        let show = subvolume_show(&p);
                        show_field(&show, "Received UUID") == uuid_string(&u)
                            && show_field(&show, "Flags").contains("readonly")
                    };
                    if !rep.is_ack() || !kept {
                        bad_setup.push(format!("{role} {id}: {} kept={kept}", short(&rep)));
                    }
                    uuid_string(&u)
                };
                let now = Timestamp::now();
                let t = |ms: i64| {
                    serde_json::json!((now + SignedDuration::from_millis(ms)).to_string())
                };
                let member = |tpl: &serde_json::Value, id: &str, sid: &str| {
                    let mut m = tpl.clone();
                    m["snapshot"] = serde_json::json!(id);
                    m["storage_id"] = serde_json::json!(sid);
                    m["before"] = t(0);
                    m["after"] = t(5);
                    m
                };
                // A redolog set `id` with its one member received, then `defect`.
                let mut redo = |s: &mut Session, defect: &dyn Fn(&mut serde_json::Value)| {
                    let id = ids.next(SetKind::Redolog);
                    let sid = recv(s, &id, "redolog");
                    forge(&redo_tpl, |v| {
                        v["id"] = serde_json::json!(id);
                        v["members"][0] = member(&redo_tpl["members"][0], &id, &sid);
                        defect(v);
                    })
                };
                let mut bogus: Vec<(&str, Manifest)> = Vec::new();
                for (what, defect) in redo_defects(now) {
                    bogus.push((what, redo(&mut s, &*defect)));
                }
                {
                    let id = ids.next(SetKind::Full);
                    let sid = recv(&mut s, &id, "redolog");
                    bogus.push((
                        "id says full, kind redolog",
                        forge(&redo_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            v["members"][0] = member(&redo_tpl["members"][0], &id, &sid);
                        }),
                    ));
                }
                {
                    let id = ids.next(SetKind::Full);
                    let sid = recv(&mut s, &id, "mysql");
                    bogus.push((
                        "full set with one of four members",
                        forge(&full_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            v["members"] =
                                serde_json::json!([member(&full_tpl["members"][0], &id, &sid)]);
                        }),
                    ));
                }
                {
                    let id = ids.next(SetKind::Full);
                    let s0 = recv(&mut s, &id, "mysql");
                    let s1 = recv(&mut s, &id, "blob");
                    let s3 = recv(&mut s, &id, "redolog");
                    bogus.push((
                        "full set with three of four members",
                        forge(&full_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            v["members"] = serde_json::json!([
                                member(&full_tpl["members"][0], &id, &s0),
                                member(&full_tpl["members"][1], &id, &s1),
                                member(&full_tpl["members"][3], &id, &s3),
                            ]);
                        }),
                    ));
                }
                {
                    let id = ids.next(SetKind::Redolog);
                    bogus.push((
                        "member never received",
                        forge(&redo_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            v["members"][0] = member(
                                &redo_tpl["members"][0],
                                &id,
                                &uuid_string(&uuid_from_seed(0xfa)),
                            );
                        }),
                    ));
                }
                {
                    let a = ids.next(SetKind::Redolog);
                    let b = ids.next(SetKind::Redolog);
                    let sa = recv(&mut s, &a, "redolog");
                    recv(&mut s, &b, "redolog");
                    bogus.push((
                        "member snapshot not named after its set",
                        forge(&redo_tpl, |v| {
                            v["id"] = serde_json::json!(b);
                            v["members"][0] = member(&redo_tpl["members"][0], &a, &sa);
                        }),
                    ));
                }
                bogus.push((
                    "a committed set's id, other member data",
                    forge(&redo_tpl, |v| {
                        v["members"][0]["storage_id"] =
                            serde_json::json!(uuid_string(&uuid_from_seed(0xfb)));
                        v["members"][0]["before"] = t(0);
                    }),
                ));
                f.check(
                    case,
                    bad_setup.is_empty(),
                    format!(
                        "well-formed snapshots are acked and kept read-only with the announced uuid: {bad_setup:?}"
                    ),
                );
                for (what, m) in bogus {
                    let id = m.id.clone();
                    let was = lab.standby_manifest(&id);
                    if was.is_none() {
                        refused_ids.push(id.clone());
                    }
                    let rep = s.commit(m);
                    f.check(
                        case,
                        !rep.is_committed() || was.is_some(),
                        format!("{what}: {}", short(&rep)),
                    );
                    f.check(
                        case,
                        lab.standby_manifest(&id) == was,
                        format!("{what}: commit record unchanged"),
                    );
                    if let Reply::Gone(_) = rep {
                        break;
                    }
                }
                s.close();
                refused_sessions += 1;
            }
            Err(e) => f.check(case, false, e),
        }
    }

    // --- (g) a flood of commits with valid-looking but bogus data ---
    {
        let case = "g flood";
        let t0 = Instant::now();
        match Session::open(&lab, "primary", &[]) {
            Ok(mut s) => {
                let mut received_ids = Vec::new();
                for i in 0..8u64 {
                    let id = ids.next(SetKind::Redolog);
                    let u = uuid_from_seed(0x6000 + i);
                    let rep = s.send(
                        &id,
                        "redolog",
                        Some(&uuid_string(&u)),
                        &plain_stream(&id, u, &random_bytes(i, 300)),
                    );
                    if rep.is_ack() {
                        received_ids.push((id, uuid_string(&u)));
                    }
                }
                let mut committed = 0;
                let mut answered = 0;
                for i in 0..200usize {
                    let m = if i % 2 == 0 && !received_ids.is_empty() {
                        // A received snapshot, claimed with another uuid.
                        let (id, _) = &received_ids[i % received_ids.len()];
                        forge(&redo_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            v["members"][0]["snapshot"] = serde_json::json!(id);
                            v["members"][0]["storage_id"] =
                                serde_json::json!(uuid_string(&uuid_from_seed(i as u64)));
                        })
                    } else if i % 3 == 0 {
                        let id = ids.next(SetKind::Full);
                        forge(&full_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            for m in v["members"].as_array_mut().unwrap() {
                                m["snapshot"] = serde_json::json!(id);
                            }
                        })
                    } else {
                        let id = ids.next(SetKind::Redolog);
                        forge(&redo_tpl, |v| {
                            v["id"] = serde_json::json!(id);
                            v["members"][0]["snapshot"] = serde_json::json!(id);
                        })
                    };
                    match s.commit(m) {
                        Reply::Gone(e) => {
                            f.check(
                                case,
                                false,
                                format!("session broke after {answered} commits: {e}"),
                            );
                            break;
                        }
                        r => {
                            answered += 1;
                            if r.is_committed() {
                                committed += 1;
                            }
                        }
                    }
                }
                f.check(
                    case,
                    committed == 0,
                    format!("{committed} of {answered} bogus commits accepted"),
                );
                s.close();
                refused_sessions += 1;
            }
            Err(e) => f.check(case, false, e),
        }
        f.check(
            case,
            lab.standby_manifests() == committed_before,
            format!("commit records: {:?}", lab.standby_manifests()),
        );
        eprintln!("[{case}] took {:?}", t0.elapsed());
    }

    // --- hostile strings in what serve logs ---
    {
        let case = "log injection";
        match Session::open(&lab, "primary\nFAKE session ok\x1b[2J", &[]) {
            Ok(mut s) => {
                let h = ids.next(SetKind::Full);
                let role = "blob\nFAKE received blob\r\x07";
                s.refuse(&mut f, case, "unknown role", &h, role, None, b"junk");
                let set = "x\n\x1b]0;FAKE\x07";
                s.refuse(&mut f, case, "bad set id", set, "blob", None, b"junk");
                let _ = s.begin(&h, "blob", &h, None);
                let _ = s.data(b"btrfs-stream\0");
                let _ = s.w.as_mut().unwrap().msg(&Msg::Abort {
                    reason: "FAKE\nFAKE aborted\x1b[0m".into(),
                });
                let _ = s.reply();
                s.close();
                refused_sessions += 1;
            }
            Err(e) => eprintln!("[{case}] session refused at the handshake: {e}"),
        }
    }

    // --- (h) a stalled session: serve gives up after its idle timeout ---
    {
        let case = "h stalled (idle timeout)";
        match Session::open(&lab, "primary", &["--idle-timeout", "3s"]) {
            Ok(mut s) => {
                let h = ids.next(SetKind::Full);
                let u = uuid_from_seed(0x4);
                let mut w = StreamWriter::new();
                w.subvol(&h, u, 100)
                    .file("big", &random_bytes(3, 300_000))
                    .end();
                let stream = w.into_bytes();
                let sent = s
                    .begin(&h, "blob", &h, Some(&uuid_string(&u)))
                    .and_then(|_| s.data(&stream[..150_000]));
                f.check(
                    case,
                    sent.is_ok(),
                    format!("partial snapshot sent: {sent:?}"),
                );
                let t0 = Instant::now();
                let st = s.wait_exit(Duration::from_secs(30));
                let waited = t0.elapsed();
                f.check(
                    case,
                    st.is_some_and(|st| !st.success()),
                    format!("serve exits non-zero on its own: {st:?} after {waited:?}"),
                );
                f.check(
                    case,
                    waited >= Duration::from_secs(2),
                    format!("not before the timeout: {waited:?}"),
                );
                s.kill();
                f.check(
                    case,
                    !lab.standby_recv("blob")
                        .join(format!(".receiving-{h}"))
                        .exists()
                        && !received(&lab, "blob", &h).exists(),
                    format!(
                        "partial receive discarded: {:?}",
                        lab.standby_recv_entries()
                    ),
                );
                refused_sessions += 1;
            }
            Err(e) => f.check(case, false, format!("serve --idle-timeout: {e}")),
        }
        // The lock is free: a session gets in at once.
        let t0 = Instant::now();
        match Session::open(&lab, "primary", &[]) {
            Ok(s) => {
                s.close();
                f.check(
                    case,
                    t0.elapsed() < Duration::from_secs(10),
                    format!("lock released (next session in {:?})", t0.elapsed()),
                );
            }
            Err(e) => f.check(case, false, format!("next session: {e}")),
        }
    }

    // --- After all of it ---
    let case = "after";
    f.nothing_named(&lab, case, "pwned", "no file written outside");
    f.check(
        case,
        std::fs::read_dir(&outside).unwrap().count() == 0,
        "outside dir empty",
    );
    f.check(
        case,
        lab.standby_manifests() == committed_before,
        format!("commit records: {:?}", lab.standby_manifests()),
    );
    for ((id, r), want) in legit.iter().zip(&digests) {
        let p = received(&lab, r, id);
        let same = p.exists() && &tree_digest(&p) == want;
        f.check(case, same, format!("{r} {id} byte-identical"));
        if p.exists() {
            let show = subvolume_show(&p);
            f.check(
                case,
                show_field(&show, "Flags").contains("readonly"),
                format!("{r} {id} read-only"),
            );
        }
        if let Some(m) = lab.standby_manifest(id).filter(|_| *r == "redolog") {
            let prim = lab.primary_manifest(id);
            for (a, b) in m["members"]
                .as_array()
                .unwrap()
                .iter()
                .zip(prim["members"].as_array().unwrap())
            {
                for k in ["role", "snapshot", "storage_id", "before", "after"] {
                    f.check(
                        case,
                        a[k] == b[k],
                        format!("{id} member {} {k} as on the primary", b["role"]),
                    );
                }
            }
        }
    }
    let out = lab.run(&lab.stb_cfg, &["sets", "--json"]);
    f.check(
        case,
        not_panicked(&out) && out.status.success(),
        format!("sets: {}", String::from_utf8_lossy(&out.stderr)),
    );
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
        let complete: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["complete"] == true)
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        f.check(
            case,
            complete == [full_id.clone(), redo_id.clone()],
            format!("complete sets {complete:?}"),
        );
    }
    let out = lab.run(&lab.stb_cfg, &["status"]);
    f.check(
        case,
        not_panicked(&out) && out.status.code().is_some_and(|c| c <= 2),
        format!(
            "status exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    let out = lab.run(&lab.stb_cfg, &["failover", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout);
    f.check(
        case,
        not_panicked(&out)
            && out.status.success()
            && plan.contains(&full_id)
            && plan.contains(&redo_id),
        format!(
            "failover --dry-run names {full_id} and {redo_id}: {plan}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    );

    // serve.log: an event line for refused sessions, nothing raw from the wire.
    let log = std::fs::read(lab.dir.path().join("state-stb/serve.log")).unwrap_or_default();
    let text = String::from_utf8_lossy(&log);
    let lines = text.lines().count();
    f.check(
        case,
        lines >= refused_sessions,
        format!("serve.log has {lines} lines for {refused_sessions} refused sessions"),
    );
    f.check(
        case,
        !log.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f),
        "serve.log has no raw control characters",
    );
    let unlogged: Vec<&String> = refused_ids
        .iter()
        .filter(|id| {
            !text
                .lines()
                .any(|l| l.contains(id.as_str()) && (l.contains("WARN") || l.contains("ERROR")))
        })
        .collect();
    f.check(
        case,
        unlogged.is_empty(),
        format!(
            "every refused snapshot or set ({}) has a WARN/ERROR line in serve.log; missing: {unlogged:?}",
            refused_ids.len()
        ),
    );
    f.check(
        case,
        !text.lines().any(|l| l.starts_with("FAKE")),
        "no line of serve.log starts with injected text",
    );

    // The real primary goes on: incremental ship, new sets committed.
    lab.append_redolog("op 3");
    for r in ["mysql", "blob", "index"] {
        write_file(&lab.live(r).join("data2"), &random_bytes(77, 4096));
    }
    let full2 = lab.snapshot(false);
    lab.append_redolog("op 4");
    let redo2 = lab.snapshot(true);
    let full2_id = full2["id"].as_str().unwrap().to_string();
    let redo2_id = redo2["id"].as_str().unwrap().to_string();
    let out = lab.run(&lab.pri_cfg, &["ship", "--json"]);
    let ship_ok = out.status.success();
    f.check(
        case,
        ship_ok,
        format!(
            "ship after the attack: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    );
    if ship_ok {
        let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let snaps = rep["snapshots"].as_array().unwrap();
        f.check(
            case,
            !snaps.is_empty() && snaps.iter().all(|s| !s["base"].is_null()),
            format!("incremental: {snaps:?}"),
        );
        f.check(
            case,
            rep["committed"] == serde_json::json!([full2_id, redo2_id]),
            format!("committed {}", rep["committed"]),
        );
    }

    let failover_out = lab.run(&lab.stb_cfg, &["failover", "--json"]);
    f.check(
        case,
        failover_out.status.success(),
        format!(
            "failover: {}",
            String::from_utf8_lossy(&failover_out.stderr)
        ),
    );
    if failover_out.status.success() {
        let rep: serde_json::Value = serde_json::from_slice(&failover_out.stdout).unwrap();
        f.check(
            case,
            rep["plan"]["set_id"] == full2_id.as_str(),
            format!("failover used {}", rep["plan"]["set_id"]),
        );
        f.check(
            case,
            rep["plan"]["redolog_set_id"] == redo2_id.as_str(),
            format!("redolog {}", rep["plan"]["redolog_set_id"]),
        );
        for r in ["mysql", "blob", "index"] {
            f.check(
                case,
                tree_digest(&lab.standby_live(r)) == tree_digest(&lab.primary_snap(r, &full2_id)),
                format!("{r} brought up with the primary's data"),
            );
        }
        let seen =
            std::fs::read_to_string(lab.dir.path().join("replay-redolog")).unwrap_or_default();
        f.check(
            case,
            seen == "op 1\nop 2\nop 3\nop 4\n",
            format!("replay saw the real redolog: {seen:?}"),
        );
    }
    eprintln!("drill took {:?}", started.elapsed());
    assert!(
        f.0.is_empty(),
        "{} failures:\n{}",
        f.0.len(),
        f.0.join("\n")
    );
}

/// The failover path must never wait on the thing that failed: a session
/// that went silent mid-snapshot (default idle timeout, 120 s) holds the
/// standby's lock, and `failover` stops it instead of waiting for it.
#[test]
fn failover_stops_a_stalled_session() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill_same(9, 32 * 1024);
    lab.append_redolog("op 1");
    let set = lab.snapshot(false);
    let id = set["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);

    let mut s = Session::open(&lab, "primary", &[]).expect("session");
    let h = new_set_id(Timestamp::now(), SetKind::Full);
    let u = uuid_from_seed(0x42);
    let stream = plain_stream(&h, u, &random_bytes(4, 200_000));
    s.begin(&h, "blob", &h, Some(&uuid_string(&u)))
        .and_then(|_| s.data(&stream[..100_000]))
        .expect("partial snapshot sent");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "serve waits for more"
    );

    let t0 = Instant::now();
    let out = lab.run(&lab.stb_cfg, &["failover", "--json"]);
    let took = t0.elapsed();
    let stopped = s.wait_exit(Duration::from_secs(5));
    s.kill();
    assert!(
        out.status.success() && took < Duration::from_secs(60),
        "failover with a stalled session took {took:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stopped.is_some(), "the stalled serve was stopped");
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["plan"]["set_id"], id.as_str());
    assert_eq!(
        tree_digest(&lab.standby_live("blob")),
        tree_digest(&lab.primary_snap("blob", &id))
    );
    assert!(
        !lab.standby_manifests().contains(&format!("{h}.json")),
        "the stalled snapshot was not committed"
    );
}

/// Issue 29: a standby that followed a new primary into generation 2 must
/// never commit a set of the old primary's generation 1. `ship` no longer
/// sends such sets, so only a forged session reaches serve's refusal: the
/// intruder sends the old primary's real set (its members' real `btrfs
/// send` streams, its real manifest) and commits it.
#[test]
fn a_forged_commit_of_an_older_generation_is_refused_and_changes_nothing() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    lab.fill_same(29, 32 * 1024);
    let f1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    // The standby has since followed a new primary into generation 2.
    let role_file = lab.dir.path().join("state-stb/role.json");
    std::fs::write(
        &role_file,
        "{\"role\":\"standby\",\"generation\":2,\"since\":\"2026-11-30T00:00:00Z\",\"how\":\"follow\"}",
    )
    .unwrap();
    // The old primary, still in generation 1, takes another set.
    for r in ROLES {
        write_file(&lab.live(r).join("late"), &random_bytes(30, 16 * 1024));
    }
    let m = lab.snapshot(false);
    assert_eq!(m["generation"].as_u64(), Some(1));
    let old = m["id"].as_str().unwrap().to_string();
    let manifests = lab.standby_manifests();
    let role_before = std::fs::read(&role_file).unwrap();
    let status_before = stdout(&lab.run(&lab.stb_cfg, &["sets", "--json"]));

    let mut s = Session::open(&lab, "primary", &[]).expect("handshake");
    let tmp = lab.dir.path().join("member.stream");
    let mut acked = 0;
    for member in m["members"].as_array().unwrap() {
        let role = member["role"].as_str().unwrap();
        let snap = member["snapshot"].as_str().unwrap();
        sh(&[
            "btrfs",
            "send",
            "-q",
            "-f",
            tmp.to_str().unwrap(),
            lab.primary_snap(role, snap).to_str().unwrap(),
        ]);
        let stream = std::fs::read(&tmp).unwrap();
        let rep = s
            .begin(&old, role, snap, member["storage_id"].as_str())
            .and_then(|_| {
                s.data(&stream)?;
                s.w.as_mut()
                    .unwrap()
                    .msg(&Msg::End {
                        bytes: stream.len() as u64,
                        blake3: blake3::hash(&stream).to_hex().to_string(),
                    })
                    .map_err(|e| e.to_string())
            })
            .map(|_| s.reply())
            .unwrap_or_else(Reply::Gone);
        if rep.is_ack() {
            acked += 1;
        } else {
            eprintln!("member {role} {snap} not received: {}", short(&rep));
        }
    }
    let manifest: Manifest = serde_json::from_value(m.clone()).unwrap();
    let rep = s.commit(manifest);
    let said = short(&rep);
    s.kill();
    eprintln!("forged older-generation commit ({acked} member(s) acked first): {said}");
    assert!(!rep.is_committed(), "committed: {said}");
    assert!(
        said.contains("older than this site's generation 2"),
        "the refusal should say why: {said}"
    );
    // Nothing changed: the same commit records, the same role, the same
    // sets listed; failover would still use the generation-1 set that was
    // committed before the standby followed.
    assert_eq!(lab.standby_manifests(), manifests);
    assert!(!manifests.contains(&format!("{old}.json")));
    assert_eq!(std::fs::read(&role_file).unwrap(), role_before);
    assert_eq!(
        stdout(&lab.run(&lab.stb_cfg, &["sets", "--json"])),
        status_before
    );
    // (The members acked before the refused commit stay as any
    // uncommitted receive does: no manifest, so no set for failover.)
    assert!(lab.standby_recv_entries().iter().any(|e| e.ends_with(&old)));
    let plan = json_of(&lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--json"]));
    assert_eq!(plan["set_id"].as_str(), Some(f1.as_str()), "{plan}");
}

/// The hello's `since` (issue 23: the set the welcome may start from) is
/// hostile input: anything but a set id is refused with an error naming
/// the field, before anything is listed or changed; a set id the standby
/// does not hold committed gets the whole inventory; one it holds gets
/// that set and the newer ones, and per volume the snapshots from its
/// member on.
#[test]
fn a_hello_naming_since_gets_the_tail_or_a_clear_refusal() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let mut ids = Vec::new();
    for i in 0..3 {
        lab.fill_same(40 + i, 16 * 1024);
        ids.push(lab.snapshot(false)["id"].as_str().unwrap().to_string());
    }
    lab.ship(&lab.pri_cfg);
    let manifests = lab.standby_manifests();
    let sets_before = stdout(&lab.run(&lab.stb_cfg, &["sets", "--json"]));
    // hello with `since`; the first answer (a refusal: the reader reports
    // the `Error`, its text here), and how serve ended
    let ask = |since: &str| -> (Result<Msg, String>, bool) {
        let mut s = Session::spawn(&lab, &[], Duration::from_secs(90));
        let w = s.w.as_mut().unwrap();
        w.magic().unwrap();
        w.msg(&Msg::Hello {
            protocol: PROTOCOL_VERSION,
            site: "primary".into(),
            version: "6.6.6".into(),
            since: Some(since.into()),
        })
        .unwrap();
        w.flush().unwrap();
        s.r.magic().unwrap();
        let m = s.r.msg().map_err(|e| e.to_string());
        let st = s.close();
        (m, st.success())
    };
    let long = "9".repeat(100_000);
    for bad in [
        "",
        "../../etc/passwd",
        "latest",
        "20261127T080000.000Z-full/../x",
        "20261127T080000.000Z-full\n",
        long.as_str(),
    ] {
        let (m, ok) = ask(bad);
        let Err(message) = &m else {
            panic!(
                "since {:?}: expected a refusal, got {m:?}",
                &bad[..bad.len().min(40)]
            );
        };
        assert!(
            message.contains("`since` that is not a set id"),
            "{message}"
        );
        assert!(
            message.len() < 1000,
            "the refusal is bounded: {}",
            message.len()
        );
        assert!(!ok, "serve ends the refused session with an error");
    }
    let welcome = |since: &str| -> (Vec<String>, Vec<Vec<String>>) {
        match ask(since) {
            (
                Ok(Msg::Welcome {
                    committed, volumes, ..
                }),
                true,
            ) => (
                committed,
                volumes.into_iter().map(|v| v.snapshots).collect(),
            ),
            other => panic!("since {since}: expected a welcome, got {other:?}"),
        }
    };
    let all = welcome(&ids[0]);
    assert_eq!(all.0, ids, "from the oldest set: every set");
    for v in &all.1 {
        assert_eq!(v, &ids, "every member");
    }
    // a set id the standby does not hold: the whole inventory
    let unknown = "20201127T080000.000Z-full";
    assert_eq!(welcome(unknown), all);
    let tail = welcome(&ids[1]);
    assert_eq!(tail.0, ids[1..].to_vec(), "from `since` on");
    assert_eq!(tail.1.len(), all.1.len(), "every volume");
    for v in &tail.1 {
        assert_eq!(v, &ids[1..].to_vec(), "each volume from its member on");
    }
    // Nothing changed on the standby.
    assert_eq!(lab.standby_manifests(), manifests);
    assert_eq!(
        stdout(&lab.run(&lab.stb_cfg, &["sets", "--json"])),
        sets_before
    );
}

fn json_of(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}
