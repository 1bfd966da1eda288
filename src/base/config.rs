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

/// `[standby]` as written; [`validate_standby`] turns it into a [`Standby`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStandby {
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
}

/// `[standby]`, validated: how this primary reaches its standby.
#[derive(Debug, Clone, PartialEq)]
pub struct Standby {
    pub transport: Transport,
    /// `compress`: what this primary offers; used when the standby decodes it.
    pub compression: crate::wire::compress::Compression,
    /// `bwlimit` with `bwlimit_schedule`.
    pub bwlimit: crate::wire::ratelimit::Bwlimit,
}

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
        validate_standby(
            &Ctx {
                path: Path::new("[standby]"),
            },
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
    standby: Option<RawStandby>,
    replay: Option<ReplaySection>,
    schedule: Option<ScheduleSection>,
    retention: Option<RetentionSection>,
    status: Option<StatusSection>,
    hooks: Option<crate::primary::hooks::RawHooks>,
    notify: Option<crate::ops::notify::RawNotify>,
    stream: Option<crate::base::streamconf::StreamSection>,
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
    pub standby: Option<Standby>,
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
    pub timezone: jiff::tz::TimeZone,
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
        let has_standby = raw.standby.is_some();
        let standby = raw.standby.map(|s| validate_standby(&cx, s)).transpose()?;
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

        Ok(Config {
            path: path.to_owned(),
            site: raw.site,
            state_dir: raw.state_dir,
            volumes: set.volumes,
            redolog_role: set.redolog_role,
            safety_margin: set.safety_margin,
            standby,
            replay,
            replay_none,
            schedule,
            retention,
            status,
            hooks,
            notify,
            stream,
        })
    }

    pub fn volume(&self, role: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.role == role)
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

/// Where errors point: the file. Every error also names its key.
struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::config(format!("{}: {key}: {msg}", self.path.display()))
    }

    /// A duration in `min..=max`; `examples` shows the syntax on a parse error.
    fn duration(
        &self,
        key: &str,
        v: &str,
        (min, max): (Duration, Duration),
        examples: &str,
    ) -> Result<Duration> {
        let d = humantime::parse_duration(v)
            .map_err(|e| self.err(key, format!("`{v}`: {e} (e.g. {examples})")))?;
        if d < min {
            return Err(self.err(
                key,
                format!("`{v}` must be at least {}", humantime::format_duration(min)),
            ));
        }
        if d > max {
            return Err(self.err(
                key,
                format!(
                    "`{v}` is longer than {}, the most this setting allows",
                    humantime::format_duration(max)
                ),
            ));
        }
        Ok(d)
    }
}

/// `site`, `state_dir`.
fn validate_site(cx: &Ctx, site: &str, state_dir: &Path) -> Result<()> {
    if site.is_empty()
        || !site
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(cx.err(
            "site",
            format!("`{site}` must be non-empty and use only a-z, 0-9, `-`, `_`, `.`"),
        ));
    }
    check_abs_path(state_dir).map_err(|m| cx.err("state_dir", m))
}

/// One `[[volume]]` on its own; `earlier` are the volumes before it in the
/// file. Conflicts between volumes are `validate_layout`'s.
fn validate_volume(cx: &Ctx, i: usize, v: &RawVolume, earlier: &[RawVolume]) -> Result<Volume> {
    let key = |k: &str| format!("volume[{i}].{k}");
    validate_role(&v.role).map_err(|m| cx.err(&key("role"), m))?;
    if earlier.iter().any(|w| w.role == v.role) {
        return Err(cx.err(
            &key("role"),
            format!("role `{}` is configured twice", v.role),
        ));
    }
    validate_source(v.backend, &v.source).map_err(|m| cx.err(&key("source"), m))?;
    if v.backend != BackendKind::Zfs && v.zfs != ZfsOptions::default() {
        return Err(cx.err(
            &key("zfs"),
            format!(
                "send options apply to ZFS volumes only, this one is {}",
                v.backend.as_str()
            ),
        ));
    }
    if let Some(r) = &v.replica {
        if v.backend == BackendKind::Btrfs {
            return Err(cx.err(
                &key("replica"),
                "btrfs volumes keep received snapshots in snapshot_dir; remove `replica`",
            ));
        }
        validate_source(v.backend, r).map_err(|m| cx.err(&key("replica"), m))?;
        if r == &v.source {
            return Err(cx.err(
                &key("replica"),
                "must differ from `source` (failover makes its writable copy at `source`)",
            ));
        }
    }
    match (&v.snapshot_dir, v.backend) {
        (None, BackendKind::Btrfs) => {
            return Err(cx.err(
                &key("snapshot_dir"),
                "btrfs volumes need a snapshot_dir on the same filesystem",
            ));
        }
        (Some(d), BackendKind::Btrfs) => {
            check_abs_path(d).map_err(|m| cx.err(&key("snapshot_dir"), m))?
        }
        (Some(_), b) => {
            return Err(cx.err(
                &key("snapshot_dir"),
                format!(
                    "applies to btrfs volumes only; {} keeps its snapshots in the {} itself{}",
                    b.as_str(),
                    if b == BackendKind::Zfs {
                        "dataset"
                    } else {
                        "volume group"
                    },
                    " (on the standby: in `replica`)"
                ),
            ));
        }
        (None, _) => {}
    }
    if let Some(m) = &v.mountpoint {
        check_abs_path(m).map_err(|m| cx.err(&key("mountpoint"), m))?;
    }
    if v.zfs.intermediates {
        // `zfs send -I` is a compound stream; the standby refuses those
        // (they can carry children and properties), and snapsite ships
        // every snapshot in order anyway.
        return Err(cx.err(
            &key("zfs"),
            "`intermediates` is not supported: a standby refuses `zfs send -I` streams (they are compound packages); snapsite ships every snapshot in order without it",
        ));
    }
    if let Some(ms) = &v.max_size {
        if v.backend != BackendKind::Lvm {
            return Err(cx.err(
                &key("max_size"),
                format!(
                    "applies to LVM volumes only, this one is {}",
                    v.backend.as_str()
                ),
            ));
        }
        parse_size(ms).map_err(|m| cx.err(&key("max_size"), m))?;
    }
    let lv = |k: &str, s: &str| LvName::parse(s).map_err(|m| cx.err(&key(k), m));
    let addr = match v.backend {
        BackendKind::Btrfs => VolumeAddr::Btrfs {
            subvolume: PathBuf::from(&v.source),
            snapshot_dir: v
                .snapshot_dir
                .clone()
                .ok_or_else(|| cx.err(&key("snapshot_dir"), "missing"))?,
        },
        BackendKind::Zfs => VolumeAddr::Zfs {
            dataset: v.source.clone(),
            replica: v.replica.clone(),
            send: v.zfs.clone(),
        },
        BackendKind::Lvm => VolumeAddr::Lvm {
            lv: lv("source", &v.source)?,
            replica: v.replica.as_deref().map(|r| lv("replica", r)).transpose()?,
            max_size: v
                .max_size
                .as_deref()
                .map(|s| parse_size(s).map_err(|m| cx.err(&key("max_size"), m)))
                .transpose()?,
        },
    };
    Ok(Volume {
        role: v.role.clone(),
        source: v.source.clone(),
        addr,
        mountpoint: v.mountpoint.clone(),
        allow_privileged_files: v.allow_privileged_files,
    })
}

/// What `[set]` decides: the snapshot order, the redolog volume, the margin.
struct SetParts {
    volumes: Vec<Volume>,
    redolog_role: String,
    safety_margin: Duration,
}

/// `[set]`: `order`, `redolog`, `safety_margin`.
fn validate_set(cx: &Ctx, set: &SetSection, raw: Vec<Volume>) -> Result<SetParts> {
    if raw.is_empty() {
        return Err(cx.err("volume", "no [[volume]] is configured"));
    }
    let volumes = if set.order.is_empty() {
        raw
    } else {
        let mut ordered: Vec<Volume> = Vec::new();
        for (i, r) in set.order.iter().enumerate() {
            let v = raw.iter().find(|v| &v.role == r).ok_or_else(|| {
                cx.err(
                    &format!("set.order[{i}]"),
                    format!("no volume has role `{r}`"),
                )
            })?;
            if ordered.iter().any(|o| &o.role == r) {
                return Err(cx.err(&format!("set.order[{i}]"), format!("`{r}` is listed twice")));
            }
            ordered.push(v.clone());
        }
        if ordered.len() != raw.len() {
            let missing: Vec<_> = raw
                .iter()
                .filter(|v| !set.order.contains(&v.role))
                .map(|v| v.role.as_str())
                .collect();
            return Err(cx.err("set.order", format!("does not list {}", missing.join(", "))));
        }
        ordered
    };
    let redolog_role = set.redolog.clone().unwrap_or_else(|| "redolog".into());
    if !volumes.iter().any(|v| v.role == redolog_role) {
        return Err(cx.err(
            "set.redolog",
            format!(
                "no volume has role `{redolog_role}` (set `set.redolog` to the role of the redo log volume)"
            ),
        ));
    }
    let safety_margin = match &set.safety_margin {
        None => Duration::ZERO,
        Some(s) => cx.duration(
            "set.safety_margin",
            s,
            (Duration::ZERO, MAX_SAFETY_MARGIN),
            "\"2s\", \"500ms\"",
        )?,
    };
    Ok(SetParts {
        volumes,
        redolog_role,
        safety_margin,
    })
}

/// What a path-valued volume key is.
#[derive(Clone, Copy, PartialEq)]
enum PathKind {
    /// A btrfs `source` (the live subvolume; on the standby failover's copy).
    Source,
    SnapshotDir,
    Mountpoint,
}

impl PathKind {
    fn key(self) -> &'static str {
        match self {
            PathKind::Source => "source",
            PathKind::SnapshotDir => "snapshot_dir",
            PathKind::Mountpoint => "mountpoint",
        }
    }
}

/// Conflicts between volumes, and between the volumes and `state_dir`, that
/// would only show at failover: shared or nested data, snapshots inside live
/// data, mounts that hide snapshots, data or each other.
fn validate_layout(
    cx: &Ctx,
    state_dir: &Path,
    raw: &[RawVolume],
    ordered: &[Volume],
) -> Result<()> {
    let places = layout_places(raw);
    check_places_apart(cx, raw, ordered, &places)?;
    check_state_dir_outside(cx, state_dir, raw, &places)?;
    check_dataset_names_apart(cx, raw)
}

/// A path a volume occupies on this host: `volume[i].<kind>`.
struct Place<'a> {
    i: usize,
    kind: PathKind,
    path: &'a Path,
}

impl Place<'_> {
    fn key(&self) -> String {
        format!("volume[{}].{}", self.i, self.kind.key())
    }

    fn name(&self, raw: &[RawVolume]) -> String {
        format!(
            "volume[{}].{} `{}` (role `{}`)",
            self.i,
            self.kind.key(),
            self.path.display(),
            raw[self.i].role
        )
    }
}

/// Every path the volumes occupy, in file order: a btrfs `source`, each
/// `snapshot_dir` and `mountpoint`.
fn layout_places(raw: &[RawVolume]) -> Vec<Place<'_>> {
    let mut places = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        if v.backend == BackendKind::Btrfs {
            let path = Path::new(&v.source);
            places.push(Place {
                i,
                kind: PathKind::Source,
                path,
            });
        }
        if let Some(d) = &v.snapshot_dir {
            places.push(Place {
                i,
                kind: PathKind::SnapshotDir,
                path: d,
            });
        }
        if let Some(m) = &v.mountpoint {
            places.push(Place {
                i,
                kind: PathKind::Mountpoint,
                path: m,
            });
        }
    }
    places
}

/// No two places are the same path or one inside the other, except where
/// failover's order makes it work; the error is on the later key in the file.
fn check_places_apart(
    cx: &Ctx,
    raw: &[RawVolume],
    ordered: &[Volume],
    places: &[Place],
) -> Result<()> {
    for (n, p) in places.iter().enumerate() {
        for q in &places[..n] {
            // p comes after q in the file (or is a later key of the same volume).
            if p.path == q.path {
                if let Some(why) = same_place_conflict(p, q) {
                    return Err(cx.err(
                        &p.key(),
                        format!("`{}` is also {}: {why}", p.path.display(), q.name(raw)),
                    ));
                }
                continue;
            }
            let (inner, outer) = if p.path.starts_with(q.path) {
                (p, q)
            } else if q.path.starts_with(p.path) {
                (q, p)
            } else {
                continue;
            };
            if let Some(why) = nested_place_conflict(raw, ordered, inner, outer) {
                return Err(cx.err(
                    &inner.key(),
                    format!(
                        "`{}` is inside {}: {why}",
                        inner.path.display(),
                        outer.name(raw)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Why two keys may not name the same path (`None`: they may).
fn same_place_conflict(p: &Place, q: &Place) -> Option<&'static str> {
    use PathKind::*;
    let same = p.i == q.i;
    let rank = |k: PathKind| k as u8;
    let pair = if rank(q.kind) <= rank(p.kind) {
        (q.kind, p.kind)
    } else {
        (p.kind, q.kind)
    };
    Some(match pair {
        (Source, Source) => "two volumes cannot share their data",
        (SnapshotDir, SnapshotDir) => "each volume needs its own snapshot_dir",
        (Mountpoint, Mountpoint) => "failover would mount two volumes at one place",
        (Source, Mountpoint) if same => return None, // the copy is already there
        (Source, Mountpoint) => "failover would mount one volume over another one's copy",
        (Source, SnapshotDir) => "snapshots must live beside the live subvolume, not in it",
        _ => "failover's mount would hide the received snapshots",
    })
}

/// Why `inner` may not lie inside `outer` (`None`: it may).
fn nested_place_conflict(
    raw: &[RawVolume],
    ordered: &[Volume],
    inner: &Place,
    outer: &Place,
) -> Option<&'static str> {
    use PathKind::*;
    // Failover mounts ZFS and LVM copies while it makes them, then bind-mounts
    // the btrfs ones, each group in snapshot order.
    let mount_seq = |i: usize| {
        let v = &raw[i];
        let pos = ordered.iter().position(|o| o.role == v.role).unwrap_or(0);
        (v.backend == BackendKind::Btrfs, pos)
    };
    Some(match (inner.kind, outer.kind) {
        (Source, Source) => {
            "nested subvolumes are snapshotted and copied separately; put them side by side"
        }
        (SnapshotDir, SnapshotDir) => {
            "each volume needs its own snapshot_dir; put them side by side"
        }
        (SnapshotDir, Source) => {
            "snapshots would nest in the live subvolume, and on the standby failover puts its copy there"
        }
        (Source, SnapshotDir) => "the live data must not live among the snapshots",
        (Mountpoint, Mountpoint) => {
            if mount_seq(outer.i) < mount_seq(inner.i) {
                return None; // mounted first, then the inner one inside it
            }
            "failover mounts that one after this one (ZFS and LVM copies first, then btrfs, each in set.order), hiding this one"
        }
        (Mountpoint, SnapshotDir) => "a mount there would hide received snapshots",
        (Mountpoint, Source) => {
            "failover would mount into a subvolume that it replaces with a copy"
        }
        (_, Mountpoint) => "failover's mount there would hide it",
    })
}

/// `state_dir` is not inside any volume's place.
fn check_state_dir_outside(
    cx: &Ctx,
    state_dir: &Path,
    raw: &[RawVolume],
    places: &[Place],
) -> Result<()> {
    if let Some(p) = places.iter().find(|p| state_dir.starts_with(p.path)) {
        return Err(cx.err(
            "state_dir",
            format!(
                "`{}` is inside {}: keep the state on a disk that survives the volumes (failover's copies and mounts would replace or hide it)",
                state_dir.display(),
                p.name(raw)
            ),
        ));
    }
    Ok(())
}

/// ZFS datasets and LVM `vg/lv` names, source and replica: each volume's
/// own, and (ZFS) none inside another volume's dataset.
fn check_dataset_names_apart(cx: &Ctx, raw: &[RawVolume]) -> Result<()> {
    let mut names: Vec<(usize, &'static str, &str)> = Vec::new();
    for (i, v) in raw.iter().enumerate() {
        if v.backend == BackendKind::Btrfs {
            continue;
        }
        names.push((i, "source", &v.source));
        if let Some(r) = &v.replica {
            names.push((i, "replica", r));
        }
    }
    for (n, &(i, k, a)) in names.iter().enumerate() {
        for &(j, l, b) in &names[..n] {
            if i == j || raw[i].backend != raw[j].backend {
                continue;
            }
            let other = format!("volume[{j}].{l} `{b}` (role `{}`)", raw[j].role);
            if a == b {
                return Err(cx.err(
                    &format!("volume[{i}].{k}"),
                    format!("`{a}` is also {other}: each volume needs its own"),
                ));
            }
            if raw[i].backend != BackendKind::Zfs || (k == "source" && l == "source") {
                continue;
            }
            let under = |x: &str, y: &str| x.strip_prefix(y).is_some_and(|r| r.starts_with('/'));
            let why = "receiving or cloning inside another volume's dataset fails at failover; put them side by side";
            if under(a, b) {
                return Err(cx.err(
                    &format!("volume[{i}].{k}"),
                    format!("`{a}` is inside {other}: {why}"),
                ));
            }
            if under(b, a) {
                return Err(cx.err(
                    &format!("volume[{j}].{l}"),
                    format!(
                        "`{b}` is inside volume[{i}].{k} `{a}` (role `{}`): {why}",
                        raw[i].role
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `[standby]`: how to reach the standby.
fn validate_standby(cx: &Ctx, s: RawStandby) -> Result<Standby> {
    let err = |k: &str, m: String| cx.err(&format!("standby.{k}"), m);
    let compression = match &s.compress {
        Some(c) => crate::wire::compress::Compression::parse(c).map_err(|m| err("compress", m))?,
        None => crate::wire::compress::Compression::None,
    };
    let bwlimit = crate::wire::ratelimit::Bwlimit::parse(s.bwlimit.as_deref(), &s.bwlimit_schedule)
        .map_err(|(i, m)| match i {
            usize::MAX => err("bwlimit", m),
            i => err(&format!("bwlimit_schedule[{i}]"), m),
        })?;
    // Relative paths would depend on the directory `ship` was started in.
    if let Some(p) = &s.identity {
        check_abs_path(p).map_err(|m| err("identity", m))?;
    }
    if let Some(p) = &s.ssh_config {
        check_abs_path(p).map_err(|m| err("ssh_config", m))?;
    }
    let transport = match s.transport {
        TransportKind::Local => {
            let c = s.config.as_ref().ok_or_else(|| {
                err(
                    "config",
                    "the local transport needs the standby's config file".into(),
                )
            })?;
            check_abs_path(c).map_err(|m| err("config", m))?;
            if c == cx.path {
                return Err(err(
                    "config",
                    format!(
                        "`{}` is this config itself: the standby needs its own",
                        c.display()
                    ),
                ));
            }
            Transport::Local { config: c.clone() }
        }
        TransportKind::Ssh => {
            let h = s
                .host
                .as_deref()
                .ok_or_else(|| err("host", "the ssh transport needs a host".into()))?;
            let ok = |x: &str| {
                !x.is_empty()
                    && !x.starts_with('-')
                    && x.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            };
            if !ok(h) {
                return Err(err("host", format!("`{h}` is not a host name or address")));
            }
            if let Some(u) = &s.user {
                if !ok(u) {
                    return Err(err("user", format!("`{u}` is not a user name")));
                }
            }
            if s.port == Some(0) {
                return Err(err("port", "0 is not a port".into()));
            }
            for o in &s.ssh_options {
                if !o.contains('=') || o.starts_with('-') {
                    return Err(err(
                        "ssh_options",
                        format!("`{o}` should look like `Key=Value`"),
                    ));
                }
            }
            let connect_timeout = match &s.connect_timeout {
                None => DEFAULT_CONNECT_TIMEOUT,
                Some(v) => cx.duration(
                    "standby.connect_timeout",
                    v,
                    (Duration::from_secs(1), Duration::from_secs(3600)),
                    "\"15s\", \"1m\"",
                )?,
            };
            Transport::Ssh(SshTarget {
                host: h.to_string(),
                user: s.user,
                port: s.port,
                identity: s.identity,
                ssh_config: s.ssh_config,
                ssh_options: s.ssh_options,
                remote_command: s.remote_command,
                connect_timeout,
            })
        }
        TransportKind::Command => {
            if s.command.is_empty() {
                return Err(err("command", "the command transport needs an argv".into()));
            }
            let program = Path::new(&s.command[0]);
            if s.command[0].contains('/') && !program.is_absolute() {
                return Err(err(
                    "command",
                    format!(
                        "`{}` is a relative path: it would depend on the directory `ship` was started from; give an absolute path, or a bare name found on PATH",
                        program.display()
                    ),
                ));
            }
            Transport::Command { argv: s.command }
        }
    };
    Ok(Standby {
        transport,
        compression,
        bwlimit,
    })
}

/// `[replay]`: the command failover runs, its time format and zone.
fn validate_replay(cx: &Ctx, r: &ReplaySection, raw: &[RawVolume]) -> Result<Replay> {
    if r.none {
        return Err(cx.err(
            "replay.none",
            "`none = true` says this application needs no replay, but replay.command is set too: keep one",
        ));
    }
    if r.command.is_empty() {
        return Err(cx.err(
            "replay.command",
            "missing: the argv failover runs (e.g. [\"/opt/zimbra/bin/zmplayredo\", \"--fromTime\", \"{from_time}\"]), or `none = true` if this application needs no replay",
        ));
    }
    let roles: Vec<&str> = raw.iter().map(|v| v.role.as_str()).collect();
    let command = Template::parse(&r.command, &roles).map_err(|m| cx.err("replay.command", m))?;
    let program = &r.command[0];
    if !program.contains('{') && program.contains('/') && !Path::new(program).is_absolute() {
        return Err(cx.err(
            "replay.command",
            format!(
                "`{program}` is a relative path: failover would look for it in whatever directory it was started from; give an absolute path, or a bare name found on PATH"
            ),
        ));
    }
    for p in command.placeholders() {
        let Some(role) = p.strip_prefix("mount:") else {
            continue;
        };
        let Some((i, v)) = raw.iter().enumerate().find(|(_, v)| v.role == role) else {
            continue;
        };
        if v.mountpoint.is_none() && v.backend != BackendKind::Btrfs {
            return Err(cx.err(
                "replay.command",
                format!(
                    "`{{{p}}}`: volume[{i}] (role `{role}`) is {} and has no mountpoint, so it has no path to pass; set volume[{i}].mountpoint",
                    v.backend.as_str()
                ),
            ));
        }
    }
    let time_format = TimeFormat::parse(r.time_format.as_deref().unwrap_or("zmplayredo"))
        .map_err(|m| cx.err("replay.time_format", m))?;
    let timezone = match &r.timezone {
        None => jiff::tz::TimeZone::system(),
        Some(z) => jiff::tz::TimeZone::get(z)
            .map_err(|e| cx.err("replay.timezone", format!("`{z}`: {e}")))?,
    };
    Ok(Replay {
        command,
        time_format,
        timezone,
    })
}

const INTERVAL_EXAMPLES: &str = "\"1h\", \"15m\", \"30s\"";

/// `[schedule]`: what `snapsite run` does (on the primary).
fn validate_schedule(cx: &Ctx, s: &ScheduleSection, has_standby: bool) -> Result<Schedule> {
    let d =
        |key: &str, v: &str, max: Duration| cx.duration(key, v, (SECOND, max), INTERVAL_EXAMPLES);
    let full_set_interval = d("schedule.full_set_interval", &s.full_set_interval, 30 * DAY)?;
    let redolog_interval = s
        .redolog_interval
        .as_deref()
        .map(|v| d("schedule.redolog_interval", v, DAY))
        .transpose()?;
    if redolog_interval.is_some_and(|r| r >= full_set_interval) {
        return Err(cx.err(
            "schedule.redolog_interval",
            "must be shorter than schedule.full_set_interval (a full set snapshots the redolog volume too); remove it to take full sets only",
        ));
    }
    let retry_min = match &s.retry_min {
        Some(v) => d("schedule.retry_min", v, HOUR)?,
        None => Duration::from_secs(10),
    };
    let retry_max = match &s.retry_max {
        Some(v) => d("schedule.retry_max", v, DAY)?,
        None => Duration::from_secs(15 * 60),
    };
    if retry_max < retry_min {
        return Err(cx.err(
            "schedule.retry_max",
            "must not be shorter than schedule.retry_min",
        ));
    }
    if !has_standby {
        return Err(cx.err(
            "schedule",
            "`snapsite run` runs on the primary: this config has no [standby] section",
        ));
    }
    Ok(Schedule {
        full_set_interval,
        redolog_interval,
        retry_min,
        retry_max,
    })
}

/// `[retention]`: the grids and the standby's minimum age.
fn validate_retention(cx: &Ctx, r: &RetentionSection) -> Result<Retention> {
    let full =
        crate::base::retention::Grid::parse(&r.grid).map_err(|m| cx.err("retention.grid", m))?;
    let redolog = match &r.redolog_grid {
        Some(g) => crate::base::retention::Grid::parse(g)
            .map_err(|m| cx.err("retention.redolog_grid", m))?,
        None => full.clone(),
    };
    let keep_min_age = match &r.keep_min_age {
        None => 7 * DAY,
        Some(v) => cx.duration(
            "retention.keep_min_age",
            v,
            (Duration::ZERO, 100 * 365 * DAY),
            "\"7d\", \"0s\" to turn it off",
        )?,
    };
    Ok(Retention {
        full,
        redolog,
        keep_min_age,
    })
}

/// `[status]`: thresholds, with defaults.
fn validate_status(cx: &Ctx, s: Option<&StatusSection>) -> Result<StatusThresholds> {
    let s = s.cloned().unwrap_or_default();
    let d = StatusThresholds::default();
    let pick = |key: &str, v: &Option<String>, def: Duration| match v {
        Some(v) => cx.duration(key, v, (SECOND, 365 * DAY), INTERVAL_EXAMPLES),
        None => Ok(def),
    };
    let t = StatusThresholds {
        recovery_point_warning: pick(
            "status.recovery_point_warning",
            &s.recovery_point_warning,
            d.recovery_point_warning,
        )?,
        recovery_point_critical: pick(
            "status.recovery_point_critical",
            &s.recovery_point_critical,
            d.recovery_point_critical,
        )?,
        full_set_warning: pick(
            "status.full_set_warning",
            &s.full_set_warning,
            d.full_set_warning,
        )?,
        full_set_critical: pick(
            "status.full_set_critical",
            &s.full_set_critical,
            d.full_set_critical,
        )?,
        prometheus: s.prometheus.clone(),
    };
    if t.recovery_point_critical < t.recovery_point_warning {
        return Err(cx.err(
            "status.recovery_point_critical",
            "must not be shorter than status.recovery_point_warning",
        ));
    }
    if t.full_set_critical < t.full_set_warning {
        return Err(cx.err(
            "status.full_set_critical",
            "must not be shorter than status.full_set_warning",
        ));
    }
    if let Some(p) = &t.prometheus {
        check_abs_path(p).map_err(|m| cx.err("status.prometheus", m))?;
    }
    Ok(t)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
site = "a"
state_dir = "/var/lib/snapsite"
[[volume]]
role = "mysql"
backend = "btrfs"
source = "/srv/mysql"
snapshot_dir = "/srv/.snap/mysql"
[[volume]]
role = "redolog"
backend = "zfs"
source = "tank/redolog"
[set]
order = ["mysql", "redolog"]
safety_margin = "2s"
[standby]
transport = "ssh"
host = "standby.example"
[replay]
command = ["zmplayredo", "--fromTime", "{from_time}"]
"#;

    fn parse(s: &str) -> Result<Config> {
        Config::parse(s, Path::new("/etc/snapsite/t.toml"))
    }

    #[test]
    fn good_config_parses() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.volumes.len(), 2);
        assert_eq!(c.redolog().source, "tank/redolog");
        assert_eq!(c.safety_margin, Duration::from_secs(2));
    }

    fn expect_err(text: &str, needle: &str) {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains("/etc/snapsite/t.toml"), "no file in: {e}");
        assert!(e.contains(needle), "`{needle}` not in: {e}");
    }

    #[test]
    fn max_size_is_validated_and_lvm_only() {
        let lvm = "site = \"b\"\nstate_dir = \"/var/lib/snapsite\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"lvm\"\nsource = \"vg/live\"\nreplica = \"vg/redolog\"\n";
        let c = parse(&format!("{lvm}max_size = \"2TiB\"\n")).unwrap();
        assert_eq!(c.volumes[0].max_size_bytes(), Some(2 << 40));
        assert_eq!(parse(lvm).unwrap().volumes[0].max_size_bytes(), None);
        expect_err(
            &format!("{lvm}max_size = \"2 parsecs\"\n"),
            "volume[0].max_size",
        );
        expect_err(&format!("{lvm}max_size = \"0GiB\"\n"), "volume[0].max_size");
        expect_err(&format!("{lvm}max_size = \"99999999PiB\"\n"), "too large");
        expect_err(
            &GOOD.replace(
                "source = \"tank/redolog\"",
                "source = \"tank/redolog\"\nmax_size = \"1TiB\"",
            ),
            "volume[1].max_size",
        );
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("-1G").is_err());
    }

    #[test]
    fn errors_name_file_and_key() {
        expect_err(
            &GOOD.replace("tank/redolog", "/tank/redolog"),
            "volume[1].source",
        );
        expect_err(
            &GOOD.replace("role = \"mysql\"", "role = \"My SQL\""),
            "volume[0].role",
        );
        expect_err(
            &GOOD.replace("snapshot_dir = \"/srv/.snap/mysql\"", ""),
            "volume[0].snapshot_dir",
        );
        expect_err(
            &GOOD.replace("\"mysql\", \"redolog\"]", "\"mysql\", \"blob\"]"),
            "set.order[1]",
        );
        expect_err(&GOOD.replace("\"2s\"", "\"soon\""), "set.safety_margin");
        expect_err(
            &GOOD.replace("standby.example", "-oProxyCommand=x"),
            "standby.host",
        );
        expect_err(&GOOD.replace("{from_time}", "{frm_time}"), "replay.command");
        expect_err(
            &GOOD.replace("backend = \"zfs\"", "backend = \"xfs\""),
            "backend",
        );
        expect_err(
            &GOOD.replace("site = \"a\"", "site = \"a\"\nbogus = 1"),
            "bogus",
        );
        expect_err(
            &GOOD.replace("/srv/mysql", "/srv/../etc"),
            "volume[0].source",
        );
    }

    const RUN: &str = r#"
[schedule]
full_set_interval = "1h"
redolog_interval = "15m"
[retention]
grid = "1x1h(keep=all) | 24x1h | 14x1d"
redolog_grid = "1x1h(keep=all) | 6x1h"
[status]
recovery_point_warning = "20m"
recovery_point_critical = "45m"
prometheus = "/var/lib/node_exporter/textfile/snapsite.prom"
"#;

    #[test]
    fn run_sections_parse_and_default() {
        let c = parse(GOOD).unwrap();
        assert!(c.schedule.is_none() && c.retention.is_none());
        assert_eq!(c.status, StatusThresholds::default());
        let c = parse(&format!("{GOOD}{RUN}")).unwrap();
        let s = c.schedule.unwrap();
        assert_eq!(s.full_set_interval, Duration::from_secs(3600));
        assert_eq!(s.redolog_interval, Some(Duration::from_secs(900)));
        let r = c.retention.unwrap();
        assert_eq!(r.full.to_string(), "1x1h(keep=all) | 24x1h | 14x1d");
        assert_eq!(r.redolog.to_string(), "1x1h(keep=all) | 6x1h");
        assert_eq!(c.status.recovery_point_warning, Duration::from_secs(1200));
        assert_eq!(c.status.full_set_critical, Duration::from_secs(86400));
    }

    #[test]
    fn run_section_errors_name_file_and_key() {
        let all = format!("{GOOD}{RUN}");
        expect_err(
            &all.replace("\"15m\"", "\"often\""),
            "schedule.redolog_interval",
        );
        expect_err(
            &all.replace("\"1h\"\n", "\"0s\"\n"),
            "schedule.full_set_interval",
        );
        expect_err(&all.replace("24x1h", "24y1h"), "retention.grid");
        expect_err(&all.replace("6x1h", "6x"), "retention.redolog_grid");
        expect_err(
            &all.replace("\"45m\"", "\"10m\""),
            "status.recovery_point_critical",
        );
        expect_err(
            &all.replace("\"/var/lib/node", "\"var/lib/node"),
            "status.prometheus",
        );
        expect_err(&all.replace("[status]", "[status]\nbogus = 1"), "bogus");
        let no_standby = all.replace(
            "[standby]\ntransport = \"ssh\"\nhost = \"standby.example\"\n",
            "",
        );
        expect_err(&no_standby, "schedule");
    }

    /// Four volumes as a standby would have them: two btrfs, two ZFS.
    const LAYOUT: &str = r#"
site = "b"
state_dir = "/var/lib/snapsite"
[[volume]]
role = "mysql"
backend = "btrfs"
source = "/srv/live/mysql"
snapshot_dir = "/srv/snap/mysql"
mountpoint = "/opt/app/mysql"
[[volume]]
role = "blob"
backend = "btrfs"
source = "/srv/live/blob"
snapshot_dir = "/srv/snap/blob"
mountpoint = "/opt/app/blob"
[[volume]]
role = "index"
backend = "zfs"
source = "tank/live/index"
replica = "tank/replica/index"
mountpoint = "/opt/app/index"
[[volume]]
role = "redolog"
backend = "zfs"
source = "tank/live/redolog"
replica = "tank/replica/redolog"
mountpoint = "/opt/app/redolog"
[replay]
command = ["/usr/bin/zmplayredo", "--fromTime", "{from_time}", "--index", "{mount:index}"]
"#;

    /// `LAYOUT` with `key = "from"` in the volume of `role` set to `to`.
    fn layout(role: &str, key: &str, to: &str) -> String {
        let head = format!("role = \"{role}\"");
        let (before, after) = LAYOUT.split_once(&head).unwrap();
        let (vol, rest) = after.split_once("[[volume]]").unwrap_or((after, ""));
        let mut lines: Vec<String> = vol
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(str::to_string)
            .collect();
        if !to.is_empty() {
            lines.insert(1, format!("{key} = \"{to}\""));
        }
        let vol = lines.join("\n");
        if rest.is_empty() {
            format!("{before}{head}{vol}\n")
        } else {
            format!("{before}{head}{vol}\n[[volume]]{rest}")
        }
    }

    /// The error names the file, `key`, and every `needles`.
    fn expect_err_all(text: &str, key: &str, needles: &[&str]) {
        let e = parse(text).expect_err(text).to_string();
        assert!(e.contains("/etc/snapsite/t.toml"), "no file in: {e}");
        assert!(e.contains(&format!("{key}: ")), "key `{key}` not in: {e}");
        for n in needles {
            assert!(e.contains(n), "`{n}` not in: {e}");
        }
    }

    #[test]
    fn layout_base_and_allowed_variants_parse() {
        parse(LAYOUT).unwrap();
        // a btrfs copy used in place: mountpoint = its own source
        parse(&layout("mysql", "mountpoint", "/srv/live/mysql")).unwrap();
        // nested mountpoints when the outer one is mounted first
        parse(&layout("blob", "mountpoint", "/opt/app/mysql/blob")).unwrap();
        // a mountpoint is optional
        parse(&layout("blob", "mountpoint", "")).unwrap();
        // bare replay program (looked up on PATH by check)
        parse(&LAYOUT.replace("/usr/bin/zmplayredo", "zmplayredo")).unwrap();
    }

    #[test]
    fn volumes_sharing_data_are_errors_naming_both_keys() {
        expect_err_all(
            &layout("blob", "mountpoint", "/opt/app/mysql"),
            "volume[1].mountpoint",
            &[
                "volume[0].mountpoint",
                "`mysql`",
                "two volumes at one place",
            ],
        );
        expect_err_all(
            &layout("blob", "mountpoint", "/opt/app/mysql/"),
            "volume[1].mountpoint",
            &["volume[0].mountpoint"],
        );
        expect_err_all(
            &layout("blob", "source", "/srv/live/mysql"),
            "volume[1].source",
            &["volume[0].source", "share"],
        );
        expect_err_all(
            &layout("blob", "snapshot_dir", "/srv/snap/mysql"),
            "volume[1].snapshot_dir",
            &["volume[0].snapshot_dir"],
        );
        expect_err_all(
            &layout("redolog", "replica", "tank/replica/index"),
            "volume[3].replica",
            &["volume[2].replica", "`index`"],
        );
        expect_err_all(
            &layout("index", "replica", "tank/live/redolog"),
            "volume[3].source",
            &["volume[2].replica"],
        );
        expect_err_all(
            &layout("redolog", "source", "tank/live/index"),
            "volume[3].source",
            &["volume[2].source"],
        );
    }

    #[test]
    fn nested_volume_paths_are_errors() {
        // snapshot_dir inside its own source, or another volume's
        expect_err_all(
            &layout("mysql", "snapshot_dir", "/srv/live/mysql/.snap"),
            "volume[0].snapshot_dir",
            &["inside volume[0].source"],
        );
        expect_err_all(
            &layout("blob", "snapshot_dir", "/srv/live/mysql/snaps"),
            "volume[1].snapshot_dir",
            &["inside volume[0].source `/srv/live/mysql`"],
        );
        // the live data among the snapshots
        expect_err_all(
            &layout("blob", "source", "/srv/snap/mysql/blob"),
            "volume[1].source",
            &["inside volume[0].snapshot_dir"],
        );
        // nested subvolumes / snapshot dirs
        expect_err_all(
            &layout("blob", "source", "/srv/live/mysql/blob"),
            "volume[1].source",
            &["inside volume[0].source"],
        );
        expect_err_all(
            &layout("mysql", "snapshot_dir", "/srv/snap"),
            "volume[1].snapshot_dir",
            &["inside volume[0].snapshot_dir"],
        );
        // mountpoints over snapshots, into or over live data
        expect_err_all(
            &layout("blob", "mountpoint", "/srv/snap/mysql/x"),
            "volume[1].mountpoint",
            &["inside volume[0].snapshot_dir", "hide"],
        );
        expect_err_all(
            &layout("blob", "mountpoint", "/srv/snap"),
            "volume[0].snapshot_dir",
            &["inside volume[1].mountpoint", "hide"],
        );
        expect_err_all(
            &layout("blob", "mountpoint", "/srv/live/mysql"),
            "volume[1].mountpoint",
            &["volume[0].source"],
        );
        expect_err_all(
            &layout("mysql", "mountpoint", "/srv/live/mysql/data"),
            "volume[0].mountpoint",
            &["inside volume[0].source"],
        );
        expect_err_all(
            &layout("mysql", "mountpoint", "/srv"),
            "volume[0].source",
            &["inside volume[0].mountpoint `/srv`"],
        );
        // an outer mountpoint mounted after the inner one hides it: btrfs
        // later in the order, or btrfs over a ZFS clone (mounted first)
        expect_err_all(
            &layout("mysql", "mountpoint", "/opt/app/blob/mysql"),
            "volume[0].mountpoint",
            &["inside volume[1].mountpoint", "after"],
        );
        expect_err_all(
            &layout("index", "mountpoint", "/opt/app/mysql/index"),
            "volume[2].mountpoint",
            &["inside volume[0].mountpoint"],
        );
        // ZFS datasets of one volume inside another's replica
        expect_err_all(
            &layout("redolog", "replica", "tank/replica/index/redolog"),
            "volume[3].replica",
            &["inside volume[2].replica"],
        );
        expect_err_all(
            &layout("redolog", "source", "tank/replica/index/redolog"),
            "volume[3].source",
            &["inside volume[2].replica"],
        );
        // a dataset name that merely starts the same is not nested
        parse(&layout("redolog", "replica", "tank/replica/index2")).unwrap();
        // the state on a volume
        expect_err_all(
            &LAYOUT.replace("/var/lib/snapsite", "/srv/live/blob/state"),
            "state_dir",
            &["inside volume[1].source"],
        );
        expect_err_all(
            &LAYOUT.replace("/var/lib/snapsite", "/opt/app/index"),
            "state_dir",
            &["volume[2].mountpoint"],
        );
        expect_err_all(
            &LAYOUT.replace("/var/lib/snapsite", "/var/lib/../snapsite"),
            "state_dir",
            &["`..`"],
        );
    }

    #[test]
    fn backend_specific_keys_are_errors_elsewhere() {
        expect_err_all(
            &layout("index", "snapshot_dir", "/srv/snap/index"),
            "volume[2].snapshot_dir",
            &["btrfs volumes only"],
        );
        expect_err_all(
            &layout("mysql", "replica", "/srv/replica/mysql"),
            "volume[0].replica",
            &["snapshot_dir"],
        );
    }

    #[test]
    fn durations_are_range_checked() {
        let margin = |m: &str| format!("{LAYOUT}[set]\nsafety_margin = \"{m}\"\n");
        expect_err_all(&margin("20000y"), "set.safety_margin", &["`20000y`", "1h"]);
        expect_err_all(&margin("61m"), "set.safety_margin", &["1h"]);
        assert_eq!(
            parse(&margin("1h")).unwrap().safety_margin,
            MAX_SAFETY_MARGIN
        );
        assert_eq!(parse(&margin("0s")).unwrap().safety_margin, Duration::ZERO);

        let all = format!("{GOOD}{RUN}");
        expect_err_all(
            &all.replace("full_set_interval = \"1h\"", "full_set_interval = \"400d\""),
            "schedule.full_set_interval",
            &["`400d`", "30days"],
        );
        expect_err_all(
            &all.replace("\"15m\"", "\"2h\""),
            "schedule.redolog_interval",
            &["shorter than schedule.full_set_interval"],
        );
        expect_err_all(
            &all.replace("\"15m\"", "\"1h\""),
            "schedule.redolog_interval",
            &["shorter"],
        );
        expect_err_all(
            &all.replace("redolog_interval = \"15m\"", "retry_min = \"2h\""),
            "schedule.retry_min",
            &["`2h`"],
        );
        expect_err_all(
            &all.replace("redolog_interval = \"15m\"", "retry_max = \"20000y\""),
            "schedule.retry_max",
            &["`20000y`"],
        );
        expect_err_all(
            &all.replace("\"45m\"", "\"2y\""),
            "status.recovery_point_critical",
            &["`2y`"],
        );
        expect_err_all(
            &all.replace("\"20m\"", "\"0s\""),
            "status.recovery_point_warning",
            &["at least 1s"],
        );
        expect_err_all(
            &all.replace("redolog_grid", "keep_min_age = \"20000y\"\nredolog_grid"),
            "retention.keep_min_age",
            &["`20000y`"],
        );
        let c = parse(&all.replace("redolog_grid", "keep_min_age = \"0s\"\nredolog_grid")).unwrap();
        assert_eq!(c.retention.unwrap().keep_min_age, Duration::ZERO);
    }

    #[test]
    fn replay_mistakes_that_fail_only_at_failover() {
        expect_err_all(
            &LAYOUT.replace("/usr/bin/zmplayredo", "bin/zmplayredo"),
            "replay.command",
            &["`bin/zmplayredo` is a relative path"],
        );
        // {mount:index} of a ZFS volume without a mountpoint has no path
        expect_err_all(
            &layout("index", "mountpoint", ""),
            "replay.command",
            &["{mount:index}", "volume[2].mountpoint"],
        );
        // a btrfs volume without a mountpoint passes its source
        parse(&layout("mysql", "mountpoint", "").replace("{mount:index}", "{mount:mysql}"))
            .unwrap();
    }

    #[test]
    fn wan_keys_are_validated_and_named() {
        let with =
            |extra: &str| GOOD.replace("standby.example\"", &format!("standby.example\"\n{extra}"));
        let c = parse(&with(
            "compress = \"zstd:5\"\nbwlimit = \"20MiB/s\"\nbwlimit_schedule = [\"Mon-Fri 08:00-18:00 5MiB/s\"]",
        ))
        .unwrap();
        let s = c.standby.as_ref().unwrap();
        assert_eq!(
            s.compression,
            crate::wire::compress::Compression::Zstd { level: 5 }
        );
        assert!(!s.bwlimit.is_unlimited());
        let plain = parse(GOOD).unwrap();
        assert_eq!(
            plain.standby.as_ref().unwrap().compression,
            crate::wire::compress::Compression::None
        );
        assert!(plain.standby.as_ref().unwrap().bwlimit.is_unlimited());
        expect_err(&with("compress = \"gzip\""), "standby.compress");
        expect_err(&with("compress = \"zstd:42\""), "standby.compress");
        expect_err(&with("bwlimit = \"20MiB\""), "standby.bwlimit");
        expect_err(
            &with("bwlimit_schedule = [\"* 00:00-06:00 none\", \"Mon-Fri 18:00-08:00 5MiB/s\"]"),
            "standby.bwlimit_schedule[1]",
        );
    }

    #[test]
    fn standby_section_mistakes() {
        let local = GOOD.replace(
            "transport = \"ssh\"\nhost = \"standby.example\"",
            "transport = \"local\"\nconfig = \"/etc/snapsite/t.toml\"",
        );
        expect_err_all(&local, "standby.config", &["this config itself"]);
        parse(&local.replace("/t.toml\"", "/standby.toml\"")).unwrap();
        expect_err_all(
            &GOOD.replace(
                "standby.example\"",
                "standby.example\"\nidentity = \"id_ed25519\"",
            ),
            "standby.identity",
            &["absolute"],
        );
        let command = GOOD.replace(
            "transport = \"ssh\"\nhost = \"standby.example\"",
            "transport = \"command\"\ncommand = [\"bin/serve\", \"--stdio\"]",
        );
        expect_err_all(
            &command,
            "standby.command",
            &["`bin/serve` is a relative path"],
        );
        parse(&command.replace("bin/serve", "/usr/local/bin/serve")).unwrap();
        parse(&command.replace("bin/serve", "snapsite")).unwrap();
        expect_err_all(
            &GOOD.replace("standby.example\"", "standby.example\"\nport = 0"),
            "standby.port",
            &["0"],
        );
    }

    #[test]
    fn volume_mismatches_both_ways() {
        let c = parse(LAYOUT).unwrap();
        let same = [
            ("mysql", "btrfs"),
            ("blob", "btrfs"),
            ("index", "zfs"),
            ("redolog", "zfs"),
        ];
        assert!(c.volume_mismatches("a", &same).is_empty());
        // the other site has a volume this config does not name
        let mut three = parse(&LAYOUT.replace(
            "[[volume]]\nrole = \"blob\"\nbackend = \"btrfs\"\nsource = \"/srv/live/blob\"\nsnapshot_dir = \"/srv/snap/blob\"\nmountpoint = \"/opt/app/blob\"\n",
            "",
        ))
        .unwrap()
        .volume_mismatches("a", &same);
        assert_eq!(three.len(), 1, "{three:?}");
        let m = three.pop().unwrap();
        assert!(m.contains("`blob`") && m.contains("standby `a`"), "{m}");
        // this config names a volume the other site lacks
        let m = c.volume_mismatches("a", &same[..3]);
        assert!(m.len() == 1 && m[0].contains("`redolog`"), "{m:?}");
        // backends differ
        let m = c.volume_mismatches(
            "a",
            &[
                ("mysql", "btrfs"),
                ("blob", "btrfs"),
                ("index", "lvm"),
                ("redolog", "zfs"),
            ],
        );
        assert!(
            m.len() == 1 && m[0].contains("`index` is zfs here but lvm"),
            "{m:?}"
        );
    }

    #[test]
    fn replay_program_is_found_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let with = |program: &str| {
            let text = LAYOUT.replace("/usr/bin/zmplayredo", program);
            parse(&text).unwrap().replay_program()
        };
        let missing = dir.path().join("missing");
        let e = with(missing.to_str().unwrap()).unwrap_err();
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        let e = with(plain.to_str().unwrap()).unwrap_err();
        assert!(e.contains("not executable"), "{e}");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(with(plain.to_str().unwrap()).unwrap(), Some(plain.clone()));
        let e = with(dir.path().to_str().unwrap()).unwrap_err();
        assert!(e.contains("directory"), "{e}");
        // bare names: looked up on PATH like failover's exec does
        let sh = with("sh").unwrap().unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        let e = with("snapsite-no-such-program").unwrap_err();
        assert!(e.contains("PATH"), "{e}");
        // a placeholder is only known at failover
        assert_eq!(with("{mount:mysql}/replay").unwrap(), None);
    }
}
