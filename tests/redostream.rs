//! Redolog streaming (issue 17). In process: the primary's follower against
//! `serve` over a socket pair (in-memory store), the spool's journal, the
//! checkpoint and the failover apply on plain directories, and hostile
//! batches. On real btrfs: `snapsite ship` + the follower of `run` + `snapsite
//! failover`, the redolog copy then equal to the primary's files.

mod common;

use common::redolog::{
    Log, assert_device_zeroed, checkpoint_then_roll, stream_recovery_point, tree_state, wait_acked,
};

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use snapsite::backend::mem::MemStore;
use snapsite::base::config::Config;
use snapsite::dr::stream_apply;
use snapsite::primary::follower::{self, Follower, FollowerRecord};
use snapsite::standby::spool;
use snapsite::wire::redostream;
use snapsite::wire::stream::{Deadline, Msg, PROTOCOL_VERSION, Reader, SpoolEvent, Writer};

const STREAM: &str = "[stream]\nfiles = [\"redo.log\", \"archive/redo-*.log\"]\nflush_interval = \"100ms\"\nspool_max = \"2MiB\"\n";

struct Standby {
    dir: tempfile::TempDir,
    cfg: Config,
    store: MemStore,
}

fn standby() -> Standby {
    standby_in(tempfile::tempdir().unwrap())
}

fn standby_in(dir: tempfile::TempDir) -> Standby {
    let mut text = format!(
        "site = \"standby\"\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    for r in ["mysql", "redolog"] {
        text.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{0}/live/{r}\"\nsnapshot_dir = \"{0}/snap/{r}\"\n",
            dir.path().display()
        ));
    }
    text.push_str(STREAM);
    let cfg = Config::parse(&text, &dir.path().join("standby.toml")).unwrap();
    Standby {
        dir,
        cfg,
        store: MemStore::new(),
    }
}

struct Conn {
    r: Reader<UnixStream>,
    w: Writer<UnixStream>,
    serve: JoinHandle<snapsite::Result<()>>,
}

impl Standby {
    fn spool(&self) -> PathBuf {
        self.cfg.state_dir.join("spool")
    }
    fn connect(&self) -> Conn {
        let (client, serve) = self.spawn_serve();
        Conn {
            w: Writer::new(client.try_clone().unwrap()),
            r: Reader::new(client),
            serve,
        }
    }
    /// `serve` on one end of a socket pair; the other end.
    fn spawn_serve(&self) -> (UnixStream, JoinHandle<snapsite::Result<()>>) {
        let (client, server) = UnixStream::pair().unwrap();
        let cfg = self.cfg.clone();
        let store = self.store.clone();
        let serve = std::thread::spawn(move || {
            let t = Some(Duration::from_secs(20));
            let input = Deadline::new(server.try_clone().unwrap(), t, "the primary");
            let output = Deadline::new(server, t, "the primary");
            snapsite::standby::serve::serve_with(&cfg, &move |_| Ok(store.backend()), input, output)
        });
        (client, serve)
    }
    /// A spool session, handshake done.
    fn session(&self) -> (Conn, u64, Vec<snapsite::wire::stream::SpoolFileState>) {
        let mut c = self.connect();
        let (seq, files) = follower::spool_handshake(&self.cfg, &mut c.r, &mut c.w).unwrap();
        (c, seq, files)
    }
}

impl Conn {
    fn close(mut self) {
        self.w.msg(&Msg::Bye).unwrap();
        drop(self.w);
        self.serve.join().unwrap().unwrap();
    }
}

fn digest(root: &Path) -> BTreeMap<String, String> {
    common::tree_digest(root)
}

fn copy_tree(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .args(["-a", &format!("{}/.", from.display())])
        .arg(to)
        .status()
        .unwrap();
    assert!(out.success());
}

fn flush(f: &mut Follower, c: &mut Conn) -> FollowerRecord {
    let mut rec = FollowerRecord::default();
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    rec
}

#[test]
fn spool_continues_a_snapshot_taken_anywhere_in_the_stream() {
    let stb = standby();
    let (_pri, root, mut log) = primary_log(20);
    let (mut c, seq, files) = stb.session();
    assert_eq!((seq, files.len()), (0, 0), "a fresh spool");
    let mut f = Follower::new(root.clone(), redostream_globs());
    f.resume(seq, &files).unwrap();
    flush(&mut f, &mut c); // the base: sizes, no bytes
    // Snapshots at different moments of the stream, each to be continued.
    let mut snaps = Vec::new();
    for round in 0..6 {
        log.append(7 + round);
        if round % 2 == 1 {
            log.rollover();
            log.append(3);
        }
        if round == 3 {
            // A torn record cut off by the writer: the file shrinks.
            let p = root.join("redo.log");
            let len = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len - 5)
                .unwrap();
        }
        // A snapshot between a change and the flush that ships it.
        let snap = tempfile::tempdir().unwrap();
        copy_tree(&root, snap.path());
        snaps.push(snap);
        flush(&mut f, &mut c);
    }
    log.append(5);
    flush(&mut f, &mut c);
    let want = digest(&root);
    let t0 = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    for (i, snap) in snaps.iter().enumerate() {
        let copy = tempfile::tempdir().unwrap();
        copy_tree(snap.path(), copy.path());
        assert_ne!(digest(copy.path()), want, "snapshot {i} lacks the tail");
        let r = stream_apply::apply_dir(&stb.spool(), copy.path(), t0).unwrap();
        assert_eq!(digest(copy.path()), want, "snapshot {i} + spool = primary");
        assert!(r.events_applied > 0 && r.recovery_point.unwrap() > t0);
        // Applying again (an interrupted failover rerun) changes nothing.
        let again = stream_apply::apply_dir(&stb.spool(), copy.path(), t0).unwrap();
        assert_eq!(again.events_applied, 0);
        assert_eq!(digest(copy.path()), want);
    }
    c.close();
}

fn redostream_globs() -> Vec<String> {
    vec!["redo.log".into(), "archive/redo-*.log".into()]
}

/// A primary's redolog of `first` lines in a fresh directory: (the
/// directory, the redolog's root, the log).
fn primary_log(first: usize) -> (tempfile::TempDir, PathBuf, Log) {
    let pri = tempfile::tempdir().unwrap();
    let root = pri.path().join("redolog");
    let mut log = Log::new(&root);
    log.append(first);
    (pri, root, log)
}

/// A primary's redolog (in a fresh directory) of `first` lines, a spool
/// session with `stb` and a follower resumed on it, its base flushed; then
/// `more` lines appended and flushed.
fn follow_from(
    stb: &Standby,
    first: usize,
    more: usize,
) -> (tempfile::TempDir, PathBuf, Log, Conn, Follower) {
    let (pri, root, mut log) = primary_log(first);
    let (mut c, seq, files) = stb.session();
    let mut f = Follower::new(root.clone(), redostream_globs());
    f.resume(seq, &files).unwrap();
    flush(&mut f, &mut c);
    log.append(more);
    flush(&mut f, &mut c);
    (pri, root, log, c, f)
}

#[test]
fn checkpoint_drops_what_the_snapshot_covers_and_refuses_a_mismatch() {
    let stb = standby();
    let (_pri, root, mut log, mut c, mut f) = follow_from(&stb, 10, 10);
    log.rollover();
    log.append(4);
    flush(&mut f, &mut c);
    let journal = stb.spool().join("journal");
    // The snapshot is taken here: everything so far is in it.
    let snap = tempfile::tempdir().unwrap();
    copy_tree(&root, snap.path());
    log.append(6);
    flush(&mut f, &mut c);
    let spooled = |d: &Path| spool::Spool::load(d, false).unwrap().pending_bytes();
    let tail = std::fs::metadata(root.join("redo.log")).unwrap().len()
        - std::fs::metadata(snap.path().join("redo.log"))
            .unwrap()
            .len();
    assert!(spooled(&stb.spool()) > tail);
    // Batches without changes still advance the stream's time.
    flush(&mut f, &mut c);
    let as_of = |d: &Path| spool::Spool::load(d, false).unwrap().last_as_of();
    let newest = as_of(&stb.spool());
    let dropped = spool::checkpoint(&stb.spool(), snap.path(), "s1")
        .unwrap()
        .unwrap();
    assert!(dropped >= 4, "dropped {dropped}");
    assert_eq!(
        spooled(&stb.spool()),
        tail,
        "only what the snapshot lacks is left"
    );
    assert_eq!(as_of(&stb.spool()), newest, "kept across the checkpoint");
    let after = std::fs::metadata(&journal).unwrap().len();
    let copy = tempfile::tempdir().unwrap();
    copy_tree(snap.path(), copy.path());
    stream_apply::apply_dir(&stb.spool(), copy.path(), jiff::Timestamp::now()).unwrap();
    assert_eq!(digest(copy.path()), digest(&root));
    // A snapshot whose bytes differ from the spool: error, recorded, spool kept.
    let bad = tempfile::tempdir().unwrap();
    copy_tree(&root, bad.path());
    let p = bad.path().join("redo.log");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 3] ^= 0x20;
    std::fs::write(&p, &b).unwrap();
    let e = spool::checkpoint(&stb.spool(), bad.path(), "s2").unwrap_err();
    assert!(e.to_string().contains("does not continue"), "{e}");
    assert!(stb.spool().join("broken.json").exists());
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), after);
    // ...and failover does not use it on such a copy (nothing written).
    let before_apply = digest(bad.path());
    assert!(stream_apply::apply_dir(&stb.spool(), bad.path(), jiff::Timestamp::now()).is_err());
    assert_eq!(digest(bad.path()), before_apply);
    // The next matching snapshot makes it usable again.
    spool::checkpoint(&stb.spool(), &root, "s3").unwrap();
    assert!(!stb.spool().join("broken.json").exists());
    c.close();
}

#[test]
fn restarts_resume_and_a_torn_journal_tail_is_cut() {
    let stb = standby();
    let (_pri, root, mut log, c, _f) = follow_from(&stb, 10, 10);
    c.close();
    // A restart of `run`: a new follower, resuming from the tails.
    let (mut c, seq, files) = stb.session();
    assert_eq!(seq, 2);
    let mut f2 = Follower::new(root.clone(), redostream_globs());
    f2.resume(seq, &files).unwrap();
    log.append(3);
    let rec = flush(&mut f2, &mut c);
    assert_eq!(rec.resets, 0, "resumed, not reset");
    c.close();
    // A standby crash mid-write: garbage after the last record is cut.
    let journal = stb.spool().join("journal");
    let good = std::fs::metadata(&journal).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(&[0, 0, 0, 9, 1, 2, 3])
        .unwrap();
    let (mut c, seq, files) = stb.session();
    assert_eq!(seq, 3);
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), good);
    // The primary's file was replaced while run was down: reset, not resume.
    std::fs::remove_file(root.join("redo.log")).unwrap();
    std::fs::write(root.join("redo.log"), b"another file altogether\n").unwrap();
    let mut f3 = Follower::new(root.clone(), redostream_globs());
    f3.resume(seq, &files).unwrap();
    let rec = flush(&mut f3, &mut c);
    assert_eq!(rec.resets, 1);
    c.close();
}

/// Send a raw batch; returns the answer.
fn raw_batch(
    c: &mut Conn,
    seq: u64,
    events: Vec<SpoolEvent>,
    data: &[u8],
    hash: Option<&str>,
) -> Msg {
    send_batch(&mut c.r, &mut c.w, seq, false, events, data, hash)
}

fn send_batch<R: std::io::Read, W: std::io::Write>(
    r: &mut Reader<R>,
    w: &mut Writer<W>,
    seq: u64,
    reset: bool,
    events: Vec<SpoolEvent>,
    data: &[u8],
    hash: Option<&str>,
) -> Msg {
    let h = blake3::hash(data).to_hex().to_string();
    w.msg(&Msg::SpoolBatch {
        seq,
        as_of: jiff::Timestamp::now(),
        reset,
        events,
        bytes: data.len() as u64,
        blake3: hash.unwrap_or(&h).to_string(),
    })
    .unwrap();
    for ch in data.chunks(1 << 20) {
        w.data(ch).unwrap();
    }
    w.flush().unwrap();
    r.msg().unwrap()
}

#[test]
fn hostile_batches_are_refused_and_leave_the_spool_as_it_was() {
    let stb = standby();
    let (mut c, seq, _) = stb.session();
    assert_eq!(seq, 0);
    let ok = raw_batch(
        &mut c,
        1,
        vec![SpoolEvent::Append {
            file: "redo.log".into(),
            offset: 0,
            len: 4,
        }],
        b"abcd",
        None,
    );
    assert_eq!(ok, Msg::SpoolAck { seq: 1 });
    let journal = stb.spool().join("journal");
    let size = std::fs::metadata(&journal).unwrap().len();
    let app = |file: &str, offset: u64, len: u64| SpoolEvent::Append {
        file: file.into(),
        offset,
        len,
    };
    let big = vec![7u8; 1 << 20];
    type Case<'a> = (&'a str, u64, Vec<SpoolEvent>, Vec<u8>, Option<&'a str>);
    // Batch `seq` of one byte appended at `offset` of `file`.
    let one = |name: &'static str, seq: u64, file: &str, offset: u64| -> Case {
        (name, seq, vec![app(file, offset, 1)], b"x".to_vec(), None)
    };
    let cases: Vec<Case> = vec![
        one("traversal", 2, "../etc/passwd", 0),
        one("absolute", 2, "/etc/passwd", 0),
        one("not in the globs", 2, "other.log", 0),
        one("gap", 2, "redo.log", 5),
        (
            // The first event applies, the second does not: the whole
            // batch is refused and the spool in memory is as before it
            // (the cap loop below continues at offset 4).
            "gap after a good event",
            2,
            vec![app("redo.log", 4, 1), app("redo.log", 9, 1)],
            b"xy".to_vec(),
            None,
        ),
        one("overlap", 2, "redo.log", 2),
        one("seq skips", 3, "redo.log", 4),
        (
            "bytes beyond events",
            2,
            vec![app("redo.log", 4, 1)],
            b"xy".to_vec(),
            None,
        ),
        (
            "checksum",
            2,
            vec![app("redo.log", 4, 1)],
            b"x".to_vec(),
            Some("00"),
        ),
        (
            "grow by truncate",
            2,
            vec![SpoolEvent::Truncate {
                file: "redo.log".into(),
                size: 99,
            }],
            vec![],
            None,
        ),
        (
            "rename unknown",
            2,
            vec![SpoolEvent::Rename {
                from: "archive/redo-1.log".into(),
                to: "redo.log".into(),
            }],
            vec![],
            None,
        ),
        (
            "long name",
            2,
            vec![app(&format!("archive/redo-{}.log", "9".repeat(300)), 0, 1)],
            b"x".to_vec(),
            None,
        ),
    ];
    for (what, seq, events, data, hash) in cases {
        match raw_batch(&mut c, seq, events, &data, hash) {
            Msg::SpoolRefused { .. } => {}
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), size, "{what}");
    }
    // The disk cap (2 MiB here): refused before it is passed.
    let mut refused_at = None;
    let mut off = 4;
    for s in 2..6 {
        match raw_batch(
            &mut c,
            s,
            vec![app("redo.log", off, big.len() as u64)],
            &big,
            None,
        ) {
            Msg::SpoolAck { .. } => off += big.len() as u64,
            Msg::SpoolRefused { error, full, .. } => {
                assert!(error.contains("spool_max") && full, "{error}");
                refused_at = Some(s);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused_at.is_some(), "the cap must bite");
    assert!(std::fs::metadata(&journal).unwrap().len() <= 2 << 20);
    c.close();
    // A standby without [stream] refuses spool sessions altogether.
    let dir = tempfile::tempdir().unwrap();
    let text = common::redolog_site_toml("s", dir.path());
    let cfg = Config::parse(&text, &dir.path().join("s.toml")).unwrap();
    let (client, server) = UnixStream::pair().unwrap();
    let store = MemStore::new();
    let h = std::thread::spawn(move || {
        snapsite::standby::serve::serve_with(
            &cfg,
            &move |_| Ok(store.backend()),
            server.try_clone().unwrap(),
            server,
        )
    });
    let mut w = Writer::new(client.try_clone().unwrap());
    let mut r = Reader::new(client);
    w.magic().unwrap();
    w.msg(&Msg::SpoolHello {
        protocol: PROTOCOL_VERSION,
        site: "p".into(),
        version: "t".into(),
    })
    .unwrap();
    r.magic().unwrap();
    let e = r.msg().unwrap_err();
    assert!(e.to_string().contains("no [stream] section"), "{e}");
    assert!(h.join().unwrap().is_err());
    let _ = stb.dir.path();
}

#[test]
fn config_errors_name_the_stream_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = common::redolog_site_toml("s", dir.path());
    for (section, key) in [
        ("[stream]\nfiles = [\"../x\"]\n", "stream.files[0]"),
        (
            "[stream]\nflush_interval = \"soon\"\n",
            "stream.flush_interval",
        ),
        ("[stream]\nspool_max = \"1KiB\"\n", "stream.spool_max"),
        ("[stream]\nbogus = 1\n", "bogus"),
    ] {
        let e = Config::parse(&format!("{base}{section}"), &dir.path().join("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{section}: {e}");
    }
    let cfg = Config::parse(&format!("{base}[stream]\n"), &dir.path().join("s.toml")).unwrap();
    assert_eq!(
        redostream::live_root(&cfg).unwrap(),
        dir.path().join("live")
    );
}

fn add_stream(path: &Path) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(format!("\n{STREAM}").as_bytes()).unwrap();
}

/// A btrfs lab streaming `redolog`: the primary's config (`serve --stdio`
/// of the standby's), loaded, and its redolog, `first` lines in it
/// snapshotted and shipped.
fn stream_lab(first: usize) -> (common::Lab, PathBuf, Config, Log) {
    let lab = common::Lab::new("[\"/bin/true\"]");
    add_stream(&lab.stb_cfg);
    let pri = lab.primary_variant(
        "stream-primary",
        &format!(
            "transport = \"command\"\ncommand = [\"{}\", \"serve\", \"--stdio\", \"--config\", \"{}\"]",
            common::snapsite_exe(),
            lab.stb_cfg.display()
        ),
    );
    add_stream(&pri);
    let cfg = Config::load(&pri).unwrap();
    let mut log = Log::new(&lab.live("redolog"));
    log.append(first);
    lab.ok(&pri, &["snapshot"]);
    lab.ok(&pri, &["ship"]);
    (lab, pri, cfg, log)
}

#[test]
fn btrfs_failover_appends_the_streamed_tail() {
    require_real!();
    let (lab, pri, cfg, mut log) = stream_lab(50);
    let follower = follower::start_follower(&cfg).expect("[stream] is on");
    log.append(30);
    wait_acked(&cfg, jiff::Timestamp::now());
    log.rollover();
    log.append(20);
    wait_acked(&cfg, jiff::Timestamp::now());
    // A redolog snapshot, shipped: the standby's checkpoint drops what it holds.
    let serve_log = lab.dir.path().join("state-stb/serve.log");
    let ok = |args: &[&str]| lab.ok(&pri, args);
    let last_write = checkpoint_then_roll(&cfg, &ok, &serve_log, &mut log, (25, 7));
    let status = lab.ok(&pri, &["status"]);
    assert!(status.contains("stream        lag"), "{status}");
    drop(follower);
    let want = digest(&lab.live("redolog"));
    // The dry run says what the spool would add, and changes nothing.
    let dry: serde_json::Value = serde_json::from_str(&lab.ok(
        &lab.stb_cfg,
        &["failover", "--dry-run", "--no-replay", "--json"],
    ))
    .unwrap();
    let text = lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--no-replay"]);
    assert!(text.contains("the spool would add"), "{text}");
    let journal = lab.dir.path().join("state-stb/spool/journal");
    assert!(journal.exists());
    let out = lab.ok(&lab.stb_cfg, &["failover", "--no-replay", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    for k in ["events_applied", "bytes_applied", "recovery_point"] {
        assert_eq!(
            dry["stream"][k], report["stream"][k],
            "{k}: {dry} / {report}"
        );
    }
    assert!(
        !journal.exists(),
        "the spool is cleared after a completed failover"
    );
    let copy = lab.dir.path().join("mnt-app/redolog");
    assert_eq!(digest(&copy), want, "redolog copy = primary's files");
    let snap_rp: jiff::Timestamp = report["recovery_point"].as_str().unwrap().parse().unwrap();
    let stream_rp = stream_recovery_point(&report, last_write, "failover");
    assert!(stream_rp > snap_rp, "{report}");
    assert!(report["stream"]["events_applied"].as_u64().unwrap() >= 3);
}

#[test]
fn btrfs_failover_no_stream_uses_the_snapshot_alone() {
    require_real!();
    let (lab, _pri, cfg, mut log) = stream_lab(10);
    let snap = digest(&lab.live("redolog"));
    let follower = follower::start_follower(&cfg).unwrap();
    log.append(10);
    wait_acked(&cfg, jiff::Timestamp::now());
    drop(follower);
    let out = lab.ok(
        &lab.stb_cfg,
        &["failover", "--no-replay", "--no-stream", "--json"],
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report.get("stream").is_none(), "{report}");
    assert_eq!(digest(&lab.dir.path().join("mnt-app/redolog")), snap);
}

fn app(file: &str, offset: u64, len: u64) -> SpoolEvent {
    SpoolEvent::Append {
        file: file.into(),
        offset,
        len,
    }
}

/// A spool appending to `redo.log` and creating `archive/redo-1.log`.
fn two_file_spool() -> Standby {
    let stb = standby();
    let (mut c, _, _) = stb.session();
    let m = raw_batch(&mut c, 1, vec![app("redo.log", 0, 4)], b"abcd", None);
    assert_eq!(m, Msg::SpoolAck { seq: 1 });
    let m = raw_batch(
        &mut c,
        2,
        vec![app("archive/redo-1.log", 0, 3), app("redo.log", 4, 2)],
        b"xyzef",
        None,
    );
    assert_eq!(m, Msg::SpoolAck { seq: 2 });
    c.close();
    stb
}

/// Apply to `copy`: must fail within a second naming `want`, leaving the
/// copy (and `outside`) exactly as they were.
fn refused_untouched(stb: &Standby, copy: &Path, outside: &Path, want: &[&str]) {
    let (before, before_out) = (tree_state(copy), tree_state(outside));
    let t = std::time::Instant::now();
    let e = stream_apply::apply_dir(&stb.spool(), copy, jiff::Timestamp::now())
        .unwrap_err()
        .to_string();
    assert!(t.elapsed() < Duration::from_secs(1), "{e}");
    for w in want {
        assert!(e.contains(w), "want `{w}` in: {e}");
    }
    assert_eq!(tree_state(outside), before_out, "{e}");
    assert_eq!(
        tree_state(copy),
        before,
        "the copy must be left as it was: {e}"
    );
}

#[test]
fn failover_apply_refuses_special_files_at_every_component() {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let stb = two_file_spool();
    // A plain empty copy: both files made from the spool.
    let ok = tempfile::tempdir().unwrap();
    let r = stream_apply::apply_dir(&stb.spool(), ok.path(), jiff::Timestamp::now()).unwrap();
    assert_eq!(r.events_applied, 3);
    assert_eq!(
        std::fs::read(ok.path().join("redo.log")).unwrap(),
        b"abcdef"
    );
    assert_eq!(
        std::fs::read(ok.path().join("archive/redo-1.log")).unwrap(),
        b"xyz"
    );
    let mode = Mode::from_bits_truncate(0o600);
    type Setup = fn(&Path, &Path, Mode);
    let cases: Vec<(&str, Setup, Vec<&str>)> = vec![
        (
            "redo.log a FIFO",
            |c, _, m| nix::unistd::mkfifo(&c.join("redo.log"), m).unwrap(),
            vec!["redo.log", "FIFO"],
        ),
        (
            "redo.log a socket",
            |c, _, _| {
                let l = std::os::unix::net::UnixListener::bind(c.join("redo.log")).unwrap();
                std::mem::forget(l);
            },
            vec!["redo.log", "socket"],
        ),
        (
            "redo.log a character device",
            |c, _, m| mknod(&c.join("redo.log"), SFlag::S_IFCHR, m, makedev(1, 3)).unwrap(),
            vec!["redo.log", "character device"],
        ),
        (
            "redo.log a symlink to a file outside",
            |c, o, _| {
                std::fs::write(o.join("victim"), b"ab").unwrap();
                std::os::unix::fs::symlink(o.join("victim"), c.join("redo.log")).unwrap();
            },
            vec!["redo.log", "symbolic link"],
        ),
        (
            "archive a symlink to a directory outside",
            |c, o, _| {
                std::fs::write(c.join("redo.log"), b"abcd").unwrap();
                std::os::unix::fs::symlink(o, c.join("archive")).unwrap();
            },
            vec!["archive", "symbolic link"],
        ),
        (
            "archive/redo-1.log a FIFO",
            |c, _, m| {
                std::fs::write(c.join("redo.log"), b"abcd").unwrap();
                std::fs::create_dir(c.join("archive")).unwrap();
                nix::unistd::mkfifo(&c.join("archive/redo-1.log"), m).unwrap();
            },
            vec!["archive/redo-1.log", "FIFO"],
        ),
        (
            "archive a FIFO",
            |c, _, m| {
                std::fs::write(c.join("redo.log"), b"abcd").unwrap();
                nix::unistd::mkfifo(&c.join("archive"), m).unwrap();
            },
            vec!["archive"],
        ),
    ];
    for (what, setup, want) in cases {
        eprintln!("case: {what}");
        let copy = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        setup(copy.path(), outside.path(), mode);
        refused_untouched(&stb, copy.path(), outside.path(), &want);
    }
}

/// The first defect: `redo.log` a block device node of a disk of
/// the standby (here a loop device over a file of zeros): nothing may be
/// written to it.
#[test]
fn failover_apply_writes_nothing_to_a_block_device() {
    require_real!();
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    let stb = two_file_spool();
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("disk.img");
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    let loopdev = common::sh(&["losetup", "--find", "--show", backing.to_str().unwrap()]);
    let loopdev = loopdev.trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(loopdev.clone());
    let m = std::fs::metadata(&loopdev).unwrap();
    assert!(m.file_type().is_block_device());
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    nix::sys::stat::mknod(
        &copy.join("redo.log"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        m.rdev(),
    )
    .unwrap();
    let outside = tempfile::tempdir().unwrap();
    refused_untouched(&stb, &copy, outside.path(), &["redo.log", "block device"]);
    // Through the device itself (not the page cache of the file).
    assert_device_zeroed(Path::new(&loopdev), 1 << 20);
    assert!(std::fs::read(&backing).unwrap().iter().all(|b| *b == 0));
}

/// The case 3: an ack lost in a quiet spell makes the follower
/// restart the spool (a reset batch: the primary's files by size, no
/// bytes), then `redo.log` rolls over, then the primary dies before the next
/// redolog snapshot. The snapshot is older than the restart: the spool
/// cannot continue it. Failover used to rename the snapshot's `redo.log`
/// into `archive/` and write a new one (a hole with newer redo on top)
/// while reporting the spool unused; now nothing is changed and the report
/// says so, and a snapshot taken after the restart is continued exactly.
#[test]
fn a_spool_restarted_after_the_snapshot_changes_nothing_at_failover() {
    let stb = standby();
    let (mut c, _, _) = stb.session();
    let old = b"0123456789".repeat(12); // the snapshot's redo.log: 120 bytes
    let primary = b"0123456789".repeat(60); // 600 bytes when the ack was lost
    let m = raw_batch(&mut c, 1, vec![app("redo.log", 0, 40)], &old[..40], None);
    assert_eq!(m, Msg::SpoolAck { seq: 1 });
    // The restart: sizes only.
    let base = SpoolEvent::Base {
        file: "redo.log".into(),
        size: primary.len() as u64,
    };
    let m = send_batch(&mut c.r, &mut c.w, 2, true, vec![base], b"", None);
    assert_eq!(m, Msg::SpoolAck { seq: 2 });
    // The rest of redo.log, the rollover, the new redo.log.
    let tail = b"tail of the old log\n";
    let fresh = b"first records of the new log\n".repeat(3);
    let mut data = tail.to_vec();
    data.extend_from_slice(&fresh);
    let m = raw_batch(
        &mut c,
        3,
        vec![
            app("redo.log", primary.len() as u64, tail.len() as u64),
            SpoolEvent::Rename {
                from: "redo.log".into(),
                to: "archive/redo-2.log".into(),
            },
            app("redo.log", 0, fresh.len() as u64),
        ],
        &data,
        None,
    );
    assert_eq!(m, Msg::SpoolAck { seq: 3 });
    c.close();

    // The snapshot from before the restart: refused, the copy untouched.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("archive")).unwrap();
    std::fs::write(copy.path().join("redo.log"), &old).unwrap();
    std::fs::write(copy.path().join("archive/redo-1.log"), b"older").unwrap();
    let before = tree_state(copy.path());
    let e = stream_apply::apply_dir(&stb.spool(), copy.path(), jiff::Timestamp::now())
        .unwrap_err()
        .to_string();
    assert!(e.contains("snapshot alone, unchanged"), "{e}");
    assert!(e.contains("redo.log"), "{e}");
    assert_eq!(tree_state(copy.path()), before, "{e}");

    // A snapshot taken after the restart (before the tail): continued,
    // and the copy then holds exactly the primary's files.
    let copy = tempfile::tempdir().unwrap();
    std::fs::create_dir(copy.path().join("archive")).unwrap();
    std::fs::write(copy.path().join("redo.log"), &primary).unwrap();
    std::fs::write(copy.path().join("archive/redo-1.log"), b"older").unwrap();
    let r = stream_apply::apply_dir(&stb.spool(), copy.path(), jiff::Timestamp::now()).unwrap();
    assert_eq!(r.events_applied, 3);
    assert_eq!(r.bytes_applied, data.len() as u64);
    let mut archived = primary.clone();
    archived.extend_from_slice(tail);
    assert_eq!(
        std::fs::read(copy.path().join("archive/redo-2.log")).unwrap(),
        archived
    );
    assert_eq!(std::fs::read(copy.path().join("redo.log")).unwrap(), fresh);
    assert!(!copy.path().join(stream_apply::SCRATCH).exists());
}

/// Case 3 on real btrfs, through `snapsite serve --stdio` and `snapsite
/// failover`: the spool restarted (as after a lost ack) at sizes the
/// redolog snapshot does not reach, then the rest of `redo.log`, a rollover
/// and new writes, then the primary is gone. Failover must leave the
/// redolog copy exactly the snapshot's content and say the spool was not
/// used; the reported recovery point is the snapshot's.
#[test]
fn btrfs_failover_with_a_spool_restarted_after_the_snapshot_keeps_the_snapshot() {
    require_real!();
    let lab = common::Lab::new("[\"/bin/true\"]");
    add_stream(&lab.stb_cfg);
    add_stream(&lab.pri_cfg);
    let pcfg = Config::load(&lab.pri_cfg).unwrap();
    let live = lab.live("redolog");
    let mut log = Log::new(&live);
    log.append(50);
    let set = lab.snapshot(false);
    let id = set["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    let snap_digest = digest(&lab.standby_snap("redolog", &id));
    // The primary goes on; the follower's ack is lost in a quiet spell; it
    // restarts the spool at the sizes it then finds (the shape: the
    // snapshot's redo.log is shorter than the restart's).
    log.append(40);
    let restart_size = std::fs::metadata(live.join("redo.log")).unwrap().len();
    log.rollover();
    log.append(5);
    let fresh = std::fs::read(live.join("redo.log")).unwrap();
    let archived = format!("archive/redo-{:08}.log", log.n);
    let mut child = std::process::Command::new(common::snapsite_exe())
        .args(["serve", "--stdio", "--config"])
        .arg(&lab.stb_cfg)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = Writer::new(child.stdin.take().unwrap());
    let mut r = Reader::new(child.stdout.take().unwrap());
    follower::spool_handshake(&pcfg, &mut r, &mut w).unwrap();
    let base = SpoolEvent::Base {
        file: "redo.log".into(),
        size: restart_size,
    };
    let m = send_batch(&mut r, &mut w, 1, true, vec![base], b"", None);
    assert_eq!(m, Msg::SpoolAck { seq: 1 });
    let data = fresh.clone();
    let events = vec![
        SpoolEvent::Rename {
            from: "redo.log".into(),
            to: archived.clone(),
        },
        app("redo.log", 0, fresh.len() as u64),
    ];
    let m = send_batch(&mut r, &mut w, 2, false, events, &data, None);
    assert_eq!(m, Msg::SpoolAck { seq: 2 });
    w.msg(&Msg::Bye).unwrap();
    drop(w);
    assert!(child.wait().unwrap().success());

    let text = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(
        text.contains("the spool would not be used") && text.contains("redo.log"),
        "{text}"
    );
    let out = lab.ok(&lab.stb_cfg, &["failover", "--no-replay", "--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let copy = lab.dir.path().join("mnt-app/redolog");
    assert_eq!(
        digest(&copy),
        snap_digest,
        "the copy is the snapshot: {report}"
    );
    let not_used = report["stream"]["not_used"].as_str().unwrap_or_default();
    assert!(
        not_used.contains("snapshot alone, unchanged") && not_used.contains("redo.log"),
        "{report}"
    );
    assert!(report["stream"]["recovery_point"].is_null(), "{report}");
    assert_eq!(report["stream"]["events_applied"], 0, "{report}");
}

/// A fault planned on one direction of a spool session: after `at` more
/// bytes, flip one bit or cut the connection (both directions).
#[derive(Clone, Copy, Debug)]
struct Fault {
    at: usize,
    flip: Option<u8>,
}

type Plan = std::sync::Arc<std::sync::Mutex<Option<Fault>>>;

/// The follower's end of the socket with a fault injector: writes are the
/// primary-to-standby direction, reads the other.
struct Faulty {
    s: UnixStream,
    plan: Plan,
}

impl Faulty {
    /// How much of `n` bytes passes before the fault, if it falls in them.
    fn hit(&self, n: usize) -> Option<(usize, Fault)> {
        let mut p = self.plan.lock().unwrap();
        match *p {
            Some(f) if f.at < n => {
                *p = None;
                Some((f.at, f))
            }
            Some(ref mut f) => {
                f.at -= n;
                None
            }
            None => None,
        }
    }
}

impl std::io::Read for Faulty {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.s.read(buf)?;
        match self.hit(n) {
            Some((k, Fault { flip: Some(b), .. })) => {
                buf[k] ^= 1 << b;
                Ok(n)
            }
            Some((k, Fault { flip: None, .. })) => {
                let _ = self.s.shutdown(std::net::Shutdown::Both);
                Ok(k)
            }
            None => Ok(n),
        }
    }
}

impl std::io::Write for Faulty {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.hit(buf.len()) {
            Some((k, Fault { flip: Some(b), .. })) => {
                let mut v = buf.to_vec();
                v[k] ^= 1 << b;
                self.s.write_all(&v)?;
                Ok(buf.len())
            }
            Some((k, Fault { flip: None, .. })) => {
                self.s.write_all(&buf[..k])?;
                let _ = self.s.shutdown(std::net::Shutdown::Both);
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            None => self.s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

struct FaultyConn {
    r: Reader<Faulty>,
    w: Writer<Faulty>,
    up: Plan,
    down: Plan,
    serve: JoinHandle<snapsite::Result<()>>,
}

impl Standby {
    /// A spool session through fault injectors (idle until planned).
    fn faulty_session(&self) -> (FaultyConn, u64, Vec<snapsite::wire::stream::SpoolFileState>) {
        let (sock, serve) = self.spawn_serve();
        let (up, down) = (Plan::default(), Plan::default());
        let mut fc = FaultyConn {
            w: Writer::new(Faulty {
                s: sock.try_clone().unwrap(),
                plan: up.clone(),
            }),
            r: Reader::new(Faulty {
                s: sock,
                plan: down.clone(),
            }),
            up,
            down,
            serve,
        };
        let (seq, files) = follower::spool_handshake(&self.cfg, &mut fc.r, &mut fc.w).unwrap();
        (fc, seq, files)
    }
}

/// Issue 22 item 5: 20 random cuts and bit flips of the spool session, in
/// either direction (a flip is caught by the frame checks: the session
/// ends), among appends and rollovers, one of them a lost ack right before a
/// rollover. After each the follower reconnects and must continue the spool
/// (at least 15 of 20; the follower's own record of the batch in flight
/// proves a lost ack), and the spool stays byte-exact: applied to a btrfs
/// snapshot of the primary's files taken at the start, it gives the
/// primary's files.
#[test]
fn btrfs_spool_resumes_after_cuts_and_flips_in_either_direction() {
    require_real!();
    let t0 = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let fs = common::BtrfsFs::new(tmp.path(), "fs", "256M");
    let root = fs.path("redolog");
    common::sh(&["btrfs", "-q", "subvolume", "create", root.to_str().unwrap()]);
    let stb = standby_in(tempfile::tempdir_in(&fs.mnt).unwrap());
    let mut log = Log::new(&root);
    log.append(40);
    let mut rng: u64 = std::env::var("SPOOL_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2205);
    eprintln!("SPOOL_FAULT_SEED={rng}");
    let mut rand = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut f = Follower::new(root.clone(), redostream_globs());
    let mut rec = FollowerRecord::default();
    let (mut c, seq, files) = stb.faulty_session();
    assert!(!f.resume_recorded(seq, &files, &mut rec).unwrap());
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    // The redolog snapshot: at the spool's base.
    let snap = fs.path("snap");
    common::subvolume_snapshot(&root, &snap, false);
    let snap_time = jiff::Timestamp::now();
    let mut kinds = BTreeMap::new();
    for i in 0..20 {
        let up = rand(2) == 0;
        let flip = (rand(2) == 0).then(|| rand(8) as u8);
        // Primary-to-standby: somewhere in the next batch; standby-to-primary:
        // somewhere in the next acks (an ack is about 60 bytes).
        let mut at = if up { rand(3000) } else { rand(150) } as usize;
        let lost_ack_before_rollover = i == 7;
        let (up, flip) = if lost_ack_before_rollover {
            at = 0;
            (false, None)
        } else {
            (up, flip)
        };
        *kinds
            .entry(format!(
                "{}-{}",
                if up { "up" } else { "down" },
                if flip.is_some() { "flip" } else { "cut" }
            ))
            .or_insert(0) += 1;
        *(if up { &c.up } else { &c.down }).lock().unwrap() = Some(Fault { at, flip });
        // Write and flush until the fault strikes.
        loop {
            log.append(1 + rand(30) as usize);
            if rand(5) == 0 && !lost_ack_before_rollover {
                log.rollover();
            }
            match f.flush(&mut c.r, &mut c.w, &mut rec) {
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        if lost_ack_before_rollover {
            log.rollover();
            log.append(3);
        }
        drop(c.r);
        drop(c.w);
        let _ = c.serve.join().unwrap();
        let (nc, seq, files) = stb.faulty_session();
        c = nc;
        let resumed = f.resume_recorded(seq, &files, &mut rec).unwrap();
        if lost_ack_before_rollover {
            assert!(resumed, "a lost ack before a rollover is resumed");
        }
    }
    log.append(5);
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    drop(c.r);
    drop(c.w);
    c.serve.join().unwrap().unwrap();
    eprintln!(
        "faults {kinds:?}: {} resumes, {} restarts, {} resets, {} batches",
        rec.resumes, rec.restarts, rec.resets, rec.batches
    );
    assert!(rec.resumes >= 15, "{rec:?}");
    assert_eq!(rec.resets, 1 + rec.restarts, "{rec:?}");
    // Failover's apply on the snapshot: the primary's files exactly.
    let r = stream_apply::apply_dir(&stb.spool(), &snap, snap_time).unwrap();
    assert!(r.not_used.is_none(), "{r:?}");
    let want = digest(&root);
    assert!(want.len() > 2, "rollovers happened: {want:?}");
    assert_eq!(digest(&snap), want);
    let pending: u64 = want
        .keys()
        .map(|k| std::fs::metadata(root.join(k)).unwrap().len())
        .sum::<u64>();
    assert!(r.bytes_applied > 0 && r.bytes_applied < pending, "{r:?}");
    eprintln!("took {:?}", t0.elapsed());
}

/// The follower's rule (issue 22 item 5): a batch the standby refuses is
/// sent again; refused three times in a row, the spool starts over from the
/// primary's files. The refusals here are the standby's own: its spool was
/// rewritten under the session (a base one byte short of what the
/// follower holds, as a spool damaged on the standby would be), so every
/// append the follower sends fails the offset check. After the third the
/// follower restarts the spool (counted once), and the restarted spool is
/// byte-exact: applied to the files it restarted from, it gives the
/// primary's files.
#[test]
fn three_refusals_in_a_row_restart_the_spool() {
    let stb = standby();
    let (_pri, root, mut log) = primary_log(30);
    let (mut c, seq, files) = stb.session();
    let mut f = Follower::new(root.clone(), redostream_globs());
    let mut rec = FollowerRecord::default();
    assert!(!f.resume_recorded(seq, &files, &mut rec).unwrap());
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    log.append(10);
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    assert_eq!((rec.resets, rec.restarts), (1, 0), "{rec:?}");
    // The standby's spool replaced (a new file, as a checkpoint writes it):
    // one base record, `redo.log` a byte shorter, the same last batch.
    let size = std::fs::metadata(root.join("redo.log")).unwrap().len();
    let meta = serde_json::json!({
        "rec": "base",
        "seq": rec.acked_seq,
        "as_of": null,
        "files": [{"file": "redo.log", "size": size - 1, "tail_len": 0}],
    });
    let meta = serde_json::to_vec(&meta).unwrap();
    let original = std::fs::read(stb.spool().join("journal")).unwrap();
    let mut journal = Vec::new();
    journal.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    journal.extend_from_slice(&0u64.to_be_bytes());
    journal.extend_from_slice(&meta);
    let check = blake3::hash(&journal);
    journal.extend_from_slice(check.as_bytes());
    let tmp = stb.spool().join("journal.doctored");
    std::fs::write(&tmp, &journal).unwrap();
    std::fs::rename(&tmp, stb.spool().join("journal")).unwrap();
    log.append(5);
    for i in 1..=3 {
        let e = f
            .flush(&mut c.r, &mut c.w, &mut rec)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refused") && e.contains(&format!("holds it up to {}", size - 1)),
            "refusal {i}: {e}"
        );
        assert_eq!(rec.restarts, 0, "refusal {i}: {rec:?}");
    }
    // Each refusal ends the session in `follow`, which reconnects. Here the
    // standby's journal is its own again, so its files would prove
    // continuity; after three refusals in a row the follower starts over
    // all the same.
    c.close();
    std::fs::write(&tmp, &original).unwrap();
    std::fs::rename(&tmp, stb.spool().join("journal")).unwrap();
    let (mut c, seq, files) = stb.session();
    assert!(
        !f.resume_recorded(seq, &files, &mut rec).unwrap(),
        "resumed after three refusals: {rec:?}"
    );
    // The files the restart starts from (what a redolog snapshot taken now
    // would hold).
    let from = tempfile::tempdir().unwrap();
    copy_tree(&root, from.path());
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    assert_eq!((rec.resets, rec.restarts), (2, 1), "{rec:?}");
    log.append(12);
    log.rollover();
    log.append(4);
    while !f.flush(&mut c.r, &mut c.w, &mut rec).unwrap() {}
    assert_eq!(rec.restarts, 1, "{rec:?}");
    c.close();
    let r = stream_apply::apply_dir(&stb.spool(), from.path(), jiff::Timestamp::now()).unwrap();
    assert!(r.not_used.is_none() && r.events_applied >= 3, "{r:?}");
    assert_eq!(
        digest(from.path()),
        digest(&root),
        "spool + restart point = primary"
    );
}
