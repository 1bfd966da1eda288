//! The receiving end on LVM: `LvmSink` writes a stream's extents into the
//! replica, watches the thin pool's fill (and reports a receive parked for
//! want of space), reads the written ranges back,
//! records resumable checkpoints and takes the received snapshot.

use super::*;

/// A cut receive kept for resuming in a replica (its resume tag).
pub(super) struct Parked {
    pub(super) vg: String,
    pub(super) rlv: String,
    pub(super) pool: Option<String>,
    pub(super) snapshot: String,
    /// Where in the stream the receive would continue.
    pub(super) offset: u64,
    /// The replica's newest received snapshot (what it is put back to).
    pub(super) newest: Option<String>,
    /// The pool's data and metadata use, in percent.
    pub(super) usage: Option<(u64, u64)>,
}

impl Parked {
    pub(super) fn describe(&self) -> String {
        let pool = match (&self.pool, self.usage) {
            (Some(p), Some((d, m))) => {
                format!(" in thin pool {}/{p} ({d}% used, metadata {m}%)", self.vg)
            }
            (Some(p), None) => format!(" in thin pool {}/{p}", self.vg),
            _ => String::new(),
        };
        format!(
            "a cut receive of snapshot {} is parked for resuming in {}/{}: {} bytes of its stream arrived and stay allocated{pool} until the primary resumes it; failover releases it",
            self.snapshot, self.vg, self.rlv, self.offset
        )
    }
}

/// The pool's data and metadata use in percent, if it can be read.
pub(super) fn pool_percent(vg: &str, name: &str) -> Option<(u64, u64)> {
    Pool {
        vg: vg.to_string(),
        name: name.to_string(),
    }
    .usage()
    .ok()
    .map(|u| u.percents())
}

/// The volume's parked receive, if its replica holds one.
pub(super) fn parked(vol: &Volume) -> Result<Option<Parked>> {
    let Some(replica) = lvm_addr(vol)?.1 else {
        return Ok(None);
    };
    let (vg, rlv) = split(replica);
    let Some(all) = vg_lvs(vg)? else {
        return Ok(None);
    };
    let Some(r) = find(&all, rlv).filter(|r| r.has_tag(REPLICA_TAG)) else {
        return Ok(None);
    };
    let Some((_, token)) = resume_tag(r) else {
        return Ok(None);
    };
    Ok(Some(Parked {
        vg: vg.to_string(),
        rlv: rlv.to_string(),
        usage: r.pool.as_deref().and_then(|p| pool_percent(vg, p)),
        pool: r.pool.clone(),
        offset: token.offset(),
        snapshot: token.snapshot,
        newest: snapshots_of(&all, rlv).last().cloned(),
    }))
}

/// Watches the thin pool while a receive writes: every write is charged
/// with the pool blocks it can allocate (an upper bound); when the charges
/// reach what the pool had room for at the last look, the replica is
/// fsynced (buffered writes allocate only at writeback) and the pool asked
/// again. A receive that would pass [`POOL_LIMIT_PERCENT`] fails there.
pub(super) struct PoolWatch {
    pub(super) pool: Pool,
    pub(super) block_size: u64,
    /// Bytes that may still be charged before the next look.
    pub(super) budget: u64,
}

impl PoolWatch {
    pub(super) fn open(pool: Pool) -> Result<PoolWatch> {
        let block_size = pool.block_size()?;
        let mut w = PoolWatch {
            pool,
            block_size,
            budget: 0,
        };
        w.look(None, 0)?;
        Ok(w)
    }

    /// Ask the pool; fail unless `need` more bytes fit under the limit.
    pub(super) fn look(&mut self, dev: Option<&File>, need: u64) -> Result<()> {
        if let Some(d) = dev {
            d.sync_data().ctx("fsync the replica")?;
        }
        let u = self.pool.usage()?;
        let room = u.data_headroom(POOL_LIMIT_PERCENT) * self.block_size;
        if !u.meta_ok(POOL_LIMIT_PERCENT) || room < need.max(1) {
            let (d, m) = u.percents();
            return Err(Error::refused(format!(
                "thin pool {}/{} would pass {POOL_LIMIT_PERCENT}% ({d}% of its data and {m}% of its metadata in use): the receive stops so that failover's writable snapshots keep room",
                self.pool.vg, self.pool.name
            )));
        }
        self.budget = room.min(WATCH_STEP.max(need));
        Ok(())
    }

    /// A write of `len` bytes at `offset` is about to happen.
    pub(super) fn charge(&mut self, dev: Option<&File>, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let bs = self.block_size;
        let bytes = ((offset + len - 1) / bs - offset / bs + 1) * bs;
        if bytes > self.budget {
            self.look(dev, bytes)?;
        }
        self.budget -= bytes;
        Ok(())
    }
}

/// One record of a received stream, for reading back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Written {
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) data: bool,
}

/// The receiving end: writes the ranges into the replica LV, and on commit
/// verifies them and takes the snapshot.
pub(super) struct LvmSink {
    /// The base's thin device (and the pool's other likely bases), for
    /// [`SnapshotSink::base_map`].
    pub(super) base_thin: Option<super::mapped::BaseThin>,
    pub(super) vol: Volume,
    pub(super) vg: String,
    pub(super) rlv: String,
    pub(super) name: String,
    pub(super) base: Option<String>,
    pub(super) expect_id: Option<String>,
    pub(super) decoder: Decoder,
    pub(super) header: Option<Header>,
    pub(super) dev: Option<File>,
    pub(super) hash: RecordHash,
    pub(super) records: Vec<Written>,
    pub(super) end: Option<(u64, [u8; 32])>,
    /// The first error; `commit` returns it.
    pub(super) failed: Option<Error>,
    /// `prepare` changed the replica: until the snapshot is taken, any
    /// failure puts it back (`release`), so a refused stream keeps nothing.
    pub(super) touched: bool,
    /// The replica before this receive when it had no snapshot to be
    /// recreated from (a replica made by hand): (size, pool).
    pub(super) before: Option<(u64, String)>,
    pub(super) watch: Option<PoolWatch>,
    /// The sender announced a resumed stream (`Begin { resume }`).
    pub(super) resume_req: bool,
    /// Verified progress, for resuming a cut receive (`lvm/resume.rs`).
    pub(super) progress: Progress,
    /// Reading back complete records behind the stream (`lvm/readback.rs`).
    pub(super) behind: Option<readback::ReadBehind>,
}

/// What a receive has verified so far, and the resume tag that says so.
#[derive(Default)]
pub(super) struct Progress {
    /// Where this session's records start (0, or the offset resumed from).
    pub(super) start: u64,
    /// The chain and segment ends of the sessions before this one.
    pub(super) prev_chain: [u8; 32],
    pub(super) prev_bounds: Vec<u64>,
    /// End of the last complete record, and the record hash there.
    pub(super) done_upto: u64,
    pub(super) boundary: RecordHash,
    /// Bytes still to come of the `W` record being received.
    pub(super) pending: u64,
    /// Highest offset written (or begun to be written) up to, by this
    /// session or the cut ones it continues.
    pub(super) high: u64,
    /// Writes must stay below this until the next checkpoint: the `high`
    /// the tag on the replica promises.
    pub(super) limit: u64,
    /// The resume tag on the replica now.
    pub(super) tag: Option<String>,
    /// Records read back and checked so far, as a hash.
    pub(super) readback: RecordHash,
    pub(super) header: [u8; 16],
}

/// Bytes received between two checkpoints of a long receive (fsync, read
/// back, tag): what a killed `serve` or a reboot can lose at most.
/// `SNAPSITE_LVM_CHECKPOINT_BYTES` overrides it (tests).
pub(super) fn checkpoint_every() -> u64 {
    std::env::var("SNAPSITE_LVM_CHECKPOINT_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|v| *v >= 1 << 20)
        .unwrap_or(1 << 30)
}

pub(super) fn io_of(e: &Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl LvmSink {
    pub(super) fn ctx(&self) -> String {
        format!("volume `{}`", self.vol.role)
    }

    pub(super) fn replica(&self) -> String {
        format!("{}/{}", self.vg, self.rlv)
    }

    /// Make the replica hold what the stream applies to, and open it.
    ///
    /// The replica is recreated for every receive: empty for a full stream,
    /// a thin snapshot of the base snapshot for an incremental one. So a cut
    /// or rejected receive, which leaves partial writes in the replica, can
    /// never leak into the next one: the chain stays exact without tracking
    /// whether the replica was touched. For thin LVs both are metadata
    /// operations (two LVM commands), whatever the size.
    pub(super) fn prepare(&mut self, h: &Header) -> Result<()> {
        self.check_header(h)?;
        let all = vg_lvs(&self.vg)?.unwrap_or_default();
        let existing = find(&all, &self.rlv).cloned();
        if let Some(r) = &existing {
            if !r.has_tag(REPLICA_TAG) {
                return Err(Error::refused(format!(
                    "{} exists and is not a snapsite replica (no tag {REPLICA_TAG}); not overwriting it",
                    self.replica()
                )));
            }
        }
        let (pool, base_lv) = self.pool_and_base(h, &all)?;
        self.check_resume_announced(h)?;
        self.progress.header = resume::header_digest(h);
        self.progress.limit = checkpoint_every();
        let watch = PoolWatch::open(Pool {
            vg: self.vg.clone(),
            name: pool.clone(),
        })?;
        if snapshots_of(&all, &self.rlv).is_empty() {
            self.before = existing
                .as_ref()
                .and_then(|r| Some((r.size, r.pool.clone()?)));
        }
        if let Some(from) = &h.resume {
            return self.prepare_resumed(h, from, existing.as_ref(), watch);
        }
        self.recreate_replica(h, &pool, base_lv, existing.is_some())?;
        self.watch = Some(watch);
        self.open_replica(h)
    }

    /// The stream's header against what the sender announced: its
    /// snapshot, its LV's uuid, a sane device size.
    pub(super) fn check_header(&self, h: &Header) -> Result<()> {
        if h.snapshot != self.name {
            return Err(Error::integrity(format!(
                "the stream carries snapshot {}, expected {}",
                h.snapshot, self.name
            )));
        }
        if let Some(id) = &h.storage_id {
            check_uuid(id)?;
        }
        if let (Some(want), Some(got)) = (&self.expect_id, &h.storage_id) {
            if want != got {
                return Err(Error::integrity(format!(
                    "the stream is of LV {got}, the sender announced {want}"
                )));
            }
        }
        if h.size == 0 || h.size % 512 != 0 {
            return Err(Error::protocol(format!(
                "device size {} in the stream",
                h.size
            )));
        }
        Ok(())
    }

    /// The largest device a stream may declare: the standby's own limit
    /// (`max_size`, else the VG's size), never the stream's word; with
    /// where the limit comes from, for the refusal.
    pub(super) fn size_limit(&self) -> Result<(u64, String)> {
        Ok(match self.vol.max_size_bytes() {
            Some(l) => (l, "max_size".to_string()),
            None => (
                vg_size(&self.vg)?,
                format!("the default max_size, the size of volume group {}", self.vg),
            ),
        })
    }

    /// The thin pool the replica lives in and, for an incremental stream,
    /// the base snapshot LV (with its size) it is a snapshot of; checks the
    /// base and the declared size.
    pub(super) fn pool_and_base(
        &self,
        h: &Header,
        all: &[LvInfo],
    ) -> Result<(String, Option<(String, u64)>)> {
        let (limit, limit_from) = self.size_limit()?;
        let too_big = |size: u64| {
            Error::refused(format!(
                "the stream declares a device of {size} bytes, more than {limit} bytes ({limit_from}); nothing was created"
            ))
            .with_hint(format!(
                "if the primary's LV really is that large, set max_size on volume `{}` in the standby's config",
                self.vol.role
            ))
        };
        match h.kind {
            StreamKind::Full => {
                if h.size > limit {
                    return Err(too_big(h.size));
                }
                Ok((replica_pool(&self.vol, all, &self.rlv)?, None))
            }
            StreamKind::Incremental => {
                let base = match (&h.base, &self.base) {
                    (Some(hb), Some(b)) if hb == b => b.clone(),
                    (hb, b) => {
                        return Err(Error::protocol(format!(
                            "incremental stream from base {hb:?}, but the sender announced base {b:?}"
                        )));
                    }
                };
                let base_lv = snap_lv(&self.rlv, &base);
                let bi = find(all, &base_lv).ok_or_else(|| {
                    Error::storage(format!("base snapshot {}/{base_lv} is missing", self.vg))
                })?;
                if let (Some(want), Some(got)) = (&h.base_storage_id, bi.tag_value(FROM_TAG)) {
                    if want != got {
                        return Err(Error::integrity(format!(
                            "base {base} here was received from LV {got}, the sender's base is {want}"
                        )));
                    }
                }
                if bi.size > h.size {
                    return Err(Error::storage(format!(
                        "the source shrank from {} to {} bytes; ship a full snapshot",
                        bi.size, h.size
                    )));
                }
                if h.size > bi.size && h.size > limit {
                    return Err(too_big(h.size));
                }
                let pool = bi.pool.clone().ok_or_else(|| {
                    Error::storage(format!("base snapshot {}/{base_lv} is not thin", self.vg))
                })?;
                Ok((pool, Some((base_lv, bi.size))))
            }
        }
    }

    /// A resumed stream exactly when the sender announced a resume.
    pub(super) fn check_resume_announced(&self, h: &Header) -> Result<()> {
        if h.resume.is_some() != self.resume_req {
            return Err(Error::protocol(format!(
                "the stream {} a resumed one, the sender announced {}",
                if h.resume.is_some() { "is" } else { "is not" },
                if self.resume_req {
                    "a resume"
                } else {
                    "a fresh send"
                }
            )));
        }
        Ok(())
    }

    /// Remove the replica (when it exists) and create it again: empty in
    /// `pool` for a full stream, a thin snapshot of the base otherwise
    /// (grown to the stream's size). From here on the replica changes: a
    /// failure puts it back (`release`).
    pub(super) fn recreate_replica(
        &mut self,
        h: &Header,
        pool: &str,
        base_lv: Option<(String, u64)>,
        exists: bool,
    ) -> Result<()> {
        self.touched = true;
        if exists {
            remove_lv(&self.vg, &self.rlv)?;
        }
        match base_lv {
            None => {
                lvm("lvcreate")
                    .args(["-y", "-V"])
                    .arg(format!("{}b", h.size))
                    .arg("-T")
                    .arg(format!("{}/{pool}", self.vg))
                    .args(["-n", &self.rlv, "--addtag", TAG, "--addtag", REPLICA_TAG])
                    .run()?;
            }
            Some((base_lv, base_size)) => {
                lvm("lvcreate")
                    .args(["-y", "-s", "-kn", "-ay", "-prw", "-n", &self.rlv])
                    .args(["--addtag", TAG, "--addtag", REPLICA_TAG])
                    .arg(format!("{}/{base_lv}", self.vg))
                    .run()?;
                if base_size < h.size {
                    lvm("lvextend")
                        .args(["-y", "-L"])
                        .arg(format!("{}b", h.size))
                        .arg(self.replica())
                        .run()?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn open_replica(&mut self, h: &Header) -> Result<()> {
        let p = dev_path(&self.vg, &self.rlv);
        let (dev, n) = open_sized(&p, true)?;
        if n < h.size {
            return Err(Error::storage(format!(
                "{} has {n} bytes, the stream needs {}",
                p.display(),
                h.size
            )));
        }
        self.dev = Some(dev);
        self.header = Some(h.clone());
        Ok(())
    }

    /// Continue a cut receive: the replica must carry the resume tag this
    /// stream continues (same header, same segments, same chain); a full
    /// stream's range a cut record may have touched is zeroed first.
    pub(super) fn prepare_resumed(
        &mut self,
        h: &Header,
        from: &format::ResumeFrom,
        existing: Option<&LvInfo>,
        watch: PoolWatch,
    ) -> Result<()> {
        let (tag, tok) = existing.and_then(resume_tag).ok_or_else(|| {
            Error::protocol(format!("{} holds no cut receive to resume", self.replica()))
        })?;
        if tok.snapshot != h.snapshot
            || tok.base != h.base
            || tok.header != self.progress.header
            || tok.bounds != from.bounds
            || resume::hex(&tok.chain) != from.chain
        {
            return Err(Error::protocol(format!(
                "the resumed stream does not continue the cut receive on {} ({})",
                self.replica(),
                tok.snapshot
            )));
        }
        let start = tok.offset();
        if tok.high > h.size {
            return Err(Error::protocol(format!(
                "the cut receive on {} reaches beyond the device",
                self.replica()
            )));
        }
        self.touched = true;
        self.watch = Some(watch);
        self.open_replica(h)?;
        if h.kind == StreamKind::Full && tok.high > start {
            let dev = self.dev.as_ref().expect("opened");
            let watch = self.watch.as_mut().expect("opened");
            zero_range(dev, start, tok.high - start, &mut |o, l| {
                watch.charge(Some(dev), o, l)
            })?;
        }
        let pr = &mut self.progress;
        pr.start = start;
        pr.done_upto = start;
        pr.prev_chain = tok.chain;
        pr.prev_bounds = tok.bounds.clone();
        pr.high = tok.high;
        pr.limit = tok.high;
        pr.tag = Some(tag);
        tracing::info!(volume = %self.vol.role, snapshot = %h.snapshot, from = start, "resuming a cut receive");
        Ok(())
    }

    /// Writes up to `end` are about to start: past the tag's promise, take
    /// a checkpoint first (the previous records are complete here).
    pub(super) fn before_write(&mut self, end: u64) -> Result<()> {
        if end > self.progress.limit {
            self.checkpoint(Some(end))?;
        }
        self.progress.high = self.progress.high.max(end);
        Ok(())
    }

    /// Records come in increasing offsets (what makes one offset describe
    /// the verified progress), and a resumed stream's after its start.
    pub(super) fn in_order(&self, offset: u64) -> Result<()> {
        if offset < self.progress.done_upto {
            return Err(Error::protocol(format!(
                "record at {offset} comes after one ending at {}: records must increase",
                self.progress.done_upto
            )));
        }
        Ok(())
    }

    /// A record is complete: the verified prefix may end here.
    pub(super) fn record_done(&mut self, end: u64) {
        self.progress.done_upto = end;
        self.progress.boundary = self.hash.clone();
    }

    /// Read back the complete records not yet checked, into `readback`.
    pub(super) fn read_back(&mut self, complete: usize) -> Result<()> {
        // What the thread behind the stream read back comes first.
        if let Some(b) = self.behind.take() {
            self.progress.readback = b.finish()?;
        }
        let dev = self.dev.as_ref().expect("header seen");
        dev.sync_all().ctx("fsync the replica")?;
        if complete == 0 {
            return Ok(());
        }
        let (first, last) = (self.records[0], self.records[complete - 1]);
        // Read back from the device, not the page cache.
        unsafe {
            nix::libc::posix_fadvise(
                dev.as_raw_fd(),
                first.offset as i64,
                (last.offset + last.len - first.offset) as i64,
                nix::libc::POSIX_FADV_DONTNEED,
            );
        }
        let records = take_records(&mut self.records, complete);
        readback::read_records(
            dev,
            &records,
            &mut self.progress.readback,
            &mut Vec::new(),
            &std::sync::atomic::AtomicBool::new(false),
        )
    }

    /// Make what was received so far verified progress: fsync, read back
    /// the complete records and check them against what arrived, then tag
    /// the replica with the token. `next`: the end of the record about to
    /// be written (a periodic checkpoint); `None`: the stream was cut.
    /// Returns false when there is nothing to keep.
    pub(super) fn checkpoint(&mut self, next: Option<u64>) -> Result<bool> {
        let complete = self.records.len() - usize::from(self.progress.pending > 0);
        self.read_back(complete)?;
        let pr = &mut self.progress;
        if pr.readback.data_bytes != pr.boundary.data_bytes
            || pr.readback.finish() != pr.boundary.finish()
        {
            return Err(Error::integrity(format!(
                "{}/{}: what was written does not read back as what was received",
                self.vg, self.rlv
            )));
        }
        let high = pr.high;
        let (bounds, chain) =
            if pr.done_upto > pr.start && pr.prev_bounds.len() < resume::MAX_SEGMENTS {
                let chain = resume::chain_step(
                    &pr.prev_chain,
                    pr.start,
                    pr.done_upto,
                    pr.boundary.data_bytes,
                    &pr.boundary.finish(),
                );
                let mut b = pr.prev_bounds.clone();
                b.push(pr.done_upto);
                (b, chain)
            } else if !pr.prev_bounds.is_empty() {
                // Nothing new verified (or no room for a segment): the old
                // token, with the new high.
                (pr.prev_bounds.clone(), pr.prev_chain)
            } else {
                // Nothing verified at all: no tag (writes stay untracked: the
                // next receive recreates the replica).
                pr.limit = next.map_or(u64::MAX, |n| n.max(pr.done_upto + checkpoint_every()));
                return Ok(false);
            };
        let h = self.header.as_ref().expect("header seen");
        let limit = match next {
            None => high,
            Some(n) => high
                .max(n)
                .max(pr.done_upto + checkpoint_every())
                .min(h.size),
        };
        let tok = resume::Token {
            header: pr.header,
            chain,
            high: limit,
            bounds,
            base: h.base.clone(),
            snapshot: h.snapshot.clone(),
        };
        let tag = tok.to_tag();
        if pr.tag.as_deref() != Some(tag.as_str()) {
            let mut cmd = lvm("lvchange").arg("--addtag").arg(&tag);
            if let Some(old) = &pr.tag {
                cmd = cmd.arg("--deltag").arg(old);
            }
            cmd.arg(format!("{}/{}", self.vg, self.rlv))
                .run()
                .ctx("record the verified progress")?;
            pr.tag = Some(tag);
        }
        pr.limit = limit;
        tracing::debug!(volume = %self.vol.role, verified = pr.done_upto, high = limit, "checkpoint");
        Ok(true)
    }

    pub(super) fn on_event(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Header(h) => self.prepare(&h)?,
            Event::Write { offset, len } => {
                self.in_order(offset)?;
                self.before_write(offset + len as u64)?;
                self.watch.as_mut().expect("opened on the header").charge(
                    self.dev.as_ref(),
                    offset,
                    len as u64,
                )?;
                self.hash.begin_write(offset, len);
                self.records.push(Written {
                    offset,
                    len: len as u64,
                    data: true,
                });
                self.progress.pending = len as u64;
            }
            Event::Data { offset, data } => {
                self.hash.more(data);
                self.dev
                    .as_ref()
                    .expect("opened on the header")
                    .write_all_at(data, offset)
                    .ctx(format!("write the replica at {offset}"))?;
                self.progress.pending -= data.len() as u64;
                if self.progress.pending == 0 {
                    self.record_done(offset + data.len() as u64);
                }
            }
            Event::Zero { offset, len } => {
                self.in_order(offset)?;
                self.before_write(offset + len)?;
                self.hash.zero(offset, len);
                self.records.push(Written {
                    offset,
                    len,
                    data: false,
                });
                let dev = self.dev.as_ref().expect("opened");
                let watch = self.watch.as_mut().expect("opened");
                zero_range(dev, offset, len, &mut |o, l| watch.charge(Some(dev), o, l))?;
                self.record_done(offset + len);
            }
            Event::End { data_bytes, hash } => self.end = Some((data_bytes, hash)),
        }
        // A batch of complete records: read back behind the stream, on the
        // read-back thread, while the next ones arrive.
        let complete = self.records.len() - usize::from(self.progress.pending > 0);
        let bytes: u64 = self.records[..complete].iter().map(|w| w.len).sum();
        if readback::batch().is_some_and(|b| bytes >= b) {
            if self.behind.is_none() {
                let dev = self.dev.as_ref().expect("opened on the header");
                let dev = dev.try_clone().ctx("open the replica again")?;
                let hash = std::mem::take(&mut self.progress.readback);
                self.behind = Some(readback::ReadBehind::start(dev, hash)?);
            }
            let batch = take_records(&mut self.records, complete);
            self.behind.as_ref().expect("started").push(batch);
        }
        Ok(())
    }

    pub(super) fn finish(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let (data_bytes, hash) = self
            .end
            .ok_or_else(|| Error::protocol("the LVM stream ended before its end record"))?;
        if data_bytes != self.hash.data_bytes || hash != self.hash.finish() {
            return Err(Error::integrity(format!(
                "LVM stream end record does not match its records ({data_bytes} bytes announced, {} received)",
                self.hash.data_bytes
            )));
        }
        self.read_back(self.records.len())?;
        if self.progress.readback.finish() != hash {
            return Err(Error::integrity(format!(
                "{}: what was written does not read back as the stream's data",
                self.replica()
            )));
        }
        self.dev = None;
        // The resume tag goes before the snapshot is taken: a snapshot
        // never carries it.
        if let Some(tag) = self.progress.tag.take() {
            lvm("lvchange")
                .arg("--deltag")
                .arg(&tag)
                .arg(self.replica())
                .run()?;
        }
        let h = self.header.as_ref().expect("header seen");
        let id = h.storage_id.clone();
        record(id.clone())?;
        let mut cmd = lvm("lvcreate")
            .args(["-y", "-s", "-pr", "-n"])
            .arg(snap_lv(&self.rlv, &self.name))
            .args(["--addtag", TAG, "--addtag"])
            .arg(format!("{SET_TAG}{}", self.name));
        if let Some(id) = &id {
            cmd = cmd.arg("--addtag").arg(format!("{FROM_TAG}{id}"));
        }
        cmd.arg(self.replica()).run()?;
        crate::failpoint!("lvm.receive.after_snapshot");
        self.touched = false;
        Ok(id)
    }

    /// Put the replica back as it was before this receive, releasing every
    /// pool block the receive allocated: remove it, then recreate it from
    /// its newest snapshot (a thin snapshot: no data moves), or as the empty
    /// LV it was when it had none.
    pub(super) fn release(&mut self) {
        if !self.touched {
            return;
        }
        self.touched = false;
        self.behind = None;
        self.dev = None;
        let res = (|| -> Result<()> {
            let all = vg_lvs(&self.vg)?.unwrap_or_default();
            if find(&all, &self.rlv).is_some_and(|r| r.has_tag(REPLICA_TAG)) {
                remove_lv(&self.vg, &self.rlv)?;
            }
            let tags = ["--addtag", TAG, "--addtag", REPLICA_TAG];
            match (snapshots_of(&all, &self.rlv).last(), &self.before) {
                (Some(newest), _) => lvm("lvcreate")
                    .args(["-y", "-s", "-kn", "-prw", "-n", &self.rlv])
                    .args(tags)
                    .arg(format!("{}/{}", self.vg, snap_lv(&self.rlv, newest)))
                    .run(),
                (None, Some((size, pool))) => lvm("lvcreate")
                    .args(["-y", "-V"])
                    .arg(format!("{size}b"))
                    .arg("-T")
                    .arg(format!("{}/{pool}", self.vg))
                    .args(["-n", &self.rlv])
                    .args(tags)
                    .run(),
                (None, None) => Ok(()),
            }
        })();
        match res {
            Ok(()) => tracing::info!(volume = %self.vol.role, "rejected receive released"),
            Err(e) => {
                tracing::error!(volume = %self.vol.role, error = %e, "could not release a rejected receive")
            }
        }
    }
}

/// Open a block device; returns it with its size in bytes.
pub(super) fn open_sized(p: &Path, write: bool) -> Result<(File, u64)> {
    use std::io::Seek;
    let mut f = OpenOptions::new()
        .read(true)
        .write(write)
        .open(p)
        .ctx(format!("open {}", p.display()))?;
    let n = f
        .seek(io::SeekFrom::End(0))
        .ctx(format!("size of {}", p.display()))?;
    Ok((f, n))
}

/// Make `len` bytes at `offset` read as zeros: discard (thin unmaps whole
/// blocks), then check, and write zeros where the discard did not take.
pub(super) fn zero_range(
    dev: &File,
    offset: u64,
    len: u64,
    charge: &mut dyn FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let range: [u64; 2] = [offset, len];
    // BLKDISCARD = _IO(0x12, 119); a failure just means "write zeros".
    let _ = unsafe { nix::libc::ioctl(dev.as_raw_fd(), 0x1277 as _, range.as_ptr()) };
    let mut buf = Vec::new();
    let mut at = offset;
    while at < offset + len {
        let n = (offset + len - at).min(format::MAX_WRITE);
        buf.resize(n as usize, 0);
        dev.read_exact_at(&mut buf, at).ctx("read the replica")?;
        if buf.iter().any(|b| *b != 0) {
            charge(at, n)?;
            buf.fill(0);
            dev.write_all_at(&buf, at).ctx("zero the replica")?;
        }
        at += n;
    }
    Ok(())
}

/// The first `complete` written records, taken out to be read back.
fn take_records(records: &mut Vec<Written>, complete: usize) -> Vec<Extent> {
    records
        .drain(..complete)
        .map(|w| Extent {
            offset: w.offset,
            len: w.len,
            data: w.data,
        })
        .collect()
}

impl Write for LvmSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(io_of(e));
        }
        let mut dec = std::mem::take(&mut self.decoder);
        let mut err: Option<Error> = None;
        let r = dec.feed(buf, &mut |ev| {
            self.on_event(ev).map_err(|e| {
                let io = io_of(&e);
                err = Some(e);
                io
            })
        });
        self.decoder = dec;
        match r {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                // `commit` names the volume.
                self.failed =
                    Some(err.unwrap_or_else(|| Error::protocol(format!("bad LVM stream: {e}"))));
                Err(e)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for LvmSink {
    fn base_map(&self) -> Option<Result<crate::backend::ThinMap>> {
        let b = self.base_thin.as_ref()?;
        Some(super::mapped::thin_map(&self.vol.role, &self.vg, b))
    }

    fn commit(
        mut self: Box<Self>,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        let ctx = self.ctx();
        let r = self.finish(record).ctx(ctx);
        if r.is_err() {
            self.release();
        }
        r
    }
    fn abort(mut self: Box<Self>) {
        self.release();
    }
    /// A cut stream: what arrived complete and reads back right stays, as
    /// verified progress the next ship continues from (`resumable`).
    fn cut(mut self: Box<Self>) {
        if self.failed.is_some() || self.header.is_none() || !self.touched || self.dev.is_none() {
            return self.release();
        }
        match self.checkpoint(None) {
            Ok(true) => {
                self.touched = false;
                self.dev = None;
                tracing::info!(
                    volume = %self.vol.role,
                    verified = self.progress.done_upto,
                    "cut receive kept for resuming"
                );
            }
            Ok(false) => self.release(),
            Err(e) => {
                tracing::warn!(volume = %self.vol.role, error = %e, "cut receive not kept");
                self.release()
            }
        }
    }
}

impl Drop for LvmSink {
    fn drop(&mut self) {
        self.release();
    }
}
