//! Room left in LVM's own bookkeeping, which every snapshot uses up: the
//! volume group's **metadata area** (each LV, every snapshot included, is a
//! few hundred bytes of the VG's metadata text, which LVM rewrites whole
//! into the metadata area of each PV at every change and keeps the old copy
//! while it writes the new one) and the thin pool's **metadata** (the
//! mappings of its thin LVs). When the first is full `lvcreate` fails, so
//! every snapshot and every receive stops; when the second is full every
//! thin LV of the pool stops (docs/benchmarks.md, "LVM thin: the limit on
//! snapshots", has the measured sizes). `check` warns before either.

use super::report::lvm;
use super::thin::Pool;
use crate::base::config::Volume;
use crate::base::error::{Error, Result};

/// Warn when less than this share (percent) of the usable metadata area is
/// left.
pub const MDA_WARN_PERCENT: u64 = 20;

/// A volume group's metadata area as `vgs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VgMda {
    /// `vg_mda_free`: bytes left for the metadata text (LVM counts it
    /// against the usable part, about half the area).
    pub free: u64,
    /// `vg_mda_size`: the whole area, bytes.
    pub size: u64,
    /// `lv_count`: visible LVs in the VG.
    pub lvs: u64,
}

impl VgMda {
    /// The bytes the metadata text may use: LVM keeps two copies.
    pub fn usable(&self) -> u64 {
        self.size / 2
    }

    /// Bytes of metadata text per LV now (the VG's own header counted in),
    /// at least 400 (what a snapshot LV with snapsite's tags costs).
    pub fn per_lv(&self) -> u64 {
        let used = self.usable().saturating_sub(self.free);
        used.checked_div(self.lvs).unwrap_or(0).max(400)
    }

    /// About how many more LVs fit.
    pub fn more_lvs(&self) -> u64 {
        self.free / self.per_lv()
    }
}

#[derive(serde::Deserialize)]
struct Report {
    report: Vec<Section>,
}

#[derive(serde::Deserialize)]
struct Section {
    #[serde(default)]
    vg: Vec<RawVg>,
}

#[derive(serde::Deserialize)]
struct RawVg {
    vg_name: String,
    vg_mda_free: String,
    vg_mda_size: String,
    lv_count: String,
}

/// The fields `vgs` is asked for.
const VG_FIELDS: &str = "vg_name,vg_mda_free,vg_mda_size,lv_count";

/// Parse `vgs --reportformat json --units b --nosuffix -o VG_FIELDS -- VG`
/// for volume group `vg`.
pub fn parse_vg_mda(json: &str, vg: &str) -> Result<Option<VgMda>> {
    let r: Report = serde_json::from_str(json).map_err(|e| {
        Error::storage(format!(
            "unexpected `vgs --reportformat json` output ({e}): {}",
            json.chars().take(200).collect::<String>()
        ))
    })?;
    let Some(raw) = r
        .report
        .into_iter()
        .flat_map(|s| s.vg)
        .find(|v| v.vg_name == vg)
    else {
        return Ok(None);
    };
    let num = |field: &str, v: &str| -> Result<u64> {
        v.trim().parse().map_err(|_| {
            Error::storage(format!(
                "vgs: {field} `{v}` of volume group {vg} is not a number"
            ))
        })
    };
    Ok(Some(VgMda {
        free: num("vg_mda_free", &raw.vg_mda_free)?,
        size: num("vg_mda_size", &raw.vg_mda_size)?,
        lvs: num("lv_count", &raw.lv_count)?,
    }))
}

/// Volume group `vg`'s metadata area, or `None` when the VG does not exist.
pub fn vg_mda(vg: &str) -> Result<Option<VgMda>> {
    let argv = [
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        VG_FIELDS,
        "--",
        vg,
    ];
    let out = lvm("vgs").args(argv).run_raw()?;
    if !out.status.success() {
        if String::from_utf8_lossy(&out.stderr).contains("not found") {
            return Ok(None);
        }
        let mut full = vec!["vgs".into()];
        full.extend(argv.iter().map(Into::into));
        return Err(crate::base::cmd::failure(&full, out.status, &out.stderr));
    }
    parse_vg_mda(&String::from_utf8_lossy(&out.stdout), vg)
}

/// The metadata area of `vg` nearly full, described; `None` while more than
/// [`MDA_WARN_PERCENT`] of it is left.
pub fn mda_problem(vg: &str, m: &VgMda) -> Option<String> {
    let usable = m.usable();
    if usable == 0 || u128::from(m.free) * 100 >= u128::from(usable) * u128::from(MDA_WARN_PERCENT)
    {
        return None;
    }
    let left = u128::from(m.free) * 100 / u128::from(usable);
    Some(format!(
        "volume group {vg}'s metadata area is nearly full: {} of {} bytes left ({left}%, about {} more LVs at {} bytes each; {} LVs now). When it is full lvcreate fails: every snapshot and every receive in this VG stops. Keep fewer snapshots (retention) or give the VG PVs with a larger area (pvcreate --metadatasize, e.g. 16m, on a new PV; vgextend, then pvmove off the old one)",
        m.free,
        usable,
        m.more_lvs(),
        m.per_lv(),
        m.lvs
    ))
}

/// The primary's pool fills at [`PRIMARY_POOL_WARN_PERCENT`]: the
/// production volumes live there, and the snapshots keep every block the
/// volumes overwrite.
pub const PRIMARY_POOL_WARN_PERCENT: u64 = 80;

/// The primary's thin pool `vg/name` (of volume `vol`) past
/// [`PRIMARY_POOL_WARN_PERCENT`] of its data or metadata, described; `None`
/// below it or when its fill level cannot be read (logged).
pub fn primary_pool_problem(vol: &Volume, vg: &str, name: &str) -> Option<String> {
    let pool = Pool {
        vg: vg.to_string(),
        name: name.to_string(),
    };
    let u = pool
        .usage()
        .map_err(|e| tracing::warn!(volume = %vol.role, error = %e, "cannot read the thin pool's fill level (inactive?)"))
        .ok()?;
    let (d, m) = u.percents();
    (d >= PRIMARY_POOL_WARN_PERCENT || m >= PRIMARY_POOL_WARN_PERCENT).then(|| {
        format!(
            "volume `{}`: thin pool {vg}/{name} is {d}% full (metadata {m}%, warning at {PRIMARY_POOL_WARN_PERCENT}%): when its data or its metadata is full every thin LV in it stops, the production volumes included, and the snapshots keep the blocks the volumes overwrite. Extend it (lvextend -L +SIZE {vg}/{name}; lvextend --poolmetadatasize +SIZE {vg}/{name}) or keep fewer snapshots",
            vol.role
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::thin::tests::fixture;
    use super::*;

    #[test]
    fn a_fresh_vg_has_room_and_a_full_one_is_named() {
        let fresh = parse_vg_mda(&fixture("vgs-mda-fresh.json"), "mda")
            .unwrap()
            .unwrap();
        assert!(fresh.free > 0 && fresh.size > fresh.free, "{fresh:?}");
        assert_eq!(mda_problem("mda", &fresh), None);
        let full = parse_vg_mda(&fixture("vgs-mda-full.json"), "mda")
            .unwrap()
            .unwrap();
        assert!(full.lvs > fresh.lvs, "{full:?}");
        let p = mda_problem("mda", &full).expect("a nearly full area is a problem");
        assert!(
            p.contains("volume group mda") && p.contains("pvcreate --metadatasize"),
            "{p}"
        );
        assert_eq!(
            parse_vg_mda(&fixture("vgs-mda-fresh.json"), "other").unwrap(),
            None
        );
    }

    #[test]
    fn the_threshold_is_a_share_of_the_usable_half() {
        let at = |free| VgMda {
            free,
            size: 1_044_480,
            lvs: 100,
        };
        // 20 % of 522 240 is 104 448
        assert_eq!(mda_problem("vg", &at(104_448)), None);
        assert!(mda_problem("vg", &at(104_447)).is_some());
        assert!(
            mda_problem("vg", &at(0))
                .unwrap()
                .contains("about 0 more LVs")
        );
        let m = at(436_736);
        assert_eq!(m.per_lv(), (522_240 - 436_736) / 100);
        // nothing counted yet: the floor
        assert_eq!(
            VgMda {
                free: 4000,
                size: 8192,
                lvs: 0
            }
            .per_lv(),
            400
        );
        assert_eq!(
            mda_problem(
                "vg",
                &VgMda {
                    free: 0,
                    size: 0,
                    lvs: 0
                }
            ),
            None
        );
    }

    #[test]
    fn bad_vgs_output_is_an_error_naming_the_field() {
        let bad = r#"{"report":[{"vg":[{"vg_name":"mda","vg_mda_free":"x","vg_mda_size":"1","lv_count":"1"}]}]}"#;
        let e = parse_vg_mda(bad, "mda").unwrap_err().to_string();
        assert!(e.contains("vg_mda_free") && e.contains("mda"), "{e}");
        assert!(parse_vg_mda("not json", "mda").is_err());
    }
}
