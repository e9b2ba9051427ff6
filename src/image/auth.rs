//! Registry credentials from a Docker `config.json` (the format of Kubernetes
//! `imagePullSecrets` of type `kubernetes.io/dockerconfigjson`).
//!
//! Only the `auths` section is read, with serde: `auth` (base64 of `user:password`), or
//! `username` + `password`, or `registrytoken` (sent as a Bearer token). `credHelpers`,
//! `credsStore` and `identitytoken` are ignored: no credential helper is ever spawned.
//!
//! Keys may be `host`, `host:port`, `https://host/…` or `http://host/…`; Docker Hub's
//! `https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io` and `docker.io`
//! all name Docker Hub.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::error::ImageError;

/// The credentials chosen for one registry, with a description that never holds the secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// What oci-client sends.
    pub auth: RegistryAuth,
    /// For messages: `none (…)` or `auth file <path>, entry "<key>" (user "<name>")`.
    pub described: String,
    /// Identifies the credential set (one oci-client `Client` per set): the entry key, the
    /// user and a SHA-256 of the secret, so the secret itself is not kept twice.
    pub key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.described)
    }
}

impl Credentials {
    /// No credentials; `why` says why (no auth file, no entry).
    pub fn anonymous(why: String) -> Credentials {
        Credentials {
            auth: RegistryAuth::Anonymous,
            described: format!("none ({why})"),
            key: "anonymous".to_string(),
        }
    }

    /// Whether any credentials are sent.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.auth, RegistryAuth::Anonymous)
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The host a config.json key names, normalized: scheme and path dropped, lower case, Docker
/// Hub's names folded into `docker.io`.
pub(crate) fn normalize_host(key: &str) -> String {
    let key = key.trim();
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

/// Looks up the credentials for `registry` (`host[:port]` actually contacted) in the auth
/// file, if one is configured. The file is read on every call, so a rotated secret is used
/// without a restart.
pub(crate) fn credentials_for(
    auth_file: Option<&Path>,
    registry: &str,
) -> Result<Credentials, ImageError> {
    let Some(path) = auth_file else {
        return Ok(Credentials::anonymous(
            "no auth file configured in images.authFile".to_string(),
        ));
    };
    let text = std::fs::read(path).map_err(|e| ImageError::AuthFile {
        path: path.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })?;
    let config: DockerConfig = serde_json::from_slice(&text).map_err(|e| ImageError::AuthFile {
        path: path.to_path_buf(),
        // Position and category only: serde_json's message may quote the content.
        reason: format!(
            "not a Docker config.json ({:?} error at line {} column {}); expected \
             {{\"auths\": {{\"<registry>\": {{\"auth\": \"<base64 user:password>\"}}}}}}",
            e.classify(),
            e.line(),
            e.column()
        ),
    })?;
    let wanted = normalize_host(registry);
    let Some((key, entry)) = config
        .auths
        .iter()
        .find(|(k, _)| normalize_host(k) == wanted)
    else {
        return Ok(Credentials::anonymous(format!(
            "auth file {} has no entry for {registry}",
            path.display()
        )));
    };
    from_entry(path, key, entry)
}

fn from_entry(path: &Path, key: &str, entry: &AuthEntry) -> Result<Credentials, ImageError> {
    let bad = |reason: String| ImageError::AuthFile {
        path: path.to_path_buf(),
        reason,
    };
    let (user, password) = if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| {
                bad(format!(
                    "entry {key:?}: \"auth\" is not base64 of user:password"
                ))
            })?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| bad(format!("entry {key:?}: \"auth\" does not decode to UTF-8")))?;
        let Some((u, p)) = decoded.split_once(':') else {
            return Err(bad(format!(
                "entry {key:?}: \"auth\" does not decode to user:password (no ':')"
            )));
        };
        (u.to_string(), p.to_string())
    } else if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        (u.clone(), p.clone())
    } else if let Some(token) = entry.registrytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials {
            auth: RegistryAuth::Bearer(token.to_string()),
            described: format!(
                "auth file {}, entry {key:?} (registrytoken)",
                path.display()
            ),
            key: format!("bearer:{key}:{}", secret_hash(token)),
        });
    } else if entry.identitytoken.is_some() {
        return Ok(Credentials::anonymous(format!(
            "auth file {}, entry {key:?} has only an identitytoken, which is not supported; \
             give \"auth\" or \"username\"/\"password\"",
            path.display()
        )));
    } else {
        return Err(bad(format!(
            "entry {key:?} has neither \"auth\" nor \"username\" and \"password\""
        )));
    };
    Ok(Credentials {
        key: format!("basic:{key}:{user}:{}", secret_hash(&password)),
        described: format!(
            "auth file {}, entry {key:?} (user {user:?})",
            path.display()
        ),
        auth: RegistryAuth::Basic(user, password),
    })
}

fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

/// The auth file path as configured: a relative path resolves against
/// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) when that is set, else it is used as
/// given (relative to the working directory).
pub(crate) fn resolve_auth_file(configured: Option<&Path>) -> Option<PathBuf> {
    let path = configured?;
    if path.is_relative()
        && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty())
    {
        return Some(PathBuf::from(dir).join(path));
    }
    Some(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn keys_normalize() {
        assert_eq!(normalize_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_host("registry-1.docker.io"), "docker.io");
        assert_eq!(
            normalize_host("http://127.0.0.1:5000/v2/"),
            "127.0.0.1:5000"
        );
        assert_eq!(normalize_host("GHCR.io"), "ghcr.io");
    }

    #[test]
    fn auth_and_username_password() {
        let d = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let p = write(
            d.path(),
            &format!(
                r#"{{"auths":{{"https://ghcr.io/v1/":{{"auth":"{b64}"}},
                "127.0.0.1:5000":{{"username":"bob","password":"pw"}}}},
                "credHelpers":{{"x.io":"evil"}}}}"#
            ),
        );
        let c = credentials_for(Some(&p), "ghcr.io").unwrap();
        assert_eq!(c.auth, RegistryAuth::Basic("alice".into(), "pa:ss".into()));
        assert!(!c.described.contains("pa:ss"));
        assert!(!format!("{c:?}").contains("pa:ss"));
        let c = credentials_for(Some(&p), "127.0.0.1:5000").unwrap();
        assert_eq!(c.auth, RegistryAuth::Basic("bob".into(), "pw".into()));
        let c = credentials_for(Some(&p), "x.io").unwrap();
        assert!(c.is_anonymous());
        assert!(c.described.contains("no entry for x.io"), "{}", c.described);
    }

    #[test]
    fn parse_errors_never_quote_content() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            r#"{"auths":{"h":{"auth":12345678}}, "secretvalue"}"#,
        );
        let e = credentials_for(Some(&p), "h").unwrap_err().to_string();
        assert!(!e.contains("12345678") && !e.contains("secretvalue"), "{e}");
        let p = write(
            d.path(),
            r#"{"auths":{"h":{"auth":"!!!notbase64-s3cret"}}}"#,
        );
        let e = credentials_for(Some(&p), "h").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
