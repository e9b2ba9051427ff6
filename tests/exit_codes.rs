//! Exit codes tell the truth (README "Commands"): 0 when everything reconciled (or is
//! valid), 1 when some object failed while the rest still committed, 2 when the command could
//! not run at all. One test per exit path, with the real binary.

mod common;

use std::path::{Path, PathBuf};

use common::{bwrap_works, copy_dir, git, promised, repo_root};

fn quickstart(tmp: &Path) -> PathBuf {
    let config = tmp.join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    config
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

fn reconcile(config: &Path, state: &Path) -> (i32, String, String) {
    promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ])
}

/// Files of the local state store's `main`.
fn store_files(state: &Path) -> String {
    git(
        &state.join("quickstart-state.git"),
        &["ls-tree", "-r", "--name-only", "main"],
    )
}

#[test]
fn reconcile_exits_0_when_everything_reconciled() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    let (code, out, err) = reconcile(&config, &tmp.path().join("state"));
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn reconcile_exits_1_when_a_pipeline_fails_and_the_rest_commits() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    edit(
        &config.join("promises/namespace/pipeline/configure"),
        "set -eu\n",
        "set -eu\nexit 3\n",
    );
    let state = tmp.path().join("state");
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        store_files(&state).contains("redis/example"),
        "the rest committed"
    );
}

#[test]
fn reconcile_exits_1_for_an_invalid_request_and_the_rest_commits() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    std::fs::write(
        config.join("requests/bad.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: bad\nspec:\n  namespaceName: NOT_A_DNS_NAME\n",
    )
    .unwrap();
    let state = tmp.path().join("state");
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("requests/bad.yaml"), "{err}");
    assert!(store_files(&state).contains("team-a"), "the rest committed");
}

#[test]
fn reconcile_exits_1_for_a_placement_conflict_and_the_rest_commits() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    // `filepath.mode: none` on dev: team-a and another dev namespace both write
    // `namespace.yaml` at the Destination's root, and the later one conflicts.
    edit(
        &config.join("platform/destinations.yaml"),
        "  path: clusters/dev\n",
        "  path: clusters/dev\n  filepath:\n    mode: none\n",
    );
    std::fs::write(
        config.join("requests/team-z.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-z\nspec:\n  namespaceName: team-z\n",
    )
    .unwrap();
    let state = tmp.path().join("state");
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("also written by"), "{out}");
    assert!(
        store_files(&state).contains("namespace.yaml"),
        "one of them committed"
    );
}

#[test]
fn reconcile_exits_1_when_a_state_store_write_fails() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    // Nothing listens on port 1 of 127.0.0.1.
    edit(
        &config.join("platform/state-store.yaml"),
        "url: quickstart-state.git",
        "url: git://127.0.0.1:1/nowhere.git",
    );
    let (code, out, err) = reconcile(&config, &tmp.path().join("state"));
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("127.0.0.1:1"),
        "the store's error is shown\n{out}"
    );
}

#[test]
fn reconcile_exits_2_when_the_pass_cannot_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = reconcile(&tmp.path().join("no-such-dir"), &tmp.path().join("state"));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("no-such-dir"), "{err}");
}

#[test]
fn validate_exits_0_1_2() {
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    let validate = |dir: &Path| promised(&["validate", dir.to_str().unwrap()]);
    let (code, out, err) = validate(&config);
    assert_eq!(code, 0, "{out}\n{err}");
    edit(
        &config.join("requests/namespaces.yaml"),
        "namespaceName: team-a",
        "namespaceName: TEAM_A",
    );
    let (code, out, err) = validate(&config);
    assert_eq!(code, 1, "{out}\n{err}");
    let (code, out, err) = validate(&tmp.path().join("no-such-dir"));
    assert_eq!(code, 2, "{out}\n{err}");
}

#[test]
fn pipeline_run_exits_0_1_2() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    let run = |promise: &str| {
        promised(&[
            "pipeline",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--promise",
            promise,
            "--request-name",
            "team-a",
        ])
    };
    let (code, out, err) = run("namespace");
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = run("no-such-promise");
    assert_eq!(code, 2, "{out}\n{err}");
    edit(
        &config.join("promises/namespace/pipeline/configure"),
        "set -eu\n",
        "set -eu\nexit 3\n",
    );
    let (code, out, err) = run("namespace");
    assert_eq!(code, 1, "{out}\n{err}");
}

/// A config remote whose HEAD names a branch that does not exist (a bare repo made with
/// `git init --bare -b main` that only got `master` pushed, or HEAD -> refs/heads/nope): exit
/// 2 with an error naming the URL, `HEAD`, the branch HEAD names, the branches that exist and
/// `--ref`, for a git:// remote and for a local path and file:// URL; with `--ref master` it
/// reconciles.
#[test]
fn remote_head_naming_a_missing_branch_lists_the_branches() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let daemon = common::GitDaemon::start(&served);
    let url = daemon.bare_repo("config.git");
    let bare = served.join("config.git");
    let work = quickstart(tmp.path());
    git(&work, &["init", "-q", "-b", "master"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "config"]);
    git(
        &work,
        &[
            "push",
            "-q",
            bare.to_str().unwrap(),
            "master",
            "master:feature",
        ],
    );
    let path = bare.to_str().unwrap().to_string();
    let file_url = format!("file://{path}");
    for (head, missing) in [(None, "main"), (Some("refs/heads/nope"), "nope")] {
        if let Some(h) = head {
            git(&bare, &["symbolic-ref", "HEAD", h]);
        }
        for location in [url.as_str(), path.as_str(), file_url.as_str()] {
            let state = tmp
                .path()
                .join(format!("state-{missing}-{}", location.len()));
            let (code, out, err) = promised(&[
                "reconcile",
                "--config",
                location,
                "--state-dir",
                state.to_str().unwrap(),
            ]);
            assert_eq!(code, 2, "{location}: {out}\n{err}");
            let want = format!(
                "git repository {location}: ref \"HEAD\" not found: HEAD names branch \"{missing}\", which does not exist; branches: feature, master; choose one with --ref <branch>"
            );
            assert!(err.contains(&want), "{location}: {err}");
            assert!(!err.contains("malformed"), "{err}");
        }
        // The daemon's poller (refs only) says the same for the remote and the local path.
        for location in [url.as_str(), path.as_str()] {
            let err = promised::config::source::peek_ref(
                location,
                "HEAD",
                &tmp.path().join("peek-cache"),
                &statestores::NetworkTimeouts::default(),
            )
            .expect_err("HEAD names a missing branch")
            .to_string();
            assert!(
                err.ends_with(&format!("HEAD names branch \"{missing}\", which does not exist; branches: feature, master; choose one with --ref <branch>")),
                "{err}"
            );
        }
    }
    if bwrap_works() {
        let state = tmp.path().join("state-ok");
        let (code, out, err) = promised(&[
            "reconcile",
            "--config",
            &url,
            "--ref",
            "master",
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
    }
}
