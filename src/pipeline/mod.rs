//! The pipeline runner: Kratix workflows run as sandboxed host processes, with the exact Kratix
//! pipeline contract (kratix-contract.md §2).
//!
//! A workflow is a list of [`Pipeline`](crate::model::Pipeline)s, run in order
//! ([`run_workflow`]); each Pipeline gets fresh `/kratix/input` (read-only, holding
//! `object.yaml`), `/kratix/output` and `/kratix/metadata` directories shared by its
//! containers, which run one after the other with the `KRATIX_*` environment ([`contract`]).
//! After the containers, the runner does what Kratix's `work-writer` and `status-writer` do:
//! reads `workflow-control.yaml`, collects the output ([`output`]), parses
//! `destination-selectors.yaml` and `status.yaml` ([`metadata`]).
//! Execution stops at the first failed or suspended Pipeline, as in Kratix
//! (`lib/workflow/reconciler.go`). Delete workflows run only their first Pipeline and ignore
//! its output and selectors.
//!
//! ## Process runtime
//! Each container's `command` + `args` runs on the host inside bubblewrap ([`sandbox`]; by
//! default through the resident sandbox, [`resident`], which builds the same tree without a
//! bwrap per container), with
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
//!   host command and extra mounts (e.g. `/tmp/transfer` → the image's assets), and may give
//!   what the image would: a `workingDir`, `env` (before the `KRATIX_*` variables and the
//!   container's own `env`, which win) and `scratch` directories, fresh, empty and writable for
//!   each container run ([`overrides`]). A container's own `command` and `workingDir` still
//!   win (Kubernetes semantics: `command` replaces the entrypoint); a container without
//!   `command` uses the override's. `args` are always the container's.
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
//!   override mounts and scratch directories are refused (an override's `workingDir`, a host
//!   path then, and `env` apply). Scripts must honour these variables. No isolation at all.
//!
//! Files: this one holds the runner's settings ([`RunnerConfig`], [`Mount`],
//! [`SandboxMode`]; [`ImageOverride`] is in `overrides.rs`) and the workflow vocabulary ([`WorkflowType`], [`Action`],
//! [`ObjectIdentity`]); `workflow.rs` runs a workflow ([`WorkflowInput`], [`run_workflow`],
//! [`WorkflowResult`]), `run.rs` one Pipeline and its containers, `error.rs` holds [`Error`].

pub mod contract;
pub mod env;
mod error;
pub mod kubeapi;
pub mod kubernetes;
pub mod metadata;
pub mod oci;
pub mod output;
pub mod overrides;
pub mod resident;
mod run;
pub mod rundir;
pub mod runtime;
pub mod sandbox;
mod workflow;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::cluster::Runtime;
pub use error::Error;
pub use metadata::{DestinationSelector, WorkflowControl, merge_status};
pub use output::OutputFile;
pub use overrides::{EnvEntry, ImageOverride, check_overrides};
pub use workflow::{
    ContainerLog, Outcome, PipelineResult, RanImage, WorkflowInput, WorkflowResult, run_workflow,
    with_status,
};

/// Annotation on a Pipeline that lets it use the host network on the process runtime.
pub const NETWORK_ANNOTATION: &str = "promised.dev/network";

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
    /// The image store of the image runtime ([`oci`]): `None` when the daemon config has no
    /// `images:` section (host process runtime only), `Err` with the reason when the store
    /// could not be opened (every container that needs an image then fails with it).
    pub images: Option<Images>,
    /// Where workflows run unless their Promise's `promised.dev/runtime` annotation says
    /// otherwise (default [`Runtime::Process`]; the daemon config's `runtime:`).
    pub runtime: Runtime,
    /// The Kubernetes Job runtime (its settings and API client), `None` when this runner has
    /// none (every Pipeline on that runtime then fails with [`Error::KubeUnavailable`]).
    /// [`crate::settings::Settings::runner`] always sets it; the client is made on first use.
    pub kubernetes: Option<kubernetes::KubeRuntime>,
    /// The pipeline API served to resource workflows on the process runtime ([`kubeapi`]);
    /// `None`: none (the default; [`crate::settings::Settings::runner`] sets it).
    pub kube_api: Option<KubeApiHandle>,
    /// The `promised` binary whose `sandbox-helper` runs sandboxed containers in the
    /// resident sandbox ([`resident`]); `None` (the default): one bwrap per container.
    /// [`crate::settings::Settings::runner`] sets it to the running binary unless
    /// `residentSandbox: false`.
    pub resident: Option<PathBuf>,
}

/// The pipeline API of a runner; two are equal when they are the same one.
#[derive(Debug, Clone)]
pub struct KubeApiHandle(pub std::sync::Arc<kubeapi::KubeApi>);

impl PartialEq for KubeApiHandle {
    fn eq(&self, other: &KubeApiHandle) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for KubeApiHandle {}

/// The image store of a runner, or why it could not be opened (the message names the
/// setting). Two are equal when they are the same store or the same error.
#[derive(Debug, Clone)]
pub struct Images(pub Result<std::sync::Arc<crate::image::ImageStore>, String>);

impl PartialEq for Images {
    fn eq(&self, other: &Images) -> bool {
        match (&self.0, &other.0) {
            (Ok(a), Ok(b)) => std::sync::Arc::ptr_eq(a, b),
            (Err(a), Err(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Images {}

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
            images: None,
            runtime: Runtime::Process,
            kubernetes: None,
            kube_api: None,
            resident: None,
        }
    }
}
