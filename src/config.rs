//! The TOML configuration: schema, defaults and validation. Every error names
//! the file and the key (`volume[2].source`), and nothing is touched on disk
//! before a config has validated.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::validate_role;
use crate::replay::{Template, TimeFormat};

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// mysql, blob, index, redolog, or any name.
    pub role: String,
    pub backend: BackendKind,
    /// The backend's address of the live data on this site: btrfs subvolume
    /// path, ZFS dataset, LVM `vg/lv`. On the standby, where failover puts the
    /// writable copy (btrfs) or where received snapshots land (ZFS, LVM).
    pub source: String,
    /// zfs / lvm, on the standby: where received snapshots land (a ZFS
    /// dataset, or an LVM thin `vg/lv`); failover then makes its writable
    /// copy at `source`. btrfs uses `snapshot_dir` instead.
    pub replica: Option<String>,
    /// zfs: send options (recorded in each member of the manifest).
    #[serde(default)]
    pub zfs: ZfsOptions,
    /// btrfs: directory (on the same filesystem) holding this site's
    /// snapshots of the volume: taken ones on the primary, received ones on
    /// the standby.
    pub snapshot_dir: Option<PathBuf>,
    /// Where the application expects the volume. On failover the writable
    /// copy is bind-mounted here when it differs from `source`.
    pub mountpoint: Option<PathBuf>,
    /// lvm, on the standby: the largest replica a stream may declare
    /// (`"2TiB"`, `"500GiB"`, bytes with a binary suffix). Default: the size
    /// of the replica's volume group. See [`Volume::max_size_bytes`].
    pub max_size: Option<String>,
}

impl Volume {
    /// `max_size` in bytes (validated when the config loaded).
    pub fn max_size_bytes(&self) -> Option<u64> {
        self.max_size.as_deref().and_then(|s| parse_size(s).ok())
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
pub enum TransportKind {
    /// Spawn `snapsite serve --stdio` on this host (standby on the same host,
    /// or storage reachable locally).
    Local,
    /// `ssh -o BatchMode=yes [user@]host <remote_command>`.
    Ssh,
    /// Any argv whose stdin/stdout speak the protocol (e.g. `ip netns exec`).
    Command,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standby {
    pub transport: TransportKind,
    /// local: the standby's config file.
    pub config: Option<PathBuf>,
    /// ssh: host name or address.
    pub host: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    /// ssh: an ssh_config file (`ssh -F`).
    pub ssh_config: Option<PathBuf>,
    /// ssh: extra `-o Key=Value` options.
    #[serde(default)]
    pub ssh_options: Vec<String>,
    /// ssh: the command run on the standby (default `snapsite serve --stdio`).
    #[serde(default)]
    pub remote_command: Vec<String>,
    /// command: the argv to spawn.
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySection {
    /// argv template; placeholders: {from_time} {from_time_utc} {set_id}
    /// {redolog_set_id} {redolog_time} {mount:ROLE}.
    pub command: Vec<String>,
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
    volumes: Vec<Volume>,
    #[serde(default)]
    set: SetSection,
    standby: Option<Standby>,
    replay: Option<ReplaySection>,
    schedule: Option<ScheduleSection>,
    retention: Option<RetentionSection>,
    status: Option<StatusSection>,
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
    /// `[schedule]`, if `snapsite run` is configured.
    pub schedule: Option<Schedule>,
    /// `[retention]`, if pruning is configured.
    pub retention: Option<Retention>,
    /// `[status]`, with defaults when absent.
    pub status: StatusThresholds,
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
    pub full: crate::prune::Grid,
    pub redolog: crate::prune::Grid,
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
                "pass --config FILE or set SNAPSITE_CONFIG; examples/snapsite.toml is annotated",
            )
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| Error::config(format!("{}: {}", path.display(), e.to_string().trim())))?;
        let err =
            |key: &str, msg: String| Error::config(format!("{}: {key}: {msg}", path.display()));

        if raw.site.is_empty()
            || !raw
                .site
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(err(
                "site",
                format!(
                    "`{}` must be non-empty and use only a-z, 0-9, `-`, `_`, `.`",
                    raw.site
                ),
            ));
        }
        if !raw.state_dir.is_absolute() {
            return Err(err(
                "state_dir",
                format!("`{}` must be an absolute path", raw.state_dir.display()),
            ));
        }
        if raw.volumes.is_empty() {
            return Err(err("volume", "no [[volume]] is configured".into()));
        }
        let mut seen = HashSet::new();
        for (i, v) in raw.volumes.iter().enumerate() {
            let key = |k: &str| format!("volume[{i}].{k}");
            validate_role(&v.role).map_err(|m| err(&key("role"), m))?;
            if !seen.insert(v.role.clone()) {
                return Err(err(
                    &key("role"),
                    format!("role `{}` is configured twice", v.role),
                ));
            }
            validate_source(v.backend, &v.source).map_err(|m| err(&key("source"), m))?;
            if v.backend != BackendKind::Zfs && v.zfs != ZfsOptions::default() {
                return Err(err(
                    &key("zfs"),
                    format!(
                        "send options apply to ZFS volumes only, this one is {}",
                        v.backend.as_str()
                    ),
                ));
            }
            if let Some(r) = &v.replica {
                if v.backend == BackendKind::Btrfs {
                    return Err(err(
                        &key("replica"),
                        "btrfs volumes keep received snapshots in snapshot_dir; remove `replica`"
                            .into(),
                    ));
                }
                validate_source(v.backend, r).map_err(|m| err(&key("replica"), m))?;
                if r == &v.source {
                    return Err(err(
                        &key("replica"),
                        "must differ from `source` (failover makes its writable copy at `source`)"
                            .into(),
                    ));
                }
            }
            if v.backend == BackendKind::Btrfs {
                match &v.snapshot_dir {
                    None => {
                        return Err(err(
                            &key("snapshot_dir"),
                            "btrfs volumes need a snapshot_dir on the same filesystem".into(),
                        ));
                    }
                    Some(d) => check_abs_path(d).map_err(|m| err(&key("snapshot_dir"), m))?,
                }
            }
            if let Some(m) = &v.mountpoint {
                check_abs_path(m).map_err(|m| err(&key("mountpoint"), m))?;
            }
            if let Some(ms) = &v.max_size {
                if v.backend != BackendKind::Lvm {
                    return Err(err(
                        &key("max_size"),
                        format!(
                            "applies to LVM volumes only, this one is {}",
                            v.backend.as_str()
                        ),
                    ));
                }
                parse_size(ms).map_err(|m| err(&key("max_size"), m))?;
            }
        }

        let volumes = if raw.set.order.is_empty() {
            raw.volumes.clone()
        } else {
            let mut ordered = Vec::new();
            for (i, r) in raw.set.order.iter().enumerate() {
                let v = raw.volumes.iter().find(|v| &v.role == r).ok_or_else(|| {
                    err(
                        &format!("set.order[{i}]"),
                        format!("no volume has role `{r}`"),
                    )
                })?;
                if ordered.iter().any(|o: &Volume| &o.role == r) {
                    return Err(err(
                        &format!("set.order[{i}]"),
                        format!("`{r}` is listed twice"),
                    ));
                }
                ordered.push(v.clone());
            }
            if ordered.len() != raw.volumes.len() {
                let missing: Vec<_> = raw
                    .volumes
                    .iter()
                    .filter(|v| !raw.set.order.contains(&v.role))
                    .map(|v| v.role.as_str())
                    .collect();
                return Err(err(
                    "set.order",
                    format!("does not list {}", missing.join(", ")),
                ));
            }
            ordered
        };
        let redolog_role = raw.set.redolog.clone().unwrap_or_else(|| "redolog".into());
        if !volumes.iter().any(|v| v.role == redolog_role) {
            return Err(err(
                "set.redolog",
                format!(
                    "no volume has role `{redolog_role}` (set `set.redolog` to the role of the redo log volume)"
                ),
            ));
        }
        let safety_margin = match &raw.set.safety_margin {
            None => Duration::ZERO,
            Some(s) => humantime::parse_duration(s).map_err(|e| {
                err(
                    "set.safety_margin",
                    format!("`{s}`: {e} (e.g. \"2s\", \"500ms\")"),
                )
            })?,
        };

        if let Some(s) = &raw.standby {
            validate_standby(s).map_err(|(k, m)| err(&format!("standby.{k}"), m))?;
        }

        let replay = match &raw.replay {
            None => None,
            Some(r) => {
                let roles: Vec<&str> = volumes.iter().map(|v| v.role.as_str()).collect();
                let command =
                    Template::parse(&r.command, &roles).map_err(|m| err("replay.command", m))?;
                let time_format =
                    TimeFormat::parse(r.time_format.as_deref().unwrap_or("zmplayredo"))
                        .map_err(|m| err("replay.time_format", m))?;
                let timezone = match &r.timezone {
                    None => jiff::tz::TimeZone::system(),
                    Some(z) => jiff::tz::TimeZone::get(z)
                        .map_err(|e| err("replay.timezone", format!("`{z}`: {e}")))?,
                };
                Some(Replay {
                    command,
                    time_format,
                    timezone,
                })
            }
        };

        let duration = |key: &str, v: &str| {
            humantime::parse_duration(v)
                .map_err(|e| err(key, format!("`{v}`: {e} (e.g. \"1h\", \"15m\", \"30s\")")))
        };
        let positive = |key: &str, v: &str| {
            let d = duration(key, v)?;
            if d < Duration::from_secs(1) {
                return Err(err(key, format!("`{v}` must be at least 1s")));
            }
            Ok(d)
        };
        let schedule = match &raw.schedule {
            None => None,
            Some(s) => {
                let full_set_interval =
                    positive("schedule.full_set_interval", &s.full_set_interval)?;
                let redolog_interval = s
                    .redolog_interval
                    .as_deref()
                    .map(|v| positive("schedule.redolog_interval", v))
                    .transpose()?;
                let retry_min = match &s.retry_min {
                    Some(v) => positive("schedule.retry_min", v)?,
                    None => Duration::from_secs(10),
                };
                let retry_max = match &s.retry_max {
                    Some(v) => positive("schedule.retry_max", v)?,
                    None => Duration::from_secs(15 * 60),
                };
                if retry_max < retry_min {
                    return Err(err(
                        "schedule.retry_max",
                        "must not be shorter than schedule.retry_min".into(),
                    ));
                }
                if raw.standby.is_none() {
                    return Err(err(
                        "schedule",
                        "`snapsite run` runs on the primary: this config has no [standby] section"
                            .into(),
                    ));
                }
                Some(Schedule {
                    full_set_interval,
                    redolog_interval,
                    retry_min,
                    retry_max,
                })
            }
        };
        let retention = match &raw.retention {
            None => None,
            Some(r) => {
                let full =
                    crate::prune::Grid::parse(&r.grid).map_err(|m| err("retention.grid", m))?;
                let redolog = match &r.redolog_grid {
                    Some(g) => crate::prune::Grid::parse(g)
                        .map_err(|m| err("retention.redolog_grid", m))?,
                    None => full.clone(),
                };
                let keep_min_age = match &r.keep_min_age {
                    None => Duration::from_secs(7 * 24 * 3600),
                    Some(v) => humantime::parse_duration(v).map_err(|e| {
                        err(
                            "retention.keep_min_age",
                            format!("`{v}`: {e} (e.g. \"7d\", \"0s\" to turn it off)"),
                        )
                    })?,
                };
                if keep_min_age > Duration::from_secs(100 * 365 * 24 * 3600) {
                    return Err(err(
                        "retention.keep_min_age",
                        "must be at most 100 years".to_string(),
                    ));
                }
                Some(Retention {
                    full,
                    redolog,
                    keep_min_age,
                })
            }
        };
        let status = {
            let s = raw.status.clone().unwrap_or_default();
            let d = StatusThresholds::default();
            let pick = |key: &str, v: &Option<String>, def: Duration| match v {
                Some(v) => duration(key, v),
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
                return Err(err(
                    "status.recovery_point_critical",
                    "must not be shorter than status.recovery_point_warning".into(),
                ));
            }
            if t.full_set_critical < t.full_set_warning {
                return Err(err(
                    "status.full_set_critical",
                    "must not be shorter than status.full_set_warning".into(),
                ));
            }
            if let Some(p) = &t.prometheus {
                check_abs_path(p).map_err(|m| err("status.prometheus", m))?;
            }
            t
        };

        Ok(Config {
            path: path.to_owned(),
            site: raw.site,
            state_dir: raw.state_dir,
            volumes,
            redolog_role,
            safety_margin,
            standby: raw.standby,
            replay,
            schedule,
            retention,
            status,
        })
    }

    pub fn volume(&self, role: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.role == role)
    }

    pub fn redolog(&self) -> &Volume {
        self.volume(&self.redolog_role).expect("validated")
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

fn validate_standby(s: &Standby) -> std::result::Result<(), (&'static str, String)> {
    match s.transport {
        TransportKind::Local => {
            let c = s.config.as_ref().ok_or((
                "config",
                "the local transport needs the standby's config file".to_string(),
            ))?;
            check_abs_path(c).map_err(|m| ("config", m))?;
        }
        TransportKind::Ssh => {
            let h = s
                .host
                .as_deref()
                .ok_or(("host", "the ssh transport needs a host".to_string()))?;
            let ok = |x: &str| {
                !x.is_empty()
                    && !x.starts_with('-')
                    && x.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            };
            if !ok(h) {
                return Err(("host", format!("`{h}` is not a host name or address")));
            }
            if let Some(u) = &s.user {
                if !ok(u) {
                    return Err(("user", format!("`{u}` is not a user name")));
                }
            }
            for o in &s.ssh_options {
                if !o.contains('=') || o.starts_with('-') {
                    return Err(("ssh_options", format!("`{o}` should look like `Key=Value`")));
                }
            }
        }
        TransportKind::Command => {
            if s.command.is_empty() {
                return Err(("command", "the command transport needs an argv".into()));
            }
        }
    }
    Ok(())
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
}
