//! The catalog's manifests and their index (`sets.index`).

use super::index::codec;
use super::*;
use crate::base::model::{Member, SetKind};

fn manifest(id: &str, seq: u64, snapshot: &str) -> Manifest {
    let t: Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
    let members = vec![Member::plain("mysql", snapshot, t)];
    Manifest {
        seq,
        ..Manifest::plain(id, SetKind::Full, "p", members)
    }
}

/// What `manifests` must return: every file read, ignoring the index, in
/// the catalog's order (the truth; `summary`'s tests use it too).
pub(super) fn from_files(c: &Catalog) -> Vec<Manifest> {
    let mut v: Vec<Manifest> = std::fs::read_dir(c.root().join("sets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| read_json(&p).unwrap())
        .collect();
    v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    v
}

/// What a new process would take from the index for each manifest file
/// (an entry only while its file's stamp holds), oldest first.
fn indexed(c: &Catalog) -> Vec<Manifest> {
    let text = std::fs::read_to_string(c.root().join("sets.index")).unwrap();
    let ix = codec::parse(&text).expect("an index");
    let mut v: Vec<Manifest> = from_files(c)
        .iter()
        .filter_map(|m| {
            let md = std::fs::metadata(c.set_path(&m.id)).unwrap();
            let e = ix.entries.get(m.id.as_str())?;
            (e.stamp == index::FileStamp::of(&md))
                .then(|| codec::decode(e.manifest))
                .flatten()
        })
        .collect();
    v.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    v
}

fn index_lines(c: &Catalog) -> Vec<String> {
    std::fs::read_to_string(c.root().join("sets.index"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "20261127T{:02}{:02}{:02}.000Z-full",
                i / 3600,
                i / 60 % 60,
                i % 60
            )
        })
        .collect()
}

/// A manifest per id, numbered from `first_seq`.
fn write_all(c: &Catalog, ids: &[String], first_seq: u64) {
    for (seq, id) in (first_seq..).zip(ids) {
        c.write_manifest(&manifest(id, seq, id)).unwrap();
    }
}

/// No temporary file left in state_dir.
fn nothing_but_sets_and_index(c: &Catalog) {
    let names: Vec<String> = std::fs::read_dir(c.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "sets" || n == "sets.index"),
        "{names:?}"
    );
}

fn forget_process_cache(c: &Catalog) {
    c.forget_process_cache();
}

#[test]
fn manifests_read_again_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    assert!(c.manifests().unwrap().is_empty());
    let ids = ids(5);
    write_all(&c, &ids, 1);
    assert_eq!(c.manifests().unwrap(), from_files(&c));

    // Changes are seen by this process (what it remembers is checked
    // against the files) and by a new one.
    for fresh_process in [false, true] {
        // rewritten with other content of the same size
        let mut m = manifest(&ids[1], 2, &ids[1]);
        m.site = if fresh_process { "q" } else { "r" }.into();
        c.write_manifest(&m).unwrap();
        c.remove_manifest(&ids[if fresh_process { 2 } else { 3 }])
            .unwrap();
        let new_id = if fresh_process {
            "20261127T090000.000Z-full"
        } else {
            "20261127T090001.000Z-full"
        };
        c.write_manifest(&manifest(new_id, 9, new_id)).unwrap();
        if fresh_process {
            forget_process_cache(&c);
        }
        let got = c.manifests().unwrap();
        assert_eq!(got, from_files(&c));
        assert!(got.iter().any(|x| x.id == ids[1] && x.site == m.site));
    }

    // A manifest file damaged after it was read is still an error
    // naming it.
    let p = c.root().join("sets").join(format!("{}.json", ids[0]));
    let good = std::fs::read(&p).unwrap();
    std::fs::write(&p, b"{ not json").unwrap();
    let e = c.manifests().unwrap_err().to_string();
    assert!(e.contains(&ids[0]), "{e}");
    write_atomic(&p, &good).unwrap();
    assert_eq!(c.manifests().unwrap(), from_files(&c));
}

#[test]
fn set_index_round_trips_every_field() {
    use crate::base::model::{Consistency, Receipt, StandbyOrder};
    let id = "20261127T080000.000Z-full";
    let mut m = manifest(id, 7, id);
    let t: Timestamp = "2026-11-27T08:00:00.123456789Z".parse().unwrap();
    m.committed_at = Some(t);
    m.standby_order = Some(StandbyOrder {
        generation: 3,
        commit: 41,
    });
    m.safety_margin_ms = -5;
    let mut other = m.members[0].clone();
    other.role = "redolog".into();
    other.source = "tank/a b\tc".into();
    other.storage_id = Some("=~+".into());
    other.atomic_group = Some(2);
    other.send_options = vec!["-w".into(), String::new()];
    other.receipt = Some(Receipt {
        base: Some("20261127T070000.000Z-full".into()),
        bytes: u64::MAX,
        blake3: "ab".repeat(32),
        received_at: t,
        storage_id: None,
        set_id: Some(id.into()),
        sender_storage_id: Some("u".into()),
    });
    other.consistency = Some(Consistency::CrashConsistent {
        reason: "hook\tfailed:\n\\ \r\u{e9}".into(),
    });
    m.members[0].consistency = Some(Consistency::Quiesced);
    m.members.push(other);
    let enc = codec::encode(&m);
    assert!(!enc.contains('\n'), "one line: {enc:?}");
    assert_eq!(codec::decode(&enc), Some(m.clone()));
    // Cut anywhere or extended: never a manifest.
    for cut in 0..enc.len() {
        if enc.is_char_boundary(cut) {
            assert_eq!(codec::decode(&enc[..cut]), None, "{cut}");
        }
    }
    assert_eq!(codec::decode(&format!("{enc}\t1")), None);
}

#[test]
fn set_index_is_used_only_while_the_file_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let ids = ids(4);
    write_all(&c, &ids, 1);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    let index = c.root().join("sets.index");
    let text = std::fs::read_to_string(&index).unwrap();
    assert_eq!(text.lines().count(), 1 + ids.len(), "{text}");

    // The index is what a new process reads: an entry edited here (its
    // stamp left as it is) is believed...
    let mut edited = manifest(&ids[1], 2, &ids[1]);
    edited.site = "from-the-index".into();
    let line = text.lines().find(|l| l.starts_with(&ids[1])).unwrap();
    let stamp: Vec<&str> = line.split('\t').take(5).collect();
    let new_line = format!("{}\t{}", stamp.join("\t"), codec::encode(&edited));
    std::fs::write(&index, text.replace(line, &new_line)).unwrap();
    forget_process_cache(&c);
    let got = c.manifests().unwrap();
    assert!(got.iter().any(|m| m.site == "from-the-index"));
    // ... until the file changes (rewritten with its own content): then
    // the file is read, and its line appended (the later line counts).
    let p = c.root().join("sets").join(format!("{}.json", ids[1]));
    write_atomic(&p, &std::fs::read(&p).unwrap()).unwrap();
    forget_process_cache(&c);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert_eq!(indexed(&c), from_files(&c));

    // A damaged line or index costs a parse, never a wrong answer; a
    // removed file leaves the index.
    let text = std::fs::read_to_string(&index).unwrap();
    let line = text.lines().find(|l| l.starts_with(&ids[2])).unwrap();
    std::fs::write(&index, text.replace(line, &line[..line.len() / 2])).unwrap();
    c.remove_manifest(&ids[3]).unwrap();
    forget_process_cache(&c);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert_eq!(indexed(&c), from_files(&c));
    std::fs::write(&index, "garbage").unwrap();
    forget_process_cache(&c);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert_eq!(indexed(&c), from_files(&c));

    // A manifest damaged in place is an error naming it, whatever the
    // index holds.
    let p = c.root().join("sets").join(format!("{}.json", ids[0]));
    std::fs::write(&p, b"{ not json").unwrap();
    forget_process_cache(&c);
    let e = c.manifests().unwrap_err().to_string();
    assert!(e.contains(&ids[0]), "{e}");
}

#[test]
fn set_index_is_appended_to_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let ids = ids(40);
    write_all(&c, &ids[..30], 1);
    // Each commit wrote its line: the first listing parses no JSON.
    assert_eq!(indexed(&c), from_files(&c));
    c.manifests().unwrap();
    let index = c.root().join("sets.index");
    let before = std::fs::read(&index).unwrap();
    let ino = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&index).unwrap());
    let ino_before = ino();
    // A commit appends its manifest's line: the same file, its bytes kept,
    // one line more, and a new process needs no manifest parsed.
    write_all(&c, &ids[30..], 31);
    let after = std::fs::read(&index).unwrap();
    assert_eq!(ino(), ino_before);
    assert_eq!(&after[..before.len()], &before[..]);
    assert_eq!(index_lines(&c).len(), 1 + 40);
    assert_eq!(indexed(&c), from_files(&c));
    forget_process_cache(&c);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert_eq!(std::fs::read(&index).unwrap(), after, "nothing to append");

    // A kill during an append leaves a cut last line: it never decodes,
    // and the next line appended starts a line of its own.
    let cut = &after[..after.len() - 7];
    std::fs::write(&index, cut).unwrap();
    let extra = "20261127T235959.000Z-full";
    c.write_manifest(&manifest(extra, 99, extra)).unwrap();
    forget_process_cache(&c);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert_eq!(indexed(&c), from_files(&c));

    // Removals leave dead lines until they outnumber the live ones (plus
    // a margin): then one rewrite, one line per set.
    for id in &ids[..38] {
        c.remove_manifest(id).unwrap();
    }
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert!(index_lines(&c).len() > 1 + 3, "not yet compacted");
    let mut fewest = usize::MAX;
    for i in 0..100 {
        let id = format!("20261128T0000{:02}.{:03}Z-full", i / 10, i % 10);
        c.write_manifest(&manifest(&id, 200 + i, &id)).unwrap();
        c.remove_manifest(&id).unwrap();
        c.manifests().unwrap();
        let n = index_lines(&c).len();
        assert!(n <= 1 + 2 * 3 + 64, "{n} lines for 3 sets");
        fewest = fewest.min(n);
    }
    assert_eq!(fewest, 1 + 3, "compacted");
    forget_process_cache(&c);
    assert_eq!(c.manifests().unwrap(), from_files(&c));
    assert_eq!(indexed(&c), from_files(&c));
    nothing_but_sets_and_index(&c);
}

/// A compaction killed (SIGKILL) at random moments leaves no file behind
/// once the next command has run, and never a wrong index.
#[test]
fn set_index_compaction_killed_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    write_all(&c, &ids(300), 1);
    c.manifests().unwrap();
    let mut left_at_kill = 0;
    let marks = tempfile::tempdir().unwrap();
    for round in 0..8u64 {
        let started = marks.path().join(format!("started-{round}"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "base::catalog::tests::compact_until_killed",
                "--exact",
                "--ignored",
                "--quiet",
            ])
            .env(COMPACT_DIR, dir.path())
            .env(COMPACT_STARTED, &started)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Killed at some point of a later compaction, once the child has
        // done its first (its start takes long on a loaded machine).
        let t0 = std::time::Instant::now();
        while !started.exists() && t0.elapsed() < std::time::Duration::from_secs(60) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(started.exists(), "round {round}: the child did not start");
        std::thread::sleep(std::time::Duration::from_millis(1 + round * 3));
        child.kill().unwrap();
        child.wait().unwrap();
        left_at_kill += usize::from(dir.path().join(index::TMP_NAME).exists());
        forget_process_cache(&c);
        assert_eq!(c.manifests().unwrap(), from_files(&c));
        nothing_but_sets_and_index(&c);
    }
    // The link-to-rename window is two system calls.
    assert!(
        left_at_kill <= 2,
        "{left_at_kill} of 8 kills left the temp name"
    );
}

const COMPACT_DIR: &str = "SNAPSITE_TEST_COMPACT_DIR";
/// A file the child creates after its first compaction.
const COMPACT_STARTED: &str = "SNAPSITE_TEST_COMPACT_STARTED";

/// The child of `set_index_compaction_killed_leaves_nothing`: compacts
/// the index (a damaged index is rewritten whole) until it is killed.
#[test]
#[ignore = "run by set_index_compaction_killed_leaves_nothing"]
fn compact_until_killed() {
    let Some(dir) = std::env::var_os(COMPACT_DIR) else {
        return;
    };
    let c = Catalog::new(Path::new(&dir));
    let started = std::env::var_os(COMPACT_STARTED).unwrap();
    for n in 0.. {
        c.forget_process_cache();
        std::fs::write(c.set_index_path(), "damaged").unwrap();
        c.manifests().unwrap();
        if n == 0 {
            std::fs::write(&started, b"").unwrap();
        }
    }
}

/// `standby.head.json`: what `status` reads of a standby's record — the
/// newest held snapshot per role, the newest committed set and committed
/// full set — written beside `standby.json` by its writer, used only while
/// `standby.json` keeps the stamp it recorded; otherwise (rewritten behind
/// its back, garbage, missing) the record is read whole and cut.
#[test]
fn standby_head_is_the_records_newest_and_never_outlives_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let set = |i: usize, kind: &str| format!("20261127T0800{i:02}.000Z-{kind}");
    let mut r = StandbyRecord {
        standby: "local".into(),
        ..StandbyRecord::default()
    };
    for i in 0..40 {
        let kind = if i % 4 == 0 { "full" } else { "redolog" };
        r.committed.insert(set(i, kind));
        for role in ["mysql", "redolog"] {
            r.holds
                .entry(role.to_string())
                .or_default()
                .insert(set(i, kind));
        }
    }
    let head = r.head();
    assert_eq!(
        head.committed.iter().cloned().collect::<Vec<_>>(),
        [set(36, "full"), set(39, "redolog")],
        "the newest full set and the newest set"
    );
    for role in ["mysql", "redolog"] {
        assert_eq!(head.newest(role), r.newest(role));
        assert_eq!(head.holds[role].len(), 1);
    }
    for name in ["standby", "far"] {
        c.write_standby_record_of(name, &r).unwrap();
        let hp = if name == "standby" {
            dir.path().join("standby.head.json")
        } else {
            dir.path().join("standbys/far/standby.head.json")
        };
        assert!(hp.exists(), "{name}: written");
        // Read from the head: the record read whole is not needed, so a
        // head that says something else (here: planted) is what it reads.
        let mut planted: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&hp).unwrap()).unwrap();
        assert_eq!(c.standby_head_of(name).unwrap(), Some(head.clone()));
        planted["record"]["committed"] = serde_json::json!([set(1, "redolog")]);
        std::fs::write(&hp, planted.to_string()).unwrap();
        assert_eq!(
            c.standby_head_of(name).unwrap().unwrap().committed.len(),
            1,
            "{name}: the head is what status reads"
        );
        // standby.json rewritten behind its back (an older snapsite): a
        // new file, a new stamp; the head is stale and not used.
        let mut r2 = r.clone();
        r2.committed.insert(set(50, "full"));
        let json = hp.with_file_name("standby.json");
        write_json(&json, &r2).unwrap();
        assert_eq!(c.standby_head_of(name).unwrap(), Some(r2.head()), "{name}");
        // Garbage or missing: read whole.
        std::fs::write(&hp, b"{\"of\":").unwrap();
        assert_eq!(c.standby_head_of(name).unwrap(), Some(r2.head()));
        std::fs::remove_file(&hp).unwrap();
        assert_eq!(c.standby_head_of(name).unwrap(), Some(r2.head()));
        // The writer writes both again; the records go together.
        c.write_standby_record_of(name, &r2).unwrap();
        assert_eq!(c.standby_head_of(name).unwrap(), Some(r2.head()));
        c.remove_standby_records(name).unwrap();
        assert!(!hp.exists() && !json.exists(), "{name}: removed");
        assert_eq!(c.standby_head_of(name).unwrap(), None);
    }
    assert_eq!(
        c.standby_heads().unwrap(),
        Vec::<(String, StandbyRecord)>::new()
    );
}

/// `set_heads`: the heads of exactly the manifests `manifests` returns, in
/// the same order, whatever state the index and this process's memory
/// are in — a new process reading the index, manifests changed or removed
/// behind it, a file the index lacks (read whole and indexed), heads
/// before and after whole reads in one process; a damaged manifest file is
/// the same error naming it.
#[test]
fn set_heads_are_the_heads_of_the_manifests() {
    use crate::base::model::StandbyOrder;
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let heads = |c: &Catalog| -> Vec<SetHead> { from_files(c).iter().map(SetHead::of).collect() };
    assert!(c.set_heads().unwrap().is_empty());
    let ids = ids(9);
    write_all(&c, &ids, 1);
    // Some committed with a standby order that ranks them otherwise than
    // their sequence (the catalog's order is the order key's).
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        let mut m = manifest(id, 1 + i as u64, id);
        m.committed_at = Some("2026-11-28T08:00:00Z".parse().unwrap());
        m.standby_order = Some(StandbyOrder {
            generation: 2,
            commit: 100 - i as u64,
        });
        c.write_manifest(&m).unwrap();
    }
    for fresh_process in [true, false] {
        if fresh_process {
            forget_process_cache(&c);
        }
        assert_eq!(c.set_heads().unwrap(), heads(&c), "fresh {fresh_process}");
        // Whole after heads only (the process remembers heads): whole.
        assert_eq!(c.manifests().unwrap(), from_files(&c));
        assert_eq!(c.set_heads().unwrap(), heads(&c));
    }
    // Behind the index's back: one rewritten by hand (another generation),
    // one removed, one new file the index lacks.
    let mut m = manifest(&ids[4], 5, &ids[4]);
    m.generation = 7;
    write_json(&c.set_path(&ids[4]), &m).unwrap();
    std::fs::remove_file(c.set_path(&ids[5])).unwrap();
    let new_id = "20261127T100000.000Z-redolog";
    let mut n = manifest(new_id, 50, new_id);
    n.kind = SetKind::Redolog;
    write_json(&c.set_path(new_id), &n).unwrap();
    for fresh_process in [false, true] {
        if fresh_process {
            forget_process_cache(&c);
        }
        let got = c.set_heads().unwrap();
        assert_eq!(got, heads(&c), "fresh {fresh_process}");
        assert!(got.iter().any(|h| h.id == ids[4] && h.generation == 7));
        assert!(
            got.iter()
                .any(|h| h.id == new_id && h.kind == SetKind::Redolog)
        );
        assert!(!got.iter().any(|h| h.id == ids[5]));
    }
    // The new file is indexed now: a new process finds its line.
    assert!(index_lines(&c).iter().any(|l| l.starts_with(new_id)));
    // A damaged manifest file: the same error as `manifests`.
    let p = c.set_path(&ids[0]);
    let good = std::fs::read(&p).unwrap();
    std::fs::write(&p, b"{ not json").unwrap();
    let e = c.set_heads().unwrap_err().to_string();
    assert!(e.contains(&ids[0]), "{e}");
    write_atomic(&p, &good).unwrap();
    forget_process_cache(&c);
    assert_eq!(c.set_heads().unwrap(), heads(&c));
    // The heads' order is the manifests' order key.
    let h = c.set_heads().unwrap();
    let ms = c.manifests().unwrap();
    assert_eq!(
        h.iter().map(|h| h.order_key()).collect::<Vec<_>>(),
        ms.iter().map(|m| m.order_key()).collect::<Vec<_>>()
    );
}

/// The head decoder reads the first tokens of a manifest's line in the
/// order the codec writes them: for manifests with every head field set
/// and unset it gives back `SetHead::of`; a line cut anywhere (even after
/// the head, or in a number that would still parse) gives none.
#[test]
fn the_head_decoder_agrees_with_the_codec() {
    use crate::base::model::StandbyOrder;
    let id = "20261127T080000.000Z-redolog";
    let t: Timestamp = "2026-11-27T08:00:00.123456789Z".parse().unwrap();
    let mut variants = Vec::new();
    let mut m = manifest(id, 7, id);
    m.kind = SetKind::Redolog;
    variants.push(m.clone());
    m.site = "p\tq=~+$".into();
    m.generation = 4;
    m.safety_margin_ms = -3;
    m.committed_at = Some(t);
    m.standby_order = Some(StandbyOrder {
        generation: 5,
        commit: 9,
    });
    variants.push(m.clone());
    m.standby_order = None;
    m.seq = u64::MAX;
    variants.push(m);
    for m in variants {
        let enc = codec::encode(&m);
        let head = codec::decode_head(&enc).expect("a head");
        assert_eq!(head, SetHead::of(&m));
        assert_eq!(head.order_key(), m.order_key());
        for cut in 0..enc.len() {
            if enc.is_char_boundary(cut) {
                assert_eq!(codec::decode_head(&enc[..cut]), None, "{cut}");
            }
        }
    }
}

/// A writer of `standby.json` killed midway leaves `.standby.json.tmp.<pid>`
/// or `.standby.head.json.tmp.<pid>`: the next writer of that standby's
/// records removes those of dead processes, never a live writer's.
#[test]
fn the_next_standby_record_writer_removes_a_dead_writers_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let r = StandbyRecord {
        standby: "local".into(),
        ..StandbyRecord::default()
    };
    for (name, sub) in [("standby", ""), ("far", "standbys/far")] {
        let d = dir.path().join(sub);
        std::fs::create_dir_all(&d).unwrap();
        let files = [
            (format!(".standby.head.json.tmp.{dead}"), false),
            (format!(".standby.json.tmp.{dead}"), false),
            // pid 1 is alive: a writer at work.
            (".standby.head.json.tmp.1".to_string(), true),
            // not a temp of these records
            (format!(".peer.json.tmp.{dead}"), true),
        ];
        for (f, _) in &files {
            std::fs::write(d.join(f), b"{").unwrap();
        }
        c.write_standby_record_of(name, &r).unwrap();
        for (f, kept) in &files {
            assert_eq!(d.join(f).exists(), *kept, "{name}: {f}");
        }
        assert_eq!(c.standby_head_of(name).unwrap(), Some(r.head()));
    }
}

/// A stamp's (size, inode, mtime, ctime).
type Stamp = (u64, u64, i128, i128);

/// An index's entries (id, stamp, manifest tokens; by id) and its count
/// of lines.
type Parsed = (Vec<(String, Stamp, String)>, usize);

/// The index parser this version replaced (`str::lines`, `splitn(6,
/// '\t')`, `str::parse`, a map of the last line of each id): the
/// reference the hand parser must equal on any text, so that it accepts
/// and refuses exactly what it did.
fn reference_parse(text: &str) -> Option<Parsed> {
    let mut it = text.lines();
    if it.next() != Some(codec::MAGIC) {
        return None;
    }
    let mut entries = std::collections::HashMap::new();
    let mut lines = 0;
    for l in it {
        lines += 1;
        let mut f = l.splitn(6, '\t');
        let mut split = || -> Option<(&str, Stamp, &str)> {
            let id = f.next()?;
            let stamp = (
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            );
            Some((id, stamp, f.next()?))
        };
        if let Some((id, stamp, manifest)) = split() {
            entries.insert(id, (stamp, manifest));
        }
    }
    let mut v: Vec<_> = entries
        .into_iter()
        .map(|(id, (s, m))| (id.to_string(), s, m.to_string()))
        .collect();
    v.sort();
    Some((v, lines))
}

/// What `codec::parse` made of `text`, in `reference_parse`'s form (and
/// every entry found again by `get`).
fn parsed(text: &str) -> Option<Parsed> {
    let ix = codec::parse(text)?;
    let mut v: Vec<_> = ix
        .entries
        .iter()
        .map(|(id, e)| (id.to_string(), e.stamp.parts(), e.manifest.to_string()))
        .collect();
    v.sort();
    assert_eq!(v.len(), ix.entries.len());
    for (id, stamp, manifest) in &v {
        let e = ix.entries.get(id).expect("found by get");
        assert_eq!((&e.stamp.parts(), e.manifest), (stamp, manifest.as_str()));
    }
    Some((v, ix.lines))
}

/// An index as the catalog writes it: some sets, one rewritten (two lines
/// of one id), one with a string needing escapes.
fn a_real_index() -> String {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let ids = ids(5);
    write_all(&c, &ids, 1);
    let mut m = manifest(&ids[2], 3, &ids[2]);
    m.site = "p\tq\\r\u{e9}".into();
    c.write_manifest(&m).unwrap();
    std::fs::read_to_string(c.root().join("sets.index")).unwrap()
}

/// The hand parser equals the reference on a real index, on every cut of
/// it (a kill during an append or a write) and on every ASCII byte of it
/// replaced by each byte that means something to a line's layout (a
/// damaged file): the same entries, the same last line per id, the same
/// count of lines, `None` for the same files.
#[test]
fn the_index_parser_accepts_and_refuses_what_the_reference_does() {
    let text = a_real_index();
    assert_eq!(text.lines().count(), 1 + 6, "{text}");
    let (entries, lines) = parsed(&text).expect("an index");
    assert_eq!((entries.len(), lines), (5, 6));
    assert_eq!(parsed(&text), reference_parse(&text));
    for cut in 0..=text.len() {
        if text.is_char_boundary(cut) {
            let t = &text[..cut];
            assert_eq!(parsed(t), reference_parse(t), "cut at {cut}");
        }
    }
    let mut tried = 0;
    for at in 0..text.len() {
        if !text.as_bytes()[at].is_ascii() {
            continue;
        }
        for b in [b'\t', b'\n', b'\r', b'+', b'-', b'0', b'9', b'x', b' '] {
            let mut bytes = text.clone().into_bytes();
            bytes[at] = b;
            let t = String::from_utf8(bytes).unwrap();
            assert_eq!(parsed(&t), reference_parse(&t), "byte {at} set to {b}");
            tried += 1;
        }
    }
    assert!(tried > 1000, "{tried}");
}

/// Stamp numbers at and past the hand parser's edges (19 digits, signs,
/// leading zeros, beyond u64 and i128) and odd line ends: as the
/// reference parses them.
#[test]
fn the_index_parser_reads_numbers_and_line_ends_as_the_reference_does() {
    let numbers = [
        "0",
        "7",
        "+7",
        "-7",
        "",
        "-",
        "+",
        "1 ",
        " 1",
        "9999999999999999999",
        "10000000000000000000",
        "18446744073709551615",
        "18446744073709551616",
        "000000000000000000000000012",
        "-170141183460469231731687303715884105728",
        "170141183460469231731687303715884105728",
        "1a",
        "٣",
    ];
    let mut text = format!("{}\n", codec::MAGIC);
    let mut n = 0;
    for a in numbers {
        for b in numbers {
            n += 1;
            text.push_str(&format!("id{n}\t{a}\t{a}\t{b}\t{b}\tm\t$\n"));
            text.push_str(&format!("jd{n}\t1\t{b}\t2\t{a}\t\n"));
        }
    }
    for tail in [
        "k\t1\t2\t3\t4\tm\r\n",
        "k2\t1\t2\t3\t4\tm\r\r\n",
        "\n\n",
        "\r\n",
        "k3\t1\t2\t3\t4",
        "k4\t1\t2\t3\t4\t",
        "k5\t1\t2\t3\t4\tm\r",
    ] {
        let t = format!("{text}{tail}");
        assert_eq!(parsed(&t), reference_parse(&t), "{tail:?}");
    }
    let (entries, _) = parsed(&text).unwrap();
    assert!(
        entries.len() > numbers.len(),
        "some parse: {}",
        entries.len()
    );
    assert!(entries.len() < 2 * n, "some do not: {}", entries.len());
    for head in [
        "",
        "\n",
        "snapsite-sets-index 1\n",
        "snapsite-sets-index 2\r\n",
        "x",
    ] {
        let t = format!("{head}a\t1\t2\t3\t4\tm\n");
        assert_eq!(parsed(&t), reference_parse(&t), "{head:?}");
    }
}

proptest::proptest! {
    /// Any text made of a line's pieces: as the reference parses it.
    #[test]
    fn the_index_parser_equals_the_reference_on_any_text(
        pieces in proptest::collection::vec(
            proptest::sample::select(vec![
                "\t", "\n", "\r", "1", "0", "+", "-", "x", "id", "$", "9999999999",
                "snapsite-sets-index 2\n", "=", "\u{e9}", "\nid\t1\t2\t3\t4\t=m\t$",
                "\nid\t", "1\t", "\t\t", "-1\t",
            ]),
            0..80,
        ),
        magic in proptest::bool::ANY,
    ) {
        let mut t = if magic { format!("{}\n", codec::MAGIC) } else { String::new() };
        t.extend(pieces);
        proptest::prop_assert_eq!(parsed(&t), reference_parse(&t));
    }
}

/// A cut or damaged index, read by a new process: every answer is the
/// files' (never a wrong one), and after that read a new process finds
/// every set in the index again (rebuilt by appended lines or a
/// compaction). The damage is of the kinds the index detects (a cut, a
/// line's layout broken); a number changed inside a line that still
/// decodes is believed, as before this parser (it is the site's own
/// cache, checked by the manifest file's stamp only).
#[test]
fn a_cut_or_damaged_index_costs_parses_never_a_wrong_answer() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let ids = ids(6);
    write_all(&c, &ids, 1);
    let index = c.root().join("sets.index");
    let good = std::fs::read_to_string(&index).unwrap();
    let heads = |c: &Catalog| -> Vec<SetHead> { from_files(c).iter().map(SetHead::of).collect() };
    let mut damaged = Vec::new();
    // Truncated: in the magic line, at a line's start, inside lines.
    for cut in [
        0,
        5,
        22,
        good.len() / 3,
        good.len() / 2,
        good.len() - 2,
        good.len() - 1,
    ] {
        damaged.push(good[..cut].to_string());
    }
    // Corrupted: a line's tabs, its end token, a stamp's digit made a
    // letter, a line end removed (two lines joined), a line doubled cut.
    let second = good.lines().nth(2).unwrap();
    damaged.push(good.replacen(second, &second.replacen('\t', " ", 1), 1));
    damaged.push(good.replacen(second, &second.replace("\t$", "\tx"), 1));
    damaged.push(good.replacen(second, &second.replacen("\t1", "\tz", 1), 1));
    damaged.push(good.replacen(&format!("{second}\n"), second, 1));
    damaged.push(good.replacen(second, &format!("{}\n{second}", &second[..40]), 1));
    damaged.push(good.replace('$', "%"));
    damaged.push(good.replacen("snapsite", "snapsitf", 1));
    for (i, text) in damaged.iter().enumerate() {
        std::fs::write(&index, text).unwrap();
        forget_process_cache(&c);
        assert_eq!(c.set_heads().unwrap(), heads(&c), "damage {i}");
        assert_eq!(c.manifests().unwrap(), from_files(&c), "damage {i}");
        assert_eq!(indexed(&c), from_files(&c), "damage {i}: rebuilt");
        forget_process_cache(&c);
        assert_eq!(c.set_heads().unwrap(), heads(&c), "damage {i}, again");
    }
}

proptest::proptest! {
    /// The codec's tokenizer gives what `split('\t')` gives, to the end.
    #[test]
    fn the_token_reader_is_split_at_tabs(
        pieces in proptest::collection::vec(
            proptest::sample::select(vec!["\t", "a", "=", "$", "\u{e9}", "\\t", "12"]),
            0..30,
        ),
    ) {
        let t: String = pieces.concat();
        let mut d = codec::Dec::new(&t);
        let mut split = t.split('\t');
        for _ in 0..=pieces.len() + 1 {
            proptest::prop_assert_eq!(d.tok(), split.next());
        }
    }
}

/// The sort of signal snapshots and verdicts: text order when every id is
/// canonical, equal to the comparison-by-comparison `by_set_id` order both
/// then and with ids that only the general parser takes (a leap second,
/// the year 9999) mixed in.
#[test]
fn set_id_sort_is_by_set_id_order() {
    use super::signals::{by_set_id, sort_by_set_id};
    let mut canonical: Vec<String> = (0..500u32)
        .map(|i| {
            let n = i.wrapping_mul(2_654_435_761) % 100_000;
            let kind = if n % 3 == 0 { "redolog" } else { "full" };
            format!(
                "2026{:02}{:02}T{:02}{:02}{:02}.{:03}Z-{kind}",
                1 + n % 12,
                1 + n % 28,
                n % 24,
                n % 60,
                (n / 7) % 60,
                n % 1000
            )
        })
        .collect();
    let reference = |v: &[String]| {
        let mut r = v.to_vec();
        r.sort_by(|a, b| by_set_id(a, b));
        r
    };
    let want = reference(&canonical);
    let mut text = canonical.clone();
    text.sort();
    assert_eq!(want, text, "canonical ids: time order is text order");
    sort_by_set_id(&mut canonical, |s| s.as_str());
    assert_eq!(canonical, want);
    let mut mixed = want.clone();
    mixed.reverse();
    for odd in [
        "20260630T235960.000Z-full",
        "99990101T000000.000Z-redolog",
        "20261231T235960.500Z-redolog",
    ] {
        assert!(crate::base::model::is_set_id(odd), "{odd}");
        assert!(crate::base::model::canonical_set_id(odd).is_none(), "{odd}");
        mixed.insert(mixed.len() / 2, odd.to_string());
    }
    // A canonical id that the leap second (read as :59.000) precedes in
    // time but follows as text: text order would be wrong here.
    mixed.push("20260630T235959.500Z-full".to_string());
    let want = reference(&mixed);
    let mut text = mixed.clone();
    text.sort();
    assert_ne!(
        want, text,
        "the mixed list tells time order from text order"
    );
    sort_by_set_id(&mut mixed, |s| s.as_str());
    assert_eq!(mixed, want);
}
