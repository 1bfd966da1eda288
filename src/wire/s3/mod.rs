//! A small, synchronous S3 client for the archive (issue 30): path-style
//! requests signed with AWS Signature Version 4 over `ureq` (rustls), no
//! async runtime. What the archive needs and nothing more: PutObject of a
//! streamed body (its SHA-256 in the signed `x-amz-content-sha256`, which
//! the server checks; or signed chunk by chunk as it is sent, `aws-chunked`,
//! so that only its length is needed up front; over https a part may be
//! sent `UNSIGNED-PAYLOAD`, see [`Payload`]), GetObject (streamed, or bounded into memory), HeadObject,
//! ListObjectsV2 (paged), ListObjectVersions and GetObjectLockConfiguration.
//!
//! By concern:
//! - [`signing`]: the credentials file and SigV4 (the `Authorization`
//!   header, the payload hash, the chunk signatures of an `aws-chunked`
//!   body);
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

use std::path::Path;
use std::sync::Arc;
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
    /// The TLS setup when `ca_file` replaced the built-in roots.
    tls: Option<Arc<rustls::ClientConfig>>,
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
            agent: agent(&limits, None),
            limits,
            tls: None,
        })
    }

    /// The same bucket with these limits (and the archive's name in errors).
    pub fn with_limits(mut self, limits: Limits) -> Bucket {
        self.agent = agent(&limits, self.tls.clone());
        self.limits = limits;
        self
    }

    /// The same bucket trusting only the CA certificates (PEM) in `path`
    /// for its https endpoint (the archive's `ca_file`), as `curl
    /// --cacert` does: the built-in roots are not used. Errors name
    /// `ca_file` and the file: an http endpoint (nothing to check), a file
    /// that cannot be read, is not PEM, or holds no certificate.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Bucket> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let what = format!("{}ca_file {}", self.label(), path.display());
        if !self.is_https() {
            return Err(Error::config(format!(
                "{what}: the endpoint {} is http, which has no certificate to check (use https:// or drop ca_file)",
                self.endpoint
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(&what, e))?;
        let certs = CertificateDer::pem_slice_iter(&bytes)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::config(format!("{what}: not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::config(format!(
                "{what}: no certificate in it (expected PEM `-----BEGIN CERTIFICATE-----` blocks)"
            )));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, c) in certs.into_iter().enumerate() {
            roots
                .add(c)
                .map_err(|e| Error::config(format!("{what}: certificate {}: {e}", i + 1)))?;
        }
        // The provider ureq's own https setup uses (ring): rustls 0.23.48
        // deprecates naming it because ring has no post-quantum key
        // exchange, which ureq's default connections lack as well.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config(format!("{what}: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = Arc::new(cfg);
        self.agent = agent(&self.limits, Some(tls.clone()));
        self.tls = Some(tls);
        Ok(self)
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

fn agent(l: &Limits, tls: Option<Arc<rustls::ClientConfig>>) -> ureq::Agent {
    let b = ureq::AgentBuilder::new()
        .timeout_connect(l.timeout)
        .timeout_read(l.timeout)
        .timeout_write(l.timeout)
        .redirects(0);
    match tls {
        Some(t) => b.tls_config(t),
        None => b,
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_key_and_the_file() {
        let bucket = |endpoint| {
            Bucket::new(endpoint, "bucket", "us-east-1", Credentials::new("a", "b"))
                .unwrap()
                .with_limits(Limits {
                    archive: "offsite".into(),
                    ..Limits::default()
                })
        };
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("ca.pem");
        std::fs::write(&text, "no certificate here\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (endpoint, file, needle) in [
            ("http://127.0.0.1:7480", &text, "is http"),
            ("https://s3.example.org", &text, "no certificate"),
            ("https://s3.example.org", &missing, "missing.pem"),
        ] {
            let e = bucket(endpoint)
                .with_ca_file(file)
                .err()
                .unwrap_or_else(|| panic!("{endpoint} {} accepted", file.display()))
                .to_string();
            assert!(
                e.contains("archive `offsite`: ca_file") && e.contains(needle),
                "{e}"
            );
        }
        // A PEM block that is not a certificate is no certificate either.
        std::fs::write(
            &text,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = bucket("https://s3.example.org")
            .with_ca_file(&text)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("ca_file"), "{e}");
    }
}
