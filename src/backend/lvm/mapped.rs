//! What the base of a receive maps in the standby's own thin pool
//! (`thin_dump` of the pool's metadata snapshot), for the ransomware
//! signals: the sender's header says which changed blocks were mapped in
//! the base already (overwritten); the standby holds the base and checks
//! that word against its own map (`standby::signals::lvm`).
//!
//! Reading a map costs a metadata snapshot (reserved, dumped, released)
//! and a `thin_dump`: slow processes next to a small incremental. A ship
//! session brings one set: every volume's base is then the newest snapshot
//! of its replica, all of them there before the session's first receive.
//! So the first map a session reads dumps, in the same reservation and the
//! same `thin_dump` run (`--dev-id` once per device), the base and the
//! newest snapshot of every other replica in that pool; the others are
//! kept in memory ([`MapCache`]) for the rest of this process, and a later
//! receive takes its base's map from there. One metadata snapshot and one
//! `thin_dump` per pool per set, instead of one per volume.
//!
//! A kept map is served only for the very device it was read from: the
//! same VG, pool, thin id, LV uuid and size, read-only (as snapsite's
//! received snapshots are) when it was dumped and when it is asked for, at
//! most [`FRESH_FOR`] later, and only once (taken out when served). A thin
//! id is reused only after its LV is gone (the uuid differs), and a
//! read-only LV's blocks cannot change. The cache is bounded
//! ([`MAX_DEVICES`], [`MAX_RANGES`]) and is never written to disk, so a
//! crash leaves nothing behind to trust: the next process dumps afresh.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::mapping_extents;
use super::report::LvInfo;
use super::thin::{Mapping, MetadataSnap, Pool};
use super::{REPLICA_TAG, find, snap_lv, snapshots_of};
use crate::backend::ThinMap;
use crate::base::error::{Context, Error, Result};

/// Devices dumped (and kept) per dump at most: the base and the newest
/// snapshots of up to 63 other replicas of its pool.
pub(super) const MAX_DEVICES: usize = 64;
/// Block ranges kept in memory at most, over all kept maps (16 bytes
/// each: 16 MiB); a map that would pass it is not kept (its volume dumps
/// its own when its turn comes).
pub(super) const MAX_RANGES: usize = 1 << 20;
/// How long a kept map may be served after its dump: a session's sets are
/// received one after the other; a map older than this is dumped again.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(600);

/// A thin device of the standby's pool as the receive's listing shows it:
/// what a kept map must match to be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ThinDev {
    pub(super) id: u64,
    pub(super) uuid: String,
    pub(super) size: u64,
    /// `lv_attr`'s permission is `r`: nothing can write it.
    pub(super) read_only: bool,
}

impl ThinDev {
    fn of(l: &LvInfo) -> Option<ThinDev> {
        Some(ThinDev {
            id: l.thin_id?,
            uuid: l.uuid.clone(),
            size: l.size,
            read_only: l.attr.chars().nth(1) == Some('r'),
        })
    }
}

/// The base of a receive in the standby's pool, and the bases the other
/// replicas of that pool will most likely use next (their newest
/// snapshots), to read in the same dump.
#[derive(Debug, Clone)]
pub(super) struct BaseThin {
    pub(super) pool: String,
    pub(super) base: ThinDev,
    pub(super) others: Vec<ThinDev>,
}

/// From the VG's listing (the one `receive` makes anyway: no `lvs` more):
/// the base `base_lv` of replica `rlv`, and the newest snapshot of every
/// other snapsite replica in the same pool. `None` when the base is not a
/// thin LV.
pub(super) fn base_thin(all: &[LvInfo], rlv: &str, base_lv: &str) -> Option<BaseThin> {
    let b = find(all, base_lv)?;
    let pool = b.pool.clone()?;
    let base = ThinDev::of(b)?;
    let others = all
        .iter()
        .filter(|l| l.name != rlv && l.has_tag(REPLICA_TAG) && l.pool.as_deref() == Some(&pool))
        .filter_map(|r| {
            let newest = snapshots_of(all, &r.name).pop()?;
            let s = find(all, &snap_lv(&r.name, &newest))?;
            (s.pool.as_deref() == Some(&pool))
                .then(|| ThinDev::of(s))
                .flatten()
        })
        .filter(|d| d.read_only && d.id != base.id)
        .take(MAX_DEVICES - 1)
        .collect();
    Some(BaseThin { pool, base, others })
}

/// What a kept map was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    vg: String,
    pool: String,
    dev: ThinDev,
}

struct Kept {
    key: Key,
    dumped: Instant,
    mapping: Mapping,
}

/// Maps read in a dump for receives still to come (see the module's
/// comment for when one is served).
#[derive(Default)]
pub(super) struct MapCache {
    kept: Vec<Kept>,
}

impl MapCache {
    const fn new() -> MapCache {
        MapCache { kept: Vec::new() }
    }

    /// The kept map of exactly `key`'s device, taken out; stale ones go.
    fn take(&mut self, key: &Key, now: Instant) -> Option<Mapping> {
        self.kept
            .retain(|k| now.saturating_duration_since(k.dumped) < FRESH_FOR);
        if !key.dev.read_only {
            return None;
        }
        let i = self.kept.iter().position(|k| k.key == *key)?;
        Some(self.kept.swap_remove(i).mapping)
    }

    /// Keep the maps of `devs` from a dump of `vg`/`pool` made at `now`;
    /// what was kept of that pool before is replaced.
    fn keep(&mut self, vg: &str, pool: &str, devs: &[ThinDev], maps: Vec<Mapping>, now: Instant) {
        self.kept
            .retain(|k| !(k.key.vg == vg && k.key.pool == pool));
        let mut ranges: usize = self.kept.iter().map(|k| k.mapping.ranges.len()).sum();
        for mapping in maps {
            let Some(dev) = devs.iter().find(|d| d.id == mapping.dev_id && d.read_only) else {
                continue;
            };
            if self.kept.len() >= MAX_DEVICES || ranges + mapping.ranges.len() > MAX_RANGES {
                continue;
            }
            ranges += mapping.ranges.len();
            self.kept.push(Kept {
                key: Key {
                    vg: vg.to_string(),
                    pool: pool.to_string(),
                    dev: dev.clone(),
                },
                dumped: now,
                mapping,
            });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }
}

/// The one cache of this process (`serve` receives one stream at a time).
static CACHE: Mutex<MapCache> = Mutex::new(MapCache::new());

/// The base's mapping: kept from this session's dump when it matches,
/// else `dump` (which reads the given thin ids in one run) of the base and
/// `b.others`, whose maps are kept. Returns whether it was kept.
fn base_mapping(
    cache: &mut MapCache,
    vg: &str,
    b: &BaseThin,
    now: Instant,
    dump: impl FnOnce(&[u64]) -> Result<Vec<Mapping>>,
) -> Result<(Mapping, bool)> {
    let key = Key {
        vg: vg.to_string(),
        pool: b.pool.clone(),
        dev: b.base.clone(),
    };
    if let Some(m) = cache.take(&key, now) {
        return Ok((m, true));
    }
    let mut ids = vec![b.base.id];
    for d in &b.others {
        if d.read_only && !ids.contains(&d.id) && ids.len() < MAX_DEVICES {
            ids.push(d.id);
        }
    }
    let mut maps = dump(&ids)?;
    let i = maps
        .iter()
        .position(|m| m.dev_id == b.base.id)
        .ok_or_else(|| Error::storage(format!("`thin_dump` did not list device {}", b.base.id)))?;
    let mine = maps.swap_remove(i);
    cache.keep(vg, &b.pool, &b.others, maps, now);
    Ok((mine, false))
}

/// The byte ranges the base of a receive maps (thin device `b.base` of
/// `vg`/`b.pool`), and the pool's block size.
pub(super) fn thin_map(role: &str, vg: &str, b: &BaseThin) -> Result<ThinMap> {
    let what = format!(
        "volume `{role}`: thin map of the base (device {} in {vg}/{})",
        b.base.id, b.pool
    );
    // A panic while the lock was held left no half entry (each is pushed
    // whole), but start clean anyway.
    let mut cache = CACHE.lock().unwrap_or_else(|e| {
        let mut c = e.into_inner();
        *c = MapCache::new();
        c
    });
    let (m, kept) = base_mapping(&mut cache, vg, b, Instant::now(), |ids| {
        let ms = MetadataSnap::reserve(&Pool {
            vg: vg.to_string(),
            name: b.pool.clone(),
        })
        .ctx(what.clone())?;
        let maps = ms.mapped_devs(ids);
        // Released before the receive's data moves; an error (or a panic)
        // releases on drop; a killed process's is released by the next
        // reservation (`thin.rs`).
        ms.release().ctx(what.clone())?;
        maps
    })
    .ctx(what)?;
    drop(cache);
    tracing::debug!(volume = role, device = b.base.id, kept, "base thin map");
    if m.block_size == 0 {
        return Err(Error::storage(format!(
            "volume `{role}`: thin pool block size 0"
        )));
    }
    let ranges = mapping_extents(&m, b.base.size.max(1))
        .into_iter()
        .map(|e| (e.offset, e.len))
        .collect();
    Ok(ThinMap {
        block_size: m.block_size,
        ranges,
    })
}

#[cfg(test)]
mod tests {
    use super::super::thin::tests::fixture;
    use super::super::thin::{BlockRange, parse_thin_dump_devs};
    use super::*;

    fn dev(id: u64, uuid: &str) -> ThinDev {
        ThinDev {
            id,
            uuid: uuid.into(),
            size: 64 << 20,
            read_only: true,
        }
    }

    /// The captured dump of thin devices 2 and 3 (`thin_dump --dev-id 3
    /// --dev-id 2`), as `dump` would read it, counting the runs.
    fn dump_of<'a>(
        runs: &'a mut Vec<Vec<u64>>,
    ) -> impl FnOnce(&[u64]) -> Result<Vec<Mapping>> + 'a {
        move |ids| {
            runs.push(ids.to_vec());
            parse_thin_dump_devs(&fixture("thin_dump-devs.xml"), ids)
        }
    }

    fn lv(name: &str, attr: &str, pool: &str, id: u64, tags: &[&str]) -> LvInfo {
        LvInfo {
            name: name.into(),
            vg: "vg".into(),
            uuid: format!("uuid-{name}"),
            attr: attr.into(),
            size: 64 << 20,
            pool: Some(pool.into()),
            origin: None,
            thin_id: Some(id),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            active: false,
            segtype: "thin".into(),
        }
    }

    #[test]
    fn the_others_are_the_newest_snapshots_of_the_pools_other_replicas() {
        let (s1, s2) = ("20261207T050000.000Z-full", "20261207T060000.000Z-full");
        let snap = |lv_name: &str, id: &str, tid: u64, pool: &str| {
            let set = format!("snapsite-set-{id}");
            lv(
                &snap_lv(lv_name, id),
                "Vri---tz-k",
                pool,
                tid,
                &["snapsite", &set],
            )
        };
        let all = vec![
            lv("blob", "Vwi-a-tz--", "pool", 1, &["snapsite", REPLICA_TAG]),
            snap("blob", s1, 2, "pool"),
            snap("blob", s2, 3, "pool"),
            lv("index", "Vwi-a-tz--", "pool", 4, &["snapsite", REPLICA_TAG]),
            snap("index", s1, 5, "pool"),
            snap("index", s2, 6, "pool"),
            // another pool's replica, and an LV that is no replica
            lv(
                "mysql",
                "Vwi-a-tz--",
                "pool2",
                7,
                &["snapsite", REPLICA_TAG],
            ),
            snap("mysql", s2, 8, "pool2"),
            lv("scratch", "Vwi-a-tz--", "pool", 9, &[]),
            snap("scratch", s2, 10, "pool"),
        ];
        let b = base_thin(&all, "blob", &snap_lv("blob", s1)).unwrap();
        assert_eq!(b.pool, "pool");
        assert_eq!(b.base.id, 2);
        assert_eq!(b.base.uuid, format!("uuid-blob.{s1}"));
        assert!(b.base.read_only);
        assert_eq!(b.others.iter().map(|d| d.id).collect::<Vec<_>>(), vec![6]);
        // a writable newest snapshot (made so by hand) is not read ahead
        let mut all2 = all.clone();
        all2[5].attr = "Vwi---tz-k".into();
        let b = base_thin(&all2, "blob", &snap_lv("blob", s2)).unwrap();
        assert!(b.others.is_empty());
        assert!(base_thin(&all, "blob", "blob.missing").is_none());
    }

    #[test]
    fn one_dump_serves_the_other_volumes_of_the_set() {
        let mut cache = MapCache::default();
        let now = Instant::now();
        let blob = BaseThin {
            pool: "pool".into(),
            base: dev(2, "u2"),
            others: vec![dev(3, "u3")],
        };
        let index = BaseThin {
            pool: "pool".into(),
            base: dev(3, "u3"),
            others: vec![dev(2, "u2")],
        };
        let mut runs = Vec::new();
        let (m, kept) = base_mapping(&mut cache, "vg", &blob, now, dump_of(&mut runs)).unwrap();
        assert!(!kept);
        assert_eq!(
            m.ranges[0],
            BlockRange {
                begin: 0,
                length: 64
            }
        );
        assert_eq!(runs, vec![vec![2, 3]], "one run for both devices");
        assert_eq!(cache.len(), 1);
        let (m, kept) = base_mapping(&mut cache, "vg", &index, now, dump_of(&mut runs)).unwrap();
        assert!(kept);
        assert_eq!(runs.len(), 1, "no second dump");
        // exactly what a dump of device 3 alone reads
        let alone =
            super::super::thin::parse_thin_dump(&fixture("thin_dump-m-dev2.xml"), 3).unwrap();
        assert_eq!(m, alone);
        // served once: asked again, it is dumped again
        assert_eq!(cache.len(), 0);
        let (_, kept) = base_mapping(&mut cache, "vg", &index, now, dump_of(&mut runs)).unwrap();
        assert!(!kept);
        assert_eq!(runs.len(), 2);
    }

    #[test]
    fn a_changed_device_is_never_served_a_kept_map() {
        let now = Instant::now();
        let first = BaseThin {
            pool: "pool".into(),
            base: dev(2, "u2"),
            others: vec![dev(3, "u3")],
        };
        let ask = |base: ThinDev, vg: &str, pool: &str, at: Instant| {
            let mut cache = MapCache::default();
            let mut runs = Vec::new();
            base_mapping(&mut cache, "vg", &first, now, dump_of(&mut runs)).unwrap();
            let b = BaseThin {
                pool: pool.into(),
                base,
                others: vec![],
            };
            let (_, kept) = base_mapping(&mut cache, vg, &b, at, dump_of(&mut runs)).unwrap();
            (kept, runs.len())
        };
        assert_eq!(ask(dev(3, "u3"), "vg", "pool", now), (true, 1));
        // the same thin id for another LV (removed, id reused)
        assert_eq!(ask(dev(3, "other"), "vg", "pool", now), (false, 2));
        // another size (extended), writable now, another pool or VG
        assert_eq!(
            ask(
                ThinDev {
                    size: 1 << 30,
                    ..dev(3, "u3")
                },
                "vg",
                "pool",
                now
            ),
            (false, 2)
        );
        assert_eq!(
            ask(
                ThinDev {
                    read_only: false,
                    ..dev(3, "u3")
                },
                "vg",
                "pool",
                now
            ),
            (false, 2)
        );
        assert_eq!(ask(dev(3, "u3"), "vg", "pool2", now), (false, 2));
        assert_eq!(ask(dev(3, "u3"), "vg2", "pool", now), (false, 2));
        // too old
        assert_eq!(ask(dev(3, "u3"), "vg", "pool", now + FRESH_FOR), (false, 2));
        assert_eq!(
            ask(dev(3, "u3"), "vg", "pool", now + FRESH_FOR / 2),
            (true, 1)
        );
    }

    #[test]
    fn what_is_kept_is_bounded_and_only_read_only_devices() {
        let now = Instant::now();
        let mut cache = MapCache::default();
        let mut runs = Vec::new();
        // device 3 writable when listed: read in the run, never kept
        let b = BaseThin {
            pool: "pool".into(),
            base: dev(2, "u2"),
            others: vec![ThinDev {
                read_only: false,
                ..dev(3, "u3")
            }],
        };
        base_mapping(&mut cache, "vg", &b, now, dump_of(&mut runs)).unwrap();
        assert_eq!(runs, vec![vec![2]]);
        assert_eq!(cache.len(), 0);
        // at most MAX_DEVICES ids in one run
        let b = BaseThin {
            pool: "pool".into(),
            base: dev(2, "u2"),
            others: (3..200).map(|i| dev(i, &format!("u{i}"))).collect(),
        };
        base_mapping(&mut cache, "vg", &b, now, dump_of(&mut runs)).unwrap();
        assert_eq!(runs[1].len(), MAX_DEVICES);
        assert_eq!(cache.len(), 1, "the dump held device 3 only");
        // a map over the range budget is not kept
        let big = Mapping {
            block_size: 65536,
            dev_id: 3,
            ranges: (0..MAX_RANGES as u64 + 1)
                .map(|i| BlockRange {
                    begin: 2 * i,
                    length: 1,
                })
                .collect(),
        };
        let mut cache = MapCache::default();
        cache.keep("vg", "pool", &[dev(3, "u3")], vec![big], now);
        assert_eq!(cache.len(), 0);
        // a new dump of the pool replaces what was kept of it
        let small = |id| Mapping {
            block_size: 65536,
            dev_id: id,
            ranges: vec![BlockRange {
                begin: 0,
                length: 1,
            }],
        };
        cache.keep("vg", "pool", &[dev(3, "u3")], vec![small(3)], now);
        cache.keep("vg", "pool", &[dev(4, "u4")], vec![small(4)], now);
        assert_eq!(cache.len(), 1);
        let key = |id, u: &str| Key {
            vg: "vg".into(),
            pool: "pool".into(),
            dev: dev(id, u),
        };
        assert!(cache.take(&key(3, "u3"), now).is_none());
        assert!(cache.take(&key(4, "u4"), now).is_some());
    }

    #[test]
    fn a_failed_dump_keeps_nothing_and_a_dump_without_the_base_is_an_error() {
        let now = Instant::now();
        let mut cache = MapCache::default();
        let b = BaseThin {
            pool: "pool".into(),
            base: dev(9, "u9"),
            others: vec![dev(3, "u3")],
        };
        let mut runs = Vec::new();
        let e = base_mapping(&mut cache, "vg", &b, now, dump_of(&mut runs)).unwrap_err();
        assert!(e.to_string().contains("did not list device 9"), "{e}");
        assert_eq!(cache.len(), 0);
        let e = base_mapping(&mut cache, "vg", &b, now, |_| {
            Err(Error::storage("thin_dump failed"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("thin_dump failed"), "{e}");
        assert_eq!(cache.len(), 0);
    }
}
