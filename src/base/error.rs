//! One error type for the library: a kind the caller can match on, a message
//! that says what failed and where, and a hint that says what to do next.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration file is missing, unreadable or invalid.
    Config,
    /// An external program failed (argv, status and stderr are in the message).
    Command,
    /// The storage layer is not in the state we need (missing volume, snapshot...).
    Storage,
    /// The wire protocol between `ship` and `serve` was violated or cut.
    Protocol,
    /// Data did not verify (checksum mismatch, wrong storage id).
    Integrity,
    /// The request was refused by policy (unknown volume, protected snapshot...).
    Refused,
    /// Plain I/O on local files.
    Io,
    /// Nothing to do / nothing usable found (no complete set, ...).
    NotFound,
}

#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn config(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, m)
    }
    pub fn storage(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Storage, m)
    }
    pub fn protocol(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, m)
    }
    pub fn integrity(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, m)
    }
    pub fn refused(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Refused, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, m)
    }
    pub fn io(context: impl fmt::Display, e: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{context}: {e}"))
    }
    /// Prefix the message with more context (which volume, which set...).
    pub fn context(mut self, c: impl fmt::Display) -> Self {
        self.message = format!("{c}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Attach context to any `Result<_, Error>`.
pub trait Context<T> {
    fn ctx(self, c: impl fmt::Display) -> Result<T>;
}

impl<T> Context<T> for Result<T> {
    fn ctx(self, c: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(c))
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn ctx(self, c: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::io(c, e))
    }
}
