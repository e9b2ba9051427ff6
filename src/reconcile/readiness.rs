//! Readiness stage: after the write stage, the `Ready` condition and events of every
//! Destination and state store of the config ([`crate::infra`]), from what this pass saw:
//! whether each store opened, passed its write-permission check and took its writes.
//!
//! Kratix: `internal/controller/destination_controller.go` (Destination reasons and events),
//! `internal/controller/state_store.go` and `shared.go` (store reasons, events only on change);
//! kratix-lifecycle.md §5. Unlike Kratix, a failed write of real work turns the store and its
//! Destinations not ready with the server's text, and the next successful write turns them
//! ready again.

use std::collections::{BTreeMap, BTreeSet};

use super::destinations::{configured_stores, store_key_of};
use super::{Engine, EngineError, Pass};
use crate::infra::{
    DestinationStatus, InfraStatus, LastWrite, StateStoreStatus, push_event, reason, redact,
    set_ready,
};
use crate::status::{ConditionStatus as CS, EventType, now_rfc3339};

/// The prefix `keep_open` gives a failed write-permission check.
const CHECK_FAILED: &str = "write-permission check failed: ";

/// `(ready, reason, message)` of a `Ready` condition.
type Verdict = (CS, &'static str, String);

impl Engine {
    /// Sets the status of every Destination and state store of the config from this pass's
    /// results, records events on changes, forgets those that left the config repo, and saves
    /// `destinations.json` when anything changed.
    ///
    /// Errors: the state directory cannot be written ([`EngineError::State`]).
    pub(super) fn readiness(&mut self, pass: &mut Pass<'_>) -> Result<(), EngineError> {
        let before = self.infra.clone();
        let mut stores = BTreeMap::new();
        // Stores whose version moved in this pass: only their Destinations are linted again
        // (every apply reports the store's version, also when it wrote nothing).
        let mut moved = BTreeSet::new();
        for key in configured_stores(pass.cfg) {
            let verdict = store_verdict(pass, &key);
            let mut s = before
                .state_stores
                .get(&key)
                .cloned()
                .unwrap_or_else(|| new_store(&key));
            describe_store(pass, &mut s);
            // A new version: written by this pass, or by one killed before recording it.
            if let Some(Ok(Some(version))) = pass.store_results.get(&key)
                && s.last_successful_write.as_ref().map(|w| &w.version) != Some(version)
            {
                s.last_successful_write = Some(LastWrite {
                    time: now_rfc3339(),
                    version: version.clone(),
                });
                moved.insert(key.clone());
            }
            s.last_check_time = self.checked.get(&key).map(|(_, t)| t.clone());
            apply_store(&key, &mut s, verdict);
            stores.insert(key, s);
        }
        let mut dests = BTreeMap::new();
        let counts = self.placed_counts();
        for d in &pass.cfg.destinations {
            let name = &d.id.name;
            let r = &d.object.spec.state_store_ref;
            let kind = r.kind.as_str();
            let Some(key) = store_key_of(&r.kind, &r.name) else {
                continue;
            };
            let mut s = before
                .destinations
                .get(name)
                .cloned()
                .filter(|s| s.state_store_ref.kind == kind && s.state_store_ref.name == r.name)
                .unwrap_or_else(|| DestinationStatus::new(name, kind, &r.name));
            if let Some(st) = stores.get_mut(&key) {
                st.destinations.push(name.clone());
            }
            let (requests, promises) = counts.get(name.as_str()).copied().unwrap_or_default();
            (s.requests, s.promises) = (requests, promises);
            let canary_new = d.object.spec.init_workloads.enabled
                && pass
                    .destinations_at_start
                    .get(name)
                    .is_none_or(|r| r.canary_hash.is_empty());
            let verdict = destination_verdict(
                pass,
                &key,
                stores.contains_key(&key),
                d.object.spec.init_workloads.enabled,
                canary_new,
            );
            apply_destination(&mut s, verdict);
            self.lint_destination(&mut s, moved.contains(&key));
            pass.report.lint.extend(s.lint.iter().cloned());
            dests.insert(name.clone(), s);
        }
        self.lint_cache.retain(|name, _| dests.contains_key(name));
        self.infra = InfraStatus {
            destinations: dests,
            state_stores: stores,
        };
        if self.infra != before {
            crate::infra::save(self.dir.root(), &self.infra)?;
        }
        Ok(())
    }

    /// Destination name → (requests, Promises) with output placed on it (owned keys: the
    /// readiness stage lints, which needs the engine mutably, while it reads them).
    fn placed_counts(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for (records, is_request) in [(&self.state.requests, true), (&self.state.promises, false)] {
            for r in records.values() {
                // Each Destination once per record; a set only for records placed widely
                // (this runs over every record on every pass).
                let mut on: Vec<&str> = r
                    .placements
                    .iter()
                    .map(|p| p.destination.as_str())
                    .collect();
                if on.len() > 1 {
                    on.sort_unstable();
                    on.dedup();
                }
                for d in on {
                    let c = out.entry(d).or_default();
                    if is_request {
                        c.0 += 1;
                    } else {
                        c.1 += 1;
                    }
                }
            }
        }
        out.into_iter().map(|(d, c)| (d.to_string(), c)).collect()
    }

    /// Destination and state store status as of the last pass (loaded from the state
    /// directory before the first).
    pub fn infra(&self) -> &InfraStatus {
        &self.infra
    }

    /// How long until the write-permission check of a ready state store is due again
    /// (`stateStoreCheckInterval`); `None` without checked stores or with `0s` (every pass).
    pub fn store_check_due(&self) -> Option<std::time::Duration> {
        let every = self.settings.state_store_check_interval;
        if every.is_zero() {
            return None; // checked on every pass anyway
        }
        self.checked
            .values()
            .map(|(at, _)| every.saturating_sub(at.elapsed()))
            .min()
    }
}

/// A fresh, not yet judged status of state store `key` (`<Kind>/<name>`).
fn new_store(key: &str) -> StateStoreStatus {
    let (kind, name) = key.split_once('/').unwrap_or((key, ""));
    StateStoreStatus {
        kind: kind.into(),
        name: name.into(),
        status: "NotReady".into(),
        url: String::new(),
        branch_or_bucket: String::new(),
        conditions: Vec::new(),
        destinations: Vec::new(),
        last_successful_write: None,
        last_check_time: None,
        events: Vec::new(),
    }
}

/// The store's printer columns from its spec (Git: URL without user-info, branch; Bucket:
/// endpoint, bucket name); its Destinations are filled in by the caller.
fn describe_store(pass: &Pass<'_>, s: &mut StateStoreStatus) {
    s.destinations.clear();
    let name = s.name.as_str();
    if s.kind == "GitStateStore" {
        if let Some(g) = pass.cfg.git_state_stores.iter().find(|g| g.id.name == name) {
            s.url = redact(&statestores::git::config::redact_url(&g.object.spec.url));
            s.branch_or_bucket = g.object.spec.branch.clone();
        }
    } else if let Some(b) = pass
        .cfg
        .bucket_state_stores
        .iter()
        .find(|b| b.id.name == name)
    {
        s.url = redact(&b.object.spec.endpoint);
        s.branch_or_bucket = b.object.spec.bucket_name.clone();
    }
}

/// The store's `Ready` from this pass: it could not be opened, its check failed, its write
/// failed, or it is ready.
fn store_verdict(pass: &Pass<'_>, key: &str) -> Verdict {
    if let Some(e) = pass.store_errors.get(key) {
        let e = redact(e);
        if let Some(check) = e.strip_prefix(CHECK_FAILED) {
            return (
                CS::False,
                reason::ERROR_VALIDATING_PERMISSIONS,
                format!("Error validating state store permissions: {check}"),
            );
        }
        let lower = e.to_ascii_lowercase();
        let why = if lower.contains("secret")
            && (lower.contains("not found") || lower.contains("missing"))
        {
            reason::SECRET_NOT_FOUND
        } else {
            reason::ERROR_INITIALISING_WRITER
        };
        return (CS::False, why, e);
    }
    if let Some(Err(e)) = pass.store_results.get(key) {
        return (
            CS::False,
            reason::STATE_STORE_WRITE_FAILED,
            format!("Failed to write to State Store: {}", redact(e)),
        );
    }
    (
        CS::True,
        reason::STATE_STORE_READY,
        "State store is ready".into(),
    )
}

/// A Destination's `Ready` from its store's result this pass.
fn destination_verdict(
    pass: &Pass<'_>,
    key: &str,
    configured: bool,
    init_workloads: bool,
    canary_new: bool,
) -> Verdict {
    if !configured {
        return (
            CS::False,
            reason::STATE_STORE_NOT_FOUND,
            format!("{key}: not found"),
        );
    }
    if pass.store_errors.contains_key(key) {
        return (
            CS::False,
            reason::STATE_STORE_NOT_READY,
            format!("{key}: not ready"),
        );
    }
    if let Some(Err(e)) = pass.store_results.get(key) {
        let what = if canary_new {
            "Failed to write test documents to State Store"
        } else {
            "Failed to write to State Store"
        };
        return (
            CS::False,
            reason::STATE_STORE_WRITE_FAILED,
            format!("{what}: {}", redact(e)),
        );
    }
    if init_workloads {
        (
            CS::True,
            reason::TEST_DOCUMENTS_WRITTEN,
            "Test documents written to State Store".into(),
        )
    } else {
        (
            CS::True,
            reason::DESTINATION_READY,
            "Destination is ready".into(),
        )
    }
}

/// Whether `(status, reason)` differs from the `Ready` condition in `conditions` (or there is
/// none): such a change is an event.
fn changes(conditions: &[crate::status::Condition], v: &Verdict) -> bool {
    conditions
        .iter()
        .find(|c| c.type_ == crate::infra::READY)
        .is_none_or(|c| c.status != v.0 || c.reason != v.1)
}

/// Sets a store's `Ready` and `status.status`; on a change, Kratix's event (`Normal Ready
/// <Kind> "<name>" is ready` / `Warning NotReady <message>`) and a log line.
fn apply_store(key: &str, s: &mut StateStoreStatus, v: Verdict) {
    let changed = changes(&s.conditions, &v) || s.events.is_empty();
    set_ready(&mut s.conditions, v.0, v.1, &v.2);
    s.status = if v.0 == CS::True { "Ready" } else { "NotReady" }.into();
    if !changed {
        return;
    }
    if v.0 == CS::True {
        let msg = format!("{} {:?} is ready", s.kind, s.name);
        push_event(&mut s.events, EventType::Normal, reason::READY, &msg);
        tracing::info!(controller = "stateStore", name = %s.name, store = %key, reason = v.1, "state store is ready");
    } else {
        push_event(&mut s.events, EventType::Warning, reason::NOT_READY, &v.2);
        tracing::warn!(controller = "stateStore", name = %s.name, store = %key, reason = v.1, message = %v.2, "state store is not ready");
    }
}

/// Sets a Destination's `Ready`; on a change, Kratix's event (`Normal DestinationReady
/// "Destination is Ready"` / `Warning DestinationNotReady <message>`) and a log line.
fn apply_destination(s: &mut DestinationStatus, v: Verdict) {
    let changed = changes(&s.conditions, &v) || s.events.is_empty();
    set_ready(&mut s.conditions, v.0, v.1, &v.2);
    if !changed {
        return;
    }
    if v.0 == CS::True {
        push_event(
            &mut s.events,
            EventType::Normal,
            reason::DESTINATION_READY,
            "Destination is Ready",
        );
        tracing::info!(controller = "destination", name = %s.name, reason = v.1, "destination is ready");
    } else {
        push_event(
            &mut s.events,
            EventType::Warning,
            reason::DESTINATION_NOT_READY,
            &v.2,
        );
        tracing::warn!(controller = "destination", name = %s.name, reason = v.1, message = %v.2, "destination is not ready");
    }
}
