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

use common::rgwlab::{self, Shared as RgwLab};
use common::*;
use snapsite::wire::s3::{Bucket, Credentials};

struct Rgw {
    endpoint: String,
    bucket: String,
    region: String,
    creds: PathBuf,
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
        return Ok((
            Rgw {
                endpoint,
                bucket,
                region,
                creds,
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
    };
    Ok((r, Some(lab)))
}

fn archive_toml(r: &Rgw, prefix: &str, creds: &Path, extra: &str) -> String {
    format!(
        "\n[[archive]]\nname = \"offsite\"\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\nprefix = \"{prefix}\"\ncredentials = \"{}\"\nchunk_size = \"1MiB\"\n{extra}\n",
        r.endpoint,
        r.bucket,
        r.region,
        creds.display()
    )
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn written(report: &serde_json::Value) -> Vec<String> {
    report["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["set_id"].as_str().unwrap().to_string())
        .collect()
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
    let started = std::time::Instant::now();
    let (r, _rgwlab) = match rgw() {
        Ok(r) => r,
        Err(why) => {
            skip_because("archive", Some(format!("no RGW lab: {why}")));
            return None;
        }
    };
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
        &format!("recipients = [\"{recipient}\"]{pri_extra}"),
    );
    let stb = with(
        &lab.stb_cfg,
        "stb-archive.toml",
        &restorer,
        &format!("identity = \"{}\"", id_file.display()),
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
    let t = std::time::Instant::now();
    let o = std::process::Command::new("/usr/bin/time")
        .arg("-f")
        .arg("MAXRSS=%M CPU=%U+%S")
        .args(
            std::env::var("SNAPSITE_ARCHIVE_BENCH_WRAP")
                .map(|w| w.split(' ').map(String::from).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
        .arg(snapsite_exe())
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
    (rss, secs, stdout(&o))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `curl --aws-sigv4` as the primary: the raw transfer the archive is
/// measured against (UNSIGNED-PAYLOAD, one stream, as `curl -T` sends).
fn curl_s3(r: &Rgw, creds: &Path, args: &[&str], key: &str) -> f64 {
    let text = std::fs::read_to_string(creds).unwrap();
    let val = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .unwrap()
            .trim_end_matches('"')
            .to_string()
    };
    let t = std::time::Instant::now();
    let o = std::process::Command::new("curl")
        .args(["-sS", "-f", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", r.region))
        .arg("--user")
        .arg(format!("{}:{}", val("access_key"), val("secret_key")))
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
        .args(args)
        .arg(format!("{}/{}/{key}", r.endpoint, r.bucket))
        .output()
        .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(o.status.success(), "{}", both(&o));
    secs
}

/// scripts/bench-archive (issue 30's measures; long, so only with
/// SNAPSITE_ARCHIVE_BENCH=1; the numbers are in docs/archive.md):
/// - throughput: `snapsite archive` of a set of BIG MiB (random, so
///   incompressible; no compression, no encryption, then with age) against
///   curl's PUT of the same bytes to the same RGW, medians of ROUNDS each;
/// - restore: `snapsite restore` of that set onto the standby against
///   curl's GET of the same bytes into a file (medians of ROUNDS; each
///   restore round onto a standby that no longer holds the set);
/// - peak RSS of archive and restore at SMALL and BIG MiB: constant.
#[test]
fn archive_throughput_and_memory() {
    if std::env::var("SNAPSITE_ARCHIVE_BENCH").ok().as_deref() != Some("1") {
        eprintln!("SKIP archive_throughput_and_memory: set SNAPSITE_ARCHIVE_BENCH=1");
        return;
    }
    require_real!();
    let (r, _rgwlab) = rgw().expect("an RGW lab");
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let mib = env("SNAPSITE_ARCHIVE_BENCH_MIB", 1024);
    let small_mib = env("SNAPSITE_ARCHIVE_BENCH_SMALL_MIB", 64);
    let rounds = env("SNAPSITE_ARCHIVE_BENCH_ROUNDS", 3).max(1);
    let fs_gib = ((mib * (rounds + 2)).div_ceil(1024) + 2).to_string() + "G";
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
    let chunk = std::env::var("SNAPSITE_ARCHIVE_BENCH_CHUNK").unwrap_or_else(|_| "64MiB".into());
    let cfg = |base: &Path, name: &str, extra: &str| {
        let p = lab.dir.path().join(format!("{name}.toml"));
        let body = archive_toml(&r, &format!("bench/{stamp}/{name}"), &creds, extra).replace(
            "chunk_size = \"1MiB\"",
            &format!("chunk_size = \"{chunk}\""),
        );
        std::fs::write(&p, std::fs::read_to_string(base).unwrap() + &body).unwrap();
        p
    };
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
    // Rounds alternate archive and curl, so that load drifts hit both.
    let (mut t_arch, mut t_age, mut t_put, mut rss_big) = (vec![], vec![], vec![], 0);
    for i in 0..rounds {
        // Each prefix is empty: `--set` sends the big set in full.
        let plain = cfg(&lab.pri_cfg, &format!("plain{i}"), "");
        let (rss, s, _) = timed(&plain, &["archive", "--set", &big]);
        rss_big = rss_big.max(rss);
        t_arch.push(s);
        // With age once (the lab's disk holds about 9 sets of 1 GiB).
        if i == 0 {
            let aged = cfg(
                &lab.pri_cfg,
                "age0",
                &format!("recipients = [\"{recipient}\"]"),
            );
            t_age.push(timed(&aged, &["archive", "--set", &big]).1);
        }
        t_put.push(curl_s3(
            &r,
            &creds,
            &["-T", file.to_str().unwrap()],
            &format!("bench/{stamp}/curl-{i}"),
        ));
        eprintln!(
            "MEASURE round {i}: archive {:.2} s, curl PUT {:.2} s",
            t_arch[i], t_put[i]
        );
    }
    let (a, g, c) = (median(t_arch), median(t_age), median(t_put));
    eprintln!(
        "MEASURE archive {mib} MiB (median of {rounds}): {a:.2} s = {:.0} MiB/s; with age (once) {g:.2} s = {:.0} MiB/s; curl PUT {c:.2} s = {:.0} MiB/s",
        mib as f64 / a,
        mib as f64 / g,
        mib as f64 / c
    );
    eprintln!(
        "MEASURE archive/curl throughput ratio: {:.2} (plaintext), {:.2} (age)",
        c / a,
        c / g
    );
    eprintln!(
        "MEASURE archive peak RSS: {small_mib} MiB set {rss_small} KiB ({s_small:.2} s), {mib} MiB set {rss_big} KiB"
    );
    // Restore: the standby reads the plaintext archive of round 0.
    // Round i > 0 restores onto a standby of its own (state and snapshot
    // dirs), on the same filesystem.
    let stb = |name: &str, round: usize| {
        let p = lab.dir.path().join(format!("stb-{name}-{round}.toml"));
        let body = archive_toml(&r, &format!("bench/{stamp}/{name}"), &creds, "");
        let mut base = std::fs::read_to_string(&lab.stb_cfg).unwrap();
        if round > 0 {
            base = base
                .replace("state-stb", &format!("state-stb-r{round}"))
                .replace("/recv/", &format!("/recv-r{round}/"));
        }
        std::fs::write(&p, base + &body).unwrap();
        p
    };
    let (rss_rs, _, _) = timed(&stb("small", 0), &["restore", "--from", "offsite"]);
    let (mut t_restore, mut t_get, mut rss_rb) = (vec![], vec![], 0);
    let got = lab.dir.path().join("got");
    for i in 0..rounds {
        let (rss, s, out) = timed(
            &stb("plain0", i),
            &["restore", "--from", "offsite", "--json"],
        );
        assert!(out.contains(&big), "{out}");
        let rep = json(&out);
        let phase = |k: &str| {
            rep["restored"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s[k].as_f64().unwrap())
                .sum::<f64>()
        };
        eprintln!(
            "MEASURE restore round {i} phases: download {:.2} s, receive {:.2} s",
            phase("download_seconds"),
            phase("receive_seconds")
        );
        rss_rb = rss_rb.max(rss);
        t_restore.push(s);
        let _ = std::fs::remove_file(&got);
        t_get.push(curl_s3(
            &r,
            &creds,
            &["-o", got.to_str().unwrap()],
            &format!("bench/{stamp}/curl-{i}"),
        ));
        assert_eq!(std::fs::metadata(&got).unwrap().len(), (mib as u64) << 20);
        eprintln!(
            "MEASURE restore round {i}: restore {:.2} s, curl GET {:.2} s",
            t_restore[i], t_get[i]
        );
    }
    let (rt, gt) = (median(t_restore), median(t_get));
    eprintln!(
        "MEASURE restore {mib} MiB (median of {rounds}): {rt:.2} s = {:.0} MiB/s; curl GET {gt:.2} s = {:.0} MiB/s; restore/download time {:.2}",
        mib as f64 / rt,
        mib as f64 / gt,
        rt / gt
    );
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
