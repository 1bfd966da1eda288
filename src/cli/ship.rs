//! `snapsite ship`: send what the standby lacks, show the plan (`--dry-run`),
//! or write a seed (`--to DIR`); with `[[standby]]`, to every standby at
//! once or to one (`--to NAME`).

use std::process::ExitCode;
use std::time::Duration;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::primary::coordinator;
use snapsite::primary::coordinator::fanout;

use super::{human_bytes, progress::ProgressDisplay};

/// `ship [--to NAME|DIR]`: a value with a `/`, or naming an existing
/// directory, is a seed directory; any other is a standby's name.
pub(super) fn cmd_ship_to(
    cfg: &Config,
    catalog: &Catalog,
    json: bool,
    dry_run: bool,
    to: Option<&std::path::Path>,
    chunk_size: u64,
) -> anyhow::Result<ExitCode> {
    let name = match to {
        Some(p) if p.to_string_lossy().contains('/') || p.is_dir() => {
            if dry_run {
                anyhow::bail!(
                    "--dry-run with a seed directory (--to {}): a seed has no dry run",
                    p.display()
                );
            }
            return cmd_seed(cfg, catalog, p, chunk_size, json);
        }
        Some(p) => Some(p.to_string_lossy().into_owned()),
        None => None,
    };
    if name.is_none() && cfg.standbys.len() <= 1 {
        return cmd_ship(cfg, catalog, json, dry_run);
    }
    let targets = fanout::select(cfg, name.as_deref())?;
    if dry_run {
        for s in targets {
            println!("standby `{}`:", s.name);
            ship_dry_run_to(cfg, catalog, s)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let one = match &targets[..] {
        [s] => Some(s.name.as_str()),
        _ => None,
    };
    let mut display = ProgressDisplay::new(catalog, one, true);
    let mut progress =
        |role: &str, snap: &str, bytes: u64, done: bool| display.update(role, snap, bytes, done);
    let results = fanout::ship_standbys(cfg, catalog, &targets, &mut progress)?;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .err()
                .map(|e| format!("`{}`: {e}", r.name))
        })
        .collect();
    if json {
        let v: Vec<serde_json::Value> = results
            .iter()
            .map(|r| match &r.result {
                Ok(rep) => serde_json::json!({"name": r.name, "ok": true, "report": rep}),
                Err(e) => serde_json::json!({"name": r.name, "ok": false, "error": e.to_string()}),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "standbys": v }))?
        );
    } else {
        for r in &results {
            match &r.result {
                Ok(rep) => println!(
                    "standby `{}`: shipped {} snapshot(s), {} payload ({} on the wire) in {:.2} s; committed {} set(s)",
                    r.name,
                    rep.snapshots.len(),
                    human_bytes(rep.payload_bytes),
                    human_bytes(rep.wire_bytes),
                    rep.seconds,
                    rep.committed.len()
                ),
                Err(e) => println!("standby `{}`: FAILED: {e}", r.name),
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "ship failed to {} of {} standby(s): {}",
            failed.len(),
            results.len(),
            failed.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `ship`: send what the standby lacks (or show the plan).
pub(super) fn cmd_ship(
    cfg: &Config,
    catalog: &Catalog,
    json: bool,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    if dry_run {
        return ship_dry_run(cfg, catalog).map(|_| ExitCode::SUCCESS);
    }
    let _lock = catalog.lock("ship", Duration::from_secs(600))?;
    let first = cfg.standby.as_ref().map(|s| s.name.as_str());
    let mut display = ProgressDisplay::new(catalog, first, true);
    let mut progress =
        |role: &str, snap: &str, bytes: u64, done: bool| display.update(role, snap, bytes, done);
    let r = coordinator::ship(cfg, catalog, &mut progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "shipped {} snapshot(s), {} payload ({} on the wire) in {:.2} s; committed {} set(s) on the standby",
            r.snapshots.len(),
            human_bytes(r.payload_bytes),
            human_bytes(r.wire_bytes),
            r.seconds,
            r.committed.len()
        );
        for s in r.snapshots.iter().filter(|s| s.resumed) {
            println!(
                "  {} {}: resumed a cut transfer ({} sent this time)",
                s.role,
                s.snapshot,
                human_bytes(s.bytes)
            );
        }
        for id in &r.committed {
            println!("  committed {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ship --to DIR`: write a seed of the newest complete full set.
pub(super) fn cmd_seed(
    cfg: &Config,
    catalog: &Catalog,
    dir: &std::path::Path,
    chunk_size: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let _lock = catalog.lock("ship", Duration::from_secs(600))?;
    let first = cfg.standby.as_ref().map(|s| s.name.as_str());
    let mut display = ProgressDisplay::new(catalog, first, true);
    let mut progress =
        |role: &str, snap: &str, bytes: u64, done: bool| display.update(role, snap, bytes, done);
    let r = snapsite::primary::seed::write_seed(cfg, catalog, dir, chunk_size, &mut progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "seed of set {} written to {}: {} part(s), {} payload ({} stream, compression {}); on the standby: snapsite serve --from {}",
            r.set_id,
            r.dir.display(),
            r.parts,
            human_bytes(r.payload_bytes),
            human_bytes(r.stream_bytes),
            r.compression,
            r.dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn ship_dry_run(cfg: &Config, catalog: &Catalog) -> anyhow::Result<()> {
    ship_dry_run_to(cfg, catalog, coordinator::first_standby(cfg)?)
}

fn ship_dry_run_to(
    cfg: &Config,
    catalog: &Catalog,
    standby: &snapsite::base::config::Standby,
) -> anyhow::Result<()> {
    let plan = coordinator::ship_plan_to(cfg, catalog, standby)?;
    println!(
        "ship (dry run: nothing is sent) to standby `{}`, which holds {} committed set(s)",
        plan.standby.site,
        plan.standby.committed.len()
    );
    if plan.sets.is_empty() {
        println!("  nothing to ship");
    }
    for (id, steps) in &plan.sets {
        println!("  set {id}");
        for st in steps {
            match &st.base {
                Some(b) => println!("    {:<10} incremental from {b}", st.role),
                None => println!("    {:<10} full", st.role),
            }
        }
        if steps.is_empty() {
            println!("    (all members already on the standby: commit only)");
        }
    }
    Ok(())
}
