//! Typed errors of every state store operation.
//!
//! Guarantee: no variant ever holds a secret. URLs are stored with their user-info removed
//! (see [`crate::git::config::redact_url`]), and messages coming from `git` or gix are passed
//! through [`crate::git::credentials::Secrets::redact`] before they are stored here. The S3
//! store does the same with the server's error text (its access key ID and secret key are the
//! redacted secrets); its `url_without_secrets` is `s3://<bucket>/<path> at <endpoint URL>`.

use std::path::PathBuf;

/// Everything that can go wrong while checking, reading or writing a state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused our credentials (HTTP 401/403, ssh `Permission denied`), or none were
    /// configured but the server wants some.
    #[error("authentication to {url_without_secrets} failed: {message}")]
    Auth {
        /// The remote URL without any user-info.
        url_without_secrets: String,
        /// What the transport reported, with secrets removed.
        message: String,
    },
    /// The server rejected the push for a reason other than a concurrent update, for example a
    /// `pre-receive` hook or branch protection. `server_message` holds the server's own text
    /// (the `remote:` lines `git push` printed) followed by the porcelain reason.
    #[error("push rejected by the server: {server_message}")]
    Rejected {
        /// The server's text, verbatim apart from secret redaction.
        server_message: String,
    },
    /// Every attempt lost the race against other writers (`--force-with-lease` was stale, or the
    /// local ref moved) and the retry bound was reached. Callers should requeue (Kratix uses 15 s).
    #[error("the branch kept moving under us: gave up after {attempts} attempts")]
    Conflict {
        /// How many times the change was rebuilt and published.
        attempts: u32,
    },
    /// Network or protocol failure talking to the remote (connection refused, bad URL path,
    /// TLS verification failure, `git push` crashing, ...).
    #[error("transport error talking to {url_without_secrets}: {message}")]
    Transport {
        /// The remote URL without any user-info.
        url_without_secrets: String,
        /// What went wrong, with secrets removed.
        message: String,
    },
    /// A local file-system operation failed.
    #[error("I/O error at {path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A local git object-database or reference operation failed.
    #[error("git repository error: {0}")]
    Repository(String),
    /// `GitStateStore.spec.url` is not a URL we accept (see [`crate::git::config::RemoteUrl`]).
    #[error("invalid state store URL {url_without_secrets:?}: {reason}")]
    InvalidUrl {
        /// The offending URL without any user-info.
        url_without_secrets: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The configuration is unusable (missing secret key, unsupported auth method, ...).
    #[error("invalid state store configuration: {0}")]
    Config(String),
    /// A path or destination name in the change set is not a safe store-relative path.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path.
        path: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Our ownership index in the store could not be parsed.
    #[error("corrupt ownership index {path}: {message}")]
    CorruptIndex {
        /// Repository path of the index file.
        path: String,
        /// The parse error.
        message: String,
    },
    /// A background task panicked or was cancelled.
    #[error("internal task failure: {0}")]
    Task(String),
}

impl Error {
    /// `true` for errors worth a short requeue (lost races and transient transport trouble),
    /// `false` for errors that need a person (credentials, hooks, configuration).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::Transport { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
