//! Destination and state store status: the `Ready` condition with Kratix's reasons and
//! messages, the last events, and what Kratix lacks (write failures of real work flip
//! readiness, the last successful write, how many requests each Destination holds).
//!
//! Kratix keeps this on the Destination, GitStateStore and BucketStateStore objects
//! (Kratix: `internal/controller/destination_controller.go`, `state_store.go`, `shared.go`;
//! kratix-lifecycle.md §5); promised keeps it in `<state dir>/destinations.json` ([`load`],
//! [`save`]), written by the engine at the end of every pass that changed it, shown by
//! `promised status` and served by the daemon at `GET /api/v1/destinations`.
//!
//! Differences from Kratix, on purpose:
//! - a failed write of real work (not only of the test documents) turns the state store and
//!   its Destinations not ready, with the server's text, and the next successful write turns
//!   them ready again (`syntasso/kratix#850`: in Kratix write failures never flip the store);
//! - the write-permission check is repeated every `stateStoreCheckInterval` (Kratix re-checks
//!   only on a change, never on a timer);
//! - Destination events are recorded when the condition changes, not on every reconcile
//!   (Kubernetes folds Kratix's repeated events into one with a count).
//!
//! No secret is ever kept: the stores' errors are redacted by `statestores`, and [`redact`]
//! removes any URL user-info that is left.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::{StateError, write_atomic};
use crate::status::{Condition, ConditionStatus, Event, EventType, MAX_EVENTS, now_rfc3339};

/// The file in the state directory.
pub const FILE: &str = "destinations.json";

/// The condition type (the only one Kratix sets on Destinations and state stores).
pub const READY: &str = "Ready";

/// Condition reasons and event reasons (Kratix's, plus `StateStoreWriteFailed` on a store).
pub mod reason {
    /// Destination, True: its state store took the test documents.
    pub const TEST_DOCUMENTS_WRITTEN: &str = "TestDocumentsWritten";
    /// Destination, True with `initWorkloads.enabled: false`; also its Normal event.
    pub const DESTINATION_READY: &str = "DestinationReady";
    /// Destination, False before its first pass; also its Warning event.
    pub const DESTINATION_NOT_READY: &str = "DestinationNotReady";
    /// Destination, False: its state store is not in the config repo.
    pub const STATE_STORE_NOT_FOUND: &str = "StateStoreNotFound";
    /// Destination, False: its state store is not ready (cannot be opened or checked).
    pub const STATE_STORE_NOT_READY: &str = "StateStoreNotReady";
    /// Destination and (promised) state store, False: a write to the store failed.
    pub const STATE_STORE_WRITE_FAILED: &str = "StateStoreWriteFailed";
    /// State store, True.
    pub const STATE_STORE_READY: &str = "StateStoreReady";
    /// State store, False: it cannot be opened (bad URL, clone failed, bad configuration).
    pub const ERROR_INITIALISING_WRITER: &str = "ErrorInitialisingWriter";
    /// State store, False: the write-permission check failed.
    pub const ERROR_VALIDATING_PERMISSIONS: &str = "ErrorValidatingPermissions";
    /// State store, False: its credentials Secret is missing.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// State store event (Kratix), Normal: it became ready.
    pub const READY: &str = "Ready";
    /// State store event (Kratix), Warning: it became not ready.
    pub const NOT_READY: &str = "NotReady";
}

/// Everything in `destinations.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InfraStatus {
    /// Per Destination name.
    #[serde(default)]
    pub destinations: BTreeMap<String, DestinationStatus>,
    /// Per state store, keyed `<Kind>/<name>`.
    #[serde(default)]
    pub state_stores: BTreeMap<String, StateStoreStatus>,
}

/// `spec.stateStoreRef` of a Destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRef {
    /// `GitStateStore` or `BucketStateStore`.
    pub kind: String,
    /// Its name.
    pub name: String,
}

/// The status of one Destination (Kratix: `Destination.status`, plus counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    /// `metadata.name`.
    pub name: String,
    /// Its state store.
    pub state_store_ref: StoreRef,
    /// The `Ready` condition (Kratix sets no other).
    pub conditions: Vec<Condition>,
    /// Requests with output placed on it (promised; misplaced ones included).
    pub requests: usize,
    /// Promises whose dependencies are placed on it (promised).
    pub promises: usize,
    /// The last [`MAX_EVENTS`] events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    /// Consumer lint findings ([`crate::lint`]) on the files placed on it, as of the last pass
    /// that changed them: warnings, never failures. At most [`MAX_LINT`]; the rest counted in
    /// `lintOmitted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint: Vec<crate::lint::Finding>,
    /// Findings beyond [`MAX_LINT`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lint_omitted: usize,
    /// sha256 of the linted files' paths and hashes and of the lint settings: files that did
    /// not change are not linted again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub lint_fingerprint: String,
}

/// Lint findings kept per Destination.
pub const MAX_LINT: usize = 50;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The last successful write that made a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastWrite {
    /// RFC 3339 time.
    pub time: String,
    /// The commit (Git) or generation (S3) it made.
    pub version: String,
}

/// The status of one state store (Kratix: `GitStateStore.status` / `BucketStateStore.status`,
/// plus the last write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateStoreStatus {
    /// `GitStateStore` or `BucketStateStore`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// Kratix's `status.status`: `Ready` or `NotReady`.
    pub status: String,
    /// Git: `spec.url` without user-info; Bucket: `spec.endpoint` (Kratix's printer columns).
    pub url: String,
    /// Git: `spec.branch`; Bucket: `spec.bucketName`.
    pub branch_or_bucket: String,
    /// The `Ready` condition.
    pub conditions: Vec<Condition>,
    /// Destinations that write to it.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// The last write that made a commit (Git) or a new generation (S3); a version first seen
    /// by a pass with nothing to write (made by a process killed before recording it) counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_write: Option<LastWrite>,
    /// RFC 3339 time the write-permission check last passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<String>,
    /// The last [`MAX_EVENTS`] events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

impl DestinationStatus {
    /// Kratix's first-pass status: `Ready=False DestinationNotReady "Destination is not ready"`.
    pub fn new(name: &str, kind: &str, store: &str) -> Self {
        let mut d = DestinationStatus {
            name: name.into(),
            state_store_ref: StoreRef {
                kind: kind.into(),
                name: store.into(),
            },
            conditions: Vec::new(),
            requests: 0,
            promises: 0,
            events: Vec::new(),
            lint: Vec::new(),
            lint_omitted: 0,
            lint_fingerprint: String::new(),
        };
        set_ready(
            &mut d.conditions,
            ConditionStatus::False,
            reason::DESTINATION_NOT_READY,
            "Destination is not ready",
        );
        d
    }

    /// The `Ready` condition.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}

impl StateStoreStatus {
    /// The `Ready` condition.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == READY)
    }
}

/// Sets the `Ready` condition in `conditions`; `lastTransitionTime` moves only when the status
/// value changes. Returns whether the status value changed (or the condition is new).
pub fn set_ready(
    conditions: &mut Vec<Condition>,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == READY) {
        Some(c) => {
            let flipped = c.status != status;
            if flipped {
                c.last_transition_time = now_rfc3339().into();
            }
            c.status = status;
            c.reason = reason.into();
            c.message = message.into();
            flipped
        }
        None => {
            conditions.push(Condition {
                type_: READY.into(),
                status,
                reason: reason.into(),
                message: message.into(),
                last_transition_time: now_rfc3339().into(),
            });
            true
        }
    }
}

/// Appends an event to `events`, keeping the last [`MAX_EVENTS`].
pub fn push_event(events: &mut Vec<Event>, type_: EventType, reason: &str, message: &str) {
    events.push(Event {
        type_,
        reason: reason.into(),
        message: message.into(),
        time: now_rfc3339().into(),
    });
    let over = events.len().saturating_sub(MAX_EVENTS);
    events.drain(..over);
}

/// `text` with the user-info of every URL in it removed (`https://u:p@host/x` →
/// `https://***@host/x`): a server's error text may quote the URL it was given.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first `/`, whitespace or quote.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Reads `destinations.json` from the state directory `dir`: empty when it is missing or
/// does not parse (the next pass writes it again).
pub fn load(dir: &Path) -> InfraStatus {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "Destination status unreadable; it is rebuilt by the next pass");
            InfraStatus::default()
        }),
        Err(_) => InfraStatus::default(),
    }
}

/// Writes `destinations.json` in the state directory `dir` atomically.
pub fn save(dir: &Path, status: &InfraStatus) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(status).expect("Destination status serialises");
    write_atomic(&dir.join(FILE), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_userinfo_of_every_url() {
        assert_eq!(
            redact("push to https://bob:s3cret@git.example/x.git failed; see http://h/y"),
            "push to https://***@git.example/x.git failed; see http://h/y"
        );
        assert_eq!(redact("no url here"), "no url here");
        assert_eq!(redact("'ssh://git@h:22/r'"), "'ssh://***@h:22/r'");
    }

    #[test]
    fn ready_flips_and_keeps_transition_time() {
        let mut d = DestinationStatus::new("dev", "GitStateStore", "default");
        assert_eq!(d.ready().unwrap().reason, reason::DESTINATION_NOT_READY);
        d.conditions[0].last_transition_time = "2000-01-01T00:00:00Z".into();
        assert!(!set_ready(
            &mut d.conditions,
            ConditionStatus::False,
            reason::STATE_STORE_WRITE_FAILED,
            "x"
        ));
        assert_eq!(d.conditions[0].last_transition_time, "2000-01-01T00:00:00Z");
        assert!(set_ready(
            &mut d.conditions,
            ConditionStatus::True,
            reason::TEST_DOCUMENTS_WRITTEN,
            "Test documents written to State Store"
        ));
        assert_ne!(d.conditions[0].last_transition_time, "2000-01-01T00:00:00Z");
        for i in 0..30 {
            push_event(&mut d.events, EventType::Normal, "R", &i.to_string());
        }
        assert_eq!(d.events.len(), MAX_EVENTS);
        assert_eq!(d.events.last().unwrap().message, "29");
    }
}
