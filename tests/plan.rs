//! `promised plan` on the quickstart (and the marketplace Promises when present): what a
//! reconcile would do, printed, with nothing written; then the reconcile writes exactly the
//! planned files.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{bwrap_works, copy_dir, git, promised, repo_root};
use serde_json::Value;
use sha2::{Digest, Sha256};

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    store: PathBuf,
}

/// The quickstart with its state store at an absolute path outside the state directory (so
/// a plan without a state directory reads the same store), and a delete pipeline on the
/// namespace Promise; reconciled once.
fn world() -> Option<World> {
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let config = root.join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let store = root.join("store.git");
    git(&root, &["init", "-q", "--bare", "-b", "main", "store.git"]);
    let ss = config.join("platform/state-store.yaml");
    let text = std::fs::read_to_string(&ss).unwrap().replace(
        "url: quickstart-state.git",
        &format!("url: {}", store.display()),
    );
    std::fs::write(&ss, text).unwrap();
    let promise = config.join("promises/namespace/promise.yaml");
    let text = std::fs::read_to_string(&promise).unwrap()
        + "      delete:\n        - apiVersion: platform.kratix.io/v1alpha1\n          kind: Pipeline\n          metadata:\n            name: instance-delete\n          spec:\n            containers:\n              - name: delete\n                image: promised.dev/local\n                command: [\"/promise/pipeline/delete\"]\n";
    std::fs::write(&promise, text).unwrap();
    let delete = config.join("promises/namespace/pipeline/delete");
    std::fs::write(&delete, "#!/bin/sh\necho deleting\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", delete.to_str().unwrap()])
        .status()
        .unwrap();
    let w = World {
        state: root.join("state"),
        root,
        config,
        store,
        _tmp: tmp,
    };
    let (code, out, err) = reconcile(&w);
    assert_eq!(code, 0, "{out}\n{err}");
    Some(w)
}

fn reconcile(w: &World) -> (i32, String, String) {
    common::reconcile(&w.config, &w.state)
}

/// `promised plan` with `extra` flags; the state directory is `state` (may not exist).
fn plan_at(w: &World, state: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "plan",
        "--config",
        w.config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    promised(&args)
}

/// The JSON plan against the state directory; asserts the exit code.
fn plan_json(w: &World, code: i32) -> Value {
    let (c, out, err) = plan_at(w, &w.state, &["--output", "json"]);
    assert_eq!(c, code, "{out}\n{err}");
    serde_json::from_str(&out).unwrap()
}

/// Every planned file: path → (change, sha256 of the content written).
fn planned(p: &Value) -> BTreeMap<String, (String, Option<String>)> {
    let mut out = BTreeMap::new();
    for s in p["stores"].as_array().unwrap() {
        for d in s["destinations"].as_array().unwrap() {
            for f in d["files"].as_array().unwrap() {
                out.insert(
                    f["path"].as_str().unwrap().to_string(),
                    (
                        f["change"].as_str().unwrap().to_string(),
                        f["sha256"].as_str().map(str::to_string),
                    ),
                );
            }
        }
    }
    out
}

/// The runs: (object, workflow, reason).
fn runs(p: &Value) -> Vec<(String, String, String)> {
    p["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["object"].as_str().unwrap().to_string(),
                r["workflow"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn head(w: &World) -> String {
    git(&w.store, &["rev-parse", "main"]).trim().to_string()
}

/// Every file of the state directory with its content (what a plan must not change).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Reconciles and checks the commit it makes holds exactly the planned files, byte for
/// byte (sha256 of each written file, and the deleted ones gone).
fn reconcile_matches(w: &World, plan: &Value) {
    let before = head(w);
    let (code, out, err) = reconcile(w);
    assert!(code == 0 || code == 1, "{out}\n{err}");
    let after = head(w);
    assert_ne!(before, after, "the reconcile commits\n{out}");
    let mut changed = BTreeMap::new();
    for line in git(&w.store, &["diff", "--name-status", &before, &after]).lines() {
        let (status, path) = line.split_once('\t').unwrap();
        if path.starts_with(".promised/") {
            continue; // the ownership index
        }
        let sha = (status != "D").then(|| {
            let bytes = std::process::Command::new("git")
                .args(["show", &format!("{after}:{path}")])
                .current_dir(&w.store)
                .output()
                .unwrap()
                .stdout;
            hex(&Sha256::digest(&bytes))
        });
        let kind = match status {
            "A" => "added",
            "M" => "changed",
            "D" => "removed",
            s => panic!("unexpected status {s}"),
        };
        changed.insert(path.to_string(), (kind.to_string(), sha));
    }
    // A restored file (drift) is a modification in Git.
    let mut want = planned(plan);
    for (kind, _) in want.values_mut() {
        if kind == "restored" {
            *kind = "changed".into();
        }
    }
    assert_eq!(changed, want, "the reconcile writes the planned files");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The plan against the state store's content (no state directory) plans the same files.
fn same_without_state_dir(w: &World, with: &Value) {
    let none = w.root.join("no-state");
    let (code, out, err) = plan_at(w, &none, &["--output", "json"]);
    assert!(code == 1 || code == 2, "{out}\n{err}");
    let without: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(without["base"], "state-stores");
    assert_eq!(planned(&without), planned(with), "{out}");
    assert!(!none.exists(), "the plan creates no state directory");
}

#[test]
fn request_edit_plans_one_run_and_one_changed_file() {
    let Some(w) = world() else { return };
    // Nothing changed: exit 0, nothing planned.
    let p = plan_json(&w, 0);
    assert!(planned(&p).is_empty() && runs(&p).is_empty(), "{p:#}");

    let req = w.config.join("requests/redis-example.yaml");
    let text = std::fs::read_to_string(&req)
        .unwrap()
        .replace("spec: {}", "spec: {size: large}");
    std::fs::write(&req, text).unwrap();
    let state_before = snapshot(&w.state);
    let head_before = head(&w);
    let (code, out, err) = plan_at(&w, &w.state, &["--output", "json"]);
    assert_eq!(code, 2, "changes: exit 2\n{out}\n{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        runs(&p),
        [(
            "redis/default/example".to_string(),
            "configure".to_string(),
            "spec-changed".to_string()
        )]
    );
    let files = planned(&p);
    assert_eq!(files.len(), 1, "{files:#?}");
    let path =
        "clusters/dev/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml";
    assert_eq!(files[path].0, "changed");
    let diff = p["stores"][0]["destinations"][0]["files"][0]["diff"]
        .as_str()
        .unwrap();
    assert!(
        diff.contains("-    replicas: 1\n+    replicas: 3"),
        "{diff}"
    );
    // Nothing written: the state directory and the state store are as they were.
    assert_eq!(
        snapshot(&w.state),
        state_before,
        "the state directory is untouched"
    );
    assert_eq!(head(&w), head_before, "no commit");

    // Text: the diff and the reason; `--stat`: counts only.
    let (code, text, _) = plan_at(&w, &w.state, &[]);
    assert_eq!(code, 2);
    assert!(
        text.contains("+    replicas: 3") && text.contains("(spec changed)"),
        "{text}"
    );
    let (_, stat, _) = plan_at(&w, &w.state, &["--stat"]);
    assert!(
        stat.contains("(+2 -2, redis/default/example)") && !stat.contains("@@"),
        "{stat}"
    );

    same_without_state_dir(&w, &p);
    reconcile_matches(&w, &p);
    assert_eq!(
        plan_json(&w, 0)["summary"]["runs"],
        0,
        "applied: nothing left"
    );
}

/// The Markdown plan of a Promise change, with the temporary directory shown as
/// `/srv/platform`.
fn markdown(w: &World) -> String {
    let (code, out, err) = plan_at(w, &w.state, &["--output", "markdown"]);
    assert_eq!(code, 2, "{out}\n{err}");
    out.replace(w.root.to_str().unwrap(), "/srv/platform")
}

#[test]
fn promise_edit_plans_all_its_requests_with_the_blast_radius() {
    let Some(w) = world() else { return };
    let script = w.config.join("promises/namespace/pipeline/configure");
    let text = std::fs::read_to_string(&script).unwrap().replace(
        "    requested-by: ",
        "    team: platform\n    requested-by: ",
    );
    std::fs::write(&script, text).unwrap();
    let p = plan_json(&w, 2);
    let r = runs(&p);
    for key in [
        "promise/namespace",
        "namespace/default/team-a",
        "namespace/default/team-b-prod",
    ] {
        assert!(
            r.contains(&(key.into(), "configure".into(), "promise-changed".into())),
            "{key}: {r:#?}"
        );
    }
    assert_eq!(r.len(), 3, "the redis request does not run: {r:#?}");
    let blast = &p["blastRadius"][0];
    assert_eq!(blast["promise"], "namespace");
    assert_eq!(
        blast["requests"],
        serde_json::json!(["namespace/default/team-a", "namespace/default/team-b-prod"])
    );
    assert_eq!(blast["destinations"], serde_json::json!(["dev", "prod"]));
    assert_eq!(blast["files"], 2);
    assert_eq!(planned(&p).len(), 2);

    // The Markdown of this change is the docs example (BLESS_PLAN_EXAMPLE=1 rewrites it).
    let md = markdown(&w);
    let example = repo_root().join("docs/plan-example.md");
    if std::env::var_os("BLESS_PLAN_EXAMPLE").is_some() {
        std::fs::write(&example, &md).unwrap();
    }
    let checked_in = std::fs::read_to_string(&example).unwrap();
    assert_eq!(
        md, checked_in,
        "docs/plan-example.md is out of date (BLESS_PLAN_EXAMPLE=1 cargo test --test plan)"
    );
    // It renders: a summary table, and one collapsible block per file with a diff.
    let mut tables = 0;
    let mut details = 0;
    let mut code_blocks = 0;
    let mut in_cell = false;
    let mut cells = Vec::new();
    for ev in pulldown_cmark::Parser::new_ext(&md, pulldown_cmark::Options::ENABLE_TABLES) {
        use pulldown_cmark::{Event, Tag, TagEnd};
        match ev {
            Event::Start(Tag::Table(_)) => tables += 1,
            Event::Start(Tag::TableCell) => in_cell = true,
            Event::End(TagEnd::TableCell) => in_cell = false,
            Event::Text(t) | Event::Code(t) if in_cell => cells.push(t.to_string()),
            Event::Html(h) | Event::InlineHtml(h) if h.contains("<details>") => details += 1,
            Event::Start(Tag::CodeBlock(pulldown_cmark::CodeBlockKind::Fenced(lang))) => {
                assert_eq!(&*lang, "diff");
                code_blocks += 1;
            }
            _ => {}
        }
    }
    assert_eq!(tables, 2, "summary and runs tables\n{md}");
    assert_eq!((details, code_blocks), (2, 2), "{md}");
    for c in [
        "GitStateStore/local",
        "dev",
        "prod",
        "namespace/default/team-a",
        "Promise changed",
    ] {
        assert!(
            cells.iter().any(|x| x == c),
            "{c} not in a table cell: {cells:?}"
        );
    }

    // Past the size limit, diffs are left out and counted.
    let (_, small, _) = plan_at(
        &w,
        &w.state,
        &["--output", "markdown", "--max-bytes", "1500"],
    );
    assert!(small.len() <= 1500, "{}", small.len());
    assert!(
        small.contains(" of 2 files not shown (size limit)"),
        "{small}"
    );
    assert!(small.matches("<details>").count() < 2, "{small}");

    same_without_state_dir(&w, &p);
    reconcile_matches(&w, &p);
}

#[test]
fn deleted_request_plans_its_delete_pipeline_and_removed_files() {
    let Some(w) = world() else { return };
    let requests = w.config.join("requests/namespaces.yaml");
    let text = std::fs::read_to_string(&requests).unwrap();
    let kept = text.split("---").next().unwrap().to_string();
    std::fs::write(&requests, kept).unwrap();
    let p = plan_json(&w, 2);
    assert_eq!(
        runs(&p),
        [(
            "namespace/default/team-b-prod".to_string(),
            "delete".to_string(),
            "deleted".to_string()
        )]
    );
    assert_eq!(p["runs"][0]["pipeline"], "instance-delete");
    assert_eq!(p["runs"][0]["destinations"], serde_json::json!(["prod"]));
    let files = planned(&p);
    assert_eq!(
        files,
        BTreeMap::from([(
            "clusters/prod/resources/default/namespace/team-b-prod/instance-configure/5058f/namespace.yaml"
                .to_string(),
            ("removed".to_string(), None)
        )])
    );
    same_without_state_dir(&w, &p);
    reconcile_matches(&w, &p);
}

#[test]
fn invalid_request_plans_an_error_and_no_change_for_it() {
    let Some(w) = world() else { return };
    // The redis request becomes invalid, and the team-a namespace changes.
    let req = w.config.join("requests/redis-example.yaml");
    let text = std::fs::read_to_string(&req)
        .unwrap()
        .replace("spec: {}", "spec: {size: medium}");
    std::fs::write(&req, text).unwrap();
    let ns = w.config.join("requests/namespaces.yaml");
    let text = std::fs::read_to_string(&ns)
        .unwrap()
        .replace("namespaceName: team-a", "namespaceName: team-a2");
    std::fs::write(&ns, text).unwrap();
    let (code, out, err) = plan_at(&w, &w.state, &["--output", "json"]);
    assert_eq!(
        code, 1,
        "errors: exit 1, although there are changes\n{out}\n{err}"
    );
    let p: Value = serde_json::from_str(&out).unwrap();
    let errors = p["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .as_str()
            .unwrap()
            .contains("redis default/example: spec.size: \"medium\" does not match"),
        "{errors:#?}"
    );
    assert_eq!(
        runs(&p),
        [(
            "namespace/default/team-a".to_string(),
            "configure".to_string(),
            "spec-changed".to_string()
        )],
        "the invalid request does not run"
    );
    let files = planned(&p);
    assert!(
        files.keys().all(|f| !f.contains("/redis/example/")),
        "nothing changes for the invalid request: {files:#?}"
    );
    assert_eq!(files.len(), 1, "{files:#?}");
    same_without_state_dir(&w, &p);
    reconcile_matches(&w, &p);
}

#[test]
fn a_plan_that_cannot_be_made_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let (code, out, err) = promised(&[
        "plan",
        "--config",
        missing.to_str().unwrap(),
        "--state-dir",
        tmp.path().join("state").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(out.is_empty(), "{out}");
    // A command line that does not parse is an error too, not "changes".
    let (code, _, err) = promised(&["plan", "--config", ".", "--bogus"]);
    assert_eq!(code, 1, "{err}");
}

#[test]
fn base_ref_plans_what_the_branch_changes() {
    let Some(w) = world() else { return };
    git(&w.config, &["init", "-q", "-b", "main"]);
    git(&w.config, &["add", "-A"]);
    git(&w.config, &["commit", "-qm", "base"]);
    git(&w.config, &["checkout", "-qb", "pr"]);
    let req = w.config.join("requests/redis-example.yaml");
    let text = std::fs::read_to_string(&req)
        .unwrap()
        .replace("spec: {}", "spec: {size: large}");
    std::fs::write(&req, text).unwrap();
    git(&w.config, &["commit", "-qam", "larger redis"]);
    let (code, out, err) = promised(&[
        "plan",
        "--config",
        w.config.to_str().unwrap(),
        "--ref",
        "pr",
        "--base",
        "main",
        "--output",
        "json",
    ]);
    assert_eq!(code, 2, "{out}\n{err}");
    let p: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(p["base"], "config-ref");
    assert_eq!(
        runs(&p),
        [(
            "redis/default/example".to_string(),
            "configure".to_string(),
            "spec-changed".to_string()
        )],
        "relative to main, only the edited request runs"
    );
    assert_eq!(planned(&p).len(), 1, "{out}");
}

/// The marketplace's redis Promise, unchanged, with two requests, an image override running
/// the project's stand-in script, and a `git daemon` remote as the state store; reconciled
/// once. Returns (tmp, config, state, daemon config, remote).
fn marketplace_world(
    mp: &Path,
) -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    PathBuf,
    PathBuf,
    common::GitDaemon,
) {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("srv");
    std::fs::create_dir_all(&base).unwrap();
    let daemon = common::GitDaemon::start(&base);
    let url = daemon.bare_repo("state.git");
    let config = tmp.path().join("config");
    let redis = config.join("redis");
    std::fs::create_dir_all(&redis).unwrap();
    std::fs::copy(mp.join("redis/promise.yaml"), redis.join("promise.yaml")).unwrap();
    let request = std::fs::read_to_string(mp.join("redis/resource-request.yaml")).unwrap();
    std::fs::write(redis.join("resource-request.yaml"), &request).unwrap();
    std::fs::write(
        redis.join("second.yaml"),
        request.replace("name: example", "name: second"),
    )
    .unwrap();
    std::fs::write(
        config.join("platform.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: remote\nspec:\n  url: {url}\n  branch: main\n  path: destinations\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: worker-1\n  labels:\n    environment: dev\nspec:\n  path: worker-1\n  stateStoreRef:\n    kind: GitStateStore\n    name: remote\n"
        ),
    )
    .unwrap();
    let daemon_config = tmp.path().join("promised.yaml");
    std::fs::write(
        &daemon_config,
        format!(
            "imageOverrides:\n  ghcr.io/syntasso/kratix-marketplace/redis-configure-pipeline:v0.1.0:\n    command: [\"/image/execute-pipeline\"]\n    mounts:\n      - {{host: \"{}\", target: /image}}\n      - {{host: \"{}\", target: /tmp/transfer}}\n",
            repo_root().join("testdata/images/redis-configure-pipeline").display(),
            mp.join("redis/internal/configure-pipeline/resources").display()
        ),
    )
    .unwrap();
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
    let remote = base.join("state.git");
    (tmp, config, state, daemon_config, remote, daemon)
}

#[test]
fn marketplace_request_and_promise_edits() {
    let Some(mp) = common::marketplace() else {
        eprintln!("skipped: ../shared/realworld/kratix-marketplace not present");
        return;
    };
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let (tmp, config, state, daemon_config, remote, _daemon) = marketplace_world(&mp);
    let plan = |state: &Path| {
        let (code, out, err) = promised(&[
            "plan",
            "--config",
            config.to_str().unwrap(),
            "--daemon-config",
            daemon_config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--output",
            "json",
        ]);
        assert!((0..=2).contains(&code), "{out}\n{err}");
        (code, serde_json::from_str::<Value>(&out).unwrap())
    };
    let (code, p) = plan(&state);
    assert_eq!(code, 0, "{p:#}");

    // A request edit: one run, one changed file, the same without the state directory.
    let req = config.join("redis/second.yaml");
    let text = std::fs::read_to_string(&req)
        .unwrap()
        .replace("size: small", "size: large");
    std::fs::write(&req, text).unwrap();
    let head = git(&remote, &["rev-parse", "main"]);
    let (code, p) = plan(&state);
    assert_eq!(code, 2);
    assert_eq!(
        runs(&p),
        [(
            "redis/default/second".to_string(),
            "configure".to_string(),
            "spec-changed".to_string()
        )]
    );
    let files = planned(&p);
    assert_eq!(files.len(), 1, "{files:#?}");
    let path = "destinations/worker-1/resources/default/redis/second/instance-configure/5058f/redis-instance.yaml";
    assert_eq!(files[path].0, "changed", "{files:#?}");
    let (_, without) = plan(&tmp.path().join("no-state"));
    assert_eq!(planned(&without), files);
    assert_eq!(git(&remote, &["rev-parse", "main"]), head, "nothing pushed");

    // A Promise edit (an env var in its resource pipeline): every request runs, with the
    // blast radius; their output is the same, so no file changes but the request edit's.
    let promise = config.join("redis/promise.yaml");
    let text = std::fs::read_to_string(&promise).unwrap().replacen(
        "                name: redis-configure-pipeline\n",
        "                name: redis-configure-pipeline\n                env: [{name: LOG_LEVEL, value: debug}]\n",
        1,
    );
    std::fs::write(&promise, text).unwrap();
    let (_, p) = plan(&state);
    let r = runs(&p);
    assert!(
        r.contains(&(
            "redis/default/example".into(),
            "configure".into(),
            "promise-changed".into()
        )),
        "{r:#?}"
    );
    let blast = &p["blastRadius"][0];
    assert_eq!(blast["promise"], "redis", "{p:#}");
    assert_eq!(
        blast["requests"],
        serde_json::json!(["redis/default/example", "redis/default/second"])
    );
    assert_eq!(blast["destinations"], serde_json::json!(["worker-1"]));
    assert_eq!(planned(&p), files, "only the request edit changes a file");
}

#[test]
fn drift_and_unschedulable_requests_are_planned() {
    let Some(w) = world() else { return };
    // Someone edits one of our files in the state store behind promised's back.
    let work = w.root.join("work");
    git(&w.root, &["clone", "-q", w.store.to_str().unwrap(), "work"]);
    let path =
        "clusters/dev/resources/default/namespace/team-a/instance-configure/5058f/namespace.yaml";
    std::fs::write(work.join(path), "edited by hand\n").unwrap();
    git(&work, &["commit", "-qam", "hand edit"]);
    git(&work, &["push", "-q", "origin", "main"]);
    // A Promise whose Destination selector matches nothing, with one request.
    let dir = w.config.join("promises/staging");
    std::fs::create_dir_all(dir.join("pipeline")).unwrap();
    std::fs::copy(
        w.config.join("promises/namespace/pipeline/configure"),
        dir.join("pipeline/configure"),
    )
    .unwrap();
    let promise = std::fs::read_to_string(w.config.join("promises/namespace/promise.yaml"))
        .unwrap()
        .replace("name: namespace\n", "name: staging\n")
        .replace(
            "namespaces.marketplace.kratix.io",
            "stagings.marketplace.kratix.io",
        )
        .replace("kind: namespace", "kind: staging")
        .replace("plural: namespaces", "plural: stagings")
        .replace("singular: namespace", "singular: staging")
        .replace(
            "spec:\n  api:",
            "spec:\n  destinationSelectors:\n    - matchLabels: {environment: staging}\n  api:",
        );
    std::fs::write(dir.join("promise.yaml"), promise).unwrap();
    std::fs::write(
        w.config.join("requests/staging.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: staging\nmetadata:\n  name: s1\n  namespace: default\nspec:\n  namespaceName: s1\n",
    )
    .unwrap();
    let p = plan_json(&w, 2);
    let files = planned(&p);
    assert_eq!(files[path].0, "restored", "{p:#}");
    let pending = p["pending"].as_array().unwrap();
    assert!(
        pending.iter().any(|q| q["object"] == "staging/default/s1"
            && q["message"]
                .as_str()
                .unwrap()
                .contains("no matching Destination")),
        "{pending:#?}"
    );
    let (_, text, _) = plan_at(&w, &w.state, &[]);
    assert!(
        text.contains("-edited by hand"),
        "the restore shows as a diff: {text}"
    );
    assert!(text.contains("pending: staging/default/s1"), "{text}");
    reconcile_matches(&w, &p);
}

#[test]
fn without_a_state_directory_the_runs_that_change_nothing_are_counted() {
    let Some(w) = world() else { return };
    let req = w.config.join("requests/redis-example.yaml");
    let text = std::fs::read_to_string(&req)
        .unwrap()
        .replace("spec: {}", "spec: {size: large}");
    std::fs::write(&req, text).unwrap();
    let none = w.root.join("no-state");
    let (code, text, err) = plan_at(&w, &none, &[]);
    assert_eq!(code, 2, "{text}\n{err}");
    assert!(
        text.contains("  configure  redis/default/example  (not in a state directory"),
        "{text}"
    );
    assert!(!text.contains("namespace/default/team-a"), "{text}");
    assert!(
        text.contains("… and 4 more that run only to compare their output"),
        "{text}"
    );
    // JSON lists them all.
    let (_, json, _) = plan_at(&w, &none, &["--output", "json"]);
    let p: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(runs(&p).len(), 5, "{p:#}");
    assert!(runs(&p).iter().all(|r| r.2 == "not-recorded"), "{p:#}");
}

/// The consumer lint runs on what each Destination would hold: a pipeline change that adds a
/// Helm values file to the output is planned with an `object` finding naming the file, and
/// exits 1; the daemon config's severity turns it into a warning (exit 2, changes).
#[test]
fn the_plan_lints_what_each_destination_would_hold() {
    let Some(w) = world() else { return };
    let script = w.config.join("promises/namespace/pipeline/configure");
    let text = std::fs::read_to_string(&script).unwrap().replace(
        "cat > /kratix/metadata/destination-selectors.yaml",
        "printf 'replicas: 3\\n' > /kratix/output/values.yaml\n\ncat > /kratix/metadata/destination-selectors.yaml",
    );
    std::fs::write(&script, text).unwrap();
    let (code, out, err) = plan_at(&w, &w.state, &["--output", "json"]);
    assert_eq!(
        code, 1,
        "an error-severity lint finding: exit 1\n{out}\n{err}"
    );
    let p: Value = serde_json::from_str(&out).unwrap();
    let lint = p["lint"].as_array().unwrap();
    let files: Vec<&str> = lint.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert_eq!(
        lint.len(),
        2,
        "team-a on dev, team-b-prod on prod: {lint:#?}"
    );
    assert!(
        files.contains(
            &"clusters/dev/resources/default/namespace/team-a/instance-configure/5058f/values.yaml"
        ),
        "{files:?}"
    );
    assert!(
        lint.iter()
            .all(|f| f["rule"] == "object" && f["severity"] == "error")
    );
    // Text names the rule, the file and the document.
    let (_, text, _) = plan_at(&w, &w.state, &[]);
    assert!(
        text.contains("lint: error[object]: clusters/dev/resources/default/namespace/team-a/instance-configure/5058f/values.yaml: document 1: missing apiVersion"),
        "{text}"
    );
    // As a warning, the plan only has changes.
    let dc = w.root.join("promised.yaml");
    std::fs::write(&dc, "lint:\n  rules: {object: warning}\n").unwrap();
    let (code, out, err) = plan_at(&w, &w.state, &["--daemon-config", dc.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("lint: warning[object]"), "{out}");
}
