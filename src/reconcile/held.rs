//! A config file that does not load never removes anything.
//!
//! Flux's rule (a bad render never prunes), applied per file: when a config file fails to
//! read or parse (bad YAML, not UTF-8, over [`crate::config::MAX_FILE_BYTES`], unreadable),
//! every object it held at the last good load stays present with its last good version:
//!
//! 1. [`restore`] puts the last good documents back into the loaded objects before
//!    validation: Promises from their records' `promise` document, requests from their
//!    records' `object`, Destinations and state stores from
//!    [`crate::state::State::infra_documents`]. A Promise's requests therefore keep running
//!    on the last good Promise, and placements on a Destination of the broken file stay.
//! 2. [`Held::of`] names the records that are held: those whose `status.source` is in a file
//!    that did not load, those whose origin is unknown (rebuilt from a state store's
//!    ownership index: with a fresh state directory the indexes are the authority, and every
//!    file they list is kept while any config file does not load), and the requests of a held
//!    Promise that could not be restored. The engine runs no delete workflow for them, prunes
//!    nothing of them, and sets `Reconciled=False` reason [`REASON`] with the file's error.
//!
//! Only removing the file (or the object from a file that loads) deletes. An object whose
//! deletion was under way before its file broke is neither restored nor held; a Promise whose
//! requests are held is not deleted until they are not; a Destination with `cleanup: all`
//! that is gone while any file does not load is not retired.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::config::{Document, Objects, classify};
use crate::diag::Origin;
use crate::state::State;
use crate::validate::ValidConfig;

/// `Reconciled` condition reason of a held object (promised's own; Kratix has no config files).
pub const REASON: &str = "ConfigFileInvalid";

/// Start of a held object's `status.message`.
pub const MESSAGE_PREFIX: &str = "Failing: config file ";

/// The file part of a `status.source` (`requests/a.yaml[0]` → `requests/a.yaml`).
pub fn source_file(source: &str) -> &str {
    parse_source(source).map_or(source, |o| o.0)
}

fn parse_source(source: &str) -> Option<(&str, usize)> {
    let (file, rest) = source.rsplit_once('[')?;
    let doc = rest.strip_suffix(']')?.parse().ok()?;
    Some((file, doc))
}

/// Puts back into `objects` the last good version of each Promise, request, Destination and
/// state store of a file that did not load (see the module docs), unless an object with the
/// same identity loaded from another file. Returns how many documents were restored.
pub fn restore(objects: &mut Objects, state: &State) -> usize {
    let broken: BTreeSet<String> = crate::config::unloadable_files(&objects.diagnostics)
        .into_keys()
        .map(str::to_string)
        .collect();
    if broken.is_empty() {
        return 0;
    }
    let promises: HashSet<&str> = objects
        .promises
        .iter()
        .map(|p| p.id.name.as_str())
        .collect();
    let requests: HashSet<(&str, &str, &str)> = objects
        .candidates
        .iter()
        .map(|c| {
            (
                c.id.kind.as_str(),
                c.id.namespace.as_deref().unwrap_or("default"),
                c.id.name.as_str(),
            )
        })
        .collect();
    let infra: HashSet<(&str, &str)> = objects
        .destinations
        .iter()
        .map(|d| ("Destination", d.id.name.as_str()))
        .chain(
            objects
                .git_state_stores
                .iter()
                .map(|s| ("GitStateStore", s.id.name.as_str())),
        )
        .chain(
            objects
                .bucket_state_stores
                .iter()
                .map(|s| ("BucketStateStore", s.id.name.as_str())),
        )
        .collect();
    let mut docs = Vec::new();
    let mut push = |file: &str, document: usize, value: Arc<Value>| {
        docs.push(Document {
            origin: Origin {
                file: file.to_string(),
                document,
            },
            doc: value.into(),
            blob: None,
        })
    };
    // An object whose deletion is under way (it left the config repo earlier) is never
    // restored: its deletion goes on.
    for rec in state.promises.values().filter(|r| !r.deleting) {
        let (Some((file, document)), Some(doc)) =
            (parse_source(&rec.status.source), rec.promise.as_ref())
        else {
            continue;
        };
        if broken.contains(file) && !promises.contains(rec.status.object.name.as_str()) {
            push(file, document, Arc::new(doc.clone()));
        }
    }
    for rec in state.requests.values().filter(|r| !r.deleting) {
        let Some((file, document)) = parse_source(&rec.status.source) else {
            continue;
        };
        let id = &rec.status.object;
        let ns = id.namespace.as_deref().unwrap_or("default");
        if broken.contains(file)
            && !rec.object.is_null()
            && !id.kind.is_empty()
            && !requests.contains(&(id.kind.as_str(), ns, id.name.as_str()))
        {
            push(file, document, Arc::clone(&rec.object));
        }
    }
    for (file, documents) in &state.infra_documents {
        if !broken.contains(file) {
            continue;
        }
        for (document, doc) in documents {
            let kind = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
            let name = doc
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !infra.contains(&(kind, name)) {
                push(file, *document, Arc::new(doc.clone()));
            }
        }
    }
    let restored = docs.len();
    if restored == 0 {
        return 0;
    }
    let extra = classify(docs);
    for p in &extra.promises {
        tracing::warn!(file = %p.origin.file, promise = %p.id.name,
            "config file does not load: keeping the last good Promise");
    }
    objects.promises.extend(extra.promises);
    objects.candidates.extend(extra.candidates);
    objects.destinations.extend(extra.destinations);
    objects.git_state_stores.extend(extra.git_state_stores);
    objects
        .bucket_state_stores
        .extend(extra.bucket_state_stores);
    objects.diagnostics.extend(extra.diagnostics);
    restored
}

/// The last good Destination and state store documents of every file `cfg` loaded, with
/// those of files that did not load carried over from `before`.
pub fn infra_documents(
    cfg: &ValidConfig,
    before: &BTreeMap<String, BTreeMap<usize, Value>>,
) -> BTreeMap<String, BTreeMap<usize, Value>> {
    let mut out: BTreeMap<String, BTreeMap<usize, Value>> = BTreeMap::new();
    let located = cfg
        .destinations
        .iter()
        .map(|d| (&d.origin, &d.raw))
        .chain(cfg.git_state_stores.iter().map(|s| (&s.origin, &s.raw)))
        .chain(cfg.bucket_state_stores.iter().map(|s| (&s.origin, &s.raw)));
    for (origin, raw) in located {
        out.entry(origin.file.clone())
            .or_default()
            .insert(origin.document, (**raw).clone());
    }
    for (file, docs) in before {
        if cfg.unloadable.contains_key(file) {
            out.entry(file.clone()).or_insert_with(|| docs.clone());
        }
    }
    out
}

/// Records held at their last good version in one pass: key → the `status.message` to show.
#[derive(Debug, Default)]
pub struct Held {
    /// State key (`promise/<name>` or `<promise>/<namespace>/<name>`) → message.
    pub keys: BTreeMap<String, String>,
}

impl Held {
    /// Which of `state`'s records are held: those whose source file did not load (restored or
    /// not), those of unknown origin that are not `present` in `cfg`, and the absent requests
    /// of a held Promise that could not be restored. `present` answers for a key, its record
    /// and whether it is a request. Empty when every config file loaded.
    pub fn of(
        cfg: &ValidConfig,
        state: &State,
        present: impl Fn(&str, &crate::state::ObjectRecord, bool) -> bool,
    ) -> Held {
        let mut held = Held::default();
        let Some((first_file, first_error)) = cfg.unloadable.iter().next() else {
            return held;
        };
        let why = |source: &str, is_present: bool| -> Option<String> {
            if source.is_empty() {
                return (!is_present).then(|| {
                    format!(
                        "{MESSAGE_PREFIX}{first_file} does not load ({first_error}); kept because the file it came from is unknown (rebuilt from a state store's index)"
                    )
                });
            }
            let file = source_file(source);
            cfg.unloadable.get(file).map(|e| {
                format!(
                    "{MESSAGE_PREFIX}{file} does not load ({e}); the last good version is kept and nothing of it is pruned"
                )
            })
        };
        let mut absent_promises: BTreeMap<&str, String> = BTreeMap::new();
        for (key, rec) in state.promises.iter().filter(|(_, r)| !r.deleting) {
            let is_present = present(key, rec, false);
            if let Some(msg) = why(&rec.status.source, is_present) {
                if !is_present {
                    absent_promises.insert(rec.status.object.name.as_str(), msg.clone());
                }
                held.keys.insert(key.clone(), msg);
            }
        }
        for (key, rec) in state.requests.iter().filter(|(_, r)| !r.deleting) {
            let is_present = present(key, rec, true);
            let msg = why(&rec.status.source, is_present).or_else(|| {
                (!is_present)
                    .then(|| absent_promises.get(rec.status.promise.as_str()))
                    .flatten()
                    .map(|m| format!("{m} (the file of Promise {})", rec.status.promise))
            });
            if let Some(msg) = msg {
                held.keys.insert(key.clone(), msg);
            }
        }
        held
    }

    /// True when `key` is held.
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }
}
