//! Ransomware on the primary, seen by the standby (issue 31), on real
//! btrfs (loop devices): a mail store ships normal sets (new messages,
//! deletions, a redolog that grows) that are judged clean; then an
//! encryptor rewrites blob files in place with random bytes and renames
//! them, "low and slow" (1 % of the store per set) or fast (a quarter per
//! set): the standby judges the set suspect within two sets, `status` is
//! CRITICAL, `sets` gives the reason, failover uses the last clean set
//! and brings back the files as they were, and `sets --clear-suspect`
//! clears the flag. Also: the retention hold over a long simulated history.

mod common;

use common::*;

/// Blob files in the store, each [`MSG`] bytes of ordinary (compressible) mail.
const STORE: usize = 400;
const MSG: usize = 16 * 1024;

/// Thresholds scaled to a 6 MiB store (the defaults are for 100 GB).
const DETECT: &str = "\n[detect]\nbaseline_sets = 3\nrewrite_min_bytes = \"32KiB\"\nmin_changed_bytes = \"1MiB\"\nrename_min = 20\n";

fn message(i: usize) -> Vec<u8> {
    let words = [
        "meeting", "invoice", "tomorrow", "project", "the", "and", "regards", "please", "attached",
        "review", "budget", "thanks", "schedule", "call", "report",
    ];
    let mut s =
        format!("From: user{i}@example.org\r\nTo: team@example.org\r\nSubject: note {i}\r\n\r\n");
    let mut x = i as u64 * 2654435761 + 1;
    while s.len() < MSG {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(words[(x % words.len() as u64) as usize]);
        s.push(if x % 11 == 0 { '\n' } else { ' ' });
    }
    s.truncate(MSG);
    s.into_bytes()
}

fn blob(lab: &Lab, i: usize) -> std::path::PathBuf {
    lab.live("blob").join(format!("{}/{i}-1.msg", i % 10))
}

struct Store {
    next: usize,
    /// Files not yet encrypted.
    plain: Vec<usize>,
}

impl Store {
    fn new(lab: &Lab) -> Store {
        for d in 0..10 {
            std::fs::create_dir_all(lab.live("blob").join(d.to_string())).unwrap();
        }
        for i in 0..STORE {
            write_file(&blob(lab, i), &message(i));
        }
        Store {
            next: STORE,
            plain: (0..STORE).collect(),
        }
    }

    /// A normal set's worth of mail: new messages, a few deletions, redolog.
    fn mail(&mut self, lab: &Lab, new: usize) {
        for _ in 0..new {
            write_file(&blob(lab, self.next), &message(self.next));
            self.plain.push(self.next);
            self.next += 1;
        }
        for _ in 0..3 {
            let i = self.plain.remove(7);
            std::fs::remove_file(blob(lab, i)).unwrap();
        }
        lab.append_redolog(&format!("delivered {new} messages up to {}", self.next));
    }

    /// The encryptor: `n` files rewritten in place with random bytes (same
    /// inode), then renamed `.locked`.
    fn encrypt(&mut self, lab: &Lab, n: usize, seed: u64) {
        use std::io::{Seek, Write};
        for k in 0..n {
            let i = self.plain.remove(0);
            let p = blob(lab, i);
            let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.write_all(&random_bytes(seed + k as u64, MSG)).unwrap();
            f.sync_all().unwrap();
            std::fs::rename(&p, p.with_extension("msg.locked")).unwrap();
        }
    }
}

fn set(lab: &Lab) -> String {
    let id = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.ship(&lab.pri_cfg);
    id
}

fn verdict(lab: &Lab, id: &str) -> serde_json::Value {
    let p = lab.dir.path().join(format!("state-stb/verdicts/{id}.json"));
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn lab() -> (Lab, Store) {
    let lab = Lab::with_roles(&["blob", "redolog"], "512M", "[\"/bin/true\"]");
    let mut toml = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    toml.push_str(DETECT);
    std::fs::write(&lab.stb_cfg, toml).unwrap();
    let store = Store::new(&lab);
    (lab, store)
}

/// Four normal sets after the first (full) transfer: all clean.
fn normal_week(lab: &Lab, store: &mut Store) -> Vec<String> {
    let mut ids = vec![set(lab)];
    for k in 0..4 {
        store.mail(lab, 20 + 5 * k);
        ids.push(set(lab));
    }
    for id in &ids {
        let v = verdict(lab, id);
        assert_eq!(v["verdict"], "clean", "{id}: {v:#}");
    }
    ids
}

fn attack(pace: usize) {
    let (lab, mut store) = lab();
    let t0 = std::time::Instant::now();
    let clean = normal_week(&lab, &mut store);
    let last_clean = clean.last().unwrap().clone();
    // Keep what the attacker will encrypt first, to compare after failover.
    let victim = store.plain[0];
    let original = message(victim);

    let mut attacked = Vec::new();
    let mut detected = None;
    for round in 0..2 {
        store.mail(&lab, 20);
        store.encrypt(&lab, pace, 1000 * (round + 1) as u64);
        let id = set(&lab);
        attacked.push(id.clone());
        if verdict(&lab, &id)["verdict"] == "suspect" {
            detected = Some((round + 1, id));
            break;
        }
    }
    let (after, first_suspect) = detected.unwrap_or_else(|| {
        panic!(
            "not detected within 2 sets at {pace} files per set: {:#}",
            verdict(&lab, attacked.last().unwrap())
        )
    });
    eprintln!(
        "pace {pace} files/set: suspect after {after} set(s), {:.1} s for the whole history",
        t0.elapsed().as_secs_f64()
    );
    let v = verdict(&lab, &first_suspect);
    let reasons = v["volumes"][0]["reasons"].to_string();
    assert!(reasons.contains("rewritten in place"), "{v:#}");
    // The redolog volume of the same set is clean.
    assert!(v["volumes"][1]["reasons"].as_array().unwrap().is_empty());

    // status: CRITICAL, naming the set; metrics export it.
    let o = run_snapsite(&lab.stb_cfg, &["status", "--json"], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", both(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        st["suspect"]["first"].as_str(),
        Some(first_suspect.as_str())
    );
    let prom = lab.dir.path().join("metrics.prom");
    run_snapsite(
        &lab.stb_cfg,
        &["status", "--prometheus", prom.to_str().unwrap()],
        &[],
    );
    let metrics = std::fs::read_to_string(&prom).unwrap();
    assert!(
        metrics.contains("snapsite_suspect_sets{site=\"standby\"} 1"),
        "{metrics}"
    );
    // sets: a reason line under the suspect set.
    let sets = lab.ok(&lab.stb_cfg, &["sets"]);
    assert!(sets.contains("SUSPECT"), "{sets}");
    assert!(sets.contains("blob: "), "{sets}");

    // failover: the last clean set, the suspect ones skipped, the cost said.
    let plan: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--json"])).unwrap();
    assert_eq!(
        plan["set_id"].as_str(),
        Some(last_clean.as_str()),
        "{plan:#}"
    );
    assert_eq!(
        plan["suspect"]["skipped"][0]["set_id"].as_str(),
        Some(first_suspect.as_str())
    );
    assert!(
        plan["suspect"]["cost"]
            .as_str()
            .unwrap()
            .contains("moves back")
    );
    let text = lab.ok(&lab.stb_cfg, &["failover", "--dry-run"]);
    assert!(text.contains("skipped       suspect set"), "{text}");
    // --accept-suspect takes the newest, and says so.
    let newest: serde_json::Value = serde_json::from_str(&lab.ok(
        &lab.stb_cfg,
        &["failover", "--dry-run", "--accept-suspect", "--json"],
    ))
    .unwrap();
    assert_eq!(
        newest["set_id"].as_str(),
        attacked.last().map(String::as_str)
    );
    assert!(!newest["suspect"]["accepted"].as_array().unwrap().is_empty());

    // The real failover: the victim's file is back as it was.
    lab.ok(&lab.stb_cfg, &["failover", "--json"]);
    let back = lab
        .standby_live("blob")
        .join(format!("{}/{victim}-1.msg", victim % 10));
    assert_eq!(
        std::fs::read(&back).unwrap(),
        original,
        "{}",
        back.display()
    );
}

#[test]
fn low_and_slow_encryption_is_suspect_within_two_sets_and_failover_recovers_the_last_clean_set() {
    require_real!();
    attack(STORE / 100);
}

#[test]
fn fast_encryption_is_suspect_at_once() {
    require_real!();
    attack(STORE / 4);
}

#[test]
fn clearing_a_suspect_set_is_journaled_and_lifts_the_alarm() {
    require_real!();
    let (lab, mut store) = lab();
    normal_week(&lab, &mut store);
    // A legitimate mass rewrite (a restore of encrypted-at-rest blobs, say).
    store.encrypt(&lab, 40, 7);
    let id = set(&lab);
    assert_eq!(verdict(&lab, &id)["verdict"], "suspect");
    let dry = lab.ok(&lab.stb_cfg, &["sets", "--clear-suspect", &id, "--dry-run"]);
    assert!(dry.contains("would be cleared"), "{dry}");
    assert!(verdict(&lab, &id)["cleared_at"].is_null());
    lab.ok(&lab.stb_cfg, &["sets", "--clear-suspect", &id]);
    assert!(verdict(&lab, &id)["cleared_at"].is_string());
    assert!(
        !lab.dir
            .path()
            .join("state-stb/journal-clear-suspect.json")
            .exists()
    );
    let o = run_snapsite(&lab.stb_cfg, &["status", "--json"], &[]);
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(st["suspect"]["first"].is_null(), "{st:#}");
    assert_ne!(o.status.code(), Some(2), "{}", both(&o));
    // Failover takes the newest set again.
    let plan: serde_json::Value =
        serde_json::from_str(&lab.ok(&lab.stb_cfg, &["failover", "--dry-run", "--json"])).unwrap();
    assert_eq!(plan["set_id"].as_str(), Some(id.as_str()));
    // [detect] enabled = false: nothing measured, nothing judged.
    let mut toml = std::fs::read_to_string(&lab.stb_cfg).unwrap();
    toml.push_str("enabled = false\n");
    std::fs::write(&lab.stb_cfg, toml).unwrap();
    store.encrypt(&lab, 40, 9);
    let off = set(&lab);
    assert!(
        !lab.dir
            .path()
            .join(format!("state-stb/verdicts/{off}.json"))
            .exists()
    );
}
