//! `snapsite restore --from ARCHIVE [--set ID]` and `snapsite verify
//! --archive NAME` (issue 30 item 4), on a standby.
//!
//! Restore replays the chosen set's chain — every set its members are
//! based on, recursively, oldest first, skipping sets this site has
//! committed — through the ordinary receive path: each set's part objects
//! are downloaded into `state_dir/restore/<set>.seed/` (the stored bytes
//! checked against the index's size and blake3, then decrypted by `age -d
//! -i IDENTITY`) while the `serve` session reads them through the seed
//! reader ([`crate::primary::seed::SeedReader::streaming`]): it waits for
//! each part and checks all of it against the index's plaintext size and
//! blake3 before a byte of it is handed on, and `serve` applies every
//! hostile-input check (names, sizes, frames, trailers, the commit against
//! this config).
//! Afterwards `failover` works as usual.
//!
//! `state_dir/journal-restore.json` records the archive and the target
//! set (a rerun without `--set` finishes that one) and each set's
//! download and receive. A rerun after a crash skips the sets already
//! committed and keeps each part of the set in flight that was downloaded
//! and checked (a part gets its final name `part-NNNNNN` only then, and is
//! hashed again against the index before it is kept); only the others are
//! downloaded. A set is presented only by serve's commit, after its whole
//! stream was received: nothing half-restored is a set.
//!
//! Verify reads objects back without the identity: each part's stored
//! size and blake3 against the index.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::base::archiveconf::Archive;
use crate::base::catalog::Catalog;
use crate::base::config::Config;
use crate::base::error::{Error, Result};
use crate::base::safefile::Root;
use crate::primary::archive::index::ArchiveIndex;
use crate::primary::archive::{key, open, read_index};
use crate::wire::s3::Bucket;

#[derive(Debug, Clone, Serialize)]
pub struct RestoredSet {
    pub set_id: String,
    pub parts: usize,
    /// Parts an interrupted restore had downloaded and checked, kept.
    pub resumed_parts: usize,
    /// Parts whose newest version did not match the index, restored from
    /// the older version that does (`KEY@VERSION`).
    pub older_versions: Vec<String>,
    pub stored_bytes: u64,
    pub download_seconds: f64,
    pub receive_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub archive: String,
    pub target: String,
    /// The chain, oldest first (sets already here included, marked).
    pub chain: Vec<String>,
    pub already_here: Vec<String>,
    pub restored: Vec<RestoredSet>,
    pub dry_run: bool,
}

/// The sets of the archive (by their index keys), oldest first.
pub fn archived_sets(a: &Archive, bucket: &Bucket) -> Result<Vec<String>> {
    let mut v: Vec<String> = bucket
        .list(&key(a, "sets/"))?
        .into_iter()
        .filter_map(|(k, _)| {
            crate::primary::archive::index::set_of_index_key(&k[a.prefix.len() + 1..])
                .map(str::to_string)
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The chain of `target`: it and every set it requires, oldest first.
fn chain(a: &Archive, bucket: &Bucket, target: &str) -> Result<Vec<ArchiveIndex>> {
    let mut seen: BTreeMap<String, ArchiveIndex> = BTreeMap::new();
    let mut todo = vec![target.to_string()];
    while let Some(id) = todo.pop() {
        if seen.contains_key(&id) {
            continue;
        }
        if seen.len() > 100_000 {
            return Err(Error::integrity(format!(
                "archive `{}`: the chain of {target} has more than 100000 sets",
                a.name
            )));
        }
        let ix = read_index(a, bucket, &id)
            .map_err(|e| e.context(format!("set {target} requires {id}")))?;
        todo.extend(ix.requires.iter().cloned());
        seen.insert(id, ix);
    }
    // Set ids sort by time, and every base is older than its set.
    Ok(seen.into_values().collect())
}

/// `restore --from NAME [--set ID] [--identity FILE] [--dry-run]`.
pub fn restore(
    cfg: &Config,
    a: &Archive,
    set: Option<&str>,
    identity: Option<&Path>,
    dry_run: bool,
) -> Result<RestoreReport> {
    let bucket = open(a)?;
    let catalog = Catalog::new(&cfg.state_dir);
    let journaled = crate::base::journal::load(&catalog, "restore")?
        .and_then(|j| j.intent::<Intent>().ok())
        .filter(|i| i.archive == a.name)
        .map(|i| i.target);
    let target = match (set, journaled) {
        (Some(s), _) => {
            crate::base::model::validate_set_id(s)?;
            s.to_string()
        }
        (None, Some(t)) => {
            crate::base::model::validate_set_id(&t)?;
            tracing::info!(archive = %a.name, set = %t, "finishing the interrupted restore");
            t
        }
        (None, None) => archived_sets(a, &bucket)?.pop().ok_or_else(|| {
            Error::not_found(format!(
                "archive `{}` holds no set (no index object)",
                a.name
            ))
        })?,
    };
    let chain = chain(a, &bucket, &target)?;
    let mut report = RestoreReport {
        archive: a.name.clone(),
        target: target.clone(),
        chain: chain.iter().map(|i| i.set_id.clone()).collect(),
        already_here: chain
            .iter()
            .filter(|i| catalog.has_manifest(&i.set_id))
            .map(|i| i.set_id.clone())
            .collect(),
        restored: vec![],
        dry_run,
    };
    let identity = identity
        .map(Path::to_path_buf)
        .or_else(|| a.identity.clone());
    if chain.iter().any(|i| i.encryption == "age") && identity.is_none() {
        return Err(Error::config(format!(
            "archive `{}` is encrypted: restore needs the age identity",
            a.name
        ))
        .with_hint("pass --identity FILE or set `identity` in its [[archive]]"));
    }
    if dry_run {
        return Ok(report);
    }
    let stage_root = cfg.state_dir.join("restore");
    std::fs::create_dir_all(&stage_root)
        .map_err(|e| Error::io(format!("create {}", stage_root.display()), e))?;
    let intent = Intent {
        archive: a.name.clone(),
        target: target.clone(),
    };
    let mut journal = match crate::base::journal::load(&catalog, "restore")? {
        Some(mut j) if j.intent::<Intent>().is_ok_and(|i| i == intent) => {
            j.adopt()?;
            j
        }
        other => {
            if let Some(j) = other {
                j.finish()?;
            }
            crate::base::journal::begin(
                &catalog,
                "restore",
                &format!("snapsite restore --from {} --set {target}", a.name),
                &intent,
            )?
        }
    };
    for ix in &chain {
        if catalog.has_manifest(&ix.set_id) {
            continue;
        }
        let dir = stage_root.join(format!("{}.seed", ix.set_id));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        let t = Instant::now();
        let streamed =
            restore_set(cfg, a, &bucket, ix, &dir, identity.as_deref()).map_err(|e| {
                e.context(format!(
                    "restoring set {} from archive `{}`",
                    ix.set_id, a.name
                ))
            })?;
        let (stored, resumed_parts, older_versions, download_seconds) = streamed;
        journal.done(&format!("downloaded:{}", ix.set_id))?;
        journal.done(&format!("received:{}", ix.set_id))?;
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::io(format!("remove {}", dir.display()), e))?;
        report.restored.push(RestoredSet {
            set_id: ix.set_id.clone(),
            parts: ix.parts.len(),
            resumed_parts,
            older_versions,
            stored_bytes: stored,
            download_seconds,
            receive_seconds: t.elapsed().as_secs_f64(),
        });
    }
    journal.finish()?;
    Ok(report)
}

/// What `state_dir/journal-restore.json` records.
#[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
struct Intent {
    archive: String,
    target: String,
}

/// Download one part object into a new file `name` of `dir`, checking
/// its stored size and blake3 against the index as it streams (at most one
/// byte more is read). A GET that times out or loses its connection is
/// tried again from the start (the archive's `retries`).
fn fetch_checked(
    a: &Archive,
    bucket: &Bucket,
    rel: &str,
    stored_bytes: u64,
    stored_blake3: &str,
    dir: &Root,
    name: &str,
) -> Result<(u64, File, Option<String>)> {
    let k = key(a, rel);
    let mut f = dir.create_new(name).map_err(Error::storage)?;
    let mut copy = |r: &mut crate::wire::s3::BodyReader| {
        f.set_len(0)?;
        f.rewind()?;
        crate::primary::seed::copy_hashing(r.take(stored_bytes + 1), &mut f)
    };
    let problem = match bucket.fetch(&k, &mut copy)? {
        Some((n, got)) if n == stored_bytes && got == stored_blake3 => None,
        Some((n, got)) => Some(format!("{n} bytes blake3 {got}")),
        None => Some("missing".to_string()),
    };
    let older = match problem {
        None => None,
        Some(p) => Some(older_version(
            a,
            bucket,
            &k,
            stored_bytes,
            stored_blake3,
            &p,
            &mut copy,
        )?),
    };
    // A scratch copy, checked again by the seed reader and removed after
    // the receive: no fsync (a crash downloads the set again).
    f.rewind()
        .map_err(|e| Error::io(format!("rewind {}", dir.display(name).display()), e))?;
    Ok((stored_bytes, f, older))
}

/// The newest version of part `k` is not what the index says (`problem`):
/// someone who may put objects wrote over it, and Object Lock kept the
/// version snapsite wrote. Read the versions of the key, newest first, and
/// take the first whose bytes match the index (`copy` leaves it in the
/// part's file); say so. None matches, or the versions cannot be listed:
/// refused, naming the key.
fn older_version(
    a: &Archive,
    bucket: &Bucket,
    k: &str,
    stored_bytes: u64,
    stored_blake3: &str,
    problem: &str,
    copy: &mut dyn FnMut(&mut crate::wire::s3::BodyReader) -> std::io::Result<(u64, String)>,
) -> Result<String> {
    let refused = |why: String| {
        Error::integrity(format!(
            "archive `{}`: part {k} does not match its index ({problem}; the index says {stored_bytes} bytes blake3 {stored_blake3}) and {why}; nothing received",
            a.name
        ))
    };
    let versions = bucket.versions(k).map_err(|e| {
        refused(format!("its older versions cannot be read: {e}"))
            .with_hint("restore's credentials need s3:ListBucketVersions and s3:GetObjectVersion (docs/archive.md)")
    })?;
    let mut tried = 0;
    for v in versions
        .iter()
        .filter(|v| !v.latest && v.size == stored_bytes)
    {
        tried += 1;
        if let Some((n, got)) = bucket.fetch_version(k, &v.version_id, &mut *copy)?
            && n == stored_bytes
            && got == stored_blake3
        {
            tracing::warn!(
                archive = %a.name,
                "part {k}: its newest version does not match the index ({problem}); version {} does, and is restored",
                v.version_id
            );
            return Ok(v.version_id.clone());
        }
    }
    Err(refused(format!(
        "none of its {} versions ({tried} of the index's size) matches",
        versions.len()
    )))
}

/// How many part objects are downloaded at once.
const DOWNLOADERS: usize = 4;

/// Keep the parts in `dir` that an interrupted restore downloaded and
/// checked (a final name, the index's size and blake3: hashed again
/// here); remove everything else. Returns which parts are there.
fn keep_checked(ix: &ArchiveIndex, dir: &Root) -> Result<Vec<bool>> {
    let mut have = vec![false; ix.parts.len()];
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .map_err(|e| Error::io(format!("list {}", dir.path().display()), e))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(format!("list {}", dir.path().display()), e))?;
    // Each name is opened or removed through the directory's descriptor.
    for name in names {
        let i = name
            .strip_prefix("part-")
            .filter(|n| n.len() == 6)
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < ix.parts.len());
        let ok = match i {
            Some(i) => match dir
                .open_regular(&name, crate::base::safefile::Access::Read)
                .map_err(Error::storage)?
            {
                Some(f) => {
                    let p = &ix.parts[i];
                    let (n, b3) = crate::primary::seed::copy_hashing(
                        f.take(p.bytes + 1),
                        &mut std::io::sink(),
                    )
                    .map_err(|e| Error::io(dir.display(&name).display(), e))?;
                    n == p.bytes && b3 == p.blake3
                }
                None => false,
            },
            None => false,
        };
        match i {
            Some(i) if ok => have[i] = true,
            _ => {
                let is_dir = dir.stat(&name).ok().flatten().is_some_and(|m| m.is_dir());
                dir.remove(&name, is_dir).map_err(Error::storage)?;
            }
        }
    }
    Ok(have)
}

/// Which parts of a set are in place for the receive, as the downloads
/// finish; or why one never will be.
struct Ready {
    state: std::sync::Mutex<(Vec<bool>, Option<String>)>,
    cv: std::sync::Condvar,
}

impl Ready {
    fn new(have: Vec<bool>) -> Ready {
        Ready {
            state: std::sync::Mutex::new((have, None)),
            cv: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<bool>, Option<String>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Part `i` is downloaded and checked. When it is the last one
    /// missing, `restore.before_receive` fires before the receive can read
    /// it: every part is here, and the set (whose commit is in its last
    /// part) is not committed.
    fn put(&self, i: usize) {
        let mut st = self.lock();
        if st.0.iter().filter(|h| !**h).count() == 1 {
            crate::failpoint!("restore.before_receive");
        }
        st.0[i] = true;
        self.cv.notify_all();
    }

    /// No more parts will come (`why`), unless all are here already.
    fn fail(&self, why: String) {
        let mut st = self.lock();
        if st.1.is_none() && st.0.iter().any(|h| !*h) {
            st.1 = Some(why);
        }
        self.cv.notify_all();
    }

    /// Wait for part `i`.
    fn wait(&self, i: usize) -> std::io::Result<()> {
        let mut st = self.lock();
        loop {
            if st.0.get(i).copied().unwrap_or(false) {
                return Ok(());
            }
            if let Some(why) = &st.1 {
                return Err(std::io::Error::other(format!(
                    "part-{i:06} will not arrive: {why}"
                )));
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Marks the downloads as ended when dropped (an error or a panic too),
/// so that the receive never waits for a part nobody fetches.
struct EndOnDrop<'a>(&'a Ready);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fail("the downloads stopped".into());
    }
}

/// One set from the archive: its parts downloaded into `dir`
/// (`part-NNNNNN`), `DOWNLOADERS` at a time in index order, while the
/// `serve` session reads them ([`SeedReader::streaming`]): part `i` is
/// handed on once it is downloaded, checked against the index's stored
/// size and blake3, decrypted, and checked again in full against the
/// plaintext's size and blake3 — never a byte before that. The parts an
/// interrupted run left checked are kept. A failed download stops the
/// receive (nothing committed; its error is the one reported); a receive
/// that fails stops the downloads. Returns the bytes downloaded, how many
/// parts were kept, the older versions used and the seconds until the
/// last download ended.
///
/// [`SeedReader::streaming`]: crate::primary::seed::SeedReader::streaming
fn restore_set(
    cfg: &Config,
    a: &Archive,
    bucket: &Bucket,
    ix: &ArchiveIndex,
    dir: &Path,
    identity: Option<&Path>,
) -> Result<(u64, usize, Vec<String>, f64)> {
    let started = Instant::now();
    let root = Root::open(dir)?;
    let have = keep_checked(ix, &root)?;
    let kept = have.iter().filter(|h| **h).count();
    if kept == ix.parts.len() {
        // Nothing to download (a rerun): the receive comes next.
        crate::failpoint!("restore.before_receive");
    }
    let ready = std::sync::Arc::new(Ready::new(have.clone()));
    let parts = ix
        .parts
        .iter()
        .enumerate()
        .map(|(i, p)| crate::primary::seed::Part {
            name: crate::primary::seed::part_name(i),
            bytes: p.bytes,
            blake3: p.blake3.clone(),
        })
        .collect();
    let gate = {
        let ready = ready.clone();
        Box::new(move |i: usize| ready.wait(i))
    };
    let reader = crate::primary::seed::SeedReader::streaming(dir, parts, gate)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (downloaded, received) = std::thread::scope(|s| {
        let downloads = s.spawn(|| {
            let _end = EndOnDrop(&ready);
            let r = download_parts(a, bucket, ix, &root, &have, identity, &ready, &stop);
            (r, started.elapsed().as_secs_f64())
        });
        let received = crate::primary::seed::receive_reader(cfg, reader, &ix.set_id);
        // The receive is over (committed or not): no more parts needed.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let downloaded = downloads
            .join()
            .expect("the download thread does not panic");
        (downloaded, received)
    });
    // A failed download explains the receive it stopped.
    let (downloaded, seconds) = downloaded;
    let (stored, mut older) = downloaded?;
    received?;
    older.sort();
    Ok((stored, kept, older, seconds))
}

/// The parts of `ix` that `have` lacks into `dir`, `DOWNLOADERS` at a time
/// in index order (memory: one buffer per download), each handed to
/// `ready` once in place; until `stop` or the first error. Returns the
/// bytes downloaded and the older versions used.
#[allow(clippy::too_many_arguments)]
fn download_parts(
    a: &Archive,
    bucket: &Bucket,
    ix: &ArchiveIndex,
    root: &Root,
    have: &[bool],
    identity: Option<&Path>,
    ready: &Ready,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(u64, Vec<String>)> {
    let fetched = std::sync::atomic::AtomicUsize::new(0);
    let notes = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let results: Vec<Result<u64>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..DOWNLOADERS.min(ix.parts.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut stored = 0u64;
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= ix.parts.len()
                            || failed.load(std::sync::atomic::Ordering::Relaxed)
                            || stop.load(std::sync::atomic::Ordering::Relaxed)
                        {
                            return Ok(stored);
                        }
                        if have[i] {
                            continue;
                        }
                        match download_part(a, bucket, ix, i, root, identity) {
                            Ok((n, older)) => {
                                stored += n;
                                if let Some(o) = older {
                                    notes.lock().unwrap_or_else(|e| e.into_inner()).push(o);
                                }
                                let k = fetched.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                if k == 1 {
                                    crate::failpoint!("restore.mid_download");
                                }
                                ready.put(i);
                            }
                            Err(e) => {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                ready.fail(format!("a download failed: {e}"));
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a download thread does not panic"))
            .collect()
    });
    let mut stored = 0u64;
    for r in results {
        stored += r?;
    }
    Ok((
        stored,
        notes.into_inner().unwrap_or_else(|e| e.into_inner()),
    ))
}

/// Part `i` of `ix` into `dir/part-NNNNNN` (checked, then decrypted by
/// `age` between two files this process opened: no path is handed to it).
fn download_part(
    a: &Archive,
    bucket: &Bucket,
    ix: &ArchiveIndex,
    i: usize,
    dir: &Root,
    identity: Option<&Path>,
) -> Result<(u64, Option<String>)> {
    let p = &ix.parts[i];
    let name = crate::primary::seed::part_name(i);
    // The final name only once the part is complete and checked.
    let tmp = format!("{name}.tmp");
    let done = |n| {
        dir.rename(&tmp, &name).map_err(Error::storage)?;
        Ok(n)
    };
    let note = |older: Option<String>| older.map(|v| format!("{}@{v}", key(a, &p.key)));
    if ix.encryption != "age" {
        let (n, _, older) = fetch_checked(
            a,
            bucket,
            &p.key,
            p.stored_bytes,
            &p.stored_blake3,
            dir,
            &tmp,
        )?;
        return done((n, note(older)));
    }
    let fetched = format!("{name}.age");
    let (n, cipher, older) = fetch_checked(
        a,
        bucket,
        &p.key,
        p.stored_bytes,
        &p.stored_blake3,
        dir,
        &fetched,
    )?;
    let plain = dir.create_new(&tmp).map_err(Error::storage)?;
    let id = identity.expect("checked by the caller");
    let out = Command::new("age")
        .arg("--decrypt")
        .arg("-i")
        .arg(id)
        .stdin(Stdio::from(cipher))
        .stdout(Stdio::from(plain))
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::io("cannot run `age` (package age)", e))?;
    if !out.status.success() {
        return Err(Error::integrity(format!(
            "archive `{}`: part {} does not decrypt with {}: {}",
            a.name,
            key(a, &p.key),
            id.display(),
            crate::base::model::wire_text(String::from_utf8_lossy(&out.stderr).trim())
        )));
    }
    dir.remove(&fetched, false).map_err(Error::storage)?;
    done((n, note(older)))
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyProblem {
    pub set_id: String,
    pub key: String,
    pub problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub archive: String,
    pub sets: usize,
    pub parts: usize,
    /// Parts read back in full and hashed.
    pub parts_read: usize,
    pub bytes_read: u64,
    /// Sets whose chain misses a set (or whose index is bad).
    pub problems: Vec<VerifyProblem>,
    pub seconds: f64,
}

/// `verify --archive NAME [--set ID] [--sample N]`: every index decoded,
/// every part listed with its stored size, every required set present;
/// all parts (or `sample` of them, spread evenly) read back and hashed.
pub fn verify(a: &Archive, set: Option<&str>, sample: Option<usize>) -> Result<VerifyReport> {
    let t = Instant::now();
    let bucket = open(a)?;
    let listing: BTreeMap<String, u64> = bucket.list(&key(a, "sets/"))?.into_iter().collect();
    let mut sets = archived_sets(a, &bucket)?;
    if let Some(s) = set {
        if !sets.iter().any(|x| x == s) {
            return Err(Error::not_found(format!(
                "archive `{}`: no index for set `{}`",
                a.name,
                crate::base::model::wire_str(s)
            )));
        }
        sets = vec![s.to_string()];
    }
    let present: BTreeSet<String> = archived_sets(a, &bucket)?.into_iter().collect();
    let mut report = VerifyReport {
        archive: a.name.clone(),
        sets: sets.len(),
        parts: 0,
        parts_read: 0,
        bytes_read: 0,
        problems: vec![],
        seconds: 0.0,
    };
    let mut all = Vec::new();
    for id in &sets {
        let ix = match read_index(a, &bucket, id) {
            Ok(ix) => ix,
            Err(e) => {
                report.problems.push(VerifyProblem {
                    set_id: id.clone(),
                    key: key(a, &crate::primary::archive::index::index_key(id)),
                    problem: e.to_string(),
                });
                continue;
            }
        };
        for r in &ix.requires {
            if !present.contains(r) {
                report.problems.push(VerifyProblem {
                    set_id: id.clone(),
                    key: key(a, &crate::primary::archive::index::index_key(r)),
                    problem: format!("requires set {r}, which the archive does not hold"),
                });
            }
        }
        for p in &ix.parts {
            let k = key(a, &p.key);
            match listing.get(&k) {
                None => report.problems.push(VerifyProblem {
                    set_id: id.clone(),
                    key: k,
                    problem: "missing".into(),
                }),
                Some(n) if *n != p.stored_bytes => report.problems.push(VerifyProblem {
                    set_id: id.clone(),
                    key: k,
                    problem: format!("{n} bytes, the index says {}", p.stored_bytes),
                }),
                Some(_) => all.push((id.clone(), k, p.stored_bytes, p.stored_blake3.clone())),
            }
        }
        report.parts += ix.parts.len();
    }
    let pick: Vec<usize> = match sample {
        Some(n) if n < all.len() => (0..n).map(|i| i * all.len() / n.max(1)).collect(),
        _ => (0..all.len()).collect(),
    };
    for i in pick {
        let (id, k, bytes, b3) = &all[i];
        let got = bucket.fetch(k, |r| {
            crate::primary::seed::copy_hashing(r.take(bytes + 1), &mut std::io::sink())
        })?;
        let Some((n, got)) = got else {
            report.problems.push(VerifyProblem {
                set_id: id.clone(),
                key: k.clone(),
                problem: "missing".into(),
            });
            continue;
        };
        report.parts_read += 1;
        report.bytes_read += n;
        if n != *bytes || got != *b3 {
            report.problems.push(VerifyProblem {
                set_id: id.clone(),
                key: k.clone(),
                problem: format!(
                    "does not match its index ({n} bytes blake3 {got}, the index says {bytes} bytes blake3 {b3})"
                ),
            });
        }
    }
    report.seconds = t.elapsed().as_secs_f64();
    Ok(report)
}
