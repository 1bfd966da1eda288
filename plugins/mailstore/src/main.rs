//! `mailstore`: the reference mail store's command line.
//!
//!   init     create database/table, index, blob dir, redolog
//!   write    the writer: deliver messages at a steady rate, acknowledging each
//!   replay   zmplayredo's job: `--fromTime` (zmplayredo formats, local time)
//!   verify   the three stores against each other and the redolog
//!   verdict  the failover drill's verdict (see drill.rs)
//!   timeline the drill's timeline in the guide's style

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;

use mailstore::drill::{self, Ack};
use mailstore::redolog::{Op, RedoWriter};
use mailstore::stores::{Db, Index, Volumes};

#[derive(Parser)]
#[command(
    name = "mailstore",
    about = "snapsite's reference mail store (four volumes, redolog replay, verify)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the database and table, the index, the blob dir and the redolog
    Init {
        #[command(flatten)]
        volumes: Volumes,
    },
    /// Deliver messages at a steady rate; append `id seq logged_at acked_at`
    /// to --acks once each is done
    Write {
        #[command(flatten)]
        volumes: Volumes,
        /// Acknowledgements file (keep it off the volumes)
        #[arg(long)]
        acks: PathBuf,
        /// Messages per second
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Stop after this many messages (default: until killed)
        #[arg(long)]
        count: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Roll redo.log over into archive/ at this size
        #[arg(long, default_value_t = 1 << 20)]
        rollover_bytes: u64,
    },
    /// Re-apply every logged operation from --fromTime on, idempotently
    Replay {
        #[command(flatten)]
        volumes: Volumes,
        /// zmplayredo time, local zone: `yyyy/MM/dd HH:mm:ss.SSS` and the other Zimbra forms
        #[arg(long = "fromTime")]
        from_time: String,
        /// Print a JSON summary
        #[arg(long)]
        json: bool,
    },
    /// Check the stores against each other and the redolog; exit 1 if they disagree
    Verify {
        #[command(flatten)]
        volumes: Volumes,
        #[arg(long)]
        json: bool,
    },
    /// The failover drill's verdict; exit 1 unless zero loss up to the recovery point
    Verdict {
        #[command(flatten)]
        volumes: Volumes,
        /// The writer's acknowledgements file (from the primary)
        #[arg(long)]
        acks: PathBuf,
        /// `snapsite failover --json` output
        #[arg(long)]
        report: PathBuf,
        /// When the failover command was given (RFC 3339)
        #[arg(long)]
        command_at: Option<Timestamp>,
        /// Also write the verdict as JSON here
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Print the drill timeline
    Timeline(TimelineArgs),
}

#[derive(clap::Args)]
struct TimelineArgs {
    #[arg(long)]
    events: PathBuf,
    #[arg(long)]
    manifests: PathBuf,
    /// `snapsite failover --json` output
    #[arg(long)]
    report: Option<PathBuf>,
    /// The writer's acknowledgements file
    #[arg(long)]
    acks: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailstore: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init { volumes } => {
            mailstore::init(&volumes)?;
            eprintln!("mailstore: initialised");
        }
        Command::Write {
            volumes,
            acks,
            rate,
            count,
            seed,
            rollover_bytes,
        } => write(&volumes, &acks, rate, count, seed, rollover_bytes)?,
        Command::Replay {
            volumes,
            from_time,
            json,
        } => {
            let tz = jiff::tz::TimeZone::system();
            let from = mailstore::fromtime::parse(&from_time, &tz)?;
            let s = mailstore::replay(&volumes, from)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "replay: --fromTime '{from_time}' = {from}: re-applied {} of {} logged operation(s) (seq {}..{}; {} deliver, {} delete) in {:.2} s",
                    s.replayed,
                    s.records_in_log,
                    s.first_replayed_seq.map_or("-".into(), |v| v.to_string()),
                    s.last_seq.map_or("-".into(), |v| v.to_string()),
                    s.delivers,
                    s.deletes,
                    s.seconds
                );
            }
        }
        Command::Verify { volumes, json } => {
            let r = mailstore::verify(&volumes)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", mailstore::render_verify(&r));
            }
            if !r.ok {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Verdict {
            volumes,
            acks,
            report,
            command_at,
            json_out,
        } => {
            let acks = drill::read_acks(&acks)?;
            let report: serde_json::Value = serde_json::from_slice(
                &std::fs::read(&report).with_context(|| format!("read {}", report.display()))?,
            )
            .context("the failover report is not JSON")?;
            let check = mailstore::verify(&volumes)?;
            if !check.ok {
                print!("{}", mailstore::render_verify(&check));
            }
            let v = drill::judge(&acks, &report, &check.present, check.ok, command_at)?;
            print!("{}", drill::render_verdict(&v, &acks));
            if let Some(p) = json_out {
                std::fs::write(&p, serde_json::to_string_pretty(&v)?)
                    .with_context(|| format!("write {}", p.display()))?;
            }
            if !v.zero_loss {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Timeline(t) => {
            let report: Option<serde_json::Value> = match &t.report {
                Some(p) => Some(serde_json::from_slice(&std::fs::read(p)?)?),
                None => None,
            };
            let acks = match &t.acks {
                Some(p) => drill::read_acks(p)?,
                None => Vec::new(),
            };
            print!(
                "{}",
                drill::timeline(&t.events, &t.manifests, report.as_ref(), &acks)?
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write(
    v: &Volumes,
    acks_path: &PathBuf,
    rate: f64,
    count: Option<u64>,
    seed: u64,
    rollover_bytes: u64,
) -> Result<()> {
    let (mut log, old) = RedoWriter::open(&v.redolog, rollover_bytes)?;
    let mut next_id = old
        .iter()
        .filter_map(|r| match &r.op {
            Op::Deliver(m) => Some(m.id),
            Op::Delete { .. } => None,
        })
        .max()
        .unwrap_or(0)
        + 1;
    let db = Db::new(v);
    let mut index = Index::open(&v.index)?;
    let mut acks = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(acks_path)
        .with_context(|| format!("open {}", acks_path.display()))?;
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let start = Instant::now();
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let due = start + period.mul_f64(n as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let id = next_id;
        next_id += 1;
        let r = mailstore::apply_live(
            v,
            &mut log,
            &db,
            &mut index,
            Op::Deliver(mailstore::make_message(seed, id)),
        )?;
        let a = Ack {
            id,
            seq: r.seq,
            logged_at: r.ts,
            acked_at: Timestamp::now(),
        };
        acks.write_all(drill::ack_line(&a).as_bytes())?;
        n += 1;
    }
    Ok(())
}
