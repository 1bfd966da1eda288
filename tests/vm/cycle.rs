//! The DR cycle on real OpenZFS: `snapsite rehearse` clones the received
//! snapshots next to the replica (`<replica>-rehearsal`, mounted under
//! /run/snapsite/rehearsal), runs the replay there with
//! SNAPSITE_REHEARSAL=1, and removes every clone; the received snapshots
//! and the live datasets are untouched. (Failback on ZFS and LVM is not
//! built yet: see README "The DR cycle".)

use super::*;

#[test]
fn zfs_rehearsal_replays_on_clones_and_removes_them() {
    require_lab!();
    let a = Zpool::on_file(&unique_name("zra"), 256 * MIB, &[]);
    let c = Zpool::on_file(&unique_name("zrc"), 512 * MIB, &[]);
    let dir = scratch().join(unique_name("zrehearse"));
    std::fs::create_dir_all(&dir).unwrap();
    let roles = ["mysql", "redolog"];
    sh(&[
        "zfs",
        "create",
        "-o",
        "mountpoint=none",
        &c.dataset("replica"),
    ]);
    let mut pri = format!(
        "site = \"p\"\nstate_dir = \"{}/state-pri\"\n",
        dir.display()
    );
    let mut stb = format!(
        "site = \"s\"\nstate_dir = \"{}/state-stb\"\n",
        dir.display()
    );
    for r in roles {
        sh(&["zfs", "create", &a.dataset(r)]);
        pri.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\n",
            a.dataset(r)
        ));
        stb.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"zfs\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/app/{r}\"\n",
            c.dataset(&format!("live-{r}")),
            c.dataset(&format!("replica/{r}")),
            dir.display()
        ));
    }
    // The replay records its environment and what it finds in the clone.
    let log = dir.join("replay.log");
    stb.push_str(&format!(
        "[replay]\ncommand = [\"/bin/sh\", \"-c\", \"echo rehearsal=$SNAPSITE_REHEARSAL mysql=$1 > {log}; cat $1/db >> {log}; echo scribble > $1/db\", \"replay\", \"{{mount:mysql}}\"]\n",
        log = log.display()
    ));
    let stb_cfg = dir.join("standby.toml");
    std::fs::write(&stb_cfg, stb).unwrap();
    let pri_cfg = dir.join("primary.toml");
    std::fs::write(
        &pri_cfg,
        format!(
            "{pri}[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            stb_cfg.display()
        ),
    )
    .unwrap();
    std::fs::write(zfs_mountpoint(&a.dataset("mysql")).join("db"), "row 1\n").unwrap();
    let set = snapsite_json(&pri_cfg, &["snapshot", "--json"]);
    let id = set["id"].as_str().unwrap().to_string();
    snapsite_ok(&pri_cfg, &["ship"]);

    let plan = snapsite_json(&stb_cfg, &["rehearse", "--dry-run", "--json"]);
    let clone = format!("{}-rehearsal", c.dataset("replica/mysql"));
    let mp = PathBuf::from("/run/snapsite/rehearsal").join(clone.replace('/', "_"));
    assert_eq!(
        plan["copies"][0]["target"].as_str(),
        Some(mp.to_str().unwrap()),
        "{plan}"
    );
    assert!(!zfs_exists(&clone), "a dry run changes nothing");

    let t = Instant::now();
    let rep = snapsite_json(&stb_cfg, &["rehearse", "--json"]);
    eprintln!(
        "ZFS rehearsal of a 2-volume set: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rep["ok"], true, "{rep}");
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, format!("rehearsal=1 mysql={}\nrow 1\n", mp.display()));
    // Torn down; the received snapshot is pristine; nothing live was made.
    for r in roles {
        assert!(!zfs_exists(&format!(
            "{}-rehearsal",
            c.dataset(&format!("replica/{r}"))
        )));
        assert!(!zfs_exists(&c.dataset(&format!("live-{r}"))));
    }
    assert!(zfs_exists(&format!("{}@{id}", c.dataset("replica/mysql"))));
    assert!(!dir.join("state-stb/rehearsal/state.json").exists());
    let st = snapsite_json(&stb_cfg, &["status", "--json"]);
    assert_eq!(st["rehearsal"]["ok"], true, "{st}");
    assert_eq!(st["role"].as_str(), Some("standby"));
    // A failover after the rehearsal sees the data as shipped, not the scribble.
    snapsite_ok(&stb_cfg, &["failover", "--no-replay"]);
    let live =
        std::fs::read_to_string(zfs_mountpoint(&c.dataset("live-mysql")).join("db")).unwrap();
    assert_eq!(live, "row 1\n");
    for r in roles {
        let _ = run(&["zfs", "destroy", "-r", &c.dataset(&format!("live-{r}"))]);
    }
}

#[test]
fn lvm_rehearsal_replays_on_thin_snapshots_and_removes_them() {
    require_lab!();
    let pname = unique_name("lrp");
    let sname = unique_name("lrs");
    let pri_lo = LoopDevice::attach(&sparse_file(&pname, 1024 * MIB));
    let stb_lo = LoopDevice::attach(&sparse_file(&sname, 1024 * MIB));
    let pri = VolumeGroup::create(&pname, &[&pri_lo.path]);
    let stb = VolumeGroup::create(&sname, &[&stb_lo.path]);
    for vg in [&pri, &stb] {
        sh(&[
            "lvcreate",
            "-y",
            "-L",
            "512M",
            "--chunksize",
            "64k",
            "-T",
            &vg.lv("pool"),
        ]);
    }
    let dir = scratch().join(unique_name("lrehearse"));
    std::fs::create_dir_all(&dir).unwrap();
    let roles = ["mysql", "redolog"];
    let mut p = format!(
        "site = \"p\"\nstate_dir = \"{}/state-pri\"\n",
        dir.display()
    );
    let mut s = format!(
        "site = \"s\"\nstate_dir = \"{}/state-stb\"\n",
        dir.display()
    );
    for r in roles {
        sh(&[
            "lvcreate",
            "-y",
            "-V",
            "64M",
            "-T",
            &pri.lv("pool"),
            "-n",
            r,
        ]);
        let dev = pri.dev(r);
        sh(&["mkfs.ext4", "-q", "-E", "nodiscard", dev.to_str().unwrap()]);
        let mp = dir.join("pri").join(r);
        std::fs::create_dir_all(&mp).unwrap();
        sh(&["mount", dev.to_str().unwrap(), mp.to_str().unwrap()]);
        p.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"lvm\"\nsource = \"{}\"\n",
            pri.lv(r)
        ));
        s.push_str(&format!(
            "[[volume]]\nrole = \"{r}\"\nbackend = \"lvm\"\nsource = \"{}\"\nreplica = \"{}\"\nmountpoint = \"{}/app/{r}\"\n",
            stb.lv(&format!("{r}live")),
            stb.lv(r),
            dir.display()
        ));
    }
    let log = dir.join("replay.log");
    s.push_str(&format!(
        "[replay]\ncommand = [\"/bin/sh\", \"-c\", \"echo rehearsal=$SNAPSITE_REHEARSAL mysql=$1 > {log}; cat $1/db >> {log}; echo scribble > $1/db\", \"replay\", \"{{mount:mysql}}\"]\n",
        log = log.display()
    ));
    let stb_cfg = dir.join("standby.toml");
    std::fs::write(&stb_cfg, s).unwrap();
    let pri_cfg = dir.join("primary.toml");
    std::fs::write(
        &pri_cfg,
        format!(
            "{p}[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
            stb_cfg.display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("pri/mysql/db"), "row 1\n").unwrap();
    sh(&["sync"]);
    snapsite_ok(&pri_cfg, &["snapshot"]);
    snapsite_ok(&pri_cfg, &["ship"]);

    let rep = snapsite_json(&stb_cfg, &["rehearse", "--json"]);
    assert_eq!(rep["ok"], true, "{rep}");
    let mp = PathBuf::from("/run/snapsite/rehearsal").join(format!("{}_mysql-rehearsal", stb.name));
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, format!("rehearsal=1 mysql={}\nrow 1\n", mp.display()));
    let lvs = sh(&["lvs", "--noheadings", "-o", "lv_name", &stb.name]);
    assert!(!lvs.contains("rehearsal"), "{lvs}");
    assert!(!lvs.contains("mysqllive"), "nothing live was made: {lvs}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/run/snapsite/rehearsal/"), "{mounts}");
    let st = snapsite_json(&stb_cfg, &["status", "--json"]);
    assert_eq!(st["rehearsal"]["ok"], true, "{st}");
    // A failover after the rehearsal sees the data as shipped, not the scribble.
    snapsite_ok(&stb_cfg, &["failover", "--no-replay"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("app/mysql/db")).unwrap(),
        "row 1\n"
    );
    for r in roles {
        let _ = run(&["umount", dir.join("app").join(r).to_str().unwrap()]);
        let _ = run(&["umount", dir.join("pri").join(r).to_str().unwrap()]);
    }
}
