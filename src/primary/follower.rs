//! The primary's side: the follower thread of `snapsite run`, its
//! batches, and resuming the spool after a cut or a lost ack.

use crate::wire::redostream::*;

// ---------------------------------------------------------------------------
// The primary's follower.

/// The follower's record on the primary (`state_dir/stream.json`), for
/// `status` and the metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FollowerRecord {
    pub updated_at: Option<Timestamp>,
    /// The primary's clock when it looked at the files for the last
    /// acknowledged batch.
    pub acked_as_of: Option<Timestamp>,
    pub acked_seq: u64,
    /// Bytes in the followed files not yet acknowledged by the standby.
    pub lag_bytes: u64,
    pub batches: u64,
    pub bytes_shipped: u64,
    pub resets: u64,
    /// Sessions that continued the standby's spool where it stood (after a
    /// cut, a lost ack or a restart of `run`).
    #[serde(default)]
    pub resumes: u64,
    /// Times the spool had to start over from the primary's current files
    /// (a base without bytes) although the standby held a spool: continuity
    /// could not be proven, or the standby refused a batch.
    #[serde(default)]
    pub restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub fn follower_record(cfg: &Config) -> Option<FollowerRecord> {
    crate::base::catalog::read_json(&Catalog::new(&cfg.state_dir).root().join("stream.json")).ok()
}

#[derive(Clone)]
pub(crate) struct Tracked {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) size: u64,
    pub(crate) file: Arc<File>,
}

/// What one poll found: events, their data, and the tracking after them.
pub(crate) struct Poll {
    pub(crate) events: Vec<SpoolEvent>,
    pub(crate) data: Vec<u8>,
    pub(crate) next: BTreeMap<String, (u64, u64, u64, Arc<File>)>,
    pub(crate) complete: bool,
}

/// Reads `[from, to)` of a file into the batch (cut at the batch budget).
pub(crate) type ReadRange<'a> =
    dyn Fn(&File, u64, u64, &mut Vec<u8>, &mut bool) -> Result<u64> + 'a;

/// A batch sent and not (yet) acknowledged: the follower's record of what
/// the standby holds if the batch arrived and only the ack was lost.
pub(crate) struct InFlight {
    pub(crate) seq: u64,
    pub(crate) as_of: Option<Timestamp>,
    pub(crate) next: BTreeMap<String, Tracked>,
    pub(crate) bytes: u64,
    pub(crate) reset: bool,
}

/// The follower's state: what the standby has acknowledged.
pub struct Follower {
    pub(crate) root: PathBuf,
    pub(crate) globs: Vec<String>,
    pub(crate) tracked: BTreeMap<String, Tracked>,
    pub(crate) seq: u64,
    pub(crate) need_reset: bool,
    pub(crate) in_flight: Option<InFlight>,
    /// A batch whose lost ack `resume` proved: (seq, bytes, reset), for the
    /// record.
    pub(crate) adopted: Option<(u64, u64, bool)>,
    /// Batches refused in a row (not for a full spool).
    pub(crate) refusals: u32,
    pub acked_as_of: Option<Timestamp>,
    pub max_batch: u64,
}

/// Whether the standby's files (`theirs`, from its welcome) are exactly
/// `ours`: the same names and sizes, and each known tail's hash equal to
/// those bytes of our file (read through the descriptor we kept, so a file
/// renamed since is still the one compared).
pub(crate) fn same_files(ours: &BTreeMap<String, Tracked>, theirs: &[SpoolFileState]) -> bool {
    if ours.len() != theirs.len() {
        return false;
    }
    theirs.iter().all(|f| {
        let Some(t) = ours.get(&f.file) else {
            return false;
        };
        if t.size != f.size || f.tail_len > f.size || f.tail_len > TAIL as u64 {
            return false;
        }
        if f.tail_len == 0 {
            return true;
        }
        let mut buf = vec![0u8; f.tail_len as usize];
        t.file.read_exact_at(&mut buf, f.size - f.tail_len).is_ok()
            && blake3::hash(&buf).to_hex().as_str() == f.tail_blake3
    })
}

impl Follower {
    pub fn new(root: PathBuf, globs: Vec<String>) -> Follower {
        Follower {
            root,
            globs,
            tracked: BTreeMap::new(),
            seq: 0,
            need_reset: true,
            in_flight: None,
            adopted: None,
            refusals: 0,
            acked_as_of: None,
            max_batch: MAX_BATCH_BYTES,
        }
    }

    /// After a (re)connect: continue where the standby's spool stands when
    /// continuity is proven, else start over (a reset batch). Proof, in
    /// order: the standby is at our last acknowledged batch with exactly the
    /// files we tracked; or at the batch we sent last (its ack was lost) with
    /// exactly the files that batch left; or (a new follower, nothing
    /// recorded) our files still hold what it has (every tail compared).
    /// Never after three refusals in a row: then the spool starts over.
    /// Returns whether the spool is continued.
    pub fn resume(&mut self, last_seq: u64, files: &[SpoolFileState]) -> Result<bool> {
        let in_flight = self.in_flight.take();
        if self.refusals >= 3 {
            // Refused three times in a row (each refusal ends the session):
            // start over from a base, whatever the standby's files prove —
            // resuming would only send the refused changes again.
            self.seq = last_seq;
            self.tracked.clear();
            self.need_reset = true;
            return Ok(false);
        }
        if !self.need_reset
            && last_seq == self.seq
            && !self.tracked.is_empty()
            && same_files(&self.tracked, files)
        {
            return Ok(true); // the batch in flight never arrived
        }
        if let Some(b) = in_flight.filter(|b| {
            b.seq == last_seq && b.seq > 0 && !b.next.is_empty() && same_files(&b.next, files)
        }) {
            // It arrived; only the ack was lost.
            self.adopted = Some((b.seq, b.bytes, b.reset));
            self.seq = b.seq;
            self.tracked = b.next;
            self.need_reset = false;
            if b.as_of.is_some() {
                self.acked_as_of = b.as_of;
            }
            return Ok(true);
        }
        self.seq = last_seq;
        self.tracked.clear();
        self.need_reset = true;
        if files.is_empty() {
            return Ok(false);
        }
        let theirs: BTreeMap<&str, &SpoolFileState> =
            files.iter().map(|f| (f.file.as_str(), f)).collect();
        let now = scan(&self.root, &self.globs)?;
        let names_equal =
            now.len() == theirs.len() && now.keys().all(|k| theirs.contains_key(k.as_str()));
        if !names_equal {
            return Ok(false);
        }
        let mut tracked = BTreeMap::new();
        for (name, (dev, ino, size)) in &now {
            let f = theirs[name.as_str()];
            if *size < f.size || f.tail_len == 0 || f.tail_len > f.size {
                return Ok(false);
            }
            let p = self.root.join(name);
            let Ok(file) = open_nofollow(&p, false) else {
                return Ok(false);
            };
            let mut buf = vec![0u8; f.tail_len as usize];
            if file.read_exact_at(&mut buf, f.size - f.tail_len).is_err()
                || blake3::hash(&buf).to_hex().as_str() != f.tail_blake3
            {
                return Ok(false);
            }
            tracked.insert(
                name.clone(),
                Tracked {
                    dev: *dev,
                    ino: *ino,
                    size: f.size,
                    file: Arc::new(file),
                },
            );
        }
        self.tracked = tracked;
        self.need_reset = false;
        Ok(true)
    }

    /// [`Follower::resume`], counted in `rec` (a resume; a restart is
    /// counted when its reset batch is acknowledged).
    pub fn resume_recorded(
        &mut self,
        last_seq: u64,
        files: &[SpoolFileState],
        rec: &mut FollowerRecord,
    ) -> Result<bool> {
        let resumed = self.resume(last_seq, files)?;
        if resumed {
            rec.resumes += 1;
        }
        if let Some((seq, bytes, reset)) = self.adopted.take() {
            rec.acked_seq = seq;
            rec.acked_as_of = self.acked_as_of;
            Self::count_batch(rec, seq, bytes, reset);
        }
        Ok(resumed)
    }

    pub(crate) fn count_batch(rec: &mut FollowerRecord, seq: u64, bytes: u64, reset: bool) {
        rec.batches += 1;
        rec.bytes_shipped += bytes;
        if reset {
            rec.resets += 1;
            // Not the spool's first start: its streamed continuity was lost.
            if seq > 1 {
                rec.restarts += 1;
            }
        }
    }

    pub(crate) fn poll(&self) -> Result<Poll> {
        let now = scan(&self.root, &self.globs)?;
        let mut events = Vec::new();
        let mut data = Vec::new();
        let mut complete = true;
        let mut next: BTreeMap<String, (u64, u64, u64, Arc<File>)> = BTreeMap::new();
        let budget = self.max_batch;
        let read_range = |f: &File,
                          from: u64,
                          to: u64,
                          data: &mut Vec<u8>,
                          complete: &mut bool|
         -> Result<u64> {
            let room = budget.saturating_sub(data.len() as u64);
            let to = if to - from > room {
                *complete = false;
                from + room
            } else {
                to
            };
            let mut buf = vec![0u8; (to - from) as usize];
            let n = fill_at(f, &mut buf, from)
                .map_err(|e| Error::io("read a followed redolog file", e))?;
            buf.truncate(n);
            data.extend_from_slice(&buf);
            Ok(n as u64)
        };
        if self.need_reset {
            for (name, (dev, ino, size)) in &now {
                let Ok(f) = open_nofollow(&self.root.join(name), false) else {
                    continue;
                };
                events.push(SpoolEvent::Base {
                    file: name.clone(),
                    size: *size,
                });
                next.insert(name.clone(), (*dev, *ino, *size, Arc::new(f)));
            }
            return Ok(Poll {
                events,
                data,
                next,
                complete,
            });
        }
        let by_ino: HashMap<(u64, u64), &String> =
            now.iter().map(|(n, (d, i, _))| ((*d, *i), n)).collect();
        // 1. Tracked files that left their name: read their rest (through the
        // kept descriptor), then rename or remove.
        let mut moves: Vec<(String, Option<String>)> = Vec::new();
        let mut state: BTreeMap<String, (u64, u64, u64, Arc<File>)> = self
            .tracked
            .iter()
            .map(|(n, t)| (n.clone(), (t.dev, t.ino, t.size, t.file.clone())))
            .collect();
        for (name, t) in &self.tracked {
            let same = now
                .get(name)
                .is_some_and(|(d, i, _)| *d == t.dev && *i == t.ino);
            if same {
                continue;
            }
            let cur = t.file.metadata().map(|m| m.len()).unwrap_or(t.size);
            if cur > t.size {
                let n = read_range(&t.file, t.size, cur, &mut data, &mut complete)?;
                if n > 0 {
                    events.push(SpoolEvent::Append {
                        file: name.clone(),
                        offset: t.size,
                        len: n,
                    });
                    state.get_mut(name).expect("tracked").2 += n;
                }
                if !complete {
                    return Ok(Poll {
                        events,
                        data,
                        next: state,
                        complete,
                    });
                }
            }
            let to = by_ino.get(&(t.dev, t.ino)).map(|s| (*s).clone());
            moves.push((name.clone(), to));
        }
        // Order renames so that none overwrites a name still to be moved.
        let mut pending = moves;
        while !pending.is_empty() {
            let froms: BTreeSet<String> = pending.iter().map(|(f, _)| f.clone()).collect();
            let (ready, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(from, to)| {
                to.as_ref()
                    .is_none_or(|to| to == from || !froms.contains(to))
            });
            if ready.is_empty() {
                // A cycle of renames: the next flush starts over from a base.
                return Err(Error::storage("followed files were renamed in a cycle"));
            }
            for (from, to) in ready {
                let entry = state.remove(&from).expect("tracked");
                match to {
                    Some(to) => {
                        events.push(SpoolEvent::Rename {
                            from: from.clone(),
                            to: to.clone(),
                        });
                        state.insert(to, entry);
                    }
                    None => events.push(SpoolEvent::Remove { file: from }),
                }
            }
            pending = rest;
        }
        // 2. Every current file: appended, cut, or new.
        for (name, (dev, ino, size)) in &now {
            match state.get_mut(name) {
                Some(e) if e.0 == *dev && e.1 == *ino => {
                    if *size > e.2 {
                        let n = read_range(&e.3, e.2, *size, &mut data, &mut complete)?;
                        if n > 0 {
                            events.push(SpoolEvent::Append {
                                file: name.clone(),
                                offset: e.2,
                                len: n,
                            });
                            e.2 += n;
                        }
                    } else if *size < e.2 {
                        events.push(SpoolEvent::Truncate {
                            file: name.clone(),
                            size: *size,
                        });
                        e.2 = *size;
                    }
                }
                other => {
                    if other.is_some() {
                        // Replaced behind a rename we could not see: remove, then new.
                        events.push(SpoolEvent::Remove { file: name.clone() });
                        state.remove(name);
                    }
                    self.new_file(
                        name,
                        *dev,
                        *ino,
                        *size,
                        &mut state,
                        &mut events,
                        &mut data,
                        &mut complete,
                        &read_range,
                    )?;
                }
            }
            if !complete {
                break;
            }
        }
        next.extend(state);
        Ok(Poll {
            events,
            data,
            next,
            complete,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new_file(
        &self,
        name: &str,
        dev: u64,
        ino: u64,
        size: u64,
        state: &mut BTreeMap<String, (u64, u64, u64, Arc<File>)>,
        events: &mut Vec<SpoolEvent>,
        data: &mut Vec<u8>,
        complete: &mut bool,
        read_range: &ReadRange,
    ) -> Result<()> {
        let Ok(f) = open_nofollow(&self.root.join(name), false) else {
            return Ok(());
        };
        let n = read_range(&f, 0, size, data, complete)?;
        events.push(SpoolEvent::Append {
            file: name.to_string(),
            offset: 0,
            len: n,
        });
        state.insert(name.to_string(), (dev, ino, n, Arc::new(f)));
        Ok(())
    }

    /// Bytes in the followed files beyond what was acknowledged.
    pub fn lag_bytes(&self) -> u64 {
        let Ok(now) = scan(&self.root, &self.globs) else {
            return 0;
        };
        let mut lag = 0;
        for (name, (dev, ino, size)) in &now {
            match self.tracked.get(name) {
                Some(t) if t.dev == *dev && t.ino == *ino => lag += size.saturating_sub(t.size),
                _ => lag += size,
            }
        }
        lag
    }

    /// One flush over `conn`: send what changed, wait for the ack. Returns
    /// whether everything that was there was sent (else call again soon).
    pub fn flush<R: Read, W: Write>(
        &mut self,
        r: &mut Reader<R>,
        w: &mut Writer<W>,
        rec: &mut FollowerRecord,
    ) -> Result<bool> {
        let as_of = Timestamp::now();
        let poll = self.poll()?;
        let reset = self.need_reset;
        // A cut batch claims nothing new about time.
        let claimed = if poll.complete {
            as_of
        } else {
            self.acked_as_of
                .unwrap_or(as_of - jiff::SignedDuration::from_hours(24 * 365))
        };
        let seq = self.seq + 1;
        w.msg(&Msg::SpoolBatch {
            seq,
            as_of: claimed,
            reset,
            events: poll.events.clone(),
            bytes: poll.data.len() as u64,
            blake3: blake3::hash(&poll.data).to_hex().to_string(),
        })?;
        // From here the standby may hold the batch whatever becomes of the
        // ack: remember what it then holds (see `resume`).
        let next: BTreeMap<String, Tracked> = poll
            .next
            .into_iter()
            .map(|(n, (dev, ino, size, file))| {
                (
                    n,
                    Tracked {
                        dev,
                        ino,
                        size,
                        file,
                    },
                )
            })
            .collect();
        self.in_flight = Some(InFlight {
            seq,
            as_of: poll.complete.then_some(as_of),
            next: next.clone(),
            bytes: poll.data.len() as u64,
            reset,
        });
        for c in poll.data.chunks(crate::wire::stream::MAX_DATA_FRAME) {
            w.data(c)?;
        }
        w.flush()?;
        let answer = r.msg()?;
        self.in_flight = None;
        match answer {
            Msg::SpoolAck { seq: s } if s == seq => {
                self.seq = seq;
                self.need_reset = false;
                self.tracked = next;
                if poll.complete {
                    self.acked_as_of = Some(as_of);
                }
                self.refusals = 0;
                rec.acked_seq = seq;
                rec.acked_as_of = self.acked_as_of;
                Self::count_batch(rec, seq, poll.data.len() as u64, reset);
                rec.last_error = None;
                Ok(poll.complete)
            }
            Msg::SpoolRefused { error, full, .. } => {
                // A full spool: the same changes again later (after a
                // checkpoint made room). Anything else: the spool is as
                // before the batch, so the first time the changes are sent
                // again (a batch damaged on the way fails its checksum);
                // refused three times in a row, start over from a base.
                if !full {
                    self.refusals += 1;
                    if self.refusals >= 3 {
                        self.need_reset = true;
                        self.tracked.clear();
                    }
                }
                Err(Error::refused(format!(
                    "the standby refused spool batch {seq}: {}",
                    wire_text(&error)
                )))
            }
            other => Err(Error::protocol(format!(
                "expected a spool ack, got {other:?}"
            ))),
        }
    }
}

/// Open a spool session on a connection's reader/writer (after the magic).
pub fn spool_handshake<R: Read, W: Write>(
    cfg: &Config,
    r: &mut Reader<R>,
    w: &mut Writer<W>,
) -> Result<(u64, Vec<SpoolFileState>)> {
    w.magic()?;
    w.msg(&Msg::SpoolHello {
        protocol: PROTOCOL_VERSION,
        site: cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })?;
    r.magic()?;
    match r.msg()? {
        Msg::SpoolWelcome {
            last_seq, files, ..
        } => Ok((last_seq, files)),
        other => Err(Error::protocol(format!(
            "expected a spool welcome, got {other:?}"
        ))),
    }
}

/// The follower thread of `snapsite run`; dropping it stops the thread.
pub struct FollowerHandle {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) done: std::sync::mpsc::Receiver<()>,
}

impl Drop for FollowerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Bounded: a transfer blocked on a silent standby is not waited for.
        let _ = self.done.recv_timeout(Duration::from_secs(3));
    }
}

/// Start following (if `[stream]` is enabled and there is a standby).
/// Errors are logged and retried with backoff; `run` is never stopped by it.
pub fn start_follower(cfg: &Config) -> Option<FollowerHandle> {
    let s = settings(cfg)?.clone();
    // `stream.to` names the standby (validated); else the only one.
    let standby = match &s.to {
        Some(n) => cfg.standby_named(n).cloned()?,
        None => cfg.standby.clone()?,
    };
    let root = match live_root(cfg) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "redolog streaming not started");
            return None;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, done) = std::sync::mpsc::channel();
    tracing::info!(root = %root.display(), "redolog streaming started");
    let cfg = cfg.clone();
    let stop2 = stop.clone();
    std::thread::Builder::new()
        .name("redostream".into())
        .spawn(move || {
            follow(&cfg, &standby, &root, &s, &stop2);
            let _ = tx.send(());
        })
        .ok()?;
    Some(FollowerHandle { stop, done })
}

pub(crate) fn write_record(catalog: &Catalog, rec: &FollowerRecord) {
    let _ = crate::base::catalog::write_json(&catalog.root().join("stream.json"), rec);
}

/// The follower loop: connect, resume, flush every interval; on any error
/// close the connection and reconnect after a backoff (1 s doubling to 30 s).
pub(crate) fn follow(
    cfg: &Config,
    standby: &crate::base::config::Standby,
    root: &Path,
    s: &StreamSettings,
    stop: &AtomicBool,
) {
    let catalog = Catalog::new(&cfg.state_dir);
    let mut f = Follower::new(root.to_path_buf(), s.files.clone());
    let mut rec = follower_record(cfg).unwrap_or_default();
    let mut backoff = Duration::from_secs(1);
    let sleep = |d: Duration| {
        let end = Instant::now() + d;
        while Instant::now() < end && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50).min(d));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let mut conn = match crate::wire::transport::connect(standby) {
            Ok(c) => c,
            Err(e) => {
                rec.last_error = Some(e.to_string());
                write_record(&catalog, &rec);
                sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let res = (|| -> Result<()> {
            let (last_seq, files) = spool_handshake(cfg, &mut conn.reader, &mut conn.writer)?;
            f.resume_recorded(last_seq, &files, &mut rec)?;
            write_record(&catalog, &rec);
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                let complete = f.flush(&mut conn.reader, &mut conn.writer, &mut rec)?;
                rec.lag_bytes = f.lag_bytes();
                rec.updated_at = Some(Timestamp::now());
                write_record(&catalog, &rec);
                backoff = Duration::from_secs(1);
                if complete {
                    sleep(s.flush_interval.saturating_sub(t.elapsed()));
                }
            }
            let _ = conn.writer.msg(&Msg::Bye);
            Ok(())
        })();
        match res {
            Ok(()) => {
                let _ = conn.close();
            }
            Err(e) => {
                tracing::warn!(error = %e, "redolog streaming: session failed; reconnecting");
                rec.last_error = Some(e.to_string());
                rec.lag_bytes = f.lag_bytes();
                rec.updated_at = Some(Timestamp::now());
                write_record(&catalog, &rec);
                conn.abort();
                sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
