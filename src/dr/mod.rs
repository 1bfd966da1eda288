//! The disaster-recovery verbs, which act on both sites: `failover`,
//! `failback`, `follow` (a third site re-points to the new primary), `switchover`, `rehearse`, the application's redo `replay`
//! and `stream_apply` (failover's step that applies the standby's redo
//! stream spool to the failover copy).
//!
//! May import: `base`, `backend`, `wire`, `primary`, `standby`.

pub mod failback;
pub mod failover;
pub mod follow;
pub mod kept;
pub mod rehearse;
pub mod replay;
pub mod restore;
pub mod stream_apply;
pub mod switchover;
