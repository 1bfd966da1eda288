//! `snapsite check`: validate the config, probe tools, volumes and the standby.

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::primary::coordinator;
use snapsite::{backend, wire::transport};

pub(super) fn check(cfg: &Config) -> anyhow::Result<()> {
    let catalog = Catalog::new(&cfg.state_dir);
    let (role, generation) = snapsite::base::site::current_role(cfg, &catalog)?;
    let recorded = catalog.role_record()?.is_some();
    let primary = role == snapsite::base::site::Role::Primary;
    println!("config    {} (valid)", cfg.path.display());
    println!(
        "site      {} ({}, generation {generation}: {})",
        cfg.site,
        role.as_str(),
        match (recorded, primary) {
            (true, _) => "recorded by failover, failback, switchover or `role --init`",
            (false, true) => "has a [standby] to ship to",
            (false, false) => "no [standby] section",
        }
    );
    println!("state     {}", cfg.state_dir.display());
    let mut problems = 0;
    for store in backend::Stores::open(cfg).iter() {
        let v = store.volume();
        match store.probe(primary) {
            Ok(notes) => {
                println!(
                    "volume    {:<10} {} {}  ok",
                    v.role,
                    v.backend().as_str(),
                    v.source
                );
                for n in notes {
                    println!("          note: {n}");
                }
            }
            Err(e) => {
                problems += 1;
                println!(
                    "volume    {:<10} {} {}  PROBLEM: {e}",
                    v.role,
                    v.backend().as_str(),
                    v.source
                );
            }
        }
    }
    if !primary {
        // Failover skips a mountpoint that is already mounted, so whatever is
        // there now would be what the replay runs on.
        let failed_over = Catalog::new(&cfg.state_dir).has_failover_state();
        for (role, mp, what) in cfg.occupied_mountpoints() {
            problems += 1;
            println!(
                "mount     {role:<10} {}  PROBLEM: {what} is already mounted there: failover would leave it in place of its copy and replay on stale data; unmount it{}",
                mp.display(),
                if failed_over {
                    " (a failover has run on this site: if it mounted this, the site is live, not a standby)"
                } else {
                    ""
                }
            );
        }
    }
    problems += snapsite::ops::checkup::print(&snapsite::ops::checkup::order(cfg));
    let margin = humantime::format_duration(cfg.safety_margin);
    if primary {
        println!(
            "margin    {margin} (set.safety_margin: recorded in each set taken here; {{from_time}} = the set's earliest snapshot time minus the margin)"
        );
    } else {
        println!(
            "margin    {margin} (set.safety_margin); failover applies the larger of it and the margin each set was taken with: {{from_time}} = the set's earliest snapshot time minus that"
        );
    }
    match &cfg.replay {
        Some(r) => {
            let demo = r
                .time_format
                .format(jiff::Timestamp::now(), &r.timezone.get());
            println!("replay    {} with {{from_time}} like `{demo}`", r.command);
            match cfg.replay_program() {
                Ok(Some(p)) => println!("          program {} ok", p.display()),
                Ok(None) => println!(
                    "          note: the program is a placeholder; it can only be checked at failover"
                ),
                Err(e) => {
                    problems += 1;
                    println!(
                        "          PROBLEM: {e}: failover would make and mount the copies, then fail the replay (exit 3)"
                    );
                }
            }
        }
        None => {
            let f = snapsite::ops::checkup::replay(cfg, primary);
            problems += snapsite::ops::checkup::print(f.as_slice());
        }
    }
    let mut f = vec![snapsite::ops::checkup::schedule(cfg, primary)];
    f.extend(snapsite::ops::checkup::no_retention(cfg));
    snapsite::ops::checkup::print(&f);
    if let Some(r) = &cfg.retention {
        print_retention_bound(cfg.schedule.as_ref(), r);
    }
    let now = jiff::Zoned::now().datetime();
    snapsite::ops::checkup::print(&snapsite::ops::checkup::wire(cfg, &now));
    if let Some(s) = cfg.standby.as_ref().filter(|_| !primary) {
        // A recorded standby whose config names its peer (after a failback
        // or switchover): the peer is the primary, nothing is shipped there.
        println!(
            "peer      {} (this site is the standby: the peer ships here; `ship` is refused)",
            transport::command(s)?.display()
        );
    } else {
        // Each standby's handshake, named when there are several.
        let many = cfg.standbys.len() > 1;
        for s in &cfg.standbys {
            let cmd = transport::command(s)?;
            let name = if many {
                format!("`{}`: ", s.name)
            } else {
                String::new()
            };
            print!("standby   {name}{} ... ", cmd.display());
            match probe_standby(cfg, s) {
                Ok(msg) => println!("ok: {msg}"),
                Err(e) => {
                    problems += 1;
                    println!("PROBLEM: {e:#}");
                }
            }
        }
    }
    problems +=
        snapsite::ops::checkup::print(&snapsite::ops::archive_check::s3::check_archives(cfg));
    if problems > 0 {
        anyhow::bail!("{problems} problem(s) found");
    }
    Ok(())
}

/// `check`: the retention and the most snapshots it lets one volume hold.
fn print_retention_bound(
    schedule: Option<&snapsite::base::config::Schedule>,
    r: &snapsite::base::config::Retention,
) {
    println!(
        "retention grid `{}`, redolog_grid `{}`, keep_min_age {} (standby)",
        r.full,
        r.redolog,
        humantime::format_duration(r.keep_min_age)
    );
    for note in r.full.nesting_notes() {
        println!("          note: grid: {note}");
    }
    for note in r.redolog.nesting_notes() {
        println!("          note: redolog_grid: {note}");
    }
    match schedule {
        Some(s) => {
            let b = snapsite::ops::prune::max_snapshots_per_volume(s, r);
            println!(
                "          this schedule and retention keep at most {} snapshots per volume on each site (primary {}, standby {} if its [retention] is the same)",
                b.primary.max(b.standby),
                b.primary,
                b.standby
            );
        }
        None => println!(
            "          how many snapshots per volume this keeps depends on the primary's [schedule]: `snapsite check` there prints it"
        ),
    }
}

/// Handshake with the standby, compare its volumes with ours both ways
/// (roles and backends), and say what `ship` would send.
fn probe_standby(
    cfg: &Config,
    standby: &snapsite::base::config::Standby,
) -> anyhow::Result<String> {
    let plan = coordinator::ship_plan_to(cfg, &Catalog::new(&cfg.state_dir), standby)?;
    let site = &plan.standby.site;
    let theirs: Vec<(&str, &str)> = plan
        .standby
        .volumes
        .iter()
        .map(|v| (v.role.as_str(), v.backend.as_str()))
        .collect();
    let mismatches = cfg.volume_mismatches(site, &theirs);
    if !mismatches.is_empty() {
        anyhow::bail!("{}", mismatches.join("; "));
    }
    let sends: usize = plan.sets.iter().map(|(_, s)| s.len()).sum();
    Ok(format!(
        "standby `{site}` holds {} committed set(s); `ship` would send {sends} snapshot(s) of {} set(s){}",
        plan.standby.committed.len(),
        plan.sets.len(),
        if *site == cfg.site {
            "\n          note: the standby has this site's name: is [standby] pointing back at this site?"
        } else {
            ""
        }
    ))
}
