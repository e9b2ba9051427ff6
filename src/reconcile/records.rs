//! Records stage: what the pass does to the state's records, at both ends of the run.
//!
//! - Admission ([`Engine::admit_requests`], [`Engine::note_invalid_requests`]): the plan is
//!   applied to the request records (steady ones skipped, waiting ones marked
//!   `PromiseAvailable=False`, runs turned into jobs) and rejected requests are marked
//!   `Reconciled=False InvalidRequest`.
//! - Landing ([`Engine::land`], [`Engine::finish_pass`]): placements that were written become
//!   the records' placements, status conditions follow (kratix-contract.md §5), held objects are
//!   listed first, deleted objects whose files are gone are forgotten, and what changed is
//!   saved in the state directory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::plan::{Decision, RequestStep};
use super::report::{ObjectAction, ObjectReport, PassReport};
use super::run::{self, Job};
use super::{Engine, EngineError, MAX_LISTED_UNCHANGED, Pass, held, inputs, promise_dir};
use crate::events;
use crate::model::{ObjectRef, request_key};
use crate::pipeline::Action;
use crate::state::{HashText, ObjectRecord, State, StateDir};
use crate::status::{
    ConditionStatus as CS, EventType, Landed, ObjectStatus, Text, cond, now_rfc3339,
};

/// A request the config repo holds but validation rejected: `(id, Promise name, origin
/// "file#document", reasons)`. It keeps its placements and runs again once valid.
pub(super) type Invalid = (ObjectRef, String, String, Vec<String>);

impl Engine {
    /// Applies the plan to the request records: steady requests go to `pass.steady`, waiting
    /// ones get `PromiseAvailable=False`, requests without pipelines complete, and each run
    /// becomes a job. Returns the jobs with their input hashes, in config order.
    pub(super) fn admit_requests(
        &mut self,
        pass: &mut Pass<'_>,
        steps: Vec<RequestStep<'_>>,
    ) -> Vec<(HashText, Arc<Job>)> {
        let mut jobs = Vec::new();
        let mut shared = run::SharedJobInputs::default();
        let mut waiting: Vec<(String, String)> = Vec::new();
        for step in steps {
            let r = step.request;
            if step.decision == Decision::Steady {
                pass.steady.insert(r.key().to_string());
                continue;
            }
            let key = r.key().to_string();
            pass.eligible.insert(key.clone(), step.ctx);
            let record = self
                .state
                .requests
                .entry(key.clone())
                .or_insert_with(|| new_record(&r.id, &r.promise));
            record.steady.clear();
            record.status.source = step.origin;
            if record.status.object.kind.is_empty() {
                record.status.object = r.id.clone(); // rebuilt from an index: kind was unknown
            }
            if !step.cached {
                record.input_hash.clear(); // re-run to restore the lost cached output
            }
            if step.decision == Decision::Waiting {
                waiting.push((key, r.promise.clone()));
                continue;
            }
            record.status.set(
                cond::PROMISE_AVAILABLE,
                CS::True,
                "PromiseAvailable",
                "Promise Requirements are met",
            );
            match step.decision {
                Decision::Complete => {
                    events::note_spec(&mut record.status, record.spec_hash != step.spec_hash);
                    record.spec_hash = step.spec_hash;
                    record.completed = true;
                    record.input_hash = step.hash;
                    record.object = (&r.object).into();
                    record.status.promise_version = step.promise.version().map(Text::new);
                    set_completed(&mut record.status, 0, "Resource requested");
                    if let Some(t) = step.target {
                        super::versions::admitted(record, t, true);
                    }
                }
                Decision::Run { rate_limited } => {
                    events::note_spec(&mut record.status, record.spec_hash != step.spec_hash);
                    record.spec_hash = step.spec_hash;
                    let version = match &step.target {
                        Some(t) if !t.version.is_empty() => Some(t.version.as_str()),
                        _ => step.promise.version(),
                    };
                    events::started(&mut record.status, version);
                    if let Some(t) = step.target {
                        super::versions::admitted(record, t, false);
                    }
                    let p = step.promise;
                    // A pinned request runs its revision's pipelines with its folder's copy.
                    let (promise, pipelines, dir) = match step.revision {
                        Some(rev) => (
                            rev.promise.clone(),
                            p.promise
                                .object
                                .spec
                                .workflows
                                .resource
                                .configure
                                .clone()
                                .into(),
                            rev.dir.clone(),
                        ),
                        None => (
                            run::shared_promise(&mut shared, p),
                            run::shared_pipelines(&mut shared, p),
                            promise_dir(pass.config_root, &p.promise.origin.file),
                        ),
                    };
                    jobs.push((
                        step.hash,
                        Arc::new(Job {
                            key: key.clone(),
                            promise,
                            request: Some(r.clone()),
                            action: Action::Configure,
                            pipelines,
                            object_yaml: inputs::object_yaml(&r.object(), &record.status),
                            existing_status: crate::status::fields_map(&record.status.fields),
                            promise_dir: dir,
                            rate_limited,
                            generation: record.status.observed_generation,
                        }),
                    ));
                }
                Decision::Unchanged => pass
                    .report
                    .objects
                    .push(ObjectReport::new(record, ObjectAction::Unchanged)),
                Decision::Steady | Decision::Waiting => {}
            }
        }
        for (key, promise) in waiting {
            let record = self.state.requests.get_mut(&key).expect("inserted above");
            record.status.set(
                cond::PROMISE_AVAILABLE,
                CS::False,
                "PromiseRequirementsNotInstalled",
                "Promise Requirements are not installed",
            );
            record
                .status
                .set(cond::RECONCILED, CS::Unknown, "WorkflowPending", "Pending");
            record.status.message = format!("Pending: Promise {promise} is not available");
            pass.report
                .objects
                .push(ObjectReport::new(record, ObjectAction::Waiting));
        }
        jobs
    }

    /// Marks every rejected request of the config (schema, unserved version, invalid or
    /// duplicated) Failed with its reasons, into `pass.invalid`. What such a request applied
    /// before stays; it runs again once valid.
    pub(super) fn note_invalid_requests(&mut self, pass: &mut Pass<'_>) {
        // Requests in the config repo that were rejected (schema, unserved version, invalid or
        // duplicated): Failed with the reasons. What they applied before stays; they run again
        // once valid.
        let mut invalid: BTreeMap<String, Invalid> = BTreeMap::new();
        for rej in &pass.cfg.rejected {
            let Some(promise) = rej.promise.as_ref().filter(|_| rej.id.kind != "Promise") else {
                continue;
            };
            let mut id = rej.id.clone();
            let ns = id.namespace.get_or_insert_with(|| "default".into()).clone();
            let key = request_key(promise, &ns, &id.name);
            let entry = invalid
                .entry(key)
                .or_insert_with(|| (id, promise.clone(), rej.origin.to_string(), Vec::new()));
            entry.3.extend(rej.reasons.iter().cloned());
        }
        // Before invalid namespaces and names were quoted in keys, such a request was kept
        // under `<promise>/<namespace>/<name>` joined as written: forget that record (it never
        // placed anything) so the request shows once.
        let mut renamed = Vec::new();
        for (key, (id, promise, ..)) in &invalid {
            let legacy = format!(
                "{promise}/{}/{}",
                id.namespace.as_deref().unwrap_or_default(),
                id.name
            );
            if legacy != *key
                && !invalid.contains_key(&legacy)
                && self
                    .state
                    .requests
                    .get(&legacy)
                    .is_some_and(|r| r.placements.is_empty() && r.status.object.name == id.name)
            {
                self.state.requests.remove(&legacy);
                renamed.push(legacy);
            }
        }
        for (key, (id, promise, source, reasons)) in &invalid {
            let record = self
                .state
                .requests
                .entry(key.clone())
                .or_insert_with(|| new_record(id, promise));
            record.status.source = source.clone();
            let message = format!("Invalid: {}", reasons.join("; "));
            record.status.set_noting(
                cond::RECONCILED,
                CS::False,
                "InvalidRequest",
                "Failing",
                (EventType::Warning, events::INVALID_REQUEST, &message),
            );
            record.status.message = message;
            record.input_hash.clear();
            pass.report
                .objects
                .push(ObjectReport::new(record, ObjectAction::Failed));
        }
        pass.invalid = invalid;
        pass.removed.extend(renamed);
    }

    /// Records what landed: every object whose placements were written takes them and its
    /// status follows; objects whose write failed keep their old placements and say why; held
    /// objects are marked Failed with their file's error and listed first.
    pub(super) fn land(&mut self, pass: &mut Pass<'_>) {
        // Record what landed, and status.
        for (okey, places) in std::mem::take(&mut pass.desired) {
            if pass.invalid.contains_key(&okey) {
                continue; // keeps its placements and its InvalidRequest status
            }
            let Some(record) = self.record_mut(&okey) else {
                continue;
            };
            let stores: BTreeSet<&Text> = places
                .iter()
                .map(|p| &p.store)
                .chain(record.placements.iter().map(|p| &p.store))
                .collect();
            let failed: Vec<String> = stores
                .iter()
                .filter_map(|s| match pass.store_results.get(s.as_str()) {
                    Some(Err(e)) => Some(format!("{s}: {e}")),
                    _ => None,
                })
                .collect();
            if let Some(err) = pass.object_errors.get(&okey) {
                note_works_failing(&mut record.status, err);
                continue;
            }
            if !failed.is_empty() {
                // Keep the old placements: the next pass writes again.
                let msg = format!(
                    "Some works associated with this resource failed: [{}]",
                    failed.join("; ")
                );
                note_works_failing(&mut record.status, &msg);
                continue;
            }
            for s in &stores {
                if let Some(Ok(Some(sha))) = pass.store_results.get(s.as_str())
                    && pass
                        .touched
                        .get(s.as_str())
                        .is_some_and(|t| t.contains(&okey))
                {
                    record
                        .status
                        .commits
                        .insert(s.as_str().into(), sha.as_str().into());
                }
            }
            record.placements = places;
            finish_status(record);
            record.shrink_to_fit();
            if let Some(k) = pass.eligible.get(&okey)
                && record.completed
                && record.failures == 0
                && record.retry_at.is_none()
                && !record.deleting
            {
                record.steady = k.into();
            }
        }
        // Held objects: Failed with their file's error, listed first.
        if !pass.held.keys.is_empty() {
            pass.report.objects.retain(|o| !pass.held.contains(&o.key));
            let mut first = Vec::with_capacity(pass.held.keys.len());
            for (key, msg) in &pass.held.keys {
                let Some(record) = self.record_mut(key) else {
                    continue;
                };
                record.status.set_noting(
                    cond::RECONCILED,
                    CS::False,
                    held::REASON,
                    "Failing",
                    (EventType::Warning, held::REASON, msg),
                );
                record.status.message = msg.clone();
                record.steady.clear();
                first.push(ObjectReport::new(record, ObjectAction::Failed));
            }
            pass.report.objects.splice(0..0, first);
        }
    }

    /// Forgets deleted objects whose files are gone, saves what changed in the state
    /// directory and completes the report. Errors when the state directory cannot be written.
    pub(super) fn finish_pass(&mut self, mut pass: Pass<'_>) -> Result<PassReport, EngineError> {
        // Deleted objects whose files are gone are forgotten.
        self.state.requests.retain(|k, r| {
            let keep = !(r.deleting && r.placements.is_empty());
            if !keep {
                pass.removed.push(k.clone());
            }
            keep
        });
        self.state
            .promises
            .retain(|_, r| !(r.deleting && r.placements.is_empty()));
        self.state.config_commit = pass.cfg.commit.clone();
        let infra = held::infra_documents(pass.cfg, &self.state.infra_documents);
        let infra_changed = infra != self.state.infra_documents;
        self.state.infra_documents = infra;
        let others_changed = pass.destinations_at_start != self.state.destinations || infra_changed;
        let commit_changed = pass.commit_before != self.state.config_commit;
        let mut dirty = crate::state::Dirty {
            globals: others_changed || commit_changed,
            commit_only: commit_changed && !others_changed,
            ..Default::default()
        };
        for k in pass
            .promises_before
            .keys()
            .chain(self.state.promises.keys())
        {
            if pass.promises_before.get(k) != self.state.promises.get(k) {
                dirty.promises.insert(k.clone());
            }
        }
        for k in self.state.requests.keys().chain(pass.removed.iter()) {
            if !pass.steady.contains(k) || pass.health_changed.contains(k) {
                dirty.requests.insert(k.clone());
            }
        }
        debug_assert!(
            self.state.requests.len() + pass.removed.len() >= pass.requests_before,
            "every removed request is accounted for"
        );
        self.dir.save_changes(&mut self.state, &dirty)?;
        pass.report.dirty = dirty;
        // Steady requests: listed when a person can read the list, counted otherwise.
        if pass.steady.len() <= MAX_LISTED_UNCHANGED {
            let mut listed: Vec<&String> = pass.steady.iter().collect();
            listed.sort();
            for k in listed {
                if let Some(r) = self.state.requests.get(k) {
                    pass.report
                        .objects
                        .push(ObjectReport::new(r, ObjectAction::Unchanged));
                }
            }
        } else {
            pass.report.unchanged_not_listed = pass.steady.len();
        }
        pass.report.duration = pass.started.elapsed();
        for o in &mut pass.report.objects {
            if let Some(r) = self.record(&o.key) {
                o.refresh(r);
            }
        }
        Ok(pass.report)
    }
}

/// A record for an object seen for the first time, boxed as the state holds it
/// ([`crate::state::Records`]).
pub(super) fn new_record(id: &ObjectRef, promise: &str) -> Box<ObjectRecord> {
    Box::new(ObjectRecord::new(ObjectStatus::new(id.clone(), promise)))
}

/// True when every cached pipeline output of `record` is still in the blob cache (static
/// dependencies are rendered again every pass and do not count).
pub(super) fn outputs_cached(dir: &StateDir, record: &ObjectRecord) -> bool {
    record
        .outputs
        .iter()
        .filter(|o| !o.pipeline.is_empty())
        .flat_map(|o| &o.files)
        .all(|f| dir.has_blob(&f.sha256))
}

/// Conditions and message of a completed configure workflow of `n` pipelines
/// (kratix-contract.md §5.1); `default_message` unless the pipelines set one.
pub(super) fn set_completed(status: &mut ObjectStatus, n: u32, default_message: &str) {
    status.workflows = n;
    status.workflows_succeeded = n;
    status.workflows_failed = 0;
    status.set(
        cond::CONFIGURE_WORKFLOW_COMPLETED,
        CS::True,
        "PipelinesExecutedSuccessfully",
        "Pipelines completed",
    );
    status.last_successful_configure_workflow_time = Some(now_rfc3339().into());
    if status.message == "Pending"
        || status.message.is_empty()
        || status.message.starts_with("Failing")
        || status.message.starts_with("Pending")
        || status.message.starts_with("Invalid")
    {
        status.message = default_message.to_string();
    }
    if let Some(m) = status.fields.get("message").and_then(Value::as_str) {
        status.message = m.to_string();
    }
}

/// Conditions and message when an object's files could not be written (`why` names the store
/// and its error). A failed pipeline's message is kept: it is the first thing to fix.
pub(super) fn note_works_failing(status: &mut ObjectStatus, why: &str) {
    status.set_noting(
        cond::WORKS_SUCCEEDED,
        CS::False,
        "WorksFailing",
        why,
        (EventType::Warning, "WorksFailing", why),
    );
    status.set(cond::RECONCILED, CS::False, "WorksFailing", "Failing");
    if !status.message.starts_with("Failing: pipeline") {
        status.message = format!("Failing: {why}");
    }
}

/// Conditions after a successful write (kratix-contract.md §5.1).
pub(super) fn finish_status(record: &mut ObjectRecord) {
    let works_failed = record
        .status
        .condition(cond::WORKS_SUCCEEDED)
        .filter(|c| c.reason == "WorksFailing")
        .map(|c| format!("Failing: {}", c.message));
    if works_failed.is_some_and(|m| m == record.status.message)
        || record.status.message.starts_with(held::MESSAGE_PREFIX)
    {
        // Written now, or loaded again after its file did not load (`held`): back to the
        // workflow's message (see `note_works_failing`).
        record.status.message = match record.status.fields.get("message").and_then(Value::as_str) {
            Some(m) => m.to_string(),
            None if record.status.object.namespace.is_some() => "Resource requested".into(),
            None => "Promise configured".into(),
        };
    }
    let misplaced: Vec<&str> = record
        .placements
        .iter()
        .filter(|p| p.misplaced)
        .map(|p| p.destination.as_str())
        .collect();
    let unscheduled = record
        .status
        .condition(cond::WORKS_SUCCEEDED)
        .is_some_and(|c| c.reason == "WorksPending");
    record.status.destinations = record
        .placements
        .iter()
        .map(|p| Landed {
            destination: p.destination.clone(),
            pipeline: p.pipeline.clone(),
            path: p.dir.clone(),
            misplaced: p.misplaced,
        })
        .collect();
    record.status.destinations.sort();
    record.status.destinations.dedup();
    if !misplaced.is_empty() {
        let m = format!(
            "Some works associated with this resource are misplaced: [{}]",
            misplaced.join(", ")
        );
        record.status.set_noting(
            cond::WORKS_SUCCEEDED,
            CS::False,
            "WorksMisplaced",
            &m,
            (EventType::Warning, "WorksMisplaced", &m),
        );
    } else if !unscheduled {
        let m = "All works associated with this resource are ready";
        record.status.set_noting(
            cond::WORKS_SUCCEEDED,
            CS::True,
            "WorksSucceeded",
            m,
            (EventType::Normal, "WorksSucceeded", m),
        );
    }
    let configured = record
        .status
        .condition(cond::CONFIGURE_WORKFLOW_COMPLETED)
        .map(|c| c.status);
    let works_ok = record
        .status
        .condition(cond::WORKS_SUCCEEDED)
        .map(|c| c.status == CS::True)
        .unwrap_or(true);
    match configured {
        Some(CS::True) if works_ok => {
            record
                .status
                .set(cond::RECONCILED, CS::True, "Reconciled", "Reconciled")
        }
        Some(CS::True) if unscheduled => {
            record
                .status
                .set(cond::RECONCILED, CS::Unknown, "WorksPending", "Pending")
        }
        _ => {}
    }
    events::finished(&mut record.status);
}

/// Start of a request's `status.message` while some of its output matches no Destination.
const PENDING_NO_DESTINATION: &str = "Pending: no matching Destination for workload groups";

/// `WorksSucceeded=Unknown WorksPending` while output matches no Destination
/// (kratix-contract.md §3 rule 5); a request's `status.message` then says Pending and why,
/// and gets its pipeline's message back once placed.
pub(super) fn note_unscheduled(
    status: &mut ObjectStatus,
    unscheduled: &[(String, String)],
    what: &str,
) {
    if unscheduled.is_empty() {
        if status
            .condition(cond::WORKS_SUCCEEDED)
            .is_some_and(|c| c.reason == "WorksPending")
        {
            status.clear(cond::WORKS_SUCCEEDED);
        }
        if status.message.starts_with(PENDING_NO_DESTINATION) {
            status.message = status
                .fields
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("Resource requested")
                .to_string();
        }
        return;
    }
    let groups: Vec<String> = unscheduled
        .iter()
        .map(|(p, d)| format!("{p}:{d}"))
        .collect();
    status.set(
        cond::WORKS_SUCCEEDED,
        CS::Unknown,
        "WorksPending",
        &format!("Some works associated with this {what} are not ready: no matching Destination for workload groups [{}]", groups.join(", ")),
    );
    let completed = status
        .condition(cond::CONFIGURE_WORKFLOW_COMPLETED)
        .is_some_and(|c| c.status == CS::True);
    if what == "resource" && completed {
        status.message = format!("{PENDING_NO_DESTINATION} [{}]", groups.join(", "));
    }
}

/// How long until the next retry is due (for the daemon's queue): the `retryAfter` of
/// suspended workflows and the failure backoff (`retry_at`) of failed ones. Times before
/// `since` (the start of the last pass, which already weighed them) are skipped, so an object
/// that could not run then (its Promise unavailable, say) does not wake the loop again and
/// again.
pub fn next_retry(state: &State, since: SystemTime) -> Option<Duration> {
    let records = || state.requests.values().chain(state.promises.values());
    records()
        .flat_map(|r| r.status.pipelines.iter())
        .filter_map(|p| p.next_retry_at.as_ref())
        .chain(records().filter_map(|r| r.retry_at.as_ref()))
        .filter_map(|t| humantime::parse_rfc3339(t).ok())
        .filter(|t| *t >= since)
        .map(|t| t.duration_since(SystemTime::now()).unwrap_or_default())
        .min()
}
