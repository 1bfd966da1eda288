//! What travels between the sites: the framed, checksummed stream
//! (`stream`), compression, the bandwidth limit, the parallel
//! send/receive pipeline and the ssh transport.
//!
//! May import: `base`, `backend` (a stream carries a backend's resumable
//! receive state).

pub mod compress;
pub mod pipeline;
pub mod ratelimit;
pub mod stream;
pub mod transport;
