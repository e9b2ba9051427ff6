//! Credentials for Git remotes, read from a secrets directory or the environment.
//!
//! Kratix rules (`kratix-contract.md` §1.4): basicAuth → `password` (required), `username`
//! (when empty and the URL contains `github`, `x-access-token`); ssh → `sshPrivateKey` and
//! `knownHosts` (both required). `githubApp` is not supported yet.
//!
//! Lookup: `<secrets_dir>/<secretRef.name>/<key>`, then `<secrets_dir>/<secretRef.name>_<key>`,
//! else the environment variable `PROMISED_SECRET_<NAME>_<KEY>` (see [`crate::secrets`], shared
//! with the S3 store).
//!
//! Secrets never reach process arguments: https credentials go to `git push` through
//! `GIT_CONFIG_COUNT/KEY/VALUE` (`http.extraHeader`) and to gix through its credentials
//! callback; ssh keys are written 0600 into a private temporary directory (mode 0700, under
//! `$RUNTIME_DIRECTORY` when systemd sets it, a tmpfs, else the temporary directory), never
//! into the state directory, removed when the state store closes, and referenced from
//! `GIT_SSH_COMMAND`. Every message we keep from `git` or gix passes through
//! [`Secrets::redact`].

use std::path::{Path, PathBuf};

use base64::Engine;

use super::config::{AuthMethod, GitOptions, GitStateStoreSpec, ParsedUrl, RemoteUrl};
use crate::Error;
pub(crate) use crate::secrets::read_key;
pub use crate::secrets::{Secrets, env_name};

/// Resolved credentials. `Debug` never prints secret values.
#[derive(Clone, Default)]
pub enum Credentials {
    /// Anonymous.
    #[default]
    None,
    /// HTTP basic auth (a token works as the password).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// ssh with files written into a private temporary directory.
    Ssh {
        /// Private key file (0600).
        key_file: PathBuf,
        /// known_hosts file (0600).
        known_hosts_file: PathBuf,
        /// The directory holding both (0700); removed when the last clone is dropped.
        dir: std::sync::Arc<tempfile::TempDir>,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::Basic { username, .. } => write!(
                f,
                "Basic {{ username: {username:?}, password: <redacted> }}"
            ),
            Credentials::Ssh { key_file, .. } => write!(f, "Ssh {{ key_file: {key_file:?} }}"),
        }
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(&tmp, e))?;
    let mut body = content.to_owned();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    f.write_all(body.as_bytes())
        .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Every ssh key directory this process made, for [`remove_key_dirs`].
static KEY_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Removes every ssh key directory this process made. A state store removes its own when it
/// is dropped; call this before `std::process::exit`, which skips destructors.
pub fn remove_key_dirs() {
    let dirs = std::mem::take(&mut *KEY_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Resolve credentials for `spec` (`store_id` prefixes the ssh key directory's name).
pub fn load(
    spec: &GitStateStoreSpec,
    opts: &GitOptions,
    parsed: &ParsedUrl,
    store_id: &str,
) -> Result<(Credentials, Secrets), Error> {
    let mut secrets = Secrets::default();
    if matches!(parsed.url, RemoteUrl::Local(_)) {
        return Ok((Credentials::None, secrets));
    }
    if spec.auth_method == AuthMethod::GithubApp {
        return Err(Error::Config(
            "authMethod githubApp is not supported yet; use basicAuth with an installation token"
                .into(),
        ));
    }
    let Some(secret) = &spec.secret_ref else {
        if let Some((u, p)) = &parsed.embedded {
            secrets.add(p);
            return Ok((
                Credentials::Basic {
                    username: u.clone(),
                    password: p.clone(),
                },
                secrets,
            ));
        }
        return Ok((Credentials::None, secrets));
    };
    let dir = opts.secrets_dir.as_deref();
    let missing = |key: &str| {
        Error::Config(format!(
            "secret {:?} has no key {key:?} (looked in {} and ${})",
            secret.name,
            dir.map(|d| d.join(&secret.name).join(key).display().to_string())
                .unwrap_or_else(|| "<no secrets_dir>".into()),
            env_name(&secret.name, key)
        ))
    };
    match spec.auth_method {
        AuthMethod::BasicAuth => {
            let password = read_key(dir, &secret.name, "password")?
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| missing("password"))?;
            let mut username = read_key(dir, &secret.name, "username")?
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            if username.is_empty() && spec.url.contains("github") {
                username = "x-access-token".into();
            }
            secrets.add(&password);
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            secrets.add(&b64);
            Ok((Credentials::Basic { username, password }, secrets))
        }
        AuthMethod::Ssh => {
            let key = read_key(dir, &secret.name, "sshPrivateKey")?
                .ok_or_else(|| missing("sshPrivateKey"))?;
            let known =
                read_key(dir, &secret.name, "knownHosts")?.ok_or_else(|| missing("knownHosts"))?;
            let parent = std::env::var_os("RUNTIME_DIRECTORY")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            // A new directory with a random name, mode 0700: no other user can have made it
            // or read what goes in (tempfile's default mode follows the umask).
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::Builder::new()
                .prefix(&format!("promised-ssh-{store_id}-"))
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(&parent)
                .map_err(|e| Error::io(&parent, e))?;
            let base = dir.path().to_path_buf();
            KEY_DIRS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(base.clone());
            let key_file = base.join("id");
            let known_hosts_file = base.join("known_hosts");
            write_private(&key_file, &key)?;
            write_private(&known_hosts_file, &known)?;
            for line in key.lines().filter(|l| !l.starts_with("-----")) {
                secrets.add(line.trim());
            }
            Ok((
                Credentials::Ssh {
                    key_file,
                    known_hosts_file,
                    dir: std::sync::Arc::new(dir),
                },
                secrets,
            ))
        }
        AuthMethod::GithubApp => unreachable!("handled above"),
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Credentials {
    /// The `ssh` command line for `GIT_SSH_COMMAND` / `core.sshCommand` (paths only, no secrets).
    pub fn ssh_command(&self) -> Option<String> {
        match self {
            Credentials::Ssh {
                key_file,
                known_hosts_file,
                ..
            } => Some(format!(
                "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
                shell_quote(&key_file.display().to_string()),
                shell_quote(&known_hosts_file.display().to_string())
            )),
            _ => None,
        }
    }

    /// Environment for a `git` child process: secrets go through `GIT_CONFIG_*`, never argv.
    /// `timeouts` bound a stalled transfer: `http.lowSpeedLimit`/`lowSpeedTime` (curl aborts
    /// after `read` below 1 byte/s) and the ssh options of [`super::transport::ssh_timeout_options`].
    pub fn git_env(
        &self,
        insecure_skip_tls_verify: bool,
        timeouts: &crate::NetworkTimeouts,
    ) -> Vec<(String, String)> {
        let mut config: Vec<(String, String)> = vec![
            // No credential helpers or prompts: the configured secret is the only source.
            ("credential.helper".into(), String::new()),
            ("core.askPass".into(), String::new()),
            ("maintenance.autoDetach".into(), "false".into()),
            ("gc.autoDetach".into(), "false".into()),
            ("http.lowSpeedLimit".into(), "1".into()),
            (
                "http.lowSpeedTime".into(),
                timeouts.read.as_secs().max(1).to_string(),
            ),
        ];
        if let Credentials::Basic { username, password } = self {
            let b64 =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            config.push((
                "http.extraHeader".into(),
                format!("Authorization: Basic {b64}"),
            ));
        }
        if insecure_skip_tls_verify {
            config.push(("http.sslVerify".into(), "false".into()));
        }
        let mut env = vec![
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_CONFIG_COUNT".into(), config.len().to_string()),
        ];
        for (i, (k, v)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), k));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), v));
        }
        // Without an ssh secret, the ssh command the daemon was given (if any) is kept.
        let ssh = self.ssh_command().unwrap_or_else(|| {
            std::env::var("GIT_SSH_COMMAND")
                .ok()
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "ssh".into())
        });
        env.push((
            "GIT_SSH_COMMAND".into(),
            format!("{ssh} {}", super::transport::ssh_timeout_options(timeouts)),
        ));
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::config::{SecretRef, parse_url};

    #[test]
    fn basic_auth_from_dir_with_github_default_user() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("creds")).unwrap();
        std::fs::write(dir.path().join("creds/password"), "tok3n-value\n").unwrap();
        // systemd LoadCredential=<id>:<directory> layout: <id>_<file>.
        assert_eq!(
            read_key(Some(dir.path()), "creds", "password")
                .unwrap()
                .as_deref(),
            Some("tok3n-value\n")
        );
        std::fs::write(dir.path().join("other_username"), "bob").unwrap();
        assert_eq!(
            read_key(Some(dir.path()), "other", "username")
                .unwrap()
                .as_deref(),
            Some("bob")
        );
        let mut spec = GitStateStoreSpec::new("https://github.com/o/r");
        spec.secret_ref = Some(SecretRef {
            name: "creds".into(),
            namespace: "default".into(),
        });
        let mut opts = GitOptions::new(dir.path());
        opts.secrets_dir = Some(dir.path().into());
        let (c, s) = load(&spec, &opts, &parse_url(&spec.url).unwrap(), "x").unwrap();
        assert!(
            matches!(&c, Credentials::Basic { username, password } if username == "x-access-token" && password == "tok3n-value")
        );
        assert!(!format!("{c:?}").contains("tok3n"));
        assert_eq!(s.redact("bad tok3n-value here"), "bad *** here");
        let env = c.git_env(false, &crate::NetworkTimeouts::default());
        assert!(
            env.iter().any(|(k, v)| k.starts_with("GIT_CONFIG_VALUE_")
                && v.starts_with("Authorization: Basic "))
        );
    }
}
