//! Promises stage: each Promise's `promise.configure` workflow, in `requiredPromises` order.
//!
//! A Promise runs when its inputs changed ([`super::plan::needs_run`] on the hash from
//! [`super::inputs::promise_hash`]), one at a time: a Promise's availability (its requirements
//! met and its workflow completed, kratix-contract.md §6) decides whether Promises that
//! require it, and its requests, can go on. Its `spec.dependencies` are rendered every pass,
//! and its output is placed on Destinations here. What the request plan needs from this stage
//! (hashes, availability, placement context) goes into [`super::plan::PromiseFacts`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::Map;

use super::placement::{OutputRecord, place_outputs};
use super::plan::{needs_run, reconciliation_interval};
use super::report::{ObjectAction, ObjectReport};
use super::run::RunTiming;
use super::{Engine, EngineError, Pass, inputs, parent_dir, promise_dir, records, run};
use crate::events;
use crate::model::{PROMISE_VERSION_LABEL, promise_key};
use crate::pipeline::Action;
use crate::state::{FileRecord, HashText, sha256_hex};
use crate::status::{ConditionStatus as CS, EventType, Text, cond};
use crate::validate::{ValidConfig, ValidPromise, to_yaml};

impl Engine {
    /// Runs the promise workflows that must run, renders every Promise's dependencies, places
    /// its output (into `pass.desired`) and fills `pass.facts`. Errors only when the blob cache
    /// cannot be written.
    pub(super) async fn configure_promises(
        &mut self,
        pass: &mut Pass<'_>,
    ) -> Result<(), EngineError> {
        let cfg = pass.cfg;
        let dests_fingerprint = format!("{:?}", pass.dests);
        // Host files pipelines run (Promise folders, image-override mounts), hashed once a pass.
        let mut trees = inputs::TreeHashes::new(&self.settings.state_dir);
        let config_filter = self.settings.file_filter().compile().ok();

        // Promises, in requiredPromises order.
        for p in order_promises(&cfg.promises) {
            let name = p.name().to_string();
            let hash = inputs::promise_hash(
                &self.runner,
                p,
                pass.config_root,
                config_filter.as_ref(),
                &mut trees,
            );
            let digests = inputs::image_digests(
                &self.runner,
                p.promise.object.spec.workflows.promise.configure.iter(),
            )
            .await;
            let hash = if digests.is_empty() {
                hash
            } else {
                sha256_hex(format!("{hash}\n{digests}").as_bytes())
            };
            pass.facts.hashes.insert(name.clone(), hash.clone());
            let pkey = promise_key(&name);
            let mut record = self
                .state
                .promises
                .remove(&pkey)
                .unwrap_or_else(|| records::new_record(&p.promise.id, &name));
            record.status.source = p.promise.origin.to_string();
            record.status.status = None;
            if !records::outputs_cached(&self.dir, &record) {
                record.input_hash.clear(); // re-run to restore the lost cached output
            }
            // Requirements (kratix-contract.md §6: configure still runs; requests wait).
            let unmet: Vec<String> = p
                .promise
                .object
                .spec
                .required_promises
                .iter()
                .filter(|r| !requirement_met(pass.all, &pass.facts.available, &r.name, &r.version))
                .map(|r| {
                    if r.version.is_empty() {
                        r.name.clone()
                    } else {
                        format!("{}@{}", r.name, r.version)
                    }
                })
                .collect();
            if p.promise.object.spec.required_promises.is_empty() {
                record.status.clear(cond::REQUIREMENTS_FULFILLED);
            } else if unmet.is_empty() {
                record.status.set(
                    cond::REQUIREMENTS_FULFILLED,
                    CS::True,
                    "RequirementsInstalled",
                    "Requirements fulfilled",
                );
            } else {
                record.status.set(
                    cond::REQUIREMENTS_FULFILLED,
                    CS::False,
                    "RequirementsNotInstalled",
                    "Requirements not fulfilled",
                );
            }
            events::note_spec(&mut record.status, **record.object != *p.promise.raw);
            let pipelines = p.promise.object.spec.workflows.promise.configure.clone();
            let interval = reconciliation_interval(p, &self.settings);
            if needs_run(&record, &HashText::from(&hash), interval, self.backoff) {
                if pipelines.is_empty() {
                    record.completed = true;
                    record.input_hash = HashText::from(&hash);
                    records::set_completed(&mut record.status, 0, "Promise configured");
                } else if self.cancel.load(Ordering::SeqCst) {
                    // Shutting down: not started; the changed hash runs it on the next start.
                    tracing::debug!(promise = %name, "shutting down: promise workflow not started");
                } else {
                    let job = run::Job {
                        key: pkey.clone(),
                        promise: Arc::new(p.clone()),
                        request: None,
                        action: Action::Configure,
                        pipelines: pipelines.into(),
                        object_yaml: inputs::object_yaml(&p.promise.raw, &record.status),
                        existing_status: Map::new(),
                        promise_dir: promise_dir(pass.config_root, &p.promise.origin.file),
                        rate_limited: false,
                        generation: record.status.observed_generation,
                    };
                    events::started(&mut record.status, p.version());
                    let t = std::time::Instant::now();
                    let result = run::run_job(&self.runner, &job).await;
                    pass.report.pipelines_run += result.pipelines.len();
                    pass.report.runs.push(RunTiming {
                        key: pkey.clone(),
                        seconds: t.elapsed().as_secs_f64(),
                        succeeded: result.succeeded(),
                    });
                    let absorbed = self.absorb_result(
                        &mut record,
                        &HashText::from(&hash),
                        &result,
                        true,
                        &mut pass.report,
                    );
                    record.shrink_to_fit();
                    absorbed?;
                    self.note_failure(&mut record);
                }
                pass.report
                    .objects
                    .push(ObjectReport::new(&record, ObjectAction::Ran));
            } else {
                pass.report
                    .objects
                    .push(ObjectReport::new(&record, ObjectAction::Unchanged));
            }
            // Static dependencies are rendered every pass (cheap, and no pipeline involved).
            let static_out = self.static_dependencies(p)?;
            let mut outputs: Vec<OutputRecord> = record
                .outputs
                .iter()
                .filter(|o| !o.pipeline.is_empty())
                .cloned()
                .collect();
            outputs.extend(static_out);
            record.outputs = outputs;
            record.object = p.promise.raw.clone().into();
            record.promise = Some((*p.promise.raw).clone());
            record.promise_dir = Some(parent_dir(&p.promise.origin.file));
            let placed = place_outputs(
                &name,
                None,
                &record.outputs,
                &p.promise.object.spec.destination_selectors,
                &pass.dests,
                &record.placements,
            );
            records::note_unscheduled(&mut record.status, &placed.unscheduled, "promise");
            pass.desired.insert(pkey.clone(), placed.placements);
            let is_available = unmet.is_empty() && record.completed;
            record.status.status = Some(Text::new(if is_available {
                "Available"
            } else {
                "Unavailable"
            }));
            if is_available {
                record.status.set_noting(
                    cond::AVAILABLE,
                    CS::True,
                    "PromiseAvailable",
                    "Ready to fulfil resource requests",
                    (EventType::Normal, "Available", "Promise is available"),
                );
            } else {
                record.status.set_noting(
                    cond::AVAILABLE,
                    CS::False,
                    "PromiseUnavailable",
                    "Cannot fulfil resource requests",
                    (
                        EventType::Warning,
                        "Unavailable",
                        "Promise is not available: cannot fulfil resource requests",
                    ),
                );
            }
            pass.facts.available.insert(name.clone(), is_available);
            pass.facts.steady_ctx.insert(
                name.clone(),
                sha256_hex(
                    format!(
                        "{dests_fingerprint}\n{:?}\n{:?}\n{is_available}",
                        p.promise.object.spec.destination_selectors,
                        p.pipeline_namespace(),
                    )
                    .as_bytes(),
                ),
            );
            let mut fingerprint = inputs::override_fingerprint(
                &self.runner,
                p.promise.object.spec.workflows.resource.configure.iter(),
                &mut trees,
            );
            fingerprint.push_str(
                &inputs::image_digests(
                    &self.runner,
                    p.promise.object.spec.workflows.resource.configure.iter(),
                )
                .await,
            );
            // Every version applied is kept (kratix-lifecycle.md §2.1).
            self.save_revision(
                p,
                &hash,
                &fingerprint,
                pass.config_root,
                cfg.commit.as_ref(),
            )?;
            pass.facts.override_fps.insert(name.clone(), fingerprint);
            self.state.promises.insert(pkey, record);
        }
        Ok(())
    }

    /// `spec.dependencies` as one output (`static/<promise>-dependencies.yaml`, pipeline "").
    fn static_dependencies(&self, p: &ValidPromise) -> Result<Option<OutputRecord>, EngineError> {
        let deps = &p.promise.object.spec.dependencies;
        if deps.is_empty() {
            return Ok(None);
        }
        let body = deps.iter().map(to_yaml).collect::<Vec<_>>().join("---\n");
        let sha = self.dir.put_blob(body.as_bytes())?;
        Ok(Some(OutputRecord {
            pipeline: Default::default(),
            files: vec![FileRecord {
                path: format!("static/{}-dependencies.yaml", p.name()),
                sha256: sha.into(),
            }],
            selectors: Vec::new(),
            health: None, // `spec.dependencies` declare no health check (`checks::declared`)
        }))
    }
}

/// Promises sorted so that required Promises come first (ties and cycles by name).
pub(super) fn order_promises(promises: &[ValidPromise]) -> Vec<&ValidPromise> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    let names: BTreeSet<&str> = promises.iter().map(|p| p.name()).collect();
    while out.len() < promises.len() {
        let before = out.len();
        for p in promises {
            if done.contains(p.name()) {
                continue;
            }
            let ready = p
                .promise
                .object
                .spec
                .required_promises
                .iter()
                .all(|r| done.contains(r.name.as_str()) || !names.contains(r.name.as_str()));
            if ready {
                done.insert(p.name());
                out.push(p);
            }
        }
        if out.len() == before {
            // A cycle: take the rest in name order.
            for p in promises {
                if done.insert(p.name()) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// A `requiredPromises` entry is met when that Promise is available and, if a version is
/// given, its `kratix.io/promise-version` label matches.
fn requirement_met(
    cfg: &ValidConfig,
    available: &BTreeMap<String, bool>,
    name: &str,
    version: &str,
) -> bool {
    let Some(p) = cfg.promise(name) else {
        return false;
    };
    if !available.get(name).copied().unwrap_or(false) {
        return false;
    }
    version.is_empty()
        || p.promise
            .object
            .metadata
            .labels
            .get(PROMISE_VERSION_LABEL)
            .is_some_and(|v| v == version)
}
