//! `snapsite failover`: plan (`--dry-run`) or bring this standby up.

use std::process::ExitCode;

use snapsite::base::config::Config;
use snapsite::dr::failover;

/// `failover`: plan (dry run) or bring this standby up.
pub(super) fn cmd_failover(
    cfg: &Config,
    set: Option<String>,
    dry_run: bool,
    (no_replay, no_stream, accept_suspect): (bool, bool, bool),
    json: bool,
) -> anyhow::Result<ExitCode> {
    let opts = failover::Options {
        set: set.as_deref(),
        no_replay,
        no_stream,
        accept_suspect,
    };
    if dry_run {
        let (plan, resumed) = failover::current_plan(cfg, &opts)?;
        let stream = (!no_stream)
            .then(|| {
                snapsite::dr::stream_apply::preview(cfg, &plan.redolog_set_id, plan.redolog_before)
            })
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
                print!("{}", snapsite::dr::stream_apply::render_preview(st));
            }
        }
        if let Err(e) = failover::refuse_problems(&plan) {
            eprintln!("error: failover would be refused: {e}");
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = super::notify_failure(cfg, "failover", failover::run(cfg, &opts))?;
    super::notify_end(
        cfg,
        "failover",
        report.ok(),
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
