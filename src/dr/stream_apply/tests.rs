use super::*;
use crate::standby::spool::journal::*;

/// xorshift: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

const NAMES: [&str; 3] = ["redo.log", "archive/redo-1.log", "archive/redo-2.log"];

/// A random spool of valid events (small alphabet: accidental equality).
fn random_spool(rng: &mut Rng) -> Spool {
    let mut sp = Spool::default();
    if rng.chance(30) {
        for n in NAMES.iter().take(1 + rng.below(2) as usize) {
            let size = 4 + rng.below(12);
            let tail_len = rng.below(size + 1) as usize;
            sp.base.push(BaseFile {
                file: n.to_string(),
                size,
                tail: (0..tail_len)
                    .map(|_| b"ab"[rng.below(2) as usize])
                    .collect(),
            });
        }
    }
    let mut sim = sp.base_sim();
    let batches = 1 + rng.below(6);
    let t = Timestamp::now();
    for b in 0..batches {
        let reset = b == 0 && sp.base.is_empty() && rng.chance(30);
        let mut events = Vec::new();
        let mut data = Vec::new();
        let mut s2 = if reset { Sim::default() } else { sim.clone() };
        if reset {
            for n in NAMES.iter().take(1 + rng.below(2) as usize) {
                let ev = SpoolEvent::Base {
                    file: n.to_string(),
                    size: rng.below(10),
                };
                s2.apply(&ev, Src::Item(0)).unwrap();
                events.push(ev);
            }
        }
        for _ in 0..rng.below(8) {
            let mapped: Vec<String> = s2.names.keys().cloned().collect();
            let pick = |rng: &mut Rng| mapped[rng.below(mapped.len() as u64) as usize].clone();
            let ev = match rng.below(10) {
                0..=5 => {
                    let n = NAMES[rng.below(3) as usize];
                    let offset = match s2.names.get(n) {
                        Some(&i) => s2.insts[i].size,
                        None => 0,
                    };
                    let len = 1 + rng.below(5);
                    data.extend((0..len).map(|_| b"ab"[rng.below(2) as usize]));
                    SpoolEvent::Append {
                        file: n.into(),
                        offset,
                        len,
                    }
                }
                6 if !mapped.is_empty() => {
                    let n = pick(rng);
                    let size = rng.below(s2.insts[s2.names[&n]].size + 1);
                    SpoolEvent::Truncate { file: n, size }
                }
                7 | 8 if !mapped.is_empty() => {
                    let from = pick(rng);
                    let to = NAMES[rng.below(3) as usize].to_string();
                    if to == from {
                        continue;
                    }
                    SpoolEvent::Rename { from, to }
                }
                9 if !mapped.is_empty() => SpoolEvent::Remove { file: pick(rng) },
                _ => continue,
            };
            s2.apply(&ev, Src::Item(0)).unwrap();
            events.push(ev);
        }
        let mut trial = if reset {
            Spool {
                last_seq: sp.last_seq,
                ..Default::default()
            }
        } else {
            sp.clone()
        };
        let mut tsim = if reset { Sim::default() } else { sim.clone() };
        trial
            .push_batch(&mut tsim, b + 1, t, &events, &data)
            .unwrap();
        sp = trial;
        sim = tsim;
    }
    sp
}

/// The files of `inst` as the state holds them (unknown bytes `q`).
fn content(sp: &Spool, inst: &Inst) -> Vec<u8> {
    let mut v = vec![b'q'; inst.size as usize];
    for r in &inst.ranges {
        let d = &sp.read(r.src, 0, r.len).unwrap();
        v[r.offset as usize..(r.offset + r.len) as usize].copy_from_slice(d);
    }
    v
}

/// A directory at a random cut of `sp`, sometimes ahead, sometimes
/// damaged.
fn random_dir(rng: &mut Rng, sp: &Spool, dir: &Path) {
    let cut = rng.below(sp.items.len() as u64 + 1) as usize;
    write_dir(rng, sp, dir, cut, true);
}

/// The directory at `cut`; with `damage`, sometimes ahead, sometimes
/// damaged.
fn write_dir(rng: &mut Rng, sp: &Spool, dir: &Path, cut: usize, damage: bool) {
    let mut s = sp.base_sim();
    for i in 0..cut {
        s.apply(&sp.ev(i), Src::Item(i)).unwrap();
    }
    let fin = sp.sim();
    std::fs::create_dir_all(dir.join("archive")).unwrap();
    for (n, &i) in &s.names {
        let mut v = content(sp, &s.insts[i]);
        if !damage {
            std::fs::write(dir.join(n), &v).unwrap();
            continue;
        }
        if rng.chance(40) {
            // Ahead of the follower: the spool's later bytes, or junk.
            let later = content(sp, &fin.insts[i]);
            if later.len() > v.len() && later[..v.len()] == v[..] && rng.chance(70) {
                let upto = v.len() + rng.below((later.len() - v.len()) as u64 + 1) as usize;
                v = later[..upto].to_vec();
            } else {
                v.extend((0..rng.below(4)).map(|_| b"ab"[rng.below(2) as usize]));
            }
        }
        if !v.is_empty() && rng.chance(15) {
            let k = rng.below(v.len() as u64) as usize;
            v[k] ^= 3;
        }
        if rng.chance(5) {
            continue; // lost
        }
        std::fs::write(dir.join(n), &v).unwrap();
    }
    for n in NAMES {
        if damage && !s.names.contains_key(n) && rng.chance(10) {
            std::fs::write(dir.join(n), b"stray").unwrap();
        }
    }
}

/// How many cases a property test runs and its random source: `cases` and
/// `seed` unless `{name}_PROP_CASES=N` / `{name}_PROP_SEED=S` ask for a
/// longer or another run.
fn prop_run(name: &str, cases: u64, seed: u64) -> (u64, Rng) {
    let env = |k: &str, d: u64| {
        std::env::var(format!("{name}_PROP_{k}"))
            .ok()
            .map_or(d, |v| v.parse().unwrap())
    };
    (env("CASES", cases), Rng(env("SEED", seed)))
}

#[test]
fn linear_matching_agrees_with_the_old_one_on_random_spools() {
    let (cases, mut rng) = prop_run("SPOOL", 600, 0x9e3779b97f4a7c15);
    let mut found = 0;
    for case in 0..cases {
        let sp = random_spool(&mut rng);
        let d = tempfile::tempdir().unwrap();
        random_dir(&mut rng, &sp, d.path());
        let root = Root::open(d.path()).unwrap();
        let old = find_cut_old(&sp, &root).map(|x| x.0);
        let new = find_cut(&sp, &root, Bound { deadline: None }).map(|x| x.0);
        assert_eq!(
            old.as_ref().ok(),
            new.as_ref().ok(),
            "case {case}: old {old:?}, new {new:?}, items {:?}",
            (0..sp.items.len()).map(|i| sp.ev(i)).collect::<Vec<_>>()
        );
        found += usize::from(new.is_ok());
    }
    // Both outcomes are exercised.
    assert!(
        found > cases as usize / 6 && found < cases as usize * 29 / 30,
        "{found} of {cases} matched"
    );
}

#[test]
fn apply_brings_any_cut_to_the_spool_end_or_changes_nothing() {
    let (cases, mut rng) = prop_run("APPLY", 120, 0x2545f4914f6cdd1d);
    let mut applied = 0;
    for case in 0..cases {
        let sp = random_spool(&mut rng);
        let fin = sp.sim();
        let spool = tempfile::tempdir().unwrap();
        write_journal_atomic(spool.path(), &sp.records()).unwrap();
        let t0 = Timestamp::now();
        // Exactly at a cut the spool can continue: the result is the
        // spool's end, nothing else of the names it knows, no scratch.
        let min = sp.min_cut();
        let cut = min + rng.below((sp.items.len() - min) as u64 + 1) as usize;
        let d = tempfile::tempdir().unwrap();
        write_dir(&mut rng, &sp, d.path(), cut, false);
        std::fs::write(d.path().join("other.log"), b"kept").unwrap();
        let r = apply_dir(spool.path(), d.path(), t0).unwrap_or_else(|e| {
            panic!(
                "case {case} cut {cut}: {e}\nbase {:?}\nitems {:?}",
                sp.base,
                (0..sp.items.len())
                    .map(|i| (sp.ev(i), sp.read(Src::Item(i), 0, sp.items[i].data.len())))
                    .collect::<Vec<_>>()
            )
        });
        assert!(r.events_applied <= sp.items.len() - cut, "case {case}");
        let t = tree(d.path());
        // Matched at `cut` itself: exactly the spool's end. A later cut
        // may match too (after a truncation a longer file looks like a
        // snapshot ahead of the spool): then it starts with it.
        let exact = r.events_applied == sp.items.len() - cut;
        for n in &fin.known {
            match fin.names.get(n) {
                Some(&i) => {
                    let want = content(&sp, &fin.insts[i]);
                    let got = t
                        .get(n.as_str())
                        .unwrap_or_else(|| panic!("case {case}: {n}"));
                    assert!(
                        if exact {
                            *got == want
                        } else {
                            got.starts_with(&want)
                        },
                        "case {case} cut {cut} exact {exact}: {n}: {got:?} / {want:?}"
                    );
                }
                None => assert!(!t.contains_key(n.as_str()), "case {case}: {n}"),
            }
        }
        assert_eq!(t["other.log"], b"kept");
        assert!(!t.contains_key(&format!("{SCRATCH}/")), "case {case}");
        applied += r.events_applied;
        // Anywhere, damaged or ahead: applied and right, or unchanged.
        let d = tempfile::tempdir().unwrap();
        random_dir(&mut rng, &sp, d.path());
        let before = tree(d.path());
        match apply_dir(spool.path(), d.path(), t0) {
            Ok(_) => {
                let root = Root::open(d.path()).unwrap();
                View::new(&root)
                    .at(&sp, &fin, true, None)
                    .unwrap_or_else(|e| panic!("case {case}: {e}"));
                assert!(!d.path().join(SCRATCH).exists());
            }
            Err(e) => {
                assert_eq!(tree(d.path()), before, "case {case}: {e}");
                assert!(e.to_string().contains("snapshot alone"), "{e}");
            }
        }
    }
    assert!(applied as u64 > cases, "{applied} events applied in all");
}

/// Found by the property test: a copy taken before a truncation also
/// passes the cut after it (ahead of the spool, the differing bytes cut
/// off), and staging from there finds the difference; the apply then
/// takes the next cut down, the one the copy is really at.
#[test]
fn a_cut_hidden_by_a_truncation_falls_back_to_the_true_one() {
    let a = |f: &str, offset: u64, len: u64| SpoolEvent::Append {
        file: f.into(),
        offset,
        len,
    };
    let mut sp = Spool {
        base: vec![
            BaseFile {
                file: "redo.log".into(),
                size: 9,
                tail: b"aaaab".to_vec(),
            },
            BaseFile {
                file: "archive/redo-1.log".into(),
                size: 12,
                tail: b"bb".to_vec(),
            },
        ],
        ..Default::default()
    };
    let mut sim = sp.base_sim();
    let evs = [
        a("archive/redo-2.log", 0, 5),
        SpoolEvent::Truncate {
            file: "archive/redo-1.log".into(),
            size: 4,
        },
        SpoolEvent::Remove {
            file: "redo.log".into(),
        },
        a("archive/redo-1.log", 4, 3),
        SpoolEvent::Truncate {
            file: "archive/redo-1.log".into(),
            size: 1,
        },
    ];
    sp.push_batch(&mut sim, 1, Timestamp::now(), &evs, b"abaabaab")
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    write_journal_atomic(spool.path(), &sp.records()).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(1);
    write_dir(&mut rng, &sp, d.path(), 1, false);
    let root = Root::open(d.path()).unwrap();
    let cuts = find_cuts(&sp, &root, Bound { deadline: None }, 4).unwrap();
    assert_eq!(cuts, [2, 1, 0]);
    let r = apply_dir(spool.path(), d.path(), Timestamp::now()).unwrap();
    assert_eq!(r.events_applied, 4);
    let t = tree(d.path());
    assert_eq!(t["archive/redo-1.log"], b"q");
    assert_eq!(t["archive/redo-2.log"], b"abaab");
    assert!(!t.contains_key("redo.log"));
}

fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), vec![]);
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A spool restarting at `redo.log` (4 bytes), appending, rolling over.
fn rollover_spool() -> Spool {
    let mut sp = Spool::default();
    let mut sim = Sim::default();
    let t = Timestamp::now();
    let evs = [
        SpoolEvent::Base {
            file: "redo.log".into(),
            size: 4,
        },
        SpoolEvent::Append {
            file: "redo.log".into(),
            offset: 4,
            len: 4,
        },
        SpoolEvent::Rename {
            from: "redo.log".into(),
            to: "archive/redo-1.log".into(),
        },
        SpoolEvent::Append {
            file: "redo.log".into(),
            offset: 0,
            len: 3,
        },
    ];
    sp.push_batch(&mut sim, 1, t, &evs, b"efghnew").unwrap();
    sp
}

#[test]
fn a_failed_commit_is_undone_and_an_interrupted_apply_is_redone() {
    let sp = rollover_spool();
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("archive")).unwrap();
    std::fs::write(d.path().join("redo.log"), b"abcd").unwrap();
    std::fs::write(d.path().join("archive/redo-0.log"), b"x").unwrap();
    let before = tree(d.path());
    let root = Root::open(d.path()).unwrap();
    let (j, at_j) = find_cut(&sp, &root, Bound { deadline: None }).unwrap();
    assert_eq!(j, 1);
    // The last placement fails after the others were done: all undone.
    let mut st = stage(&sp, &root, j, &at_j).unwrap();
    st.plan
        .placements
        .push(("inst-999".into(), "archive/redo-9.log".into()));
    let e = commit_staged(&root, &mut st.plan).unwrap_err();
    assert!(e.contains("(undone)"), "{e}");
    clear_scratch(&root);
    assert_eq!(tree(d.path()), before);

    // An apply interrupted after its renames (the plan not marked done):
    // the next one undoes it and applies again.
    let spool = tempfile::tempdir().unwrap();
    write_journal_atomic(spool.path(), &sp.records()).unwrap();
    let mut st = stage(&sp, &root, j, &at_j).unwrap();
    commit_staged(&root, &mut st.plan).unwrap();
    assert!(d.path().join(SCRATCH).join(PLAN).exists());
    let t0 = Timestamp::now();
    let r = apply_dir(spool.path(), d.path(), t0).unwrap();
    assert_eq!((r.events_applied, r.bytes_applied), (3, 7));
    let after = tree(d.path());
    assert_eq!(after["redo.log"], b"new");
    assert_eq!(after["archive/redo-1.log"], b"abcdefgh");
    assert_eq!(after["archive/redo-0.log"], b"x");
    assert_eq!(after.len(), 4, "{:?}", after.keys());
    // Interrupted after it was marked done: only the scratch goes.
    let mut st = stage(&sp, &root, sp.items.len(), &sp.sim()).unwrap();
    commit_staged(&root, &mut st.plan).unwrap();
    root.rename(&scratch(PLAN), &scratch(DONE)).unwrap();
    let r = apply_dir(spool.path(), d.path(), t0).unwrap();
    assert_eq!(r.events_applied, 0);
    assert_eq!(tree(d.path()), after);
}

/// A spool (and its simulation) that starts from the primary's files, here
/// an empty redo.log: batch 1.
fn empty_redo_log() -> (Spool, Sim) {
    let mut sp = Spool::default();
    let mut sim = Sim::default();
    let base = [SpoolEvent::Base {
        file: "redo.log".into(),
        size: 0,
    }];
    sp.push_batch(&mut sim, 1, Timestamp::now(), &base, &[])
        .unwrap();
    (sp, sim)
}

/// `n` appends of 24 bytes to redo.log, in batches of 4096 events; and a
/// directory holding the first half (matching) or every byte but
/// different ones (not matching).
fn bench_case(n: usize, matching: bool) -> (Spool, tempfile::TempDir) {
    let (mut sp, mut sim) = empty_redo_log();
    let mut all = Vec::with_capacity(n * 24);
    let mut seq = 2;
    let mut i = 0;
    while i < n {
        let k = (n - i).min(MAX_BATCH_EVENTS);
        let mut events = Vec::with_capacity(k);
        let mut data = Vec::with_capacity(k * 24);
        for e in i..i + k {
            events.push(SpoolEvent::Append {
                file: "redo.log".into(),
                offset: (e * 24) as u64,
                len: 24,
            });
            data.extend_from_slice(format!("record {e:016}\n").as_bytes());
        }
        all.extend_from_slice(&data);
        sp.push_batch(&mut sim, seq, Timestamp::now(), &events, &data)
            .unwrap();
        seq += 1;
        i += k;
    }
    let d = tempfile::tempdir().unwrap();
    let file = if matching {
        all[..n / 2 * 24].to_vec()
    } else {
        all.iter().map(|b| b ^ 1).collect()
    };
    std::fs::write(d.path().join("redo.log"), file).unwrap();
    (sp, d)
}

/// A hostile shape: `n / 2` appends, then `n / 2` renames of the file
/// back and forth between two names (each rename used to mean comparing
/// every range again); the directory holds other bytes under both.
fn pingpong_case(n: usize) -> (Spool, tempfile::TempDir) {
    let (mut sp, mut sim) = empty_redo_log();
    let mut seq = 2;
    let mut evs = Vec::new();
    let mut data = Vec::new();
    let names = ["redo.log", "archive/redo-1.log"];
    for e in 0..n {
        if e < n / 2 {
            evs.push(SpoolEvent::Append {
                file: "redo.log".into(),
                offset: (e * 8) as u64,
                len: 8,
            });
            data.extend_from_slice(format!("{e:07}\n").as_bytes());
        } else {
            let k = e - n / 2;
            evs.push(SpoolEvent::Rename {
                from: names[k % 2].into(),
                to: names[(k + 1) % 2].into(),
            });
        }
        if evs.len() == MAX_BATCH_EVENTS || e + 1 == n {
            sp.push_batch(&mut sim, seq, Timestamp::now(), &evs, &data)
                .unwrap();
            seq += 1;
            evs.clear();
            data.clear();
        }
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("archive")).unwrap();
    let junk = vec![b'z'; n / 2 * 8];
    std::fs::write(d.path().join("redo.log"), &junk).unwrap();
    std::fs::write(d.path().join("archive/redo-1.log"), &junk).unwrap();
    (sp, d)
}

#[test]
fn renaming_back_and_forth_stays_linear() {
    // Small: the same answer as the old matching.
    let (sp, d) = pingpong_case(600);
    let root = Root::open(d.path()).unwrap();
    let old = find_cut_old(&sp, &root).map(|x| x.0).ok();
    let new = find_cut(&sp, &root, Bound { deadline: None })
        .map(|x| x.0)
        .ok();
    assert_eq!(old, new);
    // Large: well within the bound.
    let (sp, d) = pingpong_case(200_000);
    let root = Root::open(d.path()).unwrap();
    let t = Instant::now();
    let r = find_cut(&sp, &root, Bound { deadline: None });
    assert!(r.is_err());
    assert!(!r.unwrap_err().contains(GAVE_UP));
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn a_checkpoint_out_of_time_marks_the_spool_unusable() {
    let (sp, snap) = bench_case(5000, false);
    let spool = tempfile::tempdir().unwrap();
    write_journal_atomic(spool.path(), &sp.records()).unwrap();
    let e = checkpoint_within(spool.path(), snap.path(), "s1", Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(e.contains(GAVE_UP) && e.contains("marked unusable"), "{e}");
    let b: Broken = crate::base::catalog::read_json(&spool.path().join("broken.json")).unwrap();
    assert!(b.reason.contains("longer than allowed"), "{}", b.reason);
    // The spool itself is kept as it was.
    assert_eq!(Spool::load(spool.path(), false).unwrap().items.len(), 5001);
}

/// The spool is read as a stream: a loaded spool holds its events, not
/// their bytes, which are read from the journal when matched. A journal
/// cut under a loaded spool is an error naming it, never other bytes.
#[test]
fn a_loaded_spool_reads_its_bytes_from_the_journal() {
    let (sp, d) = bench_case(10_000, true);
    let spool = tempfile::tempdir().unwrap();
    write_journal_atomic(spool.path(), &sp.records()).unwrap();
    let loaded = Spool::load(spool.path(), false).unwrap();
    assert_eq!(loaded.items.len(), sp.items.len());
    for k in [1, 4096, 4097, 10_000] {
        assert_eq!(
            loaded.read(Src::Item(k), 0, 24).unwrap(),
            sp.read(Src::Item(k), 0, 24).unwrap()
        );
    }
    let root = Root::open(d.path()).unwrap();
    let (j, _) = find_cut(&loaded, &root, Bound { deadline: None }).unwrap();
    assert_eq!(j, 10_000 / 2 + 1);
    let again = Spool::load(spool.path(), false).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(spool.path().join(JOURNAL))
        .unwrap()
        .set_len(1000)
        .unwrap();
    let e = find_cut(&again, &root, Bound { deadline: None }).unwrap_err();
    assert!(e.contains("spool journal"), "{e}");
}

/// `SPOOL_BENCH=10000,100000,1000000 cargo test --release --lib
/// bench_matching -- --ignored --nocapture` (scripts/bench-spool).
#[test]
#[ignore]
fn bench_matching() {
    let sizes: Vec<usize> = std::env::var("SPOOL_BENCH")
        .unwrap_or_else(|_| "10000,100000,1000000".into())
        .split(',')
        .map(|x| x.trim().parse().unwrap())
        .collect();
    let old_max: usize = std::env::var("SPOOL_BENCH_OLD_MAX")
        .ok()
        .map_or(20000, |x| x.parse().unwrap());
    for n in sizes {
        for matching in [true, false] {
            let (sp, d) = bench_case(n, matching);
            let root = Root::open(d.path()).unwrap();
            let t = Instant::now();
            let r = find_cut(&sp, &root, Bound { deadline: None });
            let new = t.elapsed();
            assert_eq!(r.is_ok(), matching);
            if matching {
                assert_eq!(r.unwrap().0, n / 2 + 1);
            }
            let old = (n <= old_max).then(|| {
                let t = Instant::now();
                let r = find_cut_old(&sp, &root);
                assert_eq!(r.is_ok(), matching);
                t.elapsed()
            });
            println!(
                "spool-bench events={n} matching={matching} linear={:.3}s old={}",
                new.as_secs_f64(),
                old.map_or("-".into(), |o| format!("{:.3}s", o.as_secs_f64()))
            );
            // Failover's whole apply step: the journal read from disk,
            // matched, then refused (the copy left as it was) or applied
            // (half the events) and verified.
            let spool = tempfile::tempdir().unwrap();
            let rec = sp.records();
            write_journal_atomic(spool.path(), &rec).unwrap();
            let t = Instant::now();
            let r = apply_dir(spool.path(), d.path(), Timestamp::now());
            assert_eq!(r.is_ok(), matching);
            println!(
                "spool-bench events={n} matching={matching} failover-apply journal={} bytes total={:.3}s",
                rec.len(),
                t.elapsed().as_secs_f64()
            );
        }
        let (sp, d) = pingpong_case(n);
        let root = Root::open(d.path()).unwrap();
        let t = Instant::now();
        let r = find_cut(&sp, &root, Bound { deadline: None });
        println!(
            "spool-bench events={n} renames-back-and-forth linear={:.3}s ({})",
            t.elapsed().as_secs_f64(),
            if r.is_ok() { "matched" } else { "no match" }
        );
    }
}

/// Failover's apply with a hostile spool at the event cap, in two
/// processes so the second one's peak memory is the apply's alone:
/// `SPOOL_RSS_DIR=/var/tmp/x cargo test --release --lib bench_apply_write
/// -- --ignored`, then `... bench_apply_run` (scripts/bench-spool RSS=1).
/// The spool: 2^21 appends of 24 bytes, every byte different from the
/// copy's `redo.log`.
#[test]
#[ignore]
fn bench_apply_write() {
    let out = PathBuf::from(std::env::var("SPOOL_RSS_DIR").expect("SPOOL_RSS_DIR"));
    let n: usize = std::env::var("SPOOL_RSS_EVENTS")
        .ok()
        .map_or(MAX_SPOOL_EVENTS - 1, |x| x.parse().unwrap());
    let (sp, d) = bench_case(n, false);
    std::fs::create_dir_all(out.join("spool")).unwrap();
    write_journal_atomic(&out.join("spool"), &sp.records()).unwrap();
    let _ = std::fs::remove_dir_all(out.join("copy"));
    std::fs::create_dir_all(out.join("copy")).unwrap();
    std::fs::rename(d.path().join("redo.log"), out.join("copy/redo.log")).unwrap();
}

#[test]
#[ignore]
fn bench_apply_run() {
    let out = PathBuf::from(std::env::var("SPOOL_RSS_DIR").expect("SPOOL_RSS_DIR"));
    let t = Instant::now();
    let r = apply_dir(&out.join("spool"), &out.join("copy"), Timestamp::now());
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "spool-bench failover-apply hostile journal={} bytes time={:.3}s {} ({})",
        std::fs::metadata(out.join("spool/journal")).unwrap().len(),
        t.elapsed().as_secs_f64(),
        hwm.split_whitespace().collect::<Vec<_>>().join(" "),
        match &r {
            Ok(_) => "applied".to_string(),
            Err(e) => format!(
                "refused: {}",
                e.to_string().chars().take(80).collect::<String>()
            ),
        }
    );
    assert!(r.is_err());
}
