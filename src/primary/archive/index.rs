//! The archive's index object: one per set, written LAST, after every
//! part object. It names the set, its members and the base each was sent
//! from (`requires`: the sets a restore must replay first), and each part's
//! key, plaintext size and blake3 (what the seed reader checks) and stored
//! size and blake3 (what `verify` checks without the age identity).
//!
//! Read back by `restore` and `verify`, an index is foreign input (the
//! bucket is shared with whoever holds its credentials): [`decode`] bounds
//! its size, refuses unknown fields, and checks every name, hash, count and
//! key before anything uses it. Fuzzed (`fuzz/fuzz_targets/archive_index.rs`).

use serde::{Deserialize, Serialize};

use crate::base::model::{validate_role, validate_set_id, wire_str};

pub const FORMAT: u32 = 1;
/// Most bytes of an index object.
pub const MAX_INDEX_BYTES: u64 = 16 << 20;
/// Most parts of one set (64 TiB at the default 64 MiB).
pub const MAX_PARTS: usize = 1 << 20;
/// Largest part object (S3's largest single PUT, plus age's overhead).
pub const MAX_PART_BYTES: u64 = (5 << 30) + (1 << 20);
pub const INDEX_NAME: &str = "index.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchivePart {
    /// Key below the archive's prefix: `sets/SET/RUN/part-NNNNNN`.
    pub key: String,
    /// Stream bytes (plaintext) and their blake3.
    pub bytes: u64,
    pub blake3: String,
    /// The object as stored (age ciphertext when encrypted).
    pub stored_bytes: u64,
    pub stored_blake3: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveMember {
    pub role: String,
    pub snapshot: String,
    /// The snapshot it was sent incrementally from (a set of `requires`).
    pub base: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ArchiveIndex {
    pub format: u32,
    pub set_id: String,
    pub site: String,
    /// `full` or `redolog`.
    pub kind: String,
    pub members: Vec<ArchiveMember>,
    /// Sets whose snapshots the members are based on, oldest first.
    pub requires: Vec<String>,
    /// `none` or `zstd:N` (the stream's data frames).
    pub compression: String,
    /// `age` or `none`.
    pub encryption: String,
    pub parts: Vec<ArchivePart>,
    pub payload_bytes: u64,
    pub stream_bytes: u64,
    /// When it was written (display only).
    pub written_at: String,
}

/// Key of a set's index below the prefix.
pub fn index_key(set_id: &str) -> String {
    format!("sets/{set_id}/{INDEX_NAME}")
}

/// Key of a part below the prefix.
pub fn part_key(set_id: &str, run: &str, i: usize) -> String {
    format!("sets/{set_id}/{run}/part-{i:06}")
}

fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn valid_run(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The set id of an index key (`sets/SET/index.json`), if it is one.
pub fn set_of_index_key(rel: &str) -> Option<&str> {
    let id = rel.strip_prefix("sets/")?.strip_suffix("/index.json")?;
    validate_set_id(id).ok().map(|_| id)
}

/// Decode and check an index object (foreign input). `expect_set`: the
/// set its key names (an index under another set's key is refused).
pub fn decode(bytes: &[u8], expect_set: Option<&str>) -> Result<ArchiveIndex, String> {
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(format!("more than {MAX_INDEX_BYTES} bytes"));
    }
    let ix: ArchiveIndex = serde_json::from_slice(bytes).map_err(|e| format!("not valid: {e}"))?;
    if ix.format != FORMAT {
        return Err(format!(
            "format {} is not supported (this snapsite reads {FORMAT})",
            ix.format
        ));
    }
    validate_set_id(&ix.set_id).map_err(|e| e.to_string())?;
    if let Some(want) = expect_set
        && want != ix.set_id
    {
        return Err(format!(
            "it names set `{}`, its key set `{want}`",
            wire_str(&ix.set_id)
        ));
    }
    if ix.site.is_empty() || ix.site.len() > 64 || !ix.site.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("site `{}` is not a site name", wire_str(&ix.site)));
    }
    if ix.kind != "full" && ix.kind != "redolog" {
        return Err(format!("kind `{}`", wire_str(&ix.kind)));
    }
    if ix.members.is_empty() || ix.members.len() > 64 {
        return Err(format!("{} members (1 to 64)", ix.members.len()));
    }
    let mut bases = Vec::new();
    for (i, m) in ix.members.iter().enumerate() {
        validate_role(&m.role).map_err(|e| format!("member {i}: {e}"))?;
        if ix.members[..i].iter().any(|o| o.role == m.role) {
            return Err(format!("role `{}` twice", m.role));
        }
        validate_set_id(&m.snapshot).map_err(|e| format!("member {i}: {e}"))?;
        if m.snapshot != ix.set_id {
            return Err(format!(
                "member `{}` has snapshot `{}`, not the set's",
                m.role,
                wire_str(&m.snapshot)
            ));
        }
        if let Some(b) = &m.base {
            validate_set_id(b).map_err(|e| format!("member {i} base: {e}"))?;
            if b.as_str() >= ix.set_id.as_str() {
                return Err(format!(
                    "member `{}`: base `{b}` is not older than the set",
                    m.role
                ));
            }
            bases.push(b.clone());
        }
    }
    bases.sort();
    bases.dedup();
    if bases != ix.requires {
        return Err("`requires` is not the members' bases".into());
    }
    crate::wire::compress::Compression::parse(&ix.compression)
        .map_err(|e| format!("compression: {e}"))?;
    let encrypted = match ix.encryption.as_str() {
        "age" => true,
        "none" => false,
        other => return Err(format!("encryption `{}`", wire_str(other))),
    };
    if ix.parts.is_empty() || ix.parts.len() > MAX_PARTS {
        return Err(format!("{} parts (1 to {MAX_PARTS})", ix.parts.len()));
    }
    let mut total = 0u64;
    for (i, p) in ix.parts.iter().enumerate() {
        // Each part's run: a resumed set keeps the parts an interrupted
        // run uploaded (their run id) and puts the others under its own.
        let run = p
            .key
            .strip_prefix(&format!("sets/{}/", ix.set_id))
            .and_then(|r| r.split('/').next())
            .filter(|r| valid_run(r))
            .ok_or_else(|| format!("part {i} has key `{}`", wire_str(&p.key)))?;
        if p.key != part_key(&ix.set_id, run, i) {
            return Err(format!("part {i} has key `{}`", wire_str(&p.key)));
        }
        if !is_hash(&p.blake3) || !is_hash(&p.stored_blake3) {
            return Err(format!("part {i}: a blake3 is not 64 hex digits"));
        }
        if p.bytes == 0 || p.bytes > MAX_PART_BYTES || p.stored_bytes > MAX_PART_BYTES {
            return Err(format!("part {i}: size out of range"));
        }
        if !encrypted && (p.stored_bytes != p.bytes || p.stored_blake3 != p.blake3) {
            return Err(format!("part {i}: unencrypted, yet stored differs"));
        }
        total = total.saturating_add(p.bytes);
    }
    if total != ix.stream_bytes {
        return Err(format!(
            "parts hold {total} bytes, stream_bytes says {}",
            ix.stream_bytes
        ));
    }
    if ix.written_at.len() > 64 {
        return Err("written_at too long".into());
    }
    Ok(ix)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> ArchiveIndex {
        let id = "20261127T080000.000Z-full";
        let h = "a".repeat(64);
        ArchiveIndex {
            format: FORMAT,
            set_id: id.into(),
            site: "a".into(),
            kind: "full".into(),
            members: vec![ArchiveMember {
                role: "redolog".into(),
                snapshot: id.into(),
                base: Some("20261127T070000.000Z-full".into()),
            }],
            requires: vec!["20261127T070000.000Z-full".into()],
            compression: "none".into(),
            encryption: "age".into(),
            parts: vec![ArchivePart {
                key: part_key(id, "r1", 0),
                bytes: 10,
                blake3: h.clone(),
                stored_bytes: 200,
                stored_blake3: h,
            }],
            payload_bytes: 5,
            stream_bytes: 10,
            written_at: "2026-11-27T08:00:00Z".into(),
        }
    }

    #[test]
    fn a_valid_index_round_trips_and_each_lie_is_refused() {
        let ix = sample();
        let b = serde_json::to_vec(&ix).unwrap();
        assert_eq!(decode(&b, Some(&ix.set_id)).unwrap(), ix);
        assert!(decode(&b, Some("20261127T090000.000Z-full")).is_err());
        type Lie = Box<dyn Fn(&mut ArchiveIndex)>;
        let bad: Vec<(&str, Lie)> = vec![
            (
                "key",
                Box::new(|i| i.parts[0].key = "sets/x/../part-000000".into()),
            ),
            ("requires", Box::new(|i| i.requires.clear())),
            (
                "base",
                Box::new(|i| i.members[0].base = Some(i.set_id.clone())),
            ),
            ("hash", Box::new(|i| i.parts[0].blake3 = "zz".into())),
            ("stream", Box::new(|i| i.stream_bytes = 11)),
            ("enc", Box::new(|i| i.encryption = "rot13".into())),
            ("plain", Box::new(|i| i.encryption = "none".into())),
            ("role", Box::new(|i| i.members[0].role = "../x".into())),
            (
                "snap",
                Box::new(|i| i.members[0].snapshot = "20261127T070000.000Z-full".into()),
            ),
        ];
        for (what, f) in bad {
            let mut i = sample();
            f(&mut i);
            assert!(
                decode(&serde_json::to_vec(&i).unwrap(), None).is_err(),
                "{what} accepted"
            );
        }
        let mut extra = serde_json::to_value(sample()).unwrap();
        extra["evil"] = serde_json::json!(1);
        assert!(decode(&serde_json::to_vec(&extra).unwrap(), None).is_err());
        assert_eq!(
            set_of_index_key("sets/20261127T080000.000Z-full/index.json"),
            Some("20261127T080000.000Z-full")
        );
        assert_eq!(set_of_index_key("sets/../index.json"), None);
    }
}
