//! A minimal config repo for tests that run with `sandbox: none`: a Promise `app` (kind `App`,
//! `apps.example.com/v1`) whose `configure` pipeline writes `app.yaml`, a local Git state
//! store `local` (`state.git` in the state directory) and a Destination `dev` on it.

use std::path::Path;

pub const PROMISE: &str = r#"apiVersion: platform.kratix.io/v1alpha1
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
"#;

pub const RENDER: &str =
    "#!/bin/sh\nset -eu\necho \"kind: ConfigMap\" > \"$KRATIX_OUTPUT_DIR/app.yaml\"\n";

pub const PLATFORM: &str = r#"apiVersion: platform.kratix.io/v1alpha1
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

/// Writes the Promise (`promises/app/`), the platform objects (`platform/platform.yaml`) and
/// an empty `requests/` folder under `repo`.
pub fn write_config(repo: &Path) {
    std::fs::create_dir_all(repo.join("promises/app")).unwrap();
    std::fs::create_dir_all(repo.join("requests")).unwrap();
    std::fs::create_dir_all(repo.join("platform")).unwrap();
    std::fs::write(repo.join("promises/app/promise.yaml"), PROMISE).unwrap();
    std::fs::write(repo.join("promises/app/render"), RENDER).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        repo.join("promises/app/render"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(repo.join("platform/platform.yaml"), PLATFORM).unwrap();
}

/// A request of `app` named `name` in `namespace`, as YAML.
pub fn request(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: App\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  size: small\n"
    )
}
