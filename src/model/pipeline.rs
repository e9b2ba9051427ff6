//! The workflow `Pipeline` (Kratix: `api/v1alpha1/pipeline_types.go`, kratix-contract.md §1.2).
//!
//! Not a CRD: Pipelines are embedded in `Promise.spec.workflows`. Kratix's Promise webhook
//! decodes each one with `DisallowUnknownFields`, so every struct here denies unknown fields.
//! Kubernetes sub-objects that promised does not interpret (probes, volumes, tolerations, …)
//! are kept as raw JSON so a Promise written for Kratix still loads unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One Pipeline of a workflow: containers that run in order, sharing `/kratix/*`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pipeline {
    /// Must be `platform.kratix.io/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// Must be `Pipeline`.
    #[serde(default)]
    pub kind: String,
    /// Name, labels and annotations (copied to the Job's pod template by Kratix).
    pub metadata: PipelineMeta,
    /// The containers and pod-level options.
    pub spec: PipelineSpec,
}

/// `metav1.ObjectMeta` of a Pipeline. Every ObjectMeta field is accepted (the Kratix webhook
/// decodes into the real ObjectMeta type); only `name`, `labels` and `annotations` are used.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineMeta {
    /// Pipeline name; unique per workflow and action (kratix-contract.md §1.1).
    #[serde(default)]
    pub name: String,
    /// Labels; must be valid Kubernetes labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations. promised reads `promised.dev/network: "true"` to let the Pipeline use the
    /// host network on the process runtime.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_name: Option<String>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizers: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_fields: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_link: Option<Value>,
}

/// `Pipeline.spec` (kratix-contract.md §1.2).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineSpec {
    /// Containers, run strictly in order; each must exit 0.
    #[serde(default)]
    pub containers: Vec<Container>,
    /// Extra pod volumes (Kubernetes only; the process runtime ignores them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Value>,
    /// Image pull secrets (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Value>,
    /// `{backoffLimit: int32}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_options: Option<Value>,
    /// Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Value>,
    /// Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Value>,
    /// `OnFailure` (default) or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// Service account and permissions (Kubernetes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac: Option<Value>,
}

/// A `corev1.Container` as used by a Pipeline. Every Container field is accepted; the process
/// runtime uses `name`, `image`, `command`, `args`, `env` and `workingDir`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Container {
    /// Container name (required by Kubernetes).
    #[serde(default)]
    pub name: String,
    /// Image reference; mapped to a host command by the daemon's image overrides.
    #[serde(default)]
    pub image: String,
    /// Entrypoint override (argv); `None` means the image's entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Arguments appended to the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment, appended after the `KRATIX_*` variables (later duplicates win).
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Accepted; not supported by the process runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_policy: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<Value>,
    /// Accepted and ignored by the process runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_devices: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_path: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_message_policy: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_once: Option<Value>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<Value>,
}

/// A `corev1.EnvVar`: a literal `value`, or a `valueFrom` source.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value (`""` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `fieldRef` / `secretKeyRef` / `configMapKeyRef`, resolved by the process runtime
    /// without Kubernetes ([`crate::pipeline::env`]); `resourceFieldRef` is decoded so that
    /// validation can name it, and rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// A `corev1.EnvVarSource`: exactly one source must be set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVarSource {
    /// A field of the pipeline's pod (`metadata.namespace`, `metadata.name`,
    /// `metadata.labels['…']`, `metadata.annotations['…']`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
    /// Container resources (Kubernetes only; rejected by validation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_field_ref: Option<Value>,
    /// A key of a ConfigMap (a file under the daemon config's `pipelineConfigMaps.dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
    /// A key of a Secret (a file under `pipelineSecrets.dir`, if the Promise may read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
}

/// A `corev1.ObjectFieldSelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectFieldSelector {
    /// `v1` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The field, e.g. `metadata.namespace`.
    #[serde(default)]
    pub field_path: String,
}

/// A `corev1.SecretKeySelector` / `corev1.ConfigMapKeySelector`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySelector {
    /// The Secret's or ConfigMap's name.
    #[serde(default)]
    pub name: String,
    /// The key.
    #[serde(default)]
    pub key: String,
    /// When true, a missing Secret/ConfigMap or key leaves the variable unset instead of
    /// failing the Pipeline (Kubernetes semantics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}
