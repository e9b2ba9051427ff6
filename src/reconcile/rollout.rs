//! Rollout stage (after versions, before the plan): UpgradePlans hold the requests of their
//! Promise that are not admitted to the rollout yet at their applied version
//! (README "Rolling out a Promise change", [`crate::rollout`]).
//!
//! For every `UpgradePlan` of the config (by name), [`crate::rollout::step::step`] decides
//! from the plan, the request records of the last pass (applied version, failure, health as
//! folded at the end of that pass), the operator overrides and the health stage's clock which
//! requests are admitted; the [`Targets`] of the others are replaced by their applied version's
//! revision (as a pinned request's), so the plan stage neither runs nor moves them. The
//! rollout records are saved before any workflow runs. A plan with a bad field, or a second
//! plan for one Promise, holds every request of its Promise that would move. Plans that left
//! the config repo are forgotten: their requests move as without a plan.

use std::collections::{BTreeMap, BTreeSet};

use super::versions::{self, Targets};
use super::{Engine, Pass};
use crate::model::LATEST_VERSION;
use crate::rollout::step::{Candidate, step};
use crate::rollout::{RolloutRecord, RolloutState, Rollouts};
use crate::state::sha256_hex;
use crate::status::cond;

/// What the rollout stage keeps between passes.
#[derive(Debug, Default)]
pub(super) struct RolloutRuntime {
    /// `rollouts.json`, loaded at the first pass.
    loaded: Option<Rollouts>,
    /// Request key → its `Promised-Rollout:` trailer, for requests admitted in this pass.
    trailers: BTreeMap<String, String>,
    /// Promise → the other steps of its rollout in this pass (group completed, paused,
    /// resumed…), as `Promised-Rollout:` trailers of commits that touch its requests.
    steps: BTreeMap<String, Vec<String>>,
}

/// The labels of object `v` (`metadata.labels`).
fn labels_of(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Engine {
    /// The rollout stage (see the module docs). Problems are pass warnings.
    pub(super) fn rollout_stage(&mut self, pass: &mut Pass<'_>, targets: &mut Targets) {
        let root = self.dir.root().to_path_buf();
        if self.rollout.loaded.is_none() {
            let loaded = crate::rollout::load(&root).unwrap_or_else(|e| {
                pass.report
                    .warnings
                    .push(format!("rollouts: starting afresh: {e}"));
                Rollouts::default()
            });
            self.rollout.loaded = Some(loaded);
        }
        self.rollout.trailers.clear();
        self.rollout.steps.clear();
        if pass.cfg.upgrade_plans.is_empty()
            && self
                .rollout
                .loaded
                .as_ref()
                .is_some_and(|r| r.plans.is_empty())
        {
            return;
        }
        let overrides = crate::rollout::load_overrides(&root).unwrap_or_else(|e| {
            pass.report
                .warnings
                .push(format!("rollouts: operator overrides ignored: {e}"));
            Default::default()
        });
        let now = self.health.now();
        let rollouts = self.rollout.loaded.as_mut().expect("loaded above");
        let before = rollouts.clone();
        let mut plans: Vec<_> = pass.cfg.upgrade_plans.iter().collect();
        plans.sort_by(|a, b| a.id.name.cmp(&b.id.name));
        let mut bindings: BTreeMap<(&str, &str, &str), BTreeMap<String, String>> = BTreeMap::new();
        for b in &pass.cfg.resource_bindings {
            if let Some(t) = b.object.target() {
                bindings.insert(t, b.object.metadata.labels.clone());
            }
        }
        let mut planned: BTreeSet<&str> = BTreeSet::new();
        for up in plans {
            let name = up.id.name.as_str();
            let promise_name = up.object.spec.promise_ref.name.as_str();
            let Some(promise) = pass.cfg.promise(promise_name) else {
                continue;
            };
            let current = promise.version();
            let rec = rollouts
                .plans
                .entry(name.to_string())
                .or_insert_with(|| RolloutRecord {
                    plan: name.to_string(),
                    promise: promise_name.to_string(),
                    ..RolloutRecord::default()
                });
            let requests: Vec<_> = pass
                .cfg
                .requests
                .iter()
                .filter(|r| r.promise == promise_name)
                .collect();
            let checked = if planned.insert(promise_name) {
                up.object
                    .check()
                    .map_err(|(field, msg)| format!("{}: {field}: {msg}", up.origin))
            } else {
                Err(format!(
                    "another UpgradePlan already rolls out Promise {promise_name}"
                ))
            };
            let plan = match checked {
                Ok(p) => p,
                Err(e) => {
                    rec.state = RolloutState::Invalid;
                    rec.message = format!("{e}; requests of {promise_name} stay at their version");
                    for r in &requests {
                        if let Some(t) = targets.get_mut(r.key())
                            && t.upgrading
                        {
                            let applied = self.state.requests.get(r.key()).and_then(|x| {
                                x.status.promise_version.as_deref().map(str::to_string)
                            });
                            let held = std::mem::take(t);
                            *t = versions::stay(
                                held,
                                applied,
                                current.unwrap_or_default(),
                                promise_name,
                                &mut self.revisions,
                            );
                        }
                    }
                    continue;
                }
            };
            if rec.state == RolloutState::Invalid {
                rec.state = RolloutState::Pending;
            }
            let labels: Vec<(String, Vec<BTreeMap<String, String>>)> = requests
                .iter()
                .map(|r| {
                    let mut l = vec![labels_of(&r.object())];
                    if let Some(b) = bindings.get(&(promise_name, r.namespace(), r.name())) {
                        l.push(b.clone());
                    }
                    (r.key().to_string(), l)
                })
                .collect();
            let mut cands: BTreeMap<String, Candidate<'_>> = BTreeMap::new();
            for (key, l) in &labels {
                let record = self.state.requests.get(key);
                let target = targets.get(key);
                let failure = record.and_then(|rec| {
                    let s = &rec.status;
                    if s.failed_version.as_deref() == Some(plan.to.as_str()) {
                        Some(
                            s.condition(cond::UPGRADE_SUCCEEDED)
                                .map(|c| c.message.to_string())
                                .unwrap_or_else(|| s.message.clone()),
                        )
                    } else if !rec.completed
                        && s.condition(cond::CONFIGURE_WORKFLOW_COMPLETED)
                            .is_some_and(|c| c.reason == "ConfigureWorkflowFailed")
                    {
                        Some(s.message.clone())
                    } else {
                        None
                    }
                });
                cands.insert(
                    key.clone(),
                    Candidate {
                        labels: l.iter().collect(),
                        applied: record.and_then(|r| r.status.promise_version.as_deref()),
                        completed: record.is_some_and(|r| r.completed),
                        failure,
                        health: record.and_then(|r| r.status.health_status.as_deref()),
                        floating: target.is_some_and(|t| t.binding_version == LATEST_VERSION),
                    },
                );
            }
            let spec_hash = sha256_hex(
                up.raw
                    .get("spec")
                    .map(ToString::to_string)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            let operator = overrides.plans.get(name).copied();
            let d = step(&plan, &spec_hash, current, rec, &cands, operator, now);
            drop(cands);
            let old = before
                .plans
                .get(name)
                .map(|r| r.events.as_slice())
                .unwrap_or_default();
            let steps: Vec<String> = rec
                .events
                .iter()
                .filter(|e| e.reason != "RequestAdmitted" && !old.contains(e))
                .map(|e| format!("{name} {}: {}", e.reason, e.message))
                .collect();
            if !steps.is_empty() {
                self.rollout
                    .steps
                    .entry(promise_name.to_string())
                    .or_default()
                    .extend(steps);
            }
            for key in &d.held {
                let Some(t) = targets.get_mut(key) else {
                    continue;
                };
                if !(t.upgrading && t.version == plan.to) {
                    continue;
                }
                let applied = self
                    .state
                    .requests
                    .get(key)
                    .and_then(|x| x.status.promise_version.as_deref().map(str::to_string));
                let held = std::mem::take(t);
                *t = versions::stay(
                    held,
                    applied,
                    current.unwrap_or_default(),
                    promise_name,
                    &mut self.revisions,
                );
            }
            for (key, group) in d.admitted {
                if let Some(record) = self.state.requests.get_mut(&key) {
                    record.status.event(
                        crate::status::EventType::Normal,
                        "RolloutAdmitted",
                        &format!(
                            "UpgradePlan {name}, group {group}: moving to version {}",
                            plan.to
                        ),
                    );
                }
                let trailer = format!(
                    "{name} promise={promise_name} to={} group={group} request={key} completed={}/{}",
                    plan.to, rec.completed_resources, rec.total_resources
                );
                self.rollout.trailers.insert(key, trailer);
            }
        }
        let in_config: BTreeSet<&str> = pass
            .cfg
            .upgrade_plans
            .iter()
            .map(|u| u.id.name.as_str())
            .collect();
        rollouts.plans.retain(|k, _| in_config.contains(k.as_str()));
        if *rollouts != before
            && let Err(e) = crate::rollout::save(&root, rollouts)
        {
            pass.report
                .warnings
                .push(format!("rollouts: cannot save the rollout state: {e}"));
        }
    }

    /// Every UpgradePlan's rollout as of the last pass (`None` before the first).
    pub fn rollouts(&self) -> Option<&Rollouts> {
        self.rollout.loaded.as_ref()
    }

    /// Whether an UpgradePlan is rolling out (its steps depend on health, not only on time).
    pub(super) fn rollout_in_progress(&self) -> bool {
        self.rollout.loaded.as_ref().is_some_and(|l| {
            l.plans
                .values()
                .any(|r| r.state == RolloutState::InProgress)
        })
    }

    /// How long until a rollout has its next step: none when nothing is rolling out; at once
    /// after a pass that admitted requests (the pass after it admits the next ones); the end
    /// of a group's soak otherwise.
    pub fn rollout_due(&self) -> Option<std::time::Duration> {
        if !self.rollout.trailers.is_empty() {
            return Some(std::time::Duration::ZERO);
        }
        let now = self.health.now();
        self.rollout
            .loaded
            .as_ref()?
            .plans
            .values()
            .filter(|r| r.state == RolloutState::InProgress)
            .flat_map(|r| r.groups.iter())
            .filter_map(|g| g.soak_until.as_deref())
            .filter_map(|t| humantime::parse_rfc3339(t).ok())
            .map(|t| t.duration_since(now).unwrap_or_default())
            .min()
    }

    /// The `Promised-Rollout:` trailers of a commit that touches `touched`: one per request
    /// admitted in this pass, and the other steps of this pass of the rollouts of their
    /// Promises.
    pub(super) fn rollout_trailers(&self, touched: Option<&BTreeSet<String>>) -> Vec<String> {
        let touched = touched.into_iter().flatten();
        let admitted = touched.clone().filter_map(|k| self.rollout.trailers.get(k));
        let promises: BTreeSet<&str> = touched
            .filter_map(|k| k.split_once('/').map(|(p, _)| p))
            .collect();
        let steps = promises
            .into_iter()
            .filter_map(|p| self.rollout.steps.get(p))
            .flatten();
        admitted
            .chain(steps)
            .map(|t| format!("Promised-Rollout: {t}"))
            .collect()
    }
}
