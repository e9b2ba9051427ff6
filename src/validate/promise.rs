//! Promise validation, one Promise at a time: workflows (every entry a
//! `platform.kratix.io/v1alpha1` `Pipeline` with unknown fields rejected, unique names,
//! `<promise>-<type>-<action>-<pipeline>` at most [`MAX_PIPELINE_FULL_NAME`] characters, valid
//! labels, containers with a name, an image and an `env` the process runtime can resolve),
//! reconciliation intervals (Go durations of at least [`MIN_RECONCILIATION_INTERVAL`]),
//! selectors, `requiredPromises` and the API (a `Namespaced` CRD whose storage version's
//! `openAPIV3Schema` compiles). Kratix: `internal/webhook/v1alpha1/promise_webhook.go`,
//! kratix-contract.md §1.1. Checks across Promises (one API served twice, `requiredPromises`
//! cycles) are in `cross.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::Value;

use super::helpers::check_object_name;
use super::value_from::check_container_env;
use super::{Findings, Rejected, ValidPromise, check_label, parse_go_duration, sorted};
use crate::config::{Located, from_value};
use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{KRATIX_API_VERSION, Pipeline, Promise, PromiseApi, type_name_of};
use crate::schema::CrdSchema;

/// Longest `<promise>-<type>-<action>-<pipeline>` Kratix accepts (promise_webhook.go).
pub const MAX_PIPELINE_FULL_NAME: usize = 60;
/// Promise annotation that overrides `spec.workflows.config.reconciliationInterval`
/// (kratix-contract.md §1.1, §7).
pub const RECONCILIATION_INTERVAL_ANNOTATION: &str = "kratix.io/reconciliation-interval";
/// Shortest reconciliation interval Kratix admits, for the spec field and the annotation alike
/// (Kratix: `MinReconciliationInterval`, enforced by the Promise webhook).
pub const MIN_RECONCILIATION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Checks every Promise that is not a duplicate (`not_dup`), in name order: the valid ones,
/// and the (group, kind, Promise) of the rejected ones whose API parses, so that their
/// requests are reported as served by an invalid Promise rather than as unserved.
pub(super) fn check_promises(
    promises: Vec<Located<Promise>>,
    not_dup: &impl Fn(&Origin) -> bool,
    found: &mut Findings,
) -> (Vec<ValidPromise>, Vec<(String, String, String)>) {
    let Findings {
        rejected,
        diagnostics,
    } = found;
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
    (valid_promises, rejected_apis)
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
    if let Err(m) = check_object_name(name) {
        errs.push(o.diag(Code::InvalidField, id, "metadata.name", m));
    }

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
                // The pipeline name becomes part of Kubernetes object names (the Job and its
                // service account `<promise>-<type>-<action>-<pipeline>`), so it follows their
                // rule (Kratix: `pipeline_types.go`; apimachinery `NameIsDNSSubdomain`).
                if let Err(m) = check_object_name(pname) {
                    errs.push(o.diag(Code::InvalidPipeline, id, format!("{at}.metadata.name"), m));
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
                // Container names are unique within a Pipeline: Kubernetes refuses a pod
                // with two containers of one name (core validation `validateContainers`),
                // and a Pipeline is one pod in Kratix.
                let mut container_names: BTreeMap<&str, usize> = BTreeMap::new();
                for (ci, c) in pl.spec.containers.iter().enumerate() {
                    if c.name.is_empty() {
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.spec.containers[{ci}].name"),
                            "required field is missing",
                        ));
                    } else if let Some(first) = container_names.insert(&c.name, ci) {
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.spec.containers[{ci}].name"),
                            format!(
                                "container name {:?} is already used by {at}.spec.containers[{first}]; names must be unique in a Pipeline",
                                c.name
                            ),
                        ));
                    }
                    if c.image.is_empty() {
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.spec.containers[{ci}].image"),
                            "required field is missing",
                        ));
                    } else if let Err(e) = crate::image::check_reference(&c.image) {
                        // Kubernetes refuses such a pod too (`InvalidImageName`).
                        errs.push(o.diag(
                            Code::InvalidPipeline,
                            id,
                            format!("{at}.spec.containers[{ci}].image"),
                            e.to_string(),
                        ));
                    }
                    errs.extend(check_container_env(o, id, &at, ci, pname, c));
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
    let runtime_annotation = crate::cluster::settings::RUNTIME_ANNOTATION;
    if let Some(v) = p.object.metadata.annotations.get(runtime_annotation)
        && crate::cluster::Runtime::from_annotation(v).is_err()
    {
        errs.push(o.diag(
            Code::InvalidField,
            id,
            format!("metadata.annotations[{runtime_annotation:?}]"),
            format!("{v:?} is not a runtime: use \"process\" or \"kubernetes\""),
        ));
    }
    for (i, s) in p.object.spec.destination_selectors.iter().enumerate() {
        // A selector compares against Destination labels, which are Kubernetes labels: a key
        // or value no label can have would match nothing, silently.
        for (k, v) in &s.match_labels {
            if let Err(m) = check_label(k, v) {
                errs.push(o.diag(
                    Code::InvalidField,
                    id,
                    format!("spec.destinationSelectors[{i}].matchLabels[{k:?}]"),
                    m,
                ));
            }
        }
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
                if a.served_versions.is_empty() {
                    errs.push(o.diag(
                        Code::InvalidApi,
                        id,
                        "spec.api.spec.versions",
                        "no version is served (every version has served: false), so no resource request could be made; set served: true on one",
                    ));
                }
                let storage: Vec<&str> = raw_api
                    .pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                    .filter_map(|v| v.get("name").and_then(Value::as_str))
                    .collect();
                if storage.len() > 1 {
                    // Kubernetes CRD validation: "must have exactly one version marked as
                    // storage version".
                    errs.push(o.diag(
                        Code::InvalidApi,
                        id,
                        "spec.api.spec.versions",
                        format!(
                            "must have exactly one version marked as storage version, found {}: {}",
                            storage.len(),
                            storage.join(", ")
                        ),
                    ));
                }
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
