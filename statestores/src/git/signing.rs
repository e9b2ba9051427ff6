//! Signed state store commits: an SSH key (`gpg.format=ssh`) or an OpenPGP key.
//!
//! Git signs a commit by passing the commit object *without* its `gpgsig` header to a signing
//! program and storing the armored signature it prints in that header (git: `commit.c`
//! `sign_commit_to_strbuf`, `gpg-interface.c`). We do the same with the same programs git runs:
//! `ssh-keygen -Y sign -n git` for SSH keys and `gpg --detach-sign --armor` for OpenPGP keys, so
//! `git verify-commit`, Flux's `GitRepository.spec.verify` and branch protection rules that
//! require signed commits accept them (`users-and-peers.md` §3.4).
//!
//! The key comes from a file or a systemd credential (`$CREDENTIALS_DIRECTORY/<name>`, from
//! `LoadCredential=`). It must be unencrypted (a daemon has no one to type a passphrase).
//! [`Signer::load`] checks it when the state store opens, so a missing, unreadable or
//! unusable key is an error before any write, never a half-pushed branch.
//!
//! An OpenPGP key is imported into a private GnuPG home in a temporary directory (mode 0700)
//! that lives as long as the [`Signer`] and is removed, with its `gpg-agent`, on drop: the key
//! is never copied into the state directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Which signature format a state store's commits carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningFormat {
    /// An SSH key (`ssh-keygen -Y sign -n git`); git's `gpg.format=ssh`.
    Ssh,
    /// An OpenPGP secret key (`gpg --detach-sign --armor`); git's default `gpg.format=openpgp`.
    Openpgp,
}

/// Daemon config for signing one Git state store's commits (`git.signing.<store>` in the
/// daemon config). Exactly one of `keyFile` and `credential` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningKey {
    /// `ssh` or `openpgp`.
    pub format: SigningFormat,
    /// Path of the private key: an OpenSSH private key, or an ASCII-armored (or binary)
    /// OpenPGP secret key export. Unencrypted.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name of a systemd credential holding the key: read from
    /// `$CREDENTIALS_DIRECTORY/<name>` (`LoadCredential=<name>:<path>` in the unit).
    #[serde(default)]
    pub credential: Option<String>,
}

impl SigningKey {
    /// Where the key is read from: `keyFile`, or the credential in `credentials_dir`.
    ///
    /// Errors: neither or both set, or a credential without `$CREDENTIALS_DIRECTORY`.
    pub fn path(&self, credentials_dir: Option<&Path>) -> Result<PathBuf, String> {
        match (&self.key_file, &self.credential) {
            (Some(p), None) => Ok(p.clone()),
            (None, Some(c)) => {
                if c.is_empty() || c.contains('/') {
                    return Err(format!("credential {c:?} is not a credential name"));
                }
                credentials_dir.map(|d| d.join(c)).ok_or_else(|| {
                    format!(
                        "credential {c:?}: $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit, or keyFile)"
                    )
                })
            }
            (Some(_), Some(_)) => Err("set either keyFile or credential, not both".into()),
            (None, None) => Err("keyFile or credential is required".into()),
        }
    }
}

/// A loaded, checked signing key.
pub struct Signer {
    format: SigningFormat,
    key: PathBuf,
    /// OpenPGP: the private GnuPG home and the key's fingerprint.
    gpg: Option<(tempfile::TempDir, String)>,
    /// A human-readable identity of the key (SSH public key fingerprint or OpenPGP
    /// fingerprint), for logs.
    identity: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("format", &self.format)
            .field("key", &self.key)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Signer {
    /// Reads and checks the key of `spec` for the state store `store` (named in errors):
    /// the file exists and is readable, and the signing program accepts it (an SSH key's
    /// public half is derived; an OpenPGP key is imported and must hold a secret key).
    ///
    /// Errors ([`Error::Config`]): the key's path cannot be resolved, the file is missing or
    /// unreadable, `ssh-keygen` or `gpg` is not installed, or the program refuses the key
    /// (encrypted, group-readable SSH key, a public-only OpenPGP key). Messages name the store
    /// and the path, never the key's content.
    pub fn load(
        store: &str,
        spec: &SigningKey,
        credentials_dir: Option<&Path>,
    ) -> Result<Signer, Error> {
        let err = |m: String| Error::Config(format!("signing key of state store {store}: {m}"));
        let key = spec.path(credentials_dir).map_err(err)?;
        std::fs::File::open(&key)
            .map_err(|e| err(format!("cannot read {}: {e}", key.display())))?;
        match spec.format {
            SigningFormat::Ssh => {
                // `-P ''`: an encrypted key fails instead of prompting.
                let out = run(
                    Command::new("ssh-keygen")
                        .args(["-l", "-f"])
                        .arg(&key)
                        .stdin(Stdio::null()),
                    None,
                )
                .map_err(|e| err(format!("{}: {e}", key.display())))?;
                let identity = String::from_utf8_lossy(&out).trim().to_string();
                let signer = Signer {
                    format: spec.format,
                    key,
                    gpg: None,
                    identity,
                };
                // A trial signature: ssh-keygen refuses encrypted and group-readable keys only
                // when it signs.
                signer
                    .sign(b"promised signing key check\n")
                    .map_err(|e| err(e.to_string()))?;
                Ok(signer)
            }
            SigningFormat::Openpgp => {
                use std::os::unix::fs::PermissionsExt;
                let home = tempfile::Builder::new()
                    .prefix("promised-gnupg-")
                    .permissions(std::fs::Permissions::from_mode(0o700))
                    .tempdir()
                    .map_err(|e| err(format!("cannot create a GnuPG home: {e}")))?;
                run(
                    gpg(home.path())
                        .arg("--import")
                        .arg(&key)
                        .stdin(Stdio::null()),
                    None,
                )
                .map_err(|e| err(format!("{}: {e}", key.display())))?;
                let listing = run(
                    gpg(home.path()).args(["--with-colons", "--list-secret-keys"]),
                    None,
                )
                .map_err(|e| err(format!("{}: {e}", key.display())))?;
                let listing = String::from_utf8_lossy(&listing);
                let fpr = secret_fingerprint(&listing).ok_or_else(|| {
                    err(format!(
                        "{} holds no OpenPGP secret key (export it with gpg --export-secret-keys --armor)",
                        key.display()
                    ))
                })?;
                let signer = Signer {
                    format: spec.format,
                    key,
                    identity: fpr.clone(),
                    gpg: Some((home, fpr)),
                };
                signer
                    .sign(b"promised signing key check\n")
                    .map_err(|e| err(e.to_string()))?;
                Ok(signer)
            }
        }
    }

    /// The key's identity for logs: `ssh-keygen -l` output or the OpenPGP fingerprint.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The armored signature of `payload` (a commit object without `gpgsig`), as git stores it
    /// in the `gpgsig` header: `-----BEGIN SSH SIGNATURE-----…` or `-----BEGIN PGP
    /// SIGNATURE-----…`, ending in a newline.
    ///
    /// Errors ([`Error::Repository`]): the signing program failed; its message is included.
    pub fn sign(&self, payload: &[u8]) -> Result<String, Error> {
        let out = match (&self.format, &self.gpg) {
            (SigningFormat::Ssh, _) => run(
                Command::new("ssh-keygen")
                    .args(["-Y", "sign", "-n", "git", "-P", "", "-f"])
                    .arg(&self.key),
                Some(payload),
            ),
            (SigningFormat::Openpgp, Some((home, fpr))) => run(
                gpg(home.path())
                    .args(["--pinentry-mode", "loopback", "--passphrase", ""])
                    .args(["--local-user", fpr.as_str(), "--detach-sign", "--armor"]),
                Some(payload),
            ),
            (SigningFormat::Openpgp, None) => Err("no GnuPG home".into()),
        }
        .map_err(|e| Error::Repository(format!("cannot sign the commit: {e}")))?;
        let sig = String::from_utf8(out)
            .map_err(|_| Error::Repository("the signature is not text".into()))?;
        if !sig.contains("-----BEGIN") {
            return Err(Error::Repository(
                "the signing program printed no armored signature".into(),
            ));
        }
        Ok(sig)
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        if let Some((home, _)) = &self.gpg {
            // The agent gpg started for this home; the directory goes with the TempDir.
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home.path())
                .args(["--kill", "gpg-agent"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `gpg` with a private home, no terminal and no keyserver.
fn gpg(home: &Path) -> Command {
    let mut c = Command::new("gpg");
    c.arg("--homedir")
        .arg(home)
        .args(["--batch", "--no-tty", "--quiet"]);
    c
}

/// How long a signing program (`ssh-keygen`, `gpg`, with the agent `gpg` talks to) may take
/// for one call before it is killed, with its process group, and the commit is not made (the
/// next pass tries again). Signing is local and takes milliseconds; this bounds a program that
/// hangs, such as a `gpg-agent` that does not answer, which would otherwise stop every write.
pub const SIGN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `cmd` with `input` on stdin; its stdout, or an error with its stderr's last lines
/// (or saying it was killed at [`SIGN_DEADLINE`]).
fn run(cmd: &mut Command, input: Option<&[u8]>) -> Result<Vec<u8>, String> {
    run_within(cmd, input, SIGN_DEADLINE)
}

/// [`run`] with the deadline `limit`.
fn run_within(
    cmd: &mut Command,
    input: Option<&[u8]>,
    limit: std::time::Duration,
) -> Result<Vec<u8>, String> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut group = super::push::GroupKill(rustix::process::Pid::from_raw(child.id() as i32));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped");
        // A program that exits early closes its stdin; its exit status tells why. (A commit
        // is far smaller than a pipe's buffer: this write does not wait for the program.)
        let _ = stdin.write_all(input);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(out) => {
            group.0 = None; // finished: its pid may be reused, never killed
            out.map_err(|e| format!("{program}: {e}"))?
        }
        Err(_) => {
            // Dropping `group` kills it; the waiting thread reaps it once the kill lands.
            return Err(format!(
                "{program} did not finish within {}; it was stopped",
                crate::net::human(limit)
            ));
        }
    };
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ssh-keygen frames its key warnings in lines of `@` and announces stdin input.
    let tail: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('@') && !l.starts_with("Signing data"))
        .collect();
    let tail = tail[tail.len().saturating_sub(4)..].join("; ");
    Err(format!("{program} failed ({}): {tail}", out.status))
}

/// The fingerprint of the first secret key in `gpg --with-colons --list-secret-keys` output
/// (`sec:` record followed by its `fpr:` record, field 10).
fn secret_fingerprint(listing: &str) -> Option<String> {
    let mut in_sec = false;
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first().copied() {
            Some("sec") => in_sec = true,
            Some("fpr") if in_sec => return fields.get(9).map(|s| s.to_string()),
            Some("ssb") | Some("pub") => in_sec = false,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_program_that_hangs_is_stopped_with_its_children_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let err = run_within(
            Command::new("sh").arg("-c").arg(format!(
                "sleep 600 & echo $! > {}; wait",
                pid_file.display()
            )),
            Some(b"payload"),
            std::time::Duration::from_millis(300),
        )
        .unwrap_err();
        assert_eq!(err, "sh did not finish within 300ms; it was stopped");
        // The program's child was in its process group: it is killed too (gone, or a zombie
        // until init reaps it). On a machine slow enough that the kill came before `sh`
        // started it, there is no child to look at.
        let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .filter(|p| p.ends_with('\n'))
            .map(|p| p.trim().to_string())
        else {
            return;
        };
        let stat = std::path::PathBuf::from(format!("/proc/{pid}/stat"));
        let gone = || match std::fs::read_to_string(&stat) {
            Err(_) => true,
            Ok(s) => s
                .rsplit(')')
                .next()
                .is_some_and(|state| state.trim_start().starts_with('Z')),
        };
        // Waits for the kill to land (bounded only so that a failure ends the test).
        let waited = std::time::Instant::now();
        while !gone() {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(120),
                "process {pid} of the stopped program's group still runs"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_program_within_the_deadline_gives_its_output_or_its_error() {
        let out = run_within(
            Command::new("cat").arg("-"),
            Some(b"signed"),
            std::time::Duration::from_secs(600),
        )
        .unwrap();
        assert_eq!(out, b"signed");
        let err = run_within(
            Command::new("sh").args(["-c", "echo no such key >&2; exit 3"]),
            None,
            std::time::Duration::from_secs(600),
        )
        .unwrap_err();
        assert!(
            err.starts_with("sh failed (exit status: 3): no such key"),
            "{err}"
        );
    }

    #[test]
    fn a_key_needs_exactly_one_source() {
        let k = |f: Option<&str>, c: Option<&str>| SigningKey {
            format: SigningFormat::Ssh,
            key_file: f.map(PathBuf::from),
            credential: c.map(String::from),
        };
        assert_eq!(k(Some("/k"), None).path(None).unwrap(), PathBuf::from("/k"));
        assert_eq!(
            k(None, Some("sign"))
                .path(Some(Path::new("/run/creds")))
                .unwrap(),
            PathBuf::from("/run/creds/sign")
        );
        assert!(
            k(None, Some("sign"))
                .path(None)
                .unwrap_err()
                .contains("$CREDENTIALS_DIRECTORY")
        );
        assert!(k(None, Some("../x")).path(Some(Path::new("/c"))).is_err());
        assert!(
            k(Some("/k"), Some("c"))
                .path(None)
                .unwrap_err()
                .contains("not both")
        );
        assert!(k(None, None).path(None).unwrap_err().contains("required"));
    }

    #[test]
    fn the_secret_fingerprint_is_read_from_colon_output() {
        let listing = "sec:u:255:22:AAAA:1:::u:::scESC:::+:::ed25519:::0:\nfpr:::::::::0123456789ABCDEF0123456789ABCDEF01234567:\ngrp:::::::::X:\nuid:u::::1::H::Bot <bot@example.com>::::::::::0:\nssb:u:255:18:BBBB:1::::::e:::+:::cv25519::\nfpr:::::::::FFFF:\n";
        assert_eq!(
            secret_fingerprint(listing).as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF01234567")
        );
        assert_eq!(secret_fingerprint("pub:u:255\nfpr:::::::::X:\n"), None);
    }
}
