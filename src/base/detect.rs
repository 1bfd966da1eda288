//! `[detect]`: the standby's ransomware signals and the thresholds of a
//! set's verdict (issue 31), parsed and validated here so that `config` can
//! hold them without importing `standby`. Pure: imports nothing of
//! snapsite but the error type and the size parser.
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
//!
//! [detect.volume.mysql]         # one volume's own thresholds (the others: [detect]'s)
//! incompressible_share = 0.95
//! ```

use std::collections::BTreeMap;

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
    /// `[detect.volume.ROLE]`: one volume's own thresholds.
    pub volume: Option<BTreeMap<String, VolumeDetectSection>>,
}

/// `[detect.volume.ROLE]`: the keys of `[detect]` for one volume; what it
/// leaves out is `[detect]`'s value.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VolumeDetectSection {
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
    /// `false`: nothing is measured on receive and every set is clean (in
    /// `[detect.volume.ROLE]`: that volume is measured, never judged).
    pub enabled: bool,
    pub baseline_sets: u32,
    pub growth_factor: f64,
    pub min_changed_bytes: u64,
    pub rewrite_min_bytes: u64,
    pub incompressible_share: f64,
    pub rename_min: u64,
    /// The volumes with thresholds of their own, each resolved whole
    /// (`[detect]`'s values where it left a key out). Empty in an entry.
    pub volumes: BTreeMap<String, DetectSettings>,
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
            volumes: BTreeMap::new(),
        }
    }
}

impl DetectSettings {
    /// The thresholds `role` is judged by: its `[detect.volume.ROLE]`, or
    /// `[detect]`'s.
    pub fn for_volume(&self, role: &str) -> &DetectSettings {
        self.volumes.get(role).unwrap_or(self)
    }
}

fn err(file: &std::path::Path, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{}: detect.{key}: {msg}", file.display()))
}

impl DetectSection {
    /// `[detect]`'s own keys, in the shape of a volume's table.
    fn own_keys(&self) -> VolumeDetectSection {
        VolumeDetectSection {
            enabled: self.enabled,
            baseline_sets: self.baseline_sets,
            growth_factor: self.growth_factor,
            min_changed_bytes: self.min_changed_bytes.clone(),
            rewrite_min_bytes: self.rewrite_min_bytes.clone(),
            incompressible_share: self.incompressible_share,
            rename_min: self.rename_min,
        }
    }
}

/// Validate one table's keys over `d` (the defaults, or `[detect]`'s for
/// a volume); `prefix` is `""` or `volume.ROLE.`, so that every error names
/// its key as written.
fn thresholds(
    file: &std::path::Path,
    prefix: &str,
    s: &VolumeDetectSection,
    d: &DetectSettings,
) -> Result<DetectSettings> {
    let key = |k: &str| format!("{prefix}{k}");
    let size = |k: &str, v: &Option<String>, default: u64| -> Result<u64> {
        match v {
            None => Ok(default),
            Some(v) => crate::base::streamconf::parse_size(v).map_err(|m| err(file, &key(k), m)),
        }
    };
    // A value from the table (or the default), within its range.
    fn within<T: PartialOrd + Copy>(
        v: Option<T>,
        default: T,
        range: std::ops::RangeInclusive<T>,
        fail: impl FnOnce() -> Error,
    ) -> Result<T> {
        let v = v.unwrap_or(default);
        if range.contains(&v) {
            Ok(v)
        } else {
            Err(fail())
        }
    }
    let baseline_sets = within(s.baseline_sets, d.baseline_sets, 3..=100, || {
        err(file, &key("baseline_sets"), "must be between 3 and 100")
    })?;
    let growth_factor = within(s.growth_factor, d.growth_factor, 1.5..=1000.0, || {
        err(file, &key("growth_factor"), "must be between 1.5 and 1000")
    })?;
    let incompressible_share = within(
        s.incompressible_share,
        d.incompressible_share,
        0.1..=1.0,
        || {
            err(
                file,
                &key("incompressible_share"),
                "must be between 0.1 and 1.0",
            )
        },
    )?;
    let rename_min = within(s.rename_min, d.rename_min, 1..=u64::MAX, || {
        err(file, &key("rename_min"), "must be at least 1")
    })?;
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
    for (k, v) in [
        ("min_changed_bytes", min_changed_bytes),
        ("rewrite_min_bytes", rewrite_min_bytes),
    ] {
        if v < 4096 {
            return Err(err(file, &key(k), "must be at least 4KiB"));
        }
    }
    Ok(DetectSettings {
        enabled: s.enabled.unwrap_or(d.enabled),
        baseline_sets,
        growth_factor,
        min_changed_bytes,
        rewrite_min_bytes,
        incompressible_share,
        rename_min,
        volumes: BTreeMap::new(),
    })
}

/// Validate `[detect]` and its `[detect.volume.ROLE]` tables (each ROLE a
/// configured volume's); every error names its key and the file.
pub fn validate(
    file: &std::path::Path,
    s: Option<&DetectSection>,
    roles: &[&str],
) -> Result<DetectSettings> {
    let d = DetectSettings::default();
    let Some(s) = s else { return Ok(d) };
    let mut top = thresholds(file, "", &s.own_keys(), &d)?;
    for (role, v) in s.volume.iter().flatten() {
        let prefix = format!("volume.{role}.");
        if !roles.contains(&role.as_str()) {
            return Err(err(
                file,
                &format!("volume.{role}"),
                format!(
                    "no [[volume]] has the role `{}` (roles: {})",
                    role.escape_debug(),
                    roles.join(", ")
                ),
            ));
        }
        if v.enabled == Some(true) && !top.enabled {
            return Err(err(
                file,
                &format!("{prefix}enabled"),
                "`[detect] enabled = false` measures no volume; a volume's own table can only turn it off",
            ));
        }
        let own = thresholds(file, &prefix, v, &top)?;
        top.volumes.insert(role.clone(), own);
    }
    Ok(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DetectSettings> {
        #[derive(Deserialize)]
        struct File {
            detect: Option<DetectSection>,
        }
        let f: File = toml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        validate(
            std::path::Path::new("/etc/snapsite/b.toml"),
            f.detect.as_ref(),
            &["blob", "mysql", "redolog"],
        )
    }

    #[test]
    fn a_volume_overrides_only_what_it_names() {
        let d = parse(
            "[detect]\nrename_min = 300\ngrowth_factor = 4.0\n\
             [detect.volume.mysql]\nincompressible_share = 0.95\nrewrite_min_bytes = \"1GiB\"\n\
             [detect.volume.redolog]\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(d.rename_min, 300);
        let m = d.for_volume("mysql");
        assert_eq!(m.incompressible_share, 0.95);
        assert_eq!(m.rewrite_min_bytes, 1 << 30);
        // Left out: [detect]'s value, not the built-in default.
        assert_eq!(m.rename_min, 300);
        assert_eq!(m.growth_factor, 4.0);
        assert!(m.enabled);
        assert!(!d.for_volume("redolog").enabled);
        // A volume without a table of its own: [detect] itself.
        assert_eq!(d.for_volume("blob"), &d);
        assert_eq!(d.for_volume("blob").incompressible_share, 0.8);
    }

    #[test]
    fn errors_name_the_key_as_written_and_the_file() {
        for (text, want) in [
            (
                "[detect.volume.mysql]\nrename_min = 0\n",
                "/etc/snapsite/b.toml: detect.volume.mysql.rename_min: must be at least 1",
            ),
            (
                "[detect.volume.blob]\nmin_changed_bytes = \"1KiB\"\n",
                "detect.volume.blob.min_changed_bytes: must be at least 4KiB",
            ),
            (
                "[detect.volume.blob]\nincompressible_share = 2.0\n",
                "detect.volume.blob.incompressible_share: must be between 0.1 and 1.0",
            ),
            (
                "[detect.volume.blob]\nrewrite_min_bytes = \"lots\"\n",
                "detect.volume.blob.rewrite_min_bytes:",
            ),
            (
                "[detect.volume.mail]\nrename_min = 10\n",
                "detect.volume.mail: no [[volume]] has the role `mail` (roles: blob, mysql, redolog)",
            ),
            (
                "[detect]\nenabled = false\n[detect.volume.blob]\nenabled = true\n",
                "detect.volume.blob.enabled:",
            ),
            (
                "[detect]\ngrowth_factor = 1.0\n",
                "detect.growth_factor: must be",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // A key [detect] does not have is refused, naming it.
        let e = parse("[detect.volume.blob]\nrename_minimum = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rename_minimum"), "{e}");
    }
}
