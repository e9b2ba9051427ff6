//! Health checks: SKE `HealthDefinition`s (kratix-lifecycle.md §1.3,
//! `syntasso/kratix-docs: docs/ske/03-reference/04-health-definition.md`) that a request's
//! resource configure pipelines output, run by promised on their cron `schedule`.
//!
//! SKE's health agent runs a HealthDefinition on the Destination as a CronJob, turns the
//! `{state, details}` its containers write to `/kratix/output/health-status.yaml` into a
//! HealthRecord and writes it to a state store, from which GitOps brings it back to the
//! platform. promised is its own health agent: it finds the definitions in the cached output
//! of each request's configure workflow, runs the definition's `workflow` Pipeline with the
//! same runner as every other workflow (`/kratix/input/object.yaml` is `spec.input`, or the
//! request as its configure workflow saw it), and folds the result in as a record whose
//! `source` is the definition. Rules:
//! - a definition is about the request whose pipeline wrote it; one whose `resourceRef` or
//!   `promiseRef` names another request is skipped with a warning (a pipeline cannot report on
//!   someone else's request);
//! - the schedule is a Kubernetes CronJob schedule (five fields or `@hourly`-style
//!   nicknames), evaluated in UTC; the first run is at the first scheduled time after the
//!   definition appears; runs missed while promised was down are made up once, then the
//!   schedule continues;
//! - a run that fails, or writes no valid `health-status.yaml`, reports `unknown` with the
//!   reason in the check's `message`;
//! - the definition file stays in the output placed on Destinations, as in SKE.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Sourced;
use crate::model::{HealthDefinition, HealthRecordData, HealthState, KRATIX_API_VERSION};
use crate::pipeline::{Action, RunnerConfig, WorkflowInput};
use crate::state::OutputRecord;
use crate::status::{HealthCheckStatus, HealthSource};
use crate::validate::{ValidPromise, ValidRequest};

/// Where a health check writes its result, relative to `/kratix/output`.
pub const HEALTH_STATUS_FILE: &str = "health-status.yaml";

/// A clock for schedules that follows tokio's clock (so a paused test clock drives it) and
/// never falls behind the wall clock (so a host that slept catches up).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: SystemTime,
    at: tokio::time::Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock {
            wall: SystemTime::now(),
            at: tokio::time::Instant::now(),
        }
    }

    /// Now: the wall time at start plus tokio's elapsed time, or the wall clock when it is
    /// ahead.
    pub fn now(&self) -> SystemTime {
        (self.wall + self.at.elapsed()).max(SystemTime::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

pub use crate::model::next_run;

/// A HealthDefinition found in a request's output, with the `<pipeline>/<path>` it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    /// `<pipeline>/<path>` of the output file.
    pub declared_in: String,
    /// The definition.
    pub definition: HealthDefinition,
}

/// What one output file declares: each document's definition or why it is not one.
type FileDefinitions = Vec<(usize, Result<HealthDefinition, String>)>;

/// Parsed definitions by blob sha256 (output files are content-addressed, so each is parsed
/// once): the definitions of the file, or nothing when it holds none. Entries not used since
/// the last [`DefinitionCache::start`] are dropped by [`DefinitionCache::prune`], without a
/// set of every file seen (the health stage walks every request on every pass).
#[derive(Debug, Default)]
pub struct DefinitionCache {
    /// sha256 → (the round it was last used in, its definitions).
    files: std::collections::HashMap<String, (u64, FileDefinitions), foldhash::fast::RandomState>,
    round: u64,
}

impl DefinitionCache {
    /// Starts a round of [`declared`] calls.
    pub fn start(&mut self) {
        self.round += 1;
    }

    /// Drops the files no [`declared`] call of this round used.
    pub fn prune(&mut self) {
        let round = self.round;
        self.files.retain(|_, (used, _)| *used == round);
    }
}

/// The HealthDefinitions in the cached `outputs` of request `key` (`<promise>/<ns>/<name>`),
/// read with `blob(sha256)`; problems are warnings naming the request, the file, the document
/// and the field.
pub fn declared(
    key: &str,
    outputs: &[OutputRecord],
    blob: impl Fn(&str) -> Option<Vec<u8>>,
    cache: &mut DefinitionCache,
    warnings: &mut Vec<String>,
) -> Vec<Declared> {
    let (promise, ns, name) = split_key(key);
    let mut out = Vec::new();
    // Static dependencies (pipeline "") declare nothing; an output known to hold no
    // definition is not read (about 3 µs a request, on every pass of a new process).
    let declaring = |o: &&OutputRecord| !o.pipeline.is_empty() && o.health != Some(false);
    for o in outputs.iter().filter(declaring) {
        for f in &o.files {
            if !(f.path.ends_with(".yaml") || f.path.ends_with(".yml")) {
                continue;
            }
            // Warnings once per file content (every pass sees the same cached output).
            let round = cache.round;
            let (fresh, defs) = match cache.files.get_mut(&*f.sha256) {
                Some((used, defs)) => {
                    *used = round;
                    (false, &*defs)
                }
                None => {
                    let defs = parse_definitions(blob(&f.sha256));
                    let (_, defs) = cache
                        .files
                        .entry(f.sha256.to_string())
                        .or_insert((round, defs));
                    (true, &*defs)
                }
            };
            if defs.is_empty() {
                continue;
            }
            let mut warn = |w: String| {
                if fresh {
                    warnings.push(w);
                }
            };
            for (doc, d) in defs.iter() {
                let at = format!("{}/{}", o.pipeline, f.path);
                match d {
                    Err(e) => warn(format!(
                        "{key}: health check in output {at}#{doc}: {e}; skipped"
                    )),
                    Ok(def) => {
                        let about = (
                            def.spec.promise_ref.get("name").and_then(Value::as_str),
                            def.spec
                                .resource_ref
                                .get("namespace")
                                .and_then(Value::as_str),
                            def.spec.resource_ref.get("name").and_then(Value::as_str),
                        );
                        let other = about.0.is_some_and(|p| p != promise)
                            || about.1.is_some_and(|n| n != ns)
                            || about.2.is_some_and(|n| n != name);
                        if other {
                            warn(format!(
                                "{key}: health check {} in output {at}#{doc}: spec.resourceRef/promiseRef name another request; a pipeline only declares checks of its own request; skipped",
                                def.metadata.name
                            ));
                            continue;
                        }
                        out.push(Declared {
                            declared_in: at,
                            definition: def.clone(),
                        });
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.definition.metadata.name.cmp(&b.definition.metadata.name));
    out.dedup_by(|a, b| a.definition.metadata.name == b.definition.metadata.name);
    out
}

fn split_key(key: &str) -> (&str, &str, &str) {
    let mut it = key.splitn(3, '/');
    (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    )
}

/// The HealthDefinition documents of a YAML file (only files that mention the kind are parsed).
fn parse_definitions(bytes: Option<Vec<u8>>) -> Vec<(usize, Result<HealthDefinition, String>)> {
    let Some(text) = bytes.and_then(|b| String::from_utf8(b).ok()) else {
        return Vec::new();
    };
    if !text.contains("HealthDefinition") {
        return Vec::new();
    }
    let Ok(docs) = crate::config::parse_yaml_stream(&text) else {
        return Vec::new(); // not ours to judge: it is placed as the pipeline wrote it
    };
    docs.iter()
        .enumerate()
        .filter(|(_, d)| {
            d.get("kind").and_then(Value::as_str) == Some("HealthDefinition")
                && d.get("apiVersion").and_then(Value::as_str) == Some(KRATIX_API_VERSION)
        })
        .map(|(i, d)| {
            (
                i,
                crate::config::from_value::<HealthDefinition>(d)
                    .map_err(|(field, msg)| format!("{field}: {msg}")),
            )
        })
        .collect()
}

/// `checks` (a request's [`HealthCheckStatus`] list) brought in line with the `declared`
/// definitions at `now`: new ones are scheduled, removed ones dropped (with their records),
/// a changed schedule is scheduled again. `None` when nothing changes (the status is then
/// not written, so not copied: [`crate::status::SharedStatus`]).
pub fn sync(
    checks: &[HealthCheckStatus],
    declared: &[Declared],
    now: SystemTime,
) -> Option<Vec<HealthCheckStatus>> {
    if checks.is_empty() && declared.is_empty() {
        return None;
    }
    let mut old: BTreeMap<String, HealthCheckStatus> =
        checks.iter().map(|c| (c.name.clone(), c.clone())).collect();
    let mut synced = Vec::with_capacity(declared.len());
    for d in declared {
        let def = &d.definition;
        let mut c = old.remove(&def.metadata.name).unwrap_or(HealthCheckStatus {
            name: def.metadata.name.clone(),
            namespace: String::new(),
            schedule: String::new(),
            declared_in: String::new(),
            next_run_at: None,
            last_run: None,
            state: None,
            details: None,
            message: String::new(),
            promise_version: None,
        });
        c.namespace = def.metadata.namespace.clone().unwrap_or_default();
        c.declared_in = d.declared_in.clone();
        c.promise_version = def.spec.promise_version.clone();
        if c.schedule != def.spec.schedule || (c.next_run_at.is_none() && c.message.is_empty()) {
            c.schedule = def.spec.schedule.clone();
            c.message.clear();
            match next_run(&c.schedule, now) {
                Ok(t) => c.next_run_at = Some(rfc3339(t)),
                Err(e) => {
                    c.next_run_at = None;
                    c.message = e;
                }
            }
        }
        synced.push(c);
    }
    (synced != checks).then_some(synced)
}

/// The names of the checks due at `now`.
pub fn due(checks: &[HealthCheckStatus], now: SystemTime) -> Vec<String> {
    checks
        .iter()
        .filter(|c| {
            c.next_run_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .is_some_and(|t| t <= now)
        })
        .map(|c| c.name.clone())
        .collect()
}

/// The earliest `nextRunAt` of `checks` after `evaluated` (when due checks were last looked
/// for: one due by then that did not run has no runner, its request being invalid or held).
pub fn next_due<'a>(
    checks: impl Iterator<Item = &'a HealthCheckStatus>,
    evaluated: Option<SystemTime>,
) -> Option<SystemTime> {
    checks
        .filter_map(|c| c.next_run_at.as_deref())
        .filter_map(|t| humantime::parse_rfc3339(t).ok())
        .filter(|t| evaluated.is_none_or(|e| *t > e))
        .min()
}

/// The result of one run: state, details, and why there is no state (empty when there is).
pub type RunResult = (HealthState, Option<Value>, String);

/// Runs `def`'s workflow for request `r` of Promise `p` (Promise folder `promise_dir` at
/// `/promise`; `object_yaml` is the request as its configure workflow sees it) and reads its
/// `health-status.yaml`.
pub async fn run(
    runner: &RunnerConfig,
    p: &ValidPromise,
    r: &ValidRequest,
    def: &HealthDefinition,
    object_yaml: String,
    promise_dir: Option<std::path::PathBuf>,
) -> RunResult {
    let mut input = WorkflowInput::for_request(p, r, Action::Configure);
    let pipelines = std::slice::from_ref(&def.spec.workflow);
    input.pipelines = pipelines;
    input.object_yaml = match &def.spec.input {
        Some(i) if !i.trim().is_empty() => i.clone(),
        _ => object_yaml,
    };
    input.existing_status = Map::new();
    input.promise_dir = promise_dir;
    let result = crate::pipeline::run_workflow(runner, &input).await;
    if let Some(e) = result.error() {
        return (HealthState::Unknown, None, format!("workflow failed: {e}"));
    }
    let Some(last) = result.pipelines.last() else {
        return (
            HealthState::Unknown,
            None,
            "workflow has no pipeline".into(),
        );
    };
    if !result.succeeded() {
        return (
            HealthState::Unknown,
            None,
            format!("pipeline {} did not complete", last.name),
        );
    }
    let Some(file) = last.outputs.iter().find(|f| f.path == HEALTH_STATUS_FILE) else {
        return (
            HealthState::Unknown,
            None,
            format!("no /kratix/output/{HEALTH_STATUS_FILE} written"),
        );
    };
    parse_result(&file.bytes)
}

/// `health-status.yaml`: `{state, details}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthStatusFile {
    #[serde(default)]
    state: HealthState,
    #[serde(default)]
    details: Option<Value>,
}

/// Parses a `health-status.yaml`; an invalid one is `unknown` with the reason.
pub fn parse_result(bytes: &[u8]) -> RunResult {
    let bad = |e: String| {
        (
            HealthState::Unknown,
            None,
            format!("/kratix/output/{HEALTH_STATUS_FILE}: {e}"),
        )
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad("not UTF-8".into());
    };
    let doc = match crate::config::parse_yaml_stream(text) {
        Ok(d) if d.len() == 1 => d.into_iter().next().expect("one document"),
        Ok(d) => return bad(format!("{} documents, expected one", d.len())),
        Err(e) => return bad(e),
    };
    match crate::config::from_value::<HealthStatusFile>(&doc) {
        Ok(f) => (f.state, f.details, String::new()),
        Err((field, msg)) => bad(format!("{field}: {msg}")),
    }
}

/// Records `result` of the run at `ran_at` into check `c` and schedules its next run after
/// `ran_at`.
pub fn note_run(c: &mut HealthCheckStatus, result: RunResult, ran_at: SystemTime) {
    let (state, details, message) = result;
    c.state = Some(state);
    c.details = details;
    c.message = message;
    c.last_run = ran_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64);
    match next_run(&c.schedule, ran_at) {
        Ok(t) => c.next_run_at = Some(rfc3339(t)),
        Err(e) => {
            c.next_run_at = None;
            c.message = e;
        }
    }
}

/// The HealthRecords of a request's checks that have run (`from`: `healthCheck <declared in>`).
pub fn records(key: &str, checks: &[HealthCheckStatus]) -> Vec<Sourced> {
    let (promise, ns, name) = split_key(key);
    checks
        .iter()
        .filter_map(|c| {
            let state = c.state?;
            Some(Sourced {
                data: HealthRecordData {
                    promise_ref: serde_json::json!({ "name": promise }),
                    resource_ref: serde_json::json!({ "name": name, "namespace": ns }),
                    state,
                    last_run: c.last_run,
                    details: c.details.clone(),
                    promise_version: c.promise_version.clone(),
                },
                source: HealthSource {
                    name: c.name.clone(),
                    namespace: if c.namespace.is_empty() {
                        ns.to_string()
                    } else {
                        c.namespace.clone()
                    },
                },
                from: format!("healthCheck {}", c.declared_in),
            })
        })
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long until `t` by `clock` (zero when past).
pub fn until(clock: &Clock, t: SystemTime) -> Duration {
    t.duration_since(clock.now()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_cron_in_utc() {
        let t0 = humantime::parse_rfc3339("2026-01-01T10:00:30Z").unwrap();
        let next = next_run("* * * * *", t0).unwrap();
        assert_eq!(rfc3339(next), "2026-01-01T10:01:00Z");
        let next = next_run("@hourly", t0).unwrap();
        assert_eq!(rfc3339(next), "2026-01-01T11:00:00Z");
        assert!(next_run("every minute", t0).is_err());
    }

    #[test]
    fn a_check_that_was_due_and_did_not_run_does_not_wake_again() {
        let t = |s: &str| humantime::parse_rfc3339(s).unwrap();
        let check = |at: &str| HealthCheckStatus {
            name: at.into(),
            namespace: String::new(),
            schedule: "* * * * *".into(),
            declared_in: String::new(),
            next_run_at: Some(at.into()),
            last_run: None,
            state: None,
            details: None,
            message: String::new(),
            promise_version: None,
        };
        let checks = [check("2026-01-01T10:00:00Z"), check("2026-01-01T10:05:00Z")];
        assert_eq!(
            next_due(checks.iter(), None),
            Some(t("2026-01-01T10:00:00Z"))
        );
        let evaluated = Some(t("2026-01-01T10:00:30Z"));
        assert_eq!(
            next_due(checks.iter(), evaluated),
            Some(t("2026-01-01T10:05:00Z"))
        );
    }

    #[test]
    fn health_status_file() {
        let (s, d, m) = parse_result(b"state: degraded\ndetails: {lag: 3}\n");
        assert_eq!(s, HealthState::Degraded);
        assert_eq!(d.unwrap()["lag"], 3);
        assert!(m.is_empty());
        let (s, _, m) = parse_result(b"state: sideways\n");
        assert_eq!(s, HealthState::Unknown);
        assert!(m.contains("state"), "{m}");
    }

    #[test]
    fn an_output_known_to_declare_no_check_is_not_read() {
        let def = "apiVersion: platform.kratix.io/v1alpha1\nkind: HealthDefinition\nmetadata: {name: ping}\nspec:\n  promiseRef: {name: p}\n  resourceRef: {name: r, namespace: ns}\n  schedule: '* * * * *'\n  workflow: {apiVersion: platform.kratix.io/v1alpha1, kind: Pipeline, metadata: {name: w}, spec: {containers: [{name: c, image: i}]}}\n";
        assert!(crate::state::may_declare_health("h.yaml", def.as_bytes()));
        assert!(!crate::state::may_declare_health("h.json", def.as_bytes()));
        assert!(!crate::state::may_declare_health(
            "cm.yaml",
            b"kind: ConfigMap"
        ));
        let output = |health| OutputRecord {
            pipeline: "configure".into(),
            files: vec![crate::state::FileRecord {
                path: "h.yaml".into(),
                sha256: "aa".into(),
            }],
            selectors: vec![],
            health,
        };
        let read = std::cell::Cell::new(0);
        let blob = |_: &str| {
            read.set(read.get() + 1);
            Some(def.as_bytes().to_vec())
        };
        let mut warnings = Vec::new();
        for (health, reads, found) in [(Some(false), 0, 0), (Some(true), 1, 1), (None, 1, 1)] {
            read.set(0);
            let mut cache = DefinitionCache::default();
            let d = declared("p/ns/r", &[output(health)], blob, &mut cache, &mut warnings);
            assert_eq!((read.get(), d.len()), (reads, found), "health {health:?}");
        }
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
