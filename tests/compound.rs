//! Compound Promises in process (README "Compound Promises"): a `stack` Promise whose
//! pipeline (a shell script) writes a `db` and a `cache` request to the platform Destination
//! reconciles, children included, in one `promised reconcile`; the children carry Kratix's
//! component-of labels, their output lands in their Destination with `Promised-Parent:`
//! trailers, nothing is written for the platform Destination, and they persist while the
//! parent's pipeline does not re-run; removing the parent deletes them through their delete
//! workflows; a cycle fails the request that closes it with the chain; a child that fails its
//! schema fails alone, naming its parent. Real pipelines in bubblewrap, a real Git state store.

mod common;

use std::path::PathBuf;

use common::{bwrap_works, condition, git, promised, status_row};
use serde_json::Value;

struct World {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
    state: PathBuf,
    store: PathBuf,
    daemon_config: PathBuf,
}

/// A Promise `name` (kind `name`, group `test.promised.dev`, version label v1) whose configure
/// pipeline runs `/promise/pipeline/run` and whose delete pipeline logs the request's name.
fn promise_yaml(name: &str, selector: &str, required: &str, properties: &str) -> String {
    format!(
        r#"apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: {name}
  labels: {{kratix.io/promise-version: v1}}
spec:
  requiredPromises: {required}
  destinationSelectors: [{{matchLabels: {selector}}}]
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {{name: {name}s.test.promised.dev}}
    spec:
      group: test.promised.dev
      names: {{kind: {name}, plural: {name}s, singular: {name}}}
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
                  properties: {properties}
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
      delete:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: remove}}
          spec:
            containers:
              - name: remove
                image: promised.dev/deleter
"#
    )
}

/// The `stack` pipeline: a `db` request and, unless `spec.nocache: true`, a `cache` request
/// and a HealthRecord for it, all named after its request, to the platform Destination. The
/// db gets `spec.size` (default 3); `spec.bad: true` makes it a string (its schema wants an
/// integer); `spec.loop: true` asks the db to request a stack in turn; `spec.pin: V` adds a
/// ResourceBinding pinning the db to version V; `spec.broken: true` appends YAML that does
/// not parse.
const STACK_RUN: &str = r#"#!/bin/sh
set -eu
field() { sed -n "s/^  $1: *//p" /kratix/input/object.yaml; }
size=$(field size)
size=${size:-3}
[ "$(field bad)" = "true" ] && size='"huge"'
loop=$(field loop)
cat > /kratix/output/children.yaml <<EOF
apiVersion: test.promised.dev/v1alpha1
kind: db
metadata: {name: $KRATIX_OBJECT_NAME-db, namespace: default}
spec: {size: $size, loop: ${loop:-false}}
EOF
pin=$(field pin)
if [ -n "$pin" ]; then
  cat >> /kratix/output/children.yaml <<EOF
---
apiVersion: platform.kratix.io/v1alpha1
kind: ResourceBinding
metadata:
  name: $KRATIX_OBJECT_NAME-db-binding
  namespace: default
  labels: {kratix.io/promise-name: db, kratix.io/resource-name: $KRATIX_OBJECT_NAME-db}
spec: {version: $pin}
EOF
fi
if [ "$(field broken)" = "true" ]; then printf -- '---\nkind: [unclosed\n' >> /kratix/output/children.yaml; fi
[ "$(field nocache)" = "true" ] && exit 0
cat >> /kratix/output/children.yaml <<EOF
---
apiVersion: test.promised.dev/v1alpha1
kind: cache
metadata: {name: $KRATIX_OBJECT_NAME-cache}
spec: {}
---
apiVersion: platform.kratix.io/v1alpha1
kind: HealthRecord
metadata: {name: $KRATIX_OBJECT_NAME-cache-health, namespace: default}
data:
  promiseRef: {name: cache}
  resourceRef: {name: $KRATIX_OBJECT_NAME-cache, namespace: default}
  state: degraded
EOF
"#;

/// The `db` and `cache` pipelines: a ConfigMap naming the parent from the component-of
/// label; a db with `spec.loop: true` also requests a `stack` on the platform Destination
/// through a directory and `destination-selectors.yaml` (the marketplace's pattern).
const CHILD_RUN: &str = r#"#!/bin/sh
set -eu
parent=$(sed -n 's/^ *kratix.io\/component-of-resource-name: *//p' /kratix/input/object.yaml | tr -d '"')
size=$(sed -n 's/^  size: *//p' /kratix/input/object.yaml)
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata: {parent: %s, size: "%s"}\n' "$KRATIX_OBJECT_NAME" "$parent" "$size" > /kratix/output/out.yaml
if [ "$(sed -n 's/^  loop: *//p' /kratix/input/object.yaml)" = "true" ]; then
  mkdir -p /kratix/output/platform
  printf 'apiVersion: test.promised.dev/v1alpha1\nkind: stack\nmetadata: {name: %s-stack}\nspec: {}\n' "$KRATIX_OBJECT_NAME" > /kratix/output/platform/stack.yaml
  printf -- '- directory: platform\n  matchLabels: {promised.dev/platform: "true"}\n' > /kratix/metadata/destination-selectors.yaml
fi
"#;

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
                 spec: {{path: clusters/dev, stateStoreRef: {{kind: GitStateStore, name: local}}}}\n---\n\
                 apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata: {{name: platform, labels: {{promised.dev/platform: \"true\"}}}}\n\
                 spec: {{path: platform-cluster, strictMatchLabels: true, stateStoreRef: {{kind: GitStateStore, name: local}}}}\n",
                w.store.display()
            ),
        );
        let required = "[{name: db, version: v1}, {name: cache, version: v1}]";
        let platform = "{promised.dev/platform: \"true\"}";
        let stack_props = "{bad: {type: boolean}, loop: {type: boolean}, size: {type: integer}, nocache: {type: boolean}, pin: {type: string}, broken: {type: boolean}}";
        w.write(
            "promises/stack/promise.yaml",
            &promise_yaml("stack", platform, required, stack_props),
        );
        w.script("promises/stack/pipeline/run", STACK_RUN);
        let db_props = "{size: {type: integer}, loop: {type: boolean}}";
        w.write(
            "promises/db/promise.yaml",
            &promise_yaml("db", "{environment: dev}", "[]", db_props),
        );
        w.script("promises/db/pipeline/run", CHILD_RUN);
        w.write(
            "promises/cache/promise.yaml",
            &promise_yaml("cache", "{environment: dev}", "[]", "{}"),
        );
        w.script("promises/cache/pipeline/run", CHILD_RUN);
        // Delete pipelines log the name of the request they delete.
        let bin = w.root.join("deleter-bin");
        let log = w.root.join("deletes");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&log).unwrap();
        let del = bin.join("delete");
        std::fs::write(
            &del,
            "#!/bin/sh\nset -eu\necho \"$KRATIX_OBJECT_NAME\" >> /tmp/deletes/log\n",
        )
        .unwrap();
        chmod_x(&del);
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

    fn script(&self, rel: &str, text: &str) {
        self.write(rel, text);
        chmod_x(&self.config.join(rel));
    }

    fn stack(&self, name: &str, spec: &str) {
        self.write(
            &format!("requests/{name}.yaml"),
            &format!(
                "apiVersion: test.promised.dev/v1alpha1\nkind: stack\nmetadata: {{name: {name}, namespace: default}}\nspec: {spec}\n"
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

    fn files(&self) -> Vec<String> {
        git(&self.store, &["ls-tree", "-r", "--name-only", "main"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The ConfigMap request `promise/default/name` wrote on `dev`, when there is one.
    fn output(&self, promise: &str, name: &str) -> Option<String> {
        let files = self.files();
        let path = files.iter().find(|p| {
            p.starts_with("clusters/dev/")
                && p.contains(&format!("/{promise}/{name}/"))
                && p.ends_with("out.yaml")
        })?;
        Some(git(&self.store, &["show", &format!("main:{path}")]))
    }

    fn deletes(&self) -> String {
        std::fs::read_to_string(self.root.join("deletes/log")).unwrap_or_default()
    }
}

fn chmod_x(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn reconciled(s: &Value) -> bool {
    condition(s, "Reconciled")["status"] == "True"
}

#[test]
fn a_compound_request_reconciles_its_children_in_one_pass_and_deletes_them_with_it() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    w.stack("a", "{}");
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");

    // Parent and children are all Reconciled after one pass.
    let parent = status_row(&w.state, "stack/default/a");
    let db = status_row(&w.state, "db/default/a-db");
    let cache = status_row(&w.state, "cache/default/a-cache");
    for s in [&parent, &db, &cache] {
        assert!(reconciled(s), "{s}\n{out}");
    }
    assert_eq!(db["status"]["parent"], "stack/default/a", "{db}");
    assert_eq!(cache["status"]["parent"], "stack/default/a", "{cache}");
    assert!(parent["status"].get("parent").is_none(), "{parent}");
    // The HealthRecord fed back is folded into the cache's health.
    assert_eq!(
        cache["status"]["healthStatus"]["state"], "degraded",
        "{cache}"
    );

    // The children's output is on their Destination; the pipeline saw the component-of label.
    let db_out = w.output("db", "a-db").expect("db output");
    assert!(db_out.contains("parent: a"), "{db_out}");
    assert!(w.output("cache", "a-cache").is_some(), "{:?}", w.files());
    // Nothing is written for the platform Destination except its canaries.
    let on_platform: Vec<String> = w
        .files()
        .into_iter()
        .filter(|f| f.starts_with("platform-cluster/") && !f.contains("kratix-canary"))
        .collect();
    assert!(on_platform.is_empty(), "{on_platform:?}");
    // The commit names the parent of each child's output.
    let log = git(&w.store, &["log", "--format=%B", "main"]);
    assert!(
        log.contains("Promised-Parent: db/default/a-db -> stack/default/a"),
        "{log}"
    );
    assert!(
        log.contains("Promised-Parent: cache/default/a-cache -> stack/default/a"),
        "{log}"
    );

    // `promised status` draws the tree: children under their parent, indented.
    let (_, table, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    let at = |k: &str| {
        lines
            .iter()
            .position(|l| l.contains(k))
            .unwrap_or_else(|| panic!("no {k} in {table}"))
    };
    let (p, c1, c2) = (
        at("stack/default/a "),
        at("cache/default/a-cache"),
        at("db/default/a-db"),
    );
    assert!(p < c1 && p < c2, "{table}");
    assert!(lines[c1].starts_with("  "), "{table}");
    assert!(lines[c2].starts_with("  "), "{table}");

    // `promised status NAME` names the parent and the children.
    let show = |name: &str| {
        promised(&[
            "status",
            name,
            "--state-dir",
            w.state.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
        ])
        .1
    };
    assert!(show("a-db").contains("Parent:        stack/default/a"));
    let a = show("stack/default/a");
    assert!(
        a.contains("Children:      cache/default/a-cache, db/default/a-db"),
        "{a}"
    );

    // Another pass: nothing runs, and the children stay (from the parent's cached output).
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains(" ran "), "{out}");
    assert!(reconciled(&status_row(&w.state, "db/default/a-db")));
    assert!(w.output("db", "a-db").is_some());
    let cache = status_row(&w.state, "cache/default/a-cache");
    assert_eq!(
        cache["status"]["healthStatus"]["state"], "degraded",
        "{cache}"
    );
    assert_eq!(w.deletes(), "");

    // The parent changes: in the same pass its db re-runs with the new spec, and the cache
    // it no longer requests is deleted through its delete workflow.
    w.stack("a", "{size: 5, nocache: true}");
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("db/default/a-db ") && l.contains(" ran ")),
        "{out}"
    );
    let db_out = w.output("db", "a-db").expect("db output");
    assert!(db_out.contains("size: \"5\""), "{db_out}");
    assert_eq!(w.deletes(), "a-cache\n", "{out}");
    assert_eq!(w.output("cache", "a-cache"), None);
    assert!(reconciled(&status_row(&w.state, "db/default/a-db")));

    // Removing the parent's request deletes the children through their delete workflows.
    std::fs::remove_file(w.config.join("requests/a.yaml")).unwrap();
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    let mut deleted: Vec<String> = w.deletes().lines().map(str::to_string).collect();
    deleted.sort();
    assert_eq!(deleted, ["a", "a-cache", "a-db"], "{out}");
    assert_eq!(w.output("db", "a-db"), None);
    assert_eq!(w.output("cache", "a-cache"), None);
    let (_, rows, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(!rows.contains("a-db"), "{rows}");
}

#[test]
fn a_cycle_and_a_bad_child_fail_only_the_request_concerned() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    w.stack("c", "{loop: true}");
    w.stack("b", "{bad: true}");
    w.stack("p", "{pin: v9, nocache: true}");
    w.stack("k", "{}");
    let (code, out) = w.pass();
    assert_eq!(code, 1, "{out}");

    // The stack that c's db requests closes the loop: it fails with the chain.
    let closing = status_row(&w.state, "stack/default/c-db-stack");
    let r = condition(&closing, "Reconciled");
    assert_eq!(r["status"], "False", "{closing}");
    let msg = closing["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("stack/default/c → db/default/c-db → stack/default/c-db-stack"),
        "{msg}"
    );
    assert_eq!(closing["status"]["parent"], "db/default/c-db");
    // Everything before it reconciled.
    for k in [
        "stack/default/c",
        "db/default/c-db",
        "cache/default/c-cache",
    ] {
        assert!(reconciled(&status_row(&w.state, k)), "{k}\n{out}");
    }

    // b's db fails its schema: only it fails, naming its parent; b and its cache reconcile.
    let bad = status_row(&w.state, "db/default/b-db");
    assert_eq!(condition(&bad, "Reconciled")["status"], "False", "{bad}");
    let msg = bad["status"]["message"].as_str().unwrap();
    assert!(msg.contains("spec.size"), "{msg}");
    assert!(
        msg.contains("(requested by stack/default/b in platform-cluster/"),
        "{msg}"
    );
    assert!(w.output("db", "b-db").is_none());
    assert!(
        reconciled(&status_row(&w.state, "stack/default/b")),
        "{out}"
    );
    assert!(
        reconciled(&status_row(&w.state, "cache/default/b-cache")),
        "{out}"
    );

    // A ResourceBinding fed back pins p's db: to a version with no revision, so it says so
    // and does not run.
    let pinned = status_row(&w.state, "db/default/p-db");
    assert_eq!(
        condition(&pinned, "Reconciled")["status"],
        "False",
        "{pinned}"
    );
    let msg = pinned["status"]["message"].as_str().unwrap();
    assert!(msg.contains("no revision at version v9"), "{msg}");
    assert!(w.output("db", "p-db").is_none());

    // k's pipeline now writes YAML that does not parse: a warning names it, and its
    // children stay as they were (bad output never deletes).
    w.stack("k", "{broken: true}");
    let (code, out) = w.pass();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("warning: output of stack/default/k (platform-cluster/"),
        "{out}"
    );
    assert_eq!(w.deletes(), "", "{out}");
    assert!(w.output("db", "k-db").is_some());
    assert!(reconciled(&status_row(&w.state, "cache/default/k-cache")));
    // Fixed: the same children, nothing deleted.
    w.stack("k", "{}");
    let (_, out) = w.pass();
    assert_eq!(w.deletes(), "", "{out}");
    assert!(w.output("db", "k-db").is_some());

    // The next pass changes nothing: the same verdicts, no run.
    let (code, out) = w.pass();
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains(" ran "), "{out}");
    assert_eq!(
        condition(
            &status_row(&w.state, "stack/default/c-db-stack"),
            "Reconciled"
        )["status"],
        "False"
    );
}

#[test]
fn a_compound_promise_waits_for_the_versions_it_requires_then_runs_its_children() {
    if !bwrap_works() {
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let w = World::new();
    // The stack requires db v2; the config has db v1.
    let stack = std::fs::read_to_string(w.config.join("promises/stack/promise.yaml")).unwrap();
    w.write(
        "promises/stack/promise.yaml",
        &stack.replace("{name: db, version: v1}", "{name: db, version: v2}"),
    );
    w.stack("a", "{}");
    let (_, out) = w.pass();
    let a = status_row(&w.state, "stack/default/a");
    assert_eq!(condition(&a, "PromiseAvailable")["status"], "False", "{a}");
    let (_, rows, _) = promised(&[
        "status",
        "--state-dir",
        w.state.to_str().unwrap(),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(!rows.contains("a-db"), "{out}\n{rows}");

    // db v2 is applied: the stack becomes available and its children run in the same pass.
    let db = std::fs::read_to_string(w.config.join("promises/db/promise.yaml")).unwrap();
    w.write(
        "promises/db/promise.yaml",
        &db.replace(
            "kratix.io/promise-version: v1",
            "kratix.io/promise-version: v2",
        ),
    );
    let (code, out) = w.pass();
    assert_eq!(code, 0, "{out}");
    for k in [
        "stack/default/a",
        "db/default/a-db",
        "cache/default/a-cache",
    ] {
        assert!(reconciled(&status_row(&w.state, k)), "{k}\n{out}");
    }
    assert_eq!(
        status_row(&w.state, "db/default/a-db")["status"]["promiseVersion"],
        "v2"
    );
    assert!(w.output("db", "a-db").is_some());
}
