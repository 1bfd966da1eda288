//! `snapsite archive`, `restore` and `verify` (issue 30): S3 archives.

use std::path::PathBuf;
use std::process::ExitCode;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::ops::checkup::human_bytes;

pub(super) fn cmd_archive(
    cfg: &Config,
    catalog: &Catalog,
    to: Option<String>,
    set: Option<String>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let a = snapsite::primary::archive::pick(cfg, to.as_deref())?;
    // Under the site lock: `prune` cannot remove a snapshot being sent.
    let _lock = catalog.lock("archive", std::time::Duration::from_secs(600))?;
    let r = snapsite::primary::archive::archive(cfg, catalog, a, set.as_deref(), dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let enc = if r.encrypted { "age" } else { "UNENCRYPTED" };
    if dry_run {
        println!(
            "archive `{}` ({}, {enc}): holds {} set(s); would write {}",
            r.archive,
            r.bucket,
            r.already,
            if r.planned.is_empty() {
                "nothing".into()
            } else {
                r.planned.join(", ")
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    for s in &r.written {
        let base = if s.requires.is_empty() {
            "full".to_string()
        } else {
            format!("on {}", s.requires.join(", "))
        };
        println!(
            "archived {} ({base}): {} part(s), {} payload, {} stored, {:.1} s",
            s.set_id,
            s.parts,
            human_bytes(s.payload_bytes),
            human_bytes(s.stored_bytes),
            s.seconds
        );
    }
    if r.written.is_empty() {
        println!(
            "archive `{}` ({enc}): nothing to write ({} set(s) archived)",
            r.archive, r.already
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cmd_restore(
    cfg: &Config,
    from: &str,
    set: Option<String>,
    identity: Option<PathBuf>,
    dry_run: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let a = snapsite::primary::archive::pick(cfg, Some(from))?;
    let r = snapsite::dr::restore::restore(cfg, a, set.as_deref(), identity.as_deref(), dry_run)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "restore of {} from archive `{}`: chain {}",
        r.target,
        r.archive,
        r.chain.join(" -> ")
    );
    for s in &r.already_here {
        println!("  {s}: already here, skipped");
    }
    if dry_run {
        println!("(dry run: nothing received)");
    }
    for s in &r.restored {
        println!(
            "  {}: {} part(s), {} downloaded in {:.1} s, received in {:.1} s",
            s.set_id,
            s.parts,
            human_bytes(s.stored_bytes),
            s.download_seconds,
            s.receive_seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn cmd_verify(
    cfg: &Config,
    archive: &str,
    set: Option<String>,
    sample: Option<usize>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let a = snapsite::primary::archive::pick(cfg, Some(archive))?;
    let r = snapsite::dr::restore::verify(a, set.as_deref(), sample)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "archive `{}`: {} set(s), {} part(s); {} read back ({}) in {:.1} s",
            r.archive,
            r.sets,
            r.parts,
            r.parts_read,
            human_bytes(r.bytes_read),
            r.seconds
        );
        for p in &r.problems {
            println!("PROBLEM {}: {}: {}", p.set_id, p.key, p.problem);
        }
        if r.problems.is_empty() {
            println!("OK: every part matches its index");
        }
    }
    Ok(if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
