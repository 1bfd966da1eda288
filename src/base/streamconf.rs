//! `[stream]`: redolog streaming settings (issue 17), parsed and validated
//! here so that `config` can hold them without importing `redostream`
//! (which imports `config`: the module graph stays acyclic, like
//! `retention`). Pure: imports nothing of snapsite but the error type.
//!
//! ```toml
//! [stream]
//! files = ["redo.log", "archive/redo-*.log"]  # globs below the redolog volume
//! flush_interval = "1s"                        # primary: one batch per interval
//! spool_max = "256MiB"                         # standby: spool disk cap
//! enabled = true
//! root = "/opt/zimbra/redolog"                 # optional; default: mountpoint or btrfs source
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::base::error::{Error, Result};

/// The section as written in the file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    pub enabled: Option<bool>,
    pub files: Option<Vec<String>>,
    pub flush_interval: Option<String>,
    pub spool_max: Option<String>,
    pub root: Option<PathBuf>,
    /// Primary with several `[[standby]]`: the one the tail streams to.
    pub to: Option<String>,
}

/// Validated `[stream]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    pub enabled: bool,
    /// Globs relative to the redolog volume's root (`*` and `?` inside one
    /// path component).
    pub files: Vec<String>,
    pub flush_interval: Duration,
    /// Standby: the spool may not grow beyond this many bytes.
    pub spool_max: u64,
    /// Where the redolog volume's files are on this site (primary: the live
    /// files). `None`: the volume's mountpoint, or its btrfs subvolume.
    pub root: Option<PathBuf>,
    /// The standby the redolog tail streams to (`None`: the only one).
    pub to: Option<String>,
}

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_GLOBS: usize = 32;
pub const DEFAULT_SPOOL_MAX: u64 = 256 << 20;

fn err(file: &std::path::Path, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{}: stream.{key}: {msg}", file.display()))
}

/// Validate `[stream]`; every error names its key and the file.
pub fn validate(file: &std::path::Path, s: &StreamSection) -> Result<StreamSettings> {
    let files = s
        .files
        .clone()
        .unwrap_or_else(|| vec!["redo.log".into(), "archive/redo-*.log".into()]);
    if files.is_empty() {
        return Err(err(file, "files", "must name at least one file or glob"));
    }
    if files.len() > MAX_GLOBS {
        return Err(err(file, "files", format!("at most {MAX_GLOBS} globs")));
    }
    for (i, g) in files.iter().enumerate() {
        check_glob(g).map_err(|m| err(file, &format!("files[{i}]"), m))?;
    }
    let flush_interval = match &s.flush_interval {
        None => Duration::from_secs(1),
        Some(v) => {
            let d = humantime::parse_duration(v)
                .map_err(|e| err(file, "flush_interval", format!("`{v}`: {e} (e.g. \"1s\")")))?;
            if d < Duration::from_millis(50) || d > Duration::from_secs(3600) {
                return Err(err(file, "flush_interval", "must be between 50ms and 1h"));
            }
            d
        }
    };
    let spool_max = match &s.spool_max {
        None => DEFAULT_SPOOL_MAX,
        Some(v) => parse_size(v).map_err(|m| err(file, "spool_max", m))?,
    };
    if spool_max < (1 << 20) {
        return Err(err(file, "spool_max", "must be at least 1MiB"));
    }
    if let Some(r) = &s.root {
        let t = r.to_string_lossy();
        if !r.is_absolute()
            || r.components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            || t.chars().any(char::is_control)
        {
            return Err(err(
                file,
                "root",
                format!(
                    "`{}` must be an absolute path without `..`",
                    t.escape_debug()
                ),
            ));
        }
    }
    // `to` is checked against the configured standbys (`check_target`).
    Ok(StreamSettings {
        to: s.to.clone(),
        enabled: s.enabled.unwrap_or(true),
        files,
        flush_interval,
        spool_max,
        root: s.root.clone(),
    })
}

/// `"256MiB"`, `"1GiB"`, `"1048576"`.
pub fn parse_size(v: &str) -> std::result::Result<u64, String> {
    let t = v.trim();
    let (num, mult) = [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(s, m)| t.strip_suffix(s).map(|n| (n.trim(), *m)))
    .unwrap_or((t, 1));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{v}` is not a size (e.g. \"256MiB\", \"1GiB\")"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{v}` is too large"))
}

/// A glob: relative, components without `.`/`..`, no control characters,
/// wildcards `*`/`?` only inside a component (no `**`).
pub fn check_glob(g: &str) -> std::result::Result<(), String> {
    check_name(g)?;
    if g.contains("**") {
        return Err(format!("`{}`: `**` is not supported", g.escape_debug()));
    }
    if g.contains(['[', ']', '{', '}', '\\']) {
        return Err(format!(
            "`{}`: only `*` and `?` are wildcards",
            g.escape_debug()
        ));
    }
    Ok(())
}

/// A relative file name below the redolog root, as it may appear on the
/// wire: bounded, relative, no `.`, `..` or empty components, no control
/// characters.
pub fn check_name(n: &str) -> std::result::Result<(), String> {
    if n.is_empty() || n.len() > MAX_NAME_LEN {
        return Err(format!(
            "a file name must have 1 to {MAX_NAME_LEN} bytes (got {})",
            n.len()
        ));
    }
    if n.chars().any(|c| c.is_control()) {
        return Err(format!(
            "`{}` contains control characters",
            n.escape_debug()
        ));
    }
    if n.starts_with('/') {
        return Err(format!("`{n}` must be relative to the redolog volume"));
    }
    for c in n.split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!(
                "`{n}` must not contain empty, `.` or `..` components"
            ));
        }
    }
    Ok(())
}

/// Does `name` match `glob` (component by component; `*` any run of
/// characters, `?` one character, never across `/`)?
pub fn glob_match(glob: &str, name: &str) -> bool {
    let g: Vec<&str> = glob.split('/').collect();
    let n: Vec<&str> = name.split('/').collect();
    g.len() == n.len() && g.iter().zip(&n).all(|(g, n)| component_match(g, n))
}

pub fn component_match(g: &str, n: &str) -> bool {
    let g: Vec<char> = g.chars().collect();
    let n: Vec<char> = n.chars().collect();
    // Iterative wildcard match with backtracking to the last `*`.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == n[ni]) {
            gi += 1;
            ni += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some((gi, ni));
            gi += 1;
        } else if let Some((sg, sn)) = star {
            gi = sg + 1;
            ni = sn + 1;
            star = Some((sg, sn + 1));
        } else {
            return false;
        }
    }
    while gi < g.len() && g[gi] == '*' {
        gi += 1;
    }
    gi == g.len()
}

/// `stream.to` against the configured standbys (`names`): it must name
/// one, and with several it is required (the tail streams to one).
pub fn check_target(file: &std::path::Path, s: &StreamSettings, names: &[&str]) -> Result<()> {
    match &s.to {
        Some(t) if !names.contains(&t.as_str()) => Err(err(
            file,
            "to",
            format!(
                "no standby named `{}` (configured: {})",
                t.escape_debug(),
                names.join(", ")
            ),
        )),
        None if s.enabled && names.len() > 1 => Err(err(
            file,
            "to",
            format!(
                "{} standbys are configured ({}): name the one the redolog tail streams to (usually the failover target), e.g. to = \"{}\"",
                names.len(),
                names.join(", "),
                names[0]
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("redo.log", "redo.log"));
        assert!(glob_match("archive/redo-*.log", "archive/redo-000001.log"));
        assert!(!glob_match("archive/redo-*.log", "archive/x/redo-1.log"));
        assert!(!glob_match("archive/redo-*.log", "archive/redo-1.txt"));
        assert!(!glob_match("*.log", "archive/redo.log"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "ac"));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let f = std::path::Path::new("/etc/s.toml");
        for (s, key) in [
            (
                StreamSection {
                    files: Some(vec!["../x".into()]),
                    ..Default::default()
                },
                "stream.files[0]",
            ),
            (
                StreamSection {
                    files: Some(vec!["/abs".into()]),
                    ..Default::default()
                },
                "stream.files[0]",
            ),
            (
                StreamSection {
                    flush_interval: Some("1ms".into()),
                    ..Default::default()
                },
                "stream.flush_interval",
            ),
            (
                StreamSection {
                    spool_max: Some("lots".into()),
                    ..Default::default()
                },
                "stream.spool_max",
            ),
            (
                StreamSection {
                    root: Some("rel".into()),
                    ..Default::default()
                },
                "stream.root",
            ),
        ] {
            let e = validate(f, &s).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains("/etc/s.toml"), "{e}");
        }
        let ok = validate(f, &StreamSection::default()).unwrap();
        assert_eq!(ok.flush_interval, Duration::from_secs(1));
        assert_eq!(ok.files.len(), 2);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
    }
}
