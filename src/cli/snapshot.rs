//! `snapsite snapshot`: take one snapshot set now.

use std::process::ExitCode;
use std::time::Duration;

use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::base::model::SetKind;
use snapsite::dr::replay::format_zmplayredo;
use snapsite::primary::coordinator;

/// `snapshot`: take one set now.
pub(super) fn cmd_snapshot(
    cfg: &Config,
    catalog: &Catalog,
    redolog: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let tz = jiff::tz::TimeZone::system();
    let _lock = catalog.lock("snapshot", Duration::from_secs(600))?;
    let kind = if redolog {
        SetKind::Redolog
    } else {
        SetKind::Full
    };
    let m = coordinator::take_set(cfg, catalog, kind)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!("{}", m.id);
        eprintln!(
            "{} set {}: {} member(s), from_time {}, skew {} ms",
            m.kind.as_str(),
            m.id,
            m.members.len(),
            format_zmplayredo(m.from_time(), &tz),
            m.skew().as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}
