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

use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

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

/// `{from_time}` as handed to the replay command.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayTime {
    /// The text handed to the replay command.
    pub text: String,
    /// The instant the text stands for: the one asked for, or an earlier one
    /// when the asked-for local time was ambiguous.
    pub instant: Timestamp,
    /// Why the instant was moved earlier, for the plan and the report.
    pub note: Option<String>,
}

impl TimeFormat {
    /// Does the text carry its UTC offset (so a repeated local hour cannot
    /// make it ambiguous)?
    pub fn carries_offset(&self) -> bool {
        match self {
            TimeFormat::Rfc3339 => true,
            TimeFormat::Zmplayredo => false,
            TimeFormat::Strftime(p) => p.contains("%z") || p.contains(":z") || p.contains("%s"),
        }
    }

    /// Format `t` for the replay command so that the receiver cannot read it
    /// as a later instant than `t`. A local time inside a repeated
    /// (fall-back) hour names two instants, and zmplayredo's parser (Java's
    /// SimpleDateFormat) takes the later one; such a time is replaced by the
    /// last instant before the repeated hour began, and `note` says so.
    pub fn format_for_replay(&self, t: Timestamp, tz: &TimeZone) -> ReplayTime {
        let instant = if self.carries_offset() {
            t
        } else {
            unambiguous_not_later(t, tz)
        };
        let text = self.format(instant, tz);
        let note = (instant != t).then(|| {
            let zone = tz.iana_name().unwrap_or("the local zone");
            format!(
                "the local time {} ({zone}) lies in a repeated (fall-back) hour and names two instants, of which a parser takes the later; from_time moved {:.3} s earlier to {}, the last instant before the repeated hour began",
                format_zmplayredo(t, tz),
                t.duration_since(instant).as_secs_f64(),
                format_zmplayredo(instant, tz),
            )
        });
        ReplayTime {
            text,
            instant,
            note,
        }
    }
}

/// The latest instant not later than `t` whose local time in `tz` names one
/// instant only: `t` itself, unless its local time falls in a repeated
/// (fall-back) stretch; then the last nanosecond before that stretch began.
pub fn unambiguous_not_later(t: Timestamp, tz: &TimeZone) -> Timestamp {
    let mut cur = t;
    // Each round moves before one fold; two folds back to back do not exist
    // in the tz database, a few rounds are more than enough.
    for _ in 0..8 {
        let dt = tz.to_datetime(cur);
        let AmbiguousOffset::Fold { before, after } = tz.to_ambiguous_timestamp(dt).offset() else {
            return cur;
        };
        // The repeated stretch is [transition - len, transition + len) in
        // instants, [transition + after, transition + before) in local time.
        let len = before.duration_since(after).abs();
        let later = after.to_timestamp(dt).unwrap_or(cur);
        let transition = tz
            .preceding(later + SignedDuration::from_nanos(1))
            .next()
            .map(|tr| tr.timestamp())
            .unwrap_or(later);
        let first = transition - len;
        cur = first.min(cur) - SignedDuration::from_nanos(1);
    }
    cur
}

/// `yyyy/MM/dd HH:mm:ss.SSS` in `tz`, milliseconds truncated (never rounded
/// up: a from-time must not move later than the snapshot).
/// `format_zmplayredo` with the UTC offset in effect then (`+01:00`): in a
/// repeated DST hour the local time alone names two instants.
pub fn format_with_offset(t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    format!("{} {}", format_zmplayredo(t, tz), z.strftime("%:z"))
}

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
        self.words_with(|p| match p {
            Piece::Lit(s) => s.clone(),
            Piece::Var(v) => vars.get(v).cloned().unwrap_or_default(),
        })
    }

    /// Each word, its pieces written by `piece` and joined.
    fn words_with(&self, piece: impl Fn(&Piece) -> String) -> Vec<String> {
        self.words
            .iter()
            .map(|pieces| pieces.iter().map(&piece).collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cmd` with a word of each kind: a variable, text around variables and
    /// an escaped brace, a mount.
    pub(super) fn sample_argv(cmd: &str) -> Vec<String> {
        [
            cmd,
            "--fromTime",
            "{from_time}",
            "--x={set_id}/{{lit}}",
            "{mount:mysql}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// The two instants of Berlin's repeated hour (2026-10-25, 02:30 CEST
    /// and 02:30 CET) print alike without the offset, apart with it.
    #[test]
    fn the_offset_tells_the_repeated_dst_hour_apart() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let first = ts("2026-10-25T00:30:00Z");
        let second = ts("2026-10-25T01:30:00Z");
        assert_eq!(
            format_zmplayredo(first, &berlin),
            format_zmplayredo(second, &berlin)
        );
        assert_eq!(
            format_with_offset(first, &berlin),
            "2026/10/25 02:30:00.000 +02:00"
        );
        assert_eq!(
            format_with_offset(second, &berlin),
            "2026/10/25 02:30:00.000 +01:00"
        );
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
        // Fall back 2026-11-01: 01:30 happens twice; both instants render in local time.
        let ny = TimeZone::get("America/New_York").unwrap();
        for (utc, local) in [
            ("2026-03-08T06:59:59.500Z", "2026/03/08 01:59:59.500"),
            ("2026-03-08T07:00:00.000Z", "2026/03/08 03:00:00.000"),
            ("2026-11-01T05:30:00Z", "2026/11/01 01:30:00.000"),
            ("2026-11-01T06:30:00Z", "2026/11/01 01:30:00.000"),
        ] {
            assert_eq!(format_zmplayredo(ts(utc), &ny), local, "{utc}");
        }
    }

    /// Every format, across every transition of 2026 in zones with 1 h,
    /// 30 min and no DST shifts: the text names one local instant only, and
    /// even read pessimistically (the later of two) it is never later than
    /// the instant asked for, and never much earlier.
    #[test]
    fn replay_time_is_unambiguous_and_never_later_across_transitions() {
        let formats = [
            (TimeFormat::Zmplayredo, "%Y/%m/%d %H:%M:%S%.f"),
            (TimeFormat::Rfc3339, ""),
            (
                TimeFormat::parse("%Y/%m/%d %H:%M:%S").unwrap(),
                "%Y/%m/%d %H:%M:%S",
            ),
            (
                TimeFormat::parse("%Y/%m/%d-%H:%M:%S-%3f").unwrap(),
                "%Y/%m/%d-%H:%M:%S-%3f",
            ),
            (TimeFormat::parse("%Y%m%d.%H%M%S").unwrap(), "%Y%m%d.%H%M%S"),
            (
                TimeFormat::parse("%Y-%m-%dT%H:%M:%S%.3f%:z").unwrap(),
                "%Y-%m-%dT%H:%M:%S%.f%:z",
            ),
        ];
        let zones = [
            ("America/New_York", 2),
            ("Europe/Berlin", 2),
            ("Australia/Lord_Howe", 2),
            ("Australia/Sydney", 2),
            ("Asia/Tokyo", 0),
            ("UTC", 0),
        ];
        let (y0, y1) = (ts("2026-01-01T00:00:00Z"), ts("2027-01-01T00:00:00Z"));
        let mut adjusted = 0;
        for (name, n_transitions) in zones {
            let tz = TimeZone::get(name).unwrap();
            let transitions: Vec<Timestamp> = tz
                .following(y0)
                .map(|tr| tr.timestamp())
                .take_while(|t| *t < y1)
                .collect();
            assert_eq!(transitions.len(), n_transitions, "{name}");
            // Around every transition, and around two ordinary moments.
            let centres: Vec<Timestamp> = transitions
                .iter()
                .copied()
                .chain([ts("2026-06-15T12:00:00Z"), ts("2026-12-20T01:30:00Z")])
                .collect();
            for c in centres {
                let mut samples: Vec<Timestamp> = (-36..=36)
                    .map(|i| c + SignedDuration::from_secs(i * 5 * 60 + 7))
                    .collect();
                for ns in [
                    -3_600_000_000_001i64,
                    -1_800_000_000_000,
                    -1,
                    0,
                    1,
                    1_799_999_999_999,
                ] {
                    samples.push(c + SignedDuration::from_nanos(ns));
                }
                for t in samples {
                    for (f, pattern) in &formats {
                        let rt = f.format_for_replay(t, &tz);
                        assert!(rt.instant <= t, "{name} {t}");
                        let read = if *f == TimeFormat::Rfc3339 {
                            rt.text.parse::<Timestamp>().unwrap()
                        } else {
                            let parsed = jiff::fmt::strtime::parse(pattern, &rt.text).unwrap();
                            if f.carries_offset() {
                                parsed.to_timestamp().unwrap()
                            } else {
                                let dt = parsed.to_datetime().unwrap();
                                let amb = tz.to_ambiguous_timestamp(dt);
                                assert!(
                                    !amb.is_ambiguous(),
                                    "{name}: `{}` for {t} names two instants",
                                    rt.text
                                );
                                amb.later().unwrap()
                            }
                        };
                        assert!(
                            read <= t,
                            "{name} {f:?}: `{}` reads as {read}, later than {t}",
                            rt.text
                        );
                        let early = t.duration_since(read);
                        match &rt.note {
                            None => {
                                assert_eq!(rt.instant, t);
                                assert!(
                                    early < SignedDuration::from_secs(1),
                                    "{name} {f:?} {t}: {early:?}"
                                );
                            }
                            Some(note) => {
                                adjusted += 1;
                                assert!(note.contains("repeated"), "{note}");
                                // At most both occurrences of the repeated
                                // hour (an instant late in the second one
                                // moves before the first), plus truncation.
                                assert!(
                                    early <= SignedDuration::from_secs(2 * 3600 + 1),
                                    "{name} {f:?} {t}: {early:?}"
                                );
                            }
                        }
                    }
                }
            }
        }
        assert!(adjusted > 0, "some samples fell in a repeated hour");
    }

    #[test]
    fn repeated_hour_examples() {
        let z = TimeFormat::Zmplayredo;
        let ny = TimeZone::get("America/New_York").unwrap();
        // 01:30 happens twice on 2026-11-01; both become 00:59:59.999 EDT.
        for t in ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"] {
            let rt = z.format_for_replay(ts(t), &ny);
            assert_eq!(rt.text, "2026/11/01 00:59:59.999", "{t}");
            assert!(rt.note.unwrap().contains("America/New_York"));
        }
        // Just before and just after the repeated hour: untouched.
        let rt = z.format_for_replay(ts("2026-11-01T04:59:59.5Z"), &ny);
        assert_eq!(
            (rt.text.as_str(), rt.note),
            ("2026/11/01 00:59:59.500", None)
        );
        let rt = z.format_for_replay(ts("2026-11-01T07:00:00Z"), &ny);
        assert_eq!(
            (rt.text.as_str(), rt.note),
            ("2026/11/01 02:00:00.000", None)
        );
        // Spring forward: no local time is repeated, nothing moves.
        let rt = z.format_for_replay(ts("2026-03-08T07:00:00Z"), &ny);
        assert_eq!(
            (rt.text.as_str(), rt.note),
            ("2026/03/08 03:00:00.000", None)
        );
        // Lord Howe falls back 30 minutes (02:00 +11 -> 01:30 +10:30) on 2026-04-05.
        let lh = TimeZone::get("Australia/Lord_Howe").unwrap();
        let rt = z.format_for_replay(ts("2026-04-04T14:50:00Z"), &lh); // 01:50 +10:30
        assert_eq!(rt.text, "2026/04/05 01:29:59.999");
        assert_eq!(rt.instant, ts("2026-04-04T14:29:59.999999999Z"));
        // Berlin 2026-10-25: 02:00-03:00 twice.
        let be = TimeZone::get("Europe/Berlin").unwrap();
        let rt = z.format_for_replay(ts("2026-10-25T01:15:00Z"), &be); // 02:15 CET
        assert_eq!(rt.text, "2026/10/25 01:59:59.999");
        // RFC 3339 carries the offset: never moved.
        let rt = TimeFormat::Rfc3339.format_for_replay(ts("2026-11-01T05:30:00Z"), &ny);
        assert_eq!(
            (rt.text.as_str(), rt.note),
            ("2026-11-01T05:30:00.000Z", None)
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
        let argv = sample_argv("zmplayredo");
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
        f.write_str(&crate::base::cmd::display_argv(&argv))
    }
}

impl Template {
    /// The words as written in the config (placeholders unexpanded).
    pub fn argv(&self) -> Vec<String> {
        self.words_with(|p| match p {
            Piece::Lit(s) => s.replace('{', "{{").replace('}', "}}"),
            Piece::Var(v) => format!("{{{v}}}"),
        })
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
        let argv = super::tests::sample_argv("/opt/zimbra/bin/zmplayredo");
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
