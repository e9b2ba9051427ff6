//! Events about Promises and resource requests, and their log lines.
//!
//! Kratix records Kubernetes Events on the object; promised keeps the last
//! [`crate::status::MAX_EVENTS`] in the object's status (`status.events`, in the state
//! directory, shown by `promised status NAME` and `GET /api/v1/status`). The reasons are
//! Kratix's (kratix-contract.md §5.1, §5.2; Kratix: `dynamic_resource_request_controller.go`,
//! `promise_controller.go`, `healthrecord_controller.go`):
//!
//! | reason | type | when |
//! |---|---|---|
//! | [`RECONCILE_STARTED`] | Normal | a configure workflow is about to run |
//! | [`CONFIGURE_WORKFLOW_FAILED`] | Warning | a configure Pipeline failed |
//! | [`WORKFLOW_SUSPENDED`] | Normal | a Pipeline suspended the workflow (or asked for a retry) |
//! | [`RECONCILE_SUCCEEDED`] | Normal | the workflow completed and its output was written |
//! | `WorksSucceeded`, `WorksFailing`, `WorksMisplaced` | Normal / Warning | `WorksSucceeded` moved |
//! | `InvalidRequest` (promised) | Warning | the request fails validation, or the reasons changed |
//! | `Available`, `Unavailable` | Normal / Warning | a Promise's availability moved |
//! | [`PIPELINE_STARTED`], [`DELETE_PIPELINE_FAILED`] | Normal / Warning | a delete workflow starts, fails |
//! | `HealthRecord`, `UpgradeFailed`, `ResourceBindingVersionUpdated`, `FailedPromiseRevisionLookup` | | [`crate::health`], versions |
//!
//! Every event is also a log line ([`log`]) carrying Kratix's log keys
//! (`internal/logging/logger.go`, kratix-lifecycle.md §6): `controller` (`promise` or
//! `dynamicResourceRequest`), `promise`, `resourceRequest` (`<promise>/<namespace>/<name>`,
//! requests only), `namespace`, `object_name` (Kratix's `name`: tracing's JSON uses `name` for
//! a span's own name) and `generation` ([`ObjectStatus::observed_generation`]), plus `reason`.
//! Events are status changes, so they log at `info` (Kratix's level rules: "info: the operator
//! heartbeat (reconcile start/end, scheduling, status changes)"), with `type_` `Normal` or
//! `Warning`; the problem behind a Warning is logged where it happens, with its details, at
//! `warn` (`workflow failed`, `state store write failed`) or `error` (a config file or object
//! that does not load or validate: a person must change it).

use crate::status::{EventType, ObjectStatus};

/// A configure workflow starts (Kratix: "reconciling resource request with promise revision
/// …", sent every reconcile; promised sends it when a workflow runs).
pub const RECONCILE_STARTED: &str = "ReconcileStarted";
/// The configure workflow completed and its output was written.
pub const RECONCILE_SUCCEEDED: &str = "ReconcileSucceeded";
/// A configure Pipeline failed: "A Configure Pipeline has failed: `<pipeline>`".
pub const CONFIGURE_WORKFLOW_FAILED: &str = "ConfigureWorkflowFailed";
/// A Pipeline suspended the workflow, or asked to be retried later.
pub const WORKFLOW_SUSPENDED: &str = "WorkflowSuspended";
/// A delete Pipeline starts: "Delete Pipeline started: `<pipeline>`".
pub const PIPELINE_STARTED: &str = "PipelineStarted";
/// The delete workflow failed (Kratix's reason has a space: `Failed Pipeline`).
pub const DELETE_PIPELINE_FAILED: &str = "Failed Pipeline";
/// A request fails validation (promised: Kratix's admission webhook refuses it instead).
pub const INVALID_REQUEST: &str = "InvalidRequest";

pub use crate::status::{controller, log_event as log, resource_request_key};

/// `ReconcileStarted` for an object whose configure workflow is about to run: Kratix's
/// message for a request ("reconciling resource request with promise revision …", naming
/// the version when the Promise has one), "reconciling Promise" for a Promise.
pub fn started(s: &mut ObjectStatus, version: Option<&str>) {
    let message = match (s.object.namespace.is_some(), version) {
        (true, Some(v)) => format!(
            "reconciling resource request with promise {} version {v}",
            s.promise
        ),
        (true, None) => format!("reconciling resource request with promise {}", s.promise),
        (false, _) => "reconciling Promise".to_string(),
    };
    s.event(EventType::Normal, RECONCILE_STARTED, &message);
}

/// `ReconcileSucceeded` once an object that started reconciling ([`started`]) is
/// `Reconciled=True`: "Resource request reconciled with promise `<p>` version `<v>`" (Kratix's
/// words), "Promise reconciled" for a Promise. Nothing when no workflow started since the
/// last success or failure, so a steady object logs nothing.
pub fn finished(s: &mut ObjectStatus) {
    let reconciled = s
        .condition(crate::status::cond::RECONCILED)
        .is_some_and(|c| c.status == crate::status::ConditionStatus::True);
    if !reconciled
        || s.last_event_of(&[
            RECONCILE_STARTED,
            RECONCILE_SUCCEEDED,
            CONFIGURE_WORKFLOW_FAILED,
        ]) != Some(RECONCILE_STARTED)
    {
        return;
    }
    let message = match (s.object.namespace.is_some(), s.promise_version.as_deref()) {
        (true, Some(v)) => format!(
            "Resource request reconciled with promise {} version {v}",
            s.promise
        ),
        (true, None) => format!("Resource request reconciled with promise {}", s.promise),
        (false, _) => "Promise reconciled".to_string(),
    };
    s.event(EventType::Normal, RECONCILE_SUCCEEDED, &message);
}

/// Counts a spec change in [`ObjectStatus::observed_generation`]: call with whether the spec
/// differs from the one last seen (`first` when the object is new).
pub fn note_spec(s: &mut ObjectStatus, changed: bool) {
    if changed || s.observed_generation == 0 {
        s.observed_generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectRef;
    use crate::status::{ConditionStatus as CS, cond};

    fn request() -> ObjectStatus {
        ObjectStatus::new(
            ObjectRef {
                kind: "redis".into(),
                namespace: Some("default".into()),
                name: "a".into(),
            },
            "redis",
        )
    }

    fn reasons(s: &ObjectStatus) -> Vec<&str> {
        s.events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn succeeded_follows_started_once() {
        let mut s = request();
        s.set(cond::RECONCILED, CS::True, "Reconciled", "Reconciled");
        finished(&mut s);
        assert!(
            s.events.is_empty(),
            "no workflow started: nothing to finish"
        );
        started(&mut s, Some("v2"));
        finished(&mut s);
        finished(&mut s);
        assert_eq!(reasons(&s), [RECONCILE_STARTED, RECONCILE_SUCCEEDED]);
        assert_eq!(
            s.events[1].message,
            "Resource request reconciled with promise redis"
        );
        assert_eq!(
            s.events[0].message,
            "reconciling resource request with promise redis version v2"
        );
    }

    #[test]
    fn a_failure_closes_the_started_reconcile() {
        let mut s = request();
        started(&mut s, None);
        s.event(
            EventType::Warning,
            CONFIGURE_WORKFLOW_FAILED,
            "A Configure Pipeline has failed: p",
        );
        s.set(cond::RECONCILED, CS::True, "Reconciled", "Reconciled");
        finished(&mut s);
        assert_eq!(reasons(&s), [RECONCILE_STARTED, CONFIGURE_WORKFLOW_FAILED]);
    }

    #[test]
    fn set_noting_records_only_changes() {
        let mut s = request();
        let ev = (EventType::Normal, "WorksSucceeded", "ready");
        assert!(s.set_noting(cond::WORKS_SUCCEEDED, CS::True, "WorksSucceeded", "m", ev));
        assert!(!s.set_noting(cond::WORKS_SUCCEEDED, CS::True, "WorksSucceeded", "m", ev));
        let bad = (EventType::Warning, "WorksFailing", "x");
        assert!(s.set_noting(cond::WORKS_SUCCEEDED, CS::False, "WorksFailing", "m", bad));
        assert_eq!(reasons(&s), ["WorksSucceeded", "WorksFailing"]);
    }

    #[test]
    fn generation_counts_spec_changes() {
        let mut s = request();
        note_spec(&mut s, false);
        assert_eq!(s.observed_generation, 1, "first seen");
        note_spec(&mut s, false);
        assert_eq!(s.observed_generation, 1);
        note_spec(&mut s, true);
        assert_eq!(s.observed_generation, 2);
    }

    #[test]
    fn keys_name_the_request() {
        let s = request();
        assert_eq!(resource_request_key(&s).as_deref(), Some("redis/default/a"));
        assert_eq!(controller(&s), "dynamicResourceRequest");
    }
}
