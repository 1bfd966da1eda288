//! The real S3 engine of the archive tests: a one-node Ceph RGW with Object
//! Lock, started and stopped by scripts/rgwlab (docs/archive.md).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the lab cannot run here (not root, no ceph packages, no curl).
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for the lab's loop device".into());
    }
    for tool in [
        "ceph-mon",
        "ceph-mgr",
        "ceph-osd",
        "radosgw",
        "radosgw-admin",
    ] {
        if !Path::new("/usr/bin").join(tool).exists() {
            return Some(format!(
                "`{tool}` is not installed (apt-get install --no-install-recommends ceph-mon ceph-mgr ceph-osd radosgw ceph-common)"
            ));
        }
    }
    if Command::new("curl").arg("--version").output().is_err() {
        return Some("`curl` is not installed".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    None
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rgwlab")
}

/// A running lab; stopped (by its PIDs, through the script) on drop.
pub struct Lab {
    pub name: String,
    pub env: Vec<(String, String)>,
}

impl Lab {
    pub fn start(name: &str) -> Lab {
        let out = Command::new("bash")
            .arg(script())
            .args(["start", name])
            .output()
            .expect("run scripts/rgwlab");
        // Stop whatever got started even when start failed half-way.
        let mut lab = Lab {
            name: name.to_string(),
            env: Vec::new(),
        };
        assert!(
            out.status.success(),
            "scripts/rgwlab start {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab.env = parse_env(&String::from_utf8(out.stdout).unwrap());
        lab
    }

    pub fn get(&self, key: &str) -> &str {
        env_value(&self.env, key)
    }
}

/// The `KEY=VALUE` lines `scripts/rgwlab start` and `env` print.
pub fn parse_env(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|line| {
            let (k, v) = line.split_once('=').expect("KEY=VALUE line");
            // printf %q leaves these values (paths, a URL, words) unquoted.
            assert!(
                !v.contains(['\\', '\'', '"', ' ']),
                "unexpected quoting in {line}"
            );
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// `key`'s value in a lab's [`parse_env`] lines.
pub fn env_value<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
    &env.iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("scripts/rgwlab env has no {key}"))
        .1
}

/// The set ids an `archive --json` report says it wrote, in order.
pub fn written(report: &serde_json::Value) -> Vec<String> {
    report["written"]
        .as_array()
        .unwrap_or_else(|| panic!("no `written` in {report}"))
        .iter()
        .map(|s| s["set_id"].as_str().unwrap().to_string())
        .collect()
}

/// An `[[archive]]` named "offsite" on a lab's bucket under `prefix`,
/// reached with the credentials file `creds` in 1 MiB parts, then the
/// `extra` lines (recipients, identity, compression, `ca_file`).
pub fn archive_section(
    endpoint: &str,
    bucket: &str,
    region: &str,
    prefix: &str,
    creds: &Path,
    extra: &str,
) -> String {
    format!(
        "\n[[archive]]\nname = \"offsite\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nregion = \"{region}\"\nprefix = \"{prefix}\"\ncredentials = \"{}\"\nchunk_size = \"1MiB\"\n{extra}\n",
        creds.display()
    )
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(script())
            .args(["stop", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "scripts/rgwlab stop {} failed: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("scripts/rgwlab stop {}: {e}", self.name),
        }
    }
}

/// One lab shared by the tests of a process that run side by side: the
/// first user starts it, the last one to drop its guard stops it. (Each test
/// holding a `Lab` of its own stopped the lab under the others: the first
/// test to finish took RGW away from a restore still uploading.) Start and
/// stop happen under one lock, so a stop never overlaps a start.
pub struct Shared {
    name: String,
}

static SHARED: std::sync::Mutex<Vec<(String, usize, Lab)>> = std::sync::Mutex::new(Vec::new());

impl Shared {
    pub fn start(name: &str) -> Shared {
        let mut labs = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = labs.iter_mut().find(|l| l.0 == name) {
            l.1 += 1;
        } else {
            let lab = Lab::start(name);
            labs.push((name.to_string(), 1, lab));
        }
        Shared {
            name: name.to_string(),
        }
    }

    /// The lab's `KEY=VALUE` line for `key`.
    pub fn get(&self, key: &str) -> String {
        let labs = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let l = labs
            .iter()
            .find(|l| l.0 == self.name)
            .expect("a started lab");
        l.2.get(key).to_string()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut labs = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = labs.iter().position(|l| l.0 == self.name) {
            labs[i].1 -= 1;
            if labs[i].1 == 0 {
                // Dropped (stopped) while the lock is held.
                drop(labs.remove(i));
            }
        }
    }
}
