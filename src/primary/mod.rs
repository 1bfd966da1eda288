//! The primary site's side: taking a snapshot set and shipping what the
//! standby lacks (`coordinator`), the `run` daemon loop, the application's
//! hooks, writing a seed to disk (`seed`) and the redo stream's `follower`
//! (it sends what changes in the live redo-log directory to the standby's
//! spool).
//!
//! May import: `base`, `backend`, `wire`. Never `standby`
//! (except the named exception `seed` -> `standby::serve`: a seed is read
//! back through the same `serve` session; tests/module_deps.rs) and never
//! `dr`; `run` drives `ops` (prune, status, notify, systemd) by the named
//! exceptions listed there.

pub mod archive;
pub mod coordinator;
pub mod follower;
pub mod hooks;
pub mod run;
pub mod seed;
