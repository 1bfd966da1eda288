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

/// `[replay] timezone`: a named zone is looked up at load (a wrong one
/// fails there, naming the key) and formats `{from_time}` in that zone;
/// without it the host's zone is used, found only when a time is
/// formatted.
#[test]
fn replay_timezone_named_checked_at_load_system_when_used() {
    use crate::base::config::ReplayZone;
    let with = |z: &str| GOOD.replace("[replay]\n", &format!("[replay]\ntimezone = \"{z}\"\n"));
    let c = parse(&with("Europe/Vienna")).unwrap();
    let r = c.replay.as_ref().unwrap();
    assert!(matches!(r.timezone, ReplayZone::Named(_)));
    let t: jiff::Timestamp = "2026-07-01T10:00:00Z".parse().unwrap();
    // Vienna is UTC+2 in July
    assert_eq!(
        r.time_format.format(t, &r.timezone.get()),
        "2026/07/01 12:00:00.000"
    );
    expect_err_all(
        &with("Mars/Olympus_Mons"),
        "replay.timezone",
        &["`Mars/Olympus_Mons`"],
    );
    let c = parse(GOOD).unwrap();
    let r = c.replay.as_ref().unwrap();
    assert!(matches!(r.timezone, ReplayZone::System));
    assert_eq!(
        r.timezone.get().to_offset(t),
        jiff::tz::TimeZone::system().to_offset(t)
    );
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
    parse(&layout("mysql", "mountpoint", "").replace("{mount:index}", "{mount:mysql}")).unwrap();
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
