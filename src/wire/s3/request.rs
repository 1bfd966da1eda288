//! One signed request and the object verbs (issue 30): [`Bucket::call`]
//! signs, sends and retries (while the failure is transient and the request
//! idempotent), every connect, write and read under the deadline; the body
//! of a PUT is streamed from a rewindable [`Source`] and counted (an error
//! says how far it got), the body of a GET is a [`BodyReader`] whose reads
//! carry the deadline. PutObject, DeleteObject, HeadObject, GetObject
//! (streamed, handed to a consumer, or bounded into memory) and the
//! bucket-level GET of an XML answer that [`super::list`] parses.

use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use super::errors::{Failure, status_error, timed_out, tls_refused};
use super::signing::{
    AWS_CHUNK, ChunkSigner, EMPTY_SHA256, STREAMING_PAYLOAD, UNSIGNED_PAYLOAD, authorization,
    chunk_header, chunked_len, sign, uri_encode,
};
use super::{Bucket, MAX_KEY_LEN, MAX_XML_BYTES};
use crate::base::error::{Error, Result};

/// The wait before attempt `n + 1` (n >= 1): 0.5 s, 1 s, 2 s ... at most 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(6)))
        .min(Duration::from_secs(30))
}

/// A body that can be sent again (rewound) when a PUT is retried.
pub trait Source: Read + Seek {}
impl<T: Read + Seek> Source for T {}

pub enum Body<'a> {
    Empty,
    /// A reader of exactly `len` bytes, covered by `payload`.
    Stream {
        reader: &'a mut dyn Source,
        len: u64,
        payload: Payload,
    },
}

/// What a PUT's signature says about its body (`x-amz-content-sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The body's SHA-256 (hex): the server hashes what it received and
    /// refuses the PUT when it differs.
    Sha256(String),
    /// `UNSIGNED-PAYLOAD`: the body is not hashed for the signature. Only
    /// over https, where TLS already protects it in transit (a request
    /// over http with it is refused before anything is sent); the archive
    /// records each part's blake3 in its index, which `verify` and
    /// `restore` check whatever the PUT was signed with.
    Unsigned,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: the body is sent
    /// `aws-chunked` in [`super::signing::AWS_CHUNK`] chunks, each signed
    /// in a chain that starts at the request's signature; the server
    /// checks every chunk as it arrives and refuses the PUT at the first
    /// one that does not match. Needs only the length up front, not the
    /// body's hash: a part is PUT while it is produced.
    Chunked,
}

/// Counts the body bytes ureq has taken (to say how far a send got) and
/// keeps the body's own read error: a body that cannot be read is not
/// the network's fault, and is not tried again.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    n: u64,
    failed: Option<String>,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(k) => {
                self.n += k as u64;
                Ok(k)
            }
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// A body of exactly `len` bytes sent `aws-chunked`: every
/// [`AWS_CHUNK`] bytes (fewer in the last) framed with its signature,
/// then the final empty chunk. Its size is [`chunked_len`]`(len)`.
struct AwsChunked<R> {
    inner: R,
    signer: ChunkSigner,
    data: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> AwsChunked<R> {
    fn new(inner: R, signer: ChunkSigner) -> Self {
        AwsChunked {
            inner,
            signer,
            data: vec![0; AWS_CHUNK as usize],
            out: Vec::with_capacity(AWS_CHUNK as usize + 128),
            pos: 0,
            done: false,
        }
    }

    /// The next chunk, filled to [`AWS_CHUNK`] unless the body ends.
    fn next_chunk(&mut self) -> std::io::Result<()> {
        let mut n = 0;
        while n < self.data.len() {
            match self.inner.read(&mut self.data[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let sig = self.signer.sign(&self.data[..n]);
        self.out.clear();
        self.out.extend_from_slice(chunk_header(n, &sig).as_bytes());
        self.out.extend_from_slice(&self.data[..n]);
        self.out.extend_from_slice(b"\r\n");
        self.pos = 0;
        self.done = n == 0;
        Ok(())
    }
}

impl<R: Read> Read for AwsChunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let k = (self.out.len() - self.pos).min(buf.len());
        buf[..k].copy_from_slice(&self.out[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
}

/// A streamed answer body whose reads have the request's deadline: a read
/// that times out (or fails) is an error naming the object, and marks
/// the failure as the network's (so that [`Bucket::fetch`] retries it).
pub struct BodyReader {
    inner: Box<dyn Read + Send + Sync>,
    what: String,
    timeout: Duration,
    read: u64,
    pub network_failed: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Ok(k) => {
                self.read += k as u64;
                Ok(k)
            }
            Err(e) => {
                self.network_failed = true;
                let why = if timed_out(&e) {
                    format!(
                        "timed out: no data for {} (request_timeout) while reading the body, after {} bytes",
                        humantime::format_duration(self.timeout),
                        self.read
                    )
                } else {
                    format!("reading the body failed after {} bytes: {e}", self.read)
                };
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("{}: {why}", self.what),
                ))
            }
        }
    }
}

impl Bucket {
    /// Run `attempt` up to `1 + retries` times (once unless `retry`) while
    /// its failure is transient, waiting [`backoff`] in between.
    fn retrying<T>(
        &self,
        what: &str,
        retry: bool,
        mut attempt: impl FnMut(u32) -> std::result::Result<T, Failure>,
    ) -> Result<T> {
        let attempts = if retry { self.limits.retries + 1 } else { 1 };
        let mut n = 1;
        loop {
            match attempt(n) {
                Ok(t) => return Ok(t),
                Err(f) if f.transient && n < attempts => {
                    tracing::warn!(
                        attempt = n,
                        of = attempts,
                        "{what}: {} (trying again)",
                        f.err
                    );
                    std::thread::sleep(backoff(n));
                    n += 1;
                }
                Err(f) if n > 1 => {
                    return Err(f.err.context(format!("gave up after {n} attempts")));
                }
                Err(f) => return Err(f.err),
            }
        }
    }

    /// One signed request, tried again while transient when `retry`;
    /// `Ok(None)` for a 404.
    fn call(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        mut body: Body,
        what: &str,
        retry: bool,
    ) -> Result<Option<ureq::Response>> {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::config(format!(
                "{what}: key longer than {MAX_KEY_LEN}"
            )));
        }
        let what = format!("{}{what}", self.label());
        self.retrying(&what, retry, |n| {
            if n > 1
                && let Body::Stream { reader, .. } = &mut body
            {
                reader.seek(SeekFrom::Start(0)).map_err(|e| Failure {
                    err: Error::io(format!("{what}: rewinding the body"), e),
                    transient: false,
                })?;
            }
            self.call_once(method, key, query, &mut body, &what)
        })
    }

    fn call_once(
        &self,
        method: &str,
        key: &str,
        query: &[(&str, &str)],
        body: &mut Body,
        what: &str,
    ) -> std::result::Result<Option<ureq::Response>, Failure> {
        let path = if key.is_empty() {
            format!("/{}", self.bucket)
        } else {
            format!("/{}/{}", self.bucket, uri_encode(key, true))
        };
        let mut q: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        q.sort();
        let cq = q
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let amz_date = jiff::Timestamp::now()
            .strftime("%Y%m%dT%H%M%SZ")
            .to_string();
        let payload = match &body {
            Body::Empty => EMPTY_SHA256.to_string(),
            Body::Stream {
                payload: Payload::Chunked,
                ..
            } => STREAMING_PAYLOAD.to_string(),
            Body::Stream {
                payload: Payload::Sha256(sha256),
                ..
            } => sha256.clone(),
            Body::Stream {
                payload: Payload::Unsigned,
                ..
            } => {
                if !self.is_https() {
                    return Err(Failure {
                        err: Error::config(format!(
                            "{what}: an unsigned payload over {} (http): refused, only https protects the body",
                            self.endpoint
                        )),
                        transient: false,
                    });
                }
                UNSIGNED_PAYLOAD.to_string()
            }
        };
        // An aws-chunked body signs its encoding and both lengths too.
        let chunked = match &body {
            Body::Stream {
                len,
                payload: Payload::Chunked,
                ..
            } => Some((*len, chunked_len(*len))),
            _ => None,
        };
        let (auth, seed) = match chunked {
            None => (
                authorization(
                    &self.creds,
                    &self.region,
                    method,
                    &path,
                    &cq,
                    &self.host,
                    &amz_date,
                    &payload,
                ),
                String::new(),
            ),
            Some((len, encoded)) => {
                let (encoded, len) = (encoded.to_string(), len.to_string());
                let headers = [
                    ("content-encoding", "aws-chunked"),
                    ("content-length", encoded.as_str()),
                    ("host", self.host.as_str()),
                    ("x-amz-content-sha256", payload.as_str()),
                    ("x-amz-date", amz_date.as_str()),
                    ("x-amz-decoded-content-length", len.as_str()),
                ];
                sign(
                    &self.creds,
                    &self.region,
                    method,
                    &path,
                    &cq,
                    &headers,
                    &amz_date,
                    &payload,
                )
            }
        };
        let url = if cq.is_empty() {
            format!("{}{path}", self.endpoint)
        } else {
            format!("{}{path}?{cq}", self.endpoint)
        };
        let req = self
            .agent
            .request(method, &url)
            .set("Host", &self.host)
            .set("x-amz-date", &amz_date)
            .set("x-amz-content-sha256", &payload)
            .set("Authorization", &auth);
        let (res, sent, len, body_failed) = match body {
            Body::Empty => (req.call(), 0, 0, None),
            Body::Stream { reader, len, .. } => {
                let mut c = Counting {
                    inner: &mut *reader,
                    n: 0,
                    failed: None,
                };
                let r = match chunked {
                    None => req
                        .set("Content-Length", &len.to_string())
                        .send((&mut c).take(*len)),
                    Some((_, encoded)) => req
                        .set("Content-Encoding", "aws-chunked")
                        .set("x-amz-decoded-content-length", &len.to_string())
                        .set("Content-Length", &encoded.to_string())
                        .send(AwsChunked::new(
                            (&mut c).take(*len),
                            ChunkSigner::new(&self.creds, &self.region, &amz_date, &seed),
                        )),
                };
                (r, c.n, *len, c.failed)
            }
        };
        match res {
            Ok(r) => Ok(Some(r)),
            Err(ureq::Error::Status(404, _)) if method != "PUT" => Ok(None),
            Err(ureq::Error::Status(code, r)) => Err(Failure {
                err: status_error(what, code, r),
                transient: code >= 500 || code == 429,
            }),
            Err(ureq::Error::Transport(_)) if body_failed.is_some() => Err(Failure {
                err: Error::storage(format!(
                    "{what}: reading the body failed after {sent} of {len} bytes: {}",
                    body_failed.unwrap_or_default()
                )),
                transient: false,
            }),
            Err(ureq::Error::Transport(t)) => {
                let connecting = matches!(
                    t.kind(),
                    ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                );
                let phase = if connecting {
                    format!("connecting to {}", self.endpoint)
                } else if sent < len {
                    format!("sending the body ({sent} of {len} bytes sent)")
                } else {
                    "waiting for the answer".to_string()
                };
                if tls_refused(&t) {
                    return Err(Failure {
                        err: Error::storage(format!(
                            "{what}: TLS with {} refused: {t}",
                            self.endpoint
                        ))
                        .with_hint("the endpoint's certificate must chain to a trusted CA: a private CA goes in the archive's ca_file (docs/archive.md)"),
                        transient: false,
                    });
                }
                let msg = if timed_out(&t) {
                    format!(
                        "{what}: timed out: no progress for {} (request_timeout) while {phase}",
                        humantime::format_duration(self.limits.timeout)
                    )
                } else {
                    format!("{what}: {} failed while {phase}: {t}", self.endpoint)
                };
                Err(Failure {
                    err: Error::storage(msg),
                    transient: true,
                })
            }
        }
    }

    /// PutObject of exactly `len` bytes from `reader`, covered by
    /// `payload`: with [`Payload::Sha256`] the server checks the bytes
    /// against the signed hash, with [`Payload::Chunked`] each chunk against
    /// its signature; [`Payload::Unsigned`] only over https. `retry`: the key is fresh
    /// (a part's), so sending it again after a failure overwrites nothing
    /// that another run wrote; the index is put with `retry` false (its
    /// caller checks whether a failed PUT landed).
    pub fn put(
        &self,
        key: &str,
        reader: &mut dyn Source,
        len: u64,
        payload: Payload,
        retry: bool,
    ) -> Result<()> {
        let what = format!("PUT {}/{key}", self.display());
        self.call(
            "PUT",
            key,
            &[],
            Body::Stream {
                reader,
                len,
                payload,
            },
            &what,
            retry,
        )?;
        Ok(())
    }

    /// DeleteObject of `key` without a version id (on a versioned bucket:
    /// a delete marker). Only `check`'s probe calls it, on a key nothing
    /// else uses; a refusal (403) is an error of kind `Refused`.
    pub fn delete(&self, key: &str) -> Result<()> {
        let what = format!("DELETE {}/{key}", self.display());
        self.call("DELETE", key, &[], Body::Empty, &what, false)?;
        Ok(())
    }

    /// HeadObject: the object's size, `None` if there is none.
    pub fn head(&self, key: &str) -> Result<Option<u64>> {
        let what = format!("HEAD {}/{key}", self.display());
        let Some(r) = self.call("HEAD", key, &[], Body::Empty, &what, true)? else {
            return Ok(None);
        };
        r.header("Content-Length")
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::protocol(format!("{what}: no Content-Length")))
    }

    /// GetObject, streamed (each read with the deadline); `None` if there
    /// is none.
    pub fn get(&self, key: &str) -> Result<Option<BodyReader>> {
        self.get_with(key, &[])
    }

    fn get_with(&self, key: &str, query: &[(&str, &str)]) -> Result<Option<BodyReader>> {
        let what = match query {
            [("versionId", v)] => format!("GET {}/{key} (version {v})", self.display()),
            _ => format!("GET {}/{key}", self.display()),
        };
        Ok(self
            .call("GET", key, query, Body::Empty, &what, true)?
            .map(|r| BodyReader {
                inner: r.into_reader(),
                what: format!("{}{what}", self.label()),
                timeout: self.limits.timeout,
                read: 0,
                network_failed: false,
            }))
    }

    /// GetObject handed to `consume`, the whole GET tried again (and
    /// `consume` called again from the start) while the network fails:
    /// the request, or a read of its body. An error of `consume`'s own
    /// (its disk, say) is not retried. `None` if there is no object.
    pub fn fetch<T>(
        &self,
        key: &str,
        consume: impl FnMut(&mut BodyReader) -> std::io::Result<T>,
    ) -> Result<Option<T>> {
        self.fetch_with(key, &[], consume)
    }

    pub(super) fn fetch_with<T>(
        &self,
        key: &str,
        query: &[(&str, &str)],
        mut consume: impl FnMut(&mut BodyReader) -> std::io::Result<T>,
    ) -> Result<Option<T>> {
        let what = format!("{}GET {}/{key}", self.label(), self.display());
        self.retrying(&what, true, |_| {
            let Some(mut r) = self.get_with(key, query).map_err(|err| Failure {
                err,
                transient: false,
            })?
            else {
                return Ok(None);
            };
            consume(&mut r).map(Some).map_err(|e| Failure {
                transient: r.network_failed,
                // The body reader's errors name the request already.
                err: if r.network_failed {
                    Error::storage(e.to_string())
                } else {
                    Error::io(&what, e)
                },
            })
        })
    }

    /// GetObject into memory, refused beyond `max` bytes.
    pub fn get_bounded(&self, key: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let what = format!("{}/{key}", self.display());
        let got = self.fetch(key, |r| {
            let mut v = Vec::new();
            r.take(max + 1).read_to_end(&mut v)?;
            Ok(v)
        })?;
        match got {
            Some(v) if v.len() as u64 > max => Err(Error::protocol(format!(
                "{}{what}: more than {max} bytes",
                self.label()
            ))),
            v => Ok(v),
        }
    }

    /// A bucket-level GET whose answer is XML (at most [`MAX_XML_BYTES`]),
    /// the request and the read of its answer tried again together.
    pub(super) fn get_xml(&self, query: &[(&str, &str)], what: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("{}{what}", self.label());
        self.retrying(&what, true, |_| {
            let Some(r) = self.call_once("GET", "", query, &mut Body::Empty, &what)? else {
                return Ok(None);
            };
            let mut v = Vec::new();
            r.into_reader()
                .take(MAX_XML_BYTES + 1)
                .read_to_end(&mut v)
                .map_err(|e| {
                    let why = if timed_out(&e) {
                        format!(
                            "timed out: no data for {} (request_timeout) while reading the answer",
                            humantime::format_duration(self.limits.timeout)
                        )
                    } else {
                        format!("reading the answer: {e}")
                    };
                    Failure {
                        err: Error::storage(format!("{what}: {why}")),
                        transient: true,
                    }
                })?;
            if v.len() as u64 > MAX_XML_BYTES {
                return Err(Failure {
                    err: Error::protocol(format!("{what}: more than {MAX_XML_BYTES} bytes")),
                    transient: false,
                });
            }
            Ok(Some(v))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::s3::Credentials;

    /// A reader that hands out at most 7000 bytes a read (short reads, as
    /// from age's pipe or a socket).
    pub(crate) struct Dribble<'a>(pub(crate) &'a [u8]);

    impl Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let k = self.0.len().min(buf.len()).min(7000);
            buf[..k].copy_from_slice(&self.0[..k]);
            self.0 = &self.0[k..];
            Ok(k)
        }
    }

    /// The aws-chunked body is exactly `chunked_len` bytes for any length
    /// (short reads included), and decodes to the data, each chunk framed
    /// with the signature chain's next link.
    #[test]
    fn the_aws_chunked_body_has_the_announced_length_and_chain() {
        let c = Credentials::new("a", "b");
        let data: Vec<u8> = (0..(3 * AWS_CHUNK + 5) as u32).map(|i| i as u8).collect();
        let chunk = AWS_CHUNK as usize;
        for len in [0, 1, chunk, chunk + 1, 3 * chunk, data.len()] {
            let mut out = Vec::new();
            let signer = ChunkSigner::new(&c, "r", "20261207T000000Z", "seed");
            AwsChunked::new(Dribble(&data[..len]), signer)
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out.len() as u64, chunked_len(len as u64), "{len}");
            let mut expect = ChunkSigner::new(&c, "r", "20261207T000000Z", "seed");
            let (mut at, mut got) = (0, Vec::new());
            loop {
                let eol = at + out[at..].windows(2).position(|w| w == b"\r\n").unwrap();
                let head = std::str::from_utf8(&out[at..eol]).unwrap();
                let (size, sig) = head.split_once(";chunk-signature=").unwrap();
                let n = usize::from_str_radix(size, 16).unwrap();
                let body = &out[eol + 2..eol + 2 + n];
                assert_eq!(sig, expect.sign(body), "{len}");
                assert_eq!(&out[eol + 2 + n..eol + 4 + n], b"\r\n");
                got.extend_from_slice(body);
                at = eol + 4 + n;
                if n == 0 {
                    break;
                }
                assert!(
                    n == chunk || at + 86 == out.len(),
                    "{len}: short chunk inside"
                );
            }
            assert_eq!((at, &got[..]), (out.len(), &data[..len]));
        }
    }

    /// An unsigned body is refused on an http endpoint before anything is
    /// sent (nothing listens on port 1: a request that went out would fail
    /// to connect instead).
    #[test]
    fn an_unsigned_payload_is_refused_over_http() {
        let bucket = |endpoint| {
            Bucket::new(endpoint, "bucket", "us-east-1", Credentials::new("a", "b")).unwrap()
        };
        let b = bucket("http://127.0.0.1:1");
        assert!(!b.is_https());
        let e = b
            .put(
                "p/part",
                &mut std::io::Cursor::new(&b"abc"[..]),
                3,
                Payload::Unsigned,
                true,
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unsigned payload") && e.contains("p/part"),
            "{e}"
        );
        assert!(!e.contains("connecting"), "{e}");
        let https = bucket("https://s3.example.org");
        assert!(https.is_https());
    }
}
