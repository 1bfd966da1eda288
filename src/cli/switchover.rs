//! `snapsite switchover`: final set, ship it, become the standby.

use std::process::ExitCode;

use snapsite::base::config::Config;

/// `switchover`: final set, ship, become the standby.
pub(super) fn cmd_switchover(cfg: &Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
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
