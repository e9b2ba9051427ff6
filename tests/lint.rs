//! The consumer lint (README "Consumer lint"): each rule fails its fixture in
//! `testdata/lint/` with a message naming the file and object; what the lint passes,
//! `kubectl kustomize` builds (with Flux's generated kustomization); a pass reports findings
//! as warnings in its report and in the Destination's status, and the daemon config sets
//! each rule's severity.

mod common;

use std::path::{Path, PathBuf};

use common::{bwrap_works, flux_kustomize_build, git, promised, repo_root};

/// Rule fixtures and whether the rule is an error by default.
const RULES: [(&str, bool); 7] = [
    ("parse", true),
    ("object", true),
    ("name", true),
    ("cluster-scoped-namespace", false),
    ("duplicate-object", true),
    ("kustomization", true),
    ("file-type", false),
];

fn fixture(name: &str) -> PathBuf {
    repo_root().join("testdata/lint").join(name)
}

fn lint_output(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["validate", "--lint-output", dir.to_str().unwrap()];
    args.extend(extra);
    promised(&args)
}

#[test]
fn each_rule_has_a_fixture_that_fails_it_naming_the_file_and_object() {
    let (code, out, err) = lint_output(&fixture("good"), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
    for (rule, is_error) in RULES {
        let (code, out, err) = lint_output(&fixture(rule), &[]);
        assert_eq!(code, i32::from(is_error), "{rule}: {out}{err}");
        let expected =
            std::fs::read_to_string(repo_root().join(format!("testdata/lint/{rule}.expected")))
                .unwrap();
        for line in expected.lines().filter(|l| !l.is_empty()) {
            assert!(out.contains(line), "{rule}: expected {line:?} in\n{out}");
        }
        // JSON: every finding is of this rule, with the file named.
        let (_, json, _) = lint_output(&fixture(rule), &["--output", "json"]);
        let findings: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert!(!findings.is_empty(), "{rule}");
        for f in &findings {
            assert_eq!(f["rule"], rule, "{f}");
            assert!(
                f["file"].as_str().unwrap().starts_with(&format!("{rule}/")),
                "{f}"
            );
        }
        if !is_error {
            let (code, _, _) = lint_output(&fixture(rule), &["--deny-warnings"]);
            assert_eq!(code, 1, "{rule} with --deny-warnings");
        }
    }
    let (code, _, err) = lint_output(&fixture("no-such-dir"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no-such-dir"), "{err}");
}

#[test]
fn kubectl_kustomize_builds_what_the_lint_passes() {
    let Some(good) = flux_kustomize_build(&fixture("good")) else {
        return;
    };
    let good = good.expect("kubectl kustomize builds testdata/lint/good");
    assert!(
        good.contains("name: web") && good.contains("name: team-a"),
        "{good}"
    );
    // Where the lint says kustomize fails, it does.
    for rule in ["kustomization", "duplicate-object", "object"] {
        let built = flux_kustomize_build(&fixture(rule)).unwrap();
        assert!(built.is_err(), "{rule}: kubectl kustomize accepted it");
    }

    // The quickstart's state store: every Destination directory passes the lint, and Flux's
    // view of its `dependencies/` and `resources/` builds.
    if !bwrap_works() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (code, out, err) = common::reconcile(&repo_root().join("testdata/quickstart"), &state);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("lint:"), "{out}");
    let tree = tmp.path().join("tree");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            state.join("quickstart-state.git").to_str().unwrap(),
            tree.to_str().unwrap(),
        ],
    );
    let mut built = 0;
    for dest in ["dev", "prod"] {
        let dir = tree.join("clusters").join(dest);
        let (code, out, err) = lint_output(&dir, &["--deny-warnings"]);
        assert_eq!(code, 0, "{dest}: {out}{err}");
        for part in ["dependencies", "resources"] {
            let rendered = flux_kustomize_build(&dir.join(part))
                .unwrap()
                .unwrap_or_else(|e| panic!("{dest}/{part}: {e}"));
            assert!(rendered.contains("kind:"), "{rendered}");
            built += 1;
        }
    }
    assert_eq!(built, 4);
}

#[test]
fn a_pass_reports_findings_as_warnings_and_the_daemon_config_sets_severity() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("config");
    // The app Promise's pipeline writes `kind: ConfigMap` alone: not a Kubernetes object.
    common::app::write_config(&repo);
    std::fs::write(
        repo.join("requests/first.yaml"),
        common::app::request("first", "default"),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let daemon_config = tmp.path().join("promised.yaml");
    std::fs::write(&daemon_config, "sandbox: none\n").unwrap();
    let reconcile = || {
        promised(&[
            "reconcile",
            "--config",
            repo.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--daemon-config",
            daemon_config.to_str().unwrap(),
            "--output",
            "json",
        ])
    };
    let (code, out, err) = reconcile();
    // A warning, not a failure: the files are written.
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lint = report["lint"].as_array().expect("lint in the report");
    assert_eq!(lint.len(), 1, "{lint:?}");
    assert_eq!(lint[0]["rule"], "object");
    assert_eq!(lint[0]["severity"], "error");
    assert_eq!(lint[0]["destination"], "dev");
    let file = lint[0]["file"].as_str().unwrap();
    assert!(
        file.starts_with("dev/resources/default/app/first/") && file.ends_with("/app.yaml"),
        "{file}"
    );
    assert!(
        err.contains("lint: error[object]") && err.contains(file),
        "the finding is logged: {err}"
    );

    let status = |name: Option<&str>| {
        let mut args = vec!["status", "--state-dir", state.to_str().unwrap()];
        args.extend(["--listen", "127.0.0.1:1"]);
        args.extend(name);
        promised(&args).1
    };
    let all = status(None);
    assert!(
        all.contains("warning: 1 consumer lint findings on Destination dev"),
        "{all}"
    );
    let dev = status(Some("dev"));
    assert!(
        dev.contains("Consumer lint:")
            && dev.contains(&format!(
                "error[object]: {file}: document 1: missing apiVersion"
            )),
        "{dev}"
    );

    // A pass with nothing new still reports what is on the Destination.
    let (code, out, _) = reconcile();
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["lint"].as_array().map(Vec::len), Some(1), "{out}");

    // The daemon config turns the rule off: the finding goes from the report and the status.
    std::fs::write(
        &daemon_config,
        "sandbox: none\nlint:\n  rules: {object: off}\n",
    )
    .unwrap();
    let (code, out, err) = reconcile();
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report.get("lint").is_none(), "{out}");
    assert!(!status(Some("dev")).contains("Consumer lint:"));

    // An unknown rule is a daemon config error naming it.
    std::fs::write(
        &daemon_config,
        "sandbox: none\nlint:\n  rules: {no-such-rule: off}\n",
    )
    .unwrap();
    let (code, _, err) = reconcile();
    assert_ne!(code, 0);
    assert!(err.contains("no-such-rule"), "{err}");
}
