//! The reconcile engine: one pass from a validated config repo to state store commits.
//!
//! A pass ([`Engine::reconcile`]):
//! 1. registers Destinations (canary files unless `initWorkloads.enabled: false`);
//! 2. runs each Promise's `promise.configure` workflow and renders its `spec.dependencies`;
//! 3. runs `resource.configure` for each request whose Promise is available (its
//!    `requiredPromises` met and its promise workflow completed), in parallel up to the
//!    configured concurrency, one request's pipelines in order;
//! 4. runs the first delete pipeline of every request or Promise that left the config repo, then
//!    prunes its files (a removed Promise's own delete pipeline before its requests', as in
//!    Kratix);
//! 5. places every output on Destinations (kratix-contract.md §3, [`crate::scheduler`]) and
//!    writes everything to each state store as **one commit per store**;
//! 6. records status, placements and input hashes in the state directory.
//!
//! Guarantees:
//! - A workflow re-runs only when its inputs change: the hash of the Promise spec (which holds
//!   the pipeline definitions), the request's defaulted spec, the image overrides its
//!   containers use with the host trees of their read-only mounts, and the non-config files of
//!   the Promise folder mounted at `/promise` (bounded: [`TREE_MAX_ENTRIES`] entries and
//!   [`TREE_CONTENT_BUDGET`] bytes of content per tree). Status is not an
//!   input, although pipelines see it in `object.yaml`. A failed or retry-suspended workflow
//!   runs again on the next pass, and so does one whose cached output left the blob cache. An
//!   unchanged pass spawns no process and makes no commit.
//! - Placement is recomputed from cached outputs on every pass, so a new Destination receives
//!   dependencies and pending requests get placed without re-running pipelines. Placements are
//!   sticky: a request never moves once placed (misplaced instead), also when its Destination
//!   left the config repo with `cleanup: none`; `cleanup: all` removes the Destination's files.
//! - Failures are isolated: an invalid request, a failing pipeline, or an unwritable state store
//!   marks the objects concerned Failed with the reason (an invalid request:
//!   `Reconciled=False InvalidRequest`, `status.message: Invalid: …`); everything else still
//!   reconciles and commits. A request or Promise that becomes invalid keeps its previous
//!   output: only removal from the config repo deletes.
//! - Once the cancel flag is set (SIGTERM), no workflow starts: promise, resource or delete.
//! - Every pass calls `apply` on every state store in use, so files someone edited or deleted
//!   behind our back are restored even when nothing else changed (and reported as drift);
//!   a Git store trusts the head it last saw for `git.driftCheckInterval` (the push lease
//!   protects writes on it), so an idle daemon finds such drift within that interval.

pub mod held;
mod inputs;
mod placement;
mod report;

pub use inputs::{TREE_CONTENT_BUDGET, TREE_MAX_ENTRIES};
pub use placement::{DestView, OutputRecord, owner_key, place_outputs};
pub use report::{ObjectAction, ObjectReport, PassReport, StoreReport};

pub use crate::model::{promise_key, request_key};
pub use crate::settings::{BASE_BACKOFF, MAX_BACKOFF};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use statestores::{ChangeSet, CommitMeta, FileWrite, Owner, PlacementWrite, StateStore};
use tokio::sync::Semaphore;

use crate::layout;
use crate::model::{
    FilepathMode, ObjectRef, PROMISE_VERSION_LABEL, Pipeline, Promise, StateStoreKind,
};
use crate::pipeline::{self, Action, Outcome, RunnerConfig, WorkflowInput, WorkflowResult};
use crate::scheduler::{DestinationInfo, WorkflowSelector};
use crate::settings::Settings;
use crate::state::{
    DestinationRecord, FileRecord, ObjectRecord, PlacementRecord, State, StateDir, StateError,
    sha256_hex,
};
use crate::status::{
    ConditionStatus as CS, Landed, ObjectStatus, Phase, PipelineStatus, cond, now_rfc3339,
};
use crate::validate::{ValidConfig, ValidPromise, ValidRequest, to_yaml};

/// Bumped when the engine's output for the same inputs changes, to force re-runs.
const ENGINE_VERSION: &str = "promised-engine-1";

/// A canary write (`Ok`) or the owner key of canary files to remove (`Err`).
type CanaryChange = Result<PlacementWrite, String>;

/// Canary changes with their state store key.
type CanaryChanges = Vec<(String, CanaryChange)>;

/// `(name, state store key)` of a Destination with `cleanup: all` that left the config repo
/// and whose files are being removed.
type Retiring = (String, String);

/// Errors that stop a whole pass (everything else is per-object status).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The reconcile engine. Holds the state, the open state stores and the runner settings
/// between passes; `promised reconcile` makes one pass, `promised run` many.
pub struct Engine {
    settings: Settings,
    dir: StateDir,
    state: State,
    runner: Arc<RunnerConfig>,
    /// Open state stores by `<kind>/<name>`, with the hash of the spec they were opened with.
    stores: BTreeMap<String, (String, Arc<dyn StateStore>)>,
    /// Stores whose write-permission check passed.
    checked: BTreeSet<String>,
    /// Problems found while loading the state (reported once in the next pass).
    startup_warnings: Vec<String>,
    /// Set on shutdown: workflows not yet started are skipped (running ones finish).
    cancel: Arc<AtomicBool>,
    /// Daemon mode: failed workflows wait for their backoff before running again.
    backoff: bool,
}

/// The inputs of one workflow run, owned so it can move into a task.
struct Job {
    key: String,
    /// Shared by every job of the Promise (a Promise document can be tens of KB).
    promise: Arc<ValidPromise>,
    request: Option<Arc<ValidRequest>>,
    action: Action,
    pipelines: Arc<[Pipeline]>,
    object_yaml: String,
    existing_status: Map<String, Value>,
    promise_dir: Option<PathBuf>,
    /// Subject to `maxFanoutPerSecond` (a Promise edit re-running its requests).
    rate_limited: bool,
}

/// How long one workflow took.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunTiming {
    /// Object key.
    pub key: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Every pipeline succeeded.
    pub succeeded: bool,
}

impl Engine {
    /// Opens the state directory from `settings` and loads the previous state. A corrupt state
    /// file is not fatal: the pass starts from an empty state and rebuilds placements from the
    /// state stores' ownership indexes.
    pub fn new(settings: Settings, runner: RunnerConfig) -> Result<Engine, EngineError> {
        let dir = StateDir::open(&settings.state_dir)?;
        let mut startup_warnings = Vec::new();
        let state = match dir.load() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "starting from an empty state");
                startup_warnings.push(e.to_string());
                State {
                    version: crate::state::STATE_VERSION,
                    ..State::default()
                }
            }
        };
        // Run directories of a killed process are removed now, not at the first Pipeline.
        if let Err(e) = crate::pipeline::rundir::process_dir(&runner.work_dir) {
            tracing::warn!(error = %e, "cannot prepare the run directory");
        }
        Ok(Engine {
            settings,
            dir,
            state,
            runner: Arc::new(runner),
            stores: BTreeMap::new(),
            checked: BTreeSet::new(),
            startup_warnings,
            cancel: Arc::new(AtomicBool::new(false)),
            backoff: false,
        })
    }

    /// Daemon mode: failed workflows back off exponentially (`retryBackoff` doubling up to
    /// `maxRetryBackoff`) instead of re-running on every pass.
    pub fn with_backoff(mut self, on: bool) -> Self {
        self.backoff = on;
        self
    }

    /// A flag that, once set, stops new workflows from starting (running ones finish).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Replaces the settings (SIGHUP): runner options, concurrency, commit template. The state
    /// directory stays where it is.
    pub fn set_settings(&mut self, mut settings: Settings) {
        settings.state_dir = self.settings.state_dir.clone();
        self.runner = Arc::new(settings.runner());
        self.settings = settings;
        self.checked.clear();
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Puts back into freshly loaded `objects` the last good version of every object of a
    /// config file that did not load, before validation ([`held::restore`]; a bad file never
    /// prunes). Returns how many documents were restored.
    pub fn restore_unloadable(&self, objects: &mut crate::config::Objects) -> usize {
        held::restore(objects, &self.state)
    }

    /// The current state (status of every object, placements).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.root()
    }

    /// Runs one reconcile pass over `cfg`. `config_root` is the directory the config repo's
    /// files are in (Promise folders are mounted from there at `/promise`).
    pub async fn reconcile(
        &mut self,
        cfg: &ValidConfig,
        config_root: &Path,
    ) -> Result<PassReport, EngineError> {
        let started = std::time::Instant::now();
        let mut report = PassReport {
            config_commit: cfg.commit.clone(),
            ..PassReport::default()
        };
        report.warnings.append(&mut self.startup_warnings);

        // State stores and Destinations.
        let store_errors = self.open_stores(cfg).await;
        let dests = dest_views(cfg);
        self.rebuild_from_indexes_if_empty(&dests).await;

        let mut desired: BTreeMap<String, Vec<PlacementRecord>> = BTreeMap::new(); // object key -> placements
        let mut object_errors: BTreeMap<String, String> = BTreeMap::new();

        // Canary files (Destination records as they were before: a journal of finished work
        // in the middle of the pass must not say the canaries are written).
        let destinations_at_start = self.state.destinations.clone();
        let promises_before = self.state.promises.clone();
        let (mut canaries, retiring) = self.canaries(cfg)?;
        for (name, store_key) in &retiring {
            // `cleanup: all` removes everything the store's index lists for the Destination,
            // also what no record knows of any more.
            let Some((_, store)) = self.stores.get(store_key) else {
                continue;
            };
            match store.owned("").await {
                Ok(entries) => {
                    let keys: BTreeSet<String> = entries
                        .into_iter()
                        .filter(|e| e.owner.destination == *name)
                        .map(|e| e.owner.key)
                        .collect();
                    canaries.extend(keys.into_iter().map(|k| (store_key.clone(), Err(k))));
                }
                Err(e) => {
                    tracing::warn!(destination = %name, store = %store_key, error = %e, "cannot read the ownership index to remove a Destination's files");
                }
            }
        }

        // What the pass may change, to persist only that (`Dirty`).
        let commit_before = self.state.config_commit.clone();
        let requests_before = self.state.requests.len();
        // Requests skipped as steady, and the steady key each processed request earns when it
        // ends the pass fully reconciled.
        let mut steady: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut eligible: BTreeMap<String, String> = BTreeMap::new();
        let dests_fingerprint = format!("{dests:?}");
        let mut steady_ctx: BTreeMap<String, String> = BTreeMap::new();
        let mut origin_buf = String::new();
        let mut override_fps: BTreeMap<String, String> = BTreeMap::new();

        // Host files pipelines run (Promise folders, image-override mounts), hashed once a pass.
        let mut trees = inputs::TreeHashes::new(self.dir.root());
        let config_filter = self.settings.file_filter().compile().ok();

        // Promises, in requiredPromises order.
        let mut available: BTreeMap<String, bool> = BTreeMap::new();
        let mut promise_hashes: BTreeMap<String, String> = BTreeMap::new();
        for p in order_promises(&cfg.promises) {
            let name = p.name().to_string();
            let hash = self.promise_hash(p, config_root, config_filter.as_ref(), &mut trees);
            promise_hashes.insert(name.clone(), hash.clone());
            let pkey = promise_key(&name);
            let mut record = self
                .state
                .promises
                .remove(&pkey)
                .unwrap_or_else(|| new_record(&p.promise.id, &name));
            record.status.source = p.promise.origin.to_string();
            record.status.status = None;
            if !outputs_cached(&self.dir, &record) {
                record.input_hash.clear(); // re-run to restore the lost cached output
            }
            // Requirements (kratix-contract.md §6: configure still runs; requests wait).
            let unmet: Vec<String> = p
                .promise
                .object
                .spec
                .required_promises
                .iter()
                .filter(|r| !requirement_met(cfg, &available, &r.name, &r.version))
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
            let pipelines = p.promise.object.spec.workflows.promise.configure.clone();
            let interval = reconciliation_interval(p, &self.settings);
            if needs_run(&record, &hash, interval, self.backoff) {
                if pipelines.is_empty() {
                    record.completed = true;
                    record.input_hash = hash.clone();
                    set_completed(&mut record.status, 0, "Promise configured");
                } else if self.cancel.load(Ordering::SeqCst) {
                    // Shutting down: not started; the changed hash runs it on the next start.
                    tracing::debug!(promise = %name, "shutting down: promise workflow not started");
                } else {
                    let job = Job {
                        key: pkey.clone(),
                        promise: Arc::new(p.clone()),
                        request: None,
                        action: Action::Configure,
                        pipelines: pipelines.into(),
                        object_yaml: inputs::object_yaml(&p.promise.raw, &record.status),
                        existing_status: Map::new(),
                        promise_dir: promise_dir(config_root, &p.promise.origin.file),
                        rate_limited: false,
                    };
                    let t = Instant::now();
                    let result = run_job(&self.runner, &job).await;
                    report.pipelines_run += result.pipelines.len();
                    report.runs.push(RunTiming {
                        key: pkey.clone(),
                        seconds: t.elapsed().as_secs_f64(),
                        succeeded: result.succeeded(),
                    });
                    self.absorb_result(&mut record, &hash, &result, true, &mut report)?;
                    self.note_failure(&mut record);
                }
                report
                    .objects
                    .push(ObjectReport::new(&record, ObjectAction::Ran));
            } else {
                report
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
            record.object = p.promise.raw.clone();
            record.promise = Some((*p.promise.raw).clone());
            record.promise_dir = Some(parent_dir(&p.promise.origin.file));
            let placed = place_outputs(
                &name,
                None,
                &record.outputs,
                &p.promise.object.spec.destination_selectors,
                &dests,
                &record.placements,
            );
            note_unscheduled(&mut record.status, &placed.unscheduled, "promise");
            desired.insert(pkey.clone(), placed.placements);
            let is_available = unmet.is_empty() && record.completed;
            record.status.status = Some(
                if is_available {
                    "Available"
                } else {
                    "Unavailable"
                }
                .to_string(),
            );
            if is_available {
                record.status.set(
                    cond::AVAILABLE,
                    CS::True,
                    "PromiseAvailable",
                    "Ready to fulfil resource requests",
                );
            } else {
                record.status.set(
                    cond::AVAILABLE,
                    CS::False,
                    "PromiseUnavailable",
                    "Cannot fulfil resource requests",
                );
            }
            available.insert(name.clone(), is_available);
            steady_ctx.insert(
                name.clone(),
                sha256_hex(
                    format!(
                        "{dests_fingerprint}\n{:?}\n{:?}\n{is_available}",
                        p.promise.object.spec.destination_selectors,
                        p.promise
                            .object
                            .spec
                            .workflows
                            .config
                            .as_ref()
                            .and_then(|c| c.pipeline_namespace.as_ref()),
                    )
                    .as_bytes(),
                ),
            );
            override_fps.insert(
                name.clone(),
                override_fingerprint(
                    &self.runner,
                    p.promise.object.spec.workflows.resource.configure.iter(),
                    &mut trees,
                ),
            );
            self.state.promises.insert(pkey, record);
        }

        // Objects of config files that did not load are held at their last good version:
        // never steady, never deleted, never pruned (see `held`).
        let mut present = Presence::of(cfg);
        let held = held::Held::of(cfg, &self.state, |key, rec, is_request| {
            if is_request {
                present.request(key, &rec.status.object)
            } else {
                present
                    .promises
                    .contains(key.trim_start_matches("promise/"))
            }
        });
        present.held = held.keys.keys().cloned().collect();

        // Requests whose Promise is available and whose inputs changed: run in parallel.
        let mut jobs = Vec::new();
        let mut shared = SharedJobInputs::default();
        let mut waiting: Vec<(String, Arc<ValidRequest>)> = Vec::new();
        for r in &cfg.requests {
            let key = r.key();
            let Some(p) = cfg.promise(&r.promise) else {
                continue;
            };
            let hash = request_hash(&promise_hashes[&r.promise], r, &override_fps[&r.promise]);
            let ctx = &steady_ctx[&r.promise];
            origin_buf.clear();
            let _ = write!(origin_buf, "{}", r.origin);
            let interval = reconciliation_interval(p, &self.settings);
            // Steady: same inputs (`needs_run` compares the input hash), same placement
            // context, same place in the repo, fully reconciled last time.
            if !held.contains(key)
                && self.state.requests.get(key).is_some_and(|rec| {
                    rec.steady == *ctx
                        && rec.status.source == origin_buf
                        && !needs_run(rec, &hash, interval, self.backoff)
                })
            {
                steady.insert(key.to_string());
                continue;
            }
            let key = key.to_string();
            eligible.insert(key.clone(), ctx.clone());
            let origin = origin_buf.clone();
            let record = self
                .state
                .requests
                .entry(key.clone())
                .or_insert_with(|| new_record(&r.id, &r.promise));
            record.steady.clear();
            record.status.source = origin;
            if record.status.object.kind.is_empty() {
                record.status.object = r.id.clone(); // rebuilt from an index: kind was unknown
            }
            if !outputs_cached(&self.dir, record) {
                record.input_hash.clear(); // re-run to restore the lost cached output
            }
            if !available.get(&r.promise).copied().unwrap_or(false) {
                waiting.push((key, r.clone()));
                continue;
            }
            record.status.set(
                cond::PROMISE_AVAILABLE,
                CS::True,
                "PromiseAvailable",
                "Promise Requirements are met",
            );
            let spec_hash = sha256_hex(
                r.object
                    .get("spec")
                    .cloned()
                    .unwrap_or(Value::Null)
                    .to_string()
                    .as_bytes(),
            );
            if needs_run(record, &hash, interval, self.backoff) {
                // A Promise edit (the request's own spec unchanged) fans out at a bounded rate.
                let rate_limited = record.completed
                    && record.spec_hash == spec_hash
                    && !record.input_hash.is_empty();
                record.spec_hash = spec_hash;
                if p.promise
                    .object
                    .spec
                    .workflows
                    .resource
                    .configure
                    .is_empty()
                {
                    record.completed = true;
                    record.input_hash = hash;
                    record.object = r.object.clone();
                    set_completed(&mut record.status, 0, "Resource requested");
                    continue;
                }
                jobs.push((
                    hash,
                    Arc::new(Job {
                        key: key.clone(),
                        promise: shared_promise(&mut shared, p),
                        request: Some(r.clone()),
                        action: Action::Configure,
                        pipelines: shared_pipelines(&mut shared, p),
                        object_yaml: inputs::object_yaml(&r.object, &record.status),
                        existing_status: record.status.fields.clone(),
                        promise_dir: promise_dir(config_root, &p.promise.origin.file),
                        rate_limited,
                    }),
                ));
            } else {
                report
                    .objects
                    .push(ObjectReport::new(record, ObjectAction::Unchanged));
            }
        }
        for (key, r) in waiting {
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
            record.status.message = format!("Pending: Promise {} is not available", r.promise);
            report
                .objects
                .push(ObjectReport::new(record, ObjectAction::Waiting));
        }
        // Requests in the config repo that were rejected (schema, unserved version, invalid or
        // duplicated): Failed with the reasons. What they applied before stays; they run again
        // once valid.
        let mut invalid: BTreeMap<String, (ObjectRef, String, String, Vec<String>)> =
            BTreeMap::new();
        for rej in &cfg.rejected {
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
            record
                .status
                .set(cond::RECONCILED, CS::False, "InvalidRequest", "Failing");
            record.status.message = format!("Invalid: {}", reasons.join("; "));
            record.input_hash.clear();
            report
                .objects
                .push(ObjectReport::new(record, ObjectAction::Failed));
        }
        // Results are absorbed as they arrive (outputs go to the blob cache at once), so a
        // pass holds the output of the running workflows only, not of all 10,000.
        let mut results = spawn_jobs(
            &self.runner,
            jobs.iter().map(|(_, j)| j.clone()).collect(),
            self.settings.effective_concurrency(),
            self.settings.max_fanout_per_second,
            &self.cancel,
        );
        let mut ran: Vec<Option<ObjectReport>> = vec![None; jobs.len()];
        // Finished work survives a crash: absorbed results are journalled at most
        // PROGRESS_INTERVAL after they arrive, so a killed pass restarts with them (their input
        // hash matches: they are placed, not run again).
        let mut progress = crate::state::Dirty::default();
        let mut flush_at: Option<tokio::time::Instant> = None;
        loop {
            let next = tokio::select! {
                next = results.recv() => next,
                _ = sleep_until_some(flush_at) => {
                    self.save_progress(&mut progress, &promises_before, &destinations_at_start);
                    flush_at = None;
                    continue;
                }
            };
            let Some((i, outcome)) = next else {
                break;
            };
            let (hash, job) = &jobs[i];
            let Some((result, seconds)) = outcome else {
                // Shutting down: never started; runs on the next start.
                if let Some(rec) = self.state.requests.get_mut(&job.key) {
                    rec.input_hash.clear();
                }
                continue;
            };
            report.pipelines_run += result.pipelines.len();
            report.runs.push(RunTiming {
                key: job.key.clone(),
                seconds,
                succeeded: result.succeeded(),
            });
            let mut record = self
                .state
                .requests
                .remove(&job.key)
                .expect("job from state");
            if let Some(r) = &job.request {
                record.object = r.object.clone();
            }
            self.absorb_result(&mut record, hash, &result, false, &mut report)?;
            self.note_failure(&mut record);
            ran[i] = Some(ObjectReport::new(&record, ObjectAction::Ran));
            self.state.requests.insert(job.key.clone(), record);
            progress.requests.insert(job.key.clone());
            flush_at.get_or_insert_with(|| tokio::time::Instant::now() + PROGRESS_INTERVAL);
        }
        report.objects.extend(ran.into_iter().flatten());
        // Placement for every current request that is not steady (picks up Destination
        // changes: they change the steady key).
        for r in &cfg.requests {
            let key = r.key();
            if steady.contains(key) {
                continue;
            }
            let Some(p) = cfg.promise(&r.promise) else {
                continue;
            };
            let Some(record) = self.state.requests.get_mut(key) else {
                continue;
            };
            let key = key.to_string();
            let ns = p
                .promise
                .object
                .spec
                .workflows
                .config
                .as_ref()
                .and_then(|c| c.pipeline_namespace.clone())
                .unwrap_or_else(|| r.namespace().to_string());
            let placed = place_outputs(
                &r.promise,
                Some((&ns, r.name())),
                &record.outputs,
                &p.promise.object.spec.destination_selectors,
                &dests,
                &record.placements,
            );
            note_unscheduled(&mut record.status, &placed.unscheduled, "resource");
            desired.insert(key, placed.placements);
        }

        // Objects that left the config repo (held ones did not: their file does not load).
        let mut removed = self
            .deletions(
                cfg,
                &present,
                &steady,
                config_root,
                &mut desired,
                &mut report,
            )
            .await?;
        removed.extend(renamed);

        // Objects that are present but invalid keep their placements.
        for (key, rec) in self.state.requests.iter().chain(self.state.promises.iter()) {
            if steady.contains(key) {
                continue;
            }
            desired
                .entry(key.clone())
                .or_insert_with(|| rec.placements.clone());
        }

        // mode `none`: two placements claiming one path on a store is an error for the later one
        // (steady requests' paths are claimed first: they keep them).
        let steady_none: Vec<&PlacementRecord> =
            if dests.iter().any(|d| d.mode == FilepathMode::None) {
                steady
                    .iter()
                    .filter_map(|k| self.state.requests.get(k))
                    .flat_map(|r| &r.placements)
                    .filter(|p| dest_mode(&dests, &p.destination) == Some(FilepathMode::None))
                    .collect()
            } else {
                Vec::new() // no Destination in mode `none`: nothing to collide
            };
        detect_collisions(
            &mut desired,
            &self.state,
            &steady_none,
            &dests,
            &mut object_errors,
        );
        // A path its state store refuses fails that object alone (it keeps what it placed
        // before), not the store's whole commit.
        check_store_paths(
            &mut desired,
            &self.state,
            &self.stores,
            &dests,
            &mut object_errors,
        );

        // One change set per store.
        let mut sets: BTreeMap<String, ChangeSet> = BTreeMap::new();
        let mut touched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new(); // store -> object keys
        // Destinations new in this pass, or back after they left with `cleanup: none`: every
        // placement on them is written in full, so files left in place are adopted again (the
        // store skips identical content) and missing ones are written.
        let configured_stores = configured_stores(cfg);
        let arrived: BTreeSet<&str> = dests
            .iter()
            .map(|d| d.info.name.as_str())
            .filter(|n| !destinations_at_start.contains_key(*n))
            .collect();
        for (okey, places) in &desired {
            let before = self
                .record(okey)
                .map(|r| r.placements.clone())
                .unwrap_or_default();
            let (mut changed, removed) = placement::diff(&before, places);
            if !arrived.is_empty() {
                for pl in places {
                    if arrived.contains(pl.destination.as_str())
                        && !changed.iter().any(|c| c.key == pl.key)
                    {
                        changed.push(pl);
                    }
                }
            }
            for pl in changed {
                if dest_mode(&dests, &pl.destination) == Some(FilepathMode::AggregatedYaml) {
                    touched
                        .entry(pl.store.clone())
                        .or_default()
                        .insert(okey.clone());
                    continue; // written via the Destination's aggregate below
                }
                let files = match self.load_files(&pl.files) {
                    Ok(f) => f,
                    Err(e) => {
                        // Cached output lost (and not re-run this pass): this object fails
                        // alone and runs again on the next pass.
                        object_errors.insert(
                            okey.clone(),
                            format!("cached output missing, it re-runs on the next pass: {e}"),
                        );
                        if let Some(r) = self.record_mut(okey) {
                            r.input_hash.clear();
                        }
                        continue;
                    }
                };
                let set = sets.entry(pl.store.clone()).or_default();
                set.writes.push(PlacementWrite {
                    owner: owner_for(okey, pl),
                    files,
                });
                touched
                    .entry(pl.store.clone())
                    .or_default()
                    .insert(okey.clone());
            }
            for key in removed {
                if let Some(old) = before.iter().find(|p| p.key == key) {
                    if dest_mode(&dests, &old.destination).is_none()
                        && !configured_stores.contains(&old.store)
                    {
                        // Its Destination and its state store both left the config repo:
                        // nothing can be pruned, the files stay (as with `cleanup: none`).
                        continue;
                    }
                    if dest_mode(&dests, &old.destination) != Some(FilepathMode::AggregatedYaml) {
                        sets.entry(old.store.clone())
                            .or_default()
                            .removals
                            .push(key.clone());
                    }
                    touched
                        .entry(old.store.clone())
                        .or_default()
                        .insert(okey.clone());
                }
            }
        }
        if dests.iter().any(|d| d.mode == FilepathMode::AggregatedYaml) && !steady.is_empty() {
            // An aggregate holds every placement on its Destination, steady ones included.
            let mut all = desired.clone();
            for k in &steady {
                if let Some(r) = self.state.requests.get(k) {
                    all.insert(k.clone(), r.placements.clone());
                }
            }
            self.aggregates(&dests, &all, &mut sets)?;
        } else {
            self.aggregates(&dests, &desired, &mut sets)?;
        }
        for (store, write) in canaries {
            match write {
                Ok(w) => sets.entry(store).or_default().writes.push(w),
                Err(key) => sets.entry(store).or_default().removals.push(key),
            }
        }

        // Apply: every store in use, so drift is repaired even on a no-op pass.
        let mut in_use: BTreeSet<String> = dests.iter().map(|d| d.store.clone()).collect();
        in_use.extend(sets.keys().cloned());
        let mut store_results: BTreeMap<String, Result<Option<String>, String>> = BTreeMap::new();
        // A directory config: its Git HEAD (`+dirty`) or its path, for the commit message.
        let mut dir_config: Option<(Option<String>, Option<String>)> = None;
        for store_key in in_use {
            let mut set = sets.remove(&store_key).unwrap_or_default();
            let (config_commit, config_label) = match &cfg.commit {
                Some(c) => (Some(c.clone()), None),
                None if set.writes.is_empty() && set.removals.is_empty() => (None, None),
                None => dir_config
                    .get_or_insert_with(|| directory_identity(config_root))
                    .clone(),
            };
            set.meta = CommitMeta {
                config_commit,
                subject_template: self.settings.git.commit_subject.clone(),
                note: None,
                config_label,
            };
            set.writes.sort_by(|a, b| a.owner.key.cmp(&b.owner.key));
            set.removals.sort();
            set.removals.dedup();
            let result = match (store_errors.get(&store_key), self.stores.get(&store_key)) {
                (Some(e), _) => Err(e.clone()),
                (None, None) => Err(format!("{store_key} does not exist")),
                (None, Some((_, store))) => match store.apply(&set).await {
                    Ok(outcome) => {
                        report
                            .stores
                            .push(StoreReport::from_outcome(&store_key, &outcome));
                        Ok(outcome.version)
                    }
                    Err(e) => {
                        report
                            .stores
                            .push(StoreReport::failed(&store_key, &e.to_string()));
                        Err(e.to_string())
                    }
                },
            };
            if let Err(e) = &result {
                if store_errors.contains_key(&store_key) {
                    report.stores.push(StoreReport::failed(&store_key, e));
                }
                tracing::warn!(store = %store_key, error = %e, "state store write failed");
            }
            store_results.insert(store_key, result);
        }

        // A canary whose store write failed is sent again next pass.
        for d in self.state.destinations.values_mut() {
            if matches!(store_results.get(&d.store), Some(Err(_)) | None) {
                d.canary_hash.clear();
            }
        }
        // A Destination removed with `cleanup: all` is forgotten once its files are gone.
        for (name, store_key) in &retiring {
            if matches!(store_results.get(store_key), Some(Ok(_))) {
                self.state.destinations.remove(name);
            }
        }

        // Record what landed, and status.
        for (okey, places) in desired {
            if invalid.contains_key(&okey) {
                continue; // keeps its placements and its InvalidRequest status
            }
            let Some(record) = self.record_mut(&okey) else {
                continue;
            };
            let stores: BTreeSet<&String> = places
                .iter()
                .map(|p| &p.store)
                .chain(record.placements.iter().map(|p| &p.store))
                .collect();
            let failed: Vec<String> = stores
                .iter()
                .filter_map(|s| match store_results.get(*s) {
                    Some(Err(e)) => Some(format!("{s}: {e}")),
                    _ => None,
                })
                .collect();
            if let Some(err) = object_errors.get(&okey) {
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
                if let Some(Ok(Some(sha))) = store_results.get(*s)
                    && touched.get(*s).is_some_and(|t| t.contains(&okey))
                {
                    record.status.commits.insert((*s).clone(), sha.clone());
                }
            }
            record.placements = places;
            finish_status(record);
            if let Some(k) = eligible.get(&okey)
                && record.completed
                && record.failures == 0
                && record.retry_at.is_none()
                && !record.deleting
            {
                record.steady = k.clone();
            }
        }
        // Held objects: Failed with their file's error, listed first.
        if !held.keys.is_empty() {
            report.objects.retain(|o| !held.contains(&o.key));
            let mut first = Vec::with_capacity(held.keys.len());
            for (key, msg) in &held.keys {
                let Some(record) = self.record_mut(key) else {
                    continue;
                };
                record
                    .status
                    .set(cond::RECONCILED, CS::False, held::REASON, "Failing");
                record.status.message = msg.clone();
                record.steady.clear();
                first.push(ObjectReport::new(record, ObjectAction::Failed));
            }
            report.objects.splice(0..0, first);
        }
        // Deleted objects whose files are gone are forgotten.
        self.state.requests.retain(|k, r| {
            let keep = !(r.deleting && r.placements.is_empty());
            if !keep {
                removed.push(k.clone());
            }
            keep
        });
        self.state
            .promises
            .retain(|_, r| !(r.deleting && r.placements.is_empty()));
        self.state.config_commit = cfg.commit.clone();
        let infra = held::infra_documents(cfg, &self.state.infra_documents);
        let infra_changed = infra != self.state.infra_documents;
        self.state.infra_documents = infra;
        let mut dirty = crate::state::Dirty {
            globals: destinations_at_start != self.state.destinations
                || commit_before != self.state.config_commit
                || infra_changed,
            ..Default::default()
        };
        for k in promises_before.keys().chain(self.state.promises.keys()) {
            if promises_before.get(k) != self.state.promises.get(k) {
                dirty.promises.insert(k.clone());
            }
        }
        for k in self.state.requests.keys().chain(removed.iter()) {
            if !steady.contains(k) {
                dirty.requests.insert(k.clone());
            }
        }
        debug_assert!(
            self.state.requests.len() + removed.len() >= requests_before,
            "every removed request is accounted for"
        );
        self.dir.save_changes(&mut self.state, &dirty)?;
        report.dirty = dirty;
        // Steady requests: listed when a person can read the list, counted otherwise.
        if steady.len() <= MAX_LISTED_UNCHANGED {
            let mut listed: Vec<&String> = steady.iter().collect();
            listed.sort();
            for k in listed {
                if let Some(r) = self.state.requests.get(k) {
                    report
                        .objects
                        .push(ObjectReport::new(r, ObjectAction::Unchanged));
                }
            }
        } else {
            report.unchanged_not_listed = steady.len();
        }
        report.duration = started.elapsed();
        for o in &mut report.objects {
            if let Some(r) = self.record(&o.key) {
                o.refresh(r);
            }
        }
        Ok(report)
    }

    /// Journals the records of `progress` (and Promise records changed since
    /// `promises_before`) in the middle of a pass, with the Destination records as they were
    /// before it (`destinations_before`), then empties `progress`. A failure is logged, not
    /// fatal: the end of the pass saves everything again.
    fn save_progress(
        &mut self,
        progress: &mut crate::state::Dirty,
        promises_before: &BTreeMap<String, ObjectRecord>,
        destinations_before: &BTreeMap<String, crate::state::DestinationRecord>,
    ) {
        for (k, r) in &self.state.promises {
            if promises_before.get(k) != Some(r) {
                progress.promises.insert(k.clone());
            }
        }
        // Destinations as before the pass: their canaries are not written yet (a snapshot
        // taken now must not say they are).
        let mut destinations = destinations_before.clone();
        std::mem::swap(&mut self.state.destinations, &mut destinations);
        if let Err(e) = self.dir.save_changes(&mut self.state, progress) {
            tracing::warn!(error = %e, "cannot journal finished workflows (the pass saves them at its end)");
        }
        std::mem::swap(&mut self.state.destinations, &mut destinations);
        *progress = crate::state::Dirty::default();
    }

    fn record(&self, key: &str) -> Option<&ObjectRecord> {
        self.state
            .requests
            .get(key)
            .or_else(|| self.state.promises.get(key))
    }

    /// The requests' or the Promises' records.
    fn records_mut(&mut self, requests: bool) -> &mut BTreeMap<String, ObjectRecord> {
        if requests {
            &mut self.state.requests
        } else {
            &mut self.state.promises
        }
    }

    fn record_mut(&mut self, key: &str) -> Option<&mut ObjectRecord> {
        if self.state.requests.contains_key(key) {
            self.state.requests.get_mut(key)
        } else {
            self.state.promises.get_mut(key)
        }
    }

    /// Opens a state store object for every GitStateStore in the config and runs its
    /// write-permission check once. Returns `<kind>/<name>` → error for stores that cannot be used.
    async fn open_stores(&mut self, cfg: &ValidConfig) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        for s in &cfg.git_state_stores {
            let key = format!("GitStateStore/{}", s.id.name);
            let mut spec_json = serde_json::to_value(&s.object.spec).expect("spec serialises");
            if let Some(url) = spec_json.get("url").and_then(Value::as_str)
                && let Some(resolved) = resolve_local_url(url, self.dir.root())
            {
                spec_json["url"] = Value::String(resolved);
            }
            let spec_hash = sha256_hex(spec_json.to_string().as_bytes());
            if self.stores.get(&key).is_none_or(|(h, _)| *h != spec_hash) {
                let spec: statestores::git::GitStateStoreSpec =
                    match serde_json::from_value(spec_json) {
                        Ok(s) => s,
                        Err(e) => {
                            errors.insert(key, format!("invalid spec: {e}"));
                            continue;
                        }
                    };
                let mut opts = statestores::GitOptions::new(self.dir.stores_dir());
                opts.insecure_skip_tls_verify = self.settings.git.insecure_skip_tls_verify;
                opts.secrets_dir = self.settings.secrets_dir.clone();
                opts.max_push_attempts = self.settings.git.max_push_attempts.max(1);
                opts.trust_head_for = self.settings.git.drift_check_interval;
                opts.network = self.settings.network.timeouts();
                match statestores::GitStateStore::open(&s.id.name, spec, opts) {
                    Ok(store) => {
                        self.stores
                            .insert(key.clone(), (spec_hash, Arc::new(store)));
                        self.checked.remove(&key);
                    }
                    Err(e) => {
                        errors.insert(key, e.to_string());
                        continue;
                    }
                }
            }
            if !self.checked.contains(&key) {
                let store = self.stores[&key].1.clone();
                match store.check().await {
                    Ok(()) => {
                        self.checked.insert(key);
                    }
                    Err(e) => {
                        errors.insert(key, format!("write-permission check failed: {e}"));
                    }
                }
            }
        }
        for s in &cfg.bucket_state_stores {
            let key = format!("BucketStateStore/{}", s.id.name);
            let spec_json = serde_json::to_value(&s.object.spec).expect("spec serialises");
            let spec_hash = sha256_hex(spec_json.to_string().as_bytes());
            if self.stores.get(&key).is_none_or(|(h, _)| *h != spec_hash) {
                let spec: statestores::s3::BucketStateStoreSpec =
                    match serde_json::from_value(spec_json) {
                        Ok(s) => s,
                        Err(e) => {
                            errors.insert(key, format!("invalid spec: {e}"));
                            continue;
                        }
                    };
                let opts = statestores::s3::S3Options {
                    secrets_dir: self.settings.secrets_dir.clone(),
                    state_dir: Some(self.dir.stores_dir()),
                    network: self.settings.network.timeouts(),
                    ..Default::default()
                };
                match statestores::S3StateStore::open(&s.id.name, spec, opts) {
                    Ok(store) => {
                        self.stores
                            .insert(key.clone(), (spec_hash, Arc::new(store)));
                        self.checked.remove(&key);
                    }
                    Err(e) => {
                        errors.insert(key, e.to_string());
                        continue;
                    }
                }
            }
            if !self.checked.contains(&key) {
                let store = self.stores[&key].1.clone();
                match store.check().await {
                    Ok(()) => {
                        self.checked.insert(key);
                    }
                    Err(e) => {
                        errors.insert(key, format!("write-permission check failed: {e}"));
                    }
                }
            }
        }
        errors
    }

    /// After the state directory was lost, recover sticky placements from the state stores'
    /// ownership indexes, so requests do not move and files are not duplicated.
    async fn rebuild_from_indexes_if_empty(&mut self, dests: &[DestView]) {
        if !self.state.requests.is_empty() || !self.state.promises.is_empty() {
            return;
        }
        for (key, (_, store)) in &self.stores {
            let Ok(entries) = store.owned("").await else {
                continue;
            };
            for e in entries {
                let Some(d) = dests
                    .iter()
                    .find(|d| d.info.name == e.owner.destination && &d.store == key)
                else {
                    continue;
                };
                let _ = d;
                let (okey, object) = match &e.owner.resource {
                    Some(nsname) => {
                        let (ns, name) = nsname.split_once('/').unwrap_or(("default", nsname));
                        (
                            request_key(&e.owner.promise, ns, name),
                            ObjectRef {
                                kind: String::new(),
                                namespace: Some(ns.into()),
                                name: name.into(),
                            },
                        )
                    }
                    None => (
                        promise_key(&e.owner.promise),
                        ObjectRef {
                            kind: "Promise".into(),
                            namespace: None,
                            name: e.owner.promise.clone(),
                        },
                    ),
                };
                if e.owner.key.ends_with("/kratix-canary") {
                    // Remember the canary's owner so `canaries` can remove it once
                    // `initWorkloads` is switched off.
                    self.state
                        .destinations
                        .entry(e.owner.destination.clone())
                        .or_insert_with(|| DestinationRecord {
                            store: key.clone(),
                            cleanup_all: false,
                            canary_key: None,
                            canary_hash: String::new(),
                        })
                        .canary_key
                        .get_or_insert_with(|| e.owner.key.clone());
                    continue;
                }
                let rec = if e.owner.resource.is_some() {
                    &mut self.state.requests
                } else {
                    &mut self.state.promises
                }
                .entry(okey)
                .or_insert_with(|| new_record(&object, &e.owner.promise));
                let group_id = e
                    .owner
                    .key
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let pipeline = e.owner.pipeline.clone().unwrap_or_default();
                match rec.placements.iter_mut().find(|p| p.key == e.owner.key) {
                    Some(p) => p.files.push(FileRecord {
                        path: e.path.clone(),
                        sha256: e.sha256.clone(),
                    }),
                    None => rec.placements.push(PlacementRecord {
                        key: e.owner.key.clone(),
                        store: key.clone(),
                        destination: e.owner.destination.clone(),
                        pipeline,
                        // The index keeps id5 only; the scheduler matches on the full id, so
                        // stickiness is restored through `destination` below.
                        group_id: group_id_from_id5(&group_id),
                        dir: String::new(),
                        misplaced: false,
                        files: vec![FileRecord {
                            path: e.path.clone(),
                            sha256: e.sha256.clone(),
                        }],
                    }),
                }
            }
        }
        let n = self.state.requests.len() + self.state.promises.len();
        if n > 0 {
            tracing::info!(objects = n, "rebuilt placements from state store indexes");
        }
    }

    /// Canary writes (`Ok`) and removals (`Err(owner key)`) per store, and registration records;
    /// and `(name, store)` of the Destinations with `cleanup: all` that left the config repo.
    fn canaries(
        &mut self,
        cfg: &ValidConfig,
    ) -> Result<(CanaryChanges, Vec<Retiring>), EngineError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for d in &cfg.destinations {
            let name = d.id.name.clone();
            seen.insert(name.clone());
            let Some(store_key) = store_key_of(
                &d.object.spec.state_store_ref.kind,
                &d.object.spec.state_store_ref.name,
            ) else {
                continue;
            };
            let store_path = store_path(cfg, &store_key);
            let key = format!("{name}/kratix-canary");
            let rec = self
                .state
                .destinations
                .entry(name.clone())
                .or_insert_with(|| DestinationRecord {
                    store: store_key.clone(),
                    cleanup_all: false,
                    canary_key: None,
                    canary_hash: String::new(),
                });
            rec.cleanup_all = d.object.spec.cleanup == crate::model::Cleanup::All;
            if rec.store != store_key {
                if let Some(k) = rec.canary_key.take() {
                    out.push((rec.store.clone(), Err(k)));
                }
                rec.store = store_key.clone();
            }
            if d.object.spec.init_workloads.enabled {
                let files: Vec<FileWrite> = layout::canary_files(
                    &store_path,
                    &d.object.spec.path,
                    d.object.spec.filepath.mode,
                )
                .into_iter()
                .map(|(path, content)| FileWrite {
                    path,
                    content: content.as_bytes().to_vec(),
                })
                .collect();
                let fingerprint = sha256_hex(
                    files
                        .iter()
                        .map(|f| format!("{}\n{}\n", f.path, sha256_hex(&f.content)))
                        .collect::<String>()
                        .as_bytes(),
                );
                if rec.canary_key.as_deref() == Some(key.as_str()) && rec.canary_hash == fingerprint
                {
                    continue; // written before; drift repair keeps it there
                }
                rec.canary_hash = fingerprint;
                let owner = Owner {
                    key: key.clone(),
                    destination: name.clone(),
                    promise: String::new(),
                    resource: None,
                    pipeline: None,
                };
                rec.canary_key = Some(key);
                out.push((store_key, Ok(PlacementWrite { owner, files })));
            } else if let Some(k) = rec.canary_key.take() {
                out.push((store_key, Err(k)));
            }
        }
        // Destinations that left the config repo (Kratix's `spec.cleanup`). `none`, the
        // default: every file stays, canaries and ownership index included; the placements
        // there stay too, misplaced and no longer written (`place_outputs`). `all`: everything
        // promised wrote for it goes (its placements, aggregate file and canaries; the caller
        // adds whatever else the store's index lists for it), and its placements are
        // forgotten, so its requests are placed again. Its record stays until the store has
        // committed that (`retiring`), so a failed write is retried on the next pass.
        let configured = configured_stores(cfg);
        let gone: Vec<String> = self
            .state
            .destinations
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        let mut retiring = Vec::new();
        for name in gone {
            let rec = self.state.destinations[&name].clone();
            if rec.cleanup_all && !cfg.unloadable.is_empty() {
                // A config file does not load, and the Destination may be in it (a state
                // directory from before `infra_documents` cannot restore it): nothing of it
                // is removed until every file loads (`held`).
                tracing::warn!(destination = %name, "a Destination with cleanup: all is gone while a config file does not load: its files stay until it loads");
                continue;
            }
            if !rec.cleanup_all || !configured.contains(&rec.store) {
                if rec.cleanup_all {
                    tracing::warn!(destination = %name, store = %rec.store, "Destination with cleanup: all left the config repo with its state store: its files stay");
                }
                self.state.destinations.remove(&name);
                continue;
            }
            if let Some(k) = rec.canary_key {
                out.push((rec.store.clone(), Err(k)));
            }
            out.push((rec.store.clone(), Err(format!("{name}/aggregated"))));
            for obj in self
                .state
                .requests
                .values_mut()
                .chain(self.state.promises.values_mut())
            {
                for p in obj.placements.iter().filter(|p| p.destination == name) {
                    out.push((p.store.clone(), Err(p.key.clone())));
                }
                obj.placements.retain(|p| p.destination != name);
            }
            retiring.push((name, rec.store));
        }
        Ok((out, retiring))
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
            pipeline: String::new(),
            files: vec![FileRecord {
                path: format!("static/{}-dependencies.yaml", p.name()),
                sha256: sha,
            }],
            selectors: Vec::new(),
        }))
    }

    /// Hash of everything a promise workflow depends on (and, through requests' hashes, every
    /// resource workflow): the Promise spec, the image overrides its promise workflow uses with
    /// their read-only mounts' host trees, and the files of its folder (mounted at `/promise`)
    /// that are not config.
    fn promise_hash(
        &self,
        p: &ValidPromise,
        config_root: &Path,
        config_filter: Option<&crate::config::source::CompiledFilter>,
        trees: &mut inputs::TreeHashes,
    ) -> String {
        let spec = p.promise.raw.get("spec").cloned().unwrap_or(Value::Null);
        let images: Vec<&Pipeline> = p
            .promise
            .object
            .spec
            .workflows
            .promise
            .configure
            .iter()
            .collect();
        let overrides = override_fingerprint(&self.runner, images.into_iter(), trees);
        let folder = promise_dir(config_root, &p.promise.origin.file)
            .map(|d| trees.promise_folder(&d, &parent_dir(&p.promise.origin.file), config_filter))
            .unwrap_or_default();
        sha256_hex(format!("{ENGINE_VERSION}\n{spec}\n{overrides}\n{folder}").as_bytes())
    }

    /// Turns a workflow result into the record: status, pipeline phases, cached outputs.
    fn absorb_result(
        &self,
        record: &mut ObjectRecord,
        hash: &str,
        result: &WorkflowResult,
        promise_level: bool,
        report: &mut PassReport,
    ) -> Result<(), EngineError> {
        let now = now_rfc3339();
        let total = record.status.pipelines.len().max(result.pipelines.len()) as u32;
        let mut outputs: BTreeMap<String, OutputRecord> = record
            .outputs
            .iter()
            .map(|o| (o.pipeline.clone(), o.clone()))
            .collect();
        let mut phases = Vec::new();
        let mut failed = None;
        let mut suspended = None;
        for pr in &result.pipelines {
            let (phase, message, next) = match &pr.outcome {
                Outcome::Succeeded => (Phase::Succeeded, String::new(), None),
                Outcome::Failed { error } => {
                    failed = Some((pr.name.clone(), error.to_string()));
                    (Phase::Failed, error.to_string(), None)
                }
                Outcome::Suspended { message } => {
                    suspended = Some((pr.name.clone(), message.clone(), None));
                    (Phase::Suspended, message.clone(), None)
                }
                Outcome::Retry { after, message } => {
                    let at =
                        humantime::format_rfc3339_seconds(SystemTime::now() + *after).to_string();
                    suspended = Some((pr.name.clone(), message.clone(), Some(at.clone())));
                    (Phase::Suspended, message.clone(), Some(at))
                }
            };
            let attempts = record
                .status
                .pipelines
                .iter()
                .find(|p| p.name == pr.name)
                .map(|p| p.attempts)
                .unwrap_or(0);
            phases.push(PipelineStatus {
                name: pr.name.clone(),
                phase,
                message,
                attempts: if next.is_some() { attempts + 1 } else { 0 },
                next_retry_at: next,
                last_transition_time: now.clone(),
            });
            if pr.outcome == Outcome::Succeeded {
                let mut files = Vec::with_capacity(pr.outputs.len());
                for f in &pr.outputs {
                    let sha = self.dir.put_blob(&f.bytes)?;
                    files.push(FileRecord {
                        path: f.path.clone(),
                        sha256: sha,
                    });
                }
                let selectors = pr
                    .selectors
                    .iter()
                    .map(|s| WorkflowSelector {
                        directory: s.directory.clone(),
                        match_labels: s.match_labels.clone(),
                    })
                    .collect();
                outputs.insert(
                    pr.name.clone(),
                    OutputRecord {
                        pipeline: pr.name.clone(),
                        files,
                        selectors,
                    },
                );
            }
            if let Some(log) = pr.logs.last()
                && !matches!(pr.outcome, Outcome::Succeeded)
            {
                report.logs.push(format!(
                    "{}: {}",
                    pr.name,
                    log.stderr
                        .lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
        }
        record.input_hash = hash.to_string();
        record.status.fields = result.merged_status.clone();
        if let Some(m) = record.status.fields.get("message").and_then(Value::as_str) {
            record.status.message = m.to_string();
        }
        record.status.pipelines = phases;
        record.status.workflows = total;
        if let Some((name, err)) = failed {
            record.completed = false;
            record.status.workflows_failed = 1;
            record.status.workflows_succeeded = 0;
            record.status.set(
                cond::CONFIGURE_WORKFLOW_COMPLETED,
                CS::False,
                "ConfigureWorkflowFailed",
                &format!("A Configure Pipeline has failed: {name}"),
            );
            record.status.set(
                cond::RECONCILED,
                CS::False,
                "ConfigureWorkflowFailed",
                "Failing",
            );
            record.status.message = format!("Failing: pipeline {name}: {err}");
            record.outputs = outputs.into_values().collect();
            return Ok(());
        }
        if let Some((name, message, _)) = suspended {
            record.completed = false;
            record.status.set(
                cond::RECONCILED,
                CS::Unknown,
                "WorkflowSuspended",
                "Suspended",
            );
            record.status.set(
                cond::CONFIGURE_WORKFLOW_COMPLETED,
                CS::False,
                "PipelinesInProgress",
                "Pipelines are still in progress",
            );
            if !message.is_empty() {
                record.status.message = message;
            } else {
                record.status.message = format!("Suspended at pipeline {name}");
            }
            record.outputs = outputs.into_values().collect();
            return Ok(());
        }
        // Completed: exactly the current pipelines' outputs (Kratix deletes Works of pipelines
        // that are no longer part of the workflow).
        let names: BTreeSet<&str> = result.pipelines.iter().map(|p| p.name.as_str()).collect();
        record.outputs = outputs
            .into_values()
            .filter(|o| o.pipeline.is_empty() || names.contains(o.pipeline.as_str()))
            .collect();
        record.completed = true;
        let default_msg = if promise_level {
            "Promise configured"
        } else {
            "Resource requested"
        };
        set_completed(
            &mut record.status,
            result.pipelines.len() as u32,
            default_msg,
        );
        Ok(())
    }

    /// Backoff bookkeeping after a run: failures double the delay, success resets it.
    fn note_failure(&self, record: &mut ObjectRecord) {
        let failed = record
            .status
            .condition(cond::CONFIGURE_WORKFLOW_COMPLETED)
            .is_some_and(|c| c.reason == "ConfigureWorkflowFailed");
        if failed {
            record.failures += 1;
            let delay = self.settings.failure_backoff(record.failures);
            record.retry_at =
                Some(humantime::format_rfc3339_seconds(SystemTime::now() + delay).to_string());
        } else {
            record.failures = 0;
            record.retry_at = None;
        }
    }

    fn load_files(&self, files: &[FileRecord]) -> Result<Vec<FileWrite>, EngineError> {
        files
            .iter()
            .map(|f| {
                Ok(FileWrite {
                    path: f.path.clone(),
                    content: self.dir.get_blob(&f.sha256)?,
                })
            })
            .collect()
    }

    /// Rebuilds the single file of every `aggregatedYAML` Destination whose placements changed.
    fn aggregates(
        &mut self,
        dests: &[DestView],
        desired: &BTreeMap<String, Vec<PlacementRecord>>,
        sets: &mut BTreeMap<String, ChangeSet>,
    ) -> Result<(), EngineError> {
        'dest: for d in dests
            .iter()
            .filter(|d| d.mode == FilepathMode::AggregatedYaml)
        {
            let mut places: Vec<&PlacementRecord> = desired
                .values()
                .flatten()
                .filter(|p| p.destination == d.info.name)
                .collect();
            places.sort_by(|a, b| aggregate_order(&a.key).cmp(&aggregate_order(&b.key)));
            let mut docs = Vec::new();
            for p in &places {
                let mut files = p.files.clone();
                files.sort();
                for f in files {
                    let Ok(bytes) = self.dir.get_blob(&f.sha256) else {
                        // Lost from the cache: keep the file as it is; its owner re-runs.
                        tracing::warn!(destination = %d.info.name, sha256 = %f.sha256, "cached output missing; aggregate not rewritten in this pass");
                        continue 'dest;
                    };
                    docs.push(
                        String::from_utf8_lossy(&bytes)
                            .trim_end_matches('\n')
                            .to_string(),
                    );
                }
            }
            let key = format!("{}/aggregated", d.info.name);
            let owner = Owner {
                key: key.clone(),
                destination: d.info.name.clone(),
                promise: String::new(),
                resource: None,
                pipeline: None,
            };
            let set = sets.entry(d.store.clone()).or_default();
            if docs.is_empty() {
                set.removals.push(key);
            } else {
                let mut content = docs.join(layout::AGGREGATE_SEPARATOR);
                content.push('\n');
                set.writes.push(PlacementWrite {
                    owner,
                    files: vec![FileWrite {
                        path: layout::aggregated_path(&d.store_path, &d.path, &d.filename),
                        content: content.into_bytes(),
                    }],
                });
            }
        }
        Ok(())
    }

    /// Delete workflows and pruning for objects that left the config repo.
    ///
    /// Order as in Kratix (`promise_controller.go:deletePromise`): a removed Promise's delete
    /// workflow runs first, then each of its requests' delete workflows; its files and theirs
    /// are pruned in the same commit. While a Promise's delete pipeline fails (or the pass is
    /// shutting down), its requests are not deleted either. Steady requests (present by
    /// definition) are not looked at. Returns the request keys whose records it dropped.
    async fn deletions(
        &mut self,
        cfg: &ValidConfig,
        present: &Presence<'_>,
        steady: &std::collections::HashSet<String>,
        config_root: &Path,
        desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
        report: &mut PassReport,
    ) -> Result<Vec<String>, EngineError> {
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
                if is_request && blocked.contains(&promise_name) {
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
                // The Promise that defines the delete pipeline: the current one, else the last seen.
                let promise_doc = cfg
                    .promise(&promise_name)
                    .map(|p| (p.clone(), promise_dir(config_root, &p.promise.origin.file)))
                    .or_else(|| {
                        self.state
                            .promises
                            .get(&promise_key(&promise_name))
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
                            Some(r) => Some(r.object.clone()),
                            None if is_request => None,
                            None if record.object.is_null() => Some(vp.promise.raw.clone()),
                            None => Some(record.object.clone()),
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
                                    blocked.insert(promise_name.clone());
                                }
                                let map = self.records_mut(is_request);
                                map.insert(key, record);
                                continue;
                            }
                            Some(object) => {
                                let job = Job {
                                    key: key.clone(),
                                    promise: Arc::new(vp.clone()),
                                    request: request.map(Arc::new),
                                    action: Action::Delete,
                                    pipelines: vec![first.clone()].into(),
                                    object_yaml: inputs::object_yaml(&object, &record.status),
                                    existing_status: record.status.fields.clone(),
                                    promise_dir: dir,
                                    rate_limited: false,
                                };
                                let result = run_job(&self.runner, &job).await;
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
                        blocked.insert(promise_name.clone());
                    }
                    record.status.set(
                        cond::DELETE_WORKFLOW_COMPLETED,
                        CS::False,
                        "DeleteWorkflowFailed",
                        "The Delete Pipeline has failed",
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
        Ok(dropped)
    }
}

/// Which objects are in the config repo, valid or not.
struct Presence<'a> {
    promises: std::collections::HashSet<&'a str>,
    requests: std::collections::HashSet<(&'a str, &'a str, &'a str)>, // kind, namespace, name
    /// Keys of records held because their config file does not load ([`held::Held`]): they
    /// count as present.
    held: std::collections::HashSet<String>,
}

impl<'a> Presence<'a> {
    fn of(cfg: &'a ValidConfig) -> Presence<'a> {
        let mut promises: std::collections::HashSet<&str> =
            cfg.promises.iter().map(|p| p.name()).collect();
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

/// What a directory config is, for the commit message: `(Some(<HEAD sha>[+dirty]), None)` when
/// it is inside a Git work tree (`+dirty` when `git status` shows changes under it, untracked
/// files included), else `(None, Some("directory <path>"))`. One `git status` spawn; only
/// called when a commit is about to be made.
fn directory_identity(dir: &Path) -> (Option<String>, Option<String>) {
    let label = || (None, Some(format!("directory {}", dir.display())));
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=normal",
            "--",
            ".",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else {
        return label();
    };
    if !out.status.success() {
        return label();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(oid) = text
        .lines()
        .find_map(|l| l.strip_prefix("# branch.oid "))
        .filter(|o| o.len() >= 40 && o.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return label(); // no commit yet
    };
    let dirty = text.lines().any(|l| !l.starts_with('#'));
    (
        Some(if dirty {
            format!("{oid}+dirty")
        } else {
            oid.to_string()
        }),
        None,
    )
}

/// How long a finished workflow's result may wait before it is journalled in the middle of a
/// pass (one `fdatasync` per interval at most, whatever the number of results).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Sleeps until `at`, or forever when it is `None` (a `select!` arm that never fires).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn new_record(id: &ObjectRef, promise: &str) -> ObjectRecord {
    ObjectRecord {
        input_hash: String::new(),
        completed: false,
        object: Arc::new(Value::Null),
        promise: None,
        promise_dir: None,
        placements: Vec::new(),
        outputs: Vec::new(),
        spec_hash: String::new(),
        failures: 0,
        retry_at: None,
        deleting: false,
        steady: String::new(),
        status: ObjectStatus::new(id.clone(), promise),
    }
}

/// Re-run when the inputs changed, or the last run did not complete (failed, or a retry whose
/// time has come). A `suspend: true` without `retryAfter` waits for a spec change.
fn needs_run(record: &ObjectRecord, hash: &str, interval: Duration, backoff: bool) -> bool {
    let now = SystemTime::now();
    if record.input_hash != hash {
        return true;
    }
    if record.completed {
        // Periodic re-run (Kratix reconciliationInterval), which also repairs drift.
        return record
            .status
            .last_successful_configure_workflow_time
            .as_ref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_some_and(|t| t + interval <= now);
    }
    let suspended = record
        .status
        .pipelines
        .iter()
        .find(|p| p.phase == Phase::Suspended);
    match suspended {
        Some(p) => match &p.next_retry_at {
            Some(at) => humantime::parse_rfc3339(at)
                .map(|t| t <= now)
                .unwrap_or(true),
            // `suspend: true` without retryAfter waits for a spec change.
            None => false,
        },
        // Failed: again, after the backoff in daemon mode.
        None => {
            !backoff
                || record
                    .retry_at
                    .as_ref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .is_none_or(|t| t <= now)
        }
    }
}

/// A Promise's reconciliation interval: annotation `kratix.io/reconciliation-interval`, then
/// `spec.workflows.config.reconciliationInterval`, then the daemon's `resyncInterval`
/// (kratix-contract.md §7, PromiseRevision precedence).
pub fn reconciliation_interval(p: &ValidPromise, settings: &Settings) -> Duration {
    let meta = &p.promise.object.metadata;
    meta.annotations
        .get("kratix.io/reconciliation-interval")
        .cloned()
        .or_else(|| {
            p.promise
                .object
                .spec
                .workflows
                .config
                .as_ref()
                .and_then(|c| c.reconciliation_interval.clone())
        })
        .and_then(|s| crate::validate::parse_go_duration(&s).ok())
        .filter(|d| *d >= Duration::from_secs(60))
        .unwrap_or(settings.resync_interval)
}

fn set_completed(status: &mut ObjectStatus, n: u32, default_message: &str) {
    status.workflows = n;
    status.workflows_succeeded = n;
    status.workflows_failed = 0;
    status.set(
        cond::CONFIGURE_WORKFLOW_COMPLETED,
        CS::True,
        "PipelinesExecutedSuccessfully",
        "Pipelines completed",
    );
    status.last_successful_configure_workflow_time = Some(now_rfc3339());
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
fn note_works_failing(status: &mut ObjectStatus, why: &str) {
    status.set(cond::WORKS_SUCCEEDED, CS::False, "WorksFailing", why);
    status.set(cond::RECONCILED, CS::False, "WorksFailing", "Failing");
    if !status.message.starts_with("Failing: pipeline") {
        status.message = format!("Failing: {why}");
    }
}

/// Conditions after a successful write (kratix-contract.md §5.1).
fn finish_status(record: &mut ObjectRecord) {
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
        record.status.set(
            cond::WORKS_SUCCEEDED,
            CS::False,
            "WorksMisplaced",
            &format!(
                "Some works associated with this resource are misplaced: [{}]",
                misplaced.join(", ")
            ),
        );
    } else if !unscheduled {
        record.status.set(
            cond::WORKS_SUCCEEDED,
            CS::True,
            "WorksSucceeded",
            "All works associated with this resource are ready",
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
}

/// Start of a request's `status.message` while some of its output matches no Destination.
const PENDING_NO_DESTINATION: &str = "Pending: no matching Destination for workload groups";

/// `WorksSucceeded=Unknown WorksPending` while output matches no Destination
/// (kratix-contract.md §3 rule 5); a request's `status.message` then says Pending and why,
/// and gets its pipeline's message back once placed.
fn note_unscheduled(status: &mut ObjectStatus, unscheduled: &[(String, String)], what: &str) {
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

fn dest_views(cfg: &ValidConfig) -> Vec<DestView> {
    cfg.destinations
        .iter()
        .filter_map(|d| {
            let store = store_key_of(
                &d.object.spec.state_store_ref.kind,
                &d.object.spec.state_store_ref.name,
            )?;
            Some(DestView {
                info: DestinationInfo {
                    name: d.id.name.clone(),
                    labels: d.object.metadata.labels.clone(),
                    strict_match_labels: d.object.spec.strict_match_labels,
                },
                store_path: store_path(cfg, &store),
                store,
                path: d.object.spec.path.clone(),
                mode: d.object.spec.filepath.mode,
                filename: d.object.spec.filepath.filename.clone(),
            })
        })
        .collect()
}

/// True when every cached pipeline output of `record` is still in the blob cache (static
/// dependencies are rendered again every pass and do not count).
fn outputs_cached(dir: &StateDir, record: &ObjectRecord) -> bool {
    record
        .outputs
        .iter()
        .filter(|o| !o.pipeline.is_empty())
        .flat_map(|o| &o.files)
        .all(|f| dir.has_blob(&f.sha256))
}

fn dest_mode(dests: &[DestView], name: &str) -> Option<FilepathMode> {
    dests.iter().find(|d| d.info.name == name).map(|d| d.mode)
}

/// `<kind>/<name>` of every state store in the config repo.
fn configured_stores(cfg: &ValidConfig) -> BTreeSet<String> {
    cfg.git_state_stores
        .iter()
        .map(|s| format!("GitStateStore/{}", s.id.name))
        .chain(
            cfg.bucket_state_stores
                .iter()
                .map(|s| format!("BucketStateStore/{}", s.id.name)),
        )
        .collect()
}

fn store_key_of(kind: &StateStoreKind, name: &str) -> Option<String> {
    Some(format!("{}/{name}", kind.as_str()))
}

fn store_path(cfg: &ValidConfig, store_key: &str) -> String {
    let (kind, name) = store_key.split_once('/').unwrap_or_default();
    match kind {
        "GitStateStore" => cfg
            .git_state_stores
            .iter()
            .find(|s| s.id.name == name)
            .map(|s| s.object.spec.path.clone()),
        _ => cfg
            .bucket_state_stores
            .iter()
            .find(|s| s.id.name == name)
            .map(|s| s.object.spec.path.clone()),
    }
    .unwrap_or_default()
}

/// A relative local path (no scheme, no `user@host:`) is resolved against the state directory.
fn resolve_local_url(url: &str, state_dir: &Path) -> Option<String> {
    if url.contains("://") || url.contains('@') || url.contains(':') || Path::new(url).is_absolute()
    {
        return None;
    }
    let abs = std::path::absolute(state_dir.join(url)).ok()?;
    Some(abs.to_string_lossy().into_owned())
}

fn parent_dir(file: &str) -> String {
    file.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

fn promise_dir(root: &Path, file: &str) -> Option<PathBuf> {
    let d = root.join(parent_dir(file));
    d.is_dir().then_some(d)
}

fn owner_for(okey: &str, pl: &PlacementRecord) -> Owner {
    let mut parts = okey.splitn(3, '/');
    let first = parts.next().unwrap_or_default();
    let (promise, resource) = if first == "promise" {
        (parts.next().unwrap_or_default().to_string(), None)
    } else {
        let ns = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        (first.to_string(), Some(format!("{ns}/{name}")))
    };
    Owner {
        key: pl.key.clone(),
        destination: pl.destination.clone(),
        promise,
        resource,
        pipeline: (!pl.pipeline.is_empty()).then(|| pl.pipeline.clone()),
    }
}

/// Promises sorted so that required Promises come first (ties and cycles by name).
fn order_promises(promises: &[ValidPromise]) -> Vec<&ValidPromise> {
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

/// The input hash of a request's configure workflow: the Promise's hash, the request's
/// defaulted spec and `overrides` ([`override_fingerprint`] of the Promise's resource
/// pipelines, computed once per Promise and pass).
fn request_hash(promise_hash: &str, r: &ValidRequest, overrides: &str) -> String {
    let compute =
        || sha256_hex(format!("{promise_hash}\n{}\n{overrides}", r.spec_digest).as_bytes());
    let (inputs, hash) = r
        .input_hash_memo
        .get_or_init(|| (format!("{promise_hash}\n{overrides}"), compute()));
    let same = inputs.len() == promise_hash.len() + 1 + overrides.len()
        && inputs.starts_with(promise_hash)
        && inputs.ends_with(overrides);
    if same { hash.clone() } else { compute() }
}

/// Requests skipped as steady are listed in the pass report up to this many; beyond it they
/// are only counted ([`PassReport::unchanged_not_listed`]).
pub const MAX_LISTED_UNCHANGED: usize = 50;

/// The image overrides used by these pipelines, with the fingerprints of their read-only
/// mounts' host trees, as stable text. Writable mounts are left out: pipelines write there.
fn override_fingerprint<'a>(
    runner: &RunnerConfig,
    pipelines: impl Iterator<Item = &'a Pipeline>,
    trees: &mut inputs::TreeHashes,
) -> String {
    let mut used = BTreeMap::new();
    for p in pipelines {
        for c in &p.spec.containers {
            if let Some(o) = runner.image_overrides.get(&c.image) {
                let mut text = serde_json::to_string(o).unwrap_or_default();
                for m in o.mounts.iter().filter(|m| !m.writable) {
                    text.push(' ');
                    text.push_str(&trees.mount(&m.host));
                }
                used.insert(c.image.clone(), text);
            }
        }
    }
    serde_json::to_string(&used).unwrap_or_default()
}

/// One `Arc` per Promise for the jobs of a pass: its document and its resource configure
/// pipelines (10,000 jobs would otherwise hold 10,000 copies).
#[derive(Default)]
struct SharedJobInputs {
    promises: BTreeMap<String, (Arc<ValidPromise>, Arc<[Pipeline]>)>,
}

fn shared_entry<'a>(
    shared: &'a mut SharedJobInputs,
    p: &ValidPromise,
) -> &'a (Arc<ValidPromise>, Arc<[Pipeline]>) {
    shared
        .promises
        .entry(p.name().to_string())
        .or_insert_with(|| {
            (
                Arc::new(p.clone()),
                p.promise
                    .object
                    .spec
                    .workflows
                    .resource
                    .configure
                    .clone()
                    .into(),
            )
        })
}

fn shared_promise(shared: &mut SharedJobInputs, p: &ValidPromise) -> Arc<ValidPromise> {
    shared_entry(shared, p).0.clone()
}

fn shared_pipelines(shared: &mut SharedJobInputs, p: &ValidPromise) -> Arc<[Pipeline]> {
    shared_entry(shared, p).1.clone()
}

async fn run_job(runner: &RunnerConfig, job: &Job) -> WorkflowResult {
    let mut input = match &job.request {
        Some(r) => WorkflowInput::for_request(&job.promise, r, job.action),
        None => WorkflowInput::for_promise(&job.promise, job.action),
    };
    input.pipelines = &job.pipelines;
    input.object_yaml = job.object_yaml.clone();
    input.existing_status = job.existing_status.clone();
    input.promise_dir = job.promise_dir.clone();
    // Log fields (README "Logs"): Kratix's keys, with `name` as `object_name` (the JSON
    // formatter writes a span's own name under `name`). The failure warning repeats them: at
    // the default level the info span is disabled and only the event's own fields print.
    let promise = job.promise.name();
    let namespace = job
        .request
        .as_ref()
        .map(|_| input.object.namespace.as_str());
    let object_name = input.object.name.as_str();
    let workflow = format!("{}.{}", input.workflow_type.as_str(), job.action.as_str());
    let span = tracing::info_span!(
        "workflow",
        promise,
        namespace,
        object_name,
        workflow = workflow.as_str(),
    );
    use tracing::Instrument;
    async {
        tracing::debug!("workflow started");
        let result = pipeline::run_workflow(runner, &input).await;
        match failed_step(&result) {
            Some((pipeline, container, e)) => {
                // One line for the error; the stderr tail in its own field (the report and
                // the status show it under the object).
                let e = e.to_string();
                let (first, tail) = e.split_once('\n').unwrap_or((&e, ""));
                tracing::warn!(
                    promise,
                    namespace,
                    object_name,
                    workflow = workflow.as_str(),
                    pipeline,
                    container,
                    error = first,
                    stderr_tail = tail,
                    "workflow failed"
                );
            }
            None => tracing::debug!(pipelines = result.pipelines.len(), "workflow finished"),
        }
        result
    }
    .instrument(span)
    .await
}

/// The first failed Pipeline of a workflow: its name, the container that failed (when the
/// error is about one) and the error.
fn failed_step(result: &WorkflowResult) -> Option<(&str, Option<&str>, &pipeline::Error)> {
    use pipeline::Error as E;
    result.pipelines.iter().find_map(|p| match &p.outcome {
        Outcome::Failed { error } => {
            let container = match error {
                E::ContainerFailed { container, .. }
                | E::Timeout { container, .. }
                | E::SpawnFailed { container, .. }
                | E::NoCommand { container, .. }
                | E::EnvValueFrom { container, .. }
                | E::EnvFromUnsupported { container, .. } => Some(container.as_str()),
                _ => None,
            };
            Some((p.name.as_str(), container, error))
        }
        _ => None,
    })
}

/// Runs jobs with at most `limit` at once; results in job order, with wall-clock seconds.
/// Rate-limited jobs start at most `per_second` per second (0 = unlimited). Once `cancel` is
/// set, jobs that have not started yet return `None`; running ones finish.
/// Starts `jobs`, at most `limit` at a time and rate-limited ones at most `per_second`, and
/// sends `(index, result and seconds)` for each as it finishes; `None` for a job that never
/// started because `cancel` was set. A job whose task panicked reports a failed pipeline.
fn spawn_jobs(
    runner: &Arc<RunnerConfig>,
    jobs: Vec<Arc<Job>>,
    limit: usize,
    per_second: u32,
    cancel: &Arc<AtomicBool>,
) -> tokio::sync::mpsc::UnboundedReceiver<(usize, Option<(WorkflowResult, f64)>)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let sem = Arc::new(Semaphore::new(limit.max(1)));
    let spacing = if per_second == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs(1) / per_second
    };
    let next_slot = Arc::new(tokio::sync::Mutex::new(tokio::time::Instant::now()));
    for (i, job) in jobs.into_iter().enumerate() {
        let sem = sem.clone();
        let runner = runner.clone();
        let cancel = cancel.clone();
        let next_slot = next_slot.clone();
        let tx = tx.clone();
        let work = async move {
            let _permit = sem.acquire_owned().await.expect("semaphore never closed");
            if job.rate_limited && !spacing.is_zero() {
                let at = {
                    let mut slot = next_slot.lock().await;
                    let at = (*slot).max(tokio::time::Instant::now());
                    *slot = at + spacing;
                    at
                };
                tokio::time::sleep_until(at).await;
            }
            if cancel.load(Ordering::SeqCst) {
                return None;
            }
            let t = Instant::now();
            let r = run_job(&runner, &job).await;
            Some((r, t.elapsed().as_secs_f64()))
        };
        tokio::spawn(async move {
            let outcome = tokio::spawn(work).await.unwrap_or_else(|e| {
                Some((
                    WorkflowResult {
                        pipelines: vec![pipeline::PipelineResult {
                            name: String::new(),
                            outcome: Outcome::Failed {
                                error: pipeline::Error::SpawnFailed {
                                    pipeline: String::new(),
                                    container: String::new(),
                                    message: format!("pipeline task panicked: {e}"),
                                },
                            },
                            outputs: Vec::new(),
                            selectors: Vec::new(),
                            status: None,
                            logs: Vec::new(),
                        }],
                        merged_status: Map::new(),
                    },
                    0.0,
                ))
            });
            let _ = tx.send((i, outcome));
        });
    }
    rx
}

/// mode `none` writes every placement straight into the Destination directory; when two
/// placements on one store claim the same path, the later one (by key) fails and keeps its
/// previous placements. `aggregatedYAML` placements take no part: their file names are only
/// labels inside the Destination's one aggregate file, which holds them all (Kratix).
fn detect_collisions(
    desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
    state: &State,
    kept: &[&PlacementRecord],
    dests: &[DestView],
    errors: &mut BTreeMap<String, String>,
) {
    let writes_paths = |p: &PlacementRecord| {
        dest_mode(dests, &p.destination) != Some(FilepathMode::AggregatedYaml)
    };
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    for p in kept {
        for f in &p.files {
            claimed.insert((p.store.clone(), f.path.clone()), p.key.clone());
        }
    }
    let keys: Vec<String> = desired.keys().cloned().collect();
    for okey in keys {
        let places = &desired[&okey];
        let mut conflict = None;
        for p in places.iter().filter(|p| writes_paths(p)) {
            for f in &p.files {
                if let Some(other) = claimed.get(&(p.store.clone(), f.path.clone()))
                    && *other != p.key
                {
                    conflict = Some(format!("{} is also written by placement {other}", f.path));
                }
            }
        }
        match conflict {
            Some(msg) => {
                errors.insert(okey.clone(), msg);
                keep_last_placements(state, desired, okey);
            }
            None => {
                for p in places.iter().filter(|p| writes_paths(p)) {
                    for f in &p.files {
                        claimed.insert((p.store.clone(), f.path.clone()), p.key.clone());
                    }
                }
            }
        }
    }
}

/// Checks every file path of the desired placements with its state store's own rule
/// ([`StateStore::check_path`], the rule its `apply` enforces). An object with a refused path
/// gets the error (naming the store, the path and why) and keeps its previous placements, as a
/// collision does. `aggregatedYAML` placements are skipped: their files are not written as
/// paths (the Destination's aggregate file is).
fn check_store_paths(
    desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
    state: &State,
    stores: &BTreeMap<String, (String, Arc<dyn StateStore>)>,
    dests: &[DestView],
    errors: &mut BTreeMap<String, String>,
) {
    let mut refused: Vec<(String, String)> = Vec::new();
    for (okey, places) in desired.iter() {
        let problem = places
            .iter()
            .filter(|p| dest_mode(dests, &p.destination) != Some(FilepathMode::AggregatedYaml))
            .find_map(|p| {
                let (_, store) = stores.get(&p.store)?;
                p.files
                    .iter()
                    .find_map(|f| store.check_path(&f.path).err())
                    .map(|e| format!("{}: {e}", p.store))
            });
        if let Some(msg) = problem {
            refused.push((okey.clone(), msg));
        }
    }
    for (okey, msg) in refused {
        tracing::warn!(object = %okey, error = %msg, "output refused by its state store");
        errors.entry(okey.clone()).or_insert(msg);
        keep_last_placements(state, desired, okey);
    }
}

/// An object that fails its placement keeps what it placed last: its desired placements
/// become its record's (nothing of it is written or pruned this pass).
fn keep_last_placements(
    state: &State,
    desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
    okey: String,
) {
    let old = state
        .requests
        .get(&okey)
        .or_else(|| state.promises.get(&okey))
        .map(|r| r.placements.clone())
        .unwrap_or_default();
    desired.insert(okey, old);
}

/// Where a placement goes in its `aggregatedYAML` Destination's file (README, "Where promised
/// differs from Kratix"): Promise-level work (`dependencies/…`) before requests'
/// (`resources/…`), then by Promise, namespace, request, pipeline and group, read from the
/// placement key (`<destination>/dependencies/<promise>/<pipeline>/<id5>` or
/// `<destination>/resources/<namespace>/<promise>/<request>/<pipeline>/<id5>`). Kratix orders
/// by WorkPlacement name, which starts with the Promise name; there are no WorkPlacements here,
/// and this order stays the same across passes.
fn aggregate_order(key: &str) -> (u8, &str, &str, &str, &str) {
    let rest = key.split_once('/').map_or(key, |(_, r)| r);
    if let Some(r) = rest.strip_prefix("dependencies/") {
        let (promise, tail) = r.split_once('/').unwrap_or((r, ""));
        return (0, promise, "", "", tail);
    }
    let r = rest.strip_prefix("resources/").unwrap_or(rest);
    let mut it = r.splitn(4, '/');
    let namespace = it.next().unwrap_or_default();
    let promise = it.next().unwrap_or_default();
    let request = it.next().unwrap_or_default();
    (
        1,
        promise,
        namespace,
        request,
        it.next().unwrap_or_default(),
    )
}

fn group_id_from_id5(id5: &str) -> String {
    // Only the root group can be recognised from its id5; other ids stay partial.
    if id5 == &layout::group_id(layout::ROOT_DIRECTORY)[..5] {
        layout::group_id(layout::ROOT_DIRECTORY)
    } else {
        id5.to_string()
    }
}

fn rebuild_valid_promise(promise: Promise, raw: Value) -> ValidPromise {
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
        record.object.clone()
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
        object,
    })
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

#[cfg(test)]
mod tests {
    use super::aggregate_order;

    #[test]
    fn aggregate_order_is_dependencies_then_promise_namespace_request() {
        let mut keys = vec![
            "dev/resources/b-ns/alpha/r1/configure/5058f",
            "dev/resources/a-ns/zeta/r0/configure/5058f",
            "dev/resources/a-ns/alpha/r2/configure/5058f",
            "dev/dependencies/zeta/promise-configure/5058f",
            "dev/resources/a-ns/alpha/r1/second/5058f",
            "dev/resources/a-ns/alpha/r1/first/5058f",
            "dev/dependencies/alpha/5058f",
        ];
        keys.sort_by(|a, b| aggregate_order(a).cmp(&aggregate_order(b)));
        assert_eq!(
            keys,
            [
                "dev/dependencies/alpha/5058f",
                "dev/dependencies/zeta/promise-configure/5058f",
                "dev/resources/a-ns/alpha/r1/first/5058f",
                "dev/resources/a-ns/alpha/r1/second/5058f",
                "dev/resources/a-ns/alpha/r2/configure/5058f",
                "dev/resources/b-ns/alpha/r1/configure/5058f",
                "dev/resources/a-ns/zeta/r0/configure/5058f",
            ]
        );
    }
}
