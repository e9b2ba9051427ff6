//! Work placement: which Destinations receive each workload group
//! (kratix-contract.md §2.8 and §3; Kratix: `work-creator/lib/work_creator.go`,
//! `internal/controller/scheduler.go`).
//!
//! Pure functions over data, tested from tables.
//!
//! Rules:
//! 1. Output is split into workload groups: one per `destination-selectors.yaml` entry with a
//!    `directory`, holding that directory's files, plus the root group (`.`) for every other
//!    file. Promise `destinationSelectors` only apply to the root group.
//! 2. A group's effective selector is the union of its selectors applied in priority order
//!    resource-workflow < promise-workflow < promise: on a key conflict the Promise's own
//!    `spec.destinationSelectors` win. Multiple Promise selectors are squashed first-wins.
//! 3. Candidates are Destinations whose labels include the selector. An empty selector skips
//!    Destinations with `strictMatchLabels: true` and non-empty labels. Destinations labelled
//!    `kratix.io/dry-run: "true"` never receive normal work.
//! 4. Promise-level work (dependencies) goes to every candidate; placements on Destinations
//!    that stopped matching are kept and reported misplaced.
//! 5. A request's group goes to exactly one Destination. An existing placement is sticky: it
//!    is never moved, only marked misplaced when its Destination stops matching.
//! 6. No candidate: the group is unscheduled (pending) until a Destination appears.
//!
//! Deliberate difference from Kratix: where several Destinations match a new request, Kratix
//! picks one at random; promised picks by rendezvous hashing of the request identity over the
//! candidate names, so the same inputs always give the same placement, and adding a Destination
//! only moves the requests that would pick it (new requests; existing ones are sticky anyway).

use std::collections::{BTreeMap, BTreeSet};

use md5::{Digest, Md5};
use serde::Serialize;

use crate::layout::{ROOT_DIRECTORY, group_id};
use crate::model::Selector;

/// Label that keeps a Destination out of normal scheduling (Kratix dry-run destinations).
pub const DRY_RUN_LABEL: &str = "kratix.io/dry-run";

/// Where a selector came from; the order is the priority (later wins on a key conflict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectorSource {
    /// A resource workflow's `destination-selectors.yaml`.
    ResourceWorkflow,
    /// A promise workflow's `destination-selectors.yaml`.
    PromiseWorkflow,
    /// The Promise's `spec.destinationSelectors`.
    Promise,
}

/// One `destination-selectors.yaml` entry, already parsed and checked by the pipeline runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct WorkflowSelector {
    /// Top-level output directory, or `None` for the root group.
    pub directory: Option<String>,
    /// Labels to match.
    pub match_labels: BTreeMap<String, String>,
}

/// A selector with its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcedSelector {
    /// Labels to match.
    pub match_labels: BTreeMap<String, String>,
    /// Where it came from.
    pub source: SelectorSource,
}

/// A workload group: files scheduled together (Kratix `Work.spec.workloadGroups[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadGroup {
    /// `.` for the root group, else the top-level output directory.
    pub directory: String,
    /// Hex md5 of `directory`.
    pub id: String,
    /// Selectors, in the order Kratix lists them.
    pub selectors: Vec<SourcedSelector>,
    /// Output-relative paths of the group's files (directory groups keep the `dir/` prefix).
    pub files: Vec<String>,
}

/// Splits a pipeline's output into workload groups (kratix-contract.md §2.8 steps 2–4).
///
/// `workflow_source` is [`SelectorSource::ResourceWorkflow`] or
/// [`SelectorSource::PromiseWorkflow`]. `files` are output-relative paths. The root group exists
/// only if at least one file lies outside the selector directories.
pub fn workload_groups(
    files: &[String],
    workflow_selectors: &[WorkflowSelector],
    promise_selectors: &[Selector],
    workflow_source: SelectorSource,
) -> Vec<WorkloadGroup> {
    let mut groups = Vec::new();
    let mut claimed = BTreeSet::new();
    let mut root_selectors = Vec::new();
    for s in workflow_selectors {
        match s
            .directory
            .as_deref()
            .filter(|d| !d.is_empty() && *d != ROOT_DIRECTORY)
        {
            Some(dir) => {
                let prefix = format!("{dir}/");
                let group_files: Vec<String> = files
                    .iter()
                    .filter(|f| f.starts_with(&prefix))
                    .cloned()
                    .collect();
                claimed.extend(group_files.iter().cloned());
                groups.push(WorkloadGroup {
                    directory: dir.to_string(),
                    id: group_id(dir),
                    selectors: vec![SourcedSelector {
                        match_labels: s.match_labels.clone(),
                        source: workflow_source,
                    }],
                    files: group_files,
                });
            }
            None => root_selectors.push(SourcedSelector {
                match_labels: s.match_labels.clone(),
                source: workflow_source,
            }),
        }
    }
    let rest: Vec<String> = files
        .iter()
        .filter(|f| !claimed.contains(*f))
        .cloned()
        .collect();
    if !rest.is_empty() {
        let squashed = squash(promise_selectors);
        if !squashed.is_empty() {
            root_selectors.push(SourcedSelector {
                match_labels: squashed,
                source: SelectorSource::Promise,
            });
        }
        groups.insert(
            0,
            WorkloadGroup {
                directory: ROOT_DIRECTORY.into(),
                id: group_id(ROOT_DIRECTORY),
                selectors: root_selectors,
                files: rest,
            },
        );
    }
    groups
}

/// Squashes a Promise's selectors into one map; the first entry wins on a key conflict.
pub fn squash(selectors: &[Selector]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in selectors {
        for (k, v) in &s.match_labels {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out
}

/// The effective selector of a group: union in priority order (kratix-contract.md §3 rule 1).
pub fn effective_selector(selectors: &[SourcedSelector]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&SourcedSelector> = selectors.iter().collect();
    sorted.sort_by_key(|s| s.source);
    let mut out = BTreeMap::new();
    for s in sorted {
        out.extend(s.match_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

/// What scheduling needs to know about a Destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationInfo {
    /// Destination name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `spec.strictMatchLabels`.
    pub strict_match_labels: bool,
}

/// True when `dest` may receive work with `selector` (kratix-contract.md §3 rules 2–3).
pub fn matches(selector: &BTreeMap<String, String>, dest: &DestinationInfo) -> bool {
    if dest.labels.get(DRY_RUN_LABEL).is_some_and(|v| v == "true") {
        return false;
    }
    if selector.is_empty() {
        return !dest.strict_match_labels || dest.labels.is_empty();
    }
    selector.iter().all(|(k, v)| dest.labels.get(k) == Some(v))
}

/// Names of the Destinations matching `selector`, sorted.
pub fn candidates<'a>(
    selector: &BTreeMap<String, String>,
    dests: &'a [DestinationInfo],
) -> Vec<&'a str> {
    let mut v: Vec<&str> = dests
        .iter()
        .filter(|d| matches(selector, d))
        .map(|d| d.name.as_str())
        .collect();
    v.sort();
    v
}

/// One group's placement decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPlacement {
    /// Workload group id.
    pub group_id: String,
    /// Destinations the group is placed on, sorted, with misplacement flags.
    pub destinations: Vec<PlacedOn>,
}

impl GroupPlacement {
    /// True when no Destination receives the group (pending, `UnscheduledWorkloads`).
    pub fn is_unscheduled(&self) -> bool {
        self.destinations.is_empty()
    }
}

/// A Destination receiving a group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PlacedOn {
    /// Destination name.
    pub destination: String,
    /// The Destination no longer matches the selector; files stay and keep being updated.
    pub misplaced: bool,
}

/// Places one group.
///
/// - `request`: `Some("<promise>/<namespace>/<name>")` for a resource request's group (exactly one
///   Destination), `None` for Promise-level work (every candidate).
/// - `existing`: Destinations the group was placed on before (from persisted state); ones that no
///   longer exist are dropped.
pub fn place(
    group: &WorkloadGroup,
    request: Option<&str>,
    dests: &[DestinationInfo],
    existing: &[String],
) -> GroupPlacement {
    let selector = effective_selector(&group.selectors);
    let cands = candidates(&selector, dests);
    let exists = |name: &str| dests.iter().any(|d| d.name == name);
    let mut placed: Vec<PlacedOn> = Vec::new();
    match request {
        Some(identity) => {
            if let Some(prev) = existing.iter().find(|e| exists(e)) {
                placed.push(PlacedOn {
                    destination: prev.clone(),
                    misplaced: !cands.contains(&prev.as_str()),
                });
            } else if let Some(pick) = pick_one(identity, &group.id, &cands) {
                placed.push(PlacedOn {
                    destination: pick.to_string(),
                    misplaced: false,
                });
            }
        }
        None => {
            for c in &cands {
                placed.push(PlacedOn {
                    destination: c.to_string(),
                    misplaced: false,
                });
            }
            for e in existing
                .iter()
                .filter(|e| exists(e) && !cands.contains(&e.as_str()))
            {
                placed.push(PlacedOn {
                    destination: e.clone(),
                    misplaced: true,
                });
            }
        }
    }
    placed.sort();
    placed.dedup_by(|a, b| a.destination == b.destination);
    GroupPlacement {
        group_id: group.id.clone(),
        destinations: placed,
    }
}

/// Rendezvous (highest random weight) choice: the candidate with the largest
/// md5(`identity` / `group` / candidate). Deterministic, and independent of candidate order.
pub fn pick_one<'a>(identity: &str, group: &str, cands: &[&'a str]) -> Option<&'a str> {
    cands
        .iter()
        .map(|c| {
            let mut h = Md5::new();
            h.update(identity.as_bytes());
            h.update(b"/");
            h.update(group.as_bytes());
            h.update(b"/");
            h.update(c.as_bytes());
            (h.finalize(), *c)
        })
        .max()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn dest(name: &str, l: &[(&str, &str)], strict: bool) -> DestinationInfo {
        DestinationInfo {
            name: name.into(),
            labels: labels(l),
            strict_match_labels: strict,
        }
    }

    /// The Kratix docs' label table (multidestination-management.md).
    #[test]
    fn kratix_label_table() {
        type Labels<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Labels, Labels, bool)] = &[
            (&[], &[], true),
            (&[("env", "dev")], &[], true),
            (&[("env", "dev")], &[("env", "dev")], true),
            (&[("env", "dev"), ("zone", "eu")], &[("env", "dev")], true),
            (&[("env", "dev")], &[("env", "prod")], false),
            (&[("env", "dev")], &[("env", "dev"), ("zone", "eu")], false),
            (&[], &[("env", "dev")], false),
        ];
        for (dl, sel, want) in cases {
            assert_eq!(
                matches(&labels(sel), &dest("d", dl, false)),
                *want,
                "dest {dl:?} selector {sel:?}"
            );
        }
        // strictMatchLabels: labelled destination skips empty selectors; unlabelled does not.
        assert!(!matches(&labels(&[]), &dest("d", &[("env", "dev")], true)));
        assert!(matches(&labels(&[]), &dest("d", &[], true)));
        assert!(matches(
            &labels(&[("env", "dev")]),
            &dest("d", &[("env", "dev")], true)
        ));
        // Dry-run destinations never take normal work.
        assert!(!matches(
            &labels(&[]),
            &dest("d", &[(DRY_RUN_LABEL, "true")], false)
        ));
    }

    /// Kratix work_creator_test: resource-wf {environment: production, region: europe} +
    /// promise {environment: dev} + promise-wf {workflow: label}.
    #[test]
    fn priority_merge() {
        let sel = effective_selector(&[
            SourcedSelector {
                match_labels: labels(&[("environment", "dev")]),
                source: SelectorSource::Promise,
            },
            SourcedSelector {
                match_labels: labels(&[("environment", "production"), ("region", "europe")]),
                source: SelectorSource::ResourceWorkflow,
            },
            SourcedSelector {
                match_labels: labels(&[("workflow", "label")]),
                source: SelectorSource::PromiseWorkflow,
            },
        ]);
        assert_eq!(
            sel,
            labels(&[
                ("environment", "dev"),
                ("region", "europe"),
                ("workflow", "label")
            ])
        );
        let promise = [
            Selector {
                match_labels: labels(&[("a", "1"), ("b", "1")]),
            },
            Selector {
                match_labels: labels(&[("a", "2"), ("c", "2")]),
            },
        ];
        assert_eq!(
            squash(&promise),
            labels(&[("a", "1"), ("b", "1"), ("c", "2")])
        );
    }

    #[test]
    fn groups_from_output() {
        let files: Vec<String> = ["a.yaml", "backstage/component.yaml", "sub/x.yaml"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let sel = [WorkflowSelector {
            directory: Some("backstage".into()),
            match_labels: labels(&[("environment", "backstage")]),
        }];
        let promise = [Selector {
            match_labels: labels(&[("environment", "dev")]),
        }];
        let g = workload_groups(&files, &sel, &promise, SelectorSource::ResourceWorkflow);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].directory, ".");
        assert_eq!(g[0].files, ["a.yaml", "sub/x.yaml"]);
        assert_eq!(
            effective_selector(&g[0].selectors),
            labels(&[("environment", "dev")])
        );
        assert_eq!(g[1].directory, "backstage");
        assert_eq!(&g[1].id[..5], "5cfaf");
        assert_eq!(g[1].files, ["backstage/component.yaml"]);
        // Promise selectors are NOT added to directory groups.
        assert_eq!(
            effective_selector(&g[1].selectors),
            labels(&[("environment", "backstage")])
        );
        // Everything claimed by directories: no root group.
        let only: Vec<String> = vec!["backstage/c.yaml".into()];
        assert_eq!(
            workload_groups(&only, &sel, &promise, SelectorSource::ResourceWorkflow).len(),
            1
        );
    }

    #[test]
    fn requests_go_to_one_sticky_destination() {
        let dests = vec![
            dest("a", &[("env", "dev")], false),
            dest("b", &[("env", "dev")], false),
            dest("c", &[("env", "prod")], false),
        ];
        let g = WorkloadGroup {
            directory: ".".into(),
            id: group_id("."),
            selectors: vec![SourcedSelector {
                match_labels: labels(&[("env", "dev")]),
                source: SelectorSource::Promise,
            }],
            files: vec!["x".into()],
        };
        let first = place(&g, Some("redis/default/r1"), &dests, &[]);
        assert_eq!(first.destinations.len(), 1);
        assert!(!first.destinations[0].misplaced);
        // Deterministic, and independent of Destination order.
        let mut rev = dests.clone();
        rev.reverse();
        assert_eq!(place(&g, Some("redis/default/r1"), &rev, &[]), first);
        // Different requests spread over the candidates.
        let picks: BTreeSet<String> = (0..32)
            .map(|i| {
                place(&g, Some(&format!("redis/default/r{i}")), &dests, &[]).destinations[0]
                    .destination
                    .clone()
            })
            .collect();
        assert_eq!(
            picks,
            ["a".to_string(), "b".to_string()].into_iter().collect()
        );
        // Sticky: an existing placement on c (no longer matching) stays, marked misplaced.
        let sticky = place(&g, Some("redis/default/r1"), &dests, &["c".into()]);
        assert_eq!(
            sticky.destinations,
            vec![PlacedOn {
                destination: "c".into(),
                misplaced: true
            }]
        );
        // A placement on a Destination that no longer exists is re-placed.
        let gone = place(&g, Some("redis/default/r1"), &dests, &["deleted".into()]);
        assert_eq!(gone, first);
        // No candidates: unscheduled.
        let none = place(
            &g,
            Some("redis/default/r1"),
            &[dest("c", &[("env", "prod")], false)],
            &[],
        );
        assert!(none.is_unscheduled());
    }

    #[test]
    fn dependencies_go_everywhere_and_keep_misplaced() {
        let dests = vec![
            dest("a", &[("env", "dev")], false),
            dest("b", &[("env", "dev")], false),
            dest("c", &[("env", "prod")], false),
        ];
        let g = WorkloadGroup {
            directory: ".".into(),
            id: group_id("."),
            selectors: vec![SourcedSelector {
                match_labels: labels(&[("env", "dev")]),
                source: SelectorSource::Promise,
            }],
            files: vec!["x".into()],
        };
        let p = place(&g, None, &dests, &["c".into()]);
        assert_eq!(
            p.destinations,
            vec![
                PlacedOn {
                    destination: "a".into(),
                    misplaced: false
                },
                PlacedOn {
                    destination: "b".into(),
                    misplaced: false
                },
                PlacedOn {
                    destination: "c".into(),
                    misplaced: true
                },
            ]
        );
    }
}
