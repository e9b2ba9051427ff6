//! One pass of one rollout: the pure decision of which members move ([`step`]).
//!
//! Rules (README "Rolling out a Promise change"):
//! - **Members** are the requests of the plan's Promise that float (`latest`) and whose applied
//!   version (`status.promiseVersion`) matches `upgradePath.from`; a member belongs to the
//!   first group that selects its labels or its ResourceBinding's labels. Requests that are new,
//!   pinned by a binding, or at another version are not members and are left alone.
//! - The plan acts only while the Promise is at `upgradePath.to`.
//! - **Groups run in order.** In the first group not completed, members are admitted in key
//!   order while fewer than `maxConcurrent` of the group are in flight (admitted and not yet
//!   at `to` passing the health gate), inside its upgrade windows. A group completes when
//!   every member is at `to` passing its gate (or failed and acknowledged, or gone) and has
//!   held that for `soak`: [`GroupProgress::healthy_since`] records when that began.
//! - **Automatic pause**: an admitted member whose upgrade failed, or that reports `unhealthy`
//!   or `degraded` at `to`, pauses the rollout; so does a group that is not complete `timeout`
//!   after it started. Members not admitted stay at their version.
//! - **Controls**: a change of the plan's spec in the config repo acts once: `aborted: true`
//!   aborts, `paused: true` pauses, otherwise a pause is lifted; an operator override
//!   ([`Override`]) acts once, after the config. Resuming acknowledges the members that failed
//!   or are unhealthy, so they no longer hold the rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::{
    Action, GroupProgress, Member, MemberPhase, Override, Pause, RolloutRecord, RolloutState,
};
use crate::model::{CheckedGroup, CheckedPlan, HealthState};
use crate::status::HealthStatus;

/// What the engine knows about one request of the plan's Promise.
#[derive(Debug, Clone, Default)]
pub struct Candidate<'a> {
    /// The request's labels, and its ResourceBinding's when it has one.
    pub labels: Vec<&'a BTreeMap<String, String>>,
    /// `status.promiseVersion`.
    pub applied: Option<&'a str>,
    /// Its last configure workflow completed.
    pub completed: bool,
    /// Why its last attempt at `to` failed (`failedVersion` is `to`, or its workflow failed).
    pub failure: Option<String>,
    /// `status.healthStatus` (none: `ready`, as Kratix).
    pub health: Option<&'a HealthStatus>,
    /// Its binding version is `latest` (the plan may move it).
    pub floating: bool,
}

/// What [`step`] decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Members that stay at their applied version in this pass.
    pub held: BTreeSet<String>,
    /// Members admitted in this pass, with their group.
    pub admitted: Vec<(String, String)>,
}

fn ts(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(t).ok()
}

/// The health of a member at `to`: `None` while it is not about `to` yet.
fn health_at(c: &Candidate<'_>, to: &str) -> Option<HealthState> {
    match c.health {
        None => Some(HealthState::Ready),
        Some(h) if h.promise_version.as_deref().is_none_or(|v| v == to) => Some(h.state),
        Some(_) => None,
    }
}

fn passes(gate_state: Option<HealthState>, health: Option<HealthState>) -> bool {
    match gate_state {
        None => true,
        Some(g) => health.is_some_and(|h| h >= g),
    }
}

fn details(c: &Candidate<'_>) -> String {
    let Some(h) = c.health else {
        return String::new();
    };
    let d: Vec<String> = h
        .health_records
        .iter()
        .filter(|r| !r.state.is_good())
        .map(|r| match &r.details {
            Some(d) => format!("{}: {}", r.source.name, d),
            None => r.source.name.clone(),
        })
        .collect();
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({})", d.join("; "))
    }
}

/// Whether `now` is inside the window `(schedule, duration)`: it fired at most `duration` ago.
fn inside(schedule: &str, duration: Duration, now: SystemTime) -> bool {
    let since = now.checked_sub(duration).unwrap_or(SystemTime::UNIX_EPOCH);
    crate::health::checks::next_run(schedule, since).is_ok_and(|t| t <= now)
}

/// Whether group `g` may admit requests at `now`: inside an allow window (when it has any)
/// and outside every deny window.
pub fn window_open(g: &CheckedGroup, now: SystemTime) -> bool {
    let mut allows = g.windows.iter().filter(|w| w.0).peekable();
    let allowed = allows.peek().is_none() || allows.any(|(_, s, d)| inside(s, *d, now));
    allowed
        && !g
            .windows
            .iter()
            .any(|(allow, s, d)| !allow && inside(s, *d, now))
}

fn pause(rec: &mut RolloutRecord, by: &str, request: Option<&str>, reason: String, now: &str) {
    // SKE's event for a failed resource; `RolloutPaused` for every other pause.
    let event = if by == "Failure" {
        "ResourceUpgradeFailed"
    } else {
        "RolloutPaused"
    };
    rec.event(now, event, reason.clone());
    rec.paused = Some(Pause {
        by: by.to_string(),
        request: request.map(str::to_string),
        reason,
        at: now.to_string(),
    });
}

fn abort(rec: &mut RolloutRecord, why: &str, now: &str) {
    if rec.state != RolloutState::Aborted {
        rec.state = RolloutState::Aborted;
        rec.paused = None;
        rec.finished_at = Some(now.to_string());
        rec.message = format!("aborted {why}; requests not moved stay at their version");
        rec.event(now, "RolloutAborted", format!("aborted {why}"));
    }
}

fn resume(rec: &mut RolloutRecord, why: &str, cands: &BTreeMap<String, Candidate<'_>>, now: &str) {
    let Some(p) = rec.paused.take() else {
        return;
    };
    let to = rec.to.clone();
    // The failures and bad health that paused it are acknowledged.
    for (k, m) in &rec.members {
        let bad = match m.phase {
            MemberPhase::Failed => true,
            MemberPhase::Succeeded | MemberPhase::Moving => cands
                .get(k)
                .and_then(|c| health_at(c, &to))
                .is_some_and(|h| h < HealthState::Unknown),
            _ => false,
        };
        if bad {
            rec.acknowledged.insert(k.clone());
        }
    }
    if let Some(r) = p.request {
        rec.acknowledged.insert(r);
    }
    // A timeout counts again from now.
    for g in &mut rec.groups {
        if g.completed_at.is_none() && g.started_at.is_some() {
            g.started_at = Some(now.to_string());
        }
    }
    rec.event(now, "RolloutResumed", format!("resumed {why}"));
}

/// One pass of `plan`'s rollout, recorded in `rec`: controls (the plan's `spec_hash`, the
/// operator's `operator` override), membership, automatic pauses, group completion and
/// admissions, at `now` with the Promise at `current`. `cands` are the requests of the
/// Promise by key. Returns the members held at their version and those admitted now.
pub fn step(
    plan: &CheckedPlan,
    spec_hash: &str,
    current: Option<&str>,
    rec: &mut RolloutRecord,
    cands: &BTreeMap<String, Candidate<'_>>,
    operator: Option<Override>,
    now: SystemTime,
) -> Decision {
    let now_s = ts(now);
    // Another upgrade path is another rollout.
    if rec.promise != plan.promise || rec.from != plan.from || rec.to != plan.to {
        let operator_seen = rec.operator_seen;
        *rec = RolloutRecord {
            plan: plan.name.clone(),
            promise: plan.promise.clone(),
            from: plan.from.clone(),
            to: plan.to.clone(),
            operator_seen,
            ..RolloutRecord::default()
        };
    }
    let terminal =
        |r: &RolloutRecord| matches!(r.state, RolloutState::Aborted | RolloutState::Completed);
    // Controls: a change of the plan in the config repo, then an operator override.
    if rec.spec_hash != spec_hash {
        let first = rec.spec_hash.is_empty();
        rec.spec_hash = spec_hash.to_string();
        if plan.aborted {
            abort(rec, "by the plan (spec.aborted: true)", &now_s);
        } else if !terminal(rec) {
            if plan.paused {
                if rec.paused.is_none() {
                    pause(
                        rec,
                        "Plan",
                        None,
                        "paused by the plan (spec.paused: true)".into(),
                        &now_s,
                    );
                }
            } else if !first {
                resume(rec, "by a change to the plan", cands, &now_s);
            }
        }
    }
    if let Some(o) = operator
        && o.seq > rec.operator_seen
    {
        rec.operator_seen = o.seq;
        match o.action {
            Action::Abort => abort(rec, "by an operator (promised rollout abort)", &now_s),
            _ if terminal(rec) => {}
            Action::Pause => {
                if rec.paused.is_none() {
                    pause(
                        rec,
                        "Operator",
                        None,
                        "paused by an operator (promised rollout pause)".into(),
                        &now_s,
                    );
                }
            }
            Action::Resume => resume(
                rec,
                "by an operator (promised rollout resume)",
                cands,
                &now_s,
            ),
        }
    }
    let mut out = Decision::default();
    if current != Some(plan.to.as_str()) {
        if !terminal(rec) {
            rec.state = RolloutState::Pending;
            rec.message = format!(
                "waiting for Promise {} to be at version {} (it is at {})",
                plan.promise,
                plan.to,
                current.unwrap_or("no version")
            );
        }
        count(plan, rec, cands);
        return out;
    }

    // Membership: floating requests at a `from` version join; the group of a member not yet
    // admitted follows its labels.
    for (k, c) in cands {
        if c.floating
            && c.applied.is_some_and(|a| plan.moves_from(a))
            && !rec.members.contains_key(k)
            && !terminal(rec)
        {
            rec.members.insert(
                k.clone(),
                Member {
                    from_version: c.applied.unwrap_or_default().to_string(),
                    ..Member::default()
                },
            );
        }
    }
    let to = plan.to.clone();
    let mut arrived: BTreeSet<String> = BTreeSet::new();
    for (k, m) in rec.members.iter_mut() {
        let c = cands.get(k);
        match m.phase {
            MemberPhase::Pending => match c {
                Some(c) if c.floating && c.applied.is_some_and(|a| plan.moves_from(a)) => {
                    m.group = plan
                        .groups
                        .iter()
                        .find(|g| c.labels.iter().any(|l| g.selector.matches(l)))
                        .map(|g| g.name.clone())
                        .unwrap_or_default();
                }
                Some(c) if c.applied == Some(to.as_str()) => m.phase = MemberPhase::Succeeded,
                _ => m.phase = MemberPhase::Skipped,
            },
            MemberPhase::Moving | MemberPhase::Failed => match c {
                Some(c) if c.applied == Some(to.as_str()) && c.completed => {
                    m.phase = MemberPhase::Succeeded;
                    m.reason = None;
                    arrived.insert(m.group.clone());
                }
                Some(c) if c.failure.is_some() => {
                    m.phase = MemberPhase::Failed;
                    m.reason = c.failure.clone();
                }
                Some(_) => m.phase = MemberPhase::Moving,
                None => m.phase = MemberPhase::Skipped,
            },
            MemberPhase::Succeeded | MemberPhase::Skipped => {}
        }
    }
    // SKE's `GroupInProgress` event: `Group "dev": 1/3 resources upgraded to v2.0.0`.
    for g in arrived {
        let of_group = rec.members.values().filter(|m| m.group == g);
        let total = of_group.clone().count();
        let done = of_group
            .filter(|m| m.phase == MemberPhase::Succeeded)
            .count();
        rec.event(
            &now_s,
            "GroupInProgress",
            format!("Group {g:?}: {done}/{total} resources upgraded to {to}"),
        );
    }

    if !terminal(rec) {
        // Acknowledged members that are fine again would pause the rollout if they turn bad.
        let fine: Vec<String> = rec
            .acknowledged
            .iter()
            .filter(|k| {
                rec.members
                    .get(*k)
                    .is_some_and(|m| m.phase == MemberPhase::Succeeded)
                    && cands
                        .get(*k)
                        .and_then(|c| health_at(c, &to))
                        .is_some_and(HealthState::is_good)
            })
            .cloned()
            .collect();
        for k in fine {
            rec.acknowledged.remove(&k);
        }
        // Automatic pause: the first (by key) admitted member that failed or is unhealthy.
        if rec.paused.is_none() {
            let found = rec.members.iter().find_map(|(k, m)| {
                if rec.acknowledged.contains(k) {
                    return None;
                }
                let c = cands.get(k)?;
                let (by, reason) = match m.phase {
                    MemberPhase::Failed => (
                        "Failure",
                        format!(
                            "request {k} failed to upgrade to {to}: {}",
                            m.reason.as_deref().unwrap_or("its workflow failed")
                        ),
                    ),
                    MemberPhase::Succeeded | MemberPhase::Moving => match health_at(c, &to) {
                        Some(h) if h < HealthState::Unknown => (
                            "Health",
                            format!("request {k} is {} at {to}{}", h.as_str(), details(c)),
                        ),
                        _ => return None,
                    },
                    _ => return None,
                };
                Some((by, k.clone(), reason))
            });
            if let Some((by, key, reason)) = found {
                pause(rec, by, Some(&key), reason, &now_s);
            }
        }
        groups(plan, rec, cands, now, &now_s, &mut out);
    }

    for (k, m) in &rec.members {
        if m.phase == MemberPhase::Pending {
            out.held.insert(k.clone());
        }
    }
    count(plan, rec, cands);
    if !terminal(rec) {
        rec.state = if rec.paused.is_some() {
            RolloutState::Paused
        } else {
            RolloutState::InProgress
        };
        if let Some(p) = &rec.paused {
            rec.message = p.reason.clone();
        }
    }
    out
}

/// Group completion, timeouts and admissions (the rollout is neither aborted nor complete).
fn groups(
    plan: &CheckedPlan,
    rec: &mut RolloutRecord,
    cands: &BTreeMap<String, Candidate<'_>>,
    now: SystemTime,
    now_s: &str,
    out: &mut Decision,
) {
    let to = plan.to.clone();
    for g in &plan.groups {
        let idx = match rec.groups.iter().position(|p| p.name == g.name) {
            Some(i) => i,
            None => {
                rec.groups.push(GroupProgress {
                    name: g.name.clone(),
                    ..GroupProgress::default()
                });
                rec.groups.len() - 1
            }
        };
        if rec.groups[idx].completed_at.is_some() {
            continue;
        }
        let gate = g.gate.map(|x| x.state);
        let ok = |k: &String, m: &Member| match m.phase {
            MemberPhase::Succeeded => {
                rec.acknowledged.contains(k)
                    || passes(gate, cands.get(k).and_then(|c| health_at(c, &to)))
            }
            MemberPhase::Failed => rec.acknowledged.contains(k),
            MemberPhase::Skipped => true,
            MemberPhase::Pending | MemberPhase::Moving => false,
        };
        let members: Vec<(&String, &Member)> = rec
            .members
            .iter()
            .filter(|(_, m)| m.group == g.name)
            .collect();
        let waiting: Vec<&String> = members
            .iter()
            .filter(|(k, m)| !ok(k, m))
            .map(|(k, _)| *k)
            .collect();
        let pending: Vec<String> = members
            .iter()
            .filter(|(_, m)| m.phase == MemberPhase::Pending)
            .map(|(k, _)| (*k).clone())
            .collect();
        let in_flight = members
            .iter()
            .filter(|(k, m)| {
                matches!(m.phase, MemberPhase::Moving | MemberPhase::Succeeded) && !ok(k, m)
            })
            .count();
        let size = members.len();
        // The request a timeout names: the first admitted one still waiting, else the first.
        let first_waiting = waiting
            .iter()
            .find(|k| rec.members[**k].phase != MemberPhase::Pending)
            .or(waiting.first())
            .map(|k| (*k).clone());
        let progress = &mut rec.groups[idx];
        if waiting.is_empty() {
            let since = progress
                .healthy_since
                .get_or_insert_with(|| now_s.to_string());
            // An empty group has nothing to soak.
            let soak = match size {
                0 => Duration::ZERO,
                _ => g.gate.map(|x| x.soak).unwrap_or_default(),
            };
            let soaked = parse(since).is_none_or(|t| t + soak <= now);
            let until = ts(parse(since).unwrap_or(now) + soak);
            if soaked {
                progress.soak_until = None;
                progress.completed_at = Some(now_s.to_string());
                progress.started_at.get_or_insert_with(|| now_s.to_string());
                let n = size;
                rec.event(
                    now_s,
                    "GroupCompleted",
                    format!("group {:?}: {n} resources at {to}", g.name),
                );
                continue;
            }
            progress.soak_until = Some(until.clone());
            rec.message = format!("group {:?} soaks until {until}", g.name);
            return;
        }
        progress.healthy_since = None;
        progress.soak_until = None;
        if rec.paused.is_some() {
            return;
        }
        if let (Some(timeout), Some(started)) = (
            g.gate.and_then(|x| x.timeout),
            progress.started_at.as_deref().and_then(parse),
        ) && started + timeout <= now
        {
            let k = first_waiting.unwrap_or_default();
            let reason = format!(
                "group {:?} did not pass its health gate within {}: request {k} is not at {to} and {}",
                g.name,
                humantime::format_duration(timeout),
                gate.map_or("done", HealthState::as_str),
            );
            pause(rec, "Timeout", Some(&k), reason, now_s);
            return;
        }
        if !pending.is_empty() && !window_open(g, now) {
            rec.message = format!("group {:?} waits for its upgrade window", g.name);
            return;
        }
        let limit = g.max_concurrent.limit(size);
        // Admitted in key order while fewer than `limit` are in flight.
        for k in pending.into_iter().take(limit.saturating_sub(in_flight)) {
            let m = rec.members.get_mut(&k).expect("member");
            m.phase = MemberPhase::Moving;
            m.admitted_at = Some(now_s.to_string());
            rec.groups[idx]
                .started_at
                .get_or_insert_with(|| now_s.to_string());
            rec.started_at.get_or_insert_with(|| now_s.to_string());
            rec.event(
                now_s,
                "RequestAdmitted",
                format!("group {:?}: request {k} moves to {to}", g.name),
            );
            out.admitted.push((k, g.name.clone()));
        }
        rec.message = format!("group {:?} in progress", g.name);
        return;
    }
    // Every group completed.
    rec.state = RolloutState::Completed;
    rec.finished_at = Some(now_s.to_string());
    rec.message = format!("every group is at {to}");
    rec.event(now_s, "RolloutCompleted", format!("every group is at {to}"));
}

/// The counts of `rec` from its members.
fn count(plan: &CheckedPlan, rec: &mut RolloutRecord, cands: &BTreeMap<String, Candidate<'_>>) {
    let to = plan.to.as_str();
    rec.total_resources = rec.members.len();
    rec.completed_resources = rec
        .members
        .values()
        .filter(|m| m.phase == MemberPhase::Succeeded)
        .count();
    rec.failed_resources = rec
        .members
        .values()
        .filter(|m| m.phase == MemberPhase::Failed)
        .count();
    rec.unselected = rec
        .members
        .values()
        .filter(|m| m.phase == MemberPhase::Pending && m.group.is_empty())
        .count();
    // Groups in the plan's order (groups that left the plan are dropped).
    let mut groups = Vec::new();
    for g in &plan.groups {
        let mut p = rec
            .groups
            .iter()
            .find(|x| x.name == g.name)
            .cloned()
            .unwrap_or_else(|| GroupProgress {
                name: g.name.clone(),
                ..GroupProgress::default()
            });
        let gate = g.gate.map(|x| x.state);
        let ms = rec.members.iter().filter(|(_, m)| m.group == g.name);
        (
            p.total,
            p.pending,
            p.in_progress,
            p.succeeded,
            p.failed,
            p.skipped,
        ) = (0, 0, 0, 0, 0, 0);
        for (k, m) in ms {
            p.total += 1;
            match m.phase {
                MemberPhase::Pending => p.pending += 1,
                MemberPhase::Moving => p.in_progress += 1,
                MemberPhase::Succeeded => {
                    let good = passes(gate, cands.get(k).and_then(|c| health_at(c, to)));
                    if good || p.completed_at.is_some() {
                        p.succeeded += 1
                    } else {
                        p.in_progress += 1
                    }
                }
                MemberPhase::Failed => p.failed += 1,
                MemberPhase::Skipped => p.skipped += 1,
            }
        }
        p.state = if p.completed_at.is_some() {
            "Completed"
        } else if p.healthy_since.is_some() {
            "Soaking"
        } else if p.started_at.is_some() {
            "InProgress"
        } else {
            "Waiting"
        }
        .to_string();
        groups.push(p);
    }
    rec.groups = groups;
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
