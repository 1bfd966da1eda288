//! The standby's ransomware records (issue 31), beside the manifests so
//! that old manifests, receipts and `sets.index` stay as they are:
//!
//! ```text
//! signals/<role>/<snap>.json     what was measured while receiving one snapshot
//! verdicts/<id>.json             a committed set's verdict: clean or suspect, why, cleared?
//! ```

use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Catalog, read_optional, write_json};
use crate::base::error::{Error, Result};
use crate::base::model::validate_set_id;

/// What one received stream showed (standby/signals measures it).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VolumeSignals {
    /// `btrfs`, `zfs` or `lvm` (the stream's records were decoded) or
    /// `raw` (bytes only).
    pub parser: String,
    /// Sent incrementally from a base the standby holds.
    pub incremental: bool,
    /// Every byte of the stream was seen and decoded (not a resumed or
    /// undecodable stream): only then do the file counts mean anything.
    pub complete: bool,
    /// Why not complete, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Payload bytes of the stream.
    pub stream_bytes: u64,
    /// File data carried (btrfs: WRITE commands; raw: the stream).
    pub data_bytes: u64,
    /// Of which written into files that existed before this stream.
    pub rewrite_bytes: u64,
    pub files_new: u64,
    /// Distinct existing files written into.
    pub files_rewritten: u64,
    /// Renames of existing files, and of those the ones that change the
    /// name's extension.
    pub renames: u64,
    pub renames_new_extension: u64,
    pub unlinks: u64,
    /// 4 KiB blocks sampled (every 64th) and of those the ones zstd could
    /// not shrink below 97 %; the same for data written into existing files.
    pub sampled_blocks: u64,
    pub incompressible_blocks: u64,
    pub rewrite_sampled_blocks: u64,
    pub rewrite_incompressible_blocks: u64,
    /// Time spent measuring (the cost of detection), microseconds.
    pub cpu_us: u64,
    /// ZFS: object slots the stream frees (an upper bound on deleted files).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub objects_freed: u64,
    /// ZFS: the snapshot's creation time from the stream (seconds, the
    /// primary's clock): the next incremental's files created before it
    /// existed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<u64>,
    /// LVM: the overwritten bytes the sender's header claimed, when the
    /// standby measured `rewrite_bytes` against its own thin map of the
    /// base (a claim below the measure hid overwrites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_bytes_claimed: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl VolumeSignals {
    /// Not every count can be trusted, and why (the signal decoders'
    /// common ending).
    pub fn incomplete(&mut self, why: impl Into<String>) {
        self.complete = false;
        self.note = Some(why.into());
    }
    pub fn incompressible_share(&self) -> Option<f64> {
        (self.sampled_blocks > 0)
            .then(|| self.incompressible_blocks as f64 / self.sampled_blocks as f64)
    }
    pub fn rewrite_incompressible_share(&self) -> Option<f64> {
        (self.rewrite_sampled_blocks > 0)
            .then(|| self.rewrite_incompressible_blocks as f64 / self.rewrite_sampled_blocks as f64)
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Clean,
    Suspect,
}

/// One member's part of a verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeVerdict {
    pub role: String,
    /// Empty: this volume looked normal.
    pub reasons: Vec<String>,
    /// The largest reason's measure over its threshold (1.0 and above:
    /// the reason fired).
    pub score: f64,
    /// The baseline it was judged against (median bytes changed), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<VolumeSignals>,
}

/// `verdicts/<id>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetVerdict {
    pub set_id: String,
    pub verdict: Verdict,
    pub score: f64,
    pub volumes: Vec<VolumeVerdict>,
    pub judged_at: Timestamp,
    /// The admin's `sets --clear-suspect`: the set counts as clean again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Timestamp>,
}

impl SetVerdict {
    /// Suspect and not cleared by the admin.
    pub fn is_suspect(&self) -> bool {
        self.verdict == Verdict::Suspect && self.cleared_at.is_none()
    }

    /// One line per suspect volume: `role: reason; reason`.
    pub fn reason_lines(&self) -> Vec<String> {
        self.volumes
            .iter()
            .filter(|v| !v.reasons.is_empty())
            .map(|v| format!("{}: {}", v.role, v.reasons.join("; ")))
            .collect()
    }
}

/// Sort `items` by their set ids in [`by_set_id`]'s order. When every id is
/// canonical (every id snapsite makes), that order is the ids' text order,
/// so each id is checked once and the sort compares text; otherwise each
/// comparison goes through [`by_set_id`] (which checks both ids every
/// time: at 1 000 sets that was 40 000 checks a sort).
pub(super) fn sort_by_set_id<T>(items: &mut [T], id: impl Fn(&T) -> &str) {
    if items
        .iter()
        .all(|t| crate::base::model::canonical_set_id(id(t)).is_some())
    {
        items.sort_by(|a, b| id(a).cmp(id(b)));
    } else {
        items.sort_by(|a, b| by_set_id(id(a), id(b)));
    }
}

/// Set ids in time order (ids that do not parse by name).
pub(super) fn by_set_id(a: &str, b: &str) -> std::cmp::Ordering {
    use crate::base::model::older_set;
    if older_set(a, b) {
        std::cmp::Ordering::Less
    } else if older_set(b, a) {
        std::cmp::Ordering::Greater
    } else {
        a.cmp(b)
    }
}

fn check_role(role: &str) -> Result<()> {
    if role.is_empty()
        || role.len() > 32
        || !role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        return Err(Error::refused(format!(
            "`{}` is not a volume role",
            role.escape_debug()
        )));
    }
    Ok(())
}

impl Catalog {
    fn signals_path(&self, role: &str, snap: &str) -> Result<PathBuf> {
        check_role(role)?;
        validate_set_id(snap)?;
        Ok(self
            .root
            .join("signals")
            .join(role)
            .join(format!("{snap}.json")))
    }

    pub fn write_signals(&self, role: &str, snap: &str, s: &VolumeSignals) -> Result<()> {
        write_json(&self.signals_path(role, snap)?, s)
    }

    pub fn signals(&self, role: &str, snap: &str) -> Result<Option<VolumeSignals>> {
        read_optional(&self.signals_path(role, snap)?)
    }

    /// The snapshots of `role` with signals recorded, oldest first (by
    /// name: set ids sort by time).
    pub fn signal_snapshots(&self, role: &str) -> Result<Vec<String>> {
        check_role(role)?;
        let dir = self.root.join("signals").join(role);
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json") {
                    if validate_set_id(id).is_ok() {
                        out.push(id.to_string());
                    }
                }
            }
        }
        sort_by_set_id(&mut out, |id| id.as_str());
        Ok(out)
    }

    pub fn remove_signals(&self, role: &str, snap: &str) {
        if let Ok(p) = self.signals_path(role, snap) {
            let _ = std::fs::remove_file(p);
        }
    }

    pub(super) fn verdict_path(&self, id: &str) -> Result<PathBuf> {
        validate_set_id(id)?;
        Ok(self.root.join("verdicts").join(format!("{id}.json")))
    }

    /// Write a verdict (and keep `verdicts.summary` true: see
    /// [`super::verdict_summary`]).
    pub fn write_verdict(&self, v: &SetVerdict) -> Result<()> {
        let path = self.verdict_path(&v.set_id)?;
        let summary = self.verdict_summary_before_change();
        write_json(&path, v)?;
        self.verdict_summary_after_change(summary, &v.set_id, Some(v));
        Ok(())
    }

    pub fn verdict(&self, id: &str) -> Result<Option<SetVerdict>> {
        read_optional(&self.verdict_path(id)?)
    }

    /// Whether a set was judged suspect (cleared since or not; `None`: not
    /// judged), read without building its volumes' reasons and signals:
    /// the baseline asks this of every earlier set it considers.
    pub fn judged_suspect(&self, id: &str) -> Result<Option<bool>> {
        #[derive(Deserialize)]
        struct Judged {
            verdict: Verdict,
        }
        let j: Option<Judged> = read_optional(&self.verdict_path(id)?)?;
        Ok(j.map(|j| j.verdict == Verdict::Suspect))
    }

    /// Every verdict, oldest set first.
    pub fn verdicts(&self) -> Result<Vec<SetVerdict>> {
        let dir = self.root.join("verdicts");
        let mut out: Vec<SetVerdict> = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if let Some(id) = name.strip_suffix(".json") {
                    if let Some(v) = self.verdict(id).ok().flatten() {
                        out.push(v);
                    }
                }
            }
        }
        sort_by_set_id(&mut out, |v| v.set_id.as_str());
        Ok(out)
    }

    /// Prune: the verdicts of sets no longer here (their manifests removed),
    /// except suspect ones not cleared, which still mark where an attack
    /// began. Without this they would pile up with the whole history. A
    /// set's verdict is written after its manifest is committed, so a
    /// verdict without a manifest is never a set still arriving. Removed in
    /// one go: a valid summary is removed first (a kill midway leaves none;
    /// the next prune removes the rest) and written again after the last
    /// file, without their lines — unless a file disagreed with it (then
    /// the next reader rebuilds it). Returns how many.
    pub fn prune_verdicts(&self) -> Result<usize> {
        let gone: Vec<String> = self
            .verdict_lines()?
            .into_iter()
            .filter(|l| !l.is_suspect() && !self.has_manifest(&l.set_id))
            .map(|l| l.set_id)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let mut summary = self.verdict_summary_before_change();
        let mut removed = std::collections::BTreeSet::new();
        let mut n = 0;
        for id in &gone {
            // Read again: only a verdict that is still clean (or cleared)
            // goes, whatever the summary said.
            match self.verdict(id)? {
                Some(v) if !v.is_suspect() => {
                    let p = self.verdict_path(id)?;
                    match std::fs::remove_file(&p) {
                        Ok(()) => n += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(format!("remove {}", p.display()), e)),
                    }
                    removed.insert(id.as_str());
                }
                // Gone meanwhile: its line goes too.
                None => {
                    removed.insert(id.as_str());
                }
                // Suspect now, not what the summary said: it is not
                // written again (the next reader rebuilds it).
                Some(_) => summary = None,
            }
        }
        self.verdict_summary_after_removals(summary, &removed);
        Ok(n)
    }

    pub fn remove_verdict(&self, id: &str) {
        let Ok(p) = self.verdict_path(id) else {
            return;
        };
        if std::fs::symlink_metadata(&p).is_err() {
            return;
        }
        let summary = self.verdict_summary_before_change();
        // Not removed: the summary stays removed (the next reader rebuilds it).
        if std::fs::remove_file(&p).is_ok() {
            self.verdict_summary_after_change(summary, id, None);
        }
    }
}
