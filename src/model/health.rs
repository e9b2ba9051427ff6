//! `HealthRecord` (Kratix: `api/v1alpha1/healthrecord_types.go`, kratix-contract.md §5.5,
//! kratix-lifecycle.md §1.1) and SKE's `HealthDefinition` (kratix-lifecycle.md §1.3,
//! `syntasso/kratix-docs: docs/ske/03-reference/04-health-definition.md`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ObjectMeta, Pipeline};

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
    /// `{name, namespace, generation?}` of the request. Optional in Kratix's CRD (a record
    /// without it concerns no request; validation warns).
    #[serde(default)]
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
    /// The Promise version the record was produced against (Kratix planned field,
    /// `syntasso/kratix#945`): a record older than the version its request last applied is
    /// ignored; a record without one always counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
}

impl HealthRecordData {
    /// `promiseRef.name` (`""` when missing).
    pub fn promise_name(&self) -> &str {
        self.promise_ref
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// `(namespace, name)` of `resourceRef`, when both are set (Kratix requires both when
    /// `resourceRef` is present; a record without them concerns no request).
    pub fn resource(&self) -> Option<(&str, &str)> {
        let ns = self.resource_ref.get("namespace").and_then(Value::as_str)?;
        let name = self.resource_ref.get("name").and_then(Value::as_str)?;
        Some((ns, name))
    }
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

impl HealthState {
    /// The state as Kratix writes it: `unhealthy`, `degraded`, `unknown`, `healthy`, `ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unhealthy => "unhealthy",
            HealthState::Degraded => "degraded",
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Ready => "ready",
        }
    }

    /// Healthy or ready (Kratix sends a `Normal` event for these, `Warning` otherwise).
    pub fn is_good(self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::Ready)
    }
}

impl std::fmt::Display for HealthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SKE's `HealthDefinition` (kratix-lifecycle.md §1.3): a health check that a resource
/// configure pipeline outputs for its request. The SKE health agent runs it as a CronJob on
/// the Destination; promised runs it itself, with its pipeline runner.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthDefinition {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `HealthDefinition`.
    pub kind: String,
    /// Name (the `source` of the HealthRecords it produces) and namespace.
    pub metadata: ObjectMeta,
    /// What to run and when.
    pub spec: HealthDefinitionSpec,
}

/// `HealthDefinition.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthDefinitionSpec {
    /// `{name, namespace}` of the request it checks.
    #[serde(default)]
    pub resource_ref: Value,
    /// `{name}` of the Promise.
    #[serde(default)]
    pub promise_ref: Value,
    /// Cron schedule (five fields, or `@hourly`, `@daily`, …), evaluated in UTC.
    pub schedule: String,
    /// YAML given to the workflow as `/kratix/input/object.yaml` (default: the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The Pipeline to run; it writes `/kratix/output/health-status.yaml`.
    pub workflow: Pipeline,
    /// The Promise version it checks (Kratix planned, `syntasso/kratix#945`); copied onto
    /// its HealthRecords.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
}
