//! End to end: `promised reconcile` with one Destination on a Git state store (git daemon on
//! 127.0.0.1) and one on a BucketStateStore (s3s-fs in-process on 127.0.0.1, SigV4 enforced,
//! credentials from `PROMISED_SECRET_<NAME>_<KEY>` variables). Files land on both, a second pass
//! changes nothing, and a removed request is pruned from the bucket.

mod common;
#[path = "../statestores/tests/s3_server/mod.rs"]
mod s3_server;

use std::path::{Path, PathBuf};

use common::{
    GitDaemon, add_files_promise, bwrap_works, copy_dir, files_output_path, files_request, git,
    repo_root,
};
use s3_server::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

const PROD_NS: &str = "state/clusters/prod/resources/default/namespace/team-b-prod/instance-configure/5058f/namespace.yaml";
const PROD_CANARY: &str = "state/clusters/prod/dependencies/kratix-canary-namespace.yaml";
const INDEX: &str = "state/.promised/index.json";

async fn reconcile(config: &Path, state: &Path) -> (i32, String, String) {
    let (config, state) = (config.to_owned(), state.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
            .args(["reconcile", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("PROMISED_SECRET_MINIO_CREDS_ACCESSKEYID", ACCESS_KEY)
            .env("PROMISED_SECRET_MINIO_CREDS_SECRETACCESSKEY", SECRET_KEY)
            .output()
            .expect("promised runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

/// `promised status NAME --output json` (a Destination or state store) from the state
/// directory.
fn one_status(state: &Path, name: &str) -> serde_json::Value {
    let (code, out, err) = common::promised(&[
        "status",
        name,
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
        "--output",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap()
}

/// Every object key in the bucket (s3s-fs keeps them as plain files).
fn bucket_keys(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    let base: PathBuf = root.join(BUCKET);
    walk(&base, &base, &mut out);
    out.sort();
    out
}

/// The `BucketStateStore` `s3` on `server` (path `state/`, credentials from
/// `PROMISED_SECRET_MINIO_CREDS_*`), as YAML.
fn bucket_store_yaml(server: &S3Server) -> String {
    format!(
        "apiVersion: platform.kratix.io/v1alpha1\nkind: BucketStateStore\nmetadata:\n  name: s3\nspec:\n  bucketName: {BUCKET}\n  endpoint: {}\n  insecure: true\n  path: state/\n  authMethod: accessKey\n  secretRef:\n    name: minio-creds\n    namespace: default\n",
        server.endpoint()
    )
}

/// Moves the quickstart's `prod` Destination to the bucket store `s3`; `dev` gets the Git
/// store `dev_store`.
fn prod_on_the_bucket(config: &Path, dev_store: &str) {
    let dests = std::fs::read_to_string(config.join("platform/destinations.yaml")).unwrap();
    let (dev, prod) = dests.split_once("---").unwrap();
    let dev = dev.replace("name: local", &format!("name: {dev_store}"));
    let prod = prod
        .replace("kind: GitStateStore", "kind: BucketStateStore")
        .replace("name: local", "name: s3");
    std::fs::write(
        config.join("platform/destinations.yaml"),
        format!("{dev}---{prod}"),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_destination_on_git_one_on_s3() {
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&tmp.path().join("s3")).await;
    let srv = tmp.path().join("git");
    std::fs::create_dir_all(&srv).unwrap();
    let daemon = GitDaemon::start(&srv);
    let git_url = daemon.bare_repo("state.git");

    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    std::fs::write(
        config.join("platform/state-store.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: git\nspec:\n  url: {git_url}\n  branch: main\n---\n{}",
            bucket_store_yaml(&s3)
        ),
    )
    .unwrap();
    prod_on_the_bucket(&config, "git");
    let state = tmp.path().join("state");

    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 0, "{out}\n{err}");
    // Where to look: the AWS CLI on the bucket's prefix (no credentials).
    assert!(
        out.contains(&format!(
            "look: aws s3 ls --recursive s3://{BUCKET}/state/ --endpoint-url http://{}\n",
            s3.endpoint()
        )),
        "{out}"
    );
    // Git destination.
    let bare = srv.join("state.git");
    let files = git(&bare, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains(
            "clusters/dev/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml"
        ),
        "{files}"
    );
    assert!(!files.contains("clusters/prod"), "{files}");
    // S3 destination.
    let keys = bucket_keys(&s3.root);
    for k in [PROD_NS, PROD_CANARY, INDEX] {
        assert!(keys.contains(&k.to_owned()), "missing {k}: {keys:#?}");
    }
    assert!(
        !keys.iter().any(|k| k.contains("clusters/dev")),
        "{keys:#?}"
    );
    assert!(
        std::fs::read_to_string(s3.file(PROD_NS))
            .unwrap()
            .contains("team-b"),
    );
    let head = git(&bare, &["rev-parse", "main"]);
    let index = std::fs::read_to_string(s3.file(INDEX)).unwrap();
    // The bucket's status: ready, its endpoint and bucket, the generation it wrote.
    let bucket = one_status(&state, "BucketStateStore/s3");
    assert_eq!(bucket["status"], "Ready", "{bucket}");
    assert_eq!(bucket["url"], s3.endpoint(), "{bucket}");
    assert_eq!(bucket["branchOrBucket"], BUCKET, "{bucket}");
    assert!(
        bucket["lastSuccessfulWrite"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{bucket}"
    );
    assert_eq!(
        one_status(&state, "prod")["conditions"][0]["status"],
        "True"
    );

    // Second pass: nothing changes anywhere.
    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(git(&bare, &["rev-parse", "main"]), head);
    assert_eq!(std::fs::read_to_string(s3.file(INDEX)).unwrap(), index);
    assert_eq!(bucket_keys(&s3.root), keys);

    // The prod request is removed: pruned from the bucket, Git untouched.
    std::fs::write(
        config.join("requests/namespaces.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-a\n  namespace: default\nspec:\n  namespaceName: team-a\n",
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let keys = bucket_keys(&s3.root);
    assert!(!keys.iter().any(|k| k.contains("team-b-prod")), "{keys:#?}");
    assert!(keys.contains(&PROD_CANARY.to_owned()), "{keys:#?}");
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s3.file(INDEX)).unwrap()).unwrap();
    assert!(index["pending"].as_array().unwrap().is_empty());
    assert!(
        !index.to_string().contains("team-b-prod"),
        "index no longer owns it"
    );

    // The S3 server goes away; a new prod request arrives. The pass reports the store error, the
    // Git destination is unaffected, and once the server is back the next pass converges.
    s3.stop().await;
    std::fs::write(
        config.join("requests/team-c.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-c-prod\n  namespace: default\nspec:\n  namespaceName: team-c\n  environment: prod\n",
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state).await;
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("state store BucketStateStore/s3: FAILED")
            && out.contains("Connection refused"),
        "{out}\n{err}"
    );
    assert!(
        out.contains("state store GitStateStore/git: no change"),
        "{out}"
    );
    let (_, status, _) = common::promised(&["status", "--state-dir", state.to_str().unwrap()]);
    let row = status
        .lines()
        .find(|l| l.contains("team-c-prod"))
        .unwrap_or_default()
        .to_owned();
    assert!(!row.contains("Reconciled"), "{status}");
    // The bucket and its Destination are not ready, the Git one is.
    let prod = one_status(&state, "prod");
    assert_eq!(prod["conditions"][0]["status"], "False", "{prod}");
    assert_eq!(one_status(&state, "s3")["status"], "NotReady");
    assert_eq!(one_status(&state, "dev")["conditions"][0]["status"], "True");
    // The request's status carries the store's error.
    let team_c_status = common::status_row(&state, "namespace/default/team-c-prod");
    let message = team_c_status["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.starts_with("Failing: ")
            && message.contains("BucketStateStore/s3")
            && message.contains("Connection refused"),
        "{team_c_status}"
    );
    let team_c_line = |out: &str| {
        out.lines()
            .find(|l| l.contains("namespace/default/team-c-prod"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(team_c_line(&out).contains("FAILED"), "{out}");
    let team_c = "state/clusters/prod/resources/default/namespace/team-c-prod/instance-configure/5058f/namespace.yaml";
    s3.restart().await;
    // The recovery pass writes the request and reports it as it now stands: Reconciled.
    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("state store BucketStateStore/s3: commit"),
        "{out}\n{err}"
    );
    let line = team_c_line(&out);
    assert!(
        line.contains("Reconciled") && !line.contains("FAILED"),
        "{out}"
    );
    let keys = bucket_keys(&s3.root);
    assert!(keys.contains(&team_c.to_owned()), "{out}\n{err}\n{keys:#?}");
    let (_, status, _) = common::promised(&["status", "--state-dir", state.to_str().unwrap()]);
    let row = status
        .lines()
        .find(|l| l.contains("team-c-prod"))
        .unwrap_or_default();
    assert!(row.contains("Reconciled"), "{status}");
    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 0, "converged: {out}\n{err}");
    assert!(
        out.contains("state store BucketStateStore/s3: no change"),
        "{out}"
    );

    // Wrong credentials: the pass reports the store error (with the server's text), no secret.
    let (code, out, err) = {
        let (config, state) = (config.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
                .args(["reconcile", "--config"])
                .arg(&config)
                .arg("--state-dir")
                .arg(&state)
                .env("PROMISED_SECRET_MINIO_CREDS_ACCESSKEYID", ACCESS_KEY)
                .env(
                    "PROMISED_SECRET_MINIO_CREDS_SECRETACCESSKEY",
                    "not-the-s3cret",
                )
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    };
    let all = format!("{out}\n{err}");
    assert!(all.contains("SignatureDoesNotMatch"), "code {code}: {all}");
    assert!(
        !all.contains("not-the-s3cret") && !all.contains(ACCESS_KEY),
        "{all}"
    );
}

/// `promised run` with a Destination on S3, and the S3 server stopped in the middle of a large
/// apply: the request's status carries the store's error, the daemon retries by itself with the
/// failure backoff (nothing else triggers a pass), and once the server is back it converges:
/// every key the index names is there with the indexed content and nothing is left pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_retries_an_s3_apply_cut_by_a_server_stop_and_converges() {
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    const FILES: usize = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&tmp.path().join("s3")).await;
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    // prod on the bucket, dev on the local Git store; team-bulk's pipeline writes 3,000 files.
    std::fs::write(config.join("platform/bucket.yaml"), bucket_store_yaml(&s3)).unwrap();
    prod_on_the_bucket(&config, "local");
    let script = config.join("promises/namespace/pipeline/configure");
    let text = std::fs::read_to_string(&script).unwrap().replacen(
        "set -eu\n",
        &format!(
            "set -eu\nif [ \"$KRATIX_OBJECT_NAME\" = team-bulk ]; then i=0; while [ $i -lt {FILES} ]; do printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: bulk-%s\\n' $i > /kratix/output/bulk-$i.yaml; i=$((i+1)); done; fi\n"
        ),
        1,
    );
    std::fs::write(&script, text).unwrap();
    let state = tmp.path().join("state");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let log = tmp.path().join("daemon.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["run", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PROMISED_SECRET_MINIO_CREDS_ACCESSKEYID", ACCESS_KEY)
        .env("PROMISED_SECRET_MINIO_CREDS_SECRETACCESSKEY", SECRET_KEY)
        .env("PROMISED_RETRY_BACKOFF", "1s")
        .env("PROMISED_MAX_RETRY_BACKOFF", "2s")
        .env("PROMISED_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait = |what: &'static str, secs: u64, mut ok: Box<dyn FnMut() -> bool + Send>| {
        let log = log.clone();
        async move {
            let t = std::time::Instant::now();
            while !ok() {
                assert!(
                    t.elapsed() < std::time::Duration::from_secs(secs),
                    "timed out waiting for {what}:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    };
    let prod_ns = s3.file(PROD_NS);
    wait("the first pass", 60, Box::new(move || prod_ns.is_file())).await;

    // The bulk request arrives (file watch); stop the server once its first objects landed.
    std::fs::write(
        config.join("requests/team-bulk.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-bulk\n  namespace: default\nspec:\n  namespaceName: team-bulk\n  environment: prod\n",
    )
    .unwrap();
    let bulk_dir = s3
        .file("state/clusters/prod/resources/default/namespace/team-bulk/instance-configure/5058f");
    let landed = move |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    {
        let dir = bulk_dir.clone();
        wait(
            "the bulk apply to start",
            60,
            Box::new(move || landed(&dir) >= 50),
        )
        .await;
    }
    s3.stop().await;
    let at_stop = landed(&bulk_dir);
    assert!(
        at_stop < FILES,
        "the apply finished before the server stopped ({at_stop} files)"
    );

    // While the server is down: the request says why, and the daemon keeps retrying by itself.
    let failures = || log_text().matches("state store write failed").count();
    wait("two failed attempts", 30, Box::new(move || failures() >= 2)).await;
    let row = common::status_row(&state, "namespace/default/team-bulk");
    let message = row["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("BucketStateStore/s3") && !message.contains(SECRET_KEY),
        "{row}"
    );
    assert!(!log_text().contains(SECRET_KEY), "no secret in the log");

    // The server comes back: the next retry converges, with no new trigger.
    s3.restart().await;
    let index_path = s3.file(INDEX);
    let converged = move || {
        let Ok(text) = std::fs::read_to_string(&index_path) else {
            return false;
        };
        let Ok(idx) = serde_json::from_str::<serde_json::Value>(&text) else {
            return false;
        };
        idx["pending"].as_array().is_some_and(|p| p.is_empty())
            && idx["entries"].as_array().is_some_and(|e| {
                e.iter()
                    .filter(|e| e["path"].as_str().is_some_and(|p| p.contains("team-bulk")))
                    .count()
                    > FILES // the bulk files and the pipeline's namespace.yaml
            })
    };
    wait(
        "convergence after the server returned",
        25,
        Box::new(converged),
    )
    .await;
    // No half state: every indexed key holds the indexed content, and the bucket holds nothing
    // under the Destination that the index does not name (canaries included).
    let idx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s3.file(INDEX)).unwrap()).unwrap();
    let mut named = std::collections::BTreeSet::new();
    for e in idx["entries"].as_array().unwrap() {
        let key = e["path"].as_str().unwrap();
        let bytes = std::fs::read(s3.file(key)).unwrap_or_else(|err| panic!("{key}: {err}"));
        use sha2::Digest;
        assert_eq!(
            e["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes)),
            "{key}"
        );
        named.insert(key.to_owned());
    }
    for k in bucket_keys(&s3.root) {
        assert!(k == INDEX || named.contains(&k), "{k} is not in the index");
    }
    // The status follows the write (the pass records it after the store's commit).
    let state_dir = state.clone();
    wait(
        "the request's status after convergence",
        25,
        Box::new(move || {
            let row = common::status_row(&state_dir, "namespace/default/team-bulk");
            common::condition(&row, "Reconciled")["status"] == "True"
        }),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

/// Names the S3 writer refuses (characters the S3 client would not store verbatim, keys over
/// 1024 bytes with the store's path) are only known once the output is placed on a bucket:
/// each fails its own request with the key and the reason, and the bucket and the Git store
/// still get every other request's files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_s3_writer_refuses_fail_only_their_request() {
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&tmp.path().join("s3")).await;
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    std::fs::write(
        config.join("platform/state-store.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: local\nspec:\n  url: quickstart-state.git\n  branch: main\n---\n{}",
            bucket_store_yaml(&s3)
        ),
    )
    .unwrap();
    prod_on_the_bucket(&config, "local");
    add_files_promise(&config, "prod");
    let long = format!("{0}/{0}/{0}/{0}/{0}.yaml", "l".repeat(200));
    let refused: Vec<&str> = vec![
        "sub/backup~",
        "sub/100%.yaml",
        "sub/[x].yaml",
        "sub/a|b.yaml",
        "sub/what?.yaml",
        "sub/a#b.yaml",
        // (A tab or any control character is refused for every store by the output check:
        // tests/reconcile_rules.rs.)
        "sub/a`b.yaml",
        &long,
    ];
    for (i, p) in refused.iter().enumerate() {
        files_request(&config, &format!("bad-{i}"), &["app.yaml", p]);
    }
    // Plain characters: stored. (A long key under the limit is not tried: s3s-fs keeps each
    // object's metadata in a file named after the whole key, so it refuses keys over ~200 bytes.)
    files_request(&config, "good", &["app.yaml", "sub/a-b_c.d+e=f@g,h.yaml"]);
    let state = tmp.path().join("state");
    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("state store BucketStateStore/s3: commit"),
        "{out}\n{err}"
    );
    assert!(
        out.contains("state store GitStateStore/local: commit"),
        "{out}\n{err}"
    );
    let keys = bucket_keys(&s3.root);
    for rel in ["app.yaml", "sub/a-b_c.d+e=f@g,h.yaml"] {
        let k = format!("state/{}", files_output_path("clusters/prod", "good", rel));
        assert!(keys.contains(&k), "missing {k}: {keys:#?}");
    }
    assert!(keys.contains(&PROD_NS.to_owned()), "{keys:#?}");
    assert!(!keys.iter().any(|k| k.contains("files/bad-")), "{keys:#?}");
    let files = git(
        &state.join("quickstart-state.git"),
        &["ls-tree", "-r", "--name-only", "main"],
    );
    assert!(files.contains("resources/default/redis/example"), "{files}");
    for (i, p) in refused.iter().enumerate() {
        let s = common::status_row(&state, &format!("files/default/bad-{i}"));
        let msg = s["status"]["message"].as_str().unwrap_or_default();
        let key = format!(
            "state/{}",
            files_output_path("clusters/prod", &format!("bad-{i}"), p)
        );
        assert!(
            msg.starts_with("Failing: ")
                && msg.contains("BucketStateStore/s3")
                && msg.contains(&format!("{key:?}")),
            "{p}: the status names the key and why: {msg}"
        );
    }
    // The long key is the last one.
    let s = common::status_row(&state, &format!("files/default/bad-{}", refused.len() - 1));
    assert!(
        s["status"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"),
        "{s}"
    );
    // A second pass changes nothing and still reports the refused requests.
    let (code, out, err) = reconcile(&config, &state).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("0 pipelines run"), "{out}");
    assert!(out.contains("BucketStateStore/s3: no change"), "{out}");
}
