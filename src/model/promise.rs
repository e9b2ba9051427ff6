//! `Promise` (Kratix: `api/v1alpha1/promise_types.go`, kratix-contract.md §1.1).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ObjectMeta, Pipeline, Selector};

/// A Promise: a service API (an embedded CRD), its workflows and where its output goes.
/// Cluster-scoped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Promise {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `Promise`.
    pub kind: String,
    /// Name (required), labels (`kratix.io/promise-version`), annotations.
    pub metadata: ObjectMeta,
    /// The Promise definition.
    #[serde(default)]
    pub spec: PromiseSpec,
}

/// `Promise.spec`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromiseSpec {
    /// `apiextensions.k8s.io/v1` CustomResourceDefinition, kept raw (Kratix: RawExtension).
    /// `None`, `null` and `{}` all mean "no API" (Kratix: `Promise.GetAPI`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Value>,
    /// Static dependencies: arbitrary Kubernetes objects written to every matching
    /// Destination as `static/<promise>-dependencies.yaml` (kratix-contract.md §2.10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<Value>,
    /// Promises that must be available first; version `""` means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_promises: Vec<RequiredPromise>,
    /// Label selectors for Destinations; on a key conflict they win over workflow
    /// selectors (kratix-contract.md §3 rule 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_selectors: Vec<Selector>,
    /// Promise-level and resource-level workflows.
    #[serde(default)]
    pub workflows: Workflows,
}

/// One entry of `spec.requiredPromises`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequiredPromise {
    /// Name of the required Promise.
    #[serde(default)]
    pub name: String,
    /// Required `kratix.io/promise-version`; `""` accepts any version.
    #[serde(default)]
    pub version: String,
}

/// `Promise.spec.workflows`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflows {
    /// Workflow options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<WorkflowConfig>,
    /// Workflows run for each resource request.
    #[serde(default)]
    pub resource: WorkflowActions,
    /// Workflows run once for the Promise itself.
    #[serde(default)]
    pub promise: WorkflowActions,
}

/// `Promise.spec.workflows.config`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowConfig {
    /// Namespace the pipelines run in (Kubernetes); also replaces the request namespace in
    /// resource paths (kratix-contract.md §9 item 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_namespace: Option<String>,
    /// Go duration (e.g. `10h`, `30m`), minimum `1m`; default from the daemon config (10h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciliation_interval: Option<String>,
}

/// The `configure` and `delete` Pipelines of one workflow type.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowActions {
    /// Run in order on every reconcile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configure: Vec<Pipeline>,
    /// Run on deletion; only the first is ever run (Kratix: `lib/workflow/reconciler.go`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<Pipeline>,
}

/// The parts of `spec.api` (a CRD) that promised needs.
///
/// Built by [`PromiseApi::from_crd`]; the version used is the one with `storage: true`, else
/// `versions[0]` (Kratix: `internal/controller/promise_controller.go:generateCRDAndGVK`).
#[derive(Debug, Clone, PartialEq)]
pub struct PromiseApi {
    /// `spec.group`, e.g. `marketplace.kratix.io`.
    pub group: String,
    /// The storage version's name, e.g. `v1alpha1`.
    pub version: String,
    /// `spec.names.kind`, e.g. `redis`.
    pub kind: String,
    /// `spec.names.plural` (`KRATIX_CRD_PLURAL`).
    pub plural: String,
    /// `spec.scope`: `Namespaced` or `Cluster` (`Namespaced` is required).
    pub scope: String,
    /// The storage version's `schema.openAPIV3Schema`, if any.
    pub schema: Option<Value>,
    /// Every version name served by the CRD (requests may use any served version).
    pub served_versions: Vec<String>,
}

impl PromiseApi {
    /// `apiVersion` of requests against this API: `<group>/<version>`.
    pub fn api_version(&self) -> String {
        format!("{}/{}", self.group, self.version)
    }

    /// Reads the CRD in `spec.api`. Returns `Ok(None)` for "no API" (`null` or `{}`), and
    /// `Err((field, message))` naming the first missing or mistyped field, with `field`
    /// relative to `spec.api` (e.g. `spec.names.kind`).
    pub fn from_crd(api: &Value) -> Result<Option<Self>, (String, String)> {
        match api {
            Value::Null => return Ok(None),
            Value::Object(m) if m.is_empty() => return Ok(None),
            Value::Object(_) => {}
            other => {
                return Err((
                    String::new(),
                    format!(
                        "expected a CustomResourceDefinition object, found {}",
                        type_name_of(other)
                    ),
                ));
            }
        }
        let text = |path: &[&str]| -> Result<String, (String, String)> {
            let mut v = api;
            for p in path {
                v = v.get(p).unwrap_or(&Value::Null);
            }
            match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::Null => Err((path.join("."), "required field is missing".into())),
                Value::String(_) => Err((path.join("."), "must not be empty".into())),
                other => Err((
                    path.join("."),
                    format!("expected string, found {}", type_name_of(other)),
                )),
            }
        };
        let group = text(&["spec", "group"])?;
        let kind = text(&["spec", "names", "kind"])?;
        let plural = text(&["spec", "names", "plural"])?;
        let scope = text(&["spec", "scope"]).unwrap_or_else(|_| "Namespaced".into());
        let versions = match api.pointer("/spec/versions") {
            Some(Value::Array(v)) if !v.is_empty() => v,
            _ => {
                return Err((
                    "spec.versions".into(),
                    "at least one version is required".into(),
                ));
            }
        };
        let mut served_versions = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            match v.get("name") {
                Some(Value::String(n)) if !n.is_empty() => {
                    if v.get("served").and_then(Value::as_bool).unwrap_or(true) {
                        served_versions.push(n.clone());
                    }
                }
                _ => {
                    return Err((
                        format!("spec.versions[{i}].name"),
                        "required field is missing".into(),
                    ));
                }
            }
        }
        let storage = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .unwrap_or(&versions[0]);
        let version = storage
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let schema = storage.pointer("/schema/openAPIV3Schema").cloned();
        Ok(Some(PromiseApi {
            group,
            version,
            kind,
            plural,
            scope,
            schema,
            served_versions,
        }))
    }
}

/// A JSON type name for messages: `string`, `integer`, `object`, ….
pub fn type_name_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
