//! Finished work survives a crash: `promised reconcile` killed with SIGKILL in the middle of a
//! pass, again and again, keeps what finished (each restart has less to run), converges to
//! the tree a clean run makes, and leaves no run directory behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bwrap_works, copy_dir, git, promised, repo_root};

const REQUESTS: usize = 12;

/// The quickstart with `REQUESTS` more namespace requests, whose pipeline takes a while.
fn config(tmp: &Path) -> PathBuf {
    let config = tmp.join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let script = config.join("promises/namespace/pipeline/configure");
    let text =
        std::fs::read_to_string(&script)
            .unwrap()
            .replacen("set -eu\n", "set -eu\nsleep 0.4\n", 1);
    std::fs::write(&script, text).unwrap();
    for i in 0..REQUESTS {
        std::fs::write(
            config.join(format!("requests/ns-{i}.yaml")),
            format!("apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: ns-{i}\n  namespace: default\nspec:\n  namespaceName: ns-{i}\n"),
        )
        .unwrap();
    }
    config
}

fn reconcile_cmd(config: &Path, state: &Path, run_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promised"));
    cmd.args(["reconcile", "--output", "json", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .env("PROMISED_RUN_DIR", run_dir);
    cmd
}

/// Pipelines that succeeded, as the state directory says now.
fn completed(state: &Path) -> usize {
    if !state.join("state.json").exists() {
        return 0;
    }
    let (code, out, err) = promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["status"]["pipelines"].as_array().unwrap())
        .filter(|p| p["phase"] == "Succeeded")
        .count()
}

fn tree(state: &Path) -> String {
    git(
        &state.join("quickstart-state.git"),
        &["ls-tree", "-r", "main"],
    )
}

#[test]
fn a_pass_killed_again_and_again_keeps_finished_work_and_converges() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    // One pipeline per namespace request (and team-a, team-b-prod), the redis Promise's and
    // its request's.
    let total = REQUESTS + 4;
    let run_dir = tmp.path().join("run");

    // A clean run, for the tree to converge to.
    let clean = tmp.path().join("clean");
    let out = reconcile_cmd(&config, &clean, &run_dir).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let clean_tree = tree(&clean);

    // Killed as soon as a finished workflow is on disk, until a run gets to the end.
    let state = tmp.path().join("state");
    let mut done = 0;
    let mut kills = 0;
    let report: serde_json::Value = loop {
        let mut child = reconcile_cmd(&config, &state, &run_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            if completed(&state) > done {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if finished {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "the last run succeeds");
            break serde_json::from_slice(&out.stdout).unwrap();
        }
        kills += 1;
        let now = completed(&state);
        assert!(
            now > done,
            "kill {kills}: what finished before the kill is kept ({now} after, {done} before)"
        );
        done = now;
        assert!(kills <= total, "every restart has less to run");
    };
    assert!(kills >= 2, "killed {kills} times: the pass was too short");
    // The last run ran only what was left (it may have lost the results it had not yet
    // journalled when killed, never more), and nothing at all is left to run.
    let ran = report["pipelines_run"].as_u64().unwrap() as usize;
    assert!(
        ran <= total - done,
        "the last run ran {ran}, with {done} of {total} finished before it"
    );
    assert_eq!(completed(&state), total);
    assert_eq!(tree(&state), clean_tree, "the same tree as a clean run");
    // fsck: no corruption from the kills.
    git(&state.join("quickstart-state.git"), &["fsck", "--strict"]);
    // No run directory is left: the killed processes' are removed at the next start, the
    // last process removed its own.
    let left: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "run directories left: {left:?}");
}
