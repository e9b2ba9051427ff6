//! Compound Promises, in process (README "Compound Promises"; kratix-lifecycle.md §3).
//!
//! A Destination labelled `promised.dev/platform: "true"` ([`PLATFORM_LABEL`]), or with
//! Kratix's convention label `environment: platform` ([`KRATIX_PLATFORM_LABEL`]), is the
//! platform itself. Output a request's workflow schedules to it is not written to a state
//! store: it is read back, in the same pass, as config. Each YAML document of it is
//! - a resource request of a Promise of the config repo (a *child*), admitted like a request
//!   read from a file ([`crate::validate::admit_one`]), with the labels
//!   `kratix.io/component-of-promise-name`, `-resource-name` and `-resource-namespace`
//!   naming its parent set by promised;
//! - a `HealthRecord` or a `ResourceBinding`, added to the pass's config as if read from the
//!   config repo;
//! - anything else: a warning in the pass report, naming the parent.
//!
//! How a pass uses it ([`Engine::expand_round_zero`], [`Engine::compound_rounds`]):
//! 1. before the plan, the children of the cached outputs (the last pass's) are added to the
//!    config, so a child persists while its parent's pipeline does not re-run (placement is
//!    recomputed from cached outputs on every pass);
//! 2. after the run and place stages, the outputs are read again; while the children differ
//!    (new, changed or gone), the new and changed ones go through plan → records → run →
//!    place, at most [`MAX_DEPTH`] levels deep;
//! 3. children absent from every parent's current output are not in the final config, so the
//!    delete stage runs their delete workflow, like a request removed from Git.
//!
//! A child whose Promise is one of its ancestors' closes a cycle: it is rejected
//! (`Reconciled=False InvalidRequest`) with the chain in its message, e.g.
//! `app/default/a → db/default/a-db → app/default/a-db-app`, and runs nothing. A child that
//! fails its Promise's schema is rejected alone, with its parent named in the message.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::placement::{DestView, place_outputs};
use super::{Engine, EngineError, Pass, plan, versions};
use crate::config::Located;
use crate::diag::Origin;
use crate::model::{HealthRecord, KRATIX_API_VERSION, ObjectRef, ResourceBinding, request_key};
use crate::state::{State, StateDir, sha256_hex};
use crate::validate::{Rejected, ValidConfig, ValidRequest};

/// Label marking a Destination as the platform (value `"true"`): its output is fed back as
/// config instead of being written to a state store.
pub const PLATFORM_LABEL: &str = "promised.dev/platform";
/// Kratix's convention for the platform Destination (`environment: platform`,
/// kratix-docs `05-compound-promises.mdx`), accepted as well.
pub const KRATIX_PLATFORM_LABEL: (&str, &str) = ("environment", "platform");
/// Label on a child naming its parent's Promise (Kratix docs `07-compound.md`).
pub const COMPONENT_OF_PROMISE: &str = "kratix.io/component-of-promise-name";
/// Label on a child naming its parent request.
pub const COMPONENT_OF_RESOURCE: &str = "kratix.io/component-of-resource-name";
/// Label on a child naming its parent request's namespace.
pub const COMPONENT_OF_NAMESPACE: &str = "kratix.io/component-of-resource-namespace";
/// How many levels of children a top-level request may have (a child of a child … of depth
/// 8); a deeper one is rejected.
pub const MAX_DEPTH: usize = 8;
/// Config slots a pass needs: round zero plus one per level.
pub(super) const SLOTS: usize = MAX_DEPTH + 2;

/// Whether the Destination with `labels` is the platform ([`PLATFORM_LABEL`] `"true"` or
/// [`KRATIX_PLATFORM_LABEL`]).
pub fn is_platform(labels: &BTreeMap<String, String>) -> bool {
    labels.get(PLATFORM_LABEL).is_some_and(|v| v == "true")
        || labels
            .get(KRATIX_PLATFORM_LABEL.0)
            .is_some_and(|v| v == KRATIX_PLATFORM_LABEL.1)
}

fn platform_names(dests: &[DestView]) -> BTreeSet<&str> {
    dests
        .iter()
        .filter(|d| is_platform(&d.info.labels))
        .map(|d| d.info.name.as_str())
        .collect()
}

/// What the platform output of the present requests holds: the children and the other
/// config objects, with a fingerprint to tell whether a round changed anything.
#[derive(Debug, Default)]
pub(super) struct Expansion {
    requests: Vec<Arc<ValidRequest>>,
    rejected: Vec<Rejected>,
    health_records: Vec<Located<HealthRecord>>,
    bindings: Vec<Located<ResourceBinding>>,
    /// Problems that concern no child request (unknown kinds, bad YAML, duplicates).
    warnings: Vec<String>,
    /// Child request key → parent request key (admitted and rejected children).
    parents: BTreeMap<String, String>,
    /// Object key → hash of what it is (document and verdict).
    fingerprint: BTreeMap<String, String>,
    /// Parents whose platform output could not be read: their children are kept as they are.
    unreadable: BTreeSet<String>,
}

impl Expansion {
    fn is_empty(&self) -> bool {
        self.fingerprint.is_empty() && self.warnings.is_empty()
    }

    /// `base` with everything found added (requests kept sorted as validation sorts them).
    fn config(&self, base: &ValidConfig) -> ValidConfig {
        let mut c = base.clone();
        c.requests.extend(self.requests.iter().cloned());
        c.requests.sort_by(|a, b| {
            (&a.promise, a.namespace(), a.name()).cmp(&(&b.promise, b.namespace(), b.name()))
        });
        c.rejected.extend(self.rejected.iter().cloned());
        c.health_records.extend(self.health_records.iter().cloned());
        c.resource_bindings.extend(self.bindings.iter().cloned());
        c
    }
}

/// One parent whose platform output is read: its key and its ancestors' `(key, Promise)`,
/// top-level request first, itself last.
struct Parent {
    key: String,
    chain: Vec<(String, String)>,
}

/// Reads the platform output of every request of `base` (admitted, rejected or `held`) and,
/// level by level, of the children found, from the records' cached outputs in `state` and
/// their contents in the blob cache of `dir`.
fn derive(
    base: &ValidConfig,
    held: &std::collections::HashSet<String>,
    state: &State,
    dir: &StateDir,
    dests: &[DestView],
) -> Expansion {
    let platform = platform_names(dests);
    let mut e = Expansion::default();
    let mut roots: Vec<String> = base.requests.iter().map(|r| r.key().to_string()).collect();
    for r in &base.rejected {
        if let Some(p) = r.promise.as_ref().filter(|_| r.id.kind != "Promise") {
            let ns = r.id.namespace.as_deref().unwrap_or("default");
            roots.push(request_key(p, ns, &r.id.name));
        }
    }
    // The config repo's requests (valid or not) keep their keys: a child cannot take one.
    let mut taken: BTreeSet<String> = roots.iter().cloned().collect();
    roots.extend(
        held.iter()
            .filter(|k| state.requests.contains_key(*k))
            .cloned(),
    );
    roots.sort();
    roots.dedup();
    let mut queue: Vec<Parent> = roots
        .into_iter()
        .filter_map(|key| {
            let promise = state.requests.get(&key)?.status.promise.clone();
            Some(Parent {
                chain: vec![(key.clone(), promise.to_string())],
                key,
            })
        })
        .collect();
    let mut next = Vec::new();
    while !queue.is_empty() {
        for parent in queue.drain(..) {
            let docs = platform_documents(&parent.key, base, state, dir, dests, &platform);
            let docs = docs.unwrap_or_else(|w| {
                e.warnings.push(w);
                e.unreadable.insert(parent.key.clone());
                Vec::new()
            });
            for (origin, doc) in docs {
                let child = read_document(&mut e, &parent, origin, doc, base, &mut taken);
                if let Some(c) = child {
                    next.push(c);
                }
            }
        }
        std::mem::swap(&mut queue, &mut next);
    }
    e
}

/// The YAML documents `parent_key`'s cached outputs place on a platform Destination, with
/// the origin each is read from (`<parent key>:<path>`, document index). Errors: a file that
/// is not in the blob cache or not YAML (the message names the parent and the file); nothing
/// of that parent's platform output is read this pass, and its children stay as they are
/// ([`Engine::compound_rounds`]).
fn platform_documents(
    parent_key: &str,
    base: &ValidConfig,
    state: &State,
    dir: &StateDir,
    dests: &[DestView],
    platform: &BTreeSet<&str>,
) -> Result<Vec<(Origin, Value)>, String> {
    let Some(record) = state.requests.get(parent_key) else {
        return Ok(Vec::new());
    };
    let Some(p) = base.promise(&record.status.promise) else {
        return Ok(Vec::new());
    };
    let id = &record.status.object;
    let ns = id.namespace.as_deref().unwrap_or("default");
    let placed = place_outputs(
        &record.status.promise,
        Some((p.pipeline_namespace().unwrap_or(ns), &id.name)),
        &record.outputs,
        &p.promise.object.spec.destination_selectors,
        dests,
        &record.placements,
    );
    let mut docs = Vec::new();
    for pl in placed
        .placements
        .iter()
        .filter(|pl| platform.contains(pl.destination.as_str()))
    {
        for f in &pl.files {
            let at = |err: &dyn std::fmt::Display| {
                format!(
                    "output of {parent_key} ({}): {err}; its children stay as they are",
                    f.path
                )
            };
            let bytes = dir.get_blob(&f.sha256).map_err(|e| at(&e))?;
            let values = crate::config::parse_yaml_stream(&String::from_utf8_lossy(&bytes))
                .map_err(|e| at(&e))?;
            for (i, v) in values.into_iter().enumerate() {
                let origin = Origin {
                    file: format!("{parent_key}:{}", f.path),
                    document: i,
                };
                docs.push((origin, v));
            }
        }
    }
    Ok(docs)
}

/// Sorts one platform document into `e`; returns the child to read next when it is an
/// admitted request.
fn read_document(
    e: &mut Expansion,
    parent: &Parent,
    origin: Origin,
    mut doc: Value,
    base: &ValidConfig,
    taken: &mut BTreeSet<String>,
) -> Option<Parent> {
    // `origin.file` is `<parent key>:<path>` (`platform_documents`).
    let path = origin
        .file
        .strip_prefix(&format!("{}:", parent.key))
        .unwrap_or(&origin.file)
        .to_string();
    let at = format!("output of {} ({path})", parent.key);
    let api_version = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let meta = doc.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    if kind.is_empty() || api_version.is_empty() {
        e.warnings.push(format!(
            "{at}: a document without apiVersion and kind is skipped"
        ));
        return None;
    }
    let id = ObjectRef {
        kind: kind.clone(),
        namespace: Some(namespace.clone()),
        name: name.clone(),
    };
    if api_version == KRATIX_API_VERSION {
        let fp = sha256_hex(doc.to_string().as_bytes());
        let key = format!("{kind}/{namespace}/{name}");
        let raw = Arc::new(doc);
        fn located<T>(origin: &Origin, id: &ObjectRef, raw: &Arc<Value>, object: T) -> Located<T> {
            Located {
                origin: origin.clone(),
                id: id.clone(),
                object,
                raw: raw.clone(),
                blob: None,
            }
        }
        let res = match kind.as_str() {
            "HealthRecord" => crate::config::from_value::<HealthRecord>(&raw)
                .map(|o| e.health_records.push(located(&origin, &id, &raw, o))),
            "ResourceBinding" => crate::config::from_value::<ResourceBinding>(&raw)
                .map(|o| e.bindings.push(located(&origin, &id, &raw, o))),
            _ => {
                e.warnings.push(format!(
                    "{at}: {KRATIX_API_VERSION} {kind} is not fed back to the platform; skipped"
                ));
                return None;
            }
        };
        match res {
            Ok(()) => {
                e.fingerprint.insert(key, fp);
            }
            Err((field, msg)) => e.warnings.push(format!(
                "{at}: {kind} {namespace}/{name}: {field}: {msg}; skipped"
            )),
        }
        return None;
    }
    // A request: its parent is named by Kratix's component-of labels (ours win).
    let (pkey, ppromise) = parent.chain.last().expect("a chain names its parent");
    let mut parts = pkey.splitn(3, '/');
    let (_, pns, pname) = (parts.next(), parts.next(), parts.next());
    if let Some(m) = doc.as_object_mut() {
        let meta = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("namespace")
                .or_insert_with(|| Value::String("default".into()));
            let labels = meta
                .entry("labels")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(l) = labels.as_object_mut() {
                for (k, v) in [
                    (COMPONENT_OF_PROMISE, ppromise.as_str()),
                    (COMPONENT_OF_RESOURCE, pname.unwrap_or_default()),
                    (COMPONENT_OF_NAMESPACE, pns.unwrap_or_default()),
                ] {
                    l.insert(k.into(), Value::String(v.into()));
                }
            }
        }
    }
    let fp = sha256_hex(doc.to_string().as_bytes());
    let candidate = crate::config::Candidate {
        origin: origin.clone(),
        id: id.clone(),
        doc: Arc::new(doc).into(),
        blob: None,
    };
    let admitted = crate::validate::admit_one(&candidate, &base.promises);
    let promise = match &admitted {
        Ok(r) => Some(r.promise.clone()),
        Err((p, _)) => p.clone(),
    };
    let Some(promise) = promise else {
        let reasons = admitted.err().map(|(_, r)| r).unwrap_or_default();
        e.warnings.push(format!(
            "{at}: {api_version} {kind} {namespace}/{name} is skipped: {}",
            reasons.join("; ")
        ));
        return None;
    };
    let key = request_key(&promise, &namespace, &name);
    if !taken.insert(key.clone()) {
        e.warnings.push(format!(
            "{at}: request {key} is already in the config or requested by another parent; this one is skipped"
        ));
        return None;
    }
    e.parents.insert(key.clone(), parent.key.clone());
    let mut chain = parent.chain.clone();
    chain.push((key.clone(), promise.clone()));
    let chain_text = chain
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(" → ");
    // A child that closes a cycle or nests too deep is never read further; one that fails
    // admission keeps what it had, its own children included (as an invalid request of the
    // config repo does).
    let nested = parent.chain.iter().any(|(_, p)| *p == promise) || parent.chain.len() > MAX_DEPTH;
    let problem = if parent.chain.iter().any(|(_, p)| *p == promise) {
        Some(vec![format!(
            "compound cycle: {chain_text} (Promise {promise} is already an ancestor of this request)"
        )])
    } else if parent.chain.len() > MAX_DEPTH {
        Some(vec![format!(
            "compound Promises nest deeper than {MAX_DEPTH} levels: {chain_text}"
        )])
    } else {
        match &admitted {
            Ok(_) => None,
            Err((_, reasons)) => Some(
                reasons
                    .iter()
                    .map(|r| format!("{r} (requested by {} in {path})", parent.key))
                    .collect(),
            ),
        }
    };
    match (problem, admitted) {
        (None, Ok(r)) => {
            e.fingerprint.insert(key.clone(), fp);
            e.requests.push(r);
            Some(Parent { key, chain })
        }
        (problem, _) => {
            let reasons = problem.unwrap_or_default();
            e.fingerprint.insert(
                key.clone(),
                sha256_hex(format!("{fp}{reasons:?}").as_bytes()),
            );
            e.rejected.push(Rejected {
                origin,
                id,
                reasons,
                promise: Some(promise),
            });
            (!nested).then_some(Parent { key, chain })
        }
    }
}

impl Engine {
    /// Round zero (before the plan): the children of the cached outputs join the config in
    /// `slots[0]`, which becomes `pass.cfg` (presence recomputed). Returns what was found;
    /// does nothing without a platform Destination.
    pub(super) fn expand_round_zero<'c>(
        &mut self,
        pass: &mut Pass<'c>,
        slots: &'c [OnceCell<ValidConfig>],
    ) -> Expansion {
        if platform_names(&pass.dests).is_empty() {
            return Expansion::default();
        }
        let e = derive(
            pass.cfg,
            &pass.present.held,
            &self.state,
            &self.dir,
            &pass.dests,
        );
        if !e.is_empty() {
            self.use_config(pass, &slots[0], &e);
        }
        e
    }

    /// `pass.cfg` becomes the base config plus `e`, kept in `slot` (the base is `slots`'
    /// common base: the config the pass was started with, without children).
    fn use_config<'c>(
        &mut self,
        pass: &mut Pass<'c>,
        slot: &'c OnceCell<ValidConfig>,
        e: &Expansion,
    ) {
        let base = pass.base.unwrap_or(pass.cfg);
        pass.base = Some(base);
        let cfg: &'c ValidConfig = slot.get_or_init(|| e.config(base));
        pass.cfg = cfg;
        let (present, held) = super::delete::Presence::with_held(cfg, &self.state);
        (pass.present, pass.held) = (present, held);
    }

    /// After the run and place stages: reads the platform output again and, while the
    /// children differ from the last round's, runs plan → records → run → place for the new
    /// and changed ones (the gone ones are left to the delete stage). Then strips platform
    /// placements from what is written, notes each child's parent in its status, and adds
    /// the warnings to the report. `targets` follows the config in use.
    pub(super) async fn compound_rounds<'c>(
        &mut self,
        pass: &mut Pass<'c>,
        slots: &'c [OnceCell<ValidConfig>],
        mut last: Expansion,
        targets: &mut versions::Targets,
    ) -> Result<(), EngineError> {
        if platform_names(&pass.dests).is_empty() {
            return Ok(());
        }
        for slot in &slots[1..] {
            let base = pass.base.unwrap_or(pass.cfg);
            let next = derive(
                base,
                &pass.present.held,
                &self.state,
                &self.dir,
                &pass.dests,
            );
            if next.fingerprint == last.fingerprint {
                last = next;
                break;
            }
            let changed: BTreeSet<String> = next
                .fingerprint
                .iter()
                .filter(|(k, fp)| last.fingerprint.get(*k) != Some(*fp))
                .map(|(k, _)| k.clone())
                .chain(
                    last.fingerprint
                        .keys()
                        .filter(|k| !next.fingerprint.contains_key(*k))
                        .cloned(),
                )
                .collect();
            for k in &changed {
                pass.steady.remove(k);
                pass.eligible.remove(k);
                pass.desired.remove(k);
            }
            self.use_config(pass, slot, &next);
            let cfg = pass.cfg;
            *targets = self.resolve_versions(pass);
            let steps: Vec<_> = plan::requests(
                cfg,
                &self.state.requests,
                &pass.facts,
                targets,
                &pass.present.held,
                &self.settings,
                self.backoff,
                |record| super::records::outputs_cached(&self.dir, record),
            )
            .into_iter()
            .filter(|s| changed.contains(s.request.key()))
            .collect();
            let jobs = self.admit_requests(pass, steps);
            self.note_invalid_requests(pass);
            self.run_requests(pass, jobs).await?;
            self.note_upgrades(pass, targets);
            self.place_requests(pass);
            last = next;
        }
        // Requests' platform output is config, never written to a state store (Promise-level
        // output is not fed back: it is written as before).
        let platform = platform_names(&pass.dests);
        for (key, places) in pass.desired.iter_mut() {
            if !self.state.promises.contains_key(key) {
                places.retain(|p| !platform.contains(p.destination.as_str()));
            }
        }
        for (child, parent) in &last.parents {
            if let Some(r) = self.state.requests.get_mut(child) {
                r.status.parent = Some(parent.clone());
            }
        }
        // Bad output never deletes: the descendants of a parent whose platform output could
        // not be read count as present (never deleted, never steady), as held objects do.
        if !last.unreadable.is_empty() {
            let mut keep = last.unreadable.clone();
            loop {
                let more: Vec<String> = self
                    .state
                    .requests
                    .iter()
                    .filter(|(k, r)| {
                        !keep.contains(*k)
                            && r.status.parent.as_ref().is_some_and(|p| keep.contains(p))
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                if more.is_empty() {
                    break;
                }
                keep.extend(more);
            }
            for k in keep.difference(&last.unreadable) {
                if !last.parents.contains_key(k) {
                    pass.steady.remove(k);
                    pass.present.held.insert(k.clone());
                }
            }
        }
        for w in last.warnings {
            tracing::warn!("{w}");
            if !pass.report.warnings.contains(&w) {
                pass.report.warnings.push(w);
            }
        }
        // One line per object in the report: the last round's word on it.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut objects = Vec::with_capacity(pass.report.objects.len());
        for o in std::mem::take(&mut pass.report.objects) {
            match seen.get(&o.key) {
                Some(&i) => objects[i] = o,
                None => {
                    seen.insert(o.key.clone(), objects.len());
                    objects.push(o);
                }
            }
        }
        pass.report.objects = objects;
        Ok(())
    }
}

/// `Promised-Parent: <child> -> <parent>` commit trailers for the children among `keys` (the
/// objects whose files a commit changes), sorted.
pub(super) fn parent_trailers(state: &State, keys: Option<&BTreeSet<String>>) -> Vec<String> {
    keys.into_iter()
        .flatten()
        .filter_map(|k| {
            let parent = state.requests.get(k)?.status.parent.as_ref()?;
            Some(format!("Promised-Parent: {k} -> {parent}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_marker_and_kratix_convention() {
        let l = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(is_platform(&l("promised.dev/platform", "true")));
        assert!(is_platform(&l("environment", "platform")));
        assert!(!is_platform(&l("promised.dev/platform", "false")));
        assert!(!is_platform(&l("environment", "dev")));
        assert!(!is_platform(&BTreeMap::new()));
    }
}
