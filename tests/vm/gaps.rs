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
        plan["checks"].to_string().contains("keystatus unavailable")
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
