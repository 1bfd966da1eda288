//! `snapsite sets`: list this site's snapshot sets (and divergent data kept by failback).

use anyhow::Context as _;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::dr::replay::format_zmplayredo;

pub(super) fn sets(
    cfg: &Config,
    catalog: &Catalog,
    json: bool,
    last: Option<usize>,
) -> anyhow::Result<()> {
    if last == Some(0) {
        anyhow::bail!("sets --last 0: nothing to list (give N of 1 or more)");
    }
    let (site, rows) = match last {
        None => {
            let site = snapsite::base::site::Site::open(cfg).context("listing snapshots")?;
            let rows = rows_of(&site, site.manifests());
            (site, rows)
        }
        Some(n) => newest(cfg, catalog, n).context("listing snapshots")?,
    };
    let tz = jiff::tz::TimeZone::system();
    // Data this site kept when it stopped being primary (failback, switchover).
    let divergent = snapsite::dr::failback::divergent_records(&site.catalog)?;
    let verdicts: std::collections::BTreeMap<String, _> = if last.is_some() {
        // The listed sets' own files, whatever they say.
        let mut own = Vec::new();
        for (m, _) in &rows {
            own.extend(site.catalog.verdict(&m.id)?);
        }
        own
    } else if json {
        site.catalog.verdicts()?
    } else {
        suspect_verdicts(&site.catalog)?
    }
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

/// A listed set and whether it is usable (complete here; on a standby
/// committed).
type Row = (snapsite::base::model::Manifest, bool);

/// `sets --last N`: the newest `n` sets, oldest first, with the site that
/// knows them. From `sets.summary` when it is valid and its tail holds
/// them (each manifest used only while its file keeps the stamp
/// recorded; each member looked up on the storage by name, one call per
/// volume): what this costs does not grow with the history. Otherwise the
/// site is read whole and its newest `n` are taken.
fn newest<'a>(
    cfg: &'a Config,
    catalog: &Catalog,
    n: usize,
) -> snapsite::base::error::Result<(snapsite::base::site::Site<'a>, Vec<Row>)> {
    use snapsite::base::site::Site;
    if let Some(s) = catalog.summary() {
        let want = n.min(s.total());
        let mut ms = Vec::with_capacity(want);
        if want <= s.tail.len() {
            for m in s.newest(catalog).take(want) {
                match m {
                    Ok(m) => ms.push(m),
                    // A manifest changed since: read whole.
                    Err(_) => break,
                }
            }
        }
        if ms.len() == want {
            ms.reverse();
            let stores = snapsite::backend::Stores::open(cfg);
            let mut ask: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for m in &ms {
                for mem in &m.members {
                    if stores.find(&mem.role).is_some() {
                        ask.entry(mem.role.as_str())
                            .or_default()
                            .push(mem.snapshot.as_str());
                    }
                }
            }
            let mut local = std::collections::BTreeMap::new();
            for (role, names) in &ask {
                let found = stores.get(role)?.present(names)?;
                let mut here: Vec<String> = names
                    .iter()
                    .zip(found)
                    .filter(|(_, yes)| *yes)
                    .map(|(n, _)| n.to_string())
                    .collect();
                here.sort();
                here.dedup();
                local.insert(role.to_string(), here);
            }
            let (role, generation) = snapsite::base::site::current_role(cfg, catalog)?;
            let mut site = Site::from_parts(cfg, Catalog::new(&cfg.state_dir), stores, ms, local);
            site.role = role;
            site.generation = generation;
            let rows = rows_of(&site, site.manifests());
            return Ok((site, rows));
        }
    }
    let before = catalog.sets_dir_stamp();
    let site = Site::open(cfg)?;
    site.catalog.summary_rebuilt(before, site.manifests());
    let all = site.manifests();
    let rows = rows_of(&site, &all[all.len().saturating_sub(n)..]);
    Ok((site, rows))
}

/// Each of `ms` with whether `site` can use it.
fn rows_of(site: &snapsite::base::site::Site, ms: &[snapsite::base::model::Manifest]) -> Vec<Row> {
    ms.iter().map(|m| (m.clone(), site.is_usable(m))).collect()
}

/// The verdicts the listing prints (judged suspect, cleared or not): the
/// files of the sets `verdicts.summary` calls suspect or cleared, when it
/// matches the files (names and stamps, see
/// `Catalog::checked_verdict_lines`); else every verdict file. A clean
/// verdict prints nothing, so its file need not be parsed.
fn suspect_verdicts(
    catalog: &Catalog,
) -> anyhow::Result<Vec<snapsite::base::catalog::signals::SetVerdict>> {
    use snapsite::base::catalog::verdict_summary::Judged;
    let Some(lines) = catalog.checked_verdict_lines() else {
        return Ok(catalog.verdicts()?);
    };
    let mut out = Vec::new();
    for l in lines.iter().filter(|l| l.judged != Judged::Clean) {
        // Gone since the check, or unreadable: as `verdicts()`, left out.
        if let Some(v) = catalog.verdict(&l.set_id).ok().flatten() {
            out.push(v);
        }
    }
    Ok(out)
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
