//! Place stage: where every output goes (kratix-contract.md §3, [`crate::scheduler`]).
//!
//! Requests that are not steady are placed again from their cached outputs on every pass
//! ([`Engine::place_requests`]; Promise output is placed in the promises stage), so a new
//! Destination picks up pending work without any pipeline running. Before anything is written,
//! [`Engine::settle_placements`] keeps the placements of present-but-invalid objects, fails the
//! later of two placements that claim one path in mode `none`, and fails an object whose path
//! its state store refuses; such an object keeps what it placed before. The pure placement of
//! one object's outputs is [`super::placement::place_outputs`].

use std::collections::BTreeMap;
use std::sync::Arc;

use statestores::StateStore;

use super::destinations::dest_mode;
use super::placement::{DestView, place_outputs};
use super::{Engine, Pass, records};
use crate::model::FilepathMode;
use crate::state::{PlacementRecord, State};
use crate::status::Text;

impl Engine {
    /// Places the outputs of every request that is not steady (into `pass.desired`), marking
    /// output that matches no Destination `WorksSucceeded=Unknown WorksPending`.
    pub(super) fn place_requests(&mut self, pass: &mut Pass<'_>) {
        let cfg = pass.cfg;
        // Placement for every current request that is not steady (picks up Destination
        // changes: they change the steady key).
        for r in &cfg.requests {
            let key = r.key();
            if pass.steady.contains(key) {
                continue;
            }
            let Some(p) = cfg.promise(&r.promise) else {
                continue;
            };
            let Some(record) = self.state.requests.get_mut(key) else {
                continue;
            };
            let key = key.to_string();
            let ns = p.pipeline_namespace().unwrap_or(r.namespace());
            let placed = place_outputs(
                &r.promise,
                Some((ns, r.name())),
                &record.outputs,
                &p.promise.object.spec.destination_selectors,
                &pass.dests,
                &record.placements,
            );
            records::note_unscheduled(&mut record.status, &placed.unscheduled, "resource");
            pass.desired.insert(key, placed.placements);
        }
    }

    /// Settles `pass.desired` before the write: objects present but invalid keep their
    /// placements; path collisions in mode `none` and paths a state store refuses fail the
    /// object concerned (into `pass.object_errors`), which keeps its previous placements.
    pub(super) fn settle_placements(&mut self, pass: &mut Pass<'_>) {
        // Objects that are present but invalid keep their placements.
        for (key, rec) in self.state.requests.iter().chain(self.state.promises.iter()) {
            if pass.steady.contains(key) {
                continue;
            }
            pass.desired
                .entry(key.clone())
                .or_insert_with(|| rec.placements.clone());
        }

        // mode `none`: two placements claiming one path on a store is an error for the later one
        // (steady requests' paths are claimed first: they keep them).
        let steady_none: Vec<&PlacementRecord> =
            if pass.dests.iter().any(|d| d.mode == FilepathMode::None) {
                pass.steady
                    .iter()
                    .filter_map(|k| self.state.requests.get(k))
                    .flat_map(|r| &r.placements)
                    .filter(|p| dest_mode(&pass.dests, &p.destination) == Some(FilepathMode::None))
                    .collect()
            } else {
                Vec::new() // no Destination in mode `none`: nothing to collide
            };
        detect_collisions(
            &mut pass.desired,
            &self.state,
            &steady_none,
            &pass.dests,
            &mut pass.object_errors,
        );
        // A path its state store refuses fails that object alone (it keeps what it placed
        // before), not the store's whole commit.
        check_store_paths(
            &mut pass.desired,
            &self.state,
            &self.stores,
            &pass.dests,
            &mut pass.object_errors,
        );
    }
}

/// mode `none` writes every placement straight into the Destination directory; when two
/// placements on one store claim the same path, the later one (by key) fails and keeps its
/// previous placements. `aggregatedYAML` placements take no part: their file names are only
/// labels inside the Destination's one aggregate file, which holds them all (Kratix).
pub(super) fn detect_collisions(
    desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
    state: &State,
    kept: &[&PlacementRecord],
    dests: &[DestView],
    errors: &mut BTreeMap<String, String>,
) {
    let writes_paths = |p: &PlacementRecord| {
        dest_mode(dests, &p.destination) != Some(FilepathMode::AggregatedYaml)
    };
    let mut claimed: BTreeMap<(Text, String), String> = BTreeMap::new();
    for p in kept {
        for f in &p.files {
            claimed.insert((p.store.clone(), f.path.clone()), p.key.clone());
        }
    }
    let keys: Vec<String> = desired.keys().cloned().collect();
    for okey in keys {
        let places = &desired[&okey];
        let mut conflict = None;
        for p in places.iter().filter(|p| writes_paths(p)) {
            for f in &p.files {
                if let Some(other) = claimed.get(&(p.store.clone(), f.path.clone()))
                    && *other != p.key
                {
                    conflict = Some(format!("{} is also written by placement {other}", f.path));
                }
            }
        }
        match conflict {
            Some(msg) => {
                errors.insert(okey.clone(), msg);
                keep_last_placements(state, desired, okey);
            }
            None => {
                for p in places.iter().filter(|p| writes_paths(p)) {
                    for f in &p.files {
                        claimed.insert((p.store.clone(), f.path.clone()), p.key.clone());
                    }
                }
            }
        }
    }
}

/// Checks every file path of the desired placements with its state store's own rule
/// ([`StateStore::check_path`], the rule its `apply` enforces). An object with a refused path
/// gets the error (naming the store, the path and why) and keeps its previous placements, as a
/// collision does. `aggregatedYAML` placements are skipped: their files are not written as
/// paths (the Destination's aggregate file is).
fn check_store_paths(
    desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
    state: &State,
    stores: &BTreeMap<String, (String, Arc<dyn StateStore>)>,
    dests: &[DestView],
    errors: &mut BTreeMap<String, String>,
) {
    let mut refused: Vec<(String, String)> = Vec::new();
    for (okey, places) in desired.iter() {
        let problem = places
            .iter()
            .filter(|p| dest_mode(dests, &p.destination) != Some(FilepathMode::AggregatedYaml))
            .find_map(|p| {
                let (_, store) = stores.get(p.store.as_str())?;
                p.files
                    .iter()
                    .find_map(|f| store.check_path(&f.path).err())
                    .map(|e| format!("{}: {e}", p.store))
            });
        if let Some(msg) = problem {
            refused.push((okey.clone(), msg));
        }
    }
    for (okey, msg) in refused {
        tracing::warn!(object = %okey, error = %msg, "output refused by its state store");
        errors.entry(okey.clone()).or_insert(msg);
        keep_last_placements(state, desired, okey);
    }
}

/// An object that fails its placement keeps what it placed last: its desired placements
/// become its record's (nothing of it is written or pruned this pass).
fn keep_last_placements(
    state: &State,
    desired: &mut BTreeMap<String, Vec<PlacementRecord>>,
    okey: String,
) {
    let old = state
        .requests
        .get(&okey)
        .or_else(|| state.promises.get(&okey))
        .map(|r| r.placements.clone())
        .unwrap_or_default();
    desired.insert(okey, old);
}

/// Where a placement goes in its `aggregatedYAML` Destination's file (README, "Where promised
/// differs from Kratix"): Promise-level work (`dependencies/…`) before requests'
/// (`resources/…`), then by Promise, namespace, request, pipeline and group, read from the
/// placement key (`<destination>/dependencies/<promise>/<pipeline>/<id5>` or
/// `<destination>/resources/<namespace>/<promise>/<request>/<pipeline>/<id5>`). Kratix orders
/// by WorkPlacement name, which starts with the Promise name; there are no WorkPlacements here,
/// and this order stays the same across passes.
pub(super) fn aggregate_order(key: &str) -> (u8, &str, &str, &str, &str) {
    let rest = key.split_once('/').map_or(key, |(_, r)| r);
    if let Some(r) = rest.strip_prefix("dependencies/") {
        let (promise, tail) = r.split_once('/').unwrap_or((r, ""));
        return (0, promise, "", "", tail);
    }
    let r = rest.strip_prefix("resources/").unwrap_or(rest);
    let mut it = r.splitn(4, '/');
    let namespace = it.next().unwrap_or_default();
    let promise = it.next().unwrap_or_default();
    let request = it.next().unwrap_or_default();
    (
        1,
        promise,
        namespace,
        request,
        it.next().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::aggregate_order;

    #[test]
    fn aggregate_order_is_dependencies_then_promise_namespace_request() {
        let mut keys = vec![
            "dev/resources/b-ns/alpha/r1/configure/5058f",
            "dev/resources/a-ns/zeta/r0/configure/5058f",
            "dev/resources/a-ns/alpha/r2/configure/5058f",
            "dev/dependencies/zeta/promise-configure/5058f",
            "dev/resources/a-ns/alpha/r1/second/5058f",
            "dev/resources/a-ns/alpha/r1/first/5058f",
            "dev/dependencies/alpha/5058f",
        ];
        keys.sort_by(|a, b| aggregate_order(a).cmp(&aggregate_order(b)));
        assert_eq!(
            keys,
            [
                "dev/dependencies/alpha/5058f",
                "dev/dependencies/zeta/promise-configure/5058f",
                "dev/resources/a-ns/alpha/r1/first/5058f",
                "dev/resources/a-ns/alpha/r1/second/5058f",
                "dev/resources/a-ns/alpha/r2/configure/5058f",
                "dev/resources/b-ns/alpha/r1/configure/5058f",
                "dev/resources/a-ns/zeta/r0/configure/5058f",
            ]
        );
    }
}
