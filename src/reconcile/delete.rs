//! Delete stage: objects that left the config repo.
//!
//! What is present is the config's objects, valid or not, plus those held because their file
//! does not load ([`Presence`]). A record no longer present has the first pipeline of its
//! delete workflow run (a Promise's before its requests', as in Kratix's
//! `promise_controller.go:deletePromise`) and its files pruned in the same commit as the rest
//! of the pass; a failing delete pipeline blocks the deletion (and a Promise's requests') until
//! it succeeds.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::report::{ObjectAction, ObjectReport};
use super::{Engine, EngineError, Pass, held, inputs, promise_dir, run};
use crate::events;
use crate::model::{ObjectRef, Promise, promise_key};
use crate::pipeline::Action;
use crate::state::{ObjectRecord, State};
use crate::status::{ConditionStatus as CS, EventType, cond};
use crate::validate::{ValidConfig, ValidPromise, ValidRequest};

impl Engine {
    /// Delete workflows and pruning for objects that left the config repo.
    ///
    /// Order as in Kratix (`promise_controller.go:deletePromise`): a removed Promise's delete
    /// workflow runs first, then each of its requests' delete workflows; its files and theirs
    /// are pruned in the same commit. While a Promise's delete pipeline fails (or the pass is
    /// shutting down), its requests are not deleted either. Steady requests (present by
    /// definition) are not looked at. Request records it drops go to `pass.removed`; pruning is
    /// `pass.desired` set to nothing. Errors only when the state directory cannot be written.
    pub(super) async fn deletions(&mut self, pass: &mut Pass<'_>) -> Result<(), EngineError> {
        let (cfg, config_root) = (pass.cfg, pass.config_root);
        let (present, steady) = (&pass.present, &pass.steady);
        let all = pass.all;
        // The Promise the pipeline API's catalog was last set for in this stage.
        let mut catalog_for: Option<String> = None;
        let (desired, report) = (&mut pass.desired, &mut pass.report);
        let mut dropped = Vec::new();
        let gone_requests: Vec<String> = self
            .state
            .requests
            .iter()
            .filter(|(k, r)| {
                !steady.contains(*k)
                    && !present.held.contains(k.as_str())
                    && !present.request(k, &r.status.object)
            })
            .map(|(k, _)| k.clone())
            .collect();
        // A Promise waits while any of its requests is held (their file does not load): its
        // deletion would leave them without the delete pipeline they need later.
        let promises_of_held: BTreeSet<&str> = present
            .held
            .iter()
            .filter_map(|k| self.state.requests.get(k))
            .map(|r| r.status.promise.as_str())
            .collect();
        let gone_promises: Vec<String> = self
            .state
            .promises
            .keys()
            .filter(|k| {
                let name = k.trim_start_matches("promise/");
                !present.held.contains(k.as_str())
                    && !present.promises.contains(name)
                    && !promises_of_held.contains(name)
            })
            .cloned()
            .collect();
        // Promises whose deletion did not finish in this pass: their requests wait.
        let mut blocked: BTreeSet<String> = BTreeSet::new();
        for (keys, is_request) in [(gone_promises, false), (gone_requests, true)] {
            for key in keys {
                let map = self.records_mut(is_request);
                let mut record = map.remove(&key).expect("listed above");
                let promise_name = record.status.promise.clone();
                if is_request && blocked.contains(promise_name.as_str()) {
                    map.insert(key, record);
                    continue;
                }
                if record.object.is_null() && record.placements.is_empty() {
                    // Never admitted (invalid, or waiting for its Promise): nothing to delete.
                    if is_request {
                        dropped.push(key);
                    }
                    continue;
                }
                // The Promise that defines the delete pipeline: a request's applied version
                // (`versions`), else the current one, else the last seen.
                let at_applied = if is_request {
                    self.promise_for_delete(&record, cfg.promise(&promise_name))
                } else {
                    None
                };
                let promise_doc = at_applied
                    .or_else(|| {
                        cfg.promise(&promise_name)
                            .map(|p| (p.clone(), promise_dir(config_root, &p.promise.origin.file)))
                    })
                    .or_else(|| {
                        self.state
                            .promises
                            .get(&promise_key(&promise_name))
                            .map(|r| &**r)
                            .or(if is_request { None } else { Some(&record) })
                            .and_then(|pr| {
                                let doc = pr.promise.clone()?;
                                let promise: Promise = serde_json::from_value(doc.clone()).ok()?;
                                let dir = pr
                                    .promise_dir
                                    .as_ref()
                                    .map(|d| config_root.join(d))
                                    .filter(|d| d.is_dir());
                                Some((rebuild_valid_promise(promise, doc), dir))
                            })
                    });
                let mut delete_failed = None;
                if let Some((vp, dir)) = promise_doc {
                    let wf = if is_request {
                        &vp.promise.object.spec.workflows.resource
                    } else {
                        &vp.promise.object.spec.workflows.promise
                    };
                    if let Some(first) = wf.delete.first() {
                        let request = if is_request {
                            valid_request_from_record(&record, &vp)
                        } else {
                            None
                        };
                        let object = match &request {
                            Some(r) => Some(r.object()),
                            None if is_request => None,
                            None if record.object.is_null() => Some(vp.promise.raw.clone()),
                            None => Some(Arc::clone(&record.object)),
                        };
                        match object {
                            None => {
                                // Never run a resource delete as a promise workflow.
                                report.warnings.push(format!(
                                "{key}: delete pipeline {} not run: the request's kind is unknown (its record was rebuilt from a state store index and Promise {promise_name} has no API)",
                                first.metadata.name
                            ));
                            }
                            Some(_) if self.cancel.load(Ordering::SeqCst) => {
                                // Shutting down: the deletion runs on the next start.
                                if !is_request {
                                    blocked.insert(promise_name.to_string());
                                }
                                let map = self.records_mut(is_request);
                                map.insert(key, record);
                                continue;
                            }
                            Some(object) => {
                                let job = run::Job {
                                    key: key.clone(),
                                    promise: Arc::new(vp.clone()),
                                    request: request.map(Arc::new),
                                    action: Action::Delete,
                                    pipelines: vec![first.clone()].into(),
                                    object_yaml: inputs::object_yaml(&object, &record.status),
                                    existing_status: crate::status::fields_map(
                                        &record.status.fields,
                                    ),
                                    promise_dir: dir,
                                    rate_limited: false,
                                    generation: record.status.observed_generation,
                                };
                                record.status.event(
                                    EventType::Normal,
                                    events::PIPELINE_STARTED,
                                    &format!("Delete Pipeline started: {}", first.metadata.name),
                                );
                                if is_request
                                    && catalog_for.as_deref() != Some(promise_name.as_str())
                                {
                                    self.set_catalog(all, [promise_name.as_str()], |_| false);
                                    catalog_for = Some(promise_name.to_string());
                                }
                                let result = run::run_job(&self.runner, &job).await;
                                report.pipelines_run += result.pipelines.len();
                                match result.error() {
                                    // A config problem validation reports (an env
                                    // `valueFrom` the daemon config does not allow, …): the
                                    // delete Pipeline did not start, and deletion does not
                                    // wait for a config change.
                                    Some(e) if e.is_config() => report.warnings.push(format!(
                                        "{key}: delete pipeline {} not run: {e}; files pruned",
                                        first.metadata.name
                                    )),
                                    Some(e) => delete_failed = Some(e.to_string()),
                                    None => {}
                                }
                            }
                        }
                    }
                } else {
                    report.warnings.push(format!(
                    "{key}: Promise {promise_name} is unknown (the state directory was lost and the Promise left the config repo): its delete pipeline, if any, was not run; files pruned"
                ));
                }
                if let Some(err) = delete_failed {
                    if !is_request {
                        blocked.insert(promise_name.to_string());
                    }
                    record.status.set_noting(
                        cond::DELETE_WORKFLOW_COMPLETED,
                        CS::False,
                        "DeleteWorkflowFailed",
                        "The Delete Pipeline has failed",
                        (
                            EventType::Warning,
                            events::DELETE_PIPELINE_FAILED,
                            "The Delete Pipeline has failed",
                        ),
                    );
                    record.status.message =
                        format!("Deletion blocked: delete pipeline failed: {err}");
                    report
                        .objects
                        .push(ObjectReport::new(&record, ObjectAction::Failed));
                    desired.insert(key.clone(), record.placements.clone());
                    let map = self.records_mut(is_request);
                    map.insert(key, record);
                    continue;
                }
                // Prune: desired = nothing; the record is dropped after the write succeeds.
                report
                    .objects
                    .push(ObjectReport::new(&record, ObjectAction::Deleted));
                desired.insert(key.clone(), Vec::new());
                record.deleting = true;
                let map = self.records_mut(is_request);
                map.insert(key, record);
            }
        }
        pass.removed.extend(dropped);
        Ok(())
    }
}

/// Which objects are in the config repo, valid or not.
#[derive(Default)]
pub(super) struct Presence<'a> {
    promises: HashSet<&'a str>,
    requests: HashSet<(&'a str, &'a str, &'a str)>, // kind, namespace, name
    /// Keys of records held because their config file does not load ([`held::Held`]): they
    /// count as present.
    pub(super) held: HashSet<String>,
}

impl<'a> Presence<'a> {
    /// The objects of `cfg`, with the records of config files that did not load held at their
    /// last good version: never steady, never deleted, never pruned ([`held`]).
    pub(super) fn with_held(cfg: &'a ValidConfig, state: &State) -> (Presence<'a>, held::Held) {
        let mut present = Presence::of(cfg);
        let held = held::Held::of(cfg, state, |key, rec, is_request| {
            if is_request {
                present.request(key, &rec.status.object)
            } else {
                present
                    .promises
                    .contains(key.trim_start_matches("promise/"))
            }
        });
        present.held = held.keys.keys().cloned().collect();
        (present, held)
    }

    fn of(cfg: &'a ValidConfig) -> Presence<'a> {
        let mut promises: HashSet<&str> = cfg.promises.iter().map(|p| p.name()).collect();
        let mut requests = std::collections::HashSet::with_capacity(cfg.requests.len());
        for r in &cfg.requests {
            requests.insert((r.id.kind.as_str(), r.namespace(), r.name()));
        }
        for r in &cfg.rejected {
            if r.id.kind == "Promise" {
                promises.insert(r.id.name.as_str());
            } else {
                requests.insert((
                    r.id.kind.as_str(),
                    r.id.namespace.as_deref().unwrap_or("default"),
                    r.id.name.as_str(),
                ));
            }
        }
        Presence {
            promises,
            requests,
            held: Default::default(),
        }
    }

    /// A request is present when its Promise is present and the request itself is in the repo
    /// (valid or not). Requests of a removed Promise are deleted with it, as in Kratix.
    fn request(&self, key: &str, id: &ObjectRef) -> bool {
        let promise = key.split('/').next().unwrap_or_default();
        if !self.promises.contains(promise) {
            return false;
        }
        let ns = id.namespace.as_deref().unwrap_or_default();
        if id.kind.is_empty() {
            // Rebuilt from an index: kind unknown, match on namespace/name only.
            return self
                .requests
                .iter()
                .any(|(_, n, m)| *n == ns && *m == id.name);
        }
        self.requests
            .contains(&(id.kind.as_str(), ns, id.name.as_str()))
    }
}

/// A Promise that left the config repo, rebuilt from its last seen document, so that its
/// delete pipeline (or its requests') can run: no origin file, no schema.
pub(super) fn rebuild_valid_promise(promise: Promise, raw: Value) -> ValidPromise {
    let api = promise
        .spec
        .api
        .as_ref()
        .and_then(|a| crate::model::PromiseApi::from_crd(a).ok().flatten());
    ValidPromise {
        promise: crate::config::Located {
            origin: crate::diag::Origin {
                file: String::new(),
                document: 0,
            },
            id: ObjectRef {
                kind: "Promise".into(),
                namespace: None,
                name: promise.metadata.name.clone(),
            },
            object: promise,
            raw: raw.into(),
            blob: None,
        },
        api,
        schema: None,
    }
}

/// The request a delete pipeline runs for: the object as last admitted or, for a record
/// rebuilt from a state store index after the state directory was lost, a minimal object
/// (`apiVersion` and `kind` of the Promise's API, `metadata.name`, `metadata.namespace` and
/// the `kratix.io/promise-name` label). `None` when neither is known (no API).
fn valid_request_from_record(
    record: &ObjectRecord,
    promise: &ValidPromise,
) -> Option<ValidRequest> {
    let mut id = record.status.object.clone();
    let object = if record.object.is_null() {
        let api = promise.api.as_ref()?;
        id.kind = api.kind.clone();
        Arc::new(serde_json::json!({
            "apiVersion": api.api_version(),
            "kind": api.kind,
            "metadata": {
                "name": id.name,
                "namespace": id.namespace.clone().unwrap_or_else(|| "default".into()),
                "labels": { crate::model::PROMISE_NAME_LABEL: promise.name() },
            },
        }))
    } else {
        Arc::clone(&record.object)
    };
    Some(ValidRequest {
        origin: crate::diag::Origin {
            file: String::new(),
            document: 0,
        },
        id,
        promise: promise.name().to_string(),
        spec_digest: crate::validate::spec_digest(&object),
        input_hash_memo: Default::default(),
        key_memo: Default::default(),
        object: crate::state::CompactValue::Value(object),
    })
}
