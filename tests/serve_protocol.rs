//! The standby's `serve` in process, over a socket pair, with the in-memory
//! store: every refusal and fault path of the protocol in milliseconds,
//! without root. (Real storage is proven by tests/btrfs.rs, tests/hostile.rs
//! and the VM suite; this is the fast layer over the protocol logic.)

mod common;

use std::os::unix::net::UnixStream;
use std::time::Duration;

use snapsite::base::model::{Manifest, SetKind, new_set_id};
use snapsite::wire::stream::{Msg, Reader, Writer};

use common::memsite::{MemSite as Site, begin, end, handshake, hello, payload, storage_id};

const ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];

/// A Begin made a resume of a cut receive.
fn resume(mut begin: Msg) -> Msg {
    let Msg::Begin { resume, .. } = &mut begin else {
        panic!("not a Begin: {begin:?}")
    };
    *resume = true;
    begin
}

fn site() -> Site {
    Site::new(&ROLES)
}

fn set_id(kind: SetKind, secs: i64) -> String {
    new_set_id(
        jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap(),
        kind,
    )
}

/// `memsite::manifest`, of the kind the id says (checked).
fn manifest(
    id: &str,
    kind: SetKind,
    roles: &[&str],
    stream_of: &dyn Fn(&str) -> Vec<u8>,
) -> Manifest {
    let m = common::memsite::manifest(id, roles, stream_of);
    assert_eq!(m.kind, kind, "{id}");
    m
}

/// A full set shipped honestly: every member acked, the commit accepted.
fn ship_full(site: &Site, secs: i64) -> String {
    let id = set_id(SetKind::Full, secs);
    let (mut s, _) = site.hello();
    for r in ROLES {
        let reply = s.send(&id, r, &payload(&id, r), true);
        assert!(matches!(reply, Msg::Ack { .. }), "{reply:?}");
    }
    let m = manifest(&id, SetKind::Full, &ROLES, &|r| payload(&id, r));
    assert!(matches!(s.commit(&m).unwrap(), Msg::Committed { .. }));
    s.bye().unwrap();
    id
}

#[test]
fn honest_session_commits_with_the_standby_receipts() {
    let site = site();
    let id = ship_full(&site, 0);
    assert_eq!(site.manifests(), vec![id.clone()]);
    let m = &site.catalog().manifests().unwrap()[0];
    assert!(m.committed_at.is_some());
    assert!(m.members.iter().all(|x| {
        x.receipt
            .as_ref()
            .is_some_and(|r| r.set_id.as_deref() == Some(id.as_str()))
    }));
    let (s, welcome) = site.hello();
    match welcome {
        Msg::Welcome {
            committed, volumes, ..
        } => {
            assert_eq!(committed, vec![id.clone()]);
            assert!(volumes.iter().all(|v| v.snapshots == [id.clone()]));
        }
        other => panic!("{other:?}"),
    }
    s.bye().unwrap();
    assert!(site.lock_is_free());
    let log = std::fs::read_to_string(site.cfg.state_dir.join("serve.log")).unwrap();
    assert!(log.contains("committed"), "{log}");
}

#[test]
fn refused_begins_are_nacked_and_the_stream_stays_in_sync() {
    let site = site();
    let id = set_id(SetKind::Full, 0);
    let redo = set_id(SetKind::Redolog, 1);
    let (mut s, _) = site.hello();
    let cases: Vec<(String, String, String)> = vec![
        (id.clone(), "search".into(), id.clone()), // unknown volume
        (id.clone(), "mysql".into(), set_id(SetKind::Full, 5)), // not named after its set
        (redo.clone(), "mysql".into(), redo.clone()), // redolog set, other volume
        (
            "../../etc-full".into(),
            "mysql".into(),
            "../../etc-full".into(),
        ),
        ("x\n\u{1b}[31m".into(), "mysql".into(), "x".into()),
    ];
    for (set, role, snap) in cases {
        s.w.msg(&Msg::Begin {
            set_id: set.clone(),
            role: role.clone(),
            snapshot: snap,
            base: None,
            storage_id: Some("abc".into()),
            resume: false,
        })
        .unwrap();
        s.w.data(b"junk").unwrap();
        s.w.msg(&Msg::End {
            bytes: 4,
            blake3: "x".into(),
        })
        .unwrap();
        let reply = s.r.msg().unwrap();
        assert!(matches!(reply, Msg::Nack { .. }), "{set} {role}: {reply:?}");
    }
    // Still in sync: an honest member goes through.
    assert!(matches!(
        s.send(&id, "mysql", &payload(&id, "mysql"), true),
        Msg::Ack { .. }
    ));
    s.bye().unwrap();
    let log = std::fs::read_to_string(site.cfg.state_dir.join("serve.log")).unwrap();
    assert!(log.contains("`search` is not configured"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no raw escape from the wire in the log"
    );
    assert_eq!(log.lines().count(), log.matches('\n').count());
}

#[test]
fn checksum_mismatch_and_wrong_stream_leave_nothing() {
    let site = site();
    let id = set_id(SetKind::Full, 0);
    let (mut s, _) = site.hello();
    assert!(matches!(
        s.send(&id, "mysql", &payload(&id, "mysql"), false),
        Msg::Nack { .. }
    ));
    // A stream of another snapshot than announced.
    let other = set_id(SetKind::Full, 9);
    assert!(matches!(
        s.send(&id, "blob", &payload(&other, "blob"), true),
        Msg::Nack { .. }
    ));
    s.bye().unwrap();
    assert!(site.store.names("mysql").is_empty() && site.store.names("blob").is_empty());
    assert_eq!(site.store.0.lock().unwrap().open_receives, 0);
}

#[test]
#[allow(clippy::vec_init_then_push)]
fn bogus_manifests_are_refused_and_nothing_is_committed() {
    let site = site();
    let good = ship_full(&site, 0);
    let id = set_id(SetKind::Full, 60);
    let (mut s, _) = site.hello();
    for r in ROLES {
        assert!(matches!(
            s.send(&id, r, &payload(&id, r), true),
            Msg::Ack { .. }
        ));
    }
    let base = manifest(&id, SetKind::Full, &ROLES, &|r| payload(&id, r));
    let mut bad: Vec<(&str, Manifest)> = Vec::new();
    bad.push((
        "partial",
        manifest(&id, SetKind::Full, &ROLES[..3], &|r| payload(&id, r)),
    ));
    bad.push((
        "kind",
        Manifest {
            kind: SetKind::Redolog,
            ..base.clone()
        },
    ));
    bad.push((
        "margin",
        Manifest {
            safety_margin_ms: i64::MAX,
            ..base.clone()
        },
    ));
    bad.push((
        "negative margin",
        Manifest {
            safety_margin_ms: -5,
            ..base.clone()
        },
    ));
    let mut m = base.clone();
    m.members[0].before = "9999-01-01T00:00:00Z".parse().unwrap();
    bad.push(("year 9999", m));
    let mut m = base.clone();
    m.members[1].after = m.members[1].before - jiff::SignedDuration::from_secs(1);
    bad.push(("inverted", m));
    let mut m = base.clone();
    m.members[2].storage_id = Some("deadbeef".into());
    bad.push(("storage id", m));
    let mut m = base.clone();
    m.members.push(m.members[0].clone());
    bad.push(("duplicate", m));
    let mut m = base.clone();
    m.members[3].role = "search".into();
    bad.push(("unknown role", m));
    bad.push((
        "no seq",
        Manifest {
            seq: 0,
            ..base.clone()
        },
    ));
    // Never received: a set whose members did not come.
    let ghost = set_id(SetKind::Full, 120);
    bad.push((
        "never received",
        manifest(&ghost, SetKind::Full, &ROLES, &|r| payload(&ghost, r)),
    ));
    // From the future (more than a day ahead of the standby's clock).
    let future = new_set_id(
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(72),
        SetKind::Full,
    );
    bad.push((
        "future",
        manifest(&future, SetKind::Full, &ROLES, &|r| payload(&future, r)),
    ));
    for (what, m) in bad {
        match s.commit(&m) {
            Err(e) => assert!(e.message.contains("the other side reported"), "{what}: {e}"),
            Ok(reply) => panic!("{what}: committed? {reply:?}"),
        }
    }
    s.bye().unwrap();
    assert_eq!(site.manifests(), [good], "only the honest set is committed");
}

#[test]
fn a_cut_at_every_frame_boundary_commits_nothing_and_frees_the_lock() {
    // Encode one whole honest session, then replay every prefix that ends
    // at a frame boundary, closing the connection there.
    let id = set_id(SetKind::Full, 0);
    let mut w = Writer::new(Vec::new());
    w.magic().unwrap();
    w.msg(&hello("p")).unwrap();
    let mut bounds = vec![w.bytes_out as usize];
    for r in ROLES {
        let st = payload(&id, r);
        w.msg(&begin(&id, r, Some(&storage_id(&st)))).unwrap();
        bounds.push(w.bytes_out as usize);
        for c in st.chunks(5) {
            w.data(c).unwrap();
            bounds.push(w.bytes_out as usize);
        }
        w.msg(&end(&st)).unwrap();
        bounds.push(w.bytes_out as usize);
    }
    let m = manifest(&id, SetKind::Full, &ROLES, &|r| payload(&id, r));
    w.msg(&Msg::Commit { manifest: m }).unwrap();
    let full = w.into_inner();
    for cut in bounds {
        let site = site();
        let (client, serve) = site.serve_thread(None);
        let mut c = client;
        use std::io::{Read, Write};
        c.write_all(&full[..cut]).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
        let _ = serve.join().unwrap();
        assert!(
            site.manifests().is_empty(),
            "cut at {cut}: nothing committed"
        );
        assert_eq!(
            site.store.0.lock().unwrap().open_receives,
            0,
            "cut at {cut}"
        );
        assert!(site.lock_is_free(), "cut at {cut}: lock released");
        assert!(
            !site.cfg.state_dir.join("serve.json").exists(),
            "cut at {cut}"
        );
        drop(site.dir);
    }
}

#[test]
fn a_cut_receive_resumes_and_a_stale_resume_is_nacked() {
    let site = site();
    let id = set_id(SetKind::Full, 0);
    let st = payload(&id, "blob");
    {
        let (mut s, _) = site.hello();
        s.w.msg(&begin(&id, "blob", Some("abc"))).unwrap();
        s.w.data(&st[..10]).unwrap();
        s.w.flush().unwrap();
        s.w.into_inner()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        assert!(
            s.serve.join().unwrap().is_err(),
            "a cut session is an error"
        );
    }
    let (mut s, welcome) = site.hello();
    let Msg::Welcome { volumes, .. } = welcome else {
        panic!()
    };
    let tok = volumes
        .iter()
        .find(|v| v.role == "blob")
        .unwrap()
        .resumable
        .clone()
        .unwrap();
    assert_eq!(tok.token, format!("{id}:10"));
    // Resume with the rest: acked.
    s.w.msg(&resume(begin(&id, "blob", Some("abc")))).unwrap();
    s.w.data(&st[10..]).unwrap();
    s.w.msg(&end(&st[10..])).unwrap();
    assert!(matches!(s.r.msg().unwrap(), Msg::Ack { .. }));
    // A resume with nothing to resume is nacked, and the session goes on.
    s.w.msg(&resume(begin(&id, "index", Some("abc")))).unwrap();
    s.w.msg(&end(b"")).unwrap();
    assert!(matches!(s.r.msg().unwrap(), Msg::Nack { .. }));
    s.bye().unwrap();
    assert_eq!(site.store.names("blob"), [id]);
}

#[test]
fn a_silent_primary_ends_the_session_and_frees_the_lock() {
    let site = site();
    let id = set_id(SetKind::Full, 0);
    let mut s = site.connect(Some(Duration::from_millis(300)));
    s.r.magic().unwrap();
    s.w.msg(&hello("p")).unwrap();
    let _ = s.r.msg().unwrap();
    s.w.msg(&begin(&id, "mysql", Some("abc"))).unwrap();
    s.w.data(b"MEMSNAP1\n").unwrap();
    // ... and then nothing, with the connection open.
    let t = std::time::Instant::now();
    let res = s.serve.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
    let e = res.unwrap_err();
    assert!(format!("{e:#}").contains("no progress"), "{e:#}");
    assert!(site.lock_is_free());
    assert_eq!(site.store.0.lock().unwrap().open_receives, 0);
    let log = std::fs::read_to_string(site.cfg.state_dir.join("serve.log")).unwrap();
    assert!(log.contains("session failed"), "{log}");
    drop(s.w);
}

/// Flips one byte of what goes through it, at an absolute offset.
struct Flip {
    sock: UnixStream,
    pos: usize,
    at: usize,
}

impl std::io::Write for Flip {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut b = b.to_vec();
        if self.at >= self.pos && self.at < self.pos + b.len() {
            b[self.at - self.pos] ^= 0x20;
        }
        self.sock.write_all(&b)?;
        self.pos += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_flipped_byte_of_the_commit_commits_nothing_wrong() {
    let id = set_id(SetKind::Full, 0);
    let m = manifest(&id, SetKind::Full, &ROLES, &|r| payload(&id, r));
    // One honest session whose byte `flip_at` is flipped on the way;
    // returns what was committed and where the commit frame lies.
    let session = |flip_at: usize| -> (Site, Option<Manifest>, usize, usize) {
        let site = site();
        let (client, serve) = site.serve_thread(None);
        let mut w = Writer::new(Flip {
            sock: client.try_clone().unwrap(),
            pos: 0,
            at: flip_at,
        });
        let mut r = Reader::new(client);
        let _ = handshake(&mut w, &mut r, "p");
        for role in ROLES {
            let st = payload(&id, role);
            w.msg(&begin(&id, role, Some(&storage_id(&st)))).unwrap();
            w.data(&st).unwrap();
            w.msg(&end(&st)).unwrap();
            let _ = r.msg().unwrap();
        }
        let start = w.bytes_out as usize;
        // A corrupted header makes serve drop the session at once: our
        // write may then meet a closed socket, which is fine.
        let sent = w.msg(&Msg::Commit {
            manifest: m.clone(),
        });
        let end = start
            + if sent.is_ok() {
                (w.bytes_out as usize) - start
            } else {
                0
            };
        let _ = r.next_frame();
        let _ = w.into_inner().sock.shutdown(std::net::Shutdown::Write);
        let _ = serve.join().unwrap();
        let got = site.catalog().manifests().unwrap().into_iter().next();
        (site, got, start, end)
    };
    let (_, clean, start, end) = session(usize::MAX);
    assert!(clean.is_some(), "the honest session commits");
    let mut refused = 0;
    for at in start..end {
        let (site, got, _, _) = session(at);
        match got {
            Some(mut got) => {
                // Only what the primary sent may ever be committed.
                got.committed_at = None;
                for x in &mut got.members {
                    x.receipt = None;
                }
                assert_eq!(got, m, "flip at {at} committed something else");
            }
            None => refused += 1,
        }
        assert!(site.lock_is_free());
    }
    assert_eq!(
        refused,
        end - start,
        "every flipped byte of the commit is caught"
    );
}

#[test]
fn a_committed_set_is_never_rewritten() {
    let site = site();
    let id = ship_full(&site, 0);
    let before = std::fs::read(site.cfg.state_dir.join(format!("sets/{id}.json"))).unwrap();
    let honest = manifest(&id, SetKind::Full, &ROLES, &|r| payload(&id, r));
    let (mut s, _) = site.hello();
    // The same manifest again (the primary missed the answer): idempotent.
    assert!(matches!(s.commit(&honest).unwrap(), Msg::Committed { .. }));
    // Other content under the committed id: refused, record untouched.
    let mut other = honest.clone();
    other.members[0].before -= jiff::SignedDuration::from_secs(3600);
    let e = s.commit(&other).unwrap_err();
    assert!(e.message.contains("already committed"), "{e}");
    s.bye().unwrap();
    let after = std::fs::read(site.cfg.state_dir.join(format!("sets/{id}.json"))).unwrap();
    assert_eq!(before, after);
    let log = std::fs::read_to_string(site.cfg.state_dir.join("serve.log")).unwrap();
    assert!(log.contains("already committed"), "{log}");
}

/// The hello's `since` (issue 23): with a set committed here, the welcome
/// lists it and the newer sets, and per volume the snapshots from its
/// member on; a volume whose member is gone is listed whole; a set not
/// committed here gets the whole inventory; a `since` that is not a set id
/// is refused with an error naming it, and the session ends.
#[test]
fn the_welcome_starts_from_the_hellos_since() {
    let site = site();
    let ids: Vec<String> = (0..4).map(|i| ship_full(&site, i * 60)).collect();
    // the welcome, or the refusal's text (the reader reports an `Error`)
    let ask = |since: &str| -> Result<Msg, String> {
        let mut s = site.connect(None);
        s.r.magic().unwrap();
        let Msg::Hello {
            protocol,
            site: name,
            version,
            ..
        } = hello("primary")
        else {
            unreachable!()
        };
        s.w.msg(&Msg::Hello {
            protocol,
            site: name,
            version,
            since: Some(since.into()),
        })
        .unwrap();
        match s.r.msg() {
            Ok(m) => {
                s.bye().unwrap();
                Ok(m)
            }
            Err(e) => {
                assert!(s.serve.join().unwrap().is_err(), "the session ends");
                Err(e.to_string())
            }
        }
    };
    let lists = |m: Result<Msg, String>| -> (Vec<String>, Vec<(String, Vec<String>)>) {
        let m = m.unwrap();
        let Msg::Welcome {
            committed, volumes, ..
        } = m
        else {
            panic!("expected a welcome, got {m:?}")
        };
        (
            committed,
            volumes.into_iter().map(|v| (v.role, v.snapshots)).collect(),
        )
    };
    let (committed, volumes) = lists(ask(&ids[2]));
    assert_eq!(committed, ids[2..].to_vec());
    assert_eq!(volumes.len(), ROLES.len());
    for (role, snaps) in &volumes {
        assert_eq!(snaps, &ids[2..].to_vec(), "{role}");
    }
    // not committed here: whole
    let (committed, volumes) = lists(ask(&set_id(SetKind::Full, 7)));
    assert_eq!(committed, ids);
    for (role, snaps) in &volumes {
        assert_eq!(snaps, &ids, "{role}");
    }
    // the member of `blob` gone: that volume whole, the others from it
    site.store
        .0
        .lock()
        .unwrap()
        .snaps
        .remove(&("blob".to_string(), ids[2].clone()));
    let (committed, volumes) = lists(ask(&ids[2]));
    assert_eq!(committed, ids[2..].to_vec());
    for (role, snaps) in &volumes {
        let want: Vec<String> = if role == "blob" {
            ids.iter().filter(|i| **i != ids[2]).cloned().collect()
        } else {
            ids[2..].to_vec()
        };
        assert_eq!(snaps, &want, "{role}");
    }
    for bad in ["", "latest", "../sets/x", "20261127T080000.000Z-full/.."] {
        match ask(bad) {
            Err(message) => assert!(
                message.contains("`since` that is not a set id"),
                "{message}"
            ),
            Ok(other) => panic!("since {bad:?}: expected a refusal, got {other:?}"),
        }
    }
}
