//! `web:` in the daemon config: whether the console is served, its bearer token and the
//! commit links it shows (README "Web console").

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `web:` settings.
///
/// ```yaml
/// web:
///   enabled: true            # default: on for a loopback `listen`, or with tokenFile
///   tokenFile: /etc/promised/web-token
///   commitUrls:
///     GitStateStore/default: https://git.example.com/platform-state/commit/{commit}
///   configCommitUrl: https://git.example.com/platform-config/commit/{commit}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WebSettings {
    /// `true`: always served; `false`: never; unset (default): served when `listen` is a
    /// loopback address or a `tokenFile` is set, so a console on a public address never
    /// appears without an access check.
    pub enabled: Option<bool>,
    /// File holding the bearer token every console page and its JSON needs
    /// (`Authorization: Bearer <token>`, or the `promised-token` cookie). Whitespace around
    /// the token is ignored. Unset: no token asked for.
    pub token_file: Option<PathBuf>,
    /// Per state store (`<Kind>/<name>`) a URL template of one commit's web page;
    /// `{commit}` is replaced by the full commit id. Unset: commit ids are not links.
    pub commit_urls: BTreeMap<String, String>,
    /// URL template of a config repo commit's web page (`{commit}` as above).
    pub config_commit_url: Option<String>,
}

impl WebSettings {
    /// Whether the console is served on `listen` (`host:port`) with these settings: see
    /// [`WebSettings::enabled`].
    pub fn serves(&self, listen: &str) -> bool {
        match self.enabled {
            Some(on) => on,
            None => self.token_file.is_some() || is_loopback(listen),
        }
    }

    /// The link to `commit` of the state store `store` (`<Kind>/<name>`), when a template is
    /// configured.
    pub fn store_commit_url(&self, store: &str, commit: &str) -> Option<String> {
        self.commit_urls
            .get(store)
            .map(|t| t.replace("{commit}", commit))
    }

    /// The link to the config repo's `commit`, when a template is configured.
    pub fn config_url(&self, commit: &str) -> Option<String> {
        self.config_commit_url
            .as_ref()
            .map(|t| t.replace("{commit}", commit))
    }

    /// The bearer token from [`WebSettings::token_file`]; `Ok(None)` without one. Errors name
    /// the file (never its content).
    pub fn token(&self) -> Result<Option<String>, String> {
        match &self.token_file {
            None => Ok(None),
            Some(f) => {
                let t = std::fs::read_to_string(f)
                    .map_err(|e| format!("web.tokenFile {}: {e}", f.display()))?;
                let t = t.trim();
                if t.is_empty() {
                    return Err(format!("web.tokenFile {}: empty", f.display()));
                }
                Ok(Some(t.to_string()))
            }
        }
    }
}

/// True when `listen` (`host:port`, `[v6]:port`, `localhost:port`) is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    let host = match listen.rsplit_once(':') {
        Some((h, _)) => h,
        None => listen,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_on_public_addresses() {
        let s = WebSettings::default();
        assert!(s.serves("127.0.0.1:8473"));
        assert!(s.serves("[::1]:8473"));
        assert!(s.serves("localhost:80"));
        assert!(!s.serves("0.0.0.0:8473"));
        assert!(!s.serves("10.0.0.5:8473"));
        let with_token = WebSettings {
            token_file: Some("/t".into()),
            ..WebSettings::default()
        };
        assert!(with_token.serves("0.0.0.0:8473"));
        let off = WebSettings {
            enabled: Some(false),
            ..WebSettings::default()
        };
        assert!(!off.serves("127.0.0.1:1"));
    }

    #[test]
    fn commit_links_fill_the_template() {
        let s = WebSettings {
            commit_urls: [(
                "GitStateStore/local".to_string(),
                "https://git.example/state/commit/{commit}".to_string(),
            )]
            .into(),
            ..WebSettings::default()
        };
        assert_eq!(
            s.store_commit_url("GitStateStore/local", "abc").as_deref(),
            Some("https://git.example/state/commit/abc")
        );
        assert_eq!(s.store_commit_url("GitStateStore/other", "abc"), None);
        assert_eq!(s.config_url("abc"), None);
    }
}
