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
//! The readers check what they act on: `status` reads the file of the
//! first suspect set (for its reasons); `failover` matches the names in
//! `verdicts/` and every file's stamp (recorded per line: size, inode,
//! times) against the summary ([`Catalog::verdict_lines_checked`]), reads
//! the files of every suspect set and of the sets it chose. A file that
//! disagrees with the summary makes them remove it and use the files.

use std::path::PathBuf;

use super::Catalog;
use super::index::FileStamp;
use super::signals::{SetVerdict, Verdict};
use super::summary::{dir_stamp, stamp_parse, stamp_text};
use crate::base::model::parse_set_id;

const MAGIC: &str = "snapsite-verdicts-summary 1";
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

/// The summary as read or about to be written.
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct VerdictSummary {
    dir: FileStamp,
    /// Oldest set first (the order of [`Catalog::verdicts`]).
    lines: Vec<VerdictLine>,
    /// Each line's verdict file's stamp (what `failover` checks).
    stamps: Vec<FileStamp>,
}

impl VerdictSummary {
    fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(128 + self.lines.len() * 64);
        let _ = writeln!(out, "{MAGIC}");
        let (_, ino, m, c) = self.dir.parts();
        let _ = writeln!(out, "dir\t{ino}\t{m}\t{c}");
        for (l, st) in self.lines.iter().zip(&self.stamps) {
            // `{}` of an f64 is the shortest text that parses back to it.
            let _ = writeln!(
                out,
                "v\t{}\t{}\t{}\t{}",
                l.set_id,
                l.judged.code(),
                l.score,
                stamp_text(st)
            );
        }
        debug_assert_eq!(self.lines.len(), self.stamps.len());
        let _ = writeln!(out, "end\t{}", self.lines.len().min(self.stamps.len()));
        out
    }

    /// `None` for anything malformed or cut.
    fn decode(text: &str) -> Option<VerdictSummary> {
        let mut lines = text.lines();
        if lines.next()? != MAGIC {
            return None;
        }
        let mut f = lines.next()?.split('\t');
        if f.next()? != "dir" {
            return None;
        }
        let dir = FileStamp::from_parts(
            0,
            f.next()?.parse().ok()?,
            f.next()?.parse().ok()?,
            f.next()?.parse().ok()?,
        );
        if f.next().is_some() {
            return None;
        }
        let mut s = VerdictSummary {
            dir,
            ..VerdictSummary::default()
        };
        let mut ended = false;
        for l in lines {
            if ended {
                return None;
            }
            let mut f = l.split('\t');
            match f.next()? {
                "v" => {
                    let id = f.next()?;
                    parse_set_id(id)?;
                    let judged = Judged::parse(f.next()?)?;
                    let score: f64 = f.next()?.parse().ok()?;
                    s.stamps.push(stamp_parse(&mut f)?);
                    s.lines.push(VerdictLine {
                        set_id: id.to_string(),
                        judged,
                        score,
                    });
                }
                "end" => {
                    if f.next()?.parse::<usize>().ok()? != s.lines.len() {
                        return None;
                    }
                    ended = true;
                }
                _ => return None,
            }
            if f.next().is_some() {
                return None;
            }
        }
        ended.then_some(s)
    }
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
        found.sort_by(|a, b| super::signals::by_set_id(&a.0.set_id, &b.0.set_id));
        VerdictSummary {
            dir,
            lines: found.iter().map(|(v, _)| VerdictLine::of(v)).collect(),
            stamps: found.into_iter().map(|(_, st)| st).collect(),
        }
    }

    /// [`Catalog::verdict_lines`], checked against the files without
    /// reading them: the names in `verdicts/` (one `readdir`) are the
    /// summary's, and each file keeps the stamp the summary recorded (one
    /// `stat` each: a verdict rewritten since is a new inode). Anything
    /// else makes it drop the summary and read every file. For `failover`.
    pub fn verdict_lines_checked(&self) -> crate::base::error::Result<Vec<VerdictLine>> {
        let (s, from_summary) = self.verdict_summary_at(super::summary::wall_ns())?;
        if !from_summary || self.verdict_files_match(&s) {
            return Ok(s.lines);
        }
        tracing::warn!(
            "verdicts.summary does not match the files in verdicts/; reading every verdict"
        );
        self.forget_verdict_summary();
        Ok(self.verdicts()?.iter().map(VerdictLine::of).collect())
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

    fn write_verdict_summary(&self, s: &VerdictSummary) {
        self.remove_stale_summary_temps();
        if let Err(e) = super::write_atomic(&self.verdict_summary_path(), s.encode().as_bytes()) {
            tracing::debug!(error = %e, "verdicts.summary not written (it is a cache)");
        }
    }
}

#[cfg(test)]
mod tests;
