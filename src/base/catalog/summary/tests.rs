//! `sets.summary`: kept by the writers, stale when `sets/` changed behind
//! them, never stamped with a change too recent to trust.

use super::*;
use crate::base::catalog::tests::from_files;
use crate::base::model::Member;

fn manifest(id: &str, seq: u64, committed: bool) -> Manifest {
    let t: jiff::Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
    let kind = parse_set_id(id).unwrap().1;
    let roles: &[&str] = match kind {
        SetKind::Full => &["mysql", "redolog"],
        SetKind::Redolog => &["redolog"],
    };
    let members = roles.iter().map(|r| Member::plain(r, id, t)).collect();
    Manifest {
        seq,
        committed_at: committed.then_some(t),
        ..Manifest::plain(id, kind, "p", members)
    }
}

fn id(i: usize) -> String {
    let kind = if i % 4 == 0 { "full" } else { "redolog" };
    format!(
        "20261127T{:02}{:02}{:02}.000Z-{kind}",
        i / 3600,
        i / 60 % 60,
        i % 60
    )
}

/// A summary from every file, as a command that read them all writes it.
/// The clock as it will be once the directory's last change is settled.
fn later() -> i128 {
    wall_ns() + 2 * SETTLED.as_nanos() as i128
}

fn rebuild(c: &Catalog) {
    let before = c.sets_dir_stamp();
    c.summary_rebuilt_at(before, &from_files(c), later());
}

/// The summary agrees with the files: counts, and a tail that is their
/// newest sets, each decoding to its file's manifest.
fn agrees(c: &Catalog) -> Vec<Manifest> {
    let s = c.summary().expect("a valid summary");
    let all = from_files(c);
    for kind in [SetKind::Full, SetKind::Redolog] {
        let of: Vec<&Manifest> = all.iter().filter(|m| m.kind == kind).collect();
        let want = KindCount {
            recorded: of.len(),
            committed: of.iter().filter(|m| m.committed_at.is_some()).count(),
        };
        assert_eq!(s.count(kind), want, "{kind:?}");
    }
    let redo = all.iter().filter(|m| m.member("redolog").is_some()).count();
    assert_eq!(s.roles.get("redolog").copied().unwrap_or(0), redo);
    assert!(!s.tail.is_empty() || all.is_empty());
    let newest: Vec<Manifest> = s.newest(c).map(|m| m.unwrap()).collect();
    let want: Vec<Manifest> = all.iter().rev().take(newest.len()).cloned().collect();
    assert_eq!(newest, want, "the tail is the newest sets, as in the files");
    all
}

#[test]
fn writers_keep_it_and_it_agrees_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    for i in 0..10 {
        c.write_manifest(&manifest(&id(i), i as u64 + 1, false))
            .unwrap();
    }
    // Nothing rebuilt it yet: writers do not make one up.
    assert!(c.summary().is_none());
    rebuild(&c);
    let mut all = agrees(&c);
    let mut rebuilds = 0;
    // Writes, commits (a rewrite), removals: kept by the writers.
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = 10;
    for _ in 0..300 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        match rng % 4 {
            0 | 1 => {
                c.write_manifest(&manifest(&id(next), next as u64 + 1, false))
                    .unwrap();
                next += 1;
            }
            2 if !all.is_empty() => {
                let m = &all[(rng >> 8) as usize % all.len()];
                c.write_manifest(&manifest(&m.id, m.seq, true)).unwrap();
            }
            _ if !all.is_empty() => {
                // old ones mostly, as prune does; now and then any
                let span = if (rng >> 20) % 4 == 0 { all.len() } else { 8 };
                let i = (rng >> 8) as usize % all.len().min(span);
                c.remove_manifest(&all[i].id).unwrap();
            }
            _ => {}
        }
        if c.summary().is_none() {
            // Dropped only when its tail ran dry: a rebuild brings it back.
            rebuilds += 1;
            rebuild(&c);
        }
        all = agrees(&c);
    }
    assert_eq!(rebuilds, 0, "the writers kept it valid throughout");
    assert!(
        from_files(&c).len() > TAIL + 10,
        "the history outgrew the tail"
    );
}

#[test]
fn a_change_behind_the_writers_makes_it_stale() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    for i in 0..6 {
        c.write_manifest(&manifest(&id(i), i as u64 + 1, true))
            .unwrap();
    }
    rebuild(&c);
    assert!(c.summary().is_some());

    // A manifest added by hand (not through write_manifest).
    let extra = manifest(&id(6), 7, true);
    super::super::write_json(&c.set_path(&extra.id), &extra).unwrap();
    assert!(c.summary().is_none(), "a manifest it does not know");
    rebuild(&c);
    agrees(&c);

    // One removed by hand.
    std::fs::remove_file(c.set_path(&id(2))).unwrap();
    assert!(c.summary().is_none(), "a manifest gone");
    rebuild(&c);
    agrees(&c);

    // The newest edited in place (the directory does not change): the
    // summary stays, but that manifest is not taken from it.
    rebuild(&c);
    let path = c.set_path(&id(6));
    let mut m = extra.clone();
    m.site = "edited".into();
    let mut text = serde_json::to_vec_pretty(&m).unwrap();
    text.push(b'\n');
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap()
        .write_all(&text)
        .unwrap();
    let s = c.summary().expect("the directory did not change");
    assert_eq!(s.newest(&c).next(), Some(Err(id(6))));

    // A cut or damaged summary is not used.
    rebuild(&c);
    let p = dir.path().join("sets.summary");
    let whole = std::fs::read_to_string(&p).unwrap();
    for cut in [whole.len() / 2, whole.len() - 3, 10] {
        std::fs::write(&p, &whole[..cut]).unwrap();
        assert!(c.summary().is_none(), "cut at {cut}");
    }
    std::fs::write(&p, whole.replace("count\tfull\t", "count\tfull\tx")).unwrap();
    assert!(c.summary().is_none());
    std::fs::write(&p, &whole).unwrap();
    assert!(c.summary().is_some());
}

#[test]
fn never_stamped_with_a_change_too_recent_to_trust() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    c.write_manifest(&manifest(&id(0), 1, false)).unwrap();
    // The directory changed just now: a change in the same clock tick
    // could leave its stamp as it is, so no summary is written.
    let before = c.sets_dir_stamp();
    c.summary_rebuilt(before, &from_files(&c));
    assert!(!dir.path().join("sets.summary").exists());
    // Nor when it changed while the command read.
    let before = c.sets_dir_stamp();
    c.write_manifest(&manifest(&id(1), 2, false)).unwrap();
    c.summary_rebuilt_at(before, &from_files(&c), later());
    assert!(!dir.path().join("sets.summary").exists());
    // Settled and unchanged: written, and valid.
    rebuild(&c);
    agrees(&c);
}

use std::io::Write as _;
