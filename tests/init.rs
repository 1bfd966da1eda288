//! `snapsite init` on real btrfs: it detects the volumes from the mount
//! table, writes both sites' configs (each naming the other, both with a
//! replay), refuses what cannot be snapshotted and never overwrites; and the
//! configs it wrote work: `check` passes on both sites and the first set
//! ships, with no edit but how the primary reaches the other site.
//!
//! Both sites run on this host: the standby's commands run in a mount
//! namespace of their own (`unshare --mount`) where the standby's btrfs
//! filesystem and state directory are mounted over the primary's paths, so
//! the standby sees exactly the paths `init` wrote — as a twin host would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::initcheck::{assert_checks_and_ships, init_args, with_command_standby};
use common::output::text;
use common::*;

fn snapsite(args: &[&str]) -> Output {
    Command::new(snapsite_exe()).args(args).output().unwrap()
}

/// Fields drop in order: the filesystems are unmounted before the
/// directory holding them is removed.
struct Twin {
    pri: BtrfsFs,
    stb: BtrfsFs,
    dir: tempfile::TempDir,
}

impl Twin {
    fn new() -> Twin {
        let dir = tempfile::Builder::new()
            .prefix("snapsite-init-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let pri = BtrfsFs::new(dir.path(), "pri", "1G");
        let stb = BtrfsFs::new(dir.path(), "stb", "1G");
        for fs in [&pri, &stb] {
            std::fs::create_dir_all(fs.path("live")).unwrap();
        }
        for role in ["mysql", "blob", "index", "redolog"] {
            sh(&[
                "btrfs",
                "subvolume",
                "create",
                pri.path(&format!("live/{role}")).to_str().unwrap(),
            ]);
            write_file(
                &pri.path(&format!("live/{role}/data")),
                &random_bytes(role.len() as u64, 50_000),
            );
        }
        for s in ["state", "state-b"] {
            std::fs::create_dir_all(dir.path().join(s)).unwrap();
        }
        Twin { pri, stb, dir }
    }
    fn init(&self, extra: &[&str]) -> Output {
        let live = |r: &str| self.pri.path(&format!("live/{r}"));
        let args = init_args(self.dir.path(), &live, extra);
        snapsite(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }
    /// The standby's side: a script that mounts the standby's filesystem and
    /// state over the primary's paths in a private mount namespace, then
    /// runs snapsite with the standby's config.
    fn standby_wrapper(&self) -> PathBuf {
        let p = self.dir.path().join("as-standby");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\nset -e\nmount --bind {stb} {pri}\nmount --bind {sb} {sa}\nexec {exe} --config {cfg} \"$@\"\n",
                stb = self.stb.mnt.display(),
                pri = self.pri.mnt.display(),
                sb = self.dir.path().join("state-b").display(),
                sa = self.dir.path().join("state").display(),
                exe = snapsite_exe(),
                cfg = self.dir.path().join("out/mail-b.toml").display(),
            ),
        )
        .unwrap();
        p
    }
    fn as_standby(&self, args: &[&str]) -> Output {
        let w = self.standby_wrapper();
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh"])
            .arg(&w)
            .args(args)
            .output()
            .unwrap()
    }
}

#[test]
fn init_writes_a_working_pair_from_the_mount_table() {
    require_real!();
    let t = Twin::new();
    let out = t.dir.path().join("out");

    // --dry-run: both configs shown, nothing written.
    let o = t.init(&["--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!out.join("mail-a.toml").exists());
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("would write"), "{shown}");

    let o = t.init(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(summary.contains("btrfs subvolume on"), "{summary}");
    assert!(summary.contains("role --init primary"), "{summary}");
    let a_text = std::fs::read_to_string(out.join("mail-a.toml")).unwrap();
    let b_text = std::fs::read_to_string(out.join("mail-b.toml")).unwrap();
    let a = snapsite::base::config::Config::load(&out.join("mail-a.toml")).unwrap();
    let b = snapsite::base::config::Config::load(&out.join("mail-b.toml")).unwrap();
    assert_eq!(a.site, "mail-a");
    assert_eq!(b.site, "mail-b");
    assert!(a_text.contains("host = \"mail-b.example.org\""), "{a_text}");
    assert!(a.replay.is_some() && b.replay.is_some());
    assert!(a.standby.is_some() && b.standby.is_some());
    // Detected: btrfs, the subvolume itself, snapshots beside it on the same
    // filesystem; the redolog last.
    let roles: Vec<&str> = a.volumes.iter().map(|v| v.role.as_str()).collect();
    assert_eq!(roles, ["mysql", "blob", "index", "redolog"]);
    let blob = t.pri.path("live/blob");
    assert!(
        a_text.contains(&format!("source = \"{}\"", blob.display())),
        "{a_text}"
    );
    assert!(
        a_text.contains(&format!(
            "snapshot_dir = \"{}\"",
            t.pri.path(".snapsite/blob").display()
        )),
        "{a_text}"
    );
    // The replay of a non-Zimbra layout is the generic plugin.
    assert!(a_text.contains("generic/replay"), "{a_text}");

    // Never overwritten.
    let o = t.init(&[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("never overwrites"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(out.join("mail-a.toml")).unwrap(),
        a_text
    );
    assert_eq!(
        std::fs::read_to_string(out.join("mail-b.toml")).unwrap(),
        b_text
    );

    // The pair works. The only edit: how mail-a reaches mail-b (here a
    // command entering mail-b's namespace instead of ssh to its address).
    let wrapper = t.standby_wrapper();
    let a_local = with_command_standby(&a_text, &wrapper);
    let a_cfg = t.dir.path().join("mail-a-local.toml");
    std::fs::write(&a_cfg, &a_local).unwrap();
    let a_cfg_s = a_cfg.to_str().unwrap();
    let o = t.as_standby(&["role", "--init", "standby"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = snapsite(&["--config", a_cfg_s, "role", "--init", "primary"]);
    assert!(o.status.success(), "{}", text(&o));
    // mail-b commits the set mail-a ships.
    assert_checks_and_ships(
        &|args| snapsite(&[&["--config", a_cfg_s], args].concat()),
        &|args| t.as_standby(args),
    );
}

#[test]
fn init_refuses_what_cannot_be_snapshotted_and_writes_nothing() {
    require_real!();
    let t = Twin::new();
    let out = t.dir.path().join("out");
    let base = [
        "init",
        "--site",
        "a",
        "--peer",
        "b",
        "--out",
        out.to_str().unwrap(),
    ];
    let run = |extra: &[String]| {
        let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        args.extend_from_slice(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        snapsite(&args)
    };
    let vol = |r: &str, p: &Path| vec!["--volume".to_string(), format!("{r}={}", p.display())];
    // A plain directory inside a subvolume.
    std::fs::create_dir_all(t.pri.path("live/blob/sub")).unwrap();
    let mut args = vol("blob", &t.pri.path("live/blob/sub"));
    args.extend(vol("redolog", &t.pri.path("live/redolog")));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("not a subvolume of its own"),
        "{}",
        text(&o)
    );
    // A directory on a filesystem without snapshots (the tempdir's parent is
    // not btrfs here: /var/tmp on the host's root).
    let plain = t.dir.path().join("state");
    let fstype = sh(&["stat", "-f", "-c", "%T", plain.to_str().unwrap()]);
    if fstype.trim() != "btrfs" {
        let mut args = vol("blob", &plain);
        args.extend(vol("redolog", &t.pri.path("live/redolog")));
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1));
        assert!(text(&o).contains("has no snapshots"), "{}", text(&o));
    }
    // No redo log volume.
    let o = run(&vol("blob", &t.pri.path("live/blob")));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--redolog ROLE"), "{}", text(&o));
    // Overlapping volumes.
    let mut args = vol("blob", &t.pri.path("live/blob"));
    args.extend(vol("redolog", &t.pri.path("live/blob")));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    // Nothing written by any of them.
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}
