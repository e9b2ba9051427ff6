//! What a pass did, for `promised reconcile`'s output and the daemon's logs and metrics.

use std::time::Duration;

use serde::Serialize;
use statestores::{ApplyOutcome, Drift};

use crate::state::ObjectRecord;

/// What happened to one object in a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObjectAction {
    /// Its workflow ran.
    Ran,
    /// Inputs unchanged: nothing ran.
    Unchanged,
    /// Waiting for its Promise (requirements or promise workflow).
    Waiting,
    /// It left the config repo: delete pipeline run, files pruned.
    Deleted,
    /// Something failed (see status).
    Failed,
}

/// One object's line in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectReport {
    /// State key (`promise/<name>` or `<promise>/<namespace>/<name>`).
    pub key: String,
    /// What happened.
    pub action: ObjectAction,
    /// `Reconciled` condition message: `Reconciled`, `Pending`, `Failing`, `Suspended`.
    pub state: String,
    /// `status.message`.
    pub message: String,
    /// Destinations it landed on.
    pub destinations: Vec<String>,
    /// Files placed.
    pub files: usize,
    /// The object is failing at the end of the pass (workflow, write, or delete pipeline).
    pub failed: bool,
}

impl ObjectReport {
    /// A line from a record (refreshed at the end of the pass).
    pub fn new(record: &ObjectRecord, action: ObjectAction) -> Self {
        let key = match &record.status.object.namespace {
            Some(ns) => super::request_key(&record.status.promise, ns, &record.status.object.name),
            None => format!("promise/{}", record.status.object.name),
        };
        let mut r = ObjectReport {
            key,
            action,
            state: String::new(),
            message: String::new(),
            destinations: Vec::new(),
            files: 0,
            failed: false,
        };
        r.refresh(record);
        r
    }

    /// Updates state, message, destinations and file count from the record.
    pub fn refresh(&mut self, record: &ObjectRecord) {
        self.state = record.status.summary().to_string();
        self.message = record.status.message.clone();
        let mut d: Vec<String> = record
            .placements
            .iter()
            .map(|p| p.destination.to_string())
            .collect();
        d.sort();
        d.dedup();
        self.destinations = d;
        self.files = record.placements.iter().map(|p| p.files.len()).sum();
        // A deleted object is done, whatever its last status said (e.g. held while its file
        // did not load).
        self.failed = self.action == ObjectAction::Failed
            || (self.state == "Failing" && self.action != ObjectAction::Deleted);
    }
}

/// One state store's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreReport {
    /// `<kind>/<name>`.
    pub store: String,
    /// New commit, if one was made.
    pub commit: Option<String>,
    /// Files written.
    pub written: usize,
    /// Files deleted.
    pub deleted: usize,
    /// Files already up to date.
    pub unchanged: usize,
    /// Files someone changed behind our back, restored.
    pub drift: Vec<Drift>,
    /// Lost push races retried.
    pub conflicts_retried: u32,
    /// Why the write failed.
    pub error: Option<String>,
}

impl StoreReport {
    /// From a successful apply.
    pub fn from_outcome(store: &str, o: &ApplyOutcome) -> Self {
        StoreReport {
            store: store.into(),
            commit: o.version.clone(),
            written: o.written,
            deleted: o.deleted,
            unchanged: o.unchanged,
            drift: o.drift.clone(),
            conflicts_retried: o.conflicts_retried,
            error: None,
        }
    }

    /// From a failure.
    pub fn failed(store: &str, error: &str) -> Self {
        StoreReport {
            store: store.into(),
            commit: None,
            written: 0,
            deleted: 0,
            unchanged: 0,
            drift: Vec::new(),
            conflicts_retried: 0,
            error: Some(error.into()),
        }
    }
}

/// The result of one pass.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassReport {
    /// Config commit (Git sources).
    pub config_commit: Option<String>,
    /// Per object.
    pub objects: Vec<ObjectReport>,
    /// Per state store.
    pub stores: Vec<StoreReport>,
    /// Pipelines run in this pass.
    pub pipelines_run: usize,
    /// How long each workflow took.
    pub runs: Vec<super::RunTiming>,
    /// Tails of failed pipelines' stderr.
    pub logs: Vec<String>,
    /// Non-fatal problems (e.g. a corrupt state file that was rebuilt).
    pub warnings: Vec<String>,
    /// Consumer lint findings on every Destination after the pass ([`crate::lint`];
    /// warnings, never failures; at most [`crate::infra::MAX_LINT`] per Destination).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint: Vec<crate::lint::Finding>,
    /// Wall-clock time of the pass.
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Requests skipped as steady but not listed in `objects` (more than
    /// [`super::MAX_LISTED_UNCHANGED`]).
    pub unchanged_not_listed: usize,
    /// The daemon answered a repeated trigger with the report of its last pass, which changed
    /// nothing and after which nothing became due (`reconcile::quiet`); nothing ran or was
    /// read in this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// What the pass changed in the state (the daemon refreshes only these status rows).
    #[serde(skip)]
    pub dirty: crate::state::Dirty,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl PassReport {
    /// True when nothing ran and no store made a commit.
    pub fn is_noop(&self) -> bool {
        self.pipelines_run == 0 && self.stores.iter().all(|s| s.commit.is_none())
    }

    /// True when any object failed or any store write failed.
    pub fn has_failures(&self) -> bool {
        self.objects.iter().any(|o| o.failed) || self.stores.iter().any(|s| s.error.is_some())
    }
}
