//! LVM's own bookkeeping near full (issue 23, "bounded"): a VG with a small
//! metadata area and a small thin pool, filled with snapshots and data the
//! way a long history fills a real one; `check` warns on both sites before
//! `lvcreate` fails, and a snapshot that does fail leaves nothing behind.

use super::*;
use crate::sites::{Standby, own_standby_volume, site_configs, volume};

/// A VG on one PV with a metadata area of `mda` (`pvcreate --metadatasize`,
/// data aligned to 64 KiB so the area is really that small), removed on
/// drop (before its loop device: declare the loop device first).
struct SmallMdaVg {
    name: String,
    pv: String,
}

impl SmallMdaVg {
    fn new(name: &str, pv: &Path, mda: &str) -> SmallMdaVg {
        let pv = pv.to_str().expect("utf-8 path").to_string();
        sh(&[
            "pvcreate",
            "-y",
            "-ff",
            "--metadatasize",
            mda,
            "--dataalignment",
            "64k",
            &pv,
        ]);
        sh(&["vgcreate", "-y", name, &pv]);
        SmallMdaVg {
            name: name.to_string(),
            pv,
        }
    }

    fn lv(&self, lv: &str) -> String {
        format!("{}/{lv}", self.name)
    }

    /// (`vg_mda_free`, `vg_mda_size`) in bytes.
    fn mda(&self) -> (u64, u64) {
        let out = sh(&[
            "vgs",
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "vg_mda_free,vg_mda_size",
            "--",
            &self.name,
        ]);
        let f: Vec<u64> = out
            .split_whitespace()
            .map(|v| v.parse().expect("a byte count"))
            .collect();
        (f[0], f[1])
    }

    fn lv_names(&self) -> Vec<String> {
        sh(&["lvs", "--noheadings", "-o", "lv_name", "--", &self.name])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }
}

impl Drop for SmallMdaVg {
    fn drop(&mut self) {
        teardown(&["vgremove", "-ff", "-y", &self.name]);
        let _ = run(&["pvremove", "-ff", "-y", &self.pv]);
    }
}

/// `lvcreate` of a read-only thin snapshot of `vg/lv` named `lv.s<i>`,
/// with a tag `pad` bytes longer than 21; stderr when it fails.
fn snap(vg: &SmallMdaVg, lv: &str, i: usize, pad: usize) -> Result<(), String> {
    let out = Command::new("lvcreate")
        .args(["-y", "-s", "-pr", "-n"])
        .arg(format!("{lv}.s{i}"))
        .args([
            "--addtag",
            &format!("snapsite-test-filler-{}", "x".repeat(pad)),
        ])
        .arg(vg.lv(lv))
        .output()
        .expect("run lvcreate");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn lvm_check_warns_before_the_metadata_area_or_the_primary_pool_is_full() {
    require_lab!();
    let name = unique_name("mda");
    let dir = scratch().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let lo = LoopDevice::attach(&sparse_file(&name, 512 * MIB));
    let vg = SmallMdaVg::new(&name, &lo.path, "64k");
    sh(&[
        "lvcreate",
        "-y",
        "-L",
        "96M",
        "--chunksize",
        "64k",
        "-T",
        &vg.lv("pool"),
    ]);
    let mut p = String::new();
    let mut s = String::new();
    for r in ["mysql", "redolog"] {
        sh(&["lvcreate", "-y", "-V", "64M", "-T", &vg.lv("pool"), "-n", r]);
        p.push_str(&volume(r, "lvm", &vg.lv(r), None, None));
        s.push_str(&own_standby_volume("lvm", &name, r, None));
    }
    let (pri_cfg, stb_cfg) = site_configs(
        &dir,
        &p,
        &s,
        "[replay]\nnone = true\n",
        Standby::Local(""),
        "",
    );
    let (free0, size) = vg.mda();
    eprintln!("metadata area: {free0} of {size} bytes free");
    assert!(
        size < 256 * 1024,
        "pvcreate --metadatasize made a small area: {size}"
    );

    let check = snapsite_ok(&pri_cfg, &["check"]);
    assert!(!check.contains("metadata area"), "{check}");
    assert!(!check.contains("full (metadata"), "{check}");

    // The primary's pool past 80 %: 80 of its 96 MiB written.
    write_pattern(
        &PathBuf::from(format!("/dev/{name}/mysql")),
        0,
        7,
        48 * MIB as usize,
    );
    write_pattern(
        &PathBuf::from(format!("/dev/{name}/redolog")),
        0,
        8,
        32 * MIB as usize,
    );
    sh(&["sync"]);
    let check = snapsite_ok(&pri_cfg, &["check"]);
    assert!(
        check.contains(&format!("thin pool {name}/pool is"))
            && check.contains("warning at 80%")
            && check.contains("volume `mysql`"),
        "{check}"
    );

    // Snapshots until less than 20 % of the usable half is left: `check`
    // warns on both sites (the standby: failover's snapshots are LVs too).
    let usable = size / 2;
    let mut i = 0;
    loop {
        let (free, _) = vg.mda();
        if free * 100 < usable * 20 {
            break;
        }
        i += 1;
        assert!(i < 400, "the area never filled: {free} of {usable}");
        // a long tag (LVM allows 1 024 characters) fills the area in
        // about 45 snapshots instead of 170
        snap(&vg, "mysql", i, 900)
            .unwrap_or_else(|e| panic!("lvcreate {i} failed before the warning: {e}"));
    }
    eprintln!("{i} snapshots: {:?} (free, size)", vg.mda());
    for cfg in [&pri_cfg, &stb_cfg] {
        let check = snapsite_ok(cfg, &["check"]);
        assert!(
            check.contains(&format!(
                "volume group {name}'s metadata area is nearly full"
            )) && check.contains("pvcreate --metadatasize"),
            "{}: {check}",
            cfg.display()
        );
    }
    // On to the real limit: lvcreate's own message, then a snapshot set
    // that cannot be taken leaves no member behind.
    // long tags first, then the last bytes with short ones
    for pad in [900, 0] {
        let err = loop {
            i += 1;
            assert!(i < 800, "lvcreate never failed");
            if let Err(e) = snap(&vg, "mysql", i, pad) {
                break e;
            }
        };
        eprintln!("lvcreate {i} (tag +{pad}) failed: {err}");
        assert!(err.contains("exceeds maximum metadata size"), "{err}");
    }
    let before = vg.lv_names();
    let out = snapsite_run(&pri_cfg, &["snapshot"], None);
    assert!(
        !out.status.success(),
        "a snapshot in a full metadata area failed"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mysql") || err.contains("redolog"),
        "names the volume: {err}"
    );
    assert_eq!(vg.lv_names(), before, "no member of the failed set left");
    let sets = snapsite_ok(&pri_cfg, &["sets"]);
    assert!(!sets.contains("-full"), "no set recorded: {sets}");
    drop(vg);
    drop(lo);
}
