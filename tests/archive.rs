//! The S3 archive (issue 30) on real btrfs and a real Ceph RGW with Object
//! Lock (scripts/rgwlab): the primary archives a full set and incremental
//! sets, encrypted with age; its own credentials read back only
//! ciphertext; `verify` checks the archive; a fresh standby is restored from
//! it and fails over with the primary's data; a corrupted part, a missing
//! part and a missing index are refused with their names.
//!
//! The lab is the one `eval "$(scripts/rgwlab env NAME)"` names
//! (RGWLAB_ENDPOINT, RGWLAB_BUCKET, RGWLAB_REGION, RGWLAB_CREDS_PRIMARY), or
//! else one this test starts and stops itself (about 30 s). Without root or
//! the ceph packages the test is skipped, which fails under CI=true.

mod common;

use std::path::{Path, PathBuf};

use common::rgwlab::{self, Shared as RgwLab, written};
use common::*;
use snapsite::wire::s3::{Bucket, Credentials};

#[derive(Clone)]
struct Rgw {
    endpoint: String,
    bucket: String,
    region: String,
    creds: PathBuf,
    /// The lab's https endpoint and the CA its certificate chains to
    /// (`RGWLAB_ENDPOINT_HTTPS`, `RGWLAB_CA`).
    https: Option<(String, PathBuf)>,
}

impl Rgw {
    /// The lab's bucket, reached with the credentials in `creds`.
    fn bucket(&self, creds: &Path) -> Bucket {
        Bucket::new(
            &self.endpoint,
            &self.bucket,
            &self.region,
            Credentials::load(creds).unwrap(),
        )
        .unwrap()
    }
}

/// The RGW lab: the one named by `RGWLAB_*` in the environment (`eval
/// "$(scripts/rgwlab env NAME)"`), else a lab of this test's own, started
/// here and stopped (by its PIDs) when the guard drops. `Err` is why no lab
/// can run here.
fn rgw() -> Result<(Rgw, Option<RgwLab>), String> {
    let v = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    if let (Some(endpoint), Some(bucket), Some(creds)) = (
        v("RGWLAB_ENDPOINT"),
        v("RGWLAB_BUCKET"),
        v("RGWLAB_CREDS_PRIMARY"),
    ) {
        let region = v("RGWLAB_REGION").unwrap_or_else(|| "us-east-1".into());
        let creds = creds.into();
        let https = v("RGWLAB_ENDPOINT_HTTPS").zip(v("RGWLAB_CA").map(PathBuf::from));
        return Ok((
            Rgw {
                endpoint,
                bucket,
                region,
                creds,
                https,
            },
            None,
        ));
    }
    if let Some(why) = rgwlab::skip_reason() {
        return Err(why);
    }
    // One lab for the tests of this file that run side by side.
    let lab = RgwLab::start("archive-test");
    let r = Rgw {
        endpoint: lab.get("RGWLAB_ENDPOINT"),
        bucket: lab.get("RGWLAB_BUCKET"),
        region: lab.get("RGWLAB_REGION"),
        creds: lab.get("RGWLAB_CREDS_PRIMARY").into(),
        https: Some((
            lab.get("RGWLAB_ENDPOINT_HTTPS"),
            lab.get("RGWLAB_CA").into(),
        )),
    };
    Ok((r, Some(lab)))
}

fn archive_toml(r: &Rgw, prefix: &str, creds: &Path, extra: &str) -> String {
    rgwlab::archive_section(&r.endpoint, &r.bucket, &r.region, prefix, creds, extra)
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// A two-site lab with an archive on the RGW lab under a prefix of its own
/// (`KIND/<nanoseconds>`: the bucket's objects are locked for a day): the
/// primary's config holds only the age recipient (plus `pri_extra`), the
/// standby's the identity; both use a 0600 copy of the lab's credentials.
struct ArchiveLab {
    /// When the test asked for the lab (its wall time includes the start).
    started: std::time::Instant,
    r: Rgw,
    _rgwlab: Option<RgwLab>,
    lab: Lab,
    prefix: String,
    id_file: PathBuf,
    creds: PathBuf,
    pri: PathBuf,
    stb: PathBuf,
}

fn archive_lab(kind: &str, pri_extra: &str) -> Option<ArchiveLab> {
    archive_lab_on(kind, pri_extra, false, true)
}

/// [`archive_lab`], over the lab's https endpoint when `https` (both
/// sites trust the lab's CA through `ca_file`), the primary's parts
/// encrypted with age when `age` (else stored as they are).
fn archive_lab_on(kind: &str, pri_extra: &str, https: bool, age: bool) -> Option<ArchiveLab> {
    let started = std::time::Instant::now();
    let (mut r, _rgwlab) = match rgw() {
        Ok(r) => r,
        Err(why) => {
            skip_because("archive", Some(format!("no RGW lab: {why}")));
            return None;
        }
    };
    let mut ca = String::new();
    if https {
        let (endpoint, ca_file) = r.https.clone().expect(
            "the lab named by RGWLAB_* has no https endpoint: restart it with this scripts/rgwlab",
        );
        r.endpoint = endpoint;
        ca = format!("\nca_file = \"{}\"", ca_file.display());
    }
    let lab = Lab::new("[\"true\"]");
    let prefix = format!(
        "{kind}/{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let id_file = lab.dir.path().join("archive.age");
    sh(&["age-keygen", "-o", id_file.to_str().unwrap()]);
    let recipient = sh(&["age-keygen", "-y", id_file.to_str().unwrap()])
        .trim()
        .to_string();
    let creds = lab.dir.path().join("primary.creds");
    std::fs::copy(&r.creds, &creds).unwrap();
    sh(&["chmod", "600", creds.to_str().unwrap()]);
    // The standby restores with the lab's read-only `restorer`
    // (GetObject, ListBucket: docs/archive.md).
    let restorer = lab.dir.path().join("restorer.creds");
    std::fs::copy(r.creds.with_file_name("restorer.toml"), &restorer).unwrap();
    sh(&["chmod", "600", restorer.to_str().unwrap()]);
    let with = |cfg: &Path, name: &str, creds: &Path, extra: &str| {
        let p = lab.dir.path().join(name);
        std::fs::write(
            &p,
            std::fs::read_to_string(cfg).unwrap() + &archive_toml(&r, &prefix, creds, extra),
        )
        .unwrap();
        p
    };
    let pri = with(
        &lab.pri_cfg,
        "pri-archive.toml",
        &creds,
        &if age {
            format!("recipients = [\"{recipient}\"]{pri_extra}{ca}")
        } else {
            format!("{pri_extra}{ca}")
        },
    );
    let stb = with(
        &lab.stb_cfg,
        "stb-archive.toml",
        &restorer,
        &format!("identity = \"{}\"{ca}", id_file.display()),
    );
    Some(ArchiveLab {
        started,
        r,
        _rgwlab,
        lab,
        prefix,
        id_file,
        creds,
        pri,
        stb,
    })
}

#[test]
fn archive_restore_a_fresh_standby_and_fail_over() {
    require_real!();
    let Some(al) = archive_lab("test", "\ncompression = \"zstd:3\"") else {
        return;
    };
    let (r, lab, pri, stb) = (&al.r, &al.lab, &al.pri, &al.stb);
    let (prefix, id_file, creds) = (&al.prefix, &al.id_file, &al.creds);

    // A full set: 2 MiB of random data per volume plus a plaintext marker.
    lab.fill(1, 2 << 20);
    let marker = b"PLAINTEXT-MARKER-that-must-not-be-stored-";
    write_file(&lab.live("blob").join("marker"), &marker.repeat(1000));
    let s1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let dry = json(&lab.ok(pri, &["archive", "--dry-run", "--json"]));
    assert_eq!(dry["planned"], serde_json::json!([s1]), "{dry}");
    let a1 = json(&lab.ok(pri, &["archive", "--json"]));
    assert_eq!(written(&a1), std::slice::from_ref(&s1), "{a1}");
    assert!(a1["written"][0]["requires"].as_array().unwrap().is_empty());
    // Idempotent: nothing more to write, nothing overwritten.
    let again = json(&lab.ok(pri, &["archive", "--json"]));
    assert!(written(&again).is_empty(), "{again}");

    // Incremental sets: 64 KiB changed in one volume, then a redolog set.
    let changed = random_bytes(77, 64 << 10);
    write_file(&lab.live("mysql").join("changed"), &changed);
    let s2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    lab.append_redolog("after s2");
    let s3 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    let a2 = json(&lab.ok(pri, &["archive", "--json"]));
    assert_eq!(written(&a2), [s2.clone(), s3.clone()], "{a2}");
    assert_eq!(a2["written"][0]["requires"], serde_json::json!([s1]));
    assert_eq!(a2["written"][1]["requires"], serde_json::json!([s2]));
    let full_stored = a1["written"][0]["stored_bytes"].as_u64().unwrap();
    let inc_payload = a2["written"][0]["payload_bytes"].as_u64().unwrap();
    let inc_stored = a2["written"][0]["stored_bytes"].as_u64().unwrap();
    eprintln!(
        "MEASURE full set stored {full_stored} B; incremental: {} B changed, payload {inc_payload} B, stored {inc_stored} B ({:.2}x the change)",
        changed.len(),
        inc_stored as f64 / changed.len() as f64
    );
    // The incremental carries the change, not the volumes again.
    assert!(inc_payload < full_stored / 4, "{a2}");

    // The restorer reads and lists, and may not write.
    let ro = r.bucket(&r.creds.with_file_name("restorer.toml"));
    assert!(!ro.list(&format!("{prefix}/sets/")).unwrap().is_empty());
    let e = ro
        .put(
            &format!("{prefix}/restorer-may-not-write"),
            &mut std::io::Cursor::new(&b"x"[..]),
            1,
            snapsite::wire::s3::Payload::Sha256(
                snapsite::wire::s3::sha256_hex(&b"x"[..]).unwrap().1,
            ),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("403"), "{e}");

    // The primary's credentials read back only age ciphertext.
    let bucket = r.bucket(creds);
    let keys = bucket.list(&format!("{prefix}/sets/")).unwrap();
    let parts: Vec<&String> = keys
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.contains("/part-"))
        .collect();
    assert!(parts.len() >= 8, "{keys:?}");
    for k in &parts {
        let body = bucket.get_bounded(k, 8 << 20).unwrap().unwrap();
        assert!(body.starts_with(b"age-encryption.org/v1"), "{k} is not age");
        assert!(
            !body.windows(marker.len()).any(|w| w == marker),
            "{k} holds plaintext"
        );
    }

    // verify: every part read back against its index.
    let v = json(&lab.ok(pri, &["verify", "--archive", "offsite", "--json"]));
    assert_eq!(v["sets"], 3, "{v}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["parts_read"], v["parts"], "{v}");

    // A restore of `set` that is refused (exit 1) naming `needle`.
    let refused = |set: &str, needle: &str| {
        let o = lab.run(stb, &["restore", "--from", "offsite", "--set", set]);
        assert_exit(&o, 1);
        assert!(both(&o).contains(needle), "{}", both(&o));
        o
    };
    // A set whose index is missing: refused, naming the key.
    let ghost = "20200101T000000.000Z-full";
    refused(ghost, &format!("{prefix}/sets/{ghost}/index.json"));

    // A later set whose part the attacker overwrote (RGW keeps the old
    // version, locked; a plain GET returns the new bytes).
    write_file(&lab.live("redolog").join("log"), b"s4\n");
    let s4 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    let a4 = json(&lab.ok(pri, &["archive", "--json"]));
    assert_eq!(written(&a4), std::slice::from_ref(&s4));
    let ix: serde_json::Value = serde_json::from_slice(
        &bucket
            .get_bounded(&format!("{prefix}/sets/{s4}/index.json"), 1 << 20)
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let part = format!("{prefix}/{}", ix["parts"][0]["key"].as_str().unwrap());
    let garbage = random_bytes(5, 4096);
    let (_, sha) = snapsite::wire::s3::sha256_hex(&garbage[..]).unwrap();
    bucket
        .put(
            &part,
            &mut std::io::Cursor::new(&garbage[..]),
            garbage.len() as u64,
            snapsite::wire::s3::Payload::Sha256(sha),
            false,
        )
        .unwrap();
    let o = lab.run(pri, &["verify", "--archive", "offsite"]);
    assert_exit(&o, 2);
    assert!(stdout(&o).contains(&part), "{}", both(&o));
    // A forged index (the primary may put new keys) naming a part that
    // does not exist.
    let s5 = "20991231T000000.000Z-full";
    let mut forged = ix.clone();
    forged["set_id"] = s5.into();
    forged["requires"] = serde_json::json!([s3]);
    for m in forged["members"].as_array_mut().unwrap() {
        m["snapshot"] = s5.into();
        m["base"] = s3.clone().into();
    }
    for (i, p) in forged["parts"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        p["key"] = format!("sets/{s5}/rmissing/part-{i:06}").into();
    }
    let fb = serde_json::to_vec(&forged).unwrap();
    let (_, sha) = snapsite::wire::s3::sha256_hex(&fb[..]).unwrap();
    bucket
        .put(
            &format!("{prefix}/sets/{s5}/index.json"),
            &mut std::io::Cursor::new(&fb[..]),
            fb.len() as u64,
            snapsite::wire::s3::Payload::Sha256(sha),
            false,
        )
        .unwrap();

    // Restore a fresh standby: the chain of s3 (s1 full, s2, s3).
    let dry = json(&lab.ok(
        stb,
        &[
            "restore",
            "--from",
            "offsite",
            "--set",
            &s3,
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(dry["chain"], serde_json::json!([s1, s2, s3]), "{dry}");
    assert!(lab.standby_manifests().is_empty());
    // Without the identity: refused before anything is received.
    let noid = lab.dir.path().join("stb-noid.toml");
    std::fs::write(
        &noid,
        std::fs::read_to_string(&lab.stb_cfg).unwrap() + &archive_toml(r, prefix, creds, ""),
    )
    .unwrap();
    let o = lab.run(&noid, &["restore", "--from", "offsite", "--set", &s3]);
    assert_exit(&o, 1);
    assert!(both(&o).contains("identity"), "{}", both(&o));
    let t = std::time::Instant::now();
    let rr = json(&lab.ok(
        stb,
        &["restore", "--from", "offsite", "--set", &s3, "--json"],
    ));
    eprintln!(
        "MEASURE restore of 3 sets: {:.1} s: {rr}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rr["restored"].as_array().unwrap().len(), 3, "{rr}");
    for (id, roles) in [
        (&s1, &ROLES[..]),
        (&s2, &ROLES[..]),
        (&s3, &["redolog"][..]),
    ] {
        assert!(lab.standby_manifest(id).is_some(), "{id} not committed");
        for role in roles {
            lab.assert_received_same(role, id);
        }
    }
    // The corrupted part: refused with its name, nothing of s4 committed
    // (the restorer may not list versions to look for the original).
    let o = refused(&s4, &part);
    assert!(
        both(&o).contains("its older versions cannot be read"),
        "{}",
        both(&o)
    );
    assert!(lab.standby_manifest(&s4).is_none());
    // The forged index's missing part: refused with its name.
    refused(s5, &format!("{prefix}/sets/{s5}/rmissing/part-000000"));
    lab.assert_nothing_half_received();

    // With credentials that may read older versions (the lab's owner
    // here; docs/archive.md: s3:ListBucketVersions, s3:GetObjectVersion),
    // restore reads the version of the overwritten part that matches the
    // index, and says so; a part no version of which matches is refused.
    let admin = lab.dir.path().join("admin.creds");
    std::fs::copy(r.creds.with_file_name("archive-admin.toml"), &admin).unwrap();
    sh(&["chmod", "600", admin.to_str().unwrap()]);
    let stb_v = lab.dir.path().join("stb-versions.toml");
    std::fs::write(
        &stb_v,
        std::fs::read_to_string(&lab.stb_cfg).unwrap()
            + &archive_toml(
                r,
                prefix,
                &admin,
                &format!("identity = \"{}\"", id_file.display()),
            ),
    )
    .unwrap();
    let o = lab.run(&stb_v, &["restore", "--from", "offsite", "--set", s5]);
    assert_exit(&o, 1);
    assert!(both(&o).contains("none of its 0 versions"), "{}", both(&o));
    let o = lab.run(
        &stb_v,
        &["restore", "--from", "offsite", "--set", &s4, "--json"],
    );
    assert!(o.status.success(), "{}", both(&o));
    let rr = json(&stdout(&o));
    let older = rr["restored"][0]["older_versions"].as_array().unwrap();
    assert_eq!(older.len(), 1, "{rr}");
    assert!(
        older[0].as_str().unwrap().starts_with(&format!("{part}@")),
        "{rr}"
    );
    assert!(
        both(&o).contains("its newest version does not match"),
        "{}",
        both(&o)
    );
    lab.assert_received_same("redolog", &s4);

    // failover works as usual, on the restored sets: the primary's data.
    let fo = lab.ok(stb, &["failover", "--json"]);
    eprintln!("failover: {fo}");
    for role in ["mysql", "blob", "index"] {
        assert_eq!(
            tree_digest(&lab.standby_live(role)),
            tree_digest(&lab.primary_snap(role, &s2)),
            "{role}"
        );
    }
    assert_eq!(
        tree_digest(&lab.standby_live("redolog")),
        tree_digest(&lab.primary_snap("redolog", &s4))
    );
    eprintln!("archive test: {:.1} s", al.started.elapsed().as_secs_f64());
}

/// The https path (the lab's TLS endpoint, its own CA through `ca_file`):
/// parts are PUT with `UNSIGNED-PAYLOAD` (the debug log says so for each),
/// `verify` reads every part back against the index and a fresh standby
/// is restored from it with the data of the primary. Without `ca_file` the
/// lab's certificate is refused; a `ca_file` that is not PEM, or one on an
/// http endpoint, is an error naming the key; over http an unsigned body
/// is refused before it is sent, and nothing lands.
#[test]
fn archive_and_restore_over_https_unsigned() {
    require_real!();
    let Some(al) = archive_lab_on("https", "", true, true) else {
        return;
    };
    let (r, lab, pri, stb) = (&al.r, &al.lab, &al.pri, &al.stb);
    // One small set: 1.5 MiB per volume, 1 MiB parts.
    lab.fill(31, 3 << 19);
    let s1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let o = run_snapsite(
        pri,
        &["archive", "--json"],
        &[("SNAPSITE_LOG", "snapsite=debug")],
    );
    assert!(o.status.success(), "{}", both(&o));
    let rep = json(&stdout(&o));
    assert_eq!(written(&rep), std::slice::from_ref(&s1), "{rep}");
    let log = String::from_utf8_lossy(&o.stderr);
    let puts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("part PUT starts"))
        .collect();
    let parts = rep["written"][0]["parts"].as_u64().unwrap();
    assert!(parts >= 6, "{rep}");
    assert_eq!(puts.len() as u64, parts, "{log}");
    assert!(puts.iter().all(|l| l.contains("signed=false")), "{log}");
    let t = &rep["written"][0]["timing"];
    assert!(t["max_in_flight"].as_u64().unwrap() >= 1, "{rep}");
    assert!(t["put_seconds"].as_f64().unwrap() > 0.0, "{rep}");

    // verify reads every part back over https.
    let v = json(&lab.ok(pri, &["verify", "--archive", "offsite", "--json"]));
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["parts_read"], v["parts"], "{v}");

    // A fresh standby restored over https (the restorer's credentials).
    let rr = json(&lab.ok(stb, &["restore", "--from", "offsite", "--json"]));
    assert_eq!(rr["restored"].as_array().unwrap().len(), 1, "{rr}");
    for role in ROLES {
        lab.assert_received_same(role, &s1);
    }

    // The lab's CA is what makes its certificate trusted.
    let pri_text = std::fs::read_to_string(pri).unwrap();
    let (_, ca_file) = r.https.clone().unwrap();
    let ca_line = format!("ca_file = \"{}\"", ca_file.display());
    assert!(pri_text.contains(&ca_line));
    let variant = |name: &str, text: String| {
        let p = lab.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let no_ca = variant("pri-no-ca.toml", pri_text.replace(&ca_line, ""));
    let o = lab.run(&no_ca, &["archive", "--dry-run"]);
    assert_exit(&o, 1);
    assert!(
        both(&o).to_lowercase().contains("certificate"),
        "{}",
        both(&o)
    );
    let not_pem = lab.dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "just text\n").unwrap();
    let bad_ca = variant(
        "pri-bad-ca.toml",
        pri_text.replace(&ca_line, &format!("ca_file = \"{}\"", not_pem.display())),
    );
    let o = lab.run(&bad_ca, &["archive", "--dry-run"]);
    assert_exit(&o, 1);
    assert!(
        both(&o).contains("ca_file") && both(&o).contains(not_pem.to_str().unwrap()),
        "{}",
        both(&o)
    );
    let http_ca = variant(
        "pri-http-ca.toml",
        pri_text.replace(&r.endpoint, &r.endpoint.replacen("https://", "http://", 1)),
    );
    let o = lab.run(&http_ca, &["archive", "--dry-run"]);
    assert_exit(&o, 1);
    assert!(
        both(&o).contains("ca_file") && both(&o).contains("is http"),
        "{}",
        both(&o)
    );

    // Over the lab's http endpoint an unsigned body is refused before it
    // is sent: nothing lands.
    let (http, _guard) = rgw().unwrap();
    let bucket = http.bucket(&al.creds);
    assert!(!bucket.is_https());
    let k = format!("{}/unsigned-over-http", al.prefix);
    let e = bucket
        .put(
            &k,
            &mut std::io::Cursor::new(&b"body"[..]),
            4,
            snapsite::wire::s3::Payload::Unsigned,
            true,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("unsigned payload"), "{e}");
    assert_eq!(bucket.head(&k).unwrap(), None);
    eprintln!(
        "archive over https test: {:.1} s",
        al.started.elapsed().as_secs_f64()
    );
}

/// An HTTP/1.1 proxy to the lab's http endpoint that changes one byte of
/// every request body longer than `2 * at` (byte `at` of the body: inside
/// a chunk's data, past the first three 64 KiB chunks) in transit, and
/// counts the bodies it changed. Requests are framed by their
/// `Content-Length` (what this client sends), so every PUT of a part is
/// changed, whichever keep-alive connection carries it.
struct Tamper {
    url: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Tamper {
    fn start(upstream: &str, at: usize) -> Tamper {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::net::{Shutdown, TcpListener, TcpStream};
        use std::sync::atomic::Ordering::Relaxed;
        let up = upstream.trim_start_matches("http://").to_string();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { break };
                let Ok(mut s) = TcpStream::connect(&up) else {
                    continue;
                };
                let (mut c2, mut s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(Shutdown::Both);
                });
                let h = h.clone();
                std::thread::spawn(move || {
                    let mut c = BufReader::new(c);
                    'requests: loop {
                        let mut head = Vec::new();
                        while !head.ends_with(b"\r\n\r\n") {
                            match c.read_until(b'\n', &mut head) {
                                Ok(0) | Err(_) => break 'requests,
                                Ok(_) => {}
                            }
                        }
                        let len: usize = String::from_utf8_lossy(&head)
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if s.write_all(&head).is_err() {
                            break;
                        }
                        let mut body = vec![0u8; len];
                        if c.read_exact(&mut body).is_err() {
                            // A body cut short (a PUT the client stopped).
                            break;
                        }
                        if len > 2 * at {
                            body[at] ^= 0x20;
                            h.fetch_add(1, Relaxed);
                        }
                        if s.write_all(&body).is_err() {
                            break;
                        }
                    }
                    let _ = s.shutdown(Shutdown::Write);
                });
            }
        });
        Tamper { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Plaintext parts are PUT while they are produced (issue 30), over http
/// signed chunk by chunk (`aws-chunked`). Through a proxy that changes one
/// byte of each body in transit RGW refuses the chunk: the run fails
/// (set NOT archived) and nothing of it is in the bucket. Then directly:
/// every part's PUT logs `streamed=true signed=true`, the stream's last
/// part (between a quarter and a whole `chunk_size`) is cut and PUT again
/// at its length, `verify` reads every part back against the index, and
/// a fresh standby restores the primary's data.
#[test]
fn archive_streams_parts_signed_chunk_by_chunk() {
    require_real!();
    let Some(al) = archive_lab_on("stream", "\ncompression = \"none\"", false, false) else {
        return;
    };
    let (r, lab, pri, stb) = (&al.r, &al.lab, &al.pri, &al.stb);
    // 4 volumes of 1.6 MiB in 1 MiB parts: the last part is a few
    // hundred KiB, more than a quarter part.
    lab.fill(41, 1_677_722);
    let s1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();

    let proxy = Tamper::start(&r.endpoint, 200_000);
    let via = lab.dir.path().join("pri-tampered.toml");
    std::fs::write(
        &via,
        std::fs::read_to_string(pri)
            .unwrap()
            .replace(&r.endpoint, &proxy.url)
            + "retries = 0\n",
    )
    .unwrap();
    let o = lab.run(&via, &["archive", "--json"]);
    let out = both(&o);
    assert!(!o.status.success(), "{out}");
    assert!(proxy.hits() >= 1, "{out}");
    assert!(
        out.contains("NOT archived") && out.contains("part-"),
        "{out}"
    );
    eprintln!("tampered archive: {}", out.trim());
    let bucket = r.bucket(&al.creds);
    let stored = bucket.list(&format!("{}/sets/", al.prefix)).unwrap();
    assert!(stored.is_empty(), "tampered parts stored: {stored:?}");
    eprintln!("tampered bodies: {}", proxy.hits());

    let o = run_snapsite(
        pri,
        &["archive", "--json"],
        &[("SNAPSITE_LOG", "snapsite=debug")],
    );
    assert!(o.status.success(), "{}", both(&o));
    let rep = json(&stdout(&o));
    assert_eq!(written(&rep), std::slice::from_ref(&s1), "{rep}");
    assert_eq!(rep["encrypted"], false, "{rep}");
    let set = &rep["written"][0];
    let log = String::from_utf8_lossy(&o.stderr);
    let puts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("part PUT starts"))
        .collect();
    let parts = set["parts"].as_u64().unwrap();
    assert!(parts >= 6, "{rep}");
    assert_eq!(puts.len() as u64, parts, "{log}");
    assert!(
        puts.iter()
            .all(|l| l.contains("signed=true") && l.contains("streamed=true")),
        "{log}"
    );
    let t = &set["timing"];
    assert_eq!(t["streamed_parts"].as_u64(), Some(parts), "{rep}");
    // The last part is more than a quarter part and less than a whole
    // one: its PUT starts with `chunk_size` unless the part was sealed
    // first (a race with the production: either is right). If it started,
    // it was cut and made again at the part's length: at most one a set,
    // logged, and what verify and restore read below is that PUT's.
    let chunk = 1u64 << 20;
    let rest = set["stored_bytes"].as_u64().unwrap() % chunk;
    assert!((chunk / 4..chunk).contains(&rest), "{rep}");
    let restarted = t["restarted_parts"].as_u64().unwrap();
    assert!(restarted <= 1, "{rep}");
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("part ended short"))
            .count() as u64,
        restarted,
        "{log}"
    );
    eprintln!("archive streaming test: last part restarted: {restarted}");

    let v = json(&lab.ok(pri, &["verify", "--archive", "offsite", "--json"]));
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["parts_read"], v["parts"], "{v}");
    let rr = json(&lab.ok(stb, &["restore", "--from", "offsite", "--json"]));
    assert_eq!(rr["restored"].as_array().unwrap().len(), 1, "{rr}");
    for role in ROLES {
        lab.assert_received_same(role, &s1);
    }
    eprintln!(
        "archive streaming test: {:.1} s",
        al.started.elapsed().as_secs_f64()
    );
}

/// The crash cells of `archive` and `restore` (base::failpoint), against
/// the real RGW: each verb is stopped dead (exit 86) at each of its
/// failpoints, then rerun. After an archive crash the set is not in the
/// archive (no index), the journal names it, and the rerun writes it
/// re-sending no part the bucket holds; after a restore crash no set is
/// presented (no manifest, no receive marker left once rerun), and the
/// rerun (without `--set`: the journal names the target) keeps the parts
/// it had checked. `the_archive_failpoints_have_cells_here` checks that
/// every `archive.*` and `restore.*` failpoint has a cell in this test.
#[test]
fn archive_and_restore_resume_after_a_crash() {
    require_real!();
    let Some(al) = archive_lab("crash", "") else {
        return;
    };
    let (lab, pri, stb) = (&al.lab, &al.pri, &al.stb);
    let bucket = al.r.bucket(&al.creds);
    let index_of = |s: &str| format!("{}/sets/{s}/index.json", al.prefix);
    let crash = |cfg: &Path, fp: &str, args: &[&str]| {
        let o = run_snapsite(cfg, args, &[("SNAPSITE_FAILPOINT", fp)]);
        assert_exit(&o, 86);
        assert!(both(&o).contains(fp), "{}", both(&o));
    };
    let state_of = |cfg: &Path| -> PathBuf {
        let text = std::fs::read_to_string(cfg).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("state_dir"))
            .expect("state_dir in the config");
        PathBuf::from(line.split('"').nth(1).unwrap())
    };
    let pri_state = state_of(pri);
    let stb_state = state_of(stb);

    // archive.after_part: a full set of ~8 parts, stopped after two.
    lab.fill(3, 2 << 20);
    let s1 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    crash(pri, "archive.after_part", &["archive"]);
    assert_eq!(bucket.head(&index_of(&s1)).unwrap(), None, "no index");
    assert!(pri_state.join("journal-archive-offsite.json").exists());
    let o = lab.run(pri, &["status"]);
    assert!(
        both(&o).contains("archive-offsite") && both(&o).contains("snapsite archive --to offsite"),
        "{}",
        both(&o)
    );
    let a = json(&lab.ok(pri, &["archive", "--json"]));
    assert_eq!(written(&a), std::slice::from_ref(&s1), "{a}");
    let reused = a["written"][0]["reused_parts"].as_u64().unwrap();
    let parts = a["written"][0]["parts"].as_u64().unwrap();
    assert!(reused >= 2 && reused < parts, "{a}");
    assert!(!pri_state.join("journal-archive-offsite.json").exists());

    // archive.before_index: every part is in; the rerun sends none again.
    write_file(&lab.live("mysql").join("two"), &random_bytes(8, 1 << 20));
    let s2 = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    crash(pri, "archive.before_index", &["archive"]);
    assert_eq!(bucket.head(&index_of(&s2)).unwrap(), None, "no index");
    let a = json(&lab.ok(pri, &["archive", "--json"]));
    assert_eq!(written(&a), std::slice::from_ref(&s2), "{a}");
    assert_eq!(
        a["written"][0]["reused_parts"], a["written"][0]["parts"],
        "{a}"
    );
    let v = json(&lab.ok(pri, &["verify", "--archive", "offsite", "--json"]));
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");

    // restore.mid_download: s1's parts partly here, nothing presented.
    crash(
        stb,
        "restore.mid_download",
        &["restore", "--from", "offsite", "--set", &s2],
    );
    assert!(lab.standby_manifests().is_empty());
    assert!(stb_state.join("journal-restore.json").exists());
    // The rerun names no set: the journal's target is finished.
    let rr = json(&lab.ok(stb, &["restore", "--from", "offsite", "--json"]));
    assert_eq!(rr["target"], s2.as_str(), "{rr}");
    assert!(
        rr["restored"][0]["resumed_parts"].as_u64().unwrap() >= 2,
        "{rr}"
    );
    assert!(!stb_state.join("journal-restore.json").exists());
    for role in ROLES {
        lab.assert_received_same(role, &s1);
        lab.assert_received_same(role, &s2);
    }

    // restore.before_receive, then serve.before_manifest (serve's commit).
    lab.append_redolog("s3");
    let s3 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    lab.append_redolog("s4");
    let s4 = lab.snapshot(true)["id"].as_str().unwrap().to_string();
    lab.ok(pri, &["archive"]);
    crash(
        stb,
        "restore.before_receive",
        &["restore", "--from", "offsite", "--set", &s3],
    );
    assert!(lab.standby_manifest(&s3).is_none());
    let rr = json(&lab.ok(
        stb,
        &["restore", "--from", "offsite", "--set", &s3, "--json"],
    ));
    assert_eq!(
        rr["restored"][0]["resumed_parts"], rr["restored"][0]["parts"],
        "{rr}"
    );
    crash(
        stb,
        "serve.before_manifest",
        &["restore", "--from", "offsite", "--set", &s4],
    );
    assert!(
        lab.standby_manifest(&s4).is_none(),
        "nothing half-restored is a set"
    );
    let rr = json(&lab.ok(stb, &["restore", "--from", "offsite", "--json"]));
    assert_eq!(rr["target"], s4.as_str(), "{rr}");
    for s in [&s3, &s4] {
        assert!(lab.standby_manifest(s).is_some(), "{s}");
        lab.assert_received_same("redolog", s);
    }
    lab.assert_nothing_half_received();
    assert!(!stb_state.join("journal-restore.json").exists());
    eprintln!(
        "archive crash cells: {:.1} s",
        al.started.elapsed().as_secs_f64()
    );
}

/// Every `archive.*` and `restore.*` failpoint has its cell in
/// `archive_and_restore_resume_after_a_crash` (they need the RGW lab, so
/// tests/crash_matrix.rs leaves them to this file).
#[test]
fn the_archive_failpoints_have_cells_here() {
    let me =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/archive.rs"))
            .unwrap();
    let missing: Vec<&str> = snapsite::base::failpoint::ALL
        .iter()
        .map(|f| f.name)
        .filter(|n| n.starts_with("archive.") || n.starts_with("restore."))
        .filter(|n| {
            // `crash(&cfg, "NAME", ...)`, however rustfmt lays it out.
            !me.split("crash(").skip(1).any(|c| {
                c.split_once(',')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(&format!("\"{n}\"")))
            })
        })
        .collect();
    assert!(missing.is_empty(), "no crash cell for {missing:?}");
}

/// `snapsite check` judges the archive bucket with this site's
/// credentials, against the real RGW: the lab's 1-day COMPLIANCE lock is
/// enough when the retention needs a day, a problem naming both numbers
/// when `[retention]` keeps sets for 30 days; the primary's credentials
/// cannot delete (probe refused), the pruner's can (a problem).
#[test]
fn check_judges_the_bucket_lock_and_the_credentials() {
    require_real!();
    let (r, _rgwlab) = match rgw() {
        Ok(r) => r,
        Err(why) => {
            skip_because("archive check", Some(format!("no RGW lab: {why}")));
            return;
        }
    };
    let lab = Lab::with_roles(&["redolog"], "1G", "[\"true\"]");
    let copy = |from: &Path, name: &str| {
        let p = lab.dir.path().join(name);
        std::fs::copy(from, &p).unwrap();
        sh(&["chmod", "600", p.to_str().unwrap()]);
        p
    };
    let primary = copy(&r.creds, "primary.creds");
    let pruner_src = r.creds.with_file_name("pruner.toml");
    let base = std::fs::read_to_string(&lab.pri_cfg).unwrap();
    let cfg = |name: &str, creds: &Path, extra: &str| {
        let p = lab.dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &p,
            format!("{base}{extra}") + &archive_toml(&r, "check", creds, ""),
        )
        .unwrap();
        p
    };
    let archive_lines = |o: &std::process::Output| {
        stdout(o)
            .lines()
            .filter(|l| l.starts_with("archive"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // A day is needed (full sets every hour, no [retention]): fine.
    let o = lab.run(
        &cfg(
            "day",
            &primary,
            "\n[schedule]\nfull_set_interval = \"1h\"\n",
        ),
        &["check"],
    );
    let lines = archive_lines(&o);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Object Lock COMPLIANCE, 1 days (needs 1)")
                && !l.contains("PROBLEM")),
        "{}",
        both(&o)
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("cannot delete (probe refused)")),
        "{}",
        both(&o)
    );
    assert!(!lines.iter().any(|l| l.contains("PROBLEM")), "{lines:#?}");
    // 30 days kept, full sets daily: 31 days needed, the lock has 1.
    let o = lab.run(
        &cfg(
            "month",
            &primary,
            "\n[schedule]\nfull_set_interval = \"1d\"\n\n[retention]\ngrid = \"30x1d\"\n",
        ),
        &["check"],
    );
    assert!(!o.status.success(), "{}", both(&o));
    let lines = archive_lines(&o);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("PROBLEM") && l.contains("1 days, the archive needs 31")),
        "{}",
        both(&o)
    );
    // The pruner's credentials on a site: they can delete.
    assert!(pruner_src.exists(), "{}", pruner_src.display());
    {
        let pruner = copy(&pruner_src, "pruner.creds");
        let o = lab.run(
            &cfg(
                "pruner",
                &pruner,
                "\n[schedule]\nfull_set_interval = \"1h\"\n",
            ),
            &["check"],
        );
        assert!(!o.status.success(), "{}", both(&o));
        assert!(
            archive_lines(&o)
                .iter()
                .any(|l| l.contains("PROBLEM") && l.contains("can delete objects")),
            "{}",
            both(&o)
        );
    }
}

/// Peak RSS (KiB) and seconds of one snapsite command, via /usr/bin/time.
fn timed(cfg: &Path, args: &[&str]) -> (u64, f64, String) {
    let (rss, secs, _, out) = timed_with(snapsite_exe(), cfg, args);
    (rss, secs, out)
}

/// [`timed`] of the snapsite binary `exe`: (peak RSS KiB, seconds, CPU
/// seconds (user + system, waited-for children included), stdout).
fn timed_with(exe: &str, cfg: &Path, args: &[&str]) -> (u64, f64, f64, String) {
    let t = std::time::Instant::now();
    let o = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("MAXRSS=%M CPU=%U+%S")
        .args(
            std::env::var("SNAPSITE_ARCHIVE_BENCH_WRAP")
                .map(|w| w.split(' ').map(String::from).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .arg(exe)
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", both(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find_map(|l| l.strip_prefix("MAXRSS=")).unwrap();
    let (rss, cpu) = line.split_once(" CPU=").unwrap();
    let rss = rss.trim().parse().unwrap();
    let cpu: f64 = cpu
        .trim()
        .split('+')
        .map(|x| x.parse::<f64>().unwrap())
        .sum();
    if std::env::var("SNAPSITE_ARCHIVE_BENCH").is_ok() {
        eprintln!("MEASURE cpu {} {cpu:.2} s in {secs:.2} s", args[0]);
    }
    (rss, secs, cpu, stdout(&o))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU seconds (user + system) the lab's daemons (mon, mgr, osd, rgw)
/// have used so far: read from /proc by the PIDs the lab recorded.
fn lab_cpu(state: &Path) -> f64 {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    ["mon", "mgr", "osd", "rgw"]
        .iter()
        .filter_map(|d| std::fs::read_to_string(state.join(format!("run/{d}.pid"))).ok())
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok())
        .map(|stat| {
            // After the command's `)`: state is field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split(' ').collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tick
        })
        .sum()
}

/// Key `k` (`access_key`, `secret_key`) of a credentials file.
fn cred(creds: &Path, k: &str) -> String {
    std::fs::read_to_string(creds)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

/// `curl --aws-sigv4` as the primary: the raw transfer the archive is
/// measured against (UNSIGNED-PAYLOAD, one stream, as `curl -T` sends).
fn curl_s3(r: &Rgw, creds: &Path, args: &[&str], key: &str) -> f64 {
    let val = |k: &str| cred(creds, k);
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "-f", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", r.region))
        .arg("--user")
        .arg(format!("{}:{}", val("access_key"), val("secret_key")))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args);
    if let Some((endpoint, ca)) = &r.https
        && r.endpoint == *endpoint
    {
        c.arg("--cacert").arg(ca);
    }
    let t = std::time::Instant::now();
    let o = c
        .arg(format!("{}/{}/{key}", r.endpoint, r.bucket))
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", both(&o));
    secs
}

/// The S3 tools the issue names as the yardstick, when installed: `rclone
/// copyto` (multipart, 4 parts in flight) and `s3cmd put` (multipart, one
/// at a time), each with its own defaults (over http both sign the
/// payload's SHA-256, as snapsite's chunks are signed; over https rclone
/// sends it unsigned). `None` when the tool is not on PATH.
fn tool_put(tool: &str, r: &Rgw, creds: &Path, file: &Path, key: &str) -> Option<f64> {
    let have = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        return None;
    }
    let val = |k: &str| cred(creds, k);
    let tls = r
        .https
        .as_ref()
        .filter(|(endpoint, _)| r.endpoint == *endpoint)
        .map(|(_, ca)| ca.clone());
    let mut c = std::process::Command::new(tool);
    // rclone reads AWS_CA_BUNDLE and refuses its own transport with it.
    c.env_remove("AWS_CA_BUNDLE");
    if tool == "rclone" {
        c.envs([
            ("RCLONE_CONFIG_LAB_TYPE", "s3".to_string()),
            ("RCLONE_CONFIG_LAB_PROVIDER", "Ceph".to_string()),
            ("RCLONE_CONFIG_LAB_ACCESS_KEY_ID", val("access_key")),
            ("RCLONE_CONFIG_LAB_SECRET_ACCESS_KEY", val("secret_key")),
            ("RCLONE_CONFIG_LAB_ENDPOINT", r.endpoint.clone()),
            ("RCLONE_CONFIG_LAB_REGION", r.region.clone()),
        ])
        .args(["--config", "/dev/null", "-q", "--s3-no-check-bucket"]);
        if let Some(ca) = &tls {
            c.arg("--ca-cert").arg(ca);
        }
        c.arg("copyto")
            .arg(file)
            .arg(format!("lab:{}/{key}", r.bucket));
    } else {
        let host = r
            .endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .to_string();
        c.args(["-c", "/dev/null", "--no-progress", "--region"])
            .arg(&r.region)
            .arg(format!("--access_key={}", val("access_key")))
            .arg(format!("--secret_key={}", val("secret_key")))
            .arg(format!("--host={host}"))
            .arg(format!("--host-bucket={host}"));
        match &tls {
            Some(ca) => c.arg("--ssl").arg(format!("--ca-certs={}", ca.display())),
            None => c.arg("--no-ssl"),
        };
        c.arg("put")
            .arg(file)
            .arg(format!("s3://{}/{key}", r.bucket));
    }
    let t = std::time::Instant::now();
    let o = c.output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{tool}: {}", both(&o));
    Some(secs)
}

/// scripts/bench-archive (issue 30's measures; long, so only with
/// SNAPSITE_ARCHIVE_BENCH=1; the numbers are in docs/archive.md):
/// - throughput: `snapsite archive` of a set of BIG MiB (random, so
///   incompressible; no compression, no encryption, then with age) with
///   each of `UPLOADS` PUTs in flight (and, with `BEFORE=BINARY`, that
///   snapsite binary too) against curl's PUT of the same bytes to the same
///   RGW, in turns, medians of ROUNDS each; each archive's CPU seconds, the
///   lab's CPU seconds meanwhile, and where the write waited (`timing`);
/// - restore: `snapsite restore` of that set onto a standby (and with
///   `BEFORE`'s binary) against curl's GET of the same bytes into a file
///   (medians of ROUNDS; each restore onto a standby of its own);
/// - peak RSS of archive and restore at SMALL and BIG MiB: constant.
///
/// `HTTPS=1`: all of it over the lab's https endpoint (parts unsigned).
#[test]
fn archive_throughput_and_memory() {
    if std::env::var("SNAPSITE_ARCHIVE_BENCH").ok().as_deref() != Some("1") {
        eprintln!("SKIP archive_throughput_and_memory: set SNAPSITE_ARCHIVE_BENCH=1");
        return;
    }
    require_real!();
    let (mut r, _rgwlab) = rgw().expect("an RGW lab");
    let state = _rgwlab
        .as_ref()
        .map(|l| PathBuf::from(l.get("RGWLAB_STATE")))
        .or_else(|| std::env::var("RGWLAB_STATE").ok().map(PathBuf::from));
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mib = env("SNAPSITE_ARCHIVE_BENCH_MIB", 1024);
    let small_mib = env("SNAPSITE_ARCHIVE_BENCH_SMALL_MIB", 64);
    let rounds = env("SNAPSITE_ARCHIVE_BENCH_ROUNDS", 3).max(1);
    let chunk = std::env::var("SNAPSITE_ARCHIVE_BENCH_CHUNK").unwrap_or_else(|_| "64MiB".into());
    // Each contender: `UPLOADS` or `UPLOADS/CHUNK` (e.g. `4/16MiB`).
    let uploads: Vec<(usize, String)> = std::env::var("SNAPSITE_ARCHIVE_BENCH_UPLOADS")
        .unwrap_or_else(|_| "4 2".into())
        .split_whitespace()
        .map(|u| match u.split_once('/') {
            Some((n, c)) => (n.parse().unwrap(), c.to_string()),
            None => (u.parse().unwrap(), chunk.clone()),
        })
        .collect();
    let before = std::env::var("SNAPSITE_ARCHIVE_BENCH_BEFORE")
        .ok()
        .filter(|b| !b.is_empty());
    let mut extra_tls = String::new();
    if std::env::var("SNAPSITE_ARCHIVE_BENCH_HTTPS")
        .ok()
        .as_deref()
        == Some("1")
    {
        let (endpoint, ca) = r.https.clone().expect("a lab with https");
        r.endpoint = endpoint;
        extra_tls = format!("\nca_file = \"{}\"", ca.display());
    }
    let restores = 1 + usize::from(before.is_some());
    let fs_gib = ((mib * (rounds * (restores + 1) + 2)).div_ceil(1024) + 2).to_string() + "G";
    let lab = Lab::with_roles(&["redolog"], &fs_gib, "[\"true\"]");
    let creds = lab.dir.path().join("primary.creds");
    std::fs::copy(&r.creds, &creds).unwrap();
    sh(&["chmod", "600", creds.to_str().unwrap()]);
    let id_file = lab.dir.path().join("archive.age");
    sh(&["age-keygen", "-o", id_file.to_str().unwrap()]);
    let recipient = sh(&["age-keygen", "-y", id_file.to_str().unwrap()])
        .trim()
        .to_string();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let cfg_chunk = |base: &Path, name: &str, extra: &str, chunk: &str| {
        let p = lab.dir.path().join(format!("{name}.toml"));
        let body = archive_toml(
            &r,
            &format!("bench/{stamp}/{name}"),
            &creds,
            &format!("{extra}{extra_tls}"),
        )
        .replace(
            "chunk_size = \"1MiB\"",
            &format!("chunk_size = \"{chunk}\""),
        );
        std::fs::write(&p, std::fs::read_to_string(base).unwrap() + &body).unwrap();
        p
    };
    let cfg = |base: &Path, name: &str, extra: &str| cfg_chunk(base, name, extra, &chunk);
    // The small set first.
    write_file(
        &lab.live("redolog").join("a"),
        &random_bytes(1, small_mib << 20),
    );
    let small_id = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let small = cfg(&lab.pri_cfg, "small", "");
    let (rss_small, s_small, _) = timed(&small, &["archive", "--set", &small_id]);
    std::fs::remove_file(lab.live("redolog").join("a")).unwrap();
    let data = random_bytes(2, mib << 20);
    write_file(&lab.live("redolog").join("a"), &data);
    let big = lab.snapshot(false)["id"].as_str().unwrap().to_string();
    let file = lab.dir.path().join("blob");
    std::fs::write(&file, &data).unwrap();
    drop(data);
    sh(&["sync"]);
    // The contenders: this snapsite with each `uploads`, then BEFORE's.
    let mut who: Vec<(String, &str, String, String)> = uploads
        .iter()
        .map(|(u, c)| {
            (
                format!("uploads={u} chunk={c}"),
                snapsite_exe(),
                format!("uploads = {u}"),
                c.clone(),
            )
        })
        .collect();
    if let Some(b) = &before {
        who.push((
            format!("before chunk={chunk}"),
            b.as_str(),
            String::new(),
            chunk.clone(),
        ));
    }
    // Rounds take turns (each contender, then curl), so that load drifts
    // hit all of them.
    let mut times: Vec<Vec<f64>> = vec![vec![]; who.len()];
    let (mut t_age, mut t_put, mut rss_big) = (vec![], vec![], 0);
    const TOOLS: [&str; 2] = ["rclone", "s3cmd"];
    let mut t_tools: Vec<Vec<f64>> = vec![vec![]; TOOLS.len()];
    for i in 0..rounds {
        // The production's floor: `btrfs send` of the snapshot, alone.
        let t = std::time::Instant::now();
        let send = std::process::Command::new("btrfs")
            .args(["-q", "send"])
            .arg(lab.primary_snap("redolog", &big))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(send.success());
        eprintln!(
            "MEASURE round {i}: btrfs send > /dev/null {:.2} s",
            t.elapsed().as_secs_f64()
        );
        for (w, (label, exe, extra, chunk)) in who.iter().enumerate() {
            // Each prefix is empty: `--set` sends the big set in full.
            let c = cfg_chunk(&lab.pri_cfg, &format!("plain{i}-{w}"), extra, chunk);
            let lab0 = state.as_deref().map(lab_cpu);
            let (rss, s, cpu, out) = timed_with(exe, &c, &["archive", "--set", &big, "--json"]);
            let lab_s = state.as_deref().map(lab_cpu).zip(lab0).map(|(b, a)| b - a);
            rss_big = rss_big.max(rss);
            times[w].push(s);
            let t = &json(&out)["written"][0]["timing"];
            eprintln!(
                "MEASURE round {i} archive {label}: {s:.2} s, cpu {cpu:.2} s, lab cpu {} s; timing {}",
                lab_s.map_or("?".into(), |l| format!("{l:.2}")),
                if t.is_null() {
                    "-".into()
                } else {
                    t.to_string()
                }
            );
        }
        // With age once (the lab's disk holds about 9 sets of 1 GiB).
        if i == 0 {
            let aged = cfg(
                &lab.pri_cfg,
                "age0",
                &format!("recipients = [\"{recipient}\"]"),
            );
            t_age.push(timed(&aged, &["archive", "--set", &big]).1);
        }
        let lab0 = state.as_deref().map(lab_cpu);
        t_put.push(curl_s3(
            &r,
            &creds,
            &["-T", file.to_str().unwrap()],
            &format!("bench/{stamp}/curl-{i}"),
        ));
        let lab_s = state.as_deref().map(lab_cpu).zip(lab0).map(|(b, a)| b - a);
        eprintln!(
            "MEASURE round {i}: curl PUT {:.2} s, lab cpu {} s",
            t_put[i],
            lab_s.map_or("?".into(), |l| format!("{l:.2}"))
        );
        for (n, tool) in TOOLS.iter().enumerate() {
            let lab0 = state.as_deref().map(lab_cpu);
            let key = format!("bench/{stamp}/{tool}-{i}");
            if let Some(s) = tool_put(tool, &r, &creds, &file, &key) {
                let lab_s = state.as_deref().map(lab_cpu).zip(lab0).map(|(b, a)| b - a);
                eprintln!(
                    "MEASURE round {i}: {tool} PUT {s:.2} s, lab cpu {} s",
                    lab_s.map_or("?".into(), |l| format!("{l:.2}"))
                );
                t_tools[n].push(s);
            }
        }
    }
    let c = median(t_put);
    // The yardsticks the issue names (rclone, s3cmd), when installed.
    let tools: Vec<(&str, f64)> = TOOLS
        .iter()
        .zip(&t_tools)
        .filter(|(_, t)| !t.is_empty())
        .map(|(tool, t)| (*tool, median(t.clone())))
        .collect();
    for (w, (label, _, _, _)) in who.iter().enumerate() {
        let a = median(times[w].clone());
        eprintln!(
            "MEASURE archive {label} {mib} MiB (median of {rounds}): {a:.2} s = {:.0} MiB/s (rounds {:.2?}); curl PUT {c:.2} s = {:.0} MiB/s; archive/curl throughput ratio {:.2}",
            mib as f64 / a,
            times[w],
            mib as f64 / c,
            c / a
        );
        for (tool, t) in &tools {
            eprintln!(
                "MEASURE archive {label} {mib} MiB against {tool} PUT {t:.2} s = {:.0} MiB/s: archive/{tool} throughput ratio {:.2}",
                mib as f64 / t,
                t / a
            );
        }
    }
    let g = median(t_age);
    eprintln!(
        "MEASURE archive with age (once, uploads default): {g:.2} s = {:.0} MiB/s; ratio to curl {:.2}",
        mib as f64 / g,
        c / g
    );
    eprintln!(
        "MEASURE archive peak RSS: {small_mib} MiB set {rss_small} KiB ({s_small:.2} s), {mib} MiB set {rss_big} KiB"
    );
    // Restore: the standby reads the plaintext archive of round 0's first
    // contender. Each restore goes onto a standby of its own (state and
    // snapshot dirs), on the same filesystem.
    let stb = |name: &str, n: usize| {
        let p = lab.dir.path().join(format!("stb-{name}-{n}.toml"));
        let body = archive_toml(&r, &format!("bench/{stamp}/{name}"), &creds, &extra_tls);
        let mut base = std::fs::read_to_string(&lab.stb_cfg).unwrap();
        if n > 0 {
            base = base
                .replace("state-stb", &format!("state-stb-r{n}"))
                .replace("/recv/", &format!("/recv-r{n}/"));
        }
        std::fs::write(&p, base + &body).unwrap();
        p
    };
    let (rss_rs, _, _) = timed(&stb("small", 0), &["restore", "--from", "offsite"]);
    let mut restorers: Vec<(&str, &str)> = vec![("this", snapsite_exe())];
    if let Some(b) = &before {
        restorers.push(("before", b.as_str()));
    }
    let mut t_restore: Vec<Vec<f64>> = vec![vec![]; restorers.len()];
    let (mut t_get, mut t_raw, mut rss_rb) = (vec![], vec![], 0);
    let got = lab.dir.path().join("got");
    for i in 0..rounds {
        for (w, (label, exe)) in restorers.iter().enumerate() {
            let n = i * restorers.len() + w;
            let (rss, s, cpu, out) = timed_with(
                exe,
                &stb("plain0-0", n),
                &["restore", "--from", "offsite", "--json"],
            );
            assert!(out.contains(&big), "{out}");
            let rep = json(&out);
            let phase = |k: &str| {
                rep["restored"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s[k].as_f64().unwrap_or(f64::NAN))
                    .sum::<f64>()
            };
            eprintln!(
                "MEASURE restore round {i} {label}: {s:.2} s, cpu {cpu:.2} s; download {:.2} s, receive {:.2} s",
                phase("download_seconds"),
                phase("receive_seconds")
            );
            if w == 0 {
                rss_rb = rss_rb.max(rss);
            }
            t_restore[w].push(s);
        }
        let _ = std::fs::remove_file(&got);
        t_get.push(curl_s3(
            &r,
            &creds,
            &["-o", got.to_str().unwrap()],
            &format!("bench/{stamp}/curl-{i}"),
        ));
        assert_eq!(std::fs::metadata(&got).unwrap().len(), (mib as u64) << 20);
        // The receive alone: `btrfs send | btrfs receive` of the same
        // snapshot onto the standby's filesystem (no archive, no serve).
        let into = lab.stb.path(&format!("raw-recv-{i}"));
        std::fs::create_dir_all(&into).unwrap();
        let t = std::time::Instant::now();
        let mut send = std::process::Command::new("btrfs")
            .args(["-q", "send"])
            .arg(lab.primary_snap("redolog", &big))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let recv = std::process::Command::new("btrfs")
            .args(["-q", "receive"])
            .arg(&into)
            .stdin(send.stdout.take().unwrap())
            .status()
            .unwrap();
        assert!(send.wait().unwrap().success() && recv.success());
        t_raw.push(t.elapsed().as_secs_f64());
        eprintln!(
            "MEASURE restore round {i}: curl GET {:.2} s, btrfs send | receive {:.2} s",
            t_get[i], t_raw[i]
        );
    }
    let (gt, raw) = (median(t_get), median(t_raw));
    for (w, (label, _)) in restorers.iter().enumerate() {
        let rt = median(t_restore[w].clone());
        eprintln!(
            "MEASURE restore {label} {mib} MiB (median of {rounds}): {rt:.2} s = {:.0} MiB/s (rounds {:.2?}); curl GET {gt:.2} s = {:.0} MiB/s; restore/download time {:.2}; btrfs send | receive {raw:.2} s, restore/that {:.2}",
            mib as f64 / rt,
            t_restore[w],
            mib as f64 / gt,
            rt / gt,
            rt / raw
        );
    }
    eprintln!(
        "MEASURE restore peak RSS: {small_mib} MiB set {rss_rs} KiB, {mib} MiB set {rss_rb} KiB"
    );
    lab.assert_received_same("redolog", &big);
    // Memory does not grow with the set.
    assert!(
        rss_big < rss_small * 2,
        "archive {rss_small} -> {rss_big} KiB"
    );
    assert!(rss_rb < rss_rs * 2, "restore {rss_rs} -> {rss_rb} KiB");
}
