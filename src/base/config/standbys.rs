//! `[[standby]]`: several standbys, each with its own name, transport,
//! compression, bandwidth limit and ship interval (issue 29). A single
//! `[standby]` table stays valid: it is one entry named `standby`, whose
//! state keeps the single-standby file names (`standby.json`, `peer.json`).

use serde::Deserialize;

use super::validate::{Ctx, validate_standby};
use super::{RawStandby, Standby};
use crate::base::error::Result;

/// The name of a single `[standby]` table without a `name` key.
pub const DEFAULT_STANDBY_NAME: &str = "standby";

/// Longest standby name: it becomes part of file names, a ZFS hold tag and
/// an LVM tag.
const MAX_NAME: usize = 32;

/// A standby name: 1 to 32 of `[a-z0-9-]`, starting with a letter or digit
/// and not ending with `-`.
pub fn validate_standby_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a standby name (1 to {MAX_NAME} of a-z, 0-9 and -, not starting or ending with -)",
            name.escape_debug()
        ))
    }
}

fn raw_entry(cx: &Ctx, key: &str, v: toml::Value) -> Result<RawStandby> {
    RawStandby::deserialize(v).map_err(|e| cx.err(key, e.to_string().trim()))
}

/// The `standby` key as written: a table (one standby) or an array of
/// tables (`[[standby]]`), validated, names unique.
pub(super) fn parse(cx: &Ctx, v: Option<toml::Value>) -> Result<Vec<Standby>> {
    match v {
        None => Ok(Vec::new()),
        Some(t @ toml::Value::Table(_)) => {
            let raw = raw_entry(cx, "standby", t)?;
            let name = raw
                .name
                .clone()
                .unwrap_or_else(|| DEFAULT_STANDBY_NAME.to_string());
            Ok(vec![validate_standby(cx, "standby", name, raw)?])
        }
        Some(toml::Value::Array(items)) => {
            if items.is_empty() {
                return Err(cx.err(
                    "standby",
                    "an empty list: give at least one [[standby]], or remove the key",
                ));
            }
            let mut out: Vec<Standby> = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let key = format!("standby[{i}]");
                if !item.is_table() {
                    return Err(cx.err(&key, "must be a table ([[standby]])"));
                }
                let raw = raw_entry(cx, &key, item)?;
                let name = raw.name.clone().ok_or_else(|| {
                    cx.err(
                        &format!("{key}.name"),
                        "missing: every [[standby]] needs a name (e.g. name = \"near\")",
                    )
                })?;
                if let Some(j) = out.iter().position(|s| s.name == name) {
                    return Err(cx.err(
                        &format!("{key}.name"),
                        format!(
                            "`{name}` is already the name of standby[{j}]: names must be unique"
                        ),
                    ));
                }
                out.push(validate_standby(cx, &key, name, raw)?);
            }
            Ok(out)
        }
        Some(_) => Err(cx.err(
            "standby",
            "must be a table ([standby]) or a list of tables ([[standby]])",
        )),
    }
}

impl super::Config {
    /// This config as seen by a verb that talks to one peer (`switchover`,
    /// `failback`, `follow`): `standby` becomes the one named by `flag`
    /// (`standbys` stays whole, so nothing else looks removed). Without a
    /// name: the only standby; with several, an error naming them, as the
    /// choice matters. No standby at all is left to the verb to explain.
    pub fn for_peer(&self, name: Option<&str>, verb: &str, flag: &str) -> Result<super::Config> {
        let names = || {
            self.standbys
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let chosen = match name {
            Some(n) => self.standby_named(n).ok_or_else(|| {
                crate::base::error::Error::config(format!(
                    "{}: no standby named `{}` (configured: {})",
                    self.path.display(),
                    n.escape_debug(),
                    names()
                ))
            })?,
            None if self.standbys.len() > 1 => {
                return Err(crate::base::error::Error::config(format!(
                    "{}: {} standbys are configured ({}): `snapsite {verb}` talks to one",
                    self.path.display(),
                    self.standbys.len(),
                    names()
                ))
                .with_hint(format!("name it: `snapsite {verb} {flag} NAME`")));
            }
            None => return Ok(self.clone()),
        };
        let mut cfg = self.clone();
        cfg.standby = Some(chosen.clone());
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::base::config::{Config, Transport};

    const BASE: &str = r#"
site = "a"
state_dir = "/var/lib/snapsite"
[[volume]]
role = "redolog"
backend = "zfs"
source = "tank/redolog"
[replay]
none = true
"#;

    fn parse(standbys: &str) -> crate::base::error::Result<Config> {
        Config::parse(
            &format!("{BASE}{standbys}"),
            Path::new("/etc/snapsite/t.toml"),
        )
    }

    fn err(standbys: &str) -> String {
        parse(standbys).unwrap_err().to_string()
    }

    #[test]
    fn a_single_table_is_one_standby_named_standby() {
        let c = parse("[standby]\ntransport = \"ssh\"\nhost = \"b.example\"\n").unwrap();
        assert_eq!(c.standbys.len(), 1);
        assert_eq!(c.standbys[0].name, "standby");
        assert_eq!(c.standby.as_ref(), Some(&c.standbys[0]));
        assert_eq!(c.standbys[0].every, None);
        let named =
            parse("[standby]\nname = \"near\"\ntransport = \"ssh\"\nhost = \"b\"\n").unwrap();
        assert_eq!(named.standbys[0].name, "near");
        assert!(parse("").unwrap().standbys.is_empty());
    }

    #[test]
    fn a_list_keeps_each_standby_its_own_settings() {
        let c = parse(
            r#"
[[standby]]
name = "near"
transport = "ssh"
host = "b.example"
compress = "none"
[[standby]]
name = "far-1"
transport = "ssh"
host = "c.example"
compress = "zstd:7"
bwlimit = "5MiB/s"
every = "1h"
"#,
        )
        .unwrap();
        let names: Vec<&str> = c.standbys.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["near", "far-1"]);
        assert_eq!(c.standby.as_ref().unwrap().name, "near");
        let far = c.standby_named("far-1").unwrap();
        assert_eq!(far.every, Some(Duration::from_secs(3600)));
        assert!(!far.bwlimit.is_unlimited());
        assert!(c.standby_named("near").unwrap().bwlimit.is_unlimited());
        assert!(matches!(&far.transport, Transport::Ssh(t) if t.host == "c.example"));
        assert!(c.standby_named("nowhere").is_none());
    }

    #[test]
    fn list_errors_name_the_entry_and_key() {
        let entry = |name: &str, extra: &str| {
            format!("[[standby]]\n{name}transport = \"ssh\"\nhost = \"h\"\n{extra}")
        };
        let e = err(&entry("", ""));
        assert!(
            e.contains("standby[0].name") && e.contains("missing"),
            "{e}"
        );
        let e = err(&format!(
            "{}{}",
            entry("name = \"a\"\n", ""),
            entry("name = \"a\"\n", "")
        ));
        assert!(e.contains("standby[1].name") && e.contains("unique"), "{e}");
        for bad in ["A", "-a", "a-", "a_b", "a/b", "", "a.b", &"x".repeat(33)] {
            let e = err(&entry(&format!("name = \"{bad}\"\n"), ""));
            assert!(e.contains("standby[0].name"), "{bad}: {e}");
        }
        let e = err(&format!(
            "{}{}",
            entry("name = \"a\"\n", ""),
            entry("name = \"b\"\n", "every = \"soon\"\n")
        ));
        assert!(e.contains("standby[1].every"), "{e}");
        let e = err(&entry("name = \"a\"\n", "compress = \"gzip\"\n"));
        assert!(e.contains("standby[0].compress"), "{e}");
        let e = err(&entry("name = \"a\"\n", "colour = \"red\"\n"));
        assert!(e.contains("standby[0]") && e.contains("colour"), "{e}");
        let top = |kv: &str| {
            Config::parse(&format!("{kv}{BASE}"), Path::new("/etc/snapsite/t.toml"))
                .unwrap_err()
                .to_string()
        };
        let e = top("standby = []\n");
        assert!(e.contains("empty list"), "{e}");
        let e = top("standby = 3\n");
        assert!(e.contains("a table"), "{e}");
        // the single table's keys keep their old names in errors
        let e = err("[standby]\ntransport = \"ssh\"\nhost = \"h\"\ncompress = \"gzip\"\n");
        assert!(e.contains("standby.compress"), "{e}");
    }
}
