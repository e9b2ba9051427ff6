//! `Destination` (Kratix: `api/v1alpha1/destination_types.go`, kratix-contract.md §1.3).

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// A place output is written to: a path in a state store, selected by labels. Cluster-scoped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `Destination`.
    pub kind: String,
    /// Name and the labels scheduling matches against.
    pub metadata: ObjectMeta,
    /// Where and how files are written.
    pub spec: DestinationSpec,
}

/// `Destination.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationSpec {
    /// Directory inside the state store (after the store's own `path`). Required (Kratix CRD
    /// and webhook: "path field is required"); `/` or `.` mean the store root.
    pub path: String,
    /// The state store this Destination writes to.
    pub state_store_ref: StateStoreRef,
    /// When true, a Destination with labels only receives work whose selectors are non-empty
    /// (kratix-contract.md §3 rule 2). Default false.
    #[serde(default)]
    pub strict_match_labels: bool,
    /// Layout of files under `path`.
    #[serde(default)]
    pub filepath: FilepathSpec,
    /// What happens to files when the Destination is removed. Default `none`.
    #[serde(default)]
    pub cleanup: Cleanup,
    /// Canary files written on registration. Default enabled.
    #[serde(default)]
    pub init_workloads: InitWorkloads,
}

/// `Destination.spec.stateStoreRef`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateStoreRef {
    /// `GitStateStore` or `BucketStateStore`.
    pub kind: StateStoreKind,
    /// Name of the state store object.
    pub name: String,
}

/// The two kinds of state store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
pub enum StateStoreKind {
    /// A Git repository branch.
    GitStateStore,
    /// An S3-compatible bucket.
    BucketStateStore,
}

impl StateStoreKind {
    /// The kind's name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            StateStoreKind::GitStateStore => "GitStateStore",
            StateStoreKind::BucketStateStore => "BucketStateStore",
        }
    }
}

/// `Destination.spec.filepath`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilepathSpec {
    /// Layout mode; immutable in Kratix. Default `nestedByMetadata`.
    #[serde(default)]
    pub mode: FilepathMode,
    /// File name for `aggregatedYAML`; default `aggregated.yaml` (defaulted by the webhook).
    #[serde(default = "default_aggregated_filename")]
    pub filename: String,
}

impl Default for FilepathSpec {
    fn default() -> Self {
        FilepathSpec {
            mode: FilepathMode::default(),
            filename: default_aggregated_filename(),
        }
    }
}

fn default_aggregated_filename() -> String {
    "aggregated.yaml".to_string()
}

/// File layout under a Destination path (kratix-contract.md §4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum FilepathMode {
    /// `dependencies/<promise>/<pipeline>/<id5>/…` and
    /// `resources/<ns>/<promise>/<request>/<pipeline>/<id5>/…`.
    #[default]
    NestedByMetadata,
    /// Every placement's files concatenated into one file.
    #[serde(rename = "aggregatedYAML")]
    AggregatedYaml,
    /// Files directly under the Destination path.
    None,
}

/// `Destination.spec.cleanup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Cleanup {
    /// Files stay when the Destination goes (workloads, canaries, ownership index); its
    /// placements stay, misplaced.
    #[default]
    None,
    /// Every file promised wrote for the Destination is removed when it goes, its ownership
    /// index included; its requests are placed again.
    All,
}

/// `Destination.spec.initWorkloads`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitWorkloads {
    /// Write the canary files (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for InitWorkloads {
    fn default() -> Self {
        InitWorkloads { enabled: true }
    }
}

fn yes() -> bool {
    true
}
