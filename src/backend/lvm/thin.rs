//! The thin pool's metadata: which blocks of a thin device are mapped
//! (`thin_dump`) and which differ between two thin devices (`thin_delta`),
//! read from the pool's *metadata snapshot* while the pool stays live.
//!
//! The metadata snapshot is one per pool and is held by whoever reserved it
//! until released, across reboots. [`MetadataSnap`] releases it on drop, so
//! an error or a panic cannot leave it held; a pid file under
//! `/run/snapsite/lvm/` lets the next send release one left by a snapsite
//! process that was killed (SIGKILL, power loss) while holding it. A held
//! snapshot without our pid file belongs to someone else (wyng, an admin):
//! we never release it, we report it.

use std::path::PathBuf;

use super::report::{dm_name, lvm};
use crate::base::cmd::Cmd;
use crate::base::error::{Context, Error, Result};

/// Where the pid files of held metadata snapshots live.
pub const RUN_DIR: &str = "/run/snapsite/lvm";

/// What changed for a range of pool blocks, from `thin_delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaKind {
    Same,
    /// Mapped in both, to different data blocks: rewritten.
    Different,
    /// Mapped in the older device only: discarded since.
    LeftOnly,
    /// Mapped in the newer device only: written since.
    RightOnly,
}

/// A run of thin-device blocks (in units of the pool's data block size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRange {
    pub begin: u64,
    pub length: u64,
}

/// Parsed `thin_delta` output.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// The pool's data block size in bytes.
    pub block_size: u64,
    pub ranges: Vec<(DeltaKind, BlockRange)>,
}

/// Parsed `thin_dump --dev-id` output: the mapped blocks of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub block_size: u64,
    pub dev_id: u64,
    pub ranges: Vec<BlockRange>,
}

fn xml_error(tool: &str, what: impl std::fmt::Display) -> Error {
    Error::storage(format!("unexpected `{tool}` output: {what}"))
}

fn attr_u64(tool: &str, n: roxmltree::Node, name: &str) -> Result<u64> {
    let v = n.attribute(name).ok_or_else(|| {
        xml_error(
            tool,
            format!("<{}> has no `{name}` attribute", n.tag_name().name()),
        )
    })?;
    v.parse()
        .map_err(|_| xml_error(tool, format!("`{name}=\"{v}\"` is not a number")))
}

/// The `<superblock data_block_size=...>` (in 512-byte sectors) in bytes.
fn superblock_block_size(tool: &str, doc: &roxmltree::Document) -> Result<u64> {
    let root = doc.root_element();
    if root.tag_name().name() != "superblock" {
        return Err(xml_error(
            tool,
            format!("root element <{}>", root.tag_name().name()),
        ));
    }
    let sectors = attr_u64(tool, root, "data_block_size")?;
    match sectors.checked_mul(512) {
        Some(b) if b > 0 => Ok(b),
        _ => Err(xml_error(tool, format!("data_block_size {sectors}"))),
    }
}

/// A block range whose end, in bytes, is a number (found by fuzzing: a
/// range past 2^64 bytes wrapped around into the device).
fn checked_range(tool: &str, begin: u64, length: u64, block_size: u64) -> Result<BlockRange> {
    begin
        .checked_add(length)
        .and_then(|end| end.checked_mul(block_size))
        .ok_or_else(|| {
            xml_error(
                tool,
                format!("block range {begin}+{length} is out of range"),
            )
        })?;
    Ok(BlockRange { begin, length })
}

/// Parse `thin_delta [-m] --snap1 A --snap2 B` (thin-provisioning-tools 0.9).
pub fn parse_thin_delta(xml: &str) -> Result<Delta> {
    let tool = "thin_delta";
    let doc = roxmltree::Document::parse(xml).map_err(|e| xml_error(tool, e))?;
    let block_size = superblock_block_size(tool, &doc)?;
    let diff = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("diff"))
        .ok_or_else(|| xml_error(tool, "no <diff> element"))?;
    let mut ranges: Vec<(DeltaKind, BlockRange)> = Vec::new();
    for n in diff.children().filter(|n| n.is_element()) {
        let kind = match n.tag_name().name() {
            "same" => DeltaKind::Same,
            "different" => DeltaKind::Different,
            "left_only" => DeltaKind::LeftOnly,
            "right_only" => DeltaKind::RightOnly,
            other => return Err(xml_error(tool, format!("unknown element <{other}>"))),
        };
        let r = checked_range(
            tool,
            attr_u64(tool, n, "begin")?,
            attr_u64(tool, n, "length")?,
            block_size,
        )?;
        // thin_delta walks the mappings in order: ranges that go back or
        // overlap would become extents sent twice, out of the order the
        // receiver requires (found by fuzzing).
        if let Some((_, last)) = ranges.last() {
            if r.begin < last.begin + last.length {
                return Err(xml_error(
                    tool,
                    format!(
                        "block range {}+{} overlaps or precedes {}+{}",
                        r.begin, r.length, last.begin, last.length
                    ),
                ));
            }
        }
        ranges.push((kind, r));
    }
    Ok(Delta { block_size, ranges })
}

/// Parse `thin_dump [-m] --dev-id ID`: the device's mapped blocks, from
/// `<range_mapping origin_begin= length=>` and `<single_mapping origin_block=>`.
pub fn parse_thin_dump(xml: &str, dev_id: u64) -> Result<Mapping> {
    parse_thin_dump_devs(xml, &[dev_id])?
        .pop()
        .ok_or_else(|| xml_error("thin_dump", format!("no <device dev_id=\"{dev_id}\">")))
}

/// Parse `thin_dump [-m] --dev-id A --dev-id B ...` (thin-provisioning-tools
/// 0.9 takes the option more than once and prints the devices in id
/// order): the mappings of the devices in `dev_ids` that the dump holds,
/// in the dump's order. A device it does not hold is left out (the tool
/// skips an unknown id silently, exit status 0): the caller decides. Other
/// devices are ignored; a requested device that appears twice is an error.
pub fn parse_thin_dump_devs(xml: &str, dev_ids: &[u64]) -> Result<Vec<Mapping>> {
    let tool = "thin_dump";
    let doc = roxmltree::Document::parse(xml).map_err(|e| xml_error(tool, e))?;
    let block_size = superblock_block_size(tool, &doc)?;
    let mut out: Vec<Mapping> = Vec::new();
    for dev in doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("device"))
    {
        let dev_id = attr_u64(tool, dev, "dev_id")?;
        if !dev_ids.contains(&dev_id) {
            continue;
        }
        if out.iter().any(|m| m.dev_id == dev_id) {
            return Err(xml_error(
                tool,
                format!("<device dev_id=\"{dev_id}\"> twice"),
            ));
        }
        let mut ranges = Vec::new();
        for n in dev.children().filter(|n| n.is_element()) {
            match n.tag_name().name() {
                "range_mapping" => ranges.push(checked_range(
                    tool,
                    attr_u64(tool, n, "origin_begin")?,
                    attr_u64(tool, n, "length")?,
                    block_size,
                )?),
                "single_mapping" => ranges.push(checked_range(
                    tool,
                    attr_u64(tool, n, "origin_block")?,
                    1,
                    block_size,
                )?),
                other => return Err(xml_error(tool, format!("unknown element <{other}>"))),
            }
        }
        ranges.sort_by_key(|r| r.begin);
        out.push(Mapping {
            block_size,
            dev_id,
            ranges: coalesce(ranges),
        });
    }
    Ok(out)
}

/// Merge adjacent or overlapping block ranges (input sorted by begin).
pub fn coalesce(ranges: Vec<BlockRange>) -> Vec<BlockRange> {
    let mut out: Vec<BlockRange> = Vec::with_capacity(ranges.len());
    for r in ranges.into_iter().filter(|r| r.length > 0) {
        match out.last_mut() {
            Some(last) if r.begin <= last.begin + last.length => {
                let end = (last.begin + last.length).max(r.begin + r.length);
                last.length = end - last.begin;
            }
            _ => out.push(r),
        }
    }
    out
}

/// The held metadata root from `dmsetup status <vg>-<pool>-tpool`:
/// `0 LEN thin-pool TRANSACTION META_USED/TOTAL DATA_USED/TOTAL HELD_ROOT ...`,
/// `-` when none is held.
pub fn parse_held_root(status: &str) -> Result<Option<u64>> {
    let f: Vec<&str> = status.split_whitespace().collect();
    if f.len() < 7 || f[2] != "thin-pool" {
        return Err(Error::storage(format!(
            "unexpected `dmsetup status` of a thin pool: {}",
            status.trim()
        )));
    }
    match f[6] {
        "-" => Ok(None),
        v => v.parse().map(Some).map_err(|_| {
            Error::storage(format!("dmsetup status: held root `{v}` is not a number"))
        }),
    }
}

/// A thin pool's fill level, from `dmsetup status <vg>-<pool>-tpool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Metadata blocks (4 KiB) used / total.
    pub meta_used: u64,
    pub meta_total: u64,
    /// Data blocks (the pool's block size) used / total.
    pub data_used: u64,
    pub data_total: u64,
}

impl PoolUsage {
    /// Percent of data and of metadata in use (rounded up).
    pub fn percents(&self) -> (u64, u64) {
        // In u128: any count dmsetup may print (found by fuzzing).
        let pct = |u: u64, t: u64| {
            if t == 0 {
                100
            } else {
                u64::try_from((u128::from(u) * 100).div_ceil(u128::from(t))).unwrap_or(u64::MAX)
            }
        };
        (
            pct(self.data_used, self.data_total),
            pct(self.meta_used, self.meta_total),
        )
    }
    /// Data blocks that may still be allocated before `limit_percent`.
    pub fn data_headroom(&self, limit_percent: u64) -> u64 {
        let limit = u128::from(self.data_total) * u128::from(limit_percent) / 100;
        u64::try_from(limit)
            .unwrap_or(u64::MAX)
            .saturating_sub(self.data_used)
    }
    /// Metadata is below `limit_percent`.
    pub fn meta_ok(&self, limit_percent: u64) -> bool {
        u128::from(self.meta_used) * 100 < u128::from(self.meta_total) * u128::from(limit_percent)
    }
}

/// `0 LEN thin-pool TRANSACTION META_USED/TOTAL DATA_USED/TOTAL ...`
pub fn parse_pool_usage(status: &str) -> Result<PoolUsage> {
    let bad = || {
        Error::storage(format!(
            "unexpected `dmsetup status` of a thin pool: {}",
            status.trim()
        ))
    };
    let f: Vec<&str> = status.split_whitespace().collect();
    if f.len() < 6 || f[2] != "thin-pool" {
        return Err(bad());
    }
    let pair = |s: &str| -> Result<(u64, u64)> {
        let (a, b) = s.split_once('/').ok_or_else(bad)?;
        Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
    };
    let (meta_used, meta_total) = pair(f[4])?;
    let (data_used, data_total) = pair(f[5])?;
    Ok(PoolUsage {
        meta_used,
        meta_total,
        data_used,
        data_total,
    })
}

/// The data block size in bytes from `dmsetup table <vg>-<pool>-tpool`:
/// `0 LEN thin-pool META_DEV DATA_DEV BLOCK_SECTORS LOW_WATER ...`.
pub fn parse_pool_block_size(table: &str) -> Result<u64> {
    let f: Vec<&str> = table.split_whitespace().collect();
    match (f.get(2), f.get(5).and_then(|s| s.parse::<u64>().ok())) {
        (Some(&"thin-pool"), Some(sectors)) if sectors > 0 && sectors <= u64::MAX / 512 => {
            Ok(sectors * 512)
        }
        _ => Err(Error::storage(format!(
            "unexpected `dmsetup table` of a thin pool: {}",
            table.trim()
        ))),
    }
}

/// A thin pool's device-mapper names.
#[derive(Debug, Clone)]
pub struct Pool {
    pub vg: String,
    pub name: String,
}

impl Pool {
    /// The pool target (`<vg>-<pool>-tpool`) that takes messages.
    pub fn tpool(&self) -> String {
        dm_name(&self.vg, &self.name, Some("tpool"))
    }
    /// The metadata device the thin tools read.
    pub fn tmeta(&self) -> PathBuf {
        PathBuf::from("/dev/mapper").join(dm_name(&self.vg, &format!("{}_tmeta", self.name), None))
    }
    /// `dmsetup status|table` of the pool target: `<vg>-<pool>-tpool`, or
    /// `<vg>-<pool>` itself while the pool holds no thin LV (LVM then
    /// activates it without the `-tpool` layer). An inactive pool is
    /// activated first.
    fn dm_query(&self, what: &str) -> Result<String> {
        let names = [self.tpool(), dm_name(&self.vg, &self.name, None)];
        for attempt in 0..2 {
            for n in &names {
                let out = lvm("dmsetup").arg(what).arg(n).run_raw()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if out.status.success() && text.split_whitespace().nth(2) == Some("thin-pool") {
                    return Ok(text);
                }
            }
            if attempt == 0 {
                lvm("lvchange")
                    .arg("-ay")
                    .arg(format!("{}/{}", self.vg, self.name))
                    .run()?;
            }
        }
        Err(Error::storage(format!(
            "thin pool {}/{}: no active thin-pool device ({})",
            self.vg,
            self.name,
            names.join(", ")
        )))
    }
    pub fn usage(&self) -> Result<PoolUsage> {
        parse_pool_usage(&self.dm_query("status")?)
    }
    pub fn block_size(&self) -> Result<u64> {
        parse_pool_block_size(&self.dm_query("table")?)
    }
    pub fn held_root(&self) -> Result<Option<u64>> {
        parse_held_root(&lvm("dmsetup").arg("status").arg(self.tpool()).output()?)
    }
    fn message(&self, msg: &str) -> Result<()> {
        lvm("dmsetup")
            .arg("message")
            .arg(self.tpool())
            .args(["0", msg])
            .run()
    }
    fn pid_file(&self) -> PathBuf {
        PathBuf::from(RUN_DIR).join(format!("{}.metadata-snap", self.tpool()))
    }
}

fn pid_alive(pid: i32) -> bool {
    use nix::errno::Errno;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(_) => true, // EPERM: it exists
    }
}

/// The threads of one process (`ship` to several standbys at once) take
/// turns at the metadata snapshots: a pool has one, and a reservation
/// lasts one `thin_delta` / `thin_dump`.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How long a send waits for another live snapsite process's reservation
/// (a `ship --to` beside `run`) before it gives up.
const WAIT_FOR_HOLDER: std::time::Duration = std::time::Duration::from_secs(120);

/// The pool's reserved metadata snapshot, released on drop.
pub struct MetadataSnap {
    pool: Pool,
    released: bool,
    // Dropped after `Drop::drop` released the reservation.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl MetadataSnap {
    /// Reserve the metadata snapshot of `pool`. One left by a dead snapsite
    /// process (or by this one: threads here take turns) is released
    /// first; one held by another live snapsite process is waited for, up
    /// to [`WAIT_FOR_HOLDER`]; one held by anybody else is an error.
    pub fn reserve(pool: &Pool) -> Result<MetadataSnap> {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let pid_file = pool.pid_file();
        let deadline = std::time::Instant::now() + WAIT_FOR_HOLDER;
        while pool.held_root()?.is_some() {
            let holder = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            match holder {
                Some(pid) if !pid_alive(pid) || pid == std::process::id() as i32 => {
                    tracing::warn!(pool = %pool.tpool(), pid, "releasing the metadata snapshot left by a snapsite process that died (or by an earlier send of this one)");
                    pool.message("release_metadata_snap")?;
                    let _ = std::fs::remove_file(&pid_file);
                    break;
                }
                Some(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Some(pid) => {
                    return Err(Error::storage(format!(
                        "thin pool {}/{}: the metadata snapshot is held by snapsite process {pid} (waited {} s)",
                        pool.vg,
                        pool.name,
                        WAIT_FOR_HOLDER.as_secs()
                    ))
                    .with_hint("wait for that transfer to finish"));
                }
                None => {
                    return Err(Error::storage(format!(
                        "thin pool {}/{}: its metadata snapshot is held by another program",
                        pool.vg, pool.name
                    ))
                    .with_hint(format!(
                        "if nothing uses it (a backup tool?), release it: dmsetup message {} 0 release_metadata_snap",
                        pool.tpool()
                    )));
                }
            }
        }
        std::fs::create_dir_all(RUN_DIR).ctx(format!("create {RUN_DIR}"))?;
        std::fs::write(&pid_file, format!("{}\n", std::process::id()))
            .ctx(format!("write {}", pid_file.display()))?;
        if let Err(e) = pool.message("reserve_metadata_snap") {
            let _ = std::fs::remove_file(&pid_file);
            return Err(e.context(format!("thin pool {}/{}", pool.vg, pool.name)));
        }
        Ok(MetadataSnap {
            pool: pool.clone(),
            released: false,
            _turn: turn,
        })
    }

    /// Release now and report failure (drop releases too, logging only).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.pool
            .message("release_metadata_snap")
            .ctx(format!("thin pool {}/{}", self.pool.vg, self.pool.name))?;
        let _ = std::fs::remove_file(self.pool.pid_file());
        Ok(())
    }

    /// `thin_delta -m --snap1 OLD --snap2 NEW` on the reserved snapshot.
    pub fn delta(&self, old: u64, new: u64) -> Result<Delta> {
        parse_thin_delta(
            &Cmd::new("thin_delta")
                .args([
                    "-m",
                    "--snap1",
                    &old.to_string(),
                    "--snap2",
                    &new.to_string(),
                ])
                .arg(self.pool.tmeta())
                .output()?,
        )
    }

    /// `thin_dump -m --dev-id ID`: the mapped blocks of one thin device.
    pub fn mapped(&self, dev_id: u64) -> Result<Mapping> {
        parse_thin_dump(
            &Cmd::new("thin_dump")
                .args(["-m", "--dev-id", &dev_id.to_string()])
                .arg(self.pool.tmeta())
                .output()?,
            dev_id,
        )
    }

    /// `thin_dump -m --dev-id A --dev-id B ...`: the mapped blocks of
    /// several thin devices in one run (those the pool holds; see
    /// [`parse_thin_dump_devs`]).
    pub fn mapped_devs(&self, dev_ids: &[u64]) -> Result<Vec<Mapping>> {
        let mut cmd = Cmd::new("thin_dump").arg("-m");
        for id in dev_ids {
            cmd = cmd.arg("--dev-id").arg(id.to_string());
        }
        parse_thin_dump_devs(&cmd.arg(self.pool.tmeta()).output()?, dev_ids)
    }
}

impl Drop for MetadataSnap {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        match self.pool.message("release_metadata_snap") {
            Ok(()) => {
                let _ = std::fs::remove_file(self.pool.pid_file());
            }
            Err(e) => {
                tracing::error!(pool = %self.pool.tpool(), error = %e, "could not release the metadata snapshot; the next send retries")
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A file of `tests/fixtures/lvm-2.03` (captured LVM output).
    pub(in crate::backend::lvm) fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/lvm-2.03")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn r(begin: u64, length: u64) -> BlockRange {
        BlockRange { begin, length }
    }

    #[test]
    fn thin_delta_on_captured_output() {
        // 1 MiB rewritten at 1 MiB, 256 KiB discarded at 3 MiB, 2 MiB new at 8 MiB
        let d = parse_thin_delta(&fixture("thin_delta-m.xml")).unwrap();
        assert_eq!(d.block_size, 65536);
        let of = |k: DeltaKind| {
            d.ranges
                .iter()
                .filter(|(kind, _)| *kind == k)
                .map(|(_, r)| *r)
                .collect::<Vec<_>>()
        };
        assert_eq!(of(DeltaKind::Different), vec![r(16, 16)]);
        assert_eq!(of(DeltaKind::LeftOnly), vec![r(48, 4)]);
        assert_eq!(of(DeltaKind::RightOnly), vec![r(128, 32)]);
        assert_eq!(of(DeltaKind::Same).len(), 4);
    }

    #[test]
    fn thin_dump_on_captured_output() {
        let m = parse_thin_dump(&fixture("thin_dump-m-dev.xml"), 2).unwrap();
        assert_eq!(m.block_size, 65536);
        assert_eq!(m.ranges, vec![r(0, 64), r(200, 3)]);
        // the newer device: data blocks moved, but origin ranges are what we
        // read; adjacent origin ranges coalesce
        let m = parse_thin_dump(&fixture("thin_dump-m-dev2.xml"), 3).unwrap();
        assert_eq!(m.ranges, vec![r(0, 48), r(52, 12), r(128, 32), r(200, 3)]);
        assert!(parse_thin_dump(&fixture("thin_dump-m-dev2.xml"), 7).is_err());
    }

    #[test]
    fn thin_dump_of_several_devices_on_captured_output() {
        // `thin_dump --dev-id 3 --dev-id 2` (0.9.0): both devices, in id
        // order, each as its own single-device dump reads it.
        let xml = fixture("thin_dump-devs.xml");
        let ms = parse_thin_dump_devs(&xml, &[3, 2]).unwrap();
        let one = |f: &str, id| parse_thin_dump(&fixture(f), id).unwrap();
        assert_eq!(
            ms,
            vec![
                one("thin_dump-m-dev.xml", 2),
                one("thin_dump-m-dev2.xml", 3)
            ]
        );
        // only what was asked for; an id the dump lacks is left out
        let ms = parse_thin_dump_devs(&xml, &[3, 9]).unwrap();
        assert_eq!(ms.iter().map(|m| m.dev_id).collect::<Vec<_>>(), vec![3]);
        assert!(parse_thin_dump_devs(&xml, &[9]).unwrap().is_empty());
        assert_eq!(
            parse_thin_dump(&xml, 2).unwrap(),
            one("thin_dump-m-dev.xml", 2)
        );
        // a device twice is refused, not merged or picked
        let dev = xml
            .lines()
            .skip_while(|l| !l.contains("dev_id=\"3\""))
            .take_while(|l| !l.contains("</device>"))
            .collect::<Vec<_>>()
            .join("\n");
        let twice = xml.replace(
            "</superblock>",
            &format!("{dev}\n  </device>\n</superblock>"),
        );
        assert!(parse_thin_dump_devs(&twice, &[3]).is_err());
        assert!(parse_thin_dump_devs(&twice, &[2]).is_ok());
        assert!(
            parse_thin_dump_devs(
                "<superblock data_block_size=\"128\"><device dev_id=\"x\"/></superblock>",
                &[1]
            )
            .is_err()
        );
    }

    #[test]
    fn single_mappings_and_bad_xml() {
        let xml = r#"<superblock uuid="" time="0" transaction="1" data_block_size="128" nr_data_blocks="0">
  <device dev_id="1" mapped_blocks="3" transaction="0" creation_time="0" snap_time="0">
    <single_mapping origin_block="5" data_block="9" time="0"/>
    <range_mapping origin_begin="6" data_begin="1" length="2" time="0"/>
    <single_mapping origin_block="10" data_block="3" time="0"/>
  </device>
</superblock>"#;
        let m = parse_thin_dump(xml, 1).unwrap();
        assert_eq!(m.ranges, vec![r(5, 3), r(10, 1)]);
        assert!(parse_thin_delta("<superblock data_block_size=\"128\"><diff>").is_err());
        assert!(parse_thin_delta("<superblock><diff/></superblock>").is_err());
        assert!(parse_thin_delta("no current metadata snap").is_err());
    }

    #[test]
    fn held_root_from_dmsetup_status() {
        assert_eq!(
            parse_held_root(&fixture("dmsetup-status-tpool.txt")).unwrap(),
            None
        );
        assert_eq!(
            parse_held_root(&fixture("dmsetup-status-tpool-held.txt")).unwrap(),
            Some(58)
        );
        assert!(parse_held_root("0 1024 linear 7:0 0").is_err());
    }

    #[test]
    fn pool_usage_and_block_size() {
        let u = parse_pool_usage(&fixture("dmsetup-status-tpool.txt")).unwrap();
        assert_eq!(
            u,
            PoolUsage {
                meta_used: 113,
                meta_total: 1024,
                data_used: 115,
                data_total: 4096
            }
        );
        assert_eq!(u.percents(), (3, 12));
        assert_eq!(u.data_headroom(90), 4096 * 90 / 100 - 115);
        assert!(u.meta_ok(90));
        let full = PoolUsage {
            data_used: 4000,
            ..u
        };
        assert_eq!(full.data_headroom(90), 0);
        assert!(parse_pool_usage("0 1024 linear 7:0 0").is_err());
        assert!(parse_pool_usage("0 1024 thin-pool 3 x/1 2/3").is_err());
        assert_eq!(
            parse_pool_block_size("0 327680 thin-pool 253:1 253:2 128 0 1 skip_block_zeroing")
                .unwrap(),
            65536
        );
        assert!(parse_pool_block_size("0 327680 thin-pool 253:1 253:2 0 0").is_err());
    }

    #[test]
    fn pool_device_names() {
        let p = Pool {
            vg: "vg-a".into(),
            name: "pool".into(),
        };
        assert_eq!(p.tpool(), "vg--a-pool-tpool");
        assert_eq!(p.tmeta(), PathBuf::from("/dev/mapper/vg--a-pool_tmeta"));
    }
}
