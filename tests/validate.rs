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

/// HealthRecords are classified and kept with their data; `state` defaults to `unknown`
/// (kratix-contract.md §5.5).
#[test]
fn health_records_are_loaded() {
    use promised::model::HealthState;
    let cfg = load(
        Source::Dir(repo_root().join("testdata/invalid/health-record-unknown-promise")),
        &[],
    );
    assert!(!cfg.has_errors(), "{:?}", diag_lines(&cfg));
    let records: Vec<_> = cfg
        .health_records
        .iter()
        .map(|h| {
            (
                h.id.to_string(),
                h.object.data.state,
                h.object.data.last_run,
                h.object.data.details.clone(),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            (
                "HealthRecord default/redis-example".to_string(),
                HealthState::Healthy,
                Some(1767225600),
                Some(serde_json::json!({"replicas": 3}))
            ),
            (
                "HealthRecord default/postgres-example".to_string(),
                HealthState::Unknown,
                None,
                None
            ),
        ]
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
    // Promises nest (sql/aws, sql/azure, sql/gcp), so walk the whole tree.
    let mut dirs = Vec::new();
    promise_dirs(&root, &mut dirs);
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
    eprintln!("marketplace: {files} files, {promises} Promises and {requests} requests validated");
    // `find -name promise.yaml` and `find -name resource-request.yaml` at kratix-marketplace
    // @ 192cacf3 (kratix-contract.md §8).
    assert_eq!(
        (promises, requests),
        (29, 23),
        "{:#?}",
        dirs.iter()
            .map(|d| d.strip_prefix(&root).unwrap())
            .collect::<Vec<_>>()
    );

    // Defaults: runtime's request leaves lifecycle/replicas/servicePort to the schema.
    let cfg = load(Source::Dir(root.join("runtime")), &["internal/**"]);
    let spec = &cfg.requests[0].object()["spec"];
    assert_eq!(spec["lifecycle"], "dev");
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["servicePort"], 80);
    assert_eq!(
        cfg.requests[0].object()["metadata"]["labels"]["kratix.io/promise-name"],
        "runtime"
    );
}

/// Every directory under `dir` holding a `promise.yaml`, skipping pipeline assets (`internal/`).
fn promise_dirs(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    if dir.join("promise.yaml").is_file() {
        out.push(dir.to_path_buf());
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir()
            && p.file_name()
                .is_some_and(|n| n != "internal" && n != ".git")
        {
            promise_dirs(&p, out);
        }
    }
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

/// A Promise whose CRD lists a non-storage version first: requests are admitted with the
/// storage version's schema (defaults, pruning, validation) and stored at the storage version,
/// whichever served version they were written in (kratix-contract.md §1.1).
#[test]
fn requests_are_admitted_with_the_storage_version_schema() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("promise.yaml"),
        promise_with_api(
            "db",
            r#"        - name: v1alpha1
          served: true
          storage: false
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {type: string, enum: [small, large], default: small}
                    old: {type: string}
        - name: v1beta1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {type: string, enum: [S, M, L], default: M}
                    tier: {type: string, default: gold}
"#,
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("requests.yaml"),
        "apiVersion: example.com/v1beta1\nkind: db\nmetadata: {name: new}\nspec: {size: L}\n---\n\
         apiVersion: example.com/v1alpha1\nkind: db\nmetadata: {name: old}\nspec: {old: x}\n---\n\
         apiVersion: example.com/v1alpha1\nkind: db\nmetadata: {name: bad}\nspec: {size: small}\n",
    )
    .unwrap();
    let cfg = load(Source::Dir(tmp.path().to_path_buf()), &[]);
    assert_eq!(
        diag_lines(&cfg),
        ["error: requests.yaml[2] db default/bad: spec.size: \"small\" is not one of: S, M, L"]
    );
    let by_name = |n: &str| {
        cfg.requests
            .iter()
            .find(|r| r.name() == n)
            .unwrap_or_else(|| panic!("request {n} admitted"))
    };
    // Written in the storage version.
    assert_eq!(by_name("new").object()["apiVersion"], "example.com/v1beta1");
    assert_eq!(
        by_name("new").object()["spec"],
        serde_json::json!({"size": "L", "tier": "gold"})
    );
    // Written in the other served version: stored as v1beta1, the v1alpha1-only field pruned
    // and the v1beta1 defaults applied (not v1alpha1's `size: small`).
    let old = by_name("old");
    assert_eq!(old.object()["apiVersion"], "example.com/v1beta1");
    assert_eq!(
        old.object()["spec"],
        serde_json::json!({"size": "M", "tier": "gold"})
    );
    assert!(
        old.to_yaml()
            .starts_with("apiVersion: example.com/v1beta1\n")
    );
}

/// A Promise serving `example.com` `<kind>` (plural `<kind>s`) with the given
/// `spec.api.spec.versions` list (YAML, indented as list items under `versions:`).
fn promise_with_api(kind: &str, versions: &str) -> String {
    format!(
        "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata:\n  name: {kind}\nspec:\n  api:\n    apiVersion: apiextensions.k8s.io/v1\n    kind: CustomResourceDefinition\n    metadata:\n      name: {kind}s.example.com\n    spec:\n      group: example.com\n      names: {{kind: {kind}, plural: {kind}s, singular: {kind}}}\n      scope: Namespaced\n      versions:\n{versions}"
    )
}

/// The `app` API: one version whose spec keeps every field.
const APP_VERSIONS: &str = r#"        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
"#;

fn app_request(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: app\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

/// `.yml` files are read like `.yaml`; `include`/`exclude` globs choose the files, on a
/// directory and on a Git ref alike; a bad glob is an error naming it.
#[test]
fn yml_files_and_include_exclude_globs() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    std::fs::create_dir_all(repo.join("requests/drafts")).unwrap();
    std::fs::create_dir_all(repo.join("templates")).unwrap();
    std::fs::write(
        repo.join("promise.yml"),
        promise_with_api("app", APP_VERSIONS),
    )
    .unwrap();
    std::fs::write(repo.join("requests/a.yml"), app_request("a", "  x: 1\n")).unwrap();
    std::fs::write(repo.join("requests/b.yaml"), app_request("b", "  x: 2\n")).unwrap();
    // Would be a duplicate of `a` and an invalid name: only harmless when excluded.
    std::fs::write(
        repo.join("requests/drafts/a.yaml"),
        app_request("a", "  x: 3\n") + "---\n" + &app_request("Not_Valid", "  x: 4\n"),
    )
    .unwrap();
    // Neither .yaml nor .yml: never read (it is not even YAML).
    std::fs::write(repo.join("templates/app.yaml.tmpl"), "{{ .Values }}: [\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "config"]);

    let sources = [
        Source::Dir(repo.clone()),
        Source::Git {
            url: repo.to_string_lossy().into(),
            reference: "main".into(),
        },
    ];
    let summary = |filter: &FileFilter, source: &Source| {
        let cfg = validate(config::load(source, filter, Some(&tmp.path().join("cache"))).unwrap());
        let promises: Vec<String> = cfg.promises.iter().map(|p| p.name().to_string()).collect();
        let requests: Vec<String> = cfg
            .requests
            .iter()
            .map(|r| format!("{} {}", r.origin, r.name()))
            .collect();
        (promises, requests, diag_lines(&cfg))
    };
    for source in &sources {
        // Default: **/*.yaml and **/*.yml; drafts/ included, so `a` is a duplicate.
        let (promises, requests, diags) = summary(&FileFilter::default(), source);
        assert_eq!(promises, ["app"], "{source}");
        assert_eq!(requests, ["requests/b.yaml[0] b"], "{source}");
        assert_eq!(
            diags,
            [
                "error: requests/a.yml[0] app default/a: metadata.name: duplicate object: also defined at requests/drafts/a.yaml[0]",
                "error: requests/drafts/a.yaml[0] app default/a: metadata.name: duplicate object: also defined at requests/a.yml[0]",
                "error: requests/drafts/a.yaml[1] app namespace default name \"Not_Valid\": metadata.name: \"Not_Valid\" must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character",
            ],
            "{source}"
        );
        // Excluding the drafts leaves a clean repo.
        let mut filter = FileFilter::default();
        filter.exclude.push("requests/drafts/**".into());
        let (_, requests, diags) = summary(&filter, source);
        assert_eq!(
            requests,
            ["requests/a.yml[0] a", "requests/b.yaml[0] b"],
            "{source}"
        );
        assert!(diags.is_empty(), "{source}: {diags:?}");
        // Only `.yaml` files directly under requests/: the Promise (promise.yml) and the
        // drafts are not read.
        let filter = FileFilter {
            include: vec!["requests/*.yaml".into()],
            exclude: vec![],
        };
        let (promises, requests, diags) = summary(&filter, source);
        assert!(promises.is_empty() && requests.is_empty(), "{source}");
        assert_eq!(
            diags,
            [
                "warning: requests/b.yaml[0] app b: kind: no Promise serves example.com/v1 app and the file is in no Promise folder; skipped (if it is not config, exclude it: `exclude: [\"requests/**\"]` in the daemon config, or `promised validate --exclude 'requests/**'`)"
            ],
            "{source}"
        );
    }
    let bad = FileFilter {
        include: vec!["requests/[.yaml".into()],
        exclude: vec![],
    };
    let err = config::load(&sources[0], &bad, None).expect_err("invalid glob");
    assert!(err.to_string().contains("requests/[.yaml"), "{err}");
}

/// Strings that a YAML 1.1 reader (Argo CD, Flux, PyYAML, go-yaml v2) would turn into booleans,
/// numbers, nulls or timestamps are quoted in `/kratix/input/object.yaml`, and the output reads
/// back to the same strings.
#[test]
fn object_yaml_quotes_yaml_1_1_lookalikes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("promise.yaml"),
        promise_with_api("app", APP_VERSIONS),
    )
    .unwrap();
    let values = [
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "Y",
        "NO",
        "True",
        "null",
        "~",
        "0755",
        "0o17",
        "0x1F",
        "1e3",
        "12:30",
        "1_000",
        ".inf",
        "-.5",
        "2001-12-14",
        "",
        " padded",
    ];
    let spec: String = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("  k{i:02}: {}\n", serde_json::Value::from(*v)))
        .collect();
    std::fs::write(
        tmp.path().join("request.yaml"),
        app_request("quoted", &spec),
    )
    .unwrap();
    let cfg = load(Source::Dir(tmp.path().to_path_buf()), &[]);
    assert!(!cfg.has_errors(), "{:?}", diag_lines(&cfg));
    let yaml = cfg.requests[0].to_yaml();
    // Each one double-quoted, exactly as written in the request (JSON string syntax).
    assert!(yaml.ends_with(&format!("spec:\n{spec}")), "{yaml}");
    let back = promised::config::parse_yaml_stream(&yaml).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(back[0]["spec"][format!("k{i:02}")], *v, "k{i:02}");
    }
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

/// The loader the daemon keeps: a later commit reuses what did not change, only Promise
/// folders are exported for pipelines, a commit that changes no Promise folder reuses the
/// export as it is, and only the newest two exports stay on disk.
#[test]
fn loader_exports_promise_folders_once_per_content_and_keeps_the_newest_two() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &repo);
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "c1"]);
    let checkouts = tmp.path().join("checkouts");
    let url = format!("file://{}", repo.display());
    let mut loader = config::Loader::new(
        Source::Git {
            url,
            reference: "main".into(),
        },
        &FileFilter::default(),
        Some(tmp.path().join("cache")),
        Some(checkouts.clone()),
    )
    .unwrap();
    let script_rel = "promises/redis/pipeline/configure";
    let mut roots = Vec::new();
    // Rounds 1 and 2 edit a request, 3 and 4 the redis Promise's script.
    for round in 0..5 {
        if (1..=2).contains(&round) {
            std::fs::write(
                repo.join("requests/redis-example.yaml"),
                format!(
                    "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: example\nspec:\n  size: {}\n",
                    if round == 1 { "large" } else { "small" }
                ),
            )
            .unwrap();
        } else if round > 2 {
            let script = repo.join(script_rel);
            let text = std::fs::read_to_string(&script).unwrap();
            std::fs::write(&script, format!("{text}# edit {round}\n")).unwrap();
        }
        if round > 0 {
            git(&repo, &["commit", "-qam", &format!("c{}", round + 1)]);
        }
        let commit = loader.fetch().unwrap().expect("a Git source has a commit");
        let loaded = loader.load().unwrap();
        assert_eq!(loaded.objects.commit.as_deref(), Some(commit.as_str()));
        assert_eq!(loaded.root.parent(), Some(checkouts.as_path()));
        let cfg = validate(loaded.objects);
        assert!(!cfg.has_errors(), "{:?}", cfg.diagnostics);
        let size = cfg
            .requests
            .iter()
            .find(|r| r.name() == "example")
            .map(|r| r.object()["spec"]["size"].clone())
            .unwrap();
        assert_eq!(size, if round == 1 { "large" } else { "small" });
        // Promise folders with their scripts, executable, as in this commit; nothing else.
        let script = loaded.root.join(script_rel);
        assert_eq!(
            std::fs::read_to_string(&script).unwrap(),
            std::fs::read_to_string(repo.join(script_rel)).unwrap(),
            "round {round}"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_ne!(
            std::fs::metadata(&script).unwrap().permissions().mode() & 0o111,
            0
        );
        assert!(
            loaded
                .root
                .join("promises/namespace/promise.yaml")
                .is_file()
        );
        assert!(!loaded.root.join("requests").exists());
        assert!(!loaded.root.join("platform").exists());
        roots.push(loaded.root);
        // Let modification times differ so "newest" is well defined.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(roots[0], roots[1], "a request edit reuses the export");
    assert_eq!(roots[0], roots[2]);
    assert_ne!(roots[2], roots[3], "a script edit makes a new one");
    assert_ne!(roots[3], roots[4]);
    let mut left: Vec<PathBuf> = std::fs::read_dir(&checkouts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    let mut want = vec![roots[3].clone(), roots[4].clone()];
    want.sort();
    assert_eq!(
        left, want,
        "the oldest export is removed, and nothing else is left"
    );
}

/// The admissions cache (`validate_with`, what the daemon uses between passes) is invisible:
/// each pass over a Git source gives what a fresh `validate` gives, a Promise API change
/// re-admits unchanged requests (new default), and a cached rejection stays until fixed.
#[test]
fn admissions_cache_matches_a_fresh_validation_pass_after_pass() {
    use promised::validate::{Admissions, validate_with};
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    std::fs::create_dir_all(repo.join("requests")).unwrap();
    let versions = |default: &str| {
        format!(
            r#"        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {{type: string, default: {default}, enum: [small, large]}}
"#
        )
    };
    std::fs::write(
        repo.join("promise.yaml"),
        promise_with_api("app", &versions("small")),
    )
    .unwrap();
    std::fs::write(repo.join("requests/a.yaml"), app_request("a", "  {}")).unwrap();
    std::fs::write(
        repo.join("requests/b.yaml"),
        app_request("b", "  size: huge"),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let commit = |msg: &str| {
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", msg]);
    };
    commit("one");
    let source = Source::Git {
        url: repo.to_string_lossy().into(),
        reference: "main".into(),
    };
    let filter = FileFilter::default();
    let mut loader = config::Loader::new(
        source.clone(),
        &filter,
        Some(tmp.path().join("cache")),
        Some(tmp.path().join("checkouts")),
    )
    .unwrap();
    let mut cache = Admissions::default();
    // (name, size or "-") of each admitted request, and the error lines.
    let summary = |cfg: &ValidConfig| {
        let admitted: Vec<String> = cfg
            .requests
            .iter()
            .map(|r| {
                let size = r.object()["spec"]["size"]
                    .as_str()
                    .unwrap_or("-")
                    .to_string();
                format!("{}={size}", r.name())
            })
            .collect();
        (admitted, diag_lines(cfg))
    };
    let mut pass = |cache: &mut Admissions| {
        loader.fetch().unwrap();
        let cached = validate_with(loader.load().unwrap().objects, cache);
        let fresh = validate(config::load(&source, &filter, None).unwrap());
        assert_eq!(summary(&cached), summary(&fresh), "cache is invisible");
        summary(&cached)
    };

    let (admitted, errors) = pass(&mut cache);
    assert_eq!(admitted, ["a=small"]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("requests/b.yaml") && e.contains("huge")),
        "{errors:?}"
    );
    // Same commit again: everything from the cache, same answer.
    let (admitted, errors2) = pass(&mut cache);
    assert_eq!((admitted, errors2), (vec!["a=small".to_string()], errors));

    // The Promise's default changes; request a's text does not: it is admitted again.
    std::fs::write(
        repo.join("promise.yaml"),
        promise_with_api("app", &versions("large")),
    )
    .unwrap();
    commit("default large");
    let (admitted, _) = pass(&mut cache);
    assert_eq!(admitted, ["a=large"]);

    // b is fixed; the same text under a second file name is a duplicate of it.
    std::fs::write(
        repo.join("requests/b.yaml"),
        app_request("b", "  size: small"),
    )
    .unwrap();
    commit("fix b");
    let (admitted, errors) = pass(&mut cache);
    assert_eq!(admitted, ["a=large", "b=small"]);
    assert!(errors.is_empty(), "{errors:?}");
    std::fs::copy(
        repo.join("requests/b.yaml"),
        repo.join("requests/b-copy.yaml"),
    )
    .unwrap();
    commit("copy b");
    let (admitted, errors) = pass(&mut cache);
    assert_eq!(admitted, ["a=large"]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("requests/b-copy.yaml") && e.contains("duplicate object")),
        "{errors:?}"
    );
}

/// A daemon fetches its config remote for every commit, and every fetch with new objects adds
/// a pack to the config cache: the loader runs `git gc` when they pile up, so the cache stays
/// small and every commit still loads.
#[test]
fn config_cache_packs_stay_bounded_over_many_fetches() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    std::fs::create_dir_all(repo.join("requests")).unwrap();
    std::fs::write(
        repo.join("promise.yaml"),
        promise_with_api("app", APP_VERSIONS),
    )
    .unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    let source = Source::Git {
        url: format!("file://{}", repo.display()),
        reference: "main".into(),
    };
    let cache = tmp.path().join("cache");
    let mut loader =
        config::Loader::new(source, &FileFilter::default(), Some(cache.clone()), None).unwrap();
    let packs = || -> usize {
        std::fs::read_dir(&cache)
            .unwrap()
            .filter_map(Result::ok)
            .map(|d| d.path().join("objects/pack"))
            .filter(|p| p.is_dir())
            .flat_map(|p| std::fs::read_dir(p).unwrap().filter_map(Result::ok))
            .filter(|e| e.path().extension().is_some_and(|x| x == "pack"))
            .count()
    };
    let mut most = 0;
    for i in 0..40 {
        std::fs::write(
            repo.join(format!("requests/r{i}.yaml")),
            app_request(&format!("r{i}"), "  n: 1"),
        )
        .unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", &format!("request {i}")]);
        loader.fetch().unwrap();
        let cfg = validate(loader.load().unwrap().objects);
        assert_eq!(cfg.requests.len(), i + 1, "commit {i} loads every request");
        most = most.max(packs());
    }
    assert!(most > 10, "fetches did add packs ({most})");
    assert!(packs() <= 26, "{} packs after 40 fetches", packs());
}

/// Reading commit after commit with the previous listing (what the daemon's loader does) gives
/// exactly what a fresh read gives: files added, edited, deleted, moved between directories,
/// a directory replaced by a file, executable bits, and files the globs leave out.
#[test]
fn incremental_tree_listing_matches_a_fresh_read() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    let w = |rel: &str, text: &str| {
        let p = repo.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("promise.yaml", &promise_with_api("app", APP_VERSIONS));
    for d in ["a", "b", "c"] {
        for i in 0..3 {
            w(
                &format!("requests/{d}/r{i}.yaml"),
                &app_request(&format!("{d}{i}"), "  n: 1"),
            );
        }
    }
    w("requests/a/notes.txt", "not yaml");
    w("drafts/x.yaml", &app_request("x", "  n: 1"));
    git(&repo, &["init", "-q", "-b", "main"]);
    let mut filter = FileFilter::default();
    filter.exclude.push("drafts/**".into());
    let filter = filter.compile().unwrap();
    let opened = config::GitRepo::open(repo.to_str().unwrap(), None, &Default::default()).unwrap();
    let mut listing = None;
    let steps: Vec<Box<dyn Fn()>> = vec![
        Box::new(|| {}),
        Box::new(|| w("requests/b/r1.yaml", &app_request("b1", "  n: 2"))),
        Box::new(|| {
            std::fs::remove_file(repo.join("requests/c/r2.yaml")).unwrap();
            w("requests/d/new.yml", &app_request("d0", "  n: 1"));
        }),
        Box::new(|| {
            std::fs::rename(
                repo.join("requests/a/r0.yaml"),
                repo.join("requests/b/moved.yaml"),
            )
            .unwrap();
            w("drafts/y.yaml", &app_request("y", "  n: 1"));
        }),
        Box::new(|| {
            std::fs::remove_dir_all(repo.join("requests/d")).unwrap();
            w("requests/d", "a file where a directory was\n");
            use std::os::unix::fs::PermissionsExt;
            let script = repo.join("requests/b/r2.yaml");
            std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }),
        Box::new(|| std::fs::write(repo.join("README.md"), "only a readme\n").unwrap()),
    ];
    let mut seen = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        step();
        git(&repo, &["add", "-A"]);
        git(
            &repo,
            &["commit", "-qm", &format!("step {i}"), "--allow-empty"],
        );
        let commit = opened.resolve("main").unwrap();
        let incremental = opened
            .read_commit_with(commit, &filter, |_| true, &mut listing)
            .unwrap();
        let fresh = opened.read_commit(commit, &filter, |_| true).unwrap();
        assert_eq!(incremental, fresh, "step {i}");
        seen.push(fresh.iter().map(|f| f.path.clone()).collect::<Vec<_>>());
    }
    // The steps did what they say (so the comparison covered them).
    assert!(seen[2].contains(&"requests/d/new.yml".to_string()));
    assert!(!seen[2].contains(&"requests/c/r2.yaml".to_string()));
    assert!(seen[3].contains(&"requests/b/moved.yaml".to_string()));
    assert!(
        seen.iter()
            .flatten()
            .all(|p| !p.starts_with("drafts/") && !p.ends_with(".txt"))
    );
    assert!(!seen[4].iter().any(|p| p.starts_with("requests/d")));
    let commit = opened.resolve("main").unwrap();
    let exec = opened.read_commit(commit, &filter, |_| true).unwrap();
    assert!(
        exec.iter()
            .any(|f| f.path == "requests/b/r2.yaml" && f.executable)
    );
}

/// `env[].valueFrom` checks that need the daemon config (`promised validate --daemon-config`):
/// a `secretKeyRef` to a Secret `pipelineSecrets.allow` does not list for the Promise is an
/// error naming the Promise, pipeline, container and variable, the Promise is rejected and
/// its requests with it; once allowed (and the ConfigMap directory configured) the repo is
/// valid. Without `--daemon-config` only the shape is checked.
#[test]
fn value_from_secrets_are_checked_against_the_daemon_config() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    std::fs::create_dir_all(&repo).unwrap();
    let mut promise = promise_with_api("app", APP_VERSIONS);
    promise.push_str(
        "  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {name: configure}
          spec:
            containers:
              - name: render
                image: example.com/render
                env:
                  - name: POD_NAMESPACE
                    valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
                  - name: DB_PASSWORD
                    valueFrom: {secretKeyRef: {name: db, key: password}}
                  - name: REGION
                    valueFrom: {configMapKeyRef: {name: settings, key: region}}
",
    );
    std::fs::write(repo.join("promise.yaml"), promise).unwrap();
    std::fs::write(repo.join("a.yaml"), app_request("a", "  size: small\n")).unwrap();
    let daemon = tmp.path().join("promised.yaml");
    let dir = repo.to_str().unwrap();
    let daemon_arg = daemon.to_str().unwrap();

    let (code, v) = validate_json(&[dir]);
    assert_eq!(code, 0, "shape only without the daemon config: {v:#}");

    std::fs::write(
        &daemon,
        format!(
            "pipelineSecrets:\n  dir: {0}/pipeline-secrets\n  allow:\n    other: [db]\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let (code, v) = validate_json(&[dir, "--daemon-config", daemon_arg]);
    assert_eq!(code, 1, "{v:#}");
    let messages: Vec<String> = v["report"]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {}: {}",
                d["file"].as_str().unwrap_or_default(),
                d["field"].as_str().unwrap_or_default(),
                d["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let secret = messages
        .iter()
        .find(|m| m.contains("DB_PASSWORD"))
        .unwrap_or_else(|| panic!("{messages:#?}"));
    for part in [
        "env[1].valueFrom",
        "pipeline \"configure\"",
        "container \"render\"",
        "Secret \"db\" is not in the daemon config's pipelineSecrets.allow for Promise \"app\"",
    ] {
        assert!(secret.contains(part), "{part} in {secret}");
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("REGION") && m.contains("pipelineConfigMaps.dir")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("served by Promise app, which is invalid")),
        "{messages:#?}"
    );
    assert_eq!(v["report"]["promises"], serde_json::json!([]));
    assert_eq!(v["report"]["requests"], serde_json::json!([]));

    std::fs::write(
        &daemon,
        format!(
            "pipelineSecrets:\n  dir: {0}/pipeline-secrets\n  allow:\n    app: [db]\npipelineConfigMaps:\n  dir: {0}/pipeline-configmaps\n",
            tmp.path().display()
        ),
    )
    .unwrap();
    let (code, v) = validate_json(&[dir, "--daemon-config", daemon_arg]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["report"]["promises"], serde_json::json!(["app"]));
}

fn validate_text(args: &[&str]) -> (i32, String) {
    use clap::Parser;
    let cli = Cli::try_parse_from(["promised", "validate"].iter().chain(args)).expect("args parse");
    let mut out = Vec::new();
    let code = run(cli, &mut out);
    (code, String::from_utf8(out).expect("utf-8 output"))
}

/// The warning (or error) for `ci/kind-cluster.yaml` of testdata/promise-folder: a
/// cluster-scoped object labelled by name only (its `namespace: default` is ignored), and how
/// to exclude the folder.
fn stray_line(severity: &str) -> String {
    let tail = match severity {
        "warning" => "; skipped (if it is not config, exclude it: ",
        _ => " (unservedKinds: error); if it is not config, exclude it: ",
    };
    format!(
        "{severity}: ci/kind-cluster.yaml[0] ClusterRole ci-reader: kind: no Promise serves rbac.authorization.k8s.io/v1 ClusterRole and the file is in no Promise folder{tail}`exclude: [\"ci/**\"]` in the daemon config, or `promised validate --exclude 'ci/**'`{}",
        if severity == "warning" { ")" } else { "" }
    )
}

/// Which YAML is config (README): in a Promise folder copied as the marketplace ships it, the
/// example request (a kind the Promise serves) is a request, admitted against the schema;
/// the pipeline's own YAML (a Deployment, a CRD, a Namespace named `TBDNAMESPACE`) is a
/// pipeline asset: counted, listed with `--verbose`, never an error. A document outside every
/// Promise folder whose kind no Promise serves is only a warning, by default.
#[test]
fn pipeline_assets_in_a_promise_folder_are_counted_and_never_errors() {
    let dir = repo_root().join("testdata/promise-folder");
    let dir = dir.to_str().unwrap();
    let (code, out) = validate_text(&["--verbose", dir]);
    assert_eq!(code, 0, "{out}");
    let res = "promises/app/internal/configure-pipeline/resources";
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            stray_line("warning").as_str(),
            &format!(
                "asset: {res}/deployment.yaml[0] Deployment default/app-operator (pipeline asset of Promise app)"
            ),
            &format!(
                "asset: {res}/deployment.yaml[1] CustomResourceDefinition appinstances.example.org (pipeline asset of Promise app)"
            ),
            &format!(
                "asset: {res}/namespace.yaml[0] Namespace name \"TBDNAMESPACE\" (pipeline asset of Promise app)"
            ),
            "tenancy: no tenancy policy is in force (no promised-policy.yaml): any file may hold any object",
            "valid: 1 Promises, 1 requests, 0 Destinations, 0 state stores, 3 pipeline assets; 0 errors, 1 warnings",
        ]
    );
    // Without --verbose the summary counts them and says how to list them.
    let (code, out) = validate_text(&[dir]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.ends_with("3 pipeline assets (listed with --verbose); 0 errors, 1 warnings\n"),
        "{out}"
    );
    // The example request is config: admitted with its schema default.
    let (_, v) = validate_json(&[dir]);
    let report = &v["report"];
    assert_eq!(
        report["requests"][0]["file"],
        "promises/app/resource-request.yaml"
    );
    assert_eq!(report["assets"].as_array().unwrap().len(), 3);
    assert_eq!(
        report["assets"][2],
        serde_json::json!({"promise": "app", "file": format!("{res}/namespace.yaml"), "document": 0,
            "api_version": "v1", "kind": "Namespace", "name": "TBDNAMESPACE"})
    );
    let cfg = load(
        Source::Dir(repo_root().join("testdata/promise-folder")),
        &[],
    );
    assert_eq!(cfg.requests[0].object()["spec"]["replicas"], 1);
    assert!(cfg.rejected.is_empty(), "{:?}", cfg.rejected);
}

/// `unservedKinds: error` in the daemon config makes the stray document an error (exit 1),
/// whose message says how to exclude its folder; excluding it (flag or setting) leaves a
/// valid repo. Pipeline assets stay assets either way.
#[test]
fn unserved_kinds_error_setting_and_the_exclude_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = repo_root().join("testdata/promise-folder");
    let dir = dir.to_str().unwrap();
    let strict = tmp.path().join("promised.yaml");
    std::fs::write(&strict, "unservedKinds: error\n").unwrap();
    let strict = strict.to_str().unwrap();
    let (code, out) = validate_text(&["--daemon-config", strict, dir]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            stray_line("error").as_str(),
            "tenancy: no tenancy policy is in force (no promised-policy.yaml): any file may hold any object",
            "invalid: 1 Promises, 1 requests, 0 Destinations, 0 state stores, 3 pipeline assets (listed with --verbose); 1 errors, 0 warnings",
        ]
    );
    // The hint works: with the flag...
    let (code, out) = validate_text(&["--daemon-config", strict, "--exclude", "ci/**", dir]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("0 errors, 0 warnings\n"), "{out}");
    // ... and with the setting.
    let both = tmp.path().join("both.yaml");
    std::fs::write(&both, "unservedKinds: error\nexclude: [\"ci/**\"]\n").unwrap();
    let (code, out) = validate_text(&["--daemon-config", both.to_str().unwrap(), dir]);
    assert_eq!(code, 0, "{out}");
    // A value other than warn or error is a daemon config error (exit 2).
    std::fs::write(&both, "unservedKinds: ignore\n").unwrap();
    let (code, _) = validate_text(&["--daemon-config", both.to_str().unwrap(), dir]);
    assert_eq!(code, 2);
}

/// Labels in diagnostics: an object of a cluster-scoped kind is named by its name alone (a
/// `metadata.namespace` written on it is ignored); an invalid namespace or name is shown as
/// written, quoted, never joined into a path.
#[test]
fn diagnostics_label_cluster_scoped_objects_by_name_and_quote_invalid_names() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("promises/app")).unwrap();
    std::fs::create_dir_all(tmp.path().join("requests")).unwrap();
    std::fs::write(
        tmp.path().join("promises/app/promise.yaml"),
        promise_with_api("app", APP_VERSIONS),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("requests/bad.yaml"),
        "apiVersion: example.com/v1\nkind: app\nmetadata:\n  name: ../../../etc\n  namespace: x/../..\nspec: {}\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("requests/stray.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  namespace: default\n",
    )
    .unwrap();
    let cfg = load(Source::Dir(tmp.path().to_path_buf()), &[]);
    let lines = diag_lines(&cfg);
    let label = r#"app namespace "x/../.." name "../../../etc""#;
    assert_eq!(
        lines[..2],
        [
            format!(
                "error: requests/bad.yaml[0] {label}: metadata.name: \"../../../etc\" must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
            ),
            format!(
                "error: requests/bad.yaml[0] {label}: metadata.namespace: \"x/../..\" is not a valid namespace name"
            ),
        ],
        "{lines:#?}"
    );
    assert!(
        lines[2].starts_with("warning: requests/stray.yaml[0] Namespace team-a: kind: "),
        "{lines:#?}"
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains("x/../../")), "{lines:#?}");
}

/// Each of the 29 marketplace Promise folders, copied as it is (README, `internal/` with the
/// pipeline's own YAML, `promise-release.yaml`, the example request) into `promises/<name>/`
/// of a fresh config repo, validates: exit 0 (warnings allowed), the Promise and its example
/// request admitted, the pipeline's YAML counted as assets.
#[test]
fn marketplace_folders_copied_as_they_are_validate() {
    let Some(root) = marketplace() else {
        eprintln!("skipped: ../shared/realworld/kratix-marketplace not present");
        return;
    };
    let mut dirs = Vec::new();
    promise_dirs(&root, &mut dirs);
    dirs.sort();
    assert_eq!(dirs.len(), 29);
    let mut assets = std::collections::BTreeMap::new();
    for d in &dirs {
        let name = d.file_name().unwrap().to_str().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(d, &tmp.path().join("promises").join(name));
        let (code, v) = validate_json(&[tmp.path().to_str().unwrap()]);
        let r = &v["report"];
        assert_eq!(code, 0, "{name}: {:#}", r["diagnostics"]);
        assert_eq!(r["errors"], 0, "{name}");
        assert_eq!(r["promises"].as_array().unwrap().len(), 1, "{name}");
        let want_requests = usize::from(d.join("resource-request.yaml").is_file());
        assert_eq!(
            r["requests"].as_array().unwrap().len(),
            want_requests,
            "{name}"
        );
        let n = r["assets"].as_array().unwrap().len();
        if n > 0 {
            assets.insert(name.to_string(), n);
        }
    }
    // Every Kubernetes document under the folders' internal/ (SOURCE.md lists which folders
    // have one): Deployments, RBAC, CRDs, RedisFailover NAME_PLACEHOLDER, Namespace
    // TBDNAMESPACE, ...
    let want: std::collections::BTreeMap<String, usize> = [
        ("kafka", 32),
        ("namespace", 1),
        ("nginx-ingress", 23),
        ("redis", 7),
        ("runtime", 19),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(assets, want);
}
