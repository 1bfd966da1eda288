//! Ransomware seen by a ZFS or LVM standby (issue 31). The standby decodes
//! the streams (standby/signals/zfs.rs: files existing before the base vs
//! new ones; lvm.rs: blocks mapped before vs newly mapped), so an encryptor
//! rewriting old messages with noise shows as noise written into what
//! existed, at either pace: "low and slow" (1% of the store a set) and
//! fast (the rest at once). Before it, a short run of ordinary mail (new
//! messages, deletions, an index rewrite, DB churn in the redo log) must
//! leave every set clean; failover's plan takes the set before the attack.
//!
//! The store is scaled down (200 messages), so `rewrite_min_bytes` is too:
//! 16 KiB, below 1% of the store (32 KiB on ZFS, 128 KiB on LVM) and
//! above nothing; the noise share is the default (80%).

use super::*;
use crate::mailgen::{self, append_synced, base64, rewrite_at, write_synced};
use std::collections::HashMap;

/// Ordinary mail: compressible text, `len` bytes.
fn text(seed: usize, len: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = seed;
    while s.len() < len {
        s.push_str(&format!(
            "Subject: note {i}\r\nmeeting invoice regards {i}\r\n"
        ));
        i += 7;
    }
    s.truncate(len);
    s.into_bytes()
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What the drive below does to a mail store: message `i`, the index,
/// the redo log.
trait MailStore {
    fn put(&self, i: usize, data: &[u8]);
    fn delete(&self, i: usize);
    /// The encryptor's rename after rewriting (where names exist).
    fn lock(&self, _i: usize) {}
    /// Whether the store has names (renames to see).
    fn names(&self) -> bool {
        false
    }
    fn index(&self, data: &[u8]);
    fn redo(&self, data: &[u8]);
}

const MESSAGES: usize = 200;

/// Ordinary mail (3 sets), the slow attack (2 sets), and with `fast` the
/// fast one; asserts the verdicts and failover's plan. `msg`: a message's
/// size.
fn drive(dir: &Path, pri: &Path, stb: &Path, store: &dyn MailStore, msg: usize, fast: bool) {
    let t0 = std::time::Instant::now();
    for i in 0..MESSAGES {
        store.put(i, &text(i, msg));
    }
    store.index(&text(7, 64 << 10));
    let ship = |k: usize| -> String {
        store.redo(&text(k, 4096 * (k + 1)));
        let id = snapshot_id(pri);
        snapsite_ok(pri, &["ship", "--json"]);
        eprintln!("set {k} shipped at {:.1} s", t0.elapsed().as_secs_f64());
        id
    };
    let verdict = |id: &str| -> serde_json::Value {
        let p = dir.join(format!("state-stb/verdicts/{id}.json"));
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    };
    ship(0);
    // Ordinary mail: new messages, deletions (from the newest old ones
    // down), an index merge rewriting the index (64 KiB of text, above
    // rewrite_min_bytes), DB churn in the redo log.
    let mut next = MESSAGES;
    let mut gone = MESSAGES;
    let mut mail = |k: usize| {
        for _ in 0..10 {
            store.put(next, &text(next, msg));
            next += 1;
        }
        for _ in 0..2 {
            gone -= 1;
            store.delete(gone);
        }
        if k == 2 {
            store.index(&text(k, 64 << 10));
        }
    };
    let mut clean = Vec::new();
    for k in 1..=3 {
        mail(k);
        let id = ship(k);
        let v = verdict(&id);
        assert_eq!(v["verdict"], "clean", "ordinary mail set {k}: {v:#}");
        clean.push(id);
    }
    // Low and slow: 1% of the store a set (2 messages), rewritten in place
    // with noise and renamed, while mail goes on.
    let mut enc = 0;
    let mut slow = Vec::new();
    for k in 4..=5 {
        mail(k);
        for _ in 0..MESSAGES / 100 {
            store.put(enc, &noise(enc as u64, msg));
            store.lock(enc);
            enc += 1;
        }
        let id = ship(k);
        slow.push((id.clone(), verdict(&id)));
    }
    let first = slow
        .iter()
        .position(|(_, v)| v["verdict"] == "suspect")
        .unwrap_or_else(|| panic!("the slow attack was not seen in 2 sets: {slow:#?}"));
    let (bad, v) = &slow[first];
    let reasons = v["volumes"][0]["reasons"].to_string();
    assert!(
        reasons.contains("rewritten in place") || reasons.contains("mapped before overwritten"),
        "{v:#}"
    );
    eprintln!("slow attack: suspect on set {} of 2: {reasons}", first + 1);
    let sig = &v["volumes"][0]["signals"];
    if store.names() {
        // ZFS: renames are told by ctime after mtime; this encryptor
        // renames within the same clock tick as its write (the kernel's
        // coarse clock), which looks like a rewrite: printed, not required.
        eprintln!(
            "slow attack: renames {} (to a new extension {})",
            sig["renames"], sig["renames_new_extension"]
        );
    } else {
        // LVM: the overwrites measured against the standby's own thin
        // map, and the primary's header agreeing with it.
        let claimed = sig["rewrite_bytes_claimed"].as_u64();
        assert!(
            claimed.is_some(),
            "the standby's own map was not used: {sig:#}"
        );
        let measured = sig["rewrite_bytes"].as_u64().unwrap();
        assert!(
            measured <= claimed.unwrap() + (16 << 10),
            "the map shows more than the header: {sig:#}"
        );
    }
    let plan = snapsite_json(stb, &["failover", "--dry-run", "--json"]);
    assert_eq!(
        plan["set_id"].as_str(),
        clean.last().map(String::as_str),
        "{plan:#}"
    );
    assert_eq!(
        plan["suspect"]["skipped"][0]["set_id"].as_str(),
        Some(bad.as_str())
    );
    if !fast {
        eprintln!("ransomware drive: {:.1} s", t0.elapsed().as_secs_f64());
        return;
    }
    // Fast: every message left, at once.
    mail(6);
    for i in enc..gone {
        store.put(i, &noise(i as u64, msg));
        store.lock(i);
    }
    let id = ship(6);
    let v = verdict(&id);
    assert_eq!(v["verdict"], "suspect", "fast attack: {v:#}");
    eprintln!("ransomware drive: {:.1} s", t0.elapsed().as_secs_f64());
}

const DETECT: &str = "[replay]\ncommand = [\"/bin/true\"]\n[detect]\nbaseline_sets = 3\nmin_changed_bytes = \"1MiB\"\nrewrite_min_bytes = \"16KiB\"\n";

/// Volumes blob and redolog of `lab`, the standby with
/// [`DETECT`] reached through `serve`; then [`drive`].
fn drive_on(lab: &dyn TwoSites, store: &dyn MailStore, msg: usize, fast: bool) {
    let dir = lab.dir();
    let (pri_vols, stb_vols) = lab.volumes(&["blob", "redolog"]);
    let (pri, stb) = site_configs(dir, &pri_vols, &stb_vols, DETECT, Standby::Serve, "");
    drive(dir, &pri, &stb, store, msg, fast);
}

struct ZfsStore {
    blob: PathBuf,
    redo: PathBuf,
}

impl MailStore for ZfsStore {
    fn names(&self) -> bool {
        true
    }
    fn put(&self, i: usize, data: &[u8]) {
        std::fs::write(self.blob.join(format!("{i}.msg")), data).unwrap();
    }
    fn delete(&self, i: usize) {
        std::fs::remove_file(self.blob.join(format!("{i}.msg"))).unwrap();
    }
    fn lock(&self, i: usize) {
        let p = self.blob.join(format!("{i}.msg"));
        std::fs::rename(&p, p.with_extension("msg.locked")).unwrap();
    }
    fn index(&self, data: &[u8]) {
        std::fs::write(self.blob.join("dovecot.index"), data).unwrap();
    }
    fn redo(&self, data: &[u8]) {
        std::fs::write(self.redo.join("redo.log"), data).unwrap();
    }
}

/// The fast pace only with `SNAPSITE_VM_FULL=1` (one more set: the
/// default suite keeps the six ships the test had before).
#[test]
fn zfs_both_paces_are_suspect_ordinary_mail_is_not() {
    require_lab!();
    let lab = ZfsSites::new("rw", 512 * MIB, 512 * MIB);
    for r in ["blob", "redolog"] {
        sh(&["zfs", "create", &lab.a.dataset(r)]);
    }
    let store = ZfsStore {
        blob: zfs_mountpoint(&lab.a.dataset("blob")),
        redo: zfs_mountpoint(&lab.a.dataset("redolog")),
    };
    drive_on(&lab, &store, 16 << 10, vm_full());
}

/// Messages at 64 KiB slots of a raw thin LV (one pool chunk each: a new
/// message maps new blocks, a rewritten one overwrites mapped ones).
struct LvmStore {
    blob: PathBuf,
    redo: PathBuf,
}

const SLOT: u64 = 64 << 10;
const INDEX_SLOT: u64 = 1000;

fn put_at(dev: &Path, at: u64, data: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(dev).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

impl MailStore for LvmStore {
    fn put(&self, i: usize, data: &[u8]) {
        put_at(&self.blob, i as u64 * SLOT, data);
    }
    fn delete(&self, i: usize) {
        put_at(&self.blob, i as u64 * SLOT, &vec![0; SLOT as usize]);
    }
    fn index(&self, data: &[u8]) {
        put_at(&self.blob, INDEX_SLOT * SLOT, data);
    }
    fn redo(&self, data: &[u8]) {
        put_at(&self.redo, 0, data);
    }
}

/// The same on LVM thin. With `SNAPSITE_VM_FULL=1` only: over the
/// default suite's budget (see docs/ransomware.md for its time).
#[test]
fn lvm_both_paces_are_suspect_ordinary_mail_is_not() {
    require_lab!(full: "the LVM ransomware test");
    let lab = LvmSites::new("rw", 512 * MIB, "384M");
    for r in ["blob", "redolog"] {
        lab.primary_thin(r, "64M");
    }
    let store = LvmStore {
        blob: PathBuf::from(format!("/dev/{}", lab.pri.lv("blob"))),
        redo: PathBuf::from(format!("/dev/{}", lab.pri.lv("redolog"))),
    };
    drive_on(&lab, &store, SLOT as usize, true);
}

// ---------------------------------------------------------------------------
// A normal week on ZFS and LVM (the btrfs one is tests/ransom.rs
// `a_normal_week_of_mail_is_never_suspect`), and what detection costs a
// whole ship.

/// An ordinary message of `len` bytes (words, not noise).
fn message(i: usize, len: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "meeting", "invoice", "tomorrow", "project", "the", "and", "regards", "please", "attached",
        "review", "budget", "thanks",
    ];
    let head = format!("From: user{i}@example.org\r\nSubject: note {i}\r\n\r\n");
    mailgen::message(head, i, &WORDS, len)
}

/// [`structured`](mailgen::structured) data of seed `seed`.
fn structured(seed: u64, len: usize) -> Vec<u8> {
    mailgen::structured(noise(seed, len))
}

/// A set: snapshot and ship; (id, the ship's wall seconds).
fn ship_set(pri: &Path) -> (String, f64) {
    let id = snapshot_id(pri);
    let t = Instant::now();
    snapsite_ok(pri, &["ship", "--json"]);
    (id, t.elapsed().as_secs_f64())
}

fn json_at(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

/// The blob volume of the VM's week: messages of 8 KiB (`<i>.eml`), a
/// quarter with a base64 attachment of 12 KiB; sets shipped from `pri`.
struct WeekMail {
    blob: PathBuf,
    /// The messages not deleted, oldest first.
    plain: Vec<usize>,
    next: usize,
    pri: PathBuf,
}

impl WeekMail {
    fn path(&self, i: usize) -> PathBuf {
        self.blob.join(format!("{i}.eml"))
    }
}

impl mailgen::MailServer for WeekMail {
    fn deliver(&mut self, n: usize, seed: u64) {
        for k in 0..n {
            let mut m = message(self.next, 8 << 10);
            if k % 4 == 0 {
                m.extend_from_slice(b"\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n");
                m.extend(base64(&noise(seed + k as u64, 12 << 10)));
            }
            write_synced(&self.path(self.next), &m);
            self.plain.push(self.next);
            self.next += 1;
        }
    }
    fn delete(&mut self, at: usize) {
        let i = self.plain.remove(at);
        std::fs::remove_file(self.path(i)).unwrap();
    }
    fn messages(&self) -> usize {
        self.plain.len()
    }
    fn set(&mut self) -> String {
        ship_set(&self.pri).0
    }
}

/// The roles of the week and where each is mounted on the primary.
const WEEK_ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];

/// A week of ordinary mail server traffic, two sets a day, on the four
/// volumes mounted at `live[role]` (as tests/ransom.rs does on btrfs, the
/// store scaled to the VM: new mail every day, a quarter with a base64
/// attachment; deletions; an index merge per set; MariaDB rewriting pages
/// in place and its circular log; the redo log rolled over into
/// `archive/` every evening; a Sunday trash purge). Asserts every set
/// clean; returns the sets' ids, first the full one, and the full set's
/// ship time (seconds).
fn normal_week(dir: &Path, pri: &Path, live: &HashMap<&str, PathBuf>) -> (Vec<String>, f64) {
    let t0 = Instant::now();
    let week = mailgen::Week {
        new: [30, 15, 4],
        deleted: 3,
        segment: 128 << 10,
        pages: 128,
        pages_rewritten: 24,
        // The rollover comes well after the log's last write, as on a mail
        // server: a rename in the same coarse-clock tick as the write looks
        // like a rewrite on ZFS (ctime not after mtime; docs/ransomware.md),
        // which a quiet host's speed made happen here (4 of 7 renames seen).
        pause_before_rollover: std::time::Duration::from_millis(50),
        random: noise,
        index: live["index"].clone(),
        ibdata: live["mysql"].join("ibdata1"),
        iblog: live["mysql"].join("ib_logfile0"),
        redolog: live["redolog"].clone(),
    };
    week.prepare();
    append_synced(&week.log(), "start");
    let mut mail = WeekMail {
        blob: live["blob"].clone(),
        plain: Vec::new(),
        next: 0,
        pri: pri.to_path_buf(),
    };
    mailgen::MailServer::deliver(&mut mail, 200, 7);
    let (full, full_wall) = ship_set(pri);
    let mut ids = vec![full];
    ids.extend(week.run(&mut mail));
    assert_eq!(ids.len(), 15);
    // (-1: a week of zero scores still names the set it printed)
    let mut highest = (-1.0f64, String::new());
    for id in &ids {
        let v = json_at(&dir.join(format!("state-stb/verdicts/{id}.json")));
        assert_eq!(v["verdict"], "clean", "{id}: {v:#}");
        let score = v["score"].as_f64().unwrap();
        if score > highest.0 {
            highest = (score, id.clone());
        }
    }
    eprintln!(
        "normal week: {} sets, 0 suspect; highest score {:.2} (set {}); {:.1} s",
        ids.len(),
        highest.0,
        highest.1,
        t0.elapsed().as_secs_f64()
    );
    (ids, full_wall)
}

/// A normal week run on two sites (the ZFS and LVM tests differ only in
/// how a volume is made).
struct Week {
    pri: PathBuf,
    stb: PathBuf,
    live: HashMap<&'static str, PathBuf>,
    /// The sets' ids, first the full one.
    ids: Vec<String>,
    /// The full set's ship time (seconds).
    full_wall: f64,
}

impl Week {
    /// `volume(role)` makes the primary's volume of each of
    /// [`WEEK_ROLES`] and returns where it is mounted and the primary's
    /// and the standby's `[[volume]]` tables; then the sites' configs
    /// (with [`WEEK_DETECT`]) and [`normal_week`].
    fn run(dir: &Path, mut volume: impl FnMut(&str) -> (PathBuf, String, String)) -> Week {
        let mut live = HashMap::new();
        let (mut pri_vols, mut stb_vols) = (String::new(), String::new());
        for r in WEEK_ROLES {
            let (mounted, pri_vol, stb_vol) = volume(r);
            live.insert(r, mounted);
            pri_vols.push_str(&pri_vol);
            stb_vols.push_str(&stb_vol);
        }
        let (pri, stb) = site_configs(dir, &pri_vols, &stb_vols, WEEK_DETECT, Standby::Serve, "");
        let (ids, full_wall) = normal_week(dir, &pri, &live);
        Week {
            pri,
            stb,
            live,
            ids,
            full_wall,
        }
    }

    /// [`detection_cost`] after the week.
    fn cost(&self, dir: &Path, label: &str) {
        detection_cost(
            dir,
            &self.pri,
            &self.stb,
            &self.live,
            &self.ids[0],
            self.full_wall,
            label,
        );
    }
}

/// The signals of every volume of set `id` on the standby.
fn set_signals(dir: &Path, id: &str) -> Vec<(String, serde_json::Value)> {
    WEEK_ROLES
        .iter()
        .map(|r| {
            (
                r.to_string(),
                json_at(&dir.join(format!("state-stb/signals/{r}/{id}.json"))),
            )
        })
        .collect()
}

/// What detection costs a whole ship (docs/ransomware.md "Cost"): the
/// full set's ship and the meter's share of it, then `rounds` incremental
/// ships of ~2 MiB of new mail and in-place rewrites with `[detect]` on
/// and off alternately (the standby's config is read by each ship's
/// `serve`): wall and CPU (ship, serve and the storage tools under them),
/// and the meters' own time.
fn detection_cost(
    dir: &Path,
    pri: &Path,
    stb: &Path,
    live: &HashMap<&str, PathBuf>,
    full: &str,
    full_wall: f64,
    label: &str,
) {
    let base = std::fs::read_to_string(stb).unwrap();
    let meter = |id: &str| -> f64 {
        set_signals(dir, id)
            .iter()
            .map(|(_, s)| s["cpu_us"].as_f64().unwrap_or(0.0) / 1e6)
            .sum()
    };
    let m = meter(full);
    eprintln!(
        "{label} cost: full set: ship {full_wall:.2} s wall, the meters {m:.3} s ({:.1} %)",
        m / full_wall * 100.0
    );
    let (mut on, mut off, mut on_cpu, mut off_cpu, mut meter_on) = (0.0, 0.0, 0.0, 0.0, 0.0);
    // The meters' seconds per volume, over the rounds with detection (on
    // LVM the first incremental volume of a set reads the pool's map for
    // the others: docs/ransomware.md).
    let mut per_role: Vec<(String, f64)> =
        WEEK_ROLES.iter().map(|r| (r.to_string(), 0.0)).collect();
    let rounds = 6;
    for round in 0..rounds {
        let detect = round % 2 == 0;
        let text = if detect {
            base.clone()
        } else {
            base.replace("[detect]\n", "[detect]\nenabled = false\n")
        };
        std::fs::write(stb, text).unwrap();
        for k in 0..200 {
            write_synced(
                &live["blob"].join(format!("cost-{round}-{k}.eml")),
                &message(100_000 + 1000 * round + k, 8 << 10),
            );
        }
        rewrite_at(
            &live["mysql"].join("ibdata1"),
            0,
            &structured(round as u64 + 77, 512 << 10),
        );
        append_synced(&live["redolog"].join("log"), &format!("cost round {round}"));
        let c = children_cpu();
        let (id, wall) = ship_set(pri);
        let cpu = children_cpu() - c;
        eprintln!("{label} cost round {round}: detect {detect}: {wall:.2} s wall, {cpu:.2} s CPU");
        if detect {
            on += wall;
            on_cpu += cpu;
            meter_on += meter(&id);
            for ((_, sum), (_, s)) in per_role.iter_mut().zip(set_signals(dir, &id)) {
                *sum += s["cpu_us"].as_f64().unwrap_or(0.0) / 1e6;
            }
        } else {
            off += wall;
            off_cpu += cpu;
        }
    }
    std::fs::write(stb, base).unwrap();
    let n = (rounds / 2) as f64;
    eprintln!(
        "{label} cost: incremental ships, {n} each: wall with detection {:.2} s, without {:.2} s; CPU {:.2} s vs {:.2} s; the meters {:.3} s = {:.1} % of the wall with detection",
        on / n,
        off / n,
        on_cpu / n,
        off_cpu / n,
        meter_on / n,
        meter_on / on * 100.0
    );
    let per_role: Vec<String> = per_role
        .iter()
        .map(|(r, sum)| format!("{r} {:.3} s", sum / n))
        .collect();
    eprintln!(
        "{label} cost: the meters per volume and set (mean of {n}): {}",
        per_role.join(", ")
    );
}

/// CPU seconds of this process's waited-for children (user + system).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[13].parse::<f64>().unwrap() + f[14].parse::<f64>().unwrap()) / 100.0
}

/// The week's thresholds: the ones that catch both attack paces above.
const WEEK_DETECT: &str = DETECT;

/// The normal week on ZFS: 15 sets, 4 datasets, none suspect; the
/// evening rollovers seen as renames; then the cost of detection against
/// whole ships. With `SNAPSITE_VM_FULL=1` only (docs/ransomware.md has its
/// time).
#[test]
fn zfs_a_normal_week_is_never_suspect() {
    require_lab!(full: "the ZFS normal week");
    let lab = ZfsSites::new("wk", 768 * MIB, 768 * MIB);
    let week = Week::run(&lab.dir, |r| {
        sh(&["zfs", "create", &lab.a.dataset(r)]);
        (
            zfs_mountpoint(&lab.a.dataset(r)),
            lab.primary_volume(r, ""),
            lab.standby_volume(r, None),
        )
    });
    let renames: u64 = week.ids[1..]
        .iter()
        .map(|id| {
            json_at(&lab.dir.join(format!("state-stb/signals/redolog/{id}.json")))["renames"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum();
    eprintln!("zfs week: {renames} renames seen in the redolog volume");
    assert!(renames >= 6, "the evening rollovers are renames: {renames}");
    week.cost(&lab.dir, "zfs");
}

/// The normal week on LVM thin, ext4 on the primary's thin LVs (a
/// filesystem reuses freed blocks, and its journal and metadata are
/// rewritten in place: what the LVM signals see of ordinary mail): 15
/// sets, none suspect, and on every incremental the standby's own thin
/// map agrees with the primary's overwritten list; then the cost of
/// detection. With `SNAPSITE_VM_FULL=1` only.
#[test]
fn lvm_a_normal_week_is_never_suspect() {
    require_lab!(full: "the LVM normal week");
    let lab = LvmSites::new("wk", 1024 * MIB, "768M");
    let mut mounts = Unmount(Vec::new());
    let week = Week::run(&lab.dir, |r| {
        lab.primary_thin(r, "128M");
        let mp = lab.dir.join(format!("mnt-{r}"));
        mount_ext4(&PathBuf::from(format!("/dev/{}", lab.pri.lv(r))), &mp);
        mounts.0.push(mp.clone());
        (mp, lab.primary_volume(r, ""), lab.standby_volume(r, None))
    });
    let (mut claimed, mut measured) = (0u64, 0u64);
    for id in &week.ids[1..] {
        for (role, s) in set_signals(&lab.dir, id) {
            let c = s["rewrite_bytes_claimed"]
                .as_u64()
                .unwrap_or_else(|| panic!("{role} {id}: the own map was not used: {s:#}"));
            let m = s["rewrite_bytes"].as_u64().unwrap();
            assert!(
                m <= c + (16 << 10),
                "{role} {id}: the map shows more than the header: {s:#}"
            );
            claimed += c;
            measured += m;
        }
    }
    eprintln!(
        "lvm week: overwritten per the primary's headers {claimed} bytes, per the standby's own thin maps {measured} bytes"
    );
    week.cost(&lab.dir, "lvm");
    drop(mounts);
}
