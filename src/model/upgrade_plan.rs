//! `UpgradePlan`: a staged rollout of a Promise version to its resource requests (README
//! "Rolling out a Promise change").
//!
//! The shape follows Kratix enterprise (SKE)'s `UpgradePlan` (`platform.syntasso.io/v1alpha1`,
//! kratix-lifecycle.md §2.4: `promiseRef`, `upgradePath {from, to}`, sequential
//! `rolloutGroups` with `selectors`, `maxConcurrent` and `resourceUpgradeWindows`), extended
//! with what SKE lacks: `healthGate` (plan-wide, or per group), `paused` and `aborted`. promised
//! reads it with `apiVersion` `platform.kratix.io/v1alpha1` or `platform.syntasso.io/v1alpha1`;
//! there is no `UpgradeRun`: the plan itself runs whenever the Promise is at `upgradePath.to`.
//!
//! The types here are lenient (durations, counts and selectors as written) so that a plan with
//! a bad field still loads and holds its Promise's requests where they are; [`UpgradePlan::check`]
//! turns it into a [`CheckedPlan`] or names the bad field.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{HealthState, ObjectMeta};

/// `kind` of an upgrade plan.
pub const UPGRADE_PLAN_KIND: &str = "UpgradePlan";
/// SKE's `apiVersion` for `UpgradePlan`, accepted as well as `platform.kratix.io/v1alpha1`.
pub const SKE_API_VERSION: &str = "platform.syntasso.io/v1alpha1";

/// A staged rollout of one Promise version. Cluster-scoped (no namespace).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePlan {
    /// `platform.kratix.io/v1alpha1` or `platform.syntasso.io/v1alpha1`.
    pub api_version: String,
    /// `UpgradePlan`.
    pub kind: String,
    /// Its name (`promised rollout pause NAME`).
    pub metadata: ObjectMeta,
    /// What to roll out, and how.
    pub spec: UpgradePlanSpec,
}

/// `UpgradePlan.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePlanSpec {
    /// `{name}` of the Promise.
    pub promise_ref: PromiseRef,
    /// Which applied versions move (`from`) to which version (`to`).
    pub upgrade_path: UpgradePath,
    /// Sequential groups: a group starts when the one before it completed.
    #[serde(default)]
    pub rollout_groups: Vec<RolloutGroup>,
    /// The health gate of every group without its own (promised; SKE has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
    /// `true`: no request starts moving (promised). Changing the plan in the config repo (e.g.
    /// setting this back to `false`) also resumes an automatic pause.
    #[serde(default)]
    pub paused: bool,
    /// `true`: the rollout stops for good; requests not yet moved stay at their version while
    /// the plan is in the config repo (promised).
    #[serde(default)]
    pub aborted: bool,
}

/// `spec.promiseRef`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PromiseRef {
    /// The Promise's name.
    pub name: String,
}

/// `spec.upgradePath`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct UpgradePath {
    /// Applied versions that move: exact versions, or anchored regular expressions written
    /// between slashes (`/v1\..*/`), as in SKE. One string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub from: Vec<String>,
    /// The version they move to: the Promise's `kratix.io/promise-version` label.
    pub to: String,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// One entry of `spec.rolloutGroups`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutGroup {
    /// The group's name (unique in the plan).
    pub name: String,
    /// Which requests belong to it; a request belongs to the first group that selects it.
    #[serde(default)]
    pub selectors: GroupSelector,
    /// At most this many requests of the group move at once: a count (`3`) or a percentage of
    /// the group (`"25%"`, rounded down, at least 1). Unset: all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<Value>,
    /// When requests of the group may start moving (SKE `resourceUpgradeWindows`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_upgrade_windows: Vec<UpgradeWindow>,
    /// This group's health gate (else the plan's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_gate: Option<HealthGate>,
}

/// `rolloutGroups[].selectors`: `{matchAll: true}` alone, or `matchLabels` and
/// `matchExpressions` (AND) over the labels of the request or of its ResourceBinding.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSelector {
    /// Every request.
    #[serde(default)]
    pub match_all: bool,
    /// Labels with these exact values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Kubernetes label selector expressions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelExpression>,
}

/// One `matchExpressions` entry (Kubernetes `LabelSelectorRequirement`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelExpression {
    /// The label.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values of `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// One `resourceUpgradeWindows` entry: from every time `schedule` fires, for `duration`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeWindow {
    /// `allow` (requests start moving only inside some allow window) or `deny` (never inside).
    pub kind: String,
    /// Cron schedule (five fields, as a Kubernetes CronJob).
    pub schedule: String,
    /// How long the window stays open (`4h`, `30m`).
    pub duration: String,
    /// Only `UTC` (the default) is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// `healthGate` (promised): a group completes only when every request in it has reported
/// `state` (or better) for `soak`; a group that does not get there within `timeout` of its
/// start pauses the rollout.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthGate {
    /// `healthy` (healthy or ready; the default) or `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// How long the whole group must stay there (`10m`; default `0s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
    /// Pause when the group has not completed this long after it started (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// A plan whose fields were checked: regular expressions compiled, durations parsed.
#[derive(Debug, Clone)]
pub struct CheckedPlan {
    /// The plan's name.
    pub name: String,
    /// The Promise.
    pub promise: String,
    /// `upgradePath.from` as written.
    pub from: Vec<String>,
    from_matchers: Vec<VersionMatch>,
    /// `upgradePath.to`.
    pub to: String,
    /// The groups, in order.
    pub groups: Vec<CheckedGroup>,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.aborted`.
    pub aborted: bool,
}

#[derive(Debug, Clone)]
enum VersionMatch {
    Exact(String),
    Pattern(regex::Regex),
}

/// A checked rollout group.
#[derive(Debug, Clone)]
pub struct CheckedGroup {
    /// Its name.
    pub name: String,
    /// Its selector.
    pub selector: GroupSelector,
    /// `maxConcurrent`.
    pub max_concurrent: Concurrency,
    /// Its windows, durations parsed.
    pub windows: Vec<(bool, String, Duration)>,
    /// Its health gate (its own, else the plan's, else none).
    pub gate: Option<CheckedGate>,
}

/// `maxConcurrent`, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// Unset: the whole group at once.
    All,
    /// At most this many.
    Count(usize),
    /// This percentage of the group, rounded down, at least 1.
    Percent(u32),
}

impl Concurrency {
    /// How many requests of a group of `size` may move at once (at least 1).
    pub fn limit(self, size: usize) -> usize {
        match self {
            Concurrency::All => size.max(1),
            Concurrency::Count(n) => n.max(1),
            Concurrency::Percent(p) => (size * p as usize / 100).max(1),
        }
    }
}

/// A checked health gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedGate {
    /// The least state that passes (`Healthy` also lets `Ready` pass).
    pub state: HealthState,
    /// How long the group must hold it.
    pub soak: Duration,
    /// How long a group may take, from its start.
    pub timeout: Option<Duration>,
}

impl UpgradePlan {
    /// Checks every field; the error is `(field path, message)`.
    pub fn check(&self) -> Result<CheckedPlan, (String, String)> {
        let s = &self.spec;
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if s.promise_ref.name.is_empty() {
            return err("spec.promiseRef.name", "required".into());
        }
        if s.upgrade_path.to.is_empty() {
            return err("spec.upgradePath.to", "required".into());
        }
        if s.upgrade_path.from.is_empty() {
            return err("spec.upgradePath.from", "at least one version".into());
        }
        let mut from_matchers = Vec::new();
        for (i, f) in s.upgrade_path.from.iter().enumerate() {
            let m = match f.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
                Some(re) if f.len() >= 2 => match regex::Regex::new(&format!("^(?:{re})$")) {
                    Ok(r) => VersionMatch::Pattern(r),
                    Err(e) => {
                        return err(
                            &format!("spec.upgradePath.from[{i}]"),
                            format!("{f:?} is not a regular expression: {e}"),
                        );
                    }
                },
                _ => VersionMatch::Exact(f.clone()),
            };
            from_matchers.push(m);
        }
        if s.rollout_groups.is_empty() {
            return err("spec.rolloutGroups", "at least one group".into());
        }
        let plan_gate = match &s.health_gate {
            Some(g) => Some(check_gate(g, "spec.healthGate")?),
            None => None,
        };
        let mut groups = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, g) in s.rollout_groups.iter().enumerate() {
            let at = format!("spec.rolloutGroups[{i}]");
            if g.name.is_empty() {
                return err(&format!("{at}.name"), "required".into());
            }
            if !names.insert(g.name.as_str()) {
                return err(
                    &format!("{at}.name"),
                    format!("group {:?} is named twice", g.name),
                );
            }
            let sel = &g.selectors;
            if sel.match_all && (!sel.match_labels.is_empty() || !sel.match_expressions.is_empty())
            {
                return err(
                    &format!("{at}.selectors"),
                    "matchAll: true stands alone".into(),
                );
            }
            if !sel.match_all && sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
                return err(
                    &format!("{at}.selectors"),
                    "select requests with matchLabels, matchExpressions or matchAll: true".into(),
                );
            }
            for (j, e) in sel.match_expressions.iter().enumerate() {
                let ok = match e.operator.as_str() {
                    "In" | "NotIn" => !e.values.is_empty(),
                    "Exists" | "DoesNotExist" => e.values.is_empty(),
                    _ => false,
                };
                if !ok {
                    return err(
                        &format!("{at}.selectors.matchExpressions[{j}]"),
                        format!(
                            "operator {:?}: expected In or NotIn with values, or Exists or DoesNotExist without",
                            e.operator
                        ),
                    );
                }
            }
            let max_concurrent = match &g.max_concurrent {
                None => Concurrency::All,
                Some(v) => parse_concurrency(v).map_err(|m| (format!("{at}.maxConcurrent"), m))?,
            };
            let mut windows = Vec::new();
            for (j, w) in g.resource_upgrade_windows.iter().enumerate() {
                let wat = format!("{at}.resourceUpgradeWindows[{j}]");
                let allow = match w.kind.as_str() {
                    "allow" => true,
                    "deny" => false,
                    k => {
                        return err(
                            &format!("{wat}.kind"),
                            format!("{k:?}: expected allow or deny"),
                        );
                    }
                };
                if let Some(tz) = &w.time_zone
                    && tz != "UTC"
                {
                    return err(
                        &format!("{wat}.timeZone"),
                        format!("{tz:?}: only UTC is supported"),
                    );
                }
                super::next_run(&w.schedule, std::time::SystemTime::UNIX_EPOCH)
                    .map_err(|m| (format!("{wat}.schedule"), m))?;
                let d = super::parse_go_duration(&w.duration)
                    .map_err(|m| (format!("{wat}.duration"), m))?;
                windows.push((allow, w.schedule.clone(), d));
            }
            let gate = match &g.health_gate {
                Some(h) => Some(check_gate(h, &format!("{at}.healthGate"))?),
                None => plan_gate,
            };
            groups.push(CheckedGroup {
                name: g.name.clone(),
                selector: sel.clone(),
                max_concurrent,
                windows,
                gate,
            });
        }
        Ok(CheckedPlan {
            name: self.metadata.name.clone(),
            promise: s.promise_ref.name.clone(),
            from: s.upgrade_path.from.clone(),
            from_matchers,
            to: s.upgrade_path.to.clone(),
            groups,
            paused: s.paused,
            aborted: s.aborted,
        })
    }
}

fn check_gate(g: &HealthGate, at: &str) -> Result<CheckedGate, (String, String)> {
    let state = match g.state.as_deref().unwrap_or("healthy") {
        "healthy" => HealthState::Healthy,
        "ready" => HealthState::Ready,
        s => {
            return Err((
                format!("{at}.state"),
                format!("{s:?}: expected healthy or ready"),
            ));
        }
    };
    let dur = |v: &Option<String>, f: &str| -> Result<Option<Duration>, (String, String)> {
        v.as_deref()
            .map(|s| {
                if s == "0" {
                    Ok(Duration::ZERO)
                } else {
                    super::parse_go_duration(s)
                }
            })
            .transpose()
            .map_err(|m| (format!("{at}.{f}"), m))
    };
    Ok(CheckedGate {
        state,
        soak: dur(&g.soak, "soak")?.unwrap_or_default(),
        timeout: dur(&g.timeout, "timeout")?,
    })
}

fn parse_concurrency(v: &Value) -> Result<Concurrency, String> {
    let bad = || format!("{v}: expected a count (3) or a percentage (\"25%\") above 0");
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(c) if c > 0 => Ok(Concurrency::Count(c as usize)),
            _ => Err(bad()),
        },
        Value::String(s) => match s.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u32>() {
                Ok(p) if p > 0 && p <= 100 => Ok(Concurrency::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.trim().parse::<usize>() {
                Ok(c) if c > 0 => Ok(Concurrency::Count(c)),
                _ => Err(bad()),
            },
        },
        _ => Err(bad()),
    }
}

impl CheckedPlan {
    /// Whether applied version `v` is one `upgradePath.from` names.
    pub fn moves_from(&self, v: &str) -> bool {
        self.from_matchers.iter().any(|m| match m {
            VersionMatch::Exact(e) => e == v,
            VersionMatch::Pattern(r) => r.is_match(v),
        })
    }
}

impl GroupSelector {
    /// Whether the selector matches `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.match_all {
            return true;
        }
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let l = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => l.is_some_and(|l| e.values.contains(l)),
                    "NotIn" => l.is_none_or(|l| !e.values.contains(l)),
                    "Exists" => l.is_some(),
                    "DoesNotExist" => l.is_none(),
                    _ => false,
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(yaml: &str) -> UpgradePlan {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn checks_fields_and_matches_versions_and_labels() {
        let p = plan(
            "apiVersion: platform.syntasso.io/v1alpha1\nkind: UpgradePlan\nmetadata: {name: up}\n\
             spec:\n  promiseRef: {name: redis}\n  upgradePath: {from: [v1.0.0, \"/v1\\\\..*/\"], to: v2.0.0}\n\
             \x20 healthGate: {soak: 10m, timeout: 1h}\n\
             \x20 rolloutGroups:\n  - {name: canary, selectors: {matchLabels: {env: dev}}, maxConcurrent: 1}\n\
             \x20 - {name: rest, selectors: {matchAll: true}, maxConcurrent: \"25%\", healthGate: {state: ready}}\n",
        );
        let c = p.check().unwrap();
        assert!(c.moves_from("v1.0.0") && c.moves_from("v1.3.7") && !c.moves_from("v10.1"));
        assert_eq!(c.groups[0].max_concurrent.limit(5), 1);
        assert_eq!(c.groups[1].max_concurrent.limit(7), 1);
        assert_eq!(c.groups[1].max_concurrent.limit(8), 2);
        assert_eq!(c.groups[0].gate.unwrap().soak, Duration::from_secs(600));
        assert_eq!(c.groups[1].gate.unwrap().state, HealthState::Ready);
        let dev = BTreeMap::from([("env".to_string(), "dev".to_string())]);
        assert!(c.groups[0].selector.matches(&dev));
        assert!(!c.groups[0].selector.matches(&BTreeMap::new()));

        let mut bad = p.clone();
        bad.spec.rollout_groups[1].max_concurrent = Some(Value::String("0%".into()));
        let (field, msg) = bad.check().unwrap_err();
        assert_eq!(field, "spec.rolloutGroups[1].maxConcurrent");
        assert!(msg.contains("percentage"), "{msg}");
        let mut bad = p.clone();
        bad.spec.rollout_groups[0].selectors = GroupSelector::default();
        assert_eq!(
            bad.check().unwrap_err().0,
            "spec.rolloutGroups[0].selectors"
        );
        let mut bad = p;
        bad.spec.health_gate.as_mut().unwrap().soak = Some("ten minutes".into());
        assert_eq!(bad.check().unwrap_err().0, "spec.healthGate.soak");
    }
}
