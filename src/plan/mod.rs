//! `promised plan`: what a reconcile of a config would do, for review before merge.
//!
//! The plan is the engine's own pass ([`crate::reconcile::Engine::for_plan`]) on a scratch
//! copy of the state directory, with dry-run state stores: the same stages, the same
//! decisions, the same pipelines (cached outputs of unchanged inputs are reused), and the
//! change sets the stores would receive, recorded instead of written. This module turns that
//! pass into a [`Plan`]: per state store and Destination the files added, changed, removed
//! or restored (with a unified diff each), which Promises and requests run and why, the blast
//! radius of each changed Promise, what is pending or unschedulable, and every error.
//! [`render`] prints it as text or Markdown (a pull-request comment); `--output json` is the
//! [`Plan`] itself.
//!
//! Exit codes of `promised plan` ([`Plan::exit_code`], like `terraform plan
//! -detailed-exitcode`): `0` no changes, `1` errors, `2` changes.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::diag::Severity;
use crate::reconcile::{FileChangeKind, ObjectAction, PassReport, PlannedFile};
use crate::state::{ObjectRecord, State};
use crate::validate::ValidConfig;

/// What the plan is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseKind {
    /// The state directory of the last reconcile (records, cached outputs).
    StateDir,
    /// No state directory: the state stores' own content and ownership index.
    StateStores,
    /// A reconcile of the config at another ref (`--base REF`), planned first in scratch
    /// space on top of the state stores' content.
    ConfigRef,
}

/// Why a Promise or a request runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Not in the base: it runs for the first time.
    New,
    /// In the state stores but not in a state directory (no `--state-dir`): its last inputs
    /// are unknown, so it runs and its output is compared with the stores' content.
    NotRecorded,
    /// The request's own `spec` changed.
    SpecChanged,
    /// Its Promise changed (spec, pipelines, or the files of the Promise folder).
    PromiseChanged,
    /// Same spec and Promise, other inputs: image overrides, pinned image digests or the
    /// files their mounts bring.
    ImageChanged,
    /// Its last run failed or was suspended: it runs again.
    Retry,
    /// Its cached output left the cache, or its reconciliation interval is due.
    Resync,
    /// It left the config repo: its delete pipeline runs and its files are removed.
    Deleted,
}

impl Reason {
    /// A few words for people.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::NotRecorded => "not in a state directory (compared with the state store)",
            Reason::SpecChanged => "spec changed",
            Reason::PromiseChanged => "Promise changed",
            Reason::ImageChanged => "script or image digest changed",
            Reason::Retry => "last run failed: retried",
            Reason::Resync => "cached output missing or reconciliation interval due",
            Reason::Deleted => "deleted",
        }
    }
}

/// One Promise or request that runs in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// State key: `promise/<name>` or `<promise>/<namespace>/<name>`.
    pub object: String,
    /// Its Promise's name.
    pub promise: String,
    /// `configure` or `delete`.
    pub workflow: &'static str,
    /// Why.
    pub reason: Reason,
    /// The delete pipeline's name, for a deleted object whose Promise has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Destinations its files are planned on (after the pass, or before for a delete).
    pub destinations: Vec<String>,
    /// Its workflow failed in the plan (see `errors`).
    pub failed: bool,
}

/// The requests and Destinations a changed Promise reaches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blast {
    /// The Promise.
    pub promise: String,
    /// New, changed or deleted.
    pub reason: Reason,
    /// Requests of it that run (those whose own spec changed too included).
    pub requests: Vec<String>,
    /// Destinations whose files change because of it (its own and its requests').
    pub destinations: Vec<String>,
    /// Files changed because of it.
    pub files: usize,
}

/// One file in the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FilePlan {
    /// Store-relative path.
    pub path: String,
    /// Added, changed, removed or restored.
    pub change: FileChangeKind,
    /// The state key of the object that produced it (`promise/<name>`, a request key, or
    /// `destination/<name>` for canaries and aggregated files).
    pub object: String,
    /// Lines added and removed.
    pub lines_added: usize,
    /// Lines removed.
    pub lines_removed: usize,
    /// Unified diff (`a/<path>` → `b/<path>`), `None` for binary content.
    pub diff: Option<String>,
    /// sha256 (hex) of the content written, `None` for a removal.
    pub sha256: Option<String>,
}

/// One Destination's planned files.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationPlan {
    /// The Destination.
    pub destination: String,
    /// Its files, sorted by path.
    pub files: Vec<FilePlan>,
}

/// One state store's planned files.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StorePlan {
    /// `<kind>/<name>`.
    pub store: String,
    /// Per Destination, sorted by name.
    pub destinations: Vec<DestinationPlan>,
    /// Why the store cannot be read (nothing is planned for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An object that would wait: pending on its Promise, or unschedulable (no Destination
/// matches).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pending {
    /// State key.
    pub object: String,
    /// `status.message`.
    pub message: String,
}

/// Totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Files added.
    pub added: usize,
    /// Files changed.
    pub changed: usize,
    /// Files removed.
    pub removed: usize,
    /// Files restored (drift).
    pub restored: usize,
    /// Configure workflows that run.
    pub runs: usize,
    /// Objects deleted.
    pub deletes: usize,
    /// Pending or unschedulable objects.
    pub pending: usize,
    /// Errors.
    pub errors: usize,
}

/// What a reconcile of the config would do. `--output json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The config planned (`--config` and `--ref`).
    pub config: String,
    /// Its commit (Git sources).
    pub config_commit: Option<String>,
    /// What it is compared with.
    pub base: BaseKind,
    /// The base, for people (state directory path, `--base` ref).
    pub base_detail: String,
    /// Totals.
    pub summary: Summary,
    /// Per state store and Destination, the files that change.
    pub stores: Vec<StorePlan>,
    /// Promises and requests that run (configure) or are deleted, and why.
    pub runs: Vec<Run>,
    /// Per changed Promise, what it reaches.
    pub blast_radius: Vec<Blast>,
    /// Objects that would be pending or unschedulable.
    pub pending: Vec<Pending>,
    /// Every error: validation, failed pipelines, unreadable state stores.
    pub errors: Vec<String>,
    /// Validation warnings, then non-fatal problems the pass reported.
    pub warnings: Vec<String>,
    /// Findings of the consumer lint ([`crate::lint`], README "Consumer lint") on every file
    /// the state stores would hold for each Destination after the plan
    /// ([`crate::reconcile::Engine::planned_destination_files`]); error-severity findings make
    /// the exit code 1.
    pub lint: Vec<crate::lint::Finding>,
}

impl Plan {
    /// `true` when the plan writes or deletes any file.
    pub fn has_changes(&self) -> bool {
        let s = &self.summary;
        s.added + s.changed + s.removed + s.restored > 0
    }

    /// The exit code of `promised plan`: `1` when there is any error, else `2` when any file
    /// changes, else `0` (`terraform plan -detailed-exitcode`).
    pub fn exit_code(&self) -> i32 {
        let lint_errors = self
            .lint
            .iter()
            .any(|f| f.severity == crate::lint::Severity::Error);
        if !self.errors.is_empty() || lint_errors {
            1
        } else if self.has_changes() {
            2
        } else {
            0
        }
    }
}

/// What [`build`] reads: the pass of a plan engine and the state around it.
pub struct PlanInputs<'a> {
    /// `--config` (and `--ref`), for the heading.
    pub config: String,
    /// The base.
    pub base: BaseKind,
    /// The base, for people.
    pub base_detail: String,
    /// The validated config of the pass.
    pub cfg: &'a ValidConfig,
    /// The pass report.
    pub report: &'a PassReport,
    /// The state before the pass (empty without a state directory).
    pub before: &'a State,
    /// The state after it.
    pub after: &'a State,
    /// The files the dry-run stores recorded ([`crate::reconcile::Engine::take_planned_files`]).
    pub files: Vec<PlannedFile>,
    /// Leave out diffs (`--stat`).
    pub stat: bool,
}

/// The Promise of a state key (`promise/<name>` or `<promise>/<ns>/<name>`).
fn promise_of(key: &str) -> &str {
    match key.strip_prefix("promise/") {
        Some(p) => p,
        None => key.split('/').next().unwrap_or_default(),
    }
}

/// The state key of the object that owns a planned file.
fn object_of(f: &PlannedFile) -> String {
    match (&f.owner.resource, f.owner.promise.is_empty()) {
        (_, true) => format!("destination/{}", f.destination),
        (Some(r), false) => format!("{}/{r}", f.owner.promise),
        (None, false) => format!("promise/{}", f.owner.promise),
    }
}

/// Why `key` ran: from its record before and after the pass, and its Promise's.
fn reason(key: &str, base: BaseKind, before: &State, after: &State) -> Reason {
    let is_promise = key.starts_with("promise/");
    fn get<'s>(s: &'s State, key: &str, promise: bool) -> Option<&'s ObjectRecord> {
        if promise {
            s.promises.get(key).map(|r| &**r)
        } else {
            s.requests.get(key).map(|r| &**r)
        }
    }
    let (Some(old), Some(new)) = (get(before, key, is_promise), get(after, key, is_promise)) else {
        return if base == BaseKind::StateStores {
            Reason::NotRecorded
        } else {
            Reason::New
        };
    };
    if !is_promise && old.spec_hash != new.spec_hash {
        return Reason::SpecChanged;
    }
    // An empty input hash: its cached output was lost (or it was invalid); nothing to compare.
    let known = !old.input_hash.is_empty();
    let pkey = format!("promise/{}", promise_of(key));
    let promise_hash = |s: &State| s.promises.get(&pkey).map(|r| r.input_hash.clone());
    let promise_changed = if is_promise {
        known
    } else {
        promise_hash(before).is_some_and(|h| !h.is_empty())
            && promise_hash(before) != promise_hash(after)
    };
    if old.input_hash != new.input_hash && promise_changed {
        return Reason::PromiseChanged;
    }
    if !known {
        return Reason::Resync;
    }
    if old.input_hash != new.input_hash {
        return Reason::ImageChanged;
    }
    if !old.completed {
        return Reason::Retry;
    }
    Reason::Resync
}

/// The delete pipeline a deleted object runs (its Promise's first), when there is one.
fn delete_pipeline(key: &str, cfg: &ValidConfig, before: &State) -> Option<String> {
    let promise = promise_of(key);
    let workflows = |v: &serde_json::Value, kind: &str| {
        v.pointer(&format!("/spec/workflows/{kind}/delete/0/metadata/name"))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    if key.starts_with("promise/") {
        let doc = before.promises.get(key)?.promise.as_ref()?;
        return workflows(doc, "promise");
    }
    match cfg.promise(promise) {
        Some(p) => p
            .promise
            .object
            .spec
            .workflows
            .resource
            .delete
            .first()
            .map(|p| p.metadata.name.clone()),
        None => before
            .promises
            .get(&format!("promise/{promise}"))
            .and_then(|r| r.promise.as_ref())
            .and_then(|d| workflows(d, "resource")),
    }
}

/// Builds the plan from a plan engine's pass.
pub fn build(inputs: PlanInputs<'_>) -> Plan {
    let PlanInputs {
        config,
        base,
        base_detail,
        cfg,
        report,
        before,
        after,
        files,
        stat,
    } = inputs;
    let mut summary = Summary::default();
    // Files, per store and Destination.
    let mut by_store: BTreeMap<String, BTreeMap<String, Vec<FilePlan>>> = BTreeMap::new();
    let mut files_of: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for f in &files {
        match f.change {
            FileChangeKind::Added => summary.added += 1,
            FileChangeKind::Changed => summary.changed += 1,
            FileChangeKind::Removed => summary.removed += 1,
            FileChangeKind::Restored => summary.restored += 1,
        }
        let object = object_of(f);
        files_of
            .entry(object.clone())
            .or_default()
            .push((f.destination.clone(), f.path.clone()));
        let (diff, added, removed) = render::diff(f, stat);
        by_store
            .entry(f.store.clone())
            .or_default()
            .entry(f.destination.clone())
            .or_default()
            .push(FilePlan {
                path: f.path.clone(),
                change: f.change,
                object,
                lines_added: added,
                lines_removed: removed,
                diff,
                sha256: f.sha256.clone(),
            });
    }
    let mut stores: Vec<StorePlan> = by_store
        .into_iter()
        .map(|(store, dests)| StorePlan {
            store,
            destinations: dests
                .into_iter()
                .map(|(destination, mut files)| {
                    files.sort_by(|a, b| a.path.cmp(&b.path));
                    DestinationPlan { destination, files }
                })
                .collect(),
            error: None,
        })
        .collect();
    let mut errors: Vec<String> = cfg
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    for s in &report.stores {
        if let Some(e) = &s.error {
            errors.push(format!("state store {}: {e}", s.store));
            match stores.iter_mut().find(|p| p.store == s.store) {
                Some(p) => p.error = Some(e.clone()),
                None => stores.push(StorePlan {
                    store: s.store.clone(),
                    destinations: Vec::new(),
                    error: Some(e.clone()),
                }),
            }
        }
    }
    // Runs and deletes, pending objects, failures.
    let dests_of = |key: &str, s: &State| -> Vec<String> {
        let rec = s.requests.get(key).or_else(|| s.promises.get(key));
        let mut d: Vec<String> = rec
            .map(|r| {
                r.placements
                    .iter()
                    .map(|p| p.destination.to_string())
                    .collect()
            })
            .unwrap_or_default();
        d.sort();
        d.dedup();
        d
    };
    let ran: BTreeSet<&str> = report.runs.iter().map(|r| r.key.as_str()).collect();
    let mut runs = Vec::new();
    let mut pending = Vec::new();
    for o in &report.objects {
        let invalid = o.message.starts_with("Invalid: ");
        if o.failed && !invalid {
            errors.push(format!("{}: {}", o.key, o.message));
        }
        match o.action {
            ObjectAction::Deleted => runs.push(Run {
                object: o.key.clone(),
                promise: promise_of(&o.key).to_string(),
                workflow: "delete",
                reason: Reason::Deleted,
                pipeline: delete_pipeline(&o.key, cfg, before),
                destinations: dests_of(&o.key, before),
                failed: false,
            }),
            ObjectAction::Ran => runs.push(Run {
                object: o.key.clone(),
                promise: promise_of(&o.key).to_string(),
                workflow: "configure",
                reason: reason(&o.key, base, before, after),
                pipeline: None,
                destinations: dests_of(&o.key, after),
                failed: o.failed,
            }),
            ObjectAction::Failed if ran.contains(o.key.as_str()) && !invalid => runs.push(Run {
                object: o.key.clone(),
                promise: promise_of(&o.key).to_string(),
                workflow: "configure",
                reason: reason(&o.key, base, before, after),
                pipeline: None,
                destinations: dests_of(&o.key, after),
                failed: true,
            }),
            _ => {}
        }
        if !o.failed && o.state == "Pending" {
            pending.push(Pending {
                object: o.key.clone(),
                message: o.message.clone(),
            });
        }
    }
    summary.runs = runs.iter().filter(|r| r.workflow == "configure").count();
    summary.deletes = runs.iter().filter(|r| r.workflow == "delete").count();
    // Blast radius: each Promise that runs or is deleted, new or changed, with the requests
    // that run because of it and the Destinations their files change on.
    let mut blast_radius = Vec::new();
    for r in runs.iter().filter(|r| r.object.starts_with("promise/")) {
        if matches!(r.reason, Reason::Retry | Reason::Resync) {
            continue;
        }
        let mut objects = vec![r.object.clone()];
        // Without a state directory every request runs: those whose files change count.
        let requests: Vec<String> = runs
            .iter()
            .filter(|q| !q.object.starts_with("promise/") && q.promise == r.promise)
            .filter(|q| match q.reason {
                // Its spec may have changed too: the Promise change reaches it all the same.
                Reason::PromiseChanged | Reason::New | Reason::SpecChanged => true,
                Reason::ImageChanged => true,
                Reason::NotRecorded => files_of.contains_key(&q.object),
                Reason::Deleted => r.reason == Reason::Deleted,
                _ => false,
            })
            .map(|q| q.object.clone())
            .collect();
        objects.extend(requests.iter().cloned());
        let touched: Vec<&(String, String)> = objects
            .iter()
            .filter_map(|k| files_of.get(k))
            .flatten()
            .collect();
        if r.reason == Reason::NotRecorded && touched.is_empty() {
            continue;
        }
        let destinations: BTreeSet<String> = touched.iter().map(|(d, _)| d.clone()).collect();
        blast_radius.push(Blast {
            promise: r.promise.clone(),
            reason: r.reason,
            requests,
            destinations: destinations.into_iter().collect(),
            files: touched.len(),
        });
    }
    summary.pending = pending.len();
    errors.dedup();
    summary.errors = errors.len();
    Plan {
        config,
        config_commit: cfg.commit.clone(),
        base,
        base_detail,
        summary,
        stores,
        runs,
        blast_radius,
        pending,
        errors,
        warnings: cfg
            .diagnostics
            .iter()
            .filter(|d| d.severity != Severity::Error)
            .map(ToString::to_string)
            .chain(report.warnings.iter().cloned())
            .collect(),
        lint: Vec::new(),
    }
}

#[cfg(test)]
mod tests;
