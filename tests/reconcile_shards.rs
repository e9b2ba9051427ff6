//! Sharding at the engine seam ([`Engine::for_shard`], docs/sharding.md), with real pipelines
//! and a real local Git state store shared by two shards: each shard's engine (its own state
//! directory and write gate) writes only its Promises' files and never deletes the other's;
//! a shard taken over by another replica (an empty state directory) rebuilds from the store's
//! ownership index without duplicating or moving anything; a Promise removed from the config
//! is deleted only through its own shard; `aggregatedYAML` Destinations are refused.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{bwrap_works, git};
use promised::cluster::shards::shard_of;
use promised::reconcile::{Engine, EngineError, PassReport, Shard};
use promised::settings::Settings;
use tokio::sync::watch;

const SHARDS: u32 = 2;

/// Six Promises `p-a` … `p-f`, each with a dependency (its Promise-level file) and one
/// request whose pipeline writes one file, on a Destination `dev` of the Git store `store`.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    store: PathBuf,
    names: Vec<String>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let config = root.join("config");
        let store = root.join("store.git");
        std::fs::create_dir_all(config.join("platform")).unwrap();
        std::fs::write(
            config.join("platform/platform.yaml"),
            format!(
                "apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata:
  name: shared
spec:
  url: {}
  branch: main
  gitAuthor: {{name: promised, email: promised@example.com}}
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata:
  name: dev
  labels: {{environment: dev}}
spec:
  path: clusters/dev
  stateStoreRef: {{kind: GitStateStore, name: shared}}
",
                store.display()
            ),
        )
        .unwrap();
        let names: Vec<String> = ["a", "b", "c", "d", "e", "f"]
            .iter()
            .map(|n| format!("p-{n}"))
            .collect();
        for n in &names {
            add_promise(&config, n);
        }
        World {
            _tmp: tmp,
            root,
            config,
            store,
            names,
        }
    }

    /// The Promises of `shard`.
    fn of(&self, shard: u32) -> Vec<&str> {
        self.names
            .iter()
            .filter(|n| shard_of(n, SHARDS) == shard)
            .map(String::as_str)
            .collect()
    }

    /// Every file on the store's `main` branch (outside the ownership index).
    fn files(&self) -> BTreeSet<String> {
        git(&self.store, &["ls-tree", "-r", "--name-only", "main"])
            .lines()
            .filter(|l| l.starts_with("clusters/"))
            .map(str::to_string)
            .collect()
    }

    fn commits(&self) -> usize {
        git(&self.store, &["rev-list", "--count", "main"])
            .trim()
            .parse()
            .unwrap()
    }

    /// A replica's engine for `shard`: its state under `<root>/<replica>/shards/<i>`.
    fn engine(&self, replica: &str, shard: u32, gate: watch::Receiver<bool>) -> Engine {
        let settings = settings(&self.root.join(replica));
        let runner = settings.runner();
        Engine::for_shard(
            settings,
            runner,
            Shard {
                index: shard,
                count: SHARDS,
            },
        )
        .unwrap()
        .with_write_gate(gate)
    }

    async fn pass(&self, engine: &mut Engine) -> Result<PassReport, EngineError> {
        let settings = settings(&self.root.join("loader"));
        let (cfg, root) =
            common::valid_config(&self.config, &self.root.join("checkouts"), &settings);
        assert!(!cfg.has_errors(), "{:?}", cfg.diagnostics);
        engine.reconcile(&cfg, &root).await
    }
}

fn settings(state: &Path) -> Settings {
    common::settings(state, None)
}

/// Promise `name` (kind `name` in `test.promised.dev`) with a dependency and a resource
/// pipeline writing `<request>.yaml`, and one request `r-<name>`.
fn add_promise(config: &Path, name: &str) {
    let dir = config.join("promises").join(name);
    std::fs::create_dir_all(dir.join("pipeline")).unwrap();
    let kind = name.replace('-', "");
    std::fs::write(
        dir.join("promise.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: {name}
spec:
  destinationSelectors:
    - matchLabels: {{environment: dev}}
  dependencies:
    - apiVersion: v1
      kind: ConfigMap
      metadata: {{name: {name}-dependency, namespace: default}}
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {{name: {kind}s.test.promised.dev}}
    spec:
      group: test.promised.dev
      names: {{kind: {kind}, plural: {kind}s, singular: {kind}}}
      scope: Namespaced
      versions:
        - name: v1alpha1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec: {{type: object}}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: write}}
          spec:
            containers:
              - name: write
                image: promised.dev/local
                command: [\"/promise/pipeline/configure\"]
"
        ),
    )
    .unwrap();
    let script = dir.join("pipeline/configure");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -eu\nprintf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: %s\\n' \"$KRATIX_OBJECT_NAME\" > \"/kratix/output/$KRATIX_OBJECT_NAME.yaml\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(config.join("requests")).unwrap();
    std::fs::write(
        config.join(format!("requests/{name}.yaml")),
        format!(
            "apiVersion: test.promised.dev/v1alpha1\nkind: {kind}\nmetadata:\n  name: r-{name}\n  namespace: default\nspec: {{}}\n"
        ),
    )
    .unwrap();
}

/// Whether `file` is output of Promise `name` (its dependency or its request's file).
fn is_of(file: &str, name: &str) -> bool {
    file.contains(&format!("/dependencies/{name}/")) || file.contains(&format!("/r-{name}/"))
}

/// The files of `files` that belong to one of `promises`.
fn owned_by(files: &BTreeSet<String>, promises: &[&str]) -> BTreeSet<String> {
    files
        .iter()
        .filter(|f| promises.iter().any(|p| is_of(f, p)))
        .cloned()
        .collect()
}

fn committed(r: &PassReport) -> bool {
    r.stores.iter().any(|s| s.commit.is_some())
}

#[tokio::test]
async fn shards_write_only_their_promises_and_never_delete_each_other() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    let (s0, s1) = (w.of(0), w.of(1));
    assert!(
        !s0.is_empty() && !s1.is_empty(),
        "the six Promises are split over both shards: {s0:?} {s1:?}"
    );
    let (_g0, gate0) = watch::channel(true);
    let (g1, gate1) = watch::channel(true);

    // Shard 0 alone: its Promises' dependencies and requests, nothing of shard 1.
    let mut e0 = w.engine("replica-a", 0, gate0);
    let r = w.pass(&mut e0).await.unwrap();
    assert!(committed(&r), "{r:#?}");
    let files = w.files();
    for p in &s0 {
        assert!(
            files
                .iter()
                .any(|f| f.contains(&format!("/dependencies/{p}/"))),
            "{p}: {files:#?}"
        );
        assert!(
            files.iter().any(|f| f.ends_with(&format!("/r-{p}.yaml"))),
            "{p}: {files:#?}"
        );
    }
    assert!(owned_by(&files, &s1).is_empty(), "{files:#?}");
    assert!(
        e0.state()
            .promises
            .keys()
            .all(|k| s0.iter().any(|p| k == &format!("promise/{p}")))
    );
    assert_eq!(e0.state().requests.len(), s0.len());

    // Shard 1 (another state directory, its own gate): adds its files, keeps shard 0's.
    let mut e1 = w.engine("replica-b", 1, gate1);
    let r = w.pass(&mut e1).await.unwrap();
    assert!(committed(&r), "{r:#?}");
    let all = w.files();
    assert_eq!(
        owned_by(&all, &s0),
        owned_by(&files, &s0),
        "shard 0's files untouched"
    );
    for p in &s1 {
        assert!(
            all.iter()
                .any(|f| f.contains(&format!("/dependencies/{p}/"))),
            "{p}: {all:#?}"
        );
        assert!(
            all.iter().any(|f| f.ends_with(&format!("/r-{p}.yaml"))),
            "{p}: {all:#?}"
        );
    }
    assert_eq!(e1.state().requests.len(), s1.len());

    // Each shard passes again seeing only its own Promises: nothing of the other is deleted.
    let r = w.pass(&mut e0).await.unwrap();
    assert!(!committed(&r), "nothing changed for shard 0: {r:#?}");
    let r = w.pass(&mut e1).await.unwrap();
    assert!(!committed(&r), "nothing changed for shard 1: {r:#?}");
    assert_eq!(w.files(), all);

    // Shard 1's gate closes (lost): its engine writes nothing; shard 0 still may.
    g1.send_replace(false);
    assert!(matches!(
        w.pass(&mut e1).await,
        Err(EngineError::LeadershipLost(_))
    ));
    assert!(w.pass(&mut e0).await.is_ok());
    drop(e1);

    // Shard 1 moves to replica c (an empty state directory): rebuilt from the ownership
    // index, filtered to its Promises; nothing duplicated or moved, shard 0 untouched.
    let before = w.files();
    let (_g1c, gate1c) = watch::channel(true);
    let mut e1c = w.engine("replica-c", 1, gate1c);
    let r = w.pass(&mut e1c).await.unwrap();
    assert_eq!(w.files(), before, "{r:#?}");
    assert_eq!(e1c.state().requests.len(), s1.len());
    assert!(
        e1c.state()
            .requests
            .keys()
            .all(|k| s1.iter().any(|p| k.starts_with(&format!("{p}/")))),
        "{:?}",
        e1c.state().requests.keys()
    );

    // A Promise of shard 1 leaves the config: shard 0's pass does not delete it, shard 1's
    // does (its dependency and its request's file), and nothing else.
    let gone = s1[0];
    std::fs::remove_dir_all(w.config.join("promises").join(gone)).unwrap();
    std::fs::remove_file(w.config.join(format!("requests/{gone}.yaml"))).unwrap();
    let commits = w.commits();
    let r = w.pass(&mut e0).await.unwrap();
    assert!(!committed(&r), "{r:#?}");
    assert_eq!(w.commits(), commits);
    assert_eq!(w.files(), before);
    w.pass(&mut e1c).await.unwrap();
    let after = w.files();
    assert!(owned_by(&after, &[gone]).is_empty(), "{after:#?}");
    let expected: BTreeSet<String> = before.iter().filter(|f| !is_of(f, gone)).cloned().collect();
    assert_eq!(after, expected);
}

#[tokio::test]
async fn a_sharded_pass_refuses_aggregated_yaml_destinations() {
    let w = World::new();
    let p = w.config.join("platform/platform.yaml");
    let text = std::fs::read_to_string(&p).unwrap().replace(
        "  path: clusters/dev\n",
        "  path: clusters/dev\n  filepath: {mode: aggregatedYAML}\n",
    );
    std::fs::write(&p, text).unwrap();
    let (_g, gate) = watch::channel(true);
    let mut e = w.engine("replica-a", 0, gate);
    match w.pass(&mut e).await {
        Err(EngineError::Sharding(msg)) => assert!(msg.contains("Destination dev"), "{msg}"),
        other => panic!("{:?}", other.map(|r| r.stores)),
    }
    assert!(!w.store.exists(), "nothing written");
}
