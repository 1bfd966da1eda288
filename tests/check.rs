//! `snapsite check` catches what would only hurt at failover: a stale mount
//! at a standby mountpoint, a replay program that is not there, a primary
//! whose volumes differ from the standby's. The real binary, real mounts, a
//! real btrfs two-site lab over the `local` transport.

mod common;

use std::path::{Path, PathBuf};

use common::{Lab, append_to, assert_exit, both, run_snapsite, sh, stdout};

/// `check`'s line about the standby.
fn standby_line(out: &std::process::Output) -> String {
    stdout(out)
        .lines()
        .find(|l| l.starts_with("standby"))
        .unwrap_or_else(|| panic!("no standby line: {}", both(out)))
        .to_string()
}

/// A standby config in `dir`: four btrfs volumes (nothing needs to exist for
/// a standby's check), mountpoints under `dir/app`, `replay` as the program.
fn standby_config(dir: &Path, replay: &str) -> PathBuf {
    common::standby_config(
        dir,
        "standby",
        &format!(
            "[replay]\ncommand = [\"{replay}\", \"--fromTime\", \"{{from_time}}\", \"--blob\", \"{{mount:blob}}\"]\n"
        ),
    )
}

/// Unmounts an exact path on drop (also when an assertion failed).
struct BindMount(PathBuf);

impl BindMount {
    fn new(from: &Path, at: &Path) -> BindMount {
        std::fs::create_dir_all(at).unwrap();
        sh(&[
            "mount",
            "--bind",
            from.to_str().unwrap(),
            at.to_str().unwrap(),
        ]);
        BindMount(at.to_owned())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn something_mounted_at_a_standby_mountpoint_is_a_problem() {
    require_real!();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let cfg = standby_config(dir.path(), "/bin/true");
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert!(out.status.success(), "clean standby: {}", both(&out));
    assert!(!stdout(&out).contains("PROBLEM"), "{}", both(&out));

    // Yesterday's data, left mounted where failover will want the blob copy.
    let stale = dir.path().join("stale-blob-data");
    std::fs::create_dir_all(&stale).unwrap();
    let mp = dir.path().join("app/blob");
    let mount = BindMount::new(&stale, &mp);
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("PROBLEM"))
        .unwrap_or_else(|| panic!("no problem line: {}", both(&out)));
    assert!(
        line.starts_with("mount")
            && line.contains("blob")
            && line.contains(mp.to_str().unwrap())
            && line.contains("stale-blob-data")
            && line.contains("already mounted"),
        "the line names the volume, the mountpoint and what is mounted there: {line}"
    );
    assert_eq!(text.matches("PROBLEM").count(), 1, "only blob: {text}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 problem(s)"),
        "{}",
        both(&out)
    );
    drop(mount);
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert!(out.status.success(), "unmounted again: {}", both(&out));
}

#[test]
fn a_replay_program_that_failover_could_not_run_is_a_problem() {
    require_real!();
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let program = dir.path().join("replay-here");

    // Missing.
    let cfg = standby_config(dir.path(), program.to_str().unwrap());
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert_exit(&out, 1);
    let text = stdout(&out);
    assert!(
        text.contains("PROBLEM")
            && text.contains(program.to_str().unwrap())
            && text.contains("No such file"),
        "{}",
        both(&out)
    );
    // The command as a person would type it, not a debug structure.
    let replay_line = text.lines().find(|l| l.starts_with("replay")).unwrap();
    assert!(
        replay_line.contains(&format!(
            "{} --fromTime '{{from_time}}' --blob '{{mount:blob}}'",
            program.display()
        )) && !replay_line.contains("Template"),
        "{replay_line}"
    );

    // There, but not executable.
    std::fs::write(&program, "#!/bin/sh\nexit 0\n").unwrap();
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert_exit(&out, 1);
    assert!(stdout(&out).contains("not executable"), "{}", both(&out));

    // Executable: no problem.
    sh(&["chmod", "+x", program.to_str().unwrap()]);
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(
        stdout(&out).contains(&format!("program {} ok", program.display())),
        "{}",
        both(&out)
    );

    // A bare name is looked up on PATH, like failover's exec does.
    let cfg = standby_config(dir.path(), "snapsite-no-such-replay");
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert_exit(&out, 1);
    assert!(
        stdout(&out).contains("`snapsite-no-such-replay` is not an executable found on PATH"),
        "{}",
        both(&out)
    );
    let cfg = standby_config(dir.path(), "replay-here");
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let out = run_snapsite(&cfg, &["check"], &[("PATH", &path)]);
    assert!(out.status.success(), "found on PATH: {}", both(&out));
}

/// `text` without the `[[volume]]` block of `role`.
fn drop_volume(text: &str, role: &str) -> String {
    let mut parts = text.split("[[volume]]");
    let mut out = parts.next().unwrap().to_string();
    for p in parts {
        if !p.starts_with(&format!("\nrole = \"{role}\"\n")) {
            out.push_str("[[volume]]");
            out.push_str(p);
        }
    }
    assert_ne!(out, text, "no volume `{role}`");
    out
}

/// The config `cfg` without the volume `role`, written to `name` in the
/// lab's directory.
fn without_volume(lab: &Lab, cfg: &Path, name: &str, role: &str) -> PathBuf {
    let p = lab.dir.path().join(name);
    std::fs::write(
        &p,
        drop_volume(&std::fs::read_to_string(cfg).unwrap(), role),
    )
    .unwrap();
    p
}

/// `check` with `cfg` exits 1; its line about the standby.
fn failed_check_line(lab: &Lab, cfg: &Path) -> String {
    let out = lab.run(cfg, &["check"]);
    assert_exit(&out, 1);
    standby_line(&out)
}

#[test]
fn volumes_differing_from_the_standby_are_a_problem_both_ways() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let out = lab.run(&lab.pri_cfg, &["check"]);
    assert!(out.status.success(), "matching sites: {}", both(&out));
    let text = stdout(&out);
    assert!(
        text.contains("ok: standby `standby`") && text.contains("margin    0s"),
        "{text}"
    );

    // The primary names 3 of the standby's 4 volumes: its "complete" sets
    // would lack the index, and failover could not use them.
    let three = without_volume(&lab, &lab.pri_cfg, "primary-3.toml", "index");
    let line = failed_check_line(&lab, &three);
    assert!(
        line.contains("PROBLEM") && line.contains("`index`") && line.contains("standby"),
        "{line}"
    );

    // The other way: the standby lacks a volume the primary ships.
    let stb3 = without_volume(&lab, &lab.stb_cfg, "standby-3.toml", "blob");
    let pri = lab.primary_variant(
        "primary-to-3",
        &format!("transport = \"local\"\nconfig = \"{}\"", stb3.display()),
    );
    let line = failed_check_line(&lab, &pri);
    assert!(
        line.contains("PROBLEM") && line.contains("`blob`"),
        "{line}"
    );
}

#[test]
fn check_shows_margins_on_both_sites() {
    // No storage touched before the config validated: a too-large margin
    // fails at once, naming the key and the file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = standby_config(dir.path(), "/bin/true");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}[set]\nsafety_margin = \"20000y\"\n")).unwrap();
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert_exit(&out, 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(cfg.to_str().unwrap()) && err.contains("set.safety_margin"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was created");

    require_real!();
    std::fs::write(&cfg, format!("{text}[set]\nsafety_margin = \"5s\"\n")).unwrap();
    let out = run_snapsite(&cfg, &["check"], &[]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    let margin = text.lines().find(|l| l.starts_with("margin")).unwrap();
    assert!(
        margin.contains("5s") && margin.contains("larger of it and the margin each set"),
        "{margin}"
    );
}

/// Issue 23: `check` prints the most snapshots per volume the schedule and
/// retention let each site hold (hourly full sets, a 1-minute redolog
/// cadence, the example retention: primary 144, standby 484, see
/// tests/retention.rs for the simulation that stays under it).
#[test]
fn check_prints_the_snapshot_bound_per_volume() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let retention = "\n[retention]\ngrid = \"1x1h(keep=all) | 24x1h | 30x1d | 11x30d\"\nredolog_grid = \"1x1h(keep=all) | 6x1h\"\n";
    append_to(
        &lab.pri_cfg,
        &format!(
            "\n[schedule]\nfull_set_interval = \"1h\"\nredolog_interval = \"1m\"\n{retention}"
        ),
    );
    let out = lab.run(&lab.pri_cfg, &["check"]);
    assert!(out.status.success(), "{}", both(&out));
    let text = stdout(&out);
    assert!(
        text.contains("this schedule and retention keep at most 484 snapshots per volume on each site (primary 144, standby 484"),
        "{text}"
    );
    append_to(&lab.stb_cfg, retention);
    let out = lab.run(&lab.stb_cfg, &["check"]);
    let text = stdout(&out);
    assert!(
        text.contains("keep_min_age 7days (standby)")
            && text.contains("depends on the primary's [schedule]"),
        "{}",
        both(&out)
    );
}
