//! The Kratix object model, as plain data (no I/O).
//!
//! One struct per Kratix kind, with Kratix's field names and defaults (kratix-contract.md §1,
//! Kratix: `api/v1alpha1/*_types.go`). All kinds live in `platform.kratix.io/v1alpha1`.
//!
//! Unknown fields: Kratix's CRDs are structural, so the Kubernetes API server silently prunes
//! unknown fields of Promises, Destinations and state stores; we accept and ignore them too.
//! Workflow `Pipeline`s are different: Kratix's Promise webhook decodes them with
//! `DisallowUnknownFields`, so [`Pipeline`] rejects unknown fields
//! (Kratix: `internal/webhook/v1alpha1/promise_webhook.go`).

mod destination;
mod health;
mod meta;
mod pipeline;
mod promise;
mod statestore;

pub use destination::{
    Cleanup, Destination, DestinationSpec, FilepathMode, FilepathSpec, InitWorkloads,
    StateStoreKind, StateStoreRef,
};
pub use health::{HealthRecord, HealthRecordData, HealthState};
pub use meta::{ObjectMeta, ObjectRef, Selector};
pub use pipeline::{Container, EnvVar, Pipeline, PipelineMeta, PipelineSpec};
pub use promise::{
    Promise, PromiseApi, PromiseSpec, RequiredPromise, WorkflowActions, WorkflowConfig, Workflows,
    type_name_of,
};
pub use statestore::{
    BucketAuthMethod, BucketStateStore, BucketStateStoreSpec, GitAuthMethod, GitAuthor,
    GitStateStore, GitStateStoreSpec, SecretRef,
};

/// API group of every Kratix kind.
pub const KRATIX_GROUP: &str = "platform.kratix.io";
/// `apiVersion` of every Kratix kind (Kratix: `api/v1alpha1/groupversion_info.go`).
pub const KRATIX_API_VERSION: &str = "platform.kratix.io/v1alpha1";
/// Label Kratix adds to every resource request before any workflow runs
/// (kratix-contract.md §2.4).
pub const PROMISE_NAME_LABEL: &str = "kratix.io/promise-name";
/// Label that gives a Promise its version (kratix-contract.md §1.1).
pub const PROMISE_VERSION_LABEL: &str = "kratix.io/promise-version";
