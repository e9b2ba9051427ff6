//! Backend-specific behaviour against real servers on 127.0.0.1: credentials, server-side
//! rejections, the persistent clone, configuration errors.

#![allow(missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;

use statestores::git::{AuthMethod, GitOptions, GitStateStoreSpec, SecretRef};
use statestores::{ChangeSet, Error, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore};

fn one_file(content: &str) -> ChangeSet {
    ChangeSet {
        writes: vec![PlacementWrite {
            owner: Owner {
                key: "worker-1/dependencies/redis/configure/5058f".into(),
                destination: "worker-1".into(),
                promise: "redis".into(),
                resource: None,
                pipeline: Some("configure".into()),
            }
            .into(),
            files: vec![FileWrite {
                path: "worker-1/dependencies/redis/configure/5058f/crd.yaml".into(),
                content: content.as_bytes().to_vec(),
            }],
        }],
        ..Default::default()
    }
}

fn secrets_dir(root: &std::path::Path, user: &str, pass: &str) -> std::path::PathBuf {
    let d = root.join("secrets");
    std::fs::create_dir_all(d.join("git-creds")).unwrap();
    std::fs::write(d.join("git-creds/username"), user).unwrap();
    std::fs::write(d.join("git-creds/password"), pass).unwrap();
    d
}

fn http_spec(port: u16) -> GitStateStoreSpec {
    let mut spec = GitStateStoreSpec::new(format!("http://127.0.0.1:{port}/repo.git"));
    spec.secret_ref = Some(SecretRef {
        name: "git-creds".into(),
        namespace: "default".into(),
    });
    spec
}

/// `<dir>/srv/repo.git`, an empty bare repository served read-write by `git daemon` on
/// 127.0.0.1: the server directory and the repository's `git://` URL.
fn served_repo(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let srv = dir.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let port = common::start_git_daemon(srv.clone());
    (srv, format!("git://127.0.0.1:{port}/repo.git"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_a_clear_auth_error_without_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let server = common::HttpServer::start(&srv, "alice", "right-password");
    let mut opts = GitOptions::new(tmp.path().join("state"));
    opts.secrets_dir = Some(secrets_dir(tmp.path(), "alice", "Wr0ng-Pa55word-XYZ"));
    let store = GitStateStore::open("http", http_spec(server.port), opts).unwrap();

    for err in [
        store.check().await.unwrap_err(),
        store.apply(&one_file("a: 1\n")).await.unwrap_err(),
        store.owned("").await.unwrap_err(),
    ] {
        let shown = format!("{err} / {err:?}");
        assert!(matches!(err, Error::Auth { .. }), "{shown}");
        assert!(
            shown.contains("authentication to http://127.0.0.1:"),
            "{shown}"
        );
        assert!(!shown.contains("Wr0ng-Pa55word-XYZ"), "{shown}");
        assert!(!shown.contains("alice:"), "{shown}");
    }
    assert!(!format!("{store:?}").contains("Wr0ng"));
    assert_eq!(
        common::remote_head(&format!(
            "http://alice:right-password@127.0.0.1:{}/repo.git",
            server.port
        )),
        None
    );
}

/// An http(s) server that lets these credentials fetch but not push (a read-only token: `403`
/// on `git-receive-pack`) fails the write-permission check as an authentication error, before
/// any apply, and without the password; reading still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_http_token_fails_the_write_permission_check() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let server = common::HttpServer::start_read_only(&srv, "alice", "read-0nly-pw");
    let mut opts = GitOptions::new(tmp.path().join("state"));
    opts.secrets_dir = Some(secrets_dir(tmp.path(), "alice", "read-0nly-pw"));
    let store = GitStateStore::open("http", http_spec(server.port), opts).unwrap();
    let err = store.check().await.unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(matches!(err, Error::Auth { .. }), "{shown}");
    assert!(shown.contains("403"), "{shown}");
    assert!(!shown.contains("read-0nly-pw"), "{shown}");
    assert_eq!(store.owned("").await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_receive_hook_rejection_shows_the_hook_message() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = srv.join("repo.git");
    common::init_bare(&bare);
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        "#!/bin/sh\necho 'POLICY-42: main is frozen until Monday' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = common::start_git_daemon(srv);
    let store = GitStateStore::open(
        "hooked",
        GitStateStoreSpec::new(format!("git://127.0.0.1:{port}/repo.git")),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap();
    match store.apply(&one_file("a: 1\n")).await {
        Err(Error::Rejected { server_message }) => {
            assert!(
                server_message.contains("POLICY-42: main is frozen until Monday"),
                "{server_message}"
            );
            assert!(
                server_message.contains("pre-receive hook declined"),
                "{server_message}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_clone_is_reused_and_incremental() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, url) = served_repo(tmp.path());
    let spec = GitStateStoreSpec::new(url.clone());
    let state = tmp.path().join("state");
    let first = GitStateStore::open("s", spec.clone(), GitOptions::new(&state)).unwrap();
    assert!(first.repo_path().starts_with(state.join("git")));
    let v1 = first
        .apply(&one_file("a: 1\n"))
        .await
        .unwrap()
        .version
        .unwrap();
    drop(first);
    // A restarted daemon finds the same clone and builds on it.
    let second = GitStateStore::open("s", spec, GitOptions::new(&state)).unwrap();
    let out = second.apply(&one_file("a: 2\n")).await.unwrap();
    let v2 = out.version.unwrap();
    assert_ne!(v1, v2);
    let view = common::View::of(&url);
    assert_eq!(view.commit_count(), 2);
    assert!(view.is_ancestor(&v1, &v2));
    assert_eq!(std::fs::read_dir(state.join("git")).unwrap().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_author_is_honoured_and_subject_templated() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("local.git");
    let mut spec = GitStateStoreSpec::new(format!("file://{}", repo.display()));
    spec.git_author.name = "Platform Bot".into();
    spec.git_author.email = "bot@example.com".into();
    let store = GitStateStore::open("l", spec, GitOptions::new(tmp.path().join("state"))).unwrap();
    assert!(store.is_local());
    store.check().await.unwrap();
    let mut cs = one_file("x\n");
    cs.meta.subject_template = Some("deploy {config_short}: {updated} files".into());
    cs.meta.config_commit = Some("abcdef0123".into());
    store.apply(&cs).await.unwrap();
    let view = common::View::of(repo.to_str().unwrap());
    assert_eq!(view.author(), "Platform Bot <bot@example.com>");
    assert!(
        view.message("HEAD")
            .starts_with("deploy abcdef0: 1 files\n")
    );
    // The dependency placement has no resource: no Promised-Resource trailer.
    assert!(!view.message("HEAD").contains("Promised-Resource"));
    assert!(view.message("HEAD").contains("Promised-Promise: redis\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_paths_are_rejected_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("local.git");
    let store = GitStateStore::open(
        "l",
        GitStateStoreSpec::new(repo.display().to_string()),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap();
    for bad in [
        "../escape.yaml",
        ".promised/index/x.json",
        "/abs.yaml",
        "a//b.yaml",
    ] {
        let mut cs = one_file("x\n");
        cs.writes[0].files[0].path = bad.into();
        assert!(
            matches!(store.apply(&cs).await, Err(Error::InvalidPath { .. })),
            "{bad}"
        );
    }
    assert_eq!(common::remote_head(repo.to_str().unwrap()), None);
}

#[test]
fn unsupported_and_incomplete_configs_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = GitStateStoreSpec::new("https://github.com/org/repo");
    spec.auth_method = AuthMethod::GithubApp;
    spec.secret_ref = Some(SecretRef {
        name: "gh".into(),
        namespace: "default".into(),
    });
    let err = GitStateStore::open("g", spec.clone(), GitOptions::new(tmp.path())).unwrap_err();
    assert!(
        err.to_string().contains("githubApp is not supported yet"),
        "{err}"
    );

    spec.auth_method = AuthMethod::BasicAuth;
    let mut opts = GitOptions::new(tmp.path());
    opts.secrets_dir = Some(tmp.path().join("nothing-here"));
    let err = GitStateStore::open("g", spec.clone(), opts).unwrap_err();
    assert!(err.to_string().contains("no key \"password\""), "{err}");

    let err = GitStateStore::open(
        "g",
        GitStateStoreSpec::new("ftp://x/y"),
        GitOptions::new(tmp.path()),
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }));
}

#[test]
fn ssh_keys_are_written_private_outside_the_state_dir_and_removed_with_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tmp.path().join("secrets/ssh-creds");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("sshPrivateKey"), "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAAsecretkeymaterial\n-----END OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::write(
        secrets.join("knownHosts"),
        "[127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza\n",
    )
    .unwrap();
    let mut spec = GitStateStoreSpec::new("git@127.0.0.1:org/repo.git");
    spec.auth_method = AuthMethod::Ssh;
    spec.secret_ref = Some(SecretRef {
        name: "ssh-creds".into(),
        namespace: "default".into(),
    });
    let mut opts = GitOptions::new(tmp.path().join("state"));
    opts.secrets_dir = Some(tmp.path().join("secrets"));
    let store = GitStateStore::open("ssh", spec, opts).unwrap();
    assert!(!store.is_local());
    // The key's directory: private, in the temporary directory ($RUNTIME_DIRECTORY unset).
    let holds_key = |d: &std::path::Path| {
        std::fs::read_to_string(d.join("id")).is_ok_and(|k| k.contains("secretkeymaterial"))
    };
    let dir = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("promised-ssh-"))
                && holds_key(p)
        })
        .expect("the key's directory in the temporary directory");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for f in ["id", "known_hosts"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    for e in walk(&tmp.path().join("state")) {
        let text = std::fs::read(&e).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&text).contains("secretkeymaterial"),
            "the key is in {}",
            e.display()
        );
    }
    assert!(!format!("{store:?}").contains("secretkeymaterial"));
    drop(store);
    assert!(!dir.exists(), "the key's directory goes with the store");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_apply_is_written_as_a_pack_and_pushes_a_valid_history() {
    let tmp = tempfile::tempdir().unwrap();
    let (srv, url) = served_repo(tmp.path());
    let store = GitStateStore::open(
        "big",
        GitStateStoreSpec::new(url.clone()),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap();
    let mut cs = one_file("x\n");
    // More objects than one compressed chunk of the streamed pack (512), and two files of
    // the same content (one blob, written once).
    cs.writes[0].files = (0..2600)
        .map(|i| FileWrite {
            path: format!("worker-1/dependencies/redis/configure/5058f/f{i:04}.yaml"),
            content: format!("n: {i}\n").into_bytes(),
        })
        .chain(["same-a.yaml", "same-b.yaml"].map(|name| FileWrite {
            path: format!("worker-1/dependencies/redis/configure/5058f/{name}"),
            content: b"same\n".to_vec(),
        }))
        .collect();
    let out = store.apply(&cs).await.unwrap();
    assert_eq!(out.written, 2602);
    let packs = std::fs::read_dir(store.repo_path().join("objects/pack"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "pack")
        })
        .count();
    assert_eq!(packs, 1, "one pack for the large apply");
    common::git(
        Some(store.repo_path()),
        &["fsck", "--strict", "--no-dangling"],
    );
    common::git(
        Some(&srv.join("repo.git")),
        &["fsck", "--strict", "--no-dangling"],
    );
    let view = common::View::of(&url);
    assert_eq!(
        view.read("worker-1/dependencies/redis/configure/5058f/f2599.yaml")
            .unwrap(),
        "n: 2599\n"
    );
    assert_eq!(
        view.read("worker-1/dependencies/redis/configure/5058f/same-b.yaml")
            .unwrap(),
        "same\n"
    );
    // Re-apply: nothing to do, even though the objects now live in a pack.
    assert_eq!(store.apply(&cs).await.unwrap().version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_applies_trigger_gc_and_the_store_keeps_working() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("local.git");
    let store = GitStateStore::open(
        "gc",
        GitStateStoreSpec::new(repo.display().to_string()),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap();
    let packs = || {
        std::fs::read_dir(repo.join("objects/pack"))
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "pack")
                })
                .count()
            })
            .unwrap_or(0)
    };
    let mut max_packs = 0;
    for round in 0..30 {
        let mut cs = one_file("x\n");
        cs.writes[0].files = (0..101)
            .map(|i| FileWrite {
                path: format!("worker-1/dependencies/redis/configure/5058f/f{i:03}.yaml"),
                content: format!("round: {round}\nn: {i}\n").into_bytes(),
            })
            .collect();
        let out = store.apply(&cs).await.unwrap();
        assert_eq!(out.written, 101, "round {round}");
        max_packs = max_packs.max(packs());
    }
    assert!(max_packs <= 26, "gc kept packs bounded, saw {max_packs}");
    assert!(packs() < 10, "packs were consolidated: {}", packs());
    common::git(Some(&repo), &["fsck", "--strict", "--no-dangling"]);
    let view = common::View::of(repo.to_str().unwrap());
    assert_eq!(view.commit_count(), 30);
    assert_eq!(
        view.read("worker-1/dependencies/redis/configure/5058f/f100.yaml")
            .unwrap(),
        "round: 29\nn: 100\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ssh_key_is_an_auth_error_without_key_material() {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let Some(server) = common::SshServer::start(&keys) else {
        eprintln!("skipped: openssh-server not installed");
        return;
    };
    let bare = tmp.path().join("repo.git");
    common::init_bare(&bare);
    // A key the server does not know.
    let other = tmp.path().join("other");
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = std::fs::read_to_string(&other).unwrap();
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let secrets = tmp.path().join("secrets/ssh-creds");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("sshPrivateKey"), &key).unwrap();
    std::fs::write(secrets.join("knownHosts"), &server.known_hosts).unwrap();
    let mut spec = GitStateStoreSpec::new(format!(
        "ssh://{}@127.0.0.1:{}{}",
        server.user,
        server.port,
        bare.display()
    ));
    spec.auth_method = AuthMethod::Ssh;
    spec.secret_ref = Some(SecretRef {
        name: "ssh-creds".into(),
        namespace: "default".into(),
    });
    let mut opts = GitOptions::new(tmp.path().join("state"));
    opts.secrets_dir = Some(tmp.path().join("secrets"));
    let store = GitStateStore::open("ssh", spec, opts).unwrap();
    let err = store.apply(&one_file("a: 1\n")).await.unwrap_err();
    let shown = format!("{err} / {err:?}");
    assert!(matches!(err, Error::Auth { .. }), "{shown}");
    assert!(shown.contains("ssh-creds"), "{shown}");
    for line in key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "{shown}");
    }
    assert!(!shown.contains(&key_body[..20]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_unless_told_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let server = common::HttpServer::start_tls(&srv, "alice", "tls-pw");
    let mut spec = GitStateStoreSpec::new(format!("https://127.0.0.1:{}/repo.git", server.port));
    spec.secret_ref = Some(SecretRef {
        name: "git-creds".into(),
        namespace: "default".into(),
    });
    let secrets = secrets_dir(tmp.path(), "alice", "tls-pw");

    // Default: the self-signed certificate is refused.
    let mut opts = GitOptions::new(tmp.path().join("state-verify"));
    opts.secrets_dir = Some(secrets.clone());
    let store = GitStateStore::open("tls", spec.clone(), opts).unwrap();
    let err = store.apply(&one_file("a: 1\n")).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(!format!("{err:?}").contains("tls-pw"));

    // Explicit opt-out (Kratix's behaviour): works, for fetch (gix) and push (git).
    let mut opts = GitOptions::new(tmp.path().join("state-insecure"));
    opts.secrets_dir = Some(secrets);
    opts.insecure_skip_tls_verify = true;
    let store = GitStateStore::open("tls", spec, opts).unwrap();
    store.check().await.unwrap();
    let out = store.apply(&one_file("a: 1\n")).await.unwrap();
    assert!(out.version.is_some());
    assert_eq!(
        store.apply(&one_file("a: 1\n")).await.unwrap().version,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_persistent_clone_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, url) = served_repo(tmp.path());
    let spec = GitStateStoreSpec::new(url.clone());
    let state = tmp.path().join("state");
    let store = GitStateStore::open("s", spec.clone(), GitOptions::new(&state)).unwrap();
    store.apply(&one_file("a: 1\n")).await.unwrap();
    let clone = store.repo_path().to_owned();
    drop(store);
    // Wreck it: not a repository any more.
    std::fs::remove_dir_all(&clone).unwrap();
    std::fs::create_dir_all(&clone).unwrap();
    std::fs::write(clone.join("garbage"), "x").unwrap();
    let store = GitStateStore::open("s", spec, GitOptions::new(&state)).unwrap();
    let out = store.apply(&one_file("a: 2\n")).await.unwrap();
    assert!(out.version.is_some());
    let view = common::View::of(&url);
    assert_eq!(view.commit_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_refuses_a_path_that_is_not_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("some-file"), "x").unwrap();
    let err = GitStateStore::open(
        "l",
        GitStateStoreSpec::new(tmp.path().display().to_string()),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not a git repository"), "{err}");
}

/// A server that lets us fetch but not push (`git daemon` without `--enable=receive-pack`)
/// fails the start-up write-permission check with the server's reason, while reading works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_remote_fails_the_write_permission_check() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    common::init_bare(&srv.join("empty.git"));
    // Seed one repository through a writable daemon; serve both read-only.
    let rw = common::start_git_daemon(srv.clone());
    let seeded = GitStateStore::open(
        "rw",
        GitStateStoreSpec::new(format!("git://127.0.0.1:{rw}/repo.git")),
        GitOptions::new(tmp.path().join("state-rw")),
    )
    .unwrap();
    seeded.apply(&one_file("a: 1\n")).await.unwrap();
    let ro = common::start_read_only_git_daemon(srv);
    for repo in ["repo.git", "empty.git"] {
        let store = GitStateStore::open(
            "ro",
            GitStateStoreSpec::new(format!("git://127.0.0.1:{ro}/{repo}")),
            GitOptions::new(tmp.path().join(format!("state-ro-{repo}"))),
        )
        .unwrap();
        let err = store.check().await.unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("service not enabled"), "{repo}: {shown}");
        assert!(
            shown.contains(&format!("git://127.0.0.1:{ro}/{repo}")),
            "{repo}: {shown}"
        );
        let err = store.apply(&one_file("a: 2\n")).await.unwrap_err();
        assert!(err.to_string().contains("service not enabled"), "{err}");
    }
    // Reading is allowed: the seeded repository's index is visible.
    let store = GitStateStore::open(
        "ro",
        GitStateStoreSpec::new(format!("git://127.0.0.1:{ro}/repo.git")),
        GitOptions::new(tmp.path().join("state-ro-read")),
    )
    .unwrap();
    assert_eq!(store.owned("").await.unwrap().len(), 1);
}

/// Child half of [`a_read_only_local_repository_fails_the_write_permission_check`]: checks the
/// local repository named by `PROMISED_TEST_LOCAL_REPO` and prints the outcome. Run only by
/// that test, inside a mount namespace where the repository's `objects/` is read-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of a_read_only_local_repository_fails_the_write_permission_check"]
async fn local_check_child() {
    let repo = std::env::var("PROMISED_TEST_LOCAL_REPO").expect("run by the parent test");
    let state = std::env::var("PROMISED_TEST_LOCAL_STATE").expect("run by the parent test");
    let store = GitStateStore::open(
        "local",
        GitStateStoreSpec::new(repo),
        GitOptions::new(state),
    )
    .unwrap();
    match store.check().await {
        Ok(()) => println!("CHECK: ok"),
        Err(e) => println!("CHECK: error: {e}"),
    }
}

/// A local bare repository whose `objects/` cannot be written fails the check. Tests run as
/// root, which ignores permission bits (`chmod a-w` would not stop it), so the test re-runs
/// itself in bubblewrap with `objects/` bind-mounted read-only: writes there fail with EROFS
/// for root too.
#[test]
fn a_read_only_local_repository_fails_the_write_permission_check() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo.git");
    common::init_bare(&repo);
    let objects = repo.join("objects");
    let probe = std::process::Command::new("bwrap")
        .args(["--bind", "/", "/", "--ro-bind"])
        .arg(&objects)
        .arg(&objects)
        .args(["--", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: bubblewrap cannot create a mount namespace here");
        return;
    }
    let run = |read_only: bool| {
        let mut cmd = std::process::Command::new("bwrap");
        cmd.args(["--bind", "/", "/"]);
        if read_only {
            cmd.arg("--ro-bind").arg(&objects).arg(&objects);
        }
        let out = cmd
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", "local_check_child", "--ignored", "--nocapture"])
            .env("PROMISED_TEST_LOCAL_REPO", &repo)
            .env("PROMISED_TEST_LOCAL_STATE", tmp.path().join("state"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find(|l| l.starts_with("CHECK: "))
            .unwrap_or_else(|| {
                panic!(
                    "no outcome from the child:\n{stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    };
    // The same child, without the read-only mount, passes: the mount is what fails it.
    assert_eq!(run(false), "CHECK: ok");
    let line = run(true);
    assert!(line.starts_with("CHECK: error: "), "{line}");
    assert!(line.contains(&objects.display().to_string()), "{line}");
    assert!(line.contains("Read-only file system"), "{line}");
}

/// `trust_head_for`: within the window an apply builds on the head this store last saw
/// without fetching; when someone pushed meanwhile, the lease rejects the push, the store
/// fetches, repairs the drift they caused and keeps their own file, in one retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_head_is_protected_by_the_push_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, url) = served_repo(tmp.path());
    let mut opts = GitOptions::new(tmp.path().join("state"));
    opts.trust_head_for = std::time::Duration::from_secs(3600);
    let store = GitStateStore::open("trusting", GitStateStoreSpec::new(url.clone()), opts).unwrap();
    assert_eq!(store.quiet_for(), None, "nothing seen of the remote yet");
    let first = store.apply(&one_file("a: 1\n")).await.unwrap();
    assert!(first.version.is_some());
    // The pushed head is trusted: an apply with nothing to write would read nothing for the
    // rest of the hour.
    let quiet = store.quiet_for().expect("trusted after the push");
    assert!(quiet <= std::time::Duration::from_secs(3600), "{quiet:?}");

    // Someone else edits our file and adds their own, behind our back.
    let person = common::Person::clone(&url);
    person.write(
        "worker-1/dependencies/redis/configure/5058f/crd.yaml",
        "edited: by hand\n",
    );
    person.write("people/notes.md", "theirs\n");
    person.commit_and_push("a person's commit");
    let theirs = common::View::of(&url).head();

    // Nothing to write and the head is trusted: no fetch, nothing noticed yet.
    let idle = store.apply(&ChangeSet::default()).await.unwrap();
    assert!(idle.version.is_none() && idle.drift.is_empty(), "{idle:?}");
    assert_eq!(common::View::of(&url).head(), theirs);

    // A write builds on the trusted (stale) head: the lease refuses it, the retry fetches,
    // restores our file and writes the new one on top of their commit.
    let mut cs = one_file("a: 1\n");
    cs.writes[0].files.push(FileWrite {
        path: "worker-1/dependencies/redis/configure/5058f/extra.yaml".into(),
        content: b"b: 2\n".to_vec(),
    });
    let out = store.apply(&cs).await.unwrap();
    assert_eq!(out.conflicts_retried, 1, "{out:?}");
    assert_eq!(out.drift.len(), 1, "{out:?}");
    let view = common::View::of(&url);
    assert_eq!(view.head(), out.version.clone().unwrap());
    assert!(view.is_ancestor(&theirs, &view.head()));
    assert_eq!(view.read("people/notes.md").unwrap(), "theirs\n");
    assert_eq!(
        view.read("worker-1/dependencies/redis/configure/5058f/crd.yaml")
            .unwrap(),
        "a: 1\n"
    );
    assert_eq!(
        view.read("worker-1/dependencies/redis/configure/5058f/extra.yaml")
            .unwrap(),
        "b: 2\n"
    );
}

/// When `git gc` cannot bring the pack count down (here: every pack is kept with a `.keep`
/// file), it is not run again on every fetch or apply: once per `GC_BACKOFF`.
#[test]
fn gc_that_cannot_help_is_not_repeated_on_every_call() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("kept.git");
    common::git(None, &["init", "-q", "--bare", repo.to_str().unwrap()]);
    // Every push is kept as a pack, however small.
    common::git(Some(&repo), &["config", "receive.unpackLimit", "1"]);
    let work = tmp.path().join("work");
    common::git(None, &["init", "-q", "-b", "main", work.to_str().unwrap()]);
    for i in 0..30 {
        std::fs::write(work.join("f.txt"), format!("{i}\n")).unwrap();
        common::git(Some(&work), &["add", "-A"]);
        common::git(Some(&work), &["commit", "-qm", &format!("c{i}")]);
        // One pack per push, each kept: gc may not fold it into another.
        common::git(
            Some(&work),
            &[
                "-c",
                "receive.unpackLimit=1",
                "push",
                "-q",
                repo.to_str().unwrap(),
                "main",
            ],
        );
    }
    let pack_dir = repo.join("objects/pack");
    let mut packs = 0;
    for e in std::fs::read_dir(&pack_dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "pack") {
            std::fs::write(p.with_extension("keep"), "kept by the test\n").unwrap();
            packs += 1;
        }
    }
    assert!(packs > 25, "{packs} packs");
    assert!(
        statestores::git::gc_if_needed(&repo, &[]),
        "the first call runs gc"
    );
    assert!(
        !statestores::git::gc_if_needed(&repo, &[]),
        "gc could not help (kept packs): not run again within the backoff"
    );
}

/// A fresh store (a new `promised reconcile`) checks, then applies: the apply starts from the
/// head the check fetched instead of fetching again. When someone pushed in between, the
/// lease refuses the push and the retry fetches: their commit is kept under ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_fetched_by_the_check_is_protected_by_the_push_lease() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, url) = served_repo(tmp.path());
    let seed = GitStateStore::open(
        "seed",
        GitStateStoreSpec::new(url.clone()),
        GitOptions::new(tmp.path().join("state-seed")),
    )
    .unwrap();
    seed.apply(&one_file("a: 1\n")).await.unwrap();

    let mut opts = GitOptions::new(tmp.path().join("state"));
    opts.trust_head_for = std::time::Duration::from_secs(3600);
    let store = GitStateStore::open("checking", GitStateStoreSpec::new(url.clone()), opts).unwrap();
    store.check().await.unwrap();
    let person = common::Person::clone(&url);
    person.write("people/notes.md", "theirs\n");
    person.commit_and_push("a person's commit");
    let theirs = common::View::of(&url).head();

    let out = store.apply(&one_file("a: 2\n")).await.unwrap();
    assert_eq!(out.conflicts_retried, 1, "{out:?}");
    let view = common::View::of(&url);
    assert_eq!(view.head(), out.version.clone().unwrap());
    assert!(view.is_ancestor(&theirs, &view.head()));
    assert_eq!(view.read("people/notes.md").unwrap(), "theirs\n");
    assert_eq!(
        view.read("worker-1/dependencies/redis/configure/5058f/crd.yaml")
            .unwrap(),
        "a: 2\n"
    );

    // Without a push in between, the apply after a check needs no retry.
    store.check().await.unwrap();
    let out = store.apply(&one_file("a: 3\n")).await.unwrap();
    assert_eq!(out.conflicts_retried, 0, "{out:?}");
    assert_eq!(
        common::View::of(&url)
            .read("worker-1/dependencies/redis/configure/5058f/crd.yaml")
            .unwrap(),
        "a: 3\n"
    );
}
