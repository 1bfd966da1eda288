//! `snapsite failback`: the returning old primary becomes the new primary's standby.

use std::process::ExitCode;

use snapsite::base::config::Config;

/// `failback`: on the returning old primary, become the new primary's standby.
pub(super) fn cmd_failback(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
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
