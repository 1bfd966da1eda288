//! Compression on the wire with real OpenZFS and LVM thin: full and
//! incremental round trips with `compress = "zstd"` compared byte for byte,
//! the receipts' checksums those of the uncompressed streams, and no zstd
//! over a ZFS stream that is already compressed (`-c`).

use super::*;
use crate::output::sent;

/// Mail-like bytes: text lines and base64 lines (compress ~2x with zstd).
fn mail_like(seed: u64, len: usize) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let noise = pattern(seed, len);
    let mut out = Vec::with_capacity(len + 200);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(
            format!("Subject: message {i} from user{}\r\n\r\nthe meeting is moved to thursday, please find the report attached\r\n", i % 31)
                .as_bytes(),
        );
        for k in 0..152 {
            out.push(B64[(noise[(i * 152 + k) % len] & 63) as usize]);
            if k % 76 == 75 {
                out.extend_from_slice(b"\r\n");
            }
        }
        i += 1;
    }
    out.truncate(len);
    out
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// The standby's receipt of `role` in committed set `id`: (bytes, blake3).
fn receipt(state: &Path, id: &str, role: &str) -> (u64, String) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join(format!("sets/{id}.json"))).unwrap())
            .unwrap();
    let r = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"] == role)
        .unwrap()["receipt"]
        .clone();
    (
        r["bytes"].as_u64().unwrap(),
        r["blake3"].as_str().unwrap().to_string(),
    )
}

/// The sites' configs: local transport with `standby_extra`, a no-op replay.
fn configs(dir: &Path, pri_vols: &str, stb_vols: &str, standby_extra: &str) -> (PathBuf, PathBuf) {
    let replay = "[replay]\ncommand = [\"/bin/true\"]\n";
    site_configs(
        dir,
        pri_vols,
        stb_vols,
        replay,
        Standby::Local(standby_extra),
        "",
    )
}

#[test]
fn wan_zfs_compressed_round_trip_and_no_zstd_over_zfs_c() {
    require_lab!();
    let lab = ZfsSites::new("wz", 512 * MIB, 512 * MIB);
    let (a, c, dir) = (&lab.a, &lab.c, &lab.dir);
    // blob: plain `zfs send` (zstd applies); redolog: `-c` with lz4 on
    // disk (zstd is skipped for it).
    sh(&["zfs", "create", "-o", "compression=off", &a.dataset("blob")]);
    sh(&[
        "zfs",
        "create",
        "-o",
        "compression=lz4",
        &a.dataset("redolog"),
    ]);
    let mut pri = String::new();
    let mut stb = String::new();
    for r in ["blob", "redolog"] {
        let opts = if r == "redolog" {
            "zfs = { compressed = true }\n"
        } else {
            ""
        };
        pri.push_str(&lab.primary_volume(r, opts));
        stb.push_str(&lab.standby_volume(r, None));
    }
    let (pri_cfg, stb_cfg) = configs(dir, &pri, &stb, "compress = \"zstd:3\"");
    for (i, r) in ["blob", "redolog"].iter().enumerate() {
        std::fs::write(
            zfs_mountpoint(&a.dataset(r)).join("mail"),
            mail_like(i as u64, 6 * MIB as usize),
        )
        .unwrap();
    }
    sh(&["sync"]);
    let id1 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    let r1 = snapsite_json(&pri_cfg, &["ship", "--json"]);
    eprintln!("zfs full: {r1}");
    assert_eq!(r1["committed"][0], id1.as_str());
    let blob = sent(&r1, "blob");
    assert_eq!(blob["compression"], "zstd:3");
    assert!(
        blob["wire_bytes"].as_f64().unwrap() < 0.8 * blob["bytes"].as_f64().unwrap(),
        "blob travels compressed: {blob}"
    );
    let redo = sent(&r1, "redolog");
    assert_eq!(redo["compression"], "none", "no zstd over zfs send -c");
    assert!(redo["wire_bytes"].as_u64().unwrap() >= redo["bytes"].as_u64().unwrap());
    // The receipt's checksum is over the uncompressed stream, which is what
    // `zfs send` produces again here.
    let (bytes, hash) = receipt(&dir.join("state-stb"), &id1, "blob");
    assert_eq!(bytes, blob["bytes"].as_u64().unwrap());
    let stream = Command::new("zfs")
        .args(["send", &format!("{}@{id1}", a.dataset("blob"))])
        .output()
        .unwrap();
    assert!(stream.status.success());
    assert_eq!(stream.stdout.len() as u64, bytes);
    assert_eq!(blake3_hex(&stream.stdout), hash);

    // Incremental, then the data compared through a clone of each replica.
    std::fs::write(
        zfs_mountpoint(&a.dataset("blob")).join("more"),
        mail_like(7, 2 * MIB as usize),
    )
    .unwrap();
    sh(&["sync"]);
    let id2 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    let r2 = snapsite_json(&pri_cfg, &["ship", "--json"]);
    assert_eq!(sent(&r2, "blob")["base"], id1.as_str());
    assert!(
        sent(&r2, "blob")["wire_bytes"].as_u64().unwrap()
            < sent(&r2, "blob")["bytes"].as_u64().unwrap()
    );
    for r in ["blob", "redolog"] {
        assert_eq!(
            zfs_get("guid", &format!("{}@{id2}", a.dataset(r))),
            zfs_get(
                "guid",
                &format!("{}@{id2}", c.dataset(&format!("replica/{r}")))
            )
        );
        let clone = c.dataset(&format!("check-{r}"));
        let mp = dir.join(format!("check-{r}"));
        sh(&[
            "zfs",
            "clone",
            "-o",
            &format!("mountpoint={}", mp.display()),
            &format!("{}@{id2}", c.dataset(&format!("replica/{r}"))),
            &clone,
        ]);
        let src = zfs_mountpoint(&a.dataset(r));
        assert_eq!(sha256(&mp.join("mail")), sha256(&src.join("mail")), "{r}");
        if r == "blob" {
            assert_eq!(sha256(&mp.join("more")), sha256(&src.join("more")));
        }
        sh(&["zfs", "destroy", &clone]);
    }
    let _ = stb_cfg;
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

#[test]
fn wan_lvm_compressed_full_and_incremental_round_trip() {
    require_lab!();
    let lab = LvmSites::new("wl", 1024 * MIB, "768M");
    let (pri, stb) = (&lab.pri, &lab.stb);
    let roles = ["blob", "redolog"];
    let dir = &lab.dir;
    let mut p = String::new();
    let mut s = String::new();
    for r in roles {
        lab.primary_thin(r, "64M");
        p.push_str(&lab.primary_volume(r, ""));
        s.push_str(&lab.standby_volume(r, None));
    }
    let (pri_cfg, _stb_cfg) = configs(dir, &p, &s, "compress = \"zstd\"");
    write_at(&pri.dev("blob"), 0, &mail_like(1, 8 * MIB as usize));
    write_at(&pri.dev("redolog"), 0, &mail_like(2, MIB as usize));
    let id1 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    let r1 = snapsite_json(&pri_cfg, &["ship", "--json"]);
    eprintln!("lvm full: {r1}");
    let blob = sent(&r1, "blob");
    assert_eq!(blob["compression"], "zstd:3");
    assert!(blob["wire_bytes"].as_f64().unwrap() < 0.8 * blob["bytes"].as_f64().unwrap());
    let digest = |vg: &VolumeGroup, r: &str, id: &str| {
        let lv = format!("{r}.{id}");
        if vg.lvs_field(&lv, "lv_active") != "active" {
            sh(&["lvchange", "-ay", "-K", &vg.lv(&lv)]);
        }
        sha256(&vg.dev(&lv))
    };
    for r in roles {
        assert_eq!(digest(pri, r, &id1), digest(stb, r, &id1), "{r} {id1}");
    }
    // A changed range: the incremental is compressed too.
    write_at(&pri.dev("blob"), 20 * MIB, &mail_like(3, 2 * MIB as usize));
    let id2 = snapsite_ok(&pri_cfg, &["snapshot"]).trim().to_string();
    let r2 = snapsite_json(&pri_cfg, &["ship", "--json"]);
    let blob = sent(&r2, "blob");
    assert_eq!(blob["base"], id1.as_str());
    assert!(blob["wire_bytes"].as_u64().unwrap() < blob["bytes"].as_u64().unwrap());
    for r in roles {
        assert_eq!(digest(pri, r, &id2), digest(stb, r, &id2), "{r} {id2}");
    }
    let (bytes, _) = receipt(&dir.join("state-stb"), &id2, "blob");
    assert_eq!(bytes, blob["bytes"].as_u64().unwrap());
}
