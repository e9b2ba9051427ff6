//! Destinations stage: registers every Destination of the config (its record, its canary
//! files unless `initWorkloads.enabled: false`, kratix-contract.md §4) and retires those that
//! left the config repo (Kratix's `spec.cleanup`); also the Destination views the scheduler
//! places on, and the recovery of placements from the state stores' ownership indexes when
//! the state directory was lost.

use std::collections::BTreeSet;

use statestores::{FileWrite, Owner, PlacementWrite};

use super::{Engine, EngineError, Pass, placement::DestView};
use crate::layout;
use crate::model::{FilepathMode, ObjectRef, StateStoreKind, promise_key, request_key};
use crate::scheduler::DestinationInfo;
use crate::state::{DestinationRecord, FileRecord, PlacementRecord, sha256_hex};
use crate::validate::ValidConfig;

/// A canary write (`Ok`) or the owner key of canary files to remove (`Err`).
pub(super) type CanaryChange = Result<PlacementWrite, String>;

/// Canary changes with their state store key.
pub(super) type CanaryChanges = Vec<(String, CanaryChange)>;

/// `(name, state store key)` of a Destination with `cleanup: all` that left the config repo
/// and whose files are being removed.
pub(super) type Retiring = (String, String);

impl Engine {
    /// Fills `pass.canaries` and `pass.retiring`: canary writes and removals for every
    /// Destination, and for each `cleanup: all` Destination that left, the removal of
    /// everything its store's ownership index lists for it.
    pub(super) async fn register_destinations(
        &mut self,
        pass: &mut Pass<'_>,
    ) -> Result<(), EngineError> {
        let (mut canaries, retiring) = self.canaries(pass.cfg)?;
        for (name, store_key) in &retiring {
            // `cleanup: all` removes everything the store's index lists for the Destination,
            // also what no record knows of any more.
            let Some((_, store)) = self.stores.get(store_key) else {
                continue;
            };
            match store.owned("").await {
                Ok(entries) => {
                    let keys: BTreeSet<String> = entries
                        .into_iter()
                        .filter(|e| e.owner.destination == *name)
                        .map(|e| e.owner.key.clone())
                        .collect();
                    canaries.extend(keys.into_iter().map(|k| (store_key.clone(), Err(k))));
                }
                Err(e) => {
                    tracing::warn!(destination = %name, store = %store_key, error = %e, "cannot read the ownership index to remove a Destination's files");
                }
            }
        }
        pass.canaries = canaries;
        pass.retiring = retiring;
        Ok(())
    }

    /// Canary writes (`Ok`) and removals (`Err(owner key)`) per store, and registration records;
    /// and `(name, store)` of the Destinations with `cleanup: all` that left the config repo.
    fn canaries(
        &mut self,
        cfg: &ValidConfig,
    ) -> Result<(CanaryChanges, Vec<Retiring>), EngineError> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for d in &cfg.destinations {
            let name = d.id.name.clone();
            seen.insert(name.clone());
            let Some(store_key) = store_key_of(
                &d.object.spec.state_store_ref.kind,
                &d.object.spec.state_store_ref.name,
            ) else {
                continue;
            };
            let store_path = store_path(cfg, &store_key);
            let key = format!("{name}/kratix-canary");
            let rec = self
                .state
                .destinations
                .entry(name.clone())
                .or_insert_with(|| DestinationRecord {
                    store: store_key.clone(),
                    cleanup_all: false,
                    canary_key: None,
                    canary_hash: String::new(),
                });
            rec.cleanup_all = d.object.spec.cleanup == crate::model::Cleanup::All;
            if rec.store != store_key {
                if let Some(k) = rec.canary_key.take() {
                    out.push((rec.store.clone(), Err(k)));
                }
                rec.store = store_key.clone();
            }
            if d.object.spec.init_workloads.enabled {
                let files: Vec<FileWrite> = layout::canary_files(
                    &store_path,
                    &d.object.spec.path,
                    d.object.spec.filepath.mode,
                )
                .into_iter()
                .map(|(path, content)| FileWrite {
                    path,
                    content: content.as_bytes().to_vec(),
                })
                .collect();
                let fingerprint = sha256_hex(
                    files
                        .iter()
                        .map(|f| format!("{}\n{}\n", f.path, sha256_hex(&f.content)))
                        .collect::<String>()
                        .as_bytes(),
                );
                if rec.canary_key.as_deref() == Some(key.as_str()) && rec.canary_hash == fingerprint
                {
                    continue; // written before; drift repair keeps it there
                }
                rec.canary_hash = fingerprint;
                let owner = Owner {
                    key: key.clone(),
                    destination: name.clone(),
                    promise: String::new(),
                    resource: None,
                    pipeline: None,
                };
                rec.canary_key = Some(key);
                out.push((
                    store_key,
                    Ok(PlacementWrite {
                        owner: owner.into(),
                        files,
                    }),
                ));
            } else if let Some(k) = rec.canary_key.take() {
                out.push((store_key, Err(k)));
            }
        }
        // Destinations that left the config repo (Kratix's `spec.cleanup`). `none`, the
        // default: every file stays, canaries and ownership index included; the placements
        // there stay too, misplaced and no longer written (`place_outputs`). `all`: everything
        // promised wrote for it goes (its placements, aggregate file and canaries; the caller
        // adds whatever else the store's index lists for it), and its placements are
        // forgotten, so its requests are placed again. Its record stays until the store has
        // committed that (`retiring`), so a failed write is retried on the next pass.
        let configured = configured_stores(cfg);
        let gone: Vec<String> = self
            .state
            .destinations
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        let mut retiring = Vec::new();
        for name in gone {
            let rec = self.state.destinations[&name].clone();
            if rec.cleanup_all
                && cfg
                    .rejected
                    .iter()
                    .any(|r| r.id.kind == "Destination" && r.id.name == name)
            {
                // Still in the repo, but refused (invalid, or outside the tenancy policy's
                // platform paths): like a Promise or request that becomes invalid, it keeps
                // its files; only removal from the config repo deletes.
                tracing::warn!(destination = %name, "a Destination with cleanup: all is refused by validation: its files stay");
                continue;
            }
            if rec.cleanup_all && !cfg.unloadable.is_empty() {
                // A config file does not load, and the Destination may be in it (a state
                // directory from before `infra_documents` cannot restore it): nothing of it
                // is removed until every file loads (`held`).
                tracing::warn!(destination = %name, "a Destination with cleanup: all is gone while a config file does not load: its files stay until it loads");
                continue;
            }
            if !rec.cleanup_all || !configured.contains(&rec.store) {
                if rec.cleanup_all {
                    tracing::warn!(destination = %name, store = %rec.store, "Destination with cleanup: all left the config repo with its state store: its files stay");
                }
                self.state.destinations.remove(&name);
                continue;
            }
            if let Some(k) = rec.canary_key {
                out.push((rec.store.clone(), Err(k)));
            }
            out.push((rec.store.clone(), Err(format!("{name}/aggregated"))));
            for obj in self
                .state
                .requests
                .values_mut()
                .chain(self.state.promises.values_mut())
            {
                for p in obj.placements.iter().filter(|p| p.destination == name) {
                    out.push((p.store.to_string(), Err(p.key.clone())));
                }
                obj.placements.retain(|p| p.destination != name);
            }
            retiring.push((name, rec.store));
        }
        Ok((out, retiring))
    }

    /// After the state directory was lost, recover sticky placements from the state stores'
    /// ownership indexes, so requests do not move and files are not duplicated.
    pub(super) async fn rebuild_from_indexes_if_empty(&mut self, dests: &[DestView]) {
        if !self.state.requests.is_empty() || !self.state.promises.is_empty() {
            return;
        }
        for (key, (_, store)) in &self.stores {
            let Ok(entries) = store.owned("").await else {
                continue;
            };
            for e in entries {
                if !self.in_shard(&e.owner.promise) {
                    continue; // another shard's
                }
                let Some(d) = dests
                    .iter()
                    .find(|d| d.info.name == e.owner.destination && &d.store == key)
                else {
                    continue;
                };
                let _ = d;
                let (okey, object) = match &e.owner.resource {
                    Some(nsname) => {
                        let (ns, name) = nsname.split_once('/').unwrap_or(("default", nsname));
                        (
                            request_key(&e.owner.promise, ns, name),
                            ObjectRef {
                                kind: String::new(),
                                namespace: Some(ns.into()),
                                name: name.into(),
                            },
                        )
                    }
                    None => (
                        promise_key(&e.owner.promise),
                        ObjectRef {
                            kind: "Promise".into(),
                            namespace: None,
                            name: e.owner.promise.clone(),
                        },
                    ),
                };
                if e.owner.key.ends_with("/kratix-canary") {
                    // Remember the canary's owner so `canaries` can remove it once
                    // `initWorkloads` is switched off.
                    self.state
                        .destinations
                        .entry(e.owner.destination.clone())
                        .or_insert_with(|| DestinationRecord {
                            store: key.clone(),
                            cleanup_all: false,
                            canary_key: None,
                            canary_hash: String::new(),
                        })
                        .canary_key
                        .get_or_insert_with(|| e.owner.key.clone());
                    continue;
                }
                let rec = if e.owner.resource.is_some() {
                    &mut self.state.requests
                } else {
                    &mut self.state.promises
                }
                .entry(okey)
                .or_insert_with(|| super::records::new_record(&object, &e.owner.promise));
                let group_id = e
                    .owner
                    .key
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let pipeline = e.owner.pipeline.clone().unwrap_or_default();
                match rec.placements.iter_mut().find(|p| p.key == e.owner.key) {
                    Some(p) => p.files.push(FileRecord {
                        path: e.path.clone(),
                        sha256: e.sha256.to_string().into(),
                    }),
                    None => rec.placements.push(PlacementRecord {
                        key: e.owner.key.clone(),
                        store: key.clone().into(),
                        destination: e.owner.destination.clone().into(),
                        pipeline: pipeline.into(),
                        // The index keeps id5 only; the scheduler matches on the full id, so
                        // stickiness is restored through `destination` below.
                        group_id: group_id_from_id5(&group_id).into(),
                        dir: String::new(),
                        misplaced: false,
                        files: vec![FileRecord {
                            path: e.path.clone(),
                            sha256: e.sha256.to_string().into(),
                        }],
                    }),
                }
            }
        }
        let n = self.state.requests.len() + self.state.promises.len();
        if n > 0 {
            tracing::info!(objects = n, "rebuilt placements from state store indexes");
        }
    }
}

/// The config's Destinations as the scheduler sees them, with their state stores.
pub(super) fn dest_views(cfg: &ValidConfig) -> Vec<DestView> {
    cfg.destinations
        .iter()
        .filter_map(|d| {
            let store = store_key_of(
                &d.object.spec.state_store_ref.kind,
                &d.object.spec.state_store_ref.name,
            )?;
            Some(DestView {
                info: DestinationInfo {
                    name: d.id.name.clone(),
                    labels: d.object.metadata.labels.clone(),
                    strict_match_labels: d.object.spec.strict_match_labels,
                },
                store_path: store_path(cfg, &store),
                store,
                path: d.object.spec.path.clone(),
                mode: d.object.spec.filepath.mode,
                filename: d.object.spec.filepath.filename.clone(),
            })
        })
        .collect()
}

/// The filepath mode of Destination `name`, when it is in the config.
pub(super) fn dest_mode(dests: &[DestView], name: &str) -> Option<FilepathMode> {
    dests.iter().find(|d| d.info.name == name).map(|d| d.mode)
}

/// `<kind>/<name>` of every state store in the config repo.
pub(super) fn configured_stores(cfg: &ValidConfig) -> BTreeSet<String> {
    cfg.git_state_stores
        .iter()
        .map(|s| format!("GitStateStore/{}", s.id.name))
        .chain(
            cfg.bucket_state_stores
                .iter()
                .map(|s| format!("BucketStateStore/{}", s.id.name)),
        )
        .collect()
}

/// `<kind>/<name>` of a state store reference.
pub(super) fn store_key_of(kind: &StateStoreKind, name: &str) -> Option<String> {
    Some(format!("{}/{name}", kind.as_str()))
}

/// `spec.path` of the state store `<kind>/<name>` (empty when it is not in the config).
pub(super) fn store_path(cfg: &ValidConfig, store_key: &str) -> String {
    let (kind, name) = store_key.split_once('/').unwrap_or_default();
    match kind {
        "GitStateStore" => cfg
            .git_state_stores
            .iter()
            .find(|s| s.id.name == name)
            .map(|s| s.object.spec.path.clone()),
        _ => cfg
            .bucket_state_stores
            .iter()
            .find(|s| s.id.name == name)
            .map(|s| s.object.spec.path.clone()),
    }
    .unwrap_or_default()
}

/// The full group id for an ownership index's 5-character id, where it can be known.
fn group_id_from_id5(id5: &str) -> String {
    // Only the root group can be recognised from its id5; other ids stay partial.
    if id5 == &layout::group_id(layout::ROOT_DIRECTORY)[..5] {
        layout::group_id(layout::ROOT_DIRECTORY)
    } else {
        id5.to_string()
    }
}
