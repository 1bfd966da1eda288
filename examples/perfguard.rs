//! The CI's performance guard (issue 27, item 3): fixed in-process
//! workloads whose instruction counts, taken by `valgrind --tool=callgrind`,
//! are compared with a stored budget (`bench/perfguard.json`). Instruction
//! counts do not depend on what else the machine runs, so a 5% margin is
//! a real change of the code, not noise.
//!
//!   perfguard run WORKLOAD      one workload (what callgrind runs)
//!   perfguard check [--bless] [--budget FILE] [--keep DIR]
//!                               every workload under callgrind, compared
//!   perfguard list              the workloads
//!
//! `scripts/perfguard` builds this in release mode and runs `check`.
//!
//! Every workload builds its inputs first (seeded data, fixed set ids; no
//! wall clock decides anything), then counts only its main work: callgrind
//! runs with `--instr-atstart=no` and the workload switches instrumentation
//! on and off around that work with callgrind's client requests (which are
//! no-ops outside valgrind). Threads the work starts — `serve` on the
//! standby's end of a socket pair, the sender's pipeline — are counted too.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};
use snapsite::backend::mem::MemStore;
use snapsite::backend::{Store, Stores};
use snapsite::base::catalog::Catalog;
use snapsite::base::config::Config;
use snapsite::base::model::{MANIFEST_FORMAT, Manifest, Member, SetKind, new_set_id};
use snapsite::dr::stream_apply;
use snapsite::primary::coordinator::{plan_set, sets_to_ship};
use snapsite::primary::follower::{self, Follower, FollowerRecord};
use snapsite::wire::stream::{Deadline, Msg, PROTOCOL_VERSION, Reader, Writer};

#[path = "../tests/common/sitetoml.rs"]
mod sitetoml;

const ROLES: [&str; 4] = ["mysql", "blob", "index", "redolog"];
/// Bytes of each role's snapshot in a full set: 16 MiB in all. Big enough
/// that the per-byte work (blake3 on both ends, framing, copies) is most
/// of the count; small enough that callgrind runs the ship in seconds.
const FULL_BYTES: [usize; 4] = [4 << 20, 8 << 20, 3 << 20, 1 << 20];
/// An incremental set's stream per role: 1/20 (5%) of the full one.
const INCREMENTAL_DIVISOR: usize = 20;
/// Sets in both catalogs for the no-change ship.
const NO_CHANGE_SETS: usize = 1000;
/// Spool: follower flushes (one batch each), records appended before each,
/// a rollover every this many flushes.
const SPOOL_FLUSHES: usize = 300;
const SPOOL_RECORDS: usize = 8;
const SPOOL_ROLLOVER_EVERY: usize = 40;

const WORKLOADS: [(&str, &str); 6] = [
    (
        "ship_full_16mib",
        "a full set of 4 volumes (16 MiB) shipped to serve through the in-memory store",
    ),
    (
        "ship_incremental",
        "the next set (5% of the full set's bytes, sent on its base) after a full one",
    ),
    (
        "ship_incremental_detect_off",
        "ship_incremental with the standby's [detect] off: the difference is the ransomware meter's cost",
    ),
    (
        "meter_btrfs_16mib",
        "the ransomware meter alone on a 16 MiB btrfs send stream (new mail, rewrites, renames), fed in 1 MiB frames",
    ),
    (
        "ship_no_change_1000_sets",
        "a ship with nothing to send, 1000 sets in both catalogs",
    ),
    (
        "spool_apply",
        "failover's apply of a spool (300 batches, 7 rollovers) to a copy taken midway: match, apply, verify",
    ),
];

// ---- callgrind's client requests (valgrind.h, amd64) -----------------------

/// `VALGRIND_DO_CLIENT_REQUEST` on amd64: a no-op sequence natively, a
/// request under valgrind.
#[cfg(target_arch = "x86_64")]
fn client_request(request: u64) {
    let args: [u64; 6] = [request, 0, 0, 0, 0, 0];
    let mut result: u64 = 0;
    // SAFETY: the rotations leave rdi as it was and `xchg rbx, rbx` changes
    // nothing; valgrind recognises the sequence and reads `args` (rax).
    unsafe {
        std::arch::asm!(
            "rol rdi, 3",
            "rol rdi, 13",
            "rol rdi, 61",
            "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") result,
            in("rax") args.as_ptr(),
            out("rdi") _,
        );
    }
    let _ = result;
}

#[cfg(not(target_arch = "x86_64"))]
fn client_request(_request: u64) {}

/// `VG_USERREQ_TOOL_BASE('C','T')`: callgrind's requests.
const CALLGRIND_BASE: u64 = (b'C' as u64) << 24 | (b'T' as u64) << 16;

/// Count what `work` does (every thread), nothing before or after it.
fn measured<T>(work: impl FnOnce() -> T) -> T {
    client_request(CALLGRIND_BASE + 4); // START_INSTRUMENTATION
    let out = std::hint::black_box(work());
    client_request(CALLGRIND_BASE + 5); // STOP_INSTRUMENTATION
    out
}

// ---- sites with the in-memory store ----------------------------------------

struct Site {
    _dir: tempfile::TempDir,
    cfg: Config,
    store: MemStore,
}

fn site(name: &str, extra: &str) -> Result<Site> {
    let dir = tempfile::tempdir()?;
    let mut text = sitetoml::volumes_toml(name, dir.path(), &ROLES, "snap", None);
    text.push_str(extra);
    let cfg = Config::parse(&text, &dir.path().join(format!("{name}.toml")))?;
    Ok(Site {
        _dir: dir,
        cfg,
        store: MemStore::new(),
    })
}

impl Site {
    fn catalog(&self) -> Catalog {
        Catalog::new(&self.cfg.state_dir)
    }
    fn stores(&self) -> Stores {
        Stores::from_stores(
            self.cfg
                .volumes
                .iter()
                .map(|v| Store::bind(v.clone(), self.store.backend()))
                .collect(),
        )
    }
}

/// Seeded bytes (xorshift64*): the same every run, incompressible.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

fn set_id(n: usize) -> String {
    let t = jiff::Timestamp::from_second(1_790_000_000 + 900 * n as i64).expect("in range");
    new_set_id(t, SetKind::Full)
}

/// Take set `n` on the primary: each role's snapshot from `payload`, and
/// its manifest in the catalog (as take_set would leave them).
fn take_set(pri: &Site, n: usize, payload: &dyn Fn(usize) -> Vec<u8>) -> Result<Manifest> {
    let id = set_id(n);
    let t = snapsite::base::model::parse_set_id(&id)
        .ok_or_else(|| anyhow!("bad set id {id}"))?
        .0;
    let mut members = Vec::new();
    for (i, r) in ROLES.iter().enumerate() {
        pri.store.insert(r, &id, &payload(i));
        let vol = pri.cfg.volumes.iter().find(|v| v.role == *r).expect("role");
        members.push(Member {
            source: vol.source.clone(),
            storage_id: snapsite::backend::Backend::storage_id(&pri.store, vol, &id)?,
            after: t + jiff::SignedDuration::from_millis(5),
            ..Member::plain(r, &id, t)
        });
    }
    let m = Manifest {
        format: MANIFEST_FORMAT,
        id,
        kind: SetKind::Full,
        site: pri.cfg.site.clone(),
        seq: n as u64 + 1,
        generation: 1,
        members,
        safety_margin_ms: 0,
        committed_at: None,
        standby_order: None,
    };
    pri.catalog().write_manifest(&m)?;
    Ok(m)
}

// ---- the ship: coordinator::ship's session, over a socket pair -------------

type ClientReader = Reader<BufReader<Deadline<UnixStream>>>;
type ClientWriter = Writer<BufWriter<Deadline<UnixStream>>>;

/// One ship session from `pri` to `serve` on `stb`, as
/// `coordinator::ship_session` runs it (which needs a child process for its
/// connection): hello, this site's listing while the standby makes its
/// own, welcome, the sets the standby lacks planned with
/// `coordinator::plan_set` and sent through `pipeline::run` — every
/// snapshot of a set, then its commit, the answers read after — then bye.
/// Returns the committed set ids.
fn ship(pri: &Site, stb: &Site) -> Result<Vec<String>> {
    ship_since(pri, stb, None)
}

/// [`ship`] whose hello names `since` (the newest full set the primary's
/// record says the standby committed, as `coordinator::welcome_since`
/// picks it): the welcome starts from it.
fn ship_since(pri: &Site, stb: &Site, since: Option<&str>) -> Result<Vec<String>> {
    let (client, server) = UnixStream::pair()?;
    let cfg = stb.cfg.clone();
    let store = stb.store.clone();
    let serve = std::thread::spawn(move || {
        let input = BufReader::with_capacity(
            1 << 20,
            Deadline::new(server.try_clone()?, None, "the primary"),
        );
        let output = BufWriter::with_capacity(1 << 16, Deadline::new(server, None, "the primary"));
        snapsite::standby::serve::serve_with(&cfg, &move |_| Ok(store.backend()), input, output)
            .map_err(anyhow::Error::from)
    });
    let mut w: ClientWriter = Writer::new(BufWriter::with_capacity(
        1 << 20,
        Deadline::new(client.try_clone()?, None, "the standby"),
    ));
    let mut r: ClientReader = Reader::new(BufReader::with_capacity(
        1 << 20,
        Deadline::new(client, None, "the standby"),
    ));
    let sent = ship_session(pri, &mut r, &mut w, since);
    drop(w);
    drop(r);
    let served = serve.join().map_err(|_| anyhow!("serve panicked"))?;
    let committed = sent?;
    served.context("serve")?;
    Ok(committed)
}

fn ship_session(
    pri: &Site,
    r: &mut ClientReader,
    w: &mut ClientWriter,
    since: Option<&str>,
) -> Result<Vec<String>> {
    use snapsite::primary::coordinator::{complete_local_listing, local_listing_from};
    let stores = pri.stores();
    let catalog = pri.catalog();
    // as `coordinator::ship_session`: this site's listing from `since`
    // (when it holds it), then the hello naming it
    let since = match since {
        Some(id) => catalog.manifest(id)?,
        None => None,
    };
    let (mut local, since) = local_listing_from(&stores, since)?;
    w.magic()?;
    w.msg(&Msg::Hello {
        protocol: PROTOCOL_VERSION,
        site: pri.cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        since: since.as_ref().map(|m| m.id.clone()),
    })?;
    w.flush()?;
    r.magic()?;
    let (volumes, committed) = match r.msg()? {
        Msg::Welcome {
            volumes, committed, ..
        } => (volumes, committed),
        other => bail!("expected welcome, got {other:?}"),
    };
    let committed = committed.into_iter().collect();
    if let Some(since) = &since {
        complete_local_listing(&stores, &mut local, since, &committed, &volumes)?;
    }
    let local_has = local.snapshots();
    let mut standby_has: BTreeMap<String, std::collections::BTreeSet<String>> = volumes
        .into_iter()
        .map(|v| (v.role, v.snapshots.into_iter().collect()))
        .collect();
    let mut done = Vec::new();
    for set in sets_to_ship(&pri.cfg, &catalog, &committed, &local_has)? {
        let steps = plan_set(&set, &standby_has, &local_has);
        for step in &steps {
            let store = stores.get(&step.role)?;
            let member = set.member(&step.role).expect("planned from members");
            w.msg(&Msg::Begin {
                set_id: set.id.clone(),
                role: step.role.clone(),
                snapshot: step.snapshot.clone(),
                base: step.base.clone(),
                storage_id: member.storage_id.clone(),
                resume: false,
            })?;
            let mut src = store.send(&step.snapshot, step.base.as_deref())?;
            let summary = snapsite::wire::pipeline::run(
                &mut *src,
                snapsite::wire::compress::Compression::None,
                &mut |chunk| match chunk {
                    snapsite::wire::pipeline::Chunk::Plain(d) => w.data(&d),
                    snapsite::wire::pipeline::Chunk::Compressed { z, .. } => w.data_compressed(&z),
                },
            )
            .map_err(|e| match e {
                snapsite::wire::pipeline::Failed::Read(e) => anyhow!("reading {}: {e}", step.role),
                snapsite::wire::pipeline::Failed::Emit(e) => anyhow!("sending {}: {e}", step.role),
            })?;
            src.finish()?;
            w.msg(&Msg::End {
                bytes: summary.bytes,
                blake3: summary.blake3,
            })?;
        }
        w.msg(&Msg::Commit {
            manifest: set.clone(),
        })?;
        w.flush()?;
        for step in &steps {
            match r.msg()? {
                Msg::Ack { role, snapshot, .. }
                    if role == step.role && snapshot == step.snapshot =>
                {
                    standby_has.entry(role).or_default().insert(snapshot);
                }
                other => bail!(
                    "expected ack of {} {}, got {other:?}",
                    step.role,
                    step.snapshot
                ),
            }
        }
        match r.msg()? {
            Msg::Committed { set_id } if set_id == set.id => done.push(set_id),
            other => bail!("set {}: expected committed, got {other:?}", set.id),
        }
    }
    w.msg(&Msg::Bye)?;
    w.flush()?;
    Ok(done)
}

fn full_payload(n: usize) -> impl Fn(usize) -> Vec<u8> {
    move |i| data((n * 16 + i) as u64, FULL_BYTES[i])
}

fn ship_full() -> Result<()> {
    let (pri, stb) = (site("primary", "")?, site("standby", "")?);
    let m = take_set(&pri, 0, &full_payload(0))?;
    let committed = measured(|| ship(&pri, &stb))?;
    ensure!(committed == [m.id.clone()], "committed {committed:?}");
    same_snapshots(&pri, &stb, &m)
}

/// The standby's `[detect]` meter (issue 31) may cost at most this share
/// of `ship_incremental` (against the same ship with it off).
const DETECT_COST_PERCENT: f64 = 5.0;

fn ship_incremental(detect: bool) -> Result<()> {
    let detect = if detect {
        ""
    } else {
        "[detect]\nenabled = false\n"
    };
    let (pri, stb) = (site("primary", "")?, site("standby", detect)?);
    take_set(&pri, 0, &full_payload(0))?;
    ship(&pri, &stb)?;
    let m = take_set(&pri, 1, &|i| {
        data(1000 + i as u64, FULL_BYTES[i] / INCREMENTAL_DIVISOR)
    })?;
    let committed = measured(|| ship(&pri, &stb))?;
    ensure!(committed == [m.id.clone()], "committed {committed:?}");
    same_snapshots(&pri, &stb, &m)
}

/// A btrfs send stream (v1) of `total` bytes as an incremental of a mail
/// store: new message files written in 48 KiB commands (text), existing
/// files rewritten with noise and renamed, a few unlinks.
fn btrfs_stream(total: usize) -> Vec<u8> {
    fn cmd(out: &mut Vec<u8>, c: u16, attrs: &[(u16, &[u8])]) {
        let len: usize = attrs.iter().map(|(_, v)| 4 + v.len()).sum();
        out.extend((len as u32).to_le_bytes());
        out.extend(c.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        for (t, v) in attrs {
            out.extend(t.to_le_bytes());
            out.extend((v.len() as u16).to_le_bytes());
            out.extend(*v);
        }
    }
    let line = b"Subject: the quarterly figures\r\nSee attached. ";
    let text: Vec<u8> = (0..49152).map(|i| line[i % line.len()]).collect();
    let noise = data(77, 49152);
    let mut out = b"btrfs-stream\0".to_vec();
    out.extend(1u32.to_le_bytes());
    let mut n = 0u64;
    while out.len() < total {
        n += 1;
        let tmp = format!("o{n}-1-0");
        let name = format!("blobs/{}/{n}.msg", n % 97);
        let offset = 0u64.to_le_bytes();
        if n % 8 == 0 {
            // An existing file rewritten in place, then renamed.
            let old = format!("blobs/{}/old{n}.msg", n % 97);
            cmd(
                &mut out,
                15,
                &[(15, old.as_bytes()), (18, &offset), (19, &noise)],
            );
            let to = format!("{old}.locked");
            cmd(&mut out, 9, &[(15, old.as_bytes()), (16, to.as_bytes())]);
        } else {
            cmd(&mut out, 3, &[(15, tmp.as_bytes()), (20, &n.to_le_bytes())]);
            cmd(&mut out, 9, &[(15, tmp.as_bytes()), (16, name.as_bytes())]);
            cmd(
                &mut out,
                15,
                &[(15, name.as_bytes()), (18, &offset), (19, &text)],
            );
        }
        if n % 16 == 0 {
            let gone = format!("blobs/{}/gone{n}.msg", n % 97);
            cmd(&mut out, 11, &[(15, gone.as_bytes())]);
        }
    }
    cmd(&mut out, 21, &[]);
    out
}

fn meter_btrfs() -> Result<()> {
    let stream = btrfs_stream(16 << 20);
    let sig = measured(|| {
        let mut m = snapsite::standby::signals::Meter::new("btrfs", true, false);
        for frame in stream.chunks(snapsite::wire::stream::MAX_DATA_FRAME) {
            m.feed(frame);
        }
        m.finish()
    });
    ensure!(sig.complete, "the stream did not decode: {:?}", sig.note);
    ensure!(
        sig.files_new > 0 && sig.files_rewritten > 0 && sig.renames > 0,
        "{sig:?}"
    );
    ensure!(
        sig.rewrite_sampled_blocks > 0
            && sig.rewrite_incompressible_blocks == sig.rewrite_sampled_blocks,
        "{sig:?}"
    );
    Ok(())
}

fn ship_no_change() -> Result<()> {
    let (pri, stb) = (site("primary", "")?, site("standby", "")?);
    // Both sites as if every set had been shipped: the same manifests, the
    // snapshots on both stores (small payloads: only the listing counts).
    for n in 0..NO_CHANGE_SETS {
        let m = take_set(&pri, n, &|i| data((n * 16 + i) as u64, 64))?;
        for r in ROLES {
            let bytes = pri.store.0.lock().unwrap().snaps[&(r.to_string(), m.id.clone())].clone();
            stb.store
                .0
                .lock()
                .unwrap()
                .snaps
                .insert((r.to_string(), m.id.clone()), bytes);
        }
        let mut committed = m.clone();
        committed.committed_at = Some(jiff::Timestamp::from_second(1_800_000_000)?);
        stb.catalog().write_manifest(&committed)?;
    }
    // The primary's record names the newest set (all full), committed
    // there by the ship before: the welcome starts from it.
    let newest = set_id(NO_CHANGE_SETS - 1);
    let committed = measured(|| ship_since(&pri, &stb, Some(&newest)))?;
    ensure!(
        committed.is_empty(),
        "nothing to ship, yet committed {committed:?}"
    );
    ensure!(stb.catalog().manifests()?.len() == NO_CHANGE_SETS);
    Ok(())
}

/// The standby's copy of `m`'s snapshots holds the primary's bytes.
fn same_snapshots(pri: &Site, stb: &Site, m: &Manifest) -> Result<()> {
    let payload = |s: &Site, r: &str| -> Result<Vec<u8>> {
        let st = s.store.0.lock().unwrap();
        let b = st
            .snaps
            .get(&(r.to_string(), m.id.clone()))
            .ok_or_else(|| anyhow!("{}: no {r} {}", s.cfg.site, m.id))?;
        // after the header's three lines
        let mut lines = 0;
        let start = b
            .iter()
            .position(|&c| {
                lines += (c == b'\n') as usize;
                lines == 3
            })
            .ok_or_else(|| anyhow!("bad mem stream"))?;
        Ok(b[start + 1..].to_vec())
    };
    for r in ROLES {
        ensure!(
            payload(pri, r)? == payload(stb, r)?,
            "{r}: standby's bytes differ"
        );
    }
    ensure!(stb.catalog().has_manifest(&m.id), "{} not committed", m.id);
    Ok(())
}

// ---- the spool ---------------------------------------------------------------

fn write_records(root: &Path, from: usize, k: usize) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("redo.log"))?;
    for n in from..from + k {
        writeln!(f, "record {n:08} {}", "x".repeat(n % 97))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    let mut entries: Vec<_> = std::fs::read_dir(from)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

fn tree(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            } else {
                out.insert(
                    e.path().strip_prefix(root)?.to_path_buf(),
                    std::fs::read(e.path())?,
                );
            }
        }
    }
    Ok(out)
}

fn spool_apply() -> Result<()> {
    let stream = "[stream]\nfiles = [\"redo.log\", \"archive/redo-*.log\"]\nflush_interval = \"100ms\"\nspool_max = \"256MiB\"\n";
    let stb = site("standby", stream)?;
    let pri = tempfile::tempdir()?;
    let root = pri.path().join("redolog");
    std::fs::create_dir_all(root.join("archive"))?;
    std::fs::write(root.join("redo.log"), b"")?;

    let (client, server) = UnixStream::pair()?;
    let cfg = stb.cfg.clone();
    let store = stb.store.clone();
    let serve = std::thread::spawn(move || -> Result<()> {
        let input = Deadline::new(server.try_clone()?, None, "the primary");
        let output = Deadline::new(server, None, "the primary");
        Ok(snapsite::standby::serve::serve_with(
            &cfg,
            &move |_| Ok(store.backend()),
            input,
            output,
        )?)
    });
    let mut w = Writer::new(client.try_clone()?);
    let mut r = Reader::new(client);
    let (seq, files) = follower::spool_handshake(&stb.cfg, &mut r, &mut w)?;
    let mut f = Follower::new(
        root.clone(),
        vec!["redo.log".into(), "archive/redo-*.log".into()],
    );
    f.resume(seq, &files)?;
    let mut rec = FollowerRecord::default();
    let mut flush = |f: &mut Follower| -> Result<()> {
        while !f.flush(&mut r, &mut w, &mut rec)? {}
        Ok(())
    };
    flush(&mut f)?;
    let snap = tempfile::tempdir()?;
    let mut n = 0;
    for round in 0..SPOOL_FLUSHES {
        write_records(&root, n, SPOOL_RECORDS)?;
        n += SPOOL_RECORDS;
        if round % SPOOL_ROLLOVER_EVERY == SPOOL_ROLLOVER_EVERY - 1 {
            std::fs::rename(
                root.join("redo.log"),
                root.join(format!("archive/redo-{n:08}.log")),
            )?;
            std::fs::write(root.join("redo.log"), b"")?;
        }
        if round == SPOOL_FLUSHES / 2 {
            // the redolog snapshot, between a change and its flush
            copy_dir(&root, &snap.path().join("copy"))?;
        }
        flush(&mut f)?;
    }
    w.msg(&Msg::Bye)?;
    drop(w);
    drop(r);
    serve.join().map_err(|_| anyhow!("serve panicked"))??;

    let copy = snap.path().join("copy");
    let spool = stb.cfg.state_dir.join("spool");
    let t0 = jiff::Timestamp::from_second(1_790_000_000)?;
    let applied = measured(|| stream_apply::apply_dir(&spool, &copy, t0))?;
    ensure!(applied.events_applied > 0, "nothing applied: {applied:?}");
    ensure!(
        tree(&copy)? == tree(&root)?,
        "copy + spool differs from the primary's files"
    );
    Ok(())
}

// ---- check: every workload under callgrind -----------------------------------

#[derive(Serialize, Deserialize)]
struct Budget {
    /// How the counts were taken; a count is only comparable under the same.
    toolchain: String,
    valgrind: String,
    cpu: String,
    /// Allowed excess over a budget, percent.
    tolerance_percent: f64,
    /// workload -> instructions (callgrind's `Ir`).
    budgets: BTreeMap<String, u64>,
}

fn tool_version(argv: &[&str]) -> String {
    std::process::Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// What decides blake3's code path (and so the count): the SIMD the CPU has
/// that valgrind passes on (no AVX-512 under valgrind 3.19).
fn cpu_class() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let simd = ["avx2", "sse4_1"]
        .into_iter()
        .find(|f| has(f))
        .unwrap_or("portable");
    format!("{} {simd}", std::env::consts::ARCH)
}

/// Callgrind's total `Ir` from its output file (`totals:` or `summary:`).
fn total_ir(out: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(out).with_context(|| format!("{}", out.display()))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("totals:"))
        .or_else(|| text.lines().find(|l| l.starts_with("summary:")))
        .ok_or_else(|| anyhow!("{}: no totals line", out.display()))?;
    line.split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("{}: empty totals", out.display()))?
        .parse()
        .with_context(|| format!("{}: {line}", out.display()))
}

fn run_under_callgrind(valgrind: &str, name: &str, dir: &Path) -> Result<u64> {
    let out = dir.join(format!("callgrind.{name}.out"));
    let log = dir.join(format!("callgrind.{name}.log"));
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new(valgrind);
    // The workloads' sites live in temporary directories; on tmpfs their
    // setup's fsyncs cost nothing (system calls are not counted anyway).
    if tempfile::tempdir_in("/dev/shm").is_ok() {
        cmd.env("TMPDIR", "/dev/shm");
    }
    // glibc moves its mmap threshold up the first time a large block is
    // freed, and when that happens depends on how the threads interleave:
    // whether a frame's buffer is fresh from mmap (zeroed already) or
    // reused from the heap (zeroed by memset) then varied the full ship's
    // count by ±1.5%. A fixed threshold keeps it to about 0.1%.
    cmd.env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=131072");
    let status = cmd
        .arg("--tool=callgrind")
        .arg("--instr-atstart=no")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(format!("--log-file={}", log.display()))
        .arg(&exe)
        .args(["run", name])
        .status()
        .with_context(|| format!("running {valgrind}"))?;
    if !status.success() {
        let tail = std::fs::read_to_string(&log).unwrap_or_default();
        bail!("workload {name} failed under callgrind ({status}):\n{tail}");
    }
    total_ir(&out)
}

fn check(args: &[String]) -> Result<bool> {
    let mut bless = false;
    let mut budget_path = PathBuf::from("bench/perfguard.json");
    let mut keep: Option<PathBuf> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bless" => bless = true,
            "--budget" => budget_path = it.next().ok_or_else(|| anyhow!("--budget FILE"))?.into(),
            "--keep" => keep = Some(it.next().ok_or_else(|| anyhow!("--keep DIR"))?.into()),
            other => {
                bail!("unknown argument `{other}` (check [--bless] [--budget FILE] [--keep DIR])")
            }
        }
    }
    if !cfg!(target_arch = "x86_64") {
        bail!(
            "the budgets and the client requests that delimit the counted work are x86_64's; this is {}",
            std::env::consts::ARCH
        );
    }
    let valgrind = std::env::var("VALGRIND").unwrap_or_else(|_| "valgrind".into());
    let tmp = tempfile::tempdir()?;
    let dir = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let here = Budget {
        toolchain: tool_version(&["rustc", "--version"]),
        valgrind: tool_version(&[&valgrind, "--version"]),
        cpu: cpu_class(),
        tolerance_percent: 5.0,
        budgets: BTreeMap::new(),
    };
    let stored: Option<Budget> = match std::fs::read_to_string(&budget_path) {
        Ok(t) => Some(
            serde_json::from_str(&t)
                .with_context(|| format!("{}: not a budget file", budget_path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && bless => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "{} (scripts/perfguard --bless writes it)",
                    budget_path.display()
                )
            });
        }
    };
    let mut counts = BTreeMap::new();
    for (name, _) in WORKLOADS {
        let t = std::time::Instant::now();
        let ir = run_under_callgrind(&valgrind, name, &dir)?;
        println!(
            "perfguard: {name}: {ir} instructions ({:.1} s under callgrind)",
            t.elapsed().as_secs_f64()
        );
        counts.insert(name.to_string(), ir);
    }
    if bless {
        let b = Budget {
            budgets: counts,
            tolerance_percent: stored.as_ref().map_or(5.0, |s| s.tolerance_percent),
            ..here
        };
        let mut text = serde_json::to_string_pretty(&b)?;
        text.push('\n');
        snapsite::base::catalog::write_atomic(&budget_path, text.as_bytes())?;
        println!("perfguard: wrote {}", budget_path.display());
        return Ok(true);
    }
    let stored = stored.expect("read above");
    for (what, was, now) in [
        ("toolchain", &stored.toolchain, &here.toolchain),
        ("valgrind", &stored.valgrind, &here.valgrind),
        ("cpu", &stored.cpu, &here.cpu),
    ] {
        if was != now {
            println!(
                "perfguard: note: budgets taken with {what} `{was}`, this run has `{now}`; counts may differ for that reason alone"
            );
        }
    }
    let tol = stored.tolerance_percent;
    let mut ok = true;
    for (name, ir) in &counts {
        let Some(&budget) = stored.budgets.get(name) else {
            println!(
                "perfguard: FAIL {name}: no budget in {} (scripts/perfguard --bless)",
                budget_path.display()
            );
            ok = false;
            continue;
        };
        let pct = (*ir as f64 - budget as f64) * 100.0 / budget as f64;
        if pct > tol {
            println!(
                "perfguard: FAIL {name}: {ir} instructions, budget {budget}: {pct:+.2}% (more than {tol}% over)"
            );
            ok = false;
        } else if pct < -tol {
            println!(
                "perfguard: note {name}: {ir} instructions, budget {budget}: {pct:+.2}%; lower the budget (scripts/perfguard --bless) so the gain is kept"
            );
        } else {
            println!("perfguard: ok {name}: {ir} instructions, budget {budget}: {pct:+.2}%");
        }
    }
    if let (Some(on), Some(off)) = (
        counts.get("ship_incremental"),
        counts.get("ship_incremental_detect_off"),
    ) {
        let pct = (*on as f64 - *off as f64) * 100.0 / *off as f64;
        if pct > DETECT_COST_PERCENT {
            println!(
                "perfguard: FAIL the ransomware meter costs {pct:+.2}% of ship_incremental (more than {DETECT_COST_PERCENT}%; issue 31)"
            );
            ok = false;
        } else {
            println!("perfguard: ok the ransomware meter costs {pct:+.2}% of ship_incremental");
        }
    }
    if let (Some(meter), Some(ship)) = (
        counts.get("meter_btrfs_16mib"),
        counts.get("ship_full_16mib"),
    ) {
        let pct = *meter as f64 * 100.0 / *ship as f64;
        if pct > DETECT_COST_PERCENT {
            println!(
                "perfguard: FAIL the btrfs meter counts {pct:.2}% of a 16 MiB ship's instructions (more than {DETECT_COST_PERCENT}%; issue 31)"
            );
            ok = false;
        } else {
            println!(
                "perfguard: ok the btrfs meter counts {pct:.2}% of a 16 MiB ship's instructions"
            );
        }
    }
    if let Some(k) = keep {
        println!(
            "perfguard: callgrind outputs kept in {} (callgrind_annotate FILE)",
            k.display()
        );
    }
    Ok(ok)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("run") => match args.get(1).map(String::as_str) {
            Some("ship_full_16mib") => ship_full().map(|()| true),
            Some("ship_incremental") => ship_incremental(true).map(|()| true),
            Some("ship_incremental_detect_off") => ship_incremental(false).map(|()| true),
            Some("meter_btrfs_16mib") => meter_btrfs().map(|()| true),
            Some("ship_no_change_1000_sets") => ship_no_change().map(|()| true),
            Some("spool_apply") => spool_apply().map(|()| true),
            other => Err(anyhow!("unknown workload {other:?} (perfguard list)")),
        },
        Some("check") => check(&args[1..]),
        Some("list") => {
            for (name, what) in WORKLOADS {
                println!("{name}: {what}");
            }
            Ok(true)
        }
        _ => Err(anyhow!(
            "usage: perfguard run WORKLOAD | check [--bless] [--budget FILE] [--keep DIR] | list"
        )),
    };
    match res {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("perfguard: {e:#}");
            ExitCode::from(2)
        }
    }
}
