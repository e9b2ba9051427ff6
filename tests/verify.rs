//! Verified config commits (README "Trust and tenancy", issue 22 part 1) with real signed
//! commits: SSH signatures (keys made by `ssh-keygen`, an `allowed_signers` file) and
//! OpenPGP (keys made by `gpg --batch`), verified by Git. A refused commit is not applied:
//! the state store keeps the previous output, `promised reconcile` exits 1 and says why,
//! `promised status` shows it; output commits name the author and the signer in trailers.
//!
//! Pipelines run with `sandbox: none` (a shell script), so no bubblewrap is needed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{git, promised};

/// A config repo (a Git work tree), keys, a state directory.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    state: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let repo = root.join("config");
        common::app::write_config(&repo);
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["config", "user.name", "Alice Platform"]);
        git(&repo, &["config", "user.email", "alice@example.com"]);
        World {
            state: root.join("state"),
            _tmp: tmp,
            root,
            repo,
        }
    }

    /// An SSH key pair `name` (comment `name`); returns the private key's path.
    fn ssh_key(&self, name: &str) -> PathBuf {
        let key = self.root.join(name);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen runs")
            .success();
        assert!(ok);
        key
    }

    /// Writes `requests/<name>.yaml`.
    fn request(&self, name: &str) {
        std::fs::write(
            self.repo.join(format!("requests/{name}.yaml")),
            common::app::request(name, "default"),
        )
        .unwrap();
    }

    /// Commits everything; `sign` is extra `git -c` settings and `-S`, or `None` unsigned.
    fn commit(&self, message: &str, sign: Option<&[&str]>) -> String {
        git(&self.repo, &["add", "-A"]);
        let mut args: Vec<&str> = Vec::new();
        if let Some(cfg) = sign {
            args.extend(cfg);
        }
        args.extend(["commit", "-q", "-m", message]);
        args.push(if sign.is_some() {
            "-S"
        } else {
            "--no-gpg-sign"
        });
        git(&self.repo, &args);
        git(&self.repo, &["rev-parse", "HEAD"]).trim().to_string()
    }

    fn daemon_config(&self, verify: &str) -> PathBuf {
        let p = self.root.join("promised.yaml");
        std::fs::write(&p, format!("sandbox: none\nverify: {verify}\n")).unwrap();
        p
    }

    fn reconcile(&self, daemon_config: &Path) -> (i32, String, String) {
        promised(&[
            "reconcile",
            "--config",
            self.repo.to_str().unwrap(),
            "--ref",
            "main",
            "--state-dir",
            self.state.to_str().unwrap(),
            "--daemon-config",
            daemon_config.to_str().unwrap(),
        ])
    }

    /// Files on the `dev` Destination of the state store's `main`.
    fn output(&self) -> String {
        let store = self.state.join("state.git");
        git(
            &store,
            &["ls-tree", "-r", "--name-only", "main", "dev/resources"],
        )
    }

    /// The last state store commit's message.
    fn last_store_commit(&self) -> String {
        git(
            &self.state.join("state.git"),
            &["log", "-1", "--format=%B", "main"],
        )
    }

    fn status_text(&self) -> String {
        let (_, out, _) = promised(&[
            "status",
            "--state-dir",
            self.state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ]);
        out
    }
}

fn ssh_signing(key: &Path) -> Vec<String> {
    vec![
        "-c".into(),
        "gpg.format=ssh".into(),
        "-c".into(),
        format!("user.signingkey={}", key.display()),
    ]
}

/// `mode: head` with SSH keys: a commit signed by a trusted key is applied (trailers name
/// author and signer); an unsigned commit and one signed by an untrusted key on top are not:
/// the output stays, the exit code is 1, stderr and `promised status` say why; a trusted
/// commit after them applies everything.
#[test]
fn ssh_signed_commits_apply_and_others_do_not() {
    let w = World::new();
    let alice = w.ssh_key("alice");
    let mallory = w.ssh_key("mallory");
    let allowed = w.root.join("allowed_signers");
    let pubkey = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    std::fs::write(&allowed, format!("alice@example.com {pubkey}")).unwrap();
    let cfg = w.daemon_config(&format!("{{sshAllowedSigners: {}}}", allowed.display()));
    let sign_alice = ssh_signing(&alice);
    let sign_alice: Vec<&str> = sign_alice.iter().map(String::as_str).collect();
    let sign_mallory = ssh_signing(&mallory);
    let sign_mallory: Vec<&str> = sign_mallory.iter().map(String::as_str).collect();

    w.request("first");
    let c1 = w.commit("first request", Some(&sign_alice));
    let (code, out, err) = w.reconcile(&cfg);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(w.output().contains("/first/"), "{}", w.output());
    let msg = w.last_store_commit();
    assert!(
        msg.contains(&format!("Promised-Config-Commit: {c1}")),
        "{msg}"
    );
    let author = git(&w.repo, &["log", "-1", "--format=%an <%ae>", &c1]);
    assert!(
        msg.contains(&format!("Promised-Requested-By: {}", author.trim())),
        "{msg}"
    );
    assert!(
        msg.contains("Promised-Signed-By: alice@example.com SHA256:"),
        "{msg}"
    );

    // Unsigned: refused, nothing of it applied.
    w.request("unsigned");
    let c2 = w.commit("unsigned request", None);
    let (code, out, err) = w.reconcile(&cfg);
    assert_eq!(code, 1, "a refused commit is a failure:\n{out}\n{err}");
    assert!(err.contains(&c2[..12]) && err.contains("unsigned"), "{err}");
    let author = git(&w.repo, &["log", "-1", "--format=%an <%ae>", &c2]);
    assert!(err.contains(author.trim()), "{err}");
    assert!(!w.output().contains("/unsigned/"), "{}", w.output());
    assert!(w.output().contains("/first/"), "{}", w.output());
    let status = w.status_text();
    assert!(
        status.contains(&c2[..12]) && status.contains("unsigned"),
        "{status}"
    );

    // Signed by a key that is not trusted: refused too.
    w.request("mallory");
    let c3 = w.commit("mallory's request", Some(&sign_mallory));
    let (code, _, err) = w.reconcile(&cfg);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&c3[..12]) && err.contains("not trusted"),
        "{err}"
    );
    assert!(!w.output().contains("/mallory/"), "{}", w.output());

    // A trusted commit on top: the head verifies (mode head), everything applies, and the
    // refusal is gone from status.
    w.request("second");
    w.commit("second request", Some(&sign_alice));
    let (code, out, err) = w.reconcile(&cfg);
    assert_eq!(code, 0, "{out}\n{err}");
    for name in ["first", "unsigned", "mallory", "second"] {
        assert!(w.output().contains(&format!("/{name}/")), "{}", w.output());
    }
    assert!(!w.status_text().contains("not verified"));
    assert!(!w.state.join("config-refused.json").exists());
}

/// `mode: all`: a signed merge of an unsigned commit is refused, naming the unsigned commit
/// under the merge; `mode: head` applies the same history.
#[test]
fn mode_all_refuses_a_signed_merge_of_an_unsigned_commit() {
    let w = World::new();
    let alice = w.ssh_key("alice");
    let allowed = w.root.join("allowed_signers");
    let pubkey = std::fs::read_to_string(alice.with_extension("pub")).unwrap();
    std::fs::write(&allowed, format!("alice@example.com {pubkey}")).unwrap();
    let sign = ssh_signing(&alice);
    let sign: Vec<&str> = sign.iter().map(String::as_str).collect();
    let all = w.daemon_config(&format!(
        "{{mode: all, sshAllowedSigners: {}}}",
        allowed.display()
    ));
    w.request("first");
    w.commit("first", Some(&sign));
    let (code, out, err) = w.reconcile(&all);
    assert_eq!(code, 0, "{out}\n{err}");

    git(&w.repo, &["checkout", "-q", "-b", "side"]);
    w.request("sneaky");
    let sneaky = w.commit("unsigned on a branch", None);
    git(&w.repo, &["checkout", "-q", "main"]);
    let mut args = sign.clone();
    args.extend(["merge", "-q", "--no-ff", "-S", "-m", "signed merge", "side"]);
    git(&w.repo, &args);

    let (code, _, err) = w.reconcile(&all);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&sneaky[..12]) && err.contains("unsigned") && err.contains("under head"),
        "{err}"
    );
    assert!(!w.output().contains("/sneaky/"), "{}", w.output());

    let head = w.daemon_config(&format!(
        "{{mode: head, sshAllowedSigners: {}}}",
        allowed.display()
    ));
    let (code, out, err) = w.reconcile(&head);
    assert_eq!(code, 0, "mode head checks only the merge:\n{out}\n{err}");
    assert!(w.output().contains("/sneaky/"), "{}", w.output());
}

/// OpenPGP: a commit signed by a key of `gpgKeyring` applies; one signed by another key
/// (in the signer's own keyring, not in ours) is refused.
#[test]
fn gpg_signed_commits_verify_against_the_keyring_only() {
    let Some(home) = common::GpgHome::new() else {
        return;
    };
    let w = World::new();
    let gpg = |args: &[&str]| home.run(args);
    for uid in ["Alice <alice@example.com>", "Mallory <mallory@example.com>"] {
        gpg(&["--quick-gen-key", uid, "ed25519", "sign", "never"]);
    }
    let keyring = w.root.join("trusted.gpg");
    let exported = Command::new("gpg")
        .env("GNUPGHOME", home.path())
        .args(["--batch", "--export", "alice@example.com"])
        .output()
        .unwrap();
    assert!(!exported.stdout.is_empty());
    std::fs::write(&keyring, &exported.stdout).unwrap();
    let cfg = w.daemon_config(&format!("{{gpgKeyring: {}}}", keyring.display()));

    let commit_as = |who: &str, msg: &str| {
        git(&w.repo, &["add", "-A"]);
        let out = Command::new("git")
            .current_dir(&w.repo)
            .env("GNUPGHOME", home.path())
            .args(["-c", "gpg.format=openpgp", "-c"])
            .arg(format!("user.signingkey={who}"))
            .args(["commit", "-q", "-S", "-m", msg])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        git(&w.repo, &["rev-parse", "HEAD"]).trim().to_string()
    };
    w.request("first");
    commit_as("alice@example.com", "first");
    let (code, out, err) = w.reconcile(&cfg);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(w.output().contains("/first/"));
    let msg = w.last_store_commit();
    assert!(
        msg.contains("Promised-Signed-By: Alice <alice@example.com> "),
        "{msg}"
    );

    w.request("mallory");
    let c = commit_as("mallory@example.com", "mallory");
    let (code, _, err) = w.reconcile(&cfg);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&c[..12]) && err.contains("not trusted"),
        "{err}"
    );
    assert!(!w.output().contains("/mallory/"), "{}", w.output());
    // The signers' agent goes with their home (GpgHome's drop).
}

/// `verify:` with a directory source, or a key file that does not exist, stops the pass
/// before anything runs (exit 2), naming the problem.
#[test]
fn verify_setup_errors_stop_before_anything_runs() {
    let w = World::new();
    let cfg = w.daemon_config("{sshAllowedSigners: /nonexistent/allowed_signers}");
    let (code, _, err) = w.reconcile(&cfg);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/allowed_signers"), "{err}");
    let allowed = w.root.join("allowed_signers");
    std::fs::write(&allowed, "").unwrap();
    let cfg = w.daemon_config(&format!("{{sshAllowedSigners: {}}}", allowed.display()));
    let (code, _, err) = promised(&[
        "reconcile",
        "--config",
        w.repo.to_str().unwrap(),
        "--state-dir",
        w.state.to_str().unwrap(),
        "--daemon-config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is a directory, not a Git repository"),
        "{err}"
    );
}

/// Under verification, the tenancy policy of the last applied commit says who may change
/// what: a team signer may add a request in the team's folder, but a change to
/// `promised-policy.yaml` signed by that (trusted, non-platform) key is refused, naming the
/// rule.
#[test]
fn a_policy_change_signed_by_a_non_platform_key_is_refused() {
    let w = World::new();
    let alice = w.ssh_key("alice");
    let bob = w.ssh_key("bob");
    let allowed = w.root.join("allowed_signers");
    let line = |who: &str, key: &Path| {
        let k = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        format!("{who}@example.com {k}")
    };
    std::fs::write(&allowed, line("alice", &alice) + &line("bob", &bob)).unwrap();
    let cfg = w.daemon_config(&format!("{{sshAllowedSigners: {}}}", allowed.display()));
    let policy = "apiVersion: promised.dev/v1alpha1\nkind: TenancyPolicy\nmetadata: {name: tenancy}\nspec:\n  platform:\n    paths: [\"platform/**\", \"promises/**\", \"requests/**\"]\n    signers: [alice@example.com]\n  teams:\n    - name: team-a\n      paths: [\"teams/a/**\"]\n      namespaces: [team-a]\n      promises: [app]\n      signers: [bob@example.com]\n";
    std::fs::write(w.repo.join("promised-policy.yaml"), policy).unwrap();
    let sa = ssh_signing(&alice);
    let sa: Vec<&str> = sa.iter().map(String::as_str).collect();
    let sb = ssh_signing(&bob);
    let sb: Vec<&str> = sb.iter().map(String::as_str).collect();
    w.commit("policy", Some(&sa));
    let (code, out, err) = w.reconcile(&cfg);
    assert_eq!(code, 0, "{out}\n{err}");

    // Bob adds a request in his team's folder: applied.
    std::fs::create_dir_all(w.repo.join("teams/a")).unwrap();
    std::fs::write(
        w.repo.join("teams/a/mine.yaml"),
        common::app::request("mine", "team-a"),
    )
    .unwrap();
    w.commit("team-a request", Some(&sb));
    let (code, out, err) = w.reconcile(&cfg);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(w.output().contains("/mine/"), "{}", w.output());

    // Bob widens his own rights: refused, the policy stays as it was.
    std::fs::write(
        w.repo.join("promised-policy.yaml"),
        policy.replace("namespaces: [team-a]", "namespaces: [\"*\"]"),
    )
    .unwrap();
    std::fs::write(
        w.repo.join("teams/a/prod.yaml"),
        common::app::request("prod", "prod"),
    )
    .unwrap();
    let c = w.commit("more rights", Some(&sb));
    let (code, _, err) = w.reconcile(&cfg);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&c[..12])
            && err.contains("may not change promised-policy.yaml")
            && err.contains("spec.platform.signers"),
        "{err}"
    );
    assert!(!w.output().contains("/prod/"), "{}", w.output());
}
