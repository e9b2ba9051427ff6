//! An ownership index file deleted behind our back (a Git remote served by `git daemon` on
//! 127.0.0.1): re-adopted from the last commit the store applied when a person deleted it,
//! left deleted when another promised (the store's own author) did; and an index in an earlier
//! version's layout, read and replaced by shards.

#![allow(missing_docs)]

mod common;

use statestores::git::{GitOptions, GitStateStoreSpec};
use statestores::{
    ChangeSet, DriftKind, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore,
};

const FILE: &str = "worker-1/dependencies/redis/configure/5058f/crd.yaml";
const KEY: &str = "worker-1/dependencies/redis/configure/5058f";

/// The index file (shard) that lists [`FILE`].
fn index() -> String {
    statestores::index_path("worker-1", statestores::shard_of(KEY))
}

fn one_file(content: &str) -> ChangeSet {
    ChangeSet {
        writes: vec![PlacementWrite {
            owner: Owner {
                key: KEY.into(),
                destination: "worker-1".into(),
                promise: "redis".into(),
                resource: None,
                pipeline: Some("configure".into()),
            }
            .into(),
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
    person.delete(&index());
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

/// A Git state store on an empty repository served by `git daemon` from `dir`, and its URL.
fn store(dir: &std::path::Path) -> (GitStateStore, String) {
    let srv = dir.join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let port = common::start_git_daemon(srv.clone());
    let url = format!("git://127.0.0.1:{port}/repo.git");
    let store = GitStateStore::open(
        "s",
        GitStateStoreSpec::new(url.clone()),
        GitOptions::new(dir.join("state")),
    )
    .unwrap();
    (store, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_index_is_re_adopted_unless_promised_deleted_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, url) = store(tmp.path());
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
    assert!(view.read(&index()).is_some_and(|i| i.contains(FILE)));
    // Still ours: a removal prunes it.
    let mut removal = ChangeSet::default();
    removal.removals.push(KEY.into());
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
    assert_eq!(view.read(&index()), None);
    assert_eq!(view.read(FILE).as_deref(), Some("edited: true\n"));
}

/// A store written by an earlier version has one index file per Destination,
/// `.promised/index/<destination>.json` (pretty-printed by the oldest ones). It is read as it
/// is: nothing is re-adopted or reported as drift, and the placements it lists stay owned.
/// The next write replaces it with shards, in the same commit as the write's own files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_versions_index_file_is_read_and_replaced_by_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, url) = store(tmp.path());
    // Two placements on worker-1, in different shards.
    const OTHER_KEY: &str = "worker-1/resources/default/redis/b/configure/5058f";
    const OTHER: &str = "worker-1/resources/default/redis/b/configure/5058f/b.yaml";
    assert_ne!(statestores::shard_of(KEY), statestores::shard_of(OTHER_KEY));
    let other_index = statestores::index_path("worker-1", statestores::shard_of(OTHER_KEY));
    let mut both = one_file("kind: CRD\n");
    let mut other = both.writes[0].clone();
    std::sync::Arc::make_mut(&mut other.owner).key = OTHER_KEY.into();
    other.files[0].path = OTHER.into();
    both.writes.push(other);
    store.apply(&both).await.unwrap();

    // What an earlier version would have written: both shards' entries in one file.
    let person = common::Person::clone(&url);
    let mut entries = Vec::new();
    for shard in [index(), other_index.clone()] {
        let text = std::fs::read_to_string(person.path().join(&shard)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        entries.extend(v["entries"].as_array().unwrap().iter().cloned());
        person.delete(&shard);
    }
    let legacy = ".promised/index/worker-1.json";
    let file = serde_json::json!({"version": 1, "destination": "worker-1", "entries": entries});
    person.write(legacy, &serde_json::to_string_pretty(&file).unwrap());
    person.commit_and_push("the index as an earlier version wrote it");

    // A change to the first placement only.
    let out = store.apply(&one_file("kind: CRD\nv: 2\n")).await.unwrap();
    assert_eq!((out.written, out.deleted), (1, 0), "{out:?}");
    assert!(out.drift.is_empty(), "{out:?}");
    let view = common::View::of(&url);
    assert_eq!(view.read(legacy), None, "replaced");
    assert!(view.read(&index()).is_some_and(|i| i.contains(FILE)));
    assert!(view.read(&other_index).is_some_and(|i| i.contains(OTHER)));
    assert_eq!(view.read(OTHER).as_deref(), Some("kind: CRD\n"));
    assert_eq!(
        view.message("HEAD").lines().next(),
        Some("promised: 1 updated, 0 deleted (config unknown)")
    );

    // The other placement is still ours: removing it deletes its file and its shard.
    let mut removal = ChangeSet::default();
    removal.removals.push(OTHER_KEY.into());
    let out = store.apply(&removal).await.unwrap();
    assert_eq!(out.deleted, 1, "{out:?}");
    let view = common::View::of(&url);
    assert_eq!(view.read(OTHER), None);
    assert_eq!(view.read(&other_index), None);
    assert_eq!(view.read(FILE).as_deref(), Some("kind: CRD\nv: 2\n"));
}

/// The verified head recorded in the persistent clone (`promised-verified-head`).
fn recorded_head(store: &GitStateStore) -> String {
    std::fs::read_to_string(store.repo_path().join("promised-verified-head")).unwrap_or_default()
}

/// A fresh process (here: a new store on the same persistent clone) trusts the head the last
/// one verified, which the clone records, only while the remote is still at it: with nothing
/// to write it finds nothing; after an outside edit it finds and repairs the drift; after the
/// remote is rewound to an older commit, that commit is checked in full; a record it cannot
/// read is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_process_trusts_only_the_head_the_last_one_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, url) = store(tmp.path());
    let reopen = || {
        GitStateStore::open(
            "s",
            GitStateStoreSpec::new(url.clone()),
            GitOptions::new(tmp.path().join("state")),
        )
        .unwrap()
    };
    let c1 = first.apply(&one_file("kind: CRD\n")).await.unwrap();
    let c1 = c1.version.unwrap();
    assert_eq!(recorded_head(&first), format!("v1 {c1}\n"));
    drop(first);

    // Nothing to write, the remote where the last process left it.
    let second = reopen();
    let out = second.apply(&ChangeSet::default()).await.unwrap();
    assert!(out.drift.is_empty() && out.version.is_none(), "{out:?}");
    assert_eq!(out.head.as_deref(), Some(c1.as_str()));
    // A write on top of it: its listing was not in memory, so the tree is read for it.
    let c2 = second.apply(&one_file("kind: CRD\nv: 2\n")).await.unwrap();
    assert_eq!((c2.written, c2.deleted), (1, 0), "{c2:?}");
    let c2 = c2.version.unwrap();
    assert_eq!(recorded_head(&second), format!("v1 {c2}\n"));
    drop(second);

    // An outside edit is a new head: found and repaired by the next process.
    let person = common::Person::clone(&url);
    person.write(FILE, "edited: true\n");
    person.commit_and_push("an edit by hand");
    let third = reopen();
    let out = third.apply(&ChangeSet::default()).await.unwrap();
    assert_eq!(out.drift.len(), 1, "{out:?}");
    assert_eq!(out.drift[0].kind, DriftKind::Modified);
    let c4 = out.version.unwrap();
    assert_eq!(recorded_head(&third), format!("v1 {c4}\n"));
    assert_eq!(
        common::View::of(&url).read(FILE).as_deref(),
        Some("kind: CRD\nv: 2\n")
    );
    drop(third);

    // The remote rewound to the first commit: not the recorded head, so checked in full (its
    // tree matches its own index: nothing to repair), and recorded in turn.
    common::git(
        Some(&person.path()),
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("{c1}:refs/heads/main"),
        ],
    );
    let fourth = reopen();
    let out = fourth.apply(&ChangeSet::default()).await.unwrap();
    assert!(out.drift.is_empty() && out.version.is_none(), "{out:?}");
    assert_eq!(out.head.as_deref(), Some(c1.as_str()));
    assert_eq!(recorded_head(&fourth), format!("v1 {c1}\n"));

    // A record that does not parse is ignored, and replaced by the next verification.
    std::fs::write(
        fourth.repo_path().join("promised-verified-head"),
        "v1 nonsense\n",
    )
    .unwrap();
    drop(fourth);
    let fifth = reopen();
    let out = fifth.apply(&ChangeSet::default()).await.unwrap();
    assert!(out.drift.is_empty() && out.version.is_none(), "{out:?}");
    assert_eq!(recorded_head(&fifth), format!("v1 {c1}\n"));
}

/// A process killed while a fetch moved the clone's tracking ref leaves the ref's lock file
/// behind; the next process removes it when it opens the store, so its fetch and write work
/// (found by `tests/crash_loop.rs`: the restart failed its write-permission check on the lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_lock_left_by_a_killed_process_is_removed_when_the_store_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let (first, url) = store(tmp.path());
    first.apply(&one_file("kind: CRD\n")).await.unwrap();
    let lock = first.repo_path().join("refs/remotes/origin/main.lock");
    std::fs::write(&lock, "").unwrap();
    drop(first);
    // Someone else moves the branch, so the fetch must update the tracking ref.
    let person = common::Person::clone(&url);
    person.write("README.md", "hello\n");
    person.commit_and_push("a file of someone else's");

    let second = GitStateStore::open(
        "s",
        GitStateStoreSpec::new(url.clone()),
        GitOptions::new(tmp.path().join("state")),
    )
    .unwrap();
    assert!(
        !lock.exists(),
        "the stale lock is removed when the store opens"
    );
    second.check().await.unwrap();
    let out = second.apply(&one_file("kind: CRD\nv: 2\n")).await.unwrap();
    assert_eq!((out.written, out.deleted), (1, 0), "{out:?}");
    assert_eq!(
        common::View::of(&url).read(FILE).as_deref(),
        Some("kind: CRD\nv: 2\n")
    );
}
