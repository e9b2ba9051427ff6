//! Object metadata and references shared by every kind.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The subset of Kubernetes `metav1.ObjectMeta` that promised reads.
///
/// Other ObjectMeta fields (uid, resourceVersion, managedFields, …) are accepted and ignored,
/// as the API server would keep them but no Kratix behaviour depends on them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`; required for every object promised loads.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`; empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A label selector as Kratix uses it: equality on every listed label (AND).
///
/// Used in `Promise.spec.destinationSelectors` (kratix-contract.md §1.1, §3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels a Destination must carry, with these exact values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Identity of one object, for messages: kind plus optional namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's `kind`, e.g. `Promise` or `redis`.
    pub kind: String,
    /// The object's namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name (may be empty when the document has none).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// Formats as `kind name` or `kind namespace/name`, e.g. `redis default/a`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}
