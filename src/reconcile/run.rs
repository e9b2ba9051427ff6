//! Run stage: the jobs of a pass (one workflow each) on the pipeline runtime.
//!
//! Resource configure jobs run in parallel, at most `concurrency` at once and Promise-edit
//! fan-out at most `maxFanoutPerSecond` ([`spawn_jobs`]); their results are absorbed into the
//! records as they arrive ([`Engine::absorb_result`]: outputs go to the blob cache at once) and
//! journalled every [`PROGRESS_INTERVAL`], so a killed pass restarts with the finished work.
//! Promise and delete workflows use [`run_job`] directly, one at a time.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::placement::OutputRecord;
use super::report::{ObjectAction, ObjectReport, PassReport};
use super::{Engine, EngineError, Pass, records};
use crate::events;
use crate::model::Pipeline;
use crate::pipeline::{self, Action, Outcome, RunnerConfig, WorkflowInput, WorkflowResult};
use crate::scheduler::WorkflowSelector;
use crate::state::{FileRecord, HashText, ObjectRecord};
use crate::status::{
    ConditionStatus as CS, EventType, Phase, PipelineStatus, Text, cond, now_rfc3339,
};
use crate::validate::{ValidPromise, ValidRequest};

/// The inputs of one workflow run, owned so it can move into a task.
pub(super) struct Job {
    pub(super) key: String,
    /// Shared by every job of the Promise (a Promise document can be tens of KB).
    pub(super) promise: Arc<ValidPromise>,
    pub(super) request: Option<Arc<ValidRequest>>,
    pub(super) action: Action,
    pub(super) pipelines: Arc<[Pipeline]>,
    pub(super) object_yaml: String,
    pub(super) existing_status: Map<String, Value>,
    pub(super) promise_dir: Option<PathBuf>,
    /// Subject to `maxFanoutPerSecond` (a Promise edit re-running its requests).
    pub(super) rate_limited: bool,
    /// The object's `status.observedGeneration`, for log lines ([`crate::events`]).
    pub(super) generation: u64,
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

/// How long a finished workflow's result may wait before it is journalled in the middle of a
/// pass (one `fdatasync` per interval at most, whatever the number of results).
pub(super) const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Sleeps until `at`, or forever when it is `None` (a `select!` arm that never fires).
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Engine {
    /// What the pipeline API serves of other requests (README "Pipeline API"), set before
    /// workflows of `promises` run: the requests of those Promises and of the Promises they
    /// require (all a run may read), with their recorded status. Only those: at 10,000
    /// requests, a status text for every request before each run stage was 10–25 ms on the
    /// way from a webhook to its commit and tens of MB (docs/benchmarks.md). Each status is
    /// the record's own, shared ([`pipeline::kubeapi::status_text`]), but for requests
    /// `running(key)` names, whose records the stage changes: theirs are copied
    /// ([`pipeline::kubeapi::status_copy`]).
    pub(super) fn set_catalog<'a>(
        &self,
        all: &crate::validate::ValidConfig,
        promises: impl IntoIterator<Item = &'a str>,
        running: impl Fn(&str) -> bool,
    ) {
        let Some(api) = &self.runner.kube_api else {
            return;
        };
        let mut readable: BTreeSet<&str> = BTreeSet::new();
        for name in promises {
            if !readable.insert(name) {
                continue;
            }
            if let Some(p) = all.promises.iter().find(|p| p.name() == name) {
                readable.extend(
                    p.promise
                        .object
                        .spec
                        .required_promises
                        .iter()
                        .map(|r| r.name.as_str()),
                );
            }
        }
        let requests = &self.state.requests;
        api.0.set_catalog(pipeline::kubeapi::Catalog::build(
            &all.promises,
            all.requests
                .iter()
                .filter(|r| readable.contains(r.promise.as_str())),
            |key| {
                let status = &requests.get(key)?.status;
                Some(if running(key) {
                    pipeline::kubeapi::status_copy(status)
                } else {
                    pipeline::kubeapi::status_text(status)
                })
            },
        ));
    }

    /// Empties the pipeline API's catalog once the workflows (or health checks) that read it
    /// have run: no pipeline runs until the next [`Engine::set_catalog`].
    pub(super) fn clear_catalog(&self) {
        if let Some(api) = &self.runner.kube_api {
            api.0.set_catalog(pipeline::kubeapi::Catalog::default());
        }
    }

    /// Runs `jobs` (with their input hashes) and absorbs each result into its record as it
    /// arrives. Errors only when the blob cache or the state directory cannot be written.
    pub(super) async fn run_requests(
        &mut self,
        pass: &mut Pass<'_>,
        jobs: Vec<(HashText, Arc<Job>)>,
    ) -> Result<(), EngineError> {
        if !jobs.is_empty() {
            let running: HashSet<&str> = jobs.iter().map(|(_, j)| j.key.as_str()).collect();
            self.set_catalog(pass.all, jobs.iter().map(|(_, j)| j.promise.name()), |k| {
                running.contains(k)
            });
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
                    self.save_progress(&mut progress, &pass.promises_before, &pass.destinations_at_start);
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
            pass.report.pipelines_run += result.pipelines.len();
            pass.report.runs.push(RunTiming {
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
                record.object = (&r.object).into();
            }
            let absorbed = self.absorb_result(&mut record, hash, &result, false, &mut pass.report);
            record.shrink_to_fit();
            absorbed?;
            if record.completed {
                // The version applied (kratix-lifecycle.md §2.3): what health records are
                // weighed against (`crate::health`).
                record.status.promise_version = job.promise.version().map(crate::status::Text::new);
            }
            self.note_failure(&mut record);
            ran[i] = Some(ObjectReport::new(&record, ObjectAction::Ran));
            self.state.requests.insert(job.key.clone(), record);
            progress.requests.insert(job.key.clone());
            flush_at.get_or_insert_with(|| tokio::time::Instant::now() + PROGRESS_INTERVAL);
        }
        // Sized once: a list grown by doubling kept up to 0.9 MB of spare room at 10,000
        // requests through the write.
        pass.report
            .objects
            .reserve_exact(ran.iter().flatten().count());
        pass.report.objects.extend(ran.into_iter().flatten());
        Ok(())
    }

    /// Journals the records of `progress` (and Promise records changed since
    /// `promises_before`) in the middle of a pass, with the Destination records as they were
    /// before it (`destinations_before`), then empties `progress`. A failure is logged, not
    /// fatal: the end of the pass saves everything again.
    fn save_progress(
        &mut self,
        progress: &mut crate::state::Dirty,
        promises_before: &crate::state::Records,
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

    /// Turns a workflow result into the record: status, pipeline phases, cached outputs.
    /// Callers then give back the record's spare list capacity
    /// ([`ObjectRecord::shrink_to_fit`]).
    pub(super) fn absorb_result(
        &self,
        record: &mut ObjectRecord,
        hash: &HashText,
        result: &WorkflowResult,
        promise_level: bool,
        report: &mut PassReport,
    ) -> Result<(), EngineError> {
        let now = now_rfc3339();
        let total = record.status.pipelines.len().max(result.pipelines.len()) as u32;
        let mut outputs: BTreeMap<Text, OutputRecord> = record
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
                name: pr.name.as_str().into(),
                phase,
                message: message.into(),
                attempts: if next.is_some() { attempts + 1 } else { 0 },
                next_retry_at: next,
                last_transition_time: now.as_str().into(),
                images: pr
                    .images
                    .iter()
                    .map(|i| format!("{}: {}@{}", i.container, i.image, i.digest))
                    .collect(),
            });
            if pr.outcome == Outcome::Succeeded {
                let mut files = Vec::with_capacity(pr.outputs.len());
                for f in &pr.outputs {
                    let sha = self.dir.put_blob(&f.bytes)?;
                    files.push(FileRecord {
                        path: f.path.clone(),
                        sha256: sha.into(),
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
                let pipeline = Text::new(&pr.name);
                outputs.insert(
                    pipeline.clone(),
                    OutputRecord {
                        pipeline,
                        files,
                        selectors,
                        health: Some(
                            pr.outputs
                                .iter()
                                .any(|f| crate::state::may_declare_health(&f.path, &f.bytes)),
                        ),
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
        // The web console's log tail of this run (README "Web console").
        if !result.pipelines.is_empty() {
            let key = match &record.status.object.namespace {
                Some(ns) => crate::model::request_key(
                    &record.status.promise,
                    ns,
                    &record.status.object.name,
                ),
                None => crate::model::promise_key(&record.status.object.name),
            };
            crate::web::records::save_logs(self.dir.root(), &key, &result.pipelines);
        }
        record.input_hash = hash.clone();
        record.status.fields = crate::status::fields_from(result.merged_status.clone());
        if let Some(m) = record.status.fields.get("message").and_then(Value::as_str) {
            record.status.message = m.to_string();
        }
        record.status.pipelines = phases.into();
        record.status.workflows = total;
        if let Some((name, err)) = failed {
            record.completed = false;
            record.status.workflows_failed = 1;
            record.status.workflows_succeeded = 0;
            let failed = format!("A Configure Pipeline has failed: {name}");
            record.status.set(
                cond::CONFIGURE_WORKFLOW_COMPLETED,
                CS::False,
                "ConfigureWorkflowFailed",
                &failed,
            );
            record.status.event(
                EventType::Warning,
                events::CONFIGURE_WORKFLOW_FAILED,
                &failed,
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
            let note = format!(
                "Pipeline {name} suspended the workflow: {}",
                record.status.message
            );
            record
                .status
                .event(EventType::Normal, events::WORKFLOW_SUSPENDED, &note);
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
        records::set_completed(
            &mut record.status,
            result.pipelines.len() as u32,
            default_msg,
        );
        Ok(())
    }

    /// Backoff bookkeeping after a run: failures double the delay, success resets it.
    pub(super) fn note_failure(&self, record: &mut ObjectRecord) {
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
}

/// One `Arc` per Promise for the jobs of a pass: its document and its resource configure
/// pipelines (10,000 jobs would otherwise hold 10,000 copies).
#[derive(Default)]
pub(super) struct SharedJobInputs {
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

/// The shared document of Promise `p` for a job.
pub(super) fn shared_promise(shared: &mut SharedJobInputs, p: &ValidPromise) -> Arc<ValidPromise> {
    shared_entry(shared, p).0.clone()
}

/// The shared resource configure pipelines of Promise `p` for a job.
pub(super) fn shared_pipelines(shared: &mut SharedJobInputs, p: &ValidPromise) -> Arc<[Pipeline]> {
    shared_entry(shared, p).1.clone()
}

/// Runs one job's workflow with the runtime in `runner`, in a `workflow` log span with
/// Kratix's log keys; a failure is logged once with its pipeline, container and stderr tail.
pub(super) async fn run_job(runner: &RunnerConfig, job: &Job) -> WorkflowResult {
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
    let (controller, rr) = crate::status::log_keys(promise, namespace, object_name);
    let resource_request = rr.as_deref();
    let generation = job.generation;
    let span = tracing::info_span!(
        "workflow",
        controller,
        promise,
        resourceRequest = resource_request,
        namespace,
        object_name,
        generation,
        workflow = workflow.as_str(),
    );
    use tracing::Instrument;
    async {
        tracing::debug!("workflow started");
        statestores::crash::point("pipeline");
        let result = pipeline::run_workflow(runner, &input).await;
        match failed_step(&result) {
            Some((pipeline, container, e)) => {
                // One line for the error; the stderr tail in its own field (the report and
                // the status show it under the object).
                let e = e.to_string();
                let (first, tail) = e.split_once('\n').unwrap_or((&e, ""));
                tracing::warn!(
                    controller,
                    promise,
                    resourceRequest = resource_request,
                    namespace,
                    object_name,
                    generation,
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
                | E::EnvFromUnsupported { container, .. }
                | E::ImageNoCommand { container, .. }
                | E::ImagePull { container, .. } => Some(container.as_str()),
                E::JobFailed { container, .. } | E::JobTimeout { container, .. } => {
                    container.as_deref()
                }
                _ => None,
            };
            Some((p.name.as_str(), container, error))
        }
        _ => None,
    })
}

/// Starts `jobs`, at most `limit` at a time and rate-limited ones at most `per_second`, and
/// sends `(index, result and seconds)` for each as it finishes; `None` for a job that never
/// started because `cancel` was set. A job whose task panicked reports a failed pipeline.
///
/// Jobs start in order. A job's task is spawned only once it holds one of the `limit`
/// permits: a task owns its whole future (the workflow run's state machine, several KB in a
/// release build), so spawning all jobs of a 10,000-request pass up front held 10,000 of
/// them until the pass ended (most of the daemon's peak memory; docs/benchmarks.md,
/// "Memory").
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
    let runner = runner.clone();
    let cancel = cancel.clone();
    tokio::spawn(async move {
        for (i, job) in jobs.into_iter().enumerate() {
            let permit = sem
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore never closed");
            let runner = runner.clone();
            let cancel = cancel.clone();
            let next_slot = next_slot.clone();
            let work = async move {
                // Released when the job ends, also when its task panics.
                let _permit = permit;
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
            let handle = tokio::spawn(work);
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = handle.await.unwrap_or_else(|e| Some((panicked(&e), 0.0)));
                let _ = tx.send((i, outcome));
            });
        }
    });
    rx
}

/// The result of a job whose task panicked: one failed pipeline saying so.
fn panicked(e: &tokio::task::JoinError) -> WorkflowResult {
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
            images: Vec::new(),
        }],
        merged_status: Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs waiting for a concurrency permit have no task (and no future) yet: 100 queued
    /// jobs at a limit of 2 are a handful of tasks, not 100 (docs/benchmarks.md, "Memory").
    #[tokio::test(flavor = "current_thread")]
    async fn queued_jobs_hold_no_task() {
        let promise: crate::model::Promise = serde_json::from_value(serde_json::json!({
            "apiVersion": "platform.kratix.io/v1alpha1",
            "kind": "Promise",
            "metadata": {"name": "p"},
            "spec": {}
        }))
        .expect("Promise");
        let promise = Arc::new(super::super::delete::rebuild_valid_promise(
            promise,
            Value::Null,
        ));
        let jobs: Vec<Arc<Job>> = (0..100)
            .map(|i| {
                Arc::new(Job {
                    key: format!("p/default/r{i}"),
                    promise: promise.clone(),
                    request: None,
                    action: Action::Configure,
                    pipelines: Arc::from(Vec::new()),
                    object_yaml: String::new(),
                    existing_status: Map::new(),
                    promise_dir: None,
                    // One start per second: the second job holds its permit for a second,
                    // the third for two, so no permit comes free while the test looks.
                    rate_limited: true,
                    generation: 0,
                })
            })
            .collect();
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        // Cancelled: a job that gets its slot returns at once without running anything.
        let cancel = Arc::new(AtomicBool::new(true));
        let mut results = spawn_jobs(&Arc::default(), jobs, 2, 1, &cancel);
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let alive = metrics.num_alive_tasks() - before;
        assert!(
            alive < 50,
            "{alive} tasks for 100 jobs at a concurrency of 2"
        );
        // Every job still reports, in order of its slot.
        let mut seen = 0;
        while let Some((i, outcome)) = results.recv().await {
            assert!(outcome.is_none(), "job {i} was cancelled");
            seen += 1;
            if seen == 3 {
                break;
            }
        }
    }
}
