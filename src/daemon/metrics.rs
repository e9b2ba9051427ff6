//! Prometheus metrics (`/metrics`), all prefixed `promised_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reconcile::PassReport;

/// Label set `{kind="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Error kind, e.g. `pipeline`, `state_store`, `config`.
    pub kind: String,
}

/// Label set `{store="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    /// `<kind>/<name>` of the state store.
    pub store: String,
}

/// Label set `{destination="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    /// Destination name.
    pub destination: String,
}

/// Label set `{store="...",result="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreResultLabel {
    /// `<kind>/<name>` of the state store.
    pub store: String,
    /// `succeeded` or `failed` (a store that cannot be used counts as failed).
    pub result: String,
}

/// Label set `{outcome="..."}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `succeeded` or `failed`.
    pub outcome: String,
}

/// Every metric the daemon exports.
pub struct Metrics {
    registry: Registry,
    /// Seconds per reconcile pass.
    pub reconcile_duration: Histogram,
    /// Seconds per workflow run, by outcome.
    pub pipeline_duration: Family<OutcomeLabel, Histogram>,
    /// Triggers waiting for the next pass.
    pub queue_depth: Gauge,
    /// Commits (versions) written, per state store.
    pub commits: Family<StoreLabel, Counter>,
    /// Lost push races that were retried.
    pub push_conflicts: Counter,
    /// Files restored after someone changed them in a state store.
    pub drift_repairs: Counter,
    /// Passes that ran nothing and committed nothing.
    pub noop_passes: Counter,
    /// Errors by kind.
    pub errors: Family<KindLabel, Counter>,
    /// Workflow runs by outcome.
    pub pipelines: Family<OutcomeLabel, Counter>,
    /// Leader election (`promised_leader`): 1 while this replica holds its Lease (with
    /// shards: at least one shard), else 0; 1 without leader election.
    pub leader: Gauge,
    /// Shards held now (`promised_shards_held`; 1 without leader election).
    pub shards_held: Gauge,
    /// `promised_config_commit_refused`: 1 while the newest config commit is not applied
    /// because it does not verify (`verify:`), else 0.
    pub config_refused: Gauge,
    /// `promised_destination_ready{destination}`: 1 while its `Ready` condition is True.
    pub destination_ready: Family<DestinationLabel, Gauge>,
    /// `promised_state_store_ready{store}`: 1 while its `Ready` condition is True.
    pub state_store_ready: Family<StoreLabel, Gauge>,
    /// `promised_state_store_writes_total{store,result}`: writes (one per store in use per
    /// pass) by result.
    pub state_store_writes: Family<StoreResultLabel, Counter>,
    /// `promised_rollout_*` (UpgradePlans, `rollout_api.rs`).
    pub rollouts: super::rollout_api::RolloutMetrics,
    /// Destinations and state stores with a readiness series, to drop those that leave.
    ready_series: std::sync::Mutex<(Vec<String>, Vec<String>)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("promised");
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        let pipeline_duration = Family::<OutcomeLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 16))
        });
        let m = Metrics {
            reconcile_duration,
            pipeline_duration,
            queue_depth: Gauge::default(),
            commits: Family::default(),
            push_conflicts: Counter::default(),
            drift_repairs: Counter::default(),
            noop_passes: Counter::default(),
            errors: Family::default(),
            pipelines: Family::default(),
            leader: Gauge::default(),
            shards_held: Gauge::default(),
            config_refused: Gauge::default(),
            destination_ready: Family::default(),
            state_store_ready: Family::default(),
            state_store_writes: Family::default(),
            ready_series: Default::default(),
            rollouts: Default::default(),
            registry: Registry::default(),
        };
        m.rollouts.register(&mut registry);
        registry.register(
            "config_commit_refused",
            "1 while the newest config commit is not applied because its signature does not verify",
            m.config_refused.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds its Lease (leader election), else 0",
            m.leader.clone(),
        );
        registry.register(
            "shards_held",
            "Shards of the Promises this replica holds",
            m.shards_held.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "pipeline_duration_seconds",
            "Duration of workflow runs",
            m.pipeline_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Triggers waiting for the next reconcile pass",
            m.queue_depth.clone(),
        );
        registry.register(
            "commits",
            "Commits written to state stores",
            m.commits.clone(),
        );
        registry.register(
            "push_conflicts",
            "Lost push races retried",
            m.push_conflicts.clone(),
        );
        registry.register(
            "drift_repairs",
            "State store files restored after outside edits",
            m.drift_repairs.clone(),
        );
        registry.register(
            "noop_passes",
            "Passes that ran no pipeline and made no commit",
            m.noop_passes.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "destination_ready",
            "1 while the Destination's Ready condition is True, else 0",
            m.destination_ready.clone(),
        );
        registry.register(
            "state_store_ready",
            "1 while the state store's Ready condition is True, else 0",
            m.state_store_ready.clone(),
        );
        registry.register(
            "state_store_writes",
            "State store writes by result",
            m.state_store_writes.clone(),
        );
        registry.register(
            "pipeline_runs",
            "Workflow runs by outcome",
            m.pipelines.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records a finished pass.
    pub fn observe(&self, r: &PassReport) {
        self.reconcile_duration.observe(r.duration.as_secs_f64());
        for run in &r.runs {
            let outcome = OutcomeLabel {
                outcome: if run.succeeded { "succeeded" } else { "failed" }.into(),
            };
            self.pipeline_duration
                .get_or_create(&outcome)
                .observe(run.seconds);
            self.pipelines.get_or_create(&outcome).inc();
            if !run.succeeded {
                self.errors
                    .get_or_create(&KindLabel {
                        kind: "pipeline".into(),
                    })
                    .inc();
            }
        }
        for s in &r.stores {
            if s.commit.is_some() {
                self.commits
                    .get_or_create(&StoreLabel {
                        store: s.store.clone(),
                    })
                    .inc();
            }
            if s.error.is_some() {
                self.errors
                    .get_or_create(&KindLabel {
                        kind: "state_store".into(),
                    })
                    .inc();
            }
            self.state_store_writes
                .get_or_create(&StoreResultLabel {
                    store: s.store.clone(),
                    result: if s.error.is_some() {
                        "failed"
                    } else {
                        "succeeded"
                    }
                    .into(),
                })
                .inc();
            self.push_conflicts.inc_by(u64::from(s.conflicts_retried));
            self.drift_repairs.inc_by(s.drift.len() as u64);
        }
        if r.is_noop() {
            self.noop_passes.inc();
        }
    }

    /// Sets the readiness gauges from the Destination and state store status of a pass;
    /// Destinations and stores that left the config repo lose their series.
    pub fn observe_infra(&self, infra: &crate::infra::InfraStatus) {
        let ready = |c: Option<&crate::status::Condition>| {
            i64::from(c.is_some_and(|c| c.status == crate::status::ConditionStatus::True))
        };
        let mut known = self.ready_series.lock().unwrap_or_else(|e| e.into_inner());
        for gone in known
            .0
            .iter()
            .filter(|n| !infra.destinations.contains_key(*n))
        {
            self.destination_ready.remove(&DestinationLabel {
                destination: gone.clone(),
            });
        }
        for gone in known
            .1
            .iter()
            .filter(|k| !infra.state_stores.contains_key(*k))
        {
            self.state_store_ready.remove(&StoreLabel {
                store: gone.clone(),
            });
        }
        known.0 = infra.destinations.keys().cloned().collect();
        known.1 = infra.state_stores.keys().cloned().collect();
        for (name, d) in &infra.destinations {
            self.destination_ready
                .get_or_create(&DestinationLabel {
                    destination: name.clone(),
                })
                .set(ready(d.ready()));
        }
        for (key, s) in &infra.state_stores {
            self.state_store_ready
                .get_or_create(&StoreLabel { store: key.clone() })
                .set(ready(s.ready()));
        }
    }

    /// Counts an error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use crate::infra::{DestinationStatus, InfraStatus, reason, set_ready};
    use crate::status::ConditionStatus;

    #[test]
    fn ready_gauges_follow_the_status_and_drop_what_left() {
        let m = Metrics::new();
        let mut infra = InfraStatus::default();
        let mut dev = DestinationStatus::new("dev", "GitStateStore", "git");
        infra.destinations.insert("dev".into(), dev.clone());
        infra.destinations.insert(
            "old".into(),
            DestinationStatus::new("old", "GitStateStore", "git"),
        );
        m.observe_infra(&infra);
        let text = m.encode();
        assert!(
            text.contains("promised_destination_ready{destination=\"dev\"} 0"),
            "{text}"
        );
        set_ready(
            &mut dev.conditions,
            ConditionStatus::True,
            reason::TEST_DOCUMENTS_WRITTEN,
            "Test documents written to State Store",
        );
        infra.destinations.insert("dev".into(), dev);
        infra.destinations.remove("old");
        m.observe_infra(&infra);
        let text = m.encode();
        assert!(
            text.contains("promised_destination_ready{destination=\"dev\"} 1"),
            "{text}"
        );
        assert!(!text.contains("destination=\"old\""), "{text}");
    }
}
