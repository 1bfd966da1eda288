//! The DR cycle on real OpenZFS: `snapsite rehearse` clones the received
//! snapshots next to the replica (`<replica>-rehearsal`, mounted under
//! /run/snapsite/rehearsal), runs the replay there with
//! SNAPSITE_REHEARSAL=1, and removes every clone; the received snapshots
//! and the live datasets are untouched. Failback and switchover on ZFS:
//! failover -> writes on B -> failback (A keeps its divergent data, B ships
//! only the changes) -> switchover back to A with zero loss.

use super::shipcheck::assert_ships_only_changed;
use super::*;

#[test]
fn zfs_rehearsal_replays_on_clones_and_removes_them() {
    require_lab!();
    let sites = ZfsSites::new("zr", 256 * MIB, 512 * MIB);
    let roles = ["mysql", "redolog"];
    let (mut pri, mut stb) = (String::new(), String::new());
    for r in roles {
        sh(&["zfs", "create", &sites.a.dataset(r)]);
        pri.push_str(&sites.primary_volume(r, ""));
        stb.push_str(&sites.standby_volume(r, Some(&sites.dir.join("app").join(r))));
    }
    // The replay records its environment and what it finds in the clone.
    let log = sites.dir.join("replay.log");
    let clones = ZfsDestroy(
        roles
            .map(|r| sites.c.dataset(&format!("live-{r}")))
            .to_vec(),
    );
    let lab = Lab::local(sites, clones, &pri, &stb, &replay_logging(&log));
    let (a, c, dir) = (&lab.a, &lab.c, &lab.dir);
    let (pri_cfg, stb_cfg) = (&lab.pri_cfg, &lab.stb_cfg);
    std::fs::write(zfs_mountpoint(&a.dataset("mysql")).join("db"), "row 1\n").unwrap();
    let set = snapsite_json(pri_cfg, &["snapshot", "--json"]);
    let id = set["id"].as_str().unwrap().to_string();
    snapsite_ok(pri_cfg, &["ship"]);

    let plan = snapsite_json(stb_cfg, &["rehearse", "--dry-run", "--json"]);
    let clone = format!("{}-rehearsal", c.dataset("replica/mysql"));
    let mp = PathBuf::from("/run/snapsite/rehearsal").join(clone.replace('/', "_"));
    assert_eq!(
        plan["copies"][0]["target"].as_str(),
        Some(mp.to_str().unwrap()),
        "{plan}"
    );
    assert!(!zfs_exists(&clone), "a dry run changes nothing");

    let t = Instant::now();
    let rep = snapsite_json(stb_cfg, &["rehearse", "--json"]);
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
    let st = snapsite_json(stb_cfg, &["status", "--json"]);
    assert_eq!(st["rehearsal"]["ok"], true, "{st}");
    assert_eq!(st["role"].as_str(), Some("standby"));
    // A failover after the rehearsal sees the data as shipped, not the scribble.
    snapsite_ok(stb_cfg, &["failover", "--no-replay"]);
    let live =
        std::fs::read_to_string(zfs_mountpoint(&c.dataset("live-mysql")).join("db")).unwrap();
    assert_eq!(live, "row 1\n");
}

#[test]
fn lvm_rehearsal_replays_on_thin_snapshots_and_removes_them() {
    require_lab!();
    let sites = LvmSites::new("lr", 1024 * MIB, "512M");
    let roles = ["mysql", "redolog"];
    let (mut p, mut s) = (String::new(), String::new());
    let mut mounts = Unmount(Vec::new());
    for r in roles {
        let (pri_mp, app_mp) = (sites.dir.join("pri").join(r), sites.dir.join("app").join(r));
        mounts.0.extend([app_mp.clone(), pri_mp.clone()]);
        sites.primary_thin(r, "64M");
        mount_ext4(&sites.pri.dev(r), &pri_mp);
        p.push_str(&sites.primary_volume(r, ""));
        s.push_str(&sites.standby_volume(r, Some(&app_mp)));
    }
    let log = sites.dir.join("replay.log");
    let lab = Lab::local(sites, mounts, &p, &s, &replay_logging(&log));
    let (stb, dir) = (&lab.stb, &lab.dir);
    let (pri_cfg, stb_cfg) = (&lab.pri_cfg, &lab.stb_cfg);
    std::fs::write(dir.join("pri/mysql/db"), "row 1\n").unwrap();
    sh(&["sync"]);
    snapsite_ok(pri_cfg, &["snapshot"]);
    snapsite_ok(pri_cfg, &["ship"]);

    let rep = snapsite_json(stb_cfg, &["rehearse", "--json"]);
    assert_eq!(rep["ok"], true, "{rep}");
    let mp = PathBuf::from("/run/snapsite/rehearsal").join(format!("{}_mysql-rehearsal", stb.name));
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, format!("rehearsal=1 mysql={}\nrow 1\n", mp.display()));
    let lvs = sh(&["lvs", "--noheadings", "-o", "lv_name", &stb.name]);
    assert!(!lvs.contains("rehearsal"), "{lvs}");
    assert!(!lvs.contains("mysqllive"), "nothing live was made: {lvs}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("/run/snapsite/rehearsal/"), "{mounts}");
    let st = snapsite_json(stb_cfg, &["status", "--json"]);
    assert_eq!(st["rehearsal"]["ok"], true, "{st}");
    // A failover after the rehearsal sees the data as shipped, not the scribble.
    snapsite_ok(stb_cfg, &["failover", "--no-replay"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("app/mysql/db")).unwrap(),
        "row 1\n"
    );
}

/// A `[replay]` that writes `rehearsal=<SNAPSITE_REHEARSAL> mysql=<mount>`
/// and the mysql copy's `db` to `log`, then scribbles over that `db`.
fn replay_logging(log: &Path) -> String {
    format!(
        "[replay]\ncommand = [\"/bin/sh\", \"-c\", \"echo rehearsal=$SNAPSITE_REHEARSAL mysql=$1 > {log}; cat $1/db >> {log}; echo scribble > $1/db\", \"replay\", \"{{mount:mysql}}\"]\n",
        log = log.display()
    )
}

/// `snapsite ... --json` that must fail; returns stderr.
fn snapsite_err(cfg: &Path, args: &[&str]) -> String {
    let o = snapsite_run(cfg, args, None);
    assert!(!o.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write_random(path: &Path, seed: u64, len: usize) {
    std::fs::write(path, pattern(seed, len)).unwrap();
}

/// A's failback once its config names replicas (written here): the dry
/// run's plan (base sets `s` of mysql and `r` of redolog, `a1` divergent),
/// then the failback (timed); A is a standby of generation 2. Its report.
fn plan_and_fail_back(
    backend: &str,
    cf: &CycleConfigs,
    [s, r]: [&str; 2],
    a1: &str,
) -> serde_json::Value {
    let pri_cfg = &cf.pri;
    std::fs::write(pri_cfg, &cf.a_with_replicas).unwrap();
    let plan = snapsite_json(pri_cfg, &["failback", "--dry-run", "--json"]);
    assert_eq!(plan["base"]["mysql"].as_str(), Some(s), "{plan}");
    assert_eq!(plan["base"]["redolog"].as_str(), Some(r), "{plan}");
    assert_eq!(plan["divergent_sets"], serde_json::json!([a1]), "{plan}");
    let t = Instant::now();
    let fb = snapsite_json(pri_cfg, &["failback", "--json"]);
    eprintln!(
        "{backend} failback on A: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let st = snapsite_json(pri_cfg, &["status", "--json"]);
    assert_eq!(
        (st["role"].as_str(), st["generation"].as_u64()),
        (Some("standby"), Some(2)),
        "{st}"
    );
    fb
}

/// The end of both cycles, after B (config `b_cfg`) took over and shipped
/// to A (`pri_cfg`): B writes `b-last` to its mysql copy at `b_mysql` and
/// switches over; A fails over to the final set (generation 3) with zero
/// loss — `b-last` and `earlier` (file, seed, length) in A's `a_mysql` —
/// and without its divergent `a-late`; B is a standby of generation 2.
/// Then A ships to B again, incrementally from the final set, carrying
/// less than `slack` times the 512 KiB it wrote.
fn switchover_back_and_ship_again(
    backend: &str,
    (pri_cfg, b_cfg): (&Path, &Path),
    (a_mysql, b_mysql): (&Path, &Path),
    earlier: [(&str, u64, usize); 2],
    slack: u64,
) {
    // Switchover back to A: what B wrote just before it must not be lost.
    write_random(&b_mysql.join("b-last"), 13, 128 << 10);
    sh(&["sync"]);
    let t = Instant::now();
    let so = snapsite_json(b_cfg, &["switchover", "--json"]);
    let fin = so["final_set"].as_str().unwrap().to_string();
    let rep = snapsite_json(
        pri_cfg,
        &["failover", "--set", &fin, "--no-replay", "--json"],
    );
    eprintln!(
        "SWITCHOVER {backend}: {:.2} s from the stopped application on B to the copies up on A (final set shipped {} bytes)",
        t.elapsed().as_secs_f64(),
        so["ship_payload_bytes"]
    );
    assert_eq!(rep["generation"].as_u64(), Some(3), "{rep}");
    for (f, seed, len) in [("b-last", 13, 128 << 10)].into_iter().chain(earlier) {
        assert_eq!(
            std::fs::read(a_mysql.join(f)).unwrap(),
            pattern(seed, len),
            "zero loss: {f}"
        );
    }
    assert!(
        !a_mysql.join("a-late").exists(),
        "A's divergent data stays divergent"
    );
    let st = snapsite_json(b_cfg, &["status", "--json"]);
    assert_eq!(
        (st["role"].as_str(), st["generation"].as_u64()),
        (Some("standby"), Some(2)),
        "{st}"
    );
    // A ships to B again, incrementally from the final set.
    write_random(&a_mysql.join("a-new"), 15, 512 << 10);
    sh(&["sync"]);
    let a3 = snapsite_json(pri_cfg, &["snapshot", "--json"]);
    assert_eq!(a3["generation"].as_u64(), Some(3));
    let shipped = snapsite_json(pri_cfg, &["ship", "--json"]);
    let p = shipped["payload_bytes"].as_u64().unwrap();
    assert!(p < slack * (512 << 10), "{p}");
    for sn in shipped["snapshots"].as_array().unwrap() {
        assert_eq!(sn["base"].as_str(), Some(fin.as_str()), "{sn}");
    }
}

/// The failback tests' configs in `dir`: `pri` (A, the primary shipping
/// to B), `stb` (B as A's standby) and `b` (B as a primary shipping to A).
/// A's `roles` on `backend` live as `<a>/<role>`; B's on its own pool or
/// VG `b` ([`own_standby_volume`]); each mounted under `dir/<site>/<role>`.
struct CycleConfigs {
    pri: PathBuf,
    stb: PathBuf,
    b: PathBuf,
    /// A's config naming its replicas ([`replica_of`] on `a`), as
    /// failback needs; `pri` is written without (as most primaries are
    /// configured).
    a_with_replicas: String,
}

fn cycle_configs(dir: &Path, backend: &str, a: &str, b: &str, roles: &[&str]) -> CycleConfigs {
    let (pri, stb) = (dir.join("a.toml"), dir.join("b.toml"));
    let b_peer = dir.join("b-peer.toml");
    let a_config = |with_replica: bool| {
        let mut c = site_head(dir, "a");
        for &r in roles {
            let replica = with_replica.then(|| replica_of(backend, a, r));
            c.push_str(&volume(
                r,
                backend,
                &format!("{a}/{r}"),
                replica.as_deref(),
                Some(&dir.join("a").join(r)),
            ));
        }
        c.push_str(&local_standby(None, &stb));
        c
    };
    std::fs::write(&pri, a_config(false)).unwrap();
    let mut b_text = site_head(dir, "b");
    for &r in roles {
        b_text.push_str(&own_standby_volume(
            backend,
            b,
            r,
            Some(&dir.join("b").join(r)),
        ));
    }
    std::fs::write(&stb, &b_text).unwrap();
    std::fs::write(&b_peer, format!("{b_text}{}", local_standby(None, &pri))).unwrap();
    let a_with_replicas = a_config(true);
    CycleConfigs {
        pri,
        stb,
        b: b_peer,
        a_with_replicas,
    }
}

/// What A writes after its last shipped set, cut off from B: (role, file,
/// seed, length); failback keeps it as A's divergent data.
const A_LATE: [(&str, &str, u64, usize); 2] = [
    ("mysql", "a-late", 4, 256 << 10),
    ("redolog", "log-a", 5, 64 << 10),
];

/// A, primary: a `db_len` database and a redolog; a set `s` and a redolog
/// snapshot `r` shipped; then A writes on, cut off from B, and takes redolog
/// snapshot `a1`. Returns `(s, r, a1)`.
fn a_ships_then_diverges(
    pri_cfg: &Path,
    a_mp: &dyn Fn(&str) -> PathBuf,
    db_len: usize,
) -> (String, String, String) {
    let id_of = |args: &[&str]| {
        sh(&["sync"]);
        snapsite_json(pri_cfg, args)["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    write_random(&a_mp("mysql").join("db"), 1, db_len);
    write_random(&a_mp("redolog").join("log1"), 2, 256 << 10);
    let s = id_of(&["snapshot", "--json"]);
    write_random(&a_mp("redolog").join("log2"), 3, 64 << 10);
    let r = id_of(&["snapshot", "--redolog", "--json"]);
    snapsite_ok(pri_cfg, &["ship"]);
    for (role, f, seed, len) in A_LATE {
        write_random(&a_mp(role).join(f), seed, len);
    }
    let a1 = id_of(&["snapshot", "--redolog", "--json"]);
    (s, r, a1)
}

/// B fails over (generation 2) and the application writes `db_len` to
/// mysql and `log_len` to redolog on B. Returns the bytes written.
fn b_fails_over_and_writes(
    stb_cfg: &Path,
    b_mp: &dyn Fn(&str) -> PathBuf,
    db_len: usize,
    log_len: usize,
) -> u64 {
    let rep = snapsite_json(stb_cfg, &["failover", "--no-replay", "--json"]);
    assert_eq!(rep["generation"].as_u64(), Some(2), "{rep}");
    write_random(&b_mp("mysql").join("b-db"), 11, db_len);
    write_random(&b_mp("redolog").join("log-b"), 12, log_len);
    sh(&["sync"]);
    (db_len + log_len) as u64
}

/// After failback A lists its divergent set (`label`) and `a1`.
fn assert_lists_divergent(pri_cfg: &Path, label: &str, a1: &str) {
    let sets = snapsite_ok(pri_cfg, &["sets"]);
    assert!(
        sets.contains(&format!("divergent-{label}")) && sets.contains(a1),
        "{sets}"
    );
}

/// B takes and ships its first set of generation 2, every volume an
/// incremental. Returns the set's id and the payload bytes shipped.
fn b_ships_first_set(b_cfg: &Path) -> (String, u64) {
    let b2 = snapshot_id(b_cfg);
    let shipped = snapsite_json(b_cfg, &["ship", "--json"]);
    assert_eq!(shipped["committed"], serde_json::json!([b2]), "{shipped}");
    for sn in shipped["snapshots"].as_array().unwrap() {
        assert!(sn["base"].is_string(), "every volume incremental: {sn}");
    }
    (b2, shipped["payload_bytes"].as_u64().unwrap())
}

/// Bytes of `zfs send [-i base] snap` (what a send of it costs).
fn zfs_send_size(snap: &str) -> u64 {
    let out = std::process::Command::new("zfs")
        .args(["send", snap])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.len() as u64
}

#[test]
fn zfs_failback_ships_only_what_changed_and_switchover_back_loses_nothing() {
    require_lab!();
    let t0 = Instant::now();
    // A is pool `a`, B pool `c` (B's `replica` made).
    let lab = ZfsSites::new("zf", 384 * MIB, 384 * MIB);
    let (za, zb, dir) = (&lab.a, &lab.c, &lab.dir);
    let roles = ["mysql", "redolog"];
    let a_mp = |r: &str| dir.join("a").join(r);
    let b_mp = |r: &str| dir.join("b").join(r);
    let cf = cycle_configs(dir, "zfs", &za.name, &zb.name, &roles);
    let (pri_cfg, stb_cfg, b_cfg) = (&cf.pri, &cf.stb, &cf.b);
    for r in roles {
        lab.primary_dataset(r, &a_mp(r));
    }

    // A, primary: a 16 MiB database; then B fails over and writes.
    let (s, r, a1) = a_ships_then_diverges(pri_cfg, &a_mp, 16 * MIB as usize);
    let changed = b_fails_over_and_writes(stb_cfg, &b_mp, 4 * MIB as usize, 256 << 10);

    // A returns: failback needs a replica in A's config and says so,
    // changing nothing.
    let e = snapsite_err(pri_cfg, &["failback"]);
    assert!(e.contains("replica") && e.contains("`mysql`"), "{e}");
    assert!(zfs_exists(&za.dataset("mysql")), "nothing changed");
    assert_eq!(zfs_get("readonly", &za.dataset("mysql")), "off");
    let fb = plan_and_fail_back("ZFS", &cf, [&s, &r], &a1);
    let label = fb["divergent"]["label"].as_str().unwrap().to_string();
    // A's data after the base is kept: read-only, readable, listed.
    for (role, f, seed, len) in A_LATE {
        let kept = format!("{}-divergent-{label}", za.dataset(role));
        assert_eq!(
            fb["divergent"]["snapshots"][role].as_str(),
            Some(kept.as_str()),
            "{fb}"
        );
        assert_eq!(zfs_get("readonly", &kept), "on");
        let mp = zfs_mountpoint(&kept);
        assert_eq!(
            std::fs::read(mp.join(f)).unwrap(),
            pattern(seed, len),
            "{role}"
        );
        assert!(std::fs::write(mp.join("x"), b"x").is_err(), "read-only");
        assert!(zfs_exists(&format!("{kept}@{a1}")) || role == "mysql");
        assert!(
            !zfs_exists(&za.dataset(role)),
            "the live dataset moved away"
        );
    }
    assert!(zfs_exists(&format!("{}@{s}", za.dataset("replica/mysql"))));
    assert_lists_divergent(pri_cfg, &label, &a1);

    // B ships its first set of generation 2: only what changed since the base.
    // (B's first snapshot promoted its failover clone.)
    let (b2, payload) = b_ships_first_set(b_cfg);
    assert_eq!(
        zfs_get("origin", &zb.dataset("live-mysql")),
        "-",
        "promoted"
    );
    let full: u64 = roles
        .iter()
        .map(|r| zfs_send_size(&format!("{}@{b2}", zb.dataset(&format!("live-{r}")))))
        .sum();
    assert_ships_only_changed("zfs", payload, changed, full);
    assert_eq!(
        zfs_get("guid", &format!("{}@{b2}", za.dataset("replica/mysql"))),
        zfs_get("guid", &format!("{}@{b2}", zb.dataset("live-mysql")))
    );

    switchover_back_and_ship_again(
        "zfs",
        (pri_cfg, b_cfg),
        (&a_mp("mysql"), &b_mp("mysql")),
        [("b-db", 11, 4 * MIB as usize), ("db", 1, 16 * MIB as usize)],
        2,
    );
    assert!(!zfs_exists(&zb.dataset("live-mysql")));
    eprintln!("ZFS cycle test: {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn lvm_failback_ships_only_what_changed_and_switchover_back_loses_nothing() {
    require_lab!();
    let t0 = Instant::now();
    let lab = LvmSites::new("lf", 1024 * MIB, "640M");
    let (va, vb, dir) = (&lab.pri, &lab.stb, &lab.dir);
    let roles = ["mysql", "redolog"];
    let a_mp = |r: &str| dir.join("a").join(r);
    let b_mp = |r: &str| dir.join("b").join(r);
    let _unmount = Unmount(
        roles
            .iter()
            .flat_map(|r| [a_mp(r), b_mp(r), dir.join("look").join(r)])
            .collect(),
    );
    let cf = cycle_configs(dir, "lvm", &va.name, &vb.name, &roles);
    let (pri_cfg, stb_cfg, b_cfg) = (&cf.pri, &cf.stb, &cf.b);
    for r in roles {
        thin_lv(va, r, "128M");
        mount_ext4_settled(&va.dev(r), &a_mp(r));
    }

    // A, primary: a 32 MiB database; then B fails over and writes.
    let (s, r, a1) = a_ships_then_diverges(pri_cfg, &a_mp, 32 * MIB as usize);
    let changed = b_fails_over_and_writes(stb_cfg, &b_mp, 10 * MIB as usize, MIB as usize);

    // A returns: refused until its config names replicas; then failback.
    let e = snapsite_err(pri_cfg, &["failback", "--dry-run"]);
    assert!(e.contains("replica") && e.contains("`redolog`"), "{e}");
    let fb = plan_and_fail_back("LVM", &cf, [&s, &r], &a1);
    let label = fb["divergent"]["label"].as_str().unwrap().to_string();
    // A's data after the base is kept: a read-only LV, readable, listed.
    for (role, f, seed, len) in A_LATE {
        let kept = format!("{role}-divergent-{label}");
        assert_eq!(
            fb["divergent"]["snapshots"][role].as_str(),
            Some(va.lv(&kept).as_str()),
            "{fb}"
        );
        assert!(
            va.lvs_field(&kept, "lv_attr").as_bytes()[1] == b'r',
            "read-only"
        );
        let look = dir.join("look").join(role);
        std::fs::create_dir_all(&look).unwrap();
        sh(&[
            "mount",
            "-o",
            "ro",
            va.dev(&kept).to_str().unwrap(),
            look.to_str().unwrap(),
        ]);
        assert_eq!(
            std::fs::read(look.join(f)).unwrap(),
            pattern(seed, len),
            "{role}"
        );
        sh(&["umount", look.to_str().unwrap()]);
        let lvs = sh(&["lvs", "--noheadings", "-o", "lv_name", &va.name]);
        assert!(
            !lvs.lines().any(|l| l.trim() == role),
            "the live LV moved away: {lvs}"
        );
    }
    assert_lists_divergent(pri_cfg, &label, &a1);

    // B ships its first set of generation 2: only what changed since the base.
    let (b2, payload) = b_ships_first_set(b_cfg);
    let full: u64 = roles
        .iter()
        .map(|r| {
            let lv = format!("live-{r}.{b2}");
            let size: f64 = vb.lvs_field(&lv, "lv_size").parse().unwrap();
            let pct: f64 = vb.lvs_field(&lv, "data_percent").parse().unwrap();
            (size * pct / 100.0) as u64
        })
        .sum();
    assert_ships_only_changed("lvm", payload, changed, full);

    switchover_back_and_ship_again(
        "lvm",
        (pri_cfg, b_cfg),
        (&a_mp("mysql"), &b_mp("mysql")),
        [
            ("b-db", 11, 10 * MIB as usize),
            ("db", 1, 32 * MIB as usize),
        ],
        4,
    );
    eprintln!("LVM cycle test: {:.1} s", t0.elapsed().as_secs_f64());
}
