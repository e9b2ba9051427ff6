//! Every network operation has a deadline: servers on 127.0.0.1 that accept a connection and
//! never answer (or answer fetches and never a push) make each transport fail with an error
//! naming the server and the operation, within the configured timeouts plus some slack for
//! a loaded machine.

#![allow(missing_docs)]

mod common;

use std::time::{Duration, Instant};

use statestores::git::{AuthMethod, GitOptions, GitStateStoreSpec, SecretRef};
use statestores::s3::{BucketStateStoreSpec, S3Options};
use statestores::{
    ChangeSet, Error, FileWrite, GitStateStore, NetworkTimeouts, Owner, PlacementWrite,
    S3StateStore, StateStore,
};

/// The timeouts of these tests: short, so a hang shows as a failure quickly.
const SHORT: NetworkTimeouts = NetworkTimeouts {
    connect: Duration::from_secs(2),
    read: Duration::from_secs(2),
    operation: Duration::from_secs(3),
};

/// What a loaded machine may add to a timeout (process start-up, scheduling).
const SLACK: Duration = Duration::from_secs(5);

fn one_file() -> ChangeSet {
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
                content: b"a: 1\n".to_vec(),
            }],
        }],
        ..Default::default()
    }
}

fn git_store(dir: &std::path::Path, spec: GitStateStoreSpec) -> GitStateStore {
    let mut opts = GitOptions::new(dir.join("state"));
    opts.network = SHORT;
    opts.secrets_dir = Some(dir.join("secrets"));
    GitStateStore::open("hung", spec, opts).unwrap()
}

/// Runs `op`, asserts it failed with a transport error within `limit` + [`SLACK`] whose text
/// contains every one of `needles`; returns the text.
async fn fails_in_time<T: std::fmt::Debug>(
    limit: Duration,
    op: impl std::future::Future<Output = Result<T, Error>>,
    needles: &[&str],
) -> String {
    let t = Instant::now();
    let res = op.await;
    let took = t.elapsed();
    let err = res.expect_err("a silent server cannot succeed");
    let text = err.to_string();
    assert!(matches!(err, Error::Transport { .. }), "{text}");
    assert!(
        took < limit + SLACK,
        "took {took:?}, limit {limit:?}: {text}"
    );
    for n in needles {
        assert!(text.contains(n), "{n:?} missing from: {text}");
    }
    eprintln!("after {took:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_that_never_answers_fails_the_fetch_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = common::HungServer::start();
    let url = format!("git://127.0.0.1:{}/repo.git", hung.port);
    let store = git_store(tmp.path(), GitStateStoreSpec::new(&url));
    let server = format!("127.0.0.1:{}", hung.port);
    let text = fails_in_time(SHORT.operation, store.check(), &[&server, "fetch:"]).await;
    assert!(text.contains("network.readTimeout"), "{text}");
    fails_in_time(
        SHORT.operation,
        store.apply(&one_file()),
        &[&server, "fetch:"],
    )
    .await;
    assert!(hung.accepted() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_that_trickles_is_stopped_at_the_operation_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let port = common::start_trickling_server();
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let store = git_store(tmp.path(), GitStateStoreSpec::new(&url));
    // A byte every 200 ms: the read timeout (2 s) never fires, the operation timeout does.
    fails_in_time(
        SHORT.operation,
        store.check(),
        &[
            &format!("127.0.0.1:{port}"),
            "fetch:",
            "network.operationTimeout",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_daemon_that_never_answers_a_push_fails_the_push_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let upstream = common::start_git_daemon(srv.clone());
    let port = common::start_push_hanging_git_proxy(upstream);
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let store = git_store(tmp.path(), GitStateStoreSpec::new(&url));
    let server = format!("127.0.0.1:{port}");
    // The fetch goes through; the push is never answered and its process group is killed.
    // One fetch and one push, each within the operation timeout.
    let text = fails_in_time(
        SHORT.operation * 2,
        store.apply(&one_file()),
        &[&server, "push:", "network.operationTimeout"],
    )
    .await;
    assert!(text.contains("git push was stopped"), "{text}");
    fails_in_time(
        SHORT.operation * 2,
        store.check(),
        &[&server, "write-permission check:"],
    )
    .await;
    // Nothing reached the server.
    assert_eq!(
        common::remote_head(&format!("git://127.0.0.1:{upstream}/repo.git")),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_git_server_that_never_answers_fails_the_fetch_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = common::HungServer::start();
    let url = format!("http://127.0.0.1:{}/repo.git", hung.port);
    let store = git_store(tmp.path(), GitStateStoreSpec::new(&url));
    let server = format!("127.0.0.1:{}", hung.port);
    fails_in_time(SHORT.operation, store.check(), &[&server, "fetch:"]).await;
    fails_in_time(
        SHORT.operation,
        store.apply(&one_file()),
        &[&server, "fetch:"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_git_server_that_never_answers_a_push_fails_the_push_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let server = common::HttpServer::start(&srv, "alice", "pa55word");
    let port = common::start_push_hanging_http_proxy(server.port);
    let creds = tmp.path().join("secrets/git-creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("username"), "alice").unwrap();
    std::fs::write(creds.join("password"), "pa55word").unwrap();
    let mut spec = GitStateStoreSpec::new(format!("http://127.0.0.1:{port}/repo.git"));
    spec.secret_ref = Some(SecretRef {
        name: "git-creds".into(),
        namespace: "default".into(),
    });
    let store = git_store(tmp.path(), spec);
    // The fetch goes through; the push stalls: curl gives up after `read` below 1 byte/s
    // (http.lowSpeedTime), or the process group is killed at the operation deadline.
    let text = fails_in_time(
        SHORT.operation * 2,
        store.apply(&one_file()),
        &[&format!("127.0.0.1:{port}"), "push:"],
    )
    .await;
    assert!(!text.contains("pa55word"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_server_that_never_sends_its_banner_fails_the_fetch_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    let Ok(out) = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
    else {
        eprintln!("skipped: no ssh-keygen");
        return;
    };
    assert!(out.status.success());
    let hung = common::HungServer::start();
    let secrets = tmp.path().join("secrets/ssh-creds");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(
        secrets.join("sshPrivateKey"),
        std::fs::read_to_string(&key).unwrap(),
    )
    .unwrap();
    let host_key = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    std::fs::write(
        secrets.join("knownHosts"),
        format!("[127.0.0.1]:{} {}", hung.port, host_key.trim()),
    )
    .unwrap();
    let mut spec = GitStateStoreSpec::new(format!("ssh://git@127.0.0.1:{}/repo.git", hung.port));
    spec.auth_method = AuthMethod::Ssh;
    spec.secret_ref = Some(SecretRef {
        name: "ssh-creds".into(),
        namespace: "default".into(),
    });
    let store = git_store(tmp.path(), spec);
    // ssh's ConnectTimeout covers the banner exchange: ssh itself gives up after 2 s and
    // says where ("Connection to 127.0.0.1 port … timed out").
    let text = fails_in_time(
        SHORT.operation,
        store.check(),
        &["127.0.0.1", &hung.port.to_string(), "fetch:"],
    )
    .await;
    assert!(text.contains("timed out"), "{text}");
    assert!(hung.accepted() >= 1);
}

/// A real sshd whose session command never writes (`ForceCommand sleep`): the connection is
/// up and answers keep-alives, so only the whole-operation deadline (`timeout` around `ssh`)
/// ends the fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_session_that_never_answers_is_stopped_at_the_operation_deadline() {
    if std::process::Command::new("timeout")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no coreutils timeout (ssh then has no whole-operation deadline)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let Some(server) = common::SshServer::start_with(&keys, "ForceCommand sleep 3600\n") else {
        eprintln!("skipped: openssh-server not installed");
        return;
    };
    let secrets = tmp.path().join("secrets/ssh-creds");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("sshPrivateKey"), &server.client_key).unwrap();
    std::fs::write(secrets.join("knownHosts"), &server.known_hosts).unwrap();
    let mut spec = GitStateStoreSpec::new(format!(
        "ssh://{}@127.0.0.1:{}/repo.git",
        server.user, server.port
    ));
    spec.auth_method = AuthMethod::Ssh;
    spec.secret_ref = Some(SecretRef {
        name: "ssh-creds".into(),
        namespace: "default".into(),
    });
    let store = git_store(tmp.path(), spec);
    // `timeout` rounds the deadline up to whole seconds.
    fails_in_time(
        SHORT.operation + Duration::from_secs(1),
        store.check(),
        &[
            &format!("127.0.0.1:{}", server.port),
            "fetch:",
            "network.operationTimeout",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_endpoint_that_never_answers_fails_check_and_apply_in_time() {
    let tmp = tempfile::tempdir().unwrap();
    let hung = common::HungServer::start();
    let secrets = tmp.path().join("secrets/s3-creds");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("accessKeyID"), "AKIAHUNG").unwrap();
    std::fs::write(secrets.join("secretAccessKey"), "hung-secret-key").unwrap();
    let mut spec = BucketStateStoreSpec::new("kratix", format!("127.0.0.1:{}", hung.port));
    spec.insecure = true;
    spec.secret_ref = Some(SecretRef {
        name: "s3-creds".into(),
        namespace: "default".into(),
    });
    let store = S3StateStore::open(
        "hung",
        spec,
        S3Options {
            secrets_dir: Some(tmp.path().join("secrets")),
            network: SHORT,
            ..Default::default()
        },
    )
    .unwrap();
    let server = format!("127.0.0.1:{}", hung.port);
    let text = fails_in_time(
        SHORT.operation,
        store.check(),
        &[&server, "write-permission check"],
    )
    .await;
    assert!(!text.contains("hung-secret-key"), "{text}");
    fails_in_time(
        SHORT.operation,
        store.apply(&one_file()),
        &[&server, "apply"],
    )
    .await;
    fails_in_time(
        SHORT.operation,
        store.owned(""),
        &[&server, "read ownership index"],
    )
    .await;
    assert!(hung.accepted() >= 1);
}
