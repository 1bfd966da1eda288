//! Operating a site: `status` (and the metrics it serves), notifications,
//! systemd units and pruning by the retention grid.
//!
//! May import: `base`, `backend`, `wire`, `redostream`, `dr`.

pub mod checkup;
pub mod init;
pub mod notify;
pub mod prune;
pub mod status;
pub mod systemd;
