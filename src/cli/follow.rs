//! `snapsite follow`: a standby becomes the standby of the site that failed over.

use std::process::ExitCode;

use snapsite::base::config::Config;

use super::demotion::{Demotion, print};

/// `follow`: on a third site, become the new primary's standby.
pub(super) fn cmd_follow(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (plan, report) = snapsite::dr::follow::run(cfg, dry_run)?;
    print(
        Demotion {
            verb: "follow",
            dry_run,
            plan: &plan,
            rendered: snapsite::dr::follow::render_plan(&plan),
            report: report.as_ref().map(|r| (r, &r.divergent)),
            kept_note: "",
            peer: &plan.plan.peer,
            generation: plan.plan.peer_generation.max(plan.plan.generation),
        },
        json,
    )
}
