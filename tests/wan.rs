//! The WAN controls on real btrfs (loop devices): zstd on the wire with the
//! checksums over the uncompressed bytes, a corrupted compressed frame that
//! commits nothing, the bandwidth limit never exceeded, and a cut set that
//! resumes without sending its received volumes again.

mod common;

use std::time::Instant;

use common::output::sent;
use common::*;

const MIB: usize = 1 << 20;

/// Mail-like bytes: header and text lines, then base64 of random data (an
/// attachment), in the proportions given.
fn mail_corpus(seed: u64, len: usize) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const WORDS: [&str; 16] = [
        "the", "meeting", "is", "moved", "to", "thursday", "please", "find", "attached", "report",
        "regards", "invoice", "for", "november", "thanks", "and",
    ];
    let noise = random_bytes(seed, len);
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "From: user{}@example.org\r\nSubject: message {i}\r\n\r\n",
                i % 97
            )
            .as_bytes(),
        );
        for l in 0..20 {
            for w in 0..12 {
                out.extend_from_slice(
                    WORDS[(noise[(i * 31 + l * 7 + w) % len] % 16) as usize].as_bytes(),
                );
                out.push(b' ');
            }
            out.extend_from_slice(b"\r\n");
        }
        for l in 0..30 {
            for k in 0..76 {
                out.push(B64[(noise[(i * 2281 + l * 76 + k) % len] & 63) as usize]);
            }
            out.extend_from_slice(b"\r\n");
        }
        i += 1;
    }
    out.truncate(len);
    out
}

fn fill(lab: &Lab, seed: u64, blob_mib: usize) {
    for (i, r) in ROLES.iter().enumerate() {
        write_file(
            &lab.live(r).join("data"),
            &mail_corpus(seed + i as u64, 256 * 1024),
        );
    }
    write_file(
        &lab.live("blob").join("store"),
        &mail_corpus(seed + 10, blob_mib * MIB),
    );
}

fn local(lab: &Lab, extra: &str) -> String {
    format!(
        "transport = \"local\"\nconfig = \"{}\"\n{extra}",
        lab.stb_cfg.display()
    )
}

fn same_everywhere(lab: &Lab, id: &str) {
    for r in ROLES {
        lab.assert_received_same(r, id);
    }
}

/// The standby's receipts of a set: (role, bytes, blake3).
fn receipts(lab: &Lab, id: &str) -> Vec<(String, u64, String)> {
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lab.dir.path().join(format!("state-stb/sets/{id}.json"))).unwrap(),
    )
    .unwrap();
    m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let r = &x["receipt"];
            (
                x["role"].as_str().unwrap().to_string(),
                r["bytes"].as_u64().unwrap(),
                r["blake3"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn compressed_full_and_incremental_round_trip_with_checksums_of_the_raw_bytes() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    fill(&lab, 1, 12);
    let zstd = lab.primary_variant("zstd", &local(&lab, "compress = \"zstd:3\""));
    let first = lab.snapshot(false);
    let id1 = first["id"].as_str().unwrap();
    let r1 = lab.ship(&zstd);
    eprintln!("full: {r1}");
    assert_eq!(r1["compression"], "zstd:3");
    let (payload, wire) = (
        r1["payload_bytes"].as_u64().unwrap(),
        r1["wire_bytes"].as_u64().unwrap(),
    );
    assert!(
        (wire as f64) < 0.8 * payload as f64,
        "mail data must travel compressed: {wire} on the wire for {payload}"
    );
    same_everywhere(&lab, id1);
    // The receipts' blake3 and byte counts are those of the uncompressed
    // send streams the primary produced (the payload), not of the wire.
    let rec = receipts(&lab, id1);
    assert_eq!(rec.iter().map(|r| r.1).sum::<u64>(), payload);
    for (role, bytes, hash) in &rec {
        assert_eq!(sent(&r1, role)["bytes"].as_u64().unwrap(), *bytes);
        assert_eq!(hash.len(), 64);
    }

    // An incremental: a few new messages, a changed index.
    write_file(&lab.live("blob").join("new"), &mail_corpus(77, 2 * MIB));
    write_file(
        &lab.live("index").join("data"),
        &mail_corpus(78, 300 * 1024),
    );
    let second = lab.snapshot(false);
    let id2 = second["id"].as_str().unwrap();
    let r2 = lab.ship(&zstd);
    eprintln!("incremental: {r2}");
    assert!(
        r2["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["base"] == id1)
    );
    assert!(r2["wire_bytes"].as_u64().unwrap() < r2["payload_bytes"].as_u64().unwrap());
    same_everywhere(&lab, id2);

    // The same primary without compression still ships to this standby.
    write_file(&lab.live("redolog").join("log"), b"one more line\n");
    let third = lab.snapshot(true);
    let plain = lab.ship(&lab.pri_cfg);
    assert_eq!(plain["compression"], "none");
    assert_eq!(plain["committed"][0], third["id"]);
}

#[test]
fn a_corrupted_compressed_frame_commits_nothing_and_the_next_ship_completes() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    fill(&lab, 2, 12);
    let set = lab.snapshot(false);
    let id = set["id"].as_str().unwrap();
    // 2 MB into the wire: inside the blob volume's compressed frames (the
    // mysql volume before it is 256 KiB).
    let bad = lab.filtered_transport(
        "flip",
        &byte_filter("flip", 2_000_000, 0x20),
        "compress = \"zstd\"",
    );
    let out = lab.run(&bad, &["ship"]);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("corrupted compressed ship said: {err}");
    assert!(!out.status.success(), "a corrupted ship must fail");
    assert!(err.contains("blob"), "{err}");
    assert!(lab.standby_manifests().is_empty(), "nothing committed");
    lab.assert_nothing_half_received();
    assert!(!lab.standby_recv_entries().contains(&format!("blob/{id}")));
    let log = std::fs::read_to_string(lab.dir.path().join("state-stb/serve.log")).unwrap();
    assert!(
        log.contains("compressed frame") || log.contains("checksum mismatch"),
        "{log}"
    );

    let zstd = lab.primary_variant("zstd", &local(&lab, "compress = \"zstd\""));
    let report = lab.ship(&zstd);
    assert_eq!(
        sent_roles(&report),
        ["blob", "index", "redolog"],
        "mysql was not sent again"
    );
    assert_eq!(lab.standby_manifests(), [format!("{id}.json")]);
    same_everywhere(&lab, id);
}

#[test]
fn the_bandwidth_limit_is_never_exceeded() {
    require_real!();
    let lab = Lab::new("[\"true\"]");
    lab.fill_same(9, 64 * 1024);
    write_file(&lab.live("blob").join("big"), &random_bytes(10, 6 * MIB));
    lab.snapshot(false);
    let limited = lab.primary_variant("limited", &local(&lab, "bwlimit = \"2MiB/s\""));
    let t = Instant::now();
    let r = lab.ship(&limited);
    let secs = t.elapsed().as_secs_f64();
    let wire = r["wire_bytes"].as_u64().unwrap() as f64;
    let rate = wire / secs;
    eprintln!(
        "{wire} bytes on the wire in {secs:.2} s: {:.3} MiB/s for a 2 MiB/s limit",
        rate / MIB as f64
    );
    // One 50 ms burst may go ahead of the bucket; the rest waits for it.
    assert!(
        wire <= 2.0 * MIB as f64 * secs + 0.1 * MIB as f64 + 65536.0,
        "faster than the limit: {rate:.0} B/s"
    );
    assert!(r["bwlimit_wait_seconds"].as_f64().unwrap() > 1.0, "{r}");
}
