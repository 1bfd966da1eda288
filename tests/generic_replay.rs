//! plugins/generic/replay, the replay example for applications without a
//! redo log: its steps in order (volumes checked, recovery command with the
//! set's time, units started, readiness polled) and each failure's exit
//! status. systemctl is replaced by a recorder (SNAPSITE_SYSTEMCTL); no root.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn plugin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/generic/replay")
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

struct Lab {
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "").unwrap();
        let vol = dir.path().join("data");
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("table"), "rows").unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        script(
            dir.path(),
            "systemctl",
            &format!(
                "echo \"systemctl $*\" >> {}\n[ \"$2\" != bad.service ]",
                log.display()
            ),
        );
        script(
            dir.path(),
            "recover",
            &format!(
                "echo \"recover $* from=$SNAPSITE_FROM_TIME\" >> {}\nexit ${{RECOVER_RC:-0}}",
                log.display()
            ),
        );
        Lab { dir, log }
    }
    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (Output, String) {
        let mut c = Command::new(plugin());
        c.args(args).env("SNAPSITE_SYSTEMCTL", self.p("systemctl"));
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        (out, std::fs::read_to_string(&self.log).unwrap())
    }
}

#[test]
fn runs_recovery_then_starts_units_then_waits_until_ready() {
    let lab = Lab::new();
    let marker = lab.p("up");
    let ready = script(
        lab.dir.path(),
        "ready",
        &format!("[ -e {marker} ] || {{ touch {marker}; exit 1; }}"),
    );
    let (out, log) = lab.run(
        &[
            "--from-time",
            "2026-12-06T08:00:00Z",
            "--volume",
            &lab.p("data"),
            "--start",
            "db.service",
            "--start",
            "app.service",
            "--ready",
            ready.to_str().unwrap(),
            "--timeout",
            "10",
            "--",
            &lab.p("recover"),
            "--fast",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        log,
        format!(
            "recover --fast from=2026-12-06T08:00:00Z\nsystemctl start db.service\nsystemctl start app.service\n"
        )
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("generic replay: ready"));
}

#[test]
fn each_failure_stops_with_its_own_status_and_nothing_after_it_runs() {
    let lab = Lab::new();
    // An empty volume: the copy is not mounted where the application looks.
    let (out, log) = lab.run(
        &[
            "--from-time",
            "t",
            "--volume",
            &lab.p("empty"),
            "--start",
            "x.service",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    assert_eq!(log, "");
    // The recovery command fails: its status, no unit started.
    let (out, log) = lab.run(
        &[
            "--from-time",
            "t",
            "--start",
            "x.service",
            "--",
            &lab.p("recover"),
        ],
        &[("RECOVER_RC", "7")],
    );
    assert_eq!(out.status.code(), Some(7));
    assert!(!log.contains("systemctl"), "{log}");
    // A unit that will not start.
    let (out, _) = lab.run(&["--from-time", "t", "--start", "bad.service"], &[]);
    assert_eq!(out.status.code(), Some(4));
    // Never ready.
    let (out, _) = lab.run(
        &[
            "--from-time",
            "t",
            "--ready",
            "/bin/false",
            "--timeout",
            "1",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(5));
    // Usage.
    let (out, _) = lab.run(&["--volume", &lab.p("data")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--from-time is required"));
}
