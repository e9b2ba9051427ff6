//! Reconcile behaviours beyond the happy path: requirements, misplacement, late Destinations,
//! failure isolation across state stores, failing pipelines.

mod common;

use common::{
    add_files_promise, bwrap_works, condition, copy_dir, files_output_path, files_request, git,
    reconcile, repo_root, status_row as status,
};

fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let state = tmp.path().join("state");
    (tmp, config, state)
}

#[test]
fn requests_wait_for_required_promises() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    let p = config.join("promises/redis/promise.yaml");
    let text = std::fs::read_to_string(&p).unwrap().replacen("spec:\n  destinationSelectors:", "spec:\n  requiredPromises:\n    - name: postgres\n      version: v1\n  destinationSelectors:", 1);
    std::fs::write(&p, text).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("required Promise \"postgres\" is not in the config repo"),
        "{err}"
    );
    let r = status(&state, "redis/default/example");
    assert_eq!(condition(&r, "PromiseAvailable")["status"], "False");
    assert_eq!(
        condition(&r, "PromiseAvailable")["message"],
        "Promise Requirements are not installed"
    );
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Promise redis is not available"),
        "{r}"
    );
    let p = status(&state, "promise/redis");
    assert_eq!(p["status"]["status"], "Unavailable");
    assert_eq!(condition(&p, "RequirementsFulfilled")["status"], "False");
    // The promise workflow still ran (Kratix runs it while requirements are unmet).
    let store = state.join("quickstart-state.git");
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains("dependencies/redis/promise-configure"),
        "{files}"
    );
    assert!(
        !files.contains("resources/default/redis/example"),
        "{files}"
    );
    assert!(
        files.contains("namespace/team-a"),
        "other Promises' requests are unaffected"
    );
}

#[test]
fn relabelled_destination_marks_requests_misplaced_and_a_new_one_gets_dependencies() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    assert_eq!(reconcile(&config, &state).0, 0);
    let store = state.join("quickstart-state.git");
    let first = git(&store, &["rev-parse", "main"]);

    // dev loses its label: the redis request stays (sticky) and is reported misplaced.
    let d = config.join("platform/destinations.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    std::fs::write(
        &d,
        text.replacen("environment: dev", "environment: staging", 1),
    )
    .unwrap();
    let (_, out, _) = reconcile(&config, &state);
    assert!(
        out.contains("0 pipelines run"),
        "placement changes run no pipeline: {out}"
    );
    let r = status(&state, "redis/default/example");
    assert_eq!(condition(&r, "WorksSucceeded")["reason"], "WorksMisplaced");
    assert_eq!(r["status"]["destinations"][0]["misplaced"], true);
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains("clusters/dev/resources/default/redis/example"),
        "files stay: {files}"
    );

    // A new Destination labelled environment=dev receives the redis dependencies, no re-run.
    std::fs::write(
        config.join("platform/dev2.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: dev2\n  labels:\n    environment: dev\nspec:\n  path: clusters/dev2\n  stateStoreRef:\n    kind: GitStateStore\n    name: local\n",
    )
    .unwrap();
    let (_, out, _) = reconcile(&config, &state);
    assert!(out.contains("0 pipelines run"), "{out}");
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains(
            "clusters/dev2/dependencies/redis/promise-configure/5058f/redis-operator.yaml"
        ),
        "{files}"
    );
    assert!(
        files.contains("clusters/dev2/dependencies/kratix-canary-namespace.yaml"),
        "{files}"
    );
    assert_ne!(git(&store, &["rev-parse", "main"]), first);
}

#[test]
fn an_unwritable_state_store_and_a_failing_pipeline_fail_alone() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    // prod lives on a state store nobody can write to.
    std::fs::write(
        config.join("platform/broken-store.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: broken\nspec:\n  url: git://127.0.0.1:1/nowhere.git\n",
    )
    .unwrap();
    let d = config.join("platform/destinations.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    let (dev, prod) = text.split_once("---\n").unwrap();
    std::fs::write(
        &d,
        format!("{dev}---\n{}", prod.replace("name: local", "name: broken")),
    )
    .unwrap();
    // And the namespace pipeline fails for one request.
    let script = config.join("promises/namespace/pipeline/configure");
    let s = std::fs::read_to_string(&script).unwrap().replacen("set -eu\n", "set -eu\ngrep -q 'namespaceName: team-a' /kratix/input/object.yaml && { echo 'team-a is not allowed' >&2; exit 3; }\n", 1);
    std::fs::write(&script, s).unwrap();

    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("state store GitStateStore/broken: FAILED"),
        "{out}"
    );
    assert!(
        out.contains("state store GitStateStore/local: commit"),
        "the good store still commits: {out}"
    );
    let a = status(&state, "namespace/default/team-a");
    assert_eq!(
        condition(&a, "ConfigureWorkflowCompleted")["reason"],
        "ConfigureWorkflowFailed"
    );
    let msg = a["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("exit code 3") && msg.contains("team-a is not allowed"),
        "{msg}"
    );
    let b = status(&state, "namespace/default/team-b-prod");
    assert_eq!(condition(&b, "WorksSucceeded")["reason"], "WorksFailing");
    let redis = status(&state, "redis/default/example");
    assert_eq!(condition(&redis, "Reconciled")["status"], "True");
    let files = git(
        &state.join("quickstart-state.git"),
        &["ls-tree", "-r", "--name-only", "main"],
    );
    assert!(files.contains("resources/default/redis/example"), "{files}");
    assert!(!files.contains("team-a/"), "{files}");
}

#[test]
fn editing_a_promise_reruns_its_requests_only() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    assert_eq!(reconcile(&config, &state).0, 0);
    let p = config.join("promises/namespace/promise.yaml");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("enum: [dev, prod]", "enum: [dev, prod, test]");
    std::fs::write(&p, text).unwrap();
    let (code, out, _) = reconcile(&config, &state);
    assert_eq!(code, 0);
    assert!(
        out.contains("2 pipelines run"),
        "both namespace requests, not redis: {out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("redis/default/example") && l.contains("unchanged")),
        "{out}"
    );
    // A label-only edit of a request does not re-run it (Kratix: only spec changes do).
    let r = config.join("requests/redis-example.yaml");
    let text = std::fs::read_to_string(&r).unwrap().replace(
        "namespace: default\n",
        "namespace: default\n  labels:\n    team: a\n",
    );
    std::fs::write(&r, text).unwrap();
    let (_, out, _) = reconcile(&config, &state);
    assert!(out.contains("0 pipelines run"), "{out}");
}

#[test]
fn filepath_modes_none_and_aggregated_yaml() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    let d = config.join("platform/destinations.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    let (dev, prod) = text.split_once("---\n").unwrap();
    let dev = dev.replace(
        "  path: clusters/dev\n",
        "  path: clusters/dev\n  filepath:\n    mode: aggregatedYAML\n",
    );
    let prod = prod.replace(
        "  path: clusters/prod\n",
        "  path: clusters/prod\n  filepath:\n    mode: none\n",
    );
    std::fs::write(&d, format!("{dev}---\n{prod}")).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let store = state.join("quickstart-state.git");
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    let mut names: Vec<&str> = files
        .lines()
        .filter(|l| !l.starts_with(".promised/"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "clusters/dev/aggregated.yaml",
            "clusters/dev/kratix-canary-configmap.yaml",
            "clusters/dev/kratix-canary-namespace.yaml",
            "clusters/prod/kratix-canary-configmap.yaml",
            "clusters/prod/kratix-canary-namespace.yaml",
            "clusters/prod/namespace.yaml",
        ],
        "{files}"
    );
    // The aggregate holds every placement on dev (redis operator, redis instance, team-a),
    // joined by `---`, and parses as Kubernetes objects.
    let agg = git(&store, &["show", "main:clusters/dev/aggregated.yaml"]);
    let docs = promised::config::parse_yaml_stream(&agg).unwrap();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for k in ["Deployment", "RedisFailover", "Namespace"] {
        assert!(
            kinds.contains(&k),
            "{k} missing from the aggregate: {kinds:?}"
        );
    }
    // Kratix's join (`\n---\n` between workloads, none after the last) in placement order:
    // the Promise's dependencies (the operator's Deployment) before the requests' resources.
    assert_eq!(agg.matches("\n---\n").count(), docs.len() - 1, "{agg}");
    assert!(!agg.trim_end().ends_with("---"), "{agg}");
    let pos = |k: &str| kinds.iter().position(|x| *x == k).expect(k);
    assert!(pos("Deployment") < pos("RedisFailover"), "{kinds:?}");
    // Removing a request rewrites the aggregate without it.
    std::fs::remove_file(config.join("requests/redis-example.yaml")).unwrap();
    reconcile(&config, &state);
    let agg = git(&store, &["show", "main:clusters/dev/aggregated.yaml"]);
    assert!(!agg.contains("RedisFailover"), "{agg}");
    assert!(agg.contains("redis-operator"), "{agg}");
}

/// `initWorkloads.enabled: false` writes no canary files; switching it off removes the canary
/// files already written, also when the state directory was lost in between (the canary's
/// owner is recovered from the ownership index like any placement).
#[test]
fn init_workloads_disabled_and_canary_removal_after_state_loss() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    let d = config.join("platform/destinations.yaml");
    let disable = |text: &str, path: &str| {
        text.replacen(
            &format!("  path: {path}\n"),
            &format!("  path: {path}\n  initWorkloads:\n    enabled: false\n"),
            1,
        )
    };
    let text = std::fs::read_to_string(&d).unwrap();
    std::fs::write(&d, disable(&text, "clusters/prod")).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let store = state.join("quickstart-state.git");
    let canaries = || -> Vec<String> {
        git(&store, &["ls-tree", "-r", "--name-only", "main"])
            .lines()
            .filter(|l| l.contains("kratix-canary"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        canaries(),
        [
            "clusters/dev/dependencies/kratix-canary-namespace.yaml",
            "clusters/dev/resources/kratix-canary-configmap.yaml",
        ]
    );
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains("clusters/prod/resources/default/namespace/team-b-prod"),
        "prod still receives work: {files}"
    );

    // The state directory is lost, then dev's canaries are switched off too.
    std::fs::remove_file(state.join("state.json")).unwrap();
    let text = std::fs::read_to_string(&d).unwrap();
    std::fs::write(&d, disable(&text, "clusters/dev")).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(canaries(), Vec::<String>::new());
    let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    assert!(
        files.contains("clusters/dev/resources/default/redis/example"),
        "nothing else is removed: {files}"
    );
}

/// The files of the `local` Git store's `main` branch.
fn store_files(state: &std::path::Path) -> String {
    git(
        &state.join("quickstart-state.git"),
        &["ls-tree", "-r", "--name-only", "main"],
    )
}

/// One request's pipeline writes `sub/.git/config`, which Git refuses: that request fails alone,
/// its status names the path and why, and every other request (thirty of them, and the
/// quickstart's) is committed.
#[test]
fn a_request_writing_a_dot_git_path_fails_alone() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    add_files_promise(&config, "dev");
    for i in 0..30 {
        files_request(&config, &format!("ok-{i}"), &["app.yaml", "sub/config"]);
    }
    files_request(&config, "bad", &["app.yaml", "sub/.git/config"]);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("state store GitStateStore/local: commit"),
        "{out}\n{err}"
    );
    let files = store_files(&state);
    for i in 0..30 {
        for rel in ["app.yaml", "sub/config"] {
            let p = files_output_path("clusters/dev", &format!("ok-{i}"), rel);
            assert!(files.lines().any(|l| l == p), "{p} missing: {files}");
        }
    }
    assert!(files.contains("resources/default/redis/example"), "{files}");
    assert!(!files.contains("files/bad/"), "{files}");
    let bad = status(&state, "files/default/bad");
    let msg = bad["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("sub/.git/config") && msg.contains(".git"),
        "the status names the path and why: {msg}"
    );
    assert_eq!(condition(&bad, "Reconciled")["status"], "False", "{bad}");
    for key in [
        "files/default/ok-0",
        "files/default/ok-29",
        "redis/default/example",
    ] {
        assert_eq!(
            condition(&status(&state, key), "Reconciled")["status"],
            "True",
            "{key}"
        );
    }
    // The bad request is fixed: it commits like the others.
    files_request(&config, "bad", &["app.yaml", "sub/git-config"]);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let p = files_output_path("clusters/dev", "bad", "sub/git-config");
    assert!(store_files(&state).lines().any(|l| l == p));
}

/// Every kind of name the Git writer refuses (`.git` in any case or disguise a Git checkout on
/// NTFS or HFS+ would resolve to `.git`, backslashes) fails only the request that wrote it.
#[test]
fn names_the_git_writer_refuses_fail_only_their_request() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    add_files_promise(&config, "dev");
    let refused = [
        ".git/config",
        "sub/.GIT/config",
        "sub/.Git/HEAD",
        "sub/.git./config",
        "sub/.git  /config",
        "sub/.git::$INDEX_ALLOCATION/config",
        "sub/git~1/config",
        "sub/GIT~1/config",
        "sub/.g\u{200c}it/config",
        "sub/a\\b.yaml",
        "sub/tab\there.yaml",
    ];
    for (i, p) in refused.iter().enumerate() {
        files_request(&config, &format!("bad-{i}"), &["app.yaml", p]);
    }
    // Names that look alike but Git takes: these commit.
    let fine = [
        "sub/.gitignore",
        "sub/.github/x.yaml",
        "sub/git/x",
        "sub/x~",
    ];
    files_request(&config, "good", &fine);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("state store GitStateStore/local: commit"),
        "{out}\n{err}"
    );
    let files = store_files(&state);
    for rel in fine {
        let p = files_output_path("clusters/dev", "good", rel);
        assert!(files.lines().any(|l| l == p), "{p} missing: {files}");
    }
    assert!(files.contains("resources/default/redis/example"), "{files}");
    for (i, p) in refused.iter().enumerate() {
        let name = format!("bad-{i}");
        assert!(!files.contains(&format!("files/{name}/")), "{p}: {files}");
        let s = status(&state, &format!("files/default/{name}"));
        let msg = s["status"]["message"].as_str().unwrap();
        let shown = format!("{p:?}"); // as errors quote it
        assert!(
            msg.contains(*p) || msg.contains(&shown),
            "{p}: the status names the path: {msg}"
        );
    }
}

/// Sets the `filepath.mode` of Destination `dest` (`dev` or `prod`) in the quickstart config.
fn set_mode(config: &std::path::Path, dest: &str, mode: &str) {
    let d = config.join("platform/destinations.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    let path = format!("  path: clusters/{dest}\n");
    assert!(text.contains(&path), "{text}");
    std::fs::write(
        &d,
        text.replacen(&path, &format!("{path}  filepath:\n    mode: {mode}\n"), 1),
    )
    .unwrap();
}

/// Three requests whose pipelines all write `configmap.yaml` to one `aggregatedYAML`
/// Destination: one pass puts all three in the aggregate (Kratix: every WorkPlacement on the
/// Destination), in the documented order, and the next pass changes nothing.
#[test]
fn aggregated_yaml_takes_every_request_of_one_pass() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    set_mode(&config, "dev", "aggregatedYAML");
    add_files_promise(&config, "dev");
    for name in ["c", "a", "b"] {
        files_request(&config, name, &["configmap.yaml"]);
    }
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    for name in ["a", "b", "c"] {
        let r = status(&state, &format!("files/default/{name}"));
        assert_eq!(condition(&r, "Reconciled")["status"], "True", "{r}");
        assert_eq!(
            r["status"]["destinations"][0]["path"], "clusters/dev/aggregated.yaml",
            "{r}"
        );
    }
    let store = state.join("quickstart-state.git");
    let agg = git(&store, &["show", "main:clusters/dev/aggregated.yaml"]);
    let docs = promised::config::parse_yaml_stream(&agg).unwrap();
    let names: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap_or_default(),
                d["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let configmaps: Vec<&str> = names
        .iter()
        .filter(|(k, _)| *k == "ConfigMap")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(configmaps, ["a", "b", "c"], "{agg}");
    // Documented order: Promise-level work first, then requests by Promise (files <
    // namespace < redis), namespace, name.
    let pos = |kind: &str, name: &str| {
        names
            .iter()
            .position(|x| *x == (kind, name))
            .unwrap_or_else(|| panic!("{kind} {name} missing: {names:?}"))
    };
    assert!(
        pos("Deployment", "redis-operator") < pos("ConfigMap", "a"),
        "{names:?}"
    );
    assert!(
        pos("ConfigMap", "c") < pos("Namespace", "team-a"),
        "{names:?}"
    );
    assert!(
        pos("Namespace", "team-a") < pos("RedisFailover", "example"),
        "{names:?}"
    );
    assert_eq!(agg.matches("\n---\n").count(), docs.len() - 1, "{agg}");

    let head = git(&store, &["rev-parse", "main"]);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(
        git(&store, &["rev-parse", "main"]),
        head,
        "no new commit: {out}"
    );
}

/// mode `none`: two requests writing one path on one Destination is an error for the later
/// one (by key), which keeps what it had; the earlier one owns the file, in every pass.
#[test]
fn none_mode_collision_fails_the_later_request() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    set_mode(&config, "dev", "none");
    add_files_promise(&config, "dev");
    files_request(&config, "a", &["configmap.yaml", "only-a.yaml"]);
    files_request(&config, "b", &["configmap.yaml", "only-b.yaml"]);
    let store = state.join("quickstart-state.git");
    for pass in 0..2 {
        let (code, out, err) = reconcile(&config, &state);
        assert_eq!(code, 1, "pass {pass}: {out}\n{err}");
        let a = status(&state, "files/default/a");
        assert_eq!(condition(&a, "Reconciled")["status"], "True", "{a}");
        let b = status(&state, "files/default/b");
        assert_eq!(
            condition(&b, "WorksSucceeded")["reason"],
            "WorksFailing",
            "{b}"
        );
        let msg = b["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("clusters/dev/configmap.yaml is also written by placement dev/resources/default/files/a/"),
            "pass {pass}: {msg}"
        );
        assert_eq!(b["status"]["destinations"], serde_json::json!([]), "{b}");
        let cm = git(&store, &["show", "main:clusters/dev/configmap.yaml"]);
        assert!(cm.contains("name: a"), "{cm}");
        let files = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
        assert!(files.contains("clusters/dev/only-a.yaml"), "{files}");
        assert!(!files.contains("only-b.yaml"), "{files}");
    }
}

/// The quickstart's `platform/destinations.yaml` without Destination `prod` (dev only).
fn remove_prod(config: &std::path::Path) -> String {
    let d = config.join("platform/destinations.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    let (dev, prod) = text.split_once("---\n").unwrap();
    assert!(prod.contains("name: prod"), "{prod}");
    std::fs::write(&d, dev).unwrap();
    text
}

/// `git ls-tree -r main` lines (mode, blob id, path) whose path starts with one of `prefixes`.
fn tree_under(store: &std::path::Path, prefixes: &[&str]) -> Vec<String> {
    git(store, &["ls-tree", "-r", "main"])
        .lines()
        .filter(|l| {
            let path = l.split_once('\t').map_or("", |(_, p)| p);
            prefixes.iter().any(|p| path.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// Kratix `cleanup: none` (the default): a removed Destination keeps every file (workloads,
/// canaries, its ownership index), byte for byte; its requests stay placed there, reported
/// misplaced, and are not moved. When it comes back, the files are its own again, unchanged.
#[test]
fn removing_a_destination_with_cleanup_none_keeps_every_file() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let store = state.join("quickstart-state.git");
    let prod = || tree_under(&store, &["clusters/prod/", ".promised/index/prod/"]);
    let before = prod();
    for f in [
        "clusters/prod/resources/default/namespace/team-b-prod/",
        "clusters/prod/dependencies/kratix-canary-namespace.yaml",
        "clusters/prod/resources/kratix-canary-configmap.yaml",
        ".promised/index/prod/",
    ] {
        assert!(before.iter().any(|l| l.contains(f)), "{f}: {before:#?}");
    }

    let destinations = remove_prod(&config);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(prod(), before, "every file of prod stays as it was");
    let b = status(&state, "namespace/default/team-b-prod");
    assert_eq!(
        condition(&b, "WorksSucceeded")["reason"],
        "WorksMisplaced",
        "{b}"
    );
    let landed = b["status"]["destinations"].as_array().unwrap();
    assert_eq!(landed.len(), 1, "{b}");
    assert_eq!(landed[0]["destination"], "prod");
    assert_eq!(landed[0]["misplaced"], true);
    let head = git(&store, &["rev-parse", "main"]);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        git(&store, &["rev-parse", "main"]),
        head,
        "no change: {out}"
    );

    // prod comes back: its files are adopted as they are; nothing to commit.
    std::fs::write(config.join("platform/destinations.yaml"), destinations).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(prod(), before);
    assert_eq!(
        git(&store, &["rev-parse", "main"]),
        head,
        "no change: {out}"
    );
    let b = status(&state, "namespace/default/team-b-prod");
    assert_eq!(condition(&b, "WorksSucceeded")["status"], "True", "{b}");
    assert_eq!(condition(&b, "Reconciled")["status"], "True", "{b}");
    assert_eq!(b["status"]["destinations"][0]["destination"], "prod", "{b}");
    assert_ne!(b["status"]["destinations"][0]["misplaced"], true, "{b}");
}

/// Kratix `cleanup: all`: a removed Destination loses everything promised wrote under its
/// path (workloads, the aggregate file, canaries) and its ownership index; its requests are
/// pending until another Destination matches. Other Destinations are untouched.
#[test]
fn removing_a_destination_with_cleanup_all_removes_everything_under_it() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    set_mode(&config, "dev", "aggregatedYAML");
    let d = config.join("platform/destinations.yaml");
    let text = std::fs::read_to_string(&d).unwrap();
    std::fs::write(
        &d,
        text.replace("  stateStoreRef:\n", "  cleanup: all\n  stateStoreRef:\n"),
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let store = state.join("quickstart-state.git");
    let dev = || tree_under(&store, &["clusters/dev/", ".promised/index/dev/"]);
    let dev_before = dev();
    // Files, and whether there is an index (one shard per placement's shard: 1 to 3 files).
    let count = |lines: &[String]| {
        let index = lines.iter().filter(|l| l.contains("\t.promised/")).count();
        (lines.len() - index, index.min(1))
    };
    assert_eq!(
        count(&dev_before),
        (3, 1),
        "aggregate, 2 canaries: {dev_before:#?}"
    );
    let prod = tree_under(&store, &["clusters/prod/", ".promised/index/prod/"]);
    assert_eq!(count(&prod), (3, 1), "team-b-prod, 2 canaries: {prod:#?}");

    remove_prod(&config);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let prod = tree_under(&store, &["clusters/prod", ".promised/index/prod/"]);
    assert!(prod.is_empty(), "{prod:#?}");
    assert_eq!(dev(), dev_before, "dev is untouched");
    let b = status(&state, "namespace/default/team-b-prod");
    assert_eq!(
        condition(&b, "WorksSucceeded")["reason"],
        "WorksPending",
        "{b}"
    );
    assert_eq!(b["status"]["destinations"], serde_json::json!([]), "{b}");

    // The aggregatedYAML Destination goes too: nothing is left.
    std::fs::write(
        &d,
        "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: unused\nspec:\n  url: unused.git\n",
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let all = git(&store, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(all, "", "{all}");
    let head = git(&store, &["rev-parse", "main"]);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        git(&store, &["rev-parse", "main"]),
        head,
        "no change: {out}"
    );
}

/// After a `cleanup: none` removal: files deleted by hand together with the Destination's index
/// file are let go (not restored); when the Destination comes back they are written again from
/// the kept placements, no pipeline run. A request deleted while its Destination is gone has its
/// files there pruned; the canaries and the index stay.
#[test]
fn a_removed_none_destination_lets_go_with_its_index_and_is_adopted_back() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (tmp, config, state) = setup();
    assert_eq!(reconcile(&config, &state).0, 0);
    let store = state.join("quickstart-state.git");
    let prod = || tree_under(&store, &["clusters/prod/", ".promised/index/prod/"]);
    let before = prod();
    let destinations = remove_prod(&config);
    assert_eq!(reconcile(&config, &state).0, 0);
    assert_eq!(prod(), before);

    // Someone removes prod's files and its index file.
    let work = tmp.path().join("work");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            store.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(
        &work,
        &["rm", "-rq", "clusters/prod", ".promised/index/prod"],
    );
    git(&work, &["commit", "-qm", "let prod go"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(prod(), Vec::<String>::new(), "not restored: {out}");

    // prod is back: written again from the kept placements.
    std::fs::write(config.join("platform/destinations.yaml"), &destinations).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(prod(), before);

    // Removed again, then team-b-prod is deleted: its files go, canaries and index stay.
    remove_prod(&config);
    assert_eq!(reconcile(&config, &state).0, 0);
    let r = config.join("requests/namespaces.yaml");
    let text = std::fs::read_to_string(&r).unwrap();
    std::fs::write(&r, text.split("---\n").next().unwrap()).unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let (index, files): (Vec<String>, Vec<String>) = prod()
        .iter()
        .map(|l| l.split_once('\t').unwrap().1.to_string())
        .partition(|p| p.starts_with(".promised/"));
    assert_eq!(
        files,
        [
            "clusters/prod/dependencies/kratix-canary-namespace.yaml",
            "clusters/prod/resources/kratix-canary-configmap.yaml",
        ]
    );
    assert!(!index.is_empty(), "the canaries stay indexed");
}

/// A Destination removed with `cleanup: none` that comes back with another `path` takes its
/// placements there: the files move (written at the new path, pruned at the old one).
#[test]
fn a_removed_none_destination_back_with_another_path_moves_its_files() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let (_tmp, config, state) = setup();
    assert_eq!(reconcile(&config, &state).0, 0);
    let store = state.join("quickstart-state.git");
    let destinations = remove_prod(&config);
    assert_eq!(reconcile(&config, &state).0, 0);
    std::fs::write(
        config.join("platform/destinations.yaml"),
        destinations.replace("path: clusters/prod", "path: clusters/prod-2"),
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 pipelines run"), "{out}");
    assert!(tree_under(&store, &["clusters/prod/"]).is_empty());
    let moved = tree_under(&store, &["clusters/prod-2/"]);
    assert!(
        moved.iter().any(|l| l.contains(
            "clusters/prod-2/resources/default/namespace/team-b-prod/instance-configure/5058f/"
        )),
        "{moved:#?}"
    );
    let b = status(&state, "namespace/default/team-b-prod");
    assert_eq!(condition(&b, "Reconciled")["status"], "True", "{b}");
    assert_ne!(b["status"]["destinations"][0]["misplaced"], true, "{b}");
}

/// An invalid request whose namespace and name look like a path (`x/../..`, `../../../etc`)
/// is shown in the reconcile report and the status table with both quoted as written
/// (`redis/"x/../.."/"../../../etc"`), never joined into `redis/x/../../../../../etc`; valid
/// keys stay as they were.
#[test]
fn invalid_request_names_are_quoted_in_report_and_status() {
    let (_tmp, config, state) = setup();
    std::fs::write(
        config.join("requests/bad.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: ../../../etc\n  namespace: x/../..\nspec: {}\n---\napiVersion: marketplace.kratix.io/v1alpha1\nkind: redis\nmetadata:\n  name: Upper\n  namespace: default\nspec: {}\n",
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    let joined = "x/../../";
    let row = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} row in\n{text}"))
            .to_string()
    };
    for text in [out.clone(), {
        let (code, table, err) =
            common::promised(&["status", "--state-dir", state.to_str().unwrap()]);
        assert_eq!(code, 0, "{table}\n{err}");
        table
    }] {
        assert!(
            row(&text, r#"redis/"x/../.."/"../../../etc""#).contains("Invalid"),
            "{text}"
        );
        assert!(
            row(&text, r#"redis/default/"Upper""#).contains("Invalid"),
            "{text}"
        );
        row(&text, "redis/default/example");
        row(&text, "namespace/default/team-a");
        assert!(!text.contains(joined), "{text}");
    }
    let s = status(&state, r#"redis/"x/../.."/"../../../etc""#);
    assert_eq!(condition(&s, "Reconciled")["status"], "False");

    // A state directory written before keys were quoted holds the joined key: the next pass
    // forgets it, and the request shows once, quoted.
    let quoted = r#"redis/\"x/../..\"/\"../../../etc\""#;
    let mut migrated = false;
    for f in ["state.json", "state.journal"] {
        let p = state.join(f);
        if let Ok(text) = std::fs::read_to_string(&p)
            && text.contains(quoted)
        {
            std::fs::write(&p, text.replace(quoted, "redis/x/../../../../../etc")).unwrap();
            migrated = true;
        }
    }
    assert!(migrated, "the quoted key is in the state files");
    let (_, before, _) = common::promised(&["status", "--state-dir", state.to_str().unwrap()]);
    assert!(before.contains(joined), "{before}");
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    let (_, table, _) = common::promised(&["status", "--state-dir", state.to_str().unwrap()]);
    for text in [&out, &table] {
        assert!(!text.contains(joined), "{text}");
        assert_eq!(
            text.matches(r#"redis/"x/../.."/"../../../etc""#).count(),
            1,
            "{text}"
        );
    }
}
