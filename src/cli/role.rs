//! `snapsite role`: this site's recorded role and generation; `--init` records it.

use std::process::ExitCode;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;

use super::RoleArg;

/// `role`: this site's recorded role and generation; `--init` records it once.
pub(super) fn cmd_role(
    cfg: &Config,
    catalog: &Catalog,
    init: Option<RoleArg>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(r) = init {
        let role = match r {
            RoleArg::Primary => snapsite::base::site::Role::Primary,
            RoleArg::Standby => snapsite::base::site::Role::Standby,
        };
        snapsite::base::site::init_role(catalog, role)?;
    }
    let (role, generation) = snapsite::base::site::current_role(cfg, catalog)?;
    let rec = catalog.role_record()?;
    // What each standby last said about itself (its own record; a single
    // [standby]'s is `peer.json`).
    let mut peers = Vec::new();
    for s in &cfg.standbys {
        if let Some(p) = catalog.peer_record_of(&s.name)? {
            peers.push((s.name.clone(), p));
        }
    }
    let peer = match cfg.standbys.first() {
        Some(s) => catalog.peer_record_of(&s.name)?,
        None => catalog.peer_record()?,
    };
    let interrupted = snapsite::ops::status::interrupted(catalog)?;
    let kept = snapsite::dr::kept::kept(cfg, catalog)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "site": cfg.site, "role": role, "generation": generation,
                "record": rec, "peer": peer, "interrupted": interrupted,
                "divergent": kept,
                "peers": peers.iter().map(|(n, p)| serde_json::json!({"standby": n, "peer": p})).collect::<Vec<_>>(),
            }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} is {} in generation {}{}",
        cfg.site,
        role.as_str(),
        generation,
        match &rec {
            Some(r) => format!(" (recorded: {} at {})", r.how, r.since),
            None => " (from the config: no role recorded)".into(),
        }
    );
    let said = |p: &snapsite::base::catalog::PeerRecord| {
        format!(
            "{} said {} in generation {} at {}",
            p.site,
            p.role.map(|r| r.as_str()).unwrap_or("?"),
            p.generation.map(|g| g.to_string()).unwrap_or("?".into()),
            p.seen_at
        )
    };
    if cfg.standbys.len() > 1 {
        for (name, p) in &peers {
            println!("standby {name:<8} {}", said(p));
        }
    } else if let Some(p) = &peer {
        println!("peer {}", said(p));
    }
    for k in &kept {
        println!("{}", snapsite::dr::kept::render(k));
    }
    for i in &interrupted {
        println!("{}", snapsite::base::journal::render(i));
    }
    Ok(ExitCode::SUCCESS)
}
