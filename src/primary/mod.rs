//! The primary site's side: taking a snapshot set and shipping what the
//! standby lacks (`coordinator`), the `run` daemon loop, the application's
//! hooks, and writing a seed to disk (`seed`).
//!
//! May import: `base`, `backend`, `wire`, `redostream`. Never `standby`
//! (except the named exception `seed` -> `standby::serve`: a seed is read
//! back through the same `serve` session; tests/module_deps.rs) and never
//! `dr`; `run` drives `ops` (prune, status, notify, systemd) by the named
//! exceptions listed there.

pub mod coordinator;
pub mod hooks;
pub mod run;
pub mod seed;
