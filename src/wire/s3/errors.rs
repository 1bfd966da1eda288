//! What a failed attempt means (issue 30): an answer other than 2xx
//! becomes an error of the kind its status says (403 refused, 404 not
//! found, else storage) with S3's `Code`; a transport error is looked
//! through for a timeout; [`Failure`] carries whether trying again may
//! help (timeouts, lost connections, 5xx, 429).

use std::io::Read;

use crate::base::error::Error;

/// An answer other than 2xx, with S3's error code when its body says one.
pub(super) fn status_error(what: &str, code: u16, resp: ureq::Response) -> Error {
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 << 10).read_to_end(&mut body);
    let s3code = roxmltree::Document::parse(std::str::from_utf8(&body).unwrap_or(""))
        .ok()
        .and_then(|d| {
            d.descendants()
                .find(|n| n.has_tag_name("Code"))
                .and_then(|n| n.text())
                .map(|t| crate::base::model::wire_str(t).to_string())
        })
        .unwrap_or_default();
    let e = format!("{what}: HTTP {code} {s3code}");
    match code {
        403 => Error::refused(e),
        404 => Error::not_found(e),
        _ => Error::storage(e),
    }
}

/// One attempt's failure: whether trying again may help.
pub(super) struct Failure {
    pub(super) err: Error,
    pub(super) transient: bool,
}

/// Whether an error (or one it wraps) is an I/O timeout.
pub(super) fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            )
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether a transport error is TLS refusing the connection (a
/// certificate that does not chain to a trusted CA, a name it does not
/// cover, a failed handshake): trying again does not help.
pub(super) fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|i| i.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cur = e.source();
    }
    false
}
