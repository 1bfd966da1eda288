//! A small, synchronous S3 client for the archive (issue 30): path-style
//! requests signed with AWS Signature Version 4 over `ureq` (rustls), no
//! async runtime. What the archive needs and nothing more: PutObject from a
//! file (streamed, its SHA-256 in the signed `x-amz-content-sha256`, which
//! the server checks; over https a part may be sent `UNSIGNED-PAYLOAD`, see
//! [`Payload`]), GetObject (streamed, or bounded into memory), HeadObject,
//! ListObjectsV2 (paged), ListObjectVersions and GetObjectLockConfiguration.
//!
//! By concern:
//! - [`signing`]: the credentials file and SigV4 (the `Authorization`
//!   header, the payload hash);
//! - [`request`]: one signed request with its deadline and retries, the
//!   streamed bodies both ways, and the object verbs (PUT, GET, HEAD,
//!   DELETE);
//! - [`list`]: bucket-level answers (ListObjectsV2, the lock
//!   configuration), parsed as foreign input;
//! - [`versions`]: ListObjectVersions and GetObject of one version;
//! - [`errors`]: what a failed attempt means (the server's code, a
//!   timeout, whether to try again).
//!
//! Everything the server answers is foreign input: XML bodies are read with
//! a size bound and parsed with roxmltree (no DTD, no entities), keys are
//! checked to lie under the prefix asked for, and every count is bounded.
//!
//! Every request has a deadline ([`Limits`], the archive's
//! `request_timeout`): the connect, each write of a body and each read of
//! an answer (headers and every read of a streamed body) must progress
//! within it — an RGW whose OSD is full accepts a PUT and then never
//! answers, which hung `archive` for more than ten minutes. A request that
//! times out, loses its connection or gets a 5xx/429 is tried again
//! (`retries`, with backoff) when it is idempotent: GET, HEAD, LIST and the
//! PUT of a part (its key is fresh for each run, its body rewound). The
//! error names the archive, the bucket and object, what timed out and how
//! many attempts were made.

use std::time::Duration;

mod errors;
pub mod list;
pub mod request;
pub mod signing;
pub mod versions;

pub use list::{ListPage, ObjectLock, parse_list, parse_lock};
pub use request::{Body, BodyReader, Payload, Source, backoff};
pub use signing::{Credentials, sha256_hex};

use list::child_text;

use crate::base::archiveconf::{endpoint_host, validate_bucket};
use crate::base::error::{Error, Result};

/// Most bytes of an XML answer (a list page of 1000 keys is ~300 KiB).
pub const MAX_XML_BYTES: u64 = 4 << 20;
/// Most keys one listing returns before it is refused.
pub const MAX_LIST_KEYS: usize = 1_000_000;
/// S3's own limit on a key.
pub const MAX_KEY_LEN: usize = 1024;

/// The per-request deadline and the retries of idempotent requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The archive's name, for errors (`archive `NAME`: ...`).
    pub archive: String,
    /// Most time without progress for a connect, a write or a read.
    pub timeout: Duration,
    /// How many more times an idempotent request is tried.
    pub retries: u32,
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 3;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            archive: String::new(),
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
        }
    }
}

/// A bucket on an S3 endpoint.
pub struct Bucket {
    /// `http://host:port` or `https://host`, no path.
    endpoint: String,
    /// `host[:port]` as sent in the Host header (and signed).
    host: String,
    pub bucket: String,
    region: String,
    creds: Credentials,
    agent: ureq::Agent,
    limits: Limits,
}

impl Bucket {
    pub fn new(endpoint: &str, bucket: &str, region: &str, creds: Credentials) -> Result<Bucket> {
        let host = endpoint_host(endpoint).map_err(|e| Error::config(format!("endpoint {e}")))?;
        validate_bucket(bucket).map_err(|e| Error::config(format!("bucket {e}")))?;
        let limits = Limits::default();
        Ok(Bucket {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            host,
            bucket: bucket.into(),
            region: region.into(),
            creds,
            agent: agent(&limits),
            limits,
        })
    }

    /// The same bucket with these limits (and the archive's name in errors).
    pub fn with_limits(mut self, limits: Limits) -> Bucket {
        self.agent = agent(&limits);
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn display(&self) -> String {
        format!("{}/{}", self.endpoint, self.bucket)
    }

    /// Whether requests go over TLS (where a part may be sent
    /// [`Payload::Unsigned`]).
    pub fn is_https(&self) -> bool {
        self.endpoint.starts_with("https://")
    }

    /// `archive `NAME`: ` (empty without a name).
    fn label(&self) -> String {
        if self.limits.archive.is_empty() {
            String::new()
        } else {
            format!("archive `{}`: ", self.limits.archive)
        }
    }
}

fn agent(l: &Limits) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(l.timeout)
        .timeout_read(l.timeout)
        .timeout_write(l.timeout)
        .redirects(0)
        .build()
}
