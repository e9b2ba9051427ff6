//! Resource health: HealthRecords folded into each request's `status.healthStatus`
//! (kratix-lifecycle.md §1, kratix-contract.md §5.5).
//!
//! Records come from three places, all folded the same way ([`fold`]):
//! - `HealthRecord` documents in the config repo;
//! - an optional **health state store** (`healthStateStore:` in the daemon config,
//!   [`HealthStoreSettings`]): a Git or S3 state store of the config repo, or a path in one,
//!   that health agents write HealthRecords to, read again every `pollInterval`
//!   ([`store`]);
//! - **health checks**: SKE `HealthDefinition`s that a request's resource configure pipelines
//!   output, run by promised on their cron schedule with the pipeline runner ([`checks`]); each
//!   run's `/kratix/output/health-status.yaml` becomes a record whose `source` is the check.
//!
//! The fold (Kratix: `internal/controller/healthrecord_controller.go`): the state is the worst
//! of the matching records' states, ranked unhealthy < degraded < unknown < healthy < ready,
//! starting from `ready`; `healthRecords` lists them with `state`, `lastRun`, `source` and
//! `details`. Deliberate differences from Kratix:
//! - a record matches on Promise **and** request name **and** namespace (Kratix matches
//!   `resourceRef.name` + `namespace` only and ignores `promiseRef`, so a record about
//!   `redis/default/db` also lands on `postgres/default/db`);
//! - a record whose `data.promiseVersion` is older than the version the request last applied
//!   (`status.promiseVersion`) is ignored and listed under `ignoredRecords`; when every record
//!   is ignored the state is `unknown` (Kratix plans both: `syntasso/kratix#944`, `#945`). A
//!   record without `promiseVersion`, or a request without one, always counts. Versions
//!   compare as semver (a leading `v` allowed); versions that are not semver count only when
//!   equal;
//! - the `HealthRecord` event (Kratix: `Health state is <state>`, `Warning` unless healthy or
//!   ready) is recorded when the folded state changes, not when one record's state differs
//!   from the old aggregate (a Kratix quirk); `lastTransitionTime` says when.
//!
//! Health is status only: it is not an input of any workflow, so a change of health never
//! re-runs a request.

pub mod checks;
pub mod store;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{HealthRecordData, HealthState, StateStoreKind};
use crate::status::{
    EventType, HealthRecordStatus, HealthSource, HealthStatus, IgnoredRecord, ObjectStatus,
    now_rfc3339,
};

/// `healthStateStore` in the daemon config: where health agents write HealthRecords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthStoreSettings {
    /// `GitStateStore` or `BucketStateStore`.
    pub kind: StateStoreKind,
    /// The state store's `metadata.name` in the config repo.
    pub name: String,
    /// Directory inside the store (below its `spec.path`) to read; default: all of it.
    /// Every `*.yaml`/`*.yml` file there is read; documents of other kinds are skipped.
    #[serde(default)]
    pub path: String,
    /// How often to read it again; default: the daemon's `pollInterval`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub poll_interval: Option<Duration>,
}

impl HealthStoreSettings {
    /// `<kind>/<name>`, the engine's key of the store.
    pub fn store_key(&self) -> String {
        format!("{}/{}", self.kind.as_str(), self.name)
    }
}

/// One HealthRecord from any source, ready to fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Sourced {
    /// The record's payload.
    pub data: HealthRecordData,
    /// `metadata.name` and namespace of the record (or of the health check).
    pub source: HealthSource,
    /// Where promised read it (see [`HealthRecordStatus::from`]).
    pub from: String,
}

impl Sourced {
    /// The request key (`<promise>/<namespace>/<name>`) it is about, when it names one.
    pub fn request_key(&self) -> Option<String> {
        let (ns, name) = self.data.resource()?;
        Some(crate::model::request_key(
            self.data.promise_name(),
            ns,
            name,
        ))
    }
}

/// Records grouped by the request key they are about (Promise + namespace + name), in
/// source order. Records that name no request are left out.
pub fn by_request<'a>(
    records: impl IntoIterator<Item = &'a Sourced>,
) -> BTreeMap<String, Vec<&'a Sourced>> {
    let mut out: BTreeMap<String, Vec<&Sourced>> = BTreeMap::new();
    for r in records {
        if let Some(k) = r.request_key() {
            out.entry(k).or_default().push(r);
        }
    }
    out
}

/// True when a record of `record` version must be ignored for a request that applied
/// `applied` (`syntasso/kratix#945`): both set, different, and the record's is older (semver,
/// a leading `v` allowed) or either is not semver.
pub fn is_stale(record: Option<&str>, applied: Option<&str>) -> bool {
    let (Some(r), Some(a)) = (record, applied) else {
        return false;
    };
    if r == a {
        return false;
    }
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    match (parse(r), parse(a)) {
        (Some(r), Some(a)) => r < a,
        _ => true,
    }
}

/// The folded `healthStatus` of a request that applied Promise version `applied`, from the
/// records about it (already matched on Promise, namespace and name). `previous` gives the
/// `lastTransitionTime` to keep when the state did not change.
pub fn fold(
    records: &[&Sourced],
    applied: Option<&str>,
    previous: Option<&HealthStatus>,
) -> HealthStatus {
    let mut state = HealthState::Ready;
    let mut health_records = Vec::new();
    let mut ignored_records = Vec::new();
    for r in records {
        let version = r.data.promise_version.as_deref();
        if is_stale(version, applied) {
            ignored_records.push(IgnoredRecord {
                source: r.source.clone(),
                promise_version: version.unwrap_or_default().to_string(),
            });
            continue;
        }
        state = state.min(r.data.state);
        health_records.push(HealthRecordStatus {
            state: r.data.state,
            last_run: r.data.last_run,
            source: r.source.clone(),
            details: r.data.details.clone(),
            from: r.from.clone(),
            promise_version: r.data.promise_version.clone(),
        });
    }
    if health_records.is_empty() && !ignored_records.is_empty() {
        state = HealthState::Unknown;
    }
    let last_transition_time = match previous {
        Some(p) if p.state == state => p.last_transition_time.clone(),
        _ => now_rfc3339(),
    };
    HealthStatus {
        state,
        health_records,
        last_transition_time,
        promise_version: applied.map(str::to_string),
        ignored_records,
    }
}

/// The request's `healthStatus` with `records` folded in (ignoring `lastTransitionTime`), or
/// `None` when it would not change (so a status is only written when it changes:
/// [`crate::status::SharedStatus`]). A request that never had a record keeps no
/// `healthStatus`; one whose records all went away is `ready` with none (Kratix).
pub fn folded(status: &ObjectStatus, records: &[&Sourced]) -> Option<HealthStatus> {
    if records.is_empty() && status.health_status.is_none() {
        return None;
    }
    let new = fold(
        records,
        status.promise_version.as_deref(),
        status.health_status.as_deref(),
    );
    (status.health_status.as_deref() != Some(&new)).then_some(new)
}

/// Sets `healthStatus` to `new` (from [`folded`]); a change of state also records the
/// `HealthRecord` event (`Warning` unless healthy or ready).
pub fn set(status: &mut ObjectStatus, new: HealthStatus) {
    if status
        .health_status
        .as_ref()
        .is_none_or(|o| o.state != new.state)
    {
        let type_ = if new.state.is_good() {
            EventType::Normal
        } else {
            EventType::Warning
        };
        status.event(
            type_,
            "HealthRecord",
            &format!("Health state is {}", new.state),
        );
    }
    status.health_status = Some(Box::new(new));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(state: HealthState, name: &str, version: Option<&str>) -> Sourced {
        Sourced {
            data: HealthRecordData {
                promise_ref: json!({"name": "redis"}),
                resource_ref: json!({"name": "db", "namespace": "default"}),
                state,
                last_run: Some(1),
                details: None,
                promise_version: version.map(str::to_string),
            },
            source: HealthSource {
                name: name.into(),
                namespace: "default".into(),
            },
            from: String::new(),
        }
    }

    #[test]
    fn worst_state_wins_and_ready_is_the_start() {
        let (a, b) = (
            rec(HealthState::Healthy, "a", None),
            rec(HealthState::Degraded, "b", None),
        );
        assert_eq!(fold(&[&a, &b], None, None).state, HealthState::Degraded);
        assert_eq!(fold(&[&a], None, None).state, HealthState::Healthy);
        assert_eq!(fold(&[], None, None).state, HealthState::Ready);
    }

    #[test]
    fn versions_older_than_the_applied_one_are_ignored() {
        assert!(is_stale(Some("v1.0.0"), Some("v1.1.0")));
        assert!(!is_stale(Some("v2.0.0"), Some("v1.1.0")));
        assert!(!is_stale(None, Some("v1.1.0")));
        assert!(!is_stale(Some("v1.0.0"), None));
        assert!(is_stale(Some("blue"), Some("green")));
        let old = rec(HealthState::Unhealthy, "old", Some("v1"));
        let old = Sourced {
            data: HealthRecordData {
                promise_version: Some("v1.0.0".into()),
                ..old.data
            },
            ..old
        };
        let s = fold(&[&old], Some("v2.0.0"), None);
        assert_eq!(s.state, HealthState::Unknown);
        assert_eq!(s.ignored_records.len(), 1);
    }
}
