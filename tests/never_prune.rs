//! A config file that does not load never removes anything (README "A bad file never
//! prunes"): `promised reconcile` on a directory, the real binary, real pipelines.
//! The daemon on a Git remote is covered in tests/daemon.rs
//! (`the_daemon_on_a_git_remote_never_prunes_for_a_file_that_does_not_load`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bwrap_works, condition, copy_dir, git, promised, repo_root, status_row};

/// The quickstart with delete workflows on both namespace workflows, so a delete that should
/// not happen would run a pipeline (and show in the report).
fn config(tmp: &Path) -> PathBuf {
    let config = tmp.join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let p = config.join("promises/namespace/promise.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    let delete = |name: &str| {
        format!(
            "      delete:\n        - apiVersion: platform.kratix.io/v1alpha1\n          kind: Pipeline\n          metadata:\n            name: {name}\n          spec:\n            containers:\n              - name: d\n                image: promised.dev/local\n                command: [\"sh\", \"-c\", \"true\"]\n"
        )
    };
    let text = text.replacen(
        "    resource:\n",
        &format!(
            "    promise:\n{}    resource:\n{}",
            delete("promise-delete"),
            delete("instance-delete")
        ),
        1,
    );
    std::fs::write(&p, text).unwrap();
    config
}

/// `promised reconcile --output json` as a JSON report, with the exit code. When
/// `drop_dac` is set and we are root, the capabilities that let root read any file are
/// dropped (so a mode-000 file is unreadable to promised as it is to any other user).
fn reconcile(config: &Path, state: &Path, drop_dac: bool) -> (i32, serde_json::Value, String) {
    let bin = env!("CARGO_BIN_EXE_promised");
    let mut cmd = if drop_dac && is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-dac_override,-dac_read_search", bin]);
        c
    } else {
        Command::new(bin)
    };
    let out = cmd
        .args(["reconcile", "--output", "json", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("promised runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report is JSON ({e}); stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), report, stderr)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Every file of the state store's `main` with its blob id.
fn tree(state: &Path) -> String {
    git(
        &state.join("quickstart-state.git"),
        &["ls-tree", "-r", "main"],
    )
}

fn actions<'a>(report: &'a serde_json::Value, action: &str) -> Vec<&'a str> {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == action)
        .map(|o| o["key"].as_str().unwrap())
        .collect()
}

/// One way to break a file, and the objects it held.
struct Breakage {
    what: &'static str,
    file: &'static str,
    held: &'static [&'static str],
    break_it: fn(&Path),
}

fn tab_in_indentation(p: &Path) {
    let text = std::fs::read_to_string(p).unwrap();
    std::fs::write(p, text.replacen("\n  name:", "\n\tname:", 1)).unwrap();
}

fn unclosed_bracket(p: &Path) {
    let mut text = std::fs::read_to_string(p).unwrap();
    text.push_str("extra: [a, b\n");
    std::fs::write(p, text).unwrap();
}

fn oversize(p: &Path) {
    let mut text = std::fs::read_to_string(p).unwrap();
    let pad = format!("# {}\n", "x".repeat(1022));
    while text.len() <= 16 * 1024 * 1024 {
        text.push_str(&pad);
    }
    std::fs::write(p, text).unwrap();
}

fn unreadable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o000)).unwrap();
}

const BREAKAGES: &[Breakage] = &[
    Breakage {
        what: "a tab in a request file",
        file: "requests/namespaces.yaml",
        held: &["namespace/default/team-a", "namespace/default/team-b-prod"],
        break_it: tab_in_indentation,
    },
    Breakage {
        what: "a tab in a promise.yaml",
        file: "promises/namespace/promise.yaml",
        held: &["promise/namespace"],
        break_it: tab_in_indentation,
    },
    Breakage {
        what: "an unclosed [",
        file: "requests/namespaces.yaml",
        held: &["namespace/default/team-a", "namespace/default/team-b-prod"],
        break_it: unclosed_bracket,
    },
    Breakage {
        what: "an oversize file",
        file: "requests/namespaces.yaml",
        held: &["namespace/default/team-a", "namespace/default/team-b-prod"],
        break_it: oversize,
    },
    Breakage {
        what: "an unreadable file",
        file: "requests/namespaces.yaml",
        held: &["namespace/default/team-a", "namespace/default/team-b-prod"],
        break_it: unreadable,
    },
    Breakage {
        what: "an unclosed [ in the Destinations' file",
        file: "platform/destinations.yaml",
        held: &[],
        break_it: unclosed_bracket,
    },
];

#[test]
fn a_config_file_that_does_not_load_never_prunes_and_fixing_it_returns_to_normal() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let state = tmp.path().join("state");
    let (code, first, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 0, "{first}\n{stderr}");
    let good = tree(&state);
    assert!(good.contains("team-a") && good.contains("team-b"), "{good}");

    for b in BREAKAGES {
        let path = config.join(b.file);
        let original = std::fs::read(&path).unwrap();
        (b.break_it)(&path);
        let (code, report, stderr) = reconcile(&config, &state, true);
        assert_eq!(code, 1, "{}: exit code\n{report}\n{stderr}", b.what);
        assert!(
            stderr.contains(b.file),
            "{}: the error names the file\n{stderr}",
            b.what
        );
        assert_eq!(tree(&state), good, "{}: every committed file stays", b.what);
        assert_eq!(
            report["pipelines_run"], 0,
            "{}: nothing runs\n{report}",
            b.what
        );
        assert!(
            actions(&report, "deleted").is_empty(),
            "{}: nothing deleted\n{report}",
            b.what
        );
        // The held objects are listed first, Failed, with the file's error.
        let failed = actions(&report, "failed");
        let listed: Vec<&str> = report["objects"].as_array().unwrap()[..b.held.len()]
            .iter()
            .map(|o| o["key"].as_str().unwrap())
            .collect();
        for key in b.held {
            assert!(failed.contains(key), "{}: {key} failed\n{report}", b.what);
            assert!(listed.contains(key), "{}: {key} first\n{report}", b.what);
            let row = status_row(&state, key);
            let reconciled = condition(&row, "Reconciled");
            assert_eq!(reconciled["status"], "False", "{}: {row}", b.what);
            assert_eq!(
                reconciled["reason"], "ConfigFileInvalid",
                "{}: {row}",
                b.what
            );
            let message = row["status"]["message"].as_str().unwrap();
            assert!(
                message.contains(b.file) && message.contains("does not load"),
                "{}: {message}",
                b.what
            );
        }
        // `promised status` lists them first too.
        let (_, table, _) = promised(&[
            "status",
            "--state-dir",
            state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ]);
        let rows: Vec<&str> = table.lines().skip(1).collect();
        for (i, key) in b.held.iter().enumerate() {
            assert!(
                b.held.iter().any(|k| rows[i].starts_with(k)),
                "{}: row {i} is a held object ({key})\n{table}",
                b.what
            );
        }

        // Fixed: back to normal, nothing rewritten.
        std::fs::write(&path, &original).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, report, stderr) = reconcile(&config, &state, false);
        assert_eq!(code, 0, "{}: fixed\n{report}\n{stderr}", b.what);
        assert_eq!(tree(&state), good, "{}: fixed, nothing changes", b.what);
        for key in b.held {
            let row = status_row(&state, key);
            assert_eq!(condition(&row, "Reconciled")["status"], "True", "{row}");
            assert!(
                !row["status"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("does not load"),
                "{row}"
            );
        }
    }

    // A Promise whose file does not load keeps serving: its requests run on the last good
    // version (a new request is admitted and committed).
    tab_in_indentation(&config.join("promises/namespace/promise.yaml"));
    std::fs::write(
        config.join("requests/team-c.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-c\n  namespace: default\nspec:\n  namespaceName: team-c\n",
    )
    .unwrap();
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 1, "{report}\n{stderr}");
    assert!(
        actions(&report, "ran").contains(&"namespace/default/team-c"),
        "{report}"
    );
    assert!(tree(&state).contains("team-c"), "{}", tree(&state));
    let p = config.join("promises/namespace/promise.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("\n\tname:", "\n  name:", 1)).unwrap();

    // Removing the file deletes, with the delete workflow.
    std::fs::remove_file(config.join("requests/namespaces.yaml")).unwrap();
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let mut deleted = actions(&report, "deleted");
    deleted.sort();
    assert_eq!(
        deleted,
        ["namespace/default/team-a", "namespace/default/team-b-prod"],
        "{report}"
    );
    assert_eq!(report["pipelines_run"], 2, "two delete pipelines\n{report}");
    let after = tree(&state);
    assert!(
        !after.contains("team-a/") && !after.contains("team-b-prod/"),
        "{after}"
    );
}

#[test]
fn with_a_fresh_state_directory_the_indexes_keep_what_an_unloadable_file_may_hold() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let state = tmp.path().join("state");
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let good = tree(&state);
    // The state directory is lost (the state store clone stays: it is the remote here).
    for f in ["state.json", "state.journal"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    tab_in_indentation(&config.join("requests/namespaces.yaml"));
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 1, "{report}\n{stderr}");
    assert_eq!(tree(&state), good, "nothing pruned\n{report}");
    assert!(actions(&report, "deleted").is_empty(), "{report}");
    let row = status_row(&state, "namespace/default/team-a");
    assert_eq!(
        condition(&row, "Reconciled")["reason"],
        "ConfigFileInvalid",
        "{row}"
    );
}

/// A Promise removed while its requests' file does not load waits: deleting it then would
/// leave its requests without their delete pipeline once the file loads again.
#[test]
fn a_promise_removed_while_its_requests_are_held_waits_for_them() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = config(tmp.path());
    let state = tmp.path().join("state");
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let good = tree(&state);
    std::fs::remove_file(config.join("promises/namespace/promise.yaml")).unwrap();
    tab_in_indentation(&config.join("requests/namespaces.yaml"));
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 1, "{report}\n{stderr}");
    assert!(actions(&report, "deleted").is_empty(), "{report}");
    assert_eq!(report["pipelines_run"], 0, "{report}");
    assert_eq!(tree(&state), good);
    // The requests' file loads again (the Promise is still gone): the requests are deleted
    // with their delete pipelines, then the Promise with its own.
    std::fs::remove_file(config.join("requests/namespaces.yaml")).unwrap();
    let (code, report, stderr) = reconcile(&config, &state, false);
    assert_eq!(code, 0, "{report}\n{stderr}");
    let mut deleted = actions(&report, "deleted");
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "namespace/default/team-a",
            "namespace/default/team-b-prod",
            "promise/namespace"
        ],
        "{report}"
    );
    assert_eq!(
        report["pipelines_run"], 3,
        "three delete pipelines\n{report}"
    );
}
