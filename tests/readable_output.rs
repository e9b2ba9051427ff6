//! Output a person reads: a failed pipeline's stderr shown once, one status table row per
//! object, and commit subjects that say which config produced them.

mod common;

use std::path::{Path, PathBuf};

use common::{bwrap_works, copy_dir, git, promised, reconcile, repo_root};

fn quickstart(tmp: &Path) -> PathBuf {
    let config = tmp.join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    config
}

/// The namespace pipeline fails with two lines of stderr.
fn failing_namespace_pipeline(config: &Path) {
    let script = config.join("promises/namespace/pipeline/configure");
    let text = std::fs::read_to_string(&script).unwrap().replacen(
        "set -eu\n",
        "set -eu\necho 'first stderr line' >&2\necho 'second stderr line' >&2\nexit 3\n",
        1,
    );
    std::fs::write(&script, text).unwrap();
}

#[test]
fn a_failed_pipelines_stderr_is_shown_once() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    failing_namespace_pipeline(&config);
    let (code, out, err) = reconcile(&config, &tmp.path().join("state"));
    assert_eq!(code, 1, "{out}\n{err}");
    // Two requests fail (team-a and team-b-prod): the report shows each tail once; the log
    // on stderr carries it once per failure, in its own `stderr_tail` field.
    assert_eq!(out.matches("second stderr line").count(), 2, "{out}");
    assert_eq!(err.matches("second stderr line").count(), 2, "{err}");
    assert_eq!(err.matches("stderr_tail=").count(), 2, "{err}");
    // The warning on stderr still names the object and the exit code.
    assert!(
        err.contains("object_name=\"team-a\"") && err.contains("exit code 3"),
        "{err}"
    );
    // Every report line that is not an object row or a summary is an indented tail line.
    for l in out.lines().filter(|l| l.contains("stderr line")) {
        assert!(l.starts_with("      | "), "{l:?}\n{out}");
    }
}

#[test]
fn the_status_table_keeps_one_row_per_object() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = quickstart(tmp.path());
    failing_namespace_pipeline(&config);
    let state = tmp.path().join("state");
    reconcile(&config, &state);
    let (code, table, err) = promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0, "{err}");
    // Header plus one row for each of the 2 Promises and 3 requests (then, after a blank
    // line, the Destinations and state stores).
    let objects = table.split("\n\n").next().unwrap();
    assert_eq!(objects.lines().count(), 6, "{table}");
    assert!(table.contains("\nDESTINATION "), "{table}");
    assert!(!table.contains("stderr line"), "{table}");
    // The whole message is in the JSON form.
    let (_, json, _) = promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
        "--output",
        "json",
    ]);
    assert!(json.contains("second stderr line"), "{json}");
}

/// The subject of the state store's newest commit, and its trailers.
fn last_commit(state: &Path) -> String {
    git(
        &state.join("quickstart-state.git"),
        &["log", "-1", "--format=%B", "main"],
    )
}

#[test]
fn commit_subjects_name_a_directory_configs_head_or_path() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Not a Git work tree: the subject names the directory.
    let plain = quickstart(&tmp.path().join("plain"));
    let state = tmp.path().join("state-plain");
    let (code, out, err) = reconcile(&plain, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let msg = last_commit(&state);
    assert!(
        msg.lines()
            .next()
            .unwrap()
            .ends_with(&format!("(config directory {})", plain.display())),
        "{msg}"
    );
    assert!(!msg.contains("Promised-Config-Commit"), "{msg}");

    // A Git work tree: its HEAD, then `+dirty` with an uncommitted change.
    let repo = quickstart(&tmp.path().join("repo"));
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "config"]);
    let head = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let state = tmp.path().join("state-repo");
    let (code, out, err) = reconcile(&repo, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let msg = last_commit(&state);
    assert!(
        msg.lines()
            .next()
            .unwrap()
            .ends_with(&format!("(config {})", &head[..7])),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Promised-Config-Commit: {head}\n")),
        "{msg}"
    );
    let req = repo.join("requests/redis-example.yaml");
    let text = std::fs::read_to_string(&req).unwrap();
    std::fs::write(&req, text.replace("spec: {}", "spec: {size: large}")).unwrap();
    let (code, out, err) = reconcile(&repo, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let msg = last_commit(&state);
    assert!(
        msg.lines()
            .next()
            .unwrap()
            .ends_with(&format!("(config {}+dirty)", &head[..7])),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("Promised-Config-Commit: {head}+dirty\n")),
        "{msg}"
    );
}
