//! The standby's receiving end: `snapsite serve --stdio`, for every
//! transport. It accepts only the volumes its own config names, acknowledges
//! a snapshot only after the trailer checksum matched and the backend's
//! receive succeeded, and commits a set's manifest only when every member
//! is present. Anything cut or corrupted is removed.

use std::io::{Read, Write};

use jiff::Timestamp;

use crate::backend::{self, SnapshotSink};
use crate::catalog::Catalog;
use crate::config::{Config, Volume};
use crate::error::{Error, Result};
use crate::model::{Manifest, Receipt, validate_set_id};
use crate::stream::{Frame, Msg, PROTOCOL_VERSION, Reader, VolumeInventory, Writer};

pub fn inventory(cfg: &Config) -> Result<Vec<VolumeInventory>> {
    cfg.volumes
        .iter()
        .map(|v| {
            let b = backend::for_volume(v)?;
            Ok(VolumeInventory {
                role: v.role.clone(),
                backend: v.backend.as_str().into(),
                snapshots: b.list(v)?,
                resumable: b.resumable(v)?,
            })
        })
        .collect()
}

/// Serve one session on `input`/`output` (stdin/stdout for `--stdio`).
pub fn serve<R: Read, W: Write>(cfg: &Config, input: R, output: W) -> Result<()> {
    let catalog = Catalog::new(&cfg.state_dir);
    let _lock = catalog.lock("serve", std::time::Duration::from_secs(600))?;
    let mut r = Reader::new(input);
    let mut w = Writer::new(output);
    w.magic()?;
    w.flush()?;
    r.magic()?;
    match r.msg()? {
        Msg::Hello {
            protocol,
            site,
            version,
        } => {
            if protocol != PROTOCOL_VERSION {
                let message = format!(
                    "protocol {protocol} from {site} (snapsite {version}) is not supported; this standby speaks {PROTOCOL_VERSION}"
                );
                let _ = w.msg(&Msg::Error {
                    message: message.clone(),
                });
                return Err(Error::protocol(message));
            }
            tracing::info!(primary = %site, %version, "session started");
        }
        other => return Err(Error::protocol(format!("expected hello, got {other:?}"))),
    }
    for v in &cfg.volumes {
        backend::for_volume(v)?.cleanup_partial(v)?;
    }
    let committed = catalog.manifests()?.into_iter().map(|m| m.id).collect();
    w.msg(&Msg::Welcome {
        protocol: PROTOCOL_VERSION,
        site: cfg.site.clone(),
        volumes: inventory(cfg)?,
        committed,
    })?;

    loop {
        let frame = match r.next_frame()? {
            None => {
                tracing::info!("primary closed the session");
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
                let reply = receive_one(
                    cfg,
                    &catalog,
                    &mut r,
                    Incoming {
                        set_id: &set_id,
                        role: &role,
                        snapshot: &snapshot,
                        base: base.as_deref(),
                        storage_id: storage_id.as_deref(),
                        resume,
                    },
                )?;
                w.msg(&reply)?;
            }
            Frame::Msg(Msg::Commit { manifest }) => {
                let id = manifest.id.clone();
                match commit(cfg, &catalog, manifest) {
                    Ok(()) => w.msg(&Msg::Committed { set_id: id })?,
                    Err(e) => {
                        tracing::error!(set = %id, error = %e, "commit refused");
                        w.msg(&Msg::Error {
                            message: format!("set {id}: {e}"),
                        })?;
                    }
                }
            }
            Frame::Msg(Msg::Bye) => {
                tracing::info!("session finished");
                return Ok(());
            }
            Frame::Msg(other) => {
                return Err(Error::protocol(format!("unexpected message {other:?}")));
            }
            Frame::Data(_) => return Err(Error::protocol("data frame outside a snapshot")),
        }
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
                    "unexpected message {m:?} inside a snapshot"
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

fn receive_one<R: Read>(
    cfg: &Config,
    catalog: &Catalog,
    r: &mut Reader<R>,
    inc: Incoming,
) -> Result<Msg> {
    let Incoming {
        set_id,
        role,
        snapshot,
        base,
        storage_id,
        resume,
    } = inc;
    let nack = |error: String| Msg::Nack {
        role: role.into(),
        snapshot: snapshot.into(),
        error,
    };
    let vol: &Volume = match cfg.volume(role) {
        Some(v) => v,
        None => {
            tracing::warn!(%role, %snapshot, "refused: volume not in this standby's config");
            drain(r)?;
            return Ok(nack(format!(
                "volume `{role}` is not configured on standby {}; refused",
                cfg.site
            )));
        }
    };
    for name in [Some(set_id), Some(snapshot), base].into_iter().flatten() {
        if let Err(e) = validate_set_id(name) {
            tracing::warn!(%role, error = %e, "refused: bad snapshot name");
            drain(r)?;
            return Ok(nack(e.to_string()));
        }
    }
    let backend = backend::for_volume(vol)?;
    let sink = match backend.receive(vol, snapshot, base, storage_id, resume) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%role, %snapshot, error = %e, "cannot receive");
            drain(r)?;
            return Ok(nack(e.to_string()));
        }
    };
    tracing::info!(%role, %snapshot, base = base.unwrap_or("-"), "receiving");
    let mut sink: Box<dyn SnapshotSink> = sink;
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    let mut write_err: Option<std::io::Error> = None;
    let (want_bytes, want_hash) = loop {
        match r.next_frame() {
            Ok(Some(Frame::Data(d))) => {
                hasher.update(&d);
                bytes += d.len() as u64;
                if write_err.is_none() {
                    if let Err(e) = sink.write_all(&d) {
                        write_err = Some(e);
                    }
                }
            }
            Ok(Some(Frame::Msg(Msg::End { bytes, blake3 }))) => break (bytes, blake3),
            Ok(Some(Frame::Msg(Msg::Abort { reason }))) => {
                sink.abort();
                tracing::warn!(%role, %snapshot, %reason, "sender aborted; partial receive removed");
                return Ok(nack(format!("aborted by sender: {reason}")));
            }
            Ok(Some(Frame::Msg(m))) => {
                sink.abort();
                return Err(Error::protocol(format!(
                    "unexpected message {m:?} inside snapshot data"
                )));
            }
            Ok(None) => {
                sink.cut();
                tracing::error!(%role, %snapshot, bytes, "stream cut; partial receive removed or kept for resuming");
                return Err(Error::protocol(format!(
                    "stream cut after {bytes} bytes of {role} {snapshot}"
                )));
            }
            Err(e) => {
                // A corrupt frame: nothing of it reached the backend, so
                // what was received before it is as good as a cut.
                sink.cut();
                tracing::error!(%role, %snapshot, error = %e, "corrupt stream; partial receive removed or kept for resuming");
                return Err(e.context(format!("{role} {snapshot}")));
            }
        }
    };
    let got_hash = hasher.finalize().to_hex().to_string();
    if want_bytes != bytes || want_hash != got_hash {
        sink.abort();
        let msg = format!(
            "checksum mismatch on {role} {snapshot}: received {bytes} bytes blake3 {got_hash}, sender says {want_bytes} bytes blake3 {want_hash}; discarded"
        );
        tracing::error!("{msg}");
        return Ok(nack(msg));
    }
    if let Some(e) = write_err {
        // The backend stopped reading; its own error (from commit) says why.
        let msg = match sink.commit(&mut |_| Err(Error::integrity("not all data was written"))) {
            Err(be) => format!("{be} (input not fully consumed: {e})"),
            Ok(_) => unreachable!("record refused the commit"),
        };
        tracing::error!(%role, %snapshot, error = %msg, "receive failed");
        return Ok(nack(msg));
    }
    let received_at = Timestamp::now();
    let mut receipt = None;
    let committed = sink.commit(&mut |storage_id| {
        let r = Receipt {
            base: base.map(str::to_string),
            bytes,
            blake3: got_hash.clone(),
            received_at,
            storage_id,
        };
        catalog.write_receipt(role, snapshot, &r)?;
        receipt = Some(r);
        Ok(())
    });
    match committed {
        Ok(_) => {
            tracing::info!(%role, %snapshot, bytes, "received and verified");
            Ok(Msg::Ack {
                role: role.into(),
                snapshot: snapshot.into(),
                receipt: receipt.expect("recorded"),
            })
        }
        Err(e) => {
            let _ = catalog.remove_receipt(role, snapshot);
            tracing::error!(%role, %snapshot, error = %e, "receive failed");
            Ok(nack(e.to_string()))
        }
    }
}

/// Write the manifest — the commit record — once every member is here.
fn commit(cfg: &Config, catalog: &Catalog, mut m: Manifest) -> Result<()> {
    validate_set_id(&m.id)?;
    if catalog.has_manifest(&m.id) {
        return Ok(()); // already committed by an earlier session
    }
    if m.members.is_empty() {
        return Err(Error::refused("a set without members"));
    }
    for member in &mut m.members {
        let vol = cfg.volume(&member.role).ok_or_else(|| {
            Error::refused(format!(
                "volume `{}` is not configured on this standby",
                member.role
            ))
        })?;
        if vol.backend.as_str() != member.backend {
            return Err(Error::refused(format!(
                "volume `{}` is {} on the primary but {} here",
                member.role,
                member.backend,
                vol.backend.as_str()
            )));
        }
        if member.snapshot != m.id {
            return Err(Error::refused(format!(
                "member {} is not named after its set",
                member.snapshot
            )));
        }
        let present = backend::for_volume(vol)?.list(vol)?;
        if !present.contains(&member.snapshot) {
            return Err(Error::storage(format!(
                "member `{}` {} has not been received",
                member.role, member.snapshot
            )));
        }
        member.receipt = catalog.receipt(&member.role, &member.snapshot)?;
        if member.receipt.is_none() {
            return Err(Error::storage(format!(
                "member `{}` {} has no receipt",
                member.role, member.snapshot
            )));
        }
    }
    m.committed_at = Some(Timestamp::now());
    catalog.write_manifest(&m)?;
    for member in &m.members {
        let vol = cfg.volume(&member.role).expect("checked above");
        backend::for_volume(vol)?.protect_common(vol, &member.snapshot)?;
    }
    tracing::info!(set = %m.id, kind = m.kind.as_str(), "set committed");
    Ok(())
}
