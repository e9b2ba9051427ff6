//! The Kubernetes Job runtime (`runtime: kubernetes`, or the Promise annotation
//! `promised.dev/runtime: kubernetes`): each Pipeline runs as one Kubernetes Job, built like
//! Kratix's (Kratix: `api/v1alpha1/pipeline_factory.go`), and its output comes back through
//! the Job's log. README "Kubernetes Job runtime".
//!
//! One Pipeline (`run_pipeline`):
//! 1. [`job_objects`] builds the input Secret (`object.yaml`, with the status of the
//!    Pipelines before it) and the Job, named `kratix-<promise>-<object>-<pipeline>-<hash>`
//!    with a suffix from a hash of both, so the same inputs always give the same name.
//! 2. Create the Secret (a 409 is fine: same name, same content), create the Job; a 409 means
//!    the Job exists already (a daemon restart while it ran): it is **adopted**, not started
//!    again.
//! 3. Watch the Job (GET, then a watch on `metadata.name`, GET again whenever a watch ends)
//!    until its `Complete` or `Failed` condition.
//! 4. List its pod (`job-name=<name>`); record the image digest of each Pipeline container
//!    (`imageID`).
//! 5. Complete: read the `promised-output` container's log (`limitBytes` from the output
//!    cap), unpack the archive into fresh contract directories ([`transfer`]) and run the
//!    host runtime's own post-processing (workflow-control, output checks and cap,
//!    destination selectors, status). Failed: read the last lines of the failed container's
//!    log into [`Error::JobFailed`] (or [`Error::JobTimeout`] for `DeadlineExceeded`).
//! 6. Delete the Job (propagationPolicy Background) and the Secret.
//!
//! Every call is listed in [`crate::cluster::access::JOB_RUNTIME`] (the Role in `deploy/`).
//! Files: this one (the runtime's settings and client, the entry point), `manifest.rs` (the
//! pure builder), `job.rs` (the API calls), `transfer.rs` (the `promised adapter`
//! commands' input copy and output archive).

mod job;
pub mod manifest;
pub mod transfer;

use std::sync::Arc;

pub use manifest::{JobObjects, JobSettings, job_name, job_objects, kratix_spec_hash};

use super::{Error, Outcome, PipelineResult, RunnerConfig, WorkflowInput};
use crate::cluster::KubernetesSettings;
use crate::model::Pipeline;

/// The Kubernetes Job runtime of a runner: the `kubernetes:` settings and an API client,
/// made on first use (`kube::Config::infer`: in a pod its service account, else
/// `$KUBECONFIG`) or given ([`KubeRuntime::with_client`], e.g. a `tower_test` mock or a
/// client of `http://127.0.0.1:<port>`). Clones share the client. Two are equal when they
/// have the same settings and share the client.
#[derive(Clone)]
pub struct KubeRuntime {
    /// The daemon config's `kubernetes:`.
    pub settings: KubernetesSettings,
    client: Arc<tokio::sync::OnceCell<kube::Client>>,
}

impl KubeRuntime {
    /// A runtime whose client is made on first use from the environment.
    pub fn new(settings: KubernetesSettings) -> KubeRuntime {
        KubeRuntime {
            settings,
            client: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    /// A runtime with this client (its default namespace is used unless
    /// `settings.namespace` is set).
    pub fn with_client(settings: KubernetesSettings, client: kube::Client) -> KubeRuntime {
        KubeRuntime {
            settings,
            client: Arc::new(tokio::sync::OnceCell::new_with(Some(client))),
        }
    }

    /// The client and the namespace of Jobs and Secrets (`kubernetes.namespace`, else the
    /// client's default: the pod's namespace, the kubeconfig context's, or `default`).
    ///
    /// Errors: no API configuration could be found (the message says why); retried on the
    /// next call.
    pub async fn client(&self) -> Result<(kube::Client, String), String> {
        let ns = self.settings.namespace.as_deref();
        let client = self
            .client
            .get_or_try_init(|| crate::cluster::client(ns))
            .await?
            .clone();
        let ns = ns
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| client.default_namespace().to_string());
        Ok((client, ns))
    }
}

impl std::fmt::Debug for KubeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeRuntime")
            .field("settings", &self.settings)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

impl PartialEq for KubeRuntime {
    fn eq(&self, other: &KubeRuntime) -> bool {
        self.settings == other.settings && Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Eq for KubeRuntime {}

/// Runs Pipeline `p` as a Kubernetes Job (module docs) with `object_yaml` as its input. Never
/// panics; every problem ends up in the result's outcome (no API: [`Error::KubeUnavailable`];
/// a failed call: [`Error::KubeApi`]; a failed Job: [`Error::JobFailed`],
/// [`Error::JobTimeout`]; output: [`Error::JobOutput`] and the host runtime's output errors).
pub(super) async fn run_pipeline(
    cfg: &RunnerConfig,
    input: &WorkflowInput<'_>,
    object_yaml: &str,
    p: &Pipeline,
) -> PipelineResult {
    let mut res = PipelineResult {
        name: p.metadata.name.clone(),
        outcome: Outcome::Succeeded,
        outputs: Vec::new(),
        selectors: Vec::new(),
        status: None,
        logs: Vec::new(),
        images: Vec::new(),
    };
    if let Err(error) = run_inner(cfg, input, object_yaml, p, &mut res).await {
        res.outcome = Outcome::Failed { error };
        res.outputs.clear();
        res.selectors.clear();
    }
    res
}

async fn run_inner(
    cfg: &RunnerConfig,
    input: &WorkflowInput<'_>,
    object_yaml: &str,
    p: &Pipeline,
    res: &mut PipelineResult,
) -> Result<(), Error> {
    let unavailable = |message: String| Error::KubeUnavailable {
        promise: input.promise_name.clone(),
        pipeline: p.metadata.name.clone(),
        message,
    };
    let rt = cfg
        .kubernetes
        .as_ref()
        .ok_or_else(|| unavailable("this runner has no Kubernetes settings".into()))?;
    let (client, namespace) = rt.client().await.map_err(unavailable)?;
    let settings = JobSettings {
        namespace,
        adapter_image: rt.settings.adapter_image.clone(),
        adapter_pull_secret: rt.settings.adapter_pull_secret.clone(),
        job_ttl: rt.settings.job_ttl,
        timeout: cfg.timeout,
        output_cap_bytes: cfg.output_cap_bytes,
    };
    let objects = job_objects(input, p, object_yaml, &settings)?;
    let calls = job::Calls {
        client,
        namespace: settings.namespace.clone(),
        name: objects.name.clone(),
        promise: input.promise_name.clone(),
        pipeline: p.metadata.name.clone(),
    };
    let log = calls.run(&objects, cfg, p, res).await?;
    let dirs = super::contract::PipelineDirs::create(&cfg.work_dir, object_yaml)?;
    transfer::unpack(
        &log,
        dirs.root(),
        cfg.output_cap_bytes,
        job::log_limit(cfg.output_cap_bytes),
        &p.metadata.name,
        &objects.name,
    )?;
    super::run::finish_pipeline(cfg, input, &dirs, res)
}
