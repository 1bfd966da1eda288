//! A hostile primary (whoever holds its ssh key) speaks the protocol to
//! `snapsite serve --stdio` on the standby and sends streams built to hurt
//! it (issue 10, item 1): ZFS replication packages with child datasets and
//! mount/exec/reservation properties, streams of another snapshot than the
//! one announced; LVM streams declaring a 1 PiB device, zeroing 1 PiB, or
//! filling the thin pool. Each must be refused (nack) promptly, leave
//! nothing behind (datasets, snapshots, resume state, pool blocks), leave
//! the replica's properties as they were, and the legitimate ship after it
//! must still go incrementally.
//!
//! The tests speak the protocol only through the library
//! (`snapsite::wire::stream::{Writer, Reader, Msg}`), never by hand-encoded frames.

use super::*;
use crate::output::sent;

use std::process::{ChildStdin, ChildStdout};

use snapsite::wire::stream::{MAX_DATA_FRAME, Msg, PROTOCOL_VERSION, Reader, Writer};

/// One `snapsite serve --stdio` session, driven as the intruder.
struct Session {
    child: Child,
    w: Writer<ChildStdin>,
    r: Reader<ChildStdout>,
}

impl Session {
    fn open(stb_cfg: &Path, log: &Path) -> Session {
        let mut child = Command::new(snapsite_bin())
            .args(["serve", "--stdio", "--config"])
            .arg(stb_cfg)
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(File::create(log).expect("serve log")))
            .spawn()
            .expect("start snapsite serve");
        let mut w = Writer::new(child.stdin.take().expect("stdin"));
        let mut r = Reader::new(child.stdout.take().expect("stdout"));
        w.magic().unwrap();
        w.msg(&Msg::Hello {
            protocol: PROTOCOL_VERSION,
            site: "intruder".into(),
            version: "0".into(),
            since: None,
        })
        .unwrap();
        w.flush().unwrap();
        r.magic().unwrap();
        match r.msg().unwrap() {
            Msg::Welcome { .. } => {}
            other => panic!("expected welcome, got {other:?}"),
        }
        Session { child, w, r }
    }

    /// Announce snapshot `snapshot` of `role` (incremental from `base`),
    /// send `data` with a correct trailer, and return the standby's answer
    /// and how long it took from the first byte.
    fn send(
        &mut self,
        role: &str,
        snapshot: &str,
        base: Option<&str>,
        data: &[u8],
    ) -> (Msg, Duration) {
        let start = Instant::now();
        self.w
            .msg(&Msg::Begin {
                set_id: snapshot.into(),
                role: role.into(),
                snapshot: snapshot.into(),
                base: base.map(str::to_string),
                storage_id: None,
                resume: false,
            })
            .unwrap();
        for chunk in data.chunks(MAX_DATA_FRAME) {
            self.w.data(chunk).unwrap();
        }
        self.w
            .msg(&Msg::End {
                bytes: data.len() as u64,
                blake3: blake3::hash(data).to_hex().to_string(),
            })
            .unwrap();
        let reply = self.r.msg().unwrap();
        (reply, start.elapsed())
    }

    fn close(mut self) {
        self.w.msg(&Msg::Bye).unwrap();
        drop(self.w);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }
}

/// The reply must be a nack whose error contains `needle`.
fn assert_nack(reply: &Msg, needle: &str) {
    match reply {
        Msg::Nack { error, .. } => {
            eprintln!("refused as expected: {error}");
            assert!(
                error.contains(needle),
                "nack does not say `{needle}`: {error}"
            );
        }
        other => panic!("a hostile stream was not refused: {other:?}"),
    }
}

/// Stdout of `argv`, which must succeed (a `zfs send`).
fn capture(argv: &[&str]) -> Vec<u8> {
    let out = run(argv);
    assert!(
        out.status.success(),
        "`{argv:?}` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

// ---------------------------------------------------------------------------
// ZFS

/// Everything under pool `pool`: datasets, snapshots, with the properties
/// that matter.
fn zfs_tree(pool: &str) -> String {
    sh(&[
        "zfs",
        "list",
        "-H",
        "-t",
        "all",
        "-r",
        "-o",
        "name,readonly,canmount,mountpoint,exec,setuid,devices,refreservation,receive_resume_token",
        pool,
    ])
}

#[test]
fn hostile_zfs_streams_are_refused_before_zfs_receive() {
    require_lab!();
    let lab = ZfsSites::new("h", 256 * MIB, 256 * MIB);
    lab.live_container();
    let (a, c, dir) = (&lab.a, &lab.c, &lab.dir);
    let roles = ["mysql", "redolog"];
    let (mut pri, mut stb) = (String::new(), String::new());
    for r in roles {
        sh(&["zfs", "create", &a.dataset(r)]);
        // A child only replication packages (-R) would carry.
        let kid_mp = dir.join(format!("evil-{r}"));
        sh(&[
            "zfs",
            "create",
            "-o",
            "canmount=on",
            "-o",
            &format!("mountpoint={}", kid_mp.display()),
            &a.dataset(&format!("{r}/kid")),
        ]);
        write_pattern(
            &zfs_mountpoint(&a.dataset(r)).join("data"),
            0,
            7,
            MIB as usize,
        );
        pri.push_str(&lab.primary_volume(r, ""));
        let mp = dir.join("app").join(r);
        stb.push_str(&lab.standby_volume_live_at(r, &format!("live/{r}"), Some(&mp)));
    }
    let replay = "[replay]\ncommand = [\"/bin/true\", \"{from_time}\"]\n";
    let (pri_cfg, stb_cfg) = site_configs(dir, &pri, &stb, replay, Standby::Local(""), "");
    let log = dir.join("serve.log");
    let src = |r: &str| a.dataset(r);
    let replica = |r: &str| c.dataset(&format!("replica/{r}"));

    let s1 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    for r in roles {
        sh(&["zfs", "snapshot", &format!("{}/kid@{s1}", src(r))]);
    }

    // --- Full streams, before the standby holds anything.
    let before = zfs_tree(&c.name);
    let mut s = Session::open(&stb_cfg, &log);
    // -R: the child would come with canmount=on and its own mountpoint.
    let stream = capture(&["zfs", "send", "-R", &format!("{}@{s1}", src("redolog"))]);
    assert_nack(
        &s.send("redolog", &s1, None, &stream).0,
        "replication package",
    );
    assert_eq!(zfs_tree(&c.name), before, "full -R left something");
    // -p with a refreservation that would take most of the standby pool.
    sh(&["zfs", "set", "refreservation=100M", &src("redolog")]);
    let stream = capture(&["zfs", "send", "-p", &format!("{}@{s1}", src("redolog"))]);
    sh(&["zfs", "set", "refreservation=none", &src("redolog")]);
    assert_nack(
        &s.send("redolog", &s1, None, &stream).0,
        "replication package",
    );
    assert_eq!(zfs_tree(&c.name), before, "full -p left something");
    // A plain full stream of another snapshot than the one announced.
    sh(&["zfs", "snapshot", &format!("{}@evil", src("redolog"))]);
    let stream = capture(&["zfs", "send", &format!("{}@evil", src("redolog"))]);
    assert_nack(&s.send("redolog", &s1, None, &stream).0, "carries snapshot");
    assert_eq!(zfs_tree(&c.name), before, "wrong-name full left something");
    assert!(!zfs_exists(&replica("redolog")));
    s.close();

    // The legitimate first full receive of every volume still works.
    let report = snapsite_json(&pri_cfg, &["ship", "--json"]);
    assert_eq!(report["committed"][0], s1.as_str());
    let want_props = [
        ("readonly", "on"),
        ("canmount", "noauto"),
        ("mountpoint", "none"),
        ("exec", "off"),
        ("setuid", "off"),
        ("devices", "off"),
        ("refreservation", "0"),
    ];
    for r in roles {
        for (p, v) in want_props {
            assert_eq!(zfs_get(p, &replica(r)), v, "{r}: replica {p}");
        }
        assert!(!zfs_exists(&format!("{}/kid", replica(r))));
    }

    // --- Incremental streams from the real base.
    write_pattern(
        &zfs_mountpoint(&src("mysql")).join("data2"),
        0,
        8,
        MIB as usize,
    );
    let s2 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    sh(&["zfs", "snapshot", &format!("{}/kid@{s2}", src("mysql"))]);
    sh(&["zfs", "set", "refreservation=100M", &src("mysql")]);
    let base_snap = format!("@{s1}");
    let to = format!("{}@{s2}", src("mysql"));
    let props_inc = capture(&["zfs", "send", "-p", "-i", &base_snap, &to]);
    let repl_inc = capture(&["zfs", "send", "-R", "-i", &base_snap, &to]);
    sh(&["zfs", "set", "refreservation=none", &src("mysql")]);
    sh(&["zfs", "snapshot", &format!("{}@evil", src("mysql"))]);
    let wrong_name = capture(&[
        "zfs",
        "send",
        "-i",
        &base_snap,
        &format!("{}@evil", src("mysql")),
    ]);
    let full_as_inc = capture(&["zfs", "send", &to]);
    let before = zfs_tree(&c.name);
    let mut s = Session::open(&stb_cfg, &log);
    for (what, stream, needle) in [
        ("-p -i", &props_inc, "replication package"),
        ("-R -i", &repl_inc, "replication package"),
        ("wrong snapshot name", &wrong_name, "carries snapshot"),
        (
            "full stream announced as incremental",
            &full_as_inc,
            "is a full stream",
        ),
    ] {
        eprintln!("hostile incremental: {what} ({} bytes)", stream.len());
        let (reply, took) = s.send("mysql", &s2, Some(&s1), stream);
        assert_nack(&reply, needle);
        eprintln!("  answered in {took:?}");
        assert_eq!(zfs_tree(&c.name), before, "{what} left something");
    }
    s.close();

    // What `zfs receive` does with the overrides alone (defence in depth,
    // behind the header check): a -p stream's properties do not win.
    let probe_ds = c.dataset("probe");
    let mut recv = vec!["zfs", "receive", "-u"];
    recv.extend_from_slice(snapsite::backend::zfs::RECEIVE_OVERRIDES);
    recv.push(&probe_ds);
    pipe(&["zfs", "send", &format!("{}@{s1}", src("mysql"))], &recv);
    let mut child = command(&recv).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(&props_inc).unwrap();
    assert!(child.wait().unwrap().success());
    for (p, v) in want_props {
        assert_eq!(
            zfs_get(p, &probe_ds),
            v,
            "-p stream received with overrides: {p}"
        );
    }
    sh(&["zfs", "destroy", "-r", &probe_ds]);

    // The legitimate ship still goes incrementally from the common base.
    let report = snapsite_json(&pri_cfg, &["ship", "--json"]);
    assert_eq!(report["committed"][0], s2.as_str());
    let mysql = sent(&report, "mysql");
    assert_eq!(mysql["base"], s1.as_str());
    for (p, v) in want_props {
        assert_eq!(zfs_get(p, &replica("mysql")), v, "after incremental: {p}");
    }

    // Failover's clone is usable: writable, mounted where configured, and
    // executable (its properties come from its parent, not the replica).
    let rep = snapsite_json(&stb_cfg, &["failover", "--json"]);
    assert_eq!(rep["plan"]["set_id"], s2.as_str());
    let live = c.dataset("live/mysql");
    assert_eq!(zfs_get("exec", &live), "on");
    assert_eq!(zfs_get("readonly", &live), "off");
    let mp = dir.join("app/mysql");
    assert_eq!(zfs_mountpoint(&live), mp);
    assert_pattern(&mp.join("data2"), 0, 8, MIB as usize);
    std::fs::copy("/bin/true", mp.join("true")).unwrap();
    sh(&[mp.join("true").to_str().unwrap()]);
    assert_eq!(zfs_get("exec", &replica("mysql")), "off");
    let _ = run(&["zfs", "destroy", "-r", &c.dataset("live")]);
}

// ---------------------------------------------------------------------------
// LVM

use snapsite::backend::lvm::{Header, MAGIC, RecordHash, StreamKind, VERSION};

/// A snapsite LVM stream built by hand: header, `W`/`Z` records, end.
fn lvm_stream(header: &Header, writes: &[(u64, Vec<u8>)], zeros: &[(u64, u64)]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut s = MAGIC.to_vec();
    s.extend_from_slice(&(json.len() as u32).to_be_bytes());
    s.extend_from_slice(&json);
    let mut h = RecordHash::default();
    for (off, data) in writes {
        s.push(b'W');
        s.extend_from_slice(&off.to_be_bytes());
        s.extend_from_slice(&(data.len() as u32).to_be_bytes());
        s.extend_from_slice(data);
        h.write(*off, data);
    }
    for (off, len) in zeros {
        s.push(b'Z');
        s.extend_from_slice(&off.to_be_bytes());
        s.extend_from_slice(&len.to_be_bytes());
        h.zero(*off, *len);
    }
    s.push(b'E');
    s.extend_from_slice(&h.data_bytes.to_be_bytes());
    s.extend_from_slice(&h.finish());
    s
}

/// `used/total` data blocks of a thin pool, from `dmsetup status`.
fn pool_data(vg: &VolumeGroup) -> (u64, u64) {
    let st = sh(&["dmsetup", "status", &format!("{}-pool-tpool", vg.name)]);
    let f: Vec<&str> = st.split_whitespace().collect();
    let (u, t) = f[5].split_once('/').unwrap();
    (u.parse().unwrap(), t.parse().unwrap())
}

fn lv_names(vg: &VolumeGroup) -> String {
    sh(&["lvs", "--noheadings", "-o", "lv_name,lv_size", &vg.name])
}

const PIB: u64 = 1 << 50;

#[test]
fn hostile_lvm_streams_are_refused_promptly_and_release_the_pool() {
    require_lab!();
    let lab = LvmSites::sized("hl", (512 * MIB, "384M"), (128 * MIB, "64M"));
    let (pri, stb, dir) = (&lab.pri, &lab.stb, &lab.dir);
    let lv_size = 64 * MIB;
    lab.primary_thin("mysql", &format!("{lv_size}b"));
    write_pattern(&pri.dev("mysql"), 0, 21, 4 * MIB as usize);
    let set = "[set]\nredolog = \"mysql\"\n";
    let (pri_cfg, stb_cfg) = site_configs(
        dir,
        &format!("{}{set}", lab.primary_volume("mysql", "")),
        &lab.standby_volume("mysql", None),
        &format!("{set}[replay]\ncommand = [\"/bin/true\", \"{{from_time}}\"]\n"),
        Standby::Local(""),
        "",
    );
    let log = dir.join("serve.log");

    let s1 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    snapsite_ok(&pri_cfg, &["ship"]);
    let (used0, total) = pool_data(stb);
    let lvs0 = lv_names(stb);
    eprintln!("standby pool after the first ship: {used0}/{total} blocks");
    let evil = "20991231T235959.000Z-full";
    let header = |kind, size, base: Option<&str>| Header {
        version: VERSION,
        kind,
        size,
        block_size: 65536,
        snapshot: evil.into(),
        storage_id: None,
        base: base.map(str::to_string),
        base_storage_id: None,
        resume: None,
        overwritten: None,
    };
    let full_pib = header(StreamKind::Full, PIB, None);
    let inc = |size| header(StreamKind::Incremental, size, Some(&s1));
    // ~1 MB of 512-byte writes, one per 64 KiB pool block, over 120 MiB
    // (within the default max_size, the 124 MiB VG): unchecked, they would
    // allocate 120 MiB in a 64 MiB pool.
    let fill_size = 120 * MIB;
    let fill: Vec<(u64, Vec<u8>)> = (0..fill_size / 65536)
        .map(|k| (k * 65536, pattern(k, 512)))
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "full stream declaring a 1 PiB device",
            lvm_stream(&full_pib, &[(0, pattern(1, 4096))], &[]),
            "more than",
        ),
        (
            "incremental declaring a 1 PiB device",
            lvm_stream(&inc(PIB), &[], &[]),
            "more than",
        ),
        (
            "a zero record over 1 PiB of a 1 PiB device",
            lvm_stream(&inc(PIB), &[], &[(0, PIB)]),
            "more than",
        ),
        (
            "a zero record over 1 PiB of the real device",
            lvm_stream(&inc(lv_size), &[], &[(0, PIB)]),
            "beyond the device",
        ),
        (
            "small writes filling the pool",
            lvm_stream(&inc(fill_size), &fill, &[]),
            "would pass 90%",
        ),
    ];
    let mut s = Session::open(&stb_cfg, &log);
    for (what, stream, needle) in &cases {
        eprintln!("hostile LVM stream: {what} ({} bytes)", stream.len());
        let (reply, took) = s.send("mysql", evil, Some(&s1), stream);
        eprintln!("  answered in {took:?}");
        assert_nack(&reply, needle);
        assert!(
            took < Duration::from_secs(60),
            "{what}: the answer took {took:?}"
        );
        let (used, _) = pool_data(stb);
        assert_eq!(used, used0, "{what}: pool blocks not released");
        assert_eq!(lv_names(stb), lvs0, "{what}: LVs changed");
    }
    s.close();
    // The full stream was announced without a base: also refused.
    let mut s = Session::open(&stb_cfg, &log);
    let (reply, _) = s.send("mysql", evil, None, &cases[0].1);
    assert_nack(&reply, "more than");
    s.close();
    assert_eq!(pool_data(stb).0, used0);

    // The legitimate ship goes on incrementally.
    write_pattern(&pri.dev("mysql"), 8 * MIB, 22, MIB as usize);
    let s2 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    let report = snapsite_json(&pri_cfg, &["ship", "--json"]);
    assert_eq!(report["committed"][0], s2.as_str());
    assert_eq!(report["snapshots"][0]["base"], s1.as_str());
    let got = stb.dev(&format!("mysql.{s2}"));
    sh(&["lvchange", "-ay", "-K", &stb.lv(&format!("mysql.{s2}"))]);
    assert_pattern(&got, 0, 21, 4 * MIB as usize);
    assert_pattern(&got, 8 * MIB, 22, MIB as usize);

    // `check` reports a standby pool too full for failover's copies.
    let out = snapsite_ok(&stb_cfg, &["check"]);
    assert!(!out.contains("% full"), "{out}");
    thin_lv(stb, "filler", "60M");
    let (used, total) = pool_data(stb);
    let fill_to = (total * 92 / 100).saturating_sub(used) * 65536;
    write_pattern(&stb.dev("filler"), 0, 23, fill_to as usize);
    let out = snapsite_ok(&stb_cfg, &["check"]);
    eprintln!("{out}");
    assert!(
        out.contains("warning: thin pool") && out.contains("% full"),
        "{out}"
    );
    sh(&["lvremove", "-y", &stb.lv("filler")]);
}
