//! The ship's handshake: the hello (naming the set the welcome may start
//! from), the standby's welcome, and this site's listing from that set —
//! completed whole where the standby listed a volume whole.

use super::*;

/// The standby as it answered the handshake.
pub struct StandbyView {
    pub site: String,
    pub volumes: Vec<crate::wire::stream::VolumeInventory>,
    pub committed: BTreeSet<String>,
    /// The codecs the standby decodes (empty: an older standby).
    pub compress: Vec<String>,
    /// The peer's recorded role and generation (absent from older builds).
    pub role: Option<String>,
    pub generation: Option<u64>,
}

/// Versioned handshake: our hello, the standby's welcome with its inventory.
pub fn handshake(cfg: &Config, conn: &mut transport::Connection) -> Result<StandbyView> {
    send_hello(cfg, conn, None)?;
    read_welcome(conn)
}

/// Our half of the handshake. `since`: the set the standby's welcome may
/// start from (see `Msg::Hello`; `ship` lists its own storage first, to
/// name only a set it holds); None asks for the whole inventory, and
/// needs no listing first.
pub fn send_hello(
    cfg: &Config,
    conn: &mut transport::Connection,
    since: Option<&str>,
) -> Result<()> {
    conn.writer.magic()?;
    conn.writer.msg(&Msg::Hello {
        protocol: PROTOCOL_VERSION,
        site: cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        since: since.map(str::to_string),
    })
}

/// The set a ship's welcome may start from: the newest full set the
/// standby's record (`previous`, its head) says is committed there and
/// that this site still knows (`heads`). Reads that one set's manifest.
/// The caller sends it only when this site still holds every member (see
/// [`local_listing_from`]).
pub fn welcome_since(
    catalog: &Catalog,
    previous: &StandbyRecord,
    heads: &[crate::base::catalog::SetHead],
) -> Result<Option<Manifest>> {
    let Some(id) = previous
        .committed
        .iter()
        .rev()
        .find(|id| crate::base::model::set_kind(id) == Some(SetKind::Full))
    else {
        return Ok(None);
    };
    if !heads.iter().any(|h| h.id == *id) {
        return Ok(None);
    }
    Ok(catalog.manifest(id)?.filter(|m| m.id == *id))
}

/// This site's listing for a ship: with `since` (see [`welcome_since`]),
/// each volume's snapshots from `since`'s member on, and `since` itself
/// when this site holds every member (the newest common snapshot is then
/// that member or a newer one); else the whole listing and no `since`.
pub fn local_listing_from(
    stores: &Stores,
    since: Option<Manifest>,
) -> Result<(crate::backend::Listing, Option<Manifest>)> {
    let Some(set) = since else {
        return Ok((stores.listing()?, None));
    };
    let from: BTreeMap<String, String> = set
        .members
        .iter()
        .map(|m| (m.role.clone(), m.snapshot.clone()))
        .collect();
    let listing = stores.listing_from(&from)?;
    let held = set.members.iter().all(|m| {
        listing
            .get(&m.role)
            .is_some_and(|l| l.snapshots.contains(&m.snapshot))
    });
    if held {
        Ok((listing, Some(set)))
    } else {
        Ok((stores.listing()?, None))
    }
}

/// After a welcome answering `since`: a standby that does not hold
/// `since` committed (pruned, seeded anew) gets every set this site holds
/// considered, from the whole listing here; a volume the standby listed
/// whole (it does not hold `since`'s member there, or it predates
/// `since`) is listed whole here too. The plan is then the one two whole
/// listings give.
pub fn complete_local_listing(
    stores: &Stores,
    local: &mut crate::backend::Listing,
    since: &Manifest,
    committed: &BTreeSet<String>,
    volumes: &[crate::wire::stream::VolumeInventory],
) -> Result<()> {
    if !committed.contains(&since.id) {
        *local = stores.listing()?;
        return Ok(());
    }
    for m in &since.members {
        let tail = volumes
            .iter()
            .find(|v| v.role == m.role)
            .is_some_and(|v| v.snapshots.iter().all(|s| *s >= m.snapshot));
        if !tail {
            let whole = stores.get(&m.role)?.listing()?;
            local.volumes.insert(m.role.clone(), whole);
        }
    }
    Ok(())
}

/// The committed sets a ship records: the welcome's (`committed`), and
/// when the welcome started from `since`, the older sets this site still
/// holds (`heads`) that the record said were committed: as the record
/// last saw them (a welcome from `since` does not list them again). So
/// the record names every set of this site's history the standby took,
/// and no set this site no longer holds (bounded as this site's history
/// is). Reads the whole record only then.
pub(super) fn recorded_committed(
    whole: WholeRecord,
    since: Option<&Manifest>,
    heads: &[crate::base::catalog::SetHead],
    committed: &BTreeSet<String>,
) -> Result<BTreeSet<String>> {
    let mut out = committed.clone();
    let Some(since) = since else {
        return Ok(out);
    };
    // a welcome that lists a set older than `since` is whole
    if !committed.contains(&since.id)
        || committed
            .iter()
            .any(|c| crate::base::model::older_set(c, &since.id))
    {
        return Ok(out);
    }
    let Some(whole) = whole.into_record()? else {
        return Ok(out);
    };
    let here: std::collections::HashSet<&str> = heads.iter().map(|h| h.id.as_str()).collect();
    out.extend(
        whole
            .committed
            .into_iter()
            .filter(|c| crate::base::model::older_set(c, &since.id) && here.contains(c.as_str())),
    );
    Ok(out)
}

/// A standby's `standby.json`, read whole at most once in a session and
/// only when something needs what its head lacks (the older committed
/// sets): the session writes it only after every reader here has read,
/// so one read serves them all.
pub(super) struct WholeRecord<'a> {
    catalog: &'a Catalog,
    name: &'a str,
    read: Option<Option<StandbyRecord>>,
}

impl<'a> WholeRecord<'a> {
    pub(super) fn new(catalog: &'a Catalog, name: &'a str) -> Self {
        WholeRecord {
            catalog,
            name,
            read: None,
        }
    }

    /// The record (None: there is none), read on the first call.
    pub(super) fn get(&mut self) -> Result<Option<&StandbyRecord>> {
        if self.read.is_none() {
            self.read = Some(self.catalog.standby_record_of(self.name)?);
        }
        Ok(self.read.as_ref().and_then(Option::as_ref))
    }

    /// The record, for its last reader (read now if no one read it yet).
    pub(super) fn into_record(self) -> Result<Option<StandbyRecord>> {
        match self.read {
            Some(read) => Ok(read),
            None => self.catalog.standby_record_of(self.name),
        }
    }
}

/// The standby's half: its welcome with its inventory.
pub fn read_welcome(conn: &mut transport::Connection) -> Result<StandbyView> {
    conn.reader
        .magic()
        .map_err(|e| conn.explain_no_handshake(e))?;
    match conn.reader.msg()? {
        Msg::Welcome {
            protocol,
            volumes,
            committed,
            site,
            compress,
            role,
            generation,
        } => {
            if protocol != PROTOCOL_VERSION {
                return Err(Error::protocol(format!(
                    "standby {site} speaks protocol {protocol}, we speak {PROTOCOL_VERSION}"
                )));
            }
            Ok(StandbyView {
                site,
                volumes,
                committed: committed.into_iter().collect(),
                compress,
                role,
                generation,
            })
        }
        other => Err(Error::protocol(format!("expected welcome, got {other:?}"))),
    }
}
