//! The image runtime end to end: `promised reconcile` pulls a pipeline image from a real
//! registry (`docker-registry` on 127.0.0.1, images built by `umoci` from `busybox-static`)
//! and runs it in its own root file system through the Kratix contract.
//!
//! Skipped with a message when the image tools or bubblewrap are missing, unless
//! `PROMISED_REQUIRE_IMAGES` / `PROMISED_REQUIRE_SANDBOX` is set (CI sets both).

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::path::Path;

use registry::{Registry, build_images, tools_available};

/// A config repo at `config` with a Destination `dev` on a local GitStateStore (`state.git`
/// in the state directory) and a Promise `app` whose resource configure pipeline runs `image`
/// with `args` (the image's Entrypoint `/bin/sh -c` stays, its Cmd is replaced).
fn config_repo(config: &Path, image: &str, script: &str) {
    std::fs::create_dir_all(config.join("platform")).unwrap();
    std::fs::create_dir_all(config.join("promises/app")).unwrap();
    std::fs::create_dir_all(config.join("requests")).unwrap();
    std::fs::write(
        config.join("platform/platform.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1
kind: Destination
metadata: {name: dev, labels: {environment: dev}}
spec:
  path: clusters/dev
  stateStoreRef: {kind: GitStateStore, name: local}
---
apiVersion: platform.kratix.io/v1alpha1
kind: GitStateStore
metadata: {name: local}
spec:
  url: state.git
  branch: main
",
    )
    .unwrap();
    let script = serde_json::to_string(script).unwrap();
    std::fs::write(
        config.join("promises/app/promise.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata: {{name: app}}
spec:
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {{name: apps.test.promised.dev}}
    spec:
      group: test.promised.dev
      names: {{kind: App, plural: apps, singular: app}}
      scope: Namespaced
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: render}}
          spec:
            containers:
              - name: render
                image: {image}
                args: [{script}]
"
        ),
    )
    .unwrap();
}

fn request(config: &Path, name: &str) {
    std::fs::write(
        config.join(format!("requests/{name}.yaml")),
        format!(
            "apiVersion: test.promised.dev/v1\nkind: App\nmetadata: {{name: {name}, namespace: default}}\nspec: {{}}\n"
        ),
    )
    .unwrap();
}

/// The daemon config: the image runtime on, the registry over plain HTTP, `concurrency`
/// pipelines at once.
fn daemon_config(dir: &Path, reg: &Registry, concurrency: usize) -> std::path::PathBuf {
    let path = dir.join("promised.yaml");
    std::fs::write(
        &path,
        format!(
            "images:\n  insecureRegistries: [\"{}\"]\nconcurrency: {concurrency}\n",
            reg.host
        ),
    )
    .unwrap();
    path
}

fn reconcile(config: &Path, state: &Path, daemon_config: &Path) -> (i32, String, String) {
    common::promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
    ])
}

/// A file of the state store's `main` branch.
fn state_file(state: &Path, path: &str) -> String {
    common::git(&state.join("state.git"), &["show", &format!("main:{path}")])
}

fn ready() -> bool {
    if !tools_available("image_runtime") {
        return false;
    }
    if !common::bwrap_works() {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
            "bubblewrap cannot create a sandbox here"
        );
        eprintln!("skipping: bubblewrap cannot create a sandbox here");
        return false;
    }
    true
}

/// Each request's script writes its own name into the working directory (the image's
/// `WorkingDir`, `/work`) and into `/etc`, then reports what it sees: a run sees only its own
/// files, the image's second layer deleted `/etc/removed-later.txt`, the image's `Env` and
/// `User` apply, and nothing of a run is left in the image's cached root.
const SCRIPT: &str = r#"set -eu
test ! -e /etc/removed-later.txt
test -e /etc/added.txt
echo "$KRATIX_OBJECT_NAME" > mine.txt
echo "$KRATIX_OBJECT_NAME" > /etc/mine.txt
cat > /kratix/output/app.yaml <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: $KRATIX_OBJECT_NAME
data:
  greeting: "$GREETING"
  uid: "$(id -u)"
  pwd: "$(pwd)"
  workdir: "$(cat mine.txt)"
  etc: "$(cat /etc/mine.txt)"
  files: "$(ls /work | tr '\n' ' ')"
EOF
"#;

#[test]
fn images_run_unchanged_each_request_in_a_root_of_its_own() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&dir.path().join("reg"));
    let layout = build_images(dir.path());
    reg.push(&layout, "v2", "test/busybox:v2", &[]);
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    config_repo(&config, &reg.image("test/busybox:v2"), SCRIPT);
    let names: Vec<String> = (1..=8).map(|i| format!("app-{i}")).collect();
    for n in &names {
        request(&config, n);
    }
    let dc = daemon_config(dir.path(), &reg, 8);
    let runs = dir.path().join("runs");
    let text = std::fs::read_to_string(&dc).unwrap();
    std::fs::write(&dc, format!("{text}runDir: {}\n", runs.display())).unwrap();
    let (code, out, err) = reconcile(&config, &state, &dc);
    assert_eq!(code, 0, "{out}\n{err}");
    // Nothing of the runs is left: their directories (contract dirs, overlay mount points)
    // went with them, and their writable roots with their mount namespaces.
    assert!(runs.is_dir(), "the runs were made under {}", runs.display());
    let left: Vec<_> = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left after the runs: {left:?}");
    for n in &names {
        let file = state_file(
            &state,
            &format!("clusters/dev/resources/default/app/{n}/render/5058f/app.yaml"),
        );
        let doc: serde_json::Value = serde_saphyr::from_str(&file).unwrap();
        let data = &doc["data"];
        assert_eq!(data["greeting"], "world", "image Env: {file}");
        assert_eq!(data["uid"], "1000", "image User: {file}");
        assert_eq!(data["pwd"], "/work", "image WorkingDir: {file}");
        assert_eq!(data["workdir"], n.as_str(), "{file}");
        assert_eq!(data["etc"], n.as_str(), "{file}");
        assert_eq!(data["files"], "mine.txt ", "only its own files: {file}");
    }
    // The image's cached root is untouched by eight runs that wrote into it.
    let roots = state.join("images/roots");
    let mut found = 0;
    for e in std::fs::read_dir(&roots).unwrap() {
        let rootfs = e.unwrap().path().join("rootfs");
        if rootfs.is_dir() {
            found += 1;
            assert!(!rootfs.join("work/mine.txt").exists());
            assert!(!rootfs.join("etc/mine.txt").exists());
        }
    }
    assert_eq!(found, 1, "one unpacked root under {}", roots.display());
}

#[test]
fn an_image_that_cannot_be_pulled_fails_only_its_promises_requests() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&dir.path().join("reg"));
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    // Nothing was pushed: the tag is unknown to the registry.
    config_repo(&config, &reg.image("test/missing:v1"), "true");
    request(&config, "lost");
    // A second Promise without pipelines reconciles beside it.
    std::fs::write(
        config.join("promises/plain.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata: {name: plain}
spec:
  dependencies:
    - apiVersion: v1
      kind: Namespace
      metadata: {name: plain}
",
    )
    .unwrap();
    let dc = daemon_config(dir.path(), &reg, 2);
    let (code, out, err) = reconcile(&config, &state, &dc);
    assert_ne!(code, 0, "a failed request fails the pass: {out}\n{err}");
    let row = common::status_row(&state, "app/default/lost");
    let message = row["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("test/missing:v1") && message.contains("MANIFEST_UNKNOWN"),
        "the message names the image and the registry's answer: {row}"
    );
    // The other Promise's dependency was written.
    let deps = state_file(
        &state,
        "clusters/dev/dependencies/plain/5058f/static/plain-dependencies.yaml",
    );
    assert!(deps.contains("name: plain"), "{deps}");
}

/// The `<container>: <image>@<digest>` entries of a request's first pipeline status.
fn ran_images(state: &Path, key: &str) -> Vec<String> {
    let row = common::status_row(state, key);
    let text = row.to_string();
    let pipelines = row["status"]["pipelines"]
        .as_array()
        .unwrap_or_else(|| panic!("no pipelines in {text}"));
    pipelines[0]["images"]
        .as_array()
        .unwrap_or_else(|| panic!("no images in {text}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_moved_tag_runs_the_workflows_again_and_status_names_the_digest() {
    if !ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&dir.path().join("reg"));
    let layout = build_images(dir.path());
    reg.push(&layout, "v1", "test/busybox:latest", &[]);
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    let image = reg.image("test/busybox:latest");
    config_repo(
        &config,
        &image,
        r#"set -eu
added=no; test -e /etc/added.txt && added=yes
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\ndata:\n  added: "%s"\n' "$KRATIX_OBJECT_NAME" "$added" > /kratix/output/app.yaml
"#,
    );
    request(&config, "moving");
    // `:latest` is `Always`; a zero interval asks the registry on every pass.
    let dc = dir.path().join("promised.yaml");
    std::fs::write(
        &dc,
        format!(
            "images:\n  insecureRegistries: [\"{}\"]\n  resolveInterval: 0s\n",
            reg.host
        ),
    )
    .unwrap();
    let path = "clusters/dev/resources/default/app/moving/render/5058f/app.yaml";
    let (code, out, err) = reconcile(&config, &state, &dc);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(state_file(&state, path).contains("added: \"no\""));
    let first = ran_images(&state, "app/default/moving");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].starts_with(&format!("render: {image}@sha256:")),
        "{first:?}"
    );

    // Same digest: nothing runs again.
    let (code, out, err) = reconcile(&config, &state, &dc);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("ran"), "an unchanged image re-ran: {out}");
    assert_eq!(ran_images(&state, "app/default/moving"), first);

    // The tag moves to v2 (whose second layer adds /etc/added.txt): the workflow runs again.
    reg.push(&layout, "v2", "test/busybox:latest", &[]);
    let (code, out, err) = reconcile(&config, &state, &dc);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(state_file(&state, path).contains("added: \"yes\""), "{out}");
    let second = ran_images(&state, "app/default/moving");
    assert_ne!(second, first, "the new digest is in status");
    assert!(second[0].starts_with(&format!("render: {image}@sha256:")));
    // The output commit names the image that produced it, at its new digest.
    let message = common::git(
        &state.join("state.git"),
        &["log", "-1", "--format=%B", "main"],
    );
    let ran = second[0].trim_start_matches("render: ");
    assert!(
        message
            .lines()
            .any(|l| l == format!("Promised-Image: {ran}")),
        "{message}"
    );
}

#[test]
fn registry_credentials_come_from_the_auth_file_and_are_never_shown() {
    if !ready() {
        return;
    }
    const PASSWORD: &str = "pw-Zq8-never-shown";
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start_with_htpasswd(&dir.path().join("reg"), "puller", PASSWORD);
    let layout = build_images(dir.path());
    reg.push(&layout, "v2", "test/private:v2", &[]);
    let config = dir.path().join("config");
    let state = dir.path().join("state");
    config_repo(
        &config,
        &reg.image("test/private:v2"),
        "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata:\\n  name: %s\\n' \"$KRATIX_OBJECT_NAME\" > /kratix/output/app.yaml",
    );
    request(&config, "private");

    // No credentials: the request fails with the registry's answer.
    let dc = daemon_config(dir.path(), &reg, 1);
    let (code, out, err) = reconcile(&config, &state, &dc);
    assert_ne!(code, 0, "{out}\n{err}");
    let row = common::status_row(&state, "app/default/private");
    let message = row["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("test/private:v2") && message.contains("401"),
        "the message names the image and the registry's answer: {message}"
    );

    // Credentials from a Docker config.json: it runs.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("puller:{PASSWORD}"));
    let auth = dir.path().join("auth.json");
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\": {{\"{}\": {{\"auth\": \"{encoded}\"}}}}}}",
            reg.host
        ),
    )
    .unwrap();
    std::fs::write(
        &dc,
        format!(
            "images:\n  insecureRegistries: [\"{}\"]\n  authFile: {}\n",
            reg.host,
            auth.display()
        ),
    )
    .unwrap();
    let (code, out2, err2) = common::promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-config",
        dc.to_str().unwrap(),
        "--log",
        "trace",
    ]);
    assert_eq!(code, 0, "{out2}\n{err2}");
    let file = state_file(
        &state,
        "clusters/dev/resources/default/app/private/render/5058f/app.yaml",
    );
    assert!(file.contains("name: private"), "{file}");

    // The password is nowhere: not in output or logs (at trace), status, commits or state.
    let (_, status, _) = common::promised(&[
        "status",
        "--state-dir",
        state.to_str().unwrap(),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    let history = common::git(&state.join("state.git"), &["log", "-p", "--all"]);
    for (what, text) in [
        ("first pass", format!("{out}{err}")),
        ("second pass", format!("{out2}{err2}")),
        ("status", status),
        ("state store history", history),
    ] {
        assert!(!text.contains(PASSWORD), "password in {what}");
        assert!(!text.contains(&encoded), "encoded credentials in {what}");
    }
    let mut stack = vec![state.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() && meta.len() < 1 << 20 {
                let bytes = std::fs::read(&p).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains(PASSWORD), "password in {}", p.display());
                assert!(
                    !text.contains(&encoded),
                    "encoded credentials in {}",
                    p.display()
                );
            }
        }
    }
}

#[test]
fn an_unusable_images_section_stops_reconcile_at_once_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    config_repo(&config, "example.com/app:v1", "true");
    let dc = dir.path().join("promised.yaml");
    std::fs::write(
        &dc,
        "images:\n  mirrors: {ghcr.io: \"https://mirror.example/path\"}\n",
    )
    .unwrap();
    let (code, out, err) = reconcile(&config, &dir.path().join("state"), &dc);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("images") && err.contains("mirrors") && err.contains("ghcr.io"),
        "{err}"
    );
}
