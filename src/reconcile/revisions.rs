//! Promise revisions: every version of a Promise promised applied, kept in the state directory
//! so that a request pinned to an older version runs with that version's spec and scripts.
//!
//! Kratix keeps one `PromiseRevision` per `kratix.io/promise-version` with the whole
//! `Promise.spec`, create-or-updated on every Promise reconcile; re-applying a version
//! overwrites its revision (kratix-lifecycle.md §2.1, kratix-contract.md §7). promised keeps,
//! per Promise and version, under `<stateDir>/revisions/<promise>/`:
//!
//! | path | what |
//! |---|---|
//! | `<version>.json` | [`Revision`]: the whole Promise document, the input hash of its promise workflow, the fingerprint of its resource pipelines' image overrides and image digests, its folder's path in the config repo, the config commit it was last applied from |
//! | `<version>.tree/` | a copy of the Promise folder (the scripts mounted at `/promise`), bounded like input hashes ([`super::TREE_CONTENT_BUDGET`], [`super::TREE_MAX_ENTRIES`]) |
//!
//! A version name that is not a plain file name (`[A-Za-z0-9._-]`, not `.`/`..`) is stored
//! under its hex encoding. A revision is rewritten only when its inputs change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::Promise;
use crate::state::{StateError, write_atomic};
use crate::validate::ValidPromise;

/// One applied version of a Promise (Kratix: `PromiseRevision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// Promise name.
    pub promise: String,
    /// Its `kratix.io/promise-version` label.
    pub version: String,
    /// The whole Promise document as applied.
    pub document: Value,
    /// Input hash of its promise workflow (spec, overrides, folder, image digests): requests
    /// pinned to it hash against this, so they stay steady while the Promise moves on.
    pub promise_hash: String,
    /// Image overrides and image digests of its resource pipelines, as hashed then.
    pub resource_fingerprint: String,
    /// The Promise folder in the config repo (`promises/redis`), when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Why the folder's copy was not kept (too large, unreadable): a request cannot run at
    /// this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_error: Option<String>,
    /// Config commit it was last applied from (Git sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_commit: Option<String>,
    /// RFC 3339 time it was last written.
    pub applied_at: String,
}

/// What a request needs to run at a revision.
#[derive(Debug, Clone)]
pub(super) struct RevisionRun {
    /// The revision's Promise (no schema: the CRD always comes from the current Promise).
    pub promise: Arc<ValidPromise>,
    /// Its folder's copy, mounted at `/promise`.
    pub dir: Option<PathBuf>,
    /// [`Revision::promise_hash`].
    pub promise_hash: String,
    /// [`Revision::resource_fingerprint`].
    pub resource_fingerprint: String,
}

/// The revisions of a state directory, read lazily and cached.
#[derive(Debug)]
pub(super) struct Revisions {
    root: PathBuf,
    cache: BTreeMap<(String, String), Option<Revision>>,
    /// The config repository's history and each Promise's file in this pass: where a missing
    /// revision is rebuilt from ([`Revisions::set_history`]).
    history: Option<(crate::config::history::History, BTreeMap<String, String>)>,
    /// `(promise, version, head)` searched for in vain: not searched again at that head.
    missed: std::collections::BTreeSet<(String, String, String)>,
}

impl Revisions {
    /// The revisions under `<state_dir>/revisions`.
    pub fn new(state_dir: &Path) -> Self {
        Revisions {
            root: state_dir.join("revisions"),
            cache: BTreeMap::new(),
            history: None,
            missed: Default::default(),
        }
    }

    /// Where missing revisions come from in this pass: the config repository's `history`
    /// (Git sources) and `files`, Promise name → its file in the repository.
    pub fn set_history(
        &mut self,
        history: Option<crate::config::history::History>,
        files: BTreeMap<String, String>,
    ) {
        self.history = history.map(|h| (h, files));
    }

    /// Rebuilds the revision of `promise` at `version` from the config repository's
    /// history (a fresh host: README "Promise versions and ResourceBindings"): the newest
    /// commit whose Promise file has that version, its document and folder. Its input
    /// hashes are unknown (empty), so a request pinned to it runs once more. `None` when
    /// history has no such version or the revision cannot be written.
    fn rebuild(&mut self, promise: &str, version: &str) -> Option<()> {
        let (history, files) = self.history.as_ref()?;
        let file = files.get(promise)?.clone();
        let miss = (
            promise.to_string(),
            version.to_string(),
            history.head.clone(),
        );
        if self.missed.contains(&miss) {
            return None;
        }
        let Some(found) = history.find(&file, promise, version) else {
            self.missed.insert(miss);
            return None;
        };
        let folder = file
            .rsplit_once('/')
            .map(|(d, _)| d.to_string())
            .unwrap_or_default();
        let staged = tempfile::tempdir().ok()?;
        let dir = staged.path().join("folder");
        if let Err(e) = history.export(&found.commit, &folder, &dir) {
            tracing::warn!(promise, version, error = %e, "cannot export an older Promise version from the config history");
            return None;
        }
        let rev = Revision {
            promise: promise.to_string(),
            version: version.to_string(),
            document: found.document,
            promise_hash: String::new(),
            resource_fingerprint: String::new(),
            folder: Some(folder),
            tree_error: None,
            config_commit: Some(found.commit.clone()),
            applied_at: crate::status::now_rfc3339(),
        };
        self.cache
            .remove(&(promise.to_string(), version.to_string()));
        if let Err(e) = self.save(rev, Some(&dir)) {
            tracing::warn!(promise, version, error = %e, "cannot save a revision rebuilt from the config history");
            return None;
        }
        tracing::info!(promise, version, commit = %found.commit, "revision rebuilt from the config history");
        Some(())
    }

    fn base(&self, promise: &str, version: &str) -> PathBuf {
        self.root.join(file_name(promise)).join(file_name(version))
    }

    /// The copy of the revision's Promise folder.
    pub fn tree_dir(&self, promise: &str, version: &str) -> PathBuf {
        let mut p = self.base(promise, version).into_os_string();
        p.push(".tree");
        p.into()
    }

    /// The revision of `promise` at `version`, when one was kept.
    pub fn get(&mut self, promise: &str, version: &str) -> Option<&Revision> {
        let key = (promise.to_string(), version.to_string());
        if !self.cache.contains_key(&key) {
            let mut path = self.base(promise, version).into_os_string();
            path.push(".json");
            let rev = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Revision>(&b).ok());
            self.cache.insert(key.clone(), rev);
        }
        self.cache.get(&key).and_then(Option::as_ref)
    }

    /// Versions of `promise` kept, sorted (for error messages).
    pub fn versions(&self, promise: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.join(file_name(promise))) else {
            return Vec::new();
        };
        let mut v: Vec<String> = dir
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let stem = n.strip_suffix(".json")?;
                std::fs::read(e.path())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Revision>(&b).ok())
                    .map(|r| r.version)
                    .or_else(|| Some(stem.to_string()))
            })
            .collect();
        v.sort();
        v
    }

    /// Create-or-update the revision `rev`, copying the Promise folder `folder_dir` when the
    /// revision's inputs changed (Kratix overwrites a re-applied version's revision). Errors
    /// when the state directory cannot be written.
    pub fn save(&mut self, mut rev: Revision, folder_dir: Option<&Path>) -> Result<(), StateError> {
        if let Some(old) = self.get(&rev.promise, &rev.version)
            && old.promise_hash == rev.promise_hash
            && old.resource_fingerprint == rev.resource_fingerprint
            && old.document == rev.document
            && old.folder == rev.folder
        {
            return Ok(());
        }
        let base = self.base(&rev.promise, &rev.version);
        let parent = base.parent().expect("under the revisions directory");
        std::fs::create_dir_all(parent).map_err(|source| StateError::Io {
            path: parent.display().to_string(),
            source,
        })?;
        let tree = self.tree_dir(&rev.promise, &rev.version);
        rev.tree_error = None;
        if let Some(src) = folder_dir {
            let staged = tree.with_extension("tree.new");
            let _ = std::fs::remove_dir_all(&staged);
            match copy_tree(src, &staged) {
                Ok(()) => {
                    let _ = std::fs::remove_dir_all(&tree);
                    std::fs::rename(&staged, &tree).map_err(|source| StateError::Io {
                        path: tree.display().to_string(),
                        source,
                    })?;
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&staged);
                    let _ = std::fs::remove_dir_all(&tree);
                    rev.tree_error = Some(e);
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&tree);
        }
        let mut path = base.into_os_string();
        path.push(".json");
        let bytes = serde_json::to_vec_pretty(&rev).expect("revision serialises");
        write_atomic(Path::new(&path), &bytes)?;
        self.cache
            .insert((rev.promise.clone(), rev.version.clone()), Some(rev));
        Ok(())
    }

    /// What a request needs to run at `promise`'s `version`, or why it cannot (no revision,
    /// or its folder was not kept).
    pub fn run_at(&mut self, promise: &str, version: &str) -> Result<RevisionRun, String> {
        let dir = self.tree_dir(promise, version);
        if self.get(promise, version).is_none() {
            let _ = self.rebuild(promise, version);
        }
        let Some(rev) = self.get(promise, version) else {
            let known = self.versions(promise);
            return Err(format!(
                "Promise {promise} has no revision at version {version} (versions applied: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if let Some(e) = &rev.tree_error {
            return Err(format!(
                "the scripts of Promise {promise} at version {version} were not kept ({e}), so it cannot run at that version"
            ));
        }
        let promise_obj: Promise = serde_json::from_value(rev.document.clone())
            .map_err(|e| format!("revision {version} of Promise {promise} does not load: {e}"))?;
        let valid = super::delete::rebuild_valid_promise(promise_obj, rev.document.clone());
        Ok(RevisionRun {
            promise: Arc::new(valid),
            dir: rev.folder.is_some().then_some(dir).filter(|d| d.is_dir()),
            promise_hash: rev.promise_hash.clone(),
            resource_fingerprint: rev.resource_fingerprint.clone(),
        })
    }
}

/// `name` when it is a plain file name, else `hex-<hex of name>`.
fn file_name(name: &str) -> String {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.starts_with("hex-")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        name.to_string()
    } else {
        format!("hex-{}", hex::encode(name))
    }
}

/// Copies the tree at `src` to `dst` (files with their mode, symlinks as links), skipping
/// hidden directories; errors (as text) when it exceeds the input-hash bounds.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), String> {
    let mut budget = super::TREE_CONTENT_BUDGET;
    let mut entries = 0usize;
    let walk = walkdir::WalkDir::new(src)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir() && e.file_name().to_string_lossy().starts_with('.'))
        });
    for e in walk {
        let e = e.map_err(|e| e.to_string())?;
        entries += 1;
        if entries > super::TREE_MAX_ENTRIES {
            return Err(format!(
                "the Promise folder has more than {} entries",
                super::TREE_MAX_ENTRIES
            ));
        }
        let rel = e.path().strip_prefix(src).unwrap_or(e.path());
        let to = dst.join(rel);
        let io = |err: std::io::Error| format!("{}: {err}", e.path().display());
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&to).map_err(io)?;
        } else if e.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(io)?;
            std::os::unix::fs::symlink(target, &to).map_err(io)?;
        } else if e.file_type().is_file() {
            let len = e.metadata().map_err(|err| err.to_string())?.len();
            if len > budget {
                return Err(format!(
                    "the Promise folder holds more than {} bytes",
                    super::TREE_CONTENT_BUDGET
                ));
            }
            budget -= len;
            std::fs::copy(e.path(), &to).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_file_names_or_hex() {
        assert_eq!(file_name("v1.2.0"), "v1.2.0");
        assert_eq!(file_name("../x"), format!("hex-{}", hex::encode("../x")));
        assert_eq!(file_name(".."), format!("hex-{}", hex::encode("..")));
        assert_ne!(file_name("hex-31"), "hex-31");
    }
}
