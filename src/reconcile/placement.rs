//! From cached pipeline outputs to placements: pure, recomputed on every pass so that a new or
//! relabelled Destination takes effect without re-running any pipeline.

use std::collections::BTreeMap;

use crate::layout::{self, WorkScope};
use crate::model::{FilepathMode, Selector};
use crate::scheduler::{self, DestinationInfo, SelectorSource};
pub use crate::state::OutputRecord;
use crate::state::{FileRecord, PlacementRecord};

/// A Destination as placement needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestView {
    /// Labels and strictness.
    pub info: DestinationInfo,
    /// `<kind>/<name>` of its state store.
    pub store: String,
    /// The state store's `spec.path`.
    pub store_path: String,
    /// `spec.path`.
    pub path: String,
    /// `spec.filepath.mode`.
    pub mode: FilepathMode,
    /// `spec.filepath.filename` (aggregatedYAML).
    pub filename: String,
}

/// What placement produced for one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placed {
    /// Desired placements, sorted by key.
    pub placements: Vec<PlacementRecord>,
    /// `(pipeline, group directory)` of groups no Destination matches.
    pub unscheduled: Vec<(String, String)>,
}

/// Owner key of a placement in the state store index: the Kratix nested layout under the
/// Destination name, whatever the filepath mode, so it is unique per store.
pub fn owner_key(
    dest: &str,
    promise: &str,
    scope: &WorkScope,
    pipeline: &str,
    group_id: &str,
) -> String {
    layout::placement_dir(
        "",
        dest,
        FilepathMode::NestedByMetadata,
        promise,
        scope,
        pipeline,
        group_id,
    )
}

/// Places every output of one object.
///
/// `request`: `Some((namespace segment, name))` for a resource request, `None` for Promise-level
/// output. `existing`: the object's previous placements (stickiness and misplacement).
pub fn place_outputs(
    promise: &str,
    request: Option<(&str, &str)>,
    outputs: &[OutputRecord],
    promise_selectors: &[Selector],
    dests: &[DestView],
    existing: &[PlacementRecord],
) -> Placed {
    let infos: Vec<DestinationInfo> = dests.iter().map(|d| d.info.clone()).collect();
    let source = if request.is_some() {
        SelectorSource::ResourceWorkflow
    } else {
        SelectorSource::PromiseWorkflow
    };
    let scope = match request {
        Some((ns, name)) => WorkScope::Resource {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        None => WorkScope::Dependency,
    };
    let identity = request.map(|(ns, name)| format!("{promise}/{ns}/{name}"));
    let mut placed = Placed::default();
    for out in outputs {
        let paths: Vec<String> = out.files.iter().map(|f| f.path.clone()).collect();
        let groups = scheduler::workload_groups(&paths, &out.selectors, promise_selectors, source);
        for g in groups {
            let before: Vec<&PlacementRecord> = existing
                .iter()
                .filter(|p| p.pipeline == out.pipeline && p.group_id == g.id)
                .collect();
            // A Destination that left the config repo with `cleanup: none` (`cleanup: all`
            // ones are forgotten before placement): its placements stay as they were, marked
            // misplaced, neither written nor pruned, and a request's group is not moved
            // (Kratix keeps the WorkPlacement). Once the Destination is back, they are its
            // placements again.
            let mut kept_on_gone = false;
            for p in before
                .iter()
                .filter(|p| !dests.iter().any(|d| d.info.name == p.destination))
            {
                placed.placements.push(PlacementRecord {
                    misplaced: true,
                    ..(*p).clone()
                });
                kept_on_gone = true;
            }
            if kept_on_gone && request.is_some() {
                continue;
            }
            let before: Vec<String> = before.iter().map(|p| p.destination.to_string()).collect();
            let decision = scheduler::place(&g, identity.as_deref(), &infos, &before);
            if decision.is_unscheduled() {
                if !kept_on_gone {
                    placed
                        .unscheduled
                        .push((out.pipeline.to_string(), g.directory.clone()));
                }
                continue;
            }
            let files: Vec<&FileRecord> = out
                .files
                .iter()
                .filter(|f| g.files.contains(&f.path))
                .collect();
            for on in decision.destinations {
                let Some(d) = dests.iter().find(|d| d.info.name == on.destination) else {
                    continue;
                };
                let dir = layout::placement_dir(
                    &d.store_path,
                    &d.path,
                    d.mode,
                    promise,
                    &scope,
                    &out.pipeline,
                    &g.id,
                );
                let files = match d.mode {
                    // Aggregated: keep output-relative paths; the aggregate file is built per Destination.
                    FilepathMode::AggregatedYaml => files.iter().map(|f| (*f).clone()).collect(),
                    _ => files
                        .iter()
                        .map(|f| FileRecord {
                            path: layout::file_path(&dir, &f.path),
                            sha256: f.sha256.clone(),
                        })
                        .collect(),
                };
                let dir = match d.mode {
                    FilepathMode::AggregatedYaml => {
                        layout::aggregated_path(&d.store_path, &d.path, &d.filename)
                    }
                    _ => dir,
                };
                placed.placements.push(PlacementRecord {
                    key: owner_key(&d.info.name, promise, &scope, &out.pipeline, &g.id),
                    store: d.store.clone().into(),
                    destination: d.info.name.clone().into(),
                    pipeline: out.pipeline.clone(),
                    group_id: g.id.clone().into(),
                    dir,
                    misplaced: on.misplaced,
                    files,
                });
            }
        }
    }
    placed.placements.sort();
    placed.placements.shrink_to_fit();
    placed
}

/// Placements whose key is new or whose files changed, and keys that disappeared.
pub fn diff<'a>(
    before: &[PlacementRecord],
    after: &'a [PlacementRecord],
) -> (Vec<&'a PlacementRecord>, Vec<String>) {
    let old: BTreeMap<&str, &PlacementRecord> =
        before.iter().map(|p| (p.key.as_str(), p)).collect();
    let new: BTreeMap<&str, &PlacementRecord> = after.iter().map(|p| (p.key.as_str(), p)).collect();
    let changed = after
        .iter()
        .filter(|p| {
            old.get(p.key.as_str())
                .is_none_or(|o| o.files != p.files || o.store != p.store || o.dir != p.dir)
        })
        .collect();
    let removed = before
        .iter()
        .filter(|p| !new.contains_key(p.key.as_str()))
        .map(|p| p.key.clone())
        .collect();
    (changed, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::WorkflowSelector;

    fn dv(name: &str, env: &str, mode: FilepathMode) -> DestView {
        DestView {
            info: DestinationInfo {
                name: name.into(),
                labels: [("environment".to_string(), env.to_string())]
                    .into_iter()
                    .collect(),
                strict_match_labels: false,
            },
            store: "GitStateStore/s".into(),
            store_path: "ss".into(),
            path: format!("clusters/{name}"),
            mode,
            filename: "aggregated.yaml".into(),
        }
    }

    fn fr(p: &str) -> FileRecord {
        FileRecord {
            path: p.into(),
            sha256: format!("sha-{p}").into(),
        }
    }

    #[test]
    fn request_output_with_directory_group() {
        let dests = vec![
            dv("dev", "dev", FilepathMode::NestedByMetadata),
            dv("bs", "backstage", FilepathMode::NestedByMetadata),
        ];
        let out = OutputRecord {
            pipeline: "instance-configure".into(),
            files: vec![fr("kafka.yaml"), fr("backstage/component.yaml")],
            selectors: vec![WorkflowSelector {
                directory: Some("backstage".into()),
                match_labels: [("environment".to_string(), "backstage".to_string())]
                    .into_iter()
                    .collect(),
            }],
            health: None,
        };
        let promise_sel = [Selector {
            match_labels: [("environment".to_string(), "dev".to_string())]
                .into_iter()
                .collect(),
        }];
        let p = place_outputs(
            "kafka",
            Some(("default", "k1")),
            &[out],
            &promise_sel,
            &dests,
            &[],
        );
        assert!(p.unscheduled.is_empty());
        let paths: Vec<&str> = p
            .placements
            .iter()
            .flat_map(|x| x.files.iter().map(|f| f.path.as_str()))
            .collect();
        assert_eq!(
            paths,
            [
                "ss/clusters/bs/resources/default/kafka/k1/instance-configure/5cfaf/backstage/component.yaml",
                "ss/clusters/dev/resources/default/kafka/k1/instance-configure/5058f/kafka.yaml",
            ]
        );
        assert_eq!(
            p.placements[0].key,
            "bs/resources/default/kafka/k1/instance-configure/5cfaf"
        );
    }

    #[test]
    fn placements_on_a_removed_destination_stay_misplaced() {
        let out = OutputRecord {
            pipeline: "p".into(),
            files: vec![fr("a.yaml")],
            selectors: vec![],
            health: None,
        };
        let both = vec![
            dv("dev", "dev", FilepathMode::NestedByMetadata),
            dv("dev2", "dev", FilepathMode::NestedByMetadata),
        ];
        let sel = [Selector {
            match_labels: [("environment".to_string(), "dev".to_string())]
                .into_iter()
                .collect(),
        }];
        let req = Some(("default", "r1"));
        let first = place_outputs("x", req, std::slice::from_ref(&out), &sel, &both, &[]);
        let on = first.placements[0].destination.clone();
        let rest: Vec<DestView> = both.iter().filter(|d| d.info.name != on).cloned().collect();
        // The request's Destination left (cleanup: none): not moved to the other one.
        let p = place_outputs(
            "x",
            req,
            std::slice::from_ref(&out),
            &sel,
            &rest,
            &first.placements,
        );
        assert!(p.unscheduled.is_empty());
        assert_eq!(
            p.placements,
            vec![PlacementRecord {
                misplaced: true,
                ..first.placements[0].clone()
            }]
        );
        // Promise-level work: kept on the removed one, placed on every matching one.
        let deps = place_outputs("x", None, std::slice::from_ref(&out), &sel, &both, &[]);
        assert_eq!(deps.placements.len(), 2);
        let p = place_outputs(
            "x",
            None,
            std::slice::from_ref(&out),
            &sel,
            &rest,
            &deps.placements,
        );
        let got: Vec<(&str, bool)> = p
            .placements
            .iter()
            .map(|x| (x.destination.as_str(), x.misplaced))
            .collect();
        let mut want = vec![(on.as_str(), true), (rest[0].info.name.as_str(), false)];
        want.sort();
        assert_eq!(got, want);
        // Nothing matches any more: still not pending, the kept placement stands.
        let p = place_outputs(
            "x",
            None,
            std::slice::from_ref(&out),
            &sel,
            &[],
            &deps.placements,
        );
        assert!(p.unscheduled.is_empty());
        assert!(p.placements.iter().all(|x| x.misplaced));
    }

    #[test]
    fn diff_detects_changes_and_removals() {
        let dests = vec![dv("dev", "dev", FilepathMode::None)];
        let out = |f: &str| OutputRecord {
            pipeline: "p".into(),
            files: vec![fr(f)],
            selectors: vec![],
            health: None,
        };
        let a = place_outputs("x", None, &[out("a.yaml")], &[], &dests, &[]).placements;
        assert_eq!(a[0].files[0].path, "ss/clusters/dev/a.yaml");
        let (changed, removed) = diff(&a, &a);
        assert!(changed.is_empty() && removed.is_empty());
        let b = place_outputs("x", None, &[out("b.yaml")], &[], &dests, &a).placements;
        let (changed, removed) = diff(&a, &b);
        assert_eq!(changed.len(), 1);
        assert!(removed.is_empty(), "same key, new files");
        let (changed, removed) = diff(&a, &[]);
        assert!(changed.is_empty());
        assert_eq!(removed, vec![a[0].key.clone()]);
    }
}
