//! Failover's side: the spool applied to the redolog copy, all or
//! nothing; the dry run's preview; the spool cleared after failover.

use crate::standby::spool::matching::*;
use crate::standby::spool::*;
use crate::wire::redostream::*;

// ---------------------------------------------------------------------------
// Failover: apply the spool to the redolog copy.

/// What the spool added at failover.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StreamRecovery {
    /// The primary's clock when it looked at the files for the last batch
    /// applied (never earlier than the snapshot's time): data acknowledged
    /// on the primary before it is in the copy. Primary's clock, as sent.
    pub recovery_point: Option<Timestamp>,
    pub events_applied: usize,
    pub bytes_applied: u64,
    /// Why the spool was not used, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_used: Option<String>,
}

/// Where failover builds the streamed files, inside the redolog copy (the
/// same filesystem: placing them is a rename). Removed when done.
pub const SCRATCH: &str = ".snapsite-spool-apply";
pub(crate) const PLAN: &str = "plan.json";
pub(crate) const DONE: &str = "done.json";

/// What the commit of an apply changes in the copy, written before the
/// first change so that an interrupted failover can undo it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ApplyPlan {
    /// Files of the copy moved aside: (name, scratch file).
    pub(crate) backups: Vec<(String, String)>,
    /// Staged files put in place: (scratch file, name).
    pub(crate) placements: Vec<(String, String)>,
    /// Directories created for placements (outermost first).
    #[serde(default)]
    pub(crate) dirs: Vec<String>,
}

pub(crate) fn scratch(name: &str) -> String {
    format!("{SCRATCH}/{name}")
}

/// Remove the scratch directory and everything in it (its own files only:
/// nothing in it is followed).
pub(crate) fn clear_scratch(root: &Root) {
    for n in root.list(SCRATCH).unwrap_or_default() {
        let _ = root.remove(&scratch(&n), false);
    }
    let _ = root.remove(SCRATCH, true);
}

pub(crate) fn plan_valid(p: &ApplyPlan) -> bool {
    let ours = |s: &str, pre: &str| {
        s.strip_prefix(pre)
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    };
    p.backups
        .iter()
        .all(|(n, b)| check_name(n).is_ok() && ours(b, "orig-"))
        && p.placements
            .iter()
            .all(|(st, n)| check_name(n).is_ok() && ours(st, "inst-"))
        && p.dirs.iter().all(|d| check_name(d).is_ok())
}

/// Undo a commit (all of it or the steps done): placed files back to the
/// scratch directory, backups back to their names, created directories
/// removed. `Err` lists what could not be undone.
pub(crate) fn roll_back(root: &Root, plan: &ApplyPlan) -> std::result::Result<(), String> {
    let mut failed = Vec::new();
    let backed: BTreeSet<&str> = plan.backups.iter().map(|(n, _)| n.as_str()).collect();
    for (st, name) in plan.placements.iter().rev() {
        // Placed if the staged file left the scratch directory.
        if root.regular_size(&scratch(st)).ok().flatten().is_some() {
            continue;
        }
        if root.regular_size(name).ok().flatten().is_some() {
            if let Err(e) = root.rename(name, &scratch(st)) {
                failed.push(e);
            }
        }
    }
    for (name, b) in plan.backups.iter().rev() {
        if root.regular_size(&scratch(b)).ok().flatten().is_some() {
            if let Err(e) = root.rename(&scratch(b), name) {
                failed.push(e);
            }
        }
    }
    for d in plan.dirs.iter().rev() {
        if !backed.contains(d.as_str()) {
            let _ = root.remove(d, true);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// A scratch directory left by an interrupted failover: undo its commit
/// unless it had completed, then remove it.
pub(crate) fn recover_scratch(root: &Root) -> std::result::Result<(), String> {
    if root.stat(SCRATCH)?.is_none() {
        return Ok(());
    }
    let read = |f: &str| -> Option<ApplyPlan> {
        let b = root.read_bounded(&scratch(f), 64 << 20).ok()?;
        serde_json::from_slice(&b).ok()
    };
    let (plan, done) = match (read(DONE), read(PLAN)) {
        (Some(p), _) => (p, true),
        (None, Some(p)) => (p, false),
        (None, None) => (ApplyPlan::default(), false),
    };
    if !plan_valid(&plan) {
        return Err(format!(
            "{} holds a plan naming files that are not snapsite's; remove it by hand after checking the copy",
            root.display(SCRATCH).display()
        ));
    }
    if !done {
        roll_back(root, &plan).map_err(|e| {
            format!(
                "undoing an interrupted apply of the spool in {}: {e}",
                root.path().display()
            )
        })?;
    }
    clear_scratch(root);
    Ok(())
}

/// The bytes of the file `name` against an instance's ranges: size at
/// least the instance's, every spooled byte equal.
pub(crate) fn verify_staged(
    sp: &Spool,
    f: &File,
    what: &str,
    inst: &Inst,
) -> std::result::Result<(), String> {
    let size = f.metadata().map_err(|e| format!("{what}: {e}"))?.len();
    if size < inst.size {
        return Err(format!("{what}: {size} bytes, the spool has {}", inst.size));
    }
    // Ranges are sorted by offset: read through a window of 1 MiB.
    let mut win: (u64, Vec<u8>) = (0, Vec::new());
    for r in &inst.ranges {
        let want = &sp.read(r.src, 0, r.len)?;
        let end = r.offset + r.len;
        let inside = r.offset >= win.0 && end <= win.0 + win.1.len() as u64;
        if !inside {
            let n = (size - r.offset).min(WINDOW as u64).max(r.len) as usize;
            let mut buf = vec![0u8; n];
            f.read_exact_at(&mut buf, r.offset)
                .map_err(|e| format!("{what}: {e}"))?;
            win = (r.offset, buf);
        }
        let s = (r.offset - win.0) as usize;
        if win.1[s..s + want.len()] != *want {
            return Err(format!(
                "{what}: bytes {}..{} differ from the spooled ones",
                r.offset,
                r.offset + r.len
            ));
        }
    }
    Ok(())
}

/// A file being built in the scratch directory: its size as written, and
/// appended bytes gathered into one write per run of appends.
pub(crate) struct StagedFile {
    pub(crate) f: File,
    pub(crate) size: u64,
    pub(crate) pending_at: u64,
    pub(crate) pending: Vec<u8>,
}

impl StagedFile {
    pub(crate) fn new(f: File) -> std::io::Result<StagedFile> {
        let size = f.metadata()?.len();
        Ok(StagedFile {
            f,
            size,
            pending_at: 0,
            pending: Vec::new(),
        })
    }

    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.f.write_all_at(&self.pending, self.pending_at)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// One spooled event.
    pub(crate) fn event(
        &mut self,
        what: &str,
        ev: &SpoolEvent,
        data: &[u8],
    ) -> std::result::Result<(), String> {
        let io = |e: std::io::Error| format!("{what}: {e}");
        match ev {
            SpoolEvent::Append { offset, len, .. } => {
                if self.size < *offset {
                    return Err(format!(
                        "{what}: {} bytes, the spool continues it at {offset}",
                        self.size
                    ));
                }
                // Bytes already there (the copy was ahead) must be the same.
                let have = (self.size - offset).min(*len) as usize;
                if have > 0 {
                    self.flush().map_err(io)?;
                    let mut buf = vec![0u8; have];
                    self.f.read_exact_at(&mut buf, *offset).map_err(io)?;
                    if buf != data[..have] {
                        return Err(format!("{what}: bytes at {offset} differ from the spool"));
                    }
                }
                let at = offset + have as u64;
                if self.pending_at + self.pending.len() as u64 != at || self.pending.len() >= WINDOW
                {
                    self.flush().map_err(io)?;
                    self.pending_at = at;
                }
                self.pending.extend_from_slice(&data[have..]);
                self.size = self.size.max(offset + len);
            }
            SpoolEvent::Truncate { size, .. } => {
                self.flush().map_err(io)?;
                self.f.set_len(*size).map_err(io)?;
                self.size = *size;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The applied spool, staged: files built in the scratch directory and
/// the plan that puts them in place.
pub(crate) struct Staged {
    pub(crate) plan: ApplyPlan,
    pub(crate) bytes: u64,
}

/// Build every file the spool changes after cut `j` in the scratch
/// directory (a copy of the copy's file, or new), apply the events to them,
/// and verify them against every spooled byte. Changes nothing outside the
/// scratch directory.
pub(crate) fn stage(
    sp: &Spool,
    root: &Root,
    j: usize,
    at_j: &Sim,
) -> std::result::Result<Staged, String> {
    root.create_dirs(SCRATCH)?;
    let mut sim = at_j.clone();
    // Instance -> its staged file, opened.
    let mut files: BTreeMap<usize, StagedFile> = BTreeMap::new();
    let mut bytes = 0u64;
    // The copy's file of each instance at the cut.
    let copy_name: HashMap<usize, String> =
        at_j.names.iter().map(|(n, &i)| (i, n.clone())).collect();
    for (k, it) in sp.items.iter().enumerate().skip(j) {
        let ev = sp.ev(k);
        let target = match &ev {
            SpoolEvent::Append { file, .. } | SpoolEvent::Truncate { file, .. } => {
                Some(file.clone())
            }
            SpoolEvent::Base { file, .. } => {
                return Err(format!(
                    "event {k} restarts the spool at `{}` after the copy's cut",
                    wire_str(file)
                ));
            }
            _ => None,
        };
        sim.apply(&ev, Src::Item(k))?;
        let Some(file) = target else { continue };
        let i = sim.names[&file];
        if let std::collections::btree_map::Entry::Vacant(slot) = files.entry(i) {
            let name = format!("inst-{i}");
            let f = root.create_new(&scratch(&name))?;
            if let Some(orig) = copy_name.get(&i) {
                // Everything the copy's file holds (a reflink where the
                // filesystem can), bounded by its size as opened.
                let src = root.open_existing(orig, Access::Read)?;
                let len = src
                    .metadata()
                    .map_err(|e| format!("{}: {e}", root.display(orig).display()))?
                    .len();
                let mut out = &f;
                let n = std::io::copy(&mut (&src).take(len), &mut out)
                    .map_err(|e| format!("copying {}: {e}", root.display(orig).display()))?;
                if n != len {
                    return Err(format!(
                        "{} changed while copied ({n} of {len} bytes)",
                        root.display(orig).display()
                    ));
                }
            }
            let sf = StagedFile::new(f)
                .map_err(|e| format!("{}: {e}", root.display(&scratch(&name)).display()))?;
            slot.insert(sf);
        }
        let what = root.display(&file).display().to_string();
        let data = sp.read(Src::Item(k), 0, it.data.len())?;
        files
            .get_mut(&i)
            .expect("staged above")
            .event(&what, &ev, &data)?;
        bytes += it.data.len();
    }
    for (i, sf) in files.iter_mut() {
        sf.flush().map_err(|e| {
            format!(
                "{}: {e}",
                root.display(&scratch(&format!("inst-{i}"))).display()
            )
        })?;
    }
    // Verify every staged file that ends under a name, and place it there;
    // back up what the copy has under the names that change.
    let mut plan = ApplyPlan::default();
    let mut placed_names = BTreeSet::new();
    for (n, &i) in &sim.names {
        let unchanged = at_j.names.get(n) == Some(&i) && !files.contains_key(&i);
        if unchanged {
            continue;
        }
        let Some(f) = files.get(&i).map(|sf| &sf.f) else {
            // Renamed but not written to: its file is the copy's, moved.
            let orig = copy_name
                .get(&i)
                .ok_or_else(|| format!("`{}` has no file to come from", wire_str(n)))?;
            let name = format!("inst-{i}");
            root.link(orig, &scratch(&name))?;
            let nf = root.open_existing(&scratch(&name), Access::Read)?;
            verify_staged(
                sp,
                &nf,
                &root.display(n).display().to_string(),
                &sim.insts[i],
            )?;
            plan.placements.push((name, n.clone()));
            placed_names.insert(n.clone());
            continue;
        };
        verify_staged(sp, f, &root.display(n).display().to_string(), &sim.insts[i])?;
        f.sync_all()
            .map_err(|e| format!("{}: {e}", root.display(n).display()))?;
        plan.placements.push((format!("inst-{i}"), n.clone()));
        placed_names.insert(n.clone());
    }
    // Names the copy holds that are replaced or go away (any name the
    // spool knows: a file the copy has that the spool removes is removed).
    let mut k = 0;
    for n in &sim.known {
        let stays = sim.names.contains_key(n) && !placed_names.contains(n);
        if !stays && root.regular_size(n)?.is_some() {
            plan.backups.push((n.clone(), format!("orig-{k}")));
            k += 1;
        }
    }
    Ok(Staged { plan, bytes })
}

/// Put the staged files in place (backups first, then placements), all or
/// nothing: any failure undoes the steps done.
pub(crate) fn commit_staged(root: &Root, plan: &mut ApplyPlan) -> std::result::Result<(), String> {
    // The plan, durable before the first change.
    let write_plan = |plan: &ApplyPlan| -> std::result::Result<(), String> {
        let _ = root.remove(&scratch(PLAN), false);
        let f = root.create_new(&scratch(PLAN))?;
        let mut w = &f;
        w.write_all(&serde_json::to_vec(plan).expect("serializes"))
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("{}: {e}", root.display(&scratch(PLAN)).display()))?;
        root.sync_dirs([SCRATCH, &scratch(PLAN)]);
        Ok(())
    };
    // Directories the placements need: recorded in the plan, then made.
    let mut need = Vec::new();
    for (_, n) in &plan.placements {
        if let Some((d, _)) = n.rsplit_once('/') {
            let mut so_far = String::new();
            for c in d.split('/') {
                if !so_far.is_empty() {
                    so_far.push('/');
                }
                so_far.push_str(c);
                if root.stat(&so_far)?.is_none() && !plan.dirs.contains(&so_far) {
                    plan.dirs.push(so_far.clone());
                }
            }
            need.push(d.to_string());
        }
    }
    write_plan(plan)?;
    crate::failpoint!("spool_apply.after_plan");
    for d in need {
        if let Err(e) = root.create_dirs(&d) {
            let _ = roll_back(root, plan);
            return Err(format!("{e} (undone)"));
        }
    }
    let res = (|| -> std::result::Result<(), String> {
        for (n, b) in &plan.backups {
            root.rename(n, &scratch(b))?;
        }
        crate::failpoint!("spool_apply.after_backups");
        for (st, n) in &plan.placements {
            root.rename(&scratch(st), n)?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        return Err(match roll_back(root, plan) {
            Ok(()) => format!("{e} (undone)"),
            Err(u) => format!("{e}; UNDOING FAILED: {u}"),
        });
    }
    Ok(())
}

/// Apply the spool in `spool_dir` to the files at `root` (the redolog copy,
/// which holds snapshot `snapshot_time`'s content, or the spool applied
/// already by an interrupted failover: the match finds where it stands).
/// All or nothing: the files the spool changes are built and verified
/// against every spooled byte in a scratch directory inside the copy, then
/// renamed into place (an interrupted apply is undone at the next one). On
/// any error the copy holds exactly what it held before.
pub fn apply_dir(spool: &Path, root: &Path, snapshot_time: Timestamp) -> Result<StreamRecovery> {
    let sp = Spool::load(spool, false)?;
    let root = &Root::open(root)?;
    recover_scratch(root).map_err(Error::storage)?;
    if sp.base.is_empty() && sp.items.is_empty() {
        return Ok(StreamRecovery {
            not_used: Some("the spool is empty".into()),
            ..Default::default()
        });
    }
    let bound = Bound {
        deadline: Some(Instant::now() + APPLY_MATCH_TIME),
    };
    let cuts = find_cuts(&sp, root, bound, APPLY_TRIES).map_err(|reason| {
        Error::integrity(format!(
            "the spool does not continue the redolog copy: {reason}; the copy holds the snapshot alone, unchanged"
        ))
    })?;
    // The largest cut first; if the copy's bytes contradict the events
    // after it (staging finds them), the next one.
    let mut tried = Vec::new();
    let mut found = None;
    for j in cuts {
        match stage(&sp, root, j, &sim_at(&sp, j)) {
            Ok(st) => {
                found = Some((j, st));
                break;
            }
            Err(e) => {
                // Only the scratch directory was written to.
                let _ = recover_scratch(root);
                tried.push(e);
            }
        }
    }
    let Some((j, mut st)) = found else {
        return Err(Error::storage(format!(
            "applying the spool: {}; nothing was changed: the copy holds the snapshot alone",
            tried.join("; then: ")
        )));
    };
    if let Err(e) = commit_staged(root, &mut st.plan) {
        let undone = !e.contains("UNDOING FAILED");
        if undone {
            clear_scratch(root);
        }
        return Err(Error::storage(if undone {
            format!(
                "applying the spool: {e}; nothing was changed: the copy holds the snapshot alone"
            )
        } else {
            format!(
                "applying the spool: {e}; the copy is partly changed: {} keeps what is needed to undo it",
                root.display(SCRATCH).display()
            )
        }));
    }
    let fin = sp.sim();
    // The result, read back through the names the replay will use; undone
    // (backups still there) if it does not hold every spooled byte.
    if let Err(e) = View::new(root).at(&sp, &fin, true, None) {
        let undo = roll_back(root, &st.plan);
        if undo.is_ok() {
            clear_scratch(root);
        }
        return Err(Error::integrity(match undo {
            Ok(()) => format!(
                "the copy after applying the spool: {e}; undone: the copy holds the snapshot alone"
            ),
            Err(u) => format!("the copy after applying the spool: {e}; UNDOING FAILED: {u}"),
        }));
    }
    // Done: the plan is marked complete before the backups go.
    let _ = root.rename(&scratch(PLAN), &scratch(DONE));
    root.sync_dirs(fin.known.iter().map(|s| s.as_str()));
    crate::failpoint!("spool_apply.after_done");
    clear_scratch(root);
    root.sync_dirs(std::iter::empty());
    // The newest batch, with or without events: the primary had looked at
    // its files then, and everything it found is applied.
    let last = sp.last_as_of;
    Ok(StreamRecovery {
        recovery_point: Some(last.map_or(snapshot_time, |t| t.max(snapshot_time))),
        events_applied: sp.items.len() - j,
        bytes_applied: st.bytes,
        not_used: None,
    })
}

/// Failover's hook: apply the spool to the redolog copy at `copy_root`. Never
/// fails the failover: a spool that does not fit is reported and ignored
/// (the copy is then the snapshot alone, unless the failure came midway, in
/// which case the error says so).
pub fn apply_at_failover(
    cfg: &Config,
    copy_root: &Path,
    snapshot_time: Timestamp,
) -> Option<StreamRecovery> {
    settings(cfg)?;
    let catalog = Catalog::new(&cfg.state_dir);
    let dir = spool_dir(&catalog);
    if !dir.join(JOURNAL).exists() {
        return Some(StreamRecovery {
            not_used: Some("no spool on this standby".into()),
            ..Default::default()
        });
    }
    Some(match apply_dir(&dir, copy_root, snapshot_time) {
        Ok(r) => r,
        Err(e) => StreamRecovery {
            not_used: Some(e.to_string()),
            ..Default::default()
        },
    })
}

/// `failover --dry-run`: what the spool would add to the redolog snapshot
/// `set_id` (taken at `snapshot_time`): matched against the snapshot's
/// files as failover's apply would match the copy. Nothing is written (on
/// ZFS and LVM the snapshot is mounted read-only for the look, as a
/// checkpoint does). `events_applied`/`bytes_applied` are what it would
/// apply.
pub fn preview(cfg: &Config, set_id: &str, snapshot_time: Timestamp) -> Option<StreamRecovery> {
    settings(cfg)?;
    let catalog = Catalog::new(&cfg.state_dir);
    let dir = spool_dir(&catalog);
    let not_used = |m: String| StreamRecovery {
        not_used: Some(m),
        ..Default::default()
    };
    if !dir.join(JOURNAL).exists() {
        return Some(not_used("no spool on this standby".into()));
    }
    let sp = match Spool::load(&dir, false) {
        Ok(sp) => sp,
        Err(e) => return Some(not_used(e.to_string())),
    };
    if sp.base.is_empty() && sp.items.is_empty() {
        return Some(not_used("the spool is empty".into()));
    }
    let stores = Stores::open(cfg);
    let view = match snapshot_view(cfg, &stores, &dir, set_id) {
        Ok(v) => v,
        Err(e) => {
            return Some(not_used(format!(
                "the redolog snapshot's files cannot be read: {e}"
            )));
        }
    };
    let root = match Root::open(&view.root) {
        Ok(r) => r,
        Err(e) => return Some(not_used(e.to_string())),
    };
    let bound = Bound {
        deadline: Some(Instant::now() + APPLY_MATCH_TIME),
    };
    Some(match find_cut(&sp, &root, bound) {
        Ok((j, _)) => StreamRecovery {
            recovery_point: Some(
                sp.last_as_of
                    .map_or(snapshot_time, |t| t.max(snapshot_time)),
            ),
            events_applied: sp.items.len() - j,
            bytes_applied: sp.items[j..].iter().map(|i| i.data.len()).sum(),
            not_used: None,
        },
        Err(reason) => not_used(format!(
            "the spool does not continue the redolog snapshot: {reason}"
        )),
    })
}

/// After a completed failover this site is the primary: the spool of the
/// old primary's redolog has been applied (or was not usable) and must not
/// be applied to anything again. Removes the journal and `broken.json`.
pub fn clear_after_failover(catalog: &Catalog) -> Result<bool> {
    let dir = spool_dir(catalog);
    if !dir.join(JOURNAL).exists() {
        return Ok(false);
    }
    let _l = spool_lock(&dir, "lock", Duration::from_secs(30))?;
    for f in [JOURNAL, "broken.json"] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", dir.join(f).display()), e)),
        }
    }
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .ctx(format!("fsync {}", dir.display()))?;
    Ok(true)
}

/// The dry run's lines.
pub fn render_preview(r: &StreamRecovery) -> String {
    match (&r.not_used, r.recovery_point) {
        (Some(why), _) => format!("stream        the spool would not be used: {why}\n"),
        (None, Some(rp)) => format!(
            "stream        the spool would add {} events, {} bytes; stream point {rp} (primary's clock)\n",
            r.events_applied, r.bytes_applied
        ),
        (None, None) => "stream        nothing to add\n".into(),
    }
}

#[cfg(test)]
mod tests;
