//! `promised plan` with a Destination on a BucketStateStore (s3s-fs in-process on 127.0.0.1,
//! SigV4 enforced): the plan reads the bucket and its ownership index, uploads and deletes
//! nothing, and a reconcile then deletes exactly the planned keys.

mod common;
#[path = "../statestores/tests/s3_server/mod.rs"]
mod s3_server;

use std::path::Path;

use common::{bwrap_works, copy_dir, git, repo_root};
use s3_server::{ACCESS_KEY, BUCKET, S3Server, SECRET_KEY};

const PROD_NS: &str = "state/clusters/prod/resources/default/namespace/team-b-prod/instance-configure/5058f/namespace.yaml";

async fn promised(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
            .args(&args)
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

/// Every object key in the bucket (s3s-fs keeps them as plain files) with its content.
fn bucket(root: &Path) -> Vec<(String, Vec<u8>)> {
    let base = root.join(BUCKET);
    let mut out: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(&base)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(&base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_a_bucket_and_writes_nothing() {
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&tmp.path().join("s3")).await;
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let git_store = tmp.path().join("git.git");
    git(
        tmp.path(),
        &["init", "-q", "--bare", "-b", "main", "git.git"],
    );
    std::fs::write(
        config.join("platform/state-store.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: local\nspec:\n  url: {}\n  branch: main\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: BucketStateStore\nmetadata:\n  name: s3\nspec:\n  bucketName: {BUCKET}\n  endpoint: {}\n  insecure: true\n  path: state/\n  authMethod: accessKey\n  secretRef:\n    name: minio-creds\n    namespace: default\n",
            git_store.display(),
            s3.endpoint()
        ),
    )
    .unwrap();
    // prod goes to the bucket.
    let dests = std::fs::read_to_string(config.join("platform/destinations.yaml")).unwrap();
    let (dev, prod) = dests.split_once("---").unwrap();
    let prod = prod
        .replace("kind: GitStateStore", "kind: BucketStateStore")
        .replace("name: local", "name: s3");
    std::fs::write(
        config.join("platform/destinations.yaml"),
        format!("{dev}---{prod}"),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let (c, s) = (config.to_str().unwrap(), state.to_str().unwrap());
    let (code, out, err) = promised(&["reconcile", "--config", c, "--state-dir", s]).await;
    assert_eq!(code, 0, "{out}\n{err}");

    // The prod request is removed.
    std::fs::write(
        config.join("requests/namespaces.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-a\n  namespace: default\nspec:\n  namespaceName: team-a\n",
    )
    .unwrap();
    let before = bucket(&s3.root);
    let no_state = tmp.path().join("no-state");
    for dir in [s, no_state.to_str().unwrap()] {
        let (code, out, err) = promised(&[
            "plan",
            "--config",
            c,
            "--state-dir",
            dir,
            "--output",
            "json",
        ])
        .await;
        assert_eq!(code, 2, "{out}\n{err}");
        let p: serde_json::Value = serde_json::from_str(&out).unwrap();
        let stores = p["stores"].as_array().unwrap();
        assert_eq!(stores.len(), 1, "only the bucket changes: {p:#}");
        assert_eq!(stores[0]["store"], "BucketStateStore/s3");
        assert_eq!(stores[0]["destinations"][0]["destination"], "prod");
        let files = stores[0]["destinations"][0]["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{files:#?}");
        assert_eq!(files[0]["path"], PROD_NS);
        assert_eq!(files[0]["change"], "removed");
        assert_eq!(
            bucket(&s3.root),
            before,
            "the plan uploads and deletes nothing"
        );
        // Its own metadata is never shown as a Destination file.
        assert!(!out.contains(".promised/"), "{out}");
    }
    assert!(!no_state.exists());

    // The reconcile deletes exactly that key.
    let (code, out, err) = promised(&["reconcile", "--config", c, "--state-dir", s]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let after: Vec<String> = bucket(&s3.root).into_iter().map(|(k, _)| k).collect();
    let mut want: Vec<String> = before.into_iter().map(|(k, _)| k).collect();
    want.retain(|k| k != PROD_NS);
    assert_eq!(after, want);
}
