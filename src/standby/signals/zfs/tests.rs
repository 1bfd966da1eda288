use super::*;
use crate::standby::signals::tests::noise;

/// A 312-byte record with `fields` (offset, little-endian bytes) set.
fn rec(kind: u32, payloadlen: u32, fields: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut r = vec![0u8; RECORD];
    r[..4].copy_from_slice(&kind.to_le_bytes());
    r[4..8].copy_from_slice(&payloadlen.to_le_bytes());
    for (at, v) in fields {
        r[*at..*at + v.len()].copy_from_slice(v);
    }
    r
}

fn begin(time: u64, features: u64) -> Vec<u8> {
    rec(
        DRR_BEGIN,
        0,
        &[
            (8, MAGIC.to_le_bytes().to_vec()),
            (16, ((features << 2) | 1).to_le_bytes().to_vec()),
            (24, time.to_le_bytes().to_vec()),
        ],
    )
}

/// A file's OBJECT record and its SA bonus (mode, crtime).
fn file(object: u64, crtime: u64) -> Vec<u8> {
    let mut bonus = vec![0u8; 168];
    bonus[..4].copy_from_slice(&SA_MAGIC.to_le_bytes());
    bonus[4..6].copy_from_slice(&((1u16 << 10) | 2).to_le_bytes());
    bonus[8..16].copy_from_slice(&(S_IFREG | 0o644).to_le_bytes());
    bonus[112..120].copy_from_slice(&crtime.to_le_bytes());
    let mut r = rec(
        DRR_OBJECT,
        168,
        &[
            (8, object.to_le_bytes().to_vec()),
            (16, OT_FILE.to_le_bytes().to_vec()),
            (20, OT_SA.to_le_bytes().to_vec()),
            (28, 168u32.to_le_bytes().to_vec()),
        ],
    );
    r.extend(bonus);
    r
}

fn write(object: u64, data: &[u8]) -> Vec<u8> {
    let mut r = rec(
        DRR_WRITE,
        data.len() as u32,
        &[
            (8, object.to_le_bytes().to_vec()),
            (16, OT_FILE.to_le_bytes().to_vec()),
            (32, (data.len() as u64).to_le_bytes().to_vec()),
        ],
    );
    r.extend(data);
    r
}

fn end() -> Vec<u8> {
    rec(DRR_END, 0, &[])
}

fn measure(stream: &[u8], incremental: bool, base_time: Option<u64>, step: usize) -> VolumeSignals {
    let mut m = ZfsMeter::new(incremental, base_time);
    for piece in stream.chunks(step.max(1)) {
        m.feed(piece);
    }
    let mut sig = VolumeSignals {
        stream_bytes: stream.len() as u64,
        incremental,
        complete: true,
        ..Default::default()
    };
    m.finish(&mut sig);
    sig
}

#[test]
fn new_and_rewritten_files_are_told_apart_by_creation_time() {
    let text = b"Subject: hello\r\n".repeat(1024);
    let bad = noise(BLOCK * 64, 9);
    let s = [
        begin(2000, 0),
        file(5, 1000),
        write(5, &bad),
        file(6, 2500),
        write(6, &text),
        rec(
            DRR_FREEOBJECTS,
            0,
            &[
                (8, 7u64.to_le_bytes().to_vec()),
                (16, 3u64.to_le_bytes().to_vec()),
            ],
        ),
        rec(
            DRR_FREEOBJECTS,
            0,
            &[
                (8, 64u64.to_le_bytes().to_vec()),
                (16, (u64::MAX - 64).to_le_bytes().to_vec()),
            ],
        ),
        end(),
    ]
    .concat();
    for step in [s.len(), 1, 7, 312, 4096] {
        let sig = measure(&s, true, Some(2000), step);
        assert!(sig.complete, "{:?}", sig.note);
        assert_eq!(sig.snapshot_time, Some(2000));
        assert_eq!(sig.files_new, 1);
        assert_eq!(sig.files_rewritten, 1);
        assert_eq!(sig.data_bytes, (bad.len() + text.len()) as u64);
        assert_eq!(sig.rewrite_bytes, bad.len() as u64);
        assert_eq!(sig.objects_freed, 3);
        // Every block of the first 64, then one standing for 64.
        assert_eq!(sig.rewrite_sampled_blocks, 64, "step {step}");
        assert_eq!(sig.rewrite_incompressible_blocks, 64);
        assert_eq!(sig.sampled_blocks, 128);
        assert_eq!(sig.incompressible_blocks, 64);
    }
    // Without the base's time the ages are unknown: no rewrites, said so.
    let sig = measure(&s, true, None, s.len());
    assert_eq!(sig.rewrite_bytes, 0);
    assert!(!sig.complete);
    assert!(sig.note.unwrap().contains("not recorded"));
    // A full stream: every file is new.
    let sig = measure(&s, false, None, s.len());
    assert_eq!((sig.files_new, sig.rewrite_bytes), (2, 0));
    assert!(sig.complete, "{:?}", sig.note);
}

#[test]
fn sender_compressed_blocks_count_as_compressible_samples() {
    let mut w = rec(
        DRR_WRITE,
        100,
        &[
            (8, 5u64.to_le_bytes().to_vec()),
            (16, OT_FILE.to_le_bytes().to_vec()),
            (32, ((BLOCK * 128) as u64).to_le_bytes().to_vec()),
            (50, vec![15]),
            (96, 100u64.to_le_bytes().to_vec()),
        ],
    );
    w.extend([7u8; 100]);
    let s = [begin(2000, 0), file(5, 1), w, end()].concat();
    let sig = measure(&s, true, Some(2000), 5);
    assert!(sig.complete, "{:?}", sig.note);
    assert_eq!(sig.rewrite_bytes, (BLOCK * 128) as u64);
    assert_eq!(
        (
            sig.rewrite_sampled_blocks,
            sig.rewrite_incompressible_blocks
        ),
        (128, 0)
    );
}

#[test]
fn a_raw_send_gets_no_file_signals() {
    let mut s = begin(2000, FEATURE_RAW);
    s.extend(noise(BLOCK * 64 * 2, 3));
    let sig = measure(&s, true, Some(1000), 100);
    assert_eq!((sig.files_new, sig.rewrite_bytes), (0, 0));
    assert!(!sig.complete);
    assert!(sig.note.unwrap().contains("raw (encrypted)"));
    assert_eq!(sig.sampled_blocks, 2);
    assert_eq!(sig.data_bytes, sig.stream_bytes);
}

#[test]
fn garbage_and_oversized_records_stop_decoding() {
    let sig = measure(b"not a zfs stream, no, not at all", true, None, 3);
    assert!(!sig.complete);
    let sig = measure(&[0u8; 400], true, None, 3);
    assert!(sig.note.unwrap().contains("bad magic"));
    let huge = rec(
        DRR_WRITE,
        0,
        &[
            (16, OT_FILE.to_le_bytes().to_vec()),
            (32, u64::MAX.to_le_bytes().to_vec()),
        ],
    );
    let sig = measure(&[begin(1, 0), huge].concat(), true, None, 50);
    assert!(sig.note.unwrap().contains("larger than ZFS sends"));
    let sig = measure(&[begin(1, 0), rec(77, 0, &[])].concat(), true, None, 50);
    assert!(sig.note.unwrap().contains("unknown record"));
    // Cut short: no END.
    let sig = measure(&[begin(1, 0), file(5, 0)].concat(), true, Some(1), 50);
    assert!(sig.note.unwrap().contains("without its END"));
}

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/zfs-2.3")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `tests/fixtures/capture-zfs-stream.sh` on OpenZFS 2.3: after the base,
/// `new/d.msg` was written (8 KiB of text), `old/a.msg` rewritten in place
/// with 16 KiB of noise, `old/b.msg` removed and `old/c.msg` renamed.
#[test]
fn a_captured_incremental_stream() {
    let times = fixture("stream-times.txt");
    let time = |k: &str| -> u64 {
        times
            .lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .unwrap()
    };
    let s = unhex(&fixture("stream-incremental.hex"));
    for step in [s.len(), 1000, 313] {
        let sig = measure(&s, true, Some(time("S1 ")), step);
        assert!(sig.complete, "{:?}", sig.note);
        assert_eq!(sig.snapshot_time, Some(time("S2 ")));
        assert_eq!((sig.files_new, sig.files_rewritten), (1, 1));
        assert_eq!((sig.data_bytes, sig.rewrite_bytes), (24576, 16384));
        assert_eq!(
            (
                sig.rewrite_sampled_blocks,
                sig.rewrite_incompressible_blocks
            ),
            (4, 4)
        );
        assert_eq!((sig.sampled_blocks, sig.incompressible_blocks), (6, 4));
        // b.msg and the free slots of the dnode blocks sent.
        assert_eq!(sig.objects_freed, 148);
        // c.msg became c.msg.locked beside a.msg (rewritten, not renamed).
        assert_eq!((sig.renames, sig.renames_new_extension), (1, 1));
    }
    let raw = unhex(&fixture("stream-raw-begin.hex"));
    let sig = measure(&raw, true, Some(time("S1 ")), 7);
    assert!(sig.note.unwrap().contains("raw (encrypted)"));
    assert_eq!(sig.files_new, 0);
}

/// The meter's speed on a 64 MiB stream of 128 KiB file blocks (half into
/// existing files), against blake3 over the same bytes (what serve does to
/// every byte anyway): `cargo test --lib zfs_meter_cost -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn zfs_meter_cost() {
    let block = noise(128 << 10, 5);
    let mut s = begin(2000, 0);
    for o in 0..512u64 {
        s.extend(file(o + 100, if o % 2 == 0 { 1000 } else { 3000 }));
        s.extend(write(o + 100, &block));
    }
    s.extend(end());
    let t = std::time::Instant::now();
    let sig = measure(&s, true, Some(2000), 1 << 20);
    let meter = t.elapsed();
    let t = std::time::Instant::now();
    let mut h = blake3::Hasher::new();
    for piece in s.chunks(1 << 20) {
        h.update(piece);
    }
    std::hint::black_box(h.finalize());
    let hash = t.elapsed();
    assert_eq!(sig.rewrite_bytes, 256 * (128 << 10));
    eprintln!(
        "zfs meter: {} MiB in {:.1} ms ({:.0} MiB/s); blake3 {:.1} ms",
        s.len() >> 20,
        meter.as_secs_f64() * 1e3,
        s.len() as f64 / (1 << 20) as f64 / meter.as_secs_f64(),
        hash.as_secs_f64() * 1e3
    );
}

/// A file's OBJECT record whose SA bonus has its times: created at
/// `crtime`, written at `mtime`, changed at `ctime` (seconds, nanoseconds).
fn file_times(object: u64, crtime: u64, mtime: (u64, u64), ctime: (u64, u64)) -> Vec<u8> {
    let mut r = file(object, crtime);
    let bonus = RECORD + 8;
    for (at, v) in [(72, mtime.0), (80, mtime.1), (88, ctime.0), (96, ctime.1)] {
        r[bonus + at..bonus + at + 8].copy_from_slice(&v.to_le_bytes());
    }
    r
}

fn directory(object: u64) -> Vec<u8> {
    rec(
        DRR_OBJECT,
        0,
        &[
            (8, object.to_le_bytes().to_vec()),
            (16, OT_DIR.to_le_bytes().to_vec()),
        ],
    )
}

fn dir_write(object: u64, offset: u64, block: &[u8]) -> Vec<u8> {
    let mut r = rec(
        DRR_WRITE,
        block.len() as u32,
        &[
            (8, object.to_le_bytes().to_vec()),
            (16, OT_DIR.to_le_bytes().to_vec()),
            (24, offset.to_le_bytes().to_vec()),
            (32, (block.len() as u64).to_le_bytes().to_vec()),
        ],
    );
    r.extend(block);
    r
}

fn reg(object: u64) -> u64 {
    (zap::DT_REG << 60) | object
}

/// The encryptor's `x.msg` → `x.msg.locked` among untouched `.msg` files
/// is a rename to a new extension; a message rewritten in place, or one
/// written since, is not a rename; a maildir flag change (`:2,` → `:2,S`)
/// is a rename with the same extension. Microzap and fat ZAP alike.
#[test]
fn renames_are_seen_in_the_directory_blocks_and_the_znode_times() {
    let base = 2000;
    let text = b"Subject: hello\r\n".repeat(256);
    for fat in [false, true] {
        let block = |names: &[(&str, u64)]| {
            if fat {
                zap::tests::leaf_block(16384, names)
            } else {
                zap::tests::micro_block(4096, names)
            }
        };
        let mail = block(&[
            ("1.msg", reg(10)),
            ("2.msg.locked", reg(11)),
            ("3.msg.locked", reg(12)),
            ("4.msg", reg(13)),
            ("5.msg", reg(14)),
            ("sub", (4 << 60) | 3),
        ]);
        let cur = block(&[("a.host:2,S", reg(20)), ("b.host:2,", reg(21))]);
        let s = [
            begin(3000, 0),
            directory(2),
            dir_write(2, 0, &mail),
            directory(3),
            dir_write(3, 0, &cur),
            // 1.msg: untouched (its dnode block sent, its times old).
            file_times(10, 100, (100, 0), (100, 0)),
            // 2 and 3: rewritten, then renamed.
            file_times(11, 100, (2500, 1), (2500, 2)),
            write(11, &text),
            file_times(12, 100, (2500, 5), (2600, 0)),
            // 4.msg: rewritten in place, not renamed.
            file_times(13, 100, (2500, 7), (2500, 7)),
            write(13, &text),
            // 5.msg: new since the base.
            file_times(14, 2100, (2100, 0), (2100, 0)),
            write(14, &text),
            // a.host: a maildir flag change; b.host: not sent (untouched).
            file_times(20, 100, (100, 0), (2200, 0)),
            end(),
        ]
        .concat();
        for step in [s.len(), 1, 311, 4096] {
            let sig = measure(&s, true, Some(base), step);
            assert!(sig.complete, "{:?}", sig.note);
            assert_eq!(
                (sig.renames, sig.renames_new_extension),
                (3, 2),
                "fat {fat} step {step}"
            );
            assert_eq!((sig.files_new, sig.files_rewritten), (1, 2));
        }
        // Every file of a directory renamed: renames, no comparison.
        let all = block(&[("1.msg.locked", reg(10)), ("2.msg.locked", reg(11))]);
        let s = [
            begin(3000, 0),
            directory(2),
            dir_write(2, 0, &all),
            file_times(10, 100, (2500, 0), (2500, 1)),
            file_times(11, 100, (2500, 0), (2500, 1)),
            end(),
        ]
        .concat();
        let sig = measure(&s, true, Some(base), 100);
        assert_eq!((sig.renames, sig.renames_new_extension), (2, 0));
        // Changed before the base: not a rename of this set.
        let s = [
            begin(3000, 0),
            directory(2),
            dir_write(2, 0, &mail),
            file_times(11, 100, (1500, 0), (1600, 0)),
            end(),
        ]
        .concat();
        assert_eq!(measure(&s, true, Some(base), 100).renames, 0);
        // A full stream renames nothing.
        assert_eq!(measure(&s, false, None, 100).renames, 0);
    }
}

#[test]
fn compressed_directory_blocks_are_not_read_and_the_note_says_so() {
    let mail = zap::tests::micro_block(4096, &[("2.msg.locked", reg(11)), ("1.msg", reg(10))]);
    let mut w = dir_write(2, 0, &mail[..100]);
    w[50] = 15;
    w[96..104].copy_from_slice(&100u64.to_le_bytes());
    w[32..40].copy_from_slice(&4096u64.to_le_bytes());
    let s = [
        begin(3000, 0),
        directory(2),
        w,
        file_times(11, 100, (2500, 0), (2500, 1)),
        end(),
    ]
    .concat();
    let sig = measure(&s, true, Some(2000), 50);
    assert_eq!(sig.renames, 0);
    assert!(!sig.complete);
    assert!(sig.note.unwrap().contains("compressed"));
}
