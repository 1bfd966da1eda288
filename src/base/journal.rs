//! The journal of a multi-step verb: `state_dir/journal-<verb>.json`.
//!
//! Before a verb changes anything it records its intent (the plan it will
//! carry out, and the command that finishes it); after each step it records
//! that step as done, before the next step acts. Every write is
//! temp → fsync → rename → fsync of the directory ([`crate::base::catalog::write_atomic`]).
//! A rerun of the verb finds the journal, carries out the recorded plan
//! (not a new one: the first run's changes would make a new plan wrong)
//! and skips the steps already done; each step is itself safe to redo when
//! the process died inside it. The journal is removed when the verb is done.
//! `status` and `role` list the journals left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::base::catalog::Catalog;
use crate::base::error::{Context, Result};

/// An interrupted (or running) verb's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    pub verb: String,
    pub started_at: Timestamp,
    /// The command that finishes the verb (shown by `status` and `role`).
    pub finish: String,
    /// The verb's plan, as it carries it out.
    pub intent: serde_json::Value,
    /// Steps done, in order (`<step>` or `<step>:<volume>`).
    pub done: Vec<String>,
    /// What a done step produced that a later step needs (e.g. where a
    /// volume's live data was kept), by step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, String>,
    pub updated_at: Timestamp,
}

/// What `status` and `role` show of a journal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Interrupted {
    pub verb: String,
    pub started_at: Timestamp,
    /// The last step recorded as done (None: none yet).
    pub last_step: Option<String>,
    pub steps_done: usize,
    pub finish: String,
    pub journal: PathBuf,
}

/// A verb's journal on disk, kept up to date as steps complete.
pub struct Open {
    path: PathBuf,
    pub journal: Journal,
}

fn path(catalog: &Catalog, verb: &str) -> PathBuf {
    catalog.root().join(format!("journal-{verb}.json"))
}

/// The journal `verb` left behind, if any.
pub fn load(catalog: &Catalog, verb: &str) -> Result<Option<Open>> {
    let p = path(catalog, verb);
    if std::fs::symlink_metadata(&p).is_err() {
        return Ok(None);
    }
    let journal: Journal = crate::base::catalog::read_json(&p)?;
    Ok(Some(Open { path: p, journal }))
}

/// Record the intent of `verb` before it acts.
pub fn begin<T: Serialize>(
    catalog: &Catalog,
    verb: &str,
    finish: &str,
    intent: &T,
) -> Result<Open> {
    let now = Timestamp::now();
    let j = Open {
        path: path(catalog, verb),
        journal: Journal {
            verb: verb.to_string(),
            started_at: now,
            finish: finish.to_string(),
            intent: serde_json::to_value(intent).expect("serializable"),
            done: Vec::new(),
            values: BTreeMap::new(),
            updated_at: now,
        },
    };
    j.write()?;
    Ok(j)
}

impl Open {
    fn write(&self) -> Result<()> {
        crate::base::catalog::write_json(&self.path, &self.journal)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded plan.
    pub fn intent<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.journal.intent.clone()).map_err(|e| {
            crate::Error::integrity(format!(
                "{}: the recorded plan is not valid: {e}",
                self.path.display()
            ))
            .with_hint("a newer or older snapsite wrote it; finish the verb with that version")
        })
    }

    pub fn is_done(&self, step: &str) -> bool {
        self.journal.done.iter().any(|s| s == step)
    }

    /// Record `step` as done (fsynced before this returns).
    pub fn done(&mut self, step: &str) -> Result<()> {
        if self.is_done(step) {
            return Ok(());
        }
        self.journal.done.push(step.to_string());
        self.journal.updated_at = Timestamp::now();
        self.write()
    }

    /// Record `step` as done with what it produced.
    pub fn done_with(&mut self, step: &str, value: &str) -> Result<()> {
        self.journal
            .values
            .insert(step.to_string(), value.to_string());
        self.journal.done.retain(|s| s != step);
        self.journal.done.push(step.to_string());
        self.journal.updated_at = Timestamp::now();
        self.write()
    }

    /// Replace the intent (a verb whose plan is made in phases).
    pub fn set_intent<T: Serialize>(&mut self, intent: &T) -> Result<()> {
        self.journal.intent = serde_json::to_value(intent).expect("serializable");
        self.journal.updated_at = Timestamp::now();
        self.write()
    }

    /// The verb is done: remove the journal.
    pub fn finish(self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(crate::Error::io(
                    format!("remove {}", self.path.display()),
                    e,
                ));
            }
        }
        let dir = self.path.parent().expect("journal has a directory");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx(format!("fsync {}", dir.display()))
    }
}

/// The journals left in `state_dir` (interrupted verbs), by verb name.
pub fn interrupted(catalog: &Catalog) -> Result<Vec<Interrupted>> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(catalog.root()) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    for p in paths {
        match crate::base::catalog::read_json::<Journal>(&p) {
            Ok(j) => out.push(Interrupted {
                verb: j.verb,
                started_at: j.started_at,
                last_step: j.done.last().cloned(),
                steps_done: j.done.len(),
                finish: j.finish,
                journal: p,
            }),
            // Still an interrupted verb: say so rather than fail `status`
            // (the verb itself refuses to go on and names the file).
            Err(e) => {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                let verb = name
                    .trim_start_matches("journal-")
                    .trim_end_matches(".json")
                    .to_string();
                out.push(Interrupted {
                    finish: format!("snapsite {verb} (its journal is unreadable: {e})"),
                    verb,
                    started_at: Timestamp::UNIX_EPOCH,
                    last_step: None,
                    steps_done: 0,
                    journal: p,
                });
            }
        }
    }
    Ok(out)
}

/// One line per interrupted verb, for `status` and `role`.
pub fn render(i: &Interrupted) -> String {
    format!(
        "interrupted {} (started {}, {} step(s) done{}): finish it with `{}`",
        i.verb,
        i.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        i.steps_done,
        i.last_step
            .as_ref()
            .map(|s| format!(", last {s}"))
            .unwrap_or_default(),
        i.finish
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_records_steps_and_is_found_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::new(dir.path());
        assert!(load(&cat, "failback").unwrap().is_none());
        let mut j = begin(&cat, "failback", "snapsite failback", &vec!["plan"]).unwrap();
        j.done("keep:blob").unwrap();
        let again = load(&cat, "failback").unwrap().unwrap();
        assert!(again.is_done("keep:blob") && !again.is_done("keep:mysql"));
        assert_eq!(again.intent::<Vec<String>>().unwrap(), vec!["plan"]);
        let list = interrupted(&cat).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_step.as_deref(), Some("keep:blob"));
        assert!(render(&list[0]).contains("`snapsite failback`"));
        again.finish().unwrap();
        assert!(load(&cat, "failback").unwrap().is_none());
        assert!(interrupted(&cat).unwrap().is_empty());
    }
}
