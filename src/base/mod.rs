//! The core every other folder stands on: the data model (sets, manifests,
//! receipts), the configuration schema and its validation, the catalog of
//! local state and the verb journal, the local site (`site`: catalog plus
//! stores), retention grids and the scheduler, errors, external commands
//! (`cmd`), failpoints, mountinfo and descriptor-relative file access
//! (`safefile`).
//!
//! May import: nothing outside `base`, with two named exceptions
//! (tests/module_deps.rs): `config` holds each section's setting type, which
//! lives beside the code that acts on it (`wire::compress`,
//! `wire::ratelimit`, `primary::hooks`, `ops::notify`, `dr::replay`), and
//! `site` opens the local stores (`backend`).

pub mod archiveconf;
pub mod catalog;
pub mod cmd;
pub mod config;
pub mod config_keys;
pub mod detect;
pub mod error;
pub mod failpoint;
pub mod journal;
pub mod model;
pub mod mountinfo;
pub mod procs;
pub mod retention;
pub mod safefile;
pub mod schedule;
pub mod shipwindow;
pub mod site;
pub mod streamconf;
