//! The standby's side: the spool journal (records, loading, the cap),
//! the commit-time checkpoint and the spool session of `serve`.

use super::*;

// ---------------------------------------------------------------------------
// The spool: journal records on disk, the virtual state in memory.

/// A batch or a base as recorded in the journal (its data follows it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub(super) enum RecordMeta {
    /// A new start (checkpoint): files with their sizes and known tails.
    Base {
        seq: u64,
        as_of: Option<Timestamp>,
        files: Vec<BaseMeta>,
    },
    Batch {
        seq: u64,
        as_of: Timestamp,
        reset: bool,
        events: Vec<SpoolEvent>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BaseMeta {
    pub(super) file: String,
    pub(super) size: u64,
    pub(super) tail_len: u64,
}

pub(super) fn encode_record(meta: &RecordMeta, data: &[u8]) -> Vec<u8> {
    let m = serde_json::to_vec(meta).expect("records serialize");
    let mut out = Vec::with_capacity(12 + m.len() + data.len() + 32);
    out.extend_from_slice(&(m.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(data);
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

/// Records of a journal; stops at the first incomplete or failing record.
/// Also returns where each record ends.
pub(super) fn decode_records(bytes: &[u8]) -> (Vec<(RecordMeta, Vec<u8>)>, Vec<usize>) {
    let mut out = Vec::new();
    let mut ends = Vec::new();
    let mut pos = 0usize;
    loop {
        let rest = &bytes[pos..];
        if rest.len() < 12 {
            break;
        }
        let ml = u32::from_be_bytes(rest[..4].try_into().expect("4")) as usize;
        let dl = u64::from_be_bytes(rest[4..12].try_into().expect("8"));
        let Some(total) = (dl as usize)
            .checked_add(12 + ml + 32)
            .filter(|t| *t <= rest.len())
        else {
            break;
        };
        let body = &rest[..total - 32];
        if blake3::hash(body).as_bytes() != &rest[total - 32..total] {
            break;
        }
        let Ok(meta) = serde_json::from_slice::<RecordMeta>(&body[12..12 + ml]) else {
            break;
        };
        out.push((meta, body[12 + ml..].to_vec()));
        pos += total;
        ends.push(pos);
    }
    (out, ends)
}
/// One event of the spool with its data.
#[derive(Debug, Clone)]
pub(super) struct Item {
    pub(super) ev: SpoolEvent,
    pub(super) data: Vec<u8>,
    pub(super) seq: u64,
    pub(super) as_of: Timestamp,
}

#[derive(Debug, Clone)]
pub(super) struct BaseFile {
    pub(super) file: String,
    pub(super) size: u64,
    pub(super) tail: Vec<u8>,
}

/// The spool as recorded: base + items.
#[derive(Debug, Clone, Default)]
pub struct Spool {
    pub(super) base: Vec<BaseFile>,
    pub(super) base_as_of: Option<Timestamp>,
    pub(super) items: Vec<Item>,
    pub(super) last_seq: u64,
    pub(super) last_as_of: Option<Timestamp>,
    /// Bytes of the journal on disk.
    pub(super) disk_bytes: u64,
}

impl Spool {
    pub(super) fn data(&self, src: Src) -> &[u8] {
        match src {
            Src::Base(i) => &self.base[i].tail,
            Src::Item(i) => &self.items[i].data,
        }
    }

    /// The state after the base alone.
    pub(super) fn base_sim(&self) -> Sim {
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
    pub(super) fn sim(&self) -> Sim {
        let mut sim = self.base_sim();
        for (i, it) in self.items.iter().enumerate() {
            sim.apply(&it.ev, Src::Item(i))
                .expect("recorded items applied when they were received");
        }
        sim
    }

    /// Build from journal records (items are checked as they are replayed;
    /// a record that does not apply ends the journal there).
    pub(super) fn from_records(recs: Vec<(RecordMeta, Vec<u8>)>) -> (Spool, usize) {
        let mut sp = Spool::default();
        let mut sim = Sim::default();
        let mut good = 0;
        for (meta, data) in recs {
            match meta {
                RecordMeta::Base { seq, as_of, files } => {
                    let mut pos = 0usize;
                    let mut base = Vec::new();
                    for f in files {
                        let end = pos + f.tail_len as usize;
                        if end > data.len() || f.tail_len > f.size {
                            return (sp, good);
                        }
                        base.push(BaseFile {
                            file: f.file,
                            size: f.size,
                            tail: data[pos..end].to_vec(),
                        });
                        pos = end;
                    }
                    sp = Spool {
                        base,
                        base_as_of: as_of,
                        last_seq: seq,
                        last_as_of: as_of,
                        ..Default::default()
                    };
                    sim = sp.base_sim();
                }
                RecordMeta::Batch {
                    seq,
                    as_of,
                    reset,
                    events,
                } => {
                    if reset {
                        let mut fresh = Spool {
                            last_seq: sp.last_seq,
                            ..Default::default()
                        };
                        let mut fsim = Sim::default();
                        if fresh
                            .push_batch(&mut fsim, seq, as_of, &events, &data)
                            .is_err()
                        {
                            return (sp, good);
                        }
                        sp = fresh;
                        sim = fsim;
                    } else if sp
                        .push_batch_undoable(&mut sim, seq, as_of, &events, &data)
                        .is_err()
                    {
                        // In place (a copy per record made loading
                        // quadratic); the spool is as before the record.
                        return (sp, good);
                    }
                }
            }
            good += 1;
        }
        (sp, good)
    }

    /// Append a batch's items (checked against `sim`, which advances).
    pub(super) fn push_batch(
        &mut self,
        sim: &mut Sim,
        seq: u64,
        as_of: Timestamp,
        events: &[SpoolEvent],
        data: &[u8],
    ) -> std::result::Result<(), String> {
        let mut pos = 0usize;
        for ev in events {
            let d = match ev {
                SpoolEvent::Append { len, .. } => {
                    let end = pos
                        .checked_add(*len as usize)
                        .filter(|e| *e <= data.len())
                        .ok_or("the events announce more bytes than the batch carries")?;
                    let d = data[pos..end].to_vec();
                    pos = end;
                    d
                }
                _ => Vec::new(),
            };
            sim.apply(ev, Src::Item(self.items.len()))?;
            self.items.push(Item {
                ev: ev.clone(),
                data: d,
                seq,
                as_of,
            });
        }
        if pos != data.len() {
            return Err("the batch carries more bytes than its events announce".into());
        }
        self.last_seq = seq;
        self.last_as_of = Some(as_of);
        Ok(())
    }

    /// [`Spool::push_batch`], and if the batch does not apply, the spool
    /// as it was (the caller rebuilds `sim`, which may be half advanced).
    pub(super) fn push_batch_undoable(
        &mut self,
        sim: &mut Sim,
        seq: u64,
        as_of: Timestamp,
        events: &[SpoolEvent],
        data: &[u8],
    ) -> std::result::Result<(), String> {
        let (n, last_seq, last_as_of) = (self.items.len(), self.last_seq, self.last_as_of);
        let r = self.push_batch(sim, seq, as_of, events, data);
        if r.is_err() {
            self.items.truncate(n);
            self.last_seq = last_seq;
            self.last_as_of = last_as_of;
        }
        r
    }

    /// Read `state_dir/spool/journal` (absent: empty). `repair`: cut a torn
    /// or failing tail off the file (only the spool's writer does).
    pub fn load(dir: &Path, repair: bool) -> Result<Spool> {
        let path = dir.join(JOURNAL);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Spool::default()),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let (recs, ends) = decode_records(&bytes);
        let (mut sp, good) = Spool::from_records(recs);
        // Only records that decode and apply count.
        let good_bytes = if good == 0 { 0 } else { ends[good - 1] };
        if good_bytes < bytes.len() && repair {
            tracing::warn!(
                path = %path.display(),
                cut = bytes.len() - good_bytes,
                "spool journal: cutting an incomplete or failing tail"
            );
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .ctx(format!("open {}", path.display()))?;
            f.set_len(good_bytes as u64)
                .ctx(format!("truncate {}", path.display()))?;
            f.sync_all().ctx(format!("fsync {}", path.display()))?;
        }
        sp.disk_bytes = good_bytes as u64;
        Ok(sp)
    }

    /// The records that reproduce this spool (a base, then one record per
    /// batch of remaining items).
    pub(super) fn records(&self) -> Vec<u8> {
        let mut out = Vec::new();
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
        let first_seq = self.items.first().map_or(self.last_seq, |i| i.seq - 1);
        out.extend(encode_record(
            &RecordMeta::Base {
                seq: first_seq,
                as_of: self.base_as_of,
                files,
            },
            &data,
        ));
        let mut i = 0;
        while i < self.items.len() {
            let seq = self.items[i].seq;
            let as_of = self.items[i].as_of;
            let mut events = Vec::new();
            let mut data = Vec::new();
            while i < self.items.len() && self.items[i].seq == seq {
                events.push(self.items[i].ev.clone());
                data.extend_from_slice(&self.items[i].data);
                i += 1;
            }
            out.extend(encode_record(
                &RecordMeta::Batch {
                    seq,
                    as_of,
                    reset: false,
                    events,
                },
                &data,
            ));
        }
        // Batches without events after the last item still said "nothing
        // new as of": keep the newest of them (sequence and time).
        let last_item_seq = self.items.last().map_or(first_seq, |i| i.seq);
        if let Some(as_of) = self.last_as_of.filter(|_| self.last_seq > last_item_seq) {
            out.extend(encode_record(
                &RecordMeta::Batch {
                    seq: self.last_seq,
                    as_of,
                    reset: false,
                    events: vec![],
                },
                &[],
            ));
        }
        out
    }

    /// What a follower needs to resume: each file's size and known tail.
    pub(super) fn file_states(&self) -> Vec<SpoolFileState> {
        let sim = self.sim();
        sim.names
            .iter()
            .map(|(name, &i)| {
                let inst = &sim.insts[i];
                let tail = self.known_tail(inst);
                SpoolFileState {
                    file: name.clone(),
                    size: inst.size,
                    tail_len: tail.len() as u64,
                    tail_blake3: blake3::hash(&tail).to_hex().to_string(),
                }
            })
            .collect()
    }

    /// The last ≤ TAIL contiguous known bytes ending at the file's size.
    pub(super) fn known_tail(&self, inst: &Inst) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut end = inst.size;
        let mut have = 0usize;
        for r in inst.ranges.iter().rev() {
            if r.offset + r.len != end || have >= TAIL {
                break;
            }
            let d = &self.data(r.src)[..r.len as usize];
            let take = d.len().min(TAIL - have);
            parts.push(&d[d.len() - take..]);
            have += take;
            end = r.offset + (r.len - take as u64);
            if take < d.len() {
                break;
            }
        }
        parts.reverse();
        parts.concat()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The first cut a directory may be at: after the last `Base` event (a
    /// restart of the spool from the primary's files, sizes without bytes:
    /// a directory before it cannot be brought to it from the spool).
    pub(super) fn min_cut(&self) -> usize {
        self.items
            .iter()
            .rposition(|it| matches!(it.ev, SpoolEvent::Base { .. }))
            .map_or(0, |k| k + 1)
    }

    pub fn pending_bytes(&self) -> u64 {
        self.items.iter().map(|i| i.data.len() as u64).sum()
    }

    pub fn last_as_of(&self) -> Option<Timestamp> {
        self.last_as_of
    }
}

pub(super) fn write_journal_atomic(dir: &Path, bytes: &[u8]) -> Result<()> {
    crate::base::catalog::write_atomic(&dir.join(JOURNAL), bytes)
}

pub(super) fn append_journal(dir: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).ctx(format!("create {}", dir.display()))?;
    let path = dir.join(JOURNAL);
    let existed = path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ctx(format!("open {}", path.display()))?;
    f.write_all(bytes)
        .ctx(format!("append to {}", path.display()))?;
    f.sync_data().ctx(format!("fsync {}", path.display()))?;
    if !existed {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(format!("fsync {}", dir.display()))?;
    }
    Ok(())
}

/// The journal's (inode, size): changed by anyone but this session only
/// through a checkpoint's rewrite.
pub(super) fn journal_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join(JOURNAL))
        .ok()
        .map(|m| (m.ino(), m.len()))
}

/// Short lock around every change of the journal (a batch, a checkpoint).
pub(super) fn spool_lock(
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
pub(super) struct SnapshotView {
    pub(super) root: PathBuf,
    pub(super) mounted: bool,
}

impl Drop for SnapshotView {
    fn drop(&mut self) {
        if self.mounted {
            let _ = crate::base::cmd::Cmd::new("umount").arg(&self.root).run();
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

pub(super) fn snapshot_view(
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

pub(super) fn checkpoint_within(
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
            let new = rebase(&sp, j, &sim, None);
            write_journal_atomic(dir, &new.records())?;
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

pub(super) fn refuse_reason(
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
        files: sp.file_states(),
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
        let rec = encode_record(
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
        if !reset && sp.items.len() + events.len() > MAX_SPOOL_EVENTS {
            let e = format!(
                "the spool would hold more than {MAX_SPOOL_EVENTS} events; refused until a snapshot is committed"
            );
            log(tracing::Level::WARN, &e);
            w.msg(&Msg::SpoolRefused {
                seq,
                error: e,
                full: true,
            })?;
            continue;
        }
        if new_size > s.spool_max {
            let e = format!(
                "the spool would grow to {new_size} bytes, beyond stream.spool_max {}; refused until a snapshot is committed",
                s.spool_max
            );
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
            if let Err(e) = fresh.push_batch(&mut fsim, seq, as_of, &events, &data) {
                log(tracing::Level::WARN, &format!("spool batch refused: {e}"));
                w.msg(&refused(e))?;
                continue;
            }
            write_journal_atomic(&dir, &rec)?;
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
            if let Err(e) = sp.push_batch_undoable(&mut sim, seq, as_of, &events, &data) {
                sim = sp.sim();
                log(tracing::Level::WARN, &format!("spool batch refused: {e}"));
                w.msg(&refused(e))?;
                continue;
            }
            append_journal(&dir, &rec)?;
        }
        sp.disk_bytes = new_size;
        known = journal_id(&dir);
        drop(_l);
        crate::failpoint!("spool.after_append");
        w.msg(&Msg::SpoolAck { seq })?;
    }
}
