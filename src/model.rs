//! The domain: roles, snapshot set ids, members, manifests and their times.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Manifest format version written by this build.
pub const MANIFEST_FORMAT: u32 = 1;

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

/// Parse a set id back into (time, kind); `None` when it isn't one of ours.
pub fn parse_set_id(id: &str) -> Option<(Timestamp, SetKind)> {
    let (ts, kind) = id.rsplit_once('-')?;
    let kind = match kind {
        "full" => SetKind::Full,
        "redolog" => SetKind::Redolog,
        _ => return None,
    };
    if ts.len() != 20 || !ts.ends_with('Z') {
        return None;
    }
    let t = jiff::fmt::strtime::parse("%Y%m%dT%H%M%S%.fZ", ts).ok()?;
    let dt = t.to_datetime().ok()?;
    let z = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?;
    Some((z.timestamp(), kind))
}

pub fn validate_set_id(id: &str) -> Result<()> {
    if parse_set_id(id).is_none() {
        return Err(Error::refused(format!(
            "`{id}` is not a snapsite set id (expected e.g. 20261127T080000.000Z-full)"
        )));
    }
    Ok(())
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub kind: SetKind,
    pub site: String,
    pub members: Vec<Member>,
    /// Subtracted from the earliest member time to give `from_time`.
    #[serde(default)]
    pub safety_margin_ms: i64,
    /// Set by the standby when it committed the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<Timestamp>,
}

impl Manifest {
    /// Time from which the redo log must be replayed on top of this set: the
    /// earliest member's before-time minus the safety margin. Replaying a
    /// little too much is harmless; replaying too little loses mail.
    pub fn from_time(&self) -> Timestamp {
        let earliest = self
            .members
            .iter()
            .map(|m| m.before)
            .min()
            .expect("a manifest has at least one member");
        earliest - SignedDuration::from_millis(self.safety_margin_ms)
    }

    /// The time the set stands for: when its last member was done.
    pub fn completed_time(&self) -> Timestamp {
        self.members.iter().map(|m| m.after).max().expect("members")
    }

    pub fn member(&self, role: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.role == role)
    }

    /// Largest gap between the members' snapshot moments (0 when atomic).
    pub fn skew(&self) -> SignedDuration {
        let first = self
            .members
            .iter()
            .map(|m| m.before)
            .min()
            .expect("members");
        let last = self.members.iter().map(|m| m.after).max().expect("members");
        last.duration_since(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn from_time_is_earliest_before_minus_margin() {
        let mut m = Manifest {
            format: MANIFEST_FORMAT,
            id: "x".into(),
            kind: SetKind::Full,
            site: "a".into(),
            members: vec![
                member("blob", "2026-11-27T08:00:01Z", "2026-11-27T08:00:01.5Z"),
                member("mysql", "2026-11-27T08:00:00Z", "2026-11-27T08:00:00.5Z"),
                member("redolog", "2026-11-27T08:00:03Z", "2026-11-27T08:00:03.2Z"),
            ],
            safety_margin_ms: 0,
            committed_at: None,
        };
        assert_eq!(m.from_time().to_string(), "2026-11-27T08:00:00Z");
        assert_eq!(m.skew(), SignedDuration::from_millis(3200));
        m.safety_margin_ms = 1500;
        assert_eq!(m.from_time().to_string(), "2026-11-27T07:59:58.5Z");
    }
}
