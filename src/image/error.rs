//! [`ImageError`]: why an image could not be resolved, pulled or unpacked.
//!
//! Every message names the image as written, what the registry answered (HTTP status or OCI
//! error code) and what to do about it. No message ever holds a password, a token or any
//! content of the auth file: credentials are described by the auth file's path, the entry's
//! key and the user name only.

use std::path::PathBuf;

/// An image store failure. `image` is always the reference as the caller wrote it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The reference does not parse (`registry/repository[:tag][@sha256:…]`).
    #[error(
        "image {image:?}: not a valid image reference ({reason}); write \
         [registry[:port]/]repository[:tag][@sha256:<64 hex>] in lower case"
    )]
    InvalidReference {
        /// The reference as written.
        image: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The registry does not know the repository or the tag/digest (`MANIFEST_UNKNOWN`,
    /// `NAME_UNKNOWN`, or a plain 404).
    #[error(
        "image {image:?}: registry {registry} has no such image ({code}: {message}); check the \
         repository name and tag, and that it was pushed to this registry"
    )]
    NotFound {
        /// The reference as written.
        image: String,
        /// The registry host (`host[:port]`) contacted, a mirror if one is configured.
        registry: String,
        /// The registry's error code (`MANIFEST_UNKNOWN`, `NAME_UNKNOWN`) or `HTTP 404`.
        code: String,
        /// The registry's message.
        message: String,
    },

    /// The registry refused the request: 401 (no or wrong credentials) or `DENIED`.
    #[error(
        "image {image:?}: registry {registry} refused access ({answer}); credentials used: \
         {credentials}; {hint}"
    )]
    Unauthorized {
        /// The reference as written.
        image: String,
        /// The registry host contacted.
        registry: String,
        /// The registry's answer: `HTTP 401`, `UNAUTHORIZED`, `DENIED`, or the token
        /// endpoint's status.
        answer: String,
        /// Which credentials were sent, never the secret itself: `none (…)` or `auth file
        /// <path>, entry "<key>" (user "<name>")`.
        credentials: String,
        /// What to do.
        hint: String,
    },

    /// The registry could not be reached: connection refused, DNS failure, TLS failure,
    /// timeout.
    #[error(
        "image {image:?}: registry {registry} is unreachable ({cause}); check that it is up and \
         reachable from this host{tls_hint}"
    )]
    Unreachable {
        /// The reference as written.
        image: String,
        /// The registry host contacted.
        registry: String,
        /// The underlying error (its source chain joined with `: `).
        cause: String,
        /// A hint about `images.insecureRegistries` when the failure looks like a
        /// plain-HTTP/HTTPS mismatch, else empty.
        tls_hint: String,
    },

    /// Any other answer of the registry (5xx, 429, unexpected status, protocol violation).
    #[error("image {image:?}: registry {registry} answered {answer}: {message}")]
    Registry {
        /// The reference as written.
        image: String,
        /// The registry host contacted.
        registry: String,
        /// `HTTP <status>` or the OCI error code.
        answer: String,
        /// The registry's message (shortened).
        message: String,
    },

    /// Downloaded or cached content does not match its digest. The content is never used;
    /// a cached blob found corrupt is deleted and downloaded again.
    #[error(
        "image {image:?}: {what} {expected} has digest {actual}: the content is corrupt or was \
         altered (a proxy or a broken registry?); it was discarded, pull again"
    )]
    DigestMismatch {
        /// The reference as written.
        image: String,
        /// What was checked: `manifest`, `config`, `layer`, `uncompressed layer (diff_id)`.
        what: String,
        /// The expected digest.
        expected: String,
        /// The digest of what was received.
        actual: String,
    },

    /// A blob or the unpacked image exceeds a configured limit.
    #[error(
        "image {image:?}: {what} {digest} reached {size} bytes, more than the limit of {limit} bytes; \
         raise images.{setting} if the image is legitimate"
    )]
    TooLarge {
        /// The reference as written.
        image: String,
        /// `layer` or `unpacked image`.
        what: String,
        /// The layer digest, or the image's manifest digest.
        digest: String,
        /// The size seen so far (bytes).
        size: u64,
        /// The limit (bytes).
        limit: u64,
        /// The setting that sets the limit: `maxLayerBytes` or `maxUnpackedBytes`.
        setting: String,
    },

    /// A layer holds an entry that would write outside the image's root, or cannot be applied
    /// safely. Nothing of the image is used.
    #[error(
        "image {image:?}: layer {layer} holds the unsafe entry {entry:?} ({reason}); the image \
         was refused, nothing outside the image cache was written; rebuild the image without it"
    )]
    UnsafeEntry {
        /// The reference as written.
        image: String,
        /// The layer's digest.
        layer: String,
        /// The entry's path as in the tar.
        entry: String,
        /// Why it is refused.
        reason: String,
    },

    /// An image index has no manifest for this host's platform.
    #[error(
        "image {image:?}: the image index {index} has no manifest for {wanted} (it has: \
         {available}); use an image built for this platform"
    )]
    NoPlatform {
        /// The reference as written.
        image: String,
        /// The index digest.
        index: String,
        /// The host platform, `linux/amd64` style.
        wanted: String,
        /// The platforms the index offers, comma-separated.
        available: String,
    },

    /// Policy `Never` and the image is not in the cache.
    #[error(
        "image {image:?}: not in the image cache and imagePullPolicy is Never; pull it first or \
         use IfNotPresent"
    )]
    NotPresent {
        /// The reference as written.
        image: String,
    },

    /// The manifest, config or a layer is of a kind the store does not handle.
    #[error("image {image:?}: {what} {digest} has the unsupported media type {media_type:?}")]
    UnsupportedMediaType {
        /// The reference as written.
        image: String,
        /// `manifest`, `layer`.
        what: String,
        /// Its digest.
        digest: String,
        /// Its media type.
        media_type: String,
    },

    /// A manifest, config or layer is malformed (bad JSON, diff_ids not matching layers, tar
    /// stream broken, an entry that cannot be applied).
    #[error("image {image:?}: {reason}")]
    InvalidImage {
        /// The reference as written.
        image: String,
        /// What is wrong.
        reason: String,
    },

    /// The auth file (`images.authFile`) cannot be read or parsed. The message gives the
    /// position of a syntax error, never content.
    #[error("images.authFile {}: {reason}", path.display())]
    AuthFile {
        /// The auth file's path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// `images:` settings are invalid.
    #[error("images: {reason}")]
    Settings {
        /// What is wrong.
        reason: String,
    },

    /// A file system operation in the cache failed.
    #[error("image cache: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: String,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// An [`ImageError::Io`].
    pub(crate) fn io(op: &str, path: impl Into<PathBuf>, source: std::io::Error) -> ImageError {
        ImageError::Io {
            op: op.to_string(),
            path: path.into(),
            source,
        }
    }

    /// An [`ImageError::InvalidImage`].
    pub(crate) fn invalid(image: &str, reason: impl Into<String>) -> ImageError {
        ImageError::InvalidImage {
            image: image.to_string(),
            reason: reason.into(),
        }
    }
}

/// `s` cut to at most `max` characters (on a char boundary), with `…` when cut; control
/// characters replaced, so a registry's body never garbles a log line.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    let mut out: String = s
        .trim()
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.trim().chars().count() > max {
        out.push('…');
    }
    out
}
