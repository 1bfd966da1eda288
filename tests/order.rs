//! The order of sets on a standby is the standby's own (issue 24, item 2):
//! a manifest's generation and sequence number are the sender's claims,
//! bounded when `serve` commits them, and the newest committed set is the
//! one the standby committed last — whatever a hostile primary claimed.
//! Driven through `serve` over a socket pair with the in-memory store (as
//! tests/serve_protocol.rs), plus the DR verbs' handshake checks.

mod common;

use proptest::prelude::*;
use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::base::model::{Manifest, SetKind, new_set_id};
use snapsite::standby::serve::{MAX_SEQ, MAX_SEQ_STEP};
use snapsite::wire::stream::Msg;

const ROLES: [&str; 2] = ["mysql", "redolog"];

use common::memsite::{MemSite as Site, Session, payload};

fn site() -> Site {
    Site::new(&ROLES)
}

impl Site {
    /// A session after a welcomed hello.
    fn session(&self) -> Session {
        let (s, welcome) = self.hello();
        assert!(matches!(welcome, Msg::Welcome { .. }), "{welcome:?}");
        s
    }

    /// What failover would use: (S, R) among the committed sets, in the
    /// catalog's order.
    fn chosen(&self) -> (String, String) {
        let ms = self.catalog().manifests().unwrap();
        let (s, r) =
            snapsite::base::site::select(&ms, &|m| m.committed_at.is_some(), "redolog", None)
                .unwrap();
        (s.id.clone(), r.id.clone())
    }
}

/// A set as a primary would send it, claiming `seq` and `generation`.
fn manifest(id: &str, seq: u64, generation: u64) -> Manifest {
    let roles: &[&str] = match snapsite::base::model::parse_set_id(id).unwrap().1 {
        SetKind::Full => &ROLES,
        SetKind::Redolog => &["redolog"],
    };
    let mut m = common::memsite::manifest(id, roles, &|r| payload(id, r));
    m.seq = seq;
    m.generation = generation;
    m
}

impl Session {
    /// Send every member of `m`, then its commit: Ok = committed, Err = the refusal.
    fn ship(&mut self, m: &Manifest) -> Result<(), String> {
        for x in &m.members {
            let reply = self.send(&m.id, &x.role, &payload(&m.id, &x.role), true);
            assert!(matches!(reply, Msg::Ack { .. }), "{}: {reply:?}", m.id);
        }
        match self.commit(m) {
            Ok(Msg::Committed { set_id }) if set_id == m.id => Ok(()),
            Ok(other) => panic!("{}: {other:?}", m.id),
            Err(e) => Err(e.message),
        }
    }

    /// Ship a full set `minute` minutes after the base (see [`id_at`]),
    /// claiming `seq` and `generation`; it must be committed. Its id.
    fn ship_full(&mut self, minute: i64, seq: u64, generation: u64) -> String {
        let id = id_at(SetKind::Full, minute, 0);
        self.ship(&manifest(&id, seq, generation)).unwrap();
        id
    }
}

/// An id `minutes` after a base a month ago, plus `ms`.
fn id_at(kind: SetKind, minutes: i64, ms: i64) -> String {
    let base = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 30);
    new_set_id(
        base + jiff::SignedDuration::from_mins(minutes) + jiff::SignedDuration::from_millis(ms),
        kind,
    )
}

/// The attacks as issue 24 found them: a set claiming generation 2^64-1,
/// or sequence number 2^64-1, stayed "newest" forever and the promoted
/// site's counters wrapped or stuck. Now the claims are refused, a claim
/// within the bounds does not outrank what is committed after it, and the
/// promoted site's next generation and sequence number are honest.
#[test]
fn a_hostile_set_never_outranks_later_honest_ones() {
    let site = site();
    let mut s = site.session();
    s.ship_full(0, 100, 1);

    let h = id_at(SetKind::Full, 1, 0);
    let e = s.ship(&manifest(&h, 101, u64::MAX)).unwrap_err();
    assert!(e.contains("claims generation 18446744073709551615"), "{e}");
    let h = id_at(SetKind::Full, 2, 0);
    let e = s.ship(&manifest(&h, u64::MAX, 1)).unwrap_err();
    assert!(
        e.contains("claims sequence number 18446744073709551615"),
        "{e}"
    );
    let h = id_at(SetKind::Full, 3, 0);
    let e = s
        .ship(&manifest(&h, 100 + MAX_SEQ_STEP + 1, 1))
        .unwrap_err();
    assert!(e.contains("sequence number"), "{e}");
    let h = id_at(SetKind::Full, 4, 0);
    assert!(
        s.ship(&manifest(&h, 101, 3))
            .unwrap_err()
            .contains("generation 3")
    );

    // Within the bounds: generation one above, sequence far ahead, dated
    // ahead of every honest set still to come (within the day allowed).
    let hostile = new_set_id(
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(23),
        SetKind::Full,
    );
    s.ship(&manifest(&hostile, 100 + MAX_SEQ_STEP, 2)).unwrap();
    assert_eq!(site.chosen(), (hostile.clone(), hostile.clone()));
    // The honest primary goes on in generation 1, sequence 101, 102.
    let f2 = id_at(SetKind::Full, 10, 0);
    s.ship(&manifest(&f2, 101, 1)).unwrap();
    assert_eq!(site.chosen(), (f2.clone(), f2.clone()));
    let r2 = id_at(SetKind::Redolog, 11, 0);
    s.ship(&manifest(&r2, 102, 1)).unwrap();
    assert_eq!(site.chosen(), (f2.clone(), r2.clone()));
    s.bye().unwrap();
    let committed = site.catalog().manifests().unwrap();
    assert_eq!(
        committed.last().map(|m| m.id.as_str()),
        Some(r2.as_str()),
        "the catalog's newest is the last commit"
    );
    let orders: Vec<u64> = committed
        .iter()
        .map(|m| m.standby_order.unwrap().commit)
        .collect();
    assert_eq!(orders, [1, 2, 3, 4]);

    // A promoted standby continues from the bounded claims, never wrapping.
    let cat = site.catalog();
    assert_eq!(
        snapsite::dr::failover::next_generation(&site.cfg, &cat).unwrap(),
        3
    );
    let next = cat
        .next_sequence(jiff::Timestamp::now(), SetKind::Full)
        .unwrap();
    assert_eq!(next.seq, 100 + MAX_SEQ_STEP + 1);
}

/// Sets recorded before these bounds (or a hand-edited catalog) may hold
/// claims at the top of the range: the promoted site refuses to take a
/// set or a generation rather than wrap to 0 or stay at 2^64-1.
#[test]
fn counters_at_the_top_of_the_range_refuse_instead_of_wrapping() {
    let site = site();
    let cat = site.catalog();
    let mut m = manifest(&id_at(SetKind::Full, 0, 0), u64::MAX, u64::MAX);
    m.committed_at = Some(jiff::Timestamp::now());
    cat.write_manifest(&m).unwrap();
    let e = cat
        .next_sequence(jiff::Timestamp::now(), SetKind::Full)
        .unwrap_err();
    assert!(
        e.to_string().contains("sequence number is at its limit"),
        "{e}"
    );
    let e = snapsite::dr::failover::next_generation(&site.cfg, &cat).unwrap_err();
    assert!(e.to_string().contains("there is no next one"), "{e}");
    assert!(
        !site.cfg.state_dir.join("sequence.json").exists()
            || std::fs::read_to_string(site.cfg.state_dir.join("sequence.json"))
                .unwrap()
                .contains(&u64::MAX.to_string()),
        "no wrapped counter was written"
    );
}

/// A manifest's own `standby_order`, `committed_at` from the wire are
/// ignored: the standby writes its own.
#[test]
fn the_standby_order_is_never_taken_from_the_wire() {
    let site = site();
    let mut s = site.session();
    let f1 = s.ship_full(0, 1, 1);
    let f2 = id_at(SetKind::Full, 1, 0);
    let mut m = manifest(&f1, 1, 1);
    m.standby_order = Some(snapsite::base::model::StandbyOrder {
        generation: u64::MAX,
        commit: u64::MAX,
    });
    let mut lie = manifest(&f2, 2, 1);
    lie.standby_order = m.standby_order;
    lie.committed_at = Some("2000-01-01T00:00:00Z".parse().unwrap());
    s.ship(&lie).unwrap();
    // The first set again, with a forged order: a retry, nothing changes.
    s.w.msg(&Msg::Commit { manifest: m }).unwrap();
    assert!(matches!(s.r.msg().unwrap(), Msg::Committed { .. }));
    s.bye().unwrap();
    let ms = site.catalog().manifests().unwrap();
    let orders: Vec<_> = ms.iter().map(|m| m.standby_order.unwrap()).collect();
    assert_eq!(
        orders
            .iter()
            .map(|o| (o.generation, o.commit))
            .collect::<Vec<_>>(),
        [(1, 1), (1, 2)]
    );
    assert!(ms[1].committed_at.unwrap() > "2020-01-01T00:00:00Z".parse().unwrap());
}

/// A new standby takes the primary's generation with its first set
/// (bounded); from then on, one above what it has seen at most.
#[test]
fn a_new_standby_takes_the_primarys_generation_once() {
    let site = site();
    let mut s = site.session();
    let e = s
        .ship(&manifest(&id_at(SetKind::Full, 0, 0), 1, (1 << 32) + 1))
        .unwrap_err();
    assert!(e.contains("first set"), "{e}");
    s.ship(&manifest(&id_at(SetKind::Full, 1, 0), 7, 5))
        .unwrap();
    assert!(
        s.ship(&manifest(&id_at(SetKind::Full, 2, 0), 8, 7))
            .is_err()
    );
    s.ship(&manifest(&id_at(SetKind::Full, 3, 0), 8, 6))
        .unwrap();
    s.bye().unwrap();
}

/// The DR verbs' handshake: a peer claiming a generation this site cannot
/// believe is refused by failback, and the ship's split-brain guard
/// neither records it nor ships.
#[test]
fn a_peer_claiming_an_unbelievable_generation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[standby]\ntransport = \"ssh\"\nhost = \"b.example\"\n",
        common::redolog_site_toml("a", dir.path())
    );
    let cfg = Config::parse(&text, &dir.path().join("a.toml")).unwrap();
    let cat = Catalog::new(&cfg.state_dir);
    let view = |g: u64| snapsite::primary::coordinator::StandbyView {
        site: "b".into(),
        volumes: Vec::new(),
        committed: Default::default(),
        compress: Vec::new(),
        role: Some("primary".into()),
        generation: Some(g),
    };
    for g in [3, u64::MAX] {
        let e = snapsite::dr::failback::plan(&cfg, &view(g)).unwrap_err();
        assert!(
            e.to_string().contains(&format!("claims generation {g}")),
            "{e}"
        );
    }
    let mut standby = view(u64::MAX);
    standby.role = Some("standby".into());
    let e = snapsite::primary::coordinator::split_brain_guard(&cfg, &cat, &standby).unwrap_err();
    assert!(e.to_string().contains("claims generation"), "{e}");
    let rec = cat.peer_record().unwrap().unwrap();
    assert_eq!(rec.generation, None, "the claim is not recorded");
    assert!(rec.refused.is_some());
    assert_eq!(
        snapsite::dr::failover::next_generation(&cfg, &cat).unwrap(),
        2,
        "nothing the peer claimed raised this site's next generation"
    );
}

/// One step of a history: a set from the honest primary, or from someone
/// holding its key with whatever claims.
#[derive(Debug, Clone)]
enum Step {
    Honest {
        full: bool,
    },
    Hostile {
        full: bool,
        generation: Claim,
        seq: Claim,
        ahead_hours: i64,
    },
}

#[derive(Debug, Clone)]
enum Claim {
    /// The honest value.
    Same,
    /// This much above the highest the standby holds.
    Above(u64),
    Max,
    Any(u64),
}

fn claim() -> impl Strategy<Value = Claim> {
    prop_oneof![
        Just(Claim::Same),
        (0u64..3).prop_map(Claim::Above),
        Just(Claim::Above(MAX_SEQ_STEP)),
        Just(Claim::Above(MAX_SEQ_STEP + 1)),
        Just(Claim::Max),
        any::<u64>().prop_map(Claim::Any),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => any::<bool>().prop_map(|full| Step::Honest { full }),
        1 => (any::<bool>(), claim(), claim(), -48i64..23).prop_map(
            |(full, generation, seq, ahead_hours)| Step::Hostile { full, generation, seq, ahead_hours }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, .. ProptestConfig::default() })]

    /// Over random histories of honest and hostile commits: every honest
    /// set commits; a hostile one commits exactly when its claims are
    /// within the bounds (generation at most one above any seen, sequence
    /// at most MAX_SEQ_STEP above the highest held); and what failover
    /// would use is always the full set committed last and the redolog set
    /// committed after it — the standby's own order, whatever was claimed.
    #[test]
    fn the_newest_set_is_the_one_committed_last(steps in proptest::collection::vec(step(), 1..14)) {
        let site = site();
        let mut s = site.session();
        // The honest primary: generation 1, its own sequence.
        let mut honest_seq = 1000u64;
        let mut minute = 0i64;
        // The model: what is committed, in commit order: (id, full, seq, generation).
        let mut log: Vec<(String, bool, u64, u64)> = Vec::new();
        let first = id_at(SetKind::Full, minute, 0);
        s.ship(&manifest(&first, honest_seq, 1)).unwrap();
        log.push((first, true, honest_seq, 1));
        for (i, st) in steps.iter().enumerate() {
            minute += 1;
            let (id, seq, generation) = match st {
                Step::Honest { full } => {
                    honest_seq += 1;
                    let kind = if *full { SetKind::Full } else { SetKind::Redolog };
                    (id_at(kind, minute, 0), honest_seq, 1)
                }
                Step::Hostile { full, generation, seq, ahead_hours } => {
                    let kind = if *full { SetKind::Full } else { SetKind::Redolog };
                    let at = jiff::Timestamp::now()
                        + jiff::SignedDuration::from_hours(*ahead_hours)
                        + jiff::SignedDuration::from_millis(i as i64 + 1);
                    let top_seq = log.iter().map(|l| l.2).max().unwrap();
                    let top_gen = log.iter().map(|l| l.3).max().unwrap();
                    let pick = |c: &Claim, same: u64, top: u64| match c {
                        Claim::Same => same,
                        Claim::Above(n) => top.saturating_add(*n),
                        Claim::Max => u64::MAX,
                        Claim::Any(n) => *n,
                    };
                    (new_set_id(at, kind), pick(seq, honest_seq, top_seq), pick(generation, 1, top_gen))
                }
            };
            if log.iter().any(|l| l.0 == id) {
                continue;
            }
            let top_seq = log.iter().map(|l| l.2).max().unwrap();
            let top_gen = log.iter().map(|l| l.3).max().unwrap();
            let believable = seq >= 1
                && seq <= (top_seq + MAX_SEQ_STEP).min(MAX_SEQ)
                && generation >= 1
                && generation <= top_gen + 1;
            let res = s.ship(&manifest(&id, seq, generation));
            match st {
                Step::Honest { .. } => prop_assert!(res.is_ok(), "honest set {} refused: {:?}", id, res),
                Step::Hostile { .. } => prop_assert_eq!(res.is_ok(), believable, "{} seq {} gen {}: {:?}", id, seq, generation, res),
            }
            if res.is_ok() {
                log.push((id.clone(), id.ends_with("-full"), seq, generation));
            }
            let s_want = log.iter().rev().find(|l| l.1).unwrap().0.clone();
            let s_at = log.iter().position(|l| l.0 == s_want).unwrap();
            let r_want = log[s_at + 1..].iter().rev().find(|l| !l.1).map_or(s_want.clone(), |l| l.0.clone());
            prop_assert_eq!(site.chosen(), (s_want, r_want));
        }
        s.bye().unwrap();
        // The promoted site's counters continue from the bounded claims.
        let cat = site.catalog();
        let top_gen = log.iter().map(|l| l.3).max().unwrap();
        prop_assert_eq!(snapsite::dr::failover::next_generation(&site.cfg, &cat).unwrap(), top_gen + 1);
        let next = cat.next_sequence(jiff::Timestamp::now(), SetKind::Full).unwrap();
        prop_assert_eq!(next.seq, log.iter().map(|l| l.2).max().unwrap() + 1);
        prop_assert!(next.seq <= MAX_SEQ + 1);
    }
}

/// The primary's side of the same attack: a set the standby committed that
/// the primary never took (dated ahead) must not stop the primary's own
/// sets from shipping ("older than the newest set on the standby").
#[test]
fn a_foreign_set_on_the_standby_does_not_stop_the_primarys_sets() {
    let site = site();
    let cat = site.catalog();
    let a = id_at(SetKind::Full, 0, 0);
    let b = id_at(SetKind::Full, 1, 0);
    for (id, seq) in [(&a, 1), (&b, 2)] {
        cat.write_manifest(&manifest(id, seq, 1)).unwrap();
    }
    let foreign = new_set_id(
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(23),
        SetKind::Full,
    );
    let local: std::collections::BTreeMap<String, Vec<String>> = ROLES
        .iter()
        .map(|r| (r.to_string(), vec![a.clone(), b.clone()]))
        .collect();
    let committed = [a.clone(), foreign].into_iter().collect();
    let ship =
        snapsite::primary::coordinator::sets_to_ship(&site.cfg, &cat, &committed, &local).unwrap();
    assert_eq!(
        ship.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        [b.as_str()]
    );
}

/// `status` on real btrfs: a set the primary's clock dated 20 hours ahead
/// is aged from when this standby committed it, so ten hours later the
/// standby is CRITICAL — not "current" because of the claimed time.
#[test]
fn status_is_never_current_because_of_a_claimed_time() {
    require_real!();
    let lab = common::Lab::new("[\"/bin/true\"]");
    let out = common::run_snapsite(
        &lab.pri_cfg,
        &["snapshot", "--json"],
        &[("SNAPSITE_TEST_CLOCK_OFFSET", "+20h")],
    );
    common::output::success("snapshot", &out);
    lab.ship(&lab.pri_cfg);
    let cfg = Config::load(&lab.stb_cfg).unwrap();
    let now = jiff::Timestamp::now();
    let st = snapsite::ops::status::gather(&cfg, now).unwrap();
    assert_eq!(
        st.level,
        snapsite::ops::status::Level::Ok,
        "{:?}",
        st.findings
    );
    let later =
        snapsite::ops::status::gather(&cfg, now + jiff::SignedDuration::from_hours(10)).unwrap();
    let rp = later.recovery_point.as_ref().unwrap();
    assert!(rp.age_seconds >= 10.0 * 3600.0 - 60.0, "{rp:?}");
    assert_eq!(
        later.level,
        snapsite::ops::status::Level::Critical,
        "{:?}",
        later.findings
    );
}

/// Sets committed before `standby_order` existed rank by their claimed
/// generation: a standby without a recorded role (its own generation 1)
/// holding such a set of generation 3 still ranks what it commits next
/// after it.
#[test]
fn a_commit_ranks_after_sets_committed_by_an_older_version() {
    let site = site();
    let cat = site.catalog();
    let old = id_at(SetKind::Full, 0, 0);
    let mut m = manifest(&old, 10, 3);
    m.committed_at = Some(jiff::Timestamp::now());
    cat.write_manifest(&m).unwrap();
    for r in ROLES {
        site.store.insert(r, &old, b"old");
    }
    let mut s = site.session();
    let new = s.ship_full(1, 11, 3);
    s.bye().unwrap();
    assert_eq!(site.chosen(), (new.clone(), new.clone()));
    let ms = cat.manifests().unwrap();
    assert_eq!(
        ms.last().unwrap().standby_order,
        Some(snapsite::base::model::StandbyOrder {
            generation: 3,
            commit: 1
        })
    );
}

/// The attack as issue 24 reported it, end to end on real btrfs through the
/// CLI: a primary (here: a hand-edited catalog) ships a set claiming a
/// higher generation, then honest sets follow. `failover --dry-run` and
/// `status` name the set committed last; a claim of generation 2^64-1 or
/// sequence 2^64-1 is refused at commit, with a message saying so.
#[test]
fn failover_dry_run_and_status_use_the_set_committed_last() {
    require_real!();
    let lab = common::Lab::new("[\"/bin/true\"]");
    let set_file = |id: &str| {
        lab.dir
            .path()
            .join("state-pri/sets")
            .join(format!("{id}.json"))
    };
    let edit = |id: &str, key: &str, v: u64| {
        let p = set_file(id);
        let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        m[key] = v.into();
        std::fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    };
    let f1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    edit(&f1, "generation", 2);
    lab.ship(&lab.pri_cfg);
    let f2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    assert_eq!(lab.standby_manifests().len(), 2);
    let plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(plan.contains(&f2) && !plan.contains(&f1), "{plan}");
    let st: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["status", "--json"])).unwrap();
    assert_eq!(
        st["newest_complete_full_set"]["set_id"],
        f2.as_str(),
        "{st}"
    );

    for (key, v) in [("generation", u64::MAX), ("seq", u64::MAX)] {
        let f = lab.snapshot(false)["id"].as_str().unwrap().to_string();
        edit(&f, key, v);
        let out = lab.run(&lab.pri_cfg, &["ship"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            err.contains(&format!(
                "claims {}",
                if key == "seq" {
                    "sequence number"
                } else {
                    "generation"
                }
            )),
            "{err}"
        );
        std::fs::remove_file(set_file(&f)).unwrap();
    }
    let plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(plan.contains(&f2), "{plan}");
}
