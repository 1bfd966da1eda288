//! The archive bucket's immutability is the engine's, not ours: against a
//! real Ceph RGW (scripts/rgwlab), with the bucket set up as docs/archive.md
//! tells an admin to, every way the primary's credentials could destroy an
//! archived object is tried and must be refused by RGW, and in COMPLIANCE
//! mode the bucket owner cannot delete a locked version either. The pruner
//! can delete a version once its retention has passed.
//!
//! Needs root and the ceph packages (skips with the reason otherwise; under
//! CI=true a skip is a failure). About 30 s, most of it the lab's start.

mod common;

use snapsite::ops::archive_check;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::rgwlab::{Lab, skip_reason};

impl Lab {
    fn client(&self, who: &str) -> S3 {
        let creds = self.get(&format!("RGWLAB_CREDS_{who}"));
        let mode = std::fs::metadata(creds).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            mode.permissions().mode() & 0o077,
            0,
            "{creds} is readable by others"
        );
        let text = std::fs::read_to_string(creds).unwrap();
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("{creds} has no {key}"))
                .to_string()
        };
        S3 {
            who: who.to_string(),
            base: format!(
                "{}/{}",
                self.get("RGWLAB_ENDPOINT"),
                self.get("RGWLAB_BUCKET")
            ),
            user: format!("{}:{}", field("access_key"), field("secret_key")),
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

/// One user's view of the bucket: requests signed by curl's SigV4 (argv, no
/// shell). Paths are relative to the bucket; query parameters must be given
/// in sorted order (curl 7.88 signs them as written).
struct S3 {
    who: String,
    base: String,
    user: String,
    dir: tempfile::TempDir,
}

struct Reply {
    code: u16,
    body: Vec<u8>,
    headers: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl S3 {
    fn req(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body_file = self.dir.path().join("body");
        let out_file = self.dir.path().join("out");
        let head_file = self.dir.path().join("head");
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-X",
            method,
            "--aws-sigv4",
            "aws:amz:us-east-1:s3",
            "--user",
        ])
        .arg(&self.user)
        .arg("-o")
        .arg(&out_file)
        .arg("-D")
        .arg(&head_file)
        .args(["-w", "%{http_code}"]);
        let sha = match body {
            Some(b) => {
                std::fs::write(&body_file, b).unwrap();
                cmd.arg("--data-binary")
                    .arg(format!("@{}", body_file.display()));
                cmd.args(["-H", "Content-Type: application/octet-stream"]);
                cmd.arg("-H")
                    .arg(format!("Content-MD5: {}", md5_b64(&body_file)));
                sha256_hex(&body_file)
            }
            None => "UNSIGNED-PAYLOAD".to_string(),
        };
        cmd.arg("-H").arg(format!("x-amz-content-sha256: {sha}"));
        for (k, v) in headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        cmd.arg(format!("{}{path}", self.base));
        let out = cmd.output().expect("run curl");
        assert!(
            out.status.success(),
            "curl {method} {path} as {}: {}",
            self.who,
            String::from_utf8_lossy(&out.stderr)
        );
        Reply {
            code: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
            body: std::fs::read(&out_file).unwrap_or_default(),
            headers: std::fs::read_to_string(&head_file).unwrap_or_default(),
        }
    }

    fn put(&self, key: &str, data: &[u8], headers: &[(&str, &str)]) -> String {
        let r = self.req("PUT", &format!("/{key}"), Some(data), headers);
        assert_eq!(r.code, 200, "PUT {key} as {}: {}", self.who, r.text());
        r.header("x-amz-version-id")
            .expect("a versioned bucket names the new version")
    }

    /// `what` must be refused: a 4xx (403 AccessDenied, or 409 for a bucket
    /// that is not empty), and never a 2xx.
    fn refused(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let r = self.req(method, path, body, headers);
        assert!(
            (400..500).contains(&r.code),
            "{what} as {} was NOT refused: HTTP {} {}",
            self.who,
            r.code,
            r.text()
        );
        // Refused for the right reason: not a signature or request error.
        assert!(
            ["<Code>AccessDenied</Code>", "<Code>BucketNotEmpty</Code>"]
                .iter()
                .any(|c| r.text().contains(c)),
            "{what} as {} was refused, but not by the bucket's protection: HTTP {} {}",
            self.who,
            r.code,
            r.text()
        );
        eprintln!(
            "refused as expected: {what} as {}: HTTP {} {}",
            self.who,
            r.code,
            r.text()
        );
        r
    }
}

/// The two calls `check` makes, as the archive's client makes them.
impl archive_check::LockedBucket for S3 {
    fn display(&self) -> String {
        self.base.clone()
    }
    fn object_lock(&self) -> Result<Option<archive_check::LockFacts>, String> {
        let r = self.req("GET", "?object-lock=", None, &[]);
        match r.code {
            200 => {}
            404 => return Ok(None),
            c => return Err(format!("HTTP {c} {}", r.text())),
        }
        let xml = r.text();
        let tag = |t: &str| {
            let open = format!("<{t}>");
            let start = xml.find(&open)? + open.len();
            Some(xml[start..start + xml[start..].find('<')?].to_string())
        };
        Ok(Some(archive_check::LockFacts {
            enabled: tag("ObjectLockEnabled").as_deref() == Some("Enabled"),
            default_retention: tag("Mode").zip(tag("Days").and_then(|d| d.parse().ok())),
        }))
    }
    fn delete_probe(&self, key: &str) -> Result<archive_check::ProbeAnswer, String> {
        let r = self.req("DELETE", &format!("/{key}"), None, &[]);
        match r.code {
            200..=299 => Ok(archive_check::ProbeAnswer::Accepted),
            403 => Ok(archive_check::ProbeAnswer::Refused),
            c => Err(format!("HTTP {c} {}", r.text())),
        }
    }
}

fn sha256_hex(file: &Path) -> String {
    let out = Command::new("sha256sum").arg(file).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn md5_b64(file: &Path) -> String {
    let out = Command::new("openssl")
        .args(["dgst", "-md5", "-binary"])
        .arg(file)
        .output()
        .unwrap();
    let out2 = Command::new("base64")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out2.stdout).unwrap().trim().to_string()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a retain-until date (UTC, from the epoch).
fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Every (key, version id) in the bucket, as the owner lists them.
fn versions(admin: &S3) -> Vec<(String, String)> {
    let r = admin.req("GET", "?versions=", None, &[]);
    assert_eq!(r.code, 200, "list versions: {}", r.text());
    let xml = r.text();
    // The only delete marker allowed is the pruner's probe on a key that
    // never held data.
    for m in xml.split("<DeleteMarker>").skip(1) {
        assert!(
            m.starts_with("<Key>snapsite-probe/"),
            "a delete marker hides an object: {xml}"
        );
    }
    let mut out = Vec::new();
    for v in xml.split("<Version>").skip(1) {
        let field = |tag: &str| {
            let open = format!("<{tag}>");
            let start = v.find(&open).unwrap() + open.len();
            let end = start + v[start..].find('<').unwrap();
            v[start..end].to_string()
        };
        out.push((field("Key"), field("VersionId")));
    }
    out
}

const LOCK_XML: &str = r#"<ObjectLockConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>"#;
const LIFECYCLE_XML: &str = r#"<LifecycleConfiguration><Rule><ID>wipe</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration><NoncurrentVersionExpiration><NoncurrentDays>1</NoncurrentDays></NoncurrentVersionExpiration></Rule></LifecycleConfiguration>"#;
const SUSPEND_XML: &str = r#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Suspended</Status></VersioningConfiguration>"#;
const POLICY_JSON: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["arn:aws:iam:::user/primary"]},"Action":["s3:*"],"Resource":["arn:aws:s3:::snapsite-archive","arn:aws:s3:::snapsite-archive/*"]}]}"#;

#[test]
fn object_lock_refuses_every_destructive_request_of_the_primary() {
    if common::skip_because("archive_lock", skip_reason()) {
        return;
    }
    let t0 = std::time::Instant::now();
    let lab = Lab::start(&format!("lock-{}", std::process::id()));
    eprintln!("lab up in {:.1}s", t0.elapsed().as_secs_f64());
    assert_eq!(lab.get("RGWLAB_BUCKET"), "snapsite-archive");
    assert_eq!(lab.get("RGWLAB_MODE"), "COMPLIANCE");
    let loopdev = std::fs::read_to_string(Path::new(lab.get("RGWLAB_STATE")).join("loopdev"))
        .unwrap()
        .trim()
        .to_string();
    let state = lab.get("RGWLAB_STATE").to_string();
    let primary = lab.client("PRIMARY");
    let admin = lab.client("ARCHIVE_ADMIN");
    let pruner = lab.client("PRUNER");

    // The primary writes sets: an index and a part.
    let part = b"part 0 of set 20261206T0800: real bytes".to_vec();
    let index = b"index of set 20261206T0800".to_vec();
    let v_part = primary.put("sets/a/part-0000", &part, &[]);
    primary.put("sets/a/index", &index, &[]);
    let r = primary.req("GET", "/sets/a/part-0000", None, &[]);
    assert_eq!((r.code, &r.body), (200, &part), "the primary reads back");
    let r = primary.req("GET", "?list-type=2", None, &[]);
    assert!(
        r.code == 200 && r.text().contains("sets/a/index"),
        "the primary lists: {}",
        r.text()
    );
    let r = admin.req(
        "GET",
        &format!("/sets/a/part-0000?retention=&versionId={v_part}"),
        None,
        &[],
    );
    assert!(
        r.code == 200 && r.text().contains("<Mode>COMPLIANCE</Mode>"),
        "the default retention applies to the primary's object: {}",
        r.text()
    );

    // Delete: a delete marker (no versionId) would hide the set from a GET;
    // refused, and the object still reads.
    primary.refused(
        "DeleteObject (delete marker)",
        "DELETE",
        "/sets/a/part-0000",
        None,
        &[],
    );
    let r = primary.req("GET", "/sets/a/part-0000", None, &[]);
    assert_eq!(
        (r.code, &r.body),
        (200, &part),
        "still readable after the refused delete"
    );
    let del = b"<Delete><Object><Key>sets/a/part-0000</Key></Object><Object><Key>sets/a/index</Key></Object></Delete>";
    primary.refused("DeleteObjects", "POST", "?delete=", Some(del), &[]);

    // The delete probe `check` uses (docs/archive.md): a DeleteObject of a
    // key that never existed tells credentials that can delete (they add a
    // delete marker nobody sees) from those that cannot.
    primary.refused(
        "delete probe",
        "DELETE",
        "/snapsite-probe/never-written",
        None,
        &[],
    );
    let r = pruner.req("DELETE", "/snapsite-probe/never-written", None, &[]);
    assert_eq!(r.code, 204, "the pruner's probe is accepted: {}", r.text());

    // `check`'s verdict on the bucket (src/ops/archive_check.rs), through
    // these same requests: with the primary's credentials and the 1-day
    // lock the lab sets, fine for a 1-day need, a problem naming both
    // numbers for 30; the pruner's credentials can delete.
    let f = archive_check::check(&primary, 1);
    assert_eq!(f.iter().filter(|f| f.problem).count(), 0, "{f:?}");
    let f = archive_check::check(&primary, 30);
    assert!(
        f.iter()
            .any(|f| f.problem && f.text.contains("is 1 days, the archive needs 30")),
        "{f:?}"
    );
    let f = archive_check::check(&pruner, 1);
    assert!(
        f.iter()
            .any(|f| f.problem && f.text.contains("credentials can delete")),
        "{f:?}"
    );

    // Overwrite: RGW accepts it and makes a new version (the key is not
    // content-addressed for RGW); the old version stays, locked and readable.
    let garbage = b"ransomware was here".to_vec();
    let v_garbage = primary.put("sets/a/part-0000", &garbage, &[]);
    assert_ne!(v_garbage, v_part, "an overwrite is a new version");
    let r = admin.req(
        "GET",
        &format!("/sets/a/part-0000?versionId={v_part}"),
        None,
        &[],
    );
    assert_eq!(
        (r.code, &r.body),
        (200, &part),
        "the overwritten version is still readable"
    );

    // DeleteObject of every version, with every credential: refused by the
    // policy (primary) or by the COMPLIANCE lock (owner, pruner).
    let all = versions(&admin);
    assert_eq!(all.len(), 3, "two keys, one overwritten: {all:?}");
    for (key, vid) in &all {
        let path = format!("/{key}?versionId={vid}");
        primary.refused("DeleteObjectVersion", "DELETE", &path, None, &[]);
        for who in [&admin, &pruner] {
            let r = who.refused("DeleteObjectVersion", "DELETE", &path, None, &[]);
            assert!(
                r.text().contains("object lock"),
                "refused by the lock: {}",
                r.text()
            );
            who.refused(
                "DeleteObjectVersion with governance bypass",
                "DELETE",
                &path,
                None,
                &[("x-amz-bypass-governance-retention", "true")],
            );
        }
    }

    // Shortening a retention: the primary may not touch it; in COMPLIANCE
    // the owner cannot shorten it either.
    let soon = iso8601(SystemTime::now() + Duration::from_secs(60));
    let retention = format!(
        r#"<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>GOVERNANCE</Mode><RetainUntilDate>{soon}</RetainUntilDate></Retention>"#
    );
    let path = format!("/sets/a/part-0000?retention=&versionId={v_part}");
    let bypass = [("x-amz-bypass-governance-retention", "true")];
    for (who, what, headers) in [
        (&primary, "PutObjectRetention (shorter)", &[][..]),
        (&admin, "PutObjectRetention (shorter)", &[][..]),
        (&admin, "PutObjectRetention (shorter, bypass)", &bypass[..]),
    ] {
        who.refused(what, "PUT", &path, Some(retention.as_bytes()), headers);
    }
    primary.refused(
        "PutObjectLegalHold",
        "PUT",
        &format!("/sets/a/part-0000?legal-hold=&versionId={v_part}"),
        Some(br#"<LegalHold xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>OFF</Status></LegalHold>"#),
        &[],
    );

    // The bucket's configuration: lock, lifecycle, versioning, policy.
    for (what, query, body) in [
        ("PutObjectLockConfiguration", "?object-lock=", LOCK_XML),
        ("PutBucketLifecycle", "?lifecycle=", LIFECYCLE_XML),
        ("PutBucketVersioning (suspend)", "?versioning=", SUSPEND_XML),
        ("PutBucketPolicy", "?policy=", POLICY_JSON),
    ] {
        primary.refused(what, "PUT", query, Some(body.as_bytes()), &[]);
    }
    primary.refused("DeleteBucketPolicy", "DELETE", "?policy=", None, &[]);
    primary.refused("DeleteBucket", "DELETE", "", None, &[]);
    let r = admin.req("GET", "?object-lock=", None, &[]);
    assert!(
        r.code == 200
            && r.text().contains("<Mode>COMPLIANCE</Mode>")
            && r.text().contains("<Days>1</Days>"),
        "the lock configuration is unchanged: {}",
        r.text()
    );
    let r = admin.req("GET", "?lifecycle=", None, &[]);
    assert_eq!(r.code, 404, "no lifecycle was set: {}", r.text());
    let r = admin.req("GET", "?versioning=", None, &[]);
    assert!(
        r.text().contains("<Status>Enabled</Status>"),
        "versioning still on: {}",
        r.text()
    );
    // The owner cannot delete the bucket while it holds objects.
    admin.refused("DeleteBucket (not empty)", "DELETE", "", None, &[]);

    // After all of that every version is still there with its bytes.
    assert_eq!(versions(&admin), all, "no version was lost");
    let r = admin.req(
        "GET",
        &format!("/sets/a/part-0000?versionId={v_part}"),
        None,
        &[],
    );
    assert_eq!((r.code, &r.body), (200, &part));

    // The pruner: a version whose retention has passed can be deleted (the
    // owner sets a 3-second retention on a new object to show it).
    let until = iso8601(SystemTime::now() + Duration::from_secs(3));
    let v_short = admin.put(
        "expired/x",
        b"short-lived",
        &[
            ("x-amz-object-lock-mode", "COMPLIANCE"),
            ("x-amz-object-lock-retain-until-date", &until),
        ],
    );
    let path = format!("/expired/x?versionId={v_short}");
    pruner.refused(
        "DeleteObjectVersion before expiry",
        "DELETE",
        &path,
        None,
        &[],
    );
    std::thread::sleep(Duration::from_secs(5));
    primary.refused(
        "DeleteObjectVersion after expiry",
        "DELETE",
        &path,
        None,
        &[],
    );
    let r = pruner.req("DELETE", &path, None, &[]);
    assert_eq!(
        r.code,
        204,
        "the pruner deletes an expired version: {}",
        r.text()
    );

    let t_stop = std::time::Instant::now();
    drop(lab);
    eprintln!("lab stopped in {:.1}s", t_stop.elapsed().as_secs_f64());
    // Stopped: the loop device is detached, the state dir gone, nothing of
    // it mounted.
    let back = Command::new("losetup")
        .args(["-n", "-O", "BACK-FILE", &loopdev])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&back.stdout).contains(&state),
        "{loopdev} still backs the lab"
    );
    assert!(!Path::new(&state).exists(), "{state} was not removed");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&state),
        "something of {state} is still mounted"
    );
    eprintln!("archive_lock: {:.1}s", t0.elapsed().as_secs_f64());
}
