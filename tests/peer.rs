//! The DR verbs and the peer (issue 24 item 5, issue 25).
//!
//! failback and switchover believe nothing the peer says beyond what this
//! site can check: its welcome is decoded with every claim bounded (a role
//! that is one, a generation, lists of valid names), and the generation is
//! believed only up to one above what this site has seen — a peer claiming
//! 2^64-1 demotes nobody. In process where the logic is the point; through
//! a real peer process (the command transport) for the refusals; on real
//! btrfs for the one that matters most: the old primary, asked by a peer
//! claiming the last generation, stays primary with its data untouched.
//!
//! And a running verb is not a crashed one: a journal names its owner
//! process; while it lives `status` and `role` say `running (pid N)`, once
//! it is killed they say `interrupted` with the command that finishes it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::base::model::{SetKind, new_set_id};
use snapsite::base::site::Role;
use snapsite::dr::failback::{self, MAX_PEER_NAMES, MAX_PEER_VOLUMES, PeerClaim};
use snapsite::wire::stream::{Msg, PROTOCOL_VERSION, VolumeInventory, Writer};

fn set_id(secs: i64) -> String {
    new_set_id(
        jiff::Timestamp::from_second(1_790_000_000 + secs).unwrap(),
        SetKind::Full,
    )
}

/// An honest welcome of peer `b`: two volumes holding two sets.
fn welcome(role: Option<&str>, generation: Option<u64>) -> Msg {
    common::welcome_of_b(vec![set_id(0), set_id(60)], Vec::new(), role, generation)
}

/// Change a welcome's fields in place.
fn edit(
    mut m: Msg,
    f: impl FnOnce(&mut String, &mut Vec<VolumeInventory>, &mut Vec<String>),
) -> Msg {
    if let Msg::Welcome {
        site,
        volumes,
        committed,
        ..
    } = &mut m
    {
        f(site, volumes, committed);
    }
    m
}

/// (peer role, peer generation, own generation, highest seen) -> the
/// generation adopted, or a piece of the refusal.
type Case = (Role, u64, u64, u64, Result<u64, &'static str>);

fn claim(role: Role, generation: u64) -> PeerClaim {
    let m = welcome(Some(role.as_str()), Some(generation));
    failback::decode_welcome(&m).unwrap()
}

#[test]
fn a_welcome_that_no_snapsite_peer_sends_is_refused_by_name() {
    let honest = failback::decode_welcome(&welcome(Some("primary"), Some(2))).unwrap();
    assert_eq!(honest.role, Role::Primary);
    assert_eq!(honest.generation, 2);
    assert_eq!(honest.volumes.len(), 2);
    assert_eq!(honest.committed.len(), 2);

    let many_volumes = edit(welcome(Some("primary"), Some(2)), |_, v, _| {
        let one = v[0].clone();
        *v = (0..=MAX_PEER_VOLUMES)
            .map(|i| VolumeInventory {
                role: format!("v{i}"),
                ..one.clone()
            })
            .collect();
    });
    let many_names = edit(welcome(Some("primary"), Some(2)), |_, _, c| {
        *c = (0..=MAX_PEER_NAMES as i64).map(set_id).collect();
    });
    let cases: Vec<(Msg, &str)> = vec![
        (
            welcome(Some("bogus\n"), Some(2)),
            "role `bogus\\n`, which is neither",
        ),
        (
            welcome(Some("Primary"), Some(2)),
            "neither `primary` nor `standby`",
        ),
        (welcome(None, Some(2)), "names no role"),
        (welcome(Some("primary"), None), "names no generation"),
        (
            edit(welcome(Some("primary"), Some(2)), |s, _, _| {
                *s = String::new()
            }),
            "site name is not one",
        ),
        (
            edit(welcome(Some("primary"), Some(2)), |s, _, _| {
                *s = "b/../a".into()
            }),
            "site name is not one",
        ),
        (
            edit(welcome(Some("primary"), Some(2)), |s, _, _| {
                *s = "b".repeat(65)
            }),
            "site name is not one",
        ),
        (many_volumes, "more than 256"),
        (many_names, "more than 200000"),
        (
            edit(welcome(Some("primary"), Some(2)), |_, v, _| {
                v[1].role = "mysql".into()
            }),
            "lists volume `mysql` twice",
        ),
        (
            edit(welcome(Some("primary"), Some(2)), |_, v, _| {
                v[0].role = "../etc".into()
            }),
            "volume `../etc` whose name is not a role",
        ),
        (
            edit(welcome(Some("primary"), Some(2)), |_, v, _| {
                v[0].snapshots.push("../../x".into())
            }),
            "snapshot `../../x` that is not a set id",
        ),
        (
            edit(welcome(Some("primary"), Some(2)), |_, _, c| {
                c.push("latest".into())
            }),
            "committed set `latest` that is not a set id",
        ),
        (
            Msg::Hello {
                protocol: PROTOCOL_VERSION,
                site: "b".into(),
                version: "x".into(),
                since: None,
            },
            "expected the peer's welcome",
        ),
    ];
    for (m, want) in cases {
        let e = failback::decode_welcome(&m).unwrap_err().to_string();
        assert!(e.contains(want), "want {want:?} in: {e}");
        let message = e.split("\n  hint:").next().unwrap();
        assert!(
            !message.contains('\n'),
            "a wire string reached the message raw: {e}"
        );
    }
    let mut other = welcome(Some("primary"), Some(2));
    if let Msg::Welcome { protocol, .. } = &mut other {
        *protocol += 1;
    }
    let e = failback::decode_welcome(&other).unwrap_err().to_string();
    assert!(e.contains("speaks protocol"), "{e}");
}

#[test]
fn failback_adopts_only_a_believable_newer_generation() {
    // (peer role, peer generation, own generation, seen) -> adopted or the refusal.
    let max = u64::MAX;
    let cases: Vec<Case> = vec![
        (Role::Primary, 2, 1, 1, Ok(2)),
        (Role::Primary, 3, 1, 1, Err("claims generation 3")),
        (
            Role::Primary,
            max,
            1,
            1,
            Err("claims generation 18446744073709551615"),
        ),
        // A peer this site has seen in generation 4 may be primary in 5.
        (Role::Primary, 5, 1, 4, Ok(5)),
        (Role::Primary, 1, 1, 1, Err("primary in a newer generation")),
        (Role::Primary, 0, 1, 1, Err("primary in a newer generation")),
        (Role::Standby, 2, 1, 1, Err("primary in a newer generation")),
        // The top of the range: believable only just below it, never wraps.
        (Role::Primary, max, max - 1, max - 1, Ok(max)),
        (
            Role::Primary,
            max,
            max,
            max,
            Err("primary in a newer generation"),
        ),
        (
            Role::Primary,
            0,
            max,
            max,
            Err("primary in a newer generation"),
        ),
    ];
    for (role, g, own, seen, want) in cases {
        let got = failback::failback_verdict(&claim(role, g), Role::Primary, own, seen)
            .map_err(|e| e.to_string());
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g),
            (Err(w), Err(e)) => assert!(e.contains(w), "{role:?} {g} own {own} seen {seen}: {e}"),
            (w, g) => panic!("{role:?} {g:?} own {own} seen {seen}: want {w:?}, got {g:?}"),
        }
    }
}

#[test]
fn switchover_hands_the_role_only_to_its_standby() {
    let max = u64::MAX;
    let cases: Vec<Case> = vec![
        (Role::Standby, 1, 1, 1, Ok(1)),
        // A standby that has not seen this generation yet (no set shipped
        // since the last failover) is still this site's standby.
        (Role::Standby, 0, 1, 1, Ok(0)),
        (
            Role::Standby,
            2,
            1,
            1,
            Err("now says it is standby in generation 2"),
        ),
        (
            Role::Primary,
            1,
            1,
            1,
            Err("now says it is primary in generation 1"),
        ),
        (Role::Primary, 2, 1, 1, Err("now says it is primary")),
        (
            Role::Standby,
            max,
            1,
            1,
            Err("claims generation 18446744073709551615"),
        ),
        (Role::Standby, max, max, max, Ok(max)),
    ];
    for (role, g, own, seen, want) in cases {
        let got =
            failback::switchover_verdict(&claim(role, g), own, seen).map_err(|e| e.to_string());
        match (want, got) {
            (Ok(w), Ok(g)) => assert_eq!(w, g),
            (Err(w), Err(e)) => assert!(e.contains(w), "{role:?} {g} own {own}: {e}"),
            (w, g) => panic!("{role:?} {g:?} own {own}: want {w:?}, got {g:?}"),
        }
    }
}

/// A peer process that answers the hello with `bytes` (magic and frames as
/// written to a file) and then swallows what it is sent.
fn fake_peer_argv(dir: &Path, name: &str, m: &Msg) -> String {
    let mut w = Writer::new(Vec::new());
    w.magic().unwrap();
    w.msg(m).unwrap();
    let file = dir.join(format!("{name}.bin"));
    std::fs::write(&file, w.into_inner()).unwrap();
    format!(
        "transport = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"cat \\\"$1\\\"; exec cat >/dev/null\", \"sh\", \"{}\"]",
        file.display()
    )
}

/// Through the real transport (a peer process): every hostile welcome is
/// refused by failback before anything is planned, and nothing is written.
#[test]
fn failback_against_a_hostile_peer_process_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let hostile: Vec<(&str, Msg, &str)> = vec![
        (
            "max",
            welcome(Some("primary"), Some(u64::MAX)),
            "claims generation 18446744073709551615",
        ),
        (
            "two-ahead",
            welcome(Some("primary"), Some(3)),
            "claims generation 3",
        ),
        ("no-role", welcome(None, Some(1)), "names no role"),
        (
            "nonsense-role",
            welcome(Some("root"), Some(1)),
            "role `root`",
        ),
        (
            "bad-name",
            edit(welcome(Some("primary"), Some(1)), |_, v, _| {
                v[0].snapshots = vec!["..".into()]
            }),
            "not a set id",
        ),
        ("not-welcome", Msg::Bye, "expected welcome"),
    ];
    for (name, m, want) in hostile {
        let text = format!(
            "site = \"a\"\nstate_dir = \"{}\"\n[[volume]]\nrole = \"mysql\"\nbackend = \"btrfs\"\nsource = \"{1}/live/mysql\"\nsnapshot_dir = \"{1}/snap/mysql\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"{1}/live/redolog\"\nsnapshot_dir = \"{1}/snap/redolog\"\n[standby]\n{2}\n",
            state.display(),
            dir.path().display(),
            fake_peer_argv(dir.path(), name, &m)
        );
        let cfg = Config::parse(&text, &dir.path().join(format!("{name}.toml"))).unwrap();
        for dry_run in [true, false] {
            let e = match failback::run(&cfg, dry_run) {
                Ok(_) => panic!("{name}: failback accepted a hostile peer"),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(want), "{name}: want {want:?} in: {e}");
        }
        let cat = Catalog::new(&state);
        assert!(
            cat.role_record().unwrap().is_none(),
            "{name}: a role was recorded"
        );
        assert!(
            cat.peer_record().unwrap().is_none(),
            "{name}: the claim was recorded"
        );
        assert!(
            snapsite::base::journal::interrupted(&cat)
                .unwrap()
                .is_empty()
        );
        let left: Vec<String> = common::sorted_names(&state)
            .into_iter()
            .filter(|n| !n.ends_with(".lock") && n != "lock")
            .collect();
        assert!(
            !left.iter().any(|n| n.starts_with("divergent")
                || n.starts_with("journal")
                || n == "role.json"),
            "{name}: {left:?}"
        );
        assert_eq!(
            snapsite::base::site::current_role(&cfg, &cat).unwrap(),
            (Role::Primary, 1),
            "{name}"
        );
    }
}

/// The one that matters most, on real btrfs: the primary, asked to fail
/// back by a peer that claims to be primary in generation 2^64-1 (and
/// lists this site's own shipped set, so every other check would pass),
/// stays primary with its live data, snapshots and sets untouched; an
/// honest ship to the real standby still works afterwards.
#[test]
fn a_peer_claiming_the_last_generation_does_not_demote_the_primary_on_btrfs() {
    require_real!();
    let t = Instant::now();
    let lab = common::Lab::new("[\"/bin/true\"]");
    for r in common::ROLES {
        common::write_file(
            &lab.live(r).join("data"),
            &common::random_bytes(7, 64 << 10),
        );
    }
    let set = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    let before_live: Vec<_> = common::ROLES
        .iter()
        .map(|r| common::tree_digest(&lab.live(r)))
        .collect();
    let state = lab.dir.path().join("state-pri");
    let before_state = common::sorted_names(&state);
    let before_role = lab.ok(&lab.pri_cfg, &["role"]);
    assert!(
        before_role.contains("primary in generation 1"),
        "{before_role}"
    );
    let hostile = Msg::Welcome {
        protocol: PROTOCOL_VERSION,
        site: "standby".into(),
        volumes: common::ROLES
            .iter()
            .map(|r| VolumeInventory {
                role: r.to_string(),
                backend: "btrfs".into(),
                snapshots: vec![set.clone()],
                resumable: None,
            })
            .collect(),
        committed: vec![set.clone()],
        compress: Vec::new(),
        role: Some("primary".into()),
        generation: Some(u64::MAX),
    };
    let cfg = lab.primary_variant("hostile", &fake_peer_argv(lab.dir.path(), "max", &hostile));
    for args in [&["failback", "--dry-run"][..], &["failback"][..]] {
        let out = lab.run(&cfg, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(
            err.contains("claims generation 18446744073709551615"),
            "{args:?}: {err}"
        );
    }
    // Nothing changed: the live data, the set, the state files; the role.
    for (r, before) in common::ROLES.iter().zip(&before_live) {
        assert_eq!(&common::tree_digest(&lab.live(r)), before, "volume {r}");
        assert!(lab.primary_snap(r, &set).exists(), "snapshot of {r}");
    }
    assert_eq!(common::sorted_names(&state), before_state);
    assert_eq!(lab.ok(&lab.pri_cfg, &["role"]), before_role);
    // Still the primary: the next set ships to the real standby.
    lab.snapshot(false);
    let r = lab.ship(&lab.pri_cfg);
    assert_eq!(r["committed"].as_array().unwrap().len(), 1, "{r}");
    eprintln!(
        "btrfs hostile-peer case: {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

/// A `switchover` process that holds its journal (its set hook blocks
/// before the final set): `role` says running with its pid; once it is
/// killed (SIGKILL), interrupted with the command that finishes it.
#[test]
fn a_running_verb_is_shown_running_and_a_killed_one_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let hook_pid = dir.path().join("hook.pid");
    let cfg_path = dir.path().join("a.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "{}[standby]\ntransport = \"command\"\ncommand = [\"/bin/false\"]\n[hooks.set]\npre = [\"/bin/sh\", \"-c\", \"echo $$ > {}; exec sleep 120\"]\ntimeout = \"150s\"\n",
            common::sitetoml::volumes_toml("a", dir.path(), &["redolog"], "snap", None),
            hook_pid.display()
        ),
    )
    .unwrap();
    let mut child = common::spawn_snapsite(&cfg_path, &["switchover"]);
    let pid = child.id();
    let cat = Catalog::new(&state);
    // The journal is written, and the hook started, before the final set.
    let t = Instant::now();
    while !hook_pid.exists()
        || snapsite::base::journal::interrupted(&cat)
            .unwrap()
            .is_empty()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "switchover never began"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let hook: i32 = loop {
        if let Ok(Ok(p)) = std::fs::read_to_string(&hook_pid).map(|s| s.trim().parse()) {
            break p;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cleanup = HookGuard(hook);
    let running = snapsite::base::journal::interrupted(&cat).unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].verb, "switchover");
    assert_eq!(running[0].running, Some(pid));
    let role = common::run_snapsite(&cfg_path, &["role"], &[]);
    let text = String::from_utf8_lossy(&role.stdout);
    assert!(
        text.contains(&format!("switchover running (pid {pid};")),
        "{text}"
    );
    assert!(!text.contains("interrupted"), "{text}");

    // SIGKILL: the journal stays, its owner is gone.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    let list = snapsite::base::journal::interrupted(&cat).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].running, None);
    let role = common::run_snapsite(&cfg_path, &["role"], &[]);
    let text = String::from_utf8_lossy(&role.stdout);
    assert!(
        text.contains("interrupted switchover")
            && text.contains("finish it with `snapsite switchover`"),
        "{text}"
    );
    drop(cleanup);
}

/// Kills the set hook's process (its own process group) by exact pid.
struct HookGuard(i32);

impl Drop for HookGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}
