//! The README's main job: `promised reconcile` on `testdata/quickstart` into a local Git state
//! store, then the incremental behaviour a platform engineer relies on.

mod common;

use std::path::Path;

use common::{bwrap_works, copy_dir, git, promised, reconcile, repo_root};

fn ls(repo: &Path) -> Vec<String> {
    git(repo, &["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn quickstart_reconciles_incrementally_and_survives_losing_its_state() {
    if !bwrap_works() {
        eprintln!("skipped: bubblewrap cannot create sandboxes here (apt-get install bubblewrap)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let state = tmp.path().join("state");
    let store = state.join("quickstart-state.git");

    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("4 pipelines run"), "{out}");
    assert!(
        out.contains(&format!(
            "look: git --git-dir {} log --stat main",
            store.display()
        )),
        "{out}"
    );
    let files = ls(&store);
    for p in [
        "clusters/dev/dependencies/redis/promise-configure/5058f/redis-operator.yaml",
        "clusters/dev/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
        "clusters/dev/resources/default/namespace/team-a/instance-configure/5058f/namespace.yaml",
        "clusters/prod/resources/default/namespace/team-b-prod/instance-configure/5058f/namespace.yaml",
        "clusters/prod/dependencies/kratix-canary-namespace.yaml",
    ] {
        assert!(files.contains(&p.to_string()), "missing {p}: {files:#?}");
    }
    // The redis operator goes to dev only (Promise selector environment: dev); prod is strict.
    assert!(
        !files
            .iter()
            .any(|f| f.starts_with("clusters/prod/dependencies/redis")),
        "{files:#?}"
    );
    let one = git(&store, &["rev-parse", "main"]);
    assert_eq!(
        git(&store, &["rev-list", "--count", "main"]).trim(),
        "1",
        "one commit for the whole pass"
    );

    // What the next process takes from this one instead of parsing and checking again: every
    // config file that parsed, by blob id, and the pipeline images found valid.
    let parsed = std::fs::read_to_string(state.join("config-cache/parsed.json")).unwrap();
    let blob = std::process::Command::new("git")
        .args(["hash-object", "requests/redis-example.yaml"])
        .current_dir(&config)
        .output()
        .unwrap();
    let blob = String::from_utf8(blob.stdout).unwrap();
    assert!(parsed.contains(&format!("\"{}\"", blob.trim())), "{parsed}");
    let references = std::fs::read_to_string(state.join("config-cache/references.json")).unwrap();
    assert!(references.contains("\"references\":[\""), "{references}");

    // No change: no pipeline, no commit.
    let (code, out, _) = reconcile(&config, &state);
    assert_eq!(code, 0);
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(git(&store, &["rev-parse", "main"]), one);

    // Status table and JSON.
    let (code, table, _) = promised(&["status", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 0);
    let line = table
        .lines()
        .find(|l| l.starts_with("redis/default/example"))
        .expect("redis row");
    assert!(
        line.contains("Reconciled") && line.contains("dev") && line.contains(&one[..9]),
        "{line}"
    );
    let (_, yaml, _) = promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "yaml",
    ]);
    assert!(yaml.contains("type: ConfigureWorkflowCompleted"), "{yaml}");

    // One request changes: only it runs.
    let redis = config.join("requests/redis-example.yaml");
    std::fs::write(
        &redis,
        std::fs::read_to_string(&redis)
            .unwrap()
            .replace("spec: {}", "spec:\n  size: large"),
    )
    .unwrap();
    let (_, out, _) = reconcile(&config, &state);
    assert!(out.contains("1 pipelines run"), "{out}");
    let instance = git(
        &store,
        &[
            "show",
            "main:clusters/dev/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
        ],
    );
    assert!(instance.contains("replicas: 3"), "{instance}");
    let two = git(&store, &["rev-parse", "main"]);

    // The state directory is lost; a request is removed meanwhile. The pass rebuilds placements
    // from the store's ownership index, prunes the removed request, and rewrites nothing else.
    std::fs::remove_file(state.join("state.json")).unwrap();
    std::fs::remove_file(config.join("requests/namespaces.yaml")).unwrap();
    std::fs::write(
        config.join("requests/namespaces.yaml"),
        "apiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: team-a\n  namespace: default\nspec:\n  namespaceName: team-a\n",
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &state);
    assert_eq!(code, 0, "{out}\n{err}");
    let files = ls(&store);
    assert!(
        !files.iter().any(|f| f.contains("team-b-prod")),
        "removed request pruned after state loss: {files:#?}"
    );
    assert!(files.iter().any(|f| f.contains("team-a")));
    let three = git(&store, &["rev-parse", "main"]);
    assert_ne!(three, two);
    let changed = git(&store, &["diff", "--name-only", two.trim(), three.trim()]);
    assert!(
        changed
            .lines()
            .all(|l| l.contains("team-b-prod") || l.starts_with(".promised/")),
        "only the pruned files changed:\n{changed}"
    );

    // And once more: converged.
    let (_, out, _) = reconcile(&config, &state);
    assert!(out.contains("0 pipelines run"), "{out}");
    assert_eq!(git(&store, &["rev-parse", "main"]), three);
}

/// A pipeline script saved with Windows line endings (`#!/bin/sh\r\n`) cannot start (the
/// kernel looks for `/bin/sh\r`); the reconcile report and the request's status say so and
/// how to fix it, on bwrap and on `sandbox: none`, instead of a bare "No such file or
/// directory".
#[test]
fn crlf_pipeline_script_gets_a_line_ending_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    copy_dir(&repo_root().join("testdata/quickstart"), &config);
    let script = config.join("promises/namespace/pipeline/configure");
    let lf = std::fs::read_to_string(&script).unwrap();
    std::fs::write(&script, lf.replace('\n', "\r\n")).unwrap();
    let daemon_none = tmp.path().join("none.yaml");
    std::fs::write(&daemon_none, "sandbox: none\n").unwrap();
    let hint = "/promise/pipeline/configure: the script's first line ends with a carriage return (CRLF line endings): its interpreter \"/bin/sh\\r\" does not exist; convert the file to LF line endings";
    let mut modes = vec![("none", Some(&daemon_none))];
    if bwrap_works() {
        modes.push(("bwrap", None));
    } else {
        eprintln!("bwrap part skipped: bubblewrap cannot create sandboxes here");
    }
    for (mode, daemon_config) in modes {
        let state = tmp.path().join(format!("state-{mode}"));
        let mut args = vec![
            "reconcile",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ];
        if let Some(d) = daemon_config {
            args.extend(["--daemon-config", d.to_str().unwrap()]);
        }
        let (code, out, err) = promised(&args);
        assert_eq!(code, 1, "{mode}: {out}\n{err}");
        assert!(out.contains(hint), "{mode}: {out}\n{err}");
        let row = common::status_row(&state, "namespace/default/team-a");
        let msg = common::condition(&row, "Reconciled")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let status_msg = row["status"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(hint) || status_msg.contains(hint),
            "{mode}: {row:#}"
        );
        // The redis request does not use that script and still runs (its script writes to
        // /kratix/output, which only the sandbox provides).
        assert!(
            mode == "none"
                || out
                    .lines()
                    .any(|l| l.starts_with("  redis/default/example") && l.contains("Reconciled")),
            "{mode}: {out}"
        );
    }
}

/// The `look:` line is a command that works: for a remote GitStateStore (git://) it reads
/// promised's clone of the store, for a file:// URL the repository itself; run with `sh -c`
/// it exits 0 and shows the commit the pass made. No credentials are printed.
#[test]
fn look_command_works_for_remote_and_file_url_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    let daemon = common::GitDaemon::start(&served);
    let remote = daemon.bare_repo("state.git");
    let file_url = format!("file://{}", tmp.path().join("file-state.git").display());
    for (case, url) in [("git", remote.as_str()), ("file", file_url.as_str())] {
        let config = tmp.path().join(format!("config-{case}"));
        copy_dir(&repo_root().join("testdata/quickstart"), &config);
        let store = config.join("platform/state-store.yaml");
        let text = std::fs::read_to_string(&store).unwrap();
        std::fs::write(
            &store,
            text.replace("url: quickstart-state.git", &format!("url: {url}")),
        )
        .unwrap();
        let state = tmp.path().join(format!("state-{case}"));
        let (_, out, err) = reconcile(&config, &state);
        let commit = out
            .lines()
            .find_map(|l| l.strip_prefix("state store GitStateStore/local: commit "))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{case}: no commit in\n{out}\n{err}"))
            .to_string();
        let look = out
            .lines()
            .find_map(|l| l.strip_prefix("look: "))
            .unwrap_or_else(|| panic!("{case}: no look line in\n{out}"));
        assert!(look.starts_with("git "), "{case}: {look}");
        let run = std::process::Command::new("sh")
            .args(["-c", look])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let shown = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{case}: {look}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            shown.starts_with(&format!("commit {commit}")),
            "{case}: {look}:\n{shown}"
        );
        assert!(shown.contains("kratix-canary"), "{case}: {shown}");
    }
}
