//! set -> ship -> failover on real btrfs (loop devices), over the local
//! transport, a custom command transport that cuts or corrupts the stream,
//! and OpenSSH between network namespaces (tests/ssh.rs).

mod common;

use common::output::sent;
use common::*;
use jiff::Timestamp;
use snapsite::dr::replay::format_zmplayredo;

const MIB: usize = 1 << 20;

fn parse_ts(v: &serde_json::Value) -> Timestamp {
    v.as_str().unwrap().parse().unwrap()
}

#[test]
fn set_ship_failover_end_to_end_local() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill(1, 256 * 1024);
    lab.append_redolog("op 1");
    let full = lab.snapshot(false);
    let roles: Vec<&str> = full["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ROLES, "members in the configured order");
    let befores: Vec<Timestamp> = full["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| parse_ts(&m["before"]))
        .collect();
    assert!(befores.windows(2).all(|w| w[0] <= w[1]), "taken in order");

    lab.append_redolog("op 2");
    let redo1 = lab.snapshot(true);
    assert_eq!(redo1["members"].as_array().unwrap().len(), 1);
    lab.append_redolog("op 3");
    let redo2 = lab.snapshot(true);
    lab.append_redolog("op 4 (after the last snapshot: lost)");

    // The dry run asks the standby and sends nothing.
    let plan = lab.ok(&lab.pri_cfg, &["ship", "--dry-run"]);
    assert_eq!(plan.matches("  set ").count(), 3, "{plan}");
    assert_eq!(plan.matches(" full").count(), 4, "{plan}");
    assert!(
        plan.contains(&format!(
            "redolog    incremental from {}",
            redo1["id"].as_str().unwrap()
        )),
        "{plan}"
    );
    assert!(lab.standby_manifests().is_empty());

    let report = lab.ship(&lab.pri_cfg);
    assert_eq!(report["committed"].as_array().unwrap().len(), 3);
    // redolog snapshots after the first are incremental
    let snaps = report["snapshots"].as_array().unwrap();
    let redo_sends: Vec<_> = snaps.iter().filter(|s| s["role"] == "redolog").collect();
    assert_eq!(redo_sends.len(), 3);
    assert!(redo_sends[0]["base"].is_null());
    assert_eq!(redo_sends[1]["base"], full["id"]);
    assert_eq!(redo_sends[2]["base"], redo1["id"]);

    // Nothing left to ship the second time.
    let again = lab.ship(&lab.pri_cfg);
    assert_eq!(again["snapshots"].as_array().unwrap().len(), 0);

    // sets on the standby: all complete
    let sets: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["sets", "--json"])).unwrap();
    assert_eq!(sets.as_array().unwrap().len(), 3);
    assert!(
        sets.as_array()
            .unwrap()
            .iter()
            .all(|s| s["complete"] == true)
    );

    // dry run changes nothing
    let plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(plan.contains(full["id"].as_str().unwrap()), "{plan}");
    assert!(plan.contains(redo2["id"].as_str().unwrap()), "{plan}");
    assert!(!lab.standby_live("mysql").exists());

    let out = run_snapsite(
        &lab.stb_cfg,
        &["failover", "--json"],
        &[("TZ", "America/New_York")],
    );
    let rep = common::success_json("failover", &out);
    assert_eq!(rep["plan"]["set_id"], full["id"]);
    assert_eq!(rep["plan"]["redolog_set_id"], redo2["id"]);
    assert_eq!(rep["replay"]["exit_code"], 0);

    // --fromTime: the set's earliest member before-time, zmplayredo format, local time.
    let tz = jiff::tz::TimeZone::get("America/New_York").unwrap();
    let want = format_zmplayredo(befores[0], &tz);
    let args = std::fs::read_to_string(lab.dir.path().join("replay-args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args[0], "--fromTime");
    assert_eq!(args[1], want);
    assert_eq!(
        args[2],
        lab.dir.path().join("mnt-app/redolog").to_str().unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(lab.dir.path().join("replay-env"))
            .unwrap()
            .trim(),
        full["id"].as_str().unwrap()
    );
    // The replay saw the newest redolog snapshot (op 3), not the lost op 4.
    let seen = std::fs::read_to_string(lab.dir.path().join("replay-redolog")).unwrap();
    assert_eq!(seen, "op 1\nop 2\nop 3\n");
    assert_eq!(
        parse_ts(&rep["recovery_point"]),
        parse_ts(&redo2["members"][0]["before"])
    );

    // Data on the standby equals the set's snapshots on the primary.
    for r in ["mysql", "blob", "index"] {
        assert_eq!(
            tree_digest(&lab.standby_live(r)),
            tree_digest(&lab.primary_snap(r, full["id"].as_str().unwrap())),
            "{r}"
        );
        assert_eq!(
            tree_digest(&lab.dir.path().join("mnt-app").join(r)),
            tree_digest(&lab.standby_live(r))
        );
    }
    // Received snapshots stay pristine (read-only) for further replication.
    let info = sh(&[
        "btrfs",
        "subvolume",
        "show",
        lab.standby_snap("mysql", full["id"].as_str().unwrap())
            .to_str()
            .unwrap(),
    ]);
    assert!(info.contains("readonly"), "{info}");

    // A second failover is refused and says why.
    let out = lab.run(&lab.stb_cfg, &["failover"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already completed"));
}

#[test]
fn incremental_ship_sends_about_the_changed_bytes() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill(10, 256 * 1024);
    write_file(&lab.live("blob").join("big"), &random_bytes(99, 48 * MIB));
    lab.snapshot(false);
    let first = lab.ship(&lab.pri_cfg);
    let blob_full = sent(&first, "blob")["bytes"].as_u64().unwrap();
    assert!(
        blob_full >= 48 * MIB as u64,
        "full send carries the data: {blob_full}"
    );

    // Change 4 MiB in the middle of the 48 MiB file.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(lab.live("blob").join("big"))
            .unwrap();
        f.seek(SeekFrom::Start(20 * MIB as u64)).unwrap();
        f.write_all(&random_bytes(7, 4 * MIB)).unwrap();
        f.sync_all().unwrap();
    }
    lab.snapshot(false);
    let second = lab.ship(&lab.pri_cfg);
    let snaps = second["snapshots"].as_array().unwrap();
    assert!(
        snaps.iter().all(|s| !s["base"].is_null()),
        "all incremental: {second}"
    );
    let blob = sent(&second, "blob")["bytes"].as_u64().unwrap();
    let changed = 4 * MIB as u64;
    eprintln!("incremental blob bytes {blob} for {changed} changed (full: {blob_full})");
    assert!(blob >= changed, "{blob} < {changed}");
    assert!(
        blob < changed + changed / 10,
        "{blob} is more than 10% over the changed bytes"
    );
    for s in snaps.iter().filter(|s| s["role"] != "blob") {
        assert!(
            s["bytes"].as_u64().unwrap() < 64 * 1024,
            "unchanged volume sent {s}"
        );
    }
}

/// A lab (with the replay recorder) and its first set: every volume's
/// `data` (256 KiB, seeded from `seed`) and, in `role`, a file `big` of
/// `big_len` bytes seeded `big_seed`.
fn lab_with_big_set(
    seed: u64,
    role: &str,
    big_seed: u64,
    big_len: usize,
) -> (Lab, serde_json::Value) {
    let lab = Lab::with_replay_recorder();
    lab.fill(seed, 256 * 1024);
    write_file(
        &lab.live(role).join("big"),
        &random_bytes(big_seed, big_len),
    );
    let set = lab.snapshot(false);
    (lab, set)
}

/// A ship through [`byte_filter`] `mode` at byte `at` (`mask`): it must
/// fail. Its output.
fn failed_filtered_ship(lab: &Lab, mode: &str, at: usize, mask: u8) -> std::process::Output {
    let t = lab.filtered_transport(mode, &byte_filter(mode, at, mask), "");
    let out = lab.run(&t, &["ship"]);
    assert!(!out.status.success(), "a ship through `{mode}` must fail");
    out
}

#[test]
fn cut_stream_leaves_nothing_and_next_ship_completes() {
    require_real!();
    let (lab, set) = lab_with_big_set(20, "blob", 5, 16 * MIB);
    // Cut 6 MB into the stream: inside the blob volume's data.
    let out = failed_filtered_ship(&lab, "cut", 6_000_000, 0);
    eprintln!("cut ship said: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        lab.standby_manifests().is_empty(),
        "no manifest after a cut"
    );
    lab.assert_nothing_half_received();
    // Members before the cut were received (and are reused), blob was not.
    let entries = lab.standby_recv_entries();
    let id = set["id"].as_str().unwrap();
    assert!(entries.contains(&format!("mysql/{id}")), "{entries:?}");
    assert!(!entries.contains(&format!("blob/{id}")), "{entries:?}");
    // failover sees no set
    let out = lab.run(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no complete full set"));

    let report = lab.ship(&lab.pri_cfg);
    assert_eq!(report["committed"][0], set["id"]);
    assert_eq!(
        sent_roles(&report),
        ["blob", "index", "redolog"],
        "mysql was not sent twice"
    );
    lab.assert_received_same("blob", id);
}

#[test]
fn flipped_byte_is_detected_and_discarded() {
    require_real!();
    let (lab, set) = lab_with_big_set(30, "blob", 6, 8 * MIB);
    // Flip one bit 3 MB into the stream (inside the blob volume's file data).
    let out = failed_filtered_ship(&lab, "flip", 3_000_000, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("corrupted ship said: {err}");
    assert!(err.contains("blob"), "{err}");
    assert!(lab.standby_manifests().is_empty());
    lab.assert_nothing_half_received();
    let id = set["id"].as_str().unwrap();
    assert!(!lab.standby_recv_entries().contains(&format!("blob/{id}")));

    lab.ship(&lab.pri_cfg);
    assert_eq!(lab.standby_manifests(), [format!("{id}.json")]);
    lab.assert_received_same("blob", id);
}

#[test]
fn half_received_subvolume_from_a_killed_receiver_is_removed() {
    require_real!();
    let (lab, set) = lab_with_big_set(40, "index", 8, 8 * MIB);
    let id = set["id"].as_str().unwrap();
    // What a receiver killed mid-stream leaves: its marker, and a writable
    // subvolume without a Received UUID.
    let dir = lab.standby_recv("index");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!(".receiving-{id}")), "").unwrap();
    let mut send = std::process::Command::new("btrfs")
        .args(["send", "-q"])
        .arg(lab.primary_snap("index", id))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = std::process::Command::new("head")
        .args(["-c", "3000000"])
        .stdin(send.stdout.take().unwrap())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let st = std::process::Command::new("btrfs")
        .arg("receive")
        .arg(&dir)
        .stdin(head.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(!st.success());
    let _ = head.wait();
    let _ = send.kill();
    let _ = send.wait();
    assert!(
        dir.join(id).exists(),
        "the partial subvolume exists before cleanup"
    );
    // It is not presented as received.
    let sets = lab.ok(&lab.stb_cfg, &["sets"]);
    assert!(sets.contains("no sets"), "{sets}");

    let report = lab.ship(&lab.pri_cfg);
    assert!(
        report["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["role"] == "index")
    );
    assert!(!dir.join(format!(".receiving-{id}")).exists());
    lab.assert_nothing_half_received();
    lab.assert_received_same("index", id);
}

#[test]
fn failover_rolls_back_on_error_and_resumes_after_failed_replay() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill(50, 256 * 1024);
    lab.snapshot(false);
    lab.ship(&lab.pri_cfg);

    // Something already sits where the index copy would go: refuse, undo the rest.
    std::fs::create_dir_all(lab.standby_live("index")).unwrap();
    std::fs::write(lab.standby_live("index").join("precious"), "do not touch").unwrap();
    let out = lab.run(&lab.stb_cfg, &["failover"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("index") && err.contains("rolled back"),
        "{err}"
    );
    assert!(
        !lab.standby_live("mysql").exists(),
        "mysql copy rolled back"
    );
    assert!(!lab.standby_live("blob").exists(), "blob copy rolled back");
    assert_eq!(
        std::fs::read_to_string(lab.standby_live("index").join("precious")).unwrap(),
        "do not touch"
    );
    std::fs::remove_dir_all(lab.standby_live("index")).unwrap();

    // Replay fails: copies stay, exit 3, report says so; re-run resumes and replays again.
    std::fs::write(lab.dir.path().join("replay-rc"), "5").unwrap();
    let out = lab.run(&lab.stb_cfg, &["failover"]);
    assert_exit(&out, 3);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replay exit   5"), "{text}");
    assert!(lab.standby_live("mysql").exists());
    std::fs::remove_file(lab.dir.path().join("replay-rc")).unwrap();
    let out = lab.ok(&lab.stb_cfg, &["failover"]);
    assert!(
        out.contains("(resumed)") && out.contains("result        OK"),
        "{out}"
    );
}

#[test]
fn bad_config_is_a_clear_error_and_touches_nothing() {
    // No root needed: validation happens before any storage is touched.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    let state = dir.path().join("state");
    std::fs::write(
        &cfg,
        format!(
            "site = \"a\"\nstate_dir = \"{}\"\n[[volume]]\nrole = \"mysql\"\nbackend = \"btrfs\"\nsource = \"relative/path\"\nsnapshot_dir = \"/x\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"/r\"\nsnapshot_dir = \"/y\"\n",
            state.display()
        ),
    )
    .unwrap();
    for args in [&["check"][..], &["snapshot"], &["failover", "--dry-run"]] {
        let out = run_snapsite(&cfg, args, &[]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(cfg.to_str().unwrap())
                && err.contains("volume[0].source")
                && err.contains("absolute"),
            "{err}"
        );
    }
    assert!(!state.exists(), "nothing was created");
    let out = run_snapsite(&dir.path().join("missing.toml"), &["check"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.toml") && err.contains("hint"),
        "{err}"
    );
}

#[test]
fn failover_killed_mid_way_resumes_on_the_next_run() {
    require_real!();
    let lab = Lab::with_replay_recorder();
    lab.fill(60, 256 * 1024);
    let set = lab.snapshot(false);
    lab.ship(&lab.pri_cfg);
    // A replay that SIGKILLs the failover process the first time it runs:
    // a crash after the copies and mounts, before the report.
    let script = lab.dir.path().join("crash-once.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ ! -e {d}/crashed ]; then touch {d}/crashed; kill -9 $PPID; exit 1; fi\nprintf '%s\\n' \"$@\" > {d}/replay-args\n",
            d = lab.dir.path().display()
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", script.to_str().unwrap()]);
    std::fs::write(
        &lab.stb_cfg,
        lab.standby_toml(&format!(
            "[\"{}\", \"--fromTime\", \"{{from_time}}\"]",
            script.display()
        )),
    )
    .unwrap();
    let out = lab.run(&lab.stb_cfg, &["failover"]);
    assert!(!out.status.success(), "the first failover was killed");
    assert!(
        lab.standby_live("mysql").exists(),
        "its copies are in place"
    );
    assert!(!lab.dir.path().join("replay-args").exists());
    let plan = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(plan.contains("resuming an interrupted failover"), "{plan}");

    let out = lab.ok(&lab.stb_cfg, &["failover"]);
    assert!(
        out.contains("(resumed)") && out.contains("result        OK"),
        "{out}"
    );
    assert!(out.contains(set["id"].as_str().unwrap()));
    let args = std::fs::read_to_string(lab.dir.path().join("replay-args")).unwrap();
    assert_eq!(args.lines().next(), Some("--fromTime"));
    for r in ["mysql", "blob", "index"] {
        assert_eq!(
            tree_digest(&lab.standby_live(r)),
            tree_digest(&lab.primary_snap(r, set["id"].as_str().unwrap())),
            "{r}"
        );
    }
}

/// The kernel's subvolume info (what a receive verifies every snapshot
/// with, no process spawned) says what `btrfs subvolume show` says: of a
/// writable subvolume, of a read-only snapshot of it (parent uuid) and of a
/// received one (received uuid, read-only).
#[test]
fn subvolume_info_from_the_kernel_matches_btrfs_subvolume_show() {
    require_real!();
    use snapsite::backend::btrfs::{parse_subvolume_show, subvolume_info};
    let fs = BtrfsFs::scratch("si");
    let live = fs.subvolume("live");
    write_file(&live.join("f"), &random_bytes(7, 4096));
    let snap = fs.path("snap");
    snapshot_readonly(&live, &snap);
    let recv = fs.path("recv");
    std::fs::create_dir(&recv).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("btrfs send -q \"$1\" | btrfs receive \"$2\" >/dev/null 2>&1")
        .args(["-", snap.to_str().unwrap(), recv.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
    let received = recv.join("snap");
    for (path, ro, parent, got_received) in [
        (&live, false, false, false),
        (&snap, true, true, false),
        (&received, true, false, true),
    ] {
        let kernel = subvolume_info(path).unwrap();
        let shown = parse_subvolume_show(&subvolume_show(path)).unwrap();
        assert_eq!(kernel, shown, "{}", path.display());
        assert_eq!(kernel.readonly, ro, "{}", path.display());
        assert_eq!(kernel.parent_uuid.is_some(), parent, "{}", path.display());
        assert_eq!(
            kernel.received_uuid.is_some(),
            got_received,
            "{}",
            path.display()
        );
    }
    // the received copy carries the sender's uuid as its received uuid
    let sent = subvolume_info(&snap).unwrap();
    assert_eq!(
        subvolume_info(&received).unwrap().received_uuid,
        Some(sent.uuid)
    );
    // not a subvolume root (the ioctl itself would answer for the
    // subvolume containing it): an error, as from `btrfs subvolume show`
    assert!(subvolume_info(&live.join("f")).is_err());
    std::fs::create_dir(live.join("d")).unwrap();
    assert!(subvolume_info(&live.join("d")).is_err());
}

/// The incremental receive's base check looks at the one base (issue 23
/// item 3: no listing of the whole history per receive) and answers as the
/// listing does: for a snapshot taken here, one with a receive marker, a
/// received one (`<id>/<id>`), a missing one, a plain directory named as a
/// set id, and a subvolume not named as one. `present`, `list`,
/// `list_batch_from` and `receive` agree on each.
#[test]
fn receive_base_check_answers_as_the_listing_does() {
    require_real!();
    use snapsite::backend::btrfs::Btrfs;
    use snapsite::backend::{Backend, Receive};
    use snapsite::base::config::{Volume, VolumeAddr};
    let fs = BtrfsFs::scratch("basecheck");
    let live = fs.subvolume("live");
    write_file(&live.join("f"), &random_bytes(3, 4096));
    let dir = fs.path("snap");
    std::fs::create_dir(&dir).unwrap();
    let vol = Volume {
        role: "mysql".into(),
        source: live.display().to_string(),
        addr: VolumeAddr::Btrfs {
            subvolume: live.clone(),
            snapshot_dir: dir.clone(),
        },
        mountpoint: None,
        allow_privileged_files: false,
    };
    let taken = "20261208T010000.000Z-full";
    let marked = "20261208T010100.000Z-full";
    let received = "20261208T010200.000Z-redolog";
    let missing = "20261208T010300.000Z-full";
    let plain = "20261208T010400.000Z-full";
    let plain_nested = "20261208T010500.000Z-full";
    let not_an_id = "not-a-set-id";
    snapshot_readonly(&live, &dir.join(taken));
    snapshot_readonly(&live, &dir.join(marked));
    write_file(&dir.join(format!(".receiving-{marked}")), b"");
    std::fs::create_dir(dir.join(received)).unwrap();
    snapshot_readonly(&live, &dir.join(received).join(received));
    std::fs::create_dir(dir.join(plain)).unwrap();
    std::fs::create_dir_all(dir.join(plain_nested).join(plain_nested)).unwrap();
    snapshot_readonly(&live, &dir.join(not_an_id));
    // Many other names around them (what a long history looks like to a
    // directory read; the base check must not care).
    for i in 0..500 {
        std::fs::create_dir(dir.join(format!("20250101T{:06}.000Z-full", i))).unwrap();
    }

    let cases = [
        (taken, true),
        (marked, false),
        (received, true),
        (missing, false),
        (plain, false),
        (plain_nested, false),
        (not_an_id, false),
    ];
    let listed = Btrfs.list(&vol).unwrap();
    assert_eq!(
        listed,
        [taken, received],
        "only the complete ones are listed"
    );
    for (name, want) in cases {
        let present = Btrfs.present(&vol, &[name]).unwrap();
        assert_eq!(present, [want], "{name}");
        assert_eq!(listed.iter().any(|s| s == name), want, "{name}");
    }
    // Listing from a name on: the same rule, the names before it left out.
    let from = Btrfs.list_batch_from(&[&vol], &[Some(marked)]).unwrap();
    assert_eq!(from[0].snapshots, [received]);

    // The receive itself. A base the listing does not count is refused
    // before anything is written; one it counts starts the receive (which
    // is then aborted: nothing of it stays). The first receive also removes
    // the marked snapshot as a cut receive (`cleanup_partial`), so the
    // marked one is asked last.
    let new = "20261208T020000.000Z-full";
    let uuid = "0b6e2f28-5a3e-4f4e-9d64-2f0a5c9c1f11";
    let mut order: Vec<(&str, bool)> = cases.into_iter().filter(|c| c.0 != marked).collect();
    order.push((marked, false));
    for (name, want) in order {
        let r = Btrfs.receive(
            &vol,
            Receive {
                name: new,
                base: Some(name),
                expect_id: Some(uuid),
                resume: false,
            },
        );
        match r {
            Ok(sink) => {
                assert!(
                    want,
                    "{name}: receive started on a base the listing does not count"
                );
                assert!(dir.join(format!(".receiving-{new}")).exists());
                sink.abort();
            }
            Err(e) => {
                assert!(!want, "{name}: {e}");
                let e = e.to_string();
                if name == not_an_id {
                    assert!(e.contains("not a snapsite set id"), "{e}");
                } else {
                    assert!(
                        e.contains(&format!(
                            "volume `mysql`: base snapshot {name} for incremental receive is missing"
                        )),
                        "{e}"
                    );
                }
            }
        }
        assert!(!dir.join(new).exists(), "{name}: the receive left {new}");
        assert!(!dir.join(format!(".receiving-{new}")).exists(), "{name}");
    }
    assert!(!dir.join(marked).exists(), "the cut receive was removed");
    assert_eq!(Btrfs.list(&vol).unwrap(), [taken, received]);
}
