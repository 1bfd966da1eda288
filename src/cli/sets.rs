//! `snapsite sets`: list this site's snapshot sets (and divergent data kept by failback).

use anyhow::Context as _;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::dr::replay::format_zmplayredo;

pub(super) fn sets(cfg: &Config, catalog: &Catalog, json: bool) -> anyhow::Result<()> {
    let _ = catalog;
    let site = snapsite::base::site::Site::open(cfg).context("listing snapshots")?;
    let tz = jiff::tz::TimeZone::system();
    let rows: Vec<_> = site
        .manifests()
        .iter()
        .map(|m| (m.clone(), site.is_usable(m)))
        .collect();
    // Data this site kept when it stopped being primary (failback, switchover).
    let divergent = snapsite::dr::failback::divergent_records(&site.catalog)?;
    let verdicts: std::collections::BTreeMap<String, _> = site
        .catalog
        .verdicts()?
        .into_iter()
        .map(|v| (v.set_id.clone(), v))
        .collect();
    if json {
        let mut v: Vec<_> = rows
            .iter()
            .map(|(m, c)| serde_json::json!({"id": m.id, "kind": m.kind, "complete": c, "from_time": m.from_time(), "manifest": m, "verdict": verdicts.get(&m.id)}))
            .collect();
        v.extend(divergent.iter().map(|d| {
            serde_json::json!({"id": format!("divergent-{}", d.label), "kind": "divergent", "complete": false, "divergent": d})
        }));
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for d in &divergent {
        println!(
            "divergent-{} ({} at {}, peer {} generation {}): read-only, never shipped or pruned",
            d.label, d.how, d.at, d.peer, d.peer_generation
        );
        for (role, at) in &d.snapshots {
            println!("  {role:<10} {at}");
        }
        if !d.sets.is_empty() {
            println!("  sets the peer never got: {}", d.sets.join(", "));
        }
        if let Some(rp) = d.recovery_point {
            println!(
                "  written here after {} (the peer's recovery point): only in these snapshots",
                format_zmplayredo(rp, &tz)
            );
        }
    }
    if rows.is_empty() {
        println!("no sets on this site ({})", cfg.state_dir.display());
        return Ok(());
    }
    println!(
        "{:<30} {:<8} {:<9} {:<31} members (role: snapshot time)",
        "SET", "KIND", "COMPLETE", "FROM_TIME (local, UTC offset)"
    );
    for (m, c) in rows {
        let members: Vec<String> = m
            .members
            .iter()
            .map(|x| {
                format!(
                    "{}: {}",
                    x.role,
                    x.before.to_zoned(tz.clone()).strftime("%H:%M:%S%.3f")
                )
            })
            .collect();
        println!(
            "{:<30} {:<8} {:<9} {:<31} {}",
            m.id,
            m.kind.as_str(),
            if c { "yes" } else { "NO" },
            snapsite::dr::replay::format_with_offset(m.from_time(), &tz),
            members.join(", ")
        );
        if let Some(v) = verdicts.get(&m.id) {
            if v.verdict == snapsite::base::catalog::signals::Verdict::Suspect {
                let state = match v.cleared_at {
                    Some(t) => format!("suspect, cleared {t}"),
                    None => "SUSPECT".into(),
                };
                println!("  {state} (score {:.2})", v.score);
                for line in v.reason_lines() {
                    println!("    {line}");
                }
            }
        }
    }
    Ok(())
}

/// `sets --clear-suspect ID [--dry-run]`.
pub(super) fn clear_suspect(
    cfg: &Config,
    id: &str,
    dry_run: bool,
) -> anyhow::Result<std::process::ExitCode> {
    println!("{}", snapsite::ops::suspect::clear(cfg, id, dry_run)?);
    Ok(std::process::ExitCode::SUCCESS)
}
