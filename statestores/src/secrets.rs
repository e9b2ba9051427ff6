//! Secret values for the state stores: where a `secretRef` key is read from and how secret
//! strings are scrubbed from every text we keep. Shared by the Git and S3 backends.
//!
//! Lookup of key `<key>` of the secret named `<name>` (Kratix `spec.secretRef`, see
//! [`SecretRef`](crate::spec::SecretRef); the namespace is not used):
//! `<secrets_dir>/<name>/<key>` (one file per key: a mounted Kubernetes Secret looks like that),
//! then `<secrets_dir>/<name>_<key>` (what systemd's `LoadCredential=<name>:<directory>` makes
//! of a directory of key files), else the environment variable `PROMISED_SECRET_<NAME>_<KEY>`
//! ([`env_name`]).

use std::path::Path;

use crate::Error;

/// The secret strings to scrub from any text we keep. `Debug` prints only how many there are.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// Replace every secret (and its base64 forms) in `text` with `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.0 {
            if s.len() >= 3 {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// Remember `s` (ignored when empty) for [`Secrets::redact`].
    pub(crate) fn add(&mut self, s: &str) {
        if !s.is_empty() {
            self.0.push(s.to_owned());
        }
    }
}

/// Read key `key` of secret `name`: file first, then environment (see the module docs).
/// `Ok(None)` when it is found nowhere.
///
/// # Errors
/// [`Error::Io`] when a key file exists but cannot be read.
pub(crate) fn read_key(
    secrets_dir: Option<&Path>,
    name: &str,
    key: &str,
) -> Result<Option<String>, Error> {
    if let Some(dir) = secrets_dir {
        for path in [dir.join(name).join(key), dir.join(format!("{name}_{key}"))] {
            match std::fs::read_to_string(&path) {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
        }
    }
    Ok(std::env::var(env_name(name, key)).ok())
}

/// `PROMISED_SECRET_<NAME>_<KEY>`: `name` and `key` upper-cased, every character that is not
/// an ASCII letter or digit (`-`, `.`, …) replaced by `_`.
pub fn env_name(name: &str, key: &str) -> String {
    let norm = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("PROMISED_SECRET_{}_{}", norm(name), norm(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("git-creds", "sshPrivateKey"),
            "PROMISED_SECRET_GIT_CREDS_SSHPRIVATEKEY"
        );
    }
}
