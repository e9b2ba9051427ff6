//! Inputs of a workflow: the input hashes that decide whether it runs again ([`promise_hash`],
//! [`request_hash`], [`override_fingerprint`]) and, beyond the config objects, the object's current status as a pipeline
//! reads it in `/kratix/input/object.yaml`, and fingerprints of the host files a pipeline runs
//! (the Promise folder mounted at `/promise`, image-override mounts) for the input hash.
//!
//! Tree fingerprints are bounded, per tree: at most [`TREE_MAX_ENTRIES`] entries are walked
//! (in file-name order; the rest of a larger tree does not count), and file contents are hashed
//! until [`TREE_CONTENT_BUDGET`] bytes were read; later files count by path, mode and size only,
//! so an edit that keeps such a file's size is not noticed. Hidden directories (`.git`,
//! `.promised`, …) and the state directory are skipped. Symlinks are not followed (their
//! target text counts).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::source::CompiledFilter;
use crate::pipeline::{WorkflowType, merge_status};
use crate::status::ObjectStatus;
use crate::validate::to_yaml;

use crate::model::Pipeline;
use crate::pipeline::RunnerConfig;
use crate::state::{HashText, sha256_hex};
use crate::validate::{ValidPromise, ValidRequest};

use super::{parent_dir, promise_dir};

/// Bumped when the engine's output for the same inputs changes, to force re-runs.
const ENGINE_VERSION: &str = "promised-engine-1";

/// Bytes of file content hashed per tree (16 MiB); later files count by path, mode and size
/// only. Hidden directories and the state directory are skipped; symlinks are not followed.
pub const TREE_CONTENT_BUDGET: u64 = 16 * 1024 * 1024;
/// Entries walked per tree (in file-name order); entries beyond this do not count.
pub const TREE_MAX_ENTRIES: usize = 10_000;

/// `status` as Kratix keeps it on the object (kratix-contract.md §2.4, §5): `message`,
/// `conditions`, the workflow counters, then every key pipelines wrote to `status.yaml`
/// (their `conditions` merged by type).
pub fn kratix_status(status: &ObjectStatus) -> Map<String, Value> {
    let mut s = Map::new();
    if !status.message.is_empty() {
        s.insert("message".into(), status.message.clone().into());
    }
    if let Some(st) = &status.status {
        s.insert("status".into(), st.as_str().into());
    }
    if !status.conditions.is_empty() {
        s.insert(
            "conditions".into(),
            serde_json::to_value(&status.conditions).unwrap_or_default(),
        );
    }
    s.insert("workflows".into(), status.workflows.into());
    s.insert(
        "workflowsSucceeded".into(),
        status.workflows_succeeded.into(),
    );
    s.insert("workflowsFailed".into(), status.workflows_failed.into());
    if let Some(t) = &status.last_successful_configure_workflow_time {
        s.insert(
            "lastSuccessfulConfigureWorkflowTime".into(),
            t.as_str().into(),
        );
    }
    if let Some(v) = &status.promise_version {
        s.insert("promiseVersion".into(), v.as_str().into());
    }
    if let Some(v) = &status.resource_binding_version {
        s.insert("resourceBindingVersion".into(), v.as_str().into());
    }
    if let Some(h) = &status.health_status {
        // Kratix's shape (kratix-lifecycle.md §1.2): `state` and `healthRecords`.
        let records: Vec<Value> = h
            .health_records
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("state".into(), r.state.as_str().into());
                if let Some(t) = r.last_run {
                    m.insert("lastRun".into(), t.into());
                }
                m.insert(
                    "source".into(),
                    serde_json::to_value(&r.source).unwrap_or_default(),
                );
                if let Some(d) = &r.details {
                    m.insert("details".into(), d.clone());
                }
                Value::Object(m)
            })
            .collect();
        let mut hs = Map::new();
        hs.insert("state".into(), h.state.as_str().into());
        hs.insert("healthRecords".into(), Value::Array(records));
        s.insert("healthStatus".into(), Value::Object(hs));
    }
    merge_status(
        &s,
        &crate::status::fields_map(&status.fields),
        WorkflowType::Resource,
    )
}

/// `/kratix/input/object.yaml` for `object` with its current status (sorted keys).
pub fn object_yaml(object: &Value, status: &ObjectStatus) -> String {
    let mut obj = object.clone();
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), Value::Object(kratix_status(status)));
    }
    to_yaml(&obj)
}

/// Fingerprints of host trees, computed at most once per pass.
#[derive(Debug, Default)]
pub struct TreeHashes {
    /// The state directory (never part of a fingerprint).
    state_dir: Option<PathBuf>,
    cache: BTreeMap<(PathBuf, bool), String>,
}

impl TreeHashes {
    /// An empty cache; `state_dir` is skipped when it lies inside a tree.
    pub fn new(state_dir: &Path) -> Self {
        TreeHashes {
            state_dir: state_dir.canonicalize().ok(),
            cache: BTreeMap::new(),
        }
    }

    /// Fingerprint of a Promise folder: every file the config loader does not read as config
    /// (`config` matches `<prefix>/<path>`), i.e. scripts and templates.
    pub fn promise_folder(
        &mut self,
        dir: &Path,
        prefix: &str,
        config: Option<&CompiledFilter>,
    ) -> String {
        let key = (dir.to_path_buf(), true);
        if let Some(h) = self.cache.get(&key) {
            return h.clone();
        }
        let is_config = |rel: &str| {
            let full = if prefix.is_empty() {
                rel.to_string()
            } else {
                format!("{prefix}/{rel}")
            };
            config.is_some_and(|c| c.matches(&full))
        };
        let h = tree_hash(dir, self.state_dir.as_deref(), &is_config);
        self.cache.insert(key, h.clone());
        h
    }

    /// Fingerprint of a read-only image-override mount (a directory or a file).
    pub fn mount(&mut self, host: &Path) -> String {
        let key = (host.to_path_buf(), false);
        if let Some(h) = self.cache.get(&key) {
            return h.clone();
        }
        let h = tree_hash(host, self.state_dir.as_deref(), &|_| false);
        self.cache.insert(key, h.clone());
        h
    }
}

/// Hex sha256 over (path, type, mode, size, content) of the tree at `root`; see the module
/// docs for the bounds. A missing root hashes as `missing`.
fn tree_hash(root: &Path, state_dir: Option<&Path>, exclude: &dyn Fn(&str) -> bool) -> String {
    let Ok(root) = root.canonicalize() else {
        return "missing".into();
    };
    let mut h = Sha256::new();
    let mut budget = TREE_CONTENT_BUDGET;
    let walk = walkdir::WalkDir::new(&root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir()
                    && (e.file_name().to_string_lossy().starts_with('.')
                        || Some(e.path()) == state_dir))
        });
    for e in walk.take(TREE_MAX_ENTRIES) {
        let Ok(e) = e else {
            h.update(b"unreadable\0");
            continue;
        };
        let rel = e
            .path()
            .strip_prefix(&root)
            .unwrap_or(e.path())
            .to_string_lossy()
            .into_owned();
        if e.file_type().is_dir() || (!rel.is_empty() && exclude(&rel)) {
            continue;
        }
        let Ok(meta) = e.metadata() else {
            h.update(format!("{rel}\0unreadable\0").as_bytes());
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        h.update(format!("{rel}\0{mode:o}\0{}\0", meta.len()).as_bytes());
        if e.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            h.update(format!("link\0{}\0", target.display()).as_bytes());
        } else if e.file_type().is_file() && meta.len() <= budget {
            budget -= meta.len();
            let mut content = Vec::with_capacity(meta.len() as usize);
            match std::fs::File::open(e.path()).and_then(|mut f| f.read_to_end(&mut content)) {
                Ok(_) => h.update(Sha256::digest(&content)),
                Err(_) => h.update(b"unreadable\0"),
            }
        }
    }
    hex::encode(h.finalize())
}

/// Hash of everything a promise workflow depends on (and, through requests' hashes, every
/// resource workflow): the Promise spec, the image overrides its promise workflow uses with
/// their read-only mounts' host trees, and the files of its folder (mounted at `/promise`)
/// that are not config.
pub(super) fn promise_hash(
    runner: &RunnerConfig,
    p: &ValidPromise,
    config_root: &Path,
    config_filter: Option<&CompiledFilter>,
    trees: &mut TreeHashes,
) -> String {
    let spec = p.promise.raw.get("spec").cloned().unwrap_or(Value::Null);
    let images: Vec<&Pipeline> = p
        .promise
        .object
        .spec
        .workflows
        .promise
        .configure
        .iter()
        .collect();
    let overrides = override_fingerprint(runner, images.into_iter(), trees);
    let folder = promise_dir(config_root, &p.promise.origin.file)
        .map(|d| trees.promise_folder(&d, &parent_dir(&p.promise.origin.file), config_filter))
        .unwrap_or_default();
    sha256_hex(format!("{ENGINE_VERSION}\n{spec}\n{overrides}\n{folder}").as_bytes())
}

/// The input hash of a request's configure workflow: the Promise's hash, the request's
/// defaulted spec and `overrides` ([`override_fingerprint`] of the Promise's resource
/// pipelines, computed once per Promise and pass).
pub(super) fn request_hash(promise_hash: &str, r: &ValidRequest, overrides: &str) -> HashText {
    let compute = || {
        HashText::sha256_of(format!("{promise_hash}\n{}\n{overrides}", r.spec_digest).as_bytes())
    };
    let (inputs, hash) = r.input_hash_memo.get_or_init(|| {
        let inputs = format!("{promise_hash}\n{overrides}");
        (inputs.as_str().into(), compute())
    });
    let same = inputs.len() == promise_hash.len() + 1 + overrides.len()
        && inputs.starts_with(promise_hash)
        && inputs.ends_with(overrides);
    if same { hash.clone() } else { compute() }
}

/// The image overrides used by these pipelines, with the fingerprints of their read-only
/// mounts' host trees, as stable text. Writable mounts are left out: pipelines write there.
pub(super) fn override_fingerprint<'a>(
    runner: &RunnerConfig,
    pipelines: impl Iterator<Item = &'a Pipeline>,
    trees: &mut TreeHashes,
) -> String {
    let mut used = BTreeMap::new();
    for p in pipelines {
        for c in &p.spec.containers {
            if let Some(o) = runner.image_overrides.get(&c.image) {
                let mut text = serde_json::to_string(o).unwrap_or_default();
                for m in o.mounts.iter().filter(|m| !m.writable) {
                    text.push(' ');
                    text.push_str(&trees.mount(&m.host));
                }
                used.insert(c.image.clone(), text);
            }
        }
    }
    serde_json::to_string(&used).unwrap_or_default()
}

/// The manifest digest of every image the pipelines run through the image runtime (no image
/// override, `images:` configured), as stable text; empty when there is none, so input hashes
/// of the process runtime are unchanged. A moved tag changes it, so the workflows using the
/// image run again. An image that cannot be resolved counts as `unresolved` (its workflow then
/// runs and fails with the registry's answer). Resolving a pinned tag seen before needs no
/// network (the image store's cache, `imagePullPolicy`).
pub(super) async fn image_digests<'a>(
    runner: &RunnerConfig,
    pipelines: impl Iterator<Item = &'a Pipeline>,
) -> String {
    let Some(crate::pipeline::Images(Ok(store))) = &runner.images else {
        return String::new();
    };
    let mut used = BTreeMap::new();
    for p in pipelines {
        for c in &p.spec.containers {
            if runner.image_overrides.contains_key(&c.image) || used.contains_key(&c.image) {
                continue;
            }
            let policy = crate::image::PullPolicy::for_container(
                c.image_pull_policy.as_ref().and_then(Value::as_str),
                &c.image,
            );
            let digest = match policy {
                Ok(policy) => match store.resolve(&c.image, policy).await {
                    Ok(r) => r.digest,
                    Err(_) => "unresolved".to_string(),
                },
                Err(_) => "invalid imagePullPolicy".to_string(),
            };
            used.insert(c.image.clone(), digest);
        }
    }
    if used.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&used).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_hash_sees_content_mode_and_names_but_not_hidden_dirs_or_excluded_files() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::create_dir_all(d.join("pipeline")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join("pipeline/configure"), "echo a\n").unwrap();
        std::fs::write(d.join("promise.yaml"), "kind: Promise\n").unwrap();
        let yaml = |rel: &str| rel.ends_with(".yaml");
        let h = || tree_hash(d, None, &yaml);
        let base = h();
        assert_eq!(h(), base, "deterministic");
        std::fs::write(d.join("promise.yaml"), "kind: Promise # edited\n").unwrap();
        std::fs::write(d.join(".git/HEAD"), "x").unwrap();
        assert_eq!(
            h(),
            base,
            "config files and hidden directories do not count"
        );
        std::fs::write(d.join("pipeline/configure"), "echo b\n").unwrap();
        let edited = h();
        assert_ne!(edited, base, "content counts");
        std::fs::set_permissions(
            d.join("pipeline/configure"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(h(), edited, "mode counts");
        std::fs::rename(d.join("pipeline/configure"), d.join("pipeline/run")).unwrap();
        assert_ne!(h(), edited, "names count");
        assert_eq!(tree_hash(&d.join("nowhere"), None, &yaml), "missing");
        // The state directory inside the tree does not count.
        std::fs::create_dir_all(d.join("state")).unwrap();
        let with_state = tree_hash(d, Some(&d.canonicalize().unwrap().join("state")), &yaml);
        std::fs::write(d.join("state/state.json"), "{}").unwrap();
        assert_eq!(
            tree_hash(d, Some(&d.canonicalize().unwrap().join("state")), &yaml),
            with_state
        );
    }
}
