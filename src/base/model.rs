//! The domain: roles, snapshot set ids, members, manifests and their times.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::base::error::{Error, Result};

/// Manifest format version written by this build (2: `seq`, `generation`).
pub const MANIFEST_FORMAT: u32 = 2;

/// The wall clock. Times are for display and `--fromTime`, never for order
/// (sets are ordered by `seq`). `SNAPSITE_TEST_CLOCK_OFFSET` (e.g. `-1h`)
/// shifts it, so tests can step the clock back without root or libfaketime.
pub fn now() -> Timestamp {
    let t = Timestamp::now();
    match std::env::var("SNAPSITE_TEST_CLOCK_OFFSET") {
        Ok(v) if !v.is_empty() => {
            let (neg, text) = match v.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, v.trim_start_matches('+')),
            };
            match humantime::parse_duration(text) {
                Ok(d) => {
                    let d = SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO);
                    t.checked_add(if neg { -d } else { d }).unwrap_or(t)
                }
                Err(_) => t,
            }
        }
        _ => t,
    }
}

/// Bounds for times that arrive in manifests: anything outside is refused
/// (and never reaches arithmetic that could overflow).
pub fn plausible_time(t: Timestamp) -> bool {
    // 2000-01-01T00:00:00Z ..= before 2200-01-01T00:00:00Z
    const LO: Timestamp = Timestamp::constant(946_684_800, 0);
    const HI: Timestamp = Timestamp::constant(7_258_118_400, 0);
    t >= LO && t < HI
}

/// The largest safety margin a manifest may carry (one day).
pub const MAX_SAFETY_MARGIN_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum SetKind {
    /// One snapshot of every volume, in the configured order.
    Full,
    /// A snapshot of the redolog volume alone.
    Redolog,
}

impl SetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::Full => "full",
            SetKind::Redolog => "redolog",
        }
    }
}

/// A set id doubles as the snapshot name of every member:
/// `20261127T080000.123Z-full`. It sorts by time, carries no colon (btrfs
/// paths, LVM names and ZFS snapshot names all accept it) and says its kind.
pub fn new_set_id(at: Timestamp, kind: SetKind) -> String {
    format!("{}-{}", at.strftime("%Y%m%dT%H%M%S%.3fZ"), kind.as_str())
}

/// A validated set id: `20261127T080000.123Z-full`. Ordered by its time
/// (then kind, then text), never by string comparison. A set id is also
/// the snapshot name of every member of the set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetId {
    text: String,
    time: Timestamp,
    kind: SetKind,
}

impl SetId {
    /// An error names the id and shows the expected form.
    pub fn parse(id: &str) -> Result<SetId> {
        Self::try_parse(id).ok_or_else(|| {
            Error::refused(format!(
                "`{}` is not a snapsite set id (expected e.g. 20261127T080000.000Z-full)",
                wire_str(id)
            ))
        })
    }

    fn try_parse(id: &str) -> Option<SetId> {
        let (time, kind) = id_parts(id)?;
        Some(SetId {
            text: id.to_string(),
            time,
            kind,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
    /// The time in the id (the primary's hybrid clock: display, and the
    /// order of ids from one primary; never the standby's clock).
    pub fn time(&self) -> Timestamp {
        self.time
    }
    pub fn kind(&self) -> SetKind {
        self.kind
    }
}

/// An id's time and kind, without keeping its text: what `SetId::parse`
/// checks.
fn id_parts(id: &str) -> Option<(Timestamp, SetKind)> {
    let (ts, kind) = id.rsplit_once('-')?;
    let kind = match kind {
        "full" => SetKind::Full,
        "redolog" => SetKind::Redolog,
        _ => return None,
    };
    if ts.len() != 20 || !ts.ends_with('Z') {
        return None;
    }
    let time = match id_time_fast(ts) {
        Some(t) => t,
        None => {
            let t = jiff::fmt::strtime::parse("%Y%m%dT%H%M%S%.fZ", ts).ok()?;
            let dt = t.to_datetime().ok()?;
            dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()
        }
    };
    Some((time, kind))
}

/// The kind of `id` when it is a *canonical* set id: exactly
/// `YYYYmmddTHHMMSS.fffZ-full` or `…-redolog`, every field in range (a
/// real day of the proleptic Gregorian calendar, no leap second), the
/// year 0000–9998. Every id `new_set_id` makes from a `plausible_time` is
/// one. Checked by hand: no allocation, no time arithmetic.
///
/// Two canonical ids compare as text exactly as their `SetId`s do (time,
/// then kind, then text): the time is fixed-width digits, most significant
/// first, one text per instant, and after the same time `-full` sorts
/// before `-redolog` as `full` does before `redolog`. Every canonical id
/// parses (`SetId::parse`); an id that parses but is not canonical (the
/// general parser's other forms) is compared by its parsed time.
pub fn canonical_set_id(id: &str) -> Option<SetKind> {
    let b = id.as_bytes();
    let kind = match b.get(20..)? {
        b"-full" => SetKind::Full,
        b"-redolog" => SetKind::Redolog,
        _ => return None,
    };
    if b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    let in_range = year <= 9998
        && (1..=days).contains(&day)
        && num(9..11)? <= 23
        && num(11..13)? <= 59
        && num(13..15)? <= 59
        && num(16..19).is_some();
    in_range.then_some(kind)
}

/// Is `id` a set id (what `SetId::parse` accepts)? A canonical one is
/// recognised without parsing its time.
pub fn is_set_id(id: &str) -> bool {
    set_kind(id).is_some()
}

/// The kind of a set id, `None` when it is not one (as `parse_set_id`).
pub fn set_kind(id: &str) -> Option<SetKind> {
    canonical_set_id(id).or_else(|| id_parts(id).map(|(_, k)| k))
}

/// The `SetId` order of two set ids (time, then kind, then text), `None`
/// when either is not one. Two canonical ids (`canonical_set_id`, every id
/// snapsite makes) are compared as text, without parsing; others by their
/// parsed times.
pub fn cmp_set_ids(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    if canonical_set_id(a).is_some() && canonical_set_id(b).is_some() {
        return Some(a.cmp(b));
    }
    let (ta, ka) = id_parts(a)?;
    let (tb, kb) = id_parts(b)?;
    Some((ta, ka.as_str(), a).cmp(&(tb, kb.as_str(), b)))
}

/// The time of an id's `YYYYmmddTHHMMSS.fffZ` part when it is exactly
/// that (every id snapsite makes): digits read by hand, the date checked by
/// jiff. `None` sends the caller to the general parser. Listings parse
/// every snapshot name, so this is on every command's path.
fn id_time_fast(ts: &str) -> Option<Timestamp> {
    let b = ts.as_bytes();
    if b.len() != 20 || b[8] != b'T' || b[15] != b'.' || b[19] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i32> {
        b[r].iter().try_fold(0i32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i32::from(c - b'0'))
        })
    };
    let dt = jiff::civil::DateTime::new(
        i16::try_from(num(0..4)?).ok()?,
        i8::try_from(num(4..6)?).ok()?,
        i8::try_from(num(6..8)?).ok()?,
        i8::try_from(num(9..11)?).ok()?,
        i8::try_from(num(11..13)?).ok()?,
        i8::try_from(num(13..15)?).ok()?,
        num(16..19)? * 1_000_000,
    )
    .ok()?;
    jiff::tz::Offset::UTC.to_timestamp(dt).ok()
}

impl Ord for SetId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.kind.as_str(), &self.text).cmp(&(
            other.time,
            other.kind.as_str(),
            &other.text,
        ))
    }
}

impl PartialOrd for SetId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for SetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Is `a` an older set id than `b`? Ids that do not parse are never older.
/// Canonical ids (every id snapsite makes) are compared as text.
pub fn older_set(a: &str, b: &str) -> bool {
    cmp_set_ids(a, b) == Some(std::cmp::Ordering::Less)
}

/// Parse a set id back into (time, kind); `None` when it isn't one of ours.
pub fn parse_set_id(id: &str) -> Option<(Timestamp, SetKind)> {
    id_parts(id)
}

pub fn validate_set_id(id: &str) -> Result<()> {
    if is_set_id(id) {
        Ok(())
    } else {
        SetId::parse(id).map(|_| ())
    }
}

/// A name that came over the wire, made safe for a log line or an error:
/// control characters and non-ASCII escaped, at most 80 characters kept.
pub fn wire_str(s: &str) -> String {
    escape_limited(s, 80)
}

/// A message that may contain wire strings (an error text, a reason):
/// escaped like `wire_str`, at most 4000 characters kept.
pub fn wire_text(s: &str) -> String {
    escape_limited(s, 4000)
}

fn escape_limited(s: &str, limit: usize) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i >= limit {
            out.push_str("...");
            break;
        }
        if c.is_ascii_graphic() || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// Roles name volumes in configs, paths and snapshot names: keep them plain.
pub fn validate_role(role: &str) -> std::result::Result<(), String> {
    let ok = !role.is_empty()
        && role.len() <= 32
        && role.as_bytes()[0].is_ascii_lowercase()
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "role `{role}` must be 1-32 characters of a-z, 0-9, `_` or `-`, starting with a letter"
        ))
    }
}

/// What the standby recorded when it received a member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Receipt {
    /// The snapshot the stream was incremental from, if any.
    pub base: Option<String>,
    /// Payload bytes received (the backend's stream, without framing).
    pub bytes: u64,
    /// blake3 of the payload, hex.
    pub blake3: String,
    pub received_at: Timestamp,
    /// Storage id of the received copy (btrfs: its uuid).
    pub storage_id: Option<String>,
    /// The set the snapshot was announced for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_id: Option<String>,
    /// The sender's storage id as announced in `Begin` (and checked by the
    /// backend where the storage records it): the commit must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_storage_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub role: String,
    pub backend: String,
    /// The backend's address of the live data on the primary.
    pub source: String,
    /// Snapshot name (the set id).
    pub snapshot: String,
    /// Storage id on the primary (btrfs uuid, ZFS guid).
    pub storage_id: Option<String>,
    /// Taken just before the snapshot call.
    pub before: Timestamp,
    /// Taken just after the snapshot call returned.
    pub after: Timestamp,
    /// Members sharing a group number were snapshotted in one atomic call.
    pub atomic_group: Option<u32>,
    /// Backend stream options used to ship it (ZFS: raw, compressed...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub send_options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// Set when a quiesce hook (`[hooks]`) covered this member: quiesced,
    /// or taken crash-consistent because the hook failed. Absent: no hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

/// What a quiesce hook achieved for a member (`Member::consistency`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum Consistency {
    /// Every hook covering it held while its snapshot was taken.
    Quiesced,
    /// A hook failed (`on_failure = "crash-consistent"`): the snapshot is
    /// of the running application, recovered by its own crash recovery.
    CrashConsistent { reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub kind: SetKind,
    pub site: String,
    /// Per-site sequence number: the order of sets (never the clock).
    /// Persisted on the primary, never reused, survives clock steps.
    #[serde(default)]
    pub seq: u64,
    /// The site's generation (which primary took it).
    #[serde(default = "default_generation")]
    pub generation: u64,
    pub members: Vec<Member>,
    /// Subtracted from the earliest member time to give `from_time`.
    #[serde(default)]
    pub safety_margin_ms: i64,
    /// Set by the standby when it committed the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Timestamp>,
    /// Set by the standby when it committed the set: its own place for it
    /// in the order of sets (never taken from the wire; see `order_key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_order: Option<StandbyOrder>,
}

/// Where a standby put a set it committed, from values it holds itself:
/// its own generation at the time and its own commit counter. A manifest's
/// `generation` and `seq` are the sender's claims (bounded at commit, see
/// `serve::check_order_claims`); these two decide which committed set is newest.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StandbyOrder {
    /// The standby's own generation when it committed the set (or the
    /// highest its catalog's sets ranked by, if higher: every commit ranks
    /// after everything the standby held before it).
    pub generation: u64,
    /// The standby's commit counter: 1 for its first commit, one more for each after.
    pub commit: u64,
}

/// [`Manifest::order_key`] of a set's fields (also of the catalog's
/// `SetHead`, which has these without the members).
pub fn order_key_of(
    standby_order: Option<StandbyOrder>,
    generation: u64,
    seq: u64,
    id: &str,
) -> (u64, u64, u64, &str) {
    match standby_order {
        Some(o) => (o.generation, o.commit, seq, id),
        None => (generation, 0, seq, id),
    }
}

fn default_generation() -> u64 {
    1
}

impl Member {
    /// A btrfs member `role` (source `/x`) of set `snapshot`, taken at `t`
    /// with nothing else recorded: for manifests built by hand in tests
    /// (change fields with `Member { .., ..Member::plain(..) }`).
    pub fn plain(role: &str, snapshot: &str, t: Timestamp) -> Member {
        Member {
            role: role.into(),
            backend: "btrfs".into(),
            source: "/x".into(),
            snapshot: snapshot.into(),
            storage_id: None,
            before: t,
            after: t,
            atomic_group: None,
            send_options: Vec::new(),
            receipt: None,
            consistency: None,
        }
    }
}

impl Manifest {
    /// Set `id` of `kind` from `site` holding `members`: sequence number 1,
    /// generation 1, no safety margin, not committed. For manifests built
    /// by hand in tests (change fields with `Manifest { .., ..Manifest::plain(..) }`).
    pub fn plain(id: &str, kind: SetKind, site: &str, members: Vec<Member>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: id.into(),
            kind,
            site: site.into(),
            seq: 1,
            generation: 1,
            members,
            safety_margin_ms: 0,
            committed_at: None,
            standby_order: None,
        }
    }

    /// Time from which the redo log must be replayed on top of this set: the
    /// earliest member's before-time minus the safety margin. Replaying a
    /// little too much is harmless; replaying too little loses mail. Never
    /// panics: a margin out of range is clamped to the earliest time
    /// representable (validated manifests never carry one).
    pub fn from_time(&self) -> Timestamp {
        self.from_time_with_margin(self.safety_margin_ms)
    }

    /// `from_time` with another margin (the standby may apply a larger one).
    pub fn from_time_with_margin(&self, margin_ms: i64) -> Timestamp {
        let earliest = self
            .members
            .iter()
            .map(|m| m.before)
            .min()
            .unwrap_or(Timestamp::MIN);
        let margin = SignedDuration::from_millis(margin_ms.clamp(0, MAX_SAFETY_MARGIN_MS));
        earliest.checked_sub(margin).unwrap_or(Timestamp::MIN)
    }

    /// The time the set stands for: when its last member was done.
    pub fn completed_time(&self) -> Timestamp {
        self.members
            .iter()
            .map(|m| m.after)
            .max()
            .unwrap_or(Timestamp::MIN)
    }

    /// Order of sets on a site: generation, then the standby's commit
    /// counter, then sequence, then id. A set this site committed as a
    /// standby ranks by what the standby recorded (`standby_order`: its own
    /// generation and commit counter), never by what the sender claimed, so
    /// no manifest can outrank the sets committed after it. A site's own
    /// sets (and sets committed before `standby_order` existed) rank by
    /// their generation and sequence number; a set committed here ranks
    /// after every set the catalog held when it was committed.
    pub fn order_key(&self) -> (u64, u64, u64, &str) {
        order_key_of(self.standby_order, self.generation, self.seq, &self.id)
    }

    /// Everything about a manifest that can be checked without the site:
    /// id and kind agree, members named after the set, unique roles, times
    /// plausible and in order, margin in range. Errors say which field.
    /// (role, snapshot) of every member.
    pub fn member_snapshots(&self) -> Vec<(&str, &str)> {
        self.members
            .iter()
            .map(|m| (m.role.as_str(), m.snapshot.as_str()))
            .collect()
    }

    pub fn validate_shape(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::refused(format!(
                "set {}: {what}",
                wire_str(&self.id)
            )))
        };
        let Some((_, kind)) = parse_set_id(&self.id) else {
            return bad("not a snapsite set id".into());
        };
        if kind != self.kind {
            return bad(format!(
                "the id says {} but the manifest says {}",
                kind.as_str(),
                self.kind.as_str()
            ));
        }
        if self.format != MANIFEST_FORMAT {
            return bad(format!(
                "manifest format {} (this standby reads {MANIFEST_FORMAT})",
                self.format
            ));
        }
        if self.seq == 0 {
            return bad("no sequence number".into());
        }
        if self.generation == 0 {
            return bad("generation 0".into());
        }
        if !(0..=MAX_SAFETY_MARGIN_MS).contains(&self.safety_margin_ms) {
            return bad(format!(
                "safety_margin_ms {} is outside 0..={MAX_SAFETY_MARGIN_MS}",
                self.safety_margin_ms
            ));
        }
        if self.members.is_empty() {
            return bad("no members".into());
        }
        let mut roles = std::collections::BTreeSet::new();
        for m in &self.members {
            if validate_role(&m.role).is_err() {
                return bad(format!(
                    "member role `{}` is not a valid role",
                    wire_str(&m.role)
                ));
            }
            if !roles.insert(m.role.as_str()) {
                return bad(format!("volume `{}` appears twice", m.role));
            }
            if m.snapshot != self.id {
                return bad(format!(
                    "member `{}` snapshot `{}` is not named after its set",
                    m.role,
                    wire_str(&m.snapshot)
                ));
            }
            if !plausible_time(m.before) || !plausible_time(m.after) {
                return bad(format!("member `{}` has an implausible time", m.role));
            }
            if m.after < m.before {
                return bad(format!("member `{}` ends before it begins", m.role));
            }
            if m.after.duration_since(m.before) > SignedDuration::from_hours(24) {
                return bad(format!("member `{}` took more than a day", m.role));
            }
        }
        if self.skew() > SignedDuration::from_hours(24) {
            return bad("members more than a day apart".into());
        }
        Ok(())
    }

    pub fn member(&self, role: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.role == role)
    }

    /// Largest gap between the members' snapshot moments, bounded from
    /// above: from the earliest start to the latest end. 0 when there is
    /// one moment only — a single member, or every member in one atomic
    /// group (one `zfs snapshot` of several datasets in one pool).
    pub fn skew(&self) -> SignedDuration {
        if self.is_atomic() {
            return SignedDuration::ZERO;
        }
        let first = self.members.iter().map(|m| m.before).min();
        let last = self.members.iter().map(|m| m.after).max();
        match (first, last) {
            (Some(f), Some(l)) => l.duration_since(f),
            _ => SignedDuration::ZERO,
        }
    }

    /// Were all members taken in one moment (one member, or one atomic group)?
    pub fn is_atomic(&self) -> bool {
        match self.members.as_slice() {
            [] | [_] => true,
            [first, rest @ ..] => {
                first.atomic_group.is_some()
                    && rest.iter().all(|m| m.atomic_group == first.atomic_group)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parsed_by_hand_agree_with_the_general_parser() {
        let general = |ts: &str| {
            jiff::fmt::strtime::parse("%Y%m%dT%H%M%S%.fZ", ts)
                .ok()
                .and_then(|t| t.to_datetime().ok())
                .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC).ok())
                .map(|z| z.timestamp())
        };
        for ts in [
            "20261127T080000.000Z",
            "20261231T235959.999Z",
            "20240229T120000.001Z",
            "00010101T000000.000Z",
            "99991231T235959.999Z",
            "20250229T120000.000Z", // no such day
            "20261327T080000.000Z",
            "20261127T246000.000Z",
            "20261127T080060.000Z",
            "2026112xT080000.000Z",
            "20261127 080000.000Z",
            "+2026127T080000.000Z",
        ] {
            if let Some(t) = id_time_fast(ts) {
                assert_eq!(Some(t), general(ts), "{ts}");
            }
            let id = format!("{ts}-full");
            assert_eq!(SetId::try_parse(&id).map(|s| s.time), general(ts), "{ts}");
        }
    }

    /// `canonical_set_id` accepts exactly the days and times the by-hand
    /// parser does (years 0000–9998), field by field, at the calendar's
    /// edges; what else parses (a leap second) is not canonical.
    #[test]
    fn canonical_ids_are_the_days_the_parser_accepts() {
        let mut seen = 0;
        for year in [
            0, 1, 4, 100, 999, 1000, 1900, 1999, 2000, 2024, 2026, 2100, 2400, 9996, 9998, 9999,
        ] {
            for month in 0..=13 {
                for day in 0..=32 {
                    for (h, mi, s) in [(0, 0, 0), (23, 59, 59), (24, 0, 0), (0, 60, 0), (0, 0, 60)]
                    {
                        let ts = format!("{year:04}{month:02}{day:02}T{h:02}{mi:02}{s:02}.999Z");
                        let id = format!("{ts}-redolog");
                        let parsed = id_parts(&id);
                        let canonical = canonical_set_id(&id);
                        // the by-hand path's days; the general parser also
                        // takes a leap second (as :59), not canonical: such
                        // an id is compared by its parsed time
                        if year <= 9998 {
                            assert_eq!(canonical.is_some(), id_time_fast(&ts).is_some(), "{id}");
                        } else {
                            assert_eq!(canonical, None, "{id}");
                        }
                        if canonical.is_none() && parsed.is_some() {
                            assert!(year > 9998 || s == 60, "{id}");
                        }
                        if let Some(k) = canonical {
                            seen += 1;
                            let (t, kind) = parsed.unwrap();
                            assert_eq!(k, kind);
                            // one text per instant: the id is the one new_set_id makes
                            assert_eq!(new_set_id(t, k), id);
                        }
                    }
                }
            }
        }
        // 15 years × 365/366 days × 2 valid times
        assert!(seen > 15 * 365 * 2, "{seen}");
        for bad in [
            "20261127T080000.000Z-full\n",
            "20261127T080000.000Z-Full",
            "20261127T080000.000Z",
            "20261127T080000.000z-full",
            "20261127t080000.000Z-full",
            "20261127T080000,000Z-full",
            "2026112xT080000.000Z-full",
            "20261127T08000x.000Z-full",
            "20261127T080000.00xZ-full",
            "+2026127T080000.000Z-full",
            "20261127T080000.000Z-full-full",
            "",
            "-full",
        ] {
            assert_eq!(canonical_set_id(bad), None, "{bad:?}");
        }
    }

    fn id_order(a: &str, b: &str) -> Option<std::cmp::Ordering> {
        Some(SetId::parse(a).ok()?.cmp(&SetId::parse(b).ok()?))
    }

    /// A canonical id (year, month, …, millisecond, kind) from raw numbers
    /// that may be out of range (then it is not one).
    fn raw_id(f: (u32, u32, u32, u32, u32, u32, u32), redolog: bool) -> String {
        let (y, mo, d, h, mi, s, ms) = f;
        let kind = if redolog { "redolog" } else { "full" };
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{ms:03}Z-{kind}")
    }

    proptest::proptest! {
        /// For two valid ids made by snapsite (times across the whole
        /// range, ties and near ties, both kinds), text order is the
        /// parsed order, and `cmp_set_ids`/`older_set` say the same.
        #[test]
        fn canonical_ids_compare_as_text(
            ms_a in 0i64..7_258_118_400_000,
            delta in proptest::prop_oneof![
                proptest::strategy::Just(0i64),
                -3i64..=3,
                -86_400_000i64..=86_400_000,
                -7_258_118_400_000i64..=7_258_118_400_000,
            ],
            ka: bool,
            kb: bool,
        ) {
            let ms_b = (ms_a + delta).clamp(0, 7_258_118_400_000 - 1);
            let kind = |r: bool| if r { SetKind::Redolog } else { SetKind::Full };
            let a = new_set_id(Timestamp::from_millisecond(ms_a).unwrap(), kind(ka));
            let b = new_set_id(Timestamp::from_millisecond(ms_b).unwrap(), kind(kb));
            proptest::prop_assert_eq!(canonical_set_id(&a), Some(kind(ka)));
            proptest::prop_assert_eq!(canonical_set_id(&b), Some(kind(kb)));
            let parsed = id_order(&a, &b);
            proptest::prop_assert!(parsed.is_some());
            proptest::prop_assert_eq!(Some(a.cmp(&b)), parsed, "{} {}", a, b);
            proptest::prop_assert_eq!(cmp_set_ids(&a, &b), parsed);
            proptest::prop_assert_eq!(older_set(&a, &b), parsed == Some(std::cmp::Ordering::Less));
        }

        /// Near-ids of any field values, in range or not: a canonical one
        /// parses to the id `new_set_id` makes of it; `is_set_id` is
        /// exactly what parses; `cmp_set_ids` is the parsed order whenever
        /// both parse (canonical or not) and `None` otherwise.
        #[test]
        fn near_ids_are_refused_or_ordered_as_parsed(
            fa in (0u32..=10_000, 0u32..=13, 0u32..=32, 0u32..=25, 0u32..=61, 0u32..=61, 0u32..=999),
            fb in (0u32..=10_000, 0u32..=13, 0u32..=32, 0u32..=25, 0u32..=61, 0u32..=61, 0u32..=999),
            ka: bool,
            kb: bool,
            mangle in proptest::option::of((0usize..28, proptest::sample::select(
                vec![b'0', b'9', b'T', b'Z', b'.', b'-', b'+', b' ', b'x', b'\n'],
            ))),
        ) {
            let a = raw_id(fa, ka);
            let mut b = raw_id(fb, kb).into_bytes();
            if let Some((at, c)) = mangle {
                if at < b.len() {
                    b[at] = c;
                }
            }
            let b = String::from_utf8(b).unwrap();
            for id in [&a, &b] {
                proptest::prop_assert_eq!(is_set_id(id), SetId::parse(id).is_ok(), "{}", id);
                proptest::prop_assert_eq!(validate_set_id(id).is_ok(), SetId::parse(id).is_ok());
                if let Some(k) = canonical_set_id(id) {
                    let (t, kind) = parse_set_id(id).unwrap();
                    proptest::prop_assert_eq!(k, kind);
                    proptest::prop_assert_eq!(&new_set_id(t, k), id);
                }
            }
            proptest::prop_assert_eq!(cmp_set_ids(&a, &b), id_order(&a, &b), "{} {}", a, b);
            proptest::prop_assert_eq!(cmp_set_ids(&a, &a), id_order(&a, &a));
        }
    }

    #[test]
    fn set_ids_round_trip_and_sort_by_time() {
        let t: Timestamp = "2026-11-27T08:00:00.123Z".parse().unwrap();
        let id = new_set_id(t, SetKind::Full);
        assert_eq!(id, "20261127T080000.123Z-full");
        assert_eq!(parse_set_id(&id), Some((t, SetKind::Full)));
        let later = new_set_id(t + SignedDuration::from_millis(1), SetKind::Redolog);
        assert!(later > id);
        assert_eq!(parse_set_id("20261127T080000.123Z-bogus"), None);
        assert_eq!(parse_set_id("../../etc-full"), None);
        assert!(validate_set_id("x/../y").is_err());
    }

    #[test]
    fn set_ids_order_by_time_not_by_text() {
        let a = SetId::parse("20261127T080000.123Z-full").unwrap();
        let b = SetId::parse("20261127T080000.124Z-full").unwrap();
        let r = SetId::parse("20261127T080000.123Z-redolog").unwrap();
        assert!(a < b && a < r && r < b);
        assert_eq!(a.kind(), SetKind::Full);
        assert!(older_set(a.as_str(), b.as_str()));
        assert!(!older_set(b.as_str(), a.as_str()));
        assert!(!older_set(a.as_str(), a.as_str()));
        // an id that does not parse is never older (nor newer)
        assert!(!older_set("0-full", a.as_str()));
        assert!(!older_set(a.as_str(), "zzz"));
        let e = SetId::parse("20261127T080000.123Z-bogus\n").unwrap_err();
        assert!(e.to_string().contains("not a snapsite set id"), "{e}");
    }

    #[test]
    fn roles_are_plain_names() {
        assert!(validate_role("redolog").is_ok());
        assert!(validate_role("blob_2").is_ok());
        for bad in ["", "Mysql", "a/b", "../x", "a b", "-x", "x;rm"] {
            assert!(validate_role(bad).is_err(), "{bad}");
        }
    }

    fn member(role: &str, before: &str, after: &str) -> Member {
        Member {
            role: role.into(),
            backend: "btrfs".into(),
            source: "/x".into(),
            snapshot: "s".into(),
            storage_id: None,
            before: before.parse().unwrap(),
            after: after.parse().unwrap(),
            atomic_group: None,
            send_options: Vec::new(),
            receipt: None,
            consistency: None,
        }
    }

    #[test]
    fn from_time_is_earliest_before_minus_margin() {
        let mut m = Manifest {
            format: MANIFEST_FORMAT,
            id: "x".into(),
            kind: SetKind::Full,
            site: "a".into(),
            seq: 1,
            generation: 1,
            members: vec![
                member("blob", "2026-11-27T08:00:01Z", "2026-11-27T08:00:01.5Z"),
                member("mysql", "2026-11-27T08:00:00Z", "2026-11-27T08:00:00.5Z"),
                member("redolog", "2026-11-27T08:00:03Z", "2026-11-27T08:00:03.2Z"),
            ],
            safety_margin_ms: 0,
            committed_at: None,
            standby_order: None,
        };
        assert_eq!(m.from_time().to_string(), "2026-11-27T08:00:00Z");
        assert_eq!(m.skew(), SignedDuration::from_millis(3200));
        m.safety_margin_ms = 1500;
        assert_eq!(m.from_time().to_string(), "2026-11-27T07:59:58.5Z");
        assert!(!m.is_atomic());

        // one atomic group (one `zfs snapshot` over one pool): one moment
        for x in &mut m.members {
            x.atomic_group = Some(0);
        }
        assert!(m.is_atomic());
        assert_eq!(m.skew(), SignedDuration::ZERO);
        // two groups: the bound again
        m.members[2].atomic_group = Some(1);
        assert!(!m.is_atomic());
        assert_eq!(m.skew(), SignedDuration::from_millis(3200));
        // a member outside any group next to a group: not one moment
        m.members[2].atomic_group = None;
        assert!(!m.is_atomic());
    }
}
