use super::*;

fn set(id: &str, roles: &[&str]) -> Manifest {
    let t = Timestamp::UNIX_EPOCH;
    let members = roles.iter().map(|r| Member::plain(r, id, t)).collect();
    Manifest::plain(id, SetKind::Full, "a", members)
}

fn map<T: Clone>(pairs: &[(&str, &[&str])], f: impl Fn(Vec<String>) -> T) -> BTreeMap<String, T> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), f(v.iter().map(|s| s.to_string()).collect())))
        .collect()
}

const A: &str = "20261127T080000.000Z-full";
const B: &str = "20261127T081500.000Z-redolog";
const C: &str = "20261127T090000.000Z-full";

#[test]
fn first_ship_is_full() {
    let p = plan_set(
        &set(A, &["mysql", "redolog"]),
        &BTreeMap::new(),
        &map(&[("mysql", &[A]), ("redolog", &[A])], |v| v),
    );
    assert_eq!(p.len(), 2);
    assert!(p.iter().all(|s| s.base.is_none()));
}

#[test]
fn incremental_from_newest_common_and_skips_received() {
    let local = map(&[("mysql", &[A, C]), ("redolog", &[A, B, C])], |v| v);
    let remote = map(&[("mysql", &[A]), ("redolog", &[A, B, C])], |v| {
        v.into_iter().collect::<BTreeSet<_>>()
    });
    let p = plan_set(&set(C, &["mysql", "redolog"]), &remote, &local);
    assert_eq!(
        p,
        vec![PlannedSend {
            role: "mysql".into(),
            snapshot: C.into(),
            base: Some(A.into())
        }]
    );
    // redolog: newest common is B, not A.
    let remote = map(&[("redolog", &[A, B])], |v| {
        v.into_iter().collect::<BTreeSet<_>>()
    });
    let p = plan_set(&set(C, &["redolog"]), &remote, &local);
    assert_eq!(p[0].base.as_deref(), Some(B));
}

#[test]
fn base_must_exist_on_both_sites() {
    let local = map(&[("mysql", &[C])], |v| v); // A pruned here
    let remote = map(&[("mysql", &[A])], |v| {
        v.into_iter().collect::<BTreeSet<_>>()
    });
    let p = plan_set(&set(C, &["mysql"]), &remote, &local);
    assert_eq!(p[0].base, None);
}

#[test]
fn the_peer_record_is_rewritten_only_when_the_peer_says_something_new_or_an_hour_passed() {
    use crate::base::catalog::PeerRecord;
    use crate::base::site::Role;
    let t0: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
    let rec = |at: Timestamp| PeerRecord {
        site: "b".into(),
        role: Some(Role::Standby),
        generation: Some(3),
        seen_at: at,
        refused: None,
    };
    let now = |mins: i64| {
        t0.checked_add(jiff::SignedDuration::from_mins(mins))
            .unwrap()
    };
    assert!(!peer_record_current(None, &rec(t0)), "nothing recorded");
    assert!(peer_record_current(Some(&rec(t0)), &rec(now(15))));
    assert!(peer_record_current(Some(&rec(t0)), &rec(now(59))));
    assert!(
        !peer_record_current(Some(&rec(t0)), &rec(now(60))),
        "an hour old"
    );
    assert!(
        !peer_record_current(Some(&rec(now(5))), &rec(t0)),
        "a record from the future (the clock stepped back)"
    );
    let changed: [fn(&mut PeerRecord); 4] = [
        |r| r.site = "c".into(),
        |r| r.role = Some(Role::Primary),
        |r| r.generation = Some(4),
        |r| r.refused = Some("split-brain guard".into()),
    ];
    for (i, change) in changed.iter().enumerate() {
        let mut new = rec(now(1));
        change(&mut new);
        assert!(!peer_record_current(Some(&rec(t0)), &new), "change {i}");
    }
}
