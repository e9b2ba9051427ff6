//! Checks across objects: which YAML is config (README "Which YAML is config": a request
//! of a kind some Promise serves, a pipeline asset inside a Promise's folder, or a document
//! [`UnservedKinds`] decides about), duplicate identities (all copies rejected, since a Git
//! repo has no apply order), two Promises serving one API (kratix #867), `requiredPromises`
//! cycles, and health records that name no valid Promise.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use super::{Asset, Findings, Options, Rejected, UnservedKinds, ValidPromise};
use crate::config::{Candidate, Located};
use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{
    BucketStateStore, Destination, GitStateStore, HealthRecord, KRATIX_API_VERSION, ObjectRef,
    Promise,
};

/// (group, kind, Promise) of every Promise document of the repo, valid or not, whose
/// `spec.api` names a kind.
pub(super) struct ServedBy(Vec<(String, String, String)>);

impl ServedBy {
    /// The Promise whose document names `group`/`kind` in its `spec.api`, if any.
    pub(super) fn of(&self, group: &str, kind: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(g, k, _)| g == group && k == kind)
            .map(|(_, _, p)| p.clone())
    }

    /// The first (kind, Promise) serving a kind of `group`, if any.
    fn any_of_group(&self, group: &str) -> Option<(&str, &str)> {
        self.0
            .iter()
            .find(|(g, _, _)| g == group)
            .map(|(_, k, p)| (k.as_str(), p.as_str()))
    }
}

/// Sorts the request candidates (documents of no Kratix kind) by what they are: a document of
/// a kind some Promise document of the repo names in its `spec.api` (valid or not) is a
/// request (returned, in order); otherwise, inside a Promise folder it is a pipeline asset,
/// outside every Promise folder it is skipped with a warning or an error
/// ([`Options::unserved_kinds`]).
pub(super) fn classify(
    promises: &[Located<Promise>],
    undecoded_promises: &[Located<Value>],
    candidates: Vec<Candidate>,
    options: &Options,
    found: &mut Findings,
) -> (ServedBy, Vec<Candidate>, Vec<Asset>) {
    let Findings {
        rejected,
        diagnostics,
    } = found;
    // Which YAML is config: a document of a kind some Promise document of the repo names in
    // its `spec.api` (valid or not) is a request; otherwise, inside a Promise folder it is a
    // pipeline asset, outside every Promise folder it is skipped with a warning or an error.
    let promise_docs = || {
        promises.iter().map(|p| (&p.origin, &p.id, &p.raw)).chain(
            undecoded_promises
                .iter()
                .map(|p| (&p.origin, &p.id, &p.raw)),
        )
    };
    // (group, kind, Promise): a handful, so a scan beats hashing 10,000 candidates' keys.
    let served_by = ServedBy(
        promise_docs()
            .filter_map(|(_, id, raw)| {
                let api = raw.pointer("/spec/api/spec")?;
                let group = api.get("group")?.as_str()?;
                let kind = api.pointer("/names/kind")?.as_str()?;
                Some((group.to_string(), kind.to_string(), id.name.clone()))
            })
            .collect(),
    );
    // (folder, Promise name), innermost folders first; "" is the repository root.
    let mut folders: Vec<(String, String)> = promise_docs()
        .map(|(o, id, _)| (folder_of(&o.file).to_string(), id.name.clone()))
        .collect();
    folders.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    let mut assets = Vec::new();
    let mut requests_in = Vec::with_capacity(candidates.len());
    for c in candidates {
        let api_version = c.api_version().to_string();
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        if c.id.kind.is_empty() {
            // No `kind` (config::classify keeps such a document only with a metadata.name):
            // a request that lost its kind when a Promise serves the group, else not config.
            match served_by.any_of_group(group) {
                Some((kind, promise)) => {
                    let id = crate::model::ObjectRef {
                        kind: kind.to_string(),
                        ..c.id.clone()
                    };
                    let d = c.origin.diag(
                        Code::InvalidRequest,
                        Some(&id),
                        "kind",
                        format!("required field is missing: Promise {promise} serves {api_version} as kind: {kind}"),
                    );
                    rejected.push(Rejected {
                        origin: c.origin.clone(),
                        id,
                        reasons: vec![d.message.clone()],
                        promise: Some(promise.to_string()),
                    });
                    diagnostics.push(d);
                }
                None => {
                    tracing::debug!(file = %c.origin, "skipping document without kind");
                }
            }
            continue;
        }
        if served_by.of(group, &c.id.kind).is_some() {
            requests_in.push(c);
            continue;
        }
        let folder = folders
            .iter()
            .find(|(dir, _)| dir.is_empty() || c.origin.file.starts_with(&format!("{dir}/")));
        if let Some((_, promise)) = folder {
            assets.push(Asset {
                origin: c.origin,
                api_version,
                id: c.id,
                promise: promise.clone(),
            });
            continue;
        }
        let glob = match c.origin.file.rsplit_once('/') {
            Some((dir, _)) => format!("{}/**", globset::escape(dir)),
            None => globset::escape(&c.origin.file),
        };
        let hint = format!(
            "if it is not config, exclude it: `exclude: [{glob:?}]` in the daemon config, or `promised validate --exclude '{glob}'`"
        );
        let kind = &c.id.kind;
        let d = c.origin.diag(
            Code::UnservedKind,
            Some(&c.id),
            "kind",
            match options.unserved_kinds {
                UnservedKinds::Warn => format!(
                    "no Promise serves {api_version} {kind} and the file is in no Promise folder; skipped ({hint})"
                ),
                UnservedKinds::Error => format!(
                    "no Promise serves {api_version} {kind} and the file is in no Promise folder (unservedKinds: error); {hint}"
                ),
            },
        );
        match options.unserved_kinds {
            UnservedKinds::Warn => diagnostics.push(d.warning()),
            UnservedKinds::Error => {
                rejected.push(Rejected {
                    origin: c.origin.clone(),
                    id: c.id.clone(),
                    reasons: vec![d.message.clone()],
                    promise: None,
                });
                diagnostics.push(d);
            }
        }
    }
    (served_by, requests_in, assets)
}

/// Duplicate identities, across every kind (group + kind + namespace + name; a request
/// without a namespace is in `default`): every copy is rejected, naming the others. Returns
/// the (file, document) of each copy.
pub(super) fn duplicates(
    promises: &[Located<Promise>],
    destinations: &[Located<Destination>],
    git_state_stores: &[Located<GitStateStore>],
    bucket_state_stores: &[Located<BucketStateStore>],
    health_records: &[Located<HealthRecord>],
    candidates: &[Candidate],
    found: &mut Findings,
) -> BTreeSet<(String, usize)> {
    let Findings {
        rejected,
        diagnostics,
    } = found;
    let mut rejected_keys: BTreeSet<(String, usize)> = BTreeSet::new();
    // Keys borrow from the objects: at 10,000 requests this map is built on every pass.
    let mut seen: Seen<'_> =
        HashMap::with_capacity(candidates.len() + promises.len() + destinations.len());
    // Identity → its first origin, and any further ones (an empty Vec does not allocate).
    type Seen<'a> =
        HashMap<(&'a str, &'a str, Option<&'a str>, &'a str), (&'a Origin, Vec<&'a Origin>)>;
    fn add<'a>(
        seen: &mut Seen<'a>,
        key: (&'a str, &'a str, Option<&'a str>, &'a str),
        origin: &'a Origin,
    ) {
        match seen.entry(key) {
            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().1.push(origin),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((origin, Vec::new()));
            }
        }
    }
    fn note<'a>(seen: &mut Seen<'a>, api: &'a str, id: &'a ObjectRef, origin: &'a Origin) {
        let group = api.split('/').next().unwrap_or_default();
        add(
            seen,
            (group, &id.kind, id.namespace.as_deref(), &id.name),
            origin,
        );
    }
    let kratix = KRATIX_API_VERSION;
    for p in promises {
        note(&mut seen, kratix, &p.id, &p.origin);
    }
    for d in destinations {
        note(&mut seen, kratix, &d.id, &d.origin);
    }
    for s in git_state_stores {
        note(&mut seen, kratix, &s.id, &s.origin);
    }
    for s in bucket_state_stores {
        note(&mut seen, kratix, &s.id, &s.origin);
    }
    for h in health_records {
        note(&mut seen, kratix, &h.id, &h.origin);
    }
    // A request without a namespace is in `default`.
    for c in candidates {
        let group = c.api_version().split('/').next().unwrap_or_default();
        let ns = c.id.namespace.as_deref().or(Some("default"));
        add(&mut seen, (group, &c.id.kind, ns, &c.id.name), &c.origin);
    }
    // (group, kind, namespace, name) of each duplicated identity, with its origins.
    type DupKey = (String, String, Option<String>, String);
    let mut dup_entries: Vec<(DupKey, Vec<Origin>)> = seen
        .into_iter()
        .filter(|(_, (_, more))| !more.is_empty())
        .map(|((g, k, ns, n), (first, more))| {
            (
                (
                    g.to_string(),
                    k.to_string(),
                    ns.map(str::to_string),
                    n.to_string(),
                ),
                {
                    let mut v: Vec<Origin> = std::iter::once(first).chain(more).cloned().collect();
                    v.sort();
                    v
                },
            )
        })
        .collect();
    dup_entries.sort();
    for ((_, kind, ns, name), origins) in dup_entries {
        let id = ObjectRef {
            kind,
            namespace: ns,
            name,
        };
        for o in &origins {
            let others: Vec<String> = origins
                .iter()
                .filter(|x| *x != o)
                .map(|x| x.to_string())
                .collect();
            let d = o.diag(
                Code::DuplicateIdentity,
                Some(&id),
                "metadata.name",
                format!("duplicate object: also defined at {}", others.join(", ")),
            );
            // Rejected, not absent: a duplicated object keeps what it applied before.
            rejected.push(Rejected {
                origin: o.clone(),
                id: id.clone(),
                reasons: vec![d.message.clone()],
                promise: None,
            });
            diagnostics.push(d);
            rejected_keys.insert((o.file.clone(), o.document));
        }
    }
    rejected_keys
}

/// The Promises of `valid_promises` whose API no other serves. Two Promises serving one API
/// are both unusable (kratix #867): each is rejected, and its API noted in `rejected_apis`.
pub(super) fn reject_duplicate_apis(
    valid_promises: Vec<ValidPromise>,
    rejected_apis: &mut Vec<(String, String, String)>,
    found: &mut Findings,
) -> Vec<ValidPromise> {
    let Findings {
        rejected,
        diagnostics,
    } = found;
    let mut by_gk: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, p) in valid_promises.iter().enumerate() {
        if let Some(api) = &p.api {
            by_gk
                .entry((api.group.clone(), api.kind.clone()))
                .or_default()
                .push(i);
        }
    }
    let mut drop_idx = BTreeSet::new();
    for ((group, kind), idx) in by_gk.iter().filter(|(_, v)| v.len() > 1) {
        for &i in idx {
            let p = &valid_promises[i];
            let others: Vec<String> = idx
                .iter()
                .filter(|&&j| j != i)
                .map(|&j| valid_promises[j].name().to_string())
                .collect();
            let d = p.promise.origin.diag(
                Code::DuplicateApi,
                Some(&p.promise.id),
                "spec.api.spec.names.kind",
                format!(
                    "{group}/{kind} is also served by Promise {}",
                    others.join(", ")
                ),
            );
            rejected.push(Rejected {
                origin: p.promise.origin.clone(),
                id: p.promise.id.clone(),
                reasons: vec![d.message.clone()],
                promise: None,
            });
            rejected_apis.push((group.clone(), kind.clone(), p.name().to_string()));
            diagnostics.push(d);
            drop_idx.insert(i);
        }
    }
    valid_promises
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop_idx.contains(i))
        .map(|(_, p)| p)
        .collect()
}

/// The Promises of `valid_promises` on no `requiredPromises` cycle. Every Promise on a cycle
/// is rejected, naming the chain, and its API noted in `rejected_apis`.
pub(super) fn reject_required_promise_cycles(
    valid_promises: Vec<ValidPromise>,
    rejected_apis: &mut Vec<(String, String, String)>,
    found: &mut Findings,
) -> Vec<ValidPromise> {
    let Findings {
        rejected,
        diagnostics,
    } = found;
    // `requiredPromises` cycles: a Promise waits for one that waits for it, so neither ever
    // becomes available and their requests would stay Pending forever. Every Promise on a
    // cycle is rejected, naming the chain.
    let cycles = required_promise_cycles(&valid_promises);
    valid_promises
        .into_iter()
        .filter_map(|p| {
            let Some(chain) = cycles.get(p.name()) else {
                return Some(p);
            };
            let d = p.promise.origin.diag(
                Code::RequiredPromiseCycle,
                Some(&p.promise.id),
                "spec.requiredPromises",
                format!(
                    "requiredPromises form a cycle: {chain}; none of them can become available"
                ),
            );
            if let Some(api) = &p.api {
                rejected_apis.push((api.group.clone(), api.kind.clone(), p.name().to_string()));
            }
            rejected.push(Rejected {
                origin: p.promise.origin.clone(),
                id: p.promise.id.clone(),
                reasons: vec![d.message.clone()],
                promise: None,
            });
            diagnostics.push(d);
            None
        })
        .collect()
}

/// Health records must name a valid Promise and a request by `resourceRef.name` and
/// `namespace` (warnings: they only feed status; README "Health").
pub(super) fn check_health_records(
    health_records: &[Located<HealthRecord>],
    valid_promises: &[ValidPromise],
    diagnostics: &mut Vec<Diagnostic>,
) {
    for h in health_records {
        let pname = h
            .object
            .data
            .promise_ref
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if h.object.data.resource().is_none() {
            diagnostics.push(
                h.origin
                    .diag(
                        Code::InvalidField,
                        Some(&h.id),
                        "data.resourceRef",
                        "needs name and namespace; the record concerns no request",
                    )
                    .warning(),
            );
        }
        if !valid_promises.iter().any(|p| p.name() == pname) {
            diagnostics.push(
                h.origin
                    .diag(
                        Code::InvalidField,
                        Some(&h.id),
                        "data.promiseRef.name",
                        format!("Promise {pname:?} does not exist"),
                    )
                    .warning(),
            );
        }
    }
}

/// The folder of a repository-relative file (`""` at the root): a Promise's folder is the
/// folder of the file that holds it.
pub fn folder_of(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Promises on a `requiredPromises` cycle (among `promises`), each with its chain
/// (`a → b → a`, starting at itself). Requirements on Promises outside `promises` are not
/// edges (a missing Promise is a warning of its own).
fn required_promise_cycles(promises: &[ValidPromise]) -> BTreeMap<String, String> {
    let edges: BTreeMap<&str, Vec<&str>> = promises
        .iter()
        .map(|p| {
            (
                p.name(),
                p.promise
                    .object
                    .spec
                    .required_promises
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect(),
            )
        })
        .collect();
    let mut out = BTreeMap::new();
    for &start in edges.keys() {
        // Depth-first search for a path back to `start`.
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some((node, i)) = stack.last().copied() {
            let next = edges.get(node).and_then(|e| e.get(i)).copied();
            let Some(next) = next else {
                stack.pop();
                continue;
            };
            stack.last_mut().expect("non-empty").1 += 1;
            if next == start {
                let mut chain: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
                chain.push(start);
                out.insert(start.to_string(), chain.join(" → "));
                break;
            }
            if edges.contains_key(next) && seen.insert(next) {
                stack.push((next, 0));
            }
        }
    }
    out
}
