//! The `mailstore` command line where no MariaDB is needed: replay refuses
//! a bad `--fromTime` and a redolog that does not reach back, before it
//! touches any store. (Building this test also builds the `mailstore`
//! binary that tests/drill.rs and scripts/demo run.)

use std::process::Command;

use mailstore::redolog::{Message, Op, RedoWriter, log_files};

fn mailstore(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mailstore"))
        .args(args)
        .output()
        .unwrap()
}

fn volumes(dir: &std::path::Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "--socket".into(),
        format!("{d}/no-such.sock"),
        "--blob".into(),
        format!("{d}/blob"),
        "--index".into(),
        format!("{d}/index"),
        "--redolog".into(),
        format!("{d}/redolog"),
    ]
}

/// `mailstore replay` on `dir`'s (missing) stores with `--fromTime from`:
/// it exits 2; its stderr.
fn refused_replay(dir: &std::path::Path, from: &str) -> String {
    let mut args = vec!["replay".to_string()];
    args.extend(volumes(dir));
    args.extend(["--fromTime".into(), from.into()]);
    let out = mailstore(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn replay_refuses_the_guides_colon_form() {
    let d = tempfile::tempdir().unwrap();
    let err = refused_replay(d.path(), "2026/11/27 08:00:00:000");
    assert!(err.contains("colon before the milliseconds"), "{err}");
}

#[test]
fn replay_refuses_a_redolog_that_does_not_reach_back() {
    let d = tempfile::tempdir().unwrap();
    let (mut w, _) = RedoWriter::open(&d.path().join("redolog"), 200).unwrap();
    for id in 1..=8 {
        w.append(Op::Deliver(Message {
            id,
            mailbox: "alice".into(),
            sender: "bob@example.org".into(),
            subject: "s".into(),
            body: format!("tok{id}"),
        }))
        .unwrap();
    }
    drop(w);
    // The archived logs were deleted (Zimbra: zimbraRedoLogDeleteOnRollover).
    for f in log_files(&d.path().join("redolog")).unwrap() {
        if !f.ends_with("redo.log") {
            std::fs::remove_file(f).unwrap();
        }
    }
    let err = refused_replay(d.path(), "2000/01/01 00:00:00.000");
    assert!(err.contains("does not reach back to --fromTime"), "{err}");
}

#[test]
fn timeline_sorts_events_and_snapshot_members() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("events");
    std::fs::write(
        &events,
        "2026-11-27T08:00:05Z\tshipped\n2026-11-27T07:59:59Z\twriter started\n",
    )
    .unwrap();
    let manifests = d.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(
        manifests.join("a.json"),
        r#"{"id":"x","kind":"full","members":[{"role":"mysql","before":"2026-11-27T08:00:00Z"},{"role":"redolog","before":"2026-11-27T08:00:01Z"}]}"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailstore"))
        .args(["timeline", "--events"])
        .arg(&events)
        .arg("--manifests")
        .arg(&manifests)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            "07:59:59.000 writer started",
            "08:00:00.000 snapshot mysql    (full set)",
            "08:00:01.000 snapshot redolog  (full set)",
            "08:00:05.000 shipped",
        ]
    );
}
