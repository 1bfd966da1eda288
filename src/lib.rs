//! snapsite keeps a standby site for a multi-volume application by driving
//! the storage layer's own snapshots (btrfs now; ZFS and LVM thin next).
//!
//! Data flow (see DESIGN.md): `coordinator::take_set` snapshots the volumes
//! in order and writes a manifest; `coordinator::ship` streams every snapshot
//! the standby lacks through `transport` to `serve`, which verifies, receives
//! and commits manifests; `failover` brings the standby up from the newest
//! complete set plus the newest redolog snapshot and runs the replay.

pub mod backend;
pub mod catalog;
pub mod checkup;
pub mod cmd;
pub mod compress;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod failback;
pub mod failover;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzzing;
pub mod hooks;
pub mod init;
pub mod journal;
pub mod model;
pub mod mountinfo;
pub mod notify;
pub mod pipeline;
pub mod prune;
pub mod ratelimit;
pub mod redostream;
pub mod rehearse;
pub mod replay;
pub mod retention;
pub mod run;
pub mod safefile;
pub mod schedule;
pub mod seed;
pub mod serve;
pub mod site;
pub mod status;
pub mod stream;
pub mod streamconf;
pub mod switchover;
pub mod systemd;
pub mod transport;

pub use error::{Error, ErrorKind, Result};
