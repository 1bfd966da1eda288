//! Fixtures for integration tests on real storage: btrfs filesystems on loop
//! devices, a pair of site configs, network namespaces with a real sshd.
//! Everything is created under a temp dir and removed by exact name on drop.
#![allow(dead_code)]

pub mod btrfs_stream;
pub mod memsite;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];

pub fn must_be_real() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("SNAPSITE_REQUIRE_REAL").is_ok_and(|v| v == "1")
}

/// Why this machine cannot run the real-storage tests, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for loop devices and mounts".into());
    }
    for tool in ["btrfs", "mkfs.btrfs", "losetup"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!(
                "`{tool}` is not installed (apt-get install btrfs-progs)"
            ));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    None
}

/// Skip with a one-line reason, or fail under CI / SNAPSITE_REQUIRE_REAL=1.
#[macro_export]
macro_rules! require_real {
    () => {
        if let Some(reason) = $crate::common::skip_reason() {
            if $crate::common::must_be_real() {
                panic!("real-storage test cannot run under CI/SNAPSITE_REQUIRE_REAL=1: {reason}");
            }
            eprintln!("SKIP {}: {reason}", module_path!());
            return;
        }
    };
}

pub fn skip_reason() -> Option<String> {
    missing_prerequisite()
}

pub fn sh(argv: &[&str]) -> String {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A btrfs filesystem on a loop device, mounted under `mnt`.
pub struct BtrfsFs {
    pub img: PathBuf,
    pub dev: String,
    pub mnt: PathBuf,
}

impl BtrfsFs {
    pub fn new(dir: &Path, name: &str, size: &str) -> BtrfsFs {
        let img = dir.join(format!("{name}.img"));
        let mnt = dir.join(name);
        std::fs::create_dir_all(&mnt).unwrap();
        sh(&["truncate", "-s", size, img.to_str().unwrap()]);
        let dev = sh(&["losetup", "-f", "--show", img.to_str().unwrap()])
            .trim()
            .to_string();
        let fs = BtrfsFs { img, dev, mnt };
        sh(&["mkfs.btrfs", "-q", "-f", &fs.dev]);
        sh(&["mount", &fs.dev, fs.mnt.to_str().unwrap()]);
        fs
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

impl Drop for BtrfsFs {
    fn drop(&mut self) {
        unmount_below(&self.mnt);
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.img);
    }
}

/// Unmount everything mounted at or below `dir` except `dir` itself, deepest first.
pub fn unmount_below(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut below: Vec<String> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in below {
            let _ = Command::new("umount").arg(&m).status();
        }
    }
}

impl Drop for TwoSites {
    fn drop(&mut self) {
        // failover's bind mounts, before the filesystems under them go
        unmount_below(&self.dir.path().join("mnt-app"));
    }
}

/// The host tests' two-site lab: a primary and a standby, each a btrfs
/// filesystem on a loop device, one subvolume per role under the primary's
/// `live/`, and their configs (`primary.toml` reaching the standby with the
/// local transport; [`TwoSites::primary_variant`] writes others, e.g. with
/// [`TwoSites::serve_logging`]). The VM suite's counterpart on ZFS and LVM
/// thin is `tests/vm/sites.rs`.
pub struct TwoSites {
    // Fields drop in order: filesystems first, the temp dir under them last.
    pub pri: BtrfsFs,
    pub stb: BtrfsFs,
    pub pri_cfg: PathBuf,
    pub stb_cfg: PathBuf,
    pub roles: Vec<String>,
    pub dir: tempfile::TempDir,
}

/// The name most tests know the two-site lab by.
pub type Lab = TwoSites;

pub fn snapsite_exe() -> &'static str {
    env!("CARGO_BIN_EXE_snapsite")
}

impl TwoSites {
    /// The four [`ROLES`] on 1 GiB filesystems. `replay`: TOML array for
    /// replay.command (argv template).
    pub fn new(replay: &str) -> TwoSites {
        TwoSites::with_roles(&ROLES, "1G", replay)
    }

    /// `roles` on filesystems of `size` (a `truncate -s` size) each.
    pub fn with_roles(roles: &[&str], size: &str, replay: &str) -> TwoSites {
        let dir = tempfile::Builder::new()
            .prefix("snapsite-test-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let pri = BtrfsFs::new(dir.path(), "pri", size);
        let stb = BtrfsFs::new(dir.path(), "stb", size);
        std::fs::create_dir_all(pri.path("live")).unwrap();
        for r in roles {
            sh(&[
                "btrfs",
                "-q",
                "subvolume",
                "create",
                pri.path(&format!("live/{r}")).to_str().unwrap(),
            ]);
        }
        let pri_cfg = dir.path().join("primary.toml");
        let stb_cfg = dir.path().join("standby.toml");
        let lab = TwoSites {
            pri_cfg,
            stb_cfg,
            pri,
            stb,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            dir,
        };
        std::fs::write(&lab.stb_cfg, lab.standby_toml(replay)).unwrap();
        std::fs::write(
            &lab.pri_cfg,
            lab.primary_toml(&format!(
                "transport = \"local\"\nconfig = \"{}\"",
                lab.stb_cfg.display()
            )),
        )
        .unwrap();
        lab
    }

    /// A `[standby]` body running the standby's `snapsite serve --stdio`
    /// as a command, its stderr (the serve log) appended to `log`.
    pub fn serve_logging(&self, log: &Path) -> String {
        format!(
            "transport = \"command\"\ncommand = [\"sh\", \"-c\", \"exec \\\"$0\\\" serve --stdio --config \\\"$1\\\" 2>>\\\"$2\\\"\", \"{}\", \"{}\", \"{}\"]",
            snapsite_exe(),
            self.stb_cfg.display(),
            log.display()
        )
    }

    fn volumes(&self, fs: &BtrfsFs, snapdir: &str, mountpoints: Option<&Path>) -> String {
        let mut s = String::new();
        for r in &self.roles {
            s.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"{}\"\nsnapshot_dir = \"{}\"\n",
                fs.path(&format!("live/{r}")).display(),
                fs.path(&format!("{snapdir}/{r}")).display()
            ));
            if let Some(m) = mountpoints {
                s.push_str(&format!("mountpoint = \"{}\"\n", m.join(r).display()));
            }
        }
        s
    }

    pub fn primary_toml(&self, standby: &str) -> String {
        format!(
            "site = \"primary\"\nstate_dir = \"{}\"\n{}\n[replay]\nnone = true\n\n[standby]\n{standby}\n",
            self.dir.path().join("state-pri").display(),
            self.volumes(&self.pri, "snap", None)
        )
    }

    pub fn standby_toml(&self, replay: &str) -> String {
        format!(
            "site = \"standby\"\nstate_dir = \"{}\"\n{}\n[replay]\ncommand = {replay}\n",
            self.dir.path().join("state-stb").display(),
            self.volumes(&self.stb, "recv", Some(&self.dir.path().join("mnt-app")))
        )
    }

    /// Write a primary config with another [standby] section; returns its path.
    pub fn primary_variant(&self, name: &str, standby: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&p, self.primary_toml(standby)).unwrap();
        p
    }

    pub fn live(&self, role: &str) -> PathBuf {
        self.pri.path(&format!("live/{role}"))
    }
    pub fn standby_live(&self, role: &str) -> PathBuf {
        self.stb.path(&format!("live/{role}"))
    }
    pub fn standby_recv(&self, role: &str) -> PathBuf {
        self.stb.path(&format!("recv/{role}"))
    }
    /// A received snapshot on the standby: `snapshot_dir/<id>/<id>` (serve
    /// confines each receive to a directory of its own).
    pub fn standby_snap(&self, role: &str, id: &str) -> PathBuf {
        self.standby_recv(role).join(id).join(id)
    }
    pub fn primary_snap(&self, role: &str, id: &str) -> PathBuf {
        self.pri.path(&format!("snap/{role}/{id}"))
    }

    pub fn run(&self, cfg: &Path, args: &[&str]) -> Output {
        run_snapsite(cfg, args, &[])
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, cfg: &Path, args: &[&str]) -> String {
        let out = self.run(cfg, args);
        assert!(
            out.status.success(),
            "snapsite {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn snapshot(&self, redolog: bool) -> serde_json::Value {
        let mut args = vec!["snapshot", "--json"];
        if redolog {
            args.push("--redolog");
        }
        serde_json::from_str(&self.ok(&self.pri_cfg, &args)).unwrap()
    }

    pub fn ship(&self, cfg: &Path) -> serde_json::Value {
        serde_json::from_str(&self.ok(cfg, &["ship", "--json"])).unwrap()
    }

    pub fn standby_manifests(&self) -> Vec<String> {
        let d = self.dir.path().join("state-stb/sets");
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Names inside the standby's receive dirs (including `.receiving-` markers).
    pub fn standby_recv_entries(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.roles {
            let d = self.standby_recv(r);
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    out.push(format!("{r}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        out
    }
}

pub fn run_snapsite(cfg: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(snapsite_exe());
    c.arg("--config").arg(cfg).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    // A hung transfer must fail the test, not hang CI: kill by PID after 5 min.
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx
            .recv_timeout(std::time::Duration::from_secs(300))
            .is_err()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    out
}

/// Deterministic pseudo-random bytes (incompressible, so byte counts are honest).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut ctr = 0u64;
    while out.len() < len {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&ctr.to_le_bytes());
        out.extend_from_slice(h.finalize().as_bytes());
        ctr += 1;
    }
    out.truncate(len);
    out
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

/// Recursive content listing: relative path -> blake3 of content.
pub fn tree_digest(root: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        let mut ents: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    rel,
                    blake3::hash(&std::fs::read(&p).unwrap())
                        .to_hex()
                        .to_string(),
                );
            }
        }
    }
    walk(root, root, &mut out);
    out
}
