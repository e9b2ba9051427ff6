//! [`step`] with explicit times: canary first, `maxConcurrent`, soak, timeout, automatic
//! pause, resume by a plan change and by an operator, abort, windows.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::*;
use crate::model::UpgradePlan;
use crate::status::HealthStatus;

fn plan(extra: &str) -> CheckedPlan {
    let p: UpgradePlan = serde_saphyr::from_str(&format!(
        "apiVersion: platform.kratix.io/v1alpha1\nkind: UpgradePlan\nmetadata: {{name: up}}\n\
         spec:\n  promiseRef: {{name: app}}\n  upgradePath: {{from: v1, to: v2}}\n{extra}\
         \x20 rolloutGroups:\n  - {{name: canary, selectors: {{matchLabels: {{canary: \"true\"}}}}}}\n\
         \x20 - {{name: rest, selectors: {{matchAll: true}}, maxConcurrent: \"25%\"}}\n"
    ))
    .unwrap();
    p.check().unwrap()
}

/// Requests `r1`..`rn` (`r1` is the canary) with their applied version and health.
struct World {
    labels: Vec<BTreeMap<String, String>>,
    applied: Vec<String>,
    failed: Vec<bool>,
    health: Vec<Option<HealthStatus>>,
}

impl World {
    fn new(n: usize) -> World {
        let labels = (0..n)
            .map(|i| {
                if i == 0 {
                    BTreeMap::from([("canary".to_string(), "true".to_string())])
                } else {
                    BTreeMap::new()
                }
            })
            .collect();
        World {
            labels,
            applied: vec!["v1".into(); n],
            failed: vec![false; n],
            health: vec![None; n],
        }
    }

    fn cands(&self) -> BTreeMap<String, Candidate<'_>> {
        (0..self.applied.len())
            .map(|i| {
                (
                    format!("app/default/r{}", i + 1),
                    Candidate {
                        labels: vec![&self.labels[i]],
                        applied: Some(&self.applied[i]),
                        completed: !self.failed[i],
                        failure: self.failed[i].then(|| "pipeline render failed".to_string()),
                        health: self.health[i].as_ref(),
                        floating: true,
                    },
                )
            })
            .collect()
    }

    /// Admitted requests finish at v2.
    fn run(&mut self, d: &Decision) {
        for (k, _) in &d.admitted {
            let i: usize = k.trim_start_matches("app/default/r").parse().unwrap();
            self.applied[i - 1] = "v2".into();
        }
    }

    fn set_health(&mut self, i: usize, state: HealthState) {
        self.health[i - 1] = Some(HealthStatus {
            state,
            health_records: Vec::new(),
            last_transition_time: String::new(),
            promise_version: Some(self.applied[i - 1].clone()),
            ignored_records: Vec::new(),
        });
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn keys(d: &Decision) -> Vec<String> {
    d.admitted.iter().map(|(k, _)| k.clone()).collect()
}

#[test]
fn canary_then_soak_then_rest_one_at_a_time_with_a_timeout() {
    let p = plan("  healthGate: {state: healthy, soak: 10m, timeout: 1h}\n");
    let mut w = World::new(8);
    for i in 1..=8 {
        w.set_health(i, HealthState::Unknown);
    }
    let mut rec = RolloutRecord::default();
    // Not at v2 yet: nothing held, Pending.
    let d = step(&p, "h", Some("v1"), &mut rec, &w.cands(), None, at(0));
    assert!(d.held.is_empty() && d.admitted.is_empty());
    assert_eq!(rec.state, RolloutState::Pending);
    // At v2: the canary moves, the rest is held.
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(0));
    assert_eq!(keys(&d), ["app/default/r1"]);
    assert_eq!(d.held.len(), 7);
    assert_eq!(rec.state, RolloutState::InProgress);
    assert_eq!(rec.total_resources, 8);
    w.run(&d);
    // At v2 but health unknown: the group waits (no soak yet).
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(60));
    assert!(d.admitted.is_empty());
    assert_eq!(rec.groups[0].state, "InProgress");
    assert_eq!(rec.completed_resources, 1);
    // Healthy at 120s: soaking until 120s + 10m.
    w.set_health(1, HealthState::Healthy);
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(120));
    assert!(d.admitted.is_empty());
    assert_eq!(rec.groups[0].state, "Soaking");
    assert_eq!(rec.groups[0].healthy_since.as_deref(), Some(&*ts(at(120))));
    assert_eq!(rec.groups[0].soak_until.as_deref(), Some(&*ts(at(720))));
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(719));
    assert!(d.admitted.is_empty(), "{rec:?}");
    // A dip resets the soak.
    w.set_health(1, HealthState::Unknown);
    step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(700));
    assert_eq!(rec.groups[0].healthy_since, None);
    w.set_health(1, HealthState::Ready);
    step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(800));
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(1399));
    assert!(d.admitted.is_empty());
    // Soaked: the canary group completes and `rest` admits one (25% of 7, at least 1).
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(1400));
    assert_eq!(keys(&d), ["app/default/r2"]);
    assert_eq!(rec.groups[0].state, "Completed");
    w.run(&d);
    // r2 stays unknown: nothing more is admitted, and after 1h the rollout pauses.
    w.set_health(2, HealthState::Unknown);
    let d = step(
        &p,
        "h",
        Some("v2"),
        &mut rec,
        &w.cands(),
        None,
        at(1400 + 3599),
    );
    assert!(d.admitted.is_empty());
    assert_eq!(rec.state, RolloutState::InProgress);
    step(
        &p,
        "h",
        Some("v2"),
        &mut rec,
        &w.cands(),
        None,
        at(1400 + 3600),
    );
    assert_eq!(rec.state, RolloutState::Paused);
    let pause = rec.paused.clone().unwrap();
    assert_eq!(pause.by, "Timeout");
    assert_eq!(pause.request.as_deref(), Some("app/default/r2"));
    assert!(pause.reason.contains("within 1h"), "{}", pause.reason);
    assert_eq!(d.held.len(), 6);
}

#[test]
fn unhealthy_pauses_a_plan_change_resumes_and_an_operator_aborts() {
    let p = plan("");
    let mut w = World::new(8);
    let mut rec = RolloutRecord::default();
    let cands = w.cands();
    let d = step(&p, "h1", Some("v2"), &mut rec, &cands, None, at(0));
    drop(cands);
    w.run(&d);
    // No gate: the canary completes once at v2; rest admits r2.
    let d = step(&p, "h1", Some("v2"), &mut rec, &w.cands(), None, at(1));
    assert_eq!(keys(&d), ["app/default/r2"]);
    w.run(&d);
    // r2 turns unhealthy: paused, naming it; nobody else moves.
    w.set_health(2, HealthState::Unhealthy);
    let d = step(&p, "h1", Some("v2"), &mut rec, &w.cands(), None, at(2));
    assert!(d.admitted.is_empty());
    assert_eq!(rec.state, RolloutState::Paused);
    assert_eq!(
        rec.paused.as_ref().unwrap().request.as_deref(),
        Some("app/default/r2")
    );
    assert!(
        rec.message.contains("app/default/r2 is unhealthy"),
        "{}",
        rec.message
    );
    assert_eq!(d.held.len(), 6);
    // The same plan again: still paused.
    let d = step(&p, "h1", Some("v2"), &mut rec, &w.cands(), None, at(3));
    assert!(d.admitted.is_empty());
    assert_eq!(rec.state, RolloutState::Paused);
    // A commit changing the plan resumes; r2 is acknowledged, r3 moves.
    let d = step(&p, "h2", Some("v2"), &mut rec, &w.cands(), None, at(4));
    assert_eq!(keys(&d), ["app/default/r3"]);
    assert_eq!(rec.state, RolloutState::InProgress);
    w.run(&d);
    // An operator pause, then resume.
    let o = |action, seq| Some(Override { action, seq });
    let d = step(
        &p,
        "h2",
        Some("v2"),
        &mut rec,
        &w.cands(),
        o(Action::Pause, 1),
        at(5),
    );
    assert!(d.admitted.is_empty());
    assert_eq!(rec.paused.as_ref().unwrap().by, "Operator");
    // The same override again does nothing more.
    let d = step(
        &p,
        "h2",
        Some("v2"),
        &mut rec,
        &w.cands(),
        o(Action::Pause, 1),
        at(6),
    );
    assert!(d.admitted.is_empty());
    let d = step(
        &p,
        "h2",
        Some("v2"),
        &mut rec,
        &w.cands(),
        o(Action::Resume, 2),
        at(7),
    );
    assert_eq!(keys(&d), ["app/default/r4"]);
    // A failed upgrade pauses too.
    w.failed[3] = true;
    let d = step(&p, "h2", Some("v2"), &mut rec, &w.cands(), None, at(8));
    assert!(d.admitted.is_empty());
    assert_eq!(rec.paused.as_ref().unwrap().by, "Failure");
    assert!(
        rec.message
            .contains("r4 failed to upgrade to v2: pipeline render failed")
    );
    assert_eq!(rec.failed_resources, 1);
    // Abort: final; the rest stays held, also after a resume.
    step(
        &p,
        "h2",
        Some("v2"),
        &mut rec,
        &w.cands(),
        o(Action::Abort, 3),
        at(9),
    );
    assert_eq!(rec.state, RolloutState::Aborted);
    let d = step(
        &p,
        "h3",
        Some("v2"),
        &mut rec,
        &w.cands(),
        o(Action::Resume, 4),
        at(10),
    );
    assert_eq!(rec.state, RolloutState::Aborted);
    assert!(d.admitted.is_empty());
    assert_eq!(d.held.len(), 4);
}

#[test]
fn plan_paused_from_the_start_and_requests_no_group_selects() {
    let p: UpgradePlan = serde_saphyr::from_str(
        "apiVersion: platform.kratix.io/v1alpha1\nkind: UpgradePlan\nmetadata: {name: up}\n\
         spec:\n  promiseRef: {name: app}\n  upgradePath: {from: v1, to: v2}\n  paused: true\n\
         \x20 rolloutGroups:\n  - {name: canary, selectors: {matchLabels: {canary: \"true\"}}}\n",
    )
    .unwrap();
    let mut p = p.check().unwrap();
    let mut w = World::new(3);
    let mut rec = RolloutRecord::default();
    let d = step(&p, "a", Some("v2"), &mut rec, &w.cands(), None, at(0));
    assert!(d.admitted.is_empty());
    assert_eq!(rec.paused.as_ref().unwrap().by, "Plan");
    p.paused = false;
    let d = step(&p, "b", Some("v2"), &mut rec, &w.cands(), None, at(1));
    assert_eq!(keys(&d), ["app/default/r1"]);
    w.run(&d);
    step(&p, "b", Some("v2"), &mut rec, &w.cands(), None, at(2));
    // Only the canary group: complete, the others stay held.
    assert_eq!(rec.state, RolloutState::Completed);
    assert_eq!(rec.unselected, 2);
    let d = step(&p, "b", Some("v2"), &mut rec, &w.cands(), None, at(3));
    assert_eq!(d.held.len(), 2);
}

#[test]
fn windows_allow_and_deny() {
    let p: UpgradePlan = serde_saphyr::from_str(
        "apiVersion: platform.kratix.io/v1alpha1\nkind: UpgradePlan\nmetadata: {name: up}\n\
         spec:\n  promiseRef: {name: app}\n  upgradePath: {from: v1, to: v2}\n\
         \x20 rolloutGroups:\n  - name: all\n    selectors: {matchAll: true}\n    resourceUpgradeWindows:\n\
         \x20   - {kind: allow, schedule: \"0 22 * * *\", duration: 4h}\n\
         \x20   - {kind: deny, schedule: \"0 23 * * *\", duration: 30m}\n",
    )
    .unwrap();
    let g = &p.check().unwrap().groups[0];
    let day = |h: u64, m: u64| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(86400 * 20_000 + h * 3600 + m * 60)
    };
    assert!(!window_open(g, day(21, 59)));
    assert!(window_open(g, day(22, 0)));
    assert!(!window_open(g, day(23, 10)));
    assert!(window_open(g, day(23, 30)));
    assert!(window_open(g, day(25, 59)));
    assert!(!window_open(g, day(26, 0)));
}

#[test]
fn an_empty_group_completes_at_once_and_a_timeout_names_the_admitted_request() {
    let p = plan("  healthGate: {soak: 10m, timeout: 1h}\n");
    // No canary label anywhere: `canary` is empty.
    let mut w = World::new(4);
    w.labels[0].clear();
    for i in 1..=4 {
        w.set_health(i, HealthState::Unknown);
    }
    let mut rec = RolloutRecord::default();
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(0));
    assert_eq!(rec.groups[0].state, "Completed", "{rec:?}");
    // 25% of 4: one at a time, in key order.
    assert_eq!(keys(&d), ["app/default/r1"]);
    // r1 never gets healthy: after an hour the pause names it, not a pending request.
    step(&p, "h", Some("v2"), &mut rec, &w.cands(), None, at(3600));
    let pause = rec.paused.clone().unwrap();
    assert_eq!(pause.by, "Timeout");
    assert_eq!(pause.request.as_deref(), Some("app/default/r1"));
    // Resumed by an operator: r1 is acknowledged and the timeout counts again.
    let o = Some(Override {
        action: Action::Resume,
        seq: 1,
    });
    let d = step(&p, "h", Some("v2"), &mut rec, &w.cands(), o, at(3601));
    assert!(rec.paused.is_none());
    assert!(d.admitted.is_empty(), "r1 is still moving: {d:?}");
}
