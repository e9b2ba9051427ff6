//! The `kustomization` rule: a directory with a kustomization file must list what exists and
//! what it needs.
//!
//! What kustomize does (and Flux and Argo CD with it, `users-and-peers.md` §3.1–3.2):
//! - every local entry of `resources` (and the older `bases`, and `components`) must exist: a
//!   file, or a directory that has a kustomization file of its own; otherwise `kubectl
//!   kustomize` fails (`accumulating resources … must be a file or a directory with a
//!   kustomization`);
//! - a YAML file in the directory (or in a sub-directory without its own kustomization file)
//!   that nothing lists is never applied: Flux generates a kustomization only where there is
//!   none, and Argo CD hands the directory to kustomize as it is.
//!
//! Remote entries (`https://…`, `github.com/…`, `git@…`, anything with `://` or `?ref=`) are
//! not checked. A path is "listed" when any string of the kustomization file names it (so
//! patches, generators' `files` and `configurations` count).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::KUSTOMIZATION_FILES;

/// `(file, message)` per problem, over all kustomization files among `files` (store-relative
/// paths, each with any value), whose content `content(path)` reads (`None`: skipped).
pub(super) fn check<V>(
    files: &BTreeMap<&str, V>,
    content: impl Fn(&str) -> Option<Vec<u8>>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let kdirs: BTreeMap<String, &str> = files
        .keys()
        .filter_map(|p| {
            let (dir, base) = split(p);
            KUSTOMIZATION_FILES
                .contains(&base)
                .then(|| (dir.to_string(), *p))
        })
        .collect();
    if kdirs.is_empty() {
        return out; // the common case: nothing to check, and no directory set to build
    }
    let dirs: BTreeSet<String> = files.keys().flat_map(|p| ancestors(p)).collect();
    for (dir, kfile) in &kdirs {
        let Some(bytes) = content(kfile) else {
            continue;
        };
        let doc = match super::parse_yaml(&bytes) {
            Ok(mut docs) if docs.len() <= 1 => docs.pop().unwrap_or(Value::Null),
            Ok(_) => {
                out.push((
                    kfile.to_string(),
                    "a kustomization file holds one document".into(),
                ));
                continue;
            }
            Err(e) => {
                out.push((kfile.to_string(), e));
                continue;
            }
        };
        let mut listed: BTreeSet<String> = BTreeSet::new();
        strings(&doc, &mut |s| {
            if let Some(p) = resolve(dir, s) {
                listed.insert(p);
            }
        });
        for key in ["resources", "bases", "components"] {
            for entry in doc
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if is_remote(entry) {
                    continue;
                }
                let Some(target) = resolve(dir, entry) else {
                    out.push((
                        kfile.to_string(),
                        format!("{key} entry {entry:?} leaves the state store"),
                    ));
                    continue;
                };
                if files.contains_key(target.as_str()) {
                    continue;
                }
                if dirs.contains(&target) || target.is_empty() {
                    if !kdirs.contains_key(&target) {
                        out.push((
                            kfile.to_string(),
                            format!(
                                "{key} entry {entry:?} is a directory without a kustomization file: kubectl kustomize fails"
                            ),
                        ));
                    }
                    continue;
                }
                out.push((
                    kfile.to_string(),
                    format!("{key} entry {entry:?} does not exist: kubectl kustomize fails"),
                ));
            }
        }
        // YAML files this kustomization is responsible for but does not list.
        for path in files.keys() {
            let (fdir, base) = split(path);
            let yaml = base.ends_with(".yaml") || base.ends_with(".yml");
            if !yaml || KUSTOMIZATION_FILES.contains(&base) || !within(fdir, dir) {
                continue;
            }
            // The nearest kustomization above the file is someone else's.
            if nearest_kdir(fdir, &kdirs) != Some(dir.as_str()) {
                continue;
            }
            let covered = listed
                .iter()
                .any(|l| l == path || (kdirs.contains_key(l) && within(fdir, l)));
            if !covered {
                out.push((
                    path.to_string(),
                    format!(
                        "not listed in {kfile}: kustomize (and Flux and Argo CD with it) never applies it"
                    ),
                ));
            }
        }
    }
    out
}

/// `(directory, base name)`; the directory of a top-level file is `""`.
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// Every directory above `path` (`a/b/c.yaml` → `a`, `a/b`).
fn ancestors(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = path;
    while let Some((dir, _)) = cur.rsplit_once('/') {
        out.push(dir.to_string());
        cur = dir;
    }
    out
}

/// `dir` is `root` or below it.
fn within(dir: &str, root: &str) -> bool {
    root.is_empty() || dir == root || dir.starts_with(&format!("{root}/"))
}

/// The deepest directory at or above `dir` that has a kustomization file.
fn nearest_kdir<'a>(dir: &str, kdirs: &'a BTreeMap<String, &str>) -> Option<&'a str> {
    kdirs
        .keys()
        .filter(|k| within(dir, k))
        .max_by_key(|k| k.len())
        .map(String::as_str)
}

fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.contains("?ref=")
        || entry.starts_with("github.com/")
        || entry.starts_with("git@")
}

/// `entry` relative to `dir`, normalised (`./`, `..`); `None` when it climbs above the root or
/// is absolute.
fn resolve(dir: &str, entry: &str) -> Option<String> {
    if entry.starts_with('/') || is_remote(entry) {
        return None;
    }
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for seg in entry.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

/// Calls `f` with every string in `v`.
fn strings(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, f)),
        Value::Object(m) => m.values().for_each(|x| strings(x, f)),
        _ => {}
    }
}
