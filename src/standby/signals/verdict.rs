//! A committed set's verdict: clean, or suspect with a reason line per
//! volume and a score. Each reason is a few conditions; its measure is the
//! smallest of their ratios to their thresholds, so it fires at 1.0 and
//! the score (the largest measure) says how near a clean set came.

use crate::base::catalog::Catalog;
use crate::base::catalog::signals::{SetVerdict, Verdict, VolumeSignals, VolumeVerdict};
use crate::base::detect::DetectSettings;
use crate::base::error::Result;
use crate::base::model::{Manifest, parse_set_id};

const MIB: f64 = (1u64 << 20) as f64;

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// A size for a reason line: MiB, or KiB below one (a threshold of
/// 32 KiB printed as "0.0 MiB" said nothing).
fn mib(b: u64) -> String {
    if b < 1 << 20 {
        format!("{:.0} KiB", b as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", b as f64 / MIB)
    }
}

/// Median of the byte counts (`None` below 3 of them: no baseline yet).
pub fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.len() < 3 {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Judge one volume's signals against the thresholds and its baseline.
pub fn judge_volume(
    d: &DetectSettings,
    role: &str,
    sig: Option<VolumeSignals>,
    baseline: Option<u64>,
) -> VolumeVerdict {
    let mut out = VolumeVerdict {
        role: role.to_string(),
        reasons: Vec::new(),
        score: 0.0,
        baseline_bytes: baseline,
        signals: None,
    };
    let Some(s) = sig else { return out };
    // `[detect.volume.ROLE] enabled = false`: measured, never judged.
    if s.incremental && d.enabled {
        let ratio = |have: f64, want: f64| if want > 0.0 { have / want } else { 0.0 };
        // 1. Incompressible data written into files that existed before.
        if let Some(share) = s.rewrite_incompressible_share() {
            let m = ratio(s.rewrite_bytes as f64, d.rewrite_min_bytes as f64)
                .min(ratio(share, d.incompressible_share));
            out.score = out.score.max(m);
            if m >= 1.0 {
                let what = if s.parser == "lvm" {
                    "of blocks mapped before overwritten".to_string()
                } else {
                    format!("rewritten in place in {} existing files", s.files_rewritten)
                };
                out.reasons.push(format!(
                    "{} {what}, {} of it incompressible (thresholds {} and {})",
                    mib(s.rewrite_bytes),
                    pct(share),
                    mib(d.rewrite_min_bytes),
                    pct(d.incompressible_share)
                ));
            }
        }
        // 1b. LVM: the sender's header hid overwrites that the standby's
        // own thin map of the base shows (the header is the primary's
        // word; a compromised primary could list none).
        if let Some(claimed) = s.rewrite_bytes_claimed {
            let hidden = s.rewrite_bytes.saturating_sub(claimed);
            let m = ratio(hidden as f64, d.rewrite_min_bytes as f64);
            out.score = out.score.max(m);
            if m >= 1.0 {
                out.reasons.push(format!(
                    "the primary's stream listed {} of blocks mapped before overwritten, the standby's own thin map shows {}: {} not listed (threshold {})",
                    mib(claimed),
                    mib(s.rewrite_bytes),
                    mib(hidden),
                    mib(d.rewrite_min_bytes)
                ));
            }
        }
        // 2. Existing files renamed to a new extension.
        let m = ratio(s.renames_new_extension as f64, d.rename_min as f64);
        out.score = out.score.max(m);
        if m >= 1.0 {
            out.reasons.push(format!(
                "{} existing files renamed to a new extension, {} files new (threshold {})",
                s.renames_new_extension, s.files_new, d.rename_min
            ));
        }
        // 3. Far more changed than usual, and mostly noise.
        if let (Some(base), Some(share)) = (baseline, s.incompressible_share()) {
            let m = ratio(s.stream_bytes as f64, d.min_changed_bytes as f64)
                .min(ratio(
                    s.stream_bytes as f64,
                    d.growth_factor * (base.max(1)) as f64,
                ))
                .min(ratio(share, d.incompressible_share));
            out.score = out.score.max(m);
            if m >= 1.0 {
                out.reasons.push(format!(
                    "{} changed, {:.1}x the baseline of {} (median of recent sets), {} incompressible (thresholds {}, {}x, {})",
                    mib(s.stream_bytes),
                    s.stream_bytes as f64 / base.max(1) as f64,
                    mib(base),
                    pct(share),
                    mib(d.min_changed_bytes),
                    d.growth_factor,
                    pct(d.incompressible_share)
                ));
            }
        }
    }
    out.score = (out.score * 100.0).round() / 100.0;
    out.signals = Some(s);
    out
}

/// The baseline of `role` before `snapshot`: the median payload of its
/// last `n` incremental transfers of sets of the same kind that were not
/// judged suspect. `suspect` remembers the verdicts read, so a set of
/// several volumes reads each earlier verdict once.
pub fn baseline(
    catalog: &Catalog,
    role: &str,
    snapshot: &str,
    n: usize,
    suspect: &mut std::collections::HashMap<String, bool>,
) -> Result<Option<u64>> {
    let kind = parse_set_id(snapshot).map(|(_, k)| k);
    let mut bytes = Vec::new();
    for snap in catalog.signal_snapshots(role)?.iter().rev() {
        if bytes.len() >= n {
            break;
        }
        if !crate::base::model::older_set(snap, snapshot)
            || parse_set_id(snap).map(|(_, k)| k) != kind
        {
            continue;
        }
        let Some(s) = catalog.signals(role, snap)? else {
            continue;
        };
        if !s.incremental {
            continue;
        }
        let was_suspect = match suspect.get(snap.as_str()) {
            Some(f) => *f,
            None => {
                let f = catalog.judged_suspect(snap)?.unwrap_or(false);
                suspect.insert(snap.clone(), f);
                f
            }
        };
        if !was_suspect {
            bytes.push(s.stream_bytes);
        }
    }
    Ok(median(bytes))
}

/// Judge a set just committed and record its verdict.
pub fn judge_set(d: &DetectSettings, catalog: &Catalog, m: &Manifest) -> Result<SetVerdict> {
    let mut volumes = Vec::new();
    let mut suspect = std::collections::HashMap::new();
    for x in &m.members {
        // Its `[detect.volume.ROLE]`, or `[detect]`.
        let d = d.for_volume(&x.role);
        let sig = catalog.signals(&x.role, &x.snapshot)?;
        // A volume with nothing measured, or sent whole, has no use for one.
        let base = match &sig {
            Some(s) if s.incremental => baseline(
                catalog,
                &x.role,
                &x.snapshot,
                d.baseline_sets as usize,
                &mut suspect,
            )?,
            _ => None,
        };
        volumes.push(judge_volume(d, &x.role, sig, base));
    }
    let suspect = volumes.iter().any(|v| !v.reasons.is_empty());
    let score = volumes.iter().map(|v| v.score).fold(0.0, f64::max);
    let v = SetVerdict {
        set_id: m.id.clone(),
        verdict: if suspect {
            Verdict::Suspect
        } else {
            Verdict::Clean
        },
        score,
        volumes,
        judged_at: jiff::Timestamp::now(),
        cleared_at: None,
    };
    catalog.write_verdict(&v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> DetectSettings {
        DetectSettings::default()
    }

    fn sig() -> VolumeSignals {
        VolumeSignals {
            parser: "btrfs".into(),
            incremental: true,
            complete: true,
            ..Default::default()
        }
    }

    #[test]
    fn an_lvm_header_that_hid_overwrites_is_suspect() {
        let s = VolumeSignals {
            parser: "lvm".into(),
            stream_bytes: 100 << 20,
            data_bytes: 100 << 20,
            rewrite_bytes: 80 << 20,
            rewrite_bytes_claimed: Some(0),
            // Compressible: the lie alone is the reason.
            rewrite_sampled_blocks: 100,
            sampled_blocks: 100,
            ..sig()
        };
        let v = judge_volume(&d(), "blob", Some(s.clone()), None);
        assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
        assert!(
            v.reasons[0].contains("listed 0 KiB") && v.reasons[0].contains("80.0 MiB not listed"),
            "{}",
            v.reasons[0]
        );
        // The header's word agrees with the map (within the threshold).
        let honest = VolumeSignals {
            rewrite_bytes_claimed: Some(30 << 20),
            ..s
        };
        assert!(
            judge_volume(&d(), "blob", Some(honest), None)
                .reasons
                .is_empty()
        );
    }

    #[test]
    fn ordinary_mail_is_clean() {
        // New messages (compressible), an index merge rewriting files with
        // compressible data, a few deletions and maildir flag renames.
        let s = VolumeSignals {
            stream_bytes: 300 << 20,
            data_bytes: 290 << 20,
            rewrite_bytes: 200 << 20,
            files_new: 5000,
            files_rewritten: 40,
            renames: 3000,
            renames_new_extension: 10,
            unlinks: 800,
            sampled_blocks: 1000,
            incompressible_blocks: 100,
            rewrite_sampled_blocks: 800,
            rewrite_incompressible_blocks: 50,
            ..sig()
        };
        let v = judge_volume(&d(), "blob", Some(s), Some(250 << 20));
        assert!(v.reasons.is_empty(), "{:?}", v.reasons);
        assert!(v.score < 1.0);
    }

    #[test]
    fn incompressible_rewrites_are_suspect_and_the_reason_says_so() {
        let s = VolumeSignals {
            stream_bytes: 100 << 20,
            data_bytes: 100 << 20,
            rewrite_bytes: 100 << 20,
            files_rewritten: 600,
            rewrite_sampled_blocks: 400,
            rewrite_incompressible_blocks: 396,
            sampled_blocks: 400,
            incompressible_blocks: 396,
            ..sig()
        };
        let v = judge_volume(&d(), "blob", Some(s.clone()), None);
        assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
        assert!(v.reasons[0].contains("rewritten in place in 600 existing files"));
        assert!(v.score >= 1.0);
        // The same bytes, compressible: clean.
        let mild = VolumeSignals {
            rewrite_incompressible_blocks: 40,
            incompressible_blocks: 40,
            ..s.clone()
        };
        assert!(
            judge_volume(&d(), "blob", Some(mild), None)
                .reasons
                .is_empty()
        );
        // A full transfer is never judged.
        let full = VolumeSignals {
            incremental: false,
            ..s
        };
        assert!(
            judge_volume(&d(), "blob", Some(full), None)
                .reasons
                .is_empty()
        );
    }

    #[test]
    fn growth_needs_a_baseline_the_floor_and_noise() {
        let s = VolumeSignals {
            parser: "raw".into(),
            stream_bytes: 2 << 30,
            data_bytes: 2 << 30,
            sampled_blocks: 8000,
            incompressible_blocks: 7900,
            ..sig()
        };
        assert!(
            judge_volume(&d(), "blob", Some(s.clone()), None)
                .reasons
                .is_empty()
        );
        let v = judge_volume(&d(), "blob", Some(s.clone()), Some(100 << 20));
        assert_eq!(v.reasons.len(), 1);
        assert!(
            v.reasons[0].contains("20.5x the baseline"),
            "{}",
            v.reasons[0]
        );
        // A large import of ordinary mail: grows, but compresses.
        let import = VolumeSignals {
            incompressible_blocks: 800,
            ..s
        };
        assert!(
            judge_volume(&d(), "blob", Some(import), Some(100 << 20))
                .reasons
                .is_empty()
        );
    }

    #[test]
    fn lvm_overwrites_are_named_as_blocks() {
        let s = VolumeSignals {
            parser: "lvm".into(),
            data_bytes: 100 << 20,
            rewrite_bytes: 100 << 20,
            rewrite_sampled_blocks: 400,
            rewrite_incompressible_blocks: 390,
            ..sig()
        };
        let v = judge_volume(&d(), "blob", Some(s), None);
        assert_eq!(v.reasons.len(), 1, "{:?}", v.reasons);
        assert!(
            v.reasons[0].starts_with("100.0 MiB of blocks mapped before overwritten, 98%"),
            "{}",
            v.reasons[0]
        );
    }

    #[test]
    fn renames_to_a_new_extension_are_suspect() {
        let s = VolumeSignals {
            renames: 250,
            renames_new_extension: 250,
            ..sig()
        };
        let v = judge_volume(&d(), "blob", Some(s), None);
        assert_eq!(v.reasons.len(), 1);
        assert!(v.reasons[0].contains("250 existing files renamed"));
    }

    #[test]
    fn a_volume_is_judged_by_its_own_thresholds() {
        let file = std::path::Path::new("/etc/snapsite/b.toml");
        let section: crate::base::detect::DetectSection = toml::from_str(
            "[volume.mysql]\nrewrite_min_bytes = \"512MiB\"\n[volume.redolog]\nenabled = false\n",
        )
        .unwrap();
        let d = crate::base::detect::validate(file, Some(&section), &["blob", "mysql", "redolog"])
            .unwrap();
        // 100 MiB of noise rewritten in place: over [detect]'s 64 MiB,
        // under mysql's 512 MiB; redolog is not judged at all.
        let s = VolumeSignals {
            stream_bytes: 100 << 20,
            data_bytes: 100 << 20,
            rewrite_bytes: 100 << 20,
            files_rewritten: 30,
            rewrite_sampled_blocks: 400,
            rewrite_incompressible_blocks: 400,
            sampled_blocks: 400,
            incompressible_blocks: 400,
            ..sig()
        };
        let blob = judge_volume(d.for_volume("blob"), "blob", Some(s.clone()), None);
        assert_eq!(blob.reasons.len(), 1, "{:?}", blob.reasons);
        assert!(
            blob.reasons[0].contains("thresholds 64.0 MiB"),
            "{:?}",
            blob.reasons
        );
        let mysql = judge_volume(d.for_volume("mysql"), "mysql", Some(s.clone()), None);
        assert!(mysql.reasons.is_empty(), "{:?}", mysql.reasons);
        assert_eq!(mysql.score, 0.2, "100 MiB of 512 MiB");
        let redo = judge_volume(d.for_volume("redolog"), "redolog", Some(s), None);
        assert!(redo.reasons.is_empty());
        assert_eq!(redo.score, 0.0);
        assert!(redo.signals.is_some(), "measured all the same");
    }

    #[test]
    fn sizes_below_a_mebibyte_are_said_in_kibibytes() {
        assert_eq!(mib(32 << 10), "32 KiB");
        assert_eq!(mib(64 << 20), "64.0 MiB");
        assert_eq!(mib((1 << 20) + (1 << 19)), "1.5 MiB");
    }

    #[test]
    fn the_median_needs_three_sets() {
        assert_eq!(median(vec![1, 2]), None);
        assert_eq!(median(vec![5, 1, 100]), Some(5));
    }
}
