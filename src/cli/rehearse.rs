//! `snapsite rehearse`: prove failover on scratch clones of the newest set.

use std::process::ExitCode;
use std::time::Duration;

use snapsite::base::config::Config;
use snapsite::dr::failover;

/// `rehearse`: prove failover on scratch clones (exit 3: the replay failed).
pub(super) fn cmd_rehearse(
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
    let opts = snapsite::dr::rehearse::Options {
        set: set.as_deref(),
        lock_wait: Duration::from_secs(600),
    };
    let report = super::notify_failure(cfg, "rehearsal", snapsite::dr::rehearse::run(cfg, &opts))?;
    super::notify_end(
        cfg,
        "rehearsal",
        report.ok,
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
