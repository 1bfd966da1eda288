//! The spool's journal on disk: self-checking records (a base, batches),
//! read one at a time ([`RecordReader`]); the items' bytes stay in the
//! file and are read when needed ([`JournalFile`]); written whole
//! (a checkpoint) or appended to (a batch).

use super::*;

// ---------------------------------------------------------------------------
// The spool: journal records on disk, the virtual state in memory.

/// A batch or a base as recorded in the journal (its data follows it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "rec", rename_all = "snake_case")]
pub(crate) enum RecordMeta {
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
pub(crate) struct BaseMeta {
    pub(crate) file: String,
    pub(crate) size: u64,
    pub(crate) tail_len: u64,
}

pub(crate) fn encode_record(meta: &RecordMeta, data: &[u8]) -> Vec<u8> {
    encode_record_at(meta, data).0
}

/// A record, and where its data starts in it.
pub(crate) fn encode_record_at(meta: &RecordMeta, data: &[u8]) -> (Vec<u8>, u64) {
    let m = serde_json::to_vec(meta).expect("records serialize");
    let mut out = Vec::with_capacity(12 + m.len() + data.len() + 32);
    out.extend_from_slice(&(m.len() as u32).to_be_bytes());
    out.extend_from_slice(&(data.len() as u64).to_be_bytes());
    out.extend_from_slice(&m);
    out.extend_from_slice(data);
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    (out, 12 + m.len() as u64)
}

/// Longest record metadata (a batch's events as JSON: 4096 events with
/// names; far less in practice); a longer one ends the journal there.
const MAX_META: u64 = 64 << 20;
/// Most bytes of known tails a base record carries (kept in memory).
const MAX_BASE_DATA: u64 = 256 << 20;

/// One record read from a journal: its metadata, and its data (a base's
/// tails, in memory) or where its data is (a batch's, left on disk).
pub(crate) enum Payload {
    Mem(Vec<u8>),
    At { at: u64, len: u64 },
}

/// Records of a journal read as a stream, one at a time, each checked
/// (its blake3) before it is returned; stops at the first incomplete or
/// failing record. A batch's data is hashed as it passes, never held.
pub(crate) struct RecordReader<R: Read> {
    r: R,
    /// Where the next record starts.
    pub(crate) pos: u64,
    len: u64,
}

impl<R: Read> RecordReader<R> {
    pub(crate) fn new(r: R, len: u64) -> Self {
        RecordReader { r, pos: 0, len }
    }

    pub(crate) fn next_record(&mut self) -> Option<(RecordMeta, Payload)> {
        let rest = self.len.checked_sub(self.pos)?;
        let mut head = [0u8; 12];
        if rest < 12 || self.r.read_exact(&mut head).is_err() {
            return None;
        }
        let ml = u32::from_be_bytes(head[..4].try_into().expect("4")) as u64;
        let dl = u64::from_be_bytes(head[4..12].try_into().expect("8"));
        let total = dl.checked_add(12 + ml + 32).filter(|t| *t <= rest)?;
        if ml > MAX_META {
            return None;
        }
        let mut h = blake3::Hasher::new();
        h.update(&head);
        let mut m = vec![0u8; ml as usize];
        self.r.read_exact(&mut m).ok()?;
        h.update(&m);
        let meta = serde_json::from_slice::<RecordMeta>(&m).ok()?;
        let data_at = self.pos + 12 + ml;
        let payload = match meta {
            RecordMeta::Base { .. } => {
                if dl > MAX_BASE_DATA {
                    return None;
                }
                let mut d = vec![0u8; dl as usize];
                self.r.read_exact(&mut d).ok()?;
                h.update(&d);
                Payload::Mem(d)
            }
            RecordMeta::Batch { .. } => {
                let mut buf = vec![0u8; (64 << 10).min(dl as usize)];
                let mut left = dl;
                while left > 0 {
                    let n = (left as usize).min(buf.len());
                    self.r.read_exact(&mut buf[..n]).ok()?;
                    h.update(&buf[..n]);
                    left -= n as u64;
                }
                Payload::At {
                    at: data_at,
                    len: dl,
                }
            }
        };
        let mut check = [0u8; 32];
        self.r.read_exact(&mut check).ok()?;
        if h.finalize().as_bytes() != &check {
            return None;
        }
        self.pos += total;
        Some((meta, payload))
    }
}

/// Where an item's bytes are in the journal the spool was read from (or
/// in the spool's own buffer, for a spool built in memory): read when
/// needed through a window (the spool is read as a stream: its cap bounds
/// disk, not memory).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Data {
    pub(crate) at: u64,
    pub(crate) len: u64,
}

impl Data {
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// An event as the spool keeps it: file names as indices into
/// [`Spool::names`] (a spool at the event cap holds two million of
/// them). [`Spool::ev`] gives the event back.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ev {
    Base { file: u32, size: u64 },
    Append { file: u32, offset: u64, len: u64 },
    Truncate { file: u32, size: u64 },
    Rename { from: u32, to: u32 },
    Remove { file: u32 },
}

/// One event of the spool: the event, where its data is, its batch (an
/// index into [`Spool::batches`]).
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) ev: Ev,
    pub(crate) data: Data,
    pub(crate) batch: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct BaseFile {
    pub(crate) file: String,
    pub(crate) size: u64,
    pub(crate) tail: Vec<u8>,
}

/// The journal file a spool was read from, open (a checkpoint's rewrite
/// replaces the name, not these bytes), with a window of its last read.
#[derive(Debug, Clone)]
pub(crate) struct JournalFile {
    pub(crate) file: Option<Arc<File>>,
    pub(crate) path: PathBuf,
    pub(crate) window: Arc<std::sync::Mutex<(u64, Vec<u8>)>>,
}

impl JournalFile {
    pub(crate) fn open(dir: &Path) -> Result<Option<JournalFile>> {
        let path = dir.join(JOURNAL);
        match File::open(&path) {
            Ok(f) => Ok(Some(JournalFile {
                file: Some(Arc::new(f)),
                path,
                window: Default::default(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("open {}", path.display()), e)),
        }
    }

    /// Bytes `[at, at + len)`: small reads go through a window of 1 MiB
    /// (matching and applying read items mostly in journal order).
    pub(crate) fn read(&self, at: u64, len: u64) -> std::result::Result<Vec<u8>, String> {
        let err =
            |e: std::io::Error| format!("reading the spool journal {}: {e}", self.path.display());
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let end = at + len;
        let Some(file) = &self.file else {
            // A spool built in memory: the window is all of its data.
            return w
                .1
                .get(at as usize..end as usize)
                .map(|b| b.to_vec())
                .ok_or_else(|| format!("no spooled bytes {at}..{end}"));
        };
        if len >= WINDOW as u64 {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, at).map_err(err)?;
            return Ok(buf);
        }
        if !(at >= w.0 && end <= w.0 + w.1.len() as u64) {
            // Emptied first: a failed read leaves no stale window.
            w.1.clear();
            w.1.resize(WINDOW, 0);
            let n = fill_at(file, &mut w.1, at)
                .inspect_err(|_| w.1.clear())
                .map_err(err)?;
            w.1.truncate(n);
            w.0 = at;
            if (n as u64) < len {
                return Err(format!(
                    "the spool journal {} ends before byte {end}",
                    self.path.display()
                ));
            }
        }
        let s = (at - w.0) as usize;
        Ok(w.1[s..s + len as usize].to_vec())
    }
}

pub(crate) fn write_journal_atomic(dir: &Path, bytes: &[u8]) -> Result<()> {
    crate::base::catalog::write_atomic(&dir.join(JOURNAL), bytes)
}

/// Replace the journal with `sp`'s records, written as a stream (one
/// batch's data at a time) to a temporary file, fsynced, renamed over.
pub(crate) fn rewrite_journal(dir: &Path, sp: &Spool) -> Result<()> {
    let path = dir.join(JOURNAL);
    let tmp = dir.join(format!(".{JOURNAL}.tmp.{}", std::process::id()));
    let written = (|| -> Result<()> {
        let f = File::create(&tmp).ctx(format!("create {}", tmp.display()))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &f);
        sp.write_records(&mut w)
            .and_then(|_| w.flush().map_err(|e| e.to_string()))
            .map_err(|e| Error::storage(format!("{}: {e}", tmp.display())))?;
        drop(w);
        f.sync_all().ctx(format!("fsync {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).ctx(format!("rename {} -> {}", tmp.display(), path.display()))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(format!("fsync {}", dir.display()))
}

pub(crate) fn append_journal(dir: &Path, bytes: &[u8]) -> Result<()> {
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
pub(crate) fn journal_id(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir.join(JOURNAL))
        .ok()
        .map(|m| (m.ino(), m.len()))
}
