//! Rollouts (UpgradePlans, [`crate::rollout`]) in the daemon: `GET /api/v1/rollouts` and the
//! `promised_rollout_*` metrics, refreshed after every pass.
//!
//! Metrics (gauges):
//! - `promised_rollout_resources{plan,promise,status}`: requests in the rollout by `status`
//!   `total`, `completed`, `failed`, `pending` (not moved yet);
//! - `promised_rollout_state{plan,promise,state}`: 1 for the rollout's state
//!   (`Pending`, `InProgress`, `Paused`, `Completed`, `Aborted`, `Invalid`), 0 for the others;
//! - `promised_rollout_group_resources{plan,group,status}`: per group, `total`, `pending`,
//!   `in_progress`, `succeeded`, `failed`, `skipped`.
//!
//! Series of plans that left the config repo are removed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::State as AxState;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Shared;
use crate::reconcile::Engine;
use crate::rollout::{RolloutState, Rollouts};

/// Label set `{plan,promise,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RolloutLabel {
    /// The UpgradePlan.
    pub plan: String,
    /// Its Promise.
    pub promise: String,
    /// `total`, `completed`, `failed` or `pending`.
    pub status: String,
}

/// Label set `{plan,promise,state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RolloutStateLabel {
    /// The UpgradePlan.
    pub plan: String,
    /// Its Promise.
    pub promise: String,
    /// A [`RolloutState`].
    pub state: String,
}

/// Label set `{plan,group,status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct GroupLabel {
    /// The UpgradePlan.
    pub plan: String,
    /// The rollout group.
    pub group: String,
    /// `total`, `pending`, `in_progress`, `succeeded`, `failed` or `skipped`.
    pub status: String,
}

/// The `promised_rollout_*` gauges (see the module docs).
#[derive(Default)]
pub struct RolloutMetrics {
    resources: Family<RolloutLabel, Gauge>,
    state: Family<RolloutStateLabel, Gauge>,
    groups: Family<GroupLabel, Gauge>,
    /// Series set at the last refresh, to remove those that are gone.
    known: Mutex<(
        BTreeSet<RolloutLabel>,
        BTreeSet<RolloutStateLabel>,
        BTreeSet<GroupLabel>,
    )>,
}

impl RolloutMetrics {
    /// Registers the gauges in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "rollout_resources",
            "Requests in an UpgradePlan's rollout, by status (total, completed, failed, pending)",
            self.resources.clone(),
        );
        registry.register(
            "rollout_state",
            "1 for the state an UpgradePlan's rollout is in, 0 for the others",
            self.state.clone(),
        );
        registry.register(
            "rollout_group_resources",
            "Requests of a rollout group, by status",
            self.groups.clone(),
        );
    }

    /// Sets every series from `rollouts`, removing those of plans and groups that are gone.
    pub fn observe(&self, rollouts: &Rollouts) {
        let mut res = BTreeSet::new();
        let mut states = BTreeSet::new();
        let mut groups = BTreeSet::new();
        for (plan, r) in &rollouts.plans {
            let pending = r
                .members
                .values()
                .filter(|m| m.phase == crate::rollout::MemberPhase::Pending);
            for (status, v) in [
                ("total", r.total_resources),
                ("completed", r.completed_resources),
                ("failed", r.failed_resources),
                ("pending", pending.count()),
            ] {
                let l = RolloutLabel {
                    plan: plan.clone(),
                    promise: r.promise.clone(),
                    status: status.into(),
                };
                self.resources.get_or_create(&l).set(v as i64);
                res.insert(l);
            }
            for s in RolloutState::ALL {
                let l = RolloutStateLabel {
                    plan: plan.clone(),
                    promise: r.promise.clone(),
                    state: s.as_str().into(),
                };
                self.state.get_or_create(&l).set(i64::from(r.state == s));
                states.insert(l);
            }
            for g in &r.groups {
                for (status, v) in [
                    ("total", g.total),
                    ("pending", g.pending),
                    ("in_progress", g.in_progress),
                    ("succeeded", g.succeeded),
                    ("failed", g.failed),
                    ("skipped", g.skipped),
                ] {
                    let l = GroupLabel {
                        plan: plan.clone(),
                        group: g.name.clone(),
                        status: status.into(),
                    };
                    self.groups.get_or_create(&l).set(v as i64);
                    groups.insert(l);
                }
            }
        }
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        for l in known.0.difference(&res) {
            self.resources.remove(l);
        }
        for l in known.1.difference(&states) {
            self.state.remove(l);
        }
        for l in known.2.difference(&groups) {
            self.groups.remove(l);
        }
        *known = (res, states, groups);
    }
}

/// After a pass: the rollouts of `engines` (every held shard's) become the metrics and
/// `GET /api/v1/rollouts`.
pub(super) async fn publish<'e>(shared: &Shared, engines: impl IntoIterator<Item = &'e Engine>) {
    let mut all = Rollouts::default();
    for e in engines {
        if let Some(r) = e.rollouts() {
            all.plans.extend(r.plans.clone());
        }
    }
    shared.metrics.rollouts.observe(&all);
    let json = serde_json::to_vec(&all).expect("rollouts serialise");
    *shared.rollouts.write().await = Some(json.into());
}

/// `GET /api/v1/rollouts`: every UpgradePlan's rollout as of the last pass, as JSON
/// `{"plans": {<name>: …}}` ([`Rollouts`], what `promised status NAME --output json` prints
/// for one); 503 until the first pass has ended, and on a standby.
pub(super) async fn handler(AxState(s): AxState<Arc<Shared>>) -> Response {
    super::http::last_pass_json(&s, &s.rollouts, "rollouts").await
}
