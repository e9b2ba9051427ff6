//! Staged rollouts of a Promise version (README "Rolling out a Promise change"): the progress
//! of every `UpgradePlan` ([`crate::model::UpgradePlan`]), kept in the state directory.
//!
//! Files in `<stateDir>`:
//!
//! | path | what | written by |
//! |---|---|---|
//! | `rollouts.json` | [`Rollouts`]: per plan its state, members, groups and pause | the engine, each pass that changed it |
//! | `rollout-overrides.json` | [`Overrides`]: the last `promised rollout pause\|resume\|abort` per plan | the CLI |
//!
//! What each pass does with a plan is the pure function [`step::step`]; the engine's rollout
//! stage (`crate::reconcile`, `rollout.rs`) gathers its inputs and applies its result (requests
//! not admitted stay at their applied version). Every decision is recorded in the plan's
//! record before any workflow runs, so a daemon killed mid-rollout continues where it was:
//! admitted requests stay admitted, finished requests are finished by their records
//! (`status.promiseVersion`), and nothing finished runs again.

pub mod step;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::StateError;

/// File of [`Rollouts`] in the state directory.
pub const ROLLOUTS_FILE: &str = "rollouts.json";
/// File of [`Overrides`] in the state directory.
pub const OVERRIDES_FILE: &str = "rollout-overrides.json";
/// Events kept per rollout.
pub const MAX_ROLLOUT_EVENTS: usize = 30;

/// Every plan's rollout, by plan name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollouts {
    /// Plan name → its rollout.
    #[serde(default)]
    pub plans: BTreeMap<String, RolloutRecord>,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RolloutState {
    /// The Promise is not at `upgradePath.to` yet: nothing is held.
    #[default]
    Pending,
    /// Requests are moving group by group.
    InProgress,
    /// No request starts moving (see [`RolloutRecord::paused`] for who paused and why).
    Paused,
    /// Every group completed.
    Completed,
    /// Stopped for good (`spec.aborted: true` or `promised rollout abort`): requests not
    /// moved stay at their version while the plan is in the config repo.
    Aborted,
    /// The plan has a bad field (named in `message`): every request of its Promise that
    /// would move stays where it is.
    Invalid,
}

impl RolloutState {
    /// The state as shown (`InProgress`).
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Pending => "Pending",
            RolloutState::InProgress => "InProgress",
            RolloutState::Paused => "Paused",
            RolloutState::Completed => "Completed",
            RolloutState::Aborted => "Aborted",
            RolloutState::Invalid => "Invalid",
        }
    }

    /// Every state, for metrics.
    pub const ALL: [RolloutState; 6] = [
        RolloutState::Pending,
        RolloutState::InProgress,
        RolloutState::Paused,
        RolloutState::Completed,
        RolloutState::Aborted,
        RolloutState::Invalid,
    ];
}

/// One plan's rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// The plan's name.
    pub plan: String,
    /// Its Promise.
    pub promise: String,
    /// `upgradePath.from` as written.
    pub from: Vec<String>,
    /// `upgradePath.to`.
    pub to: String,
    /// Where it is.
    pub state: RolloutState,
    /// What it waits for, or why it stopped.
    #[serde(default)]
    pub message: String,
    /// Requests in the rollout (members: their applied version matched `from`).
    pub total_resources: usize,
    /// Members at `to`.
    pub completed_resources: usize,
    /// Members whose upgrade failed.
    pub failed_resources: usize,
    /// Per group, in the plan's order (members no group selects are under
    /// [`RolloutRecord::unselected`]).
    #[serde(default)]
    pub groups: Vec<GroupProgress>,
    /// Members no group selects: they stay at their version.
    #[serde(default)]
    pub unselected: usize,
    /// Every member by request key.
    #[serde(default)]
    pub members: BTreeMap<String, Member>,
    /// Set while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// Members whose failure or bad health was acknowledged by a resume: they no longer pause
    /// the rollout (until they are healthy again and turn bad once more).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acknowledged: BTreeSet<String>,
    /// Hash of the plan's `spec` as last seen: a change is a commit to act on (pause,
    /// resume, abort).
    #[serde(default)]
    pub spec_hash: String,
    /// The last operator override acted on ([`Override::seq`]).
    #[serde(default)]
    pub operator_seen: u64,
    /// RFC 3339 time the first request was admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 time it completed or was aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// What happened, oldest first (at most [`MAX_ROLLOUT_EVENTS`]).
    #[serde(default)]
    pub events: Vec<RolloutEvent>,
}

/// Progress of one rollout group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupProgress {
    /// The group's name.
    pub name: String,
    /// `Waiting`, `InProgress`, `Soaking` (every request passed the health gate; the soak
    /// time runs) or `Completed`.
    pub state: String,
    /// Members in the group.
    pub total: usize,
    /// Not admitted yet.
    pub pending: usize,
    /// Admitted, not at `to` yet (or not passing the health gate yet).
    pub in_progress: usize,
    /// At `to`.
    pub succeeded: usize,
    /// Upgrade failed.
    pub failed: usize,
    /// Left the config repo before moving.
    pub skipped: usize,
    /// RFC 3339 time its first request was admitted (its health gate timeout counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339 time every request of the group first passed the health gate (the soak
    /// counts from here; cleared when one stops passing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<String>,
    /// RFC 3339 time its soak ends (while `Soaking`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_until: Option<String>,
    /// RFC 3339 time it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

/// One request in a rollout.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Its group (empty: no group selects it).
    #[serde(default)]
    pub group: String,
    /// Where it is.
    pub phase: MemberPhase,
    /// The version it moves from.
    #[serde(default)]
    pub from_version: String,
    /// RFC 3339 time it was admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admitted_at: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where one member is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberPhase {
    /// Held at its version.
    #[default]
    Pending,
    /// Admitted: runs at `to`.
    Moving,
    /// At `to`.
    Succeeded,
    /// Its upgrade to `to` failed (it stays at its version, `UpgradeFailed`).
    Failed,
    /// Left the config repo (or was pinned elsewhere) before it moved.
    Skipped,
}

/// Who paused a rollout, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// `Failure`, `Health`, `Timeout` (automatic), `Plan` (`spec.paused: true`) or `Operator`
    /// (`promised rollout pause`).
    pub by: String,
    /// The request that made it pause (automatic pauses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Why.
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
}

/// One thing that happened in a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// RFC 3339 time.
    pub time: String,
    /// CamelCase reason (`RequestAdmitted`, `GroupCompleted`, `RolloutPaused`, …).
    pub reason: String,
    /// What happened.
    pub message: String,
}

impl RolloutRecord {
    /// Records an event (the oldest dropped beyond [`MAX_ROLLOUT_EVENTS`]).
    pub fn event(&mut self, time: &str, reason: &str, message: String) {
        self.events.push(RolloutEvent {
            time: time.to_string(),
            reason: reason.to_string(),
            message,
        });
        if self.events.len() > MAX_ROLLOUT_EVENTS {
            let extra = self.events.len() - MAX_ROLLOUT_EVENTS;
            self.events.drain(..extra);
        }
    }
}

/// An operator's action on a plan (`promised rollout pause|resume|abort NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    /// Stop admitting requests.
    Pause,
    /// Continue (acknowledging the failures and bad health that paused it).
    Resume,
    /// Stop for good.
    Abort,
}

impl Action {
    /// `pause`, `resume` or `abort`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// The last operator action per plan (`rollout-overrides.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// Plan name → its last override.
    #[serde(default)]
    pub plans: BTreeMap<String, Override>,
}

/// One operator override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// What to do.
    pub action: Action,
    /// Increases with every override of the plan: the engine acts on each one once.
    pub seq: u64,
}

fn read_json<T: Default + for<'de> Deserialize<'de>>(path: &Path) -> Result<T, StateError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(StateError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Loads `<state_dir>/rollouts.json` (empty when missing).
///
/// Errors: the file cannot be read or does not parse.
pub fn load(state_dir: &Path) -> Result<Rollouts, StateError> {
    read_json(&state_dir.join(ROLLOUTS_FILE))
}

/// Saves `<state_dir>/rollouts.json` atomically.
pub fn save(state_dir: &Path, rollouts: &Rollouts) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(rollouts).expect("rollouts serialise");
    crate::state::write_atomic(&state_dir.join(ROLLOUTS_FILE), &bytes)
}

/// Loads `<state_dir>/rollout-overrides.json` (empty when missing).
///
/// Errors: the file cannot be read or does not parse.
pub fn load_overrides(state_dir: &Path) -> Result<Overrides, StateError> {
    read_json(&state_dir.join(OVERRIDES_FILE))
}

/// Records operator `action` on `plan` in `<state_dir>/rollout-overrides.json` (the engine
/// acts on it in its next pass). Returns the override's sequence number.
///
/// Errors: the file cannot be read, parsed or written.
pub fn push_override(state_dir: &Path, plan: &str, action: Action) -> Result<u64, StateError> {
    let mut o = load_overrides(state_dir)?;
    let seen = load(state_dir)
        .ok()
        .and_then(|r| r.plans.get(plan).map(|p| p.operator_seen))
        .unwrap_or(0);
    let seq = o.plans.get(plan).map_or(0, |x| x.seq).max(seen) + 1;
    o.plans.insert(plan.to_string(), Override { action, seq });
    let bytes = serde_json::to_vec_pretty(&o).expect("overrides serialise");
    crate::state::write_atomic(&state_dir.join(OVERRIDES_FILE), &bytes)?;
    Ok(seq)
}
