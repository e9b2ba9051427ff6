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

mod binding;
mod destination;
mod health;
mod meta;
mod pipeline;
mod promise;
mod statestore;
mod time;
mod upgrade_plan;

pub use binding::{LATEST_VERSION, RESOURCE_NAME_LABEL, ResourceBinding, ResourceBindingSpec};
pub use destination::{
    Cleanup, Destination, DestinationSpec, FilepathMode, FilepathSpec, InitWorkloads,
    StateStoreKind, StateStoreRef,
};
pub use health::{
    HealthDefinition, HealthDefinitionSpec, HealthRecord, HealthRecordData, HealthState,
};
pub use meta::{
    CLUSTER_SCOPED_KINDS, ObjectMeta, ObjectRef, Selector, is_cluster_scoped, is_dns_label,
    is_dns_subdomain, namespaced_name, promise_key, request_key,
};
pub use pipeline::{
    Container, EnvVar, EnvVarSource, KeySelector, ObjectFieldSelector, Pipeline, PipelineMeta,
    PipelineSpec,
};
pub use promise::{
    Promise, PromiseApi, PromiseSpec, RequiredPromise, WorkflowActions, WorkflowConfig, Workflows,
    type_name_of,
};
pub use statestore::{
    BucketAuthMethod, BucketStateStore, BucketStateStoreSpec, GitAuthMethod, GitAuthor,
    GitStateStore, GitStateStoreSpec, SecretRef,
};
pub use time::{next_run, parse_go_duration};
pub use upgrade_plan::{
    CheckedGate, CheckedGroup, CheckedPlan, Concurrency, GroupSelector, HealthGate,
    LabelExpression, PromiseRef, RolloutGroup, SKE_API_VERSION, UPGRADE_PLAN_KIND, UpgradePath,
    UpgradePlan, UpgradePlanSpec, UpgradeWindow,
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

#[cfg(test)]
mod tests {
    //! The defaults of kratix-contract.md §1.3–§1.5 and §5.5, each from a minimal object.

    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
        let value = serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap();
        serde_path_to_error::deserialize(&value)
            .unwrap_or_else(|e| panic!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn destination_defaults() {
        let d: Destination = parse(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata: {name: dev}\n\
             spec:\n  path: dev\n  stateStoreRef: {kind: GitStateStore, name: default}\n",
        );
        assert_eq!(d.spec.filepath.mode, FilepathMode::NestedByMetadata);
        assert_eq!(d.spec.filepath.filename, "aggregated.yaml");
        assert_eq!(d.spec.cleanup, Cleanup::None);
        assert!(!d.spec.strict_match_labels);
        assert!(d.spec.init_workloads.enabled);
        // `initWorkloads: {}` (the CRD's default object) still means enabled.
        let d: Destination = parse(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata: {name: dev}\n\
             spec:\n  path: dev\n  stateStoreRef: {kind: GitStateStore, name: default}\n  initWorkloads: {}\n  filepath: {mode: aggregatedYAML}\n",
        );
        assert!(d.spec.init_workloads.enabled);
        assert_eq!(d.spec.filepath.mode, FilepathMode::AggregatedYaml);
        assert_eq!(d.spec.filepath.filename, "aggregated.yaml");
    }

    #[test]
    fn git_state_store_defaults() {
        let s: GitStateStore = parse(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata: {name: default}\n\
             spec:\n  url: https://example.com/org/repo.git\n  secretRef: {name: git}\n",
        );
        assert_eq!(s.spec.branch, "main");
        assert_eq!(s.spec.auth_method, GitAuthMethod::BasicAuth);
        assert_eq!(
            s.spec.git_author,
            GitAuthor {
                name: "kratix".into(),
                email: String::new()
            }
        );
        assert_eq!(s.spec.path, "");
        assert_eq!(s.spec.secret_ref.unwrap().namespace, "default");
        // A gitAuthor with only an email keeps the default name.
        let s: GitStateStore = parse(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata: {name: default}\n\
             spec:\n  url: git@example.com:org/repo.git\n  authMethod: ssh\n  gitAuthor: {email: a@example.com}\n",
        );
        assert_eq!(s.spec.auth_method, GitAuthMethod::Ssh);
        assert_eq!(s.spec.git_author.name, "kratix");
        assert_eq!(s.spec.git_author.email, "a@example.com");
    }

    #[test]
    fn bucket_state_store_defaults() {
        let base = "apiVersion: platform.kratix.io/v1alpha1\nkind: BucketStateStore\nmetadata: {name: s3}\n\
                    spec:\n  bucketName: kratix\n  endpoint: s3.eu-west-2.amazonaws.com\n";
        let s: BucketStateStore = parse(base);
        assert_eq!(s.spec.auth_method, BucketAuthMethod::AccessKey);
        assert!(!s.spec.insecure);
        assert!(!s.spec.use_dual_stack);
        assert_eq!(s.spec.path, "");
        // Kratix treats `authMethod: ""` as accessKey.
        let s: BucketStateStore = parse(&format!("{base}  authMethod: \"\"\n"));
        assert_eq!(s.spec.auth_method, BucketAuthMethod::AccessKey);
        let s: BucketStateStore = parse(&format!("{base}  authMethod: IAM\n"));
        assert_eq!(s.spec.auth_method, BucketAuthMethod::Iam);
    }

    #[test]
    fn health_record_state_defaults_to_unknown() {
        let h: HealthRecord = parse(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: HealthRecord\nmetadata: {name: h, namespace: default}\n\
             data:\n  promiseRef: {name: redis}\n  resourceRef: {name: example, namespace: default}\n",
        );
        assert_eq!(h.data.state, HealthState::Unknown);
        assert_eq!(h.data.last_run, None);
        // Worst first (kratix-contract.md §5.5).
        assert!(HealthState::Unhealthy < HealthState::Degraded);
        assert!(HealthState::Degraded < HealthState::Unknown);
        assert!(HealthState::Unknown < HealthState::Healthy);
        assert!(HealthState::Healthy < HealthState::Ready);
    }
}
