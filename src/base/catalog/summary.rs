//! `state_dir/sets.summary`: what the everyday commands need of the
//! catalog, in a file whose size does not grow with the history — the
//! count of recorded sets by kind (and of committed ones), the count of
//! member snapshots per volume, and the newest sets themselves (a suffix
//! of the catalog in its order: up to [`TAIL`] manifests, each in the
//! index's encoding with its file's stamp). `status` and `failover
//! --dry-run` read it instead of every manifest (see
//! `Site::open_newest`).
//!
//! It is a cache, and it says which state of `sets/` it describes: the
//! stamp (inode, modification and change time) of the `sets` directory.
//! Every manifest write is a rename into that directory and every removal
//! an unlink from it, so either changes the stamp; a summary whose stamp
//! is not the directory's is stale and not used (the command reads every
//! manifest as before, and writes a fresh summary). A manifest of the tail
//! is used only while its file keeps the stamp recorded (one `stat` each):
//! a file edited in place is read again.
//!
//! Who writes it: `write_manifest` and `remove_manifest` update it (the
//! verbs that call them hold the site lock, so no two update it at once),
//! when it was valid before their change; otherwise it is left stale. A
//! command that found it stale writes the one it rebuilt only if the
//! directory did not change while it read, and changed more than
//! [`SETTLED`] ago: a change in the same tick of the file system's clock
//! as the stamp it read could leave the stamp as it was, so a summary is
//! never stamped with a time that recent. Written by rename (no fsync:
//! after a power loss, a summary and a directory that disagree are simply
//! stale). Written only by this site from manifests it read itself.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Catalog;
use super::index::{FileStamp, codec};
use crate::base::model::{Manifest, SetKind, parse_set_id};

/// Newest sets kept whole in the summary.
pub const TAIL: usize = 64;

/// How old the `sets` directory's last change must be before a command
/// that rebuilt the summary stamps it with it.
pub const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

const MAGIC: &str = "snapsite-sets-summary 1";
const FILE: &str = "sets.summary";

/// The `sets` directory's stamp, taken before a command reads every
/// manifest (see [`Catalog::summary_rebuilt`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetsDirStamp(FileStamp);

/// Counts of recorded sets of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCount {
    pub recorded: usize,
    /// Those with a commit time (on a standby: committed here).
    pub committed: usize,
}

/// One set of the tail: its file's stamp and its tokens (decoded on use).
#[derive(Debug, Clone, PartialEq)]
pub struct TailEntry {
    pub id: String,
    stamp: FileStamp,
    tokens: String,
    /// (generation, commit, seq): the catalog's order, without decoding.
    order: (u64, u64, u64),
}

/// The summary as read (or about to be written).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    dir: FileStamp,
    pub full: KindCount,
    pub redolog: KindCount,
    /// Member snapshots recorded per volume role.
    pub roles: BTreeMap<String, usize>,
    /// The newest sets, oldest first: every recorded set not older than
    /// the first is here.
    pub tail: Vec<TailEntry>,
}

fn order_of(m: &Manifest) -> (u64, u64, u64) {
    let (g, c, s, _) = m.order_key();
    (g, c, s)
}

impl Summary {
    pub fn count(&self, kind: SetKind) -> KindCount {
        match kind {
            SetKind::Full => self.full,
            SetKind::Redolog => self.redolog,
        }
    }

    fn count_mut(&mut self, kind: SetKind) -> &mut KindCount {
        match kind {
            SetKind::Full => &mut self.full,
            SetKind::Redolog => &mut self.redolog,
        }
    }

    /// All sets recorded.
    pub fn total(&self) -> usize {
        self.full.recorded + self.redolog.recorded
    }

    /// The summary of `manifests` (every recorded set, each with its
    /// file's stamp) as of the `sets` directory's stamp `dir`.
    fn build(dir: FileStamp, manifests: &[(FileStamp, &Manifest)]) -> Summary {
        let mut s = Summary {
            dir,
            ..Summary::default()
        };
        for (_, m) in manifests {
            s.add(m);
        }
        let mut sorted: Vec<&(FileStamp, &Manifest)> = manifests.iter().collect();
        sorted.sort_by(|a, b| a.1.order_key().cmp(&b.1.order_key()));
        let skip = sorted.len().saturating_sub(TAIL);
        s.tail = sorted[skip..]
            .iter()
            .map(|(st, m)| TailEntry {
                id: m.id.clone(),
                stamp: st.clone(),
                tokens: codec::encode(m),
                order: order_of(m),
            })
            .collect();
        s
    }

    fn add(&mut self, m: &Manifest) {
        let c = self.count_mut(m.kind);
        c.recorded += 1;
        c.committed += usize::from(m.committed_at.is_some());
        for mem in &m.members {
            *self.roles.entry(mem.role.clone()).or_default() += 1;
        }
    }

    fn sub(&mut self, m: &Manifest) {
        let c = self.count_mut(m.kind);
        c.recorded = c.recorded.saturating_sub(1);
        c.committed = c
            .committed
            .saturating_sub(usize::from(m.committed_at.is_some()));
        for mem in &m.members {
            if let Some(n) = self.roles.get_mut(&mem.role) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// The tail's manifests that still have their recorded stamp (one
    /// `stat` each), newest first, decoded one by one as the caller takes
    /// them. `Err(id)` for one whose file changed or vanished: the caller
    /// falls back to reading every manifest.
    pub fn newest<'a>(
        &'a self,
        catalog: &'a Catalog,
    ) -> impl Iterator<Item = std::result::Result<Manifest, String>> + 'a {
        self.tail.iter().rev().map(move |e| {
            let fresh = std::fs::symlink_metadata(catalog.set_path(&e.id))
                .ok()
                .filter(|md| md.is_file())
                .is_some_and(|md| FileStamp::of(&md) == e.stamp);
            fresh
                .then(|| codec::decode(&e.tokens))
                .flatten()
                .filter(|m| m.id == e.id)
                .ok_or_else(|| e.id.clone())
        })
    }

    fn encode(&self) -> Option<String> {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(1024 + self.tail.len() * 600);
        let d = &self.dir;
        let _ = writeln!(out, "{MAGIC}");
        let _ = writeln!(out, "dir\t{}", stamp_text(d));
        for (k, c) in [("full", self.full), ("redolog", self.redolog)] {
            let _ = writeln!(out, "count\t{k}\t{}\t{}", c.recorded, c.committed);
        }
        for (r, n) in &self.roles {
            // Roles are checked names; one that would cut a line is not written.
            if r.is_empty() || r.contains(['\t', '\n', '\r']) {
                return None;
            }
            let _ = writeln!(out, "role\t{r}\t{n}");
        }
        for e in &self.tail {
            let (g, c, s) = e.order;
            let _ = writeln!(
                out,
                "set\t{}\t{}\t{g}\t{c}\t{s}\t{}",
                e.id,
                stamp_text(&e.stamp),
                e.tokens
            );
        }
        let _ = writeln!(out, "end\t{}", self.tail.len());
        Some(out)
    }

    /// A summary's text; `None` for anything malformed or cut.
    fn decode(text: &str) -> Option<Summary> {
        let mut s = Summary::default();
        let ended = decode_frame(text, MAGIC, |kind, f| {
            match kind {
                "dir" => s.dir = stamp_parse(f)?,
                "count" => {
                    let kind = match f.next()? {
                        "full" => SetKind::Full,
                        "redolog" => SetKind::Redolog,
                        _ => return None,
                    };
                    *s.count_mut(kind) = KindCount {
                        recorded: f.next()?.parse().ok()?,
                        committed: f.next()?.parse().ok()?,
                    };
                }
                "role" => {
                    let r = f.next()?.to_string();
                    s.roles.insert(r, f.next()?.parse().ok()?);
                }
                "set" => {
                    let id = f.next()?;
                    parse_set_id(id)?;
                    let stamp = stamp_parse(f)?;
                    let order = (
                        f.next()?.parse().ok()?,
                        f.next()?.parse().ok()?,
                        f.next()?.parse().ok()?,
                    );
                    // The manifest's tokens are the rest of the line.
                    let tokens = f.by_ref().collect::<Vec<_>>().join("\t");
                    if s.tail
                        .last()
                        .is_some_and(|p| (p.order, p.id.as_str()) >= (order, id))
                    {
                        return None;
                    }
                    s.tail.push(TailEntry {
                        id: id.to_string(),
                        stamp,
                        tokens,
                        order,
                    });
                }
                _ => return None,
            }
            Some(())
        })?;
        (ended == s.tail.len()).then_some(s)
    }
}

/// One record's fields after its kind (see [`decode_frame`]).
pub(super) type Fields<'a> = std::str::Split<'a, char>;

/// The frame both summaries (`sets.summary`, `verdicts.summary`) share:
/// `magic` on the first line, then records of tab-separated fields (the
/// first field names the record's kind), `end\t<count>` as the last line
/// and nothing after it. `record(kind, fields)` takes one record (not
/// `end`) and must take every field of it: a field left over, a record it
/// refuses (`None`), a missing magic or `end` make the text malformed.
/// Returns the count `end` states, for the caller to compare with the
/// records it took; `None` for a malformed or cut text.
pub(super) fn decode_frame<'a>(
    text: &'a str,
    magic: &str,
    mut record: impl FnMut(&'a str, &mut Fields<'a>) -> Option<()>,
) -> Option<usize> {
    let mut lines = text.lines();
    if lines.next()? != magic {
        return None;
    }
    let mut ended = None;
    for l in lines {
        if ended.is_some() {
            return None;
        }
        let mut f = l.split('\t');
        match f.next()? {
            "end" => ended = Some(f.next()?.parse::<usize>().ok()?),
            kind => record(kind, &mut f)?,
        }
        if f.next().is_some() {
            return None;
        }
    }
    ended
}

pub(super) fn stamp_text(s: &FileStamp) -> String {
    let (len, ino, m, c) = s.parts();
    format!("{len}\t{ino}\t{m}\t{c}")
}

pub(super) fn stamp_parse<'a>(f: &mut impl Iterator<Item = &'a str>) -> Option<FileStamp> {
    Some(FileStamp::from_parts(
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    ))
}

/// How the directory `name` of the catalog (`sets`, `verdicts`) is now
/// (`None`: it cannot be read, or is no directory). Its size is left out:
/// it says nothing a rename does not also say through the times, and
/// differs between file systems.
pub(super) fn dir_stamp(catalog: &Catalog, name: &str) -> Option<FileStamp> {
    std::fs::metadata(catalog.root.join(name))
        .ok()
        .filter(|md| md.is_dir())
        .map(|md| FileStamp::of(&md).without_len())
}

impl Catalog {
    fn summary_path(&self) -> PathBuf {
        self.root.join(FILE)
    }

    /// The summary, if there is one and it describes `sets/` as it is
    /// now (its stamp is the directory's); `None` otherwise.
    pub fn summary(&self) -> Option<Summary> {
        let text = std::fs::read_to_string(self.summary_path()).ok()?;
        let s = Summary::decode(&text)?;
        (dir_stamp(self, "sets")? == s.dir).then_some(s)
    }

    /// After a command read every manifest (`manifests`, with the
    /// directory's stamp `before` taken before it read): write the summary
    /// of what it read, unless the directory changed meanwhile or too
    /// recently to trust its stamp (see the module's doc). Best effort.
    pub fn summary_rebuilt(&self, before: Option<SetsDirStamp>, manifests: &[Manifest]) {
        self.summary_rebuilt_at(before, manifests, wall_ns());
    }

    /// [`Catalog::summary_rebuilt`] with the clock's time given (tests).
    fn summary_rebuilt_at(
        &self,
        before: Option<SetsDirStamp>,
        manifests: &[Manifest],
        wall_ns: i128,
    ) {
        let (Some(SetsDirStamp(before)), Some(now)) = (before, dir_stamp(self, "sets")) else {
            return;
        };
        if before != now || !settled(&now, wall_ns) {
            return;
        }
        let mut stamped = Vec::with_capacity(manifests.len());
        for m in manifests {
            let Some(st) = std::fs::symlink_metadata(self.set_path(&m.id))
                .ok()
                .filter(|md| md.is_file())
                .map(|md| FileStamp::of(&md))
            else {
                return;
            };
            stamped.push((st, m));
        }
        self.write_summary(&Summary::build(now, &stamped));
    }

    /// The `sets` directory's stamp now (for [`Catalog::summary_rebuilt`]).
    pub fn sets_dir_stamp(&self) -> Option<SetsDirStamp> {
        dir_stamp(self, "sets").map(SetsDirStamp)
    }

    /// Before a manifest is written or removed: the summary if it is
    /// valid, with the manifest it held under `id` (read from the tail, or
    /// from the file), so the change can be applied to it.
    pub(super) fn summary_before_change(&self, id: &str) -> Option<(Summary, Option<Manifest>)> {
        let s = self.summary()?;
        let path = self.set_path(id);
        let old = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(_) => return None,
            Ok(md) => {
                let st = FileStamp::of(&md);
                let from_tail = s
                    .tail
                    .iter()
                    .find(|e| e.id == id && e.stamp == st)
                    .and_then(|e| codec::decode(&e.tokens));
                match from_tail {
                    Some(m) => Some(m),
                    None => Some(super::read_json::<Manifest>(&path).ok()?),
                }
            }
        };
        Some((s, old))
    }

    /// After the change: `new` is the manifest now under `id` (`None`:
    /// removed). The summary was valid before it (the caller holds the
    /// site lock), so this one is valid after it.
    pub(super) fn summary_after_change(
        &self,
        before: Option<(Summary, Option<Manifest>)>,
        id: &str,
        new: Option<&Manifest>,
    ) {
        let Some((mut s, old)) = before else {
            return;
        };
        let Some(dir) = dir_stamp(self, "sets") else {
            return;
        };
        if let Some(o) = &old {
            s.sub(o);
        }
        s.tail.retain(|e| e.id != id);
        if let Some(m) = new {
            s.add(m);
            let Some(stamp) = std::fs::symlink_metadata(self.set_path(id))
                .ok()
                .map(|md| FileStamp::of(&md))
            else {
                return;
            };
            let order = order_of(m);
            // The tail stays a suffix of the catalog: a set goes in when it
            // is newer than the tail's first entry, or when the tail holds
            // every other set.
            let key = |e: &TailEntry| (e.order, e.id.clone());
            let mine = (order, id.to_string());
            let fits =
                s.tail.first().is_some_and(|f| mine > key(f)) || s.tail.len() + 1 == s.total();
            if fits {
                let at = s.tail.partition_point(|e| key(e) < mine);
                s.tail.insert(
                    at,
                    TailEntry {
                        id: id.to_string(),
                        stamp,
                        tokens: codec::encode(m),
                        order,
                    },
                );
                let skip = s.tail.len().saturating_sub(TAIL);
                s.tail.drain(..skip);
            }
        }
        if s.tail.is_empty() && s.total() > 0 {
            // Nothing left to answer from: the next command rebuilds it.
            let _ = std::fs::remove_file(self.summary_path());
            return;
        }
        s.dir = dir;
        self.write_summary(&s);
    }

    fn write_summary(&self, s: &Summary) {
        let Some(text) = s.encode() else {
            return;
        };
        self.remove_stale_summary_temps();
        write_cache(&self.summary_path(), text.as_bytes());
    }
}

/// Write a cache file (`sets.summary`, `standby.head.json`): a temp file
/// `.<name>.tmp.<pid>` beside it, renamed over it, without fsync (a cache
/// lost or left stale by a crash is rebuilt; its readers check it against
/// what it describes). A failure leaves no temp file and is only logged.
pub(super) fn write_cache(path: &std::path::Path, bytes: &[u8]) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(error = %e, "{} not written (it is a cache)", path.display());
    }
}

impl Catalog {
    /// Remove the temp files a summary writer killed midway left
    /// (`.sets.summary.tmp.<pid>`, `.verdicts.summary.tmp.<pid>`): see
    /// [`remove_stale_temps`].
    pub(super) fn remove_stale_summary_temps(&self) {
        remove_stale_temps(
            &self.root,
            &[FILE, super::verdict_summary::FILE],
            std::time::SystemTime::now(),
        );
    }
}

/// Remove from `dir` the temp files `.<name>.tmp.<pid>` of a writer of one
/// of `names` killed midway (by [`write_cache`] or `write_atomic`): those
/// of a process that is gone, or older than [`STALE_TEMP`] (its pid may be
/// another process's by now). Never this process's own, nor one of a live
/// process younger than that: a writer at work. Best effort.
pub(super) fn remove_stale_temps(
    dir: &std::path::Path,
    names: &[&str],
    now: std::time::SystemTime,
) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for ent in rd.flatten() {
        let name = ent.file_name();
        let Some(pid) = name.to_str().and_then(|n| temp_pid(n, names)) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let old = ent
            .metadata()
            .ok()
            .and_then(|md| md.modified().ok())
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > STALE_TEMP);
        if old || !process_alive(pid) {
            let _ = std::fs::remove_file(ent.path());
        }
    }
}

/// A writer's temp file older than this is left over whatever its pid.
pub const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The writer's pid of the temp file name `name` of one of `names`.
fn temp_pid(name: &str, names: &[&str]) -> Option<u32> {
    let rest = names.iter().find_map(|f| {
        name.strip_prefix('.')?
            .strip_prefix(f)?
            .strip_prefix(".tmp.")
    })?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok().filter(|&p| p > 0)
}

/// Whether a process with this pid exists (`kill(pid, 0)`: EPERM means it
/// exists, owned by someone else).
fn process_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None) {
        Ok(()) => true,
        Err(e) => e != nix::errno::Errno::ESRCH,
    }
}

/// Did the directory change more than [`SETTLED`] ago (by the system
/// clock, which also dates the directory's changes)?
pub(super) fn settled(dir: &FileStamp, now: i128) -> bool {
    let (_, _, m, c) = dir.parts();
    now - m.max(c) > SETTLED.as_nanos() as i128
}

pub(super) fn wall_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

#[cfg(test)]
mod tests;
