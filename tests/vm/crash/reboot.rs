//! The "reboot" variant of the VM crash cells (`reboot+VERB:POINT`): after
//! the verb stops dead at its failpoint, the site it ran on "reboots"
//! before the rerun. Its leftover processes are killed (by exact PID), every
//! mount of its storage or under its mount roots is gone (its mountpoints
//! in the lab dir, its state dir, the pool's own mount root, and its
//! entries under `/run/snapsite`), its files under `/run/snapsite` are gone
//! (/run is a tmpfs), and on LVM its VG is deactivated and auto-activated
//! again, as at boot (snapshots with the activation-skip flag stay
//! inactive). The disks themselves stay: they stand for the disks. The
//! peer site did not reboot: its mounts and processes are left alone.
//!
//! The guest runs one test at a time (tests/vm/main.rs), and every name
//! here comes from [`unique_name`], so what is matched is this cell's.

use super::Kind;
use crate::sh;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where snapsite keeps its run-time files (mount dirs, LVM's metadata
/// snapshot marker).
const RUN: &str = "/run/snapsite";

struct Lab {
    kind: Kind,
    dir: PathBuf,
    a_cfg: PathBuf,
    a_name: String,
    b_name: String,
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static LAB: RefCell<Option<Lab>> = const { RefCell::new(None) };
}

/// Whether the cell running now reboots after its crash.
pub(in crate::crash) fn on() -> bool {
    ON.with(Cell::get)
}

pub(in crate::crash) fn set(on: bool) {
    ON.with(|c| c.set(on));
}

/// The two sites of the cell running now ([`super::Sites::new`]).
pub(in crate::crash) fn register(kind: Kind, dir: &Path, a_cfg: &Path, a_name: &str, b_name: &str) {
    LAB.with(|l| {
        *l.borrow_mut() = Some(Lab {
            kind,
            dir: dir.to_path_buf(),
            a_cfg: a_cfg.to_path_buf(),
            a_name: a_name.to_string(),
            b_name: b_name.to_string(),
        })
    });
}

/// Called by [`super::crash`] once the verb stopped: reboots the site
/// whose config `cfg` is, when the cell asks for it.
pub(in crate::crash) fn after_crash(cfg: &Path) {
    if !on() {
        return;
    }
    LAB.with(|l| {
        let l = l.borrow();
        let lab = l.as_ref().expect("a reboot cell registers its sites");
        let a = cfg == lab.a_cfg;
        let (site, name) = if a {
            ('a', &lab.a_name)
        } else {
            ('b', &lab.b_name)
        };
        reboot(lab, site, name, cfg);
    });
}

fn reboot(lab: &Lab, site: char, name: &str, cfg: &Path) {
    kill_leftovers(name, cfg);
    let roots = [
        lab.dir.join(site.to_string()),
        lab.dir.join(format!("state-{site}")),
        PathBuf::from("/").join(name),
    ];
    let mut gone: Vec<String> = mounts()
        .into_iter()
        .filter(|(mp, src)| {
            let p = Path::new(mp);
            roots.iter().any(|r| p.starts_with(r))
                || (p.starts_with(RUN) && mp.contains(name))
                || src.split('/').next() == Some(name)
                || src.contains(&format!("/{name}-"))
                || src.contains(&format!("/{name}/"))
        })
        .map(|(mp, _)| mp)
        .collect();
    // Deepest first.
    gone.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mp in &gone {
        sh(&["umount", mp]);
    }
    remove_run_files(Path::new(RUN), name);
    if lab.kind == Kind::Lvm {
        sh(&["vgchange", "-an", name]);
        sh(&["vgchange", "-aay", name]);
    }
    eprintln!(
        "reboot of site {site}: {} unmounted ({gone:?}), {RUN} entries of {name} removed",
        gone.len()
    );
}

/// (mount point, source) of every mount, from /proc/self/mountinfo.
fn mounts() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mp = l.split(' ').nth(4)?.to_string();
            let (_, tail) = l.split_once(" - ")?;
            let src = tail.split(' ').nth(1)?.to_string();
            Some((mp, src))
        })
        .collect()
}

/// Removes the files and directories under `dir` whose name holds the
/// site's pool or VG name (/run does not survive a reboot).
fn remove_run_files(dir: &Path, name: &str) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        let mine = p.file_name().unwrap().to_string_lossy().contains(name);
        if mine && p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
        } else if mine {
            std::fs::remove_file(&p).unwrap_or_else(|e| panic!("remove {}: {e}", p.display()));
        } else if p.is_dir() {
            remove_run_files(&p, name);
        }
    }
}

/// Kills (SIGKILL, by exact PID) every process left running with the
/// site's config or its pool/VG in its argv, and waits for them to go.
fn kill_leftovers(name: &str, cfg: &Path) {
    let me = std::process::id();
    let cfg = cfg.display().to_string();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap() {
        let Ok(pid) = e.unwrap().file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(argv) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let hit = argv.split(|b| *b == 0).any(|a| {
            let a = String::from_utf8_lossy(a);
            a == cfg || a.split('/').next() == Some(name) || a.contains(&format!("/{name}/"))
        });
        if hit {
            pids.push(pid);
        }
    }
    for pid in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    let t = Instant::now();
    while pids
        .iter()
        .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "leftover processes {pids:?} did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    if !pids.is_empty() {
        eprintln!("reboot: killed leftover processes {pids:?}");
    }
}
