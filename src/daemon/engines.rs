//! The reconcile engines of one replica: one engine for everything (no leader election, or
//! `leaderElection.shards: 1`), or with `shards: N > 1` one engine per shard this replica
//! holds ([`Engine::for_shard`], docs/sharding.md), each behind its shard's write gate.
//!
//! A sharded pass loads and validates the config once, then runs each held shard's engine on
//! it in turn (shard order); `/api/v1/status` lists the objects of the shards held. A shard's
//! engine is made (its state directory emptied and rebuilt from the state stores) when its
//! gate opens, and dropped as soon as its gate has changed since: a shard held again after
//! another replica had it never continues from stale records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::Shared;
use super::pass::{self, PassCache, StatusRows};
use crate::cluster::Election;
use crate::reconcile::{Engine, PassReport, Shard};
use crate::settings::Settings;

/// One engine, or one per held shard.
pub(super) enum Engines {
    /// Everything in one engine (the daemon without sharding), with its status rows in the
    /// pass cache.
    One(Box<Engine>),
    /// `leaderElection.shards` > 1.
    Sharded(Box<Sharded>),
}

/// The shards of a sharded replica.
pub(super) struct Sharded {
    /// The settings new shard engines get (replaced on SIGHUP).
    settings: Settings,
    /// Where the engines' state directories are (`stateDir` at start).
    state_root: PathBuf,
    slots: Vec<Slot>,
}

/// One shard: its gate and, while held, its engine and status rows.
struct Slot {
    shard: Shard,
    /// The shard's gate, watched for changes (its own receiver).
    gate: watch::Receiver<bool>,
    engine: Option<Engine>,
    rows: StatusRows,
}

impl Engines {
    /// The engines for `settings`: one per shard when `election` has more than one shard
    /// (made when the shard is first held, [`Engines::prepare`]), else one, behind the gate
    /// of shard 0 with an election.
    pub(super) fn start(settings: &Settings, election: Option<&Election>) -> Result<Self, String> {
        let shards = election.map_or(1, |e| e.status().borrow().shards);
        if let (Some(e), true) = (election, shards > 1) {
            return Ok(Engines::Sharded(Box::new(Sharded {
                settings: settings.clone(),
                state_root: settings.state_dir.clone(),
                slots: (0..shards)
                    .map(|index| Slot {
                        shard: Shard {
                            index,
                            count: shards,
                        },
                        gate: e.gate(index),
                        engine: None,
                        rows: StatusRows::default(),
                    })
                    .collect(),
            })));
        }
        let mut engine = Engine::new(settings.clone(), settings.runner())
            .map_err(|e| e.to_string())?
            .with_backoff(true)
            .with_shared_status_texts();
        // Leader election: the engine writes only while this replica holds the Lease.
        if let Some(e) = election {
            engine = engine.with_write_gate(e.gate(0));
        }
        Ok(Engines::One(Box::new(engine)))
    }

    /// The config commit the last pass applied (the first running engine's), if any.
    pub(super) fn config_commit(&self) -> Option<String> {
        match self {
            Engines::One(e) => e.state().config_commit.clone(),
            Engines::Sharded(s) => s
                .slots
                .iter()
                .find_map(|slot| slot.engine.as_ref()?.state().config_commit.clone()),
        }
    }

    /// The state directory the pass cache and the engines live under.
    pub(super) fn state_root(&self) -> &Path {
        match self {
            Engines::One(e) => e.state_dir(),
            Engines::Sharded(s) => &s.state_root,
        }
    }

    /// Whether a pass may write anywhere: the gate is open (one engine), or at least one
    /// shard is held.
    pub(super) fn may_write(&self) -> bool {
        match self {
            Engines::One(e) => e.may_write(),
            Engines::Sharded(s) => s.slots.iter().any(|slot| *slot.gate.borrow()),
        }
    }

    /// Sharded: drops the engine of every shard whose gate changed since it was made (lost, or
    /// lost and held again) and makes one, from an empty state directory, for every shard
    /// held without one. Nothing with one engine.
    pub(super) fn prepare(&mut self, shared: &Shared) {
        let Engines::Sharded(s) = self else {
            return;
        };
        for slot in &mut s.slots {
            let changed = slot.gate.has_changed().unwrap_or(false);
            let open = *slot.gate.borrow_and_update();
            if (changed || !open) && slot.engine.take().is_some() {
                tracing::info!(
                    shard = slot.shard.index,
                    "shard no longer held: engine dropped"
                );
                slot.rows = StatusRows::default();
            }
            if !open || slot.engine.is_some() {
                continue;
            }
            let mut settings = s.settings.clone();
            settings.state_dir = s.state_root.clone();
            let runner = settings.runner();
            match Engine::for_shard(settings, runner, slot.shard) {
                Ok(e) => {
                    tracing::info!(shard = slot.shard.index, state_dir = %e.state_dir().display(), "shard held: engine started from the state stores");
                    slot.engine = Some(
                        e.with_backoff(true)
                            .with_shared_status_texts()
                            .with_write_gate(slot.gate.clone()),
                    );
                }
                Err(e) => {
                    shared.metrics.error("state");
                    tracing::error!(shard = slot.shard.index, error = %e, "cannot start the shard's engine");
                }
            }
        }
    }

    /// The flags that stop new workflows in every engine (set on drain).
    pub(super) fn cancel_handles(&self) -> Vec<Arc<AtomicBool>> {
        self.engines().map(Engine::cancel_handle).collect()
    }

    fn engines(&self) -> Box<dyn Iterator<Item = &Engine> + '_> {
        match self {
            Engines::One(e) => Box::new(std::iter::once(&**e)),
            Engines::Sharded(s) => Box::new(s.slots.iter().filter_map(|slot| slot.engine.as_ref())),
        }
    }

    /// When the next pass is due ([`pass::next_wake`]): the soonest of every engine's.
    pub(super) fn next_wake(&self, pass_started: SystemTime) -> Duration {
        self.engines()
            .map(|e| pass::next_wake(e, pass_started))
            .min()
            .unwrap_or(Duration::from_secs(60))
    }

    /// SIGHUP: the new settings for every engine (and the shard engines made later).
    pub(super) fn set_settings(&mut self, settings: &Settings) {
        match self {
            Engines::One(e) => e.set_settings(settings.clone()),
            Engines::Sharded(s) => {
                s.settings = settings.clone();
                for e in s.slots.iter_mut().filter_map(|slot| slot.engine.as_mut()) {
                    e.set_settings(settings.clone());
                }
            }
        }
    }

    /// One pass: load and validate the config once, then reconcile with every engine; the
    /// result of each (a sharded error names its shard).
    pub(super) async fn pass(
        &mut self,
        cache: &mut PassCache,
        shared: &Shared,
    ) -> Vec<Result<PassReport, String>> {
        let s = match self {
            Engines::One(e) => return vec![pass::one_pass(e, cache, shared).await],
            Engines::Sharded(s) => s,
        };
        let (settings, slots) = (&s.settings, &mut s.slots);
        let loaded = pass::load(cache, shared, settings, |objects| {
            for e in slots.iter().filter_map(|slot| slot.engine.as_ref()) {
                e.restore_unloadable(objects);
            }
        })
        .await;
        let (cfg, root) = match loaded {
            Ok(x) => x,
            Err(e) => return vec![Err(e)],
        };
        let mut out = Vec::new();
        for slot in slots.iter_mut() {
            let Some(engine) = slot.engine.as_mut() else {
                continue;
            };
            let r = pass::reconcile(engine, &cfg, &root, &mut slot.rows).await;
            out.push(
                r.map(|(report, _)| report)
                    .map_err(|e| format!("shard {}: {e}", slot.shard.index)),
            );
        }
        let reports: Vec<&PassReport> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
        if !reports.is_empty() {
            let ok = reports
                .iter()
                .all(|r| r.stores.iter().all(|s| s.error.is_none()));
            shared.stores_ok.store(ok, Ordering::SeqCst);
        }
        let mut rows = StatusRows::default();
        for slot in slots.iter().filter(|slot| slot.engine.is_some()) {
            rows.promises.extend(slot.rows.promises.clone());
            rows.requests.extend(slot.rows.requests.clone());
        }
        *shared.status_rows.write().await = Some(rows);
        // Destinations and state stores are shared by every shard: the lowest held shard's
        // view of them is served (each shard checks and writes them on its own pass).
        if let Some(engine) = slots.iter().find_map(|slot| slot.engine.as_ref()) {
            shared.metrics.observe_infra(engine.infra());
            let infra = serde_json::to_vec(engine.infra()).expect("Destination status serialises");
            *shared.infra.write().await = Some(infra.into());
        }
        super::rollout_api::publish(shared, slots.iter().filter_map(|s| s.engine.as_ref())).await;
        out
    }
}
