//! The reconcile engine: one pass from a validated config repo to state store commits.
//!
//! A pass ([`Engine::reconcile`]) goes through these stages, one module each, in this order:
//! 1. **write** (`write`, first half): open every state store of the config and check that
//!    it can be written;
//! 2. **destinations** (`destinations`): register Destinations (canary files unless
//!    `initWorkloads.enabled: false`) and retire those that left with `cleanup: all`;
//! 3. **promises** (`promises`): run each Promise's `promise.configure` workflow in
//!    `requiredPromises` order, render its `spec.dependencies`, place its output, and decide
//!    whether it is available;
//! 4. **plan** (`plan`): the pure decision of which requests run and why (steady, waiting,
//!    run, complete, unchanged), from input hashes (`inputs`) and records; before it, the
//!    version each request runs at (`versions`), and UpgradePlans (`rollout`) hold the
//!    requests not yet admitted to their rollout at their applied version;
//! 5. **records** (`records`, admission): apply the plan to the request records (and mark
//!    rejected requests Failed), yielding the jobs to run;
//! 6. **run** (`run`): run `resource.configure` for those requests in parallel up to the
//!    configured concurrency, journalling finished work as it arrives;
//! 7. **place** (`place`): place every output on Destinations (kratix-contract.md §3,
//!    [`crate::scheduler`]);
//!    Then **compound** (`compound`): output placed on a platform Destination is read back
//!    as config (child requests, HealthRecords, ResourceBindings); new and changed children
//!    go through plan → records → run → place again, level by level (children of the cached
//!    outputs already joined the config before the plan), and platform placements are
//!    dropped from what is written;
//! 8. **delete** (`delete`): run the first delete pipeline of every request or Promise that
//!    left the config repo, and mark its files for pruning (a removed Promise's own delete
//!    pipeline before its requests', as in Kratix);
//! 9. **place** again: collisions and state-store path rules settle what is written;
//! 10. **write** (`write`, second half): one change set per state store, applied as **one
//!     commit per store**;
//! 11. **records** (`records`, landing): status, placements and input hashes;
//! 12. **health** (`health`): the health state store read when due, due health checks run,
//!     and every request's HealthRecords folded into `status.healthStatus`
//!     ([`crate::health`]); then everything is saved in the state directory, with the pass
//!     report.
//!
//! The stages hand each other one `Pass` (the working state of the pass); the [`Engine`]
//! keeps what lives between passes (state, open stores, settings).
//!
//! `promised plan` is this same pass, printed: an engine made with [`Engine::for_plan`] runs
//! every stage above on a scratch state directory, and its state stores are dry-run stores
//! (`dry_run`) that apply each change set to an in-memory copy of the store and record every
//! file written or deleted ([`Engine::take_planned_files`]); [`crate::plan`] turns that into
//! the plan.
//!
//! Sharding (`leaderElection.shards` > 1): an engine made with [`Engine::for_shard`] sees only
//! its shard's Promises and requests, and rebuilds and deletes only theirs (`shard`).
//!
//! Guarantees:
//! - A workflow re-runs only when its inputs change: the hash of the Promise spec (which holds
//!   the pipeline definitions), the request's defaulted spec, the image overrides its
//!   containers use with the host trees of their read-only mounts, and the non-config files of
//!   the Promise folder mounted at `/promise` (bounded: [`TREE_MAX_ENTRIES`] entries and
//!   [`TREE_CONTENT_BUDGET`] bytes of content per tree). Status is not an
//!   input, although pipelines see it in `object.yaml`. A failed or retry-suspended workflow
//!   runs again on the next pass, and so does one whose cached output left the blob cache. An
//!   unchanged pass spawns no process and makes no commit.
//! - Placement is recomputed from cached outputs on every pass, so a new Destination receives
//!   dependencies and pending requests get placed without re-running pipelines. Placements are
//!   sticky: a request never moves once placed (misplaced instead), also when its Destination
//!   left the config repo with `cleanup: none`; `cleanup: all` removes the Destination's files.
//! - Failures are isolated: an invalid request, a failing pipeline, or an unwritable state store
//!   marks the objects concerned Failed with the reason (an invalid request:
//!   `Reconciled=False InvalidRequest`, `status.message: Invalid: …`); everything else still
//!   reconciles and commits. A request or Promise that becomes invalid keeps its previous
//!   output: only removal from the config repo deletes.
//! - Once the cancel flag is set (SIGTERM), no workflow starts: promise, resource or delete.
//! - Every pass calls `apply` on every state store in use, so files someone edited or deleted
//!   behind our back are restored even when nothing else changed (and reported as drift);
//!   a Git store trusts the head it last saw for `git.driftCheckInterval` (the push lease
//!   protects writes on it), so an idle daemon finds such drift within that interval.

mod compound;
mod delete;
mod destinations;
mod dry_run;
mod health;
pub mod held;
mod inputs;
mod lint;
mod place;
mod placement;
mod plan;
mod promises;
mod quiet;
mod readiness;
mod records;
mod report;
mod revisions;
mod rollout;
mod run;
mod shard;
mod versions;
mod write;

pub use compound::{
    COMPONENT_OF_NAMESPACE, COMPONENT_OF_PROMISE, COMPONENT_OF_RESOURCE, KRATIX_PLATFORM_LABEL,
    PLATFORM_LABEL, is_platform,
};
pub use dry_run::{FileChangeKind, PlannedFile};
pub use inputs::{TREE_CONTENT_BUDGET, TREE_MAX_ENTRIES};
pub use placement::{DestView, OutputRecord, owner_key, place_outputs};
pub use plan::reconciliation_interval;
pub use quiet::QUIET_AT_MOST;
pub use records::next_retry;
pub use report::{ObjectAction, ObjectReport, PassReport, StoreReport};
pub use run::RunTiming;
pub use shard::Shard;

pub use crate::model::{promise_key, request_key};
pub use crate::settings::{BASE_BACKOFF, MAX_BACKOFF};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use statestores::StateStore;

use crate::pipeline::RunnerConfig;
use crate::settings::Settings;
use crate::state::{DestinationRecord, ObjectRecord, PlacementRecord, State, StateDir, StateError};
use crate::validate::ValidConfig;

/// Errors that stop a whole pass (everything else is per-object status).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The daemon config's `images:` section cannot be used (the message names the setting).
    #[error("{0}")]
    Images(String),
    /// The write gate ([`Engine::with_write_gate`]) closed during the pass: this replica is
    /// no longer the leader. The pass stopped before its next state store write and saved
    /// nothing to the state directory.
    #[error("leadership lost: the pass stopped before writing to {0}")]
    LeadershipLost(String),
    /// A sharded engine ([`Engine::for_shard`]) cannot reconcile this config (an
    /// `aggregatedYAML` Destination, named in the message); nothing was written.
    #[error("sharding: {0}")]
    Sharding(String),
}

/// The reconcile engine. Holds the state, the open state stores and the runner settings
/// between passes; `promised reconcile` makes one pass, `promised run` many.
pub struct Engine {
    settings: Settings,
    dir: StateDir,
    /// This process's hold on the state directory (one engine per directory).
    _lock: crate::state::StateLock,
    state: State,
    runner: Arc<RunnerConfig>,
    /// Open state stores by `<kind>/<name>`, with the hash of the spec they were opened with.
    stores: BTreeMap<String, (String, Arc<dyn StateStore>)>,
    /// Stores whose write-permission check passed: when (to repeat it every
    /// `stateStoreCheckInterval`) and at what RFC 3339 time (for their status).
    checked: BTreeMap<String, (Instant, String)>,
    /// Destination and state store status ([`crate::infra`], `destinations.json`).
    infra: crate::infra::InfraStatus,
    /// Problems found while loading the state (reported once in the next pass).
    startup_warnings: Vec<String>,
    /// Set on shutdown: workflows not yet started are skipped (running ones finish).
    cancel: Arc<AtomicBool>,
    /// Daemon mode: failed workflows wait for their backoff before running again.
    backoff: bool,
    /// Leader election: state stores are written only while this is `true`.
    write_gate: Option<tokio::sync::watch::Receiver<bool>>,
    /// The health stage's clock, health state store records and parsed health checks.
    health: health::HealthRuntime,
    /// Per-file lint results of each Destination's last lint (`lint`), by Destination name.
    lint_cache: HashMap<String, crate::lint::LintCache>,
    /// Sharding: only this shard's Promises and requests ([`Engine::for_shard`]).
    shard: Option<Shard>,
    /// Every applied version of every Promise (`<stateDir>/revisions`).
    revisions: revisions::Revisions,
    /// UpgradePlans' progress (`<stateDir>/rollouts.json`) and this pass's trailers.
    rollout: rollout::RolloutRuntime,
    /// `promised plan` ([`Engine::for_plan`]): state stores are dry-run stores recording here.
    dry_run: Option<Arc<dry_run::Recorder>>,
    /// The last pass, when it changed nothing: repeats of it are answered from it (`quiet`).
    quiet: Option<quiet::QuietPass>,
}

/// The working state of one pass, handed from stage to stage in the order of
/// [`Engine::reconcile`]. Each field says which stage fills it.
struct Pass<'c> {
    /// The config this engine reconciles (its shard's part with [`Engine::for_shard`]).
    cfg: &'c ValidConfig,
    /// The whole config (`cfg` itself without a shard): `requiredPromises` look here.
    all: &'c ValidConfig,
    /// compound: the config the pass started with, once `cfg` holds children too.
    base: Option<&'c ValidConfig>,
    /// The directory the config repo's files are in (Promise folders are mounted from there).
    config_root: &'c Path,
    started: Instant,
    /// The report being built (every stage adds to it).
    report: PassReport,
    /// Records as they were before the pass (to persist only what changed, and so that a
    /// journal written in the middle of the pass does not say the canaries are written).
    destinations_at_start: BTreeMap<String, DestinationRecord>,
    promises_before: crate::state::Records,
    commit_before: Option<String>,
    requests_before: usize,
    /// write (open): `<kind>/<name>` → why that state store cannot be used this pass.
    store_errors: BTreeMap<String, String>,
    /// The config's Destinations with their state stores.
    dests: Vec<DestView>,
    /// destinations: canary writes and removals.
    canaries: destinations::CanaryChanges,
    /// destinations: `cleanup: all` Destinations that left the config repo.
    retiring: Vec<destinations::Retiring>,
    /// promises: hashes, availability and placement context per Promise.
    facts: plan::PromiseFacts,
    /// Which objects are in the config repo (or held, their file not loading).
    present: delete::Presence<'c>,
    held: held::Held,
    /// plan: requests skipped as steady.
    steady: HashSet<String, foldhash::fast::RandomState>,
    /// records: the steady key each looked-at request earns if it ends the pass reconciled.
    eligible: BTreeMap<String, String>,
    /// records: rejected requests (key → what and why), which keep their placements.
    invalid: BTreeMap<String, records::Invalid>,
    /// Request keys whose records are dropped in this pass.
    removed: Vec<String>,
    /// place, delete: object key → where its output goes after this pass.
    desired: BTreeMap<String, Vec<PlacementRecord>>,
    /// place, write: object key → why its output is not written.
    object_errors: BTreeMap<String, String>,
    /// write: state store → object keys whose files it changed.
    touched: BTreeMap<String, BTreeSet<String>>,
    /// write: state store → its version after the write (the new commit, or the head found
    /// when nothing was written) or why the write failed.
    store_results: BTreeMap<String, Result<Option<String>, String>>,
    /// health: request keys whose health status or health checks changed.
    health_changed: BTreeSet<String>,
}

impl Engine {
    /// Opens the state directory from `settings` and loads the previous state. A corrupt state
    /// file is not fatal: the pass starts from an empty state and rebuilds placements from the
    /// state stores' ownership indexes.
    ///
    /// The engine holds the state directory until it is dropped ([`StateDir::lock`]): a
    /// second engine on it, in this process or another, is refused.
    ///
    /// Errors: the state directory cannot be opened or another engine holds it
    /// ([`EngineError::State`]); the image store
    /// of the `images:` section could not be opened, e.g. an invalid mirror host
    /// ([`EngineError::Images`]).
    pub fn new(settings: Settings, runner: RunnerConfig) -> Result<Engine, EngineError> {
        let dir = settings.state_dir.clone();
        Engine::open(settings, runner, &dir)
    }

    /// [`Engine::new`] with its state directory at `state_dir`.
    fn open(
        settings: Settings,
        runner: RunnerConfig,
        state_dir: &Path,
    ) -> Result<Engine, EngineError> {
        if let Some(crate::pipeline::Images(Err(e))) = &runner.images {
            return Err(EngineError::Images(e.clone()));
        }
        let dir = StateDir::open(state_dir)?;
        let _lock = dir.lock()?;
        let infra = crate::infra::load(dir.root());
        let revisions = revisions::Revisions::new(&settings.state_dir);
        let mut startup_warnings = Vec::new();
        let state = match dir.load() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "starting from an empty state");
                startup_warnings.push(e.to_string());
                State {
                    version: crate::state::STATE_VERSION,
                    ..State::default()
                }
            }
        };
        // Run directories of a killed process are removed now, not at the first Pipeline.
        if let Err(e) = crate::pipeline::rundir::process_dir(&runner.work_dir) {
            tracing::warn!(error = %e, "cannot prepare the run directory");
        }
        Ok(Engine {
            settings,
            dir,
            _lock,
            state,
            runner: Arc::new(runner),
            stores: BTreeMap::new(),
            checked: BTreeMap::new(),
            infra,
            startup_warnings,
            cancel: Arc::new(AtomicBool::new(false)),
            backoff: false,
            write_gate: None,
            health: health::HealthRuntime::default(),
            lint_cache: Default::default(),
            shard: None,
            revisions,
            rollout: rollout::RolloutRuntime::default(),
            dry_run: None,
            quiet: None,
        })
    }

    /// An engine for `promised plan`: every stage runs as in [`Engine::new`] (same code path
    /// as `promised reconcile`), but the state stores are dry-run stores (`dry_run`): they read
    /// the real store once and apply to an in-memory copy, so nothing is committed, pushed or
    /// uploaded, and every file an apply would write or delete is recorded
    /// ([`Engine::take_planned_files`]). `settings.state_dir` must be a scratch directory
    /// (a copy of the real state directory, or empty): the engine writes its state, cached
    /// outputs and state store clones there as usual. Errors: as [`Engine::new`].
    pub fn for_plan(settings: Settings, runner: RunnerConfig) -> Result<Engine, EngineError> {
        let mut engine = Engine::new(settings, runner)?;
        engine.dry_run = Some(Arc::default());
        Ok(engine)
    }

    /// The files the dry-run stores' applies wrote or deleted since the last call, in apply
    /// order (empty for an engine not made with [`Engine::for_plan`]).
    pub fn take_planned_files(&self) -> Vec<PlannedFile> {
        self.dry_run.as_ref().map(|r| r.take()).unwrap_or_default()
    }

    /// After a pass of an engine made with [`Engine::for_plan`]: every file the state stores
    /// would hold for each Destination (those their ownership index gives it), by Destination
    /// name, sorted by path. What the consumer lint reads. Empty for other engines; a store
    /// that cannot be read is left out (the pass reported it).
    pub async fn planned_destination_files(
        &self,
    ) -> BTreeMap<String, Vec<statestores::StoredFile>> {
        let mut out: BTreeMap<String, Vec<statestores::StoredFile>> = BTreeMap::new();
        if self.dry_run.is_none() {
            return out;
        }
        for (_, store) in self.stores.values() {
            let (Ok(index), Ok(files)) = (store.owned("").await, store.read_files("", &[]).await)
            else {
                continue;
            };
            let owner: BTreeMap<&str, &str> = index
                .iter()
                .map(|e| (e.path.as_str(), e.owner.destination.as_str()))
                .collect();
            for f in files {
                if let Some(d) = owner.get(f.path.as_str()) {
                    out.entry(d.to_string()).or_default().push(f);
                }
            }
        }
        out
    }

    /// Daemon mode: failed workflows back off exponentially (`retryBackoff` doubling up to
    /// `maxRetryBackoff`) instead of re-running on every pass.
    pub fn with_backoff(mut self, on: bool) -> Self {
        self.backoff = on;
        self
    }

    /// For a long-running process (the daemon): the loaded records' repeated strings and status
    /// lists share one allocation per value ([`crate::state::ObjectRecord::share_texts`]; 9 MB
    /// at 10,000 requests before status lists were shared too). A one-shot `promised reconcile` skips it: the lookups would cost its no-op
    /// more than the memory it gives back at exit.
    pub fn with_shared_status_texts(mut self) -> Self {
        for r in self
            .state
            .promises
            .values_mut()
            .chain(self.state.requests.values_mut())
        {
            r.share_texts();
        }
        self
    }

    /// Leader election: the engine writes to a state store only while `gate` is `true`,
    /// checked right before each store's write; a closed gate stops the pass there
    /// ([`EngineError::LeadershipLost`]). The compare-and-swap push is the final guard for a
    /// write already under way when the gate closes.
    pub fn with_write_gate(mut self, gate: tokio::sync::watch::Receiver<bool>) -> Self {
        self.write_gate = Some(gate);
        self
    }

    /// Whether the write gate is open (always, without leader election).
    pub fn may_write(&self) -> bool {
        self.write_gate.as_ref().is_none_or(|g| *g.borrow())
    }

    /// A flag that, once set, stops new workflows from starting (running ones finish).
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Replaces the settings (SIGHUP): runner options, concurrency, commit template. The state
    /// directory stays where it is.
    pub fn set_settings(&mut self, mut settings: Settings) {
        settings.state_dir = self.settings.state_dir.clone();
        self.runner = Arc::new(settings.runner());
        self.settings = settings;
        self.checked.clear();
        self.quiet = None;
    }

    /// The settings in use.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Puts back into freshly loaded `objects` the last good version of every object of a
    /// config file that did not load, before validation ([`held::restore`]; a bad file never
    /// prunes). Returns how many documents were restored.
    pub fn restore_unloadable(&self, objects: &mut crate::config::Objects) -> usize {
        held::restore(objects, &self.state)
    }

    /// The current state (status of every object, placements).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// For a process about to exit (`promised reconcile`): leaves the records in memory to
    /// the exit instead of freeing them one by one (about 20 ms at 10,000 requests), and
    /// empties the engine's state. Dropping the engine afterwards still releases the state
    /// directory's lock. Nothing is written: call it after the last pass.
    pub fn forget_state(&mut self) {
        std::mem::forget(std::mem::take(&mut self.state));
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.root()
    }

    /// Runs one reconcile pass over `cfg`. `config_root` is the directory the config repo's
    /// files are in (Promise folders are mounted from there at `/promise`). Errors only when
    /// the state directory cannot be written; everything else is per-object status in the
    /// report.
    pub async fn reconcile(
        &mut self,
        cfg: &ValidConfig,
        config_root: &Path,
    ) -> Result<PassReport, EngineError> {
        let started = Instant::now();
        if let Some(mut report) = self.reuse_quiet(cfg) {
            report.duration = started.elapsed();
            return Ok(report);
        }
        let started_at = (std::time::SystemTime::now(), tokio::time::Instant::now());
        let outer = cfg;
        self.revisions.set_history(
            cfg.history.clone(),
            cfg.promises
                .iter()
                .map(|p| (p.name().to_string(), p.promise.origin.file.clone()))
                .collect(),
        );
        let (all, own) = match self.shard {
            None => (cfg, None),
            Some(s) => {
                s.check(cfg).map_err(EngineError::Sharding)?;
                (cfg, Some(s.config(cfg)))
            }
        };
        let cfg = own.as_ref().unwrap_or(all);
        let store_errors = self.open_stores(cfg).await;
        let stores_s = started.elapsed().as_secs_f64();
        let dests = destinations::dest_views(cfg);
        self.rebuild_from_indexes_if_empty(&dests).await;
        // compound: the configs with children, one per round (`compound`).
        let slots: [std::cell::OnceCell<ValidConfig>; compound::SLOTS] = Default::default();
        let mut pass = self.start_pass(cfg, config_root, started, dests, store_errors);
        pass.all = all;
        if own.is_some() {
            shard::assume_foreign_available(all, cfg, &mut pass.facts.available);
        }
        self.register_destinations(&mut pass).await?;
        self.configure_promises(&mut pass).await?;
        let (present, held) = delete::Presence::with_held(cfg, &self.state);
        (pass.present, pass.held) = (present, held);
        let children = self.expand_round_zero(&mut pass, &slots);
        let mut targets = self.resolve_versions(&pass);
        self.rollout_stage(&mut pass, &mut targets);
        let steps = plan::requests(
            pass.cfg,
            &self.state.requests,
            &pass.facts,
            &targets,
            &pass.present.held,
            &self.settings,
            self.backoff,
            |record| records::outputs_cached(&self.dir, record),
        );
        let jobs = self.admit_requests(&mut pass, steps);
        self.note_invalid_requests(&mut pass);
        self.run_requests(&mut pass, jobs).await?;
        self.note_upgrades(&pass, &targets);
        self.place_requests(&mut pass);
        self.compound_rounds(&mut pass, &slots, children, &mut targets)
            .await?;
        self.deletions(&mut pass).await?;
        // No workflow runs past here but health checks, which set (and empty) their own
        // catalog. The catalog shares the records' statuses: kept, it would hold the old ones
        // alive beside those the pass wrote.
        self.clear_catalog();
        self.settle_placements(&mut pass);
        let t_write = Instant::now();
        let plan_s = (t_write - started).as_secs_f64() - stores_s;
        let sets = self.change_sets(&mut pass)?;
        self.write_stores(&mut pass, sets).await?;
        let write_s = t_write.elapsed().as_secs_f64();
        let t_finish = Instant::now();
        self.land(&mut pass);
        self.readiness(&mut pass)?;
        versions::note_errors(&mut self.state.requests, &targets);
        self.health_stage(&mut pass).await;
        let report = self.finish_pass(pass);
        if let Ok(r) = &report {
            self.note_quiet(outer, started_at, r);
        }
        tracing::debug!(
            stores_s,
            plan_s,
            write_s,
            finish_s = t_finish.elapsed().as_secs_f64(),
            "engine stages"
        );
        report
    }

    /// A new [`Pass`] over `cfg`, with the records as they are before it (after a rebuild
    /// from the stores' indexes).
    fn start_pass<'c>(
        &mut self,
        cfg: &'c ValidConfig,
        config_root: &'c Path,
        started: Instant,
        dests: Vec<DestView>,
        store_errors: BTreeMap<String, String>,
    ) -> Pass<'c> {
        let mut report = PassReport {
            config_commit: cfg.commit.clone(),
            ..PassReport::default()
        };
        report.warnings.append(&mut self.startup_warnings);
        Pass {
            cfg,
            all: cfg,
            base: None,
            config_root,
            started,
            report,
            destinations_at_start: self.state.destinations.clone(),
            promises_before: self.state.promises.clone(),
            commit_before: self.state.config_commit.clone(),
            requests_before: self.state.requests.len(),
            store_errors,
            dests,
            canaries: Vec::new(),
            retiring: Vec::new(),
            facts: plan::PromiseFacts::default(),
            present: delete::Presence::default(),
            held: held::Held::default(),
            steady: HashSet::default(),
            eligible: BTreeMap::new(),
            invalid: BTreeMap::new(),
            removed: Vec::new(),
            desired: BTreeMap::new(),
            object_errors: BTreeMap::new(),
            touched: BTreeMap::new(),
            store_results: BTreeMap::new(),
            health_changed: BTreeSet::new(),
        }
    }

    fn record(&self, key: &str) -> Option<&ObjectRecord> {
        self.state
            .requests
            .get(key)
            .or_else(|| self.state.promises.get(key))
            .map(|r| &**r)
    }

    /// The requests' or the Promises' records.
    fn records_mut(&mut self, requests: bool) -> &mut crate::state::Records {
        if requests {
            &mut self.state.requests
        } else {
            &mut self.state.promises
        }
    }

    fn record_mut(&mut self, key: &str) -> Option<&mut ObjectRecord> {
        if self.state.requests.contains_key(key) {
            self.state.requests.get_mut(key).map(|r| &mut **r)
        } else {
            self.state.promises.get_mut(key).map(|r| &mut **r)
        }
    }
}

/// Requests skipped as steady are listed in the pass report up to this many; beyond it they
/// are only counted ([`PassReport::unchanged_not_listed`]).
pub const MAX_LISTED_UNCHANGED: usize = 50;

/// The folder of a config file (`promises/redis/promise.yaml` → `promises/redis`).
fn parent_dir(file: &str) -> String {
    file.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

/// The Promise folder of `file` under `root`, when it is a directory (mounted at `/promise`).
fn promise_dir(root: &Path, file: &str) -> Option<PathBuf> {
    let d = root.join(parent_dir(file));
    d.is_dir().then_some(d)
}
