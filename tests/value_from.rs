//! `env[].valueFrom` end to end with `promised reconcile` (`sandbox: none`, so no bubblewrap
//! is needed): a Promise whose pipeline reads its pod's namespace, a pipeline Secret and a
//! ConfigMap; the Secret's value appears in no log, report, status or state file; a Secret the
//! daemon config stops allowing makes the Promise invalid, and the removed request's delete
//! Pipeline (which would read it) is not run but does not block the deletion.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const PROMISE: &str = r#"apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: app
spec:
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: apps.example.com
    spec:
      group: example.com
      names: {kind: App, plural: apps, singular: app}
      scope: Namespaced
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec:
                  type: object
                  properties:
                    size: {type: string}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata:
            name: configure
          spec:
            containers:
              - name: render
                image: example.com/render
                command: ["/promise/render"]
                env:
                  - name: POD_NAMESPACE
                    valueFrom:
                      fieldRef: {fieldPath: metadata.namespace}
                  - name: DB_PASSWORD
                    valueFrom:
                      secretKeyRef: {name: db, key: password}
                  - name: REGION
                    valueFrom:
                      configMapKeyRef: {name: settings, key: region}
      delete:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata:
            name: cleanup
          spec:
            containers:
              - name: cleanup
                image: example.com/cleanup
                command: ["/promise/cleanup"]
                env:
                  - name: DB_PASSWORD
                    valueFrom:
                      secretKeyRef: {name: db, key: password}
"#;

const RENDER: &str = r#"#!/bin/sh
set -eu
sha=$(printf %s "$DB_PASSWORD" | sha256sum | cut -d' ' -f1)
printf 'kind: ConfigMap\ndata:\n  namespace: %s\n  region: %s\n  passwordSha256: %s\n' \
  "$POD_NAMESPACE" "$REGION" "$sha" > "$KRATIX_OUTPUT_DIR/app.yaml"
echo "rendered for $POD_NAMESPACE"
"#;

const CLEANUP: &str = "#!/bin/sh\necho cleanup ran >&2\n";

const PLATFORM: &str = r#"apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata:
  name: local
spec:
  url: state.git
---
apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata:
  name: dev
spec:
  path: dev
  stateStoreRef: {kind: GitStateStore, name: local}
"#;

const REQUEST: &str = r#"apiVersion: example.com/v1
kind: App
metadata:
  name: a
  namespace: team-a
spec:
  size: small
"#;

const FILE: &str = "dev/resources/team-a/app/a/configure/5058f/app.yaml";

struct World {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    daemon_config: PathBuf,
    secret: String,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let config = root.join("config");
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        };
        write("config/promises/app/promise.yaml", PROMISE);
        write("config/promises/app/render", RENDER);
        write("config/promises/app/cleanup", CLEANUP);
        use std::os::unix::fs::PermissionsExt;
        for s in ["render", "cleanup"] {
            std::fs::set_permissions(
                config.join("promises/app").join(s),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        write("config/platform/platform.yaml", PLATFORM);
        write("config/requests/a.yaml", REQUEST);
        // Unique per run, so finding it anywhere is a leak.
        let secret = format!(
            "pw-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        write("pipeline-secrets/db/password", &secret);
        write("pipeline-configmaps/settings/region", "eu-west-1");
        let w = World {
            state: root.join("state"),
            daemon_config: root.join("promised.yaml"),
            _tmp: tmp,
            config,
            secret,
        };
        w.daemon_config("{app: [db]}");
        w
    }

    fn daemon_config(&self, allow: &str) {
        std::fs::write(
            &self.daemon_config,
            format!(
                "sandbox: none\npipelineSecrets:\n  dir: pipeline-secrets\n  allow: {allow}\npipelineConfigMaps:\n  dir: pipeline-configmaps\n"
            ),
        )
        .unwrap();
    }

    fn promised(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_promised"))
            .args(args)
            .env_remove("PROMISED_LOG")
            .env_remove("PROMISED_LOG_FORMAT")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .expect("promised runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `promised reconcile` with debug JSON logs; (exit code, stdout, stderr).
    fn reconcile(&self) -> (i32, String, String) {
        self.promised(&[
            "reconcile",
            "--config",
            self.config.to_str().unwrap(),
            "--state-dir",
            self.state.to_str().unwrap(),
            "--daemon-config",
            self.daemon_config.to_str().unwrap(),
            "--log",
            "debug",
            "--log-format",
            "json",
        ])
    }

    fn status(&self) -> String {
        let (code, out, err) = self.promised(&[
            "status",
            "--state-dir",
            self.state.to_str().unwrap(),
            "--output",
            "json",
            "--listen",
            "127.0.0.1:1",
        ]);
        assert_eq!(code, 0, "{err}");
        out
    }

    fn state_file(&self, path: &str) -> Option<String> {
        let repo = self.state.join("state.git");
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&repo)
            .args(["show", &format!("main:{path}")])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Panics if the Secret's value is in `text` (named `what`).
    fn assert_no_secret(&self, what: &str, text: &str) {
        assert!(
            !text.contains(&self.secret),
            "the pipeline Secret's value is in {what}:\n{text}"
        );
    }

    /// Every file under the state directory (state, cached outputs, the state store clone).
    fn assert_no_secret_in_state_dir(&self) {
        for e in walk(&self.state) {
            let bytes = std::fs::read(&e).unwrap_or_default();
            assert!(
                !bytes
                    .windows(self.secret.len())
                    .any(|w| w == self.secret.as_bytes()),
                "the pipeline Secret's value is in {}",
                e.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn value_from_end_to_end_and_secrets_never_leak() {
    let w = World::new();
    let (code, out, err) = w.reconcile();
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let file = w
        .state_file(FILE)
        .unwrap_or_else(|| panic!("{FILE}: {out}\n{err}"));
    use sha2::Digest;
    let sha = hex::encode(sha2::Sha256::digest(w.secret.as_bytes()));
    assert_eq!(
        file,
        format!(
            "kind: ConfigMap\ndata:\n  namespace: team-a\n  region: eu-west-1\n  passwordSha256: {sha}\n"
        )
    );
    w.assert_no_secret("the reconcile report", &out);
    w.assert_no_secret("the debug logs", &err);
    w.assert_no_secret("status", &w.status());
    w.assert_no_secret_in_state_dir();

    // The daemon config stops allowing the Secret, and the request leaves the repo: the
    // Promise is invalid (named with its pipeline, container and variable), and the request's
    // delete Pipeline, which would read the Secret, is not run; the deletion goes ahead.
    w.daemon_config("{}");
    std::fs::remove_file(w.config.join("requests/a.yaml")).unwrap();
    let (code, out, err) = w.reconcile();
    assert_eq!(code, 1, "an invalid Promise: {out}\n{err}");
    assert!(
        err.contains("pipeline \\\"configure\\\" container \\\"render\\\" env \\\"DB_PASSWORD\\\"")
            && err.contains("pipelineSecrets.allow for Promise \\\"app\\\""),
        "{err}"
    );
    assert!(
        err.contains("delete pipeline cleanup not run")
            || out.contains("delete pipeline cleanup not run"),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        !err.contains("cleanup ran"),
        "the delete Pipeline did not run"
    );
    assert_eq!(w.state_file(FILE), None, "the request's files are pruned");
    let status = w.status();
    assert!(!status.contains("team-a/a"), "{status}");
    w.assert_no_secret("the reconcile report", &out);
    w.assert_no_secret("the debug logs", &err);
    w.assert_no_secret("status", &status);
    w.assert_no_secret_in_state_dir();
}

/// `promised pipeline run --daemon-config` resolves `secretKeyRef` and `configMapKeyRef` from
/// the daemon config's directories; without it the Secret is refused before the pipeline runs.
#[test]
fn pipeline_run_reads_the_daemon_config() {
    let w = World::new();
    let out_dir = w.state.join("out");
    let base = [
        "pipeline",
        "run",
        "--config",
        w.config.to_str().unwrap(),
        "--promise",
        "app",
        "--request-name",
        "team-a/a",
        "--sandbox",
        "none",
    ];
    let mut args = base.to_vec();
    args.extend([
        "--daemon-config",
        w.daemon_config.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
    ]);
    let (code, out, err) = w.promised(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let file = std::fs::read_to_string(out_dir.join("configure/app.yaml")).unwrap();
    assert!(
        file.contains("namespace: team-a") && file.contains("region: eu-west-1"),
        "{file}"
    );
    w.assert_no_secret("pipeline run's report", &out);
    w.assert_no_secret("pipeline run's stderr", &err);

    let (code, out, err) = w.promised(&base);
    assert_ne!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let all = format!("{out}{err}");
    assert!(all.contains("pipelineSecrets.allow"), "{all}");
    assert!(all.contains("DB_PASSWORD"), "{all}");
}

/// A pipeline that prints its granted Secret on stdout and stderr and fails: the value is
/// redacted (`[redacted: secret db/password]`) in status, the report, the logs and the state
/// directory, while the rest of its output stays readable.
#[test]
fn a_granted_secret_printed_by_a_pipeline_is_redacted() {
    let w = World::new();
    std::fs::write(
        w.config.join("promises/app/render"),
        "#!/bin/sh\necho \"connecting with $DB_PASSWORD\"\necho \"login failed for password $DB_PASSWORD at $REGION\" >&2\nexit 4\n",
    )
    .unwrap();
    let (code, out, err) = w.reconcile();
    assert_eq!(code, 1, "{out}\n{err}");
    let status = w.status();
    assert!(
        status.contains("login failed for password [redacted: secret db/password] at eu-west-1"),
        "{status}"
    );
    w.assert_no_secret("status", &status);
    w.assert_no_secret("the reconcile report", &out);
    w.assert_no_secret("the debug logs", &err);
    w.assert_no_secret_in_state_dir();
}
