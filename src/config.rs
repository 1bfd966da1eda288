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
    /// btrfs: directory (on the same filesystem) holding this site's
    /// snapshots of the volume: taken ones on the primary, received ones on
    /// the standby.
    pub snapshot_dir: Option<PathBuf>,
    /// Where the application expects the volume. On failover the writable
    /// copy is bind-mounted here when it differs from `source`.
    pub mountpoint: Option<PathBuf>,
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
            validate_source(v).map_err(|m| err(&key("source"), m))?;
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

        Ok(Config {
            path: path.to_owned(),
            site: raw.site,
            state_dir: raw.state_dir,
            volumes,
            redolog_role,
            safety_margin,
            standby: raw.standby,
            replay,
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
fn validate_source(v: &Volume) -> std::result::Result<(), String> {
    let s = &v.source;
    match v.backend {
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
}
