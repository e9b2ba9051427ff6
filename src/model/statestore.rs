//! `GitStateStore` and `BucketStateStore` (Kratix: `api/v1alpha1/gitstatestore_types.go`,
//! `bucketstatestore_types.go`; kratix-contract.md §1.4, §1.5).
//!
//! Only the object wrappers live here. Their specs ([`GitStateStoreSpec`],
//! [`BucketStateStoreSpec`] and the types they use) are declared once, with Kratix's field docs
//! and defaults, in the `statestores` crate ([`statestores::spec`]), which opens the stores with
//! them; they are re-exported here so the model names every Kratix kind.

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

pub use statestores::spec::{
    BucketAuthMethod, BucketStateStoreSpec, GitAuthMethod, GitAuthor, GitStateStoreSpec, SecretRef,
};

/// A Git repository branch that Destinations write to. Cluster-scoped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitStateStore {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `GitStateStore`.
    pub kind: String,
    /// Name (referenced by `Destination.spec.stateStoreRef`).
    pub metadata: ObjectMeta,
    /// Repository, branch and credentials.
    pub spec: GitStateStoreSpec,
}

/// An S3-compatible bucket that Destinations write to. Cluster-scoped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketStateStore {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `BucketStateStore`.
    pub kind: String,
    /// Name (referenced by `Destination.spec.stateStoreRef`).
    pub metadata: ObjectMeta,
    /// Bucket, endpoint and credentials.
    pub spec: BucketStateStoreSpec,
}
