//! The `snapsite` command line: parse, load the config, call the library,
//! render. This module holds the argument definitions and the dispatch; each
//! command's glue is in its own file (`check`, `snapshot`, `ship`, ...).
//!
//! May import: every library folder (through `snapsite::`). Nothing imports
//! `cli`: it is the binary, the library cannot see it
//! (tests/module_deps.rs checks that no library file names it).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod archive;
mod check;
mod demotion;
mod failback;
mod failover;
mod follow;
mod generate;
mod init;
mod progress;
mod prune;
mod rehearse;
mod role;
mod run;
mod serve;
mod sets;
mod ship;
mod snapshot;
mod status;
mod switchover;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::{self, Config};

#[derive(Parser)]
#[command(
    name = "snapsite",
    version,
    about = "Keep a standby site for a multi-volume application with storage snapshots",
    long_about = "snapsite takes ordered snapshot sets of an application's volumes (btrfs, ZFS, \
LVM thin), ships them to a standby site over a local pipe or ssh, and on failover brings the \
standby up from the newest complete set plus the newest redolog snapshot and runs the redo \
replay with --fromTime set to the set's first snapshot time.",
    after_help = "Typical use:\n  primary:  snapsite check && snapsite snapshot && snapsite ship\n            snapsite snapshot --redolog && snapsite ship     (every 15 min)\n            or unattended: snapsite run   ([schedule], [retention] in the config)\n  standby:  snapsite sets; snapsite failover --dry-run; snapsite failover\n\nConfig: /etc/snapsite/snapsite.toml (`snapsite init` writes both sites' configs; annotated\nexamples: /usr/share/doc/snapsite/examples/primary.toml and standby.toml).\nExit status: 0 ok, 1 error, 3 failover done but replay failed (run it again to retry)."
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
        /// NAME: ship only to the standby of that name (`[[standby]]`; without
        /// --to, `ship` sends to every standby at once). DIR (a path with a
        /// `/`, or an existing directory): seed a standby from a disk, writing
        /// the newest complete full set as a framed, checksummed stream in
        /// chunk files under DIR/<set>.seed/ (read there with `serve --from`)
        #[arg(long, value_name = "NAME|DIR")]
        to: Option<std::path::PathBuf>,
        /// Size of each chunk file of `--to`
        #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = snapsite::base::config::parse_size, requires = "to")]
        chunk_size: u64,
    },
    /// List the snapshot sets on this site
    Sets {
        /// Print the sets (with their manifests) as JSON
        #[arg(long)]
        json: bool,
        /// Only the newest N sets (read from sets.summary while it holds
        /// them: what it costs does not grow with the history)
        #[arg(long, value_name = "N", conflicts_with = "clear_suspect")]
        last: Option<usize>,
        /// On the standby: clear a set judged suspect of ransomware (a mass
        /// re-index, a restore or an upgrade looks like one); failover and
        /// retention count it clean from then on
        #[arg(long, value_name = "SET")]
        clear_suspect: Option<String>,
        /// With --clear-suspect: say what would be cleared, change nothing
        #[arg(long, requires = "clear_suspect")]
        dry_run: bool,
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
        /// Use the newest sets even if this standby judged them suspect of
        /// ransomware (by default failover uses the newest set before the
        /// first suspect one and says what that costs)
        #[arg(long)]
        accept_suspect: bool,
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
        /// Print the plan and what was destroyed as JSON
        #[arg(long)]
        json: bool,
    },
    /// On the standby: prove failover works, leaving production alone (scratch clones of the
    /// newest set, the replay with SNAPSITE_REHEARSAL=1, a report, everything removed).
    /// Exit 0 ok, 3 the replay failed or no [replay] is configured (nothing proved), 1 error
    Rehearse {
        /// Use this full set instead of the newest complete one
        #[arg(long)]
        set: Option<String>,
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report (or with --dry-run the plan) as JSON
        #[arg(long)]
        json: bool,
    },
    /// On the primary: write every set not yet archived (oldest first, incremental from what
    /// the archive holds) to an S3 archive ([[archive]]): part objects, then the index LAST,
    /// encrypted to the archive's age recipients. Nothing in the bucket is overwritten or deleted
    Archive {
        /// The [[archive]] to write (default: the only one)
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
        /// Write this set only (its bases must be archived already)
        #[arg(long, value_name = "ID")]
        set: Option<String>,
        /// List the sets that would be written, write nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// On a standby: rebuild it from an archive. Replays the chosen set's chain (full +
    /// incrementals, skipping sets held here) through the ordinary receive path, decrypting
    /// with the age identity; then `failover` works as usual
    Restore {
        /// The [[archive]] to read
        #[arg(long, value_name = "NAME")]
        from: String,
        /// Restore this set (default: the newest in the archive)
        #[arg(long, value_name = "ID")]
        set: Option<String>,
        /// The age identity file (default: the archive's `identity`)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Print the chain that would be restored, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// Read an archive back and check it against its indexes: every part present with its
    /// size, every required set present, and all (or --sample N) parts hashed.
    /// Needs no identity. Exit 0 ok, 2 problems found
    Verify {
        /// The [[archive]] to check
        #[arg(long, value_name = "NAME")]
        archive: String,
        /// Check this set only
        #[arg(long, value_name = "ID")]
        set: Option<String>,
        /// Read back only N parts, spread over the archive (sizes are checked for all)
        #[arg(long, value_name = "N")]
        sample: Option<usize>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
    /// On the returning old primary, after a failover: become the new primary's standby.
    /// Keeps this site's data written after the common base as read-only divergent
    /// snapshots; the new primary's next ship sends only what changed since the base
    Failback(ToNewPrimary),
    /// Three sites, on a standby after its primary failed over to the other standby: point
    /// [standby] at the new primary, then follow it. Sets aside (never destroys) what this site
    /// received beyond the newest set both hold; the new primary's next ship sends only what
    /// changed since that set. Refused on a live primary (use failback there)
    Follow(ToNewPrimary),
    /// On the primary, application stopped: final set, ship it, become the standby; then run
    /// `snapsite failover --set FINAL` on the peer. Zero loss by construction
    Switchover {
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
        /// The standby to hand the role to (as `ship --to NAME`); needed
        /// when several are configured
        #[arg(long, value_name = "NAME")]
        to: Option<String>,
    },
    /// This site's recorded role and generation; --init records it once
    Role {
        /// Record the role of a site that has none recorded yet
        #[arg(long, value_enum)]
        init: Option<RoleArg>,
        /// Print the role record as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write both sites' configs from the application's data directories
    #[command(
        after_help = "Each volume's backend and address come from the mount table: a btrfs \
subvolume, a mounted ZFS dataset or a thin LV. Both configs name each other in [standby] and carry \
[replay], so either site can be primary. Existing files are never overwritten.\n\n\
Examples:\n  snapsite init --peer mail-b.example.org                 (Zimbra's four data directories)\n  \
snapsite init --peer mail-b --volume db=/srv/db --volume redolog=/srv/wal --out /etc/snapsite --dry-run"
    )]
    Init {
        /// This site's name (default: this host's short name)
        #[arg(long)]
        site: Option<String>,
        /// The other site's host name or address (ssh)
        #[arg(long, value_name = "HOST")]
        peer: String,
        /// The other site's name (default: the first label of --peer)
        #[arg(long, value_name = "NAME")]
        peer_site: Option<String>,
        /// A volume as ROLE=PATH, repeated in snapshot order (default: Zimbra's
        /// mysql, blob, index and redolog directories under /opt/zimbra)
        #[arg(long = "volume", value_name = "ROLE=PATH")]
        volumes: Vec<String>,
        /// The volume holding the application's redo log (last in every set)
        #[arg(long, value_name = "ROLE", default_value = "redolog")]
        redolog: String,
        /// Where SITE.toml and PEER.toml are written
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// state_dir of both configs
        #[arg(long, value_name = "DIR", default_value = "/var/lib/snapsite")]
        state_dir: PathBuf,
        /// Where the plugins are installed
        #[arg(long, value_name = "DIR", default_value = "/usr/lib/snapsite/plugins")]
        plugins: PathBuf,
        /// Show what would be written; write nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Write man pages (snapsite.1, snapsite-SUBCOMMAND.1) and bash, zsh and fish
    /// completions into directories (for packaging); needs no config
    Generate {
        /// Directory for the man pages (snapsite.1, snapsite-SUBCOMMAND.1)
        #[arg(long, value_name = "DIR")]
        man: Option<PathBuf>,
        /// Directory for bash, zsh and fish completions
        #[arg(long, value_name = "DIR")]
        completions: Option<PathBuf>,
        /// Write the configuration reference (docs/configuration-reference.md) to FILE
        #[arg(long, value_name = "FILE")]
        config_reference: Option<PathBuf>,
    },
    /// How far behind the standby is; exit 0 ok, 1 warning, 2 critical (3: unknown)
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
        /// Also write Prometheus text-format metrics to FILE (node_exporter textfile
        /// collector). Without it, [status] prometheus in the config is written if set (the
        /// file `run` refreshes after each cycle); FILE or the key: an absolute path
        #[arg(long, value_name = "FILE")]
        prometheus: Option<PathBuf>,
    },
}

// The arguments of `failback` and `follow`: a site turning to the peer
// that became the primary. (No doc comment: the command's own is its help.)
#[derive(clap::Args)]
struct ToNewPrimary {
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Print the report (or with --dry-run the plan) as JSON
    #[arg(long)]
    json: bool,
    /// The standby entry (`[[standby]]` name) that reaches the new
    /// primary; needed when several are configured
    #[arg(long, value_name = "NAME")]
    standby: Option<String>,
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
    // Colours only on a terminal: a log file or a pipe gets plain lines.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_target(false).init(),
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Generate {
        man,
        completions,
        config_reference,
    } = &cli.command
    {
        return match generate::generate(
            man.as_deref(),
            completions.as_deref(),
            config_reference.as_deref(),
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("snapsite: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Init { .. } = &cli.command {
        return match init::cmd_init(&cli.command) {
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

/// A verb's end, told to `[notify]` as `event`: ok, or critical.
fn notify_end(cfg: &Config, event: &str, ok: bool, message: &str) {
    use snapsite::ops::notify::{Severity, event as notify};
    let severity = if ok { Severity::Ok } else { Severity::Critical };
    notify(cfg.notify.as_ref(), &cfg.site, event, severity, message);
}

/// A verb's outcome `r`: a failure is told to `[notify]` as `event`
/// (`EVENT failed: ...`, critical) and returned.
fn notify_failure<T>(cfg: &Config, event: &str, r: snapsite::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| {
        notify_end(cfg, event, false, &format!("{event} failed: {e}"));
        e.into()
    })
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config)?)
}

use snapsite::ops::checkup::human_bytes;

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let cfg = load(&cli)?;
    let catalog = Catalog::new(&cfg.state_dir);
    match cli.command {
        Command::Generate { .. } | Command::Init { .. } => {
            unreachable!("handled before the config is loaded")
        }
        Command::Check => check::check(&cfg).map(|_| ExitCode::SUCCESS),
        Command::Snapshot { redolog, json } => {
            snapshot::cmd_snapshot(&cfg, &catalog, redolog, json)
        }
        Command::Ship {
            json,
            dry_run,
            to,
            chunk_size,
        } => ship::cmd_ship_to(&cfg, &catalog, json, dry_run, to.as_deref(), chunk_size),
        Command::Sets {
            clear_suspect: Some(id),
            dry_run,
            ..
        } => sets::clear_suspect(&cfg, &id, dry_run),
        Command::Sets { json, last, .. } => {
            sets::sets(&cfg, &catalog, json, last).map(|_| ExitCode::SUCCESS)
        }
        Command::Run { once } => run::cmd_run(&cfg, &catalog, once),
        Command::Prune { dry_run, json } => prune::cmd_prune(&cfg, &catalog, dry_run, json),
        Command::Status { json, prometheus } => status::cmd_status(&cfg, json, prometheus),
        Command::Serve {
            from: Some(dir), ..
        } => serve::cmd_serve_seed(&cfg, &dir),
        Command::Serve {
            stdio: _,
            from: None,
            idle_timeout,
        } => serve::cmd_serve(&cfg, idle_timeout),
        Command::Failover {
            set,
            dry_run,
            no_replay,
            no_stream,
            accept_suspect,
            json,
        } => failover::cmd_failover(
            &cfg,
            set,
            dry_run,
            (no_replay, no_stream, accept_suspect),
            json,
        ),
        Command::Rehearse { set, dry_run, json } => {
            rehearse::cmd_rehearse(&cfg, set, dry_run, json)
        }
        Command::Failback(a) => failback::cmd_failback(
            &cfg.for_peer(a.standby.as_deref(), "failback", "--standby")?,
            a.dry_run,
            a.json,
        ),
        Command::Follow(a) => follow::cmd_follow(
            &cfg.for_peer(a.standby.as_deref(), "follow", "--standby")?,
            a.dry_run,
            a.json,
        ),
        Command::Switchover { dry_run, json, to } => switchover::cmd_switchover(
            &cfg.for_peer(to.as_deref(), "switchover", "--to")?,
            dry_run,
            json,
        ),
        Command::Role { init, json } => role::cmd_role(&cfg, &catalog, init, json),
        Command::Archive {
            to,
            set,
            dry_run,
            json,
        } => archive::cmd_archive(&cfg, &catalog, to, set, dry_run, json),
        Command::Restore {
            from,
            set,
            identity,
            dry_run,
            json,
        } => archive::cmd_restore(&cfg, &from, set, identity, dry_run, json),
        Command::Verify {
            archive,
            set,
            sample,
            json,
        } => archive::cmd_verify(&cfg, &archive, set, sample, json),
    }
}
