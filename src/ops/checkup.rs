//! What `snapsite check` says about the config beyond probing storage and
//! the standby (issue 28): the settings in effect (schedule, retention,
//! compression, the bandwidth limit now) and the mistakes a first setup
//! makes that only hurt at failover — a standby with no replay, a redolog
//! volume snapshotted before the others.

use crate::base::config::Config;

/// One finding: a `check` line, and whether it counts as a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The line (the label in its first 10 columns), without a newline.
    pub text: String,
    pub problem: bool,
}

impl Finding {
    fn info(label: &str, text: impl Into<String>) -> Finding {
        Finding {
            text: format!("{label:<9} {}", text.into()),
            problem: false,
        }
    }
    fn problem(label: &str, text: impl Into<String>) -> Finding {
        Finding {
            text: format!("{label:<9} PROBLEM: {}", text.into()),
            problem: true,
        }
    }
}

/// A site without `[replay]` (a standby, or a primary: either may become
/// the other): failover and rehearsal would bring up the set alone and
/// replay nothing — for Zimbra, everything after the set is lost, silently.
/// `[replay] none = true` says it is meant.
/// `None` when a replay is configured (`check` shows it itself).
pub fn replay(cfg: &Config, primary: bool) -> Option<Finding> {
    if cfg.replay.is_some() {
        return None;
    }
    if cfg.replay_none {
        return Some(Finding::info(
            "replay",
            "none (`[replay] none = true`: this application needs no replay; failover and rehearsal bring up the set alone)",
        ));
    }
    const FIX: &str = "add [replay] with the command failover runs (e.g. command = [\"/opt/zimbra/bin/zmplayredo\", \"--fromTime\", \"{from_time}\"]), or `[replay] none = true` if this application needs none";
    // A primary counts too: after a failover, failback or switchover this
    // same config is a standby's, and the missing replay would only show
    // then, at the worst moment.
    Some(Finding::problem(
        "replay",
        if primary {
            format!(
                "no [replay]: after a failover, failback or switchover this site is a standby whose failover would replay nothing after the set; {FIX}"
            )
        } else {
            format!(
                "no [replay]: failover would bring up the set alone and replay nothing written after it (the redolog is shipped for nothing); {FIX}"
            )
        },
    ))
}

/// The snapshot order; the redolog volume must come last, so that whatever
/// the other snapshots caught is also in the redolog (plugins/README.md).
pub fn order(cfg: &Config) -> Vec<Finding> {
    let roles: Vec<&str> = cfg.volumes.iter().map(|v| v.role.as_str()).collect();
    let mut out = vec![Finding::info(
        "order",
        format!(
            "{} (redolog volume: {})",
            roles.join(" -> "),
            cfg.redolog_role
        ),
    )];
    if roles.last() != Some(&cfg.redolog_role.as_str()) {
        out.push(Finding::problem(
            "",
            format!(
                "the redolog volume `{}` is not snapshotted last: what the later snapshots caught after it would be in no redolog, and the replay could not redo it; put `{}` last in [set] order ({})",
                cfg.redolog_role,
                cfg.redolog_role,
                cfg.path.display()
            ),
        ));
    }
    out
}

/// `[schedule]` as `run` applies it.
pub fn schedule(cfg: &Config, primary: bool) -> Finding {
    let d = |x: std::time::Duration| humantime::format_duration(x).to_string();
    match &cfg.schedule {
        Some(s) => Finding::info(
            "schedule",
            format!(
                "`run`: a full set every {}, {}; after a failed ship it retries after {} doubling up to {}",
                d(s.full_set_interval),
                match s.redolog_interval {
                    Some(r) => format!("a redolog snapshot every {}", d(r)),
                    None => "no separate redolog snapshots".into(),
                },
                d(s.retry_min),
                d(s.retry_max)
            ),
        ),
        None if primary => Finding::info(
            "schedule",
            "none ([schedule] is not configured: `snapsite run` refuses to start; take and ship sets by hand or from cron)",
        ),
        None => Finding::info(
            "schedule",
            "none (the primary's [schedule] decides when sets arrive)",
        ),
    }
}

/// No `[retention]`: nothing is ever pruned (`check` prints the grids and
/// their bound itself when there is one).
pub fn no_retention(cfg: &Config) -> Option<Finding> {
    cfg.retention.is_none().then(|| {
        Finding::info(
            "retention",
            "none ([retention] is not configured: nothing is pruned, snapshots accumulate until the storage is full)",
        )
    })
}

/// Compression and the bandwidth limit `ship` would use now, per standby
/// (named, with its `every`, when there are several).
pub fn wire(cfg: &Config, now: &jiff::civil::DateTime) -> Vec<Finding> {
    let many = cfg.standbys.len() > 1;
    cfg.standbys
        .iter()
        .flat_map(|s| wire_of(s, many, now))
        .collect()
}

fn wire_of(
    s: &crate::base::config::Standby,
    many: bool,
    now: &jiff::civil::DateTime,
) -> Vec<Finding> {
    let rate = |r: Option<u64>| match r {
        None => "unlimited".to_string(),
        Some(b) => format!("{}/s", human_bytes(b)),
    };
    let who = if many {
        format!("`{}`: ", s.name)
    } else {
        String::new()
    };
    let windows = s.bwlimit.window_count();
    let mut out = vec![
        Finding::info(
            "compress",
            match s.compression.name().as_str() {
                "none" => format!("{who}none (standby.compress): snapshots travel as they are"),
                c => format!("{who}{c} (standby.compress; used when the standby decodes it)"),
            },
        ),
        Finding::info(
            "bwlimit",
            if windows == 0 {
                format!("{who}{} (standby.bwlimit)", rate(s.bwlimit.rate_at(now)))
            } else {
                format!(
                    "{who}{} now, at {} local time (standby.bwlimit {}, {windows} window(s) in standby.bwlimit_schedule)",
                    rate(s.bwlimit.rate_at(now)),
                    now.strftime("%a %H:%M"),
                    rate(s.bwlimit.default_rate())
                )
            },
        ),
    ];
    if many {
        out.push(Finding::info(
            "every",
            match s.every {
                Some(e) => format!(
                    "{who}`run` ships to it at most every {} (standby.every)",
                    humantime::format_duration(e)
                ),
                None => format!("{who}`run` ships to it after every set"),
            },
        ));
    }
    out
}

/// `1.5 GiB`: sizes in check's and the CLI's output.
pub fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Print findings; returns how many are problems.
pub fn print(findings: &[Finding]) -> usize {
    for f in findings {
        println!("{}", f.text);
    }
    findings.iter().filter(|f| f.problem).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(extra: &str, order: &[&str]) -> Config {
        let mut t = String::from("site = \"s\"\nstate_dir = \"/var/lib/snapsite-checkup-test\"\n");
        for r in ["mysql", "blob", "redolog"] {
            t.push_str(&format!(
                "[[volume]]\nrole = \"{r}\"\nbackend = \"btrfs\"\nsource = \"/srv/live/{r}\"\nsnapshot_dir = \"/srv/snap/{r}\"\n"
            ));
        }
        if !order.is_empty() {
            t.push_str(&format!("[set]\norder = {order:?}\n"));
        }
        t.push_str(extra);
        Config::parse(&t, Path::new("/etc/snapsite/t.toml")).unwrap()
    }

    #[test]
    fn a_site_without_replay_is_a_problem_unless_said_on_purpose() {
        let f = replay(&cfg("", &[]), false).unwrap();
        assert!(f.problem && f.text.contains("replay nothing"), "{f:?}");
        let f = replay(&cfg("", &[]), true).unwrap();
        assert!(f.problem && f.text.contains("after a failover"), "{f:?}");
        let f = replay(&cfg("[replay]\nnone = true\n", &[]), true).unwrap();
        assert!(!f.problem, "{f:?}");
        let f = replay(&cfg("[replay]\nnone = true\n", &[]), false).unwrap();
        assert!(!f.problem && f.text.contains("needs no replay"), "{f:?}");
        assert!(replay(&cfg("[replay]\ncommand = [\"/bin/true\"]\n", &[]), false).is_none());
    }

    #[test]
    fn replay_none_and_a_command_together_or_neither_are_refused() {
        let base = "site = \"s\"\nstate_dir = \"/var/lib/x\"\n[[volume]]\nrole = \"redolog\"\nbackend = \"btrfs\"\nsource = \"/srv/r\"\nsnapshot_dir = \"/srv/s\"\n";
        let e = Config::parse(
            &format!("{base}[replay]\nnone = true\ncommand = [\"/bin/true\"]\n"),
            Path::new("/c.toml"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("replay.none"), "{e}");
        let e = Config::parse(&format!("{base}[replay]\n"), Path::new("/c.toml")).unwrap_err();
        assert!(
            e.to_string().contains("replay.command") && e.to_string().contains("none = true"),
            "{e}"
        );
    }

    #[test]
    fn redolog_not_last_in_order_is_a_problem() {
        let ok = order(&cfg("", &["mysql", "blob", "redolog"]));
        assert_eq!(ok.iter().filter(|f| f.problem).count(), 0, "{ok:?}");
        let bad = order(&cfg("", &["redolog", "mysql", "blob"]));
        assert_eq!(bad.iter().filter(|f| f.problem).count(), 1, "{bad:?}");
        assert!(bad[1].text.contains("put `redolog` last"), "{bad:?}");
    }

    #[test]
    fn schedule_compression_and_the_bandwidth_limit_now_are_shown() {
        let c = cfg(
            "[standby]\ntransport = \"ssh\"\nhost = \"b\"\ncompress = \"zstd:3\"\nbwlimit = \"20MiB/s\"\nbwlimit_schedule = [\"Mon-Fri 08:00-18:00 5MiB/s\"]\n[schedule]\nfull_set_interval = \"1h\"\nredolog_interval = \"15m\"\n",
            &[],
        );
        let s = schedule(&c, true);
        assert!(
            s.text.contains("every 1h") && s.text.contains("redolog snapshot every 15m"),
            "{s:?}"
        );
        // 2026-12-07 is a Monday.
        let office: jiff::civil::DateTime = "2026-12-07T10:00".parse().unwrap();
        let night: jiff::civil::DateTime = "2026-12-07T22:00".parse().unwrap();
        let w = wire(&c, &office);
        assert!(w[0].text.contains("zstd:3"), "{w:?}");
        assert!(
            w[1].text.contains("5.0 MiB/s now") && w[1].text.contains("20.0 MiB/s"),
            "{w:?}"
        );
        assert!(wire(&c, &night)[1].text.contains("20.0 MiB/s now"));
        let plain = cfg("[standby]\ntransport = \"ssh\"\nhost = \"b\"\n", &[]);
        let w = wire(&plain, &night);
        assert!(w[1].text.contains("unlimited"), "{w:?}");
        assert!(w[0].text.contains("none"), "{w:?}");
        assert!(no_retention(&plain).is_some());
    }
}
