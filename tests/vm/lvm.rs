//! The LVM backend on real LVM thin (and classic) volumes, driven through
//! the `snapsite` binary: full and incremental round trips compared byte
//! for byte, the bytes shipped for a known change, a cut transfer recovered,
//! cut transfers resumed from the standby's verified progress (full and
//! incremental, cut again while resuming, a byte flipped before a cut),
//! the pool's metadata snapshot released after a failure and after a killed
//! sender, set -> ship -> failover with ext4 on thin LVs, and classic LVs.

use super::*;

const ROLES: [&str; 2] = ["mysql", "redolog"];
const LV_SIZE: u64 = 64 * MIB;

/// A primary VG and a standby VG, each on its own loop device with a 64 KiB
/// chunk thin pool; volumes `mysql` and `redolog` (64 MiB thin LVs, or
/// classic LVs). The standby receives into `<role>` and fails over to
/// `<role>live`, mounted under `dir/app/<role>`; tests mount the primary's
/// under `dir/pri/<role>`. Both unmounted on drop, before the VGs go.
type LvmLab = Lab<LvmSites, Unmount>;

impl LvmLab {
    fn new(classic: bool) -> LvmLab {
        let sites = LvmSites::new("lv", 2048 * MIB, "1536M");
        let (pri, dir) = (&sites.pri, &sites.dir);
        let (mut p, mut s) = (String::new(), String::new());
        let mut mounts = Unmount(Vec::new());
        for r in ROLES {
            let size = format!("{}b", LV_SIZE);
            if classic {
                sh(&["lvcreate", "-y", "-L", &size, "-n", r, &pri.name]);
            } else {
                sites.primary_thin(r, &size);
            }
            p.push_str(&sites.primary_volume(r, ""));
            s.push_str(&sites.standby_volume(r, Some(&dir.join("app").join(r))));
            mounts
                .0
                .extend(["app", "pri"].map(|sub| dir.join(sub).join(r)));
        }
        let replay = replay_args(dir);
        Lab::local(sites, mounts, &p, &s, &replay)
    }

    /// sha256 of snapshot `id` of `role` on one site (activated to be read).
    fn snap_digest(&self, vg: &VolumeGroup, role: &str, id: &str) -> String {
        let lv = format!("{role}.{id}");
        if vg.lvs_field(&lv, "lv_active") != "active" {
            sh(&["lvchange", "-ay", "-K", &vg.lv(&lv)]);
        }
        sha256(&vg.dev(&lv))
    }

    /// Both sites hold snapshot `id` of every role, byte for byte.
    fn assert_same(&self, id: &str) {
        for r in ROLES {
            assert_eq!(
                self.snap_digest(&self.pri, r, id),
                self.snap_digest(&self.stb, r, id),
                "{r} {id}: the standby's snapshot differs from the primary's"
            );
        }
    }

    fn held_root(&self) -> String {
        let st = sh(&[
            "dmsetup",
            "status",
            &format!("{}-pool-tpool", self.pri.name),
        ]);
        st.split_whitespace().nth(6).unwrap().to_string()
    }

    /// A directory with a fake `thin_delta` running `body` (sh).
    fn fake_thin_delta(&self, body: &str) -> PathBuf {
        let d = self.dir.join(unique_name("fakebin"));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("thin_delta");
        std::fs::write(&f, format!("#!/bin/sh\n{body}\n")).unwrap();
        sh(&["chmod", "+x", f.to_str().unwrap()]);
        d
    }
}

/// `ship --json`: the payload bytes of each volume's snapshot `id`.
fn shipped(report: &serde_json::Value, role: &str, id: &str) -> (u64, Option<String>) {
    let s = report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == role && s["snapshot"] == id)
        .unwrap_or_else(|| panic!("{role} {id} not shipped: {report}"));
    (
        s["bytes"].as_u64().unwrap(),
        s["base"].as_str().map(str::to_string),
    )
}

#[test]
fn lvm_thin_full_and_incremental_round_trips_ship_only_changed_blocks() {
    require_lab!();
    let lab = LvmLab::new(false);
    let mysql = lab.pri.dev("mysql");
    write_pattern(&mysql, 0, 1, 8 * MIB as usize);
    write_pattern(&mysql, 30 * MIB, 2, 2 * MIB as usize);
    write_pattern(&lab.pri.dev("redolog"), 0, 3, MIB as usize);
    let id1 = lab.snapshot();
    let r1 = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r1["committed"][0], id1.as_str());
    let (full, base) = shipped(&r1, "mysql", &id1);
    assert_eq!(base, None);
    // a full send carries the mapped blocks only: 10 MiB of 64
    assert!(
        (10 * MIB..11 * MIB).contains(&full),
        "full send of 10 MiB mapped: {full} bytes"
    );
    lab.assert_same(&id1);
    // the received snapshot names the sender's snapshot
    let uuid = lab.pri.lvs_field(&format!("mysql.{id1}"), "lv_uuid");
    let tags = lab.stb.lvs_field(&format!("mysql.{id1}"), "lv_tags");
    assert!(
        tags.contains(&format!("snapsite-from-{uuid}")),
        "tags {tags}"
    );
    assert!(tags.contains(&format!("snapsite-set-{id1}")), "tags {tags}");
    assert_eq!(
        lab.stb
            .lvs_field(&format!("mysql.{id1}"), "lv_attr")
            .chars()
            .nth(1),
        Some('r'),
        "received snapshot is read-only"
    );

    // A known change: 2 MiB rewritten, 1 MiB new, 1 MiB discarded.
    write_pattern(&mysql, 5 * MIB, 4, 2 * MIB as usize);
    write_pattern(&mysql, 40 * MIB, 5, MIB as usize);
    sh(&[
        "blkdiscard",
        "-o",
        &(30 * MIB).to_string(),
        "-l",
        &MIB.to_string(),
        mysql.to_str().unwrap(),
    ]);
    let id2 = lab.snapshot();
    let t = Instant::now();
    let r2 = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    eprintln!("incremental ship took {:?}", t.elapsed());
    let (inc, base) = shipped(&r2, "mysql", &id2);
    assert_eq!(base.as_deref(), Some(id1.as_str()));
    let changed = 3 * MIB;
    // records: 13 bytes per MiB written, 17 per zeroed range, plus header
    let framing = 4096;
    eprintln!("mysql: {changed} bytes changed, {inc} bytes shipped");
    assert!(
        inc >= changed && inc <= changed + changed / 10 + framing,
        "incremental of a 3 MiB change shipped {inc} bytes"
    );
    let (redo, _) = shipped(&r2, "redolog", &id2);
    assert!(redo < 4096, "unchanged redolog shipped {redo} bytes");
    lab.assert_same(&id2);
    // the standby's copy of the discarded range reads as zeros
    let lv2 = lab.stb.dev(&format!("mysql.{id2}"));
    assert!(
        read_at(&lv2, 30 * MIB, MIB as usize)
            .iter()
            .all(|b| *b == 0)
    );

    // The chain goes on: a third incremental on top of the second.
    write_pattern(&mysql, 7 * MIB, 6, MIB as usize);
    let id3 = lab.snapshot();
    let r3 = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(shipped(&r3, "mysql", &id3).1.as_deref(), Some(id2.as_str()));
    lab.assert_same(&id3);
    assert_eq!(lab.held_root(), "-", "metadata snapshot released");
    let sets = lab.json(&lab.stb_cfg, &["sets", "--json"]);
    assert_eq!(sets.as_array().map(|a| a.len()), Some(3), "{sets}");
}

#[test]
fn lvm_cut_transfer_recovers_and_metadata_snapshot_is_always_released() {
    require_lab!();
    let lab = LvmLab::new(false);
    let mysql = lab.pri.dev("mysql");
    write_pattern(&mysql, 0, 11, 4 * MIB as usize);
    let id1 = lab.snapshot();
    lab.ok(&lab.pri_cfg, &["ship"]);

    // 24 MiB changed, the transfer cut 4..20 MB into it.
    write_pattern(&mysql, 8 * MIB, 12, 24 * MIB as usize);
    let id2 = lab.snapshot();
    let at = random_between(4_000_000, 20_000_000);
    eprintln!("cutting the transfer at byte {at}");
    let out = lab.snapsite(&lab.cutting_config(at), &["ship"]);
    assert!(!out.status.success(), "a cut ship must fail");
    assert_eq!(lab.standby_manifests(), 1, "no manifest for the cut set");
    let names = sh(&["lvs", "--noheadings", "-o", "lv_name", &lab.stb.name]);
    assert!(
        !names.contains(&format!("mysql.{id2}")),
        "no snapshot for a cut receive: {names}"
    );
    assert_eq!(lab.held_root(), "-");

    // The next ship sends it again from the last good snapshot.
    let r = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r["committed"][0], id2.as_str());
    assert_eq!(shipped(&r, "mysql", &id2).1.as_deref(), Some(id1.as_str()));
    lab.assert_same(&id2);

    // thin_delta fails: the ship fails, the metadata snapshot is released.
    write_pattern(&mysql, 0, 13, MIB as usize);
    let id3 = lab.snapshot();
    let bin = lab.fake_thin_delta("echo 'thin_delta: simulated failure' >&2; exit 1");
    let out = snapsite_run(&lab.pri_cfg, &["ship"], Some(&bin));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("simulated failure"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.held_root(), "-", "released after a failed thin_delta");

    // The sender is killed (SIGKILL) while it holds the metadata snapshot:
    // the next send finds it stale and releases it.
    let pidfile = lab.dir.join("fake.pid");
    let bin = lab.fake_thin_delta(&format!("echo $$ > {}; exec sleep 60", pidfile.display()));
    let argv = vec![
        snapsite_bin(),
        "--config",
        lab.pri_cfg.to_str().unwrap(),
        "ship",
    ];
    let mut cmd = command(&argv);
    cmd.env(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for(
        "the fake thin_delta to start",
        Duration::from_secs(60),
        || pidfile.exists(),
    );
    assert_ne!(lab.held_root(), "-", "held while thin_delta runs");
    sh(&["kill", "-KILL", &child.id().to_string()]);
    let _ = child.wait();
    let sleeper = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    let _ = run(&["kill", "-KILL", &sleeper]);
    assert_ne!(lab.held_root(), "-", "a killed sender cannot release");
    let r = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r["committed"][0], id3.as_str());
    assert_eq!(lab.held_root(), "-", "stale metadata snapshot released");
    lab.assert_same(&id3);
}

/// The standby replica's resume tag, if any.
fn resume_tag(lab: &LvmLab, role: &str) -> Option<String> {
    // The replica does not exist before the first receive creates it.
    let out = run(&["lvs", "--noheadings", "-o", "lv_tags", &lab.stb.lv(role)]);
    let tags = String::from_utf8_lossy(&out.stdout).trim().to_string();
    tags.split(',')
        .find(|t| t.starts_with("snapsite-resume:"))
        .map(str::to_string)
}

/// Segments a resume tag holds (one per session that made progress).
fn segments(tag: &str) -> usize {
    tag.split(':').nth(5).unwrap().split('+').count()
}

#[test]
fn lvm_cut_transfers_resume_from_the_standbys_verified_progress() {
    require_lab!();
    let lab = LvmLab::new(false);
    let mysql = lab.pri.dev("mysql");
    // Full: 24 MiB of data in a 64 MiB thin LV, cut twice at random offsets.
    write_pattern(&mysql, 0, 21, 24 * MIB as usize);
    let id1 = lab.snapshot();
    let at = random_between(5_000_000, 16_000_000);
    eprintln!("full: cutting at byte {at}");
    let out = lab.snapsite(&lab.cutting_config(at), &["ship"]);
    assert!(!out.status.success(), "a cut ship must fail");
    assert_eq!(lab.standby_manifests(), 0);
    let tag = resume_tag(&lab, "mysql").expect("the cut full receive kept its verified progress");
    assert_eq!(segments(&tag), 1, "{tag}");
    assert!(tag.ends_with(&id1), "{tag}");
    // Cut again while resuming: the progress grows by a segment.
    let at2 = random_between(3_000_000, 6_000_000);
    eprintln!("full, resumed: cutting at byte {at2}");
    let out = lab.snapsite(&lab.cutting_config(at2), &["ship"]);
    assert!(!out.status.success());
    let tag2 = resume_tag(&lab, "mysql").expect("still resumable");
    assert_eq!(
        segments(&tag2),
        2,
        "the resumed session's progress kept: {tag2}"
    );
    let r = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r["committed"][0], id1.as_str());
    let (bytes, _) = shipped(&r, "mysql", &id1);
    eprintln!("full: the last session carried {bytes} bytes of 24 MiB");
    // Each cut loses at most the frame (1 MiB) and the record (1 MiB) it
    // was in, and the session's framing.
    assert!(
        bytes + at + at2 <= 29 * MIB,
        "resumed from the verified progress, not restarted: {bytes}"
    );
    lab.assert_same(&id1);
    assert_eq!(resume_tag(&lab, "mysql"), None, "no tag after the commit");

    // Incremental: 16 MiB changed; cut, then a byte flipped on the wire
    // before a second cut: the standby's prefix no longer matches the
    // primary's snapshot, so the token is stale and the send starts over.
    write_pattern(&mysql, 8 * MIB, 22, 16 * MIB as usize);
    let id2 = lab.snapshot();
    let at = random_between(4_000_000, 13_000_000);
    eprintln!("incremental: cutting at byte {at}");
    assert!(
        !lab.snapsite(&lab.cutting_config(at), &["ship"])
            .status
            .success()
    );
    let tag = resume_tag(&lab, "mysql").expect("the cut incremental kept its progress");
    assert!(
        tag.contains(&format!(":{id1}:{id2}")),
        "base and snapshot: {tag}"
    );
    let r = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r["committed"][0], id2.as_str());
    let (bytes, base) = shipped(&r, "mysql", &id2);
    assert_eq!(base.as_deref(), Some(id1.as_str()));
    assert!(bytes + at <= 19 * MIB, "resumed: {bytes}");
    lab.assert_same(&id2);

    write_pattern(&mysql, 0, 23, 12 * MIB as usize);
    let id3 = lab.snapshot();
    let at = random_between(8_000_000, 11_000_000);
    let flip = at - random_between(2_000_000, 6_000_000);
    eprintln!("incremental: byte {flip} flipped, cut at {at}");
    let cfg = damaging_config(&lab.dir, &lab.pri_cfg, &lab.stb_cfg, at, Some(flip));
    assert!(!lab.snapsite(&cfg, &["ship"]).status.success());
    let r = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r["committed"][0], id3.as_str());
    lab.assert_same(&id3);
    assert_eq!(resume_tag(&lab, "mysql"), None);
    assert_eq!(resume_tag(&lab, "redolog"), None);
}

/// `serve` SIGKILLed in the middle of a full receive (no cut handling
/// runs): the periodic checkpoint (every 2 MiB here) is what survives, and
/// its `high` covers every byte the killed receive could have written.
#[test]
fn lvm_a_killed_serve_resumes_from_its_last_checkpoint() {
    require_lab!();
    let lab = LvmLab::new(false);
    let mysql = lab.pri.dev("mysql");
    write_pattern(&mysql, 0, 31, 32 * MIB as usize);
    let id1 = lab.snapshot();
    let pidfile = lab.dir.join("serve.pid");
    let script = lab.dir.join("serve-pid.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {}\nSNAPSITE_LVM_CHECKPOINT_BYTES=2097152 exec {} serve --stdio --config {}\n",
            pidfile.display(),
            snapsite_bin(),
            lab.stb_cfg.display()
        ),
    )
    .unwrap();
    let cfg = script_config(&lab.pri_cfg, &script, &lab.dir.join("primary-pid.toml"));
    let argv = [snapsite_bin(), "--config", cfg.to_str().unwrap(), "ship"];
    let mut child = command(&argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Two checkpoints at least: 4 MiB verified.
    wait_for("a second checkpoint", Duration::from_secs(300), || {
        resume_tag(&lab, "mysql").is_some_and(|t| {
            let end: u64 = t.split(':').nth(5).unwrap().parse().unwrap_or(0);
            end >= 4 * MIB
        })
    });
    let pid = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .to_string();
    sh(&["kill", "-KILL", &pid]);
    let _ = child.wait();
    let tag = resume_tag(&lab, "mysql").expect("the checkpoint survives the kill");
    eprintln!("after the kill: {tag}");
    let r = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(r["committed"][0], id1.as_str());
    let (bytes, _) = shipped(&r, "mysql", &id1);
    eprintln!("resumed after the kill: {bytes} bytes of 32 MiB");
    assert!(bytes <= 29 * MIB, "resumed from the checkpoint: {bytes}");
    lab.assert_same(&id1);
    assert_eq!(resume_tag(&lab, "mysql"), None);
}

#[test]
fn lvm_set_ship_failover_end_to_end() {
    require_lab!();
    let lab = LvmLab::new(false);
    for r in ROLES {
        let dev = lab.pri.dev(r);
        sh(&["mkfs.ext4", "-q", "-E", "nodiscard", dev.to_str().unwrap()]);
        let mp = lab.dir.join("pri").join(r);
        std::fs::create_dir_all(&mp).unwrap();
        sh(&["mount", dev.to_str().unwrap(), mp.to_str().unwrap()]);
    }
    let pri = |r: &str, f: &str| lab.dir.join("pri").join(r).join(f);
    write_pattern(&pri("mysql", "ibdata1"), 0, 21, 4 * MIB as usize);
    write_pattern(&pri("redolog", "redo.log"), 0, 22, MIB as usize);
    sh(&["sync"]);
    let id = lab.snapshot();
    write_pattern(&pri("redolog", "redo-2.log"), 0, 23, MIB as usize);
    sh(&["sync"]);
    let redo = lab.json(&lab.pri_cfg, &["snapshot", "--redolog", "--json"]);
    let rid = redo["id"].as_str().unwrap().to_string();
    write_pattern(&pri("redolog", "lost.log"), 0, 24, MIB as usize);
    sh(&["sync"]);
    let report = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    assert_eq!(report["committed"].as_array().unwrap().len(), 2);
    assert_eq!(
        shipped(&report, "redolog", &rid).1.as_deref(),
        Some(id.as_str()),
        "redolog snapshot shipped incrementally"
    );

    let check = lab.ok(&lab.stb_cfg, &["check"]);
    assert!(check.contains("replica"), "{check}");
    lab.fail_over_to(&id, &rid);
    let app = |r: &str, f: &str| lab.dir.join("app").join(r).join(f);
    assert_pattern(&app("mysql", "ibdata1"), 0, 21, 4 * MIB as usize);
    assert_pattern(&app("redolog", "redo.log"), 0, 22, MIB as usize);
    assert_pattern(&app("redolog", "redo-2.log"), 0, 23, MIB as usize);
    assert!(!app("redolog", "lost.log").exists());
    for (r, snap) in [("mysql", &id), ("redolog", &rid)] {
        let live = format!("{r}live");
        assert_eq!(
            lab.stb.lvs_field(&live, "origin"),
            format!("{r}.{snap}"),
            "{r}: failover copy is a thin snapshot of the received one"
        );
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mp = lab.dir.join("app").join(r);
        assert!(
            mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(mp.to_str().unwrap())),
            "{r} mounted at {}",
            mp.display()
        );
    }
    // writable, and the received snapshots stay as they were
    std::fs::write(app("mysql", "new"), b"written after failover").unwrap();
    assert!(
        lab.stb
            .lvs_field(&format!("mysql.{id}"), "lv_attr")
            .starts_with("Vr"),
        "received snapshot still read-only"
    );
}

#[test]
fn lvm_classic_lvs_ship_full_images_and_check_warns() {
    require_lab!();
    let lab = LvmLab::new(true);
    let check = lab.ok(&lab.pri_cfg, &["check"]);
    assert!(
        check.contains("incremental shipping needs thin LVs"),
        "{check}"
    );
    let mysql = lab.pri.dev("mysql");
    write_pattern(&mysql, 0, 31, 4 * MIB as usize);
    let id1 = lab.snapshot();
    assert!(
        lab.pri
            .lvs_field(&format!("mysql.{id1}"), "lv_attr")
            .starts_with('s'),
        "a classic snapshot"
    );
    let r1 = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    lab.assert_same(&id1);
    let (full1, _) = shipped(&r1, "mysql", &id1);
    write_pattern(&mysql, 16 * MIB, 32, MIB as usize);
    let id2 = lab.snapshot();
    let r2 = lab.json(&lab.pri_cfg, &["ship", "--json"]);
    let (full2, _) = shipped(&r2, "mysql", &id2);
    // a full image each time (zero blocks are skipped, data is not)
    assert!(full1 >= 4 * MIB && full2 >= 5 * MIB, "{full1} {full2}");
    lab.assert_same(&id2);
    assert_eq!(lab.standby_manifests(), 2);
}

/// `snapsite snapshot` SIGKILLed while `lvcreate` holds the origin
/// suspended (the application's I/O to it would hang): the next snapshot
/// resumes the device, removes what the interrupted set left and takes its
/// set.
#[test]
fn lvm_a_snapshot_killed_mid_lvcreate_leaves_no_suspended_device() {
    require_lab!();
    let lab = LvmLab::new(false);
    let origin = lab.pri.lv(ROLES[0]);
    let dm = sh(&["lvs", "--noheadings", "-o", "lv_dm_path", &origin])
        .trim()
        .to_string();
    let state = |dm: &str| -> String {
        let out = run(&[
            "dmsetup",
            "info",
            "-c",
            "--noheadings",
            "-o",
            "suspended",
            dm,
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(state(&dm), "Active");
    let bin = lab.dir.join(unique_name("fakebin"));
    std::fs::create_dir_all(&bin).unwrap();
    let marker = lab.dir.join("lvcreate-started");
    std::fs::write(
        bin.join("lvcreate"),
        format!(
            "#!/bin/sh\ndmsetup suspend {dm}\ntouch {}\nexec sleep 300\n",
            marker.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", bin.join("lvcreate").to_str().unwrap()]);
    let mut child = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new(snapsite_bin())
            .args(["--config", lab.pri_cfg.to_str().unwrap(), "snapshot"])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    wait_for("the fake lvcreate", Duration::from_secs(60), || {
        marker.exists()
    });
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_eq!(
        state(&dm),
        "Suspended",
        "the killed lvcreate left it suspended"
    );
    assert_eq!(manifest_count(&lab.dir.join("state-pri")), 0);

    // The next snapshot (the real lvcreate) recovers the interrupted set.
    let id = lab.snapshot();
    assert_eq!(state(&dm), "Active", "resumed by the next snapshot");
    assert_eq!(manifest_count(&lab.dir.join("state-pri")), 1, "set {id}");
    // I/O to the origin goes through again.
    let dev = format!("/dev/{origin}");
    sh(&[
        "timeout",
        "30",
        "dd",
        "if=/dev/zero",
        &format!("of={dev}"),
        "bs=4096",
        "count=16",
        "oflag=direct",
        "status=none",
    ]);
}
