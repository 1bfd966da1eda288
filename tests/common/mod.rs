//! Fixtures for integration tests on real storage: btrfs filesystems on loop
//! devices, a pair of site configs, network namespaces with a real sshd.
//! Everything is created under a temp dir and removed by exact name on drop.
#![allow(dead_code)]

pub mod btrfs_stream;
pub mod cmdcount;
pub mod crashcheck;
pub mod drillcheck;
pub mod initcheck;
pub mod mailgen;
pub mod memsite;
pub mod output;
pub mod redolog;
pub mod rgwlab;
pub mod shipcheck;
pub mod sitetoml;
pub mod sshlab;

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

/// Whether a test skips for a missing prerequisite `reason` (`None`: it
/// runs). Under CI / SNAPSITE_REQUIRE_REAL=1 a missing prerequisite fails
/// the test instead; `what` names the test in either message.
pub fn skip_because(what: &str, reason: Option<String>) -> bool {
    let Some(reason) = reason else {
        return false;
    };
    assert!(
        !must_be_real(),
        "{what} cannot run under CI/SNAPSITE_REQUIRE_REAL=1: {reason}"
    );
    eprintln!("SKIP {what}: {reason}");
    true
}

/// The mailstore binary cargo built next to snapsite (a default workspace
/// member, so `cargo test` builds it).
pub fn mailstore_exe() -> PathBuf {
    let p = Path::new(snapsite_exe()).with_file_name("mailstore");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p mailstore` (plain `cargo test` does)",
        p.display()
    );
    p
}

/// `bash scripts/demo` with the settings the host drills share (tests/
/// drill.rs, tests/cycle.rs): the test's binaries, no install, the demo in
/// `demo`, containers named `name` on the network `net` (a /24 prefix),
/// a full set every 8th and a redolog set every 2nd step, kills jittered
/// by 3 s, 20 messages a second, in New York's time zone. The caller adds
/// its mode and outputs, and runs it with [`run_demo`].
pub fn demo_command(demo: &Path, name: &str, net: &str) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo");
    let mut c = Command::new("bash");
    c.arg(script)
        .env("SNAPSITE_BIN", snapsite_exe())
        .env("MAILSTORE_BIN", mailstore_exe())
        .env("DRILL_NO_INSTALL", "1")
        .env("DEMO", demo)
        .env("DRILL_NAME", name)
        .env("DRILL_NET", net)
        .env("FULL_EVERY", "8")
        .env("REDO_EVERY", "2")
        .env("KILL_JITTER", "3")
        .env("RATE", "20")
        .env("TZ", "America/New_York");
    c
}

/// Run a [`demo_command`] to its end: (status, stdout, stderr). A hung
/// demo fails the test, not CI: SIGTERM (the script cleans up on it)
/// after `limit`, SIGKILL 30 s later, by its PID.
pub fn run_demo(
    cmd: &mut Command,
    limit: std::time::Duration,
) -> (std::process::ExitStatus, String, String) {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use nix::sys::signal::{Signal, kill};
        if rx.recv_timeout(limit).is_err() {
            let _ = kill(pid, Signal::SIGTERM);
            if rx.recv_timeout(std::time::Duration::from_secs(30)).is_err() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let status = child.wait().unwrap();
    let _ = tx.send(());
    (status, out, err.join().unwrap())
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
    /// The temp dir of a [`BtrfsFs::scratch`] filesystem (removed after it).
    home: Option<tempfile::TempDir>,
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
        let fs = BtrfsFs {
            img,
            dev,
            mnt,
            home: None,
        };
        sh(&["mkfs.btrfs", "-q", "-f", &fs.dev]);
        sh(&["mount", &fs.dev, fs.mnt.to_str().unwrap()]);
        fs
    }
    /// A 300 MB filesystem `name` in a temp dir of its own under /var/tmp.
    pub fn scratch(name: &str) -> BtrfsFs {
        let home = var_tmp_dir("snapsite-fs-");
        let mut fs = BtrfsFs::new(home.path(), name, "300M");
        fs.home = Some(home);
        fs
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// A new subvolume at `rel`; its path.
    pub fn subvolume(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        subvolume_create(&p);
        p
    }
}

/// A temp dir under /var/tmp (on disk, not tmpfs: loop images and test
/// state go there), named `<prefix>XXXXXX`.
pub fn var_tmp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap()
}

impl Drop for BtrfsFs {
    fn drop(&mut self) {
        unmount_below(&self.mnt);
        // A process of the test that is just ending (a `btrfs send` whose
        // reader was cut, say) can keep the filesystem busy for a moment
        // on a loaded host: retry for up to 5 s, then detach it lazily
        // rather than leak the mount (and its loop device) for good.
        let mounted = |p: &Path| {
            Command::new("mountpoint")
                .arg("-q")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success())
        };
        let unmounted = (0..50).any(|i| {
            if !mounted(&self.mnt) {
                return true;
            }
            if i > 0 {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Command::new("umount")
                .arg(&self.mnt)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !unmounted {
            eprintln!("{}: busy for 5 s, unmounted lazily", self.mnt.display());
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        let _ = std::fs::remove_dir(&self.mnt);
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_file(&self.img);
    }
}

/// `btrfs subvolume create path`.
pub fn subvolume_create(path: &Path) {
    sh(&["btrfs", "-q", "subvolume", "create", path.to_str().unwrap()]);
}

/// `btrfs subvolume snapshot [-r] src dst` (`-r` when `readonly`).
pub fn subvolume_snapshot(src: &Path, dst: &Path, readonly: bool) {
    let mut argv = vec!["btrfs", "-q", "subvolume", "snapshot"];
    if readonly {
        argv.push("-r");
    }
    argv.extend([src.to_str().unwrap(), dst.to_str().unwrap()]);
    sh(&argv);
}

/// `btrfs subvolume snapshot -r src dst`.
pub fn snapshot_readonly(src: &Path, dst: &Path) {
    subvolume_snapshot(src, dst, true);
}

/// `btrfs send -q <args> snap`: the stream (the command must succeed).
pub fn btrfs_send(snap: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("btrfs")
        .args(["send", "-q"])
        .args(args)
        .arg(snap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "btrfs send {}: {}",
        snap.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `btrfs receive -e dir` fed `stream`: whether it succeeded.
pub fn btrfs_receive(dir: &Path, stream: &[u8]) -> bool {
    Command::new("btrfs")
        .args(["receive", "-e"])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(stream)?;
            c.wait()
        })
        .unwrap()
        .success()
}

/// `btrfs subvolume show path`.
pub fn subvolume_show(path: &Path) -> String {
    sh(&["btrfs", "subvolume", "show", path.to_str().unwrap()])
}

/// One field (`UUID`, `Parent UUID`, `Flags`, …) of a `btrfs subvolume
/// show` output; empty when absent.
pub fn show_field(show: &str, key: &str) -> String {
    show.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// The mount points below `dir` (not `dir` itself), from
/// /proc/self/mountinfo; None when that cannot be read.
fn mountinfo_below(dir: &Path) -> Option<Vec<String>> {
    let prefix = format!("{}/", dir.display());
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(
        info.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .map(str::to_string)
            .collect(),
    )
}

/// The mount points below `dir` (not `dir` itself).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    mountinfo_below(dir).expect("/proc/self/mountinfo cannot be read")
}

/// Unmount everything mounted at or below `dir` except `dir` itself, deepest first.
pub fn unmount_below(dir: &Path) {
    if let Some(mut below) = mountinfo_below(dir) {
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
        let dir = var_tmp_dir("snapsite-test-");
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

    /// The four [`ROLES`], the standby's replay a recorder
    /// ([`replay_recorder`]) writing into the lab's directory.
    pub fn with_replay_recorder() -> TwoSites {
        let lab = TwoSites::new("[\"/bin/true\"]");
        let replay = replay_recorder(lab.dir.path());
        std::fs::write(&lab.stb_cfg, lab.standby_toml(&replay)).unwrap();
        lab
    }

    /// Each volume's `data` file: `len` pseudo-random bytes, seeded
    /// `seed + i` for the i-th role.
    pub fn fill(&self, seed: u64, len: usize) {
        for (i, r) in self.roles.iter().enumerate() {
            write_file(
                &self.live(r).join("data"),
                &random_bytes(seed + i as u64, len),
            );
        }
    }

    /// Each volume's `data` file: the same `len` pseudo-random bytes
    /// (seeded `seed`) in every volume.
    pub fn fill_same(&self, seed: u64, len: usize) {
        for r in &self.roles {
            write_file(&self.live(r).join("data"), &random_bytes(seed, len));
        }
    }

    /// Append `line` to the primary's `redolog/log`, synced.
    pub fn append_redolog(&self, line: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.live("redolog").join("log"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
        f.sync_all().unwrap();
    }

    /// The primary's committed manifest of set `id`, as JSON.
    pub fn primary_manifest(&self, id: &str) -> serde_json::Value {
        let p = self.dir.path().join(format!("state-pri/sets/{id}.json"));
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    /// The standby's manifest of set `id`, if it committed one.
    pub fn standby_manifest(&self, id: &str) -> Option<serde_json::Value> {
        let p = self.dir.path().join(format!("state-stb/sets/{id}.json"));
        std::fs::read(&p)
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    /// A primary config `<name>.toml` whose transport pipes the stream
    /// through `filter` (a shell command reading stdin, writing stdout, e.g.
    /// [`byte_filter`]) into the standby's serve; `extra` is appended to
    /// its `[standby]`.
    pub fn filtered_transport(&self, name: &str, filter: &str, extra: &str) -> PathBuf {
        let script = format!(
            "#!/bin/sh\n{filter} | exec {} serve --stdio --config {}\n",
            snapsite_exe(),
            self.stb_cfg.display()
        );
        self.script_transport(name, &script, extra)
    }

    /// A primary config `<name>.toml` whose transport is the executable
    /// script `<name>.sh` holding `script`; `extra` is appended to its
    /// `[standby]`.
    pub fn script_transport(&self, name: &str, script: &str, extra: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{name}.sh"));
        write_script(&path, script);
        self.primary_variant(
            name,
            &format!(
                "transport = \"command\"\ncommand = [\"{}\"]\n{extra}",
                path.display()
            ),
        )
    }

    /// No receive marker (`.receiving-`) left in the standby's receive dirs.
    pub fn assert_nothing_half_received(&self) {
        let entries = self.standby_recv_entries();
        assert!(
            entries.iter().all(|e| !e.contains("/.receiving-")),
            "leftovers: {entries:?}"
        );
    }

    /// The standby's snapshot `id` of `role` holds what the primary's does.
    pub fn assert_received_same(&self, role: &str, id: &str) {
        assert_eq!(
            tree_digest(&self.standby_snap(role, id)),
            tree_digest(&self.primary_snap(role, id)),
            "{role} {id}"
        );
    }

    /// Write site B's config with a peer: the standby's volumes and a
    /// `[standby]` section reaching site A (the primary) through the local
    /// transport; returns its path (`name` in the lab's directory).
    pub fn standby_with_peer(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        let base = std::fs::read_to_string(&self.stb_cfg).unwrap();
        std::fs::write(
            &p,
            format!(
                "{base}\n[standby]\ntransport = \"local\"\nconfig = \"{}\"\n",
                self.pri_cfg.display()
            ),
        )
        .unwrap();
        p
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
        output::success(&format!("snapsite {args:?}"), &self.run(cfg, args))
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

    /// A's base of the failback and follow stories: a `blob_len` blob
    /// store (`blob/m1`), a 2 MiB database, a redolog (`log1`) and a set
    /// `s`; then `log2` and a redolog snapshot `r`; both shipped through
    /// the primary's config. Returns `(s, r)`.
    pub fn base_shipped(&self, blob_len: usize) -> (String, String) {
        write_file(&self.live("blob").join("m1"), &random_bytes(1, blob_len));
        write_file(&self.live("mysql").join("db"), &random_bytes(2, 2 << 20));
        write_file(
            &self.live("redolog").join("log1"),
            &random_bytes(3, 64 << 10),
        );
        let s = self.snapshot(false)["id"].as_str().unwrap().to_string();
        write_file(
            &self.live("redolog").join("log2"),
            &random_bytes(4, 64 << 10),
        );
        let r = self.snapshot(true)["id"].as_str().unwrap().to_string();
        self.ship(&self.pri_cfg);
        (s, r)
    }

    /// The file names in the standby's `sets/` (its commit records), sorted.
    pub fn standby_manifests(&self) -> Vec<String> {
        sorted_names(&self.dir.path().join("state-stb/sets"))
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

/// A replay command (TOML array) for a standby config: a script in `dir`
/// that writes its argv to `replay-args`, `$SNAPSITE_SET_ID` to
/// `replay-env` and the redolog it was given (`<mount>/log`) to
/// `replay-redolog`, then exits with the code in `replay-rc` (0 when absent).
pub fn replay_recorder(dir: &Path) -> String {
    let script = dir.join("replay.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/replay-args\necho \"$SNAPSITE_SET_ID\" > {d}/replay-env\ncat \"$3/log\" > {d}/replay-redolog 2>/dev/null\nexit $(cat {d}/replay-rc 2>/dev/null || echo 0)\n",
            d = dir.display()
        ),
    )
    .unwrap();
    sh(&["chmod", "+x", script.to_str().unwrap()]);
    format!(
        "[\"{}\", \"--fromTime\", \"{{from_time}}\", \"{{mount:redolog}}\"]",
        script.display()
    )
}

/// A pass-through filter (a `python3 -c` shell command, forwarding data as
/// it arrives) that cuts the stream after `at` bytes (`mode` "cut") or
/// XORs the byte at offset `at` with `mask` ("flip").
pub fn byte_filter(mode: &str, at: usize, mask: u8) -> String {
    format!(
        "python3 -c 'import sys\nmode, at, mask = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\ni, o = sys.stdin.buffer, sys.stdout.buffer\npos = 0\nwhile True:\n  c = i.read1(65536)\n  if not c: break\n  if mode == \"cut\" and pos + len(c) >= at:\n    o.write(c[:at - pos]); o.flush(); sys.exit(0)\n  if mode == \"flip\" and pos <= at < pos + len(c):\n    c = bytearray(c); c[at - pos] ^= mask; c = bytes(c)\n  o.write(c); o.flush(); pos += len(c)\n' {mode} {at} {mask}"
    )
}

/// The roles of the snapshots a `ship --json` report says it sent, in order.
pub fn sent_roles(report: &serde_json::Value) -> Vec<&str> {
    report["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect()
}

/// The command exited with `code`; else fail with its whole output.
pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", both(o));
}

/// Write `text` to `path` and make it executable.
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    sh(&["chmod", "+x", path.to_str().expect("utf-8 path")]);
}

/// A command's stdout, lossily.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A command's status, stdout and stderr, for an assertion's message.
pub use output::text as both;

/// `snapsite --config cfg args…` started with its output discarded (for
/// tests that watch or kill the process, not read it).
pub fn spawn_snapsite(cfg: &Path, args: &[&str]) -> std::process::Child {
    Command::new(snapsite_exe())
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// The names in directory `dir`, sorted (none when it cannot be read).
pub fn sorted_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A config of site `site` with one btrfs `redolog` volume, its state,
/// live and snapshot directories under `dir` (nothing else).
pub fn redolog_site_toml(site: &str, dir: &Path) -> String {
    format!(
        "site = \"{site}\"\nstate_dir = \"{0}/state\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"{0}/live\"\nsnapshot_dir = \"{0}/snap\"\n",
        dir.display()
    )
}

/// Append `text` to the file at `path` (a config: more keys or sections).
pub fn append_to(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).unwrap();
}

/// `out`'s stdout as JSON when `what` exited 0; otherwise a panic naming
/// `what` with its [`output::text`].
#[track_caller]
pub fn success_json(what: &str, out: &Output) -> serde_json::Value {
    let stdout = output::success(what, out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: {e}: {stdout}"))
}

/// The entry of JSON array `list` whose `key` is `value` (panics, showing
/// `list`, when there is none).
#[track_caller]
pub fn json_entry<'a>(
    list: &'a serde_json::Value,
    key: &str,
    value: &str,
) -> &'a serde_json::Value {
    let a = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    a.iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no entry with {key} {value}: {list}"))
}

/// `text` holds each of `wants` (else a panic naming the first missing one
/// and showing `text`).
#[track_caller]
pub fn assert_has_all(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "`{want}` missing from:\n{text}");
    }
}

/// The strings of JSON array `v` (panics when it is not an array of strings).
pub fn json_strs(v: &serde_json::Value) -> Vec<String> {
    let a = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    a.iter()
        .map(|x| {
            x.as_str()
                .unwrap_or_else(|| panic!("not a string: {x}"))
                .to_string()
        })
        .collect()
}

/// The names in directory `dir`, sorted; panics when it cannot be read
/// (for checks where a missing directory is itself a failure).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut v: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
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

/// `dir/<name>.toml`: a standby (state in `dir/state`) with the four
/// [`ROLES`] as btrfs volumes under `dir` (`live`, `recv`, mountpoints in
/// `app`; nothing needs to exist for a standby's check), then `tail`.
pub fn standby_config(dir: &Path, name: &str, tail: &str) -> PathBuf {
    let mut s = sitetoml::volumes_toml("standby", dir, &ROLES, "recv", Some("app"));
    s.push_str(tail);
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, s).unwrap();
    p
}

/// The `Welcome` of peer `b`: btrfs volumes `mysql` and `redolog`, each
/// holding `sets`, all committed; `compress` the codecs it offers.
pub fn welcome_of_b(
    sets: Vec<String>,
    compress: Vec<String>,
    role: Option<&str>,
    generation: Option<u64>,
) -> snapsite::wire::stream::Msg {
    snapsite::wire::stream::Msg::Welcome {
        protocol: snapsite::wire::stream::PROTOCOL_VERSION,
        site: "b".into(),
        volumes: ["mysql", "redolog"]
            .iter()
            .map(|r| snapsite::wire::stream::VolumeInventory {
                role: r.to_string(),
                backend: "btrfs".into(),
                snapshots: sets.clone(),
                resumable: None,
            })
            .collect(),
        committed: sets,
        compress,
        role: role.map(String::from),
        generation,
    }
}
