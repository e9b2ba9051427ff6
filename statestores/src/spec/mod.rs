//! The Kratix state store specs, declared once for the whole of `promised`: the daemon's object
//! model (`promised::model::GitStateStore`, `BucketStateStore`) wraps them, and the backends
//! ([`crate::git`], [`crate::s3`]) are opened with them.
//!
//! - [`GitStateStoreSpec`]: Kratix `GitStateStore.spec` (`api/v1alpha1/gitstatestore_types.go`,
//!   `kratix-contract.md` §1.4);
//! - [`BucketStateStoreSpec`]: Kratix `BucketStateStore.spec`
//!   (`api/v1alpha1/bucketstatestore_types.go`, `kratix-contract.md` §1.5);
//! - [`SecretRef`], which both use.
//!
//! Field names are Kratix's (camelCase in YAML/JSON) and so are the defaults. Unknown fields are
//! accepted and ignored: Kratix's CRDs are structural, so the Kubernetes API server silently
//! prunes them. Plain data, no I/O; what the backends accept beyond Kratix (more URL forms,
//! verified TLS) is documented on the fields and in [`crate::git::config`].

mod bucket;
mod git;

use serde::{Deserialize, Serialize};

pub use bucket::{BucketAuthMethod, BucketStateStoreSpec};
pub use git::{GitAuthMethod, GitAuthor, GitStateStoreSpec};

/// Kratix `spec.secretRef` of a state store: a reference to a Kubernetes Secret. promised reads
/// key `<key>` of it from `<secrets_dir>/<name>/<key>` (or `<secrets_dir>/<name>_<key>`, or
/// the variable `PROMISED_SECRET_<NAME>_<KEY>`; see [`crate::secrets`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name (required): the directory `<secrets_dir>/<name>/`.
    pub name: String,
    /// Namespace; defaults to `default` (Kratix). Kept for Kratix compatibility, not used for
    /// lookups.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "default".into()
}
