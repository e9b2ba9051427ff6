//! Sharding seam (`leaderElection.shards: N > 1`, docs/sharding.md): an engine made with
//! [`Engine::for_shard`] reconciles only the Promises of its shard
//! ([`crate::cluster::shards::shard_of`]) and their requests.
//!
//! - The config a pass sees is [`Shard::config`]: the shard's Promises, their requests and
//!   rejected objects, every Destination and state store (shared by all shards).
//! - The state directory is `<stateDir>/shards/<i>`, emptied whenever the engine is made (the
//!   shard may have been reconciled by another replica since this one last held it) and
//!   rebuilt from the state stores' ownership indexes, **filtered to the shard's Promises**
//!   (`rebuild_from_indexes_if_empty`). The records of the engine are therefore only its
//!   shard's, and "objects that left the config" (the delete stage) are only looked for
//!   among them: one shard never deletes another's output.
//! - A `requiredPromises` entry naming a Promise of another shard is met when that Promise is
//!   in the config (valid, with the version asked for): its availability is another replica's
//!   to know.
//! - `aggregatedYAML` Destinations hold every placement in one file and cannot be split: a
//!   sharded pass over a config with one fails before any write ([`EngineError::Sharding`]).

use std::path::Path;

use super::{Engine, EngineError};
use crate::model::FilepathMode;
use crate::pipeline::RunnerConfig;
use crate::settings::Settings;
use crate::validate::ValidConfig;

/// One shard of `count`: the Promises whose [`crate::cluster::shards::shard_of`] is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard (`0..count`).
    pub index: u32,
    /// How many shards the Promises are split into (`leaderElection.shards`).
    pub count: u32,
}

impl Shard {
    /// Whether the Promise named `promise` (and so its requests) is in this shard.
    pub fn owns(&self, promise: &str) -> bool {
        crate::cluster::shards::shard_of(promise, self.count) == self.index
    }

    /// The state directory of this shard under the daemon's `stateDir`.
    pub fn state_dir(&self, state_root: &Path) -> std::path::PathBuf {
        state_root.join("shards").join(self.index.to_string())
    }

    /// Refuses a config this shard cannot reconcile alone: one with an `aggregatedYAML`
    /// Destination (the error names it).
    pub fn check(&self, cfg: &ValidConfig) -> Result<(), String> {
        match cfg
            .destinations
            .iter()
            .find(|d| d.object.spec.filepath.mode == FilepathMode::AggregatedYaml)
        {
            Some(d) => Err(format!(
                "Destination {} has filepath.mode aggregatedYAML, which cannot be split between shards: use leaderElection.shards: 1 or another filepath mode (docs/sharding.md)",
                d.id.name
            )),
            None => Ok(()),
        }
    }

    /// `cfg` with only this shard's Promises, their requests, the rejected objects of its
    /// Promises (and rejected requests whose Promise is unknown) and the health records about
    /// its requests; Destinations, state stores, assets, diagnostics and unloadable files are
    /// kept whole.
    pub fn config(&self, cfg: &ValidConfig) -> ValidConfig {
        let mut out = ValidConfig {
            promises: cfg
                .promises
                .iter()
                .filter(|p| self.owns(p.name()))
                .cloned()
                .collect(),
            requests: cfg
                .requests
                .iter()
                .filter(|r| self.owns(&r.promise))
                .cloned()
                .collect(),
            rejected: cfg
                .rejected
                .iter()
                .filter(|r| {
                    if r.id.kind == "Promise" {
                        self.owns(&r.id.name)
                    } else {
                        r.promise.as_deref().is_none_or(|p| self.owns(p))
                    }
                })
                .cloned()
                .collect(),
            health_records: cfg
                .health_records
                .iter()
                .filter(|h| {
                    h.object.data.promise_ref["name"]
                        .as_str()
                        .is_none_or(|p| self.owns(p))
                })
                .cloned()
                .collect(),
            upgrade_plans: cfg
                .upgrade_plans
                .iter()
                .filter(|u| self.owns(&u.object.spec.promise_ref.name))
                .cloned()
                .collect(),
            ..ValidConfig::default()
        };
        out.destinations = cfg.destinations.clone();
        out.git_state_stores = cfg.git_state_stores.clone();
        out.bucket_state_stores = cfg.bucket_state_stores.clone();
        out.assets = cfg.assets.clone();
        out.diagnostics = cfg.diagnostics.clone();
        out.commit = cfg.commit.clone();
        out.provenance = cfg.provenance.clone();
        out.history = cfg.history.clone();
        out.tenancy = cfg.tenancy.clone();
        // Bindings name their Promise by label; one without it is kept (it pins nothing).
        out.resource_bindings = cfg
            .resource_bindings
            .iter()
            .filter(|b| {
                b.object
                    .metadata
                    .labels
                    .get("kratix.io/promise-name")
                    .is_none_or(|p| self.owns(p))
            })
            .cloned()
            .collect();
        out.unloadable = cfg.unloadable.clone();
        out
    }
}

impl Engine {
    /// An engine for `shard` (docs/sharding.md): its state directory is
    /// `<settings.stateDir>/shards/<i>`, **emptied** first, so its records are rebuilt from
    /// the state stores' ownership indexes (filtered to the shard) at the first pass; each
    /// pass reconciles only the shard's Promises and requests ([`Shard::config`]) and deletes
    /// only what they placed. Everything else (pipeline run directory, hidden paths, image
    /// cache, relative local state store URLs) stays relative to `settings.stateDir`.
    ///
    /// Errors: as [`Engine::new`]; the shard's state directory cannot be emptied.
    pub fn for_shard(
        settings: Settings,
        runner: RunnerConfig,
        shard: Shard,
    ) -> Result<Engine, EngineError> {
        let dir = shard.state_dir(&settings.state_dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(EngineError::State(crate::state::StateError::Io {
                    path: dir.display().to_string(),
                    source,
                }));
            }
        }
        let mut engine = Engine::open(settings, runner, &dir)?;
        engine.shard = Some(shard);
        Ok(engine)
    }

    /// The shard this engine reconciles; `None`: every Promise.
    pub fn shard(&self) -> Option<Shard> {
        self.shard
    }

    /// Whether records of the Promise named `promise` belong to this engine (always without
    /// a shard). Canaries (no Promise) belong to every shard.
    pub(super) fn in_shard(&self, promise: &str) -> bool {
        promise.is_empty() || self.shard.is_none_or(|s| s.owns(promise))
    }
}

/// Marks as available every Promise of `all` that is not in `own` (another shard's): a
/// `requiredPromises` entry on it is met when it is in the config.
pub(super) fn assume_foreign_available(
    all: &ValidConfig,
    own: &ValidConfig,
    available: &mut std::collections::BTreeMap<String, bool>,
) {
    let own: std::collections::HashSet<&str> = own.promises.iter().map(|p| p.name()).collect();
    for p in &all.promises {
        if !own.contains(p.name()) {
            available.insert(p.name().to_string(), true);
        }
    }
}
