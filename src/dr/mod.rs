//! The disaster-recovery verbs, which act on both sites: `failover`,
//! `failback`, `switchover`, `rehearse` and the application's redo `replay`.
//!
//! May import: `base`, `backend`, `wire`, `redostream`, `primary`,
//! `standby`.

pub mod failback;
pub mod failover;
pub mod rehearse;
pub mod replay;
pub mod switchover;
