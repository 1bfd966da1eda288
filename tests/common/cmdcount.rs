//! The external commands a snapsite run started, counted from its trace
//! log: under [`TRACE`] every external program runs through `cmd.rs`,
//! which logs its argv. Shared by tests/roundtrips.rs (btrfs) and the VM
//! suite's tests/vm/listing.rs (ZFS, LVM thin), which includes this file
//! by path.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

/// The environment that makes snapsite log every command it runs.
pub const TRACE: [(&str, &str); 2] = [
    ("SNAPSITE_LOG", "snapsite::base::cmd=debug"),
    ("NO_COLOR", "1"),
];

/// How many times each command ran (`run` or `spawn`) in `log`, per what
/// `key` makes of its words (the program's base name first); commands
/// `key` maps to `None` are not counted.
pub fn count_commands(log: &str, key: fn(&[&str]) -> Option<String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let plain = strip_ansi(line);
        for ev in [" run cmd=", " spawn cmd="] {
            if let Some(i) = plain.find(ev) {
                let mut words: Vec<&str> = plain[i + ev.len()..].split_whitespace().collect();
                if let Some(prog) = words.first_mut() {
                    *prog = prog.rsplit('/').next().unwrap_or("");
                }
                if let Some(k) = key(&words) {
                    *out.entry(k).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One counted ship: each side's commands (as `key` counts them) and the
/// ship's JSON report.
pub struct Counted {
    pub primary: BTreeMap<String, usize>,
    pub standby: BTreeMap<String, usize>,
    pub report: serde_json::Value,
}

/// The finished `ship --json` `out`, run under [`TRACE`], whose standby's
/// `serve` wrote its trace log to `stb_log`; panics unless it succeeded.
pub fn counted_ship(out: &Output, stb_log: &Path, key: fn(&[&str]) -> Option<String>) -> Counted {
    let report = super::output::success("ship", out);
    Counted {
        primary: count_commands(&String::from_utf8_lossy(&out.stderr), key),
        standby: count_commands(&std::fs::read_to_string(stb_log).unwrap(), key),
        report: serde_json::from_str(&report).unwrap(),
    }
}

/// The three ships the counting tests compare, of `n` volumes: after
/// `change(0)` and a snapshot the first ship sends all `n`; with nothing
/// changed the next sends nothing; after `change(1)` and a snapshot (whose
/// set id `snapshot` returns) the last sends an incremental of each and
/// commits that set. Returns the no-change and incremental ships and the
/// set id.
pub fn three_ships(
    n: usize,
    change: impl Fn(usize),
    snapshot: impl Fn() -> String,
    ship: impl Fn() -> Counted,
) -> (Counted, Counted, String) {
    change(0);
    snapshot();
    let first = ship();
    assert_eq!(first.report["snapshots"].as_array().unwrap().len(), n);
    let none = ship();
    assert!(none.report["snapshots"].as_array().unwrap().is_empty());
    change(1);
    let id = snapshot();
    let inc = ship();
    let sent = inc.report["snapshots"].as_array().unwrap();
    assert_eq!(sent.len(), n, "{}", inc.report);
    assert!(
        sent.iter().all(|x| x["base"].is_string()),
        "incremental: {}",
        inc.report
    );
    assert_eq!(inc.report["committed"], serde_json::json!([id]));
    (none, inc, id)
}
