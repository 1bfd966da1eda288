//! `snapsite prune`: destroy the sets the retention grids do not keep.

use std::process::ExitCode;
use std::time::Duration;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;

/// `prune`: apply the retention grids.
pub(super) fn cmd_prune(
    cfg: &Config,
    catalog: &Catalog,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let retention = cfg.retention.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no [retention] section: nothing says what to keep (e.g. grid = \"1x1h(keep=all) | 24x1h | 30x1d | 11x30d\")",
            cfg.path.display()
        )
    })?;
    let _lock = catalog.lock("prune", Duration::from_secs(600))?;
    let plan = snapsite::ops::prune::plan(cfg, catalog, retention)?;
    let report = snapsite::ops::prune::apply(cfg, catalog, plan, dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if dry_run {
            "would destroy"
        } else {
            "destroyed"
        };
        for d in &report.plan.sets {
            println!(
                "{:<8} {:<30} {}",
                if !d.destroy {
                    "keep"
                } else if dry_run {
                    "DESTROY?"
                } else {
                    "DESTROY"
                },
                d.set_id,
                d.reason
            );
        }
        for name in &report.plan.released_standbys {
            println!(
                "{:<8} standby `{name}`: no longer configured; its records and holds {}",
                if dry_run { "RELEASE?" } else { "RELEASE" },
                if dry_run {
                    "would be released"
                } else {
                    "are released"
                }
            );
        }
        for (role, snap) in &report.plan.orphans {
            println!(
                "{:<8} {role} {snap}: a snapshot whose set can never be committed",
                if dry_run { "DESTROY?" } else { "DESTROY" }
            );
        }
        println!(
            "{verb} {} set(s) and {} orphan snapshot(s); kept {} set(s)",
            report.plan.to_destroy().count(),
            report.plan.orphans.len(),
            report.kept_sets
        );
    }
    Ok(ExitCode::SUCCESS)
}
