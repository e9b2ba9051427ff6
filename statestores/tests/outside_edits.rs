//! An ownership index file deleted behind our back (a Git remote served by `git daemon` on
//! 127.0.0.1): re-adopted from the last commit the store applied when a person deleted it,
//! left deleted when another promised (the store's own author) did.

#![allow(missing_docs)]

mod common;

use statestores::git::{GitOptions, GitStateStoreSpec};
use statestores::{
    ChangeSet, DriftKind, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore,
};

const FILE: &str = "worker-1/dependencies/redis/configure/5058f/crd.yaml";
const INDEX: &str = ".promised/index/worker-1.json";

fn one_file(content: &str) -> ChangeSet {
    ChangeSet {
        writes: vec![PlacementWrite {
            owner: Owner {
                key: "worker-1/dependencies/redis/configure/5058f".into(),
                destination: "worker-1".into(),
                promise: "redis".into(),
                resource: None,
                pipeline: Some("configure".into()),
            },
            files: vec![FileWrite {
                path: FILE.into(),
                content: content.as_bytes().to_vec(),
            }],
        }],
        ..Default::default()
    }
}

/// Deletes the index and edits our file in a commit by `author` (`name <email>`), pushed.
fn delete_index_and_edit(url: &str, author: (&str, &str)) {
    let person = common::Person::clone(url);
    person.delete(INDEX);
    person.write(FILE, "edited: true\n");
    let w = person.path();
    common::git(Some(&w), &["add", "-A"]);
    common::git(
        Some(&w),
        &[
            "-c",
            &format!("user.name={}", author.0),
            "-c",
            &format!("user.email={}", author.1),
            "commit",
            "-q",
            "-m",
            "index deleted",
        ],
    );
    common::git(Some(&w), &["push", "-q", "origin", "HEAD:main"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_re_adopted_unless_promised_deleted_it() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let port = common::start_git_daemon(srv.clone());
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let store = GitStateStore::open(
        "s",
        GitStateStoreSpec::new(url.clone()),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap();
    store.apply(&one_file("kind: CRD\n")).await.unwrap();

    // A person: the index comes back and the edit is repaired (drift), with nothing else to
    // write.
    delete_index_and_edit(&url, ("Person", "person@example.com"));
    let out = store.apply(&ChangeSet::default()).await.unwrap();
    assert_eq!(out.drift.len(), 1, "{out:?}");
    assert_eq!(out.drift[0].path, FILE);
    assert_eq!(out.drift[0].kind, DriftKind::Modified);
    let view = common::View::of(&url);
    assert_eq!(view.read(FILE).as_deref(), Some("kind: CRD\n"));
    assert!(view.read(INDEX).is_some_and(|i| i.contains(FILE)));
    // Still ours: a removal prunes it.
    let mut removal = ChangeSet::default();
    removal
        .removals
        .push("worker-1/dependencies/redis/configure/5058f".into());
    let out = store.apply(&removal).await.unwrap();
    assert_eq!(out.deleted, 1, "{out:?}");
    assert_eq!(common::View::of(&url).read(FILE), None);

    // Another promised (the store's author, `kratix` with no email by default) removed it:
    // its removal stands.
    store.apply(&one_file("kind: CRD\n")).await.unwrap();
    delete_index_and_edit(&url, ("kratix", ""));
    let out = store.apply(&ChangeSet::default()).await.unwrap();
    assert!(out.drift.is_empty() && out.version.is_none(), "{out:?}");
    let view = common::View::of(&url);
    assert_eq!(view.read(INDEX), None);
    assert_eq!(view.read(FILE).as_deref(), Some("edited: true\n"));
}
