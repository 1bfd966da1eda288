//! plugins/zimbra/replay against fake Zimbra tools on PATH (`zmhostname`,
//! `zmprov`, `zmmailboxdctl`, `zmplayredo`) that record their arguments:
//! the order of the steps, the exact zmplayredo argv, the
//! zimbraRedoLogDeleteOnRollover check and the redolog coverage warnings.
//! No Zimbra, no root needed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct FakeZimbra {
    dir: tempfile::TempDir,
}

const FAKE: &str = r#"#!/bin/sh
# records: <name> <args joined by |>
name=$(basename "$0")
{ printf '%s' "$name"; for a in "$@"; do printf ' %s|' "$a"; done; echo; } >> "$FAKE_LOG"
case "$name" in
  zmhostname) echo mail.example.org ;;
  zmprov) printf '# name mail.example.org\nzimbraRedoLogDeleteOnRollover: %s\n' "${FAKE_DELETE_ON_ROLLOVER:-FALSE}" ;;
  zmmailboxdctl) exit "${FAKE_MAILBOXD_RC:-0}" ;;
  zmplayredo) exit "${FAKE_ZMPLAYREDO_RC:-0}" ;;
esac
"#;

impl FakeZimbra {
    fn new() -> FakeZimbra {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["zmhostname", "zmprov", "zmmailboxdctl", "zmplayredo"] {
            let p = bin.join(tool);
            std::fs::write(&p, FAKE).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("redolog/archive")).unwrap();
        std::fs::write(dir.path().join("redolog/redo.log"), b"").unwrap();
        FakeZimbra { dir }
    }

    fn archive(&self, names: &[&str]) {
        for n in names {
            std::fs::write(self.redolog().join("archive").join(n), b"").unwrap();
        }
    }

    fn redolog(&self) -> PathBuf {
        self.dir.path().join("redolog")
    }

    /// The plugin with `--fromTime from --redolog <the fake redolog>`, then
    /// `extra`; see [`FakeZimbra::run`].
    fn replay(&self, from: &str, extra: &[&str], env: &[(&str, &str)]) -> (Output, Vec<String>) {
        let redolog = self.redolog().display().to_string();
        let mut args = vec!["--fromTime", from, "--redolog", &redolog];
        args.extend_from_slice(extra);
        self.run(&args, env)
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (Output, Vec<String>) {
        let log = self.dir.path().join("calls.log");
        let _ = std::fs::remove_file(&log);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/zimbra/replay");
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(script);
        c.args(args)
            .env("PATH", path)
            .env("ZIMBRA_HOME", self.dir.path().join("no-such-zimbra-home"))
            .env("ZIMBRA_USER", "")
            .env("FAKE_LOG", &log);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let calls = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (out, calls)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `o`'s stderr says `needle` (else a panic showing the stderr).
#[track_caller]
fn assert_stderr_has(o: &Output, needle: &str) {
    assert!(stderr(o).contains(needle), "{}", stderr(o));
}

const FROM: &str = "2026/11/27 08:00:00.000";

#[test]
fn stops_mailboxd_then_replays_with_the_exact_from_time() {
    let z = FakeZimbra::new();
    z.archive(&[
        "redo-20261127.063000.000-seq10.log",
        "redo-20261127.074500.250-seq11.log",
    ]);
    let (out, calls) = z.replay(FROM, &["--", "--stopOnError"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARNING"), "{}", stderr(&out));
    assert_eq!(
        calls,
        vec![
            "zmhostname".to_string(),
            "zmprov -l| gs| mail.example.org| zimbraRedoLogDeleteOnRollover|".into(),
            "zmmailboxdctl stop|".into(),
            "zmplayredo --fromTime| 2026/11/27 08:00:00.000| --stopOnError|".into(),
        ]
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("reaches back to 2026/11/27 08:00:00.000"),
        "{text}"
    );
}

#[test]
fn warns_when_archived_logs_are_deleted_on_rollover() {
    let z = FakeZimbra::new();
    z.archive(&["redo-20261127.063000.000-seq10.log"]);
    let (out, calls) = z.replay(
        FROM,
        &["--server", "mbx1"],
        &[("FAKE_DELETE_ON_ROLLOVER", "TRUE")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARNING: zimbraRedoLogDeleteOnRollover is TRUE on mbx1"),
        "{err}"
    );
    assert!(err.contains("zmprov ms mbx1 zimbraRedoLogDeleteOnRollover FALSE"));
    // --server given: no zmhostname; the replay still runs.
    assert_eq!(
        calls[0],
        "zmprov -l| gs| mbx1| zimbraRedoLogDeleteOnRollover|"
    );
    assert!(calls.last().unwrap().starts_with("zmplayredo "));
}

#[test]
fn warns_when_the_redolog_does_not_reach_back_and_strict_refuses() {
    let z = FakeZimbra::new();
    // The oldest archived log is from after --fromTime.
    z.archive(&[
        "redo-20261127.081500.000-seq12.log",
        "redo-20261127.083000.000-seq13.log",
    ]);
    let (out, calls) = z.replay(FROM, &[], &[]);
    assert!(out.status.success());
    assert_stderr_has(
        &out,
        "does not reach back to --fromTime 2026/11/27 08:00:00.000: its oldest archived log is redo-20261127.081500.000-seq12.log",
    );
    assert!(calls.iter().any(|c| c.starts_with("zmplayredo")));

    let (out, calls) = z.replay(FROM, &["--strict"], &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("zmmailboxdctl") || c.starts_with("zmplayredo")),
        "{calls:?}"
    );
}

#[test]
fn warns_on_a_sequence_gap_and_on_an_empty_archive() {
    let z = FakeZimbra::new();
    let (out, _) = z.replay("20261127.080000", &[], &[]);
    assert!(out.status.success());
    assert_stderr_has(&out, "holds no rolled-over redologs");
    z.archive(&[
        "redo-20261127.060000.000-seq10.log",
        "redo-20261127.070000.000-seq12.log",
    ]);
    let (out, _) = z.replay(FROM, &[], &[]);
    assert_stderr_has(&out, "gap (seq 10 -> 12)");
}

#[test]
fn refuses_the_guides_colon_form_and_garbage_without_touching_anything() {
    let z = FakeZimbra::new();
    for bad in [
        "2026/11/27 08:00:00:000",
        "yesterday",
        "2026-11-27T08:00:00Z",
    ] {
        let (out, calls) = z.replay(bad, &[], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(calls.is_empty(), "{bad}: {calls:?}");
    }
    let (out, _) = z.replay("2026/11/27 08:00:00:000", &[], &[]);
    assert_stderr_has(&out, "colon before the milliseconds");
    // Every zmplayredo shape passes the check.
    for good in [
        "2026/11/27 08:00:00",
        "2026/11/27 08:00:00 123",
        "2026/11/27-08:00:00-123",
        "2026/11/27-08:00:00",
        "20261127.080000.123",
        "20261127080000123",
        "20261127080000",
    ] {
        let (out, calls) = z.replay(good, &[], &[]);
        assert!(out.status.success(), "{good}: {}", stderr(&out));
        assert_eq!(
            calls.last().unwrap(),
            &format!("zmplayredo --fromTime| {good}|")
        );
    }
}

#[test]
fn failures_stop_the_sequence_and_start_runs_after_a_good_replay() {
    let z = FakeZimbra::new();
    z.archive(&["redo-20261127.063000.000-seq10.log"]);
    let (out, calls) = z.replay(FROM, &[], &[("FAKE_MAILBOXD_RC", "1")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !calls.iter().any(|c| c.starts_with("zmplayredo")),
        "{calls:?}"
    );

    let (out, calls) = z.replay(FROM, &["--start"], &[("FAKE_ZMPLAYREDO_RC", "5")]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "zmplayredo's exit status passes through"
    );
    assert!(!calls.contains(&"zmmailboxdctl start|".to_string()));

    let (out, calls) = z.replay(FROM, &["--start"], &[]);
    assert!(out.status.success());
    assert_eq!(calls.last().unwrap(), "zmmailboxdctl start|");
}
