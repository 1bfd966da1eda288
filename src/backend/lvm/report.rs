//! `lvs --reportformat json` and the LVM commands behind it. Every LVM
//! program runs with `LC_ALL=C` (messages we match on, decimal points), sizes
//! are asked for in bytes without suffix, and on LVM 2.03 every value of the
//! JSON report is a string.

use serde::Deserialize;

use crate::base::cmd::Cmd;
use crate::base::error::{Error, Result};

/// An LVM program (`lvs`, `lvcreate`, ...) with the environment it needs.
pub fn lvm(program: &str) -> Cmd {
    Cmd::new(program).env("LC_ALL", "C")
}

/// The fields `lvs` is asked for, in the order of [`LvInfo`].
pub const LV_FIELDS: &str =
    "lv_name,vg_name,lv_uuid,lv_attr,lv_size,pool_lv,origin,thin_id,lv_tags,lv_active,segtype";

/// One logical volume as `lvs` reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LvInfo {
    pub name: String,
    pub vg: String,
    pub uuid: String,
    pub attr: String,
    pub size: u64,
    /// The thin pool of a thin LV.
    pub pool: Option<String>,
    /// The origin of a snapshot (thin or classic).
    pub origin: Option<String>,
    /// The thin device id inside the pool (thin LVs only).
    pub thin_id: Option<u64>,
    pub tags: Vec<String>,
    pub active: bool,
    /// `thin`, `thin-pool`, `linear`, `striped`, `snapshot`...
    pub segtype: String,
}

impl LvInfo {
    pub fn is_thin(&self) -> bool {
        self.segtype == "thin"
    }
    pub fn is_thin_pool(&self) -> bool {
        self.segtype == "thin-pool"
    }
    /// Hidden sub-LVs are reported as `[name]` with `-a`.
    pub fn is_hidden(&self) -> bool {
        self.name.starts_with('[')
    }
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
    /// The value of the first tag `<prefix><value>`.
    pub fn tag_value(&self, prefix: &str) -> Option<&str> {
        self.tags.iter().find_map(|t| t.strip_prefix(prefix))
    }
    /// A classic snapshot whose copy-on-write space ran out: state `I`
    /// (invalid) or `S` (invalid, suspended) in the fifth attribute.
    pub fn is_invalid_snapshot(&self) -> bool {
        matches!(self.attr.chars().nth(4), Some('I' | 'S'))
    }
}

#[derive(Deserialize)]
struct Report {
    report: Vec<ReportSection>,
}

#[derive(Deserialize)]
struct ReportSection {
    #[serde(default)]
    lv: Vec<RawLv>,
}

#[derive(Deserialize)]
struct RawLv {
    lv_name: String,
    #[serde(default)]
    vg_name: String,
    #[serde(default)]
    lv_uuid: String,
    #[serde(default)]
    lv_attr: String,
    #[serde(default)]
    lv_size: String,
    #[serde(default)]
    pool_lv: String,
    #[serde(default)]
    origin: String,
    #[serde(default)]
    thin_id: String,
    #[serde(default)]
    lv_tags: String,
    #[serde(default)]
    lv_active: String,
    #[serde(default)]
    segtype: String,
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Parse `lvs --reportformat json --units b --nosuffix -o LV_FIELDS`.
pub fn parse_lvs(json: &str) -> Result<Vec<LvInfo>> {
    let r: Report = serde_json::from_str(json).map_err(|e| {
        Error::storage(format!(
            "unexpected `lvs --reportformat json` output ({e}): {}",
            json.chars().take(200).collect::<String>()
        ))
    })?;
    let mut out = Vec::new();
    for raw in r.report.into_iter().flat_map(|s| s.lv) {
        let size = if raw.lv_size.is_empty() {
            0
        } else {
            raw.lv_size.parse().map_err(|_| {
                Error::storage(format!(
                    "lvs: size `{}` of {} is not a byte count",
                    raw.lv_size, raw.lv_name
                ))
            })?
        };
        out.push(LvInfo {
            thin_id: raw.thin_id.parse().ok(),
            tags: raw
                .lv_tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect(),
            active: raw.lv_active == "active",
            name: raw.lv_name,
            vg: raw.vg_name,
            uuid: raw.lv_uuid,
            attr: raw.lv_attr,
            size,
            pool: non_empty(raw.pool_lv),
            origin: non_empty(raw.origin),
            segtype: raw.segtype,
        });
    }
    Ok(out)
}

/// Every LV of volume group `vg` (hidden ones included), or `None` when the
/// VG does not exist.
pub fn vg_lvs(vg: &str) -> Result<Option<Vec<LvInfo>>> {
    let argv = [
        "--reportformat",
        "json",
        "--units",
        "b",
        "--nosuffix",
        "-a",
        "-o",
        LV_FIELDS,
        "--",
        vg,
    ];
    let out = lvm("lvs").args(argv).run_raw()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not found") {
            return Ok(None);
        }
        let mut full = vec!["lvs".into()];
        full.extend(argv.iter().map(Into::into));
        return Err(crate::base::cmd::failure(&full, out.status, &out.stderr));
    }
    parse_lvs(&String::from_utf8_lossy(&out.stdout)).map(Some)
}

/// One LV, or `None` when it (or its VG) does not exist.
pub fn lv_info(vg: &str, lv: &str) -> Result<Option<LvInfo>> {
    Ok(vg_lvs(vg)?.and_then(|all| all.into_iter().find(|l| l.name == lv)))
}

/// The size of volume group `vg` in bytes.
pub fn vg_size(vg: &str) -> Result<u64> {
    let out = lvm("vgs")
        .args([
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_size",
            "--",
        ])
        .arg(vg)
        .output()?;
    out.trim().parse().map_err(|_| {
        Error::storage(format!(
            "vgs: size `{}` of {vg} is not a byte count",
            out.trim()
        ))
    })
}

/// The device-mapper name of `vg/lv` (plus a layer like `tpool`): dashes
/// inside names are doubled, parts are joined by single dashes.
pub fn dm_name(vg: &str, lv: &str, layer: Option<&str>) -> String {
    let mut s = format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"));
    if let Some(l) = layer {
        s.push('-');
        s.push_str(l);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::thin::tests::fixture;
    use super::*;

    #[test]
    fn parses_thin_lvs_snapshots_and_pool() {
        let lvs = parse_lvs(&fixture("lvs-all.json")).unwrap();
        assert_eq!(lvs.len(), 7);
        let data = &lvs[0];
        assert_eq!(data.name, "data");
        assert!(data.is_thin() && data.active);
        assert_eq!(data.size, 64 << 20);
        assert_eq!(data.pool.as_deref(), Some("pool"));
        assert_eq!(data.thin_id, Some(1));
        assert_eq!(data.origin, None);
        let s = &lvs[1];
        assert_eq!(s.name, "data.20261127T080000.123Z-full");
        assert_eq!(s.uuid, "aWuivk-zyKd-8Tko-IYJJ-eeA3-f2gg-z1NQXu");
        assert_eq!(s.origin.as_deref(), Some("data"));
        assert_eq!(s.thin_id, Some(2));
        assert!(!s.active);
        assert!(s.has_tag("snapsite"));
        assert_eq!(
            s.tag_value("snapsite-set-"),
            Some("20261127T080000.123Z-full")
        );
        let pool = lvs.iter().find(|l| l.name == "pool").unwrap();
        assert!(pool.is_thin_pool() && !pool.is_hidden());
        assert!(
            lvs.iter()
                .any(|l| l.name == "[pool_tmeta]" && l.is_hidden())
        );
    }

    #[test]
    fn parses_classic_lv_and_snapshot() {
        let c = &parse_lvs(&fixture("lvs-classic.json")).unwrap()[0];
        assert_eq!(c.segtype, "linear");
        assert!(!c.is_thin() && c.thin_id.is_none() && c.pool.is_none());
        let s = &parse_lvs(&fixture("lvs-classic-snapshot.json")).unwrap()[0];
        assert_eq!(s.origin.as_deref(), Some("classic"));
        assert!(!s.is_invalid_snapshot());
        let mut bad = s.clone();
        bad.attr = "swi-I-s---".into();
        assert!(bad.is_invalid_snapshot());
    }

    #[test]
    fn garbage_is_an_error_and_dm_names_escape_dashes() {
        assert!(parse_lvs("  Volume group \"x\" not found").is_err());
        assert_eq!(
            dm_name("vg-a", "data.20261127T080000.123Z-full", None),
            "vg--a-data.20261127T080000.123Z--full"
        );
        assert_eq!(dm_name("capvg", "pool", Some("tpool")), "capvg-pool-tpool");
    }
}
