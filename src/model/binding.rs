//! `ResourceBinding` (Kratix: `api/v1alpha1/resourcebinding_types.go`, kratix-lifecycle.md
//! §2.2, kratix-contract.md §7): which Promise version one resource request runs at.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ObjectMeta;

/// `spec.version` of a binding that follows the Promise's latest version (Kratix's default).
pub const LATEST_VERSION: &str = "latest";
/// Label naming the request a ResourceBinding is for (with `kratix.io/promise-name`): Kratix
/// finds a request's binding by these two labels in the request's namespace, not by name.
pub const RESOURCE_NAME_LABEL: &str = "kratix.io/resource-name";

/// One request's binding to a Promise version. Namespaced, one per request.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceBinding {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `ResourceBinding`.
    pub kind: String,
    /// Name, namespace and the labels it is found by.
    pub metadata: ObjectMeta,
    /// The desired version.
    #[serde(default)]
    pub spec: ResourceBindingSpec,
}

/// `ResourceBinding.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceBindingSpec {
    /// `latest` (default) or a version (`v1.2.0`): a Promise's `kratix.io/promise-version`.
    #[serde(default = "latest")]
    pub version: String,
    /// `{name}` of the Promise (informative: the labels decide).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub promise_ref: Value,
    /// `{name, namespace}` of the request (informative: the labels decide).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub resource_ref: Value,
}

impl Default for ResourceBindingSpec {
    fn default() -> Self {
        ResourceBindingSpec {
            version: latest(),
            promise_ref: Value::Null,
            resource_ref: Value::Null,
        }
    }
}

fn latest() -> String {
    LATEST_VERSION.to_string()
}

impl ResourceBinding {
    /// `(promise, namespace, request name)` it binds, from its labels and namespace
    /// (`default` when unset); `None` when a label is missing.
    pub fn target(&self) -> Option<(&str, &str, &str)> {
        let l = &self.metadata.labels;
        Some((
            l.get(super::PROMISE_NAME_LABEL)?.as_str(),
            self.metadata.namespace.as_deref().unwrap_or("default"),
            l.get(RESOURCE_NAME_LABEL)?.as_str(),
        ))
    }
}
