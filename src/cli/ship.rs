//! `snapsite ship`: send what the standby lacks, show the plan (`--dry-run`),
//! or write a seed (`--to DIR`).

use std::process::ExitCode;
use std::time::Duration;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::primary::coordinator;

use super::{human_bytes, progress::ProgressDisplay};

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
    let mut display = ProgressDisplay::new(catalog, true);
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
    let mut display = ProgressDisplay::new(catalog, true);
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
    let plan = coordinator::ship_plan(cfg, catalog)?;
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
