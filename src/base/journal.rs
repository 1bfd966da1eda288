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
//!
//! A journal names its owner: the process that wrote it last (pid, its
//! start time and the boot id, as [`crate::base::procs`] reads and judges
//! them for every recorded process, so a reused pid or a reboot is not
//! mistaken for it). While the owner lives, the verb is
//! running (a long prune, a failback), not interrupted: `status` says
//! `running (pid N)` and does not call it critical.

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
    /// The process carrying out the verb (absent from older builds: such
    /// a journal is shown as interrupted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A process as recorded, so that a later look can tell whether that very
/// process is still running.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Owner {
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_ticks: u64,
    /// `/proc/sys/kernel/random/boot_id` when it ran.
    pub boot_id: String,
}

impl Owner {
    /// Process `pid` as it is now (None: there is no such process).
    pub fn of(pid: u32) -> Option<Owner> {
        let st = crate::base::procs::stat(i32::try_from(pid).ok()?)?;
        Some(Owner {
            pid,
            start_ticks: st.start_ticks,
            boot_id: crate::base::procs::boot_id(),
        })
    }

    /// This process.
    pub fn current() -> Option<Owner> {
        Owner::of(std::process::id())
    }

    /// Is the recorded process still running ([`crate::base::procs::is_running`]:
    /// same boot, a live process with that pid and the same start time)?
    pub fn is_alive(&self) -> bool {
        i32::try_from(self.pid)
            .is_ok_and(|pid| crate::base::procs::is_running(pid, self.start_ticks, &self.boot_id))
    }
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
    /// The pid of the process still carrying out the verb (None: nobody
    /// is; the verb was interrupted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
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
    let mut j = Open {
        path: path(catalog, verb),
        journal: Journal {
            verb: verb.to_string(),
            started_at: now,
            finish: finish.to_string(),
            intent: serde_json::to_value(intent).expect("serializable"),
            done: Vec::new(),
            values: BTreeMap::new(),
            updated_at: now,
            owner: None,
        },
    };
    j.write()?;
    Ok(j)
}

impl Open {
    /// Every write names this process as the owner: whoever records a
    /// step is the one carrying the verb out.
    fn write(&mut self) -> Result<()> {
        self.journal.owner = Owner::current();
        crate::base::catalog::write_json(&self.path, &self.journal)
    }

    /// A rerun takes over the journal of an interrupted run: recorded as
    /// its owner before its first step, so `status` shows it running.
    pub fn adopt(&mut self) -> Result<()> {
        self.journal.updated_at = Timestamp::now();
        self.write()
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

    /// Run `step` unless it is recorded as done, record it, then `after`
    /// (the caller's failpoint). `run` must be safe to redo: a process that
    /// died inside it runs it again.
    pub fn step(
        &mut self,
        step: &str,
        run: impl FnOnce() -> Result<()>,
        after: impl FnOnce(),
    ) -> Result<()> {
        if !self.is_done(step) {
            run()?;
            self.done(step)?;
            after();
        }
        Ok(())
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
                running: j.owner.as_ref().filter(|o| o.is_alive()).map(|o| o.pid),
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
                    running: None,
                });
            }
        }
    }
    Ok(out)
}

/// One line per running or interrupted verb, for `status` and `role`.
pub fn render(i: &Interrupted) -> String {
    let progress = format!(
        "started {}, {} step(s) done{}",
        i.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        i.steps_done,
        i.last_step
            .as_ref()
            .map(|s| format!(", last {s}"))
            .unwrap_or_default(),
    );
    match i.running {
        Some(pid) => format!(
            "{} running (pid {pid}; {progress}; journal {})",
            i.verb,
            i.journal.display()
        ),
        None => format!(
            "interrupted {} ({progress}): finish it with `{}`",
            i.verb, i.finish
        ),
    }
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
        // Its owner (this process) is alive: running, not interrupted.
        assert!(render(&list[0]).starts_with("failback running (pid"));
        again.finish().unwrap();
        assert!(load(&cat, "failback").unwrap().is_none());
        assert!(interrupted(&cat).unwrap().is_empty());
    }

    /// The owner is this process while it lives; the same pid with another
    /// start time (a reused pid) or another boot is not it.
    #[test]
    fn the_owner_is_recognised_and_a_reused_pid_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::new(dir.path());
        let _j = begin(&cat, "prune", "snapsite prune", &()).unwrap();
        let list = interrupted(&cat).unwrap();
        assert_eq!(list[0].running, Some(std::process::id()));
        assert!(
            render(&list[0]).starts_with(&format!("prune running (pid {}", std::process::id()))
        );
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert!(!reused.is_alive());
        let rebooted = Owner {
            boot_id: "another-boot".into(),
            ..me.clone()
        };
        assert!(!rebooted.is_alive());
        // A journal from an older build names no owner: interrupted.
        let p = dir.path().join("journal-prune.json");
        let mut raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        raw.as_object_mut().unwrap().remove("owner");
        std::fs::write(&p, serde_json::to_vec(&raw).unwrap()).unwrap();
        let list = interrupted(&cat).unwrap();
        assert_eq!(list[0].running, None);
        assert!(render(&list[0]).starts_with("interrupted prune"));
    }
}
