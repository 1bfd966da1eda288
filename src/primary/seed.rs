//! Seeding a standby from a disk: `snapsite ship --to DIR` writes the same
//! framed, checksummed stream `ship` sends over the network — hello, every
//! member of the newest complete full set sent in full, the commit — into
//! chunk files `DIR/<set id>.seed/part-000000...`, and an `index.json` with
//! each part's size and blake3, written last (a seed without it is
//! incomplete). On the standby, `snapsite serve --from DIR/<set id>.seed`
//! feeds those files to the same `serve` session a network primary talks
//! to: every check applies (names, sizes, frame checks, the trailers' blake3,
//! the commit against the standby's config), and a part whose blake3 differs
//! from the index is an integrity error before its bytes reach the backend.
//! Afterwards `ship` over the network finds the set on the standby and
//! continues incrementally from it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::Stores;
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::model::{Manifest, Member, SetKind, validate_set_id};
use crate::base::safefile::{Access, Root};
use crate::wire::compress::Compression;
use crate::wire::pipeline::{self, Chunk};
use crate::wire::stream::{Msg, PROTOCOL_VERSION, Writer};

pub const INDEX: &str = "index.json";
const INDEX_TMP: &str = ".index.json.tmp";
const FORMAT: u32 = 1;
pub const DEFAULT_CHUNK: u64 = 1 << 30;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub name: String,
    pub bytes: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub format: u32,
    pub set_id: String,
    pub site: String,
    pub compression: String,
    pub parts: Vec<Part>,
    /// Snapshot data (uncompressed) per role.
    pub payload_bytes: u64,
}

/// The file name of a seed's part `i` (restore writes its parts under
/// these names for [`SeedReader::streaming`], which requires them).
pub fn part_name(i: usize) -> String {
    format!("part-{i:06}")
}

/// Writes the stream into numbered parts of at most `chunk` bytes each,
/// fsynced, with their blake3 for the index.
struct ChunkWriter {
    dir: PathBuf,
    chunk: u64,
    current: Option<(File, blake3::Hasher, u64)>,
    parts: Vec<Part>,
}

impl ChunkWriter {
    fn seal(&mut self) -> std::io::Result<()> {
        if let Some((f, h, n)) = self.current.take() {
            f.sync_all()?;
            self.parts.push(Part {
                name: part_name(self.parts.len()),
                bytes: n,
                blake3: h.finalize().to_hex().to_string(),
            });
        }
        Ok(())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.current.as_ref().is_some_and(|c| c.2 >= self.chunk) {
            self.seal()?;
        }
        if self.current.is_none() {
            let f = File::create_new(self.dir.join(part_name(self.parts.len())))?;
            self.current = Some((f, blake3::Hasher::new(), 0));
        }
        let (f, h, n) = self.current.as_mut().expect("opened above");
        let room = (self.chunk - *n).min(buf.len() as u64) as usize;
        let k = f.write(&buf[..room])?;
        h.update(&buf[..k]);
        *n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.current {
            Some((f, _, _)) => f.flush(),
            None => Ok(()),
        }
    }
}

/// What `ship --to` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub dir: PathBuf,
    pub set_id: String,
    pub parts: usize,
    pub payload_bytes: u64,
    pub stream_bytes: u64,
    pub compression: String,
}

/// A seed killed before its index (written last) is half-written: its
/// parts are removed so that a rerun writes it afresh. Only a directory
/// holding nothing but part files and the index's temp file is removed;
/// anything else (a complete seed, other files) is left for the caller to
/// refuse.
fn remove_half_written(out: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(out) else {
        return Ok(());
    };
    let names = rd
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(format!("read {}", out.display()), e))?;
    let ours = |n: &str| {
        n == INDEX_TMP
            || n.strip_prefix("part-")
                .is_some_and(|d| d.len() == 6 && d.bytes().all(|b| b.is_ascii_digit()))
    };
    if !names.iter().all(|n| n.to_str().is_some_and(ours)) {
        return Ok(());
    }
    for n in &names {
        let p = out.join(n);
        std::fs::remove_file(&p).map_err(|e| Error::io(format!("remove {}", p.display()), e))?;
    }
    std::fs::remove_dir(out).map_err(|e| Error::io(format!("remove {}", out.display()), e))?;
    tracing::warn!(dir = %out.display(), parts = names.len(), "removed a half-written seed (no index); writing it again");
    Ok(())
}

/// The newest full set whose members all exist here.
fn newest_complete_full(cfg: &Config, catalog: &Catalog, stores: &Stores) -> Result<Manifest> {
    let local = crate::base::site::local_lists(stores)?;
    catalog
        .manifests()?
        .into_iter()
        .rfind(|m| m.kind == SetKind::Full && crate::base::site::complete_locally(cfg, m, &local))
        .ok_or_else(|| {
            Error::storage("no complete full set on this site to seed from")
                .with_hint("take one with `snapsite snapshot`")
        })
}

/// `ship --to DIR`: write the newest complete full set as a seed.
pub fn write_seed(
    cfg: &Config,
    catalog: &Catalog,
    dir: &Path,
    chunk: u64,
    progress: crate::primary::coordinator::Progress,
) -> Result<SeedReport> {
    let stores = Stores::open(cfg);
    let set = newest_complete_full(cfg, catalog, &stores)?;
    validate_set_id(&set.id)?;
    let compression = cfg
        .standby
        .as_ref()
        .map(|s| s.compression)
        .unwrap_or_default();
    let out = dir.join(format!("{}.seed", set.id));
    remove_half_written(&out)?;
    std::fs::create_dir(&out).map_err(|e| {
        Error::io(
            format!(
                "cannot create {} (it must not exist yet; remove a half-written seed first)",
                out.display()
            ),
            e,
        )
    })?;
    let mut w = Writer::new(std::io::BufWriter::with_capacity(
        1 << 20,
        ChunkWriter {
            dir: out.clone(),
            chunk: chunk.max(1 << 20),
            current: None,
            parts: Vec::new(),
        },
    ));
    write_hello(&mut w, cfg)?;
    let mut payload = 0u64;
    let dest = format!("writing the seed in {}", out.display());
    for m in &set.members {
        payload += write_member(&mut w, &stores, &set, m, None, compression, &dest, progress)?;
        crate::failpoint!("seed.after_member");
    }
    write_commit(&mut w, &set)?;
    let stream_bytes = w.bytes_out;
    let mut chunks = w
        .into_inner()
        .into_inner()
        .map_err(|e| Error::io("writing the seed", e.into_error()))?;
    chunks
        .seal()
        .map_err(|e| Error::io("writing the seed", e))?;
    let index = Index {
        format: FORMAT,
        set_id: set.id.clone(),
        site: cfg.site.clone(),
        compression: compression.name(),
        parts: chunks.parts,
        payload_bytes: payload,
    };
    crate::failpoint!("seed.before_index");
    let tmp = out.join(INDEX_TMP);
    let mut f = File::create(&tmp).map_err(|e| Error::io("writing the seed index", e))?;
    f.write_all(&serde_json::to_vec_pretty(&index).expect("serializes"))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing the seed index", e))?;
    std::fs::rename(&tmp, out.join(INDEX)).map_err(|e| Error::io("writing the seed index", e))?;
    File::open(&out)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("writing the seed", e))?;
    Ok(SeedReport {
        dir: out,
        set_id: set.id,
        parts: index.parts.len(),
        payload_bytes: payload,
        stream_bytes,
        compression: index.compression,
    })
}

/// The stream's opening: magic and hello (as `ship` sends them).
pub fn write_hello<W: Write>(w: &mut Writer<W>, cfg: &Config) -> Result<()> {
    w.magic()?;
    w.msg(&Msg::Hello {
        protocol: PROTOCOL_VERSION,
        site: cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        since: None,
    })
}

/// The stream's close: the set's commit, then bye.
pub fn write_commit<W: Write>(w: &mut Writer<W>, set: &Manifest) -> Result<()> {
    w.msg(&Msg::Commit {
        manifest: set.clone(),
    })?;
    w.msg(&Msg::Bye)
}

/// One member of a set into a seed-format stream (`ship --to DIR` and
/// `snapsite archive` both write it): Begin, the snapshot's send from
/// `base` (or in full) as data frames, End with its size and blake3.
/// A member sent `compressed` or `raw` (ZFS) is stored as sent; any other
/// is compressed with `compression`. An error writing the stream gets
/// `dest` as its context. Returns the payload bytes (uncompressed).
#[allow(clippy::too_many_arguments)]
pub fn write_member<W: Write>(
    w: &mut Writer<W>,
    stores: &Stores,
    set: &Manifest,
    m: &Member,
    base: Option<&str>,
    compression: Compression,
    dest: &str,
    progress: crate::primary::coordinator::Progress,
) -> Result<u64> {
    let store = stores.get(&m.role)?;
    w.msg(&Msg::Begin {
        set_id: set.id.clone(),
        role: m.role.clone(),
        snapshot: m.snapshot.clone(),
        base: base.map(str::to_string),
        storage_id: m.storage_id.clone(),
        resume: false,
    })
    .map_err(|e| e.context(dest.to_string()))?;
    let c = if m
        .send_options
        .iter()
        .any(|o| o == "compressed" || o == "raw")
    {
        Compression::None
    } else {
        compression
    };
    let mut src = store.send(&m.snapshot, base)?;
    let mut sent = 0u64;
    let piped = pipeline::run(&mut *src, c, &mut |chunk| {
        sent += chunk.raw_len() as u64;
        match &chunk {
            Chunk::Plain(d) => w.data(d)?,
            Chunk::Compressed { z, .. } => w.data_compressed(z)?,
        }
        progress(&m.role, &m.snapshot, sent, false);
        Ok(())
    });
    let summary = match piped {
        Ok(s) => s,
        Err(pipeline::Failed::Read(e)) => {
            src.abort();
            return Err(Error::storage(format!(
                "volume `{}`: reading the send stream: {e}",
                m.role
            )));
        }
        Err(pipeline::Failed::Emit(e)) => {
            src.abort();
            return Err(e.context(dest.to_string()));
        }
    };
    src.finish()?;
    progress(&m.role, &m.snapshot, summary.bytes, true);
    w.msg(&Msg::End {
        bytes: summary.bytes,
        blake3: summary.blake3,
    })
    .map_err(|e| e.context(dest.to_string()))?;
    Ok(summary.bytes)
}

/// Most bytes an `index.json` may have (a seed of 1 MiB parts of about
/// half a million parts; the default 1 GiB parts need far less).
pub const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Reads the parts in order. Every file of the seed is opened inside the
/// seed directory only, through [`Root`] (no symlink on the way,
/// a regular file or a clear refusal: a FIFO or device never blocks), and
/// before anything is handed to `serve` every part, the last included, is
/// read once and checked against the index: `serve` commits when it reads
/// the commit message, which may come before the end of the last part, so
/// checking a part when it ends is not enough. While the parts are then
/// streamed each is checked again (size, blake3), and every read is handed
/// on only if the part is still the file checked, unwritten since (inode
/// and ctime on its descriptor): a change in between is an error, never a
/// commit of bytes that were not checked.
///
/// [`SeedReader::streaming`] (restore) reads a seed whose parts arrive
/// while it is read: before part `i` it waits at its [`Gate`] until the
/// part is in place, then checks the whole part against the index (the
/// same check `open` makes of every part) before a byte of it is handed
/// on. The commit is in the last part, so nothing is committed before
/// every part was checked.
pub struct SeedReader {
    root: Root,
    dir: PathBuf,
    parts: Vec<Part>,
    /// (dev, inode, ctime) of each part as checked: any write since
    /// changes the ctime, so bytes read while these hold are the checked ones.
    /// Streaming: the parts checked so far.
    ids: Vec<PartId>,
    next: usize,
    current: Option<(std::io::Take<File>, blake3::Hasher, u64)>,
    gate: Option<Gate>,
}

/// Waits until part `i` of a streamed seed is in place (restore: its
/// download checked and decrypted), or says why it never will be.
pub type Gate = Box<dyn FnMut(usize) -> std::io::Result<()> + Send>;

type PartId = (u64, u64, i64, i64);

fn part_id(m: &std::fs::Metadata) -> PartId {
    (m.dev(), m.ino(), m.ctime(), m.ctime_nsec())
}

fn refused(dir: &Path, e: String) -> Error {
    Error::integrity(format!("seed {}: {e}", dir.display()))
}

/// Size and blake3 of a part read through its descriptor (at most one
/// byte more than the index says, so a growing file cannot run on).
fn hash_part(f: &File, expect: u64) -> std::io::Result<(u64, String)> {
    copy_hashing(f.take(expect + 1), &mut std::io::sink())
}

/// Copy `r` to `w`, returning the size and blake3 (hex) of what passed:
/// the seed reader's part check and restore's download both read parts
/// through it (bound `r` with `take` for foreign input).
pub fn copy_hashing(mut r: impl Read, w: &mut dyn Write) -> std::io::Result<(u64, String)> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            return Ok((n, h.finalize().to_hex().to_string()));
        }
        h.update(&buf[..k]);
        w.write_all(&buf[..k])?;
        n += k as u64;
    }
}

impl SeedReader {
    /// Open a seed directory: the index must be there and plausible, and
    /// every part must match it (each read once here).
    pub fn open(dir: &Path) -> Result<(SeedReader, Index)> {
        let root = Root::open(dir)?;
        if root
            .regular_size(INDEX)
            .map_err(|e| refused(dir, e))?
            .is_none()
        {
            return Err(Error::not_found(format!(
                "{}: no {INDEX} (an incomplete seed, or not a seed directory)",
                dir.display()
            )));
        }
        let text = root
            .read_bounded(INDEX, MAX_INDEX_BYTES)
            .map_err(|e| refused(dir, e))?;
        let index: Index = serde_json::from_slice(&text).map_err(|e| {
            Error::integrity(format!("{}: {INDEX} is not valid: {e}", dir.display()))
        })?;
        if index.format != FORMAT {
            return Err(Error::protocol(format!(
                "{}: seed format {} is not supported (this snapsite reads {FORMAT})",
                dir.display(),
                index.format
            )));
        }
        validate_set_id(&index.set_id)?;
        for (i, p) in index.parts.iter().enumerate() {
            if p.name != part_name(i) {
                return Err(Error::integrity(format!(
                    "{}: {INDEX} lists `{}` as part {i}",
                    dir.display(),
                    crate::base::model::wire_str(&p.name)
                )));
            }
        }
        // Sizes first (a missing or short part is found without reading).
        let mut files = Vec::with_capacity(index.parts.len());
        for p in &index.parts {
            let len = root
                .regular_size(&p.name)
                .map_err(|e| refused(dir, e))?
                .ok_or_else(|| {
                    Error::not_found(format!("{}: part {} is missing", dir.display(), p.name))
                })?;
            if len != p.bytes {
                return Err(Error::integrity(format!(
                    "{}: {} has {len} bytes, the index says {}",
                    dir.display(),
                    p.name,
                    p.bytes
                )));
            }
            files.push(p);
        }
        let mut ids = Vec::with_capacity(files.len());
        for p in files {
            ids.push(check_part(&root, dir, p)?);
        }
        Ok((
            SeedReader {
                root,
                dir: dir.to_owned(),
                parts: index.parts.clone(),
                ids,
                next: 0,
                current: None,
                gate: None,
            },
            index,
        ))
    }

    /// A seed in `dir` whose `parts` (named `part-NNNNNN`, in order) are
    /// put in place while it is read: part `i` is read once `gate(i)`
    /// returned, and checked in full against its size and blake3 first.
    pub fn streaming(dir: &Path, parts: Vec<Part>, gate: Gate) -> Result<SeedReader> {
        for (i, p) in parts.iter().enumerate() {
            if p.name != part_name(i) {
                return Err(Error::integrity(format!(
                    "{}: `{}` as part {i}",
                    dir.display(),
                    crate::base::model::wire_str(&p.name)
                )));
            }
        }
        Ok(SeedReader {
            root: Root::open(dir)?,
            dir: dir.to_owned(),
            ids: Vec::with_capacity(parts.len()),
            parts,
            next: 0,
            current: None,
            gate: Some(gate),
        })
    }
}

/// Part `p` of the seed in `dir` read once through its descriptor and
/// checked against the index (size, blake3), unchanged while it was read:
/// its (dev, inode, ctime) as checked.
fn check_part(root: &Root, dir: &Path, p: &Part) -> Result<PartId> {
    let f = root
        .open_existing(&p.name, Access::Read)
        .map_err(|e| refused(dir, e))?;
    let m = f
        .metadata()
        .map_err(|e| Error::io(format!("{}: part {}", dir.display(), p.name), e))?;
    let (n, got) = hash_part(&f, p.bytes)
        .map_err(|e| Error::io(format!("{}: reading part {}", dir.display(), p.name), e))?;
    if n != p.bytes || got != p.blake3 {
        return Err(Error::integrity(format!(
            "{}: seed part {} does not match its index ({n} bytes blake3 {got}, the index says {} bytes blake3 {}); nothing received",
            dir.display(),
            p.name,
            p.bytes,
            p.blake3
        )));
    }
    let after = f
        .metadata()
        .map_err(|e| Error::io(format!("{}: part {}", dir.display(), p.name), e))?;
    if part_id(&after) != part_id(&m) {
        return Err(Error::integrity(format!(
            "{}: seed part {} changed while it was checked",
            dir.display(),
            p.name
        )));
    }
    Ok(part_id(&m))
}

impl Read for SeedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        loop {
            if self.current.is_none() {
                if self.next == self.parts.len() {
                    return Ok(0);
                }
                if self.ids.len() == self.next {
                    // Streaming: wait for the part, then check all of it.
                    if let Some(gate) = &mut self.gate {
                        gate(self.next)?;
                    }
                    let id = check_part(&self.root, &self.dir, &self.parts[self.next])
                        .map_err(|e| invalid(e.to_string()))?;
                    self.ids.push(id);
                }
                let part = &self.parts[self.next];
                let f = self
                    .root
                    .open_existing(&part.name, Access::Read)
                    .map_err(invalid)?;
                let m = f.metadata()?;
                if part_id(&m) != self.ids[self.next] {
                    return Err(invalid(format!(
                        "seed part {} was replaced or written to after it was checked",
                        part.name
                    )));
                }
                let limit = part.bytes + 1;
                self.current = Some((f.take(limit), blake3::Hasher::new(), 0));
            }
            let (f, h, n) = self.current.as_mut().expect("opened above");
            let k = f.read(buf)?;
            // Bytes handed on only if the part is still as it was checked.
            if part_id(&f.get_ref().metadata()?) != self.ids[self.next] {
                return Err(invalid(format!(
                    "seed part {} was written to after it was checked",
                    self.parts[self.next].name
                )));
            }
            if k > 0 {
                h.update(&buf[..k]);
                *n += k as u64;
                if *n > self.parts[self.next].bytes {
                    return Err(invalid(format!(
                        "seed part {} grew after it was checked",
                        self.parts[self.next].name
                    )));
                }
                return Ok(k);
            }
            let part = &self.parts[self.next];
            let got = h.finalize().to_hex().to_string();
            if *n != part.bytes || got != part.blake3 {
                return Err(invalid(format!(
                    "seed part {} does not match its index ({n} bytes blake3 {got}, the index says {} bytes blake3 {})",
                    part.name, part.bytes, part.blake3
                )));
            }
            self.current = None;
            self.next += 1;
        }
    }
}

/// `serve --from DIR`: receive a seed; an error unless its set committed.
pub fn receive_seed(cfg: &Config, dir: &Path) -> Result<String> {
    let (reader, index) = SeedReader::open(dir)?;
    receive_reader(cfg, reader, &index.set_id)
}

/// The `serve` session over a seed reader; an error unless `set_id`
/// committed.
pub fn receive_reader(cfg: &Config, reader: SeedReader, set_id: &str) -> Result<String> {
    let input = std::io::BufReader::with_capacity(1 << 20, reader);
    crate::standby::serve::serve(cfg, input, std::io::sink())?;
    let catalog = Catalog::new(&cfg.state_dir);
    if catalog.has_manifest(set_id) {
        Ok(set_id.to_string())
    } else {
        Err(
            Error::refused(format!("the seed's set {set_id} was not committed here"))
                .with_hint("`state_dir/serve.log` says why; nothing was committed"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_a_changed_part_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ChunkWriter {
            dir: dir.path().to_path_buf(),
            chunk: 1000,
            current: None,
            parts: Vec::new(),
        };
        let data: Vec<u8> = (0..3500u32).map(|i| (i * 7) as u8).collect();
        for c in data.chunks(333) {
            w.write_all(c).unwrap();
        }
        w.seal().unwrap();
        assert_eq!(
            w.parts.iter().map(|p| p.bytes).collect::<Vec<_>>(),
            [1000, 1000, 1000, 500]
        );
        write_index(dir.path(), &w);
        let (mut r, _) = SeedReader::open(dir.path()).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        // One flipped byte in part 2: an error when that part ends.
        let p = dir.path().join("part-000002");
        let mut b = std::fs::read(&p).unwrap();
        b[10] ^= 1;
        std::fs::write(&p, b).unwrap();
        // Refused before anything is handed on.
        let e = SeedReader::open(dir.path()).err().unwrap();
        assert!(e.to_string().contains("part-000002"), "{e}");
        // A missing part: refused before anything is read.
        std::fs::remove_file(dir.path().join("part-000003")).unwrap();
        assert!(SeedReader::open(dir.path()).is_err());
    }

    /// A seed of three parts with a valid index, in a fresh directory.
    fn small_seed() -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("s.seed");
        std::fs::create_dir(&seed).unwrap();
        let mut w = ChunkWriter {
            dir: seed.clone(),
            chunk: 1000,
            current: None,
            parts: Vec::new(),
        };
        let data: Vec<u8> = (0..2500u32).map(|i| (i * 13) as u8).collect();
        w.write_all(&data).unwrap();
        w.seal().unwrap();
        write_index(&seed, &w);
        (dir, data)
    }

    /// The index of the parts `w` wrote, in `dir`, as a seed writer leaves it.
    fn write_index(dir: &Path, w: &ChunkWriter) {
        let index = Index {
            format: FORMAT,
            set_id: "20261127T080000.000Z-full".into(),
            site: "a".into(),
            compression: "none".into(),
            parts: w.parts.clone(),
            payload_bytes: 0,
        };
        std::fs::write(dir.join(INDEX), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    fn open_err(dir: &Path) -> String {
        let t = std::time::Instant::now();
        let e = SeedReader::open(dir).err().expect("refused").to_string();
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "refused only after {:?}: {e}",
            t.elapsed()
        );
        e
    }

    #[test]
    fn special_files_and_escapes_in_a_seed_are_refused_quickly() {
        use nix::sys::stat::Mode;
        let mode = Mode::from_bits_truncate(0o600);
        // FIFO as index.json: refused at once (it would block a plain open).
        let (d, _) = small_seed();
        let s = d.path().join("s.seed");
        std::fs::remove_file(s.join(INDEX)).unwrap();
        nix::unistd::mkfifo(&s.join(INDEX), mode).unwrap();
        let e = open_err(&s);
        assert!(e.contains("index.json") && e.contains("FIFO"), "{e}");
        // index.json a symlink to /dev/zero (read until memory runs out).
        std::fs::remove_file(s.join(INDEX)).unwrap();
        std::os::unix::fs::symlink("/dev/zero", s.join(INDEX)).unwrap();
        let e = open_err(&s);
        assert!(
            e.contains("index.json") && e.contains("symbolic link"),
            "{e}"
        );
        // An index far beyond its bound: refused without being read.
        std::fs::remove_file(s.join(INDEX)).unwrap();
        let f = File::create(s.join(INDEX)).unwrap();
        f.set_len(MAX_INDEX_BYTES + 1).unwrap();
        let e = open_err(&s);
        assert!(e.contains("more than"), "{e}");

        // A part that is a symlink to a file outside DIR with the same bytes.
        let (d, _) = small_seed();
        let s = d.path().join("s.seed");
        let outside = d.path().join("outside");
        std::fs::rename(s.join("part-000001"), &outside).unwrap();
        std::os::unix::fs::symlink(&outside, s.join("part-000001")).unwrap();
        let e = open_err(&s);
        assert!(
            e.contains("part-000001") && e.contains("symbolic link"),
            "{e}"
        );
        // A part that is a FIFO, then a character device.
        std::fs::remove_file(s.join("part-000001")).unwrap();
        nix::unistd::mkfifo(&s.join("part-000001"), mode).unwrap();
        let e = open_err(&s);
        assert!(e.contains("part-000001") && e.contains("FIFO"), "{e}");
        std::fs::remove_file(s.join("part-000001")).unwrap();
        if nix::sys::stat::mknod(
            &s.join("part-000001"),
            nix::sys::stat::SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(1, 5), // /dev/zero's numbers
        )
        .is_ok()
        {
            let e = open_err(&s);
            assert!(e.contains("part-000001") && e.contains("device"), "{e}");
        }
        // The seed directory's own files only: a part in a subdirectory
        // reached through a symlinked directory is refused too.
        let (d, _) = small_seed();
        let s = d.path().join("s.seed");
        let idx: Index = serde_json::from_slice(&std::fs::read(s.join(INDEX)).unwrap()).unwrap();
        let mut bad = idx.clone();
        bad.parts[0].name = "../s.seed/part-000000".into();
        std::fs::write(s.join(INDEX), serde_json::to_vec(&bad).unwrap()).unwrap();
        assert!(open_err(&s).contains("part 0"));
    }

    #[test]
    fn a_part_written_to_after_its_check_hands_on_nothing_more() {
        use std::os::unix::fs::FileExt;
        let (d, _) = small_seed();
        let s = d.path().join("s.seed");
        let (mut r, _) = SeedReader::open(&s).unwrap();
        // Timestamps have the kernel's tick as resolution.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(s.join("part-000000"))
            .unwrap();
        f.write_all_at(b"Z", 0).unwrap();
        let mut buf = [0u8; 10];
        let e = r.read(&mut buf).unwrap_err();
        assert!(e.to_string().contains("part-000000"), "{e}");
    }

    /// Restore's streamed seed: part `i` is read only after its gate
    /// opened, in order, and checked in full first: a part that does not
    /// match hands on none of its bytes (the earlier parts' bytes were
    /// handed on, checked); a gate that fails stops the read with its error.
    #[test]
    fn a_streamed_seed_waits_for_each_part_and_checks_it_before_its_bytes() {
        let (d, data) = small_seed();
        let s = d.path().join("s.seed");
        let index: Index = serde_json::from_slice(&std::fs::read(s.join(INDEX)).unwrap()).unwrap();
        assert_eq!(index.parts.len(), 3);
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let gate: Gate = Box::new(move |i| {
            log.lock().unwrap().push(i);
            Ok(())
        });
        let mut r = SeedReader::streaming(&s, index.parts.clone(), gate).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(*asked.lock().unwrap(), [0, 1, 2]);

        // Part 1 changed: part 0's 1000 bytes pass, none of part 1's.
        let p = s.join("part-000001");
        let mut b = std::fs::read(&p).unwrap();
        b[0] ^= 1;
        std::fs::write(&p, b).unwrap();
        let gate: Gate = Box::new(|_| Ok(()));
        let mut r = SeedReader::streaming(&s, index.parts.clone(), gate).unwrap();
        let mut back = Vec::new();
        let e = r.read_to_end(&mut back).unwrap_err().to_string();
        assert!(e.contains("part-000001"), "{e}");
        assert_eq!(back, data[..1000], "only part 0's bytes were handed on");

        // A gate that says the part will not come.
        let gate: Gate = Box::new(|i| {
            if i == 1 {
                Err(std::io::Error::other(
                    "part-000001 will not arrive: a download failed",
                ))
            } else {
                Ok(())
            }
        });
        let mut r = SeedReader::streaming(&s, index.parts, gate).unwrap();
        let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("a download failed"), "{e}");
    }

    #[test]
    fn a_wrong_last_part_is_refused_before_any_byte_is_handed_on() {
        let (d, data) = small_seed();
        let s = d.path().join("s.seed");
        let (mut r, _) = SeedReader::open(&s).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        assert_eq!(back, data);
        let p = s.join("part-000002");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&p, b).unwrap();
        let e = open_err(&s);
        assert!(
            e.contains("part-000002") && e.contains("nothing received"),
            "{e}"
        );
    }
}
