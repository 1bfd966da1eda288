//! `--fromTime` the way zmplayredo reads it: strictly one of Zimbra's
//! formats, in the local time zone (`TZ` honoured). The admin guide's
//! `HH:mm:ss:SSS` (a colon before the milliseconds) is rejected, as Zimbra
//! rejects it. RFC 3339 with an offset is accepted too, for scripts.

use anyhow::{Result, bail};
use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

/// The accepted shapes: `Y M D H m s S` stand for digits, anything else must
/// match literally.
pub const FORMATS: &[&str] = &[
    "YYYY/MM/DD HH:mm:ss",
    "YYYY/MM/DD HH:mm:ss SSS",
    "YYYY/MM/DD HH:mm:ss.SSS",
    "YYYY/MM/DD-HH:mm:ss-SSS",
    "YYYY/MM/DD-HH:mm:ss",
    "YYYYMMDD.HHmmss",
    "YYYYMMDD.HHmmss.SSS",
    "YYYYMMDDHHmmss",
    "YYYYMMDDHHmmssSSS",
];

fn match_shape(shape: &str, s: &str) -> Option<DateTime> {
    if shape.len() != s.len() {
        return None;
    }
    let mut fields: [u32; 7] = [0; 7];
    for (p, c) in shape.chars().zip(s.chars()) {
        let slot = match p {
            'Y' => 0,
            'M' => 1,
            'D' => 2,
            'H' => 3,
            'm' => 4,
            's' => 5,
            'S' => 6,
            lit => {
                if lit != c {
                    return None;
                }
                continue;
            }
        };
        fields[slot] = fields[slot] * 10 + c.to_digit(10)?;
    }
    let [y, mo, d, h, mi, sec, ms] = fields;
    DateTime::new(
        i16::try_from(y).ok()?,
        i8::try_from(mo).ok()?,
        i8::try_from(d).ok()?,
        i8::try_from(h).ok()?,
        i8::try_from(mi).ok()?,
        i8::try_from(sec).ok()?,
        i32::try_from(ms).ok()? * 1_000_000,
    )
    .ok()
}

/// Parse `s` in `tz`. In a DST fold the earlier instant wins: replaying a
/// little too much is harmless, too little loses mail.
pub fn parse(s: &str, tz: &TimeZone) -> Result<Timestamp> {
    for shape in FORMATS {
        if let Some(dt) = match_shape(shape, s) {
            let zoned = tz
                .to_ambiguous_zoned(dt)
                .earlier()
                .map_err(|e| anyhow::anyhow!("--fromTime `{s}`: {e}"))?;
            return Ok(zoned.timestamp());
        }
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let hint = if s.len() == 23 && s.as_bytes()[19] == b':' {
        " (a colon before the milliseconds is not accepted: write `HH:mm:ss.SSS`)"
    } else {
        ""
    };
    bail!(
        "--fromTime `{s}` is not a zmplayredo time{hint}; accepted: {}",
        FORMATS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_zimbra_shape() {
        let tz = TimeZone::UTC;
        let want = utc("2026-11-27T08:00:05.123Z");
        for s in [
            "2026/11/27 08:00:05.123",
            "2026/11/27 08:00:05 123",
            "2026/11/27-08:00:05-123",
            "20261127.080005.123",
            "20261127080005123",
        ] {
            assert_eq!(parse(s, &tz).unwrap(), want, "{s}");
        }
        let whole = utc("2026-11-27T08:00:05Z");
        for s in [
            "2026/11/27 08:00:05",
            "2026/11/27-08:00:05",
            "20261127.080005",
            "20261127080005",
        ] {
            assert_eq!(parse(s, &tz).unwrap(), whole, "{s}");
        }
    }

    #[test]
    fn local_zone_and_dst_fold() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            parse("2026/11/27 09:00:00.000", &berlin).unwrap(),
            utc("2026-11-27T08:00:00Z")
        );
        // 2026-10-25 02:30 happens twice in Berlin: take the earlier one.
        assert_eq!(
            parse("2026/10/25 02:30:00.000", &berlin).unwrap(),
            utc("2026-10-25T00:30:00Z")
        );
    }

    #[test]
    fn guide_colon_form_and_garbage_are_rejected() {
        let e = parse("2026/11/27 08:00:05:123", &TimeZone::UTC)
            .unwrap_err()
            .to_string();
        assert!(e.contains("colon before the milliseconds"), "{e}");
        assert!(parse("2026/13/27 08:00:05", &TimeZone::UTC).is_err());
        assert!(parse("yesterday", &TimeZone::UTC).is_err());
    }
}
