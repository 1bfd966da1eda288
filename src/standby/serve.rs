//! The standby's receiving end: `snapsite serve --stdio`, for every
//! transport. Everything that arrives here may come from an intruder holding
//! the primary's key, so serve trusts only its own config, clock and records:
//! it accepts only the volumes its config names, makes every name and marker
//! itself, acknowledges a snapshot only after the trailer checksum matched
//! and the backend's confined receive succeeded, and commits a set's
//! manifest only when it agrees with this standby's config and receipts.
//! Anything cut, corrupted or refused is removed, and the session is logged
//! on the standby (`state_dir/serve.log`), whatever the primary sees.

mod commit;
pub use commit::validate_commit;
use commit::{commit, verify_and_commit};
use std::io::{Read, Write};
use std::time::Duration;

use jiff::Timestamp;

use crate::backend::{self, Receive, SnapshotSink, Store, Stores};
use crate::base::catalog::{Catalog, ServeRecord};
use crate::base::config::{Config, Volume};
use crate::base::error::{Error, Result};
use crate::base::model::{
    Manifest, Receipt, SetKind, parse_set_id, validate_set_id, wire_str, wire_text,
};
use crate::wire::stream::{Frame, Msg, PROTOCOL_VERSION, Reader, VolumeInventory, Writer};

/// How long serve waits for the primary to say anything before it gives up
/// the session (discarding a partial receive and releasing the lock).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How far ahead of the standby's clock a set may be dated.
const MAX_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

/// How far a set's sequence number may run ahead of the highest this
/// standby holds: sets the primary took (and maybe pruned) while the
/// standby was away — 19 years of one set a minute.
pub const MAX_SEQ_STEP: u64 = 10_000_000;

/// No set's sequence number is above this (2^53: exact in every JSON
/// reader; 285 000 years of a set a millisecond), so the sequence of a
/// site promoted from this standby never runs out.
pub const MAX_SEQ: u64 = 1 << 53;

/// The generation a standby's first set may claim: a new standby has seen
/// no generation yet, so it takes the primary's (bounded, so that the one
/// after it always exists).
pub const MAX_FIRST_GENERATION: u64 = 1 << 32;

/// The backend implementation of a volume: `backend::implementation` in
/// production, an in-memory store in the protocol tests. Serve binds each
/// volume to its implementation once per session ([`Stores`]).
pub type OpenBackend<'a> = &'a dyn Fn(&Volume) -> Result<Box<dyn backend::Backend>>;

fn production(vol: &Volume) -> Result<Box<dyn backend::Backend>> {
    Ok(backend::implementation(vol))
}

fn open_stores(cfg: &Config, open: OpenBackend) -> Result<Stores> {
    let stores = cfg
        .volumes
        .iter()
        .map(|v| Ok(Store::bind(v.clone(), open(v)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Stores::from_stores(stores))
}

pub fn inventory(cfg: &Config) -> Result<Vec<VolumeInventory>> {
    inventory_of(&open_stores(cfg, &production)?)
}

/// Every volume's snapshots and resumable receive, from one listing per
/// pool / volume group / filesystem.
fn inventory_of(stores: &Stores) -> Result<Vec<VolumeInventory>> {
    let mut listing = stores.listing()?;
    stores
        .iter()
        .map(|s| {
            let l = listing.volumes.remove(s.role()).unwrap_or_default();
            Ok(VolumeInventory {
                role: s.role().to_string(),
                backend: s.kind().as_str().into(),
                snapshots: l.snapshots,
                resumable: l.resumable,
            })
        })
        .collect()
}

/// The standby's own record of serve sessions: `state_dir/serve.log`, one
/// line per event, every wire string escaped. Also goes to tracing.
pub struct SessionLog {
    path: std::path::PathBuf,
    session: String,
}

impl SessionLog {
    pub fn new(catalog: &Catalog) -> SessionLog {
        SessionLog {
            path: catalog.root().join("serve.log"),
            session: format!("{}-{}", Timestamp::now().as_second(), std::process::id()),
        }
    }

    /// `text` must already be safe (wire strings passed through `wire_str`).
    pub fn event(&self, level: tracing::Level, text: &str) {
        match level {
            tracing::Level::ERROR => tracing::error!("{text}"),
            tracing::Level::WARN => tracing::warn!("{text}"),
            _ => tracing::info!("{text}"),
        }
        let line = format!(
            "{} session={} {} {}\n",
            Timestamp::now(),
            self.session,
            level.as_str(),
            text.replace(['\n', '\r'], " ")
        );
        let _ = std::fs::create_dir_all(self.path.parent().unwrap_or(&self.path));
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            let _ = f.write_all(line.as_bytes());
            // Warnings and errors reach the disk before the session goes
            // on; the progress lines need not wait for it (a killed serve
            // loses nothing written, and the receipts and manifests are the
            // records that must survive a power cut).
            if level <= tracing::Level::WARN {
                let _ = f.sync_data();
            }
        }
    }
}

/// Removes `serve.json` when the session ends, however it ends.
struct ServeRecordGuard<'a>(&'a Catalog);

impl Drop for ServeRecordGuard<'_> {
    fn drop(&mut self) {
        self.0.remove_serve_record();
    }
}

/// Serve one session on `input`/`output` (stdin/stdout for `--stdio`; give
/// them a `stream::Deadline` so a silent primary ends the session).
pub fn serve<R: Read, W: Write>(cfg: &Config, input: R, output: W) -> Result<()> {
    serve_with(cfg, &production, input, output)
}

/// `serve` with the volumes' backends opened by `open`.
pub fn serve_with<R: Read, W: Write>(
    cfg: &Config,
    open: OpenBackend,
    input: R,
    output: W,
) -> Result<()> {
    let catalog = Catalog::new(&cfg.state_dir);
    let log = SessionLog::new(&catalog);
    let res = open_stores(cfg, open)
        .and_then(|stores| serve_session(cfg, &stores, &catalog, &log, input, output));
    match &res {
        Ok(()) => log.event(tracing::Level::INFO, "session finished"),
        Err(e) => log.event(
            tracing::Level::ERROR,
            &format!("session failed: {}", wire_text(&format!("{e:#}"))),
        ),
    }
    res
}

fn serve_session<R: Read, W: Write>(
    cfg: &Config,
    stores: &Stores,
    catalog: &Catalog,
    log: &SessionLog,
    input: R,
    output: W,
) -> Result<()> {
    let mut r = Reader::new(input);
    let mut w = Writer::new(output);
    w.magic()?;
    w.flush()?;
    r.magic()?;
    let first = r.msg()?;
    if let Msg::SpoolHello { .. } = first {
        // Redolog streaming: a long-lived session beside the ship sessions,
        // under the spool's own lock (never the site lock). A site recorded
        // as primary spools nothing (split-brain guard).
        let (role, generation) = crate::base::site::current_role(cfg, catalog)?;
        if role == crate::base::site::Role::Primary {
            return Err(refuse_as_primary(
                log,
                &mut w,
                "spool session",
                format!(
                    "this site ({}) is the primary in generation {generation}: it spools nothing",
                    cfg.site
                ),
            ));
        }
        return crate::standby::spool::serve_spool(
            cfg,
            catalog,
            &|l, t| log.event(l, t),
            first,
            r,
            w,
        );
    }
    let _lock = catalog.lock("serve", Duration::from_secs(60))?;
    // A record left behind: the last session died without ending (killed,
    // a power cut); only then can a receive have finished unverified.
    let last = catalog.serve_record().ok().flatten();
    let last_died = last.is_some();
    if let Some(last) = &last {
        stop_leftovers(last, log)?;
    }
    // The hello is checked before the record is written, so that it is
    // written (and synced) once, with the primary's name in it: nothing
    // of this session can be left running before that write.
    let (primary, since) = expect_hello(first, &mut w, log)?;
    let pid = std::process::id() as i32;
    let pgid = nix::unistd::getpgrp().as_raw();
    let record = ServeRecord {
        pid,
        pgid,
        started_at: Timestamp::now(),
        primary: Some(primary),
        group: (pid == pgid).then(|| crate::base::procs::record(pid as u32)),
    };
    catalog.write_serve_record(&record)?;
    let _guard = ServeRecordGuard(catalog);
    remove_interrupted(stores, catalog, log, last_died)?;
    let sess = Session {
        cfg,
        stores,
        catalog,
        log,
    };
    welcome(&sess, &mut w, since.as_deref())?;
    // Compressed frames are accepted from here on.
    r.accept_compressed()?;
    session_loop(&sess, &mut r, &mut w)
}

/// The primary's hello: a protocol this standby speaks. Returns its site
/// name, escaped, and the set it asks the welcome to start from (a valid
/// set id: anything else is refused, naming the field).
fn expect_hello<W: Write>(
    first: Msg,
    w: &mut Writer<W>,
    log: &SessionLog,
) -> Result<(String, Option<String>)> {
    match first {
        Msg::Hello {
            protocol,
            site,
            version,
            since,
        } => {
            if protocol != PROTOCOL_VERSION {
                let message = format!(
                    "protocol {protocol} from {} (snapsite {}) is not supported; this standby speaks {PROTOCOL_VERSION}",
                    wire_str(&site),
                    wire_str(&version)
                );
                let _ = w.msg(&Msg::Error {
                    message: message.clone(),
                });
                return Err(Error::protocol(message));
            }
            if let Some(s) = &since {
                if let Err(e) = validate_set_id(s) {
                    let message = format!(
                        "the hello of {} names `since` that is not a set id: {e}",
                        wire_str(&site)
                    );
                    let _ = w.msg(&Msg::Error {
                        message: message.clone(),
                    });
                    return Err(Error::protocol(message));
                }
            }
            log.event(
                tracing::Level::INFO,
                &format!(
                    "session started: primary {} (snapsite {})",
                    wire_str(&site),
                    wire_str(&version)
                ),
            );
            Ok((wire_str(&site), since))
        }
        other => Err(Error::protocol(format!(
            "expected hello, got {}",
            msg_name(&other)
        ))),
    }
}

/// A session that died (killed, a power cut) may have left its receive
/// program running: `zfs receive` or `btrfs receive` reading what was left
/// in its pipe, in the dead session's process group. It is stopped before
/// anything is listed, so that a receive finishing on its own cannot slip
/// a snapshot with no receipt into the inventory after the leftovers were
/// checked (it was listed as held, so the primary did not send it again
/// and the set's commit was refused). What it left is then removed as any
/// interrupted receive. Only a group recorded with its leader's start time
/// on this boot, never one whose number now names another process.
fn stop_leftovers(last: &ServeRecord, log: &SessionLog) -> Result<()> {
    let Some(group) = &last.group else {
        return Ok(());
    };
    let what = format!("the serve session pid {} that died", last.pid);
    if let Some(done) = crate::base::procs::stop_recorded_group(group, &what)? {
        log.event(tracing::Level::WARN, &done);
    }
    Ok(())
}

/// Leftovers of receives an earlier session did not finish.
/// A receive killed after its receipt was written but before the backend
/// called it complete is kept when the backend can check it against the
/// receipt (btrfs); otherwise the receipt goes with the removed snapshot
/// (the primary sends it again), so no receipt names a snapshot this site
/// does not hold.
fn remove_interrupted(
    stores: &Stores,
    catalog: &Catalog,
    log: &SessionLog,
    last_died: bool,
) -> Result<()> {
    let warn = |text: String| log.event(tracing::Level::WARN, &text);
    for st in stores.iter() {
        // Verified and recorded, only its completion mark missing: kept
        // (the primary finds it in the inventory and does not send it again).
        let kept = st.adopt_verified(&|name| catalog.receipt(st.role(), name).ok().flatten())?;
        for n in kept {
            warn(format!(
                "volume `{}`: kept interrupted receive {n} (verified and recorded before the session ended)",
                st.role()
            ));
        }
        // Only after a session that died: it lists the volume, and a ship's
        // sessions list each pool once (tests/vm/listing.rs).
        let unverified = if last_died {
            remove_unverified(st, catalog)?
        } else {
            Vec::new()
        };
        for n in unverified {
            warn(format!(
                "volume `{}`: removed snapshot {n}: its receive finished after the session ended, unverified (no receipt); it is sent again",
                st.role()
            ));
        }
        let removed = st.cleanup_partial()?;
        for p in removed {
            warn(format!(
                "volume `{}`: removed interrupted receive {p}",
                st.role()
            ));
            let name = p.rsplit(['/', '@']).next().unwrap_or_default();
            if validate_set_id(name).is_ok() && !catalog.has_manifest(name) {
                catalog.remove_receipt(st.role(), name)?;
            }
        }
    }
    Ok(())
}

/// ZFS and LVM: a snapshot a receive completed after its session died
/// (`zfs receive` reading the rest of its pipe after serve was killed) has
/// no receipt: its stream's checksum was never checked. Left there it is
/// listed as held, so the primary would not send it again and its set's
/// commit would be refused for want of a receipt. It goes; the primary
/// sends that one snapshot again. Only the replica's newest snapshot, and
/// only when it is set-named and neither committed nor receipted (btrfs
/// keeps its marker for these, see `cleanup_partial`).
fn remove_unverified(st: &Store, catalog: &Catalog) -> Result<Vec<String>> {
    if !matches!(
        st.kind(),
        crate::base::config::BackendKind::Zfs | crate::base::config::BackendKind::Lvm
    ) || st.volume().replica().is_none()
    {
        return Ok(Vec::new());
    }
    let Some(name) = st.list()?.pop() else {
        return Ok(Vec::new());
    };
    if validate_set_id(&name).is_err()
        || catalog.has_manifest(&name)
        || catalog.receipt(st.role(), &name)?.is_some()
    {
        return Ok(Vec::new());
    }
    st.discard_unverified(&name)?;
    Ok(vec![name])
}

/// What every step of a ship session works with.
struct Session<'a> {
    cfg: &'a Config,
    stores: &'a Stores,
    catalog: &'a Catalog,
    log: &'a SessionLog,
}

/// The inventory, committed sets and the codecs we decode (the caller
/// accepts compressed frames once this is sent). With `since` (the
/// primary's newest recorded full set, see `Msg::Hello`) committed here,
/// only it and the newer sets, and per volume the snapshots from its
/// member on (when that member is held): what the primary's plan and
/// record need, whatever the history's length.
fn welcome<W: Write>(sess: &Session, w: &mut Writer<W>, since: Option<&str>) -> Result<()> {
    // Ids only: the heads of the catalog's index lines, no manifest decoded.
    let heads = sess.catalog.set_heads()?;
    let (committed, volumes) = welcome_tail(
        sess.catalog,
        sess.stores,
        heads.into_iter().map(|h| h.id).collect(),
        since,
    )?;
    let (role, generation) = crate::base::site::current_role(sess.cfg, sess.catalog)?;
    w.msg(&Msg::Welcome {
        protocol: PROTOCOL_VERSION,
        site: sess.cfg.site.clone(),
        volumes,
        committed,
        compress: crate::wire::compress::supported(),
        role: Some(role.as_str().to_string()),
        generation: Some(generation),
    })?;
    if role == crate::base::site::Role::Primary {
        // Split-brain guard, receiving end: a primary never takes sets from
        // anyone (a returning old primary must not overwrite the new one).
        return Err(refuse_as_primary(
            sess.log,
            w,
            "session",
            format!(
                "this site ({}) is the primary in generation {generation}: it receives nothing; the sender must become its standby (`snapsite failback` there)",
                sess.cfg.site
            ),
        ));
    }
    Ok(())
}

/// What the welcome lists: from `committed` (every committed set id, in
/// the catalog's order) and the storage's listing, all of it; or with
/// `since` committed here, the sets not older than it and per volume the
/// snapshots from its member on (the listing filtered to those names; a
/// volume whose member is not held, or that the set has no member of, is
/// listed whole). The primary plans the same from either: every set older
/// than `since` is older than the newest committed one it knows, and the
/// newest common snapshot (its incremental base) is `since`'s member or a
/// newer one. Only `since`'s manifest is read.
pub fn welcome_tail(
    catalog: &Catalog,
    stores: &Stores,
    committed: Vec<String>,
    since: Option<&str>,
) -> Result<(Vec<String>, Vec<VolumeInventory>)> {
    // `since`'s set, when it is committed here and is what its name says
    let set = match since {
        Some(id) if committed.iter().any(|c| c == id) => {
            catalog.manifest(id)?.filter(|m| m.id == id)
        }
        _ => None,
    };
    let Some(set) = set else {
        return Ok((committed, inventory_of(stores)?));
    };
    let from: std::collections::BTreeMap<String, String> = set
        .members
        .iter()
        .map(|m| (m.role.clone(), m.snapshot.clone()))
        .collect();
    let mut listing = stores.listing_from(&from)?;
    let volumes = stores
        .iter()
        .map(|s| {
            let mut l = listing.volumes.remove(s.role()).unwrap_or_default();
            // the member is not held: that volume whole
            if from
                .get(s.role())
                .is_some_and(|m| !l.snapshots.iter().any(|x| x == m))
            {
                l = s.listing()?;
            }
            Ok(VolumeInventory {
                role: s.role().to_string(),
                backend: s.kind().as_str().into(),
                snapshots: l.snapshots,
                resumable: l.resumable,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let committed = committed
        .into_iter()
        .filter(|c| !crate::base::model::older_set(c, &set.id))
        .collect();
    Ok((committed, volumes))
}

/// Split-brain guard: a site recorded as primary refuses `what`; the peer
/// is told why, the refusal is logged.
fn refuse_as_primary<W: Write>(
    log: &SessionLog,
    w: &mut Writer<W>,
    what: &str,
    message: String,
) -> Error {
    log.event(tracing::Level::ERROR, &format!("{what} refused: {message}"));
    let _ = w.msg(&Msg::Error {
        message: message.clone(),
    });
    let _ = w.flush();
    Error::refused(message)
}

/// Snapshots and commits until the primary says bye or closes.
fn session_loop<R: Read, W: Write>(
    sess: &Session,
    r: &mut Reader<R>,
    w: &mut Writer<W>,
) -> Result<()> {
    loop {
        let frame = match r.next_frame()? {
            None => {
                sess.log
                    .event(tracing::Level::INFO, "primary closed the session");
                return Ok(());
            }
            Some(f) => f,
        };
        match frame {
            Frame::Msg(Msg::Begin {
                set_id,
                role,
                snapshot,
                base,
                storage_id,
                resume,
            }) => {
                let inc = Incoming {
                    set_id: &set_id,
                    role: &role,
                    snapshot: &snapshot,
                    base: base.as_deref(),
                    storage_id: storage_id.as_deref(),
                    resume,
                };
                let reply = receive_one(sess, r, inc)?;
                w.msg(&reply)?;
            }
            Frame::Msg(Msg::Commit { manifest }) => {
                w.msg(&commit_reply(sess, manifest))?;
            }
            Frame::Msg(Msg::Bye) => return Ok(()),
            Frame::Msg(other) => {
                return Err(Error::protocol(format!(
                    "unexpected message {}",
                    msg_name(&other)
                )));
            }
            Frame::Data(_) => return Err(Error::protocol("data frame outside a snapshot")),
        }
    }
}

/// Commit a set and say how it went (a refusal is an answer, not an end).
fn commit_reply(sess: &Session, manifest: Manifest) -> Msg {
    let id = wire_str(&manifest.id);
    let reply_id = manifest.id.clone();
    // The verdict judges the members as sent (not re-read from disk).
    let judged = sess.cfg.detect.enabled.then(|| manifest.clone());
    match commit(sess.cfg, sess.stores, sess.catalog, manifest) {
        Ok(()) => {
            sess.log
                .event(tracing::Level::INFO, &format!("set {id} committed"));
            if let Some(m) = judged {
                crate::standby::signals::judge_committed(
                    sess.cfg,
                    sess.catalog,
                    &|l, t| sess.log.event(l, t),
                    &m,
                );
            }
            crate::standby::spool::checkpoint_after_commit(
                sess.cfg,
                sess.stores,
                sess.catalog,
                &|l, t| sess.log.event(l, t),
                &reply_id,
            );
            Msg::Committed { set_id: reply_id }
        }
        Err(e) => {
            let e = wire_text(&e.to_string());
            sess.log.event(
                tracing::Level::ERROR,
                &format!("commit of set {id} refused: {e}"),
            );
            Msg::Error {
                message: format!("set {id}: {e}"),
            }
        }
    }
}

/// A message's name for logs (never its wire content).
fn msg_name(m: &Msg) -> &'static str {
    match m {
        Msg::Hello { .. } => "hello",
        Msg::Welcome { .. } => "welcome",
        Msg::Begin { .. } => "begin",
        Msg::End { .. } => "end",
        Msg::Abort { .. } => "abort",
        Msg::Ack { .. } => "ack",
        Msg::Nack { .. } => "nack",
        Msg::Commit { .. } => "commit",
        Msg::Committed { .. } => "committed",
        Msg::Error { .. } => "error",
        Msg::Bye => "bye",
        Msg::SpoolHello { .. }
        | Msg::SpoolWelcome { .. }
        | Msg::SpoolBatch { .. }
        | Msg::SpoolAck { .. }
        | Msg::SpoolRefused { .. } => "spool",
    }
}

/// Skip a refused snapshot's data up to its End/Abort, keeping the stream in sync.
fn drain<R: Read>(r: &mut Reader<R>) -> Result<()> {
    loop {
        match r.next_frame()? {
            Some(Frame::Data(_)) => {}
            Some(Frame::Msg(Msg::End { .. })) | Some(Frame::Msg(Msg::Abort { .. })) => {
                return Ok(());
            }
            Some(Frame::Msg(m)) => {
                return Err(Error::protocol(format!(
                    "unexpected message {} inside a snapshot",
                    msg_name(&m)
                )));
            }
            None => return Err(Error::protocol("stream cut inside a snapshot")),
        }
    }
}

/// What a `Begin` announced.
struct Incoming<'a> {
    set_id: &'a str,
    role: &'a str,
    snapshot: &'a str,
    base: Option<&'a str>,
    storage_id: Option<&'a str>,
    resume: bool,
}

/// Check a `Begin` against this standby's config and records; the refusal
/// text is safe to log and to send back.
fn admit<'s>(
    cfg: &Config,
    stores: &'s Stores,
    catalog: &Catalog,
    inc: &Incoming,
) -> std::result::Result<&'s Store, String> {
    let store = stores.find(inc.role).ok_or_else(|| {
        format!(
            "volume `{}` is not configured on standby {}; refused",
            wire_str(inc.role),
            cfg.site
        )
    })?;
    for name in [Some(inc.set_id), Some(inc.snapshot), inc.base]
        .into_iter()
        .flatten()
    {
        validate_set_id(name)
            .map_err(|_| format!("`{}` is not a snapsite set id; refused", wire_str(name)))?;
    }
    if inc.snapshot != inc.set_id {
        return Err(format!(
            "snapshot `{}` is not named after its set `{}`; refused",
            wire_str(inc.snapshot),
            wire_str(inc.set_id)
        ));
    }
    if let Some((_, SetKind::Redolog)) = parse_set_id(inc.set_id) {
        if store.role() != cfg.redolog_role {
            return Err(format!(
                "a redolog set carries only the redolog volume `{}`, not `{}`; refused",
                cfg.redolog_role,
                store.role()
            ));
        }
    }
    if let Some(base) = inc.base {
        if !crate::base::model::older_set(base, inc.snapshot) {
            return Err(format!(
                "base `{base}` is not older than `{}`; refused",
                inc.snapshot
            ));
        }
    }
    if catalog.has_manifest(inc.set_id) {
        return Err(format!(
            "set `{}` is already committed here; refused",
            inc.set_id
        ));
    }
    if let Some(id) = inc.storage_id {
        if id.is_empty()
            || id.len() > 128
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(format!(
                "storage id `{}` is not plausible; refused",
                wire_str(id)
            ));
        }
    }
    Ok(store)
}

fn receive_one<R: Read>(sess: &Session, r: &mut Reader<R>, inc: Incoming) -> Result<Msg> {
    let nack = |error: String| Msg::Nack {
        role: inc.role.into(),
        snapshot: inc.snapshot.into(),
        error,
    };
    let store = match admit(sess.cfg, sess.stores, sess.catalog, &inc) {
        Ok(v) => v,
        Err(why) => {
            sess.log.event(tracing::Level::WARN, &why);
            drain(r)?;
            return Ok(nack(why));
        }
    };
    let (role, snapshot) = (inc.role, inc.snapshot);
    let sink = match store.receive(Receive {
        name: snapshot,
        base: inc.base,
        expect_id: inc.storage_id,
        resume: inc.resume,
    }) {
        Ok(s) => s,
        Err(e) => {
            let why = wire_text(&e.to_string());
            sess.log.event(
                tracing::Level::ERROR,
                &format!("volume `{role}` {snapshot}: cannot receive: {why}"),
            );
            drain(r)?;
            return Ok(nack(why));
        }
    };
    tracing::info!(%role, %snapshot, base = inc.base.unwrap_or("-"), "receiving");
    let mut meter = sess.cfg.detect.enabled.then(|| {
        let backend = sess.cfg.volume(role).map_or("", |v| v.backend().as_str());
        let mut m = crate::standby::signals::Meter::new(backend, inc.base.is_some(), inc.resume);
        m.know_base(
            inc.base
                .and_then(|b| sess.catalog.signals(role, b).ok().flatten())
                .as_ref(),
        );
        if m.wants_base_map() {
            m.know_base_map(|| sink.base_map().transpose().map_err(|e| e.to_string()));
        }
        m
    });
    let data = match pump(r, sink, sess.log, &inc, &mut meter)? {
        Pumped::Complete(d) => d,
        Pumped::Aborted(reason) => return Ok(nack(reason)),
    };
    match verify_and_commit(sess.catalog, sess.log, &inc, data, meter) {
        Ok(receipt) => Ok(Msg::Ack {
            role: role.into(),
            snapshot: snapshot.into(),
            receipt,
        }),
        Err(why) => Ok(nack(why)),
    }
}

/// A snapshot's data, all of it received up to the sender's `End`.
struct Received {
    sink: Box<dyn SnapshotSink>,
    bytes: u64,
    hash: String,
    want_bytes: u64,
    want_hash: String,
    /// The backend stopped taking data (its own error, from commit, says why).
    write_err: Option<std::io::Error>,
}

enum Pumped {
    Complete(Received),
    /// The sender aborted; the partial receive is gone. The nack's text.
    Aborted(String),
}

/// Data frames into the sink (hashing what was decoded: the blake3 covers
/// uncompressed bytes) up to `End` or `Abort`. A cut or corrupt stream is
/// an error; the sink keeps its partial state only where it can resume.
fn pump<R: Read>(
    r: &mut Reader<R>,
    mut sink: Box<dyn SnapshotSink>,
    log: &SessionLog,
    inc: &Incoming,
    meter: &mut Option<crate::standby::signals::Meter>,
) -> Result<Pumped> {
    let (role, snapshot) = (inc.role, inc.snapshot);
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    loop {
        match r.next_frame() {
            Ok(Some(Frame::Data(d))) => {
                let first = bytes == 0;
                hasher.update(&d);
                if let Some(m) = meter {
                    m.feed(&d);
                }
                bytes += d.len() as u64;
                if write_err.is_none() {
                    if let Err(e) = sink.write_all(&d) {
                        write_err = Some(e);
                    }
                }
                if first {
                    crate::failpoint!("serve.mid_receive");
                }
            }
            Ok(Some(Frame::Msg(Msg::End {
                bytes: want_bytes,
                blake3: want_hash,
            }))) => {
                return Ok(Pumped::Complete(Received {
                    sink,
                    bytes,
                    hash: hasher.finalize().to_hex().to_string(),
                    want_bytes,
                    want_hash,
                    write_err,
                }));
            }
            Ok(Some(Frame::Msg(Msg::Abort { reason }))) => {
                sink.abort();
                log.event(
                    tracing::Level::WARN,
                    &format!(
                        "volume `{role}` {snapshot}: sender aborted ({}); partial receive removed",
                        wire_text(&reason)
                    ),
                );
                return Ok(Pumped::Aborted(format!(
                    "aborted by sender: {}",
                    wire_text(&reason)
                )));
            }
            Ok(Some(Frame::Msg(m))) => {
                sink.abort();
                return Err(Error::protocol(format!(
                    "unexpected message {} inside snapshot data",
                    msg_name(&m)
                )));
            }
            Ok(None) => {
                sink.cut();
                log.event(
                    tracing::Level::ERROR,
                    &format!("volume `{role}` {snapshot}: stream cut after {bytes} bytes; partial receive removed or kept for resuming"),
                );
                return Err(Error::protocol(format!(
                    "stream cut after {bytes} bytes of {role} {snapshot}"
                )));
            }
            Err(e) => {
                // A corrupt frame (one that does not decompress, too) or a
                // silent primary: nothing of it reached the backend, so what
                // was received before is as good as a cut.
                sink.cut();
                log.event(
                    tracing::Level::ERROR,
                    &format!(
                        "volume `{role}` {snapshot}: {}; partial receive removed or kept for resuming",
                        wire_text(&e.to_string())
                    ),
                );
                return Err(e.context(format!("{role} {snapshot}")));
            }
        }
    }
}
