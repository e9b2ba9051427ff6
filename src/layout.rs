//! Where files land in a state store: the Kratix path layout, byte for byte
//! (kratix-contract.md §4.1; Kratix: `internal/controller/workplacement_controller.go:getDir`,
//! `destination_controller.go:getCanaryWorkloads`).
//!
//! All paths are state-store relative, `/`-separated, with no leading or trailing `/`, and
//! include the state store's own `spec.path` prefix.
//!
//! | mode | dependency (Promise-level) | resource |
//! |---|---|---|
//! | `nestedByMetadata` | `<ss>/<dest>/dependencies/<promise>/<pipeline>/<id5>/<file>` | `<ss>/<dest>/resources/<ns>/<promise>/<request>/<pipeline>/<id5>/<file>` |
//! | `none` | `<ss>/<dest>/<file>` | `<ss>/<dest>/<file>` |
//! | `aggregatedYAML` | `<ss>/<dest>/<filename>` (all placements concatenated) | same |
//!
//! `id5` is the first five hex characters of the md5 of the workload group's directory
//! (`5058f` for the root group `.`). Static dependencies (`spec.dependencies`) have an empty
//! pipeline segment: `<ss>/<dest>/dependencies/<promise>/5058f/static/<promise>-dependencies.yaml`.

use md5::{Digest, Md5};

use crate::model::FilepathMode;

/// Hex md5 of a workload group directory: the group id (Kratix: `lib/hash.ComputeHash`).
/// `group_id(".")` is `5058f1af8388633f609cadb75a75dc9d`.
pub fn group_id(directory: &str) -> String {
    hex::encode(Md5::digest(directory.as_bytes()))
}

/// First five hex characters of [`group_id`]: the path segment (`5058f` for `.`).
pub fn id5(group_id: &str) -> &str {
    &group_id[..group_id.len().min(5)]
}

/// The root group's directory name.
pub const ROOT_DIRECTORY: &str = ".";

/// Joins path segments like Go's `filepath.Join`: empty and `.` segments vanish, slashes are
/// collapsed. `join(&["", "clusters/dev/", "resources"])` is `clusters/dev/resources`.
pub fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .flat_map(|p| p.split('/'))
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// What produced a placement: the Promise itself (dependencies) or one resource request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkScope {
    /// Promise-level output (`promise.configure`, or static `spec.dependencies` when
    /// `pipeline` is empty).
    Dependency,
    /// Output of a request's `resource.configure`. `namespace` is the request namespace, or
    /// the Promise's `pipelineNamespace` when set (kratix-contract.md §9 item 10).
    Resource {
        /// Namespace segment.
        namespace: String,
        /// Request name.
        name: String,
    },
}

/// Directory of one placement in `nestedByMetadata` mode, or the Destination directory in the
/// other modes (files are then placed directly under it).
pub fn placement_dir(
    store_path: &str,
    dest_path: &str,
    mode: FilepathMode,
    promise: &str,
    scope: &WorkScope,
    pipeline: &str,
    group_id: &str,
) -> String {
    match mode {
        FilepathMode::NestedByMetadata => match scope {
            WorkScope::Dependency => join(&[
                store_path,
                dest_path,
                "dependencies",
                promise,
                pipeline,
                id5(group_id),
            ]),
            WorkScope::Resource { namespace, name } => join(&[
                store_path,
                dest_path,
                "resources",
                namespace,
                promise,
                name,
                pipeline,
                id5(group_id),
            ]),
        },
        FilepathMode::None | FilepathMode::AggregatedYaml => join(&[store_path, dest_path]),
    }
}

/// Path of one output file (`file` relative to `/kratix/output`, so directory-group files keep
/// their `<dir>/` prefix, as in Kratix). For `aggregatedYAML` use [`aggregated_path`].
pub fn file_path(placement_dir: &str, file: &str) -> String {
    join(&[placement_dir, file])
}

/// The single file of an `aggregatedYAML` Destination.
pub fn aggregated_path(store_path: &str, dest_path: &str, filename: &str) -> String {
    join(&[store_path, dest_path, filename])
}

/// Separator between documents of an `aggregatedYAML` file (Kratix joins with `"\n---\n"`).
pub const AGGREGATE_SEPARATOR: &str = "\n---\n";

/// Content of the canary Namespace (Kratix: destination_controller_test.go).
pub const CANARY_NAMESPACE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kratix-worker-system\nspec: {}\nstatus: {}\n";
/// Content of the canary ConfigMap (Kratix: destination_controller_test.go).
pub const CANARY_CONFIGMAP: &str = "apiVersion: v1\ndata:\n  canary: this confirms your infrastructure is reading from Kratix state stores\nkind: ConfigMap\nmetadata:\n  name: kratix-info\n  namespace: kratix-worker-system\n";

/// The canary ("init workloads") files of a Destination, as `(path, content)`:
/// `dependencies/kratix-canary-namespace.yaml` and `resources/kratix-canary-configmap.yaml` in
/// `nestedByMetadata` mode, both directly under the Destination path otherwise.
pub fn canary_files(
    store_path: &str,
    dest_path: &str,
    mode: FilepathMode,
) -> Vec<(String, &'static str)> {
    match mode {
        FilepathMode::NestedByMetadata => vec![
            (
                join(&[
                    store_path,
                    dest_path,
                    "dependencies",
                    "kratix-canary-namespace.yaml",
                ]),
                CANARY_NAMESPACE,
            ),
            (
                join(&[
                    store_path,
                    dest_path,
                    "resources",
                    "kratix-canary-configmap.yaml",
                ]),
                CANARY_CONFIGMAP,
            ),
        ],
        FilepathMode::None | FilepathMode::AggregatedYaml => vec![
            (
                join(&[store_path, dest_path, "kratix-canary-namespace.yaml"]),
                CANARY_NAMESPACE,
            ),
            (
                join(&[store_path, dest_path, "kratix-canary-configmap.yaml"]),
                CANARY_CONFIGMAP,
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_match_kratix() {
        assert_eq!(group_id("."), "5058f1af8388633f609cadb75a75dc9d");
        assert_eq!(id5(&group_id(".")), "5058f");
        assert_eq!(id5(&group_id("backstage")), "5cfaf");
        assert_eq!(id5(&group_id("dest1")), "ba6cb");
    }

    #[test]
    fn paths_for_every_mode() {
        let root = group_id(".");
        let res = WorkScope::Resource {
            namespace: "default".into(),
            name: "example".into(),
        };
        let cases = [
            (
                FilepathMode::NestedByMetadata,
                &res,
                "instance-configure",
                "destinations/worker-1/resources/default/redis/example/instance-configure/5058f",
            ),
            (
                FilepathMode::NestedByMetadata,
                &WorkScope::Dependency,
                "promise-configure",
                "destinations/worker-1/dependencies/redis/promise-configure/5058f",
            ),
            (
                FilepathMode::None,
                &res,
                "instance-configure",
                "destinations/worker-1",
            ),
            (
                FilepathMode::AggregatedYaml,
                &WorkScope::Dependency,
                "p",
                "destinations/worker-1",
            ),
        ];
        for (mode, scope, pipeline, want) in cases {
            assert_eq!(
                placement_dir(
                    "/destinations/",
                    "worker-1",
                    mode,
                    "redis",
                    scope,
                    pipeline,
                    &root
                ),
                want
            );
        }
        // Static dependencies: empty pipeline segment.
        let d = placement_dir(
            "",
            "dev",
            FilepathMode::NestedByMetadata,
            "redis",
            &WorkScope::Dependency,
            "",
            &root,
        );
        assert_eq!(
            file_path(&d, "static/redis-dependencies.yaml"),
            "dev/dependencies/redis/5058f/static/redis-dependencies.yaml"
        );
        // Directory groups keep their directory prefix under the id5 segment.
        let g = group_id("backstage");
        let d = placement_dir(
            "",
            "bs",
            FilepathMode::NestedByMetadata,
            "kafka",
            &WorkScope::Dependency,
            "promise-configure",
            &g,
        );
        assert_eq!(
            file_path(&d, "backstage/component.yaml"),
            "bs/dependencies/kafka/promise-configure/5cfaf/backstage/component.yaml"
        );
        // "/" and "." Destination paths mean the store root.
        for root_path in ["/", ".", "./"] {
            assert_eq!(
                placement_dir("", root_path, FilepathMode::None, "p", &res, "x", &root),
                ""
            );
            assert_eq!(file_path("", "a.yaml"), "a.yaml");
        }
        assert_eq!(
            aggregated_path("ss", "dev", "aggregated.yaml"),
            "ss/dev/aggregated.yaml"
        );
    }

    #[test]
    fn canaries() {
        let c = canary_files("", "dev", FilepathMode::NestedByMetadata);
        assert_eq!(c[0].0, "dev/dependencies/kratix-canary-namespace.yaml");
        assert_eq!(c[1].0, "dev/resources/kratix-canary-configmap.yaml");
        let c = canary_files("s", "dev", FilepathMode::None);
        assert_eq!(c[0].0, "s/dev/kratix-canary-namespace.yaml");
        assert!(CANARY_CONFIGMAP.contains("kind: ConfigMap"));
    }
}
