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
