//! The synthetic config repo: N resource requests spread over K Promises, 3 Destinations on
//! one `GitStateStore`.

use std::path::Path;

use crate::common::git;

/// The image the host process runtime ignores (no `images:` section in the daemon config):
/// the container's `command` runs as a host process in the sandbox.
pub const HOST_IMAGE: &str = "promised.dev/local";

/// The Promise names: `alpha`, `beta`, `gamma` for 3 (comparable with earlier results), else
/// `p000`, `p001`, …
pub fn promise_names(k: usize) -> Vec<String> {
    if k == 3 {
        return ["alpha", "beta", "gamma"].map(String::from).to_vec();
    }
    (0..k).map(|i| format!("p{i:03}")).collect()
}

fn promise_yaml(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata:
  name: {name}
spec:
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: {name}s.bench.promised.dev
    spec:
      group: bench.promised.dev
      names:
        kind: {name}
        plural: {name}s
        singular: {name}
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
                    size:
                      type: string
                      enum: [small, large]
                      default: small
                    replicas:
                      type: integer
                      default: 1
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata:
            name: instance-configure
          spec:
            containers:
              - name: render
                image: {image}
                command: ["/promise/configure"]
"#
    )
}

/// Shell builtins only: one `sh` process per container (host `dash`, or the image's busybox).
/// `data.root` says which root it ran on: `image` when the bench image's
/// `/etc/removed-later.txt` is there, else `host`.
const PIPELINE_SCRIPT: &str = r#"#!/bin/sh
size=small
root=host
[ -e /etc/removed-later.txt ] && root=image
while IFS= read -r line; do
  case "$line" in "  size: "*) size=${line#  size: } ;; esac
done < /kratix/input/object.yaml
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\ndata:\n  promise: %s\n  size: %s\n  root: %s\n' \
  "$KRATIX_OBJECT_NAME" "$KRATIX_OBJECT_NAMESPACE" "$KRATIX_PROMISE_NAME" "$size" "$root" > /kratix/output/configmap.yaml
printf 'message: %s is %s\n' "$KRATIX_OBJECT_NAME" "$size" > /kratix/metadata/status.yaml
"#;

/// The repo path of request `i`.
pub fn request_path(promises: &[String], i: usize) -> String {
    let p = &promises[i % promises.len()];
    format!("requests/{p}/r-{i:05}.yaml")
}

/// Request `i` with `spec.size` set to `size`.
pub fn request_yaml(promises: &[String], i: usize, size: &str) -> String {
    let p = &promises[i % promises.len()];
    format!(
        "apiVersion: bench.promised.dev/v1\nkind: {p}\nmetadata:\n  name: r-{i:05}\n  namespace: default\nspec:\n  size: {size}\n"
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, text).expect("write");
}

/// Writes the whole config repo into `dir`: state store `state_url`, the Promises'
/// containers on `image`.
pub fn write_config(dir: &Path, n: usize, promises: &[String], state_url: &str, image: &str) {
    write(
        dir,
        "platform/state-store.yaml",
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: bench\nspec:\n  url: {state_url}\n  branch: main\n"
        ),
    );
    let mut dests = String::new();
    for d in 1..=3 {
        dests.push_str(&format!(
            "---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: worker-{d}\n  labels:\n    zone: z{d}\nspec:\n  path: worker-{d}\n  stateStoreRef:\n    kind: GitStateStore\n    name: bench\n"
        ));
    }
    write(dir, "platform/destinations.yaml", &dests);
    for p in promises {
        set_promise_image(dir, p, image);
        let script = dir.join(format!("promises/{p}/configure"));
        std::fs::write(&script, PIPELINE_SCRIPT).expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for i in 0..n {
        write(
            dir,
            &request_path(promises, i),
            &request_yaml(promises, i, "small"),
        );
    }
}

/// (Re)writes Promise `p`'s `promise.yaml` with its container on `image`.
pub fn set_promise_image(dir: &Path, p: &str, image: &str) {
    write(
        dir,
        &format!("promises/{p}/promise.yaml"),
        &promise_yaml(p, image),
    );
}

/// Commits everything in `work` and pushes it to `url` as `branch`.
pub fn commit_and_push(work: &Path, url: &str, branch: &str, msg: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["push", "-q", url, &format!("HEAD:{branch}")]);
}

/// Pushes, as branch `image`, the config of `work`'s `main` with every Promise's container on
/// `image`; `work` is back on `main` afterwards.
pub fn push_image_branch(work: &Path, url: &str, promises: &[String], image: &str) {
    git(work, &["checkout", "-q", "-B", "image", "main"]);
    for p in promises {
        set_promise_image(work, p, image);
    }
    commit_and_push(work, url, "image", "bench config: image runtime");
    git(work, &["checkout", "-q", "main"]);
}
