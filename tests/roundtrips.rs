//! What a ship costs in external commands and protocol round trips, on real
//! btrfs (loop devices): the storage commands per ship do not grow with the
//! number of volumes beyond what each shipped snapshot needs (a send, a
//! receive, a check of what was received), a ship with nothing to send runs
//! no storage command at all on either side, and the sender waits for the
//! standby once for the handshake and once per set, not once per snapshot.
//!
//! Commands are counted from each side's own trace log (`SNAPSITE_LOG`:
//! every external program runs through `cmd.rs`, which logs its argv); the
//! standby's `serve` writes its log to a file of its own through a
//! `transport = "command"` wrapper.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::cmdcount::{self, Counted, TRACE};
use common::*;

/// The storage programs among the commands (not the transport), by name.
fn storage(words: &[&str]) -> Option<String> {
    let prog = *words.first()?;
    ["btrfs", "zfs", "zpool", "lvs", "lvm", "vgs"]
        .contains(&prog)
        .then(|| prog.to_string())
}

struct Sites {
    lab: TwoSites,
    pri_cfg: PathBuf,
    stb_log: PathBuf,
}

/// `n` volumes (`vol1`.. and `redolog`); the primary reaches the standby's
/// `serve`, whose trace log goes to `stb_log`.
fn sites(n: usize) -> Sites {
    let mut roles: Vec<String> = (1..n).map(|i| format!("vol{i}")).collect();
    roles.push("redolog".into());
    let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
    let lab = TwoSites::with_roles(&roles, "512M", "[\"/bin/true\"]");
    let stb_log = lab.dir.path().join("serve.log");
    let pri_cfg = lab.primary_variant("primary-serve", &lab.serve_logging(&stb_log));
    Sites {
        lab,
        pri_cfg,
        stb_log,
    }
}

/// One counted ship: each side's storage commands and the report.
fn counted_ship(s: &Sites) -> Counted {
    std::fs::write(&s.stb_log, b"").unwrap();
    let out = run_snapsite(&s.pri_cfg, &["ship", "--json"], &TRACE);
    cmdcount::counted_ship(&out, &s.stb_log, storage)
}

fn total(c: &BTreeMap<String, usize>) -> usize {
    c.values().sum()
}

fn ok(cfg: &Path, args: &[&str]) -> String {
    let out = run_snapsite(cfg, args, &[]);
    assert!(
        out.status.success(),
        "snapsite {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Full ship, no-change ship, one-set incremental ship with `n` volumes.
fn measure(n: usize) -> (Counted, Counted, Vec<String>, Sites) {
    let s = sites(n);
    // 64 KiB of `data` in each volume, then 16 KiB `more`.
    let change = |k: usize| {
        let (file, seed, size) = [("data", 0, 64 * 1024), ("more", 100, 16 * 1024)][k];
        for (i, r) in s.lab.roles.iter().enumerate() {
            write_file(
                &s.lab.pri.path(&format!("live/{r}/{file}")),
                &random_bytes(seed + i as u64, size),
            );
        }
    };
    let snapshot = || {
        let set: serde_json::Value =
            serde_json::from_str(&ok(&s.pri_cfg, &["snapshot", "--json"])).unwrap();
        set["id"].as_str().unwrap().to_string()
    };
    let (none, inc, id) = cmdcount::three_ships(n, change, snapshot, || counted_ship(&s));
    // what was shipped is what the primary holds
    let mut digests = Vec::new();
    for r in &s.lab.roles {
        let got = tree_digest(&s.lab.stb.path(&format!("recv/{r}/{id}/{id}")));
        assert_eq!(got, tree_digest(&s.lab.pri.path(&format!("snap/{r}/{id}"))));
        digests.push(format!("{r}:{}", got.len()));
    }
    (none, inc, digests, s)
}

#[test]
fn storage_commands_and_round_trips_per_ship_do_not_grow_with_volumes() {
    require_real!();
    let (none2, inc2, files2, _s2) = measure(2);
    let (none4, inc4, files4, _s4) = measure(4);
    for (what, c) in [
        ("no-change 2 volumes", &none2),
        ("no-change 4 volumes", &none4),
        ("incremental 2 volumes", &inc2),
        ("incremental 4 volumes", &inc4),
    ] {
        eprintln!(
            "{what}: primary {:?} standby {:?} round_trips {}",
            c.primary, c.standby, c.report["round_trips"]
        );
    }
    assert_eq!(files2.len(), 2);
    assert_eq!(files4.len(), 4);
    // Nothing to send: no storage command on either side (btrfs lists
    // snapshot directories, it does not exec `btrfs`), whatever the count.
    assert_eq!(total(&none2.primary) + total(&none2.standby), 0);
    assert_eq!(total(&none4.primary) + total(&none4.standby), 0);
    // An incremental set: per shipped snapshot one `btrfs send` on the
    // primary and one `btrfs receive` on the standby (the received uuid
    // check asks the kernel: no `btrfs subvolume show`). Nothing per
    // volume besides.
    for (n, c) in [(2, &inc2), (4, &inc4)] {
        assert_eq!(c.primary.get("btrfs"), Some(&n), "primary, {n} volumes");
        assert_eq!(c.standby.get("btrfs"), Some(&n), "standby, {n} volumes");
    }
    // The sender waits for the standby once to start and once per set.
    for c in [&none2, &none4] {
        assert_eq!(c.report["round_trips"], 1, "{}", c.report);
    }
    for c in [&inc2, &inc4] {
        assert_eq!(c.report["round_trips"], 2, "{}", c.report);
    }
}
