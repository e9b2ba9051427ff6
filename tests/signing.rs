//! Signed state store commits (`git.signing` in the daemon config): commits signed with an SSH
//! key and with an OpenPGP key pass `git verify-commit`; a missing or unusable key is a clear
//! error before any write; the subject template names Promises and requests.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{GitDaemon, git};

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    state: PathBuf,
}

impl World {
    /// The `app` config (tests/common/app.rs) with one request, `first`, committed.
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let repo = root.join("config");
        common::app::write_config(&repo);
        std::fs::write(
            repo.join("requests/first.yaml"),
            common::app::request("first", "default"),
        )
        .unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "--no-gpg-sign", "-m", "first"]);
        World {
            state: root.join("state"),
            _tmp: tmp,
            root,
            repo,
        }
    }

    /// Writes the daemon config with `git:` set to `git_yaml` (a flow mapping).
    fn daemon_config(&self, git_yaml: &str) -> PathBuf {
        let p = self.root.join("promised.yaml");
        std::fs::write(&p, format!("sandbox: none\ngit: {git_yaml}\n")).unwrap();
        p
    }

    /// `promised reconcile` with `daemon_config` and extra environment; (code, stdout, stderr).
    fn reconcile(&self, daemon_config: &Path, env: &[(&str, &Path)]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_promised"));
        cmd.args(["reconcile", "--ref", "main", "--config"])
            .arg(&self.repo)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--daemon-config")
            .arg(daemon_config);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("promised runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ssh_key(&self, name: &str) -> PathBuf {
        let key = self.root.join(name);
        let ok = Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "bot@example.com",
                "-f",
            ])
            .arg(&key)
            .status()
            .expect("ssh-keygen runs")
            .success();
        assert!(ok);
        key
    }
}

/// `git verify-commit` of `rev` in `repo` with `args` (`-c …` settings) and `GNUPGHOME`.
fn verify_commit(repo: &Path, args: &[String], gnupghome: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new("git");
    cmd.current_dir(repo)
        .args(args)
        .args(["verify-commit", "-v", "main"]);
    if let Some(h) = gnupghome {
        cmd.env("GNUPGHOME", h);
    }
    let out = cmd.output().expect("git runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ssh_signed_commits_pass_git_verify_commit() {
    let w = World::new();
    let key = w.ssh_key("signing");
    let cfg = w.daemon_config(&format!(
        "{{signing: {{local: {{format: ssh, keyFile: {}}}}}, commitSubject: 'promised: {{requests}} ({{request_count}})'}}",
        key.display()
    ));
    let (code, out, err) = w.reconcile(&cfg, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let store = w.state.join("state.git");
    let subject = git(&store, &["log", "-1", "--format=%s", "main"]);
    assert_eq!(subject.trim(), "promised: app/default/first (1)");

    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = w.root.join("allowed_signers");
    std::fs::write(
        &allowed,
        format!("bot@example.com namespaces=\"git\" {public}"),
    )
    .unwrap();
    let args = vec![
        "-c".to_string(),
        format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
    ];
    let (ok, text) = verify_commit(&store, &args, None);
    assert!(ok, "git verify-commit failed: {text}");
    assert!(text.contains("Good \"git\" signature"), "{text}");

    // Another key's signature does not verify: the check above can fail.
    let other = w.ssh_key("other");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    std::fs::write(
        &allowed,
        format!("bot@example.com namespaces=\"git\" {other_pub}"),
    )
    .unwrap();
    let (ok, _) = verify_commit(&store, &args, None);
    assert!(!ok, "a commit verified against the wrong key");
}

#[test]
fn openpgp_signed_commits_from_a_systemd_credential_pass_git_verify_commit() {
    let Some(home) = common::GpgHome::new() else {
        return;
    };
    let w = World::new();
    let gpg = |args: &[&str]| home.run(args);
    gpg(&[
        "--quick-gen-key",
        "Platform Bot <bot@example.com>",
        "ed25519",
        "sign",
        "never",
    ]);
    let creds = w.root.join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    let secret = gpg(&["--armor", "--export-secret-keys", "bot@example.com"]);
    std::fs::write(creds.join("state-signing-key"), secret).unwrap();

    // A real Git server: the signed commit is pushed as it is.
    let served = w.root.join("served");
    std::fs::create_dir_all(&served).unwrap();
    let daemon = GitDaemon::start(&served);
    let url = daemon.bare_repo("state.git");
    std::fs::write(
        w.repo.join("platform/platform.yaml"),
        common::app::PLATFORM.replace("url: state.git", &format!("url: {url}")),
    )
    .unwrap();
    git(
        &w.repo,
        &["commit", "-q", "-a", "--no-gpg-sign", "-m", "remote"],
    );

    let cfg = w.daemon_config("{signing: {'*': {format: openpgp, credential: state-signing-key}}}");
    let (code, out, err) = w.reconcile(&cfg, &[("CREDENTIALS_DIRECTORY", &creds)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let store = served.join("state.git");
    let (ok, text) = verify_commit(&store, &[], Some(home.path()));
    assert!(ok, "git verify-commit failed: {text}");
    assert!(
        text.contains("Good signature from \"Platform Bot"),
        "{text}"
    );
    // The key never lands in the state directory.
    let armored = std::fs::read_to_string(creds.join("state-signing-key")).unwrap();
    let body_line = armored
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with("-----"))
        .unwrap()
        .to_string();
    for entry in walk(&w.state) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(&body_line),
            "the secret key is in {}",
            entry.display()
        );
    }
}

#[test]
fn a_missing_or_unusable_key_fails_before_any_write() {
    let w = World::new();
    let missing = w.root.join("no-such-key");
    let cfg = w.daemon_config(&format!(
        "{{signing: {{local: {{format: ssh, keyFile: {}}}}}}}",
        missing.display()
    ));
    let (code, out, err) = w.reconcile(&cfg, &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    let text = format!("{out}\n{err}");
    assert!(
        text.contains("signing key of state store local")
            && text.contains(&missing.display().to_string()),
        "{text}"
    );
    let store = w.state.join("state.git");
    let branches = if store.exists() {
        git(&store, &["branch", "--list"])
    } else {
        String::new()
    };
    assert!(
        branches.trim().is_empty(),
        "something was written: {branches}"
    );

    // A key others can read: ssh-keygen refuses it, and so do we, before writing.
    let key = w.ssh_key("open");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = w.daemon_config(&format!(
        "{{signing: {{local: {{format: ssh, keyFile: {}}}}}}}",
        key.display()
    ));
    let (code, out, err) = w.reconcile(&cfg, &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    let text = format!("{out}\n{err}");
    assert!(text.contains("too open"), "{text}");
    let branches = if store.exists() {
        git(&store, &["branch", "--list"])
    } else {
        String::new()
    };
    assert!(
        branches.trim().is_empty(),
        "something was written: {branches}"
    );
    // Neither key's content is in what promised printed.
    let private = std::fs::read_to_string(&key).unwrap();
    let line = private.lines().nth(1).unwrap();
    assert!(!text.contains(line));

    // A credential without $CREDENTIALS_DIRECTORY names what is missing.
    let cfg = w.daemon_config("{signing: {local: {format: ssh, credential: k}}}");
    let (code, out, err) = w.reconcile(&cfg, &[]);
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("$CREDENTIALS_DIRECTORY is not set"),
        "{out}{err}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}
