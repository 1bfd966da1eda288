//! Validation of the raw TOML into a [`Config`](super::Config), section by
//! section; every error names the file and the key.

use super::*;

/// Where errors point: the file. Every error also names its key.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn err(&self, key: &str, msg: impl std::fmt::Display) -> Error {
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
pub(super) fn validate_site(cx: &Ctx, site: &str, state_dir: &Path) -> Result<()> {
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
pub(super) fn validate_volume(
    cx: &Ctx,
    i: usize,
    v: &RawVolume,
    earlier: &[RawVolume],
) -> Result<Volume> {
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
pub(super) struct SetParts {
    pub(super) volumes: Vec<Volume>,
    pub(super) redolog_role: String,
    pub(super) safety_margin: Duration,
}

/// `[set]`: `order`, `redolog`, `safety_margin`.
pub(super) fn validate_set(cx: &Ctx, set: &SetSection, raw: Vec<Volume>) -> Result<SetParts> {
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
pub(super) fn validate_layout(
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

/// `[standby]` or `[[standby]]` entry `key` (`standby`, `standby[1]`):
/// how to reach that standby.
pub(super) fn validate_standby(
    cx: &Ctx,
    key: &str,
    name: String,
    s: RawStandby,
) -> Result<Standby> {
    let err = |k: &str, m: String| cx.err(&format!("{key}.{k}"), m);
    super::validate_standby_name(&name).map_err(|m| err("name", m))?;
    let every = s
        .every
        .as_deref()
        .map(|v| {
            cx.duration(
                &format!("{key}.every"),
                v,
                (SECOND, 30 * DAY),
                INTERVAL_EXAMPLES,
            )
        })
        .transpose()?;
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
                    &format!("{key}.connect_timeout"),
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
    let stall_timeout = match &s.stall_timeout {
        None => super::DEFAULT_STALL_TIMEOUT,
        Some(v) => cx.duration(
            &format!("{key}.stall_timeout"),
            v,
            (Duration::from_secs(1), DAY),
            "\"10m\", \"1h\"",
        )?,
    };
    let window = s
        .window
        .as_deref()
        .map(crate::base::shipwindow::ShipWindow::parse)
        .transpose()
        .map_err(|m| err("window", m))?;
    Ok(Standby {
        name,
        every,
        transport,
        compression,
        bwlimit,
        stall_timeout,
        window,
    })
}

/// `[replay]`: the command failover runs, its time format and zone.
pub(super) fn validate_replay(cx: &Ctx, r: &ReplaySection, raw: &[RawVolume]) -> Result<Replay> {
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
        None => ReplayZone::System,
        Some(z) => ReplayZone::Named(
            jiff::tz::TimeZone::get(z)
                .map_err(|e| cx.err("replay.timezone", format!("`{z}`: {e}")))?,
        ),
    };
    Ok(Replay {
        command,
        time_format,
        timezone,
    })
}

const INTERVAL_EXAMPLES: &str = "\"1h\", \"15m\", \"30s\"";

/// `[schedule]`: what `snapsite run` does (on the primary).
pub(super) fn validate_schedule(
    cx: &Ctx,
    s: &ScheduleSection,
    has_standby: bool,
) -> Result<Schedule> {
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
pub(super) fn validate_retention(cx: &Ctx, r: &RetentionSection) -> Result<Retention> {
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
pub(super) fn validate_status(cx: &Ctx, s: Option<&StatusSection>) -> Result<StatusThresholds> {
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
