//! The S3 archive (issue 30) on real OpenZFS and LVM thin: a primary
//! archives a full set and the incremental sets after it (age-encrypted)
//! to a real Ceph RGW with Object Lock; `verify` reads every part back; a
//! standby that never received a set is rebuilt from the archive
//! (`restore --from`: the chain, oldest first, through serve's receive
//! path into the standby's own pool or VG), and `failover` brings up the
//! primary's data from it. tests/archive.rs does the same on btrfs on the
//! host, with the hostile cases (a corrupted, a missing part, a forged
//! index, https) and the measurements.
//!
//! The RGW runs on the host: `scripts/rgwlab start vmlab`, which
//! scripts/vmlab/test starts beside the lab's setup. The guest reaches its
//! http and https ports on its own 127.0.0.1 (scripts/vmlab/vm-exec's
//! `SNAPSITE_VMLAB_HOSTFWD`: a user-mode NIC restricted to those ports), so
//! the lab's `scripts/rgwlab env vmlab` (read from the host's state dir,
//! visible in the guest) holds here as it is.

use super::*;
use crate::rgwlab::written;

/// The lab's `KEY=VALUE` lines (`scripts/rgwlab env NAME`, NAME from
/// `SNAPSITE_VMLAB_RGWLAB`), or `None` after a skip. Panics when real
/// storage is required and there is no lab.
fn rgw_env() -> Option<Vec<(String, String)>> {
    let name = std::env::var("SNAPSITE_VMLAB_RGWLAB").unwrap_or_default();
    if name.is_empty() {
        let why = "no RGW lab: SNAPSITE_VMLAB_RGWLAB is not set (scripts/vmlab/test starts `scripts/rgwlab start vmlab` and forwards its ports; see its log for why it did not)";
        if real_storage_required() {
            panic!("{why}; SNAPSITE_REQUIRE_REAL=1 or CI=true forbids skipping");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    let out = sh(&["bash", rgwlab::script().to_str().unwrap(), "env", &name]);
    Some(rgwlab::parse_env(&out))
}

/// Appends the `[[archive]]` "offsite" of the lab in `env` to both sites'
/// configs, under a prefix of this run's own (the bucket's objects stay
/// locked for a day): the primary holds the lab's `primary` credentials
/// and only the age recipient, the standby the read-only `restorer` and
/// the identity. Returns the two new configs.
fn with_archive(
    env: &[(String, String)],
    dir: &Path,
    pri_cfg: &Path,
    stb_cfg: &Path,
    kind: &str,
) -> (PathBuf, PathBuf) {
    let get = |k: &str| rgwlab::env_value(env, k);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("vm-{kind}/{nanos}");
    let id_file = dir.join("archive.age");
    sh(&["age-keygen", "-o", id_file.to_str().unwrap()]);
    let recipient = sh(&["age-keygen", "-y", id_file.to_str().unwrap()])
        .trim()
        .to_string();
    let creds = |who: &str| -> PathBuf {
        let p = dir.join(format!("{who}.creds"));
        std::fs::copy(get(&format!("RGWLAB_CREDS_{}", who.to_uppercase())), &p)
            .unwrap_or_else(|e| panic!("copy the lab's {who} credentials: {e}"));
        sh(&["chmod", "600", p.to_str().unwrap()]);
        p
    };
    let section = |creds: &Path, extra: &str| {
        rgwlab::archive_section(
            get("RGWLAB_ENDPOINT"),
            get("RGWLAB_BUCKET"),
            get("RGWLAB_REGION"),
            &prefix,
            creds,
            extra,
        )
    };
    let write = |from: &Path, name: &str, text: String| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, std::fs::read_to_string(from).unwrap() + &text).unwrap();
        p
    };
    let pri = write(
        pri_cfg,
        "primary-archive.toml",
        section(
            &creds("primary"),
            &format!("recipients = [\"{recipient}\"]\ncompression = \"zstd:3\""),
        ),
    );
    let stb = write(
        stb_cfg,
        "standby-archive.toml",
        section(
            &creds("restorer"),
            &format!("identity = \"{}\"", id_file.display()),
        ),
    );
    (pri, stb)
}

/// What the test wrote: (role, key, bytes). A key is a file's name on ZFS
/// and an offset on LVM ([`lvm_offset`]).
type Writes = Vec<(&'static str, &'static str, Vec<u8>)>;

/// The drive both backends share. `put(role, key, bytes)` writes into the
/// primary's live volume (durably); `got(role, key, len)` reads the
/// standby's live copy after failover. Archives s1 (full: 3 MiB), s2
/// (full: 1 MiB more in mysql) and s3 (redolog); restores a standby that
/// never received a set from the archive alone, and fails over to s2 + s3.
fn archive_restore_fail_over<S: TwoSites, G>(
    env: &[(String, String)],
    lab: &Lab<S, G>,
    kind: &str,
    put: &dyn Fn(&str, &str, &[u8]),
    got: &dyn Fn(&str, &str, usize) -> Vec<u8>,
) {
    let t0 = Instant::now();
    let dir = lab.dir().to_path_buf();
    let (pri, stb) = with_archive(env, &dir, &lab.pri_cfg, &lab.stb_cfg, kind);
    let mut writes: Writes = vec![
        ("mysql", "db", pattern(1, 3 << 20)),
        ("redolog", "log", b"redo 1\n".to_vec()),
    ];
    for (role, key, data) in &writes {
        put(role, key, data);
    }
    let s1 = snapshot_id(&pri);
    let dry = snapsite_json(&pri, &["archive", "--dry-run", "--json"]);
    assert_eq!(dry["planned"], serde_json::json!([s1]), "{dry}");
    let a1 = snapsite_json(&pri, &["archive", "--json"]);
    assert_eq!(written(&a1), std::slice::from_ref(&s1), "{a1}");
    let again = snapsite_json(&pri, &["archive", "--json"]);
    assert!(
        written(&again).is_empty(),
        "nothing is written twice: {again}"
    );

    // 1 MiB of random data changed (64 KiB-aligned on LVM: 16 thin chunks).
    let change = 1usize << 20;
    writes.push(("mysql", "changed", pattern(2, change)));
    put("mysql", "changed", &writes[2].2);
    let s2 = snapshot_id(&pri);
    writes[1].2 = b"redo 1\nredo 2 after s2\n".to_vec();
    put("redolog", "log", &writes[1].2);
    let s3 = snapsite_json(&pri, &["snapshot", "--redolog", "--json"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a2 = snapsite_json(&pri, &["archive", "--json"]);
    assert_eq!(written(&a2), [s2.clone(), s3.clone()], "{a2}");
    assert_eq!(
        a2["written"][0]["requires"],
        serde_json::json!([s1]),
        "{a2}"
    );
    let full = a1["written"][0]["payload_bytes"].as_u64().unwrap();
    let inc = a2["written"][0]["payload_bytes"].as_u64().unwrap();
    let inc_stored = a2["written"][0]["stored_bytes"].as_u64().unwrap();
    let ratio = |b: u64| b as f64 / change as f64;
    eprintln!(
        "MEASURE {kind}: full set payload {full} B; the incremental of 1 MiB of random data: payload {inc} B ({:.3}x the change), stored {inc_stored} B ({:.3}x, zstd + age); archived in {:.1} s",
        ratio(inc),
        ratio(inc_stored),
        t0.elapsed().as_secs_f64()
    );
    // The incremental carries the change (issue 30: at most 1.1x), not
    // the volumes again.
    assert!(ratio(inc) >= 1.0 && ratio(inc) <= 1.1, "{a2}");
    assert!(ratio(inc_stored) <= 1.1, "{a2}");

    let v = snapsite_json(&pri, &["verify", "--archive", "offsite", "--json"]);
    assert_eq!(v["sets"], 3, "{v}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["parts_read"], v["parts"], "{v}");

    // A standby that never received a set, rebuilt from the archive.
    assert_eq!(lab.standby_manifests(), 0);
    let restore = |extra: &[&str]| {
        let mut argv = vec!["restore", "--from", "offsite", "--set", &s3, "--json"];
        argv.extend_from_slice(extra);
        snapsite_json(&stb, &argv)
    };
    let dry = restore(&["--dry-run"]);
    assert_eq!(dry["chain"], serde_json::json!([s1, s2, s3]), "{dry}");
    assert_eq!(lab.standby_manifests(), 0, "a dry run restores nothing");
    let t = Instant::now();
    let rr = restore(&[]);
    eprintln!(
        "MEASURE {kind}: restore of 3 sets {:.1} s: {rr}",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(rr["restored"].as_array().unwrap().len(), 3, "{rr}");
    assert_eq!(lab.standby_manifests(), 3);
    // Rerun: everything is here already, nothing is received again.
    let again = restore(&[]);
    assert!(again["restored"].as_array().unwrap().is_empty(), "{again}");
    let sets = snapsite_json(&stb, &["sets", "--json"]);
    for id in [&s1, &s2, &s3] {
        assert!(sets.to_string().contains(id.as_str()), "{id}: {sets}");
    }

    // failover as usual: s2 and the redolog set s3, the primary's bytes.
    lab.fail_over_to(&s2, &s3);
    for (role, key, data) in &writes {
        assert!(
            got(role, key, data.len()) == *data,
            "{role} {key}: the standby's copy differs from the primary's"
        );
    }
    eprintln!(
        "archive test on {kind}: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Where the LVM test writes a key on its (filesystem-less) volume: whole
/// thin chunks, so the change the incremental carries is known exactly.
fn lvm_offset(key: &str) -> u64 {
    match key {
        "db" | "log" => 0,
        "changed" => 8 * MIB,
        _ => panic!("no offset for {key}"),
    }
}

#[test]
fn zfs_archive_restore_a_fresh_standby_and_fail_over() {
    require_lab!();
    let Some(env) = rgw_env() else {
        return;
    };
    let sites = ZfsSites::new("ar", 256 * MIB, 512 * MIB);
    sites.live_container();
    let roles = ["mysql", "redolog"];
    let (mut pri, mut stb) = (String::new(), String::new());
    for r in roles {
        sh(&["zfs", "create", &sites.a.dataset(r)]);
        pri.push_str(&sites.primary_volume(r, ""));
        let mp = sites.dir.join("app").join(r);
        stb.push_str(&sites.standby_volume_live_at(r, &format!("live/{r}"), Some(&mp)));
    }
    let clones = ZfsDestroy(
        roles
            .map(|r| sites.c.dataset(&format!("live/{r}")))
            .to_vec(),
    );
    let replay = replay_args(&sites.dir);
    let lab = Lab::local(sites, clones, &pri, &stb, &replay);
    let put = |role: &str, name: &str, data: &[u8]| {
        std::fs::write(zfs_mountpoint(&lab.a.dataset(role)).join(name), data).unwrap();
    };
    let got = |role: &str, key: &str, _len: usize| {
        std::fs::read(lab.dir.join("app").join(role).join(key)).unwrap()
    };
    archive_restore_fail_over(&env, &lab, "zfs", &put, &got);
}

#[test]
fn lvm_archive_restore_a_fresh_standby_and_fail_over() {
    require_lab!();
    let Some(env) = rgw_env() else {
        return;
    };
    let sites = LvmSites::new("ar", 1024 * MIB, "512M");
    let roles = ["mysql", "redolog"];
    let (mut p, mut s) = (String::new(), String::new());
    for r in roles {
        sites.primary_thin(r, "64M");
        p.push_str(&sites.primary_volume(r, ""));
        s.push_str(&sites.standby_volume(r, None));
    }
    let replay = replay_args(&sites.dir);
    let lab = Lab::local(sites, (), &p, &s, &replay);
    let put =
        |role: &str, key: &str, data: &[u8]| write_at(&lab.pri.dev(role), lvm_offset(key), data);
    let got = |role: &str, key: &str, len: usize| {
        read_at(&lab.stb.dev(&format!("{role}live")), lvm_offset(key), len)
    };
    archive_restore_fail_over(&env, &lab, "lvm", &put, &got);
}
