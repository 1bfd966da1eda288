//! Seeding a standby from a disk on real btrfs: `ship --to DIR` writes the
//! newest complete full set as chunk files, `serve --from` commits it on
//! the standby, and the next `ship` over the wire is incremental from it. A
//! corrupted or missing part commits nothing.

mod common;

use std::path::{Path, PathBuf};

use common::*;

const MIB: usize = 1 << 20;

fn fill(lab: &Lab, seed: u64) {
    lab.fill(seed, 256 * 1024);
    // Half text (compresses), half random: several 1 MiB chunk files.
    let text: Vec<u8> = (0..3 * MIB).map(|i| b"seed text, "[i % 11]).collect();
    write_file(&lab.live("blob").join("text"), &text);
    write_file(
        &lab.live("blob").join("bin"),
        &random_bytes(seed + 9, 3 * MIB),
    );
}

fn seed_dir(lab: &Lab, cfg: &Path) -> (PathBuf, serde_json::Value) {
    let out = lab.dir.path().join("usb");
    std::fs::create_dir_all(&out).unwrap();
    let r: serde_json::Value = serde_json::from_str(&lab.ok(
        cfg,
        &[
            "ship",
            "--to",
            out.to_str().unwrap(),
            "--chunk-size",
            "1MiB",
            "--json",
        ],
    ))
    .unwrap();
    (PathBuf::from(r["dir"].as_str().unwrap()), r)
}

#[test]
fn a_seed_from_disk_commits_and_the_next_ship_is_incremental() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    fill(&lab, 1);
    let zstd = lab.primary_variant(
        "zstd",
        &format!(
            "transport = \"local\"\nconfig = \"{}\"\ncompress = \"zstd\"",
            lab.stb_cfg.display()
        ),
    );
    let set = lab.snapshot(false);
    let id = set["id"].as_str().unwrap().to_string();
    let (dir, report) = seed_dir(&lab, &zstd);
    eprintln!("seed: {report}");
    assert_eq!(report["set_id"], id.as_str());
    assert_eq!(report["compression"], "zstd:3");
    assert!(report["parts"].as_u64().unwrap() >= 3, "{report}");
    assert!(
        report["stream_bytes"].as_u64().unwrap() < report["payload_bytes"].as_u64().unwrap(),
        "the text compressed: {report}"
    );
    assert!(dir.join("index.json").exists());
    // Nothing went to the standby yet.
    assert!(lab.standby_manifests().is_empty());

    let out = lab.ok(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    assert!(out.contains(&id), "{out}");
    assert_eq!(lab.standby_manifests(), [format!("{id}.json")]);
    for r in ROLES {
        lab.assert_received_same(r, &id);
    }
    // Importing it again is an idempotent retry: the members are refused
    // (the set is committed), the commit record stays as it was.
    let before = std::fs::read(lab.dir.path().join(format!("state-stb/sets/{id}.json"))).unwrap();
    lab.ok(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    assert_eq!(lab.standby_manifests(), [format!("{id}.json")]);
    assert_eq!(
        std::fs::read(lab.dir.path().join(format!("state-stb/sets/{id}.json"))).unwrap(),
        before
    );

    // The network takes over: incremental from the seeded set.
    write_file(&lab.live("blob").join("new"), &random_bytes(50, MIB));
    let next = lab.snapshot(false);
    let next_id = next["id"].as_str().unwrap();
    let r = lab.ship(&zstd);
    assert_eq!(r["committed"][0], next_id);
    assert!(
        r["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["base"] == id.as_str()),
        "{r}"
    );
    assert!(r["payload_bytes"].as_u64().unwrap() < 2 * MIB as u64, "{r}");
    lab.assert_received_same("blob", next_id);
}

#[test]
fn a_corrupted_or_incomplete_seed_commits_nothing() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    fill(&lab, 2);
    let set = lab.snapshot(false);
    let id = set["id"].as_str().unwrap().to_string();
    let (dir, _) = seed_dir(&lab, &lab.pri_cfg);
    // One flipped byte in the middle of the blob volume's data.
    let part = dir.join("part-000002");
    let mut b = std::fs::read(&part).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&part, &b).unwrap();
    let out = lab.run(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("corrupted seed said: {err}");
    assert!(!out.status.success());
    assert!(err.contains("part-000002"), "{err}");
    assert!(lab.standby_manifests().is_empty());
    let entries = lab.standby_recv_entries();
    assert!(
        entries.iter().all(|e| !e.contains(".receiving-")),
        "{entries:?}"
    );
    assert!(!entries.contains(&format!("blob/{id}")), "{entries:?}");

    // Repaired, but the index is gone (a seed cut while written): refused.
    b[mid] ^= 0x40;
    std::fs::write(&part, &b).unwrap();
    std::fs::rename(dir.join("index.json"), dir.join("index.json.bak")).unwrap();
    let out = lab.run(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("index.json"));
    std::fs::rename(dir.join("index.json.bak"), dir.join("index.json")).unwrap();

    // The last part wrong (the commit message is in it): nothing committed,
    // non-zero exit, refused before serve reads a byte.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let last = index["parts"].as_array().unwrap().last().unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let lp = dir.join(&last);
    let mut lb = std::fs::read(&lp).unwrap();
    let n = lb.len();
    lb[n - 1] ^= 0x01;
    std::fs::write(&lp, &lb).unwrap();
    let out = lab.run(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(&last), "{err}");
    assert!(lab.standby_manifests().is_empty());
    lb[n - 1] ^= 0x01;
    std::fs::write(&lp, &lb).unwrap();

    // index.json a FIFO: a clear error within a second (it used to block
    // forever holding the site lock).
    std::fs::rename(dir.join("index.json"), dir.join("index.json.bak")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("index.json"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let t = std::time::Instant::now();
    let out = lab.run(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("FIFO"), "{err}");
    std::fs::remove_file(dir.join("index.json")).unwrap();
    std::fs::rename(dir.join("index.json.bak"), dir.join("index.json")).unwrap();

    lab.ok(&lab.stb_cfg, &["serve", "--from", dir.to_str().unwrap()]);
    assert_eq!(lab.standby_manifests(), [format!("{id}.json")]);
    lab.assert_received_same("blob", &id);
}
