//! The VM suite's two-site lab: the storage of a primary and a standby on
//! real OpenZFS ([`ZfsSites`]: pool `a` for the primary, pool `c` with a
//! `replica` container for the standby) or LVM thin ([`LvmSites`]: one VG
//! with a thin pool `pool` per site), a scratch directory for their state
//! and configs, the `[[volume]]` lines of each side, and [`site_configs`]
//! writing `primary.toml` and `standby.toml`. Tests that need another shape
//! (extra datasets, mounts, site names) build on the fields and on the
//! steps below: a standby's pool ([`replica_pool`]) or VG with a thin pool
//! ([`ThinVg`]), one `[[volume]]` ([`volume`]), a site's head
//! ([`site_head`]) and a local `[standby]` ([`local_standby`]). [`Lab`]
//! is either lab with its two configs written and the test file's own
//! additions (mounts, clones, more pools) behind a drop guard: the LVM and
//! ZFS backend tests (lvm.rs, zfs.rs) run on it.
//!
//! The third-site lab: [`ThirdSite`], a site C on its own pool or VG
//! beside a two-site lab (follow, fan-out to a far standby, prune's
//! release of a standby that left).
//!
//! Everything is named by [`unique_name`] and torn down on drop (pools,
//! VGs before their loop devices), so tests sharing a guest never meet.

use super::*;
use std::collections::BTreeSet;

/// A primary on pool `a` and a standby on pool `c` (`c/replica` made, not
/// mounted), with a fresh directory under [`scratch`].
pub struct ZfsSites {
    pub a: Zpool,
    pub c: Zpool,
    pub dir: PathBuf,
}

impl ZfsSites {
    /// Pools `<prefix>a...` of `a_size` and `<prefix>c...` of `c_size` bytes.
    pub fn new(prefix: &str, a_size: u64, c_size: u64) -> ZfsSites {
        let a = Zpool::on_file(&unique_name(&format!("{prefix}a")), a_size, &[]);
        let c = replica_pool(&format!("{prefix}c"), c_size);
        let dir = scratch().join(unique_name(&format!("{prefix}lab")));
        std::fs::create_dir_all(&dir).expect("create the lab directory");
        ZfsSites { a, c, dir }
    }

    /// Makes the primary's dataset `a/<role>`, mounted at `mountpoint`.
    pub fn primary_dataset(&self, role: &str, mountpoint: &Path) {
        sh(&[
            "zfs",
            "create",
            "-o",
            &format!("mountpoint={}", mountpoint.display()),
            &self.a.dataset(role),
        ]);
    }

    /// Like [`TwoSites::standby_volume`], made live as `c/<live>` (e.g.
    /// `live/<role>` under a container made with [`ZfsSites::live_container`]).
    pub fn standby_volume_live_at(
        &self,
        role: &str,
        live: &str,
        mountpoint: Option<&Path>,
    ) -> String {
        volume(
            role,
            "zfs",
            &self.c.dataset(live),
            Some(&replica_of("zfs", &self.c.name, role)),
            mountpoint,
        )
    }

    /// Makes `c/live` (not mounted), for failover clones `c/live/<role>`.
    pub fn live_container(&self) {
        sh(&[
            "zfs",
            "create",
            "-o",
            "mountpoint=none",
            &self.c.dataset("live"),
        ]);
    }
}

/// A primary VG and a standby VG, each on a loop device over a sparse file
/// and holding a thin pool `pool` (64 KiB chunks), with a fresh directory
/// under [`scratch`].
pub struct LvmSites {
    // Fields drop in order: the VGs before the loop devices under them.
    pub pri: VolumeGroup,
    pub stb: VolumeGroup,
    pub pri_lo: LoopDevice,
    pub stb_lo: LoopDevice,
    pub dir: PathBuf,
}

impl LvmSites {
    /// VGs `<prefix>p...` and `<prefix>s...` of `vg_size` bytes, each with a
    /// thin pool of `pool_size` (an `lvcreate -L` size such as `"512M"`).
    pub fn new(prefix: &str, vg_size: u64, pool_size: &str) -> LvmSites {
        LvmSites::sized(prefix, (vg_size, pool_size), (vg_size, pool_size))
    }

    /// Like [`LvmSites::new`] with the (VG bytes, thin pool size) of each
    /// side: primary first.
    pub fn sized(prefix: &str, pri_size: (u64, &str), stb_size: (u64, &str)) -> LvmSites {
        let ThinVg {
            vg: pri,
            lo: pri_lo,
        } = ThinVg::new(&format!("{prefix}p"), pri_size.0, pri_size.1);
        let ThinVg {
            vg: stb,
            lo: stb_lo,
        } = ThinVg::new(&format!("{prefix}s"), stb_size.0, stb_size.1);
        let dir = scratch().join(unique_name(&format!("{prefix}lab")));
        std::fs::create_dir_all(&dir).expect("create the lab directory");
        LvmSites {
            pri,
            stb,
            pri_lo,
            stb_lo,
            dir,
        }
    }

    /// A thin LV `role` of `size` (an `lvcreate -V` size) in the primary's pool.
    pub fn primary_thin(&self, role: &str, size: &str) {
        thin_lv(&self.pri, role, size);
    }
}

/// What both two-site labs offer: each side's `[[volume]]` of a role.
pub trait TwoSites {
    /// The primary's `[[volume]]` of `role` (ZFS `a/<role>`, LVM
    /// `<pri>/<role>`), then `extra` lines.
    fn primary_volume(&self, role: &str, extra: &str) -> String;

    /// The standby's `[[volume]]` of `role` (ZFS: received into
    /// `c/replica/<role>`, made live as `c/live-<role>`; LVM: received as
    /// `<stb>/<role>`, made live as `<stb>/<role>live`), mounted at
    /// `mountpoint` when given.
    fn standby_volume(&self, role: &str, mountpoint: Option<&Path>) -> String;

    /// The lab's directory (state, configs) under [`scratch`].
    fn dir(&self) -> &Path;

    /// The primary's and the standby's `[[volume]]`s of `roles`, unmounted.
    fn volumes(&self, roles: &[&str]) -> (String, String) {
        let pri = roles.iter().map(|r| self.primary_volume(r, "")).collect();
        let stb = roles.iter().map(|r| self.standby_volume(r, None)).collect();
        (pri, stb)
    }
}

impl TwoSites for ZfsSites {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn primary_volume(&self, role: &str, extra: &str) -> String {
        volume(role, "zfs", &self.a.dataset(role), None, None) + extra
    }

    fn standby_volume(&self, role: &str, mountpoint: Option<&Path>) -> String {
        self.standby_volume_live_at(role, &format!("live-{role}"), mountpoint)
    }
}

impl TwoSites for LvmSites {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn primary_volume(&self, role: &str, extra: &str) -> String {
        volume(role, "lvm", &self.pri.lv(role), None, None) + extra
    }

    fn standby_volume(&self, role: &str, mountpoint: Option<&Path>) -> String {
        volume(
            role,
            "lvm",
            &self.stb.lv(&format!("{role}live")),
            Some(&self.stb.lv(role)),
            mountpoint,
        )
    }
}

/// A two-site lab with its configs: the backend's storage `S`
/// ([`ZfsSites`] or [`LvmSites`]; its fields through `Deref`: `lab.a`,
/// `lab.pri`, `lab.dir`), `primary.toml` and `standby.toml`, and `added`:
/// what the test file builds on top of that storage and its drop guard
/// (LVM: the ext4 mounts, an [`Unmount`]; ZFS: failover's clones, a
/// [`ZfsDestroy`], or more). `added` goes before the storage under it (fields
/// drop in order).
pub struct Lab<S, G> {
    pub pri_cfg: PathBuf,
    pub stb_cfg: PathBuf,
    pub added: G,
    pub sites: S,
}

impl<S, G> std::ops::Deref for Lab<S, G> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.sites
    }
}

impl<S: TwoSites, G> Lab<S, G> {
    /// The lab of `sites` with the `[[volume]]`s `pri_vols` and `stb_vols`:
    /// the standby in-process (`transport = "local"`) with the `[replay]`
    /// `replay` (e.g. [`replay_args`]).
    pub fn local(sites: S, added: G, pri_vols: &str, stb_vols: &str, replay: &str) -> Lab<S, G> {
        let (pri_cfg, stb_cfg) = site_configs(
            sites.dir(),
            pri_vols,
            stb_vols,
            replay,
            Standby::Local(""),
            "",
        );
        Lab {
            pri_cfg,
            stb_cfg,
            added,
            sites,
        }
    }

    /// `snapsite --config <cfg> <args>` ([`snapsite_run`]).
    pub fn snapsite(&self, cfg: &Path, args: &[&str]) -> Output {
        snapsite_run(cfg, args, None)
    }

    /// Like [`Lab::snapsite`]; must succeed. Its stdout.
    pub fn ok(&self, cfg: &Path, args: &[&str]) -> String {
        snapsite_ok(cfg, args)
    }

    /// Like [`Lab::ok`], stdout parsed as JSON.
    pub fn json(&self, cfg: &Path, args: &[&str]) -> serde_json::Value {
        snapsite_json(cfg, args)
    }

    /// The primary's `snapshot`: the new set's id.
    pub fn snapshot(&self) -> String {
        self.ok(&self.pri_cfg, &["snapshot"]).trim().to_string()
    }

    /// How many sets the standby has committed.
    pub fn standby_manifests(&self) -> usize {
        manifest_count(&self.sites.dir().join("state-stb"))
    }

    /// A primary config whose transport cuts the stream after `at` bytes.
    pub fn cutting_config(&self, at: u64) -> PathBuf {
        cutting_config(self.sites.dir(), &self.pri_cfg, &self.stb_cfg, at)
    }

    /// The standby's `failover --json`, which must fail over to set `id`
    /// with the redolog set `rid` and run the replay (exit 0) with the
    /// plan's `--fromTime` (a lab whose replay is [`replay_args`]).
    pub fn fail_over_to(&self, id: &str, rid: &str) {
        let rep = self.json(&self.stb_cfg, &["failover", "--json"]);
        assert_eq!(rep["plan"]["set_id"], id, "{rep}");
        assert_eq!(rep["plan"]["redolog_set_id"], rid, "{rep}");
        assert_eq!(rep["replay"]["exit_code"], 0, "{rep}");
        let args = std::fs::read_to_string(self.sites.dir().join("replay-args"))
            .expect("the replay wrote its arguments");
        let from_time = rep["plan"]["from_time_arg"]
            .as_str()
            .unwrap_or_else(|| panic!("no from_time_arg in the plan: {rep}"));
        assert_eq!(
            args.lines().nth(1),
            Some(from_time),
            "the replay's --fromTime is the plan's"
        );
    }
}

/// `lvcreate -y -V <size> -T <vg>/pool -n <name>`
pub fn thin_lv(vg: &VolumeGroup, name: &str, size: &str) {
    sh(&[
        "lvcreate",
        "-y",
        "-V",
        size,
        "-T",
        &vg.lv("pool"),
        "-n",
        name,
    ]);
}

/// Where a standby on its own pool or VG `name` receives `role`:
/// `<name>/replica/<role>` on ZFS (the container [`replica_pool`] makes),
/// `<name>/rep-<role>` on LVM.
pub fn replica_of(backend: &str, name: &str, role: &str) -> String {
    match backend {
        "zfs" => format!("{name}/replica/{role}"),
        _ => format!("{name}/rep-{role}"),
    }
}

/// A standby's `[[volume]]` of `role` on its own pool or VG `name`
/// (`backend`): received into [`replica_of`], made live as
/// `<name>/live-<role>`, mounted at `mountpoint` when given.
pub fn own_standby_volume(
    backend: &str,
    name: &str,
    role: &str,
    mountpoint: Option<&Path>,
) -> String {
    volume(
        role,
        backend,
        &format!("{name}/live-{role}"),
        Some(&replica_of(backend, name, role)),
        mountpoint,
    )
}

/// One `[[volume]]`: `role` on `backend` with live `source`, then
/// `replica` and `mountpoint` when given.
pub fn volume(
    role: &str,
    backend: &str,
    source: &str,
    replica: Option<&str>,
    mountpoint: Option<&Path>,
) -> String {
    let mut v =
        format!("[[volume]]\nrole = \"{role}\"\nbackend = \"{backend}\"\nsource = \"{source}\"\n");
    if let Some(rep) = replica {
        v.push_str(&format!("replica = \"{rep}\"\n"));
    }
    if let Some(mp) = mountpoint {
        v.push_str(&format!("mountpoint = \"{}\"\n", mp.display()));
    }
    v
}

/// A site's head: `site = "<site>"` with its state in `dir/state-<site>`.
pub fn site_head(dir: &Path, site: &str) -> String {
    format!(
        "site = \"{site}\"\nstate_dir = \"{}/state-{site}\"\n",
        dir.display()
    )
}

/// A site that replays nothing (`check` wants a `[replay]` of every site
/// that may become a primary).
pub const NO_REPLAY: &str = "[replay]\nnone = true\n";

/// A standby reached in-process (`transport = "local"`) through its config
/// `cfg`: `[standby]`, or `[[standby]]` named `name`.
pub fn local_standby(name: Option<&str>, cfg: &Path) -> String {
    let head = match name {
        None => "[standby]\n".to_string(),
        Some(n) => format!("[[standby]]\nname = \"{n}\"\n"),
    };
    format!(
        "{head}transport = \"local\"\nconfig = \"{}\"\n",
        cfg.display()
    )
}

/// Writes `text` to `dir/<name>.toml`; returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// A standby's pool `<prefix>...` of `size` bytes on a sparse file, with
/// the container `replica` made (not mounted) for the received volumes.
pub fn replica_pool(prefix: &str, size: u64) -> Zpool {
    let p = Zpool::on_file(&unique_name(prefix), size, &[]);
    sh(&[
        "zfs",
        "create",
        "-o",
        "mountpoint=none",
        &p.dataset("replica"),
    ]);
    p
}

/// A VG on a loop device over a sparse file, holding a thin pool `pool`
/// (64 KiB chunks). Fields drop in order: the VG before its loop device.
pub struct ThinVg {
    pub vg: VolumeGroup,
    pub lo: LoopDevice,
}

impl ThinVg {
    /// VG `<prefix>...` of `size` bytes with a thin pool of `pool_size`
    /// (an `lvcreate -L` size such as `"192M"`).
    pub fn new(prefix: &str, size: u64, pool_size: &str) -> ThinVg {
        let ThinVg { vg, lo } = ThinVg::without_pool(prefix, size);
        sh(&[
            "lvcreate",
            "-y",
            "-L",
            pool_size,
            "--chunksize",
            "64k",
            "-T",
            &vg.lv("pool"),
        ]);
        ThinVg { vg, lo }
    }

    /// VG `<prefix>...` of `size` bytes, no thin pool made yet (classic
    /// LVs, or a pool of the test's own).
    pub fn without_pool(prefix: &str, size: u64) -> ThinVg {
        let name = unique_name(prefix);
        let lo = LoopDevice::attach(&sparse_file(&name, size));
        let vg = VolumeGroup::create(&name, &[&lo.path]);
        ThinVg { vg, lo }
    }
}

/// `mkfs.ext4` on `dev` without lazy init (nothing written in the
/// background after: what a ship carries is what the test wrote), mounted
/// at `mp` (created).
pub fn mount_ext4_settled(dev: &Path, mp: &Path) {
    let dev = dev.to_str().expect("utf-8 path");
    sh(&[
        "mkfs.ext4",
        "-q",
        "-E",
        "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
        dev,
    ]);
    std::fs::create_dir_all(mp).unwrap_or_else(|e| panic!("create {}: {e}", mp.display()));
    sh(&["mount", dev, mp.to_str().expect("utf-8 path")]);
}

/// Every dataset and snapshot of ZFS pool `name`, or every LV of VG
/// `name` (`zfs` false), bookmarks left out (they are how ZFS keeps a
/// common base cheaply: not a leak).
pub fn storage_objects(zfs: bool, name: &str) -> BTreeSet<String> {
    let out = if zfs {
        sh(&["zfs", "list", "-H", "-o", "name", "-t", "all", "-r", name])
    } else {
        sh(&["lvs", "--noheadings", "-o", "lv_name", name])
    };
    out.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.contains('#'))
        .collect()
}

/// The `snapsite-common*` tags on VG `vg`'s snapshot LVs (`<role>.<set>`):
/// (role, set id, tag), sorted.
pub fn lvm_common_tags(vg: &str) -> Vec<(String, String, String)> {
    let text = sh(&[
        "lvs",
        "--noheadings",
        "--separator",
        "|",
        "-o",
        "lv_name,lv_tags",
        vg,
    ]);
    let mut out = Vec::new();
    for l in text.lines() {
        let Some((name, tags)) = l.trim().split_once('|') else {
            continue;
        };
        let Some((role, id)) = name.split_once('.') else {
            continue;
        };
        for t in tags.split(',').filter(|t| t.starts_with("snapsite-common")) {
            out.push((role.to_string(), id.to_string(), t.to_string()));
        }
    }
    out.sort();
    out
}

/// A third site C beside a two-site lab, on its own storage: a pool with
/// `replica` made (ZFS) or a VG with a thin pool `pool` (LVM). C's
/// volumes are received as `<pool>/replica/<role>` or `<vg>/rep-<role>`
/// and made live as `<name>/live-<role>` ([`own_standby_volume`]). The
/// crash matrix's standby B is one too. Torn down on drop.
pub enum ThirdSite {
    Zfs(Zpool),
    Lvm(ThinVg),
}

impl ThirdSite {
    /// Pool `<prefix>...` of `size` bytes.
    pub fn zfs(prefix: &str, size: u64) -> ThirdSite {
        ThirdSite::Zfs(replica_pool(prefix, size))
    }

    /// VG `<prefix>...` of `size` bytes, thin pool of `pool_size`.
    pub fn lvm(prefix: &str, size: u64, pool_size: &str) -> ThirdSite {
        ThirdSite::Lvm(ThinVg::new(prefix, size, pool_size))
    }

    /// The pool's or the VG's name.
    pub fn name(&self) -> &str {
        match self {
            ThirdSite::Zfs(p) => &p.name,
            ThirdSite::Lvm(t) => &t.vg.name,
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            ThirdSite::Zfs(_) => "zfs",
            ThirdSite::Lvm(_) => "lvm",
        }
    }

    /// `<name>/<rel>`: a dataset of the pool or an LV of the VG.
    pub fn vol(&self, rel: &str) -> String {
        format!("{}/{rel}", self.name())
    }

    /// Where C receives volume `role` ([`replica_of`]).
    pub fn replica(&self, role: &str) -> String {
        replica_of(self.backend(), self.name(), role)
    }

    /// C's `[[volume]]` of `role` ([`own_standby_volume`]), mounted at
    /// `mountpoint` when given.
    pub fn volume(&self, role: &str, mountpoint: Option<&Path>) -> String {
        own_standby_volume(self.backend(), self.name(), role, mountpoint)
    }

    /// C's datasets and snapshots or LVs ([`storage_objects`]).
    pub fn objects(&self) -> BTreeSet<String> {
        storage_objects(matches!(self, ThirdSite::Zfs(_)), self.name())
    }
}

/// How the primary reaches the standby, as its `[standby]` section.
pub enum Standby<'a> {
    /// `transport = "local"` (the standby's config in-process), then `extra` lines.
    Local(&'a str),
    /// `transport = "command"`: `snapsite serve --stdio` of the standby config.
    Serve,
    /// Like `Serve`, with `serve`'s stderr (its log) appended to this file.
    ServeLogging(&'a Path),
}

impl Standby<'_> {
    fn section(&self, stb_cfg: &Path) -> String {
        match self {
            Standby::Local(extra) => format!("{}{extra}\n", local_standby(None, stb_cfg)),
            Standby::Serve => format!(
                "[standby]\ntransport = \"command\"\ncommand = [\"{}\", \"serve\", \"--stdio\", \"--config\", \"{}\"]\n",
                snapsite_bin(),
                stb_cfg.display()
            ),
            Standby::ServeLogging(log) => format!(
                "[standby]\ntransport = \"command\"\ncommand = [\"sh\", \"-c\", \"exec \\\"$0\\\" serve --stdio --config \\\"$1\\\" 2>>\\\"$2\\\"\", \"{}\", \"{}\", \"{}\"]\n",
                snapsite_bin(),
                stb_cfg.display(),
                log.display()
            ),
        }
    }
}

/// Writes `dir/standby.toml` (site `standby`, state in `dir/state-stb`, the
/// volumes `stb_vols`, then `stb_extra`) and `dir/primary.toml` (site
/// `primary`, state in `dir/state-pri`, `pri_vols`, `[replay] none = true`
/// unless `pri_extra` has a `[replay]`, the `[standby]` section, then
/// `pri_extra`). Returns (primary, standby) config paths.
pub fn site_configs(
    dir: &Path,
    pri_vols: &str,
    stb_vols: &str,
    stb_extra: &str,
    standby: Standby,
    pri_extra: &str,
) -> (PathBuf, PathBuf) {
    let stb_cfg = dir.join("standby.toml");
    let text = format!(
        "site = \"standby\"\nstate_dir = \"{}/state-stb\"\n{stb_vols}{stb_extra}",
        dir.display()
    );
    std::fs::write(&stb_cfg, text).unwrap_or_else(|e| panic!("write {}: {e}", stb_cfg.display()));
    let pri_cfg = dir.join("primary.toml");
    // A primary without [replay] is a `check` problem (it may become a
    // standby): the lab's says it replays nothing unless pri_extra has one.
    let replay = if pri_extra.contains("[replay]") {
        ""
    } else {
        "[replay]\nnone = true\n"
    };
    let text = format!(
        "site = \"primary\"\nstate_dir = \"{}/state-pri\"\n{pri_vols}{replay}{}{pri_extra}",
        dir.display(),
        standby.section(&stb_cfg)
    );
    std::fs::write(&pri_cfg, text).unwrap_or_else(|e| panic!("write {}: {e}", pri_cfg.display()));
    (pri_cfg, stb_cfg)
}

/// A `[replay]` whose command writes its arguments (`--fromTime
/// <from_time>`), one a line, to `dir/replay-args`.
pub fn replay_args(dir: &Path) -> String {
    format!(
        "[replay]\ncommand = [\"/bin/sh\", \"-c\", \"printf '%s\\\\n' \\\"$@\\\" > {}/replay-args\", \"replay\", \"--fromTime\", \"{{from_time}}\"]\n",
        dir.display()
    )
}

/// Unmounts the paths on drop (each until nothing is mounted there), also
/// when the test panics.
pub struct Unmount(pub Vec<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        for p in &self.0 {
            while run(&["umount", p.to_str().expect("utf-8 path")])
                .status
                .success()
            {}
        }
    }
}

/// Destroys the ZFS datasets on drop, each with its children (failover's
/// clones before their pool goes), also when the test panics.
pub struct ZfsDestroy(pub Vec<String>);

impl Drop for ZfsDestroy {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = run(&["zfs", "destroy", "-r", d]);
        }
    }
}

/// `mkfs.ext4` on `dev` (no discard), mounted at `mp` (created).
pub fn mount_ext4(dev: &Path, mp: &Path) {
    let dev = dev.to_str().expect("utf-8 path");
    sh(&["mkfs.ext4", "-q", "-E", "nodiscard", dev]);
    std::fs::create_dir_all(mp).unwrap_or_else(|e| panic!("create {}: {e}", mp.display()));
    sh(&["mount", dev, mp.to_str().expect("utf-8 path")]);
}
