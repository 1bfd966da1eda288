//! The standby site's side: `serve`, the session a primary (or a seed on
//! disk) talks to, which verifies, receives and commits sets; and the redo
//! stream's `spool` (the journal of what the follower sent, the checkpoint
//! that drops what a received snapshot covers, and `spool::matching`: where
//! a snapshot cuts the spool, which failover's apply uses too).
//!
//! May import: `base`, `backend`, `wire`. Never `primary`.

pub mod serve;
pub mod signals;
pub mod spool;
