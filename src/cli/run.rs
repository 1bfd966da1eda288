//! `snapsite run`: the primary's schedule loop (or one cycle with `--once`).

use std::process::ExitCode;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;

use super::progress::ProgressDisplay;

/// `run`: the schedule loop (or one cycle).
pub(super) fn cmd_run(cfg: &Config, catalog: &Catalog, once: bool) -> anyhow::Result<ExitCode> {
    snapsite::primary::run::install_stop_handler()?;
    // The progress callback serves run's single-standby ships only.
    let first = cfg.standby.as_ref().map(|s| s.name.as_str());
    let mut display = ProgressDisplay::new(catalog, first, false);
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
