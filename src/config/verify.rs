//! Verified config commits: with `verify:` in the daemon config, a commit of a Git config repo
//! is applied only when its signature verifies against the trusted keys (README "Trust and
//! tenancy").
//!
//! Verification is Git's own (`git log --format=%G?…`, as `git verify-commit` does), run with
//! `gpg.ssh.allowedSignersFile` for SSH signatures (`gpg.format=ssh`, an `allowed_signers`
//! file as Git uses it) and a private `GNUPGHOME` holding only the keys of `gpgKeyring` for
//! OpenPGP signatures. A commit counts as verified only when Git says `G` (a good signature
//! by a trusted key): `U` (good signature, unknown key: an SSH key with no principal in
//! `allowed_signers`), `B` (bad), `X`/`Y` (expired), `R` (revoked), `E` (cannot be checked:
//! an unknown OpenPGP key) and `N` (unsigned) are refused, with that reason.
//!
//! `mode: head` checks the commit being applied; `mode: all` checks every commit reachable
//! from it and not from the last applied one (`git rev-list last..new`, merges' other parents
//! included), so an unsigned commit cannot hide under a signed merge. With no applied commit
//! yet (a first start), `all` checks the new commit only.
//!
//! Errors of the setup (a key file that does not exist or does not import) stop the daemon at
//! start: running unverified when verification was asked for would be the weak link.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// `verify:` in the daemon config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifySettings {
    /// `head` (default): the commit applied; `all`: every commit since the last applied one.
    #[serde(default)]
    pub mode: VerifyMode,
    /// An SSH `allowed_signers` file (`ssh-keygen -Y` format: `<principal> <key type> <key>`).
    #[serde(default)]
    pub ssh_allowed_signers: Option<PathBuf>,
    /// An OpenPGP keyring of trusted public keys (`gpg --export` output, binary or armoured).
    #[serde(default)]
    pub gpg_keyring: Option<PathBuf>,
}

/// Which commits are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// The commit applied.
    #[default]
    Head,
    /// Every commit since the last applied one.
    All,
}

/// A verified commit: who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signed {
    /// Full commit id.
    pub commit: String,
    /// `Name <email>` of the commit's author.
    pub author: String,
    /// The signer: the SSH principal of `allowed_signers`, or the OpenPGP user id.
    pub signer: String,
    /// The key's fingerprint (`SHA256:…` for SSH, hex for OpenPGP).
    pub key: String,
}

/// A commit that was not applied, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    /// The commit that failed verification (under `mode: all`, maybe one below the head).
    pub commit: String,
    /// The head that was not applied because of it.
    pub head: String,
    /// `Name <email>` of the refused commit's author.
    pub author: String,
    /// Why, e.g. `unsigned`, `signed by a key that is not trusted (SHA256:…)`.
    pub reason: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |c: &str| c.chars().take(12).collect::<String>();
        write!(
            f,
            "config commit {} by {} is not verified: {}",
            short(&self.commit),
            self.author,
            self.reason
        )?;
        if self.head != self.commit {
            write!(f, " (under head {})", short(&self.head))?;
        }
        Ok(())
    }
}

/// Checks config commits against the trusted keys of a [`VerifySettings`].
#[derive(Debug)]
pub struct Verifier {
    mode: VerifyMode,
    allowed_signers: Option<PathBuf>,
    gnupg_home: Option<PathBuf>,
}

impl Verifier {
    /// Prepares verification: checks that the key files exist and imports `gpgKeyring` into a
    /// private `GNUPGHOME` under `work_dir` (replaced on every start, `trust-model always`:
    /// every key of the keyring is trusted, no other key is).
    ///
    /// Errors (naming the setting and file): no key file given, a file missing, a keyring
    /// gpg cannot import.
    pub fn new(settings: &VerifySettings, work_dir: &Path) -> Result<Verifier, String> {
        if settings.ssh_allowed_signers.is_none() && settings.gpg_keyring.is_none() {
            return Err(
                "verify: give sshAllowedSigners or gpgKeyring (or both): with neither, no commit could verify"
                    .into(),
            );
        }
        let allowed_signers = match &settings.ssh_allowed_signers {
            Some(p) => Some(
                std::fs::canonicalize(p)
                    .map_err(|e| format!("verify.sshAllowedSigners: {}: {e}", p.display()))?,
            ),
            None => None,
        };
        let gnupg_home = match &settings.gpg_keyring {
            Some(ring) => Some(import_keyring(ring, &work_dir.join("verify-gnupg"))?),
            None => None,
        };
        Ok(Verifier {
            mode: settings.mode,
            allowed_signers,
            gnupg_home,
        })
    }

    /// [`Verifier::new`] for a config `source`. Errors also when the source is a directory:
    /// there is no commit to verify.
    pub fn for_source(
        source: &super::Source,
        settings: &VerifySettings,
        state_dir: &Path,
    ) -> Result<Verifier, String> {
        if let super::Source::Dir(d) = source {
            return Err(format!(
                "verify: the config source {} is a directory, not a Git repository: there is no commit to verify (give a repository URL, or --ref with a local repository)",
                d.display()
            ));
        }
        Verifier::new(settings, state_dir)
    }

    /// Checks `commit` of the repository at `git_dir` (and, under `mode: all`, every commit
    /// since `last_applied`). Returns the head's signer, or the first commit refused (oldest
    /// first). Errors running Git are refusals too, with Git's message as the reason.
    pub fn check(
        &self,
        git_dir: &Path,
        commit: &str,
        last_applied: Option<&str>,
    ) -> Result<Signed, Refused> {
        let signed = self.check_signatures(git_dir, commit, last_applied)?;
        self.check_policy(git_dir, commit, last_applied, &signed)?;
        Ok(signed.into_iter().last().expect("the head is checked"))
    }

    /// The signatures of the commits to check (oldest first, the head last), or the first
    /// refused.
    fn check_signatures(
        &self,
        git_dir: &Path,
        commit: &str,
        last_applied: Option<&str>,
    ) -> Result<Vec<Signed>, Refused> {
        let mut commits = vec![commit.to_string()];
        if self.mode == VerifyMode::All
            && let Some(last) = last_applied.filter(|l| *l != commit)
        {
            let range = format!("{last}..{commit}");
            match self.git(git_dir, &["rev-list", "--reverse", &range]) {
                Ok(out) => {
                    commits = out.lines().map(str::to_string).collect();
                    if commits.is_empty() {
                        commits.push(commit.to_string());
                    }
                }
                Err(e) => return Err(self.refusal(commit, commit, "-", e)),
            }
        }
        let mut signed = Vec::with_capacity(commits.len());
        for c in &commits {
            let out = self
                .git(
                    git_dir,
                    &["log", "-1", "--format=%G?%x00%GS%x00%GF%x00%an <%ae>", c],
                )
                .map_err(|e| self.refusal(c, commit, "-", e))?;
            let fields: Vec<&str> = out.trim_end_matches('\n').split('\0').collect();
            let [code, signer, key, author] = fields[..] else {
                return Err(self.refusal(c, commit, "-", format!("unexpected git output {out:?}")));
            };
            if code != "G" {
                return Err(self.refusal(c, commit, author, reason(code, key)));
            }
            signed.push(Signed {
                commit: c.to_string(),
                author: author.to_string(),
                signer: signer.to_string(),
                key: key.to_string(),
            });
        }
        if signed.last().map(|s| s.commit.as_str()) != Some(commit) {
            return Err(self.refusal(
                commit,
                commit,
                "-",
                "the head is not among the commits checked".into(),
            ));
        }
        Ok(signed)
    }

    /// The tenancy policy's signer rules ([`super::policy::Policy::change_denied`]):
    /// the policy of the last applied commit decides who may change which paths. Under
    /// `mode: head` every path changed since the last applied commit is the head signer's;
    /// under `mode: all` each commit answers for its own changes (a merge: against its first
    /// parent). Nothing is checked without a last applied commit or a policy in it.
    fn check_policy(
        &self,
        git_dir: &Path,
        head: &str,
        last_applied: Option<&str>,
        signed: &[Signed],
    ) -> Result<(), Refused> {
        let Some(last) = last_applied.filter(|l| *l != head) else {
            return Ok(());
        };
        let spec = format!("{last}:{}", super::policy::POLICY_FILE);
        let Ok(text) = self.git(git_dir, &["show", &spec]) else {
            return Ok(()); // no policy at the last applied commit
        };
        let policy = serde_saphyr::from_str::<super::policy::TenancyPolicy>(&text)
            .map_err(|e| e.to_string())
            .and_then(|p| super::policy::Policy::new(p.spec).map_err(|(f, e)| format!("{f}: {e}")))
            .map_err(|e| {
                self.refusal(
                    head,
                    head,
                    "-",
                    format!("the tenancy policy of the last applied commit does not load ({e}): no change can be checked"),
                )
            })?;
        let changes: Vec<(&Signed, String)> = match self.mode {
            VerifyMode::Head => {
                let s = signed.last().expect("the head is checked");
                vec![(s, format!("{last}..{head}"))]
            }
            VerifyMode::All => signed
                .iter()
                .map(|s| (s, format!("{0}^1..{0}", s.commit)))
                .collect(),
        };
        for (s, range) in changes {
            let out = self
                .git(git_dir, &["diff", "--name-only", "--no-renames", &range])
                .map_err(|e| self.refusal(&s.commit, head, &s.author, e))?;
            for path in out.lines().filter(|l| !l.is_empty()) {
                if let Some(why) = policy.change_denied(path, &s.signer) {
                    return Err(self.refusal(&s.commit, head, &s.author, why));
                }
            }
        }
        Ok(())
    }

    fn refusal(&self, commit: &str, head: &str, author: &str, reason: String) -> Refused {
        Refused {
            commit: commit.to_string(),
            head: head.to_string(),
            author: author.to_string(),
            reason,
        }
    }

    /// Runs `git` on `git_dir` with the verification settings; stdout, or stderr as error.
    fn git(&self, git_dir: &Path, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(git_dir);
        // An empty file when unset: no SSH key is trusted.
        let signers = self
            .allowed_signers
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/dev/null".into());
        cmd.args(["-c", &format!("gpg.ssh.allowedSignersFile={signers}")]);
        cmd.args(["-c", "gpg.ssh.revocationFile=/dev/null"]);
        match &self.gnupg_home {
            Some(h) => cmd.env("GNUPGHOME", h),
            // No keyring: an empty home, so the user's own keys are never trusted.
            None => cmd.env("GNUPGHOME", "/nonexistent/promised-no-keyring"),
        };
        cmd.env_remove("GIT_DIR").env("GIT_CONFIG_NOSYSTEM", "1");
        cmd.env("GIT_CONFIG_GLOBAL", "/dev/null");
        let out = cmd.args(args).output().map_err(|e| format!("git: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Why Git's `%G?` code is not a verified signature.
fn reason(code: &str, key: &str) -> String {
    let key = if key.is_empty() {
        String::new()
    } else {
        format!(" ({key})")
    };
    match code {
        "N" => "unsigned".into(),
        "U" => format!("signed by a key that is not trusted{key}"),
        "B" => format!("bad signature{key}"),
        "X" => format!("good signature that has expired{key}"),
        "Y" => format!("good signature by an expired key{key}"),
        "R" => format!("good signature by a revoked key{key}"),
        "E" => format!("signed by a key that is not trusted (not in gpgKeyring){key}"),
        other => format!("signature not verified (git says {other}){key}"),
    }
}

/// Imports `ring` into a fresh GNUPGHOME at `home` and gives each of its keys ultimate owner
/// trust (the keyring is the trust list: Git reports `G` only for a trusted key). Errors name
/// the file and gpg's message.
fn import_keyring(ring: &Path, home: &Path) -> Result<PathBuf, String> {
    let err = |m: String| format!("verify.gpgKeyring: {}: {m}", ring.display());
    if !ring.is_file() {
        return Err(err("no such file".into()));
    }
    let _ = std::fs::remove_dir_all(home);
    std::fs::create_dir_all(home).map_err(|e| err(format!("{}: {e}", home.display())))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700));
    // No gpg-agent for this home (importing and verifying public keys needs none; an agent
    // left from an earlier start would point at a removed socket).
    std::fs::write(home.join("gpg.conf"), "no-autostart\n")
        .map_err(|e| err(format!("{}: {e}", home.display())))?;
    let gpg = |args: &[&str], stdin: Option<&str>| -> Result<String, String> {
        use std::io::Write as _;
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--quiet", "--no-autostart"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("gpg: {e}")))?;
        if let Some(text) = stdin {
            let _ = child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes());
        }
        drop(child.stdin.take());
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("gpg: {e}")))?;
        if !out.status.success() {
            return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let ring_arg = ring.display().to_string();
    gpg(&["--import", &ring_arg], None)?;
    // Primary key fingerprints: the `fpr` line right after each `pub` line.
    let listing = gpg(&["--with-colons", "--list-keys"], None)?;
    let mut trust = String::new();
    let mut after_pub = false;
    for line in listing.lines() {
        if line.starts_with("pub:") {
            after_pub = true;
        } else if after_pub && let Some(rest) = line.strip_prefix("fpr:") {
            let fpr = rest.trim_matches(':');
            trust.push_str(&format!("{fpr}:6:\n"));
            after_pub = false;
        }
    }
    if trust.is_empty() {
        return Err(err("holds no public key".into()));
    }
    gpg(&["--import-ownertrust"], Some(&trust))?;
    Ok(home.to_path_buf())
}

/// File in the state directory holding the [`Refused`] commit while the newest config commit
/// is not applied (JSON; absent otherwise). `promised status` shows it.
pub const REFUSED_FILE: &str = "config-refused.json";

/// Records (`Some`) or clears (`None`) the refused commit in `state_dir`. Errors: the file
/// cannot be written or removed.
pub fn save_refusal(state_dir: &Path, refused: Option<&Refused>) -> std::io::Result<()> {
    let path = state_dir.join(REFUSED_FILE);
    match refused {
        Some(r) => {
            let bytes = serde_json::to_vec_pretty(r).expect("a refusal serialises");
            let mut tmp = crate::tmpfiles::create_in(state_dir)?;
            std::io::Write::write_all(&mut tmp, &bytes)?;
            tmp.persist(&path).map(|_| ()).map_err(|e| e.error)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// The refused commit recorded in `state_dir`, if any.
pub fn load_refusal(state_dir: &Path) -> Option<Refused> {
    let bytes = std::fs::read(state_dir.join(REFUSED_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_the_problem() {
        assert_eq!(reason("N", ""), "unsigned");
        assert_eq!(
            reason("U", "SHA256:x"),
            "signed by a key that is not trusted (SHA256:x)"
        );
        assert!(reason("B", "").starts_with("bad signature"));
    }

    #[test]
    fn settings_need_a_key_file() {
        let s = VerifySettings {
            mode: VerifyMode::All,
            ssh_allowed_signers: None,
            gpg_keyring: None,
        };
        let e = Verifier::new(&s, Path::new("/tmp")).unwrap_err();
        assert!(e.contains("sshAllowedSigners"), "{e}");
        let s = VerifySettings {
            ssh_allowed_signers: Some("/nonexistent/allowed".into()),
            ..s
        };
        let e = Verifier::new(&s, Path::new("/tmp")).unwrap_err();
        assert!(e.contains("/nonexistent/allowed"), "{e}");
    }
}
