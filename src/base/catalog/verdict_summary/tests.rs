//! `verdicts.summary`: rebuilt from the verdict files when missing, stale
//! or invalid; kept true by the writers; never stamped with a change too
//! recent to trust; and the temp files of killed summary writers removed.

use super::*;
use crate::base::catalog::summary::SETTLED;
use crate::base::catalog::{write_atomic, write_json};

fn id(i: usize) -> String {
    format!(
        "20261127T{:02}{:02}{:02}.000Z-full",
        i / 3600,
        i / 60 % 60,
        i % 60
    )
}

/// Set `i`'s verdict: every third suspect, every ninth of those cleared.
fn verdict(i: usize) -> SetVerdict {
    let suspect = i % 3 == 1;
    SetVerdict {
        set_id: id(i),
        verdict: if suspect {
            Verdict::Suspect
        } else {
            Verdict::Clean
        },
        score: 0.1 + i as f64 / 7.0,
        volumes: Vec::new(),
        judged_at: "2026-11-27T08:00:00Z".parse().unwrap(),
        cleared_at: (suspect && i % 9 == 7).then(|| "2026-11-28T08:00:00Z".parse().unwrap()),
    }
}

/// Written behind the summary's back (not through `write_verdict`).
fn write_by_hand(c: &Catalog, v: &SetVerdict) {
    write_json(&c.verdict_path(&v.set_id).unwrap(), v).unwrap();
}

/// The truth: every verdict file, read whole.
fn from_files(c: &Catalog) -> Vec<VerdictLine> {
    c.verdicts().unwrap().iter().map(VerdictLine::of).collect()
}

/// The clock once the directory's last change has settled.
fn later() -> i128 {
    super::super::summary::wall_ns() + 2 * SETTLED.as_nanos() as i128
}

/// A change the file system's coarse clock tells from the one before.
fn next_tick() {
    std::thread::sleep(std::time::Duration::from_millis(30));
}

fn site(n: usize) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    for i in 0..n {
        write_by_hand(&c, &verdict(i));
    }
    (dir, c)
}

fn summary_file(c: &Catalog) -> PathBuf {
    c.root().join(FILE)
}

#[test]
fn a_missing_summary_is_rebuilt_from_the_files_and_agrees_with_them() {
    let (_d, c) = site(30);
    assert!(!summary_file(&c).exists());
    let lines = c.verdict_lines_at(later()).unwrap();
    assert_eq!(lines, from_files(&c));
    assert_eq!(lines.len(), 30);
    // 1, 4, ... 28 suspect; 7, 16 and 25 of them cleared.
    assert_eq!(lines.iter().filter(|l| l.is_suspect()).count(), 7);
    assert_eq!(
        lines.iter().filter(|l| l.judged == Judged::Cleared).count(),
        3
    );
    // Written, stamped with the directory, and read back the same.
    let s = c.valid_verdict_summary().expect("a valid summary");
    assert_eq!(s.lines, lines);
    assert_eq!(c.verdict_lines().unwrap(), lines);
}

#[test]
fn a_directory_changed_too_recently_is_not_stamped() {
    let (_d, c) = site(5);
    let now = super::super::summary::wall_ns();
    assert_eq!(c.verdict_lines_at(now).unwrap(), from_files(&c));
    assert!(
        !summary_file(&c).exists(),
        "stamped with a change just made"
    );
}

#[test]
fn no_verdicts_directory_reads_as_none_judged() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    assert!(c.verdict_lines_at(later()).unwrap().is_empty());
    assert!(!summary_file(&c).exists());
}

#[test]
fn the_writers_keep_it_true() {
    let (_d, c) = site(10);
    c.verdict_lines_at(later()).unwrap();
    assert!(c.valid_verdict_summary().is_some());
    // A new suspect set, one older than the newest (ordered in), a
    // clearing, a removal: after each the summary is valid and the truth.
    type Step = Box<dyn Fn(&Catalog)>;
    let mut steps: Vec<Step> = vec![
        Box::new(|c| c.write_verdict(&verdict(40)).unwrap()),
        Box::new(|c| c.write_verdict(&verdict(13)).unwrap()),
        Box::new(|c| {
            let mut v = verdict(4);
            v.cleared_at = Some("2026-11-29T08:00:00Z".parse().unwrap());
            c.write_verdict(&v).unwrap()
        }),
        Box::new(|c| c.remove_verdict(&id(1))),
        Box::new(|c| c.remove_verdict(&id(99))),
    ];
    for (n, step) in steps.drain(..).enumerate() {
        step(&c);
        let s = c
            .valid_verdict_summary()
            .unwrap_or_else(|| panic!("step {n}: no valid summary"));
        assert_eq!(s.lines, from_files(&c), "step {n}");
    }
    let lines = c.verdict_lines().unwrap();
    assert!(lines.iter().any(|l| l.set_id == id(13) && l.is_suspect()));
    assert!(
        lines
            .iter()
            .any(|l| l.set_id == id(4) && l.judged == Judged::Cleared)
    );
    assert!(!lines.iter().any(|l| l.set_id == id(1)));
}

#[test]
fn a_change_behind_its_back_makes_it_stale() {
    for change in ["new suspect", "cleared by hand", "removed by hand"] {
        let (_d, c) = site(12);
        c.verdict_lines_at(later()).unwrap();
        assert!(c.valid_verdict_summary().is_some());
        next_tick();
        match change {
            "new suspect" => write_by_hand(&c, &verdict(22)),
            "cleared by hand" => {
                let mut v = verdict(10);
                v.cleared_at = Some("2026-11-29T08:00:00Z".parse().unwrap());
                write_by_hand(&c, &v);
            }
            _ => std::fs::remove_file(c.verdict_path(&id(7)).unwrap()).unwrap(),
        }
        assert!(c.valid_verdict_summary().is_none(), "{change}: still valid");
        let lines = c.verdict_lines_at(later()).unwrap();
        assert_eq!(lines, from_files(&c), "{change}");
        // ... and rebuilt: valid again, with the change.
        assert_eq!(c.valid_verdict_summary().unwrap().lines, lines, "{change}");
    }
}

#[test]
fn a_garbage_or_cut_summary_is_rebuilt() {
    let (_d, c) = site(8);
    c.verdict_lines_at(later()).unwrap();
    let good = std::fs::read_to_string(summary_file(&c)).unwrap();
    let s0 = c.valid_verdict_summary().unwrap();
    let mut bad = vec![
        "garbage".to_string(),
        String::new(),
        good[..good.len() / 2].to_string(),
        good.replace("end\t8", "end\t7"),
        good.replace(MAGIC, "snapsite-verdicts-summary 0"),
        good.replace("\tsuspect\t", "\tsuspicious\t"),
        format!("{good}v\t{}\tclean\t0.5\n", id(50)),
        good.replacen("-full\t", "-fool\t", 1),
        good.replacen("\tclean\t", "\tclean\t0.5\t", 1),
    ];
    // Lines out of place: the `dir` line after the verdicts.
    let mut ls: Vec<&str> = good.lines().collect();
    ls.swap(1, 2);
    bad.push(ls.join("\n") + "\n");
    for (n, text) in bad.iter().enumerate() {
        assert!(VerdictSummary::decode(text).is_none(), "case {n} decoded");
        write_atomic(&summary_file(&c), text.as_bytes()).unwrap();
        assert!(c.valid_verdict_summary().is_none(), "case {n}");
        assert_eq!(
            c.verdict_lines_at(later()).unwrap(),
            from_files(&c),
            "case {n}"
        );
        assert_eq!(c.valid_verdict_summary().as_ref(), Some(&s0), "case {n}");
    }
}

#[test]
fn a_kill_during_a_verdict_write_leaves_no_summary() {
    let (_d, c) = site(6);
    c.verdict_lines_at(later()).unwrap();
    // write_verdict's first two steps, then the process is gone.
    let before = c.verdict_summary_before_change();
    assert!(before.is_some());
    write_by_hand(&c, &verdict(22));
    assert!(!summary_file(&c).exists(), "a summary outlived the change");
    let lines = c.verdict_lines_at(later()).unwrap();
    assert!(lines.iter().any(|l| l.set_id == id(22) && l.is_suspect()));
    assert_eq!(lines, from_files(&c));
}

#[test]
fn the_check_catches_a_file_the_summary_lacks() {
    let (_d, c) = site(6);
    c.verdict_lines_at(later()).unwrap();
    let s = c.valid_verdict_summary().unwrap();
    assert!(c.check_verdict_summary(), "unchanged");
    // A suspect verdict added without the summary knowing, and the
    // summary stamped anew (the same-tick case the stamp cannot see).
    write_by_hand(&c, &verdict(19));
    c.write_verdict_summary(&VerdictSummary {
        dir: c.verdicts_dir_stamp().unwrap(),
        ..s.clone()
    });
    assert_eq!(c.verdict_lines().unwrap(), s.lines, "the stamp is trusted");
    assert_eq!(c.verdict_head().unwrap(), VerdictHead::of(&s.lines));
    assert!(!c.check_verdict_summary());
    assert!(!summary_file(&c).exists(), "the lying summary is dropped");
    let head = c.verdict_head_at(later()).unwrap();
    assert_eq!(head, VerdictHead::of(&from_files(&c)));
    assert!(head.suspects.iter().any(|l| l.set_id == id(19)));
}

#[test]
fn the_check_catches_a_verdict_rewritten_behind_its_back() {
    // Set 3 cleaned by hand (a new file: a new inode), and set 5 made
    // suspect in place (same inode, new times); each time the summary is
    // stamped anew, so only the files' own stamps can tell.
    for how in ["renamed", "in place"] {
        let (_d, c) = site(8);
        c.verdict_lines_at(later()).unwrap();
        let s = c.valid_verdict_summary().unwrap();
        assert!(c.check_verdict_summary(), "{how}: unchanged");
        next_tick();
        let i = if how == "renamed" { 3 } else { 5 };
        let mut v = verdict(i);
        v.verdict = if v.verdict == Verdict::Suspect {
            Verdict::Clean
        } else {
            Verdict::Suspect
        };
        let path = c.verdict_path(&v.set_id).unwrap();
        if how == "renamed" {
            write_by_hand(&c, &v);
        } else {
            let mut text = serde_json::to_vec_pretty(&v).unwrap();
            text.push(b'\n');
            std::fs::write(&path, text).unwrap();
        }
        c.write_verdict_summary(&VerdictSummary {
            dir: c.verdicts_dir_stamp().unwrap(),
            ..s.clone()
        });
        assert_eq!(
            c.verdict_lines().unwrap(),
            s.lines,
            "{how}: the stamp is trusted"
        );
        assert!(!c.check_verdict_summary(), "{how}");
        assert!(
            !summary_file(&c).exists(),
            "{how}: the lying summary is dropped"
        );
        let lines = c.verdict_lines_at(later()).unwrap();
        assert_eq!(lines, from_files(&c), "{how}");
        assert_ne!(lines, s.lines, "{how}");
    }
}

/// The head (`status`, `failover`) is what the lines say, read without
/// them; a head that disagrees with the lines, a version 1 file, a cut
/// or a missing `end` are not used: rebuilt from the files.
#[test]
fn the_head_agrees_with_the_files_and_a_bad_one_is_rebuilt() {
    for n in [0, 1, 2, 8, 30] {
        let (_d, c) = site(n);
        std::fs::create_dir_all(c.root().join("verdicts")).unwrap();
        let want = VerdictHead::of(&from_files(&c));
        assert_eq!(want.judged, n);
        assert_eq!(c.verdict_head_at(later()).unwrap(), want, "{n} rebuilt");
        assert!(summary_file(&c).exists(), "{n}: written");
        let (head, last) = read_head_and_last(&summary_file(&c)).unwrap();
        assert!(!head.contains("\nv\t"), "{n}: the lines were not read");
        assert_eq!(last, format!("end\t{n}"));
        assert_eq!(c.verdict_head().unwrap(), want, "{n} from the head");
    }
    let (_d, c) = site(8);
    c.verdict_lines_at(later()).unwrap();
    let good = std::fs::read_to_string(summary_file(&c)).unwrap();
    let want = VerdictHead::of(&from_files(&c));
    assert_eq!(want.suspects.len(), 2, "1 and 4 (7 is cleared)");
    let v1: String = good
        .replace(MAGIC, "snapsite-verdicts-summary 1")
        .lines()
        .filter(|l| !["count", "newest", "s"].contains(&l.split('\t').next().unwrap()))
        .map(|l| format!("{l}\n"))
        .collect();
    let bad = [
        // written by the version before the head
        v1,
        good.replacen("count\t8\t", "count\t9\t", 1),
        good.replacen(&format!("s\t{}\t", id(1)), "x\t", 1),
        // cut, or the `end` gone
        good[..good.len() - 2].to_string(),
        good.replace("end\t8\n", ""),
        good.replace("end\t8\n", "end\t7\n"),
    ];
    for (k, text) in bad.iter().enumerate() {
        assert!(VerdictSummary::decode(text).is_none(), "case {k} decoded");
        write_atomic(&summary_file(&c), text.as_bytes()).unwrap();
        assert_eq!(c.verdict_head_at(later()).unwrap(), want, "case {k}");
        assert_eq!(
            std::fs::read_to_string(summary_file(&c)).unwrap(),
            good,
            "case {k}: rebuilt"
        );
    }
    // A head that names a clean set suspect: the full decode refuses it;
    // the head path trusts it as it trusts the stamp, and the reader that
    // acts on that suspect reads its file, which disagrees: dropped.
    let lying = good.replacen(&format!("s\t{}\t", id(4)), &format!("s\t{}\t", id(3)), 1);
    assert!(VerdictSummary::decode(&lying).is_none());
    write_atomic(&summary_file(&c), lying.as_bytes()).unwrap();
    let head = c.verdict_head_at(later()).unwrap();
    let l3 = head.suspects.iter().find(|l| l.set_id == id(3)).unwrap();
    assert_eq!(c.listed_suspect(l3).unwrap(), None);
    assert!(!summary_file(&c).exists(), "dropped");
    assert_eq!(c.verdict_head_at(later()).unwrap(), want);
}

/// Writers keep the head true: after each write or removal, the head
/// read alone is the head of the files.
#[test]
fn the_writers_keep_the_head_true() {
    let (_d, c) = site(10);
    c.verdict_lines_at(later()).unwrap();
    for (k, i) in [12, 4, 13, 0, 25, 9].into_iter().enumerate() {
        if k % 3 == 1 {
            c.remove_verdict(&id(i));
        } else {
            let mut v = verdict(i);
            // a binary fraction: the JSON file gives it back exactly
            v.score = i as f64 / 4.0;
            if k == 2 {
                v.cleared_at = Some("2026-11-29T08:00:00Z".parse().unwrap());
            }
            c.write_verdict(&v).unwrap();
        }
        assert!(summary_file(&c).exists(), "step {k}: kept");
        let (head, _) = read_head_and_last(&summary_file(&c)).unwrap();
        assert!(!head.contains("\nv\t"));
        assert_eq!(
            c.verdict_head().unwrap(),
            VerdictHead::of(&from_files(&c)),
            "step {k}"
        );
    }
}

#[test]
fn scores_round_trip_exactly() {
    let mut s = VerdictSummary {
        dir: FileStamp::from_parts(0, 7, -3, 1 << 70),
        ..VerdictSummary::default()
    };
    for (i, x) in [
        0.0,
        1.0,
        1.0 / 3.0,
        123456.789e-12,
        f64::MAX,
        0.999_999_999_999_9,
    ]
    .into_iter()
    .enumerate()
    {
        s.lines.push(VerdictLine {
            set_id: id(i),
            judged: Judged::Clean,
            score: x,
        });
        s.stamps
            .push(FileStamp::from_parts(i as u64, 9 + i as u64, 10, i128::MAX));
    }
    assert_eq!(VerdictSummary::decode(&s.encode()), Some(s));
}

#[test]
fn stale_temp_files_of_dead_writers_are_removed_and_no_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::new(dir.path());
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let me = std::process::id();
    let name = |f: &str, pid: u32| format!(".{f}.tmp.{pid}");
    let files = [
        (name("sets.summary", dead), false),
        (name(FILE, dead), false),
        // This process's own, and pid 1's (alive): writers at work.
        (name(FILE, me), true),
        (name("sets.summary", 1), true),
        // Not a summary's temp file, or no pid: not ours to remove.
        (name("run.json", dead), true),
        (format!(".{FILE}.tmp.{dead}x"), true),
        (format!(".{FILE}.tmp."), true),
    ];
    for (f, _) in &files {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    // pid 1's, but older than a writer ever takes: left over.
    let old = name(FILE, 1);
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.path().join(&old))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - STALE_TEMP_FOR_TESTS * 2)
        .unwrap();
    drop(f);
    c.remove_stale_summary_temps();
    for (f, kept) in &files {
        if f == &old {
            continue;
        }
        assert_eq!(dir.path().join(f).exists(), *kept, "{f}");
    }
    assert!(!dir.path().join(&old).exists(), "{old}");
}

const STALE_TEMP_FOR_TESTS: std::time::Duration = super::super::summary::STALE_TEMP;

/// Prune's sweep: the verdicts of sets whose manifests are gone go, except
/// suspect ones not cleared; the verdicts of sets still here stay; the
/// summary read afterwards agrees with the files; a second sweep finds
/// nothing.
#[test]
fn pruned_sets_lose_their_verdicts_but_a_suspect_one_stays() {
    let (_d, c) = site(12);
    // Sets 6..12 are still here (a manifest file each); 0..6 were pruned.
    for i in 6..12 {
        let p = c.set_path(&id(i));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{}").unwrap();
    }
    let n = c.prune_verdicts().unwrap();
    let left: Vec<String> = from_files(&c).into_iter().map(|l| l.set_id).collect();
    let mut want: Vec<String> = (0..12)
        .filter(|&i| i >= 6 || verdict(i).is_suspect())
        .map(id)
        .collect();
    want.sort();
    let mut got = left.clone();
    got.sort();
    assert_eq!(
        got, want,
        "kept: the sets still here and the uncleared suspect ones"
    );
    assert_eq!(n, 12 - want.len());
    // sets 1 and 4 are suspect and pruned: their verdicts stay
    assert!(got.contains(&id(1)) && got.contains(&id(4)));
    assert_eq!(c.verdict_lines_at(later()).unwrap(), from_files(&c));
    assert_eq!(c.prune_verdicts().unwrap(), 0);
}

/// Prune's sweep over a long simulated history, against a model written
/// from its rule alone: after every sweep, the verdict files are exactly
/// the verdicts of the sets still here plus the uncleared suspect ones of
/// sets gone, each as last written; nothing else is left behind. Between
/// sweeps: sets arrive with random verdicts, suspects are cleared, sets
/// are pruned, and processes are killed — after a summary was dropped
/// for a verdict write (the write done, the summary not), and partway
/// through a sweep (the summary dropped, some of its removals done, in its
/// order); a manifest removed without a sweep after it. The summary, when
/// there is one, agrees with the files throughout.
#[test]
fn the_sweep_over_a_long_history_keeps_exactly_what_the_rule_says() {
    use std::collections::BTreeMap;
    // xorshift64*: reproducible without a dependency; the seed is printed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
    // ~2 000 sweeps in all (3 seeds); SNAPSITE_LONG=1: ~30 000.
    let steps: usize = if std::env::var_os("SNAPSITE_LONG").is_some() {
        20_000
    } else {
        1_200
    };
    let mut total = 0;
    for seed in [0x9e37_79b9_7f4a_7c15_u64, 23, 0xdead_beef] {
        let mut rng = Rng(seed);
        // In memory where there is /dev/shm: thousands of fsyncs.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let c = Catalog::new(dir.path());
        // The model: each set's last written verdict (judged, cleared),
        // and whether its manifest is here.
        let mut written: BTreeMap<usize, SetVerdict> = BTreeMap::new();
        let mut here: std::collections::BTreeSet<usize> = Default::default();
        let mut next = 0usize;
        let mut sweeps = 0usize;
        let manifest = |i: usize, on: bool| {
            let p = c.set_path(&id(i));
            if on {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, b"{}").unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        };
        let files = |c: &Catalog| -> BTreeMap<String, SetVerdict> {
            c.verdicts()
                .unwrap()
                .into_iter()
                .map(|v| (v.set_id.clone(), v))
                .collect()
        };
        for step in 0..steps {
            let ctx = format!("seed {seed:#x}, step {step}");
            match rng.below(100) {
                // A set arrives and is judged (the verdict after the manifest).
                0..=29 => {
                    let i = next;
                    next += 1;
                    manifest(i, true);
                    here.insert(i);
                    let mut v = verdict(i);
                    v.verdict = if rng.below(5) == 0 {
                        Verdict::Suspect
                    } else {
                        Verdict::Clean
                    };
                    v.cleared_at = None;
                    // binary fractions: the JSON files give them back exactly
                    v.score = rng.below(1024) as f64 / 512.0;
                    if rng.below(10) == 0 {
                        // killed after the summary was dropped and the
                        // verdict written, before the summary's rewrite
                        let _ = c.verdict_summary_before_change();
                        write_by_hand(&c, &v);
                    } else {
                        c.write_verdict(&v).unwrap();
                    }
                    written.insert(i, v);
                }
                // The admin clears a suspect set (here or gone).
                30..=34 => {
                    let open: Vec<usize> = written
                        .iter()
                        .filter(|(_, v)| v.is_suspect())
                        .map(|(&i, _)| i)
                        .collect();
                    if let Some(&i) = open.get(rng.below(open.len().max(1) as u64) as usize) {
                        let mut v = written[&i].clone();
                        v.cleared_at = Some("2026-11-30T08:00:00Z".parse().unwrap());
                        c.write_verdict(&v).unwrap();
                        written.insert(i, v);
                    }
                }
                // Prune: the oldest sets' manifests go (keeping 3..12),
                // then the sweep — or the process is killed before it, or
                // partway through it.
                _ => {
                    let keep = 3 + rng.below(10) as usize;
                    while here.len() > keep {
                        let i = *here.iter().next().unwrap();
                        manifest(i, false);
                        here.remove(&i);
                    }
                    let eligible: Vec<usize> = written
                        .iter()
                        .filter(|(i, v)| !here.contains(i) && !v.is_suspect())
                        .map(|(&i, _)| i)
                        .collect();
                    match rng.below(10) {
                        0 => continue,
                        1 if !eligible.is_empty() => {
                            // killed partway: the summary dropped, then a
                            // prefix of the removals (the ids' order)
                            c.forget_verdict_summary();
                            let k = rng.below(eligible.len() as u64) as usize;
                            for i in &eligible[..k] {
                                std::fs::remove_file(c.verdict_path(&id(*i)).unwrap()).unwrap();
                                written.remove(i);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    let n = c.prune_verdicts().unwrap();
                    sweeps += 1;
                    assert_eq!(n, eligible.len(), "{ctx}: removed");
                    for i in &eligible {
                        written.remove(i);
                    }
                    // The rule, independently: the sets here and the
                    // uncleared suspects of sets gone; as last written.
                    let want: BTreeMap<String, SetVerdict> = written
                        .iter()
                        .filter(|(i, v)| here.contains(i) || v.is_suspect())
                        .map(|(&i, v)| (id(i), v.clone()))
                        .collect();
                    assert_eq!(want.len(), written.len(), "{ctx}: the model kept all");
                    assert_eq!(files(&c), want, "{ctx}: kept");
                    // Nothing else in verdicts/ (no temp files, no strays).
                    let names =
                        std::fs::read_dir(c.root().join("verdicts")).map_or(0, |rd| rd.count());
                    assert_eq!(names, want.len(), "{ctx}: left behind");
                }
            }
            // A reader (status) now and then: the head it reads is the
            // files' (and a dropped summary comes back, settled).
            // Whatever a summary left by the step says agrees with them.
            if rng.below(4) == 0 {
                let truth = from_files(&c);
                if let Some(s) = c.valid_verdict_summary() {
                    assert_eq!(s.lines, truth, "{ctx}: summary lines");
                }
                // What prune and `sets` decide from, when it answers.
                if let Some(lines) = c.checked_verdict_lines() {
                    assert_eq!(lines, truth, "{ctx}: checked lines");
                }
                let h = c.verdict_head_at(later()).unwrap();
                assert_eq!(h, VerdictHead::of(&truth), "{ctx}: read");
            }
        }
        assert!(sweeps > steps / 2, "seed {seed:#x}: {sweeps} sweeps");
        total += sweeps;
    }
    eprintln!("{total} sweeps checked against the model");
}

/// Prune's sweep keeps a valid summary valid (it was dropped before, and
/// rebuilt from every file by the next `status`): after the sweep the
/// summary is there, describes `verdicts/` as it is and agrees with the
/// files, line for line; a sweep that finds a file disagreeing with the
/// summary (suspect, where the summary said clean) leaves none.
#[test]
fn the_sweep_updates_the_summary_in_place() {
    let (_d, c) = site(12);
    for i in 6..12 {
        let p = c.set_path(&id(i));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{}").unwrap();
    }
    // A valid summary, written by a reader once verdicts/ settled.
    c.verdict_lines_at(later()).unwrap();
    assert!(c.valid_verdict_summary().is_some(), "written by the reader");
    let n = c.prune_verdicts().unwrap();
    assert!(n > 0, "the sweep removed verdicts");
    let s = c
        .valid_verdict_summary()
        .expect("the sweep leaves a valid summary");
    assert_eq!(s.lines, from_files(&c), "the summary is the files'");
    assert_eq!(
        c.checked_verdict_lines(),
        Some(from_files(&c)),
        "and passes the check against every file's stamp"
    );

    // A clean verdict of a pruned set turned suspect behind the summary's
    // back in the same tick (its stamp checked by nobody before the sweep):
    // the sweep keeps the file and writes no summary.
    let (_d2, c) = site(12);
    c.verdict_lines_at(later()).unwrap();
    let clean = (0..12)
        .find(|&i| !verdict(i).is_suspect())
        .expect("a clean one");
    let mut v = verdict(clean);
    v.verdict = super::super::signals::Verdict::Suspect;
    v.cleared_at = None;
    let summary = std::fs::read(summary_file(&c)).unwrap();
    write_by_hand(&c, &v);
    // The summary as it was, stamped with the directory as it is now: it
    // passes as valid (what a change in the same tick could leave).
    let mut s = VerdictSummary::decode(std::str::from_utf8(&summary).unwrap()).unwrap();
    s.dir = c.verdicts_dir_stamp().unwrap();
    std::fs::write(summary_file(&c), s.encode()).unwrap();
    assert!(c.valid_verdict_summary().is_some());
    c.prune_verdicts().unwrap();
    assert!(
        c.verdict(&id(clean)).unwrap().is_some(),
        "the suspect verdict stays"
    );
    assert!(!summary_file(&c).exists(), "no summary that disagreed");
}

/// `checked_verdict_lines` (what `prune` and `sets` take instead of every
/// file) refuses a summary one file disagrees with by its stamp, and
/// removes it; with none valid it says so.
#[test]
fn checked_lines_refuse_a_summary_whose_file_changed() {
    let (_d, c) = site(8);
    assert_eq!(c.checked_verdict_lines(), None, "no summary yet");
    c.verdict_lines_at(later()).unwrap();
    assert_eq!(c.checked_verdict_lines(), Some(from_files(&c)));
    // One verdict rewritten (a new inode), the summary restamped with the
    // directory as if nothing had changed.
    let text = std::fs::read_to_string(summary_file(&c)).unwrap();
    next_tick();
    let mut v = verdict(3);
    v.score += 1.0;
    write_by_hand(&c, &v);
    let mut s = VerdictSummary::decode(&text).unwrap();
    s.dir = c.verdicts_dir_stamp().unwrap();
    std::fs::write(summary_file(&c), s.encode()).unwrap();
    assert!(c.valid_verdict_summary().is_some());
    assert_eq!(c.checked_verdict_lines(), None, "the stamp of 3 differs");
    assert!(!summary_file(&c).exists(), "removed");
}
