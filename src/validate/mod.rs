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
//!
//! One file per stage: the validated types (`types.rs`), cross-object checks (`cross.rs`:
//! which YAML is config, duplicates, one API served twice, `requiredPromises` cycles, health
//! records), Destinations and state stores (`stores.rs`), Promises (`promise.rs`), the
//! `env[].valueFrom` shapes the process runtime supports ([`value_from`]), request admission
//! (`request.rs`) and shared rules such as [`check_label`] and [`parse_go_duration`]
//! (`helpers.rs`). The checks that need the daemon config (which pipeline Secrets a Promise
//! may read) are `crate::pipeline::env::check_pipeline_env`, run right after [`validate`].

use crate::config::Objects;
use crate::diag::{Diagnostic, Origin};

mod cross;
mod helpers;
pub use crate::config::policy;
mod promise;
mod request;
mod stores;
mod types;
pub mod value_from;

pub use cross::folder_of;
pub use helpers::{check_label, parse_go_duration, to_yaml};
pub use promise::{
    MAX_PIPELINE_FULL_NAME, MIN_RECONCILIATION_INTERVAL, RECONCILIATION_INTERVAL_ANNOTATION,
};
pub use request::{Admissions, MAX_REQUEST_NAME, admit_one, spec_digest};
pub use stores::{SSH_URL_PATTERN, normalise_path};
pub use types::{Asset, Options, Rejected, UnservedKinds, ValidConfig, ValidPromise, ValidRequest};

use helpers::sorted;

/// What the checks found so far: the objects left out, and every error and warning. Each
/// stage adds to it, in the order of [`validate_with_options`].
#[derive(Debug, Default)]
struct Findings {
    /// Objects left out, with why.
    rejected: Vec<Rejected>,
    /// Every error and warning (sorted at the end).
    diagnostics: Vec<Diagnostic>,
}

/// Runs every check. Never fails: problems are diagnostics.
pub fn validate(objects: Objects) -> ValidConfig {
    validate_with(objects, &mut Admissions::default())
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
        resource_bindings,
        upgrade_plans,
        candidates,
        undecoded_promises,
        diagnostics,
        commit,
        provenance,
        history,
    } = objects;

    let mut found = Findings {
        rejected: Vec::new(),
        diagnostics,
    };
    let mut candidates = candidates;
    let policy = policy::extract(&mut candidates, &mut found.diagnostics);

    let (served_by, candidates, assets) = cross::classify(
        &promises,
        &undecoded_promises,
        candidates,
        options,
        &mut found,
    );
    let rejected_keys = cross::duplicates(
        &promises,
        &destinations,
        &git_state_stores,
        &bucket_state_stores,
        &health_records,
        &candidates,
        &mut found,
    );
    let not_dup = |o: &Origin| !rejected_keys.contains(&(o.file.clone(), o.document));

    let (git_state_stores, bucket_state_stores) = stores::check_state_stores(
        git_state_stores,
        bucket_state_stores,
        &not_dup,
        &mut found.diagnostics,
    );
    let valid_destinations = stores::check_destinations(
        destinations,
        &git_state_stores,
        &bucket_state_stores,
        &not_dup,
        &mut found,
    );

    let (git_state_stores, bucket_state_stores, valid_destinations, promises) = match &policy {
        Some(p) => (
            deny_platform(p, git_state_stores, &mut found),
            deny_platform(p, bucket_state_stores, &mut found),
            deny_platform(p, valid_destinations, &mut found),
            deny_platform(p, promises, &mut found),
        ),
        None => (
            git_state_stores,
            bucket_state_stores,
            valid_destinations,
            promises,
        ),
    };
    let (valid_promises, mut rejected_apis) =
        promise::check_promises(promises, &not_dup, &mut found);
    let valid_promises =
        cross::reject_duplicate_apis(valid_promises, &mut rejected_apis, &mut found);
    let valid_promises =
        cross::reject_required_promise_cycles(valid_promises, &mut rejected_apis, &mut found);

    let requests = request::admit_requests(
        candidates,
        &valid_promises,
        &rejected_apis,
        &served_by,
        &not_dup,
        cache,
        &mut found,
    );
    let requests = match &policy {
        Some(p) => deny_requests(p, requests, &mut found),
        None => requests,
    };
    cross::check_health_records(&health_records, &valid_promises, &mut found.diagnostics);
    let resource_bindings = check_resource_bindings(resource_bindings, &mut found.diagnostics);
    let upgrade_plans = check_upgrade_plans(upgrade_plans, &valid_promises, &mut found.diagnostics);

    let Findings {
        rejected,
        mut diagnostics,
    } = found;
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
        resource_bindings,
        upgrade_plans,
        rejected,
        assets: {
            let mut a = assets;
            a.sort_by(|x, y| x.origin.cmp(&y.origin));
            a
        },
        diagnostics,
        commit,
        provenance,
        history,
        tenancy: policy.map(|p| p.map(std::sync::Arc::new)),
        unloadable,
    }
}

/// UpgradePlans (README "Rolling out a Promise change"): a plan with a bad field is an error
/// naming the field, and is kept: its rollout stays `Invalid` and holds its Promise's requests
/// at their version (a broken plan must not let everything move). A plan naming an unknown
/// Promise, or two plans for one Promise, are errors too.
fn check_upgrade_plans(
    plans: Vec<crate::config::Located<crate::model::UpgradePlan>>,
    promises: &[ValidPromise],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<crate::config::Located<crate::model::UpgradePlan>> {
    let mut by_promise = std::collections::BTreeMap::<String, String>::new();
    for p in &plans {
        if let Err((field, message)) = p.object.check() {
            diagnostics.push(p.origin.diag(
                crate::diag::Code::InvalidField,
                Some(&p.id),
                &field,
                format!("{message}; the rollout holds the Promise's requests at their version until the plan is fixed"),
            ));
        }
        if p.raw
            .get("spec")
            .is_some_and(|s| s.get("upgradeExecutionPolicy").is_some())
        {
            diagnostics.push(
                p.origin
                    .diag(
                        crate::diag::Code::InvalidField,
                        Some(&p.id),
                        "spec.upgradeExecutionPolicy",
                        "not supported by promised (there are no UpgradeRuns): the plan runs whenever the Promise is at spec.upgradePath.to; use resourceUpgradeWindows to limit when requests move",
                    )
                    .warning(),
            );
        }
        let promise = &p.object.spec.promise_ref.name;
        if !promises.iter().any(|v| v.name() == promise) {
            diagnostics.push(
                p.origin
                    .diag(
                        crate::diag::Code::InvalidField,
                        Some(&p.id),
                        "spec.promiseRef.name",
                        format!("no valid Promise {promise:?} in the config repo"),
                    )
                    .warning(),
            );
        }
        if let Some(other) = by_promise.insert(promise.clone(), p.id.name.clone()) {
            diagnostics.push(p.origin.diag(
                crate::diag::Code::InvalidField,
                Some(&p.id),
                "spec.promiseRef.name",
                format!("UpgradePlan {other} already rolls out Promise {promise:?}; keep one plan per Promise (both hold its requests)"),
            ));
        }
    }
    plans
}

/// ResourceBindings need the labels `kratix.io/promise-name` and `kratix.io/resource-name`,
/// which is how Kratix finds a request's binding (kratix-lifecycle.md §2.2); one without them
/// binds nothing and is skipped with a warning.
fn check_resource_bindings(
    bindings: Vec<crate::config::Located<crate::model::ResourceBinding>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<crate::config::Located<crate::model::ResourceBinding>> {
    bindings
        .into_iter()
        .filter(|b| {
            let ok = b.object.target().is_some() && !b.object.spec.version.is_empty();
            if !ok {
                diagnostics.push(
                    b.origin
                        .diag(
                            crate::diag::Code::InvalidField,
                            Some(&b.id),
                            "metadata.labels",
                            "a ResourceBinding needs the labels kratix.io/promise-name and kratix.io/resource-name and a spec.version; it binds nothing and is skipped",
                        )
                        .warning(),
                );
            }
            ok
        })
        .collect()
}

/// Platform objects of `items` that the tenancy policy refuses leave the config, each with an
/// error (README "Trust and tenancy").
fn deny_platform<T>(
    policy: &Result<policy::Policy, String>,
    items: Vec<crate::config::Located<T>>,
    found: &mut Findings,
) -> Vec<crate::config::Located<T>> {
    items
        .into_iter()
        .filter(
            |l| match policy::platform_denied(policy, &l.origin, &l.id) {
                None => true,
                Some(d) => {
                    found.rejected.push(Rejected {
                        origin: l.origin.clone(),
                        id: l.id.clone(),
                        reasons: vec![d.message.clone()],
                        promise: None,
                    });
                    found.diagnostics.push(d);
                    false
                }
            },
        )
        .collect()
}

/// Requests the tenancy policy refuses become rejected (`Reconciled=False InvalidRequest`,
/// the rule in the message), alone.
fn deny_requests(
    policy: &Result<policy::Policy, String>,
    requests: Vec<std::sync::Arc<ValidRequest>>,
    found: &mut Findings,
) -> Vec<std::sync::Arc<ValidRequest>> {
    requests
        .into_iter()
        .filter(
            |r| match policy::request_denied(policy, &r.origin, &r.id, &r.promise) {
                None => true,
                Some(d) => {
                    found.rejected.push(Rejected {
                        origin: r.origin.clone(),
                        id: r.id.clone(),
                        reasons: vec![d.message.clone()],
                        promise: Some(r.promise.clone()),
                    });
                    found.diagnostics.push(d);
                    false
                }
            },
        )
        .collect()
}
