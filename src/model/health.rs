//! `HealthRecord` (Kratix: `api/v1alpha1/healthrecord_types.go`, kratix-contract.md §5.5).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ObjectMeta;

/// A health report about one resource request. Namespaced; the payload is in `data`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecord {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `HealthRecord`.
    pub kind: String,
    /// Name and namespace.
    pub metadata: ObjectMeta,
    /// The report.
    pub data: HealthRecordData,
}

/// `HealthRecord.data`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecordData {
    /// `{name}` of the Promise.
    pub promise_ref: Value,
    /// `{name, namespace, generation?}` of the request.
    pub resource_ref: Value,
    /// Reported state; default `unknown`.
    #[serde(default)]
    pub state: HealthState,
    /// Unix seconds of the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<i64>,
    /// Free-form details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Health states, worst first: unhealthy < degraded < unknown < healthy < ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HealthState {
    /// Worst.
    Unhealthy,
    /// Partly working.
    Degraded,
    /// Not known (default).
    #[default]
    Unknown,
    /// Working.
    Healthy,
    /// Ready.
    Ready,
}
