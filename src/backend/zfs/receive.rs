//! The receiving end on ZFS: the gated `zfs receive` (start, verify,
//! discard) and the resume tokens it is given.

use super::*;

/// Tokens go on the command line: allow only what OpenZFS produces.
pub(super) fn check_token(t: &str) -> Result<()> {
    if t.is_empty()
        || t.len() > 1 << 16
        || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(Error::refused("malformed ZFS resume token"));
    }
    Ok(())
}

/// The ZFS part of a receive (a gated [`ProcessSink`] over `zfs receive`).
pub(super) struct ZfsReceive {
    /// The base's guid (incremental), `None` for a full stream.
    pub(super) fromguid: Option<u64>,
    pub(super) toguid: Option<u64>,
    pub(super) ds: String,
    pub(super) name: String,
    /// This receive creates the replica dataset (first full receive).
    pub(super) created_ds: bool,
    pub(super) expect_id: Option<String>,
    pub(super) role: String,
}

impl ZfsReceive {
    pub(super) fn snap(&self) -> String {
        format!("{}@{}", self.ds, self.name)
    }
}

impl ReceiveSteps for ZfsReceive {
    /// Check the first record; only then start `zfs receive`.
    fn start(&mut self, head: &[u8]) -> Result<Running> {
        let begin = parse_begin(head)
            .and_then(|b| {
                check_begin(&b, &self.name, self.fromguid, self.toguid)?;
                Ok(b)
            })
            .map_err(|m| {
                Error::refused(format!(
                    "volume `{}`: refused before zfs receive: {m}",
                    self.role
                ))
            })?;
        tracing::debug!(volume = %self.role, toname = %begin.toname, features = begin.features, "stream header accepted");
        zfs()
            .args(["receive", "-s", "-u"])
            .args(RECEIVE_OVERRIDES)
            .arg(&self.ds)
            .spawn(Stdio::piped(), Stdio::null())
            .ctx(format!("volume `{}`", self.role))
    }

    fn not_started(&mut self, head: &[u8]) -> Error {
        let m = parse_begin(head).err().unwrap_or_default();
        Error::refused(format!(
            "volume `{}`: not a ZFS send stream: {m}",
            self.role
        ))
    }

    /// `zfs receive` exited 0: the snapshot exists with the sender's guid.
    fn verify(
        &mut self,
        record: &mut dyn FnMut(Option<String>) -> Result<()>,
    ) -> Result<Option<String>> {
        let s = self.snap();
        let guid = get("guid", &s).ctx(format!(
            "volume `{}`: zfs receive did not create {s}",
            self.role
        ))?;
        if let Some(want) = &self.expect_id {
            if guid.as_deref() != Some(want.as_str()) {
                return Err(Error::integrity(format!(
                    "volume `{}`: received {s} has guid {guid:?}, the sender's is {want}",
                    self.role
                )));
            }
        }
        record(guid.clone())?;
        Ok(guid)
    }

    /// Remove everything this receive made: the partial state, the snapshot
    /// if it completed, and the replica dataset if this (full) receive
    /// created it. Committed snapshots are never touched: the stream could
    /// only name `name` (checked before `zfs receive` started), which did
    /// not exist before.
    fn discard(&mut self) {
        let s = self.snap();
        let res = (|| -> Result<()> {
            if get("receive_resume_token", &self.ds)
                .ok()
                .flatten()
                .is_some()
            {
                zfs().args(["receive", "-A", &self.ds]).run()?;
            }
            if self.created_ds {
                if exists(&self.ds)? {
                    zfs().args(["destroy", "-r", &self.ds]).run()?;
                }
            } else if exists(&s)? {
                zfs().args(["destroy", &s]).run()?;
            }
            Ok(())
        })();
        if let Err(e) = res {
            tracing::error!(volume = %self.role, error = %e, "could not remove a rejected receive");
        }
    }
}
