//! Where a directory (a snapshot, failover's copy) stands in the spool:
//! linear matching of the spool's events against its files.

use super::*;

// ---------------------------------------------------------------------------
// Matching the spool against a directory (a snapshot or failover's copy).

/// A view of a directory's files, cached (sizes, descriptors, a window of
/// bytes). Every file is opened through [`Root`]: regular files
/// only, no symlink anywhere on the way.
pub(crate) struct View<'a> {
    pub(crate) root: &'a Root,
    pub(crate) sizes: HashMap<String, std::result::Result<Option<u64>, String>>,
    pub(crate) files: HashMap<String, Option<File>>,
    /// The last window read: (name, offset, bytes).
    pub(crate) window: Option<(String, u64, Vec<u8>)>,
    /// Bytes read from files so far (the matcher's work bound).
    pub(crate) read: u64,
}

pub(crate) const WINDOW: usize = 1 << 20;

impl<'a> View<'a> {
    pub(crate) fn new(root: &'a Root) -> Self {
        View {
            root,
            sizes: HashMap::new(),
            files: HashMap::new(),
            window: None,
            read: 0,
        }
    }
    pub(crate) fn size(&mut self, name: &str) -> std::result::Result<Option<u64>, String> {
        if let Some(v) = self.sizes.get(name) {
            return v.clone();
        }
        let root = self.root;
        self.sizes
            .entry(name.to_string())
            .or_insert_with(|| {
                check_name(name)?;
                root.regular_size(name)
            })
            .clone()
    }
    /// Bytes `[off, off + want.len())` of `name` equal `want`? Small reads
    /// go through a window of 1 MiB (ranges are mostly met in file order).
    pub(crate) fn bytes_equal(&mut self, name: &str, off: u64, want: &[u8]) -> bool {
        self.first_difference(name, off, want) == Some(None)
    }

    /// `Some(None)`: equal; `Some(Some(k))`: the last differing byte is at
    /// `off + k`; `None`: the file cannot give these bytes (absent, shorter).
    pub(crate) fn first_difference(
        &mut self,
        name: &str,
        off: u64,
        want: &[u8],
    ) -> Option<Option<usize>> {
        let end = off.checked_add(want.len() as u64)?;
        let cmp =
            |have: &[u8]| -> Option<usize> { have.iter().zip(want).rposition(|(a, b)| a != b) };
        if let Some((n, w_off, w)) = &self.window {
            if n == name && off >= *w_off && end <= w_off + w.len() as u64 {
                let s = (off - w_off) as usize;
                return Some(cmp(&w[s..s + want.len()]));
            }
        }
        // Beyond the file's size (as first seen): nothing to read.
        let size = self.size(name).ok().flatten()?;
        if end > size {
            return None;
        }
        let root = self.root;
        let f = self.files.entry(name.to_string()).or_insert_with(|| {
            check_name(name).ok()?;
            root.open_regular(name, Access::Read).ok().flatten()
        });
        let f = f.as_ref()?;
        if want.len() >= WINDOW {
            let mut buf = vec![0u8; want.len()];
            f.read_exact_at(&mut buf, off).ok()?;
            self.read += buf.len() as u64;
            return Some(cmp(&buf));
        }
        let mut buf = vec![0u8; WINDOW.min((size - off) as usize)];
        let n = fill_at(f, &mut buf, off).ok()?;
        buf.truncate(n);
        self.read += n as u64;
        let res = (n >= want.len()).then(|| cmp(&buf[..want.len()]));
        self.window = Some((name.to_string(), off, buf));
        res
    }

    pub(crate) fn equal(
        &mut self,
        sp: &Spool,
        name: &str,
        r: &Range,
    ) -> std::result::Result<bool, String> {
        let want = sp.read(r.src, 0, r.len)?;
        Ok(self.bytes_equal(name, r.offset, &want))
    }

    /// Bytes `[from, to)` of range `r` equal in the file?
    pub(crate) fn equal_part(
        &mut self,
        sp: &Spool,
        name: &str,
        r: &Range,
        from: u64,
        to: u64,
    ) -> std::result::Result<bool, String> {
        let want = sp.read(r.src, from - r.offset, to - from)?;
        Ok(self.bytes_equal(name, from, &want))
    }

    /// Is the directory at the state `sim`? `Err(reason)` if not. With
    /// `fin` (the state after the whole spool), bytes the directory holds
    /// beyond `sim`'s sizes must agree with what the spool appends there
    /// later (a snapshot may be ahead of the follower, never different).
    pub(crate) fn at(
        &mut self,
        sp: &Spool,
        sim: &Sim,
        check_bytes: bool,
        fin: Option<&Sim>,
    ) -> std::result::Result<(), String> {
        for (name, &i) in &sim.names {
            let inst = &sim.insts[i];
            match self.size(name)? {
                None => return Err(format!("`{}` is missing", wire_str(name))),
                Some(s) if s < inst.size => {
                    return Err(format!(
                        "`{}` has {s} bytes, the spool continues it from {}",
                        wire_str(name),
                        inst.size
                    ));
                }
                Some(_) => {}
            }
        }
        for name in sim.known.iter().filter(|n| !sim.names.contains_key(*n)) {
            if self.size(name)?.is_some() {
                return Err(format!(
                    "`{}` is present, the spool has it renamed or removed",
                    wire_str(name)
                ));
            }
        }
        if check_bytes {
            for (name, &i) in &sim.names {
                for r in &sim.insts[i].ranges {
                    if !self.equal(sp, name, r)? {
                        return Err(format!(
                            "`{}`: bytes {}..{} differ from the spooled ones",
                            wire_str(name),
                            r.offset,
                            r.offset + r.len
                        ));
                    }
                }
                let (Some(fin), Ok(Some(have))) = (fin, self.size(name)) else {
                    continue;
                };
                let size = sim.insts[i].size;
                for r in fin.insts.get(i).map(|x| &x.ranges[..]).unwrap_or(&[]) {
                    let (from, to) = (r.offset.max(size), (r.offset + r.len).min(have));
                    if from < to && !self.equal_part(sp, name, r, from, to)? {
                        return Err(format!(
                            "`{}`: bytes {from}..{to} differ from what the spool appends there",
                            wire_str(name)
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why matching gave up (a bound, not a mismatch).
pub(crate) const GAVE_UP: &str = "matching the spool gave up";

/// How long matching may take and how much it may read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub(crate) deadline: Option<Instant>,
}

/// The largest `j` such that the directory holds the state after the
/// spool's first `j` items; `Err` with the reason the base does not match.
///
/// One forward pass over the events, keeping the verdict of every name
/// (present, long enough; absent if the spool removed it) and of every file
/// instance's bytes (the ranges it holds, compared once each against the
/// file of its current name; the spool's later bytes beyond its size, as
/// the last differing position, computed once per instance and name) as
/// counters: a cut passes when no name and no instance is bad. Each event
/// touches one or two names, so the pass is linear in events and bytes,
/// except renames, which compare an instance's ranges against its new name
/// (once per instance and name): the work is bounded by a multiple of the
/// spool's bytes and events, and by `bound`'s deadline.
pub(crate) fn find_cut(
    sp: &Spool,
    root: &Root,
    bound: Bound,
) -> std::result::Result<(usize, Sim), String> {
    let j = find_cuts(sp, root, bound, 1)?[0];
    Ok((j, sim_at(sp, j)))
}

/// The state after the spool's first `j` items.
pub(crate) fn sim_at(sp: &Spool, j: usize) -> Sim {
    let mut s = sp.base_sim();
    for i in 0..j {
        s.apply(&sp.ev(i), Src::Item(i))
            .expect("recorded items apply");
    }
    s
}

/// The `keep` largest cuts the directory passes, largest first (at least
/// one, or the reason there is none). A snapshot ahead of the spool passes
/// a later cut than the one it was taken at when a truncation hides what
/// differs; failover's apply then finds the difference and tries the next.
pub(crate) fn find_cuts(
    sp: &Spool,
    root: &Root,
    bound: Bound,
    keep: usize,
) -> std::result::Result<Vec<usize>, String> {
    let fin = sp.sim();
    let mut m = Matcher {
        sp,
        view: View::new(root),
        fin: &fin,
        sim: sp.base_sim(),
        name_bad: HashMap::new(),
        bad_names: 0,
        pairs: Vec::new(),
        saved: HashMap::new(),
        inst_bad: Vec::new(),
        bad_insts: 0,
        work: 0,
        io_err: None,
        limit: 64 * (sp.pending_bytes() + sp.base.iter().map(|b| b.tail.len() as u64).sum::<u64>())
            + 256 * (sp.items.len() as u64 + sp.base.len() as u64)
            + (256 << 20),
    };
    let min = sp.min_cut();
    let names: Vec<(String, usize)> = m.sim.names.iter().map(|(n, i)| (n.clone(), *i)).collect();
    for (n, i) in names {
        m.attach(i, &n);
        m.eval_inst(i);
    }
    let known: Vec<String> = m.sim.known.iter().cloned().collect();
    for n in &known {
        m.eval_name(n);
    }
    if let Some(e) = m.io_err.take() {
        return Err(e);
    }
    let mut passing = std::collections::VecDeque::new();
    let mut cheap_best = None;
    for j in 0..=sp.items.len() {
        if m.bad_names == 0 && j >= min {
            cheap_best = Some(j);
            if m.bad_insts == 0 {
                if passing.len() == keep {
                    passing.pop_front();
                }
                passing.push_back(j);
            }
        }
        if j == sp.items.len() {
            break;
        }
        m.step(j)?;
        if let Some(e) = m.io_err.take() {
            return Err(e);
        }
        if j % 1024 == 0 && bound.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(format!(
                "{GAVE_UP} after {j} of {} events: it took longer than allowed",
                sp.items.len()
            ));
        }
        if m.work + m.view.read > m.limit {
            return Err(format!(
                "{GAVE_UP} after {j} of {} events: more than {} bytes compared for a spool of {} bytes (files renamed over and over?)",
                sp.items.len(),
                m.limit,
                sp.pending_bytes()
            ));
        }
    }
    if !passing.is_empty() {
        return Ok(passing.into_iter().rev().collect());
    }
    // No cut: say why, as the reason at the first cut allowed (names,
    // sizes) or the bytes at the latest cut whose names and sizes fit.
    let mut view = View::new(root);
    let mut s = sp.base_sim();
    let upto = cheap_best.unwrap_or(min);
    for i in 0..upto {
        s.apply(&sp.ev(i), Src::Item(i))
            .expect("recorded items apply");
    }
    let why = match cheap_best {
        None => view.at(sp, &s, false, None).err(),
        Some(_) => view.at(sp, &s, true, Some(&fin)).err(),
    };
    Err(why.unwrap_or_else(|| {
        format!(
            "no cut of the spool matches (the first {min} events restart the spool from the primary's files, which the snapshot must hold)"
        )
    }))
}

/// A file instance's ranges as compared against one name's file:
/// (source, length, ranges differing up to and including this one).
pub(crate) type Compared = Vec<(Src, u64, usize)>;

pub(crate) fn mismatches(stack: &Compared) -> usize {
    stack.last().map_or(0, |x| x.2)
}

/// A comparison kept for a name an instance left: ranges, last difference.
pub(crate) type Saved = (Compared, Option<Option<u64>>);

pub(crate) struct Pair {
    pub(crate) name: String,
    pub(crate) stack: Compared,
    /// The last position where the spool's bytes (as of the whole spool)
    /// differ from the file, `None` if nowhere; computed when first needed.
    pub(crate) last_diff: Option<Option<u64>>,
}

pub(crate) struct Matcher<'a> {
    pub(crate) sp: &'a Spool,
    pub(crate) view: View<'a>,
    pub(crate) fin: &'a Sim,
    pub(crate) sim: Sim,
    pub(crate) name_bad: HashMap<String, bool>,
    pub(crate) bad_names: usize,
    /// Per instance: its current name's comparison, if it has a name.
    pub(crate) pairs: Vec<Option<Pair>>,
    /// Comparisons of instances under names they left (a rename back).
    pub(crate) saved: HashMap<(usize, String), Saved>,
    pub(crate) inst_bad: Vec<bool>,
    pub(crate) bad_insts: usize,
    pub(crate) work: u64,
    pub(crate) limit: u64,
    /// The first failure to read the spool's own bytes (ends the match).
    pub(crate) io_err: Option<String>,
}

impl Matcher<'_> {
    pub(crate) fn range_equal(&mut self, name: &str, src: Src, offset: u64, len: u64) -> bool {
        self.work += 16;
        match self.sp.read(src, 0, len) {
            Ok(d) => self.view.bytes_equal(name, offset, &d),
            Err(e) => {
                self.io_err.get_or_insert(e);
                false
            }
        }
    }

    pub(crate) fn ensure(&mut self, i: usize) {
        if self.pairs.len() <= i {
            self.pairs.resize_with(i + 1, || None);
            self.inst_bad.resize(i + 1, false);
        }
    }

    /// Instance `i` now has name `n`: compare its ranges with `n`'s file,
    /// reusing an earlier comparison under that name as far as its ranges
    /// are unchanged (ranges change only at the top, and each is a distinct
    /// item: the comparison is valid up to the last position whose range is
    /// the same, found by binary search), so renaming back and forth costs
    /// only the ranges added since.
    pub(crate) fn attach(&mut self, i: usize, n: &str) {
        self.ensure(i);
        let (mut stack, last_diff) = self.saved.remove(&(i, n.to_string())).unwrap_or_default();
        let same = |stack: &Compared, ranges: &[Range], p: usize| {
            let (s, l, _) = stack[p];
            ranges[p].src == s && ranges[p].len == l
        };
        let nr = self.sim.insts[i].ranges.len();
        let (mut lo, mut hi) = (0usize, stack.len().min(nr));
        // Largest `valid` with positions `..valid` the same.
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if same(&stack, &self.sim.insts[i].ranges, mid - 1) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.work += 64;
        stack.truncate(lo);
        for k in lo..nr {
            let r = self.sim.insts[i].ranges[k].clone();
            let eq = self.range_equal(n, r.src, r.offset, r.len);
            stack.push((r.src, r.len, mismatches(&stack) + usize::from(!eq)));
        }
        self.pairs[i] = Some(Pair {
            name: n.to_string(),
            stack,
            last_diff,
        });
    }

    pub(crate) fn detach(&mut self, i: usize) {
        self.ensure(i);
        if let Some(p) = self.pairs[i].take() {
            self.saved.insert((i, p.name), (p.stack, p.last_diff));
        }
        self.eval_inst(i);
    }

    /// Ranges of `i` changed at the top (an append or a truncate).
    pub(crate) fn resync(&mut self, i: usize) {
        let Some(mut p) = self.pairs[i].take() else {
            return;
        };
        let ranges = &self.sim.insts[i].ranges;
        p.stack.truncate(ranges.len());
        if let (Some(top), Some(r)) = (
            p.stack.last().copied(),
            ranges.get(p.stack.len().wrapping_sub(1)),
        ) {
            if top.1 != r.len || top.0 != r.src {
                p.stack.pop();
            }
        }
        let missing: Vec<Range> = ranges[p.stack.len()..].to_vec();
        for r in missing {
            let eq = self.range_equal(&p.name, r.src, r.offset, r.len);
            let mm = mismatches(&p.stack) + usize::from(!eq);
            p.stack.push((r.src, r.len, mm));
        }
        self.pairs[i] = Some(p);
    }

    /// The last position where the whole spool's bytes of `i` differ from
    /// `name`'s file (within the file's size).
    pub(crate) fn last_diff(&mut self, i: usize, name: &str, have: u64) -> Option<u64> {
        let mut last = None;
        let ranges = self
            .fin
            .insts
            .get(i)
            .map(|x| x.ranges.clone())
            .unwrap_or_default();
        for r in ranges {
            let to = (r.offset + r.len).min(have);
            if r.offset >= to {
                continue;
            }
            self.work += 16;
            let d = match self.sp.read(r.src, 0, to - r.offset) {
                Ok(d) => d,
                Err(e) => {
                    self.io_err.get_or_insert(e);
                    return Some(r.offset);
                }
            };
            match self.view.first_difference(name, r.offset, &d) {
                Some(None) => {}
                Some(Some(k)) => last = Some(r.offset + k as u64),
                None => last = Some(to - 1),
            }
        }
        last
    }

    pub(crate) fn eval_inst(&mut self, i: usize) {
        self.ensure(i);
        let bad = match self.pairs[i]
            .as_ref()
            .map(|p| (p.name.clone(), mismatches(&p.stack), p.last_diff))
        {
            None => false,
            Some((_, mm, _)) if mm > 0 => true,
            Some((name, _, ld)) => match self.view.size(&name) {
                Ok(Some(have)) => {
                    let ld = match ld {
                        Some(x) => x,
                        None => {
                            let x = self.last_diff(i, &name, have);
                            self.pairs[i].as_mut().expect("named").last_diff = Some(x);
                            x
                        }
                    };
                    ld.is_some_and(|p| p >= self.sim.insts[i].size)
                }
                // The name's own verdict fails the cut.
                _ => false,
            },
        };
        if bad != self.inst_bad[i] {
            self.inst_bad[i] = bad;
            if bad {
                self.bad_insts += 1;
            } else {
                self.bad_insts -= 1;
            }
        }
    }

    pub(crate) fn eval_name(&mut self, n: &str) {
        let bad = match self.sim.names.get(n) {
            Some(&i) => match self.view.size(n) {
                Ok(Some(s)) => s < self.sim.insts[i].size,
                _ => true,
            },
            None if self.sim.known.contains(n) => !matches!(self.view.size(n), Ok(None)),
            None => false,
        };
        let was = match self.name_bad.get_mut(n) {
            Some(v) => std::mem::replace(v, bad),
            None => {
                self.name_bad.insert(n.to_string(), bad);
                false
            }
        };
        if bad && !was {
            self.bad_names += 1;
        } else if !bad && was {
            self.bad_names -= 1;
        }
    }

    /// Item `j` (`ev`) applied to the simulated spool; an error names it.
    fn apply_item(&mut self, ev: &SpoolEvent, j: usize) -> std::result::Result<(), String> {
        self.sim
            .apply(ev, Src::Item(j))
            .map_err(|e| format!("item {j}: {e}"))
    }

    /// Apply item `j` and update the verdicts it touches.
    pub(crate) fn step(&mut self, j: usize) -> std::result::Result<(), String> {
        let ev = &self.sp.ev(j);
        match ev {
            SpoolEvent::Base { file, .. } => {
                if let Some(&old) = self.sim.names.get(file) {
                    self.detach(old);
                }
                self.apply_item(ev, j)?;
                let i = self.sim.names[file];
                self.attach(i, file);
                self.eval_inst(i);
                self.eval_name(file);
            }
            SpoolEvent::Append { file, .. } => {
                let existed = self.sim.names.contains_key(file);
                self.apply_item(ev, j)?;
                let i = self.sim.names[file];
                if existed {
                    self.resync(i);
                } else {
                    self.attach(i, file);
                }
                self.eval_inst(i);
                self.eval_name(file);
            }
            SpoolEvent::Truncate { file, .. } => {
                self.apply_item(ev, j)?;
                let i = self.sim.names[file];
                self.resync(i);
                self.eval_inst(i);
                self.eval_name(file);
            }
            SpoolEvent::Rename { from, to } => {
                let i = self.sim.names.get(from).copied();
                let over = self.sim.names.get(to).copied();
                self.apply_item(ev, j)?;
                if let Some(k) = over {
                    self.detach(k);
                }
                if let Some(i) = i {
                    self.detach(i);
                    self.attach(i, to);
                    self.eval_inst(i);
                }
                self.eval_name(from);
                self.eval_name(to);
            }
            SpoolEvent::Remove { file } => {
                let i = self.sim.names.get(file).copied();
                self.apply_item(ev, j)?;
                if let Some(i) = i {
                    self.detach(i);
                }
                self.eval_name(file);
            }
        }
        Ok(())
    }
}

/// The matching before issue 22 (quadratic: a state rebuilt per candidate,
/// every name checked per cut), kept to check the linear one against.
#[cfg(test)]
pub(crate) fn find_cut_old(sp: &Spool, root: &Root) -> std::result::Result<(usize, Sim), String> {
    let min = sp.min_cut();
    let mut view = View::new(root);
    let mut sim = sp.base_sim();
    // Forward: which cuts pass the cheap check (names and sizes); only
    // their indices are kept (a state is rebuilt when its bytes are checked).
    let mut candidates = vec![];
    let mut first_err = None;
    for j in 0..=sp.items.len() {
        match view.at(sp, &sim, false, None) {
            Ok(()) if j >= min => candidates.push(j),
            Ok(()) => {}
            Err(e) if j == 0 => first_err = Some(e),
            Err(_) => {}
        }
        if j < sp.items.len() {
            sim.apply(&sp.ev(j), Src::Item(j))
                .expect("recorded items apply");
        }
    }
    let fin = sim;
    for j in candidates.into_iter().rev() {
        let mut s = sp.base_sim();
        for i in 0..j {
            s.apply(&sp.ev(i), Src::Item(i))
                .expect("recorded items apply");
        }
        match view.at(sp, &s, true, Some(&fin)) {
            Ok(()) => return Ok((j, s)),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| "no prefix of the spool matches".into()))
}

/// Drop the first `j` items: the state they lead to becomes the base (with
/// up to 4 KiB of known tail per file, from the spool).
pub(crate) fn rebase(
    sp: &Spool,
    j: usize,
    sim: &Sim,
    as_of: Option<Timestamp>,
) -> std::result::Result<Spool, String> {
    let base = sim
        .names
        .iter()
        .map(|(name, &i)| {
            Ok(BaseFile {
                file: name.clone(),
                size: sim.insts[i].size,
                tail: sp.known_tail(&sim.insts[i])?,
            })
        })
        .collect::<std::result::Result<_, String>>()?;
    let items: Vec<Item> = sp.items[j..].to_vec();
    let base_as_of = if j > 0 {
        Some(sp.batch_of(j - 1).1)
    } else {
        sp.base_as_of
    }
    .max(as_of);
    Ok(Spool {
        base,
        base_as_of,
        items,
        last_seq: sp.last_seq,
        last_as_of: sp.last_as_of,
        disk_bytes: 0,
        journal: sp.journal.clone(),
        names: sp.names.clone(),
        name_ids: sp.name_ids.clone(),
        batches: sp.batches.clone(),
    })
}
