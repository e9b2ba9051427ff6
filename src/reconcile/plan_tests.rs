//! The plan decides from records and hashes alone: no process, no Git, no state store.

use super::*;
use crate::config::{FileFilter, Source};
use crate::state::ObjectRecord;
use crate::status::ObjectStatus;

const PROMISE: &str = "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata: {name: app}
spec:
  api:
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: {name: apps.example.com}
    spec:
      group: example.com
      names: {kind: App, plural: apps, singular: app}
      scope: Namespaced
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema:
              type: object
              properties:
                spec: {type: object, x-kubernetes-preserve-unknown-fields: true}
  workflows:
    resource:
      configure:
        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {name: configure}
          spec:
            containers:
              - {name: c, image: example/configure:v1}
";

/// A config with the `app` Promise (with or without its configure pipeline) and `requests`.
fn config(with_pipeline: bool, requests: &[(&str, &str)]) -> ValidConfig {
    let dir = tempfile::tempdir().unwrap();
    let promise = if with_pipeline {
        PROMISE.to_string()
    } else {
        PROMISE.split("  workflows:").next().unwrap().to_string()
    };
    std::fs::write(dir.path().join("promise.yaml"), promise).unwrap();
    let docs: Vec<String> = requests
        .iter()
        .map(|(name, size)| {
            format!(
                "apiVersion: example.com/v1\nkind: App\nmetadata: {{name: {name}, namespace: default}}\nspec: {{size: {size}}}\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("requests.yaml"), docs.join("---\n")).unwrap();
    let objects = crate::config::load(
        &Source::Dir(dir.path().to_path_buf()),
        &FileFilter::default(),
        None,
    )
    .unwrap();
    let cfg = crate::validate::validate(objects);
    assert!(!cfg.has_errors(), "{:?}", cfg.diagnostics);
    cfg
}

fn facts(available: bool, promise_hash: &str) -> PromiseFacts {
    let mut f = PromiseFacts::default();
    f.hashes.insert("app".into(), promise_hash.into());
    f.available.insert("app".into(), available);
    f.steady_ctx.insert("app".into(), "ctx".into());
    f.override_fps.insert("app".into(), String::new());
    f
}

/// The record a request leaves after a completed, fully reconciled pass of this plan's step.
fn reconciled(step: &RequestStep<'_>) -> ObjectRecord {
    let mut status = ObjectStatus::new(step.request.id.clone(), "app");
    status.source = step.origin.clone();
    status.last_successful_configure_workflow_time = Some(crate::status::now_rfc3339().into());
    ObjectRecord {
        input_hash: step.hash.clone(),
        completed: true,
        object: (&step.request.object).into(),
        promise: None,
        promise_dir: None,
        placements: Vec::new(),
        outputs: Vec::new(),
        spec_hash: step.spec_hash.clone(),
        failures: 0,
        retry_at: None,
        deleting: false,
        steady: step.ctx.clone().into(),
        failed_upgrade: String::new(),
        status: status.into(),
    }
}

/// No labelled Promise: every request runs at the current Promise.
static NO_TARGETS: crate::reconcile::versions::Targets = std::collections::BTreeMap::new();

fn plan<'c>(
    cfg: &'c ValidConfig,
    records: &crate::state::Records,
    facts: &PromiseFacts,
    held: &HashSet<String>,
) -> Vec<RequestStep<'c>> {
    requests(
        cfg,
        records,
        facts,
        &NO_TARGETS,
        held,
        &Settings::default(),
        true,
        |_| true,
    )
}

fn decisions(steps: &[RequestStep<'_>]) -> Vec<(String, Decision)> {
    steps
        .iter()
        .map(|s| (s.request.name().to_string(), s.decision))
        .collect()
}

#[test]
fn new_requests_run_and_a_reconciled_one_is_steady() {
    let cfg = config(true, &[("a", "1"), ("b", "2")]);
    let facts = facts(true, "p1");
    let none = BTreeMap::new();
    let first = plan(&cfg, &none, &facts, &HashSet::new());
    assert_eq!(
        decisions(&first),
        [
            (
                "a".into(),
                Decision::Run {
                    rate_limited: false
                }
            ),
            (
                "b".into(),
                Decision::Run {
                    rate_limited: false
                }
            ),
        ]
    );
    let records: crate::state::Records = first
        .iter()
        .map(|s| (s.request.key().to_string(), Box::new(reconciled(s))))
        .collect();
    let second = plan(&cfg, &records, &facts, &HashSet::new());
    assert_eq!(
        decisions(&second),
        [
            ("a".into(), Decision::Steady),
            ("b".into(), Decision::Steady)
        ]
    );
}

#[test]
fn a_promise_edit_reruns_its_requests_rate_limited_and_a_spec_edit_does_not() {
    let before = config(true, &[("a", "1"), ("b", "2")]);
    let records: crate::state::Records = plan(
        &before,
        &BTreeMap::new(),
        &facts(true, "p1"),
        &HashSet::new(),
    )
    .iter()
    .map(|s| (s.request.key().to_string(), Box::new(reconciled(s))))
    .collect();
    // The Promise changed (its hash), request b's own spec changed too.
    let after = config(true, &[("a", "1"), ("b", "3")]);
    let steps = plan(&after, &records, &facts(true, "p2"), &HashSet::new());
    assert_eq!(
        decisions(&steps),
        [
            ("a".into(), Decision::Run { rate_limited: true }),
            (
                "b".into(),
                Decision::Run {
                    rate_limited: false
                }
            ),
        ]
    );
}

#[test]
fn requests_wait_for_an_unavailable_promise_and_complete_without_pipelines() {
    let cfg = config(true, &[("a", "1")]);
    let steps = plan(&cfg, &BTreeMap::new(), &facts(false, "p1"), &HashSet::new());
    assert_eq!(decisions(&steps), [("a".into(), Decision::Waiting)]);

    let cfg = config(false, &[("a", "1")]);
    let steps = plan(&cfg, &BTreeMap::new(), &facts(true, "p1"), &HashSet::new());
    assert_eq!(decisions(&steps), [("a".into(), Decision::Complete)]);
}

#[test]
fn held_moved_lost_output_and_new_destinations_are_not_steady() {
    let cfg = config(true, &[("a", "1")]);
    let facts1 = facts(true, "p1");
    let records: crate::state::Records = plan(&cfg, &BTreeMap::new(), &facts1, &HashSet::new())
        .iter()
        .map(|s| (s.request.key().to_string(), Box::new(reconciled(s))))
        .collect();
    let key = cfg.requests[0].key().to_string();

    // Held (its file did not load last time): looked at again, nothing to run.
    let held: HashSet<String> = [key.clone()].into();
    let steps = plan(&cfg, &records, &facts1, &held);
    assert_eq!(decisions(&steps), [("a".into(), Decision::Unchanged)]);

    // A Destination changed: the placement context differs, so placement runs again.
    let mut moved = facts(true, "p1");
    moved
        .steady_ctx
        .insert("app".into(), "other destinations".into());
    let steps = plan(&cfg, &records, &moved, &HashSet::new());
    assert_eq!(decisions(&steps), [("a".into(), Decision::Unchanged)]);

    // Its cached output left the blob cache: it runs again to restore it.
    let steps = requests(
        &cfg,
        &records,
        &moved,
        &NO_TARGETS,
        &HashSet::new(),
        &Settings::default(),
        true,
        |_| false,
    );
    assert_eq!(
        decisions(&steps),
        [(
            "a".into(),
            Decision::Run {
                rate_limited: false
            }
        )]
    );
    assert!(!steps[0].cached);
}

#[test]
fn a_failed_request_waits_for_its_backoff_in_daemon_mode_only() {
    let cfg = config(true, &[("a", "1")]);
    let facts1 = facts(true, "p1");
    let mut records: crate::state::Records = plan(&cfg, &BTreeMap::new(), &facts1, &HashSet::new())
        .iter()
        .map(|s| (s.request.key().to_string(), Box::new(reconciled(s))))
        .collect();
    for r in records.values_mut() {
        r.completed = false;
        r.steady.clear();
        r.failures = 1;
        r.retry_at = Some(
            humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600))
                .to_string(),
        );
    }
    let daemon = requests(
        &cfg,
        &records,
        &facts1,
        &NO_TARGETS,
        &HashSet::new(),
        &Settings::default(),
        true,
        |_| true,
    );
    assert_eq!(decisions(&daemon), [("a".into(), Decision::Unchanged)]);
    let once = requests(
        &cfg,
        &records,
        &facts1,
        &NO_TARGETS,
        &HashSet::new(),
        &Settings::default(),
        false,
        |_| true,
    );
    assert_eq!(
        decisions(&once),
        [(
            "a".into(),
            Decision::Run {
                rate_limited: false
            }
        )]
    );
}
