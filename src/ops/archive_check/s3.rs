//! `check`'s archive findings for this site's `[[archive]]` entries: the
//! archive's own S3 client ([`crate::wire::s3::Bucket`], with the
//! credentials file this site holds) behind [`LockedBucket`], and the
//! days the retention needs from the config.

use super::{LockFacts, LockedBucket, ProbeAnswer};
use crate::base::config::Config;
use crate::base::error::ErrorKind;
use crate::ops::checkup::Finding;
use crate::wire::s3::Bucket;

struct Client<'a>(&'a Bucket);

impl LockedBucket for Client<'_> {
    fn display(&self) -> String {
        self.0.display()
    }
    fn object_lock(&self) -> Result<Option<LockFacts>, String> {
        self.0
            .object_lock()
            .map(|l| {
                l.map(|l| LockFacts {
                    enabled: l.enabled,
                    default_retention: l.default_retention,
                })
            })
            .map_err(|e| e.to_string())
    }
    fn delete_probe(&self, key: &str) -> Result<ProbeAnswer, String> {
        match self.0.delete(key) {
            Ok(()) => Ok(ProbeAnswer::Accepted),
            Err(e) if e.kind == ErrorKind::Refused => Ok(ProbeAnswer::Refused),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How long the archive's sets must stay: the retention policy's longest
/// keep time (full sets or redolog snapshots), and the full-set interval
/// as the span of an incremental chain. Without `[retention]` only the
/// chain (and a note: nothing bounds how long sets are wanted).
pub fn retention_needs(cfg: &Config) -> (u64, Option<Finding>) {
    let full_every = cfg
        .schedule
        .as_ref()
        .map(|s| s.full_set_interval.as_secs())
        .unwrap_or(0);
    match &cfg.retention {
        Some(r) => {
            let keep = r.full.span().max(r.redolog.span()).as_secs();
            (super::needed_days(keep, full_every), None)
        }
        None => (
            super::needed_days(0, full_every),
            Some(Finding {
                text: format!(
                    "{:<9} no [retention]: the lock's days are judged against the full-set interval only",
                    "archive"
                ),
                problem: false,
            }),
        ),
    }
}

/// Every `[[archive]]`'s findings (lock configuration, delete probe), or
/// one problem naming the archive when its bucket cannot be opened.
pub fn check_archives(cfg: &Config) -> Vec<Finding> {
    if cfg.archives.is_empty() {
        return vec![];
    }
    let (needed, note) = retention_needs(cfg);
    let mut out: Vec<Finding> = note.into_iter().collect();
    for a in &cfg.archives {
        match crate::primary::archive::open(a) {
            Ok(b) => out.extend(super::check(&Client(&b), needed)),
            Err(e) => out.push(Finding {
                text: format!("{:<9} PROBLEM: archive `{}`: {e}", "archive", a.name),
                problem: true,
            }),
        }
    }
    out
}
