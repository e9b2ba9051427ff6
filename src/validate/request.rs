//! Request admission: a resource request is admitted against the Promise that serves its kind
//! as the API server admits an object of a CRD (kratix-contract.md §2.4): `status` dropped,
//! namespace `default` when none is given, name and labels checked, unknown fields pruned,
//! defaults applied and the storage version's `openAPIV3Schema` validated
//! (`crate::schema::CrdSchema::admit`), `metadata.name` at most [`MAX_REQUEST_NAME`]
//! characters, then the `kratix.io/promise-name` label added. Results are cached between
//! passes ([`Admissions`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::cross::ServedBy;
use super::helpers::{is_dns_label, is_dns_subdomain};
use super::{Findings, Rejected, ValidPromise, ValidRequest};
use crate::config::Candidate;
use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{PROMISE_NAME_LABEL, PromiseApi, type_name_of};

/// Longest resource request name (Kratix injects `maxLength: 63` on `metadata.name`).
pub const MAX_REQUEST_NAME: usize = 63;

/// Admission results kept between passes: a request document whose text (file, document
/// index, blob id) and Promise API are unchanged is not pruned, defaulted and validated again
/// (at 10,000 requests admission is most of a validation). Holds only the entries used by
/// the last [`validate_with`](super::validate_with) call; documents without a blob id are
/// never cached.
#[derive(Debug, Default)]
pub struct Admissions {
    /// (blob id, document index) → the admissions of that document text: usually one; more
    /// when the same text sits in several files.
    done: HashMap<(gix::ObjectId, usize), Vec<Admission>>,
}

/// One cached admission: the rest of its key (file, Promise name, hash of the Promise's
/// `spec.api`) and its result. An admitted request holds its file and Promise name itself;
/// only a refused one keeps its own copy (10,000 admitted requests: 1 MB less).
#[derive(Debug)]
struct Admission {
    api_hash: Arc<str>,
    result: Result<Arc<ValidRequest>, Refused>,
}

/// A refused admission: its file, Promise name and findings.
#[derive(Debug)]
struct Refused {
    file: String,
    promise: String,
    errors: Vec<Diagnostic>,
}

impl Admission {
    fn new(
        file: &str,
        promise: &str,
        api_hash: Arc<str>,
        result: &Result<Arc<ValidRequest>, Vec<Diagnostic>>,
    ) -> Admission {
        let result = match result {
            Ok(r) => Ok(r.clone()),
            Err(errors) => Err(Refused {
                file: file.to_string(),
                promise: promise.to_string(),
                errors: errors.clone(),
            }),
        };
        Admission { api_hash, result }
    }

    /// The file and Promise name it was admitted for.
    fn key(&self) -> (&str, &str) {
        match &self.result {
            Ok(r) => (&r.origin.file, &r.promise),
            Err(e) => (&e.file, &e.promise),
        }
    }

    fn result(&self) -> Result<Arc<ValidRequest>, Vec<Diagnostic>> {
        match &self.result {
            Ok(r) => Ok(r.clone()),
            Err(e) => Err(e.errors.clone()),
        }
    }
}

/// Admits every request candidate (`candidates`: documents of a kind some Promise document
/// names) that is not a duplicate (`not_dup`) against the valid Promise that serves it,
/// reusing and refreshing `cache`. A kind served only by a rejected Promise (`rejected_apis`,
/// `served_by`) is reported as such, not as "unserved". Sorted by (promise, namespace, name).
pub(super) fn admit_requests(
    candidates: Vec<Candidate>,
    valid_promises: &[ValidPromise],
    rejected_apis: &[(String, String, String)],
    served_by: &ServedBy,
    not_dup: &impl Fn(&Origin) -> bool,
    cache: &mut Admissions,
    found: &mut Findings,
) -> Vec<Arc<ValidRequest>> {
    let Findings {
        rejected,
        diagnostics,
    } = found;
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
        let api_version = c.api_version();
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
                .or_else(|| served_by.of(group, &c.id.kind));
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
                a.key() == (c.origin.file.as_str(), pname) && *a.api_hash == **api_hash
            })?;
            Some(list.swap_remove(i))
        });
        let result = match cached {
            Some(a) => {
                let result = a.result();
                admitted
                    .entry((c.blob.expect("cached"), c.origin.document))
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push(a);
                result
            }
            None => {
                let result = admit_request(&c, promise, api).map(Arc::new);
                if let Some(blob) = c.blob {
                    // Room for one: the same text in several files is rare, and a
                    // pushed-to empty `Vec` keeps room for four (320 bytes a request).
                    admitted
                        .entry((blob, c.origin.document))
                        .or_insert_with(|| Vec::with_capacity(1))
                        .push(Admission::new(
                            &c.origin.file,
                            pname,
                            api_hash.clone(),
                            &result,
                        ));
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
    requests
}

/// Admits one request: namespace, name length, prune/default/validate, Kratix label.
fn admit_request(
    c: &Candidate,
    promise: &ValidPromise,
    api: &PromiseApi,
) -> Result<ValidRequest, Vec<Diagnostic>> {
    let o = &c.origin;
    let mut id = c.id.clone();
    let mut obj = Arc::unwrap_or_clone(c.value());
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
            object: crate::state::CompactValue::new(obj),
        })
    } else {
        Err(errs)
    }
}

/// Hex sha256 of `object.spec` as compact JSON (`null` when there is none).
pub fn spec_digest(object: &Value) -> crate::state::HashText {
    let spec = object.get("spec").unwrap_or(&Value::Null);
    crate::state::HashText::sha256_of(spec.to_string().as_bytes())
}

/// Admits one request that did not come from the config repo (a compound Promise's
/// sub-request, [`crate::reconcile`] `compound`) exactly as a request read from a file: the
/// Promise of `promises` whose API serves its `apiVersion` group and kind, at a served
/// version, then `admit_request`'s rules. `Err((promise, reasons))`: the Promise that
/// serves it (`None` when none does) and one `field: message` reason per problem.
pub fn admit_one(
    c: &Candidate,
    promises: &[ValidPromise],
) -> Result<Arc<ValidRequest>, (Option<String>, Vec<String>)> {
    let api_version = c.api_version();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let Some(promise) = promises.iter().find(|p| {
        p.api
            .as_ref()
            .is_some_and(|a| a.group == group && a.kind == c.id.kind)
    }) else {
        return Err((
            None,
            vec![format!(
                "kind: no Promise serves {api_version} {}",
                c.id.kind
            )],
        ));
    };
    let api = promise.api.as_ref().expect("found by its API");
    let pname = Some(promise.name().to_string());
    if !api.served_versions.iter().any(|v| v == version) {
        return Err((
            pname,
            vec![format!(
                "apiVersion: version {version:?} is not served by Promise {} (served: {})",
                promise.name(),
                api.served_versions.join(", ")
            )],
        ));
    }
    admit_request(c, promise, api)
        .map(Arc::new)
        .map_err(|errs| {
            let reasons = errs
                .iter()
                .map(|e| format!("{}: {}", e.field.clone().unwrap_or_default(), e.message))
                .collect();
            (pname, reasons)
        })
}
