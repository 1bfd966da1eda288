//! `state_dir/sets.index`: every manifest of `sets/` again, one line each,
//! so that listing the catalog costs one file read and one `stat` per set
//! instead of a JSON parse per set.
//!
//! A line is `id, the manifest file's stamp (size, inode, mtime, ctime),
//! the manifest, $` in tab-separated tokens (see [`codec`]). The file is
//! appended to: `write_manifest` appends the line of the manifest it has
//! just written (so the command after a commit parses no JSON), and a command that finds a manifest the index lacks (or
//! whose file changed) parses the file and appends its line. A later line
//! for an id replaces an earlier one; lines of removed sets stay until the
//! dead lines outnumber the live ones (plus a margin), when the index is
//! rewritten with one line per set (compaction: amortized, a constant
//! share of the lines appended).
//!
//! A command that needs only where each set stands — `ship`'s plan,
//! `serve`'s welcome and commit — reads the sets' heads
//! ([`Catalog::set_heads`]: id, kind, sequence, generation, commit time
//! and order) from each line's first tokens, and the whole manifest of
//! the few sets it acts on from their files. Within one process the index
//! is read once: what was read is remembered with the index file's stamp,
//! and read again only when a set is new to the process or its file
//! changed.
//!
//! It is a cache: an entry counts only while its manifest file still has
//! the stamp it was read with, a cut line (a kill during an append) never
//! decodes, and a missing, damaged or unwritable index only costs the
//! parses. It is written only by this site, from manifests it wrote or
//! read and checked itself; nothing from the peer reaches it but through a
//! committed manifest file. A compaction writes an anonymous file
//! (`O_TMPFILE`) and links it to `.sets.index.tmp` only to rename it over
//! the index: a kill while it writes leaves nothing, and the name left by
//! a kill between the link and the rename is removed by the next command.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Catalog, read_json};
use crate::base::error::{Context, Error, Result};
use crate::base::model::{Manifest, is_set_id};

/// A manifest as this process last read it, with the stamp of its file:
/// its head always, the whole manifest once a command wanted it.
#[derive(Debug)]
struct CachedManifest {
    stamp: FileStamp,
    head: SetHead,
    manifest: Option<Manifest>,
    /// `sets.index` has its line (with this stamp).
    indexed: bool,
}

/// What a set's manifest says of its place in the catalog, without its
/// members: what `ship` plans from (which sets the standby lacks), what
/// `serve` answers (which sets it holds) and what a commit ranks by. Read
/// from the first tokens of the set's line in `sets.index` (see
/// [`codec::decode_head`]) while its manifest file keeps the stamp the
/// line records; a set whose whole manifest a command needs is read with
/// [`Catalog::manifest`].
#[derive(Debug, Clone, PartialEq)]
pub struct SetHead {
    pub id: String,
    pub kind: crate::base::model::SetKind,
    pub seq: u64,
    pub generation: u64,
    pub committed_at: Option<jiff::Timestamp>,
    pub standby_order: Option<crate::base::model::StandbyOrder>,
}

impl SetHead {
    pub fn of(m: &Manifest) -> SetHead {
        SetHead {
            id: m.id.clone(),
            kind: m.kind,
            seq: m.seq,
            generation: m.generation,
            committed_at: m.committed_at,
            standby_order: m.standby_order,
        }
    }

    /// The set's manifest's [`Manifest::order_key`].
    pub fn order_key(&self) -> (u64, u64, u64, &str) {
        crate::base::model::order_key_of(self.standby_order, self.generation, self.seq, &self.id)
    }
}

/// What says a file is still the one that was read: every rewrite
/// (temp file and rename) makes a new inode with new times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FileStamp {
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    /// (size, inode, mtime, ctime), times in nanoseconds.
    pub(super) fn parts(&self) -> (u64, u64, i128, i128) {
        (self.len, self.ino, self.mtime_ns, self.ctime_ns)
    }

    pub(super) fn from_parts(len: u64, ino: u64, mtime_ns: i128, ctime_ns: i128) -> FileStamp {
        FileStamp {
            len,
            ino,
            mtime_ns,
            ctime_ns,
        }
    }

    /// The stamp without the size (of a directory: see `summary`).
    pub(super) fn without_len(self) -> FileStamp {
        FileStamp { len: 0, ..self }
    }

    pub(super) fn of(md: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            len: md.len(),
            ino: md.ino(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
            ctime_ns: i128::from(md.ctime()) * 1_000_000_000 + i128::from(md.ctime_nsec()),
        }
    }
}

/// Per state_dir, the manifests as this process last read them (checked
/// against the files before every use: see [`Catalog::manifests`]).
type ManifestCache = BTreeMap<PathBuf, ProcessMemo>;
static MANIFEST_CACHE: std::sync::Mutex<ManifestCache> = std::sync::Mutex::new(BTreeMap::new());

/// What this process remembers of one state_dir's catalog.
#[derive(Debug, Default)]
struct ProcessMemo {
    sets: BTreeMap<String, CachedManifest>,
    /// `sets.index` as this process last read or wrote it: while the file
    /// keeps this stamp and every set is remembered, the next read of the
    /// catalog does not read the index again (a set it does not remember,
    /// or whose file changed, makes it read the index).
    index: Option<(FileStamp, usize)>,
}

/// The name a compacted index has between its link and its rename.
pub(super) const TMP_NAME: &str = ".sets.index.tmp";

/// Dead lines (of removed or rewritten manifests, or damaged) tolerated
/// beyond one per live set before the index is compacted.
const DEAD_MARGIN: usize = 64;

impl Catalog {
    /// All manifests, oldest first. A manifest that does not parse is an
    /// error naming the file: it is never silently skipped.
    ///
    /// Each manifest file is parsed once, ever: its line in `sets.index`
    /// (see the module's doc) is used while the file keeps the stamp the
    /// line records. A file the index lacks, or whose stamp differs, is
    /// read and checked as ever and its line appended. Within one process,
    /// what was read is also remembered, checked the same way.
    pub fn manifests(&self) -> Result<Vec<Manifest>> {
        Ok(self.read_sets(true)?.1)
    }

    /// Every recorded set's [`SetHead`], in the catalog's order (that of
    /// [`Catalog::manifests`]): the same files, stamps and index lines, but
    /// of an indexed set only the line's first tokens are decoded — none
    /// of its members — and nothing is copied but the head. A set whose
    /// line is missing or stale is read and checked whole, as `manifests`
    /// does (a manifest that does not parse is the same error).
    pub fn set_heads(&self) -> Result<Vec<SetHead>> {
        Ok(self.read_sets(false)?.0)
    }

    /// Every set's head, or when `whole` every manifest (in the catalog's
    /// order; the other one empty).
    fn read_sets(&self, whole: bool) -> Result<(Vec<SetHead>, Vec<Manifest>)> {
        let dir = self.root.join("sets");
        let mut heads = Vec::new();
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((heads, out)),
            Err(e) => return Err(Error::io(format!("read {}", dir.display()), e)),
        };
        let ProcessMemo {
            sets: mut old,
            index: memo,
        } = MANIFEST_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.root)
            .unwrap_or_default();
        // A compaction killed between its link and its rename left this.
        let _ = std::fs::remove_file(self.root.join(TMP_NAME));
        // The index as this process left it: read only when a set needs it.
        let index_path = self.set_index_path();
        let memo = memo.filter(|(st, _)| {
            std::fs::metadata(&index_path).is_ok_and(|md| FileStamp::of(&md) == *st)
        });
        let index_text = std::cell::OnceCell::new();
        let index_cell = std::cell::OnceCell::new();
        let index = || {
            index_cell.get_or_init(|| {
                codec::parse(
                    index_text
                        .get_or_init(|| std::fs::read_to_string(&index_path).unwrap_or_default()),
                )
            })
        };
        if memo.is_none() {
            index();
        }
        let mut fresh: BTreeMap<String, CachedManifest> = BTreeMap::new();
        let mut new_lines = String::new();
        let mut new_count = 0;
        // The tokens of a set's line in the index, if that has its stamp.
        fn line<'a>(
            ix: &Option<codec::Index<'a>>,
            id: &str,
            stamp: Option<&FileStamp>,
        ) -> Option<&'a str> {
            ix.as_ref()?
                .entries
                .get(id)
                .filter(|e| stamp == Some(&e.stamp))
                .map(|e| e.manifest)
        }
        for ent in rd {
            // (format_args!: the message is made only on an error, this
            // runs once a set)
            let ent = ent.ctx(format_args!("read {}", dir.display()))?;
            let name = ent.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            // A name this process or the index has seen with this stamp
            // was checked then (only set ids get there): parsing a set
            // id's time is most of what a remembered set costs.
            let stamp = ent
                .metadata()
                .ok()
                .filter(|md| md.is_file())
                .map(|md| FileStamp::of(&md));
            // The set's line, if the index was read: looked up once, for
            // the three questions below (nothing reads the index between).
            let ix_line = index_cell.get().map(|ix| line(ix, id, stamp.as_ref()));
            let vouched = |stamp: Option<&FileStamp>| {
                stamp.is_some()
                    && (old.get(id).is_some_and(|e| Some(&e.stamp) == stamp)
                        || ix_line.is_some_and(|l| l.is_some()))
            };
            if !vouched(stamp.as_ref()) && !is_set_id(id) {
                continue;
            }
            // What this process read before, while the file kept its
            // stamp, and had read whole if the whole is wanted now.
            let cached = old.remove(id).filter(|e| {
                stamp.is_some()
                    && stamp.as_ref() == Some(&e.stamp)
                    && (!whole || e.manifest.is_some())
            });
            let entry = match cached {
                // Still indexed, unless the index was read and lacks it.
                Some(mut e) => {
                    if let Some(l) = ix_line {
                        e.indexed = l.is_some();
                    }
                    e
                }
                None => {
                    let tokens = match ix_line {
                        Some(l) => l,
                        None => line(index(), id, stamp.as_ref()),
                    };
                    let from_line = tokens.and_then(|tokens| {
                        let stamp = stamp.clone().unwrap_or_default();
                        if whole {
                            let m = codec::decode(tokens).filter(|m| m.id == id)?;
                            Some(CachedManifest {
                                stamp,
                                head: SetHead::of(&m),
                                manifest: Some(m),
                                indexed: true,
                            })
                        } else {
                            let head = codec::decode_head(tokens).filter(|h| h.id == id)?;
                            Some(CachedManifest {
                                stamp,
                                head,
                                manifest: None,
                                indexed: true,
                            })
                        }
                    });
                    match from_line {
                        Some(e) => e,
                        None => {
                            let m: Manifest = read_json(&ent.path())?;
                            if m.id != id {
                                return Err(Error::integrity(format!(
                                    "{} holds the manifest of set {}",
                                    ent.path().display(),
                                    m.id
                                )));
                            }
                            // Stamped before the read: a file replaced while
                            // it was read is read again next time.
                            CachedManifest {
                                stamp: stamp.unwrap_or_default(),
                                head: SetHead::of(&m),
                                manifest: Some(m),
                                indexed: false,
                            }
                        }
                    }
                }
            };
            let mut entry = entry;
            // Not a regular file when read: never indexed.
            if !entry.indexed && entry.stamp != FileStamp::default() {
                if let Some(m) = &entry.manifest {
                    codec::push_line(&mut new_lines, id, &entry.stamp, m);
                    new_count += 1;
                    entry.indexed = true;
                }
            }
            // Heads or manifests, whichever was asked for (not both).
            if whole {
                out.push(
                    entry
                        .manifest
                        .clone()
                        .expect("read whole when wanted whole"),
                );
            } else {
                heads.push(entry.head.clone());
            }
            fresh.insert(id.to_string(), entry);
        }
        // The index's lines: as read, or as this process last knew them.
        let lines = match index_cell.get() {
            Some(ix) => ix.as_ref().map(|ix| ix.lines),
            None => memo.as_ref().map(|(_, n)| *n),
        };
        let lines = match lines {
            Some(n) if n + new_count <= 2 * fresh.len() + DEAD_MARGIN => {
                if !new_lines.is_empty() {
                    self.append_index(&new_lines);
                }
                n + new_count
            }
            _ => {
                self.compact_index(&fresh, index().as_ref());
                fresh.values().filter(|e| e.indexed).count()
            }
        };
        // Remembered with the index's stamp now (this process's appends
        // included; one by another process meanwhile is found by the set
        // it adds, which this process does not remember).
        let index = std::fs::metadata(&index_path)
            .ok()
            .map(|md| (FileStamp::of(&md), lines));
        MANIFEST_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.root.clone(), ProcessMemo { sets: fresh, index });
        // Order by sequence, never by the clock (ids agree for sets taken
        // by this version: they are a logical clock).
        heads.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        out.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        Ok((heads, out))
    }

    pub(super) fn set_index_path(&self) -> PathBuf {
        self.root.join("sets.index")
    }

    /// After `write_manifest`: the manifest's line, appended (to a new
    /// index if there is none: the others' lines are appended by the next
    /// `manifests`, which finds them missing).
    pub(super) fn index_written(&self, path: &Path, m: &Manifest) {
        let Ok(md) = std::fs::metadata(path) else {
            return;
        };
        let mut line = String::with_capacity(512);
        codec::push_line(&mut line, &m.id, &FileStamp::of(&md), m);
        self.append_index(&line);
    }

    /// Append `lines` in one write (to a new index if there is none). A
    /// cache: a failure is logged, never an error of the command. A last
    /// line left cut by a kill is ended first (it stays a line that does
    /// not decode).
    fn append_index(&self, lines: &str) {
        use std::os::unix::fs::FileExt;
        let path = self.set_index_path();
        let append = || -> std::io::Result<()> {
            let f = std::fs::OpenOptions::new()
                .append(true)
                .read(true)
                .open(&path)?;
            let len = f.metadata()?.len();
            let mut last = [b'\n'];
            if len > 0 {
                f.read_exact_at(&mut last, len - 1)?;
            }
            let mut buf = Vec::with_capacity(lines.len() + 1);
            if last[0] != b'\n' {
                buf.push(b'\n');
            }
            buf.extend_from_slice(lines.as_bytes());
            (&f).write_all(&buf)
        };
        let create = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.write_all(format!("{}\n{lines}", codec::MAGIC).as_bytes())
        };
        let appended = match append() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create() {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => append(),
                r => r,
            },
            r => r,
        };
        if let Err(e) = appended {
            tracing::debug!(error = %e, "sets.index not appended to (it is a cache)");
        }
    }

    /// Rewrite `sets.index` with one line per set just read (lines of the
    /// old index whose stamp still holds are copied as they are).
    fn compact_index(&self, fresh: &BTreeMap<String, CachedManifest>, old: Option<&codec::Index>) {
        let mut text = String::with_capacity(64 + fresh.len() * 512);
        text.push_str(codec::MAGIC);
        text.push('\n');
        for (id, e) in fresh {
            if e.stamp == FileStamp::default() {
                continue;
            }
            match (
                old.and_then(|o| o.entries.get(id.as_str()))
                    .filter(|o| o.stamp == e.stamp),
                &e.manifest,
            ) {
                (Some(o), _) => codec::push_tokens(&mut text, id, &e.stamp, o.manifest),
                (None, Some(m)) => codec::push_line(&mut text, id, &e.stamp, m),
                // Only its head was read (from a line no longer there): the
                // next command that wants it whole reads the file.
                (None, None) => {}
            }
        }
        if let Err(e) = self.replace_index(text.as_bytes()) {
            tracing::debug!(error = %e, "sets.index not rewritten (it is a cache)");
        }
    }

    /// `text` as the whole index: written to an anonymous file, linked to
    /// [`TMP_NAME`] and renamed over the index (a file system without
    /// `O_TMPFILE` writes the named file directly).
    fn replace_index(&self, text: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.root.join(TMP_NAME);
        let anonymous = std::fs::OpenOptions::new()
            .write(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_TMPFILE)
            .open(&self.root);
        let (mut f, named) = match anonymous {
            Ok(f) => (f, false),
            Err(_) => (std::fs::File::create(&tmp)?, true),
        };
        let written = (|| -> std::io::Result<()> {
            f.write_all(text)?;
            f.sync_data()?;
            if !named {
                let fd = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
                nix::unistd::linkat(
                    None,
                    fd.as_path(),
                    None,
                    tmp.as_path(),
                    nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
                )?;
            }
            std::fs::rename(&tmp, self.set_index_path())
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Forget what this process remembers of the manifests (tests: a new
    /// process).
    #[cfg(test)]
    pub(super) fn forget_process_cache(&self) {
        MANIFEST_CACHE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.root);
    }
}

/// The index's lines: strings `=`-prefixed and escaped, `~` for none and
/// `+` before an option's value, numbers in decimal, times as integer
/// nanoseconds; no JSON, no RFC 3339. Each record type's fields are listed
/// once, in [`record!`], which makes both its encoder and its decoder.
pub(super) mod codec {
    use std::collections::HashMap;
    use std::fmt::Write as _;
    use std::hash::{BuildHasher, Hasher};

    use jiff::Timestamp;

    use super::FileStamp;
    use crate::base::model::{Consistency, Manifest, Member, Receipt, SetKind, StandbyOrder};

    /// The first line. Version 2: an option's `+` also before a member's
    /// consistency (version 1 files are rebuilt).
    pub const MAGIC: &str = "snapsite-sets-index 2";
    const END: &str = "$";

    pub struct Entry<'a> {
        pub stamp: FileStamp,
        /// The manifest's tokens, undecoded until used.
        pub manifest: &'a str,
    }

    /// The last line of each set id.
    pub struct Entries<'a>(HashMap<&'a str, Entry<'a>, IdHashing>);

    impl<'a> Entries<'a> {
        pub fn get(&self, id: &str) -> Option<&Entry<'a>> {
            self.0.get(id)
        }

        /// How many ids have a line.
        #[cfg(test)]
        pub fn len(&self) -> usize {
            self.0.len()
        }

        /// Every id with its entry, in no order.
        #[cfg(test)]
        pub fn iter(&self) -> impl Iterator<Item = (&&'a str, &Entry<'a>)> {
            self.0.iter()
        }
    }

    /// The hash of an id in [`Entries`]: eight bytes a step (FxHash's
    /// step) from a seed drawn once per process, and splitmix64's
    /// finalizer, so that ids differing in a few digits spread over the
    /// table. Not SipHash, which hashing every id twice made a tenth of a
    /// no-change ship: the keys are this site's own set ids (ids a
    /// primary chose reach it only through committed manifests, whose
    /// names are checked set ids), and the seed keeps collisions from
    /// being computed ahead (a slower lookup is all they could cause).
    #[derive(Clone)]
    pub struct IdHashing(u64);

    impl IdHashing {
        fn new() -> IdHashing {
            static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
            IdHashing(
                *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0u64)),
            )
        }
    }

    impl BuildHasher for IdHashing {
        type Hasher = IdHasher;

        fn build_hasher(&self) -> IdHasher {
            IdHasher(self.0)
        }
    }

    pub struct IdHasher(u64);

    impl Hasher for IdHasher {
        fn write(&mut self, bytes: &[u8]) {
            for chunk in bytes.chunks(8) {
                let mut w = [0u8; 8];
                w[..chunk.len()].copy_from_slice(chunk);
                self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w))
                    .wrapping_mul(0x517c_c1b7_2722_0a95);
            }
        }

        fn finish(&self) -> u64 {
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    pub struct Index<'a> {
        /// The last line of each set id.
        pub entries: Entries<'a>,
        /// Lines after the first, whatever they hold.
        pub lines: usize,
    }

    /// An index file's entries; `None` when its first line is not
    /// [`MAGIC`]. A line that does not split is left out (and counted).
    ///
    /// Lines are what [`str::lines`] makes of the text (split at `\n`, a
    /// `\r` before it dropped), a line's fields what `splitn(6, '\t')`
    /// makes of it and each stamp number what `str::parse` accepts: the
    /// parser this one replaced, kept in the tests as the reference the
    /// two are compared with on cut and damaged files. This one finds the
    /// line ends with `memchr` (most of the text is the manifests' tokens,
    /// which only the sets a command uses decode) and reads a number of
    /// plain digits by hand, leaving anything else (a sign, more than 19
    /// digits) to `str::parse`.
    pub fn parse(text: &str) -> Option<Index<'_>> {
        let mut lines = Lines(text);
        if lines.next() != Some(MAGIC) {
            return None;
        }
        let mut all = Vec::new();
        let mut count = 0;
        for l in lines {
            count += 1;
            if let Some(e) = split_line(l) {
                all.push(e);
            }
        }
        // A later line of an id replaces an earlier one.
        let mut entries = HashMap::with_capacity_and_hasher(all.len(), IdHashing::new());
        entries.extend(all);
        Some(Index {
            entries: Entries(entries),
            lines: count,
        })
    }

    /// [`str::lines`], with the line ends found by `memchr`.
    struct Lines<'a>(&'a str);

    impl<'a> Iterator for Lines<'a> {
        type Item = &'a str;

        fn next(&mut self) -> Option<&'a str> {
            if self.0.is_empty() {
                return None;
            }
            let Some(end) = memchr::memchr(b'\n', self.0.as_bytes()) else {
                // The last line, unended: kept as it is (a `\r` too).
                return Some(std::mem::take(&mut self.0));
            };
            // (`\n` is one byte: both cuts fall on char boundaries)
            let (line, rest) = (&self.0[..end], &self.0[end + 1..]);
            self.0 = rest;
            Some(line.strip_suffix('\r').unwrap_or(line))
        }
    }

    /// One line's id, stamp and manifest tokens: `splitn(6, '\t')`'s
    /// pieces, the four numbers parsed; `None` as soon as one is missing
    /// or does not parse.
    fn split_line(l: &str) -> Option<(&str, Entry<'_>)> {
        let b = l.as_bytes();
        let tab = memchr::memchr(b'\t', b)?;
        let id = &l[..tab];
        let mut at = tab + 1;
        let len = number::<u64>(l, &mut at)?;
        let ino = number::<u64>(l, &mut at)?;
        let mtime_ns = number::<i128>(l, &mut at)?;
        let ctime_ns = number::<i128>(l, &mut at)?;
        Some((
            id,
            Entry {
                stamp: FileStamp {
                    len,
                    ino,
                    mtime_ns,
                    ctime_ns,
                },
                manifest: &l[at..],
            },
        ))
    }

    /// The field of `l` at `*at`, up to the next tab (which must be
    /// there: a manifest follows every number), parsed as `str::parse`
    /// would; `*at` moved past the tab.
    fn number<T: std::str::FromStr + From<u64>>(l: &str, at: &mut usize) -> Option<T> {
        let b = &l.as_bytes()[*at..];
        // Plain digits, at most 19 (below u64::MAX, so no overflow): what
        // every stamp this version writes is, and parse would take.
        let (mut digits, mut v) = (0, 0u64);
        while let Some(d) = b
            .get(digits)
            .map(|c| c.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
        {
            if digits == 19 {
                break;
            }
            v = v * 10 + u64::from(d);
            digits += 1;
        }
        if digits > 0 && b.get(digits) == Some(&b'\t') {
            *at += digits + 1;
            return Some(T::from(v));
        }
        // Anything else (a sign, leading zeros beyond 19 digits, not a
        // number): the field as `splitn` cuts it, and `parse`.
        let tab = memchr::memchr(b'\t', b)?;
        let v = l[*at..*at + tab].parse().ok()?;
        *at += tab + 1;
        Some(v)
    }

    /// One line with `m` encoded.
    pub fn push_line(out: &mut String, id: &str, s: &FileStamp, m: &Manifest) {
        push_tokens(out, id, s, &encode(m));
    }

    /// One line with a manifest's tokens as they are.
    pub fn push_tokens(out: &mut String, id: &str, s: &FileStamp, tokens: &str) {
        let _ = writeln!(
            out,
            "{id}\t{}\t{}\t{}\t{}\t{tokens}",
            s.len, s.ino, s.mtime_ns, s.ctime_ns
        );
    }

    pub struct Enc(String);

    impl Enc {
        fn tok(&mut self, v: impl std::fmt::Display) {
            if !self.0.is_empty() {
                self.0.push('\t');
            }
            let _ = write!(self.0, "{v}");
        }
    }

    /// A line's tokens, as `split('\t')` gives them (the text after the
    /// last tab the last one, then `None`), found by a byte loop: tokens
    /// are short, and a `memchr` call a token cost more than its scan.
    pub struct Dec<'a>(Option<&'a str>);

    impl<'a> Dec<'a> {
        pub fn new(tokens: &'a str) -> Dec<'a> {
            Dec(Some(tokens))
        }

        pub fn tok(&mut self) -> Option<&'a str> {
            let rest = self.0?;
            match rest.bytes().position(|c| c == b'\t') {
                // (a tab is one byte: both cuts fall on char boundaries)
                Some(i) => {
                    self.0 = Some(&rest[i + 1..]);
                    Some(&rest[..i])
                }
                None => {
                    self.0 = None;
                    Some(rest)
                }
            }
        }
    }

    /// A value's tokens.
    pub trait Field: Sized {
        fn enc(&self, e: &mut Enc);
        fn dec(d: &mut Dec<'_>) -> Option<Self>;
    }

    macro_rules! number {
        ($($t:ty),*) => {$(
            impl Field for $t {
                fn enc(&self, e: &mut Enc) {
                    e.tok(self);
                }
                fn dec(d: &mut Dec<'_>) -> Option<Self> {
                    d.tok()?.parse().ok()
                }
            }
        )*};
    }
    number!(u32, u64, i64, usize);

    impl Field for String {
        fn enc(&self, e: &mut Enc) {
            e.tok('=');
            for c in self.chars() {
                match c {
                    '\\' => e.0.push_str("\\\\"),
                    '\t' => e.0.push_str("\\t"),
                    '\n' => e.0.push_str("\\n"),
                    '\r' => e.0.push_str("\\r"),
                    c => e.0.push(c),
                }
            }
        }
        fn dec(d: &mut Dec<'_>) -> Option<Self> {
            let t = d.tok()?.strip_prefix('=')?;
            if !t.contains('\\') {
                return Some(t.to_string());
            }
            let mut out = String::with_capacity(t.len());
            let mut it = t.chars();
            while let Some(c) = it.next() {
                out.push(match c {
                    '\\' => match it.next()? {
                        '\\' => '\\',
                        't' => '\t',
                        'n' => '\n',
                        'r' => '\r',
                        _ => return None,
                    },
                    c => c,
                });
            }
            Some(out)
        }
    }

    impl Field for Timestamp {
        fn enc(&self, e: &mut Enc) {
            e.tok(self.as_nanosecond());
        }
        fn dec(d: &mut Dec<'_>) -> Option<Self> {
            Timestamp::from_nanosecond(d.tok()?.parse().ok()?).ok()
        }
    }

    impl<T: Field> Field for Option<T> {
        fn enc(&self, e: &mut Enc) {
            match self {
                None => e.tok('~'),
                Some(v) => {
                    e.tok('+');
                    v.enc(e);
                }
            }
        }
        fn dec(d: &mut Dec<'_>) -> Option<Self> {
            match d.tok()? {
                "~" => Some(None),
                "+" => Some(Some(T::dec(d)?)),
                _ => None,
            }
        }
    }

    impl<T: Field> Field for Vec<T> {
        fn enc(&self, e: &mut Enc) {
            self.len().enc(e);
            for v in self {
                v.enc(e);
            }
        }
        fn dec(d: &mut Dec<'_>) -> Option<Self> {
            let n = usize::dec(d)?;
            // Bounded by the line's tokens, not by what the count claims.
            let mut out = Vec::with_capacity(n.min(64));
            for _ in 0..n {
                out.push(T::dec(d)?);
            }
            Some(out)
        }
    }

    impl Field for SetKind {
        fn enc(&self, e: &mut Enc) {
            e.tok(self.as_str());
        }
        fn dec(d: &mut Dec<'_>) -> Option<Self> {
            match d.tok()? {
                "full" => Some(SetKind::Full),
                "redolog" => Some(SetKind::Redolog),
                _ => None,
            }
        }
    }

    impl Field for Consistency {
        fn enc(&self, e: &mut Enc) {
            match self {
                Consistency::Quiesced => e.tok('q'),
                Consistency::CrashConsistent { reason } => {
                    e.tok('c');
                    reason.enc(e);
                }
            }
        }
        fn dec(d: &mut Dec<'_>) -> Option<Self> {
            match d.tok()? {
                "q" => Some(Consistency::Quiesced),
                "c" => Some(Consistency::CrashConsistent {
                    reason: String::dec(d)?,
                }),
                _ => None,
            }
        }
    }

    /// A struct's fields, in this order, each as its own type's tokens.
    /// The encoder takes the struct apart without `..`: a field added to
    /// the type fails to compile here until the index carries it.
    macro_rules! record {
        ($t:ident { $($f:ident),* $(,)? }) => {
            impl Field for $t {
                fn enc(&self, e: &mut Enc) {
                    let $t { $($f),* } = self;
                    $( $f.enc(e); )*
                }
                fn dec(d: &mut Dec<'_>) -> Option<Self> {
                    // Struct fields are evaluated in the order written.
                    Some($t { $($f: Field::dec(d)?),* })
                }
            }
        };
    }
    record!(Manifest {
        format,
        id,
        kind,
        site,
        seq,
        generation,
        safety_margin_ms,
        committed_at,
        standby_order,
        members,
    });
    record!(StandbyOrder { generation, commit });
    record!(Member {
        role,
        backend,
        source,
        snapshot,
        storage_id,
        before,
        after,
        atomic_group,
        send_options,
        receipt,
        consistency,
    });
    record!(Receipt {
        base,
        bytes,
        blake3,
        received_at,
        storage_id,
        set_id,
        sender_storage_id,
    });

    /// A manifest's tokens, ending in `$`: a line cut anywhere (even
    /// inside a string) never decodes.
    pub fn encode(m: &Manifest) -> String {
        let mut e = Enc(String::with_capacity(512));
        m.enc(&mut e);
        e.tok(END);
        e.0
    }

    /// The head of one line's tokens: the manifest's fields before its
    /// members, in [`record!`]'s order for `Manifest` (a test checks the
    /// two agree). The members are not decoded, but the line must end in
    /// its `$` token: a line cut anywhere (a number cut short would still
    /// parse) never gives a head. Only `$` itself is that token (a string
    /// starts with `=`, and a tab inside one is escaped). `None` when
    /// the head's tokens are malformed.
    pub fn decode_head(tokens: &str) -> Option<super::SetHead> {
        // (`$` after a tab; no string made for the test, once a set)
        if !tokens.strip_suffix(END).is_some_and(|t| t.ends_with('\t')) {
            return None;
        }
        let mut d = Dec::new(tokens);
        let _format = u32::dec(&mut d)?;
        let id = String::dec(&mut d)?;
        let kind = SetKind::dec(&mut d)?;
        // The site: checked for its form, not copied.
        d.tok()?.strip_prefix('=')?;
        let seq = u64::dec(&mut d)?;
        let generation = u64::dec(&mut d)?;
        let _safety_margin_ms = i64::dec(&mut d)?;
        let committed_at = Option::<Timestamp>::dec(&mut d)?;
        let standby_order = Option::<StandbyOrder>::dec(&mut d)?;
        Some(super::SetHead {
            id,
            kind,
            seq,
            generation,
            committed_at,
            standby_order,
        })
    }

    /// The manifest of one line's tokens; `None` for anything malformed
    /// (including tokens left over).
    pub fn decode(tokens: &str) -> Option<Manifest> {
        let mut d = Dec::new(tokens);
        let m = Manifest::dec(&mut d)?;
        (d.tok() == Some(END) && d.tok().is_none()).then_some(m)
    }
}
