//! The in-process push (`src/git/send_pack.rs`) against real servers on 127.0.0.1: `git
//! daemon --enable=receive-pack` (git://) and `git http-backend` behind basic auth (http://).
//! A small change is pushed without the git CLI ([`GitStateStore::push_counts`]); a lease
//! that someone else's push made stale, found from the advertisement or by the server itself,
//! is retried; a pre-receive hook's refusal carries the hook's text.

#![allow(missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use statestores::git::{GitOptions, GitStateStoreSpec, SecretRef};
use statestores::{ChangeSet, Error, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore};

const FILE: &str = "worker-1/dependencies/redis/configure/5058f/crd.yaml";

/// The files in `contents` and 40 that never change: the ownership index is then large
/// enough (over 4 KiB) to be sent as a delta against its previous version.
fn files(contents: &[(&str, &str)]) -> ChangeSet {
    let constant: Vec<(String, String)> = (0..40)
        .map(|i| {
            (
                format!("worker-1/dependencies/redis/configure/5058f/more/f{i}.yaml"),
                format!("n: {i}\n"),
            )
        })
        .collect();
    let contents: Vec<(&str, &str)> = contents
        .iter()
        .copied()
        .chain(constant.iter().map(|(p, c)| (p.as_str(), c.as_str())))
        .collect();
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
            files: contents
                .iter()
                .map(|(p, c)| FileWrite {
                    path: (*p).into(),
                    content: c.as_bytes().to_vec(),
                })
                .collect(),
        }],
        ..Default::default()
    }
}

fn set_hook(bare: &Path, body: &str) {
    let hook = bare.join("hooks/pre-receive");
    std::fs::write(&hook, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// One server: the store's spec and options, the URL a person clones (with credentials) and
/// the bare repository on disk.
struct Served {
    spec: GitStateStoreSpec,
    opts: GitOptions,
    person_url: String,
    bare: std::path::PathBuf,
    _http: Option<common::HttpServer>,
}

fn git_daemon(tmp: &Path) -> Served {
    let srv = tmp.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = srv.join("repo.git");
    common::init_bare(&bare);
    let port = common::start_git_daemon(srv);
    let url = format!("git://127.0.0.1:{port}/repo.git");
    Served {
        spec: GitStateStoreSpec::new(url.clone()),
        opts: GitOptions::new(tmp.join("state")),
        person_url: url,
        bare,
        _http: None,
    }
}

fn http(tmp: &Path) -> Served {
    let srv = tmp.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    let bare = srv.join("repo.git");
    common::init_bare(&bare);
    let server = common::HttpServer::start(&srv, "alice", "s3cret-pw");
    let d = tmp.join("secrets/git-creds");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("username"), "alice").unwrap();
    std::fs::write(d.join("password"), "s3cret-pw").unwrap();
    let mut spec = GitStateStoreSpec::new(format!("http://127.0.0.1:{}/repo.git", server.port));
    spec.secret_ref = Some(SecretRef {
        name: "git-creds".into(),
        namespace: "default".into(),
    });
    let mut opts = GitOptions::new(tmp.join("state"));
    opts.secrets_dir = Some(tmp.join("secrets"));
    Served {
        spec,
        opts,
        person_url: format!("http://alice:s3cret-pw@127.0.0.1:{}/repo.git", server.port),
        bare,
        _http: Some(server),
    }
}

async fn scenario(served: Served) {
    let Served {
        spec,
        mut opts,
        person_url,
        bare,
        ..
    } = served;
    // The head an apply starts from is trusted for an hour: the lease is what notices that
    // someone else pushed.
    opts.trust_head_for = std::time::Duration::from_secs(3600);
    let store = GitStateStore::open("inproc", spec, opts).unwrap();

    // The first push of the branch is the git CLI's.
    store.apply(&files(&[(FILE, "a: 1\n")])).await.unwrap();
    assert_eq!(store.push_counts(), (0, 1));

    // One change: in process, and the server has it.
    let out = store.apply(&files(&[(FILE, "a: 2\n")])).await.unwrap();
    assert_eq!(store.push_counts(), (1, 1));
    let view = common::View::of(&person_url);
    assert_eq!(view.head(), out.version.clone().unwrap());
    assert_eq!(view.read(FILE).unwrap(), "a: 2\n");
    let fsck = common::git_cmd(Some(&bare), &["fsck", "--strict"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stderr)
    );

    // Someone else pushes: the advertised head is not our lease, nothing is sent (Stale),
    // the retry fetches and lands on top of their commit, still in process.
    let person = common::Person::clone(&person_url);
    person.write("people/notes.md", "theirs\n");
    person.commit_and_push("a person's commit");
    let theirs = common::View::of(&person_url).head();
    let out = store.apply(&files(&[(FILE, "a: 3\n")])).await.unwrap();
    assert_eq!(out.conflicts_retried, 1, "{out:?}");
    assert_eq!(store.push_counts(), (3, 1));
    let view = common::View::of(&person_url);
    assert!(view.is_ancestor(&theirs, &view.head()));
    assert_eq!(view.read(FILE).unwrap(), "a: 3\n");
    assert_eq!(view.read("people/notes.md").unwrap(), "theirs\n");

    // The branch moves after the server advertised it, before it updates the ref (a
    // pre-receive hook moves it, once): the server refuses our old id, that is Stale too,
    // and the retry lands. The hook leaves the quarantine to update the ref for real.
    let moved_to = view.head();
    set_hook(
        &bare,
        &format!(
            "[ -e moved ] && exit 0\ntouch moved\n\
             export GIT_AUTHOR_NAME=r GIT_AUTHOR_EMAIL=r@example.com GIT_COMMITTER_NAME=r GIT_COMMITTER_EMAIL=r@example.com\n\
             env -u GIT_QUARANTINE_PATH -u GIT_OBJECT_DIRECTORY -u GIT_ALTERNATE_OBJECT_DIRECTORIES \
             sh -c 'git update-ref refs/heads/main $(git commit-tree -p {moved_to} -m racer {moved_to}^{{tree}})'\n"
        ),
    );
    let out = store.apply(&files(&[(FILE, "a: 4\n")])).await.unwrap();
    assert_eq!(out.conflicts_retried, 1, "{out:?}");
    assert!(bare.join("moved").exists());
    assert_eq!(store.push_counts(), (5, 1));
    let view = common::View::of(&person_url);
    assert_eq!(view.head(), out.version.clone().unwrap());
    assert_eq!(view.message("HEAD~1").trim(), "racer");
    assert_eq!(view.read(FILE).unwrap(), "a: 4\n");

    // A pre-receive hook refuses: Rejected with the hook's text, the branch unchanged.
    set_hook(
        &bare,
        "echo 'POLICY-42: main is frozen until Monday' >&2\nexit 1\n",
    );
    let before = common::View::of(&person_url).head();
    match store.apply(&files(&[(FILE, "a: 5\n")])).await {
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
    assert_eq!(store.push_counts(), (6, 1));
    assert_eq!(common::View::of(&person_url).head(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_changes_are_pushed_in_process_over_git_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(git_daemon(tmp.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_changes_are_pushed_in_process_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    scenario(http(tmp.path())).await;
}
