//! `[detect]`: the standby's ransomware signals and the thresholds of a
//! set's verdict (issue 31), parsed and validated here so that `config` can
//! hold them without importing `standby`. Pure: imports nothing of
//! snapsite but the error type.
//!
//! ```toml
//! [detect]
//! enabled = true
//! baseline_sets = 8             # the rolling baseline: median of this many earlier transfers
//! growth_factor = 5.0           # changed bytes this many times the baseline ...
//! min_changed_bytes = "256MiB"  # ... and at least this much, mostly incompressible
//! rewrite_min_bytes = "64MiB"   # incompressible data written into files that existed before
//! incompressible_share = 0.8    # share of sampled 4 KiB blocks zstd cannot shrink
//! rename_min = 200              # renames of existing files that change their extension
//! ```

use serde::Deserialize;

use crate::base::error::{Error, Result};

/// The section as written in the file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DetectSection {
    pub enabled: Option<bool>,
    pub baseline_sets: Option<u32>,
    pub growth_factor: Option<f64>,
    pub min_changed_bytes: Option<String>,
    pub rewrite_min_bytes: Option<String>,
    pub incompressible_share: Option<f64>,
    pub rename_min: Option<u64>,
}

/// Validated `[detect]` (defaults when the section is absent).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSettings {
    /// `false`: nothing is measured on receive and every set is clean.
    pub enabled: bool,
    pub baseline_sets: u32,
    pub growth_factor: f64,
    pub min_changed_bytes: u64,
    pub rewrite_min_bytes: u64,
    pub incompressible_share: f64,
    pub rename_min: u64,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectSettings {
            enabled: true,
            baseline_sets: 8,
            growth_factor: 5.0,
            min_changed_bytes: 256 << 20,
            rewrite_min_bytes: 64 << 20,
            incompressible_share: 0.8,
            rename_min: 200,
        }
    }
}

fn err(file: &std::path::Path, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{}: detect.{key}: {msg}", file.display()))
}

/// Validate `[detect]`; every error names its key and the file.
pub fn validate(file: &std::path::Path, s: Option<&DetectSection>) -> Result<DetectSettings> {
    let d = DetectSettings::default();
    let Some(s) = s else { return Ok(d) };
    let size = |key: &str, v: &Option<String>, default: u64| -> Result<u64> {
        match v {
            None => Ok(default),
            Some(v) => crate::base::streamconf::parse_size(v).map_err(|m| err(file, key, m)),
        }
    };
    let baseline_sets = s.baseline_sets.unwrap_or(d.baseline_sets);
    if !(3..=100).contains(&baseline_sets) {
        return Err(err(file, "baseline_sets", "must be between 3 and 100"));
    }
    let growth_factor = s.growth_factor.unwrap_or(d.growth_factor);
    if !(1.5..=1000.0).contains(&growth_factor) {
        return Err(err(file, "growth_factor", "must be between 1.5 and 1000"));
    }
    let incompressible_share = s.incompressible_share.unwrap_or(d.incompressible_share);
    if !(0.1..=1.0).contains(&incompressible_share) {
        return Err(err(
            file,
            "incompressible_share",
            "must be between 0.1 and 1.0",
        ));
    }
    let rename_min = s.rename_min.unwrap_or(d.rename_min);
    if rename_min < 1 {
        return Err(err(file, "rename_min", "must be at least 1"));
    }
    let min_changed_bytes = size(
        "min_changed_bytes",
        &s.min_changed_bytes,
        d.min_changed_bytes,
    )?;
    let rewrite_min_bytes = size(
        "rewrite_min_bytes",
        &s.rewrite_min_bytes,
        d.rewrite_min_bytes,
    )?;
    for (key, v) in [
        ("min_changed_bytes", min_changed_bytes),
        ("rewrite_min_bytes", rewrite_min_bytes),
    ] {
        if v < 4096 {
            return Err(err(file, key, "must be at least 4KiB"));
        }
    }
    Ok(DetectSettings {
        enabled: s.enabled.unwrap_or(true),
        baseline_sets,
        growth_factor,
        min_changed_bytes,
        rewrite_min_bytes,
        incompressible_share,
        rename_min,
    })
}
