//! Resuming a set's archiving after a crash (issue 30): the parts already
//! in the bucket are not uploaded again.
//!
//! While a set is written, `state_dir/journal-archive-NAME.json`
//! ([`crate::base::journal`]) records the set and, as each part's PUT
//! returns, the part (`part-NNNNNN` → its key, plaintext size and blake3,
//! stored size and blake3). A rerun for the same set produces the stream
//! again and, for each part whose plaintext is the recorded one (size and
//! blake3) and whose object the bucket still holds at the recorded stored
//! size (HEAD), uses the recorded part instead of a PUT. Any other part is
//! PUT under this run's fresh key, so nothing is ever written over. The
//! journal is removed once the index is written; a journal whose set is in
//! the archive already (the crash came after the index) is dropped.
//!
//! The bytes of a reused part are checked as every part's are: restore and
//! verify read it back against the index's stored blake3.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::base::archiveconf::Archive;
use crate::base::catalog::Catalog;
use crate::base::error::Result;
use crate::base::journal;

use super::index::ArchivePart;

#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    archive: String,
    set_id: String,
}

fn verb(a: &Archive) -> String {
    format!("archive-{}", a.name)
}

fn step(i: usize) -> String {
    format!("part-{i:06}")
}

/// The journal of one set being archived, and the parts an earlier run
/// recorded for it.
pub struct Resume {
    journal: Mutex<Option<journal::Open>>,
    recorded: BTreeMap<usize, ArchivePart>,
}

/// Drop the journal of `a` when its set is archived already (`archived`).
pub fn drop_stale(catalog: &Catalog, a: &Archive, archived: &dyn Fn(&str) -> bool) -> Result<()> {
    if let Some(j) = journal::load(catalog, &verb(a))? {
        let stale = match j.intent::<Intent>() {
            Ok(it) => archived(&it.set_id),
            Err(_) => true,
        };
        if stale {
            j.finish()?;
        }
    }
    Ok(())
}

impl Resume {
    /// Take over the journal for `set_id` (its recorded parts kept), or
    /// begin a new one (a journal for another set is dropped: that set is
    /// written again from the start when its turn comes).
    pub fn open(catalog: &Catalog, a: &Archive, set_id: &str) -> Result<Resume> {
        let mut recorded = BTreeMap::new();
        if let Some(mut j) = journal::load(catalog, &verb(a))? {
            let same = j
                .intent::<Intent>()
                .is_ok_and(|it| it.archive == a.name && it.set_id == set_id);
            if same {
                j.adopt()?;
                let prefix = format!("sets/{set_id}/");
                for (k, v) in &j.journal.values {
                    let Some(i) = k
                        .strip_prefix("part-")
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    // Our own file, read defensively: an entry that does
                    // not decode or names another set's key is not reused.
                    match serde_json::from_str::<ArchivePart>(v) {
                        Ok(p)
                            if p.key.starts_with(&prefix)
                                && p.key.ends_with(&format!("/part-{i:06}")) =>
                        {
                            recorded.insert(i, p);
                        }
                        _ => {}
                    }
                }
                tracing::info!(
                    archive = %a.name,
                    set = set_id,
                    parts = recorded.len(),
                    "resuming the set: parts already in the bucket are not sent again"
                );
                return Ok(Resume {
                    journal: Mutex::new(Some(j)),
                    recorded,
                });
            }
            j.finish()?;
        }
        let j = journal::begin(
            catalog,
            &verb(a),
            &format!("snapsite archive --to {}", a.name),
            &Intent {
                archive: a.name.clone(),
                set_id: set_id.into(),
            },
        )?;
        Ok(Resume {
            journal: Mutex::new(Some(j)),
            recorded,
        })
    }

    /// The part an earlier run uploaded as part `i`, if its plaintext is
    /// `bytes` bytes with this blake3.
    pub fn candidate(&self, i: usize, bytes: u64, blake3: &str) -> Option<&ArchivePart> {
        self.recorded
            .get(&i)
            .filter(|p| p.bytes == bytes && p.blake3 == blake3)
    }

    /// Whether an earlier run recorded a part `i` (then the part is judged
    /// once sealed, not PUT while it is produced).
    pub fn has(&self, i: usize) -> bool {
        self.recorded.contains_key(&i)
    }

    /// Record part `i` as in the bucket (fsynced before this returns);
    /// returns how many parts the journal holds now.
    pub fn record(&self, i: usize, p: &ArchivePart) -> Result<usize> {
        let mut g = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(j) => {
                j.done_with(&step(i), &serde_json::to_string(p).expect("serializes"))?;
                Ok(j.journal.done.len())
            }
            None => Ok(0),
        }
    }

    /// The set's index is written: remove the journal.
    pub fn finish(self) -> Result<()> {
        match self.journal.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(j) => j.finish(),
            None => Ok(()),
        }
    }
}
