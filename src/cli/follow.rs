//! `snapsite follow`: a standby becomes the standby of the site that failed over.

use std::process::ExitCode;

use snapsite::base::config::Config;

/// `follow`: on a third site, become the new primary's standby.
pub(super) fn cmd_follow(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (plan, report) = snapsite::dr::follow::run(cfg, dry_run)?;
    if json {
        match &report {
            Some(r) => println!("{}", serde_json::to_string_pretty(r)?),
            None => println!("{}", serde_json::to_string_pretty(&plan)?),
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "follow{}",
        if dry_run {
            " plan (dry run: nothing is changed)"
        } else {
            ""
        }
    );
    print!("{}", snapsite::dr::follow::render_plan(&plan));
    if let Some(r) = report {
        for (role, at) in &r.divergent.snapshots {
            println!("kept          {role:<10} {at}");
        }
        println!(
            "done          this site is the standby of {} in generation {}; run `snapsite ship` there",
            plan.plan.peer,
            plan.plan.peer_generation.max(plan.plan.generation)
        );
    }
    Ok(ExitCode::SUCCESS)
}
