//! Write stage: the state stores.
//!
//! At the start of a pass every state store of the config is opened (again only when its spec
//! changed) and its write permission checked once ([`Engine::open_stores`]). At the end, the
//! placements that changed become **one change set per store** ([`Engine::change_sets`]: files
//! to write, owner keys to prune, `aggregatedYAML` files rebuilt, canaries), and every store in
//! use is applied, also with an empty change set, so drift is repaired on a no-op pass
//! ([`Engine::write_stores`]). A store that fails fails only the objects placed on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use statestores::{ChangeSet, CommitMeta, FileWrite, Owner, PlacementWrite, StateStore};

use super::destinations::{configured_stores, dest_mode};
use super::place::aggregate_order;
use super::placement::{self, DestView};
use super::report::StoreReport;
use super::{Engine, EngineError, Pass};
use crate::layout;
use crate::model::FilepathMode;
use crate::state::{FileRecord, PlacementRecord, sha256_hex};
use crate::validate::ValidConfig;

impl Engine {
    /// Opens a state store object for every GitStateStore and BucketStateStore in the config
    /// (again only when its spec changed) and runs its write-permission check once. Returns
    /// `<kind>/<name>` → error for stores that cannot be used.
    pub(super) async fn open_stores(&mut self, cfg: &ValidConfig) -> BTreeMap<String, String> {
        let mut errors = BTreeMap::new();
        for s in &cfg.git_state_stores {
            let mut spec = s.object.spec.clone();
            if let Some(resolved) = resolve_local_url(&spec.url, &self.settings.state_dir) {
                spec.url = resolved;
            }
            let mut opts = statestores::GitOptions::new(self.dir.stores_dir());
            opts.insecure_skip_tls_verify = self.settings.git.insecure_skip_tls_verify;
            opts.secrets_dir = self.settings.secrets_dir.clone();
            opts.max_push_attempts = self.settings.git.max_push_attempts.max(1);
            opts.trust_head_for = self.settings.git.drift_check_interval;
            opts.network = self.settings.network.timeouts();
            let name = &s.id.name;
            let signing = self.settings.git.signing_for(name).cloned();
            // The key is part of what opens the store: a changed key reopens it.
            let hash = spec_hash(&(&spec, &signing));
            let open = || {
                if let Some(key) = &signing {
                    let creds = std::env::var_os("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty());
                    let signer = statestores::git::signing::Signer::load(
                        name,
                        key,
                        creds.as_deref().map(Path::new),
                    )?;
                    tracing::info!(store = %name, key = %signer.identity(), "signing commits");
                    opts.signing = Some(Arc::new(signer));
                }
                statestores::GitStateStore::open(name, spec, opts)
                    .map(|s| Arc::new(s) as Arc<dyn StateStore>)
            };
            self.keep_open(format!("GitStateStore/{name}"), hash, open, &mut errors)
                .await;
        }
        for s in &cfg.bucket_state_stores {
            let spec = s.object.spec.clone();
            let opts = statestores::s3::S3Options {
                secrets_dir: self.settings.secrets_dir.clone(),
                state_dir: Some(self.dir.stores_dir()),
                network: self.settings.network.timeouts(),
                ..Default::default()
            };
            let name = &s.id.name;
            let hash = spec_hash(&spec);
            let open = || {
                statestores::S3StateStore::open(name, spec, opts)
                    .map(|s| Arc::new(s) as Arc<dyn StateStore>)
            };
            self.keep_open(format!("BucketStateStore/{name}"), hash, open, &mut errors)
                .await;
        }
        errors
    }

    /// Keeps state store `key` open with the spec of hash `spec_hash` (opened with `open` when
    /// new or when its spec changed) and runs its write-permission check once, and again every
    /// `stateStoreCheckInterval`; why it cannot be used goes into `errors`.
    async fn keep_open<E: std::fmt::Display>(
        &mut self,
        key: String,
        spec_hash: String,
        open: impl FnOnce() -> Result<Arc<dyn StateStore>, E>,
        errors: &mut BTreeMap<String, String>,
    ) {
        if self.stores.get(&key).is_none_or(|(h, _)| *h != spec_hash) {
            match open() {
                Ok(store) => {
                    let store = self.dry_run_store(&key, store);
                    self.stores.insert(key.clone(), (spec_hash, store));
                    self.checked.remove(&key);
                }
                Err(e) => {
                    errors.insert(key, e.to_string());
                    return;
                }
            }
        }
        let every = self.settings.state_store_check_interval;
        if self
            .checked
            .get(&key)
            .is_none_or(|(at, _)| at.elapsed() >= every)
        {
            self.checked.remove(&key);
            let store = self.stores[&key].1.clone();
            match store.check().await {
                Ok(()) => {
                    let now = (std::time::Instant::now(), crate::status::now_rfc3339());
                    self.checked.insert(key, now);
                }
                Err(e) => {
                    errors.insert(key, format!("write-permission check failed: {e}"));
                }
            }
        }
    }

    /// `store` itself, or wrapped in a [`super::dry_run::DryRunStore`] for an engine made
    /// with [`Engine::for_plan`].
    fn dry_run_store(&self, key: &str, store: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
        match &self.dry_run {
            None => store,
            Some(recorder) => Arc::new(super::dry_run::DryRunStore::new(
                key.to_string(),
                store,
                recorder.clone(),
                self.dir.clone(),
            )),
        }
    }

    /// The change set of every state store: placements that changed or were removed, rebuilt
    /// `aggregatedYAML` files and canaries; fills `pass.touched`. An object whose cached output
    /// left the blob cache fails alone (into `pass.object_errors`) and re-runs on the next pass.
    pub(super) fn change_sets(
        &mut self,
        pass: &mut Pass<'_>,
    ) -> Result<BTreeMap<String, ChangeSet>, EngineError> {
        // One change set per store.
        let mut sets: BTreeMap<String, ChangeSet> = BTreeMap::new();
        // Destinations new in this pass, or back after they left with `cleanup: none`: every
        // placement on them is written in full, so files left in place are adopted again (the
        // store skips identical content) and missing ones are written.
        let configured_stores = configured_stores(pass.cfg);
        let arrived: BTreeSet<&str> = pass
            .dests
            .iter()
            .map(|d| d.info.name.as_str())
            .filter(|n| !pass.destinations_at_start.contains_key(*n))
            .collect();
        for (okey, places) in &pass.desired {
            let before = self
                .record(okey)
                .map(|r| r.placements.clone())
                .unwrap_or_default();
            let (mut changed, removed) = placement::diff(&before, places);
            if !arrived.is_empty() {
                for pl in places {
                    if arrived.contains(pl.destination.as_str())
                        && !changed.iter().any(|c| c.key == pl.key)
                    {
                        changed.push(pl);
                    }
                }
            }
            for pl in changed {
                if dest_mode(&pass.dests, &pl.destination) == Some(FilepathMode::AggregatedYaml) {
                    pass.touched
                        .entry(pl.store.to_string())
                        .or_default()
                        .insert(okey.clone());
                    continue; // written via the Destination's aggregate below
                }
                let files = match self.load_files(&pl.files) {
                    Ok(f) => f,
                    Err(e) => {
                        // Cached output lost (and not re-run this pass): this object fails
                        // alone and runs again on the next pass.
                        pass.object_errors.insert(
                            okey.clone(),
                            format!("cached output missing, it re-runs on the next pass: {e}"),
                        );
                        if let Some(r) = self.record_mut(okey) {
                            r.input_hash.clear();
                        }
                        continue;
                    }
                };
                let set = sets.entry(pl.store.to_string()).or_default();
                set.writes.push(PlacementWrite {
                    owner: owner_for(okey, pl).into(),
                    files,
                });
                pass.touched
                    .entry(pl.store.to_string())
                    .or_default()
                    .insert(okey.clone());
            }
            for key in removed {
                if let Some(old) = before.iter().find(|p| p.key == key) {
                    if dest_mode(&pass.dests, &old.destination).is_none()
                        && !configured_stores.contains(old.store.as_str())
                    {
                        // Its Destination and its state store both left the config repo:
                        // nothing can be pruned, the files stay (as with `cleanup: none`).
                        continue;
                    }
                    if dest_mode(&pass.dests, &old.destination)
                        != Some(FilepathMode::AggregatedYaml)
                    {
                        sets.entry(old.store.to_string())
                            .or_default()
                            .removals
                            .push(key.clone());
                    }
                    pass.touched
                        .entry(old.store.to_string())
                        .or_default()
                        .insert(okey.clone());
                }
            }
        }
        if pass
            .dests
            .iter()
            .any(|d| d.mode == FilepathMode::AggregatedYaml)
            && !pass.steady.is_empty()
        {
            // An aggregate holds every placement on its Destination, steady ones included.
            let mut all = pass.desired.clone();
            for k in &pass.steady {
                if let Some(r) = self.state.requests.get(k) {
                    all.insert(k.clone(), r.placements.clone());
                }
            }
            self.aggregates(&pass.dests, &all, &mut sets)?;
        } else {
            self.aggregates(&pass.dests, &pass.desired, &mut sets)?;
        }
        for (store, write) in std::mem::take(&mut pass.canaries) {
            match write {
                Ok(w) => sets.entry(store).or_default().writes.push(w),
                Err(key) => sets.entry(store).or_default().removals.push(key),
            }
        }
        Ok(sets)
    }

    /// Applies `sets` to every state store in use (one commit each), into `pass.store_results`
    /// and the report; then canaries whose store failed are sent again next pass, and
    /// `cleanup: all` Destinations whose files are gone are forgotten.
    ///
    /// Errors: the write gate closed ([`EngineError::LeadershipLost`]), checked right before
    /// each store's write; stores written before it stay written.
    pub(super) async fn write_stores(
        &mut self,
        pass: &mut Pass<'_>,
        mut sets: BTreeMap<String, ChangeSet>,
    ) -> Result<(), EngineError> {
        // Apply: every store in use, so drift is repaired even on a no-op pass.
        let mut in_use: BTreeSet<String> = pass.dests.iter().map(|d| d.store.clone()).collect();
        in_use.extend(sets.keys().cloned());
        // A directory config: its Git HEAD (`+dirty`) or its path, for the commit message.
        let mut dir_config: Option<(Option<String>, Option<String>)> = None;
        for store_key in in_use {
            if !self.may_write() {
                tracing::warn!(store = %store_key, "leadership lost: not writing");
                return Err(EngineError::LeadershipLost(store_key));
            }
            let mut set = sets.remove(&store_key).unwrap_or_default();
            let (config_commit, config_label) = match &pass.cfg.commit {
                Some(c) => (Some(c.clone()), None),
                None if set.writes.is_empty() && set.removals.is_empty() => (None, None),
                None => dir_config
                    .get_or_insert_with(|| directory_identity(pass.config_root))
                    .clone(),
            };
            set.meta = CommitMeta {
                config_commit,
                subject_template: self.settings.git.commit_subject.clone(),
                note: None,
                config_label,
                images: self.images_of(pass.touched.get(&store_key)),
                requested_by: pass.cfg.provenance.as_ref().map(|p| p.author.clone()),
                signed_by: pass
                    .cfg
                    .provenance
                    .as_ref()
                    .and_then(|p| p.signed_by.clone()),
                trailers: super::compound::parent_trailers(
                    &self.state,
                    pass.touched.get(&store_key),
                )
                .into_iter()
                .chain(self.rollout_trailers(pass.touched.get(&store_key)))
                .collect(),
            };
            set.writes.sort_by(|a, b| a.owner.key.cmp(&b.owner.key));
            set.removals.sort();
            set.removals.dedup();
            let result = match (
                pass.store_errors.get(&store_key),
                self.stores.get(&store_key),
            ) {
                (Some(e), _) => Err(e.clone()),
                (None, None) => Err(format!("{store_key} does not exist")),
                (None, Some((_, store))) => match store.apply_shared(Arc::new(set)).await {
                    Ok(outcome) => {
                        pass.report
                            .stores
                            .push(StoreReport::from_outcome(&store_key, &outcome));
                        // The store's version also when nothing was written: a write whose
                        // process was killed before recording it is recorded now.
                        Ok(outcome.version.or(outcome.head))
                    }
                    Err(e) => {
                        pass.report
                            .stores
                            .push(StoreReport::failed(&store_key, &e.to_string()));
                        Err(e.to_string())
                    }
                },
            };
            if let Err(e) = &result {
                if pass.store_errors.contains_key(&store_key) {
                    pass.report.stores.push(StoreReport::failed(&store_key, e));
                }
                tracing::warn!(store = %store_key, error = %e, "state store write failed");
            }
            pass.store_results.insert(store_key, result);
        }

        // A canary whose store write failed is sent again next pass.
        for d in self.state.destinations.values_mut() {
            if matches!(pass.store_results.get(&d.store), Some(Err(_)) | None) {
                d.canary_hash.clear();
            }
        }
        // A Destination removed with `cleanup: all` is forgotten once its files are gone.
        for (name, store_key) in &pass.retiring {
            if matches!(pass.store_results.get(store_key), Some(Ok(_))) {
                self.state.destinations.remove(name);
            }
        }
        Ok(())
    }

    /// `<image>@<digest>` of every image that ran for the objects in `touched` (their pipelines'
    /// status, `status.pipelines[].images`), for the commit's `Promised-Image:` trailers.
    fn images_of(&self, touched: Option<&BTreeSet<String>>) -> Vec<String> {
        let mut out = BTreeSet::new();
        for key in touched.into_iter().flatten() {
            let Some(record) = self.record(key) else {
                continue;
            };
            for p in record.status.pipelines.iter() {
                for entry in &p.images {
                    // `<container>: <image>@<digest>`
                    let image = entry.split_once(": ").map_or(entry.as_str(), |(_, i)| i);
                    out.insert(image.to_string());
                }
            }
        }
        out.into_iter().collect()
    }

    /// The contents of `files` from the blob cache.
    fn load_files(&self, files: &[FileRecord]) -> Result<Vec<FileWrite>, EngineError> {
        files
            .iter()
            .map(|f| {
                Ok(FileWrite {
                    path: f.path.clone(),
                    content: self.dir.get_blob(&f.sha256)?,
                })
            })
            .collect()
    }

    /// Rebuilds the single file of every `aggregatedYAML` Destination whose placements changed.
    fn aggregates(
        &mut self,
        dests: &[DestView],
        desired: &BTreeMap<String, Vec<PlacementRecord>>,
        sets: &mut BTreeMap<String, ChangeSet>,
    ) -> Result<(), EngineError> {
        'dest: for d in dests
            .iter()
            .filter(|d| d.mode == FilepathMode::AggregatedYaml)
        {
            let mut places: Vec<&PlacementRecord> = desired
                .values()
                .flatten()
                .filter(|p| p.destination == d.info.name)
                .collect();
            places.sort_by(|a, b| aggregate_order(&a.key).cmp(&aggregate_order(&b.key)));
            let mut docs = Vec::new();
            for p in &places {
                let mut files = p.files.clone();
                files.sort();
                for f in files {
                    let Ok(bytes) = self.dir.get_blob(&f.sha256) else {
                        // Lost from the cache: keep the file as it is; its owner re-runs.
                        tracing::warn!(destination = %d.info.name, sha256 = %f.sha256, "cached output missing; aggregate not rewritten in this pass");
                        continue 'dest;
                    };
                    docs.push(
                        String::from_utf8_lossy(&bytes)
                            .trim_end_matches('\n')
                            .to_string(),
                    );
                }
            }
            let key = format!("{}/aggregated", d.info.name);
            let owner = Owner {
                key: key.clone(),
                destination: d.info.name.clone(),
                promise: String::new(),
                resource: None,
                pipeline: None,
            };
            let set = sets.entry(d.store.clone()).or_default();
            if docs.is_empty() {
                set.removals.push(key);
            } else {
                let mut content = docs.join(layout::AGGREGATE_SEPARATOR);
                content.push('\n');
                set.writes.push(PlacementWrite {
                    owner: owner.into(),
                    files: vec![FileWrite {
                        path: layout::aggregated_path(&d.store_path, &d.path, &d.filename),
                        content: content.into_bytes(),
                    }],
                });
            }
        }
        Ok(())
    }
}

/// The ownership-index owner of placement `pl` of object `okey`.
fn owner_for(okey: &str, pl: &PlacementRecord) -> Owner {
    let mut parts = okey.splitn(3, '/');
    let first = parts.next().unwrap_or_default();
    let (promise, resource) = if first == "promise" {
        (parts.next().unwrap_or_default().to_string(), None)
    } else {
        let ns = parts.next().unwrap_or_default();
        let name = parts.next().unwrap_or_default();
        (first.to_string(), Some(format!("{ns}/{name}")))
    };
    Owner {
        key: pl.key.clone(),
        destination: pl.destination.to_string(),
        promise,
        resource,
        pipeline: (!pl.pipeline.is_empty()).then(|| pl.pipeline.to_string()),
    }
}

/// The fingerprint of a state store spec: a store is opened again when it changes.
fn spec_hash(spec: &impl serde::Serialize) -> String {
    sha256_hex(
        serde_json::to_string(spec)
            .expect("a spec serialises")
            .as_bytes(),
    )
}

/// A relative local path (no scheme, no `user@host:`) is resolved against the state directory.
fn resolve_local_url(url: &str, state_dir: &Path) -> Option<String> {
    if url.contains("://") || url.contains('@') || url.contains(':') || Path::new(url).is_absolute()
    {
        return None;
    }
    let abs = std::path::absolute(state_dir.join(url)).ok()?;
    Some(abs.to_string_lossy().into_owned())
}

/// What a directory config is, for the commit message: `(Some(<HEAD sha>[+dirty]), None)` when
/// it is inside a Git work tree (`+dirty` when `git status` shows changes under it, untracked
/// files included), else `(None, Some("directory <path>"))`. One `git status` spawn; only
/// called when a commit is about to be made.
fn directory_identity(dir: &Path) -> (Option<String>, Option<String>) {
    let label = || (None, Some(format!("directory {}", dir.display())));
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "status",
            "--porcelain=v2",
            "--branch",
            "--untracked-files=normal",
            "--",
            ".",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(out) = out else {
        return label();
    };
    if !out.status.success() {
        return label();
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(oid) = text
        .lines()
        .find_map(|l| l.strip_prefix("# branch.oid "))
        .filter(|o| o.len() >= 40 && o.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return label(); // no commit yet
    };
    let dirty = text.lines().any(|l| !l.starts_with('#'));
    (
        Some(if dirty {
            format!("{oid}+dirty")
        } else {
            oid.to_string()
        }),
        None,
    )
}
