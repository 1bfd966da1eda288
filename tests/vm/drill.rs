//! The failover drill (tests/drill.rs, scripts/demo) on real ZFS and on
//! real LVM thin: the reference mail store (MariaDB on the mysql volume,
//! blobs, FTS5 index, redolog; plugins/mailstore) written at a steady rate
//! on the primary, `snapsite run` at a compressed cadence shipping to a
//! standby config in the same guest (its own pool / its own VG), the primary
//! killed hard (writer, MariaDB and `snapsite run` with its `serve`, all
//! SIGKILL, at a random moment), `snapsite failover` on the standby with
//! the mailstore replay plugin, and the same verdict as the btrfs drill:
//! nothing acknowledged before the last shipped redolog snapshot may be
//! lost, and rows, blobs and index must agree with the redolog.
//!
//! - ZFS: all four volumes are datasets of ONE pool, so every full set is
//!   one `zfs snapshot` call: the failover report's set members all carry
//!   the same snapshot moment (skew 0), the manifest one atomic group.
//! - LVM: all four volumes are ext4 on thin LVs of one thin pool; members
//!   are snapshotted one after the other (skew > 0, shown and bounded).
//!
//! Runs in a non-UTC zone so `--fromTime` really is local time. MariaDB's
//! system tables are created once per guest (`mariadb-install-db` is slow
//! under TCG) and copied onto each drill's mysql volume.

use super::*;
use crate::drillcheck::{assert_zero_loss, is_zmplayredo_time};

use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

const ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];
/// The cadence. Under software emulation shipping a full set of four volumes
/// takes 20-90 s (measured: about 2 s per volume even when empty, plus the
/// commit; the first LVM full set, 90 s), so a short full-set interval would
/// keep `snapsite run` taking full sets and rarely a redolog snapshot. One
/// full set (intervals are slots aligned to the clock: a day's slot is not
/// crossed during a drill but at midnight UTC), then a redolog snapshot every
/// 3 s: the admin guide's timeline, compressed.
const FULL_EVERY: u64 = 86400;
const REDO_EVERY: u64 = 3;
/// Messages per second.
const RATE: u64 = 20;
/// Random delay before the kill, at most this many milliseconds.
const KILL_JITTER_MS: u64 = 3000;
const SAFETY_MARGIN: &str = "5s";
const TZ: &str = "America/New_York";
/// A small InnoDB redo log on the primary (the default is 96 MiB): less to
/// ship in the first full set. The standby's MariaDB (started by the replay
/// plugin with the defaults) resizes it after crash recovery.
const INNODB_LOG: &str = "--innodb-log-file-size=8M";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Backend {
    Zfs,
    Lvm,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The mailstore binary built next to snapsite (`scripts/vmlab/test` builds
/// it: `cargo build -p mailstore`).
fn mailstore_bin() -> PathBuf {
    let p = Path::new(snapsite_bin()).with_file_name("mailstore");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p mailstore` (scripts/vmlab/test does)",
        p.display()
    );
    p
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A command with the drill's environment: argv only, stdin closed, the
/// drill's time zone.
fn drill_cmd(argv: &[&str]) -> Command {
    let mut c = Command::new(argv[0]);
    c.args(&argv[1..])
        .env("LC_ALL", "C")
        .env("TZ", TZ)
        .stdin(Stdio::null());
    c
}

fn log_file(path: &Path) -> Stdio {
    Stdio::from(File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display())))
}

fn tail(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn mariadb_up(sock: &Path) -> bool {
    drill_cmd(&[
        "mariadb",
        "--no-defaults",
        "--socket",
        path_str(sock),
        "--user=root",
        "-e",
        "select 1",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .map(|s| s.success())
    .unwrap_or(false)
}

/// MariaDB's system tables, created once per guest under the scratch fs
/// and copied (`cp -a`) onto each drill's mysql volume.
fn mariadb_template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = scratch().join(unique_name("mariadbtemplate"));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let t = Instant::now();
        let out = drill_cmd(&[
            "mariadb-install-db",
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--user=root",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            INNODB_LOG,
        ])
        .output()
        .expect("start mariadb-install-db");
        crate::output::success("mariadb-install-db", &out);
        eprintln!(
            "drill: mariadb-install-db (once per guest) took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        data
    })
}

/// The storage of both sites. Fields drop in order: VGs before their loop
/// devices.
enum Storage {
    /// `pri`: the four datasets; `stb`: `replica/<role>` and the failover
    /// clones `live/<role>`.
    Zfs { pri: Zpool, stb: Zpool },
    /// Thin pool `pool` in each VG; primary LVs `<role>` (ext4, mounted
    /// under `dir/pri`), standby replicas `<role>` and copies `<role>live`.
    Lvm {
        pri: VolumeGroup,
        stb: VolumeGroup,
        _pri_lo: LoopDevice,
        _stb_lo: LoopDevice,
    },
}

struct Drill {
    backend: Backend,
    dir: PathBuf,
    pri_cfg: PathBuf,
    stb_cfg: PathBuf,
    run: PathBuf,
    /// The primary's processes: MariaDB, the writer.
    procs: Vec<Child>,
    /// `snapsite run` (a process group leader: its `serve` goes with it).
    run_loop: Option<Child>,
    storage: Storage,
}

fn thin_pool(vg: &VolumeGroup) {
    sh(&[
        "lvcreate",
        "-y",
        "-L",
        "1600M",
        "--chunksize",
        "64k",
        "-T",
        &vg.lv("pool"),
    ]);
}

impl Drill {
    fn new(backend: Backend) -> Drill {
        let dir = scratch().join(unique_name("drill"));
        let run = dir.join("run");
        std::fs::create_dir_all(&run).unwrap();
        let storage = match backend {
            Backend::Zfs => {
                let pri = Zpool::on_file(&unique_name("dzp"), 1024 * MIB, &[]);
                let stb = Zpool::on_file(&unique_name("dzs"), 1024 * MIB, &[]);
                for r in ROLES {
                    sh(&["zfs", "create", &pri.dataset(r)]);
                }
                for d in ["replica", "live"] {
                    sh(&["zfs", "create", "-o", "mountpoint=none", &stb.dataset(d)]);
                }
                Storage::Zfs { pri, stb }
            }
            Backend::Lvm => {
                let pname = unique_name("dlp");
                let sname = unique_name("dls");
                let pri_lo = LoopDevice::attach(&sparse_file(&pname, 2048 * MIB));
                let stb_lo = LoopDevice::attach(&sparse_file(&sname, 2048 * MIB));
                let pri = VolumeGroup::create(&pname, &[&pri_lo.path]);
                let stb = VolumeGroup::create(&sname, &[&stb_lo.path]);
                thin_pool(&pri);
                thin_pool(&stb);
                for r in ROLES {
                    thin_lv(&pri, r, "256M");
                    mount_ext4(&pri.dev(r), &dir.join("pri").join(r));
                }
                Storage::Lvm {
                    pri,
                    stb,
                    _pri_lo: pri_lo,
                    _stb_lo: stb_lo,
                }
            }
        };
        let mut drill = Drill {
            backend,
            pri_cfg: dir.join("primary.toml"),
            stb_cfg: dir.join("standby.toml"),
            dir,
            run,
            procs: Vec::new(),
            run_loop: None,
            storage,
        };
        drill.write_configs();
        drill
    }

    fn write_configs(&mut self) {
        let d = self.dir.display();
        let mut pri = format!("site = \"mail-a\"\nstate_dir = \"{d}/state-primary\"\n");
        let mut stb = format!("site = \"mail-b\"\nstate_dir = \"{d}/state-standby\"\n");
        for r in ROLES {
            let backend = match self.backend {
                Backend::Zfs => "zfs",
                Backend::Lvm => "lvm",
            };
            let (source, live, replica) = match &self.storage {
                Storage::Zfs { pri, stb } => (
                    pri.dataset(r),
                    stb.dataset(&format!("live/{r}")),
                    stb.dataset(&format!("replica/{r}")),
                ),
                Storage::Lvm { pri, stb, .. } => {
                    (pri.lv(r), stb.lv(&format!("{r}live")), stb.lv(r))
                }
            };
            pri.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"{backend}\"\nsource = \"{source}\"\n"
            ));
            stb.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"{backend}\"\nsource = \"{live}\"\nreplica = \"{replica}\"\nmountpoint = \"{d}/app/{r}\"\n"
            ));
        }
        let set = format!("[set]\nsafety_margin = \"{SAFETY_MARGIN}\"\n");
        pri.push_str(&set);
        stb.push_str(&set);
        pri.push_str(&format!(
            "[schedule]\nfull_set_interval = \"{FULL_EVERY}s\"\nredolog_interval = \"{REDO_EVERY}s\"\nretry_min = \"1s\"\nretry_max = \"{REDO_EVERY}s\"\n"
        ));
        // The standby's `serve` in its own session: killing the primary
        // (the process group of `snapsite run`) must not kill the standby's
        // end, as it would not on two machines; it sees the stream end. Its
        // PID is recorded so the test can wait for it before tearing down.
        let serve = self.dir.join("serve.sh");
        std::fs::write(
            &serve,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec setsid {} serve --stdio --config {}\n",
                self.dir.join("serve.pid").display(),
                snapsite_bin(),
                self.stb_cfg.display()
            ),
        )
        .unwrap();
        sh(&["chmod", "+x", path_str(&serve)]);
        pri.push_str(&format!(
            "[standby]\ntransport = \"command\"\ncommand = [\"{}\"]\n",
            serve.display()
        ));
        let replay = [
            path_str(&repo().join("plugins/mailstore/replay")).to_string(),
            "--fromTime".into(),
            "{from_time}".into(),
            "--mysql".into(),
            "{mount:mysql}".into(),
            "--blob".into(),
            "{mount:blob}".into(),
            "--index".into(),
            "{mount:index}".into(),
            "--redolog".into(),
            "{mount:redolog}".into(),
            "--run".into(),
            path_str(&self.run.join("standby")).to_string(),
            "--mailstore".into(),
            path_str(&mailstore_bin()).to_string(),
        ];
        stb.push_str(&format!(
            "[replay]\ncommand = {}\n",
            serde_json::to_string(&replay).unwrap()
        ));
        std::fs::write(&self.pri_cfg, pri).unwrap();
        std::fs::write(&self.stb_cfg, stb).unwrap();
    }

    /// Where the primary's live data of `role` is mounted.
    fn primary(&self, role: &str) -> PathBuf {
        match &self.storage {
            Storage::Zfs { pri, .. } => zfs_mountpoint(&pri.dataset(role)),
            Storage::Lvm { .. } => self.dir.join("pri").join(role),
        }
    }

    fn app(&self, role: &str) -> PathBuf {
        self.dir.join("app").join(role)
    }

    fn volumes_args(&self, sock: &Path, path: impl Fn(&str) -> PathBuf) -> Vec<String> {
        let mut v = vec!["--socket".to_string(), path_str(sock).to_string()];
        for r in ["blob", "index", "redolog"] {
            v.push(format!("--{r}"));
            v.push(path_str(&path(r)).to_string());
        }
        v
    }

    fn primary_args(&self) -> Vec<String> {
        self.volumes_args(&self.run.join("primary.sock"), |r| self.primary(r))
    }

    /// MariaDB on the primary's mysql volume, the store initialised, the
    /// writer started.
    fn start_mail_store(&mut self) {
        let data = self.primary("mysql").join("data");
        sh(&["cp", "-a", path_str(mariadb_template()), path_str(&data)]);
        let sock = self.run.join("primary.sock");
        let db = drill_cmd(&[
            "mariadbd",
            "--no-defaults",
            &format!("--datadir={}", data.display()),
            "--user=root",
            &format!("--socket={}", sock.display()),
            "--skip-networking",
            &format!(
                "--pid-file={}",
                self.run.join("primary-mysqld.pid").display()
            ),
            &format!(
                "--log-error={}",
                self.run.join("primary-mariadbd.err").display()
            ),
            "--innodb-buffer-pool-size=64M",
            INNODB_LOG,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mariadbd");
        self.procs.push(db);
        let err = self.run.join("primary-mariadbd.err");
        wait_for("MariaDB on the primary", Duration::from_secs(180), || {
            if let Ok(Some(st)) = self.procs[0].try_wait() {
                panic!("mariadbd exited ({st}):\n{}", tail(&err, 20));
            }
            mariadb_up(&sock)
        });
        let ms = mailstore_bin();
        let args = self.primary_args();
        let mut argv = vec![path_str(&ms), "init"];
        argv.extend(args.iter().map(String::as_str));
        let out = drill_cmd(&argv).output().expect("start mailstore init");
        assert!(
            out.status.success(),
            "mailstore init failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let acks = self.run.join("acks");
        let rate = RATE.to_string();
        let mut argv = vec![path_str(&ms), "write"];
        argv.extend(args.iter().map(String::as_str));
        argv.extend(["--acks", path_str(&acks), "--rate", &rate]);
        let writer = drill_cmd(&argv)
            .stdout(Stdio::null())
            .stderr(log_file(&self.run.join("writer.log")))
            .spawn()
            .expect("start mailstore write");
        self.procs.push(writer);
    }

    /// `snapsite run` on the primary, in its own process group.
    fn start_run_loop(&mut self) {
        let child = drill_cmd(&[
            snapsite_bin(),
            "--config",
            path_str(&self.pri_cfg),
            "-v",
            "run",
        ])
        .stdout(Stdio::null())
        .stderr(log_file(&self.run.join("run.log")))
        .process_group(0)
        .spawn()
        .expect("start snapsite run");
        self.run_loop = Some(child);
    }

    /// The standby's committed manifests: (seq, kind, id).
    fn committed(&self) -> Vec<(u64, String, String)> {
        let mut v: Vec<(u64, String, String)> =
            std::fs::read_dir(self.dir.join("state-standby/sets"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| {
                    let m: serde_json::Value =
                        serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                    Some((
                        m["seq"].as_u64()?,
                        m["kind"].as_str()?.to_string(),
                        m["id"].as_str()?.to_string(),
                    ))
                })
                .collect();
        v.sort();
        v
    }

    /// The standby holds a full set and two redolog snapshots after it.
    fn ready(&self) -> bool {
        let c = self.committed();
        match c.iter().rposition(|(_, k, _)| k == "full") {
            Some(i) => c[i + 1..].iter().filter(|(_, k, _)| k == "redolog").count() >= 2,
            None => false,
        }
    }

    /// Writer, MariaDB and `snapsite run` (with its `serve`): SIGKILL.
    fn kill_primary(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        if let Some(mut r) = self.run_loop.take() {
            let _ = kill(Pid::from_raw(-(r.id() as i32)), Signal::SIGKILL);
            let _ = r.wait();
        }
        for p in &mut self.procs {
            let _ = p.kill();
        }
        for p in &mut self.procs {
            let _ = p.wait();
        }
        self.procs.clear();
    }

    /// The primary "lost power": an `lvcreate` killed mid-snapshot leaves
    /// the origin's device-mapper device suspended (I/O to it, `sync`,
    /// `umount` would block forever). A dead machine does not care; this
    /// guest must go on, so resume every suspended device of the primary VG.
    fn resume_primary_devices(&self) {
        let Storage::Lvm { pri, .. } = &self.storage else {
            return;
        };
        let prefix = format!("{}-", pri.name);
        let out = run(&[
            "dmsetup",
            "info",
            "-c",
            "--noheadings",
            "--separator",
            " ",
            "-o",
            "name,suspended",
        ]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((name, state)) = line.trim().split_once(' ') {
                if name.starts_with(&prefix) && state == "Suspended" {
                    eprintln!(
                        "drill: {name} was left suspended by the killed primary: resuming it"
                    );
                    let _ = run(&["dmsetup", "resume", name]);
                }
            }
        }
    }

    /// The standby's last `serve` (its own session): waited for, killed
    /// after 60 s.
    fn wait_for_serve(&self) {
        stop_pid_file(&self.dir.join("serve.pid"), false);
    }

    /// The MariaDB the replay plugin started on the standby, stopped and
    /// waited for (it is not our child: poll its /proc entry).
    fn stop_standby_mariadb(&self) {
        stop_pid_file(&self.run.join("standby/mariadbd.pid"), true);
    }
}

/// The process in `pidf` (not our child): SIGTERM when `term`, then wait
/// for it to go (its /proc entry), SIGKILL after 60 s.
fn stop_pid_file(pidf: &Path, term: bool) {
    {
        let Some(pid) = std::fs::read_to_string(pidf)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            return;
        };
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(pid);
        if term && kill(pid, Signal::SIGTERM).is_err() {
            return;
        }
        let start = Instant::now();
        // A zombie keeps its /proc entry: state `Z` counts as gone.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(") ")
                        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
                })
                .unwrap_or(false)
        };
        while alive() {
            if start.elapsed() > Duration::from_secs(60) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            if start.elapsed() > Duration::from_secs(70) {
                eprintln!("warning: {} ({pid}) does not exit", pidf.display());
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Drill {
    fn drop(&mut self) {
        self.kill_primary();
        self.resume_primary_devices();
        self.wait_for_serve();
        self.stop_standby_mariadb();
        for sub in ["app", "pri"] {
            for r in ROLES {
                let mp = self.dir.join(sub).join(r);
                if mp.exists() {
                    umount(&mp);
                }
            }
        }
        if let Storage::Zfs { stb, .. } = &self.storage {
            let _ = run(&["zfs", "destroy", "-r", &stb.dataset("live")]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unmounts `mp` if it is a mount point, retrying for a few seconds while
/// killed processes let go of it; says so when it cannot.
fn umount(mp: &Path) {
    let mounted = || {
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == Some(path_str(mp)))
    };
    let start = Instant::now();
    while mounted() {
        let out = run(&["umount", path_str(mp)]);
        if out.status.success() {
            continue;
        }
        if start.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "warning: umount {}: {}; holders: {}",
                mp.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&run(&["fuser", "-vm", path_str(mp)]).stderr).trim()
            );
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn ts(v: &serde_json::Value) -> jiff::Timestamp {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

fn drill(backend: Backend) {
    let t0 = Instant::now();
    let mut phases: Vec<(&str, f64)> = Vec::new();
    let mut lap = Instant::now();
    let mut phase = |name: &'static str, phases: &mut Vec<(&str, f64)>| {
        phases.push((name, lap.elapsed().as_secs_f64()));
        lap = Instant::now();
    };
    // Before the storage: under TCG this takes a while, once per guest.
    mariadb_template();
    phase("mariadb template", &mut phases);
    let mut d = Drill::new(backend);
    phase("storage", &mut phases);
    d.start_mail_store();
    phase("mail store up", &mut phases);
    thread::sleep(Duration::from_secs(REDO_EVERY));
    d.start_run_loop();
    let run_log = d.run.join("run.log");
    let writer_log = d.run.join("writer.log");
    let waiting = Instant::now();
    let mut seen = 0;
    while !d.ready() {
        if let Some(Ok(Some(st))) = d.run_loop.as_mut().map(|c| c.try_wait()) {
            panic!("snapsite run exited ({st}):\n{}", tail(&run_log, 30));
        }
        if let Ok(Some(st)) = d.procs[1].try_wait() {
            panic!("the writer exited ({st}):\n{}", tail(&writer_log, 30));
        }
        let c = d.committed();
        for (_, kind, id) in &c[seen.min(c.len())..] {
            eprintln!(
                "drill ({backend:?}): {:6.1} s  the standby committed {kind} {id}",
                waiting.elapsed().as_secs_f64()
            );
        }
        seen = c.len();
        assert!(
            waiting.elapsed() < Duration::from_secs(300),
            "no full set and two redolog snapshots after it on the standby after 300 s; committed {c:?}; snapsite run said:\n{}",
            tail(&run_log, 40)
        );
        thread::sleep(Duration::from_millis(250));
    }
    phase("run until ready", &mut phases);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % (KILL_JITTER_MS + 1);
    thread::sleep(Duration::from_millis(jitter));
    d.kill_primary();
    d.resume_primary_devices();
    let acks = d.run.join("acks");
    let acked = std::fs::read_to_string(&acks).unwrap().lines().count();
    eprintln!(
        "drill ({backend:?}): primary killed {jitter} ms after the standby was ready; {acked} messages acknowledged; committed on the standby: {:?}",
        d.committed()
            .iter()
            .map(|(_, _, id)| id.as_str())
            .collect::<Vec<_>>()
    );
    phase("kill", &mut phases);

    let command_at = jiff::Timestamp::now().to_string();
    let out = drill_cmd(&[snapsite_bin(), "--config", path_str(&d.stb_cfg), "failover"])
        .env("MAILSTORE_EVENTS", d.run.join("events"))
        .output()
        .expect("start snapsite failover");
    let failover_out = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{failover_out}");
    assert!(
        out.status.success(),
        "snapsite failover failed ({}):\n{failover_out}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    phase("failover", &mut phases);

    let mut reports: Vec<PathBuf> = std::fs::read_dir(d.dir.join("state-standby/reports"))
        .expect("the standby wrote a failover report")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    reports.sort();
    let report_path = reports.pop().expect("a failover report");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    let verdict_path = d.dir.join("verdict.json");
    let ms = mailstore_bin();
    let stb_args = d.volumes_args(&d.run.join("standby/mysqld.sock"), |r| d.app(r));
    let mut argv = vec![path_str(&ms), "verdict"];
    argv.extend(stb_args.iter().map(String::as_str));
    argv.extend([
        "--acks",
        path_str(&acks),
        "--report",
        path_str(&report_path),
        "--command-at",
        &command_at,
        "--json-out",
        path_str(&verdict_path),
    ]);
    let vout = drill_cmd(&argv).output().expect("start mailstore verdict");
    let verdict_out = String::from_utf8_lossy(&vout.stdout).into_owned();
    eprintln!("{verdict_out}");
    phase("verdict", &mut phases);

    // The verdict, as in the btrfs drill.
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&verdict_path).unwrap_or_else(|e| {
            panic!(
                "no verdict ({e}); mailstore verdict said ({}):\n{verdict_out}\n{}",
                vout.status,
                String::from_utf8_lossy(&vout.stderr)
            )
        }))
        .unwrap();
    assert!(vout.status.success(), "verdict: {v:#}");
    let written = assert_zero_loss(&v);
    assert_eq!(written as usize, acked, "{v:#}");
    assert!(verdict_out.contains("verdict: ZERO LOSS"), "{verdict_out}");
    // The set and redolog snapshot failover used are the newest the standby
    // committed before the kill.
    let committed = d.committed();
    let newest = |kind: &str| {
        committed
            .iter()
            .rev()
            .find(|(_, k, _)| k == kind)
            .map(|(_, _, id)| id.clone())
            .unwrap()
    };
    assert_eq!(report["plan"]["set_id"], newest("full").as_str());
    assert_eq!(report["plan"]["redolog_set_id"], newest("redolog").as_str());
    // The replay got snapsite's --fromTime in zmplayredo's format, local time.
    let arg = failover_out
        .split("--fromTime '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .unwrap_or_default();
    assert!(
        is_zmplayredo_time(arg),
        "--fromTime `{arg}` in:\n{failover_out}"
    );
    assert_eq!(arg, report["plan"]["from_time_arg"].as_str().unwrap());
    assert!(
        failover_out.contains("=== snapsite failover report ==="),
        "{failover_out}"
    );

    // Skew: the spread of the set's snapshot moments, from the report.
    let members = report["plan"]["set_members"].as_array().unwrap();
    assert_eq!(members.len(), ROLES.len(), "{report:#}");
    let befores: Vec<jiff::Timestamp> = members.iter().map(|m| ts(&m["before"])).collect();
    let afters: Vec<jiff::Timestamp> = members.iter().map(|m| ts(&m["after"])).collect();
    let first = *befores.iter().min().unwrap();
    let last_start = *befores.iter().max().unwrap();
    let skew_ms = last_start.duration_since(first).as_millis();
    let span_ms = afters
        .iter()
        .max()
        .unwrap()
        .duration_since(first)
        .as_millis();
    let set_id = report["plan"]["set_id"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.dir.join(format!("state-standby/sets/{set_id}.json")))
            .expect("the used set's manifest on the standby"),
    )
    .unwrap();
    let groups: Vec<&serde_json::Value> = manifest["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["atomic_group"])
        .collect();
    match backend {
        Backend::Zfs => {
            // One pool, one `zfs snapshot` call: every member has the same
            // moment, the report lists them with identical times.
            assert_eq!(skew_ms, 0, "ZFS one pool: atomic set, skew 0: {members:#?}");
            assert!(
                afters.iter().all(|a| *a == afters[0]),
                "one call for all: {members:#?}"
            );
            assert!(
                groups.iter().all(|g| g.is_u64() && *g == groups[0]),
                "one atomic group: {groups:?}"
            );
            let lines: Vec<&str> = failover_out
                .lines()
                .filter(|l| l.contains(" snapshot ") && l.contains(" .. "))
                .map(|l| l.split_once(" snapshot ").unwrap().1)
                .collect();
            assert_eq!(lines.len(), ROLES.len(), "{failover_out}");
            assert!(
                lines.iter().all(|l| *l == lines[0]),
                "the report shows one moment for all members:\n{failover_out}"
            );
        }
        Backend::Lvm => {
            // One volume after the other: in order, not atomic.
            assert!(befores.windows(2).all(|w| w[0] <= w[1]), "{members:#?}");
            assert!(
                groups.iter().all(|g| g.is_null()),
                "LVM thin LVs are not snapshotted atomically: {groups:?}"
            );
        }
    }
    // Everything the standby serves is on the failover copies.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for r in ROLES {
        let mp = d.app(r);
        assert!(
            mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(path_str(&mp))),
            "{r} mounted at {}",
            mp.display()
        );
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "drill ({backend:?}) verdict ZERO LOSS: {written} written, {} before the recovery point all recovered, {} lost after it; skew {skew_ms} ms (set span {span_ms} ms); {secs:.1} s: {}",
        v["before_recovery_point"],
        v["lost"],
        phases
            .iter()
            .map(|(n, s)| format!("{n} {s:.1} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let dir = d.dir.clone();
    drop(d);
    // Cleaned up: nothing of the drill mounted any more, its files gone.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.contains(path_str(&dir)),
        "mounts left behind:\n{mounts}"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn drill_zfs_loses_nothing_before_the_last_shipped_redolog_snapshot() {
    require_lab!();
    drill(Backend::Zfs);
}

#[test]
fn drill_lvm_loses_nothing_before_the_last_shipped_redolog_snapshot() {
    require_lab!();
    drill(Backend::Lvm);
}
