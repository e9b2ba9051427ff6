//! The main job end to end on real marketplace Promises (redis, kafka, runtime), their
//! `promise.yaml` and requests unchanged, with image overrides pointing at project-written
//! scripts (`testdata/images/`), bubblewrap sandboxes, and a `git daemon` remote on 127.0.0.1
//! as the state store.

mod common;

use std::path::{Path, PathBuf};

use common::{GitDaemon, bwrap_works, git, marketplace, promised, repo_root};

struct World {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    daemon_config: PathBuf,
    remote: PathBuf,
    checkout: PathBuf,
}

const REDIS_IMG: &str = "ghcr.io/syntasso/kratix-marketplace/redis-configure-pipeline:v0.1.0";

fn setup(mp: &Path) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("srv");
    std::fs::create_dir_all(&base).unwrap();
    let daemon = GitDaemon::start(&base);
    let url = daemon.bare_repo("state.git");

    let config = tmp.path().join("config");
    for p in ["redis", "kafka", "runtime"] {
        let d = config.join(p);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(mp.join(p).join("promise.yaml"), d.join("promise.yaml")).unwrap();
        std::fs::copy(
            mp.join(p).join("resource-request.yaml"),
            d.join("resource-request.yaml"),
        )
        .unwrap();
    }
    // One deliberately invalid request: fails alone.
    std::fs::write(
        config.join("redis/bad-request.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  size: medium\n",
    )
    .unwrap();
    std::fs::write(
        config.join("platform.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: remote\nspec:\n  url: {url}\n  branch: main\n  path: destinations\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: worker-1\n  labels:\n    environment: dev\nspec:\n  path: worker-1\n  stateStoreRef:\n    kind: GitStateStore\n    name: remote\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: backstage\n  labels:\n    environment: backstage\nspec:\n  path: backstage\n  strictMatchLabels: true\n  stateStoreRef:\n    kind: GitStateStore\n    name: remote\n"
        ),
    )
    .unwrap();
    git(&config, &["init", "-q"]);
    git(&config, &["add", "-A"]);
    git(&config, &["commit", "-qm", "platform config"]);

    let images = repo_root().join("testdata/images");
    let daemon_config = tmp.path().join("promised.yaml");
    let ov = |image: &str, dir: &str, cmd: &str, mounts: &[(&Path, &str)]| {
        let mut s = format!(
            "  {image}:\n    command: [\"{cmd}\"]\n    mounts:\n      - {{host: \"{}\", target: /image}}\n",
            images.join(dir).display()
        );
        for (host, target) in mounts {
            s.push_str(&format!(
                "      - {{host: \"{}\", target: {target}}}\n",
                host.display()
            ));
        }
        s
    };
    let mut yaml = String::from("imageOverrides:\n");
    yaml += &ov(
        REDIS_IMG,
        "redis-configure-pipeline",
        "/image/execute-pipeline",
        &[(
            &mp.join("redis/internal/configure-pipeline/resources"),
            "/tmp/transfer",
        )],
    );
    yaml += &ov(
        "ghcr.io/syntasso/kratix-marketplace/kafka-configure-pipeline:v0.1.0",
        "kafka-configure-pipeline",
        "/image/execute-pipeline",
        &[(
            &mp.join("kafka/internal/configure-pipeline/resources"),
            "/tmp/transfer",
        )],
    );
    yaml += &ov(
        "ghcr.io/syntasso/kratix-marketplace/kafka-configure-promise-pipeline:v0.1.0",
        "kafka-configure-promise-pipeline",
        "/image/execute-pipeline",
        &[(
            &mp.join("kafka/internal/configure-promise-pipeline/resources"),
            "/tmp/transfer",
        )],
    );
    yaml += &ov(
        "ghcr.io/syntasso/kratix-marketplace/nginx-ingress-configure-pipeline:v0.1.0",
        "nginx-ingress-configure-pipeline",
        "/image/execute-pipeline",
        &[(
            &mp.join("nginx-ingress/internal/configure-pipeline/dependencies"),
            "/tmp/dependencies",
        )],
    );
    yaml += &format!(
        "  ghcr.io/syntasso/kratix-marketplace/runtime-configure-pipeline:v0.1.0:\n    mounts:\n      - {{host: \"{}\", target: /usr/local/bin}}\n    workingDir: /work\n    scratch: [/work]\n",
        images.join("runtime-configure-pipeline/bin").display()
    );
    std::fs::write(&daemon_config, yaml).unwrap();
    let checkout = tmp.path().join("checkout");
    World {
        config,
        state: tmp.path().join("state"),
        daemon_config,
        remote: base.join("state.git"),
        checkout,
        _tmp: tmp,
    }
}

fn reconcile(w: &World) -> (i32, String, String) {
    promised(&[
        "reconcile",
        "--config",
        w.config.to_str().unwrap(),
        "--ref",
        "main",
        "--daemon-config",
        w.daemon_config.to_str().unwrap(),
        "--state-dir",
        w.state.to_str().unwrap(),
    ])
}

fn head(w: &World) -> String {
    git(&w.remote, &["rev-parse", "main"]).trim().to_string()
}

fn show(w: &World, path: &str) -> String {
    git(&w.remote, &["show", &format!("main:{path}")])
}

fn files(w: &World) -> Vec<String> {
    git(&w.remote, &["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn commit_config(w: &World, msg: &str) {
    git(&w.config, &["add", "-A"]);
    git(&w.config, &["commit", "-qm", msg]);
}

#[test]
fn marketplace_promises_end_to_end() {
    let Some(mp) = marketplace() else {
        eprintln!("skipped: ../shared/realworld/kratix-marketplace not present");
        return;
    };
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let w = setup(&mp);

    // First pass: everything but the invalid request lands in one commit.
    let (code, out, err) = reconcile(&w);
    assert_eq!(
        code, 1,
        "the invalid request makes the exit code 1\n{out}\n{err}"
    );
    assert!(
        err.contains("redis default/bad: spec.size: \"medium\" does not match ^(small|large)$"),
        "{err}"
    );
    assert!(
        out.contains("redis/default/example") && out.contains("kafka/default/example"),
        "{out}"
    );
    let first = head(&w);
    let all = files(&w);
    let has = |p: &str| all.iter().any(|f| f == p);

    // What lands passes the consumer lint, and Flux's view of each worker directory builds
    // with kubectl kustomize (tests/lint.rs).
    let lint_tmp = tempfile::tempdir().unwrap();
    let tree = lint_tmp.path().join("tree");
    git(
        lint_tmp.path(),
        &[
            "clone",
            "-q",
            w.remote.to_str().unwrap(),
            tree.to_str().unwrap(),
        ],
    );
    for dest in ["worker-1", "backstage"] {
        let dir = tree.join("destinations").join(dest);
        let (code, out, err) = promised(&["validate", "--lint-output", dir.to_str().unwrap()]);
        assert_eq!(code, 0, "lint of {dest}: {out}{err}");
        // Found by the lint in the marketplace's redis operator, as published.
        let expected = if dest == "worker-1" { 2 } else { 0 };
        assert!(
            out.contains(&format!("0 errors, {expected} warnings")),
            "lint of {dest}: {out}"
        );
        if dest == "worker-1" {
            assert!(
                out.contains("warning[cluster-scoped-namespace]: worker-1/dependencies/redis/promise-configure/5058f/all-redis-operator-resources.yaml: ClusterRole/default/redisoperator"),
                "{out}"
            );
        }
    }
    for part in ["dependencies", "resources"] {
        let dir = tree.join("destinations/worker-1").join(part);
        if let Some(built) = common::flux_kustomize_build(&dir) {
            built.unwrap_or_else(|e| panic!("kubectl kustomize worker-1/{part}: {e}"));
        }
    }

    // Kratix-identical paths.
    for p in [
        "destinations/worker-1/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
        "destinations/worker-1/dependencies/redis/promise-configure/5058f/all-redis-operator-resources.yaml",
        "destinations/worker-1/dependencies/redis/promise-configure/5058f/databases.spotahome.com_redisfailovers.yaml",
        "destinations/worker-1/dependencies/kafka/promise-configure/5058f/operator.yaml",
        "destinations/backstage/dependencies/kafka/promise-configure/5cfaf/backstage/backstage.yaml",
        "destinations/worker-1/resources/default/kafka/example/instance-configure/5058f/kafka-instance.yaml",
        "destinations/backstage/resources/default/kafka/example/instance-configure/5cfaf/backstage/component.yaml",
        "destinations/worker-1/resources/default/runtime/example-runtime/instance/5058f/deployment.yaml",
        "destinations/worker-1/dependencies/kratix-canary-namespace.yaml",
        "destinations/worker-1/resources/kratix-canary-configmap.yaml",
    ] {
        assert!(has(p), "missing {p}; files:\n{}", all.join("\n"));
    }
    assert!(
        !all.iter().any(|f| f.contains("/bad/")),
        "the invalid request wrote nothing"
    );
    let redis = show(
        &w,
        "destinations/worker-1/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
    );
    assert!(
        redis.contains("name: example") && redis.contains("replicas: 1"),
        "{redis}"
    );

    // Every YAML file under a destination decodes as Kubernetes objects (Flux auto-generation).
    for f in all
        .iter()
        .filter(|f| f.starts_with("destinations/") && (f.ends_with(".yaml") || f.ends_with(".yml")))
    {
        let text = show(&w, f);
        let docs =
            promised::config::parse_yaml_stream(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(!docs.is_empty(), "{f} is empty");
        for d in docs {
            for k in ["apiVersion", "kind"] {
                assert!(d.get(k).and_then(|v| v.as_str()).is_some(), "{f}: no {k}");
            }
            assert!(
                d.pointer("/metadata/name")
                    .and_then(|v| v.as_str())
                    .is_some(),
                "{f}: no metadata.name"
            );
        }
    }
    // The audit trail names the config commit and the requests.
    let msg = git(&w.remote, &["log", "-1", "--format=%B", "main"]);
    let config_commit = git(&w.config, &["rev-parse", "main"]).trim().to_string();
    assert!(
        msg.contains(&format!("Promised-Config-Commit: {config_commit}")),
        "{msg}"
    );
    for r in [
        "redis/default/example",
        "kafka/default/example",
        "runtime/default/example-runtime",
    ] {
        assert!(msg.contains(&format!("Promised-Resource: {r}")), "{msg}");
    }

    // Status: the runtime request's status.yaml url, destinations and commit.
    let (_, status, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let rt = v
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == "runtime/default/example-runtime")
        .expect("runtime status");
    assert_eq!(
        rt["status"]["fields"]["url"],
        "http://example-runtime.default.local.gd:31338"
    );
    assert_eq!(rt["status"]["destinations"][0]["destination"], "worker-1");
    assert_eq!(
        rt["status"]["commits"]["GitStateStore/remote"],
        first.as_str()
    );
    // The invalid request is Failed with the reason, and wrote nothing.
    let bad = v
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == "redis/default/bad")
        .expect("the invalid request has a status");
    let reconciled = common::condition(bad, "Reconciled");
    assert_eq!(reconciled["status"], "False", "{bad}");
    assert_eq!(reconciled["reason"], "InvalidRequest", "{bad}");
    assert_eq!(
        bad["status"]["message"],
        "Invalid: spec.size: \"medium\" does not match ^(small|large)$"
    );
    assert_eq!(bad["status"]["destinations"], serde_json::json!([]));
    assert!(
        out.lines()
            .any(|l| l.contains("redis/default/bad") && l.contains("FAILED")),
        "{out}"
    );

    // A second pass with no change: no commit, no pipeline.
    let (code, out, _) = reconcile(&w);
    assert_eq!(code, 1);
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(head(&w), first);

    // size: large → replicas 3, in a new commit.
    let req = std::fs::read_to_string(w.config.join("redis/resource-request.yaml")).unwrap();
    std::fs::write(
        w.config.join("redis/resource-request.yaml"),
        req.replace("size: small", "size: large"),
    )
    .unwrap();
    commit_config(&w, "large redis");
    let (_, out, _) = reconcile(&w);
    assert!(
        out.contains("1 pipelines run"),
        "only the changed request runs: {out}"
    );
    let second = head(&w);
    assert_ne!(second, first);
    let redis = show(
        &w,
        "destinations/worker-1/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
    );
    assert!(redis.contains("replicas: 3"), "{redis}");
    // Every commit is audit trail: this one names its config commit and only the request
    // that changed.
    let trail = |what: &str| {
        let msg = git(&w.remote, &["log", "-1", "--format=%B", "main"]);
        let config_commit = git(&w.config, &["rev-parse", "main"]).trim().to_string();
        assert!(
            msg.contains(&format!("Promised-Config-Commit: {config_commit}")),
            "{what}: {msg}"
        );
        let resources: Vec<&str> = msg
            .lines()
            .filter_map(|l| l.strip_prefix("Promised-Resource: "))
            .collect();
        assert_eq!(resources, ["redis/default/example"], "{what}: {msg}");
        assert!(msg.contains("Promised-Promise: redis"), "{what}: {msg}");
    };
    trail("size change");

    // Removing the request prunes its files in a commit.
    std::fs::remove_file(w.config.join("redis/resource-request.yaml")).unwrap();
    commit_config(&w, "remove redis request");
    let (_, out, _) = reconcile(&w);
    assert!(out.contains("deleted"), "{out}");
    assert_ne!(head(&w), second);
    assert!(
        !files(&w)
            .iter()
            .any(|f| f.contains("resources/default/redis/example")),
        "redis request files pruned"
    );
    assert!(
        files(&w).iter().any(|f| f.contains("dependencies/redis/")),
        "the Promise's dependencies stay"
    );
    trail("removal");
    let _ = &w.checkout;
}

/// The redis and namespace marketplace folders copied into a config repo as they are
/// (README, `.envrc`, `promise-release.yaml`, the example request and `internal/` with the
/// Dockerfile, scripts and the pipeline's own YAML): `promised reconcile` exits 0. The
/// pipeline's YAML is not config (no INVALID line, no request); the images run as
/// project-written stand-ins whose assets are mounted from the copied folders, so the
/// `RedisFailover` named `NAME_PLACEHOLDER` and the `Namespace` named `TBDNAMESPACE` come out
/// with the requests' names.
#[test]
fn marketplace_folders_copied_as_they_are_reconcile() {
    let Some(mp) = marketplace() else {
        eprintln!("skipped: ../shared/realworld/kratix-marketplace not present");
        return;
    };
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    for p in ["redis", "namespace"] {
        common::copy_dir(&mp.join(p), &config.join("promises").join(p));
    }
    std::fs::write(
        config.join("platform.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: local\nspec:\n  url: state.git\n  branch: main\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: dev\n  labels:\n    environment: dev\nspec:\n  path: clusters/dev\n  stateStoreRef:\n    kind: GitStateStore\n    name: local\n",
    )
    .unwrap();
    let images = repo_root().join("testdata/images");
    let resources = |p: &str| {
        config.join(format!(
            "promises/{p}/internal/configure-pipeline/resources"
        ))
    };
    let mut yaml = String::from("imageOverrides:\n");
    for (image, stand_in, promise) in [
        (REDIS_IMG, "redis-configure-pipeline", "redis"),
        (
            "ghcr.io/syntasso/kratix-marketplace/namespace-configure-pipeline:v0.1.0",
            "namespace-configure-pipeline",
            "namespace",
        ),
    ] {
        yaml += &format!(
            "  {image}:\n    command: [\"/image/execute-pipeline\"]\n    mounts:\n      - {{host: \"{}\", target: /image}}\n      - {{host: \"{}\", target: /tmp/transfer}}\n",
            images.join(stand_in).display(),
            resources(promise).display()
        );
    }
    let daemon_config = tmp.path().join("promised.yaml");
    std::fs::write(&daemon_config, yaml).unwrap();
    let state = tmp.path().join("state");
    let (code, out, err) = promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !out.contains("INVALID") && !err.contains("error"),
        "{out}\n{err}"
    );
    for key in ["redis/default/example", "namespace/default/example"] {
        assert!(
            out.lines()
                .any(|l| l.contains(key) && l.contains(" ran ") && l.contains("Reconciled")),
            "{key}: {out}"
        );
    }
    let store = state.join("state.git");
    let files: Vec<String> = git(&store, &["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    let find = |suffix: &str| {
        files
            .iter()
            .find(|f| f.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in\n{}", files.join("\n")))
            .clone()
    };
    let show = |f: &str| git(&store, &["show", &format!("main:{f}")]);
    let redis = show(&find(
        "resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
    ));
    assert!(
        redis.contains("name: example") && !redis.contains("NAME_PLACEHOLDER"),
        "{redis}"
    );
    let ns = show(&find("/namespace.yaml"));
    assert!(
        ns.contains("name: promised-namespace") && !ns.contains("TBDNAMESPACE"),
        "{ns}"
    );
    find("dependencies/redis/promise-configure/5058f/databases.spotahome.com_redisfailovers.yaml");
    // Nothing of the folders' own YAML was written as if it were config.
    assert!(
        !files.iter().any(|f| f.contains("internal/")),
        "{}",
        files.join("\n")
    );
}
