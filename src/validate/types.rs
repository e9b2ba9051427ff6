//! The validated types: what [`validate`](super::validate) hands the pipeline runner,
//! scheduler and state stores ([`ValidConfig`], [`ValidPromise`], [`ValidRequest`]), what it
//! leaves out ([`Rejected`]) or counts as a pipeline asset ([`Asset`]), and its settings
//! ([`Options`], [`UnservedKinds`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::to_yaml;
use crate::config::Located;
use crate::diag::{Diagnostic, Origin};
use crate::model::{
    BucketStateStore, Destination, GitStateStore, HealthRecord, ObjectRef, Promise, PromiseApi,
};
use crate::schema::CrdSchema;
use crate::state::CompactValue;

/// A Promise that passed every check.
#[derive(Debug, Clone)]
pub struct ValidPromise {
    /// The Promise and where it came from.
    pub promise: Located<Promise>,
    /// Its API, when it has one.
    pub api: Option<PromiseApi>,
    /// The compiled storage-version schema, when the API has one.
    pub schema: Option<Arc<CrdSchema>>,
}

impl ValidPromise {
    /// The Promise's name.
    pub fn name(&self) -> &str {
        &self.promise.object.metadata.name
    }

    /// The Promise's version: its `kratix.io/promise-version` label, when set
    /// (kratix-lifecycle.md §2.1; Kratix calls an unlabelled Promise `not-set`).
    pub fn version(&self) -> Option<&str> {
        self.promise
            .object
            .metadata
            .labels
            .get(crate::model::PROMISE_VERSION_LABEL)
            .map(String::as_str)
    }

    /// `spec.workflows.config.pipelineNamespace` as written (Kratix: the namespace its
    /// pipelines run in, `kratix-contract.md` §2), when set.
    pub fn pipeline_namespace(&self) -> Option<&str> {
        self.promise
            .object
            .spec
            .workflows
            .config
            .as_ref()
            .and_then(|c| c.pipeline_namespace.as_deref())
    }
}

/// A resource request admitted against its Promise.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidRequest {
    /// File and document.
    pub origin: Origin,
    /// Kind, namespace and name.
    pub id: ObjectRef,
    /// Name of the Promise that serves it.
    pub promise: String,
    /// The object as a Kratix pipeline finds it in `/kratix/input/object.yaml`: pruned,
    /// defaulted, namespace set, `kratix.io/promise-name` label added, `status` removed.
    /// Kept as compact JSON text, read on each use ([`ValidRequest::object`]); the state
    /// record of the request holds the same text.
    pub object: CompactValue,
    /// Hex sha256 of `object.spec` as compact JSON (`null` when absent): what the engine's
    /// input hash covers, computed once per admission.
    #[serde(skip)]
    pub spec_digest: crate::state::HashText,
    /// The engine's input hash of this request with the Promise-side inputs it was computed
    /// for: `(promise inputs, hash)`. Requests are shared between passes, so an unchanged
    /// request is hashed once, not on every pass. The Promise inputs are the same text for
    /// every request of a Promise: shared ([`crate::status::Text`]).
    #[serde(skip)]
    pub input_hash_memo: std::sync::OnceLock<(crate::status::Text, crate::state::HashText)>,
    /// [`ValidRequest::key`], computed on first use.
    #[serde(skip)]
    pub key_memo: std::sync::OnceLock<String>,
}

impl ValidRequest {
    /// `/kratix/input/object.yaml` contents: deterministic YAML with sorted keys.
    pub fn to_yaml(&self) -> String {
        to_yaml(&self.object())
    }

    /// The object as a value, read from its text on each call (a few microseconds).
    pub fn object(&self) -> Arc<Value> {
        self.object.value()
    }

    /// The request's namespace.
    pub fn namespace(&self) -> &str {
        self.id.namespace.as_deref().unwrap_or("default")
    }

    /// The request's name.
    pub fn name(&self) -> &str {
        &self.id.name
    }

    /// The request's key in the engine's state and in placement owners:
    /// `<promise>/<namespace>/<name>` (`model::request_key`), formatted once per admitted
    /// request (requests are shared between daemon passes).
    pub fn key(&self) -> &str {
        self.key_memo
            .get_or_init(|| crate::model::request_key(&self.promise, self.namespace(), self.name()))
    }
}

/// An object that was left out because of errors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    /// Where it came from.
    pub origin: Origin,
    /// What it is.
    pub id: ObjectRef,
    /// One-line reasons (the diagnostics' text).
    pub reasons: Vec<String>,
    /// For a resource request: the Promise that serves (or would serve) its kind, when known.
    pub promise: Option<String>,
}

/// What a document outside every Promise folder whose kind no Promise serves is
/// (README "Which YAML is config"; the `unservedKinds` setting).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum UnservedKinds {
    /// A warning; the document is skipped (the default: often CI or tool config).
    #[default]
    Warn,
    /// An error (`promised validate` exits 1); the document is skipped and listed as rejected.
    Error,
}

/// Validation settings that come from the daemon config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `unservedKinds`.
    pub unserved_kinds: UnservedKinds,
}

/// A pipeline asset: a document inside a Promise's folder whose kind no Promise serves
/// (a Deployment, CRD or template object the Promise's pipeline copies to its output). Counted
/// and listed by `promised validate`; never an error, never run, never a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Asset {
    /// File and document.
    pub origin: Origin,
    /// The document's `apiVersion`.
    pub api_version: String,
    /// Kind, namespace and name, as written.
    pub id: ObjectRef,
    /// The Promise whose folder holds it (the innermost one).
    pub promise: String,
}

/// A config repo after validation.
#[derive(Debug, Clone, Default)]
pub struct ValidConfig {
    /// Valid Promises, sorted by name.
    pub promises: Vec<ValidPromise>,
    /// Admitted requests, sorted by (promise, namespace, name). Shared with the admission
    /// cache ([`Admissions`](super::Admissions)), so a pass over unchanged requests copies
    /// nothing.
    pub requests: Vec<Arc<ValidRequest>>,
    /// Valid Destinations (with an existing state store), sorted by name.
    pub destinations: Vec<Located<Destination>>,
    /// Git state stores, sorted by name.
    pub git_state_stores: Vec<Located<GitStateStore>>,
    /// Bucket state stores, sorted by name.
    pub bucket_state_stores: Vec<Located<BucketStateStore>>,
    /// Health records.
    pub health_records: Vec<Located<HealthRecord>>,
    /// ResourceBindings with both labels (README "Promise versions and ResourceBindings").
    pub resource_bindings: Vec<Located<crate::model::ResourceBinding>>,
    /// UpgradePlans, checked or not (README "Rolling out a Promise change").
    pub upgrade_plans: Vec<Located<crate::model::UpgradePlan>>,
    /// Objects left out, with why.
    pub rejected: Vec<Rejected>,
    /// Pipeline assets (not config), sorted by file and document.
    pub assets: Vec<Asset>,
    /// Every error and warning, sorted by file, document, then field.
    pub diagnostics: Vec<Diagnostic>,
    /// Config commit (Git sources).
    pub commit: Option<String>,
    /// Its author and verified signer ([`crate::config::Provenance`]).
    pub provenance: Option<crate::config::Provenance>,
    /// The config repository's history at `commit` (Git sources).
    pub history: Option<crate::config::history::History>,
    /// The tenancy policy in force (`promised-policy.yaml`): `None` without one, `Err` when
    /// it does not load (everything it guards is refused).
    pub tenancy: Option<Result<std::sync::Arc<super::policy::Policy>, String>>,
    /// Config files that did not load (path → why): nothing they held at the last good load
    /// is pruned ([`crate::reconcile::held`]).
    pub unloadable: BTreeMap<String, String>,
}

impl ValidConfig {
    /// True when there is at least one error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Looks up a valid Promise by name.
    pub fn promise(&self, name: &str) -> Option<&ValidPromise> {
        self.promises.iter().find(|p| p.name() == name)
    }
}
