//! The standby's side: the spool (loading, the cap),
//! the commit-time checkpoint and the spool session of `serve`.

use crate::standby::spool::journal::*;
use crate::standby::spool::matching::*;
use crate::wire::redostream::*;

// ---------------------------------------------------------------------------
// The spool: the virtual state in memory, its items' bytes in the journal.

/// The spool as recorded: base + items (their bytes left in the journal).
#[derive(Debug, Clone, Default)]
pub struct Spool {
    pub(crate) base: Vec<BaseFile>,
    pub(crate) base_as_of: Option<Timestamp>,
    pub(crate) items: Vec<Item>,
    pub(crate) last_seq: u64,
    pub(crate) last_as_of: Option<Timestamp>,
    /// Bytes of the journal on disk.
    pub(crate) disk_bytes: u64,
    /// Where the items' bytes are.
    pub(crate) journal: Option<JournalFile>,
    /// The file names of the items' events.
    pub(crate) names: Vec<String>,
    pub(crate) name_ids: HashMap<String, u32>,
    /// (sequence, primary's time) of the batches the items came in.
    pub(crate) batches: Vec<(u64, Timestamp)>,
}

impl Spool {
    /// Bytes `[from, from + len)` of a base tail's or an item's data.
    pub(crate) fn read(
        &self,
        src: Src,
        from: u64,
        len: u64,
    ) -> std::result::Result<Vec<u8>, String> {
        let short = || format!("spooled data {src:?} has no bytes {from}..{}", from + len);
        let mem = |v: &[u8]| -> std::result::Result<Vec<u8>, String> {
            let end = from
                .checked_add(len)
                .filter(|e| *e <= v.len() as u64)
                .ok_or_else(short)?;
            Ok(v[from as usize..end as usize].to_vec())
        };
        match src {
            Src::Base(i) => mem(&self.base[i].tail),
            Src::Item(i) => {
                let d = self.items[i].data;
                if from.checked_add(len).is_none_or(|e| e > d.len) {
                    return Err(short());
                }
                let j = self
                    .journal
                    .as_ref()
                    .ok_or("the spool's journal is not open")?;
                j.read(d.at + from, len)
            }
        }
    }

    /// Item `k`'s event.
    pub(crate) fn ev(&self, k: usize) -> SpoolEvent {
        let n = |i: u32| self.names[i as usize].clone();
        match self.items[k].ev {
            Ev::Base { file, size } => SpoolEvent::Base {
                file: n(file),
                size,
            },
            Ev::Append { file, offset, len } => SpoolEvent::Append {
                file: n(file),
                offset,
                len,
            },
            Ev::Truncate { file, size } => SpoolEvent::Truncate {
                file: n(file),
                size,
            },
            Ev::Rename { from, to } => SpoolEvent::Rename {
                from: n(from),
                to: n(to),
            },
            Ev::Remove { file } => SpoolEvent::Remove { file: n(file) },
        }
    }

    /// Item `k`'s batch: (sequence, primary's time).
    pub(crate) fn batch_of(&self, k: usize) -> (u64, Timestamp) {
        self.batches[self.items[k].batch as usize]
    }

    fn name_id(&mut self, name: &str) -> u32 {
        if let Some(i) = self.name_ids.get(name) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.name_ids.insert(name.to_string(), i);
        i
    }

    fn compact(&mut self, ev: &SpoolEvent) -> Ev {
        match ev {
            SpoolEvent::Base { file, size } => Ev::Base {
                file: self.name_id(file),
                size: *size,
            },
            SpoolEvent::Append { file, offset, len } => Ev::Append {
                file: self.name_id(file),
                offset: *offset,
                len: *len,
            },
            SpoolEvent::Truncate { file, size } => Ev::Truncate {
                file: self.name_id(file),
                size: *size,
            },
            SpoolEvent::Rename { from, to } => Ev::Rename {
                from: self.name_id(from),
                to: self.name_id(to),
            },
            SpoolEvent::Remove { file } => Ev::Remove {
                file: self.name_id(file),
            },
        }
    }

    /// The state after the base alone.
    pub(crate) fn base_sim(&self) -> Sim {
        let mut sim = Sim::default();
        for (i, b) in self.base.iter().enumerate() {
            let _ = sim.apply(
                &SpoolEvent::Base {
                    file: b.file.clone(),
                    size: b.size,
                },
                Src::Base(i),
            );
            if !b.tail.is_empty() {
                let inst = sim.insts.last_mut().expect("just pushed");
                inst.ranges.push(Range {
                    offset: b.size - b.tail.len() as u64,
                    len: b.tail.len() as u64,
                    src: Src::Base(i),
                });
            }
        }
        sim
    }

    /// The state after every item.
    pub(crate) fn sim(&self) -> Sim {
        let mut sim = self.base_sim();
        for i in 0..self.items.len() {
            sim.apply(&self.ev(i), Src::Item(i))
                .expect("recorded items applied when they were received");
        }
        sim
    }

    /// Add one journal record (checked as it is replayed against `sim`,
    /// which advances); `false` if it does not apply (the spool is then as
    /// before it).
    pub(crate) fn add_record(&mut self, sim: &mut Sim, meta: RecordMeta, payload: Payload) -> bool {
        match meta {
            RecordMeta::Base { seq, as_of, files } => {
                let Payload::Mem(data) = payload else {
                    return false;
                };
                let mut pos = 0usize;
                let mut base = Vec::new();
                for f in files {
                    let Some(end) = (f.tail_len as usize)
                        .checked_add(pos)
                        .filter(|e| *e <= data.len())
                    else {
                        return false;
                    };
                    if f.tail_len > f.size {
                        return false;
                    }
                    base.push(BaseFile {
                        file: f.file,
                        size: f.size,
                        tail: data[pos..end].to_vec(),
                    });
                    pos = end;
                }
                *self = Spool {
                    base,
                    base_as_of: as_of,
                    last_seq: seq,
                    last_as_of: as_of,
                    journal: self.journal.take(),
                    ..Default::default()
                };
                *sim = self.base_sim();
                true
            }
            RecordMeta::Batch {
                seq,
                as_of,
                reset,
                events,
            } => {
                let push = |sp: &mut Spool, sim: &mut Sim| match &payload {
                    Payload::Mem(_) => Err("a batch record's data in memory".to_string()),
                    Payload::At { at, len } => {
                        sp.push_batch_at(sim, seq, as_of, &events, *at, *len, true)
                    }
                };
                if reset {
                    let mut fresh = Spool {
                        last_seq: self.last_seq,
                        journal: self.journal.clone(),
                        ..Default::default()
                    };
                    let mut fsim = Sim::default();
                    if push(&mut fresh, &mut fsim).is_err() {
                        return false;
                    }
                    *self = fresh;
                    *sim = fsim;
                    true
                } else {
                    // In place (a copy per record made loading
                    // quadratic); the spool is as before the record.
                    push(self, sim).is_ok()
                }
            }
        }
    }

    /// Append a batch's items (checked against `sim`, which advances), its
    /// data kept in the spool's own buffer (a spool built in memory).
    #[cfg(test)]
    pub(crate) fn push_batch(
        &mut self,
        sim: &mut Sim,
        seq: u64,
        as_of: Timestamp,
        events: &[SpoolEvent],
        data: &[u8],
    ) -> std::result::Result<(), String> {
        let j = self.journal.get_or_insert_with(|| JournalFile {
            file: None,
            path: PathBuf::from("(in memory)"),
            window: Default::default(),
        });
        assert!(
            j.file.is_none(),
            "a spool read from a journal grows by push_batch_at"
        );
        let at = {
            let mut w = j.window.lock().unwrap_or_else(|p| p.into_inner());
            w.1.extend_from_slice(data);
            (w.1.len() - data.len()) as u64
        };
        self.push_items(sim, seq, as_of, events, data.len() as u64, |p, l| Data {
            at: at + p,
            len: l,
        })
    }

    /// Append a batch's items whose data is in the journal at `at`, `len`
    /// bytes. `undo`: if the batch does not apply, the spool as it was (the
    /// caller rebuilds `sim`, which may be half advanced).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push_batch_at(
        &mut self,
        sim: &mut Sim,
        seq: u64,
        as_of: Timestamp,
        events: &[SpoolEvent],
        at: u64,
        len: u64,
        undo: bool,
    ) -> std::result::Result<(), String> {
        let (n, b, last_seq, last_as_of) = (
            self.items.len(),
            self.batches.len(),
            self.last_seq,
            self.last_as_of,
        );
        let r = self.push_items(sim, seq, as_of, events, len, |p, l| Data {
            at: at + p,
            len: l,
        });
        if r.is_err() && undo {
            self.items.truncate(n);
            self.batches.truncate(b);
            self.last_seq = last_seq;
            self.last_as_of = last_as_of;
        }
        r
    }

    fn push_items(
        &mut self,
        sim: &mut Sim,
        seq: u64,
        as_of: Timestamp,
        events: &[SpoolEvent],
        total: u64,
        data: impl Fn(u64, u64) -> Data,
    ) -> std::result::Result<(), String> {
        let mut pos = 0u64;
        let batch = self.batches.len() as u32;
        if !events.is_empty() {
            self.batches.push((seq, as_of));
        }
        for ev in events {
            let d = match ev {
                SpoolEvent::Append { len, .. } => {
                    let end = pos
                        .checked_add(*len)
                        .filter(|e| *e <= total)
                        .ok_or("the events announce more bytes than the batch carries")?;
                    let d = data(pos, *len);
                    pos = end;
                    d
                }
                _ => Data { at: 0, len: 0 },
            };
            sim.apply(ev, Src::Item(self.items.len()))?;
            let ev = self.compact(ev);
            self.items.push(Item { ev, data: d, batch });
        }
        if pos != total {
            return Err("the batch carries more bytes than its events announce".into());
        }
        self.last_seq = seq;
        self.last_as_of = Some(as_of);
        Ok(())
    }

    /// Read `state_dir/spool/journal` (absent: empty) as a stream: records
    /// one at a time, the items' bytes left in the file (read again when
    /// matched or applied). `repair`: cut a torn or failing tail off the
    /// file (only the spool's writer does).
    pub fn load(dir: &Path, repair: bool) -> Result<Spool> {
        let path = dir.join(JOURNAL);
        let Some(journal) = JournalFile::open(dir)? else {
            return Ok(Spool::default());
        };
        let file = journal.file.clone().expect("opened from a file");
        let len = file
            .metadata()
            .ctx(format!("stat {}", path.display()))?
            .len();
        let mut rr = RecordReader::new(std::io::BufReader::with_capacity(1 << 20, &*file), len);
        let mut sp = Spool {
            journal: Some(journal.clone()),
            ..Default::default()
        };
        let mut sim = Sim::default();
        let mut good_bytes = 0;
        // Only records that decode and apply count.
        while let Some((meta, payload)) = rr.next_record() {
            if !sp.add_record(&mut sim, meta, payload) {
                break;
            }
            good_bytes = rr.pos;
        }
        if good_bytes < len && repair {
            tracing::warn!(
                path = %path.display(),
                cut = len - good_bytes,
                "spool journal: cutting an incomplete or failing tail"
            );
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .ctx(format!("open {}", path.display()))?;
            f.set_len(good_bytes)
                .ctx(format!("truncate {}", path.display()))?;
            f.sync_all().ctx(format!("fsync {}", path.display()))?;
        }
        sp.disk_bytes = good_bytes;
        Ok(sp)
    }

    /// The records that reproduce this spool (tests; see
    /// [`Spool::write_records`]).
    #[cfg(test)]
    pub(crate) fn records(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_records(&mut out).expect("records");
        out
    }

    /// Write the records that reproduce this spool (a base, then one record
    /// per batch of remaining items) to `w`, one batch's data read at a
    /// time.
    pub(crate) fn write_records(&self, w: &mut dyn Write) -> std::result::Result<(), String> {
        let io = |e: std::io::Error| format!("writing the spool journal: {e}");
        let mut data = Vec::new();
        let files = self
            .base
            .iter()
            .map(|b| {
                data.extend_from_slice(&b.tail);
                BaseMeta {
                    file: b.file.clone(),
                    size: b.size,
                    tail_len: b.tail.len() as u64,
                }
            })
            .collect();
        let first_seq = if self.items.is_empty() {
            self.last_seq
        } else {
            self.batch_of(0).0 - 1
        };
        w.write_all(&encode_record(
            &RecordMeta::Base {
                seq: first_seq,
                as_of: self.base_as_of,
                files,
            },
            &data,
        ))
        .map_err(io)?;
        let mut i = 0;
        while i < self.items.len() {
            let (seq, as_of) = self.batch_of(i);
            let mut events = Vec::new();
            let mut data = Vec::new();
            while i < self.items.len() && self.batch_of(i).0 == seq {
                events.push(self.ev(i));
                data.extend(self.read(Src::Item(i), 0, self.items[i].data.len())?);
                i += 1;
            }
            w.write_all(&encode_record(
                &RecordMeta::Batch {
                    seq,
                    as_of,
                    reset: false,
                    events,
                },
                &data,
            ))
            .map_err(io)?;
        }
        // Batches without events after the last item still said "nothing
        // new as of": keep the newest of them (sequence and time).
        let last_item_seq = if self.items.is_empty() {
            first_seq
        } else {
            self.batch_of(self.items.len() - 1).0
        };
        if let Some(as_of) = self.last_as_of.filter(|_| self.last_seq > last_item_seq) {
            w.write_all(&encode_record(
                &RecordMeta::Batch {
                    seq: self.last_seq,
                    as_of,
                    reset: false,
                    events: vec![],
                },
                &[],
            ))
            .map_err(io)?;
        }
        Ok(())
    }

    /// What a follower needs to resume: each file's size and known tail.
    pub(crate) fn file_states(&self) -> std::result::Result<Vec<SpoolFileState>, String> {
        let sim = self.sim();
        sim.names
            .iter()
            .map(|(name, &i)| {
                let inst = &sim.insts[i];
                let tail = self.known_tail(inst)?;
                Ok(SpoolFileState {
                    file: name.clone(),
                    size: inst.size,
                    tail_len: tail.len() as u64,
                    tail_blake3: blake3::hash(&tail).to_hex().to_string(),
                })
            })
            .collect()
    }

    /// The last ≤ TAIL contiguous known bytes ending at the file's size.
    pub(crate) fn known_tail(&self, inst: &Inst) -> std::result::Result<Vec<u8>, String> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut end = inst.size;
        let mut have = 0u64;
        for r in inst.ranges.iter().rev() {
            if r.offset + r.len != end || have >= TAIL as u64 {
                break;
            }
            let take = r.len.min(TAIL as u64 - have);
            parts.push(self.read(r.src, r.len - take, take)?);
            have += take;
            end = r.offset + (r.len - take);
            if take < r.len {
                break;
            }
        }
        parts.reverse();
        Ok(parts.concat())
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first cut a directory may be at: after the last `Base` event (a
    /// restart of the spool from the primary's files, sizes without bytes:
    /// a directory before it cannot be brought to it from the spool).
    pub(crate) fn min_cut(&self) -> usize {
        self.items
            .iter()
            .rposition(|it| matches!(it.ev, Ev::Base { .. }))
            .map_or(0, |k| k + 1)
    }

    pub fn pending_bytes(&self) -> u64 {
        self.items.iter().map(|i| i.data.len()).sum()
    }

    pub fn last_as_of(&self) -> Option<Timestamp> {
        self.last_as_of
    }
}

/// Short lock around every change of the journal (a batch, a checkpoint).
pub(crate) fn spool_lock(
    dir: &Path,
    name: &str,
    wait: Duration,
) -> Result<nix::fcntl::Flock<File>> {
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let path = dir.join(name);
    crate::base::catalog::flock_exclusive(&path, wait, Duration::from_millis(50))?
        .map_err(|e| Error::refused(format!("another snapsite holds {} ({e})", path.display())))
}

/// The outcome of the last checkpoint, when it failed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Broken {
    pub set_id: String,
    pub at: Timestamp,
    pub reason: String,
}

/// A committed snapshot's files, readable: btrfs reads the received
/// read-only subvolume in place; ZFS mounts the replica's snapshot and LVM
/// the thin snapshot (activated) read-only, without journal replay, on a
/// directory of the spool's own, unmounted again on drop.
pub(crate) struct SnapshotView {
    pub(crate) root: PathBuf,
    pub(crate) mounted: bool,
}

impl Drop for SnapshotView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = crate::base::cmd::Cmd::new("umount").arg(&self.root).run();
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

pub(crate) fn snapshot_view(
    cfg: &Config,
    stores: &Stores,
    dir: &Path,
    set_id: &str,
) -> Result<SnapshotView> {
    crate::base::model::validate_set_id(set_id)?;
    let st = stores
        .find(&cfg.redolog_role)
        .ok_or_else(|| Error::config("no redolog volume"))?;
    let (device, options): (String, Vec<&str>) = match &st.volume().addr {
        VolumeAddr::Btrfs { .. } => {
            let p = crate::backend::btrfs::snapshot_path(st.volume(), set_id)?;
            if !p.is_dir() {
                return Err(Error::not_found(format!("{} is not there", p.display())));
            }
            return Ok(SnapshotView {
                root: p,
                mounted: false,
            });
        }
        VolumeAddr::Zfs { .. } => {
            let r = crate::backend::require_replica(st.volume(), "a checkpoint")?;
            (format!("{r}@{set_id}"), vec!["-t", "zfs", "-o", "ro"])
        }
        VolumeAddr::Lvm { replica, .. } => {
            let r = replica
                .as_ref()
                .ok_or_else(|| Error::config("lvm redolog volume without replica"))?;
            let lv = crate::backend::lvm::snap_lv(&r.lv, set_id);
            crate::base::cmd::Cmd::new("lvchange")
                .env("LC_ALL", "C")
                .args(["-ay", "-K"])
                .arg(format!("{}/{lv}", r.vg))
                .run()?;
            let dev = format!("/dev/{}/{lv}", r.vg);
            let fstype = crate::base::cmd::Cmd::new("blkid")
                .args(["-o", "value", "-s", "TYPE", "--"])
                .arg(&dev)
                .output()?;
            let opts = match fstype.trim() {
                "xfs" => "ro,norecovery,nouuid",
                "ext4" | "ext3" => "ro,noload",
                _ => "ro",
            };
            (dev, vec!["-o", opts])
        }
    };
    let root = dir.join(format!("view-{}", std::process::id()));
    std::fs::create_dir_all(&root).ctx(format!("create {}", root.display()))?;
    crate::base::cmd::Cmd::new("mount")
        .args(options)
        .arg(&device)
        .arg(&root)
        .run()
        .inspect_err(|_| {
            let _ = std::fs::remove_dir(&root);
        })?;
    Ok(SnapshotView {
        root,
        mounted: true,
    })
}

/// After serve committed a set: if it holds the redolog volume, match the
/// spool against its files and drop what it covers. Never fails the commit.
pub fn checkpoint_after_commit(
    cfg: &Config,
    stores: &Stores,
    catalog: &Catalog,
    log: &dyn Fn(tracing::Level, &str),
    set_id: &str,
) {
    if settings(cfg).is_none() {
        return;
    }
    let dir = spool_dir(catalog);
    if !dir.join(JOURNAL).exists() {
        return;
    }
    let Ok(Some(m)) = catalog.manifest(set_id) else {
        return;
    };
    if m.member(&cfg.redolog_role).is_none() {
        return;
    }
    let view = match snapshot_view(cfg, stores, &dir, set_id) {
        Ok(v) => v,
        Err(e) => {
            log(
                tracing::Level::WARN,
                &format!(
                    "spool: set {set_id}: the redolog snapshot's files cannot be read ({}); spool kept unchecked",
                    wire_text(&e.to_string())
                ),
            );
            return;
        }
    };
    let root = view.root.clone();
    match checkpoint(&dir, &root, set_id) {
        Ok(Some(dropped)) => log(
            tracing::Level::INFO,
            &format!("spool: set {set_id} covers {dropped} spooled events; dropped"),
        ),
        Ok(None) => {}
        Err(e) => log(
            tracing::Level::ERROR,
            &format!("spool: set {set_id}: {}", wire_text(&e.to_string())),
        ),
    }
}

/// Match the spool in `dir` against a committed snapshot's files at `root`
/// and drop the events it covers. `Ok(None)`: nothing to do. A mismatch is
/// recorded in `broken.json` and returned as an error.
pub fn checkpoint(dir: &Path, root: &Path, set_id: &str) -> Result<Option<usize>> {
    checkpoint_within(dir, root, set_id, CHECKPOINT_TIME)
}

pub(crate) fn checkpoint_within(
    dir: &Path,
    root: &Path,
    set_id: &str,
    time: Duration,
) -> Result<Option<usize>> {
    let _l = spool_lock(dir, "lock", Duration::from_secs(30))?;
    let sp = Spool::load(dir, true)?;
    if sp.base.is_empty() && sp.items.is_empty() {
        return Ok(None);
    }
    let root = &Root::open(root)?;
    let bound = Bound {
        deadline: Some(Instant::now() + time),
    };
    match find_cut(&sp, root, bound) {
        Ok((j, sim)) => {
            let new = rebase(&sp, j, &sim, None).map_err(Error::storage)?;
            rewrite_journal(dir, &new)?;
            crate::failpoint!("spool.checkpoint.after_rewrite");
            let _ = std::fs::remove_file(dir.join("broken.json"));
            Ok(Some(j))
        }
        Err(reason) => {
            let b = Broken {
                set_id: set_id.to_string(),
                at: Timestamp::now(),
                reason: reason.clone(),
            };
            crate::base::catalog::write_json(&dir.join("broken.json"), &b)?;
            if reason.starts_with(GAVE_UP) {
                return Err(Error::integrity(format!(
                    "the spool could not be matched against the redolog snapshot ({reason}); it is marked unusable (spool/broken.json) until a snapshot matches"
                )));
            }
            Err(Error::integrity(format!(
                "the spool does not continue the redolog snapshot ({reason}); it is not used until a snapshot matches"
            )))
        }
    }
}

// ---------------------------------------------------------------------------
// The standby's spool session.

pub(crate) fn refuse_reason(
    s: &StreamSettings,
    sp: &Spool,
    seq: u64,
    events: &[SpoolEvent],
    bytes: u64,
    as_of: Timestamp,
) -> std::result::Result<(), String> {
    if seq != sp.last_seq + 1 {
        return Err(format!(
            "batch {seq} does not follow the spool's last batch {}",
            sp.last_seq
        ));
    }
    if events.len() > MAX_BATCH_EVENTS || bytes > MAX_BATCH_BYTES {
        return Err(format!(
            "batch of {} events and {bytes} bytes exceeds {MAX_BATCH_EVENTS} events / {MAX_BATCH_BYTES} bytes",
            events.len()
        ));
    }
    if as_of > crate::base::model::now() + jiff::SignedDuration::from_hours(24) {
        return Err("batch dated more than a day ahead of this standby's clock".into());
    }
    for ev in events {
        let names: Vec<&String> = match ev {
            SpoolEvent::Base { file, .. }
            | SpoolEvent::Append { file, .. }
            | SpoolEvent::Truncate { file, .. }
            | SpoolEvent::Remove { file } => vec![file],
            SpoolEvent::Rename { from, to } => vec![from, to],
        };
        for n in names {
            check_name(n).map_err(|e| wire_str(&e))?;
            if !s.files.iter().any(|g| glob_match(g, n)) {
                return Err(format!(
                    "`{}` matches none of this standby's [stream] files",
                    wire_str(n)
                ));
            }
        }
    }
    Ok(())
}

/// A spool session: `first` was the `SpoolHello`.
pub fn serve_spool<R: Read, W: Write>(
    cfg: &Config,
    catalog: &Catalog,
    log: &dyn Fn(tracing::Level, &str),
    first: Msg,
    mut r: Reader<R>,
    mut w: Writer<W>,
) -> Result<()> {
    let Msg::SpoolHello {
        protocol,
        site,
        version,
    } = first
    else {
        return Err(Error::protocol("expected a spool hello"));
    };
    let Some(s) = settings(cfg) else {
        let m = format!(
            "standby {} has no [stream] section: redolog streaming refused",
            cfg.site
        );
        let _ = w.msg(&Msg::Error { message: m.clone() });
        return Err(Error::refused(m));
    };
    if protocol != PROTOCOL_VERSION {
        let m = format!("spool protocol {protocol} is not supported");
        let _ = w.msg(&Msg::Error { message: m.clone() });
        return Err(Error::protocol(m));
    }
    let dir = spool_dir(catalog);
    // One spool session at a time; an old one whose primary vanished ends
    // at its idle timeout or when its pipe closes.
    let _session = spool_lock(&dir, "session.lock", Duration::from_secs(150))?;
    log(
        tracing::Level::INFO,
        &format!(
            "spool session started: primary {} (snapsite {})",
            wire_str(&site),
            wire_str(&version)
        ),
    );
    let mut sp = {
        let _l = spool_lock(&dir, "lock", Duration::from_secs(30))?;
        Spool::load(&dir, true)?
    };
    let mut sim = sp.sim();
    let mut known = journal_id(&dir);
    w.msg(&Msg::SpoolWelcome {
        site: cfg.site.clone(),
        last_seq: sp.last_seq,
        last_as_of: sp.last_as_of,
        files: sp.file_states().map_err(Error::storage)?,
    })?;
    loop {
        let frame = match r.next_frame()? {
            None => return Ok(()),
            Some(f) => f,
        };
        let (seq, as_of, reset, events, bytes, want_hash) = match frame {
            Frame::Msg(Msg::SpoolBatch {
                seq,
                as_of,
                reset,
                events,
                bytes,
                blake3,
            }) => (seq, as_of, reset, events, bytes, blake3),
            Frame::Msg(Msg::Bye) => return Ok(()),
            Frame::Msg(_) => return Err(Error::protocol("unexpected message in a spool session")),
            Frame::Data(_) => return Err(Error::protocol("data frame outside a spool batch")),
        };
        if bytes > MAX_BATCH_BYTES {
            return Err(Error::protocol(format!(
                "spool batch of {bytes} bytes exceeds {MAX_BATCH_BYTES}"
            )));
        }
        let mut data = Vec::with_capacity(bytes as usize);
        while (data.len() as u64) < bytes {
            match r.next_frame()? {
                Some(Frame::Data(d)) if data.len() as u64 + d.len() as u64 <= bytes => {
                    data.extend_from_slice(&d)
                }
                Some(Frame::Data(_)) => {
                    return Err(Error::protocol(
                        "spool batch carries more bytes than announced",
                    ));
                }
                _ => return Err(Error::protocol("spool batch cut before its data")),
            }
        }
        let got = blake3::hash(&data).to_hex().to_string();
        let refused = |e: String| Msg::SpoolRefused {
            seq,
            error: e,
            full: false,
        };
        if got != want_hash {
            let e = format!("spool batch {seq}: checksum mismatch; refused");
            log(tracing::Level::ERROR, &e);
            w.msg(&refused(e))?;
            continue;
        }
        let _l = spool_lock(&dir, "lock", Duration::from_secs(30))?;
        // A checkpoint may have rewritten the journal since (a new inode):
        // read it again; otherwise what this session holds is current.
        if journal_id(&dir) != known {
            sp = Spool::load(&dir, true)?;
            sim = sp.sim();
        }
        if let Err(e) = refuse_reason(s, &sp, seq, &events, bytes, as_of) {
            log(tracing::Level::WARN, &format!("spool batch refused: {e}"));
            w.msg(&refused(e))?;
            continue;
        }
        let (rec, data_at) = encode_record_at(
            &RecordMeta::Batch {
                seq,
                as_of,
                reset,
                events: events.clone(),
            },
            &data,
        );
        let new_size = if reset {
            rec.len() as u64
        } else {
            sp.disk_bytes + rec.len() as u64
        };
        // The spool is full: refused (`full`, so the follower waits for a
        // commit instead of giving up) with the reason, logged.
        let full = if !reset && sp.items.len() + events.len() > MAX_SPOOL_EVENTS {
            Some(format!("hold more than {MAX_SPOOL_EVENTS} events"))
        } else if new_size > s.spool_max {
            Some(format!(
                "grow to {new_size} bytes, beyond stream.spool_max {}",
                s.spool_max
            ))
        } else {
            None
        };
        if let Some(why) = full {
            let e = format!("the spool would {why}; refused until a snapshot is committed");
            log(tracing::Level::WARN, &e);
            w.msg(&Msg::SpoolRefused {
                seq,
                error: e,
                full: true,
            })?;
            continue;
        }
        // The batch applied to the spool in memory (in place: a copy of the
        // spool per batch made a session quadratic), then recorded.
        if reset {
            let mut fresh = Spool {
                last_seq: sp.last_seq,
                ..Default::default()
            };
            let mut fsim = Sim::default();
            // The items' bytes are read from the journal when needed, not
            // kept in memory for the session.
            let len = data.len() as u64;
            if let Err(e) = fresh.push_batch_at(&mut fsim, seq, as_of, &events, data_at, len, false)
            {
                log(tracing::Level::WARN, &format!("spool batch refused: {e}"));
                w.msg(&refused(e))?;
                continue;
            }
            write_journal_atomic(&dir, &rec)?;
            fresh.journal = JournalFile::open(&dir)?;
            // A first start is one too; a reset of a spool holding events
            // means the primary could not continue it.
            let level = if sp.items.is_empty() {
                tracing::Level::INFO
            } else {
                tracing::Level::WARN
            };
            log(level, "spool started over from the primary's current files");
            sp = fresh;
            sim = fsim;
        } else {
            let (at, len) = (sp.disk_bytes + data_at, data.len() as u64);
            if let Err(e) = sp.push_batch_at(&mut sim, seq, as_of, &events, at, len, true) {
                sim = sp.sim();
                log(tracing::Level::WARN, &format!("spool batch refused: {e}"));
                w.msg(&refused(e))?;
                continue;
            }
            append_journal(&dir, &rec)?;
            if sp.journal.is_none() {
                sp.journal = JournalFile::open(&dir)?;
            }
        }
        sp.disk_bytes = new_size;
        known = journal_id(&dir);
        drop(_l);
        crate::failpoint!("spool.after_append");
        w.msg(&Msg::SpoolAck { seq })?;
    }
}

pub mod journal;
pub mod matching;
