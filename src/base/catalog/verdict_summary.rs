//! `state_dir/verdicts.summary`: what `status` and `failover` need of
//! every verdict (`verdicts/<id>.json`) in one small file — per judged
//! set its id, clean, suspect or cleared, its score and its file's stamp —
//! so that they do
//! not read (and parse) every verdict with its volumes' signals. `sets`
//! still reads the files, where it prints reasons.
//!
//! The verdict files stay the truth; the summary is a cache that says
//! which state of `verdicts/` it describes (the stamp of the directory:
//! inode, modification and change time), like `sets.summary` (see
//! [`super::summary`]). A summary that is missing, cut, malformed or
//! stamped otherwise than the directory is rebuilt from the files by the
//! command that finds it so, and written only when the directory did not
//! change while it read and changed more than [`super::summary::SETTLED`]
//! ago.
//!
//! Who writes it: [`Catalog::write_verdict`] and
//! [`Catalog::remove_verdict`] (their callers hold the site lock). When
//! the summary is valid before the change, they first remove it (and
//! fsync the directory), then write the verdict, then write the summary
//! of the new state: a process killed in between leaves no summary, never
//! one that still calls a set clean that its file now calls suspect. A
//! change of `verdicts/` made without that (an older snapsite, an admin's
//! edit) changes the directory's stamp: the summary is stale. Written
//! like every record: temp file, fsync, rename, fsync of the directory.
//!
//! The readers check what they act on, and read only the head (the
//! lines before the per-verdict ones: counts, the newest set's score, the
//! uncleared suspect sets; [`VerdictHead`]) and the file's last line, so
//! that what they read does not grow with the history: `status` reads the
//! file of the first suspect set (for its reasons); `failover` reads the
//! files of every suspect set and of the sets it chose. A file that
//! disagrees with the summary makes them remove it and use the files.
//! The act of failover first checks the whole summary against the files
//! ([`Catalog::check_verdict_summary`]: the names in `verdicts/` and every
//! file's stamp, recorded per line: size, inode, times). Writers, `prune`
//! and that check decode the whole file, which refuses a head that
//! disagrees with the lines. A version 1 file (no head) is not this
//! magic: rebuilt from the files like a malformed one.

use std::path::PathBuf;

use super::Catalog;
use super::index::FileStamp;
use super::signals::{SetVerdict, Verdict};
use super::summary::{Fields, decode_frame, dir_stamp, stamp_parse, stamp_text};
use crate::base::model::parse_set_id;

/// Version 2 adds the head (`count`, `newest`, `s` records) before the
/// lines; a version 1 file is not this magic: rebuilt from the files.
const MAGIC: &str = "snapsite-verdicts-summary 2";
pub(super) const FILE: &str = "verdicts.summary";

/// A verdict as the summary holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judged {
    Clean,
    /// Suspect and not cleared.
    Suspect,
    /// Suspect, cleared by the admin (`sets --clear-suspect`).
    Cleared,
}

impl Judged {
    fn of(v: &SetVerdict) -> Judged {
        match (v.verdict, v.cleared_at.is_some()) {
            (Verdict::Suspect, false) => Judged::Suspect,
            // A clean verdict with a clearing counts as cleared, as
            // `SetVerdict::cleared_at` does for `status`.
            (_, true) => Judged::Cleared,
            (Verdict::Clean, false) => Judged::Clean,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Judged::Clean => "clean",
            Judged::Suspect => "suspect",
            Judged::Cleared => "cleared",
        }
    }

    fn parse(s: &str) -> Option<Judged> {
        Some(match s {
            "clean" => Judged::Clean,
            "suspect" => Judged::Suspect,
            "cleared" => Judged::Cleared,
            _ => return None,
        })
    }
}

/// One verdict's line.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictLine {
    pub set_id: String,
    pub judged: Judged,
    pub score: f64,
}

impl VerdictLine {
    pub fn of(v: &SetVerdict) -> VerdictLine {
        VerdictLine {
            set_id: v.set_id.clone(),
            judged: Judged::of(v),
            score: v.score,
        }
    }

    /// Suspect and not cleared (as [`SetVerdict::is_suspect`]).
    pub fn is_suspect(&self) -> bool {
        self.judged == Judged::Suspect
    }
}

/// What `status` and `failover` need, in the summary's head (its first
/// lines, before the per-verdict lines): read without the lines, so its
/// cost does not grow with the history. Computed from the lines by the
/// writer ([`VerdictHead::of`]); a full decode checks that they agree.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerdictHead {
    /// Sets judged (every verdict).
    pub judged: usize,
    /// Of those, suspect and cleared.
    pub cleared: usize,
    /// The newest set's id and score.
    pub newest: Option<(String, f64)>,
    /// The suspect sets not cleared, oldest first.
    pub suspects: Vec<VerdictLine>,
}

impl VerdictHead {
    pub fn of(lines: &[VerdictLine]) -> VerdictHead {
        VerdictHead {
            judged: lines.len(),
            cleared: lines.iter().filter(|l| l.judged == Judged::Cleared).count(),
            newest: lines.last().map(|l| (l.set_id.clone(), l.score)),
            suspects: lines.iter().filter(|l| l.is_suspect()).cloned().collect(),
        }
    }

    /// The head's records of `kind` (with `f` its fields); `None` for a
    /// malformed one or another kind.
    fn record<'a>(&mut self, kind: &str, f: &mut Fields<'a>) -> Option<()> {
        match kind {
            "count" => {
                self.judged = f.next()?.parse().ok()?;
                self.cleared = f.next()?.parse().ok()?;
            }
            "newest" => {
                let id = f.next()?;
                parse_set_id(id)?;
                self.newest = Some((id.to_string(), f.next()?.parse().ok()?));
            }
            "s" => {
                let id = f.next()?;
                parse_set_id(id)?;
                self.suspects.push(VerdictLine {
                    set_id: id.to_string(),
                    judged: Judged::Suspect,
                    score: f.next()?.parse().ok()?,
                });
            }
            _ => return None,
        }
        Some(())
    }
}

/// The summary as read or about to be written.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct VerdictSummary {
    dir: FileStamp,
    /// Oldest set first (the order of [`Catalog::verdicts`]).
    lines: Vec<VerdictLine>,
    /// Each line's verdict file's stamp (what `failover` checks).
    stamps: Vec<FileStamp>,
}

/// The text: the magic, the `verdicts/` directory's stamp, the head
/// (`count\t<judged>\t<cleared>`, `newest\t<id>\t<score>` when one was
/// judged, `s\t<id>\t<score>` per uncleared suspect), then one
/// `v\t<id>\t<judged>\t<score>\t<stamp>` per verdict, `end\t<lines>`.
impl VerdictSummary {
    fn encode(&self) -> String {
        use std::fmt::Write as _;
        debug_assert_eq!(self.lines.len(), self.stamps.len());
        let n = self.lines.len().min(self.stamps.len());
        let head = VerdictHead::of(&self.lines[..n]);
        let mut out = String::with_capacity(256 + n * 64);
        let _ = writeln!(out, "{MAGIC}");
        let (_, ino, m, c) = self.dir.parts();
        let _ = writeln!(out, "dir\t{ino}\t{m}\t{c}");
        let _ = writeln!(out, "count\t{}\t{}", head.judged, head.cleared);
        // `{}` of an f64 is the shortest text that parses back to it.
        if let Some((id, score)) = &head.newest {
            let _ = writeln!(out, "newest\t{id}\t{score}");
        }
        for l in &head.suspects {
            let _ = writeln!(out, "s\t{}\t{}", l.set_id, l.score);
        }
        for (l, st) in self.lines.iter().zip(&self.stamps) {
            let _ = writeln!(
                out,
                "v\t{}\t{}\t{}\t{}",
                l.set_id,
                l.judged.code(),
                l.score,
                stamp_text(st)
            );
        }
        let _ = writeln!(out, "end\t{n}");
        out
    }

    /// `None` for anything malformed or cut, or a head that does not
    /// agree with the lines.
    fn decode(text: &str) -> Option<VerdictSummary> {
        let mut s = VerdictSummary::default();
        let mut head = VerdictHead::default();
        let mut dir = None;
        let ended = decode_frame(text, MAGIC, |kind, f| {
            match kind {
                // The directory's stamp first, once.
                "dir" if dir.is_none() => dir = Some(dir_parse(f)?),
                _ if dir.is_none() => return None,
                "v" => {
                    let id = f.next()?;
                    parse_set_id(id)?;
                    let judged = Judged::parse(f.next()?)?;
                    let score: f64 = f.next()?.parse().ok()?;
                    s.stamps.push(stamp_parse(f)?);
                    s.lines.push(VerdictLine {
                        set_id: id.to_string(),
                        judged,
                        score,
                    });
                }
                // The head comes before the lines.
                _ if s.lines.is_empty() => head.record(kind, f)?,
                _ => return None,
            }
            Some(())
        })?;
        s.dir = dir?;
        (ended == s.lines.len() && head == VerdictHead::of(&s.lines)).then_some(s)
    }

    /// The head alone, from the text before the first `v` line (`head`)
    /// and the file's last line (`last`, its `end`): `None` when that is
    /// not a frame whose `end` counts the head's `judged`.
    fn decode_head(head: &str, last: &str) -> Option<(FileStamp, VerdictHead)> {
        let text = format!("{head}{last}\n");
        let mut h = VerdictHead::default();
        let mut dir = None;
        let ended = decode_frame(&text, MAGIC, |kind, f| {
            match kind {
                "dir" if dir.is_none() => dir = Some(dir_parse(f)?),
                _ if dir.is_none() => return None,
                _ => h.record(kind, f)?,
            }
            Some(())
        })?;
        let consistent = ended == h.judged
            && h.cleared + h.suspects.len() <= h.judged
            && h.newest.is_some() == (h.judged > 0);
        consistent.then_some((dir?, h))
    }
}

fn dir_parse<'a>(f: &mut Fields<'a>) -> Option<FileStamp> {
    Some(FileStamp::from_parts(
        0,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    ))
}

/// The summary file's text before its first `v` line, and its last line
/// (without its newline); read without the lines between (a few
/// kilobytes, whatever the history). `None`: cannot be read, or no frame
/// (cut: no newline at the end).
fn read_head_and_last(path: &std::path::Path) -> Option<(String, String)> {
    use std::io::{BufRead as _, Read as _, Seek as _};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut r = std::io::BufReader::with_capacity(4096, &mut file);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 || !line.ends_with('\n') {
            return None;
        }
        if line.starts_with("v\t") {
            break;
        }
        if line.starts_with("end\t") {
            // No lines: the rest (nothing, in a good file) is the frame's.
            r.read_to_string(&mut line).ok()?;
            return Some((head, line.strip_suffix('\n')?.to_string()));
        }
        head.push_str(&line);
    }
    drop(r);
    // The last line: `end\t<count>` is short; 64 bytes hold it.
    let from = len.saturating_sub(64);
    file.seek(std::io::SeekFrom::Start(from)).ok()?;
    let mut tail = String::new();
    file.take(64).read_to_string(&mut tail).ok()?;
    let last = tail.strip_suffix('\n')?.rsplit('\n').next()?;
    Some((head, last.to_string()))
}

impl Catalog {
    fn verdict_summary_path(&self) -> PathBuf {
        self.root.join(FILE)
    }

    /// `verdicts/` as it is now (`None`: missing, or no directory).
    fn verdicts_dir_stamp(&self) -> Option<FileStamp> {
        dir_stamp(self, "verdicts")
    }

    /// The summary on disk if it describes `verdicts/` as it is now.
    fn valid_verdict_summary(&self) -> Option<VerdictSummary> {
        let now = self.verdicts_dir_stamp()?;
        let text = std::fs::read_to_string(self.verdict_summary_path()).ok()?;
        VerdictSummary::decode(&text).filter(|s| s.dir == now)
    }

    /// Every verdict's line, oldest set first: from `verdicts.summary`
    /// when it is valid, else from the verdict files (then the summary is
    /// written, when `verdicts/` has settled; see the module's doc). The
    /// same as [`Catalog::verdicts`] mapped by [`VerdictLine::of`].
    pub fn verdict_lines(&self) -> crate::base::error::Result<Vec<VerdictLine>> {
        self.verdict_lines_at(super::summary::wall_ns())
    }

    fn verdict_lines_at(&self, wall_ns: i128) -> crate::base::error::Result<Vec<VerdictLine>> {
        Ok(self.verdict_summary_at(wall_ns)?.0.lines)
    }

    /// The valid summary (`true`), or one rebuilt from the files
    /// (`false`; written when `verdicts/` has settled).
    fn verdict_summary_at(
        &self,
        wall_ns: i128,
    ) -> crate::base::error::Result<(VerdictSummary, bool)> {
        let Some(before) = self.verdicts_dir_stamp() else {
            // No verdicts/ (a primary, or nothing judged yet): nothing to read.
            return Ok((VerdictSummary::default(), false));
        };
        if let Some(s) = self.valid_verdict_summary() {
            return Ok((s, true));
        }
        let s = self.verdict_summary_from_files(before.clone());
        if self.verdicts_dir_stamp().as_ref() == Some(&before)
            && super::summary::settled(&before, wall_ns)
        {
            self.write_verdict_summary(&s);
        }
        Ok((s, false))
    }

    /// Every verdict file read (as [`Catalog::verdicts`] reads them: one
    /// that cannot be read or parsed is left out), each with its stamp
    /// taken before it was read.
    fn verdict_summary_from_files(&self, dir: FileStamp) -> VerdictSummary {
        let mut found: Vec<(SetVerdict, FileStamp)> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.root.join("verdicts")) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                let Some(st) = std::fs::symlink_metadata(ent.path())
                    .ok()
                    .map(|md| FileStamp::of(&md))
                else {
                    continue;
                };
                if let Some(v) = self.verdict(id).ok().flatten() {
                    found.push((v, st));
                }
            }
        }
        super::signals::sort_by_set_id(&mut found, |f| f.0.set_id.as_str());
        VerdictSummary {
            dir,
            lines: found.iter().map(|(v, _)| VerdictLine::of(v)).collect(),
            stamps: found.into_iter().map(|(_, st)| st).collect(),
        }
    }

    /// What `status` and `failover` need ([`VerdictHead`]): from the
    /// summary's head when the summary describes `verdicts/` as it is now
    /// (its first lines and its last; the per-verdict lines are not read),
    /// else from the summary rebuilt from the files (as
    /// [`Catalog::verdict_lines`]).
    pub fn verdict_head(&self) -> crate::base::error::Result<VerdictHead> {
        self.verdict_head_at(super::summary::wall_ns())
    }

    fn verdict_head_at(&self, wall_ns: i128) -> crate::base::error::Result<VerdictHead> {
        let Some(now) = self.verdicts_dir_stamp() else {
            return Ok(VerdictHead::default());
        };
        let head = read_head_and_last(&self.verdict_summary_path())
            .and_then(|(head, last)| VerdictSummary::decode_head(&head, &last));
        if let Some((dir, h)) = head {
            if dir == now {
                return Ok(h);
            }
        }
        Ok(VerdictHead::of(&self.verdict_summary_at(wall_ns)?.0.lines))
    }

    /// The summary checked against the files without reading them: the
    /// names in `verdicts/` (one `readdir`) are the summary's, and each
    /// file keeps the stamp the summary recorded (one `stat` each: a
    /// verdict rewritten since is a new inode). A summary that does not
    /// match is removed (the next reader rebuilds it from the files);
    /// `false` then. For a failover that acts (its dry run checks only the
    /// files of the sets it uses).
    pub fn check_verdict_summary(&self) -> bool {
        let Some(s) = self.valid_verdict_summary() else {
            return true;
        };
        if self.verdict_files_match(&s) {
            return true;
        }
        tracing::warn!(
            "verdicts.summary does not match the files in verdicts/; reading every verdict"
        );
        self.forget_verdict_summary();
        false
    }

    /// The summary's lines, when it describes `verdicts/` as it is now and
    /// matches the files as [`Catalog::check_verdict_summary`] checks them
    /// (the names in `verdicts/`, each file's stamp): what a command that
    /// acts on the verdicts (`prune`) or prints them (`sets`) may take
    /// instead of parsing every file. `None`: no such summary (one that
    /// did not match is removed); the caller reads the files.
    pub fn checked_verdict_lines(&self) -> Option<Vec<VerdictLine>> {
        let s = self.valid_verdict_summary()?;
        if self.verdict_files_match(&s) {
            return Some(s.lines);
        }
        tracing::warn!(
            "verdicts.summary does not match the files in verdicts/; reading every verdict"
        );
        self.forget_verdict_summary();
        None
    }

    fn verdict_files_match(&self, s: &VerdictSummary) -> bool {
        let dir = self.root.join("verdicts");
        let mut listed: Vec<String> = Vec::with_capacity(s.lines.len());
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for ent in rd.flatten() {
                let name = ent.file_name();
                if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                    // As `verdicts()`: a name that is no set id is no verdict.
                    if parse_set_id(id).is_some() {
                        listed.push(id.to_string());
                    }
                }
            }
        }
        let mut have: Vec<&str> = s.lines.iter().map(|l| l.set_id.as_str()).collect();
        have.sort_unstable();
        listed.sort_unstable();
        have == listed
            && s.lines.iter().zip(&s.stamps).all(|(l, st)| {
                std::fs::symlink_metadata(dir.join(format!("{}.json", l.set_id)))
                    .is_ok_and(|md| FileStamp::of(&md) == *st)
            })
    }

    /// The verdict file of a set the summary calls suspect (`l`), read for
    /// its reasons, if it agrees (suspect, the same id); `None` when it
    /// does not (not suspect, or gone): then the summary is dropped and the
    /// caller decides from every file.
    pub fn listed_suspect(
        &self,
        l: &VerdictLine,
    ) -> crate::base::error::Result<Option<SetVerdict>> {
        match self.verdict(&l.set_id)? {
            Some(v) if v.is_suspect() && v.set_id == l.set_id => Ok(Some(v)),
            _ => {
                tracing::warn!(
                    set = %l.set_id,
                    "verdicts.summary disagrees with the set's verdict file; reading every verdict"
                );
                self.forget_verdict_summary();
                Ok(None)
            }
        }
    }

    /// The verdict files disagree with the summary (a reader found out):
    /// remove it, so that the next command rebuilds it from the files.
    pub fn forget_verdict_summary(&self) {
        let _ = std::fs::remove_file(self.verdict_summary_path());
    }

    /// Before a verdict is written or removed: the summary if it is valid
    /// (to be updated after the change), removed from disk (fsynced) so
    /// that a kill during the change leaves none.
    pub(super) fn verdict_summary_before_change(&self) -> Option<VerdictSummary> {
        let s = self.valid_verdict_summary()?;
        let path = self.verdict_summary_path();
        std::fs::remove_file(&path).ok()?;
        if let Err(e) = std::fs::File::open(&self.root).and_then(|d| d.sync_all()) {
            // Not durable yet: the verdict's write must not rely on it.
            tracing::debug!(error = %e, "fsync of state_dir after removing verdicts.summary");
            return None;
        }
        Some(s)
    }

    /// After the change: `id`'s verdict is now `new` (`None`: removed).
    pub(super) fn verdict_summary_after_change(
        &self,
        before: Option<VerdictSummary>,
        id: &str,
        new: Option<&SetVerdict>,
    ) {
        let Some(VerdictSummary { lines, stamps, .. }) = before else {
            return;
        };
        let Some(dir) = self.verdicts_dir_stamp() else {
            return;
        };
        let mut pairs: Vec<(VerdictLine, FileStamp)> = lines
            .into_iter()
            .zip(stamps)
            .filter(|(l, _)| l.set_id != id)
            .collect();
        if let Some(v) = new {
            let Ok(Some(stamp)) = self.verdict_path(id).map(|p| {
                std::fs::symlink_metadata(p)
                    .ok()
                    .map(|md| FileStamp::of(&md))
            }) else {
                return;
            };
            // The file is named by `id`; `verdicts()` orders by its content's id.
            let line = VerdictLine::of(v);
            let at = pairs.partition_point(|(l, _)| {
                super::signals::by_set_id(&l.set_id, &line.set_id) != std::cmp::Ordering::Greater
            });
            pairs.insert(at, (line, stamp));
        }
        let (lines, stamps) = pairs.into_iter().unzip();
        self.write_verdict_summary(&VerdictSummary { dir, lines, stamps });
    }

    /// After `prune_verdicts` removed the verdict files of `removed`: the
    /// summary valid before (`before`, removed from disk by
    /// [`Catalog::verdict_summary_before_change`]) without their lines,
    /// stamped with the directory as it is now.
    pub(super) fn verdict_summary_after_removals(
        &self,
        before: Option<VerdictSummary>,
        removed: &std::collections::BTreeSet<&str>,
    ) {
        let Some(VerdictSummary { lines, stamps, .. }) = before else {
            return;
        };
        let Some(dir) = self.verdicts_dir_stamp() else {
            return;
        };
        let (lines, stamps) = lines
            .into_iter()
            .zip(stamps)
            .filter(|(l, _)| !removed.contains(l.set_id.as_str()))
            .unzip();
        self.write_verdict_summary(&VerdictSummary { dir, lines, stamps });
    }

    fn write_verdict_summary(&self, s: &VerdictSummary) {
        self.remove_stale_summary_temps();
        if let Err(e) = super::write_atomic(&self.verdict_summary_path(), s.encode().as_bytes()) {
            tracing::debug!(error = %e, "verdicts.summary not written (it is a cache)");
        }
    }
}

#[cfg(test)]
mod tests;
