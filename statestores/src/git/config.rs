//! Configuration of a Git state store: [`GitStateStoreSpec`] mirrors Kratix
//! `GitStateStore.spec` field for field (`kratix-contract.md` §1.4; declared in [`crate::spec`]
//! and re-exported here); [`GitOptions`] holds `promised`'s own knobs; [`parse_url`] classifies
//! `spec.url`.
//!
//! Departures from Kratix, on purpose:
//! - `url` also accepts `http://` (with a warning), `git://`, `file://` and plain local paths,
//!   which tests and the embedded default need. Kratix only accepts `https://` (basicAuth,
//!   githubApp) and ssh forms.
//! - TLS certificates are verified. Kratix always skips verification; we only do when
//!   [`GitOptions::insecure_skip_tls_verify`] is set.
//! - The branch is created on the first write when it does not exist yet (Kratix requires it to
//!   exist because it clones with `--branch`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::Error;
// The Kratix spec types are declared in `crate::spec`.
pub use crate::spec::{GitAuthMethod as AuthMethod, GitAuthor, GitStateStoreSpec, SecretRef};

/// A callback run right before each publish attempt (push or ref update) with the 1-based
/// attempt number. Meant for fault injection in tests (for example pushing a foreign commit to
/// prove the retry path); leave it `None` in production.
pub type BeforePublish = Arc<dyn Fn(u32) + Send + Sync>;

/// `promised`'s own options for a Git state store.
#[derive(Clone)]
pub struct GitOptions {
    /// The daemon's state directory; remote stores keep their persistent bare clone under
    /// `<state_dir>/git/` (ssh key files go to a private temporary directory, never here).
    pub state_dir: PathBuf,
    /// Skip TLS certificate verification (Kratix always does; we default to `false`).
    pub insecure_skip_tls_verify: bool,
    /// Secrets directory laid out as `<dir>/<secret name>/<key>` (systemd `LoadCredential=`, a
    /// mounted Kubernetes Secret). Falls back to `PROMISED_SECRET_<NAME>_<KEY>` variables.
    pub secrets_dir: Option<PathBuf>,
    /// Publish attempts before [`Error::Conflict`]; default 5.
    pub max_push_attempts: u32,
    /// Fault injection hook, see [`BeforePublish`].
    pub before_publish: Option<BeforePublish>,
    /// How long a remote branch head this store verified (or pushed) is trusted without
    /// fetching. Within it, an apply with nothing to write does no I/O at all, and an apply
    /// with changes builds on that head and pushes with `--force-with-lease` on it: if
    /// someone pushed meanwhile, the lease rejects the push, the store fetches and rebuilds
    /// (and repairs drift) as for any race. Drift pushed by someone else is therefore noticed
    /// at the next write or once this window has passed. Default zero: fetch on every apply.
    pub trust_head_for: std::time::Duration,
    /// Connect, read and whole-operation timeouts of every fetch and push ([`crate::net`]).
    pub network: crate::NetworkTimeouts,
    /// Sign every commit with this key ([`super::signing`]); `None` = unsigned commits.
    pub signing: Option<std::sync::Arc<super::signing::Signer>>,
}

impl std::fmt::Debug for GitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitOptions")
            .field("state_dir", &self.state_dir)
            .field("insecure_skip_tls_verify", &self.insecure_skip_tls_verify)
            .field("secrets_dir", &self.secrets_dir)
            .field("max_push_attempts", &self.max_push_attempts)
            .field("before_publish", &self.before_publish.is_some())
            .field("trust_head_for", &self.trust_head_for)
            .field("network", &self.network)
            .field("signing", &self.signing)
            .finish()
    }
}

impl GitOptions {
    /// Defaults with the given state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            insecure_skip_tls_verify: false,
            secrets_dir: None,
            max_push_attempts: 5,
            before_publish: None,
            trust_head_for: std::time::Duration::ZERO,
            network: crate::NetworkTimeouts::default(),
            signing: None,
        }
    }
}

/// A classified `spec.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUrl {
    /// `https://host/path` (user-info removed).
    Https(String),
    /// `http://host/path` (user-info removed); allowed with a warning.
    Http(String),
    /// `ssh://[user@]host[:port]/path` or scp-like `user@host:path`.
    Ssh(String),
    /// `git://host[:port]/path` (no authentication).
    Git(String),
    /// `file://…` or a plain path: the local-repository backend.
    Local(PathBuf),
}

/// A URL plus the user-info that was embedded in it (`https://user:pass@host/…`), which we
/// strip so it never reaches process arguments.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    /// The classified URL without secrets.
    pub url: RemoteUrl,
    /// `(username, password)` found in an http(s) URL.
    pub embedded: Option<(String, String)>,
}

impl RemoteUrl {
    /// The URL as given to transports (never contains secrets).
    pub fn as_str(&self) -> String {
        match self {
            RemoteUrl::Https(u) | RemoteUrl::Http(u) | RemoteUrl::Ssh(u) | RemoteUrl::Git(u) => {
                u.clone()
            }
            RemoteUrl::Local(p) => p.display().to_string(),
        }
    }
}

/// Remove user-info from a URL for display (`https://u:p@h/x` → `https://h/x`). ssh user names
/// are kept (they are not secret) unless a password is attached.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            if scheme.starts_with("ssh") && !userinfo.contains(':') {
                return url.to_owned();
            }
            return format!("{scheme}://{host}{path}");
        }
    }
    url.to_owned()
}

/// Classify `spec.url`. See the module docs for what is accepted beyond Kratix.
pub fn parse_url(raw: &str) -> Result<ParsedUrl, Error> {
    parse_url_with(raw, true)
}

/// [`parse_url`] without the plain-`http://` warning (for looking a URL up again).
pub fn parse_url_quiet(raw: &str) -> Result<ParsedUrl, Error> {
    parse_url_with(raw, false)
}

fn parse_url_with(raw: &str, warn: bool) -> Result<ParsedUrl, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url_without_secrets: redact_url(raw),
        reason: reason.to_owned(),
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid("empty URL"));
    }
    if let Some((scheme, rest)) = raw.split_once("://") {
        let scheme_l = scheme.to_ascii_lowercase();
        if scheme_l == "file" {
            if rest.is_empty() {
                return Err(invalid("file:// URL without a path"));
            }
            return Ok(ParsedUrl {
                url: RemoteUrl::Local(PathBuf::from(rest)),
                embedded: None,
            });
        }
        let (authority, _) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.ends_with('@') {
            return Err(invalid("missing host"));
        }
        let mut embedded = None;
        if matches!(scheme_l.as_str(), "http" | "https")
            && let Some((userinfo, _)) = authority.rsplit_once('@')
        {
            let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            embedded = Some((u.to_owned(), p.to_owned()));
        }
        let clean = redact_url(raw);
        let url = match scheme_l.as_str() {
            "https" => RemoteUrl::Https(clean),
            "http" => {
                if warn {
                    tracing::warn!(url = %clean, "state store uses plain http://: credentials and content travel unencrypted");
                }
                RemoteUrl::Http(clean)
            }
            "ssh" | "git+ssh" | "ssh+git" => RemoteUrl::Ssh(clean),
            "git" => RemoteUrl::Git(clean),
            _ => {
                return Err(invalid(
                    "unsupported scheme (use https, ssh, http, git or file)",
                ));
            }
        };
        return Ok(ParsedUrl { url, embedded });
    }
    // scp-like `user@host:path` (Kratix: ^(ssh://)?([^/:]*?)@[^@]+$) or `host:path`.
    if let Some((before, _)) = raw.split_once(':')
        && !before.contains('/')
        && before.contains('@')
    {
        return Ok(ParsedUrl {
            url: RemoteUrl::Ssh(raw.to_owned()),
            embedded: None,
        });
    }
    Ok(ParsedUrl {
        url: RemoteUrl::Local(PathBuf::from(raw)),
        embedded: None,
    })
}

/// `name` for a file name: ASCII letters, digits, `-` and `_` kept, anything else `_`, at most
/// 64 characters; `store` when empty. The persistent clone of a store is named after it
/// (`<state_dir>/git/<sanitize(name)>-<12 hex>.git`).
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() { "store".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_urls() {
        let p = parse_url("https://alice:s3cret@example.com/org/repo.git").unwrap();
        assert_eq!(
            p.url,
            RemoteUrl::Https("https://example.com/org/repo.git".into())
        );
        assert_eq!(p.embedded, Some(("alice".into(), "s3cret".into())));
        assert!(matches!(
            parse_url("git@github.com:org/repo.git").unwrap().url,
            RemoteUrl::Ssh(_)
        ));
        assert_eq!(
            parse_url("ssh://git@host:22/x").unwrap().url,
            RemoteUrl::Ssh("ssh://git@host:22/x".into())
        );
        assert!(matches!(
            parse_url("git://127.0.0.1:9/r").unwrap().url,
            RemoteUrl::Git(_)
        ));
        assert_eq!(
            parse_url("file:///srv/r.git").unwrap().url,
            RemoteUrl::Local("/srv/r.git".into())
        );
        assert_eq!(
            parse_url("/srv/r.git").unwrap().url,
            RemoteUrl::Local("/srv/r.git".into())
        );
        assert!(parse_url("ftp://x/y").is_err());
        let e = parse_url("ftp://u:topsecret@x/y").unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn spec_defaults_match_kratix() {
        let spec: GitStateStoreSpec = serde_json::from_str(r#"{"url":"https://h/r"}"#).unwrap();
        assert_eq!(spec.branch, "main");
        assert_eq!(spec.auth_method, AuthMethod::BasicAuth);
        assert_eq!(spec.git_author.name, "kratix");
        let spec: GitStateStoreSpec = serde_json::from_str(
            r#"{"url":"git@h:r","authMethod":"ssh","secretRef":{"name":"s"},"gitAuthor":{"name":"n","email":"e"}}"#,
        )
        .unwrap();
        assert_eq!(spec.secret_ref.unwrap().namespace, "default");
    }
}
