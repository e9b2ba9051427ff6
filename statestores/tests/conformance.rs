//! The conformance suite (`style-anchors.md` item 10): the same scenarios, generic over
//! [`StateStore`], against every backend:
//! - the local bare repository backend (a plain path),
//! - the remote backend against `git daemon --enable=receive-pack` (git://) on 127.0.0.1,
//! - the remote backend against `git http-backend` with basic auth (http://) on 127.0.0.1.
//!
//! A "person" edits the repository with the git CLI between applies.

#![allow(missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Person, View, remote_head};
use statestores::git::{BeforePublish, GitOptions, GitStateStoreSpec, SecretRef};
use statestores::{
    ChangeSet, CommitMeta, DriftKind, Error, FileWrite, GitStateStore, Owner, PlacementWrite,
    StateStore,
};

/// One backend under test.
pub struct Fixture {
    /// Builds a store; `hook` runs before each publish, `attempts` bounds retries.
    make: Box<dyn Fn(Option<BeforePublish>, u32) -> GitStateStore + Send + Sync>,
    /// A URL the git CLI can clone from and push to (the person's view).
    cli_url: String,
    _keep: Vec<Box<dyn std::any::Any + Send + Sync>>,
}

impl Fixture {
    fn store(&self) -> GitStateStore {
        (self.make)(None, 5)
    }
}

fn local() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("store.git");
    let state = tmp.path().join("state");
    let url = repo.display().to_string();
    let url2 = url.clone();
    Fixture {
        make: Box::new(move |hook, attempts| {
            let mut opts = GitOptions::new(&state);
            opts.before_publish = hook;
            opts.max_push_attempts = attempts;
            GitStateStore::open("local", GitStateStoreSpec::new(url2.clone()), opts).unwrap()
        }),
        cli_url: url,
        _keep: vec![Box::new(tmp)],
    }
}

fn daemon() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let port = common::start_git_daemon(srv);
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let state = tmp.path().join("state");
    let url2 = url.clone();
    Fixture {
        make: Box::new(move |hook, attempts| {
            let mut opts = GitOptions::new(&state);
            opts.before_publish = hook;
            opts.max_push_attempts = attempts;
            GitStateStore::open("daemon", GitStateStoreSpec::new(url2.clone()), opts).unwrap()
        }),
        cli_url: url,
        _keep: vec![Box::new(tmp)],
    }
}

fn http() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let server = common::HttpServer::start(&srv, "alice", "s3cret-pw");
    let port = server.port;
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(secrets.join("git-creds")).unwrap();
    std::fs::write(secrets.join("git-creds/username"), "alice\n").unwrap();
    std::fs::write(secrets.join("git-creds/password"), "s3cret-pw\n").unwrap();
    let state = tmp.path().join("state");
    let url = format!("http://127.0.0.1:{port}/repo.git");
    Fixture {
        make: Box::new(move |hook, attempts| {
            let mut spec = GitStateStoreSpec::new(url.clone());
            spec.secret_ref = Some(SecretRef {
                name: "git-creds".into(),
                namespace: "default".into(),
            });
            let mut opts = GitOptions::new(&state);
            opts.secrets_dir = Some(secrets.clone());
            opts.before_publish = hook;
            opts.max_push_attempts = attempts;
            GitStateStore::open("http", spec, opts).unwrap()
        }),
        cli_url: format!("http://alice:s3cret-pw@127.0.0.1:{port}/repo.git"),
        _keep: vec![Box::new(server), Box::new(tmp)],
    }
}

/// The remote backend over ssh (`authMethod: ssh`, key + known_hosts from the secrets dir).
/// Skipped when openssh-server is not installed. The person uses the bare repo's path.
fn ssh() -> Option<Fixture> {
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let server = common::SshServer::start(&keys)?;
    let bare = tmp.path().join("srv/repo.git");
    std::fs::create_dir_all(&bare).unwrap();
    common::init_bare(&bare);
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(secrets.join("ssh-creds")).unwrap();
    std::fs::write(secrets.join("ssh-creds/sshPrivateKey"), &server.client_key).unwrap();
    std::fs::write(secrets.join("ssh-creds/knownHosts"), &server.known_hosts).unwrap();
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        server.user,
        server.port,
        bare.display()
    );
    let state = tmp.path().join("state");
    Some(Fixture {
        make: Box::new(move |hook, attempts| {
            let mut spec = GitStateStoreSpec::new(url.clone());
            spec.auth_method = statestores::git::AuthMethod::Ssh;
            spec.secret_ref = Some(SecretRef {
                name: "ssh-creds".into(),
                namespace: "default".into(),
            });
            let mut opts = GitOptions::new(&state);
            opts.secrets_dir = Some(secrets.clone());
            opts.before_publish = hook;
            opts.max_push_attempts = attempts;
            GitStateStore::open("ssh", spec, opts).unwrap()
        }),
        cli_url: bare.display().to_string(),
        _keep: vec![Box::new(server), Box::new(tmp)],
    })
}

// ---------------------------------------------------------------- change-set builders

fn owner(dest: &str, promise: &str, rr: &str) -> Owner {
    Owner {
        key: format!("{dest}/resources/default/{promise}/{rr}/configure/5058f"),
        destination: dest.into(),
        promise: promise.into(),
        resource: Some(format!("default/{rr}")),
        pipeline: Some("configure".into()),
    }
}

fn dir(o: &Owner) -> String {
    format!("destinations/{}", o.key)
}

fn placement(o: Owner, files: &[(&str, &str)]) -> PlacementWrite {
    let d = dir(&o);
    PlacementWrite {
        files: files
            .iter()
            .map(|(n, c)| FileWrite {
                path: format!("{d}/{n}"),
                content: c.as_bytes().to_vec(),
            })
            .collect(),
        owner: o.into(),
    }
}

fn batch() -> ChangeSet {
    ChangeSet {
        writes: vec![
            placement(
                owner("worker-1", "redis", "a"),
                &[
                    ("redis.yaml", "kind: Redis\nname: a\n"),
                    ("svc.yaml", "kind: Service\n"),
                ],
            ),
            placement(
                owner("worker-1", "redis", "b"),
                &[("redis.yaml", "kind: Redis\nname: b\n")],
            ),
            placement(
                owner("worker-2", "postgres", "c"),
                &[("pg.yaml", "kind: Postgres\nname: c\n")],
            ),
        ],
        removals: vec![],
        meta: CommitMeta {
            config_commit: Some("1a2b3c4d5e6f".into()),
            ..Default::default()
        },
    }
}

fn path_of(key_owner: &Owner, name: &str) -> String {
    format!("{}/{name}", dir(key_owner))
}

// ---------------------------------------------------------------- the suite

async fn batched_apply_is_one_commit<S: StateStore>(store: &S, fx: &Fixture) {
    store.check().await.expect("check on a fresh store");
    let before = remote_head(&fx.cli_url);
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!((out.written, out.deleted, out.unchanged), (4, 0, 0));
    let version = out.version.expect("a commit");
    let view = View::of(&fx.cli_url);
    assert_eq!(view.head(), version);
    assert_eq!(view.commit_count(), 1 + usize::from(before.is_some()));
    let a = owner("worker-1", "redis", "a");
    let c = owner("worker-2", "postgres", "c");
    assert_eq!(
        view.read(&path_of(&a, "redis.yaml")).unwrap(),
        "kind: Redis\nname: a\n"
    );
    assert_eq!(
        view.read(&path_of(&c, "pg.yaml")).unwrap(),
        "kind: Postgres\nname: c\n"
    );
    for o in [&a, &c] {
        let index = statestores::index_path(&o.destination, statestores::shard_of(&o.key));
        assert!(
            view.read(&index).is_some_and(|i| i.contains(&o.key)),
            "{index}"
        );
    }
    let msg = view.message("HEAD");
    assert!(
        msg.starts_with("promised: 4 updated, 0 deleted (config 1a2b3c4)\n"),
        "{msg}"
    );
    assert!(
        msg.contains("Promised-Config-Commit: 1a2b3c4d5e6f\n"),
        "{msg}"
    );
    assert!(
        msg.contains("Promised-Promise: postgres\nPromised-Promise: redis\n"),
        "{msg}"
    );
    assert!(
        msg.contains("Promised-Resource: redis/default/a\n"),
        "{msg}"
    );
    assert!(
        msg.contains("Promised-Resource: postgres/default/c\n"),
        "{msg}"
    );
    assert_eq!(view.author(), "kratix <>");
    store.check().await.expect("check once the branch exists");
    let owned = store.owned("destinations/worker-1").await.unwrap();
    assert_eq!(owned.len(), 3);
    assert!(
        owned
            .iter()
            .all(|e| e.owner.destination == "worker-1" && e.sha256.to_string().len() == 64)
    );
}

async fn reapply_makes_no_commit<S: StateStore>(store: &S, fx: &Fixture) {
    store.apply(&batch()).await.unwrap();
    let head = remote_head(&fx.cli_url);
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!(out.version, None);
    assert_eq!((out.written, out.deleted, out.unchanged), (0, 0, 4));
    assert_eq!(remote_head(&fx.cli_url), head);
    // No head is trusted by default: every apply reads the store, so none may be skipped.
    assert_eq!(store.quiet_for(), None);
}

async fn prune_and_remove<S: StateStore>(store: &S, fx: &Fixture) {
    store.apply(&batch()).await.unwrap();
    let a = owner("worker-1", "redis", "a");
    let c = owner("worker-2", "postgres", "c");
    let cs = ChangeSet {
        writes: vec![placement(
            a.clone(),
            &[("redis.yaml", "kind: Redis\nname: a\n")],
        )],
        removals: vec![c.key.clone()],
        meta: CommitMeta::default(),
    };
    let out = store.apply(&cs).await.unwrap();
    assert_eq!((out.written, out.deleted, out.unchanged), (0, 2, 1));
    assert!(out.version.is_some());
    let view = View::of(&fx.cli_url);
    assert!(view.read(&path_of(&a, "svc.yaml")).is_none());
    assert!(view.read(&path_of(&a, "redis.yaml")).is_some());
    assert!(view.read(&path_of(&c, "pg.yaml")).is_none());
    assert!(
        view.read(&statestores::index_path(
            &c.destination,
            statestores::shard_of(&c.key)
        ))
        .is_none(),
        "empty index files are deleted"
    );
    assert!(
        view.message("HEAD")
            .starts_with("promised: 0 updated, 2 deleted (config unknown)")
    );
    assert!(
        store
            .owned("destinations/worker-2")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn drift_is_restored_and_reported<S: StateStore>(store: &S, fx: &Fixture) {
    store.apply(&batch()).await.unwrap();
    let a = owner("worker-1", "redis", "a");
    let b = owner("worker-1", "redis", "b");
    let person = Person::clone(&fx.cli_url);
    person.write(&path_of(&a, "redis.yaml"), "kind: Redis\nname: hacked\n");
    person.delete(&path_of(&b, "redis.yaml"));
    person.write(
        "destinations/worker-1/resources/mine.yaml",
        "kind: ConfigMap\n",
    );
    person.write("README.md", "hand-written\n");
    person.commit_and_push("manual edits");

    let out = store.apply(&batch()).await.unwrap();
    assert!(out.version.is_some());
    let mut drift: Vec<(String, DriftKind)> =
        out.drift.iter().map(|d| (d.path.clone(), d.kind)).collect();
    drift.sort();
    assert_eq!(
        drift,
        vec![
            (path_of(&a, "redis.yaml"), DriftKind::Modified),
            (path_of(&b, "redis.yaml"), DriftKind::Deleted),
        ]
    );
    assert_eq!(out.drift[0].owner.promise, "redis");
    let view = View::of(&fx.cli_url);
    assert_eq!(
        view.read(&path_of(&a, "redis.yaml")).unwrap(),
        "kind: Redis\nname: a\n"
    );
    assert_eq!(
        view.read(&path_of(&b, "redis.yaml")).unwrap(),
        "kind: Redis\nname: b\n"
    );
    assert_eq!(
        view.read("destinations/worker-1/resources/mine.yaml")
            .unwrap(),
        "kind: ConfigMap\n"
    );
    assert_eq!(view.read("README.md").unwrap(), "hand-written\n");
    assert!(view.message("HEAD").contains("- restored "));

    // Drift outside the change set (another placement) is restored from history too.
    let person = Person::clone(&fx.cli_url);
    let c = owner("worker-2", "postgres", "c");
    person.write(&path_of(&c, "pg.yaml"), "tampered\n");
    person.commit_and_push("tamper");
    let only_a = ChangeSet {
        writes: vec![batch().writes.remove(0)],
        ..Default::default()
    };
    let out = store.apply(&only_a).await.unwrap();
    assert_eq!(out.drift.len(), 1);
    assert_eq!(
        View::of(&fx.cli_url).read(&path_of(&c, "pg.yaml")).unwrap(),
        "kind: Postgres\nname: c\n"
    );
}

async fn foreign_push_between_fetch_and_push_is_survived(fx: &Fixture) {
    let url = fx.cli_url.clone();
    let hook: BeforePublish = Arc::new(move |attempt| {
        if attempt == 1 {
            let p = Person::clone_or_init(&url);
            p.write("people/notes.md", "their change\n");
            p.commit_and_push("someone else was faster");
        }
    });
    let store = (fx.make)(Some(hook), 5);
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!(out.conflicts_retried, 1);
    let view = View::of(&fx.cli_url);
    assert_eq!(view.head(), out.version.clone().unwrap());
    assert_eq!(view.read("people/notes.md").unwrap(), "their change\n");
    let a = owner("worker-1", "redis", "a");
    assert!(view.read(&path_of(&a, "redis.yaml")).is_some());
    // Their commit is in our history: nothing of theirs was lost.
    assert_eq!(view.commit_count(), 2);
    let msg = common::git(Some(&view.path()), &["log", "--format=%s", "HEAD~1"]);
    assert_eq!(msg.trim(), "someone else was faster");
}

async fn endless_races_end_in_conflict(fx: &Fixture) {
    let url = fx.cli_url.clone();
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let hook: BeforePublish = Arc::new(move |_| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        let p = Person::clone_or_init(&url);
        p.write("people/counter", &format!("{i}\n"));
        p.commit_and_push("race");
    });
    let store = (fx.make)(Some(hook), 3);
    match store.apply(&batch()).await {
        Err(Error::Conflict { attempts }) => assert_eq!(attempts, 3),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

impl Person {
    // Extension used by hooks: the repository may still be empty on the first apply.
}

trait CloneOrInit {
    fn clone_or_init(url: &str) -> Person;
}

impl CloneOrInit for Person {
    fn clone_or_init(url: &str) -> Person {
        if remote_head(url).is_some() {
            return Person::clone(url);
        }
        let dir = tempfile::tempdir().unwrap();
        let w = dir.path().join("w");
        common::git(None, &["init", "-q", "-b", "main", w.to_str().unwrap()]);
        common::git(Some(&w), &["remote", "add", "origin", url]);
        Person { dir }
    }
}

macro_rules! suite {
    ($name:ident, $fixture:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn batched_apply_is_one_commit() {
                let Some(fx) = $fixture else {
                    eprintln!("skipped: server not available");
                    return;
                };
                super::batched_apply_is_one_commit(&fx.store(), &fx).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn reapply_makes_no_commit() {
                let Some(fx) = $fixture else {
                    eprintln!("skipped: server not available");
                    return;
                };
                super::reapply_makes_no_commit(&fx.store(), &fx).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn prune_and_remove() {
                let Some(fx) = $fixture else {
                    eprintln!("skipped: server not available");
                    return;
                };
                super::prune_and_remove(&fx.store(), &fx).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn drift_is_restored_and_reported() {
                let Some(fx) = $fixture else {
                    eprintln!("skipped: server not available");
                    return;
                };
                super::drift_is_restored_and_reported(&fx.store(), &fx).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn foreign_push_between_fetch_and_push_is_survived() {
                let Some(fx) = $fixture else {
                    eprintln!("skipped: server not available");
                    return;
                };
                super::foreign_push_between_fetch_and_push_is_survived(&fx).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn endless_races_end_in_conflict() {
                let Some(fx) = $fixture else {
                    eprintln!("skipped: server not available");
                    return;
                };
                super::endless_races_end_in_conflict(&fx).await;
            }
        }
    };
}

suite!(local_repo, Some(local()));
suite!(git_daemon, Some(daemon()));
suite!(http_basic_auth, Some(http()));
suite!(ssh_key, ssh());
