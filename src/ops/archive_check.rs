//! What `snapsite check` says about an archive bucket (issue 30 item 3):
//! the bucket's immutability is the engine's, and this verifies it is set
//! up the way docs/archive.md tells the admin to — Object Lock on, a
//! default retention long enough for the archive's retention policy, and
//! credentials on this site that cannot delete.
//!
//! The S3 calls stay behind [`LockedBucket`] so this module depends on no
//! client: the archive's S3 client implements it (its
//! GetObjectLockConfiguration, plus one DeleteObject for the probe).

pub mod s3;

use super::checkup::Finding;

/// A bucket's Object Lock configuration, as GetObjectLockConfiguration
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFacts {
    pub enabled: bool,
    /// `COMPLIANCE` or `GOVERNANCE`, and the default retention in days.
    pub default_retention: Option<(String, u64)>,
}

/// What the engine answered to the delete probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// 403 AccessDenied: these credentials cannot delete.
    Refused,
    /// 2xx: they can (on a versioned bucket the probe only added a delete
    /// marker on a key nothing else uses).
    Accepted,
}

/// The S3 calls `check` needs, with this site's credentials.
pub trait LockedBucket {
    /// `endpoint/bucket`, for messages.
    fn display(&self) -> String;
    /// GetObjectLockConfiguration; `Ok(None)` when the bucket has none.
    fn object_lock(&self) -> Result<Option<LockFacts>, String>;
    /// DeleteObject of `key` (never written), without a version id.
    fn delete_probe(&self, key: &str) -> Result<ProbeAnswer, String>;
}

const DAY_SECS: u64 = 86_400;

/// The default retention the archive needs, in whole days: a set must stay
/// restorable for `keep_secs`, and an incremental set needs its full base,
/// which is up to `full_every_secs` older than the set itself (retention
/// counts from each object's upload).
pub fn needed_days(keep_secs: u64, full_every_secs: u64) -> u64 {
    keep_secs.saturating_add(full_every_secs).div_ceil(DAY_SECS)
}

/// A key for the delete probe that no archive object uses.
pub fn probe_key() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("snapsite-probe/{nanos:x}-{:x}", std::process::id())
}

fn info(text: String) -> Finding {
    Finding {
        text: format!("{:<9} {text}", "archive"),
        problem: false,
    }
}

fn problem(text: String) -> Finding {
    Finding {
        text: format!("{:<9} PROBLEM: {text}", "archive"),
        problem: true,
    }
}

/// Judge a lock configuration against the days needed (a pure function;
/// [`check`] feeds it the bucket's answer).
pub fn judge_lock(bucket: &str, lock: Option<&LockFacts>, needed: u64) -> Vec<Finding> {
    let Some(lock) = lock.filter(|l| l.enabled) else {
        return vec![problem(format!(
            "{bucket} has no Object Lock: anyone holding a credential that can delete can destroy the archive; \
             create a bucket with Object Lock and a default retention (docs/archive.md)"
        ))];
    };
    let Some((mode, days)) = &lock.default_retention else {
        return vec![problem(format!(
            "{bucket} has Object Lock but no default retention: objects snapsite writes are not locked; \
             set a default retention of at least {needed} days in COMPLIANCE mode (docs/archive.md)"
        ))];
    };
    let mut out = Vec::new();
    if *days < needed {
        out.push(problem(format!(
            "{bucket}'s default retention is {days} days, the archive needs {needed} \
             (the retention policy's keep time plus the span from a full set to its last incremental): \
             older sets can be deleted while they are still needed; raise it to {needed} days"
        )));
    } else {
        out.push(info(format!(
            "{bucket}: Object Lock {mode}, {days} days (needs {needed})"
        )));
    }
    if mode == "GOVERNANCE" {
        out.push(info(format!(
            "{bucket} locks in GOVERNANCE mode: a user with s3:BypassGovernanceRetention can still delete; \
             COMPLIANCE protects against stolen admin credentials too"
        )));
    } else if mode != "COMPLIANCE" {
        out.push(problem(format!(
            "{bucket}: unknown Object Lock mode `{}`",
            mode.escape_debug()
        )));
    }
    out
}

/// Judge the delete probe's answer.
pub fn judge_probe(bucket: &str, answer: &Result<ProbeAnswer, String>) -> Finding {
    match answer {
        Ok(ProbeAnswer::Refused) => info(format!(
            "{bucket}: this site's credentials cannot delete (probe refused)"
        )),
        Ok(ProbeAnswer::Accepted) => problem(format!(
            "{bucket}: this site's credentials can delete objects (a delete probe was accepted): \
             an intruder with them can hide every set behind delete markers; \
             allow only s3:PutObject, s3:GetObject and s3:ListBucket (docs/archive.md)"
        )),
        Err(e) => problem(format!(
            "{bucket}: cannot tell whether this site's credentials can delete: {e}"
        )),
    }
}

/// `check`'s findings for one archive bucket, with this site's credentials.
pub fn check(bucket: &dyn LockedBucket, needed: u64) -> Vec<Finding> {
    let name = bucket.display();
    let mut out = match bucket.object_lock() {
        Ok(lock) => judge_lock(&name, lock.as_ref(), needed),
        Err(e) => vec![problem(format!(
            "cannot read {name}'s Object Lock configuration: {e} \
             (the credentials need s3:GetBucketObjectLockConfiguration, docs/archive.md)"
        ))],
    };
    out.push(judge_probe(&name, &bucket.delete_probe(&probe_key())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(mode: &str, days: u64) -> LockFacts {
        LockFacts {
            enabled: true,
            default_retention: Some((mode.into(), days)),
        }
    }

    #[test]
    fn needed_days_round_up_and_add_the_chain() {
        assert_eq!(needed_days(30 * DAY_SECS, 7 * DAY_SECS), 37);
        assert_eq!(needed_days(30 * DAY_SECS + 1, 0), 31);
        assert_eq!(needed_days(3600, 0), 1);
        assert_eq!(needed_days(u64::MAX, u64::MAX), u64::MAX.div_ceil(DAY_SECS));
    }

    #[test]
    fn a_long_compliance_lock_is_fine() {
        let f = judge_lock("b", Some(&lock("COMPLIANCE", 40)), 37);
        assert_eq!(f.len(), 1);
        assert!(!f[0].problem, "{f:?}");
        assert!(f[0].text.contains("COMPLIANCE, 40 days (needs 37)"));
    }

    #[test]
    fn a_short_lock_is_a_problem_naming_both_numbers() {
        let f = judge_lock("b", Some(&lock("COMPLIANCE", 30)), 37);
        assert!(f[0].problem);
        assert!(
            f[0].text.contains("30 days, the archive needs 37"),
            "{}",
            f[0].text
        );
    }

    #[test]
    fn governance_is_a_note_and_an_unknown_mode_a_problem() {
        let f = judge_lock("b", Some(&lock("GOVERNANCE", 40)), 1);
        assert_eq!(f.iter().filter(|x| x.problem).count(), 0);
        assert!(f[1].text.contains("BypassGovernanceRetention"));
        let f = judge_lock("b", Some(&lock("weird\n", 40)), 1);
        assert!(f[1].problem && f[1].text.contains("weird\\n"), "{f:?}");
    }

    #[test]
    fn no_lock_or_no_default_retention_is_a_problem() {
        for l in [
            None,
            Some(LockFacts {
                enabled: false,
                default_retention: Some(("COMPLIANCE".into(), 99)),
            }),
            Some(LockFacts {
                enabled: true,
                default_retention: None,
            }),
        ] {
            let f = judge_lock("b", l.as_ref(), 1);
            assert_eq!(f.len(), 1);
            assert!(f[0].problem, "{l:?}: {f:?}");
        }
    }

    #[test]
    fn credentials_that_can_delete_are_a_problem() {
        assert!(!judge_probe("b", &Ok(ProbeAnswer::Refused)).problem);
        assert!(judge_probe("b", &Ok(ProbeAnswer::Accepted)).problem);
        assert!(judge_probe("b", &Err("timeout".into())).problem);
    }

    #[test]
    fn probe_keys_stay_in_their_prefix_and_differ() {
        let a = probe_key();
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(a.starts_with("snapsite-probe/"));
        assert_ne!(a, probe_key());
    }
}
