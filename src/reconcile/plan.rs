//! Plan: the pure decision of which requests must run in a pass, and why.
//!
//! From the validated config, the records of the last pass and the hashes of every input
//! ([`super::inputs`]), [`requests`] decides for each resource request whether it is steady
//! (skipped), waits for its Promise, completes without a run, runs its configure workflow, or
//! is looked at again without a run. It reads no file, starts no process and touches no
//! state store: the same plan a `promised plan` prints, and what the tests beside it check
//! without Git or pipelines. The engine applies it (`records::admit_requests`) and runs the
//! jobs ([`super::run`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::settings::Settings;
use crate::state::{HashText, ObjectRecord};
use crate::status::Phase;
use crate::validate::{ValidConfig, ValidPromise, ValidRequest};

/// Re-run when the inputs changed, or the last run did not complete (failed, or a retry whose
/// time has come). A `suspend: true` without `retryAfter` waits for a spec change.
pub(super) fn needs_run(
    record: &ObjectRecord,
    hash: &HashText,
    interval: Duration,
    backoff: bool,
) -> bool {
    let now = SystemTime::now();
    if record.input_hash != *hash {
        return true;
    }
    if record.completed {
        // Periodic re-run (Kratix reconciliationInterval), which also repairs drift.
        return record
            .status
            .last_successful_configure_workflow_time
            .as_ref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .is_some_and(|t| t + interval <= now);
    }
    let suspended = record
        .status
        .pipelines
        .iter()
        .find(|p| p.phase == Phase::Suspended);
    match suspended {
        Some(p) => match &p.next_retry_at {
            Some(at) => humantime::parse_rfc3339(at)
                .map(|t| t <= now)
                .unwrap_or(true),
            // `suspend: true` without retryAfter waits for a spec change.
            None => false,
        },
        // Failed: again, after the backoff in daemon mode.
        None => {
            !backoff
                || record
                    .retry_at
                    .as_ref()
                    .and_then(|t| humantime::parse_rfc3339(t).ok())
                    .is_none_or(|t| t <= now)
        }
    }
}

/// A Promise's reconciliation interval: annotation `kratix.io/reconciliation-interval`, then
/// `spec.workflows.config.reconciliationInterval`, then the daemon's `resyncInterval`
/// (kratix-contract.md §7, PromiseRevision precedence).
pub fn reconciliation_interval(p: &ValidPromise, settings: &Settings) -> Duration {
    let meta = &p.promise.object.metadata;
    meta.annotations
        .get("kratix.io/reconciliation-interval")
        .cloned()
        .or_else(|| {
            p.promise
                .object
                .spec
                .workflows
                .config
                .as_ref()
                .and_then(|c| c.reconciliation_interval.clone())
        })
        .and_then(|s| crate::validate::parse_go_duration(&s).ok())
        .filter(|d| *d >= Duration::from_secs(60))
        .unwrap_or(settings.resync_interval)
}

/// What the Promise stage decided, per Promise name, that the request plan reads.
#[derive(Debug, Default)]
pub(super) struct PromiseFacts {
    /// Input hash of each Promise's workflows ([`super::inputs::promise_hash`]).
    pub hashes: BTreeMap<String, String>,
    /// Whether each Promise can fulfil requests (requirements met, promise workflow completed).
    pub available: BTreeMap<String, bool>,
    /// Each Promise's placement context: a request placed under the same context, with the
    /// same inputs, is steady.
    pub steady_ctx: BTreeMap<String, String>,
    /// [`super::inputs::override_fingerprint`] of each Promise's resource pipelines.
    pub override_fps: BTreeMap<String, String>,
}

/// Why a request is in the plan, and what happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Same inputs, same placement context, same place in the repo, fully reconciled last
    /// time: skipped by every later stage.
    Steady,
    /// Its Promise is not available: `PromiseAvailable=False`, nothing runs.
    Waiting,
    /// Inputs changed (or a retry is due) and the Promise has no resource configure pipeline:
    /// completed without a run.
    Complete,
    /// Its configure workflow runs. `rate_limited`: only its Promise changed (its own spec did
    /// not), so it is subject to `maxFanoutPerSecond`.
    Run { rate_limited: bool },
    /// Nothing to run; placement and status are looked at again (its Destinations or its place
    /// in the repo changed, or its last pass did not end reconciled).
    Unchanged,
}

/// The plan for one request.
#[derive(Debug)]
pub(super) struct RequestStep<'c> {
    /// The request as validated.
    pub request: &'c Arc<ValidRequest>,
    /// Its Promise at the version it runs at (a revision's when not the current one).
    pub promise: &'c ValidPromise,
    /// The revision it runs at, when not the current Promise ([`super::versions`]).
    pub revision: Option<&'c super::revisions::RevisionRun>,
    /// Where it runs ([`super::versions`]); `None` for an unlabelled Promise.
    pub target: Option<&'c super::versions::Target>,
    /// Input hash of its configure workflow.
    pub hash: HashText,
    /// Its steady key (the Promise's placement context).
    pub ctx: String,
    /// `file#document` it was read from.
    pub origin: String,
    /// Hash of its own `spec`.
    pub spec_hash: HashText,
    /// Every cached output of its last run is still in the blob cache (otherwise it re-runs).
    pub cached: bool,
    /// The decision.
    pub decision: Decision,
}

/// Decides, for every request of `cfg` whose Promise is in the config, what this pass does
/// with it (in config order). `records` are the request records of the last pass, `targets`
/// the version each request runs at ([`super::versions`]: a pinned request hashes against its
/// revision, so it stays steady while the Promise moves on; one whose binding cannot be
/// followed is never steady and, with no version to run at, does not run), `held` the
/// keys whose config file does not load (never steady), `cached` tells whether a record's
/// outputs are still in the blob cache, and `backoff` is daemon mode (failed workflows wait
/// for their retry time). Pure: reads the clock for retry times and nothing else.
// Eight plain inputs of one pure decision; a struct of them would only rename them.
#[allow(clippy::too_many_arguments)]
pub(super) fn requests<'c>(
    cfg: &'c ValidConfig,
    records: &crate::state::Records,
    facts: &PromiseFacts,
    targets: &'c super::versions::Targets,
    held: &HashSet<String>,
    settings: &Settings,
    backoff: bool,
    cached: impl Fn(&ObjectRecord) -> bool,
) -> Vec<RequestStep<'c>> {
    let mut steps = Vec::with_capacity(cfg.requests.len());
    let mut origin = String::new();
    // Per Promise (by address): the interval parses annotations and durations.
    let mut intervals: HashMap<*const ValidPromise, Duration> = HashMap::new();
    let empty = String::new();
    let mut facts_of: (&str, Option<&String>, Option<&String>, &String) = ("", None, None, &empty);
    for r in &cfg.requests {
        let key = r.key();
        let Some(current) = cfg.promise(&r.promise) else {
            continue;
        };
        let target = targets.get(key);
        let revision = target.and_then(|t| t.revision.as_ref());
        let p: &ValidPromise = revision.map_or(current, |rev| &rev.promise);
        // The Promise's facts, looked up once per run of its requests (config order keeps a
        // Promise's requests together).
        if facts_of.0 != r.promise {
            facts_of = (
                r.promise.as_str(),
                facts.hashes.get(&r.promise),
                facts.override_fps.get(&r.promise),
                &facts.steady_ctx[&r.promise],
            );
        }
        let (_, promise_hash, override_fp, ctx) = facts_of;
        let hash = match revision {
            Some(rev) => {
                super::inputs::request_hash(&rev.promise_hash, r, &rev.resource_fingerprint)
            }
            None => super::inputs::request_hash(
                promise_hash.unwrap_or_else(|| &facts.hashes[&r.promise]),
                r,
                override_fp.unwrap_or_else(|| &facts.override_fps[&r.promise]),
            ),
        };
        let version_error = target.is_some_and(|t| t.error.is_some());
        let blocked = target.is_some_and(|t| t.blocked);
        origin.clear();
        let _ = write!(origin, "{}", r.origin);
        let interval = *intervals
            .entry(std::ptr::from_ref(p))
            .or_insert_with(|| reconciliation_interval(p, settings));
        let record = records.get(key).map(|r| &**r);
        // A steady request is skipped by every later stage: its step carries no strings.
        let step = |decision, spec_hash, cached| {
            let steady = decision == Decision::Steady;
            let text = |s: &String| if steady { String::new() } else { s.clone() };
            let hash_text = |h: &HashText| {
                if steady {
                    HashText::default()
                } else {
                    h.clone()
                }
            };
            RequestStep {
                request: r,
                promise: p,
                revision,
                target,
                hash: hash_text(&hash),
                ctx: text(ctx),
                origin: text(&origin),
                spec_hash,
                cached,
                decision,
            }
        };
        // Steady: same inputs (`needs_run` compares the input hash), same placement context,
        // same place in the repo, fully reconciled last time.
        if !held.contains(key)
            && !version_error
            && record.is_some_and(|rec| {
                rec.steady == *ctx
                    && rec.status.source == origin
                    && !needs_run(rec, &hash, interval, backoff)
            })
        {
            steps.push(step(Decision::Steady, HashText::default(), true));
            continue;
        }
        // A record whose cached output left the blob cache re-runs to restore it.
        let cached = record.is_none_or(&cached);
        let spec_hash = r.spec_digest.clone();
        if !facts.available.get(&r.promise).copied().unwrap_or(false) {
            steps.push(step(Decision::Waiting, spec_hash, cached));
            continue;
        }
        let run = match record {
            _ if blocked => false,
            None => true,
            Some(_) if !cached => true,
            Some(rec) => needs_run(rec, &hash, interval, backoff),
        };
        let decision = if !run {
            Decision::Unchanged
        } else if p
            .promise
            .object
            .spec
            .workflows
            .resource
            .configure
            .is_empty()
        {
            Decision::Complete
        } else {
            // A Promise edit (the request's own spec unchanged) fans out at a bounded rate.
            let rate_limited = record.is_some_and(|rec| {
                rec.completed && rec.spec_hash == spec_hash && cached && !rec.input_hash.is_empty()
            });
            Decision::Run { rate_limited }
        };
        steps.push(step(decision, spec_hash, cached));
    }
    steps
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
