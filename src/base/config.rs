//! The TOML configuration: schema, defaults and validation. Every error names
//! the file and the key (`volume[2].source`), and nothing is touched on disk
//! before a config has validated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::base::error::{Error, Result};
use crate::base::model::validate_role;
use crate::base::mountinfo;
use crate::dr::replay::{Template, TimeFormat};

mod standbys;
#[cfg(test)]
mod tests;
mod validate;

pub use standbys::{DEFAULT_STANDBY_NAME, validate_standby_name};

use validate::{
    Ctx, validate_layout, validate_replay, validate_retention, validate_schedule, validate_set,
    validate_site, validate_standby, validate_status, validate_volume,
};

pub const DEFAULT_PATH: &str = "/etc/snapsite/snapsite.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Btrfs,
    Zfs,
    Lvm,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Btrfs => "btrfs",
            BackendKind::Zfs => "zfs",
            BackendKind::Lvm => "lvm",
        }
    }
}

/// One `[[volume]]` as written in the file; [`validate_volume`] turns it
/// into a [`Volume`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVolume {
    /// mysql, blob, index, redolog, or any name.
    role: String,
    backend: BackendKind,
    /// The backend's address of the live data on this site: btrfs subvolume
    /// path, ZFS dataset, LVM `vg/lv`. On the standby, where failover puts the
    /// writable copy (btrfs) or where received snapshots land (ZFS, LVM).
    source: String,
    /// zfs / lvm, on the standby: where received snapshots land (a ZFS
    /// dataset, or an LVM thin `vg/lv`); failover then makes its writable
    /// copy at `source`. btrfs uses `snapshot_dir` instead.
    replica: Option<String>,
    /// zfs: send options (recorded in each member of the manifest).
    #[serde(default)]
    zfs: ZfsOptions,
    /// btrfs: directory (on the same filesystem) holding this site's
    /// snapshots of the volume: taken ones on the primary, received ones on
    /// the standby.
    snapshot_dir: Option<PathBuf>,
    /// Where the application expects the volume. On failover the writable
    /// copy is bind-mounted here when it differs from `source`.
    mountpoint: Option<PathBuf>,
    /// lvm, on the standby: the largest replica a stream may declare
    /// (`"2TiB"`, `"500GiB"`, bytes with a binary suffix). Default: the size
    /// of the replica's volume group.
    max_size: Option<String>,
    /// Let set-uid/set-gid files, device nodes and file capabilities from
    /// the other site work here (default false: a btrfs standby refuses
    /// streams carrying them; failover copies are mounted nosuid,nodev).
    #[serde(default)]
    allow_privileged_files: bool,
}

/// A validated volume: its role, where the application sees it, and its
/// backend's address, which holds exactly the keys that backend uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// mysql, blob, index, redolog, or any name (validated by `validate_role`).
    pub role: String,
    /// The address of the live data as written in the config (a path, a
    /// dataset, `vg/lv`), for messages and inventories; the typed form is in
    /// `addr`.
    pub source: String,
    pub addr: VolumeAddr,
    /// Where the application expects the volume. On failover the writable
    /// copy is bind-mounted here when it differs from `source`.
    pub mountpoint: Option<PathBuf>,
    /// `allow_privileged_files`: nothing from the other site may be
    /// set-uid/set-gid, a device node or carry file capabilities unless
    /// this is set (see docs/security.md).
    pub allow_privileged_files: bool,
}

/// Where a volume's data and snapshots live, per backend.
#[derive(Debug, Clone, PartialEq)]
pub enum VolumeAddr {
    /// `subvolume`: the live subvolume (on the standby, where failover puts
    /// its writable copy); `snapshot_dir`: this site's snapshots, on the same
    /// filesystem.
    Btrfs {
        subvolume: PathBuf,
        snapshot_dir: PathBuf,
    },
    /// `dataset`: the live dataset (on the standby, failover's clone);
    /// `replica`: where a standby receives; `send`: `zfs send` options.
    Zfs {
        dataset: String,
        replica: Option<String>,
        send: ZfsOptions,
    },
    /// `lv`: the live thin LV (on the standby, failover's copy); `replica`:
    /// where a standby receives; `max_size`: the largest replica a stream
    /// may declare, in bytes.
    Lvm {
        lv: LvName,
        replica: Option<LvName>,
        max_size: Option<u64>,
    },
}

/// An LVM logical volume, `vg/lv`, both parts validated LVM names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvName {
    pub vg: String,
    pub lv: String,
}

impl LvName {
    /// `vg/lv`, validated as an LVM source is.
    pub fn parse(s: &str) -> std::result::Result<LvName, String> {
        validate_source(BackendKind::Lvm, s)?;
        let (vg, lv) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not `vg/lv`"))?;
        Ok(LvName {
            vg: vg.to_string(),
            lv: lv.to_string(),
        })
    }
}

impl std::fmt::Display for LvName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.vg, self.lv)
    }
}

impl Volume {
    pub fn backend(&self) -> BackendKind {
        match self.addr {
            VolumeAddr::Btrfs { .. } => BackendKind::Btrfs,
            VolumeAddr::Zfs { .. } => BackendKind::Zfs,
            VolumeAddr::Lvm { .. } => BackendKind::Lvm,
        }
    }

    /// Where a standby receives (ZFS dataset or LVM `vg/lv`), if configured.
    pub fn replica(&self) -> Option<String> {
        match &self.addr {
            VolumeAddr::Btrfs { .. } => None,
            VolumeAddr::Zfs { replica, .. } => replica.clone(),
            VolumeAddr::Lvm { replica, .. } => replica.as_ref().map(LvName::to_string),
        }
    }

    /// ZFS send options (none for other backends).
    pub fn zfs_options(&self) -> ZfsOptions {
        match &self.addr {
            VolumeAddr::Zfs { send, .. } => send.clone(),
            _ => ZfsOptions::default(),
        }
    }

    /// LVM `max_size` in bytes.
    pub fn max_size_bytes(&self) -> Option<u64> {
        match &self.addr {
            VolumeAddr::Lvm { max_size, .. } => *max_size,
            _ => None,
        }
    }

    /// A volume for unit tests and in-memory backends: btrfs-shaped, with
    /// its snapshots beside the source.
    pub fn for_tests(role: &str, source: &str) -> Volume {
        Volume {
            role: role.to_string(),
            source: source.to_string(),
            addr: VolumeAddr::Btrfs {
                subvolume: PathBuf::from(source),
                snapshot_dir: PathBuf::from(format!("{source}.snap")),
            },
            mountpoint: None,
            allow_privileged_files: false,
        }
    }
}

/// `"2TiB"`, `"512MiB"`, `"4096"` (bytes); suffixes B, KiB, MiB, GiB, TiB,
/// PiB (also K, M, G, T, P, binary). Not zero.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like \"2TiB\" or \"500GiB\""))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        "P" | "PiB" => 50,
        u => {
            return Err(format!(
                "`{s}`: unknown unit `{u}` (use B, KiB, MiB, GiB, TiB or PiB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes == 0 {
        return Err(format!("`{s}`: the size must be more than zero"));
    }
    Ok(bytes)
}

/// `zfs = { raw = true, ... }` on a ZFS volume.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZfsOptions {
    /// `zfs send -w`: send encrypted datasets as they are on disk.
    #[serde(default)]
    pub raw: bool,
    /// `zfs send -c`: keep blocks compressed on the wire.
    #[serde(default)]
    pub compressed: bool,
    /// `zfs send -L`: allow blocks larger than 128 KiB.
    #[serde(default)]
    pub large_blocks: bool,
    /// `zfs send -I`: carry intermediate snapshots (not only -i).
    #[serde(default)]
    pub intermediates: bool,
}

impl ZfsOptions {
    /// The options as recorded in manifests.
    pub fn names(&self) -> Vec<String> {
        [
            (self.raw, "raw"),
            (self.compressed, "compressed"),
            (self.large_blocks, "large_blocks"),
            (self.intermediates, "intermediates"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_string())
        .collect()
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SetSection {
    /// Roles in snapshot order; default: the volumes in file order.
    #[serde(default)]
    pub order: Vec<String>,
    /// The role of the redolog volume (default `redolog`).
    pub redolog: Option<String>,
    /// Subtracted from the earliest member time to give `from_time`.
    pub safety_margin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TransportKind {
    /// Spawn `snapsite serve --stdio` on this host (standby on the same host,
    /// or storage reachable locally).
    Local,
    /// `ssh -o BatchMode=yes [user@]host <remote_command>`.
    Ssh,
    /// Any argv whose stdin/stdout speak the protocol (e.g. `ip netns exec`).
    Command,
}

/// `[standby]` (or one `[[standby]]` entry) as written; [`validate_standby`]
/// turns it into a [`Standby`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStandby {
    /// The standby's name in this config: `[a-z0-9-]`, unique. Required in
    /// a `[[standby]]` list; a single `[standby]` is named `standby`.
    name: Option<String>,
    /// Ship to this standby at most once per slot of this length (`"1h"`);
    /// default: after every set.
    every: Option<String>,
    transport: TransportKind,
    /// local: the standby's config file.
    config: Option<PathBuf>,
    /// ssh: host name or address.
    host: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    identity: Option<PathBuf>,
    /// ssh: an ssh_config file (`ssh -F`).
    ssh_config: Option<PathBuf>,
    /// ssh: extra `-o Key=Value` options.
    #[serde(default)]
    ssh_options: Vec<String>,
    /// ssh: the command run on the standby (default `snapsite serve --stdio`).
    #[serde(default)]
    remote_command: Vec<String>,
    /// ssh: how long ssh may take to connect (`ConnectTimeout`, default 15s).
    connect_timeout: Option<String>,
    /// command: the argv to spawn.
    #[serde(default)]
    command: Vec<String>,
    /// Compression on the wire: `none` (default), `zstd`, `zstd:LEVEL`.
    compress: Option<String>,
    /// Bandwidth limit of `ship`/`run`: `"20MiB/s"`, `"100Mbit/s"`.
    bwlimit: Option<String>,
    /// Windows with another limit: `["Mon-Fri 08:00-18:00 5MiB/s"]`.
    #[serde(default)]
    bwlimit_schedule: Vec<String>,
    /// Abandon a session that makes no progress for this long (`"10m"`).
    stall_timeout: Option<String>,
    /// `run` starts ships to it only in these hours (`"22:00-06:00"`).
    window: Option<String>,
}

/// `[standby]` or one `[[standby]]` entry, validated: how this primary
/// reaches that standby.
#[derive(Debug, Clone, PartialEq)]
pub struct Standby {
    /// Its name in this config (`standby` for a single `[standby]`): the key
    /// of its ship state, holds and status (validated `[a-z0-9-]`).
    pub name: String,
    /// `every`: ship to it at most once per slot of this length (`run`);
    /// `None`: after every set.
    pub every: Option<Duration>,
    pub transport: Transport,
    /// `compress`: what this primary offers; used when the standby decodes it.
    pub compression: crate::wire::compress::Compression,
    /// `bwlimit` with `bwlimit_schedule`.
    pub bwlimit: crate::wire::ratelimit::Bwlimit,
    /// `stall_timeout`: a session with no progress for this long is
    /// abandoned (its process killed) and counts as a failed ship.
    pub stall_timeout: Duration,
    /// `window`: `run` starts ships to it only inside (`None`: any hour).
    pub window: Option<crate::base::shipwindow::ShipWindow>,
}

/// `standby.stall_timeout` when it is not set: the standby may verify a
/// large snapshot before it answers.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The pipe to the standby's `snapsite serve --stdio`.
#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    /// Spawn `snapsite serve --stdio --config CONFIG` on this host.
    Local { config: PathBuf },
    /// `ssh -o BatchMode=yes ... -- HOST REMOTE_COMMAND`.
    Ssh(SshTarget),
    /// Any argv whose stdin/stdout speak the protocol (`ip netns exec`...).
    Command { argv: Vec<String> },
}

/// Everything `ssh` needs; the host and user are validated names, the
/// paths absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct SshTarget {
    pub host: String,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// An ssh_config file (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// Extra `-o Key=Value` options.
    pub ssh_options: Vec<String>,
    /// The command run on the standby (default `snapsite serve --stdio`).
    pub remote_command: Vec<String>,
    /// `ConnectTimeout` for ssh (whole seconds, at least 1).
    pub connect_timeout: Duration,
}

/// `standby.connect_timeout` when it is not set: an unreachable standby
/// fails `check` and `ship` in this long instead of hanging.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

impl Standby {
    /// Parse a `[standby]` table on its own (tests, tools).
    pub fn from_toml(text: &str) -> Result<Standby> {
        let raw: RawStandby = toml::from_str(text)
            .map_err(|e| Error::config(format!("[standby]: {}", e.to_string().trim())))?;
        let name = raw
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_STANDBY_NAME.to_string());
        validate_standby(
            &Ctx {
                path: Path::new("[standby]"),
            },
            "standby",
            name,
            raw,
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// argv template; placeholders: {from_time} {from_time_utc} {set_id}
    /// {redolog_set_id} {redolog_time} {mount:ROLE}.
    #[serde(default)]
    pub command: Vec<String>,
    /// `none = true`: this application needs no replay (its volumes are
    /// consistent as snapshotted); failover and rehearsal then replay nothing
    /// and say so, instead of `check` calling the missing replay a problem.
    #[serde(default)]
    pub none: bool,
    /// `zmplayredo` (yyyy/MM/dd HH:mm:ss.SSS) or a strftime pattern.
    pub time_format: Option<String>,
    /// IANA zone for {from_time}; default: this host's local zone (TZ).
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: String,
    state_dir: PathBuf,
    #[serde(rename = "volume", default)]
    volumes: Vec<RawVolume>,
    #[serde(default)]
    set: SetSection,
    /// A `[standby]` table or a `[[standby]]` list (see `standbys.rs`).
    standby: Option<toml::Value>,
    replay: Option<ReplaySection>,
    schedule: Option<ScheduleSection>,
    retention: Option<RetentionSection>,
    status: Option<StatusSection>,
    hooks: Option<crate::primary::hooks::RawHooks>,
    notify: Option<crate::ops::notify::RawNotify>,
    stream: Option<crate::base::streamconf::StreamSection>,
    detect: Option<crate::base::detect::DetectSection>,
    #[serde(rename = "archive", default)]
    archives: Vec<crate::base::archiveconf::RawArchive>,
}

/// `[schedule]`: what `snapsite run` does and how often (primary).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleSection {
    full_set_interval: String,
    redolog_interval: Option<String>,
    retry_min: Option<String>,
    retry_max: Option<String>,
}

/// `[retention]`: zrepl-style grids, applied by `snapsite prune` and `run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    grid: String,
    redolog_grid: Option<String>,
    keep_min_age: Option<String>,
}

/// `[status]`: thresholds for `snapsite status` and the metrics file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StatusSection {
    recovery_point_warning: Option<String>,
    recovery_point_critical: Option<String>,
    full_set_warning: Option<String>,
    full_set_critical: Option<String>,
    prometheus: Option<PathBuf>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub site: String,
    pub state_dir: PathBuf,
    /// In snapshot order.
    pub volumes: Vec<Volume>,
    pub redolog_role: String,
    pub safety_margin: Duration,
    /// The first standby of `standbys`: the peer of the verbs that talk to
    /// one (the redolog stream, seeds, failback, `check`'s handshake).
    pub standby: Option<Standby>,
    /// Every standby, in file order (`[[standby]]`); a single `[standby]`
    /// is one entry named `standby`.
    pub standbys: Vec<Standby>,
    pub replay: Option<Replay>,
    /// `[replay] none = true`: no replay, on purpose (`replay` is `None`).
    pub replay_none: bool,
    /// `[schedule]`, if `snapsite run` is configured.
    pub schedule: Option<Schedule>,
    /// `[retention]`, if pruning is configured.
    pub retention: Option<Retention>,
    /// `[status]`, with defaults when absent.
    pub status: StatusThresholds,
    /// `[hooks]`: quiesce hooks around sets and members (empty when absent).
    pub hooks: crate::primary::hooks::Hooks,
    /// `[notify]`, if push notifications are configured.
    pub notify: Option<crate::ops::notify::Notify>,
    /// `[stream]`: redolog streaming (issue 17), if configured.
    pub stream: Option<crate::base::streamconf::StreamSettings>,
    /// `[detect]`: ransomware signals on receive (standby), with defaults.
    pub detect: crate::base::detect::DetectSettings,
    /// `[[archive]]`: S3 archives of the sets (issue 30).
    pub archives: Vec<crate::base::archiveconf::Archive>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub full_set_interval: Duration,
    /// `None`: no separate redolog snapshots.
    pub redolog_interval: Option<Duration>,
    /// First retry delay after a failed ship; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    pub full: crate::base::retention::Grid,
    pub redolog: crate::base::retention::Grid,
    /// On the standby: sets committed less than this long ago (by the
    /// standby's own clock) are never pruned, whatever the primary sends, so
    /// a burst of sets from a compromised primary cannot push good history
    /// out of the grid. Default 7 days.
    pub keep_min_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusThresholds {
    /// Age of the newest redolog snapshot committed on the standby.
    pub recovery_point_warning: Duration,
    pub recovery_point_critical: Duration,
    /// Age of the newest complete full set on the standby.
    pub full_set_warning: Duration,
    pub full_set_critical: Duration,
    /// Default for `status --prometheus`; `run` refreshes it after each cycle.
    pub prometheus: Option<PathBuf>,
}

impl Default for StatusThresholds {
    fn default() -> Self {
        StatusThresholds {
            recovery_point_warning: Duration::from_secs(30 * 60),
            recovery_point_critical: Duration::from_secs(60 * 60),
            full_set_warning: Duration::from_secs(2 * 3600),
            full_set_critical: Duration::from_secs(24 * 3600),
            prometheus: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Replay {
    pub command: Template,
    pub time_format: TimeFormat,
    pub timezone: ReplayZone,
}

/// `[replay] timezone`: a named zone, looked up when the config is loaded
/// (a wrong name fails there, naming the key), or this host's zone, found
/// only when a command formats a time with it. Finding a zone reads jiff's
/// zoneinfo database, which lists the whole `/usr/share/zoneinfo` tree once
/// per process (about 40 directory reads, 3 M instructions): `serve`,
/// `status` and the others that never format a replay time do not pay it.
#[derive(Debug, Clone)]
pub enum ReplayZone {
    Named(jiff::tz::TimeZone),
    System,
}

impl ReplayZone {
    /// The zone (this host's, honouring `TZ`, for [`ReplayZone::System`]).
    pub fn get(&self) -> jiff::tz::TimeZone {
        match self {
            ReplayZone::Named(z) => z.clone(),
            ReplayZone::System => jiff::tz::TimeZone::system(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(format!("cannot read config {}: {e}", path.display())).with_hint(
                "pass --config FILE or set SNAPSITE_CONFIG; `snapsite init` writes one, and /usr/share/doc/snapsite/examples/primary.toml is annotated",
            )
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| Error::config(format!("{}: {}", path.display(), e.to_string().trim())))?;
        let cx = Ctx { path };
        validate_site(&cx, &raw.site, &raw.state_dir)?;
        let mut typed = Vec::new();
        for (i, v) in raw.volumes.iter().enumerate() {
            typed.push(validate_volume(&cx, i, v, &raw.volumes[..i])?);
        }
        let set = validate_set(&cx, &raw.set, typed)?;
        validate_layout(&cx, &raw.state_dir, &raw.volumes, &set.volumes)?;
        let standbys = standbys::parse(&cx, raw.standby)?;
        let has_standby = !standbys.is_empty();
        let standby = standbys.first().cloned();
        let replay_none = raw.replay.as_ref().is_some_and(|r| r.none);
        let replay = raw
            .replay
            .as_ref()
            .filter(|r| !r.none || !r.command.is_empty())
            .map(|r| validate_replay(&cx, r, &raw.volumes))
            .transpose()?;
        let schedule = raw
            .schedule
            .as_ref()
            .map(|s| validate_schedule(&cx, s, has_standby))
            .transpose()?;
        let retention = raw
            .retention
            .as_ref()
            .map(|r| validate_retention(&cx, r))
            .transpose()?;
        let status = validate_status(&cx, raw.status.as_ref())?;
        let roles: Vec<&str> = raw.volumes.iter().map(|v| v.role.as_str()).collect();
        let hooks = raw
            .hooks
            .as_ref()
            .map(|h| crate::primary::hooks::validate(h, &roles))
            .transpose()
            .map_err(|m| Error::config(format!("{}: {m}", path.display())))?
            .unwrap_or_default();
        let notify = raw
            .notify
            .as_ref()
            .map(crate::ops::notify::validate)
            .transpose()
            .map_err(|m| Error::config(format!("{}: {m}", path.display())))?;
        let stream = raw
            .stream
            .as_ref()
            .map(|s| crate::base::streamconf::validate(path, s))
            .transpose()?;
        if let Some(s) = &stream {
            let names: Vec<&str> = standbys.iter().map(|s| s.name.as_str()).collect();
            crate::base::streamconf::check_target(path, s, &names)?;
        }
        let detect = crate::base::detect::validate(path, raw.detect.as_ref(), &roles)?;
        let archives =
            crate::base::archiveconf::validate(path, &raw.site, &raw.archives, parse_size)?;

        Ok(Config {
            path: path.to_owned(),
            site: raw.site,
            state_dir: raw.state_dir,
            volumes: set.volumes,
            redolog_role: set.redolog_role,
            safety_margin: set.safety_margin,
            standby,
            standbys,
            replay,
            replay_none,
            schedule,
            retention,
            status,
            hooks,
            notify,
            stream,
            detect,
            archives,
        })
    }

    pub fn volume(&self, role: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.role == role)
    }

    /// The standby named `name`.
    pub fn standby_named(&self, name: &str) -> Option<&Standby> {
        self.standbys.iter().find(|s| s.name == name)
    }

    pub fn redolog(&self) -> &Volume {
        self.volume(&self.redolog_role).expect("validated")
    }

    /// The one rule for the Prometheus textfile: `status --prometheus FILE`
    /// when given, else `[status] prometheus` (the file `run` refreshes
    /// after each cycle); an absolute path either way.
    pub fn prometheus_path(&self, flag: Option<&Path>) -> Result<Option<PathBuf>> {
        match flag {
            Some(p) => {
                check_abs_path(p).map_err(|m| {
                    Error::config(format!("--prometheus: {m} (as [status] prometheus)"))
                })?;
                Ok(Some(p.to_owned()))
            }
            None => Ok(self.status.prometheus.clone()),
        }
    }
}

fn check_abs_path(p: &Path) -> std::result::Result<(), String> {
    let s = p.to_string_lossy();
    if !p.is_absolute() {
        return Err(format!("`{s}` must be an absolute path"));
    }
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("`{s}` must not contain `..`"));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(format!(
            "`{}` contains control characters",
            s.escape_debug()
        ));
    }
    Ok(())
}

/// Validate a backend address so it can only name what it says.
pub fn validate_source(backend: BackendKind, s: &str) -> std::result::Result<(), String> {
    match backend {
        BackendKind::Btrfs => check_abs_path(Path::new(s)),
        BackendKind::Zfs => {
            let ok = !s.is_empty()
                && !s.starts_with('/')
                && !s.ends_with('/')
                && !s.contains("//")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
                && !s.split('/').any(|p| p == "." || p == "..");
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "`{s}` is not a ZFS dataset name (pool/path, letters, digits, - _ . :)"
                ))
            }
        }
        BackendKind::Lvm => {
            let parts: Vec<&str> = s.split('/').collect();
            let name_ok = |p: &str| {
                !p.is_empty()
                    && !p.starts_with('-')
                    && p != "."
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c))
            };
            if parts.len() == 2 && parts.iter().all(|p| name_ok(p)) {
                Ok(())
            } else {
                Err(format!("`{s}` is not an LVM `vg/lv` name"))
            }
        }
    }
}

/// The longest `set.safety_margin`: `from_time` moves back by the margin, and
/// a few seconds are enough (an operation logged before the first snapshot
/// reaches the database within them). Anything near this bound is a typo.
pub const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(3600);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

// ---- Checks of a valid config against this host and the other site, for
// `snapsite check`: what parsing alone cannot know.

impl Config {
    /// Where failover would find the replay program: `Ok(None)` when there
    /// is no `[replay]` or the program is a placeholder (known only at
    /// failover); an error when it is missing or not executable.
    pub fn replay_program(&self) -> std::result::Result<Option<PathBuf>, String> {
        let Some(r) = &self.replay else {
            return Ok(None);
        };
        let argv = r.command.argv();
        let program = &argv[0];
        if program.contains('{') {
            return Ok(None);
        }
        let executable = |p: &Path| {
            p.is_file()
                && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
                && std::fs::metadata(p).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        };
        if program.contains('/') {
            let p = Path::new(program);
            return match std::fs::metadata(p) {
                Err(e) => Err(format!("`{program}`: {e}")),
                Ok(m) if m.is_dir() => Err(format!("`{program}` is a directory")),
                Ok(_) if !executable(p) => Err(format!("`{program}` is not executable")),
                Ok(_) => Ok(Some(p.to_owned())),
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .filter(|d| d.is_absolute())
            .map(|d| d.join(program))
            .find(|p| executable(p))
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "`{program}` is not an executable found on PATH ({}); give its absolute path",
                    std::env::join_paths(std::env::split_paths(&path))
                        .map(|p| p.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            })
    }

    /// Volumes with something already mounted at their mountpoint, as
    /// (role, mountpoint, what is mounted there). On the standby that is
    /// stale: failover would find the mountpoint taken and run the replay on
    /// whatever is there instead of on its copy.
    pub fn occupied_mountpoints(&self) -> Vec<(String, PathBuf, String)> {
        let mounts = mountinfo::read();
        let mut out = Vec::new();
        for v in &self.volumes {
            let Some(mp) = &v.mountpoint else { continue };
            let real = std::fs::canonicalize(mp).unwrap_or_else(|_| mp.clone());
            let top = mountinfo::top_at(&mounts, mp).or_else(|| mountinfo::top_at(&mounts, &real));
            if let Some(what) = top.map(mountinfo::Mount::describe) {
                out.push((v.role.clone(), mp.clone(), what));
            }
        }
        out
    }

    /// How this site's volumes differ from another site's inventory
    /// (role, backend), both ways: every volume here must be there with the
    /// same backend, and every volume there must be here, or the sets
    /// shipped between them are not sets failover can use.
    pub fn volume_mismatches(&self, other_site: &str, other: &[(&str, &str)]) -> Vec<String> {
        let mut out = Vec::new();
        for v in &self.volumes {
            match other.iter().find(|(r, _)| *r == v.role) {
                None => out.push(format!(
                    "volume `{}` is configured here, but standby `{other_site}` has no such volume",
                    v.role
                )),
                Some((_, b)) if *b != v.backend().as_str() => out.push(format!(
                    "volume `{}` is {} here but {b} on standby `{other_site}`",
                    v.role,
                    v.backend().as_str()
                )),
                _ => {}
            }
        }
        for (r, b) in other {
            if self.volume(r).is_none() {
                out.push(format!(
                    "standby `{other_site}` has volume `{r}` ({b}), which this config does not name: sets shipped from here would lack it and failover there could not use them"
                ));
            }
        }
        out
    }
}
