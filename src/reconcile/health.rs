//! Health stage (after landing): read the health state store when its poll interval is up,
//! run the health checks that are due, and fold every source of HealthRecords into each
//! request's `status.healthStatus` ([`crate::health`]). Requests whose health changed are
//! saved with the pass; nothing here re-runs a workflow or writes a state store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;

use super::{Engine, Pass, inputs, promise_dir};
use crate::health::checks::{self, Clock, DefinitionCache};
use crate::health::{self, Sourced, store};

/// What the health stage keeps between passes.
#[derive(Debug, Default)]
pub(super) struct HealthRuntime {
    /// The schedules' clock (follows tokio's, so a paused test clock drives it).
    clock: Clock,
    /// The records last read from the health state store.
    store_records: Vec<Sourced>,
    /// When the health state store was last read, and with which settings.
    store_read: Option<(tokio::time::Instant, health::HealthStoreSettings)>,
    /// HealthDefinitions parsed from output files, by blob sha256 (those of the cached outputs
    /// of the last pass only).
    definitions: DefinitionCache,
    /// When the last pass looked for due checks: a check due before then that did not run
    /// (its request is invalid or held) does not wake the daemon again.
    evaluated_at: Option<std::time::SystemTime>,
}

/// One health check to run in this pass.
struct Due {
    key: String,
    name: String,
    definition: crate::model::HealthDefinition,
    request: Arc<crate::validate::ValidRequest>,
    object_yaml: String,
    promise_dir: Option<std::path::PathBuf>,
}

impl HealthRuntime {
    /// Now by the health stage's clock (also the rollout stage's: soak times and timeouts).
    pub(super) fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }
}

impl Engine {
    /// The health stage (see the module docs). Problems are pass warnings.
    pub(super) async fn health_stage(&mut self, pass: &mut Pass<'_>) {
        self.read_health_store(pass).await;
        self.run_health_checks(pass).await;
        self.fold_health(pass);
    }

    /// How long until the health stage has work: the next health check, or the next read of
    /// the health state store (the daemon wakes for it).
    pub fn health_due(&self) -> Option<Duration> {
        let clock = &self.health.clock;
        let evaluated = self.health.evaluated_at;
        let check = checks::next_due(
            self.state
                .requests
                .values()
                .flat_map(|r| r.status.health_checks.iter()),
            evaluated,
        )
        .map(|t| checks::until(clock, t));
        let store = self.settings.health_state_store.as_ref().map(|hs| {
            let every = hs.poll_interval.unwrap_or(self.settings.poll_interval);
            match &self.health.store_read {
                Some((at, _)) => every.saturating_sub(at.elapsed()),
                None => Duration::ZERO,
            }
        });
        check.into_iter().chain(store).min()
    }

    /// Reads the health state store when it is due (or its settings changed); a failed read
    /// keeps the records of the last good one.
    async fn read_health_store(&mut self, pass: &mut Pass<'_>) {
        let Some(hs) = self.settings.health_state_store.clone() else {
            self.health.store_records.clear();
            self.health.store_read = None;
            return;
        };
        let every = hs.poll_interval.unwrap_or(self.settings.poll_interval);
        let due = match &self.health.store_read {
            Some((at, used)) => *used != hs || at.elapsed() >= every,
            None => true,
        };
        if !due {
            return;
        }
        self.health.store_read = Some((tokio::time::Instant::now(), hs.clone()));
        let key = hs.store_key();
        let spec_path = match hs.kind {
            crate::model::StateStoreKind::GitStateStore => pass
                .cfg
                .git_state_stores
                .iter()
                .find(|s| s.id.name == hs.name)
                .map(|s| s.object.spec.path.clone()),
            crate::model::StateStoreKind::BucketStateStore => pass
                .cfg
                .bucket_state_stores
                .iter()
                .find(|s| s.id.name == hs.name)
                .map(|s| s.object.spec.path.clone()),
        };
        let (Some(spec_path), Some((_, st))) = (spec_path, self.stores.get(&key)) else {
            let why = pass
                .store_errors
                .get(&key)
                .cloned()
                .unwrap_or_else(|| "no such valid state store in the config repo".into());
            pass.report.warnings.push(format!(
                "healthStateStore {key}: {why}; keeping the records last read from it"
            ));
            return;
        };
        let prefix = store::prefix(&spec_path, &hs);
        match store::read(st.as_ref(), &prefix, &key).await {
            Ok((records, warnings)) => {
                self.health.store_records = records;
                pass.report.warnings.extend(warnings);
            }
            Err(e) => pass
                .report
                .warnings
                .push(format!("{e}; keeping the records last read from it")),
        }
    }

    /// Schedules the health checks the requests' outputs declare and runs the due ones (at
    /// most `concurrency` at once; none once the pass is cancelled).
    async fn run_health_checks(&mut self, pass: &mut Pass<'_>) {
        let now = self.health.clock.now();
        self.health.evaluated_at = Some(now);
        let mut due = Vec::new();
        self.health.definitions.start();
        for r in &pass.cfg.requests {
            let key = r.key();
            let Some(record) = self.state.requests.get_mut(key) else {
                continue;
            };
            if record.deleting {
                continue;
            }
            let dir = &self.dir;
            let declared = checks::declared(
                key,
                &record.outputs,
                |sha| dir.get_blob(sha).ok(),
                &mut self.health.definitions,
                &mut pass.report.warnings,
            );
            if let Some(synced) = checks::sync(&record.status.health_checks, &declared, now) {
                record.status.health_checks = synced;
                pass.health_changed.insert(key.to_string());
            }
            let Some(p) = pass.cfg.promise(&r.promise) else {
                continue;
            };
            for name in checks::due(&record.status.health_checks, now) {
                let Some(d) = declared.iter().find(|d| d.definition.metadata.name == name) else {
                    continue;
                };
                due.push(Due {
                    key: key.to_string(),
                    name,
                    definition: d.definition.clone(),
                    request: r.clone(),
                    object_yaml: inputs::object_yaml(&r.object(), &record.status),
                    promise_dir: promise_dir(pass.config_root, &p.promise.origin.file),
                });
            }
        }
        self.health.definitions.prune();
        if due.is_empty() || self.cancel.load(Ordering::SeqCst) {
            return;
        }
        // What the checks' pipelines may read (the pipeline API), as for a workflow.
        self.set_catalog(
            pass.all,
            due.iter().map(|d| d.request.promise.as_str()),
            |_| false,
        );
        let runner = self.runner.clone();
        let cancel = self.cancel.clone();
        let cfg = pass.cfg;
        let results: Vec<(String, String, Option<checks::RunResult>)> =
            futures_util::stream::iter(due)
                .map(|d| {
                    let runner = runner.clone();
                    let cancel = cancel.clone();
                    async move {
                        if cancel.load(Ordering::SeqCst) {
                            return (d.key, d.name, None);
                        }
                        let Some(p) = cfg.promise(&d.request.promise) else {
                            return (d.key, d.name, None);
                        };
                        tracing::debug!(request = %d.key, check = %d.name, "health check started");
                        let r = checks::run(
                            &runner,
                            p,
                            &d.request,
                            &d.definition,
                            d.object_yaml,
                            d.promise_dir,
                        )
                        .await;
                        (d.key, d.name, Some(r))
                    }
                })
                .buffer_unordered(self.settings.effective_concurrency().max(1))
                .collect()
                .await;
        self.clear_catalog();
        let finished = self.health.clock.now();
        let mut ran = BTreeSet::new();
        for (key, name, result) in results {
            let Some(result) = result else { continue };
            let Some(record) = self.state.requests.get_mut(&key) else {
                continue;
            };
            if let Some(c) = record
                .status
                .health_checks
                .iter_mut()
                .find(|c| c.name == name)
            {
                if !result.2.is_empty() {
                    pass.report
                        .warnings
                        .push(format!("{key}: health check {name}: {}", result.2));
                }
                checks::note_run(c, result, finished);
                ran.insert(key);
            }
        }
        pass.health_changed.extend(ran);
    }

    /// Folds the config repo's records, the health state store's and each request's health
    /// check results into the requests' `healthStatus`.
    fn fold_health(&mut self, pass: &mut Pass<'_>) {
        let mut all = store::from_config(&pass.cfg.health_records);
        all.extend(self.health.store_records.iter().cloned());
        let grouped = health::by_request(all.iter());
        for (key, record) in self.state.requests.iter_mut() {
            let own = checks::records(key, &record.status.health_checks);
            let mut records: Vec<&Sourced> = grouped.get(key).cloned().unwrap_or_default();
            records.extend(own.iter());
            if let Some(folded) = health::folded(&record.status, &records) {
                health::set(&mut record.status, folded);
                pass.health_changed.insert(key.clone());
            }
        }
    }
}
