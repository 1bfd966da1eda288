//! Operating a site: `status` (and the metrics it serves), notifications,
//! systemd units, pruning by the retention grid, and `stream_status` (the
//! redo stream's part of status and metrics, from both sites' records).
//!
//! May import: `base`, `backend`, `wire`, `primary`, `standby`, `dr`.

pub mod archive_check;
pub mod checkup;
pub mod init;
pub mod notify;
pub mod prune;
pub mod status;
pub mod stream_status;
pub mod suspect;
pub mod systemd;
