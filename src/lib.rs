//! snapsite keeps a standby site for a multi-volume application by driving
//! the storage layer's own snapshots (btrfs now; ZFS and LVM thin next).
//!
//! Data flow (see DESIGN.md): `coordinator::take_set` snapshots the volumes
//! in order and writes a manifest; `coordinator::ship` streams every snapshot
//! the standby lacks through `transport` to `serve`, which verifies, receives
//! and commits manifests; `failover` brings the standby up from the newest
//! complete set plus the newest redolog snapshot and runs the replay.

pub mod backend;
pub mod base;
pub mod dr;
pub mod ops;
pub mod primary;
pub mod standby;
#[doc(hidden)]
pub mod testing;
pub mod wire;

pub use base::error::{Error, ErrorKind, Result};
