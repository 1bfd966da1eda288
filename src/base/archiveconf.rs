//! `[[archive]]`: off-site copies of the sets in S3 object storage (issue
//! 30), parsed and validated here so that `config` holds them without
//! importing the archive writer.
//!
//! ```toml
//! [[archive]]
//! name = "offsite"
//! endpoint = "https://s3.example.org"
//! bucket = "mail-archive"
//! prefix = "mail-a"                            # default: the site's name
//! credentials = "/etc/snapsite/archive.creds"  # 0600: access_key, secret_key
//! recipients = ["age1..."]                     # primary: encrypt to these (public) keys
//! identity = "/etc/snapsite/archive.age"       # standby: restore's secret key (never on the primary)
//! compression = "zstd:3"
//! interval = "1h"                              # `run`: at most one archive pass per interval
//! bwlimit = "50MiB/s"
//! request_timeout = "60s"                      # each S3 request's deadline (connect, each write, each read)
//! retries = 3                                  # more tries of an idempotent request, with backoff
//! uploads = 4                                  # part PUTs in flight at once
//! ca_file = "/etc/snapsite/archive-ca.pem"     # https: trust these CAs (PEM) instead of the built-in roots
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::base::error::{Error, Result};
use crate::wire::compress::Compression;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    pub name: String,
    pub endpoint: String,
    pub bucket: String,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub credentials: PathBuf,
    pub recipients: Option<Vec<String>>,
    pub identity: Option<PathBuf>,
    pub compression: Option<String>,
    pub chunk_size: Option<String>,
    pub interval: Option<String>,
    pub bwlimit: Option<String>,
    pub request_timeout: Option<String>,
    pub retries: Option<u32>,
    pub uploads: Option<usize>,
    pub ca_file: Option<PathBuf>,
}

/// A validated `[[archive]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Archive {
    pub name: String,
    pub endpoint: String,
    pub bucket: String,
    /// Without a trailing `/`; keys are `PREFIX/sets/...`.
    pub prefix: String,
    pub region: String,
    pub credentials: PathBuf,
    /// age recipients the parts are encrypted to (empty: stored as they
    /// are, which `archive` warns of each time).
    pub recipients: Vec<String>,
    /// The age identity file restore decrypts with (standby only).
    pub identity: Option<PathBuf>,
    pub compression: Compression,
    /// Plaintext bytes per part object.
    pub chunk_size: u64,
    /// `run` archives at most once per interval (`None`: after every set).
    pub interval: Option<Duration>,
    /// The upload's limit (`None`: unlimited).
    pub bwlimit: Option<crate::wire::ratelimit::Bwlimit>,
    /// Each S3 request's deadline: its connect, every write of its body
    /// and every read of its answer must progress within it.
    pub request_timeout: Duration,
    /// How many more times an idempotent request is tried.
    pub retries: u32,
    /// How many part PUTs are in flight at once (the primary's archive
    /// write; local disk holds at most `uploads + 1` staged parts).
    pub uploads: usize,
    /// PEM certificates to trust for an https endpoint instead of the
    /// built-in (Mozilla) roots: a private CA. Read when the bucket is
    /// opened (`s3::Bucket::with_ca_file`).
    pub ca_file: Option<PathBuf>,
}

/// Checks an endpoint URL; returns the Host header for it.
pub fn endpoint_host(endpoint: &str) -> std::result::Result<String, String> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"))
        .ok_or_else(|| format!("`{endpoint}` must start with https:// or http://"))?;
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty()
        || host.len() > 255
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return Err(format!(
            "`{endpoint}`: expected scheme://host[:port] with no path"
        ));
    }
    let default_port = if endpoint.starts_with("https://") {
        ":443"
    } else {
        ":80"
    };
    Ok(host.strip_suffix(default_port).unwrap_or(host).to_string())
}

/// A bucket name S3 accepts (3-63 of a-z, 0-9, '.', '-').
pub fn validate_bucket(b: &str) -> std::result::Result<(), String> {
    if b.len() < 3
        || b.len() > 63
        || !b
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        || b.starts_with(['.', '-'])
    {
        return Err(format!(
            "`{b}` is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        ));
    }
    Ok(())
}

pub const DEFAULT_CHUNK: u64 = 64 << 20;
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_UPLOADS: usize = 4;
pub const MAX_UPLOADS: usize = 16;

fn err(file: &Path, i: usize, key: &str, msg: impl std::fmt::Display) -> Error {
    Error::config(format!("{}: archive[{i}].{key}: {msg}", file.display()))
}

/// An age recipient: `age1` + bech32, or an ssh public key age accepts.
pub fn validate_recipient(r: &str) -> std::result::Result<(), String> {
    let bech = r.strip_prefix("age1").is_some_and(|b| {
        (50..=100).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    });
    let ssh = (r.starts_with("ssh-ed25519 ") || r.starts_with("ssh-rsa "))
        && r.len() < 1024
        && r.bytes().all(|c| c.is_ascii_graphic() || c == b' ');
    if bech || ssh {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an age recipient (age1... or an ssh-ed25519/ssh-rsa public key)",
            crate::base::model::wire_str(r)
        ))
    }
}

fn validate_prefix(p: &str) -> std::result::Result<String, String> {
    let p = p.trim_matches('/');
    if p.is_empty()
        || p.len() > 200
        || !p
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "`{p}`: 1 to 200 of a-z, A-Z, 0-9, `-`, `_`, `.`, `/` (no empty, `.` or `..` component)"
        ));
    }
    Ok(p.to_string())
}

/// Validate every `[[archive]]`; errors name the file, the entry and the key.
/// `parse_size` is `config::parse_size` (passed in: `config` imports this module).
pub fn validate(
    file: &Path,
    site: &str,
    raw: &[RawArchive],
    parse_size: fn(&str) -> std::result::Result<u64, String>,
) -> Result<Vec<Archive>> {
    let mut out: Vec<Archive> = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        crate::base::model::validate_role(&a.name).map_err(|m| err(file, i, "name", m))?;
        if out.iter().any(|o| o.name == a.name) {
            return Err(err(file, i, "name", format!("`{}` is used twice", a.name)));
        }
        endpoint_host(&a.endpoint).map_err(|m| err(file, i, "endpoint", m))?;
        validate_bucket(&a.bucket).map_err(|m| err(file, i, "bucket", m))?;
        let prefix = validate_prefix(a.prefix.as_deref().unwrap_or(site))
            .map_err(|m| err(file, i, "prefix", m))?;
        let region = a.region.clone().unwrap_or_else(|| DEFAULT_REGION.into());
        if region.is_empty()
            || region.len() > 64
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(err(
                file,
                i,
                "region",
                format!("`{region}` is not a region name"),
            ));
        }
        if !a.credentials.is_absolute() {
            return Err(err(file, i, "credentials", "must be an absolute path"));
        }
        if let Some(p) = &a.identity
            && !p.is_absolute()
        {
            return Err(err(file, i, "identity", "must be an absolute path"));
        }
        let recipients = a.recipients.clone().unwrap_or_default();
        for r in &recipients {
            validate_recipient(r).map_err(|m| err(file, i, "recipients", m))?;
        }
        let compression = match &a.compression {
            Some(c) => Compression::parse(c).map_err(|m| err(file, i, "compression", m))?,
            None => Compression::None,
        };
        let chunk_size = match &a.chunk_size {
            Some(s) => parse_size(s).map_err(|m| err(file, i, "chunk_size", m))?,
            None => DEFAULT_CHUNK,
        };
        if !(1 << 20..=5 << 30).contains(&chunk_size) {
            return Err(err(
                file,
                i,
                "chunk_size",
                "1MiB to 5GiB (S3's largest single PUT)",
            ));
        }
        let interval = a
            .interval
            .as_deref()
            .map(|s| {
                humantime::parse_duration(s)
                    .map_err(|e| err(file, i, "interval", format!("`{s}`: {e}")))
                    .and_then(|d| {
                        if d > Duration::from_secs(366 * 86400) {
                            Err(err(file, i, "interval", "at most 366 days"))
                        } else {
                            Ok(d)
                        }
                    })
            })
            .transpose()?;
        let bwlimit = match &a.bwlimit {
            Some(s) => Some(
                crate::wire::ratelimit::Bwlimit::parse(Some(s), &[])
                    .map_err(|(_, m)| err(file, i, "bwlimit", m))?,
            ),
            None => None,
        };
        let request_timeout = match a.request_timeout.as_deref() {
            None => DEFAULT_REQUEST_TIMEOUT,
            Some(s) => {
                let d = humantime::parse_duration(s)
                    .map_err(|e| err(file, i, "request_timeout", format!("`{s}`: {e}")))?;
                if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
                    return Err(err(file, i, "request_timeout", "1s to 1h"));
                }
                d
            }
        };
        let retries = a.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > 10 {
            return Err(err(file, i, "retries", format!("{retries}: 0 to 10")));
        }
        let uploads = a.uploads.unwrap_or(DEFAULT_UPLOADS);
        if !(1..=MAX_UPLOADS).contains(&uploads) {
            return Err(err(
                file,
                i,
                "uploads",
                format!("{uploads}: 1 to {MAX_UPLOADS}"),
            ));
        }
        if let Some(p) = &a.ca_file
            && !p.is_absolute()
        {
            return Err(err(file, i, "ca_file", "must be an absolute path"));
        }
        out.push(Archive {
            name: a.name.clone(),
            endpoint: a.endpoint.trim_end_matches('/').to_string(),
            bucket: a.bucket.clone(),
            prefix,
            region,
            credentials: a.credentials.clone(),
            recipients,
            identity: a.identity.clone(),
            compression,
            chunk_size,
            interval,
            bwlimit,
            request_timeout,
            retries,
            uploads,
            ca_file: a.ca_file.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> String {
        format!(
            "name = \"offsite\"\nendpoint = \"http://127.0.0.1:7480\"\nbucket = \"b-1\"\ncredentials = \"/etc/c\"\n{extra}"
        )
    }

    fn size(s: &str) -> std::result::Result<u64, String> {
        match s {
            "1KiB" => Ok(1024),
            _ => Err(format!("`{s}`")),
        }
    }

    fn parse(text: &str) -> Result<Vec<Archive>> {
        let r: RawArchive = toml::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        validate(Path::new("/etc/s.toml"), "mail-a", &[r], size)
    }

    #[test]
    fn keys_are_validated_with_their_names() {
        let a = &parse(&raw("")).unwrap()[0];
        assert_eq!(a.prefix, "mail-a");
        assert_eq!(a.chunk_size, DEFAULT_CHUNK);
        let e = parse(&raw("recipients = [\"bob\"]"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("recipients") && e.contains("bob"), "{e}");
        let e = parse(&raw("prefix = \"a/../b\"")).unwrap_err().to_string();
        assert!(e.contains("archive[0].prefix"), "{e}");
        let e = parse(&raw("chunk_size = \"1KiB\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("chunk_size"), "{e}");
        let e = parse(&raw("request_timeout = \"0s\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("archive[0].request_timeout"), "{e}");
        let e = parse(&raw("retries = 11")).unwrap_err().to_string();
        assert!(e.contains("archive[0].retries"), "{e}");
        assert_eq!(parse(&raw("")).unwrap()[0].uploads, DEFAULT_UPLOADS);
        for bad in ["uploads = 0", "uploads = 17"] {
            let e = parse(&raw(bad)).unwrap_err().to_string();
            assert!(e.contains("archive[0].uploads"), "{bad}: {e}");
        }
        assert_eq!(parse(&raw("uploads = 2")).unwrap()[0].uploads, 2);
        let e = parse(&raw("ca_file = \"ca.pem\"")).unwrap_err().to_string();
        assert!(
            e.contains("archive[0].ca_file") && e.contains("absolute"),
            "{e}"
        );
        let a = &parse(&raw("request_timeout = \"5s\"\nretries = 0")).unwrap()[0];
        assert_eq!((a.request_timeout, a.retries), (Duration::from_secs(5), 0));
        let ok = parse(&raw(
            "recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\nbwlimit = \"10MiB/s\"\ninterval = \"1h\"",
        ))
        .unwrap();
        assert_eq!(
            ok[0].bwlimit.as_ref().and_then(|b| b.default_rate()),
            Some(10 << 20)
        );
    }
}
