//! VM test suite: tests that need real OpenZFS and real LVM thin, run INSIDE
//! the snapsite storage VM (see `docs/vmlab.md`). Built only with
//! `--features vm`, so a plain `cargo test` on the host never builds it.
//!
//! Run it with `scripts/vmlab/test`, or by hand after `scripts/vmlab/setup`:
//!
//! ```text
//! CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=$PWD/scripts/vmlab/vm-exec \
//!     cargo test --features vm --test vm
//! ```
//!
//! The whole test binary runs in ONE guest, one test at a time (the guest
//! sets `RUST_TEST_THREADS=1`). Tests share that guest, so each one brings its
//! own storage and leaves nothing behind:
//!
//! - names come from [`unique_name`] (pools, datasets, VGs, files);
//! - storage lives on sparse files under [`scratch`] (`/scratch`, ext4 on a
//!   fresh virtio disk made for this guest): ZFS file vdevs, or
//!   [`LoopDevice`]s for LVM physical volumes;
//! - a test that needs a whole virtio disk takes one with [`claim_disk`]
//!   (spare disks are handed out once per guest; `SNAPSITE_VMLAB_DISKS` sets
//!   how many the runner attaches);
//! - guards ([`Zpool`], [`VolumeGroup`], [`LoopDevice`]) tear their storage
//!   down on drop, also when the test panics. Declare them in the order they
//!   are built: Rust drops in reverse, so a VG goes before its loop device.
//!
//! Every test starts with `require_lab!();`: outside the guest it skips with
//! a one-line reason, or fails when `SNAPSITE_REQUIRE_REAL=1` or `CI=true`.
//! External programs run through [`sh`] / [`pipe`] with argv vectors, never
//! through a shell; failures panic with the argv, the exit status and stderr.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Skip (or, when real storage is required, fail) unless running in the VM.
/// `require_lab!(full: "the LVM follow test")`: a long variant, which also
/// skips (with that reason) unless `SNAPSITE_VM_FULL=1` ([`vm_full`]).
macro_rules! require_lab {
    () => {
        if !$crate::lab_ready() {
            return;
        }
    };
    (full: $what:expr) => {
        require_lab!();
        if !$crate::vm_full() {
            eprintln!("SKIP: SNAPSITE_VM_FULL=1 runs {}", $what);
            return;
        }
    };
}

mod archive;
#[path = "../common/cmdcount.rs"]
mod cmdcount;
mod crash;
#[path = "../common/crashcheck.rs"]
mod crashcheck;
mod cycle;
mod drill;
#[path = "../common/drillcheck.rs"]
mod drillcheck;
mod fanout;
mod follow;
mod gaps;
mod hostile;
mod init;
#[path = "../common/initcheck.rs"]
mod initcheck;
mod listing;
mod lvm;
mod lvmspace;
#[path = "../common/mailgen.rs"]
mod mailgen;
#[path = "../common/output.rs"]
mod output;
mod ransom;
#[path = "../common/redolog.rs"]
mod redolog;
mod redostream;
#[path = "../common/rgwlab.rs"]
#[allow(dead_code)] // the host's lab start and stop; the guest reads `env` only
mod rgwlab;
#[path = "../common/shipcheck.rs"]
mod shipcheck;
mod sites;
mod smoke;
mod wan;
mod zfs;

pub use sites::*;

/// Written by `scripts/vmlab/guest-entry` once the guest is prepared.
pub const GUEST_MARKER: &str = "/run/snapsite-vmlab/guest";
/// Spare virtio disks of this guest, one device path per line.
const DISK_LIST: &str = "/run/snapsite-vmlab/disks";
const CLAIM_DIR: &str = "/run/snapsite-vmlab/claimed";

pub const MIB: u64 = 1024 * 1024;

// ---------------------------------------------------------------------------
// Where are we?

/// True inside a prepared storage VM.
pub fn in_guest() -> bool {
    Path::new(GUEST_MARKER).exists() && std::env::var("SNAPSITE_VMLAB_GUEST").as_deref() == Ok("1")
}

/// `SNAPSITE_REQUIRE_REAL=1` or `CI=true`: a missing lab is a failure.
pub fn real_storage_required() -> bool {
    std::env::var("SNAPSITE_REQUIRE_REAL").as_deref() == Ok("1")
        || std::env::var("CI").as_deref() == Ok("true")
}

/// Whether the test may go on; prints why not. Panics instead of skipping
/// when real storage is required.
pub fn lab_ready() -> bool {
    if in_guest() {
        return true;
    }
    let why = "not inside the snapsite storage VM (run scripts/vmlab/test, see docs/vmlab.md)";
    if real_storage_required() {
        panic!("{why}; SNAPSITE_REQUIRE_REAL=1 or CI=true forbids skipping");
    }
    eprintln!("skipped: {why}");
    false
}

/// `SNAPSITE_VM_FULL=1`: also run the long variants the default run leaves
/// out (each test says which; their times are in docs/testing.md).
pub fn vm_full() -> bool {
    std::env::var("SNAPSITE_VM_FULL").as_deref() == Ok("1")
}

/// The snapsite binary of this build (a host path, visible in the guest):
/// `SNAPSITE_VMLAB_BIN` when set (scripts/vmlab/test runs private copies,
/// so that a host build re-linking target/debug/snapsite during the run
/// cannot pull the file from under a guest's exec), else cargo's.
pub fn snapsite_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| match std::env::var("SNAPSITE_VMLAB_BIN") {
        Ok(p) if !p.is_empty() => p,
        _ => env!("CARGO_BIN_EXE_snapsite").to_string(),
    })
}

// ---------------------------------------------------------------------------
// Driving snapsite (shared by the backend suites)

/// `snapsite --config CFG ARGS...`, with `path_prefix` put first on PATH
/// (fake tools), whatever the exit status.
pub fn snapsite_run(cfg: &Path, args: &[&str], path_prefix: Option<&Path>) -> Output {
    let mut argv = vec![
        snapsite_bin(),
        "--config",
        cfg.to_str().expect("utf-8 path"),
    ];
    argv.extend_from_slice(args);
    let mut cmd = command(&argv);
    if let Some(p) = path_prefix {
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                p.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", display_argv(&argv)))
}

/// Like [`snapsite_run`] without fake tools; panics unless it exits 0. Returns stdout.
pub fn snapsite_ok(cfg: &Path, args: &[&str]) -> String {
    output::success(
        &format!("snapsite {args:?}"),
        &snapsite_run(cfg, args, None),
    )
}

/// [`snapsite_ok`] of a `--json` command, parsed.
pub fn snapsite_json(cfg: &Path, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&snapsite_ok(cfg, args)).expect("snapsite printed JSON")
}

/// `snapsite snapshot --json` of a primary's config: the new set's id.
pub fn snapshot_id(cfg: &Path) -> String {
    let v = snapsite_json(cfg, &["snapshot", "--json"]);
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("snapshot --json printed no id: {v}"))
        .to_string()
}

/// How many manifests (committed sets) a site's `state_dir` holds.
pub fn manifest_count(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir.join("sets"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A copy of primary config `pri_cfg` (written to `dir`) whose transport
/// runs the standby's `serve` behind a filter that cuts the stream after
/// `at` bytes, passing data through as it arrives.
pub fn cutting_config(dir: &Path, pri_cfg: &Path, stb_cfg: &Path, at: u64) -> PathBuf {
    damaging_config(dir, pri_cfg, stb_cfg, at, None)
}

/// Like `cutting_config`, and when `flip` is given the byte at that offset
/// of the primary's stream (before the cut) arrives with its bits flipped.
pub fn damaging_config(
    dir: &Path,
    pri_cfg: &Path,
    stb_cfg: &Path,
    at: u64,
    flip: Option<u64>,
) -> PathBuf {
    let script = dir.join("cut.sh");
    let flip = flip.map_or(-1, |f| f as i64);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\npython3 -c 'import sys\nat, flip = int(sys.argv[1]), int(sys.argv[2])\ni, o = sys.stdin.buffer, sys.stdout.buffer\npos = 0\nwhile True:\n  c = i.read1(65536)\n  if not c: break\n  if pos <= flip < pos + len(c):\n    c = bytearray(c); c[flip - pos] ^= 0xff; c = bytes(c)\n  if pos + len(c) >= at:\n    o.write(c[:at - pos]); o.flush(); sys.exit(0)\n  o.write(c); o.flush(); pos += len(c)\n' {at} {flip} | exec {} serve --stdio --config {}\n",
            snapsite_bin(),
            stb_cfg.display()
        ),
    )
    .expect("write cut.sh");
    script_config(pri_cfg, &script, &dir.join("primary-cut.toml"))
}

/// Makes `script` executable and writes `cfg`: the primary config
/// `pri_cfg` with a `[standby]` whose transport runs `script`.
pub fn script_config(pri_cfg: &Path, script: &Path, cfg: &Path) -> PathBuf {
    sh(&["chmod", "+x", script.to_str().expect("utf-8 path")]);
    let text = std::fs::read_to_string(pri_cfg).expect("read primary config");
    let i = text
        .find("[standby]")
        .expect("primary config has a [standby] section");
    std::fs::write(
        cfg,
        format!(
            "{}[standby]\ntransport = \"command\"\ncommand = [\"{}\"]\n",
            &text[..i],
            script.display()
        ),
    )
    .unwrap_or_else(|e| panic!("write {}: {e}", cfg.display()));
    cfg.to_path_buf()
}

// ---------------------------------------------------------------------------
// Running programs

fn display_argv(argv: &[&str]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=@#:,+%".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn command(argv: &[&str]) -> Command {
    assert!(!argv.is_empty(), "empty argv");
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

fn spawn(cmd: &mut Command, argv: &[&str]) -> Child {
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", display_argv(argv)))
}

fn check(argv: &[&str], status: ExitStatus, stderr: &[u8]) {
    if !status.success() {
        panic!(
            "`{}` failed ({status}):\n{}",
            display_argv(argv),
            String::from_utf8_lossy(stderr).trim_end()
        );
    }
}

/// Runs `argv` and returns its output whatever the exit status.
pub fn run(argv: &[&str]) -> Output {
    command(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", display_argv(argv)))
}

/// Runs `argv`; panics with argv, status and stderr unless it exits 0.
/// Returns stdout.
pub fn sh(argv: &[&str]) -> String {
    let out = run(argv);
    check(argv, out.status, &out.stderr);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `argv` of a guard's drop: a failure is printed as a warning with
/// the argv and stderr, not a panic (a drop may run while a test panics).
fn teardown(argv: &[&str]) {
    let out = run(argv);
    if !out.status.success() {
        eprintln!(
            "warning: `{}` failed ({}): {}",
            display_argv(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
}

/// Reads a child's stderr on a thread (so neither end of a pipe can block).
fn collect_stderr(child: &mut Child) -> thread::JoinHandle<Vec<u8>> {
    let mut err = child.stderr.take().expect("stderr piped");
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    })
}

/// `from | to`: both must exit 0. Returns `to`'s stdout.
pub fn pipe(from: &[&str], to: &[&str]) -> String {
    let mut a = spawn(
        command(from).stdout(Stdio::piped()).stderr(Stdio::piped()),
        from,
    );
    let a_err = collect_stderr(&mut a);
    let a_out = a.stdout.take().expect("stdout piped");
    let b = spawn(
        command(to)
            .stdin(Stdio::from(a_out))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        to,
    );
    let b_out = b.wait_with_output().expect("wait for pipe reader");
    let a_status = a.wait().expect("wait for pipe writer");
    let a_err = a_err.join().expect("stderr reader");
    check(from, a_status, &a_err);
    check(to, b_out.status, &b_out.stderr);
    String::from_utf8_lossy(&b_out.stdout).into_owned()
}

/// `from | head -c limit | to`, then `from` is killed: simulates a transport
/// cut after `limit` bytes. Returns `to`'s output (its status is not checked)
/// and how many bytes it was given.
pub fn pipe_cut(from: &[&str], to: &[&str], limit: u64) -> (Output, u64) {
    let mut a = spawn(
        command(from).stdout(Stdio::piped()).stderr(Stdio::null()),
        from,
    );
    let mut b = spawn(
        command(to)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        to,
    );
    let mut src = a.stdout.take().expect("stdout piped");
    let mut dst = b.stdin.take().expect("stdin piped");
    let copied = {
        let mut buf = vec![0u8; 128 * 1024];
        let mut left = limit;
        let mut copied = 0u64;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = src.read(&mut buf[..want]).expect("read from pipe writer");
            if n == 0 {
                break;
            }
            if dst.write_all(&buf[..n]).is_err() {
                break; // reader gave up early
            }
            left -= n as u64;
            copied += n as u64;
        }
        copied
    };
    drop(dst); // the cut: the reader sees end-of-stream mid-way
    drop(src);
    let _ = a.kill();
    let _ = a.wait();
    let out = b.wait_with_output().expect("wait for pipe reader");
    (out, copied)
}

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Names, files and data

/// A name no other test of this guest uses: `<prefix><pid>n<counter>`. Only
/// `[a-z0-9]`, so it is valid as a ZFS pool/dataset and an LVM VG/LV name and
/// needs no escaping in device-mapper names. `prefix` must start with a letter.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert!(
        prefix.starts_with(|c: char| c.is_ascii_lowercase())
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "unique_name prefix must be [a-z][a-z0-9]*: {prefix:?}"
    );
    format!(
        "{prefix}{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The guest's scratch filesystem (ext4 on a fresh virtio disk).
pub fn scratch() -> PathBuf {
    PathBuf::from(std::env::var("SNAPSITE_VMLAB_SCRATCH").unwrap_or_else(|_| "/scratch".into()))
}

/// A new sparse file of `size` bytes under [`scratch`].
pub fn sparse_file(name: &str, size: u64) -> PathBuf {
    let path = scratch().join(format!("{name}.img"));
    let f = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.set_len(size)
        .unwrap_or_else(|e| panic!("truncate {}: {e}", path.display()));
    path
}

/// A number in `lo..hi` from the clock (a cut offset that differs run
/// to run: the tests print it).
pub fn random_between(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + (nanos ^ (nanos >> 7)) % (hi - lo)
}

/// Deterministic pseudo-random bytes (xorshift64*): incompressible test data
/// that can be regenerated to check what a device or file holds.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `pattern(seed, len)` at `offset` of a file or block device and
/// syncs it to stable storage.
pub fn write_pattern(path: &Path, offset: u64, seed: u64, len: usize) {
    write_at(path, offset, &pattern(seed, len));
}

/// Writes `data` at `offset` of a file or block device and syncs it to
/// stable storage.
pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let len = data.len();
    let mut f = OpenOptions::new()
        .write(true)
        .create(!path.starts_with("/dev"))
        .truncate(false)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for writing: {e}", path.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(data)
        .unwrap_or_else(|e| panic!("write {len} bytes at {offset} to {}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("fsync {}: {e}", path.display()));
}

/// Reads `len` bytes at `offset` of a file or block device.
pub fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("read {len} bytes at {offset} from {}: {e}", path.display()));
    buf
}

/// Asserts that `path` holds `pattern(seed, len)` at `offset`.
pub fn assert_pattern(path: &Path, offset: u64, seed: u64, len: usize) {
    let got = read_at(path, offset, len);
    if let Some(i) = got
        .iter()
        .zip(pattern(seed, len))
        .position(|(a, b)| *a != b)
    {
        panic!(
            "{}: bytes at {offset}..+{len} are not pattern {seed}: first difference at byte {}",
            path.display(),
            offset + i as u64
        );
    }
}

/// SHA-256 of a file, from `sha256sum`.
pub fn sha256(path: &Path) -> String {
    let p = path.to_str().expect("utf-8 path");
    let out = sh(&["sha256sum", "--", p]);
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_string()
}

// ---------------------------------------------------------------------------
// Disks and loop devices

/// Takes a spare virtio disk of this guest for the rest of the run (no other
/// test gets it). Panics when none is left.
pub fn claim_disk() -> PathBuf {
    let list = std::fs::read_to_string(DISK_LIST).unwrap_or_default();
    std::fs::create_dir_all(CLAIM_DIR).expect("create claim dir");
    for dev in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let name = Path::new(dev).file_name().expect("device name");
        let claim = Path::new(CLAIM_DIR).join(name);
        if OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
            .is_ok()
        {
            return PathBuf::from(dev);
        }
    }
    panic!(
        "no spare virtio disk left (have: {:?}); attach more with SNAPSITE_VMLAB_DISKS=\"4G 4G 4G\"",
        list.lines().collect::<Vec<_>>()
    );
}

/// Writes a GPT with one partition spanning `disk`; returns the partition.
/// (Without udev, ZFS waits in vain for whole-disk vdevs it partitions
/// itself, so pools on whole disks go through this.)
pub fn single_partition(disk: &Path) -> PathBuf {
    let d = disk.to_str().expect("utf-8 path");
    let mut child = spawn(
        command(&["sfdisk", "-q", d])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped()),
        &["sfdisk", "-q", d],
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"label: gpt\n,,\n")
        .expect("write to sfdisk");
    let out = child.wait_with_output().expect("wait for sfdisk");
    check(&["sfdisk", "-q", d], out.status, &out.stderr);
    let part = PathBuf::from(format!("{d}1"));
    wait_for(
        &format!("{} to appear", part.display()),
        Duration::from_secs(10),
        || part.exists(),
    );
    part
}

/// A loop device over a file, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(file: &Path) -> LoopDevice {
        let f = file.to_str().expect("utf-8 path");
        let dev = sh(&["losetup", "--find", "--show", "--", f])
            .trim()
            .to_string();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        LoopDevice {
            path: PathBuf::from(dev),
        }
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        teardown(&["losetup", "-d", self.path_str()]);
    }
}

// ---------------------------------------------------------------------------
// ZFS

/// A ZFS pool, destroyed on drop. Datasets mount under `/mnt/<pool>`.
pub struct Zpool {
    pub name: String,
}

impl Zpool {
    /// `zpool create` with `cachefile=none` (nothing outlives the guest);
    /// `options` are extra `-o`/`-O` arguments.
    pub fn create(name: &str, vdevs: &[&Path], options: &[&str]) -> Zpool {
        let mountpoint = format!("mountpoint=/mnt/{name}");
        let mut argv = vec![
            "zpool",
            "create",
            "-f",
            "-o",
            "cachefile=none",
            "-O",
            &mountpoint,
        ];
        argv.extend_from_slice(options);
        argv.push(name);
        argv.extend(vdevs.iter().map(|v| v.to_str().expect("utf-8 path")));
        sh(&argv);
        Zpool {
            name: name.to_string(),
        }
    }

    /// A pool on a new sparse file vdev of `size` bytes in the scratch fs.
    pub fn on_file(name: &str, size: u64, options: &[&str]) -> Zpool {
        let file = sparse_file(&format!("{name}-vdev"), size);
        Zpool::create(name, &[&file], options)
    }

    /// `<pool>/<rel>`
    pub fn dataset(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name)
    }
}

impl Drop for Zpool {
    fn drop(&mut self) {
        teardown(&["zpool", "destroy", "-f", &self.name]);
    }
}

/// `zfs get -H -p -o value <prop> <dataset>`
pub fn zfs_get(prop: &str, dataset: &str) -> String {
    sh(&["zfs", "get", "-H", "-p", "-o", "value", prop, dataset])
        .trim()
        .to_string()
}

/// Whether a dataset, snapshot or bookmark exists.
pub fn zfs_exists(name: &str) -> bool {
    run(&["zfs", "list", "-H", "-t", "all", "-o", "name", name])
        .status
        .success()
}

/// Where a mounted dataset is mounted.
pub fn zfs_mountpoint(dataset: &str) -> PathBuf {
    assert_eq!(
        zfs_get("mounted", dataset),
        "yes",
        "{dataset} is not mounted"
    );
    PathBuf::from(zfs_get("mountpoint", dataset))
}

// ---------------------------------------------------------------------------
// LVM

/// An LVM volume group on physical volumes, removed (with its LVs and PV
/// labels) on drop.
pub struct VolumeGroup {
    pub name: String,
    pvs: Vec<String>,
}

impl VolumeGroup {
    pub fn create(name: &str, pvs: &[&Path]) -> VolumeGroup {
        let pvs: Vec<String> = pvs
            .iter()
            .map(|p| p.to_str().expect("utf-8 path").to_string())
            .collect();
        let pv_refs: Vec<&str> = pvs.iter().map(String::as_str).collect();
        let mut argv = vec!["pvcreate", "-y", "-ff"];
        argv.extend_from_slice(&pv_refs);
        sh(&argv);
        let mut argv = vec!["vgcreate", "-y", name];
        argv.extend_from_slice(&pv_refs);
        sh(&argv);
        VolumeGroup {
            name: name.to_string(),
            pvs,
        }
    }

    /// `<vg>/<lv>`
    pub fn lv(&self, lv: &str) -> String {
        format!("{}/{lv}", self.name)
    }

    /// `/dev/<vg>/<lv>`
    pub fn dev(&self, lv: &str) -> PathBuf {
        PathBuf::from(format!("/dev/{}/{lv}", self.name))
    }

    /// `lvs --noheadings -o <field> <vg>/<lv>`, trimmed.
    pub fn lvs_field(&self, lv: &str, field: &str) -> String {
        sh(&[
            "lvs",
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "-o",
            field,
            &self.lv(lv),
        ])
        .trim()
        .to_string()
    }
}

impl Drop for VolumeGroup {
    fn drop(&mut self) {
        teardown(&["vgremove", "-ff", "-y", &self.name]);
        for pv in &self.pvs {
            let _ = run(&["pvremove", "-ff", "-y", pv]);
        }
    }
}
