//! [`Error`]: everything that can go wrong in one Pipeline, each concerning one request (or
//! Promise) only, and which of them are config problems validation reports
//! ([`Error::is_config`]).

use std::time::Duration;

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
    /// A container ran longer than [`RunnerConfig::timeout`](super::RunnerConfig::timeout); its
    /// process group was killed.
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
    /// Image-override mounts and scratch directories need the bwrap sandbox.
    #[error(
        "image {image:?} needs mounts or scratch directories, which `sandbox: none` cannot provide; use `sandbox: bwrap`"
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
    /// The image runtime found nothing to run: the container has no `command` and the image
    /// neither `Entrypoint` nor `Cmd`.
    #[error(
        "pipeline {pipeline:?} container {container:?}: image {image:?} has no Entrypoint or Cmd and the container no command: set spec.containers[].command"
    )]
    ImageNoCommand {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// Image reference.
        image: String,
    },
    /// The image's `User` names a user or group its `/etc/passwd` or `/etc/group` lacks.
    #[error("image {image:?}: User {user:?}: {message}")]
    ImageUser {
        /// Image reference.
        image: String,
        /// The `User` value.
        user: String,
        /// What is missing.
        message: String,
    },
    /// The image could not be pulled or unpacked (the message names the registry's answer
    /// and what to do; never a credential).
    #[error("pipeline {pipeline:?} container {container:?}: {message}")]
    ImagePull {
        /// Pipeline name.
        pipeline: String,
        /// Container name.
        container: String,
        /// Why, from the image store.
        message: String,
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
    /// The Pipeline's output is larger than
    /// [`RunnerConfig::output_cap_bytes`](super::RunnerConfig::output_cap_bytes).
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
    /// The Promise annotation `promised.dev/runtime` is neither `process` nor `kubernetes`
    /// (validation reports it too).
    #[error(
        "Promise {promise:?}: annotation \"promised.dev/runtime\" is {value:?}; use \"process\" or \"kubernetes\""
    )]
    InvalidRuntime {
        /// Promise name.
        promise: String,
        /// The annotation's value.
        value: String,
    },
    /// The Kubernetes Job runtime has no API to talk to (no in-cluster environment, no
    /// kubeconfig): every Pipeline on that runtime fails with it.
    #[error(
        "Promise {promise:?} pipeline {pipeline:?}: the Kubernetes Job runtime has no API to talk to: {message}"
    )]
    KubeUnavailable {
        /// Promise name.
        promise: String,
        /// Pipeline name.
        pipeline: String,
        /// Why (kube's `InferConfigError`).
        message: String,
    },
    /// A Pipeline field cannot be turned into its Kubernetes type (e.g. `spec.volumes`).
    #[error("Promise {promise:?} pipeline {pipeline:?}: {field}: {reason}")]
    JobSpec {
        /// Promise name.
        promise: String,
        /// Pipeline name.
        pipeline: String,
        /// The field, e.g. `spec.tolerations`.
        field: String,
        /// The decoding error.
        reason: String,
    },
    /// A Kubernetes API call failed. A 403 names the verb and resource the daemon's Role
    /// must grant (`hint`).
    #[error(
        "Promise {promise:?} pipeline {pipeline:?}: Kubernetes API call {call} failed: {message}{hint}"
    )]
    KubeApi {
        /// Promise name.
        promise: String,
        /// Pipeline name.
        pipeline: String,
        /// The call, e.g. `create batch/v1 Job "kratix-redis-example-p-1a2b3" in namespace "promised"`.
        call: String,
        /// HTTP status of the API's answer, `None` when there was none (connection).
        code: Option<u16>,
        /// The API's message.
        message: String,
        /// What to grant or do, or empty.
        hint: String,
    },
    /// The Pipeline's Job failed (Kratix: `ConfigureWorkflowFailed`): the container that failed,
    /// its exit code and the last lines of its log.
    #[error(
        "pipeline {pipeline:?} Job {job:?} failed ({reason}){}; last lines of its log:\n{log_tail}",
        job_container_text(container.as_deref(), *exit_code, "")
    )]
    JobFailed {
        /// Pipeline name.
        pipeline: String,
        /// Job name.
        job: String,
        /// The container that failed, when its pod could be found.
        container: Option<String>,
        /// Its exit code.
        exit_code: Option<i32>,
        /// The Job's `Failed` condition reason, e.g. `BackoffLimitExceeded`, then the
        /// container's termination reason (`Error`, `OOMKilled`, `ErrImagePull: …`) or the
        /// condition's message.
        reason: String,
        /// The last lines of the container's log (boxed: keeps [`Error`] small).
        log_tail: Box<str>,
    },
    /// The Job ran longer than its `activeDeadlineSeconds` (the daemon's `pipelineTimeout`;
    /// condition reason `DeadlineExceeded`).
    #[error(
        "pipeline {pipeline:?} Job {job:?} timed out after {after:?} (activeDeadlineSeconds, reason DeadlineExceeded){}; last lines of its log:\n{log_tail}",
        job_container_text(container.as_deref(), None, "")
    )]
    JobTimeout {
        /// Pipeline name.
        pipeline: String,
        /// Job name.
        job: String,
        /// The limit.
        after: Duration,
        /// The container that was running, when known.
        container: Option<String>,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The Job completed but its output could not be read back from the output container's
    /// log (missing markers, bad encoding, an unsafe archive entry).
    #[error("pipeline {pipeline:?} Job {job:?}: reading its output: {reason}")]
    JobOutput {
        /// Pipeline name.
        pipeline: String,
        /// Job name.
        job: String,
        /// What was wrong.
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

fn job_container_text(container: Option<&str>, exit_code: Option<i32>, message: &str) -> String {
    let mut out = String::new();
    if let Some(c) = container {
        out.push_str(&format!(": container {c:?}"));
        if let Some(code) = exit_code {
            out.push_str(&format!(" exit code {code}"));
        }
    }
    if !message.is_empty() {
        out.push_str(&format!(" ({message})"));
    }
    out
}

fn exit_text(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown exit status".into(),
    }
}
