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
    dt.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
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
pub fn older_set(a: &str, b: &str) -> bool {
    match (SetId::try_parse(a), SetId::try_parse(b)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// Parse a set id back into (time, kind); `None` when it isn't one of ours.
pub fn parse_set_id(id: &str) -> Option<(Timestamp, SetKind)> {
    SetId::try_parse(id).map(|s| (s.time, s.kind))
}

pub fn validate_set_id(id: &str) -> Result<()> {
    SetId::parse(id).map(|_| ())
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
