//! The pipeline runner: Kratix workflows run as sandboxed host processes, with the exact Kratix
//! pipeline contract (kratix-contract.md §2).
//!
//! A workflow is a list of [`Pipeline`]s, run in order ([`run_workflow`]); each Pipeline gets
//! fresh `/kratix/input` (read-only, holding `object.yaml`), `/kratix/output` and
//! `/kratix/metadata` directories shared by its containers, which run one after the other with
//! the `KRATIX_*` environment ([`contract`]). After the containers, the runner does what
//! Kratix's `work-writer` and `status-writer` do: reads `workflow-control.yaml`, collects the
//! output ([`output`]), parses `destination-selectors.yaml` and `status.yaml` ([`metadata`]).
//! Execution stops at the first failed or suspended Pipeline, as in Kratix
//! (`lib/workflow/reconciler.go`). Delete workflows run only their first Pipeline and ignore
//! its output and selectors.
//!
//! ## Process runtime
//! Each container's `command` + `args` runs on the host inside bubblewrap ([`sandbox`]), with
//! `/kratix/*` at their contract paths, host `/usr` and the needed part of `/etc`
//! ([`sandbox::ETC_ENTRIES`]) read-only, the state directory and secrets masked
//! ([`RunnerConfig::hidden`]), a private `/tmp`, no network unless allowed, and a timeout that
//! kills the whole process group ([`runtime`]).
//! - **Scripts beside `promise.yaml`:** the folder holding a Promise's `promise.yaml` in the
//!   config repo is mounted read-only at `/promise` ([`sandbox::PROMISE_MOUNT`]), so a
//!   container with `command: ["/promise/pipeline/configure"]` runs `pipeline/configure`
//!   from that folder; its `image` is then only a label (no image is pulled). The config
//!   loader reads every `*.yaml`/`*.yml` file of the repo as config, so templates kept beside
//!   the scripts should use another extension (e.g. `deployment.yaml.tmpl`), as in
//!   `testdata/pipeline-repo/promises/app/`.
//! - **Image overrides:** [`RunnerConfig::image_overrides`] maps an exact image reference to a
//!   host command and extra mounts (e.g. `/tmp/transfer` → the image's assets). A container's
//!   own `command` still wins (Kubernetes semantics: `command` replaces the entrypoint); a
//!   container without `command` uses the override's. `args` are always the container's.
//! - **`env[].valueFrom`:** `fieldRef` (the pod Kratix would run), `secretKeyRef` (allowed
//!   pipeline Secrets) and `configMapKeyRef`, resolved for every container before the first
//!   starts ([`mod@env`]); bwrap gets the environment as its own, never on its command line.
//! - **Network:** off, unless [`RunnerConfig::allow_network`], the matching override's
//!   `network`, or the Pipeline annotation `promised.dev/network: "true"` allows it.
//! - **`sandbox: none`** ([`SandboxMode::None`]): runs the command directly (own process group,
//!   same timeout; working directory `workingDir` or the run directory), for machines without
//!   user namespaces. There is no mount namespace, so the contract directories are *not* at `/kratix/...`: the process gets `KRATIX_INPUT_DIR`,
//!   `KRATIX_OUTPUT_DIR`, `KRATIX_METADATA_DIR` and `KRATIX_PROMISE_DIR` (host paths), a
//!   leading `/promise/` in `command[0]` is rewritten to the Promise folder, and image
//!   override mounts are refused. Scripts must honour these variables. No isolation at all.

pub mod contract;
pub mod env;
pub mod metadata;
pub mod output;
pub mod rundir;
pub mod runtime;
pub mod sandbox;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use metadata::{DestinationSelector, WorkflowControl, merge_status};
pub use output::OutputFile;

use crate::model::Pipeline;
use crate::validate::{ValidPromise, ValidRequest};

/// Annotation on a Pipeline that lets it use the host network on the process runtime.
pub const NETWORK_ANNOTATION: &str = "promised.dev/network";

/// Everything that can go wrong in one Pipeline. Each error concerns one request (or Promise)
/// only; the daemon keeps going.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A container exited non-zero (Kratix: the Job fails, `ConfigureWorkflowFailed`).
    #[error(
        "pipeline {pipeline:?} container {container:?} failed ({}){sandbox_note}; last lines of stderr:\n{stderr_tail}",
        exit_text(*exit_code, *signal)
    )]
    ContainerFailed {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// Exit code, `None` when killed by a signal.
        exit_code: Option<i32>,
        /// Terminating signal, if any.
        signal: Option<i32>,
        /// Last lines of the container's stderr.
        stderr_tail: String,
        /// What the sandbox forbids (e.g. `; sandbox: network off, read-only root ...`), to
        /// explain errors such as `Read-only file system` or `Network is unreachable`;
        /// before it, why the command could not start when promised can tell (`: <command>:
        /// the script's first line ends with a carriage return ...`).
        sandbox_note: String,
    },
    /// A container ran longer than [`RunnerConfig::timeout`]; its process group was killed.
    #[error(
        "pipeline {pipeline:?} container {container:?} timed out after {after:?} and was killed with its process group; last lines of stderr:\n{stderr_tail}"
    )]
    Timeout {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// The limit that was hit.
        after: Duration,
        /// Last lines of stderr.
        stderr_tail: String,
    },
    /// The container could not be started at all (missing program, bad working directory).
    #[error("pipeline {pipeline:?} container {container:?} could not start: {message}")]
    SpawnFailed {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// OS error.
        message: String,
    },
    /// bwrap is missing or cannot create namespaces.
    #[error("no process sandbox available: {hint}")]
    SandboxUnavailable {
        /// Why, and how to fix it: install bubblewrap (`apt-get install bubblewrap`) or set
        /// `sandbox: none`.
        hint: String,
    },
    /// Image-override mounts need the bwrap sandbox.
    #[error(
        "image {image:?} needs mounts, which `sandbox: none` cannot provide; use `sandbox: bwrap`"
    )]
    MountsNeedSandbox {
        /// The image reference.
        image: String,
    },
    /// An image-override mount would show a pipeline the state directory or a secret.
    #[error(
        "image {image:?} mounts {host}, which would expose {hidden} (the state directory or a secret) to pipelines; mount something else"
    )]
    MountExposesSecret {
        /// The image reference.
        image: String,
        /// The mount's host path.
        host: String,
        /// The hidden path it is or contains.
        hidden: String,
    },
    /// A container has no `command` and its image has no override.
    #[error(
        "pipeline {pipeline:?} container {container:?} has no command and image {image:?} has no image override: the process runtime cannot run an image entrypoint"
    )]
    NoCommand {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// Image reference.
        image: String,
    },
    /// An `env[].valueFrom` that cannot be resolved: a config problem `validate` reports
    /// (`config`), or a Secret/ConfigMap file missing on this host. Never holds a value.
    #[error(
        "Promise {promise:?} pipeline {pipeline:?} container {container:?}: env {variable:?}: {reason}"
    )]
    EnvValueFrom {
        /// Promise name.
        promise: String,
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// Variable name.
        variable: String,
        /// Why (names the Secret/ConfigMap and key, never a value).
        reason: String,
        /// A config problem (unsupported source, Secret not allowed for the Promise, source
        /// not configured) rather than a missing file.
        config: bool,
    },
    /// `envFrom` needs Kubernetes Secrets/ConfigMaps.
    #[error(
        "pipeline {pipeline:?} container {container:?} uses envFrom, which the process runtime does not support"
    )]
    EnvFromUnsupported {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
    },
    /// An output entry that is not a safe regular file.
    #[error("unsafe output {path:?}: {reason}")]
    UnsafeOutput {
        /// Path relative to `/kratix/output` (lossy for non-UTF-8 names).
        path: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The Pipeline's output is larger than [`RunnerConfig::output_cap_bytes`].
    #[error("output is larger than the cap: at least {bytes} bytes, cap {cap} bytes")]
    OutputTooLarge {
        /// Bytes seen so far.
        bytes: u64,
        /// The cap.
        cap: u64,
    },
    /// `destination-selectors.yaml` is invalid (kratix-contract.md §2.5).
    #[error("invalid /kratix/metadata/destination-selectors.yaml: {reason}")]
    InvalidSelectors {
        /// Which rule was broken.
        reason: String,
    },
    /// `status.yaml` is invalid or sets `kratix` (kratix-contract.md §2.6).
    #[error("invalid /kratix/metadata/status.yaml: {reason}")]
    InvalidStatus {
        /// Which rule was broken.
        reason: String,
    },
    /// `workflow-control.yaml` is invalid (kratix-contract.md §2.7).
    #[error("invalid /kratix/metadata/workflow-control.yaml: {reason}")]
    InvalidWorkflowControl {
        /// Which rule was broken.
        reason: String,
    },
    /// Host I/O failed (creating run directories, reading output).
    #[error("{context}: {message}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        message: String,
    },
}

impl Error {
    /// A problem of the Promise or daemon config that validation reports (`valueFrom` that
    /// cannot be resolved by configuration, `envFrom`), found before the Pipeline's first
    /// container started. A delete workflow is not blocked by one (see
    /// `crate::reconcile`).
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::EnvValueFrom { config: true, .. } | Error::EnvFromUnsupported { .. }
        )
    }
}

/// The file on the host that a container's command runs: `/promise/...` in the Promise's
/// folder, a path under an image override's mount in the mount's `host`, another absolute
/// path as is, a bare name looked up in the sandbox's `PATH`.
fn host_command_path(
    command: &str,
    promise_dir: Option<&std::path::Path>,
    mounts: &[Mount],
) -> Option<PathBuf> {
    if let (Some(rest), Some(pd)) = (command.strip_prefix("/promise/"), promise_dir) {
        return Some(pd.join(rest));
    }
    for m in mounts.iter().rev() {
        if let Some(rest) = command
            .strip_prefix(m.target.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
        {
            return Some(m.host.join(rest));
        }
    }
    if command.starts_with('/') {
        return Some(PathBuf::from(command));
    }
    if command.contains('/') {
        return None;
    }
    sandbox::DEFAULT_PATH
        .split(':')
        .map(|d| std::path::Path::new(d).join(command))
        .find(|p| p.is_file())
}

/// `: <command>: the script's first line ends with a carriage return ...` when `command` is a
/// script whose shebang line ends with `\r` (CRLF line endings), which makes the kernel look
/// for an interpreter such as `/bin/sh\r` and fail with "No such file or directory".
/// Empty otherwise.
fn crlf_shebang_hint(
    command: &str,
    promise_dir: Option<&std::path::Path>,
    mounts: &[Mount],
) -> String {
    use std::io::Read;
    let Some(path) = host_command_path(command, promise_dir, mounts) else {
        return String::new();
    };
    let mut head = Vec::with_capacity(256);
    let Ok(f) = std::fs::File::open(&path) else {
        return String::new();
    };
    if f.take(256).read_to_end(&mut head).is_err() {
        return String::new();
    }
    let Some(line) = head.strip_prefix(b"#!") else {
        return String::new();
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    if !line.ends_with(b"\r") {
        return String::new();
    }
    // The kernel takes the interpreter up to the first blank: only when that word ends with
    // the `\r` does exec fail with "No such file or directory".
    let interpreter = String::from_utf8_lossy(line)
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t'])
        .next()
        .unwrap_or_default()
        .to_string();
    if !interpreter.ends_with('\r') {
        return String::new();
    }
    format!(
        ": {command}: the script's first line ends with a carriage return (CRLF line endings): its interpreter {interpreter:?} does not exist; convert the file to LF line endings"
    )
}

fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown exit status".into(),
    }
}

/// Promise-level or resource-level workflow (`KRATIX_WORKFLOW_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowType {
    /// `promise`: runs once for the Promise; output becomes dependencies.
    Promise,
    /// `resource`: runs for each resource request.
    Resource,
}

impl WorkflowType {
    /// `promise` or `resource`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowType::Promise => "promise",
            WorkflowType::Resource => "resource",
        }
    }
}

/// `configure` or `delete` (`KRATIX_WORKFLOW_ACTION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Run every configure Pipeline in order.
    Configure,
    /// Run the first delete Pipeline; its output is ignored.
    Delete,
}

impl Action {
    /// `configure` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Configure => "configure",
            Action::Delete => "delete",
        }
    }
}

/// The object a workflow runs for (`KRATIX_OBJECT_*`). For promise workflows the runner uses
/// `Promise`/`platform.kratix.io`/`v1alpha1`/promise name/`""` regardless.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ObjectIdentity {
    /// Kind, e.g. `redis`.
    pub kind: String,
    /// API group, e.g. `marketplace.kratix.io`.
    pub group: String,
    /// API version, e.g. `v1alpha1`.
    pub version: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (`""` for cluster-scoped objects).
    pub namespace: String,
}

/// Which sandbox runs containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// bubblewrap (the default; required for the `/kratix/...` paths).
    #[default]
    Bwrap,
    /// No sandbox: see the module docs for what changes.
    None,
}

/// An extra bind mount into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mount {
    /// Host path (file or directory).
    pub host: PathBuf,
    /// Absolute path inside the sandbox, e.g. `/tmp/transfer`.
    pub target: String,
    /// Mount read-write (default read-only).
    #[serde(default)]
    pub writable: bool,
}

/// How the process runtime runs one container image (YAML: `{command: [..], mounts:
/// [{host, target, writable}], network: bool}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageOverride {
    /// Host command standing in for the image entrypoint; used when the container has no
    /// `command`. Paths are as seen inside the sandbox (so a mounted script works).
    #[serde(default)]
    pub command: Vec<String>,
    /// Mounts the image's scripts expect (e.g. `/tmp/transfer`).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Allow network access for containers of this image.
    #[serde(default)]
    pub network: bool,
}

/// Runner settings (the daemon config's pipeline section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Sandbox (default bwrap).
    pub sandbox: SandboxMode,
    /// The `bwrap` binary (default: [`sandbox::default_bwrap`]).
    pub bwrap: PathBuf,
    /// Per-container wall-clock limit (default 10 minutes).
    pub timeout: Duration,
    /// Maximum total size of one Pipeline's output (default 50 MiB).
    pub output_cap_bytes: u64,
    /// Bytes of stdout and of stderr kept per container (default 1 MiB each; the tail).
    pub log_cap_bytes: usize,
    /// Allow network for every Pipeline (default false).
    pub allow_network: bool,
    /// Image reference (exact match) → how to run it.
    pub image_overrides: BTreeMap<String, ImageOverride>,
    /// Where per-run directories are created (default `$TMPDIR/promised-runs`); each run's
    /// directory is removed when the Pipeline finishes.
    pub work_dir: PathBuf,
    /// Host paths no sandboxed Pipeline may see: masked wherever a bind (the Promise folder,
    /// `/usr`, an image-override mount) would expose them, and an image-override mount of one
    /// is refused. [`crate::settings::Settings::runner`] lists the state directory, the
    /// secrets directory and the webhook secret file (default: none).
    pub hidden: Vec<sandbox::Hidden>,
    /// Where `secretKeyRef` and `configMapKeyRef` read, and which Secrets each Promise may
    /// read ([`mod@env`]; default: none).
    pub env_sources: env::EnvSources,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        RunnerConfig {
            sandbox: SandboxMode::Bwrap,
            bwrap: sandbox::default_bwrap(),
            timeout: Duration::from_secs(600),
            output_cap_bytes: 50 * 1024 * 1024,
            log_cap_bytes: 1024 * 1024,
            allow_network: false,
            image_overrides: BTreeMap::new(),
            work_dir: std::env::temp_dir().join("promised-runs"),
            hidden: Vec::new(),
            env_sources: env::EnvSources::default(),
        }
    }
}

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
    /// sees ([`env::PodMeta`]).
    pub pipeline_namespace: Option<String>,
    /// The Pipelines of this workflow and action.
    pub pipelines: &'a [Pipeline],
    /// The object's current `status` (merged with each Pipeline's `status.yaml`, and shown to
    /// each Pipeline in `object.yaml`).
    pub existing_status: Map<String, Value>,
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
        }
    }

    /// The resource workflow of `p` for request `r` (`object.yaml` = [`ValidRequest::to_yaml`]).
    pub fn for_request(p: &'a ValidPromise, r: &ValidRequest, action: Action) -> Self {
        let wf = &p.promise.object.spec.workflows.resource;
        let api = p.api.as_ref();
        let api_version = r
            .object
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
            object_yaml: r.to_yaml(),
            promise_dir: None,
            pipeline_namespace: pipeline_namespace(p),
            pipelines: match action {
                Action::Configure => &wf.configure,
                Action::Delete => &wf.delete,
            },
            existing_status: r
                .object
                .get("status")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

fn pipeline_namespace(p: &ValidPromise) -> Option<String> {
    p.promise
        .object
        .spec
        .workflows
        .config
        .as_ref()
        .and_then(|c| c.pipeline_namespace.clone())
        .filter(|n| !n.is_empty())
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

/// Runs a workflow with the process runtime (see the module docs). Never panics; every
/// problem ends up in a [`PipelineResult::outcome`]. A missing sandbox fails the first
/// Pipeline with [`Error::SandboxUnavailable`].
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
    if cfg.sandbox == SandboxMode::Bwrap
        && let Err(error) = sandbox::probe(&cfg.bwrap).await
    {
        result.pipelines.push(PipelineResult {
            name: pipelines[0].metadata.name.clone(),
            outcome: Outcome::Failed { error },
            outputs: Vec::new(),
            selectors: Vec::new(),
            status: None,
            logs: Vec::new(),
        });
        return result;
    }
    let layout = sandbox::HostLayout::detect();
    for p in pipelines {
        // The only channel between Pipelines is the object's status, re-read into
        // object.yaml (kratix-contract.md §2.2, §2.4).
        let object_yaml = with_status(&input.object_yaml, &result.merged_status);
        let r = run_pipeline(cfg, &layout, input, &object_yaml, p).await;
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

async fn run_pipeline(
    cfg: &RunnerConfig,
    layout: &sandbox::HostLayout,
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
    };
    if let Err(error) = run_pipeline_inner(cfg, layout, input, object_yaml, p, &mut res).await {
        res.outcome = Outcome::Failed { error };
        res.outputs.clear();
        res.selectors.clear();
    }
    res
}

async fn run_pipeline_inner(
    cfg: &RunnerConfig,
    layout: &sandbox::HostLayout,
    input: &WorkflowInput<'_>,
    object_yaml: &str,
    p: &Pipeline,
    res: &mut PipelineResult,
) -> Result<(), Error> {
    let pname = p.metadata.name.as_str();
    let dirs = contract::PipelineDirs::create(&cfg.work_dir, object_yaml)?;
    let base_env = contract::kratix_env(
        input.workflow_type,
        input.action,
        &input.promise_name,
        pname,
        &input.object,
        &input.crd_plural,
    );
    let pipeline_network = p
        .metadata
        .annotations
        .get(NETWORK_ANNOTATION)
        .map(String::as_str)
        == Some("true");
    // Every container's environment before the first starts: a variable that cannot be
    // resolved fails the Pipeline before anything ran.
    let pod = env::PodMeta::new(
        input.workflow_type,
        input.action,
        &input.promise_name,
        &input.object,
        input.pipeline_namespace.as_deref(),
        p,
    );
    let mut envs = Vec::with_capacity(p.spec.containers.len());
    for c in &p.spec.containers {
        let mut env = base_env.clone();
        env.extend(contract::container_env(
            &input.promise_name,
            pname,
            c,
            &pod,
            &cfg.env_sources,
        )?);
        envs.push(env);
    }
    for (c, env) in p.spec.containers.iter().zip(envs) {
        let over = cfg.image_overrides.get(&c.image);
        let command = match (&c.command, over) {
            (Some(cmd), _) if !cmd.is_empty() => cmd.clone(),
            (_, Some(o)) if !o.command.is_empty() => o.command.clone(),
            _ => {
                return Err(Error::NoCommand {
                    pipeline: pname.into(),
                    container: c.name.clone(),
                    image: c.image.clone(),
                });
            }
        };
        let mut argv = command;
        argv.extend(c.args.clone().unwrap_or_default());
        let command0 = argv[0].clone();
        let network =
            cfg.allow_network || pipeline_network || over.map(|o| o.network).unwrap_or(false);
        let mounts: &[Mount] = over.map(|o| o.mounts.as_slice()).unwrap_or(&[]);
        let (inv, sandbox_note) = match cfg.sandbox {
            SandboxMode::Bwrap => {
                let (input_dir, output_dir, meta_dir) =
                    (dirs.input(), dirs.output(), dirs.metadata());
                sandbox::check_mounts(&c.image, mounts, &cfg.hidden)?;
                let spec = sandbox::SandboxSpec {
                    input: &input_dir,
                    output: &output_dir,
                    metadata: &meta_dir,
                    promise_dir: input.promise_dir.as_deref(),
                    mounts,
                    network,
                    working_dir: c.working_dir.as_deref(),
                    env: &env,
                    argv: &argv,
                    hidden: &cfg.hidden,
                };
                let note = format!(
                    "; sandbox: network {}, read-only root file system, writable only /kratix/output, /kratix/metadata and a private /tmp",
                    if network { "on" } else { "off" }
                );
                (
                    runtime::Invocation {
                        program: cfg.bwrap.clone().into_os_string(),
                        args: sandbox::bwrap_args(layout, &spec),
                        // Through bwrap's own environment, which it passes on: values never
                        // appear on a command line (`/proc/<pid>/cmdline` is world-readable).
                        env: sandbox::bwrap_env(&spec),
                        cwd: None,
                        timeout: cfg.timeout,
                        log_cap: cfg.log_cap_bytes,
                    },
                    note,
                )
            }
            SandboxMode::None => {
                if !mounts.is_empty() {
                    return Err(Error::MountsNeedSandbox {
                        image: c.image.clone(),
                    });
                }
                if let (Some(first), Some(pd)) = (argv.first_mut(), &input.promise_dir)
                    && let Some(rest) = first.strip_prefix("/promise/")
                {
                    *first = pd.join(rest).to_string_lossy().into_owned();
                }
                let mut env = env.clone();
                env.insert(0, ("PATH".into(), sandbox::DEFAULT_PATH.into()));
                for (k, v) in [
                    ("KRATIX_INPUT_DIR", dirs.input()),
                    ("KRATIX_OUTPUT_DIR", dirs.output()),
                    ("KRATIX_METADATA_DIR", dirs.metadata()),
                ] {
                    env.push((k.into(), v.to_string_lossy().into_owned()));
                }
                if let Some(pd) = &input.promise_dir {
                    env.push((
                        "KRATIX_PROMISE_DIR".into(),
                        pd.to_string_lossy().into_owned(),
                    ));
                }
                let mut args: Vec<std::ffi::OsString> = argv.iter().map(Into::into).collect();
                let program = args.remove(0);
                (
                    runtime::Invocation {
                        program,
                        args,
                        env,
                        cwd: Some(
                            c.working_dir
                                .as_ref()
                                .map(PathBuf::from)
                                .unwrap_or_else(|| dirs.root().to_path_buf()),
                        ),
                        timeout: cfg.timeout,
                        log_cap: cfg.log_cap_bytes,
                    },
                    "; sandbox: none".to_string(),
                )
            }
        };
        let finished = runtime::run(&inv).await.map_err(|e| Error::SpawnFailed {
            pipeline: pname.into(),
            container: c.name.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "{e}{}",
                    crlf_shebang_hint(&command0, input.promise_dir.as_deref(), mounts)
                )
            } else {
                e.to_string()
            },
        })?;
        res.logs.push(ContainerLog {
            name: c.name.clone(),
            stdout: finished.stdout.clone(),
            stderr: finished.stderr.clone(),
            exit_code: finished.exit_code,
        });
        let stderr_tail = runtime::tail_lines(&finished.stderr, 20);
        if finished.timed_out {
            return Err(Error::Timeout {
                pipeline: pname.into(),
                container: c.name.clone(),
                after: cfg.timeout,
                stderr_tail,
            });
        }
        if finished.exit_code != Some(0) {
            // bwrap could not exec the command (`bwrap: execvp ...: No such file or
            // directory`): say why when it is a script with CRLF line endings.
            let hint = if cfg.sandbox == SandboxMode::Bwrap
                && finished.exit_code == Some(1)
                && finished.stderr.lines().any(|l| {
                    l.starts_with("bwrap: execvp") && l.ends_with("No such file or directory")
                }) {
                crlf_shebang_hint(&command0, input.promise_dir.as_deref(), mounts)
            } else {
                String::new()
            };
            return Err(Error::ContainerFailed {
                pipeline: pname.into(),
                container: c.name.clone(),
                exit_code: finished.exit_code,
                signal: finished.signal,
                stderr_tail,
                sandbox_note: hint + &sandbox_note,
            });
        }
    }

    // work-writer, then status-writer (kratix-contract.md §2.8, §2.6, §2.7).
    let meta = dirs.metadata();
    let read_meta = |name: &str| -> Result<String, Error> {
        let path = meta.join(name);
        match std::fs::symlink_metadata(&path) {
            Err(_) => Ok(String::new()),
            Ok(m) if !m.is_file() => Err(Error::UnsafeOutput {
                path: format!("/kratix/metadata/{name}"),
                reason: "must be a regular file".into(),
            }),
            Ok(_) => std::fs::read_to_string(&path).map_err(|e| Error::Io {
                context: format!("reading /kratix/metadata/{name}"),
                message: e.to_string(),
            }),
        }
    };
    let control = metadata::parse_workflow_control(&read_meta("workflow-control.yaml")?)?;
    let paused = if let Some(after) = control.retry_after {
        Some(Outcome::Retry {
            after,
            message: control.message.clone(),
        })
    } else if control.suspend {
        Some(Outcome::Suspended {
            message: control.message.clone(),
        })
    } else {
        None
    };
    if paused.is_none() && input.action == Action::Configure {
        let out = dirs.output();
        res.outputs = output::collect(&out, cfg.output_cap_bytes)?;
        res.selectors = metadata::parse_destination_selectors(
            &read_meta("destination-selectors.yaml")?,
            &output::top_level_dirs(&out),
        )?;
    }
    res.status = metadata::parse_status(&read_meta("status.yaml")?)?;
    if let Some(o) = paused {
        res.outcome = o;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hint reads the command's file on the host (Promise folder, image-override mount)
    /// and appears only for a shebang line ending in `\r`.
    #[test]
    fn crlf_shebang_hint_reads_the_host_file() {
        let tmp = tempfile::tempdir().unwrap();
        let pd = tmp.path().join("promise");
        let img = tmp.path().join("image");
        std::fs::create_dir_all(pd.join("pipeline")).unwrap();
        std::fs::create_dir_all(&img).unwrap();
        std::fs::write(pd.join("pipeline/crlf"), "#!/bin/sh\r\necho\r\n").unwrap();
        // `/bin/sh` exists and gets the argument "-eu\r": another error, no hint.
        std::fs::write(pd.join("pipeline/args"), "#!/bin/sh -eu\r\n").unwrap();
        std::fs::write(pd.join("pipeline/lf"), "#!/bin/sh\necho\r\n").unwrap();
        std::fs::write(pd.join("pipeline/binary"), "\x7fELF\r\n").unwrap();
        std::fs::write(img.join("run"), "#! /usr/bin/bash\r\n").unwrap();
        let mounts = [Mount {
            host: img.clone(),
            target: "/image".into(),
            writable: false,
        }];
        assert_eq!(
            crlf_shebang_hint("/promise/pipeline/crlf", Some(&pd), &[]),
            ": /promise/pipeline/crlf: the script's first line ends with a carriage return (CRLF line endings): its interpreter \"/bin/sh\\r\" does not exist; convert the file to LF line endings"
        );
        assert_eq!(
            crlf_shebang_hint("/image/run", None, &mounts),
            ": /image/run: the script's first line ends with a carriage return (CRLF line endings): its interpreter \"/usr/bin/bash\\r\" does not exist; convert the file to LF line endings"
        );
        for quiet in [
            "/promise/pipeline/lf",
            "/promise/pipeline/args",
            "/promise/pipeline/binary",
            "/promise/nope",
        ] {
            assert_eq!(crlf_shebang_hint(quiet, Some(&pd), &mounts), "", "{quiet}");
        }
        assert_eq!(crlf_shebang_hint("/imagex/run", None, &mounts), "");
    }
}
