//! The VM suite's two-site lab: the storage of a primary and a standby on
//! real OpenZFS ([`ZfsSites`]: pool `a` for the primary, pool `c` with a
//! `replica` container for the standby) or LVM thin ([`LvmSites`]: one VG
//! with a thin pool `pool` per site), a scratch directory for their state
//! and configs, the `[[volume]]` lines of each side, and [`site_configs`]
//! writing `primary.toml` and `standby.toml`. Tests that need another shape
//! (extra datasets, mounts, site names) build on the fields.
//!
//! Everything is named by [`unique_name`] and torn down on drop (pools,
//! VGs before their loop devices), so tests sharing a guest never meet.

use super::*;

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
        let c = Zpool::on_file(&unique_name(&format!("{prefix}c")), c_size, &[]);
        sh(&[
            "zfs",
            "create",
            "-o",
            "mountpoint=none",
            &c.dataset("replica"),
        ]);
        let dir = scratch().join(unique_name(&format!("{prefix}lab")));
        std::fs::create_dir_all(&dir).expect("create the lab directory");
        ZfsSites { a, c, dir }
    }

    /// The primary's `[[volume]]` of `role` on `a/<role>`, then `extra` lines.
    pub fn primary_volume(&self, role: &str, extra: &str) -> String {
        format!(
            "[[volume]]\nrole = \"{role}\"\nbackend = \"zfs\"\nsource = \"{}\"\n{extra}",
            self.a.dataset(role)
        )
    }

    /// The standby's `[[volume]]` of `role`: received into
    /// `c/replica/<role>`, made live as `c/live-<role>`, mounted at
    /// `mountpoint` when given.
    pub fn standby_volume(&self, role: &str, mountpoint: Option<&Path>) -> String {
        self.standby_volume_live_at(role, &format!("live-{role}"), mountpoint)
    }

    /// Like [`ZfsSites::standby_volume`], made live as `c/<live>` (e.g.
    /// `live/<role>` under a container made with [`ZfsSites::live_container`]).
    pub fn standby_volume_live_at(
        &self,
        role: &str,
        live: &str,
        mountpoint: Option<&Path>,
    ) -> String {
        volume_with_mountpoint(
            format!(
                "[[volume]]\nrole = \"{role}\"\nbackend = \"zfs\"\nsource = \"{}\"\nreplica = \"{}\"\n",
                self.c.dataset(live),
                self.c.dataset(&format!("replica/{role}"))
            ),
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
        let pname = unique_name(&format!("{prefix}p"));
        let sname = unique_name(&format!("{prefix}s"));
        let pri_lo = LoopDevice::attach(&sparse_file(&pname, pri_size.0));
        let stb_lo = LoopDevice::attach(&sparse_file(&sname, stb_size.0));
        let pri = VolumeGroup::create(&pname, &[&pri_lo.path]);
        let stb = VolumeGroup::create(&sname, &[&stb_lo.path]);
        for (vg, pool_size) in [(&pri, pri_size.1), (&stb, stb_size.1)] {
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
        }
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

    /// The primary's `[[volume]]` of `role` on `<pri>/<role>`, then `extra` lines.
    pub fn primary_volume(&self, role: &str, extra: &str) -> String {
        format!(
            "[[volume]]\nrole = \"{role}\"\nbackend = \"lvm\"\nsource = \"{}\"\n{extra}",
            self.pri.lv(role)
        )
    }

    /// The standby's `[[volume]]` of `role`: received as `<stb>/<role>`,
    /// made live as `<stb>/<role>live`, mounted at `mountpoint` when given.
    pub fn standby_volume(&self, role: &str, mountpoint: Option<&Path>) -> String {
        volume_with_mountpoint(
            format!(
                "[[volume]]\nrole = \"{role}\"\nbackend = \"lvm\"\nsource = \"{}\"\nreplica = \"{}\"\n",
                self.stb.lv(&format!("{role}live")),
                self.stb.lv(role)
            ),
            mountpoint,
        )
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

fn volume_with_mountpoint(mut volume: String, mountpoint: Option<&Path>) -> String {
    if let Some(mp) = mountpoint {
        volume.push_str(&format!("mountpoint = \"{}\"\n", mp.display()));
    }
    volume
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
            Standby::Local(extra) => format!(
                "[standby]\ntransport = \"local\"\nconfig = \"{}\"\n{extra}\n",
                stb_cfg.display()
            ),
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

/// `mkfs.ext4` on `dev` (no discard), mounted at `mp` (created).
pub fn mount_ext4(dev: &Path, mp: &Path) {
    let dev = dev.to_str().expect("utf-8 path");
    sh(&["mkfs.ext4", "-q", "-E", "nodiscard", dev]);
    std::fs::create_dir_all(mp).unwrap_or_else(|e| panic!("create {}: {e}", mp.display()));
    sh(&["mount", dev, mp.to_str().expect("utf-8 path")]);
}
