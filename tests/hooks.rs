//! Quiesce hooks for real: MariaDB (the server the drill uses) on a btrfs
//! volume, `plugins/mysql/quiesce` as `[hooks.volume.mysql]`, set hooks
//! that record their calls. A `btrfs` wrapper first on snapsite's PATH
//! probes the database exactly while the mysql snapshot is taken (a write
//! with a 1 s lock wait must block), and can make that snapshot fail or
//! SIGKILL snapsite mid-snapshot.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/mysql/quiesce")
}

fn mariadb_missing() -> Option<String> {
    for p in [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadb-install-db",
        "/usr/bin/mariadb",
    ] {
        if !Path::new(p).exists() {
            return Some(format!("{p} is missing (apt-get install mariadb-server)"));
        }
    }
    None
}

macro_rules! require_mariadb {
    () => {
        require_real!();
        if let Some(reason) = mariadb_missing() {
            if must_be_real() {
                panic!("cannot run under CI: {reason}");
            }
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}

/// A MariaDB server on `datadir`, stopped by PID on drop.
struct Db {
    child: Child,
    sock: PathBuf,
    err: PathBuf,
}

impl Db {
    fn start(datadir: &Path, run: &Path, name: &str, install: bool) -> Db {
        std::fs::create_dir_all(run).unwrap();
        if install {
            let out = Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    &format!("--datadir={}", datadir.display()),
                    "--user=root",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                    // its own temporary files: the tests run in parallel,
                    // and a shared /tmp lost one's temporary table once
                    &format!("--tmpdir={}", run.display()),
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
        let sock = run.join(format!("{name}.sock"));
        let err = run.join(format!("{name}.err"));
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                &format!("--datadir={}", datadir.display()),
                "--user=root",
                &format!("--socket={}", sock.display()),
                "--skip-networking",
                &format!("--pid-file={}", run.join(format!("{name}.pid")).display()),
                &format!("--log-error={}", err.display()),
                "--innodb-buffer-pool-size=64M",
                &format!("--tmpdir={}", run.display()),
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let db = Db { child, sock, err };
        let t = Instant::now();
        while db.sql("SELECT 1").is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "MariaDB did not come up: {}",
                std::fs::read_to_string(&db.err).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        db
    }

    fn sql(&self, q: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.sock.display()))
            .args(["-N", "-B", "-e", q])
            .output()
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// A write that gives up after 1 s of waiting for a lock.
    fn try_write(&self, v: &str) -> Result<String, String> {
        self.sql(&format!(
            "SET SESSION lock_wait_timeout = 1; INSERT INTO d.t (v) VALUES ('{v}')"
        ))
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

struct Setup {
    // Fields drop in order: the server before the filesystem it lives on.
    db: Db,
    lab: Lab,
    bin: PathBuf,
    probe: PathBuf,
    mode: PathBuf,
    calls: PathBuf,
}

/// The lab, MariaDB on the mysql volume, the btrfs wrapper and the hooks.
fn setup(max_hold: u32, on_failure: &str) -> Setup {
    let lab = Lab::new("[\"/bin/true\"]");
    let d = lab.dir.path().to_path_buf();
    let db = Db::start(&lab.live("mysql").join("data"), &d.join("run"), "pri", true);
    db.sql("CREATE DATABASE d; CREATE TABLE d.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT) ENGINE=InnoDB; INSERT INTO d.t (v) VALUES ('first')").unwrap();

    let real_btrfs = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v btrfs"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let probe = d.join("probe.log");
    let mode = d.join("mode");
    let calls = d.join("calls.log");
    std::fs::write(&mode, "ok").unwrap();
    let wrapper = bin.join("btrfs");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/bin/sh
# test wrapper: probe MariaDB while the mysql volume is snapshotted
if [ "$1" = subvolume ] && [ "$2" = snapshot ] && [ "$4" = '{src}' ]; then
  echo "snapshot-mysql" >> '{calls}'
  if mariadb --socket='{sock}' -e "SET SESSION lock_wait_timeout = 1; INSERT INTO d.t (v) VALUES ('during')" 2>>'{probe}'; then
    echo "write-during-snapshot: ok" >> '{probe}'
  else
    echo "write-during-snapshot: blocked" >> '{probe}'
  fi
  case "$(cat '{mode}')" in
    fail) echo "wrapper: snapshot fails" >&2; exit 1 ;;
    kill) kill -9 "$PPID"; sleep 5; exit 1 ;;
    slow) sleep 3 ;;
  esac
fi
exec '{real}' "$@"
"#,
            src = lab.live("mysql").display(),
            calls = calls.display(),
            sock = db.sock.display(),
            probe = probe.display(),
            mode = mode.display(),
            real = real_btrfs,
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", wrapper.to_str().unwrap()]);
    let record = |what: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"echo {what} $SNAPSITE_HOOK_SCOPE $SNAPSITE_SET_KIND ${{SNAPSITE_RESULT:-}} >> {}\"]",
            calls.display()
        )
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&lab.pri_cfg)
        .unwrap();
    write!(
        f,
        r#"
[hooks.set]
pre = {set_pre}
post = {set_post}
timeout = "10s"

[hooks.volume.mysql]
pre = ["{plugin}", "--socket", "{sock}", "--max-hold", "{max_hold}"]
post = {vol_post}
ready = true
timeout = "30s"
on_failure = "{on_failure}"
"#,
        set_pre = record("set-pre"),
        set_post = record("set-post"),
        vol_post = record("mysql-post"),
        plugin = plugin().display(),
        sock = db.sock.display(),
    )
    .unwrap();
    Setup {
        lab,
        db,
        bin,
        probe,
        mode,
        calls,
    }
}

impl Setup {
    fn snapsite(&self, args: &[&str]) -> std::process::Output {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        run_snapsite(&self.lab.pri_cfg, args, &[("PATH", &path)])
    }
    fn probe(&self) -> String {
        std::fs::read_to_string(&self.probe).unwrap_or_default()
    }
    /// The probe's write during the mysql snapshot was blocked.
    fn assert_write_was_blocked(&self, what: &str) {
        assert!(
            self.probe().contains("write-during-snapshot: blocked"),
            "{what}: {}",
            self.probe()
        );
    }
    /// `snapshot` with the snapshot wrapper in `mode` (fail, kill, slow).
    fn snapshot_in_mode(&self, mode: &str) -> std::process::Output {
        std::fs::write(&self.mode, mode).unwrap();
        self.snapsite(&["snapshot"])
    }
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .collect()
    }
    /// Writes go through again within `within`.
    fn writes_resume(&self, within: Duration) -> bool {
        let t = Instant::now();
        loop {
            if self.db.try_write("after").is_ok() {
                return true;
            }
            if t.elapsed() > within {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn the_read_lock_is_held_during_the_snapshot_and_the_copy_needs_no_crash_recovery() {
    require_mariadb!();
    let s = setup(30, "abort");
    let out = s.snapsite(&["snapshot", "--json"]);
    let m = common::success_json("snapshot", &out);
    s.assert_write_was_blocked("a write went through while the mysql snapshot was taken");
    assert!(
        s.db.try_write("right-after").is_ok(),
        "the lock outlived the snapshot"
    );
    let members = m["members"].as_array().unwrap();
    let mysql = members.iter().find(|x| x["role"] == "mysql").unwrap();
    assert_eq!(mysql["consistency"]["state"], "quiesced", "{mysql}");
    // Set hooks cover every member; volume hooks only their own.
    for x in members {
        assert_eq!(x["consistency"]["state"], "quiesced", "{x}");
    }
    assert_eq!(
        s.calls(),
        [
            "set-pre set full",
            "snapshot-mysql",
            "mysql-post volume full ok",
            "set-post set full ok"
        ]
    );

    // The standby's copy of that snapshot starts without crash recovery.
    let id = m["id"].as_str().unwrap();
    s.lab.ship(&s.lab.pri_cfg);
    let copy = s.lab.stb.path("copy-mysql");
    sh(&[
        "btrfs",
        "-q",
        "subvolume",
        "snapshot",
        s.lab.standby_snap("mysql", id).to_str().unwrap(),
        copy.to_str().unwrap(),
    ]);
    let stb = Db::start(
        &copy.join("data"),
        &s.lab.dir.path().join("run"),
        "stb",
        false,
    );
    let rows = stb.sql("SELECT v FROM d.t ORDER BY id").unwrap();
    let log = std::fs::read_to_string(&stb.err).unwrap();
    drop(stb);
    assert_eq!(
        rows, "first",
        "the copy holds what was committed before the snapshot"
    );
    assert!(
        !log.contains("crash recovery"),
        "the standby's copy needed InnoDB crash recovery:\n{log}"
    );
}

#[test]
fn a_failed_snapshot_releases_the_lock_and_still_runs_the_post_hooks() {
    require_mariadb!();
    let s = setup(30, "abort");
    let out = s.snapshot_in_mode("fail");
    assert!(!out.status.success());
    s.assert_write_was_blocked("the failed snapshot");
    assert!(
        s.db.try_write("right-after").is_ok(),
        "the lock outlived the failed snapshot"
    );
    assert_eq!(
        s.calls(),
        [
            "set-pre set full",
            "snapshot-mysql",
            "mysql-post volume full failed",
            "set-post set full failed"
        ]
    );
    let sets = s.lab.ok(&s.lab.pri_cfg, &["sets", "--json"]);
    assert_eq!(sets.trim(), "[]", "a failed set left a manifest");
}

#[test]
fn snapsite_killed_mid_snapshot_releases_the_lock() {
    require_mariadb!();
    let s = setup(60, "abort");
    let out = s.snapshot_in_mode("kill");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{out:?}");
    s.assert_write_was_blocked("snapsite killed");
    // The plugin sees its stdin close and releases (long before --max-hold).
    assert!(
        s.writes_resume(Duration::from_secs(10)),
        "writes still blocked 10 s after snapsite died"
    );
}

#[test]
fn writes_block_no_longer_than_max_hold_and_the_member_is_marked_crash_consistent() {
    require_mariadb!();
    let s = setup(1, "crash-consistent");
    std::fs::write(&s.mode, "slow").unwrap();
    let t = Instant::now();
    let out = s.snapsite(&["snapshot", "--json"]);
    let took = t.elapsed();
    let m = common::success_json("snapshot", &out);
    assert!(took >= Duration::from_secs(3));
    let mysql = json_entry(&m["members"], "role", "mysql");
    assert_eq!(mysql["consistency"]["state"], "crash-consistent", "{mysql}");
    assert!(
        mysql["consistency"]["reason"]
            .as_str()
            .unwrap()
            .contains("status 3"),
        "{mysql}"
    );
    let blob = json_entry(&m["members"], "role", "blob");
    assert_eq!(blob["consistency"]["state"], "quiesced", "{blob}");
}

#[test]
fn a_failing_pre_hook_aborts_the_set_and_its_post_still_runs() {
    require_real!();
    let lab = Lab::new("[\"/bin/true\"]");
    let calls = lab.dir.path().join("calls.log");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&lab.pri_cfg)
        .unwrap();
    write!(
        f,
        "\n[hooks.volume.blob]\npre = [\"/bin/sh\", \"-c\", \"echo pre >> {c}; exit 7\"]\npost = [\"/bin/sh\", \"-c\", \"echo post $SNAPSITE_RESULT >> {c}\"]\n",
        c = calls.display()
    )
    .unwrap();
    let out = lab.run(&lab.pri_cfg, &["snapshot"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hooks.volume.blob.pre hook"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        "pre\npost failed\n"
    );
    // No snapshot of the set survives: mysql (before blob) was removed.
    let left: Vec<_> = std::fs::read_dir(lab.pri.path("snap/mysql"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
