//! The configuration reference: every key the parser (`base::config` and the
//! sections it borrows) accepts, with its section, type, default, range and
//! meaning, in ONE table. `snapsite generate --config-reference FILE` renders
//! it as docs/configuration-reference.md and `--man DIR` as the
//! `snapsite.toml(5)` man page. tests/config_reference.rs feeds every key to
//! the real parser, compares the parser's key lists (its unknown-key errors)
//! and its defaults with this table, and fails when the committed document
//! is stale.

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Required: the section (or the file) is invalid without it (where the
    /// key `applies`).
    Required,
    /// Absent means off / not used.
    Unset,
    /// A TOML value that the parser treats exactly as the key's absence
    /// (the test checks it).
    Toml(&'static str),
    /// A default that depends on something else, in words.
    Text(&'static str),
}

/// One key of the configuration file.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// `""` (top level), `volume` (each `[[volume]]`), `volume.zfs`, `set`,
    /// `standby`, `replay`, `schedule`, `retention`, `status`, `hooks.set`
    /// (also `[hooks.volume.ROLE]`), `notify`, `stream`, `detect`,
    /// `detect.volume` (each `[detect.volume.ROLE]`), `archive` (each `[[archive]]`).
    pub section: &'static str,
    pub name: &'static str,
    /// string, path, bool, integer, float, duration, size, rate, argv, list, table.
    pub ty: &'static str,
    pub default: DefaultValue,
    /// Allowed values, in words (`""`: any value of the type).
    pub range: &'static str,
    /// Where it applies (`btrfs`, `zfs`, `lvm`, `ssh`, `primary`, ...; `""`:
    /// everywhere).
    pub applies: &'static str,
    pub meaning: &'static str,
    /// A valid TOML value for the test to feed the parser.
    pub sample: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn k(
    section: &'static str,
    name: &'static str,
    ty: &'static str,
    default: DefaultValue,
    range: &'static str,
    applies: &'static str,
    meaning: &'static str,
    sample: &'static str,
) -> Key {
    Key {
        section,
        name,
        ty,
        default,
        range,
        applies,
        meaning,
        sample,
    }
}

use DefaultValue::{Required, Text, Toml, Unset};

/// Sections in the order the reference shows them, with a line about each.
#[rustfmt::skip]
pub const SECTIONS: &[(&str, &str)] = &[
    ("", "Which site this file describes and where its state lives."),
    ("volume", "`[[volume]]`, one per volume of the application, in snapshot order unless `[set] order` says otherwise."),
    ("volume.zfs", "`zfs = { ... }` inside a ZFS `[[volume]]`: `zfs send` options, recorded in each manifest."),
    ("set", "`[set]`: how the volumes form one snapshot set."),
    ("standby", "`[standby]`: how this site reaches the other one when it is the primary. Both sites carry it (naming each other), so either can be primary after a failover. Several standbys: `[[standby]]` entries, each with its own `name` and these keys; `ship` and `run` send to each at once."),
    ("replay", "`[replay]`: what failover runs to bring the application's copy up to the recovery point. Both sites carry it; `none = true` says the application needs none."),
    ("schedule", "`[schedule]`: what `snapsite run` does and how often (primary; needs `[standby]`)."),
    ("retention", "`[retention]`: zrepl-style grids applied by `snapsite prune` and `run`."),
    ("status", "`[status]`: thresholds of `snapsite status` and the metrics file."),
    ("hooks.set", "`[hooks.set]` (around the whole set) and `[hooks.volume.ROLE]` (around one volume's snapshot): quiesce hooks on the primary."),
    ("notify", "`[notify]`: push notifications of failures and recoveries."),
    ("stream", "`[stream]`: redolog streaming between the sets (a recovery point of seconds)."),
    ("detect", "`[detect]`: ransomware signals measured on receive and the thresholds of a set's verdict (standby; see docs/ransomware.md)."),
    ("detect.volume", "`[detect.volume.ROLE]`: one volume's own thresholds, ROLE a `[[volume]]` role; a key left out is `[detect]`'s."),
    ("archive", "`[[archive]]`, one per S3 archive: every set written as checksummed part objects and an index, encrypted with age, never overwritten or deleted by snapsite (see docs/archive.md)."),
];

/// Every key the parser accepts.
#[rustfmt::skip]
pub const KEYS: &[Key] = &[
    // ---- top level
    k("", "site", "string", Required, "non-empty; a-z, A-Z, 0-9, `-`, `_`, `.`", "",
      "this site's name (the other site's config names it in its manifests and checks)", "\"mail-a\""),
    k("", "state_dir", "path", Required, "absolute, outside every volume", "",
      "manifests, receipts, the verb journal, failover state and reports", "\"/var/lib/snapsite\""),
    // ---- [[volume]]
    k("volume", "role", "string", Required, "1-32 of a-z, 0-9, `_`, `-`, starting with a letter; unique", "",
      "the volume's name in sets: `mysql`, `blob`, `index`, `redolog` or any name", "\"redolog\""),
    k("volume", "backend", "string", Required, "`btrfs`, `zfs`, `lvm`", "",
      "the storage that holds the volume", "\"btrfs\""),
    k("volume", "source", "string", Required, "btrfs: absolute path; zfs: a dataset; lvm: `vg/lv`", "",
      "the live data on this site; on the standby, where failover puts the writable copy", "\"/srv/extra\""),
    k("volume", "replica", "string", Unset, "a dataset / `vg/lv`, not `source`", "zfs, lvm",
      "standby: where received snapshots land; failover then makes its writable copy at `source`", "\"tank/snapsite/extra\""),
    k("volume", "zfs", "table", Toml("{}"), "the keys of `volume.zfs` below", "zfs",
      "`zfs send` options", "{ raw = true }"),
    k("volume", "snapshot_dir", "path", Required, "absolute, on the same filesystem as `source`", "btrfs",
      "this site's snapshots of the volume: taken ones on the primary, received ones on the standby", "\"/srv/.snapsite/extra\""),
    k("volume", "mountpoint", "path", Unset, "absolute", "",
      "where the application expects the volume; failover bind-mounts the copy there when it differs from `source`", "\"/opt/app/extra\""),
    k("volume", "max_size", "size", Text("the size of the replica's volume group"), "`\"2TiB\"`, `\"500GiB\"`, bytes", "lvm",
      "standby: the largest replica a stream may declare", "\"2TiB\""),
    k("volume", "allow_privileged_files", "bool", Toml("false"), "", "",
      "let set-uid/set-gid files, device nodes and file capabilities from the other site work here (otherwise refused at receive on btrfs; failover copies are mounted nosuid,nodev)", "true"),
    // ---- volume.zfs
    k("volume.zfs", "raw", "bool", Toml("false"), "", "zfs",
      "`zfs send -w`: send encrypted datasets as they are on disk", "true"),
    k("volume.zfs", "compressed", "bool", Toml("false"), "", "zfs",
      "`zfs send -c`: keep blocks compressed on the wire", "true"),
    k("volume.zfs", "large_blocks", "bool", Toml("false"), "", "zfs",
      "`zfs send -L`: allow blocks larger than 128 KiB", "true"),
    k("volume.zfs", "intermediates", "bool", Toml("false"), "`false` only", "zfs",
      "`zfs send -I`: refused (a standby refuses compound streams; every snapshot is shipped in order anyway)", "false"),
    // ---- [set]
    k("set", "order", "list", Text("the volumes in file order"), "every role exactly once", "",
      "the order in which a set snapshots the volumes; the redolog volume belongs last", "[\"redolog\"]"),
    k("set", "redolog", "string", Toml("\"redolog\""), "a configured role", "",
      "the role of the redo-log volume", "\"redolog\""),
    k("set", "safety_margin", "duration", Toml("\"0s\""), "0s to 1h", "",
      "subtracted from the earliest member's time to give the set's `from_time`", "\"2s\""),
    // ---- [standby]
    k("standby", "name", "string", Text("`standby` for a single `[standby]`; required in each `[[standby]]`"), "1 to 32 of a-z, 0-9, `-`; unique", "",
      "the standby's name: `ship --to NAME`, its own records under state_dir/standbys/NAME/, its holds, status and metrics", "\"near\""),
    k("standby", "every", "duration", Unset, "1s to 30d", "primary",
      "`run` ships to this standby at most once per slot of this length (default: after every set)", "\"1h\""),
    k("standby", "window", "string", Unset, "`HH:MM-HH:MM` (may wrap past midnight), optionally followed by an IANA time zone", "primary",
      "`run` starts ships to this standby only in these hours, in the standby's time zone (default: this host's); `status` counts its lag in window time only. `ship` ignores it", "\"22:00-06:00 Europe/Berlin\""),
    k("standby", "stall_timeout", "duration", Toml("\"10m\""), "1s to 1d", "",
      "a session that makes no progress (no byte read or written) for this long is abandoned: its process is killed, and it counts as a failed ship (`status`: failing since)", "\"5m\""),
    k("standby", "transport", "string", Required, "`local`, `ssh`, `command`", "",
      "how the pipe to the other site's `snapsite serve --stdio` is made", "\"ssh\""),
    k("standby", "config", "path", Required, "absolute; not this file", "local",
      "the other site's config file", "\"/etc/snapsite/standby.toml\""),
    k("standby", "host", "string", Required, "a host name or address", "ssh",
      "the other site", "\"mail-b.example.net\""),
    k("standby", "user", "string", Text("ssh's (the current user)"), "a user name", "ssh",
      "the user ssh logs in as", "\"snapsite\""),
    k("standby", "port", "integer", Text("ssh's (22)"), "1-65535", "ssh",
      "the ssh port", "2222"),
    k("standby", "identity", "path", Text("ssh's"), "absolute", "ssh",
      "the private key (`ssh -i`)", "\"/etc/snapsite/id_ed25519\""),
    k("standby", "ssh_config", "path", Unset, "absolute", "ssh",
      "an ssh_config file (`ssh -F`)", "\"/etc/snapsite/ssh_config\""),
    k("standby", "ssh_options", "list", Toml("[]"), "`Key=Value` each", "ssh",
      "extra `ssh -o` options", "[\"Compression=no\"]"),
    k("standby", "remote_command", "argv", Text("`snapsite serve --stdio`"), "", "ssh",
      "the command run on the other site (its authorized_keys `command=` usually fixes it anyway)", "[\"/usr/bin/snapsite\", \"serve\", \"--stdio\"]"),
    k("standby", "connect_timeout", "duration", Toml("\"15s\""), "1s to 1h", "ssh",
      "ssh's `ConnectTimeout` (a `ConnectTimeout` in `ssh_options` wins)", "\"30s\""),
    k("standby", "command", "argv", Required, "absolute program or a name on PATH", "command",
      "any argv whose stdin/stdout speak the protocol, e.g. `ip netns exec`", "[\"ip\", \"netns\", \"exec\", \"b\", \"snapsite\", \"serve\", \"--stdio\"]"),
    k("standby", "compress", "string", Toml("\"none\""), "`none`, `zstd` (level 3), `zstd:LEVEL` (1 to 19, -7 to -1)", "",
      "compression on the wire, used when the other site decodes it", "\"zstd:3\""),
    k("standby", "bwlimit", "rate", Toml("\"none\""), "`\"20MiB/s\"`, `\"100Mbit/s\"`, `none`", "",
      "bandwidth limit of `ship` and `run`", "\"20MiB/s\""),
    k("standby", "bwlimit_schedule", "list", Toml("[]"), "`\"DAYS HH:MM-HH:MM RATE\"` each, local time", "",
      "other limits at other times, first match wins", "[\"Mon-Fri 08:00-18:00 5MiB/s\"]"),
    // ---- [replay]
    k("replay", "command", "argv", Required, "absolute program or a name on PATH; placeholders `{from_time}` `{from_time_utc}` `{set_id}` `{redolog_set_id}` `{redolog_time}` `{mount:ROLE}`", "",
      "what failover runs after the copies are up (not with `none = true`)", "[\"/usr/lib/snapsite/plugins/generic/replay\", \"{from_time_utc}\"]"),
    k("replay", "none", "bool", Toml("false"), "not with `command`", "",
      "`true`: this application needs no replay (without it, a site lacking `[replay]` is a `check` problem)", "true"),
    k("replay", "time_format", "string", Toml("\"zmplayredo\""), "`zmplayredo`, `rfc3339`, or a strftime pattern", "",
      "how `{from_time}` is written", "\"rfc3339\""),
    k("replay", "timezone", "string", Text("this host's zone (honours `TZ`)"), "an IANA zone", "",
      "the zone of `{from_time}`", "\"Europe/Berlin\""),
    // ---- [schedule]
    k("schedule", "full_set_interval", "duration", Required, "1s to 30d", "primary",
      "`run` takes a full set every slot of this length (slots aligned to multiples since the epoch, UTC)", "\"1h\""),
    k("schedule", "redolog_interval", "duration", Unset, "1s to 1d, shorter than `full_set_interval`", "primary",
      "`run` takes a redolog snapshot every slot of this length between full sets", "\"15m\""),
    k("schedule", "retry_min", "duration", Toml("\"10s\""), "1s to 1h", "primary",
      "first retry after a failed ship; doubles up to `retry_max`", "\"30s\""),
    k("schedule", "retry_max", "duration", Toml("\"15m\""), "1s to 1d, at least `retry_min`", "primary",
      "the longest wait between retries", "\"1h\""),
    // ---- [retention]
    k("retention", "grid", "string", Required, "`N x DURATION` buckets separated by `|`, e.g. `\"1x1h(keep=all) | 24x1h | 30x1d\"`", "",
      "which full sets to keep; each bucket, fixed in UTC time, keeps its oldest set", "\"24x1h | 30x1d\""),
    k("retention", "redolog_grid", "string", Text("`grid`"), "as `grid`", "",
      "the same for redolog sets", "\"24x1h\""),
    k("retention", "keep_min_age", "duration", Toml("\"7d\""), "0s (off) to 100 years", "standby",
      "full sets committed less than this long ago (by this site's clock) are never pruned, nor the redolog set before each", "\"1d\""),
    // ---- [status]
    k("status", "recovery_point_warning", "duration", Toml("\"30m\""), "1s to 365d", "",
      "age of the standby's newest redolog snapshot that makes `status` warn", "\"20m\""),
    k("status", "recovery_point_critical", "duration", Toml("\"1h\""), "1s to 365d, at least the warning", "",
      "the same, critical", "\"2h\""),
    k("status", "full_set_warning", "duration", Toml("\"2h\""), "1s to 365d", "",
      "age of the standby's newest complete full set that makes `status` warn", "\"3h\""),
    k("status", "full_set_critical", "duration", Toml("\"1d\""), "1s to 365d, at least the warning", "",
      "the same, critical", "\"2d\""),
    k("status", "prometheus", "path", Unset, "absolute", "",
      "metrics file written by `run` after each cycle and by `status` (`status --prometheus FILE` wins)", "\"/var/lib/prometheus/node-exporter/snapsite.prom\""),
    // ---- [hooks.set] / [hooks.volume.ROLE]
    k("hooks.set", "pre", "argv", Required, "absolute program or a name on PATH", "primary",
      "run before the snapshot (quiesce)", "[\"/usr/lib/snapsite/plugins/mysql/quiesce\"]"),
    k("hooks.set", "post", "argv", Toml("[]"), "absolute program or a name on PATH", "primary",
      "run after the snapshot (resume), always once `pre` started; its failure is only logged", "[\"/bin/true\"]"),
    k("hooks.set", "ready", "bool", Toml("false"), "", "primary",
      "`pre` holds: snapsite waits for the line `ready` on its stdout, takes the snapshot(s), then closes its stdin", "true"),
    k("hooks.set", "timeout", "duration", Toml("\"1m\""), "100ms to 1h", "primary",
      "every wait on the hook; an overrunning hook is killed with its process group", "\"30s\""),
    k("hooks.set", "on_failure", "string", Toml("\"abort\""), "`abort`, `crash-consistent`", "primary",
      "when `pre` fails: fail the set, or take the snapshot anyway and mark it crash-consistent", "\"crash-consistent\""),
    // ---- [notify]
    k("notify", "command", "argv", Required, "absolute program or a name on PATH; placeholders `{event}` `{severity}` `{site}` `{message}`", "",
      "run once per notification", "[\"/usr/lib/snapsite/plugins/notify/mail\", \"{event}\"]"),
    k("notify", "ship_failing_after", "duration", Toml("\"30m\""), "0s to 30d", "primary",
      "ship failures are reported once they last this long", "\"1h\""),
    k("notify", "timeout", "duration", Toml("\"30s\""), "1s to 10m", "",
      "how long the command may run", "\"1m\""),
    // ---- [[archive]]
    k("archive", "name", "string", Required, "1-32 of a-z, 0-9, `_`, `-`, starting with a letter; unique", "",
      "the archive's name (`archive --to`, `restore --from`, `verify --archive`)", "\"offsite\""),
    k("archive", "endpoint", "string", Required, "`https://host[:port]` or `http://...`, no path", "",
      "the S3 endpoint; requests are path-style and signed with SigV4", "\"https://s3.example.org\""),
    k("archive", "bucket", "string", Required, "3 to 63 of a-z, 0-9, `.`, `-`", "",
      "the bucket (versioning and Object Lock set up by the admin, docs/archive.md)", "\"mail-archive\""),
    k("archive", "prefix", "string", Text("the site's name"), "a-z, A-Z, 0-9, `-`, `_`, `.`, `/`; no `..`", "",
      "keys are `PREFIX/sets/SET/...`", "\"mail/a\""),
    k("archive", "region", "string", Toml("\"us-east-1\""), "a-z, 0-9, `-`", "",
      "the SigV4 signing region", "\"eu-west-1\""),
    k("archive", "credentials", "path", Required, "absolute; mode 0600 or stricter", "",
      "TOML file with `access_key` and `secret_key` (the primary's: put, get, list only)", "\"/etc/snapsite/archive.creds\""),
    k("archive", "recipients", "list", Unset, "age recipients: `age1...` or ssh-ed25519/ssh-rsa public keys", "primary",
      "parts are encrypted to these; the identity stays off the primary. Absent: stored unencrypted (warned)", "[\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]"),
    k("archive", "identity", "path", Unset, "absolute", "standby",
      "the age identity file `restore` decrypts with (`restore --identity` overrides)", "\"/etc/snapsite/archive.age\""),
    k("archive", "compression", "string", Toml("\"none\""), "`none` or `zstd:LEVEL`", "primary",
      "compression of the stream's data frames before encryption", "\"zstd:3\""),
    k("archive", "chunk_size", "size", Toml("\"64MiB\""), "1MiB to 5GiB", "primary",
      "stream bytes per part object (each is staged once on local disk under state_dir)", "\"256MiB\""),
    k("archive", "interval", "duration", Unset, "0s to 366d", "primary",
      "`run` archives at most once per interval; absent: after every committed set", "\"6h\""),
    k("archive", "bwlimit", "rate", Unset, "bytes per second, e.g. `50MiB/s`", "primary",
      "upload bandwidth limit", "\"50MiB/s\""),
    k("archive", "request_timeout", "duration", Toml("\"60s\""), "1s to 1h", "",
      "each S3 request's deadline: its connect, every write of its body and every read of its answer must progress within it, else it fails naming the archive, bucket, object and what timed out", "\"30s\""),
    k("archive", "retries", "integer", Toml("3"), "0 to 10", "",
      "how many more times a failed idempotent request (GET, HEAD, LIST, a part's PUT) is tried after a timeout, a lost connection or a 5xx, waiting 0.5 s, 1 s, 2 s ... (at most 30 s) in between", "5"),
    k("archive", "uploads", "integer", Toml("4"), "1 to 16", "primary",
      "part PUTs in flight at once while the next parts are produced; local disk holds at most `uploads + 1` staged parts", "2"),
    k("archive", "ca_file", "path", Unset, "absolute; PEM, at least one certificate", "",
      "an https endpoint's certificate must chain to one of these CAs (instead of the built-in Mozilla roots): a private CA. Read when the archive is opened; a missing, unreadable or certificate-less file is an error naming the key", "\"/etc/snapsite/archive-ca.pem\""),
    // ---- [stream]
    k("stream", "enabled", "bool", Toml("true"), "", "",
      "`false` turns streaming off but keeps the section", "false"),
    k("stream", "files", "list", Toml("[\"redo.log\", \"archive/redo-*.log\"]"), "1 to 32 globs relative to the redolog volume; `*`, `?` within one component", "",
      "the append-only files streamed", "[\"redo.log\"]"),
    k("stream", "to", "string", Text("the only standby"), "a configured standby's name; required with several", "primary",
      "the standby the redolog tail streams to (usually the failover target)", "\"standby\""),
    k("stream", "flush_interval", "duration", Toml("\"1s\""), "50ms to 1h", "primary",
      "one batch per interval", "\"500ms\""),
    k("stream", "spool_max", "size", Toml("\"256MiB\""), "at least 1MiB", "standby",
      "the spool's disk cap", "\"1GiB\""),
    k("stream", "root", "path", Text("the redolog volume's mountpoint, or its btrfs subvolume"), "absolute, no `..`", "",
      "where the redolog volume's files are on this site", "\"/opt/zimbra/redolog\""),
    // ---- [detect]
    k("detect", "enabled", "bool", Toml("true"), "", "standby",
      "measure signals on receive and judge every committed set; `false`: every set is clean", "false"),
    k("detect", "baseline_sets", "integer", Toml("8"), "3 to 100", "standby",
      "the rolling baseline: median bytes changed of this many earlier transfers of the volume (sets of the same kind, not suspect)", "12"),
    k("detect", "growth_factor", "float", Toml("5.0"), "1.5 to 1000", "standby",
      "growth reason: bytes changed at least this many times the baseline (and `min_changed_bytes`, and `incompressible_share` of it)", "8.0"),
    k("detect", "min_changed_bytes", "size", Toml("\"256MiB\""), "at least 4KiB", "standby",
      "growth reason: below this much changed a set is never suspect of growth", "\"1GiB\""),
    k("detect", "rewrite_min_bytes", "size", Toml("\"64MiB\""), "at least 4KiB", "standby",
      "rewrite reason (btrfs): data written into files that existed before, of which `incompressible_share` does not compress", "\"16MiB\""),
    k("detect", "incompressible_share", "float", Toml("0.8"), "0.1 to 1.0", "standby",
      "the share of sampled 4 KiB blocks (one in 64) zstd cannot shrink that counts as encrypted", "0.9"),
    k("detect", "rename_min", "integer", Toml("200"), "at least 1", "standby",
      "rename reason (btrfs): renames of existing files that change the extension (a Maildir `:2,S` suffix is not one)", "500"),
    k("detect", "volume", "table", Toml("{}"), "one `[detect.volume.ROLE]` table per volume with thresholds of its own", "standby",
      "per-volume thresholds: the keys of `detect.volume` below", "{ redolog = { rename_min = 500 } }"),
    // ---- [detect.volume.ROLE]
    k("detect.volume", "enabled", "bool", Text("`[detect]`'s"), "`true` needs `[detect] enabled = true` (`false` there turns every volume off)", "standby",
      "`false`: the volume is measured but never judged (a volume whose ordinary traffic is encrypted or compressed)", "false"),
    k("detect.volume", "baseline_sets", "integer", Text("`[detect]`'s"), "3 to 100", "standby",
      "the volume's rolling baseline", "12"),
    k("detect.volume", "growth_factor", "float", Text("`[detect]`'s"), "1.5 to 1000", "standby",
      "the volume's growth factor", "8.0"),
    k("detect.volume", "min_changed_bytes", "size", Text("`[detect]`'s"), "at least 4KiB", "standby",
      "the volume's growth floor", "\"1GiB\""),
    k("detect.volume", "rewrite_min_bytes", "size", Text("`[detect]`'s"), "at least 4KiB", "standby",
      "the volume's rewrite floor (a database volume rewrites in place all day: raise it there)", "\"1GiB\""),
    k("detect.volume", "incompressible_share", "float", Text("`[detect]`'s"), "0.1 to 1.0", "standby",
      "the volume's noise share", "0.95"),
    k("detect.volume", "rename_min", "integer", Text("`[detect]`'s"), "at least 1", "standby",
      "the volume's rename count", "500"),
];

/// `[set]`, `[[volume]]`, top level: how a section is written in a file.
pub fn section_heading(section: &str) -> String {
    match section {
        "" => "top level".into(),
        "volume" => "[[volume]]".into(),
        "volume.zfs" => "[[volume]] zfs = { ... }".into(),
        "hooks.set" => "[hooks.set], [hooks.volume.ROLE]".into(),
        "detect.volume" => "[detect.volume.ROLE]".into(),
        s => format!("[{s}]"),
    }
}

fn default_text(d: DefaultValue) -> String {
    match d {
        Required => "required".into(),
        Unset => "unset".into(),
        Toml(v) => format!("`{v}`"),
        Text(t) => t.into(),
    }
}

fn meaning_text(key: &Key) -> String {
    if key.applies.is_empty() {
        key.meaning.into()
    } else {
        format!("{}: {}", key.applies, key.meaning)
    }
}

/// docs/configuration-reference.md.
pub fn markdown() -> String {
    let mut s = String::new();
    s.push_str("<!-- Generated by `snapsite generate --config-reference FILE` from src/base/config_keys.rs; do not edit (tests/config_reference.rs checks it). -->\n");
    s.push_str("# Configuration reference\n\n");
    s.push_str("Every key of `snapsite.toml` (default `/etc/snapsite/snapsite.toml`, or\n`--config FILE` / `SNAPSITE_CONFIG`), its type, default and range. The\nsame text is the `snapsite.toml(5)` man page. Errors name the file and the\nkey (`volume[2].source: ...`); any other key is an error. See\n[Configuration](configuration.md) for the paired examples.\n\n");
    s.push_str("Types: a *duration* is `\"90s\"`, `\"15m\"`, `\"1h\"`, `\"7d\"`; a *size* `\"256MiB\"`;\na *rate* `\"20MiB/s\"` or `\"100Mbit/s\"`; an *argv* a list of strings, the\nprogram first (no shell).\n");
    for (section, about) in SECTIONS {
        s.push_str(&format!("\n## {}\n\n{about}\n\n", section_heading(section)));
        s.push_str("| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
        for key in KEYS.iter().filter(|k| k.section == *section) {
            s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                key.name,
                key.ty,
                md_cell(&default_text(key.default)),
                md_cell(key.range),
                md_cell(&meaning_text(key)),
            ));
        }
    }
    s.push_str("\n---\n[README](../README.md) · [all documentation](README.md)\n");
    s
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Roff text with its special characters escaped; backticks dropped.
fn roff(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('`', "").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// The `snapsite.toml(5)` man page.
pub fn man_page(version: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        ".TH SNAPSITE.TOML 5 \"\" \"snapsite {}\" \"File Formats\"\n",
        roff(version)
    ));
    s.push_str(".SH NAME\nsnapsite.toml \\- the snapsite configuration file\n");
    s.push_str(".SH SYNOPSIS\n/etc/snapsite/snapsite.toml\n");
    s.push_str(".SH DESCRIPTION\n");
    s.push_str("A TOML file describing one site: its volumes, how it reaches the other site, and what failover replays. \\fBsnapsite\\fR reads it from \\fB\\-\\-config\\fR FILE, \\fBSNAPSITE_CONFIG\\fR or /etc/snapsite/snapsite.toml. Every error names the file and the key; any key not listed here is an error. Annotated examples: /usr/share/doc/snapsite/examples/primary.toml and standby.toml.\n");
    s.push_str(".PP\nA duration is \"90s\", \"15m\", \"1h\", \"7d\"; a size \"256MiB\"; a rate \"20MiB/s\" or \"100Mbit/s\"; an argv a list of strings, the program first (no shell).\n");
    for (section, about) in SECTIONS {
        s.push_str(&format!(
            ".SH \"{}\"\n{}\n",
            roff(&section_heading(section).to_uppercase()),
            roff(about)
        ));
        for key in KEYS.iter().filter(|k| k.section == *section) {
            s.push_str(&format!(
                ".TP\n\\fB{}\\fR (\\fI{}\\fR; {}{})\n{}\n",
                roff(key.name),
                roff(key.ty),
                match key.default {
                    Required => "required".to_string(),
                    d => format!("default: {}", roff(&default_text(d))),
                },
                if key.range.is_empty() {
                    String::new()
                } else {
                    format!("; {}", roff(key.range))
                },
                roff(&meaning_text(key)),
            ));
        }
    }
    s.push_str(".SH FILES\n/etc/snapsite/snapsite.toml\n.SH SEE ALSO\n\\fBsnapsite\\fR(1), \\fBsnapsite\\-check\\fR(1), \\fBsnapsite\\-init\\fR(1)\n");
    s
}
