//! Reconcile engine behaviours through `promised reconcile` (and, where a pass must be
//! cancelled, the library's [`Engine`]): status in `object.yaml` between pipelines and passes,
//! re-runs on script and image-asset edits, invalid and pending requests, lost cached output,
//! delete pipelines (also after the state directory is lost), and shutdown.

mod common;

use std::path::{Path, PathBuf};

use common::{bwrap_works, condition, copy_dir, git, promised, repo_root, status_row};
use serde_json::Value;

/// A copy of the quickstart whose state store is a bare repository outside the state
/// directory (so the state directory can be deleted without losing the store).
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    store: PathBuf,
    daemon_config: Option<PathBuf>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let config = root.join("config");
        copy_dir(&repo_root().join("testdata/quickstart"), &config);
        let store = root.join("store.git");
        let ss = config.join("platform/state-store.yaml");
        let text = std::fs::read_to_string(&ss).unwrap().replace(
            "url: quickstart-state.git",
            &format!("url: {}", store.display()),
        );
        std::fs::write(&ss, text).unwrap();
        World {
            _tmp: tmp,
            state: root.join("state"),
            root,
            config,
            store,
            daemon_config: None,
        }
    }

    fn reconcile(&self) -> (i32, String, String) {
        let mut args = vec![
            "reconcile",
            "--config",
            self.config.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
        ];
        if let Some(d) = &self.daemon_config {
            args.extend(["--daemon-config", d.to_str().unwrap()]);
        }
        promised(&args)
    }

    /// The library's engine on this world's state directory (and daemon config), with the
    /// config validated and its root, for a pass run in process.
    fn engine(
        &self,
    ) -> (
        promised::reconcile::Engine,
        promised::validate::ValidConfig,
        PathBuf,
    ) {
        let settings = common::settings(&self.state, self.daemon_config.as_deref());
        let (cfg, root) =
            common::valid_config(&self.config, &self.root.join("checkouts"), &settings);
        let runner = settings.runner();
        let engine = promised::reconcile::Engine::new(settings, runner).unwrap();
        (engine, cfg, root)
    }

    /// Reconciles and asserts the exit code; returns stdout.
    fn pass(&self, want: i32) -> String {
        let (code, out, err) = self.reconcile();
        assert_eq!(code, want, "{out}\n{err}");
        out
    }

    fn edit(&self, rel: &str, f: impl FnOnce(String) -> String) {
        let p = self.config.join(rel);
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(text)).unwrap();
    }

    fn write_script(&self, rel: &str, body: &str) {
        let p = self.config.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn files(&self) -> String {
        git(&self.store, &["ls-tree", "-r", "--name-only", "main"])
    }

    fn head(&self) -> String {
        git(&self.store, &["rev-parse", "main"]).trim().to_string()
    }

    fn status(&self, key: &str) -> Value {
        status_row(&self.state, key)
    }
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no line for {key}:\n{out}"))
}

fn pipeline_yaml(name: &str, image: &str, command: Option<&str>) -> String {
    let mut s = format!(
        "        - apiVersion: platform.kratix.io/v1alpha1\n          kind: Pipeline\n          metadata:\n            name: {name}\n          spec:\n            containers:\n              - name: c\n                image: {image}\n"
    );
    if let Some(c) = command {
        s.push_str(&format!("                command: [\"{c}\"]\n"));
    }
    s
}

macro_rules! need_bwrap {
    () => {
        if !bwrap_works() {
            eprintln!("skipped: no bubblewrap");
            return;
        }
    };
}

#[test]
fn object_yaml_carries_status_between_pipelines_and_passes() {
    need_bwrap!();
    let w = World::new();
    // Two more redis resource pipelines: the first counts runs from .status.runs, the second
    // reports what the first (and instance-configure) wrote, read from object.yaml.
    w.write_script(
        "promises/redis/pipeline/stage-one",
        "#!/bin/sh\nset -eu\nruns=$(sed -n '/^status:/,$s/^  runs: *//p' /kratix/input/object.yaml)\nprintf 'stage: one\\nruns: %s\\n' $(( ${runs:-0} + 1 )) > /kratix/metadata/status.yaml\n",
    );
    w.write_script(
        "promises/redis/pipeline/stage-two",
        "#!/bin/sh\nset -eu\nget() { sed -n \"/^status:/,\\$s/^  $1: *//p\" /kratix/input/object.yaml; }\nprintf 'seenStage: \"%s\"\\nseenReplicas: \"%s\"\\nseenReconciled: \"%s\"\\n' \"$(get stage)\" \"$(get replicas)\" \"$(grep -c 'type: Reconciled' /kratix/input/object.yaml)\" > /kratix/metadata/status.yaml\n",
    );
    w.edit("promises/redis/promise.yaml", |t| {
        t + &pipeline_yaml(
            "stage-one",
            "promised.dev/local",
            Some("/promise/pipeline/stage-one"),
        ) + &pipeline_yaml(
            "stage-two",
            "promised.dev/local",
            Some("/promise/pipeline/stage-two"),
        )
    });
    w.pass(0);
    let f = &w.status("redis/default/example")["status"]["fields"];
    assert_eq!(f["runs"], 1, "{f}");
    assert_eq!(
        f["seenStage"], "one",
        "pipeline 2 saw pipeline 1's status: {f}"
    );
    assert_eq!(f["seenReplicas"], "1", "and instance-configure's: {f}");
    assert_eq!(
        f["seenReconciled"], "0",
        "no conditions before the first run: {f}"
    );

    // Status is not an input: an unchanged pass runs nothing.
    assert!(w.pass(0).contains("0 pipelines run"));

    // The next run (a spec edit) sees the status of the previous pass.
    w.edit("requests/redis-example.yaml", |t| {
        t.replace("spec: {}", "spec:\n  size: large")
    });
    let out = w.pass(0);
    assert!(out.contains("3 pipelines run"), "{out}");
    let f = &w.status("redis/default/example")["status"]["fields"];
    assert_eq!(f["runs"], 2, "{f}");
    assert_eq!(f["seenReplicas"], "3", "{f}");
    assert_eq!(
        f["seenReconciled"], "1",
        "Kratix conditions are in status: {f}"
    );
}

#[test]
fn editing_a_promise_script_or_image_assets_reruns_what_uses_them() {
    need_bwrap!();
    let mut w = World::new();
    w.pass(0);
    // A script in the namespace Promise's folder: its two requests run, redis does not.
    w.edit("promises/namespace/pipeline/configure", |t| {
        t + "# edited\n"
    });
    let out = w.pass(0);
    assert!(out.contains("2 pipelines run"), "{out}");
    assert!(
        line(&out, "redis/default/example").contains("unchanged"),
        "{out}"
    );
    assert!(
        line(&out, "namespace/default/team-a").contains(" ran "),
        "{out}"
    );
    // A YAML file beside it is config, not a script: nothing runs.
    std::fs::write(
        w.config.join("promises/namespace/notes.yaml"),
        "# not an object\n",
    )
    .unwrap();
    assert!(w.pass(0).contains("0 pipelines run"));

    // An image override with a read-only asset mount and a writable one.
    let assets = w.root.join("assets");
    let scratch = w.root.join("scratch");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(assets.join("template.txt"), "v1\n").unwrap();
    let dc = w.root.join("promised.yaml");
    std::fs::write(
        &dc,
        format!(
            "imageOverrides:\n  promised.dev/local:\n    mounts:\n      - {{host: \"{}\", target: /tmp/assets}}\n      - {{host: \"{}\", target: /tmp/scratch, writable: true}}\n",
            assets.display(),
            scratch.display()
        ),
    )
    .unwrap();
    w.daemon_config = Some(dc);
    assert!(
        w.pass(0).contains("4 pipelines run"),
        "a new override runs all"
    );
    assert!(w.pass(0).contains("0 pipelines run"));
    // What pipelines may write (a writable mount) is not an input.
    std::fs::write(scratch.join("written-by-a-pipeline"), "x").unwrap();
    assert!(w.pass(0).contains("0 pipelines run"));
    // The assets are.
    std::fs::write(assets.join("template.txt"), "v2\n").unwrap();
    let out = w.pass(0);
    assert!(out.contains("4 pipelines run"), "{out}");
}

#[test]
fn an_invalid_or_duplicated_request_keeps_its_output_and_says_why() {
    need_bwrap!();
    let w = World::new();
    w.pass(0);
    let dir = "clusters/dev/resources/default/redis/example/instance-configure";
    assert!(w.files().contains(dir));

    w.edit("requests/redis-example.yaml", |t| {
        t.replace("spec: {}", "spec:\n  size: medium")
    });
    let out = w.pass(1);
    assert!(
        line(&out, "redis/default/example").contains("FAILED"),
        "{out}"
    );
    assert!(
        !out.contains("INVALID"),
        "shown once, as the request's line: {out}"
    );
    let s = w.status("redis/default/example");
    assert_eq!(condition(&s, "Reconciled")["status"], "False");
    assert_eq!(condition(&s, "Reconciled")["reason"], "InvalidRequest");
    assert_eq!(
        s["status"]["message"],
        "Invalid: spec.size: \"medium\" does not match ^(small|large)$"
    );
    assert!(
        s["status"]["source"]
            .as_str()
            .unwrap()
            .contains("requests/redis-example.yaml"),
        "{s}"
    );
    assert!(w.files().contains(dir), "only removal deletes");
    assert_eq!(s["status"]["destinations"][0]["destination"], "dev", "{s}");
    let (_, table, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("redis/default/example") && l.contains("Invalid: spec.size")),
        "{table}"
    );

    // Valid again (the same spec as before): it runs again and is Reconciled.
    w.edit("requests/redis-example.yaml", |t| {
        t.replace("spec:\n  size: medium", "spec: {}")
    });
    let out = w.pass(0);
    assert!(out.contains("1 pipelines run"), "{out}");
    let s = w.status("redis/default/example");
    assert_eq!(condition(&s, "Reconciled")["status"], "True");
    assert_eq!(
        s["status"]["message"],
        "Redis small with 1 replicas requested"
    );

    // Two copies of one request: both rejected, the output stays, no delete.
    std::fs::copy(
        w.config.join("requests/redis-example.yaml"),
        w.config.join("requests/redis-copy.yaml"),
    )
    .unwrap();
    let before = w.head();
    let out = w.pass(1);
    assert!(!out.contains("deleted"), "{out}");
    assert_eq!(w.head(), before, "nothing pruned");
    let s = w.status("redis/default/example");
    assert!(
        s["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid: duplicate object"),
        "{s}"
    );
}

#[test]
fn a_request_no_destination_matches_is_pending_with_the_reason() {
    need_bwrap!();
    let w = World::new();
    // Only dev exists: team-b-prod selects environment=prod.
    w.edit("platform/destinations.yaml", |t| {
        t.split("---\n").next().unwrap().to_string()
    });
    let out = w.pass(0);
    assert!(
        line(&out, "namespace/default/team-b-prod").contains("Pending"),
        "{out}"
    );
    let s = w.status("namespace/default/team-b-prod");
    assert_eq!(
        s["status"]["message"],
        "Pending: no matching Destination for workload groups [instance-configure:.]"
    );
    assert_eq!(condition(&s, "Reconciled")["status"], "Unknown");
    assert_eq!(condition(&s, "Reconciled")["reason"], "WorksPending");
    assert_eq!(condition(&s, "WorksSucceeded")["reason"], "WorksPending");
    assert_eq!(s["status"]["destinations"], serde_json::json!([]));
    assert!(!w.files().contains("team-b-prod"));

    // The Destination appears: placed from the cached output, no pipeline, message back.
    copy_dir(
        &repo_root().join("testdata/quickstart/platform"),
        &w.config.join("platform-restored"),
    );
    std::fs::remove_file(w.config.join("platform-restored/state-store.yaml")).unwrap();
    std::fs::remove_file(w.config.join("platform/destinations.yaml")).unwrap();
    let out = w.pass(0);
    assert!(out.contains("0 pipelines run"), "{out}");
    let s = w.status("namespace/default/team-b-prod");
    assert_eq!(s["status"]["message"], "namespace team-b requested in prod");
    assert_eq!(condition(&s, "Reconciled")["status"], "True");
    assert!(
        w.files()
            .contains("clusters/prod/resources/default/namespace/team-b-prod")
    );
}

#[test]
fn a_lost_cached_output_reruns_that_object_only() {
    need_bwrap!();
    let w = World::new();
    w.pass(0);
    let state: Value = serde_json::to_value(
        promised::state::StateDir::open(&w.state)
            .unwrap()
            .load()
            .unwrap(),
    )
    .unwrap();
    let sha = state["promises"]["promise/redis"]["outputs"][0]["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(w.state.join("blobs").join(&sha)).unwrap();
    // A new Destination needs the lost file.
    std::fs::write(
        w.config.join("platform/dev2.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: dev2\n  labels:\n    environment: dev\nspec:\n  path: clusters/dev2\n  stateStoreRef:\n    kind: GitStateStore\n    name: local\n",
    )
    .unwrap();
    let out = w.pass(0);
    assert!(out.contains("1 pipelines run"), "{out}");
    assert!(line(&out, "promise/redis").contains(" ran "), "{out}");
    assert!(
        w.files().contains(
            "clusters/dev2/dependencies/redis/promise-configure/5058f/redis-operator.yaml"
        )
    );
    assert!(w.state.join("blobs").join(&sha).is_file(), "restored");
}

/// Adds delete pipelines to the redis Promise (promise and resource) that run the image
/// `promised.dev/deleter`: an image override whose script logs each delete, and a copy of its
/// object.yaml, to a writable mount. Returns the log directory.
fn with_delete_pipelines(w: &mut World) -> PathBuf {
    let bin = w.root.join("deleter-bin");
    let log = w.root.join("deletes");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&log).unwrap();
    let script = bin.join("delete");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -eu\nkind=$(sed -n 's/^kind: *//p' /kratix/input/object.yaml)\necho \"$KRATIX_WORKFLOW_TYPE $KRATIX_WORKFLOW_ACTION $KRATIX_OBJECT_KIND $KRATIX_OBJECT_NAMESPACE/$KRATIX_OBJECT_NAME kind=$kind\" >> /tmp/deletes/log\ncp /kratix/input/object.yaml \"/tmp/deletes/$KRATIX_WORKFLOW_TYPE-$KRATIX_OBJECT_NAME.yaml\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dc = w.root.join("promised.yaml");
    std::fs::write(
        &dc,
        format!(
            "imageOverrides:\n  promised.dev/deleter:\n    command: [/opt/deleter/delete]\n    mounts:\n      - {{host: \"{}\", target: /opt/deleter}}\n      - {{host: \"{}\", target: /tmp/deletes, writable: true}}\n",
            bin.display(),
            log.display()
        ),
    )
    .unwrap();
    w.daemon_config = Some(dc);
    let delete = |name: &str| {
        format!(
            "      delete:\n{}",
            pipeline_yaml(name, "promised.dev/deleter", None)
        )
    };
    w.edit("promises/redis/promise.yaml", |t| {
        t.replacen(
            "    promise:\n",
            &format!("    promise:\n{}", delete("promise-delete")),
            1,
        )
        .replacen(
            "    resource:\n",
            &format!("    resource:\n{}", delete("instance-delete")),
            1,
        )
    });
    log
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log.join("log")).unwrap_or_default()
}

#[test]
fn removing_a_request_runs_its_delete_pipeline_then_prunes_it() {
    need_bwrap!();
    let mut w = World::new();
    let log = with_delete_pipelines(&mut w);
    w.pass(0);
    assert_eq!(read_log(&log), "", "no delete yet");
    let dir = "clusters/dev/resources/default/redis/example/";
    assert!(w.files().contains(dir));
    let before = w.head();

    std::fs::remove_file(w.config.join("requests/redis-example.yaml")).unwrap();
    let out = w.pass(0);
    assert!(
        line(&out, "redis/default/example").contains("deleted"),
        "{out}"
    );
    assert!(out.contains("1 pipelines run"), "{out}");
    assert_eq!(
        read_log(&log),
        "resource delete redis default/example kind=redis\n"
    );
    let object = std::fs::read_to_string(log.join("resource-example.yaml")).unwrap();
    assert!(
        object.contains("size: small"),
        "the object as last admitted: {object}"
    );
    assert!(
        object.contains("message: Redis small"),
        "with its status: {object}"
    );
    assert_ne!(w.head(), before, "pruned in a commit");
    assert!(!w.files().contains(dir), "{}", w.files());
    assert!(
        w.files().contains("dependencies/redis/"),
        "the Promise stays"
    );
    let msg = git(&w.store, &["log", "-1", "--format=%B", "main"]);
    assert!(
        msg.contains("Promised-Resource: redis/default/example"),
        "{msg}"
    );
    assert!(
        w.pass(0).contains("0 pipelines run"),
        "forgotten once pruned"
    );
}

#[test]
fn after_state_loss_a_removed_request_still_runs_a_resource_delete() {
    need_bwrap!();
    let mut w = World::new();
    let log = with_delete_pipelines(&mut w);
    w.pass(0);
    std::fs::remove_dir_all(&w.state).unwrap();
    std::fs::remove_file(w.config.join("requests/redis-example.yaml")).unwrap();
    let out = w.pass(0);
    assert!(
        line(&out, "redis/default/example").contains("deleted"),
        "{out}"
    );
    assert_eq!(
        read_log(&log),
        "resource delete redis default/example kind=redis\n",
        "a resource workflow with the request's kind, never a promise workflow"
    );
    let object = std::fs::read_to_string(log.join("resource-example.yaml")).unwrap();
    for want in [
        "apiVersion: marketplace.kratix.io/v1alpha1",
        "kind: redis",
        "name: example",
        "namespace: default",
        "kratix.io/promise-name: redis",
    ] {
        assert!(object.contains(want), "{want} missing:\n{object}");
    }
    assert!(!w.files().contains("resources/default/redis/example/"));
}

#[test]
fn removing_a_promise_runs_its_delete_then_its_requests_deletes_then_prunes_all() {
    need_bwrap!();
    let mut w = World::new();
    let log = with_delete_pipelines(&mut w);
    w.pass(0);
    // The request file stays: a request of a removed Promise is deleted with it, as in Kratix.
    std::fs::remove_dir_all(w.config.join("promises/redis")).unwrap();
    // The request is now of a kind no Promise serves, outside every Promise folder: a warning
    // (on stderr), not an error.
    let (code, out, err) = w.reconcile();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(
            "warning: requests/redis-example.yaml[0] redis default/example: kind: no Promise serves"
        ),
        "{err}"
    );
    assert!(line(&out, "promise/redis").contains("deleted"), "{out}");
    assert!(
        line(&out, "redis/default/example").contains("deleted"),
        "{out}"
    );
    // Kratix's order (promise_controller.go:deletePromise): the Promise's delete workflow,
    // then its requests'.
    assert_eq!(
        read_log(&log),
        "promise delete Promise /redis kind=Promise\nresource delete redis default/example kind=redis\n"
    );
    let files = w.files();
    assert!(!files.contains("/redis/"), "{files}");
    assert!(files.contains("namespace/team-a"), "{files}");
}

#[test]
fn after_state_loss_a_removed_unknown_promise_is_pruned_with_a_warning() {
    need_bwrap!();
    let mut w = World::new();
    let log = with_delete_pipelines(&mut w);
    w.pass(0);
    std::fs::remove_dir_all(&w.state).unwrap();
    std::fs::remove_dir_all(w.config.join("promises/redis")).unwrap();
    // The request left behind is of a kind no Promise serves: a warning, not an error.
    let out = w.pass(0);
    assert_eq!(read_log(&log), "", "nothing known to run");
    assert!(
        out.contains("warning: promise/redis: Promise redis is unknown"),
        "{out}"
    );
    assert!(
        out.contains("warning: redis/default/example: Promise redis is unknown"),
        "{out}"
    );
    assert!(!w.files().contains("/redis/"), "{}", w.files());
}

#[tokio::test]
async fn a_cancelled_pass_starts_no_workflow() {
    use std::sync::atomic::Ordering;

    need_bwrap!();
    let mut w = World::new();
    let log = with_delete_pipelines(&mut w);
    w.pass(0);
    // A removed request (delete pipeline) and an edited Promise script (promise workflow).
    std::fs::remove_file(w.config.join("requests/redis-example.yaml")).unwrap();
    w.edit("promises/redis/pipeline/configure", |t| t + "# edited\n");
    let (mut engine, cfg, root) = w.engine();
    engine.cancel_handle().store(true, Ordering::SeqCst);
    let report = engine.reconcile(&cfg, &root).await.unwrap();
    assert_eq!(report.pipelines_run, 0, "{report:#?}");
    assert_eq!(read_log(&log), "");
    assert!(
        w.files().contains("resources/default/redis/example/"),
        "nothing pruned before its delete pipeline ran"
    );
    drop(engine);
    // The next start runs what was skipped.
    let out = w.pass(0);
    assert!(out.contains("2 pipelines run"), "{out}");
    assert_eq!(
        read_log(&log),
        "resource delete redis default/example kind=redis\n"
    );
    assert!(!w.files().contains("resources/default/redis/example/"));
}

/// After a pass, the engine's records keep no spare capacity in their lists (placements,
/// outputs, files, the status's conditions, pipelines, destinations and events): at 10,000
/// requests the room that pushes leave for 4 or more entries was 9–11 MB of the cold pass's
/// peak heap (docs/benchmarks.md, "Memory", third round).
#[tokio::test]
async fn records_keep_no_spare_capacity_after_a_pass() {
    need_bwrap!();
    let w = World::new();
    let (mut engine, cfg, root) = w.engine();
    let report = engine.reconcile(&cfg, &root).await.unwrap();
    assert!(report.pipelines_run > 0, "{report:#?}");
    let state = engine.state();
    assert!(!state.requests.is_empty());
    for (key, r) in &state.requests {
        // No pipeline here declares a health check: a new process reads none of the files.
        for o in &r.outputs {
            assert_eq!(o.health, Some(false), "{key}: {o:?}");
        }
    }
    for (key, r) in state.requests.iter().chain(&state.promises) {
        assert!(!r.status.conditions.is_empty(), "{key}: {r:#?}");
        let lists = [
            ("placements", r.placements.len(), r.placements.capacity()),
            ("outputs", r.outputs.len(), r.outputs.capacity()),
            (
                "conditions",
                r.status.conditions.len(),
                r.status.conditions.capacity(),
            ),
            (
                "pipelines",
                r.status.pipelines.len(),
                r.status.pipelines.capacity(),
            ),
            (
                "destinations",
                r.status.destinations.len(),
                r.status.destinations.capacity(),
            ),
            ("events", r.status.events.len(), r.status.events.capacity()),
        ];
        let files = r
            .placements
            .iter()
            .map(|p| ("placement files", p.files.len(), p.files.capacity()))
            .chain(
                r.outputs
                    .iter()
                    .map(|o| ("output files", o.files.len(), o.files.capacity())),
            );
        for (what, len, cap) in lists.into_iter().chain(files) {
            assert_eq!(cap, len, "{key}: {what} has room for {cap}, holds {len}");
        }
    }
    assert!(
        state.requests.values().any(|r| !r.placements.is_empty()),
        "some request was placed"
    );
}

/// A pass over many unchanged requests skips them as steady: nothing runs, nothing is written
/// to the state directory, the report counts them instead of listing them; an edit of one
/// request runs only that one and journals only its record.
#[test]
fn steady_requests_are_skipped_and_only_changed_records_are_persisted() {
    need_bwrap!();
    let w = World::new();
    let n = 60;
    let mut docs = String::new();
    for i in 0..n {
        docs.push_str(&format!(
            "---\napiVersion: marketplace.kratix.io/v1alpha1\nkind: namespace\nmetadata:\n  name: bulk-{i}\n  namespace: default\nspec:\n  namespaceName: bulk-{i}\n"
        ));
    }
    std::fs::write(w.config.join("requests/bulk.yaml"), docs).unwrap();
    let out = w.pass(0);
    assert!(out.contains(&format!("{} pipelines run", n + 4)), "{out}");
    let head = w.head();
    let listing = |dir: &Path| -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .filter(|(n, _)| n.starts_with("state."))
            .collect();
        v.sort();
        v
    };
    let before = listing(&w.state);

    // Nothing changed: nothing runs, nothing is committed, the state files are untouched.
    let out = w.pass(0);
    assert!(out.contains("0 pipelines run"), "{out}");
    assert!(
        out.contains(&format!("… and {} more requests unchanged", n + 3)),
        "{out}"
    );
    assert!(
        !out.contains("bulk-7 "),
        "steady requests are not listed: {out}"
    );
    assert_eq!(w.head(), head);
    assert_eq!(listing(&w.state), before, "a no-op pass writes no state");

    // One request edited: it alone runs, and the journal gets one line with its record.
    w.edit("requests/bulk.yaml", |t| {
        t.replace("namespaceName: bulk-7\n", "namespaceName: bulk-7-renamed\n")
    });
    let out = w.pass(0);
    assert!(out.contains("1 pipelines run"), "{out}");
    assert!(
        line(&out, "namespace/default/bulk-7").contains(" ran "),
        "{out}"
    );
    let journal = std::fs::read_to_string(w.state.join("state.journal")).unwrap();
    assert_eq!(journal.lines().count(), 1, "{journal}");
    assert!(journal.contains("namespace/default/bulk-7"));
    assert!(!journal.contains("namespace/default/bulk-8"), "{journal}");
    let s = w.status("namespace/default/bulk-7");
    assert_eq!(condition(&s, "Reconciled")["status"], "True", "{s}");
    // The state read back (snapshot + journal) has the new output.
    let state = serde_json::to_value(
        promised::state::StateDir::open(&w.state)
            .unwrap()
            .load()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        state["requests"]["namespace/default/bulk-7"]["object"]["spec"]["namespaceName"],
        "bulk-7-renamed"
    );
    assert!(
        git(&w.store, &["show", "main:clusters/dev/resources/default/namespace/bulk-7/instance-configure/5058f/namespace.yaml"])
            .contains("name: bulk-7-renamed")
    );
}
