//! Status of Promises and resource requests, with Kratix's conditions, reasons and messages
//! (kratix-contract.md §5.1, §5.2; Kratix: `lib/resourceutil/util.go`,
//! `dynamic_resource_request_controller.go`, `promise_controller.go`).
//!
//! Kratix writes status onto the Kubernetes object; promised keeps it in its state directory
//! and shows it with `promised status`. The shape follows the Kratix `status` block, plus what
//! Kratix users ask for and do not get: where the request landed (kratix #823) and the state
//! store commit.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::ObjectRef;

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `ConfigureWorkflowCompleted`, `WorksSucceeded`, `Reconciled`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase reason, e.g. `PipelinesExecutedSuccessfully`.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: String,
}

/// Phase of one pipeline (`status.kratix.workflows.pipelines[].phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Not started.
    Pending,
    /// Running.
    Running,
    /// Finished with exit 0.
    Succeeded,
    /// A container failed, timed out or produced unsafe output.
    Failed,
    /// `workflow-control.yaml` asked to suspend or retry.
    Suspended,
}

/// One pipeline's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// Failure or suspension message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time of the next retry (`retryAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// Retry attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// RFC 3339 time the phase last changed.
    pub last_transition_time: String,
    /// The image each container ran, as `<container>: <image>@sha256:…` (image runtime only;
    /// provenance of the output).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where one workload group of an object landed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Landed {
    /// Destination name.
    pub destination: String,
    /// Pipeline that produced the files (empty for static dependencies).
    pub pipeline: String,
    /// Directory of the placement in the state store.
    pub path: String,
    /// The Destination no longer matches the selectors (Kratix `kratix.io/misplaced`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub misplaced: bool,
}

/// The status of one Promise or resource request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// The object.
    pub object: ObjectRef,
    /// Promise name (the object itself for Promises).
    pub promise: String,
    /// Config file and document it was read from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `status.message`.
    pub message: String,
    /// Promise only: `Available` or `Unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Kratix conditions, sorted by type.
    pub conditions: Vec<Condition>,
    /// `status.kratix.workflows.pipelines`.
    pub pipelines: Vec<PipelineStatus>,
    /// Keys written by pipelines in `/kratix/metadata/status.yaml`, merged (§2.6).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// Where the output landed.
    pub destinations: Vec<Landed>,
    /// State store commit (or version) per state store that holds this object's files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub commits: BTreeMap<String, String>,
    /// `workflows`: number of configure pipelines.
    pub workflows: u32,
    /// `workflowsSucceeded`.
    pub workflows_succeeded: u32,
    /// `workflowsFailed`.
    pub workflows_failed: u32,
    /// RFC 3339 time of the last successful configure workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_configure_workflow_time: Option<String>,
}

impl ObjectStatus {
    /// A fresh status with `message: Pending` and no conditions.
    pub fn new(object: ObjectRef, promise: &str) -> Self {
        ObjectStatus {
            object,
            promise: promise.to_string(),
            source: String::new(),
            message: "Pending".into(),
            status: None,
            conditions: Vec::new(),
            pipelines: Vec::new(),
            fields: Map::new(),
            destinations: Vec::new(),
            commits: BTreeMap::new(),
            workflows: 0,
            workflows_succeeded: 0,
            workflows_failed: 0,
            last_successful_configure_workflow_time: None,
        }
    }

    /// Sets a condition; `lastTransitionTime` only moves when the status value changes.
    pub fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        let now = now_rfc3339();
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now;
                }
                c.status = status;
                c.reason = reason.into();
                c.message = message.into();
            }
            None => {
                self.conditions.push(Condition {
                    type_: type_.into(),
                    status,
                    reason: reason.into(),
                    message: message.into(),
                    last_transition_time: now,
                });
                self.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
            }
        }
    }

    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Removes a condition.
    pub fn clear(&mut self, type_: &str) {
        self.conditions.retain(|c| c.type_ != type_);
    }

    /// `Reconciled` summarised as one word for tables: `Reconciled`, `Pending`, `Failing`, ….
    pub fn summary(&self) -> &str {
        self.condition("Reconciled")
            .map(|c| c.message.as_str())
            .unwrap_or("Pending")
    }
}

/// One row of `promised status` and of the daemon's `GET /api/v1/status`: an object's state
/// key and its status. Serialised as `{"key": …, "status": {…}}`; a list of rows is the JSON
/// both print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRow {
    /// `promise/<name>` or `<promise>/<namespace>/<name>`.
    pub key: String,
    /// The status.
    pub status: ObjectStatus,
}

/// Condition types (kratix-contract.md §5).
pub mod cond {
    /// Configure workflow state.
    pub const CONFIGURE_WORKFLOW_COMPLETED: &str = "ConfigureWorkflowCompleted";
    /// Writes to the state stores.
    pub const WORKS_SUCCEEDED: &str = "WorksSucceeded";
    /// Overall.
    pub const RECONCILED: &str = "Reconciled";
    /// Request: its Promise's requirements.
    pub const PROMISE_AVAILABLE: &str = "PromiseAvailable";
    /// Promise: can fulfil requests.
    pub const AVAILABLE: &str = "Available";
    /// Promise: `requiredPromises`.
    pub const REQUIREMENTS_FULFILLED: &str = "RequirementsFulfilled";
    /// Delete workflow state.
    pub const DELETE_WORKFLOW_COMPLETED: &str = "DeleteWorkflowCompleted";
}

/// Now, as RFC 3339 with seconds precision (`2026-11-22T02:10:13Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut s = ObjectStatus::new(
            ObjectRef {
                kind: "redis".into(),
                namespace: Some("default".into()),
                name: "a".into(),
            },
            "redis",
        );
        s.set(
            cond::RECONCILED,
            ConditionStatus::Unknown,
            "WorkflowPending",
            "Pending",
        );
        let t0 = s
            .condition(cond::RECONCILED)
            .unwrap()
            .last_transition_time
            .clone();
        s.conditions[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        s.set(
            cond::RECONCILED,
            ConditionStatus::Unknown,
            "WorksPending",
            "Pending",
        );
        assert_eq!(
            s.condition(cond::RECONCILED).unwrap().last_transition_time,
            "2000-01-01T00:00:00Z"
        );
        s.set(
            cond::RECONCILED,
            ConditionStatus::True,
            "Reconciled",
            "Reconciled",
        );
        assert_ne!(
            s.condition(cond::RECONCILED).unwrap().last_transition_time,
            "2000-01-01T00:00:00Z"
        );
        assert!(t0.ends_with('Z'));
        assert_eq!(s.summary(), "Reconciled");
    }
}
