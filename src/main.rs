//! The `snapsite` command line: parse, load the config, call the library, render.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use snapsite::base::catalog::Catalog;
use snapsite::base::config::{self, Config};
use snapsite::base::model::SetKind;
use snapsite::dr::failover;
use snapsite::dr::replay::format_zmplayredo;
use snapsite::primary::coordinator;
use snapsite::{backend, standby::serve, wire::transport};

#[derive(Parser)]
#[command(
    name = "snapsite",
    version,
    about = "Keep a standby site for a multi-volume application with storage snapshots",
    long_about = "snapsite takes ordered snapshot sets of an application's volumes (btrfs, ZFS, \
LVM thin), ships them to a standby site over a local pipe or ssh, and on failover brings the \
standby up from the newest complete set plus the newest redolog snapshot and runs the redo \
replay with --fromTime set to the set's first snapshot time.",
    after_help = "Typical use:\n  primary:  snapsite check && snapsite snapshot && snapsite ship\n            snapsite snapshot --redolog && snapsite ship     (every 15 min)\n            or unattended: snapsite run   ([schedule], [retention] in the config)\n  standby:  snapsite sets; snapsite failover --dry-run; snapsite failover\n\nConfig: /etc/snapsite/snapsite.toml (annotated example: examples/snapsite.toml).\nExit status: 0 ok, 1 error, 3 failover done but replay failed (run it again to retry)."
)]
struct Cli {
    /// Config file
    #[arg(long, short = 'c', global = true, env = "SNAPSITE_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// More log output (-v info, -vv debug: every external command)
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Primary,
    Standby,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config, probe tools, volumes and the standby; print what would be done
    Check,
    /// Take a full snapshot set of all volumes in order (or --redolog: the redolog volume alone)
    Snapshot {
        /// Snapshot only the redolog volume
        #[arg(long)]
        redolog: bool,
        /// Print the manifest as JSON
        #[arg(long)]
        json: bool,
    },
    /// Send every snapshot the standby lacks, oldest first, incremental where possible
    Ship {
        /// Print the transfer report as JSON
        #[arg(long)]
        json: bool,
        /// Show what would be sent, send nothing
        #[arg(long)]
        dry_run: bool,
        /// Seed a standby from a disk: write the newest complete full set as
        /// a framed, checksummed stream in chunk files under DIR/<set>.seed/
        /// (read on the standby with `serve --from`)
        #[arg(long, value_name = "DIR", conflicts_with = "dry_run")]
        to: Option<std::path::PathBuf>,
        /// Size of each chunk file of `--to`
        #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = snapsite::base::config::parse_size, requires = "to")]
        chunk_size: u64,
    },
    /// List the snapshot sets on this site
    Sets {
        #[arg(long)]
        json: bool,
    },
    /// The standby's receiving end (spawned by `ship` locally or through ssh)
    Serve {
        /// Speak the protocol on stdin/stdout
        #[arg(long, required_unless_present = "from")]
        stdio: bool,
        /// Receive a seed written by `ship --to` (its `<set>.seed` directory)
        #[arg(long, value_name = "DIR", conflicts_with = "stdio")]
        from: Option<std::path::PathBuf>,
        /// End the session (discarding a partial receive, releasing the lock)
        /// when the primary sends nothing for this long
        #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = humantime::parse_duration)]
        idle_timeout: std::time::Duration,
    },
    /// On the standby: bring the site up from the newest complete set and run the replay
    Failover {
        /// Use this full set instead of the newest complete one
        #[arg(long)]
        set: Option<String>,
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Make and mount the copies but do not run the replay command
        #[arg(long)]
        no_replay: bool,
        /// Ignore the redolog spool (streamed tail): use the redolog snapshot alone
        #[arg(long)]
        no_stream: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// On the primary: take sets and redolog snapshots on the [schedule], ship after each, prune
    Run {
        /// Do what is due now and exit (for a systemd timer instead of a service)
        #[arg(long)]
        once: bool,
    },
    /// Destroy the sets the [retention] grid does not keep (never the common snapshot
    /// or the newest complete set)
    Prune {
        /// Print what would be destroyed and why, destroy nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// On the standby: prove failover works, leaving production alone (scratch clones of the
    /// newest set, the replay with SNAPSITE_REHEARSAL=1, a report, everything removed).
    /// Exit 0 ok, 3 the replay failed, 1 error
    Rehearse {
        /// Use this full set instead of the newest complete one
        #[arg(long)]
        set: Option<String>,
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// On the returning old primary, after a failover: become the new primary's standby.
    /// Keeps this site's data written after the common base as read-only divergent
    /// snapshots; the new primary's next ship sends only what changed since the base
    Failback {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// On the primary, application stopped: final set, ship it, become the standby; then run
    /// `snapsite failover --set FINAL` on the peer. Zero loss by construction
    Switchover {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// This site's recorded role and generation; --init records it once
    Role {
        /// Record the role of a site that has none recorded yet
        #[arg(long, value_enum)]
        init: Option<RoleArg>,
        #[arg(long)]
        json: bool,
    },
    /// Write man pages and shell completions (for packaging)
    #[command(hide = true)]
    Generate {
        /// Directory for the man pages (snapsite.1, snapsite-SUBCOMMAND.1)
        #[arg(long, value_name = "DIR")]
        man: Option<PathBuf>,
        /// Directory for bash, zsh and fish completions
        #[arg(long, value_name = "DIR")]
        completions: Option<PathBuf>,
    },
    /// How far behind the standby is; exit 0 ok, 1 warning, 2 critical (3: unknown)
    Status {
        #[arg(long)]
        json: bool,
        /// Also write Prometheus text-format metrics to FILE (node_exporter textfile collector)
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
    },
}

fn init_logging(cli: &Cli) {
    let default = match cli.verbose {
        // an unattended `run` logs what it does
        0 if matches!(cli.command, Command::Run { .. }) => "snapsite=info",
        0 => "snapsite=warn",
        1 => "snapsite=info",
        _ => "snapsite=debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAPSITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Under systemd, stderr is the journal: each line carries its syslog
    // priority (`<3>` for errors) and no colours.
    if snapsite::ops::systemd::stderr_is_journal() {
        let b = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(snapsite::ops::systemd::JournalStderr);
        match cli.log_format {
            LogFormat::Json => b.json().init(),
            LogFormat::Text => b.with_target(false).init(),
        }
        return;
    }
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_target(false).init(),
    }
}

/// `snapsite generate`: man pages (one per subcommand) and completions.
fn generate(
    man: Option<&std::path::Path>,
    completions: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    cmd.build();
    if let Some(dir) = man {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let write = |name: &str, c: clap::Command| -> anyhow::Result<()> {
            let path = dir.join(format!("{name}.1"));
            let mut out = Vec::new();
            clap_mangen::Man::new(c).render(&mut out)?;
            std::fs::write(&path, out).with_context(|| format!("write {}", path.display()))
        };
        write("snapsite", cmd.clone())?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            let name = format!("snapsite-{}", sub.get_name());
            let display: &'static str = Box::leak(name.clone().into_boxed_str());
            write(&name, sub.clone().name(display).display_name(display))?;
        }
    }
    if let Some(dir) = completions {
        use clap_complete::Shell;
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        for sh in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            clap_complete::generate_to(sh, &mut cmd, "snapsite", dir)?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate { man, completions } = &cli.command {
        return match generate(man.as_deref(), completions.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("snapsite: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&cli);
    // For monitoring, a status that cannot be read is UNKNOWN (3), not a warning (1).
    let failed = if matches!(cli.command, Command::Status { .. }) {
        3
    } else {
        1
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // Under systemd: an error line (priority 3) in the journal.
            let line = format!("snapsite: error: {e:#}\n");
            let bytes = if snapsite::ops::systemd::stderr_is_journal() {
                snapsite::ops::systemd::prefix_lines(3, line.as_bytes())
            } else {
                line.into_bytes()
            };
            let _ = std::io::Write::write_all(&mut std::io::stderr(), &bytes);
            ExitCode::from(failed)
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config)?)
}

fn human_bytes(b: u64) -> String {
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = load(&cli)?;
    let catalog = Catalog::new(&cfg.state_dir);
    match cli.command {
        Command::Generate { .. } => unreachable!("handled before the config is loaded"),
        Command::Check => check(&cfg).map(|_| ExitCode::SUCCESS),
        Command::Snapshot { redolog, json } => cmd_snapshot(&cfg, &catalog, redolog, json),
        Command::Ship {
            json,
            dry_run,
            to: Some(dir),
            chunk_size,
        } if !dry_run => cmd_seed(&cfg, &catalog, &dir, chunk_size, json),
        Command::Ship { json, dry_run, .. } => cmd_ship(&cfg, &catalog, json, dry_run),
        Command::Sets { json } => sets(&cfg, &catalog, json).map(|_| ExitCode::SUCCESS),
        Command::Run { once } => cmd_run(&cfg, &catalog, once),
        Command::Prune { dry_run, json } => cmd_prune(&cfg, &catalog, dry_run, json),
        Command::Status { json, prometheus } => cmd_status(&cfg, json, prometheus),
        Command::Serve {
            from: Some(dir), ..
        } => {
            let id = snapsite::primary::seed::receive_seed(&cfg, &dir)?;
            println!("seeded: set {id} committed from {}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve {
            stdio: _,
            from: None,
            idle_timeout,
        } => cmd_serve(&cfg, idle_timeout),
        Command::Failover {
            set,
            dry_run,
            no_replay,
            no_stream,
            json,
        } => cmd_failover(&cfg, set, dry_run, no_replay, no_stream, json),
        Command::Rehearse { set, dry_run, json } => cmd_rehearse(&cfg, set, dry_run, json),
        Command::Failback { dry_run, json } => cmd_failback(&cfg, dry_run, json),
        Command::Switchover { dry_run, json } => cmd_switchover(&cfg, dry_run, json),
        Command::Role { init, json } => cmd_role(&cfg, &catalog, init, json),
    }
}

/// `rehearse`: prove failover on scratch clones (exit 3: the replay failed).
fn cmd_rehearse(
    cfg: &Config,
    set: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if dry_run {
        let plan = snapsite::dr::rehearse::plan(cfg, set.as_deref())?;
        if json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            println!("rehearsal plan (dry run: nothing is changed)");
            print!("{}", failover::render_plan(&plan));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = match snapsite::dr::rehearse::run(
        cfg,
        &snapsite::dr::rehearse::Options {
            set: set.as_deref(),
            lock_wait: Duration::from_secs(600),
        },
    ) {
        Ok(r) => r,
        Err(e) => {
            snapsite::ops::notify::event(
                cfg.notify.as_ref(),
                &cfg.site,
                "rehearsal",
                snapsite::ops::notify::Severity::Critical,
                &format!("rehearsal failed: {e}"),
            );
            return Err(e.into());
        }
    };
    snapsite::ops::notify::event(
        cfg.notify.as_ref(),
        &cfg.site,
        "rehearsal",
        if report.ok {
            snapsite::ops::notify::Severity::Ok
        } else {
            snapsite::ops::notify::Severity::Critical
        },
        &format!(
            "rehearsal {} in {:.1} s (set {}, replay exit {})",
            if report.ok { "passed" } else { "FAILED" },
            report.seconds_total,
            report.plan.set_id,
            report
                .replay_exit
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into())
        ),
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", snapsite::dr::rehearse::render_report(&report));
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `failback`: on the returning old primary, become the new primary's standby.
fn cmd_failback(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (plan, report) = snapsite::dr::failback::run(cfg, dry_run)?;
    if json {
        match &report {
            Some(r) => println!("{}", serde_json::to_string_pretty(r)?),
            None => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "failback{}",
        if dry_run {
            " plan (dry run: nothing is changed)"
        } else {
            ""
        }
    );
    print!("{}", snapsite::dr::failback::render_plan(&plan));
    if let Some(r) = report {
        for (role, at) in &r.divergent.snapshots {
            println!("kept          {role:<10} {at} (read-only)");
        }
        println!(
            "done          this site is the standby of {} in generation {}; run `snapsite ship` there",
            plan.peer,
            plan.peer_generation.max(plan.generation)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `switchover`: final set, ship, become the standby.
fn cmd_switchover(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    if dry_run {
        print!("{}", snapsite::dr::switchover::check(cfg)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = snapsite::dr::switchover::run(cfg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", snapsite::dr::switchover::render_report(&r));
    }
    Ok(ExitCode::SUCCESS)
}

/// `role`: this site's recorded role and generation; `--init` records it once.
fn cmd_role(
    cfg: &Config,
    catalog: &Catalog,
    init: Option<RoleArg>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(r) = init {
        let role = match r {
            RoleArg::Primary => snapsite::base::site::Role::Primary,
            RoleArg::Standby => snapsite::base::site::Role::Standby,
        };
        snapsite::base::site::init_role(catalog, role)?;
    }
    let (role, generation) = snapsite::base::site::current_role(cfg, catalog)?;
    let rec = catalog.role_record()?;
    let peer = catalog.peer_record()?;
    let interrupted = snapsite::ops::status::interrupted(catalog)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "site": cfg.site, "role": role, "generation": generation,
                "record": rec, "peer": peer, "interrupted": interrupted,
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} is {} in generation {}{}",
        cfg.site,
        role.as_str(),
        generation,
        match &rec {
            Some(r) => format!(" (recorded: {} at {})", r.how, r.since),
            None => " (from the config: no role recorded)".into(),
        }
    );
    if let Some(p) = peer {
        println!(
            "peer {} said {} in generation {} at {}",
            p.site,
            p.role.map(|r| r.as_str()).unwrap_or("?"),
            p.generation.map(|g| g.to_string()).unwrap_or("?".into()),
            p.seen_at
        );
    }
    for i in &interrupted {
        println!("{}", snapsite::base::journal::render(i));
    }
    Ok(ExitCode::SUCCESS)
}

/// `snapshot`: take one set now.
fn cmd_snapshot(
    cfg: &Config,
    catalog: &Catalog,
    redolog: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tz = jiff::tz::TimeZone::system();
    let _lock = catalog.lock("snapshot", Duration::from_secs(600))?;
    let kind = if redolog {
        SetKind::Redolog
    } else {
        SetKind::Full
    };
    let m = coordinator::take_set(cfg, catalog, kind)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!("{}", m.id);
        eprintln!(
            "{} set {}: {} member(s), from_time {}, skew {} ms",
            m.kind.as_str(),
            m.id,
            m.members.len(),
            format_zmplayredo(m.from_time(), &tz),
            m.skew().as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ship`: send what the standby lacks (or show the plan).
fn cmd_ship(
    cfg: &Config,
    catalog: &Catalog,
    json: bool,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    if dry_run {
        return ship_dry_run(cfg, catalog).map(|_| ExitCode::SUCCESS);
    }
    let _lock = catalog.lock("ship", Duration::from_secs(600))?;
    let mut display = ProgressDisplay::new(catalog, true);
    let mut progress =
        |role: &str, snap: &str, bytes: u64, done: bool| display.update(role, snap, bytes, done);
    let r = coordinator::ship(cfg, catalog, &mut progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "shipped {} snapshot(s), {} payload ({} on the wire) in {:.2} s; committed {} set(s) on the standby",
            r.snapshots.len(),
            human_bytes(r.payload_bytes),
            human_bytes(r.wire_bytes),
            r.seconds,
            r.committed.len()
        );
        for s in r.snapshots.iter().filter(|s| s.resumed) {
            println!(
                "  {} {}: resumed a cut transfer ({} sent this time)",
                s.role,
                s.snapshot,
                human_bytes(s.bytes)
            );
        }
        for id in &r.committed {
            println!("  committed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ship --to DIR`: write a seed of the newest complete full set.
fn cmd_seed(
    cfg: &Config,
    catalog: &Catalog,
    dir: &std::path::Path,
    chunk_size: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let _lock = catalog.lock("ship", Duration::from_secs(600))?;
    let mut display = ProgressDisplay::new(catalog, true);
    let mut progress =
        |role: &str, snap: &str, bytes: u64, done: bool| display.update(role, snap, bytes, done);
    let r = snapsite::primary::seed::write_seed(cfg, catalog, dir, chunk_size, &mut progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "seed of set {} written to {}: {} part(s), {} payload ({} stream, compression {}); on the standby: snapsite serve --from {}",
            r.set_id,
            r.dir.display(),
            r.parts,
            human_bytes(r.payload_bytes),
            human_bytes(r.stream_bytes),
            r.compression,
            r.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`: the schedule loop (or one cycle).
fn cmd_run(cfg: &Config, catalog: &Catalog, once: bool) -> anyhow::Result<ExitCode> {
    snapsite::primary::run::install_stop_handler()?;
    let mut display = ProgressDisplay::new(catalog, false);
    let mut progress =
        |role: &str, snap: &str, bytes: u64, done: bool| display.update(role, snap, bytes, done);
    let rec = snapsite::primary::run::run(
        cfg,
        &snapsite::primary::run::Options { once },
        &mut progress,
    )?;
    if once {
        println!(
            "{} full set(s), {} redolog snapshot(s) taken; {} set(s) committed on the standby; {} pruned",
            rec.full_sets_taken, rec.redolog_sets_taken, rec.sets_committed, rec.sets_pruned
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `prune`: apply the retention grids.
fn cmd_prune(
    cfg: &Config,
    catalog: &Catalog,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let retention = cfg.retention.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no [retention] section: nothing says what to keep (e.g. grid = \"1x1h(keep=all) | 24x1h | 30x1d | 11x30d\")",
            cfg.path.display()
        )
    })?;
    let _lock = catalog.lock("prune", Duration::from_secs(600))?;
    let plan = snapsite::ops::prune::plan(cfg, catalog, retention)?;
    let report = snapsite::ops::prune::apply(cfg, catalog, plan, dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if dry_run {
            "would destroy"
        } else {
            "destroyed"
        };
        for d in &report.plan.sets {
            println!(
                "{:<8} {:<30} {}",
                if !d.destroy {
                    "keep"
                } else if dry_run {
                    "DESTROY?"
                } else {
                    "DESTROY"
                },
                d.set_id,
                d.reason
            );
        }
        for (role, snap) in &report.plan.orphans {
            println!(
                "{:<8} {role} {snap}: a snapshot whose set can never be committed",
                if dry_run { "DESTROY?" } else { "DESTROY" }
            );
        }
        println!(
            "{verb} {} set(s) and {} orphan snapshot(s); kept {} set(s)",
            report.plan.to_destroy().count(),
            report.plan.orphans.len(),
            report.kept_sets
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`: Nagios-style exit code, text or JSON, Prometheus file.
fn cmd_status(cfg: &Config, json: bool, prometheus: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let tz = jiff::tz::TimeZone::system();
    let s = match snapsite::ops::status::gather(cfg, jiff::Timestamp::now()) {
        Ok(s) => s,
        Err(e) => {
            // Nagios: 3 = UNKNOWN
            println!("snapsite UNKNOWN - {}: {e}", cfg.site);
            return Ok(ExitCode::from(3));
        }
    };
    if let Some(p) = prometheus.as_ref().or(cfg.status.prometheus.as_ref()) {
        snapsite::ops::status::write_prometheus(&s, p)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", snapsite::ops::status::render_text(&s, &tz));
    }
    Ok(ExitCode::from(s.level as u8))
}

/// `serve --stdio`: one session with the primary, deadlines on both pipes.
fn cmd_serve(cfg: &Config, idle_timeout: Duration) -> anyhow::Result<ExitCode> {
    use std::os::fd::AsFd;
    // Lead a process group (unless sshd made us a session leader,
    // which leads one already), so that `failover` can stop this
    // session and the receive it runs with one kill.
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    // Deadlines sit under the buffers: poll sees the real pipe.
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let timeout = (!idle_timeout.is_zero()).then_some(idle_timeout);
    serve::serve(
        cfg,
        std::io::BufReader::with_capacity(
            1 << 20,
            snapsite::wire::stream::Deadline::new(stdin, timeout, "the primary"),
        ),
        std::io::BufWriter::with_capacity(
            1 << 16,
            snapsite::wire::stream::Deadline::new(stdout, timeout, "the primary"),
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `failover`: plan (dry run) or bring this standby up.
fn cmd_failover(
    cfg: &Config,
    set: Option<String>,
    dry_run: bool,
    no_replay: bool,
    no_stream: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let opts = failover::Options {
        set: set.as_deref(),
        no_replay,
        no_stream,
    };
    if dry_run {
        let (plan, resumed) = failover::current_plan(cfg, &opts)?;
        let stream = (!no_stream)
            .then(|| snapsite::redostream::preview(cfg, &plan.redolog_set_id, plan.redolog_before))
            .flatten();
        if json {
            let mut v = serde_json::to_value(&plan)?;
            if let (Some(st), Some(o)) = (&stream, v.as_object_mut()) {
                o.insert("stream".into(), serde_json::to_value(st)?);
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "failover plan (dry run: nothing is changed){}",
                if resumed {
                    ", resuming an interrupted failover"
                } else {
                    ""
                }
            );
            print!("{}", failover::render_plan(&plan));
            if let Some(st) = &stream {
                print!("{}", snapsite::redostream::render_preview(st));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = match failover::run(cfg, &opts) {
        Ok(r) => r,
        Err(e) => {
            snapsite::ops::notify::event(
                cfg.notify.as_ref(),
                &cfg.site,
                "failover",
                snapsite::ops::notify::Severity::Critical,
                &format!("failover failed: {e}"),
            );
            return Err(e.into());
        }
    };
    snapsite::ops::notify::event(
        cfg.notify.as_ref(),
        &cfg.site,
        "failover",
        if report.ok() {
            snapsite::ops::notify::Severity::Ok
        } else {
            snapsite::ops::notify::Severity::Critical
        },
        if report.ok() {
            "failover finished: the standby is up"
        } else {
            "failover made the copies but the replay failed (exit 3)"
        },
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", failover::render_report(&report));
    }
    if !report.ok() {
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// Transfer progress: bytes, rate and ETA on a terminal (the estimate is
/// the last transfer of the same volume and kind, from the standby record);
/// otherwise a log line every 30 s for long transfers and one per snapshot.
struct ProgressDisplay<'a> {
    catalog: &'a Catalog,
    tty: bool,
    /// Print a line per snapshot sent (interactive `ship`); `run` logs instead.
    print_done: bool,
    current: Option<(String, String)>,
    started: Instant,
    last: Instant,
    estimate: Option<u64>,
}

impl<'a> ProgressDisplay<'a> {
    fn new(catalog: &'a Catalog, print_done: bool) -> Self {
        ProgressDisplay {
            catalog,
            tty: std::io::stderr().is_terminal(),
            print_done,
            current: None,
            started: Instant::now(),
            last: Instant::now(),
            estimate: None,
        }
    }

    fn update(&mut self, role: &str, snap: &str, bytes: u64, done: bool) {
        let key = (role.to_string(), snap.to_string());
        if self.current.as_ref() != Some(&key) {
            // A new transfer: incremental if the standby holds any snapshot
            // of the volume (the planner's choice, approximately).
            let rec = self.catalog.standby_record().ok().flatten();
            self.estimate = rec.as_ref().and_then(|r| {
                let incremental = r.holds.get(role).is_some_and(|h| !h.is_empty());
                r.estimate(role, incremental)
            });
            self.current = Some(key);
            self.started = Instant::now();
            self.last = Instant::now();
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        if done {
            if self.tty {
                eprint!("\r\x1b[K");
            }
            if self.print_done {
                eprintln!(
                    "  sent {role:<10} {snap}  {} in {secs:.1} s ({}/s)",
                    human_bytes(bytes),
                    human_bytes(rate as u64)
                );
            } else {
                tracing::info!(volume = %role, snapshot = %snap, bytes, seconds = secs, "sent");
            }
            self.current = None;
            return;
        }
        if self.tty && self.last.elapsed() > Duration::from_millis(250) {
            self.last = Instant::now();
            let eta = match self.estimate {
                Some(total) if total > bytes && rate > 0.0 => format!(
                    ", ~{:.0}% ETA {}",
                    100.0 * bytes as f64 / total as f64,
                    humantime::format_duration(Duration::from_secs(
                        ((total - bytes) as f64 / rate) as u64
                    ))
                ),
                _ => String::new(),
            };
            eprint!(
                "\r\x1b[K  sending {role} {snap}: {} ({}/s{eta})",
                human_bytes(bytes),
                human_bytes(rate as u64)
            );
        } else if !self.tty && self.last.elapsed() > Duration::from_secs(30) {
            self.last = Instant::now();
            tracing::info!(volume = %role, snapshot = %snap, bytes, rate_bytes_per_second = rate as u64, estimate_bytes = self.estimate, "sending");
        }
    }
}

fn check(cfg: &Config) -> anyhow::Result<()> {
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
    println!(
        "order     {} (redolog volume: {})",
        cfg.volumes
            .iter()
            .map(|v| v.role.as_str())
            .collect::<Vec<_>>()
            .join(" -> "),
        cfg.redolog_role
    );
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
            let demo = r.time_format.format(jiff::Timestamp::now(), &r.timezone);
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
        None if !primary => println!(
            "replay    none ([replay] is not configured): failover makes and mounts the copies and replays nothing"
        ),
        None => {}
    }
    if let Some(r) = &cfg.retention {
        print_retention_bound(cfg.schedule.as_ref(), r);
    }
    if let Some(s) = cfg.standby.as_ref().filter(|_| !primary) {
        // A recorded standby whose config names its peer (after a failback
        // or switchover): the peer is the primary, nothing is shipped there.
        println!(
            "peer      {} (this site is the standby: the peer ships here; `ship` is refused)",
            transport::command(s)?.display()
        );
    } else if let Some(s) = &cfg.standby {
        let cmd = transport::command(s)?;
        print!("standby   {} ... ", cmd.display());
        match probe_standby(cfg) {
            Ok(msg) => println!("ok: {msg}"),
            Err(e) => {
                problems += 1;
                println!("PROBLEM: {e:#}");
            }
        }
    }
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
fn probe_standby(cfg: &Config) -> anyhow::Result<String> {
    let plan = coordinator::ship_plan(cfg, &Catalog::new(&cfg.state_dir))?;
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

fn ship_dry_run(cfg: &Config, catalog: &Catalog) -> anyhow::Result<()> {
    let plan = coordinator::ship_plan(cfg, catalog)?;
    println!(
        "ship (dry run: nothing is sent) to standby `{}`, which holds {} committed set(s)",
        plan.standby.site,
        plan.standby.committed.len()
    );
    if plan.sets.is_empty() {
        println!("  nothing to ship");
    }
    for (id, steps) in &plan.sets {
        println!("  set {id}");
        for st in steps {
            match &st.base {
                Some(b) => println!("    {:<10} incremental from {b}", st.role),
                None => println!("    {:<10} full", st.role),
            }
        }
        if steps.is_empty() {
            println!("    (all members already on the standby: commit only)");
        }
    }
    Ok(())
}

fn sets(cfg: &Config, catalog: &Catalog, json: bool) -> anyhow::Result<()> {
    let _ = catalog;
    let site = snapsite::base::site::Site::open(cfg).context("listing snapshots")?;
    let tz = jiff::tz::TimeZone::system();
    let rows: Vec<_> = site
        .manifests()
        .iter()
        .map(|m| (m.clone(), site.is_usable(m)))
        .collect();
    // Data this site kept when it stopped being primary (failback, switchover).
    let divergent = snapsite::dr::failback::divergent_records(&site.catalog)?;
    if json {
        let mut v: Vec<_> = rows
            .iter()
            .map(|(m, c)| serde_json::json!({"id": m.id, "kind": m.kind, "complete": c, "from_time": m.from_time(), "manifest": m}))
            .collect();
        v.extend(divergent.iter().map(|d| {
            serde_json::json!({"id": format!("divergent-{}", d.label), "kind": "divergent", "complete": false, "divergent": d})
        }));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for d in &divergent {
        println!(
            "divergent-{} ({} at {}, peer {} generation {}): read-only, never shipped or pruned",
            d.label, d.how, d.at, d.peer, d.peer_generation
        );
        for (role, at) in &d.snapshots {
            println!("  {role:<10} {at}");
        }
        if !d.sets.is_empty() {
            println!("  sets the peer never got: {}", d.sets.join(", "));
        }
        if let Some(rp) = d.recovery_point {
            println!(
                "  written here after {} (the peer's recovery point): only in these snapshots",
                format_zmplayredo(rp, &tz)
            );
        }
    }
    if rows.is_empty() {
        println!("no sets on this site ({})", cfg.state_dir.display());
        return Ok(());
    }
    println!(
        "{:<30} {:<8} {:<9} {:<24} members (role: snapshot time)",
        "SET", "KIND", "COMPLETE", "FROM_TIME (local)"
    );
    for (m, c) in rows {
        let members: Vec<String> = m
            .members
            .iter()
            .map(|x| {
                format!(
                    "{}: {}",
                    x.role,
                    x.before.to_zoned(tz.clone()).strftime("%H:%M:%S%.3f")
                )
            })
            .collect();
        println!(
            "{:<30} {:<8} {:<9} {:<24} {}",
            m.id,
            m.kind.as_str(),
            if c { "yes" } else { "NO" },
            format_zmplayredo(m.from_time(), &tz),
            members.join(", ")
        );
    }
    Ok(())
}
