//! What travels between the sites: the framed, checksummed stream
//! (`stream`), compression, the bandwidth limit, the parallel
//! send/receive pipeline, the ssh transport, and the redo stream's model
//! (`redostream`: its settings, events and the virtual state that both the
//! standby's spool and failover's apply work on).
//!
//! May import: `base`, `backend` (a stream carries a backend's resumable
//! receive state).

pub mod compress;
pub mod pipeline;
pub mod ratelimit;
pub mod redostream;
pub mod s3;
pub mod stream;
pub mod transport;
