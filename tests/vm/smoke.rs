//! Smoke suite of the storage VM: proves that the lab gives snapsite what its
//! ZFS and LVM backends rely on — pools on virtio disks and file vdevs,
//! snapshots, full / incremental / resumed send-receive, holds and bookmarks,
//! LVM thin pools with thin snapshots and `thin_delta`, classic snapshots.
//! If one of these fails, the backend suites cannot be trusted either.

use super::*;

/// Modules, tools and settings the backends need are all there.
#[test]
fn guest_has_the_storage_stack() {
    require_lab!();
    let zfs_version =
        std::fs::read_to_string("/sys/module/zfs/version").expect("zfs module loaded");
    assert!(
        zfs_version.starts_with("2."),
        "unexpected zfs module version {zfs_version:?}"
    );
    let userland = sh(&["zfs", "version"]);
    assert!(
        userland.contains("zfs-2.") && userland.contains("zfs-kmod-2."),
        "zfs version: {userland}"
    );
    for module in ["dm_mod", "dm_thin_pool", "dm_snapshot", "loop"] {
        assert!(
            Path::new("/sys/module").join(module).exists(),
            "kernel module {module} not loaded"
        );
    }
    sh(&["thin_delta", "--version"]);
    sh(&["dmsetup", "version"]);
    // guest without udev: LVM must not wait for it (scripts/vmlab/lvmlocal.conf)
    assert_eq!(
        sh(&["lvmconfig", "activation/udev_sync"]).trim(),
        "udev_sync=0"
    );
    assert_eq!(
        sh(&["lvmconfig", "activation/monitoring"]).trim(),
        "monitoring=0"
    );
    // the binary under test runs in the guest from its host path
    sh(&[snapsite_bin(), "--help"]);
}

/// A pool on a real virtio disk; full, incremental, and resumed-after-a-cut
/// send/receive into a second pool; the received data matches byte for byte.
#[test]
fn zfs_send_receive_full_incremental_and_resumed() {
    require_lab!();
    let disk = claim_disk();
    let part = single_partition(&disk);
    let prim = Zpool::create(&unique_name("prim"), &[&part], &["-O", "compression=lz4"]);
    let stby = Zpool::on_file(&unique_name("stby"), 1024 * MIB, &["-O", "atime=off"]);
    let src = prim.dataset("mysql");
    let dst = stby.dataset("mysql");
    sh(&["zfs", "create", &src]);
    let src_dir = zfs_mountpoint(&src);
    let snap = |ds: &str, s: &str| format!("{ds}@{s}");

    // full
    write_pattern(&src_dir.join("f1"), 0, 1, 8 * MIB as usize);
    sh(&["zfs", "snapshot", &snap(&src, "s1")]);
    // received read-only (and no atime): reading the copy must not modify
    // it, or the next incremental receive would refuse it
    pipe(
        &["zfs", "send", &snap(&src, "s1")],
        &["zfs", "receive", "-s", "-o", "readonly=on", &dst],
    );
    assert_eq!(
        zfs_get("guid", &snap(&dst, "s1")),
        zfs_get("guid", &snap(&src, "s1"))
    );
    let dst_dir = zfs_mountpoint(&dst);
    assert_eq!(
        sha256(&dst_dir.join("f1")),
        sha256(&src_dir.join("f1")),
        "f1 after full receive"
    );

    // incremental
    write_pattern(&src_dir.join("f2"), 0, 2, 4 * MIB as usize);
    sh(&["zfs", "snapshot", &snap(&src, "s2")]);
    pipe(
        &["zfs", "send", "-i", "@s1", &snap(&src, "s2")],
        &["zfs", "receive", "-s", &dst],
    );
    assert_eq!(
        zfs_get("guid", &snap(&dst, "s2")),
        zfs_get("guid", &snap(&src, "s2"))
    );
    for f in ["f1", "f2"] {
        assert_eq!(
            sha256(&dst_dir.join(f)),
            sha256(&src_dir.join(f)),
            "{f} after incremental receive"
        );
    }

    // resumable: cut an incremental stream after 6 MiB of ~24 MiB, resume it
    write_pattern(&src_dir.join("f3"), 0, 3, 24 * MIB as usize);
    sh(&["zfs", "snapshot", &snap(&src, "s3")]);
    let (cut, fed) = pipe_cut(
        &["zfs", "send", "-i", "@s2", &snap(&src, "s3")],
        &["zfs", "receive", "-s", &dst],
        6 * MIB,
    );
    assert_eq!(fed, 6 * MIB, "the stream was shorter than the cut");
    assert!(!cut.status.success(), "receive of a cut stream succeeded");
    assert!(
        !zfs_exists(&snap(&dst, "s3")),
        "s3 exists after a cut stream"
    );
    let token = zfs_get("receive_resume_token", &dst);
    assert!(
        !token.is_empty() && token != "-",
        "no resume token after the cut: {token:?}"
    );
    pipe(
        &["zfs", "send", "-t", &token],
        &["zfs", "receive", "-s", &dst],
    );
    assert_eq!(
        zfs_get("receive_resume_token", &dst),
        "-",
        "token left after resume"
    );
    assert_eq!(
        zfs_get("guid", &snap(&dst, "s3")),
        zfs_get("guid", &snap(&src, "s3"))
    );
    let dst_dir = zfs_mountpoint(&dst);
    for f in ["f1", "f2", "f3"] {
        assert_eq!(
            sha256(&dst_dir.join(f)),
            sha256(&src_dir.join(f)),
            "{f} after resumed receive"
        );
    }
    assert_pattern(&dst_dir.join("f3"), 0, 3, 24 * MIB as usize);
}

/// One `zfs snapshot a@x b@x` is atomic (same txg); a hold blocks destroy;
/// a bookmark alone is enough as the base of an incremental send.
#[test]
fn zfs_atomic_snapshots_holds_and_bookmarks() {
    require_lab!();
    let pool = Zpool::on_file(&unique_name("atom"), 512 * MIB, &[]);
    let copy = Zpool::on_file(&unique_name("copy"), 512 * MIB, &["-O", "atime=off"]);
    let (a, b) = (pool.dataset("a"), pool.dataset("b"));
    sh(&["zfs", "create", &a]);
    sh(&["zfs", "create", &b]);
    write_pattern(&zfs_mountpoint(&a).join("data"), 0, 10, MIB as usize);
    write_pattern(&zfs_mountpoint(&b).join("data"), 0, 11, MIB as usize);
    let (ax, bx) = (format!("{a}@x"), format!("{b}@x"));
    sh(&["zfs", "snapshot", &ax, &bx]);
    assert_eq!(
        zfs_get("createtxg", &ax),
        zfs_get("createtxg", &bx),
        "multi-dataset snapshot not atomic"
    );

    // hold: the common snapshot cannot be destroyed by accident
    sh(&["zfs", "hold", "snapsite", &ax]);
    let destroy = run(&["zfs", "destroy", &ax]);
    assert!(
        !destroy.status.success(),
        "destroy of a held snapshot succeeded"
    );
    assert!(sh(&["zfs", "holds", "-H", &ax]).contains("snapsite"));
    sh(&["zfs", "release", "snapsite", &ax]);
    sh(&["zfs", "destroy", &ax]);

    // bookmark as incremental base once the snapshot itself is gone
    let target = copy.dataset("b");
    pipe(
        &["zfs", "send", &bx],
        &["zfs", "receive", "-o", "readonly=on", &target],
    );
    let bookmark = format!("{b}#x");
    sh(&["zfs", "bookmark", &bx, &bookmark]);
    sh(&["zfs", "destroy", &bx]);
    write_pattern(&zfs_mountpoint(&b).join("more"), 0, 12, 2 * MIB as usize);
    let by = format!("{b}@y");
    sh(&["zfs", "snapshot", &by]);
    pipe(
        &["zfs", "send", "-i", &bookmark, &by],
        &["zfs", "receive", &target],
    );
    assert_eq!(
        zfs_get("guid", &format!("{target}@y")),
        zfs_get("guid", &by)
    );
    assert_pattern(
        &zfs_mountpoint(&target).join("more"),
        0,
        12,
        2 * MIB as usize,
    );
}

/// One range reported by `thin_delta`, in pool data blocks.
#[derive(Debug, Clone, PartialEq)]
struct DeltaRange {
    kind: String,
    begin: u64,
    length: u64,
}

fn xml_attr(element: &str, name: &str) -> Option<u64> {
    let key = format!(" {name}=\"");
    let start = element.find(&key)? + key.len();
    let end = element[start..].find('"')? + start;
    element[start..end].parse().ok()
}

/// Parses `thin_delta` XML: the data block size (in 512-byte sectors) and the
/// ranges of `<same|different|left_only|right_only begin= length=/>`.
fn parse_thin_delta(xml: &str) -> (u64, Vec<DeltaRange>) {
    let mut block_sectors = None;
    let mut ranges = Vec::new();
    for element in xml.split('<').skip(1) {
        let tag = element
            .split(|c: char| c.is_whitespace() || c == '/' || c == '>')
            .next()
            .unwrap_or("");
        match tag {
            "superblock" => block_sectors = xml_attr(element, "data_block_size"),
            "same" | "different" | "left_only" | "right_only" => ranges.push(DeltaRange {
                kind: tag.to_string(),
                begin: xml_attr(element, "begin")
                    .unwrap_or_else(|| panic!("no begin in <{element}")),
                length: xml_attr(element, "length")
                    .unwrap_or_else(|| panic!("no length in <{element}")),
            }),
            _ => {}
        }
    }
    (
        block_sectors.unwrap_or_else(|| panic!("no data_block_size in thin_delta output:\n{xml}")),
        ranges,
    )
}

/// Pool blocks `[first, last)` reported as `kind`.
fn blocks_of(ranges: &[DeltaRange], kinds: &[&str]) -> Vec<u64> {
    let mut blocks: Vec<u64> = ranges
        .iter()
        .filter(|r| kinds.contains(&r.kind.as_str()))
        .flat_map(|r| r.begin..r.begin + r.length)
        .collect();
    blocks.sort_unstable();
    blocks
}

/// A thin pool on a loop device, two thin snapshots, and `thin_delta`
/// between them reporting exactly the blocks written in between.
#[test]
fn lvm_thin_snapshots_and_thin_delta() {
    require_lab!();
    let lab = ThinVg::new("thin", 1024 * MIB, "256M");
    let vg = &lab.vg;
    thin_lv(vg, "data", "128M");
    let data = vg.dev("data");
    assert!(
        data.exists(),
        "{} missing: LVM did not create the node without udev",
        data.display()
    );

    write_pattern(&data, 0, 1, 4 * MIB as usize);
    sh(&["lvcreate", "-y", "-s", "-n", "snap1", &vg.lv("data")]);
    // between the snapshots: overwrite a shared range, write a fresh one
    write_pattern(&data, MIB, 2, MIB as usize);
    write_pattern(&data, 8 * MIB, 3, 2 * MIB as usize);
    sh(&["lvcreate", "-y", "-s", "-n", "snap2", &vg.lv("data")]);
    sh(&["lvchange", "-ay", "-K", &vg.lv("snap1"), &vg.lv("snap2")]);

    // the snapshots hold the data of their moment
    assert_pattern(&vg.dev("snap1"), 0, 1, 4 * MIB as usize);
    assert_pattern(&vg.dev("snap2"), 0, 1, MIB as usize);
    assert_pattern(&vg.dev("snap2"), MIB, 2, MIB as usize);
    assert_pattern(&vg.dev("snap2"), 8 * MIB, 3, 2 * MIB as usize);

    let id1 = vg.lvs_field("snap1", "thin_id");
    let id2 = vg.lvs_field("snap2", "thin_id");
    assert!(!id1.is_empty() && id1 != id2, "thin ids {id1:?} {id2:?}");
    let tpool = format!("{}-pool-tpool", vg.name);
    let tmeta = format!("/dev/mapper/{}-pool_tmeta", vg.name);
    sh(&["dmsetup", "message", &tpool, "0", "reserve_metadata_snap"]);
    let delta = run(&["thin_delta", "-m", "--snap1", &id1, "--snap2", &id2, &tmeta]);
    sh(&["dmsetup", "message", &tpool, "0", "release_metadata_snap"]);
    let xml = String::from_utf8_lossy(&delta.stdout).into_owned();
    assert!(
        delta.status.success(),
        "thin_delta failed: {}",
        String::from_utf8_lossy(&delta.stderr)
    );

    let (block_sectors, ranges) = parse_thin_delta(&xml);
    let block = block_sectors * 512;
    assert_eq!(block, 64 * 1024, "pool chunk size (asked for 64k):\n{xml}");
    let blocks = |from: u64, len: u64| (from / block..(from + len) / block).collect::<Vec<u64>>();
    assert_eq!(
        blocks_of(&ranges, &["different"]),
        blocks(MIB, MIB),
        "`different` ranges:\n{xml}"
    );
    assert_eq!(
        blocks_of(&ranges, &["right_only"]),
        blocks(8 * MIB, 2 * MIB),
        "`right_only` ranges:\n{xml}"
    );
    assert_eq!(
        blocks_of(&ranges, &["left_only"]),
        Vec::<u64>::new(),
        "`left_only` ranges:\n{xml}"
    );
    let same = blocks_of(&ranges, &["same"]);
    assert!(
        same.contains(&0) && same.contains(&(3 * MIB / block)),
        "`same` ranges:\n{xml}"
    );
}

/// A classic (copy-on-write, non-thin) snapshot keeps the origin's old data
/// while the origin changes.
#[test]
fn lvm_classic_snapshot_keeps_old_data() {
    require_lab!();
    let lab = ThinVg::without_pool("cow", 512 * MIB);
    let vg = &lab.vg;
    sh(&["lvcreate", "-y", "-L", "64M", "-n", "origin", &vg.name]);
    write_pattern(&vg.dev("origin"), 0, 21, 8 * MIB as usize);
    sh(&[
        "lvcreate",
        "-y",
        "-s",
        "-L",
        "32M",
        "-n",
        "snap",
        &vg.lv("origin"),
    ]);
    assert_eq!(vg.lvs_field("snap", "origin"), "origin");
    assert!(
        vg.lvs_field("snap", "lv_attr").starts_with('s'),
        "snap is not a snapshot"
    );
    write_pattern(&vg.dev("origin"), 0, 22, 8 * MIB as usize);
    assert_pattern(&vg.dev("snap"), 0, 21, 8 * MIB as usize);
    assert_pattern(&vg.dev("origin"), 0, 22, 8 * MIB as usize);
}

#[test]
fn thin_delta_parser_reads_ranges() {
    // captured in the storage VM (thin-provisioning-tools 0.9.0, Debian 12):
    // 64 KiB chunks, 4 MiB written, snap1, 1 MiB rewritten at 1 MiB and
    // 2 MiB written at 8 MiB, snap2
    let xml = include_str!("fixtures/thin_delta-0.9.0.xml");
    let (sectors, ranges) = parse_thin_delta(xml);
    assert_eq!(sectors, 128);
    assert_eq!(ranges.len(), 4);
    assert_eq!(
        blocks_of(&ranges, &["different"]),
        (16..32).collect::<Vec<_>>()
    );
    assert_eq!(
        blocks_of(&ranges, &["right_only"]),
        (128..160).collect::<Vec<_>>()
    );
    assert_eq!(blocks_of(&ranges, &["same"]).len(), 48);
}
