//! Entry points for the fuzz targets (`fuzz/`, `scripts/fuzz`): one function
//! per decoder of input from the other site or from a storage tool's output.
//! Each takes the fuzzer's bytes, runs the decoder the way snapsite does, and
//! asserts what must hold whatever the input (no panic, no overflow, a value
//! that round-trips); an `Err` from the decoder is a correct answer. Thin
//! wrappers only: the decoders themselves stay where they are.
//!
//! Where a check guards the decoder (the frame header check, a journal
//! record's blake3), the input describes the content and the wrapper adds
//! the checks, so the fuzzer gets past them to the parsing behind; the raw
//! variants feed the bytes as they come.
//!
//! Targets that need files (`spool_journal`, `seed_index`, `serve_session`)
//! use a directory under `$TMPDIR` per process and thread (scripts/fuzz
//! points `TMPDIR` at a directory it removes afterwards).

mod session;
pub use session::{Op, Outcome, serve_sessions, session_set_id, spool_event};
use std::io::Cursor;
use std::path::PathBuf;

use crate::backend::{btrfs, lvm, zfs};
use crate::base::model::{Manifest, wire_str, wire_text};
use crate::wire::stream::{Frame, MAGIC, Msg, Reader, body_check, head_check};

/// A directory of this process and thread for targets that need files.
fn scratch(name: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    let d = std::env::temp_dir().join(format!(
        "snapsite-fuzz-{}-{thread}-{name}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).expect("create the fuzz scratch directory");
    d
}

/// Remove this thread's scratch directories (the tests call it; a fuzz
/// run's `TMPDIR` is removed by scripts/fuzz).
pub fn remove_scratch() {
    for name in ["spool", "seed", "serve"] {
        let _ = std::fs::remove_dir_all(scratch(name));
    }
}

/// Escaped wire strings carry no control characters.
fn check_wire(s: &str) {
    for out in [wire_str(s), wire_text(s)] {
        assert!(
            !out.chars().any(|c| c.is_control()),
            "wire string {out:?} of {s:?} has a control character"
        );
    }
}

// ---------------------------------------------------------------------------
// The protocol: frames, control messages, manifests.

/// Frames as the fuzzer describes them — `tag`, u16 LE length, payload,
/// repeated — sealed with the header and body checks the reader verifies.
pub fn seal_frames(spec: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    let mut rest = spec;
    let mut frame_no = 0u64;
    while rest.len() >= 3 {
        let tag = rest[0];
        let len = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        rest = &rest[3..];
        let body = &rest[..len.min(rest.len())];
        rest = &rest[body.len()..];
        out.push(tag);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&head_check(frame_no, tag, body.len() as u32));
        out.extend_from_slice(body);
        if tag == b'M' {
            out.extend_from_slice(&body_check(frame_no, body));
        }
        frame_no += 1;
    }
    out
}

/// Read a whole stream the way `serve` and `ship` do; every message is
/// checked as a control message.
pub fn read_stream(bytes: &[u8], compressed: bool) {
    let mut r = Reader::new(Cursor::new(bytes));
    if r.magic().is_err() {
        return;
    }
    if compressed {
        r.accept_compressed().expect("a zstd decompressor");
    }
    let mut frames = 0u64;
    loop {
        match r.next_frame() {
            Ok(Some(Frame::Msg(m))) => check_msg(&m),
            Ok(Some(Frame::Data(d))) => {
                assert!(
                    d.len() <= crate::wire::stream::MAX_DATA_FRAME,
                    "data frame too large"
                )
            }
            Ok(None) | Err(_) => break,
        }
        frames += 1;
        assert!(r.bytes_in <= bytes.len() as u64, "read more than the input");
    }
    assert!(
        frames <= bytes.len() as u64 / 9 + 1,
        "more frames than bytes allow"
    );
}

/// `frame_raw`: the bytes as they arrive (first byte: accept `Z` frames).
pub fn frame_raw(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    read_stream(rest, flags & 1 != 0);
}

/// `frames`: frames described by the input, sealed (see [`seal_frames`]).
pub fn frames(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    read_stream(&seal_frames(rest), flags & 1 != 0);
}

/// What the receiving side does with a control message beyond decoding it:
/// manifests are validated, names are escaped for logs. A decoded message
/// encodes and decodes to itself (the catalog stores manifests that way).
pub fn check_msg(m: &Msg) {
    let text = serde_json::to_vec(m).expect("a message serializes");
    let back: Msg = serde_json::from_slice(&text).expect("a message reads back");
    assert_eq!(&back, m, "message does not round-trip");
    match m {
        Msg::Commit { manifest } => check_manifest(manifest),
        Msg::Begin {
            set_id,
            role,
            snapshot,
            base,
            storage_id,
            ..
        } => {
            for s in [set_id, role, snapshot] {
                check_wire(s);
            }
            for s in [base, storage_id].into_iter().flatten() {
                check_wire(s);
            }
            let _ = crate::base::model::validate_set_id(set_id);
            let _ = crate::base::model::validate_role(role);
        }
        Msg::Error { message } | Msg::Abort { reason: message } => check_wire(message),
        Msg::Welcome { volumes, .. } => {
            for v in volumes {
                if let Some(r) = &v.resumable {
                    let _ = serde_json::to_string(r).expect("serializes");
                }
            }
        }
        _ => {}
    }
}

/// Manifest validation and everything a validated manifest is used for.
pub fn check_manifest(m: &Manifest) {
    check_wire(&m.id);
    let _ = m.from_time();
    let _ = m.from_time_with_margin(i64::MAX);
    let _ = m.from_time_with_margin(i64::MIN);
    let _ = m.completed_time();
    let _ = m.is_atomic();
    if m.validate_shape().is_ok() {
        let _ = m.order_key();
        let _ = m.skew();
        let _ = m.member_snapshots();
        assert!(crate::base::model::parse_set_id(&m.id).is_some());
        assert!(m.from_time() <= m.completed_time(), "from after completed");
        for x in &m.members {
            assert!(m.member(&x.role).is_some());
        }
    }
}

/// `control_msg`: a control message's JSON body.
pub fn control_msg(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<Msg>(data) {
        check_msg(&m);
    }
}

/// `manifest`: a manifest's JSON (as committed, or as read from a catalog).
pub fn manifest(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<Manifest>(data) {
        let text = serde_json::to_vec(&m).expect("serializes");
        let back: Manifest = serde_json::from_slice(&text).expect("reads back");
        assert_eq!(back, m, "manifest does not round-trip");
        check_manifest(&m);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = crate::base::model::validate_set_id(s);
        let _ = crate::base::model::validate_role(s);
        check_wire(s);
    }
}

// ---------------------------------------------------------------------------
// The spool journal (redostream).

/// Journal records as the fuzzer describes them — u16 LE meta length, the
/// meta JSON, u16 LE data length, the data, repeated — each framed and
/// checksummed the way the spool writes them (`spool::encode_record`:
/// u32 BE meta length, u64 BE data length, meta, data, blake3 of it all).
pub fn seal_records(spec: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = spec;
    let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        if rest.len() < 2 {
            return None;
        }
        let n = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let body = rest[2..][..n.min(rest.len() - 2)].to_vec();
        *rest = &rest[2 + body.len()..];
        Some(body)
    };
    while let (Some(meta), Some(data)) = (take(&mut rest), take(&mut rest)) {
        let start = out.len();
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u64).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&data);
        let check = blake3::hash(&out[start..]);
        out.extend_from_slice(check.as_bytes());
    }
    out
}

/// Load a journal as the spool does, with the repair a restart makes; the
/// repaired journal loads to the same spool and needs no second repair.
pub fn load_journal(bytes: &[u8]) {
    let dir = scratch("spool");
    let path = dir.join("journal");
    std::fs::write(&path, bytes).expect("write the journal");
    let first = crate::standby::spool::Spool::load(&dir, true).expect("a journal loads");
    let len = std::fs::metadata(&path).expect("journal").len();
    assert!(len <= bytes.len() as u64, "repair grew the journal");
    let again = crate::standby::spool::Spool::load(&dir, true).expect("a journal loads");
    assert_eq!(
        std::fs::metadata(&path).expect("journal").len(),
        len,
        "a repaired journal was cut again"
    );
    assert_eq!(first.pending_bytes(), again.pending_bytes());
    assert_eq!(first.last_as_of(), again.last_as_of());
    assert_eq!(first.is_empty(), again.is_empty());
}

/// `spool_journal`: records described by the input, sealed
/// ([`seal_records`]); first byte odd: the bytes as they are instead.
pub fn spool_journal(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    if flags & 1 == 1 {
        load_journal(rest);
    } else {
        load_journal(&seal_records(rest));
    }
}

// ---------------------------------------------------------------------------
// The S3 archive (issue 30): its index object and the server's XML.

/// `archive_index`: an index object read back from the bucket. One that
/// decodes re-encodes to an index that decodes to the same.
pub fn archive_index(data: &[u8]) {
    use crate::primary::archive::index::decode;
    let Ok(ix) = decode(data, None) else {
        return;
    };
    assert!(ix.parts.len() <= crate::primary::archive::index::MAX_PARTS);
    assert!(ix.requires.iter().all(|r| r.as_str() < ix.set_id.as_str()));
    let again = decode(
        &serde_json::to_vec(&ix).expect("serializes"),
        Some(&ix.set_id),
    )
    .expect("a decoded index re-decodes");
    assert_eq!(again, ix);
}

/// `s3_xml`: a ListObjectsV2 page and an object-lock configuration as an
/// S3 server (or whoever answers in its place) sends them.
pub fn s3_xml(data: &[u8]) {
    if let Ok(page) = crate::wire::s3::parse_list(data, "p/") {
        assert!(page.keys.iter().all(|(k, _)| k.starts_with("p/")));
        assert!(!page.truncated || page.next.is_some());
    }
    let _ = crate::wire::s3::parse_lock(data);
    if let Ok(v) = crate::wire::s3::versions::parse_versions(data, "p/a") {
        assert!(v.len() <= crate::wire::s3::versions::MAX_VERSIONS);
        assert!(v.iter().all(
            |v| !v.version_id.is_empty() && v.version_id.bytes().all(|b| b.is_ascii_graphic())
        ));
    }
}

// ---------------------------------------------------------------------------
// The seed directory.

/// The parts the `seed_index` target's directory holds.
pub const SEED_PARTS: [(&str, &[u8]); 2] =
    [("part-000000", b"snapsite seed part"), ("part-000001", b"")];

/// `seed_index`: the input is `index.json` of a seed directory holding
/// [`SEED_PARTS`]; an index that opens is read to its end.
pub fn seed_index(data: &[u8]) {
    use std::io::Read;
    let dir = scratch("seed");
    for (name, bytes) in SEED_PARTS {
        if std::fs::metadata(dir.join(name)).map(|m| m.len()).ok() != Some(bytes.len() as u64) {
            std::fs::write(dir.join(name), bytes).expect("write a seed part");
        }
    }
    std::fs::write(dir.join(crate::primary::seed::INDEX), data).expect("write the index");
    let Ok((mut reader, index)) = crate::primary::seed::SeedReader::open(&dir) else {
        return;
    };
    assert!(
        index.parts.len() <= SEED_PARTS.len(),
        "an index of parts that are not there"
    );
    let mut out = Vec::new();
    if reader.read_to_end(&mut out).is_ok() {
        let want: u64 = index.parts.iter().map(|p| p.bytes).sum();
        assert_eq!(
            out.len() as u64,
            want,
            "a seed read other than its index says"
        );
    }
}

// ---------------------------------------------------------------------------
// LVM: the stream and the resume token.

/// `lvm_stream`: first byte: the piece size the payload arrives in (the
/// decoder is fed in pieces, as frames arrive); the rest is the payload.
/// Every record it reports lies within the header's device size, data
/// pieces add up to their write record, and feeding it whole reports the
/// same events.
pub fn lvm_stream(data: &[u8]) {
    let Some((&piece, payload)) = data.split_first() else {
        return;
    };
    let piece = piece as usize + 1;
    let whole = decode_lvm(payload, payload.len().max(1));
    let pieces = decode_lvm(payload, piece);
    assert_eq!(whole, pieces, "pieces of {piece} bytes decode differently");
}

/// Events of a decode (data pieces merged), and whether it ended in error.
fn decode_lvm(payload: &[u8], piece: usize) -> (Vec<String>, bool, bool) {
    let mut d = lvm::Decoder::default();
    let mut events: Vec<String> = Vec::new();
    let mut size: Option<u64> = None;
    let mut open: Option<(u64, u64)> = None; // next offset, bytes left of a W
    let mut err = false;
    for chunk in payload.chunks(piece) {
        let r = d.feed(chunk, &mut |ev| {
            match &ev {
                lvm::Event::Header(h) => {
                    assert!(size.is_none(), "a second header");
                    size = Some(h.size);
                    let _ = serde_json::to_string(h).expect("serializes");
                }
                lvm::Event::Write { offset, len } => {
                    assert!(open.is_none(), "a write record inside another");
                    let s = size.expect("a record before the header");
                    assert!(
                        *len > 0 && offset + *len as u64 <= s,
                        "write beyond the device"
                    );
                    open = Some((*offset, *len as u64));
                }
                lvm::Event::Data { offset, data } => {
                    let (at, left) = open.expect("data outside a write record");
                    assert_eq!(*offset, at, "data at the wrong offset");
                    assert!(
                        !data.is_empty() && data.len() as u64 <= left,
                        "too much data"
                    );
                    let left = left - data.len() as u64;
                    open = (left > 0).then_some((at + data.len() as u64, left));
                    // Pieces differ between the two decodes: merge them.
                    if let Some(last) = events.last_mut().filter(|l| l.starts_with("D ")) {
                        last.push_str(&format!("+{}", data.len()));
                    } else {
                        events.push(format!("D {offset} {}", data.len()));
                    }
                    return Ok(());
                }
                lvm::Event::Zero { offset, len } => {
                    assert!(open.is_none(), "a zero record inside a write");
                    let s = size.expect("a record before the header");
                    assert!(offset + len <= s, "zero beyond the device");
                }
                lvm::Event::End { .. } => assert!(open.is_none(), "end inside a write"),
            }
            events.push(format!("{ev:?}"));
            Ok(())
        });
        if r.is_err() {
            err = true;
            break;
        }
    }
    // Data pieces of one record are one entry whatever the piece size.
    let merged = events
        .into_iter()
        .map(|e| {
            if let Some(rest) = e.strip_prefix("D ") {
                let mut it = rest.split(' ');
                let off = it.next().unwrap_or("");
                let total: u64 = it
                    .next()
                    .unwrap_or("0")
                    .split('+')
                    .map(|n| n.parse::<u64>().unwrap_or(0))
                    .sum();
                format!("D {off} {total}")
            } else {
                e
            }
        })
        .collect();
    (merged, err, d.done())
}

/// `lvm_resume_token`: a token parses to a value whose tag parses back to it.
pub fn lvm_resume_token(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = lvm::ResumeToken::parse(s) {
        assert!(t.offset() <= t.high, "offset beyond high");
        let segs = t.segments();
        assert!(segs.iter().all(|(a, b)| a < b), "an empty segment");
        let again = lvm::ResumeToken::parse(&t.to_tag()).expect("its own tag parses");
        assert_eq!(again, t, "token does not round-trip");
    }
}

// ---------------------------------------------------------------------------
// ZFS: the stream's first record and the zfs tool's output.

/// `zfs_begin`: the first record of a stream, checked the way a receive
/// checks it against what the sender announced (a full stream, its own
/// guids, another base): accepted only when it is what was announced.
pub fn zfs_begin(data: &[u8]) {
    let Ok(b) = zfs::parse_begin(data) else {
        return;
    };
    check_wire(&b.toname);
    let snap = b.snapshot().unwrap_or("x").to_string();
    for (from, to) in [
        (None, None),
        (Some(b.fromguid), Some(b.toguid)),
        (Some(0), None),
        (Some(b.fromguid.wrapping_add(1)), None),
    ] {
        if zfs::check_begin(&b, &snap, from, to).is_ok() {
            assert!(!b.compound && b.snapshot() == Some(snap.as_str()));
            assert_eq!(b.fromguid, from.unwrap_or(0));
        }
    }
}

fn text(data: &[u8]) -> Option<(u8, &str)> {
    let (&sel, rest) = data.split_first()?;
    Some((sel, std::str::from_utf8(rest).ok()?))
}

/// `zfs_output`: first byte selects which `zfs`/`zpool` output parser.
pub fn zfs_output(data: &[u8]) {
    let Some((sel, t)) = text(data) else {
        return;
    };
    let dss = vec!["cap/mysql".to_string(), "cap/blob".to_string()];
    match sel % 7 {
        0 => {
            for n in zfs::parse_snapshot_list(&dss[0], t) {
                assert!(crate::base::model::parse_set_id(&n).is_some());
            }
        }
        1 => {
            let l = zfs::parse_dataset_listing(&dss, t);
            for (ds, snap, _) in &l.snaps {
                assert!(dss.contains(ds));
                let _ = l.has_snap(ds, snap);
                let _ = l.guid(ds, snap);
            }
        }
        2 => {
            let _ = zfs::only_missing_datasets(&dss, t);
        }
        3 => {
            if let Some(v) = zfs::parse_value(t) {
                assert!(!v.is_empty() && v != "-");
            }
            let _ = zfs::parse_token_toname(t);
        }
        4 => {
            let _ = zfs::parse_holds(t);
        }
        5 => {
            for (name, full) in zfs::parse_chain(&dss, t) {
                assert!(full.ends_with(&format!("@{name}")));
            }
        }
        _ => {
            let _ = zfs::pool_capacity_problem("tank", t);
        }
    }
}

// ---------------------------------------------------------------------------
// LVM tool output: lvs, thin_dump/thin_delta, dmsetup.

/// `lvs_json`: `lvs --reportformat json` (and `vgs`'), and what snapsite
/// asks of it.
pub fn lvs_json(data: &[u8]) {
    let Ok(t) = std::str::from_utf8(data) else {
        return;
    };
    // `vgs` answers in the same shape: the metadata area's room
    if let Ok(Some(m)) = lvm::parse_vg_mda(t, "mda") {
        let _ = (m.more_lvs(), lvm::mda_problem("mda", &m));
    }
    let Ok(all) = lvm::parse_lvs(t) else {
        return;
    };
    for lv in &all {
        let _ = (lv.is_thin(), lv.is_thin_pool(), lv.is_hidden());
        let _ = lv.is_invalid_snapshot();
        let _ = lv.tag_value(lvm::SET_TAG);
        let _ = lv.has_tag(lvm::TAG);
        let _ = lvm::dm_name(&lv.vg, &lv.name, Some("tpool"));
    }
    if let Some(first) = all.first() {
        let _ = lvm::snapshots_of(&all, &first.name);
        let _ = lvm::chain_of(&all, &first.name, &first.name);
    }
}

/// `thin_xml`: first byte: `thin_delta` (even) or `thin_dump` (odd) of
/// one device (bit 1 clear: id `sel / 4`) or of several (bit 1 set: ids
/// 0 to `sel / 4 % 8`, as the LVM meter asks for a pool's bases at once).
/// A dump yields only devices asked for, each at most once. The parsed
/// blocks become byte extents of a device as a send does, which must lie
/// within the device, in order, without overlap.
pub fn thin_xml(data: &[u8]) {
    let Some((sel, t)) = text(data) else {
        return;
    };
    let size = 1u64 << 40;
    let check = |extents: &[lvm::Extent]| {
        let mut end = 0u64;
        for e in extents {
            assert!(e.len > 0, "an empty extent");
            assert!(e.offset >= end, "extents overlap or are out of order");
            end = e.offset.checked_add(e.len).expect("extent end overflows");
            assert!(end <= size, "extent beyond the device");
        }
    };
    if sel % 2 == 0 {
        let Ok(d) = lvm::parse_thin_delta(t) else {
            return;
        };
        check(&lvm::delta_extents(&d, size));
        return;
    }
    let ids: Vec<u64> = if sel & 2 == 0 {
        vec![u64::from(sel / 4)]
    } else {
        (0..=u64::from(sel / 4 % 8)).collect()
    };
    let Ok(maps) = lvm::parse_thin_dump_devs(t, &ids) else {
        return;
    };
    let mut seen = Vec::new();
    for m in &maps {
        assert!(
            ids.contains(&m.dev_id),
            "device {} was not asked for",
            m.dev_id
        );
        assert!(!seen.contains(&m.dev_id), "device {} twice", m.dev_id);
        seen.push(m.dev_id);
        check(&lvm::mapping_extents(m, size));
    }
}

/// `dmsetup`: `dmsetup status`/`table` of a thin pool.
pub fn dmsetup(data: &[u8]) {
    let Some((sel, t)) = text(data) else {
        return;
    };
    match sel % 3 {
        0 => {
            let _ = lvm::parse_held_root(t);
        }
        1 => {
            if let Ok(u) = lvm::parse_pool_usage(t) {
                let _ = u.percents();
                let _ = u.data_headroom(lvm::POOL_LIMIT_PERCENT);
                let _ = u.meta_ok(lvm::POOL_LIMIT_PERCENT);
            }
        }
        _ => {
            if let Ok(bs) = lvm::parse_pool_block_size(t) {
                assert!(bs > 0 && bs % 512 == 0);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// btrfs and the mount table.

/// `btrfs_vet`: the receive-side check of a btrfs send stream
/// (`backend::btrfs_vet::StreamVet`). The input fed whole and fed in
/// pieces (of 1 to 64 bytes, from its first byte) must get the same
/// verdict and pass on the same bytes; a verdict never passes on more than
/// was taken.
pub fn btrfs_vet(data: &[u8]) {
    fn vet(data: &[u8], step: usize) -> std::result::Result<usize, String> {
        let mut v = crate::backend::btrfs_vet::StreamVet::new();
        let mut passed = 0;
        for piece in data.chunks(step) {
            let n = v.feed(piece)?;
            assert!(
                n <= v.pending().len(),
                "vetted {n} of {}",
                v.pending().len()
            );
            v.consume(n);
            passed += n;
        }
        v.finish()?;
        Ok(passed)
    }
    let step = 1 + usize::from(data.first().copied().unwrap_or(0)) % 64;
    assert_eq!(vet(data, data.len().max(1)), vet(data, step), "step {step}");
}

/// `signals_btrfs`: the standby's ransomware signals of a btrfs send
/// stream (standby::signals). Never panics; fed whole or in pieces (of 1
/// to 64 bytes, from its first byte) it counts the same; the counts stay
/// within what was fed.
pub fn signals_btrfs(data: &[u8]) {
    let step = 1 + usize::from(data.first().copied().unwrap_or(0)) % 64;
    signals_same_however_cut("btrfs", None, data, step);
}

/// `signals_zfs`: the standby's ransomware signals of a ZFS send stream
/// (standby::signals::zfs), against a base taken at a fixed time. Never
/// panics; fed whole or in pieces (of 1 to 64 bytes, from its first byte)
/// it counts the same; the counts stay within what was fed.
pub fn signals_zfs(data: &[u8]) {
    let base = crate::base::catalog::signals::VolumeSignals {
        snapshot_time: Some(1_796_594_888),
        ..Default::default()
    };
    let step = 1 + usize::from(data.first().copied().unwrap_or(0)) % 64;
    signals_same_however_cut("zfs", Some(&base), data, step);
}

/// `signals_lvm`: the standby's ransomware signals of an LVM stream
/// (standby::signals::lvm: the overwritten ranges its header names). Never
/// panics; fed whole or in pieces it counts the same; the counts stay
/// within what was fed.
pub fn signals_lvm(data: &[u8]) {
    let step = 1 + usize::from(data.last().copied().unwrap_or(0)) % 64;
    let whole = signals_same_however_cut("lvm", None, data, step);
    assert!(whole.data_bytes <= whole.stream_bytes);
}

/// The signals `parser`'s meter gives for `data` (after `base`, if any),
/// fed whole and in pieces of `step` bytes: the same, and within what was
/// fed. Returns the whole feed's signals.
fn signals_same_however_cut(
    parser: &str,
    base: Option<&crate::base::catalog::signals::VolumeSignals>,
    data: &[u8],
    step: usize,
) -> crate::base::catalog::signals::VolumeSignals {
    let measure = |step: usize| {
        let mut m = crate::standby::signals::Meter::new(parser, true, false);
        if base.is_some() {
            m.know_base(base);
        }
        for piece in data.chunks(step) {
            m.feed(piece);
        }
        let mut s = m.finish();
        s.cpu_us = 0;
        s
    };
    let whole = measure(data.len().max(1));
    assert_eq!(whole, measure(step), "step {step}");
    assert_eq!(whole.stream_bytes, data.len() as u64);
    assert!(whole.rewrite_bytes <= whole.data_bytes);
    assert!(whole.incompressible_blocks <= whole.sampled_blocks);
    assert!(whole.rewrite_incompressible_blocks <= whole.rewrite_sampled_blocks);
    whole
}

/// `btrfs_show`: `btrfs subvolume show`.
pub fn btrfs_show(data: &[u8]) {
    let Ok(t) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(i) = btrfs::parse_subvolume_show(t) {
        assert!(!i.uuid.is_empty());
    }
}

/// `mountinfo`: `/proc/self/mountinfo`, and the lookups on it.
pub fn mountinfo(data: &[u8]) {
    let Ok(t) = std::str::from_utf8(data) else {
        return;
    };
    let mounts = crate::base::mountinfo::parse(t);
    for m in &mounts {
        let _ = m.describe();
        let _ = crate::base::mountinfo::top_at(&mounts, &m.mount_point);
        assert!(crate::base::mountinfo::is_mount_point(
            &mounts,
            &m.mount_point
        ));
    }
    for field in t.split_whitespace().take(64) {
        let _ = crate::base::mountinfo::unescape(field);
    }
}

// ---------------------------------------------------------------------------
// The DR verbs' handshake with the peer (failback, switchover).

/// This site's state for the peer targets, from the input's first 17 bytes:
/// its role (bit 0: primary), its generation, and the highest generation it
/// has seen (never below its own). The rest is the peer's part.
fn local_state(data: &[u8]) -> Option<(crate::base::site::Role, u64, u64, &[u8])> {
    if data.len() < 17 {
        return None;
    }
    let role = if data[0] & 1 == 1 {
        crate::base::site::Role::Primary
    } else {
        crate::base::site::Role::Standby
    };
    let own = u64::from_le_bytes(data[1..9].try_into().expect("8 bytes"));
    let seen = u64::from_le_bytes(data[9..17].try_into().expect("8 bytes")).max(own);
    Some((role, own, seen, &data[17..]))
}

/// What must hold of a decoded welcome and of both verbs' verdicts on it,
/// whatever the peer sent: names valid and lists bounded; failback adopts
/// only a primary's generation above this site's and at most one above
/// what it has seen (no wrap: 2^64-1 only after 2^64-2 was seen);
/// switchover hands the role only to a standby in no newer generation.
pub fn check_peer(msg: &Msg, role: crate::base::site::Role, own: u64, seen: u64) {
    use crate::dr::failback::{self, MAX_PEER_NAMES, MAX_PEER_SITE_LEN, MAX_PEER_VOLUMES};
    let Ok(claim) = failback::decode_welcome(msg) else {
        return;
    };
    assert!(!claim.site.is_empty() && claim.site.len() <= MAX_PEER_SITE_LEN);
    check_wire(&claim.site);
    assert!(claim.volumes.len() <= MAX_PEER_VOLUMES);
    let names: usize =
        claim.volumes.values().map(|v| v.len()).sum::<usize>() + claim.committed.len();
    assert!(names <= MAX_PEER_NAMES, "{names} names accepted");
    for (r, snaps) in &claim.volumes {
        assert!(
            crate::base::model::validate_role(r).is_ok(),
            "role {r:?} accepted"
        );
        for n in snaps {
            assert!(
                crate::base::model::parse_set_id(n).is_some(),
                "snapshot {n:?} accepted"
            );
        }
    }
    for id in &claim.committed {
        assert!(
            crate::base::model::parse_set_id(id).is_some(),
            "set {id:?} accepted"
        );
    }
    if let Ok(g) = failback::failback_verdict(&claim, role, own, seen) {
        assert_eq!(g, claim.generation);
        assert_eq!(
            claim.role,
            crate::base::site::Role::Primary,
            "failback to a standby"
        );
        assert!(
            g > own,
            "failback to generation {g}, not above this site's {own}"
        );
        // At most one above what was seen, without wrapping (at the top of
        // the range, what was seen itself).
        assert!(
            g <= seen || seen.checked_add(1).is_some_and(|b| g <= b),
            "failback adopted generation {g} having seen {seen}"
        );
    }
    if let Ok(g) = failback::switchover_verdict(&claim, own, seen) {
        assert_eq!(g, claim.generation);
        assert_eq!(
            claim.role,
            crate::base::site::Role::Standby,
            "switchover to a primary"
        );
        assert!(
            g <= own,
            "switchover to a peer in generation {g} above {own}"
        );
    }
}

/// `peer_welcome`: this site's state (17 bytes, see [`local_state`]), then
/// the peer's welcome as a control message's JSON body.
pub fn peer_welcome(data: &[u8]) {
    let Some((role, own, seen, rest)) = local_state(data) else {
        return;
    };
    if let Ok(m) = serde_json::from_slice::<Msg>(rest) {
        check_peer(&m, role, own, seen);
    }
}

/// `peer_handshake`: this site's state (17 bytes), then the peer's side of
/// the handshake as frames described the [`seal_frames`] way: its first
/// message is read as the welcome is (magic, one control frame), then
/// decoded and judged.
pub fn peer_handshake(data: &[u8]) {
    let Some((role, own, seen, rest)) = local_state(data) else {
        return;
    };
    let mut r = Reader::new(Cursor::new(seal_frames(rest)));
    if r.magic().is_err() {
        return;
    }
    if let Ok(m) = r.msg() {
        check_peer(&m, role, own, seen);
    }
}

/// A byte-input target.
pub type Target = fn(&[u8]);

/// Every byte-input target by name (the seed corpus, the tests; the
/// `serve_session` target takes `arbitrary` steps instead).
pub const TARGETS: &[(&str, Target)] = &[
    ("frame_raw", frame_raw),
    ("frames", frames),
    ("control_msg", control_msg),
    ("manifest", manifest),
    ("spool_journal", spool_journal),
    ("seed_index", seed_index),
    ("archive_index", archive_index),
    ("s3_xml", s3_xml),
    ("lvm_stream", lvm_stream),
    ("lvm_resume_token", lvm_resume_token),
    ("zfs_begin", zfs_begin),
    ("zfs_output", zfs_output),
    ("lvs_json", lvs_json),
    ("thin_xml", thin_xml),
    ("dmsetup", dmsetup),
    ("btrfs_vet", btrfs_vet),
    ("signals_btrfs", signals_btrfs),
    ("signals_zfs", signals_zfs),
    ("signals_lvm", signals_lvm),
    ("btrfs_show", btrfs_show),
    ("mountinfo", mountinfo),
    ("peer_welcome", peer_welcome),
    ("peer_handshake", peer_handshake),
];
