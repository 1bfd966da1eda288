//! Gaps seen on ZFS and LVM in the VM (issue 24 item 4, issue 22's special
//! files): what `failover --dry-run` checks before it calls a plan OK, and
//! what failover's copies let an unprivileged user do.

use super::*;

/// A ZFS pair: A's `mysql` is encrypted (passphrase in a key file) and
/// shipped raw (`zfs = { raw = true }`), `redolog` plain; B receives.
struct ZfsPair {
    dir: PathBuf,
    a_cfg: PathBuf,
    b_cfg: PathBuf,
    key: PathBuf,
    b: Zpool,
    a: Zpool,
}

impl ZfsPair {
    fn new(encrypted_mysql: bool) -> ZfsPair {
        let a = Zpool::on_file(&unique_name("gza"), 128 * MIB, &[]);
        let b = Zpool::on_file(&unique_name("gzb"), 128 * MIB, &[]);
        let dir = scratch().join(unique_name("gaps"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "snapsite test passphrase\n").unwrap();
        sh(&[
            "zfs",
            "create",
            "-o",
            "mountpoint=none",
            &b.dataset("replica"),
        ]);
        let mut ac = format!("site = \"a\"\nstate_dir = \"{}/state-a\"\n", dir.display());
        let mut bc = format!("site = \"b\"\nstate_dir = \"{}/state-b\"\n", dir.display());
        for r in ["mysql", "redolog"] {
            let enc = r == "mysql" && encrypted_mysql;
            if enc {
                let loc = format!("keylocation=file://{}", key.display());
                sh(&[
                    "zfs",
                    "create",
                    "-o",
                    "encryption=on",
                    "-o",
                    "keyformat=passphrase",
                    "-o",
                    &loc,
                    &a.dataset(r),
                ]);
            } else {
                sh(&["zfs", "create", &a.dataset(r)]);
            }
            ac.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\n{}",
                a.dataset(r),
                if enc { "zfs = { raw = true }\n" } else { "" }
            ));
            bc.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/b/{r}\"\n",
                b.dataset(&format!("live-{r}")),
                b.dataset(&format!("replica/{r}")),
                dir.display()
            ));
        }
        let a_cfg = dir.join("a.toml");
        let b_cfg = dir.join("b.toml");
        ac.push_str(&format!(
            "[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            b_cfg.display()
        ));
        std::fs::write(&a_cfg, ac).unwrap();
        std::fs::write(&b_cfg, bc).unwrap();
        ZfsPair {
            dir,
            a_cfg,
            b_cfg,
            key,
            b,
            a,
        }
    }

    fn a_mount(&self, role: &str) -> PathBuf {
        zfs_mountpoint(&self.a.dataset(role))
    }
}

/// Issue 24 item 4: a raw (encrypted) stream arrives with its key not
/// loaded on the standby. `failover --dry-run` says what it checked (the
/// replica's key status) and fails, naming the volume and the command that
/// loads the key; failover itself refuses before it makes anything. With
/// the key loaded, both go through and the copy holds the data.
#[test]
fn zfs_dry_run_checks_the_key_of_a_raw_replica() {
    require_lab!();
    let p = ZfsPair::new(true);
    std::fs::write(p.a_mount("mysql").join("db"), "row 1\n").unwrap();
    std::fs::write(p.a_mount("redolog").join("log"), "redo 1\n").unwrap();
    snapsite_ok(&p.a_cfg, &["snapshot"]);
    snapsite_ok(&p.a_cfg, &["ship"]);
    let rep = p.b.dataset("replica/mysql");
    assert_eq!(zfs_get("keystatus", &rep), "unavailable", "a raw receive");

    let out = snapsite_run(&p.b_cfg, &["failover", "--dry-run", "--json"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the dry run passed:\n{err}");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    let problems = plan["problems"].to_string();
    assert!(
        problems.contains("volume `mysql`")
            && problems.contains("key is not loaded")
            && problems.contains(&format!("zfs load-key {rep}")),
        "{plan}"
    );
    assert!(
        plan["checks"]
            .to_string()
            .contains("key status unavailable")
            && plan["checks"].to_string().contains("redolog"),
        "the plan says what it checked: {plan}"
    );
    assert!(err.contains("failover would be refused"), "{err}");
    // Text form too.
    let out = snapsite_run(&p.b_cfg, &["failover", "--dry-run"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("PROBLEM"), "{text}");

    // The real failover refuses before it changes anything.
    let out = snapsite_run(&p.b_cfg, &["failover", "--no-replay"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "failover went through:\n{err}");
    assert!(err.contains("key is not loaded"), "{err}");
    for r in ["mysql", "redolog"] {
        assert!(
            !zfs_exists(&p.b.dataset(&format!("live-{r}"))),
            "failover refused but made live-{r}"
        );
    }
    assert!(!p.dir.join("state-b/failover/state.json").exists());

    // With the key loaded: OK, and said so.
    let loc = format!("file://{}", p.key.display());
    sh(&["zfs", "load-key", "-L", &loc, &rep]);
    let plan = snapsite_json(&p.b_cfg, &["failover", "--dry-run", "--json"]);
    assert!(plan["problems"].is_null(), "{plan}");
    assert!(
        plan["checks"].to_string().contains("its key is loaded"),
        "{plan}"
    );
    snapsite_ok(&p.b_cfg, &["failover", "--no-replay"]);
    let got = std::fs::read_to_string(p.dir.join("b/mysql/db")).unwrap();
    assert_eq!(got, "row 1\n");
    for r in ["mysql", "redolog"] {
        let _ = run(&["zfs", "destroy", "-r", &p.b.dataset(&format!("live-{r}"))]);
    }
}

/// `lvs -o data_percent` of an LV (a thin pool's fill level), as a number.
fn data_percent(vg: &VolumeGroup, lv: &str) -> f64 {
    vg.lvs_field(lv, "data_percent")
        .parse()
        .unwrap_or_else(|e| panic!("data_percent of {}: {e}", vg.lv(lv)))
}

/// Issue 24 item 4: an LVM receive cut half way is parked for resuming
/// (its blocks stay allocated in the standby's thin pool). `check` and
/// `failover --dry-run` warn about it with the pool's fill level;
/// failover releases it before its own writes, so the promoted site's
/// writes have the room the parked receive held.
#[test]
fn lvm_failover_releases_a_parked_receive() {
    require_lab!();
    let (an, bn) = (unique_name("gla"), unique_name("glb"));
    let a_lo = LoopDevice::attach(&sparse_file(&an, 512 * MIB));
    let b_lo = LoopDevice::attach(&sparse_file(&bn, 256 * MIB));
    let va = VolumeGroup::create(&an, &[&a_lo.path]);
    let vb = VolumeGroup::create(&bn, &[&b_lo.path]);
    for (vg, size) in [(&va, "384M"), (&vb, "96M")] {
        sh(&[
            "lvcreate",
            "-y",
            "-L",
            size,
            "--chunksize",
            "64k",
            "-T",
            &vg.lv("pool"),
        ]);
    }
    for (r, size) in [("mysql", "64M"), ("redolog", "8M")] {
        thin_lv(&va, r, size);
    }
    let dir = scratch().join(unique_name("gparked"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ac = format!("site = \"a\"\nstate_dir = \"{}/state-a\"\n", dir.display());
    let mut bc = format!("site = \"b\"\nstate_dir = \"{}/state-b\"\n", dir.display());
    for r in ["mysql", "redolog"] {
        ac.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"lvm\"\nsource = \"{}\"\n",
            va.lv(r)
        ));
        // No mountpoint: the copies are raw block devices.
        bc.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"lvm\"\nsource = \"{}\"\nreplica = \"{}\"\n",
            vb.lv(&format!("live-{r}")),
            vb.lv(&format!("rep-{r}"))
        ));
    }
    let a_cfg = dir.join("a.toml");
    let b_cfg = dir.join("b.toml");
    std::fs::write(
        &a_cfg,
        format!(
            "{ac}[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            b_cfg.display()
        ),
    )
    .unwrap();
    std::fs::write(&b_cfg, bc).unwrap();

    // Set 1: 8 MiB, shipped.
    write_pattern(&va.dev("mysql"), 0, 1, 8 * MIB as usize);
    snapsite_ok(&a_cfg, &["snapshot"]);
    snapsite_ok(&a_cfg, &["ship"]);
    // Set 2: 48 MiB more, its transfer cut after about 40 MB (checkpoints
    // every MiB, so most of it is kept for resuming).
    write_pattern(&va.dev("mysql"), 8 * MIB, 2, 48 * MIB as usize);
    snapsite_ok(&a_cfg, &["snapshot"]);
    let cut = cutting_config(&dir, &a_cfg, &b_cfg, 40_000_000);
    let out = Command::new(snapsite_bin())
        .arg("--config")
        .arg(&cut)
        .arg("ship")
        .env("SNAPSITE_LVM_CHECKPOINT_BYTES", "1048576")
        .output()
        .unwrap();
    assert!(!out.status.success(), "a cut ship must fail");
    let tags = vb.lvs_field("rep-mysql", "lv_tags");
    assert!(tags.contains("snapsite-resume:"), "parked: {tags}");
    let parked_pct = data_percent(&vb, "pool");
    assert!(
        parked_pct > 40.0,
        "the parked receive holds its blocks: {parked_pct}%"
    );

    // check and the dry run say so, with the pool's fill level.
    let out = snapsite_run(&b_cfg, &["check"], None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("parked for resuming") && text.contains("% used"),
        "check: {text}"
    );
    let plan = snapsite_json(&b_cfg, &["failover", "--dry-run", "--json"]);
    assert!(
        plan["warnings"].to_string().contains("parked for resuming"),
        "{plan}"
    );

    // Failover releases it first, and says so.
    let rep = snapsite_json(&b_cfg, &["failover", "--no-replay", "--json"]);
    assert!(
        rep["notes"].to_string().contains("released a cut receive"),
        "{rep}"
    );
    let tags = vb.lvs_field("rep-mysql", "lv_tags");
    assert!(!tags.contains("snapsite-resume:"), "released: {tags}");
    let released_pct = data_percent(&vb, "pool");
    assert!(
        released_pct + 30.0 < parked_pct,
        "the parked blocks went back to the pool: {parked_pct}% -> {released_pct}%"
    );
    // The copy is set 1, and the new primary's writes have their room:
    // 40 MiB more stays under the pool's 90% limit (it would not with the
    // parked receive still allocated).
    let live = vb.dev("live-mysql");
    assert_pattern(&live, 0, 1, 8 * MIB as usize);
    write_pattern(&live, 16 * MIB, 3, 40 * MIB as usize);
    let after = data_percent(&vb, "pool");
    assert!(
        after < 90.0,
        "pool at {after}% after the new primary's writes"
    );
    drop(vb);
    drop(va);
    drop(b_lo);
    drop(a_lo);
}

/// `ARGV` as the unprivileged user `nobody` (65534), whatever the exit.
fn as_nobody(argv: &[&str]) -> Output {
    let mut full = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    full.extend_from_slice(argv);
    run(&full)
}

/// What `nobody` gets from a set-uid-root `id` and a mode-0666 device node
/// (1:3, the null device) in directory `d`: (euid printed, the write's
/// outcome).
fn privileged_files_work(d: &Path) -> (String, Output) {
    let id = as_nobody(&[d.join("suid-id").to_str().unwrap(), "-u"]);
    assert!(id.status.success(), "{id:?}");
    let euid = String::from_utf8_lossy(&id.stdout).trim().to_string();
    let of = format!("of={}", d.join("nulldev").display());
    let write = as_nobody(&["dd", "if=/dev/zero", &of, "bs=512", "count=1"]);
    (euid, write)
}

fn privileged_files_are_inert_in_failover_copies(kind: super::crash::Kind) {
    let s = super::crash::Sites::new(kind, false);
    let live = &s.mounts[0];
    sh(&["cp", "/usr/bin/id", live.join("suid-id").to_str().unwrap()]);
    sh(&["chmod", "4755", live.join("suid-id").to_str().unwrap()]);
    sh(&[
        "mknod",
        "-m",
        "0666",
        live.join("nulldev").to_str().unwrap(),
        "c",
        "1",
        "3",
    ]);
    // The control: on the primary's own volume both work for `nobody`
    // (so the test can fail).
    let (euid, write) = privileged_files_work(live);
    assert_eq!(euid, "0", "{kind:?}: the set-uid control");
    assert!(
        write.status.success(),
        "{kind:?}: the device control: {write:?}"
    );
    s.snapshot();
    snapsite_ok(&s.a_cfg, &["ship"]);
    snapsite_ok(&s.b_cfg, &["failover", "--no-replay"]);
    let copy = s.dir.join("b/mysql");
    // The files arrived as they were...
    assert_eq!(
        sh(&[
            "stat",
            "-c",
            "%a %F",
            copy.join("suid-id").to_str().unwrap()
        ])
        .trim(),
        "4755 regular file"
    );
    assert_eq!(
        sh(&[
            "stat",
            "-c",
            "%t:%T %F",
            copy.join("nulldev").to_str().unwrap()
        ])
        .trim(),
        "1:3 character special file"
    );
    // ...and do nothing privileged in failover's copy.
    let (euid, write) = privileged_files_work(&copy);
    assert_eq!(euid, "65534", "{kind:?}: set-uid root worked in the copy");
    assert!(
        !write.status.success()
            && String::from_utf8_lossy(&write.stderr).contains("Permission denied"),
        "{kind:?}: nobody wrote to a device node in the copy: {write:?}"
    );
}

/// Issue 24 item 1 on ZFS and LVM: a set-uid-root binary and a mode-0666
/// device node shipped from the primary are inert in failover's copies
/// (ZFS clones `setuid=off devices=off`, LVM copies mounted
/// `nosuid,nodev`), tried as the unprivileged user `nobody`.
#[test]
fn zfs_privileged_files_are_inert_in_failover_copies() {
    require_lab!();
    privileged_files_are_inert_in_failover_copies(super::crash::Kind::Zfs);
}

#[test]
fn lvm_privileged_files_are_inert_in_failover_copies() {
    require_lab!();
    privileged_files_are_inert_in_failover_copies(super::crash::Kind::Lvm);
}
