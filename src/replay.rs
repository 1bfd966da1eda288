//! The replay command: an argv template (never a shell string) and the time
//! formats the redo log player accepts.
//!
//! zmplayredo parses `--fromTime` strictly, in the server's local zone, with
//! one of: `yyyy/MM/dd HH:mm:ss`, `yyyy/MM/dd HH:mm:ss SSS`,
//! `yyyy/MM/dd HH:mm:ss.SSS`, `yyyy/MM/dd-HH:mm:ss-SSS`, `yyyy/MM/dd-HH:mm:ss`,
//! `yyyyMMdd.HHmmss[.SSS]`, `yyyyMMddHHmmss[SSS]`. The admin guide's
//! `HH:mm:ss:SSS` (colon before the milliseconds) is rejected by it, so the
//! default is `yyyy/MM/dd HH:mm:ss.SSS`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;

#[derive(Debug, Clone, PartialEq)]
pub enum TimeFormat {
    /// `yyyy/MM/dd HH:mm:ss.SSS`, local time.
    Zmplayredo,
    /// RFC 3339 in UTC, e.g. `2026-11-27T08:00:00.123Z`.
    Rfc3339,
    /// Any strftime pattern (jiff syntax), in the configured zone.
    Strftime(String),
}

impl TimeFormat {
    pub fn parse(s: &str) -> Result<TimeFormat, String> {
        match s {
            "zmplayredo" => Ok(TimeFormat::Zmplayredo),
            "rfc3339" => Ok(TimeFormat::Rfc3339),
            p if p.contains('%') => {
                // Try it once so a bad pattern fails at load, not at failover.
                let probe = Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC);
                jiff::fmt::strtime::format(p, &probe)
                    .map_err(|e| format!("`{p}` is not a valid strftime pattern: {e}"))?;
                Ok(TimeFormat::Strftime(p.to_string()))
            }
            other => Err(format!(
                "`{other}`: use \"zmplayredo\", \"rfc3339\" or a strftime pattern such as \"%Y/%m/%d %H:%M:%S%.3f\""
            )),
        }
    }

    pub fn format(&self, t: Timestamp, tz: &TimeZone) -> String {
        match self {
            TimeFormat::Zmplayredo => format_zmplayredo(t, tz),
            TimeFormat::Rfc3339 => format!("{:.3}", t),
            TimeFormat::Strftime(p) => {
                jiff::fmt::strtime::format(p.as_str(), &t.to_zoned(tz.clone()))
                    .expect("validated at load")
            }
        }
    }
}

/// `yyyy/MM/dd HH:mm:ss.SSS` in `tz`, milliseconds truncated (never rounded
/// up: a from-time must not move later than the snapshot).
pub fn format_zmplayredo(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:03}",
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute(),
        z.second(),
        z.millisecond()
    )
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(String),
    Var(String),
}

/// An argv template: each word may hold `{placeholders}`; substitution
/// happens per word, so a value can never split into two arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    words: Vec<Vec<Piece>>,
}

pub const PLACEHOLDERS: &[&str] = &[
    "from_time",
    "from_time_utc",
    "set_id",
    "redolog_set_id",
    "redolog_time",
];

impl Template {
    /// `roles` are the configured volume roles, for `{mount:ROLE}`.
    pub fn parse(argv: &[String], roles: &[&str]) -> Result<Template, String> {
        if argv.is_empty() {
            return Err("the command is empty".into());
        }
        let mut words = Vec::new();
        for (i, w) in argv.iter().enumerate() {
            let mut pieces = Vec::new();
            let mut lit = String::new();
            let mut chars = w.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '{' if chars.peek() == Some(&'{') => {
                        chars.next();
                        lit.push('{');
                    }
                    '}' if chars.peek() == Some(&'}') => {
                        chars.next();
                        lit.push('}');
                    }
                    '{' => {
                        let mut name = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(c) => name.push(c),
                                None => return Err(format!("word {i} `{w}`: unclosed `{{`")),
                            }
                        }
                        let known = PLACEHOLDERS.contains(&name.as_str())
                            || name
                                .strip_prefix("mount:")
                                .is_some_and(|r| roles.contains(&r));
                        if !known {
                            return Err(format!(
                                "word {i} `{w}`: unknown placeholder `{{{name}}}` (known: {}, mount:ROLE with ROLE one of {})",
                                PLACEHOLDERS
                                    .iter()
                                    .map(|p| format!("{{{p}}}"))
                                    .collect::<Vec<_>>()
                                    .join(" "),
                                roles.join(", ")
                            ));
                        }
                        if !lit.is_empty() {
                            pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                        }
                        pieces.push(Piece::Var(name));
                    }
                    '}' => return Err(format!("word {i} `{w}`: stray `}}` (write `}}}}`)")),
                    c => lit.push(c),
                }
            }
            if !lit.is_empty() || pieces.is_empty() {
                pieces.push(Piece::Lit(lit));
            }
            words.push(pieces);
        }
        Ok(Template { words })
    }

    pub fn render(&self, vars: &BTreeMap<String, String>) -> Vec<String> {
        self.words
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Lit(s) => s.clone(),
                        Piece::Var(v) => vars.get(v).cloned().unwrap_or_default(),
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn zmplayredo_format_in_utc_and_zones() {
        let t = ts("2026-11-27T08:00:00.123456Z");
        assert_eq!(
            format_zmplayredo(t, &TimeZone::UTC),
            "2026/11/27 08:00:00.123"
        );
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(format_zmplayredo(t, &berlin), "2026/11/27 09:00:00.123");
        // Truncated, never rounded up past the snapshot time.
        assert_eq!(
            format_zmplayredo(ts("2026-12-31T23:59:59.9999Z"), &TimeZone::UTC),
            "2026/12/31 23:59:59.999"
        );
    }

    #[test]
    fn zmplayredo_format_across_dst_change() {
        // US spring forward 2026-03-08 02:00 EST -> 03:00 EDT.
        let ny = TimeZone::get("America/New_York").unwrap();
        assert_eq!(
            format_zmplayredo(ts("2026-03-08T06:59:59.500Z"), &ny),
            "2026/03/08 01:59:59.500"
        );
        assert_eq!(
            format_zmplayredo(ts("2026-03-08T07:00:00.000Z"), &ny),
            "2026/03/08 03:00:00.000"
        );
        // Fall back 2026-11-01: 01:30 happens twice; both instants render in local time.
        assert_eq!(
            format_zmplayredo(ts("2026-11-01T05:30:00Z"), &ny),
            "2026/11/01 01:30:00.000"
        );
        assert_eq!(
            format_zmplayredo(ts("2026-11-01T06:30:00Z"), &ny),
            "2026/11/01 01:30:00.000"
        );
    }

    #[test]
    fn time_format_parsing() {
        assert_eq!(
            TimeFormat::parse("zmplayredo").unwrap(),
            TimeFormat::Zmplayredo
        );
        assert!(TimeFormat::parse("yyyy/MM/dd").is_err());
        let f = TimeFormat::parse("%Y%m%d.%H%M%S").unwrap();
        assert_eq!(
            f.format(ts("2026-11-27T08:00:00Z"), &TimeZone::UTC),
            "20261127.080000"
        );
        assert_eq!(
            TimeFormat::Rfc3339.format(ts("2026-11-27T08:00:00.1Z"), &TimeZone::UTC),
            "2026-11-27T08:00:00.100Z"
        );
    }

    #[test]
    fn template_substitutes_per_word() {
        let argv: Vec<String> = [
            "zmplayredo",
            "--fromTime",
            "{from_time}",
            "--x={set_id}/{{lit}}",
            "{mount:mysql}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = Template::parse(&argv, &["mysql"]).unwrap();
        let mut vars = BTreeMap::new();
        vars.insert(
            "from_time".to_string(),
            "2026/11/27 08:00:00.000".to_string(),
        );
        vars.insert("set_id".to_string(), "S; rm -rf /".to_string());
        vars.insert("mount:mysql".to_string(), "/srv/my sql".to_string());
        assert_eq!(
            t.render(&vars),
            vec![
                "zmplayredo",
                "--fromTime",
                "2026/11/27 08:00:00.000",
                "--x=S; rm -rf //{lit}",
                "/srv/my sql"
            ]
        );
        assert!(
            Template::parse(&["x{nope}".to_string()], &[])
                .unwrap_err()
                .contains("{nope}")
        );
        assert!(Template::parse(&["{mount:blob}".to_string()], &["mysql"]).is_err());
        assert!(Template::parse(&["a}".to_string()], &[]).is_err());
        assert!(Template::parse(&[], &[]).is_err());
    }
}

/// The template as a person would type it: each word shell-quoted where
/// needed, placeholders shown as `{from_time}`, literal braces as `{{`/`}}`.
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let argv: Vec<std::ffi::OsString> = self.argv().into_iter().map(Into::into).collect();
        f.write_str(&crate::cmd::display_argv(&argv))
    }
}

impl Template {
    /// The words as written in the config (placeholders unexpanded).
    pub fn argv(&self) -> Vec<String> {
        self.words
            .iter()
            .map(|pieces| {
                pieces
                    .iter()
                    .map(|p| match p {
                        Piece::Lit(s) => s.replace('{', "{{").replace('}', "}}"),
                        Piece::Var(v) => format!("{{{v}}}"),
                    })
                    .collect()
            })
            .collect()
    }

    /// The placeholder names used, in order (`from_time`, `mount:mysql`, ...).
    pub fn placeholders(&self) -> Vec<&str> {
        self.words
            .iter()
            .flatten()
            .filter_map(|p| match p {
                Piece::Var(v) => Some(v.as_str()),
                Piece::Lit(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod display_tests {
    use super::*;

    #[test]
    fn template_displays_as_typed() {
        let argv: Vec<String> = [
            "/opt/zimbra/bin/zmplayredo",
            "--fromTime",
            "{from_time}",
            "--x={set_id}/{{lit}}",
            "{mount:mysql}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let t = Template::parse(&argv, &["mysql"]).unwrap();
        assert_eq!(t.argv(), argv);
        assert_eq!(
            t.to_string(),
            "/opt/zimbra/bin/zmplayredo --fromTime '{from_time}' '--x={set_id}/{{lit}}' '{mount:mysql}'"
        );
        assert_eq!(t.placeholders(), ["from_time", "set_id", "mount:mysql"]);
        // argv() parses back to the same template
        assert_eq!(Template::parse(&t.argv(), &["mysql"]).unwrap(), t);
    }
}
