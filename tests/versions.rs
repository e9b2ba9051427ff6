//! Promise versions and ResourceBindings (README "Promise versions and ResourceBindings"): a
//! request pinned by a ResourceBinding keeps its version's output while the Promise moves on
//! and other requests float to the new version; its delete pipeline runs at its applied
//! version; a failed upgrade sets `UpgradeFailed` and `failedVersion` and is not retried until
//! the request's spec changes; a binding to an unknown version says so and changes nothing;
//! `promised status` shows the versions. Real pipelines in bubblewrap (their scripts write the
//! version of the Promise spec and of the script into their output), a real Git state store.

mod common;

use std::path::PathBuf;

use common::{bwrap_works, condition, git, promised, status_row};
use serde_json::Value;

/// Config repo, state directory and state store of one test.
struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    store: PathBuf,
    daemon_config: PathBuf,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let store = root.join("store.git");
        git(&root, &["init", "-q", "--bare", "-b", "main", "store.git"]);
        let w = World {
            config: root.join("config"),
            state: root.join("state"),
            daemon_config: root.join("promised.yaml"),
            store,
            root,
            _tmp: tmp,
        };
        w.write(
            "platform/platform.yaml",
            &format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata: {{name: local}}\nspec: {{url: {}, branch: main}}\n---\n\
                 apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata: {{name: dev, labels: {{environment: dev}}}}\n\
                 spec: {{path: clusters/dev, stateStoreRef: {{kind: GitStateStore, name: local}}}}\n",
                w.store.display()
            ),
        );
        // Delete pipelines run the image `promised.dev/deleter`: a script outside the Promise
        // that logs the Promise version it was given and the version of the Promise folder
        // mounted at /promise.
        let bin = w.root.join("deleter-bin");
        let log = w.root.join("deletes");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        let script = bin.join("delete");
        std::fs::write(
            &script,
            "#!/bin/sh\nset -eu\necho \"$KRATIX_OBJECT_NAME spec=$APP_VERSION script=$(cat /promise/pipeline/VERSION)\" >> /tmp/deletes/log\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            &w.daemon_config,
            format!(
                "imageOverrides:\n  promised.dev/deleter:\n    command: [/opt/deleter/delete]\n    mounts:\n      - {{host: \"{}\", target: /opt/deleter}}\n      - {{host: \"{}\", target: /tmp/deletes, writable: true}}\n",
                bin.display(),
                log.display()
            ),
        )
        .unwrap();
        w
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.config.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// The `app` Promise at `version`: its pipeline's env says the version (the Promise spec)
    /// and so does its script (the Promise folder); the script fails when the request's
    /// `spec.failAt` is this version.
    fn promise(&self, version: &str) {
        self.write(
            "promises/app/promise.yaml",
            &format!(
                r#"apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: app
  labels: {{kratix.io/promise-version: {version}}}
spec:
  destinationSelectors: [{{matchLabels: {{environment: dev}}}}]
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {{name: apps.test.promised.dev}}
    spec:
      group: test.promised.dev
      names: {{kind: app, plural: apps, singular: app}}
      scope: Namespaced
      versions:
        - name: v1alpha1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    failAt: {{type: string}}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: render}}
          spec:
            containers:
              - name: render
                image: promised.dev/local
                command: ["/promise/pipeline/run"]
                env: [{{name: APP_VERSION, value: {version}}}]
      delete:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: remove}}
          spec:
            containers:
              - name: remove
                image: promised.dev/deleter
                env: [{{name: APP_VERSION, value: {version}}}]
"#
            ),
        );
        self.write("promises/app/pipeline/VERSION", &format!("{version}\n"));
        self.write(
            "promises/app/pipeline/run",
            &format!(
                "#!/bin/sh\nset -eu\nfail=$(sed -n 's/^  failAt: *//p' /kratix/input/object.yaml | tr -d '\"')\n\
                 if [ \"$fail\" = \"$APP_VERSION\" ]; then echo \"refusing $APP_VERSION\" >&2; exit 1; fi\n\
                 printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {{name: %s}}\\ndata: {{spec: %s, script: {version}}}\\n' \"$KRATIX_OBJECT_NAME\" \"$APP_VERSION\" > /kratix/output/app.yaml\n"
            ),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            self.config.join("promises/app/pipeline/run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }

    fn request(&self, name: &str, fail_at: Option<&str>) {
        let spec = fail_at.map_or("{}".to_string(), |v| format!("{{failAt: {v}}}"));
        self.write(
            &format!("requests/{name}.yaml"),
            &format!(
                "apiVersion: test.promised.dev/v1alpha1\nkind: app\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
            ),
        );
    }

    fn binding(&self, request: &str, version: &str) {
        self.write(
            &format!("requests/{request}-binding.yaml"),
            &format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: ResourceBinding\nmetadata:\n  name: {request}-binding\n  namespace: default\n  labels: {{kratix.io/promise-name: app, kratix.io/resource-name: {request}}}\nspec: {{version: {version}, promiseRef: {{name: app}}, resourceRef: {{name: {request}, namespace: default}}}}\n"
            ),
        );
    }

    /// `promised reconcile`; returns the exit code and stdout.
    fn pass(&self) -> (i32, String) {
        let (code, out, err) = promised(&[
            "reconcile",
            "--config",
            self.config.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
            "--daemon-config",
            self.daemon_config.to_str().unwrap(),
        ]);
        assert!(code == 0 || code == 1, "{out}\n{err}");
        (code, out)
    }

    /// `data` of request `name`'s ConfigMap in the state store (`None`: no output).
    fn output(&self, name: &str) -> Option<String> {
        let files = git(&self.store, &["ls-tree", "-r", "--name-only", "main"]);
        let path = files
            .lines()
            .find(|p| p.contains(&format!("/app/{name}/")) && p.ends_with("app.yaml"))?;
        let text = git(&self.store, &["show", &format!("main:{path}")]);
        let data = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("data: "))
            .unwrap_or_else(|| panic!("no data in {text}"))
            .to_string();
        Some(data)
    }

    fn status(&self, name: &str) -> Value {
        status_row(&self.state, &format!("app/default/{name}"))
    }
}

/// The line of a pass report about request `name`.
fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!("app/default/{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

fn v1_output() -> Option<String> {
    Some("{spec: v1, script: v1}".into())
}

fn v2_output() -> Option<String> {
    Some("{spec: v2, script: v2}".into())
}

#[test]
fn a_pinned_request_keeps_its_version_while_others_float_and_is_deleted_at_it() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    w.promise("v1");
    w.request("pinned", None);
    w.binding("pinned", "v1");
    w.request("floating", None);
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    assert_eq!(w.output("pinned"), v1_output());
    assert_eq!(w.output("floating"), v1_output());
    let s = w.status("pinned");
    assert_eq!(s["status"]["promiseVersion"], "v1");
    assert_eq!(s["status"]["resourceBindingVersion"], "v1");
    assert_eq!(
        w.status("floating")["status"]["resourceBindingVersion"],
        "latest"
    );
    // A fresh request only gets its version: no UpgradeSucceeded (kratix-lifecycle.md §2.2).
    assert!(
        s["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] != "UpgradeSucceeded"),
        "{s}"
    );
    // The revision is kept with its scripts.
    let tree = w.state.join("revisions/app/v1.tree/pipeline/VERSION");
    assert_eq!(std::fs::read_to_string(tree).unwrap(), "v1\n");

    // The Promise moves to v2 (spec and script): the floating request follows, the pinned one
    // does not even run.
    w.promise("v2");
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    assert!(line(&out, "floating").contains(" ran "), "{out}");
    assert!(!line(&out, "pinned").contains(" ran "), "{out}");
    assert_eq!(w.output("floating"), v2_output());
    assert_eq!(w.output("pinned"), v1_output());
    let f = w.status("floating");
    assert_eq!(f["status"]["promiseVersion"], "v2");
    let up = condition(&f, "UpgradeSucceeded");
    assert_eq!(up["status"], "True", "{f}");
    assert_eq!(up["reason"], "UpgradeComplete");
    assert_eq!(up["message"], "Resource is at version v2");
    assert_eq!(w.status("pinned")["status"]["promiseVersion"], "v1");

    // `promised status` shows the versions.
    let (_, table, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(table.lines().next().unwrap().contains("VERSION"), "{table}");
    assert!(line(&table, "pinned").contains("v1 pinned"), "{table}");
    assert!(line(&table, "floating").contains("v2"), "{table}");

    // Another pass: nothing runs (pinned requests hash against their revision).
    let (_, out) = w.pass();
    assert!(!out.contains(" ran "), "{out}");

    // Deleting the pinned request runs the v1 delete pipeline with the v1 folder.
    std::fs::remove_file(w.config.join("requests/pinned.yaml")).unwrap();
    std::fs::remove_file(w.config.join("requests/pinned-binding.yaml")).unwrap();
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    let log = std::fs::read_to_string(w.root.join("deletes/log")).unwrap();
    assert_eq!(log, "pinned spec=v1 script=v1\n");
    assert_eq!(w.output("pinned"), None);
    assert_eq!(w.output("floating"), v2_output());
}

#[test]
fn a_failed_upgrade_is_not_retried_until_the_spec_changes_and_unknown_versions_say_so() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    w.promise("v1");
    w.request("fragile", Some("v2"));
    w.request("stuck", None);
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");

    // v2 fails for `fragile`: UpgradeFailed, failedVersion, still at v1 with its v1 output.
    w.promise("v2");
    let (code, out) = w.pass();
    assert_eq!(code, 1, "{out}");
    let s = w.status("fragile");
    let up = condition(&s, "UpgradeSucceeded");
    assert_eq!(up["status"], "False", "{s}");
    assert_eq!(up["reason"], "UpgradeFailed");
    assert_eq!(s["status"]["failedVersion"], "v2");
    assert_eq!(s["status"]["promiseVersion"], "v1");
    assert_eq!(w.output("fragile"), v1_output());
    assert_eq!(w.output("stuck"), v2_output());

    // Not retried: the next passes put it back at v1 (once) and then leave it alone; the
    // upgrade failed once only.
    let (_, out) = w.pass();
    assert_eq!(w.output("fragile"), v1_output(), "{out}");
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(" ran "), "{out}");
    let s = w.status("fragile");
    assert_eq!(s["status"]["failedVersion"], "v2");
    assert_eq!(condition(&s, "UpgradeSucceeded")["reason"], "UpgradeFailed");
    let failures = s["status"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "UpgradeFailed")
        .count();
    assert_eq!(failures, 1, "{s}");

    // A spec change: the upgrade is tried again, and succeeds.
    w.request("fragile", Some("v9"));
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    let s = w.status("fragile");
    assert_eq!(s["status"]["promiseVersion"], "v2", "{s}");
    assert_eq!(
        condition(&s, "UpgradeSucceeded")["reason"],
        "UpgradeComplete"
    );
    assert!(s["status"].get("failedVersion").is_none(), "{s}");
    assert_eq!(w.output("fragile"), v2_output());

    // A binding to a version that was never applied: a clear error, nothing moves.
    w.binding("stuck", "v7");
    let (code, out) = w.pass();
    assert_eq!(code, 1, "{out}");
    assert!(line(&out, "stuck").contains("FAILED"), "{out}");
    let s = w.status("stuck");
    let msg = s["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("ResourceBinding default/stuck-binding")
            && msg.contains("v7")
            && msg.contains("versions applied: v1, v2"),
        "{msg}"
    );
    assert_eq!(
        condition(&s, "Reconciled")["reason"],
        "FailedPromiseRevisionLookup"
    );
    assert_eq!(s["status"]["promiseVersion"], "v2");
    assert_eq!(w.output("stuck"), v2_output());

    // Pinning it to v1 (a kept revision) moves it back, with v1's spec and scripts.
    w.binding("stuck", "v1");
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    let s = w.status("stuck");
    assert_eq!(s["status"]["promiseVersion"], "v1", "{s}");
    assert_eq!(s["status"]["resourceBindingVersion"], "v1");
    assert_eq!(condition(&s, "Reconciled")["status"], "True", "{s}");
    assert_eq!(w.output("stuck"), v1_output());
}

/// A fresh host (a new state directory, the same config repo and state store): the revision
/// of an older version a request is pinned to is rebuilt from the Git config repo's history
/// (the newest commit whose Promise file has that version, its folder with it), so the
/// pinned request runs at its version instead of failing `FailedPromiseRevisionLookup`.
#[test]
fn a_fresh_host_rebuilds_an_older_revision_from_the_config_history() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    std::fs::write(&w.daemon_config, "{}\n").unwrap();
    let pass_at = |state: &std::path::Path| {
        let (code, out, err) = promised(&[
            "reconcile",
            "--config",
            w.config.to_str().unwrap(),
            "--ref",
            "HEAD",
            "--state-dir",
            state.to_str().unwrap(),
            "--daemon-config",
            w.daemon_config.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
        out
    };
    let commit = |msg: &str| {
        git(&w.config, &["add", "-A"]);
        git(&w.config, &["commit", "-q", "--no-gpg-sign", "-m", msg]);
        git(&w.config, &["rev-parse", "HEAD"]).trim().to_string()
    };
    w.promise("v1");
    w.request("pinned", None);
    w.binding("pinned", "v1");
    w.request("floating", None);
    git(&w.config, &["init", "-q", "-b", "main"]);
    let c1 = commit("v1");
    pass_at(&w.state);
    w.promise("v2");
    commit("v2");
    pass_at(&w.state);
    assert_eq!(w.output("pinned"), v1_output());
    assert_eq!(w.output("floating"), v2_output());

    // The fresh host.
    let fresh = w.root.join("fresh-state");
    let out = pass_at(&fresh);
    let s = status_row(&fresh, "app/default/pinned");
    assert_eq!(s["status"]["promiseVersion"], "v1", "{out}\n{s}");
    assert!(
        !s["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no revision"),
        "{s}"
    );
    assert_eq!(w.output("pinned"), v1_output(), "{out}");
    assert_eq!(w.output("floating"), v2_output(), "{out}");
    let rev: Value = serde_json::from_slice(
        &std::fs::read(fresh.join("revisions/app/v1.json")).expect("the rebuilt revision"),
    )
    .unwrap();
    assert_eq!(rev["configCommit"], c1.as_str(), "{rev}");
    assert!(fresh.join("revisions/app/v1.tree/pipeline/run").is_file());
}
