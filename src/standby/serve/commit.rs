//! The end of a receive and of a set: a snapshot is acknowledged only
//! after its trailer and the backend's verify, and a set's manifest is
//! committed only when it agrees with this standby's config, receipts
//! and order.

use super::*;

/// The trailer must match what arrived and the backend must accept it;
/// then the signals `meter` measured (if any) and the receipt are written,
/// in that order: both are synced, so a receipt that survives a power cut
/// has its signals beside it (a set judged at its commit never lacks one
/// volume's measure because the receipt outlived it). `Err`: the nack's
/// text, nothing kept.
pub(super) fn verify_and_commit(
    catalog: &Catalog,
    log: &SessionLog,
    inc: &Incoming,
    data: Received,
    mut meter: Option<crate::standby::signals::Meter>,
) -> std::result::Result<Receipt, String> {
    let (role, snapshot) = (inc.role, inc.snapshot);
    let Received {
        sink,
        bytes,
        hash,
        want_bytes,
        want_hash,
        write_err,
    } = data;
    if want_bytes != bytes || want_hash != hash {
        sink.abort();
        let msg = format!(
            "checksum mismatch on {role} {snapshot}: received {bytes} bytes blake3 {hash}, sender says {want_bytes} bytes blake3 {}; discarded",
            wire_str(&want_hash)
        );
        log.event(tracing::Level::ERROR, &msg);
        return Err(msg);
    }
    if let Some(e) = write_err {
        let msg = match sink.commit(&mut |_| Err(Error::integrity("not all data was written"))) {
            Err(be) => format!("{be} (input not fully consumed: {e})"),
            Ok(_) => format!("the receive stopped reading early ({e})"),
        };
        let msg = wire_text(&msg);
        log.event(
            tracing::Level::ERROR,
            &format!("volume `{role}` {snapshot}: receive failed: {msg}"),
        );
        return Err(msg);
    }
    let received_at = Timestamp::now();
    let mut receipt = None;
    let committed = sink.commit(&mut |local_id| {
        let r = Receipt {
            base: inc.base.map(str::to_string),
            bytes,
            blake3: hash.clone(),
            received_at,
            storage_id: local_id,
            set_id: Some(inc.set_id.to_string()),
            sender_storage_id: inc.storage_id.map(str::to_string),
        };
        if let Some(m) = meter.take() {
            crate::standby::signals::record(catalog, &|l, t| log.event(l, t), role, snapshot, m);
        }
        catalog.write_receipt(role, snapshot, &r)?;
        crate::failpoint!("serve.after_receipt");
        receipt = Some(r);
        Ok(())
    });
    match (committed, receipt) {
        (Ok(_), Some(receipt)) => {
            log.event(
                tracing::Level::INFO,
                &format!("volume `{role}` {snapshot}: received and verified, {bytes} bytes"),
            );
            Ok(receipt)
        }
        (res, _) => {
            let _ = catalog.remove_receipt(role, snapshot);
            let why = match res {
                Err(e) => wire_text(&e.to_string()),
                Ok(_) => "the backend did not record a receipt".to_string(),
            };
            log.event(
                tracing::Level::ERROR,
                &format!("volume `{role}` {snapshot}: receive failed: {why}"),
            );
            Err(why)
        }
    }
}

/// Check a manifest from the wire against this standby's own config and
/// records; returns it with the standby's receipts filled in.
pub fn validate_commit(
    cfg: &Config,
    stores: &Stores,
    catalog: &Catalog,
    mut m: Manifest,
) -> Result<Manifest> {
    // The standby's own fields are the standby's to write.
    m.committed_at = None;
    m.standby_order = None;
    m.validate_shape()?;
    // The standby's clock is the one it trusts: a set from the future would
    // sort after every honest set that follows it.
    let horizon = crate::base::model::now() + MAX_AHEAD;
    let id_time = parse_set_id(&m.id).map(|(t, _)| t);
    if id_time.is_some_and(|t| t > horizon) || m.members.iter().any(|x| x.after > horizon) {
        return Err(Error::refused(format!(
            "set {}: dated more than a day ahead of this standby's clock",
            m.id
        ))
        .with_hint("check both sites' clocks (NTP)"));
    }
    if m.site.is_empty() || m.site.len() > 64 || wire_str(&m.site) != m.site {
        return Err(Error::refused(format!(
            "set {}: site name `{}` is not plausible",
            m.id,
            wire_str(&m.site)
        )));
    }
    let expected: Vec<&str> = match m.kind {
        SetKind::Full => cfg.volumes.iter().map(|v| v.role.as_str()).collect(),
        SetKind::Redolog => vec![cfg.redolog_role.as_str()],
    };
    let mut got: Vec<&str> = m.members.iter().map(|x| x.role.as_str()).collect();
    got.sort_unstable();
    let mut want = expected.clone();
    want.sort_unstable();
    if got != want {
        return Err(Error::refused(format!(
            "set {}: a {} set here has exactly the volumes {:?}, the manifest lists {:?}",
            m.id,
            m.kind.as_str(),
            want,
            got.iter().map(|r| wire_str(r)).collect::<Vec<_>>()
        ))
        .with_hint("the primary's and the standby's configs must name the same volumes"));
    }
    // Which members are here, asked of them alone: btrfs looks at the
    // named snapshots (not the whole history), ZFS and LVM thin answer
    // from one listing per pool or volume group.
    let present = {
        let ask: std::collections::BTreeMap<&str, Vec<&str>> = m
            .members
            .iter()
            .map(|x| (x.role.as_str(), vec![x.snapshot.as_str()]))
            .collect();
        stores.present_all(&ask)?
    };
    for member in &mut m.members {
        let vol = cfg.volume(&member.role).expect("roles checked above");
        if vol.backend().as_str() != member.backend {
            return Err(Error::refused(format!(
                "set {}: volume `{}` is {} on the primary but {} here",
                m.id,
                member.role,
                wire_str(&member.backend),
                vol.backend().as_str()
            )));
        }
        stores.get(&member.role)?;
        if present.get(&member.role).and_then(|found| found.first()) != Some(&true) {
            return Err(Error::storage(format!(
                "set {}: member `{}` has not been received",
                m.id, member.role
            )));
        }
        let receipt = catalog
            .receipt(&member.role, &member.snapshot)?
            .ok_or_else(|| {
                Error::storage(format!(
                    "set {}: member `{}` has no receipt",
                    m.id, member.role
                ))
            })?;
        if receipt.set_id.as_deref().is_some_and(|s| s != m.id) {
            return Err(Error::refused(format!(
                "set {}: member `{}` was received for another set",
                m.id, member.role
            )));
        }
        if let (Some(announced), Some(claimed)) = (
            receipt.sender_storage_id.as_deref(),
            member.storage_id.as_deref(),
        ) {
            if announced != claimed {
                return Err(Error::integrity(format!(
                    "set {}: member `{}` storage id {} differs from the one received ({announced})",
                    m.id,
                    member.role,
                    wire_str(claimed)
                )));
            }
        }
        member.receipt = Some(receipt);
    }
    Ok(m)
}

/// Does a committed manifest say what `sent` says (ignoring what the
/// standby added: receipts and the commit time)?
pub(super) fn same_as_sent(have: &Manifest, sent: &Manifest) -> bool {
    let strip = |m: &Manifest| {
        let mut m = m.clone();
        m.committed_at = None;
        m.standby_order = None;
        for x in &mut m.members {
            x.receipt = None;
        }
        m
    };
    strip(have) == strip(sent)
}

/// Write the manifest — the commit record — once every member is here.
pub(super) fn commit(cfg: &Config, stores: &Stores, catalog: &Catalog, m: Manifest) -> Result<()> {
    validate_set_id(&m.id)?;
    if catalog.has_manifest(&m.id) {
        // Committed by an earlier session: the same manifest again is a
        // retry (the primary missed our answer); anything else is refused.
        let have = catalog
            .manifest(&m.id)?
            .ok_or_else(|| Error::storage(format!("set {} vanished", m.id)))?;
        return if same_as_sent(&have, &m) {
            // The session that wrote it may have died before protecting
            // its members: protect those still the newest of their volume
            // (protecting one releases the older ones).
            let all = catalog.manifests()?;
            let newest: Vec<(&str, &str)> = have
                .member_snapshots()
                .into_iter()
                .filter(|(role, snap)| {
                    !all.iter()
                        .flat_map(|k| &k.members)
                        .any(|x| x.role == *role && x.snapshot.as_str() > *snap)
                })
                .collect();
            stores.protect_common(&newest)
        } else {
            Err(Error::refused(format!(
                "set {} is already committed here with other content; the commit record is kept as it is",
                m.id
            )))
        };
    }
    let own = crate::base::site::current_role(cfg, catalog)?.1;
    if m.generation < own {
        return Err(Error::refused(format!(
            "set {} was taken in generation {}, older than this site's generation {own}: a set of an old primary is never committed",
            m.id, m.generation
        )));
    }
    // What the commit ranks against: the heads (order, claims), no members.
    let known = catalog.set_heads()?;
    check_order_claims(cfg, catalog, &m, &known)?;
    let mut m = validate_commit(cfg, stores, catalog, m)?;
    m.committed_at = Some(Timestamp::now());
    m.standby_order = Some(next_standby_order(own, &m.id, &known)?);
    crate::failpoint!("serve.before_manifest");
    catalog.write_manifest(&m)?;
    crate::failpoint!("serve.after_manifest");
    stores.protect_common(&m.member_snapshots())?;
    tracing::info!(set = %m.id, kind = m.kind.as_str(), "set committed");
    Ok(())
}

/// The manifest's claims about its place in the order — generation and
/// sequence number — within what this standby can believe: a generation at
/// most one above the highest it has seen (any, below a bound, for its
/// first set), a sequence number at most [`MAX_SEQ_STEP`] above the highest
/// it holds and never above [`MAX_SEQ`]. (The order of committed sets is
/// the standby's own, `standby_order`; these bounds keep what a promoted
/// standby continues from — its next generation and sequence — honest.)
pub(super) fn check_order_claims(
    cfg: &Config,
    catalog: &Catalog,
    m: &Manifest,
    known: &[crate::base::catalog::SetHead],
) -> Result<()> {
    let what = format!("set {}", wire_str(&m.id));
    let first_contact = known.is_empty() && catalog.role_record()?.is_none();
    if first_contact {
        if m.generation > MAX_FIRST_GENERATION {
            return Err(Error::refused(format!(
                "{what} claims generation {}, above {MAX_FIRST_GENERATION} (the most a standby's first set may claim); refused",
                m.generation
            )));
        }
    } else {
        // (the heads just read: not the catalog read again)
        let seen = crate::base::site::highest_generation_seen_in(cfg, catalog, known)?;
        crate::base::site::check_claimed_generation(&what, m.generation, seen)?;
    }
    let highest = known.iter().map(|k| k.seq).max();
    let bound = highest.map_or(MAX_SEQ, |h| h.saturating_add(MAX_SEQ_STEP).min(MAX_SEQ));
    if m.seq > bound {
        return Err(Error::refused(match highest {
            Some(h) => format!(
                "{what} claims sequence number {}, more than {MAX_SEQ_STEP} above the highest this standby holds ({h}) or above {MAX_SEQ}; refused",
                m.seq
            ),
            None => format!(
                "{what} claims sequence number {}, above {MAX_SEQ}; refused",
                m.seq
            ),
        }));
    }
    Ok(())
}

/// The standby's place for a set it commits now: after everything its
/// catalog holds. Its generation is its own, or the highest a set in the
/// catalog ranks by if that is higher (sets committed before
/// `standby_order` existed rank by their claimed generation); its commit
/// counter one more than the highest recorded.
pub(super) fn next_standby_order(
    own: u64,
    id: &str,
    known: &[crate::base::catalog::SetHead],
) -> Result<crate::base::model::StandbyOrder> {
    let generation = known
        .iter()
        .map(|k| k.order_key().0)
        .max()
        .unwrap_or(0)
        .max(own);
    let last = known
        .iter()
        .filter_map(|k| k.standby_order.map(|o| o.commit))
        .max()
        .unwrap_or(0);
    let commit = last.checked_add(1).ok_or_else(|| {
        Error::refused(format!(
            "set {}: the commit counter is at its limit ({last}); refused",
            wire_str(id)
        ))
    })?;
    Ok(crate::base::model::StandbyOrder { generation, commit })
}
