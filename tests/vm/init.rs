//! `snapsite init` on real ZFS and LVM thin (tests/init.rs does btrfs on
//! the host): init detects the volumes from the mount table, writes both
//! sites' configs, `check` passes on both sites and the first set ships and
//! commits — following init's own next steps, with no edit but how the
//! primary reaches the other site.
//!
//! Both sites live in this guest. The standby's commands run in a private
//! mount namespace (`unshare --mount`) where its own state directory is
//! mounted over the primary's and the primary's live volumes are
//! unmounted, so it sees the paths init wrote for it and an empty
//! mountpoint where failover would mount its copy, as a twin host would.
//! A twin host's pool (volume group) has the same name as the primary's,
//! but pool and VG names are per kernel: here the standby's is another
//! pool (VG), and the test maps its name in init's config for the standby
//! and in the steps init prints for it. That mapping and the transport are
//! the only changes to what init wrote. (On one shared pool the standby
//! would see the primary's own snapshots under its `source` and take them
//! for received ones.)

use super::*;
use crate::initcheck::{assert_checks_and_ships, init_args, with_command_standby};
use crate::output::text;

const ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];

/// The lab directory: `live/<role>` (mountpoints), `state`, `state-b`,
/// `out` (init's configs).
struct Lab {
    dir: PathBuf,
}

impl Lab {
    fn new(prefix: &str) -> Lab {
        let dir = scratch().join(unique_name(prefix));
        for d in ["live", "state", "state-b"] {
            std::fs::create_dir_all(dir.join(d)).expect("create the lab");
        }
        Lab { dir }
    }

    fn live(&self, role: &str) -> PathBuf {
        self.dir.join("live").join(role)
    }

    /// `snapsite init` for site mail-a, peer mail-b, the four volumes.
    fn init(&self, extra: &[&str]) -> Output {
        let args = init_args(&self.dir, &|r| self.live(r), extra);
        let mut argv = vec![snapsite_bin()];
        argv.extend(args.iter().map(String::as_str));
        run(&argv)
    }

    /// The standby's side: unmount the primary's live volumes and mount
    /// state-b over state in a private mount namespace, then run snapsite
    /// with init's config for mail-b.
    fn standby_wrapper(&self) -> PathBuf {
        let p = self.dir.join("as-standby");
        let mut script = String::from("#!/bin/sh\nset -e\n");
        for r in ROLES {
            script.push_str(&format!("umount -l {}\n", self.live(r).display()));
        }
        script.push_str(&format!(
            "mount --bind {} {}\nexec {} --config {} \"$@\"\n",
            self.dir.join("state-b").display(),
            self.dir.join("state").display(),
            snapsite_bin(),
            self.dir.join("out/mail-b.toml").display()
        ));
        std::fs::write(&p, script).expect("write the standby wrapper");
        p
    }

    fn as_standby(&self, args: &[&str]) -> Output {
        let w = self.standby_wrapper();
        let mut argv = vec![
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            w.to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        run(&argv)
    }
}

/// The commands init's summary tells an admin to run on the standby before
/// `check` that set up storage (e.g. `zfs create ...`), as argv vectors.
fn storage_steps(summary: &str) -> Vec<Vec<String>> {
    summary
        .lines()
        .filter_map(|l| l.split_once("on the other host, once: ").map(|(_, c)| c))
        .map(|c| c.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// init → role --init on both → init's storage steps → check on both →
/// snapshot → ship: the standby commits one complete set. `(pri, stb)`:
/// the primary's pool (VG) name and the standby's.
fn init_check_ship(lab: &Lab, found: &str, (pri, stb): (&str, &str)) {
    let o = lab.init(&[]);
    assert!(o.status.success(), "init: {}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(summary.contains(found), "{summary}");
    let out = lab.dir.join("out");
    let a_text = std::fs::read_to_string(out.join("mail-a.toml")).unwrap();
    // The twin's pool (VG) is the standby's here.
    let twin = |t: &str| t.replace(&format!("\"{pri}/"), &format!("\"{stb}/"));
    let b_path = out.join("mail-b.toml");
    let b_text = std::fs::read_to_string(&b_path).unwrap();
    assert!(b_text.contains(&format!("\"{pri}/")), "{b_text}");
    std::fs::write(&b_path, twin(&b_text)).unwrap();
    // The only edit: how mail-a reaches mail-b (a command entering mail-b's
    // namespace instead of ssh to its address).
    let w = lab.standby_wrapper();
    let a_local = with_command_standby(&a_text, &w);
    let a_cfg = lab.dir.join("mail-a-local.toml");
    std::fs::write(&a_cfg, &a_local).unwrap();

    let o = lab.as_standby(&["role", "--init", "standby"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = snapsite_run(&a_cfg, &["role", "--init", "primary"], None);
    assert!(o.status.success(), "{}", text(&o));
    for step in storage_steps(&summary) {
        let step: Vec<String> = step
            .iter()
            .map(|w| match w.strip_prefix(&format!("{pri}/")) {
                Some(rest) => format!("{stb}/{rest}"),
                None => w.clone(),
            })
            .collect();
        let argv: Vec<&str> = step.iter().map(String::as_str).collect();
        sh(&argv);
    }
    assert_checks_and_ships(&|args| snapsite_run(&a_cfg, args, None), &|args| {
        lab.as_standby(args)
    });
}

#[test]
fn init_on_zfs_checks_and_ships() {
    require_lab!();
    let lab = Lab::new("initz");
    let pool = Zpool::on_file(&unique_name("initp"), 512 * MIB, &[]);
    let stb = Zpool::on_file(&unique_name("inits"), 512 * MIB, &[]);
    for (i, r) in ROLES.iter().enumerate() {
        sh(&[
            "zfs",
            "create",
            "-o",
            &format!("mountpoint={}", lab.live(r).display()),
            &pool.dataset(r),
        ]);
        write_pattern(&lab.live(r).join("data"), 0, i as u64, 100_000);
    }
    init_check_ship(&lab, "ZFS dataset", (&pool.name, &stb.name));
    // The replica landed where init said it would.
    assert!(zfs_exists(&stb.dataset("snapsite/blob")));
}

#[test]
fn init_on_lvm_checks_and_ships() {
    require_lab!();
    let lab = Lab::new("initl");
    let sites = LvmSites::new("init", 1024 * MIB, "768M");
    let (vg, svg) = (&sites.pri, &sites.stb);
    let mut mounted = Unmount(Vec::new());
    for (i, r) in ROLES.iter().enumerate() {
        thin_lv(vg, r, "64M");
        mount_ext4(&vg.dev(r), &lab.live(r));
        mounted.0.push(lab.live(r));
        write_pattern(&lab.live(r).join("data"), 0, i as u64, 100_000);
    }
    sh(&["sync"]);
    init_check_ship(&lab, "LVM thin LV", (&vg.name, &svg.name));
    assert_eq!(svg.lvs_field("snapsite-blob", "segtype").trim(), "thin");
    drop(mounted);
}
