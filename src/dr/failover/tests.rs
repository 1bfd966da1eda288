use super::*;
use crate::base::model::{Member, SetKind};

fn m(id: &str, kind: SetKind, roles: &[&str], before: &str) -> Manifest {
    let before: Timestamp = before.parse().unwrap();
    let members = roles
        .iter()
        .enumerate()
        .map(|(i, r)| Member {
            before: before + jiff::SignedDuration::from_secs(i as i64),
            after: before + jiff::SignedDuration::from_millis(i as i64 * 1000 + 500),
            ..Member::plain(r, id, before)
        })
        .collect();
    Manifest {
        committed_at: Some(before),
        ..Manifest::plain(id, kind, "a", members)
    }
}

const ALL: &[&str] = &["mysql", "blob", "index", "redolog"];

fn cfg(margin: &str) -> Config {
    let text = format!(
        "site = \"b\"\nstate_dir = \"/var/lib/snapsite\"\n[set]\nsafety_margin = \"{margin}\"\n[[volume]]\nrole = \"mysql\"\nbackend = \"btrfs\"\nsource = \"/srv/mysql\"\nsnapshot_dir = \"/srv/snap/mysql\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"/srv/redolog\"\nsnapshot_dir = \"/srv/snap/redolog\"\n"
    );
    Config::parse(&text, Path::new("/etc/snapsite/test.toml")).unwrap()
}

#[test]
fn the_larger_margin_applies_and_absurd_manifest_margins_are_refused() {
    let mut s = m(
        "20261127T080000.000Z-full",
        SetKind::Full,
        ALL,
        "2026-11-27T08:00:00Z",
    );
    s.safety_margin_ms = 2000;
    let mg = Margin::of(&cfg("5s"), &s).unwrap();
    assert_eq!(
        (mg.standby_ms, mg.manifest_ms, mg.applied_ms),
        (5000, 2000, 5000)
    );
    assert!(mg.applies().contains("standby"));
    let mg = Margin::of(&cfg("500ms"), &s).unwrap();
    assert_eq!(mg.applied_ms, 2000);
    assert!(mg.applies().contains("manifest"));
    s.safety_margin_ms = 500;
    assert_eq!(Margin::of(&cfg("500ms"), &s).unwrap().applies(), "equal");
    for bad in [-1, i64::MIN, MAX_MANIFEST_MARGIN_MS + 1, i64::MAX] {
        s.safety_margin_ms = bad;
        let e = Margin::of(&cfg("5s"), &s).unwrap_err();
        assert!(
            e.message.contains(&s.id) && e.message.contains(&bad.to_string()),
            "{e}"
        );
    }
    s.safety_margin_ms = MAX_MANIFEST_MARGIN_MS;
    assert_eq!(
        Margin::of(&cfg("5s"), &s).unwrap().applied_ms,
        MAX_MANIFEST_MARGIN_MS
    );
}

#[test]
fn progress_lines_keep_their_shape() {
    let e = Event::Copy {
        role: "mysql".into(),
        snapshot: "S".into(),
        target: "/srv/mysql".into(),
        earlier: false,
    };
    assert_eq!(e.to_string(), "  copy     mysql      S -> /srv/mysql");
    let e = Event::Mount {
        role: "blob".into(),
        data: "/srv/blob".into(),
        mountpoint: "/opt/blob".into(),
        earlier: true,
    };
    assert_eq!(
        e.to_string(),
        "  mount    blob       /srv/blob at /opt/blob (mounted by the interrupted attempt)"
    );
}

#[test]
fn proc_stat_and_groups() {
    let me = std::process::id() as i32;
    let st = procs::stat(me).unwrap();
    assert_eq!(st.pgrp, nix::unistd::getpgrp().as_raw());
    assert!(st.start_ticks > 0);
    assert!(procs::members(st.pgrp).contains(&me));
    assert!(
        !procs::is_live_serve(me),
        "a test binary is not a serve session"
    );
    let r = procs::record(me as u32);
    assert_eq!(r.start_ticks, st.start_ticks);
    assert!(!r.boot_id.is_empty());
}

#[test]
fn a_gated_child_runs_only_after_go() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("ran");
    let argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "touch \"$1\"; [ \"$SNAPSITE_HOOK\" = replay ] && exit 7".into(),
        "sh".into(),
        mark.display().to_string(),
    ];
    let env = [("SNAPSITE_HOOK", "replay".to_string())];
    // Cancelled before the gate opens: it never runs.
    let g = procs::spawn_gated(&argv, &env).unwrap();
    let pid = g.pid() as i32;
    assert_eq!(procs::stat(pid).unwrap().pgrp, pid, "its own group");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(!mark.exists(), "held at the gate");
    g.cancel();
    assert!(!mark.exists(), "never ran");
    // Let go: it runs with the environment and its exit code comes back.
    let g = procs::spawn_gated(&argv, &env).unwrap();
    assert_eq!(g.go().unwrap(), Some(7));
    assert!(mark.exists());
    assert!(procs::spawn_gated(&["/nonexistent/replay".into()], &env).is_err());
}

fn history() -> Vec<Manifest> {
    vec![
        m(
            "20261127T070000.000Z-full",
            SetKind::Full,
            ALL,
            "2026-11-27T07:00:00Z",
        ),
        m(
            "20261127T071500.000Z-redolog",
            SetKind::Redolog,
            &["redolog"],
            "2026-11-27T07:15:00Z",
        ),
        m(
            "20261127T080000.000Z-full",
            SetKind::Full,
            ALL,
            "2026-11-27T08:00:00Z",
        ),
        m(
            "20261127T081500.000Z-redolog",
            SetKind::Redolog,
            &["redolog"],
            "2026-11-27T08:15:00Z",
        ),
        m(
            "20261127T083000.000Z-redolog",
            SetKind::Redolog,
            &["redolog"],
            "2026-11-27T08:30:00Z",
        ),
    ]
}

#[test]
fn newest_full_and_newest_redolog() {
    let h = history();
    let (s, r) = select(&h, &|_| true, "redolog", None).unwrap();
    assert_eq!(s.id, "20261127T080000.000Z-full");
    assert_eq!(r.id, "20261127T083000.000Z-redolog");
    assert_eq!(s.from_time().to_string(), "2026-11-27T08:00:00Z");
}

#[test]
fn incomplete_sets_are_skipped() {
    let h = history();
    let (s, r) = select(
        &h,
        &|m| m.id != "20261127T080000.000Z-full" && m.id != "20261127T083000.000Z-redolog",
        "redolog",
        None,
    )
    .unwrap();
    assert_eq!(s.id, "20261127T070000.000Z-full");
    assert_eq!(r.id, "20261127T081500.000Z-redolog");
}

#[test]
fn redolog_older_than_set_is_never_used() {
    let h = history()[..3].to_vec(); // newest full at 08:00, newest redolog 07:15
    let (s, r) = select(&h, &|_| true, "redolog", None).unwrap();
    assert_eq!(s.id, "20261127T080000.000Z-full");
    assert_eq!(r.id, s.id, "falls back to the set's own redolog member");
}

#[test]
fn requested_set_and_errors() {
    let h = history();
    let (s, r) = select(&h, &|_| true, "redolog", Some("20261127T070000.000Z-full")).unwrap();
    assert_eq!(s.id, "20261127T070000.000Z-full");
    assert_eq!(r.id, "20261127T083000.000Z-redolog");
    assert!(
        select(
            &h,
            &|_| true,
            "redolog",
            Some("20261127T071500.000Z-redolog")
        )
        .is_err()
    );
    assert!(
        select(&h, &|_| false, "redolog", None)
            .unwrap_err()
            .to_string()
            .contains("no complete full set")
    );
    assert!(select(&[], &|_| true, "redolog", None).is_err());
}

#[test]
fn order_is_by_sequence_not_by_clock() {
    // F1, then the clock steps back an hour: F2 and R2 carry earlier
    // times than F1 but later sequence numbers.
    let mut f1 = m(
        "20261127T090000.000Z-full",
        SetKind::Full,
        ALL,
        "2026-11-27T09:00:00Z",
    );
    f1.seq = 1;
    let mut f2 = m(
        "20261127T090000.001Z-full",
        SetKind::Full,
        ALL,
        "2026-11-27T08:05:00Z",
    );
    f2.seq = 2;
    let mut r2 = m(
        "20261127T090000.002Z-redolog",
        SetKind::Redolog,
        &["redolog"],
        "2026-11-27T08:10:00Z",
    );
    r2.seq = 3;
    let h = vec![f1, f2, r2];
    let (s, r) = select(&h, &|_| true, "redolog", None).unwrap();
    assert_eq!(s.seq, 2);
    assert_eq!(r.seq, 3, "the redolog snapshot taken after S is used");
}
