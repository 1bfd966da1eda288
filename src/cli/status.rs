//! `snapsite status`: how far behind the standby is (Nagios exit code, text,
//! JSON, Prometheus).

use std::path::PathBuf;
use std::process::ExitCode;

use snapsite::base::config::Config;

/// `status`: Nagios-style exit code, text or JSON, Prometheus file.
pub(super) fn cmd_status(
    cfg: &Config,
    json: bool,
    prometheus: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let tz = jiff::tz::TimeZone::system();
    let s = match snapsite::ops::status::gather(cfg, snapsite::base::model::now()) {
        Ok(s) => s,
        Err(e) => {
            // Nagios: 3 = UNKNOWN
            println!("snapsite UNKNOWN - {}: {e}", cfg.site);
            return Ok(ExitCode::from(3));
        }
    };
    if let Some(p) = cfg.prometheus_path(prometheus.as_deref())? {
        snapsite::ops::status::write_prometheus(&s, &p)?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", snapsite::ops::status::render_text(&s, &tz));
    }
    Ok(ExitCode::from(s.level as u8))
}
