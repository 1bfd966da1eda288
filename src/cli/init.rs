//! `snapsite init`: both sites' configs from the application's data directories.

use std::path::PathBuf;

use anyhow::Context as _;

use super::Command;

/// `snapsite init`: no config yet; everything from the flags and the machine.
pub(super) fn cmd_init(c: &Command) -> anyhow::Result<()> {
    let Command::Init {
        site,
        peer,
        peer_site,
        volumes,
        redolog,
        out,
        state_dir,
        plugins,
        dry_run,
    } = c
    else {
        unreachable!()
    };
    let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
    let site = match site {
        Some(s) => s.clone(),
        None => short(std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim()),
    };
    let mut vols = Vec::new();
    for v in volumes {
        let (r, p) = v
            .split_once('=')
            .with_context(|| format!("--volume `{v}`: expected ROLE=PATH"))?;
        vols.push((r.to_string(), PathBuf::from(p)));
    }
    let opts = snapsite::ops::init::InitOptions {
        site,
        peer_host: peer.clone(),
        peer_site: peer_site.clone().unwrap_or_else(|| short(peer)),
        volumes: vols,
        redolog: redolog.clone(),
        out_dir: out.clone(),
        exe: std::env::current_exe().context("this program's path")?,
        plugins: plugins.clone(),
        state_dir: state_dir.clone(),
        identity: PathBuf::from("/root/.ssh/snapsite_ed25519"),
    };
    let plan = snapsite::ops::init::init(&opts, *dry_run)?;
    if *dry_run {
        println!("--- {}\n{}", plan.here.0.display(), plan.here.1);
        println!("--- {}\n{}", plan.peer.0.display(), plan.peer.1);
    }
    print!("{}", snapsite::ops::init::render_plan(&plan, *dry_run));
    Ok(())
}
