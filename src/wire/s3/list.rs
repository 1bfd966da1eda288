//! Bucket-level answers (issue 30): ListObjectsV2 of every key under a
//! prefix (paged, bounded) and GetObjectLockConfiguration, each parsed as
//! foreign input: roxmltree, a size bound on the body, keys checked to lie
//! under the prefix asked for, at most [`MAX_LIST_KEYS`] keys.

use super::{Bucket, MAX_KEY_LEN, MAX_LIST_KEYS};
use crate::base::error::{Error, Result};

/// Object Lock configuration of a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectLock {
    pub enabled: bool,
    /// `GOVERNANCE` or `COMPLIANCE`, with the default retention in days.
    pub default_retention: Option<(String, u64)>,
}

impl Bucket {
    /// ListObjectsV2 of every key under `prefix`, paged, with sizes.
    pub fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let what = format!("LIST {}/{prefix}", self.display());
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                q.push(("continuation-token", t));
            }
            let body = self
                .get_xml(&q, &what)?
                .ok_or_else(|| Error::not_found(format!("{what}: no such bucket")))?;
            let page =
                parse_list(&body, prefix).map_err(|e| Error::protocol(format!("{what}: {e}")))?;
            out.extend(page.keys);
            if out.len() > MAX_LIST_KEYS {
                return Err(Error::protocol(format!(
                    "{what}: more than {MAX_LIST_KEYS} keys"
                )));
            }
            match page.next {
                Some(t) if page.truncated => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    /// GetObjectLockConfiguration; `None` when the bucket has none.
    pub fn object_lock(&self) -> Result<Option<ObjectLock>> {
        let what = format!("GET {}?object-lock", self.display());
        let body = match self.get_xml(&[("object-lock", "")], &what) {
            Ok(Some(b)) => b,
            Ok(None) => return Ok(None),
            Err(e) if e.to_string().contains("ObjectLockConfigurationNotFound") => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        parse_lock(&body)
            .map(Some)
            .map_err(|e| Error::protocol(format!("{what}: {e}")))
    }
}

/// One page of ListObjectsV2.
#[derive(Debug, PartialEq)]
pub struct ListPage {
    pub keys: Vec<(String, u64)>,
    pub truncated: bool,
    pub next: Option<String>,
}

pub(super) fn child_text<'a>(n: roxmltree::Node<'a, 'a>, tag: &str) -> Option<&'a str> {
    n.children()
        .find(|c| c.has_tag_name(tag))
        .and_then(|c| c.text())
}

/// Parse a ListObjectsV2 page (foreign input): every key must lie under
/// `prefix`, be at most [`MAX_KEY_LEN`] bytes with no control character,
/// and carry a size.
pub fn parse_list(body: &[u8], prefix: &str) -> std::result::Result<ListPage, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the listing is not UTF-8".to_string())?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("the listing: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("ListBucketResult") {
        return Err(format!(
            "expected ListBucketResult, got {}",
            root.tag_name().name()
        ));
    }
    let mut keys = Vec::new();
    for c in root.children().filter(|c| c.has_tag_name("Contents")) {
        let key = child_text(c, "Key").ok_or("an entry without a Key")?;
        if key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(format!(
                "key `{}` is not acceptable",
                crate::base::model::wire_str(key)
            ));
        }
        if !key.starts_with(prefix) {
            return Err(format!(
                "key `{}` is not under the prefix asked for",
                crate::base::model::wire_str(key)
            ));
        }
        let size: u64 = child_text(c, "Size")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("key `{key}` without a valid Size"))?;
        keys.push((key.to_string(), size));
    }
    let truncated = child_text(root, "IsTruncated").is_some_and(|t| t.trim() == "true");
    let next = child_text(root, "NextContinuationToken")
        .filter(|t| t.len() <= 4096)
        .map(str::to_string);
    if truncated && next.is_none() {
        return Err("a truncated listing without a continuation token".into());
    }
    Ok(ListPage {
        keys,
        truncated,
        next,
    })
}

/// Parse an ObjectLockConfiguration (foreign input).
pub fn parse_lock(body: &[u8]) -> std::result::Result<ObjectLock, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    if !root.has_tag_name("ObjectLockConfiguration") {
        return Err(format!(
            "expected ObjectLockConfiguration, got {}",
            root.tag_name().name()
        ));
    }
    let enabled = child_text(root, "ObjectLockEnabled").is_some_and(|t| t.trim() == "Enabled");
    let retention = root
        .descendants()
        .find(|n| n.has_tag_name("DefaultRetention"))
        .map(|d| -> std::result::Result<(String, u64), String> {
            let mode = child_text(d, "Mode").unwrap_or("").trim().to_string();
            if mode != "GOVERNANCE" && mode != "COMPLIANCE" {
                return Err(format!(
                    "retention mode `{}`",
                    crate::base::model::wire_str(&mode)
                ));
            }
            let num = |t: &str| child_text(d, t).and_then(|s| s.trim().parse::<u64>().ok());
            let days = match (num("Days"), num("Years")) {
                (Some(d), None) => d,
                (None, Some(y)) => y.saturating_mul(365),
                _ => return Err("a retention needs Days or Years".into()),
            };
            Ok((mode, days))
        })
        .transpose()?;
    Ok(ObjectLock {
        enabled,
        default_retention: retention,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_checked() {
        let ok = br#"<?xml version="1.0"?><ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>abc</NextContinuationToken><Contents><Key>p/sets/a</Key><Size>12</Size></Contents></ListBucketResult>"#;
        let p = parse_list(ok, "p/").unwrap();
        assert_eq!(p.keys, vec![("p/sets/a".to_string(), 12)]);
        assert_eq!(p.next.as_deref(), Some("abc"));
        let outside = br#"<ListBucketResult><Contents><Key>q/x</Key><Size>1</Size></Contents></ListBucketResult>"#;
        assert!(parse_list(outside, "p/").unwrap_err().contains("q/x"));
        let nosize = br#"<ListBucketResult><Contents><Key>p/x</Key></Contents></ListBucketResult>"#;
        assert!(parse_list(nosize, "p/").is_err());
        let dtd = br#"<!DOCTYPE x [<!ENTITY a "aaaa">]><ListBucketResult><Contents><Key>p/&a;</Key><Size>1</Size></Contents></ListBucketResult>"#;
        // roxmltree expands only bounded internal entities; the key stays under the prefix check.
        let _ = parse_list(dtd, "p/");
        assert!(
            parse_list(
                b"<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
                ""
            )
            .is_err()
        );
    }

    #[test]
    fn lock_configuration_is_parsed() {
        let x = br#"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>30</Days></DefaultRetention></Rule></ObjectLockConfiguration>"#;
        assert_eq!(
            parse_lock(x).unwrap(),
            ObjectLock {
                enabled: true,
                default_retention: Some(("COMPLIANCE".into(), 30))
            }
        );
        let bad = br#"<ObjectLockConfiguration><Rule><DefaultRetention><Mode>X</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>"#;
        assert!(parse_lock(bad).is_err());
    }
}
