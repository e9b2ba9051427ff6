//! One workflow of one object: what to run ([`WorkflowInput`], built from a validated Promise
//! or request), how it ended ([`WorkflowResult`], one [`PipelineResult`] per Pipeline that
//! ran), and the runner ([`run_workflow`]): Pipelines in order, each seeing the `status.yaml`
//! of those before it in `object.yaml` ([`with_status`]), stopping at the first that fails,
//! is suspended or asks to be retried (Kratix: `lib/workflow/reconciler.go`). Delete
//! workflows run only their first Pipeline.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use super::run::run_pipeline;
use super::{
    Action, DestinationSelector, Error, ObjectIdentity, OutputFile, RunnerConfig, SandboxMode,
    WorkflowType, merge_status, sandbox,
};
use crate::cluster::Runtime;
use crate::model::Pipeline;
use crate::validate::{ValidPromise, ValidRequest};

/// What to run: one workflow of one object.
#[derive(Debug, Clone)]
pub struct WorkflowInput<'a> {
    /// Promise or resource workflow.
    pub workflow_type: WorkflowType,
    /// Configure or delete.
    pub action: Action,
    /// `KRATIX_PROMISE_NAME`.
    pub promise_name: String,
    /// `KRATIX_CRD_PLURAL` for resource workflows.
    pub crd_plural: String,
    /// `KRATIX_OBJECT_*` for resource workflows.
    pub object: ObjectIdentity,
    /// `/kratix/input/object.yaml`. Each Pipeline gets it with its `status` merged with
    /// [`WorkflowInput::existing_status`] and the `status.yaml` of the Pipelines before it
    /// ([`with_status`]); byte for byte when that adds nothing.
    pub object_yaml: String,
    /// Host folder of the Promise's `promise.yaml`, mounted read-only at `/promise`.
    pub promise_dir: Option<PathBuf>,
    /// The Promise's `workflows.config.pipelineNamespace`: the pod namespace `fieldRef`
    /// sees ([`env::PodMeta`](super::env::PodMeta)).
    pub pipeline_namespace: Option<String>,
    /// The Pipelines of this workflow and action.
    pub pipelines: &'a [Pipeline],
    /// The object's current `status` (merged with each Pipeline's `status.yaml`, and shown to
    /// each Pipeline in `object.yaml`).
    pub existing_status: Map<String, Value>,
    /// The Promise's `promised.dev/runtime` annotation as written (`kubernetes` or `process`
    /// override [`RunnerConfig::runtime`]; another value fails the workflow with
    /// [`Error::InvalidRuntime`]).
    pub runtime_annotation: Option<String>,
    /// Kratix's hash of the Promise (`lib/hash.ComputeHashForResource`: hex md5 of its `spec`
    /// as Go's `json.Marshal` writes it): part of the `kratix.io/hash` label of its Jobs on the
    /// Kubernetes Job runtime ([`super::kubernetes::kratix_spec_hash`]).
    pub promise_hash: String,
}

impl<'a> WorkflowInput<'a> {
    /// The promise workflow of `p`: `object.yaml` is the Promise document as written.
    pub fn for_promise(p: &'a ValidPromise, action: Action) -> Self {
        let wf = &p.promise.object.spec.workflows.promise;
        WorkflowInput {
            workflow_type: WorkflowType::Promise,
            action,
            promise_name: p.name().to_string(),
            crd_plural: "promises".into(),
            object: ObjectIdentity {
                kind: "Promise".into(),
                group: crate::model::KRATIX_GROUP.into(),
                version: "v1alpha1".into(),
                name: p.name().to_string(),
                namespace: String::new(),
            },
            object_yaml: crate::validate::to_yaml(&p.promise.raw),
            promise_dir: None,
            pipeline_namespace: pipeline_namespace(p),
            pipelines: match action {
                Action::Configure => &wf.configure,
                Action::Delete => &wf.delete,
            },
            existing_status: Map::new(),
            runtime_annotation: runtime_annotation(p),
            promise_hash: super::kubernetes::kratix_spec_hash(&p.promise.raw),
        }
    }

    /// The resource workflow of `p` for request `r` (`object.yaml` = [`ValidRequest::to_yaml`]).
    pub fn for_request(p: &'a ValidPromise, r: &ValidRequest, action: Action) -> Self {
        let wf = &p.promise.object.spec.workflows.resource;
        let api = p.api.as_ref();
        let object = r.object();
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        WorkflowInput {
            workflow_type: WorkflowType::Resource,
            action,
            promise_name: p.name().to_string(),
            crd_plural: api.map(|a| a.plural.clone()).unwrap_or_default(),
            object: ObjectIdentity {
                kind: r.id.kind.clone(),
                group: group.to_string(),
                version: version.to_string(),
                name: r.name().to_string(),
                namespace: r.namespace().to_string(),
            },
            // `ValidRequest::to_yaml` of the object read once above.
            object_yaml: crate::validate::to_yaml(&object),
            promise_dir: None,
            pipeline_namespace: pipeline_namespace(p),
            pipelines: match action {
                Action::Configure => &wf.configure,
                Action::Delete => &wf.delete,
            },
            existing_status: object
                .get("status")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            runtime_annotation: runtime_annotation(p),
            promise_hash: super::kubernetes::kratix_spec_hash(&p.promise.raw),
        }
    }
}

fn runtime_annotation(p: &ValidPromise) -> Option<String> {
    p.promise
        .object
        .metadata
        .annotations
        .get(crate::cluster::settings::RUNTIME_ANNOTATION)
        .cloned()
}

fn pipeline_namespace(p: &ValidPromise) -> Option<String> {
    p.pipeline_namespace()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// How one Pipeline ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every container exited 0 and the metadata was valid; output may be scheduled.
    Succeeded,
    /// The Pipeline failed; later Pipelines did not run.
    Failed {
        /// Why.
        error: Error,
    },
    /// `workflow-control.yaml` said `suspend: true`; output is not scheduled, later Pipelines
    /// did not run.
    Suspended {
        /// `message` from the file.
        message: String,
    },
    /// `workflow-control.yaml` set `retryAfter`; output is not scheduled; run this Pipeline
    /// again after `after`.
    Retry {
        /// The delay.
        after: Duration,
        /// `message` from the file.
        message: String,
    },
}

/// Captured output of one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerLog {
    /// Container name.
    pub name: String,
    /// stdout (the last [`RunnerConfig::log_cap_bytes`] bytes).
    pub stdout: String,
    /// stderr (the last [`RunnerConfig::log_cap_bytes`] bytes).
    pub stderr: String,
    /// Exit code; `None` when killed or never started.
    pub exit_code: Option<i32>,
}

/// The result of one Pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineResult {
    /// Pipeline name.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Files of `/kratix/output` (empty unless [`Outcome::Succeeded`] in a configure workflow).
    pub outputs: Vec<OutputFile>,
    /// Parsed `destination-selectors.yaml` (configure workflows only).
    pub selectors: Vec<DestinationSelector>,
    /// Parsed `status.yaml`, if written.
    pub status: Option<Map<String, Value>>,
    /// One entry per container that ran.
    pub logs: Vec<ContainerLog>,
    /// The image each container ran from, when the image runtime ran it.
    pub images: Vec<RanImage>,
}

/// A container the image runtime ran, and the image manifest it ran (provenance: status and
/// the output commit name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RanImage {
    /// Container name.
    pub container: String,
    /// The image as the Pipeline names it.
    pub image: String,
    /// `sha256:…` of the platform manifest that ran.
    pub digest: String,
}

/// The result of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowResult {
    /// Pipelines that ran, in order (stops after the first failure or suspension).
    pub pipelines: Vec<PipelineResult>,
    /// [`WorkflowInput::existing_status`] with every Pipeline's `status.yaml` merged in
    /// ([`merge_status`]).
    pub merged_status: Map<String, Value>,
}

impl WorkflowResult {
    /// The first failure, if any.
    pub fn error(&self) -> Option<&Error> {
        self.pipelines.iter().find_map(|p| match &p.outcome {
            Outcome::Failed { error } => Some(error),
            _ => None,
        })
    }

    /// True when every Pipeline succeeded.
    pub fn succeeded(&self) -> bool {
        self.pipelines
            .iter()
            .all(|p| p.outcome == Outcome::Succeeded)
    }
}

/// Runs a workflow on its runtime: the Promise's `promised.dev/runtime` annotation, else
/// [`RunnerConfig::runtime`] (the process runtime, see the module docs, or the Kubernetes Job
/// runtime, [`super::kubernetes`]). Never panics; every problem ends up in a
/// [`PipelineResult::outcome`]. A missing sandbox (process runtime) fails the first Pipeline
/// with [`Error::SandboxUnavailable`], an invalid annotation with [`Error::InvalidRuntime`].
pub async fn run_workflow(cfg: &RunnerConfig, input: &WorkflowInput<'_>) -> WorkflowResult {
    let mut result = WorkflowResult {
        pipelines: Vec::new(),
        merged_status: input.existing_status.clone(),
    };
    let pipelines: &[Pipeline] = match input.action {
        Action::Configure => input.pipelines,
        Action::Delete => &input.pipelines[..input.pipelines.len().min(1)],
    };
    if pipelines.is_empty() {
        return result;
    }
    let failed = |error| PipelineResult {
        name: pipelines[0].metadata.name.clone(),
        outcome: Outcome::Failed { error },
        outputs: Vec::new(),
        selectors: Vec::new(),
        status: None,
        logs: Vec::new(),
        images: Vec::new(),
    };
    let runtime = match input
        .runtime_annotation
        .as_deref()
        .map(Runtime::from_annotation)
    {
        None => cfg.runtime,
        Some(Ok(r)) => r,
        Some(Err(value)) => {
            result.pipelines.push(failed(Error::InvalidRuntime {
                promise: input.promise_name.clone(),
                value,
            }));
            return result;
        }
    };
    if runtime == Runtime::Process
        && cfg.sandbox == SandboxMode::Bwrap
        && let Err(error) = sandbox::probe(&cfg.bwrap).await
    {
        result.pipelines.push(failed(error));
        return result;
    }
    let layout = sandbox::HostLayout::current();
    // The pipeline API (process runtime, resource workflows): status published during the
    // workflow is laid over `promised status` until the record has it.
    let api_key = match (&cfg.kube_api, runtime, input.workflow_type) {
        (Some(hub), Runtime::Process, WorkflowType::Resource) => {
            let key = crate::model::request_key(
                &input.promise_name,
                &input.object.namespace,
                &input.object.name,
            );
            hub.0.workflow_started(&key);
            Some((hub, key))
        }
        _ => None,
    };
    for p in pipelines {
        // The only channel between Pipelines is the object's status, re-read into
        // object.yaml (kratix-contract.md §2.2, §2.4).
        let object_yaml = with_status(&input.object_yaml, &result.merged_status);
        let r = match runtime {
            Runtime::Process => {
                run_pipeline(
                    cfg,
                    &layout,
                    input,
                    &object_yaml,
                    p,
                    &mut result.merged_status,
                )
                .await
            }
            Runtime::Kubernetes => {
                super::kubernetes::run_pipeline(cfg, input, &object_yaml, p).await
            }
        };
        if let Some(s) = &r.status
            && matches!(
                r.outcome,
                Outcome::Succeeded | Outcome::Suspended { .. } | Outcome::Retry { .. }
            )
        {
            result.merged_status = merge_status(&result.merged_status, s, input.workflow_type);
        }
        let stop = r.outcome != Outcome::Succeeded;
        result.pipelines.push(r);
        if stop {
            break;
        }
    }
    if let Some((hub, key)) = api_key {
        if input.action == Action::Delete {
            // The request is going: nothing to show its status for.
            hub.0.workflow_started(&key);
        } else {
            hub.0.workflow_finished(&key, &result.merged_status);
        }
    }
    result
}

/// `object_yaml` with `status` set to its own `status` merged with `status` (shallow, and
/// `conditions` by type, as Kratix's status-writer merges; kratix-contract.md §2.6), as
/// deterministic YAML with sorted keys. Unchanged when that adds nothing, or when
/// `object_yaml` is not a single mapping.
pub fn with_status(object_yaml: &str, status: &Map<String, Value>) -> String {
    if status.is_empty() {
        return object_yaml.to_string();
    }
    let mut doc = match crate::config::parse_yaml_stream(object_yaml).as_deref() {
        Ok([doc @ Value::Object(_)]) => doc.clone(),
        _ => return object_yaml.to_string(),
    };
    let obj = doc.as_object_mut().expect("matched an object");
    let own = obj
        .get("status")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let merged = merge_status(&own, status, WorkflowType::Resource);
    if merged == own {
        return object_yaml.to_string();
    }
    obj.insert("status".into(), Value::Object(merged));
    crate::validate::to_yaml(&doc)
}
