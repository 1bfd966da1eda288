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
        let id = snapsite_json(pri, &["snapshot", "--json"])["id"]
            .as_str()
            .unwrap()
            .to_string();
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

struct ZfsStore {
    blob: PathBuf,
    redo: PathBuf,
}

impl MailStore for ZfsStore {
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
    let pri_vols = format!(
        "{}{}",
        lab.primary_volume("blob", ""),
        lab.primary_volume("redolog", "")
    );
    let stb_vols = format!(
        "{}{}",
        lab.standby_volume("blob", None),
        lab.standby_volume("redolog", None)
    );
    let (pri, stb) = site_configs(&lab.dir, &pri_vols, &stb_vols, DETECT, Standby::Serve, "");
    drive(&lab.dir, &pri, &stb, &store, 16 << 10, vm_full());
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
    require_lab!();
    if !vm_full() {
        eprintln!("SKIP: SNAPSITE_VM_FULL=1 runs the LVM ransomware test");
        return;
    }
    let lab = LvmSites::new("rw", 512 * MIB, "384M");
    for r in ["blob", "redolog"] {
        lab.primary_thin(r, "64M");
    }
    let store = LvmStore {
        blob: PathBuf::from(format!("/dev/{}", lab.pri.lv("blob"))),
        redo: PathBuf::from(format!("/dev/{}", lab.pri.lv("redolog"))),
    };
    let pri_vols = format!(
        "{}{}",
        lab.primary_volume("blob", ""),
        lab.primary_volume("redolog", "")
    );
    let stb_vols = format!(
        "{}{}",
        lab.standby_volume("blob", None),
        lab.standby_volume("redolog", None)
    );
    let (pri, stb) = site_configs(&lab.dir, &pri_vols, &stb_vols, DETECT, Standby::Serve, "");
    drive(&lab.dir, &pri, &stb, &store, SLOT as usize, true);
}
