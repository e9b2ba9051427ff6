//! The S3 state store against a real S3-compatible server (s3s + s3s-fs in-process on
//! 127.0.0.1, SigV4 enforced): the Git conformance scenarios (batched apply, no-op, prune and
//! remove, drift repair, lost races, wrong credentials), the visibility guarantee under a reader
//! polling during a 1,000-object apply, and a server stop in the middle of an apply.

#![allow(missing_docs)]

mod s3_server;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use futures::TryStreamExt;
use md5::{Digest, Md5};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
use statestores::s3::{BeforeCommit, BucketStateStoreSpec, S3Options, SecretRef};
use statestores::{
    ChangeSet, CommitMeta, DriftKind, Error, FileWrite, Owner, PlacementWrite, S3StateStore,
    StateStore,
};

struct Fixture {
    server: S3Server,
    secrets: std::path::PathBuf,
    state: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start(&tmp.path().join("s3")).await;
    let secrets = tmp.path().join("secrets");
    std::fs::create_dir_all(secrets.join("s3-creds")).unwrap();
    std::fs::write(
        secrets.join("s3-creds/accessKeyID"),
        format!("{ACCESS_KEY}\n"),
    )
    .unwrap();
    std::fs::write(
        secrets.join("s3-creds/secretAccessKey"),
        format!("{SECRET_KEY}\n"),
    )
    .unwrap();
    Fixture {
        server,
        secrets,
        state: tmp.path().join("state"),
        _tmp: tmp,
    }
}

impl Fixture {
    fn spec(&self) -> BucketStateStoreSpec {
        let mut spec = BucketStateStoreSpec::new(s3_server::BUCKET, self.server.endpoint());
        spec.insecure = true;
        spec.path = "destinations/".into();
        spec.secret_ref = Some(SecretRef {
            name: "s3-creds".into(),
            namespace: "default".into(),
        });
        spec
    }

    fn opts(&self) -> S3Options {
        S3Options {
            secrets_dir: Some(self.secrets.clone()),
            state_dir: Some(self.state.clone()),
            delete_grace: std::time::Duration::from_millis(50),
            ..Default::default()
        }
    }

    fn store(&self) -> S3StateStore {
        S3StateStore::open("s3", self.spec(), self.opts()).unwrap()
    }

    fn store_with(&self, hook: Option<BeforeCommit>, attempts: u32) -> S3StateStore {
        let mut o = self.opts();
        o.before_commit = hook;
        o.max_attempts = attempts;
        S3StateStore::open("s3", self.spec(), o).unwrap()
    }

    async fn get(&self, key: &str) -> Option<String> {
        match self.server.client().get(&ObjPath::from(key)).await {
            Ok(r) => Some(String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap()),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    }

    async fn put(&self, key: &str, content: &str) {
        self.server
            .client()
            .put(
                &ObjPath::from(key),
                PutPayload::from(content.as_bytes().to_vec()),
            )
            .await
            .unwrap();
    }

    async fn delete(&self, key: &str) {
        self.server
            .client()
            .delete(&ObjPath::from(key))
            .await
            .unwrap();
    }

    async fn keys(&self) -> BTreeSet<String> {
        self.server
            .client()
            .list(None)
            .map_ok(|m| m.location.as_ref().to_owned())
            .try_collect()
            .await
            .unwrap()
    }

    async fn index(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("destinations/.promised/index.json").await.unwrap()).unwrap()
    }
}

fn owner(dest: &str, promise: &str, rr: &str) -> Owner {
    Owner {
        key: format!("{dest}/resources/default/{promise}/{rr}/configure/5058f"),
        destination: dest.into(),
        promise: promise.into(),
        resource: Some(format!("default/{rr}")),
        pipeline: Some("configure".into()),
    }
}

fn path_of(o: &Owner, name: &str) -> String {
    format!("destinations/{}/{name}", o.key)
}

fn placement(o: Owner, files: &[(&str, &str)]) -> PlacementWrite {
    PlacementWrite {
        files: files
            .iter()
            .map(|(n, c)| FileWrite {
                path: path_of(&o, n),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_apply_check_and_owned() {
    let fx = fixture().await;
    let store = fx.store();
    assert_eq!(store.conditional_writes(), None);
    store.check().await.expect("check on an empty bucket");
    assert_eq!(store.conditional_writes(), Some(true));
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!((out.written, out.deleted, out.unchanged), (4, 0, 0));
    assert_eq!(out.version.as_deref(), Some("1"));
    let a = owner("worker-1", "redis", "a");
    let c = owner("worker-2", "postgres", "c");
    assert_eq!(
        fx.get(&path_of(&a, "redis.yaml")).await.unwrap(),
        "kind: Redis\nname: a\n"
    );
    assert_eq!(
        fx.get(&path_of(&c, "pg.yaml")).await.unwrap(),
        "kind: Postgres\nname: c\n"
    );
    let idx = fx.index().await;
    assert_eq!(idx["generation"], 1);
    assert_eq!(idx["entries"].as_array().unwrap().len(), 4);
    assert_eq!(idx["pending"].as_array().unwrap().len(), 0);
    // Nothing but content and the index: no probe left behind by check().
    store.check().await.unwrap();
    let keys = fx.keys().await;
    assert_eq!(keys.len(), 5, "{keys:?}");
    assert!(keys.contains("destinations/.promised/index.json"));
    let owned = store.owned("destinations/worker-1").await.unwrap();
    assert_eq!(owned.len(), 3);
    assert!(
        owned
            .iter()
            .all(|e| e.owner.destination == "worker-1" && e.sha256.to_string().len() == 64)
    );
    assert_eq!(store.owned("").await.unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reapply_writes_nothing() {
    let fx = fixture().await;
    let store = fx.store();
    store.apply(&batch()).await.unwrap();
    let a = owner("worker-1", "redis", "a");
    let file = fx.server.file(&path_of(&a, "redis.yaml"));
    let idx_file = fx.server.file("destinations/.promised/index.json");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (m1, i1) = (mtime(&file), mtime(&idx_file));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!(out.version, None);
    assert_eq!((out.written, out.deleted, out.unchanged), (0, 0, 4));
    assert_eq!(mtime(&file), m1, "unchanged content is not rewritten");
    assert_eq!(mtime(&idx_file), i1, "the index is not rewritten");
    // A fresh store (another daemon, no cache) agrees.
    let out = fx.store().apply(&batch()).await.unwrap();
    assert_eq!(out.version, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_and_remove() {
    let fx = fixture().await;
    let store = fx.store();
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
    assert_eq!(out.version.as_deref(), Some("2"));
    assert!(fx.get(&path_of(&a, "svc.yaml")).await.is_none());
    assert!(fx.get(&path_of(&a, "redis.yaml")).await.is_some());
    assert!(fx.get(&path_of(&c, "pg.yaml")).await.is_none());
    assert!(
        store
            .owned("destinations/worker-2")
            .await
            .unwrap()
            .is_empty()
    );
    let idx = fx.index().await;
    assert_eq!(idx["pending"].as_array().unwrap().len(), 0);
    assert_eq!(idx["entries"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_restored_and_reported() {
    let fx = fixture().await;
    let store = fx.store();
    store.apply(&batch()).await.unwrap();
    let a = owner("worker-1", "redis", "a");
    let b = owner("worker-1", "redis", "b");
    fx.put(&path_of(&a, "redis.yaml"), "kind: Redis\nname: hacked\n")
        .await;
    fx.delete(&path_of(&b, "redis.yaml")).await;
    fx.put(
        "destinations/worker-1/resources/mine.yaml",
        "kind: ConfigMap\n",
    )
    .await;
    fx.put("README.md", "hand-written\n").await;

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
    assert_eq!(
        fx.get(&path_of(&a, "redis.yaml")).await.unwrap(),
        "kind: Redis\nname: a\n"
    );
    assert_eq!(
        fx.get(&path_of(&b, "redis.yaml")).await.unwrap(),
        "kind: Redis\nname: b\n"
    );
    assert_eq!(
        fx.get("destinations/worker-1/resources/mine.yaml")
            .await
            .unwrap(),
        "kind: ConfigMap\n"
    );
    assert_eq!(fx.get("README.md").await.unwrap(), "hand-written\n");

    // Drift outside the change set (another placement) is restored from the blob cache.
    let c = owner("worker-2", "postgres", "c");
    fx.put(&path_of(&c, "pg.yaml"), "tampered\n").await;
    let only_a = ChangeSet {
        writes: vec![batch().writes.remove(0)],
        ..Default::default()
    };
    let out = store.apply(&only_a).await.unwrap();
    assert_eq!(out.drift.len(), 1);
    assert_eq!(out.drift[0].kind, DriftKind::Modified);
    assert_eq!(
        fx.get(&path_of(&c, "pg.yaml")).await.unwrap(),
        "kind: Postgres\nname: c\n"
    );
    // And now nothing is left to do.
    let out = store.apply(&only_a).await.unwrap();
    assert_eq!(out.version, None);
    assert!(out.drift.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_writer_is_survived_by_rebuilding() {
    let fx = Arc::new(fixture().await);
    let fx2 = fx.clone();
    let hook: BeforeCommit = Arc::new(move |attempt| {
        if attempt == 1 {
            // Another daemon commits its own placement between our writes and our commit.
            let other = fx2.store();
            let cs = ChangeSet {
                writes: vec![placement(
                    owner("worker-3", "kafka", "k"),
                    &[("kafka.yaml", "kind: Kafka\n")],
                )],
                ..Default::default()
            };
            let out = tokio::runtime::Handle::current()
                .block_on(other.apply(&cs))
                .unwrap();
            assert_eq!(out.version.as_deref(), Some("1"));
        }
    });
    let store = fx.store_with(Some(hook), 5);
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!(out.conflicts_retried, 1);
    assert_eq!(out.version.as_deref(), Some("2"));
    // Both writers' files are owned; nothing of theirs was lost.
    let owned = store.owned("").await.unwrap();
    assert_eq!(owned.len(), 5);
    assert!(
        fx.get(&path_of(&owner("worker-3", "kafka", "k"), "kafka.yaml"))
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_races_end_in_conflict() {
    let fx = Arc::new(fixture().await);
    let fx2 = fx.clone();
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let hook: BeforeCommit = Arc::new(move |_| {
        let i = n2.fetch_add(1, Ordering::SeqCst);
        let cs = ChangeSet {
            writes: vec![placement(
                owner("worker-3", "kafka", "k"),
                &[("kafka.yaml", &format!("n: {i}\n"))],
            )],
            ..Default::default()
        };
        tokio::runtime::Handle::current()
            .block_on(fx2.store().apply(&cs))
            .unwrap();
    });
    let store = fx.store_with(Some(hook), 3);
    match store.apply(&batch()).await {
        Err(Error::Conflict { attempts }) => assert_eq!(attempts, 3),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(n.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_an_auth_error_with_the_server_text_and_no_secret() {
    let fx = fixture().await;
    let wrong = "wr0ng-s3cret-value-xyz";
    std::fs::write(fx.secrets.join("s3-creds/secretAccessKey"), wrong).unwrap();
    let store = fx.store();
    let err = store.check().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        text.contains("SignatureDoesNotMatch"),
        "server text: {text}"
    );
    assert!(text.contains("s3-creds"), "{text}");
    assert!(
        !text.contains(wrong) && !text.contains(ACCESS_KEY),
        "{text}"
    );
    let err = store.apply(&batch()).await.unwrap_err();
    let dbg = format!("{err:?} {err}");
    assert!(matches!(err, Error::Auth { .. }), "{dbg}");
    assert!(!dbg.contains(wrong) && !dbg.contains(ACCESS_KEY), "{dbg}");

    // A missing key fails at open time, naming where it looked.
    std::fs::remove_file(fx.secrets.join("s3-creds/secretAccessKey")).unwrap();
    let err = S3StateStore::open("s3", fx.spec(), fx.opts()).unwrap_err();
    assert!(
        err.to_string()
            .contains("PROMISED_SECRET_S3_CREDS_SECRETACCESSKEY"),
        "{err}"
    );
    // An endpoint with a scheme is rejected (Kratix: host[:port]).
    let mut spec = fx.spec();
    spec.endpoint = format!("http://{}", fx.server.endpoint());
    assert!(matches!(
        S3StateStore::open("s3", spec, fx.opts()),
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_into_the_metadata_directory_are_rejected() {
    let fx = fixture().await;
    let cs = ChangeSet {
        writes: vec![PlacementWrite {
            owner: owner("worker-1", "redis", "a").into(),
            files: vec![FileWrite {
                path: "destinations/.promised/index.json".into(),
                content: b"{}".to_vec(),
            }],
        }],
        ..Default::default()
    };
    assert!(matches!(
        fx.store().apply(&cs).await,
        Err(Error::InvalidPath { .. })
    ));
    let mut outside = cs.clone();
    outside.writes[0].files[0].path = "elsewhere/x.yaml".into();
    match fx.store().apply(&outside).await {
        Err(Error::InvalidPath { reason, .. }) => assert!(reason.contains("spec.path"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(fx.keys().await.is_empty());
}

// ------------------------------------------------------------ visibility and failure

const PLACEMENTS: usize = 10;
const PER: usize = 100;

/// Generation 1: 10 placements x 100 files. Generation 2 (`new`): in each placement, files
/// 0..50 keep their key with new content, 50..100 are pruned and 100..150 are added: 500 changed
/// + 500 new = 1,000 objects written and 500 deleted.
fn big(new: bool) -> ChangeSet {
    let mut writes = Vec::new();
    for p in 0..PLACEMENTS {
        let o = owner("worker-1", "bulk", &format!("p{p:02}"));
        let files: Vec<FileWrite> = if new {
            (0..PER / 2)
                .chain(PER..PER + PER / 2)
                .map(|i| FileWrite {
                    path: path_of(&o, &format!("f{i:03}.yaml")),
                    content: format!("kind: ConfigMap\nplacement: {p}\nfile: {i}\ngen: 2\n")
                        .into_bytes(),
                })
                .collect()
        } else {
            (0..PER)
                .map(|i| FileWrite {
                    path: path_of(&o, &format!("f{i:03}.yaml")),
                    content: format!("kind: ConfigMap\nplacement: {p}\nfile: {i}\ngen: 1\n")
                        .into_bytes(),
                })
                .collect()
        };
        writes.push(PlacementWrite {
            owner: o.into(),
            files,
        });
    }
    ChangeSet {
        writes,
        ..Default::default()
    }
}

/// key -> md5 of the content for a change set.
fn expected(cs: &ChangeSet) -> BTreeMap<String, String> {
    cs.writes
        .iter()
        .flat_map(|w| &w.files)
        .map(|f| (f.path.clone(), hex::encode(Md5::digest(&f.content))))
        .collect()
}

const INDEX: &str = "destinations/.promised/index.json";

async fn generation(client: &object_store::aws::AmazonS3) -> u64 {
    let r = client.get(&ObjPath::from(INDEX)).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    v["generation"].as_u64().unwrap()
}

/// Content digest of what the server serves for `key` right now (s3s-fs serves the file; files
/// are replaced by rename, so a read never sees a partial file).
fn served_md5(server: &S3Server, key: &str) -> Option<String> {
    std::fs::read(server.file(key))
        .ok()
        .map(|b| hex::encode(Md5::digest(&b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_polling_during_a_1000_object_apply_sees_only_the_guaranteed_states() {
    let fx = Arc::new(fixture().await);
    let grace = std::time::Duration::from_secs(4);
    let mut o = fx.opts();
    o.delete_grace = grace;
    let store = S3StateStore::open("s3", fx.spec(), o).unwrap();
    let old_cs = big(false);
    let new_cs = big(true);
    store.apply(&old_cs).await.unwrap();
    let old = expected(&old_cs);
    let new = expected(&new_cs);
    assert_eq!(generation(&fx.server.client()).await, 1);

    let done = Arc::new(AtomicBool::new(false));
    let (fx_r, done_r, old_r, new_r) = (fx.clone(), done.clone(), old.clone(), new.clone());
    let reader = tokio::spawn(async move {
        let client = fx_r.server.client();
        let mut stats = BTreeMap::<&'static str, usize>::new();
        loop {
            let finished = done_r.load(Ordering::SeqCst);
            let g_before = generation(&client).await;
            let started = std::time::Instant::now();
            let keys: BTreeSet<String> = client
                .list(Some(&ObjPath::from("destinations/worker-1")))
                .map_ok(|m| m.location.as_ref().to_owned())
                .try_collect()
                .await
                .unwrap();
            let took = started.elapsed();
            let g_after = generation(&client).await;
            // The guarantee covers listings shorter than the grace period. On a loaded machine
            // a listing can take longer; such a look proves nothing either way, so it is
            // counted apart instead of judged.
            if took >= grace {
                *stats
                    .entry("slower than the grace period (not judged)")
                    .or_default() += 1;
                if finished {
                    return stats;
                }
                continue;
            }
            let has_old = old_r.keys().all(|k| keys.contains(k));
            let has_new = new_r.iter().all(|(k, md5)| {
                keys.contains(k) && served_md5(&fx_r.server, k).as_ref() == Some(md5)
            });
            // The headline guarantee: complete old key set, or complete new set with new content.
            assert!(
                has_old || has_new,
                "mixed listing: {} keys, g {g_before}->{g_after}",
                keys.len()
            );
            // Nothing outside old ∪ new ever appears.
            for k in &keys {
                assert!(
                    old_r.contains_key(k) || new_r.contains_key(k),
                    "foreign key {k}"
                );
                if let Some(m) = served_md5(&fx_r.server, k) {
                    assert!(
                        old_r.get(k) == Some(&m) || new_r.get(k) == Some(&m),
                        "{k} has content of neither generation"
                    );
                }
            }
            // The index is the commit point.
            if g_after == 1 {
                assert!(has_old, "old generation named but an old key is missing");
            }
            if g_before == 2 {
                assert!(has_new, "new generation named but new content incomplete");
            }
            let class = match (has_old, has_new) {
                (true, true) => "old keys + new content (between commit and delete)",
                (true, false) if keys.len() == old_r.len() && g_after == 1 => "old or writing",
                (true, false) => "writing",
                (false, true) => "new (deleting stale or done)",
                (false, false) => unreachable!(),
            };
            *stats.entry(class).or_default() += 1;
            if finished {
                return stats;
            }
        }
    });
    // Let the reader take a few looks at the old state first.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let out = store.apply(&new_cs).await.unwrap();
    done.store(true, Ordering::SeqCst);
    let stats = reader.await.unwrap();
    eprintln!("reader observations: {stats:?}");
    assert_eq!((out.written, out.deleted), (1000, 500));
    assert_eq!(out.version.as_deref(), Some("2"));
    let judged: usize = stats
        .iter()
        .filter(|(k, _)| !k.starts_with("slower"))
        .map(|(_, v)| v)
        .sum();
    assert!(judged >= 3, "{stats:?}");
    // Final state: exactly the new set.
    let keys = fx.keys().await;
    let want: BTreeSet<String> = new.keys().cloned().chain([INDEX.to_owned()]).collect();
    assert_eq!(keys, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stop_mid_apply_is_an_error_then_the_retry_converges_without_half_state() {
    let mut fx = fixture().await;
    let store = fx.store();
    let old_cs = big(false);
    let new_cs = big(true);
    store.apply(&old_cs).await.unwrap();
    assert_eq!(store.apply(&old_cs).await.unwrap().version, None, "no-op");
    let old = expected(&old_cs);
    let new = expected(&new_cs);

    // Stop the server once ~200 of the new objects have landed.
    let root = fx.server.root.clone();
    let new_only: Vec<String> = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let apply = {
        let store = store.clone();
        let cs = new_cs.clone();
        tokio::spawn(async move { store.apply(&cs).await })
    };
    loop {
        let landed = new_only
            .iter()
            .filter(|k| root.join(s3_server::BUCKET).join(k).is_file())
            .count();
        if landed >= 200 || apply.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    fx.server.stop().await;
    let err = apply.await.unwrap().expect_err("the apply must fail");
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    eprintln!("error while the server is down: {err}");
    // While down, the next attempt fails too (the engine would put this in status and requeue).
    assert!(store.apply(&new_cs).await.is_err());
    fx.server.restart().await;
    // The index still names generation 1 and records the interrupted writes as pending.
    let idx = fx.index().await;
    assert_eq!(idx["generation"], 1);
    assert!(!idx["pending"].as_array().unwrap().is_empty());

    // Roll back to the old desired state: our half-written new keys are deleted, the old
    // content is restored, and none of it is reported as drift.
    let out = store.apply(&old_cs).await.unwrap();
    assert!(out.drift.is_empty(), "{:?}", out.drift);
    assert_no_half_state(&fx, &old).await;

    // Interrupt once more, then retry with the same change set: it converges.
    let apply = {
        let store = store.clone();
        let cs = new_cs.clone();
        tokio::spawn(async move { store.apply(&cs).await })
    };
    loop {
        let landed = new_only
            .iter()
            .filter(|k| root.join(s3_server::BUCKET).join(k).is_file())
            .count();
        if landed >= 100 || apply.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    fx.server.stop().await;
    assert!(apply.await.unwrap().is_err());
    fx.server.restart().await;
    let out = store.apply(&new_cs).await.unwrap();
    assert!(out.drift.is_empty(), "{:?}", out.drift);
    assert_no_half_state(&fx, &new).await;
    let out = store.apply(&new_cs).await.unwrap();
    assert_eq!(out.version, None);
}

/// No half state: the bucket holds exactly the expected keys plus the index, each with the
/// expected content, the index owns exactly those keys with matching sha256, and nothing is
/// pending.
async fn assert_no_half_state(fx: &Fixture, want: &BTreeMap<String, String>) {
    let keys = fx.keys().await;
    let want_keys: BTreeSet<String> = want.keys().cloned().chain([INDEX.to_owned()]).collect();
    assert_eq!(keys, want_keys);
    for (k, md5) in want {
        assert_eq!(served_md5(&fx.server, k).as_ref(), Some(md5), "{k}");
    }
    let idx = fx.index().await;
    assert_eq!(idx["pending"].as_array().unwrap().len(), 0);
    let owned: BTreeSet<String> = idx["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    let want_owned: BTreeSet<String> = want.keys().cloned().collect();
    assert_eq!(owned, want_owned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_conditional_writes_is_detected_at_check() {
    let tmp = tempfile::tempdir().unwrap();
    let server = S3Server::start_ignoring_conditions(&tmp.path().join("s3")).await;
    let mut fx = fixture().await;
    let _real = std::mem::replace(&mut fx.server, server);
    let store = fx.store();
    store.check().await.expect("only a warning by default");
    assert_eq!(store.conditional_writes(), Some(false));
    // The store still works (without protection against a second writer).
    assert!(store.apply(&batch()).await.unwrap().version.is_some());
    // And can be made strict.
    let mut o = fx.opts();
    o.require_conditional_writes = true;
    let strict = S3StateStore::open("s3", fx.spec(), o).unwrap();
    let err = strict.check().await.unwrap_err();
    assert!(
        err.to_string().contains("ignores conditional writes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_blob_cache_drift_outside_the_change_set_stays_reported_until_repaired() {
    let fx = fixture().await;
    let mut o = fx.opts();
    o.state_dir = None;
    let store = S3StateStore::open("s3", fx.spec(), o).unwrap();
    store.apply(&batch()).await.unwrap();
    let c = owner("worker-2", "postgres", "c");
    fx.put(&path_of(&c, "pg.yaml"), "tampered\n").await;
    let only_a = ChangeSet {
        writes: vec![batch().writes.remove(0)],
        ..Default::default()
    };
    for _ in 0..2 {
        let out = store.apply(&only_a).await.unwrap();
        assert_eq!(out.drift.len(), 1, "reported every time, never accepted");
        assert_eq!(fx.get(&path_of(&c, "pg.yaml")).await.unwrap(), "tampered\n");
    }
    // Writing its placement repairs it.
    let out = store.apply(&batch()).await.unwrap();
    assert_eq!(out.drift.len(), 1);
    assert_eq!(
        fx.get(&path_of(&c, "pg.yaml")).await.unwrap(),
        "kind: Postgres\nname: c\n"
    );
    assert!(store.apply(&batch()).await.unwrap().drift.is_empty());
}

/// `read_files` lists what others wrote under a prefix (HealthRecords from health agents):
/// only the wanted suffixes, never our `.promised/` metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_files_under_a_prefix() {
    let fx = fixture().await;
    let store = fx.store();
    store.apply(&batch()).await.unwrap();
    fx.put("destinations/agents/a.yaml", "kind: HealthRecord\n")
        .await;
    fx.put("destinations/agents/notes.txt", "not yaml\n").await;
    fx.put("destinations/agentsx/b.yaml", "kind: HealthRecord\n")
        .await;
    let files = store
        .read_files("destinations/agents", &[".yaml", ".yml"])
        .await
        .unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["destinations/agents/a.yaml"]);
    assert_eq!(files[0].content, b"kind: HealthRecord\n");
    let all = store.read_files("", &[]).await.unwrap();
    assert!(
        all.iter()
            .any(|f| f.path == "destinations/agents/notes.txt")
    );
    assert!(
        all.iter().all(|f| !f.path.contains(".promised/")),
        "{all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_left_by_a_killed_check_is_deleted_by_a_later_check() {
    let fx = fixture().await;
    let store = fx.store();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let hours = |h: u128| h * 3600 * 1_000_000_000;
    let old = format!(
        "destinations/.promised/write-permission-check-4242-{}",
        now - hours(2)
    );
    // Another process's check running now: its probe is left alone.
    let current = format!("destinations/.promised/write-permission-check-4343-{now}");
    fx.put(&old, "promised write-permission check\n").await;
    fx.put(&current, "promised write-permission check\n").await;
    store.check().await.expect("check");
    let keys = fx.keys().await;
    assert!(!keys.contains(&old), "{keys:?}");
    assert!(keys.contains(&current), "{keys:?}");
    // The check's own probe is gone too: only the other process's remains (no index is
    // written before the first apply).
    assert_eq!(keys.len(), 1, "{keys:?}");
}
