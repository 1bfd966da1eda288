//! The standby site's side: `serve`, the session a primary (or a seed on
//! disk) talks to, which verifies, receives and commits sets.
//!
//! May import: `base`, `backend`, `wire`, `redostream`. Never `primary`.

pub mod serve;
