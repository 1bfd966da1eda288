//! Who holds a common snapshot. A primary keeps one common snapshot per
//! standby per volume (its next incremental base there) and protects each
//! under a tag naming that standby: `snapsite-common-NAME` (a ZFS hold, an
//! LVM tag). One standby moving its base on never releases another's. The
//! tag `snapsite-common` alone is a standby site's own (its upstream's
//! base), the unnamed single `[standby]` table's, and what every standby of
//! an older version shared; prune moves such a shared tag over to each
//! standby's own once it can (see `ops::prune::holds`).

use super::Stores;
use crate::base::config::DEFAULT_STANDBY_NAME;
use crate::base::error::{Context, Result};

/// The tag of a standby site's own common snapshot and of the unnamed
/// `[standby]` (the one tag of versions before per-standby holds).
pub const COMMON_TAG: &str = "snapsite-common";

/// The hold / tag a primary puts on standby `standby`'s base. The standby
/// named `standby` (a single `[standby]` table) keeps [`COMMON_TAG`], so an
/// upgraded single-standby site finds its holds where they were.
pub fn common_tag(standby: &str) -> String {
    if standby == DEFAULT_STANDBY_NAME {
        COMMON_TAG.to_string()
    } else {
        format!("{COMMON_TAG}-{standby}")
    }
}

/// Is `tag` one of snapsite's common-snapshot tags?
pub fn is_common_tag(tag: &str) -> bool {
    tag == COMMON_TAG
        || tag
            .strip_prefix(COMMON_TAG)
            .and_then(|t| t.strip_prefix('-'))
            .is_some_and(|n| crate::base::config::validate_standby_name(n).is_ok())
}

/// The standby a common tag names (`None` for the bare [`COMMON_TAG`]).
pub fn standby_of_tag(tag: &str) -> Option<&str> {
    tag.strip_prefix(COMMON_TAG)?
        .strip_prefix('-')
        .filter(|n| crate::base::config::validate_standby_name(n).is_ok())
}

/// One common-snapshot hold found on storage.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    pub role: String,
    /// The storage's name of the snapshot (`pool/ds@snap`, `vg/lv.id`).
    pub snapshot: String,
    pub tag: String,
}

impl Stores {
    /// Every volume's common-snapshot holds.
    pub fn common_holds(&self) -> Result<Vec<Hold>> {
        let mut out = Vec::new();
        for s in self.iter() {
            for (snapshot, tag) in s.imp.common_holds(&s.vol).ctx(format!(
                "volume `{}`: listing the holds on its snapshots",
                s.role()
            ))? {
                out.push(Hold {
                    role: s.role().to_string(),
                    snapshot,
                    tag,
                });
            }
        }
        Ok(out)
    }

    /// Release `tag` on every volume; returns what was released.
    pub fn release_common(&self, tag: &str) -> Result<Vec<Hold>> {
        let mut out = Vec::new();
        for s in self.iter() {
            for snapshot in s
                .imp
                .release_common(&s.vol, tag)
                .ctx(format!("volume `{}`: releasing hold {tag}", s.role()))?
            {
                out.push(Hold {
                    role: s.role().to_string(),
                    snapshot,
                    tag: tag.to_string(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_names_its_standby_and_the_single_standby_keeps_the_old_tag() {
        assert_eq!(common_tag("standby"), "snapsite-common");
        assert_eq!(common_tag("far"), "snapsite-common-far");
        assert_eq!(standby_of_tag("snapsite-common-far"), Some("far"));
        assert_eq!(standby_of_tag("snapsite-common"), None);
        assert!(is_common_tag("snapsite-common"));
        assert!(is_common_tag("snapsite-common-far"));
        assert!(!is_common_tag("snapsite-common-"));
        assert!(!is_common_tag("snapsite-common-Far"));
        assert!(!is_common_tag("snapsite-commonfar"));
        assert!(!is_common_tag("snapsite-divergent"));
        assert!(!is_common_tag("keep"));
    }
}
