//! `promised validate` and the config loader, end to end: broken fixtures with their exact
//! messages, the Kratix marketplace, and directory vs Git ref equivalence.

mod common;

use common::{copy_dir, git, marketplace, repo_root};

use std::path::PathBuf;

use promised::cli::{Cli, run};
use promised::config::{self, FileFilter, Source};
use promised::validate::{ValidConfig, validate};

fn load(source: Source, exclude: &[&str]) -> ValidConfig {
    let mut filter = FileFilter::default();
    filter.exclude.extend(exclude.iter().map(|s| s.to_string()));
    validate(config::load(&source, &filter, None).expect("source readable"))
}

fn diag_lines(cfg: &ValidConfig) -> Vec<String> {
    cfg.diagnostics
        .iter()
        .map(|d| format!("{}: {d}", if d.is_error() { "error" } else { "warning" }))
        .collect()
}

/// Every case under testdata/invalid/ produces exactly the diagnostics in its expected.txt.
#[test]
fn invalid_fixtures_report_exact_messages() {
    let dir = repo_root().join("testdata/invalid");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/invalid exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} invalid cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let expected = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap_or_else(|e| panic!("{name}/expected.txt: {e}"));
        let expected: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!expected.is_empty(), "{name}: expected.txt is empty");
        let actual = diag_lines(&load(Source::Dir(case.clone()), &[]));
        if actual != expected {
            failures.push(format!(
                "{name}:\n  expected: {expected:#?}\n  actual:   {actual:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{} invalid cases checked", cases.len());
}

/// One invalid request never blocks a valid one next to it in the same file.
#[test]
fn an_invalid_request_does_not_block_its_neighbour() {
    let cfg = load(
        Source::Dir(repo_root().join("testdata/invalid/request-many-errors-one-file")),
        &[],
    );
    let names: Vec<&str> = cfg.requests.iter().map(|r| r.name()).collect();
    assert_eq!(names, ["ok"]);
    assert_eq!(
        cfg.rejected.iter().filter(|r| r.id.name == "bad").count(),
        1
    );
    assert!(
        cfg.diagnostics
            .iter()
            .filter(|d| d.object.as_ref().is_some_and(|o| o.name == "bad"))
            .count()
            >= 3
    );
}

/// Every Promise and request of the Kratix marketplace parses and validates, and requests get
/// their schema defaults.
#[test]
fn marketplace_promises_and_requests_validate() {
    let Some(root) = marketplace() else {
        eprintln!("skipped: ../shared/realworld/kratix-marketplace not present");
        return;
    };
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("promise.yaml").is_file())
        .collect();
    dirs.sort();
    let (mut promises, mut requests, mut files) = (0, 0, 0);
    for d in &dirs {
        // Only the Promise and request files; internal/** holds pipeline assets.
        let cfg = load(Source::Dir(d.clone()), &["internal/**"]);
        let errors: Vec<String> = diag_lines(&cfg)
            .into_iter()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", d.display());
        let want_requests = usize::from(d.join("resource-request.yaml").is_file());
        assert_eq!(cfg.promises.len(), 1, "{}", d.display());
        assert_eq!(
            cfg.requests.len(),
            want_requests,
            "{}: requests {:?}",
            d.display(),
            cfg.rejected
        );
        promises += cfg.promises.len();
        requests += cfg.requests.len();
        files += 1 + want_requests;
    }
    println!("marketplace: {files} files, {promises} Promises and {requests} requests validated");
    assert!(
        promises >= 26 && requests >= 18,
        "{promises} promises, {requests} requests"
    );

    // Defaults: runtime's request leaves lifecycle/replicas/servicePort to the schema.
    let cfg = load(Source::Dir(root.join("runtime")), &["internal/**"]);
    let spec = &cfg.requests[0].object["spec"];
    assert_eq!(spec["lifecycle"], "dev");
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["servicePort"], 80);
    assert_eq!(
        cfg.requests[0].object["metadata"]["labels"]["kratix.io/promise-name"],
        "runtime"
    );
}

/// The redis request with an empty spec gets `size: small`, as a pipeline would see it.
#[test]
fn redis_request_gets_default_size() {
    let Some(root) = marketplace() else {
        eprintln!("skipped: marketplace not present");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        root.join("redis/promise.yaml"),
        tmp.path().join("promise.yaml"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("request.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: example\nspec:\n  unknownField: dropped\n",
    )
    .unwrap();
    let cfg = load(Source::Dir(tmp.path().to_path_buf()), &[]);
    assert!(!cfg.has_errors(), "{:?}", diag_lines(&cfg));
    let yaml = cfg.requests[0].to_yaml();
    assert_eq!(
        yaml,
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  labels:\n    kratix.io/promise-name: redis\n  name: example\n  namespace: default\nspec:\n  size: small\n"
    );
}

fn validate_json(args: &[&str]) -> (i32, serde_json::Value) {
    use clap::Parser;
    let cli = Cli::try_parse_from(
        ["promised", "validate", "--output", "json"]
            .iter()
            .chain(args),
    )
    .expect("args parse");
    let mut out = Vec::new();
    let code = run(cli, &mut out);
    let mut v: serde_json::Value = serde_json::from_slice(&out).expect("json output");
    let commit = v["commit"].take();
    v["commit"] = serde_json::Value::Null;
    (code, serde_json::json!({"report": v, "commit": commit}))
}

/// `promised validate DIR` and `promised validate --git URL --ref REF` agree, for a valid repo
/// and for an invalid one, whether the Git repo is a local path or a file:// URL.
#[test]
fn directory_and_git_ref_give_the_same_result() {
    for case in [
        "testdata/quickstart",
        "testdata/invalid/request-many-errors-one-file",
    ] {
        let src = repo_root().join(case);
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("config");
        copy_dir(&src, &repo);
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "config"]);
        // A later commit on another branch must not leak into `--ref main`.
        git(&repo, &["checkout", "-qb", "other"]);
        std::fs::write(
            repo.join("extra.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        )
        .unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "other"]);

        let (dir_code, dir_out) = validate_json(&[src.to_str().unwrap()]);
        let path = repo.to_str().unwrap().to_string();
        let url = format!("file://{path}");
        for location in [path.as_str(), url.as_str()] {
            let (git_code, git_out) = validate_json(&["--git", location, "--ref", "main"]);
            assert_eq!(dir_code, git_code, "{case} via {location}");
            assert_eq!(
                dir_out["report"], git_out["report"],
                "{case} via {location}"
            );
            let commit = git_out["commit"]
                .as_str()
                .expect("git source reports its commit");
            assert_eq!(commit.len(), 40);
        }
        assert!(dir_out["commit"].is_null());
        let expect_code = if case.contains("invalid") { 1 } else { 0 };
        assert_eq!(dir_code, expect_code, "{case}");
    }
}

/// A ref that does not exist is a clear error (exit 2), not an empty valid repo.
#[test]
fn unknown_git_ref_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q"]);
    std::fs::write(tmp.path().join("a.yaml"), "a: 1\n").unwrap();
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-qm", "x"]);
    let err = config::load(
        &Source::Git {
            url: tmp.path().to_string_lossy().into(),
            reference: "nope".into(),
        },
        &FileFilter::default(),
        None,
    )
    .expect_err("unknown ref");
    assert!(err.to_string().contains("ref \"nope\" not found"), "{err}");
}

/// A password in a config repo URL never reaches an error message.
#[test]
fn credentials_in_a_config_url_are_not_printed() {
    let err = config::load(
        &Source::Git {
            url: "http://alice:hunter2-secret@127.0.0.1:1/config.git".into(),
            reference: "main".into(),
        },
        &FileFilter::default(),
        None,
    )
    .expect_err("nothing listens on port 1");
    let text = err.to_string();
    assert!(!text.contains("hunter2-secret"), "{text}");
    assert!(text.contains("127.0.0.1:1/config.git"), "{text}");
}
