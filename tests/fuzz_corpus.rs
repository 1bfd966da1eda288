//! The fuzz targets' seed corpus (`fuzz/corpus/<target>/`) and the inputs
//! fuzzing found (regressions). The seeds are the captured real outputs in
//! tests/fixtures and sessions encoded by snapsite's own writers; every seed
//! and every regression input runs through its target here, in the normal
//! suite, so a decoder change that panics on one fails `cargo test`.
//!
//! Regenerate the committed corpus (after a format change):
//! `SNAPSITE_FUZZ_CORPUS_OUT=fuzz/corpus cargo test --test fuzz_corpus`.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use snapsite::backend::lvm::{self, Extent, Header, ResumeToken, StreamKind};
use snapsite::backend::mem::MemStore;
use snapsite::base::model::{MANIFEST_FORMAT, Manifest, Member, Receipt, SetKind, new_set_id};
use snapsite::testing::fuzzing;
use snapsite::wire::stream::{Msg, PROTOCOL_VERSION, SpoolEvent, VolumeInventory, Writer};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(repo().join("tests/fixtures").join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn with(sel: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![sel];
    v.extend_from_slice(body);
    v
}

fn set_id(secs: i64, kind: SetKind) -> String {
    new_set_id(
        jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap(),
        kind,
    )
}

fn manifest(id: &str) -> Manifest {
    let t = snapsite::base::model::parse_set_id(id).unwrap().0;
    Manifest {
        format: MANIFEST_FORMAT,
        id: id.into(),
        kind: SetKind::Full,
        site: "primary".into(),
        seq: 7,
        generation: 2,
        members: ["mysql", "redolog"]
            .iter()
            .enumerate()
            .map(|(i, r)| Member {
                role: r.to_string(),
                backend: "zfs".into(),
                source: format!("tank/{r}"),
                snapshot: id.into(),
                storage_id: Some(format!("{}", 1000 + i)),
                before: t,
                after: t + jiff::SignedDuration::from_millis(5),
                atomic_group: Some(1),
                send_options: vec!["raw".into()],
                receipt: (i == 0).then(|| Receipt {
                    base: None,
                    bytes: 42,
                    blake3: blake3::hash(b"x").to_hex().to_string(),
                    received_at: t,
                    storage_id: Some("uuid".into()),
                    set_id: Some(id.into()),
                    sender_storage_id: Some("1000".into()),
                }),
                consistency: None,
            })
            .collect(),
        safety_margin_ms: 2000,
        committed_at: None,
        standby_order: None,
    }
}

/// The control messages of a ship session, a spool session and the replies.
fn messages() -> Vec<Msg> {
    let id = set_id(0, SetKind::Full);
    let stream = MemStore::stream(&id, None, b"mysql data");
    vec![
        Msg::Hello {
            protocol: PROTOCOL_VERSION,
            site: "primary".into(),
            version: "0.1.0".into(),
            since: None,
        },
        Msg::Welcome {
            protocol: PROTOCOL_VERSION,
            site: "standby".into(),
            volumes: vec![VolumeInventory {
                role: "mysql".into(),
                backend: "zfs".into(),
                snapshots: vec![set_id(-900, SetKind::Full)],
                resumable: None,
            }],
            committed: vec![set_id(-900, SetKind::Full)],
            compress: vec!["zstd".into()],
            role: Some("standby".into()),
            generation: Some(2),
        },
        Msg::Begin {
            set_id: id.clone(),
            role: "mysql".into(),
            snapshot: id.clone(),
            base: Some(set_id(-900, SetKind::Full)),
            storage_id: Some("1000".into()),
            resume: false,
        },
        Msg::End {
            bytes: stream.len() as u64,
            blake3: blake3::hash(&stream).to_hex().to_string(),
        },
        Msg::Abort {
            reason: "sender failed".into(),
        },
        Msg::Nack {
            role: "mysql".into(),
            snapshot: id.clone(),
            error: "checksum mismatch".into(),
        },
        Msg::Commit {
            manifest: manifest(&id),
        },
        Msg::Committed { set_id: id.clone() },
        Msg::Error {
            message: "refused\n\u{1b}[31m".into(),
        },
        Msg::Bye,
        Msg::SpoolHello {
            protocol: PROTOCOL_VERSION,
            site: "primary".into(),
            version: "0.1.0".into(),
        },
        Msg::SpoolBatch {
            seq: 3,
            as_of: jiff::Timestamp::from_second(1_790_000_000).unwrap(),
            reset: false,
            events: vec![
                SpoolEvent::Append {
                    file: "redo.log".into(),
                    offset: 10,
                    len: 5,
                },
                SpoolEvent::Rename {
                    from: "redo.log".into(),
                    to: "archive/redo.1".into(),
                },
                SpoolEvent::Truncate {
                    file: "redo.log".into(),
                    size: 0,
                },
                SpoolEvent::Remove {
                    file: "old.log".into(),
                },
            ],
            bytes: 5,
            blake3: blake3::hash(b"hello").to_hex().to_string(),
        },
        Msg::SpoolAck { seq: 3 },
    ]
}

/// A whole encoded ship session, as `frames`' description (tag, u16 LE
/// length, payload) and as the bytes on the wire.
fn session() -> (Vec<u8>, Vec<u8>) {
    let id = set_id(0, SetKind::Full);
    let stream = MemStore::stream(&id, None, &b"mysql data ".repeat(40));
    let mut spec = Vec::new();
    let mut wire = Writer::new(Vec::new());
    wire.magic().unwrap();
    let msg = |m: &Msg, spec: &mut Vec<u8>, wire: &mut Writer<Vec<u8>>| {
        let j = serde_json::to_vec(m).unwrap();
        spec.push(b'M');
        spec.extend_from_slice(&(j.len() as u16).to_le_bytes());
        spec.extend_from_slice(&j);
        wire.msg(m).unwrap();
    };
    let all = messages();
    msg(&all[0], &mut spec, &mut wire);
    msg(&all[2], &mut spec, &mut wire);
    for c in stream.chunks(100) {
        spec.push(b'D');
        spec.extend_from_slice(&(c.len() as u16).to_le_bytes());
        spec.extend_from_slice(c);
        wire.data(c).unwrap();
    }
    let mut z = snapsite::wire::compress::FrameCompressor::new(3).unwrap();
    let zd = z.compress(&stream).expect("compresses").to_vec();
    spec.push(b'Z');
    spec.extend_from_slice(&(zd.len() as u16).to_le_bytes());
    spec.extend_from_slice(&zd);
    wire.data_compressed(&zd).unwrap();
    msg(&all[3], &mut spec, &mut wire);
    msg(&all[6], &mut spec, &mut wire);
    msg(&all[9], &mut spec, &mut wire);
    wire.flush().unwrap();
    (spec, wire.into_inner())
}

fn record(meta: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let m = serde_json::to_vec(meta).unwrap();
    let mut v = (m.len() as u16).to_le_bytes().to_vec();
    v.extend_from_slice(&m);
    v.extend_from_slice(&(data.len() as u16).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// A spool journal's records (as `seal_records` describes them): a base,
/// then two batches.
fn journal_spec() -> Vec<u8> {
    let t = "2026-12-01T08:00:00Z";
    let mut v = record(
        &serde_json::json!({"rec": "base", "seq": 1, "as_of": t,
            "files": [{"file": "redo.log", "size": 10, "tail_len": 4}]}),
        b"tail",
    );
    v.extend(record(
        &serde_json::json!({"rec": "batch", "seq": 2, "as_of": t, "reset": false,
            "events": [{"ev": "append", "file": "redo.log", "offset": 10, "len": 5},
                       {"ev": "base", "file": "archive/redo.0", "size": 3}]}),
        b"hello",
    ));
    v.extend(record(
        &serde_json::json!({"rec": "batch", "seq": 3, "as_of": t, "reset": false,
            "events": [{"ev": "rename", "from": "redo.log", "to": "archive/redo.1"},
                       {"ev": "remove", "file": "archive/redo.0"},
                       {"ev": "truncate", "file": "archive/redo.1", "size": 12}]}),
        b"",
    ));
    v
}

fn archive_index_json() -> Vec<u8> {
    let id = set_id(1, SetKind::Full);
    let base = set_id(0, SetKind::Full);
    let h = blake3::hash(b"part").to_hex().to_string();
    serde_json::to_vec_pretty(
        &serde_json::json!({"format": 1, "set_id": id, "site": "primary",
        "kind": "full", "members": [{"role": "redolog", "snapshot": id, "base": base}],
        "requires": [base], "compression": "zstd:3", "encryption": "age",
        "parts": [{"key": format!("sets/{id}/r1-2/part-000000"), "bytes": 4, "blake3": h,
            "stored_bytes": 200, "stored_blake3": h}],
        "payload_bytes": 4, "stream_bytes": 4, "written_at": "2026-12-06T00:00:00Z"}),
    )
    .unwrap()
}

fn seed_index_json() -> Vec<u8> {
    let parts: Vec<_> = fuzzing::SEED_PARTS
        .iter()
        .map(|(n, b)| {
            serde_json::json!({"name": n, "bytes": b.len(),
                "blake3": blake3::hash(b).to_hex().to_string()})
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({"format": 1,
        "set_id": set_id(0, SetKind::Full), "site": "primary", "compression": "zstd",
        "parts": parts, "payload_bytes": 18}))
    .unwrap()
}

/// An LVM stream of a small device, encoded by snapsite's encoder.
fn lvm_stream(kind: StreamKind) -> Vec<u8> {
    lvm_stream_with(kind, None)
}

/// The same, its header naming the blocks it overwrites.
fn lvm_stream_with(kind: StreamKind, overwritten: Option<lvm::Overwritten>) -> Vec<u8> {
    let size = 64 << 10;
    let mut f = tempfile::tempfile().unwrap();
    let mut dev = vec![0u8; size];
    dev[4096..8192].fill(7);
    dev[20000..20100].fill(9);
    f.write_all(&dev).unwrap();
    let header = Header {
        version: lvm::VERSION,
        kind,
        size: size as u64,
        block_size: 4096,
        snapshot: set_id(0, SetKind::Full),
        storage_id: Some("uuid-1".into()),
        base: (kind == StreamKind::Incremental).then(|| set_id(-900, SetKind::Full)),
        base_storage_id: None,
        resume: None,
        overwritten,
    };
    let extents = vec![
        Extent {
            offset: 0,
            len: 32 << 10,
            data: true,
        },
        Extent {
            offset: 32 << 10,
            len: 8 << 10,
            data: false,
        },
    ];
    let mut out = Vec::new();
    lvm::Encoder::new(f, &header, extents)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn resume_token() -> String {
    ResumeToken {
        header: [3; 16],
        chain: [5; 32],
        high: 1 << 20,
        bounds: vec![4096, 65536],
        base: Some(set_id(-900, SetKind::Full)),
        snapshot: set_id(0, SetKind::Full),
    }
    .to_tag()
}

fn unhex(text: &[u8]) -> Vec<u8> {
    let t = std::str::from_utf8(text).unwrap().trim();
    (0..t.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap())
        .collect()
}

/// Every seed, by target.
fn corpus() -> BTreeMap<&'static str, Vec<Vec<u8>>> {
    let mut c: BTreeMap<&str, Vec<Vec<u8>>> = BTreeMap::new();
    let (spec, wire) = session();
    c.insert("frames", vec![with(0, &spec), with(1, &spec)]);
    c.insert("frame_raw", vec![with(0, &wire), with(1, &wire)]);
    let msgs: Vec<Vec<u8>> = messages()
        .iter()
        .map(|m| serde_json::to_vec(m).unwrap())
        .collect();
    c.insert("control_msg", msgs);
    let id = set_id(0, SetKind::Full);
    let mut m2 = manifest(&set_id(60, SetKind::Redolog));
    m2.kind = SetKind::Redolog;
    m2.committed_at = Some(jiff::Timestamp::from_second(1_790_000_100).unwrap());
    c.insert(
        "manifest",
        vec![
            serde_json::to_vec_pretty(&manifest(&id)).unwrap(),
            serde_json::to_vec(&m2).unwrap(),
        ],
    );
    let j = journal_spec();
    c.insert(
        "spool_journal",
        vec![with(0, &j), with(1, &fuzzing::seal_records(&j))],
    );
    c.insert("seed_index", vec![seed_index_json()]);
    c.insert("archive_index", vec![archive_index_json()]);
    c.insert(
        "s3_xml",
        vec![
            br#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix>p/</Prefix><IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken><Contents><Key>p/sets/a/index.json</Key><Size>512</Size></Contents></ListBucketResult>"#.to_vec(),
            br#"<?xml version="1.0" encoding="UTF-8"?><ListVersionsResult><IsTruncated>false</IsTruncated><Version><Key>p/a</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><Size>5</Size></Version><DeleteMarker><Key>p/a</Key><VersionId>d</VersionId></DeleteMarker><Version><Key>p/a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><Size>7</Size></Version></ListVersionsResult>"#.to_vec(),
            br#"<?xml version="1.0" encoding="UTF-8"?><ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>30</Days></DefaultRetention></Rule></ObjectLockConfiguration>"#.to_vec(),
        ],
    );
    let full = lvm_stream(StreamKind::Full);
    let incr = lvm_stream(StreamKind::Incremental);
    c.insert(
        "lvm_stream",
        vec![
            with(255, &full),
            with(6, &incr),
            with(255, &full[..full.len() / 2]),
        ],
    );
    c.insert("lvm_resume_token", vec![resume_token().into_bytes()]);
    let mut begins = Vec::new();
    for f in [
        "send-full.hex",
        "send-incremental.hex",
        "send-intermediates.hex",
        "send-props-incremental.hex",
        "send-replicate-full.hex",
        "send-resume.hex",
    ] {
        begins.push(unhex(&fixture(&format!("zfs-2.3/{f}"))));
    }
    c.insert("zfs_begin", begins);
    let mut zo = Vec::new();
    for v in ["zfs-2.1", "zfs-2.3"] {
        zo.push(with(0, &fixture(&format!("{v}/list-snapshots.txt"))));
        for f in [
            "get-guid.txt",
            "get-token.txt",
            "get-token-none.txt",
            "send-nv-token.txt",
        ] {
            zo.push(with(3, &fixture(&format!("{v}/{f}"))));
        }
        zo.push(with(4, &fixture(&format!("{v}/holds.txt"))));
        zo.push(with(5, &fixture(&format!("{v}/list-snapshots.txt"))));
    }
    zo.push(with(
        1,
        format!(
            "cap/mysql\t123\t-\ncap/mysql@{id}\t456\t-\ncap/blob\t789\t1-abc-def\ncap/mysql/child\t1\t-\n"
        )
        .as_bytes(),
    ));
    zo.push(with(2, b"cannot open 'cap/blob': dataset does not exist\n"));
    zo.push(with(6, b"93%\n"));
    c.insert("zfs_output", zo);
    c.insert(
        "lvs_json",
        [
            "lvs-all.json",
            "lvs-classic-snapshot.json",
            "lvs-classic.json",
            "lvs-snapshot.json",
            "vgs-mda-fresh.json",
            "vgs-mda-full.json",
        ]
        .iter()
        .map(|f| fixture(&format!("lvm-2.03/{f}")))
        .collect(),
    );
    c.insert(
        "thin_xml",
        vec![
            // selector: even thin_delta; odd thin_dump of device sel / 4
            // (bit 1 clear) or of devices 0 to sel / 4 % 8 (bit 1 set)
            with(0, &fixture("lvm-2.03/thin_delta-m.xml")),
            with(4 * 2 + 1, &fixture("lvm-2.03/thin_dump-m-dev.xml")),
            with(4 * 3 + 1, &fixture("lvm-2.03/thin_dump-m-dev2.xml")),
            with(4 * 3 + 3, &fixture("lvm-2.03/thin_dump-devs.xml")),
        ],
    );
    c.insert(
        "dmsetup",
        vec![
            with(0, &fixture("lvm-2.03/dmsetup-status-tpool.txt")),
            with(0, &fixture("lvm-2.03/dmsetup-status-tpool-held.txt")),
            with(1, &fixture("lvm-2.03/dmsetup-status-tpool.txt")),
            with(
                2,
                b"0 524288 thin-pool 253:2 253:3 128 0 1 skip_block_zeroing\n",
            ),
        ],
    );
    c.insert("btrfs_vet", {
        use common::btrfs_stream::{StreamWriter, uuid_from_seed};
        let honest = || {
            let mut w = StreamWriter::new();
            w.subvol("s", uuid_from_seed(1), 7)
                .mkdir("d")
                .file("d/f", b"mail");
            w
        };
        let mut setuid = honest();
        setuid.chmod("d/f", 0o4755).end();
        vec![
            honest().end().bytes().to_vec(),
            honest().bytes().to_vec(),
            setuid.bytes().to_vec(),
        ]
    });
    c.insert("signals_btrfs", {
        use common::btrfs_stream::{StreamWriter, uuid_from_seed};
        let mut w = StreamWriter::new();
        w.snapshot("s", uuid_from_seed(2), 9, uuid_from_seed(1), 7)
            .mkfile("o257-9-0")
            .rename("o257-9-0", "new.msg")
            .write("new.msg", 0, b"Subject: hi")
            .write("old.msg", 0, &[0x5a; 4096])
            .rename("old.msg", "old.msg.locked")
            .link("moved.msg.locked", "moved.msg")
            .unlink("moved.msg")
            .unlink("gone.msg")
            .end();
        vec![w.bytes().to_vec(), b"btrfs-stream\0\x01\0\0\0".to_vec()]
    });
    c.insert("signals_zfs", {
        let hex = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/zfs-2.3/stream-incremental.hex"),
        )
        .unwrap();
        let hex = hex.trim();
        let real: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        vec![real[..4096].to_vec(), real]
    });
    c.insert(
        "signals_lvm",
        vec![
            lvm_stream_with(
                StreamKind::Incremental,
                Some(lvm::Overwritten {
                    bytes: 8192,
                    ranges: vec![(4096, 4096), (16384, 4096)],
                    all: true,
                }),
            ),
            lvm_stream(StreamKind::Incremental),
        ],
    );
    c.insert(
        "btrfs_show",
        ["partial", "received", "snapshot", "writable"]
            .iter()
            .map(|f| fixture(&format!("btrfs-progs-6.2/subvolume-show-{f}.txt")))
            .collect(),
    );
    c.insert("mountinfo", vec![fixture("mountinfo/host.txt")]);
    let (welcome, handshake) = peer_seeds();
    c.insert("peer_welcome", welcome);
    c.insert("peer_handshake", handshake);
    c
}

/// The peer targets' seeds: this site's state (role byte, generation,
/// highest seen) before the peer's welcome — an honest new primary to fail
/// back to, this site's standby for a switchover, and the hostile claims
/// (2^64-1, no role, a role that is none).
fn peer_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let state = |primary: bool, own: u64, seen: u64| {
        let mut v = vec![u8::from(primary)];
        v.extend_from_slice(&own.to_le_bytes());
        v.extend_from_slice(&seen.to_le_bytes());
        v
    };
    let welcome = |role: Option<&str>, generation: Option<u64>| {
        common::welcome_of_b(
            vec![set_id(-900, SetKind::Full), set_id(-600, SetKind::Full)],
            vec!["zstd".into()],
            role,
            generation,
        )
    };
    let cases = [
        (state(true, 1, 1), welcome(Some("primary"), Some(2))),
        (state(true, 1, 1), welcome(Some("standby"), Some(1))),
        (state(true, 1, 1), welcome(Some("primary"), Some(u64::MAX))),
        (state(false, 3, 3), welcome(Some("primary"), Some(4))),
        (state(true, 1, 1), welcome(None, None)),
        (state(true, 1, 1), welcome(Some("primary\n"), Some(2))),
    ];
    let mut json = Vec::new();
    let mut frames = Vec::new();
    for (st, m) in cases {
        let body = serde_json::to_vec(&m).unwrap();
        let mut j = st.clone();
        j.extend_from_slice(&body);
        json.push(j);
        let mut f = st;
        f.push(b'M');
        f.extend_from_slice(&(body.len() as u16).to_le_bytes());
        f.extend_from_slice(&body);
        frames.push(f);
    }
    (json, frames)
}

fn target(name: &str) -> fn(&[u8]) {
    fuzzing::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"))
        .1
}

fn write_corpus(out: &Path, c: &BTreeMap<&str, Vec<Vec<u8>>>) {
    for (t, seeds) in c {
        let dir = out.join(t);
        std::fs::create_dir_all(&dir).unwrap();
        for s in seeds {
            let name = blake3::hash(s).to_hex()[..16].to_string();
            std::fs::write(dir.join(name), s).unwrap();
        }
    }
}

#[test]
fn every_target_has_seeds_and_runs_them() {
    let c = corpus();
    for (name, _) in fuzzing::TARGETS {
        assert!(
            c.get(name).is_some_and(|s| !s.is_empty()),
            "no seeds for {name}"
        );
    }
    for (t, seeds) in &c {
        let f = target(t);
        for s in seeds {
            f(s);
        }
    }
    if let Some(out) = std::env::var_os("SNAPSITE_FUZZ_CORPUS_OUT") {
        write_corpus(Path::new(&out), &c);
    }
    fuzzing::remove_scratch();
}

/// The signal decoders' fuzz checks on a few hundred mutations of their
/// seeds (bytes changed anywhere, the ZFS stream also cut anywhere).
#[test]
fn signal_decoders_survive_mutated_seeds() {
    let c = corpus();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for (t, f) in [
        ("signals_zfs", fuzzing::signals_zfs as fn(&[u8])),
        ("signals_lvm", fuzzing::signals_lvm),
    ] {
        let seed = c[t].iter().max_by_key(|s| s.len()).unwrap();
        for _ in 0..300 {
            let mut m = seed.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() % m.len() as u64) as usize;
                m[i] = next() as u8;
            }
            if t == "signals_zfs" {
                m.truncate(1 + (next() % m.len() as u64) as usize);
            }
            f(&m);
        }
    }
}

/// The seeds reach the decoders' accepting paths (not only their first
/// refusal): the sealing in `fuzzing` matches what the readers check.
#[test]
fn seeds_decode_as_snapsite_wrote_them() {
    let (spec, wire) = session();
    assert_eq!(
        fuzzing::seal_frames(&spec),
        wire,
        "sealed frames = the writer's"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("journal"),
        fuzzing::seal_records(&journal_spec()),
    )
    .unwrap();
    let sp = snapsite::standby::spool::Spool::load(dir.path(), false).unwrap();
    assert!(!sp.is_empty(), "the sealed journal's batches load");
    assert_eq!(sp.pending_bytes(), 5);
    let full = lvm_stream(StreamKind::Full);
    let mut d = lvm::Decoder::default();
    d.feed(&full, &mut |_| Ok(())).unwrap();
    assert!(d.done());
    assert!(ResumeToken::parse(&resume_token()).is_ok());
    let sd = tempfile::tempdir().unwrap();
    for (n, b) in fuzzing::SEED_PARTS {
        std::fs::write(sd.path().join(n), b).unwrap();
    }
    std::fs::write(sd.path().join("index.json"), seed_index_json()).unwrap();
    let (mut r, _) = snapsite::primary::seed::SeedReader::open(sd.path()).unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"snapsite seed part");
}

/// Every committed corpus file runs through its target (fuzz/corpus holds
/// the seeds and what fuzzing added; regressions live in fuzz/regressions).
#[test]
fn committed_corpus_and_regressions_run() {
    for sub in ["fuzz/corpus", "fuzz/regressions"] {
        let root = repo().join(sub);
        let Ok(dirs) = std::fs::read_dir(&root) else {
            continue;
        };
        for d in dirs {
            let d = d.unwrap();
            let name = d.file_name().into_string().unwrap();
            let f = target(&name);
            for file in std::fs::read_dir(d.path()).unwrap() {
                let p = file.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                let r = std::panic::catch_unwind(|| f(&bytes));
                assert!(r.is_ok(), "{} panics its target", p.display());
            }
        }
    }
    fuzzing::remove_scratch();
}

/// The session driver of the `serve_session` target commits an honest set
/// (so the fuzzer starts from sessions that reach the commit) and refuses
/// a commit whose member never arrived; its invariants hold for both.
#[test]
fn serve_session_driver_commits_honest_sets_only() {
    use fuzzing::Op;
    let member = |role: u8| {
        vec![
            Op::Begin {
                set: 0,
                role,
                base: None,
                resume: false,
            },
            Op::Data {
                honest: true,
                cut: 0,
                junk: vec![],
            },
            Op::End { honest: true },
        ]
    };
    let commit = |roles: u8| Op::Commit {
        set: 0,
        roles,
        seq: 1,
        generation: 1,
        tweak: 0,
    };
    let mut honest = vec![Op::Hello { protocol_ok: true }];
    honest.extend(member(0));
    honest.extend(member(1));
    honest.push(commit(3));
    honest.push(Op::Bye);
    let id = fuzzing::session_set_id(0);
    let committed = |sessions: &[Vec<Op>]| fuzzing::serve_sessions(sessions).committed;
    assert_eq!(committed(&[honest.clone()]), vec![id.clone()]);
    // Only one member sent, the commit names both: nothing committed; the
    // honest session after it still commits.
    let mut short = vec![Op::Hello { protocol_ok: true }];
    short.extend(member(0));
    short.push(commit(3));
    assert!(committed(&[short.clone()]).is_empty());
    assert_eq!(committed(&[short, honest]), vec![id]);
    fuzzing::remove_scratch();
}

/// Spool sessions of the same driver: an honest batch is spooled, one with
/// a wrong checksum or a name outside the globs is not.
#[test]
fn serve_session_driver_spools_honest_batches_only() {
    use fuzzing::Op;
    let batch = |seq: u64, file: u8, honest: bool| Op::SpoolBatch {
        seq,
        reset: seq == 1,
        // Base redo.log at 0 bytes, then 5 bytes appended.
        events: vec![(0, file, 0, 0), (1, file, 0, 5)],
        data: b"hello".to_vec(),
        honest,
    };
    let pending = |b: Op| fuzzing::serve_sessions(&[vec![Op::SpoolHello, b]]).spool_pending;
    assert_eq!(pending(batch(1, 0, true)), 5);
    assert_eq!(pending(batch(1, 0, false)), 0, "checksum mismatch");
    assert_eq!(pending(batch(1, 4, true)), 0, "../redo.log");
    assert_eq!(pending(batch(1, 3, true)), 0, "outside the globs");
    assert_eq!(pending(batch(2, 0, true)), 0, "not the next batch");
    fuzzing::remove_scratch();
}

// ---------------------------------------------------------------------------
// Crashes fuzzing found (inputs also in fuzz/regressions/<target>/).

/// `dmsetup`: counts near 2^64 in `dmsetup status` overflowed the
/// percentage arithmetic (a panic in debug builds, a wrong fill level that
/// could pass the 90% limit check in release builds).
#[test]
fn fuzz_regression_pool_usage_of_huge_counts() {
    let u = lvm::parse_pool_usage(
        "0 524288 thin-pool 3 113/1025940 444445244444444444/10 - rw discard_passdown",
    )
    .unwrap();
    assert_eq!(u.percents(), (4_444_452_444_444_444_440, 1));
    assert_eq!(u.data_headroom(90), 0);
    assert!(u.meta_ok(90));
    let u = lvm::parse_pool_usage("0 1 thin-pool 3 1/1 18446744073709551615/1 -").unwrap();
    assert_eq!(u.percents().0, u64::MAX, "clamped, still over any limit");
    let u = lvm::parse_pool_usage("0 1 thin-pool 3 1/1 0/18446744073709551615 -").unwrap();
    assert_eq!(u.data_headroom(90), 16_602_069_666_338_596_453);
    assert!(lvm::parse_pool_block_size("0 8 thin-pool 253:2 253:3 36028797018963968 0").is_err());
}

/// `thin_xml`: a `thin_delta` whose ranges go back or overlap became
/// overlapping extents, sent out of the order the receiver requires; ranges
/// whose byte end passes 2^64 wrapped around into the device.
#[test]
fn fuzz_regression_thin_ranges_out_of_order_or_range() {
    let delta = |body: &str| {
        lvm::parse_thin_delta(&format!(
            "<superblock uuid=\"\" time=\"2\" transaction=\"3\" data_block_size=\"128\" nr_data_blocks=\"0\">\n<diff left=\"2\" right=\"3\">\n{body}</diff>\n</superblock>\n"
        ))
    };
    let ok = delta("<same begin=\"0\" length=\"16\"/>\n<different begin=\"16\" length=\"16\"/>\n<right_only begin=\"32\" length=\"4\"/>\n").unwrap();
    assert_eq!(ok.ranges.len(), 3);
    let e = delta(
        "<different begin=\"16\" length=\"16\"/>\n<right_only begin=\"28\" length=\"32\"/>\n",
    )
    .unwrap_err();
    assert!(format!("{e}").contains("overlaps"), "{e}");
    assert!(
        delta("<left_only begin=\"40\" length=\"4\"/>\n<same begin=\"8\" length=\"4\"/>\n")
            .is_err()
    );
    let e = delta("<different begin=\"18446744073709551615\" length=\"1\"/>\n").unwrap_err();
    assert!(format!("{e}").contains("out of range"), "{e}");
    assert!(delta("<different begin=\"36028797018963968\" length=\"1\"/>\n").is_err());
    let dump = lvm::parse_thin_dump(
        "<superblock data_block_size=\"36028797018963968\"><device dev_id=\"1\"></device></superblock>",
        1,
    );
    assert!(dump.is_err(), "a block size past 2^64 bytes");
    let dump = lvm::parse_thin_dump(
        "<superblock data_block_size=\"128\"><device dev_id=\"1\"><range_mapping origin_begin=\"18446744073709551615\" data_begin=\"0\" length=\"2\" time=\"0\"/></device></superblock>",
        1,
    );
    assert!(dump.is_err(), "a mapping past 2^64 blocks");
    // Extents of hand-made ranges never wrap either.
    let d = lvm::Delta {
        block_size: 1 << 20,
        ranges: vec![(
            lvm::DeltaKind::Different,
            lvm::BlockRange {
                begin: 1 << 50,
                length: 1,
            },
        )],
    };
    assert!(lvm::delta_extents(&d, 1 << 30).is_empty());
}
