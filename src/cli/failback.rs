//! `snapsite failback`: the returning old primary becomes the new primary's standby.

use std::process::ExitCode;

use snapsite::base::config::Config;

use super::demotion::{Demotion, print};

/// `failback`: on the returning old primary, become the new primary's standby.
pub(super) fn cmd_failback(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let (plan, report) = snapsite::dr::failback::run(cfg, dry_run)?;
    print(
        Demotion {
            verb: "failback",
            dry_run,
            plan: &plan,
            rendered: snapsite::dr::failback::render_plan(&plan),
            report: report.as_ref().map(|r| (r, &r.divergent)),
            kept_note: " (read-only)",
            peer: &plan.peer,
            generation: plan.peer_generation.max(plan.generation),
        },
        json,
    )
}
