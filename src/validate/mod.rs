//! Cross-object checks and request admission: turns classified [`Objects`] into a
//! [`ValidConfig`] that the pipeline runner, scheduler and state stores can trust.
//!
//! Pure: no I/O, no network, no processes, so `promised validate` runs offline and in CI.
//! Every problem is reported (not just the first), and one bad object never blocks others: an
//! invalid request or Promise is left out of [`ValidConfig`] and listed in
//! [`ValidConfig::rejected`] with its diagnostics, everything else stays usable.
//!
//! Rules and their Kratix sources (kratix-contract.md):
//! - Promise API must be a valid, `Namespaced` CRD (§1.1, `promise_webhook.go`); the storage
//!   version's schema is used.
//! - Every workflow entry is `platform.kratix.io/v1alpha1` `Pipeline`, decoded with unknown
//!   fields rejected; names unique per (type, action); `<promise>-<type>-<action>-<pipeline>`
//!   at most 60 characters; pipeline labels valid Kubernetes labels; `reconciliationInterval`
//!   and the `kratix.io/reconciliation-interval` annotation Go durations of at least 1m (§1.1).
//! - A `GitStateStore` with `authMethod: ssh` needs a URL matching Kratix's SSH pattern (§1.4).
//! - A missing `requiredPromises` entry is a warning, as in Kratix.
//! - Destinations need an existing state store, and two Destinations on one store may not share
//!   a `path` (§1.3, `destination_webhook.go`). (Kratix only warns about a missing store at
//!   admission; promised makes it an error because nothing could ever be written.)
//! - Which YAML is config (README): a document of a kind some Promise of the repo serves is a
//!   request; any other non-Kratix document is a pipeline asset inside a Promise's folder
//!   ([`Asset`], never an error) and, outside every Promise folder, a warning or an error by
//!   [`UnservedKinds`].
//! - A resource request is admitted like the API server does for a CRD: prune unknown fields,
//!   apply defaults, validate the storage version's `openAPIV3Schema`, `metadata.name` ≤ 63
//!   characters, then the `kratix.io/promise-name` label is added (§2.4).
//!
//! Deliberate differences from Kratix: duplicate objects (same kind, namespace and name) are
//! all rejected rather than last-applied-wins, since a Git repo has no apply order; a request
//! without `metadata.namespace` gets `default`, as `kubectl apply` would give it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{Located, Objects, from_value};
use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{
    BucketStateStore, Destination, GitAuthMethod, GitStateStore, HealthRecord, KRATIX_API_VERSION,
    ObjectRef, PROMISE_NAME_LABEL, Pipeline, Promise, PromiseApi, StateStoreKind, type_name_of,
};
use crate::schema::CrdSchema;

/// Longest `<promise>-<type>-<action>-<pipeline>` Kratix accepts (promise_webhook.go).
pub const MAX_PIPELINE_FULL_NAME: usize = 60;
/// Longest resource request name (Kratix injects `maxLength: 63` on `metadata.name`).
pub const MAX_REQUEST_NAME: usize = 63;
/// Promise annotation that overrides `spec.workflows.config.reconciliationInterval`
/// (kratix-contract.md §1.1, §7).
pub const RECONCILIATION_INTERVAL_ANNOTATION: &str = "kratix.io/reconciliation-interval";
/// Shortest reconciliation interval Kratix admits, for the spec field and the annotation alike
/// (Kratix: `MinReconciliationInterval`, enforced by the Promise webhook).
pub const MIN_RECONCILIATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
/// What Kratix requires of `GitStateStore.spec.url` when `authMethod: ssh`
/// (Kratix: `util/git`, `sshURLRegex`).
pub const SSH_URL_PATTERN: &str = "^(ssh://)?([^/:]*?)@[^@]+$";

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
    /// Shared with the state record of the request (one copy in memory).
    pub object: Arc<Value>,
    /// Hex sha256 of `object.spec` as compact JSON (`null` when absent): what the engine's
    /// input hash covers, computed once per admission.
    #[serde(skip)]
    pub spec_digest: String,
    /// The engine's input hash of this request with the Promise-side inputs it was computed
    /// for: `(promise inputs, hash)`. Requests are shared between passes, so an unchanged
    /// request is hashed once, not on every pass.
    #[serde(skip)]
    pub input_hash_memo: std::sync::OnceLock<(String, String)>,
    /// [`ValidRequest::key`], computed on first use.
    #[serde(skip)]
    pub key_memo: std::sync::OnceLock<String>,
}

impl ValidRequest {
    /// `/kratix/input/object.yaml` contents: deterministic YAML with sorted keys.
    pub fn to_yaml(&self) -> String {
        to_yaml(&self.object)
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
    /// cache ([`Admissions`]), so a pass over unchanged requests copies nothing.
    pub requests: Vec<Arc<ValidRequest>>,
    /// Valid Destinations (with an existing state store), sorted by name.
    pub destinations: Vec<Located<Destination>>,
    /// Git state stores, sorted by name.
    pub git_state_stores: Vec<Located<GitStateStore>>,
    /// Bucket state stores, sorted by name.
    pub bucket_state_stores: Vec<Located<BucketStateStore>>,
    /// Health records.
    pub health_records: Vec<Located<HealthRecord>>,
    /// Objects left out, with why.
    pub rejected: Vec<Rejected>,
    /// Pipeline assets (not config), sorted by file and document.
    pub assets: Vec<Asset>,
    /// Every error and warning, sorted by file, document, then field.
    pub diagnostics: Vec<Diagnostic>,
    /// Config commit (Git sources).
    pub commit: Option<String>,
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

/// Serialises a JSON value as YAML with sorted keys (serde-saphyr, which quotes strings that
/// YAML 1.1 readers would misread, such as `yes` or `on`).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# unserialisable: {e}\n"))
}

/// Runs every check. Never fails: problems are diagnostics.
pub fn validate(objects: Objects) -> ValidConfig {
    validate_with(objects, &mut Admissions::default())
}

/// Admission results kept between passes: a request document whose text (file, document
/// index, blob id) and Promise API are unchanged is not pruned, defaulted and validated again
/// (at 10,000 requests admission is most of a validation). Holds only the entries used by
/// the last [`validate_with`] call; documents without a blob id are never cached.
#[derive(Debug, Default)]
pub struct Admissions {
    /// (blob id, document index) → the admissions of that document text: usually one; more
    /// when the same text sits in several files.
    done: HashMap<(gix::ObjectId, usize), Vec<Admission>>,
}

/// One cached admission: the rest of its key (file, Promise name, hash of the Promise's
/// `spec.api`) and its result.
#[derive(Debug)]
struct Admission {
    file: String,
    promise: String,
    api_hash: Arc<str>,
    result: Result<Arc<ValidRequest>, Vec<Diagnostic>>,
}

/// Like [`validate`], reusing and refreshing `cache`.
pub fn validate_with(objects: Objects, cache: &mut Admissions) -> ValidConfig {
    validate_with_options(objects, cache, &Options::default())
}

/// Like [`validate_with`], with the daemon config's validation settings.
pub fn validate_with_options(
    objects: Objects,
    cache: &mut Admissions,
    options: &Options,
) -> ValidConfig {
    let Objects {
        promises,
        destinations,
        git_state_stores,
        bucket_state_stores,
        health_records,
        candidates,
        undecoded_promises,
        mut diagnostics,
        commit,
    } = objects;
    let mut rejected_keys: BTreeSet<(String, usize)> = BTreeSet::new();
    let mut rejected = Vec::new();

    // Which YAML is config: a document of a kind some Promise document of the repo names in
    // its `spec.api` (valid or not) is a request; otherwise, inside a Promise folder it is a
    // pipeline asset, outside every Promise folder it is skipped with a warning or an error.
    let promise_docs = || {
        promises.iter().map(|p| (&p.origin, &p.id, &p.raw)).chain(
            undecoded_promises
                .iter()
                .map(|p| (&p.origin, &p.id, &p.raw)),
        )
    };
    // (group, kind, Promise): a handful, so a scan beats hashing 10,000 candidates' keys.
    let served_by: Vec<(String, String, String)> = promise_docs()
        .filter_map(|(_, id, raw)| {
            let api = raw.pointer("/spec/api/spec")?;
            let group = api.get("group")?.as_str()?;
            let kind = api.pointer("/names/kind")?.as_str()?;
            Some((group.to_string(), kind.to_string(), id.name.clone()))
        })
        .collect();
    let served_by_of = |group: &str, kind: &str| {
        served_by
            .iter()
            .find(|(g, k, _)| g == group && k == kind)
            .map(|(_, _, p)| p.clone())
    };
    // (folder, Promise name), innermost folders first; "" is the repository root.
    let mut folders: Vec<(String, String)> = promise_docs()
        .map(|(o, id, _)| (folder_of(&o.file).to_string(), id.name.clone()))
        .collect();
    folders.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    let mut assets = Vec::new();
    let mut requests_in = Vec::with_capacity(candidates.len());
    for c in candidates {
        let api_version = c
            .raw
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if served_by_of(group, &c.id.kind).is_some() {
            requests_in.push(c);
            continue;
        }
        let folder = folders
            .iter()
            .find(|(dir, _)| dir.is_empty() || c.origin.file.starts_with(&format!("{dir}/")));
        if let Some((_, promise)) = folder {
            assets.push(Asset {
                origin: c.origin,
                api_version,
                id: c.id,
                promise: promise.clone(),
            });
            continue;
        }
        let glob = match c.origin.file.rsplit_once('/') {
            Some((dir, _)) => format!("{}/**", globset::escape(dir)),
            None => globset::escape(&c.origin.file),
        };
        let hint = format!(
            "if it is not config, exclude it: `exclude: [{glob:?}]` in the daemon config, or `promised validate --exclude '{glob}'`"
        );
        let kind = &c.id.kind;
        let d = c.origin.diag(
            Code::UnservedKind,
            Some(&c.id),
            "kind",
            match options.unserved_kinds {
                UnservedKinds::Warn => format!(
                    "no Promise serves {api_version} {kind} and the file is in no Promise folder; skipped ({hint})"
                ),
                UnservedKinds::Error => format!(
                    "no Promise serves {api_version} {kind} and the file is in no Promise folder (unservedKinds: error); {hint}"
                ),
            },
        );
        match options.unserved_kinds {
            UnservedKinds::Warn => diagnostics.push(d.warning()),
            UnservedKinds::Error => {
                rejected.push(Rejected {
                    origin: c.origin.clone(),
                    id: c.id.clone(),
                    reasons: vec![d.message.clone()],
                    promise: None,
                });
                diagnostics.push(d);
            }
        }
    }
    let candidates = requests_in;

    // Duplicate identities, across every kind (group + kind + namespace + name). Keys borrow
    // from the objects: at 10,000 requests this map is built on every pass.
    let mut seen: Seen<'_> =
        HashMap::with_capacity(candidates.len() + promises.len() + destinations.len());
    // Identity → its first origin, and any further ones (an empty Vec does not allocate).
    type Seen<'a> =
        HashMap<(&'a str, &'a str, Option<&'a str>, &'a str), (&'a Origin, Vec<&'a Origin>)>;
    fn add<'a>(
        seen: &mut Seen<'a>,
        key: (&'a str, &'a str, Option<&'a str>, &'a str),
        origin: &'a Origin,
    ) {
        match seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1.push(origin),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((origin, Vec::new()));
            }
        }
    }
    fn note<'a>(seen: &mut Seen<'a>, api: &'a str, id: &'a ObjectRef, origin: &'a Origin) {
        let group = api.split('/').next().unwrap_or_default();
        add(
            seen,
            (group, &id.kind, id.namespace.as_deref(), &id.name),
            origin,
        );
    }
    let kratix = KRATIX_API_VERSION;
    for p in &promises {
        note(&mut seen, kratix, &p.id, &p.origin);
    }
    for d in &destinations {
        note(&mut seen, kratix, &d.id, &d.origin);
    }
    for s in &git_state_stores {
        note(&mut seen, kratix, &s.id, &s.origin);
    }
    for s in &bucket_state_stores {
        note(&mut seen, kratix, &s.id, &s.origin);
    }
    for h in &health_records {
        note(&mut seen, kratix, &h.id, &h.origin);
    }
    // A request without a namespace is in `default`.
    for c in &candidates {
        let api = c
            .raw
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let group = api.split('/').next().unwrap_or_default();
        let ns = c.id.namespace.as_deref().or(Some("default"));
        add(&mut seen, (group, &c.id.kind, ns, &c.id.name), &c.origin);
    }
    // (group, kind, namespace, name) of each duplicated identity, with its origins.
    type DupKey = (String, String, Option<String>, String);
    let mut dup_entries: Vec<(DupKey, Vec<Origin>)> = seen
        .into_iter()
        .filter(|(_, (_, more))| !more.is_empty())
        .map(|((g, k, ns, n), (first, more))| {
            (
                (
                    g.to_string(),
                    k.to_string(),
                    ns.map(str::to_string),
                    n.to_string(),
                ),
                {
                    let mut v: Vec<Origin> = std::iter::once(first).chain(more).cloned().collect();
                    v.sort();
                    v
                },
            )
        })
        .collect();
    dup_entries.sort();
    for ((_, kind, ns, name), origins) in dup_entries {
        let id = ObjectRef {
            kind,
            namespace: ns,
            name,
        };
        for o in &origins {
            let others: Vec<String> = origins
                .iter()
                .filter(|x| *x != o)
                .map(|x| x.to_string())
                .collect();
            let d = o.diag(
                Code::DuplicateIdentity,
                Some(&id),
                "metadata.name",
                format!("duplicate object: also defined at {}", others.join(", ")),
            );
            // Rejected, not absent: a duplicated object keeps what it applied before.
            rejected.push(Rejected {
                origin: o.clone(),
                id: id.clone(),
                reasons: vec![d.message.clone()],
                promise: None,
            });
            diagnostics.push(d);
            rejected_keys.insert((o.file.clone(), o.document));
        }
    }
    let not_dup = |o: &Origin| !rejected_keys.contains(&(o.file.clone(), o.document));

    // State stores.
    let git_state_stores: Vec<_> = sorted(
        git_state_stores
            .into_iter()
            .filter(|s| not_dup(&s.origin))
            .collect(),
    );
    let bucket_state_stores: Vec<_> = sorted(
        bucket_state_stores
            .into_iter()
            .filter(|s| not_dup(&s.origin))
            .collect(),
    );
    for s in &git_state_stores {
        diagnostics.extend(check_git_store(s));
    }
    for s in &bucket_state_stores {
        if s.object.spec.bucket_name.is_empty() {
            diagnostics.push(s.origin.diag(
                Code::InvalidField,
                Some(&s.id),
                "spec.bucketName",
                "must not be empty",
            ));
        }
        if s.object.spec.endpoint.contains("://") {
            diagnostics.push(s.origin.diag(
                Code::InvalidField,
                Some(&s.id),
                "spec.endpoint",
                format!(
                    "{:?} must be host[:port] without a scheme (use insecure: true for plain HTTP)",
                    s.object.spec.endpoint
                ),
            ));
        }
    }

    // Destinations.
    let mut valid_destinations = Vec::new();
    let mut paths: BTreeMap<(StateStoreKind, String, String), Origin> = BTreeMap::new();
    for d in sorted(
        destinations
            .into_iter()
            .filter(|d| not_dup(&d.origin))
            .collect(),
    ) {
        let r = &d.object.spec.state_store_ref;
        let exists = match r.kind {
            StateStoreKind::GitStateStore => git_state_stores.iter().any(|s| s.id.name == r.name),
            StateStoreKind::BucketStateStore => {
                bucket_state_stores.iter().any(|s| s.id.name == r.name)
            }
        };
        let mut errs = Vec::new();
        if !exists {
            errs.push(d.origin.diag(
                Code::MissingStateStore,
                Some(&d.id),
                "spec.stateStoreRef.name",
                format!("{} {:?} does not exist", r.kind.as_str(), r.name),
            ));
        }
        if d.object.spec.path.trim().is_empty() {
            errs.push(d.origin.diag(
                Code::InvalidField,
                Some(&d.id),
                "spec.path",
                "path field is required",
            ));
        } else if let Err(m) = check_relative_path(&d.object.spec.path) {
            errs.push(
                d.origin
                    .diag(Code::InvalidField, Some(&d.id), "spec.path", m),
            );
        } else {
            let key = (r.kind, r.name.clone(), normalise_path(&d.object.spec.path));
            if let Some(first) = paths.get(&key) {
                errs.push(d.origin.diag(
                    Code::DuplicateDestinationPath,
                    Some(&d.id),
                    "spec.path",
                    format!(
                        "path {:?} on {} {:?} is already used by the Destination at {first}",
                        d.object.spec.path,
                        r.kind.as_str(),
                        r.name
                    ),
                ));
            } else {
                paths.insert(key, d.origin.clone());
            }
        }
        // The ownership index lives at the repository root (`.promised/`) of a Git store and
        // at `<spec.path>/.promised/index.json` in a bucket; a flat Destination there would
        // hand it to Flux/Argo CD, which choke on non-Kubernetes YAML.
        let (at_index, index) = match r.kind {
            StateStoreKind::GitStateStore => {
                let store_path = git_state_stores
                    .iter()
                    .find(|s| s.id.name == r.name)
                    .map(|s| s.object.spec.path.clone())
                    .unwrap_or_default();
                (
                    normalise_path(&format!("{store_path}/{}", d.object.spec.path)).is_empty(),
                    ".promised/".to_string(),
                )
            }
            StateStoreKind::BucketStateStore => {
                let store_path = bucket_state_stores
                    .iter()
                    .find(|s| s.id.name == r.name)
                    .map(|s| normalise_path(&s.object.spec.path))
                    .unwrap_or_default();
                (
                    normalise_path(&d.object.spec.path).is_empty(),
                    normalise_path(&format!("{store_path}/.promised/index.json")),
                )
            }
        };
        if errs.is_empty()
            && d.object.spec.filepath.mode != crate::model::FilepathMode::NestedByMetadata
            && at_index
        {
            diagnostics.push(
                d.origin
                    .diag(
                        Code::InvalidField,
                        Some(&d.id),
                        "spec.path",
                        format!("a flat Destination at the state store root also exposes promised's ownership index ({index}) to Argo CD and Flux; use a sub-directory"),
                    )
                    .warning(),
            );
        }
        if errs.is_empty() {
            valid_destinations.push(d);
        } else {
            rejected.push(Rejected {
                origin: d.origin.clone(),
                id: d.id.clone(),
                reasons: errs.iter().map(|e| e.message.clone()).collect(),
                promise: None,
            });
            diagnostics.extend(errs);
        }
    }

    // Promises.
    let mut valid_promises = Vec::new();
    // (group, kind, promise) of Promises rejected for other reasons, to word request errors.
    let mut rejected_apis: Vec<(String, String, String)> = Vec::new();
    let promise_names: BTreeSet<String> = promises.iter().map(|p| p.id.name.clone()).collect();
    for p in sorted(
        promises
            .into_iter()
            .filter(|p| not_dup(&p.origin))
            .collect(),
    ) {
        let (errs, warns, api, schema) = check_promise(&p, &promise_names);
        diagnostics.extend(warns);
        if errs.is_empty() {
            valid_promises.push(ValidPromise {
                promise: p,
                api,
                schema,
            });
        } else {
            if let Some(Ok(Some(a))) = p.object.spec.api.as_ref().map(PromiseApi::from_crd) {
                rejected_apis.push((a.group, a.kind, p.id.name.clone()));
            }
            rejected.push(Rejected {
                origin: p.origin.clone(),
                id: p.id.clone(),
                reasons: errs.iter().map(|e| e.message.clone()).collect(),
                promise: None,
            });
            diagnostics.extend(errs);
        }
    }
    // Two Promises serving one API: both are unusable (kratix #867).
    let mut by_gk: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, p) in valid_promises.iter().enumerate() {
        if let Some(api) = &p.api {
            by_gk
                .entry((api.group.clone(), api.kind.clone()))
                .or_default()
                .push(i);
        }
    }
    let mut drop_idx = BTreeSet::new();
    for ((group, kind), idx) in by_gk.iter().filter(|(_, v)| v.len() > 1) {
        for &i in idx {
            let p = &valid_promises[i];
            let others: Vec<String> = idx
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| valid_promises[j].name().to_string())
                .collect();
            let d = p.promise.origin.diag(
                Code::DuplicateApi,
                Some(&p.promise.id),
                "spec.api.spec.names.kind",
                format!(
                    "{group}/{kind} is also served by Promise {}",
                    others.join(", ")
                ),
            );
            rejected.push(Rejected {
                origin: p.promise.origin.clone(),
                id: p.promise.id.clone(),
                reasons: vec![d.message.clone()],
                promise: None,
            });
            rejected_apis.push((group.clone(), kind.clone(), p.name().to_string()));
            diagnostics.push(d);
            drop_idx.insert(i);
        }
    }
    let valid_promises: Vec<ValidPromise> = valid_promises
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop_idx.contains(i))
        .map(|(_, p)| p)
        .collect();
    // `requiredPromises` cycles: a Promise waits for one that waits for it, so neither ever
    // becomes available and their requests would stay Pending forever. Every Promise on a
    // cycle is rejected, naming the chain.
    let cycles = required_promise_cycles(&valid_promises);
    let valid_promises: Vec<ValidPromise> = valid_promises
        .into_iter()
        .filter_map(|p| {
            let Some(chain) = cycles.get(p.name()) else {
                return Some(p);
            };
            let d = p.promise.origin.diag(
                Code::RequiredPromiseCycle,
                Some(&p.promise.id),
                "spec.requiredPromises",
                format!(
                    "requiredPromises form a cycle: {chain}; none of them can become available"
                ),
            );
            if let Some(api) = &p.api {
                rejected_apis.push((api.group.clone(), api.kind.clone(), p.name().to_string()));
            }
            rejected.push(Rejected {
                origin: p.promise.origin.clone(),
                id: p.promise.id.clone(),
                reasons: vec![d.message.clone()],
                promise: None,
            });
            diagnostics.push(d);
            None
        })
        .collect();

    // Requests: served by which Promise? A kind served by a Promise that was rejected is
    // reported as such, not as "unserved".
    let mut requests = Vec::new();
    let api_hashes: HashMap<&str, Arc<str>> = valid_promises
        .iter()
        .map(|p| {
            let api = p.promise.raw.get("spec").and_then(|s| s.get("api"));
            let text = api.map(Value::to_string).unwrap_or_default();
            (p.name(), crate::state::sha256_hex(text.as_bytes()).into())
        })
        .collect();
    let mut admitted: HashMap<(gix::ObjectId, usize), Vec<Admission>> =
        HashMap::with_capacity(cache.done.len());
    for c in candidates {
        let api_version = c
            .raw
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let served = valid_promises.iter().find(|p| {
            p.api
                .as_ref()
                .is_some_and(|a| a.group == group && a.kind == c.id.kind)
        });
        if !not_dup(&c.origin) {
            // A duplicate, rejected above: note the Promise it is a request of.
            if let Some(r) = rejected.iter_mut().find(|r| r.origin == c.origin) {
                r.promise = served.map(|p| p.name().to_string());
            }
            continue;
        }
        let Some(promise) = served else {
            let by = rejected_apis
                .iter()
                .find(|(g, k, _)| g == group && *k == c.id.kind)
                .map(|(_, _, pname)| pname.clone())
                .or_else(|| served_by_of(group, &c.id.kind));
            let msg = match &by {
                Some(pname) => format!(
                    "{api_version} {} is served by Promise {pname}, which is invalid",
                    c.id.kind
                ),
                None => format!("no Promise serves {api_version} {}", c.id.kind),
            };
            let d = c.origin.diag(Code::UnservedKind, Some(&c.id), "kind", msg);
            rejected.push(Rejected {
                origin: c.origin.clone(),
                id: c.id.clone(),
                reasons: vec![d.message.clone()],
                promise: by,
            });
            diagnostics.push(d);
            continue;
        };
        let api = promise.api.as_ref().expect("served promises have an API");
        if !api.served_versions.iter().any(|v| v == version) {
            let d = c.origin.diag(
                Code::UnservedKind,
                Some(&c.id),
                "apiVersion",
                format!(
                    "version {version:?} is not served by Promise {} (served: {})",
                    promise.name(),
                    api.served_versions.join(", ")
                ),
            );
            rejected.push(Rejected {
                origin: c.origin.clone(),
                id: c.id.clone(),
                reasons: vec![d.message.clone()],
                promise: Some(promise.name().to_string()),
            });
            diagnostics.push(d);
            continue;
        }
        let pname = promise.name();
        let api_hash = &api_hashes[pname];
        // A cached admission moves to this pass's cache (no copy); a miss is admitted now.
        let cached = c.blob.and_then(|blob| {
            let list = cache.done.get_mut(&(blob, c.origin.document))?;
            let i = list.iter().position(|a| {
                a.file == c.origin.file && a.promise == pname && *a.api_hash == **api_hash
            })?;
            Some(list.swap_remove(i))
        });
        let result = match cached {
            Some(a) => {
                let result = a.result.clone();
                admitted
                    .entry((c.blob.expect("cached"), c.origin.document))
                    .or_default()
                    .push(a);
                result
            }
            None => {
                let result = admit_request(&c, promise, api).map(Arc::new);
                if let Some(blob) = c.blob {
                    admitted
                        .entry((blob, c.origin.document))
                        .or_default()
                        .push(Admission {
                            file: c.origin.file.clone(),
                            promise: pname.to_string(),
                            api_hash: api_hash.clone(),
                            result: result.clone(),
                        });
                }
                result
            }
        };
        match result {
            Ok(r) => requests.push(r),
            Err(errs) => {
                rejected.push(Rejected {
                    origin: c.origin.clone(),
                    id: c.id.clone(),
                    reasons: errs
                        .iter()
                        .map(|e| format!("{}: {}", e.field.clone().unwrap_or_default(), e.message))
                        .collect(),
                    promise: Some(promise.name().to_string()),
                });
                diagnostics.extend(errs);
            }
        }
    }
    cache.done = admitted;
    requests.sort_by(|a, b| {
        (&a.promise, a.namespace(), a.name()).cmp(&(&b.promise, b.namespace(), b.name()))
    });

    // Health records must name a Promise and a request (warnings: they only feed status).
    for h in &health_records {
        let pname = h
            .object
            .data
            .promise_ref
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !valid_promises.iter().any(|p| p.name() == pname) {
            diagnostics.push(
                h.origin
                    .diag(
                        Code::InvalidField,
                        Some(&h.id),
                        "data.promiseRef.name",
                        format!("Promise {pname:?} does not exist"),
                    )
                    .warning(),
            );
        }
    }

    diagnostics.sort_by(|a, b| {
        (&a.file, a.document, &a.field, &a.message)
            .cmp(&(&b.file, b.document, &b.field, &b.message))
    });
    diagnostics.dedup();
    let unloadable = crate::config::unloadable_files(&diagnostics)
        .into_iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    ValidConfig {
        promises: valid_promises,
        requests,
        destinations: valid_destinations,
        git_state_stores,
        bucket_state_stores,
        health_records: health_records
            .into_iter()
            .filter(|h| not_dup(&h.origin))
            .collect(),
        rejected,
        assets: {
            let mut a = assets;
            a.sort_by(|x, y| x.origin.cmp(&y.origin));
            a
        },
        diagnostics,
        commit,
        unloadable,
    }
}

/// The folder of a repository-relative file (`""` at the root): a Promise's folder is the
/// folder of the file that holds it.
pub fn folder_of(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(d, _)| d)
}

fn sorted<T>(mut v: Vec<Located<T>>) -> Vec<Located<T>> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// `a/b/` → `a/b`; `/`, `.` and `./` → `` (the store root).
pub fn normalise_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Rejects `..` segments and backslashes in a store path.
fn check_relative_path(p: &str) -> Result<(), String> {
    if p.split('/').any(|s| s == "..") {
        return Err(format!("{p:?} must not contain \"..\""));
    }
    if p.contains('\\') {
        return Err(format!("{p:?} must use \"/\" as separator"));
    }
    // The state stores' own rule (`.git` segments, NUL, …): a path they refuse would fail every
    // write to the store.
    let norm: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if !norm.is_empty()
        && let Err(statestores::Error::InvalidPath { reason, .. }) =
            statestores::validate_relative_path(&norm.join("/"))
    {
        return Err(format!("{p:?} is refused by state stores: {reason}"));
    }
    Ok(())
}

fn check_git_store(s: &Located<GitStateStore>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let url = &s.object.spec.url;
    if url.trim().is_empty() {
        out.push(s.origin.diag(
            Code::InvalidField,
            Some(&s.id),
            "spec.url",
            "must not be empty",
        ));
    } else if url.starts_with("http://") {
        out.push(
            s.origin
                .diag(
                    Code::InvalidField,
                    Some(&s.id),
                    "spec.url",
                    "plain http:// sends credentials unencrypted (Kratix only accepts https://)",
                )
                .warning(),
        );
    }
    if s.object.spec.auth_method == GitAuthMethod::Ssh && !url.trim().is_empty() && !is_ssh_url(url)
    {
        out.push(s.origin.diag(
            Code::InvalidField,
            Some(&s.id),
            "spec.url",
            format!(
                "{:?} does not match {SSH_URL_PATTERN}: authMethod ssh needs an SSH URL such as git@github.com:org/repo.git or ssh://git@host/org/repo.git",
                statestores::git::config::redact_url(url)
            ),
        ));
    }
    if s.object.spec.branch.is_empty() {
        out.push(s.origin.diag(
            Code::InvalidField,
            Some(&s.id),
            "spec.branch",
            "must not be empty",
        ));
    }
    if let Err(m) = check_relative_path(&s.object.spec.path) {
        out.push(
            s.origin
                .diag(Code::InvalidField, Some(&s.id), "spec.path", m),
        );
    }
    out
}

type PromiseCheck = (
    Vec<Diagnostic>,
    Vec<Diagnostic>,
    Option<PromiseApi>,
    Option<Arc<CrdSchema>>,
);

fn check_promise(p: &Located<Promise>, all: &BTreeSet<String>) -> PromiseCheck {
    let mut errs = Vec::new();
    let mut warns = Vec::new();
    let o = &p.origin;
    let id = Some(&p.id);
    let name = &p.object.metadata.name;

    // Pipelines are re-decoded from the raw document so every bad pipeline is reported with
    // its full field path, not only the first one serde meets.
    let raw_wf = p
        .raw
        .pointer("/spec/workflows")
        .cloned()
        .unwrap_or(Value::Null);
    for ty in ["resource", "promise"] {
        for action in ["configure", "delete"] {
            let base = format!("spec.workflows.{ty}.{action}");
            let Some(list) = raw_wf.get(ty).and_then(|t| t.get(action)) else {
                continue;
            };
            let Value::Array(items) = list else {
                if !list.is_null() {
                    errs.push(o.diag(
                        Code::InvalidPipeline,
                        id,
                        &base,
                        format!("expected a list of Pipelines, found {}", type_name_of(list)),
                    ));
                }
                continue;
            };
            let mut names: BTreeMap<String, usize> = BTreeMap::new();
            for (i, item) in items.iter().enumerate() {
                let at = format!("{base}[{i}]");
                let pl: Pipeline = match from_value(item) {
                    Ok(pl) => pl,
                    Err((path, msg)) => {
                        errs.push(o.diag(Code::InvalidPipeline, id, join_path(&at, &path), msg));
                        continue;
                    }
                };
                if pl.api_version != KRATIX_API_VERSION {
                    errs.push(o.diag(
                        Code::InvalidPipeline,
                        id,
                        format!("{at}.apiVersion"),
                        format!(
                            "expected {KRATIX_API_VERSION:?}, found {:?}",
                            pl.api_version
                        ),
                    ));
                }
                if pl.kind != "Pipeline" {
                    errs.push(o.diag(
                        Code::InvalidPipeline,
                        id,
                        format!("{at}.kind"),
                        format!("expected \"Pipeline\", found {:?}", pl.kind),
                    ));
                }
                let pname = &pl.metadata.name;
                if pname.is_empty() {
                    errs.push(o.diag(
                        Code::InvalidPipeline,
                        id,
                        format!("{at}.metadata.name"),
                        "required field is missing",
                    ));
                    continue;
                }
                let full = format!("{name}-{ty}-{action}-{pname}");
                if full.len() > MAX_PIPELINE_FULL_NAME {
                    errs.push(o.diag(
                        Code::PipelineNameTooLong,
                        id,
                        format!("{at}.metadata.name"),
                        format!("{full:?} is {} characters; <promise>-<type>-<action>-<pipeline> must be at most {MAX_PIPELINE_FULL_NAME}", full.len()),
                    ));
                }
                if let Some(first) = names.insert(pname.clone(), i) {
                    errs.push(o.diag(
                        Code::DuplicatePipelineName,
                        id,
                        format!("{at}.metadata.name"),
                        format!("pipeline name {pname:?} is already used by {base}[{first}]"),
                    ));
                }
                for (k, v) in &pl.metadata.labels {
                    if let Err(m) = check_label(k, v) {
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.metadata.labels[{k:?}]"),
                            m,
                        ));
                    }
                }
                if pl.spec.containers.is_empty() {
                    errs.push(o.diag(
                        Code::InvalidPipeline,
                        id,
                        format!("{at}.spec.containers"),
                        "at least one container is required",
                    ));
                }
                for (ci, c) in pl.spec.containers.iter().enumerate() {
                    if c.name.is_empty() {
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.spec.containers[{ci}].name"),
                            "required field is missing",
                        ));
                    }
                    if c.image.is_empty() {
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.spec.containers[{ci}].image"),
                            "required field is missing",
                        ));
                    }
                    errs.extend(check_container_env(o, id, &at, ci, pname, c, None));
                }
            }
            if action == "delete" && items.len() > 1 {
                warns.push(
                    o.diag(
                        Code::InvalidPipeline,
                        id,
                        &base,
                        format!(
                            "{} delete pipelines given; only the first is ever run (as in Kratix)",
                            items.len()
                        ),
                    )
                    .warning(),
                );
            }
        }
    }
    let spec_interval = p
        .object
        .spec
        .workflows
        .config
        .as_ref()
        .and_then(|c| c.reconciliation_interval.as_ref())
        .map(|iv| {
            (
                "spec.workflows.config.reconciliationInterval".to_string(),
                iv,
            )
        });
    let annotation_interval = p
        .object
        .metadata
        .annotations
        .get(RECONCILIATION_INTERVAL_ANNOTATION)
        .map(|iv| {
            (
                format!("metadata.annotations[{RECONCILIATION_INTERVAL_ANNOTATION:?}]"),
                iv,
            )
        });
    for (field, iv) in spec_interval.into_iter().chain(annotation_interval) {
        match parse_go_duration(iv) {
            Ok(d) if d < MIN_RECONCILIATION_INTERVAL => errs.push(o.diag(
                Code::InvalidField,
                id,
                field,
                format!("{iv:?} is shorter than the 1m minimum"),
            )),
            Ok(_) => {}
            Err(m) => errs.push(o.diag(Code::InvalidField, id, field, m)),
        }
    }
    for (i, s) in p.object.spec.destination_selectors.iter().enumerate() {
        if s.match_labels.is_empty() {
            warns.push(
                o.diag(
                    Code::InvalidField,
                    id,
                    format!("spec.destinationSelectors[{i}].matchLabels"),
                    "empty selector matches every Destination without strictMatchLabels",
                )
                .warning(),
            );
        }
    }
    for (i, r) in p.object.spec.required_promises.iter().enumerate() {
        if !all.contains(&r.name) {
            warns.push(
                o.diag(
                    Code::MissingRequiredPromise,
                    id,
                    format!("spec.requiredPromises[{i}].name"),
                    format!("required Promise {:?} is not in the config repo; requests will wait until it is available", r.name),
                )
                .warning(),
            );
        }
    }

    let resource = &p.object.spec.workflows.resource;
    if p.object.spec.api.is_none() && !(resource.configure.is_empty() && resource.delete.is_empty())
    {
        warns.push(
            o.diag(
                Code::InvalidApi,
                id,
                "spec.workflows.resource",
                "the Promise has resource workflows but no spec.api: no resource request can be made, so they never run",
            )
            .warning(),
        );
    }

    // The API.
    let mut api = None;
    let mut schema = None;
    if let Some(raw_api) = &p.object.spec.api {
        match PromiseApi::from_crd(raw_api) {
            Ok(None) => {}
            Ok(Some(a)) => {
                if a.scope != "Namespaced" {
                    errs.push(o.diag(
                        Code::ClusterScopedApi,
                        id,
                        "spec.api.spec.scope",
                        format!("{:?}: Promise APIs must be Namespaced", a.scope),
                    ));
                }
                match &a.schema {
                    Some(s) => match CrdSchema::new(s) {
                        Ok(c) => schema = Some(Arc::new(c)),
                        Err(e) => errs.push(o.diag(
                            Code::InvalidApi,
                            id,
                            format!("spec.api.spec.versions[{}].schema.openAPIV3Schema", storage_index(raw_api)),
                            e.to_string(),
                        )),
                    },
                    None => warns.push(
                        o.diag(Code::InvalidApi, id, "spec.api.spec.versions", "the storage version has no openAPIV3Schema; requests are not validated")
                            .warning(),
                    ),
                }
                api = Some(a);
            }
            Err((field, msg)) => {
                errs.push(o.diag(Code::InvalidApi, id, join_path("spec.api", &field), msg))
            }
        }
    }
    (errs, warns, api, schema)
}

/// Promises on a `requiredPromises` cycle (among `promises`), each with its chain
/// (`a → b → a`, starting at itself). Requirements on Promises outside `promises` are not
/// edges (a missing Promise is a warning of its own).
fn required_promise_cycles(promises: &[ValidPromise]) -> BTreeMap<String, String> {
    let edges: BTreeMap<&str, Vec<&str>> = promises
        .iter()
        .map(|p| {
            (
                p.name(),
                p.promise
                    .object
                    .spec
                    .required_promises
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for &start in edges.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some((node, i)) = stack.last().copied() {
            let next = edges.get(node).and_then(|e| e.get(i)).copied();
            let Some(next) = next else {
                stack.pop();
                continue;
            };
            stack.last_mut().expect("non-empty").1 += 1;
            if next == start {
                let mut chain: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
                chain.push(start);
                out.insert(start.to_string(), chain.join(" → "));
                break;
            }
            if edges.contains_key(next) && seen.insert(next) {
                stack.push((next, 0));
            }
        }
    }
    out
}

fn storage_index(api: &Value) -> usize {
    api.pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|v| {
            v.iter()
                .position(|x| x.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .unwrap_or(0)
}

fn join_path(base: &str, rest: &str) -> String {
    match (base.is_empty(), rest.is_empty()) {
        (_, true) => base.to_string(),
        (true, false) => rest.to_string(),
        (false, false) if rest.starts_with('[') => format!("{base}{rest}"),
        _ => format!("{base}.{rest}"),
    }
}

/// Admits one request: namespace, name length, prune/default/validate, Kratix label.
fn admit_request(
    c: &Located<Value>,
    promise: &ValidPromise,
    api: &PromiseApi,
) -> Result<ValidRequest, Vec<Diagnostic>> {
    let o = &c.origin;
    let mut id = c.id.clone();
    let mut obj = (*c.raw).clone();
    let mut errs = Vec::new();
    let Some(map) = obj.as_object_mut() else {
        return Err(vec![o.diag(
            Code::NotAnObject,
            Some(&id),
            "",
            "expected a mapping",
        )]);
    };
    // Status is a subresource: the API server ignores it on create.
    map.remove("status");
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else {
        return Err(vec![o.diag(
            Code::InvalidRequest,
            Some(&id),
            "metadata",
            format!("expected object, found {}", type_name_of(meta)),
        )]);
    };
    // Namespace first, so every diagnostic names the object as `default/<name>`.
    match meta.get("namespace") {
        None => {
            meta.insert("namespace".into(), Value::String("default".into()));
            id.namespace = Some("default".into());
        }
        Some(Value::String(ns)) if is_dns_label(ns) => {}
        Some(v) => errs.push(o.diag(
            Code::InvalidRequest,
            Some(&id),
            "metadata.namespace",
            format!("{v} is not a valid namespace name"),
        )),
    }
    match meta.get("name") {
        Some(Value::String(n)) if !n.is_empty() => {
            // The schema (when there is one) reports the length itself, as Kratix's injected
            // `maxLength: 63` does.
            if n.len() > MAX_REQUEST_NAME && promise.schema.is_none() {
                errs.push(o.diag(
                    Code::InvalidRequest,
                    Some(&id),
                    "metadata.name",
                    format!("{} characters; must be at most {MAX_REQUEST_NAME}", n.len()),
                ));
            } else if !is_dns_subdomain(n) {
                errs.push(o.diag(Code::InvalidRequest, Some(&id), "metadata.name", format!("{n:?} must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character")));
            }
        }
        Some(other) if !other.is_string() => errs.push(o.diag(
            Code::InvalidRequest,
            Some(&id),
            "metadata.name",
            format!("expected string, found {}", type_name_of(other)),
        )),
        _ => errs.push(o.diag(
            Code::InvalidRequest,
            Some(&id),
            "metadata.name",
            "required field is missing",
        )),
    }
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    match labels.as_object_mut() {
        Some(l) => {
            for (k, v) in l.iter() {
                if !v.is_string() {
                    errs.push(o.diag(
                        Code::InvalidRequest,
                        Some(&id),
                        format!("metadata.labels[{k:?}]"),
                        format!("expected string, found {}", type_name_of(v)),
                    ));
                }
            }
            l.insert(
                PROMISE_NAME_LABEL.into(),
                Value::String(promise.name().to_string()),
            );
        }
        None => errs.push(o.diag(
            Code::InvalidRequest,
            Some(&id),
            "metadata.labels",
            "expected object",
        )),
    }
    if let Some(a) = meta.get("annotations")
        && !a
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
    {
        errs.push(o.diag(
            Code::InvalidRequest,
            Some(&id),
            "metadata.annotations",
            "expected a map of strings",
        ));
    }
    // The API server stores the object at the storage version.
    map.insert("apiVersion".into(), Value::String(api.api_version()));
    if let Some(schema) = &promise.schema {
        for fe in schema.admit(&mut obj) {
            errs.push(o.diag(Code::InvalidRequest, Some(&id), fe.path, fe.message));
        }
    }
    if errs.is_empty() {
        Ok(ValidRequest {
            origin: o.clone(),
            id,
            promise: promise.name().to_string(),
            spec_digest: spec_digest(&obj),
            input_hash_memo: Default::default(),
            key_memo: Default::default(),
            object: Arc::new(obj),
        })
    } else {
        Err(errs)
    }
}

/// Hex sha256 of `object.spec` as compact JSON (`null` when there is none).
pub fn spec_digest(object: &Value) -> String {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    crate::state::sha256_hex(spec.to_string().as_bytes())
}

/// Kratix's `^(ssh://)?([^/:]*?)@[^@]+$` ([`SSH_URL_PATTERN`]): an optional `ssh://`, a user
/// part without `/` or `:`, one `@`, and a non-empty rest without `@`.
fn is_ssh_url(url: &str) -> bool {
    let rest = url.strip_prefix("ssh://").unwrap_or(url);
    // The lazy user group takes the first `@`; the rest may hold no other.
    match rest.split_once('@') {
        Some((user, host_path)) => {
            !user.contains(['/', ':']) && !host_path.is_empty() && !host_path.contains('@')
        }
        None => false,
    }
}

/// A Kubernetes label: the key a qualified name (`[prefix/]name`, the prefix a DNS subdomain,
/// the name at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends), the value
/// empty or a name part (Kratix's Promise webhook: `validation.IsQualifiedName`,
/// `validation.IsValidLabelValue`). The error is one sentence in the apimachinery wording.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    const NAME_RULE: &str = "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let name_ok = |n: &str| {
        let b = n.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let key_err = |m: String| Err(format!("invalid label key {key:?}: {m}"));
    if name.contains('/') {
        return key_err(format!(
            "a qualified name must {NAME_RULE}, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
    }
    match prefix {
        Some("") => return key_err("prefix part must be non-empty".into()),
        Some(p) if !is_dns_subdomain(p) => {
            return key_err(format!(
                "prefix part {p:?} must be a lowercase RFC 1123 subdomain (e.g. 'example.com')"
            ));
        }
        _ => {}
    }
    if name.is_empty() {
        return key_err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return key_err("name part must be no more than 63 characters".into());
    }
    if !name_ok(name) {
        return key_err(format!("name part must {NAME_RULE}"));
    }
    if value.len() > 63 {
        return Err(format!(
            "invalid label value {value:?}: must be no more than 63 characters"
        ));
    }
    if !value.is_empty() && !name_ok(value) {
        return Err(format!(
            "invalid label value {value:?}: a valid label must be an empty string or {NAME_RULE}"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: what Kubernetes requires of most object names.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| !l.is_empty() && is_label_chars(l))
}

/// RFC 1123 label: namespaces.
fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

fn is_label_chars(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Parses a Go `time.ParseDuration` string (`1h30m`, `90s`, `10h`). Errors quote the input.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration (expected e.g. \"10h\", \"30m\", \"1h30m\")");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// The `env` of container `ci` of the Pipeline at `at` (a `spec.workflows…[i]` path):
/// `envFrom` (needs Kubernetes objects) and every `valueFrom` the process runtime cannot
/// resolve ([`crate::pipeline::env::check_shape`]); with `sources` (the daemon config), also
/// Secrets the Promise may not read and sources that are not configured
/// ([`crate::pipeline::env::check_access`]). Messages name the pipeline, container and
/// variable; the diagnostic names the Promise.
fn check_container_env(
    o: &Origin,
    id: Option<&ObjectRef>,
    at: &str,
    ci: usize,
    pipeline: &str,
    c: &crate::model::Container,
    sources: Option<(&str, &crate::pipeline::env::EnvSources)>,
) -> Vec<Diagnostic> {
    use crate::pipeline::env;
    let mut out = Vec::new();
    let who = format!("pipeline {pipeline:?} container {:?}", c.name);
    if c.env_from.is_some() && sources.is_none() {
        out.push(o.diag(
            Code::InvalidPipeline,
            id,
            format!("{at}.spec.containers[{ci}].envFrom"),
            format!("{who}: envFrom needs Kubernetes Secrets and ConfigMaps, which the process runtime does not have; list the variables in env (valueFrom supports fieldRef, secretKeyRef and configMapKeyRef)"),
        ));
    }
    for (ei, e) in c.env.iter().enumerate() {
        if e.value_from.is_none() {
            continue;
        }
        let check = match sources {
            None => env::check_shape(e),
            Some((promise, s)) => env::check_access(promise, e, s),
        };
        if let Err(m) = check {
            out.push(o.diag(
                Code::InvalidPipeline,
                id,
                format!("{at}.spec.containers[{ci}].env[{ei}].valueFrom"),
                format!("{who} env {:?}: {m}", e.name),
            ));
        }
    }
    out
}

/// The checks of `env[].valueFrom` that need the daemon config: a `secretKeyRef` must name a
/// Secret `pipelineSecrets.allow` lists for the Promise, and each source's directory must be
/// configured. A Promise that fails is rejected like any invalid Promise (its configure
/// workflows do not run and its requests are rejected with it; what it applied before is
/// kept), with one diagnostic per variable. `validate` cannot do this (it has no daemon
/// config); `promised reconcile`, `promised run` and `promised validate --daemon-config` call
/// it right after.
pub fn check_pipeline_env(cfg: &mut ValidConfig, sources: &crate::pipeline::env::EnvSources) {
    let mut bad: BTreeMap<String, Vec<Diagnostic>> = BTreeMap::new();
    for p in &cfg.promises {
        let name = p.name().to_string();
        let wf = &p.promise.object.spec.workflows;
        for (ty, actions) in [("resource", &wf.resource), ("promise", &wf.promise)] {
            for (action, list) in [
                ("configure", &actions.configure),
                ("delete", &actions.delete),
            ] {
                for (i, pl) in list.iter().enumerate() {
                    let at = format!("spec.workflows.{ty}.{action}[{i}]");
                    for (ci, c) in pl.spec.containers.iter().enumerate() {
                        let errs = check_container_env(
                            &p.promise.origin,
                            Some(&p.promise.id),
                            &at,
                            ci,
                            &pl.metadata.name,
                            c,
                            Some((&name, sources)),
                        );
                        if !errs.is_empty() {
                            bad.entry(name.clone()).or_default().extend(errs);
                        }
                    }
                }
            }
        }
    }
    if bad.is_empty() {
        return;
    }
    let mut kept = Vec::with_capacity(cfg.promises.len());
    for p in std::mem::take(&mut cfg.promises) {
        let Some(errs) = bad.remove(p.name()) else {
            kept.push(p);
            continue;
        };
        cfg.rejected.push(Rejected {
            origin: p.promise.origin.clone(),
            id: p.promise.id.clone(),
            reasons: errs.iter().map(|e| e.message.clone()).collect(),
            promise: None,
        });
        cfg.diagnostics.extend(errs);
        // Its requests go with it, worded as for any other invalid Promise.
        let (gone, stay): (Vec<_>, Vec<_>) = std::mem::take(&mut cfg.requests)
            .into_iter()
            .partition(|r| r.promise == p.name());
        cfg.requests = stay;
        for r in gone {
            let api_version = r
                .object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let d = r.origin.diag(
                Code::UnservedKind,
                Some(&r.id),
                "kind",
                format!(
                    "{api_version} {} is served by Promise {}, which is invalid",
                    r.id.kind,
                    p.name()
                ),
            );
            cfg.rejected.push(Rejected {
                origin: r.origin.clone(),
                id: r.id.clone(),
                reasons: vec![d.message.clone()],
                promise: Some(p.name().to_string()),
            });
            cfg.diagnostics.push(d);
        }
    }
    cfg.promises = kept;
    cfg.diagnostics.sort_by(|a, b| {
        (&a.file, a.document, &a.field, &a.message)
            .cmp(&(&b.file, b.document, &b.field, &b.message))
    });
    cfg.diagnostics.dedup();
}
