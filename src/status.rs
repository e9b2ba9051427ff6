//! Status of Promises and resource requests, with Kratix's conditions, reasons and messages
//! (kratix-contract.md §5.1, §5.2; Kratix: `lib/resourceutil/util.go`,
//! `dynamic_resource_request_controller.go`, `promise_controller.go`).
//!
//! Kratix writes status onto the Kubernetes object; promised keeps it in its state directory
//! and shows it with `promised status`. The shape follows the Kratix `status` block, plus what
//! Kratix users ask for and do not get: where the request landed (kratix #823) and the state
//! store commit.

use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{HealthState, ObjectRef};

mod intern;
mod list;
mod text;
pub use list::List;
pub use text::Text;

/// [`ObjectStatus::fields`]: the keys a pipeline wrote in `status.yaml`, as a vector sorted by
/// key (`litemap`) rather than a `serde_json::Map`, whose B-tree node takes about 630 bytes
/// for the one key (`message`) most requests have: 6.3 MB at 10,000 requests
/// (docs/benchmarks.md, "Memory", seventh round). Serialises as a JSON object when it has
/// keys; an empty one must be skipped (`litemap` writes it as `[]`).
pub type Fields = litemap::LiteMap<String, Value>;

/// [`ObjectStatus::commits`]: state store (`<kind>/<name>`) to commit, as a sorted vector of
/// shared texts (the requests written by one pass name the same commit); the same reason and
/// the same caveat as [`Fields`].
pub type Commits = litemap::LiteMap<Text, Text>;

/// `fields` as a `serde_json` object (what the pipeline contract and the status merge take).
pub fn fields_map(fields: &Fields) -> Map<String, Value> {
    fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `map` as [`Fields`], without spare room.
pub fn fields_from(map: Map<String, Value>) -> Fields {
    let mut entries: Vec<(String, Value)> = map.into_iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Fields::from_sorted_store_unchecked(entries)
}

/// `map` without spare room. A `LiteMap` built by inserts or deserialised grows its vector by
/// pushes, room for 4 entries where most statuses have 1: 1.7 MB of `fields` at 10,000
/// requests.
fn compact_map<K: Ord, V>(map: &mut litemap::LiteMap<K, V>) {
    let mut entries = std::mem::take(map).into_tuple_vec();
    entries.shrink_to_fit();
    *map = litemap::LiteMap::from_sorted_store_unchecked(entries);
}

/// `True`, `False` or `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// Not known yet.
    Unknown,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `ConfigureWorkflowCompleted`, `WorksSucceeded`, `Reconciled`.
    #[serde(rename = "type")]
    pub type_: Text,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// CamelCase reason, e.g. `PipelinesExecutedSuccessfully`.
    pub reason: Text,
    /// Human-readable message.
    pub message: Text,
    /// RFC 3339 time the status last changed.
    pub last_transition_time: Text,
}

/// Phase of one pipeline (`status.kratix.workflows.pipelines[].phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Pipeline name.
    pub name: Text,
    /// Phase.
    pub phase: Phase,
    /// Failure or suspension message.
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub message: Text,
    /// RFC 3339 time of the next retry (`retryAfter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_at: Option<String>,
    /// Retry attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// RFC 3339 time the phase last changed.
    pub last_transition_time: Text,
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
    /// Destination name (shared: [`Text`]).
    pub destination: Text,
    /// Pipeline that produced the files (empty for static dependencies; shared).
    pub pipeline: Text,
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
    pub promise: Text,
    /// Config file and document it was read from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// `status.message`.
    pub message: String,
    /// Promise only: `Available` or `Unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Text>,
    /// Kratix conditions, sorted by type.
    pub conditions: List<Condition>,
    /// `status.kratix.workflows.pipelines`.
    pub pipelines: List<PipelineStatus>,
    /// Keys written by pipelines in `/kratix/metadata/status.yaml`, merged (§2.6).
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub fields: Fields,
    /// Where the output landed.
    pub destinations: Vec<Landed>,
    /// State store commit (or version) per state store (`<kind>/<name>`) that holds this
    /// object's files.
    #[serde(default, skip_serializing_if = "Commits::is_empty")]
    pub commits: Commits,
    /// `workflows`: number of configure pipelines.
    pub workflows: u32,
    /// `workflowsSucceeded`.
    pub workflows_succeeded: u32,
    /// `workflowsFailed`.
    pub workflows_failed: u32,
    /// RFC 3339 time of the last successful configure workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_configure_workflow_time: Option<Text>,
    /// Requests: `status.promiseVersion`, the Promise's `kratix.io/promise-version` label when
    /// its configure workflow last completed (Kratix: `dynamic_resource_request_controller.go`,
    /// kratix-lifecycle.md §2.3); unset for an unlabelled Promise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<Text>,
    /// Requests: `status.resourceBindingVersion`, the `spec.version` of its ResourceBinding
    /// (`latest` or a version) when its configure workflow last completed
    /// (kratix-lifecycle.md §2.3); unset for an unlabelled Promise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_binding_version: Option<Text>,
    /// Requests: the version whose upgrade failed (Kratix keeps it in the binding's
    /// `status.failedVersion`); not tried again until the request's spec or binding changes
    /// or the Promise moves to another version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_version: Option<String>,
    /// Requests: `status.healthStatus`, folded from its HealthRecords (kratix-lifecycle.md
    /// §1.2); unset until a HealthRecord or health check concerns the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_status: Option<Box<HealthStatus>>,
    /// Requests: the health checks (HealthDefinitions) its pipelines declared, with their
    /// schedule and last result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheckStatus>,
    /// Requests: the request whose compound Promise's workflow requested this one
    /// (`<promise>/<namespace>/<name>`, README "Compound Promises"); unset otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The last [`MAX_EVENTS`] events about the object, oldest first (Kratix records them as
    /// Kubernetes Events on the object).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: List<Event>,
    /// `status.observedGeneration`: promised's count of the object's spec changes (a request
    /// in Git has no `metadata.generation`; this plays its part): 1 for the spec first seen,
    /// one more each time the spec (a request's defaulted spec, a Promise's document) changes.
    /// It is the `generation` key of log lines (Kratix: `internal/logging/logger.go`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub observed_generation: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// An [`ObjectStatus`] behind a reference count: an object's record and the daemon's status
/// API (`GET /api/v1/status`) hold the same one, not a copy each (at 10,000 requests the copy
/// was 18 MB; docs/benchmarks.md, "Memory"). Reads go through `Deref`; a write through
/// `DerefMut` copies the status first when another holder still has it (`Arc::make_mut`),
/// so a holder never sees a status change under it. Serialises as the status itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SharedStatus(Arc<ObjectStatus>);

impl SharedStatus {
    /// Another handle on the same status (no copy).
    pub fn share(&self) -> Arc<ObjectStatus> {
        self.0.clone()
    }

    /// True when `other` is this very status (not merely an equal one).
    pub fn is(&self, other: &Arc<ObjectStatus>) -> bool {
        Arc::ptr_eq(&self.0, other)
    }
}

impl From<ObjectStatus> for SharedStatus {
    fn from(status: ObjectStatus) -> Self {
        SharedStatus(Arc::new(status))
    }
}

impl std::ops::Deref for SharedStatus {
    type Target = ObjectStatus;
    fn deref(&self) -> &ObjectStatus {
        &self.0
    }
}

impl std::ops::DerefMut for SharedStatus {
    fn deref_mut(&mut self) -> &mut ObjectStatus {
        Arc::make_mut(&mut self.0)
    }
}

/// Events kept per object in [`ObjectStatus::events`].
pub const MAX_EVENTS: usize = 20;

/// `status.healthStatus` (Kratix: `internal/controller/healthrecord_controller.go`), plus
/// what a health gate needs: when the state last changed, and the version it is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// The worst state of the records that count (unhealthy < degraded < unknown < healthy <
    /// ready); `ready` with none; `unknown` when every record was ignored as older than the
    /// applied Promise version (`syntasso/kratix#944`).
    pub state: HealthState,
    /// The records that count, by source.
    #[serde(default)]
    pub health_records: Vec<HealthRecordStatus>,
    /// RFC 3339 time `state` last changed (promised; Kratix has none).
    pub last_transition_time: String,
    /// The applied Promise version the records were weighed against (`syntasso/kratix#944`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
    /// Records about the request that were ignored because they are older than
    /// `promiseVersion` (`syntasso/kratix#945`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_records: Vec<IgnoredRecord>,
}

/// One entry of `status.healthStatus.healthRecords`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRecordStatus {
    /// The record's state.
    pub state: HealthState,
    /// Unix seconds of the check, when the record says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<i64>,
    /// `{name, namespace}` of the HealthRecord (of the HealthDefinition for a health check).
    pub source: HealthSource,
    /// The record's details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Where promised read it: `config <file>#<doc>`, `healthStateStore <kind>/<name>
    /// <path>#<doc>` or `healthCheck` (promised; not in Kratix).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// The record's `promiseVersion`, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
}

/// `source` of a health record entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HealthSource {
    /// Object name.
    pub name: String,
    /// Object namespace.
    pub namespace: String,
}

/// A record left out of the fold as older than the request's applied Promise version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredRecord {
    /// Its source.
    pub source: HealthSource,
    /// Its `promiseVersion`.
    pub promise_version: String,
}

/// A health check (HealthDefinition) of a request, and its last result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    /// `metadata.name` of the HealthDefinition (its records' `source.name`).
    pub name: String,
    /// Its namespace (the request's when unset).
    pub namespace: String,
    /// Cron schedule, UTC.
    pub schedule: String,
    /// The pipeline output that declared it: `<pipeline>/<path>`.
    pub declared_in: String,
    /// RFC 3339 time of the next run (unset when the schedule does not parse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    /// Unix seconds of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<i64>,
    /// State of the last run (`unknown` when it failed or wrote no valid
    /// `health-status.yaml`); unset before the first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<HealthState>,
    /// `details` of the last run's `health-status.yaml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Why the last run gave no state, or why the check cannot be scheduled.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `spec.promiseVersion` of the HealthDefinition, copied onto its records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promise_version: Option<String>,
}

/// `Normal` or `Warning`, as for Kubernetes Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something is wrong.
    Warning,
}

/// An event about an object (a Kubernetes Event in Kratix).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Normal or Warning.
    #[serde(rename = "type")]
    pub type_: EventType,
    /// CamelCase reason, e.g. `HealthRecord`.
    pub reason: Text,
    /// Human-readable note, e.g. `Health state is unhealthy`.
    pub message: Text,
    /// RFC 3339 time.
    pub time: Text,
}

impl ObjectStatus {
    /// Gives back the spare capacity of the status's lists (destinations, health checks) and maps
    /// (`fields`, `commits`), and shares its conditions, pipeline phases and events with the
    /// statuses that hold equal ones ([`List::share`]); [`crate::state::ObjectRecord::shrink_to_fit`].
    pub fn shrink_to_fit(&mut self) {
        self.conditions.share();
        self.pipelines.share();
        self.destinations.shrink_to_fit();
        self.health_checks.shrink_to_fit();
        self.events.share();
        compact_map(&mut self.fields);
        compact_map(&mut self.commits);
    }

    /// A fresh status with `message: Pending` and no conditions.
    pub fn new(object: ObjectRef, promise: &str) -> Self {
        ObjectStatus {
            object,
            promise: Text::new(promise),
            source: String::new(),
            message: "Pending".into(),
            status: None,
            conditions: List::new(),
            pipelines: List::new(),
            fields: Fields::new(),
            destinations: Vec::new(),
            commits: Commits::new(),
            workflows: 0,
            workflows_succeeded: 0,
            workflows_failed: 0,
            last_successful_configure_workflow_time: None,
            promise_version: None,
            resource_binding_version: None,
            failed_version: None,
            health_status: None,
            health_checks: Vec::new(),
            parent: None,
            events: List::new(),
            observed_generation: 0,
        }
    }

    /// Records an event (keeping the last [`MAX_EVENTS`]) and logs it with the object's log
    /// keys ([`crate::events::log`]).
    pub fn event(&mut self, type_: EventType, reason: &str, message: &str) {
        let e = Event {
            type_,
            reason: reason.into(),
            message: message.into(),
            time: now_rfc3339().into(),
        };
        log_event(self, &e);
        self.events.push(e);
        let over = self.events.len().saturating_sub(MAX_EVENTS);
        self.events.drain(..over);
    }

    /// Sets a condition like [`ObjectStatus::set`] and, when its status, reason or message
    /// changed (or it was unset), records `event` `(type, reason, message)`: Kratix sends
    /// most events when a condition moves, and an unchanged pass must not fill the
    /// [`MAX_EVENTS`] window with repeats. Returns whether it changed.
    pub fn set_noting(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        event: (EventType, &str, &str),
    ) -> bool {
        let changed = self
            .condition(type_)
            .is_none_or(|c| c.status != status || c.reason != reason || c.message != message);
        self.set(type_, status, reason, message);
        if changed {
            self.event(event.0, event.1, event.2);
        }
        changed
    }

    /// The reason of the newest event whose reason is one of `reasons`.
    pub fn last_event_of(&self, reasons: &[&str]) -> Option<&str> {
        self.events
            .iter()
            .rev()
            .map(|e| e.reason.as_str())
            .find(|r| reasons.contains(r))
    }

    /// Replaces each repeated string (condition types, reasons, messages and times; pipeline
    /// names, messages and times; event reasons, messages and times; where the output landed;
    /// the commits; the Promise, summary, last workflow time and versions) by the process's shared
    /// copy ([`Text::share`]), and each list of conditions, pipeline phases and events by the
    /// shared equal list ([`List::share`]).
    pub fn share_texts(&mut self) {
        self.conditions.share_each(|c| {
            for t in [
                &mut c.type_,
                &mut c.reason,
                &mut c.message,
                &mut c.last_transition_time,
            ] {
                t.share();
            }
        });
        self.pipelines.share_each(|p| {
            for t in [&mut p.name, &mut p.message, &mut p.last_transition_time] {
                t.share();
            }
        });
        self.events.share_each(|e| {
            for t in [&mut e.reason, &mut e.message, &mut e.time] {
                t.share();
            }
        });
        for d in &mut self.destinations {
            d.destination.share();
            d.pipeline.share();
        }
        if !self.commits.is_empty() {
            self.commits = std::mem::take(&mut self.commits)
                .into_tuple_vec()
                .into_iter()
                .map(|(mut store, mut commit)| {
                    store.share();
                    commit.share();
                    (store, commit)
                })
                .collect();
        }
        self.promise.share();
        for t in [
            &mut self.status,
            &mut self.last_successful_configure_workflow_time,
            &mut self.promise_version,
            &mut self.resource_binding_version,
        ]
        .into_iter()
        .flatten()
        {
            t.share();
        }
    }

    /// Sets a condition; `lastTransitionTime` only moves when the status value changes.
    /// The list is copied (when shared, [`List`]) only when the condition changes.
    pub fn set(&mut self, type_: &str, status: ConditionStatus, reason: &str, message: &str) {
        let now = now_rfc3339();
        match self.conditions.iter().position(|c| c.type_ == type_) {
            Some(i) => {
                let c = &self.conditions[i];
                if c.status == status && c.reason == reason && c.message == message {
                    return;
                }
                let c = &mut self.conditions[i];
                if c.status != status {
                    c.last_transition_time = now.into();
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
                    last_transition_time: now.into(),
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
        if self.condition(type_).is_some() {
            self.conditions.retain(|c| c.type_ != type_);
        }
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
    /// Request: its move to another Promise version (kratix-lifecycle.md §2.2).
    pub const UPGRADE_SUCCEEDED: &str = "UpgradeSucceeded";
}

/// Now, as RFC 3339 with seconds precision (`2026-11-22T02:10:13Z`).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// `resourceRequest=<promise>/<namespace>/<name>` of a request; `None` for a Promise.
pub fn resource_request_key(s: &ObjectStatus) -> Option<String> {
    log_keys(&s.promise, s.object.namespace.as_deref(), &s.object.name).1
}

/// `controller` of an object's log lines: `promise` or `dynamicResourceRequest` (Kratix's
/// controller names).
pub fn controller(s: &ObjectStatus) -> &'static str {
    log_keys(&s.promise, s.object.namespace.as_deref(), &s.object.name).0
}

/// `(controller, resourceRequest)` log keys of an object of Promise `promise`: a request
/// (with a namespace) is `("dynamicResourceRequest", Some("<promise>/<namespace>/<name>"))`,
/// a Promise `("promise", None)` (Kratix: `internal/logging/logger.go`).
pub fn log_keys(
    promise: &str,
    namespace: Option<&str>,
    name: &str,
) -> (&'static str, Option<String>) {
    match namespace {
        Some(ns) => (
            "dynamicResourceRequest",
            Some(format!("{promise}/{ns}/{name}")),
        ),
        None => ("promise", None),
    }
}

/// Logs event `e` about the object of `s` with Kratix's log keys (`controller`, `promise`,
/// `resourceRequest`, `namespace`, `object_name`, `generation`, `reason`, `type_`; Kratix:
/// `internal/logging/logger.go`) at `info`: events are status changes ([`crate::events`]).
pub fn log_event(s: &ObjectStatus, e: &Event) {
    let controller = controller(s);
    let rr = resource_request_key(s);
    let resource_request = rr.as_deref();
    let promise = s.promise.as_str();
    let namespace = s.object.namespace.as_deref();
    let object_name = s.object.name.as_str();
    let generation = s.observed_generation;
    let reason = e.reason.as_str();
    let message = e.message.as_str();
    let type_ = match e.type_ {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    };
    tracing::info!(
        controller,
        promise,
        resourceRequest = resource_request,
        namespace,
        object_name,
        generation,
        reason,
        type_,
        "{message}"
    );
}

#[cfg(test)]
mod tests;
