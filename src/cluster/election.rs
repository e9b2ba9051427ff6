//! Leader election and sharding (`leaderElection:`): which shards this replica holds, each
//! with its own write gate. docs/sharding.md has the design and its limits.
//!
//! - One shard (the default): every replica tries to hold the Lease `<leaseName>`; its holder
//!   reconciles everything, the others stand by.
//! - `shards: N > 1`: every replica holds its membership Lease `<leaseName>-member-<identity>`
//!   (labelled [`MEMBER_LABEL`]`=<leaseName>`), lists the live members every `retryPeriod`,
//!   and tries to hold the shard Leases `<leaseName>-shard-<i>` it wins by rendezvous hashing
//!   ([`shards::wanted`]). A shard it no longer wins is released (gate closed first) before
//!   its new owner can take it; the Lease itself keeps two replicas from holding one shard
//!   while members disagree.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lease::{Keeper, LeaseTarget, Timing};
use super::settings::LeaderElectionSettings;
use super::shards::{self, MEMBER_LABEL};

/// What `/api/v1/status` and `/readyz` say about this replica.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leadership {
    /// This replica's `holderIdentity`.
    pub identity: String,
    /// `leader` while it holds at least one shard, else `standby`.
    pub role: &'static str,
    /// Shards the Promises are split into.
    pub shards: u32,
    /// Shards held now (gate open), sorted.
    pub held: Vec<u32>,
    /// Live members seen at the last listing (only with shards > 1), sorted.
    pub members: Vec<String>,
}

/// Runs the election in a background task.
pub struct Election {
    gates: Vec<watch::Receiver<bool>>,
    status: watch::Receiver<Leadership>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Election {
    /// Starts electing with `client`, whose default namespace is used when
    /// `settings.namespace` is unset. Errors: bad timing settings ([`Timing::from_settings`]).
    pub fn start(client: kube::Client, settings: &LeaderElectionSettings) -> Result<Self, String> {
        let timing = Timing::from_settings(settings)?;
        let shards = settings.shards.max(1);
        let namespace = settings
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = super::lease::identity(settings.identity.as_deref());
        let (senders, gates): (Vec<_>, Vec<_>) = (0..shards).map(|_| watch::channel(false)).unzip();
        let (status_tx, status) = watch::channel(Leadership {
            identity: identity.clone(),
            role: "standby",
            shards,
            ..Default::default()
        });
        let (stop, stop_rx) = watch::channel(false);
        let ctl = Controller {
            client,
            lease_name: settings.lease_name.clone(),
            namespace,
            identity,
            timing,
            shards,
            senders: senders.into_iter().map(Some).collect(),
            keepers: BTreeMap::new(),
        };
        let task = tokio::spawn(ctl.run(gates.clone(), status_tx, stop_rx));
        Ok(Election {
            gates,
            status,
            stop,
            task,
        })
    }

    /// The write gate of `shard`: `true` while this replica holds it. The same channel for
    /// the whole run.
    pub fn gate(&self, shard: u32) -> watch::Receiver<bool> {
        self.gates[shard as usize].clone()
    }

    /// Shards held now.
    pub fn held(&self) -> BTreeSet<u32> {
        (0..self.gates.len() as u32)
            .filter(|&i| *self.gates[i as usize].borrow())
            .collect()
    }

    /// This replica's role and shards; changes whenever a gate opens or closes.
    pub fn status(&self) -> watch::Receiver<Leadership> {
        self.status.clone()
    }

    /// Closes every gate and releases every Lease held, the membership Lease last, so the
    /// other replicas take over at once (SIGTERM).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Controller {
    client: kube::Client,
    lease_name: String,
    namespace: String,
    identity: String,
    timing: Timing,
    shards: u32,
    /// Each shard's gate sender while no keeper has it.
    senders: Vec<Option<watch::Sender<bool>>>,
    keepers: BTreeMap<u32, Keeper>,
}

impl Controller {
    fn target(&self, name: String, labels: BTreeMap<String, String>) -> LeaseTarget {
        LeaseTarget {
            name,
            namespace: self.namespace.clone(),
            identity: self.identity.clone(),
            labels,
        }
    }

    async fn run(
        mut self,
        gates: Vec<watch::Receiver<bool>>,
        status: watch::Sender<Leadership>,
        mut stop: watch::Receiver<bool>,
    ) {
        let member = (self.shards > 1).then(|| {
            let labels = BTreeMap::from([(MEMBER_LABEL.to_string(), self.lease_name.clone())]);
            let name = shards::member_lease_name(&self.lease_name, &self.identity);
            Keeper::start(self.client.clone(), self.target(name, labels), self.timing)
        });
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("{MEMBER_LABEL}={}", self.lease_name);
        let mut members = BTreeSet::new();
        let mut tick = tokio::time::interval(self.timing.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gates_changed = gates.clone();
        loop {
            let held: Vec<u32> = (0..self.shards)
                .filter(|&i| *gates[i as usize].borrow())
                .collect();
            status.send_if_modified(|s| {
                let next = Leadership {
                    role: if held.is_empty() { "standby" } else { "leader" },
                    held: held.clone(),
                    members: members.iter().cloned().collect(),
                    ..s.clone()
                };
                std::mem::replace(s, next.clone()) != next
            });
            let any_gate = futures_util::future::select_all(
                gates_changed.iter_mut().map(|g| Box::pin(g.changed())),
            );
            tokio::select! {
                biased;
                _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
                _ = any_gate => continue,
                _ = tick.tick() => {}
            }
            if self.shards > 1 {
                match api.list(&ListParams::default().labels(&selector)).await {
                    Ok(list) => {
                        members = shards::live_members(&list.items, std::time::SystemTime::now())
                    }
                    Err(e) => {
                        // Keep the last view; the shard Leases still keep ownership exclusive.
                        tracing::warn!(error = %e, "listing the members failed");
                    }
                }
            }
            let wanted = shards::wanted(&self.identity, &members, self.shards);
            self.rebalance(&wanted).await;
        }
        let all: Vec<u32> = self.keepers.keys().copied().collect();
        for shard in all {
            self.release(shard).await;
        }
        if let Some(m) = member {
            m.stop().await;
        }
        status.send_modify(|s| {
            s.role = "standby";
            s.held.clear();
        });
    }

    /// Releases the shards not in `wanted` first, then starts trying to hold the new ones.
    async fn rebalance(&mut self, wanted: &BTreeSet<u32>) {
        let unwanted: Vec<u32> = self
            .keepers
            .keys()
            .filter(|s| !wanted.contains(s))
            .copied()
            .collect();
        for shard in unwanted {
            tracing::info!(shard, "releasing a shard another member now wins");
            self.release(shard).await;
        }
        for &shard in wanted {
            if self.keepers.contains_key(&shard) {
                continue;
            }
            let Some(gate) = self.senders[shard as usize].take() else {
                continue;
            };
            let name = shards::shard_lease_name(&self.lease_name, self.shards, shard);
            let target = self.target(name, BTreeMap::new());
            let keeper = Keeper::start_with_gate(self.client.clone(), target, self.timing, gate);
            self.keepers.insert(shard, keeper);
        }
    }

    async fn release(&mut self, shard: u32) {
        if let Some(k) = self.keepers.remove(&shard) {
            let gate = k.stop().await.unwrap_or_else(|| watch::channel(false).0);
            self.senders[shard as usize] = Some(gate);
        }
    }
}
