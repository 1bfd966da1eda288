//! ListObjectVersions and GetObject of one version (issue 30): restore's
//! fallback when an object's newest version is not what the index says
//! (someone who may put objects wrote a new version over a part; Object
//! Lock keeps the old one). Needs credentials with `s3:ListBucketVersions`
//! and `s3:GetObjectVersion` (docs/archive.md).
//!
//! The listing is foreign input like every answer: bounded, parsed with
//! roxmltree, and only entries for exactly the key asked for are kept,
//! each with a version id of printable ASCII and a size.

use super::{BodyReader, Bucket, MAX_KEY_LEN, child_text};
use crate::base::error::{Error, Result};

/// Most versions of one key a listing may return (one page).
pub const MAX_VERSIONS: usize = 1000;

/// One version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub version_id: String,
    pub size: u64,
    pub latest: bool,
}

/// Parse a ListVersionsResult (foreign input): the versions of exactly
/// `key`, in the server's order (newest first); delete markers skipped.
/// A truncated listing (more than [`MAX_VERSIONS`]) is refused.
pub fn parse_versions(body: &[u8], key: &str) -> std::result::Result<Vec<ObjectVersion>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the listing is not UTF-8".to_string())?;
    let doc = roxmltree::Document::parse(text).map_err(|e| format!("the listing: {e}"))?;
    let root = doc.root_element();
    if !root.has_tag_name("ListVersionsResult") {
        return Err(format!(
            "expected ListVersionsResult, got {}",
            root.tag_name().name()
        ));
    }
    if child_text(root, "IsTruncated").is_some_and(|t| t.trim() == "true") {
        return Err(format!("more than {MAX_VERSIONS} versions"));
    }
    let mut out = Vec::new();
    for v in root.children().filter(|c| c.has_tag_name("Version")) {
        if child_text(v, "Key") != Some(key) {
            continue;
        }
        let id = child_text(v, "VersionId").ok_or("a version without a VersionId")?;
        if id.is_empty() || id.len() > MAX_KEY_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "version id `{}` is not acceptable",
                crate::base::model::wire_str(id)
            ));
        }
        let size: u64 = child_text(v, "Size")
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("version `{id}` without a valid Size"))?;
        let latest = child_text(v, "IsLatest").is_some_and(|t| t.trim() == "true");
        out.push(ObjectVersion {
            version_id: id.to_string(),
            size,
            latest,
        });
        if out.len() > MAX_VERSIONS {
            return Err(format!("more than {MAX_VERSIONS} versions"));
        }
    }
    Ok(out)
}

impl Bucket {
    /// ListObjectVersions of exactly `key` (newest first).
    pub fn versions(&self, key: &str) -> Result<Vec<ObjectVersion>> {
        let what = format!("LIST VERSIONS {}/{key}", self.display());
        let max = MAX_VERSIONS.to_string();
        let body = self
            .get_xml(
                &[("versions", ""), ("prefix", key), ("max-keys", &max)],
                &what,
            )?
            .ok_or_else(|| Error::not_found(format!("{what}: no such bucket")))?;
        parse_versions(&body, key).map_err(|e| Error::protocol(format!("{what}: {e}")))
    }

    /// GetObject of one version, handed to `consume` as [`Bucket::fetch`]
    /// does (retried while the network fails).
    pub fn fetch_version<T>(
        &self,
        key: &str,
        version_id: &str,
        consume: impl FnMut(&mut BodyReader) -> std::io::Result<T>,
    ) -> Result<Option<T>> {
        self.fetch_with(key, &[("versionId", version_id)], consume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_exactly_the_key_are_kept() {
        let x = br#"<ListVersionsResult><IsTruncated>false</IsTruncated>
            <Version><Key>p/a</Key><VersionId>v2</VersionId><IsLatest>true</IsLatest><Size>5</Size></Version>
            <DeleteMarker><Key>p/a</Key><VersionId>d1</VersionId></DeleteMarker>
            <Version><Key>p/a</Key><VersionId>v1</VersionId><IsLatest>false</IsLatest><Size>7</Size></Version>
            <Version><Key>p/ab</Key><VersionId>w</VersionId><Size>1</Size></Version>
            </ListVersionsResult>"#;
        let v = parse_versions(x, "p/a").unwrap();
        assert_eq!(
            v.iter()
                .map(|v| (v.version_id.as_str(), v.size, v.latest))
                .collect::<Vec<_>>(),
            [("v2", 5, true), ("v1", 7, false)]
        );
        let bad = br#"<ListVersionsResult><Version><Key>p/a</Key><VersionId>a b</VersionId><Size>1</Size></Version></ListVersionsResult>"#;
        assert!(parse_versions(bad, "p/a").is_err());
        let trunc = br#"<ListVersionsResult><IsTruncated>true</IsTruncated></ListVersionsResult>"#;
        assert!(parse_versions(trunc, "p/a").is_err());
        assert!(parse_versions(b"<ListBucketResult/>", "p/a").is_err());
    }
}
